#include "discovery/priority_set.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/lb.h"
#include "proxy/worker.h"

/* ---- Envoy's arithmetic ------------------------------------------------------------ */

int pt_lb_in_panic(uint32_t hosts, uint32_t excluded, uint32_t healthy, uint32_t degraded,
                   uint32_t panic_threshold)
{
    uint32_t count = hosts - excluded;
    double healthy_percent = count == 0 ? 0.0 : 100.0 * healthy / count;
    double degraded_percent = count == 0 ? 0.0 : 100.0 * degraded / count;
    return healthy_percent + degraded_percent < (double)panic_threshold;
}

/* Envoy's distributeLoad: as much of total as each priority's availability takes, in
 * order. Returns what is left; *first the first priority with any availability (-1). */
static uint32_t distribute(uint32_t *load, const uint32_t *avail, unsigned n, uint32_t total,
                           uint32_t normalized, int *first)
{
    *first = -1;
    for (unsigned i = 0; i < n; i++) {
        if (*first < 0 && avail[i] > 0)
            *first = (int)i;
        uint32_t want = avail[i] * 100 / normalized;
        load[i] = want < total ? want : total;
        total -= load[i];
    }
    return total;
}

void pt_lb_compute_loads(const pt_lb_prio_counts_t *p, unsigned n, uint32_t overprovisioning,
                         int weighted_priority_health, uint32_t panic_threshold,
                         pt_lb_loads_t *out)
{
    memset(out, 0, sizeof(*out));
    if (n > PT_LB_MAX_PRIORITY + 1)
        n = PT_LB_MAX_PRIORITY + 1;
    uint32_t sum = 0;
    for (unsigned i = 0; i < n; i++) {
        uint32_t count = p[i].hosts - p[i].excluded;
        if (count == 0)
            continue;
        uint64_t hw, dw, tw;
        if (weighted_priority_health) {
            hw = p[i].healthy_weight;
            dw = p[i].degraded_weight;
            tw = p[i].weight - p[i].excluded_weight;
        } else {
            hw = p[i].healthy;
            dw = p[i].degraded;
            tw = count;
        }
        if (tw == 0)
            continue;
        /* The health of a level: its available share x the overprovisioning factor, in
         * integer percent, capped at 100. */
        uint64_t h = (uint64_t)overprovisioning * hw / tw, d = (uint64_t)overprovisioning * dw / tw;
        out->health[i] = h < 100 ? (uint32_t)h : 100;
        out->degraded[i] = d < 100 ? (uint32_t)d : 100;
        sum += out->health[i] + out->degraded[i];
    }
    out->normalized_total = sum < 100 ? sum : 100;
    if (out->normalized_total > 0) {
        /* Healthy hosts first, then what is left to degraded ones; rounding leftovers go to
         * the first priority with healthy hosts, else with degraded ones. */
        int first_healthy, first_degraded;
        uint32_t left = distribute(out->healthy_load, out->health, n, 100,
                                   out->normalized_total, &first_healthy);
        left = distribute(out->degraded_load, out->degraded, n, left, out->normalized_total,
                          &first_degraded);
        if (left != 0) {
            if (first_healthy >= 0)
                out->healthy_load[first_healthy] += left;
            else if (first_degraded >= 0)
                out->degraded_load[first_degraded] += left;
        }
    }
    /* Panic: no hosts to route to with the threshold 0 sends the load to P=0 (which has no
     * host to pick: 503). Otherwise a level is in panic when below the threshold, unless
     * the levels together are fully available. */
    if (panic_threshold == 0 && out->normalized_total == 0) {
        out->healthy_load[0] = 100;
        return;
    }
    int total_panic = n > 0;
    for (unsigned i = 0; i < n; i++) {
        out->panic[i] = out->normalized_total == 100
                            ? 0
                            : (uint8_t)pt_lb_in_panic(p[i].hosts, p[i].excluded, p[i].healthy,
                                                      p[i].degraded, panic_threshold);
        total_panic = total_panic && out->panic[i];
    }
    out->total_panic = total_panic;
    if (!total_panic)
        return;
    /* Every level in panic: each gets load by its share of all hosts, whatever their
     * health (Envoy's recalculateLoadInTotalPanic). */
    uint64_t all = 0;
    for (unsigned i = 0; i < n; i++)
        all += p[i].hosts;
    memset(out->healthy_load, 0, sizeof(out->healthy_load));
    memset(out->degraded_load, 0, sizeof(out->degraded_load));
    if (all == 0) {
        out->healthy_load[0] = 100;
        return;
    }
    uint32_t left = 100;
    int first = -1;
    for (unsigned i = 0; i < n; i++) {
        if (first < 0 && p[i].hosts > 0)
            first = (int)i;
        out->healthy_load[i] = (uint32_t)(100 * (uint64_t)p[i].hosts / all);
        left -= out->healthy_load[i];
    }
    out->healthy_load[first] += left;
}

