/* envoy.filters.http.router: the terminal HTTP filter. It carries out the route the
 * connection manager matched: a direct response, a redirect, or forwarding to a host of a
 * cluster over a pooled upstream connection, streaming the request body up and the
 * response back with backpressure both ways.
 *
 * Forwarding runs in attempts. An attempt that fails in a way the retry policy covers
 * (connect failure, reset, per-try timeout, a retriable status) is abandoned and, after a
 * jittered exponential backoff, a new attempt goes out, to another host when the
 * previous_hosts predicate asks for it, with the request body replayed from a bounded copy.
 * The route timeout covers all attempts and backoffs. Circuit breakers bound active
 * requests, pending requests and concurrent retries per cluster.
 *
 * Errors become Envoy's local replies and response flags: no route 404 (NR), unknown
 * cluster 503 (NC), no host 503 (UH), circuit breaker 503 with x-envoy-overloaded (UO),
 * connect failure 503 (UF), upstream reset before the response 503 (UR/UC), route timeout
 * 504 (UT), retries exhausted (URX with the last error). After the response started, an
 * upstream failure resets the downstream stream instead. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/health_check.h"
#include "discovery/lb.h"
#include "discovery/lb_hash.h"
#include "discovery/outlier.h"
#include "filters/filter_common.h"
#include "filters/http_filter.h"
#include "proxy/cluster.h"
#include "proxy/conn_manager.h"
#include "proxy/grpc.h"
#include "proxy/log.h"
#include "proxy/pool.h"
#include "proxy/random.h"
#include "proxy/retry.h"
#include "proxy/tracing.h"
#include "proxy/route.h"
#include "proxy/time.h"
#include "proxy/view.h"

#define MAX_TRIED_HOSTS  8
#define MAX_EXTRA_CODES  8

typedef struct router_config {
    int suppress_envoy_headers;
    int dynamic_stats;
    int start_child_span;
} router_config_t;

enum {
    R_STARTED = 1u << 0,       /* decode_headers ran */
    R_HEADERS_SENT = 1u << 1,  /* this attempt's request headers went upstream */
    R_REQ_END_SEEN = 1u << 2,  /* the downstream request ended */
    R_REQ_END_SENT = 1u << 3,  /* ... and this attempt sent that end upstream */
    R_RESP_HEADERS = 1u << 4,  /* response headers went downstream (no more retries) */
    R_RESP_END = 1u << 5,
    R_DONE = 1u << 6,          /* nothing more to do */
    R_DS_PAUSED = 1u << 7,     /* we paused the downstream body */
    R_US_PAUSED = 1u << 8,     /* we paused the upstream response */
    R_UPGRADE = 1u << 9,       /* tunnel after a 101 */
    R_HAS_TRAILERS = 1u << 10,
    R_RQ_COUNTED = 1u << 11,   /* holds a max_requests slot */
    R_RETRY_COUNTED = 1u << 12, /* holds a max_retries / budget slot */
    R_NO_REPLAY = 1u << 13,    /* the body is not kept for replay (too big, no memory): no retries */
    R_BACKOFF = 1u << 14,      /* waiting before the next attempt */
    R_ATTEMPT_LIVE = 1u << 15, /* an attempt holds upstream resources */
    R_TUNNEL_UP = 1u << 16,    /* CONNECT: the TCP connection is up and the 200 went out */
    R_TUNNEL_EOF = 1u << 17,   /* CONNECT: the upstream sent FIN */
    R_HOLDS_HOST = 1u << 18,   /* st->host is referenced (an ORIGINAL_DST host) */
};

typedef struct router_state {
    pt_http_stream_t *s;
    const router_config_t *cfg;
    uint32_t flags;
    pt_cluster_t *cluster;
    pt_breaker_t *breaker;
    pt_host_t *host;
    pt_pool_t *pool;
    pt_pool_request_t pool_req;
    pt_pool_conn_t *pc;
    pt_http_codec_stream_t *ucs;
    pt_conn_t *tunnel;         /* a terminated CONNECT: the TCP connection to the host */
    /* auto_sni / auto_san_validation: the request's upstream name (arena), NULL otherwise. */
    const char *upstream_name;
    const void *weighted_entry;
    pt_buf_t body;             /* body waiting for this attempt's connection */
    pt_buf_t replay;           /* the whole body so far, for the next attempt */
    uint32_t replay_limit;
    pt_http_headers_t *trailers;
    ev_timer timeout;          /* route timeout: all attempts */
    ev_timer per_try;          /* per_try_timeout */
    ev_timer per_try_idle;     /* per_try_idle_timeout: no upstream activity for that long */
    uint64_t timeout_ms;       /* the route timeout, or x-envoy-upstream-rq-timeout-ms */
    uint64_t per_try_ms;       /* per_try_timeout, or x-envoy-upstream-rq-per-try-timeout-ms */
    ev_timer backoff;
    uint64_t upstream_start_us;
    uint64_t req_end_us;       /* the downstream request ended (loop clock), 0 before */
    uint64_t last_upstream_activity_ms;
    /* retries */
    const pt_retry_policy_t *retry;
    uint32_t retry_on;
    uint32_t retries_left;
    unsigned attempt;          /* 1 for the first */
    pt_host_t *tried[MAX_TRIED_HOSTS];
    unsigned ntried;
    uint32_t extra_codes[MAX_EXTRA_CODES];
    unsigned nextra_codes;
    pt_lb_context_t lb;        /* the request's hash from the route's hash_policy */
    /* retry_priority previous_priorities: the priorities attempts went to, those taken out
     * of the priority load at the last update, and that load (st->lb.priority_choice). */
    uint64_t prio_attempted[3], prio_excluded[3];
    uint16_t *prio_choice;
    const char **set_cookies;  /* cookies the hash policies made, for the response */
    unsigned nset_cookies;
    pt_trace_span_t *try_span; /* this try's CLIENT span (proxy/tracing.h), or NULL */
    int try_status;            /* its response status, 0 before one */
} router_state_t;

static const char *const router_unsupported[] = {
    "upstream_log", "upstream_log_options", "strict_check_headers",
    "respect_expected_rq_timeout", "suppress_grpc_request_failure_code_stats",
    "upstream_http_filters", NULL};

static void *router_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    router_config_t *rc = pt_arena_alloc(&cfg->arena, sizeof(*rc));
    pt_cfg_unsupported(r, router_unsupported);
    pt_cfg_bool(r, "suppress_envoy_headers", &rc->suppress_envoy_headers, 0);
    /* A CLIENT span per upstream try, as the connection manager's spawn_upstream_span. */
    pt_cfg_bool(r, "start_child_span", &rc->start_child_span, 0);
    pt_cfg_accept_empty(r, "upstream_log");
    pt_cfg_accept_empty(r, "strict_check_headers");
    pt_cfg_bool(r, "dynamic_stats", &rc->dynamic_stats, 1);
    return rc;
}

/* Decimal without printf (per-request headers). */
static void fmt_u64(char out[24], uint64_t v)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (int j = 0; j < i; j++)
        out[j] = tmp[i - 1 - j];
    out[i] = '\0';
}

static const pt_hcm_stats_t *hstats(const pt_http_stream_t *s)
{
    return &s->config->stats;
}

static const pt_cluster_stats_t *cstats(const router_state_t *st)
{
    return &st->cluster->stats;
}

static void start_attempt(router_state_t *st);

/* The whole downstream request is here. */
static void request_ended(router_state_t *st)
{
    st->flags |= R_REQ_END_SEEN;
    st->req_end_us = pt_loop_us();
}

/* The upstream response is complete: Envoy's upstream_rq_time, from the end of the
 * downstream request to now, for the attempt that answered. Not for a response that ended
 * before the request did, nor with the router's dynamic_stats off. */
