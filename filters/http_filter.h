/* HTTP filters: one ops table each, chosen by the @type of the typed_config in the
 * connection manager's http_filters list, run in order on request headers and in reverse
 * order on response headers. The last filter is the terminal one (the router): it alone
 * receives the request body and produces the response.
 *
 * Contract: decode_headers returns PT_CONTINUE to pass the request on, or PT_STOP when the
 * filter sent a local reply (pt_http_stream_local_reply) or will resume the chain later
 * with pt_http_stream_continue (a fault delay, say). Body bytes that arrive while a filter
 * holds the chain are buffered by the connection manager, up to the listener's buffer
 * limit, with downstream reads paused beyond it. Per-stream filter state is
 * state_size bytes of zeroed memory from the stream's arena. */
#ifndef PT_HTTP_FILTER_H
#define PT_HTTP_FILTER_H

#include "filters/filter.h"
#include "proxy/buf.h"
#include "proxy/http.h"

typedef struct pt_http_stream pt_http_stream_t;

typedef struct pt_http_filter_ops {
    const char *name;
    const char *type_url;
    unsigned terminal : 1;
    size_t state_size;
    void *(*parse)(pt_cfg_t *r, pt_config_t *cfg);
    int (*prepare)(void *filter_config, pt_config_t *cfg, const char *stat_prefix);
    /* Request path. */
    int (*decode_headers)(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                          int end_stream);
    /* Terminal filter only. */
    void (*decode_data)(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                        int end_stream);
    void (*decode_trailers)(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *t);
    /* Response path (non-terminal filters): may edit the headers. */
    void (*encode_headers)(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                           int end_stream);
    /* The downstream write queue went above (1) or below (0) its watermark (terminal). */
    void (*on_downstream_watermark)(pt_http_stream_t *s, void *cfg, void *state, int above);
    /* The stream ends early (downstream reset, timeout): stop all work for it. */
    void (*on_reset)(pt_http_stream_t *s, void *cfg, void *state);
    /* The stream is complete; release what the state holds. Always called once. */
    void (*on_destroy)(pt_http_stream_t *s, void *cfg, void *state);
} pt_http_filter_ops_t;

typedef struct pt_http_filter {
    const pt_http_filter_ops_t *ops;
    const char *name;
    void *config;
} pt_http_filter_t;

const pt_http_filter_ops_t *pt_http_filter_find(const char *type_url);

#endif
