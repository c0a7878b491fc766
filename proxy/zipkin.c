/* envoy.tracers.zipkin: ZipkinConfig, and the reports to the collector.
 *
 * Spans go as Zipkin v2 JSON (collector_endpoint_version HTTP_JSON, the default) or as a
 * zipkin.proto3 ListOfSpans (HTTP_PROTO), POSTed to collector_endpoint on a host of
 * collector_cluster from the main thread (discovery/rest_fetch.c), one report in flight at a
 * time. Counters as Envoy names them: tracing.zipkin.spans_sent (spans handed to a report),
 * reports_sent (the collector answered 202), reports_dropped (it answered something else),
 * reports_failed (no answer: no connection, a reset, the 5 s timeout), timer_flushed,
 * reports_skipped_no_cluster; and tracing.zipkin.spans_dropped, petrel's: spans let go
 * because the queue or the batch was full. */
#include <arpa/inet.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/rest_fetch.h"
#include "proxy/cluster_manager.h"
#include "proxy/config.h"
#include "proxy/log.h"
#include "proxy/protobuf.h"
#include "proxy/trace_context.h"
#include "proxy/tracer.h"
#include "proxy/view.h"

#define REPORT_TIMEOUT_MS 5000

void pt_zipkin_parse(pt_cfg_t *r, pt_config_t *cfg, pt_tracer_t *t)
{
    const char *s;
    if (pt_cfg_string(r, "collector_cluster", &s, NULL) == 0 || s == NULL || !s[0])
        pt_cfg_error(r, "collector_cluster", "is required");
    else if (!cfg->has_cds && !pt_config_cluster_exists(cfg, s))
        pt_cfg_error(r, "collector_cluster", "cluster \"%s\" does not exist", s);
    t->collector_cluster = strdup(s ? s : "");
    if (pt_cfg_string(r, "collector_endpoint", &s, NULL) == 0 || s == NULL || !s[0])
        pt_cfg_error(r, "collector_endpoint", "is required");
    else if (s[0] != '/')
        pt_cfg_error(r, "collector_endpoint", "\"%s\" is not a path (it must start with /)", s);
    t->collector_endpoint = strdup(s ? s : "/");
    pt_cfg_string(r, "collector_hostname", &s, NULL);
    t->collector_hostname = strdup(s != NULL && s[0] ? s : t->collector_cluster);
    static const char *const versions[] = {"DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", "HTTP_JSON",
                                           "HTTP_PROTO", NULL};
    static const char *const versions_known[] = {"GRPC", NULL};
    int v;
    pt_cfg_enum(r, "collector_endpoint_version", versions, versions_known, &v, 1);
    if (v == 0)
        pt_cfg_error(r, "collector_endpoint_version",
                     "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE (Zipkin v1) is not available");
    t->proto = v == 2;
    pt_cfg_bool(r, "trace_id_128bit", &t->trace_id_128bit, 0);
    pt_cfg_bool(r, "shared_span_context", &t->shared_span_context, 1);
    pt_cfg_bool(r, "split_spans_for_request", &t->split_spans, 0);
    /* trace_context_option: B3 always; USE_B3_WITH_W3C_PROPAGATION reads traceparent when
     * no B3 came and writes both. */
    static const char *const options[] = {"USE_B3", "USE_B3_WITH_W3C_PROPAGATION", NULL};
    int opt;
    pt_cfg_enum(r, "trace_context_option", options, NULL, &opt, 0);
    t->extract_b3 = t->inject_b3 = 1;
    t->extract_w3c = t->inject_w3c = opt == 1;
    if (t->collector_cluster == NULL || t->collector_endpoint == NULL ||
        t->collector_hostname == NULL)
        pt_cfg_error(r, NULL, "out of memory");
}

/* ---- encoding ---------------------------------------------------------------------- */

