/* envoy.filters.http.fault: injects delays and aborts into requests, before the router.
 *
 * Per request, in Envoy's order: when max_active_faults is set and that many faults are
 * already active (in the whole process, under this connection manager's stat prefix), the
 * request passes untouched and faults_overflow counts it. Otherwise, when upstream_cluster
 * names the route's cluster (or is unset) and every `headers` matcher matches:
 *   - delay: for `percentage` of requests (x-envoy-fault-delay-request-percentage may lower
 *     it with header_delay), the request is held for fixed_delay (or the milliseconds in
 *     x-envoy-fault-delay-request with header_delay): decode_headers returns PT_STOP and a
 *     timer on the worker's loop resumes the chain (response flag DI). The request body
 *     waits in the connection manager meanwhile.
 *   - abort: then (after the delay, if any, with a new draw) for `percentage` of requests
 *     the request is answered locally with http_status and the body "fault filter abort"
 *     (response flag FI, details fault_filter_abort). grpc_status answers 200 with that
 *     grpc-status (trailers-only, content-type application/grpc) to a gRPC request, as
 *     Envoy's local reply does; header_abort takes the status from
 *     x-envoy-fault-abort-request (200-599) or x-envoy-fault-abort-grpc-request.
 * A request with a fault counts once in active_faults while it lives.
 *
 * The x-envoy-fault-* headers act only when header_delay / header_abort is configured, so
 * a client cannot inject faults into a service that did not opt in. Runtime keys are
 * accepted and ignored (petrel has no runtime layer). Stats: http.<hcm stat_prefix>.fault.
 * {delays_injected, aborts_injected, faults_overflow, active_faults (gauge)} and, for
 * requests with x-envoy-downstream-service-cluster, fault.<that cluster>.delays_injected /
 * aborts_injected (unless disable_downstream_cluster_stats). Differences from Envoy:
 * docs/fault.md. */
#include <ctype.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/filter_common.h"
#include "proxy/grpc.h"
#include "filters/http_filter.h"
#include "proxy/conn_manager.h"
#include "proxy/log.h"
#include "proxy/metadata.h"
#include "proxy/route.h"
#include "proxy/stats.h"

#define H_ABORT              "x-envoy-fault-abort-request"
#define H_ABORT_GRPC         "x-envoy-fault-abort-grpc-request"
#define H_ABORT_PCT          "x-envoy-fault-abort-request-percentage"
#define H_DELAY              "x-envoy-fault-delay-request"
#define H_DELAY_PCT          "x-envoy-fault-delay-request-percentage"
#define H_DOWNSTREAM_CLUSTER "x-envoy-downstream-service-cluster"

typedef enum abort_kind { ABORT_NONE, ABORT_HTTP, ABORT_GRPC, ABORT_HEADER } abort_kind_t;

/* The process-wide count of active faults for one stat prefix: Envoy compares the
 * active_faults gauge, which every worker shares; here the gauge is summed lazily over
 * threads, so the comparison uses this counter kept alongside it. Created when a config
 * is prepared, kept for the life of the process (as the stat is). */
typedef struct active_counter {
    struct active_counter *next;
    char *name;
    _Atomic int64_t value;
} active_counter_t;

static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;
static active_counter_t *counters;

static _Atomic int64_t *active_counter_for(const char *name)
{
    pthread_mutex_lock(&counters_lock);
    active_counter_t *c;
    for (c = counters; c != NULL; c = c->next)
        if (strcmp(c->name, name) == 0)
            break;
    if (c == NULL) {
        c = calloc(1, sizeof(*c));
        if (c != NULL && (c->name = strdup(name)) == NULL) {
            free(c);
            c = NULL;
        }
        if (c != NULL) {
            atomic_init(&c->value, 0);
            c->next = counters;
            counters = c;
        }
    }
    pthread_mutex_unlock(&counters_lock);
    return c ? &c->value : NULL;
}

