/* HTTP/2 client codec (upstream), on nghttp2: many requests share one connection.
 *
 * The codec owns an upstream pt_conn and an nghttp2 client session fed through memory
 * (nghttp2_session_mem_recv / mem_send), so bytes go through the connection's transport (raw
 * or TLS) and its write queue like every other protocol's. Each request is a stream object
 * of its own (heap, not the request's arena: nghttp2 may still name a stream after the
 * request let go of it, until the stream closes).
 *
 * Contracts, beyond http_codec.h's:
 *  - The pool is told once the peer's first SETTINGS arrived (on_ready): only then is
 *    SETTINGS_MAX_CONCURRENT_STREAMS known, and capacity() true.
 *  - Request bodies go out through a data provider as the peer's windows allow; a stream
 *    whose body waits above the connection's high watermark tells its request to pause
 *    (on_write_watermark), per stream, so one slow stream never stalls the others.
 *  - Response bodies are acknowledged (WINDOW_UPDATE, nghttp2_session_consume) when the
 *    request takes them; a request that read_disable()s its stream withholds the window, and
 *    the upstream stops sending on that stream only.
 *  - GOAWAY: streams above last_stream_id end with PT_HTTP_RESET_REFUSED_STREAM (the router
 *    may retry them), the others finish, and the codec takes no new stream (reusable() 0).
 *  - Callbacks into requests and the pool may destroy the codec: it is freed only when the
 *    outermost entry (read, drain, timer, encode_*) returns. */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/cluster.h"
#include "proxy/http1_parser.h"
#include "proxy/http_codec.h"
#include "proxy/log.h"
#include "proxy/worker.h"

typedef struct h2_client h2_client_t;

typedef struct h2c_stream {
    pt_http_codec_stream_t super; /* data: the request, NULL once it let go */
    h2_client_t *codec;
    const pt_http_client_callbacks_t *cb;
    pt_arena_t *arena;
    int32_t id;                  /* 0 until the request headers were submitted */
    pt_http_headers_t *headers;  /* the header block being received */
    pt_buf_t body;               /* request body waiting for the peer's window */
    pt_http_headers_t *trailers; /* request trailers to send after the body */
    size_t unconsumed;           /* response bytes taken while read-disabled */
    int read_disabled;
    unsigned body_end : 1;     /* the request's end is known (body or trailers) */
    unsigned deferred : 1;     /* the data provider waits for more body */
    unsigned resp_headers : 1; /* final response headers delivered */
    unsigned resp_done : 1;    /* the response ended */
    unsigned req_done : 1;     /* the request's END_STREAM went out */
    unsigned above_high : 1;   /* the request was told to pause its body */
    unsigned closed : 1;       /* nghttp2 closed it */
    const char *upgrade;       /* an upgrade sent as extended CONNECT: its protocol (arena) */
    struct h2c_stream *prev, *next;
} h2c_stream_t;

struct h2_client {
    pt_http_client_codec_t super;
    pt_conn_t *conn;
    nghttp2_session *session;
    void (*on_closed)(void *owner, pt_http_client_codec_t *codec);
    void (*on_ready)(void *owner);
    void *owner;
    pt_cluster_http2_t opt;
    const pt_cluster_stats_t *stats;
    h2c_stream_t *streams; /* open or waiting to open */
    unsigned nstreams;
    ev_timer ping_timer, ping_timeout;
    int depth;
    unsigned destroyed : 1;
    unsigned dead : 1;        /* connection failed or closed: no more I/O */
    unsigned goaway : 1;      /* the peer sent GOAWAY */
    unsigned draining : 1;    /* we sent GOAWAY (pt_http2_client_codec_goaway) */
    unsigned settings : 1;    /* the peer's first SETTINGS arrived */
    unsigned closed_told : 1; /* on_closed was called */
    unsigned want_flush : 1;  /* a send was asked for inside nghttp2 */
    unsigned in_session : 1;  /* inside nghttp2_session_mem_recv / mem_send */
};

static void h2c_flush(h2_client_t *c);
static void h2c_fail(h2_client_t *c, pt_http_reset_reason_t reason);

/* ---- lifetime ---------------------------------------------------------------------- */

