/* The HTTP/2 server codec (RFC 9113) on nghttp2.
 *
 * One nghttp2 server session per downstream connection. Bytes read go through
 * nghttp2_session_mem_recv; what the session has to send is pulled with
 * nghttp2_session_mem_send into the connection's write queue, which is written at the end
 * of the loop turn. Each request stream is an h2_stream_t known to nghttp2 as the stream's
 * user data; the owner (the connection manager) gets its stream object through
 * on_new_stream and sees headers, data, trailers and resets through its callbacks.
 *
 * Flow control is manual (automatic WINDOW_UPDATE off): request body bytes are handed to
 * the owner and only then consumed (nghttp2_session_consume), so a stream whose consumer
 * called read_disable holds what arrives and withholds window until it resumes; the peer
 * can never have more in flight than the window. Response bodies wait in the stream's
 * buffer until the peer's window lets the data provider take them; while the connection's
 * write queue is above its high watermark the provider defers, so a slow reader pushes back
 * on every stream.
 *
 * Abuse limits follow Envoy's Http2ProtocolOptions: frames queued and not yet written
 * (outbound, and the control frames among them), consecutive inbound frames with an empty
 * payload, PRIORITY frames per opened stream, WINDOW_UPDATE frames per DATA frame sent. A
 * flood ends the connection (GOAWAY ENHANCE_YOUR_CALM for inbound ones; the queue the peer
 * does not read is dropped for outbound ones) and counts http2.<kind>_flood.
 *
 * Re-entrancy: nghttp2 must not be re-entered from its own callbacks, and the owner may
 * call any op (even close) from a callback. `depth` counts the frames on the stack; sends
 * happen only at depth 0 and the codec is freed when the last frame leaves. */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http_codec.h"
#include "proxy/log.h"
#include "proxy/random.h"
#include "proxy/time.h"
#include "proxy/worker.h"

typedef struct h2_server h2_server_t;

typedef struct h2_stream {
    pt_http_codec_stream_t super; /* super.data: the owner's stream; NULL once released */
    h2_server_t *codec;
    int32_t id;
    pt_arena_t *arena;
    pt_http_headers_t *headers; /* the request headers, then the trailers, being received */
    size_t header_bytes;
    pt_buf_t out;             /* response body waiting for window */
    pt_buf_t in;              /* request body held while the consumer is read-disabled */
    nghttp2_nv *trailers_out; /* response trailers to send after `out` (malloc'ed) */
    size_t ntrailers_out;
    int read_disabled;
    unsigned got_headers : 1; /* the request headers were delivered */
    unsigned in_end : 1;      /* END_STREAM received */
    unsigned in_end_delivered : 1;
    unsigned head_request : 1;
    unsigned resp_started : 1;
    unsigned out_end : 1;    /* the owner ended the response (data or trailers) */
    unsigned deferred : 1;   /* the data provider waits for `out` or the watermark */
    unsigned above_high : 1; /* the owner was told "above" */
    unsigned rejected : 1;   /* refused while its headers arrived; reset by nghttp2 */
    unsigned ext_connect : 1; /* an extended CONNECT (RFC 8441), seen by the owner as an
                                 upgrade: its 101 goes out as a 200 */
    struct h2_stream *prev, *next;
} h2_stream_t;

struct h2_server {
    pt_http_server_codec_t super;
    pt_conn_t *conn;
    nghttp2_session *session;
    const pt_http_server_settings_t *settings;
    const pt_http2_options_t *opt;
    const pt_http2_stats_t *stats;
    const pt_http_server_callbacks_t *cb;
    void *owner;
    h2_stream_t *streams;
    unsigned nstreams;
    int depth;
    /* Abuse accounting (Envoy's ProtocolConstraints). */
    uint32_t outbound_frames, outbound_control_frames;
    uint32_t consecutive_empty;
    uint64_t inbound_priority, inbound_window_update, opened_streams, outbound_data_frames;
    pt_stat_t flood;      /* the flood counter that fired, or 0 */
    ev_timer drain_timer; /* first GOAWAY -> final GOAWAY */
    ev_timer ping_timer;  /* connection_keepalive: interval, then timeout */
    unsigned ping_outstanding : 1;
    unsigned shutdown_noticed : 1;
    unsigned goaway_final : 1;
    unsigned closed : 1;      /* the owner closed the codec */
    unsigned conn_closed : 1; /* we closed the connection ourselves */
    unsigned lost : 1;        /* the owner was told the connection is gone */
    unsigned notify_pending : 1;
    unsigned conn_above : 1;      /* the write queue is above its high watermark */
    unsigned held_pending : 1;    /* a stream has held body to deliver */
    unsigned wm_dirty : 1;        /* a stream's buffer shrank: recheck its watermark */
    unsigned budget_deferred : 1; /* a body waits for the queue to drain (h2_flush) */
    size_t sending;               /* bytes produced by the send under way (h2_flush) */
    pt_defer_t notify;
};

static void h2_flush(h2_server_t *s);
static void h2_connection_lost(h2_server_t *s, pt_http_reset_reason_t reason);

/* ---- life cycle ------------------------------------------------------------------ */

static void stream_free(h2_stream_t *st)
{
    pt_buf_dispose(&st->out);
    pt_buf_dispose(&st->in);
    free(st->trailers_out);
    free(st);
}

static void h2_free(h2_server_t *s)
{
    if (s->session != NULL)
        nghttp2_session_del(s->session); /* streams are freed below, not by callbacks */
    s->session = NULL;
    while (s->streams != NULL) {
        h2_stream_t *st = s->streams;
        s->streams = st->next;
        stream_free(st);
    }
    free(s);
}

static void h2_enter(h2_server_t *s)
{
    s->depth++;
}

/* Returns 1 when the codec is gone or closed (the caller returns at once). */
static int h2_leave(h2_server_t *s)
{
    if (--s->depth == 0 && s->closed && !s->notify_pending) {
        h2_free(s);
        return 1;
    }
    return s->closed;
}

static void h2_stop_timers(h2_server_t *s)
{
    struct ev_loop *loop = s->conn->worker->loop;
    ev_timer_stop(loop, &s->drain_timer);
    ev_timer_stop(loop, &s->ping_timer);
}

