#include "proxy/hash.h"

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

pt_digest_t pt_digest(const void *p, size_t n)
{
    return (pt_digest_t){pt_hash64(p, n, 0x9e3779b97f4a7c15ull),
                         pt_hash64(p, n, 0xd1b54a32d192ed03ull)};
}
