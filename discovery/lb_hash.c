#include "discovery/lb_hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/priority_set.h"
#include "proxy/cluster.h"
#include "proxy/random.h"
#include "proxy/worker.h"

/* ---- hash functions --------------------------------------------------------------------- */

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* Little-endian loads, whatever the machine (xxHash and Envoy's hashes read bytes so). */
static inline uint64_t le64(const unsigned char *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

static inline uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* XXH64's primes (xxHash specification, Yann Collet). */
#define XXP1 0x9E3779B185EBCA87ull
#define XXP2 0xC2B2AE3D27D4EB4Full
#define XXP3 0x165667B19E3779F9ull
#define XXP4 0x85EBCA77C2B2AE63ull
#define XXP5 0x27D4EB2F165667C5ull

static inline uint64_t xx_round(uint64_t acc, uint64_t input)
{
    acc += input * XXP2;
    acc = rotl64(acc, 31);
    return acc * XXP1;
}

static inline uint64_t xx_merge(uint64_t acc, uint64_t val)
{
    acc ^= xx_round(0, val);
    return acc * XXP1 + XXP4;
}

uint64_t pt_xxhash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data, *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = seed + XXP1 + XXP2, v2 = seed + XXP2, v3 = seed, v4 = seed - XXP1;
        const unsigned char *limit = end - 32;
        do {
            v1 = xx_round(v1, le64(p));
            v2 = xx_round(v2, le64(p + 8));
            v3 = xx_round(v3, le64(p + 16));
            v4 = xx_round(v4, le64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xx_merge(h, v1);
        h = xx_merge(h, v2);
        h = xx_merge(h, v3);
        h = xx_merge(h, v4);
    } else {
        h = seed + XXP5;
    }
    h += (uint64_t)len;
    while (end - p >= 8) {
        h ^= xx_round(0, le64(p));
        h = rotl64(h, 27) * XXP1 + XXP4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)le32(p) * XXP1;
        h = rotl64(h, 23) * XXP2 + XXP3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)*p * XXP5;
        h = rotl64(h, 11) * XXP1;
        p++;
    }
    h ^= h >> 33;
    h *= XXP2;
    h ^= h >> 29;
    h *= XXP3;
    h ^= h >> 32;
    return h;
}

static inline uint64_t shift_mix(uint64_t v)
{
    return v ^ (v >> 47);
}

uint64_t pt_murmur2_64(const void *data, size_t len, uint64_t seed)
{
    const uint64_t mul = 0xc6a4a7935bd1e995ull;
    const unsigned char *p = data;
    const unsigned char *end = p + (len & ~(size_t)7);
    uint64_t h = seed ^ ((uint64_t)len * mul);
    for (; p != end; p += 8) {
        uint64_t d = shift_mix(le64(p) * mul) * mul;
        h ^= d;
        h *= mul;
    }
    size_t rest = len & 7;
    if (rest != 0) {
        uint64_t d = 0;
        for (size_t i = rest; i-- > 0;)
            d = (d << 8) + p[i];
        h ^= d;
        h *= mul;
    }
    h = shift_mix(h) * mul;
    return shift_mix(h);
}

int pt_is_prime(uint64_t n)
{
    if (n < 2)
        return 0;
    if (n % 2 == 0)
        return n == 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0)
            return 0;
    return 1;
}

/* ---- tables -------------------------------------------------------------------------------- */

static _Atomic uint64_t next_table_id = 1;

/* Bits of the hash a ring's buckets go by: about one entry per bucket, at most 2^20
 * buckets (4 MiB beside a ring of 8M entries, 128 MiB). */
static unsigned ring_bucket_bits(size_t size)
{
    unsigned b = 1;
    while (b < 20 && ((size_t)1 << b) < size)
        b++;
    return b;
}

