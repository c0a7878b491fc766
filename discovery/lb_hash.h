/* Consistent-hash load balancers: Envoy's RING_HASH and MAGLEV, and the hash functions they and
 * the routes' hash_policy use.
 *
 * A cluster version (one host set) with either policy gets a table per priority, as Envoy's
 * thread-aware balancers have: over the priority's healthy hosts, or over all of them while
 * the priority is in panic. A pick draws the priority from the hash
 * and the priority load (Envoy's choosePriority: hash % 100), then the host in that
 * priority's table, so failing over to another priority moves no key within the others.
 * The tables are built on the main thread when the version is prepared and again when the
 * health of its hosts changes (health checks, outlier detection), a table whose hosts did not
 * change kept. Workers share them read-only: each keeps a reference to the tables it last
 * used and takes the new ones the first time it picks after a change (one atomic load per
 * pick tells), so a table is freed when its last worker let go of it. A pick costs a binary
 * search over the ring (O(log n)) or one slot of the Maglev table (O(1)).
 *
 * The algorithms (first part) are pure: tables over an array of (key, weight, opaque host),
 * built exactly as Envoy builds them, so the same hash goes to the same host as in an Envoy
 * with the same hosts. The second part ties them to clusters. */
#ifndef PT_LB_HASH_H
#define PT_LB_HASH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"

/* ---- hash functions --------------------------------------------------------------------- */

/* XXH64 (xxHash, 64-bit), as Envoy's HashUtil::xxHash64. */
uint64_t pt_xxhash64(const void *data, size_t len, uint64_t seed);
/* 64-bit MurmurHash2 as libstdc++'s std::hash and Envoy's MurmurHash::murmurHash2; Envoy's
 * ring uses the seed PT_MURMUR_STD_SEED. */
uint64_t pt_murmur2_64(const void *data, size_t len, uint64_t seed);
#define PT_MURMUR_STD_SEED 0xc70f6907ull

/* Envoy's way of folding several hash policies into one hash: the hash so far rotated left by
 * one bit, XOR the next (so the order of the policies matters). */
static inline uint64_t pt_hash_combine(uint64_t prev, uint64_t next)
{
    return ((prev << 1) | (prev >> 63)) ^ next;
}

/* What a pick may be given beside the cluster (Envoy's LoadBalancerContext): the request's
 * hash when its hash policies produced one. A hash balancer without one picks a random host,
 * as Envoy does; the other balancers ignore it. */
/* pt_lb_context_t (proxy/cluster.h) carries the request's hash: has_hash and hash. */

/* ---- tables -------------------------------------------------------------------------------- */

typedef enum pt_hash_function { PT_HASH_XX_HASH, PT_HASH_MURMUR_HASH_2 } pt_hash_function_t;

/* One host a table is built over: the key it is placed by (its address as "ip:port", or its
 * hostname with use_hostname_for_hashing), its weight (> 0) and the caller's host. */
typedef struct pt_lb_hash_host {
    const char *key;
    size_t key_len;
    uint32_t weight;
    void *host;
} pt_lb_hash_host_t;

typedef enum pt_lb_hash_kind { PT_LB_HASH_RING, PT_LB_HASH_MAGLEV } pt_lb_hash_kind_t;

/* A ring or a Maglev table, immutable once built, refcounted. */
typedef struct pt_lb_hash {
    _Atomic long refs;
    uint64_t id;            /* unique among the tables of this process */
    pt_lb_hash_kind_t kind;
    size_t size;            /* ring entries or Maglev slots; 0 when built over no host */
    uint64_t *ring_hashes;  /* ring: sorted, size of them */
    /* ring: where the hashes with each value of their top `bucket_bits` bits begin
     * (2^bucket_bits + 1 indexes into ring_hashes): a pick searches one bucket, a few
     * entries, instead of the whole ring. */
    const uint32_t *buckets;
    unsigned bucket_shift; /* 64 - bucket_bits */
    void **entries;         /* ring: the host of each entry; Maglev: of each slot */
    /* The hosts it was built over, in the order given (a rebuild over the same hosts is
     * skipped), and per host how many entries or slots it got (Envoy's min/max stats). */
    void **members;
    unsigned nmembers;
    uint64_t min_per_host, max_per_host;
} pt_lb_hash_t;

/* Envoy's defaults and limits. */
#define PT_RING_HASH_MIN_DEFAULT 1024u
#define PT_RING_HASH_MAX_DEFAULT (8u * 1024 * 1024)
#define PT_RING_HASH_SIZE_LIMIT (8u * 1024 * 1024)
#define PT_MAGLEV_TABLE_SIZE_DEFAULT 65537u
#define PT_MAGLEV_TABLE_SIZE_LIMIT 5000011u

/* Envoy's ring: each host gets entries in proportion to its weight, the lightest at least
 * ceil(its share of min_ring_size), the whole ring at most max_ring_size; entry i of a host is
 * the hash of "<key>_<i>". NULL out of memory. */