static void h2_notify_closed(pt_defer_t *d)
{
    h2_server_t *s = (h2_server_t *)((char *)d - offsetof(h2_server_t, notify));
    s->notify_pending = 0;
    s->depth++;
    if (!s->closed)
        h2_connection_lost(s, PT_HTTP_RESET_CONNECTION_CLOSE);
    s->depth--;
    if (s->closed && s->depth == 0)
        h2_free(s);
}

/* The codec ends the connection itself (GOAWAY done, a flood, a fatal protocol error): close
 * it and tell the owner from the next loop turn, outside its call stack. */
static void h2_close_conn(h2_server_t *s, pt_close_how_t how)
{
    if (s->conn_closed || s->closed)
        return;
    s->conn_closed = 1;
    h2_stop_timers(s);
    pt_conn_close(s->conn, how);
    s->notify_pending = 1;
    pt_worker_defer(s->conn->worker, &s->notify);
}

/* Every stream still open loses its connection; then the owner hears of it. */
static void h2_connection_lost(h2_server_t *s, pt_http_reset_reason_t reason)
{
    if (s->closed || s->lost)
        return;
    s->lost = 1;
    for (h2_stream_t *st = s->streams; st != NULL && !s->closed; st = st->next) {
        void *os = st->super.data;
        st->super.data = NULL;
        if (os != NULL)
            s->cb->on_reset(os, reason);
    }
    if (!s->closed)
        s->cb->on_connection_closed(s->owner);
}

/* ---- watermarks ------------------------------------------------------------------ */

/* A stream is above its watermark while the connection's write queue is, or while its own
 * response buffer (waiting for window) holds more than the connection's limit. */
static void stream_update_watermark(h2_server_t *s, h2_stream_t *st)
{
    if (st->super.data == NULL || s->closed)
        return;
    size_t limit = s->conn->high_watermark;
    size_t len = pt_buf_len(&st->out);
    int above = s->conn_above || len > limit;
    if (st->above_high && !s->conn_above && len > limit / 2)
        above = 1; /* hysteresis: back below at half the limit */
    if (above == (int)st->above_high)
        return;
    st->above_high = above ? 1 : 0;
    s->cb->on_write_watermark(s->owner, st->super.data, above);
}

static void update_watermarks(h2_server_t *s)
{
    int conn_above = (s->conn->flags & PT_CONN_F_ABOVE_HIGH) != 0;
    if (conn_above == (int)s->conn_above && !s->wm_dirty)
        return;
    s->conn_above = conn_above ? 1 : 0;
    s->wm_dirty = 0;
    h2_stream_t *next;
    for (h2_stream_t *st = s->streams; st != NULL && !s->closed; st = next) {
        next = st->next;
        stream_update_watermark(s, st);
    }
}

/* ---- sending --------------------------------------------------------------------- */

static void count_flood(h2_server_t *s, pt_stat_t stat, const char *what)
{
    if (s->flood == 0) {
        s->flood = stat ? stat : 1;
        pt_stat_inc(stat);
        pt_debug("http2: %s; closing the connection", what);
    }
}

/* Writes a GOAWAY by hand: used when the session can no longer produce one. */
static void write_goaway(h2_server_t *s, uint32_t code)
{
    int32_t last = nghttp2_session_get_last_proc_stream_id(s->session);
    unsigned char f[17] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};
    f[9] = (unsigned char)((uint32_t)last >> 24 & 0x7f);
    f[10] = (unsigned char)((uint32_t)last >> 16);
    f[11] = (unsigned char)((uint32_t)last >> 8);
    f[12] = (unsigned char)last;
    f[13] = (unsigned char)(code >> 24);
    f[14] = (unsigned char)(code >> 16);
    f[15] = (unsigned char)(code >> 8);
    f[16] = (unsigned char)code;
    pt_conn_write_bytes(s->conn, f, sizeof(f));
    pt_stat_inc(s->stats->goaway_sent);
}

/* Sends what the session has queued, then acts on the session's state: a finished session
 * (GOAWAY sent and no stream left, or a fatal error) closes the connection. */
static void h2_flush(h2_server_t *s)
{
    if (s->depth > 0 || s->closed || s->conn_closed || s->lost)
        return;
    pt_conn_t *c = s->conn;
    h2_enter(s);
    /* Frames queued and not yet written: what is still in the write queue when it did not
     * drain since the last send (an upper bound, as the queue holds bytes, not frames). */
    if (pt_conn_queued(c) == 0)
        s->outbound_frames = s->outbound_control_frames = 0;
    pt_buf_t out = {0};
    int err = 0;
    ssize_t n = 0;
    s->sending = 0;
    for (;;) {
        const uint8_t *p;
        n = nghttp2_session_mem_send(s->session, &p);
        if (n <= 0)
            break;
        if (pt_buf_append(&out, p, (size_t)n) != 0) {
            err = -ENOMEM;
            break;
        }
        s->sending = pt_buf_len(&out);
        if (s->closed)
            break;
    }
    s->sending = 0;
    if (s->closed) {
        pt_buf_dispose(&out);
        h2_leave(s);
        return;
    }
    if (s->flood != 0) {
        /* The peer does not read what it makes us send: drop the queue and close. */
        pt_buf_dispose(&out);
        h2_close_conn(s, PT_CLOSE_NOW);
        h2_leave(s);
        return;
    }
    if (err != 0 || n < 0) {
        pt_buf_dispose(&out);
        h2_close_conn(s, PT_CLOSE_RESET);
        h2_leave(s);
        return;
    }
    if (pt_buf_len(&out) > 0)
        pt_conn_write(c, &out);
    if (s->budget_deferred) {
        /* Bodies wait for the queue to go down (whether or not it went above its high
         * watermark, which alone would bring on_drain). */
        s->budget_deferred = 0;
        pt_conn_drain_to(c, c->high_watermark / 2);
    }
    if (!nghttp2_session_want_read(s->session) && !nghttp2_session_want_write(s->session)) {
        h2_close_conn(s, PT_CLOSE_FLUSH);
        h2_leave(s);
        return;
    }
    update_watermarks(s);
    h2_leave(s);
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    (void)session, (void)stream_id;
    h2_server_t *s = user_data;
    h2_stream_t *st = source->ptr;
    size_t have = pt_buf_len(&st->out);
    if (have == 0 && !st->out_end) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (have > 0 && ((s->conn->flags & PT_CONN_F_ABOVE_HIGH) ||
                     pt_conn_queued(s->conn) + s->sending >= s->conn->high_watermark)) {
        /* The peer reads slowly, or this send has produced enough: the body stays here
         * until the queue drains (on_drain), so one send never queues more than the
         * connection's limit, whatever windows the peer grants. */
        st->deferred = 1;
        if (!(s->conn->flags & PT_CONN_F_ABOVE_HIGH))
            s->budget_deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = have < length ? have : length;
    if (n > 0) {
        pt_buf_copyout(&st->out, 0, buf, n);
        pt_buf_drain(&st->out, n);
        if (st->above_high)
            s->wm_dirty = 1;
    }
    if (pt_buf_len(&st->out) == 0 && st->out_end) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->trailers_out != NULL) {
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(s->session, st->id, st->trailers_out, st->ntrailers_out) !=
                0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    }
    return (ssize_t)n;
}

