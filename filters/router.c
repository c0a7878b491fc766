/* envoy.filters.http.router: the terminal HTTP filter. It carries out the route the
 * connection manager matched: a direct response, a redirect, or forwarding to a host of a
 * cluster over a pooled upstream connection, streaming the request body up and the
 * response back with backpressure both ways, under the route timeout.
 *
 * Errors become Envoy's local replies and response flags: no route 404 (NR), unknown
 * cluster 503 (NC), no host 503 (UH), connect failure 503 (UF), upstream reset before the
 * response 503 (UR/UC), route timeout 504 (UT). After the response started, an upstream
 * failure resets the downstream stream instead. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/outlier.h"
#include "filters/http_filter.h"
#include "proxy/cluster.h"
#include "proxy/conn_manager.h"
#include "proxy/log.h"
#include "proxy/pool.h"
#include "proxy/random.h"
#include "proxy/route.h"
#include "proxy/time.h"

typedef struct router_config {
    int suppress_envoy_headers;
    int dynamic_stats;
} router_config_t;

enum {
    R_STARTED = 1u << 0,          /* decode_headers ran */
    R_HEADERS_SENT = 1u << 1,     /* request headers went upstream */
    R_REQ_END_SEEN = 1u << 2,     /* the downstream request ended */
    R_REQ_END_SENT = 1u << 3,     /* ... and that end went upstream */
    R_RESP_HEADERS = 1u << 4,     /* upstream response headers arrived */
    R_RESP_END = 1u << 5,
    R_DONE = 1u << 6,             /* nothing more to do (released or reset) */
    R_DS_PAUSED = 1u << 7,        /* we paused the downstream body */
    R_US_PAUSED = 1u << 8,        /* we paused the upstream response */
    R_UPGRADE = 1u << 9,          /* tunnel after a 101 */
    R_HAS_TRAILERS = 1u << 10,
};

typedef struct router_state {
    pt_http_stream_t *s;
    uint32_t flags;
    pt_cluster_t *cluster;
    pt_host_t *host;
    pt_pool_t *pool;
    pt_pool_request_t pool_req;
    pt_pool_conn_t *pc;
    pt_http_codec_stream_t *ucs;
    const void *weighted_entry;
    pt_buf_t body;                   /* request body waiting for the upstream connection */
    pt_http_headers_t *trailers;
    ev_timer timeout;
    uint64_t upstream_start_us;
} router_state_t;

static const char *const router_unsupported[] = {
    "start_child_span", "upstream_log", "upstream_log_options", "strict_check_headers",
    "respect_expected_rq_timeout", "suppress_grpc_request_failure_code_stats",
    "upstream_http_filters", NULL};

static void *router_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    router_config_t *rc = pt_arena_alloc(&cfg->arena, sizeof(*rc));
    pt_cfg_unsupported(r, router_unsupported);
    pt_cfg_bool(r, "suppress_envoy_headers", &rc->suppress_envoy_headers, 0);
    pt_cfg_bool(r, "dynamic_stats", &rc->dynamic_stats, 1);
    return rc;
}

static const pt_hcm_stats_t *hstats(const pt_http_stream_t *s)
{
    return &s->config->stats;
}

/* ---- upstream lifecycle ---------------------------------------------------------- */

/* Ends upstream work: the connection goes back to the pool when both messages completed on
 * it, otherwise it is dropped (an HTTP/1 connection mid-message cannot be reused). */
