/* Load balancers: pick a host of a cluster for a new upstream connection or request.
 *
 * A pick is two steps, as in Envoy: the host subset (the priority by the priority load, then
 * within it the locality: locality_weighted_lb_config's weights, or zone aware routing at
 * priority 0; in panic the priority's hosts whatever their health), then the host within
 * that subset by the cluster's policy:
 *  - ROUND_ROBIN: in turn with equal weights; otherwise Envoy's earliest-deadline-first
 *    schedule, each host coming up in proportion to its weight, smoothly interleaved;
 *  - LEAST_REQUEST: with equal weights, the least busy of choice_count random hosts (P2C);
 *    otherwise the EDF schedule with each host's weight divided by (active requests + 1)
 *    raised to active_request_bias, taken when it comes up again;
 *  - RANDOM: a uniformly random host (weights are not used, as in Envoy).
 * Everything a pick reads was computed before: the subsets by the main thread
 * (discovery/priority_set.h), the schedules by the worker itself the first time it picks in
 * a subset after it changed. A pick costs O(1) (EDF: O(log n)), never a scan of the hosts.
 *
 * Each worker keeps its own state per cluster version (pt_lb_local_t): nothing a pick
 * writes is shared with another thread. */
#ifndef PT_LB_H
#define PT_LB_H

#include "discovery/priority_set.h"
#include "proxy/cluster.h"

/* A subset's per-worker schedule. A weighted schedule (runs of a weighted round robin,
 * localities) is unrolled into one period of its EDF order when its weights are integers
 * of a short period (the wheel: a pick is a step along an array), else an EDF over its
 * entries; weighted LEAST_REQUEST has queues of its own (lrq). */
typedef struct pt_lb_sched {
    uint32_t cursor;         /* round robin with equal weights: the next member; a wheel:
                              * its next position */
    uint32_t nheap;          /* EDF entries (0: not built yet) */
    struct pt_lb_edf *heap;
    uint16_t *wheel;         /* the period: entry per position (NULL: no wheel) */
    uint32_t nwheel;
    uint32_t *run_cursor;    /* a wheel of runs: where each run's round robin is */
    struct pt_lb_lrq *lrq;   /* weighted LEAST_REQUEST (NULL: not built yet) */
} pt_lb_sched_t;

/* A worker's state for one cluster version (or the shared one of non-worker threads). */
typedef struct pt_lb_local {
    pt_lb_set_t *set;         /* a reference: what the schedules below were made for */
    pt_lb_sched_t *sched;     /* per subset (set->nslots) */
    pt_lb_sched_t *loc_sched; /* per weighted locality choice (set->nloc_slots) */
    uint32_t seed;            /* where this worker's round robins start */
    /* Zone aware routing at priority 0: computed from this set and the local cluster's as
     * the worker's view has it, again when either changes. */
    uint64_t zone_view;       /* the view's version it was computed in (0: never) */
    pt_cluster_t *zone_lc;    /* the local cluster in that view (the view holds it) */
    pt_lb_set_t *zone_local;  /* the local cluster's set it was computed from (a reference) */
    uint64_t zone_gen;        /* this cluster's set it was computed for */
    pt_lb_zone_t zone;
    /* The zone's common case applies (residual or direct, routing enabled for every pick,
     * the local cluster not in panic): a pick takes it without asking more. */
    uint8_t zone_common;
    /* Every pick is priority 0's, with zone aware routing, not in panic, no locality
     * weighting: straight to the zone's pick (set with set). */
    uint8_t zone_only;
} pt_lb_local_t;

/* Picks the host for a new upstream connection or request (pt_cluster_pick_host): NULL when
 * the cluster has no host to use. Hosts in `exclude` (already tried) are avoided while
 * another usable one is at hand. */
pt_host_t *pt_lb_pick(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                      unsigned nexclude);

/* retry_priority previous_priorities (Envoy's PreviousPrioritiesRetryPriority): the priority
 * load of c's set with the priorities in `excluded` (a bit per priority, 3 words) taken out,
 * spread over the others by their availability as Envoy spreads it, as a 100-entry choice
 * table (priority x 2, + 1 for degraded hosts). -1 when no priority is left with any
 * availability: the set's own load then applies. */
int pt_lb_retry_choice(pt_cluster_t *c, pt_worker_t *w, const uint64_t *excluded,
                       uint16_t choice[100]);
/* A pick whose priority comes from such a table (a retry's) instead of the set's. */
pt_host_t *pt_lb_pick_choice(pt_cluster_t *c, pt_worker_t *w, const uint16_t *choice,
                             pt_host_t *const *exclude, unsigned nexclude);

/* The calling thread's state for c, made or brought up to date with c's set now; NULL out of
 * memory or when c has no set (not prepared). */
pt_lb_local_t *pt_lb_local_get(pt_cluster_t *c, pt_worker_t *w);
void pt_lb_local_free(pt_lb_local_t *l);

/* The first step of a pick, apart from the pick within: the host subset (a priority, its
 * healthy, degraded or, in panic, all hosts, and under locality weighting or zone aware
 * routing one locality of them). The priority comes from a random draw, or from *hash % 100
 * when hash is not NULL (Envoy's hash balancers choose the priority by the request's hash,
 * so that the same key goes to the same priority); the locality from l's schedules. NULL when
 * nothing may be picked (panic with fail_traffic_on_panic). The subset may be empty (no
 * host: 503). A balancer of its own picks within hs->idx[0 .. hs->n) (positions in c->hosts);
 * the priority's whole subsets are l->set->prio[p].hosts[kind]. */
const pt_lb_hosts_t *pt_lb_choose_hosts(pt_cluster_t *c, pt_worker_t *w, pt_lb_local_t *l,
                                        const uint64_t *hash);

#endif
