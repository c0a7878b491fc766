#include "discovery/rest_fetch.h"
#include "discovery/cluster_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/buf.h"
#include "proxy/cluster.h"
#include "proxy/config_reader.h"
#include "proxy/conn.h"
#include "proxy/http.h"
#include "proxy/http_codec.h"
#include "proxy/worker.h"
#include "tls/transport.h"

struct pt_rest_fetch {
    pt_cluster_client_t cc; /* the connection and its codec */
    pt_http_codec_stream_t *cs;
    pt_cluster_t *cluster; /* a reference: its protocol and transport */
    pt_arena_t arena;      /* the request's headers */
    char *method, *path, *authority, *content_type;
    pt_buf_t body; /* the request's, until sent */
    pt_buf_t in;   /* the response's */
    int status;
    int over;
    unsigned flags;   /* PT_REST_FETCH_* */
    int grpc_status;  /* from the response's head or trailers; -1 until seen */
    char why[256];
    ev_timer done_timer; /* reports the outcome from a loop turn of its own */
    ev_timer deadline;
    struct ev_loop *loop;
    pt_rest_fetch_cb cb;
    void *data;
};

static void on_done_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    pt_rest_fetch_t *f = t->data;
    char *body = pt_buf_len(&f->in) > 0 ? pt_buf_pullup(&f->in, pt_buf_len(&f->in)) : NULL;
    size_t len = body != NULL ? pt_buf_len(&f->in) : 0;
    if (f->status != 0 && len > 0 && body == NULL) {
        f->status = 0;
        snprintf(f->why, sizeof(f->why), "out of memory");
    }
    /* NUL-terminated for the JSON parser: a copy, as pulled-up bytes have no room after. */
    char *text = malloc(len + 1);
    if (text == NULL) {
        f->cb(f->data, 0, "", 0, "out of memory");
        return;
    }
    if (len > 0)
        memcpy(text, body, len);
    text[len] = '\0';
    char why[sizeof(f->why)]; /* the callback may free f */
    memcpy(why, f->why, sizeof(why));
    f->cb(f->data, f->status, text, len, why);
    free(text);
}

/* The outcome: status (0: none, why says what happened). */
static void finish(pt_rest_fetch_t *f, int status, const char *why)
{
    if (f->over)
        return;
    f->over = 1;
    f->cs = NULL;
    f->status = status;
    snprintf(f->why, sizeof(f->why), "%s", why != NULL ? why : "");
    ev_timer_stop(f->loop, &f->deadline);
    ev_timer_set(&f->done_timer, 0., 0.);
    ev_timer_start(f->loop, &f->done_timer);
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    finish(t->data, 0, "request_timeout ran out");
}

/* ---- the exchange's callbacks (a client codec) --------------------------------------- */

static void on_headers(void *req, pt_http_headers_t *headers, int end_stream)
{
    pt_rest_fetch_t *f = req;
    int status = pt_http_status_value(pt_http_headers_get(headers, ":status"), 0);
    if (status >= 100 && status < 200)
        return;
    f->status = status;
    /* A gRPC call that fails at once answers trailers-only: grpc-status in the head. */
    const char *gs = pt_http_headers_get(headers, "grpc-status");
    if (gs != NULL)
        f->grpc_status = atoi(gs);
    if (end_stream)
        finish(f, status, NULL);
}

static void on_data(void *req, pt_buf_t *data, int end_stream)
{
    pt_rest_fetch_t *f = req;
    if (pt_buf_len(&f->in) + pt_buf_len(data) > PT_DOC_MAX_BYTES) {
        finish(f, 0, "a response larger than 64 MiB");
        return;
    }
    pt_buf_move(&f->in, data);
    if (end_stream)
        finish(f, f->status, NULL);
}

static void on_trailers(void *req, pt_http_headers_t *trailers)
{
    pt_rest_fetch_t *f = req;
    const char *gs = pt_http_headers_get(trailers, "grpc-status");
    if (gs != NULL)
        f->grpc_status = atoi(gs);
    finish(f, f->status, NULL);
}

static void on_reset(void *req, pt_http_reset_reason_t reason)
{
    pt_rest_fetch_t *f = req;
    char why[96];
    snprintf(why, sizeof(why), "stream reset: %s", pt_http_reset_reason_str(reason));
    finish(f, 0, why);
}

static void on_write_watermark(void *req, int above)
{
    (void)req, (void)above;
}

static const pt_http_client_callbacks_t fetch_callbacks = {
    .on_headers = on_headers,
    .on_data = on_data,
    .on_trailers = on_trailers,
    .on_reset = on_reset,
    .on_write_watermark = on_write_watermark,
};

/* ---- the connection ----------------------------------------------------------------- */

static void on_failed(void *owner, const char *why)
{
    finish(owner, 0, why);
}

