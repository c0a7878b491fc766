/* envoy.stat_sinks.metrics_service (envoy.config.metrics.v3.MetricsServiceConfig): Envoy's
 * MetricsService.StreamMetrics, a client-streaming gRPC call to a cluster
 * (grpc_service.envoy_grpc.cluster_name) on which each flush is one StreamMetricsMessage of
 * io.prometheus.client.MetricFamily, as Envoy's MetricsFlusher builds them:
 *
 *  - one family a stat in use, named by its dotted name, or with emit_tags_as_labels by its
 *    tag-extracted name with the tags as labels (proxy/stats_tags.h);
 *  - counters: COUNTER, the total, or with report_counters_as_deltas the change since the
 *    last flush; gauges: GAUGE;
 *  - histograms (histogram_emit_mode, default SUMMARY_AND_HISTOGRAM): a SUMMARY of the
 *    interval (Envoy's quantiles, count and sum of the values since the last flush) and a
 *    HISTOGRAM of all values (cumulative count at each Prometheus bucket bound, count, sum);
 *  - every metric with the flush's timestamp_ms; the first message of a call carries the
 *    identifier (the bootstrap's node id and cluster).
 *
 * The call is opened at start-up and again at the flush after it ended (a collector down or
 * restarted: failures counted). While a call is not up, or what was sent waits above the
 * connection's high watermark (a collector that does not read), a flush is dropped and
 * counted: one message at most waits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "discovery/grpc_stream.h"
#include "proxy/cluster.h"
#include "proxy/cluster_manager.h"
#include "proxy/log.h"
#include "proxy/protobuf.h"
#include "proxy/stats_sink.h"
#include "proxy/stats_tags.h"
#include "proxy/view.h"

#define METRICS_PATH "/envoy.service.metrics.v3.MetricsService/StreamMetrics"

enum { EMIT_BOTH, EMIT_SUMMARY, EMIT_HISTOGRAM };
/* io.prometheus.client.MetricType */
enum { PROM_COUNTER = 0, PROM_GAUGE = 1, PROM_SUMMARY = 2, PROM_HISTOGRAM = 4 };

typedef struct ms_sink {
    pt_stats_sink_t super;
    char *cluster, *node_id, *node_cluster;
    int deltas, tags, emit;
    pt_cluster_manager_t *cm;
    pt_worker_t *worker;
    pt_grpc_stream_t *call;
    int identified; /* the identifier went on this call */
    pt_stat_t flushed, dropped, failed;
} ms_sink_t;

static void ms_free(pt_stats_sink_t *base)
{
    ms_sink_t *s = (ms_sink_t *)base;
    pt_grpc_stream_free(s->call);
    free(s->cluster);
    free(s->node_id);
    free(s->node_cluster);
    free(s);
}

/* ---- the call ------------------------------------------------------------------------- */

static void on_open(void *data)
{
    (void)data;
}

static void on_message(void *data, const void *msg, size_t len)
{
    (void)data, (void)msg, (void)len; /* StreamMetricsResponse is empty */
}

static void on_close(void *data, int status, const char *why)
{
    ms_sink_t *s = data;
    pt_stat_inc(s->failed);
    pt_debug("metrics_service: call to cluster %s ended: %d %s", s->cluster, status, why);
    pt_grpc_stream_free(s->call);
    s->call = NULL;
}

static const pt_grpc_stream_callbacks_t callbacks = {
    .on_open = on_open,
    .on_message = on_message,
    .on_close = on_close,
};

static void open_call(ms_sink_t *s)
{
    pt_view_t *view = s->cm != NULL ? pt_cluster_manager_view(s->cm) : NULL;
    pt_cluster_t *c = view != NULL ? pt_view_find_cluster(view, s->cluster) : NULL;
    char err[256];
    if (c != NULL && s->worker != NULL)
        s->call = pt_grpc_stream_open(c, s->worker, METRICS_PATH, s->cluster, &callbacks, s, err,
                                      sizeof(err));
    pt_view_unref(view); /* the call holds its own reference to the cluster */
    if (s->call == NULL)
        pt_stat_inc(s->failed);
    s->identified = 0;
}

