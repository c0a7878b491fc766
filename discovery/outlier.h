/* Outlier detection (envoy.config.cluster.v3.OutlierDetection): passive health checking
 * from the results of real traffic. Workers report each result for a host (atomics on the
 * hot path); the main thread decides ejections, publishes them through the host's
 * PT_HOST_FAILED_OUTLIER_CHECK bit, and brings hosts back after their ejection time.
 *
 * Threads:
 *  - pt_outlier_report runs on workers: relaxed atomic adds on the host's counters. When a
 *    consecutive-failure counter reaches the threshold of the cluster version the request
 *    pinned, the host is queued once with a reference (a lock-free stack, guarded by a
 *    per-host flag so a burst queues it once) and the main loop is woken (ev_async). No
 *    allocation, no lock.
 *  - everything else (the detector: consecutive ejections, the interval sweep with the
 *    success-rate and failure-percentage families, un-ejection, stats) runs on the main
 *    thread.
 * The detector follows the views the main thread publishes (pt_outlier_update): its state
 * for a cluster belongs to the cluster's name and moves from version to version, and so do
 * the hosts' outlier state and ejections, so an ejected host stays ejected across an update
 * that does not remove it. Workers read only the version their request pinned.
 * The decision rules are plain functions below so that they can be tested without threads.
 * docs/outlier_detection.md describes the behaviour and where it differs from Envoy. */
#ifndef PT_OUTLIER_H
#define PT_OUTLIER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/stats.h"

typedef struct pt_cluster pt_cluster_t;
typedef struct pt_host pt_host_t;
typedef struct pt_worker pt_worker_t;
typedef struct pt_view pt_view_t;
typedef struct pt_outlier_config pt_outlier_config_t;
typedef struct pt_outlier_detector pt_outlier_detector_t;

typedef enum pt_outlier_result {
    PT_OUTLIER_HTTP_RESPONSE,       /* an upstream response; its status decides (5xx, gateway) */
    PT_OUTLIER_CONNECT_FAILED,      /* local origin: connection failure */
    PT_OUTLIER_CONNECT_SUCCESS,     /* local origin: connection established (a protocol such as
                                     * HTTP follows and reports its own result) */
    PT_OUTLIER_TIMEOUT,             /* local origin: request timeout */
    PT_OUTLIER_RESET,               /* local origin: reset before a response */
    PT_OUTLIER_CONNECT_SUCCESS_FINAL, /* connection established and that is the whole result
                                     * (tcp_proxy): a success in every mode (Envoy's
                                     * LOCAL_ORIGIN_CONNECT_SUCCESS_FINAL) */
} pt_outlier_result_t;

/* Envoy's OutlierEjectionType, in the order the stats are named. */
typedef enum pt_outlier_type {
    PT_OUTLIER_CONSECUTIVE_5XX,
    PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
    PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    PT_OUTLIER_SUCCESS_RATE,
    PT_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN,
    PT_OUTLIER_FAILURE_PERCENTAGE,
    PT_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
    PT_OUTLIER_NTYPES
} pt_outlier_type_t;

/* The stat-name form: "consecutive_5xx", "local_origin_success_rate", ... */
const char *pt_outlier_type_str(pt_outlier_type_t t);

/* cluster.<name>.outlier_detection.* (registered at pt_outlier_prepare). Counters are
 * updated on the main thread only; ejections_active is a main-thread gauge. */
typedef struct pt_outlier_stats {
    pt_stat_t ejections_active;
    pt_stat_t ejections_overflow;
    pt_stat_t ejections_enforced_total;
    pt_stat_t ejections_detected[PT_OUTLIER_NTYPES]; /* ejections_detected_<type> */
    pt_stat_t ejections_enforced[PT_OUTLIER_NTYPES]; /* ejections_enforced_<type> */
    /* Deprecated in Envoy but still emitted there: ejections_total (5xx and success-rate
     * ejections not blocked by max_ejection_percent), ejections_consecutive_5xx,
     * ejections_success_rate. */
    pt_stat_t ejections_total, ejections_consecutive_5xx, ejections_success_rate;
} pt_outlier_stats_t;

/* A parsed outlier_detection, part of one cluster version. Durations in ms; percentages
 * 0..100. The config part is immutable once the version is built; `detector` is the running
 * detector, set by pt_outlier_update when it watches this version (main thread writes,
 * workers read it through the version their request holds). */
