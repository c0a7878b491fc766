#include "proxy/route_index.h"

#include <string.h>

#include "proxy/route.h"

/* The four kinds of key; bit 0 is "case-insensitive" (the key is hashed lowercase). */
enum { K_PREFIX_CS, K_PREFIX_CI, K_EXACT_CS, K_EXACT_CI };
#define BIT(k)      (1u << (k))
#define PREFIX_BITS (BIT(K_PREFIX_CS) | BIT(K_PREFIX_CI))
#define CI_BITS     (BIT(K_PREFIX_CI) | BIT(K_EXACT_CI))

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME  1099511628211ull

/* One hash slot. tag: the upper bits of the key's mixed hash with the kind in its low two
 * bits, so a probe compares the bytes only of keys of its kind that very likely equal it. */
typedef struct slot {
    uint32_t tag;
    uint32_t route; /* index + 1; 0 = free */
} slot_t;

struct pt_route_index {
    const slot_t *slots;
    uint32_t mask;           /* capacity - 1 (a power of two) */
    uint32_t max_len;        /* longest indexed path */
    const uint8_t *lens;     /* [max_len + 1]: BIT(kind) for each kind with a key of that length */
    const uint32_t *complex; /* indexes of the other routes, ascending */
    uint32_t ncomplex;
    unsigned kinds; /* every kind present (is a lowercase hash needed?) */
    size_t bytes;
};

int pt_route_index_is_simple(const pt_route_t *rt)
{
    const pt_route_match_spec_t *m = &rt->match;
    return (m->kind == PT_PATH_PREFIX || m->kind == PT_PATH_EXACT) && m->path != NULL &&
           m->path_len <= PT_ROUTE_INDEX_MAX_PATH && m->nheaders == 0 && m->nquery == 0;
}

static int key_kind(const pt_route_t *rt)
{
    int ci = !rt->match.case_sensitive;
    return (rt->match.kind == PT_PATH_PREFIX ? K_PREFIX_CS : K_EXACT_CS) + ci;
}

/* ASCII only, as the matcher's tolower() in the C locale. */
static inline unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* FNV-1a is cheap to extend byte by byte along the request's path; its low bits are weak,
 * so the state is mixed (with the kind) before it picks a slot. */
