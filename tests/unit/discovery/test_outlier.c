/* Unit tests for outlier detection (discovery/outlier.c).
 *
 * Config: defaults, every field, exact error messages. Decision rules: max_ejection_percent
 * with the at-least-one rule, enforcement 0/100, ejection time x times ejected capped at
 * max_ejection_time, success-rate math (mean - stdev * factor / 1000) and failure
 * percentage on fixed inputs. The detector is then driven without threads: reports from
 * this thread, a main "worker" whose loop never runs, and the detector's steps called with
 * a fake monotonic clock. */
#include "discovery/outlier.h"
#include "proxy/cluster.h"
#include "proxy/config.h"
#include "proxy/stats.h"
#include "proxy/time.h"
#include "proxy/view.h"
#include "proxy/worker.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#include <ev.h>
#include <math.h>
#include <stdint.h>

/* ---- helpers --------------------------------------------------------------------- */

static pt_cfg_t R;

#define SA(port) "{'socket_address':{'address':'10.0.0.1','port_value':" #port "}}"
#define EP(port) "{'endpoint':{'address':" SA(port) "}}"
#define EPS3 EP(1) "," EP(2) "," EP(3)
#define EPS5 EPS3 "," EP(4) "," EP(5)

/* A bootstrap with one cluster "svc" whose outlier_detection is `od` (a JSON object). */
static char *bootstrap(const char *od, const char *eps)
{
    static char buf[8192];
    snprintf(buf, sizeof(buf),
             "{'static_resources':{'clusters':[{'name':'svc','connect_timeout':'1s',"
             "'outlier_detection':%s,'load_assignment':{'cluster_name':'svc',"
             "'endpoints':[{'lb_endpoints':[%s]}]}}]}}",
             od, eps);
    return buf;
}

static pt_boot_t *build(const char *od, const char *eps)
{
    json_t *root = J(bootstrap(od, eps));
    pt_cfg_init(&R, root);
    pt_boot_t *c = pt_test_boot(root, &R);
    json_decref(root);
    if (c == NULL)
        for (size_t i = 0; i < R.nerrors; i++)
            fprintf(stderr, "    %s\n", R.errors[i]);
    pt_cfg_dispose(&R);
    return c;
}

/* Expects `od` to be rejected with exactly one error, `want`. */
static int rejects(int line, const char *od, const char *want)
{
    json_t *root = J(bootstrap(od, EP(1)));
    pt_cfg_init(&R, root);
    pt_boot_t *c = pt_test_boot(root, &R);
    json_decref(root);
    int ok = c == NULL && R.nerrors == 1 && strcmp(R.errors[0], want) == 0;
    if (!ok) {
        fprintf(stderr, "  line %d: %s, %zu error(s):\n", line, c ? "accepted" : "rejected",
                R.nerrors);
        for (size_t i = 0; i < R.nerrors; i++)
            fprintf(stderr, "    %s\n", R.errors[i]);
        fprintf(stderr, "  want: %s\n", want);
    }
    pt_boot_free(c);
    pt_cfg_dispose(&R);
    return ok;
}
#define REJECTS(od, want)                                                                \
    do {                                                                                 \
        int rejected_as_expected = rejects(__LINE__, od, want);                          \
        PT_CHECK(rejected_as_expected);                                                  \
    } while (0)

#define OD "static_resources.clusters[0].outlier_detection"

static uint64_t counter(const char *name)
{
    char full[160];
    snprintf(full, sizeof(full), "cluster.svc.outlier_detection.%s", name);
    pt_stat_t id = pt_stats_find(full);
    if (id == 0) {
        fprintf(stderr, "no stat %s\n", full);
        return UINT64_MAX;
    }
    return pt_stats_value(id);
}

static int64_t active(void)
{
    return pt_stats_gauge_value(pt_stats_find("cluster.svc.outlier_detection.ejections_active"));
}

/* Counters are process-wide and keep counting across snapshots: tests compare deltas. */
typedef struct snapshot {
    uint64_t v[64];
} snapshot_t;
static const char *const names[] = {
    "ejections_overflow",
    "ejections_enforced_total",
    "ejections_detected_consecutive_5xx",
    "ejections_enforced_consecutive_5xx",
    "ejections_detected_consecutive_gateway_failure",
    "ejections_enforced_consecutive_gateway_failure",
    "ejections_detected_consecutive_local_origin_failure",
    "ejections_enforced_consecutive_local_origin_failure",
    "ejections_detected_success_rate",
    "ejections_enforced_success_rate",
    "ejections_detected_failure_percentage",
    "ejections_enforced_failure_percentage",
    "ejections_detected_local_origin_success_rate",
    "ejections_enforced_local_origin_success_rate",
    "ejections_detected_local_origin_failure_percentage",
    "ejections_enforced_local_origin_failure_percentage",
    "ejections_total",
    "ejections_consecutive_5xx",
    "ejections_success_rate",
    NULL,
};
static snapshot_t base;
static void mark(void)
{
    for (int i = 0; names[i]; i++)
        base.v[i] = counter(names[i]);
}
static uint64_t delta(const char *name)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], name) == 0)
            return counter(name) - base.v[i];
    fprintf(stderr, "unknown counter %s\n", name);
    return UINT64_MAX;
}

/* A detector on a loop that never runs. */
typedef struct rig {
    pt_boot_t *cfg;
    pt_view_t *view;
    pt_cluster_t *c;
    pt_worker_t main;
    pt_outlier_detector_t *d;
} rig_t;

static int rig_start(rig_t *g, const char *od, const char *eps)
{
    memset(g, 0, sizeof(*g));
    g->cfg = build(od, eps);
    if (g->cfg == NULL)
        return -1;
    g->c = g->cfg->clusters[0];
    g->main.loop = ev_loop_new(EVFLAG_AUTO);
    g->d = pt_outlier_start(&g->main);
    g->view = pt_view_new(g->cfg->clusters, g->cfg->nclusters);
    if (g->d == NULL || g->view == NULL || pt_outlier_update(g->d, g->view) != 0)
        return -1;
    mark();
    return 0;
}

static void rig_stop(rig_t *g)
{
    pt_outlier_stop(g->d);
    if (g->main.loop != NULL)
        ev_loop_destroy(g->main.loop);
    pt_view_unref(g->view);
    pt_boot_free(g->cfg);
}

static pt_host_t *H(rig_t *g, unsigned i)
{
    return g->c->hosts[i];
}

static void http(rig_t *g, unsigned host, int status, int times)
{
    for (int i = 0; i < times; i++)
        pt_outlier_report(g->c, H(g, host), PT_OUTLIER_HTTP_RESPONSE, status);
}

static void result(rig_t *g, unsigned host, pt_outlier_result_t r, int times)
{
    for (int i = 0; i < times; i++)
        pt_outlier_report(g->c, H(g, host), r, 0);
}

static int ejected(rig_t *g, unsigned host)
{
    return (atomic_load(&H(g, host)->health) & PT_HOST_FAILED_OUTLIER_CHECK) != 0;
}

static uint64_t times_ejected(rig_t *g, unsigned host)
{
    pt_outlier_host_info_t info;
    pt_outlier_host_info(H(g, host), &info);
    return info.times_ejected;
}

/* ---- config ------------------------------------------------------------------------ */

static void test_defaults(void)
{
    pt_boot_t *cfg = build("{}", EP(1));
    PT_CHECK(cfg != NULL);
    const pt_outlier_config_t *o = cfg->clusters[0]->outlier;
    PT_CHECK(o != NULL);
    PT_CHECK_INT(o->consecutive_5xx, 5);
    PT_CHECK_INT(o->consecutive_gateway_failure, 5);
    PT_CHECK_INT(o->consecutive_local_origin_failure, 5);
    PT_CHECK_INT(o->split_external_local_origin_errors, 0);
    PT_CHECK_INT(o->interval_ms, 10000);
    PT_CHECK_INT(o->base_ejection_time_ms, 30000);
    PT_CHECK_INT(o->max_ejection_time_ms, 300000);
    PT_CHECK_INT(o->max_ejection_time_jitter_ms, 0);
    PT_CHECK_INT(o->max_ejection_percent, 10);
    PT_CHECK_INT(o->always_eject_one_host, 0);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_CONSECUTIVE_5XX], 100);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE], 0);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE], 100);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_SUCCESS_RATE], 100);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN], 100);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_FAILURE_PERCENTAGE], 0);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN], 0);
    PT_CHECK_INT(o->success_rate_minimum_hosts, 5);
    PT_CHECK_INT(o->success_rate_request_volume, 100);
    PT_CHECK_INT(o->success_rate_stdev_factor, 1900);
    PT_CHECK_INT(o->failure_percentage_threshold, 85);
    PT_CHECK_INT(o->failure_percentage_minimum_hosts, 5);
    PT_CHECK_INT(o->failure_percentage_request_volume, 50);
    PT_CHECK_INT(o->successful_active_health_check_uneject_host, 1);
    /* Per-host state exists from prepare on, before any detector runs. */
    PT_CHECK(cfg->clusters[0]->hosts[0]->outlier != NULL);
    PT_CHECK(pt_outlier_success_rate(cfg->clusters[0]->hosts[0]) == -1);
    PT_CHECK(pt_stats_find("cluster.svc.outlier_detection.ejections_active") != 0);
    PT_CHECK(pt_stats_find("cluster.svc.outlier_detection."
                           "ejections_enforced_local_origin_failure_percentage") != 0);
    pt_boot_free(cfg);
}

