/* Stats: counters and gauges named as Envoy names them.
 *
 * Every thread that updates stats (each worker, and the main thread) owns a slot array; a
 * stat is an index into it. Updates are relaxed atomic adds on the calling thread's own
 * slot, so the hot path takes no lock and shares no cache line with other threads. Reading
 * a stat sums its slot over all threads. Gauges are stored the same way as signed deltas,
 * so a connection opened on one thread and closed on another still sums correctly.
 *
 * Stats are created (find-or-create by name) on the main thread while a config snapshot is
 * built, and lazily on workers (per-status-code counters); an id is stable while its stat is
 * registered, so a stat keeps counting across config reloads. A cluster's stats are
 * released with the last version of the cluster (pt_stats_release_tagged), so clusters
 * added and removed by the thousand leave nothing behind. The Prometheus form of a stat
 * (its family name and labels) is not stored: the admin and the sinks derive it from the
 * dotted name with Envoy's tag extraction (proxy/stats_tags.h), as stats_config says.
 * A stat's `tag` (the scope's object: a cluster's name) is what releases it with its
 * object. stats_config.stats_matcher decides whether a stat is made (PT_STAT_REJECTED). */
#ifndef PT_STATS_H
#define PT_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/histogram.h"

#define PT_STATS_MAX      (1u << 20) /* slots per thread; virtual memory, touched lazily */
#define PT_STATS_MAX_THREADS 130

typedef uint32_t pt_stat_t; /* 0 is "no stat": updates to it are dropped */

/* The id of every counter, gauge and text readout that stats_config.stats_matcher rejects:
 * the last slot of each thread's array, never handed to a stat, never shown. Updates land
 * in it and are never read, so a rejected stat costs its users nothing more than a kept
 * one (no branch) and costs no memory (no name, no info; one shared slot a thread). A
 * rejected histogram is 0 (its slot would hold a pointer): pt_hist_record drops it. */
#define PT_STAT_REJECTED (PT_STATS_MAX - 1)

/* stats_config.stats_matcher: keep(arg, full_name) says whether a stat not made yet is
 * made; NULL keeps all. Runs under the registry's lock when a stat is first asked for. Set
 * before stats are made (a stat made earlier stays). */
void pt_stats_set_matcher(int (*keep)(const void *arg, const char *full_name), const void *arg);

/* A text readout holds a string (Envoy's TextReadout: the version_info of the last
 * accepted xDS update); it has no per-thread slot and is set and read under the registry's
 * lock. A histogram's slot on a thread points to that thread's counts (below). */
typedef enum pt_stat_kind {
    PT_STAT_COUNTER,
    PT_STAT_GAUGE,
    PT_STAT_TEXT,
    PT_STAT_HISTOGRAM,
} pt_stat_kind_t;

/* Registers the calling thread's slot array; call once per thread before updating stats. */
int pt_stats_thread_init(void);
void pt_stats_thread_dispose(void);

/* Find-or-create. `scope` is the first name component and Prometheus family ("cluster",
 * "listener", "http", "tcp", "server", ...); `tag` the label name for the scope's object
 * (or NULL), `tag_value` its value, `name` the rest. The full name is
 * scope.tag_value.name (or scope.name without a tag). Returns 0 if the table is full. */
pt_stat_t pt_stats_get(pt_stat_kind_t kind, const char *scope, const char *tag,
                       const char *tag_value, const char *name);
pt_stat_t pt_stats_counter(const char *scope, const char *tag, const char *tag_value,
                           const char *name);
pt_stat_t pt_stats_gauge(const char *scope, const char *tag, const char *tag_value,
                         const char *name);
pt_stat_t pt_stats_text(const char *scope, const char *tag, const char *tag_value,
                        const char *name);
/* A histogram takes its Prometheus buckets when it is made (pt_stats_set_histogram_bounds). */
pt_stat_t pt_stats_histogram(const char *scope, const char *tag, const char *tag_value,
                             const char *name);

extern _Thread_local _Atomic uint64_t *pt_stat_slots;

static inline void pt_stat_add(pt_stat_t id, uint64_t n)
{
    if (pt_stat_slots != NULL)
        atomic_fetch_add_explicit(&pt_stat_slots[id], n, memory_order_relaxed);
}
static inline void pt_stat_inc(pt_stat_t id)
{
    pt_stat_add(id, 1);
}
static inline void pt_stat_dec(pt_stat_t id)
{
    pt_stat_add(id, (uint64_t)-1);
}
/* ---- histograms ------------------------------------------------------------------------
 *
 * Recording: each thread that records a histogram has its own counts of it (proxy/histogram.h
 * gives the buckets), made on its first value and found through the thread's slot for the
 * histogram's id; buckets are allocated a chunk of 16 at a time, on the first value that
 * falls in the chunk. Only the owning thread writes them, with plain loads and stores (no
 * lock, no atomic read-modify-write, no line shared with another writer); readers load them
 * as they are. Reading merges: pt_stats_merge_histograms (the main thread, every
 * stats_flush_interval, as Envoy merges at each stats flush) sums every thread's counts into
 * the histogram's cumulative counts, and what was added since the previous merge is the
 * interval. The admin shows the state of the last merge. A histogram's memory, on every
 * thread, goes with it (pt_stats_release_tagged: a cluster's when the cluster goes). */