static void h2c_free(h2_client_t *c)
{
    h2c_stream_t *st = c->streams;
    while (st != NULL) {
        h2c_stream_t *next = st->next;
        pt_buf_dispose(&st->body);
        free(st);
        st = next;
    }
    c->streams = NULL;
    nghttp2_session_del(c->session);
    free(c);
}

static void h2c_enter(h2_client_t *c)
{
    c->depth++;
}

/* Returns 1 when the codec is gone (or going): the caller must not touch it. */
static int h2c_leave(h2_client_t *c)
{
    if (--c->depth == 0 && c->destroyed) {
        h2c_free(c);
        return 1;
    }
    return c->destroyed;
}

static void stream_unlink(h2_client_t *c, h2c_stream_t *st)
{
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    c->nstreams--;
    pt_stat_dec(c->stats->http2_streams_active);
}

static void stream_free(h2_client_t *c, h2c_stream_t *st)
{
    stream_unlink(c, st);
    pt_buf_dispose(&st->body);
    free(st);
}

/* The connection has nothing left to carry and cannot take more: tell the pool (once). */
static void maybe_closed(h2_client_t *c)
{
    if (c->destroyed || c->closed_told || (!c->dead && !c->goaway))
        return;
    for (h2c_stream_t *st = c->streams; st != NULL; st = st->next)
        if (st->super.data != NULL)
            return;
    c->closed_told = 1;
    if (c->on_closed != NULL)
        c->on_closed(c->owner, &c->super);
}

/* Ends a stream's request with a reset (it forgets the stream). */
static void stream_reset_request(h2c_stream_t *st, pt_http_reset_reason_t reason)
{
    void *req = st->super.data;
    if (req == NULL)
        return;
    st->super.data = NULL;
    st->cb->on_reset(req, reason);
}

/* The connection is unusable: every request on it ends, the pool hears of it. */
static void h2c_fail(h2_client_t *c, pt_http_reset_reason_t reason)
{
    if (c->dead)
        return;
    c->dead = 1;
    ev_timer_stop(c->conn->worker->loop, &c->ping_timer);
    ev_timer_stop(c->conn->worker->loop, &c->ping_timeout);
    /* A callback may release streams (and the codec): restart from the head each time. */
    for (;;) {
        h2c_stream_t *st = c->streams;
        while (st != NULL && st->super.data == NULL)
            st = st->next;
        if (st == NULL || c->destroyed)
            break;
        stream_reset_request(st, reason);
    }
    maybe_closed(c);
}

/* ---- nghttp2 callbacks ------------------------------------------------------------- */