/* ---- the message ---------------------------------------------------------------------- */

static void put_str(pt_pb_writer_t *w, uint32_t field, const char *v)
{
    pt_pb_put_bytes(w, field, v, strlen(v));
}

static void put_double(pt_pb_writer_t *w, uint32_t field, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    pt_pb_put_tag(w, field, PT_PB_WIRE_I64);
    pt_pb_put_fixed64(w, bits);
}

static void put_u64(pt_pb_writer_t *w, uint32_t field, uint64_t v)
{
    pt_pb_put_tag(w, field, PT_PB_WIRE_VARINT);
    pt_pb_put_varint(w, v);
}

/* A MetricFamily (field 2 of StreamMetricsMessage) holding one Metric; returns the Metric's
 * mark, its labels written. The caller writes the value and ends both (end_family). */
typedef struct marks {
    size_t family, metric;
} marks_t;

static marks_t begin_family(const ms_sink_t *s, pt_pb_writer_t *w, const char *name,
                            const pt_stat_tags_t *tags, int type)
{
    marks_t m;
    m.family = pt_pb_begin_len(w, 2);
    put_str(w, 1, s->tags ? tags->name : name);
    put_u64(w, 3, (uint64_t)type);
    m.metric = pt_pb_begin_len(w, 4);
    for (unsigned i = 0; s->tags && i < tags->n; i++) {
        size_t lp = pt_pb_begin_len(w, 1);
        put_str(w, 1, tags->tag_name[i]);
        put_str(w, 2, tags->tag_value[i]);
        pt_pb_end_len(w, lp);
    }
    return m;
}

static void end_family(pt_pb_writer_t *w, marks_t m, uint64_t ts)
{
    put_u64(w, 6, ts);
    pt_pb_end_len(w, m.metric);
    pt_pb_end_len(w, m.family);
}

static void put_histogram(const ms_sink_t *s, pt_pb_writer_t *w, const pt_sink_stat_t *st,
                          const pt_stat_tags_t *tags, uint64_t ts)
{
    pt_hist_summary_t hs;
    if (pt_stats_histogram_summary(st->id, &hs, NULL) != 0)
        return;
    if (s->emit != EMIT_HISTOGRAM) {
        marks_t m = begin_family(s, w, st->name, tags, PROM_SUMMARY);
        size_t sm = pt_pb_begin_len(w, 4);
        put_u64(w, 1, st->interval_count);
        put_double(w, 2, (double)st->interval_sum);
        for (int q = 0; q < PT_HIST_NQ; q++) {
            size_t qm = pt_pb_begin_len(w, 3);
            put_double(w, 1, pt_hist_quantiles[q]);
            put_double(w, 2, hs.interval[q]); /* NaN for an interval without values */
            pt_pb_end_len(w, qm);
        }
        pt_pb_end_len(w, sm);
        end_family(w, m, ts);
    }
    if (s->emit != EMIT_SUMMARY) {
        uint64_t stack[32], *counts = stack;
        if (hs.nbounds > 32 && (counts = malloc(hs.nbounds * sizeof(*counts))) == NULL)
            return;
        pt_stats_histogram_summary(st->id, &hs, counts);
        marks_t m = begin_family(s, w, st->name, tags, PROM_HISTOGRAM);
        size_t hm = pt_pb_begin_len(w, 7);
        put_u64(w, 1, hs.count);
        put_double(w, 2, (double)hs.sum);
        for (uint32_t b = 0; b < hs.nbounds; b++) {
            size_t bm = pt_pb_begin_len(w, 3);
            put_u64(w, 1, counts[b]);
            put_double(w, 2, hs.bounds[b]);
            pt_pb_end_len(w, bm);
        }
        pt_pb_end_len(w, hm);
        end_family(w, m, ts);
        if (counts != stack)
            free(counts);
    }
}

