/* envoy.tracers.opentelemetry: OpenTelemetryConfig, and OTLP trace exports.
 *
 * Spans go as an OTLP ExportTraceServiceRequest (opentelemetry/proto/collector/trace/v1),
 * protobuf-encoded: over HTTP (http_service: POSTed to the path of http_uri.uri on a host of
 * http_uri.cluster, application/x-protobuf, success is a 2xx) or over gRPC (grpc_service
 * envoy_grpc: a unary call of opentelemetry.proto.collector.trace.v1.TraceService/Export on
 * an HTTP/2 connection to the cluster, success is HTTP 200 with grpc-status 0). One export
 * in flight per tracer, as for Zipkin; counters tracing.opentelemetry.* with the same names.
 * Propagation is W3C trace context (traceparent; tracestate passes through). */
#include <stdlib.h>
#include <string.h>

#include "discovery/rest_fetch.h"
#include "proxy/cluster_manager.h"
#include "proxy/config.h"
#include "proxy/log.h"
#include "proxy/protobuf.h"
#include "proxy/tracer.h"
#include "proxy/view.h"

#define EXPORT_TIMEOUT_MS 5000
#define GRPC_PATH         "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

/* OTEL_RESOURCE_ATTRIBUTES ("k=v,k2=v2"), as the environment resource detector reads it. */
static void environment_attributes(pt_tracer_t *t)
{
    const char *env = getenv("OTEL_RESOURCE_ATTRIBUTES");
    free(t->otel_env_attrs);
    t->otel_env_attrs = env != NULL && env[0] ? strdup(env) : NULL;
}