static h2c_stream_t *stream_of(h2_client_t *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->session, id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    (void)session;
    h2_client_t *c = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2c_stream_t *st = stream_of(c, frame->hd.stream_id);
    if (st == NULL || st->super.data == NULL)
        return 0;
    st->headers = pt_arena_alloc(st->arena, sizeof(*st->headers));
    if (st->headers == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    pt_http_headers_init(st->headers, st->arena);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)session;
    (void)flags;
    h2_client_t *c = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2c_stream_t *st = stream_of(c, frame->hd.stream_id);
    if (st == NULL || st->super.data == NULL || st->headers == NULL)
        return 0;
    if (pt_http_headers_add(st->headers, (const char *)name, namelen, (const char *)value,
                            valuelen) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* A request is done with its stream once the response ended (the router lets go of it
 * then, and resets it if its own body is unfinished): no callback reaches it afterwards,
 * while what remains of its body still goes out. */
static void stream_maybe_detach(h2c_stream_t *st)
{
    if (st->resp_done)
        st->super.data = NULL;
}

static void on_headers_frame(h2_client_t *c, h2c_stream_t *st, const nghttp2_frame *frame)
{
    (void)c;
    void *req = st->super.data;
    pt_http_headers_t *h = st->headers;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    st->headers = NULL;
    if (req == NULL || h == NULL)
        return;
    if (!st->resp_headers) {
        int status = pt_http_status_value(pt_http_headers_get(h, ":status"), 0);
        if (status >= 100 && status < 200 && !end)
            return; /* interim responses (100 Continue, 103) are consumed here */
        if (st->upgrade != NULL && status == 200 && !end) {
            /* The extended CONNECT was accepted: to the requester that is the 101 of the
             * upgrade it asked for (Envoy's mapping back to HTTP/1.1). */
            if (pt_http_headers_set_ref(h, ":status", "101") != 0 ||
                pt_http_headers_set_ref(h, "upgrade", st->upgrade) != 0 ||
                pt_http_headers_set_ref(h, "connection", "upgrade") != 0)
                pt_http_headers_set_ref(h, ":status", "200"); /* no memory: not a tunnel */
        }
        st->resp_headers = 1;
        if (end) {
            st->resp_done = 1;
            stream_maybe_detach(st);
        }
        st->cb->on_headers(req, h, end);
        return;
    }
    /* A second header block ends the stream: trailers. */
    pt_stat_inc(c->stats->http2_trailers);
    st->resp_done = 1;
    stream_maybe_detach(st);
    st->cb->on_trailers(req, h);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    h2_client_t *c = ud;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && !c->settings) {
            c->settings = 1;
            if (c->on_ready != NULL && !c->dead && !c->goaway)
                c->on_ready(c->owner);
        }
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            ev_timer_stop(c->conn->worker->loop, &c->ping_timeout);
        break;
    case NGHTTP2_GOAWAY:
        if (!c->goaway) {
            c->goaway = 1;
            pt_stat_inc(c->stats->upstream_cx_close_notify);
            pt_debug("upstream sent GOAWAY (last stream %d, error %u)",
                     frame->goaway.last_stream_id, frame->goaway.error_code);
        }
        break;
    case NGHTTP2_RST_STREAM:
        pt_stat_inc(c->stats->http2_rx_reset);
        break;
    case NGHTTP2_HEADERS: {
        h2c_stream_t *st = stream_of(c, frame->hd.stream_id);
        if (st != NULL)
            on_headers_frame(c, st, frame);
        break;
    }
    case NGHTTP2_DATA: {
        h2c_stream_t *st = stream_of(c, frame->hd.stream_id);
        if (st == NULL || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            break;
        void *req = st->super.data;
        if (req == NULL || !st->resp_headers)
            break;
        st->resp_done = 1;
        stream_maybe_detach(st);
        pt_buf_t empty = {0};
        st->cb->on_data(req, &empty, 1);
        break;
    }
    default:
        break;
    }
    (void)session;
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    h2_client_t *c = ud;
    h2c_stream_t *st = stream_of(c, id);
    if (st == NULL || st->super.data == NULL || !st->resp_headers) {
        /* Nobody takes it: acknowledge it at once so the connection's window stays open. */
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    pt_buf_t b = {0};
    if (pt_buf_append(&b, data, len) != 0) {
        pt_buf_dispose(&b);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->cb->on_data(st->super.data, &b, 0);
    pt_buf_dispose(&b);
    /* Acknowledged only when the request takes more: a paused one withholds the window. */
    if (st->read_disabled > 0 && st->super.data != NULL)
        st->unconsumed += len;
    else
        nghttp2_session_consume(session, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *ud)
{
    h2_client_t *c = ud;
    h2c_stream_t *st = nghttp2_session_get_stream_user_data(session, id);
    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    st->closed = 1;
    if (st->super.data != NULL) {
        pt_http_reset_reason_t reason = PT_HTTP_RESET_REMOTE;
        if (error_code == NGHTTP2_REFUSED_STREAM) {
            reason = PT_HTTP_RESET_REFUSED_STREAM;
            pt_stat_inc(c->stats->http2_stream_refused_errors);
        } else if (error_code == NGHTTP2_PROTOCOL_ERROR) {
            reason = PT_HTTP_RESET_PROTOCOL_ERROR;
        }
        stream_reset_request(st, reason);
    }
    if (!c->destroyed)
        stream_free(c, st);
    return 0;
}

/* A request that could not be sent: after GOAWAY (nghttp2 refuses new streams), or for
 * want of stream ids. */
static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame, int err,
                             void *ud)
{
    (void)session;
    h2_client_t *c = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2c_stream_t *st = stream_of(c, frame->hd.stream_id);
    if (st != NULL && st->super.data != NULL)
        stream_reset_request(st, err == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED
                                     ? PT_HTTP_RESET_REFUSED_STREAM
                                     : PT_HTTP_RESET_LOCAL);
    return 0;
}

static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int err, void *ud)
{
    (void)session;
    (void)frame;
    (void)err;
    h2_client_t *c = ud;
    pt_stat_inc(c->stats->http2_rx_messaging_error);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    (void)session;
    h2_client_t *c = ud;
    if (frame->hd.type == NGHTTP2_RST_STREAM)
        pt_stat_inc(c->stats->http2_tx_reset);
    else if (frame->hd.type == NGHTTP2_GOAWAY)
        pt_stat_inc(c->stats->http2_goaway_sent);
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        h2c_stream_t *st = stream_of(c, frame->hd.stream_id);
        if (st != NULL) {
            st->req_done = 1;
            stream_maybe_detach(st);
        }
    }
    return 0;
}

/* The request body, as the windows allow. */
static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
    (void)ud;
    h2c_stream_t *st = source->ptr;
    size_t avail = pt_buf_len(&st->body);
    size_t n = avail < length ? avail : length;
    if (n > 0) {
        pt_buf_copyout(&st->body, 0, buf, n);
        pt_buf_drain(&st->body, n);
    }
    if (pt_buf_len(&st->body) == 0) {
        if (st->body_end) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            if (st->trailers != NULL && st->trailers->count > 0) {
                nghttp2_nv *nva = NULL;
                size_t nn = st->trailers->count;
                nva = pt_arena_alloc(st->arena, nn * sizeof(*nva));
                if (nva != NULL) {
                    for (size_t i = 0; i < nn; i++) {
                        const pt_http_header_t *e = &st->trailers->items[i];
                        nva[i] = (nghttp2_nv){(uint8_t *)e->name, (uint8_t *)e->value, e->name_len,
                                              e->value_len, NGHTTP2_NV_FLAG_NONE};
                    }
                    if (nghttp2_submit_trailer(session, id, nva, nn) == 0)
                        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                }
            }
        } else if (n == 0) {
            st->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* ---- I/O ----------------------------------------------------------------------------- */

/* Tells paused requests whose body has gone below half the watermark to go on. */
static void notify_below(h2_client_t *c)
{
    size_t low = c->conn != NULL ? c->conn->high_watermark / 2 : 0;
    for (h2c_stream_t *st = c->streams; st != NULL && !c->destroyed; st = st->next) {
        if (st->above_high && pt_buf_len(&st->body) <= low && st->super.data != NULL) {
            st->above_high = 0;
            st->cb->on_write_watermark(st->super.data, 0);
            return; /* the list may have changed; the next drain goes on */
        }
    }
}

/* Moves what nghttp2 has to send into the connection's write queue, while the queue is
 * below its high watermark (the rest waits for on_drain). */
static void h2c_flush(h2_client_t *c)
{
    if (c->destroyed || c->dead)
        return;
    if (c->in_session) {
        c->want_flush = 1;
        return;
    }
    c->in_session = 1;
    /* A stream closing inside mem_send tells its request, which may end the codec. */
    while (!c->destroyed && !c->dead && !(c->conn->flags & PT_CONN_F_ABOVE_HIGH) &&
           nghttp2_session_want_write(c->session)) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (c->destroyed)
            break;
        if (n < 0) {
            pt_debug("upstream h2 send: %s", nghttp2_strerror((int)n));
            c->in_session = 0;
            pt_conn_fail(c->conn, -EPROTO);
            h2c_fail(c, PT_HTTP_RESET_LOCAL);
            return;
        }
        if (n == 0)
            break;
        pt_conn_write_bytes(c->conn, data, (size_t)n);
    }
    c->in_session = 0;
    c->want_flush = 0;
    if (!c->destroyed)
        notify_below(c);
}

static void h2c_on_read(pt_conn_t *conn)
{
    h2_client_t *c = conn->data;
    h2c_enter(c);
    while (!c->dead && !c->destroyed && pt_buf_len(&conn->in) > 0) {
        size_t len;
        const char *p = pt_buf_peek(&conn->in, &len);
        c->in_session = 1;
        ssize_t n = nghttp2_session_mem_recv(c->session, (const uint8_t *)p, len);
        c->in_session = 0;
        if (c->destroyed)
            break;
        if (n < 0) {
            pt_debug("upstream h2: %s", nghttp2_strerror((int)n));
            pt_stat_inc(c->stats->upstream_cx_protocol_error);
            /* Say why before closing, as nghttp2 queued it (GOAWAY PROTOCOL_ERROR). */
            h2c_flush(c);
            h2c_fail(c, PT_HTTP_RESET_PROTOCOL_ERROR);
            break;
        }
        pt_buf_drain(&conn->in, (size_t)n);
    }
    if (!c->destroyed && !c->dead) {
        h2c_flush(c);
        if (!c->destroyed && (conn->flags & PT_CONN_F_EOF))
            h2c_fail(c, PT_HTTP_RESET_CONNECTION_CLOSE);
        else if (!c->destroyed && !nghttp2_session_want_read(c->session) &&
                 !nghttp2_session_want_write(c->session))
            h2c_fail(c, PT_HTTP_RESET_CONNECTION_CLOSE);
    }
    if (!c->destroyed)
        maybe_closed(c);
    h2c_leave(c);
}

static void h2c_on_error(pt_conn_t *conn, int status)
{
    h2_client_t *c = conn->data;
    h2c_enter(c);
    h2c_fail(c, status == -ECONNRESET ? PT_HTTP_RESET_REMOTE : PT_HTTP_RESET_CONNECTION_CLOSE);
    h2c_leave(c);
}

static void h2c_on_drain(pt_conn_t *conn)
{
    h2_client_t *c = conn->data;
    h2c_enter(c);
    h2c_flush(c);
    h2c_leave(c);
}

static void h2c_on_connect(pt_conn_t *conn, int status)
{
    (void)conn;
    (void)status;
}

static const pt_conn_handler_t h2c_handler = {
    .on_read = h2c_on_read,
    .on_connect = h2c_on_connect,
    .on_drain = h2c_on_drain,
    .on_error = h2c_on_error,
};

/* connection_keepalive: a PING every interval; no answer within the timeout ends the
 * connection. */
static void on_ping_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    h2_client_t *c = t->data;
    h2c_enter(c);
    if (!c->dead && nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) == 0) {
        if (!ev_is_active(&c->ping_timeout)) {
            ev_timer_set(&c->ping_timeout, (double)c->opt.keepalive_timeout_ms / 1000.0, 0.);
            ev_timer_start(c->conn->worker->loop, &c->ping_timeout);
        }
        h2c_flush(c);
    }
    h2c_leave(c);
}