pt_lb_hash_t *pt_lb_ring_build(const pt_lb_hash_host_t *hosts, unsigned n, uint64_t min_size,
                               uint64_t max_size, pt_hash_function_t fn);
/* Maglev (Eisenbud et al. 2016, listing 1, weighted as Envoy: a host of half the largest weight
 * takes a slot every second round). table_size must be prime. NULL out of memory. */
pt_lb_hash_t *pt_lb_maglev_build(const pt_lb_hash_host_t *hosts, unsigned n, uint64_t table_size);
pt_lb_hash_t *pt_lb_hash_ref(pt_lb_hash_t *t);
void pt_lb_hash_unref(pt_lb_hash_t *t);

/* The host for hash h; attempt > 0 asks for another one, as Envoy's retry host predicates do
 * (the ring's next entries, Maglev's slot of a changed hash). NULL when t has no host. */
static inline void *pt_lb_hash_choose(const pt_lb_hash_t *t, uint64_t h, uint32_t attempt)
{
    size_t n = t->size;
    if (n == 0)
        return NULL;
    if (t->kind == PT_LB_HASH_MAGLEV) {
        if (attempt > 0)
            h ^= ~0ull - attempt + 1;
        return t->entries[h % n];
    }
    /* The first entry whose hash is >= h, wrapping to the first (what Envoy's ketama search
     * finds). Entries before h's bucket are smaller than h, those after it larger: the
     * binary search needs only the bucket's (about one entry; O(log n) at worst). */
    uint64_t k = h >> t->bucket_shift;
    size_t lo = t->buckets[k], len = t->buckets[k + 1] - lo;
    const uint64_t *r = t->ring_hashes;
    while (len > 0) {
        size_t half = len / 2;
        if (r[lo + half] < h) {
            lo += half + 1;
            len -= half + 1;
        } else {
            len = half;
        }
    }
    if (lo == n)
        lo = 0;
    if (attempt > 0)
        lo = (lo + attempt) % n;
    return t->entries[lo];
}

int pt_is_prime(uint64_t n);

/* ---- clusters ------------------------------------------------------------------------------ */

typedef struct pt_cluster pt_cluster_t;
typedef struct pt_lb_context pt_lb_context_t; /* proxy/cluster.h */
typedef struct pt_host pt_host_t;
typedef struct pt_worker pt_worker_t;

/* A cluster's ring_hash_lb_config / maglev_lb_config / typed policy, in its arena. */
typedef struct pt_lb_hash_config {
    pt_lb_hash_kind_t kind;
    uint64_t min_ring_size, max_ring_size;
    pt_hash_function_t hash_function;
    uint64_t table_size;
    int use_hostname; /* consistent_hashing_lb_config.use_hostname_for_hashing */
} pt_lb_hash_config_t;

/* Reads the cluster's balancing configuration beside lb_policy (the reader in the Cluster, its
 * lb_policy already in c): ring_hash_lb_config, maglev_lb_config,
 * common_lb_config.consistent_hashing_lb_config, and load_balancing_policy, whose first policy
 * petrel has replaces lb_policy (c->lb_policy, c->lb_choice_count, c->lb_hash). Errors name the
 * field. */
void pt_lb_policy_parse(pt_cfg_t *r, pt_cluster_t *c);

/* common_lb_config.consistent_hashing_lb_config (the reader in common_lb_config): its
 * use_hostname_for_hashing applies to lb_policy RING_HASH and MAGLEV. */
/* After lb_policy's own config: what common_lb_config said for the table (use_hostname). */
void pt_lb_hash_apply_common(pt_cluster_t *c);
void pt_lb_hash_parse_common(pt_cfg_t *r, pt_cluster_t *c);

/* Main thread, when c is prepared (its hosts known, its priority set published): builds its
 * tables. 0, or -1 out of memory. Nothing for other policies. */
int pt_lb_hash_cluster_prepare(pt_cluster_t *c);
/* Main thread, after c's priority set was published again: the health of c's hosts may have
 * changed; the tables whose hosts changed are built again, and published. */
void pt_lb_hash_cluster_health_changed(pt_cluster_t *c);
/* Drops c's tables (c's last reference went). */
void pt_lb_hash_cluster_dispose(pt_cluster_t *c);
/* The pick, on a worker (w NULL: the main thread). ctx may be NULL. Hosts in exclude are
 * avoided while a few more attempts find another. */
pt_host_t *pt_lb_hash_pick(pt_cluster_t *c, pt_worker_t *w, const pt_lb_context_t *ctx,
                           pt_host_t *const *exclude, unsigned nexclude);
/* The table c's picks use now for a priority and kind of hosts (pt_lb_kind_t: 0 healthy,
 * 2 all, the latter only while the priority is in panic; never 1, degraded), for tests and
 * the bench; not a reference. NULL when there is none. */
const pt_lb_hash_t *pt_lb_hash_cluster_table(const pt_cluster_t *c, unsigned priority,
                                             unsigned kind);

#endif
