/* Unit tests for discovery/lb_hash: xxHash64 and MurmurHash2 against known values, Envoy's
 * hash combination, rings and Maglev tables built from host sets (sizes, entries in proportion
 * to weight, distribution of hashes, the ring's search against a plain scan), stability (one
 * host of N leaving moves about 1/N of the keys), clusters configured with RING_HASH, MAGLEV
 * and load_balancing_policy (and the errors for bad ones, with their paths), health changes
 * rebuilding the table, and the routes' hash_policy. Distribution bounds are many standard
 * deviations wide: a correct balancer fails them with negligible probability. */
#include "discovery/lb_hash.h"
#include "proxy/cluster.h"
#include "proxy/route.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#include <math.h>
#include <stdarg.h>

/* ---- hash functions ------------------------------------------------------------------- */

static void test_xxhash64_vectors(void)
{
    /* Values of the reference implementation (libxxhash XXH64). */
    static const struct {
        const char *s;
        uint64_t seed, want;
    } v[] = {
        {"", 0, 0xef46db3751d8e999ull},
        {"a", 0, 0xd24ec4f1a98c6e5bull},
        {"abc", 0, 0x44bc2cf5ad770999ull},
        {"hello world", 0, 0x45ab6734b21e6968ull},
        {"10.0.0.1:80_0", 0, 0x75041381e7371a08ull},
        {"abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", 0, 0x155e7ee4e742d975ull},
        {"abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", 1, 0x33770728e1731a98ull},
        {"xyz", 1, 0x4f96575cda947bebull},
        {"The quick brown fox jumps over the lazy dog", 0, 0x0b242d361fda71bcull},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint64_t got = pt_xxhash64(v[i].s, strlen(v[i].s), v[i].seed);
        if (got != v[i].want)
            fprintf(stderr, "  xxh64(\"%s\", %llu) = %016llx\n", v[i].s,
                    (unsigned long long)v[i].seed, (unsigned long long)got);
        PT_CHECK(got == v[i].want);
    }
}