/* ---- receiving ------------------------------------------------------------------- */

static h2_stream_t *stream_of(h2_server_t *s, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(s->session, id) : NULL;
}

/* Envoy's inbound checks, after each frame. Returns 0 or NGHTTP2_ERR_CALLBACK_FAILURE. */
static int check_inbound(h2_server_t *s)
{
    const pt_http2_options_t *o = s->opt;
    if (s->consecutive_empty > o->max_consecutive_inbound_frames_with_empty_payload) {
        count_flood(s, s->stats->inbound_empty_frames_flood,
                    "too many consecutive frames with an empty payload");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (s->inbound_priority >
        (uint64_t)o->max_inbound_priority_frames_per_stream * (1 + s->opened_streams)) {
        count_flood(s, s->stats->inbound_priority_frames_flood, "too many PRIORITY frames");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (s->inbound_window_update >
        5 + 2 * (s->opened_streams +
                 (uint64_t)o->max_inbound_window_update_frames_per_data_frame_sent *
                     s->outbound_data_frames)) {
        count_flood(s, s->stats->inbound_window_update_frames_flood,
                    "too many WINDOW_UPDATE frames");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data)
{
    (void)session;
    h2_server_t *s = user_data;
    if (hd->type == NGHTTP2_PRIORITY)
        s->inbound_priority++;
    else if (hd->type == NGHTTP2_WINDOW_UPDATE)
        s->inbound_window_update++;
    else if (hd->type == NGHTTP2_CONTINUATION && hd->length == 0)
        /* An empty CONTINUATION never reaches on_frame_recv (nghttp2 delivers the header
         * block once): counted here, as Envoy counts it among the empty frames. */
        s->consecutive_empty++;
    else
        return 0;
    return check_inbound(s);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    h2_server_t *s = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* Trailers: a new map in the stream's arena. */
        h2_stream_t *st = stream_of(s, frame->hd.stream_id);
        if (st == NULL || st->super.data == NULL || st->arena == NULL)
            return 0;
        st->headers = pt_arena_alloc(st->arena, sizeof(*st->headers));
        if (st->headers == NULL)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        pt_http_headers_init(st->headers, st->arena);
        st->header_bytes = 0;
        return 0;
    }
    s->opened_streams++;
    h2_stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    st->codec = s;
    st->id = frame->hd.stream_id;
    st->next = s->streams;
    if (s->streams != NULL)
        s->streams->prev = st;
    s->streams = st;
    s->nstreams++;
    nghttp2_session_set_stream_user_data(session, st->id, st);
    void *os =
        s->shutdown_noticed && s->goaway_final ? NULL : s->cb->on_new_stream(s->owner, &st->super);
    if (s->closed)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (os == NULL || st->arena == NULL) {
        /* Refused (no memory, or the owner is going away): REFUSED_STREAM lets the client
         * retry elsewhere. The owner's stream, if any, is not told: it never started. */
        st->super.data = NULL;
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return 0; /* its header fields are decoded (HPACK state) and dropped */
    }
    st->super.data = os;
    st->headers = pt_arena_alloc(st->arena, sizeof(*st->headers));
    if (st->headers == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    pt_http_headers_init(st->headers, st->arena);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)session, (void)flags;
    h2_server_t *s = user_data;
    h2_stream_t *st = stream_of(s, frame->hd.stream_id);
    if (st == NULL || st->super.data == NULL || st->headers == NULL)
        return 0;
    const pt_http_server_settings_t *set = s->settings;
    st->header_bytes += namelen + valuelen;
    if (st->header_bytes > (size_t)set->max_request_headers_kb * 1024 ||
        st->headers->count + 1 > set->max_headers_count) {
        pt_stat_inc(s->stats->header_overflow);
        st->rejected = 1;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
    }
    if (set->headers_with_underscores_action != 0 && namelen > 0 && name[0] != ':' &&
        memchr(name, '_', namelen) != NULL) {
        if (set->headers_with_underscores_action == 2)
            return 0; /* DROP_HEADER */
        /* REJECT_REQUEST: an HTTP/2 request ends with a stream reset (Envoy). */
        pt_stat_inc(s->stats->requests_rejected_with_underscores_in_headers);
        st->rejected = 1;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (pt_http_headers_add(st->headers, (const char *)name, namelen, (const char *)value,
                            valuelen) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* HTTP/2 splits cookies into one field each (RFC 9113 8.2.3); an HTTP/1 upstream wants one
 * header: they are joined with "; ". Host without :authority becomes :authority. */
static int finish_request_headers(h2_stream_t *st, pt_http_headers_t *h)
{
    if (pt_http_headers_count(h, "cookie") > 1) {
        size_t total = 0;
        for (uint32_t i = 0; i < h->count; i++)
            if (h->items[i].name_len == 6 && memcmp(h->items[i].name, "cookie", 6) == 0)
                total += h->items[i].value_len + 2;
        char *v = pt_arena_alloc(st->arena, total + 1), *p = v;
        if (v == NULL)
            return -ENOMEM;
        for (uint32_t i = 0; i < h->count; i++) {
            const pt_http_header_t *e = &h->items[i];
            if (e->name_len != 6 || memcmp(e->name, "cookie", 6) != 0)
                continue;
            if (p != v) {
                *p++ = ';';
                *p++ = ' ';
            }
            memcpy(p, e->value, e->value_len);
            p += e->value_len;
        }
        *p = '\0';
        if (pt_http_headers_set_ref(h, "cookie", v) != 0)
            return -ENOMEM;
    }
    const char *host = pt_http_headers_get(h, "host");
    if (host != NULL) {
        if (pt_http_headers_get(h, ":authority") == NULL &&
            pt_http_headers_add_str(h, ":authority", host) != 0)
            return -ENOMEM;
        pt_http_headers_remove(h, "host");
    }
    const char *method = pt_http_headers_get(h, ":method");
    st->head_request = method != NULL && strcmp(method, "HEAD") == 0;
    return 0;
}

/* An extended CONNECT (RFC 8441: CONNECT with :protocol, which nghttp2 accepts only once
 * SETTINGS_ENABLE_CONNECT_PROTOCOL was sent) becomes what an HTTP/1.1 client would have
 * sent, as Envoy maps it: GET with "upgrade: <protocol>" and "connection: upgrade", so the
 * upgrade_configs, the routes and an HTTP/1.1 upstream see an ordinary upgrade. */
static int map_extended_connect(h2_stream_t *st, pt_http_headers_t *h)
{
    const char *protocol = pt_http_headers_get(h, ":protocol");
    if (protocol == NULL)
        return 0;
    if (pt_http_headers_set_ref(h, ":method", "GET") != 0 ||
        pt_http_headers_set(h, "upgrade", protocol) != 0 ||
        pt_http_headers_set_ref(h, "connection", "upgrade") != 0)
        return -ENOMEM;
    pt_http_headers_remove(h, ":protocol");
    st->ext_connect = 1;
    return 0;
}

/* Hands the body held for a read-disabled stream to its owner, then gives the window back. */
static void deliver_held(h2_server_t *s, h2_stream_t *st)
{
    if (st->super.data == NULL || st->read_disabled > 0)
        return;
    size_t n = pt_buf_len(&st->in);
    int end = st->in_end && !st->in_end_delivered && st->headers == NULL;
    if (n == 0 && !end)
        return;
    pt_buf_t data = {0};
    pt_buf_move(&data, &st->in);
    if (end)
        st->in_end_delivered = 1;
    s->cb->on_data(st->super.data, &data, end);
    pt_buf_dispose(&data);
    if (!s->closed && n > 0 && s->session != NULL)
        nghttp2_session_consume(s->session, st->id, n);
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    h2_server_t *s = user_data;
    h2_stream_t *st = stream_of(s, stream_id);
    if (st == NULL || st->super.data == NULL) {
        nghttp2_session_consume(session, stream_id, len); /* nobody wants it */
        return 0;
    }
    if (st->read_disabled > 0 || pt_buf_len(&st->in) > 0) {
        /* Held: the window stays withheld until the consumer takes it. */
        if (pt_buf_append(&st->in, data, len) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return 0;
    }
    pt_buf_t b = {0};
    if (pt_buf_append(&b, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->cb->on_data(st->super.data, &b, 0);
    pt_buf_dispose(&b);
    if (s->closed)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    nghttp2_session_consume(session, stream_id, len);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    h2_server_t *s = user_data;
    const nghttp2_frame_hd *hd = &frame->hd;
    int end = (hd->flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (hd->type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS: {
        size_t pad = hd->type == NGHTTP2_DATA ? frame->data.padlen : frame->headers.padlen;
        size_t payload = hd->length > pad ? hd->length - pad : 0;
        if (hd->type == NGHTTP2_HEADERS)
            payload = frame->headers.nvlen > 0 ? 1 : payload;
        if (payload == 0 && !end)
            s->consecutive_empty++;
        else
            s->consecutive_empty = 0;
        if (check_inbound(s) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        break;
    }
    case NGHTTP2_RST_STREAM:
        pt_stat_inc(s->stats->rx_reset);
        return 0;
    case NGHTTP2_PING:
        if ((hd->flags & NGHTTP2_FLAG_ACK) && s->ping_outstanding) {
            /* Keepalive answered: the next PING after the interval. */
            s->ping_outstanding = 0;
            struct ev_loop *loop = s->conn->worker->loop;
            ev_timer_stop(loop, &s->ping_timer);
            uint64_t ms = s->opt->keepalive_interval_ms;
            if (s->opt->keepalive_jitter_pct > 0 && ms > 0)
                ms += pt_random_below(ms * s->opt->keepalive_jitter_pct / 100 + 1);
            ev_timer_set(&s->ping_timer, (double)ms / 1000.0, 0.);
            ev_timer_start(loop, &s->ping_timer);
        }
        return 0;
    default:
        s->consecutive_empty = 0;
        return 0;
    }
    h2_stream_t *st = stream_of(s, hd->stream_id);
    if (st == NULL || st->super.data == NULL)
        return 0;
    if (hd->type == NGHTTP2_HEADERS) {
        if (!st->got_headers) {
            st->got_headers = 1;
            pt_http_headers_t *h = st->headers;
            st->headers = NULL;
            if (end)
                st->in_end = st->in_end_delivered = 1;
            if (finish_request_headers(st, h) != 0 || map_extended_connect(st, h) != 0) {
                nghttp2_submit_rst_stream(s->session, NGHTTP2_FLAG_NONE, st->id,
                                          NGHTTP2_INTERNAL_ERROR);
                return 0;
            }
            /* A CONNECT (RFC 9113 8.5; nghttp2 checked its form) goes to the owner like any
             * request: upgrade_configs CONNECT decide, and a 2xx makes the stream a tunnel. */
            s->cb->on_headers(st->super.data, h, end);
        } else {
            /* Trailers (nghttp2 checked they end the stream). */
            pt_http_headers_t *t = st->headers;
            st->headers = NULL;
            st->in_end = 1;
            if (t == NULL)
                return 0;
            if (pt_buf_len(&st->in) > 0 || st->read_disabled > 0) {
                /* The held body goes first; trailers wait behind it. Rare: deliver now
                 * what is held, as the consumer will see all of it before the end. */
                pt_buf_t data = {0};
                pt_buf_move(&data, &st->in);
                size_t n = pt_buf_len(&data);
                s->cb->on_data(st->super.data, &data, 0);
                pt_buf_dispose(&data);
                if (s->closed)
                    return NGHTTP2_ERR_CALLBACK_FAILURE;
                nghttp2_session_consume(s->session, st->id, n);
                if (st->super.data == NULL)
                    return 0;
            }
            st->in_end_delivered = 1;
            s->cb->on_trailers(st->super.data, t);
        }
        return s->closed ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
    }
    /* DATA: the bytes came through on_data_chunk; here only the end. */
    if (end) {
        st->in_end = 1;
        if (st->read_disabled == 0 && pt_buf_len(&st->in) == 0) {
            st->in_end_delivered = 1;
            pt_buf_t empty = {0};
            s->cb->on_data(st->super.data, &empty, 1);
        }
    }
    return s->closed ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/* nghttp2 found a request it must refuse (a bad header, missing pseudo-headers, a body
 * that contradicts content-length...). As Envoy: the whole connection ends unless
 * override_stream_error_on_invalid_http_message, which resets only that stream. */
static int on_invalid_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                                 int lib_error_code, void *user_data)
{
    (void)session;
    h2_server_t *s = user_data;
    pt_debug("http2: invalid frame on stream %d: %s", frame->hd.stream_id,
             nghttp2_strerror(lib_error_code));
    if (lib_error_code == NGHTTP2_ERR_HTTP_HEADER || lib_error_code == NGHTTP2_ERR_HTTP_MESSAGING) {
        pt_stat_inc(s->stats->rx_messaging_error);
        if (s->opt->override_stream_error)
            return 0;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    h2_server_t *s = user_data;
    h2_stream_t *st = stream_of(s, stream_id);
    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    void *os = st->super.data;
    st->super.data = NULL;
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    s->nstreams--;
    if (os != NULL) {
        /* Closed before the owner finished with it: a reset, by the peer or by nghttp2. */
        pt_http_reset_reason_t why = error_code == NGHTTP2_REFUSED_STREAM ||
                                             error_code == NGHTTP2_CANCEL ||
                                             error_code == NGHTTP2_NO_ERROR
                                         ? PT_HTTP_RESET_REMOTE
                                         : PT_HTTP_RESET_PROTOCOL_ERROR;
        if (st->rejected)
            why = PT_HTTP_RESET_OVERFLOW;
        s->cb->on_reset(os, why);
    }
    if (pt_buf_len(&st->in) > 0 && !s->closed)
        nghttp2_session_consume_connection(session, pt_buf_len(&st->in));
    stream_free(st);
    return s->closed ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int before_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    h2_server_t *s = user_data;
    uint8_t t = frame->hd.type;
    s->outbound_frames++;
    if (t == NGHTTP2_PING || t == NGHTTP2_SETTINGS || t == NGHTTP2_RST_STREAM)
        s->outbound_control_frames++;
    if (s->outbound_control_frames > s->opt->max_outbound_control_frames) {
        count_flood(s, s->stats->outbound_control_flood,
                    "too many control frames in the outbound queue");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (s->outbound_frames > s->opt->max_outbound_frames) {
        count_flood(s, s->stats->outbound_flood, "too many frames in the outbound queue");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    h2_server_t *s = user_data;
    switch (frame->hd.type) {
    case NGHTTP2_DATA:
        s->outbound_data_frames++;
        break;
    case NGHTTP2_RST_STREAM:
        pt_stat_inc(s->stats->tx_reset);
        return 0;
    case NGHTTP2_GOAWAY:
        pt_stat_inc(s->stats->goaway_sent);
        return 0;
    default:
        break;
    }
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0) {
        /* The response is complete before the request: the rest of it is not wanted
         * (RFC 9113 8.1). */
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* ---- connection handler ------------------------------------------------------------ */

static void h2_fail(h2_server_t *s, uint32_t code)
{
    if (s->flood != 0 && code == NGHTTP2_PROTOCOL_ERROR)
        code = NGHTTP2_ENHANCE_YOUR_CALM;
    write_goaway(s, code);
    h2_close_conn(s, PT_CLOSE_FLUSH);
}

static void h2_on_read(pt_conn_t *c)
{
    h2_server_t *s = c->data;
    h2_enter(s);
    if (s->held_pending) {
        s->held_pending = 0;
        h2_stream_t *next;
        for (h2_stream_t *st = s->streams; st != NULL && !s->closed; st = next) {
            next = st->next;
            deliver_held(s, st);
        }
        if (s->closed) {
            h2_leave(s);
            return;
        }
    }
    while (pt_buf_len(&c->in) > 0 && !s->closed && !s->conn_closed && !s->lost) {
        size_t len;
        const char *p = pt_buf_peek(&c->in, &len);
        ssize_t n = nghttp2_session_mem_recv(s->session, (const uint8_t *)p, len);
        if (s->closed)
            break;
        if (n < 0) {
            pt_buf_drain(&c->in, pt_buf_len(&c->in));
            pt_debug("http2: %s", nghttp2_strerror((int)n));
            if (n == NGHTTP2_ERR_FLOODED)
                count_flood(s, s->stats->outbound_control_flood,
                            "too many control frames in the outbound queue");
            if (s->flood != 0) {
                h2_fail(s, NGHTTP2_ENHANCE_YOUR_CALM);
            } else if (n == NGHTTP2_ERR_BAD_CLIENT_MAGIC || n == NGHTTP2_ERR_CALLBACK_FAILURE ||
                       n == NGHTTP2_ERR_PROTO || n == NGHTTP2_ERR_NOMEM) {
                /* A fatal error (a bad preface, a request that ends the connection): the
                 * session cannot say it any more, so the GOAWAY is written here. */
                write_goaway(s, n == NGHTTP2_ERR_NOMEM ? NGHTTP2_INTERNAL_ERROR
                                                       : NGHTTP2_PROTOCOL_ERROR);
                s->cb->on_protocol_error(s->owner, NULL, 400, "http2 protocol error");
                if (!s->closed)
                    h2_close_conn(s, PT_CLOSE_FLUSH);
            } else {
                /* nghttp2 queued its own GOAWAY (a connection error it detected). */
                s->cb->on_protocol_error(s->owner, NULL, 400, nghttp2_strerror((int)n));
                if (!s->closed) {
                    s->depth--;
                    h2_flush(s);
                    s->depth++;
                    h2_close_conn(s, PT_CLOSE_FLUSH);
                }
            }
            break;
        }
        pt_buf_drain(&c->in, (size_t)n);
    }
    if (!s->closed && !s->conn_closed && !s->lost && (c->flags & PT_CONN_F_EOF)) {
        /* The peer closed: what it asked for cannot be answered. */
        h2_connection_lost(s, PT_HTTP_RESET_CONNECTION_CLOSE);
    }
    if (h2_leave(s))
        return;
    h2_flush(s);
}

static void h2_on_error(pt_conn_t *c, int status)
{
    h2_server_t *s = c->data;
    h2_enter(s);
    h2_connection_lost(s, status == -ECONNRESET ? PT_HTTP_RESET_REMOTE
                                                : PT_HTTP_RESET_CONNECTION_CLOSE);
    h2_leave(s);
}

static void h2_on_drain(pt_conn_t *c)
{
    h2_server_t *s = c->data;
    if (s->closed || s->conn_closed || s->lost)
        return;
    h2_enter(s);
    /* The queue went below its low watermark: deferred bodies may go on. */
    for (h2_stream_t *st = s->streams; st != NULL; st = st->next)
        if (st->deferred && (pt_buf_len(&st->out) > 0 || st->out_end)) {
            st->deferred = 0;
            nghttp2_session_resume_data(s->session, st->id);
        }
    s->wm_dirty = 1;
    if (h2_leave(s))
        return;
    h2_flush(s);
}

static void h2_on_connect(pt_conn_t *c, int status)
{
    (void)c, (void)status;
}

static const pt_conn_handler_t h2_handler = {
    .on_read = h2_on_read,
    .on_connect = h2_on_connect,
    .on_drain = h2_on_drain,
    .on_error = h2_on_error,
};

/* ---- timers ---------------------------------------------------------------------- */

/* The final GOAWAY of a graceful shutdown: streams above its last id are refused, those
 * below finish, and the connection closes once they have (h2_flush). */
static void on_drain_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    h2_server_t *s = t->data;
    if (s->closed || s->conn_closed || s->goaway_final)
        return;
    s->goaway_final = 1;
    nghttp2_submit_goaway(s->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(s->session), NGHTTP2_NO_ERROR,
                          NULL, 0);
    h2_flush(s);
}

static void on_ping_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    h2_server_t *s = t->data;
    if (s->closed || s->conn_closed || s->lost)
        return;
    if (s->ping_outstanding) {
        pt_stat_inc(s->stats->keepalive_timeout);
        pt_debug("http2: keepalive PING not answered; closing the connection");
        h2_close_conn(s, PT_CLOSE_NOW);
        return;
    }
    uint8_t opaque[8];
    uint64_t r = pt_random_u64();
    memcpy(opaque, &r, sizeof(opaque));
    if (nghttp2_submit_ping(s->session, NGHTTP2_FLAG_NONE, opaque) != 0)
        return;
    s->ping_outstanding = 1;
    ev_timer_set(t, (double)s->opt->keepalive_timeout_ms / 1000.0, 0.);
    ev_timer_start(loop, t);
    h2_flush(s);
}

/* ---- ops ------------------------------------------------------------------------- */

static pt_http_server_codec_t *h2s_create(pt_conn_t *c, const pt_http_server_settings_t *settings,
                                          const pt_http_server_callbacks_t *cb, void *owner)
{
    h2_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->super.ops = &pt_http2_server_codec;
    s->conn = c;
    s->settings = settings;
    s->opt = &settings->http2;
    s->stats = &settings->http2_stats;
    s->cb = cb;
    s->owner = owner;
    s->notify.fn = h2_notify_closed;
    const pt_http2_options_t *o = s->opt;

    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_before_frame_send_callback(cbs, before_frame_send);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Our own outbound accounting decides; nghttp2's limit on queued ACKs stays above it. */
    nghttp2_option_set_max_outbound_ack(opt, o->max_outbound_control_frames + 1);
    if (nghttp2_session_server_new2(&s->session, cbs, s, opt) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    cbs = NULL;
    opt = NULL;

    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->initial_stream_window_size},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, o->hpack_table_size},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* only with allow_connect */
    };
    if (nghttp2_submit_settings(s->session, NGHTTP2_FLAG_NONE, iv, o->allow_connect ? 4 : 3) != 0)
        goto fail;
    if (o->initial_connection_window_size > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE &&
        nghttp2_session_set_local_window_size(s->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)o->initial_connection_window_size) != 0)
        goto fail;
    ev_init(&s->drain_timer, on_drain_timer);
    s->drain_timer.data = s;
    ev_init(&s->ping_timer, on_ping_timer);
    s->ping_timer.data = s;
    if (o->keepalive_interval_ms > 0 && o->keepalive_timeout_ms > 0) {
        ev_timer_set(&s->ping_timer, (double)o->keepalive_interval_ms / 1000.0, 0.);
        ev_timer_start(c->worker->loop, &s->ping_timer);
    }
    pt_conn_set_handler(c, &h2_handler, s);
    /* The SETTINGS go out with the first answer, or now if the preface is all there is. */
    if (pt_buf_len(&c->in) > 0)
        pt_conn_schedule_read(c);
    else
        h2_flush(s);
    return &s->super;
fail:
    if (cbs != NULL)
        nghttp2_session_callbacks_del(cbs);
    if (opt != NULL)
        nghttp2_option_del(opt);
    if (s->session != NULL)
        nghttp2_session_del(s->session);
    free(s);
    return NULL;
}

static void h2s_set_stream_arena(pt_http_codec_stream_t *cs, pt_arena_t *arena)
{
    ((h2_stream_t *)cs)->arena = arena;
}

/* The owner is done with the stream: no more callbacks for it, and request body held for
 * it (read-disabled) will never be taken, so its window goes back to the client. */
static void release_owner(h2_server_t *s, h2_stream_t *st)
{
    st->super.data = NULL;
    st->read_disabled = 0;
    size_t n = pt_buf_len(&st->in);
    if (n > 0) {
        pt_buf_dispose(&st->in);
        if (s->session != NULL && !s->closed)
            nghttp2_session_consume(s->session, st->id, n);
    }
}

static int usable(h2_server_t *s, h2_stream_t *st)
{
    return !s->closed && !s->conn_closed && !s->lost && st->super.data != NULL;
}

/* Builds nghttp2's view of a header map; pseudo-headers only when `pseudo` ("\:status"),
 * never connection-specific ones (RFC 9113 8.2.2). Returns a malloc'ed array or NULL. */
static nghttp2_nv *make_nv(const pt_http_headers_t *h, int pseudo, size_t *n)
{
    nghttp2_nv *nv = malloc((h->count + 1) * sizeof(*nv));
    if (nv == NULL)
        return NULL;
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < h->count; i++) {
            const pt_http_header_t *e = &h->items[i];
            int is_pseudo = e->name_len > 0 && e->name[0] == ':';
            if ((pass == 0) != is_pseudo)
                continue; /* pseudo-headers first */
            if (is_pseudo && !pseudo)
                continue;
            static const char *const hop[] = {"connection", "keep-alive", "proxy-connection",
                                              "transfer-encoding", "upgrade"};
            int skip = 0;
            for (size_t j = 0; j < sizeof(hop) / sizeof(hop[0]) && !skip; j++)
                skip = e->name_len == strlen(hop[j]) && memcmp(e->name, hop[j], e->name_len) == 0;
            if (skip)
                continue;
            nv[k].name = (uint8_t *)e->name;
            nv[k].namelen = e->name_len;
            nv[k].value = (uint8_t *)e->value;
            nv[k].valuelen = e->value_len;
            nv[k].flags = NGHTTP2_NV_FLAG_NONE;
            k++;
        }
    }
    *n = k;
    return nv;
}

/* A deep copy of nv in one allocation (trailers sent after the owner's arena is gone). */
static nghttp2_nv *copy_nv(const nghttp2_nv *nv, size_t n)
{
    size_t bytes = n * sizeof(*nv);
    for (size_t i = 0; i < n; i++)
        bytes += nv[i].namelen + nv[i].valuelen;
    nghttp2_nv *out = malloc(bytes ? bytes : 1);
    if (out == NULL)
        return NULL;
    uint8_t *p = (uint8_t *)(out + n);
    for (size_t i = 0; i < n; i++) {
        out[i] = nv[i];
        memcpy(p, nv[i].name, nv[i].namelen);
        out[i].name = p;
        p += nv[i].namelen;
        memcpy(p, nv[i].value, nv[i].valuelen);
        out[i].value = p;
        p += nv[i].valuelen;
    }
    return out;
}

static void h2s_encode_headers(pt_http_codec_stream_t *cs, pt_http_headers_t *h, int end_stream)
{
    h2_stream_t *st = (h2_stream_t *)cs;
    h2_server_t *s = st->codec;
    if (!usable(s, st) || st->resp_started)
        return;
    int status = pt_http_status_value(pt_http_headers_get(h, ":status"), 500);
    size_t n;
    nghttp2_nv *nv = make_nv(h, 1, &n);
    if (nv == NULL) {
        release_owner(s, st);
        nghttp2_submit_rst_stream(s->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        h2_flush(s);
        return;
    }
    if (st->ext_connect && status == 101) {
        /* The upgrade succeeded: on HTTP/2 that is a 2xx to the CONNECT, and the stream
         * carries the tunnel (RFC 8441 5). Upgrade and Connection were dropped by make_nv. */
        for (size_t i = 0; i < n; i++)
            if (nv[i].namelen == 7 && memcmp(nv[i].name, ":status", 7) == 0) {
                nv[i].value = (uint8_t *)"200";
                nv[i].valuelen = 3;
            }
        status = 200;
        end_stream = 0;
    }
    int rc;
    if (status < 200) {
        /* Interim: no end of stream, the response proper comes later. */
        rc = nghttp2_submit_headers(s->session, NGHTTP2_FLAG_NONE, st->id, NULL, nv, n, NULL);
    } else {
        st->resp_started = 1;
        int end = end_stream || st->head_request || status == 204 || status == 304;
        if (end) {
            st->out_end = 1;
            release_owner(s, st); /* the owner is done with the stream */
            rc = nghttp2_submit_response(s->session, st->id, nv, n, NULL);
        } else {
            nghttp2_data_provider dp = {.source.ptr = st, .read_callback = data_read_cb};
            rc = nghttp2_submit_response(s->session, st->id, nv, n, &dp);
        }
    }
    free(nv);
    if (rc != 0) {
        release_owner(s, st);
        nghttp2_submit_rst_stream(s->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    }
    h2_flush(s);
}

static void resume(h2_server_t *s, h2_stream_t *st)
{
    if (st->deferred && !(s->conn->flags & PT_CONN_F_ABOVE_HIGH)) {
        st->deferred = 0;
        nghttp2_session_resume_data(s->session, st->id);
    }
}

static void h2s_encode_data(pt_http_codec_stream_t *cs, pt_buf_t *data, int end_stream)
{
    h2_stream_t *st = (h2_stream_t *)cs;
    h2_server_t *s = st->codec;
    if (!usable(s, st) || !st->resp_started || st->out_end) {
        pt_buf_dispose(data);
        return;
    }
    pt_buf_move(&st->out, data);
    if (end_stream) {
        st->out_end = 1;
        release_owner(s, st);
    }
    resume(s, st);
    if (end_stream) {
        h2_flush(s);
        return;
    }
    h2_flush(s);
    if (usable(s, st))
        stream_update_watermark(s, st);
}

static void h2s_encode_trailers(pt_http_codec_stream_t *cs, pt_http_headers_t *t)
{
    h2_stream_t *st = (h2_stream_t *)cs;
    h2_server_t *s = st->codec;
    if (!usable(s, st) || !st->resp_started || st->out_end)
        return;
    size_t n;
    nghttp2_nv *nv = make_nv(t, 0, &n);
    if (nv != NULL && n > 0) {
        st->trailers_out = copy_nv(nv, n);
        st->ntrailers_out = n;
    }
    free(nv);
    /* Without trailers (or memory for them) the body just ends. */
    st->out_end = 1;
    release_owner(s, st);
    resume(s, st);
    h2_flush(s);
}

static void h2s_encode_100_continue(pt_http_codec_stream_t *cs)
{
    h2_stream_t *st = (h2_stream_t *)cs;
    h2_server_t *s = st->codec;
    if (!usable(s, st) || st->resp_started)
        return;
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_headers(s->session, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
    h2_flush(s);
}

static void h2s_reset_stream(pt_http_codec_stream_t *cs, pt_http_reset_reason_t reason)
{
    h2_stream_t *st = (h2_stream_t *)cs;
    h2_server_t *s = st->codec;
    release_owner(s, st); /* no callbacks for it from now on */
    if (s->closed || s->conn_closed || s->lost)
        return;
    uint32_t code =
        reason == PT_HTTP_RESET_OVERFLOW ? NGHTTP2_REFUSED_STREAM : NGHTTP2_INTERNAL_ERROR;
    nghttp2_submit_rst_stream(s->session, NGHTTP2_FLAG_NONE, st->id, code);
    h2_flush(s);
}

static void h2s_read_disable(pt_http_codec_stream_t *cs, int disable)
{
    h2_stream_t *st = (h2_stream_t *)cs;
    h2_server_t *s = st->codec;
    if (s->closed || s->conn_closed || s->lost)
        return;
    int before = st->read_disabled;
    st->read_disabled += disable ? 1 : -1;
    if (st->read_disabled < 0)
        st->read_disabled = 0;
    if (before > 0 && st->read_disabled == 0 &&
        (pt_buf_len(&st->in) > 0 || (st->in_end && !st->in_end_delivered))) {
        /* From the next loop turn, outside the caller's stack. */
        s->held_pending = 1;
        pt_conn_schedule_read(s->conn);
    }
}

static void h2s_upgrade(pt_http_codec_stream_t *cs)
{
    (void)cs; /* HTTP/2 has no Upgrade (extended CONNECT is not supported) */
}

/* A request that cannot go on at the connection's level (the owner's timers): the
 * connection ends with GOAWAY. */
static void h2s_send_error(pt_http_server_codec_t *codec, int status, const char *details)
{
    h2_server_t *s = (h2_server_t *)codec;
    (void)status;
    if (s->closed || s->conn_closed || s->lost)
        return;
    pt_debug("http2: %s; closing the connection", details);
    nghttp2_session_terminate_session(s->session, NGHTTP2_NO_ERROR);
    h2_flush(s);
    h2_close_conn(s, PT_CLOSE_FLUSH);
}

/* Graceful shutdown, as Envoy: a GOAWAY with the largest stream id now, so the client opens
 * no more; after drain_timeout the final GOAWAY with the last stream id processed; the
 * connection closes once the streams below it finished. */
static void h2s_shutdown_notice(pt_http_server_codec_t *codec)
{
    h2_server_t *s = (h2_server_t *)codec;
    if (s->closed || s->conn_closed || s->lost || s->shutdown_noticed)
        return;
    s->shutdown_noticed = 1;
    nghttp2_submit_shutdown_notice(s->session);
    uint64_t ms = s->settings->drain_timeout_ms;
    ev_timer_set(&s->drain_timer, (double)ms / 1000.0, 0.);
    ev_timer_start(s->conn->worker->loop, &s->drain_timer);
    h2_flush(s);
}

static void h2s_close(pt_http_server_codec_t *codec, pt_close_how_t how)
{
    h2_server_t *s = (h2_server_t *)codec;
    if (s->closed)
        return;
    if (!s->conn_closed && !s->lost && how == PT_CLOSE_FLUSH && s->depth == 0) {
        /* Say goodbye: a GOAWAY before the FIN (idle timeout, drain end). */
        nghttp2_session_terminate_session(s->session, NGHTTP2_NO_ERROR);
        h2_flush(s);
    }
    s->closed = 1;
    for (h2_stream_t *st = s->streams; st != NULL; st = st->next)
        st->super.data = NULL;
    if (!s->conn_closed) {
        h2_stop_timers(s);
        pt_conn_close(s->conn, how);
    }
    if (s->depth == 0 && !s->notify_pending)
        h2_free(s);
}

static const char *h2s_stream_protocol(pt_http_codec_stream_t *cs)
{
    (void)cs;
    return "HTTP/2";
}

static int h2s_stream_write_above_high(pt_http_codec_stream_t *cs)
{
    h2_stream_t *st = (h2_stream_t *)cs;
    return usable(st->codec, st) && st->above_high;
}

const pt_http_server_codec_ops_t pt_http2_server_codec = {
    .protocol = "HTTP/2",
    .create = h2s_create,
    .set_stream_arena = h2s_set_stream_arena,
    .encode_headers = h2s_encode_headers,
    .encode_data = h2s_encode_data,
    .encode_trailers = h2s_encode_trailers,
    .encode_100_continue = h2s_encode_100_continue,
    .reset_stream = h2s_reset_stream,
    .read_disable = h2s_read_disable,
    .upgrade = h2s_upgrade,
    .send_error = h2s_send_error,
    .shutdown_notice = h2s_shutdown_notice,
    .close = h2s_close,
    .stream_protocol = h2s_stream_protocol,
    .stream_write_above_high = h2s_stream_write_above_high,
};