static void test_no_outlier_detection(void)
{
    const char *json = "{'static_resources':{'clusters':[{'name':'plain','connect_timeout':'1s',"
                       "'load_assignment':{'cluster_name':'plain','endpoints':[{'lb_endpoints':["
                       EP(1) "]}]}}]}}";
    json_t *root = J(json);
    pt_cfg_init(&R, root);
    pt_boot_t *cfg = pt_test_boot(root, &R);
    json_decref(root);
    pt_cfg_dispose(&R);
    PT_CHECK(cfg != NULL);
    PT_CHECK(cfg->clusters[0]->outlier == NULL);
    PT_CHECK(cfg->clusters[0]->hosts[0]->outlier == NULL);
    PT_CHECK(pt_stats_find("cluster.plain.outlier_detection.ejections_active") == 0);
    /* Reports for such a host are ignored; there is nothing to start. */
    pt_outlier_report(cfg->clusters[0], cfg->clusters[0]->hosts[0], PT_OUTLIER_HTTP_RESPONSE, 503);
    PT_CHECK(pt_outlier_success_rate(cfg->clusters[0]->hosts[0]) == -1);
    /* A detector over a view without outlier_detection watches nothing. */
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
    pt_view_t *view = pt_view_new(cfg->clusters, cfg->nclusters);
    PT_CHECK_INT(pt_outlier_update(d, view), 0);
    PT_CHECK(atomic_load(&cfg->clusters[0]->hosts[0]->health) == 0);
    pt_outlier_detector_run_interval(d, pt_now_ms());
    pt_outlier_stop(d);
    pt_outlier_stop(NULL);
    PT_CHECK_INT(pt_outlier_update(NULL, view), 0);
    ev_loop_destroy(w.loop);
    pt_view_unref(view);
    pt_boot_free(cfg);
}

static void test_all_fields(void)
{
    pt_boot_t *cfg = build(
        "{'consecutive_5xx':7,'interval':'2.5s','baseEjectionTime':'1s',"
        "'max_ejection_percent':50,'enforcing_consecutive_5xx':90,'enforcing_success_rate':80,"
        "'success_rate_minimum_hosts':3,'success_rate_request_volume':'20',"
        "'success_rate_stdev_factor':1000,'consecutive_gateway_failure':4,"
        "'enforcing_consecutive_gateway_failure':70,'split_external_local_origin_errors':true,"
        "'consecutive_local_origin_failure':6,'enforcing_consecutive_local_origin_failure':60,"
        "'enforcing_local_origin_success_rate':50,'failure_percentage_threshold':40,"
        "'enforcing_failure_percentage':30,'enforcing_failure_percentage_local_origin':20,"
        "'failure_percentage_minimum_hosts':2,'failure_percentage_request_volume':10,"
        "'max_ejection_time':'8s','max_ejection_time_jitter':'0.5s',"
        "'successful_active_health_check_uneject_host':false,'always_eject_one_host':true}",
        EP(1));
    PT_CHECK(cfg != NULL);
    const pt_outlier_config_t *o = cfg->clusters[0]->outlier;
    PT_CHECK_INT(o->consecutive_5xx, 7);
    PT_CHECK_INT(o->interval_ms, 2500);
    PT_CHECK_INT(o->base_ejection_time_ms, 1000);
    PT_CHECK_INT(o->max_ejection_percent, 50);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_CONSECUTIVE_5XX], 90);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_SUCCESS_RATE], 80);
    PT_CHECK_INT(o->success_rate_minimum_hosts, 3);
    PT_CHECK_INT(o->success_rate_request_volume, 20);
    PT_CHECK_INT(o->success_rate_stdev_factor, 1000);
    PT_CHECK_INT(o->consecutive_gateway_failure, 4);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE], 70);
    PT_CHECK_INT(o->split_external_local_origin_errors, 1);
    PT_CHECK_INT(o->consecutive_local_origin_failure, 6);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE], 60);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN], 50);
    PT_CHECK_INT(o->failure_percentage_threshold, 40);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_FAILURE_PERCENTAGE], 30);
    PT_CHECK_INT(o->enforcing[PT_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN], 20);
    PT_CHECK_INT(o->failure_percentage_minimum_hosts, 2);
    PT_CHECK_INT(o->failure_percentage_request_volume, 10);
    PT_CHECK_INT(o->max_ejection_time_ms, 8000);
    PT_CHECK_INT(o->max_ejection_time_jitter_ms, 500);
    PT_CHECK_INT(o->successful_active_health_check_uneject_host, 0);
    PT_CHECK_INT(o->always_eject_one_host, 1);
    pt_boot_free(cfg);

    /* Unset max_ejection_time follows a base_ejection_time above 300s. */
    cfg = build("{'base_ejection_time':'400s'}", EP(1));
    PT_CHECK(cfg != NULL);
    PT_CHECK_INT(cfg->clusters[0]->outlier->max_ejection_time_ms, 400000);
    pt_boot_free(cfg);
}

static void test_errors(void)
{
    REJECTS("{'max_ejection_percent':101}",
            OD ".max_ejection_percent: 101 is out of range [0, 100]");
    REJECTS("{'enforcing_consecutive_5xx':200}",
            OD ".enforcing_consecutive_5xx: 200 is out of range [0, 100]");
    REJECTS("{'enforcing_failure_percentage_local_origin':101}",
            OD ".enforcing_failure_percentage_local_origin: 101 is out of range [0, 100]");
    REJECTS("{'failure_percentage_threshold':150}",
            OD ".failure_percentage_threshold: 150 is out of range [0, 100]");
    REJECTS("{'consecutive_5xx':-1}", OD ".consecutive_5xx: -1 is not a non-negative integer");
    REJECTS("{'consecutive_5xx':4294967296}",
            OD ".consecutive_5xx: 4294967296 is out of range [0, 4294967295]");
    REJECTS("{'interval':'0s'}", OD ".interval: must be greater than 0");
    REJECTS("{'base_ejection_time':'0s'}", OD ".base_ejection_time: must be greater than 0");
    REJECTS("{'max_ejection_time':'0s'}", OD ".max_ejection_time: must be greater than 0");
    REJECTS("{'interval':'abc'}",
            OD ".interval: \"abc\" is not a duration (expected a string like \"1.5s\")");
    REJECTS("{'base_ejection_time':'10s','max_ejection_time':'5s'}",
            OD ".max_ejection_time: cannot be smaller than base_ejection_time");
    REJECTS("{'base_ejection_time':'400s','max_ejection_time':'300s'}",
            OD ".max_ejection_time: cannot be smaller than base_ejection_time");
    REJECTS("{'split_external_local_origin_errors':'yes'}",
            OD ".split_external_local_origin_errors: \"yes\" is not a boolean");
    REJECTS("{'always_eject_one_host':1}", OD ".always_eject_one_host: 1 is not a boolean");
    REJECTS("{'monitors':{}}", OD ".monitors: field is not supported");
    REJECTS("{'consecutive_6xx':5}", OD ".consecutive_6xx: unknown field");
    REJECTS("[]", OD ": [] is not an object");
}

/* ---- decision rules ---------------------------------------------------------------- */

