#include "proxy/admin.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "proxy/access_log.h"
#include "discovery/outlier.h"
#include "proxy/cluster.h"
#include "proxy/conn.h"
#include "proxy/http1_parser.h"
#include "proxy/log.h"
#include "proxy/cluster_manager.h"
#include "proxy/heap.h"
#include "proxy/regex.h"
#include "proxy/route_manager.h"
#include "proxy/server.h"
#include "proxy/stats.h"
#include "proxy/stats_tags.h"
#include "proxy/stats_sink.h"
#include "proxy/hash.h"
#include "proxy/time.h"
#include "tls/context.h"

#define ADMIN_MAX_HEAD    16384
#define ADMIN_MAX_HEADERS 64

#define ADMIN_EMFILE_BACKOFF 0.1 /* seconds accepting pauses when out of descriptors */

struct pt_admin {
    pt_server_t *server;
    int fd;
    ev_io io;
    ev_timer backoff; /* restarts io after an EMFILE/ENFILE pause */
};

#define ADMIN_REQUEST_TIMEOUT 10.0 /* seconds a client has to send its request */

typedef struct admin_conn {
    pt_admin_t *admin;
    pt_conn_t *conn;
    uint64_t start_wall_us, start_mono_us; /* accepted: for the admin access log */
    ev_timer timeout;
    pt_h1_head_t head;
    pt_h1_header_t headers[ADMIN_MAX_HEADERS];
} admin_conn_t;

typedef struct admin_request {
    pt_admin_t *admin;
    const char *method;
    char path[512];
    char query[1024];
} admin_request_t;

typedef struct admin_response {
    int status;
    const char *content_type;
    pt_buf_t body;
    const char *allow; /* for 405 */
} admin_response_t;

/* ---- query strings --------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Finds `key` in the query and percent-decodes its value into out. Returns 1 if present. */
static int query_param(const char *query, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    const char *p = query;
    while (p != NULL && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len >= klen && strncmp(p, key, klen) == 0 && (len == klen || p[klen] == '=')) {
            size_t o = 0;
            for (size_t i = klen + 1; i < len && o + 1 < outlen; i++) {
                char c = p[i];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%' && i + 2 < len + 0 + 1 && hexval(p[i + 1]) >= 0 &&
                           hexval(p[i + 2]) >= 0) {
                    c = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
                    i += 2;
                }
                out[o++] = c;
            }
            if (outlen > 0)
                out[o < outlen ? o : outlen - 1] = '\0';
            return 1;
        }
        p = end ? end + 1 : NULL;
    }
    return 0;
}

/* ---- stats ----------------------------------------------------------------------- */

/* ?filter=: an RE2 regex that a stat's name must contain a match of, as Envoy's admin. */
typedef struct stat_filter {
    pt_arena_t arena;
    const pt_regex_t *re; /* NULL: no filter */
} stat_filter_t;

static int filter_init(stat_filter_t *f, const char *filter)
{
    memset(f, 0, sizeof(*f));
    char err[256];
    if (filter != NULL && filter[0] != '\0' &&
        (f->re = pt_regex_compile(&f->arena, filter, 0, err, sizeof(err))) == NULL) {
        pt_arena_dispose(&f->arena);
        return -EINVAL;
    }
    return 0;
}

static int filter_match(const stat_filter_t *f, const char *name)
{
    return f->re == NULL || pt_regex_partial_match(f->re, name, strlen(name));
}

static void filter_dispose(stat_filter_t *f)
{
    pt_arena_dispose(&f->arena);
}

/* Whether a stat counts for ?usedonly: a counter or gauge that is not 0, a text readout
 * that was ever set (as Envoy's "used" flag), a histogram with merged values (Envoy's). */
static int stat_used(const pt_stat_info_t *info, pt_stat_t id)
{
    if (pt_stat_family(info)->kind == PT_STAT_HISTOGRAM) {
        pt_hist_summary_t hs;
        return pt_stats_histogram_summary(id, &hs, NULL) == 0 && hs.used;
    }
    if (pt_stat_family(info)->kind != PT_STAT_TEXT)
        return pt_stats_value(id) != 0;
    int set;
    free(pt_stats_text_value(id, &set));
    return set;
}

/* A text readout in /stats text form, as Envoy prints it: the value in double quotes
 * (with quotes, backslashes and line breaks escaped, so a line stays one stat). */
static void append_text_stat(pt_buf_t *out, const char *name, pt_stat_t id)
{
    char *v = pt_stats_text_value(id, NULL);
    pt_buf_printf(out, "%s: \"", name);
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '"' || *p == '\\')
            pt_buf_printf(out, "\\%c", *p);
        else if (*p == '\n')
            pt_buf_append_str(out, "\\n");
        else
            pt_buf_append(out, p, 1);
    }
    pt_buf_append_str(out, "\"\n");
    free(v);
}

/* A histogram in /stats text form, as Envoy prints it: each quantile with its value in the
 * last interval and over all time, `P50(nan,12.5)`, or "No recorded values" before any
 * value was merged. */
static void append_histogram_text(pt_buf_t *out, const char *name, pt_stat_t id)
{
    pt_hist_summary_t hs;
    if (pt_stats_histogram_summary(id, &hs, NULL) != 0 || !hs.used) {
        pt_buf_printf(out, "%s: No recorded values\n", name);
        return;
    }
    pt_buf_printf(out, "%s:", name);
    for (int i = 0; i < PT_HIST_NQ; i++) {
        char a[40], b[40];
        pt_buf_printf(out, " P%s(%s,%s)", pt_hist_quantile_names[i],
                      pt_hist_fmt_double(hs.interval[i], a, sizeof(a)),
                      pt_hist_fmt_double(hs.cumulative[i], b, sizeof(b)));
    }
    pt_buf_append_str(out, "\n");
}

static void format_value(const pt_stat_info_t *info, pt_stat_t id, char *out, size_t len)
{
    if (pt_stat_family(info)->kind == PT_STAT_GAUGE)
        snprintf(out, len, "%lld", (long long)pt_stats_gauge_value(id));
    else
        snprintf(out, len, "%llu", (unsigned long long)pt_stats_value(id));
}

int pt_admin_render_stats_text(pt_buf_t *out, const char *filter, int used_only)
{
    stat_filter_t f;
    if (filter_init(&f, filter) != 0)
        return -EINVAL;
    uint32_t n;
    pt_stat_t *ids = pt_stats_sorted(&n);
    if (ids == NULL) {
        filter_dispose(&f);
        return -ENOMEM;
    }
    /* Counters, gauges and text readouts, then histograms (Envoy's order): the histograms'
     * ids move to the front of ids[] as they are met (never past the one being read), in
     * name order, for the second pass. */
    uint32_t nhist = 0;
    for (uint32_t i = 0; i < n; i++) {
        const pt_stat_info_t *info = pt_stats_info(ids[i]);
        if (pt_stat_family(info)->kind == PT_STAT_HISTOGRAM) {
            ids[nhist++] = ids[i];
            continue;
        }
        char name[PT_STAT_NAME_MAX];
        pt_stat_full_name(info, name, sizeof(name));
        if (!filter_match(&f, name) || (used_only && !stat_used(info, ids[i])))
            continue;
        if (pt_stat_family(info)->kind == PT_STAT_TEXT) {
            append_text_stat(out, name, ids[i]);
            continue;
        }
        char v[32];
        format_value(info, ids[i], v, sizeof(v));
        pt_buf_printf(out, "%s: %s\n", name, v);
    }
    for (uint32_t i = 0; i < nhist; i++) {
        const pt_stat_info_t *info = pt_stats_info(ids[i]);
        char name[PT_STAT_NAME_MAX];
        pt_stat_full_name(info, name, sizeof(name));
        if (filter_match(&f, name) && !(used_only && !stat_used(info, ids[i])))
            append_histogram_text(out, name, ids[i]);
    }
    free(ids);
    filter_dispose(&f);
    return 0;
}

/* A quantile as a JSON number: an integer when it is one (Envoy prints 12, not 12.0), null
 * for NaN (an interval without values), as Envoy's JSON streamer does. */
