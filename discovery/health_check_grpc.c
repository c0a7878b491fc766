#include "discovery/health_check_grpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/arena.h"
#include "proxy/buf.h"
#include "proxy/cluster.h"
#include "proxy/header_mutation.h"
#include "proxy/http.h"
#include "proxy/http_codec.h"

#define CHECK_PATH     "/grpc.health.v1.Health/Check"
#define MAX_RESPONSE   4096 /* a HealthCheckResponse is a few bytes; more is not one */

struct pt_hc_grpc {
    pt_http_client_codec_t *codec;
    pt_http_codec_stream_t *stream; /* the Check in flight, or NULL */
    pt_arena_t arena;               /* the Check's headers, both ways */
    pt_buf_t body;                  /* the response's messages so far */
    int status_ok;                  /* response head: 200 and application/grpc */
    int closed;                     /* the connection is gone */
    /* A Check that ends while pt_hc_grpc_check still starts it (a write that fails at
     * once) is reported when that returns: the callback may free the probe. */
    int starting, ended, outcome;
    char why[160];
    pt_hc_grpc_done_fn done;
    void *owner;
};

/* ---- the messages ------------------------------------------------------------------ */

size_t pt_hc_grpc_encode_request(const char *service, unsigned char *out)
{
    size_t n = strlen(service), o = 5;
    if (n > 0) { /* field 1, length-delimited: the service's name */
        out[o++] = 0x0a;
        for (size_t v = n; ; v >>= 7) {
            out[o++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
            if (v <= 0x7f)
                break;
        }
        memcpy(out + o, service, n);
        o += n;
    }
    size_t len = o - 5;
    out[0] = 0; /* not compressed */
    out[1] = (unsigned char)(len >> 24);
    out[2] = (unsigned char)(len >> 16);
    out[3] = (unsigned char)(len >> 8);
    out[4] = (unsigned char)len;
    return o;
}

static int read_varint(const unsigned char *p, size_t len, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*i >= len)
            return -1;
        unsigned char b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

int pt_hc_grpc_parse_response(const unsigned char *body, size_t len)
{
    if (len < 5 || body[0] != 0)
        return -1; /* no message, or a compressed one (never asked for) */
    size_t mlen = (size_t)body[1] << 24 | (size_t)body[2] << 16 | (size_t)body[3] << 8 | body[4];
    if (mlen != len - 5)
        return -1; /* more than one message, or a cut one */
    const unsigned char *m = body + 5;
    int status = 0; /* proto3: absent is UNKNOWN */
    for (size_t i = 0; i < mlen;) {
        uint64_t key, v;
        if (read_varint(m, mlen, &i, &key) != 0)
            return -1;
        switch (key & 7) {
        case 0:
            if (read_varint(m, mlen, &i, &v) != 0)
                return -1;
            if (key >> 3 == 1)
                status = v <= 3 ? (int)v : 0; /* a status this side does not know */
            break;
        case 1:
            if (mlen - i < 8)
                return -1;
            i += 8;
            break;
        case 2:
            if (read_varint(m, mlen, &i, &v) != 0 || v > mlen - i)
                return -1;
            i += (size_t)v;
            break;
        case 5:
            if (mlen - i < 4)
                return -1;
            i += 4;
            break;
        default:
            return -1;
        }
    }
    return status;
}

/* ---- the call ---------------------------------------------------------------------- */

static void finish(pt_hc_grpc_t *g, int outcome, const char *why)
{
    g->stream = NULL; /* the codec forgets it as the stream ends */
    pt_buf_dispose(&g->body);
    if (g->starting) {
        g->ended = 1;
        g->outcome = outcome;
        snprintf(g->why, sizeof(g->why), "%s", why ? why : "");
        return;
    }
    /* The arena stays: the codec may still read the headers it holds after this callback.
     * The next Check or pt_hc_grpc_free lets it go. */
    g->done(g->owner, outcome, why); /* may free g */
}

/* The gRPC status of a header block: 0 for OK, the number, or -1 when absent. */
static int grpc_status(const pt_http_headers_t *h)
{
    const char *v = pt_http_headers_get(h, "grpc-status");
    if (v == NULL || v[0] < '0' || v[0] > '9')
        return -1;
    return atoi(v);
}

static void judge(pt_hc_grpc_t *g, const pt_http_headers_t *trailers)
{
    char why[160];
    int gs = grpc_status(trailers);
    if (gs != 0) {
        const char *msg = pt_http_headers_get(trailers, "grpc-message");
        if (gs < 0)
            snprintf(why, sizeof(why), "no grpc-status");
        else
            snprintf(why, sizeof(why), "grpc-status %d%s%s", gs, msg ? ": " : "", msg ? msg : "");
        finish(g, PT_HC_GRPC_FAILED, why);
        return;
    }
    size_t n = pt_buf_len(&g->body);
    unsigned char msg[MAX_RESPONSE];
    pt_buf_copyout(&g->body, 0, msg, n);
    int status = pt_hc_grpc_parse_response(msg, n);
    static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    if (status == 1) {
        finish(g, PT_HC_GRPC_SERVING, NULL);
        return;
    }
    if (status < 0)
        snprintf(why, sizeof(why), "not one HealthCheckResponse");
    else
        snprintf(why, sizeof(why), "status %s", names[status]);
    finish(g, PT_HC_GRPC_FAILED, why);
}

static void on_headers(void *req, pt_http_headers_t *headers, int end_stream)
{
    pt_hc_grpc_t *g = req;
    int status = pt_http_status_value(pt_http_headers_get(headers, ":status"), 0);
    if (status >= 100 && status < 200)
        return; /* interim */
    if (status != 200) {
        char why[48];
        snprintf(why, sizeof(why), "HTTP status %d", status);
        finish(g, PT_HC_GRPC_FAILED, why);
        return;
    }
    const char *ct = pt_http_headers_get(headers, "content-type");
    if (ct == NULL || strncasecmp(ct, "application/grpc", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != '+' && ct[16] != ';')) {
        finish(g, PT_HC_GRPC_FAILED, "not a gRPC response (content-type)");
        return;
    }
    g->status_ok = 1;
    if (end_stream)
        judge(g, headers); /* trailers-only: the status is in the head */
}

static void on_data(void *req, pt_buf_t *data, int end_stream)
{
    pt_hc_grpc_t *g = req;
    if (pt_buf_len(&g->body) + pt_buf_len(data) > MAX_RESPONSE) {
        pt_buf_dispose(data);
        finish(g, PT_HC_GRPC_FAILED, "response too large");
        return;
    }
    pt_buf_move(&g->body, data);
    if (end_stream)
        finish(g, PT_HC_GRPC_FAILED, "no grpc-status");
}

static void on_trailers(void *req, pt_http_headers_t *trailers)
{
    judge(req, trailers);
}

static void on_reset(void *req, pt_http_reset_reason_t reason)
{
    char why[64];
    snprintf(why, sizeof(why), "stream %s", pt_http_reset_reason_str(reason));
    finish(req, PT_HC_GRPC_NETWORK, why);
}

static void on_write_watermark(void *req, int above)
{
    (void)req, (void)above; /* a Check is a few bytes */
}

static const pt_http_client_callbacks_t callbacks = {
    .on_headers = on_headers,
    .on_data = on_data,
    .on_trailers = on_trailers,
    .on_reset = on_reset,
    .on_write_watermark = on_write_watermark,
};

static void on_closed(void *owner, pt_http_client_codec_t *codec)
{
    (void)codec;
    pt_hc_grpc_t *g = owner;
    g->closed = 1;
}

pt_hc_grpc_t *pt_hc_grpc_new(pt_conn_t *conn, const struct pt_cluster_http2 *opts,
                             pt_hc_grpc_done_fn done, void *owner)
{
    pt_hc_grpc_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->done = done;
    g->owner = owner;
    g->codec = pt_http2_client_codec_new(conn, opts, NULL, on_closed, g);
    if (g->codec == NULL) {
        free(g);
        return NULL;
    }
    return g;
}

int pt_hc_grpc_check(pt_hc_grpc_t *g, const char *service, const char *authority,
                     const struct pt_header_mutations *metadata)
{
    if (g->stream != NULL || !pt_hc_grpc_reusable(g))
        return -1;
    pt_arena_dispose(&g->arena); /* the last Check's */
    pt_http_headers_t *h = pt_arena_alloc(&g->arena, sizeof(*h));
    size_t slen = strlen(service);
    unsigned char *req = pt_arena_alloc(&g->arena, slen + 32);
    if (h == NULL || req == NULL)
        return -1;
    pt_http_headers_init(h, &g->arena);
    int err = pt_http_headers_add_ref(h, ":method", "POST") |
              pt_http_headers_add_ref(h, ":scheme", "http") |
              pt_http_headers_add_ref(h, ":path", CHECK_PATH) |
              pt_http_headers_add_str(h, ":authority", authority) |
              pt_http_headers_add_ref(h, "content-type", "application/grpc") |
              pt_http_headers_add_ref(h, "te", "trailers") |
              pt_http_headers_add_ref(h, "user-agent", "Envoy/HC");
    if (err == 0 && metadata != NULL)
        pt_header_mutations_apply(metadata, h, NULL);
    pt_buf_t body = {0};
    err |= pt_buf_append(&body, req, pt_hc_grpc_encode_request(service, req));
    if (err != 0) {
        pt_buf_dispose(&body);
        return -1;
    }
    g->status_ok = 0;
    g->stream = g->codec->ops->new_stream(g->codec, &callbacks, g, &g->arena);
    if (g->stream == NULL) {
        pt_buf_dispose(&body);
        return -1;
    }
    /* Headers then the one message; a failure on the way comes back as on_reset. */
    g->starting = 1;
    g->ended = 0;
    g->codec->ops->encode_headers(g->stream, h, 0);
    if (g->stream != NULL)
        g->codec->ops->encode_data(g->stream, &body, 1);
    pt_buf_dispose(&body);
    g->starting = 0;
    if (g->ended) {
        g->done(g->owner, g->outcome, g->why[0] ? g->why : NULL); /* may free g */
    }
    return 0;
}

int pt_hc_grpc_reusable(const pt_hc_grpc_t *g)
{
    return !g->closed && g->codec->ops->reusable(g->codec);
}

void pt_hc_grpc_free(pt_hc_grpc_t *g)
{
    if (g == NULL)
        return;
    if (g->stream != NULL)
        g->codec->ops->reset_stream(g->stream);
    g->codec->ops->destroy(g->codec);
    pt_buf_dispose(&g->body);
    pt_arena_dispose(&g->arena);
    free(g);
}