static void ms_flush(pt_stats_sink_t *base, const pt_sink_snapshot_t *snap)
{
    ms_sink_t *s = (ms_sink_t *)base;
    if (s->call == NULL)
        open_call(s);
    if (s->call == NULL || (s->identified && pt_grpc_stream_backed_up(s->call))) {
        pt_stat_inc(s->dropped); /* the collector is away or does not read */
        return;
    }
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    if (!s->identified) {
        size_t id = pt_pb_begin_len(&w, 1);
        size_t node = pt_pb_begin_len(&w, 1);
        if (s->node_id != NULL)
            put_str(&w, 1, s->node_id);
        if (s->node_cluster != NULL)
            put_str(&w, 2, s->node_cluster);
        pt_pb_end_len(&w, node);
        pt_pb_end_len(&w, id);
    }
    pt_stat_tags_t *tags = malloc(sizeof(*tags));
    if (tags == NULL) {
        pt_pb_writer_dispose(&w);
        pt_stat_inc(s->dropped);
        return;
    }
    tags->n = 0;
    const pt_tag_producer_t *producer = pt_stats_tags_current();
    for (size_t i = 0; i < snap->n; i++) {
        const pt_sink_stat_t *st = &snap->stats[i];
        if (s->tags)
            pt_tag_producer_extract(producer, st->name, tags);
        if (st->kind == PT_STAT_COUNTER) {
            marks_t m = begin_family(s, &w, st->name, tags, PROM_COUNTER);
            size_t c = pt_pb_begin_len(&w, 3);
            put_double(&w, 1, (double)(s->deltas ? st->delta : st->value));
            pt_pb_end_len(&w, c);
            end_family(&w, m, snap->time_ms);
        } else if (st->kind == PT_STAT_GAUGE) {
            marks_t m = begin_family(s, &w, st->name, tags, PROM_GAUGE);
            size_t g = pt_pb_begin_len(&w, 2);
            put_double(&w, 1, (double)st->value);
            pt_pb_end_len(&w, g);
            end_family(&w, m, snap->time_ms);
        } else if (st->kind == PT_STAT_HISTOGRAM) {
            put_histogram(s, &w, st, tags, snap->time_ms);
        }
    }
    free(tags);
    if (w.failed || pt_grpc_stream_send(s->call, w.buf, w.len) != 0) {
        pt_stat_inc(s->dropped);
    } else {
        s->identified = 1;
        pt_stat_inc(s->flushed);
    }
    pt_pb_writer_dispose(&w);
}

static void ms_start(pt_stats_sink_t *base, pt_cluster_manager_t *cm, pt_worker_t *w)
{
    ms_sink_t *s = (ms_sink_t *)base;
    s->cm = cm;
    s->worker = w;
    open_call(s); /* up before the first flush */
}

static const pt_stats_sink_ops_t ms_ops = {
    .type = "envoy.config.metrics.v3.MetricsServiceConfig",
    .start = ms_start,
    .flush = ms_flush,
    .free = ms_free,
};

/* ---- configuration -------------------------------------------------------------------- */

/* grpc_service: envoy_grpc.cluster_name (the cluster may be static or from CDS: it is looked
 * up at each call). Returns the name or NULL (errors in r). */
static const char *parse_grpc_service(pt_cfg_t *r, uint64_t *timeout_ms)
{
    const char *name = NULL;
    *timeout_ms = 0;
    if (pt_cfg_enter(r, "grpc_service") <= 0) {
        pt_cfg_error(r, "grpc_service", "is required");
        return NULL;
    }
    static const char *const gs_unsupported[] = {"google_grpc", "retry_policy", "initial_metadata",
                                                 NULL};
    pt_cfg_unsupported(r, gs_unsupported);
    pt_cfg_duration_ms(r, "timeout", timeout_ms, 0);
    if (pt_cfg_enter(r, "envoy_grpc") > 0) {
        static const char *const eg_unsupported[] = {
            "authority", "retry_policy", "max_receive_message_length", "skip_envoy_headers", NULL};
        pt_cfg_unsupported(r, eg_unsupported);
        if (pt_cfg_string(r, "cluster_name", &name, NULL) <= 0 || name[0] == '\0') {
            pt_cfg_error(r, "cluster_name", "is required");
            name = NULL;
        }
        pt_cfg_leave(r);
    } else if (!pt_cfg_has(r, "google_grpc")) {
        pt_cfg_error(r, "envoy_grpc", "is required");
    }
    pt_cfg_leave(r);
    return name;
}

