/* Stats sinks (bootstrap stats_sinks): every stats_flush_interval the main thread takes a
 * snapshot of the stats (counters with their change since the last flush, gauges, and what
 * each histogram recorded in the interval that just ended) and hands it to each sink, which
 * sends it its own way (proxy/stats_sink_statsd.c). Workers take no part: they go on
 * counting into their own slots; a flush only reads them.
 *
 * Sinks are made from the bootstrap once, at start-up (as Envoy does); a sink's failures
 * (a collector down, slow or gone) are counted by the sink and never stop a flush or the
 * next sink. */
#ifndef PT_STATS_SINK_H
#define PT_STATS_SINK_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/histogram.h"
#include "proxy/stats.h"

struct pt_cluster_manager;
struct pt_worker;

/* One bucket of a histogram's interval: `count` values around `value` (ms), in petrel's
 * bucket `index` (proxy/histogram.h). */
typedef struct pt_sink_bucket {
    uint64_t value, count;
    unsigned index;
} pt_sink_bucket_t;

/* One stat in a snapshot. */
typedef struct pt_sink_stat {
    pt_stat_t id;
    pt_stat_kind_t kind;
    const char *name; /* full dotted name */
    int used;         /* counter: ever counted; gauge: ever not 0; histogram: values now */
    uint64_t value;   /* counter: total; gauge: value (negative read as 0); histogram:
                       * values merged so far */
    uint64_t delta;   /* counter: change since the last flush */
    uint64_t sum;     /* histogram: the total of all values merged so far */
    uint64_t interval_count, interval_sum; /* histogram: the interval's values, their total */
    const pt_sink_bucket_t *buckets;       /* histogram: the interval's buckets, value order */
    uint32_t nbuckets;
} pt_sink_stat_t;

typedef struct pt_sink_snapshot {
    pt_sink_stat_t *stats; /* the used ones only (Envoy's sinks skip the others), id order */
    size_t n;
    uint64_t time_ms; /* wall clock of the flush */
} pt_sink_snapshot_t;

typedef struct pt_stats_sink pt_stats_sink_t;
typedef struct pt_stats_sink_ops {
    const char *type; /* the typed_config's type (without the URL's host part) */
    /* Once installed: cm and w are where it finds its cluster and makes its connections. */
    void (*start)(pt_stats_sink_t *s, struct pt_cluster_manager *cm, struct pt_worker *w);
    void (*flush)(pt_stats_sink_t *s, const pt_sink_snapshot_t *snap);
    void (*free)(pt_stats_sink_t *s);
} pt_stats_sink_ops_t;

struct pt_stats_sink {
    const pt_stats_sink_ops_t *ops;
    pt_stats_sink_t *next;
};

/* Parses bootstrap stats_sinks at the reader's current object (the bootstrap). Returns 0,
 * or -1 with errors naming each field. With sinks: the list made (start-up), else only
 * validated. */
int pt_stats_sinks_parse(pt_cfg_t *r, pt_stats_sink_t **sinks, json_t *root);
/* Makes the sinks of bootstrap root (start-up); errors are left for the full build of the
 * bootstrap to report, with the same parser. */
void pt_stats_sinks_configure(json_t *root);
/* Starts the sinks made: cm and main_worker are where a sink finds its cluster and makes its
 * connections (the main thread's). */
void pt_stats_sinks_start(struct pt_cluster_manager *cm, struct pt_worker *main_worker);
/* Whether any sink is installed. */
int pt_stats_sinks_active(void);
/* The flush: merges the histograms (an interval ends) and, with sinks, sends each a
 * snapshot. Main thread. */
void pt_stats_flush(void);
/* Frees the installed sinks (shutdown). */
void pt_stats_sinks_dispose(void);

/* The statsd sink's parser (proxy/stats_sink_statsd.c): the reader is in the typed_config. */
pt_stats_sink_t *pt_statsd_sink_parse(pt_cfg_t *r, int make);
/* The OpenTelemetry sink's parser (proxy/stats_sink_otlp.c), likewise. */
pt_stats_sink_t *pt_otlp_sink_parse(pt_cfg_t *r, int make);
/* The metrics_service sink's parser (proxy/stats_sink_grpc.c), likewise; root is the
 * bootstrap (its node identifies petrel to the collector). */
pt_stats_sink_t *pt_metrics_service_sink_parse(pt_cfg_t *r, int make, json_t *root);

#endif
