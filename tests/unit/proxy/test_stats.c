/* Unit tests for proxy/stats and the admin's stats renderings: find-or-create, names and
 * Prometheus names, per-thread slots summing exactly, sorting, the text / JSON / Prometheus
 * formats byte for byte, filters, and (when promtool is installed) a realistic exposition
 * checked by `promtool check metrics`.
 *
 * The registry is process-global and append-only: every test uses its own scope name so
 * that a filter on it selects exactly the stats the test made. */
#include "proxy/admin.h"
#include "proxy/buf.h"
#include "proxy/cluster.h"
#include "proxy/config.h"
#include "proxy/stats.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_stats.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

/* The buffer's contents as a string (caller frees); disposes the buffer. */
static char *take(pt_buf_t *b)
{
    char *s = malloc(pt_buf_len(b) + 1);
    size_t n = pt_buf_copyout(b, 0, s, pt_buf_len(b));
    s[n] = '\0';
    pt_buf_dispose(b);
    return s;
}

static char *render_text(const char *filter, int used_only)
{
    pt_buf_t b = {0};
    if (pt_admin_render_stats_text(&b, filter, used_only) != 0) {
        pt_buf_dispose(&b);
        return NULL;
    }
    return take(&b);
}

static char *render_json(const char *filter, int used_only)
{
    pt_buf_t b = {0};
    if (pt_admin_render_stats_json(&b, filter, used_only) != 0) {
        pt_buf_dispose(&b);
        return NULL;
    }
    return take(&b);
}

static char *render_prom(const char *filter, int used_only)
{
    pt_buf_t b = {0};
    if (pt_admin_render_prometheus(&b, filter, used_only) != 0) {
        pt_buf_dispose(&b);
        return NULL;
    }
    return take(&b);
}

/* PT_CHECK_STR on a heap string that is freed either way. */
#define CHECK_STR_FREE(got, want)                                                        \
    do {                                                                                 \
        char *g_ = (got);                                                                \
        int eq_ = g_ != NULL && strcmp(g_, (want)) == 0;                                 \
        if (!eq_)                                                                        \
            fprintf(stderr, "  got:\n%s\n  want:\n%s\n", g_ ? g_ : "(null)", (want));    \
        free(g_);                                                                        \
        PT_CHECK(eq_);                                                                   \
    } while (0)

static void test_find_or_create(void)
{
    uint32_t before = pt_stats_count();
    pt_stat_t a = pt_stats_counter("ufc", "envoy_cluster_name", "c1", "upstream_cx_total");
    PT_CHECK(a != 0);
    PT_CHECK_INT(pt_stats_count(), before + 1);
    PT_CHECK_INT(pt_stats_counter("ufc", "envoy_cluster_name", "c1", "upstream_cx_total"), a);
    PT_CHECK_INT(pt_stats_get(PT_STAT_COUNTER, "ufc", "envoy_cluster_name", "c1",
                              "upstream_cx_total"),
                 a);
    PT_CHECK_INT(pt_stats_count(), before + 1); /* found, not created again */
    pt_stat_t b = pt_stats_counter("ufc", "envoy_cluster_name", "c2", "upstream_cx_total");
    PT_CHECK(b != 0 && b != a);
    pt_stat_t g = pt_stats_gauge("ufc", "envoy_cluster_name", "c1", "upstream_cx_active");
    PT_CHECK(g != 0 && g != a && g != b);
    PT_CHECK_INT(pt_stats_find("ufc.c1.upstream_cx_total"), a);
    PT_CHECK_INT(pt_stats_find("ufc.c2.upstream_cx_total"), b);
    PT_CHECK_INT(pt_stats_find("ufc.c1.upstream_cx_active"), g);
    PT_CHECK_INT(pt_stats_find("ufc.c3.upstream_cx_total"), 0);
    PT_CHECK_INT(pt_stats_find(""), 0);
    PT_CHECK(pt_stats_info(0) == NULL);
    PT_CHECK(pt_stats_info(pt_stats_count() + 5) == NULL);
}