static json_t *json_quantile(double v)
{
    if (v != v)
        return json_null();
    if (v == (double)(json_int_t)v)
        return json_integer((json_int_t)v);
    return json_real(v);
}

int pt_admin_render_stats_json(pt_buf_t *out, const char *filter, int used_only)
{
    stat_filter_t f;
    if (filter_init(&f, filter) != 0)
        return -EINVAL;
    uint32_t n;
    pt_stat_t *ids = pt_stats_sorted(&n);
    if (ids == NULL) {
        filter_dispose(&f);
        return -ENOMEM;
    }
    json_t *arr = json_array();
    json_t *computed = NULL; /* histograms: Envoy's "computed_quantiles" */
    for (uint32_t i = 0; i < n; i++) {
        const pt_stat_info_t *info = pt_stats_info(ids[i]);
        char name[PT_STAT_NAME_MAX];
        pt_stat_full_name(info, name, sizeof(name));
        if (!filter_match(&f, name) || (used_only && !stat_used(info, ids[i])))
            continue;
        if (pt_stat_family(info)->kind == PT_STAT_HISTOGRAM) {
            pt_hist_summary_t hs;
            if (pt_stats_histogram_summary(ids[i], &hs, NULL) != 0)
                continue;
            json_t *values = json_array();
            for (int q = 0; q < PT_HIST_NQ; q++)
                json_array_append_new(values, json_pack("{s:o,s:o}", "interval",
                                                        json_quantile(hs.interval[q]),
                                                        "cumulative",
                                                        json_quantile(hs.cumulative[q])));
            if (computed == NULL)
                computed = json_array();
            json_array_append_new(computed,
                                  json_pack("{s:s,s:o}", "name", name, "values", values));
            continue;
        }
        if (pt_stat_family(info)->kind == PT_STAT_TEXT) {
            char *t = pt_stats_text_value(ids[i], NULL);
            json_array_append_new(arr,
                                  json_pack("{s:s,s:s}", "name", name, "value", t ? t : ""));
            free(t);
            continue;
        }
        json_int_t v = pt_stat_family(info)->kind == PT_STAT_GAUGE ? (json_int_t)pt_stats_gauge_value(ids[i])
                                                   : (json_int_t)pt_stats_value(ids[i]);
        json_array_append_new(arr, json_pack("{s:s,s:I}", "name", name, "value", v));
    }
    /* Envoy's histograms object, the last element of "stats", when there are any. */
    if (computed != NULL) {
        json_t *supported = json_array();
        for (int q = 0; q < PT_HIST_NQ; q++)
            json_array_append_new(supported, json_quantile(100 * pt_hist_quantiles[q]));
        json_array_append_new(
            arr, json_pack("{s:{s:o,s:o}}", "histograms", "supported_quantiles", supported,
                           "computed_quantiles", computed));
    }
    free(ids);
    filter_dispose(&f);
    json_t *root = json_pack("{s:o}", "stats", arr);
    /* 15 significant digits: 99.9 and 10.3 print as written, not 99.900000000000006. */
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(15));
    pt_buf_append_str(out, s);
    pt_buf_append_str(out, "\n");
    free(s);
    json_decref(root);
    return 0;
}

/* One stat in Prometheus form: its metric name (envoy_ and the sanitized tag-extracted
 * name, with the counter's _total), shared by the stats of one family within a rendering. */
typedef struct prom_entry {
    pt_stat_t id;
    const char *metric;
} prom_entry_t;

static int cmp_prom(const void *a, const void *b)
{
    const prom_entry_t *x = a, *y = b;
    int c = strcmp(x->metric, y->metric);
    if (c != 0)
        return c;
    const pt_stat_info_t *ix = pt_stats_info(x->id), *iy = pt_stats_info(y->id);
    if (pt_stat_family(ix)->kind != pt_stat_family(iy)->kind)
        return pt_stat_family(ix)->kind < pt_stat_family(iy)->kind ? -1 : 1;
    return pt_stats_cmp_names(ix, iy);
}

/* Metric names of one rendering, stored once each (a few hundred however many clusters). */
typedef struct prom_names {
    char **slots;
    size_t cap, n;
} prom_names_t;

static const char *prom_intern(prom_names_t *t, const char *s)
{
    if (2 * (t->n + 1) > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        char **n = calloc(cap, sizeof(*n));
        if (n == NULL)
            return NULL;
        for (size_t i = 0; i < t->cap; i++) {
            if (t->slots[i] == NULL)
                continue;
            size_t k = pt_hash_name(t->slots[i]) & (cap - 1);
            while (n[k] != NULL)
                k = (k + 1) & (cap - 1);
            n[k] = t->slots[i];
        }
        free(t->slots);
        t->slots = n;
        t->cap = cap;
    }
    size_t k = pt_hash_name(s) & (t->cap - 1);
    while (t->slots[k] != NULL) {
        if (strcmp(t->slots[k], s) == 0)
            return t->slots[k];
        k = (k + 1) & (t->cap - 1);
    }
    if ((t->slots[k] = strdup(s)) == NULL)
        return NULL;
    t->n++;
    return t->slots[k];
}

static void prom_names_free(prom_names_t *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->slots[i]);
    free(t->slots);
}

/* A counter's Prometheus name carries the conventional _total (added when the Envoy name
 * lacks it); a gauge whose Envoy name ends in _total (membership_total) keeps its name. */
static void prom_metric_name(const pt_stat_tags_t *tags, pt_stat_kind_t kind, char *out,
                             size_t len)
{
    /* Envoy's names exactly, no suffix added: dashboards and alerts written for Envoy query
     * envoy_cluster_upstream_rq_xx and envoy_cluster_upstream_rq_total as Envoy writes them
     * (a _total suffix would merge upstream_rq_<code> into upstream_rq_total's family and
     * double its sums). */
    (void)kind;
    char san[PT_STAT_NAME_MAX];
    pt_stats_prom_sanitize(tags->name, san, sizeof(san));
    snprintf(out, len, "envoy_%s", san);
}

static void prom_escape(pt_buf_t *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            pt_buf_printf(out, "\\%c", *v);
        else if (*v == '\n')
            pt_buf_append_str(out, "\\n");
        else
            pt_buf_append(out, v, 1);
    }
}

/* HELP text allows any character but escapes backslash and line feed (a label value also
 * escapes the double quote); stat names embed user-chosen cluster names and prefixes. */
static void prom_escape_help(pt_buf_t *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            pt_buf_append_str(out, "\\\\");
        else if (*v == '\n')
            pt_buf_append_str(out, "\\n");
        else
            pt_buf_append(out, v, 1);
    }
}

/* The stat's tags as labels (names sanitized as Envoy's Prometheus output does; a name
 * starting with a digit gets a leading '_'), then `extra` (a histogram's le), in braces;
 * nothing when there are none. */
static void prom_labels(pt_buf_t *out, const pt_stat_tags_t *tags, const char *extra)
{
    if (tags->n == 0 && extra == NULL)
        return;
    pt_buf_append_str(out, "{");
    for (unsigned i = 0; i < tags->n; i++) {
        char label[256];
        pt_stats_prom_sanitize(tags->tag_name[i], label, sizeof(label));
        pt_buf_printf(out, "%s%s%s=\"", i ? "," : "", label[0] >= '0' && label[0] <= '9' ? "_" : "",
                      label);
        prom_escape(out, tags->tag_value[i]);
        pt_buf_append_str(out, "\"");
    }
    if (extra != NULL)
        pt_buf_printf(out, "%s%s", tags->n ? "," : "", extra);
    pt_buf_append_str(out, "}");
}

/* A histogram's samples, as Envoy writes them: the cumulative count at each bucket bound
 * (stats_config.histogram_bucket_settings, or Envoy's default bounds), +Inf, sum, count. */