static void test_murmur2_vectors(void)
{
    /* libstdc++'s std::_Hash_bytes with Envoy's STD_HASH_SEED. */
    static const struct {
        const char *s;
        uint64_t want;
    } v[] = {
        {"", 0x553e93901e462a6eull},
        {"a", 0x454ddee488c1ed6bull},
        {"abc", 0x32d82bf8ed3dba39ull},
        {"hello world", 0x4d6686d362067ff9ull},
        {"10.0.0.1:80_0", 0xbd8f6461ecffb28cull},
        {"abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", 0x98c4a9a82f05208full},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        PT_CHECK(pt_murmur2_64(v[i].s, strlen(v[i].s), PT_MURMUR_STD_SEED) == v[i].want);
}

static void test_hash_combine(void)
{
    /* Rotate left by one, then XOR: the top bit comes round. */
    PT_CHECK(pt_hash_combine(1, 0) == 2);
    PT_CHECK(pt_hash_combine(0x8000000000000000ull, 0) == 1);
    PT_CHECK(pt_hash_combine(0x8000000000000001ull, 3) == 0);
    /* Order matters. */
    PT_CHECK(pt_hash_combine(5, 9) != pt_hash_combine(9, 5));
    PT_CHECK(pt_is_prime(65537) && pt_is_prime(2) && pt_is_prime(4999999));
    PT_CHECK(!pt_is_prime(65536) && !pt_is_prime(1) && !pt_is_prime(0) && !pt_is_prime(65539 * 3));
}

/* ---- tables ------------------------------------------------------------------------------ */

enum { MAXN = 200 };

typedef struct hostset {
    pt_lb_hash_host_t h[MAXN];
    char keys[MAXN][32];
    int ids[MAXN]; /* the "hosts" are pointers to these */
    unsigned n;
} hostset_t;

static void hostset_init(hostset_t *s, unsigned n)
{
    s->n = n;
    for (unsigned i = 0; i < n; i++) {
        snprintf(s->keys[i], sizeof(s->keys[i]), "10.0.%u.%u:8080", i / 250, i % 250 + 1);
        s->ids[i] = (int)i;
        s->h[i] = (pt_lb_hash_host_t){.key = s->keys[i], .key_len = strlen(s->keys[i]),
                                      .weight = 1, .host = &s->ids[i]};
    }
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* How many of `draws` random hashes each host gets. */
static void tally(const pt_lb_hash_t *t, unsigned draws, unsigned *counts, unsigned n)
{
    memset(counts, 0, n * sizeof(*counts));
    uint64_t seed = 42;
    for (unsigned i = 0; i < draws; i++) {
        const int *id = pt_lb_hash_choose(t, splitmix(&seed), 0);
        counts[*id]++;
    }
}

static unsigned entries_of(const pt_lb_hash_t *t, int id)
{
    unsigned n = 0;
    for (size_t i = 0; i < t->size; i++)
        n += *(const int *)t->entries[i] == id;
    return n;
}

static void test_ring_sizes_and_weights(void)
{
    hostset_t s;
    hostset_init(&s, 3);
    /* Equal weights: ceil(1024 / 3) = 342 entries each, as Envoy. */
    pt_lb_hash_t *t = pt_lb_ring_build(s.h, 3, 1024, 8 * 1024 * 1024, PT_HASH_XX_HASH);
    PT_CHECK(t != NULL && t->size == 1026);
    PT_CHECK(entries_of(t, 0) == 342 && entries_of(t, 1) == 342 && entries_of(t, 2) == 342);
    PT_CHECK(t->min_per_host == 342 && t->max_per_host == 342);
    for (size_t i = 1; i < t->size; i++)
        PT_CHECK(t->ring_hashes[i - 1] <= t->ring_hashes[i]);
    /* Host 0's first entry is the hash of "<address>_0". */
    uint64_t h0 = pt_xxhash64("10.0.0.1:8080_0", 15, 0);
    int found = 0;
    for (size_t i = 0; i < t->size; i++)
        found |= t->ring_hashes[i] == h0 && *(int *)t->entries[i] == 0;
    PT_CHECK(found);
    pt_lb_hash_unref(t);

    /* Weights 1:2:3: entries and traffic in proportion. */
    s.h[1].weight = 2;
    s.h[2].weight = 3;
    t = pt_lb_ring_build(s.h, 3, 1024, 8 * 1024 * 1024, PT_HASH_XX_HASH);
    PT_CHECK(t != NULL);
    unsigned e0 = entries_of(t, 0), e1 = entries_of(t, 1), e2 = entries_of(t, 2);
    /* The lightest (1/6) gets ceil(1024 / 6) = 171: the ring is 171 * 6 = 1026 entries. */
    PT_CHECK(e0 == 171 && e1 == 342 && e2 == 513);
    unsigned c[3];
    tally(t, 60000, c, 3);
    PT_CHECK(c[0] > 8500 && c[0] < 11500);
    PT_CHECK(c[1] > 18000 && c[1] < 22000);
    PT_CHECK(c[2] > 27000 && c[2] < 33000);
    pt_lb_hash_unref(t);

    /* maximum_ring_size caps it. */
    t = pt_lb_ring_build(s.h, 3, 1024, 600, PT_HASH_MURMUR_HASH_2);
    PT_CHECK(t != NULL && t->size >= 600 && t->size <= 601);
    pt_lb_hash_unref(t);
    /* No host: no pick. */
    t = pt_lb_ring_build(s.h, 0, 1024, 2048, PT_HASH_XX_HASH);
    PT_CHECK(t != NULL && t->size == 0 && pt_lb_hash_choose(t, 7, 0) == NULL);
    pt_lb_hash_unref(t);
}

/* The ring's binary search finds the first entry at or after the hash, wrapping round. */
static void test_ring_search(void)
{
    hostset_t s;
    hostset_init(&s, 7);
    pt_lb_hash_t *t = pt_lb_ring_build(s.h, 7, 64, 1024, PT_HASH_XX_HASH);
    PT_CHECK(t != NULL);
    uint64_t seed = 1;
    for (int k = 0; k < 20000; k++) {
        uint64_t h = k < 3 ? (k == 0 ? 0 : k == 1 ? UINT64_MAX : t->ring_hashes[5])
                           : splitmix(&seed);
        size_t want = 0;
        while (want < t->size && t->ring_hashes[want] < h)
            want++;
        if (want == t->size)
            want = 0;
        PT_CHECK(pt_lb_hash_choose(t, h, 0) == t->entries[want]);
        PT_CHECK(pt_lb_hash_choose(t, h, 2) == t->entries[(want + 2) % t->size]);
    }
    pt_lb_hash_unref(t);
    /* A big ring (many entries per bucket of the index). */
    hostset_init(&s, 150);
    t = pt_lb_ring_build(s.h, 150, 300000, 8 << 20, PT_HASH_XX_HASH);
    PT_CHECK(t != NULL && t->size >= 300000);
    for (int k = 0; k < 300; k++) {
        uint64_t h = splitmix(&seed);
        size_t want = 0;
        while (want < t->size && t->ring_hashes[want] < h)
            want++;
        PT_CHECK(pt_lb_hash_choose(t, h, 0) == t->entries[want % t->size]);
    }
    pt_lb_hash_unref(t);
}

static void test_maglev_weights(void)
{
    hostset_t s;
    hostset_init(&s, 3);
    pt_lb_hash_t *t = pt_lb_maglev_build(s.h, 3, 65537);
    PT_CHECK(t != NULL && t->size == 65537);
    for (size_t i = 0; i < t->size; i++)
        PT_CHECK(t->entries[i] != NULL);
    unsigned e0 = entries_of(t, 0), e1 = entries_of(t, 1), e2 = entries_of(t, 2);
    PT_CHECK(e0 + e1 + e2 == 65537);
    PT_CHECK(e0 >= 21845 && e0 <= 21846 && e1 >= 21845 && e1 <= 21846);
    pt_lb_hash_unref(t);
    /* Weights 1:2:3: slots in proportion (within one round), traffic too. */
    s.h[1].weight = 2;
    s.h[2].weight = 3;
    t = pt_lb_maglev_build(s.h, 3, 65537);
    e0 = entries_of(t, 0), e1 = entries_of(t, 1), e2 = entries_of(t, 2);
    PT_CHECK(fabs(e0 - 65537 / 6.0) < 5 && fabs(e1 - 65537 / 3.0) < 5 &&
             fabs(e2 - 65537 / 2.0) < 5);
    unsigned c[3];
    tally(t, 60000, c, 3);
    PT_CHECK(c[0] > 9000 && c[0] < 11000);
    PT_CHECK(c[2] > 28000 && c[2] < 32000);
    pt_lb_hash_unref(t);
    /* The order the hosts come in does not change the table (Envoy sorts them by key). */
    hostset_t r;
    hostset_init(&r, 3);
    pt_lb_hash_t *a = pt_lb_maglev_build(r.h, 3, 251);
    pt_lb_hash_host_t rev[3] = {r.h[2], r.h[0], r.h[1]};
    pt_lb_hash_t *b = pt_lb_maglev_build(rev, 3, 251);
    PT_CHECK(a != NULL && b != NULL && memcmp(a->entries, b->entries, 251 * sizeof(void *)) == 0);
    pt_lb_hash_unref(a);
    pt_lb_hash_unref(b);
}

/* The fraction of keys whose host changes when host `gone` of n leaves; *others_moved: of
 * those, the keys that were not on it. min_ring: the ring's minimum_ring_size. */
static double moved_fraction(int maglev, unsigned n, unsigned gone, uint64_t min_ring,
                             double *others_moved)
{
    hostset_t s, less;
    hostset_init(&s, n);
    hostset_init(&less, n);
    for (unsigned i = 0, j = 0; i < n; i++)
        if (i != gone)
            less.h[j++] = s.h[i]; /* the same hosts (pointers into s) */
    less.n = n - 1;
    pt_lb_hash_t *a = maglev ? pt_lb_maglev_build(s.h, n, 65537)
                             : pt_lb_ring_build(s.h, n, min_ring, 8 << 20, PT_HASH_XX_HASH);
    pt_lb_hash_t *b = maglev ? pt_lb_maglev_build(less.h, n - 1, 65537)
                             : pt_lb_ring_build(less.h, n - 1, min_ring, 8 << 20,
                                                PT_HASH_XX_HASH);
    unsigned moved = 0, other = 0, keys = 100000;
    uint64_t seed = 7;
    for (unsigned k = 0; k < keys; k++) {
        uint64_t h = splitmix(&seed);
        const int *x = pt_lb_hash_choose(a, h, 0), *y = pt_lb_hash_choose(b, h, 0);
        if (x != y) {
            moved++;
            other += *x != (int)gone;
        }
    }
    pt_lb_hash_unref(a);
    pt_lb_hash_unref(b);
    *others_moved = (double)other / keys;
    return (double)moved / keys;
}

static void test_stability(void)
{
    double other;
    /* Ring: when the hosts that stay keep their number of entries (1024 / 50 and 1024 / 49
     * both round up to 21), exactly the leaving host's keys move: 1/N of them, give or take
     * its share of the ring. */
    double f = moved_fraction(0, 50, 17, 1024, &other);
    fprintf(stderr, "     ring, 1 of 50 leaves: %.4f of the keys moved (1/N = 0.02), others %.4f\n",
            f, other);
    PT_CHECK(f > 0.008 && f < 0.04);
    PT_CHECK(other == 0.0);
    /* When their number grows (16384 / 50 -> 328 entries, / 49 -> 335), as in Envoy, the new
     * entries take some keys of the others too. */
    f = moved_fraction(0, 50, 17, 16384, &other);
    fprintf(stderr, "     ring of 16384, 1 of 50 leaves: %.4f moved, others %.4f\n", f, other);
    PT_CHECK(f > 0.014 && f < 0.06);
    /* Maglev: about 1/N, plus a little disruption elsewhere (the paper's few percent). */
    f = moved_fraction(1, 50, 17, 0, &other);
    fprintf(stderr, "     maglev, 1 of 50 leaves: %.4f of the keys moved, others %.4f\n", f, other);
    PT_CHECK(f > 0.016 && f < 0.035);
    PT_CHECK(other < 0.012);
    f = moved_fraction(1, 200, 3, 0, &other);
    fprintf(stderr, "     maglev, 1 of 200 leaves: %.4f of the keys moved, others %.4f\n", f,
            other);
    PT_CHECK(f > 0.003 && f < 0.02);
}

/* ---- clusters ----------------------------------------------------------------------------- */

static pt_boot_t *boot(const char *json, pt_cfg_t *r)
{
    json_t *root = J(json);
    pt_cfg_init(r, root);
    pt_boot_t *b = pt_test_boot(root, r);
    pt_cfg_finish(r);
    json_decref(root);
    return b;
}

/* The errors a config gets, compared with the NULL-terminated list. */
static int rejects(const char *json, ...)
{
    pt_cfg_t r;
    pt_boot_t *b = boot(json, &r);
    va_list ap;
    va_start(ap, json);
    size_t n = 0;
    int same = b == NULL;
    const char *want;
    while ((want = va_arg(ap, const char *)) != NULL) {
        same &= n < r.nerrors && strcmp(r.errors[n], want) == 0;
        n++;
    }
    va_end(ap);
    same &= n == r.nerrors;
    if (!same) {
        fprintf(stderr, "  %s\n  got %zu error(s):\n", json, r.nerrors);
        for (size_t i = 0; i < r.nerrors; i++)
            fprintf(stderr, "    %s\n", r.errors[i]);
    }
    pt_boot_free(b);
    pt_cfg_dispose(&r);
    return same;
}

#define EPS4                                                                                   \
    "'load_assignment':{'cluster_name':'c','endpoints':[{'lb_endpoints':["                     \
    "{'endpoint':{'address':{'socket_address':{'address':'10.0.0.1','port_value':80}}}},"     \
    "{'endpoint':{'address':{'socket_address':{'address':'10.0.0.2','port_value':80}}}},"     \
    "{'endpoint':{'address':{'socket_address':{'address':'10.0.0.3','port_value':80}}},"      \
    "'load_balancing_weight':3},"                                                              \
    "{'endpoint':{'address':{'socket_address':{'address':'10.0.0.4','port_value':80}}}}]}]}"
#define ONE_CLUSTER(fields) "{'static_resources':{'clusters':[{'name':'c'," fields "}]}}"
#define C0 "static_resources.clusters[0]"
#define LBP(type, cfg)                                                                         \
    "{'typed_extension_config':{'name':'x','typed_config':{'@type':'type.googleapis.com/"     \
    "envoy.extensions.load_balancing_policies." type "'" cfg "}}}"

static void test_cluster_config_errors(void)
{
    PT_CHECK(rejects(ONE_CLUSTER("'lb_policy':'MAGLEV','maglev_lb_config':{'table_size':65536}"),
                     C0 ".maglev_lb_config.table_size: 65536 is not a prime number (Maglev's "
                        "table size must be prime, e.g. 65537)",
                     NULL));
    PT_CHECK(rejects(ONE_CLUSTER("'lb_policy':'RING_HASH','ring_hash_lb_config':"
                                 "{'minimum_ring_size':4096,'maximum_ring_size':1024}"),
                     C0 ".ring_hash_lb_config.minimum_ring_size: 4096 is greater than "
                        "maximum_ring_size (1024)",
                     NULL));
    PT_CHECK(rejects(ONE_CLUSTER("'lb_policy':'RING_HASH','ring_hash_lb_config':"
                                 "{'hash_function':'CITY_HASH'}"),
                     C0 ".ring_hash_lb_config.hash_function: \"CITY_HASH\" is not a valid value "
                        "(expected one of: XX_HASH, MURMUR_HASH_2)",
                     NULL));
    PT_CHECK(rejects(ONE_CLUSTER("'lb_policy':'ROUND_ROBIN','ring_hash_lb_config':{}"),
                     C0 ".ring_hash_lb_config: applies only with lb_policy RING_HASH", NULL));
    PT_CHECK(rejects(ONE_CLUSTER("'lb_policy':'MAGLEV','common_lb_config':"
                                 "{'consistent_hashing_lb_config':{'hash_balance_factor':150}}"),
                     C0 ".common_lb_config.consistent_hashing_lb_config.hash_balance_factor: is "
                        "not supported (bounded-load consistent hashing is not implemented)",
                     NULL));
    PT_CHECK(rejects(ONE_CLUSTER("'load_balancing_policy':{'policies':["
                                 LBP("client_side_weighted_round_robin.v3."
                                     "ClientSideWeightedRoundRobin", "") "]}"),
                     C0 ".load_balancing_policy.policies: no policy petrel supports: x "
                        "(type.googleapis.com/envoy.extensions.load_balancing_policies."
                        "client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin) "
                        "(petrel has envoy.load_balancing_policies.round_robin, least_request, "
                        "random, ring_hash and maglev)",
                     NULL));
    PT_CHECK(rejects(ONE_CLUSTER("'load_balancing_policy':{'policies':["
                                 LBP("maglev.v3.Maglev", ",'table_size':100") "]}"),
                     C0 ".load_balancing_policy.policies[0].typed_extension_config.typed_config"
                        ".table_size: 100 is not a prime number (Maglev's table size must be "
                        "prime, e.g. 65537)",
                     NULL));
    PT_CHECK(rejects(ONE_CLUSTER("'load_balancing_policy':{'policies':["
                                 LBP("ring_hash.v3.RingHash", ",'hash_function':'SHA1'") "]}"),
                     C0 ".load_balancing_policy.policies[0].typed_extension_config.typed_config"
                        ".hash_function: \"SHA1\" is not a valid value (expected one of: "
                        "DEFAULT_HASH, XX_HASH, MURMUR_HASH_2)",
                     NULL));
}

static void test_cluster_policies(void)
{
    pt_cfg_t r;
    /* The first policy petrel has wins; the unknown one before it is passed over. */
    pt_boot_t *b = boot(ONE_CLUSTER(EPS4 ",'load_balancing_policy':{'policies':["
                                    LBP("wrr_locality.v3.WrrLocality", ",'x':1") ","
                                    LBP("maglev.v3.Maglev", ",'table_size':251") ","
                                    LBP("round_robin.v3.RoundRobin", "") "]}"),
                        &r);
    PT_CHECK(b != NULL);
    pt_cfg_dispose(&r);
    pt_cluster_t *c = b->clusters[0];
    PT_CHECK(c->lb_policy == PT_LB_MAGLEV);
    const pt_lb_hash_t *t = pt_lb_hash_cluster_table(c, 0, 0);
    PT_CHECK(t != NULL && t->kind == PT_LB_HASH_MAGLEV && t->size == 251 && t->nmembers == 4);
    pt_boot_free(b);

    b = boot(ONE_CLUSTER(EPS4 ",'load_balancing_policy':{'policies':["
                         LBP("least_request.v3.LeastRequest", ",'choice_count':5") "]}"),
             &r);
    PT_CHECK(b != NULL && b->clusters[0]->lb_policy == PT_LB_LEAST_REQUEST &&
             b->clusters[0]->lb_choice_count == 5);
    pt_cfg_dispose(&r);
    pt_boot_free(b);

    b = boot(ONE_CLUSTER(EPS4 ",'lb_policy':'RING_HASH','ring_hash_lb_config':"
                         "{'minimum_ring_size':60,'hash_function':'MURMUR_HASH_2'}"),
             &r);
    PT_CHECK(b != NULL);
    pt_cfg_dispose(&r);
    c = b->clusters[0];
    t = pt_lb_hash_cluster_table(c, 0, 0);
    /* Weights 1, 1, 3, 1 of 6: the lightest gets ceil(60/6) = 10 entries, the heavy one 30. */
    PT_CHECK(t != NULL && t->kind == PT_LB_HASH_RING && t->size == 60);
    PT_CHECK(t->min_per_host == 10 && t->max_per_host == 30);
    PT_CHECK(t->ring_hashes[0] <= t->ring_hashes[1]);
    pt_boot_free(b);
}

/* A host going unhealthy moves only its own keys; in panic every host is used again. */
static void test_cluster_health(void)
{
    pt_cfg_t r;
    pt_boot_t *b = boot(ONE_CLUSTER(EPS4 ",'lb_policy':'MAGLEV'"), &r);
    PT_CHECK(b != NULL);
    pt_cfg_dispose(&r);
    pt_cluster_t *c = b->clusters[0];
    enum { K = 4000 };
    static pt_host_t *before[K];
    uint64_t seed = 3;
    unsigned on[4] = {0};
    for (int k = 0; k < K; k++) {
        pt_lb_context_t ctx = {.has_hash = 1, .hash = splitmix(&seed)};
        before[k] = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
        PT_CHECK(before[k] != NULL);
        PT_CHECK(pt_cluster_pick_host(c, NULL, &ctx, NULL, 0) == before[k]); /* sticky */
        for (unsigned i = 0; i < 4; i++)
            on[i] += before[k] == c->hosts[i];
    }
    /* Weight 3 of 6 for host 2. */
    PT_CHECK(on[2] > 1800 && on[2] < 2200);
    const pt_lb_hash_t *t0 = pt_lb_hash_cluster_table(c, 0, 0);
    uint64_t id0 = t0->id;
    /* Nothing changed: no new table. */
    pt_cluster_health_changed(c);
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 0)->id == id0);
    pt_host_health_update(c->hosts[1], PT_HOST_FAILED_ACTIVE_HC, 0);
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 0)->id != id0);
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 0)->nmembers == 3);
    seed = 3;
    unsigned moved = 0, wrongly = 0;
    for (int k = 0; k < K; k++) {
        pt_lb_context_t ctx = {.has_hash = 1, .hash = splitmix(&seed)};
        pt_host_t *h = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
        PT_CHECK(h != c->hosts[1]);
        moved += h != before[k];
        wrongly += h != before[k] && before[k] != c->hosts[1];
    }
    PT_CHECK(moved >= on[1] && wrongly < K / 50);
    /* A retry avoiding the host tried gets another one. */
    pt_lb_context_t ctx = {.has_hash = 1, .hash = 12345};
    pt_host_t *first = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
    pt_host_t *second = pt_cluster_pick_host(c, NULL, &ctx, &first, 1);
    PT_CHECK(second != NULL && second != first);
    /* Three of four unhealthy (25% < 50%): panic, all four hosts again. */
    pt_host_health_update(c->hosts[0], PT_HOST_FAILED_OUTLIER_CHECK, 0);
    pt_host_health_update(c->hosts[2], PT_HOST_FAILED_ACTIVE_HC, 0);
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 2)->nmembers == 4);
    /* Without a hash: random, over every host. */
    unsigned seen[4] = {0};
    for (int k = 0; k < 400; k++) {
        pt_host_t *h = pt_cluster_pick_host(c, NULL, NULL, NULL, 0);
        for (unsigned i = 0; i < 4; i++)
            seen[i] += h == c->hosts[i];
    }
    PT_CHECK(seen[0] > 20 && seen[1] > 20 && seen[2] > 100 && seen[3] > 20);
    for (unsigned i = 0; i < 4; i++)
        atomic_store(&c->hosts[i]->health, 0);
    pt_boot_free(b);
}