static void test_names_and_tags(void)
{
    pt_stat_t a = pt_stats_counter("unm", "envoy_cluster_name", "backend", "upstream_rq_total");
    const pt_stat_info_t *i = pt_stats_info(a);
    PT_CHECK(i != NULL);
    PT_CHECK_STR(full_name(a), "unm.backend.upstream_rq_total");
    PT_CHECK_STR(pt_stat_family(i)->prom_name, "envoy_unm_upstream_rq_total");
    PT_CHECK_STR(pt_stat_family(i)->tag, "envoy_cluster_name");
    PT_CHECK_STR(pt_stat_tag_value(i), "backend");
    PT_CHECK_INT(pt_stat_family(i)->kind, PT_STAT_COUNTER);

    pt_stat_t g = pt_stats_gauge("unm", NULL, NULL, "live");
    i = pt_stats_info(g);
    PT_CHECK_STR(full_name(g), "unm.live");
    PT_CHECK_STR(pt_stat_family(i)->prom_name, "envoy_unm_live");
    PT_CHECK(pt_stat_family(i)->tag == NULL && pt_stat_tag_value(i) == NULL);
    PT_CHECK_INT(pt_stat_family(i)->kind, PT_STAT_GAUGE);

    /* Characters Prometheus does not allow in names become '_'; the tag value keeps them. */
    pt_stat_t c = pt_stats_counter("unm", "envoy_listener_address", "[::1]_10000",
                                   "x-y.z/w");
    i = pt_stats_info(c);
    PT_CHECK_STR(full_name(c), "unm.[::1]_10000.x-y.z/w");
    PT_CHECK_STR(pt_stat_family(i)->prom_name, "envoy_unm_x_y_z_w");
    PT_CHECK_STR(pt_stat_tag_value(i), "[::1]_10000");
}

/* ---- per-thread slots ---------------------------------------------------------------- */

#define NTHREADS 8
#define NITER    100000

typedef struct thread_arg {
    pt_stat_t counter, gauge, created;
    int64_t gauge_delta; /* +1 or -1 per iteration for the cross-thread gauge */
    pt_stat_t cross;
} thread_arg_t;

static void *counting_thread(void *p)
{
    thread_arg_t *a = p;
    if (pt_stats_thread_init() != 0)
        return NULL;
    /* Find-or-create from many threads at once: everyone gets the same id. */
    a->created = pt_stats_counter("uthr", NULL, NULL, "created_by_threads");
    for (int i = 0; i < NITER; i++) {
        pt_stat_inc(a->counter);
        pt_stat_add(a->created, 2);
        pt_stat_inc(a->gauge);
        if (i % 5 < 2)
            pt_stat_dec(a->gauge);
        pt_stat_add(a->cross, (uint64_t)a->gauge_delta);
    }
    pt_stats_thread_dispose();
    pt_stat_inc(a->counter); /* after dispose: dropped, not counted, no crash */
    return NULL;
}

