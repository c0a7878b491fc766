/* Distributed tracing: the HTTP connection manager's `tracing`, the bootstrap's `tracing`,
 * a route's `decorator` and `tracing`, and the spans a request makes.
 *
 * Per request (worker, no lock): when the connection manager traces, the x-request-id's
 * trace bits are decided as Envoy decides them (x-envoy-force-trace, x-client-trace-id with
 * client_sampling, random_sampling on the request id's integer, overall_sampling), the
 * incoming trace context is read (B3 multi-header or single `b3`; W3C `traceparent` when the
 * provider propagates it) or a new trace starts, and the stream gets a span: SERVER for an
 * inbound listener (or with spawn_upstream_span), CLIENT for an outbound one. With
 * spawn_upstream_span (the router's start_child_span, Zipkin's split_spans_for_request) each
 * upstream try is a CLIENT span of its own, child of the stream's. The upstream request
 * carries the innermost span as its parent. A sampled span, when it ends, is recorded in one
 * heap block (pt_span_rec_t: numbers and addresses binary, the request's strings copied, no
 * text formatted) and handed to the main thread through this worker's bounded
 * single-producer queue; a full queue drops it and counts tracing.<provider>.spans_dropped.
 *
 * Main thread: a timer drains the queues into each tracer's batch, which its exporter
 * formats and sends (proxy/zipkin.c, proxy/opentelemetry.c; the tags from proxy/span_tags.c),
 * then hands the blocks back to their workers (proxy/span_queue.c). A stream of a connection
 * manager without tracing costs one pointer test.
 */
#ifndef PT_TRACING_H
#define PT_TRACING_H

#include <stdint.h>

#include "proxy/address.h"
#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/http.h"
#include "proxy/trace_context.h"

struct pt_config;
struct pt_worker;
struct pt_cluster_manager;
struct ev_loop;

typedef enum pt_custom_tag_kind {
    PT_TAG_LITERAL,
    PT_TAG_ENVIRONMENT, /* read once when the config is built */
    PT_TAG_REQUEST_HEADER,
} pt_custom_tag_kind_t;

typedef struct pt_custom_tag {
    const char *tag;
    pt_custom_tag_kind_t kind;
    const char *value;         /* literal, the environment's value (or default), header name */
    const char *default_value; /* request_header: when the header is absent (NULL: no tag) */
} pt_custom_tag_t;

typedef struct pt_tracer pt_tracer_t;

/* custom_tags entries per connection manager, and per route. */
#define PT_MAX_CUSTOM_TAGS 16

/* HttpConnectionManager.tracing */
typedef struct pt_tracing_config {
    pt_tracer_t *tracer;
    pt_fraction_t client_sampling, random_sampling, overall_sampling;
    const pt_custom_tag_t *tags;
    unsigned ntags;
    uint32_t max_path_tag_length;
    int spawn_upstream_span;
} pt_tracing_config_t;

/* RouteConfiguration route: decorator and tracing. */
typedef struct pt_route_tracing {
    const char *operation; /* decorator.operation, or NULL */
    int propagate;         /* decorator.propagate (default true) */
    int has_client, has_random, has_overall;
    pt_fraction_t client_sampling, random_sampling, overall_sampling;
    const pt_custom_tag_t *tags;
    unsigned ntags;
} pt_route_tracing_t;

/* ---- config (main thread) ---------------------------------------------------------- */

/* The connection manager's `tracing` (the reader is at the connection manager): NULL when
 * absent or wrong (errors in r). `fallback`: the bootstrap's provider, used when the
 * connection manager names none. */
pt_tracing_config_t *pt_tracing_config_parse(pt_cfg_t *r, struct pt_config *cfg);
/* A route's decorator and tracing (the reader is at the route): NULL when it has neither. */
pt_route_tracing_t *pt_route_tracing_parse(pt_cfg_t *r, pt_arena_t *a);
/* The bootstrap's `tracing` (the reader at the bootstrap): sets cfg->tracer. */
void pt_tracing_bootstrap_parse(pt_cfg_t *r, struct pt_config *cfg);
/* A Tracing.Http object (the reader inside it): the tracer for it, made once per distinct
 * provider config and kept for the process's life; NULL with errors in r. */
pt_tracer_t *pt_tracer_parse(pt_cfg_t *r, struct pt_config *cfg);

/* ---- per request (worker) ---------------------------------------------------------- */

typedef struct pt_http_stream pt_http_stream_t;
typedef struct pt_trace_span pt_trace_span_t;