struct pt_outlier_config {
    uint32_t consecutive_5xx;                  /* 5; 0 never triggers */
    uint32_t consecutive_gateway_failure;      /* 5 */
    uint32_t consecutive_local_origin_failure; /* 5 (split mode only) */
    int split_external_local_origin_errors;    /* false */
    uint64_t interval_ms;                      /* 10s */
    uint64_t base_ejection_time_ms;            /* 30s */
    uint64_t max_ejection_time_ms;             /* max(300s, base_ejection_time) */
    uint64_t max_ejection_time_jitter_ms;      /* 0 */
    uint32_t max_ejection_percent;             /* 10 */
    int always_eject_one_host;                 /* false */
    /* enforcing_consecutive_5xx 100, enforcing_consecutive_gateway_failure 0,
     * enforcing_consecutive_local_origin_failure 100, enforcing_success_rate 100,
     * enforcing_local_origin_success_rate 100, enforcing_failure_percentage 0,
     * enforcing_failure_percentage_local_origin 0; indexed by pt_outlier_type_t. */
    uint32_t enforcing[PT_OUTLIER_NTYPES];
    uint32_t success_rate_minimum_hosts;        /* 5 */
    uint32_t success_rate_request_volume;       /* 100 */
    uint32_t success_rate_stdev_factor;         /* 1900 (= 1.9) */
    uint32_t failure_percentage_threshold;      /* 85 */
    uint32_t failure_percentage_minimum_hosts;  /* 5 */
    uint32_t failure_percentage_request_volume; /* 50 */
    int successful_active_health_check_uneject_host; /* true */

    pt_arena_t *arena;                          /* the cluster version's */
    pt_outlier_stats_t stats;                   /* ids by name: the same in every version */
    /* NULL until an update registers the version; then the detector until it stops (a
     * version the detector moved on from keeps it: its reports are dropped there). */
    _Atomic(pt_outlier_detector_t *) detector;
};

/* ---- config and wiring ------------------------------------------------------------- */

/* Parses the outlier_detection object the reader is in. NULL with errors recorded. */
pt_outlier_config_t *pt_outlier_parse(pt_cfg_t *r, pt_arena_t *a);
/* Main thread, while a validated cluster version is prepared (before workers can see it):
 * allocates the state of every host that has none yet (pt_host_t.outlier, owned by the
 * host: a host that stays keeps it) and registers the cluster's outlier_detection stats.
 * No-op for a cluster without outlier_detection. */
void pt_outlier_prepare(pt_cluster_t *c);

/* Worker thread (any thread): one result for host h of cluster version c, the version the
 * caller holds a reference to (the request pinned it), whose thresholds apply
 * (http_status for HTTP responses). No-op when c has no outlier_detection. */
void pt_outlier_report(pt_cluster_t *c, pt_host_t *h, pt_outlier_result_t result,
                       int http_status);

/* Main thread: the detector, on the main worker's loop, watching nothing until
 * pt_outlier_update. NULL only when out of memory (logged; detection is then off, and
 * pt_outlier_update(NULL, ...) and pt_outlier_stop(NULL) are no-ops). */
pt_outlier_detector_t *pt_outlier_start(pt_worker_t *main_worker);
/* Main thread: every ejection (enforced or not) and every return is written to `path` as a
 * line of Envoy's outlier event log (OutlierDetectionEvent JSON), appended; NULL or "" turns
 * it off. 0, or -errno when the file cannot be opened (the log is then off). */
int pt_outlier_set_event_log(pt_outlier_detector_t *d, const char *path);
/* Main thread: watches every cluster of `view` that has outlier_detection (taking a
 * reference to each version watched). Work follows what changed since the last view,
 * clusters being matched by their state (c->state):
 *  - the same version: nothing;
 *  - a new version: its config, interval and thresholds apply from now on; hosts it still
 *    lists keep their counts, ejection and ejection history; new hosts are watched from
 *    now (an ejection a returning host object still carries is lifted); removed hosts are
 *    forgotten, and an ejected one no longer counts in ejections_active nor toward
 *    max_ejection_percent (Envoy);
 *  - a cluster gone, or without outlier_detection any more: no longer watched; in the
 *    latter case the hosts it lists are brought back.
 * Call it before or after the view is published: a report through a version not
 * registered yet only marks its host, and the update handles it. Results reported before
 * are not lost: counters keep counting and a threshold reached earlier is handled here.
 * 0, or -1 when out of memory (some clusters are then not watched, or stay on an older
 * version). */
int pt_outlier_update(pt_outlier_detector_t *d, const pt_view_t *view);
/* Main thread, after the workers stopped reporting (joined): nothing may report through a
 * version the detector watched after this. Stops the timers and frees the detector.
 * Ejected hosts keep their bit. */
void pt_outlier_stop(pt_outlier_detector_t *d);

/* Host's external-origin success rate (percent) computed at the last interval sweep, or -1
 * when unknown (no outlier_detection, or too few requests in the interval: fewer than
 * min(success_rate_request_volume, failure_percentage_request_volume)). For /clusters'
 * success_rate. Any thread. */
