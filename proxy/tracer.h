/* A tracer: one provider config (Tracing.Http), made once per distinct config and kept for
 * the process's life (spans in flight point at it). What workers read is set when it is made
 * and never changes; the batch and the exporter's state are the main thread's. Shared by
 * proxy/tracing.c (the request side and the queues) and the exporters (proxy/zipkin.c). */
#ifndef PT_TRACER_H
#define PT_TRACER_H

#include <stdint.h>
#include <string.h>

#include "discovery/rest_fetch.h"
#include "proxy/buf.h"
#include "proxy/stats.h"
#include "proxy/tracing.h"

struct pt_rest_fetch;

typedef struct pt_tracer_stats {
    pt_stat_t spans_sent, reports_sent, reports_dropped, reports_failed, timer_flushed,
        reports_skipped_no_cluster, spans_dropped;
} pt_tracer_stats_t;

struct pt_tracer {
    struct pt_tracer *next; /* the registry */
    char *key;              /* the provider config, canonical JSON */
    const char *provider;   /* "zipkin": the stats' scope, tracing.<provider>.* */
    const pt_exporter_ops_t *ops;
    /* propagation */
    int extract_b3, inject_b3;   /* B3 multi-header (and single b3 on the way in) */
    int extract_w3c, inject_w3c; /* traceparent / tracestate */
    int trace_id_128bit;
    int shared_span_context; /* a SERVER span continuing a B3 context reuses its id */
    int split_spans;         /* a CLIENT span per upstream try, as spawn_upstream_span */
    char *service_name;      /* local endpoint */
    pt_tracer_stats_t stats;
    /* Zipkin */
    char *collector_cluster, *collector_endpoint, *collector_hostname;
    int proto; /* HTTP_PROTO, else HTTP_JSON */
    /* OpenTelemetry (the collector fields above are its cluster, path and authority) */
    int grpc; /* grpc_service, else http_service */
    uint64_t timeout_ms;
    char *otel_service_name; /* service_name, or NULL: "unknown_service:envoy" */
    char *otel_env_attrs;    /* OTEL_RESOURCE_ATTRIBUTES, with the environment detector */
    /* main thread: the batch waiting, the send in flight */
    pt_span_rec_t **pending;
    unsigned npending, cap;
    uint64_t last_flush_ms;
    struct pt_rest_fetch *fetch;
};

/* Batch bounds: spans held per tracer while the collector is slow (then dropped and
 * counted), and spans per report. */
#define PT_TRACER_MAX_PENDING 4096
#define PT_TRACER_MAX_BATCH   1024

/* memcpy for the short strings of a span, inline: overlapping word copies rather than a
 * library call for each of the dozens a span copies and writes. */
