/* Unit tests for proxy/stats_tags (Envoy's tag extraction: the default extractors, custom
 * regexes and fixed values, one value per tag name, removal of every extractor's part at the
 * end) and the stats_config fields that configure it and the stats matcher. */
#include "proxy/config.h"
#include "proxy/stats.h"
#include "proxy/stats_config.h"
#include "proxy/stats_tags.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#include <string.h>

static pt_arena_t A;
static pt_stat_tags_t T;

/* The extraction of name as "tag-extracted name|tag=value|tag=value" in the order found. */
static const char *show(const pt_tag_producer_t *p, const char *name)
{
    static char out[2048];
    pt_tag_producer_extract(p, name, &T);
    size_t o = (size_t)snprintf(out, sizeof(out), "%s", T.name);
    for (unsigned i = 0; i < T.n; i++)
        o += (size_t)snprintf(out + o, sizeof(out) - o, "|%s=%s", T.tag_name[i], T.tag_value[i]);
    return out;
}

static void test_defaults(void)
{
    const pt_tag_producer_t *d = pt_tag_producer_new(&A, 1);
    PT_CHECK(d != NULL);
    PT_CHECK_STR(show(d, "cluster.backend.upstream_rq_200"),
                 "cluster.upstream_rq|envoy.response_code=200|envoy.cluster_name=backend");
    PT_CHECK_STR(show(d, "cluster.backend.upstream_rq_5xx"),
                 "cluster.upstream_rq_xx|envoy.response_code_class=5|envoy.cluster_name=backend");
    PT_CHECK_STR(show(d, "cluster.backend.upstream_rq_total"),
                 "cluster.upstream_rq_total|envoy.cluster_name=backend");
    PT_CHECK_STR(show(d, "http.ingress_http.downstream_rq_2xx"),
                 "http.downstream_rq_xx|envoy.response_code_class=2|"
                 "envoy.http_conn_manager_prefix=ingress_http");
    /* Envoy's documented example: both tags from the original name. */
    PT_CHECK_STR(show(d, "http.connection_manager_1.user_agent.ios.downstream_cx_total"),
                 "http.user_agent.downstream_cx_total|envoy.http_user_agent=ios|"
                 "envoy.http_conn_manager_prefix=connection_manager_1");
    PT_CHECK_STR(show(d, "listener.0.0.0.0_8080.downstream_cx_total"),
                 "listener.downstream_cx_total|envoy.listener_address=0.0.0.0_8080");
    PT_CHECK_STR(show(d, "listener.[__1]_8080.downstream_cx_total"),
                 "listener.downstream_cx_total|envoy.listener_address=[__1]_8080");
    /* The admin listener is no address tag (Envoy's negative match). */
    PT_CHECK_STR(show(d, "listener.admin.downstream_cx_total"),
                 "listener.admin.downstream_cx_total");
    /* fault.<downstream cluster>.<stat> only: http.X.fault.<stat> keeps its stat name. */
    PT_CHECK_STR(show(d, "http.ing.fault.delays_injected"),
                 "http.fault.delays_injected|envoy.http_conn_manager_prefix=ing");
    PT_CHECK_STR(show(d, "http.ing.fault.svc_a.aborts_injected"),
                 "http.fault.aborts_injected|envoy.fault_downstream_cluster=svc_a|"
                 "envoy.http_conn_manager_prefix=ing");
    PT_CHECK_STR(show(d, "http.ing.rds.my.routes.update_success"),
                 "http.rds.update_success|envoy.http_conn_manager_prefix=ing|"
                 "envoy.rds_route_config=my.routes");
    PT_CHECK_STR(show(d, "tcp.db.downstream_cx_total"),
                 "tcp.downstream_cx_total|envoy.tcp_prefix=db");
    PT_CHECK_STR(show(d, "listener_manager.worker_3.dispatcher.loop_duration_us"),
                 /* Envoy's regex removes "3." and leaves "worker_" */
                 "listener_manager.worker_dispatcher.loop_duration_us|envoy.worker_id=3");
    PT_CHECK_STR(show(d, "lr.http_local_rate_limit.rate_limited"),
                 "http_local_rate_limit.rate_limited|envoy.local_http_ratelimit_prefix=lr");
    PT_CHECK_STR(show(d, "cluster.api.ssl.ciphers.ECDHE-RSA-AES128-GCM-SHA256"),
                 "cluster.ssl.ciphers|envoy.ssl_cipher_suite=ECDHE-RSA-AES128-GCM-SHA256|"
                 "envoy.cluster_name=api");
    /* A cluster name with dots: the default takes its first token, as Envoy's does. */
    PT_CHECK_STR(show(d, "cluster.a.b.upstream_cx_total"),
                 "cluster.b.upstream_cx_total|envoy.cluster_name=a");
    PT_CHECK_STR(show(d, "server.live"), "server.live");
    PT_CHECK_STR(show(d, "cluster_manager.active_clusters"), "cluster_manager.active_clusters");
}

