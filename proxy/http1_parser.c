/* Strict, zero-copy, incremental HTTP/1.1 parser; see http1_parser.h for the contract.
 *
 * Heads are parsed a line at a time: memchr finds the LF, then the line is validated in one
 * pass. A line is only judged once it is complete, so the verdict on any input is the same
 * whether it arrives in one piece or byte by byte (the fuzz target checks exactly that). The
 * only decision taken on an incomplete line is "too large", and it depends on the byte count
 * alone, which only grows. */
#include "proxy/http1_parser.h"
#include "proxy/runtime.h"

#include <limits.h>
#include <string.h>

/* Character classes (RFC 9110 5.6.2 tchar, 5.5 field-value, RFC 3986 for targets and hosts). */
#define C_TCHAR  1 /* token character */
#define C_VALUE  2 /* field value / reason phrase: HTAB, SP, VCHAR, obs-text */
#define C_TARGET 4 /* request target: VCHAR only, i.e. ASCII without CTLs and whitespace */
#define C_HOST   8 /* Host: reg-name, IP-literal and port characters, pct-encoding */

static const unsigned char cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2,  15, 6,  7,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 6,  14, 6,  6,  /* 0x30 */
    6,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 7,  15, /* 0x50 */
    7,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x90 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xa0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xb0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xc0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xd0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xe0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xf0 */
};

#define IS(ch, klass) (cls[(unsigned char)(ch)] & (klass))
#define IS_OWS(c)     ((c) == ' ' || (c) == '\t')

enum head_phase { PHASE_START = 0, PHASE_HEADERS, PHASE_DONE, PHASE_ERROR };

/* ASCII only: header names are case-insensitive ASCII, and tolower() would consult the locale. */
static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static int ci_eq(const char *a, size_t alen, const char *lower_b)
{
    size_t blen = strlen(lower_b);
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)lower_b[i])
            return 0;
    return 1;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int pt_h1_header_name_eq(const pt_h1_header_t *h, const char *lower_name)
{
    return ci_eq(h->name, h->name_len, lower_name);
}

/* Calls fn for each non-empty, OWS-trimmed element of a comma-separated list (RFC 9110
 * 5.6.1: recipients ignore empty elements). Stops early when fn returns non-zero and returns
 * that value. */
static int list_each(const char *v, size_t len, int (*fn)(const char *, size_t, void *), void *arg)
{
    size_t i = 0;
    while (i < len) {
        const char *comma = memchr(v + i, ',', len - i);
        size_t end = comma ? (size_t)(comma - v) : len;
        size_t s = i, e = end;
        while (s < e && IS_OWS(v[s]))
            s++;
        while (e > s && IS_OWS(v[e - 1]))
            e--;
        if (e > s) {
            int rc = fn(v + s, e - s, arg);
            if (rc)
                return rc;
        }
        i = end + 1;
    }
    return 0;
}

static int token_eq_cb(const char *el, size_t n, void *arg)
{
    return ci_eq(el, n, (const char *)arg);
}

int pt_h1_token_list_contains(const char *v, size_t len, const char *lower_token)
{
    return list_each(v, len, token_eq_cb, (void *)(uintptr_t)lower_token);
}

const char *pt_h1_body_mode_str(enum pt_h1_body_mode mode)
{
    switch (mode) {
    case PT_H1_BODY_NONE:
        return "none";
    case PT_H1_BODY_LENGTH:
        return "length";
    case PT_H1_BODY_CHUNKED:
        return "chunked";
    case PT_H1_BODY_EOF:
        return "eof";
    }
    return "?";
}

/* Parses one field line (no CRLF) of a header or trailer section. Returns NULL and fills *out,
 * or a static reason for rejecting it. */
