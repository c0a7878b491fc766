/* libFuzzer target for filters/client_hello.
 *
 * The input is used twice, so seeds stay plain captures (tests/fuzz/corpus/fuzz_client_hello):
 *  1. as the raw first bytes of a connection (record layer included);
 *  2. as a handshake-layer byte stream, framed here into records of several sizes.
 * Every parse is checked for the result contract (needed > len only on INCOMPLETE, fields
 * reset unless OK, an OK sni printable lowercase ASCII and NUL-terminated, ALPN slots sane).
 * Across inputs it checks what makes the parser usable on peeked bytes: prefix monotonicity
 * (every prefix is INCOMPLETE until the first verdict, which no longer byte changes), that
 * `needed` never shrinks and never overshoots a valid hello, that max_bytes cuts exactly at
 * the hello's length, and that the record framing of a given handshake stream never changes
 * the result. Every parse reads from an exact-size heap copy placed so that a read past `len`
 * runs off the allocation, where ASan sees it. abort() on any violation. */
#include "filters/client_hello.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAXB         (64 * 1024)
#define ALL_PREFIXES 1024 /* inputs up to this size have every prefix parsed, larger a sample */

static const pt_client_hello_t zero;

/* Parses data[0..len) from a copy that ends exactly at the end of its allocation. One buffer
 * is kept and only grown (a malloc per parse made ASan's quarantine the bottleneck). */
static pt_ch_result_t parse_exact(const uint8_t *data, size_t len, size_t max,
                                  pt_client_hello_t *out)
{
    static uint8_t *tail;
    static size_t cap;
    if (len > cap) {
        free(tail);
        cap = len;
        tail = malloc(cap);
        CHECK(tail != NULL);
    }
    if (len == 0)
        return pt_client_hello_parse(NULL, 0, max, out);
    uint8_t *copy = tail + cap - len;
    memmove(copy, data, len);
    return pt_client_hello_parse(copy, len, max, out);
}

/* The result contract for a single call. */
static void check_one(pt_ch_result_t r, const pt_client_hello_t *h, const uint8_t *data, size_t len,
                      size_t max)
{
    CHECK(r == PT_CH_OK || r == PT_CH_INCOMPLETE || r == PT_CH_NOT_TLS || r == PT_CH_ERROR);
    CHECK(strcmp(pt_ch_result_str(r), "unknown") != 0);
    if (len == 0)
        CHECK(r == PT_CH_INCOMPLETE || r == PT_CH_ERROR);
    if (len >= 1 && data[0] != 0x16)
        CHECK(r == PT_CH_NOT_TLS);
    if (r == PT_CH_INCOMPLETE)
        CHECK(h->needed > len && h->needed <= max);
    else
        CHECK(h->needed == 0);
    if (r != PT_CH_OK) {
        pt_client_hello_t t = *h;
        t.needed = 0;
        CHECK(memcmp(&t, &zero, sizeof(t)) == 0);
        return;
    }
    const char *end = memchr(h->sni, '\0', sizeof(h->sni));
    CHECK(end != NULL);
    for (const char *p = h->sni; p < end; p++)
        CHECK(*p > 0x20 && *p < 0x7f && !(*p >= 'A' && *p <= 'Z'));
    for (const char *p = end; p < h->sni + sizeof(h->sni); p++)
        CHECK(*p == '\0');
    CHECK(h->nalpn <= PT_CH_MAX_ALPN);
    for (unsigned i = 0; i < PT_CH_MAX_ALPN; i++) {
        const char *a = h->alpn[i];
        const char *z = memchr(a, '\0', sizeof(h->alpn[i]));
        CHECK(z != NULL);
        if (i < h->nalpn)
            CHECK(z > a);
        else
            CHECK(z == a);
        for (const char *p = z; p < a + sizeof(h->alpn[i]); p++)
            CHECK(*p == '\0');
    }
    CHECK(h->supports_tls13 == 0 || h->supports_tls13 == 1);
}

/* Parses prefixes of data (all of them when small, else a spread plus the points just below
 * and at each `needed`) and checks they form: INCOMPLETE with a non-decreasing `needed`, then
 * one verdict that every longer prefix repeats. If that verdict is OK at length m, no `needed`
 * before it exceeded m, and max_bytes == m still parses while m - 1 is ERROR. Returns the
 * result for the whole input into *full. */
