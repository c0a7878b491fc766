/* HTTP/1.1 codec, server (downstream) and client (upstream) sides, over pt_conn.
 *
 * Parsing is proxy/http1_parser.c's strict RFC 9112 parser; this file maps messages to and
 * from the HTTP/2-shaped header maps of proxy/http.h and drives one connection:
 *  - server: requests are handled one at a time in order (pipelined requests wait in the
 *    read buffer until the response before them is complete), bodies are delivered as they
 *    arrive, responses are framed by Content-Length, chunked (HTTP/1.1 clients) or close
 *    (HTTP/1.0 clients), and a 101 turns the connection into a byte tunnel;
 *  - client: one request at a time on a connection, re-framed from the header map, the
 *    response parsed and streamed back; a connection is reusable only when both messages
 *    completed and both sides allowed keep-alive.
 *
 * Re-entrancy: every callback into the owner may end in the owner closing the codec. Event
 * handlers therefore count their depth and a close only marks the codec; it is freed when
 * the outermost handler returns. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/http1_parser.h"
#include "proxy/http_codec.h"
#include "proxy/log.h"
#include "proxy/matcher.h"
#include "proxy/worker.h"

#define H1_PIPELINE_BUFFER   (16 * 1024)  /* input held while a response is pending */
/* A pipelined request is taken only while less than this is still queued for the client:
 * a client that sends requests and never reads would otherwise have petrel produce
 * responses without bound (as nginx and HAProxy, the next request waits for the output).
 * Enough for a batch of small responses to leave in one write. */
#define H1_PIPELINE_OUT_MAX  (16 * 1024)
/* Requests taken from one connection's buffered input per loop turn. Streams are released
 * at the end of the turn (pt_worker_defer), so a turn that answered thousands of pipelined
 * requests at once (direct responses) would hold thousands of stream arenas; it also lets
 * the other connections in. */
#define H1_PIPELINE_BATCH    16
#define H1_RESPONSE_HEAD_MAX (96 * 1024)
#define H1_RESPONSE_HEADERS  200

const char *pt_http_reset_reason_str(pt_http_reset_reason_t r)
{
    switch (r) {
    case PT_HTTP_RESET_LOCAL:
        return "local reset";
    case PT_HTTP_RESET_REMOTE:
        return "remote reset";
    case PT_HTTP_RESET_CONNECTION_CLOSE:
        return "connection termination";
    case PT_HTTP_RESET_PROTOCOL_ERROR:
        return "protocol error";
    case PT_HTTP_RESET_OVERFLOW:
        return "overflow";
    case PT_HTTP_RESET_CONNECT_FAILURE:
        return "connection failure";
    case PT_HTTP_RESET_REFUSED_STREAM:
        return "remote refused stream reset";
    }
    return "unknown";
}

/* ---- shared helpers -------------------------------------------------------------- */

/* Parser scratch: header arrays are needed only while a head is parsed, so they are per
 * thread, not per connection (an idle connection holds no header storage). */
static _Thread_local pt_h1_header_t *scratch_headers;
static _Thread_local unsigned scratch_cap;

static pt_h1_header_t *scratch(unsigned n)
{
    if (n > scratch_cap) {
        pt_h1_header_t *p = realloc(scratch_headers, n * sizeof(*p));
        if (p == NULL)
            return NULL;
        scratch_headers = p;
        scratch_cap = n;
    }
    return scratch_headers;
}

void pt_http1_codec_thread_cleanup(void)
{
    free(scratch_headers);
    scratch_headers = NULL;
    scratch_cap = 0;
}

/* The header map's storage: one copy of the whole head into the stream's arena.
 *
 * The parser is zero-copy: the fields it returns point into the read buffer. The map must
 * outlive that buffer (the bytes are drained once parsed, and a retry or the access log
 * reads the headers long after), so the head is copied once, with one memcpy, and every
 * field of the map points into that copy. Pinning the read buffer's 16 KiB chunk for the
 * life of each stream instead would cost far more memory per open request than the head
 * itself. In the copy, names are lowercased in place and every method, target, name and
 * value is NUL-terminated in place: the byte after each is a delimiter the map no longer
 * needs (the SP after the method and target, the ':' after a name, the OWS or CR after a
 * value). Returns 0, or -1 when the arena is exhausted. */
static int head_to_arena(pt_arena_t *a, pt_h1_head_t *h, const char *wire, size_t len)
{
    char *copy = pt_arena_alloc(a, len);
    if (copy == NULL)
        return -1;
    memcpy(copy, wire, len);
    if (h->method != NULL) {
        char *m = copy + (h->method - wire);
        m[h->method_len] = '\0';
        h->method = m;
    }
    if (h->target != NULL) {
        char *t = copy + (h->target - wire);
        t[h->target_len] = '\0';
        h->target = t;
    }
    h->reason = h->reason != NULL ? copy + (h->reason - wire) : NULL;
    for (unsigned i = 0; i < h->num_headers; i++) {
        pt_h1_header_t *e = &h->headers[i];
        char *n = copy + (e->name - wire);
        for (size_t k = 0; k < e->name_len; k++)
            if (n[k] >= 'A' && n[k] <= 'Z')
                n[k] = (char)(n[k] | 0x20);
        n[e->name_len] = '\0';
        char *v = copy + (e->value - wire);
        v[e->value_len] = '\0';
        e->name = n;
        e->value = v;
    }
    return 0;
}

/* For names already lowercased by head_to_arena. */
static inline int name_is(const pt_h1_header_t *e, const char *lname, size_t n)
{
    return e->name_len == n && memcmp(e->name, lname, n) == 0;
}
#define NAME_IS(e, lit) name_is((e), lit, sizeof(lit) - 1)

/* Content-Length as forwarded. The parser accepts several values only when they are all the
 * same number (RFC 9112 6.3): "5, 5", two "5" lines, "05". The next hop gets one field with
 * that number in plain decimal, as RFC 9110 8.6 allows, never the list or the repeats: a
 * recipient that reads a list its own way (the first value, the last, an error) is how
 * framing desyncs start. `n` is the parsed length. Returns 0, or -1 when out of memory. */
static int add_content_length(pt_http_headers_t *out, const pt_h1_header_t *e, uint64_t n)
{
    if (pt_http_headers_find(out, "content-length") != NULL)
        return 0; /* a repeat of the value already added */
    int plain = e->value_len == 1 || (e->value_len > 1 && e->value[0] != '0');
    for (size_t i = 0; plain && i < e->value_len; i++)
        plain = e->value[i] >= '0' && e->value[i] <= '9';
    if (plain) /* the usual case: the value as received is already the canonical one */
        return pt_http_headers_add_ref_n(out, e->name, e->name_len, e->value, e->value_len);
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    return pt_http_headers_add(out, e->name, e->name_len, tmp + i, sizeof(tmp) - i);
}

/* Appends decimal / hex numbers without printf: these run for every message. Like the
 * other writers below, they return 0 or -ENOMEM; a message with a piece missing must not be
 * sent (its owner fails the connection instead, pt_conn_fail). */
static int append_dec(pt_buf_t *b, uint64_t v)
{
    char tmp[24];
    int i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    return pt_buf_append(b, tmp + i, sizeof(tmp) - (size_t)i);
}

static int append_chunk_size(pt_buf_t *b, size_t v)
{
    static const char hexd[] = "0123456789abcdef";
    char tmp[24];
    int i = sizeof(tmp);
    tmp[--i] = '\n';
    tmp[--i] = '\r';
    do {
        tmp[--i] = hexd[v & 15];
        v >>= 4;
    } while (v > 0);
    return pt_buf_append(b, tmp + i, sizeof(tmp) - (size_t)i);
}

/* Finds the end of a message head in buf (after a blank line); returns its length or 0.
 * `*from` remembers how far earlier calls looked. */
static size_t find_head_end(pt_buf_t *in, size_t *from)
{
    /* A blank line ends the head: "\n\r\n" or (bare LF, rejected later by the parser)
     * "\n\n". Scan chunk by chunk with memchr for LF and look at the next two bytes. */
    size_t len = pt_buf_len(in);
    size_t pos = *from > 2 ? *from - 2 : 0;
    size_t base = 0;
    for (pt_chunk_t *c = in->head; c != NULL; c = c->next) {
        size_t have = c->end - c->off;
        if (pos >= base + have) {
            base += have;
            continue;
        }
        const char *data = c->data + c->off;
        size_t i = pos - base;
        while (i < have) {
            const char *lf = memchr(data + i, '\n', have - i);
            if (lf == NULL)
                break;
            size_t at = base + (size_t)(lf - data);
            char next[2];
            size_t got, idx = (size_t)(lf - data);
            if (idx + 2 < have) { /* the usual case: both bytes in this chunk */
                next[0] = data[idx + 1];
                next[1] = data[idx + 2];
                got = 2;
            } else {
                got = pt_buf_copyout(in, at + 1, next, 2);
            }
            if (got >= 1 && next[0] == '\n')
                return at + 2;
            if (got == 2 && next[0] == '\r' && next[1] == '\n')
                return at + 3;
            if (got < 2 && (got == 0 || next[0] == '\r')) {
                /* The end may still come: resume at this LF next time. */
                *from = at;
                return 0;
            }
            i = (size_t)(lf - data) + 1;
        }
        pos = base + have;
        base += have;
    }
    *from = len;
    return 0;
}

