/* libFuzzer target for proxy/http1_parser.
 *
 * The input is raw HTTP/1 bytes (no control prefix, so seeds are readable). Each input is run
 * as: a chain of pipelined requests (head, then body per the head's framing, then the next
 * message), the same for responses, heads under tight limits, and the body decoder alone in
 * every mode. Every head and body is parsed three ways, in one piece, growing a byte at a
 * time, and split at input-derived points into buffers that move between calls, and the
 * three must agree exactly: abort() otherwise. Structural invariants (spans inside the
 * input, limits honoured, framing consistent with the headers) are checked on every result. */
#include "proxy/http1_parser.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXH         64
#define MAX_MESSAGES 16

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Is every non-empty, OWS-trimmed element of the list v[0..n) the bare coding "chunked"? */
static int only_chunked(const char *v, size_t n)
{
    size_t i = 0;
    while (i <= n) {
        size_t e = i;
        while (e < n && v[e] != ',')
            e++;
        size_t a = i, b = e;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (b > a) {
            static const char ch[] = "chunked";
            if (b - a != 7)
                return 0;
            for (size_t k = 0; k < 7; k++)
                if ((v[a + k] | 0x20) != ch[k])
                    return 0;
        }
        i = e + 1;
    }
    return 1;
}

static int in_span(const char *p, size_t n, const char *base, size_t len)
{
    return p >= base && (size_t)(p - base) <= len && n <= len - (size_t)(p - base);
}

/* ---------------------------------------------------------------------------------------- */
/* Heads */

typedef struct head_run {
    int rc;
    pt_h1_head_t h;
    pt_h1_header_t hdrs[MAXH];
    const char *buf; /* the buffer of the last call, for offsets */
} head_run_t;

static int parse(int resp, int was_head, const char *buf, size_t len, head_run_t *r,
                 const pt_h1_limits_t *lim)
{
    r->buf = buf;
    return resp ? pt_h1_parse_response(buf, len, &r->h, lim, was_head)
                : pt_h1_parse_request(buf, len, &r->h, lim);
}

static void check_head(const head_run_t *r, size_t len, int resp, const pt_h1_limits_t *lim)
{
    const pt_h1_head_t *h = &r->h;
    if (r->rc == PT_H1_INCOMPLETE) {
        CHECK(len < lim->max_head_bytes);
        return;
    }
    if (r->rc == PT_H1_ERROR) {
        CHECK(h->error_reason != NULL);
        if (resp)
            CHECK(h->error_status == 502);
        else
            CHECK(h->error_status == 400 || h->error_status == 431 || h->error_status == 501 ||
                  h->error_status == 505);
        return;
    }
    CHECK(r->rc > 0 && (size_t)r->rc <= len && (size_t)r->rc <= lim->max_head_bytes);
    size_t n = (size_t)r->rc;
    CHECK(r->buf[n - 2] == '\r' && r->buf[n - 1] == '\n');
    CHECK(h->num_headers <= lim->max_headers);
    CHECK(h->minor_version == 0 || h->minor_version == 1);
    unsigned cl = 0, te = 0, hosts = 0;
    for (unsigned i = 0; i < h->num_headers; i++) {
        const pt_h1_header_t *f = &h->headers[i];
        CHECK(f->name_len > 0 && in_span(f->name, f->name_len, r->buf, n));
        CHECK(in_span(f->value, f->value_len, r->buf, n));
        for (size_t k = 0; k < f->name_len; k++)
            CHECK(is_tchar((unsigned char)f->name[k]));
        CHECK(f->name[f->name_len] == ':');
        for (size_t k = 0; k < f->value_len; k++)
            CHECK(is_value_char((unsigned char)f->value[k]));
        if (f->value_len)
            CHECK(f->value[0] != ' ' && f->value[0] != '\t' && f->value[f->value_len - 1] != ' ' &&
                  f->value[f->value_len - 1] != '\t');
        cl += pt_h1_header_name_eq(f, "content-length");
        if (pt_h1_header_name_eq(f, "transfer-encoding")) {
            te++;
            /* chunked is the only coding implemented: an accepted head lists no other. */
            CHECK(only_chunked(f->value, f->value_len));
        }
        hosts += pt_h1_header_name_eq(f, "host");
    }
    /* Framing must follow from the headers, and never both of them. */
    CHECK(!(cl && te));
    if (h->body_mode == PT_H1_BODY_CHUNKED)
        CHECK(te > 0 && h->minor_version == 1);
    if (h->body_mode == PT_H1_BODY_LENGTH)
        CHECK(cl > 0);
    if (h->body_mode == PT_H1_BODY_EOF)
        CHECK(resp && h->keep_alive == 0);
    if (h->keep_alive)
        CHECK(!h->connection_close);
    if (resp) {
        CHECK(h->status >= 100 && h->status <= 599);
        CHECK(in_span(h->reason, h->reason_len, r->buf, n));
        for (size_t k = 0; k < h->reason_len; k++)
            CHECK(is_value_char((unsigned char)h->reason[k]));
    } else {
        CHECK(h->method_len > 0 && in_span(h->method, h->method_len, r->buf, n));
        CHECK(h->target_len > 0 && in_span(h->target, h->target_len, r->buf, n));
        for (size_t k = 0; k < h->method_len; k++)
            CHECK(is_tchar((unsigned char)h->method[k]));
        for (size_t k = 0; k < h->target_len; k++)
            CHECK(h->target[k] > 0x20 && h->target[k] < 0x7f);
        CHECK(h->body_mode != PT_H1_BODY_EOF);
        CHECK(hosts <= 1);
        if (h->minor_version == 1)
            CHECK(hosts == 1 && h->host != NULL);
        if (h->host)
            CHECK(h->host >= h->headers && h->host < h->headers + h->num_headers &&
                  pt_h1_header_name_eq(h->host, "host"));
    }
}

