#include "proxy/random.h"

#include <sys/random.h>
#include <time.h>

static _Thread_local uint64_t state[4];
static _Thread_local int seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void seed(void)
{
    if (getrandom(state, sizeof(state), 0) != (ssize_t)sizeof(state)) {
        /* No entropy source: fall back to the clock and the state's address. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t z = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)state;
        for (int i = 0; i < 4; i++) {
            z += 0x9e3779b97f4a7c15ull; /* splitmix64 */
            uint64_t x = z;
            x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
            x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
            state[i] = x ^ (x >> 31);
        }
    }
    seeded = 1;
}

uint64_t pt_random_u64(void)
{
    if (!seeded)
        seed();
    uint64_t result = rotl(state[1] * 5, 7) * 9;
    uint64_t t = state[1] << 17;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= t;
    state[3] = rotl(state[3], 45);
    return result;
}

uint64_t pt_random_below(uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do {
        r = pt_random_u64();
    } while (r >= limit);
    return r % n;
}

void pt_uuid4(char out[37])
{
    uint64_t a = pt_random_u64(), b = pt_random_u64();
    a = (a & ~0xf000ull) | 0x4000ull;                          /* version 4 */
    b = (b & ~(0xc000ull << 48)) | (0x8000ull << 48);          /* variant 10 */
    /* 8-4-4-4-12 hex digits, written by hand: this runs for every request. */
    static const char hexd[] = "0123456789abcdef";
    uint64_t bits[2] = {a, b};
    int o = 0;
    for (int i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20)
            out[o++] = '-';
        uint64_t w = bits[i / 16];
        out[o++] = hexd[(w >> (60 - 4 * (i % 16))) & 15];
    }
    out[o] = '\0';
}
