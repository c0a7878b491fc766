/* HTTP codecs: the wire protocol behind one ops table per direction, so the connection
 * manager and the router never see HTTP/1 or HTTP/2 framing.
 *
 * A server codec owns a downstream connection. It turns bytes into streams and calls the
 * pt_http_server_callbacks_t of its owner (the connection manager); the owner answers with
 * encode_* calls. A client codec owns an upstream connection and carries requests the
 * router gives it. Header maps are in the HTTP/2 shape (see proxy/http.h): the codec maps
 * the request line, status line and Host to and from pseudo-headers.
 *
 * Flow control is per stream: a stream's consumer calls read_disable when it cannot take
 * more; the codec stops reading the connection (HTTP/1) or withholds window (HTTP/2). The
 * codec reports its own write side above/below its watermarks through the callbacks. */
#ifndef PT_HTTP_CODEC_H
#define PT_HTTP_CODEC_H

#include "proxy/buf.h"
#include "proxy/conn.h"
#include "proxy/http.h"

typedef struct pt_http_server_codec_ops pt_http_server_codec_ops_t;
typedef struct pt_http_client_codec_ops pt_http_client_codec_ops_t;

/* Bases every codec's objects start with (`super`), so callers can reach the ops table. */
typedef struct pt_http_codec_stream {
    void *data; /* the owner's stream (server side) or request (client side) */
} pt_http_codec_stream_t;

typedef struct pt_http_server_codec {
    const pt_http_server_codec_ops_t *ops;
} pt_http_server_codec_t;

typedef struct pt_http_client_codec {
    const pt_http_client_codec_ops_t *ops;
} pt_http_client_codec_t;

/* Why a stream ended early; drives response flags and stats. */
typedef enum pt_http_reset_reason {
    PT_HTTP_RESET_LOCAL,            /* we reset it */
    PT_HTTP_RESET_REMOTE,           /* the peer reset it (RST, RST_STREAM) */
    PT_HTTP_RESET_CONNECTION_CLOSE, /* the connection ended under it */
    PT_HTTP_RESET_PROTOCOL_ERROR,   /* the peer broke the protocol */
    PT_HTTP_RESET_OVERFLOW,         /* a limit was hit */
    PT_HTTP_RESET_CONNECT_FAILURE,  /* (client) the connection never came up */
    PT_HTTP_RESET_REFUSED_STREAM,   /* (client) the peer refused the stream before it began:
                                       REFUSED_STREAM, or above a GOAWAY's last stream id */
} pt_http_reset_reason_t;

const char *pt_http_reset_reason_str(pt_http_reset_reason_t r);

/* envoy.config.core.v3.Http2ProtocolOptions as the HTTP/2 codec uses it (defaults: Envoy's). */
typedef struct pt_http2_options {
    uint32_t max_concurrent_streams;         /* 2147483647 */
    uint32_t initial_stream_window_size;     /* 268435456, at least 65535 */
    uint32_t initial_connection_window_size; /* 268435456, at least 65535 */
    uint32_t hpack_table_size;               /* 4096 */
    uint32_t max_outbound_frames;            /* 10000: frames queued and not yet written */
    uint32_t max_outbound_control_frames;    /* 1000: PING, SETTINGS and RST_STREAM of them */
    uint32_t max_consecutive_inbound_frames_with_empty_payload; /* 1 */
    uint32_t max_inbound_priority_frames_per_stream;            /* 100 */
    uint32_t max_inbound_window_update_frames_per_data_frame_sent; /* 10 */
    uint64_t keepalive_interval_ms;          /* connection_keepalive: 0 = no PINGs */
    uint64_t keepalive_timeout_ms;
    uint32_t keepalive_jitter_pct;           /* interval_jitter, default 15 */
    int override_stream_error;               /* override_stream_error_on_invalid_http_message */
    int allow_connect; /* SETTINGS_ENABLE_CONNECT_PROTOCOL: extended CONNECT (RFC 8441) */
} pt_http2_options_t;

/* The http2.* counters (Envoy's names), kept with the connection manager's config. */
#define PT_HTTP2_STATS(X)                                                                      \
    X(rx_reset)                                                                                \
    X(tx_reset)                                                                                \
    X(header_overflow)                                                                         \
    X(rx_messaging_error)                                                                      \
    X(outbound_flood)                                                                          \
    X(outbound_control_flood)                                                                  \
    X(inbound_empty_frames_flood)                                                              \
    X(inbound_priority_frames_flood)                                                           \
    X(inbound_window_update_frames_flood)                                                      \
    X(keepalive_timeout)                                                                       \
    X(requests_rejected_with_underscores_in_headers)                                           \
    X(goaway_sent)

typedef struct pt_http2_stats {
#define PT_X(n) pt_stat_t n;
    PT_HTTP2_STATS(PT_X)
#undef PT_X
} pt_http2_stats_t;

