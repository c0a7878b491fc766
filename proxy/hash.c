#include "proxy/hash.h"

#include <jansson.h>
#include <string.h>

uint64_t pt_hash64(const void *p, size_t n, uint64_t seed)
{
    const uint64_t m = 0xc6a4a7935bd1e995ull;
    const int r = 47;
    const unsigned char *s = p;
    uint64_t h = seed ^ (n * m);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t k;
        memcpy(&k, s + i, 8);
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
    }
    if (i < n) {
        uint64_t k = 0;
        memcpy(&k, s + i, n - i);
        h ^= k;
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h;
}


/* A 64-bit mix (splitmix64's finalizer): spreads a combination of hashes over all bits. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* One lane of the digest (seed chooses the lane). Containers fold their children in:
 * arrays in order, objects as a sum over members (order-free), each member mixing its key's
 * hash with its value's. */
static uint64_t lane(const json_t *v, uint64_t seed)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        uint64_t sum = 0;
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member) {
            uint64_t k = pt_hash64(key, strlen(key), seed);
            sum += mix(k ^ mix(lane(member, seed) + 0x9e3779b97f4a7c15ull));
        }
        return mix(sum ^ (seed + 1) ^ (uint64_t)json_object_size(v) << 32);
    }
    case JSON_ARRAY: {
        uint64_t h = mix(seed + 2 + json_array_size(v));
        for (size_t i = 0; i < json_array_size(v); i++)
            h = mix(h ^ lane(json_array_get(v, i), seed));
        return h;
    }
    case JSON_STRING:
        return pt_hash64(json_string_value(v), json_string_length(v), seed + 3);
    case JSON_INTEGER: {
        json_int_t n = json_integer_value(v);
        return mix((uint64_t)n ^ (seed + 4));
    }
    case JSON_REAL: {
        double d = json_real_value(v);
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        return mix(bits ^ (seed + 5));
    }
    case JSON_TRUE:
        return mix(seed + 6);
    case JSON_FALSE:
        return mix(seed + 7);
    case JSON_NULL:
    default:
        return mix(seed + 8);
    }
}

pt_digest_t pt_json_digest(const json_t *v)
{
    return (pt_digest_t){lane(v, 0x9e3779b97f4a7c15ull), lane(v, 0xd1b54a32d192ed03ull)};
}

/* The 64x64 -> 128-bit product folded to 64 bits (wyhash's "mum"): one multiply mixes 16
 * bytes into a lane. */
static inline uint64_t mum(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
    __extension__ typedef unsigned __int128 u128;
    u128 r = (u128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
    uint64_t ha = a >> 32, la = (uint32_t)a, hb = b >> 32, lb = (uint32_t)b;
    uint64_t rh = ha * hb, rm0 = ha * lb, rm1 = hb * la, rl = la * lb;
    uint64_t t = rl + (rm0 << 32), c = t < rl;
    uint64_t lo = t + (rm1 << 32);
    c += lo < t;
    uint64_t hi = rh + (rm0 >> 32) + (rm1 >> 32) + c;
    return lo ^ hi;
#endif
}

static inline uint64_t r64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Four lanes take 64 bytes a step, each folding 16 of them in with one 128-bit multiply as
 * wyhash does; independent, their multiplies overlap, so a 13 MB file of assignments
 * digests in well under a millisecond. The 256 bits of lane state fold into the digest's
 * two halves by different mixes. */
pt_digest_t pt_bytes_digest(const void *p, size_t n)
{
    static const uint64_t k[4] = {0xa0761d6478bd642full, 0xe7037ed1a0b428dbull,
                                  0x8ebc6af09c88c6e3ull, 0x589965cc75374cc3ull};
    const unsigned char *s = p;
    uint64_t l[4] = {k[0] ^ n, k[1] + n, k[2] ^ (n << 1), k[3] - n};
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int j = 0; j < 4; j++)
            l[j] = mum(r64(s + i + 16 * (size_t)j) ^ k[j], r64(s + i + 16 * (size_t)j + 8) ^ l[j]);
    for (int j = 0; i < n; i += 16, j++) { /* the last 1..63 bytes, 16 (or fewer) a lane */
        unsigned char tail[16] = {0};
        memcpy(tail, s + i, n - i < 16 ? n - i : 16);
        l[j] = mum(r64(tail) ^ k[j], r64(tail + 8) ^ l[j] ^ (uint64_t)(n - i));
    }
    uint64_t a = mix(l[0] ^ mix(l[1] + 0x9e3779b97f4a7c15ull)) ^ mix(l[2] ^ mix(l[3] + 1));
    uint64_t b = mix(l[3] ^ mix(l[2] + 0x2545f4914f6cdd1dull)) + mix(l[1] ^ mix(l[0] + 2));
    return (pt_digest_t){a, b};
}