/* Hop-by-hop framing headers (lowercase names), recognised by length first: this runs for
 * every header of every message. Connection and Upgrade are kept on upgrades. */
enum { HOP_NONE, HOP_UPGRADE_KEPT, HOP_ALWAYS };
static int hop_kind(const char *lname, size_t len)
{
    switch (len) {
    case 7:
        return memcmp(lname, "upgrade", 7) == 0 ? HOP_UPGRADE_KEPT : HOP_NONE;
    case 10:
        if (memcmp(lname, "connection", 10) == 0)
            return HOP_UPGRADE_KEPT;
        return memcmp(lname, "keep-alive", 10) == 0 ? HOP_ALWAYS : HOP_NONE;
    case 16:
        return memcmp(lname, "proxy-connection", 16) == 0 ? HOP_ALWAYS : HOP_NONE;
    case 17:
        return memcmp(lname, "transfer-encoding", 17) == 0 ? HOP_ALWAYS : HOP_NONE;
    default:
        return HOP_NONE;
    }
}


static const char *reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 200 ? "Informational" : status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* Writes the non-pseudo headers of h, skipping hop-by-hop framing headers unless `keep_upgrade`
 * (a 101 or an upgrade request keeps Connection/Upgrade). */
static int write_headers(pt_buf_t *out, const pt_http_headers_t *h, int keep_upgrade)
{
    int err = 0;
    for (uint32_t i = 0; i < h->count; i++) {
        const pt_http_header_t *e = &h->items[i];
        if (e->name[0] == ':' || (e->name_len == 4 && memcmp(e->name, "host", 4) == 0))
            continue;
        int hop = hop_kind(e->name, e->name_len);
        if (hop == HOP_ALWAYS || (hop == HOP_UPGRADE_KEPT && !keep_upgrade))
            continue;
        /* One reservation per line: a header is small, so it nearly always fits the chunk. */
        size_t need = (size_t)e->name_len + 2 + e->value_len + 2;
        size_t avail;
        char *dst = need <= PT_BUF_CHUNK_SIZE / 2 ? pt_buf_reserve(out, need, &avail) : NULL;
        if (dst == NULL) {
            err |= pt_buf_append(out, e->name, e->name_len);
            err |= pt_buf_append(out, ": ", 2);
            err |= pt_buf_append(out, e->value, e->value_len);
            err |= pt_buf_append(out, "\r\n", 2);
            continue;
        }
        memcpy(dst, e->name, e->name_len);
        dst += e->name_len;
        *dst++ = ':';
        *dst++ = ' ';
        memcpy(dst, e->value, e->value_len);
        dst += e->value_len;
        *dst++ = '\r';
        *dst = '\n';
        pt_buf_commit(out, need);
    }
    return err != 0 ? -ENOMEM : 0;
}

/* Moves the payload of one pt_h1_body_decode step from `in` to `out`: the decoder reported
 * `consumed` bytes of the first chunk with the payload at data[0..dlen). Returns 0, or
 * -ENOMEM when the payload could not be split off: the decoder counted it delivered, so
 * the message cannot go on. */
static int take_payload(pt_buf_t *in, const char *base, const char *data, size_t dlen,
                        size_t consumed, pt_buf_t *out)
{
    if (dlen == 0) {
        pt_buf_drain(in, consumed);
        return 0;
    }
    size_t before = (size_t)(data - base);
    pt_buf_drain(in, before);
    int rc = pt_buf_move_n(out, in, dlen);
    if (rc != 0)
        return rc;
    pt_buf_drain(in, consumed - before - dlen);
    return 0;
}

/* Runs one decode step over the front of `in`, making more contiguous input available when
 * the decoder needs to see across a chunk boundary. Returns consumed (>=0) or PT_H1_ERROR;
 * data, dlen and base as pt_h1_body_decode reports them. */
static ssize_t decode_step(pt_h1_body_t *b, pt_buf_t *in, const char **base, const char **data,
                           size_t *dlen)
{
    size_t avail;
    const char *p = pt_buf_peek(in, &avail);
    *base = p;
    *dlen = 0;
    *data = NULL;
    if (avail == 0)
        return 0;
    ssize_t n = pt_h1_body_decode(b, p, avail, data, dlen);
    if (n == 0 && *dlen == 0 && !pt_h1_body_has_trailer(b) && !pt_h1_body_done(b) &&
        pt_buf_len(in) > avail) {
        /* A chunk-size or trailer line straddles chunks: join enough bytes and retry. */
        size_t want = pt_buf_len(in) < avail + 8192 ? pt_buf_len(in) : avail + 8192;
        p = pt_buf_pullup(in, want);
        *base = p;
        if (p == NULL)
            return PT_H1_ERROR;
        n = pt_h1_body_decode(b, p, want, data, dlen);
    }
    return n;
}

/* ======================================================================================
 * Server side
 * ====================================================================================== */

typedef enum h1s_state {
    H1S_IDLE,     /* waiting for a request head */
    H1S_BODY,     /* reading the request body */
    H1S_REQ_DONE, /* request complete; waiting for the response to finish */
    H1S_TUNNEL,   /* upgraded: raw bytes both ways */
} h1s_state_t;

typedef struct h1_server h1_server_t;

typedef struct h1_server_stream {
    pt_http_codec_stream_t super;
    h1_server_t *codec;
    pt_arena_t *arena;
} h1_server_stream_t;

struct h1_server {
    pt_http_server_codec_t super;
    pt_conn_t *conn;
    const pt_http_server_settings_t *settings;
    const pt_http_server_callbacks_t *cb;
    void *owner;
    h1_server_stream_t stream;
    h1s_state_t state;
    /* Body decoding state and trailers live in the stream's arena: an idle keep-alive
     * connection carries neither. */
    pt_h1_body_t *body;
    pt_http_headers_t *trailers;
    size_t head_scan;
    int depth;               /* event handlers on the stack */
    int read_disabled;       /* owner's read_disable count */
    unsigned active : 1;     /* a stream exists (its response may be pending) */
    unsigned resp_started : 1;
    unsigned resp_done : 1;
    unsigned resp_chunked : 1;
    unsigned close_after : 1;     /* close the connection once the response is out */
    unsigned last_request : 1;    /* draining: the next response head says close */
    unsigned request_head : 1;    /* the request was HEAD */
    unsigned minor_version : 1;
    unsigned keep_alive : 1;      /* the request allows another after it */
    unsigned upgrade_requested : 1;
    unsigned connect_requested : 1; /* CONNECT: a 2xx answer starts the tunnel */
    unsigned tunnel_out_done : 1; /* tunnel: we sent end of stream */
    unsigned tunnel_in_done : 1;  /* tunnel: peer sent end of stream */
    unsigned peer_eof : 1;
    unsigned pipeline_paused : 1;
    unsigned output_blocked : 1;  /* a request waits until the queued output has left */
    unsigned batch;               /* requests begun in this h1s_process call */
    unsigned message_begun : 1;   /* on_message_begin sent for the head being read */
    unsigned closed : 1;          /* the owner closed the codec */
    unsigned conn_closed : 1;     /* we closed the connection ourselves */
    unsigned notify_pending : 1;  /* on_connection_closed is queued */
    unsigned lost : 1;            /* the connection failed under us; owner was told */
    unsigned above_high : 1;
    pt_defer_t notify;
};

static void h1s_free(h1_server_t *s)
{
    free(s);
}

static void h1s_notify_closed(pt_defer_t *d)
{
    h1_server_t *s = (h1_server_t *)((char *)d - offsetof(h1_server_t, notify));
    s->notify_pending = 0;
    s->depth++;
    if (!s->closed)
        s->cb->on_connection_closed(s->owner);
    s->depth--;
    if (s->closed && s->depth == 0)
        h1s_free(s);
}

/* The codec ends the connection itself (after a response with Connection: close, or a
 * reset): close it and tell the owner from the next loop turn, outside its call stack. */
static void h1s_close_conn(h1_server_t *s, pt_close_how_t how)
{
    if (s->conn_closed || s->closed)
        return;
    s->conn_closed = 1;
    s->active = 0;
    s->stream.super.data = NULL;
    pt_worker_t *w = s->conn->worker;
    pt_conn_close(s->conn, how);
    s->notify_pending = 1;
    pt_worker_defer(w, &s->notify);
}

static void h1s_enter(h1_server_t *s)
{
    s->depth++;
}

/* Returns 1 if the codec is gone (caller must return at once). */
static int h1s_leave(h1_server_t *s)
{
    if (--s->depth == 0 && s->closed && !s->notify_pending) {
        h1s_free(s);
        return 1;
    }
    return s->closed;
}