static void prom_histogram(pt_buf_t *out, const char *pn, const pt_stat_tags_t *tags,
                           pt_stat_t id)
{
    pt_hist_summary_t hs;
    if (pt_stats_histogram_summary(id, &hs, NULL) != 0)
        return;
    uint64_t stack[32], *counts = stack;
    if (hs.nbounds > 32 && (counts = malloc(hs.nbounds * sizeof(*counts))) == NULL)
        return;
    pt_stats_histogram_summary(id, &hs, counts);
    for (uint32_t b = 0; b < hs.nbounds; b++) {
        char v[48], le[64];
        snprintf(le, sizeof(le), "le=\"%s\"", pt_hist_fmt_double(hs.bounds[b], v, sizeof(v)));
        pt_buf_printf(out, "%s_bucket", pn);
        prom_labels(out, tags, le);
        pt_buf_printf(out, " %llu\n", (unsigned long long)counts[b]);
    }
    pt_buf_printf(out, "%s_bucket", pn);
    prom_labels(out, tags, "le=\"+Inf\"");
    pt_buf_printf(out, " %llu\n", (unsigned long long)hs.count);
    pt_buf_printf(out, "%s_sum", pn);
    prom_labels(out, tags, NULL);
    pt_buf_printf(out, " %llu\n", (unsigned long long)hs.sum);
    pt_buf_printf(out, "%s_count", pn);
    prom_labels(out, tags, NULL);
    pt_buf_printf(out, " %llu\n", (unsigned long long)hs.count);
    if (counts != stack)
        free(counts);
}

/* Prometheus text exposition 0.0.4, with Envoy's tag extraction (stats_config.stats_tags
 * and the default extractors, proxy/stats_tags.h): a family is a tag-extracted name, its
 * tags are labels, the names Envoy's own (no suffix added); histograms have Envoy's _bucket,
 * _sum and _count series, and every family has HELP and TYPE lines, so the output is well
 * formed for `promtool check metrics`, whose only complaints are the lints Envoy's own names
 * draw (counters without "_total", gauges with it, the "ms" unit; docs/stats.md). */
int pt_admin_render_prometheus(pt_buf_t *out, const char *filter, int used_only)
{
    stat_filter_t f;
    if (filter_init(&f, filter) != 0)
        return -EINVAL;
    uint32_t n;
    pt_stat_t *ids = pt_stats_sorted(&n);
    prom_entry_t *entries = ids != NULL ? malloc((n ? n : 1) * sizeof(*entries)) : NULL;
    pt_stat_tags_t *tags = malloc(sizeof(*tags));
    prom_names_t names = {0};
    if (ids == NULL || entries == NULL || tags == NULL) {
        free(ids);
        free(entries);
        free(tags);
        filter_dispose(&f);
        return -ENOMEM;
    }
    const pt_tag_producer_t *producer = pt_stats_tags_current();
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        const pt_stat_info_t *info = pt_stats_info(ids[i]);
        char name[PT_STAT_NAME_MAX], metric[PT_STAT_NAME_MAX + 16];
        pt_stat_full_name(info, name, sizeof(name));
        /* Text readouts have no Prometheus form (Envoy leaves them out by default too). */
        if (pt_stat_family(info)->kind == PT_STAT_TEXT || !filter_match(&f, name) ||
            (used_only && !stat_used(info, ids[i])))
            continue;
        pt_tag_producer_extract(producer, name, tags);
        prom_metric_name(tags, pt_stat_family(info)->kind, metric, sizeof(metric));
        const char *shared = prom_intern(&names, metric);
        if (shared == NULL)
            continue; /* out of memory: the stat is left out */
        entries[m++] = (prom_entry_t){ids[i], shared};
    }
    free(ids);
    qsort(entries, m, sizeof(*entries), cmp_prom);
    const char *family = NULL;
    pt_stat_kind_t family_kind = PT_STAT_COUNTER;
    for (uint32_t i = 0; i < m; i++) {
        const pt_stat_info_t *info = pt_stats_info(entries[i].id);
        pt_stat_kind_t kind = pt_stat_family(info)->kind;
        const char *metric = entries[i].metric;
        char name[PT_STAT_NAME_MAX];
        pt_stat_full_name(info, name, sizeof(name));
        if (family == metric && kind != family_kind)
            continue; /* a name two kinds extract to: one TYPE a family, the first kind's */
        int counter = kind == PT_STAT_COUNTER, histogram = kind == PT_STAT_HISTOGRAM;
        const char *type = counter ? "counter" : histogram ? "histogram" : "gauge";
        if (family != metric) {
            family = metric;
            family_kind = kind;
            pt_buf_printf(out, "# HELP %s %s ", metric,
                          counter ? "Counter" : histogram ? "Histogram" : "Gauge");
            prom_escape_help(out, name);
            pt_buf_append_str(out, "\n");
            pt_buf_printf(out, "# TYPE %s %s\n", metric, type);
        }
        pt_tag_producer_extract(producer, name, tags);
        if (histogram) {
            prom_histogram(out, metric, tags, entries[i].id);
            continue;
        }
        char v[32];
        format_value(info, entries[i].id, v, sizeof(v));
        pt_buf_append_str(out, metric);
        prom_labels(out, tags, NULL);
        pt_buf_printf(out, " %s\n", v);
    }
    prom_names_free(&names);
    free(entries);
    free(tags);
    filter_dispose(&f);
    return 0;
}

/* ---- endpoints ------------------------------------------------------------------- */

static void body_json(admin_response_t *res, json_t *root)
{
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
    if (s != NULL) {
        pt_buf_append_str(&res->body, s);
        pt_buf_append_str(&res->body, "\n");
        free(s);
    }
    json_decref(root);
    res->content_type = "application/json";
}

static void format_duration(double secs, char *out, size_t len)
{
    snprintf(out, len, "%llus", (unsigned long long)secs);
}

static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static json_t *node_json(const pt_config_t *cfg)
{
    json_t *node = json_object();
    if (cfg->node.id)
        json_object_set_new(node, "id", json_string(cfg->node.id));
    if (cfg->node.cluster)
        json_object_set_new(node, "cluster", json_string(cfg->node.cluster));
    if (cfg->node.region || cfg->node.zone || cfg->node.sub_zone) {
        json_t *loc = json_object();
        if (cfg->node.region)
            json_object_set_new(loc, "region", json_string(cfg->node.region));
        if (cfg->node.zone)
            json_object_set_new(loc, "zone", json_string(cfg->node.zone));
        if (cfg->node.sub_zone)
            json_object_set_new(loc, "sub_zone", json_string(cfg->node.sub_zone));
        json_object_set_new(node, "locality", loc);
    }
    if (cfg->node.metadata != NULL) {
        json_t *md = json_loads(cfg->node.metadata, 0, NULL);
        if (md != NULL)
            json_object_set_new(node, "metadata", md);
    }
    return node;
}

static void ep_server_info(admin_request_t *req, admin_response_t *res)
{
    pt_server_t *s = req->admin->server;
    char up[32];
    format_duration(wall_now() - s->start_time, up, sizeof(up));
    json_t *opts = json_pack("{s:I,s:s,s:s,s:s,s:f,s:s}", "concurrency",
                             (json_int_t)s->opts.concurrency, "config_path", s->opts.config_path,
                             "log_level", pt_log_level_str(pt_log_threshold), "mode", "Serve",
                             "drain_time_s", s->opts.drain_time_s, "drain_strategy", "Gradual");
    json_t *root = json_pack("{s:s,s:s,s:s,s:o,s:o,s:s,s:s,s:s}", "version", PT_VERSION, "state",
                             pt_server_state_str(s->state), "hot_restart_version", "disabled",
                             "command_line_options", opts, "node", node_json(s->config),
                             "uptime_current_epoch", up, "uptime_all_epochs", up, "command_line",
                             s->opts.command_line ? s->opts.command_line : "");
    body_json(res, root);
}

static void ep_ready(admin_request_t *req, admin_response_t *res)
{
    pt_server_t *s = req->admin->server;
    int live = s->state == PT_SERVER_LIVE;
    res->status = live ? 200 : 503;
    pt_buf_printf(&res->body, "%s\n", pt_server_state_str(s->state));
}

static void stats_error(admin_response_t *res, int rc, const char *filter)
{
    if (rc == -ENOMEM) {
        res->status = 503;
        pt_buf_append_str(&res->body, "out of memory\n");
        return;
    }
    res->status = 400;
    pt_buf_printf(&res->body, "Invalid regex: \"%s\"\n", filter);
}

