/* libFuzzer target for proxy/http2_codec.c, the HTTP/2 server codec.
 *
 * The input is what a client sends after the connection preface (the target writes the
 * preface, so the fuzzer starts among frames), behind one control byte that picks the
 * owner's behaviour and the limits:
 *   bit 0-1  how the owner answers a request: at its headers, at its end, never, or with a
 *            reset of the stream
 *   bit 2    read_disable every stream at its headers, read_enable it at the next step
 *   bit 3    trailers on the answers
 *   bit 4    small flood limits (so the flood paths run on short inputs)
 *   bit 5    shutdown_notice after the first step (the GOAWAY drain)
 *   bit 6-7  how the input is cut: whole, in 3 pieces, byte by byte for the first 64
 * The codec runs on a real connection (a socketpair whose other end is drained) of a worker
 * that exists only for this target, with an owner that follows the codec's contract as the
 * connection manager does; ASan and the codec's own checks judge the result. Every input
 * ends with the owner closing the codec, so leaks show. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/arena.h"
#include "proxy/conn.h"
#include "proxy/http_codec.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

typedef struct owner_stream {
    pt_http_codec_stream_t *cs;
    pt_arena_t arena;
    int done; /* no more ops for it: answered, reset, or told of a reset */
    int disabled;
    struct owner_stream *next;
} owner_stream_t;

typedef struct owner {
    pt_http_server_codec_t *codec;
    unsigned ctl;
    owner_stream_t *streams;
    int closed;
} owner_t;

static pt_worker_t W;
static pt_http_server_settings_t S;

static void answer(owner_t *o, owner_stream_t *st, int status)
{
    if (st->done || o->closed)
        return;
    const pt_http_server_codec_ops_t *ops = o->codec->ops;
    if ((o->ctl & 3) == 3 && status == 200) {
        st->done = 1;
        ops->reset_stream(st->cs, PT_HTTP_RESET_LOCAL);
        return;
    }
    pt_http_headers_t *h = pt_arena_alloc(&st->arena, sizeof(*h));
    if (h == NULL)
        return;
    pt_http_headers_init(h, &st->arena);
    pt_http_headers_add_str(h, ":status", status == 200 ? "200" : "400");
    pt_http_headers_add_str(h, "content-type", "text/plain");
    st->done = 1; /* the codec may reset it while we answer: no ops after the last one */
    ops->encode_headers(st->cs, h, 0);
    if (o->closed || st->done == 2)
        return;
    pt_buf_t b = {0};
    pt_buf_append(&b, "hello, fuzz\n", 12);
    int trailers = (o->ctl & 8) != 0;
    ops->encode_data(st->cs, &b, !trailers);
    pt_buf_dispose(&b);
    if (trailers && !o->closed && st->done != 2) {
        pt_http_headers_t *t = pt_arena_alloc(&st->arena, sizeof(*t));
        if (t == NULL)
            return;
        pt_http_headers_init(t, &st->arena);
        pt_http_headers_add_str(t, "x-trailer", "done");
        ops->encode_trailers(st->cs, t);
    }
}

static void *on_new_stream(void *owner, pt_http_codec_stream_t *cs)
{
    owner_t *o = owner;
    owner_stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->cs = cs;
    st->next = o->streams;
    o->streams = st;
    o->codec->ops->set_stream_arena(cs, &st->arena);
    return st;
}

static void on_message_begin(void *owner)
{
    (void)owner;
}

/* Every entry of a map the codec delivers is a NUL-terminated string of its length. */
static void check_headers(const pt_http_headers_t *headers)
{
    for (uint32_t i = 0; i < headers->count; i++)
        if (strlen(headers->items[i].name) != headers->items[i].name_len ||
            strlen(headers->items[i].value) > headers->items[i].value_len)
            abort();
}

static owner_t *current;

static void on_headers_owner(void *stream, pt_http_headers_t *headers, int end_stream)
{
    owner_stream_t *st = stream;
    owner_t *o = current;
    check_headers(headers);
    if ((o->ctl & 4) && !st->disabled) {
        st->disabled = 1;
        o->codec->ops->read_disable(st->cs, 1);
    }
    if ((o->ctl & 3) == 0 || (o->ctl & 3) == 3 || ((o->ctl & 3) == 1 && end_stream))
        answer(o, st, 200);
}

static void on_data(void *stream, pt_buf_t *data, int end_stream)
{
    owner_stream_t *st = stream;
    owner_t *o = current;
    pt_buf_dispose(data);
    if (end_stream && (o->ctl & 3) == 1)
        answer(o, st, 200);
}

static void on_trailers(void *stream, pt_http_headers_t *trailers)
{
    owner_stream_t *st = stream;
    owner_t *o = current;
    check_headers(trailers);
    if ((o->ctl & 3) == 1)
        answer(o, st, 200);
}

static void on_reset(void *stream, pt_http_reset_reason_t reason)
{
    owner_stream_t *st = stream;
    (void)reason;
    if (st->done == 2)
        abort(); /* told twice */
    st->done = 2;
}