static inline void pt_span_copy(char *d, const char *s, size_t n)
{
    if (n > 32) {
        memcpy(d, s, n);
    } else if (n >= 16) {
        uint64_t a, b, c, e;
        memcpy(&a, s, 8);
        memcpy(&b, s + 8, 8);
        memcpy(&c, s + n - 16, 8);
        memcpy(&e, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + 8, &b, 8);
        memcpy(d + n - 16, &c, 8);
        memcpy(d + n - 8, &e, 8);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n > 0) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

/* A tag as the exporters write it. `plain` bits: PT_TAG_KEY_PLAIN, PT_TAG_VALUE_PLAIN when
 * that string is known to need no JSON escaping (a fixed name, a number, an address). */
typedef struct pt_span_tag {
    const char *key, *value;
    uint32_t klen, vlen;
    uint8_t plain;
} pt_span_tag_t;

#define PT_TAG_KEY_PLAIN   1u
#define PT_TAG_VALUE_PLAIN 2u

/* The stream's span's own tags at most, and the custom tags of a connection manager and a
 * route. */
#define PT_SPAN_MAX_TAGS (20 + 2 * PT_MAX_CUSTOM_TAGS)

/* A record's tags and local endpoint, formatted (main thread, on the stack). */
typedef struct pt_span_tags {
    pt_span_tag_t tag[PT_SPAN_MAX_TAGS];
    unsigned n;
    int error;            /* a tag "error" is "true" (OTLP's status) */
    const char *local_ip; /* the local endpoint's address, or NULL */
    uint32_t local_ip_len;
    char local_buf[PT_ADDR_STRLEN];
    char scratch[384]; /* the numbers, flags and the peer's address */
} pt_span_tags_t;

/* The tags of `rec` in Envoy's order (the custom tags last, each replacing a tag of its name
 * in place as Envoy's setTag does); every string points into rec or out. */
void pt_span_tags(const pt_span_rec_t *rec, pt_span_tags_t *out);

/* The Zipkin exporter: reads ZipkinConfig (the reader inside typed_config) into t. */
void pt_zipkin_parse(pt_cfg_t *r, struct pt_config *cfg, pt_tracer_t *t);
extern const pt_exporter_ops_t pt_zipkin_ops;
/* Encodes spans as Zipkin v2 JSON (a malloc'd string) or zipkin.proto3 ListOfSpans. */
char *pt_zipkin_encode_json(pt_span_rec_t *const *spans, unsigned n, size_t *len);
/* The same JSON appended to `out` (the report's body, sent without a copy). 0 or -1. */
int pt_zipkin_encode_json_buf(pt_span_rec_t *const *spans, unsigned n, pt_buf_t *out);
void *pt_zipkin_encode_proto(pt_span_rec_t *const *spans, unsigned n, size_t *len);

/* The OpenTelemetry exporter: reads OpenTelemetryConfig into t. */
void pt_otel_parse(pt_cfg_t *r, struct pt_config *cfg, pt_tracer_t *t);
extern const pt_exporter_ops_t pt_otel_ops;
/* Encodes spans as an OTLP ExportTraceServiceRequest (protobuf, malloc'd). */
void *pt_otel_encode(const pt_tracer_t *t, pt_span_rec_t *const *spans, unsigned n, size_t *len);

/* Every tracer made (proxy/tracing_config.c), main thread only. */
extern pt_tracer_t *pt_tracer_registry;
void pt_tracer_free(pt_tracer_t *t);
/* proxy/span_queue.c: a worker's (or the main thread's) span goes on its ring, or is
 * dropped and counted when the ring is full; the drain starts once a tracer exists. */
void pt_span_queue_push(pt_span_rec_t *rec);
/* A record's block (the calling worker's spare one when it fits), and its return to the
 * worker that made it (main thread; free() is right for a record never queued too). */
pt_span_rec_t *pt_span_rec_alloc(size_t size);
void pt_span_rec_free(pt_span_rec_t *rec);
void pt_span_queue_start_drain(void);

/* Main thread: POSTs an encoded report (body: malloc'd, taken and freed) to the tracer's
 * collector cluster, through discovery/rest_fetch.c (flags: PT_REST_FETCH_*), cb when it
 * ends. -1 when nothing was sent (no such cluster, or the request could not start: counted
 * as reports_skipped_no_cluster or reports_failed), else 0 with t->fetch in flight. */
int pt_tracer_send_report(pt_tracer_t *t, void *body, size_t len, const char *content_type,
                          uint64_t timeout_ms, unsigned flags, pt_rest_fetch_cb cb);
/* The same with the body in a buffer, whose content is taken (the buffer is left empty). */
int pt_tracer_send_report_buf(pt_tracer_t *t, pt_buf_t *body, const char *content_type,
                              uint64_t timeout_ms, unsigned flags, pt_rest_fetch_cb cb);

/* The cluster manager and loop the exporters use (pt_tracing_start). */
struct pt_cluster_manager *pt_tracing_cluster_manager(void);
struct pt_worker *pt_tracing_main_worker(void);

#endif