static void upstream_complete(router_state_t *st)
{
    pt_stat_inc(cstats(st)->upstream_rq_completed);
    if (st->req_end_us != 0 && (st->cfg == NULL || st->cfg->dynamic_stats))
        pt_hist_record(cstats(st)->upstream_rq_time, (pt_loop_us() - st->req_end_us) / 1000);
}
static void tunnel_close(router_state_t *st, pt_close_how_t how);

/* ---- attempt lifecycle ------------------------------------------------------------- */

/* Ends the current attempt's use of upstream resources. A stream that did not complete both
 * ways is reset through the codec first; then the stream goes back to the pool, which keeps
 * the connection when its codec says it can carry more (an HTTP/2 connection keeps its
 * other streams; an HTTP/1 connection reset mid-message cannot be reused and closes). */
static void attempt_end(router_state_t *st)
{
    struct ev_loop *loop = st->s->worker->loop;
    ev_timer_stop(loop, &st->per_try);
    ev_timer_stop(loop, &st->per_try_idle);
    if (st->pool_req.pool != NULL)
        pt_pool_cancel(&st->pool_req);
    /* Breaker slots first: releasing the connection may hand it to a waiting request at
     * once, and that request needs the max_requests slot this one held. */
    if (st->flags & R_ATTEMPT_LIVE) {
        st->flags &= ~R_ATTEMPT_LIVE;
        pt_stat_dec(cstats(st)->upstream_rq_active);
        atomic_fetch_sub_explicit(&st->host->rq_active, 1, memory_order_relaxed);
    }
    if (st->flags & R_RETRY_COUNTED) {
        st->flags &= ~R_RETRY_COUNTED;
        pt_breaker_release_retry(st->breaker);
    }
    if (st->tunnel != NULL)
        tunnel_close(st, (st->flags & (R_TUNNEL_EOF | R_REQ_END_SENT)) ==
                                 (R_TUNNEL_EOF | R_REQ_END_SENT)
                             ? PT_CLOSE_FLUSH
                             : PT_CLOSE_NOW);
    if (st->flags & R_RQ_COUNTED) {
        st->flags &= ~R_RQ_COUNTED;
        pt_breaker_release_rq(st->breaker);
    }
    if (st->pc != NULL) {
        pt_pool_conn_t *pc = st->pc;
        pt_http_codec_stream_t *ucs = st->ucs;
        st->pc = NULL;
        st->ucs = NULL;
        if (!(st->flags & R_RESP_END) || !(st->flags & R_REQ_END_SENT) ||
            (st->flags & R_UPGRADE)) {
            if (ucs != NULL)
                pc->codec->ops->reset_stream(ucs);
        }
        pt_pool_release(pc);
    }
    st->ucs = NULL;
    pt_buf_dispose(&st->body);
    st->flags &= ~(R_HEADERS_SENT | R_REQ_END_SENT);
    if (st->try_span != NULL) {
        pt_tracing_upstream_end(st->s, st->try_span, st->try_status);
        st->try_span = NULL;
    }
    st->try_status = 0;
}

/* Ends all upstream work for the stream. */
static void upstream_finish(router_state_t *st)
{
    struct ev_loop *loop = st->s->worker->loop;
    ev_timer_stop(loop, &st->timeout);
    ev_timer_stop(loop, &st->backoff);
    st->flags &= ~R_BACKOFF;
    attempt_end(st);
    pt_buf_dispose(&st->replay);
}

/* Fails the request with a local reply (or a reset after the response started). */
static void fail(router_state_t *st, int status, const char *body, uint32_t flags,
                 const char *details)
{
    pt_http_stream_t *s = st->s;
    st->flags |= R_DONE;
    upstream_finish(st);
    if (st->flags & R_RESP_HEADERS) {
        pt_http_stream_reset(s, flags, details);
        return;
    }
    pt_http_headers_t extra;
    pt_http_headers_init(&extra, &s->arena);
    if (flags & PT_RF(UPSTREAM_OVERFLOW))
        pt_http_headers_add_str(&extra, "x-envoy-overloaded", "true");
    if (st->attempt > 0 && s->vhost != NULL && s->vhost->include_attempt_count_in_response) {
        char n[12];
        snprintf(n, sizeof(n), "%u", st->attempt);
        pt_http_headers_add_str(&extra, "x-envoy-attempt-count", n);
    }
    pt_http_stream_local_reply(s, status, body, extra.count ? &extra : NULL, flags, details);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    router_state_t *st = t->data;
    if (st->flags & R_DONE)
        return;
    pt_stat_inc(cstats(st)->upstream_rq_timeout);
    if (st->host != NULL && !(st->flags & R_RESP_HEADERS) && (st->flags & R_ATTEMPT_LIVE))
        pt_outlier_report(st->cluster, st->host, PT_OUTLIER_TIMEOUT, 0);
    if (st->host != NULL)
        atomic_fetch_add_explicit(&st->host->rq_timeout, 1, memory_order_relaxed);
    fail(st, 504, "upstream request timeout", PT_RF(UPSTREAM_REQUEST_TIMEOUT),
         "upstream_response_timeout");
}

static void start_timeout(router_state_t *st)
{
    if (st->timeout_ms == 0 || ev_is_active(&st->timeout) || (st->flags & R_DONE))
        return;
    ev_timer_set(&st->timeout, (double)st->timeout_ms / 1000.0, 0.);
    ev_timer_start(st->s->worker->loop, &st->timeout);
}

/* ---- retries ----------------------------------------------------------------------- */

/* Decides whether this attempt's outcome gets another attempt; if so, abandons the current
 * attempt and schedules the next after the backoff. Returns 1 when a retry is scheduled. */
static int maybe_retry(router_state_t *st, pt_retry_outcome_t outcome, int status,
                       const pt_http_headers_t *response)
{
    if (st->retry_on == 0 || (st->flags & (R_DONE | R_RESP_HEADERS | R_UPGRADE)))
        return 0;
    if (!pt_retry_should(st->retry, st->retry_on, outcome, status, response, st->extra_codes,
                         st->nextra_codes))
        return 0;
    if (st->retries_left == 0) {
        pt_stat_inc(cstats(st)->upstream_rq_retry_limit_exceeded);
        st->s->info.response_flags |= PT_RF(UPSTREAM_RETRY_LIMIT_EXCEEDED);
        return 0;
    }
    /* The request must be complete and replayable: a retry resends all of it. */
    if (!(st->flags & R_REQ_END_SEEN) || (st->flags & R_NO_REPLAY))
        return 0;
    if (st->flags & R_RETRY_COUNTED) {
        st->flags &= ~R_RETRY_COUNTED;
        pt_breaker_release_retry(st->breaker);
    }
    if (!pt_breaker_try_retry(st->breaker)) {
        pt_stat_inc(cstats(st)->upstream_rq_retry_overflow);
        st->s->info.response_flags |= PT_RF(UPSTREAM_OVERFLOW);
        return 0;
    }
    attempt_end(st);
    st->flags |= R_RETRY_COUNTED;
    st->retries_left--;
    pt_stat_inc(cstats(st)->upstream_rq_retry);
    pt_stat_inc(cstats(st)->upstream_rq_retry_backoff_exponential);
    uint64_t ms = pt_retry_backoff_ms(st->retry, st->attempt, pt_random_u64());
    pt_debug("router: retry %u after %llu ms (%s)", st->attempt, (unsigned long long)ms,
             outcome == PT_RETRY_OUTCOME_RESPONSE ? "response" : "no response");
    st->flags |= R_BACKOFF;
    ev_timer_set(&st->backoff, (double)ms / 1000.0, 0.);
    ev_timer_start(st->s->worker->loop, &st->backoff);
    return 1;
}

static void on_backoff(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    router_state_t *st = t->data;
    st->flags &= ~R_BACKOFF;
    if (!(st->flags & R_DONE))
        start_attempt(st);
}

/* An attempt timed out before its response: the host's timeout, the outlier detector, and a
 * retry when the policy allows one. Returns 1 when a retry took over. */