/* Priorities: a table per priority, the priority drawn from the hash and the priority load
 * (Envoy's choosePriority, hash % 100), so failing over spills only the load P=0 cannot take
 * and moves no key within a priority whose hosts did not change. */
#define EP(a) "{'endpoint':{'address':{'socket_address':{'address':'" a "','port_value':80}}}}"
#define PRIO_EPS                                                                               \
    "'load_assignment':{'cluster_name':'c','endpoints':["                                      \
    "{'priority':0,'lb_endpoints':[" EP("10.0.0.1") "," EP("10.0.0.2") "," EP("10.0.0.3") ","  \
    EP("10.0.0.4") "]},"                                                                       \
    "{'priority':1,'lb_endpoints':[" EP("10.0.1.1") "," EP("10.0.1.2") "]}]}"

static void check_priorities(const char *policy)
{
    pt_cfg_t r;
    char json[2048];
    snprintf(json, sizeof(json), ONE_CLUSTER("%s,'lb_policy':'%s'"), PRIO_EPS, policy);
    pt_boot_t *b = boot(json, &r);
    PT_CHECK(b != NULL);
    pt_cfg_dispose(&r);
    if (b == NULL)
        return;
    pt_cluster_t *c = b->clusters[0];
    /* Keys of hosts that stay but move anyway: Maglev's few; the ring's more, because with
     * fewer hosts each gets more entries (minimum_ring_size 1024 shared: 256 each of 4, 342
     * each of 3), as in Envoy. */
    unsigned tolerance = strcmp(policy, "MAGLEV") == 0 ? 4000 / 50 : 4000 / 8;
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 0)->nmembers == 4);
    PT_CHECK(pt_lb_hash_cluster_table(c, 1, 0)->nmembers == 2);
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 2) == NULL); /* no panic, no table of all */
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 1) == NULL); /* degraded hosts: never a table */
    enum { K = 4000 };
    static pt_host_t *before[K], *spilled[K];
    uint64_t seed = 11;
    /* All healthy: every key in P=0 (its four hosts), none in P=1. */
    unsigned on[6] = {0};
    for (int k = 0; k < K; k++) {
        pt_lb_context_t ctx = {.has_hash = 1, .hash = splitmix(&seed)};
        before[k] = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
        for (unsigned i = 0; i < 6; i++)
            on[i] += before[k] == c->hosts[i];
    }
    PT_CHECK(on[4] == 0 && on[5] == 0);
    for (unsigned i = 0; i < 4; i++)
        PT_CHECK(on[i] > K / 4 - K / 10 && on[i] < K / 4 + K / 10);
    /* One of P=0's four down: 75% x 1.4 still takes all the load; only its keys move, to
     * the other P=0 hosts. */
    uint64_t p1_id = pt_lb_hash_cluster_table(c, 1, 0)->id;
    pt_host_health_update(c->hosts[0], PT_HOST_FAILED_ACTIVE_HC, 0);
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 0)->nmembers == 3);
    PT_CHECK(pt_lb_hash_cluster_table(c, 1, 0)->id == p1_id); /* P=1 kept its table */
    seed = 11;
    unsigned to_p1 = 0, wrongly = 0;
    for (int k = 0; k < K; k++) {
        pt_lb_context_t ctx = {.has_hash = 1, .hash = splitmix(&seed)};
        pt_host_t *h = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
        to_p1 += h == c->hosts[4] || h == c->hosts[5];
        wrongly += h != before[k] && before[k] != c->hosts[0];
        PT_CHECK(h != c->hosts[0]);
    }
    PT_CHECK(to_p1 == 0);
    PT_CHECK(wrongly < tolerance);
    /* Two of four down: P=0 takes 50% x 1.4 = 70% of the load, P=1 the other 30%: the keys
     * whose hash % 100 falls in P=1's share go there; those left in P=0 whose host is up stay
     * on it. */
    pt_host_health_update(c->hosts[1], PT_HOST_FAILED_OUTLIER_CHECK, 0);
    seed = 11;
    to_p1 = 0;
    wrongly = 0;
    unsigned by_share = 0;
    for (int k = 0; k < K; k++) {
        pt_lb_context_t ctx = {.has_hash = 1, .hash = splitmix(&seed)};
        pt_host_t *h = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
        PT_CHECK(h != c->hosts[0] && h != c->hosts[1]);
        int p1 = h == c->hosts[4] || h == c->hosts[5];
        to_p1 += p1;
        by_share += p1 == (ctx.hash % 100 >= 70);
        spilled[k] = p1 ? h : NULL;
        wrongly += !p1 && h != before[k] && before[k] != c->hosts[0] && before[k] != c->hosts[1];
    }
    PT_CHECK(by_share == K); /* the split follows the priority load exactly */
    PT_CHECK(to_p1 > K * 25 / 100 && to_p1 < K * 35 / 100);
    PT_CHECK(wrongly < tolerance);
    /* All of P=0 down: everything to P=1, each key that was there already on the same host. */
    pt_host_health_update(c->hosts[2], PT_HOST_FAILED_ACTIVE_HC, 0);
    pt_host_health_update(c->hosts[3], PT_HOST_FAILED_ACTIVE_HC, 0);
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 0) == NULL);
    PT_CHECK(pt_lb_hash_cluster_table(c, 1, 0)->id == p1_id);
    seed = 11;
    unsigned moved = 0;
    for (int k = 0; k < K; k++) {
        pt_lb_context_t ctx = {.has_hash = 1, .hash = splitmix(&seed)};
        pt_host_t *h = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
        PT_CHECK(h == c->hosts[4] || h == c->hosts[5]);
        moved += spilled[k] != NULL && h != spilled[k];
    }
    PT_CHECK(moved == 0);
    /* Every host down: no priority has health, the load goes to P=0 in panic (Envoy's
     * choice), picked over all of its hosts. */
    pt_host_health_update(c->hosts[4], PT_HOST_FAILED_ACTIVE_HC, 0);
    pt_host_health_update(c->hosts[5], PT_HOST_FAILED_ACTIVE_HC, 0);
    PT_CHECK(pt_lb_hash_cluster_table(c, 0, 2) != NULL &&
             pt_lb_hash_cluster_table(c, 0, 2)->nmembers == 4);
    for (int k = 0; k < 200; k++) {
        pt_lb_context_t ctx = {.has_hash = 1, .hash = splitmix(&seed)};
        PT_CHECK(pt_cluster_pick_host(c, NULL, &ctx, NULL, 0) != NULL);
    }
    /* Back to health: the first tables' hosts, every key where it was. */
    for (unsigned i = 0; i < 6; i++)
        pt_host_health_update(c->hosts[i], 0, PT_HOST_FAILED_ACTIVE_HC |
                                                   PT_HOST_FAILED_OUTLIER_CHECK);
    seed = 11;
    moved = 0;
    for (int k = 0; k < K; k++) {
        pt_lb_context_t ctx = {.has_hash = 1, .hash = splitmix(&seed)};
        moved += pt_cluster_pick_host(c, NULL, &ctx, NULL, 0) != before[k];
    }
    PT_CHECK(moved == 0);
    pt_boot_free(b);
}

