#include "proxy/circuit_breaker.h"

#include <string.h>

static const char *const priority_names[] = {"DEFAULT", "HIGH", NULL};
static const char *const priority_stat[] = {"default", "high"};

static void defaults(pt_breaker_t *b)
{
    b->max_connections = b->max_pending_requests = b->max_requests = 1024;
    b->max_retries = 3;
    b->budget_percent = 20.0;
    b->min_retry_concurrency = 3;
}

int pt_breakers_parse(pt_cfg_t *r, pt_breaker_t *b)
{
    size_t before = r->nerrors;
    for (int p = 0; p < PT_PRIORITIES; p++)
        defaults(&b[p]);
    if (pt_cfg_enter(r, "circuit_breakers") <= 0)
        return 0;
    int present;
    size_t n = pt_cfg_array(r, "thresholds", &present);
    int seen[PT_PRIORITIES] = {0};
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        static const char *const unsupported[] = {"max_connection_pools", NULL};
        pt_cfg_unsupported(r, unsupported);
        int prio;
        pt_cfg_enum(r, "priority", priority_names, NULL, &prio, 0);
        if (seen[prio]++)
            pt_cfg_error(r, "priority", "%s is given twice", priority_names[prio]);
        pt_breaker_t *t = &b[prio];
        uint64_t v;
        pt_cfg_uint(r, "max_connections", &v, 1024, 0, UINT32_MAX);
        t->max_connections = (uint32_t)v;
        pt_cfg_uint(r, "max_pending_requests", &v, 1024, 0, UINT32_MAX);
        t->max_pending_requests = (uint32_t)v;
        pt_cfg_uint(r, "max_requests", &v, 1024, 0, UINT32_MAX);
        t->max_requests = (uint32_t)v;
        pt_cfg_uint(r, "max_retries", &v, 3, 0, UINT32_MAX);
        t->max_retries = (uint32_t)v;
        pt_cfg_bool(r, "track_remaining", &t->track_remaining, 0);
        if (pt_cfg_enter(r, "retry_budget") > 0) {
            t->has_budget = 1;
            if (pt_cfg_enter(r, "budget_percent") > 0) {
                pt_cfg_double(r, "value", &t->budget_percent, 20.0, 0.0, 100.0);
                pt_cfg_leave(r);
            }
            pt_cfg_uint(r, "min_retry_concurrency", &v, 3, 0, UINT32_MAX);
            t->min_retry_concurrency = (uint32_t)v;
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    n = pt_cfg_array(r, "per_host_thresholds", &present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        int prio;
        pt_cfg_enum(r, "priority", priority_names, NULL, &prio, 0);
        uint64_t v;
        pt_cfg_uint(r, "max_connections", &v, 0, 0, UINT32_MAX);
        b[prio].per_host_max_connections = (uint32_t)v;
        static const char *const per_host_unsupported[] = {
            "max_pending_requests", "max_requests", "max_retries", "retry_budget",
            "track_remaining", "max_connection_pools", NULL};
        pt_cfg_unsupported(r, per_host_unsupported);
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    pt_cfg_leave(r);
    return r->nerrors == before ? 0 : -1;
}

static int64_t retry_limit(const pt_breaker_t *b)
{
    if (!b->has_budget)
        return b->max_retries;
    /* Envoy's budget: a share of the active requests plus the pending ones. */
    int64_t active = atomic_load_explicit(&b->counts->rq, memory_order_relaxed) +
                     atomic_load_explicit(&b->counts->pending, memory_order_relaxed);
    /* active >= 0, so truncation is the floor. */
    int64_t budget = (int64_t)((double)active * b->budget_percent / 100.0);
    return budget > (int64_t)b->min_retry_concurrency ? budget : (int64_t)b->min_retry_concurrency;
}

/* Computed gauges: "open" is 1 while the limit is reached; "remaining" is what is left. */
#define GAUGE_FNS(field, limit_expr)                                                           \
    static int64_t open_##field(const void *arg)                                               \
    {                                                                                          \
        const pt_breaker_t *b = arg;                                                           \
        return atomic_load_explicit(&b->counts->field, memory_order_relaxed) >= (int64_t)(limit_expr); \
    }                                                                                          \
    static int64_t remaining_##field(const void *arg)                                          \
    {                                                                                          \
        const pt_breaker_t *b = arg;                                                           \
        int64_t left = (int64_t)(limit_expr) - atomic_load_explicit(&b->counts->field, memory_order_relaxed); \
        return left > 0 ? left : 0;                                                            \
    }
GAUGE_FNS(cx, b->max_connections)
GAUGE_FNS(pending, b->max_pending_requests)
GAUGE_FNS(rq, b->max_requests)
GAUGE_FNS(retries, retry_limit(b))

typedef struct breaker_gauges {
    pt_breaker_t *b;
} breaker_gauges_t;

/* Detaches the gauges of every priority's breaker (arg: the array): one cleanup a cluster
 * version, not one a priority. */
static void detach(void *arg)
{
    for (int p = 0; p < PT_PRIORITIES; p++) {
        pt_breaker_t *b = &((pt_breaker_t *)arg)[p];
        pt_stat_t ids[] = {b->cx_open,      b->rq_pending_open,   b->rq_open,
                           b->rq_retry_open, b->remaining_cx,     b->remaining_pending,
                           b->remaining_rq, b->remaining_retries};
        for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
            if (ids[i] != 0)
                pt_stats_gauge_fn_clear(ids[i], b);
    }
}

void pt_breakers_prepare(pt_breaker_t *b, pt_breaker_counts_t *counts, const char *cluster,
                         pt_arena_t *arena)
{
    const char *tag = "envoy_cluster_name";
    for (int p = 0; p < PT_PRIORITIES; p++) {
        pt_breaker_t *t = &b[p];
        t->counts = &counts[p];
        char name[96];
#define G(field, stat, fn)                                                                     \
    do {                                                                                       \
        snprintf(name, sizeof(name), "circuit_breakers.%s." stat, priority_stat[p]);           \
        t->field = pt_stats_gauge("cluster", tag, cluster, name);                              \
        pt_stats_gauge_fn(t->field, fn, t);                                                    \
    } while (0)
        G(cx_open, "cx_open", open_cx);
        G(rq_pending_open, "rq_pending_open", open_pending);
        G(rq_open, "rq_open", open_rq);
        G(rq_retry_open, "rq_retry_open", open_retries);
        if (t->track_remaining) {
            G(remaining_cx, "remaining_cx", remaining_cx);
            G(remaining_pending, "remaining_pending", remaining_pending);
            G(remaining_rq, "remaining_rq", remaining_rq);
            G(remaining_retries, "remaining_retries", remaining_retries);
        }
#undef G
    }
    pt_arena_defer(arena, detach, b);
}

static int try_take(_Atomic int64_t *count, int64_t limit)
{
    int64_t now = atomic_fetch_add_explicit(count, 1, memory_order_relaxed);
    if (now < limit)
        return 1;
    atomic_fetch_sub_explicit(count, 1, memory_order_relaxed);
    return 0;
}

int pt_breaker_try_cx(pt_breaker_t *b)
{
    return try_take(&b->counts->cx, b->max_connections);
}
void pt_breaker_take_cx(pt_breaker_t *b)
{
    atomic_fetch_add_explicit(&b->counts->cx, 1, memory_order_relaxed);
}
void pt_breaker_counts_release_cx(pt_breaker_counts_t *counts)
{
    atomic_fetch_sub_explicit(&counts->cx, 1, memory_order_relaxed);
}

void pt_breaker_release_cx(pt_breaker_t *b)
{
    atomic_fetch_sub_explicit(&b->counts->cx, 1, memory_order_relaxed);
}
int pt_breaker_try_pending(pt_breaker_t *b)
{
    return try_take(&b->counts->pending, b->max_pending_requests);
}
void pt_breaker_release_pending(pt_breaker_t *b)
{
    atomic_fetch_sub_explicit(&b->counts->pending, 1, memory_order_relaxed);
}
int pt_breaker_try_rq(pt_breaker_t *b)
{
    return try_take(&b->counts->rq, b->max_requests);
}
void pt_breaker_release_rq(pt_breaker_t *b)
{
    atomic_fetch_sub_explicit(&b->counts->rq, 1, memory_order_relaxed);
}
int pt_breaker_try_retry(pt_breaker_t *b)
{
    return try_take(&b->counts->retries, retry_limit(b));
}
void pt_breaker_release_retry(pt_breaker_t *b)
{
    atomic_fetch_sub_explicit(&b->counts->retries, 1, memory_order_relaxed);
}