static void test_may_eject(void)
{
    /* 10% of 3 hosts is not even one host: the first ejection is still allowed. */
    PT_CHECK(pt_outlier_may_eject(0, 3, 10, 0));
    PT_CHECK(!pt_outlier_may_eject(1, 3, 10, 0));
    PT_CHECK(!pt_outlier_may_eject(1, 3, 10, 1));
    /* 10% of 20 hosts: two. */
    PT_CHECK(pt_outlier_may_eject(1, 20, 10, 0));
    PT_CHECK(!pt_outlier_may_eject(2, 20, 10, 0));
    /* 10% of 15 hosts: one (never more than the percentage, past the first). */
    PT_CHECK(!pt_outlier_may_eject(1, 15, 10, 0));
    /* 50% of 4: two; 100%: all. */
    PT_CHECK(pt_outlier_may_eject(1, 4, 50, 0));
    PT_CHECK(!pt_outlier_may_eject(2, 4, 50, 0));
    PT_CHECK(pt_outlier_may_eject(3, 4, 100, 0));
    PT_CHECK(!pt_outlier_may_eject(4, 4, 100, 0));
    /* 0% ejects nothing unless always_eject_one_host. */
    PT_CHECK(!pt_outlier_may_eject(0, 3, 0, 0));
    PT_CHECK(pt_outlier_may_eject(0, 3, 0, 1));
    PT_CHECK(!pt_outlier_may_eject(1, 3, 0, 1));
    /* One host: it may go (panic mode keeps it in use). */
    PT_CHECK(pt_outlier_may_eject(0, 1, 10, 0));
    PT_CHECK(!pt_outlier_may_eject(0, 0, 100, 1));
}

static void test_enforce(void)
{
    for (int i = 0; i < 1000; i++) {
        PT_CHECK(pt_outlier_enforce(100));
        PT_CHECK(!pt_outlier_enforce(0));
    }
    int yes = 0;
    for (int i = 0; i < 10000; i++)
        yes += pt_outlier_enforce(50);
    PT_CHECK(yes > 4000 && yes < 6000);
}

static void test_ejection_time(void)
{
    pt_outlier_config_t o = {.base_ejection_time_ms = 30000, .max_ejection_time_ms = 300000};
    PT_CHECK_INT(pt_outlier_ejection_time_ms(&o, 1, 0), 30000);
    PT_CHECK_INT(pt_outlier_ejection_time_ms(&o, 2, 0), 60000);
    PT_CHECK_INT(pt_outlier_ejection_time_ms(&o, 10, 0), 300000);
    PT_CHECK_INT(pt_outlier_ejection_time_ms(&o, 11, 0), 300000);
    PT_CHECK_INT(pt_outlier_ejection_time_ms(&o, 11, 250), 300250);
    PT_CHECK_INT(pt_outlier_ejection_time_ms(&o, UINT64_MAX / 2, 0), 300000);
    /* The multiplier grows while times * base < max + base, then stays: decaying from there
     * brings the time below the cap after one healthy interval. */
    uint64_t t = 0;
    for (int i = 0; i < 30; i++)
        t = pt_outlier_next_times_ejected(&o, t);
    PT_CHECK_INT(t, 11);
    PT_CHECK_INT(pt_outlier_next_times_ejected(&o, 0), 1);
    PT_CHECK_INT(pt_outlier_next_times_ejected(&o, 10), 11);
    PT_CHECK_INT(pt_outlier_next_times_ejected(&o, 11), 11);
    pt_outlier_config_t eq = {.base_ejection_time_ms = 1000, .max_ejection_time_ms = 1000};
    PT_CHECK_INT(pt_outlier_next_times_ejected(&eq, 1), 2);
    PT_CHECK_INT(pt_outlier_next_times_ejected(&eq, 2), 2);
    PT_CHECK_INT(pt_outlier_ejection_time_ms(&eq, 2, 0), 1000);
}

static void test_success_rate_math(void)
{
    /* Envoy's worked example: {50, 100, 100, 100, 100}: mean 90, stdev 20, 1.9 -> 52. */
    double rates[] = {50, 100, 100, 100, 100}, mean;
    double thr = pt_outlier_success_rate_threshold(rates, 5, 1900, &mean);
    PT_CHECK(fabs(mean - 90.0) < 1e-9);
    PT_CHECK(fabs(thr - 52.0) < 1e-9);
    /* Factor 1000 = one stdev. */
    thr = pt_outlier_success_rate_threshold(rates, 5, 1000, &mean);
    PT_CHECK(fabs(thr - 70.0) < 1e-9);
    /* All equal: stdev 0, threshold = mean, nobody is below. */
    double same[] = {80, 80, 80};
    thr = pt_outlier_success_rate_threshold(same, 3, 1900, &mean);
    PT_CHECK(fabs(thr - 80.0) < 1e-9);
}

static void test_analyze(void)
{
    pt_outlier_config_t o = {
        .success_rate_minimum_hosts = 5, .success_rate_request_volume = 100,
        .success_rate_stdev_factor = 1900, .failure_percentage_threshold = 85,
        .failure_percentage_minimum_hosts = 5, .failure_percentage_request_volume = 50};
    double rate[6], thr;
    unsigned v[6];
    /* Success rate: the {50,100,100,100,100} example. */
    pt_outlier_sample_t s[6] = {{100, 50, 0}, {100, 100, 0}, {200, 200, 0},
                                {100, 100, 0}, {1000, 1000, 0}, {0, 0, 0}};
    pt_outlier_analyze(&o, s, 6, rate, v, &thr, NULL);
    PT_CHECK(fabs(thr - 52.0) < 1e-9);
    PT_CHECK_INT(v[0], PT_OUTLIER_VERDICT_SUCCESS_RATE);
    for (int i = 1; i < 6; i++)
        PT_CHECK_INT(v[i], 0);
    PT_CHECK(fabs(rate[0] - 50.0) < 1e-9);
    PT_CHECK(rate[5] == -1);
    /* Only four hosts with enough volume: no success-rate verdict (minimum_hosts 5). */
    s[4].total = s[4].success = 99;
    pt_outlier_analyze(&o, s, 6, rate, v, &thr, NULL);
    PT_CHECK(thr == -1);
    PT_CHECK_INT(v[0], 0);
    /* 99 requests is below success_rate_request_volume but above the failure-percentage
     * volume (50): the rate is still known. */
    PT_CHECK(fabs(rate[4] - 100.0) < 1e-9);
    /* An excluded (ejected) host is not analysed and does not count toward the minimum. */
    s[4].total = s[4].success = 100;
    s[1].excluded = 1;
    pt_outlier_analyze(&o, s, 6, rate, v, &thr, NULL);
    PT_CHECK(thr == -1);
    PT_CHECK(rate[1] == -1);
    s[1].excluded = 0;

    /* Failure percentage: >= 85% failures with >= 50 requests, among >= 5 such hosts. */
    pt_outlier_sample_t f[5] = {{50, 7, 0}, {50, 8, 0}, {60, 60, 0}, {60, 60, 0}, {60, 60, 0}};
    o.success_rate_minimum_hosts = 100; /* success rate off */
    pt_outlier_analyze(&o, f, 5, rate, v, &thr, NULL);
    PT_CHECK_INT(v[0], PT_OUTLIER_VERDICT_FAILURE_PERCENTAGE); /* 86% failed */
    PT_CHECK_INT(v[1], 0);                                     /* 84% failed */
    PT_CHECK_INT(v[2], 0);
    f[1].success = 7; /* 43 of 50 failed: 86% */
    pt_outlier_analyze(&o, f, 5, rate, v, &thr, NULL);
    PT_CHECK_INT(v[1], PT_OUTLIER_VERDICT_FAILURE_PERCENTAGE);
    /* Exactly the threshold counts (>=): 85 of 100 failed. */
    o.failure_percentage_minimum_hosts = 1;
    pt_outlier_sample_t e[1] = {{100, 15, 0}};
    pt_outlier_analyze(&o, e, 1, rate, v, &thr, NULL);
    PT_CHECK_INT(v[0], PT_OUTLIER_VERDICT_FAILURE_PERCENTAGE);
    /* Below the volume: not judged. */
    e[0].total = 49;
    e[0].success = 0;
    pt_outlier_analyze(&o, e, 1, rate, v, &thr, NULL);
    PT_CHECK_INT(v[0], 0);
    /* Too few hosts in the cluster for either family: nothing at all. */
    o.failure_percentage_minimum_hosts = 5;
    e[0].total = 100;
    pt_outlier_analyze(&o, e, 1, rate, v, &thr, NULL);
    PT_CHECK_INT(v[0], 0);
    PT_CHECK(rate[0] == -1);
}

