/* The HTTP connection manager (envoy.filters.network.http_connection_manager): the
 * terminal network filter that turns a downstream connection into HTTP streams.
 *
 * Per connection it creates a server codec from a table by codec_type (HTTP/1 or HTTP/2;
 * AUTO picks by the negotiated ALPN on TLS, else by the first bytes) and per
 * request a pt_http_stream_t holding everything that request needs: an arena, the header
 * maps, the stream info the access log reads, the resolved route, and each HTTP filter's
 * state. It applies Envoy's request/response header rules (x-forwarded-for,
 * x-forwarded-proto, x-request-id, server, hop-by-hop), runs the HTTP filters, enforces
 * the stream timeouts, counts the http.<stat_prefix>.* stats and writes the access log
 * when a stream completes. Streams are freed one loop turn after they complete, so no
 * callback frame can outlive its stream. */
#ifndef PT_CONN_MANAGER_H
#define PT_CONN_MANAGER_H

#include <ev.h>

#include "filters/http_filter.h"
#include "proxy/access_log.h"
#include "proxy/config.h"
#include "proxy/http.h"
#include "proxy/http_codec.h"
#include "proxy/http_filter_manager.h"
#include "proxy/route.h"
#include "proxy/worker.h"

typedef struct pt_hcm_conn pt_hcm_conn_t;

#define PT_HCM_STATS(X)                                                                        \
    X(downstream_cx_total)                                                                     \
    X(downstream_cx_http1_total)                                                               \
    X(downstream_cx_http2_total)                                                               \
    X(downstream_cx_destroy)                                                                   \
    X(downstream_cx_idle_timeout)                                                              \
    X(downstream_cx_delayed_close_timeout)                                                     \
    X(downstream_cx_max_duration_reached)                                                      \
    X(downstream_cx_protocol_error)                                                            \
    X(downstream_cx_rx_bytes_total)                                                            \
    X(downstream_cx_tx_bytes_total)                                                            \
    X(downstream_cx_upgrades_total)                                                            \
    X(downstream_rq_total)                                                                     \
    X(downstream_rq_http1_total)                                                               \
    X(downstream_rq_http2_total)                                                               \
    X(downstream_rq_completed)                                                                 \
    X(downstream_rq_1xx)                                                                       \
    X(downstream_rq_2xx)                                                                       \
    X(downstream_rq_3xx)                                                                       \
    X(downstream_rq_4xx)                                                                       \
    X(downstream_rq_5xx)                                                                       \
    X(downstream_rq_timeout)                                                                   \
    X(downstream_rq_idle_timeout)                                                              \
    X(downstream_rq_header_timeout)                                                            \
    X(downstream_rq_rx_reset)                                                                  \
    X(downstream_rq_tx_reset)                                                                  \
    X(downstream_rq_too_many_premature_resets)                                                 \
    X(downstream_rq_too_large)                                                                 \
    X(downstream_rq_failed_path_normalization)                                                 \
    X(downstream_rq_redirected_with_normalized_path)                                           \
    X(downstream_rq_ws_on_non_ws_route)                                                        \
    X(downstream_rq_response_before_rq_complete)                                               \
    X(no_route)                                                                                \
    X(no_cluster)                                                                              \
    X(rq_redirect)                                                                             \
    X(rq_direct_response)                                                                      \
    X(rq_total)                                                                                \
    X(rq_reset_after_downstream_response_started)

#define PT_HCM_GAUGES(X)                                                                       \
    X(downstream_cx_active)                                                                    \
    X(downstream_cx_http1_active)                                                              \
    X(downstream_cx_http2_active)                                                              \
    X(downstream_cx_upgrades_active)                                                           \
    X(downstream_rq_active)

/* Milliseconds: a connection's life (from the accept), a request's (from its first byte to
 * the end of its stream). */
#define PT_HCM_HISTOGRAMS(X)                                                                   \
    X(downstream_cx_length_ms)                                                                 \
    X(downstream_rq_time)