static void upstream_finish(router_state_t *st)
{
    ev_timer_stop(st->s->worker->loop, &st->timeout);
    if (st->pool_req.pool != NULL)
        pt_pool_cancel(&st->pool_req);
    if (st->pc != NULL) {
        pt_pool_conn_t *pc = st->pc;
        st->pc = NULL;
        if (!(st->flags & R_RESP_END) || !(st->flags & R_REQ_END_SENT) ||
            (st->flags & R_UPGRADE)) {
            if (st->ucs != NULL)
                pc->codec->ops->reset_stream(st->ucs);
            pt_pool_discard(pc);
        } else {
            pt_pool_release(pc);
        }
        pt_stat_dec(st->cluster->stats.upstream_rq_active);
        atomic_fetch_sub_explicit(&st->host->rq_active, 1, memory_order_relaxed);
    }
    st->ucs = NULL;
    pt_buf_dispose(&st->body);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    router_state_t *st = t->data;
    pt_http_stream_t *s = st->s;
    if (st->flags & R_DONE)
        return;
    pt_stat_inc(st->cluster->stats.upstream_rq_timeout);
    if (st->host != NULL && !(st->flags & R_RESP_HEADERS))
        pt_outlier_report(st->cluster, st->host, PT_OUTLIER_TIMEOUT, 0);
    if (st->host != NULL)
        atomic_fetch_add_explicit(&st->host->rq_timeout, 1, memory_order_relaxed);
    st->flags |= R_DONE;
    upstream_finish(st);
    if (!(st->flags & R_RESP_HEADERS))
        pt_http_stream_local_reply(s, 504, "upstream request timeout", NULL,
                                   PT_RF(UPSTREAM_REQUEST_TIMEOUT), "upstream_response_timeout");
    else
        pt_http_stream_reset(s, PT_RF(UPSTREAM_REQUEST_TIMEOUT), "upstream_response_timeout");
}

static void start_timeout(router_state_t *st)
{
    const pt_route_t *rt = st->s->route;
    if (rt == NULL || rt->timeout_ms == 0 || ev_is_active(&st->timeout) || (st->flags & R_DONE))
        return;
    ev_timer_set(&st->timeout, (double)rt->timeout_ms / 1000.0, 0.);
    ev_timer_start(st->s->worker->loop, &st->timeout);
}

/* ---- upstream response ----------------------------------------------------------- */

static void up_on_headers(void *req, pt_http_headers_t *h, int end_stream)
{
    router_state_t *st = req;
    pt_http_stream_t *s = st->s;
    if (st->flags & R_DONE)
        return;
    st->flags |= R_RESP_HEADERS;
    s->info.first_upstream_rx_mono_us = pt_now_us();
    const char *sv = pt_http_headers_get(h, ":status");
    int status = sv ? atoi(sv) : 0;
    pt_cluster_count_response(st->cluster, status);
    pt_outlier_report(st->cluster, st->host, PT_OUTLIER_HTTP_RESPONSE, status);
    atomic_fetch_add_explicit(status >= 500 ? &st->host->rq_error : &st->host->rq_success, 1,
                              memory_order_relaxed);
    const router_config_t *rc = NULL;
    for (unsigned i = 0; i < s->config->nfilters; i++)
        if (s->config->filters[i].ops->terminal)
            rc = s->config->filters[i].config;
    if (rc == NULL || !rc->suppress_envoy_headers) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%llu",
                 (unsigned long long)((pt_now_us() - st->upstream_start_us) / 1000));
        pt_http_headers_set(h, "x-envoy-upstream-service-time", ms);
    }
    pt_route_mutate_response_headers(s->config->route_config, s->vhost, s->route,
                                     st->weighted_entry, h, &s->info);
    if (status == 101 && (s->flags & PT_HS_UPGRADE)) {
        st->flags |= R_UPGRADE;
        ev_timer_stop(s->worker->loop, &st->timeout);
    }
    if (end_stream) {
        st->flags |= R_RESP_END;
        pt_stat_inc(st->cluster->stats.upstream_rq_completed);
    }
    pt_http_stream_encode_headers(s, h, end_stream);
    if (end_stream && !(st->flags & R_DONE)) {
        st->flags |= R_DONE;
        upstream_finish(st);
    }
}

static void up_on_data(void *req, pt_buf_t *data, int end_stream)
{
    router_state_t *st = req;
    pt_http_stream_t *s = st->s;
    if (st->flags & R_DONE) {
        pt_buf_dispose(data);
        return;
    }
    if (end_stream) {
        st->flags |= R_RESP_END;
        if (!(st->flags & R_UPGRADE))
            pt_stat_inc(st->cluster->stats.upstream_rq_completed);
    }
    pt_http_stream_encode_data(s, data, end_stream);
    if (st->flags & R_DONE)
        return;
    if (end_stream) {
        if (st->flags & R_UPGRADE) {
            /* The upstream half of a tunnel ended; the stream ends with it. */
            return;
        }
        st->flags |= R_DONE;
        upstream_finish(st);
        return;
    }
    /* The client reads slower than the upstream sends: stop reading the upstream. */
    if (pt_http_stream_downstream_above_high(s) && !(st->flags & R_US_PAUSED) && st->ucs) {
        st->flags |= R_US_PAUSED;
        st->pc->codec->ops->read_disable(st->ucs, 1);
    }
}