static char *node_field(json_t *root, const char *field)
{
    json_t *v = json_object_get(json_object_get(root, "node"), field);
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

pt_stats_sink_t *pt_metrics_service_sink_parse(pt_cfg_t *r, int make, json_t *root)
{
    size_t before = r->nerrors;
    uint64_t timeout_ms; /* a stream has no deadline: not used */
    const char *cluster = parse_grpc_service(r, &timeout_ms);
    static const char *const versions[] = {"AUTO", "V3", NULL}; /* AUTO is V3 today */
    static const char *const versions_known[] = {"V2", NULL};
    int v;
    pt_cfg_enum(r, "transport_api_version", versions, versions_known, &v, 0);
    int deltas, tags, emit;
    pt_cfg_bool(r, "report_counters_as_deltas", &deltas, 0);
    pt_cfg_bool(r, "emit_tags_as_labels", &tags, 0);
    static const char *const modes[] = {"SUMMARY_AND_HISTOGRAM", "SUMMARY", "HISTOGRAM", NULL};
    pt_cfg_enum(r, "histogram_emit_mode", modes, NULL, &emit, EMIT_BOTH);
    if (r->nerrors != before || !make || cluster == NULL)
        return NULL;
    ms_sink_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->cluster = strdup(cluster)) == NULL) {
        free(s);
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    s->super.ops = &ms_ops;
    s->deltas = deltas;
    s->tags = tags;
    s->emit = emit;
    s->node_id = node_field(root, "id");
    s->node_cluster = node_field(root, "cluster");
    s->flushed = pt_stats_counter("metrics_service", NULL, NULL, "flushed");
    s->dropped = pt_stats_counter("metrics_service", NULL, NULL, "dropped_flushes");
    s->failed = pt_stats_counter("metrics_service", NULL, NULL, "call_failures");
    return &s->super;
}

/* ---- envoy.stat_sinks.open_telemetry ---------------------------------------------------
 *
 * envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig: each flush is one OTLP
 * ExportMetricsServiceRequest, a unary call (opentelemetry.proto.collector.metrics.v1.
 * MetricsService/Export) to the grpc_service's cluster, as Envoy's OTLP flusher builds it:
 * one resource, one scope, and a Metric per stat in use, named by its tag-extracted name
 * (use_tag_extracted_name, default true) or its dotted name, after `prefix.` when a prefix is
 * set, with its tags as string attributes (emit_tags_as_attributes, default true):
 *  - a gauge: Gauge, one NumberDataPoint as_int;
 *  - a counter: Sum, monotonic, as_int, CUMULATIVE (its total) or, with
 *    report_counters_as_deltas, DELTA (its change since the last flush);
 *  - a histogram: Histogram with explicit bounds (the Prometheus bounds of
 *    histogram_bucket_settings, or Envoy's), a count per bucket and one past the last bound,
 *    count and sum: CUMULATIVE (every value so far) or, with report_histograms_as_deltas,
 *    DELTA (the interval).
 * A DELTA point starts at the previous flush, a CUMULATIVE one at the sink's start. One call
 * at a time: a flush while the last call is in flight (a slow collector) is dropped and
 * counted; a call that fails, or takes longer than grpc_service.timeout (5 s when not set),
 * is counted as failed, and the next flush makes a new one. */

#define OTLP_PATH               "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
#define OTLP_DEFAULT_TIMEOUT_MS 5000 /* an export's bound without grpc_service.timeout */
enum { OTLP_DELTA = 1, OTLP_CUMULATIVE = 2 };

typedef struct otlp_sink {
    pt_stats_sink_t super;
    char *cluster, *prefix;
    int counter_deltas, hist_deltas, attributes, extracted;
    pt_cluster_manager_t *cm;
    pt_worker_t *worker;
    pt_grpc_stream_t *call;       /* the export in flight */
    uint64_t call_ms, timeout_ms; /* when it started; how long it may take */
    uint64_t start_ns, last_ns;
    pt_stat_t exported, dropped, failed;
} otlp_sink_t;

