#include "discovery/lb.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/random.h"
#include "proxy/view.h"
#include "proxy/worker.h"

/* ---- small helpers ----------------------------------------------------------------- */

/* Uniform enough in [0, n) for n < 2^32 (multiply-shift: no division). */
static inline uint32_t below(uint32_t n)
{
    return (uint32_t)(((pt_random_u64() >> 32) * (uint64_t)n) >> 32);
}

static inline uint64_t rq_active(const pt_host_t *h)
{
    return atomic_load_explicit(&h->rq_active, memory_order_relaxed);
}

/* ---- EDF schedules ------------------------------------------------------------------- */

/* An entry of a min-heap on the deadline: the member comes up at its deadline, then again
 * one step later (Envoy's EdfScheduler, in fixed point). */
typedef struct pt_lb_edf {
    uint64_t deadline;
    uint32_t member;
    uint32_t pad;
} pt_lb_edf_t;

#define EDF_REBASE (1ull << 62)
#define EDF_MAX_STEP (1ull << 61)

static void sift_down(pt_lb_edf_t *h, uint32_t n, uint32_t i)
{
    pt_lb_edf_t e = h[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h[c + 1].deadline < h[c].deadline)
            c++;
        if (h[c].deadline >= e.deadline)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

/* Entries for the members with a step (a zero step is never picked), each starting at a
 * random point of its first step so that workers do not all begin with the same host. */
static int edf_build(pt_lb_sched_t *sc, const uint64_t *step, uint32_t n)
{
    pt_lb_edf_t *h = malloc((n ? n : 1) * sizeof(*h));
    if (h == NULL)
        return -1;
    uint32_t k = 0;
    for (uint32_t m = 0; m < n; m++) {
        if (step[m] == 0)
            continue;
        h[k].member = m;
        h[k].pad = 0;
        h[k].deadline = pt_random_u64() % step[m];
        k++;
    }
    for (uint32_t i = k / 2; i-- > 0;)
        sift_down(h, k, i);
    free(sc->heap);
    sc->heap = h;
    sc->nheap = k;
    return 0;
}

/* The member whose turn it is; it comes up again `next` later (its step then). */
static inline uint32_t edf_top(const pt_lb_sched_t *sc)
{
    return sc->heap[0].member;
}

static void edf_advance(pt_lb_sched_t *sc, uint64_t next)
{
    pt_lb_edf_t *h = sc->heap;
    uint64_t now = h[0].deadline;
    if (next > EDF_MAX_STEP)
        next = EDF_MAX_STEP;
    h[0].deadline = now + next;
    sift_down(h, sc->nheap, 0);
    if (now >= EDF_REBASE) /* rare: deadlines start again from 0, in the same order */
        for (uint32_t i = 0; i < sc->nheap; i++)
            h[i].deadline -= now;
}

/* ---- per-worker state -------------------------------------------------------------- */

static void free_scheds(pt_lb_sched_t *s, uint32_t n)
{
    for (uint32_t i = 0; s != NULL && i < n; i++)
        free(s[i].heap);
    free(s);
}

void pt_lb_local_free(pt_lb_local_t *l)
{
    if (l == NULL)
        return;
    if (l->set != NULL) {
        free_scheds(l->sched, l->set->nslots);
        free_scheds(l->loc_sched, l->set->nloc_slots);
    }
    pt_lb_set_unref(l->set);
    pt_lb_set_unref(l->zone_local);
    free(l->zone.residual);
    free(l);
}

/* Brings l (made when NULL) to c's set now. */
static pt_lb_local_t *local_sync(pt_cluster_t *c, unsigned slot, pt_lb_local_t *l)
{
    if (l == NULL) {
        size_t size = (sizeof(*l) + 63) & ~(size_t)63; /* a cache line of its own */
        if ((l = aligned_alloc(64, size)) == NULL)
            return NULL;
        memset(l, 0, sizeof(*l));
        /* Workers start their round robins at different hosts: worker i at the i-th. */
        l->seed = slot;
        c->lb_locals[slot] = l;
    }
    pt_lb_set_t *s = pt_lb_set_acquire(c, slot);
    if (s == NULL)
        return NULL;
    pt_lb_sched_t *sched = calloc(s->nslots ? s->nslots : 1, sizeof(pt_lb_sched_t));
    pt_lb_sched_t *loc_sched = calloc(s->nloc_slots ? s->nloc_slots : 1, sizeof(pt_lb_sched_t));
    if (sched == NULL || loc_sched == NULL) {
        free(sched);
        free(loc_sched);
        pt_lb_set_unref(s);
        return NULL;
    }
    /* Round robins go on where they were (a subset keeps its slot while the cluster's
     * shape stays); EDF schedules are made again for the new members. */
    for (uint32_t i = 0; i < s->nslots; i++)
        sched[i].cursor = l->set != NULL && i < l->set->nslots ? l->sched[i].cursor : l->seed;
    if (l->set != NULL) {
        free_scheds(l->sched, l->set->nslots);
        free_scheds(l->loc_sched, l->set->nloc_slots);
        pt_lb_set_unref(l->set);
    }
    l->sched = sched;
    l->loc_sched = loc_sched;
    l->set = s;
    return l;
}

pt_lb_local_t *pt_lb_local_get(pt_cluster_t *c, pt_worker_t *w)
{
    if (c->nlb_locals == 0)
        return NULL;
    unsigned slot = pt_lb_thread_slot(w);
    if (slot >= c->nlb_locals)
        slot = c->nlb_locals - 1;
    pt_lb_local_t *l = c->lb_locals[slot];
    pt_lb_set_t *cur = atomic_load_explicit(&c->lb_set, memory_order_acquire);
    if (cur == NULL)
        return NULL;
    /* l holds a reference to its set: the same pointer is the same set. */
    if (l != NULL && l->set == cur)
        return l;
    return local_sync(c, slot, l);
}

/* ---- the subset: priority, then locality ------------------------------------------ */

/* A weighted locality (locality_weighted_lb_config): the per-worker EDF over the effective
 * weights. */
static uint32_t locality_pick(pt_lb_local_t *l, const pt_lb_localities_t *L, uint32_t nloc)
{
    pt_lb_sched_t *sc = &l->loc_sched[L->slot];
    if (sc->heap == NULL && edf_build(sc, L->step, nloc) != 0)
        return below(nloc);
    if (sc->nheap == 0)
        return below(nloc);
    uint32_t j = edf_top(sc);
    edf_advance(sc, L->step[j]);
    return j;
}

/* Zone aware routing's state for this pick, brought up to date; NULL when it does not
 * apply (no view, no local cluster in it). */
static const pt_lb_zone_t *zone_state(pt_cluster_t *c, pt_worker_t *w, pt_lb_local_t *l)
{
    const char *name = pt_lb_local_cluster_name();
    if (w == NULL || w->view == NULL || w->view->view == NULL || name == NULL)
        return NULL;
    const pt_view_t *v = w->view->view;
    int stale = 0;
    if (v->version != l->zone_view) {
        l->zone_view = v->version;
        l->zone_lc = pt_view_find_cluster(v, name);
        stale = 1;
    }
    if (l->zone_lc == NULL)
        return NULL;
    pt_lb_set_t *ls = atomic_load_explicit(&l->zone_lc->lb_set, memory_order_acquire);
    if (stale || ls != l->zone_local || l->zone_gen != l->set->gen) {
        if (stale || ls != l->zone_local) {
            pt_lb_set_unref(l->zone_local);
            l->zone_local = pt_lb_set_acquire(l->zone_lc, pt_lb_thread_slot(w));
        }
        pt_stat_inc(c->stats.lb_recalculate_zone_structures);
        if (pt_lb_zone_compute(c, l->set, l->zone_lc, l->zone_local, &l->zone) != 0) {
            l->zone.state = PT_ZONE_NONE;
            l->zone_gen = 0; /* try again next time */
            return NULL;
        }
        if (l->zone.why == 1)
            pt_stat_inc(c->stats.lb_local_cluster_not_ok);
        else if (l->zone.why == 2)
            pt_stat_inc(c->stats.lb_zone_cluster_too_small);
        l->zone_gen = l->set->gen;
    }
    return &l->zone;
}

/* The locality of a zone aware pick (Envoy's tryChooseLocalLocalityHosts). */
static uint32_t zone_locality(pt_cluster_t *c, const pt_lb_zone_t *z, int32_t me)
{
    if (z->state == PT_ZONE_DIRECT) {
        pt_stat_inc(c->stats.lb_zone_routing_all_directly);
        return (uint32_t)me;
    }
    if (me >= 0 && (uint32_t)(pt_random_u64() % 10000) < z->local_percent) {
        pt_stat_inc(c->stats.lb_zone_routing_sampled);
        return (uint32_t)me;
    }
    pt_stat_inc(c->stats.lb_zone_routing_cross_zone);
    uint64_t total = z->residual[z->nloc - 1];
    if (total == 0) {
        pt_stat_inc(c->stats.lb_zone_no_capacity_left);
        return below(z->nloc);
    }
    uint64_t t = pt_random_u64() % total;
    uint32_t lo = 0, hi = z->nloc - 1; /* the first locality whose cumulative capacity > t */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (t < z->residual[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

const pt_lb_hosts_t *pt_lb_choose_hosts(pt_cluster_t *c, pt_worker_t *w, pt_lb_local_t *l,
                                        uint64_t draw)
{
    const pt_lb_set_t *s = l->set;
    if (s->fast != NULL)
        return s->fast;
    unsigned ch = s->choice[draw % 100];
    unsigned p = ch >> 1, kind = ch & 1;
    const pt_lb_priority_t *pr = &s->prio[p];
    const pt_lb_hosts_t *whole = &pr->hosts[kind];
    if (pr->panic) {
        pt_stat_inc(c->stats.lb_healthy_panic);
        return c->fail_traffic_on_panic ? NULL : &pr->hosts[PT_LB_ALL];
    }
    if (c->locality_lb == PT_LOCALITY_WEIGHTED) {
        const pt_lb_localities_t *L = &pr->loc[kind];
        if (L->step == NULL)
            return whole;
        const pt_lb_hosts_t *hs = &L->sets[locality_pick(l, L, pr->nloc)];
        return hs->n > 0 ? hs : whole;
    }
    if (p != 0 || !s->zone_routing)
        return whole;
    const pt_lb_zone_t *z = zone_state(c, w, l);
    if (z == NULL || z->state == PT_ZONE_NONE)
        return whole;
    if (c->zone_routing_enabled < 100 && pt_random_u64() % 100 >= c->zone_routing_enabled)
        return whole;
    if (z->local_panic) {
        pt_stat_inc(c->stats.lb_local_cluster_not_ok);
        return c->fail_traffic_on_panic ? NULL : whole;
    }
    const pt_lb_hosts_t *hs = &pr->loc[kind].sets[zone_locality(c, z, pr->local_loc)];
    /* Envoy fails the pick when the locality has none of the kind; the whole kind is used
     * instead. */
    return hs->n > 0 ? hs : whole;
}

/* ---- the host within the subset -------------------------------------------------- */

/* Weighted LEAST_REQUEST: the member's step with its weight divided by (active requests +
 * 1)^active_request_bias, as it is now. */
static uint64_t lr_step(const pt_cluster_t *c, const pt_lb_hosts_t *hs, uint32_t m)
{
    uint64_t base = hs->step[m];
    uint64_t rq = rq_active(c->hosts[hs->idx[m]]) + 1;
    double bias = c->active_request_bias;
    if (bias == 1.0) {
        uint64_t v;
        return __builtin_mul_overflow(base, rq, &v) ? EDF_MAX_STEP : v;
    }
    if (bias == 0.0)
        return base;
    double v = (double)base * pow((double)rq, bias);
    return v >= (double)EDF_MAX_STEP ? EDF_MAX_STEP : (uint64_t)v;
}

static uint32_t edf_pick(pt_cluster_t *c, pt_lb_local_t *l, const pt_lb_hosts_t *hs, int lr)
{
    pt_lb_sched_t *sc = &l->sched[hs->slot];
    if (sc->heap == NULL && edf_build(sc, hs->step, hs->n) != 0)
        return below(hs->n);
    uint32_t m = edf_top(sc);
    edf_advance(sc, lr ? lr_step(c, hs, m) : hs->step[m]);
    return m;
}

static uint32_t pick_member(pt_cluster_t *c, pt_lb_local_t *l, const pt_lb_hosts_t *hs)
{
    uint32_t n = hs->n;
    switch (c->lb_policy) {
    case PT_LB_RANDOM:
        return below(n);
    case PT_LB_LEAST_REQUEST: {
        if (hs->step != NULL)
            return edf_pick(c, l, hs, 1);
        /* Power of choices: draws with replacement, the least busy wins (Envoy). */
        uint32_t best = below(n);
        uint64_t best_rq = rq_active(c->hosts[hs->idx[best]]);
        for (uint32_t i = 1; i < c->lb_choice_count; i++) {
            uint32_t m = below(n);
            uint64_t r = rq_active(c->hosts[hs->idx[m]]);
            if (r < best_rq) {
                best = m;
                best_rq = r;
            }
        }
        return best;
    }
    case PT_LB_ROUND_ROBIN:
        break;
    }
    if (hs->step != NULL)
        return edf_pick(c, l, hs, 0);
    pt_lb_sched_t *sc = &l->sched[hs->slot];
    uint32_t m = sc->cursor;
    if (m >= n)
        m %= n;
    sc->cursor = m + 1 < n ? m + 1 : 0;
    return m;
}

/* ---- retries and stale health --------------------------------------------------- */

static int excluded(const pt_host_t *h, pt_host_t *const *exclude, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (exclude[i] == h)
            return 1;
    return 0;
}

/* Whether a host of this subset may take the pick: health is disregarded in panic; a host
 * that failed a check since the set was made is not used while the main thread computes the
 * next one. */
static inline int usable(const pt_host_t *h, const pt_lb_hosts_t *hs)
{
    return hs->kind == PT_LB_ALL || atomic_load_explicit(&h->health, memory_order_relaxed) == 0;
}

/* A usable host of hs not in exclude, looking at a few members from `from` (at most
 * nexclude + 2: one of them is not excluded unless the subset is that small). */
static pt_host_t *look_in(pt_cluster_t *c, const pt_lb_hosts_t *hs, uint32_t from,
                          pt_host_t *const *exclude, unsigned nexclude)
{
    uint32_t n = hs->n, tries = nexclude + 2 < n ? nexclude + 2 : n;
    for (uint32_t k = 0; k < tries; k++) {
        pt_host_t *g = c->hosts[hs->idx[(from + k) % n]];
        if (usable(g, hs) && !excluded(g, exclude, nexclude))
            return g;
    }
    return NULL;
}

/* The picked host h is excluded (a retry's tried host) or just failed: its neighbours in the
 * subset, then the other subsets that may take load, a few members each. Failing that, h
 * when it is usable (a retry may go back to a host it tried), else none. */
static pt_host_t *pick_around(pt_cluster_t *c, const pt_lb_set_t *s, const pt_lb_hosts_t *hs,
                              uint32_t m, pt_host_t *h, pt_host_t *const *exclude,
                              unsigned nexclude)
{
    pt_host_t *g = look_in(c, hs, m + 1, exclude, nexclude);
    if (g != NULL)
        return g;
    for (uint32_t p = 0; p < s->npriorities; p++) {
        const pt_lb_priority_t *pr = &s->prio[p];
        for (int kind = 0; kind < 3; kind++) {
            const pt_lb_hosts_t *o = &pr->hosts[kind];
            if (o == hs || o->n == 0 || (kind == PT_LB_ALL && !pr->panic))
                continue;
            if ((g = look_in(c, o, below(o->n), exclude, nexclude)) != NULL)
                return g;
        }
    }
    return usable(h, hs) ? h : NULL;
}

pt_host_t *pt_lb_pick(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                      unsigned nexclude)
{
    pt_lb_local_t *l = pt_lb_local_get(c, w);
    if (l == NULL)
        return NULL;
    const pt_lb_hosts_t *hs = l->set->fast;
    if (hs == NULL && (hs = pt_lb_choose_hosts(c, w, l, pt_random_u64())) == NULL)
        return NULL;
    if (hs->n == 0)
        return NULL;
    uint32_t m = pick_member(c, l, hs);
    pt_host_t *h = c->hosts[hs->idx[m]];
    if (usable(h, hs) && (nexclude == 0 || !excluded(h, exclude, nexclude)))
        return h;
    return pick_around(c, l->set, hs, m, h, exclude, nexclude);
}
