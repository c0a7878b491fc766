#include "discovery/grpc_stream.h"
#include "discovery/cluster_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/arena.h"
#include "proxy/buf.h"
#include "proxy/cluster.h"
#include "proxy/config_reader.h"
#include "proxy/conn.h"
#include "proxy/http.h"
#include "proxy/http_codec.h"
#include "proxy/worker.h"
#include "tls/transport.h"

#define GRPC_UNAVAILABLE 14
#define GRPC_INTERNAL    13

struct pt_grpc_stream {
    pt_cluster_client_t cc;     /* the connection and its HTTP/2 codec */
    pt_http_codec_stream_t *cs; /* the call, once the connection is up */
    pt_cluster_t *cluster;      /* a reference: its HTTP/2 options and transport */
    pt_arena_t arena;           /* the call's request headers */
    char *path, *authority;
    pt_buf_t out; /* framed messages waiting for the call to start */
    pt_buf_t in;  /* received bytes not yet a whole message */
    int opened;   /* the response head came */
    int above_high; /* what was sent waits above the connection's high watermark */
    int send_done;  /* the owner sent its last message (a unary call's request) */
    int over;     /* the call ended (close reported or to be) */
    int close_status;
    char close_why[256];
    ev_timer close_timer; /* reports the end from a loop turn of its own */
    struct ev_loop *loop;
    const pt_grpc_stream_callbacks_t *cb;
    void *data;
};

/* The end is reported from a fresh loop turn: the owner may then free the stream, codec
 * and connection included, which it must not do from inside their callbacks. */
static void on_close_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    pt_grpc_stream_t *g = t->data;
    g->cb->on_close(g->data, g->close_status, g->close_why);
}

static void end_call(pt_grpc_stream_t *g, int status, const char *why)
{
    if (g->over)
        return;
    g->over = 1;
    g->cs = NULL;
    g->close_status = status;
    snprintf(g->close_why, sizeof(g->close_why), "%s", why != NULL ? why : "");
    ev_timer_set(&g->close_timer, 0., 0.);
    ev_timer_start(g->loop, &g->close_timer);
}

/* ---- the call's callbacks (the HTTP/2 client codec) --------------------------------- */

static void deliver_messages(pt_grpc_stream_t *g)
{
    while (!g->over && pt_buf_len(&g->in) >= 5) {
        unsigned char hdr[5];
        pt_buf_copyout(&g->in, 0, hdr, 5);
        size_t len = (size_t)hdr[1] << 24 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 8 | hdr[4];
        if (hdr[0] != 0) {
            end_call(g, GRPC_INTERNAL, "a compressed message (none was asked for)");
            return;
        }
        if (len > PT_DOC_MAX_BYTES) {
            end_call(g, GRPC_INTERNAL, "a message larger than 64 MiB");
            return;
        }
        if (pt_buf_len(&g->in) < 5 + len)
            return;
        pt_buf_drain(&g->in, 5);
        const char *msg = len > 0 ? pt_buf_pullup(&g->in, len) : "";
        if (msg == NULL) {
            end_call(g, GRPC_INTERNAL, "out of memory");
            return;
        }
        g->cb->on_message(g->data, msg, len);
        if (g->over)
            return;
        pt_buf_drain(&g->in, len);
    }
}

/* The gRPC status of a trailer block (or a trailers-only head). */
static void end_with_status(pt_grpc_stream_t *g, const pt_http_headers_t *h)
{
    const char *st = pt_http_headers_get(h, "grpc-status");
    const char *msg = pt_http_headers_get(h, "grpc-message");
    if (st == NULL || st[0] < '0' || st[0] > '9') {
        end_call(g, GRPC_INTERNAL, "the call ended without a grpc-status");
        return;
    }
    end_call(g, atoi(st), msg != NULL ? msg : "");
}

static void on_headers(void *req, pt_http_headers_t *headers, int end_stream)
{
    pt_grpc_stream_t *g = req;
    int status = pt_http_status_value(pt_http_headers_get(headers, ":status"), 0);
    if (status >= 100 && status < 200)
        return;
    if (status != 200) {
        char why[64];
        snprintf(why, sizeof(why), "HTTP status %d", status);
        end_call(g, GRPC_UNAVAILABLE, why);
        return;
    }
    const char *ct = pt_http_headers_get(headers, "content-type");
    if (ct == NULL || strncasecmp(ct, "application/grpc", 16) != 0) {
        end_call(g, GRPC_INTERNAL, "not a gRPC response (content-type)");
        return;
    }
    if (end_stream) {
        end_with_status(g, headers); /* trailers-only */
        return;
    }
    g->opened = 1;
    g->cb->on_open(g->data);
}

static void on_data(void *req, pt_buf_t *data, int end_stream)
{
    pt_grpc_stream_t *g = req;
    pt_buf_move(&g->in, data);
    deliver_messages(g);
    if (end_stream)
        end_call(g, GRPC_INTERNAL, "the call ended without a grpc-status");
}

static void on_trailers(void *req, pt_http_headers_t *trailers)
{
    pt_grpc_stream_t *g = req;
    deliver_messages(g);
    end_with_status(g, trailers);
}