static void up_on_trailers(void *req, pt_http_headers_t *t)
{
    router_state_t *st = req;
    if (st->flags & R_DONE)
        return;
    st->flags |= R_RESP_END;
    pt_stat_inc(st->cluster->stats.upstream_rq_completed);
    pt_http_stream_encode_trailers(st->s, t);
    if (!(st->flags & R_DONE)) {
        st->flags |= R_DONE;
        upstream_finish(st);
    }
}

static uint32_t reset_flag(pt_http_reset_reason_t reason)
{
    switch (reason) {
    case PT_HTTP_RESET_CONNECTION_CLOSE:
        return PT_RF(UPSTREAM_CONNECTION_TERMINATION);
    case PT_HTTP_RESET_PROTOCOL_ERROR:
        return PT_RF(UPSTREAM_PROTOCOL_ERROR);
    case PT_HTTP_RESET_CONNECT_FAILURE:
        return PT_RF(UPSTREAM_CONNECTION_FAILURE);
    case PT_HTTP_RESET_OVERFLOW:
        return PT_RF(UPSTREAM_OVERFLOW);
    default:
        return PT_RF(UPSTREAM_REMOTE_RESET);
    }
}

static void up_on_reset(void *req, pt_http_reset_reason_t reason)
{
    router_state_t *st = req;
    pt_http_stream_t *s = st->s;
    if (st->flags & R_DONE)
        return;
    st->flags |= R_DONE;
    st->ucs = NULL; /* the codec forgot the stream */
    pt_stat_inc(st->cluster->stats.upstream_rq_rx_reset);
    if (!(st->flags & R_RESP_HEADERS))
        pt_outlier_report(st->cluster, st->host, PT_OUTLIER_RESET, 0);
    if (reason == PT_HTTP_RESET_PROTOCOL_ERROR)
        pt_stat_inc(st->cluster->stats.upstream_cx_protocol_error);
    atomic_fetch_add_explicit(&st->host->rq_error, 1, memory_order_relaxed);
    if ((st->flags & R_UPGRADE) && (st->flags & R_RESP_HEADERS)) {
        /* A tunnel whose upstream went away: end the downstream side cleanly. */
        upstream_finish(st);
        pt_buf_t empty = {0};
        pt_http_stream_encode_data(s, &empty, 1);
        return;
    }
    upstream_finish(st);
    uint32_t flag = reset_flag(reason);
    if (!(st->flags & R_RESP_HEADERS)) {
        char body[160];
        snprintf(body, sizeof(body),
                 "upstream connect error or disconnect/reset before headers. reset reason: %s",
                 pt_http_reset_reason_str(reason));
        pt_http_stream_local_reply(s, reason == PT_HTTP_RESET_PROTOCOL_ERROR ? 502 : 503, body,
                                   NULL, flag, "upstream_reset_before_response_started");
    } else {
        pt_http_stream_reset(s, flag, "upstream_reset_after_response_started");
    }
}

static void up_on_write_watermark(void *req, int above)
{
    router_state_t *st = req;
    if (st->flags & R_DONE)
        return;
    /* The upstream takes the body slower than the client sends it. */
    if (above && !(st->flags & R_DS_PAUSED)) {
        st->flags |= R_DS_PAUSED;
        pt_http_stream_read_disable(st->s, 1);
    } else if (!above && (st->flags & R_DS_PAUSED)) {
        st->flags &= ~R_DS_PAUSED;
        pt_http_stream_read_disable(st->s, 0);
    }
}

static const pt_http_client_callbacks_t upstream_callbacks = {
    .on_headers = up_on_headers,
    .on_data = up_on_data,
    .on_trailers = up_on_trailers,
    .on_reset = up_on_reset,
    .on_write_watermark = up_on_write_watermark,
};

/* ---- sending upstream ------------------------------------------------------------ */

static void send_body(router_state_t *st, pt_buf_t *data, int end_stream)
{
    if (st->ucs == NULL)
        return;
    const pt_http_client_codec_ops_t *ops = st->pc->codec->ops;
    if (end_stream && !(st->flags & R_UPGRADE) && !(st->s->flags & PT_HS_UPGRADE))
        st->flags |= R_REQ_END_SENT;
    ops->encode_data(st->ucs, data, end_stream);
}

