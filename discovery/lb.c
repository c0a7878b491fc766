#include "discovery/lb.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/random.h"
#include "proxy/view.h"
#include "proxy/worker.h"

/* ---- small helpers ----------------------------------------------------------------- */

/* The balancers' own random numbers: xorshift64* per thread, seeded from proxy/random.h
 * (statistical quality is what a balancer needs, and a pick cannot afford more). */
static _Thread_local uint64_t rng_state;

static inline uint64_t rnd(void)
{
    uint64_t x = rng_state;
    if (__builtin_expect(x == 0, 0))
        x = pt_random_u64() | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Uniform enough in [0, n) for n < 2^32 (multiply-shift: no division). */
static inline uint32_t below(uint32_t n)
{
    return (uint32_t)(((rnd() >> 32) * (uint64_t)n) >> 32);
}

static inline uint64_t rq_active(const pt_host_t *h)
{
    return atomic_load_explicit(&h->rq_active, memory_order_relaxed);
}

/* ---- EDF schedules ----------------------------------------------------------------- */

/* An entry of a min-heap on the deadline: the member (or run) comes up at its deadline, then
 * again one step later (Envoy's EdfScheduler, in fixed point). A run's entry also holds
 * where its round robin is. */
typedef struct pt_lb_edf {
    uint64_t deadline;
    uint32_t member;
    uint32_t cursor;
} pt_lb_edf_t;

/* Up to this many entries an EDF schedule is a plain array scanned for its earliest
 * deadline (fewer instructions than a heap's sift for a few localities or runs). Its
 * deadlines are keys: the deadline shifted left by EDF_KEY_BITS with the entry's position in
 * the low bits, so the smallest key names the earliest entry, the first one on a tie (a
 * plain minimum, no index to carry along the scan). */
#define EDF_SCAN 16
#define EDF_KEY_BITS 4
#define EDF_KEY_MASK ((1ull << EDF_KEY_BITS) - 1)

#define EDF_REBASE (1ull << 62)
#define EDF_MAX_STEP (1ull << 61)
/* Steps of a scanned schedule are capped lower, so that a key (shifted) stays below 2^63. */
#define EDF_MAX_KEY_STEP (EDF_MAX_STEP >> EDF_KEY_BITS)

/* A 4-ary heap: half the levels of a binary one, and its children share a cache line. */
static void sift_down(pt_lb_edf_t *h, uint32_t n, uint32_t i)
{
    pt_lb_edf_t e = h[i];
    uint32_t c;
    while ((c = 4 * i + 1) < n) {
        uint32_t best;
        if (__builtin_expect(c + 3 < n, 1)) { /* four children: a tournament, no loop */
            uint32_t a = h[c + 1].deadline < h[c].deadline ? c + 1 : c;
            uint32_t b = h[c + 3].deadline < h[c + 2].deadline ? c + 3 : c + 2;
            best = h[b].deadline < h[a].deadline ? b : a;
        } else {
            best = c;
            for (uint32_t k = c + 1; k < n; k++)
                if (h[k].deadline < h[best].deadline)
                    best = k;
        }
        if (h[best].deadline >= e.deadline)
            break;
        h[i] = h[best];
        i = best;
    }
    h[i] = e;
}

/* Entries for n members, runs or localities: step(i) is entry i's step (a zero step is never
 * picked), each starting at a random point of its first step so that workers do not all
 * begin with the same host; a run's round robin starts at the worker's seed. */
typedef struct edf_src {
    const uint64_t *steps;          /* localities */
    const pt_lb_run_t *runs;        /* weighted round robin */
    const pt_cluster_t *c;          /* weighted least request: hosts of hs */
    const pt_lb_hosts_t *hs;
} edf_src_t;

static uint64_t src_step(const edf_src_t *src, uint32_t i)
{
    if (src->steps != NULL)
        return src->steps[i];
    if (src->runs != NULL)
        return src->runs[i].step;
    uint32_t w = pt_cluster_host_info(src->c, src->hs->idx[i])->weight;
    return PT_LB_STEP_UNIT * (uint64_t)src->hs->wmax / (w ? w : 1);
}

static int edf_build(pt_lb_sched_t *sc, uint32_t n, const edf_src_t *src, uint32_t seed)
{
    pt_lb_edf_t *h = malloc((n ? n : 1) * sizeof(*h));
    if (h == NULL)
        return -1;
    uint32_t k = 0;
    for (uint32_t m = 0; m < n; m++) {
        uint64_t st = src_step(src, m);
        if (st == 0)
            continue;
        h[k].member = m;
        h[k].cursor = src->runs != NULL ? seed % src->runs[m].len : 0;
        h[k].deadline = rnd() % st;
        k++;
    }
    if (k > EDF_SCAN) {
        for (uint32_t i = k / 4 + 1; i-- > 0;)
            if (i < k)
                sift_down(h, k, i);
    } else {
        for (uint32_t i = 0; i < k; i++)
            h[i].deadline = (h[i].deadline % EDF_MAX_KEY_STEP) << EDF_KEY_BITS | i;
    }
    free(sc->heap);
    sc->heap = h;
    sc->nheap = k;
    return 0;
}

/* The entry whose turn it is: the heap's top, or the earliest of a small array. */
static inline pt_lb_edf_t *edf_top(pt_lb_sched_t *sc)
{
    pt_lb_edf_t *h = sc->heap;
    if (sc->nheap > EDF_SCAN)
        return h;
    uint64_t key = h[0].deadline;
    for (uint32_t k = 1; k < sc->nheap; k++)
        key = h[k].deadline < key ? h[k].deadline : key;
    return &h[key & EDF_KEY_MASK];
}

/* The entry whose turn it was (edf_top) comes up again `next` later. */
static inline void edf_advance(pt_lb_sched_t *sc, pt_lb_edf_t *top, uint64_t next)
{
    pt_lb_edf_t *h = sc->heap;
    uint64_t now = top->deadline;
    if (sc->nheap > EDF_SCAN) {
        if (next > EDF_MAX_STEP)
            next = EDF_MAX_STEP;
        top->deadline = now + next;
        sift_down(h, sc->nheap, 0);
    } else {
        if (next > EDF_MAX_KEY_STEP)
            next = EDF_MAX_KEY_STEP;
        top->deadline = now + (next << EDF_KEY_BITS);
        now &= ~EDF_KEY_MASK; /* the positions stay */
    }
    if (__builtin_expect(now >= EDF_REBASE, 0)) /* deadlines start again from 0, in order */
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

/* Brings l (made when NULL, in slot `slot` of locals) to c's set now. */
static pt_lb_local_t *local_sync(pt_cluster_t *c, pt_lb_local_t **locals, unsigned slot,
                                 pt_lb_local_t *l)
{
    if (l == NULL) {
        size_t size = (sizeof(*l) + 63) & ~(size_t)63; /* a cache line of its own */
        if ((l = aligned_alloc(64, size)) == NULL)
            return NULL;
        memset(l, 0, sizeof(*l));
        /* Workers start their round robins at different hosts: worker i at the i-th. */
        l->seed = slot;
        locals[slot] = l;
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

static __attribute__((noinline)) pt_lb_local_t *local_slow(pt_cluster_t *c, unsigned slot)
{
    if (atomic_load_explicit(&c->lb_set, memory_order_acquire) == NULL)
        return NULL;
    pt_lb_local_t **locals = atomic_load_explicit(&c->lb_locals, memory_order_acquire);
    if (locals == NULL) { /* the first pick of this version on any thread */
        pt_lb_local_t **mine = calloc(c->nlb_locals, sizeof(*mine));
        if (mine == NULL)
            return NULL;
        if (atomic_compare_exchange_strong(&c->lb_locals, &locals, mine))
            locals = mine;
        else
            free(mine); /* another thread's came first: locals is it */
    }
    return local_sync(c, locals, slot, locals[slot]);
}

static inline pt_lb_local_t *local_get(pt_cluster_t *c, pt_worker_t *w)
{
    unsigned nl = c->nlb_locals;
    if (__builtin_expect(nl == 0, 0))
        return NULL;
    /* pt_lb_thread_slot without asking the worker count: the last slot is the shared one
     * (a negative id, the main thread's, becomes large and goes there too). */
    unsigned shared = nl - 1;
    unsigned slot = w != NULL && (unsigned)w->id < shared ? (unsigned)w->id : shared;
    pt_lb_local_t **locals = atomic_load_explicit(&c->lb_locals, memory_order_acquire);
    if (__builtin_expect(locals == NULL, 0))
        return local_slow(c, slot);
    pt_lb_local_t *l = locals[slot];
    pt_lb_set_t *cur = atomic_load_explicit(&c->lb_set, memory_order_acquire);
    /* l holds a reference to its set: the same pointer is the same set. */
    if (__builtin_expect(l != NULL && l->set == cur && cur != NULL, 1))
        return l;
    return local_slow(c, slot);
}

pt_lb_local_t *pt_lb_local_get(pt_cluster_t *c, pt_worker_t *w)
{
    return local_get(c, w);
}

/* ---- the subset: priority, then locality ------------------------------------------ */

/* A weighted locality (locality_weighted_lb_config): the per-worker EDF over the effective
 * weights. */
static uint32_t locality_pick(pt_lb_local_t *l, const pt_lb_localities_t *L, uint32_t nloc)
{
    pt_lb_sched_t *sc = &l->loc_sched[L->slot];
    edf_src_t src = {.steps = L->step};
    if (sc->heap == NULL && edf_build(sc, nloc, &src, 0) != 0)
        return below(nloc);
    if (sc->nheap == 0)
        return below(nloc);
    pt_lb_edf_t *top = edf_top(sc);
    uint32_t j = top->member;
    edf_advance(sc, top, L->step[j]);
    return j;
}

/* Zone aware routing's state for this pick, brought up to date; NULL when it does not
 * apply (no view, no local cluster in it). */
static const pt_lb_zone_t *zone_state(pt_cluster_t *c, pt_worker_t *w, pt_lb_local_t *l)
{
    if (w == NULL || w->view == NULL || w->view->view == NULL)
        return NULL;
    const pt_view_t *v = w->view->view;
    int stale = 0;
    if (__builtin_expect(v->version != l->zone_view, 0)) {
        const char *name = pt_lb_local_cluster_name();
        l->zone_view = v->version;
        l->zone_lc = name != NULL ? pt_view_find_cluster(v, name) : NULL;
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
        pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_recalculate_zone_structures);
        if (pt_lb_zone_compute(c, l->set, l->zone_lc, l->zone_local, &l->zone) != 0) {
            l->zone.state = PT_ZONE_NONE;
            l->zone_gen = 0; /* try again next time */
            return NULL;
        }
        if (l->zone.why == 1)
            pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_local_cluster_not_ok);
        else if (l->zone.why == 2)
            pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_zone_cluster_too_small);
        l->zone_gen = l->set->gen;
    }
    return &l->zone;
}

/* The locality of a zone aware pick (Envoy's tryChooseLocalLocalityHosts). */
static uint32_t zone_locality(pt_cluster_t *c, const pt_lb_zone_t *z, int32_t me)
{
    if (z->state == PT_ZONE_DIRECT) {
        pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_zone_routing_all_directly);
        return (uint32_t)me;
    }
    if (me >= 0 && (uint32_t)(rnd() % 10000) < z->local_percent) {
        pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_zone_routing_sampled);
        return (uint32_t)me;
    }
    pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_zone_routing_cross_zone);
    uint64_t total = z->residual[z->nloc - 1];
    if (total == 0) {
        pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_zone_no_capacity_left);
        return below(z->nloc);
    }
    uint64_t t = rnd() % total;
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

