/* TLS ClientHello parser: see client_hello.h for the contract.
 *
 * Two passes over the peeked bytes, neither of which allocates:
 *  1. walk the record layer: validate each record header, find the handshake header (which may
 *     itself be split across records) and decide whether every record carrying the message is
 *     complete; if not, compute how many bytes are needed and stop there;
 *  2. parse the ClientHello body through a reader that presents the handshake bytes of those
 *     (already validated, complete) records as one contiguous stream, skipping record headers.
 * Only pass 1 can return INCOMPLETE, so pass 2 never has to resume anything, and every length
 * check in pass 2 is a plain bounds check against the enclosing length. */
#include "filters/client_hello.h"

#include <string.h>

#define REC_HEADER      5
#define REC_HANDSHAKE   0x16
#define REC_MAX_PLAIN   16384 /* TLSPlaintext.length limit, RFC 8446 5.1 / RFC 5246 6.2.1 */
#define HS_HEADER       4
#define HS_CLIENT_HELLO 1
/* Smallest ClientHello body: legacy_version, random, empty session_id, one cipher suite, one
 * compression method, no extensions. Used both to reject short messages early and to make
 * `needed` a useful lower bound before the handshake length is known. */
#define HS_MIN_BODY    (2 + 32 + 1 + 2 + 2 + 1 + 1)
#define SESSION_ID_MAX 32

#define EXT_SERVER_NAME        0x0000
#define EXT_ALPN               0x0010
#define EXT_SUPPORTED_VERSIONS 0x002b
#define SNI_HOST_NAME          0
#define TLS13                  0x0304

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* a + b, saturating: the walk adds record lengths to offsets that a caller could in theory have
 * placed near SIZE_MAX; saturation turns that into "more than max_bytes" instead of a wrap. */
static size_t add_sat(size_t a, size_t b)
{
    return a + b < a ? (size_t)-1 : a + b;
}

/* Physical bytes that rem more handshake bytes take at the least: records hold at most 2^14
 * bytes each, and each brings its header. */
static size_t framed(size_t rem)
{
    return add_sat(rem, (rem + REC_MAX_PLAIN - 1) / REC_MAX_PLAIN * REC_HEADER);
}

/* ------------------------------------------------------------------------------------------ */
/* Pass 2: a reader over the handshake bytes of consecutive, complete, validated records. */

typedef struct rd {
    const uint8_t *buf;
    size_t off;      /* physical offset in buf of the next byte */
    size_t rec_left; /* bytes of the current record's fragment not yet read */
    size_t left;     /* logical bytes left in the current bound (message or vector) */
} rd_t;

/* Moves into the next record when the current one is exhausted. Only called with left > 0,
 * and pass 1 made sure every record up to the end of the message is complete and non-empty,
 * so the next header is there and describes a fragment that is there too. */
static void rd_normalize(rd_t *r)
{
    while (r->rec_left == 0) {
        r->rec_left = get_u16(r->buf + r->off + 3);
        r->off += REC_HEADER;
    }
}

static int rd_u8(rd_t *r, unsigned *v)
{
    if (r->left < 1)
        return -1;
    rd_normalize(r);
    *v = r->buf[r->off];
    r->off++;
    r->rec_left--;
    r->left--;
    return 0;
}

static int rd_u16(rd_t *r, unsigned *v)
{
    unsigned hi, lo;
    if (r->left < 2 || rd_u8(r, &hi) != 0 || rd_u8(r, &lo) != 0)
        return -1;
    *v = hi << 8 | lo;
    return 0;
}

static int rd_skip(rd_t *r, size_t n)
{
    if (r->left < n)
        return -1;
    r->left -= n;
    while (n > 0) {
        rd_normalize(r);
        size_t take = n < r->rec_left ? n : r->rec_left;
        r->off += take;
        r->rec_left -= take;
        n -= take;
    }
    return 0;
}

/* Splits the next n bytes off r into sub (a vector to parse), advancing r past them. */
static int rd_sub(rd_t *r, size_t n, rd_t *sub)
{
    if (r->left < n)
        return -1;
    *sub = *r;
    sub->left = n;
    return rd_skip(r, n);
}

/* A vector with a u8/u16 length prefix that must fit in r. */
static int rd_vec8(rd_t *r, rd_t *sub)
{
    unsigned n;
    return rd_u8(r, &n) != 0 ? -1 : rd_sub(r, n, sub);
}

static int rd_vec16(rd_t *r, rd_t *sub)
{
    unsigned n;
    return rd_u16(r, &n) != 0 ? -1 : rd_sub(r, n, sub);
}

/* ------------------------------------------------------------------------------------------ */
/* Extensions */

/* server_name (RFC 6066 3): ServerNameList server_name_list<1..2^16-1>, each entry a name_type
 * and, for every type, a u16-length-prefixed body (RFC 6066 requires that of future types, so
 * unknown ones can be skipped). At most one host_name. The name is what filter chains and
 * sni_cluster route on, so it must be exactly what the TLS stack behind us will see: anything a
 * TLS stack would refuse (empty, > 255 bytes, NUL) or that is not a DNS name in A-label form
 * (controls, space, DEL, 8-bit) is an error rather than a best-effort string. */