typedef struct fault_config {
    /* delay */
    int has_delay;
    int delay_from_header;
    uint64_t fixed_delay_ms;
    pt_fractional_percent_t delay_pct;
    /* abort */
    abort_kind_t abort_kind;
    int abort_status; /* http_status, or grpc_status */
    pt_fractional_percent_t abort_pct;
    /* who */
    const char *upstream_cluster; /* NULL: any */
    pt_header_matcher_t *headers;
    unsigned nheaders;
    int has_max_active;
    uint64_t max_active;
    int downstream_cluster_stats;
    /* stats (prepare) */
    const char *hcm_prefix;
    pt_stat_t delays_injected, aborts_injected, faults_overflow, active_faults;
    _Atomic int64_t *active;
    /* filter_metadata: merged into the stream's dynamic metadata under FAULT_MD_NS when a
     * delay or abort is injected, or NULL. */
    const pt_metadata_t *filter_metadata;
} fault_config_t;

enum {
    F_TIMER = 1u << 0,  /* the delay timer is set up (ev_init ran) */
    F_ACTIVE = 1u << 1, /* counted in active_faults */
    F_DONE = 1u << 2,   /* reset or destroyed: no more work */
};

typedef struct fault_state {
    pt_http_stream_t *s;
    const fault_config_t *cfg;  /* the filter's: stats and the active-fault count */
    const fault_config_t *spec; /* what to inject: the route's HTTPFault, else cfg */
    uint32_t flags;
    const char *downstream_cluster; /* for the per-cluster stats, or NULL */
    ev_timer timer;
} fault_state_t;

/* ---- config ------------------------------------------------------------------------------ */

static const char *const fault_unsupported[] = {"response_rate_limit", NULL};
/* Where filter_metadata goes when a fault is injected (Envoy's filter name). */
static const char FAULT_MD_NS[] = "envoy.filters.http.fault";
static const char *const runtime_keys[] = {
    "delay_percent_runtime",     "abort_percent_runtime",
    "delay_duration_runtime",    "abort_http_status_runtime",
    "max_active_faults_runtime", "response_rate_limit_percent_runtime",
    "abort_grpc_status_runtime", NULL};

/* An empty message ({}) such as header_delay / header_abort. */
static void empty_message(pt_cfg_t *r, const char *field)
{
    if (pt_cfg_enter(r, field) > 0)
        pt_cfg_leave(r);
}

static void parse_delay(pt_cfg_t *r, fault_config_t *c)
{
    static const char *const kinds[] = {"fixed_delay", "header_delay", NULL};
    c->has_delay = 1;
    switch (pt_cfg_oneof(r, kinds, 1)) {
    case 0: {
        int rc = pt_cfg_duration_ms(r, "fixed_delay", &c->fixed_delay_ms, 0);
        if (rc > 0 && c->fixed_delay_ms == 0)
            pt_cfg_error(r, "fixed_delay", "must be greater than 0s");
        break;
    }
    case 1:
        c->delay_from_header = 1;
        empty_message(r, "header_delay");
        break;
    }
    pt_fractional_percent_t zero = {0, 100};
    pt_fractional_percent_field(r, "percentage", &c->delay_pct, zero);
}

static void parse_abort(pt_cfg_t *r, fault_config_t *c)
{
    static const char *const kinds[] = {"http_status", "grpc_status", "header_abort", NULL};
    uint64_t v;
    switch (pt_cfg_oneof(r, kinds, 1)) {
    case 0:
        c->abort_kind = ABORT_HTTP;
        if (pt_cfg_uint(r, "http_status", &v, 0, 200, 599) > 0)
            c->abort_status = (int)v;
        break;
    case 1:
        c->abort_kind = ABORT_GRPC;
        if (pt_cfg_uint(r, "grpc_status", &v, 0, 0, UINT32_MAX) > 0)
            c->abort_status = (int)v;
        break;
    case 2:
        c->abort_kind = ABORT_HEADER;
        empty_message(r, "header_abort");
        break;
    }
    pt_fractional_percent_t zero = {0, 100};
    pt_fractional_percent_field(r, "percentage", &c->abort_pct, zero);
}