/* With stats_flush_on_admin, showing stats is a flush: histograms are merged now (an
 * interval ends); otherwise they show the last merge of the flush timer, as in Envoy. */
static void flush_on_admin(admin_request_t *req)
{
    const pt_config_t *cfg = req->admin->server->config;
    if (cfg != NULL && cfg->stats_flush_on_admin)
        pt_stats_flush();
}

static void ep_stats(admin_request_t *req, admin_response_t *res)
{
    flush_on_admin(req);
    char filter[512] = "", format[32] = "";
    int has_filter = query_param(req->query, "filter", filter, sizeof(filter));
    char tmp[8];
    int used_only = query_param(req->query, "usedonly", tmp, sizeof(tmp));
    query_param(req->query, "format", format, sizeof(format));
    int rc;
    if (strcmp(format, "json") == 0) {
        rc = pt_admin_render_stats_json(&res->body, has_filter ? filter : NULL, used_only);
        res->content_type = "application/json";
    } else if (strcmp(format, "prometheus") == 0) {
        rc = pt_admin_render_prometheus(&res->body, has_filter ? filter : NULL, used_only);
        res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    } else {
        rc = pt_admin_render_stats_text(&res->body, has_filter ? filter : NULL, used_only);
    }
    if (rc != 0) {
        pt_buf_dispose(&res->body);
        res->content_type = "text/plain; charset=UTF-8";
        stats_error(res, rc, filter);
    }
}

static void ep_prometheus(admin_request_t *req, admin_response_t *res)
{
    flush_on_admin(req);
    char filter[512] = "", tmp[8];
    int has_filter = query_param(req->query, "filter", filter, sizeof(filter));
    int used_only = query_param(req->query, "usedonly", tmp, sizeof(tmp));
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    int rc = pt_admin_render_prometheus(&res->body, has_filter ? filter : NULL, used_only);
    if (rc != 0) {
        pt_buf_dispose(&res->body);
        stats_error(res, rc, filter);
    }
}

/* Secrets must not leave the process through the admin port. */
static void redact(json_t *v)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *child;
        json_object_foreach(v, k, child) {
            if ((strcmp(k, "private_key") == 0 || strcmp(k, "privateKey") == 0 ||
                 strcmp(k, "password") == 0) &&
                json_is_object(child)) {
                const char *ik;
                json_t *iv;
                json_object_foreach(child, ik, iv) {
                    if (strncmp(ik, "inline", 6) == 0)
                        json_object_set_new(child, ik, json_string("[redacted]"));
                }
            } else {
                redact(child);
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child) redact(child);
    }
}

static json_t *socket_address_json(const pt_addr_t *a);

/* Envoy's Timestamp in proto3 JSON: RFC 3339 UTC with milliseconds. */
static json_t *timestamp_json(double t)
{
    char buf[32];
    pt_time_rfc3339_ms(t, buf);
    return json_string(buf);
}

/* config.core.v3.Locality as Envoy prints it in JSON (empty fields left out); NULL when
 * every field is empty. */
static json_t *locality_json(const pt_locality_t *l)
{
    if (!l->region[0] && !l->zone[0] && !l->sub_zone[0])
        return NULL;
    json_t *o = json_object();
    if (l->region[0])
        json_object_set_new(o, "region", json_string(l->region));
    if (l->zone[0])
        json_object_set_new(o, "zone", json_string(l->zone));
    if (l->sub_zone[0])
        json_object_set_new(o, "sub_zone", json_string(l->sub_zone));
    return o;
}

typedef struct dump_ctx {
    json_t *static_clusters, *active_clusters, *static_endpoints, *dynamic_endpoints;
    json_t *warming_clusters;
} dump_ctx_t;

static void dump_cluster(void *data, const pt_cluster_entry_info_t *e)
{
    dump_ctx_t *d = data;
    json_t *cluster = pt_cluster_source_copy(e->active);
    if (cluster != NULL)
        redact(cluster);
    if (e->dynamic)
        json_array_append_new(e->warming ? d->warming_clusters : d->active_clusters,
                              json_pack("{s:s,s:o,s:o}", "version_info", e->version_info,
                                        "cluster", cluster ? cluster : json_object(),
                                        "last_updated", timestamp_json(e->last_updated)));
    else
        json_array_append_new(d->static_clusters,
                              json_pack("{s:o,s:o}", "cluster", cluster ? cluster : json_object(),
                                        "last_updated", timestamp_json(e->last_updated)));
    /* Endpoints as in force: the assignment of an EDS cluster, or the hosts of the cluster. */
    const pt_cluster_t *c = e->active;
    /* One LocalityLbEndpoints per priority and locality, in the order hosts come. */
    json_t *groups = json_array();
    for (unsigned i = 0; i < c->nhosts; i++) {
        const pt_host_t *h = c->hosts[i];
        const pt_host_info_t *hi = pt_cluster_host_info(c, i);
        const char *meta = pt_cluster_host_metadata(c, i);
        json_t *ep = json_pack("{s:o}", "address", socket_address_json(&h->address));
        if (h->hostname != NULL)
            json_object_set_new(ep, "hostname", json_string(h->hostname));
        json_t *le = json_pack("{s:o,s:I}", "endpoint", ep, "load_balancing_weight",
                               (json_int_t)hi->weight);
        if (hi->eds_health != PT_EDS_UNKNOWN) {
            static const char *const names[] = {"UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING",
                                                "TIMEOUT", "DEGRADED"};
            json_object_set_new(le, "health_status", json_string(names[hi->eds_health]));
        }
        json_t *md = meta != NULL ? json_loads(meta, 0, NULL) : NULL;
        if (md != NULL)
            json_object_set_new(le, "metadata", md);
        /* The group of this priority and locality (a linear search: dumps are rare). */
        json_t *group = NULL;
        size_t g;
        json_t *cand;
        json_array_foreach(groups, g, cand) {
            if (json_integer_value(json_object_get(cand, "_p")) == hi->priority &&
                json_integer_value(json_object_get(cand, "_l")) == hi->locality) {
                group = cand;
                break;
            }
        }
        if (group == NULL) {
            group = json_pack("{s:I,s:I,s:[]}", "_p", (json_int_t)hi->priority, "_l",
                              (json_int_t)hi->locality, "lb_endpoints");
            json_t *lj = locality_json(&c->localities[hi->locality]);
            if (lj != NULL)
                json_object_set_new(group, "locality", lj);
            if (hi->priority > 0)
                json_object_set_new(group, "priority", json_integer(hi->priority));
            if (hi->locality_weight > 0)
                json_object_set_new(group, "load_balancing_weight",
                                    json_integer(hi->locality_weight));
            json_array_append_new(groups, group);
        }
        json_array_append_new(json_object_get(group, "lb_endpoints"), le);
    }
    size_t g;
    json_t *grp;
    json_array_foreach(groups, g, grp) {
        json_object_del(grp, "_p");
        json_object_del(grp, "_l");
    }
    json_t *cla = json_pack("{s:s,s:s,s:o}", "@type",
                            "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                            "cluster_name", c->eds_service_name ? c->eds_service_name : c->name,
                            "endpoints", groups);
    if (c->cla_policy.overprovisioning_factor != 140 || c->cla_policy.weighted_priority_health ||
        c->cla_policy.endpoint_stale_after_ms > 0) {
        json_t *pol = json_pack("{s:I}", "overprovisioning_factor",
                                (json_int_t)c->cla_policy.overprovisioning_factor);
        if (c->cla_policy.weighted_priority_health)
            json_object_set_new(pol, "weighted_priority_health", json_true());
        if (c->cla_policy.endpoint_stale_after_ms > 0) {
            char dur[32];
            snprintf(dur, sizeof(dur), "%.3fs",
                     (double)c->cla_policy.endpoint_stale_after_ms / 1000.0);
            json_object_set_new(pol, "endpoint_stale_after", json_string(dur));
        }
        json_object_set_new(cla, "policy", pol);
    }
    if (c->type == PT_CLUSTER_EDS)
        json_array_append_new(d->dynamic_endpoints,
                              json_pack("{s:o,s:o}", "endpoint_config", cla, "last_updated",
                                        timestamp_json(e->last_updated)));
    else
        json_array_append_new(d->static_endpoints, json_pack("{s:o}", "endpoint_config", cla));
}