static void on_connection_ready(router_state_t *st, pt_pool_conn_t *pc)
{
    pt_http_stream_t *s = st->s;
    st->pc = pc;
    st->ucs = pc->codec->ops->new_stream(pc->codec, &upstream_callbacks, st, &s->arena);
    pt_stat_inc(st->cluster->stats.upstream_rq_total);
    pt_stat_inc(st->cluster->stats.upstream_rq_active);
    atomic_fetch_add_explicit(&st->host->rq_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->host->rq_active, 1, memory_order_relaxed);
    if (st->ucs == NULL) {
        st->flags |= R_DONE;
        upstream_finish(st);
        pt_http_stream_local_reply(s, 503, "upstream connection unavailable", NULL,
                                   PT_RF(UPSTREAM_CONNECTION_FAILURE), "upstream_unavailable");
        return;
    }
    st->upstream_start_us = pt_now_us();
    s->info.first_upstream_tx_mono_us = st->upstream_start_us;
    s->info.upstream_attempts = 1;
    s->info.upstream_local = pc->local;
    int body_pending = pt_buf_len(&st->body) > 0 || (st->flags & R_HAS_TRAILERS);
    int end = (st->flags & R_REQ_END_SEEN) && !body_pending;
    st->flags |= R_HEADERS_SENT;
    if (end && !(s->flags & PT_HS_UPGRADE))
        st->flags |= R_REQ_END_SENT;
    pc->codec->ops->encode_headers(st->ucs, s->request_headers, end);
    if (st->flags & R_DONE)
        return;
    if (pt_buf_len(&st->body) > 0 || ((st->flags & R_REQ_END_SEEN) && !end &&
                                      !(st->flags & R_HAS_TRAILERS))) {
        pt_buf_t data = {0};
        pt_buf_move(&data, &st->body);
        send_body(st, &data, (st->flags & R_REQ_END_SEEN) && !(st->flags & R_HAS_TRAILERS));
        pt_buf_dispose(&data);
    }
    if ((st->flags & R_HAS_TRAILERS) && st->ucs != NULL) {
        st->flags |= R_REQ_END_SENT;
        pc->codec->ops->encode_trailers(st->ucs, st->trailers);
    }
    if (st->flags & R_DS_PAUSED) {
        st->flags &= ~R_DS_PAUSED;
        pt_http_stream_read_disable(s, 0);
    }
}

static void pool_ready(pt_pool_request_t *pr, pt_pool_conn_t *pc)
{
    router_state_t *st = (router_state_t *)((char *)pr - offsetof(router_state_t, pool_req));
    on_connection_ready(st, pc);
}

static void pool_failure(pt_pool_request_t *pr, int status)
{
    router_state_t *st = (router_state_t *)((char *)pr - offsetof(router_state_t, pool_req));
    pt_http_stream_t *s = st->s;
    if (st->flags & R_DONE)
        return;
    st->flags |= R_DONE;
    upstream_finish(st);
    char body[160];
    snprintf(body, sizeof(body),
             "upstream connect error or disconnect/reset before headers. reset reason: %s",
             status == -ETIMEDOUT ? "connection timeout" : "connection failure");
    pt_http_stream_local_reply(s, 503, body, NULL, PT_RF(UPSTREAM_CONNECTION_FAILURE),
                               "upstream_reset_before_response_started{connection_failure}");
}

/* ---- the filter ------------------------------------------------------------------ */

static void direct_response(pt_http_stream_t *s, const pt_route_t *rt)
{
    pt_stat_inc(hstats(s)->rq_direct_response);
    pt_http_headers_t extra;
    pt_http_headers_init(&extra, &s->arena);
    pt_route_mutate_response_headers(s->config->route_config, s->vhost, rt, NULL, &extra,
                                     &s->info);
    char *body = NULL;
    if (rt->direct_body != NULL) {
        body = pt_arena_strndup(&s->arena, rt->direct_body, rt->direct_body_len);
    }
    pt_http_stream_local_reply(s, rt->direct_status, body ? body : "", &extra, 0,
                               "direct_response");
}