/* The connection is up: the request goes. */
static int start_request(void *owner)
{
    pt_rest_fetch_t *f = owner;
    pt_http_headers_t *h = pt_arena_alloc(&f->arena, sizeof(*h));
    if (h == NULL)
        return -1;
    pt_http_headers_init(h, &f->arena);
    char len[24];
    snprintf(len, sizeof(len), "%zu", pt_buf_len(&f->body));
    int err = pt_http_headers_add_str(h, ":method", f->method) |
              pt_http_headers_add_ref(h, ":scheme", pt_conn_is_tls(f->cc.conn) ? "https" : "http") |
              pt_http_headers_add_str(h, ":path", f->path) |
              pt_http_headers_add_str(h, ":authority", f->authority) |
              pt_http_headers_add_str(h, "content-type", f->content_type) |
              pt_http_headers_add_str(h, "content-length", len);
    if (f->flags & PT_REST_FETCH_GRPC)
        err |= pt_http_headers_add_ref(h, "te", "trailers");
    if (err != 0)
        return -1;
    const pt_http_client_codec_ops_t *ops = f->cc.codec->ops;
    f->cs = ops->new_stream(f->cc.codec, &fetch_callbacks, f, &f->arena);
    if (f->cs == NULL)
        return -1;
    ops->encode_headers(f->cs, h, pt_buf_len(&f->body) == 0);
    if (f->cs != NULL && pt_buf_len(&f->body) > 0)
        ops->encode_data(f->cs, &f->body, 1);
    return 0;
}

static void fetch_dispose(pt_rest_fetch_t *f)
{
    pt_cluster_unref(f->cluster);
    pt_buf_dispose(&f->body);
    pt_buf_dispose(&f->in);
    pt_arena_dispose(&f->arena);
    free(f->method);
    free(f->path);
    free(f->authority);
    free(f->content_type);
    free(f);
}

pt_rest_fetch_t *pt_rest_fetch_start(const pt_cluster_t *cluster, pt_worker_t *w,
                                     const char *method, const char *path, const char *authority,
                                     const char *content_type, const void *body, size_t len,
                                     uint64_t timeout_ms, pt_rest_fetch_cb cb, void *data,
                                     char *err, size_t errlen)
{
    return pt_rest_fetch_start_ex(cluster, w, method, path, authority, content_type, body, len,
                                  timeout_ms, 0, cb, data, err, errlen);
}

int pt_rest_fetch_grpc_status(const pt_rest_fetch_t *f)
{
    return f->grpc_status;
}

pt_rest_fetch_t *pt_rest_fetch_start_ex(const pt_cluster_t *cluster, pt_worker_t *w,
                                        const char *method, const char *path,
                                        const char *authority, const char *content_type,
                                        const void *body, size_t len, uint64_t timeout_ms,
                                        unsigned flags, pt_rest_fetch_cb cb, void *data,
                                        char *err, size_t errlen)
{
    pt_buf_t b = {0};
    if (len > 0 && pt_buf_append(&b, body, len) != 0) {
        pt_buf_dispose(&b);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return pt_rest_fetch_start_buf(cluster, w, method, path, authority, content_type, &b,
                                   timeout_ms, flags, cb, data, err, errlen);
}

pt_rest_fetch_t *pt_rest_fetch_start_buf(const pt_cluster_t *cluster, pt_worker_t *w,
                                         const char *method, const char *path,
                                         const char *authority, const char *content_type,
                                         pt_buf_t *body, uint64_t timeout_ms, unsigned flags,
                                         pt_rest_fetch_cb cb, void *data, char *err,
                                         size_t errlen)
{
    pt_rest_fetch_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        pt_buf_dispose(body);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pt_buf_move(&f->body, body);
    f->cluster = pt_cluster_ref((pt_cluster_t *)cluster);
    if ((f->method = strdup(method)) == NULL || (f->path = strdup(path)) == NULL ||
        (f->authority = strdup(authority)) == NULL ||
        (f->content_type = strdup(content_type)) == NULL) {
        snprintf(err, errlen, "out of memory");
        fetch_dispose(f);
        return NULL;
    }
    f->cb = cb;
    f->data = data;
    f->flags = flags;
    f->grpc_status = -1;
    f->loop = w->loop;
    ev_timer_init(&f->done_timer, on_done_timer, 0., 0.);
    f->done_timer.data = f;
    ev_timer_init(&f->deadline, on_deadline, (double)timeout_ms / 1000.0, 0.);
    f->deadline.data = f;
    /* Each poll connects to the cluster's next host. */
    f->cc = (pt_cluster_client_t){.cluster = f->cluster, .ready = start_request,
                                  .failed = on_failed, .owner = f,
                                  .http2 = (flags & PT_REST_FETCH_GRPC) != 0};
    if (pt_cluster_client_connect(&f->cc, w, err, errlen) != 0) {
        fetch_dispose(f);
        return NULL;
    }
    if (timeout_ms > 0)
        ev_timer_start(f->loop, &f->deadline);
    return f;
}

void pt_rest_fetch_free(pt_rest_fetch_t *f)
{
    if (f == NULL)
        return;
    ev_timer_stop(f->loop, &f->done_timer);
    ev_timer_stop(f->loop, &f->deadline);
    if (f->cs != NULL)
        f->cc.codec->ops->reset_stream(f->cs);
    pt_cluster_client_close(&f->cc);
    fetch_dispose(f);
}