typedef struct pt_hcm_stats {
#define PT_X(n) pt_stat_t n;
    PT_HCM_STATS(PT_X) PT_HCM_GAUGES(PT_X) PT_HCM_HISTOGRAMS(PT_X)
#undef PT_X
} pt_hcm_stats_t;

typedef enum pt_server_header_transformation {
    PT_SERVER_HEADER_OVERWRITE,
    PT_SERVER_HEADER_APPEND_IF_ABSENT,
    PT_SERVER_HEADER_PASS_THROUGH,
} pt_server_header_transformation_t;

typedef enum pt_fcc_mode {
    PT_FCC_SANITIZE,
    PT_FCC_FORWARD_ONLY,
    PT_FCC_APPEND_FORWARD,
    PT_FCC_SANITIZE_SET,
    PT_FCC_ALWAYS_FORWARD_ONLY,
} pt_fcc_mode_t;

typedef enum pt_escaped_slashes {
    PT_ESCAPED_SLASHES_KEEP,     /* IMPLEMENTATION_SPECIFIC_DEFAULT, KEEP_UNCHANGED */
    PT_ESCAPED_SLASHES_REJECT,   /* REJECT_REQUEST: 400 */
    PT_ESCAPED_SLASHES_REDIRECT, /* UNESCAPE_AND_REDIRECT: 307 to the unescaped path */
    PT_ESCAPED_SLASHES_FORWARD,  /* UNESCAPE_AND_FORWARD */
} pt_escaped_slashes_t;

/* codec_type: which server codec a connection gets (proxy/http_codec.h). */
typedef enum pt_hcm_codec_type {
    PT_HCM_CODEC_AUTO,  /* TLS: by ALPN (h2 or not); plain text: the HTTP/2 preface or not */
    PT_HCM_CODEC_HTTP1,
    PT_HCM_CODEC_HTTP2, /* prior knowledge on plain text, ALPN h2 on TLS */
} pt_hcm_codec_type_t;

typedef struct pt_hcm_config {
    const char *stat_prefix;
    pt_hcm_codec_type_t codec_type;
    pt_hcm_stats_t stats;
    pt_route_config_t *route_config; /* inline, or NULL with rds_name */
    const char *rds_name;            /* rds.route_config_name: routes from RDS */
    unsigned rds_slot;               /* its slot in views (pt_rds_slot) */
    pt_http_filter_t *filters;
    int has_disabled_filters; /* some filter is disabled by default (HttpFilter.disabled) */
    unsigned nfilters;
    pt_access_log_t **access_logs;
    unsigned naccess_logs;
    unsigned access_log_needs; /* PT_FORMAT_NEEDS_* of its access logs */
    pt_http_server_settings_t settings;
    int use_remote_address;
    uint32_t xff_num_trusted_hops;
    int skip_xff_append;
    const char *server_name;
    pt_server_header_transformation_t server_header_transformation;
    int generate_request_id;
    int preserve_external_request_id;
    int always_set_request_id_in_response;
    int proxy_100_continue;
    uint64_t idle_timeout_ms;            /* connection idle (no stream), default 1h */
    uint64_t stream_idle_timeout_ms;     /* default 5 min */
    uint64_t request_timeout_ms;         /* 0 = disabled */
    uint64_t request_headers_timeout_ms; /* 0 = disabled */
    uint64_t max_stream_duration_ms;     /* 0 = disabled */
    uint32_t max_requests_per_connection;
    int accept_http_10;
    const char *default_host_for_http_10;
    pt_upgrade_config_t *upgrades;
    unsigned nupgrades;
    int strip_any_host_port;
    int strip_matching_host_port; /* only when the port is the listener's */
    int normalize_path, merge_slashes;
    uint32_t delayed_close_timeout_ms; /* default 1000; 0 closes at once */
    uint64_t max_connection_duration_ms; /* 0: none; then the connection drains */
    uint64_t drain_timeout_ms;         /* HTTP/2's GOAWAY interval; HTTP/1 drains with close */
    pt_escaped_slashes_t escaped_slashes; /* path_with_escaped_slashes_action */
    const char *via;              /* appended to request and response via headers, or NULL */
    uint32_t buffer_limit; /* body bytes held while a filter pauses the chain */
    pt_fcc_mode_t forward_client_cert;
    int xfcc_subject, xfcc_dns, xfcc_uri;
    const struct pt_tracing_config *tracing; /* NULL: no tracing, and no cost */
} pt_hcm_config_t;