#define OFF(r, p) ((p) ? (size_t)((p) - (r)->buf) : (size_t)-1)

static void same_head(const head_run_t *a, const head_run_t *b)
{
    CHECK(a->rc == b->rc);
    if (a->rc == PT_H1_ERROR) {
        CHECK(a->h.error_status == b->h.error_status);
        CHECK(strcmp(a->h.error_reason, b->h.error_reason) == 0);
    }
    if (a->rc <= 0)
        return;
    const pt_h1_head_t *x = &a->h, *y = &b->h;
    CHECK(OFF(a, x->method) == OFF(b, y->method) && x->method_len == y->method_len);
    CHECK(OFF(a, x->target) == OFF(b, y->target) && x->target_len == y->target_len);
    CHECK(OFF(a, x->reason) == OFF(b, y->reason) && x->reason_len == y->reason_len);
    CHECK(x->status == y->status && x->minor_version == y->minor_version);
    CHECK(x->num_headers == y->num_headers);
    for (unsigned i = 0; i < x->num_headers; i++) {
        CHECK(OFF(a, x->headers[i].name) == OFF(b, y->headers[i].name));
        CHECK(x->headers[i].name_len == y->headers[i].name_len);
        CHECK(OFF(a, x->headers[i].value) == OFF(b, y->headers[i].value));
        CHECK(x->headers[i].value_len == y->headers[i].value_len);
    }
    CHECK(x->body_mode == y->body_mode && x->content_length == y->content_length);
    CHECK(x->keep_alive == y->keep_alive && x->connection_close == y->connection_close);
    CHECK(x->connection_upgrade == y->connection_upgrade && x->has_upgrade == y->has_upgrade);
    CHECK(x->expect_continue == y->expect_continue);
    CHECK((x->host ? x->host - x->headers : -1) == (y->host ? y->host - y->headers : -1));
}

/* Parses a head from data[0..size) three ways, checks they agree, and leaves the one-shot
 * result in *out. */