static void h1s_update_read(h1_server_t *s)
{
    if (s->closed || s->conn_closed)
        return;
    if (s->read_disabled > 0 || s->pipeline_paused || s->output_blocked)
        pt_conn_pause_read(s->conn);
    else
        pt_conn_resume_read(s->conn);
}

/* The connection is ending: reset an unfinished stream and tell the owner. */
static void h1s_connection_lost(h1_server_t *s, pt_http_reset_reason_t reason)
{
    if (s->closed || s->conn_closed || s->lost)
        return;
    s->lost = 1; /* the owner closes the pt_conn when it closes the codec */
    if (s->active) {
        void *st = s->stream.super.data;
        s->active = 0;
        s->stream.super.data = NULL;
        if (st != NULL)
            s->cb->on_reset(st, reason);
    }
    if (!s->closed)
        s->cb->on_connection_closed(s->owner);
}

/* Answers a request that cannot go on. Without a stream yet (a bad head), one is created
 * so the owner can answer and log it like any other request. */
static void h1s_protocol_error(h1_server_t *s, int status, const char *details)
{
    void *st = s->active ? s->stream.super.data : NULL;
    s->close_after = 1;
    s->state = H1S_REQ_DONE; /* stop parsing */
    pt_conn_pause_read(s->conn);
    if (!s->active) {
        s->active = 1;
        s->stream.super.data = NULL;
        s->stream.arena = NULL;
        st = s->cb->on_new_stream(s->owner, &s->stream.super);
        if (s->closed)
            return;
        if (st == NULL || s->stream.arena == NULL) {
            s->active = 0;
            h1s_close_conn(s, PT_CLOSE_NOW);
            return;
        }
        s->stream.super.data = st;
    }
    s->cb->on_protocol_error(s->owner, st, status, details);
}

/* Whether the request's Upgrade is to be ignored: h2c always (petrel, as Envoy, does not
 * switch a connection to HTTP/2 by Upgrade; *h2c is set so HTTP2-Settings goes too), else
 * a value that an ignore_http_11_upgrade matcher matches. */
static int ignored_upgrade(const pt_http_server_settings_t *st, const pt_h1_head_t *h, int *h2c)
{
    for (unsigned i = 0; i < h->num_headers; i++) {
        const pt_h1_header_t *e = &h->headers[i];
        if (!pt_h1_header_name_eq(e, "upgrade"))
            continue;
        if (e->value_len == 3 && strncasecmp(e->value, "h2c", 3) == 0) {
            *h2c = 1;
            return 1;
        }
        for (unsigned k = 0; k < st->nignore_upgrade; k++)
            if (pt_string_matcher_match(&st->ignore_upgrade[k], e->value, e->value_len))
                return 1;
        return 0;
    }
    return 0;
}

/* Converts a parsed request head into the stream's header map. Returns 0, or an HTTP status
 * for a request that is well-formed HTTP/1 but that petrel refuses, or 503 when the map
 * could not be built whole (no memory): a request missing a header must not go on, as a
 * policy could depend on that header. */
static int h1s_build_request(h1_server_t *s, const pt_h1_head_t *h, pt_http_headers_t *out,
                             const char **details)
{
    pt_arena_t *a = s->stream.arena;
    pt_http_headers_init(out, a);
    /* The head is in the arena already (head_to_arena): the map refers to it. */
    int err = pt_http_headers_add_ref_n(out, ":method", 7, h->method, h->method_len);
    const char *target = h->target;
    size_t tlen = h->target_len;
    const char *authority = NULL;
    size_t alen = 0;
    int connect = h->method_len == 7 && memcmp(h->method, "CONNECT", 7) == 0;
    if (connect) {
        /* authority-form, host:port (RFC 9112 3.2.3): it is the :authority, and there is no
         * :path; the connection manager decides (upgrade_configs CONNECT). */
        if (tlen == 0 || memchr(target, ':', tlen) == NULL || strcspn(target, "/?#@") < tlen) {
            *details = "invalid request target";
            return 400;
        }
        err |= pt_http_headers_add_ref_n(out, ":authority", 10, target, tlen);
    } else if (tlen > 0 && target[0] != '/' && !(tlen == 1 && target[0] == '*')) {
        /* absolute-form: http://authority/path — the authority replaces Host (RFC 9112 3.2.2). */
        const char *sep = tlen > 3 ? strstr(target, "://") : NULL;
        if (sep == NULL || sep > target + tlen - 3 || sep == target) {
            *details = "invalid request target";
            return 400;
        }
        const char *auth = sep + 3;
        const char *end = target + tlen;
        const char *slash = memchr(auth, '/', (size_t)(end - auth));
        const char *qm = memchr(auth, '?', (size_t)(end - auth));
        if (qm != NULL && (slash == NULL || qm < slash))
            slash = qm;
        authority = auth;
        alen = (size_t)((slash ? slash : end) - auth);
        if (alen == 0) {
            *details = "invalid request target";
            return 400;
        }
        if (slash == NULL) {
            target = "/";
            tlen = 1;
        } else if (*slash == '?') {
            char *p = pt_arena_alloc(a, (size_t)(end - slash) + 2);
            if (p == NULL) {
                *details = "out of memory";
                return 503;
            }
            p[0] = '/';
            memcpy(p + 1, slash, (size_t)(end - slash));
            target = p;
            tlen = (size_t)(end - slash) + 1;
        } else {
            target = slash;
            tlen = (size_t)(end - slash);
        }
    }
    if (!connect) { /* a CONNECT's target is its :authority, and it has no :path */
        if (target == h->target)
            err |= pt_http_headers_add_ref_n(out, ":path", 5, target, tlen);
        else /* rewritten from the absolute form: not NUL-terminated in place */
            err |= pt_http_headers_add(out, ":path", 5, target, tlen);
        if (authority != NULL)
            err |= pt_http_headers_add(out, ":authority", 10, authority, alen);
        else if (h->host != NULL)
            err |= pt_http_headers_add_ref_n(out, ":authority", 10, h->host->value,
                                             h->host->value_len);
    }

    int upgrade = h->has_upgrade && h->connection_upgrade;
    int drop_h2c = 0;
    if (upgrade && ignored_upgrade(s->settings, h, &drop_h2c))
        upgrade = 0; /* Upgrade and Connection are then dropped as hop-by-hop headers */
    for (unsigned i = 0; i < h->num_headers; i++) {
        const pt_h1_header_t *e = &h->headers[i];
        if (e == h->host)
            continue;
        if (memchr(e->name, '_', e->name_len) != NULL &&
            s->settings->headers_with_underscores_action != 0) {
            if (s->settings->headers_with_underscores_action == 1) {
                *details = "header name with underscores";
                return 400;
            }
            continue; /* DROP_HEADER */
        }
        if (NAME_IS(e, "host")) /* the parser allows one; :authority carries it */
            continue;
        if (NAME_IS(e, "content-length")) {
            if (add_content_length(out, e, h->content_length) != 0) {
                *details = "out of memory";
                return 503;
            }
            continue;
        }
        int hop = hop_kind(e->name, e->name_len);
        if (hop == HOP_ALWAYS || (hop == HOP_UPGRADE_KEPT && !upgrade))
            continue;
        if (drop_h2c && NAME_IS(e, "http2-settings"))
            continue; /* belongs to the h2c upgrade, which is not made */
        if (hop == HOP_UPGRADE_KEPT && NAME_IS(e, "connection")) {
            err |= pt_http_headers_add_ref_n(out, "connection", 10, "upgrade", 7);
            continue;
        }
        err |= pt_http_headers_add_ref_n(out, e->name, e->name_len, e->value, e->value_len);
    }
    if (err != 0) {
        *details = "out of memory";
        return 503;
    }
    /* Headers nominated by Connection are hop-by-hop too (RFC 9110 7.6.1). */
    for (unsigned i = 0; i < h->num_headers; i++) {
        const pt_h1_header_t *e = &h->headers[i];
        if (!pt_h1_header_name_eq(e, "connection"))
            continue;
        const char *p = e->value, *end = e->value + e->value_len;
        while (p < end) {
            while (p < end && (*p == ',' || *p == ' ' || *p == '\t'))
                p++;
            const char *t = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if (p > t && (size_t)(p - t) < 64) {
                char tok[64];
                for (size_t k = 0; k < (size_t)(p - t); k++)
                    tok[k] = (char)tolower((unsigned char)t[k]);
                tok[p - t] = '\0';
                if (strcmp(tok, "upgrade") != 0 && strcmp(tok, "close") != 0 &&
                    strcmp(tok, "keep-alive") != 0 && tok[0] != ':' && strcmp(tok, "te") != 0)
                    pt_http_headers_remove(out, tok);
            }
        }
    }
    s->upgrade_requested = upgrade || connect;
    s->connect_requested = connect;
    return 0;
}

static void h1s_process(h1_server_t *s);