/* The subset of the priority and kind ch (priority x 2, + 1 for degraded hosts) names. */
static inline const pt_lb_hosts_t *choose_in(pt_cluster_t *c, pt_worker_t *w, pt_lb_local_t *l,
                                             unsigned ch)
{
    const pt_lb_set_t *s = l->set;
    unsigned p = ch >> 1, kind = ch & 1;
    const pt_lb_priority_t *pr = &s->prio[p];
    const pt_lb_hosts_t *whole = &pr->hosts[kind];
    if (pr->panic) {
        pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_healthy_panic);
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
    if (c->zone_routing_enabled < 100 && rnd() % 100 >= c->zone_routing_enabled)
        return whole;
    if (z->local_panic) {
        pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_local_cluster_not_ok);
        return c->fail_traffic_on_panic ? NULL : whole;
    }
    const pt_lb_hosts_t *hs = &pr->loc[kind].sets[zone_locality(c, z, pr->local_loc)];
    /* Envoy fails the pick when the locality has none of the kind; the whole kind is used
     * instead. */
    return hs->n > 0 ? hs : whole;
}

static inline const pt_lb_hosts_t *choose(pt_cluster_t *c, pt_worker_t *w, pt_lb_local_t *l,
                                           const uint64_t *hash)
{
    const pt_lb_set_t *s = l->set;
    if (s->fast != NULL)
        return s->fast;
    unsigned ch = s->single >= 0 ? (unsigned)s->single
                                 : s->choice[(hash != NULL ? *hash : rnd()) % 100];
    return choose_in(c, w, l, ch);
}