/* ---- the detector, driven by hand ------------------------------------------------------- */

static void test_consecutive_5xx(void)
{
    rig_t g;
    PT_CHECK(rig_start(&g, "{'base_ejection_time':'1s','max_ejection_time':'10s'}", EPS3) == 0);
    uint64_t t = 1000000;
    /* Four 5xx then a success: the run is broken. */
    http(&g, 0, 500, 4);
    http(&g, 0, 200, 1);
    http(&g, 0, 500, 4);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(!ejected(&g, 0));
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 0);
    /* The fifth in a row; a burst after it queues nothing more. */
    http(&g, 0, 500, 1);
    http(&g, 0, 500, 20);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(ejected(&g, 0));
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 1);
    PT_CHECK_INT(delta("ejections_enforced_consecutive_5xx"), 1);
    PT_CHECK_INT(delta("ejections_enforced_total"), 1);
    PT_CHECK_INT(delta("ejections_total"), 1);
    PT_CHECK_INT(delta("ejections_consecutive_5xx"), 1);
    /* 500 is not a gateway error. */
    PT_CHECK_INT(delta("ejections_detected_consecutive_gateway_failure"), 0);
    PT_CHECK_INT(active(), 1);
    PT_CHECK_INT(times_ejected(&g, 0), 1);
    /* Back after base_ejection_time x 1, not before. */
    pt_outlier_detector_run_expiry(g.d, t + 999);
    PT_CHECK(ejected(&g, 0));
    pt_outlier_detector_run_expiry(g.d, t + 1000);
    PT_CHECK(!ejected(&g, 0));
    PT_CHECK_INT(active(), 0);
    pt_outlier_host_info_t info;
    pt_outlier_host_info(H(&g, 0), &info);
    PT_CHECK_INT(info.consecutive_5xx, 0); /* reset on return */

    /* Again: twice the time. */
    t += 1500;
    http(&g, 0, 503, 5);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(ejected(&g, 0));
    PT_CHECK_INT(times_ejected(&g, 0), 2);
    pt_outlier_detector_run_expiry(g.d, t + 1999);
    PT_CHECK(ejected(&g, 0));
    pt_outlier_detector_run_expiry(g.d, t + 2000);
    PT_CHECK(!ejected(&g, 0));
    /* Third: three times. */
    t += 2500;
    http(&g, 0, 503, 5);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK_INT(times_ejected(&g, 0), 3);
    pt_outlier_host_info(H(&g, 0), &info);
    PT_CHECK_INT(info.uneject_at_ms - info.ejected_at_ms, 3000);
    PT_CHECK_INT(info.num_ejections, 3);
    pt_outlier_detector_run_expiry(g.d, t + 3000);
    PT_CHECK(!ejected(&g, 0));
    /* Healthy for an interval (10s) after coming back: one less each sweep, down to 0. */
    uint64_t back = t + 3000;
    pt_outlier_detector_run_interval(g.d, back + 5000);
    PT_CHECK_INT(times_ejected(&g, 0), 3); /* not a whole interval yet */
    pt_outlier_detector_run_interval(g.d, back + 10000);
    PT_CHECK_INT(times_ejected(&g, 0), 2);
    pt_outlier_detector_run_interval(g.d, back + 20000);
    pt_outlier_detector_run_interval(g.d, back + 30000);
    pt_outlier_detector_run_interval(g.d, back + 40000);
    PT_CHECK_INT(times_ejected(&g, 0), 0);
    t = back + 40000;
    http(&g, 0, 503, 5);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK_INT(times_ejected(&g, 0), 1);
    pt_outlier_host_info(H(&g, 0), &info);
    PT_CHECK_INT(info.uneject_at_ms - info.ejected_at_ms, 1000);
    rig_stop(&g);
}

static void test_max_ejection_time_cap(void)
{
    rig_t g;
    PT_CHECK(rig_start(&g, "{'base_ejection_time':'1s','max_ejection_time':'2.5s',"
                           "'consecutive_5xx':1}", EPS3) == 0);
    uint64_t t = 5000, want[] = {1000, 2000, 2500, 2500, 2500};
    for (int i = 0; i < 5; i++) {
        http(&g, 1, 500, 1);
        pt_outlier_detector_run_events(g.d, t);
        PT_CHECK(ejected(&g, 1));
        pt_outlier_host_info_t info;
        pt_outlier_host_info(H(&g, 1), &info);
        PT_CHECK_INT(info.uneject_at_ms - t, want[i]);
        t = info.uneject_at_ms;
        pt_outlier_detector_run_expiry(g.d, t);
        PT_CHECK(!ejected(&g, 1));
    }
    /* The multiplier stopped growing at 4 (4 * 1s >= 2.5s + 1s). */
    PT_CHECK_INT(times_ejected(&g, 1), 4);
    rig_stop(&g);
}

static void test_max_ejection_percent(void)
{
    rig_t g;
    /* Default 10% of three hosts: the first ejection only (at least one host). */
    PT_CHECK(rig_start(&g, "{}", EPS3) == 0);
    uint64_t t = 1000;
    http(&g, 0, 500, 5);
    http(&g, 1, 500, 5);
    http(&g, 2, 500, 5);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(ejected(&g, 0));
    PT_CHECK(!ejected(&g, 1));
    PT_CHECK(!ejected(&g, 2));
    PT_CHECK_INT(active(), 1);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 3);
    PT_CHECK_INT(delta("ejections_overflow"), 2);
    PT_CHECK_INT(delta("ejections_enforced_total"), 1);
    /* The counters of the hosts not ejected were reset: five more failures, five more
     * detections and overflows. */
    http(&g, 1, 500, 5);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK_INT(delta("ejections_overflow"), 3);
    /* Once the first is back, another may go. */
    pt_outlier_detector_run_expiry(g.d, t + 30000);
    PT_CHECK(!ejected(&g, 0));
    http(&g, 2, 500, 5);
    pt_outlier_detector_run_events(g.d, t + 30000);
    PT_CHECK(ejected(&g, 2));
    rig_stop(&g);

    /* 0% ejects nothing... */
    PT_CHECK(rig_start(&g, "{'max_ejection_percent':0}", EPS3) == 0);
    http(&g, 0, 500, 5);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(!ejected(&g, 0));
    PT_CHECK_INT(delta("ejections_overflow"), 1);
    rig_stop(&g);
    /* ...unless always_eject_one_host. */
    PT_CHECK(rig_start(&g, "{'max_ejection_percent':0,'always_eject_one_host':true}", EPS3) == 0);
    http(&g, 0, 500, 5);
    http(&g, 1, 500, 5);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(ejected(&g, 0));
    PT_CHECK(!ejected(&g, 1));
    rig_stop(&g);
    /* 100%: every host may go (the load balancer's panic mode then uses them all). */
    PT_CHECK(rig_start(&g, "{'max_ejection_percent':100}", EPS3) == 0);
    for (unsigned i = 0; i < 3; i++)
        http(&g, i, 500, 5);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(ejected(&g, 0) && ejected(&g, 1) && ejected(&g, 2));
    PT_CHECK_INT(active(), 3);
    PT_CHECK_INT(pt_stats_gauge_value(g.c->stats.membership_healthy), 0);
    rig_stop(&g);
}

static void test_enforcement(void)
{
    rig_t g;
    PT_CHECK(rig_start(&g, "{'enforcing_consecutive_5xx':0}", EPS3) == 0);
    http(&g, 0, 503, 5);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK(!ejected(&g, 0));
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 1);
    PT_CHECK_INT(delta("ejections_enforced_consecutive_5xx"), 0);
    /* 503 is also a gateway failure, not enforced by default. */
    PT_CHECK_INT(delta("ejections_detected_consecutive_gateway_failure"), 1);
    PT_CHECK_INT(delta("ejections_enforced_consecutive_gateway_failure"), 0);
    PT_CHECK_INT(delta("ejections_enforced_total"), 0);
    /* Not ejected: the counter restarted, the next five are detected again. */
    http(&g, 0, 503, 5);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 2);
    rig_stop(&g);

    /* Gateway failures enforced: 502/503/504 runs eject, 500 breaks a run. */
    PT_CHECK(rig_start(&g, "{'enforcing_consecutive_gateway_failure':100,'consecutive_5xx':100}",
                       EPS3) == 0);
    http(&g, 0, 502, 2);
    http(&g, 0, 504, 2);
    http(&g, 0, 500, 1);
    http(&g, 0, 503, 4);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK(!ejected(&g, 0));
    http(&g, 0, 504, 1);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK(ejected(&g, 0));
    PT_CHECK_INT(delta("ejections_enforced_consecutive_gateway_failure"), 1);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 0);
    /* Deprecated ejections_total counts 5xx and success-rate ejections only. */
    PT_CHECK_INT(delta("ejections_total"), 0);
    rig_stop(&g);
}