static void h1s_reset_for_next(h1_server_t *s)
{
    s->active = 0;
    s->stream.super.data = NULL;
    s->stream.arena = NULL;
    s->state = H1S_IDLE;
    s->resp_started = s->resp_done = s->resp_chunked = 0;
    s->request_head = 0;
    s->upgrade_requested = 0;
    s->connect_requested = 0;
    s->head_scan = 0;
    s->body = NULL;
    s->trailers = NULL;
}

/* The buffered input lacks what the current state needs: reading must be on. (Read-ahead
 * stops at H1_PIPELINE_BUFFER while a response is pending, and stays stopped as long as
 * what was read holds whole requests: a client pipelining thousands of requests is read
 * about as fast as they are answered, not into memory.) */
static void h1s_want_input(h1_server_t *s)
{
    if (s->pipeline_paused) {
        s->pipeline_paused = 0;
        h1s_update_read(s);
    }
}

/* Between requests, or while one is answered, input is read ahead only up to
 * H1_PIPELINE_BUFFER: more requests than that wait in the client's socket. */
static void h1s_bound_readahead(h1_server_t *s)
{
    if ((s->state == H1S_IDLE || s->state == H1S_REQ_DONE) && !s->pipeline_paused &&
        pt_buf_len(&s->conn->in) > H1_PIPELINE_BUFFER) {
        s->pipeline_paused = 1;
        h1s_update_read(s);
    }
}

/* Parses and dispatches as much buffered input as the current state allows. */
static void h1s_process(h1_server_t *s)
{
    pt_conn_t *c = s->conn;
    for (;;) {
        if (s->closed || s->conn_closed || s->lost)
            return;
        switch (s->state) {
        case H1S_IDLE: {
            /* Empty lines before a request line are ignored (RFC 9112 2.2): clients send a
             * stray CRLF after a body. Dropping them here also keeps them from looking like
             * the blank line that ends a head. */
            while (pt_buf_len(&c->in) >= 2) {
                char crlf[2];
                pt_buf_copyout(&c->in, 0, crlf, 2);
                if (crlf[0] != '\r' || crlf[1] != '\n')
                    break;
                pt_buf_drain(&c->in, 2);
                s->head_scan = 0;
            }
            if (pt_buf_len(&c->in) == 0) {
                if (s->peer_eof) {
                    h1s_connection_lost(s, PT_HTTP_RESET_CONNECTION_CLOSE);
                    return;
                }
                h1s_want_input(s);
                return;
            }
            if (pt_buf_len(&c->in) == 1 && pt_buf_peek(&c->in, &(size_t){0})[0] == '\r' &&
                !s->peer_eof) {
                h1s_want_input(s);
                return; /* maybe the first half of a CRLF */
            }
            /* Nobody will read the answer (the write side failed): take no more requests;
             * the connection's error is on its way. */
            if (!pt_conn_can_write(c))
                return;
            /* Enough for this round: the rest of the pipeline from the next one, after the
             * worker has released the streams that ended (pt_worker_t.round_requests). */
            if (s->batch >= H1_PIPELINE_BATCH ||
                (s->batch > 0 && c->worker->round_requests >= PT_WORKER_ROUND_REQUESTS)) {
                pt_conn_schedule_read(c);
                return;
            }
            /* The next request waits while earlier responses are still queued (the client
             * is not reading them): reading stops too, so TCP pushes back on the client. */
            size_t out_max = H1_PIPELINE_OUT_MAX < c->high_watermark ? H1_PIPELINE_OUT_MAX
                                                                     : c->high_watermark;
            if (pt_conn_queued(c) > out_max) {
                if (!s->output_blocked) {
                    s->output_blocked = 1;
                    h1s_update_read(s);
                    pt_conn_drain_to(c, out_max);
                }
                return;
            }
            size_t max_head = (size_t)s->settings->max_request_headers_kb * 1024;
            if (s->head_scan == 0 && !s->message_begun) {
                s->message_begun = 1;
                s->cb->on_message_begin(s->owner);
                if (s->closed || s->conn_closed)
                    return;
            }
            size_t head_len = find_head_end(&c->in, &s->head_scan);
            if (head_len == 0) {
                if (pt_buf_len(&c->in) > max_head) {
                    h1s_protocol_error(s, 431, "request headers too large");
                    return;
                }
                if (s->peer_eof)
                    h1s_connection_lost(s, PT_HTTP_RESET_CONNECTION_CLOSE);
                else
                    h1s_want_input(s);
                return;
            }
            if (head_len > max_head) {
                h1s_protocol_error(s, 431, "request headers too large");
                return;
            }
            unsigned maxh = s->settings->max_headers_count;
            pt_h1_header_t *hdrs = scratch(maxh + 1);
            const char *p = pt_buf_pullup(&c->in, head_len);
            if (hdrs == NULL || p == NULL) {
                h1s_protocol_error(s, 503, "out of memory");
                return;
            }
            pt_h1_head_t head;
            pt_h1_head_init(&head, hdrs);
            pt_h1_limits_t lim = {.max_head_bytes = max_head, .max_headers = maxh};
            int rc = pt_h1_parse_request(p, head_len, &head, &lim);
            if (rc < 0) {
                h1s_protocol_error(s, rc == PT_H1_ERROR ? head.error_status : 400,
                                   head.error_reason ? head.error_reason : "bad request");
                return;
            }
            /* A new stream: the owner provides the arena the headers go into. */
            s->batch++;
            c->worker->round_requests++;
            s->active = 1;
            s->stream.super.data = NULL;
            void *st = s->cb->on_new_stream(s->owner, &s->stream.super);
            if (s->closed)
                return;
            if (st == NULL || s->stream.arena == NULL) {
                s->active = 0;
                h1s_protocol_error(s, 503, "stream refused");
                return;
            }
            s->stream.super.data = st;
            s->minor_version = (unsigned)head.minor_version & 1;
            s->keep_alive = head.keep_alive;
            s->request_head = head.method_len == 4 && memcmp(head.method, "HEAD", 4) == 0;
            pt_http_headers_t *hdr_map = pt_arena_alloc(s->stream.arena, sizeof(*hdr_map));
            const char *details = NULL;
            int refuse = hdr_map != NULL && head_to_arena(s->stream.arena, &head, p, (size_t)rc) == 0
                             ? h1s_build_request(s, &head, hdr_map, &details)
                             : 503;
            pt_buf_drain(&c->in, (size_t)rc);
            s->head_scan = 0;
            s->message_begun = 0;
            if (refuse != 0) {
                h1s_protocol_error(s, refuse, details ? details : "refused");
                return;
            }
            if (!s->keep_alive)
                s->close_after = 1;
            s->body = pt_arena_alloc(s->stream.arena, sizeof(*s->body));
            s->trailers = NULL;
            if (s->body == NULL) {
                h1s_protocol_error(s, 503, "out of memory");
                return;
            }
            pt_h1_body_init(s->body, &head);
            int end_stream = head.body_mode == PT_H1_BODY_NONE ||
                             (head.body_mode == PT_H1_BODY_LENGTH && head.content_length == 0);
            s->state = end_stream ? H1S_REQ_DONE : H1S_BODY;
            if (s->upgrade_requested && end_stream) {
                /* An upgrade request's "body" is the tunnel after the 101. */
                end_stream = 0;
                s->state = H1S_REQ_DONE;
            }
            s->cb->on_headers(st, hdr_map, end_stream);
            break;
        }
        case H1S_BODY: {
            const char *base, *data;
            size_t dlen;
            ssize_t n = decode_step(s->body, &c->in, &base, &data, &dlen);
            if (n < 0) {
                h1s_protocol_error(s, 400, s->body->error_reason ? s->body->error_reason : "bad body");
                return;
            }
            pt_buf_t payload = {0};
            int trailer = pt_h1_body_has_trailer(s->body);
            if (trailer) {
                if (s->trailers == NULL) {
                    s->trailers = pt_arena_alloc(s->stream.arena, sizeof(*s->trailers));
                    if (s->trailers == NULL) {
                        h1s_protocol_error(s, 503, "out of memory");
                        return;
                    }
                    pt_http_headers_init(s->trailers, s->stream.arena);
                }
                pt_http_headers_add(s->trailers, s->body->trailer.name, s->body->trailer.name_len,
                                    s->body->trailer.value, s->body->trailer.value_len);
            }
            if (take_payload(&c->in, base, data, dlen, (size_t)n, &payload) != 0) {
                pt_buf_dispose(&payload);
                h1s_protocol_error(s, 503, "out of memory");
                return;
            }
            int done = pt_h1_body_done(s->body);
            void *st = s->stream.super.data;
            int has_trailers = s->trailers != NULL && s->trailers->count > 0;
            if (done)
                s->state = H1S_REQ_DONE;
            if (pt_buf_len(&payload) > 0 || (done && !has_trailers)) {
                s->cb->on_data(st, &payload, done && !has_trailers);
                pt_buf_dispose(&payload);
                if (s->closed)
                    return;
            }
            if (done && has_trailers && s->stream.super.data != NULL) {
                s->cb->on_trailers(st, s->trailers);
                if (s->closed)
                    return;
            }
            if (n == 0 && dlen == 0 && !trailer && !done) {
                if (s->peer_eof)
                    h1s_connection_lost(s, PT_HTTP_RESET_CONNECTION_CLOSE);
                else
                    h1s_want_input(s);
                return; /* need more input */
            }
            if (s->read_disabled > 0)
                return; /* the consumer is full; resume on read_disable(0) */
            break;
        }
        case H1S_REQ_DONE:
            if (s->peer_eof && s->active && !s->resp_done) {
                /* The client closed while its request is being answered. As in Envoy (and
                 * nginx without proxy_ignore_client_abort) there are no half-closed HTTP/1
                 * requests: the client is gone, so the stream is reset and the upstream
                 * request cancelled rather than answered into the void. */
                h1s_connection_lost(s, PT_HTTP_RESET_CONNECTION_CLOSE);
                return;
            }
            h1s_bound_readahead(s);
            if (!s->active && s->peer_eof && pt_buf_len(&c->in) == 0)
                h1s_connection_lost(s, PT_HTTP_RESET_CONNECTION_CLOSE);
            return;
        case H1S_TUNNEL: {
            void *st = s->stream.super.data;
            if (st == NULL || s->tunnel_in_done)
                return;
            int eof = s->peer_eof;
            if (pt_buf_len(&c->in) == 0 && !eof)
                return;
            pt_buf_t data = {0};
            pt_buf_move(&data, &c->in);
            if (eof)
                s->tunnel_in_done = 1;
            s->cb->on_data(st, &data, eof);
            pt_buf_dispose(&data);
            return;
        }
        }
    }
}