void pt_otel_parse(pt_cfg_t *r, pt_config_t *cfg, pt_tracer_t *t)
{
    static const char *const unsupported[] = {"sampler", "max_cache_size", NULL};
    pt_cfg_unsupported(r, unsupported);
    static const char *const transports[] = {"grpc_service", "http_service", NULL};
    int which = pt_cfg_oneof(r, transports, 1);
    const char *s;
    if (which == 0 && pt_cfg_enter(r, "grpc_service") > 0) {
        static const char *const grpc_unsupported[] = {"google_grpc", "initial_metadata",
                                                       "retry_policy", NULL};
        pt_cfg_unsupported(r, grpc_unsupported);
        pt_cfg_duration_ms(r, "timeout", &t->timeout_ms, EXPORT_TIMEOUT_MS);
        if (pt_cfg_enter(r, "envoy_grpc") > 0) {
            static const char *const eg_unsupported[] = {
                "retry_policy", "max_receive_message_length", "skip_envoy_headers", NULL};
            pt_cfg_unsupported(r, eg_unsupported);
            if (pt_cfg_string(r, "cluster_name", &s, NULL) == 0 || s == NULL || !s[0])
                pt_cfg_error(r, "cluster_name", "is required");
            else if (!cfg->has_cds && !pt_config_cluster_exists(cfg, s))
                pt_cfg_error(r, "cluster_name", "cluster \"%s\" does not exist", s);
            t->collector_cluster = strdup(s ? s : "");
            pt_cfg_string(r, "authority", &s, NULL);
            t->collector_hostname = strdup(s != NULL && s[0] ? s : t->collector_cluster);
            pt_cfg_leave(r);
        } else if (!pt_cfg_has(r, "google_grpc")) {
            pt_cfg_error(r, "envoy_grpc", "is required");
        }
        t->collector_endpoint = strdup(GRPC_PATH);
        t->grpc = 1;
        pt_cfg_leave(r);
    } else if (which == 1 && pt_cfg_enter(r, "http_service") > 0) {
        static const char *const http_unsupported[] = {"request_headers_to_add", NULL};
        pt_cfg_unsupported(r, http_unsupported);
        if (pt_cfg_enter(r, "http_uri") > 0) {
            const char *uri = NULL;
            if (pt_cfg_string(r, "uri", &uri, NULL) == 0 || uri == NULL || !uri[0])
                pt_cfg_error(r, "uri", "is required");
            /* scheme://authority/path: the authority goes in :authority, the path is
             * POSTed to. */
            const char *p = uri != NULL ? strstr(uri, "://") : NULL;
            if (uri != NULL && uri[0] && p == NULL) {
                pt_cfg_error(r, "uri", "\"%s\" is not an absolute URI", uri);
            } else if (p != NULL) {
                p += 3;
                const char *slash = strchr(p, '/');
                t->collector_hostname = slash ? strndup(p, (size_t)(slash - p)) : strdup(p);
                t->collector_endpoint = strdup(slash ? slash : "/");
            }
            if (pt_cfg_string(r, "cluster", &s, NULL) == 0 || s == NULL || !s[0])
                pt_cfg_error(r, "cluster", "is required");
            else if (!cfg->has_cds && !pt_config_cluster_exists(cfg, s))
                pt_cfg_error(r, "cluster", "cluster \"%s\" does not exist", s);
            t->collector_cluster = strdup(s ? s : "");
            if (pt_cfg_duration_ms(r, "timeout", &t->timeout_ms, 0) == 0)
                pt_cfg_error(r, "timeout", "is required");
            pt_cfg_leave(r);
        } else {
            pt_cfg_error(r, "http_uri", "is required");
        }
        pt_cfg_leave(r);
    }
    if (pt_cfg_string(r, "service_name", &s, NULL) > 0 && s != NULL && s[0])
        t->otel_service_name = strdup(s);
    int present;
    size_t n = pt_cfg_array(r, "resource_detectors", &present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        pt_cfg_string(r, "name", &s, NULL);
        int rc;
        const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
        if (rc == 0)
            pt_cfg_error(r, "typed_config", "is required");
        if (type != NULL) {
            if (strcmp(type, "type.googleapis.com/envoy.extensions.tracers.opentelemetry."
                             "resource_detectors.v3.EnvironmentResourceDetectorConfig") == 0) {
                environment_attributes(t);
            } else {
                pt_cfg_error(r, "@type", "\"%s\" is not a supported resource detector", type);
                pt_cfg_skip_rest(r);
            }
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    t->extract_w3c = t->inject_w3c = 1;
    t->extract_b3 = t->inject_b3 = 0;
    t->shared_span_context = 0;
    t->trace_id_128bit = 1; /* W3C trace ids are 128 bits */
    if (t->timeout_ms == 0)
        t->timeout_ms = EXPORT_TIMEOUT_MS;
}

/* ---- encoding ---------------------------------------------------------------------- */

static void put_str(pt_pb_writer_t *w, uint32_t field, const char *s, size_t n)
{
    pt_pb_put_bytes(w, field, s, n);
}

/* KeyValue { string key = 1; AnyValue value = 2 { string string_value = 1; } } */
static void put_kv(pt_pb_writer_t *w, uint32_t field, const char *k, size_t kn, const char *v,
                   size_t vn)
{
    size_t kv = pt_pb_begin_len(w, field);
    put_str(w, 1, k, kn);
    size_t av = pt_pb_begin_len(w, 2);
    put_str(w, 1, v, vn);
    pt_pb_end_len(w, av);
    pt_pb_end_len(w, kv);
}

static void put_id(pt_pb_writer_t *w, uint32_t field, uint64_t hi, uint64_t lo, int wide)
{
    uint8_t b[16];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(hi >> (56 - 8 * i));
        b[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
    }
    pt_pb_put_bytes(w, field, wide ? b : b + 8, wide ? 16 : 8);
}

/* ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
 * ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
 * Resource { repeated KeyValue attributes = 1; }
 * ScopeSpans { InstrumentationScope scope = 1 { string name = 1; }; repeated Span spans = 2; }
 * Span { bytes trace_id = 1; bytes span_id = 2; bytes parent_span_id = 4; string name = 5;
 *        SpanKind kind = 6 (SERVER 2, CLIENT 3); fixed64 start_time_unix_nano = 7;
 *        fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
 *        Status status = 15 { StatusCode code = 3 (ERROR 2) }; } */
void *pt_otel_encode(const pt_tracer_t *t, pt_span_rec_t *const *spans, unsigned n, size_t *len)
{
    pt_pb_writer_t w;
    pt_span_tags_t tags;
    pt_pb_writer_init(&w);
    size_t rs = pt_pb_begin_len(&w, 1);
    size_t res = pt_pb_begin_len(&w, 1);
    const char *svc = t->otel_service_name ? t->otel_service_name : "unknown_service:envoy";
    put_kv(&w, 1, "service.name", 12, svc, strlen(svc));
    for (const char *p = t->otel_env_attrs; p != NULL && *p;) {
        const char *end = strchr(p, ',');
        size_t n_ = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n_);
        if (eq != NULL && eq > p && (size_t)(eq - p) < n_ - 1 &&
            !((size_t)(eq - p) == 12 && memcmp(p, "service.name", 12) == 0))
            put_kv(&w, 1, p, (size_t)(eq - p), eq + 1, n_ - (size_t)(eq - p) - 1);
        p = end ? end + 1 : NULL;
    }
    pt_pb_end_len(&w, res);
    size_t ss = pt_pb_begin_len(&w, 2);
    size_t scope = pt_pb_begin_len(&w, 1);
    put_str(&w, 1, "envoy", 5);
    pt_pb_end_len(&w, scope);
    for (unsigned i = 0; i < n; i++) {
        const pt_span_rec_t *sp = spans[i];
        size_t s = pt_pb_begin_len(&w, 2);
        put_id(&w, 1, sp->trace_hi, sp->trace_lo, 1);
        put_id(&w, 2, 0, sp->id, 0);
        if (sp->parent_id != 0)
            put_id(&w, 4, 0, sp->parent_id, 0);
        pt_span_tags(sp, &tags);
        put_str(&w, 5, sp->str[PT_SPAN_S_NAME].p, sp->str[PT_SPAN_S_NAME].len);
        pt_pb_put_tag(&w, 6, 0);
        pt_pb_put_varint(&w, sp->kind == PT_SPAN_CLIENT ? 3 : 2);
        pt_pb_put_tag(&w, 7, 1);
        pt_pb_put_fixed64(&w, sp->start_us * 1000);
        pt_pb_put_tag(&w, 8, 1);
        pt_pb_put_fixed64(&w, (sp->start_us + sp->duration_us) * 1000);
        for (unsigned k = 0; k < tags.n; k++) {
            const pt_span_tag_t *tg = &tags.tag[k];
            put_kv(&w, 9, tg->key, tg->klen, tg->value, tg->vlen);
        }
        if (tags.error) {
            size_t st = pt_pb_begin_len(&w, 15);
            pt_pb_put_tag(&w, 3, 0);
            pt_pb_put_varint(&w, 2);
            pt_pb_end_len(&w, st);
        }
        pt_pb_end_len(&w, s);
    }
    pt_pb_end_len(&w, ss);
    pt_pb_end_len(&w, rs);
    if (w.failed) {
        pt_pb_writer_dispose(&w);
        return NULL;
    }
    *len = w.len;
    return w.buf;
}

/* ---- sending ----------------------------------------------------------------------- */

static void on_export_done(void *data, int status, const char *body, size_t len, const char *why)
{
    (void)body;
    (void)len;
    pt_tracer_t *t = data;
    int grpc_status = t->grpc && t->fetch != NULL ? pt_rest_fetch_grpc_status(t->fetch) : 0;
    pt_rest_fetch_free(t->fetch);
    t->fetch = NULL;
    if (status >= 200 && status < 300 && grpc_status == 0) {
        pt_stat_inc(t->stats.reports_sent);
    } else if (status != 0) {
        pt_stat_inc(t->stats.reports_dropped);
        pt_debug("opentelemetry: the collector answered %d (grpc-status %d)", status, grpc_status);
    } else {
        pt_stat_inc(t->stats.reports_failed);
        pt_debug("opentelemetry: export failed: %s", why);
    }
}

static int otel_ready(pt_tracer_t *t)
{
    return t->fetch == NULL;
}

static void otel_flush(pt_tracer_t *t, pt_span_rec_t **spans, unsigned n)
{
    size_t len = 0;
    uint8_t *msg = pt_otel_encode(t, spans, n, &len);
    for (unsigned i = 0; i < n; i++)
        pt_span_rec_free(spans[i]);
    uint8_t *body = msg;
    if (msg != NULL && t->grpc) {
        /* One gRPC message: not compressed, then its length, big-endian. */
        body = malloc(len + 5);
        if (body != NULL) {
            body[0] = 0;
            body[1] = (uint8_t)(len >> 24);
            body[2] = (uint8_t)(len >> 16);
            body[3] = (uint8_t)(len >> 8);
            body[4] = (uint8_t)len;
            memcpy(body + 5, msg, len);
            len += 5;
        }
        free(msg);
    }
    if (body == NULL) {
        pt_stat_add(t->stats.spans_dropped, n);
        return;
    }
    pt_stat_add(t->stats.spans_sent, n);
    pt_tracer_send_report(t, body, len, t->grpc ? "application/grpc" : "application/x-protobuf",
                          t->timeout_ms, t->grpc ? PT_REST_FETCH_GRPC : 0, on_export_done);
}

const pt_exporter_ops_t pt_otel_ops = {
    .flush = otel_flush,
    .ready = otel_ready,
};