double pt_lb_locality_weight(uint32_t weight, uint32_t eligible, uint32_t hosts,
                             uint32_t excluded, uint32_t overprovisioning)
{
    uint32_t count = hosts - excluded;
    if (count == 0)
        return 0.0;
    double ratio = (double)overprovisioning / 100.0 * ((double)eligible / (double)count);
    return (double)weight * (ratio < 1.0 ? ratio : 1.0);
}

/* ---- the local cluster and the node's locality ----------------------------------- */

static char *local_cluster;
static pt_locality_t node_locality;
static char *node_strings[3];

int pt_lb_set_local(const char *name, const pt_locality_t *loc)
{
    free(local_cluster);
    local_cluster = NULL;
    for (int i = 0; i < 3; i++) {
        free(node_strings[i]);
        node_strings[i] = NULL;
    }
    memset(&node_locality, 0, sizeof(node_locality));
    if (name != NULL && name[0] && (local_cluster = strdup(name)) == NULL)
        return -1;
    if (loc != NULL) {
        const char *f[3] = {loc->region, loc->zone, loc->sub_zone};
        for (int i = 0; i < 3; i++)
            if ((node_strings[i] = strdup(f[i] != NULL ? f[i] : "")) == NULL)
                return -1;
        node_locality.region = node_strings[0];
        node_locality.zone = node_strings[1];
        node_locality.sub_zone = node_strings[2];
    }
    return 0;
}

const char *pt_lb_local_cluster_name(void)
{
    return local_cluster;
}

/* ---- hazard slots ------------------------------------------------------------------ */

/* One per thread slot, a cache line each: the set a thread is taking a reference to. */
typedef struct hazard {
    _Atomic(pt_lb_set_t *) p;
    char pad[64 - sizeof(void *)];
} hazard_t;

static hazard_t *hazards;
static unsigned nhazards;

unsigned pt_lb_thread_slots(void)
{
    return pt_worker_count() + 1;
}

unsigned pt_lb_thread_slot(const pt_worker_t *w)
{
    unsigned n = pt_worker_count();
    return w != NULL && w->id >= 0 && (unsigned)w->id < n ? (unsigned)w->id : n;
}

static int hazards_init(void)
{
    if (hazards != NULL)
        return 0;
    unsigned n = pt_lb_thread_slots();
    hazard_t *h = aligned_alloc(64, n * sizeof(*h));
    if (h == NULL)
        return -1;
    for (unsigned i = 0; i < n; i++)
        atomic_init(&h[i].p, NULL);
    nhazards = n;
    hazards = h;
    return 0;
}

pt_lb_set_t *pt_lb_set_acquire(pt_cluster_t *c, unsigned slot)
{
    pt_lb_set_t *s = atomic_load_explicit(&c->lb_set, memory_order_acquire);
    if (s == NULL)
        return NULL;
    _Atomic(pt_lb_set_t *) *hp = &hazards[slot < nhazards ? slot : nhazards - 1].p;
    for (;;) {
        atomic_store_explicit(hp, s, memory_order_seq_cst);
        pt_lb_set_t *again = atomic_load_explicit(&c->lb_set, memory_order_seq_cst);
        if (again == s) {
            atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
            atomic_store_explicit(hp, NULL, memory_order_release);
            return s;
        }
        s = again;
        if (s == NULL) {
            atomic_store_explicit(hp, NULL, memory_order_release);
            return NULL;
        }
    }
}