static void on_ping_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    h2_client_t *c = t->data;
    h2c_enter(c);
    pt_stat_inc(c->stats->http2_keepalive_timeout);
    pt_debug("upstream h2: no PING answer, closing");
    h2c_fail(c, PT_HTTP_RESET_CONNECTION_CLOSE);
    h2c_leave(c);
}

/* ---- ops ----------------------------------------------------------------------------- */

static const pt_cluster_stats_t no_stats;

pt_http_client_codec_t *
pt_http2_client_codec_new(pt_conn_t *conn, const struct pt_cluster_http2 *options,
                          const struct pt_cluster_stats *stats,
                          void (*on_closed)(void *owner, pt_http_client_codec_t *), void *owner)
{
    h2_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->super.ops = &pt_http2_client_codec;
    c->conn = conn;
    c->on_closed = on_closed;
    c->owner = owner;
    c->stats = stats != NULL ? stats : &no_stats;
    if (options != NULL) {
        c->opt = *options;
    } else {
        c->opt.max_concurrent_streams = 2147483647;
        c->opt.initial_stream_window_size = 65535;
        c->opt.initial_connection_window_size = 1024 * 1024;
        c->opt.hpack_table_size = 4096;
    }
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    /* Windows follow what requests take (nghttp2_session_consume). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, c->opt.hpack_table_size);
    int rc = nghttp2_session_client_new2(&c->session, cbs, c, opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    cbs = NULL;
    opt = NULL;
    if (rc != 0)
        goto fail;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->opt.initial_stream_window_size},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, c->opt.hpack_table_size},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)c->opt.initial_connection_window_size) != 0)
        goto fail;
    ev_init(&c->ping_timer, on_ping_timer);
    c->ping_timer.data = c;
    ev_init(&c->ping_timeout, on_ping_timeout);
    c->ping_timeout.data = c;
    if (c->opt.keepalive_interval_ms > 0) {
        double iv_s = (double)c->opt.keepalive_interval_ms / 1000.0;
        ev_timer_set(&c->ping_timer, iv_s, iv_s);
        ev_timer_start(conn->worker->loop, &c->ping_timer);
    }
    pt_conn_set_handler(conn, &h2c_handler, c);
    pt_conn_resume_read(conn);
    /* The connection preface and our SETTINGS; a failure here is the constructor's, not the
     * pool's callback's to report. */
    c->on_closed = NULL;
    h2c_flush(c);
    c->on_closed = on_closed;
    if (c->dead) {
        ev_timer_stop(conn->worker->loop, &c->ping_timer);
        pt_conn_set_handler(conn, NULL, NULL);
        nghttp2_session_del(c->session);
        free(c);
        return NULL;
    }
    return &c->super;
fail:
    if (cbs != NULL)
        nghttp2_session_callbacks_del(cbs);
    if (opt != NULL)
        nghttp2_option_del(opt);
    nghttp2_session_del(c->session);
    free(c);
    return NULL;
}