static void test_cluster_priorities(void)
{
    check_priorities("MAGLEV");
    check_priorities("RING_HASH");
}

/* ---- route hash_policy ------------------------------------------------------------------- */

static pt_route_config_t *route_with(pt_boot_t *b, const char *policies, pt_cfg_t *r)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':{'prefix':'/'},"
             "'route':{'cluster':'c','hash_policy':%s}}]}]}",
             policies);
    json_t *root = json_object();
    json_object_set_new(root, "rc", J(json));
    pt_cfg_init(r, root);
    pt_route_config_t *rc = NULL;
    if (pt_cfg_enter(r, "rc") > 0) {
        b->config->clusters = (pt_cluster_lookup_t){pt_boot_view_has, b->view};
        rc = pt_route_config_parse(r, b->config);
        b->config->clusters = (pt_cluster_lookup_t){0};
        pt_cfg_leave(r);
    }
    pt_cfg_finish(r);
    json_decref(root);
    for (size_t i = 0; i < r->nerrors; i++)
        fprintf(stderr, "  route: %s\n", r->errors[i]);
    return pt_cfg_ok(r) ? rc : NULL;
}

static pt_http_headers_t *req(pt_arena_t *a, ...)
{
    pt_http_headers_t *h = pt_arena_alloc(a, sizeof(*h));
    pt_http_headers_init(h, a);
    va_list ap;
    va_start(ap, a);
    const char *n;
    while ((n = va_arg(ap, const char *)) != NULL)
        pt_http_headers_add_str(h, n, va_arg(ap, const char *));
    va_end(ap);
    return h;
}

