/* envoy.filters.http.health_check: petrel answers a load balancer's health checks itself.
 *
 * A request is a health check when every matcher in `headers` matches (typically
 * `:path` exact `/healthz`). Without pass_through_mode it is answered here: 200, or 503
 * when the server fails health checks (POST /healthcheck/fail, or draining: see
 * pt_server_health_check_failed) or when a cluster in cluster_min_healthy_percentages has
 * fewer healthy hosts than its percentage (or does not exist). With pass_through_mode the request goes
 * upstream unless the server fails health checks, in which case it is answered 503 here, as
 * in Envoy. Failed answers carry `x-envoy-immediate-health-check-fail: true`, which an Envoy
 * or petrel in front (with active health checks on that cluster) reads as "take this host out
 * now" (pt_health_check_passive_failure). cache_time is not supported. Response flags: none;
 * details "health_check_ok" / "health_check_failed". */
#include <stdlib.h>
#include <string.h>

#include "filters/http_filter.h"
#include "proxy/cluster.h"
#include "proxy/conn_manager.h"
#include "proxy/route.h"
#include "proxy/server.h"
#include "proxy/view.h"

typedef struct min_healthy {
    const char *cluster; /* looked up for each health check, in the request's view */
    double percent;
} min_healthy_t;

typedef struct hc_filter_config {
    int pass_through;
    pt_header_matcher_t *matchers;
    unsigned nmatchers;
    min_healthy_t *min_healthy;
    unsigned nmin_healthy;
} hc_filter_config_t;

static void *hc_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    size_t before = r->nerrors;
    hc_filter_config_t *c = pt_arena_alloc(&cfg->arena, sizeof(*c));
    if (c == NULL)
        return NULL;
    static const char *const unsupported[] = {"cache_time", NULL};
    pt_cfg_unsupported(r, unsupported);
    /* A BoolValue: proto3 JSON writes it as a plain bool; {"value": b} is accepted too. */
    json_t *pt = json_object_get(r->frames[r->depth - 1].node, "pass_through_mode");
    if (pt != NULL && json_is_object(pt)) {
        pt_cfg_enter(r, "pass_through_mode");
        pt_cfg_bool(r, "value", &c->pass_through, 0);
        pt_cfg_leave(r);
    } else if (pt_cfg_bool(r, "pass_through_mode", &c->pass_through, 0) == 0) {
        pt_cfg_error(r, "pass_through_mode", "is required");
    }
    int present;
    size_t n = pt_cfg_array(r, "headers", &present);
    c->matchers = pt_arena_alloc(&cfg->arena, (n ? n : 1) * sizeof(*c->matchers));
    for (size_t i = 0; i < n && c->matchers != NULL; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        if (pt_header_matcher_parse(r, &cfg->arena, &c->matchers[c->nmatchers]) == 0)
            c->nmatchers++;
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    if (n == 0)
        pt_cfg_error(r, "headers", "is required (without it every request would be a "
                                   "health check)");
    if (pt_cfg_enter(r, "cluster_min_healthy_percentages") > 0) {
        json_t *map = r->frames[r->depth - 1].node;
        c->min_healthy = pt_arena_alloc(&cfg->arena,
                                        (json_object_size(map) + 1) * sizeof(min_healthy_t));
        const char *key;
        json_t *v;
        json_object_foreach(map, key, v) {
            (void)v;
            if (c->min_healthy == NULL || pt_cfg_enter(r, key) <= 0)
                continue;
            min_healthy_t *m = &c->min_healthy[c->nmin_healthy];
            pt_cfg_double(r, "value", &m->percent, 0.0, 0.0, 100.0);
            m->cluster = pt_arena_strdup(&cfg->arena, key);
            c->nmin_healthy++;
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    return r->nerrors == before ? c : NULL;
}

static int is_health_check(const hc_filter_config_t *c, const pt_http_headers_t *h)
{
    for (unsigned i = 0; i < c->nmatchers; i++)
        if (!pt_header_matcher_match(&c->matchers[i], h))
            return 0;
    return 1;
}

/* Whether every listed cluster has at least its percentage of hosts healthy. A cluster
 * that does not exist (not yet, or no more) fails the check, as in Envoy. */
static int clusters_healthy_enough(const hc_filter_config_t *c, const pt_view_t *view)
{
    for (unsigned i = 0; i < c->nmin_healthy; i++) {
        const pt_cluster_t *cl = pt_view_find_cluster(view, c->min_healthy[i].cluster);
        if (cl == NULL)
            return 0;
        /* Any health bit, degraded included, leaves a host out (Envoy counts its healthy
         * hosts, which degraded ones are not). */
        unsigned healthy = 0;
        for (unsigned k = 0; k < cl->nhosts; k++)
            healthy += atomic_load_explicit(&cl->hosts[k]->health, memory_order_relaxed) == 0;
        /* No hosts at all is 0% healthy: it passes only a 0% threshold. */
        double pct = cl->nhosts ? 100.0 * healthy / cl->nhosts : 0.0;
        if (pct < c->min_healthy[i].percent)
            return 0;
    }
    return 1;
}

static void answer(pt_http_stream_t *s, int ok)
{
    pt_http_headers_t extra;
    pt_http_headers_init(&extra, &s->arena);
    if (!ok)
        pt_http_headers_add_str(&extra, "x-envoy-immediate-health-check-fail", "true");
    pt_http_stream_local_reply(s, ok ? 200 : 503, "", &extra, 0,
                               ok ? "health_check_ok" : "health_check_failed");
}

static int hc_decode_headers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                             int end_stream)
{
    (void)state, (void)end_stream;
    const hc_filter_config_t *c = cfg;
    if (!is_health_check(c, h))
        return PT_CONTINUE;
    if (pt_server_health_check_failed()) {
        answer(s, 0);
        return PT_STOP;
    }
    if (c->pass_through)
        return PT_CONTINUE;
    answer(s, clusters_healthy_enough(c, s->view != NULL ? s->view->view : NULL));
    return PT_STOP;
}

const pt_http_filter_ops_t pt_health_check_http_filter = {
    .name = "envoy.filters.http.health_check",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
    .parse = hc_parse,
    .decode_headers = hc_decode_headers,
};