static void on_reset(void *req, pt_http_reset_reason_t reason)
{
    pt_grpc_stream_t *g = req;
    char why[96];
    snprintf(why, sizeof(why), "stream reset: %s", pt_http_reset_reason_str(reason));
    end_call(g, GRPC_UNAVAILABLE, why);
}

static void on_write_watermark(void *req, int above)
{
    /* xDS requests are small and rare; a stats sink asks (pt_grpc_stream_backed_up) so that
     * a collector that does not read costs a bounded amount of memory. */
    pt_grpc_stream_t *g = req;
    g->above_high = above;
}

int pt_grpc_stream_backed_up(const pt_grpc_stream_t *g)
{
    return g->above_high || pt_buf_len(&g->out) > 0;
}

static const pt_http_client_callbacks_t call_callbacks = {
    .on_headers = on_headers,
    .on_data = on_data,
    .on_trailers = on_trailers,
    .on_reset = on_reset,
    .on_write_watermark = on_write_watermark,
};

/* ---- the connection ----------------------------------------------------------------- */

static void on_failed(void *owner, const char *why)
{
    end_call(owner, GRPC_UNAVAILABLE, why);
}

/* The connection is up: the call starts. */
static int start_call(void *owner)
{
    pt_grpc_stream_t *g = owner;
    pt_http_headers_t *h = pt_arena_alloc(&g->arena, sizeof(*h));
    if (h == NULL)
        return -1;
    pt_http_headers_init(h, &g->arena);
    int err = pt_http_headers_add_ref(h, ":method", "POST") |
              pt_http_headers_add_ref(h, ":scheme", pt_conn_is_tls(g->cc.conn) ? "https" : "http") |
              pt_http_headers_add_str(h, ":path", g->path) |
              pt_http_headers_add_str(h, ":authority", g->authority) |
              pt_http_headers_add_ref(h, "content-type", "application/grpc") |
              pt_http_headers_add_ref(h, "te", "trailers");
    if (err != 0)
        return -1;
    const pt_http_client_codec_ops_t *ops = g->cc.codec->ops;
    g->cs = ops->new_stream(g->cc.codec, &call_callbacks, g, &g->arena);
    if (g->cs == NULL)
        return -1;
    ops->encode_headers(g->cs, h, 0);
    if (g->cs != NULL && (pt_buf_len(&g->out) > 0 || g->send_done))
        ops->encode_data(g->cs, &g->out, g->send_done);
    return 0;
}

pt_grpc_stream_t *pt_grpc_stream_open(const pt_cluster_t *cluster, pt_worker_t *w, const char *path,
                                      const char *authority, const pt_grpc_stream_callbacks_t *cb,
                                      void *data, char *err, size_t errlen)
{
    pt_grpc_stream_t *g = calloc(1, sizeof(*g));
    if (g == NULL || (g->path = strdup(path)) == NULL ||
        (g->authority = strdup(authority)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    g->cluster = pt_cluster_ref((pt_cluster_t *)cluster);
    g->cb = cb;
    g->data = data;
    g->loop = w->loop;
    ev_timer_init(&g->close_timer, on_close_timer, 0., 0.);
    g->close_timer.data = g;
    /* Each open connects to the cluster's next host (a reconnect tries another). */
    g->cc = (pt_cluster_client_t){.cluster = g->cluster, .http2 = 1, .ready = start_call,
                                  .failed = on_failed, .owner = g};
    if (pt_cluster_client_connect(&g->cc, w, err, errlen) != 0)
        goto fail;
    return g;
fail:
    if (g != NULL) {
        pt_cluster_unref(g->cluster);
        free(g->path);
        free(g->authority);
        free(g);
    }
    return NULL;
}

int pt_grpc_stream_send(pt_grpc_stream_t *g, const void *msg, size_t len)
{
    if (g->over || g->send_done || len > UINT32_MAX)
        return -1;
    unsigned char hdr[5] = {0, (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                            (unsigned char)(len >> 8), (unsigned char)len};
    pt_buf_t frame = {0};
    if (pt_buf_append(&frame, hdr, 5) != 0 || pt_buf_append(&frame, msg, len) != 0) {
        pt_buf_dispose(&frame);
        return -1;
    }
    if (g->cs == NULL) {
        pt_buf_move(&g->out, &frame); /* sent when the call starts */
        return 0;
    }
    g->cc.codec->ops->encode_data(g->cs, &frame, 0);
    pt_buf_dispose(&frame);
    return 0;
}

int pt_grpc_stream_send_done(pt_grpc_stream_t *g)
{
    if (g->over || g->send_done)
        return -1;
    g->send_done = 1;
    if (g->cs != NULL) {
        pt_buf_t none = {0};
        g->cc.codec->ops->encode_data(g->cs, &none, 1);
    }
    return 0;
}

void pt_grpc_stream_free(pt_grpc_stream_t *g)
{
    if (g == NULL)
        return;
    ev_timer_stop(g->loop, &g->close_timer);
    if (g->cs != NULL)
        g->cc.codec->ops->reset_stream(g->cs);
    pt_cluster_client_close(&g->cc);
    pt_buf_dispose(&g->out);
    pt_buf_dispose(&g->in);
    pt_arena_dispose(&g->arena);
    pt_cluster_unref(g->cluster);
    free(g->path);
    free(g->authority);
    free(g);
}