static int attempt_timed_out(router_state_t *st)
{
    if (st->host != NULL)
        atomic_fetch_add_explicit(&st->host->rq_timeout, 1, memory_order_relaxed);
    pt_outlier_report(st->cluster, st->host, PT_OUTLIER_TIMEOUT, 0);
    return maybe_retry(st, PT_RETRY_OUTCOME_PER_TRY_TIMEOUT, 0, NULL);
}

static void on_per_try(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    router_state_t *st = t->data;
    if (st->flags & (R_DONE | R_RESP_HEADERS))
        return;
    pt_stat_inc(cstats(st)->upstream_rq_per_try_timeout);
    if (attempt_timed_out(st))
        return;
    fail(st, 504, "upstream request timeout", PT_RF(UPSTREAM_REQUEST_TIMEOUT),
         "upstream_per_try_timeout");
}

/* per_try_idle_timeout: the attempt saw no upstream activity (headers or body) for that
 * long, before or during the response. */
static void on_per_try_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    router_state_t *st = t->data;
    if (st->flags & R_DONE)
        return;
    uint64_t now = pt_now_ms();
    uint64_t deadline = st->last_upstream_activity_ms + st->retry->per_try_idle_timeout_ms;
    if (now + 1 < deadline) {
        ev_timer_set(t, (double)(deadline - now) / 1000.0, 0.);
        ev_timer_start(loop, t);
        return;
    }
    pt_stat_inc(cstats(st)->upstream_rq_per_try_idle_timeout);
    if (!(st->flags & R_RESP_HEADERS) && attempt_timed_out(st))
        return;
    fail(st, 504, "upstream request timeout", PT_RF(UPSTREAM_REQUEST_TIMEOUT),
         "upstream_per_try_idle_timeout");
}

/* The request's end went upstream: the attempt's per-try timers start. */
static void start_per_try(router_state_t *st)
{
    struct ev_loop *loop = st->s->worker->loop;
    st->s->info.last_upstream_tx_mono_us = pt_loop_us();
    st->last_upstream_activity_ms = st->s->info.last_upstream_tx_mono_us / 1000;
    if (st->per_try_ms > 0 && !ev_is_active(&st->per_try)) {
        ev_timer_set(&st->per_try, (double)st->per_try_ms / 1000.0, 0.);
        ev_timer_start(loop, &st->per_try);
    }
    if (st->retry != NULL && st->retry->per_try_idle_timeout_ms > 0 &&
        !ev_is_active(&st->per_try_idle)) {
        ev_timer_set(&st->per_try_idle, (double)st->retry->per_try_idle_timeout_ms / 1000.0, 0.);
        ev_timer_start(loop, &st->per_try_idle);
    }
}

/* ---- upstream response ----------------------------------------------------------- */

