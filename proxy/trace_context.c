#include "proxy/trace_context.h"

#include <string.h>

#include "proxy/random.h"

static int hexval(char c)
{
    unsigned d = (unsigned)c - '0';
    if (d < 10)
        return (int)d;
    d = ((unsigned)c | 0x20) - 'a'; /* either case */
    return d < 6 ? (int)d + 10 : -1;
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

/* Two hex digits per byte: every request that traces formats a few ids. */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void pt_trace_hex64(uint64_t v, char out[17])
{
    for (int i = 7; i >= 0; i--) {
        memcpy(out + 2 * i, hex_pairs + 2 * (v & 0xff), 2);
        v >>= 8;
    }
    out[16] = '\0';
}

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
    if (rid == NULL || strlen(rid) != 36)
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

int pt_trace_rid_integer(const char *rid, uint64_t *out)
{
    /* hex_n stops at a NUL (not a hex digit): no length check needed first. */
    return rid != NULL ? hex_n(rid, 8, out) : -1;
}