const pt_lb_hosts_t *pt_lb_choose_hosts(pt_cluster_t *c, pt_worker_t *w, pt_lb_local_t *l,
                                        const uint64_t *hash)
{
    return choose(c, w, l, hash);
}

/* ---- retry priority: previous_priorities ------------------------------------------ */

static pt_host_t *pick_in(pt_cluster_t *c, pt_lb_local_t *l, const pt_lb_hosts_t *hs,
                          pt_host_t *const *exclude, unsigned nexclude);

int pt_lb_retry_choice(pt_cluster_t *c, pt_worker_t *w, const uint64_t *excluded,
                       uint16_t choice[100])
{
    pt_lb_local_t *l = pt_lb_local_get(c, w);
    if (l == NULL)
        return -1;
    const pt_lb_set_t *s = l->set;
    unsigned n = s->npriorities;
    uint32_t health[PT_LB_MAX_PRIORITY + 1], degraded[PT_LB_MAX_PRIORITY + 1];
    uint32_t total = 0;
    for (unsigned p = 0; p < n; p++) {
        int out = (excluded[p / 64] >> (p % 64)) & 1;
        health[p] = out ? 0 : s->prio[p].health;
        degraded[p] = out ? 0 : s->prio[p].degraded;
        total += health[p] + degraded[p];
    }
    if (total > 100)
        total = 100;
    if (total == 0)
        return -1;
    /* Envoy's distribution: as much load as their share allows to each priority in order,
     * healthy hosts first, then degraded ones, again until all 100 are placed (rounding). */
    uint32_t hl[PT_LB_MAX_PRIORITY + 1] = {0}, dl[PT_LB_MAX_PRIORITY + 1] = {0};
    uint32_t left = 100;
    while (left != 0) {
        for (unsigned p = 0; p < n; p++) {
            uint32_t d = health[p] * 100 / total;
            d = d < left ? d : left;
            hl[p] += d;
            left -= d;
        }
        for (unsigned p = 0; p < n; p++) {
            uint32_t d = degraded[p] * 100 / total;
            d = d < left ? d : left;
            dl[p] += d;
            left -= d;
        }
    }
    /* As the set's own table: draw d takes the first priority whose cumulative load, healthy
     * ones then degraded ones, exceeds d (Envoy's choosePriority). */
    unsigned d = 0;
    for (unsigned p = 0; p < n; p++)
        for (uint32_t k = 0; k < hl[p] && d < 100; k++)
            choice[d++] = (uint16_t)(p * 2);
    for (unsigned p = 0; p < n; p++)
        for (uint32_t k = 0; k < dl[p] && d < 100; k++)
            choice[d++] = (uint16_t)(p * 2 + 1);
    return 0;
}