static inline uint64_t mix(uint64_t h, int kind)
{
    h ^= (uint64_t)(kind + 1) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint32_t tag_of(uint64_t m, int kind)
{
    return ((uint32_t)(m >> 32) & ~3u) | (uint32_t)kind;
}

static int same_key(const pt_route_t *rt, int kind, const char *s, size_t n)
{
    const char *k = rt->match.path;
    if (rt->match.path_len != n)
        return 0;
    if (!(kind & 1))
        return memcmp(s, k, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != lower((unsigned char)k[i]))
            return 0;
    return 1;
}

/* The slot holding the key (kind, s[0..n)) whose running FNV state is h, or the free slot
 * where it would go. The table is never full. */
static const slot_t *find(const pt_route_index_t *ix, const pt_route_t *routes, uint64_t h,
                          int kind, const char *s, size_t n)
{
    uint64_t m = mix(h, kind);
    uint32_t tag = tag_of(m, kind);
    for (uint32_t i = (uint32_t)m & ix->mask;; i = (i + 1) & ix->mask) {
        const slot_t *sl = &ix->slots[i];
        if (sl->route == 0 || (sl->tag == tag && same_key(&routes[sl->route - 1], kind, s, n)))
            return sl;
    }
}

int pt_route_index_build(const pt_route_t *routes, unsigned n, pt_arena_t *a,
                         const pt_route_index_t **out)
{
    *out = NULL;
    if (n < PT_ROUTE_INDEX_MIN_ROUTES || n >= UINT32_MAX)
        return 0;
    uint32_t nsimple = 0, max_len = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!pt_route_index_is_simple(&routes[i]))
            continue;
        nsimple++;
        if (routes[i].match.path_len > max_len)
            max_len = (uint32_t)routes[i].match.path_len;
    }
    if (nsimple == 0)
        return 0;
    uint32_t cap = 4;
    while (cap < nsimple + nsimple / 2 + 1) /* at most 2/3 full */
        cap <<= 1;
    uint32_t ncomplex = n - nsimple;
    pt_route_index_t *ix = pt_arena_alloc(a, sizeof(*ix));
    slot_t *slots = pt_arena_alloc(a, cap * sizeof(*slots));
    uint8_t *lens = pt_arena_alloc(a, max_len + 1);
    uint32_t *complex = pt_arena_alloc(a, (ncomplex ? ncomplex : 1) * sizeof(*complex));
    if (ix == NULL || slots == NULL || lens == NULL || complex == NULL)
        return -1;
    ix->slots = slots;
    ix->mask = cap - 1;
    ix->max_len = max_len;
    ix->lens = lens;
    ix->complex = complex;
    for (unsigned i = 0; i < n; i++) {
        const pt_route_t *rt = &routes[i];
        if (!pt_route_index_is_simple(rt)) {
            complex[ix->ncomplex++] = i;
            continue;
        }
        int kind = key_kind(rt);
        const char *k = rt->match.path;
        size_t len = rt->match.path_len;
        uint64_t h = FNV_OFFSET;
        for (size_t j = 0; j < len; j++)
            h = (h ^ (kind & 1 ? lower((unsigned char)k[j]) : (unsigned char)k[j])) * FNV_PRIME;
        slot_t *sl = &slots[find(ix, routes, h, kind, k, len) - slots];
        if (sl->route != 0)
            continue; /* the same key earlier: that route is the first to accept it */
        sl->tag = tag_of(mix(h, kind), kind);
        sl->route = i + 1;
        lens[len] |= (uint8_t)BIT(kind);
        ix->kinds |= BIT(kind);
    }
    ix->bytes = sizeof(*ix) + cap * sizeof(*slots) + max_len + 1 + ncomplex * sizeof(*complex);
    *out = ix;
    return 0;
}

static inline uint32_t lowest(uint32_t best, const pt_route_index_t *ix, const pt_route_t *routes,
                              uint64_t h, int kind, const char *s, size_t n)
{
    const slot_t *sl = find(ix, routes, h, kind, s, n);
    return sl->route != 0 && sl->route - 1 < best ? sl->route - 1 : best;
}

uint32_t pt_route_index_candidate(const pt_route_index_t *ix, const pt_route_t *routes,
                                  const char *path, size_t plen, size_t pend)
{
    uint32_t best = PT_ROUTE_INDEX_NONE;
    size_t lim = plen < ix->max_len ? plen : ix->max_len;
    int ci = (ix->kinds & CI_BITS) != 0;
    uint64_t hcs = FNV_OFFSET, hci = FNV_OFFSET;
    /* A prefix key of length l accepts the path when it equals path[0..l) (query string
     * included, as the matcher compares it); an exact key only at l == pend. */
    for (size_t l = 0;; l++) {
        unsigned f = ix->lens[l];
        if (l != pend)
            f &= PREFIX_BITS;
        if (f != 0) {
            if (f & BIT(K_PREFIX_CS))
                best = lowest(best, ix, routes, hcs, K_PREFIX_CS, path, l);
            if (f & BIT(K_PREFIX_CI))
                best = lowest(best, ix, routes, hci, K_PREFIX_CI, path, l);
            if (f & BIT(K_EXACT_CS))
                best = lowest(best, ix, routes, hcs, K_EXACT_CS, path, l);
            if (f & BIT(K_EXACT_CI))
                best = lowest(best, ix, routes, hci, K_EXACT_CI, path, l);
        }
        if (l == lim)
            break;
        unsigned char c = (unsigned char)path[l];
        hcs = (hcs ^ c) * FNV_PRIME;
        if (ci)
            hci = (hci ^ lower(c)) * FNV_PRIME;
    }
    return best;
}

const uint32_t *pt_route_index_complex(const pt_route_index_t *ix, unsigned *n)
{
    *n = ix->ncomplex;
    return ix->complex;
}

size_t pt_route_index_bytes(const pt_route_index_t *ix)
{
    return ix != NULL ? ix->bytes : 0;
}