static void dump_route(void *data, const pt_route_entry_info_t *e)
{
    json_t *rc = json_deep_copy(e->source);
    json_array_append_new(data, json_pack("{s:s,s:o,s:o}", "version_info", e->version_info,
                                          "route_config", rc ? rc : json_object(),
                                          "last_updated", timestamp_json(e->last_updated)));
}

/* Envoy's ConfigDump: the bootstrap, then the clusters, listeners, routes and endpoints in
 * force, static and dynamic, each with its version and when it was last updated. */
static void ep_config_dump(admin_request_t *req, admin_response_t *res)
{
    pt_server_t *s = req->admin->server;
    json_t *boot = json_deep_copy(s->config->source);
    redact(boot);
    json_t *configs = json_array();
    json_array_append_new(configs, json_pack("{s:s,s:o,s:o}", "@type",
                                             "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                                             "bootstrap", boot, "last_updated",
                                             timestamp_json(s->start_time)));
    dump_ctx_t d = {json_array(), json_array(), json_array(), json_array(), json_array()};
    pt_cluster_manager_foreach(s->clusters, dump_cluster, &d);
    const char *cds_version = pt_cluster_manager_cds_version(s->clusters);
    json_t *clusters = json_pack("{s:s,s:o,s:o,s:o}", "@type",
                                 "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                                 "static_clusters", d.static_clusters, "dynamic_active_clusters",
                                 d.active_clusters, "dynamic_warming_clusters",
                                 d.warming_clusters);
    if (cds_version != NULL)
        json_object_set_new(clusters, "version_info", json_string(cds_version));
    const char *rejected_version;
    const char *rejected = pt_cluster_manager_last_rejected(s->clusters, &rejected_version);
    if (rejected != NULL)
        json_object_set_new(clusters, "last_rejected_update",
                            json_pack("{s:s,s:s}", "version_info",
                                      rejected_version ? rejected_version : "", "details",
                                      rejected));
    json_array_append_new(configs, clusters);
    json_t *static_listeners = json_array(), *dynamic_listeners = json_array();
    for (unsigned i = 0; i < s->config->nlisteners; i++) {
        const pt_listener_config_t *l = &s->config->listeners[i];
        json_t *copy = l->source != NULL ? json_deep_copy(l->source) : json_object();
        redact(copy);
        if (!l->dynamic) {
            json_array_append_new(static_listeners,
                                  json_pack("{s:o,s:o}", "listener", copy, "last_updated",
                                            timestamp_json(s->start_time)));
            continue;
        }
        /* A listener whose TLS secrets have not come is warming (not listening yet), as is
         * the version of an update that waits for them (the one in force serves). */
        int warming = 0;
        for (unsigned j = 0; j < s->nlisteners; j++)
            if (strcmp(s->listeners[j]->name, l->name) == 0)
                warming = s->listeners[j]->warming;
        json_t *entry = json_pack("{s:s,s:{s:s,s:o,s:o}}", "name", l->name,
                                  warming ? "warming_state" : "active_state", "version_info",
                                  l->version_info ? l->version_info : "", "listener", copy,
                                  "last_updated", timestamp_json(l->last_updated));
        const pt_listener_config_t *next =
            s->lds_pending != NULL ? pt_config_find_listener(s->lds_pending, l->name) : NULL;
        if (next != NULL && !json_equal(next->source, l->source)) {
            json_t *ncopy = json_deep_copy(next->source);
            redact(ncopy);
            json_object_set_new(entry, "warming_state",
                                json_pack("{s:s,s:o,s:o}", "version_info",
                                          next->version_info ? next->version_info : "",
                                          "listener", ncopy, "last_updated",
                                          timestamp_json(next->last_updated)));
        }
        json_array_append_new(dynamic_listeners, entry);
    }
    json_array_append_new(configs, json_pack("{s:s,s:o,s:o}", "@type",
                                             "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                                             "static_listeners", static_listeners,
                                             "dynamic_listeners", dynamic_listeners));
    json_t *dynamic_routes = json_array();
    if (s->routes != NULL)
        pt_route_manager_foreach(s->routes, dump_route, dynamic_routes);
    json_array_append_new(configs, json_pack("{s:s,s:o}", "@type",
                                             "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                                             "dynamic_route_configs", dynamic_routes));
    json_array_append_new(configs, json_pack("{s:s,s:o,s:o}", "@type",
                                             "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                                             "static_endpoint_configs", d.static_endpoints,
                                             "dynamic_endpoint_configs", d.dynamic_endpoints));
    body_json(res, json_pack("{s:o}", "configs", configs));
}

static json_t *socket_address_json(const pt_addr_t *a)
{
    char ip[PT_ADDR_STRLEN];
    pt_addr_format_ip(a, ip, sizeof(ip));
    return json_pack("{s:{s:s,s:i}}", "socket_address", "address", ip, "port_value",
                     (int)pt_addr_port(a));
}

static void ep_listeners(admin_request_t *req, admin_response_t *res)
{
    pt_server_t *s = req->admin->server;
    char format[16] = "";
    query_param(req->query, "format", format, sizeof(format));
    if (strcmp(format, "json") == 0) {
        json_t *arr = json_array();
        for (unsigned i = 0; i < s->nlisteners; i++)
            json_array_append_new(arr, json_pack("{s:s,s:o}", "name", s->listeners[i]->name,
                                                 "local_address",
                                                 socket_address_json(&s->listeners[i]->address)));
        body_json(res, json_pack("{s:o}", "listener_statuses", arr));
        return;
    }
    for (unsigned i = 0; i < s->nlisteners; i++) {
        char a[PT_ADDR_STRLEN];
        pt_addr_format(&s->listeners[i]->address, a, sizeof(a));
        pt_buf_printf(&res->body, "%s::%s\n", s->listeners[i]->name, a);
    }
}

/* Envoy's health_flags: "/flag/flag..." in its order, or "healthy". */
static const char *health_str(uint32_t h, unsigned eds, int pending, char *buf, size_t len)
{
    buf[0] = '\0';
    struct {
        int on;
        const char *name;
    } flags[] = {
        {(h & PT_HOST_FAILED_ACTIVE_HC) != 0, "/failed_active_hc"},
        {(h & PT_HOST_FAILED_OUTLIER_CHECK) != 0, "/failed_outlier_check"},
        {eds == PT_EDS_UNHEALTHY || eds == PT_EDS_TIMEOUT, "/failed_eds_health"},
        {(h & PT_HOST_DEGRADED_ACTIVE_HC) != 0, "/degraded_active_hc"},
        {eds == PT_EDS_DEGRADED, "/degraded_eds_health"},
        {pending, "/pending_dynamic_removal"},
        {eds == PT_EDS_DRAINING, "/eds_status_draining"},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        if (flags[i].on)
            snprintf(buf + strlen(buf), len - strlen(buf), "%s", flags[i].name);
    return buf[0] ? buf : "healthy";
}

/* HostHealthStatus.eds_health_status: what the assignment says (HEALTHY when nothing). */
static const char *eds_status_str(unsigned eds)
{
    switch (eds) {
    case PT_EDS_UNHEALTHY:
    case PT_EDS_TIMEOUT:
        return "UNHEALTHY";
    case PT_EDS_DRAINING:
        return "DRAINING";
    case PT_EDS_DEGRADED:
        return "DEGRADED";
    default:
        return "HEALTHY";
    }
}

typedef struct clusters_out {
    admin_response_t *res;
    int json;
    json_t *statuses;
} clusters_out_t;

static void cluster_out(void *data, const pt_cluster_entry_info_t *e)
{
    clusters_out_t *o = data;
    admin_response_t *res = o->res;
    int json = o->json;
    json_t *statuses = o->statuses;
    static const char *const prios[] = {"default_priority", "high_priority"};
    {
        pt_cluster_t *c = e->active;
        json_t *hosts = json ? json_array() : NULL;
        if (!json) {
            pt_buf_printf(&res->body, "%s::observability_name::%s\n", c->name, c->name);
            for (int p = 0; p < 2; p++) {
                const pt_breaker_t *b = &c->breakers[p];
                pt_buf_printf(&res->body, "%s::%s::max_connections::%u\n", c->name, prios[p],
                              b->max_connections);
                pt_buf_printf(&res->body, "%s::%s::max_pending_requests::%u\n", c->name,
                              prios[p], b->max_pending_requests);
                pt_buf_printf(&res->body, "%s::%s::max_requests::%u\n", c->name, prios[p],
                              b->max_requests);
                pt_buf_printf(&res->body, "%s::%s::max_retries::%u\n", c->name, prios[p],
                              b->max_retries);
            }
            pt_buf_printf(&res->body, "%s::added_via_api::%s\n", c->name,
                          e->dynamic ? "true" : "false");
            if (c->type == PT_CLUSTER_EDS && c->eds_service_name != NULL)
                pt_buf_printf(&res->body, "%s::eds_service_name::%s\n", c->name,
                              c->eds_service_name);
        }
        /* An ORIGINAL_DST cluster's hosts are those made on demand so far (referenced while
         * they are shown; they have no endpoint of their own: the defaults describe them). */
        unsigned nhosts = c->nhosts;
        pt_host_t **odst = c->type == PT_CLUSTER_ORIGINAL_DST ? pt_cluster_odst_hosts(c, &nhosts)
                                                              : NULL;
        pt_host_t *const *all = odst != NULL ? odst : c->hosts;
        if (c->type == PT_CLUSTER_ORIGINAL_DST && odst == NULL)
            nhosts = 0;
        static const pt_locality_t no_locality = {"", "", ""};
        for (unsigned j = 0; j < nhosts; j++) {
            pt_host_t *h = all[j];
            const pt_host_info_t *hi = odst != NULL ? &c->hinfo_default : pt_cluster_host_info(c, j);
            const char *meta = odst != NULL ? NULL : pt_cluster_host_metadata(c, j);
            const pt_locality_t *loc =
                c->localities != NULL ? &c->localities[hi->locality] : &no_locality;
            struct {
                const char *name;
                uint64_t v;
            } st[] = {
                {"cx_active", atomic_load(&h->cx_active)},
                {"cx_connect_fail", atomic_load(&h->cx_connect_fail)},
                {"cx_total", atomic_load(&h->cx_total)},
                {"rq_active", atomic_load(&h->rq_active)},
                {"rq_error", atomic_load(&h->rq_error)},
                {"rq_success", atomic_load(&h->rq_success)},
                {"rq_timeout", atomic_load(&h->rq_timeout)},
                {"rq_total", atomic_load(&h->rq_total)},
            };
            uint32_t health = atomic_load(&h->health);
            int pending = odst == NULL && j >= nhosts - c->npending;
            char hb[256];
            if (json) {
                json_t *stats = json_array();
                for (size_t k = 0; k < sizeof(st) / sizeof(st[0]); k++)
                    json_array_append_new(stats, json_pack("{s:s,s:I}", "name", st[k].name,
                                                           "value", (json_int_t)st[k].v));
                json_t *hs = json_pack("{s:s}", "eds_health_status",
                                       eds_status_str(hi->eds_health));
                if (health & PT_HOST_FAILED_ACTIVE_HC)
                    json_object_set_new(hs, "failed_active_health_check", json_true());
                if (health & PT_HOST_FAILED_OUTLIER_CHECK)
                    json_object_set_new(hs, "failed_outlier_check", json_true());
                if (health & PT_HOST_DEGRADED_ACTIVE_HC)
                    json_object_set_new(hs, "failed_active_degraded_check", json_true());
                if (pending)
                    json_object_set_new(hs, "pending_dynamic_removal", json_true());
                json_t *host = json_pack("{s:o,s:o,s:o,s:I,s:i,s:s}", "address",
                                         socket_address_json(&h->address), "stats", stats,
                                         "health_status", hs, "weight", (json_int_t)hi->weight,
                                         "priority", (int)hi->priority, "hostname",
                                         h->hostname ? h->hostname : "");
                json_t *lj = locality_json(loc);
                if (lj != NULL)
                    json_object_set_new(host, "locality", lj);
                json_t *md = meta != NULL ? json_loads(meta, 0, NULL) : NULL;
                if (md != NULL)
                    json_object_set_new(host, "metadata", md);
                double sr = pt_outlier_success_rate(h), lsr = pt_outlier_local_origin_success_rate(h);
                if (sr >= 0)
                    json_object_set_new(host, "success_rate", json_pack("{s:f}", "value", sr));
                if (lsr >= 0)
                    json_object_set_new(host, "local_origin_success_rate",
                                        json_pack("{s:f}", "value", lsr));
                json_array_append_new(hosts, host);
                continue;
            }
            /* Envoy's order: the counters by name, then the host's attributes. */
            for (size_t k = 0; k < sizeof(st) / sizeof(st[0]); k++)
                pt_buf_printf(&res->body, "%s::%s::%s::%llu\n", c->name, h->address_str,
                              st[k].name, (unsigned long long)st[k].v);
            pt_buf_printf(&res->body, "%s::%s::hostname::%s\n", c->name, h->address_str,
                          h->hostname ? h->hostname : "");
            pt_buf_printf(&res->body, "%s::%s::health_flags::%s\n", c->name, h->address_str,
                          health_str(health, hi->eds_health, pending, hb, sizeof(hb)));
            pt_buf_printf(&res->body, "%s::%s::weight::%u\n", c->name, h->address_str,
                          hi->weight);
            pt_buf_printf(&res->body, "%s::%s::region::%s\n", c->name, h->address_str,
                          loc->region);
            pt_buf_printf(&res->body, "%s::%s::zone::%s\n", c->name, h->address_str, loc->zone);
            pt_buf_printf(&res->body, "%s::%s::sub_zone::%s\n", c->name, h->address_str,
                          loc->sub_zone);
            pt_buf_printf(&res->body, "%s::%s::canary::false\n", c->name, h->address_str);
            pt_buf_printf(&res->body, "%s::%s::priority::%u\n", c->name, h->address_str,
                          hi->priority);
            pt_buf_printf(&res->body, "%s::%s::success_rate::%g\n", c->name, h->address_str,
                          pt_outlier_success_rate(h));
            pt_buf_printf(&res->body, "%s::%s::local_origin_success_rate::%g\n", c->name,
                          h->address_str, pt_outlier_local_origin_success_rate(h));
        }
        if (json) {
            json_t *cs = json_pack("{s:s,s:o,s:b,s:s}", "name", c->name, "host_statuses",
                                   hosts, "added_via_api", e->dynamic, "observability_name",
                                   c->name);
            if (c->type == PT_CLUSTER_EDS && c->eds_service_name != NULL)
                json_object_set_new(cs, "eds_service_name", json_string(c->eds_service_name));
            json_array_append_new(statuses, cs);
        }
        for (unsigned j = 0; odst != NULL && j < nhosts; j++)
            pt_host_unref(odst[j]);
        free(odst);
    }
}

static void ep_clusters(admin_request_t *req, admin_response_t *res)
{
    pt_server_t *s = req->admin->server;
    char format[16] = "";
    query_param(req->query, "format", format, sizeof(format));
    clusters_out_t o = {.res = res, .json = strcmp(format, "json") == 0};
    o.statuses = o.json ? json_array() : NULL;
    pt_cluster_manager_foreach(s->clusters, cluster_out, &o);
    if (o.json)
        body_json(res, json_pack("{s:o}", "cluster_statuses", o.statuses));
}

static void ep_memory(admin_request_t *req, admin_response_t *res)
{
    (void)req;
    pt_heap_stats_t hs;
    pt_heap_stats(&hs);
    char a[32], h[32], c[32], t[32], hi[32], hc[32];
    snprintf(a, sizeof(a), "%zu", hs.in_use);
    snprintf(h, sizeof(h), "%zu", hs.heap);
    snprintf(c, sizeof(c), "%zu", pt_buf_chunks_live());
    snprintf(t, sizeof(t), "%zu", hs.trims);
    /* Histograms registered, and the per-thread copies they hold (a thread's copy exists
     * once it recorded a value: docs/observability.md). */
    snprintf(hi, sizeof(hi), "%u", pt_stats_histograms_live());
    snprintf(hc, sizeof(hc), "%u", pt_stats_histogram_threads());
    body_json(res, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "allocated", a, "heap_size", h,
                             "buffer_chunks", c, "heap_trims", t, "histograms", hi,
                             "histogram_thread_copies", hc));
}

static void ep_certs(admin_request_t *req, admin_response_t *res)
{
    (void)req;
    body_json(res, pt_tls_certs_json());
}

static void ep_quit(admin_request_t *req, admin_response_t *res)
{
    pt_buf_append_str(&res->body, "OK\n");
    pt_info("admin: /quitquitquit");
    pt_server_stop(req->admin->server);
}

static void ep_healthcheck_fail(admin_request_t *req, admin_response_t *res)
{
    (void)req;
    pt_server_set_health_check_failed(1);
    pt_info("admin: health checks fail from now on (/healthcheck/fail)");
    pt_buf_append_str(&res->body, "OK\n");
}

static void ep_healthcheck_ok(admin_request_t *req, admin_response_t *res)
{
    (void)req;
    pt_server_set_health_check_failed(0);
    pt_info("admin: health checks pass again (/healthcheck/ok)");
    pt_buf_append_str(&res->body, "OK\n");
}

static void ep_drain_listeners(admin_request_t *req, admin_response_t *res)
{
    pt_buf_append_str(&res->body, "OK\n");
    pt_server_drain_listeners(req->admin->server);
}

static void ep_reopen_logs(admin_request_t *req, admin_response_t *res)
{
    (void)req;
    pt_access_log_reopen_all(); /* after logrotate moved the files away */
    pt_buf_append_str(&res->body, "OK\n");
}

static void ep_logging(admin_request_t *req, admin_response_t *res)
{
    char level[32];
    if (query_param(req->query, "level", level, sizeof(level))) {
        pt_log_level_t l;
        if (pt_log_level_parse(level, &l) != 0) {
            res->status = 400;
            pt_buf_printf(&res->body, "unknown level \"%s\"\n", level);
            return;
        }
        pt_log_threshold = l;
    }
    pt_buf_printf(&res->body, "active loggers:\n  petrel: %s\n",
                  pt_log_level_str(pt_log_threshold));
}

typedef struct endpoint {
    const char *path;
    int post_only;
    void (*fn)(admin_request_t *, admin_response_t *);
    const char *help;
} endpoint_t;

static void ep_help(admin_request_t *req, admin_response_t *res);

static const endpoint_t endpoints[] = {
    {"/", 0, ep_help, "this list"},
    {"/certs", 0, ep_certs, "loaded TLS certificates: SANs, serials, days until expiry"},
    {"/clusters", 0, ep_clusters, "upstream clusters and hosts (?format=json)"},
    {"/config_dump", 0, ep_config_dump, "the loaded configuration, secrets redacted"},
    {"/drain_listeners", 1, ep_drain_listeners, "close listeners and drain (POST)"},
    {"/healthcheck/fail", 1, ep_healthcheck_fail, "fail health checks (POST)"},
    {"/healthcheck/ok", 1, ep_healthcheck_ok, "pass health checks again (POST)"},
    {"/listeners", 0, ep_listeners, "listeners and their addresses (?format=json)"},
    {"/logging", 1, ep_logging, "change the log level: ?level=debug (POST)"},
    {"/memory", 0, ep_memory, "heap usage"},
    {"/quitquitquit", 1, ep_quit, "exit the server (POST)"},
    {"/ready", 0, ep_ready, "LIVE (200) or the state (503)"},
    {"/reopen_logs", 1, ep_reopen_logs, "reopen access log files (POST)"},
    {"/server_info", 0, ep_server_info, "version, state, uptime, command line"},
    {"/stats", 0, ep_stats, "stats (?filter=regex, ?usedonly, ?format=json|prometheus)"},
    {"/stats/prometheus", 0, ep_prometheus, "stats in Prometheus text format"},
};

static void ep_help(admin_request_t *req, admin_response_t *res)
{
    (void)req;
    pt_buf_append_str(&res->body, "admin commands are:\n");
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
        pt_buf_printf(&res->body, "  %s: %s\n", endpoints[i].path, endpoints[i].help);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

static void dispatch(admin_request_t *req, admin_response_t *res)
{
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
        const endpoint_t *e = &endpoints[i];
        if (strcmp(e->path, req->path) != 0)
            continue;
        int is_post = strcmp(req->method, "POST") == 0;
        int is_get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
        if ((e->post_only && !is_post) || (!e->post_only && !is_get)) {
            res->status = 405;
            res->allow = e->post_only ? "POST" : "GET, HEAD";
            pt_buf_printf(&res->body, "%s requires %s\n", e->path,
                          e->post_only ? "POST" : "GET");
            return;
        }
        e->fn(req, res);
        return;
    }
    res->status = 404;
    pt_buf_printf(&res->body, "no such admin endpoint: %s\n", req->path);
    ep_help(req, res);
}

static void admin_conn_free(admin_conn_t *ac)
{
    if (ac == NULL)
        return;
    if (ac->admin != NULL)
        ev_timer_stop(ac->admin->server->loop, &ac->timeout);
    free(ac);
}

/* admin.access_log: one entry per admin request, through the same loggers and formats as
 * the connection manager's (the request's headers, the answer's status, size and time). */
static void log_request(admin_conn_t *ac, const admin_response_t *res, size_t body_len)
{
    const pt_config_t *cfg = ac->admin->server->config;
    if (cfg == NULL || cfg->nadmin_logs == 0)
        return;
    pt_arena_t a = {0};
    pt_http_headers_t req, resp;
    pt_http_headers_init(&req, &a);
    pt_http_headers_init(&resp, &a);
    const pt_h1_head_t *hd = &ac->head;
    if (hd->method != NULL) {
        pt_http_headers_add(&req, ":method", 7, hd->method, hd->method_len);
        pt_http_headers_add(&req, ":path", 5, hd->target, hd->target_len);
        for (unsigned i = 0; i < hd->num_headers; i++) {
            const pt_h1_header_t *h = &hd->headers[i];
            char name[128];
            if (h->name_len >= sizeof(name))
                continue;
            for (size_t k = 0; k < h->name_len; k++)
                name[k] = (char)tolower((unsigned char)h->name[k]);
            if (h->name_len == 4 && memcmp(name, "host", 4) == 0)
                pt_http_headers_add(&req, ":authority", 10, h->value, h->value_len);
            else
                pt_http_headers_add(&req, name, h->name_len, h->value, h->value_len);
        }
    }
    char status[8], len[24];
    snprintf(status, sizeof(status), "%d", res->status);
    snprintf(len, sizeof(len), "%zu", body_len);
    pt_http_headers_add_str(&resp, ":status", status);
    pt_http_headers_add_str(&resp, "content-type", res->content_type);
    pt_http_headers_add_str(&resp, "content-length", len);
    pt_stream_info_t si = {
        .start_wall_us = ac->start_wall_us,
        .start_mono_us = ac->start_mono_us,
        .end_mono_us = pt_now_us(),
        .request_headers = &req,
        .response_headers = &resp,
        .response_code = res->status,
        .response_code_details = "admin_filter_response",
        .bytes_sent = body_len,
        .protocol = hd->minor_version == 0 ? "HTTP/1.0" : "HTTP/1.1",
        .downstream_remote = ac->conn->peer,
        .downstream_direct_remote = ac->conn->peer,
    };
    socklen_t alen = sizeof(si.downstream_local);
    if (getsockname(ac->conn->fd, &si.downstream_local.sa, &alen) != 0)
        memset(&si.downstream_local, 0, sizeof(si.downstream_local));
    for (unsigned i = 0; i < cfg->nadmin_logs; i++)
        pt_access_log_write(cfg->admin_logs[i], &si);
    pt_arena_dispose(&a);
}

static void send_response(admin_conn_t *ac, admin_response_t *res, int head_only)
{
    log_request(ac, res, pt_buf_len(&res->body));
    pt_buf_t out = {0};
    int rc = pt_buf_printf(
        &out,
        "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
        "cache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\n"
        "%s%s%sconnection: close\r\n\r\n",
        res->status, reason_phrase(res->status), res->content_type, pt_buf_len(&res->body),
        res->allow ? "allow: " : "", res->allow ? res->allow : "", res->allow ? "\r\n" : "");
    if (rc != 0) {
        /* No memory for the head: a reset, not a body without one. */
        pt_buf_dispose(&out);
        pt_buf_dispose(&res->body);
        pt_conn_close(ac->conn, PT_CLOSE_RESET);
        admin_conn_free(ac);
        return;
    }
    if (!head_only)
        pt_buf_move(&out, &res->body);
    pt_buf_dispose(&res->body);
    pt_conn_write(ac->conn, &out);
    pt_conn_close(ac->conn, PT_CLOSE_FLUSH);
    admin_conn_free(ac);
}

static void error_response(admin_conn_t *ac, int status, const char *why)
{
    admin_response_t res = {.status = status, .content_type = "text/plain; charset=UTF-8"};
    pt_buf_printf(&res.body, "%s\n", why);
    send_response(ac, &res, 0);
}

static void admin_on_read(pt_conn_t *c)
{
    admin_conn_t *ac = c->data;
    size_t len = pt_buf_len(&c->in);
    if (len > ADMIN_MAX_HEAD + 1)
        len = ADMIN_MAX_HEAD + 1;
    const char *data = pt_buf_pullup(&c->in, len);
    pt_h1_limits_t lim = {.max_head_bytes = ADMIN_MAX_HEAD, .max_headers = ADMIN_MAX_HEADERS};
    int rc = data ? pt_h1_parse_request(data, len, &ac->head, &lim) : PT_H1_ERROR;
    if (rc == PT_H1_INCOMPLETE) {
        if (c->flags & PT_CONN_F_EOF) {
            pt_conn_close(c, PT_CLOSE_NOW);
            admin_conn_free(ac);
        }
        return;
    }
    if (rc < 0) {
        error_response(ac, ac->head.error_status ? ac->head.error_status : 400,
                       ac->head.error_reason ? ac->head.error_reason : "bad request");
        return;
    }
    admin_request_t req = {.admin = ac->admin};
    char method[16];
    snprintf(method, sizeof(method), "%.*s", (int)ac->head.method_len, ac->head.method);
    req.method = method;
    const char *t = ac->head.target;
    size_t tl = ac->head.target_len;
    const char *q = memchr(t, '?', tl);
    size_t pl = q ? (size_t)(q - t) : tl;
    snprintf(req.path, sizeof(req.path), "%.*s", (int)pl, t);
    if (q != NULL)
        snprintf(req.query, sizeof(req.query), "%.*s", (int)(tl - pl - 1), q + 1);
    admin_response_t res = {.status = 200, .content_type = "text/plain; charset=UTF-8"};
    dispatch(&req, &res);
    pt_debug("admin: %s %s -> %d", method, req.path, res.status);
    send_response(ac, &res, strcmp(method, "HEAD") == 0);
}

static void admin_on_error(pt_conn_t *c, int status)
{
    (void)status;
    admin_conn_t *ac = c->data;
    pt_conn_close(c, PT_CLOSE_NOW);
    admin_conn_free(ac);
}

static void admin_on_connect(pt_conn_t *c, int status)
{
    (void)c;
    (void)status;
}

static const pt_conn_handler_t admin_handler = {
    .on_read = admin_on_read,
    .on_connect = admin_on_connect,
    .on_drain = admin_on_read,
    .on_error = admin_on_error,
};

static void admin_on_backoff(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    pt_admin_t *a = t->data;
    ev_io_start(loop, &a->io);
}

/* Out of descriptors with no spare: wait before accepting again. (A one-shot timer that has
 * fired must be set again, or it starts with nothing left and the pause is a busy loop.) */
static void admin_pause_accept(struct ev_loop *loop, pt_admin_t *a)
{
    ev_io_stop(loop, &a->io);
    ev_timer_stop(loop, &a->backoff);
    ev_timer_set(&a->backoff, ADMIN_EMFILE_BACKOFF, 0.);
    ev_timer_start(loop, &a->backoff);
}

static void error_response(admin_conn_t *ac, int status, const char *why);

/* A client that opens the admin port and never finishes its request gets 408. */
static void on_admin_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    error_response(t->data, 408, "request timeout");
}

static void admin_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    pt_admin_t *a = io->data;
    for (int i = 0; i < 16; i++) {
        pt_addr_t peer;
        /* Out of descriptors, the admin endpoint must keep answering (readiness and
         * liveness probes, /stats to see what is wrong): the main thread's spare serves
         * the request. With no spare to be had it stays queued: pause rather than spin on
         * the readable socket, and try again shortly. */
        int fd = pt_fd_accept(&a->server->main_worker.fd_reserve, a->fd, &peer, 1);
        if (fd == -EMFILE) {
            admin_pause_accept(loop, a);
            return;
        }
        if (fd < 0)
            return;
        admin_conn_t *ac = calloc(1, sizeof(*ac));
        pt_conn_t *c = ac ? pt_conn_new(&a->server->main_worker, fd, &peer, NULL, NULL) : NULL;
        if (c == NULL) {
            admin_conn_free(ac);
            close(fd);
            continue;
        }
        ac->admin = a;
        ac->conn = c;
        ac->start_wall_us = (uint64_t)time(NULL) * 1000000;
        ac->start_mono_us = pt_now_us();
        c->fd_spare = &a->server->main_worker.fd_reserve;
        ac->head.headers = ac->headers;
        ev_timer_init(&ac->timeout, on_admin_timeout, ADMIN_REQUEST_TIMEOUT, 0.);
        ac->timeout.data = ac;
        ev_timer_start(loop, &ac->timeout);
        pt_conn_start(c, &admin_handler, ac);
    }
}