static int router_decode_headers(pt_http_stream_t *s, void *cfg, void *state,
                                 pt_http_headers_t *h, int end_stream)
{
    (void)cfg;
    router_state_t *st = state;
    st->s = s;
    st->flags |= R_STARTED;
    ev_init(&st->timeout, on_timeout);
    st->timeout.data = st;
    st->pool_req.on_ready = pool_ready;
    st->pool_req.on_failure = pool_failure;
    if (end_stream)
        st->flags |= R_REQ_END_SEEN;

    const pt_route_t *rt = s->route;
    if (rt == NULL) {
        pt_stat_inc(hstats(s)->no_route);
        st->flags |= R_DONE;
        pt_http_stream_local_reply(s, 404, "", NULL, PT_RF(NO_ROUTE_FOUND), "route_not_found");
        return PT_STOP;
    }
    if (s->vhost != NULL && s->vhost->require_tls != PT_REQUIRE_TLS_NONE) {
        const char *location;
        int code = pt_vhost_tls_redirect(s->vhost, h, strcmp(s->scheme, "https") == 0, 0,
                                         &s->arena, &location);
        if (code > 0) {
            pt_http_headers_t extra;
            pt_http_headers_init(&extra, &s->arena);
            pt_http_headers_add_str(&extra, "location", location);
            st->flags |= R_DONE;
            pt_http_stream_local_reply(s, code, "", &extra, 0, "tls_required");
            return PT_STOP;
        }
    }
    switch (rt->action) {
    case PT_ROUTE_ACTION_DIRECT_RESPONSE:
        st->flags |= R_DONE;
        direct_response(s, rt);
        return PT_STOP;
    case PT_ROUTE_ACTION_REDIRECT: {
        const char *location;
        int code = pt_route_redirect(rt, h, s->scheme, &s->arena, &location);
        st->flags |= R_DONE;
        pt_stat_inc(hstats(s)->rq_redirect);
        if (code < 0) {
            pt_http_stream_local_reply(s, 500, "", NULL, 0, "redirect_failed");
            return PT_STOP;
        }
        pt_http_headers_t extra;
        pt_http_headers_init(&extra, &s->arena);
        pt_http_headers_add_str(&extra, "location", location);
        pt_route_mutate_response_headers(s->config->route_config, s->vhost, rt, NULL, &extra,
                                         &s->info);
        pt_http_stream_local_reply(s, code, "", &extra, 0, "redirect");
        return PT_STOP;
    }
    case PT_ROUTE_ACTION_ROUTE:
        break;
    }

    const char *name =
        pt_route_cluster_for_request(rt, h, pt_random_u64(), &st->weighted_entry);
    pt_cluster_t *cluster = name ? pt_config_find_cluster(s->snapshot, name) : NULL;
    pt_stat_inc(hstats(s)->rq_total);
    if (cluster == NULL) {
        pt_stat_inc(hstats(s)->no_cluster);
        st->flags |= R_DONE;
        pt_http_stream_local_reply(s, 503, "", NULL, PT_RF(NO_CLUSTER_FOUND), "cluster_not_found");
        return PT_STOP;
    }
    st->cluster = cluster;
    s->info.upstream_cluster = cluster->name;

    /* Request rewrites, in Envoy's order: header mutations, then path and host. */
    pt_route_mutate_request_headers(s->config->route_config, s->vhost, rt, st->weighted_entry, h,
                                    &s->info);
    const char *path = pt_http_headers_get(h, ":path");
    const char *newpath = path ? pt_route_rewrite_path(rt, path, &s->arena) : NULL;
    if (newpath != NULL) {
        pt_http_headers_set(h, "x-envoy-original-path", path);
        pt_http_headers_set(h, ":path", newpath);
    }
    const char *host_rewrite = rt->host_rewrite_literal;
    const pt_weighted_cluster_t *we = st->weighted_entry;
    if (we != NULL && we->host_rewrite_literal != NULL)
        host_rewrite = we->host_rewrite_literal;
    if (host_rewrite != NULL)
        pt_http_headers_set(h, ":authority", host_rewrite);

    pt_host_t *host = pt_cluster_pick_host(cluster, s->worker, NULL, 0);
    if (host == NULL) {
        pt_stat_inc(cluster->stats.upstream_cx_none_healthy);
        st->flags |= R_DONE;
        pt_http_stream_local_reply(s, 503, "no healthy upstream", NULL,
                                   PT_RF(NO_HEALTHY_UPSTREAM), "no_healthy_upstream");
        return PT_STOP;
    }
    st->host = host;
    s->info.upstream_host = host->address_str;
    if (rt->auto_host_rewrite && host->hostname != NULL && host->hostname[0])
        pt_http_headers_set(h, ":authority", host->hostname);
    if (end_stream || (s->flags & PT_HS_UPGRADE))
        start_timeout(st);

    st->pool = pt_pool_get(s->worker, cluster, host);
    if (st->pool == NULL) {
        st->flags |= R_DONE;
        pt_http_stream_local_reply(s, 503, "", NULL, PT_RF(UPSTREAM_CONNECTION_FAILURE),
                                   "upstream_unavailable");
        return PT_STOP;
    }
    int err = 0;
    pt_pool_conn_t *pc = pt_pool_acquire(st->pool, &st->pool_req, &err);
    if (pc != NULL) {
        on_connection_ready(st, pc);
    } else if (err < 0) {
        st->flags |= R_DONE;
        pt_http_stream_local_reply(s, 503, "", NULL, PT_RF(UPSTREAM_CONNECTION_FAILURE),
                                   "upstream_unavailable");
    }
    return PT_STOP;
}

