/* HTTP filters: one ops table each, chosen by the @type of the typed_config in the
 * connection manager's http_filters list. Decoders run in order on the request's headers,
 * data and trailers; encoders run in reverse order on the response's. The last filter is
 * the terminal one (the router): it ends the request and produces the response.
 *
 * Every hook may return PT_CONTINUE or stop the message, as Envoy's filters do; the
 * connection manager's filter manager (proxy/http_filter_manager.h) holds what a stopped
 * filter holds, bounded by the listener's buffer limit, and a filter that stopped resumes
 * with pt_http_stream_continue (decoding) or pt_http_stream_continue_encoding. A filter
 * that answers the request itself calls pt_http_stream_local_reply and returns PT_STOP.
 * Hooks a filter leaves NULL let that part through. Per-stream filter state is state_size
 * bytes of zeroed memory from the stream's arena.
 *
 * Per-route configuration (typed_per_filter_config on a route, its virtual host or its route
 * configuration, keyed by the filter's name in http_filters): a filter that takes one parses
 * it with parse_per_route and finds the most specific one for the stream it runs on with
 * pt_http_stream_route_config (proxy/conn_manager.h). A filter may also be disabled by
 * default (HttpFilter.disabled) and enabled per route, or disabled per route
 * (envoy.config.route.v3.FilterConfig): a disabled filter's hooks do not run for the stream. */
#ifndef PT_HTTP_FILTER_H
#define PT_HTTP_FILTER_H

#include "filters/filter.h"
#include "proxy/buf.h"
#include "proxy/http.h"

typedef struct pt_http_stream pt_http_stream_t;

/* Beyond filter.h's PT_CONTINUE and PT_STOP (see proxy/http_filter_manager.h):
 * PT_STOP_BUFFER from a data hook holds the chunk with what is held already;
 * PT_STOP_ALL from a headers hook holds everything after them, unseen, until continued. */
#define PT_STOP_BUFFER 2
#define PT_STOP_ALL    3

typedef struct pt_http_filter_ops {
    const char *name;
    const char *type_url;
    unsigned terminal : 1;
    size_t state_size;
    void *(*parse)(pt_cfg_t *r, pt_config_t *cfg);
    int (*prepare)(void *filter_config, pt_config_t *cfg, const char *stat_prefix);
    /* The per-route config message when it is not type_url's (RBAC's RBACPerRoute), and its
     * parser: the result lives in `a` (the route configuration's arena) and is read by every
     * worker; NULL when the filter takes none. Runs on the main thread. */
    const char *per_route_type_url;
    void *(*parse_per_route)(pt_cfg_t *r, pt_arena_t *a);
    /* Request path, in config order. */
    int (*decode_headers)(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                          int end_stream);
    int (*decode_data)(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                       int end_stream);
    int (*decode_trailers)(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *t);
    /* Response path, in reverse order (never the terminal filter's). */
    int (*encode_headers)(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                          int end_stream);
    int (*encode_data)(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                       int end_stream);
    int (*encode_trailers)(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *t);
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
    int disabled; /* HttpFilter.disabled: only where a route enables it */
} pt_http_filter_t;

const pt_http_filter_ops_t *pt_http_filter_find(const char *type_url);
/* The filter whose per-route config is of this type, or NULL. */
const pt_http_filter_ops_t *pt_http_filter_find_per_route(const char *type_url);

#endif