pt_host_t *pt_lb_pick_choice(pt_cluster_t *c, pt_worker_t *w, const uint16_t *choice,
                             pt_host_t *const *exclude, unsigned nexclude)
{
    pt_lb_local_t *l = local_get(c, w);
    if (l == NULL)
        return NULL;
    unsigned ch = choice[rnd() % 100];
    /* Made against an older set with more priorities: the set's own choice. */
    const pt_lb_hosts_t *hs = (ch >> 1) < l->set->npriorities ? choose_in(c, w, l, ch)
                                                               : choose(c, w, l, NULL);
    if (hs == NULL)
        return NULL;
    return pick_in(c, l, hs, exclude, nexclude);
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
    return hs->kind == PT_LB_ALL ||
           (atomic_load_explicit(&h->health, memory_order_relaxed) & PT_HOST_FAILED_MASK) == 0;
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

/* Member m of hs is excluded (a retry's tried host) or just failed: its neighbours in the
 * subset, then the other subsets that may take load, a few members each. Failing that, m's
 * host when it is usable (a retry may go back to a host it tried), else none. */
static __attribute__((noinline)) pt_host_t *pick_around(pt_cluster_t *c, const pt_lb_set_t *s,
                                                        const pt_lb_hosts_t *hs, uint32_t m,
                                                        pt_host_t *const *exclude,
                                                        unsigned nexclude)
{
    pt_host_t *h = c->hosts[hs->idx[m]];
    if (usable(h, hs) && !excluded(h, exclude, nexclude))
        return h;
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

/* The host of member m, unless a retry tried it or it just failed. */
static inline pt_host_t *finish(pt_cluster_t *c, pt_lb_local_t *l, const pt_lb_hosts_t *hs,
                                uint32_t m, pt_host_t *const *exclude, unsigned nexclude)
{
    pt_host_t *h = c->hosts[hs->idx[m]];
    if (__builtin_expect(nexclude == 0 && usable(h, hs), 1))
        return h;
    return pick_around(c, l->set, hs, m, exclude, nexclude);
}

/* ---- the host within the subset -------------------------------------------------- */

/* Each policy picks a member and finishes: they are tail calls of pt_lb_pick, so that the
 * common cases keep everything in registers. */

/* Weighted LEAST_REQUEST: the member's step with its weight divided by (active requests +
 * 1)^active_request_bias, as it is now. */
static uint64_t lr_step(const pt_cluster_t *c, const pt_lb_hosts_t *hs, uint32_t m)
{
    uint32_t i = hs->idx[m], w = pt_cluster_host_info(c, i)->weight;
    uint64_t base = PT_LB_STEP_UNIT * (uint64_t)hs->wmax / (w ? w : 1);
    uint64_t rq = rq_active(c->hosts[i]) + 1;
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

/* Weighted LEAST_REQUEST (Envoy's EDF over the hosts, each put back with its weight of now). */
static __attribute__((noinline)) pt_host_t *pick_lr_weighted(pt_cluster_t *c, pt_lb_local_t *l,
                                                             const pt_lb_hosts_t *hs,
                                                             pt_host_t *const *exclude,
                                                             unsigned nexclude)
{
    pt_lb_sched_t *sc = &l->sched[hs->slot];
    uint32_t m;
    edf_src_t src = {.c = c, .hs = hs};
    if (__builtin_expect(sc->heap == NULL, 0) && edf_build(sc, hs->n, &src, l->seed) != 0) {
        m = below(hs->n);
    } else {
        pt_lb_edf_t *top = edf_top(sc);
        m = top->member;
        edf_advance(sc, top, lr_step(c, hs, m));
    }
    return finish(c, l, hs, m, exclude, nexclude);
}

/* Weighted ROUND_ROBIN: EDF over the runs of equal weight, round robin within the run. */
static __attribute__((noinline)) pt_host_t *pick_rr_weighted(pt_cluster_t *c, pt_lb_local_t *l,
                                                             const pt_lb_hosts_t *hs,
                                                             pt_host_t *const *exclude,
                                                             unsigned nexclude)
{
    pt_lb_sched_t *sc = &l->sched[hs->slot];
    uint32_t m;
    edf_src_t src = {.runs = hs->runs};
    if (__builtin_expect(sc->heap == NULL, 0) && edf_build(sc, hs->nruns, &src, l->seed) != 0) {
        m = below(hs->n);
    } else {
        pt_lb_edf_t *top = edf_top(sc);
        const pt_lb_run_t *run = &hs->runs[top->member];
        m = run->start - hs->run_base + top->cursor;
        top->cursor = top->cursor + 1 < run->len ? top->cursor + 1 : 0;
        edf_advance(sc, top, run->step);
    }
    return finish(c, l, hs, m, exclude, nexclude);
}

/* LEAST_REQUEST with equal weights: the least busy of choice_count random members, drawn
 * with replacement (Envoy's P2C). */
static __attribute__((noinline)) pt_host_t *pick_p2c(pt_cluster_t *c, pt_lb_local_t *l,
                                                     const pt_lb_hosts_t *hs,
                                                     pt_host_t *const *exclude,
                                                     unsigned nexclude)
{
    uint32_t n = hs->n;
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
    return finish(c, l, hs, best, exclude, nexclude);
}

/* Round robin with equal weights, and RANDOM. */
static inline pt_host_t *pick_simple(pt_cluster_t *c, pt_lb_local_t *l, const pt_lb_hosts_t *hs,
                                     pt_host_t *const *exclude, unsigned nexclude)
{
    uint32_t m, n = hs->n;
    if (c->lb_policy == PT_LB_RANDOM) {
        m = below(n);
    } else {
        pt_lb_sched_t *sc = &l->sched[hs->slot];
        m = sc->cursor;
        if (__builtin_expect(m >= n, 0))
            m %= n;
        sc->cursor = m + 1 < n ? m + 1 : 0;
    }
    return finish(c, l, hs, m, exclude, nexclude);
}

static __attribute__((noinline)) pt_host_t *pick_in(pt_cluster_t *c, pt_lb_local_t *l,
                                                    const pt_lb_hosts_t *hs,
                                                    pt_host_t *const *exclude, unsigned nexclude)
{
    if (__builtin_expect(hs->n == 0, 0))
        return NULL;
    if (c->lb_policy == PT_LB_LEAST_REQUEST)
        return hs->runs != NULL ? pick_lr_weighted(c, l, hs, exclude, nexclude)
                                : pick_p2c(c, l, hs, exclude, nexclude);
    if (c->lb_policy == PT_LB_ROUND_ROBIN && hs->runs != NULL)
        return pick_rr_weighted(c, l, hs, exclude, nexclude);
    return pick_simple(c, l, hs, exclude, nexclude);
}

/* The subset is to be chosen first (several priorities, localities, zones). */
static __attribute__((noinline)) pt_host_t *pick_chosen(pt_cluster_t *c, pt_worker_t *w,
                                                        pt_lb_local_t *l,
                                                        pt_host_t *const *exclude,
                                                        unsigned nexclude)
{
    const pt_lb_hosts_t *hs = choose(c, w, l, NULL);
    if (hs == NULL)
        return NULL;
    return pick_in(c, l, hs, exclude, nexclude);
}

pt_host_t *pt_lb_pick(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                      unsigned nexclude)
{
    pt_lb_local_t *l = local_get(c, w);
    if (__builtin_expect(l == NULL, 0))
        return NULL;
    const pt_lb_hosts_t *hs = l->set->fast;
    if (hs == NULL)
        return pick_chosen(c, w, l, exclude, nexclude);
    return pick_in(c, l, hs, exclude, nexclude);
}