static void head_all_ways(const uint8_t *data, size_t size, int resp, int was_head,
                          const pt_h1_limits_t *lim, head_run_t *out)
{
    const char *in = (const char *)data;
    static head_run_t inc, split;

    pt_h1_head_init(&out->h, out->hdrs);
    out->rc = parse(resp, was_head, in, size, out, lim);
    check_head(out, size, resp, lim);

    /* Growing a byte at a time in one stable buffer, as a connection that reads slowly. */
    pt_h1_head_init(&inc.h, inc.hdrs);
    inc.rc = PT_H1_INCOMPLETE;
    for (size_t n = 1; n <= size && inc.rc == PT_H1_INCOMPLETE; n++) {
        inc.rc = parse(resp, was_head, in, n, &inc, lim);
        check_head(&inc, n, resp, lim);
    }
    if (size == 0)
        inc.rc = parse(resp, was_head, in, 0, &inc, lim);
    same_head(out, &inc);

    /* In three pieces, each call on a fresh exact-size copy so the buffer moves (as after
     * realloc) and any read past the bytes given is caught by ASan. */
    uint64_t hv = fnv(14695981039346656037ULL, data, size);
    size_t cut[3];
    cut[0] = size ? (size_t)(hv % (size + 1)) : 0;
    cut[1] = cut[0] + (size_t)((hv >> 24) % (size - cut[0] + 1));
    cut[2] = size;
    pt_h1_head_init(&split.h, split.hdrs);
    split.rc = PT_H1_INCOMPLETE;
    char *prev = NULL;
    for (int i = 0; i < 3 && split.rc == PT_H1_INCOMPLETE; i++) {
        char *copy = malloc(cut[i] ? cut[i] : 1);
        memcpy(copy, data, cut[i]);
        split.rc = parse(resp, was_head, copy, cut[i], &split, lim);
        check_head(&split, cut[i], resp, lim);
        free(prev);
        prev = copy;
    }
    same_head(out, &split);
    free(prev);
}

/* ---------------------------------------------------------------------------------------- */
/* Bodies */

typedef struct body_run {
    int result;      /* 1 done, 0 needs more, PT_H1_ERROR */
    size_t consumed; /* when not an error */
    size_t payload_len;
    uint64_t trailers; /* hash of trailer offsets and lengths */
    unsigned ntrailers;
    const char *reason;
    char *payload; /* size bytes */
} body_run_t;

static void body_config(pt_h1_body_t *b, enum pt_h1_body_mode mode, uint64_t cl, int tight)
{
    pt_h1_body_init_mode(b, mode, cl);
    if (tight) {
        b->max_chunk_line = 8;
        b->max_trailer_bytes = 24;
    }
}

/* Drives the decoder like a connection: the bytes available grow by `step` whenever the
 * decoder stalls; unconsumed bytes are offered again; every call sees an exact-size copy. */
static void body_run(const uint8_t *data, size_t size, enum pt_h1_body_mode mode, uint64_t cl,
                     int tight, size_t step, body_run_t *r)
{
    pt_h1_body_t b;
    body_config(&b, mode, cl, tight);
    size_t pos = 0, avail = step < size ? step : size;
    r->payload_len = 0;
    r->trailers = 14695981039346656037ULL;
    r->ntrailers = 0;
    r->reason = NULL;
    for (;;) {
        size_t n_in = avail - pos;
        char *copy = malloc(n_in ? n_in : 1);
        memcpy(copy, data + pos, n_in);
        const char *d = NULL;
        size_t dl = 12345;
        ssize_t n = pt_h1_body_decode(&b, copy, n_in, &d, &dl);
        if (n < 0) {
            CHECK(n == PT_H1_ERROR && b.error_status == 400 && b.error_reason != NULL);
            CHECK(!pt_h1_body_done(&b));
            free(copy);
            r->result = PT_H1_ERROR;
            r->reason = b.error_reason;
            return;
        }
        CHECK((size_t)n <= n_in);
        CHECK(dl <= (size_t)n && (dl == 0 || in_span(d, dl, copy, (size_t)n)));
        if (dl) {
            memcpy(r->payload + r->payload_len, d, dl);
            r->payload_len += dl;
        }
        int tr = pt_h1_body_has_trailer(&b);
        if (tr) {
            const pt_h1_header_t *t = &b.trailer;
            CHECK(dl == 0 && t->name_len > 0);
            CHECK(in_span(t->name, t->name_len, copy, (size_t)n));
            CHECK(in_span(t->value, t->value_len, copy, (size_t)n));
            for (size_t k = 0; k < t->name_len; k++)
                CHECK(is_tchar((unsigned char)t->name[k]));
            for (size_t k = 0; k < t->value_len; k++)
                CHECK(is_value_char((unsigned char)t->value[k]));
            size_t o[4] = {pos + (size_t)(t->name - copy), t->name_len,
                           pos + (size_t)(t->value - copy), t->value_len};
            r->trailers = fnv(r->trailers, o, sizeof(o));
            r->ntrailers++;
        }
        free(copy);
        pos += (size_t)n;
        if (pt_h1_body_done(&b)) {
            r->result = 1;
            break;
        }
        CHECK(mode != PT_H1_BODY_NONE);
        if (n == 0 && dl == 0 && !tr) {
            CHECK(pos == avail || mode == PT_H1_BODY_CHUNKED);
            if (avail == size) {
                r->result = 0;
                break;
            }
            avail = avail + step < size ? avail + step : size;
        }
    }
    r->consumed = pos;
    CHECK(r->payload_len <= pos);
    if (mode == PT_H1_BODY_LENGTH)
        CHECK(r->result == 1 ? r->payload_len == cl : r->payload_len == size);
    if (mode == PT_H1_BODY_EOF)
        CHECK(r->result == 0 && r->payload_len == size && memcmp(r->payload, data, size) == 0);
}