void pt_http2_client_codec_on_ready(pt_http_client_codec_t *codec, void (*on_ready)(void *owner))
{
    ((h2_client_t *)codec)->on_ready = on_ready;
}

static pt_http_client_codec_t *
h2c_create(pt_conn_t *conn, void (*on_closed)(void *, pt_http_client_codec_t *), void *owner)
{
    return pt_http2_client_codec_new(conn, NULL, NULL, on_closed, owner);
}

void pt_http2_client_codec_goaway(pt_http_client_codec_t *codec)
{
    h2_client_t *c = (h2_client_t *)codec;
    if (c->destroyed || c->dead || c->draining)
        return;
    c->draining = 1;
    h2c_enter(c);
    /* A client's last stream id names server-initiated streams: none (no push). */
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    h2c_flush(c);
    h2c_leave(c);
}

static unsigned h2c_capacity(pt_http_client_codec_t *codec)
{
    h2_client_t *c = (h2_client_t *)codec;
    if (c->destroyed || c->dead || c->goaway || c->draining || c->conn == NULL ||
        (c->conn->flags & (PT_CONN_F_ERROR | PT_CONN_F_CLOSED | PT_CONN_F_EOF)))
        return 0;
    /* Stream ids run out at 2^31: the connection then takes no more. */
    if (nghttp2_session_get_next_stream_id(c->session) >= (1u << 31) - 2)
        return 0;
    uint32_t limit =
        nghttp2_session_get_remote_settings(c->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (limit > c->opt.max_concurrent_streams)
        limit = c->opt.max_concurrent_streams;
    return limit > c->nstreams ? limit - c->nstreams : 0;
}

static int h2c_reusable(pt_http_client_codec_t *codec)
{
    h2_client_t *c = (h2_client_t *)codec;
    return !c->destroyed && !c->dead && !c->goaway && !c->draining && c->conn != NULL &&
           !(c->conn->flags & (PT_CONN_F_ERROR | PT_CONN_F_CLOSED | PT_CONN_F_EOF)) &&
           nghttp2_session_get_next_stream_id(c->session) < (1u << 31) - 2;
}

static pt_http_codec_stream_t *h2c_new_stream(pt_http_client_codec_t *codec,
                                              const pt_http_client_callbacks_t *cb, void *req,
                                              pt_arena_t *arena)
{
    h2_client_t *c = (h2_client_t *)codec;
    if (c->destroyed || c->dead || c->goaway || c->draining)
        return NULL;
    h2c_stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->codec = c;
    st->cb = cb;
    st->arena = arena;
    st->super.data = req;
    st->next = c->streams;
    if (c->streams != NULL)
        c->streams->prev = st;
    c->streams = st;
    c->nstreams++;
    pt_stat_inc(c->stats->http2_streams_active);
    return &st->super;
}

/* Connection-specific headers have no place in HTTP/2 (RFC 9113 8.2.2); te survives only as
 * "trailers". Host becomes :authority when the request has none. */
static int skip_header(const pt_http_header_t *e)
{
    static const char *const names[] = {"connection",        "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade",    "host"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (e->name_len == strlen(names[i]) && memcmp(e->name, names[i], e->name_len) == 0)
            return 1;
    if (e->name_len == 2 && memcmp(e->name, "te", 2) == 0)
        return !(e->value_len == 8 && strncasecmp(e->value, "trailers", 8) == 0);
    return 0;
}

#define NV(n, v, nl, vl)                                                                           \
    ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE})