static void test_local_origin(void)
{
    rig_t g;
    /* Split: connect failures, timeouts and resets are local-origin failures; a connection
     * success resets their run; HTTP results do not touch it. */
    PT_CHECK(rig_start(&g, "{'split_external_local_origin_errors':true}", EPS3) == 0);
    result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 2);
    result(&g, 0, PT_OUTLIER_TIMEOUT, 1);
    result(&g, 0, PT_OUTLIER_CONNECT_SUCCESS, 1);
    result(&g, 0, PT_OUTLIER_RESET, 4);
    http(&g, 0, 200, 3);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK(!ejected(&g, 0));
    result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 1);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK(ejected(&g, 0));
    PT_CHECK_INT(delta("ejections_detected_consecutive_local_origin_failure"), 1);
    PT_CHECK_INT(delta("ejections_enforced_consecutive_local_origin_failure"), 1);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 0);
    /* ...and local failures are not 5xx. */
    result(&g, 1, PT_OUTLIER_CONNECT_FAILED, 4);
    http(&g, 1, 503, 4);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 0);
    rig_stop(&g);

    /* Not split: a connect failure is a 503 (5xx and gateway), a timeout a 504; a bare
     * connection success does not break the run, a final one (tcp_proxy) does. */
    PT_CHECK(rig_start(&g, "{}", EPS3) == 0);
    result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 2);
    result(&g, 0, PT_OUTLIER_CONNECT_SUCCESS, 3);
    result(&g, 0, PT_OUTLIER_TIMEOUT, 1);
    result(&g, 0, PT_OUTLIER_RESET, 1);
    result(&g, 0, PT_OUTLIER_CONNECT_SUCCESS_FINAL, 1);
    result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 4);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK(!ejected(&g, 0));
    result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 1);
    pt_outlier_detector_run_events(g.d, 1000);
    PT_CHECK(ejected(&g, 0));
    PT_CHECK_INT(delta("ejections_enforced_consecutive_5xx"), 1);
    PT_CHECK_INT(delta("ejections_detected_consecutive_gateway_failure"), 1);
    PT_CHECK_INT(delta("ejections_detected_consecutive_local_origin_failure"), 0);
    rig_stop(&g);
}

static void test_success_rate_ejection(void)
{
    rig_t g;
    PT_CHECK(rig_start(&g, "{'interval':'1s','max_ejection_percent':50}", EPS5) == 0);
    uint64_t t = 100000;
    /* One interval: hosts 1-4 answer 100 of 100; host 0 half. No run of 5 in a row. */
    for (int i = 0; i < 50; i++) {
        http(&g, 0, 200, 1);
        http(&g, 0, 500, 1);
    }
    for (unsigned h = 1; h < 5; h++)
        http(&g, h, 200, 100);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(!ejected(&g, 0));
    pt_outlier_detector_run_interval(g.d, t);
    PT_CHECK(ejected(&g, 0));
    PT_CHECK_INT(delta("ejections_detected_success_rate"), 1);
    PT_CHECK_INT(delta("ejections_enforced_success_rate"), 1);
    PT_CHECK_INT(delta("ejections_success_rate"), 1);
    PT_CHECK_INT(delta("ejections_total"), 1);
    PT_CHECK(fabs(pt_outlier_success_rate(H(&g, 0)) - 50.0) < 1e-9);
    PT_CHECK(fabs(pt_outlier_success_rate(H(&g, 1)) - 100.0) < 1e-9);
    /* The next interval saw nothing: rates are unknown again; the ejected host's counts of
     * that interval are dropped, not carried over. */
    http(&g, 0, 200, 10);
    pt_outlier_detector_run_interval(g.d, t + 1000);
    PT_CHECK(pt_outlier_success_rate(H(&g, 0)) == -1);
    PT_CHECK(pt_outlier_success_rate(H(&g, 1)) == -1);
    PT_CHECK_INT(delta("ejections_detected_success_rate"), 1);
    rig_stop(&g);

    /* Local-origin success rate in split mode. */
    PT_CHECK(rig_start(&g, "{'split_external_local_origin_errors':true,"
                           "'max_ejection_percent':50}", EPS5) == 0);
    for (int i = 0; i < 50; i++) {
        result(&g, 2, PT_OUTLIER_CONNECT_SUCCESS, 1);
        result(&g, 2, PT_OUTLIER_CONNECT_FAILED, 1);
    }
    for (unsigned h = 0; h < 5; h++)
        if (h != 2)
            result(&g, h, PT_OUTLIER_CONNECT_SUCCESS, 100);
    pt_outlier_detector_run_interval(g.d, t);
    PT_CHECK(ejected(&g, 2));
    PT_CHECK_INT(delta("ejections_detected_local_origin_success_rate"), 1);
    PT_CHECK_INT(delta("ejections_enforced_local_origin_success_rate"), 1);
    PT_CHECK_INT(delta("ejections_detected_success_rate"), 0);
    PT_CHECK(fabs(pt_outlier_local_origin_success_rate(H(&g, 2)) - 50.0) < 1e-9);
    PT_CHECK(pt_outlier_success_rate(H(&g, 2)) == -1);
    rig_stop(&g);
}

/* Failure percentages above 80% need runs of failures: keep the consecutive detectors out. */
#define NO_RUNS                                                                          \
    "'consecutive_5xx':1000,'consecutive_gateway_failure':1000,"                           \
    "'consecutive_local_origin_failure':1000"

static void test_failure_percentage_ejection(void)
{
    rig_t g;
    /* Success rate needs 5 hosts; failure percentage is set to judge 3. Enforcement of
     * failure percentage is 0 by default: detected only. */
    PT_CHECK(rig_start(&g, "{'failure_percentage_minimum_hosts':3," NO_RUNS "}", EPS3) == 0);
    uint64_t t = 100000;
    for (int i = 0; i < 10; i++) {
        http(&g, 0, 200, 1);
        http(&g, 0, 500, 4); /* 80% failed: not enough */
        http(&g, 1, 200, 1);
        http(&g, 1, 500, 9); /* 90% failed */
    }
    http(&g, 2, 200, 60);
    pt_outlier_detector_run_events(g.d, t);
    pt_outlier_detector_run_interval(g.d, t);
    PT_CHECK(!ejected(&g, 1));
    PT_CHECK_INT(delta("ejections_detected_failure_percentage"), 1);
    PT_CHECK_INT(delta("ejections_enforced_failure_percentage"), 0);
    rig_stop(&g);

    PT_CHECK(rig_start(&g, "{'failure_percentage_minimum_hosts':3," NO_RUNS ","
                           "'enforcing_failure_percentage':100}", EPS3) == 0);
    for (int i = 0; i < 10; i++) {
        http(&g, 1, 200, 1);
        http(&g, 1, 500, 9);
    }
    http(&g, 0, 200, 50);
    http(&g, 2, 200, 50);
    pt_outlier_detector_run_interval(g.d, t);
    PT_CHECK(ejected(&g, 1));
    PT_CHECK_INT(delta("ejections_enforced_failure_percentage"), 1);
    PT_CHECK(fabs(pt_outlier_success_rate(H(&g, 1)) - 10.0) < 1e-9);
    rig_stop(&g);

    /* Local origin. */
    PT_CHECK(rig_start(&g, "{'failure_percentage_minimum_hosts':3,'split_external_local_"
                           "origin_errors':true,'enforcing_failure_percentage_local_origin':100,"
                           NO_RUNS "}",
                       EPS3) == 0);
    for (int i = 0; i < 25; i++) {
        result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 1);
        result(&g, 0, PT_OUTLIER_CONNECT_SUCCESS, 1); /* no run of five */
        result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 1);
        result(&g, 0, PT_OUTLIER_TIMEOUT, 1);
    }
    result(&g, 1, PT_OUTLIER_CONNECT_SUCCESS, 50);
    result(&g, 2, PT_OUTLIER_CONNECT_SUCCESS, 50);
    pt_outlier_detector_run_events(g.d, t);
    PT_CHECK(!ejected(&g, 0));
    pt_outlier_detector_run_interval(g.d, t);
    PT_CHECK(!ejected(&g, 0)); /* 75% failed */
    for (int i = 0; i < 25; i++) {
        result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 4);
        result(&g, 0, PT_OUTLIER_CONNECT_SUCCESS, 1);
        result(&g, 0, PT_OUTLIER_CONNECT_FAILED, 4);
    }
    result(&g, 1, PT_OUTLIER_CONNECT_SUCCESS, 50);
    result(&g, 2, PT_OUTLIER_CONNECT_SUCCESS, 50);
    pt_outlier_detector_run_interval(g.d, t + 10000);
    PT_CHECK(ejected(&g, 0)); /* 200 of 225 failed: 88.9% */
    PT_CHECK_INT(delta("ejections_enforced_local_origin_failure_percentage"), 1);
    rig_stop(&g);
}

