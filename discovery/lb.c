#include "discovery/lb.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/random.h"
#include "proxy/view.h"
#include "proxy/worker.h"

/* ---- small helpers ----------------------------------------------------------------- */

/* The balancers' own random numbers: xorshift64* per thread, seeded from proxy/random.h
 * when the thread first makes its state for a cluster (rng_seed; statistical quality is
 * what a balancer needs, and a pick cannot afford more). */
static _Thread_local uint64_t rng_state;

static void rng_seed(void)
{
    if (rng_state == 0)
        rng_state = pt_random_u64() | 1;
}

static inline uint64_t rnd(void)
{
    uint64_t x = rng_state;
    /* Not seeded (a thread sharing another's state): its own address, never 0; no call
     * here, so that a pick sets no frame up for it. */
    if (__builtin_expect(x == 0, 0))
        x = (uint64_t)(uintptr_t)&rng_state * 0x9e3779b97f4a7c15ull | 1;
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

static void sift_up(pt_lb_edf_t *h, uint32_t i)
{
    pt_lb_edf_t e = h[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 4;
        if (h[p].deadline <= e.deadline)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

/* Entries for n members, runs or localities: step(i) is entry i's step (a zero step is never
 * picked), each starting at a random point of its first step so that workers do not all
 * begin with the same host; a run's round robin starts at the worker's seed. */
typedef struct edf_src {
    const uint64_t *steps;          /* localities */
    const pt_lb_run_t *runs;        /* weighted round robin */
} edf_src_t;

static uint64_t src_step(const edf_src_t *src, uint32_t i)
{
    return src->steps != NULL ? src->steps[i] : src->runs[i].step;
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

/* ---- wheels: a weighted schedule's period, unrolled ------------------------------ */

/* Entries of integer weights w_i (divided by their gcd) come up w_i times in a period of
 * W = sum w_i picks: an EDF whose entries start together (each first due at 1/w_i, as in a
 * new EdfScheduler of Envoy's) repeats after W picks, in the order of the deadlines k/w_i
 * (k = 1 .. w_i; on a tie the lower entry first). Up to WHEEL_MAX positions the period is
 * computed once per worker and a pick is one step along it: no scan, no heap. */
#define WHEEL_MAX 4096

typedef struct wheel_item {
    uint32_t k, w, entry;
} wheel_item_t;

static int wheel_cmp(const void *a, const void *b)
{
    const wheel_item_t *x = a, *y = b;
    uint64_t l = (uint64_t)x->k * y->w, r = (uint64_t)y->k * x->w; /* k/w, exactly */
    if (l != r)
        return l < r ? -1 : 1;
    return (x->entry > y->entry) - (x->entry < y->entry);
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b != 0) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* The wheel of n entries of weights w (0: never picked); with runs, a round robin cursor
 * per run too, starting at `seed`. The worker starts at a random position of the period,
 * so that workers do not all begin with the same entry. 0 made, 1 none for these weights
 * (no weight, or a period longer than WHEEL_MAX), -1 out of memory. */
static int wheel_build(pt_lb_sched_t *sc, uint32_t n, const uint64_t *w, const pt_lb_run_t *runs,
                       uint32_t seed)
{
    if (n == 0 || n > (uint32_t)UINT16_MAX + 1)
        return 1;
    uint64_t g = 0, total = 0;
    for (uint32_t i = 0; i < n; i++)
        g = gcd64(g, w[i]);
    if (g == 0)
        return 1;
    for (uint32_t i = 0; i < n; i++)
        if ((total += w[i] / g) > WHEEL_MAX)
            return 1;
    size_t at = ((size_t)total * sizeof(uint16_t) + 3) & ~(size_t)3;
    uint8_t *mem = malloc(at + (runs != NULL ? n * sizeof(uint32_t) : 0));
    wheel_item_t *items = malloc(total * sizeof(*items));
    if (mem == NULL || items == NULL) {
        free(mem);
        free(items);
        return -1;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 1; j <= w[i] / g; j++)
            items[k++] = (wheel_item_t){.k = j, .w = (uint32_t)(w[i] / g), .entry = i};
    qsort(items, total, sizeof(*items), wheel_cmp);
    uint16_t *wheel = (uint16_t *)mem;
    for (uint32_t p = 0; p < total; p++)
        wheel[p] = (uint16_t)items[p].entry;
    free(items);
    uint32_t *cursors = runs != NULL ? (uint32_t *)(mem + at) : NULL;
    for (uint32_t i = 0; cursors != NULL && i < n; i++)
        cursors[i] = seed % runs[i].len;
    free(sc->wheel);
    sc->wheel = wheel;
    sc->nwheel = (uint32_t)total;
    sc->run_cursor = cursors;
    sc->cursor = below((uint32_t)total);
    return 0;
}

/* The entry at the wheel's position now; the position moves on. */
static inline uint32_t wheel_next(pt_lb_sched_t *sc)
{
    uint32_t p = sc->cursor;
    sc->cursor = p + 1 < sc->nwheel ? p + 1 : 0;
    return sc->wheel[p];
}

/* ---- weighted LEAST_REQUEST: Envoy's EDF over the hosts, by classes ------------------ */

/* Envoy's schedule: each host comes up at its deadline and is put back one step later, its
 * step then being PT_LB_STEP_UNIT x wmax / weight x (active requests + 1)^bias. The step
 * depends on the host's run (its weight) and its active requests only, and the time (the
 * deadline just reached) only grows: hosts put back with the same step are put back in the
 * order of their deadlines. So each class (run, active requests) is a FIFO queue in deadline
 * order, and the earliest deadline of all is the earliest of the queues' heads: a heap over
 * the classes holding hosts (the distinct weights times the active request counts at hand,
 * a few), not over the hosts, with the same picks. Hosts with acap or more active requests
 * are outside the classes, in a heap of hosts of their own (over); a pick takes the earlier
 * of the two heaps' tops. */
#define LRQ_NONE UINT32_MAX
#define LRQ_MAX_CLASSES_PER_RUN 256
#define LRQ_MAX_RUNS 1024 /* beyond, hosts are all but alone in their classes: over only */

typedef struct lrq_member {
    uint64_t deadline; /* while in a class */
    uint32_t next;     /* while in a class: the next one of its class */
    uint32_t cls0;     /* its run << ashift: its classes are cls0 .. cls0 + acap */
} lrq_member_t;

typedef struct lrq_class {
    uint32_t head, tail; /* LRQ_NONE: empty */
    uint64_t step;       /* of its hosts: their run's with its active requests */
} lrq_class_t;

typedef struct pt_lb_lrq {
    lrq_member_t *mem;  /* per member */
    lrq_class_t *cls;   /* per class: run << ashift | active requests */
    uint64_t *base;     /* per run: its step without active requests */
    /* A binary heap of the classes holding hosts: the deadline of a class's head (ckey),
     * the class (cid); ckey[nclasses] is UINT64_MAX, so that a node's second child is
     * always there to compare with. */
    uint64_t *ckey;
    uint32_t *cid;
    pt_lb_edf_t *over; /* heap of hosts with acap or more active requests */
    uint32_t nclasses, nover, over_cap;
    uint32_t acap, ashift; /* classes per run: acap = 1 << ashift, or 0 (over only) */
    int bias;              /* 0: steps without active requests; 1: x (active + 1); 2: pow */
    uint64_t amask;        /* active requests count (bias 0: they do not, ~0 & a = 0) */
    /* pick_lr_weighted's common case may apply: no host in over */
    uint8_t common;
} pt_lb_lrq_t;

/* The class heap's root moved later (or was replaced): down to its place. A binary heap:
 * with the few classes it holds, fewer instructions than a 4-ary one's tournaments. */
static inline void cls_sift_root(uint64_t *restrict key, uint32_t *restrict id, uint32_t n)
{
    uint64_t k = key[0];
    uint32_t v = id[0], i = 0, c;
    while ((c = 2 * i + 1) < n) {
        c += key[c + 1] < key[c]; /* key[n]: UINT64_MAX */
        if (key[c] >= k)
            break;
        key[i] = key[c];
        id[i] = id[c];
        i = c;
    }
    key[i] = k;
    id[i] = v;
}

static void cls_push(pt_lb_lrq_t *q, uint64_t k, uint32_t v)
{
    uint64_t *key = q->ckey;
    uint32_t *id = q->cid, i = q->nclasses++;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (key[p] <= k)
            break;
        key[i] = key[p];
        id[i] = id[p];
        i = p;
    }
    key[i] = k;
    id[i] = v;
    key[q->nclasses] = UINT64_MAX;
}

/* m goes last in class y with deadline d (not below any there); the class heap gets y when
 * it was empty. */
static void cls_append(pt_lb_lrq_t *q, uint32_t y, uint32_t m, uint64_t d)
{
    lrq_class_t *k = &q->cls[y];
    q->mem[m].deadline = d;
    q->mem[m].next = LRQ_NONE;
    if (k->head == LRQ_NONE) {
        k->head = m;
        cls_push(q, d, y);
    } else {
        q->mem[k->tail].next = m;
    }
    k->tail = m;
}

/* The class heap's top class x gave its head: x's entry follows its new head, or goes. */
static void cls_popped(pt_lb_lrq_t *q, uint32_t x)
{
    uint32_t h = q->cls[x].head;
    if (h != LRQ_NONE) {
        q->ckey[0] = q->mem[h].deadline;
    } else {
        q->nclasses--;
        q->ckey[0] = q->ckey[q->nclasses];
        q->cid[0] = q->cid[q->nclasses];
        q->ckey[q->nclasses] = UINT64_MAX;
    }
    cls_sift_root(q->ckey, q->cid, q->nclasses);
}

static void lrq_free(pt_lb_lrq_t *q)
{
    if (q == NULL)
        return;
    free(q->over);
    free(q);
}

static int edf_cmp(const void *a, const void *b)
{
    const pt_lb_edf_t *x = a, *y = b;
    if (x->deadline != y->deadline)
        return x->deadline < y->deadline ? -1 : 1;
    return (x->member > y->member) - (x->member < y->member);
}

/* A host's step: its run's, with `a` active requests. */
static inline uint64_t lrq_step(int bias, uint64_t base, const pt_cluster_t *c, uint64_t a)
{
    uint64_t v;
    if (__builtin_expect(bias == 1, 1))
        return __builtin_mul_overflow(base, a + 1, &v) || v > EDF_MAX_STEP ? EDF_MAX_STEP : v;
    if (bias == 0)
        return base;
    double d = (double)base * pow((double)(a + 1), c->active_request_bias);
    return d >= (double)EDF_MAX_STEP ? EDF_MAX_STEP : (uint64_t)d;
}

static int lrq_over_push(pt_lb_lrq_t *q, uint32_t m, uint64_t deadline)
{
    if (q->nover == q->over_cap) {
        uint32_t cap = q->over_cap ? q->over_cap * 2 : 64;
        pt_lb_edf_t *o = realloc(q->over, cap * sizeof(*o));
        if (o == NULL)
            return -1;
        q->over = o;
        q->over_cap = cap;
    }
    q->over[q->nover] = (pt_lb_edf_t){.deadline = deadline, .member = m};
    sift_up(q->over, q->nover++);
    return 0;
}

/* The queues of hs, each member first due at a random point of its first step (as the
 * EDF of before: workers do not all begin with the same host). */
static int lrq_build(pt_lb_sched_t *sc, const pt_cluster_t *c, const pt_lb_hosts_t *hs)
{
    uint32_t n = hs->n, nruns = hs->nruns, acap = 0, ashift = 0;
    int bias = c->active_request_bias == 1.0 ? 1 : c->active_request_bias == 0.0 ? 0 : 2;
    if (nruns <= LRQ_MAX_RUNS) {
        uint32_t budget = (n < 16 ? 16 : n) * 2 / nruns; /* classes: about 2 per member */
        acap = 1;
        while (acap * 2 <= budget && acap < LRQ_MAX_CLASSES_PER_RUN)
            acap *= 2, ashift++;
        if (bias == 0) /* every step is the run's: one class per run */
            acap = 1, ashift = 0;
    }
    size_t ncls = (size_t)nruns << ashift, nheap = acap ? (ncls < n ? ncls : n) : 0;
    size_t size = sizeof(pt_lb_lrq_t) + n * sizeof(lrq_member_t) + nruns * 8 +
                  ncls * sizeof(lrq_class_t) + (nheap + 1) * 12 + 64;
    uint8_t *block = malloc(size);
    pt_lb_edf_t *items = malloc((n ? n : 1) * sizeof(*items));
    if (block == NULL || items == NULL) {
        free(block);
        free(items);
        return -1;
    }
    pt_lb_lrq_t *q = (pt_lb_lrq_t *)block;
    memset(q, 0, sizeof(*q));
    uint8_t *p = block + ((sizeof(*q) + 7) & ~(size_t)7);
    q->mem = (lrq_member_t *)p, p += n * sizeof(lrq_member_t);
    q->base = (uint64_t *)p, p += nruns * 8;
    q->ckey = (uint64_t *)p, p += (nheap + 1) * 8;
    q->ckey[0] = UINT64_MAX;
    q->cls = (lrq_class_t *)p, p += ncls * sizeof(lrq_class_t);
    q->cid = (uint32_t *)p;
    q->acap = acap;
    q->ashift = ashift;
    q->bias = bias;
    q->amask = bias != 0 ? ~(uint64_t)0 : 0;
    for (uint32_t m = 0; m < n; m++)
        q->mem[m].cls0 = 0;
    for (uint32_t r = 0; r < nruns; r++) {
        const pt_lb_run_t *run = &hs->runs[r];
        uint32_t first = run->start - hs->run_base;
        uint32_t w = pt_cluster_host_info(c, hs->idx[first])->weight;
        q->base[r] = PT_LB_STEP_UNIT * (uint64_t)hs->wmax / (w ? w : 1);
        for (uint32_t m = first; m < first + run->len && m < n; m++)
            q->mem[m].cls0 = r << ashift;
    }
    for (uint32_t m = 0; m < n; m++)
        items[m] = (pt_lb_edf_t){.deadline = rnd() % q->base[q->mem[m].cls0 >> ashift],
                                 .member = m};
    if (acap != 0) {
        /* In deadline order into their runs' idle classes: each queue is in order. */
        qsort(items, n, sizeof(*items), edf_cmp);
        for (size_t k = 0; k < ncls; k++) {
            q->cls[k].head = q->cls[k].tail = LRQ_NONE;
            q->cls[k].step = lrq_step(bias, q->base[k >> ashift], c, k & (acap - 1));
        }
        for (uint32_t k = 0; k < n; k++)
            cls_append(q, q->mem[items[k].member].cls0, items[k].member,
                       items[k].deadline);
        free(items);
    } else {
        q->over = items;
        q->nover = q->over_cap = n;
        for (uint32_t i = n / 4 + 1; i-- > 0;)
            if (i < n)
                sift_down(q->over, n, i);
    }
    q->common = q->nover == 0;
    lrq_free(sc->lrq);
    sc->lrq = q;
    return 0;
}

/* The pick when the host comes from `over` or changes class: the common case is lrq_next's
 * own. `x` is the class m was taken from (LRQ_NONE: over), `a` its active requests now. */
static __attribute__((noinline)) void lrq_move(pt_lb_lrq_t *q, uint32_t x, uint32_t m,
                                               uint64_t a, uint64_t due)
{
    if (a < q->acap) {
        if (x != LRQ_NONE) {
            cls_popped(q, x);
        } else {
            q->over[0] = q->over[--q->nover];
            sift_down(q->over, q->nover, 0);
        }
        cls_append(q, q->mem[m].cls0 | (uint32_t)a, m, due);
    } else if (x == LRQ_NONE) {
        q->over[0].deadline = due;
        sift_down(q->over, q->nover, 0);
    } else {
        cls_popped(q, x);
        if (lrq_over_push(q, m, due) != 0) {
            /* Out of memory: last of its run's last class (later than its due time). */
            uint32_t y = q->mem[m].cls0 | (q->acap - 1);
            const lrq_class_t *k = &q->cls[y];
            uint64_t last = k->head != LRQ_NONE ? q->mem[k->tail].deadline : 0;
            cls_append(q, y, m, last > due ? last : due);
        }
    }
}

static __attribute__((noinline)) void lrq_rebase(pt_lb_lrq_t *q, uint32_t n, uint64_t now)
{
    for (uint32_t i = 0; i < n; i++)
        q->mem[i].deadline -= now; /* members not in a class: rewritten when they go back */
    for (uint32_t i = 0; i < q->nclasses; i++)
        q->ckey[i] -= now;
    for (uint32_t i = 0; i < q->nover; i++)
        q->over[i].deadline -= now;
}

/* The member whose turn it is, put back with its step of now. */
static inline uint32_t lrq_next(pt_lb_lrq_t *q, const pt_cluster_t *c, const pt_lb_hosts_t *hs)
{
    lrq_member_t *mem = q->mem;
    uint64_t *ckey = q->ckey, now;
    uint32_t m, x = LRQ_NONE, nclasses = q->nclasses;
    if (__builtin_expect(q->nover == 0, 1) ||
        (nclasses != 0 && ckey[0] <= q->over[0].deadline)) {
        x = q->cid[0];
        now = ckey[0];
        m = q->cls[x].head;
    } else {
        m = q->over[0].member;
        now = q->over[0].deadline;
    }
    lrq_member_t *e = &mem[m];
    int bias = q->bias;
    uint64_t a = bias != 0 ? rq_active(c->hosts[hs->idx[m]]) : 0;
    uint64_t due = now + lrq_step(bias, q->base[e->cls0 >> q->ashift], c, a);
    uint32_t y = e->cls0 | (uint32_t)a; /* its class when a < acap */
    if (__builtin_expect(x == y && a < q->acap, 1)) {
        /* Back in its own class (the common case): last of it, the class's key its new
         * head's deadline. */
        lrq_class_t *k = &q->cls[x];
        uint32_t h = e->next;
        e->deadline = due;
        e->next = LRQ_NONE;
        if (h == LRQ_NONE) {
            h = m;
        } else {
            mem[k->tail].next = m;
        }
        k->head = h;
        k->tail = m;
        ckey[0] = mem[h].deadline;
        cls_sift_root(ckey, q->cid, nclasses);
    } else {
        if (x != LRQ_NONE)
            q->cls[x].head = e->next;
        lrq_move(q, x, m, a, due);
    }
    if (__builtin_expect(now >= EDF_REBASE, 0)) /* deadlines start again from 0, in order */
        lrq_rebase(q, hs->n, now);
    q->common = q->nover == 0;
    return m;
}

/* ---- per-worker state -------------------------------------------------------------- */

static void free_scheds(pt_lb_sched_t *s, uint32_t n)
{
    for (uint32_t i = 0; s != NULL && i < n; i++) {
        free(s[i].heap);
        free(s[i].wheel);
        lrq_free(s[i].lrq);
    }
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
    rng_seed();
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
    l->zone_view = 0; /* zone aware routing's state is computed again for this set */
    l->zone_common = 0;
    l->zone_only = s->fast == NULL && s->single >= 0 && s->single < 2 && s->zone_routing &&
                   !s->prio[0].panic && c->locality_lb != PT_LOCALITY_WEIGHTED;
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

/* The calling thread's state for c when it is up to date, else NULL (local_get makes it). */
static inline pt_lb_local_t *local_ready(pt_cluster_t *c, pt_worker_t *w)
{
    /* Made only for nlb_locals > 0. */
    pt_lb_local_t **locals = atomic_load_explicit(&c->lb_locals, memory_order_acquire);
    if (__builtin_expect(locals == NULL, 0))
        return NULL;
    unsigned shared = c->nlb_locals - 1;
    unsigned slot = w != NULL && (unsigned)w->id < shared ? (unsigned)w->id : shared;
    pt_lb_local_t *l = locals[slot];
    pt_lb_set_t *cur = atomic_load_explicit(&c->lb_set, memory_order_acquire);
    return l != NULL && l->set == cur && cur != NULL ? l : NULL;
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

/* A locality schedule: a wheel when the effective weights are integers (every locality
 * fully available: its weight itself) of a short period, else the EDF over their steps. */
static int loc_build(pt_lb_sched_t *sc, const pt_lb_localities_t *L, uint32_t nloc)
{
    int whole = nloc <= WHEEL_MAX;
    uint64_t *w = whole ? malloc((nloc ? nloc : 1) * sizeof(*w)) : NULL;
    if (whole && w == NULL)
        return -1;
    for (uint32_t j = 0; whole && j < nloc; j++) {
        double x = L->weight[j];
        whole = x >= 0.0 && x < 4294967296.0 && x == (double)(uint64_t)x;
        w[j] = whole ? (uint64_t)x : 0;
    }
    int rc = whole ? wheel_build(sc, nloc, w, NULL, 0) : 1;
    free(w);
    if (rc <= 0)
        return rc;
    edf_src_t src = {.steps = L->step};
    return edf_build(sc, nloc, &src, 0);
}

/* A weighted locality (locality_weighted_lb_config): the per-worker wheel or EDF over the
 * effective weights. */
static uint32_t locality_pick(pt_lb_local_t *l, const pt_lb_localities_t *L, uint32_t nloc)
{
    pt_lb_sched_t *sc = &l->loc_sched[L->slot];
    if (__builtin_expect(sc->wheel == NULL && sc->heap == NULL, 0) && loc_build(sc, L, nloc) != 0)
        return below(nloc);
    if (__builtin_expect(sc->wheel != NULL, 1))
        return wheel_next(sc);
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
        l->zone_common = 0; /* until computed in this view */
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
            l->zone_common = 0;
            l->zone_gen = 0; /* try again next time */
            return NULL;
        }
        if (l->zone.why == 1)
            pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_local_cluster_not_ok);
        else if (l->zone.why == 2)
            pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_zone_cluster_too_small);
        l->zone_gen = l->set->gen;
        l->zone_common = l->zone.state != PT_ZONE_NONE && !l->zone.local_panic &&
                         c->zone_routing_enabled >= 100;
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

/* Weighted LEAST_REQUEST (Envoy's EDF over the hosts, each put back with its weight of now,
 * by classes: lrq_next). */
static __attribute__((noinline)) pt_host_t *pick_lr_any(pt_cluster_t *c, pt_lb_local_t *l,
                                                        const pt_lb_hosts_t *hs,
                                                        pt_host_t *const *exclude,
                                                        unsigned nexclude)
{
    pt_lb_sched_t *sc = &l->sched[hs->slot];
    uint32_t m;
    if (__builtin_expect(sc->lrq == NULL, 0) && lrq_build(sc, c, hs) != 0)
        m = below(hs->n);
    else
        m = lrq_next(sc->lrq, c, hs);
    return finish(c, l, hs, m, exclude, nexclude);
}

/* Its common case apart, calling nothing but in tail position (no frame to set up): the
 * host of the earliest class goes back into the same class, no host is outside the
 * classes, no retry excludes hosts. Anything else is pick_lr_any's, from the same state. */
static __attribute__((noinline)) pt_host_t *pick_lr_weighted(pt_cluster_t *c, pt_lb_local_t *l,
                                                             const pt_lb_hosts_t *hs,
                                                             pt_host_t *const *exclude,
                                                             unsigned nexclude)
{
    pt_lb_lrq_t *q = l->sched[hs->slot].lrq;
    if (__builtin_expect(q == NULL || !q->common || nexclude != 0, 0))
        return pick_lr_any(c, l, hs, exclude, nexclude);
    uint64_t *ckey = q->ckey, now = ckey[0];
    uint32_t x = q->cid[0];
    lrq_class_t *k = &q->cls[x];
    lrq_member_t *mem = q->mem;
    uint32_t m = k->head;
    lrq_member_t *e = &mem[m];
    pt_host_t *h = c->hosts[hs->idx[m]];
    uint64_t a = rq_active(h) & q->amask;
    /* Its class now is x again: x - cls0 is below acap, so a is too. */
    if (__builtin_expect(a != x - e->cls0 || now >= EDF_REBASE, 0))
        return pick_lr_any(c, l, hs, NULL, 0); /* nexclude is 0 here */
    /* Last of its own class again (its step the class's), the class's key its new head's
     * deadline. */
    uint32_t next = e->next;
    e->deadline = now + k->step;
    e->next = LRQ_NONE;
    if (next == LRQ_NONE)
        next = m;
    else
        mem[k->tail].next = m;
    k->head = next;
    k->tail = m;
    ckey[0] = mem[next].deadline;
    cls_sift_root(ckey, q->cid, q->nclasses);
    if (__builtin_expect(usable(h, hs), 1))
        return h;
    return pick_around(c, l->set, hs, m, NULL, 0);
}

/* Weighted ROUND_ROBIN's schedule of runs (a run weighs its length x its weight): a wheel
 * when its period is short, else the EDF over the runs' steps. */
static int rr_build(const pt_cluster_t *c, pt_lb_sched_t *sc, const pt_lb_hosts_t *hs,
                    uint32_t seed)
{
    uint64_t *w = malloc((hs->nruns ? hs->nruns : 1) * sizeof(*w));
    if (w == NULL)
        return -1;
    for (uint32_t r = 0; r < hs->nruns; r++) {
        const pt_lb_run_t *run = &hs->runs[r];
        uint32_t hw = pt_cluster_host_info(c, hs->idx[run->start - hs->run_base])->weight;
        w[r] = (uint64_t)run->len * (hw ? hw : 1);
    }
    int rc = wheel_build(sc, hs->nruns, w, hs->runs, seed);
    free(w);
    if (rc <= 0)
        return rc;
    edf_src_t src = {.runs = hs->runs};
    return edf_build(sc, hs->nruns, &src, seed);
}

/* Weighted ROUND_ROBIN: the runs of equal weight by their schedule, round robin within the
 * run. */
static __attribute__((noinline)) pt_host_t *pick_rr_weighted(pt_cluster_t *c, pt_lb_local_t *l,
                                                             const pt_lb_hosts_t *hs,
                                                             pt_host_t *const *exclude,
                                                             unsigned nexclude)
{
    pt_lb_sched_t *sc = &l->sched[hs->slot];
    uint32_t m;
    if (__builtin_expect(sc->wheel == NULL && sc->heap == NULL, 0) &&
        rr_build(c, sc, hs, l->seed) != 0) {
        m = below(hs->n);
    } else if (__builtin_expect(sc->wheel != NULL, 1)) {
        uint32_t r = wheel_next(sc);
        const pt_lb_run_t *run = &hs->runs[r];
        uint32_t k = sc->run_cursor[r];
        sc->run_cursor[r] = k + 1 < run->len ? k + 1 : 0;
        m = run->start - hs->run_base + k;
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

/* The subset of the drawn priority and kind ch, by choose_in. */
static __attribute__((noinline)) pt_host_t *pick_subset(pt_cluster_t *c, pt_worker_t *w,
                                                        pt_lb_local_t *l, unsigned ch,
                                                        pt_host_t *const *exclude,
                                                        unsigned nexclude)
{
    const pt_lb_hosts_t *hs = choose_in(c, w, l, ch);
    if (hs == NULL)
        return NULL;
    return pick_in(c, l, hs, exclude, nexclude);
}

/* Zone aware routing's common case (l->zone_common, the state up to date, the counter
 * there), as choose_in takes it, in a function of its own so that the other cases of
 * pick_chosen set no frame up for it. Anything else goes to choose_in, with a draw of its
 * own. One random number makes both draws, 32 bits each: whether the pick stays local (of
 * 10000), else where its residual capacity (at most 10000) takes it. */
static __attribute__((noinline)) pt_host_t *pick_zone(pt_cluster_t *c, pt_worker_t *w,
                                                      pt_lb_local_t *l, unsigned ch,
                                                      pt_host_t *const *exclude,
                                                      unsigned nexclude)
{
    /* A retry's pick (hosts to exclude) too: fewer values to keep in registers here. */
    if (w == NULL || w->view == NULL || w->view->view == NULL || nexclude != 0)
        return pick_subset(c, w, l, ch, exclude, nexclude);
    const pt_lb_priority_t *pr = &l->set->prio[ch >> 1];
    const pt_lb_hosts_t *whole = &pr->hosts[ch & 1];
    pt_stat_t *ids = atomic_load_explicit(&c->lb_stats, memory_order_acquire);
    /* zone_common: zone_lc is the local cluster of this view. */
    if (__builtin_expect(w->view->view->version != l->zone_view || !l->zone_common ||
                             ids == NULL ||
                             atomic_load_explicit(&l->zone_lc->lb_set, memory_order_acquire) !=
                                 l->zone_local,
                         0))
        return pick_subset(c, w, l, ch, exclude, nexclude);
    const pt_lb_zone_t *z = &l->zone;
    int32_t me = pr->local_loc;
    uint32_t loc;
    unsigned which;
    uint64_t r = rnd();
    if (z->state == PT_ZONE_DIRECT) {
        which = PT_LB_STAT_lb_zone_routing_all_directly;
        loc = (uint32_t)me;
    } else if (me >= 0 && (uint32_t)r % 10000 < z->local_percent) {
        which = PT_LB_STAT_lb_zone_routing_sampled;
        loc = (uint32_t)me;
    } else {
        uint64_t total = z->residual[z->nloc - 1];
        if (total == 0)
            return pick_subset(c, w, l, ch, exclude, nexclude);
        which = PT_LB_STAT_lb_zone_routing_cross_zone;
        uint64_t t = (r >> 32) % total;
        uint32_t lo = 0, hi = z->nloc - 1; /* the first locality whose cumulative capacity > t */
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (t < z->residual[mid])
                hi = mid;
            else
                lo = mid + 1;
        }
        loc = lo;
    }
    pt_stat_t id = __atomic_load_n(&ids[which], __ATOMIC_RELAXED);
    if (__builtin_expect(id == 0, 0)) /* made by choose_in, once */
        return pick_subset(c, w, l, ch, exclude, nexclude);
    pt_stat_inc(id);
    const pt_lb_hosts_t *hs = &pr->loc[ch & 1].sets[loc];
    /* Envoy fails the pick when the locality has none of the kind; the whole kind is used
     * instead (as choose_in). */
    return pick_in(c, l, hs->n > 0 ? hs : whole, NULL, 0);
}

/* The subset is to be chosen first (several priorities, localities, zones). Its common
 * cases, a priority's whole kind or a locality from its wheel, are choose_in's own made
 * inline, ending in a tail call (no frame to set up); the others (panic, a schedule's first
 * pick, zone aware routing) go to choose_in with the same draw. */
static __attribute__((noinline)) pt_host_t *pick_chosen(pt_cluster_t *c, pt_worker_t *w,
                                                        pt_lb_local_t *l,
                                                        pt_host_t *const *exclude,
                                                        unsigned nexclude)
{
    const pt_lb_set_t *s = l->set;
    unsigned ch = s->single >= 0 ? (unsigned)s->single : s->choice[rnd() % 100];
    unsigned p = ch >> 1, kind = ch & 1;
    const pt_lb_priority_t *pr = &s->prio[p];
    if (__builtin_expect(!pr->panic, 1)) {
        if (c->locality_lb == PT_LOCALITY_WEIGHTED) {
            const pt_lb_localities_t *L = &pr->loc[kind];
            if (L->step == NULL)
                return pick_in(c, l, &pr->hosts[kind], exclude, nexclude);
            pt_lb_sched_t *sc = &l->loc_sched[L->slot];
            if (__builtin_expect(sc->wheel != NULL, 1)) {
                const pt_lb_hosts_t *hs = &L->sets[wheel_next(sc)];
                return pick_in(c, l, hs->n > 0 ? hs : &pr->hosts[kind], exclude, nexclude);
            }
        } else if (p != 0 || !s->zone_routing) {
            return pick_in(c, l, &pr->hosts[kind], exclude, nexclude);
        } else {
            return pick_zone(c, w, l, ch, exclude, nexclude);
        }
    }
    return pick_subset(c, w, l, ch, exclude, nexclude);
}

/* A pick whose state is to be made or brought up to date first: out of pt_lb_pick, which
 * then calls nothing but in tail position (no frame to set up). */
static __attribute__((noinline)) pt_host_t *pick_slow(pt_cluster_t *c, pt_worker_t *w,
                                                      pt_host_t *const *exclude,
                                                      unsigned nexclude)
{
    pt_lb_local_t *l = local_get(c, w);
    if (l == NULL)
        return NULL;
    const pt_lb_hosts_t *hs = l->set->fast;
    if (hs == NULL)
        return pick_chosen(c, w, l, exclude, nexclude);
    return pick_in(c, l, hs, exclude, nexclude);
}

pt_host_t *pt_lb_pick(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                      unsigned nexclude)
{
    pt_lb_local_t *l = local_ready(c, w);
    if (__builtin_expect(l == NULL, 0))
        return pick_slow(c, w, exclude, nexclude);
    const pt_lb_hosts_t *hs = l->set->fast;
    if (hs != NULL)
        return pick_in(c, l, hs, exclude, nexclude);
    if (l->zone_only)
        return pick_zone(c, w, l, (unsigned)l->set->single, exclude, nexclude);
    return pick_chosen(c, w, l, exclude, nexclude);
}