/* After routing, before the filters: decides, and starts the stream's span. */
void pt_tracing_begin(pt_http_stream_t *s);
/* The response headers leave: x-envoy-decorator-operation on an inbound span. */
void pt_tracing_response_headers(pt_http_stream_t *s, pt_http_headers_t *h);
/* The stream completes: the span ends and, sampled, goes to the main thread. */
void pt_tracing_end(pt_http_stream_t *s);

/* The router, for each try: a CLIENT child span when the stream spawns them or `child`
 * (the router's start_child_span), else the stream's span is the parent; the trace headers
 * are written into `h`. Returns the child (NULL when none). */
pt_trace_span_t *pt_tracing_upstream_start(pt_http_stream_t *s, pt_http_headers_t *h, int child);
/* The try ended: status 0 when no response came. */
void pt_tracing_upstream_end(pt_http_stream_t *s, pt_trace_span_t *child, int status);

/* ---- process (main thread) --------------------------------------------------------- */

/* Before the workers start: the per-worker queues (workers + the main thread). */
int pt_tracing_init(unsigned nworkers);
/* Exporters run on `main_worker`'s loop and find their clusters in cm. */
void pt_tracing_start(struct pt_cluster_manager *cm, struct pt_worker *main_worker);
void pt_tracing_stop(void);

/* ---- what exporters see ------------------------------------------------------------ */

typedef enum pt_span_kind { PT_SPAN_SERVER, PT_SPAN_CLIENT } pt_span_kind_t;

/* A string a span record carries: its bytes (NUL-terminated as well) and length; p NULL
 * when the request had none. */
typedef struct pt_span_str {
    const char *p;
    uint32_t len;
} pt_span_str_t;

/* The strings of a span record, copied on the worker. What formats from numbers (sizes,
 * status, flags, addresses, ids) stays binary in the record and is formatted on the main
 * thread, once, straight into the report. */
enum pt_span_str_index {
    PT_SPAN_S_NAME,
    PT_SPAN_S_NODE_ID,
    PT_SPAN_S_ZONE,
    PT_SPAN_S_REQUEST_ID,         /* x-request-id */
    PT_SPAN_S_URL,                /* scheme://authority path, cut to max_path_tag_length */
    PT_SPAN_S_METHOD,             /* :method */
    PT_SPAN_S_DOWNSTREAM_CLUSTER, /* x-envoy-downstream-service-cluster */
    PT_SPAN_S_USER_AGENT,         /* user-agent */
    PT_SPAN_S_CLUSTER,            /* the upstream cluster */
    PT_SPAN_S_UPSTREAM_HOST,      /* an upstream try's host:port */
    PT_SPAN_NSTR
};

/* A finished span: one heap block (strings after the struct), made on the worker that ran
 * the request and freed on the main thread. Its tags are derived from these fields
 * (pt_span_tags, proxy/span_tags.c) in Envoy's order. */
typedef struct pt_span_rec {
    pt_tracer_t *tracer;
    uint64_t trace_hi, trace_lo, id, parent_id; /* parent_id 0: a root */
    uint64_t start_us, duration_us;             /* wall clock, microseconds */
    uint8_t kind, shared, debug;
    uint8_t upstream_try; /* an upstream try's CLIENT span, else the stream's span */
    uint8_t headers;      /* the stream's span: the request's headers were there */
    uint16_t pool;        /* the ring of the worker the block returns to (+1), or 0 */
    int status;           /* http.status_code (0: no response) */
    uint32_t response_flags;
    uint32_t retries;                    /* an upstream try: retry.count */
    uint64_t bytes_received, bytes_sent; /* the stream's span */
    const char *protocol;                /* a static string ("HTTP/1.1"), or NULL */
    pt_addr_t peer, local;               /* the stream's span: the downstream's addresses */
    pt_span_str_t str[PT_SPAN_NSTR];     /* enum pt_span_str_index */
    unsigned ncustom;                    /* custom tags with a value */
    pt_span_str_t custom[];              /* key, value of each custom tag */
} pt_span_rec_t;

/* An exporter: what a provider does with its spans (proxy/zipkin.c). Main thread. */
typedef struct pt_exporter_ops {
    /* Takes a batch of spans (the exporter frees them with free()). */
    void (*flush)(pt_tracer_t *t, pt_span_rec_t **spans, unsigned n);
    /* Whether the exporter can take a batch now (no send in flight). */
    int (*ready)(pt_tracer_t *t);
} pt_exporter_ops_t;

#endif