static int cookies_made;
static const char *fake_cookie(void *data, const pt_hash_policy_t *p)
{
    (void)data;
    (void)p;
    cookies_made++;
    return "0123456789abcdef";
}

static uint64_t X(const char *s)
{
    return pt_xxhash64(s, strlen(s), 0);
}

static void test_route_hash_policies(void)
{
    pt_cfg_t r;
    pt_boot_t *b = boot(ONE_CLUSTER(EPS4), &r);
    PT_CHECK(b != NULL);
    pt_cfg_dispose(&r);
    pt_route_config_t *rc = route_with(
        b,
        "[{'header':{'header_name':'X-User'}},"
        "{'cookie':{'name':'sess','ttl':'60s','path':'/app'}},"
        "{'query_parameter':{'name':'shard'},'terminal':true},"
        "{'connection_properties':{'source_ip':true}}]",
        &r);
    pt_cfg_dispose(&r);
    PT_CHECK(rc != NULL);
    const pt_route_t *rt = &rc->vhosts[0].routes[0];
    PT_CHECK(rt->nhash_policies == 4);

    pt_arena_t a;
    pt_arena_init_small(&a);
    pt_addr_t client;
    pt_addr_parse(&client, "192.168.1.7", 4444);
    uint64_t h;
    /* Header, cookie (present, quoted), query (terminal: source_ip is not reached). */
    pt_http_headers_t *q = req(&a, ":path", "/x?a=1&shard=7&shard=8", "x-user", "alice",
                               "cookie", "foo=bar; sess=\"abc\"", NULL);
    cookies_made = 0;
    PT_CHECK(pt_route_hash(rt, q, &client, fake_cookie, NULL, &h) == 1);
    uint64_t want = pt_hash_combine(pt_hash_combine(X("alice"), X("abc")), X("7"));
    PT_CHECK(h == want && cookies_made == 0);
    /* No header, no cookie: the cookie is made (ttl) and hashed; no query: source_ip. */
    q = req(&a, ":path", "/x", NULL);
    PT_CHECK(pt_route_hash(rt, q, &client, fake_cookie, NULL, &h) == 1);
    PT_CHECK(cookies_made == 1);
    PT_CHECK(h == pt_hash_combine(X("0123456789abcdef"), X("192.168.1.7")));
    /* Several values of a header: sorted, chained with seeds, whatever their order. */
    q = req(&a, ":path", "/", "x-user", "b", "x-user", "a", "cookie", "sess=z", NULL);
    pt_http_headers_t *q2 = req(&a, ":path", "/", "x-user", "a", "x-user", "b", "cookie",
                                "sess=z", NULL);
    uint64_t h2;
    PT_CHECK(pt_route_hash(rt, q, &client, NULL, NULL, &h) == 1);
    PT_CHECK(pt_route_hash(rt, q2, &client, NULL, NULL, &h2) == 1 && h == h2);
    uint64_t ab = pt_xxhash64("b", 1, pt_xxhash64("a", 1, 0));
    PT_CHECK(h == pt_hash_combine(pt_hash_combine(ab, X("z")), X("192.168.1.7")));
    /* "?shard" alone has the value "". */
    q = req(&a, ":path", "/?shard", NULL);
    PT_CHECK(pt_route_hash(rt, q, NULL, NULL, NULL, &h) == 1 && h == X(""));
    pt_route_config_unref(rc);

    /* Nothing matches: no hash (the balancer picks at random); regex_rewrite applies. */
    rc = route_with(b,
                    "[{'header':{'header_name':':path','regex_rewrite':{'pattern':"
                    "{'regex':'^/user/([^/]*).*'},'substitution':'\\\\1'}}},"
                    "{'cookie':{'name':'c'}}]",
                    &r);
    pt_cfg_dispose(&r);
    PT_CHECK(rc != NULL);
    rt = &rc->vhosts[0].routes[0];
    q = req(&a, ":path", "/user/bob/photos", NULL);
    PT_CHECK(pt_route_hash(rt, q, NULL, fake_cookie, NULL, &h) == 1 && h == X("bob"));
    q = req(&a, "x", "y", NULL);
    PT_CHECK(pt_route_hash(rt, q, NULL, fake_cookie, NULL, &h) == 0);
    pt_route_config_unref(rc);

    /* Envoy's generated cookie and its Set-Cookie. */
    pt_addr_t local;
    pt_addr_parse(&local, "10.0.0.9", 80);
    char v[17];
    pt_route_cookie_value(&client, &local, v);
    char want_v[17];
    snprintf(want_v, sizeof(want_v), "%016llx",
             (unsigned long long)X("192.168.1.7:444410.0.0.9:80"));
    PT_CHECK_STR(v, want_v);
    pt_cookie_attribute_t at[2] = {{"SameSite", "Strict"}, {"Secure", ""}};
    pt_hash_policy_t p = {.kind = PT_HASH_POLICY_COOKIE, .name = "sess", .has_ttl = 1,
                          .ttl_s = 60, .path = "/app", .attributes = at, .nattributes = 2};
    PT_CHECK_STR(pt_route_set_cookie(&p, "abc", &a),
                 "sess=\"abc\"; Max-Age=60; Path=/app; SameSite=Strict; Secure; HttpOnly");
    p.ttl_s = 0;
    p.path = NULL;
    p.nattributes = 0;
    PT_CHECK_STR(pt_route_set_cookie(&p, "abc", &a), "sess=\"abc\"; HttpOnly");
    pt_arena_dispose(&a);
    pt_boot_free(b);
}

int main(void)
{
    PT_RUN(test_xxhash64_vectors);
    PT_RUN(test_murmur2_vectors);
    PT_RUN(test_hash_combine);
    PT_RUN(test_ring_sizes_and_weights);
    PT_RUN(test_ring_search);
    PT_RUN(test_maglev_weights);
    PT_RUN(test_stability);
    PT_RUN(test_cluster_config_errors);
    PT_RUN(test_cluster_policies);
    PT_RUN(test_cluster_health);
    PT_RUN(test_cluster_priorities);
    PT_RUN(test_route_hash_policies);
    PT_TEST_EXIT();
}
