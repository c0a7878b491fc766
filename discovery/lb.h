/* Load balancers: pick a host of a cluster for a new upstream connection or request.
 * Each keeps its cursor per worker (no shared state on the hot path). */
#ifndef PT_LB_H
#define PT_LB_H

#include "proxy/cluster.h"

/* Per-worker, per-cluster state; the worker allocates one per cluster of its snapshot. */
/* Weighted round robin over healthy hosts (all hosts when none is healthy: Envoy's panic
 * mode), skipping excluded hosts while another is available. */
pt_host_t *pt_lb_round_robin(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                             unsigned nexclude);

/* Envoy's LEAST_REQUEST. With equal weights: choice_count hosts drawn at random, the one
 * with the fewest active requests wins (P2C with the default 2). With unequal weights: a
 * random draw where each host counts weight / (active requests + 1), Envoy's default
 * active_request_bias of 1. Active requests are the host's rq_active, shared by all
 * workers (HTTP requests in flight; for tcp_proxy, its open sessions). */
pt_host_t *pt_lb_least_request(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                               unsigned nexclude);

/* Envoy's RANDOM: a uniformly random available host (endpoint weights are not used). */
pt_host_t *pt_lb_random(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                        unsigned nexclude);

#endif