void pt_lb_set_unref(pt_lb_set_t *s)
{
    if (s != NULL && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        free(s);
}

/* ---- building a set ---------------------------------------------------------------- */

/* What a host is to the balancer, from its health bits and the version's EDS status. */
enum { H_HEALTHY = 1, H_DEGRADED = 2, H_EXCLUDED = 4 };

static unsigned host_class(const pt_cluster_t *c, unsigned i)
{
    uint32_t bits = atomic_load_explicit(&c->hosts[i]->health, memory_order_relaxed);
    unsigned eds = pt_cluster_host_info(c, i)->eds_health;
    if (eds == PT_EDS_DRAINING)
        return H_EXCLUDED;
    if ((bits & PT_HOST_FAILED_MASK) || eds == PT_EDS_UNHEALTHY || eds == PT_EDS_TIMEOUT)
        return 0;
    return eds == PT_EDS_DEGRADED || (bits & PT_HOST_DEGRADED_ACTIVE_HC) ? H_DEGRADED
                                                                         : H_HEALTHY;
}

static inline uint32_t weight_of(const pt_cluster_t *c, uint32_t i)
{
    uint32_t w = pt_cluster_host_info(c, i)->weight;
    return w ? w : 1;
}

/* A set is one allocation, carved in 8-byte pieces; its size is counted by the same calls
 * with a NULL base (count mode) before it is made. */
typedef struct bump {
    char *base;
    size_t used;
} bump_t;

static void *take(bump_t *b, size_t size)
{
    void *p = b->base != NULL ? b->base + b->used : NULL;
    b->used += (size + 7) & ~(size_t)7;
    return p;
}

/* 0, 1, 2, ... n-1, shared by every set whose subset is all the hosts in their order (one
 * priority, one locality, equal weights: most clusters), so that such a set costs nothing
 * per host. Arrays by power of two, made by the main thread and kept for the process's
 * life (a set that points into one may outlive any cluster). */
static uint32_t *identity_arrays[33];

static const uint32_t *identity(uint32_t n)
{
    unsigned k = 0;
    while (k < 32 && (1ull << k) < n)
        k++;
    if (identity_arrays[k] == NULL) {
        uint64_t len = 1ull << k;
        uint32_t *a = malloc(len * sizeof(uint32_t));
        if (a == NULL)
            return NULL;
        for (uint64_t i = 0; i < len; i++)
            a[i] = (uint32_t)i;
        identity_arrays[k] = a;
    }
    return identity_arrays[k];
}

/* Per priority while building. */
typedef struct prio_build {
    uint32_t nloc;
    uint32_t wmin[3], wmax[3]; /* by kind */
} prio_build_t;

static int same_as_node(const pt_locality_t *l)
{
    return local_cluster != NULL && pt_locality_equal(l, &node_locality);
}

/* The runs of equal weight of a kind (its members in `k`), breaking at each of its locality
 * slices (so that a slice's runs are a part of the kind's); each slice's first run and count
 * go to first[] and count[]. Steps: the unit at the heaviest run. Returns the number of
 * runs. */
static uint32_t fill_runs(pt_lb_run_t *runs, const pt_lb_hosts_t *k, const pt_lb_hosts_t *slices,
                          uint32_t nslices, const pt_cluster_t *c, uint32_t *first,
                          uint32_t *count)
{
    uint32_t nr = 0;
    double max = 0.0;
    for (uint32_t q = 0; q < nslices; q++) {
        uint32_t off = (uint32_t)(slices[q].idx - k->idx);
        first[q] = nr;
        for (uint32_t m = off; m < off + slices[q].n; m++) {
            uint32_t w = weight_of(c, k->idx[m]);
            if (m == off || w != weight_of(c, k->idx[m - 1]))
                runs[nr++] = (pt_lb_run_t){.start = m, .len = 0, .step = w};
            runs[nr - 1].len++;
        }
        count[q] = nr - first[q];
    }
    for (uint32_t r = 0; r < nr; r++) {
        double rw = (double)runs[r].len * (double)runs[r].step;
        if (rw > max)
            max = rw;
    }
    for (uint32_t r = 0; r < nr; r++) {
        double rw = (double)runs[r].len * (double)runs[r].step;
        double st = (double)PT_LB_STEP_UNIT * max / rw;
        runs[r].step = st >= (double)(1ull << 61) ? (1ull << 61) : (uint64_t)st;
    }
    return nr;
}

/* Hosts of a locality by weight, heaviest first, in the assignment's order otherwise (so
 * that equal weights keep round robin's order). */
static const pt_cluster_t *sort_cluster;

static int by_weight(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint32_t wx = weight_of(sort_cluster, x), wy = weight_of(sort_cluster, y);
    if (wx != wy)
        return wx > wy ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void locality_weights(pt_lb_localities_t *L, const pt_lb_hosts_t *all_loc,
                             const uint32_t *excl_loc, const pt_cluster_t *c, bump_t *b,
                             uint32_t nloc, uint32_t *nloc_slots)
{
    double *w = take(b, nloc * sizeof(double));
    uint64_t *step = take(b, nloc * sizeof(uint64_t));
    if (b->base == NULL)
        return;
    double max = 0.0;
    uint32_t eligible_total = 0;
    for (uint32_t j = 0; j < nloc; j++) {
        eligible_total += L->sets[j].n;
        uint32_t lw = all_loc[j].n > 0 ? pt_cluster_host_info(c, all_loc[j].idx[0])->locality_weight
                                       : 0;
        w[j] = pt_lb_locality_weight(lw, L->sets[j].n, all_loc[j].n, excl_loc[j],
                                     c->cla_policy.overprovisioning_factor);
        if (w[j] > max)
            max = w[j];
    }
    /* No eligible host, or no locality with weight: no locality scheduling (Envoy). */
    if (eligible_total == 0 || max <= 0.0)
        return;
    for (uint32_t j = 0; j < nloc; j++)
        step[j] = w[j] > 0.0 ? (uint64_t)((double)PT_LB_STEP_UNIT * max / w[j]) : 0;
    L->weight = w;
    L->step = step;
    L->slot = (*nloc_slots)++;
}

/* What build computes before laying the set out. */
typedef struct build_in {
    const pt_cluster_t *c;
    unsigned npr, nl;
    const uint8_t *cls;
    const uint32_t *keyc;   /* end of each (priority, locality) key's hosts in order[] */
    uint32_t *order;        /* hosts by priority, locality (and weight when unequal) */
    const pt_lb_prio_counts_t *counts;
    const prio_build_t *pb;
    const pt_lb_loads_t *loads;
    const uint16_t *choice; /* the 100-entry table */
    int single;
    uint32_t *excl, *run_first, *run_count, maxloc;
    pt_lb_hosts_t *all_loc; /* scratch: the "all" slices of one priority */
} build_in_t;

/* Lays the set out in b: counts its size when b->base is NULL, fills it otherwise. */
static pt_lb_set_t *lay_out(const build_in_t *in, bump_t *b)
{
    const pt_cluster_t *c = in->c;
    unsigned npr = in->npr, nl = in->nl;
    int fill = b->base != NULL;
    pt_lb_set_t *s = take(b, sizeof(pt_lb_set_t));
    pt_lb_priority_t *prio = take(b, npr * sizeof(pt_lb_priority_t));
    uint32_t *hl_load = take(b, npr * sizeof(uint32_t));
    uint32_t *dg_load = take(b, npr * sizeof(uint32_t));
    uint16_t *choice = in->single >= 0 ? NULL : take(b, 100 * sizeof(uint16_t));
    if (fill) {
        memset(s, 0, sizeof(*s));
        memset(prio, 0, npr * sizeof(*prio));
        atomic_init(&s->refs, 1);
        s->npriorities = npr;
        s->prio = prio;
        s->healthy_load = hl_load;
        s->degraded_load = dg_load;
        s->normalized_total = in->loads->normalized_total;
        s->total_panic = (uint8_t)in->loads->total_panic;
        s->single = in->single;
        s->choice = choice;
        if (choice != NULL)
            memcpy(choice, in->choice, 100 * sizeof(uint16_t));
    }
    uint32_t slots = 0, loc_slots = 0;
    for (unsigned p = 0; p < npr; p++) {
        const pt_lb_prio_counts_t *pc = &in->counts[p];
        const prio_build_t *pb = &in->pb[p];
        uint32_t nloc = pb->nloc;
        int unequal = pb->wmin[PT_LB_ALL] != pb->wmax[PT_LB_ALL];
        int shared = pc->healthy == pc->hosts;
        /* All the cluster's hosts in their order: the shared identity array. */
        int ident = npr == 1 && nloc == 1 && !unequal;
        /* With one locality its slices are the kinds themselves (no memory of their own). */
        pt_lb_hosts_t one[2];
        uint16_t *locs = take(b, nloc * sizeof(uint16_t));
        pt_lb_hosts_t *hl = nloc == 1 ? &one[0] : take(b, nloc * sizeof(pt_lb_hosts_t));
        pt_lb_hosts_t *dl = nloc == 1 ? &one[1] : take(b, nloc * sizeof(pt_lb_hosts_t));
        uint32_t *all = ident ? NULL : take(b, pc->hosts * sizeof(uint32_t));
        uint32_t *hy = shared ? all : take(b, pc->healthy * sizeof(uint32_t));
        uint32_t *dg = take(b, pc->degraded * sizeof(uint32_t));
        pt_lb_run_t *runs[3] = {NULL, NULL, NULL};
        uint32_t kind_n[3] = {pc->healthy, pc->degraded, pc->hosts};
        for (int t = 0; t < 3; t++) {
            if (kind_n[t] < 2 || pb->wmin[t] == pb->wmax[t] || (t == PT_LB_HEALTHY && shared))
                continue;
            runs[t] = take(b, kind_n[t] * sizeof(pt_lb_run_t));
        }
        if (c->locality_lb == PT_LOCALITY_WEIGHTED && !fill) {
            take(b, 2 * nloc * sizeof(double));
            take(b, 2 * nloc * sizeof(uint64_t));
        }
        if (!fill)
            continue;
        pt_lb_priority_t *pr = &prio[p];
        hl_load[p] = in->loads->healthy_load[p];
        dg_load[p] = in->loads->degraded_load[p];
        pr->health = in->loads->health[p];
        pr->degraded = in->loads->degraded[p];
        pr->panic = in->loads->panic[p];
        pr->nhosts = pc->hosts;
        pr->nexcluded = pc->excluded;
        pr->nhealthy = pc->healthy;
        pr->ndegraded = pc->degraded;
        s->healthy_total += pc->healthy;
        s->degraded_total += pc->degraded;
        s->excluded_total += pc->excluded;
        pr->nloc = nloc;
        pr->local_loc = -1;
        pr->locality = locs;
        if (ident) {
            if ((all = (uint32_t *)identity(pc->hosts)) == NULL)
                return NULL;
            if (shared)
                hy = all;
        }
        uint32_t na = 0, nh = 0, nd = 0, j = 0;
        pt_lb_hosts_t *all_loc = in->all_loc;
        for (uint32_t l = 0; l < nl; l++) {
            size_t key = (size_t)p * nl + l;
            uint32_t from = key == 0 ? 0 : in->keyc[key - 1], to = in->keyc[key];
            if (from == to)
                continue;
            locs[j] = (uint16_t)l;
            if (l < c->nlocalities && same_as_node(&c->localities[l]))
                pr->local_loc = (int32_t)j;
            uint32_t a0 = na, h0 = nh, d0 = nd;
            in->excl[j] = 0;
            if (unequal) {
                sort_cluster = c;
                qsort(in->order + from, to - from, sizeof(uint32_t), by_weight);
            }
            for (uint32_t k = from; k < to; k++) {
                uint32_t i = in->order[k];
                if (!ident)
                    all[na] = i;
                na++;
                if (in->cls[i] & H_HEALTHY) {
                    if (!shared)
                        hy[nh] = i;
                    nh++;
                } else if (in->cls[i] & H_DEGRADED) {
                    dg[nd++] = i;
                } else if (in->cls[i] & H_EXCLUDED) {
                    in->excl[j]++;
                }
            }
            all_loc[j] = (pt_lb_hosts_t){.idx = all + a0, .n = na - a0, .kind = PT_LB_ALL};
            hl[j] = (pt_lb_hosts_t){.idx = hy + h0, .n = nh - h0, .kind = PT_LB_HEALTHY};
            dl[j] = (pt_lb_hosts_t){.idx = dg + d0, .n = nd - d0, .kind = PT_LB_DEGRADED};
            j++;
        }
        pr->hosts[PT_LB_HEALTHY] = (pt_lb_hosts_t){.idx = hy, .n = nh, .kind = PT_LB_HEALTHY};
        pr->hosts[PT_LB_DEGRADED] = (pt_lb_hosts_t){.idx = dg, .n = nd, .kind = PT_LB_DEGRADED};
        pr->hosts[PT_LB_ALL] = (pt_lb_hosts_t){.idx = all, .n = na, .kind = PT_LB_ALL};
        for (int t = 0; t < 3; t++)
            pr->hosts[t].wmax = pb->wmax[t] != 0 ? pb->wmax[t] : 1;
        if (nloc == 1) { /* the slices are the kinds */
            hl = &pr->hosts[PT_LB_HEALTHY];
            dl = &pr->hosts[PT_LB_DEGRADED];
        }
        /* Weighted kinds: EDF steps and runs, shared by the kind and its locality slices
         * (and by healthy and all when every host is healthy: the same hosts in the same
         * order). A slice of a single run has equal weights: neither. */
        static const int kinds_order[3] = {PT_LB_ALL, PT_LB_HEALTHY, PT_LB_DEGRADED};
        pt_lb_hosts_t *slices_of[3] = {hl, dl, all_loc};
        for (int q = 0; q < 3; q++) {
            int t = kinds_order[q];
            pt_lb_hosts_t *k = &pr->hosts[t];
            if (k->n < 2 || pb->wmin[t] == pb->wmax[t])
                continue;
            if (t == PT_LB_HEALTHY && shared) {
                k->runs = pr->hosts[PT_LB_ALL].runs;
                k->nruns = pr->hosts[PT_LB_ALL].nruns;
                /* the same slices as all's: their runs again, into the same array */
                fill_runs((pt_lb_run_t *)k->runs, k, slices_of[t], nloc, c, in->run_first,
                          in->run_count);
            } else {
                k->runs = runs[t];
                k->nruns = fill_runs(runs[t], k, slices_of[t], nloc, c, in->run_first,
                                     in->run_count);
            }
            if (t == PT_LB_ALL || nloc == 1)
                continue;
            for (uint32_t sl = 0; sl < nloc; sl++) {
                pt_lb_hosts_t *h = &slices_of[t][sl];
                if (in->run_count[sl] < 2)
                    continue;
                uint32_t off = (uint32_t)(h->idx - k->idx);
                h->runs = k->runs + in->run_first[sl];
                h->nruns = in->run_count[sl];
                h->run_base = off;
                h->wmax = k->wmax;
            }
        }
        for (int t = 0; t < 3; t++)
            pr->hosts[t].slot = slots++;
        for (uint32_t q = 0; q < nloc && nloc > 1; q++) {
            hl[q].wmax = pr->hosts[PT_LB_HEALTHY].wmax;
            dl[q].wmax = pr->hosts[PT_LB_DEGRADED].wmax;
            hl[q].slot = slots++;
            dl[q].slot = slots++;
        }
        pr->loc[0].sets = hl;
        pr->loc[1].sets = dl;
        if (c->locality_lb == PT_LOCALITY_WEIGHTED)
            for (int t = 0; t < 2; t++)
                locality_weights(&pr->loc[t], all_loc, in->excl, c, b, nloc, &loc_slots);
    }
    if (!fill)
        return NULL;
    s->nslots = slots;
    s->nloc_slots = loc_slots;
    s->zone_routing = c->locality_lb == PT_LOCALITY_ZONE_AWARE && local_cluster != NULL &&
                      prio[0].nloc >= 2;
    /* One subset takes every pick: no choice to make. */
    if (in->single >= 0) {
        unsigned p = (unsigned)in->single >> 1, kind = (unsigned)in->single & 1;
        const pt_lb_priority_t *pr = &prio[p];
        if (pr->panic)
            s->fast = c->fail_traffic_on_panic ? NULL : &pr->hosts[PT_LB_ALL];
        else if (pr->loc[kind].weight == NULL && !(s->zone_routing && p == 0))
            s->fast = &pr->hosts[kind];
    }
    return s;
}

static pt_lb_set_t *build(const pt_cluster_t *c)
{
    unsigned n = c->nhosts;
    unsigned npr = 1, nl = c->nlocalities ? c->nlocalities : 1;
    for (unsigned i = 0; i < n; i++)
        if (pt_cluster_host_info(c, i)->priority + 1u > npr)
            npr = pt_cluster_host_info(c, i)->priority + 1u;
    size_t nkeys = (size_t)npr * nl;
    build_in_t in = {.c = c, .npr = npr, .nl = nl};
    uint8_t *cls = malloc(n ? n : 1);
    uint32_t *keyc = calloc(nkeys + 1, sizeof(uint32_t));
    uint32_t *order = malloc((n ? n : 1) * sizeof(uint32_t));
    pt_lb_prio_counts_t *counts = calloc(npr, sizeof(*counts));
    prio_build_t *pb = calloc(npr, sizeof(*pb));
    pt_lb_loads_t *loads = malloc(sizeof(*loads));
    uint16_t choice[100];
    pt_lb_set_t *s = NULL;
    if (cls == NULL || keyc == NULL || order == NULL || counts == NULL || pb == NULL ||
        loads == NULL)
        goto out;
    for (unsigned p = 0; p < npr; p++)
        for (int k = 0; k < 3; k++)
            pb[p].wmin[k] = UINT32_MAX;
    for (unsigned i = 0; i < n; i++) {
        const pt_host_info_t *hi = pt_cluster_host_info(c, i);
        unsigned p = hi->priority, k = host_class(c, i);
        cls[i] = (uint8_t)k;
        pt_lb_prio_counts_t *pc = &counts[p];
        uint32_t w = weight_of(c, i);
        pc->hosts++;
        pc->weight += w;
        if (k & H_EXCLUDED) {
            pc->excluded++;
            pc->excluded_weight += w;
        } else if (k & H_HEALTHY) {
            pc->healthy++;
            pc->healthy_weight += w;
        } else if (k & H_DEGRADED) {
            pc->degraded++;
            pc->degraded_weight += w;
        }
        int kinds[3] = {(k & H_HEALTHY) != 0, (k & H_DEGRADED) != 0, 1};
        for (int t = 0; t < 3; t++) {
            if (!kinds[t])
                continue;
            if (w < pb[p].wmin[t])
                pb[p].wmin[t] = w;
            if (w > pb[p].wmax[t])
                pb[p].wmax[t] = w;
        }
        keyc[(size_t)p * nl + hi->locality]++;
    }
    /* Hosts by priority, then locality (a stable counting sort). */
    uint32_t sum = 0, maxloc = 0;
    for (size_t k = 0; k < nkeys; k++) {
        uint32_t cnt = keyc[k];
        keyc[k] = sum;
        sum += cnt;
        if (cnt > 0)
            pb[k / nl].nloc++;
    }
    keyc[nkeys] = sum;
    for (unsigned i = 0; i < n; i++) {
        const pt_host_info_t *hi = pt_cluster_host_info(c, i);
        order[keyc[(size_t)hi->priority * nl + hi->locality]++] = i;
    }
    /* keyc[k] is now the end of key k (the start of k + 1). */
    for (unsigned p = 0; p < npr; p++)
        if (pb[p].nloc > maxloc)
            maxloc = pb[p].nloc;
    pt_lb_compute_loads(counts, npr, c->cla_policy.overprovisioning_factor,
                        c->cla_policy.weighted_priority_health, c->healthy_panic_threshold,
                        loads);
    /* The priority table: a draw of 1..100 against the cumulative healthy loads, then the
     * degraded ones (Envoy's choosePriority). */
    for (unsigned d = 0; d < 100; d++) {
        uint32_t x = d + 1, acc = 0;
        uint16_t ch = 0;
        int found = 0;
        for (unsigned p = 0; p < npr && !found; p++) {
            acc += loads->healthy_load[p];
            if (x <= acc) {
                ch = (uint16_t)(p * 2);
                found = 1;
            }
        }
        for (unsigned p = 0; p < npr && !found; p++) {
            acc += loads->degraded_load[p];
            if (x <= acc) {
                ch = (uint16_t)(p * 2 + 1);
                found = 1;
            }
        }
        choice[d] = ch;
    }
    int one = 1;
    for (unsigned d = 1; d < 100; d++)
        one &= choice[d] == choice[0];
    in.cls = cls;
    in.keyc = keyc;
    in.order = order;
    in.counts = counts;
    in.pb = pb;
    in.loads = loads;
    in.choice = choice;
    in.single = one ? choice[0] : -1;
    in.maxloc = maxloc;
    in.excl = calloc(maxloc ? maxloc : 1, sizeof(uint32_t));
    in.run_first = calloc(maxloc ? maxloc : 1, sizeof(uint32_t));
    in.run_count = calloc(maxloc ? maxloc : 1, sizeof(uint32_t));
    in.all_loc = calloc(maxloc ? maxloc : 1, sizeof(pt_lb_hosts_t));
    if (in.excl == NULL || in.run_first == NULL || in.run_count == NULL || in.all_loc == NULL)
        goto out;
    bump_t count = {NULL, 0};
    lay_out(&in, &count);
    bump_t b = {malloc(count.used), 0};
    if (b.base == NULL)
        goto out;
    s = lay_out(&in, &b);
    if (s == NULL) {
        free(b.base);
        goto out;
    }
    static _Atomic uint64_t next_gen = 1;
    s->gen = atomic_fetch_add(&next_gen, 1);
out:
    free(cls);
    free(keyc);
    free(order);
    free(counts);
    free(pb);
    free(loads);
    free(in.excl);
    free(in.run_first);
    free(in.run_count);
    free(in.all_loc);
    return s;
}

int pt_lb_publish(pt_cluster_t *c)
{
    if (hazards_init() != 0)
        return -1;
    if (c->nlb_locals == 0)
        c->nlb_locals = pt_lb_thread_slots(); /* the array itself comes with the first pick */
    pt_lb_set_t *s = build(c);
    if (s == NULL)
        return -1;
    pt_lb_set_t *old = atomic_exchange_explicit(&c->lb_set, s, memory_order_seq_cst);
    if (old != NULL) {
        /* No thread may be between reading the old pointer and taking its reference. */
        for (unsigned i = 0; i < nhazards; i++)
            while (atomic_load_explicit(&hazards[i].p, memory_order_seq_cst) == old)
                sched_yield();
        pt_lb_set_unref(old);
    }
    return 0;
}

void pt_lb_release(pt_cluster_t *c)
{
    pt_lb_local_t **locals = atomic_exchange(&c->lb_locals, NULL);
    for (unsigned i = 0; locals != NULL && i < c->nlb_locals; i++)
        pt_lb_local_free(locals[i]);
    free(locals);
    pt_lb_set_unref(atomic_exchange(&c->lb_set, NULL));
}

/* ---- zone aware routing -------------------------------------------------------------- */

/* The local cluster's healthy hosts at priority 0 in this locality. */
static uint32_t local_healthy_in(const pt_cluster_t *lc, const pt_lb_priority_t *L0,
                                 const pt_locality_t *loc)
{
    for (uint32_t j = 0; j < L0->nloc; j++)
        if (pt_locality_equal(&lc->localities[L0->locality[j]], loc))
            return L0->loc[0].sets[j].n;
    return 0;
}

int pt_lb_zone_compute(const pt_cluster_t *c, const pt_lb_set_t *up, const pt_cluster_t *lc,
                       const pt_lb_set_t *local, pt_lb_zone_t *z)
{
    z->state = PT_ZONE_NONE;
    z->why = 0;
    z->local_panic = 0;
    z->local_percent = 0;
    if (up->npriorities == 0 || up->prio[0].nloc < 2)
        return 0;
    if (local == NULL || lc == NULL || local->npriorities == 0 || local->prio[0].nloc < 2)
        return 0;
    const pt_lb_priority_t *P0 = &up->prio[0], *L0 = &local->prio[0];
    /* The local cluster must have hosts in this node's locality, else its view of the
     * zones says nothing of this proxy (Envoy's lb_local_cluster_not_ok). */
    if (L0->local_loc < 0) {
        z->why = 1;
        return 0;
    }
    if (P0->nhealthy < c->zone_min_cluster_size) {
        z->why = 2;
        return 0;
    }
    z->local_panic = pt_lb_in_panic(L0->nhosts, L0->nexcluded, L0->nhealthy, L0->ndegraded,
                                    c->healthy_panic_threshold);
    uint64_t total_local = L0->nhealthy, total_up = P0->nhealthy;
    uint32_t nloc = P0->nloc;
    if (z->nloc < nloc || z->residual == NULL) {
        uint64_t *r = realloc(z->residual, nloc * sizeof(uint64_t));
        if (r == NULL)
            return -1;
        z->residual = r;
    }
    z->nloc = nloc;
    /* Percentages of 10000 per upstream locality: of the local cluster's healthy hosts,
     * and of this cluster's. */
    int32_t me = P0->local_loc;
    uint64_t local_pct_me = 0, up_pct_me = 0;
    uint64_t last = 0;
    for (uint32_t j = 0; j < nloc; j++) {
        uint32_t upn = P0->loc[0].sets[j].n;
        uint64_t lp = 0, upp = 0;
        if (upn > 0) {
            uint32_t ln = local_healthy_in(lc, L0, &c->localities[P0->locality[j]]);
            lp = total_local > 0 ? 10000ull * ln / total_local : 0;
            upp = total_up > 0 ? 10000ull * upn / total_up : 0;
        }
        if ((int32_t)j == me) {
            local_pct_me = lp;
            up_pct_me = upp;
            z->residual[j] = last; /* the local locality: what it takes is routed directly */
            continue;
        }
        if (upp > lp)
            last += upp - lp;
        z->residual[j] = last;
    }
    if (me >= 0 && up_pct_me > 0 && up_pct_me >= local_pct_me) {
        z->state = PT_ZONE_DIRECT;
        return 0;
    }
    z->state = PT_ZONE_RESIDUAL;
    z->local_percent = me >= 0 && local_pct_me > 0 ? (uint32_t)(up_pct_me * 10000 / local_pct_me)
                                                   : 0;
    return 0;
}