static void test_threads_sum_exactly(void)
{
    pt_stat_t c = pt_stats_counter("uthr", NULL, NULL, "counter");
    pt_stat_t g = pt_stats_gauge("uthr", NULL, NULL, "gauge");
    pt_stat_t x = pt_stats_gauge("uthr", NULL, NULL, "cross");
    pthread_t th[NTHREADS];
    thread_arg_t args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        /* Half the threads raise the cross gauge, half lower it: it nets to zero, the way a
         * connection opened on one worker and closed on another does. */
        args[i] = (thread_arg_t){.counter = c, .gauge = g, .cross = x,
                                 .gauge_delta = i % 2 ? -1 : 1};
        PT_CHECK_INT(pthread_create(&th[i], NULL, counting_thread, &args[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    PT_CHECK_INT(pt_stats_value(c), (uint64_t)NTHREADS * NITER);
    PT_CHECK_INT(pt_stats_gauge_value(g), (int64_t)NTHREADS * (NITER - NITER / 5 * 2));
    PT_CHECK_INT(pt_stats_gauge_value(x), 0);
    pt_stat_t created = args[0].created;
    PT_CHECK(created != 0);
    for (int i = 1; i < NTHREADS; i++)
        PT_CHECK_INT(args[i].created, created);
    PT_CHECK_INT(pt_stats_value(created), (uint64_t)NTHREADS * NITER * 2);
    /* The threads are gone; their counts stay. */
    PT_CHECK_INT(pt_stats_find("uthr.created_by_threads"), created);
}

static void test_gauge_set_and_negative(void)
{
    pt_stat_t g = pt_stats_gauge("uset", NULL, NULL, "ejections_active");
    pt_stat_set(g, 42);
    PT_CHECK_INT(pt_stats_gauge_value(g), 42);
    pt_stat_set(g, 7);
    PT_CHECK_INT(pt_stats_gauge_value(g), 7);
    pt_stat_t n = pt_stats_gauge("uset", NULL, NULL, "negative");
    pt_stat_dec(n);
    pt_stat_dec(n);
    PT_CHECK_INT(pt_stats_gauge_value(n), -2);
    pt_stat_set(n, -5);
    PT_CHECK_INT(pt_stats_gauge_value(n), -5);
    /* Stat 0 is "no stat": it reads as zero whatever was done to it. */
    pt_stat_inc(0);
    PT_CHECK_INT(pt_stats_value(0), 0);
}

static void test_sorted(void)
{
    static const char *const names[] = {"zeta", "alpha", "mid.b", "mid.a", "Mid", "mid"};
    for (int i = 0; i < 6; i++)
        pt_stats_counter("usrt", NULL, NULL, names[i]);
    uint32_t n;
    pt_stat_t *ids = pt_stats_sorted(&n);
    PT_CHECK(ids != NULL);
    PT_CHECK_INT(n, pt_stats_count() - 1); /* ids run from 1 */
    const char *want[] = {"usrt.Mid", "usrt.alpha", "usrt.mid", "usrt.mid.a", "usrt.mid.b",
                          "usrt.zeta"};
    int k = 0, ordered = 1;
    for (uint32_t i = 0; i < n; i++) {
        const char *name = full_name(ids[i]);
        if (i > 0 && strcmp(full_name(ids[i - 1]), name) >= 0)
            ordered = 0;
        if (strncmp(name, "usrt.", 5) == 0) {
            if (k >= 6 || strcmp(name, want[k]) != 0)
                ordered = 0;
            k++;
        }
    }
    free(ids);
    PT_CHECK(ordered);
    PT_CHECK_INT(k, 6);
}

/* An info pointer must survive the registry growing: the admin holds one while rendering
 * and other threads may create stats meanwhile (per-status-code counters on workers). */
static void test_info_pointer_stable(void)
{
    pt_stat_t a = pt_stats_counter("ustb", NULL, NULL, "first");
    const pt_stat_info_t *i = pt_stats_info(a);
    char name[64];
    for (int k = 0; k < 20000; k++) {
        snprintf(name, sizeof(name), "s%d", k);
        pt_stats_counter("ustb", NULL, NULL, name);
    }
    PT_CHECK_STR(full_name(a), "ustb.first");
    PT_CHECK(pt_stats_info(a) == i);
    PT_CHECK_INT(pt_stats_find("ustb.s19999"), pt_stats_find("ustb.s0") + 19999);
}

static void *creating_thread(void *p)
{
    int t = (int)(intptr_t)p;
    char name[64];
    for (int k = 0; k < 5000; k++) {
        snprintf(name, sizeof(name), "t%d_%d", t, k);
        pt_stats_counter("ucon", "envoy_cluster_name", "c", name);
    }
    return NULL;
}

/* Rendering while other threads create stats: no torn reads, no freed memory (run under
 * ASan to see the difference). */
static void test_render_while_creating(void)
{
    pthread_t th[3];
    for (int t = 0; t < 3; t++)
        pthread_create(&th[t], NULL, creating_thread, (void *)(intptr_t)t);
    for (int r = 0; r < 20; r++) {
        char *s = render_prom("^ucon\\.", 0);
        PT_CHECK(s != NULL);
        free(s);
    }
    for (int t = 0; t < 3; t++)
        pthread_join(th[t], NULL);
    char *s = render_text("^ucon\\.", 0);
    size_t lines = 0;
    for (char *p = s; *p; p++)
        lines += *p == '\n';
    free(s);
    PT_CHECK_INT(lines, 15000);
}

/* ---- renderings ------------------------------------------------------------------- */

static void make_text_stats(void)
{
    static int done;
    if (done++)
        return;
    pt_stat_add(pt_stats_counter("utxt", "envoy_x", "b", "requests"), 5);
    pt_stat_add(pt_stats_gauge("utxt", "envoy_x", "a", "active"), (uint64_t)-3);
    pt_stats_gauge("utxt", "envoy_x", "a", "idle");
    pt_stats_counter("utxt", NULL, NULL, "zero");
}

static void test_render_text(void)
{
    make_text_stats();
    CHECK_STR_FREE(render_text("^utxt\\.", 0), "utxt.a.active: -3\n"
                                               "utxt.a.idle: 0\n"
                                               "utxt.b.requests: 5\n"
                                               "utxt.zero: 0\n");
    /* usedonly: stats that were never changed are left out (a negative gauge is used). */
    CHECK_STR_FREE(render_text("^utxt\\.", 1), "utxt.a.active: -3\n"
                                               "utxt.b.requests: 5\n");
    CHECK_STR_FREE(render_text("utxt\\.a\\.", 0), "utxt.a.active: -3\n"
                                                  "utxt.a.idle: 0\n");
    CHECK_STR_FREE(render_text("^no_such_stat$", 0), "");
    /* An invalid regex is the caller's error (400), not an empty answer. */
    PT_CHECK(render_text("utxt(", 0) == NULL);
    /* An empty filter means no filter. */
    char *all = render_text("", 0);
    PT_CHECK(all != NULL && strstr(all, "utxt.zero: 0\n") != NULL);
    free(all);
}

static void test_render_json(void)
{
    make_text_stats();
    CHECK_STR_FREE(render_json("^utxt\\.", 0), "{\n"
                                               " \"stats\": [\n"
                                               "  {\n"
                                               "   \"name\": \"utxt.a.active\",\n"
                                               "   \"value\": -3\n"
                                               "  },\n"
                                               "  {\n"
                                               "   \"name\": \"utxt.a.idle\",\n"
                                               "   \"value\": 0\n"
                                               "  },\n"
                                               "  {\n"
                                               "   \"name\": \"utxt.b.requests\",\n"
                                               "   \"value\": 5\n"
                                               "  },\n"
                                               "  {\n"
                                               "   \"name\": \"utxt.zero\",\n"
                                               "   \"value\": 0\n"
                                               "  }\n"
                                               " ]\n"
                                               "}\n");
    char *s = render_json("^utxt\\.", 1);
    json_t *j = json_loads(s, 0, NULL);
    free(s);
    json_t *want = json_pack("{s:[{s:s,s:i},{s:s,s:i}]}", "stats", "name", "utxt.a.active",
                             "value", -3, "name", "utxt.b.requests", "value", 5);
    PT_CHECK(j != NULL && json_equal(j, want));
    json_decref(j);
    json_decref(want);
    CHECK_STR_FREE(render_json("^no_such_stat$", 0), "{\n \"stats\": []\n}\n");
    PT_CHECK(render_json("(", 0) == NULL);
}

static void test_render_prometheus(void)
{
    const char *t = "envoy_cluster_name";
    pt_stat_add(pt_stats_counter("cluster", t, "upa", "upstream_cx_total"), 7);
    pt_stat_add(pt_stats_counter("cluster", t, "upb", "upstream_cx_total"), 2);
    pt_stat_add(pt_stats_counter("cluster", t, "upa", "upstream_cx_connect_fail"), 1);
    pt_stat_set(pt_stats_gauge("cluster", t, "upa", "membership_total"), 3);
    pt_stat_set(pt_stats_gauge("cluster", t, "upa", "upstream_cx_active"), 4);
    pt_stat_add(pt_stats_counter("uprom", NULL, NULL, "requests"), 9);
    pt_stat_set(pt_stats_gauge("uprom", NULL, NULL, "live"), 1);
    pt_stats_counter("cluster", t, "upb", "upstream_cx_connect_fail"); /* stays 0 */
    const char *want =
        /* Envoy's names as they are: a gauge ending in _total stays a gauge... */
        "# HELP envoy_cluster_membership_total Gauge cluster.upa.membership_total\n"
        "# TYPE envoy_cluster_membership_total gauge\n"
        "envoy_cluster_membership_total{envoy_cluster_name=\"upa\"} 3\n"
        "# HELP envoy_cluster_upstream_cx_active Gauge cluster.upa.upstream_cx_active\n"
        "# TYPE envoy_cluster_upstream_cx_active gauge\n"
        "envoy_cluster_upstream_cx_active{envoy_cluster_name=\"upa\"} 4\n"
        /* ...and a counter gets no suffix (Envoy's exporter adds none); */
        "# HELP envoy_cluster_upstream_cx_connect_fail Counter "
        "cluster.upa.upstream_cx_connect_fail\n"
        "# TYPE envoy_cluster_upstream_cx_connect_fail counter\n"
        "envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name=\"upa\"} 1\n"
        "envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name=\"upb\"} 0\n"
        /* one HELP/TYPE per family, samples grouped under it. */
        "# HELP envoy_cluster_upstream_cx_total Counter cluster.upa.upstream_cx_total\n"
        "# TYPE envoy_cluster_upstream_cx_total counter\n"
        "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"upa\"} 7\n"
        "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"upb\"} 2\n"
        "# HELP envoy_uprom_live Gauge uprom.live\n"
        "# TYPE envoy_uprom_live gauge\n"
        "envoy_uprom_live 1\n"
        "# HELP envoy_uprom_requests Counter uprom.requests\n"
        "# TYPE envoy_uprom_requests counter\n"
        "envoy_uprom_requests 9\n"
        ;
    CHECK_STR_FREE(render_prom("^(uprom|cluster\\.up[ab])\\.", 0), want);
    /* usedonly drops b's zero connect_fail sample; the family stays. */
    char *s = render_prom("^(uprom|cluster\\.up[ab])\\.", 1);
    PT_CHECK(s != NULL && strstr(s, "{envoy_cluster_name=\"upb\"} 0") == NULL);
    PT_CHECK(strstr(s, "envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name=\"upa\"} 1\n"));
    free(s);
    /* The filter sees the Envoy name, not the Prometheus one. */
    CHECK_STR_FREE(render_prom("^cluster\\.upb\\.upstream_cx_total$", 0),
                   "# HELP envoy_cluster_upstream_cx_total Counter cluster.upb.upstream_cx_total\n"
                   "# TYPE envoy_cluster_upstream_cx_total counter\n"
                   "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"upb\"} 2\n");
    CHECK_STR_FREE(render_prom("^envoy_cluster", 0), "");
    PT_CHECK(render_prom("[", 0) == NULL);
}

/* Label values escape backslash, double quote and line feed; HELP text escapes backslash
 * and line feed (Prometheus text format 0.0.4). A cluster name is user input. */
static void test_prometheus_escaping(void)
{
    pt_stat_inc(pt_stats_counter("cluster", "envoy_cluster_name", "a\"b\\c\nd", "uesc_cx"));
    CHECK_STR_FREE(render_prom("uesc_cx$", 0),
                   "# HELP envoy_cluster_uesc_cx Counter cluster.a\"b\\\\c\\nd.uesc_cx\n"
                   "# TYPE envoy_cluster_uesc_cx counter\n"
                   "envoy_cluster_uesc_cx{envoy_cluster_name=\"a\\\"b\\\\c\\nd\"} 1\n");
}

/* ---- promtool ---------------------------------------------------------------------- */

static const char *const mesh_config =
    "{\"static_resources\": {"
    " \"clusters\": ["
    "  {\"name\": \"backend\", \"connect_timeout\": \"1s\", \"load_assignment\": {\"cluster_name\": \"backend\","
    "   \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\":"
    "    {\"address\": \"10.0.0.1\", \"port_value\": 80}}}}]}]}},"
    "  {\"name\": \"outbound|9080||reviews.default.svc.cluster.local\", \"connect_timeout\": \"0.25s\"}],"
    " \"listeners\": ["
    "  {\"name\": \"in\", \"address\": {\"socket_address\": {\"address\": \"0.0.0.0\", \"port_value\": 15006}},"
    "   \"filter_chains\": [{\"filters\": [{\"name\": \"envoy.filters.network.tcp_proxy\", \"typed_config\":"
    "    {\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\","
    "     \"stat_prefix\": \"inbound\", \"cluster\": \"backend\"}}]}]},"
    "  {\"name\": \"out\", \"stat_prefix\": \"outbound_0.0.0.0_15001\","
    "   \"address\": {\"socket_address\": {\"address\": \"::1\", \"port_value\": 15001}},"
    "   \"filter_chains\": [{\"filters\": [{\"name\": \"envoy.filters.network.tcp_proxy\", \"typed_config\":"
    "    {\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\","
    "     \"stat_prefix\": \"outbound|9080||reviews\", \"cluster\": \"outbound|9080||reviews.default.svc.cluster.local\"}}]}]}"
    "]}}";

static void test_promtool(void)
{
    if (access("/usr/bin/promtool", X_OK) != 0) {
        printf("skip test_promtool: /usr/bin/promtool not installed\n");
        return;
    }
    /* Cluster, listener and tcp families as a real config registers them. */
    json_t *root = json_loads(mesh_config, 0, NULL);
    PT_CHECK(root != NULL);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_boot_t *cfg = pt_test_boot(root, &r);
    json_decref(root);
    for (size_t i = 0; i < r.nerrors; i++)
        fprintf(stderr, "  config: %s\n", r.errors[i]);
    pt_cfg_dispose(&r);
    PT_CHECK(cfg != NULL);
    /* HTTP connection manager and server families, as their modules name them. */
    const char *h = "envoy_http_conn_manager_prefix";
    static const char *const http_counters[] = {
        "downstream_cx_total", "downstream_cx_http1_total", "downstream_rq_total",
        "downstream_rq_1xx", "downstream_rq_2xx", "downstream_rq_3xx", "downstream_rq_4xx",
        "downstream_rq_5xx", "downstream_rq_timeout", "downstream_cx_protocol_error",
        "downstream_rq_rx_reset", "downstream_cx_destroy_remote_active_rq", NULL};
    for (int i = 0; http_counters[i] != NULL; i++) {
        pt_stat_add(pt_stats_counter("http", h, "ingress_http", http_counters[i]), (uint64_t)i);
        pt_stats_counter("http", h, "admin", http_counters[i]);
    }
    pt_stat_set(pt_stats_gauge("http", h, "ingress_http", "downstream_cx_active"), 3);
    pt_stat_set(pt_stats_gauge("http", h, "ingress_http", "downstream_rq_active"), 1);
    pt_stat_set(pt_stats_gauge("server", NULL, NULL, "live"), 1);
    pt_stat_set(pt_stats_gauge("server", NULL, NULL, "uptime"), 12);
    pt_stat_set(pt_stats_gauge("server", NULL, NULL, "concurrency"), 2);
    pt_stat_set(pt_stats_gauge("server", NULL, NULL, "total_connections"), 5);
    pt_stats_counter("server", NULL, NULL, "envoy_bug_failures");
    pt_stat_inc(pt_boot_find(cfg, "backend")->stats.upstream_cx_total);

    char *text = render_prom("^(cluster|listener|tcp|http|server)\\.", 0);
    PT_CHECK(text != NULL);
    PT_CHECK(strstr(text, "# TYPE envoy_cluster_upstream_cx_total counter\n"
                          "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\"} 1\n"));
    PT_CHECK(strstr(text, "envoy_listener_downstream_cx_total{envoy_listener_address="
                          "\"0.0.0.0_15006\"} 0\n"));
    PT_CHECK(strstr(text, "envoy_tcp_downstream_cx_total{envoy_tcp_prefix="
                          "\"outbound|9080||reviews\"} 0\n"));
    PT_CHECK(strstr(text, "# TYPE envoy_cluster_membership_total gauge\n"));
    /* The cluster's histograms are in it too, with values. */
    pt_hist_record(pt_boot_find(cfg, "backend")->stats.upstream_rq_time, 12);
    pt_stats_merge_histograms();
    int verdict = pt_test_promtool(text);
    free(text);
    text = render_prom("^cluster\\.", 0);
    PT_CHECK(text != NULL);
    PT_CHECK(strstr(text, "# TYPE envoy_cluster_upstream_rq_time histogram\n"
                          "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\","
                          "le=\"0.5\"} 0\n"));
    PT_CHECK(strstr(text, "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 1\n"));
    int verdict2 = pt_test_promtool(text);
    free(text);
    pt_boot_free(cfg);
    PT_CHECK(verdict >= 0 && verdict2 >= 0);
}

/* Text readouts (version_text): set and read as strings; rendered quoted and escaped in
 * text, as a string in JSON, left out of Prometheus; "used" once set. */
static void test_text_readouts(void)
{
    pt_stat_t t = pt_stats_text("utr", "envoy_sds_secret", "s1", "version_text");
    pt_stat_t unset = pt_stats_text("utr", NULL, NULL, "zz_unset_text");
    pt_stat_t c = pt_stats_counter("utr", "envoy_sds_secret", "s1", "update_success");
    PT_CHECK(t != 0 && unset != 0 && c != 0);
    PT_CHECK_INT(pt_stat_family(pt_stats_info(t))->kind, PT_STAT_TEXT);
    PT_CHECK_INT(pt_stats_text("utr", "envoy_sds_secret", "s1", "version_text"), t);
    int set = -1;
    char *v = pt_stats_text_value(t, &set);
    PT_CHECK(v != NULL && strcmp(v, "") == 0 && set == 0);
    free(v);
    pt_stat_set_text(t, "v1");
    pt_stat_set_text(t, "2026-12-07 \"quoted\" \\ back\nline");
    v = pt_stats_text_value(t, &set);
    PT_CHECK(v != NULL && strcmp(v, "2026-12-07 \"quoted\" \\ back\nline") == 0 && set == 1);
    free(v);
    /* Not a text readout: no value, and setting it changes nothing. */
    PT_CHECK(pt_stats_text_value(c, NULL) == NULL);
    pt_stat_set_text(c, "x");
    PT_CHECK_INT(pt_stats_value(c), 0);
    pt_stat_inc(c);
    CHECK_STR_FREE(render_text("^utr\\.", 0),
                   "utr.s1.update_success: 1\n"
                   "utr.s1.version_text: \"2026-12-07 \\\"quoted\\\" \\\\ back\\nline\"\n"
                   "utr.zz_unset_text: \"\"\n");
    CHECK_STR_FREE(render_text("^utr\\.", 1),
                   "utr.s1.update_success: 1\n"
                   "utr.s1.version_text: \"2026-12-07 \\\"quoted\\\" \\\\ back\\nline\"\n");
    pt_stat_set_text(t, "v3");
    CHECK_STR_FREE(render_json("version_text", 0), "{\n"
                                                   " \"stats\": [\n"
                                                   "  {\n"
                                                   "   \"name\": \"utr.s1.version_text\",\n"
                                                   "   \"value\": \"v3\"\n"
                                                   "  }\n"
                                                   " ]\n"
                                                   "}\n");
    CHECK_STR_FREE(render_prom("^utr\\.", 0),
                   /* No default extractor takes utr's second token: Envoy's names. */
                   "# HELP envoy_utr_s1_update_success Counter utr.s1.update_success\n"
                   "# TYPE envoy_utr_s1_update_success counter\n"
                   "envoy_utr_s1_update_success 1\n");
}

/* A cluster's stats go with it: released by tag value within one scope, their ids and
 * memory reused by later stats, which start from zero; other stats are untouched and the
 * sorted list no longer has them. */
static void test_release_tagged(void)
{
    uint32_t live0 = pt_stats_live();
    pt_stat_t a = pt_stats_counter("urel", "envoy_cluster_name", "gone", "upstream_rq_total");
    pt_stat_t b = pt_stats_gauge("urel", "envoy_cluster_name", "gone", "upstream_cx_active");
    pt_stat_t t = pt_stats_text("urel", "envoy_cluster_name", "gone", "version_text");
    pt_stat_t keep = pt_stats_counter("urel", "envoy_cluster_name", "stays", "upstream_rq_total");
    pt_stat_t other = pt_stats_counter("uother", "envoy_http_conn_manager_prefix", "gone", "rq");
    pt_stat_t plain = pt_stats_counter("urel", NULL, NULL, "gone");
    PT_CHECK(a && b && t && keep && other && plain);
    PT_CHECK_INT(pt_stats_live(), live0 + 6);
    pt_stat_add(a, 7);
    pt_stat_add(keep, 3);
    pt_stat_set_text(t, "v1");

    PT_CHECK_INT(pt_stats_release_tagged("urel", "gone"), 3);
    PT_CHECK_INT(pt_stats_live(), live0 + 3);
    PT_CHECK(pt_stats_info(a) == NULL && pt_stats_info(b) == NULL && pt_stats_info(t) == NULL);
    PT_CHECK_INT(pt_stats_find("urel.gone.upstream_rq_total"), 0);
    PT_CHECK_INT(pt_stats_find("urel.stays.upstream_rq_total"), keep);
    PT_CHECK_INT(pt_stats_find("uother.gone.rq"), other);
    PT_CHECK_INT(pt_stats_find("urel.gone"), plain);
    PT_CHECK_INT(pt_stats_value(keep), 3);
    PT_CHECK_STR(full_name(other), "uother.gone.rq");
    uint32_t n;
    pt_stat_t *ids = pt_stats_sorted(&n);
    PT_CHECK_INT(n, pt_stats_live());
    for (uint32_t i = 0; i < n; i++)
        PT_CHECK(ids[i] != a && ids[i] != b && ids[i] != t);
    free(ids);
    PT_CHECK_INT(pt_stats_release_tagged("urel", "gone"), 0);
    PT_CHECK_INT(pt_stats_release_tagged("urel", "never-seen"), 0);

    /* Made again: an old id, counting from zero. */
    uint32_t top = pt_stats_count();
    pt_stat_t a2 = pt_stats_counter("urel", "envoy_cluster_name", "gone", "upstream_rq_total");
    PT_CHECK(a2 == a || a2 == b || a2 == t);
    PT_CHECK_INT(pt_stats_count(), top);
    PT_CHECK_INT(pt_stats_value(a2), 0);
    PT_CHECK_STR(full_name(a2), "urel.gone.upstream_rq_total");
    PT_CHECK_INT(pt_stats_find("urel.gone.upstream_rq_total"), a2);

    /* Many made and released: the registry does not grow. */
    char tag[32];
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 500; k++) {
            snprintf(tag, sizeof(tag), "c%d", k);
            pt_stats_counter("urel", "envoy_cluster_name", tag, "upstream_rq_total");
            pt_stats_counter("urel", "envoy_cluster_name", tag, "upstream_rq_503");
        }
        for (int k = 0; k < 500; k++) {
            snprintf(tag, sizeof(tag), "c%d", k);
            PT_CHECK_INT(pt_stats_release_tagged("urel", tag), 2);
        }
        if (round == 0)
            top = pt_stats_count();
    }
    PT_CHECK_INT(pt_stats_count(), top);
    /* Pages of released stats go back to the system; what lives keeps its name and count,
     * and the ids are as good as new. */
    pt_stats_trim();
    PT_CHECK_INT(pt_stats_value(keep), 3);
    PT_CHECK_STR(full_name(keep), "urel.stays.upstream_rq_total");
    PT_CHECK_INT(pt_stats_find("urel.stays.upstream_rq_total"), keep);
    pt_stat_t fresh = pt_stats_counter("urel", "envoy_cluster_name", "c7", "upstream_rq_total");
    PT_CHECK(fresh != 0);
    PT_CHECK_INT(pt_stats_value(fresh), 0);
    pt_stat_add(fresh, 5);
    PT_CHECK_INT(pt_stats_value(fresh), 5);
    PT_CHECK_STR(full_name(fresh), "urel.c7.upstream_rq_total");
    PT_CHECK_INT(pt_stats_release_tagged("urel", "c7"), 1);
    PT_CHECK_INT(pt_stats_release_tagged("urel", "gone"), 1);
    PT_CHECK_INT(pt_stats_live(), live0 + 3);
}

static int64_t value_of(const void *arg)
{
    return *(const int64_t *)arg;
}

/* Computed gauges (breaker counts) in their table beside the infos: thousands set, cleared in
 * an order that moves entries around, released with their tag; each reads its own value
 * until it goes, then its slots again. */
static void test_computed_gauges(void)
{
    enum { N = 3000 };
    static int64_t values[N];
    static pt_stat_t ids[N];
    char tag[32];
    for (int k = 0; k < N; k++) {
        snprintf(tag, sizeof(tag), "g%d", k);
        ids[k] = pt_stats_gauge("ucomp", "envoy_cluster_name", tag, "rq_open");
        values[k] = 1000 + k;
        pt_stats_gauge_fn(ids[k], value_of, &values[k]);
    }
    int64_t other = -5;
    for (int k = 0; k < N; k += 3)
        pt_stats_gauge_fn_clear(ids[k], &other); /* not the owner: nothing changes */
    for (int k = 0; k < N; k += 3)
        pt_stats_gauge_fn_clear(ids[k], &values[k]);
    int wrong = 0;
    for (int k = 0; k < N; k++)
        wrong += pt_stats_gauge_value(ids[k]) != (k % 3 == 0 ? 0 : 1000 + k);
    PT_CHECK_INT(wrong, 0);
    /* Set again over a cleared one, and over a set one (a new owner). */
    pt_stats_gauge_fn(ids[0], value_of, &other);
    pt_stats_gauge_fn(ids[1], value_of, &other);
    PT_CHECK_INT(pt_stats_gauge_value(ids[0]), -5);
    PT_CHECK_INT(pt_stats_gauge_value(ids[1]), -5);
    pt_stats_gauge_fn_clear(ids[1], &values[1]); /* the old owner no longer clears it */
    PT_CHECK_INT(pt_stats_gauge_value(ids[1]), -5);
    /* Released with their tag: a stat made again on the id is a plain gauge. */
    for (int k = 0; k < N; k++) {
        snprintf(tag, sizeof(tag), "g%d", k);
        PT_CHECK_INT(pt_stats_release_tagged("ucomp", tag), 1);
    }
    /* The table shrinks (on the main thread's trim); what is left reads the same. */
    pt_stat_t kept = pt_stats_gauge("ucomp", "envoy_cluster_name", "kept", "rq_open");
    pt_stats_gauge_fn(kept, value_of, &values[7]);
    pt_stats_trim();
    PT_CHECK_INT(pt_stats_gauge_value(kept), 1007);
    pt_stat_t again = pt_stats_gauge("ucomp", "envoy_cluster_name", "g1", "rq_open");
    PT_CHECK_INT(pt_stats_gauge_value(again), 0);
    PT_CHECK_INT(pt_stats_release_tagged("ucomp", "g1"), 1);
    PT_CHECK_INT(pt_stats_release_tagged("ucomp", "kept"), 1);
    PT_CHECK_INT(pt_stats_gauge_value(kept), 0);
}

/* A counter computed from its owner's count (what a cluster counts on the main thread
 * only): it reads the owner's count, and once cleared its slots again, which the owner may
 * have added its count to. */
static void test_computed_counter(void)
{
    pt_stat_t id = pt_stats_counter("ucompc", "envoy_cluster_name", "a", "update_attempt");
    PT_CHECK(id != 0);
    pt_stat_add(id, 4); /* counted in slots before an owner took it */
    static int64_t owned;
    owned = (int64_t)pt_stats_value(id);
    pt_stat_add(id, (uint64_t)0 - (uint64_t)owned);
    pt_stats_gauge_fn(id, value_of, &owned);
    PT_CHECK_INT(pt_stats_value(id), 4);
    owned += 3;
    PT_CHECK_INT(pt_stats_value(id), 7);
    pt_stats_gauge_fn_clear(id, &owned);
    PT_CHECK_INT(pt_stats_value(id), 0);
    pt_stat_add(id, (uint64_t)owned);
    PT_CHECK_INT(pt_stats_value(id), 7);
    PT_CHECK_INT(pt_stat_family(pt_stats_info(id))->kind, PT_STAT_COUNTER);
    PT_CHECK_INT(pt_stats_release_tagged("ucompc", "a"), 1);
}

int main(void)
{
    if (pt_stats_thread_init() != 0) {
        fprintf(stderr, "pt_stats_thread_init failed\n");
        return 1;
    }
    PT_RUN(test_find_or_create);
    PT_RUN(test_names_and_tags);
    PT_RUN(test_threads_sum_exactly);
    PT_RUN(test_gauge_set_and_negative);
    PT_RUN(test_sorted);
    PT_RUN(test_info_pointer_stable);
    PT_RUN(test_render_while_creating);
    PT_RUN(test_render_text);
    PT_RUN(test_render_json);
    PT_RUN(test_render_prometheus);
    PT_RUN(test_prometheus_escaping);
    PT_RUN(test_promtool);
    PT_RUN(test_text_readouts);
    PT_RUN(test_release_tagged);
    PT_RUN(test_computed_gauges);
    PT_RUN(test_computed_counter);
    pt_buf_pool_trim();
    PT_TEST_EXIT();
}
