/* Circuit breakers (envoy.config.cluster.v3.CircuitBreakers): per cluster and priority
 * (DEFAULT, HIGH), limits on connections, pending requests, active requests and concurrent
 * retries, counted by all workers together with atomics so the limits are exact under
 * concurrency. A limit reached makes the request fail fast (503, x-envoy-overloaded, flag
 * UO) instead of piling up behind a sick upstream. */
#ifndef PT_CIRCUIT_BREAKER_H
#define PT_CIRCUIT_BREAKER_H

#include <stdatomic.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/stats.h"

#define PT_PRIORITIES 2 /* DEFAULT, HIGH */

/* What a breaker counts, shared by every version of a cluster (it belongs to the cluster's
 * name: an update of the cluster keeps the counts exact). */
typedef struct pt_breaker_counts {
    _Atomic int64_t cx, pending, rq, retries;
} pt_breaker_counts_t;

typedef struct pt_breaker {
    uint32_t max_connections;      /* default 1024 */
    uint32_t max_pending_requests; /* default 1024 */
    uint32_t max_requests;         /* default 1024 */
    uint32_t max_retries;          /* default 3; replaced by the budget when one is set */
    int has_budget;
    uint32_t min_retry_concurrency; /* default 3 */
    double budget_percent;         /* retry_budget.budget_percent, default 20 */
    int track_remaining;
    uint32_t per_host_max_connections; /* 0: no per-host limit */
    pt_breaker_counts_t *counts;   /* the cluster state's (set when the cluster is prepared) */
    pt_stat_t cx_open, rq_pending_open, rq_open, rq_retry_open;
    pt_stat_t remaining_cx, remaining_pending, remaining_rq, remaining_retries;
} pt_breaker_t;

/* Parses `circuit_breakers` (the reader is in the cluster) into b[PT_PRIORITIES], which
 * start with Envoy's defaults. 0 or -1 with errors recorded. */
int pt_breakers_parse(pt_cfg_t *r, pt_breaker_t *b);
/* Points b[PT_PRIORITIES] at their counts, registers cluster.<name>.circuit_breakers.
 * <priority>.* gauges (computed from the counts) and arranges for them to be detached when
 * the arena goes. */
void pt_breakers_prepare(pt_breaker_t *b, pt_breaker_counts_t *counts, const char *cluster,
                         pt_arena_t *arena);

/* Each try_* takes one unit if under the limit (returns 1) or nothing (returns 0); every
 * successful try is matched by one release. */
int pt_breaker_try_cx(pt_breaker_t *b);
/* Takes a connection slot even over the limit (a pool's first connection, see pool.c). */
void pt_breaker_take_cx(pt_breaker_t *b);
void pt_breaker_release_cx(pt_breaker_t *b);
/* The same, for a holder that kept only the counts (its breaker's version may be gone). */
void pt_breaker_counts_release_cx(pt_breaker_counts_t *counts);
int pt_breaker_try_pending(pt_breaker_t *b);
void pt_breaker_release_pending(pt_breaker_t *b);
int pt_breaker_try_rq(pt_breaker_t *b);
void pt_breaker_release_rq(pt_breaker_t *b);
/* Retries: the budget (a share of active and pending requests, at least
 * min_retry_concurrency) when configured, else max_retries. */
int pt_breaker_try_retry(pt_breaker_t *b);
void pt_breaker_release_retry(pt_breaker_t *b);

#endif