/* Stream state bits. */
enum pt_http_stream_flags {
    PT_HS_REQUEST_END = 1u << 0,    /* the whole request arrived */
    PT_HS_RESPONSE_STARTED = 1u << 1,
    PT_HS_RESPONSE_END = 1u << 2,
    PT_HS_COMPLETE = 1u << 3,       /* logged and released; waiting to be freed */
    PT_HS_RESPONSE_WRITTEN = 1u << 4, /* the response head left the encoders */
    PT_HS_UPGRADE = 1u << 5,        /* a protocol upgrade (WebSocket) was requested */
    PT_HS_LOCAL_REPLY = 1u << 6,
    PT_HS_HEAD_REQUEST = 1u << 7,
    PT_HS_ABOVE_HIGH = 1u << 8,     /* downstream write queue above its watermark */
    PT_HS_ENCODER_HELD = 1u << 9,   /* an encoder holds more than the buffer limit */
    PT_HS_READ_PAUSED = 1u << 10,   /* a filter holds more of the request than the limit */
    PT_HS_FILTER_PAUSED = 1u << 11, /* a filter paused reading (pt_http_stream_read_disable) */
    PT_HS_HEADERS_TIMER = 1u << 12, /* request_timer is the request_headers_timeout (HTTP/2) */
    PT_HS_UPGRADED = 1u << 13,      /* an HTTP/2 tunnel: the stream holds upgrades_active */
    PT_HS_CONNECT = 1u << 14,       /* a CONNECT (with PT_HS_UPGRADE): a 2xx starts the tunnel */
};

struct pt_http_stream {
    pt_hcm_conn_t *hcm;
    pt_http_codec_stream_t *cs;
    const pt_hcm_config_t *config;
    /* The view the request resolves clusters through, pinned until the stream is released:
     * the clusters it resolved stay valid for its retries and timers (proxy/view.h). */
    struct pt_worker_view *view;
    const pt_route_config_t *route_config; /* the inline one, or the view's from RDS */
    pt_worker_t *worker;
    /* The connection's original destination when original_dst restored one (ORIGINAL_DST
     * clusters go there), else NULL. */
    const pt_addr_t *original_dst;
    pt_arena_t arena;
    pt_http_headers_t *request_headers;
    pt_http_headers_t *request_trailers;
    pt_http_headers_t *response_headers;
    pt_stream_info_t info;
    const pt_vhost_t *vhost;
    const pt_route_t *route;
    uint32_t flags;
    void **filter_state;
    pt_http_filter_manager_t fm; /* the filters' iteration, and what a stopped one holds */
    ev_timer idle_timer;       /* stream_idle_timeout (route idle_timeout overrides) */
    ev_timer request_timer;    /* request_timeout, max_stream_duration */
    uint64_t idle_timeout_ms;
    uint64_t last_activity_ms;
    const char *scheme;        /* "http" or "https" */
    int internal;              /* use_remote_address and a private client address */
    struct pt_http_stream *prev, *next;
    pt_defer_t release;
    struct pt_trace_span *span; /* the stream's span (proxy/tracing.h), or NULL */
};

/* ---- for HTTP filters ------------------------------------------------------------ */

