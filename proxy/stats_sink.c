#include "proxy/stats_sink.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "proxy/log.h"

/* ---- configuration ------------------------------------------------------------------- */

#define STATSD_TYPE          "envoy.config.metrics.v3.StatsdSink"
#define METRICS_SERVICE_TYPE "envoy.config.metrics.v3.MetricsServiceConfig"
#define OTLP_TYPE            "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig"

/* Sinks Envoy has and petrel does not (yet): refused with their name. */
static const struct {
    const char *type, *name;
} unsupported_sinks[] = {
    {"envoy.config.metrics.v3.DogStatsdSink", "envoy.stat_sinks.dog_statsd"},
    {"envoy.config.metrics.v3.HystrixSink", "envoy.stat_sinks.hystrix"},
    {"envoy.extensions.stat_sinks.graphite_statsd.v3.GraphiteStatsdSink",
     "envoy.stat_sinks.graphite_statsd"},
    {"envoy.extensions.stat_sinks.wasm.v3.Wasm", "envoy.stat_sinks.wasm"},
};

int pt_stats_sinks_parse(pt_cfg_t *r, pt_stats_sink_t **sinks, json_t *root)
{
    size_t before = r->nerrors;
    int present;
    size_t n = pt_cfg_array(r, "stats_sinks", &present);
    pt_stats_sink_t *list = NULL, **tail = &list;
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        const char *name;
        pt_cfg_string(r, "name", &name, NULL);
        int rc;
        const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
        if (rc == 0)
            pt_cfg_error(r, "typed_config", "is required (petrel picks the sink by its @type)");
        if (rc > 0) {
            const char *slash = strrchr(type, '/');
            const char *t = slash ? slash + 1 : type;
            pt_stats_sink_t *s = NULL;
            int known_type = 1;
            if (strcmp(t, STATSD_TYPE) == 0)
                s = pt_statsd_sink_parse(r, sinks != NULL);
            else if (strcmp(t, METRICS_SERVICE_TYPE) == 0)
                s = pt_metrics_service_sink_parse(r, sinks != NULL, root);
            else if (strcmp(t, OTLP_TYPE) == 0)
                s = pt_otlp_sink_parse(r, sinks != NULL);
            else
                known_type = 0;
            if (known_type) {
                if (s != NULL) {
                    *tail = s;
                    tail = &s->next;
                }
            } else {
                const char *known = NULL;
                for (size_t k = 0; k < sizeof(unsupported_sinks) / sizeof(unsupported_sinks[0]);
                     k++)
                    if (strcmp(t, unsupported_sinks[k].type) == 0)
                        known = unsupported_sinks[k].name;
                pt_cfg_error(r, NULL,
                             "%s%s%s is not supported (petrel's stats sinks: "
                             "envoy.stat_sinks.statsd, envoy.stat_sinks.metrics_service, "
                             "envoy.stat_sinks.open_telemetry)",
                             t, known ? " " : "", known ? known : "");
                pt_cfg_skip_rest(r);
            }
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    if (r->nerrors != before || sinks == NULL) {
        while (list != NULL) {
            pt_stats_sink_t *next = list->next;
            list->ops->free(list);
            list = next;
        }
        return r->nerrors != before ? -1 : 0;
    }
    *sinks = list;
    return 0;
}

/* ---- the flush ------------------------------------------------------------------------ */

static pt_stats_sink_t *installed;

/* What the last flush saw of each stat, by id: a counter's total (for its delta) and
 * whether a gauge was ever not 0 (Envoy's "used"). An id reused by a new stat after its
 * cluster went starts from a total below the last one: its delta is then its total. */
static uint64_t *last_value;
static uint8_t *ever_used;
static uint32_t last_cap;

void pt_stats_sinks_configure(json_t *root)
{
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_stats_sink_t *sinks = NULL;
    if (pt_stats_sinks_parse(&r, &sinks, root) == 0)
        installed = sinks;
    pt_cfg_skip_rest(&r);
    pt_cfg_dispose(&r);
}

void pt_stats_sinks_start(struct pt_cluster_manager *cm, struct pt_worker *main_worker)
{
    for (pt_stats_sink_t *s = installed; s != NULL; s = s->next)
        s->ops->start(s, cm, main_worker);
}

int pt_stats_sinks_active(void)
{
    return installed != NULL;
}

void pt_stats_sinks_dispose(void)
{
    while (installed != NULL) {
        pt_stats_sink_t *next = installed->next;
        installed->ops->free(installed);
        installed = next;
    }
    free(last_value);
    free(ever_used);
    last_value = NULL;
    ever_used = NULL;
    last_cap = 0;
}

/* Histograms with values in the interval, by id (open addressing), for the snapshot. */
typedef struct hist_interval {
    pt_stat_t id;
    pt_sink_bucket_t *buckets;
    uint32_t n;
    uint64_t sum, count;
} hist_interval_t;

typedef struct flush_ctx {
    pt_arena_t arena;
    hist_interval_t *table;
    uint32_t cap, n;
} flush_ctx_t;

static uint32_t slot_of(pt_stat_t id, uint32_t cap)
{
    return (id * 2654435761u) & (cap - 1);
}

static int table_grow(flush_ctx_t *f)
{
    uint32_t cap = f->cap ? f->cap * 2 : 64;
    hist_interval_t *t = calloc(cap, sizeof(*t));
    if (t == NULL)
        return -1;
    for (uint32_t i = 0; i < f->cap; i++) {
        if (f->table[i].id == 0)
            continue;
        uint32_t k = slot_of(f->table[i].id, cap);
        while (t[k].id != 0)
            k = (k + 1) & (cap - 1);
        t[k] = f->table[i];
    }
    free(f->table);
    f->table = t;
    f->cap = cap;
    return 0;
}

/* A bucket's value for a sink: its exact value below 32 (one value a bucket), else its
 * middle (within 3.2% of every value it holds). */
static uint64_t bucket_value(unsigned b)
{
    uint64_t lo = pt_hist_bucket_lower(b), hi = pt_hist_bucket_upper(b);
    return lo + (hi - lo) / 2;
}

static void on_interval(void *arg, pt_stat_t id, const uint64_t *delta, uint32_t chunks,
                        uint64_t count, uint64_t cum_sum)
{
    flush_ctx_t *f = arg;
    if (2 * (f->n + 1) > f->cap && table_grow(f) != 0)
        return;
    uint32_t nb = 0;
    for (unsigned c = 0; c < PT_HIST_CHUNKS; c++)
        if (chunks & (1u << c))
            for (unsigned i = 0; i < PT_HIST_SUB; i++)
                nb += delta[c * PT_HIST_SUB + i] != 0;
    pt_sink_bucket_t *b = pt_arena_alloc(&f->arena, (nb ? nb : 1) * sizeof(*b));
    if (b == NULL)
        return;
    uint32_t k = 0;
    for (unsigned c = 0; c < PT_HIST_CHUNKS; c++)
        if (chunks & (1u << c))
            for (unsigned i = 0; i < PT_HIST_SUB; i++)
                if (delta[c * PT_HIST_SUB + i] != 0)
                    b[k++] = (pt_sink_bucket_t){bucket_value(c * PT_HIST_SUB + i),
                                                delta[c * PT_HIST_SUB + i], c * PT_HIST_SUB + i};
    uint32_t s = slot_of(id, f->cap);
    while (f->table[s].id != 0)
        s = (s + 1) & (f->cap - 1);
    f->table[s] = (hist_interval_t){id, b, nb, cum_sum, count};
    f->n++;
}

static const hist_interval_t *interval_of(const flush_ctx_t *f, pt_stat_t id)
{
    if (f->cap == 0)
        return NULL;
    for (uint32_t s = slot_of(id, f->cap); f->table[s].id != 0; s = (s + 1) & (f->cap - 1))
        if (f->table[s].id == id)
            return &f->table[s];
    return NULL;
}

static int ensure_last(uint32_t top)
{
    if (top <= last_cap)
        return 0;
    uint32_t cap = last_cap ? last_cap : 1024;
    while (cap < top)
        cap *= 2;
    uint64_t *v = realloc(last_value, cap * sizeof(*v));
    if (v == NULL)
        return -1;
    last_value = v;
    uint8_t *u = realloc(ever_used, cap);
    if (u == NULL)
        return -1;
    ever_used = u;
    memset(last_value + last_cap, 0, (cap - last_cap) * sizeof(*v));
    memset(ever_used + last_cap, 0, cap - last_cap);
    last_cap = cap;
    return 0;
}

void pt_stats_flush(void)
{
    if (installed == NULL) {
        pt_stats_merge_histograms();
        return;
    }
    flush_ctx_t f = {0};
    pt_arena_init_small(&f.arena);
    pt_stats_merge_histograms_visit(on_interval, &f);
    uint32_t n;
    pt_stat_t *ids = pt_stats_live_ids(&n); /* id order: sinks need no sorting */
    pt_sink_stat_t *stats = ids != NULL ? calloc(n ? n : 1, sizeof(*stats)) : NULL;
    if (stats == NULL || ensure_last(pt_stats_count()) != 0) {
        pt_warn("stats flush skipped: out of memory");
        goto out;
    }
    size_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        const pt_stat_info_t *info = pt_stats_info(ids[i]);
        if (info == NULL || pt_stat_family(info)->kind == PT_STAT_TEXT)
            continue; /* text readouts go to no sink, as in Envoy's statsd */
        pt_sink_stat_t *st = &stats[m];
        st->id = ids[i];
        st->kind = pt_stat_family(info)->kind;
        pt_stat_t id = ids[i];
        switch (st->kind) {
        case PT_STAT_COUNTER: {
            uint64_t v = pt_stats_value(id);
            st->value = v;
            st->delta = v >= last_value[id] ? v - last_value[id] : v;
            last_value[id] = v;
            st->used = v != 0;
            break;
        }
        case PT_STAT_GAUGE: {
            int64_t g = pt_stats_gauge_value(id);
            st->value = g > 0 ? (uint64_t)g : 0;
            ever_used[id] |= g != 0;
            st->used = ever_used[id];
            break;
        }
        case PT_STAT_HISTOGRAM: {
            /* Used once it has values (Envoy's); the interval's may be none. */
            const hist_interval_t *h = interval_of(&f, id);
            st->value = pt_stats_value(id);
            st->used = st->value > 0;
            if (h != NULL) {
                st->buckets = h->buckets;
                st->nbuckets = h->n;
                st->sum = h->sum;
                st->interval_count = h->count;
                /* last_value holds a histogram's total at the last flush. */
                st->interval_sum = h->sum >= last_value[id] ? h->sum - last_value[id] : h->sum;
                last_value[id] = h->sum;
            } else {
                pt_hist_summary_t hs;
                if (pt_stats_histogram_summary(id, &hs, NULL) == 0)
                    st->sum = hs.sum;
            }
            break;
        }
        default:
            continue;
        }
        if (!st->used)
            continue; /* no sink sends an unused stat (Envoy's "used"): no name built */
        char name[PT_STAT_NAME_MAX];
        pt_stat_full_name(info, name, sizeof(name));
        if ((st->name = pt_arena_strdup(&f.arena, name)) == NULL)
            continue;
        m++;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    pt_sink_snapshot_t snap = {stats, m, (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000};
    for (pt_stats_sink_t *s = installed; s != NULL; s = s->next)
        s->ops->flush(s, &snap);
out:
    free(stats);
    free(ids);
    free(f.table);
    pt_arena_dispose(&f.arena);
}