static void h1s_on_read(pt_conn_t *c)
{
    h1_server_t *s = c->data;
    h1s_enter(s);
    if (c->flags & PT_CONN_F_EOF)
        s->peer_eof = 1;
    s->batch = 0;
    h1s_process(s);
    if (!s->closed && !s->conn_closed)
        h1s_bound_readahead(s);
    h1s_leave(s);
}

static void h1s_on_error(pt_conn_t *c, int status)
{
    h1_server_t *s = c->data;
    (void)status;
    h1s_enter(s);
    h1s_connection_lost(s, status == -ECONNRESET ? PT_HTTP_RESET_REMOTE
                                                 : PT_HTTP_RESET_CONNECTION_CLOSE);
    h1s_leave(s);
}

static void h1s_on_drain(pt_conn_t *c)
{
    h1_server_t *s = c->data;
    h1s_enter(s);
    if (s->above_high && !(c->flags & PT_CONN_F_ABOVE_HIGH)) {
        s->above_high = 0;
        s->cb->on_write_watermark(s->owner, s->active ? s->stream.super.data : NULL, 0);
    }
    if (s->output_blocked && !s->closed) {
        /* The queued responses have left: take the next pipelined request. */
        s->output_blocked = 0;
        h1s_update_read(s);
        pt_conn_schedule_read(c);
    }
    h1s_leave(s);
}

static void h1s_on_connect(pt_conn_t *c, int status)
{
    (void)c;
    (void)status;
}

static const pt_conn_handler_t h1s_handler = {
    .on_read = h1s_on_read,
    .on_connect = h1s_on_connect,
    .on_drain = h1s_on_drain,
    .on_error = h1s_on_error,
};

static pt_http_server_codec_t *h1s_create(pt_conn_t *c, const pt_http_server_settings_t *settings,
                                          const pt_http_server_callbacks_t *cb, void *owner)
{
    h1_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->super.ops = &pt_http1_server_codec;
    s->conn = c;
    s->settings = settings;
    s->cb = cb;
    s->owner = owner;
    s->stream.codec = s;
    s->state = H1S_IDLE;
    s->notify.fn = h1s_notify_closed;
    pt_conn_set_handler(c, &h1s_handler, s);
    return &s->super;
}

static void h1s_set_stream_arena(pt_http_codec_stream_t *cs, pt_arena_t *arena)
{
    ((h1_server_stream_t *)cs)->arena = arena;
}

static void h1s_check_watermark(h1_server_t *s)
{
    if (!s->above_high && (s->conn->flags & PT_CONN_F_ABOVE_HIGH)) {
        s->above_high = 1;
        s->cb->on_write_watermark(s->owner, s->active ? s->stream.super.data : NULL, 1);
    }
}

/* The response is fully written: next request, or close. */
static void h1s_response_done(h1_server_t *s)
{
    s->resp_done = 1;
    if (s->state == H1S_TUNNEL)
        return;
    if (s->state != H1S_REQ_DONE) {
        /* Answered before the request ended (an early error): the rest of the request
         * cannot be skipped reliably, so the connection closes after the response. */
        s->close_after = 1;
    }
    if (s->close_after) {
        h1s_close_conn(s, PT_CLOSE_FLUSH);
        return;
    }
    h1s_reset_for_next(s);
    s->cb->on_idle(s->owner);
    if (s->closed)
        return;
    /* A pipelined request may already be buffered, or the client half-closed. Reading
     * resumes only when what is buffered holds no whole request (h1s_want_input). */
    if (pt_buf_len(&s->conn->in) > 0 || s->peer_eof)
        pt_conn_schedule_read(s->conn);
    else
        h1s_want_input(s);
}

/* Queues a message the encoders put together, or, when a piece of it could not be
 * (err != 0), drops it and resets the connection: the client must not get it in pieces. The
 * owner hears of it as of any connection the codec ends. Returns err. */
static int h1s_write(h1_server_t *s, pt_buf_t *out, int err)
{
    if (err != 0) {
        pt_buf_dispose(out);
        h1s_close_conn(s, PT_CLOSE_RESET);
        return err;
    }
    pt_conn_write(s->conn, out);
    return 0;
}

static void h1s_encode_headers(pt_http_codec_stream_t *cs, pt_http_headers_t *h, int end_stream)
{
    h1_server_t *s = ((h1_server_stream_t *)cs)->codec;
    if (s->closed || s->conn_closed || s->resp_started)
        return;
    const char *st = pt_http_headers_get(h, ":status");
    int status = pt_http_status_value(st, 500);
    pt_buf_t out = {0};
    int err = pt_buf_append(&out, "HTTP/1.1 ", 9);
    err |= append_dec(&out, (uint64_t)status);
    err |= pt_buf_append(&out, " ", 1);
    err |= pt_buf_append_str(&out, reason_phrase(status));
    err |= pt_buf_append(&out, "\r\n", 2);
    /* A 101 to an upgrade, or a 2xx to a CONNECT, makes the connection a tunnel. */
    int upgrade =
        s->upgrade_requested &&
        (status == 101 || (s->connect_requested && status >= 200 && status < 300 && !end_stream));
    if (status == 204)
        pt_http_headers_remove(h, "content-length"); /* RFC 9110 8.6: never in a 204 */
    err |= write_headers(&out, h, upgrade);
    if (status >= 100 && status < 200 && !upgrade) {
        /* Interim responses other than 101 carry no framing and do not start the response. */
        err |= pt_buf_append(&out, "\r\n", 2);
        h1s_write(s, &out, err);
        return;
    }
    s->resp_started = 1;
    int no_body = status == 204 || status == 304 || upgrade || s->request_head;
    const char *cl = pt_http_headers_get(h, "content-length");
    if (upgrade) {
        /* Connection: upgrade and Upgrade come from the header map. */
    } else if (cl != NULL || no_body) {
        /* Framed by the header, or no body at all. */
    } else if (end_stream) {
        err |= pt_buf_append_str(&out, "content-length: 0\r\n");
    } else if (s->minor_version == 1) {
        err |= pt_buf_append_str(&out, "transfer-encoding: chunked\r\n");
        s->resp_chunked = 1;
    } else {
        s->close_after = 1; /* HTTP/1.0: the body ends at the close */
    }
    if (s->last_request)
        s->close_after = 1;
    if (!upgrade) {
        if (s->close_after || s->state != H1S_REQ_DONE)
            err |= pt_buf_append_str(&out, "connection: close\r\n");
        else if (s->minor_version == 0)
            err |= pt_buf_append_str(&out, "connection: keep-alive\r\n");
    }
    err |= pt_buf_append(&out, "\r\n", 2);
    if (h1s_write(s, &out, err) != 0)
        return;
    if (upgrade) {
        s->state = H1S_TUNNEL;
        s->pipeline_paused = 0;
        h1s_update_read(s);
        if (pt_buf_len(&s->conn->in) > 0)
            pt_conn_schedule_read(s->conn);
        return;
    }
    if (end_stream || (no_body && !upgrade)) {
        if (!end_stream)
            s->resp_done = 1; /* HEAD/204/304: a body the owner sends later is dropped */
        h1s_response_done(s);
        return;
    }
    h1s_check_watermark(s);
}