static json_t *endpoint_json(const pt_tracer_t *t, const char *ip)
{
    json_t *e = json_object();
    json_object_set_new(e, "serviceName", json_string(t->service_name));
    if (ip != NULL && ip[0]) {
        struct in6_addr a6;
        json_object_set_new(e, inet_pton(AF_INET6, ip, &a6) == 1 ? "ipv6" : "ipv4",
                            json_string(ip));
    }
    return e;
}

char *pt_zipkin_encode_json(pt_span_rec_t *const *spans, unsigned n, size_t *len)
{
    json_t *arr = json_array();
    char hex[33];
    for (unsigned i = 0; i < n; i++) {
        const pt_span_rec_t *sp = spans[i];
        json_t *o = json_object();
        pt_trace_id_hex(sp->trace_hi, sp->trace_lo, 1, hex);
        json_object_set_new(o, "traceId", json_string(hex));
        pt_trace_hex64(sp->id, hex);
        json_object_set_new(o, "id", json_string(hex));
        if (sp->parent_id != 0) {
            pt_trace_hex64(sp->parent_id, hex);
            json_object_set_new(o, "parentId", json_string(hex));
        }
        json_object_set_new(o, "name", json_string(sp->name));
        json_object_set_new(o, "kind", json_string(sp->kind == PT_SPAN_CLIENT ? "CLIENT" : "SERVER"));
        json_object_set_new(o, "timestamp", json_integer((json_int_t)sp->start_us));
        json_object_set_new(o, "duration", json_integer((json_int_t)sp->duration_us));
        json_object_set_new(o, "localEndpoint", endpoint_json(sp->tracer, sp->local_ip));
        if (sp->shared)
            json_object_set_new(o, "shared", json_true());
        if (sp->debug)
            json_object_set_new(o, "debug", json_true());
        json_t *tags = json_object();
        for (unsigned k = 0; k < sp->ntags; k++)
            json_object_set_new(tags, sp->tags[k].key, json_string(sp->tags[k].value));
        json_object_set_new(o, "tags", tags);
        json_array_append_new(arr, o);
    }
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    *len = text != NULL ? strlen(text) : 0;
    return text;
}

static void put_id(pt_pb_writer_t *w, uint32_t field, uint64_t hi, uint64_t lo, int wide)
{
    uint8_t b[16];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(hi >> (56 - 8 * i));
        b[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
    }
    if (wide)
        pt_pb_put_bytes(w, field, b, 16);
    else
        pt_pb_put_bytes(w, field, b + 8, 8);
}

static void put_string(pt_pb_writer_t *w, uint32_t field, const char *s)
{
    pt_pb_put_bytes(w, field, s, strlen(s));
}

/* zipkin.proto3: ListOfSpans { repeated Span spans = 1; }, Span { bytes trace_id = 1;
 * bytes parent_id = 2; bytes id = 3; Kind kind = 4 (CLIENT 1, SERVER 2); string name = 5;
 * fixed64 timestamp = 6; uint64 duration = 7; Endpoint local_endpoint = 8;
 * map<string, string> tags = 11; bool debug = 12; bool shared = 13; },
 * Endpoint { string service_name = 1; bytes ipv4 = 2; bytes ipv6 = 3; }. */