static int parse_sni(rd_t *ext, pt_client_hello_t *out)
{
    rd_t list, name;
    if (rd_vec16(ext, &list) != 0 || ext->left != 0 || list.left == 0)
        return -1;
    int seen = 0;
    while (list.left > 0) {
        unsigned type;
        if (rd_u8(&list, &type) != 0 || rd_vec16(&list, &name) != 0)
            return -1;
        if (type != SNI_HOST_NAME)
            continue;
        if (seen || name.left == 0 || name.left > PT_CH_MAX_SNI)
            return -1;
        seen = 1;
        size_t n = 0;
        unsigned c;
        while (rd_u8(&name, &c) == 0) {
            if (c <= 0x20 || c >= 0x7f)
                return -1;
            out->sni[n++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        }
        out->sni[n] = '\0';
    }
    return 0;
}

/* ALPN (RFC 7301 3.1): ProtocolNameList protocol_name_list<2..2^16-1>, names <1..2^8-1>.
 * Every name is validated; only those that fit the fixed slots and hold no NUL are kept, since
 * a truncated or NUL-cut name could falsely match a configured protocol. */
static int parse_alpn(rd_t *ext, pt_client_hello_t *out)
{
    rd_t list, name;
    if (rd_vec16(ext, &list) != 0 || ext->left != 0 || list.left == 0)
        return -1;
    while (list.left > 0) {
        if (rd_vec8(&list, &name) != 0 || name.left == 0)
            return -1;
        if (out->nalpn >= PT_CH_MAX_ALPN || name.left >= sizeof(out->alpn[0]))
            continue;
        char *dst = out->alpn[out->nalpn];
        size_t n = 0;
        int has_nul = 0;
        unsigned c;
        while (rd_u8(&name, &c) == 0) {
            has_nul |= c == 0;
            dst[n++] = (char)c;
        }
        if (has_nul) {
            memset(dst, 0, sizeof(out->alpn[0]));
            continue;
        }
        dst[n] = '\0';
        out->nalpn++;
    }
    return 0;
}

/* supported_versions in a ClientHello (RFC 8446 4.2.1): ProtocolVersion versions<2..254>. */
static int parse_supported_versions(rd_t *ext, pt_client_hello_t *out)
{
    rd_t list;
    if (rd_vec8(ext, &list) != 0 || ext->left != 0 || list.left < 2 || list.left % 2 != 0)
        return -1;
    unsigned v;
    while (rd_u16(&list, &v) == 0)
        if (v == TLS13)
            out->supports_tls13 = 1;
    return 0;
}

/* The extensions block must fill the rest of the message exactly. Each extension's body is
 * bounded by its own length; a repeated extension is forbidden (RFC 8446 4.2) and for the
 * three we read it would let us route on a different value than the TLS stack uses. */
static int parse_extensions(rd_t *body, pt_client_hello_t *out)
{
    rd_t exts, ext;
    if (rd_vec16(body, &exts) != 0 || body->left != 0)
        return -1;
    unsigned seen = 0; /* bit 0 server_name, bit 1 ALPN, bit 2 supported_versions */
    while (exts.left > 0) {
        unsigned type;
        if (rd_u16(&exts, &type) != 0 || rd_vec16(&exts, &ext) != 0)
            return -1;
        unsigned bit;
        int rc;
        switch (type) {
        case EXT_SERVER_NAME:
            bit = 1u << 0;
            rc = (seen & bit) ? -1 : parse_sni(&ext, out);
            break;
        case EXT_ALPN:
            bit = 1u << 1;
            rc = (seen & bit) ? -1 : parse_alpn(&ext, out);
            break;
        case EXT_SUPPORTED_VERSIONS:
            bit = 1u << 2;
            rc = (seen & bit) ? -1 : parse_supported_versions(&ext, out);
            break;
        default:
            bit = 0;
            rc = 0;
            break;
        }
        if (rc != 0)
            return -1;
        seen |= bit;
    }
    return 0;
}

/* ClientHello body (RFC 8446 4.1.2 / RFC 5246 7.4.1.2). legacy_version is reported, not
 * judged: version negotiation is the TLS stack's business. */
static int parse_body(rd_t *body, pt_client_hello_t *out)
{
    rd_t v;
    unsigned ver;
    if (rd_u16(body, &ver) != 0 || rd_skip(body, 32) != 0)
        return -1;
    out->legacy_version = (uint16_t)ver;
    if (rd_vec8(body, &v) != 0 || v.left > SESSION_ID_MAX)
        return -1;
    if (rd_vec16(body, &v) != 0 || v.left < 2 || v.left % 2 != 0)
        return -1;
    if (rd_vec8(body, &v) != 0 || v.left < 1)
        return -1;
    if (body->left == 0) /* extensions are optional (RFC 5246 7.4.1.2) */
        return 0;
    return parse_extensions(body, out);
}

/* ------------------------------------------------------------------------------------------ */
/* Pass 1: the record layer */

static pt_ch_result_t finish(pt_ch_result_t r, size_t needed, pt_client_hello_t *out)
{
    if (r != PT_CH_OK)
        memset(out, 0, sizeof(*out));
    out->needed = r == PT_CH_INCOMPLETE ? needed : 0;
    return r;
}

/* Judges what is present (avail bytes) of the record header at buf + pos: a handshake record
 * of TLS 1.0..1.3. The first record decides whether this is TLS at all (NOT_TLS); a later bad
 * header is a malformed hello (ERROR). Never forms buf + pos when nothing is there, as buf may
 * be NULL when len is 0. */
static int bad_record_header(const uint8_t *buf, size_t pos, size_t avail)
{
    return (avail >= 1 && buf[pos] != REC_HANDSHAKE) || (avail >= 2 && buf[pos + 1] != 3) ||
           (avail >= 3 && (buf[pos + 2] < 1 || buf[pos + 2] > 4));
}

pt_ch_result_t pt_client_hello_parse(const uint8_t *buf, size_t len, size_t max_bytes,
                                     pt_client_hello_t *out)
{
    memset(out, 0, sizeof(*out));

    size_t pos = 0;        /* offset of the current record header */
    size_t hs_seen = 0;    /* handshake bytes carried by the complete records before pos */
    size_t hs_total = 0;   /* HS_HEADER + body length once the handshake header is known */
    uint8_t hh[HS_HEADER]; /* the handshake header, gathered across records */
    size_t hh_n = 0;
    size_t first_rec_len = 0;

    for (;;) {
        size_t avail = len - pos;
        /* Before the handshake length is known, assume the smallest valid ClientHello. */
        size_t min_total = hs_total ? hs_total : HS_HEADER + HS_MIN_BODY;
        if (bad_record_header(buf, pos, avail))
            return finish(pos == 0 ? PT_CH_NOT_TLS : PT_CH_ERROR, 0, out);
        if (avail < REC_HEADER) {
            /* This record and any more the rest of the message needs. */
            size_t need = add_sat(pos, framed(min_total - hs_seen));
            if (need > max_bytes)
                return finish(PT_CH_ERROR, 0, out);
            return finish(PT_CH_INCOMPLETE, need, out);
        }
        size_t rlen = get_u16(buf + pos + 3);
        if (rlen == 0 || rlen > REC_MAX_PLAIN) /* zero-length handshake fragments: RFC 8446 5.1 */
            return finish(PT_CH_ERROR, 0, out);
        if (pos == 0)
            first_rec_len = rlen;
        size_t data = pos + REC_HEADER;
        size_t rec_end = add_sat(data, rlen);

        /* Gather what is present of the handshake header from this fragment, so a bad type or
         * length is reported and `needed` is exact before the record is complete. */
        size_t in_buf = len - data < rlen ? len - data : rlen;
        for (size_t k = 0; hh_n < HS_HEADER && k < in_buf; k++)
            hh[hh_n++] = buf[data + k];
        if (hh_n >= 1 && hh[0] != HS_CLIENT_HELLO)
            return finish(PT_CH_ERROR, 0, out);
        if (hh_n == HS_HEADER && hs_total == 0) {
            size_t body = (size_t)hh[1] << 16 | (size_t)hh[2] << 8 | hh[3];
            if (body < HS_MIN_BODY)
                return finish(PT_CH_ERROR, 0, out);
            hs_total = HS_HEADER + body;
            min_total = hs_total;
        }

        size_t hs_after = hs_seen + rlen; /* handshake bytes through the end of this record */
        size_t need = rec_end;
        if (hs_after < min_total) /* more records to come */
            need = add_sat(rec_end, framed(min_total - hs_after));
        if (need > max_bytes)
            return finish(PT_CH_ERROR, 0, out);
        if (len < rec_end)
            return finish(PT_CH_INCOMPLETE, need, out);
        if (hs_total != 0 && hs_after >= hs_total)
            break; /* every record carrying the message is complete */
        hs_seen = hs_after;
        pos = rec_end;
    }

    rd_t msg = {.buf = buf, .off = REC_HEADER, .rec_left = first_rec_len, .left = hs_total};
    rd_t body;
    if (rd_skip(&msg, HS_HEADER) != 0 || rd_sub(&msg, hs_total - HS_HEADER, &body) != 0 ||
        parse_body(&body, out) != 0)
        return finish(PT_CH_ERROR, 0, out);
    return finish(PT_CH_OK, 0, out);
}

const char *pt_ch_result_str(pt_ch_result_t r)
{
    switch (r) {
    case PT_CH_OK:
        return "ok";
    case PT_CH_INCOMPLETE:
        return "incomplete";
    case PT_CH_NOT_TLS:
        return "not_tls";
    case PT_CH_ERROR:
        return "error";
    }
    return "unknown";
}