static void up_on_headers(void *req, pt_http_headers_t *h, int end_stream)
{
    router_state_t *st = req;
    pt_http_stream_t *s = st->s;
    if (st->flags & R_DONE)
        return;
    st->last_upstream_activity_ms = pt_loop_ms();
    const char *sv = pt_http_headers_get(h, ":status");
    int status = pt_http_status_value(sv, 0);
    st->try_status = status;
    pt_cluster_count_response(st->cluster, status);
    pt_outlier_report(st->cluster, st->host, PT_OUTLIER_HTTP_RESPONSE, status);
    atomic_fetch_add_explicit(status >= 500 ? &st->host->rq_error : &st->host->rq_success, 1,
                              memory_order_relaxed);
    /* A peer proxy failing its own health checks (draining) asks to be taken out now. */
    if (st->cluster->nhealth_checks > 0 &&
        pt_http_headers_get(h, "x-envoy-immediate-health-check-fail") != NULL)
        pt_health_check_passive_failure(st->cluster, st->host);
    if (!end_stream || !(st->flags & R_REQ_END_SENT)) {
        /* The response is being discarded for a retry: its connection cannot be reused. */
    } else {
        st->flags |= R_RESP_END;
    }
    int retriable = st->retry_on != 0 &&
                    pt_retry_should(st->retry, st->retry_on, PT_RETRY_OUTCOME_RESPONSE, status, h,
                                    st->extra_codes, st->nextra_codes);
    if (retriable && maybe_retry(st, PT_RETRY_OUTCOME_RESPONSE, status, h))
        return;
    st->flags &= ~R_RESP_END;
    /* A retry succeeded when its answer is one the policy would not retry. */
    if (st->attempt > 1 && !retriable)
        pt_stat_inc(cstats(st)->upstream_rq_retry_success);
    /* The outcome is known: the retry slot goes back now, not when the body ends. */
    if (st->flags & R_RETRY_COUNTED) {
        st->flags &= ~R_RETRY_COUNTED;
        pt_breaker_release_retry(st->breaker);
    }
    st->flags |= R_RESP_HEADERS;
    if (s->info.response_code_details == NULL)
        s->info.response_code_details = "via_upstream";
    ev_timer_stop(s->worker->loop, &st->per_try);
    s->info.first_upstream_rx_mono_us = pt_loop_us();
    if (st->cfg == NULL || !st->cfg->suppress_envoy_headers) {
        char ms[24];
        fmt_u64(ms, (pt_loop_us() - st->upstream_start_us) / 1000);
        pt_http_headers_set(h, "x-envoy-upstream-service-time", ms);
    }
    if (s->vhost != NULL && s->vhost->include_attempt_count_in_response) {
        char n[12];
        snprintf(n, sizeof(n), "%u", st->attempt);
        pt_http_headers_set(h, "x-envoy-attempt-count", n);
    }
    pt_route_mutate_response_headers(s->route_config, s->vhost, s->route,
                                     st->weighted_entry, h, &s->info);
    for (unsigned i = 0; i < st->nset_cookies; i++)
        pt_http_headers_add_ref(h, "set-cookie", st->set_cookies[i]);
    if (status == 101 && (s->flags & PT_HS_UPGRADE)) {
        st->flags |= R_UPGRADE;
        ev_timer_stop(s->worker->loop, &st->timeout);
    }
    if (end_stream) {
        st->flags |= R_RESP_END;
        upstream_complete(st);
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
    if ((st->flags & R_DONE) || !(st->flags & R_RESP_HEADERS)) {
        pt_buf_dispose(data);
        return;
    }
    st->last_upstream_activity_ms = pt_loop_ms();
    if (end_stream) {
        st->flags |= R_RESP_END;
        if (!(st->flags & R_UPGRADE))
            upstream_complete(st);
    }
    pt_http_stream_encode_data(s, data, end_stream);
    if (st->flags & R_DONE)
        return;
    if (end_stream) {
        if (st->flags & R_UPGRADE)
            return; /* the upstream half of a tunnel ended; the stream ends with it */
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
    if ((st->flags & R_DONE) || !(st->flags & R_RESP_HEADERS))
        return;
    st->flags |= R_RESP_END;
    upstream_complete(st);
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

/* The pool a request goes to: the cluster's upstream protocol, resolved for this request. */
static pt_pool_protocol_t pool_protocol(const router_state_t *st)
{
    switch (st->cluster->protocol) {
    case PT_UPSTREAM_HTTP2:
        return PT_POOL_HTTP2;
    case PT_UPSTREAM_AUTO:
        /* ALPN picks on TLS; a plain connection cannot negotiate, so HTTP/1.1. */
        return pt_cluster_host_tls(st->cluster, st->host) != NULL ? PT_POOL_ALPN : PT_POOL_HTTP1;
    case PT_UPSTREAM_DOWNSTREAM: {
        const char *proto = st->s->info.protocol;
        return proto != NULL && strcmp(proto, "HTTP/2") == 0 ? PT_POOL_HTTP2 : PT_POOL_HTTP1;
    }
    default:
        return PT_POOL_HTTP1;
    }
}

static void up_on_reset(void *req, pt_http_reset_reason_t reason)
{
    router_state_t *st = req;
    pt_http_stream_t *s = st->s;
    if (st->flags & R_DONE)
        return;
    st->ucs = NULL; /* the codec forgot the stream */
    pt_stat_inc(cstats(st)->upstream_rq_rx_reset);
    if (reason == PT_HTTP_RESET_PROTOCOL_ERROR)
        pt_stat_inc(cstats(st)->upstream_cx_protocol_error);
    atomic_fetch_add_explicit(&st->host->rq_error, 1, memory_order_relaxed);
    if ((st->flags & R_UPGRADE) && (st->flags & R_RESP_HEADERS)) {
        st->flags |= R_DONE;
        upstream_finish(st);
        if ((reason == PT_HTTP_RESET_REMOTE || reason == PT_HTTP_RESET_PROTOCOL_ERROR) &&
            strcmp(s->info.protocol, "HTTP/2") == 0) {
            /* An HTTP/2 tunnel (extended CONNECT) whose upstream reset: the client's stream
             * is reset too, so it does not mistake the abort for a clean end. */
            pt_http_stream_reset(s, PT_RF(UPSTREAM_REMOTE_RESET),
                                 "upstream_reset_after_response_started");
            return;
        }
        /* A tunnel whose upstream went away: end the downstream side cleanly (an HTTP/1
         * tunnel is the connection, which closes with it). */
        pt_buf_t empty = {0};
        pt_http_stream_encode_data(s, &empty, 1);
        return;
    }
    if (!(st->flags & R_RESP_HEADERS)) {
        pt_outlier_report(st->cluster, st->host, PT_OUTLIER_RESET, 0);
        /* A stream the upstream refused (REFUSED_STREAM, or above a GOAWAY's last stream id)
         * never reached its application: refused-stream covers it as well as reset. */
        if (maybe_retry(st,
                        reason == PT_HTTP_RESET_REFUSED_STREAM ? PT_RETRY_OUTCOME_REFUSED_STREAM
                                                               : PT_RETRY_OUTCOME_RESET,
                        0, NULL))
            return;
        char body[160];
        snprintf(body, sizeof(body),
                 "upstream connect error or disconnect/reset before headers. reset reason: %s",
                 pt_http_reset_reason_str(reason));
        fail(st, reason == PT_HTTP_RESET_PROTOCOL_ERROR ? 502 : 503, body, reset_flag(reason),
             "upstream_reset_before_response_started");
        return;
    }
    fail(st, 503, "", reset_flag(reason), "upstream_reset_after_response_started");
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
    if (st->ucs == NULL) {
        pt_buf_dispose(data);
        return;
    }
    const pt_http_client_codec_ops_t *ops = st->pc->codec->ops;
    if (end_stream && !(st->s->flags & PT_HS_UPGRADE))
        st->flags |= R_REQ_END_SENT;
    ops->encode_data(st->ucs, data, end_stream);
    if (end_stream)
        start_per_try(st);
}

static void on_connection_ready(router_state_t *st, pt_pool_conn_t *pc)
{
    pt_http_stream_t *s = st->s;
    /* max_requests counts requests on connections, as Envoy: a queued request is counted
     * by max_pending_requests instead. Over the limit, the untouched connection goes back
     * to the pool for someone else. */
    if (!(st->flags & R_RQ_COUNTED)) {
        if (!pt_breaker_try_rq(st->breaker)) {
            pt_pool_release(pc);
            pt_stat_inc(cstats(st)->upstream_rq_pending_overflow);
            fail(st, 503, "upstream connect error or disconnect/reset before headers. reset "
                          "reason: overflow",
                 PT_RF(UPSTREAM_OVERFLOW), "overflow");
            return;
        }
        st->flags |= R_RQ_COUNTED;
    }
    st->pc = pc;
    st->ucs = pc->codec->ops->new_stream(pc->codec, &upstream_callbacks, st, &s->arena);
    pt_stat_inc(cstats(st)->upstream_rq_total);
    pt_stat_inc(cstats(st)->upstream_rq_active);
    atomic_fetch_add_explicit(&st->host->rq_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->host->rq_active, 1, memory_order_relaxed);
    st->flags |= R_ATTEMPT_LIVE;
    if (st->ucs == NULL) {
        fail(st, 503, "upstream connection unavailable", PT_RF(UPSTREAM_CONNECTION_FAILURE),
             "upstream_unavailable");
        return;
    }
    st->upstream_start_us = pt_loop_us();
    st->last_upstream_activity_ms = pt_loop_ms();
    if (s->info.first_upstream_tx_mono_us == 0)
        s->info.first_upstream_tx_mono_us = st->upstream_start_us;
    s->info.upstream_attempts = st->attempt;
    if (!(st->flags & R_HOLDS_HOST)) /* else a copy of it is there already */
        s->info.upstream_host = st->host->address_str;
    s->info.upstream_local = pc->local;
    if (s->vhost != NULL && s->vhost->include_request_attempt_count) {
        char n[12];
        snprintf(n, sizeof(n), "%u", st->attempt);
        pt_http_headers_set(s->request_headers, "x-envoy-attempt-count", n);
    }
    /* A retry resends the whole body from the replay copy. Without memory for it the
     * attempt cannot send what its headers announce: fail now, not at the route timeout. */
    if (st->attempt > 1 && pt_buf_len(&st->replay) > 0) {
        pt_buf_dispose(&st->body);
        size_t n = pt_buf_len(&st->replay);
        char *tmp = malloc(n);
        int rc = tmp != NULL ? 0 : -ENOMEM;
        if (rc == 0) {
            pt_buf_copyout(&st->replay, 0, tmp, n);
            rc = pt_buf_append(&st->body, tmp, n);
            free(tmp);
        }
        if (rc != 0) {
            fail(st, 503, "", 0, "out_of_memory");
            return;
        }
    }
    int body_pending = pt_buf_len(&st->body) > 0 || (st->flags & R_HAS_TRAILERS);
    int end = (st->flags & R_REQ_END_SEEN) && !body_pending;
    st->flags |= R_HEADERS_SENT;
    if (end && !(s->flags & PT_HS_UPGRADE))
        st->flags |= R_REQ_END_SENT;
    if (s->span != NULL)
        st->try_span = pt_tracing_upstream_start(s, s->request_headers,
                                                 st->cfg != NULL && st->cfg->start_child_span);
    pc->codec->ops->encode_headers(st->ucs, s->request_headers, end);
    if (st->flags & R_DONE)
        return;
    if (end)
        start_per_try(st);
    if (pt_buf_len(&st->body) > 0 ||
        ((st->flags & R_REQ_END_SEEN) && !end && !(st->flags & R_HAS_TRAILERS))) {
        pt_buf_t data = {0};
        pt_buf_move(&data, &st->body);
        send_body(st, &data, (st->flags & R_REQ_END_SEEN) && !(st->flags & R_HAS_TRAILERS));
        pt_buf_dispose(&data);
    }
    if ((st->flags & R_HAS_TRAILERS) && st->ucs != NULL) {
        st->flags |= R_REQ_END_SENT;
        pc->codec->ops->encode_trailers(st->ucs, st->trailers);
        start_per_try(st);
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
    if (st->flags & R_DONE)
        return;
    /* The last attempt's reason is the one logged. */
    st->s->info.upstream_transport_failure_reason =
        pt_transport_failure_reason(&st->s->arena, status);
    if (maybe_retry(st, PT_RETRY_OUTCOME_CONNECT_FAILURE, 0, NULL))
        return;
    char body[160];
    snprintf(body, sizeof(body),
             "upstream connect error or disconnect/reset before headers. reset reason: %s",
             status == -ETIMEDOUT ? "connection timeout" : "connection failure");
    fail(st, 503, body, PT_RF(UPSTREAM_CONNECTION_FAILURE),
         "upstream_reset_before_response_started{connection_failure}");
}

/* ---- terminated CONNECT ---------------------------------------------------------- */

/* A CONNECT on a route whose upgrade_configs has CONNECT with connect_config is terminated
 * here, as Envoy does: a TCP connection to the picked host of the route's cluster, a 200 to
 * the client once it is up, then the bytes of the stream's body go to the upstream and the
 * upstream's bytes come back as the response body, with backpressure both ways. The
 * client's end of stream sends a FIN; the upstream's FIN ends the response; a reset of
 * either side ends the other. There is no retry and no route timeout once it is up. */

static void tunnel_close(router_state_t *st, pt_close_how_t how)
{
    pt_conn_t *c = st->tunnel;
    st->tunnel = NULL;
    c->data = NULL;
    pt_conn_set_handler(c, NULL, NULL);
    pt_conn_close(c, how);
    pt_stat_dec(cstats(st)->upstream_cx_active);
    pt_stat_inc(cstats(st)->upstream_cx_destroy);
    atomic_fetch_sub_explicit(&st->host->cx_active, 1, memory_order_relaxed);
    pt_breaker_release_cx(st->breaker); /* the stream pins the cluster version */
}

static void tunnel_send(router_state_t *st, pt_buf_t *data, int end_stream)
{
    size_t n = pt_buf_len(data);
    if (n > 0) {
        pt_stat_add(cstats(st)->upstream_cx_tx_bytes_total, n);
        pt_conn_write(st->tunnel, data);
    }
    pt_buf_dispose(data);
    if (end_stream) {
        st->flags |= R_REQ_END_SENT;
        pt_conn_shutdown(st->tunnel);
    }
    if ((st->tunnel->flags & PT_CONN_F_ABOVE_HIGH) && !(st->flags & R_DS_PAUSED)) {
        st->flags |= R_DS_PAUSED;
        pt_http_stream_read_disable(st->s, 1);
    }
}

static void tunnel_on_connect(pt_conn_t *c, int status)
{
    router_state_t *st = c->data;
    pt_http_stream_t *s = st->s;
    if (status != 0) {
        if (status == -ETIMEDOUT)
            pt_stat_inc(cstats(st)->upstream_cx_connect_timeout);
        pt_stat_inc(cstats(st)->upstream_cx_connect_fail);
        atomic_fetch_add_explicit(&st->host->cx_connect_fail, 1, memory_order_relaxed);
        pt_outlier_report(st->cluster, st->host, PT_OUTLIER_CONNECT_FAILED, 0);
        fail(st, 503,
             status == -ETIMEDOUT
                 ? "upstream connect error or disconnect/reset before headers. reset reason: "
                   "connection timeout"
                 : "upstream connect error or disconnect/reset before headers. reset reason: "
                   "connection failure",
             PT_RF(UPSTREAM_CONNECTION_FAILURE), "upstream_reset_before_response_started");
        return;
    }
    pt_outlier_report(st->cluster, st->host, PT_OUTLIER_CONNECT_SUCCESS, 0);
    ev_timer_stop(s->worker->loop, &st->timeout); /* a tunnel has no route timeout */
    st->flags |= R_TUNNEL_UP | R_RESP_HEADERS | R_UPGRADE;
    s->info.first_upstream_rx_mono_us = pt_loop_us();
    pt_http_headers_t *h = pt_arena_alloc(&s->arena, sizeof(*h));
    if (h != NULL) {
        pt_http_headers_init(h, &s->arena);
        if (pt_http_headers_add_ref(h, ":status", "200") != 0)
            h = NULL;
    }
    if (h == NULL) {
        fail(st, 503, "", 0, "out_of_memory");
        return;
    }
    pt_route_mutate_response_headers(s->route_config, s->vhost, s->route, st->weighted_entry, h,
                                     &s->info);
    pt_stat_inc(cstats(st)->upstream_rq_2xx);
    pt_http_stream_encode_headers(s, h, 0);
    if ((st->flags & R_DONE) || st->tunnel == NULL)
        return;
    /* What the client sent while we connected. */
    if (pt_buf_len(&st->body) > 0 || (st->flags & R_REQ_END_SEEN)) {
        pt_buf_t b = {0};
        pt_buf_move(&b, &st->body);
        tunnel_send(st, &b, (st->flags & R_REQ_END_SEEN) != 0);
    }
}

static void tunnel_on_read(pt_conn_t *c)
{
    router_state_t *st = c->data;
    pt_http_stream_t *s = st->s;
    size_t n = pt_buf_len(&c->in);
    int eof = (c->flags & PT_CONN_F_EOF) != 0;
    if (n > 0) {
        pt_stat_add(cstats(st)->upstream_cx_rx_bytes_total, n);
        pt_buf_t b = {0};
        pt_buf_move(&b, &c->in);
        if (eof)
            st->flags |= R_TUNNEL_EOF;
        pt_http_stream_encode_data(s, &b, eof);
        pt_buf_dispose(&b);
    } else if (eof) {
        st->flags |= R_TUNNEL_EOF;
        pt_buf_t empty = {0};
        pt_http_stream_encode_data(s, &empty, 1);
    }
    if ((st->flags & R_DONE) || st->tunnel == NULL)
        return;
    if (pt_http_stream_downstream_above_high(s) && !(st->flags & R_US_PAUSED)) {
        st->flags |= R_US_PAUSED;
        pt_conn_pause_read(c);
    }
}

static void tunnel_on_drain(pt_conn_t *c)
{
    router_state_t *st = c->data;
    if (st->flags & R_DS_PAUSED) {
        st->flags &= ~R_DS_PAUSED;
        pt_http_stream_read_disable(st->s, 0);
    }
}

static void tunnel_on_error(pt_conn_t *c, int status)
{
    router_state_t *st = c->data;
    (void)status;
    pt_stat_inc(cstats(st)->upstream_cx_destroy_remote);
    /* The upstream reset or failed: the client's stream ends with a reset (its response
     * started with the 200). */
    fail(st, 503, "", PT_RF(UPSTREAM_CONNECTION_TERMINATION),
         "upstream_reset_after_response_started");
}

static const pt_conn_handler_t tunnel_handler = {
    .on_read = tunnel_on_read,
    .on_connect = tunnel_on_connect,
    .on_drain = tunnel_on_drain,
    .on_error = tunnel_on_error,
};

static void tunnel_start(router_state_t *st)
{
    pt_http_stream_t *s = st->s;
    /* The circuit breakers count a tunnel as a request on a connection of its own. */
    if (!pt_breaker_try_rq(st->breaker)) {
        pt_stat_inc(cstats(st)->upstream_rq_pending_overflow);
        fail(st, 503, "upstream connect error or disconnect/reset before headers. reset "
                      "reason: overflow",
             PT_RF(UPSTREAM_OVERFLOW), "overflow");
        return;
    }
    st->flags |= R_RQ_COUNTED;
    if (!pt_breaker_try_cx(st->breaker)) {
        pt_stat_inc(cstats(st)->upstream_cx_overflow);
        fail(st, 503, "upstream connect error or disconnect/reset before headers. reset "
                      "reason: overflow",
             PT_RF(UPSTREAM_OVERFLOW), "overflow");
        return;
    }
    int err = 0;
    st->tunnel =
        pt_cluster_connect_named(st->cluster, s->worker, st->host, st->upstream_name,
                                 &tunnel_handler, st, &err);
    pt_stat_inc(cstats(st)->upstream_cx_total);
    pt_stat_inc(cstats(st)->upstream_rq_total);
    atomic_fetch_add_explicit(&st->host->cx_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->host->rq_total, 1, memory_order_relaxed);
    if (st->tunnel == NULL) {
        pt_breaker_release_cx(st->breaker);
        pt_stat_inc(cstats(st)->upstream_cx_connect_fail);
        fail(st, 503, "", PT_RF(UPSTREAM_CONNECTION_FAILURE), "upstream_unavailable");
        return;
    }
    pt_stat_inc(cstats(st)->upstream_cx_active);
    pt_stat_inc(cstats(st)->upstream_rq_active);
    atomic_fetch_add_explicit(&st->host->cx_active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->host->rq_active, 1, memory_order_relaxed);
    st->flags |= R_ATTEMPT_LIVE;
    st->upstream_start_us = pt_loop_us();
    if (!(st->flags & R_HOLDS_HOST)) /* else a copy of it is there already */
        s->info.upstream_host = st->host->address_str;
    if (s->info.first_upstream_tx_mono_us == 0)
        s->info.first_upstream_tx_mono_us = st->upstream_start_us;
}

/* retry_priority previous_priorities, as Envoy's PreviousPrioritiesRetryPriority: before
 * a retry, once update_frequency attempts were made and at every multiple of it, the
 * priorities attempted so far leave the priority load and the others share it by their
 * availability; between updates the last load stays. When no priority is left with any
 * availability, the cluster's own load applies again and the attempts are forgotten (the
 * priorities taken out stay out, as in Envoy). */
static void retry_priority_update(router_state_t *st)
{
    uint32_t freq = st->retry->previous_priorities;
    unsigned attempted = st->attempt - 1;
    if (attempted < freq || attempted % freq != 0)
        return;
    for (unsigned i = 0; i < 3; i++)
        st->prio_excluded[i] |= st->prio_attempted[i];
    if (st->prio_choice == NULL &&
        (st->prio_choice = pt_arena_alloc(&st->s->arena, 100 * sizeof(uint16_t))) == NULL) {
        st->lb.priority_choice = NULL;
        return;
    }
    if (pt_lb_retry_choice(st->cluster, st->s->worker, st->prio_excluded, st->prio_choice) == 0) {
        st->lb.priority_choice = st->prio_choice;
    } else {
        st->lb.priority_choice = NULL;
        memset(st->prio_attempted, 0, sizeof(st->prio_attempted));
    }
}

/* Picks a host for this attempt: with previous_hosts, up to host_selection_max_attempts
 * picks avoid hosts already tried; with previous_priorities, a retry's priority load leaves
 * out the priorities tried. */
static pt_host_t *pick_host(router_state_t *st)
{
    unsigned n = st->ntried < MAX_TRIED_HOSTS ? st->ntried : MAX_TRIED_HOSTS;
    int avoid = st->retry != NULL && st->retry->previous_hosts && st->attempt > 1;
    if (st->cluster->type == PT_CLUSTER_ORIGINAL_DST) {
        /* One host: the destination (the override header's, else the connection's). */
        pt_lb_context_t ctx = {.original_dst = st->s->original_dst,
                               .headers = st->s->request_headers};
        return pt_cluster_pick_host(st->cluster, st->s->worker, &ctx, NULL, 0);
    }
    if (__builtin_expect(st->attempt > 1 && st->retry != NULL &&
                             st->retry->previous_priorities > 0, 0))
        retry_priority_update(st);
    pt_host_t *h = pt_cluster_pick_host(st->cluster, st->s->worker, &st->lb,
                                        avoid ? st->tried : NULL, avoid ? n : 0);
    if (h != NULL && st->retry != NULL && st->retry->previous_priorities > 0) {
        uint32_t p = atomic_load_explicit(&h->priority, memory_order_relaxed);
        if (p <= PT_LB_MAX_PRIORITY)
            st->prio_attempted[p / 64] |= 1ull << (p % 64);
    }
    if (avoid && h != NULL) {
        for (uint32_t i = 1; i < st->retry->host_selection_max_attempts; i++) {
            int seen = 0;
            for (unsigned j = 0; j < n && !seen; j++)
                seen = st->tried[j] == h;
            if (!seen)
                break;
            h = pt_cluster_pick_host(st->cluster, st->s->worker, &st->lb, st->tried, n);
        }
    }
    return h;
}

static void start_attempt(router_state_t *st)
{
    pt_http_stream_t *s = st->s;
    st->attempt++;
    s->info.upstream_attempts = st->attempt;
    pt_host_t *host = pick_host(st);
    if (host == NULL) {
        pt_stat_inc(cstats(st)->upstream_cx_none_healthy);
        fail(st, 503, "no healthy upstream", PT_RF(NO_HEALTHY_UPSTREAM), "no_healthy_upstream");
        return;
    }
    if (st->cluster->type == PT_CLUSTER_ORIGINAL_DST) {
        /* A host made on demand is held while used (the stream holds the last one until it
         * is destroyed); the access log outlives that, so it gets the address's copy. */
        if (st->host != NULL)
            pt_cluster_host_done(st->cluster, st->host);
        st->flags |= R_HOLDS_HOST;
        s->info.upstream_host = pt_arena_strdup(&s->arena, host->address_str);
        s->info.upstream_host_ref = NULL; /* made on demand: no endpoint metadata */
    } else {
        s->info.upstream_host = host->address_str;
        s->info.upstream_host_ref = host; /* held by the cluster version the stream pins */
    }
    st->host = host;
    if (st->ntried < MAX_TRIED_HOSTS)
        st->tried[st->ntried++] = host;
    s->info.upstream_attempts = st->attempt;
    if (s->flags & PT_HS_CONNECT) {
        tunnel_start(st);
        return;
    }
    if (s->route->auto_host_rewrite && host->hostname != NULL && host->hostname[0])
        pt_http_headers_set(s->request_headers, ":authority", host->hostname);
    /* A raw connection has no SNI or certificate: one pool for every name, as Envoy's
     * pools hash the name only for TLS. */
    const char *name = st->upstream_name;
    if (name != NULL && pt_cluster_host_tls(st->cluster, host) == NULL)
        name = NULL;
    st->pool = pt_pool_get(s->worker, st->cluster, host, pool_protocol(st), name);
    if (st->pool == NULL) {
        fail(st, 503, "", PT_RF(UPSTREAM_CONNECTION_FAILURE), "upstream_unavailable");
        return;
    }
    st->pool_req.priority = s->route->priority;
    int err = 0;
    pt_pool_conn_t *pc = pt_pool_acquire(st->pool, &st->pool_req, &err);
    if (pc != NULL) {
        on_connection_ready(st, pc);
    } else if (err == -EOVERFLOW) {
        fail(st, 503, "upstream connect error or disconnect/reset before headers. reset "
                      "reason: overflow",
             PT_RF(UPSTREAM_OVERFLOW), "overflow");
    } else if (err < 0) {
        /* No connection could be started (out of descriptors): a connection failure, with
         * its reason in the log and the retry policy's say. */
        pool_failure(&st->pool_req, err);
    }
}

/* ---- the filter ------------------------------------------------------------------ */

static void direct_response(pt_http_stream_t *s, const pt_route_t *rt)
{
    pt_stat_inc(hstats(s)->rq_direct_response);
    pt_http_headers_t extra;
    pt_http_headers_init(&extra, &s->arena);
    pt_route_mutate_response_headers(s->route_config, s->vhost, rt, NULL, &extra,
                                     &s->info);
    const char *body = rt->direct_body;
    size_t blen = body != NULL ? rt->direct_body_len : 0;
    if (rt->direct_format != NULL) {
        /* body_format renders with `body` as %LOCAL_REPLY_BODY% (and the request as it is). */
        s->info.local_reply_body = body != NULL ? body : ""; /* no body: "" */
        s->info.local_reply_body_len = blen;
        pt_buf_t b = {0};
        pt_format_render(rt->direct_format, &s->info, &b);
        blen = pt_buf_len(&b);
        char *text = pt_arena_alloc(&s->arena, blen + 1);
        if (text != NULL)
            pt_buf_copyout(&b, 0, text, blen);
        pt_buf_dispose(&b);
        if (text == NULL || (pt_http_headers_get(&extra, "content-type") == NULL &&
                             pt_http_headers_add_str(&extra, "content-type",
                                                     rt->direct_content_type) != 0)) {
            pt_http_stream_local_reply(s, 503, "", NULL, 0, "out_of_memory");
            return;
        }
        body = text;
    }
    pt_http_stream_local_reply_n(s, rt->direct_status, body, blen, &extra, 0,
                                 "direct_response");
}

/* A grpc-timeout header's value in ms: 1 to 8 digits and a unit (H, M, S, m, u, n), as
 * gRPC's HTTP/2 protocol has it; below a millisecond counts as one (0 would be no timeout).
 * -1 when absent or malformed. */
static int64_t parse_grpc_timeout(const char *v)
{
    if (v == NULL)
        return -1;
    size_t n = strlen(v);
    if (n < 2 || n > 9)
        return -1;
    uint64_t value = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        value = value * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[n - 1]) {
    case 'H':
        return (int64_t)(value * 3600000);
    case 'M':
        return (int64_t)(value * 60000);
    case 'S':
        return (int64_t)(value * 1000);
    case 'm':
        return (int64_t)value;
    case 'u':
        return (int64_t)((value + 999) / 1000);
    case 'n':
        return (int64_t)((value + 999999) / 1000000);
    default:
        return -1;
    }
}

/* The timeout of a gRPC request on a route with max_grpc_timeout, as Envoy computes it:
 * its grpc-timeout (none: infinite) less grpc_timeout_offset when that leaves some, capped
 * at max_grpc_timeout unless that is 0. 0: no timeout. */
static uint64_t grpc_timeout_ms(const pt_route_t *rt, const pt_http_headers_t *h)
{
    int64_t header = parse_grpc_timeout(pt_http_headers_get(h, "grpc-timeout"));
    uint64_t t = header > 0 ? (uint64_t)header : 0;
    if (rt->grpc_timeout_offset_ms > 0 && rt->grpc_timeout_offset_ms < t)
        t -= rt->grpc_timeout_offset_ms;
    if (rt->max_grpc_timeout_ms > 0 && (t == 0 || t > rt->max_grpc_timeout_ms))
        t = rt->max_grpc_timeout_ms;
    return t;
}

/* ms as a grpc-timeout value: at most 8 digits, in the finest unit that holds it. */
static void format_grpc_timeout(char *out, size_t outlen, uint64_t ms)
{
    if (ms < 100000000u)
        snprintf(out, outlen, "%" PRIu64 "m", ms);
    else if (ms / 1000 < 100000000u)
        snprintf(out, outlen, "%" PRIu64 "S", (ms + 999) / 1000);
    else if (ms / 60000 < 100000000u)
        snprintf(out, outlen, "%" PRIu64 "M", (ms + 59999) / 60000);
    else
        snprintf(out, outlen, "%" PRIu64 "H", (ms + 3599999) / 3600000);
}

/* x-envoy-max-retries / x-envoy-retry-on / x-envoy-retriable-status-codes refine the
 * route's policy per request, as in Envoy. */
static void read_retry_headers(router_state_t *st, pt_http_headers_t *h)
{
    const pt_retry_policy_t *p = st->retry;
    st->retry_on = p ? p->retry_on : 0;
    st->retries_left = p ? p->num_retries : 1;
    /* Unknown names in the headers are ignored; the known ones still apply. Each header
     * takes its own kind of conditions, as in Envoy. */
    static const struct {
        const char *header;
        uint32_t mask;
    } on_headers[] = {{"x-envoy-retry-on", ~(uint32_t)PT_RETRY_GRPC_ALL},
                      {"x-envoy-retry-grpc-on", PT_RETRY_GRPC_ALL}};
    for (size_t i = 0; i < sizeof(on_headers) / sizeof(on_headers[0]); i++) {
        const char *on = pt_http_headers_get(h, on_headers[i].header);
        if (on != NULL) {
            uint32_t bits;
            char bad[64];
            (void)pt_retry_on_parse(on, &bits, bad, sizeof(bad));
            st->retry_on |= bits & on_headers[i].mask;
        }
    }
    const char *mr = pt_http_headers_get(h, "x-envoy-max-retries");
    if (mr != NULL && mr[0] >= '0' && mr[0] <= '9') {
        char *end;
        unsigned long v = strtoul(mr, &end, 10);
        if (*end == '\0' && v <= 1000)
            st->retries_left = (uint32_t)v;
    }
    const char *codes = pt_http_headers_get(h, "x-envoy-retriable-status-codes");
    while (codes != NULL && *codes && st->nextra_codes < MAX_EXTRA_CODES) {
        char *end;
        long c = strtol(codes, &end, 10);
        if (end == codes)
            break;
        if (c >= 100 && c <= 599)
            st->extra_codes[st->nextra_codes++] = (uint32_t)c;
        codes = end;
        while (*codes == ',' || *codes == ' ')
            codes++;
    }
    /* retriable_request_headers: only requests that match one may be retried. */
    if (p != NULL && p->nretriable_request_headers > 0) {
        int m = 0;
        for (unsigned i = 0; i < p->nretriable_request_headers && !m; i++)
            m = pt_header_matcher_match(&p->retriable_request_headers[i], h);
        if (!m)
            st->retry_on = 0;
    }
    if (st->retry_on == 0)
        st->retries_left = 0;
    /* These steer this hop; the upstream does not see them. */
    static const char *const consumed[] = {"x-envoy-retry-on", "x-envoy-retry-grpc-on",
                                           "x-envoy-max-retries",
                                           "x-envoy-retriable-status-codes"};
    /* (The timeout headers are read, and removed, in router_decode_headers.) */
    pt_http_headers_remove_any(h, consumed, 4);
}

/* x-envoy-upstream-rq-timeout-ms / x-envoy-upstream-rq-per-try-timeout-ms override the
 * route's timeouts for this request, as in Envoy; the upstream is told the overall timeout
 * in x-envoy-expected-rq-timeout-ms. */
static uint64_t header_ms(pt_http_headers_t *h, const char *name, int *present)
{
    const char *v = pt_http_headers_get(h, name);
    *present = 0;
    if (v == NULL || v[0] < '0' || v[0] > '9')
        return 0;
    char *end;
    unsigned long long ms = strtoull(v, &end, 10);
    if (*end != '\0')
        return 0;
    *present = 1;
    return ms;
}

/* A cookie hash policy with a ttl found no cookie: Envoy's generated one, the same for every
 * request of the connection, set on the response. */
static const char *make_cookie(void *data, const pt_hash_policy_t *p)
{
    router_state_t *st = data;
    pt_http_stream_t *s = st->s;
    char *value = pt_arena_alloc(&s->arena, 17);
    if (value == NULL)
        return NULL;
    pt_route_cookie_value(&s->info.downstream_direct_remote, &s->info.downstream_local, value);
    const char *cookie = pt_route_set_cookie(p, value, &s->arena);
    if (cookie == NULL)
        return NULL;
    if (st->set_cookies == NULL &&
        (st->set_cookies = pt_arena_alloc(&s->arena, s->route->nhash_policies *
                                                         sizeof(*st->set_cookies))) == NULL)
        return NULL;
    st->set_cookies[st->nset_cookies++] = cookie;
    return value;
}

static int router_decode_headers(pt_http_stream_t *s, void *cfg, void *state,
                                 pt_http_headers_t *h, int end_stream)
{
    router_state_t *st = state;
    st->s = s;
    st->cfg = cfg;
    st->flags |= R_STARTED;
    ev_init(&st->timeout, on_timeout);
    st->timeout.data = st;
    ev_init(&st->per_try, on_per_try);
    st->per_try.data = st;
    ev_init(&st->per_try_idle, on_per_try_idle);
    st->per_try_idle.data = st;
    ev_init(&st->backoff, on_backoff);
    st->backoff.data = st;
    st->pool_req.on_ready = pool_ready;
    st->pool_req.on_failure = pool_failure;
    if (end_stream)
        request_ended(st);

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
        pt_route_mutate_response_headers(s->route_config, s->vhost, rt, NULL, &extra,
                                         &s->info);
        pt_http_stream_local_reply(s, code, "", &extra, 0, "redirect");
        return PT_STOP;
    }
    case PT_ROUTE_ACTION_ROUTE:
        break;
    }

    const char *name =
        pt_route_cluster_for_request(rt, h, pt_random_u64(), &st->weighted_entry);
    pt_cluster_t *cluster = name && s->view ? pt_view_find_cluster(s->view->view, name) : NULL;
    pt_stat_inc(hstats(s)->rq_total);
    if (cluster == NULL) {
        pt_stat_inc(hstats(s)->no_cluster);
        st->flags |= R_DONE;
        pt_http_stream_local_reply(s, rt->cluster_not_found_status, "", NULL,
                                   PT_RF(NO_CLUSTER_FOUND), "cluster_not_found");
        return PT_STOP;
    }
    st->cluster = cluster;
    st->breaker = &cluster->breakers[rt->priority];
    s->info.upstream_cluster = cluster->name;
    s->info.cluster_metadata = cluster->metadata;
    s->info.upstream_cluster_ref = cluster;
    st->retry = rt->retry_policy;
    read_retry_headers(st, h);
    int present;
    int grpc_timed = rt->has_max_grpc_timeout && pt_grpc_is_request(h);
    st->timeout_ms = grpc_timed ? grpc_timeout_ms(rt, h) : rt->timeout_ms;
    uint64_t ms = header_ms(h, "x-envoy-upstream-rq-timeout-ms", &present);
    if (present)
        st->timeout_ms = ms;
    st->per_try_ms = st->retry ? st->retry->per_try_timeout_ms : 0;
    ms = header_ms(h, "x-envoy-upstream-rq-per-try-timeout-ms", &present);
    if (present)
        st->per_try_ms = ms;
    static const char *const timeout_headers[] = {"x-envoy-upstream-rq-timeout-ms",
                                                  "x-envoy-upstream-rq-per-try-timeout-ms"};
    pt_http_headers_remove_any(h, timeout_headers, 2);
    uint64_t expected = st->per_try_ms > 0 && st->per_try_ms < st->timeout_ms ? st->per_try_ms
                                                                             : st->timeout_ms;
    if (expected > 0 && (st->cfg == NULL || !st->cfg->suppress_envoy_headers)) {
        char v[24];
        fmt_u64(v, expected);
        pt_http_headers_set(h, "x-envoy-expected-rq-timeout-ms", v);
    }
    if (grpc_timed && expected > 0) {
        /* The upstream is told the time it has, as Envoy does with max_grpc_timeout. */
        char v[24];
        format_grpc_timeout(v, sizeof(v), expected);
        pt_http_headers_set(h, "grpc-timeout", v);
    }
    st->replay_limit = rt->per_request_buffer_limit ? rt->per_request_buffer_limit
                                                    : s->config->buffer_limit;
    /* The hash is taken from the request as it came, before the route's rewrites, as Envoy
     * computes it when it picks the host. */
    if (rt->nhash_policies > 0)
        st->lb.has_hash = pt_route_hash(rt, h, &s->info.downstream_remote, make_cookie, st,
                                        &st->lb.hash);

    /* Request rewrites, in Envoy's order: header mutations, then path and host. */
    pt_route_mutate_request_headers(s->route_config, s->vhost, rt, st->weighted_entry, h,
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
    /* The name for the upstream TLS connection (auto_sni, auto_san_validation): the host as
     * rewritten so far (Envoy takes it before auto_host_rewrite picks a host), or the
     * override header. Only such clusters pay for it. */
    if (st->cluster->auto_sni | st->cluster->auto_san_validation)
        st->upstream_name = pt_cluster_upstream_name(
            st->cluster, &s->arena, pt_http_headers_get(h, ":authority"),
            st->cluster->auto_sni_header != NULL
                ? pt_http_headers_get_joined(h, st->cluster->auto_sni_header)
                : NULL);

    if (end_stream || (s->flags & PT_HS_UPGRADE))
        start_timeout(st);
    start_attempt(st);
    return PT_STOP;
}

/* Keeps a copy of the body for retries, up to the replay limit. */
static void keep_for_replay(router_state_t *st, const pt_buf_t *data)
{
    if (st->retry_on == 0 || (st->flags & R_NO_REPLAY) || pt_buf_len(data) == 0)
        return;
    size_t n = pt_buf_len(data);
    if (pt_buf_len(&st->replay) + n > st->replay_limit) {
        st->flags |= R_NO_REPLAY; /* too big to resend: no retries for this request */
        pt_buf_dispose(&st->replay);
        return;
    }
    struct iovec iov[16];
    int cnt = pt_buf_iov(data, iov, 16);
    size_t copied = 0;
    int rc = 0;
    for (int i = 0; i < cnt && rc == 0; i++) {
        rc = pt_buf_append(&st->replay, iov[i].iov_base, iov[i].iov_len);
        copied += iov[i].iov_len;
    }
    if (rc == 0 && copied < n) {
        char *tmp = malloc(n - copied);
        rc = tmp != NULL ? 0 : -ENOMEM;
        if (tmp != NULL) {
            pt_buf_copyout(data, copied, tmp, n - copied);
            rc = pt_buf_append(&st->replay, tmp, n - copied);
            free(tmp);
        }
    }
    /* A copy with a piece missing would resend a truncated body that the upstream waits
     * on for ever: without memory for all of it, no retries, as for a body too big. */
    if (rc != 0) {
        st->flags |= R_NO_REPLAY;
        pt_buf_dispose(&st->replay);
    }
}

static int router_decode_data(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                              int end_stream)
{
    (void)cfg;
    router_state_t *st = state;
    if (st->flags & R_DONE) {
        pt_buf_dispose(data);
        return PT_CONTINUE;
    }
    if (end_stream) {
        request_ended(st);
        start_timeout(st);
    }
    if (st->tunnel != NULL && (st->flags & R_TUNNEL_UP)) {
        tunnel_send(st, data, end_stream);
        return PT_CONTINUE;
    }
    keep_for_replay(st, data);
    if (st->ucs != NULL) {
        send_body(st, data, end_stream);
        return PT_CONTINUE;
    }
    /* Waiting for a connection (or a backoff): hold the body, bounded. During a backoff the
     * replay copy already has it. */
    if (st->flags & R_BACKOFF) {
        pt_buf_dispose(data);
        return PT_CONTINUE;
    }
    pt_buf_move(&st->body, data);
    if (pt_buf_len(&st->body) > s->config->buffer_limit && !(st->flags & R_DS_PAUSED)) {
        st->flags |= R_DS_PAUSED;
        pt_http_stream_read_disable(s, 1);
    }
    return PT_CONTINUE;
}

static int router_decode_trailers(pt_http_stream_t *s, void *cfg, void *state,
                                  pt_http_headers_t *t)
{
    (void)cfg;
    (void)s;
    router_state_t *st = state;
    if (st->flags & R_DONE)
        return PT_CONTINUE;
    request_ended(st);
    st->flags |= R_HAS_TRAILERS;
    st->trailers = t;
    start_timeout(st);
    if (st->ucs != NULL) {
        st->flags |= R_REQ_END_SENT;
        st->pc->codec->ops->encode_trailers(st->ucs, t);
        start_per_try(st);
    }
    return PT_CONTINUE;
}

static void router_on_downstream_watermark(pt_http_stream_t *s, void *cfg, void *state,
                                           int above)
{
    (void)s;
    (void)cfg;
    router_state_t *st = state;
    if (!(st->flags & R_DONE) && st->tunnel != NULL) {
        if (above && !(st->flags & R_US_PAUSED)) {
            st->flags |= R_US_PAUSED;
            pt_conn_pause_read(st->tunnel);
        } else if (!above && (st->flags & R_US_PAUSED)) {
            st->flags &= ~R_US_PAUSED;
            pt_conn_resume_read(st->tunnel);
        }
        return;
    }
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
        pt_stat_inc(cstats(st)->upstream_rq_tx_reset);
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
    if (st->cluster != NULL)
        upstream_finish(st);
    if (st->flags & R_HOLDS_HOST) {
        st->flags &= ~R_HOLDS_HOST;
        pt_cluster_host_done(st->cluster, st->host);
    }
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