static void test_before_start_and_health_check(void)
{
    /* A threshold reached before the detector starts is handled at the start. */
    pt_boot_t *cfg = build("{}", EPS3);
    PT_CHECK(cfg != NULL);
    pt_cluster_t *c = cfg->clusters[0];
    for (int i = 0; i < 5; i++)
        pt_outlier_report(c, c->hosts[2], PT_OUTLIER_HTTP_RESPONSE, 500);
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    mark();
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
    /* Not watched yet: the event waits for the update. */
    PT_CHECK((atomic_load(&c->hosts[2]->health) & PT_HOST_FAILED_OUTLIER_CHECK) == 0);
    pt_view_t *view = pt_view_new(cfg->clusters, cfg->nclusters);
    PT_CHECK_INT(pt_outlier_update(d, view), 0);
    PT_CHECK((atomic_load(&c->hosts[2]->health) & PT_HOST_FAILED_OUTLIER_CHECK) != 0);
    PT_CHECK_INT(delta("ejections_enforced_consecutive_5xx"), 1);
    /* A passing active health check brings it back (default on)... */
    pt_outlier_health_check_passed(c->hosts[2]);
    PT_CHECK(atomic_load(&c->hosts[2]->health) == 0);
    PT_CHECK_INT(active(), 0);
    /* ...but not while the host also fails active health checks. */
    for (int i = 0; i < 5; i++)
        pt_outlier_report(c, c->hosts[2], PT_OUTLIER_HTTP_RESPONSE, 500);
    pt_outlier_detector_run_events(d, pt_now_ms());
    atomic_fetch_or(&c->hosts[2]->health, PT_HOST_FAILED_ACTIVE_HC);
    pt_outlier_health_check_passed(c->hosts[2]);
    PT_CHECK((atomic_load(&c->hosts[2]->health) & PT_HOST_FAILED_OUTLIER_CHECK) != 0);
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    pt_view_unref(view);
    pt_boot_free(cfg);

    /* Turned off. */
    cfg = build("{'successful_active_health_check_uneject_host':false}", EPS3);
    PT_CHECK(cfg != NULL);
    c = cfg->clusters[0];
    w.loop = ev_loop_new(EVFLAG_AUTO);
    d = pt_outlier_start(&w);
    view = pt_view_new(cfg->clusters, cfg->nclusters);
    PT_CHECK_INT(pt_outlier_update(d, view), 0);
    for (int i = 0; i < 5; i++)
        pt_outlier_report(c, c->hosts[0], PT_OUTLIER_HTTP_RESPONSE, 500);
    pt_outlier_detector_run_events(d, pt_now_ms());
    pt_outlier_health_check_passed(c->hosts[0]);
    PT_CHECK((atomic_load(&c->hosts[0]->health) & PT_HOST_FAILED_OUTLIER_CHECK) != 0);
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    pt_view_unref(view);
    pt_boot_free(cfg);
}

/* The real loop: an ejection from a 1ms base time ends by the expiry timer. */
static void test_loop_timers(void)
{
    rig_t g;
    PT_CHECK(rig_start(&g, "{'base_ejection_time':'0.001s','interval':'0.05s'}", EPS3) == 0);
    http(&g, 0, 500, 5); /* wakes the loop through the async watcher */
    ev_run(g.main.loop, EVRUN_NOWAIT);
    PT_CHECK(ejected(&g, 0));
    uint64_t start = pt_now_ms();
    while (ejected(&g, 0) && pt_now_ms() - start < 5000)
        ev_run(g.main.loop, EVRUN_ONCE);
    PT_CHECK(!ejected(&g, 0));
    rig_stop(&g);
}

/* ---- following views ----------------------------------------------------------------- */

/* Cluster "svc" with outlier_detection `od` (a JSON object) over `eps`, the same without
 * outlier_detection, and a cluster "other" without: fragments of a cluster list. */
#define SVC_OD(od, eps)                                                                    \
    "{'name':'svc','connect_timeout':'1s','outlier_detection':" od ","                     \
    "'load_assignment':{'cluster_name':'svc','endpoints':[{'lb_endpoints':[" eps "]}]}}"
#define SVC_PLAIN(eps)                                                                     \
    "{'name':'svc','connect_timeout':'1s',"                                                \
    "'load_assignment':{'cluster_name':'svc','endpoints':[{'lb_endpoints':[" eps "]}]}}"
#define OTHER                                                                              \
    "{'name':'other','connect_timeout':'1s','load_assignment':{'cluster_name':'other',"   \
    "'endpoints':[{'lb_endpoints':[" EP(9) "]}]}}"

/* One published version of the config: its snapshot and the view of its clusters. Building
 * the same cluster again makes a new version of it, sharing its state and hosts. */
typedef struct version {
    pt_boot_t *cfg;
    pt_view_t *view;
    pt_cluster_t *svc; /* NULL when the view has no "svc" */
} version_t;

static int version_make(version_t *v, const char *clusters)
{
    memset(v, 0, sizeof(*v));
    char *json = malloc(strlen(clusters) + 64);
    sprintf(json, "{'static_resources':{'clusters':[%s]}}", clusters);
    json_t *root = J(json);
    free(json);
    pt_cfg_init(&R, root);
    v->cfg = pt_test_boot(root, &R);
    json_decref(root);
    for (size_t i = 0; v->cfg == NULL && i < R.nerrors; i++)
        fprintf(stderr, "    %s\n", R.errors[i]);
    pt_cfg_dispose(&R);
    if (v->cfg == NULL || (v->view = pt_view_new(v->cfg->clusters, v->cfg->nclusters)) == NULL)
        return -1;
    v->svc = pt_view_find_cluster(v->view, "svc");
    return 0;
}

static void version_drop(version_t *v)
{
    pt_view_unref(v->view);
    pt_boot_free(v->cfg);
    memset(v, 0, sizeof(*v));
}

static int out(const pt_host_t *h)
{
    return (atomic_load(&h->health) & PT_HOST_FAILED_OUTLIER_CHECK) != 0;
}

/* `n` results with this status for host i, through version c (what a request pinned). */
static void report(pt_cluster_t *c, unsigned i, int status, int n)
{
    for (int k = 0; k < n; k++)
        pt_outlier_report(c, c->hosts[i], PT_OUTLIER_HTTP_RESPONSE, status);
}

static pt_stat_t healthy_gauge(void)
{
    return pt_stats_find("cluster.svc.membership_healthy");
}

/* The same version again (in the same view, or in a new view): nothing changes. */
static void test_update_same_version(void)
{
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
    version_t v1;
    PT_CHECK_INT(version_make(&v1, SVC_OD("{}", EPS3) "," OTHER), 0);
    PT_CHECK_INT(pt_outlier_update(d, v1.view), 0);
    uint64_t t = pt_now_ms();
    report(v1.svc, 1, 500, 5);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK(out(v1.svc->hosts[1]));
    pt_outlier_host_info_t before, after;
    PT_CHECK_INT(pt_outlier_host_info(v1.svc->hosts[1], &before), 0);
    mark();
    PT_CHECK_INT(pt_outlier_update(d, v1.view), 0);
    pt_view_t *again = pt_view_new(v1.cfg->clusters, v1.cfg->nclusters);
    PT_CHECK(again != NULL);
    PT_CHECK_INT(pt_outlier_update(d, again), 0);
    PT_CHECK(out(v1.svc->hosts[1]));
    PT_CHECK_INT(pt_outlier_host_info(v1.svc->hosts[1], &after), 0);
    PT_CHECK(memcmp(&before, &after, sizeof(before)) == 0);
    PT_CHECK_INT(active(), 1);
    PT_CHECK_INT(delta("ejections_enforced_total"), 0);
    /* Still watched as before: back when its time is over. */
    pt_outlier_detector_run_expiry(d, before.uneject_at_ms);
    PT_CHECK(!out(v1.svc->hosts[1]));
    PT_CHECK_INT(active(), 0);
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    pt_view_unref(again);
    version_drop(&v1);
}