static void test_custom(void)
{
    char err[256];
    pt_tag_producer_t *p = pt_tag_producer_new(&A, 0);
    /* Envoy's example 1: the first group is removed, the second is the value. */
    PT_CHECK(pt_tag_producer_add(p, "envoy.cluster_name", "^cluster\\.((.+?)\\.)", NULL, err,
                                 sizeof(err)) == 0);
    PT_CHECK_STR(show(p, "cluster.foo_cluster.upstream_rq_timeout"),
                 "cluster.upstream_rq_timeout|envoy.cluster_name=foo_cluster");
    /* No default extractor: the response code stays in the name. */
    PT_CHECK_STR(show(p, "cluster.foo.upstream_rq_200"),
                 "cluster.upstream_rq_200|envoy.cluster_name=foo");
    /* One group: it is both the value and the removed part. */
    PT_CHECK(pt_tag_producer_add(p, "version", "\\.(v\\d+)$", NULL, err, sizeof(err)) == 0);
    PT_CHECK_STR(show(p, "app.calls.v2"), "app.calls.|version=v2");
    /* A fixed value: every stat, first, the name unchanged. */
    PT_CHECK(pt_tag_producer_add(p, "mesh", NULL, "east", err, sizeof(err)) == 0);
    PT_CHECK_STR(show(p, "server.live"), "server.live|mesh=east");
    PT_CHECK_STR(show(p, "cluster.foo.upstream_cx_total"),
                 "cluster.upstream_cx_total|mesh=east|envoy.cluster_name=foo");
    /* A second extractor of a tag name already found does not extract again. */
    PT_CHECK(pt_tag_producer_add(p, "envoy.cluster_name", "(upstream)_", NULL, err, sizeof(err)) ==
             0);
    PT_CHECK_STR(show(p, "cluster.foo.upstream_cx_total"),
                 "cluster.upstream_cx_total|mesh=east|envoy.cluster_name=foo");
    /* Istio's regex for cluster names with dots (its bootstrap's stats_tags). */
    pt_tag_producer_t *i = pt_tag_producer_new(&A, 0);
    PT_CHECK(pt_tag_producer_add(i, "cluster_name",
                                 "^cluster\\.((.+?(\\..+?\\.svc\\.cluster\\.local)?)\\.)", NULL,
                                 err, sizeof(err)) == 0);
    PT_CHECK_STR(
        show(i, "cluster.outbound|80||web.default.svc.cluster.local.upstream_rq_total"),
        "cluster.upstream_rq_total|cluster_name=outbound|80||web.default.svc.cluster.local");
    /* A name alone takes the default's extractor. */
    pt_tag_producer_t *n = pt_tag_producer_new(&A, 0);
    PT_CHECK(pt_tag_producer_add(n, "envoy.response_code", NULL, NULL, err, sizeof(err)) == 0);
    PT_CHECK_STR(show(n, "cluster.x.upstream_rq_404"),
                 "cluster.x.upstream_rq|envoy.response_code=404");
    PT_CHECK(pt_tag_producer_add(n, "nope", NULL, NULL, err, sizeof(err)) == -1);
    PT_CHECK(pt_tag_producer_add(n, "g", "abc", NULL, err, sizeof(err)) == -1);
    PT_CHECK(strstr(err, "capture group") != NULL);
}