static void otlp_free(pt_stats_sink_t *base)
{
    otlp_sink_t *s = (otlp_sink_t *)base;
    pt_grpc_stream_free(s->call);
    free(s->cluster);
    free(s->prefix);
    free(s);
}

static void otlp_on_close(void *data, int status, const char *why)
{
    otlp_sink_t *s = data;
    if (status == 0) {
        pt_stat_inc(s->exported);
    } else {
        pt_stat_inc(s->failed);
        pt_debug("open_telemetry: export to cluster %s failed: %d %s", s->cluster, status, why);
    }
    pt_grpc_stream_free(s->call);
    s->call = NULL;
}

static const pt_grpc_stream_callbacks_t otlp_callbacks = {
    .on_open = on_open,
    .on_message = on_message, /* ExportMetricsServiceResponse: partial_success not read */
    .on_close = otlp_on_close,
};

static void put_fixed64(pt_pb_writer_t *w, uint32_t field, uint64_t v)
{
    pt_pb_put_tag(w, field, PT_PB_WIRE_I64);
    pt_pb_put_fixed64(w, v);
}

/* The metric's name, its data field opened; the data point's mark in *point, with its
 * attributes (field `attr_field` of the point) and times written. Returns the marks to end. */
typedef struct otlp_marks {
    size_t metric, data, point;
} otlp_marks_t;

static otlp_marks_t otlp_begin(const otlp_sink_t *s, pt_pb_writer_t *w, const pt_sink_stat_t *st,
                               const pt_stat_tags_t *tags, uint32_t data_field, uint32_t attr_field,
                               uint64_t start_ns, uint64_t now_ns)
{
    otlp_marks_t m;
    m.metric = pt_pb_begin_len(w, 2); /* ScopeMetrics.metrics */
    const char *name = s->extracted ? tags->name : st->name;
    if (s->prefix != NULL) {
        size_t at = pt_pb_begin_len(w, 1);
        pt_pb_put_raw(w, s->prefix, strlen(s->prefix));
        pt_pb_put_raw(w, ".", 1);
        pt_pb_put_raw(w, name, strlen(name));
        pt_pb_end_len(w, at);
    } else {
        put_str(w, 1, name);
    }
    m.data = pt_pb_begin_len(w, data_field);
    m.point = pt_pb_begin_len(w, 1); /* data_points */
    for (unsigned i = 0; s->attributes && i < tags->n; i++) {
        size_t kv = pt_pb_begin_len(w, attr_field);
        put_str(w, 1, tags->tag_name[i]);
        size_t av = pt_pb_begin_len(w, 2);
        put_str(w, 1, tags->tag_value[i]); /* AnyValue.string_value */
        pt_pb_end_len(w, av);
        pt_pb_end_len(w, kv);
    }
    if (start_ns != 0)
        put_fixed64(w, 2, start_ns);
    put_fixed64(w, 3, now_ns);
    return m;
}