static void h1s_encode_data(pt_http_codec_stream_t *cs, pt_buf_t *data, int end_stream)
{
    h1_server_t *s = ((h1_server_stream_t *)cs)->codec;
    if (s->closed || s->conn_closed || !s->resp_started) {
        pt_buf_dispose(data);
        return;
    }
    if (s->state == H1S_TUNNEL) {
        pt_conn_write(s->conn, data);
        if (end_stream) {
            /* The upstream side of the tunnel ended. For the owner that is the end of the
             * response, and a response that ends before its request is an early response:
             * the stream is over (the owner releases it right after this call) and, as for
             * any early response, the connection closes once the bytes are out. Waiting
             * for the client's FIN instead would keep a stream pointer the owner has freed,
             * and the connection, alive forever. */
            s->tunnel_out_done = 1;
            h1s_close_conn(s, PT_CLOSE_FLUSH);
            return;
        }
        h1s_check_watermark(s);
        return;
    }
    if (s->resp_done) {
        pt_buf_dispose(data);
        return;
    }
    size_t n = pt_buf_len(data);
    if (s->resp_chunked) {
        pt_buf_t out = {0};
        int err = 0;
        if (n > 0) {
            err |= append_chunk_size(&out, n);
            pt_buf_move(&out, data);
            err |= pt_buf_append(&out, "\r\n", 2);
        }
        if (end_stream)
            err |= pt_buf_append_str(&out, "0\r\n\r\n");
        if (h1s_write(s, &out, err) != 0)
            return;
    } else {
        pt_conn_write(s->conn, data);
    }
    if (end_stream) {
        h1s_response_done(s);
        return;
    }
    h1s_check_watermark(s);
}

static void h1s_encode_trailers(pt_http_codec_stream_t *cs, pt_http_headers_t *t)
{
    h1_server_t *s = ((h1_server_stream_t *)cs)->codec;
    if (s->closed || s->conn_closed || !s->resp_started || s->resp_done)
        return;
    if (s->resp_chunked) {
        pt_buf_t out = {0};
        int err = pt_buf_append_str(&out, "0\r\n");
        err |= write_headers(&out, t, 0);
        err |= pt_buf_append(&out, "\r\n", 2);
        if (h1s_write(s, &out, err) != 0)
            return;
    }
    /* Content-Length framing cannot carry trailers: they are dropped, as HTTP/1 requires. */
    h1s_response_done(s);
}

