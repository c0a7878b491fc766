/* envoy.filters.http.buffer: the whole request body is held until it has all arrived, and
 * only then does the request go on (to an upstream that wants whole requests, or to protect
 * one from slow uploads).
 *
 * As Envoy does it: a request without a body passes at once; otherwise the headers stop
 * here, each chunk is buffered (PT_STOP_BUFFER) under max_request_bytes, and the last chunk
 * (or the trailers) lets everything go, headers first. A body beyond max_request_bytes is
 * answered 413 (downstream_rq_too_large): at once when its content-length says so, else
 * when the bytes pass the limit, the last chunk included. A request with neither
 * content-length nor trailers gets a content-length of what was buffered, so the upstream
 * sees a framed request. Per-route configs (BufferPerRoute) are not supported. */
#include <stdio.h>

#include "filters/http_filter.h"
#include "proxy/config.h"
#include "proxy/conn_manager.h"

typedef struct buffer_config {
    uint32_t max_request_bytes;
} buffer_config_t;

typedef struct buffer_state {
    pt_http_headers_t *headers; /* the request's, to add content-length to */
} buffer_state_t;

static void *buffer_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    size_t before = r->nerrors;
    buffer_config_t *c = pt_arena_alloc(&cfg->arena, sizeof(*c));
    if (c == NULL)
        return NULL;
    uint64_t max = 0;
    if (pt_cfg_uint(r, "max_request_bytes", &max, 0, 1, UINT32_MAX) == 0)
        pt_cfg_error(r, "max_request_bytes", "is required");
    c->max_request_bytes = (uint32_t)max;
    return r->nerrors == before ? c : NULL;
}

/* A content-length value (the codec already checked it is one): 1 and the value, or 0. */
static int parse_length(const char *v, uint64_t *out)
{
    uint64_t n = 0;
    size_t i = 0;
    for (; v[i] >= '0' && v[i] <= '9' && i < 19; i++)
        n = n * 10 + (uint64_t)(v[i] - '0');
    *out = n;
    return i > 0 && v[i] == '\0';
}

/* The answer the filter manager gives a buffer past its limit (413, downstream_rq_too_large). */
static void too_large(pt_http_stream_t *s)
{
    pt_stat_inc(s->config->stats.downstream_rq_too_large);
    pt_http_stream_local_reply(s, 413, "Payload Too Large", NULL, 0, "request_payload_too_large");
}

static int buffer_decode_headers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                                 int end_stream)
{
    const buffer_config_t *c = cfg;
    buffer_state_t *st = state;
    if (end_stream)
        return PT_CONTINUE;
    /* A body announced too big is refused before it is read. */
    uint64_t announced;
    const char *cl = pt_http_headers_get(h, "content-length");
    if (cl != NULL && parse_length(cl, &announced) && announced > c->max_request_bytes) {
        too_large(s);
        return PT_STOP;
    }
    st->headers = h;
    pt_http_stream_set_decoder_buffer_limit(s, c->max_request_bytes);
    return PT_STOP;
}

static int buffer_decode_data(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                              int end_stream)
{
    const buffer_config_t *c = cfg;
    buffer_state_t *st = state;
    if (!end_stream)
        return PT_STOP_BUFFER; /* the filter manager answers 413 past the limit */
    /* The last chunk counts too, though it is never held. */
    const pt_buf_t *held = pt_http_stream_decoding_buffer(s);
    size_t total = (held != NULL ? pt_buf_len(held) : 0) + pt_buf_len(data);
    if (total > c->max_request_bytes) {
        too_large(s);
        return PT_STOP;
    }
    if (st->headers != NULL && pt_http_headers_get(st->headers, "content-length") == NULL) {
        char v[24];
        snprintf(v, sizeof(v), "%zu", total);
        if (pt_http_headers_set(st->headers, "content-length", v) != 0) {
            pt_http_stream_local_reply(s, 503, "", NULL, 0, "out_of_memory");
            return PT_STOP;
        }
    }
    return PT_CONTINUE;
}

static int buffer_decode_trailers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *t)
{
    (void)s, (void)cfg, (void)state, (void)t;
    return PT_CONTINUE;
}

const pt_http_filter_ops_t pt_buffer_filter = {
    .name = "envoy.filters.http.buffer",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
    .state_size = sizeof(buffer_state_t),
    .parse = buffer_parse,
    .decode_headers = buffer_decode_headers,
    .decode_data = buffer_decode_data,
    .decode_trailers = buffer_decode_trailers,
};
