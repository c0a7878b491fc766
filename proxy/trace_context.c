#include "proxy/trace_context.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "proxy/random.h"

/* A hex digit's value + 1 (either case), 0 for any other byte: one load per digit, since
 * every traced request reads the x-request-id's digits and often a B3 or W3C context's. */
static const uint8_t hex_digit[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16};

static int hexval(char c)
{
    return (int)hex_digit[(unsigned char)c] - 1;
}

/* n (1..16) hex digits at p into *out. 0, or -1 on a non-hex character. */
static int hex_n(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = hexval(p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

/* A 16- or 32-digit trace id of length n. */
static int trace_id(const char *p, size_t n, uint64_t *hi, uint64_t *lo)
{
    if (n == 32)
        return hex_n(p, 16, hi) == 0 && hex_n(p + 16, 16, lo) == 0 && (*hi | *lo) != 0 ? 0 : -1;
    *hi = 0;
    return n == 16 && hex_n(p, 16, lo) == 0 && *lo != 0 ? 0 : -1;
}

int pt_trace_parse_traceparent(const char *v, pt_trace_ctx_t *out)
{
    memset(out, 0, sizeof(*out));
    out->sampled = -1;
    if (v == NULL)
        return -1;
    size_t n = strlen(v);
    uint64_t version, flags;
    if (n < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || hex_n(v, 2, &version) != 0)
        return -1;
    /* Version ff is forbidden; 00 is exactly 55 characters; a later one may append fields
     * after another '-'. Uppercase hex is not valid trace context. */
    if (version == 0xff || (version == 0 && n != 55) || (version != 0 && n > 55 && v[55] != '-'))
        return -1;
    for (size_t i = 0; i < 55; i++)
        if (v[i] >= 'A' && v[i] <= 'F')
            return -1;
    if (hex_n(v + 3, 16, &out->trace_hi) != 0 || hex_n(v + 19, 16, &out->trace_lo) != 0 ||
        hex_n(v + 36, 16, &out->span_id) != 0 || hex_n(v + 53, 2, &flags) != 0)
        return -1;
    if ((out->trace_hi | out->trace_lo) == 0 || out->span_id == 0)
        return -1;
    out->sampled = (int)(flags & 1);
    return 0;
}

static int sampled_value(const char *s, size_t n, int *sampled, int *debug)
{
    if (n == 1 && (s[0] == '0' || s[0] == '1')) {
        *sampled = s[0] == '1';
        return 0;
    }
    if (n == 1 && s[0] == 'd') {
        *sampled = 1;
        *debug = 1;
        return 0;
    }
    return -1;
}

int pt_trace_parse_b3(const char *v, pt_trace_ctx_t *out)
{
    memset(out, 0, sizeof(*out));
    out->sampled = -1;
    if (v == NULL)
        return -1;
    size_t n = strlen(v);
    if (n == 1)
        return sampled_value(v, 1, &out->sampled, &out->debug);
    const char *d1 = memchr(v, '-', n);
    if (d1 == NULL)
        return -1;
    if (trace_id(v, (size_t)(d1 - v), &out->trace_hi, &out->trace_lo) != 0)
        return -1;
    const char *sp = d1 + 1;
    const char *d2 = memchr(sp, '-', (size_t)(v + n - sp));
    size_t splen = d2 ? (size_t)(d2 - sp) : (size_t)(v + n - sp);
    if (splen != 16 || hex_n(sp, 16, &out->span_id) != 0 || out->span_id == 0)
        return -1;
    if (d2 == NULL)
        return 0;
    const char *sm = d2 + 1;
    const char *d3 = memchr(sm, '-', (size_t)(v + n - sm));
    size_t smlen = d3 ? (size_t)(d3 - sm) : (size_t)(v + n - sm);
    if (sampled_value(sm, smlen, &out->sampled, &out->debug) != 0)
        return -1;
    if (d3 == NULL)
        return 0;
    const char *pp = d3 + 1;
    if (strlen(pp) != 16 || hex_n(pp, 16, &out->parent_id) != 0 || out->parent_id == 0)
        return -1;
    return 0;
}

int pt_trace_parse_b3_multi(const char *tid, const char *sid, const char *pid, const char *sampled,
                            const char *flags, pt_trace_ctx_t *out)
{
    memset(out, 0, sizeof(*out));
    out->sampled = -1;
    if (sampled != NULL) {
        /* Zipkin's libraries also write true/false. */
        if (strcmp(sampled, "1") == 0 || strcmp(sampled, "true") == 0)
            out->sampled = 1;
        else if (strcmp(sampled, "0") == 0 || strcmp(sampled, "false") == 0)
            out->sampled = 0;
    }
    if (flags != NULL && strcmp(flags, "1") == 0) {
        out->debug = 1;
        out->sampled = 1;
    }
    if (tid == NULL || sid == NULL)
        return -1;
    if (trace_id(tid, strlen(tid), &out->trace_hi, &out->trace_lo) != 0 || strlen(sid) != 16 ||
        hex_n(sid, 16, &out->span_id) != 0 || out->span_id == 0)
        goto bad;
    if (pid != NULL &&
        (strlen(pid) != 16 || hex_n(pid, 16, &out->parent_id) != 0 || out->parent_id == 0))
        goto bad;
    return 0;
bad:
    out->trace_hi = out->trace_lo = out->span_id = out->parent_id = 0;
    return -1;
}

#ifdef __SSE2__
/* Sixteen hex digits in a few vector instructions: the bytes' nibbles are split, interleaved
 * and offset to '0'..'9' / 'a'..'f' all at once (every traced request formats a few ids). */
void pt_trace_hex64(uint64_t v, char out[17])
{
    __m128i x = _mm_cvtsi64_si128((long long)__builtin_bswap64(v)); /* most significant first */
    __m128i nib = _mm_set1_epi8(0x0f);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), nib), lo = _mm_and_si128(x, nib);
    __m128i d = _mm_unpacklo_epi8(hi, lo);
    __m128i letters =
        _mm_and_si128(_mm_cmpgt_epi8(d, _mm_set1_epi8(9)), _mm_set1_epi8('a' - '0' - 10));
    d = _mm_add_epi8(_mm_add_epi8(d, _mm_set1_epi8('0')), letters);
    _mm_storeu_si128((__m128i *)(void *)out, d);
    out[16] = '\0';
}
#else
static const char hex_digits[] = "0123456789abcdef";

