/* Priorities and localities of a cluster version, as Envoy computes them (its "priority set"
 * and the load balancer base over it).
 *
 * The main thread computes a pt_lb_set_t whenever a version is prepared and whenever the
 * health of its hosts changes (active health checking, outlier detection; EDS health_status
 * is the version's own): for each priority its healthy, degraded and excluded hosts, its
 * health and degraded availability (percent of available hosts x the overprovisioning
 * factor, capped at 100), the priority load with spill-over to the next priorities (healthy
 * first, then degraded, normalized when the total availability is below 100), panic per
 * priority (healthy_panic_threshold) and total panic (load by host count), and per locality
 * the hosts of each kind with their effective weights (locality weight x availability). The
 * set is immutable once published (pt_lb_publish); a worker's pick reads it without a lock
 * and without looking at every host: the priority comes from a 100-entry table, the
 * locality from a per-worker scheduler, the host from the policy's per-worker state over
 * the chosen host subset (discovery/lb.h).
 *
 * Publication: the main thread swaps the version's set pointer and waits until no thread is
 * in the few instructions between reading that pointer and taking a reference (a hazard
 * slot per thread), then drops its own reference. A worker holds a reference to the set its
 * state was built from until it sees a newer one. */
#ifndef PT_PRIORITY_SET_H
#define PT_PRIORITY_SET_H

#include <stdatomic.h>
#include <stdint.h>

#include "proxy/cluster.h"

#define PT_LB_MAX_PRIORITY 128

/* Which hosts of a priority a pick is made among (Envoy's HostsSource types). */
typedef enum pt_lb_kind {
    PT_LB_HEALTHY,
    PT_LB_DEGRADED,
    PT_LB_ALL, /* panic: health is disregarded */
} pt_lb_kind_t;

/* A run of members of equal weight in a weighted subset (its members are ordered by
 * weight, heaviest first, within each locality): weighted round robin schedules the runs by
 * EDF (a run weighs its length x its weight) and goes round within a run, so a pick costs
 * O(log runs), not O(log hosts): a few distinct weights make a few runs however many hosts. */
typedef struct pt_lb_run {
    uint32_t start, len; /* members start - run_base .. + len of the subset */
    uint64_t step;       /* its EDF step */
} pt_lb_run_t;

/* A host subset picks are made within: positions in the version's hosts. */
typedef struct pt_lb_hosts {
    const uint32_t *idx;
    /* Weighted subsets (NULL when every member has the same weight): the runs, for
     * ROUND_ROBIN. Weighted LEAST_REQUEST's EDF step of a member is PT_LB_STEP_UNIT x wmax /
     * its weight. */
    const pt_lb_run_t *runs;
    uint32_t nruns, run_base;
    uint32_t n;
    uint32_t wmax;  /* the largest weight of its members */
    uint32_t slot;  /* its per-worker scheduler (pt_lb_local_t.sched) */
    uint8_t kind;   /* pt_lb_kind_t */
} pt_lb_hosts_t;

#define PT_LB_STEP_UNIT (1ull << 20)

/* The localities of one kind of a priority. */
typedef struct pt_lb_localities {
    pt_lb_hosts_t *sets;  /* per locality: the kind's hosts there (n 0 when none) */
    /* locality_weighted_lb_config: each locality's effective weight, and its EDF step;
     * NULL when no locality has a positive effective weight (the whole kind is used). */
    const double *weight;
    const uint64_t *step;
    uint32_t slot;        /* its per-worker locality scheduler (pt_lb_local_t.loc_sched) */
} pt_lb_localities_t;

typedef struct pt_lb_priority {
    pt_lb_hosts_t hosts[3];       /* by pt_lb_kind_t */
    /* Healthy and degraded, per locality (with one locality: the kinds themselves). */
    pt_lb_localities_t loc[2];
    const uint16_t *locality;     /* per locality of this priority: the version's index */
    uint32_t nloc;
    int32_t local_loc;            /* which of them is the node's locality, -1 none */
    uint32_t nhosts, nexcluded, nhealthy, ndegraded;
    uint32_t health, degraded;    /* availability, 0..100 */
    uint8_t panic;
} pt_lb_priority_t;

typedef struct pt_lb_set {
    _Atomic long refs;
    uint64_t gen;                 /* unique per set ever made */
    uint32_t npriorities;
    pt_lb_priority_t *prio;
    uint32_t *healthy_load, *degraded_load; /* percent per priority, 100 in all */
    /* The priority load as a table: a draw d in [0, 100) picks choice[d], the priority
     * times 2 plus 1 when it is degraded hosts (Envoy's choosePriority, O(1)); NULL when one
     * entry takes all (single). */
    const uint16_t *choice;
    uint32_t normalized_total;    /* min(100, sum of availabilities) */
    uint8_t total_panic;
    uint8_t zone_routing;         /* zone aware routing may apply (priority 0 localities) */
    /* Every pick goes to this subset (one priority takes all the load, no locality choice):
     * the pick skips the choice altogether. NULL otherwise. */
    const pt_lb_hosts_t *fast;
    /* One priority and kind takes all the load (choice[] is uniform): its entry, else -1
     * (a draw is needed). */
    int32_t single;
    uint32_t nslots, nloc_slots;
    uint32_t healthy_total, degraded_total, excluded_total; /* membership gauges */
} pt_lb_set_t;

