/* Load balancers: pick a host of a cluster for a new upstream connection or request.
 * Each keeps its cursor per worker (no shared state on the hot path). */
#ifndef PT_LB_H
#define PT_LB_H

#include "proxy/cluster.h"

/* Per-worker, per-cluster state; the worker allocates one per cluster of its snapshot. */
typedef struct pt_cluster_local {
    uint64_t rr_next;
} pt_cluster_local_t;

/* Weighted round robin over healthy hosts (all hosts when none is healthy: Envoy's panic
 * mode), skipping excluded hosts while another is available. */
pt_host_t *pt_lb_round_robin(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                             unsigned nexclude);

#endif