/* A table of `size` entries over n members, in one allocation. */
static pt_lb_hash_t *table_new(pt_lb_hash_kind_t kind, size_t size, const pt_lb_hash_host_t *hosts,
                               unsigned n)
{
    unsigned bits = kind == PT_LB_HASH_RING ? ring_bucket_bits(size) : 0;
    size_t nbuckets = kind == PT_LB_HASH_RING ? ((size_t)1 << bits) + 1 : 0;
    size_t bytes = sizeof(pt_lb_hash_t) + (size_t)n * sizeof(void *) + size * sizeof(void *) +
                   (kind == PT_LB_HASH_RING ? size * sizeof(uint64_t) : 0) +
                   nbuckets * sizeof(uint32_t);
    pt_lb_hash_t *t = malloc(bytes);
    if (t == NULL)
        return NULL;
    memset(t, 0, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->id = atomic_fetch_add_explicit(&next_table_id, 1, memory_order_relaxed);
    t->kind = kind;
    t->size = size;
    char *p = (char *)(t + 1);
    if (kind == PT_LB_HASH_RING) {
        t->ring_hashes = (uint64_t *)p;
        p += size * sizeof(uint64_t);
    }
    t->entries = (void **)p;
    p += size * sizeof(void *);
    t->members = (void **)p;
    p += (size_t)n * sizeof(void *);
    t->nmembers = n;
    for (unsigned i = 0; i < n; i++)
        t->members[i] = hosts[i].host;
    if (kind == PT_LB_HASH_RING) {
        t->buckets = (const uint32_t *)p;
        t->bucket_shift = 64 - bits;
        memset(p, 0, nbuckets * sizeof(uint32_t)); /* an empty ring: every bucket empty */
    }
    return t;
}

pt_lb_hash_t *pt_lb_hash_ref(pt_lb_hash_t *t)
{
    if (t != NULL)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void pt_lb_hash_unref(pt_lb_hash_t *t)
{
    if (t != NULL && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        free(t);
}

typedef struct ring_entry {
    uint64_t hash;
    void *host;
} ring_entry_t;

static int ring_entry_cmp(const void *a, const void *b)
{
    uint64_t x = ((const ring_entry_t *)a)->hash, y = ((const ring_entry_t *)b)->hash;
    return x < y ? -1 : x > y;
}

/* ceil() of a non-negative x below 2^63, without libm (the core links none). */
static double ceil_pos(double x)
{
    double t = (double)(uint64_t)x;
    return t < x ? t + 1.0 : t;
}

/* Envoy's normalized weights: weight / sum, the smallest and the largest. */
static uint64_t weight_sum(const pt_lb_hash_host_t *hosts, unsigned n, double *min_w,
                           double *max_w)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < n; i++)
        sum += hosts[i].weight;
    *min_w = 1.0;
    *max_w = 0.0;
    for (unsigned i = 0; i < n; i++) {
        double w = (double)hosts[i].weight / (double)sum;
        *min_w = w < *min_w ? w : *min_w;
        *max_w = w > *max_w ? w : *max_w;
    }
    return sum;
}

pt_lb_hash_t *pt_lb_ring_build(const pt_lb_hash_host_t *hosts, unsigned n, uint64_t min_size,
                               uint64_t max_size, pt_hash_function_t fn)
{
    if (n == 0)
        return table_new(PT_LB_HASH_RING, 0, hosts, 0);
    double min_w, max_w;
    uint64_t sum = weight_sum(hosts, n, &min_w, &max_w);
    /* The lightest host gets a whole number of entries; the ring no more than max_size. */
    double scale = ceil_pos(min_w * (double)min_size) / min_w;
    if ((double)max_size < scale)
        scale = (double)max_size;
    /* The running sums below make at most ceil(scale) + 1 entries. */
    size_t cap = (size_t)ceil_pos(scale) + 2;
    ring_entry_t *ring = malloc(cap * sizeof(*ring));
    size_t key_cap = 64;
    char *key = malloc(key_cap);
    if (ring == NULL || key == NULL) {
        free(ring);
        free(key);
        return NULL;
    }
    size_t count = 0;
    double current = 0.0, target = 0.0;
    uint64_t min_per = UINT64_MAX, max_per = 0;
    for (unsigned k = 0; k < n; k++) {
        const pt_lb_hash_host_t *hh = &hosts[k];
        if (hh->key_len + 22 > key_cap) {
            size_t nc = hh->key_len + 22;
            char *nk = realloc(key, nc);
            if (nk == NULL)
                goto oom;
            key = nk;
            key_cap = nc;
        }
        memcpy(key, hh->key, hh->key_len);
        key[hh->key_len] = '_';
        target += scale * ((double)hh->weight / (double)sum);
        uint64_t i = 0;
        while (current < target) {
            int len = snprintf(key + hh->key_len + 1, 21, "%llu", (unsigned long long)i);
            size_t klen = hh->key_len + 1 + (size_t)len;
            if (count == cap) {
                ring_entry_t *nr = realloc(ring, (cap * 2) * sizeof(*ring));
                if (nr == NULL)
                    goto oom;
                ring = nr;
                cap *= 2;
            }
            ring[count].hash = fn == PT_HASH_MURMUR_HASH_2
                                   ? pt_murmur2_64(key, klen, PT_MURMUR_STD_SEED)
                                   : pt_xxhash64(key, klen, 0);
            ring[count].host = hh->host;
            count++;
            i++;
            current += 1.0;
        }
        min_per = i < min_per ? i : min_per;
        max_per = i > max_per ? i : max_per;
    }
    free(key);
    key = NULL;
    qsort(ring, count, sizeof(*ring), ring_entry_cmp);
    pt_lb_hash_t *t = table_new(PT_LB_HASH_RING, count, hosts, n);
    if (t != NULL) {
        for (size_t i = 0; i < count; i++) {
            t->ring_hashes[i] = ring[i].hash;
            t->entries[i] = ring[i].host;
        }
        /* Bucket k begins at the first entry whose top bits are k or more. */
        uint32_t *b = (uint32_t *)t->buckets;
        size_t nb = ((size_t)1 << (64 - t->bucket_shift)), i = 0;
        for (size_t k = 0; k <= nb; k++) {
            while (i < count && (t->ring_hashes[i] >> t->bucket_shift) < k)
                i++;
            b[k] = (uint32_t)i;
        }
        t->min_per_host = min_per;
        t->max_per_host = max_per;
    }
    free(ring);
    return t;
oom:
    free(ring);
    free(key);
    return NULL;
}

typedef struct maglev_entry {
    const pt_lb_hash_host_t *h;
    uint64_t offset, skip, next, count;
    double weight, target;
} maglev_entry_t;

static int maglev_key_cmp(const void *a, const void *b)
{
    const pt_lb_hash_host_t *x = ((const maglev_entry_t *)a)->h, *y = ((const maglev_entry_t *)b)->h;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c != 0)
        return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

pt_lb_hash_t *pt_lb_maglev_build(const pt_lb_hash_host_t *hosts, unsigned n, uint64_t m)
{
    if (n == 0)
        return table_new(PT_LB_HASH_MAGLEV, 0, hosts, 0);
    double min_w, max_w;
    uint64_t sum = weight_sum(hosts, n, &min_w, &max_w);
    maglev_entry_t *e = calloc(n, sizeof(*e));
    pt_lb_hash_t *t = table_new(PT_LB_HASH_MAGLEV, (size_t)m, hosts, n);
    if (e == NULL || t == NULL) {
        free(e);
        pt_lb_hash_unref(t);
        return NULL;
    }
    /* In the order of their keys, as Envoy: the table does not depend on the order the hosts
     * were listed in. */
    for (unsigned i = 0; i < n; i++)
        e[i].h = &hosts[i];
    qsort(e, n, sizeof(*e), maglev_key_cmp);
    for (unsigned i = 0; i < n; i++) {
        e[i].offset = pt_xxhash64(e[i].h->key, e[i].h->key_len, 0) % m;
        e[i].skip = pt_xxhash64(e[i].h->key, e[i].h->key_len, 1) % (m - 1) + 1;
        e[i].weight = (double)e[i].h->weight / (double)sum;
    }
    memset(t->entries, 0, (size_t)m * sizeof(void *));
    uint64_t filled = 0;
    /* Round after round each host takes its next preferred free slot; a host of weight w
     * takes part in a round when the rounds so far times w reach its target, which grows by
     * the largest weight each time it takes a slot. */
    for (uint32_t iteration = 1; filled < m; iteration++) {
        for (unsigned i = 0; i < n && filled < m; i++) {
            maglev_entry_t *x = &e[i];
            if ((double)iteration * x->weight < x->target)
                continue;
            x->target += max_w;
            uint64_t c = (x->offset + x->skip * x->next) % m;
            while (t->entries[c] != NULL) {
                x->next++;
                c = (x->offset + x->skip * x->next) % m;
            }
            t->entries[c] = x->h->host;
            x->next++;
            x->count++;
            filled++;
        }
    }
    t->min_per_host = UINT64_MAX;
    for (unsigned i = 0; i < n; i++) {
        t->min_per_host = e[i].count < t->min_per_host ? e[i].count : t->min_per_host;
        t->max_per_host = e[i].count > t->max_per_host ? e[i].count : t->max_per_host;
    }
    free(e);
    return t;
}

/* ---- a cluster version's published tables ------------------------------------------------ */

/* The tables of one health state of a cluster version, as Envoy's thread-aware balancers
 * keep them: per priority one table, over its healthy hosts, or over all of its hosts while
 * it is in panic (NULL when that is none), and the priority set whose priority load a pick
 * follows. A hash picks the priority first (hash % 100 against the load, Envoy's
 * choosePriority), then its host in that priority's table: a priority that fails over keeps
 * its keys where they were in the others. Degraded hosts are in no table (Envoy's are not
 * either): a draw that lands on a priority's degraded share picks among its healthy hosts. */
typedef struct hash_tables {
    _Atomic long refs;
    uint64_t id; /* unique among the table sets of this process */
    pt_lb_set_t *set; /* a reference */
    unsigned nprio;
    pt_lb_hash_t **t; /* [priority * 3 + pt_lb_kind_t]: PT_LB_HEALTHY or PT_LB_ALL */
    /* The table of every pick when one priority and kind takes the whole load and is not
     * in panic (the common case: no draw); NULL otherwise. */
    const pt_lb_hash_t *only;
} hash_tables_t;

static _Atomic uint64_t next_tables_id = 1;

static void tables_unref(hash_tables_t *ts)
{
    if (ts == NULL || atomic_fetch_sub_explicit(&ts->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < ts->nprio * 3; i++)
        pt_lb_hash_unref(ts->t[i]);
    pt_lb_set_unref(ts->set);
    free(ts->t);
    free(ts);
}

typedef struct lb_hash_slot {
    _Alignas(64) hash_tables_t *tables; /* the worker's reference to the set it last used */
} lb_hash_slot_t;

/* The tables picks of one cluster version use. The main thread replaces `current` (under the
 * lock, bumping current_id); a worker sees the id change with one atomic load and takes a
 * reference to the new tables under the lock, dropping its reference to the old ones, which
 * are freed by whoever lets go of them last. */
struct pt_lb_hash_pub {
    pthread_mutex_t lock;
    hash_tables_t *current; /* a reference; written by the main thread only */
    _Atomic uint64_t current_id;
    unsigned nslots;
    lb_hash_slot_t slots[];
};

__attribute__((noinline, cold)) static hash_tables_t *slot_refresh(struct pt_lb_hash_pub *p,
                                                                   lb_hash_slot_t *s)
{
    pthread_mutex_lock(&p->lock);
    hash_tables_t *ts = p->current;
    atomic_fetch_add_explicit(&ts->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&p->lock);
    tables_unref(s->tables);
    s->tables = ts;
    return ts;
}

static inline const hash_tables_t *tables_for(const pt_cluster_t *c, const pt_worker_t *w)
{
    struct pt_lb_hash_pub *p = c->lb_hash_pub;
    if (p == NULL)
        return NULL;
    /* The main thread (no slot, id -1) writes current itself: it reads it as it is. */
    if (w == NULL || (unsigned)w->id >= p->nslots)
        return p->current;
    lb_hash_slot_t *s = &p->slots[w->id];
    uint64_t id = atomic_load_explicit(&p->current_id, memory_order_acquire);
    if (s->tables != NULL && s->tables->id == id)
        return s->tables;
    return slot_refresh(p, s);
}

const pt_lb_hash_t *pt_lb_hash_cluster_table(const pt_cluster_t *c, unsigned priority,
                                             unsigned kind)
{
    const hash_tables_t *ts = c->lb_hash_pub != NULL ? c->lb_hash_pub->current : NULL;
    if (ts == NULL || priority >= ts->nprio || kind > PT_LB_ALL)
        return NULL;
    return ts->t[priority * 3 + kind];
}

static void publish(struct pt_lb_hash_pub *p, hash_tables_t *ts)
{
    pthread_mutex_lock(&p->lock);
    hash_tables_t *old = p->current;
    p->current = ts;
    atomic_store_explicit(&p->current_id, ts->id, memory_order_release);
    pthread_mutex_unlock(&p->lock);
    tables_unref(old); /* workers that still use them hold their own references */
}

/* The hosts of a subset of the set, as a table is built over them. Their keys point into the
 * hosts. */
static unsigned subset_hosts(const pt_cluster_t *c, const pt_lb_hosts_t *hs,
                             pt_lb_hash_host_t *out)
{
    const pt_lb_hash_config_t *cfg = c->lb_hash;
    for (uint32_t i = 0; i < hs->n; i++) {
        uint32_t k = hs->idx[i];
        pt_host_t *h = c->hosts[k];
        const char *key = h->address_str;
        if (cfg->use_hostname && h->hostname != NULL && h->hostname[0])
            key = h->hostname;
        uint32_t w = pt_cluster_host_info(c, k)->weight;
        out[i] = (pt_lb_hash_host_t){.key = key, .key_len = strlen(key), .weight = w ? w : 1,
                                     .host = h};
    }
    return hs->n;
}

static pt_lb_hash_t *build_for(const pt_cluster_t *c, const pt_lb_hash_host_t *hosts, unsigned n)
{
    const pt_lb_hash_config_t *cfg = c->lb_hash;
    if (cfg->kind == PT_LB_HASH_MAGLEV)
        return pt_lb_maglev_build(hosts, n, cfg->table_size);
    return pt_lb_ring_build(hosts, n, cfg->min_ring_size, cfg->max_ring_size, cfg->hash_function);
}

static int same_members(const pt_lb_hash_t *t, const pt_lb_hash_host_t *hosts, unsigned n)
{
    if (t == NULL || t->nmembers != n)
        return 0;
    for (unsigned i = 0; i < n; i++)
        if (t->members[i] != hosts[i].host)
            return 0;
    return 1;
}

/* The tables of c's set now; a table over the same hosts as one of `old` at the same place
 * is that table, not one built again. *unchanged: every table and the priority choice are
 * old's (nothing to publish). NULL out of memory. */
static hash_tables_t *tables_build(const pt_cluster_t *c, const hash_tables_t *old,
                                   int *unchanged)
{
    *unchanged = 0;
    pt_lb_set_t *set = pt_lb_set_acquire((pt_cluster_t *)c, pt_lb_thread_slot(NULL));
    if (set == NULL)
        return NULL;
    hash_tables_t *ts = calloc(1, sizeof(*ts));
    pt_lb_hash_host_t *hosts = malloc((c->nhosts ? c->nhosts : 1) * sizeof(*hosts));
    if (ts == NULL || hosts == NULL ||
        (set->npriorities > 0 &&
         (ts->t = calloc((size_t)set->npriorities * 3, sizeof(*ts->t))) == NULL)) {
        free(hosts);
        free(ts);
        pt_lb_set_unref(set);
        return NULL;
    }
    atomic_init(&ts->refs, 1);
    ts->set = set;
    ts->nprio = set->npriorities;
    int same = old != NULL && old->nprio == ts->nprio && old->set->single == set->single &&
               (set->choice == NULL) == (old->set->choice == NULL) &&
               (set->choice == NULL ||
                memcmp(set->choice, old->set->choice, 100 * sizeof(*set->choice)) == 0);
    for (unsigned p = 0; p < ts->nprio; p++) {
        const pt_lb_priority_t *pr = &set->prio[p];
        for (unsigned kind = 0; kind < 3; kind++) {
            unsigned at = p * 3 + kind;
            const pt_lb_hash_t *was = old != NULL && at < old->nprio * 3 ? old->t[at] : NULL;
            /* A priority's healthy hosts, or all of them in its panic. */
            unsigned want = pr->panic ? PT_LB_ALL : PT_LB_HEALTHY;
            unsigned n = kind != want ? 0 : subset_hosts(c, &pr->hosts[kind], hosts);
            if (n == 0) {
                same &= was == NULL;
                continue;
            }
            if (same_members(was, hosts, n)) {
                ts->t[at] = pt_lb_hash_ref((pt_lb_hash_t *)was);
                continue;
            }
            same = 0;
            if ((ts->t[at] = build_for(c, hosts, n)) == NULL) {
                free(hosts);
                tables_unref(ts);
                return NULL;
            }
        }
    }
    free(hosts);
    if (set->single >= 0 && !set->prio[set->single >> 1].panic)
        ts->only = ts->t[(set->single >> 1) * 3 + PT_LB_HEALTHY];
    ts->id = atomic_fetch_add_explicit(&next_tables_id, 1, memory_order_relaxed);
    *unchanged = same;
    return ts;
}

int pt_lb_hash_cluster_prepare(pt_cluster_t *c)
{
    if (c->lb_hash == NULL || c->lb_hash_pub != NULL)
        return 0;
    unsigned nslots = pt_worker_count();
    size_t bytes = sizeof(struct pt_lb_hash_pub) + nslots * sizeof(lb_hash_slot_t);
    bytes = (bytes + 63) & ~(size_t)63;
    struct pt_lb_hash_pub *p = aligned_alloc(64, bytes);
    int unchanged;
    hash_tables_t *ts = p != NULL ? tables_build(c, NULL, &unchanged) : NULL;
    if (ts == NULL) {
        free(p);
        return -1;
    }
    memset(p, 0, bytes);
    pthread_mutex_init(&p->lock, NULL);
    p->current = ts;
    atomic_init(&p->current_id, ts->id);
    p->nslots = nslots;
    c->lb_hash_pub = p;
    return 0;
}

void pt_lb_hash_cluster_health_changed(pt_cluster_t *c)
{
    struct pt_lb_hash_pub *p = c->lb_hash_pub;
    if (p == NULL)
        return;
    int unchanged;
    hash_tables_t *ts = tables_build(c, p->current, &unchanged);
    if (ts == NULL)
        return; /* out of memory: the tables stay as they are until the next change */
    if (unchanged)
        tables_unref(ts);
    else
        publish(p, ts);
}

void pt_lb_hash_cluster_dispose(pt_cluster_t *c)
{
    struct pt_lb_hash_pub *p = c->lb_hash_pub;
    if (p == NULL)
        return;
    for (unsigned i = 0; i < p->nslots; i++)
        tables_unref(p->slots[i].tables);
    tables_unref(p->current);
    pthread_mutex_destroy(&p->lock);
    free(p);
    c->lb_hash_pub = NULL;
}

static int excluded(const pt_host_t *h, pt_host_t *const *exclude, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (exclude[i] == h)
            return 1;
    return 0;
}

/* The table a hash picks in: its priority by the priority load, that priority's healthy
 * hosts, all of them in its panic. NULL when there is none (no host, or a
 * panic with fail_traffic_on_panic). */
__attribute__((noinline)) static const pt_lb_hash_t *table_of(pt_cluster_t *c,
                                                               const hash_tables_t *ts,
                                                               uint64_t h)
{
    if (ts->only != NULL)
        return ts->only;
    if (__builtin_expect(ts->nprio == 0, 0))
        return NULL;
    const pt_lb_set_t *s = ts->set;
    unsigned ch = s->single >= 0 ? (unsigned)s->single : s->choice[h % 100];
    unsigned p = ch >> 1, kind = PT_LB_HEALTHY; /* healthy or degraded share alike */
    if (__builtin_expect(s->prio[p].panic, 0)) {
        pt_cluster_lb_stat_inc(c, PT_LB_STAT_lb_healthy_panic);
        if (c->fail_traffic_on_panic)
            return NULL;
        kind = PT_LB_ALL;
    }
    return ts->t[p * 3 + kind];
}

/* Attempts at another host when the first is excluded (a retry avoiding hosts tried). */
#define HASH_RETRY_ATTEMPTS 16

/* The picks off the common path: no hash (a random one), or hosts to avoid. */
__attribute__((noinline)) static pt_host_t *pick_slow(pt_cluster_t *c, const hash_tables_t *ts,
                                                      const pt_lb_context_t *ctx,
                                                      pt_host_t *const *exclude,
                                                      unsigned nexclude)
{
    /* Without a hash, a random one: Envoy's hash balancers then pick at random. */
    uint64_t h = ctx != NULL && ctx->has_hash ? ctx->hash : pt_random_u64();
    const pt_lb_hash_t *t = table_of(c, ts, h);
    if (t == NULL)
        return NULL;
    pt_host_t *host = pt_lb_hash_choose(t, h, 0);
    if (host == NULL || nexclude == 0 || !excluded(host, exclude, nexclude))
        return host;
    for (uint32_t a = 1; a <= HASH_RETRY_ATTEMPTS; a++) {
        pt_host_t *other = pt_lb_hash_choose(t, h, a);
        if (!excluded(other, exclude, nexclude))
            return other;
    }
    return host; /* every attempt was tried already: the hash's own host again */
}

pt_host_t *pt_lb_hash_pick(pt_cluster_t *c, pt_worker_t *w, const pt_lb_context_t *ctx,
                           pt_host_t *const *exclude, unsigned nexclude)
{
    const hash_tables_t *ts = tables_for(c, w);
    if (__builtin_expect(ts == NULL, 0))
        return NULL;
    if (__builtin_expect(ctx == NULL || !ctx->has_hash || nexclude > 0, 0))
        return pick_slow(c, ts, ctx, exclude, nexclude);
    /* One table takes every pick (one priority, no panic), else a draw picks it. */
    const pt_lb_hash_t *t = ts->only;
    if (__builtin_expect(t == NULL, 0) && (t = table_of(c, ts, ctx->hash)) == NULL)
        return NULL;
    return pt_lb_hash_choose(t, ctx->hash, 0);
}

/* ---- configuration ------------------------------------------------------------------------ */

#define LBP_PREFIX "type.googleapis.com/envoy.extensions.load_balancing_policies."

/* consistent_hashing_lb_config (reader inside it), of the Cluster's common_lb_config or of a
 * typed RingHash / Maglev. */
static void parse_consistent_hashing(pt_cfg_t *r, int *use_hostname)
{
    uint64_t factor;
    if (pt_cfg_uint(r, "hash_balance_factor", &factor, 0, 100, UINT32_MAX) > 0)
        pt_cfg_error(r, "hash_balance_factor",
                     "is not supported (bounded-load consistent hashing is not implemented)");
    /* The typed policies' own hash policies (Envoy's LB-level hash_policy): routes carry
     * petrel's. */
    static const char *const unsupported[] = {"hash_policy", NULL};
    pt_cfg_unsupported(r, unsupported);
    pt_cfg_accept_empty(r, "hash_policy");
    pt_cfg_bool(r, "use_hostname_for_hashing", use_hostname, 0);
}

static pt_lb_hash_config_t *new_config(pt_cfg_t *r, pt_cluster_t *c, pt_lb_hash_kind_t kind)
{
    pt_lb_hash_config_t *cfg = pt_arena_alloc(&c->arena, sizeof(*cfg));
    if (cfg == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    *cfg = (pt_lb_hash_config_t){.kind = kind,
                                 .min_ring_size = PT_RING_HASH_MIN_DEFAULT,
                                 .max_ring_size = PT_RING_HASH_MAX_DEFAULT,
                                 .hash_function = PT_HASH_XX_HASH,
                                 .table_size = PT_MAGLEV_TABLE_SIZE_DEFAULT};
    return cfg;
}

/* The ring sizes (reader in a RingHashLbConfig or a RingHash). */
static void parse_ring_sizes(pt_cfg_t *r, pt_lb_hash_config_t *cfg)
{
    pt_cfg_uint(r, "minimum_ring_size", &cfg->min_ring_size, PT_RING_HASH_MIN_DEFAULT, 1,
                PT_RING_HASH_SIZE_LIMIT);
    pt_cfg_uint(r, "maximum_ring_size", &cfg->max_ring_size, PT_RING_HASH_MAX_DEFAULT, 1,
                PT_RING_HASH_SIZE_LIMIT);
    if (cfg->min_ring_size > cfg->max_ring_size)
        pt_cfg_error(r, "minimum_ring_size",
                     "%llu is greater than maximum_ring_size (%llu)",
                     (unsigned long long)cfg->min_ring_size,
                     (unsigned long long)cfg->max_ring_size);
}

static void parse_table_size(pt_cfg_t *r, pt_lb_hash_config_t *cfg)
{
    if (pt_cfg_uint(r, "table_size", &cfg->table_size, PT_MAGLEV_TABLE_SIZE_DEFAULT, 2,
                    PT_MAGLEV_TABLE_SIZE_LIMIT - 1) > 0 &&
        !pt_is_prime(cfg->table_size))
        pt_cfg_error(r, "table_size", "%llu is not a prime number (Maglev's table size must "
                                      "be prime, e.g. 65537)",
                     (unsigned long long)cfg->table_size);
}

/* One typed policy (reader inside its typed_config); its type URL says which. 1 when petrel
 * has it (c now uses it), 0 when not. */
static int parse_typed_policy(pt_cfg_t *r, pt_cluster_t *c, const char *type)
{
    static const char *const locality[] = {"locality_lb_config", "slow_start_config", NULL};
    static const char *const hash_locality[] = {"locality_weighted_lb_config", NULL};
    if (strcmp(type, LBP_PREFIX "round_robin.v3.RoundRobin") == 0) {
        pt_cfg_unsupported(r, locality);
        c->lb_policy = PT_LB_ROUND_ROBIN;
        return 1;
    }
    if (strcmp(type, LBP_PREFIX "random.v3.Random") == 0) {
        pt_cfg_unsupported(r, locality);
        c->lb_policy = PT_LB_RANDOM;
        return 1;
    }
    if (strcmp(type, LBP_PREFIX "least_request.v3.LeastRequest") == 0) {
        static const char *const lr[] = {"locality_lb_config", "slow_start_config",
                                         "active_request_bias", NULL};
        pt_cfg_unsupported(r, lr);
        uint64_t n;
        pt_cfg_uint(r, "choice_count", &n, 2, 2, 100);
        c->lb_choice_count = (uint32_t)n;
        int full_scan;
        if (pt_cfg_bool(r, "enable_full_scan", &full_scan, 0) > 0 && full_scan)
            pt_cfg_error(r, "enable_full_scan", "is not supported");
        static const char *const methods[] = {"N_CHOICES", NULL};
        static const char *const methods_known[] = {"FULL_SCAN", NULL};
        int m;
        pt_cfg_enum(r, "selection_method", methods, methods_known, &m, 0);
        c->lb_policy = PT_LB_LEAST_REQUEST;
        return 1;
    }
    if (strcmp(type, LBP_PREFIX "ring_hash.v3.RingHash") == 0) {
        pt_cfg_unsupported(r, hash_locality);
        pt_lb_hash_config_t *cfg = new_config(r, c, PT_LB_HASH_RING);
        if (cfg == NULL)
            return 1;
        /* RingHash.HashFunction: DEFAULT_HASH (xxHash) first. */
        static const char *const fns[] = {"DEFAULT_HASH", "XX_HASH", "MURMUR_HASH_2", NULL};
        int fn;
        pt_cfg_enum(r, "hash_function", fns, NULL, &fn, 0);
        cfg->hash_function = fn == 2 ? PT_HASH_MURMUR_HASH_2 : PT_HASH_XX_HASH;
        parse_ring_sizes(r, cfg);
        uint64_t factor;
        if (pt_cfg_uint(r, "hash_balance_factor", &factor, 0, 100, UINT32_MAX) > 0)
            pt_cfg_error(r, "hash_balance_factor", "is not supported (bounded-load consistent "
                                                   "hashing is not implemented)");
        int deprecated_hostname;
        pt_cfg_bool(r, "use_hostname_for_hashing", &deprecated_hostname, 0);
        cfg->use_hostname = deprecated_hostname;
        if (pt_cfg_enter(r, "consistent_hashing_lb_config") > 0) {
            parse_consistent_hashing(r, &cfg->use_hostname);
            pt_cfg_leave(r);
        }
        c->lb_hash = cfg;
        c->lb_policy = PT_LB_RING_HASH;
        return 1;
    }
    if (strcmp(type, LBP_PREFIX "maglev.v3.Maglev") == 0) {
        pt_cfg_unsupported(r, hash_locality);
        pt_lb_hash_config_t *cfg = new_config(r, c, PT_LB_HASH_MAGLEV);
        if (cfg == NULL)
            return 1;
        parse_table_size(r, cfg);
        if (pt_cfg_enter(r, "consistent_hashing_lb_config") > 0) {
            parse_consistent_hashing(r, &cfg->use_hostname);
            pt_cfg_leave(r);
        }
        c->lb_hash = cfg;
        c->lb_policy = PT_LB_MAGLEV;
        return 1;
    }
    return 0;
}

/* load_balancing_policy (reader inside it): the first policy petrel has is used, as Envoy
 * uses the first it has a factory for; the others are not read. */
static void parse_load_balancing_policy(pt_cfg_t *r, pt_cluster_t *c)
{
    int present;
    size_t n = pt_cfg_array(r, "policies", &present);
    if (!present || n == 0) {
        pt_cfg_error(r, "policies", "must have at least one policy");
        if (present)
            pt_cfg_leave_array(r);
        return;
    }
    int chosen = 0;
    char unsupported[400] = "";
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        if (chosen) {
            pt_cfg_skip_rest(r);
            pt_cfg_leave(r);
            continue;
        }
        if (pt_cfg_enter(r, "typed_extension_config") <= 0) {
            pt_cfg_error(r, "typed_extension_config", "is required");
            pt_cfg_skip_rest(r);
            pt_cfg_leave(r);
            continue;
        }
        const char *name;
        pt_cfg_string(r, "name", &name, "");
        int rc;
        const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
        if (type == NULL) {
            if (rc == 0)
                pt_cfg_error(r, "typed_config", "is required");
        } else {
            if (parse_typed_policy(r, c, type)) {
                chosen = 1;
            } else {
                size_t used = strlen(unsupported);
                snprintf(unsupported + used, sizeof(unsupported) - used, "%s%s (%s)",
                         used ? ", " : "", name[0] ? name : "unnamed", type);
                pt_cfg_skip_rest(r);
            }
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
        pt_cfg_leave(r);
    }
    pt_cfg_leave_array(r);
    if (!chosen && unsupported[0])
        pt_cfg_error(r, "policies",
                     "no policy petrel supports: %s (petrel has "
                     "envoy.load_balancing_policies.round_robin, least_request, random, "
                     "ring_hash and maglev)",
                     unsupported);
}

void pt_lb_policy_parse(pt_cfg_t *r, pt_cluster_t *c)
{
    if (pt_cfg_enter(r, "ring_hash_lb_config") > 0) {
        pt_lb_hash_config_t *cfg = new_config(r, c, PT_LB_HASH_RING);
        if (cfg != NULL) {
            static const char *const fns[] = {"XX_HASH", "MURMUR_HASH_2", NULL};
            int fn;
            pt_cfg_enum(r, "hash_function", fns, NULL, &fn, 0);
            cfg->hash_function = fn == 1 ? PT_HASH_MURMUR_HASH_2 : PT_HASH_XX_HASH;
            parse_ring_sizes(r, cfg);
            if (c->lb_policy == PT_LB_RING_HASH)
                c->lb_hash = cfg;
        }
        if (c->lb_policy != PT_LB_RING_HASH)
            pt_cfg_error(r, NULL, "applies only with lb_policy RING_HASH");
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "maglev_lb_config") > 0) {
        pt_lb_hash_config_t *cfg = new_config(r, c, PT_LB_HASH_MAGLEV);
        if (cfg != NULL) {
            parse_table_size(r, cfg);
            if (c->lb_policy == PT_LB_MAGLEV)
                c->lb_hash = cfg;
        }
        if (c->lb_policy != PT_LB_MAGLEV)
            pt_cfg_error(r, NULL, "applies only with lb_policy MAGLEV");
        pt_cfg_leave(r);
    }
    /* lb_policy RING_HASH or MAGLEV without their config block: the defaults. */
    if (c->lb_hash == NULL && (c->lb_policy == PT_LB_RING_HASH || c->lb_policy == PT_LB_MAGLEV))
        c->lb_hash = new_config(r, c, c->lb_policy == PT_LB_MAGLEV ? PT_LB_HASH_MAGLEV
                                                                    : PT_LB_HASH_RING);
    if (pt_cfg_enter(r, "load_balancing_policy") > 0) {
        /* It takes the place of lb_policy and the configuration that goes with it. */
        static const char *const legacy[] = {"ring_hash_lb_config", "maglev_lb_config",
                                             "least_request_lb_config", NULL};
        for (int i = 0; legacy[i] != NULL; i++)
            if (json_object_get(r->frames[r->depth - 2].node, legacy[i]) != NULL)
                pt_cfg_error(r, NULL, "replaces lb_policy: %s beside it would not be used",
                             legacy[i]);
        c->lb_hash = NULL;
        c->lb_policy = PT_LB_ROUND_ROBIN;
        c->lb_choice_count = 2;
        parse_load_balancing_policy(r, c);
        pt_cfg_leave(r);
    }
}

void pt_lb_hash_apply_common(pt_cluster_t *c)
{
    if (c->lb_hash != NULL && c->lb_hash_use_hostname)
        ((pt_lb_hash_config_t *)c->lb_hash)->use_hostname = 1;
}

void pt_lb_hash_parse_common(pt_cfg_t *r, pt_cluster_t *c)
{
    /* The reader is in common_lb_config, in the Cluster. */
    int typed = r->depth >= 2 &&
                json_object_get(r->frames[r->depth - 2].node, "load_balancing_policy") != NULL;
    if (pt_cfg_enter(r, "consistent_hashing_lb_config") <= 0)
        return;
    int use_hostname = 0;
    parse_consistent_hashing(r, &use_hostname);
    /* A typed RingHash or Maglev has its own (Envoy reads this one for lb_policy only).
     * common_lb_config is read before lb_policy's own config: pt_lb_hash_apply_common
     * gives it to the table config once that exists. */
    if (!typed)
        c->lb_hash_use_hostname = use_hostname;
    pt_cfg_leave(r);
}