static void h1s_encode_100_continue(pt_http_codec_stream_t *cs)
{
    h1_server_t *s = ((h1_server_stream_t *)cs)->codec;
    if (s->closed || s->conn_closed || s->resp_started)
        return;
    pt_conn_write_bytes(s->conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static void h1s_close(pt_http_server_codec_t *codec, pt_close_how_t how)
{
    h1_server_t *s = (h1_server_t *)codec;
    if (s->closed)
        return;
    s->closed = 1;
    s->active = 0;
    s->stream.super.data = NULL;
    if (!s->conn_closed)
        pt_conn_close(s->conn, how);
    s->conn = NULL;
    if (s->depth == 0 && !s->notify_pending)
        h1s_free(s);
}

static void h1s_reset_stream(pt_http_codec_stream_t *cs, pt_http_reset_reason_t reason)
{
    h1_server_t *s = ((h1_server_stream_t *)cs)->codec;
    (void)reason;
    if (s->closed || s->conn_closed)
        return;
    /* HTTP/1 has no stream reset: the connection goes. A response in progress is cut
     * short so the client sees the truncation. */
    h1s_close_conn(s, s->resp_started && !s->resp_done ? PT_CLOSE_RESET : PT_CLOSE_FLUSH);
}

static void h1s_read_disable(pt_http_codec_stream_t *cs, int disable)
{
    h1_server_t *s = ((h1_server_stream_t *)cs)->codec;
    if (s->closed || s->conn_closed)
        return;
    int before = s->read_disabled;
    s->read_disabled += disable ? 1 : -1;
    if (s->read_disabled < 0)
        s->read_disabled = 0;
    h1s_update_read(s);
    if (before > 0 && s->read_disabled == 0 && pt_buf_len(&s->conn->in) > 0 &&
        (s->state == H1S_BODY || s->state == H1S_TUNNEL))
        pt_conn_schedule_read(s->conn);
}

static void h1s_upgrade(pt_http_codec_stream_t *cs)
{
    (void)cs; /* the switch happens when the 101 is encoded */
}

static void h1s_send_error(pt_http_server_codec_t *codec, int status, const char *details)
{
    h1_server_t *s = (h1_server_t *)codec;
    if (s->closed || s->conn_closed || s->lost || s->resp_started)
        return;
    h1s_enter(s);
    h1s_protocol_error(s, status, details);
    h1s_leave(s);
}

static void h1s_shutdown_notice(pt_http_server_codec_t *codec)
{
    h1_server_t *s = (h1_server_t *)codec;
    /* An idle connection stays open: closing it could race a request the client is sending
     * right now, which would then be lost without an answer. The next response head says
     * "connection: close" and the connection closes after it: the response in flight if its
     * head is still to be written, else the next request's. (Closing after a response whose
     * head already promised keep-alive would lose the request the client sends next.) */
    s->last_request = 1;
}

static const char *h1s_stream_protocol(pt_http_codec_stream_t *cs)
{
    h1_server_t *s = ((h1_server_stream_t *)cs)->codec;
    return s->minor_version ? "HTTP/1.1" : "HTTP/1.0";
}

static int h1s_stream_write_above_high(pt_http_codec_stream_t *cs)
{
    h1_server_t *s = ((h1_server_stream_t *)cs)->codec;
    return !s->closed && !s->conn_closed && s->above_high;
}

const pt_http_server_codec_ops_t pt_http1_server_codec = {
    .protocol = "HTTP/1.1",
    .create = h1s_create,
    .set_stream_arena = h1s_set_stream_arena,
    .encode_headers = h1s_encode_headers,
    .encode_data = h1s_encode_data,
    .encode_trailers = h1s_encode_trailers,
    .encode_100_continue = h1s_encode_100_continue,
    .reset_stream = h1s_reset_stream,
    .read_disable = h1s_read_disable,
    .upgrade = h1s_upgrade,
    .send_error = h1s_send_error,
    .shutdown_notice = h1s_shutdown_notice,
    .close = h1s_close,
    .stream_protocol = h1s_stream_protocol,
    .stream_write_above_high = h1s_stream_write_above_high,
};

/* ======================================================================================
 * Client side
 * ====================================================================================== */

typedef enum h1c_state {
    H1C_IDLE,        /* no request */
    H1C_WAIT_HEAD,   /* request sent (or sending); waiting for the response head */
    H1C_BODY,        /* reading the response body */
    H1C_DONE,        /* response complete */
    H1C_TUNNEL,
    H1C_DEAD,        /* unusable: closed, reset or protocol error */
} h1c_state_t;

typedef struct h1_client h1_client_t;

typedef struct h1_client_stream {
    pt_http_codec_stream_t super;
    h1_client_t *codec;
    const pt_http_client_callbacks_t *cb;
    pt_arena_t *arena;
} h1_client_stream_t;

struct h1_client {
    pt_http_client_codec_t super;
    pt_conn_t *conn;
    void (*on_closed)(void *owner, pt_http_client_codec_t *codec);
    void *owner;
    h1_client_stream_t stream;
    h1c_state_t state;
    pt_h1_body_t body;
    pt_http_headers_t trailers;
    size_t head_scan;
    int depth;
    int read_disabled;
    unsigned active : 1;       /* a request is using the connection */
    unsigned req_done : 1;     /* request fully encoded */
    unsigned req_chunked : 1;
    unsigned req_head : 1;
    unsigned upgrade_req : 1;
    unsigned keep_alive : 1;   /* the response allows reuse */
    unsigned destroyed : 1;
    unsigned peer_eof : 1;
    unsigned above_high : 1;
    unsigned tunnel_out_done : 1;
};

static void h1c_enter(h1_client_t *c)
{
    c->depth++;
}

static int h1c_leave(h1_client_t *c)
{
    if (--c->depth == 0 && c->destroyed) {
        free(c);
        return 1;
    }
    return c->destroyed;
}

static void h1c_kill(h1_client_t *c, pt_http_reset_reason_t reason)
{
    if (c->state == H1C_DEAD)
        return;
    c->state = H1C_DEAD;
    if (c->active) {
        void *req = c->stream.super.data;
        const pt_http_client_callbacks_t *cb = c->stream.cb;
        c->active = 0;
        c->stream.super.data = NULL;
        if (req != NULL)
            cb->on_reset(req, reason);
    } else if (c->on_closed != NULL && !c->destroyed) {
        c->on_closed(c->owner, &c->super);
    }
}

static void h1c_process(h1_client_t *c)
{
    pt_conn_t *conn = c->conn;
    for (;;) {
        if (c->destroyed || c->state == H1C_DEAD)
            return;
        switch (c->state) {
        case H1C_IDLE:
        case H1C_DONE:
            /* Bytes or a close on a connection with no request: it cannot be reused. */
            if (pt_buf_len(&conn->in) > 0 || c->peer_eof)
                h1c_kill(c, PT_HTTP_RESET_CONNECTION_CLOSE);
            return;
        case H1C_WAIT_HEAD: {
            size_t head_len = find_head_end(&conn->in, &c->head_scan);
            if (head_len == 0) {
                if (pt_buf_len(&conn->in) > H1_RESPONSE_HEAD_MAX)
                    h1c_kill(c, PT_HTTP_RESET_PROTOCOL_ERROR);
                else if (c->peer_eof)
                    h1c_kill(c, pt_buf_len(&conn->in) ? PT_HTTP_RESET_PROTOCOL_ERROR
                                                      : PT_HTTP_RESET_CONNECTION_CLOSE);
                return;
            }
            pt_h1_header_t *hdrs = scratch(H1_RESPONSE_HEADERS + 1);
            const char *p = pt_buf_pullup(&conn->in, head_len);
            if (hdrs == NULL || p == NULL) {
                h1c_kill(c, PT_HTTP_RESET_LOCAL);
                return;
            }
            pt_h1_head_t head;
            pt_h1_head_init(&head, hdrs);
            pt_h1_limits_t lim = {.max_head_bytes = H1_RESPONSE_HEAD_MAX,
                                  .max_headers = H1_RESPONSE_HEADERS};
            int rc = pt_h1_parse_response(p, head_len, &head, &lim, c->req_head);
            if (rc < 0) {
                pt_debug("upstream response: %s", head.error_reason ? head.error_reason : "?");
                h1c_kill(c, PT_HTTP_RESET_PROTOCOL_ERROR);
                return;
            }
            int upgrade = head.status == 101 && c->upgrade_req;
            if (head.status >= 100 && head.status < 200 && !upgrade) {
                /* 100 Continue and other interim responses are consumed here. */
                pt_buf_drain(&conn->in, (size_t)rc);
                c->head_scan = 0;
                continue;
            }
            pt_arena_t *a = c->stream.arena;
            pt_http_headers_t *h = pt_arena_alloc(a, sizeof(*h));
            if (h == NULL || head_to_arena(a, &head, p, (size_t)rc) != 0) {
                h1c_kill(c, PT_HTTP_RESET_LOCAL);
                return;
            }
            pt_http_headers_init(h, a);
            char st[4] = {(char)('0' + head.status / 100), (char)('0' + head.status / 10 % 10),
                          (char)('0' + head.status % 10), 0};
            /* A response missing a header (no memory) must not go on: reset instead. */
            int oom = pt_http_headers_add(h, ":status", 7, st, 3) != 0;
            for (unsigned i = 0; i < head.num_headers; i++) {
                const pt_h1_header_t *e = &head.headers[i];
                int hop = hop_kind(e->name, e->name_len);
                if (hop == HOP_ALWAYS || (hop == HOP_UPGRADE_KEPT && !upgrade))
                    continue;
                if (NAME_IS(e, "content-length")) {
                    if (add_content_length(h, e, head.content_length) != 0)
                        oom = 1;
                    continue;
                }
                if (pt_http_headers_add_ref_n(h, e->name, e->name_len, e->value, e->value_len) != 0)
                    oom = 1;
            }
            if (oom) {
                h1c_kill(c, PT_HTTP_RESET_LOCAL);
                return;
            }
            pt_buf_drain(&conn->in, (size_t)rc);
            c->head_scan = 0;
            c->keep_alive = head.keep_alive;
            pt_h1_body_init(&c->body, &head);
            int end_stream = !upgrade && (head.body_mode == PT_H1_BODY_NONE ||
                                          (head.body_mode == PT_H1_BODY_LENGTH &&
                                           head.content_length == 0));
            c->state = upgrade ? H1C_TUNNEL : end_stream ? H1C_DONE : H1C_BODY;
            void *req = c->stream.super.data;
            const pt_http_client_callbacks_t *cb = c->stream.cb;
            if (end_stream) {
                c->active = c->req_done ? 0 : 1;
            }
            cb->on_headers(req, h, end_stream);
            break;
        }
        case H1C_BODY: {
            const char *base, *data;
            size_t dlen;
            ssize_t n = decode_step(&c->body, &conn->in, &base, &data, &dlen);
            if (n < 0) {
                h1c_kill(c, PT_HTTP_RESET_PROTOCOL_ERROR);
                return;
            }
            int trailer = pt_h1_body_has_trailer(&c->body);
            if (trailer) {
                if (c->trailers.arena == NULL)
                    pt_http_headers_init(&c->trailers, c->stream.arena);
                pt_http_headers_add(&c->trailers, c->body.trailer.name, c->body.trailer.name_len,
                                    c->body.trailer.value, c->body.trailer.value_len);
            }
            pt_buf_t payload = {0};
            if (take_payload(&conn->in, base, data, dlen, (size_t)n, &payload) != 0) {
                pt_buf_dispose(&payload);
                h1c_kill(c, PT_HTTP_RESET_CONNECTION_CLOSE);
                return;
            }
            int done = pt_h1_body_done(&c->body);
            if (c->body.mode == PT_H1_BODY_EOF && c->peer_eof && pt_buf_len(&conn->in) == 0) {
                done = 1;
                c->keep_alive = 0;
            }
            void *req = c->stream.super.data;
            const pt_http_client_callbacks_t *cb = c->stream.cb;
            if (done) {
                c->state = H1C_DONE;
                if (c->req_done)
                    c->active = 0; /* both messages complete: the connection is free */
            }
            if (pt_buf_len(&payload) > 0 || (done && c->trailers.count == 0)) {
                cb->on_data(req, &payload, done && c->trailers.count == 0);
                pt_buf_dispose(&payload);
                if (c->destroyed)
                    return;
            }
            if (done && c->trailers.count > 0) {
                pt_http_headers_t *t = pt_arena_alloc(c->stream.arena, sizeof(*t));
                if (t == NULL) {
                    /* The response cannot end whole: reset it (the stream may count as
                     * done already, so not through h1c_kill). */
                    c->state = H1C_DEAD;
                    c->active = 0;
                    c->stream.super.data = NULL;
                    cb->on_reset(req, PT_HTTP_RESET_LOCAL);
                    return;
                }
                *t = c->trailers;
                cb->on_trailers(req, t);
                if (c->destroyed)
                    return;
            }
            if (done)
                return;
            if (n == 0 && dlen == 0 && !trailer) {
                if (c->peer_eof)
                    h1c_kill(c, PT_HTTP_RESET_CONNECTION_CLOSE);
                return;
            }
            if (c->read_disabled > 0)
                return;
            break;
        }
        case H1C_TUNNEL: {
            if (!c->active)
                return;
            int eof = c->peer_eof;
            if (pt_buf_len(&conn->in) == 0 && !eof)
                return;
            pt_buf_t data = {0};
            pt_buf_move(&data, &conn->in);
            void *req = c->stream.super.data;
            const pt_http_client_callbacks_t *cb = c->stream.cb;
            if (eof)
                c->state = H1C_DONE;
            cb->on_data(req, &data, eof);
            pt_buf_dispose(&data);
            return;
        }
        case H1C_DEAD:
            return;
        }
    }
}

static void h1c_on_read(pt_conn_t *conn)
{
    h1_client_t *c = conn->data;
    h1c_enter(c);
    if (conn->flags & PT_CONN_F_EOF)
        c->peer_eof = 1;
    h1c_process(c);
    h1c_leave(c);
}

static void h1c_on_error(pt_conn_t *conn, int status)
{
    h1_client_t *c = conn->data;
    h1c_enter(c);
    h1c_kill(c, status == -ECONNRESET ? PT_HTTP_RESET_REMOTE : PT_HTTP_RESET_CONNECTION_CLOSE);
    h1c_leave(c);
}

static void h1c_on_drain(pt_conn_t *conn)
{
    h1_client_t *c = conn->data;
    h1c_enter(c);
    if (c->above_high && c->active) {
        c->above_high = 0;
        c->stream.cb->on_write_watermark(c->stream.super.data, 0);
    }
    h1c_leave(c);
}

static void h1c_on_connect(pt_conn_t *conn, int status)
{
    (void)conn;
    (void)status;
}

static const pt_conn_handler_t h1c_handler = {
    .on_read = h1c_on_read,
    .on_connect = h1c_on_connect,
    .on_drain = h1c_on_drain,
    .on_error = h1c_on_error,
};

static pt_http_client_codec_t *h1c_create(pt_conn_t *conn,
                                          void (*on_closed)(void *, pt_http_client_codec_t *),
                                          void *owner)
{
    h1_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->super.ops = &pt_http1_client_codec;
    c->conn = conn;
    c->on_closed = on_closed;
    c->owner = owner;
    c->stream.codec = c;
    c->state = H1C_IDLE;
    pt_conn_set_handler(conn, &h1c_handler, c);
    pt_conn_resume_read(conn);
    return &c->super;
}

static pt_http_codec_stream_t *h1c_new_stream(pt_http_client_codec_t *codec,
                                              const pt_http_client_callbacks_t *cb, void *req,
                                              pt_arena_t *arena)
{
    h1_client_t *c = (h1_client_t *)codec;
    if (c->destroyed || c->active || (c->state != H1C_IDLE && c->state != H1C_DONE))
        return NULL;
    c->active = 1;
    c->state = H1C_WAIT_HEAD;
    c->req_done = c->req_chunked = c->req_head = c->upgrade_req = 0;
    c->keep_alive = 0;
    c->head_scan = 0;
    c->tunnel_out_done = 0;
    memset(&c->body, 0, sizeof(c->body));
    memset(&c->trailers, 0, sizeof(c->trailers));
    c->stream.super.data = req;
    c->stream.cb = cb;
    c->stream.arena = arena;
    return &c->stream.super;
}

static void h1c_check_watermark(h1_client_t *c)
{
    if (!c->above_high && c->active && (c->conn->flags & PT_CONN_F_ABOVE_HIGH)) {
        c->above_high = 1;
        c->stream.cb->on_write_watermark(c->stream.super.data, 1);
    }
}

/* As h1s_write: the connection fails (and the stream with it, from the next loop turn)
 * rather than send a request with a piece missing. */
static int h1c_write(h1_client_t *c, pt_buf_t *out, int err)
{
    if (err != 0) {
        pt_buf_dispose(out);
        pt_conn_fail(c->conn, -ENOMEM);
        return err;
    }
    pt_conn_write(c->conn, out);
    return 0;
}

static void h1c_encode_headers(pt_http_codec_stream_t *cs, pt_http_headers_t *h, int end_stream)
{
    h1_client_t *c = ((h1_client_stream_t *)cs)->codec;
    if (c->destroyed || c->state == H1C_DEAD)
        return;
    const char *method = pt_http_headers_get(h, ":method");
    const char *path = pt_http_headers_get(h, ":path");
    const char *authority = pt_http_headers_get(h, ":authority");
    if (method == NULL)
        method = "GET";
    if (path == NULL)
        path = "/";
    c->req_head = strcmp(method, "HEAD") == 0;
    const char *conn_hdr = pt_http_headers_get(h, "connection");
    c->upgrade_req = conn_hdr != NULL && pt_h1_token_list_contains(conn_hdr, strlen(conn_hdr), "upgrade") &&
                     pt_http_headers_get(h, "upgrade") != NULL;
    pt_buf_t out = {0};
    int err = pt_buf_append_str(&out, method);
    err |= pt_buf_append(&out, " ", 1);
    err |= pt_buf_append_str(&out, path);
    err |= pt_buf_append(&out, " HTTP/1.1\r\n", 11);
    if (authority != NULL) {
        err |= pt_buf_append(&out, "host: ", 6);
        err |= pt_buf_append_str(&out, authority);
        err |= pt_buf_append(&out, "\r\n", 2);
    }
    err |= write_headers(&out, h, c->upgrade_req);
    if (pt_http_headers_get(h, "content-length") == NULL && !c->upgrade_req) {
        if (!end_stream) {
            err |= pt_buf_append_str(&out, "transfer-encoding: chunked\r\n");
            c->req_chunked = 1;
        } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                   strcmp(method, "PATCH") == 0) {
            err |= pt_buf_append_str(&out, "content-length: 0\r\n");
        }
    }
    err |= pt_buf_append(&out, "\r\n", 2);
    if (h1c_write(c, &out, err) != 0)
        return;
    if (end_stream && !c->upgrade_req)
        c->req_done = 1;
    h1c_check_watermark(c);
}

static void h1c_encode_data(pt_http_codec_stream_t *cs, pt_buf_t *data, int end_stream)
{
    h1_client_t *c = ((h1_client_stream_t *)cs)->codec;
    if (c->destroyed || c->state == H1C_DEAD || (c->req_done && c->state != H1C_TUNNEL)) {
        pt_buf_dispose(data);
        return;
    }
    if (c->upgrade_req) {
        /* Tunnel bytes (before or after the 101) go as they are. */
        pt_conn_write(c->conn, data);
        if (end_stream && !c->tunnel_out_done) {
            c->tunnel_out_done = 1;
            pt_conn_shutdown(c->conn);
        }
        h1c_check_watermark(c);
        return;
    }
    size_t n = pt_buf_len(data);
    if (c->req_chunked) {
        pt_buf_t out = {0};
        int err = 0;
        if (n > 0) {
            err |= append_chunk_size(&out, n);
            pt_buf_move(&out, data);
            err |= pt_buf_append(&out, "\r\n", 2);
        }
        if (end_stream)
            err |= pt_buf_append_str(&out, "0\r\n\r\n");
        if (h1c_write(c, &out, err) != 0)
            return;
    } else {
        pt_conn_write(c->conn, data);
    }
    if (end_stream) {
        c->req_done = 1;
        if (c->state == H1C_DONE)
            c->active = 0;
    }
    h1c_check_watermark(c);
}

static void h1c_encode_trailers(pt_http_codec_stream_t *cs, pt_http_headers_t *t)
{
    h1_client_t *c = ((h1_client_stream_t *)cs)->codec;
    if (c->destroyed || c->state == H1C_DEAD || c->req_done)
        return;
    pt_buf_t out = {0};
    if (c->req_chunked) {
        int err = pt_buf_append_str(&out, "0\r\n");
        err |= write_headers(&out, t, 0);
        err |= pt_buf_append(&out, "\r\n", 2);
        if (h1c_write(c, &out, err) != 0)
            return;
    }
    c->req_done = 1;
    if (c->state == H1C_DONE)
        c->active = 0;
}

static void h1c_reset_stream(pt_http_codec_stream_t *cs)
{
    h1_client_t *c = ((h1_client_stream_t *)cs)->codec;
    c->active = 0;
    c->stream.super.data = NULL;
    c->state = H1C_DEAD;
}

static void h1c_read_disable(pt_http_codec_stream_t *cs, int disable)
{
    h1_client_t *c = ((h1_client_stream_t *)cs)->codec;
    if (c->destroyed || c->conn == NULL)
        return;
    int before = c->read_disabled;
    c->read_disabled += disable ? 1 : -1;
    if (c->read_disabled < 0)
        c->read_disabled = 0;
    if (c->read_disabled > 0)
        pt_conn_pause_read(c->conn);
    else
        pt_conn_resume_read(c->conn);
    if (before > 0 && c->read_disabled == 0 && pt_buf_len(&c->conn->in) > 0)
        pt_conn_schedule_read(c->conn);
}

static void h1c_upgrade(pt_http_codec_stream_t *cs)
{
    (void)cs;
}

static int h1c_reusable(pt_http_client_codec_t *codec)
{
    h1_client_t *c = (h1_client_t *)codec;
    if (!c->destroyed && !c->active && c->state == H1C_IDLE && c->conn != NULL &&
        !(c->conn->flags & (PT_CONN_F_ERROR | PT_CONN_F_CLOSED | PT_CONN_F_EOF)))
        return 1; /* never used (handed back untouched) */
    return !c->destroyed && c->state == H1C_DONE && c->req_done && c->keep_alive &&
           !c->peer_eof && pt_buf_len(&c->conn->in) == 0 &&
           !(c->conn->flags & (PT_CONN_F_ERROR | PT_CONN_F_CLOSED | PT_CONN_F_EOF));
}

static unsigned h1c_capacity(pt_http_client_codec_t *codec)
{
    h1_client_t *c = (h1_client_t *)codec;
    return !c->active && (c->state == H1C_IDLE || h1c_reusable(codec)) ? 1 : 0;
}

/* Releases the codec; the caller closes the connection (or already did). */
static void h1c_destroy(pt_http_client_codec_t *codec)
{
    h1_client_t *c = (h1_client_t *)codec;
    if (c->destroyed)
        return;
    c->destroyed = 1;
    c->active = 0;
    c->stream.super.data = NULL;
    if (c->conn != NULL && !(c->conn->flags & PT_CONN_F_CLOSED))
        pt_conn_set_handler(c->conn, NULL, NULL);
    c->conn = NULL;
    if (c->depth == 0)
        free(c);
}

const pt_http_client_codec_ops_t pt_http1_client_codec = {
    .protocol = "HTTP/1.1",
    .create = h1c_create,
    .new_stream = h1c_new_stream,
    .encode_headers = h1c_encode_headers,
    .encode_data = h1c_encode_data,
    .encode_trailers = h1c_encode_trailers,
    .reset_stream = h1c_reset_stream,
    .read_disable = h1c_read_disable,
    .upgrade = h1c_upgrade,
    .reusable = h1c_reusable,
    .capacity = h1c_capacity,
    .destroy = h1c_destroy,
};