void pt_trace_hex64(uint64_t v, char out[17])
{
    for (int i = 15; i >= 0; i--) {
        out[i] = hex_digits[v & 15];
        v >>= 4;
    }
    out[16] = '\0';
}
#endif

size_t pt_trace_id_hex(uint64_t hi, uint64_t lo, int short_ok, char out[33])
{
    if (hi == 0 && short_ok) {
        pt_trace_hex64(lo, out);
        return 16;
    }
    pt_trace_hex64(hi, out);
    pt_trace_hex64(lo, out + 16);
    return 32;
}

void pt_trace_format_traceparent(uint64_t hi, uint64_t lo, uint64_t span, int sampled, char out[56])
{
    memcpy(out, "00-", 3);
    pt_trace_id_hex(hi, lo, 0, out + 3);
    out[35] = '-';
    pt_trace_hex64(span, out + 36);
    out[52] = '-';
    out[53] = '0';
    out[54] = sampled ? '1' : '0';
    out[55] = '\0';
}

uint64_t pt_trace_new_id(void)
{
    uint64_t v;
    do
        v = pt_random_u64();
    while (v == 0);
    return v;
}

static int fraction_hit(pt_fraction_t f, uint64_t value)
{
    return f.num > 0 && value % f.den < f.num;
}

pt_trace_status_t pt_trace_decide(pt_trace_status_t was, uint64_t rid_integer, int client_id,
                                  int force, uint64_t client_draw, pt_fraction_t client,
                                  pt_fraction_t random, pt_fraction_t overall)
{
    uint64_t result = rid_integer % 10000;
    pt_trace_status_t st = was;
    if (st == PT_TRACE_NONE) {
        if (client_id && fraction_hit(client, client_draw))
            st = PT_TRACE_CLIENT;
        else if (force)
            st = PT_TRACE_FORCED;
        else if (fraction_hit(random, result))
            st = PT_TRACE_SAMPLED;
    }
    if (st != PT_TRACE_NONE && !fraction_hit(overall, result))
        st = PT_TRACE_NONE;
    return st;
}

#define RID_TRACE_POS 14

pt_trace_status_t pt_trace_rid_status(const char *rid)
{
    return rid != NULL ? pt_trace_rid_status_n(rid, strlen(rid)) : PT_TRACE_NONE;
}

pt_trace_status_t pt_trace_rid_status_n(const char *rid, size_t len)
{
    if (len != 36)
        return PT_TRACE_NONE;
    switch (rid[RID_TRACE_POS]) {
    case '9':
        return PT_TRACE_SAMPLED;
    case 'a':
        return PT_TRACE_FORCED;
    case 'b':
        return PT_TRACE_CLIENT;
    default:
        return PT_TRACE_NONE;
    }
}

int pt_trace_rid_set_status(char *rid, pt_trace_status_t st)
{
    if (rid == NULL || strlen(rid) != 36)
        return -1;
    static const char mark[] = {'4', '9', 'a', 'b'};
    rid[RID_TRACE_POS] = mark[st];
    return 0;
}

/* Eight hex digits (either case) at p, all checked and converted in one word: every traced
 * request reads its x-request-id's. 0, or -1 when one is not a hex digit. */
static int hex8(const char *p, uint64_t *out)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t x;
    memcpy(&x, p, 8);
    if (x & highs)
        return -1;
    uint64_t lower = x | (ones * 0x20); /* 'A'..'F' as 'a'..'f' */
    /* For bytes under 0x80: the high bit of each byte is set where the byte is >= c. */
#define GE(y, c) (((y) + ones * (0x80u - (c))) & highs)
    uint64_t digit = GE(x, '0') & ~GE(x, '9' + 1);
    uint64_t letter = GE(lower, 'a') & ~GE(lower, 'f' + 1);
#undef GE
    if ((digit | letter) != highs)
        return -1;
    uint64_t n = (lower & (ones * 0x0f)) + (letter >> 7) * 9; /* each byte its value */
    n = __builtin_bswap64(n);                                 /* the first digit in the top byte */
    n = (n | (n >> 4)) & 0x00ff00ff00ff00ffull;
    n = (n | (n >> 8)) & 0x0000ffff0000ffffull;
    n = (n | (n >> 16)) & 0xffffffffull;
    *out = n;
    return 0;
}

int pt_trace_rid_integer_n(const char *rid, size_t len, uint64_t *out)
{
    if (rid == NULL || len < 8)
        return pt_trace_rid_integer(rid, out);
    return hex8(rid, out);
}

int pt_trace_rid_integer(const char *rid, uint64_t *out)
{
    /* hex_n stops at a NUL (not a hex digit): no length check needed first. */
    return rid != NULL ? hex_n(rid, 8, out) : -1;
}