/* A new version listing the same hosts (here with another connect_timeout): an ejected host
 * stays ejected, with its time; the detector no longer needs the old version; a request
 * that still holds the old version reports through it. */
static void test_update_new_version_keeps_ejection(void)
{
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
    version_t v1, v2;
    PT_CHECK_INT(version_make(&v1, SVC_OD("{'consecutive_5xx':5}", EPS5) "," OTHER), 0);
    PT_CHECK_INT(pt_outlier_update(d, v1.view), 0);
    uint64_t t = pt_now_ms();
    report(v1.svc, 2, 503, 5);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK(out(v1.svc->hosts[2]));
    PT_CHECK_INT(active(), 1);
    pt_outlier_host_info_t before, after;
    pt_outlier_host_info(v1.svc->hosts[2], &before);
    /* Three failures of host 0 so far: with a threshold of 3 in the new version the count
     * has reached it, and the update raises the event a worker no longer would. */
    report(v1.svc, 0, 500, 3);

    PT_CHECK_INT(version_make(&v2, SVC_OD("{'consecutive_5xx':3}", EPS5) "," OTHER), 0);
    PT_CHECK(v2.svc != v1.svc && v2.svc->state == v1.svc->state);
    PT_CHECK(v2.svc->hosts[2] == v1.svc->hosts[2]);
    /* A request of the old version still holds it; the rest goes. */
    pt_cluster_t *pinned = pt_cluster_ref(v1.svc);
    pt_host_t *h2 = v1.svc->hosts[2];
    version_drop(&v1);
    mark();
    PT_CHECK_INT(pt_outlier_update(d, v2.view), 0);
    PT_CHECK(out(h2));
    pt_outlier_host_info(h2, &after);
    PT_CHECK_INT(after.num_ejections, before.num_ejections);
    PT_CHECK_INT(after.uneject_at_ms, before.uneject_at_ms);
    PT_CHECK_INT(after.times_ejected, before.times_ejected);
    /* Host 0 crossed the lowered threshold: the update raises its event. With one of five
     * hosts out, max_ejection_percent (10) refuses a second ejection: detected, overflow. */
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 1);
    PT_CHECK_INT(delta("ejections_overflow"), 1);
    PT_CHECK(!out(v2.svc->hosts[0]));
    PT_CHECK_INT(active(), 1);
    PT_CHECK_INT(pt_stats_gauge_value(healthy_gauge()), 4);
    /* The old version's request: its own thresholds (5) apply to what it reports. */
    mark();
    for (int k = 0; k < 4; k++)
        pt_outlier_report(pinned, pinned->hosts[3], PT_OUTLIER_HTTP_RESPONSE, 500);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 0);
    pt_outlier_report(pinned, pinned->hosts[3], PT_OUTLIER_HTTP_RESPONSE, 500);
    pt_cluster_unref(pinned); /* the request ends before the main thread handles it */
    pt_outlier_detector_run_events(d, t);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 1);
    PT_CHECK_INT(delta("ejections_overflow"), 1); /* 1 of 5 out already */
    /* The ejection ends at its time, through the new version. */
    pt_outlier_detector_run_expiry(d, before.uneject_at_ms - 1);
    PT_CHECK(out(h2));
    pt_outlier_detector_run_expiry(d, before.uneject_at_ms);
    PT_CHECK(!out(h2));
    PT_CHECK_INT(active(), 0);
    PT_CHECK_INT(pt_stats_gauge_value(healthy_gauge()), 5);
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    version_drop(&v2);
}

/* A changed interval re-arms the sweep on the loop with the new period. */
static void test_update_interval_changed(void)
{
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
    version_t v1, v2;
#define VOLUMES                                                                            \
    "'success_rate_minimum_hosts':1,'success_rate_request_volume':1,"                      \
    "'failure_percentage_request_volume':1"
    PT_CHECK_INT(version_make(&v1, SVC_OD("{'interval':'300s'," VOLUMES "}", EPS3)), 0);
    PT_CHECK_INT(pt_outlier_update(d, v1.view), 0);
    PT_CHECK_INT(version_make(&v2, SVC_OD("{'interval':'0.02s'," VOLUMES "}", EPS3)), 0);
#undef VOLUMES
    PT_CHECK_INT(pt_outlier_update(d, v2.view), 0);
    report(v2.svc, 0, 200, 3);
    report(v2.svc, 0, 500, 1);
    uint64_t start = pt_now_ms();
    while (pt_outlier_success_rate(v2.svc->hosts[0]) < 0 && pt_now_ms() - start < 10000)
        ev_run(w.loop, EVRUN_ONCE);
    PT_CHECK(pt_outlier_success_rate(v2.svc->hosts[0]) == 75.0);
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    version_drop(&v1);
    version_drop(&v2);
}

/* A host added by a new version is watched from the update on; a threshold it reached
 * through the new version before the update (no detector registered for it yet) is not
 * lost; its interval counts start at the update. */
static void test_update_host_added(void)
{
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
#define OD_SMALL "{'success_rate_request_volume':1,'failure_percentage_request_volume':1}"
    version_t v1, v2, v3;
    PT_CHECK_INT(version_make(&v1, SVC_OD(OD_SMALL, EPS3)), 0);
    PT_CHECK_INT(pt_outlier_update(d, v1.view), 0);
    PT_CHECK_INT(version_make(&v2, SVC_OD(OD_SMALL, EPS3 "," EP(4))), 0);
    PT_CHECK_INT(version_make(&v3, SVC_OD(OD_SMALL, EPS3 "," EP(4) "," EP(5))), 0);
#undef OD_SMALL
    pt_host_t *h4 = v2.svc->hosts[3], *h5 = v3.svc->hosts[4];
    PT_CHECK(h4->outlier != NULL && v1.svc->nhosts == 3);
    /* Before the update: reported, but nothing watches the host. */
    report(v2.svc, 3, 200, 7);
    report(v2.svc, 3, 500, 5);
    PT_CHECK(!out(h4));
    mark();
    PT_CHECK_INT(pt_outlier_update(d, v2.view), 0);
    PT_CHECK(out(h4));
    PT_CHECK_INT(delta("ejections_enforced_consecutive_5xx"), 1);
    PT_CHECK_INT(active(), 1);
    /* Brought back by an active check: then a fresh sweep counts only what follows. */
    pt_outlier_health_check_passed(h4);
    PT_CHECK(!out(h4));
    report(v3.svc, 4, 200, 7); /* h5 before its update: not in its first interval */
    PT_CHECK_INT(pt_outlier_update(d, v3.view), 0);
    report(v3.svc, 4, 200, 1);
    report(v3.svc, 4, 500, 1);
    pt_outlier_detector_run_interval(d, pt_now_ms());
    PT_CHECK(pt_outlier_success_rate(h5) == 50.0);
    /* Watched like the others: five failures in a row eject it. */
    report(v3.svc, 4, 500, 4);
    pt_outlier_detector_run_events(d, pt_now_ms());
    PT_CHECK(out(h5));
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    version_drop(&v1);
    version_drop(&v2);
    version_drop(&v3);
}

/* A host removed while ejected: as in Envoy it no longer counts in ejections_active nor
 * toward max_ejection_percent; the old version (still pinned) keeps it out. Listed again
 * later while its object lives, it comes back as a new host. */