pt_admin_t *pt_admin_start(pt_server_t *s, const pt_addr_t *addr, char *err, size_t errlen)
{
    pt_admin_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->server = s;
    a->fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (a->fd < 0 || setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(a->fd, &addr->sa, pt_addr_len(addr)) != 0 || listen(a->fd, 128) != 0) {
        char as[PT_ADDR_STRLEN];
        pt_addr_format(addr, as, sizeof(as));
        snprintf(err, errlen, "admin: cannot listen on %s: %s", as, strerror(errno));
        if (a->fd >= 0)
            close(a->fd);
        free(a);
        return NULL;
    }
    ev_io_init(&a->io, admin_on_accept, a->fd, EV_READ);
    a->io.data = a;
    ev_timer_init(&a->backoff, admin_on_backoff, ADMIN_EMFILE_BACKOFF, 0.);
    a->backoff.data = a;
    ev_io_start(s->loop, &a->io);
    char as[PT_ADDR_STRLEN];
    pt_addr_format(addr, as, sizeof(as));
    pt_info("admin listening on %s", as);
    return a;
}

void pt_admin_stop(pt_admin_t *a)
{
    /* Answers queued in the last loop turn (the /quitquitquit reply itself) go out first. */
    pt_conn_flush_queued(&a->server->main_worker);
    if (a->server->loop != NULL) {
        ev_io_stop(a->server->loop, &a->io);
        ev_timer_stop(a->server->loop, &a->backoff);
    }
    close(a->fd);
    /* Open admin connections: free the state of those still reading a request, request
     * timer stopped first (freed while in the loop's timer heap, libev would write into it).
     * One that is flushing its response (PT_CONN_F_CLOSING) has none left, and
     * pt_conn_close would ignore it, so closing one by one could loop forever here:
     * close_all ends them all. */
    pt_worker_t *w = &a->server->main_worker;
    for (pt_conn_t *c = w->conns; c != NULL; c = c->wnext) {
        if (c->handler == &admin_handler) {
            admin_conn_free(c->data);
            c->data = NULL;
        }
    }
    pt_conn_close_all(w);
    free(a);
}