static pt_ch_result_t check_prefixes(const uint8_t *data, size_t size, size_t max,
                                     pt_client_hello_t *full)
{
    pt_ch_result_t fr = parse_exact(data, size, max, full);
    check_one(fr, full, data, size, max);

    size_t step = size <= ALL_PREFIXES ? 1 : size / 256;
    size_t last_needed = 0, m = 0;
    int verdict = 0;
    pt_ch_result_t vr = PT_CH_INCOMPLETE;
    pt_client_hello_t first = zero;
    for (size_t p = 0; p <= size;) {
        pt_client_hello_t h;
        pt_ch_result_t r = parse_exact(data, p, max, &h);
        check_one(r, &h, data, p, max);
        if (!verdict && r == PT_CH_INCOMPLETE) {
            CHECK(h.needed >= last_needed);
            last_needed = h.needed;
        } else if (!verdict) {
            verdict = 1;
            vr = r;
            m = p;
            first = h;
            if (r == PT_CH_OK)
                CHECK(last_needed <= m);
        } else {
            CHECK(r == vr && memcmp(&h, &first, sizeof(h)) == 0);
        }
        if (p == size)
            break;
        /* next: the regular step, but never jump over needed - 1 and needed */
        size_t next = p + step;
        if (!verdict && r == PT_CH_INCOMPLETE && step > 1) {
            if (h.needed - 1 > p && h.needed - 1 < next)
                next = h.needed - 1;
            else if (h.needed > p && h.needed < next)
                next = h.needed;
        }
        p = next < size ? next : size;
    }
    if (!verdict)
        CHECK(fr == PT_CH_INCOMPLETE && full->needed >= last_needed);
    else
        CHECK(fr == vr && memcmp(full, &first, sizeof(first)) == 0);

    if (fr == PT_CH_OK && step == 1) {
        pt_client_hello_t h;
        CHECK(parse_exact(data, size, m, &h) == PT_CH_OK && memcmp(&h, full, sizeof(h)) == 0);
        CHECK(parse_exact(data, size, m - 1, &h) == PT_CH_ERROR);
    }
    if (fr == PT_CH_INCOMPLETE) {
        pt_client_hello_t h;
        CHECK(parse_exact(data, size, full->needed - 1, &h) == PT_CH_ERROR);
    }
    return fr;
}

/* Frames hs[0..n) into handshake records of at most frag bytes; returns a malloc'ed buffer. */
static uint8_t *frame(const uint8_t *hs, size_t n, size_t frag, uint8_t version, size_t *outlen)
{
    size_t nrec = (n + frag - 1) / frag;
    uint8_t *out = malloc(n + 5 * nrec + 1);
    CHECK(out != NULL);
    size_t m = 0;
    for (size_t i = 0; i < n; i += frag) {
        size_t k = n - i < frag ? n - i : frag;
        out[m++] = 0x16;
        out[m++] = 0x03;
        out[m++] = version;
        out[m++] = (uint8_t)(k >> 8);
        out[m++] = (uint8_t)k;
        memcpy(out + m, hs + i, k);
        m += k;
    }
    *outlen = m;
    return out;
}

/* The handshake stream parsed under several framings: same result, same fields. */
static void check_framings(const uint8_t *hs, size_t n)
{
    size_t frags[] = {16384, 1, 2, 3, 5, 16, 255, 1 + (n ? hs[n - 1] : 0) % 64};
    pt_client_hello_t ref, h;
    pt_ch_result_t rr = PT_CH_INCOMPLETE;
    for (size_t i = 0; i < sizeof(frags) / sizeof(frags[0]); i++) {
        if (frags[i] < 16 && n > 4096)
            continue; /* keep the 6x blow-up of tiny records for small inputs */
        size_t len;
        uint8_t *b = frame(hs, n, frags[i], (uint8_t)(1 + i % 4), &len);
        pt_ch_result_t r;
        if (i == sizeof(frags) / sizeof(frags[0]) - 1 && len <= 3 * ALL_PREFIXES)
            r = check_prefixes(b, len, SIZE_MAX, &h);
        else {
            r = parse_exact(b, len, SIZE_MAX, &h);
            check_one(r, &h, b, len, SIZE_MAX);
        }
        free(b);
        CHECK(r != PT_CH_NOT_TLS || n == 0);
        if (i == 0) {
            rr = r;
            ref = h;
            continue;
        }
        CHECK(r == rr);
        if (r == PT_CH_OK)
            CHECK(memcmp(&h, &ref, sizeof(h)) == 0);
    }
}

/* An OK raw input keeps its result when its handshake bytes are re-framed. The reassembly here
 * is deliberately naive and independent of the parser's. */
static void check_reframed(const uint8_t *data, size_t size, const pt_client_hello_t *ok)
{
    uint8_t *hs = malloc(size);
    CHECK(hs != NULL);
    size_t pos = 0, n = 0, total = 0;
    while (pos + 5 <= size) {
        size_t rl = (size_t)data[pos + 3] << 8 | data[pos + 4];
        CHECK(pos + 5 + rl <= size);
        memcpy(hs + n, data + pos + 5, rl);
        n += rl;
        pos += 5 + rl;
        if (n >= 4) {
            total = 4 + ((size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3]);
            if (n >= total)
                break;
        }
    }
    CHECK(total != 0 && n >= total);
    static const size_t frags[] = {1, 7, 16384};
    for (size_t i = 0; i < sizeof(frags) / sizeof(frags[0]); i++) {
        size_t len;
        uint8_t *b = frame(hs, total, frags[i], 3, &len);
        pt_client_hello_t h;
        CHECK(parse_exact(b, len, SIZE_MAX, &h) == PT_CH_OK);
        CHECK(memcmp(&h, ok, sizeof(h)) == 0);
        free(b);
    }
    free(hs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pt_client_hello_t full;
    if (check_prefixes(data, size, MAXB, &full) == PT_CH_OK)
        check_reframed(data, size, &full);
    check_framings(data, size);
    return 0;
}