static void test_sanitize(void)
{
    char out[64];
    pt_stats_prom_sanitize("envoy.cluster_name", out, sizeof(out));
    PT_CHECK_STR(out, "envoy_cluster_name");
    pt_stats_prom_sanitize("a-b:c|d", out, sizeof(out));
    PT_CHECK_STR(out, "a_b_c_d");
}

/* ---- configuration ---------------------------------------------------------------- */

static pt_cfg_t R;

static pt_boot_t *build(const char *json)
{
    json_t *root = J(json);
    pt_cfg_init(&R, root);
    pt_boot_t *c = pt_test_boot(root, &R);
    json_decref(root);
    return c;
}

#define REJECTS(json, ...)                                                                         \
    do {                                                                                           \
        pt_boot_t *c_ = build(json);                                                               \
        int ok_ = c_ == NULL && errors_are(&R, (const char *const[]){__VA_ARGS__, NULL});          \
        pt_boot_free(c_);                                                                          \
        pt_cfg_dispose(&R);                                                                        \
        PT_CHECK(ok_);                                                                             \
    } while (0)

static void test_config(void)
{
    pt_boot_t *c = build(
        "{'stats_config': {'use_all_default_tags': false, 'stats_tags': ["
        " {'tag_name': 'a', 'regex': '^x\\\\.((.*?)\\\\.)'},"
        " {'tag_name': 'b', 'fixed_value': 'v'},"
        " {'tag_name': 'envoy.cluster_name'}, {'tag_name': 'envoy.response_code', 'regex': ''}],"
        " 'stats_matcher': {'exclusion_list': {'patterns': [{'prefix': 'c'}]}}}}");
    PT_CHECK(c != NULL);
    if (c == NULL)
        for (size_t i = 0; i < R.nerrors; i++)
            fprintf(stderr, "  %s\n", R.errors[i]);
    pt_boot_free(c);
    pt_cfg_dispose(&R);
    REJECTS("{'stats_config': {'stats_tags': [{'tag_name': 'x', 'regex': '(y'}]}}",
            "stats_config.stats_tags[0].regex: \"(y\" is not a valid regex: missing ): (y");
    REJECTS("{'stats_config': {'stats_tags': [{'tag_name': 'x', 'regex': 'y'}]}}",
            "stats_config.stats_tags[0].regex: \"y\" has no capture group: the first one names "
            "the part of the stat name that becomes the tag");
    REJECTS(
        "{'stats_config': {'stats_tags': [{'tag_name': 'envoy.cluster_name', 'regex': '(y)'}]}}",
        "stats_config.stats_tags[0].tag_name: \"envoy.cluster_name\" is specified twice "
        "(use_all_default_tags already extracts it): Envoy refuses that");
    REJECTS("{'stats_config': {'use_all_default_tags': false, 'stats_tags': ["
            " {'tag_name': 'a', 'fixed_value': '1'}, {'tag_name': 'a', 'fixed_value': '2'}]}}",
            "stats_config.stats_tags[1].tag_name: \"a\" is specified twice (an earlier "
            "stats_tags entry has it): Envoy refuses that");
    REJECTS("{'stats_config': {'stats_tags': [{'tag_name': 'custom'}]}}",
            "stats_config.stats_tags[0].tag_name: has neither regex nor fixed_value, and is not "
            "one of Envoy's default tag names");
    REJECTS("{'stats_config': {'stats_tags': [{'tag_name': 'a', 'regex': '(a)', "
            "'fixed_value': 'b'}]}}",
            "stats_config.stats_tags[0]: only one of regex, fixed_value may be given (found regex, "
            "fixed_value)");
    REJECTS("{'stats_config': {'stats_tags': [{'regex': '(a)'}]}}",
            "stats_config.stats_tags[0].tag_name: is required");
    REJECTS("{'stats_config': {'stats_matcher': {}}}",
            "stats_config.stats_matcher: one of reject_all, exclusion_list or inclusion_list is "
            "required");
    REJECTS("{'stats_config': {'stats_matcher': {'inclusion_list': {'patterns': []}}}}",
            "stats_config.stats_matcher.inclusion_list.patterns: must list at least one "
            "StringMatcher");
    REJECTS("{'stats_config': {'stats_matcher': {'exclusion_list': {'patterns': "
            "[{'safe_regex': {'regex': '('}}]}}}}",
            "stats_config.stats_matcher.exclusion_list.patterns[0].safe_regex.regex: \"(\" is "
            "not a valid regex: missing ): (");
}