static void h2c_encode_headers(pt_http_codec_stream_t *cs, pt_http_headers_t *h, int end_stream)
{
    h2c_stream_t *st = (h2c_stream_t *)cs;
    h2_client_t *c = st->codec;
    if (c->destroyed || c->dead || st->id != 0 || st->super.data == NULL)
        return;
    h2c_enter(c);
    const char *method = pt_http_headers_get(h, ":method");
    const char *path = pt_http_headers_get(h, ":path");
    const char *authority = pt_http_headers_get(h, ":authority");
    const char *scheme = pt_http_headers_get(h, ":scheme");
    if (authority == NULL)
        authority = pt_http_headers_get(h, "host");
    if (method == NULL)
        method = "GET";
    if (path == NULL || path[0] == '\0')
        path = "/";
    if (scheme == NULL)
        scheme = c->conn->transport->is_tls ? "https" : "http";
    /* An upgrade (WebSocket) has no HTTP/2 form but extended CONNECT (RFC 8441): CONNECT with
     * :protocol naming the upgrade, :scheme and :path kept, Upgrade and Connection dropped
     * (skip_header), as Envoy sends it. A peer that did not enable it refuses the stream. */
    const char *upgrade = pt_http_headers_get(h, "upgrade");
    const char *connection = pt_http_headers_get(h, "connection");
    if (upgrade != NULL && connection != NULL &&
        pt_h1_token_list_contains(connection, strlen(connection), "upgrade")) {
        method = "CONNECT";
        st->upgrade = upgrade;
    }
    int connect = strcmp(method, "CONNECT") == 0 && st->upgrade == NULL;
    nghttp2_nv *nva = pt_arena_alloc(st->arena, (h->count + 5) * sizeof(*nva));
    size_t n = 0;
    int32_t id = -1;
    if (nva != NULL) {
        nva[n++] = NV(":method", method, 7, strlen(method));
        if (st->upgrade != NULL)
            nva[n++] = NV(":protocol", st->upgrade, 9, strlen(st->upgrade));
        if (!connect) {
            nva[n++] = NV(":scheme", scheme, 7, strlen(scheme));
            nva[n++] = NV(":path", path, 5, strlen(path));
        }
        if (authority != NULL)
            nva[n++] = NV(":authority", authority, 10, strlen(authority));
        for (uint32_t i = 0; i < h->count; i++) {
            const pt_http_header_t *e = &h->items[i];
            if (e->name_len == 0 || e->name[0] == ':' || skip_header(e))
                continue;
            nva[n++] = NV(e->name, e->value, e->name_len, e->value_len);
        }
        nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
        id = nghttp2_submit_request(c->session, NULL, nva, n, end_stream ? NULL : &prd, st);
    }
    if (id < 0) {
        /* No memory, or no stream ids left: the request fails here, the connection goes on. */
        pt_debug("upstream h2: cannot submit a request: %s",
                 id == -1 ? "out of memory" : nghttp2_strerror(id));
        stream_unlink(c, st);
        pt_buf_dispose(&st->body);
        void *req = st->super.data;
        const pt_http_client_callbacks_t *cb = st->cb;
        free(st);
        cb->on_reset(req, PT_HTTP_RESET_LOCAL);
        h2c_leave(c);
        return;
    }
    st->id = id;
    if (end_stream)
        st->body_end = 1;
    h2c_flush(c);
    h2c_leave(c);
}