static void *parse_fault(pt_cfg_t *r, pt_arena_t *a)
{
    size_t before = r->nerrors;
    fault_config_t *c = pt_arena_alloc(a, sizeof(*c));
    if (c == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    pt_cfg_unsupported(r, fault_unsupported);

    if (pt_cfg_enter(r, "delay") > 0) {
        parse_delay(r, c);
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "abort") > 0) {
        parse_abort(r, c);
        pt_cfg_leave(r);
    }

    const char *s;
    if (pt_cfg_string(r, "upstream_cluster", &s, "") > 0 && s[0] != '\0')
        c->upstream_cluster = pt_arena_strdup(a, s);

    int present;
    size_t n = pt_cfg_array(r, "headers", &present);
    if (present) {
        c->headers = n ? pt_arena_alloc(a, n * sizeof(*c->headers)) : NULL;
        for (size_t i = 0; i < n; i++) {
            if (pt_cfg_enter_index(r, i) > 0) {
                if (c->headers != NULL &&
                    pt_header_matcher_parse(r, a, &c->headers[c->nheaders]) == 0)
                    c->nheaders++;
                pt_cfg_leave(r);
            }
        }
        pt_cfg_leave_array(r);
    }

    /* downstream_nodes matches x-envoy-downstream-service-node, which petrel does not set. */
    json_t *nodes = pt_cfg_has(r, "downstream_nodes") ? pt_cfg_get(r, "downstream_nodes") : NULL;
    if (nodes != NULL && !(json_is_array(nodes) && json_array_size(nodes) == 0))
        pt_cfg_error(r, "downstream_nodes", "is not supported");

    c->has_max_active = pt_cfg_uint(r, "max_active_faults", &c->max_active, 0, 0, UINT32_MAX) > 0;
    c->filter_metadata = pt_struct_parse_ns(r, "filter_metadata", a, FAULT_MD_NS);

    for (int i = 0; runtime_keys[i] != NULL; i++)
        pt_cfg_string(r, runtime_keys[i], &s, NULL); /* no runtime layer: accepted, ignored */
    int disable;
    pt_cfg_bool(r, "disable_downstream_cluster_stats", &disable, 0);
    c->downstream_cluster_stats = !disable;

    return r->nerrors == before ? c : NULL;
}

static void *fault_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    return parse_fault(r, &cfg->arena);
}

/* A route's HTTPFault replaces the filter's for its requests (what to inject, to whom, and
 * max_active_faults); the filter's stats count them, as in Envoy. */
static void *fault_parse_per_route(pt_cfg_t *r, pt_arena_t *a)
{
    return parse_fault(r, a);
}

static int fault_prepare(void *fc, pt_config_t *cfg, const char *hcm_stat_prefix)
{
    (void)cfg;
    fault_config_t *c = fc;
    const char *t = "envoy_http_conn_manager_prefix";
    c->hcm_prefix = hcm_stat_prefix ? hcm_stat_prefix : "";
    c->delays_injected = pt_stats_counter("http", t, c->hcm_prefix, "fault.delays_injected");
    c->aborts_injected = pt_stats_counter("http", t, c->hcm_prefix, "fault.aborts_injected");
    c->faults_overflow = pt_stats_counter("http", t, c->hcm_prefix, "fault.faults_overflow");
    c->active_faults = pt_stats_gauge("http", t, c->hcm_prefix, "fault.active_faults");
    char name[600];
    snprintf(name, sizeof(name), "http.%s.fault.active_faults", c->hcm_prefix);
    c->active = active_counter_for(name);
    return c->active != NULL ? 0 : -1;
}

/* ---- request-time helpers ------------------------------------------------------------ */

/* absl::SimpleAtoi for an unsigned value: optional surrounding whitespace, an optional '+',
 * decimal digits, no overflow. Only the first value of the header counts (these headers
 * are untrusted). */
static int header_uint(const pt_http_headers_t *h, const char *name, uint64_t max, uint64_t *out)
{
    const char *v = pt_http_headers_get(h, name);
    if (v == NULL)
        return 0;
    while (isspace((unsigned char)*v))
        v++;
    if (*v == '+')
        v++;
    if (!isdigit((unsigned char)*v))
        return 0;
    uint64_t x = 0;
    for (; isdigit((unsigned char)*v); v++) {
        uint64_t d = (uint64_t)(*v - '0');
        if (x > (max - d) / 10)
            return 0;
        x = x * 10 + d;
    }
    while (isspace((unsigned char)*v))
        v++;
    if (*v != '\0')
        return 0;
    *out = x;
    return 1;
}