/* Limits and options a server codec needs from the connection manager's config. */
typedef struct pt_http_server_settings {
    uint32_t max_request_headers_kb; /* default 60 */
    uint32_t max_headers_count;      /* default 100 */
    int headers_with_underscores_action; /* 0 allow, 1 reject request, 2 drop header */
    /* http_protocol_options.ignore_http_11_upgrade: an HTTP/1.1 Upgrade whose value matches
     * one of these is dropped (with Connection's "upgrade") and the request goes on as a
     * plain one. h2c upgrades are dropped always, as in Envoy. */
    const struct pt_string_matcher *ignore_upgrade;
    unsigned nignore_upgrade;
    const char *server_name;         /* "server" header value, or NULL to pass through */
    uint64_t drain_timeout_ms;       /* HTTP/2: from the first GOAWAY to the final one */
    pt_http2_options_t http2;
    pt_http2_stats_t http2_stats;
} pt_http_server_settings_t;

/* ---- server side (downstream) ---------------------------------------------------- */

typedef struct pt_http_server_callbacks {
    /* The first bytes of a new request head arrived (request_headers_timeout starts). */
    void (*on_message_begin)(void *owner);
    /* A new request began; returns the owner's stream object (opaque to the codec) or NULL
     * to refuse it (the codec answers 503 and closes). */
    void *(*on_new_stream)(void *owner, pt_http_codec_stream_t *cs);
    /* Request headers are complete. `headers` lives in the stream arena the owner gave via
     * pt_http_server_codec_ops.stream_arena. end_stream: no body follows. */
    void (*on_headers)(void *stream, pt_http_headers_t *headers, int end_stream);
    /* Body bytes (moved out of `data`), possibly empty with end_stream set. */
    void (*on_data)(void *stream, pt_buf_t *data, int end_stream);
    void (*on_trailers)(void *stream, pt_http_headers_t *trailers);
    /* The stream ended before completing both ways. The owner releases it; the codec does
     * not touch it afterwards. */
    void (*on_reset)(void *stream, pt_http_reset_reason_t reason);
    /* A protocol error before a stream could be formed, or one the codec cannot attach to a
     * stream: status is the response to send (400, 408, 413, 431, 505). The codec sends it
     * (via the owner's local reply through send_error) and closes. */
    void (*on_protocol_error)(void *owner, void *stream, int status, const char *details);
    /* The downstream write queue went above (1) or back below (0) its watermark. */
    void (*on_write_watermark)(void *owner, void *stream, int above);
    /* The connection is gone (closed by peer or error); all streams were reset first. */
    void (*on_connection_closed)(void *owner);
    /* The connection has no active stream and may be closed/idle-timed by the owner. */
    void (*on_idle)(void *owner);
} pt_http_server_callbacks_t;

struct pt_http_server_codec_ops {
    const char *protocol; /* "HTTP/1.1", "HTTP/2" */
    pt_http_server_codec_t *(*create)(pt_conn_t *c, const pt_http_server_settings_t *settings,
                                      const pt_http_server_callbacks_t *cb, void *owner);
    /* The arena the codec should allocate stream headers from (set by the owner right after
     * on_new_stream returns). */
    void (*set_stream_arena)(pt_http_codec_stream_t *cs, pt_arena_t *arena);
    void (*encode_headers)(pt_http_codec_stream_t *cs, pt_http_headers_t *headers,
                           int end_stream);
    void (*encode_data)(pt_http_codec_stream_t *cs, pt_buf_t *data, int end_stream);
    void (*encode_trailers)(pt_http_codec_stream_t *cs, pt_http_headers_t *trailers);
    /* Sends a 100 Continue interim response. */
    void (*encode_100_continue)(pt_http_codec_stream_t *cs);
    void (*reset_stream)(pt_http_codec_stream_t *cs, pt_http_reset_reason_t reason);
    void (*read_disable)(pt_http_codec_stream_t *cs, int disable);
    /* Turns the connection into a raw byte tunnel after a 101 (HTTP/1 upgrade): bytes read
     * go to on_data, encode_data writes raw. HTTP/2 needs nothing: an extended CONNECT
     * (RFC 8441) reaches the owner as an upgrade request (GET with Upgrade and Connection:
     * upgrade), its 101 leaves as a 200, and the tunnel is the stream's DATA frames. */
    void (*upgrade)(pt_http_codec_stream_t *cs);
    /* Answers `status` (408 for a request-headers timeout) on a request still being read,
     * through on_protocol_error, and closes after it. */
    void (*send_error)(pt_http_server_codec_t *codec, int status, const char *details);
    /* No more requests on this connection: the request in flight, or on an idle connection
     * the next one, is answered with "connection: close" and the connection closes after
     * it. An idle connection is not closed here (the owner decides). */
    void (*shutdown_notice)(pt_http_server_codec_t *codec);
    /* Closes the connection now (resets active streams without callbacks). */
    void (*close)(pt_http_server_codec_t *codec, pt_close_how_t how);
    /* The protocol the stream's request used ("HTTP/1.0", "HTTP/1.1"). */
    const char *(*stream_protocol)(pt_http_codec_stream_t *cs);
    int (*stream_write_above_high)(pt_http_codec_stream_t *cs);
};