static void resume_body(h2_client_t *c, h2c_stream_t *st)
{
    if (st->deferred && st->id > 0 && !st->closed) {
        st->deferred = 0;
        nghttp2_session_resume_data(c->session, st->id);
    }
}

static void h2c_encode_data(pt_http_codec_stream_t *cs, pt_buf_t *data, int end_stream)
{
    h2c_stream_t *st = (h2c_stream_t *)cs;
    h2_client_t *c = st->codec;
    if (c->destroyed || c->dead || st->super.data == NULL || st->body_end || st->id <= 0) {
        pt_buf_dispose(data);
        return;
    }
    h2c_enter(c);
    pt_buf_move(&st->body, data);
    if (end_stream)
        st->body_end = 1;
    resume_body(c, st);
    if (!st->above_high && pt_buf_len(&st->body) > c->conn->high_watermark) {
        st->above_high = 1;
        st->cb->on_write_watermark(st->super.data, 1);
    }
    h2c_flush(c);
    h2c_leave(c);
}

static void h2c_encode_trailers(pt_http_codec_stream_t *cs, pt_http_headers_t *t)
{
    h2c_stream_t *st = (h2c_stream_t *)cs;
    h2_client_t *c = st->codec;
    if (c->destroyed || c->dead || st->super.data == NULL || st->body_end || st->id <= 0)
        return;
    h2c_enter(c);
    st->trailers = t;
    st->body_end = 1;
    resume_body(c, st);
    h2c_flush(c);
    h2c_leave(c);
}