void *pt_zipkin_encode_proto(pt_span_rec_t *const *spans, unsigned n, size_t *len)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    for (unsigned i = 0; i < n; i++) {
        const pt_span_rec_t *sp = spans[i];
        size_t span = pt_pb_begin_len(&w, 1);
        put_id(&w, 1, sp->trace_hi, sp->trace_lo, sp->trace_hi != 0);
        if (sp->parent_id != 0)
            put_id(&w, 2, 0, sp->parent_id, 0);
        put_id(&w, 3, 0, sp->id, 0);
        pt_pb_put_tag(&w, 4, 0);
        pt_pb_put_varint(&w, sp->kind == PT_SPAN_CLIENT ? 1 : 2);
        put_string(&w, 5, sp->name);
        pt_pb_put_tag(&w, 6, 1);
        pt_pb_put_fixed64(&w, sp->start_us);
        pt_pb_put_tag(&w, 7, 0);
        pt_pb_put_varint(&w, sp->duration_us);
        size_t ep = pt_pb_begin_len(&w, 8);
        put_string(&w, 1, sp->tracer->service_name);
        if (sp->local_ip != NULL) {
            uint8_t a[16];
            if (inet_pton(AF_INET, sp->local_ip, a) == 1)
                pt_pb_put_bytes(&w, 2, a, 4);
            else if (inet_pton(AF_INET6, sp->local_ip, a) == 1)
                pt_pb_put_bytes(&w, 3, a, 16);
        }
        pt_pb_end_len(&w, ep);
        for (unsigned k = 0; k < sp->ntags; k++) {
            size_t e = pt_pb_begin_len(&w, 11);
            put_string(&w, 1, sp->tags[k].key);
            put_string(&w, 2, sp->tags[k].value);
            pt_pb_end_len(&w, e);
        }
        if (sp->debug) {
            pt_pb_put_tag(&w, 12, 0);
            pt_pb_put_varint(&w, 1);
        }
        if (sp->shared) {
            pt_pb_put_tag(&w, 13, 0);
            pt_pb_put_varint(&w, 1);
        }
        pt_pb_end_len(&w, span);
    }
    if (w.failed) {
        pt_pb_writer_dispose(&w);
        return NULL;
    }
    *len = w.len;
    return w.buf; /* the caller frees it */
}

/* ---- sending ----------------------------------------------------------------------- */

static void on_report_done(void *data, int status, const char *body, size_t len,
                           const char *why)
{
    (void)body;
    (void)len;
    pt_tracer_t *t = data;
    pt_rest_fetch_free(t->fetch);
    t->fetch = NULL;
    if (status == 202) {
        pt_stat_inc(t->stats.reports_sent);
    } else if (status != 0) {
        pt_stat_inc(t->stats.reports_dropped);
        pt_debug("zipkin: the collector answered %d", status);
    } else {
        pt_stat_inc(t->stats.reports_failed);
        pt_debug("zipkin: report failed: %s", why);
    }
}

static int zipkin_ready(pt_tracer_t *t)
{
    return t->fetch == NULL;
}

static void zipkin_flush(pt_tracer_t *t, pt_span_rec_t **spans, unsigned n)
{
    size_t len = 0;
    void *body = t->proto ? pt_zipkin_encode_proto(spans, n, &len)
                          : (void *)pt_zipkin_encode_json(spans, n, &len);
    for (unsigned i = 0; i < n; i++)
        free(spans[i]);
    if (body == NULL) {
        pt_stat_add(t->stats.spans_dropped, n);
        return;
    }
    pt_stat_add(t->stats.spans_sent, n);
    pt_view_t *view = pt_tracing_cluster_manager() != NULL
                          ? pt_cluster_manager_view(pt_tracing_cluster_manager())
                          : NULL;
    pt_cluster_t *c = view != NULL ? pt_view_find_cluster(view, t->collector_cluster) : NULL;
    if (c == NULL) {
        pt_stat_inc(t->stats.reports_skipped_no_cluster);
    } else {
        char err[256];
        t->fetch = pt_rest_fetch_start(c, pt_tracing_main_worker(), "POST", t->collector_endpoint,
                                       t->collector_hostname,
                                       t->proto ? "application/x-protobuf" : "application/json",
                                       body, len, REPORT_TIMEOUT_MS, on_report_done, t, err,
                                       sizeof(err));
        if (t->fetch == NULL) {
            pt_stat_inc(t->stats.reports_failed);
            pt_debug("zipkin: report failed: %s", err);
        }
    }
    if (view != NULL)
        pt_view_unref(view);
    free(body);
}

const pt_exporter_ops_t pt_zipkin_ops = {
    .flush = zipkin_flush,
    .ready = zipkin_ready,
};