static void otlp_histogram(const otlp_sink_t *s, pt_pb_writer_t *w, const pt_sink_stat_t *st,
                           const pt_stat_tags_t *tags, uint64_t now_ns)
{
    pt_hist_summary_t hs;
    if (pt_stats_histogram_summary(st->id, &hs, NULL) != 0)
        return;
    uint64_t stack[33], *le = stack;
    if (hs.nbounds + 1 > 33 && (le = malloc((hs.nbounds + 1) * sizeof(*le))) == NULL)
        return;
    uint64_t count, sum;
    if (s->hist_deltas) {
        /* The interval's values counted at each bound, from its buckets. */
        uint64_t *iv = calloc(PT_HIST_BUCKETS, sizeof(*iv));
        if (iv == NULL) {
            if (le != stack)
                free(le);
            return;
        }
        for (uint32_t b = 0; b < st->nbuckets; b++)
            iv[st->buckets[b].index] = st->buckets[b].count;
        for (uint32_t b = 0; b < hs.nbounds; b++)
            le[b] = pt_hist_count_le(iv, hs.bounds[b]);
        free(iv);
        count = st->interval_count;
        sum = st->interval_sum;
    } else {
        pt_stats_histogram_summary(st->id, &hs, le);
        count = hs.count;
        sum = hs.sum;
    }
    otlp_marks_t m =
        otlp_begin(s, w, st, tags, 9, 9, s->hist_deltas ? s->last_ns : s->start_ns, now_ns);
    put_fixed64(w, 4, count);
    put_double(w, 5, (double)sum);
    /* bucket_counts (packed fixed64): each bucket's own count; the last is past the last
     * bound. */
    size_t bc = pt_pb_begin_len(w, 6);
    uint64_t prev = 0;
    for (uint32_t b = 0; b < hs.nbounds; b++) {
        uint64_t c = le[b] >= prev ? le[b] - prev : 0;
        pt_pb_put_fixed64(w, c);
        prev = le[b];
    }
    pt_pb_put_fixed64(w, count >= prev ? count - prev : 0);
    pt_pb_end_len(w, bc);
    size_t eb = pt_pb_begin_len(w, 7); /* explicit_bounds (packed double) */
    for (uint32_t b = 0; b < hs.nbounds; b++) {
        uint64_t bits;
        memcpy(&bits, &hs.bounds[b], sizeof(bits));
        pt_pb_put_fixed64(w, bits);
    }
    pt_pb_end_len(w, eb);
    pt_pb_end_len(w, m.point);
    put_u64(w, 2, s->hist_deltas ? OTLP_DELTA : OTLP_CUMULATIVE); /* aggregation_temporality */
    pt_pb_end_len(w, m.data);
    pt_pb_end_len(w, m.metric);
    if (le != stack)
        free(le);
}

static void otlp_flush(pt_stats_sink_t *base, const pt_sink_snapshot_t *snap)
{
    otlp_sink_t *s = (otlp_sink_t *)base;
    uint64_t now_ns = snap->time_ms * 1000000ull;
    if (s->start_ns == 0)
        s->start_ns = now_ns;
    if (s->last_ns == 0)
        s->last_ns = s->start_ns;
    if (s->call != NULL && snap->time_ms - s->call_ms >= s->timeout_ms) {
        /* A collector that never answers: the export is given up (grpc_service.timeout). */
        pt_grpc_stream_free(s->call);
        s->call = NULL;
        pt_stat_inc(s->failed);
    }
    if (s->call != NULL) {
        pt_stat_inc(s->dropped); /* the last export has not finished: one at a time */
        s->last_ns = now_ns;     /* a DELTA point never spans a dropped flush */
        return;
    }
    pt_stat_tags_t *tags = malloc(sizeof(*tags));
    if (tags == NULL) {
        pt_stat_inc(s->dropped);
        return;
    }
    tags->n = 0;
    const pt_tag_producer_t *producer = pt_stats_tags_current();
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    size_t rm = pt_pb_begin_len(&w, 1);  /* resource_metrics */
    size_t res = pt_pb_begin_len(&w, 1); /* resource (no attributes) */
    pt_pb_end_len(&w, res);
    size_t sm = pt_pb_begin_len(&w, 2); /* scope_metrics */
    for (size_t i = 0; i < snap->n; i++) {
        const pt_sink_stat_t *st = &snap->stats[i];
        if (s->attributes || s->extracted)
            pt_tag_producer_extract(producer, st->name, tags);
        if (st->kind == PT_STAT_GAUGE) {
            otlp_marks_t m = otlp_begin(s, &w, st, tags, 5, 7, 0, now_ns);
            put_fixed64(&w, 6, st->value); /* as_int (sfixed64) */
            pt_pb_end_len(&w, m.point);
            pt_pb_end_len(&w, m.data);
            pt_pb_end_len(&w, m.metric);
        } else if (st->kind == PT_STAT_COUNTER) {
            otlp_marks_t m = otlp_begin(s, &w, st, tags, 7, 7,
                                        s->counter_deltas ? s->last_ns : s->start_ns, now_ns);
            put_fixed64(&w, 6, s->counter_deltas ? st->delta : st->value);
            pt_pb_end_len(&w, m.point);
            put_u64(&w, 2, s->counter_deltas ? OTLP_DELTA : OTLP_CUMULATIVE);
            put_u64(&w, 3, 1); /* is_monotonic */
            pt_pb_end_len(&w, m.data);
            pt_pb_end_len(&w, m.metric);
        } else if (st->kind == PT_STAT_HISTOGRAM) {
            otlp_histogram(s, &w, st, tags, now_ns);
        }
    }
    pt_pb_end_len(&w, sm);
    pt_pb_end_len(&w, rm);
    free(tags);
    s->last_ns = now_ns;
    pt_view_t *view = s->cm != NULL ? pt_cluster_manager_view(s->cm) : NULL;
    pt_cluster_t *c = view != NULL ? pt_view_find_cluster(view, s->cluster) : NULL;
    char err[256];
    s->call_ms = snap->time_ms;
    if (!w.failed && c != NULL && s->worker != NULL)
        s->call = pt_grpc_stream_open(c, s->worker, OTLP_PATH, s->cluster, &otlp_callbacks, s, err,
                                      sizeof(err));
    pt_view_unref(view);
    if (s->call == NULL || pt_grpc_stream_send(s->call, w.buf, w.len) != 0 ||
        pt_grpc_stream_send_done(s->call) != 0) {
        pt_stat_inc(s->failed);
        pt_grpc_stream_free(s->call);
        s->call = NULL;
    }
    pt_pb_writer_dispose(&w);
}