/* The configured percentage, or with header control the header's numerator capped by it
 * (Envoy's HeaderPercentageProvider). */
static pt_fractional_percent_t percentage(const pt_fractional_percent_t *cfg, int from_header,
                                          const pt_http_headers_t *h, const char *header)
{
    pt_fractional_percent_t p = *cfg;
    uint64_t v;
    if (from_header && header_uint(h, header, UINT32_MAX, &v) && v < p.numerator)
        p.numerator = (uint32_t)v;
    return p;
}

static int cluster_matches(const pt_http_stream_t *s, const fault_config_t *c,
                           const pt_http_headers_t *h)
{
    if (c->upstream_cluster == NULL)
        return 1;
    const pt_route_t *rt = s->route;
    if (rt == NULL || rt->action != PT_ROUTE_ACTION_ROUTE)
        return 0;
    /* A weighted-cluster route's cluster is picked by the router, after this filter: such
     * routes do not match (docs/fault.md). */
    if (rt->cluster_kind == PT_ROUTE_CLUSTER_WEIGHTED)
        return 0;
    const char *name = pt_route_cluster_for_request(rt, h, 0, NULL);
    return name != NULL && strcmp(name, c->upstream_cluster) == 0;
}

static void count_injected(fault_state_t *st, pt_stat_t general, const char *what)
{
    const fault_config_t *c = st->cfg;
    pt_stat_inc(general);
    /* Envoy writes the injecting HTTPFault's filter_metadata with each injection. */
    if (st->spec->filter_metadata != NULL &&
        pt_dyn_md_merge(&st->s->info.dynamic_metadata, &st->s->arena, st->spec->filter_metadata) != 0)
        pt_warn("fault: out of memory writing filter_metadata to dynamic metadata");
    if (st->downstream_cluster != NULL && c->downstream_cluster_stats) {
        char name[512];
        snprintf(name, sizeof(name), "fault.%s.%s", st->downstream_cluster, what);
        pt_stat_inc(
            pt_stats_counter("http", "envoy_http_conn_manager_prefix", c->hcm_prefix, name));
    }
    /* All faults of one request count as one active fault. */
    if (!(st->flags & F_ACTIVE)) {
        st->flags |= F_ACTIVE;
        pt_stat_inc(c->active_faults);
        atomic_fetch_add_explicit(c->active, 1, memory_order_relaxed);
    }
}

/* Aborts the request when the abort fault fires for it. 1 when it did. */
static int maybe_abort(fault_state_t *st, const pt_http_headers_t *h)
{
    const fault_config_t *c = st->spec;
    if (c->abort_kind == ABORT_NONE)
        return 0;
    pt_fractional_percent_t p =
        percentage(&c->abort_pct, c->abort_kind == ABORT_HEADER, h, H_ABORT_PCT);
    if (!pt_fractional_percent_sample(&p))
        return 0;
    int http_status = 0, grpc_status = -1;
    uint64_t v;
    switch (c->abort_kind) {
    case ABORT_HTTP:
        http_status = c->abort_status;
        break;
    case ABORT_GRPC:
        http_status = 200;
        grpc_status = c->abort_status;
        break;
    case ABORT_HEADER:
        if (header_uint(h, H_ABORT, UINT64_MAX, &v) && v >= 200 && v < 600) {
            http_status = (int)v;
        } else if (header_uint(h, H_ABORT_GRPC, UINT32_MAX, &v)) {
            http_status = 200;
            grpc_status = (int)v;
        }
        break;
    case ABORT_NONE:
        break;
    }
    if (http_status == 0)
        return 0;
    count_injected(st, st->cfg->aborts_injected, "aborts_injected");
    pt_debug("fault: aborting request with %d%s", http_status, grpc_status >= 0 ? " (gRPC)" : "");
    if (pt_grpc_is_request(h))
        pt_http_grpc_local_reply(
            st->s, grpc_status >= 0 ? grpc_status : pt_grpc_status_from_http(http_status),
            "fault filter abort", NULL, PT_RF(FAULT_INJECTED), "fault_filter_abort");
    else
        pt_http_stream_local_reply(st->s, http_status, "fault filter abort", NULL,
                                   PT_RF(FAULT_INJECTED), "fault_filter_abort");
    return 1;
}