static void router_decode_data(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                               int end_stream)
{
    (void)cfg;
    router_state_t *st = state;
    if (st->flags & R_DONE) {
        pt_buf_dispose(data);
        return;
    }
    if (end_stream) {
        st->flags |= R_REQ_END_SEEN;
        start_timeout(st);
    }
    if (st->ucs != NULL) {
        send_body(st, data, end_stream);
        return;
    }
    /* Waiting for a connection: hold the body, and stop reading past the buffer limit. */
    pt_buf_move(&st->body, data);
    if (pt_buf_len(&st->body) > s->config->buffer_limit && !(st->flags & R_DS_PAUSED)) {
        st->flags |= R_DS_PAUSED;
        pt_http_stream_read_disable(s, 1);
    }
}

static void router_decode_trailers(pt_http_stream_t *s, void *cfg, void *state,
                                   pt_http_headers_t *t)
{
    (void)cfg;
    (void)s;
    router_state_t *st = state;
    if (st->flags & R_DONE)
        return;
    st->flags |= R_REQ_END_SEEN | R_HAS_TRAILERS;
    start_timeout(st);
    if (st->ucs != NULL) {
        st->flags |= R_REQ_END_SENT;
        st->pc->codec->ops->encode_trailers(st->ucs, t);
        return;
    }
    st->trailers = t;
}

static void router_on_downstream_watermark(pt_http_stream_t *s, void *cfg, void *state,
                                           int above)
{
    (void)s;
    (void)cfg;
    router_state_t *st = state;
    if ((st->flags & R_DONE) || st->ucs == NULL)
        return;
    if (above && !(st->flags & R_US_PAUSED)) {
        st->flags |= R_US_PAUSED;
        st->pc->codec->ops->read_disable(st->ucs, 1);
    } else if (!above && (st->flags & R_US_PAUSED)) {
        st->flags &= ~R_US_PAUSED;
        st->pc->codec->ops->read_disable(st->ucs, 0);
    }
}

static void router_on_reset(pt_http_stream_t *s, void *cfg, void *state)
{
    (void)s;
    (void)cfg;
    router_state_t *st = state;
    if (!(st->flags & R_STARTED) || (st->flags & R_DONE))
        return;
    st->flags |= R_DONE;
    if (st->pc != NULL)
        pt_stat_inc(st->cluster->stats.upstream_rq_tx_reset);
    upstream_finish(st);
}

static void router_on_destroy(pt_http_stream_t *s, void *cfg, void *state)
{
    (void)s;
    (void)cfg;
    router_state_t *st = state;
    if (!(st->flags & R_STARTED))
        return;
    st->flags |= R_DONE;
    upstream_finish(st);
}

const pt_http_filter_ops_t pt_router_filter = {
    .name = "envoy.filters.http.router",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    .terminal = 1,
    .state_size = sizeof(router_state_t),
    .parse = router_parse,
    .decode_headers = router_decode_headers,
    .decode_data = router_decode_data,
    .decode_trailers = router_decode_trailers,
    .on_downstream_watermark = router_on_downstream_watermark,
    .on_reset = router_on_reset,
    .on_destroy = router_on_destroy,
};