static void otlp_start(pt_stats_sink_t *base, pt_cluster_manager_t *cm, pt_worker_t *w)
{
    otlp_sink_t *s = (otlp_sink_t *)base;
    s->cm = cm;
    s->worker = w;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    s->start_ns = ((uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec) * 1000;
}

static const pt_stats_sink_ops_t otlp_ops = {
    .type = "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig",
    .start = otlp_start,
    .flush = otlp_flush,
    .free = otlp_free,
};

pt_stats_sink_t *pt_otlp_sink_parse(pt_cfg_t *r, int make)
{
    size_t before = r->nerrors;
    static const char *const unsupported[] = {"http_service", "custom_metric_conversions",
                                              "resource_detectors", NULL};
    pt_cfg_unsupported(r, unsupported);
    uint64_t timeout_ms;
    const char *cluster = parse_grpc_service(r, &timeout_ms);
    int cdeltas, hdeltas, attrs, extracted;
    const char *prefix;
    pt_cfg_bool(r, "report_counters_as_deltas", &cdeltas, 0);
    pt_cfg_bool(r, "report_histograms_as_deltas", &hdeltas, 0);
    pt_cfg_bool(r, "emit_tags_as_attributes", &attrs, 1);
    pt_cfg_bool(r, "use_tag_extracted_name", &extracted, 1);
    pt_cfg_string(r, "prefix", &prefix, NULL);
    if (r->nerrors != before || !make || cluster == NULL)
        return NULL;
    otlp_sink_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->cluster = strdup(cluster)) == NULL ||
        (prefix != NULL && prefix[0] != '\0' && (s->prefix = strdup(prefix)) == NULL)) {
        if (s != NULL)
            free(s->cluster);
        free(s);
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    s->super.ops = &otlp_ops;
    s->timeout_ms = timeout_ms ? timeout_ms : OTLP_DEFAULT_TIMEOUT_MS;
    s->counter_deltas = cdeltas;
    s->hist_deltas = hdeltas;
    s->attributes = attrs;
    s->extracted = extracted;
    s->exported = pt_stats_counter("open_telemetry", NULL, NULL, "exported");
    s->dropped = pt_stats_counter("open_telemetry", NULL, NULL, "dropped_flushes");
    s->failed = pt_stats_counter("open_telemetry", NULL, NULL, "export_failures");
    return &s->super;
}