typedef struct pt_hist_tls {
    _Atomic uint64_t count; /* values recorded (stored last, with release) */
    _Atomic uint64_t sum;   /* their total */
    _Atomic(_Atomic uint64_t *) chunks[PT_HIST_CHUNKS];
    /* Owned by the registry (under its lock or on the merging thread). */
    struct pt_hist_tls *next; /* the histogram's list of threads */
    uint64_t merged_count;    /* count at the last merge */
} pt_hist_tls_t;

/* The first value of a histogram on a thread, or the first in a chunk. */
void pt_hist_record_slow(pt_stat_t id, uint64_t v);

/* Records a value (milliseconds, for every histogram petrel has) on the calling thread. */
static inline void pt_hist_record(pt_stat_t id, uint64_t v)
{
    _Atomic uint64_t *slots = pt_stat_slots;
    if (slots == NULL || id == 0)
        return;
    pt_hist_tls_t *h =
        (pt_hist_tls_t *)(uintptr_t)atomic_load_explicit(&slots[id], memory_order_relaxed);
    unsigned b = pt_hist_bucket(v);
    _Atomic uint64_t *c;
    if (__builtin_expect(h == NULL, 0) ||
        __builtin_expect((c = atomic_load_explicit(&h->chunks[b >> PT_HIST_SUB_BITS],
                                                   memory_order_relaxed)) == NULL,
                         0)) {
        pt_hist_record_slow(id, v);
        return;
    }
    _Atomic uint64_t *n = &c[b & (PT_HIST_SUB - 1)];
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum, atomic_load_explicit(&h->sum, memory_order_relaxed) + v,
                          memory_order_relaxed);
    atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* How a histogram made from now on picks its Prometheus buckets (stats_config.
 * histogram_bucket_settings): fn gets the histogram's full name and returns its bounds
 * (increasing, copied) and their number, or NULL for Envoy's defaults. The registry owns arg
 * from now on and calls dispose(arg) when another is installed. fn runs under the registry's
 * lock. NULL fn: defaults for all. */
typedef const double *(*pt_hist_bounds_fn)(const void *arg, const char *full_name, uint32_t *n);
void pt_stats_set_histogram_bounds(pt_hist_bounds_fn fn, void *arg, void (*dispose)(void *));

/* Main thread (or the one thread that reads histograms): merges every histogram. */
void pt_stats_merge_histograms(void);
/* The same, and fn(arg, id, delta, chunks, count, sum) for every histogram whose interval has
 * values (the stats sinks' flush): delta holds the interval's count per bucket, valid only
 * in the chunks whose bits are set in `chunks` (bit c: buckets c * PT_HIST_SUB ..); count is
 * the interval's number of values, sum the cumulative total of all values. */
typedef void (*pt_hist_interval_fn)(void *arg, pt_stat_t id, const uint64_t *delta,
                                    uint32_t chunks, uint64_t count, uint64_t cum_sum);
void pt_stats_merge_histograms_visit(pt_hist_interval_fn fn, void *arg);

/* A histogram as of the last merge. */
typedef struct pt_hist_summary {
    int used;                      /* values were merged (Envoy's "used") */
    uint64_t count, sum;           /* all values merged so far, and their total */
    uint64_t interval_count;       /* values of the last interval */
    double interval[PT_HIST_NQ];   /* quantiles of the last interval (NaN without values) */
    double cumulative[PT_HIST_NQ]; /* quantiles of all values */
    const double *bounds;          /* Prometheus bucket bounds, valid while the histogram is */
    uint32_t nbounds;
} pt_hist_summary_t;
/* 0, or -1 when id is no histogram. bucket_counts (NULL, or room for out->nbounds: call
 * with NULL first to learn it) gets the cumulative count of values <= each bound. Same
 * thread as the merge. */
int pt_stats_histogram_summary(pt_stat_t id, pt_hist_summary_t *out, uint64_t *bucket_counts);
/* The cumulative counts per bucket (PT_HIST_BUCKETS of them) as of the last merge, for
 * tests; -1 when id is no histogram. */
int pt_stats_histogram_counts(pt_stat_t id, uint64_t *counts);
/* Histograms registered now, and how many thread copies they hold (tests, /memory). */
uint32_t pt_stats_histograms_live(void);
uint32_t pt_stats_histogram_threads(void);

/* Sets a gauge that only this thread writes (main-thread gauges such as ejections_active). */
void pt_stat_set(pt_stat_t id, int64_t value);

/* Sets a text readout (copied). Any thread; rare (an accepted config update). */
void pt_stat_set_text(pt_stat_t id, const char *value);
/* A copy of a text readout's value ("" until set; NULL out of memory or for another kind);
 * the caller frees it. *set, when given, says whether it was ever set (Envoy's "used"). */