static const char *parse_field_line(const char *line, size_t n, pt_h1_header_t *out)
{
    /* obs-fold (RFC 9112 5.2) and whitespace before the first field (2.2) both start with
     * SP/HTAB; joining or dropping such lines is where parsers disagree, so refuse them. */
    if (IS_OWS(line[0]))
        return "obs-fold or whitespace before field name";
    size_t i = 0;
    while (i < n && IS(line[i], C_TCHAR))
        i++;
    if (i == n)
        return "field line without colon";
    if (line[i] != ':') {
        /* "Name : v" is the classic smuggling vector (RFC 9112 5.1 demands 400). */
        if (IS_OWS(line[i]))
            return "whitespace between field name and colon";
        return "invalid character in field name";
    }
    if (i == 0)
        return "empty field name";
    size_t s = i + 1, e = n;
    while (s < e && IS_OWS(line[s]))
        s++;
    while (e > s && IS_OWS(line[e - 1]))
        e--;
    for (size_t k = s; k < e; k++)
        if (!IS(line[k], C_VALUE))
            return "invalid character in field value"; /* NUL, bare CR, DEL, other CTLs */
    out->name = line;
    out->name_len = i;
    out->value = line + s;
    out->value_len = e - s;
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Heads */

void pt_h1_head_init(pt_h1_head_t *h, pt_h1_header_t *headers)
{
    memset(h, 0, sizeof(*h));
    h->headers = headers;
}

static int head_fail(pt_h1_head_t *h, int status, const char *reason)
{
    h->priv.phase = PHASE_ERROR;
    /* A malformed response is the upstream's fault: the client gets 502 whatever it was. */
    h->error_status = h->priv.is_resp ? 502 : status;
    h->error_reason = reason;
    return PT_H1_ERROR;
}

/* HTTP-version = "HTTP/" DIGIT "." DIGIT. Returns 0 (minor set), 505 for a well-formed
 * version we do not speak ("HTTP/2.0", "HTTP/1.2", and the bare "HTTP/2" some send), or 400. */
static int parse_version(const char *p, size_t n, int *minor)
{
    if (n < 6 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9')
        return 400;
    if (n == 6)
        return 505;
    if (n != 8 || p[6] != '.' || p[7] < '0' || p[7] > '9')
        return 400;
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return 505;
    *minor = p[7] - '0';
    return 0;
}

static int parse_request_line(pt_h1_head_t *h, const char *line, size_t n)
{
    size_t i = 0;
    while (i < n && IS(line[i], C_TCHAR))
        i++;
    if (i == n)
        return head_fail(h, 400, "malformed request line");
    if (line[i] != ' ' || i == 0)
        return head_fail(h, 400, "invalid method");
    size_t t = i + 1, j = t;
    while (j < n && IS(line[j], C_TARGET))
        j++;
    if (j == t)
        return head_fail(h, 400, "empty request target");
    if (j == n)
        return head_fail(h, 400, "missing http version");
    if (line[j] != ' ')
        return head_fail(h, 400, "invalid character in request target");
    /* A fragment never belongs in a request target (RFC 9112 3.2); a proxy that forwarded
     * one could route on a path its upstream reads differently. With the runtime key
     * envoy.reloadable_features.http_reject_path_with_fragment false the connection manager
     * strips it instead (proxy/runtime.h). */
    if (pt_runtime.reject_path_with_fragment && memchr(line + t, '#', j - t) != NULL)
        return head_fail(h, 400, "fragment in request target");
    int minor = 0;
    int rc = parse_version(line + j + 1, n - j - 1, &minor);
    if (rc == 505)
        return head_fail(h, 505, "unsupported http version");
    if (rc != 0)
        return head_fail(h, 400, "malformed http version");
    h->method = line;
    h->method_len = i;
    h->target = line + t;
    h->target_len = j - t;
    h->minor_version = minor;
    return 0;
}

static int parse_status_line(pt_h1_head_t *h, const char *line, size_t n)
{
    const char *sp = memchr(line, ' ', n);
    size_t vlen = sp ? (size_t)(sp - line) : n;
    int minor = 0;
    int rc = parse_version(line, vlen, &minor);
    if (rc == 505)
        return head_fail(h, 505, "unsupported http version");
    if (rc != 0 || sp == NULL)
        return head_fail(h, 400, "malformed status line");
    size_t i = vlen + 1;
    if (n - i < 3 || line[i] < '1' || line[i] > '5' || line[i + 1] < '0' || line[i + 1] > '9' ||
        line[i + 2] < '0' || line[i + 2] > '9')
        return head_fail(h, 400, "invalid status code");
    int status = (line[i] - '0') * 100 + (line[i + 1] - '0') * 10 + (line[i + 2] - '0');
    i += 3;
    /* RFC 9112 4 wants the SP even before an empty reason; servers commonly omit it and
     * nothing about framing depends on it, so accept "HTTP/1.1 200" too. */
    if (i < n && line[i] != ' ')
        return head_fail(h, 400, "invalid status code");
    size_t r = i < n ? i + 1 : n;
    for (size_t k = r; k < n; k++)
        if (!IS(line[k], C_VALUE))
            return head_fail(h, 400, "invalid character in reason phrase");
    h->minor_version = minor;
    h->status = status;
    h->reason = line + r;
    h->reason_len = n - r;
    return 0;
}

/* Content-Length = 1*DIGIT, and a list of identical values is allowed (RFC 9112 6.3 item 5);
 * anything else, including differing values across headers, is an error. */
static const char *apply_content_length(pt_h1_head_t *h, const char *v, size_t len)
{
    size_t i = 0;
    int any = 0;
    for (;;) {
        while (i < len && IS_OWS(v[i]))
            i++;
        size_t start = i;
        uint64_t n = 0;
        while (i < len && v[i] >= '0' && v[i] <= '9') {
            unsigned d = (unsigned)(v[i] - '0');
            if (n > (UINT64_MAX - d) / 10)
                return "content-length overflow";
            n = n * 10 + d;
            i++;
        }
        if (i == start)
            return "invalid content-length";
        while (i < len && IS_OWS(v[i]))
            i++;
        if (h->priv.cl_seen || any) {
            if (h->content_length != n)
                return "conflicting content-length";
        }
        h->content_length = n;
        any = 1;
        if (i == len)
            break;
        if (v[i] != ',')
            return "invalid content-length";
        i++;
    }
    h->priv.cl_seen = 1;
    return NULL;
}

/* Accumulates transfer codings across all Transfer-Encoding lines, in order. Only the
 * facts framing depends on are kept: is "chunked" last, how often it appeared, whether any
 * element is not a token (optionally with parameters), and whether any other coding, which
 * petrel does not implement, was listed. */
static int te_element_cb(const char *el, size_t n, void *arg)
{
    pt_h1_head_t *h = arg;
    size_t i = 0;
    while (i < n && IS(el[i], C_TCHAR))
        i++;
    size_t tok = i;
    while (i < n && IS_OWS(el[i]))
        i++;
    if (tok == 0 || (i < n && el[i] != ';'))
        h->priv.te_bad = 1;
    /* Only the bare coding counts as chunked: "chunked;foo" is some other coding. */
    if (ci_eq(el, n, "chunked")) {
        h->priv.te_chunked++;
        h->priv.te_last_chunked = 1;
    } else {
        h->priv.te_last_chunked = 0;
        h->priv.te_other = 1;
    }
    return 0;
}

static int host_valid(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!IS(v[i], C_HOST))
            return 0;
    return 1;
}

static int parse_header_line(pt_h1_head_t *h, const char *line, size_t n, const pt_h1_limits_t *lim)
{
    pt_h1_header_t f;
    const char *why = parse_field_line(line, n, &f);
    if (why != NULL)
        return head_fail(h, 400, why);
    if (h->num_headers >= lim->max_headers || h->headers == NULL)
        return head_fail(h, 431, "too many headers");
    pt_h1_header_t *slot = &h->headers[h->num_headers++];
    *slot = f;

    /* Dispatch on length first: most headers match none of these and cost one switch. */
    switch (f.name_len) {
    case 4:
        if (!h->priv.is_resp && pt_h1_header_name_eq(&f, "host")) {
            if (++h->priv.hosts > 1)
                return head_fail(h, 400, "multiple host headers");
            if (!host_valid(f.value, f.value_len))
                return head_fail(h, 400, "invalid host");
            h->host = slot;
        }
        break;
    case 6:
        if (pt_h1_header_name_eq(&f, "expect") && ci_eq(f.value, f.value_len, "100-continue"))
            h->priv.expect_100 = 1;
        break;
    case 7:
        if (pt_h1_header_name_eq(&f, "upgrade"))
            h->has_upgrade = 1;
        break;
    case 10:
        if (pt_h1_header_name_eq(&f, "connection")) {
            if (pt_h1_token_list_contains(f.value, f.value_len, "close"))
                h->connection_close = 1;
            if (pt_h1_token_list_contains(f.value, f.value_len, "keep-alive"))
                h->priv.conn_keep_alive = 1;
            if (pt_h1_token_list_contains(f.value, f.value_len, "upgrade"))
                h->connection_upgrade = 1;
        }
        break;
    case 14:
        if (pt_h1_header_name_eq(&f, "content-length")) {
            why = apply_content_length(h, f.value, f.value_len);
            if (why != NULL)
                return head_fail(h, 400, why);
        }
        break;
    case 17:
        if (pt_h1_header_name_eq(&f, "transfer-encoding")) {
            h->priv.te_seen = 1;
            list_each(f.value, f.value_len, te_element_cb, h);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* The framing checks shared by requests and responses (RFC 9112 6.1, 6.3). */
static int check_transfer_encoding(pt_h1_head_t *h)
{
    /* Both present: the classic CL.TE / TE.CL desync; RFC 9112 6.3 allows rejecting it and a
     * proxy must, since it cannot know which one the next hop will believe. */
    if (h->priv.cl_seen)
        return head_fail(h, 400, "content-length with transfer-encoding");
    /* HTTP/1.0 has no chunked coding; RFC 9112 6.1 calls such framing faulty. */
    if (h->minor_version == 0)
        return head_fail(h, 400, "transfer-encoding in http/1.0 message");
    if (h->priv.te_bad)
        return head_fail(h, 400, "invalid transfer-encoding");
    if (h->priv.te_chunked > 1)
        return head_fail(h, 400, "chunked applied more than once");
    return 0;
}

static int finish_request(pt_h1_head_t *h)
{
    if (h->minor_version == 1 && h->priv.hosts == 0)
        return head_fail(h, 400, "missing host header");
    if (h->priv.te_seen) {
        if (check_transfer_encoding(h) != 0)
            return PT_H1_ERROR;
        /* RFC 9112 6.3 item 4: a request whose final coding is not chunked has no knowable
         * length; the server MUST answer 400. */
        if (!h->priv.te_last_chunked)
            return head_fail(h, 400, "transfer-encoding final coding is not chunked");
        /* Framed by chunked, but with a coding before it ("gzip, chunked") that petrel does
         * not implement: RFC 9112 6.1 says 501. Forwarding the body re-chunked would drop
         * the coding, and forwarding the header as received would leave the upstream to
         * frame a body petrel has already de-chunked. */
        if (h->priv.te_other)
            return head_fail(h, 501, "unsupported transfer coding");
        h->body_mode = PT_H1_BODY_CHUNKED;
    } else if (h->priv.cl_seen) {
        h->body_mode = PT_H1_BODY_LENGTH;
    } else {
        h->body_mode = PT_H1_BODY_NONE;
    }
    h->expect_continue = h->priv.expect_100 && h->minor_version == 1; /* RFC 9110 10.1.1 */
    return 0;
}

static int finish_response(pt_h1_head_t *h, int request_was_head)
{
    if (h->priv.te_seen && check_transfer_encoding(h) != 0)
        return PT_H1_ERROR;
    /* A coding other than chunked ("gzip, chunked", or "gzip" read until close): petrel
     * re-frames every body it forwards, and the Transfer-Encoding header is hop-by-hop, so
     * the client would get the coded bytes labelled as plain ones. Envoy refuses such a
     * response too (a protocol error, 502), and so does petrel, for any status. */
    if (h->priv.te_other)
        return head_fail(h, 502, "unsupported transfer coding");
    if (request_was_head || h->status < 200 || h->status == 204 || h->status == 304)
        h->body_mode = PT_H1_BODY_NONE;
    else if (h->priv.te_seen)
        h->body_mode = h->priv.te_last_chunked ? PT_H1_BODY_CHUNKED : PT_H1_BODY_EOF;
    else if (h->priv.cl_seen)
        h->body_mode = PT_H1_BODY_LENGTH;
    else
        h->body_mode = PT_H1_BODY_EOF;
    return 0;
}

/* The caller may grow its buffer with realloc between calls, and it may move: the bytes are
 * the same, at a new address, so the stored pointers move with them. Integer arithmetic,
 * since the old block may no longer exist. */
static void rebase(pt_h1_head_t *h, const char *buf)
{
    const char *old = h->priv.base;
    h->priv.base = buf;
    if (old == NULL || old == buf)
        return;
#define REBASE(p) ((p) = (p) ? buf + ((uintptr_t)(p) - (uintptr_t)old) : NULL)
    REBASE(h->method);
    REBASE(h->target);
    REBASE(h->reason);
    for (unsigned i = 0; i < h->num_headers; i++) {
        REBASE(h->headers[i].name);
        REBASE(h->headers[i].value);
    }
#undef REBASE
}

static int parse_head(const char *buf, size_t len, pt_h1_head_t *h, const pt_h1_limits_t *lim,
                      int is_resp, int request_was_head)
{
    if (h->priv.phase == PHASE_ERROR)
        return PT_H1_ERROR;
    h->priv.is_resp = (unsigned char)is_resp;
    rebase(h, buf);
    if (h->priv.phase == PHASE_DONE)
        return (int)h->scanned;
    if (len < h->scanned)
        return head_fail(h, 400, "buffer shrank between calls");

    size_t max = lim->max_head_bytes < (size_t)INT_MAX ? lim->max_head_bytes : (size_t)INT_MAX;
    size_t window = len < max ? len : max; /* a line ending past `max` is too large anyway */
    size_t pos = h->scanned;
    for (;;) {
        size_t from = h->priv.searched > pos ? h->priv.searched : pos;
        const char *lf = from < window ? memchr(buf + from, '\n', window - from) : NULL;
        if (lf == NULL) {
            /* The head needs more than len bytes; if len already reaches the limit it can
             * never fit, so fail now rather than buffer more. */
            if (len >= max)
                return head_fail(h, 431, "head too large");
            h->scanned = pos;
            h->priv.searched = window;
            return PT_H1_INCOMPLETE;
        }
        size_t eol = (size_t)(lf - buf);
        if (eol == pos || buf[eol - 1] != '\r')
            return head_fail(h, 400, "bare LF");
        const char *line = buf + pos;
        size_t n = eol - 1 - pos;
        pos = eol + 1;

        if (h->priv.phase == PHASE_START) {
            if (n == 0 && !is_resp)
                continue; /* RFC 9112 2.2: ignore empty lines before the request line */
            int rc = is_resp ? parse_status_line(h, line, n) : parse_request_line(h, line, n);
            if (rc != 0)
                return rc;
            h->priv.phase = PHASE_HEADERS;
            continue;
        }
        if (n == 0) {
            int rc = is_resp ? finish_response(h, request_was_head) : finish_request(h);
            if (rc != 0)
                return rc;
            h->keep_alive = h->minor_version == 1 ? !h->connection_close
                                                  : h->priv.conn_keep_alive && !h->connection_close;
            if (h->body_mode == PT_H1_BODY_EOF)
                h->keep_alive = 0; /* the close is what ends the body */
            h->scanned = pos;
            h->priv.phase = PHASE_DONE;
            return (int)pos;
        }
        if (parse_header_line(h, line, n, lim) != 0)
            return PT_H1_ERROR;
    }
}

int pt_h1_parse_request(const char *buf, size_t len, pt_h1_head_t *h, const pt_h1_limits_t *lim)
{
    return parse_head(buf, len, h, lim, 0, 0);
}

int pt_h1_parse_response(const char *buf, size_t len, pt_h1_head_t *h, const pt_h1_limits_t *lim,
                         int request_was_head)
{
    return parse_head(buf, len, h, lim, 1, request_was_head);
}

/* ---------------------------------------------------------------------------------------- */
/* Bodies */

enum body_state {
    BS_DONE = 0,
    BS_ERROR,
    BS_LENGTH,   /* counting down Content-Length */
    BS_EOF,      /* everything is payload */
    BS_SIZE,     /* chunk-size hex digits */
    BS_SIZE_BWS, /* whitespace after the size: only ";" may follow */
    BS_EXT,      /* chunk extensions, skipped up to CR */
    BS_SIZE_LF,  /* CR seen at the end of the chunk-size line */
    BS_DATA,     /* chunk payload */
    BS_DATA_CR,  /* CRLF after chunk payload */
    BS_DATA_LF,
    BS_TRAILER, /* trailer section, a whole line at a time */
};

void pt_h1_body_init_mode(pt_h1_body_t *b, enum pt_h1_body_mode mode, uint64_t content_length)
{
    memset(b, 0, sizeof(*b));
    b->mode = mode;
    b->max_chunk_line = PT_H1_DEFAULT_MAX_CHUNK_LINE;
    b->max_trailer_bytes = PT_H1_DEFAULT_MAX_TRAILER_BYTES;
    switch (mode) {
    case PT_H1_BODY_LENGTH:
        b->remaining = content_length;
        b->state = content_length ? BS_LENGTH : BS_DONE;
        break;
    case PT_H1_BODY_CHUNKED:
        b->state = BS_SIZE;
        break;
    case PT_H1_BODY_EOF:
        b->state = BS_EOF;
        break;
    default:
        b->state = BS_DONE;
        break;
    }
}

void pt_h1_body_init(pt_h1_body_t *b, const pt_h1_head_t *h)
{
    pt_h1_body_init_mode(b, h->body_mode, h->content_length);
}

int pt_h1_body_done(const pt_h1_body_t *b)
{
    return b->state == BS_DONE;
}

int pt_h1_body_has_trailer(const pt_h1_body_t *b)
{
    return b->has_trailer;
}

static ssize_t body_fail(pt_h1_body_t *b, const char *reason)
{
    b->state = BS_ERROR;
    b->error_status = 400;
    b->error_reason = reason;
    return PT_H1_ERROR;
}

/* Payload span of up to `avail` bytes at `p`, bounded by b->remaining. */
static size_t take(pt_h1_body_t *b, const char *p, size_t avail, const char **data,
                   size_t *data_len)
{
    size_t n = b->remaining < avail ? (size_t)b->remaining : avail;
    *data = p;
    *data_len = n;
    b->remaining -= n;
    b->payload_bytes += n;
    return n;
}

/* One trailer line starting at in[pos]; returns bytes consumed, 0 when it is not complete. */
static ssize_t trailer_line(pt_h1_body_t *b, const char *p, size_t avail)
{
    size_t budget =
        b->max_trailer_bytes > b->trailer_bytes ? b->max_trailer_bytes - b->trailer_bytes : 0;
    size_t window = avail < budget ? avail : budget;
    const char *lf = window ? memchr(p, '\n', window) : NULL;
    if (lf == NULL) {
        if (avail >= budget)
            return body_fail(b, "trailer section too large");
        return 0;
    }
    size_t ll = (size_t)(lf - p);
    if (ll == 0 || p[ll - 1] != '\r')
        return body_fail(b, "bare LF in trailer section");
    b->trailer_bytes += ll + 1;
    if (ll == 1) {
        b->state = BS_DONE;
        return 2;
    }
    const char *why = parse_field_line(p, ll - 1, &b->trailer);
    if (why != NULL)
        return body_fail(b, why);
    b->has_trailer = 1;
    return (ssize_t)(ll + 1);
}

ssize_t pt_h1_body_decode(pt_h1_body_t *b, const char *in, size_t len, const char **data,
                          size_t *data_len)
{
    *data = in;
    *data_len = 0;
    b->has_trailer = 0;
    if (b->state == BS_ERROR)
        return PT_H1_ERROR;
    size_t pos = 0;
    while (pos < len) {
        unsigned char c = (unsigned char)in[pos];
        switch (b->state) {
        case BS_DONE:
            return (ssize_t)pos; /* the rest is the next message */
        case BS_LENGTH:
            pos += take(b, in + pos, len - pos, data, data_len);
            if (b->remaining == 0)
                b->state = BS_DONE;
            return (ssize_t)pos;
        case BS_EOF:
            *data = in + pos;
            *data_len = len - pos;
            b->payload_bytes += len - pos;
            return (ssize_t)len;
        case BS_DATA:
            pos += take(b, in + pos, len - pos, data, data_len);
            if (b->remaining == 0)
                b->state = BS_DATA_CR;
            return (ssize_t)pos;
        case BS_DATA_CR:
            if (c != '\r')
                return body_fail(b, "missing CRLF after chunk data");
            b->state = BS_DATA_LF;
            pos++;
            break;
        case BS_DATA_LF:
            if (c != '\n')
                return body_fail(b, "missing CRLF after chunk data");
            b->state = BS_SIZE;
            b->line_bytes = 0;
            b->size_digits = 0;
            pos++;
            break;
        case BS_TRAILER: {
            ssize_t n = trailer_line(b, in + pos, len - pos);
            if (n < 0)
                return n;
            return (ssize_t)(pos + (size_t)n); /* one trailer per call; or done; or need more */
        }
        default:
            /* The chunk-size line, a byte at a time so it can end anywhere in the input. */
            if (++b->line_bytes > b->max_chunk_line)
                return body_fail(b, "chunk-size line too long");
            pos++;
            if (c == '\n' && b->state != BS_SIZE_LF)
                return body_fail(b, "bare LF in chunk-size line");
            switch (b->state) {
            case BS_SIZE: {
                int d = hexval(c);
                if (d >= 0) {
                    if (b->remaining > (UINT64_MAX >> 4))
                        return body_fail(b, "chunk size overflow");
                    b->remaining = (b->remaining << 4) | (uint64_t)d;
                    b->size_digits = 1;
                } else if (!b->size_digits) {
                    return body_fail(b, "invalid chunk size");
                } else if (c == ';') {
                    b->state = BS_EXT;
                } else if (IS_OWS(c)) {
                    b->state = BS_SIZE_BWS;
                } else if (c == '\r') {
                    b->state = BS_SIZE_LF;
                } else {
                    return body_fail(b, "invalid chunk size");
                }
                break;
            }
            case BS_SIZE_BWS:
                if (c == ';')
                    b->state = BS_EXT;
                else if (!IS_OWS(c))
                    return body_fail(b, "invalid chunk size");
                break;
            case BS_EXT:
                /* Extensions carry nothing we use, but a CTL in them means the line is not
                 * what it seems (e.g. a bare CR hiding a line break from other parsers). */
                if (c == '\r')
                    b->state = BS_SIZE_LF;
                else if (!IS(c, C_VALUE))
                    return body_fail(b, "invalid character in chunk extension");
                break;
            case BS_SIZE_LF:
                if (c != '\n')
                    return body_fail(b, "bare CR in chunk-size line");
                if (b->remaining == 0) {
                    b->state = BS_TRAILER;
                    b->trailer_bytes = 0;
                } else {
                    b->state = BS_DATA;
                }
                break;
            default:
                return body_fail(b, "internal: bad decoder state");
            }
            break;
        }
    }
    return (ssize_t)pos;
}