/* The matcher: a rejected counter is the shared slot, never listed; a kept one is made. */
static void test_matcher(void)
{
    json_t *root = J("{'stats_config': {'stats_matcher': {'exclusion_list': {'patterns': ["
                     " {'prefix': 'cluster.rej.'}, {'suffix': '.hidden'}]}}}}");
    pt_stats_config_install(root);
    json_decref(root);
    uint32_t before = pt_stats_live();
    pt_stat_t r = pt_stats_counter("cluster", "envoy_cluster_name", "rej", "upstream_rq_total");
    PT_CHECK_INT(r, PT_STAT_REJECTED);
    pt_stat_inc(r);                     /* lands in the shared slot */
    PT_CHECK_INT(pt_stats_value(r), 0); /* and reads 0, as Envoy's null stats */
    PT_CHECK(pt_stats_histogram("cluster", "envoy_cluster_name", "rej", "upstream_rq_time") == 0);
    PT_CHECK_INT(pt_stats_gauge("umt", NULL, NULL, "x.hidden"), PT_STAT_REJECTED);
    PT_CHECK_INT(pt_stats_live(), before);
    PT_CHECK(pt_stats_find("cluster.rej.upstream_rq_total") == 0);
    pt_stat_t k = pt_stats_counter("cluster", "envoy_cluster_name", "kept", "upstream_rq_total");
    PT_CHECK(k != 0 && k != PT_STAT_REJECTED);
    PT_CHECK_INT(pt_stats_live(), before + 1);
    root = J("{'stats_config': {'stats_matcher': {'inclusion_list': {'patterns': ["
             " {'prefix': 'server.'}]}}}}");
    pt_stats_config_install(root);
    json_decref(root);
    PT_CHECK_INT(pt_stats_counter("cluster", "envoy_cluster_name", "other", "x"), PT_STAT_REJECTED);
    PT_CHECK(pt_stats_counter("server", NULL, NULL, "umt_in") != PT_STAT_REJECTED);
    root = J("{'stats_config': {'stats_matcher': {'reject_all': true}}}");
    pt_stats_config_install(root);
    json_decref(root);
    PT_CHECK_INT(pt_stats_counter("server", NULL, NULL, "umt_in2"), PT_STAT_REJECTED);
    /* Already made: still found. */
    PT_CHECK(pt_stats_counter("server", NULL, NULL, "umt_in") != PT_STAT_REJECTED);
    pt_stats_settings_install(NULL);
    PT_CHECK(pt_stats_counter("server", NULL, NULL, "umt_in2") != PT_STAT_REJECTED);
}

int main(void)
{
    if (pt_stats_thread_init() != 0)
        return 1;
    pt_arena_init_small(&A);
    PT_RUN(test_defaults);
    PT_RUN(test_custom);
    PT_RUN(test_sanitize);
    PT_RUN(test_config);
    PT_RUN(test_matcher);
    pt_arena_dispose(&A);
    PT_TEST_EXIT();
}