double pt_outlier_success_rate(const pt_host_t *h);
/* The same for local-origin results (split mode); /clusters' local_origin_success_rate. */
double pt_outlier_local_origin_success_rate(const pt_host_t *h);

/* Main thread: an active health check of h passed. When the host is ejected, it is not
 * failing active health checks and successful_active_health_check_uneject_host is on, it is
 * brought back at once (Envoy). For discovery/health_check.c to call. */
void pt_outlier_health_check_passed(pt_host_t *h);

/* Main thread: a host's detector state, for admin output and tests. 0, or -1 when the host
 * has no outlier state. */
typedef struct pt_outlier_host_info {
    int ejected;             /* PT_HOST_FAILED_OUTLIER_CHECK is set */
    uint32_t num_ejections;  /* enforced ejections so far */
    uint64_t times_ejected;  /* the ejection-time multiplier (decays while healthy) */
    uint64_t ejected_at_ms;  /* monotonic, last ejection */
    uint64_t uneject_at_ms;  /* monotonic, when the current ejection ends */
    uint32_t consecutive_5xx, consecutive_gateway_failure, consecutive_local_origin_failure;
} pt_outlier_host_info_t;
int pt_outlier_host_info(const pt_host_t *h, pt_outlier_host_info_t *out);

/* ---- the decision rules (pure; the detector uses exactly these) ---------------------- */

/* max_ejection_percent: may one more host be ejected when `ejected` of `nhosts` already
 * are? Yes while (ejected + 1) / nhosts <= max_percent; and the first ejection is always
 * allowed (Envoy: "will eject at least one host regardless of the value") unless
 * max_percent is 0 and always_eject_one_host is off. */
int pt_outlier_may_eject(unsigned ejected, unsigned nhosts, uint32_t max_percent,
                         int always_eject_one_host);
/* An enforcing_* percentage: 100 always, 0 never, else a random draw. */
int pt_outlier_enforce(uint32_t percent);
/* The "times ejected" multiplier after one more ejection (Envoy: grows by one while
 * times * base < max + base, so it never runs far past max_ejection_time). */
uint64_t pt_outlier_next_times_ejected(const pt_outlier_config_t *cfg, uint64_t times);
/* Ejection time: min(base_ejection_time * times_ejected, max_ejection_time) + jitter. */
uint64_t pt_outlier_ejection_time_ms(const pt_outlier_config_t *cfg, uint64_t times_ejected,
                                     uint64_t jitter_ms);
/* Success-rate ejection threshold over n rates (percent): mean - stdev * factor / 1000,
 * with the population standard deviation. Returns the threshold, *mean set. */
double pt_outlier_success_rate_threshold(const double *rates, size_t n, uint32_t stdev_factor,
                                         double *mean);

/* One interval's counts for a host, for the success-rate / failure-percentage families. */
typedef struct pt_outlier_sample {
    uint64_t total, success;
    int excluded; /* already ejected: not analysed */
} pt_outlier_sample_t;

enum {
    PT_OUTLIER_VERDICT_SUCCESS_RATE = 1u << 0,       /* below the success-rate threshold */
    PT_OUTLIER_VERDICT_FAILURE_PERCENTAGE = 1u << 1, /* failure % >= threshold */
};

/* Analyses one interval of one cluster for one origin (external or local): rate_out[i] is
 * host i's success rate when its volume reaches min(success_rate_request_volume,
 * failure_percentage_request_volume), else -1; verdict_out[i] the families that find it an
 * outlier. success_rate needs at least success_rate_minimum_hosts hosts with
 * success_rate_request_volume requests; failure_percentage likewise with its own minimums.
 * *threshold_out is the success-rate threshold used, or -1 when the family did not run;
 * *mean_out (when not NULL) the mean success rate it was computed from, or -1. */
void pt_outlier_analyze(const pt_outlier_config_t *cfg, const pt_outlier_sample_t *s, size_t n,
                        double *rate_out, unsigned *verdict_out, double *threshold_out,
                        double *mean_out);

/* ---- driving the detector by hand (tests) -------------------------------------------- */

/* The steps the detector's watchers run, with an explicit monotonic time, so tests can
 * drive a detector whose loop never runs: handle queued consecutive-failure events; run
 * every cluster's interval sweep; bring back hosts whose ejection time is over. */
void pt_outlier_detector_run_events(pt_outlier_detector_t *d, uint64_t now_ms);
void pt_outlier_detector_run_interval(pt_outlier_detector_t *d, uint64_t now_ms);
void pt_outlier_detector_run_expiry(pt_outlier_detector_t *d, uint64_t now_ms);

#endif