static void stop_timer(fault_state_t *st)
{
    if (st->flags & F_TIMER)
        ev_timer_stop(st->s->worker->loop, &st->timer);
}

static void on_delay_done(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    fault_state_t *st = t->data;
    stop_timer(st);
    if (st->flags & F_DONE)
        return;
    pt_http_stream_t *s = st->s;
    /* Delays can be followed by aborts (a new draw, as in Envoy). */
    if (maybe_abort(st, s->request_headers))
        return;
    pt_http_stream_continue(s);
}

/* ---- the filter ------------------------------------------------------------------------ */

static int fault_decode_headers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                                int end_stream)
{
    (void)end_stream;
    const fault_config_t *base = cfg, *route = pt_http_stream_route_config(s);
    const fault_config_t *c = route != NULL ? route : base;
    fault_state_t *st = state;
    st->s = s;
    st->cfg = base;
    st->spec = c;

    /* A fuzzy limit, as Envoy's (compare, then count later without a CAS). */
    if (c->has_max_active &&
        atomic_load_explicit(base->active, memory_order_relaxed) >= (int64_t)c->max_active) {
        pt_stat_inc(base->faults_overflow);
        return PT_CONTINUE;
    }
    if (!cluster_matches(s, c, h))
        return PT_CONTINUE;
    for (unsigned i = 0; i < c->nheaders; i++)
        if (!pt_header_matcher_match(&c->headers[i], h))
            return PT_CONTINUE;
    const char *dc = pt_http_headers_get(h, H_DOWNSTREAM_CLUSTER);
    if (dc != NULL && dc[0] != '\0')
        st->downstream_cluster = dc;

    if (c->has_delay) {
        pt_fractional_percent_t p = percentage(&c->delay_pct, c->delay_from_header, h, H_DELAY_PCT);
        uint64_t ms = 0;
        if (pt_fractional_percent_sample(&p)) {
            if (!c->delay_from_header)
                ms = c->fixed_delay_ms;
            else if (!header_uint(h, H_DELAY, UINT64_MAX, &ms))
                ms = 0;
        }
        if (ms > 0) {
            ev_timer_init(&st->timer, on_delay_done, (double)ms / 1000.0, 0.);
            st->timer.data = st;
            st->flags |= F_TIMER;
            ev_timer_start(s->worker->loop, &st->timer);
            count_injected(st, base->delays_injected, "delays_injected");
            s->info.response_flags |= PT_RF(DELAY_INJECTED);
            pt_debug("fault: delaying request %llums", (unsigned long long)ms);
            return PT_STOP;
        }
    }
    if (maybe_abort(st, h))
        return PT_STOP;
    return PT_CONTINUE;
}

static void fault_on_reset(pt_http_stream_t *s, void *cfg, void *state)
{
    (void)s;
    (void)cfg;
    fault_state_t *st = state;
    if (st->s == NULL)
        return; /* decode_headers never ran */
    stop_timer(st);
    st->flags |= F_DONE;
}

static void fault_on_destroy(pt_http_stream_t *s, void *cfg, void *state)
{
    (void)s;
    (void)cfg;
    fault_state_t *st = state;
    if (st->s == NULL)
        return;
    stop_timer(st);
    st->flags |= F_DONE;
    if (st->flags & F_ACTIVE) {
        st->flags &= ~F_ACTIVE;
        pt_stat_dec(st->cfg->active_faults);
        atomic_fetch_sub_explicit(st->cfg->active, 1, memory_order_relaxed);
    }
}

const pt_http_filter_ops_t pt_fault_filter = {
    .name = "envoy.filters.http.fault",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    .state_size = sizeof(fault_state_t),
    .parse = fault_parse,
    .prepare = fault_prepare,
    .parse_per_route = fault_parse_per_route,
    .decode_headers = fault_decode_headers,
    .on_reset = fault_on_reset,
    .on_destroy = fault_on_destroy,
};