static void test_update_host_removed_while_ejected(void)
{
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
    version_t v1, v2, v3;
    PT_CHECK_INT(version_make(&v1, SVC_OD("{}", EPS3)), 0);
    PT_CHECK_INT(pt_outlier_update(d, v1.view), 0);
    uint64_t t = pt_now_ms();
    report(v1.svc, 2, 500, 5);
    pt_outlier_detector_run_events(d, t);
    pt_host_t *gone = v1.svc->hosts[2];
    PT_CHECK(out(gone));
    PT_CHECK_INT(active(), 1);
    PT_CHECK_INT(version_make(&v2, SVC_OD("{}", EP(1) "," EP(2))), 0);
    PT_CHECK_INT(pt_outlier_update(d, v2.view), 0);
    PT_CHECK_INT(active(), 0);
    PT_CHECK(out(gone)); /* for the requests of v1 */
    PT_CHECK_INT(pt_stats_gauge_value(healthy_gauge()), 2);
    /* With it still counted, 10% of 2 hosts would refuse this one. */
    mark();
    report(v2.svc, 0, 500, 5);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK(out(v2.svc->hosts[0]));
    PT_CHECK_INT(delta("ejections_overflow"), 0);
    PT_CHECK_INT(active(), 1);
    /* Reports for it through v1 go nowhere. */
    report(v1.svc, 2, 500, 10);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 1);
    /* Its ejection time passing changes nothing (it is not watched). */
    pt_outlier_detector_run_expiry(d, t + 29999);
    PT_CHECK(out(gone));
    /* Back in v3 (its object lived on in v1): a new host, not ejected, no history. */
    PT_CHECK_INT(version_make(&v3, SVC_OD("{}", EPS3)), 0);
    PT_CHECK(v3.svc->hosts[2] == gone);
    PT_CHECK_INT(pt_outlier_update(d, v3.view), 0);
    PT_CHECK(!out(gone));
    pt_outlier_host_info_t info;
    pt_outlier_host_info(gone, &info);
    PT_CHECK_INT(info.num_ejections, 0);
    PT_CHECK_INT(info.times_ejected, 0);
    PT_CHECK_INT(info.consecutive_5xx, 0);
    PT_CHECK_INT(active(), 1); /* host 0 */
    /* And watched: five failures eject it (1 of 3 out already: 10% refuses, overflow). */
    mark();
    report(v3.svc, 2, 500, 5);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 1);
    PT_CHECK_INT(delta("ejections_overflow"), 1);
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    version_drop(&v1);
    version_drop(&v2);
    version_drop(&v3);
}

/* A version without outlier_detection: the detector lets the cluster go and the hosts it
 * lists come back at once; turned on again, they start afresh. */
static void test_update_detection_removed(void)
{
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
    version_t v1, v2, v3;
    PT_CHECK_INT(version_make(&v1, SVC_OD("{}", EPS3)), 0);
    PT_CHECK_INT(pt_outlier_update(d, v1.view), 0);
    uint64_t t = pt_now_ms();
    report(v1.svc, 1, 500, 5);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK(out(v1.svc->hosts[1]));
    /* Host 0 is two failures short of its threshold through v1. */
    report(v1.svc, 0, 500, 3);
    PT_CHECK_INT(version_make(&v2, SVC_PLAIN(EPS3)), 0);
    PT_CHECK(v2.svc->outlier == NULL && v2.svc->hosts[1] == v1.svc->hosts[1]);
    PT_CHECK_INT(pt_outlier_update(d, v2.view), 0);
    PT_CHECK(!out(v2.svc->hosts[1]));
    PT_CHECK_INT(active(), 0);
    PT_CHECK_INT(pt_stats_gauge_value(healthy_gauge()), 3);
    /* Requests of v2 report nothing; a request of v1 crossing the threshold is dropped. */
    mark();
    report(v2.svc, 2, 500, 10);
    report(v1.svc, 0, 500, 2);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK(!out(v2.svc->hosts[0]) && !out(v2.svc->hosts[2]));
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 0);
    pt_outlier_detector_run_expiry(d, t + 60000);
    pt_outlier_detector_run_interval(d, t + 60000);
    /* On again: the hosts are watched from scratch. */
    PT_CHECK_INT(version_make(&v3, SVC_OD("{}", EPS3)), 0);
    PT_CHECK_INT(pt_outlier_update(d, v3.view), 0);
    pt_outlier_host_info_t info;
    pt_outlier_host_info(v3.svc->hosts[1], &info);
    PT_CHECK_INT(info.num_ejections, 0);
    PT_CHECK_INT(info.consecutive_5xx, 0);
    report(v3.svc, 1, 500, 5);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK(out(v3.svc->hosts[1]));
    PT_CHECK_INT(active(), 1);
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    version_drop(&v1);
    version_drop(&v2);
    version_drop(&v3);
}

/* A cluster removed from the view: its detector state goes, its hosts keep their bit (only
 * older versions list them); an event still queued for one of its hosts, whose versions are
 * all gone by the time the main thread looks, is dropped. */
static void test_update_cluster_removed(void)
{
    pt_worker_t w = {0};
    w.loop = ev_loop_new(EVFLAG_AUTO);
    pt_outlier_detector_t *d = pt_outlier_start(&w);
    PT_CHECK(d != NULL);
    version_t v1, v2;
    PT_CHECK_INT(version_make(&v1, SVC_OD("{}", EPS3) "," OTHER), 0);
    PT_CHECK_INT(pt_outlier_update(d, v1.view), 0);
    uint64_t t = pt_now_ms();
    report(v1.svc, 0, 500, 5);
    pt_outlier_detector_run_events(d, t);
    PT_CHECK(out(v1.svc->hosts[0]));
    PT_CHECK_INT(active(), 1);
    /* Queued, not handled yet. */
    report(v1.svc, 1, 500, 5);
    pt_cluster_t *kept = pt_cluster_ref(v1.svc);
    PT_CHECK(!out(kept->hosts[1]));
    version_drop(&v1);
    PT_CHECK_INT(version_make(&v2, OTHER), 0);
    PT_CHECK(v2.svc == NULL);
    mark();
    PT_CHECK_INT(pt_outlier_update(d, v2.view), 0); /* handles the queue: dropped */
    PT_CHECK(out(kept->hosts[0]));
    PT_CHECK(!out(kept->hosts[1]));
    PT_CHECK_INT(active(), 0);
    PT_CHECK_INT(delta("ejections_detected_consecutive_5xx"), 0);
    /* Again, with the last version gone before the queue is handled. */
    report(kept, 2, 500, 5);
    pt_cluster_unref(kept); /* the hosts live on in the queue's reference only */
    pt_outlier_detector_run_events(d, t);
    pt_outlier_detector_run_expiry(d, t + 60000);
    pt_outlier_detector_run_interval(d, t + 60000);
    /* Nothing counted; and with the cluster's last host gone, its stats went too. */
    PT_CHECK_INT(pt_stats_find("cluster.svc.outlier_detection.ejections_detected_consecutive_5xx"), 0);
    PT_CHECK_INT(pt_stats_find("cluster.svc.outlier_detection.ejections_active"), 0);
    /* Queued, then the detector stops: the queue lets its hosts go. */
    version_t v3;
    PT_CHECK_INT(version_make(&v3, SVC_OD("{}", EPS3)), 0);
    PT_CHECK_INT(pt_outlier_update(d, v3.view), 0);
    report(v3.svc, 0, 500, 5);
    version_drop(&v3);
    pt_outlier_stop(d);
    ev_loop_destroy(w.loop);
    version_drop(&v2);
}

int main(void)
{
    pt_stats_thread_init();
    PT_RUN(test_defaults);
    PT_RUN(test_no_outlier_detection);
    PT_RUN(test_all_fields);
    PT_RUN(test_errors);
    PT_RUN(test_may_eject);
    PT_RUN(test_enforce);
    PT_RUN(test_ejection_time);
    PT_RUN(test_success_rate_math);
    PT_RUN(test_analyze);
    PT_RUN(test_consecutive_5xx);
    PT_RUN(test_max_ejection_time_cap);
    PT_RUN(test_max_ejection_percent);
    PT_RUN(test_enforcement);
    PT_RUN(test_local_origin);
    PT_RUN(test_success_rate_ejection);
    PT_RUN(test_failure_percentage_ejection);
    PT_RUN(test_before_start_and_health_check);
    PT_RUN(test_loop_timers);
    PT_RUN(test_update_same_version);
    PT_RUN(test_update_new_version_keeps_ejection);
    PT_RUN(test_update_interval_changed);
    PT_RUN(test_update_host_added);
    PT_RUN(test_update_host_removed_while_ejected);
    PT_RUN(test_update_detection_removed);
    PT_RUN(test_update_cluster_removed);
    PT_TEST_EXIT();
}