static void owner_close(owner_t *o)
{
    if (o->closed)
        return;
    o->closed = 1;
    o->codec->ops->close(o->codec, PT_CLOSE_NOW);
}

static void on_protocol_error(void *owner, void *stream, int status, const char *details)
{
    owner_t *o = owner;
    (void)details;
    if (stream == NULL) {
        owner_close(o);
        return;
    }
    answer(o, stream, status);
}

static void on_write_watermark(void *owner, void *stream, int above)
{
    (void)owner, (void)stream, (void)above;
}

static void on_connection_closed(void *owner)
{
    owner_close(owner);
}

static void on_idle(void *owner)
{
    (void)owner;
}

static const pt_http_server_callbacks_t CB = {
    .on_message_begin = on_message_begin,
    .on_new_stream = on_new_stream,
    .on_headers = on_headers_owner,
    .on_data = on_data,
    .on_trailers = on_trailers,
    .on_reset = on_reset,
    .on_protocol_error = on_protocol_error,
    .on_write_watermark = on_write_watermark,
    .on_connection_closed = on_connection_closed,
    .on_idle = on_idle,
};

static void setup(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    pt_stats_thread_init();
    if (pt_worker_init(&W, 0) != 0)
        abort();
    pt_worker_current = &W;
}

/* One loop turn without blocking: deferred work, writes, reaping. */
static void turn(int peer)
{
    ev_run(W.loop, EVRUN_NOWAIT);
    char sink[65536];
    while (read(peer, sink, sizeof(sink)) > 0) {
    }
}

static void feed(owner_t *o, pt_conn_t *c, const uint8_t *p, size_t n, int peer)
{
    if (o->closed || n == 0)
        return;
    pt_buf_append(&c->in, p, n);
    c->handler->on_read(c);
    turn(peer);
    if (o->closed)
        return;
    /* Read-disabled streams take their held bytes now (not those the owner is done with:
     * no op after the last one). */
    for (owner_stream_t *st = o->streams; st != NULL && !o->closed; st = st->next)
        if (st->disabled && !st->done) {
            st->disabled = 0;
            o->codec->ops->read_disable(st->cs, 0);
        }
    turn(peer);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size == 0)
        return 0;
    unsigned ctl = data[0];
    data++;
    size--;
    S = (pt_http_server_settings_t){
        .max_request_headers_kb = 4,
        .max_headers_count = 20,
        .headers_with_underscores_action = (ctl >> 6) & 1 ? 1 : 0,
        .drain_timeout_ms = 0,
        .http2 = {.max_concurrent_streams = 16,
                  .initial_stream_window_size = 65535,
                  .initial_connection_window_size = 65535,
                  .hpack_table_size = 4096,
                  .max_outbound_frames = (ctl & 16) ? 8 : 10000,
                  .max_outbound_control_frames = (ctl & 16) ? 4 : 1000,
                  .max_consecutive_inbound_frames_with_empty_payload = 1,
                  .max_inbound_priority_frames_per_stream = (ctl & 16) ? 2 : 100,
                  .max_inbound_window_update_frames_per_data_frame_sent = 10,
                  .override_stream_error = (ctl >> 7) & 1},
    };
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    pt_conn_t *c = pt_conn_new(&W, sv[0], NULL, &pt_transport_raw, NULL);
    if (c == NULL) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    owner_t o = {.ctl = ctl};
    current = &o;
    pt_buf_append(&c->in, PT_HTTP2_PREFACE, PT_HTTP2_PREFACE_LEN);
    o.codec = pt_http2_server_codec.create(c, &S, &CB, &o);
    if (o.codec == NULL) {
        pt_conn_close(c, PT_CLOSE_NOW);
        close(sv[1]);
        turn(sv[1]);
        return 0;
    }
    pt_conn_start(c, c->handler, c->data);
    turn(sv[1]);
    switch ((ctl >> 6) & 3) {
    case 0:
        feed(&o, c, data, size, sv[1]);
        break;
    case 1: {
        size_t a = size / 3, b = 2 * size / 3;
        feed(&o, c, data, a, sv[1]);
        if (ctl & 32 && !o.closed)
            o.codec->ops->shutdown_notice(o.codec);
        feed(&o, c, data + a, b - a, sv[1]);
        feed(&o, c, data + b, size - b, sv[1]);
        break;
    }
    default: {
        size_t i = 0;
        for (; i < size && i < 64; i++)
            feed(&o, c, data + i, 1, sv[1]);
        if (ctl & 32 && !o.closed)
            o.codec->ops->shutdown_notice(o.codec);
        feed(&o, c, data + i, size - i, sv[1]);
        break;
    }
    }
    /* Answer what is still waiting, then the owner closes. */
    for (owner_stream_t *st = o.streams; st != NULL && !o.closed; st = st->next)
        if (!st->done)
            answer(&o, st, 200);
    turn(sv[1]);
    owner_close(&o);
    turn(sv[1]);
    turn(sv[1]);
    close(sv[1]);
    while (o.streams != NULL) {
        owner_stream_t *st = o.streams;
        o.streams = st->next;
        pt_arena_dispose(&st->arena);
        free(st);
    }
    current = NULL;
    return 0;
}