static void same_body(const body_run_t *a, const body_run_t *b)
{
    CHECK(a->result == b->result);
    if (a->result == PT_H1_ERROR) {
        CHECK(strcmp(a->reason, b->reason) == 0);
    } else {
        CHECK(a->consumed == b->consumed);
        CHECK(a->trailers == b->trailers && a->ntrailers == b->ntrailers);
        CHECK(a->payload_len == b->payload_len);
    }
    /* Payload before an error may stop at different points only if spans were cut short;
     * the decoder reports payload before looking further, so it matches there too. */
    CHECK(a->payload_len == b->payload_len);
    CHECK(memcmp(a->payload, b->payload, a->payload_len) == 0);
}

static body_run_t runs[3];

/* Returns the one-shot result (1 done, 0 more, error) and its consumed count in *consumed. */
static int body_all_ways(const uint8_t *data, size_t size, enum pt_h1_body_mode mode, uint64_t cl,
                         int tight, size_t *consumed)
{
    for (int i = 0; i < 3; i++)
        runs[i].payload = malloc(size ? size : 1);
    body_run(data, size, mode, cl, tight, size ? size : 1, &runs[0]);
    body_run(data, size, mode, cl, tight, 1, &runs[1]);
    size_t step = 1 + (size_t)(fnv(cl + (uint64_t)mode, data, size) % 23);
    body_run(data, size, mode, cl, tight, step, &runs[2]);
    same_body(&runs[0], &runs[1]);
    same_body(&runs[0], &runs[2]);
    int result = runs[0].result;
    *consumed = runs[0].consumed;
    for (int i = 0; i < 3; i++)
        free(runs[i].payload);
    return result;
}

/* ---------------------------------------------------------------------------------------- */

/* A connection's worth of messages: head, body, next head... until something stops it. */
static void message_chain(const uint8_t *data, size_t size, int resp, int was_head)
{
    static head_run_t r;
    const pt_h1_limits_t lim = {.max_head_bytes = 8192, .max_headers = MAXH};
    size_t off = 0;
    for (int i = 0; i < MAX_MESSAGES && off < size; i++) {
        head_all_ways(data + off, size - off, resp, was_head, &lim, &r);
        if (r.rc <= 0)
            return;
        off += (size_t)r.rc;
        size_t used = 0;
        int res =
            body_all_ways(data + off, size - off, r.h.body_mode, r.h.content_length, 0, &used);
        if (res != 1)
            return;
        off += used;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    message_chain(data, size, 0, 0);
    message_chain(data, size, 1, 0);
    message_chain(data, size, 1, 1);

    /* Tight limits reach the 431 paths, and the count limit, on ordinary inputs. */
    static head_run_t r;
    pt_h1_limits_t tight = {.max_head_bytes = 1 + size / 2, .max_headers = 3};
    head_all_ways(data, size, 0, 0, &tight, &r);
    head_all_ways(data, size, 1, 0, &tight, &r);
    tight.max_headers = 0;
    head_all_ways(data, size, 0, 0, &tight, &r);

    /* The body decoder on its own in every mode, with default and tiny line limits. */
    size_t used;
    body_all_ways(data, size, PT_H1_BODY_CHUNKED, 0, 0, &used);
    body_all_ways(data, size, PT_H1_BODY_CHUNKED, 0, 1, &used);
    body_all_ways(data, size, PT_H1_BODY_LENGTH, size / 2, 0, &used);
    body_all_ways(data, size, PT_H1_BODY_LENGTH, (uint64_t)size + 1, 0, &used);
    body_all_ways(data, size, PT_H1_BODY_EOF, 0, 0, &used);
    body_all_ways(data, size, PT_H1_BODY_NONE, 0, 0, &used);
    return 0;
}