/* Resumes the request (decoding) after a filter stopped it. */
void pt_http_stream_continue(pt_http_stream_t *s);
/* Resumes the response (encoding) after a filter stopped it. */
void pt_http_stream_continue_encoding(pt_http_stream_t *s);
/* The request bytes a filter may hold (PT_STOP_BUFFER) before the stream fails with 413;
 * the listener's buffer limit unless a filter sets it. */
static inline void pt_http_stream_set_decoder_buffer_limit(pt_http_stream_t *s, uint32_t n)
{
    pt_hfm_set_decode_limit(&s->fm, n);
}
/* What the filter that buffers the request (PT_STOP_BUFFER) holds so far, or NULL. */
static inline pt_buf_t *pt_http_stream_decoding_buffer(pt_http_stream_t *s)
{
    return pt_hfm_decoding_buffer(&s->fm);
}
/* From the running filter's trailers hook: bytes that go on before the trailers (a
 * compressor's last ones); takes them. */
static inline void pt_http_stream_add_encoded_data(pt_http_stream_t *s, pt_buf_t *data)
{
    pt_hfm_add_data(&s->fm, 1, data);
}
static inline void pt_http_stream_add_decoded_data(pt_http_stream_t *s, pt_buf_t *data)
{
    pt_hfm_add_data(&s->fm, 0, data);
}
/* Answers the request from petrel itself (404, 503, a redirect...). `flags` are
 * PT_RF(...) response flags; extra headers (may be NULL) are added to the response. If the
 * response already started, the stream is reset instead. */
void pt_http_stream_local_reply(pt_http_stream_t *s, int status, const char *body,
                                const pt_http_headers_t *extra, uint32_t flags,
                                const char *details);
/* Same, with a body of blen bytes that may hold NULs (direct_response inline_bytes). */
void pt_http_stream_local_reply_n(pt_http_stream_t *s, int status, const char *body,
                                  size_t blen, const pt_http_headers_t *extra, uint32_t flags,
                                  const char *details);
/* Response from the terminal filter; runs encoder filters in reverse order. */
void pt_http_stream_encode_headers(pt_http_stream_t *s, pt_http_headers_t *h, int end_stream);
void pt_http_stream_encode_data(pt_http_stream_t *s, pt_buf_t *data, int end_stream);
void pt_http_stream_encode_trailers(pt_http_stream_t *s, pt_http_headers_t *t);
void pt_http_stream_encode_100_continue(pt_http_stream_t *s);
/* Ends the stream abnormally (the downstream sees a reset/close). */
void pt_http_stream_reset(pt_http_stream_t *s, uint32_t flags, const char *details);
/* Pauses (1) or resumes (0) reading the request body from downstream. */
void pt_http_stream_read_disable(pt_http_stream_t *s, int disable);
int pt_http_stream_downstream_above_high(const pt_http_stream_t *s);
/* Turns the stream into a tunnel after the upstream accepted an upgrade (101). */
void pt_http_stream_upgrade(pt_http_stream_t *s);
/* The downstream connection (TLS identity, addresses). */
pt_conn_t *pt_http_stream_downstream_conn(const pt_http_stream_t *s);
/* The downstream protocol ("HTTP/1.1"...). */
const char *pt_http_stream_protocol(const pt_http_stream_t *s);

extern const pt_network_filter_ops_t pt_http_connection_manager_filter;

/* The listener and the config snapshot of a downstream connection. */
const pt_listener_config_t *pt_hcm_listener(const pt_hcm_conn_t *h);
const pt_config_t *pt_hcm_snapshot(const pt_hcm_conn_t *h);

/* Reads an Http2ProtocolOptions object (the reader is inside it) with Envoy's defaults and
 * ranges; fields petrel does not implement are errors naming them. */
void pt_http2_options_parse(pt_cfg_t *r, pt_http2_options_t *o);

/* For the HTTP filter whose hook is running: its most specific per-route config
 * (typed_per_filter_config of the stream's route, virtual host or route configuration, as
 * parsed by its parse_per_route), or NULL when there is none. */
const void *pt_http_stream_route_config(pt_http_stream_t *s);

#endif