/* ---- Envoy's arithmetic, for the set and for tests -------------------------------- */

/* What a priority counts (hosts includes excluded ones). */
typedef struct pt_lb_prio_counts {
    uint32_t hosts, excluded, healthy, degraded;
    uint64_t weight, excluded_weight, healthy_weight, degraded_weight;
} pt_lb_prio_counts_t;

typedef struct pt_lb_loads {
    uint32_t health[PT_LB_MAX_PRIORITY + 1], degraded[PT_LB_MAX_PRIORITY + 1];
    uint32_t healthy_load[PT_LB_MAX_PRIORITY + 1], degraded_load[PT_LB_MAX_PRIORITY + 1];
    uint8_t panic[PT_LB_MAX_PRIORITY + 1];
    uint32_t normalized_total;
    int total_panic;
} pt_lb_loads_t;

/* Envoy's recalculatePerPriorityState and recalculatePerPriorityPanic: availabilities,
 * loads and panic of n priorities. panic_threshold in percent (0: never panic). */
void pt_lb_compute_loads(const pt_lb_prio_counts_t *p, unsigned n, uint32_t overprovisioning,
                         int weighted_priority_health, uint32_t panic_threshold,
                         pt_lb_loads_t *out);
/* Envoy's effectiveLocalityWeight: weight x min(1, overprovisioning/100 x eligible /
 * (hosts - excluded)); 0 when the locality has no host left. */
double pt_lb_locality_weight(uint32_t weight, uint32_t eligible, uint32_t hosts,
                             uint32_t excluded, uint32_t overprovisioning);
/* Envoy's isHostSetInPanic. */
int pt_lb_in_panic(uint32_t hosts, uint32_t excluded, uint32_t healthy, uint32_t degraded,
                   uint32_t panic_threshold);

/* ---- zone aware routing (Envoy's ZoneAwareLoadBalancerBase) ---------------------- */

typedef enum pt_lb_zone_state {
    PT_ZONE_NONE,     /* NoLocalityRouting */
    PT_ZONE_DIRECT,   /* LocalityDirect: every pick to the local locality */
    PT_ZONE_RESIDUAL, /* LocalityResidual */
} pt_lb_zone_state_t;

typedef struct pt_lb_zone {
    pt_lb_zone_state_t state;
    int local_panic;              /* the local cluster's priority 0 is in panic */
    uint32_t local_percent;       /* of 10000: picks that stay local (residual state) */
    uint32_t nloc;
    uint64_t *residual;           /* cumulative residual capacity per locality (nloc) */
    /* Why it is NONE, for the stats: 1 too few local hosts, 2 cluster too small. */
    int why;
} pt_lb_zone_t;

/* Envoy's regenerateLocalityRoutingStructures for priority 0 of `up` (this cluster's set)
 * given `local` (the local cluster's set; NULL: none). z->residual is reallocated as
 * needed (freed by the caller). 0, or -1 out of memory. */
int pt_lb_zone_compute(const pt_cluster_t *c, const pt_lb_set_t *up, const pt_cluster_t *lc,
                       const pt_lb_set_t *local, pt_lb_zone_t *z);

/* ---- building and publishing (main thread) ------------------------------------------- */

/* The local cluster (cluster_manager.local_cluster_name; NULL or "" none) and the node's
 * locality (bootstrap node.locality), copied. Set at start, before clusters are prepared. */
int pt_lb_set_local(const char *local_cluster_name, const pt_locality_t *node_locality);
const char *pt_lb_local_cluster_name(void);

/* Computes c's set from its hosts and their health now and publishes it. The first call
 * (pt_cluster_prepare) also makes the per-thread slots. 0, or -1 out of memory (the set in
 * force stays). */
int pt_lb_publish(pt_cluster_t *c);
/* Releases c's set and per-thread states (the last reference to c is gone). */
void pt_lb_release(pt_cluster_t *c);

/* A reference to the set published for c now (any thread), NULL when none; `slot` is the
 * calling thread's (pt_lb_thread_slot). */
pt_lb_set_t *pt_lb_set_acquire(pt_cluster_t *c, unsigned slot);
void pt_lb_set_unref(pt_lb_set_t *s);
/* The calling thread's slot among the per-thread states of every cluster: the worker's id,
 * or one shared by every other thread (the main thread, tests). */
unsigned pt_lb_thread_slot(const pt_worker_t *w);
unsigned pt_lb_thread_slots(void);

#endif