char *pt_stats_text_value(pt_stat_t id, int *set);

/* Makes a gauge computed: reading it calls fn(arg). Main thread, at snapshot prepare; call
 * pt_stats_gauge_fn_clear before arg goes away (the gauge then reads its slots: 0 unless
 * something added to them). A counter may be computed the same way (one only the main
 * thread counts, kept by its object rather than in a slot of the main thread's array). */
void pt_stats_gauge_fn(pt_stat_t id, int64_t (*fn)(const void *), const void *arg);
void pt_stats_gauge_fn_clear(pt_stat_t id, const void *arg);

/* Sum over all threads. Gauges are returned as int64 cast to uint64. */
uint64_t pt_stats_value(pt_stat_t id);
int64_t pt_stats_gauge_value(pt_stat_t id);
/* Looks a stat up by full name; 0 if absent. */
pt_stat_t pt_stats_find(const char *full_name);

/* What stats of one name share: every cluster has an upstream_rq_total, and all of them are
 * one family (the same scope, tag, name, Prometheus name and kind), stored once. */
typedef struct pt_stat_family {
    const char *scope;
    const char *tag;        /* label name or NULL */
    const char *stat_name;  /* the name after scope and tag value */
    const char *prom_name;  /* envoy_<scope>_<stat_name with dots as underscores>: the
                             * name without the tag value (tests check families by it) */
    pt_stat_kind_t kind;
    uint32_t refs;          /* stats of the family (registry's lock) */
    uint32_t index;         /* its place in pt_stat_families */
    struct pt_stat_family *next_in_bucket;
} pt_stat_family_t;

/* One stat: its family and its tag value (both shared, interned), as indexes into the two
 * tables below; the full dotted name is scope.tag_value.stat_name (scope.stat_name without
 * a tag) and is not stored: pt_stat_full_name builds it. Read them with pt_stat_family and
 * pt_stat_tag_value. */
typedef struct pt_stat_info {
    uint32_t family; /* index into pt_stat_families; 0 while the id is free */
    uint32_t tag;    /* index into pt_stat_tags; 0: no tag */
    /* Registry links (ids): the name hash chain, and the stats sharing a tag value. */
    uint32_t next_in_bucket, next_same_tag;
} pt_stat_info_t; /* 16 bytes: tens of thousands of clusters have ~60 stats each */

/* The live families and tag values by index (0: none). Entries are written under the
 * registry's lock when a family or tag value is first used and cleared when its last stat
 * goes, so an entry a live stat's info names is stable. Sized for PT_STATS_MAX (there are
 * never more families or tag values than stats), in pages touched as indexes are used. */
extern const pt_stat_family_t *pt_stat_families[PT_STATS_MAX];
extern const char *pt_stat_tags[PT_STATS_MAX];

static inline const pt_stat_family_t *pt_stat_family(const pt_stat_info_t *info)
{
    return pt_stat_families[info->family];
}
static inline const char *pt_stat_tag_value(const pt_stat_info_t *info)
{
    return pt_stat_tags[info->tag];
}

/* pt_stats_count is one past the highest id ever handed out (ids run from 1);
 * pt_stats_info gives a live stat's info (NULL for 0, a released id or one out of range);
 * pt_stats_sorted gives the live ids ordered by full name (caller frees).
 *
 * An info pointer stays valid while its stat is registered: stats are created on any
 * thread but released only on the main thread (pt_stats_release_tagged), which is where
 * the admin reads them. */
uint32_t pt_stats_count(void);
const pt_stat_info_t *pt_stats_info(pt_stat_t id);
pt_stat_t *pt_stats_sorted(uint32_t *count);
/* The live ids in id order (no sort: the sinks' flush), caller frees; NULL out of memory. */
pt_stat_t *pt_stats_live_ids(uint32_t *count);

/* Room for any full name: pt_stats_get builds names of at most this many bytes. */
#define PT_STAT_NAME_MAX 1024

/* Writes the full dotted name of a stat into buf (truncated to len - 1 bytes, always
 * terminated); returns the full length. */
size_t pt_stat_full_name(const pt_stat_info_t *info, char *buf, size_t len);
/* Orders two live stats by full name (strcmp's order on the dotted names). */
int pt_stats_cmp_names(const pt_stat_info_t *a, const pt_stat_info_t *b);

/* Main thread: releases every stat of `scope` tagged with `tag_value` (a cluster's stats
 * once no version of the cluster is left): their ids and memory are reused by stats made
 * later, whose counts start at zero. The caller guarantees nothing updates them any more.
 * Returns how many were released. */
unsigned pt_stats_release_tagged(const char *scope, const char *tag_value);
/* Main thread, now and then (the heap tick): gives the memory of released stats back to
 * the system. Cheap when nothing was released since the last call. */
void pt_stats_trim(void);
/* How many stats are registered now (for tests and /memory). */
uint32_t pt_stats_live(void);

#endif
