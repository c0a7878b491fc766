/* Stats: counters and gauges named as Envoy names them.
 *
 * Every thread that updates stats (each worker, and the main thread) owns a slot array; a
 * stat is an index into it. Updates are relaxed atomic adds on the calling thread's own
 * slot, so the hot path takes no lock and shares no cache line with other threads. Reading
 * a stat sums its slot over all threads. Gauges are stored the same way as signed deltas,
 * so a connection opened on one thread and closed on another still sums correctly.
 *
 * Stats are created (find-or-create by name) on the main thread while a config snapshot is
 * built; ids are stable for the life of the process, so a stat keeps counting across config
 * reloads. Each stat also records its Prometheus form: metric family name and one optional
 * label (for example cluster.<name>.upstream_cx_total becomes
 * envoy_cluster_upstream_cx_total{envoy_cluster_name="<name>"}). */
#ifndef PT_STATS_H
#define PT_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define PT_STATS_MAX      (1u << 20) /* slots per thread; virtual memory, touched lazily */
#define PT_STATS_MAX_THREADS 130

typedef uint32_t pt_stat_t; /* 0 is "no stat": updates to it are dropped */

/* A text readout holds a string (Envoy's TextReadout: the version_info of the last
 * accepted xDS update); it has no per-thread slot and is set and read under the registry's
 * lock. */
typedef enum pt_stat_kind { PT_STAT_COUNTER, PT_STAT_GAUGE, PT_STAT_TEXT } pt_stat_kind_t;

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
/* Sets a gauge that only this thread writes (main-thread gauges such as ejections_active). */
void pt_stat_set(pt_stat_t id, int64_t value);

/* Sets a text readout (copied). Any thread; rare (an accepted config update). */
void pt_stat_set_text(pt_stat_t id, const char *value);
/* A copy of a text readout's value ("" until set; NULL out of memory or for another kind);
 * the caller frees it. *set, when given, says whether it was ever set (Envoy's "used"). */
char *pt_stats_text_value(pt_stat_t id, int *set);

/* Makes a gauge computed: reading it calls fn(arg). Main thread, at snapshot prepare; call
 * pt_stats_gauge_fn_clear before arg goes away (the gauge then reads 0). */
void pt_stats_gauge_fn(pt_stat_t id, int64_t (*fn)(const void *), const void *arg);
void pt_stats_gauge_fn_clear(pt_stat_t id, const void *arg);

/* Sum over all threads. Gauges are returned as int64 cast to uint64. */
uint64_t pt_stats_value(pt_stat_t id);
int64_t pt_stats_gauge_value(pt_stat_t id);
/* Looks a stat up by full name; 0 if absent. */
pt_stat_t pt_stats_find(const char *full_name);

typedef struct pt_stat_info {
    const char *name;       /* full dotted name */
    const char *prom_name;  /* envoy_<scope>_<name with dots as underscores> */
    const char *tag;        /* label name or NULL */
    const char *tag_value;
    pt_stat_kind_t kind;
    /* A computed gauge: its value is read from shared state (circuit breaker counts) rather
     * than summed from per-thread slots. */
    _Atomic(int64_t (*)(const void *)) fn;
    _Atomic(const void *) fn_arg;
    /* A text readout's value (NULL until set), guarded by the registry's lock. */
    char *text;
} pt_stat_info_t;

/* pt_stats_count is one past the highest id (ids run from 1, so it is the number of stats
 * plus one); pt_stats_info gives a stat's info, a pointer valid for the life of the
 * process; pt_stats_sorted gives all ids ordered by full name (caller frees). */
uint32_t pt_stats_count(void);
const pt_stat_info_t *pt_stats_info(pt_stat_t id);
pt_stat_t *pt_stats_sorted(uint32_t *count);

#endif