extern const pt_http_server_codec_ops_t pt_http1_server_codec;
/* HTTP/2 (RFC 9113) on nghttp2: many streams per connection. The connection must start
 * with the client preface (prior knowledge, or ALPN h2); bytes already read stay in c->in. */
extern const pt_http_server_codec_ops_t pt_http2_server_codec;
#define PT_HTTP2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PT_HTTP2_PREFACE_LEN 24

/* ---- client side (upstream) ------------------------------------------------------ */

typedef struct pt_http_client_callbacks {
    void (*on_headers)(void *req, pt_http_headers_t *headers, int end_stream);
    void (*on_data)(void *req, pt_buf_t *data, int end_stream);
    void (*on_trailers)(void *req, pt_http_headers_t *trailers);
    void (*on_reset)(void *req, pt_http_reset_reason_t reason);
    /* The upstream write queue above (1) / below (0) its watermark: pause/resume the body. */
    void (*on_write_watermark)(void *req, int above);
} pt_http_client_callbacks_t;

struct pt_http_client_codec_ops {
    const char *protocol;
    /* on_closed tells the owner (the pool) the connection died while no request used it. */
    pt_http_client_codec_t *(*create)(pt_conn_t *c,
                                      void (*on_closed)(void *owner, pt_http_client_codec_t *),
                                      void *owner);
    /* Starts a request; the callbacks receive `req`. Returns the codec stream or NULL when
     * the connection cannot take one now. headers/trailers passed later must stay valid
     * until encoded (they are written at once). */
    pt_http_codec_stream_t *(*new_stream)(pt_http_client_codec_t *codec,
                                          const pt_http_client_callbacks_t *cb, void *req,
                                          pt_arena_t *arena);
    void (*encode_headers)(pt_http_codec_stream_t *cs, pt_http_headers_t *headers,
                           int end_stream);
    void (*encode_data)(pt_http_codec_stream_t *cs, pt_buf_t *data, int end_stream);
    void (*encode_trailers)(pt_http_codec_stream_t *cs, pt_http_headers_t *trailers);
    /* Abandons the stream without further callbacks (HTTP/2: RST_STREAM CANCEL); the
     * connection is then unusable for HTTP/1, and the pool closes it once the stream is
     * released. */
    void (*reset_stream)(pt_http_codec_stream_t *cs);
    void (*read_disable)(pt_http_codec_stream_t *cs, int disable);
    void (*upgrade)(pt_http_codec_stream_t *cs);
    /* Can the connection carry another request once its streams end? (HTTP/1: idle and
     * kept alive; HTTP/2: no GOAWAY, no error.) */
    int (*reusable)(pt_http_client_codec_t *codec);
    /* Streams the connection can still start now (1 for an idle HTTP/1 connection; for
     * HTTP/2 the peer's SETTINGS_MAX_CONCURRENT_STREAMS and the configured limit, less the
     * streams open). */
    unsigned (*capacity)(pt_http_client_codec_t *codec);
    void (*destroy)(pt_http_client_codec_t *codec);
};

extern const pt_http_client_codec_ops_t pt_http1_client_codec;
extern const pt_http_client_codec_ops_t pt_http2_client_codec;

struct pt_cluster_http2;
struct pt_cluster_stats;
/* An HTTP/2 client codec (prior knowledge or ALPN h2) with the cluster's options, counting
 * into its stats (cluster.<name>.http2.*). */
pt_http_client_codec_t *pt_http2_client_codec_new(pt_conn_t *c,
                                                  const struct pt_cluster_http2 *options,
                                                  const struct pt_cluster_stats *stats,
                                                  void (*on_closed)(void *owner,
                                                                    pt_http_client_codec_t *),
                                                  void *owner);
/* Called once, when the peer's first SETTINGS arrived: from then on capacity() knows its
 * SETTINGS_MAX_CONCURRENT_STREAMS. */
void pt_http2_client_codec_on_ready(pt_http_client_codec_t *codec, void (*on_ready)(void *owner));

/* Drains the connection: a GOAWAY (NO_ERROR) tells the peer no new stream will come; the
 * streams open finish, and the codec takes no new one (capacity 0, not reusable). */
void pt_http2_client_codec_goaway(pt_http_client_codec_t *codec);

/* Frees the calling thread's parser scratch (a worker thread exiting). */
void pt_http1_codec_thread_cleanup(void);

#endif