static void h2c_reset_stream(pt_http_codec_stream_t *cs)
{
    h2c_stream_t *st = (h2c_stream_t *)cs;
    h2_client_t *c = st->codec;
    st->super.data = NULL;
    if (c->destroyed)
        return;
    pt_buf_dispose(&st->body);
    if (st->id == 0) { /* never sent */
        stream_free(c, st);
        return;
    }
    if (st->closed || c->dead)
        return;
    h2c_enter(c);
    nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    /* What it received but did not acknowledge goes back to the connection's window. */
    if (st->unconsumed > 0) {
        nghttp2_session_consume_connection(c->session, st->unconsumed);
        st->unconsumed = 0;
    }
    h2c_flush(c);
    h2c_leave(c);
}

static void h2c_read_disable(pt_http_codec_stream_t *cs, int disable)
{
    h2c_stream_t *st = (h2c_stream_t *)cs;
    h2_client_t *c = st->codec;
    if (c->destroyed || c->dead)
        return;
    st->read_disabled += disable ? 1 : -1;
    if (st->read_disabled < 0)
        st->read_disabled = 0;
    if (st->read_disabled == 0 && st->unconsumed > 0 && st->id > 0 && !st->closed) {
        h2c_enter(c);
        nghttp2_session_consume(c->session, st->id, st->unconsumed);
        st->unconsumed = 0;
        h2c_flush(c);
        h2c_leave(c);
    }
}

static void h2c_upgrade(pt_http_codec_stream_t *cs)
{
    (void)cs;
}

/* Releases the codec; the caller closes the connection (or already did). */
static void h2c_destroy(pt_http_client_codec_t *codec)
{
    h2_client_t *c = (h2_client_t *)codec;
    if (c->destroyed)
        return;
    c->destroyed = 1;
    if (c->conn != NULL) {
        ev_timer_stop(c->conn->worker->loop, &c->ping_timer);
        ev_timer_stop(c->conn->worker->loop, &c->ping_timeout);
        if (!(c->conn->flags & PT_CONN_F_CLOSED))
            pt_conn_set_handler(c->conn, NULL, NULL);
    }
    for (h2c_stream_t *st = c->streams; st != NULL; st = st->next) {
        st->super.data = NULL;
        pt_stat_dec(c->stats->http2_streams_active);
    }
    c->conn = NULL;
    if (c->depth == 0)
        h2c_free(c);
}

const pt_http_client_codec_ops_t pt_http2_client_codec = {
    .protocol = "HTTP/2",
    .create = h2c_create,
    .new_stream = h2c_new_stream,
    .encode_headers = h2c_encode_headers,
    .encode_data = h2c_encode_data,
    .encode_trailers = h2c_encode_trailers,
    .reset_stream = h2c_reset_stream,
    .read_disable = h2c_read_disable,
    .upgrade = h2c_upgrade,
    .reusable = h2c_reusable,
    .capacity = h2c_capacity,
    .destroy = h2c_destroy,
};
