/* Outlier detection: worker-side reporting and the main-thread detector.
 *
 * Per host (struct pt_outlier_host, owned by the host, made when a cluster version with
 * outlier_detection is prepared; a host that stays in later versions keeps it):
 *  - written by workers with relaxed atomics: the three consecutive-failure counters and
 *    cumulative total/success counts for external- and local-origin results. The interval
 *    sweep takes the difference from the previous sweep, so no bucket is ever swapped or
 *    cleared under a worker's feet and no result is lost at an interval boundary.
 *  - an event word (`pending`, one bit per consecutive type) plus a `queued` flag: a worker
 *    whose increment makes a counter equal its threshold sets the bit and, if the host is
 *    not queued yet, pushes it (with a host reference, so the host outlives the version
 *    that listed it while it waits) on the detector's lock-free stack and wakes the main
 *    loop. A burst of failures therefore queues the host once; the counter only equals the
 *    threshold once until the main thread resets it (Envoy's `++n == threshold`).
 *  - main-thread-only fields: which detector cluster watches it, ejection bookkeeping, the
 *    previous sweep's counts.
 * Workers never read anything the main thread re-points: thresholds and the detector come
 * from the config of the cluster version the request pinned (c->outlier), which lives as
 * long as the request's reference.
 *
 * The detector (main thread) owns one struct od_cluster per cluster with outlier_detection,
 * found by the cluster's state so that it follows the cluster from version to version
 * (pt_outlier_update diffs each new version's hosts against the one watched): an interval
 * timer (success rate, failure percentage, "times ejected" decay) and an expiry timer armed
 * for the earliest end of an ejection of that cluster. */
#include "discovery/outlier.h"

#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/cluster.h"
#include "proxy/log.h"
#include "proxy/random.h"
#include "proxy/time.h"
#include "proxy/view.h"
#include "proxy/worker.h"

#define EV_BIT(t) (1u << (t)) /* pending bits use the consecutive pt_outlier_type_t values */

struct od_cluster;

struct pt_outlier_host {
    /* ---- shared with workers (atomics) ---- */
    _Atomic uint32_t consecutive[3];       /* indexed by the three consecutive pt_outlier_type_t */
    _Atomic uint64_t total[2], success[2]; /* [0] external origin, [1] local origin */
    _Atomic uint32_t pending;              /* EV_BIT(type) awaiting the main thread */
    _Atomic uint32_t queued;               /* on the detector's event stack */
    _Atomic uint64_t rate_bits[2];         /* last sweep's success rate (double), -1 unknown */
    struct pt_outlier_host *next;          /* event stack link (owned by whoever set queued) */
    pt_host_t *host;
    /* ---- main thread only ---- */
    struct od_cluster *dc; /* the detector's cluster watching the host, or NULL */
    uint64_t mark;         /* pt_outlier_detector.epoch of the version being diffed */
    uint64_t prev_total[2], prev_success[2];
    uint64_t times_ejected; /* Envoy's ejection-time backoff multiplier */
    uint32_t num_ejections;
    uint64_t ejected_at_ms, uneject_at_ms, unejected_at_ms;
    int was_unejected;
};

/* One cluster (by its state, so across versions) with outlier_detection. Invariant: a host's
 * dc is this cluster exactly when the host is listed by the version watched, c. */
typedef struct od_cluster {
    pt_outlier_detector_t *d;
    pt_cluster_t *c;          /* the version watched (a reference) */
    pt_outlier_config_t *cfg; /* c->outlier */
    unsigned ejected;         /* hosts of c ejected (ejections_active) */
    ev_timer interval;
    ev_timer expiry;
    /* Scratch for the sweep, one slot per host of c. */
    pt_outlier_sample_t *samples;
    double *rates;
    unsigned *verdicts;
} od_cluster_t;

struct pt_outlier_detector {
    struct ev_loop *loop;
    ev_async wakeup;
    _Atomic(struct pt_outlier_host *) events; /* lock-free stack of queued hosts */
    od_cluster_t **clusters;                  /* heap objects: timers and hosts point at them */
    unsigned nclusters, cap;
    uint64_t epoch; /* bumped for every version diffed */
    FILE *event_log; /* cluster_manager.outlier_detection.event_log_path, or NULL */
};

static const char *const type_names[PT_OUTLIER_NTYPES] = {
    [PT_OUTLIER_CONSECUTIVE_5XX] = "consecutive_5xx",
    [PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] = "consecutive_gateway_failure",
    [PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] = "consecutive_local_origin_failure",
    [PT_OUTLIER_SUCCESS_RATE] = "success_rate",
    [PT_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN] = "local_origin_success_rate",
    [PT_OUTLIER_FAILURE_PERCENTAGE] = "failure_percentage",
    [PT_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] = "local_origin_failure_percentage",
};

const char *pt_outlier_type_str(pt_outlier_type_t t)
{
    return (unsigned)t < PT_OUTLIER_NTYPES ? type_names[t] : "?";
}

/* ---- config ---------------------------------------------------------------------- */

static const char *const od_unsupported[] = {"monitors", NULL};

static uint32_t get_u32(pt_cfg_t *r, const char *field, uint32_t def, uint32_t max)
{
    uint64_t v;
    pt_cfg_uint(r, field, &v, def, 0, max);
    return (uint32_t)v;
}

/* A Duration that must be > 0 (proto: gt {}). */
static uint64_t get_positive_ms(pt_cfg_t *r, const char *field, uint64_t def)
{
    uint64_t ms;
    if (pt_cfg_duration_ms(r, field, &ms, def) > 0 && ms == 0) {
        pt_cfg_error(r, field, "must be greater than 0");
        ms = def;
    }
    return ms;
}

pt_outlier_config_t *pt_outlier_parse(pt_cfg_t *r, pt_arena_t *a)
{
    pt_cfg_unsupported(r, od_unsupported);
    pt_outlier_config_t *o = pt_arena_alloc(a, sizeof(*o));
    if (o == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        pt_cfg_skip_rest(r);
        return NULL;
    }
    o->arena = a;
    atomic_init(&o->detector, NULL);
    o->consecutive_5xx = get_u32(r, "consecutive_5xx", 5, UINT32_MAX);
    o->interval_ms = get_positive_ms(r, "interval", 10000);
    o->base_ejection_time_ms = get_positive_ms(r, "base_ejection_time", 30000);
    o->max_ejection_percent = get_u32(r, "max_ejection_percent", 10, 100);
    o->enforcing[PT_OUTLIER_CONSECUTIVE_5XX] = get_u32(r, "enforcing_consecutive_5xx", 100, 100);
    o->enforcing[PT_OUTLIER_SUCCESS_RATE] = get_u32(r, "enforcing_success_rate", 100, 100);
    o->success_rate_minimum_hosts = get_u32(r, "success_rate_minimum_hosts", 5, UINT32_MAX);
    o->success_rate_request_volume = get_u32(r, "success_rate_request_volume", 100, UINT32_MAX);
    o->success_rate_stdev_factor = get_u32(r, "success_rate_stdev_factor", 1900, UINT32_MAX);
    o->consecutive_gateway_failure = get_u32(r, "consecutive_gateway_failure", 5, UINT32_MAX);
    o->enforcing[PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] =
        get_u32(r, "enforcing_consecutive_gateway_failure", 0, 100);
    pt_cfg_bool(r, "split_external_local_origin_errors", &o->split_external_local_origin_errors,
                0);
    o->consecutive_local_origin_failure =
        get_u32(r, "consecutive_local_origin_failure", 5, UINT32_MAX);
    o->enforcing[PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] =
        get_u32(r, "enforcing_consecutive_local_origin_failure", 100, 100);
    o->enforcing[PT_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN] =
        get_u32(r, "enforcing_local_origin_success_rate", 100, 100);
    o->failure_percentage_threshold = get_u32(r, "failure_percentage_threshold", 85, 100);
    o->enforcing[PT_OUTLIER_FAILURE_PERCENTAGE] =
        get_u32(r, "enforcing_failure_percentage", 0, 100);
    o->enforcing[PT_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] =
        get_u32(r, "enforcing_failure_percentage_local_origin", 0, 100);
    o->failure_percentage_minimum_hosts =
        get_u32(r, "failure_percentage_minimum_hosts", 5, UINT32_MAX);
    o->failure_percentage_request_volume =
        get_u32(r, "failure_percentage_request_volume", 50, UINT32_MAX);
    /* Unset max_ejection_time: 300s or base_ejection_time, whichever is larger (Envoy). */
    uint64_t def_max = o->base_ejection_time_ms > 300000 ? o->base_ejection_time_ms : 300000;
    o->max_ejection_time_ms = get_positive_ms(r, "max_ejection_time", def_max);
    if (o->max_ejection_time_ms < o->base_ejection_time_ms) {
        pt_cfg_error(r, "max_ejection_time", "cannot be smaller than base_ejection_time");
        o->max_ejection_time_ms = def_max;
    }
    pt_cfg_duration_ms(r, "max_ejection_time_jitter", &o->max_ejection_time_jitter_ms, 0);
    pt_cfg_bool(r, "successful_active_health_check_uneject_host",
                &o->successful_active_health_check_uneject_host, 1);
    pt_cfg_bool(r, "always_eject_one_host", &o->always_eject_one_host, 0);
    return o;
}

void pt_outlier_prepare(pt_cluster_t *c)
{
    pt_outlier_config_t *o = c->outlier;
    if (o == NULL)
        return;
    char name[96];
    const char *t = "envoy_cluster_name";
#define CTR(n) pt_stats_counter("cluster", t, c->name, "outlier_detection." n)
    o->stats.ejections_active =
        pt_stats_gauge("cluster", t, c->name, "outlier_detection.ejections_active");
    o->stats.ejections_overflow = CTR("ejections_overflow");
    o->stats.ejections_enforced_total = CTR("ejections_enforced_total");
    o->stats.ejections_total = CTR("ejections_total");
    o->stats.ejections_consecutive_5xx = CTR("ejections_consecutive_5xx");
    o->stats.ejections_success_rate = CTR("ejections_success_rate");
#undef CTR
    for (int i = 0; i < PT_OUTLIER_NTYPES; i++) {
        snprintf(name, sizeof(name), "outlier_detection.ejections_detected_%s", type_names[i]);
        o->stats.ejections_detected[i] = pt_stats_counter("cluster", t, c->name, name);
        snprintf(name, sizeof(name), "outlier_detection.ejections_enforced_%s", type_names[i]);
        o->stats.ejections_enforced[i] = pt_stats_counter("cluster", t, c->name, name);
    }
    for (unsigned i = 0; i < c->nhosts; i++) {
        pt_host_t *h = c->hosts[i];
        if (h->outlier != NULL)
            continue; /* a host that stays: its counts and ejection stay too */
        /* Owned by the host (freed with it), so it lasts as long as the host does. */
        struct pt_outlier_host *s = calloc(1, sizeof(*s));
        if (s == NULL)
            continue; /* out of memory: this host is simply not monitored */
        double unknown = -1.0;
        uint64_t bits;
        memcpy(&bits, &unknown, sizeof(bits));
        for (int k = 0; k < 3; k++)
            atomic_init(&s->consecutive[k], 0);
        for (int k = 0; k < 2; k++) {
            atomic_init(&s->total[k], 0);
            atomic_init(&s->success[k], 0);
            atomic_init(&s->rate_bits[k], bits);
        }
        atomic_init(&s->pending, 0);
        atomic_init(&s->queued, 0);
        s->host = h;
        h->outlier = s;
    }
}

/* ---- worker side ------------------------------------------------------------------ */

static void push_event(pt_outlier_detector_t *d, struct pt_outlier_host *s)
{
    struct pt_outlier_host *head = atomic_load_explicit(&d->events, memory_order_relaxed);
    do {
        s->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&d->events, &head, s, memory_order_release,
                                                    memory_order_relaxed));
}

/* Queues s on d once (whoever turns `queued` on pushes): 1 when this call pushed it. The
 * stack holds a reference to the host: the version that listed it may go while the host
 * waits for the main thread. */
static int queue_host(pt_outlier_detector_t *d, struct pt_outlier_host *s)
{
    if (atomic_exchange(&s->queued, 1) != 0)
        return 0;
    pt_host_ref(s->host);
    push_event(d, s);
    return 1;
}

/* A consecutive counter reached its threshold. Sequentially consistent on purpose (rare):
 * pending is set before the version's detector pointer is read, and pt_outlier_update
 * publishes the pointer on a version before it scans that version's hosts for pending
 * bits, so an event reported through a version not registered yet is never missed. */
static void raise_event(const pt_outlier_config_t *o, struct pt_outlier_host *s,
                        pt_outlier_type_t type)
{
    atomic_fetch_or(&s->pending, EV_BIT(type));
    pt_outlier_detector_t *d = atomic_load(&o->detector);
    if (d != NULL && queue_host(d, s)) /* else not registered yet (the update picks it up) */
        ev_async_send(d->loop, &d->wakeup);
}

static void count_failure(const pt_outlier_config_t *o, struct pt_outlier_host *s,
                          pt_outlier_type_t type, uint32_t threshold)
{
    uint32_t n = atomic_fetch_add_explicit(&s->consecutive[type], 1, memory_order_relaxed) + 1;
    if (n == threshold)
        raise_event(o, s, type);
}

static int is_gateway_error(int status)
{
    return status == 502 || status == 503 || status == 504;
}

/* An external-origin result with an HTTP status (local-origin results are mapped to one
 * when errors are not split). `o` is the config of the version the request used. */
static void put_http(const pt_outlier_config_t *o, struct pt_outlier_host *s, int status)
{
    atomic_fetch_add_explicit(&s->total[0], 1, memory_order_relaxed);
    if (status >= 500 && status <= 599) {
        if (is_gateway_error(status))
            count_failure(o, s, PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
                          o->consecutive_gateway_failure);
        else
            atomic_store_explicit(&s->consecutive[PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE], 0,
                                  memory_order_relaxed);
        count_failure(o, s, PT_OUTLIER_CONSECUTIVE_5XX, o->consecutive_5xx);
        return;
    }
    atomic_fetch_add_explicit(&s->success[0], 1, memory_order_relaxed);
    atomic_store_explicit(&s->consecutive[PT_OUTLIER_CONSECUTIVE_5XX], 0, memory_order_relaxed);
    atomic_store_explicit(&s->consecutive[PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE], 0,
                          memory_order_relaxed);
}

static void put_local(const pt_outlier_config_t *o, struct pt_outlier_host *s, int failed)
{
    atomic_fetch_add_explicit(&s->total[1], 1, memory_order_relaxed);
    if (failed) {
        count_failure(o, s, PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
                      o->consecutive_local_origin_failure);
        return;
    }
    atomic_fetch_add_explicit(&s->success[1], 1, memory_order_relaxed);
    atomic_store_explicit(&s->consecutive[PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE], 0,
                          memory_order_relaxed);
}

void pt_outlier_report(pt_cluster_t *c, pt_host_t *h, pt_outlier_result_t result, int http_status)
{
    /* Only the version the caller holds is read: its config (thresholds, detector) lives as
     * long as the caller's reference, and h->outlier was made before that version was
     * published. A version without outlier_detection never looks at h->outlier (a later
     * version may be making it on the main thread). */
    const pt_outlier_config_t *o = c != NULL ? c->outlier : NULL;
    struct pt_outlier_host *s = o != NULL && h != NULL ? h->outlier : NULL;
    if (s == NULL)
        return;
    if (o->split_external_local_origin_errors) {
        switch (result) {
        case PT_OUTLIER_HTTP_RESPONSE:
            if (http_status >= 100)
                put_http(o, s, http_status);
            break;
        case PT_OUTLIER_CONNECT_SUCCESS:
        case PT_OUTLIER_CONNECT_SUCCESS_FINAL:
            put_local(o, s, 0);
            break;
        case PT_OUTLIER_CONNECT_FAILED:
        case PT_OUTLIER_TIMEOUT:
        case PT_OUTLIER_RESET:
            put_local(o, s, 1);
            break;
        }
        return;
    }
    /* Not split: every result is an HTTP status (Envoy's mapping): a connect failure or a
     * reset is a 503, a timeout a 504. A bare connection success says nothing about the
     * request that follows, so it does not count (it would break a run of 5xx). */
    switch (result) {
    case PT_OUTLIER_HTTP_RESPONSE:
        if (http_status >= 100)
            put_http(o, s, http_status);
        break;
    case PT_OUTLIER_CONNECT_SUCCESS_FINAL:
        put_http(o, s, 200);
        break;
    case PT_OUTLIER_CONNECT_SUCCESS:
        break;
    case PT_OUTLIER_CONNECT_FAILED:
    case PT_OUTLIER_RESET:
        put_http(o, s, 503);
        break;
    case PT_OUTLIER_TIMEOUT:
        put_http(o, s, 504);
        break;
    }
}

/* ---- decision rules ------------------------------------------------------------- */

int pt_outlier_may_eject(unsigned ejected, unsigned nhosts, uint32_t max_percent,
                         int always_eject_one_host)
{
    if (nhosts == 0)
        return 0;
    if ((uint64_t)(ejected + 1) * 100 <= (uint64_t)max_percent * nhosts)
        return 1;
    return ejected == 0 && (max_percent > 0 || always_eject_one_host);
}

int pt_outlier_enforce(uint32_t percent)
{
    if (percent >= 100)
        return 1;
    if (percent == 0)
        return 0;
    return pt_random_below(100) < percent;
}

uint64_t pt_outlier_next_times_ejected(const pt_outlier_config_t *cfg, uint64_t times)
{
    if (times * cfg->base_ejection_time_ms < cfg->max_ejection_time_ms + cfg->base_ejection_time_ms)
        times++;
    return times;
}

uint64_t pt_outlier_ejection_time_ms(const pt_outlier_config_t *cfg, uint64_t times_ejected,
                                     uint64_t jitter_ms)
{
    uint64_t t = cfg->base_ejection_time_ms * times_ejected;
    if (times_ejected != 0 && t / times_ejected != cfg->base_ejection_time_ms)
        t = UINT64_MAX; /* overflow: the cap applies */
    if (t > cfg->max_ejection_time_ms)
        t = cfg->max_ejection_time_ms;
    return t + jitter_ms;
}

/* Square root by Newton's method: exact to the last bit or two for the variances seen here,
 * and it keeps libm (and the pages its loading touches) out of the process. */
static double sqrt_nonneg(double x)
{
    if (!(x > 0))
        return 0;
    double r = x >= 1 ? x : 1;
    /* From above, Newton descends monotonically; even x = 1e300 converges in ~1,100 steps. */
    for (int i = 0; i < 1200; i++) {
        double next = 0.5 * (r + x / r);
        if (next >= r)
            break;
        r = next;
    }
    return r;
}

/* Mean and threshold over the rates whose mask entry has `bit` (all when mask is NULL). */
static double sr_threshold(const double *rates, const unsigned *mask, unsigned bit, size_t n,
                           uint32_t stdev_factor, double *mean_out)
{
    double sum = 0, var = 0;
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (mask == NULL || (mask[i] & bit)) {
            sum += rates[i];
            count++;
        }
    double mean = count ? sum / (double)count : 0;
    for (size_t i = 0; i < n; i++)
        if (mask == NULL || (mask[i] & bit))
            var += (rates[i] - mean) * (rates[i] - mean);
    if (count)
        var /= (double)count;
    *mean_out = mean;
    return mean - sqrt_nonneg(var) * ((double)stdev_factor / 1000.0);
}

double pt_outlier_success_rate_threshold(const double *rates, size_t n, uint32_t stdev_factor,
                                         double *mean)
{
    return sr_threshold(rates, NULL, 0, n, stdev_factor, mean);
}

void pt_outlier_analyze(const pt_outlier_config_t *cfg, const pt_outlier_sample_t *s, size_t n,
                        double *rate_out, unsigned *verdict_out, double *threshold_out,
                        double *mean_out)
{
    double unused_mean;
    if (mean_out == NULL)
        mean_out = &unused_mean;
    *mean_out = -1;
    /* verdict_out also marks set membership while the families run. */
    enum { IN_SR = 1u << 4, IN_FP = 1u << 5 };
    *threshold_out = -1;
    for (size_t i = 0; i < n; i++) {
        rate_out[i] = -1;
        verdict_out[i] = 0;
    }
    if (n < cfg->success_rate_minimum_hosts && n < cfg->failure_percentage_minimum_hosts)
        return;
    uint64_t min_volume = cfg->success_rate_request_volume < cfg->failure_percentage_request_volume
                              ? cfg->success_rate_request_volume
                              : cfg->failure_percentage_request_volume;
    size_t nsr = 0, nfp = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].excluded || s[i].total == 0)
            continue;
        /* Counts are read one after the other while workers add: never above 100%. */
        uint64_t ok = s[i].success < s[i].total ? s[i].success : s[i].total;
        double rate = (double)ok * 100.0 / (double)s[i].total;
        if (s[i].total < min_volume)
            continue; /* both families need at least min_volume */
        rate_out[i] = rate;
        if (s[i].total >= cfg->success_rate_request_volume) {
            verdict_out[i] |= IN_SR;
            nsr++;
        }
        if (s[i].total >= cfg->failure_percentage_request_volume) {
            verdict_out[i] |= IN_FP;
            nfp++;
        }
    }
    if (nsr > 0 && nsr >= cfg->success_rate_minimum_hosts) {
        double thr = sr_threshold(rate_out, verdict_out, IN_SR, n, cfg->success_rate_stdev_factor,
                                  mean_out);
        *threshold_out = thr;
        for (size_t i = 0; i < n; i++)
            if ((verdict_out[i] & IN_SR) && rate_out[i] < thr)
                verdict_out[i] |= PT_OUTLIER_VERDICT_SUCCESS_RATE;
    }
    if (nfp > 0 && nfp >= cfg->failure_percentage_minimum_hosts) {
        for (size_t i = 0; i < n; i++)
            if ((verdict_out[i] & IN_FP) &&
                100.0 - rate_out[i] >= (double)cfg->failure_percentage_threshold)
                verdict_out[i] |= PT_OUTLIER_VERDICT_FAILURE_PERCENTAGE;
    }
    for (size_t i = 0; i < n; i++)
        verdict_out[i] &= PT_OUTLIER_VERDICT_SUCCESS_RATE | PT_OUTLIER_VERDICT_FAILURE_PERCENTAGE;
}

/* ---- the detector (main thread) --------------------------------------------------- */

static void set_rate(struct pt_outlier_host *s, int origin, double rate)
{
    uint64_t bits;
    memcpy(&bits, &rate, sizeof(bits));
    atomic_store_explicit(&s->rate_bits[origin], bits, memory_order_relaxed);
}

static double get_rate(const pt_host_t *h, int origin)
{
    const struct pt_outlier_host *s = h != NULL ? h->outlier : NULL;
    if (s == NULL)
        return -1;
    uint64_t bits = atomic_load_explicit(&s->rate_bits[origin], memory_order_relaxed);
    double rate;
    memcpy(&rate, &bits, sizeof(rate));
    return rate;
}

double pt_outlier_success_rate(const pt_host_t *h)
{
    return get_rate(h, 0);
}

double pt_outlier_local_origin_success_rate(const pt_host_t *h)
{
    return get_rate(h, 1);
}

static int is_ejected(const struct pt_outlier_host *s)
{
    return (atomic_load(&s->host->health) & PT_HOST_FAILED_OUTLIER_CHECK) != 0;
}

/* Gauges owned by the main thread: ejections_active, and the cluster's membership_healthy
 * (which counts hosts with no health bit at all). */
static void update_gauges(od_cluster_t *dc)
{
    pt_stat_set(dc->cfg->stats.ejections_active, dc->ejected);
}

/* Arms the expiry timer for the earliest end of an ejection in the cluster. */
static void arm_expiry(od_cluster_t *dc, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (unsigned i = 0; i < dc->c->nhosts; i++) {
        struct pt_outlier_host *s = dc->c->hosts[i]->outlier;
        if (s != NULL && s->dc == dc && is_ejected(s) && s->uneject_at_ms < next)
            next = s->uneject_at_ms;
    }
    ev_timer_stop(dc->d->loop, &dc->expiry);
    if (next == UINT64_MAX)
        return;
    /* libev may wake a hair early by our millisecond clock: the callback re-arms. */
    double after = next > now ? (double)(next - now) / 1000.0 : 0.0;
    if (after < 0.001)
        after = 0.001;
    ev_timer_set(&dc->expiry, after, 0.);
    ev_timer_start(dc->d->loop, &dc->expiry);
}

/* ---- the event log ---------------------------------------------------------------- */

/* What a success-rate or failure-percentage ejection was decided on (-1: not known). */
typedef struct {
    double host_rate, cluster_mean, threshold;
} eject_detail_t;

static const char *const event_type_names[PT_OUTLIER_NTYPES] = {
    [PT_OUTLIER_CONSECUTIVE_5XX] = "CONSECUTIVE_5XX",
    [PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] = "CONSECUTIVE_GATEWAY_FAILURE",
    [PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] = "CONSECUTIVE_LOCAL_ORIGIN_FAILURE",
    [PT_OUTLIER_SUCCESS_RATE] = "SUCCESS_RATE",
    [PT_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN] = "SUCCESS_RATE_LOCAL_ORIGIN",
    [PT_OUTLIER_FAILURE_PERCENTAGE] = "FAILURE_PERCENTAGE",
    [PT_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] = "FAILURE_PERCENTAGE_LOCAL_ORIGIN",
};

/* One line of Envoy's outlier event log: an OutlierDetectionEvent in proto JSON with every
 * primitive field printed (as Envoy writes it), secs_since_last_action only once the host had
 * an earlier action. An eject decided by success rate or failure percentage says on what. */
static void log_event(const od_cluster_t *dc, const struct pt_outlier_host *s, int eject,
                      pt_outlier_type_t type, int enforced, const eject_detail_t *detail,
                      uint64_t now)
{
    FILE *f = dc->d != NULL ? dc->d->event_log : NULL;
    if (f == NULL)
        return;
    char ts[32];
    pt_time_rfc3339_now(ts);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:b}", "type",
                           event_type_names[eject ? type : PT_OUTLIER_CONSECUTIVE_5XX],
                           "timestamp", ts, "cluster_name", dc->c->name, "upstream_url",
                           s->host->address_str, "action", eject ? "EJECT" : "UNEJECT",
                           "num_ejections", (json_int_t)s->num_ejections, "enforced",
                           eject ? enforced : 0);
    if (ev == NULL)
        return;
    /* Since the last action of the other kind: an ejection counts from the last return, a
     * return from its ejection. */
    uint64_t last = eject ? (s->was_unejected ? s->unejected_at_ms : 0) : s->ejected_at_ms;
    if (last != 0 && now >= last)
        json_object_set_new(ev, "secs_since_last_action", json_integer((json_int_t)((now - last) / 1000)));
    if (eject) {
        json_t *body = json_object();
        if (detail != NULL && (type == PT_OUTLIER_SUCCESS_RATE ||
                               type == PT_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN)) {
            json_object_set_new(body, "host_success_rate",
                                json_integer((json_int_t)detail->host_rate));
            json_object_set_new(body, "cluster_average_success_rate",
                                json_integer((json_int_t)detail->cluster_mean));
            json_object_set_new(body, "cluster_success_rate_ejection_threshold",
                                json_integer((json_int_t)detail->threshold));
            json_object_set_new(ev, "eject_success_rate_event", body);
        } else if (detail != NULL) {
            json_object_set_new(body, "host_success_rate",
                                json_integer((json_int_t)detail->host_rate));
            json_object_set_new(ev, "eject_failure_percentage_event", body);
        } else {
            json_object_set_new(ev, "eject_consecutive_event", body);
        }
    }
    char *line = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (line == NULL)
        return;
    fprintf(f, "%s\n", line);
    fflush(f);
    free(line);
}

int pt_outlier_set_event_log(pt_outlier_detector_t *d, const char *path)
{
    if (d == NULL)
        return 0;
    if (d->event_log != NULL) {
        fclose(d->event_log);
        d->event_log = NULL;
    }
    if (path == NULL || path[0] == '\0')
        return 0;
    d->event_log = fopen(path, "ae");
    if (d->event_log == NULL)
        return -errno;
    return 0;
}

static void uneject(struct pt_outlier_host *s, uint64_t now)
{
    od_cluster_t *dc = s->dc;
    pt_host_health_update(s->host, 0, PT_HOST_FAILED_OUTLIER_CHECK);
    if (dc->ejected > 0)
        dc->ejected--;
    /* A fresh start: counters close to their threshold must not re-eject on a few errors. */
    for (int k = 0; k < 3; k++)
        atomic_store_explicit(&s->consecutive[k], 0, memory_order_relaxed);
    log_event(dc, s, 0, PT_OUTLIER_CONSECUTIVE_5XX, 0, NULL, now);
    s->unejected_at_ms = now;
    s->was_unejected = 1;
    update_gauges(dc);
    pt_info("outlier_detection: cluster '%s': host %s is back after %llums", dc->c->name,
            s->host->address_str, (unsigned long long)(now - s->ejected_at_ms));
}

/* Envoy's ejectHost: max_ejection_percent, then the type's enforcement, then the ejection
 * for min(base * times_ejected, max) + jitter. */
static void eject(struct pt_outlier_host *s, pt_outlier_type_t type, const eject_detail_t *detail,
                  uint64_t now)
{
    od_cluster_t *dc = s->dc;
    const pt_outlier_config_t *o = dc->cfg;
    const pt_outlier_stats_t *st = &o->stats;
    if (!pt_outlier_may_eject(dc->ejected, dc->c->nhosts, o->max_ejection_percent,
                              o->always_eject_one_host)) {
        pt_stat_inc(st->ejections_overflow);
        pt_debug("outlier_detection: cluster '%s': host %s is an outlier (%s) but "
                 "max_ejection_percent %u is reached", dc->c->name, s->host->address_str,
                 type_names[type], o->max_ejection_percent);
        return;
    }
    if (type == PT_OUTLIER_CONSECUTIVE_5XX || type == PT_OUTLIER_SUCCESS_RATE)
        pt_stat_inc(st->ejections_total);
    if (!pt_outlier_enforce(o->enforcing[type])) {
        pt_debug("outlier_detection: cluster '%s': host %s is an outlier (%s), not enforced",
                 dc->c->name, s->host->address_str, type_names[type]);
        log_event(dc, s, 1, type, 0, detail, now);
        return;
    }
    dc->ejected++;
    pt_stat_inc(st->ejections_enforced_total);
    pt_stat_inc(st->ejections_enforced[type]);
    s->num_ejections++;
    s->ejected_at_ms = now;
    s->times_ejected = pt_outlier_next_times_ejected(o, s->times_ejected);
    uint64_t jitter = o->max_ejection_time_jitter_ms
                          ? pt_random_below(o->max_ejection_time_jitter_ms + 1)
                          : 0;
    uint64_t ms = pt_outlier_ejection_time_ms(o, s->times_ejected, jitter);
    s->uneject_at_ms = now + ms;
    pt_host_health_update(s->host, PT_HOST_FAILED_OUTLIER_CHECK, 0);
    log_event(dc, s, 1, type, 1, detail, now);
    update_gauges(dc);
    arm_expiry(dc, now);
    pt_info("outlier_detection: cluster '%s': ejected host %s (%s), ejection %u, for %llums",
            dc->c->name, s->host->address_str, type_names[type], s->num_ejections,
            (unsigned long long)ms);
}

/* A consecutive-failure event (Envoy's onConsecutiveErrorWorker). */
static void on_consecutive(struct pt_outlier_host *s, pt_outlier_type_t type, uint64_t now)
{
    if (is_ejected(s))
        return; /* already out: the counter stays past its threshold until the host is back */
    const pt_outlier_stats_t *st = &s->dc->cfg->stats;
    pt_stat_inc(st->ejections_detected[type]);
    eject(s, type, NULL, now);
    if (type == PT_OUTLIER_CONSECUTIVE_5XX)
        pt_stat_inc(st->ejections_consecutive_5xx);
    /* Detect the next run of failures even without a success in between. */
    atomic_store_explicit(&s->consecutive[type], 0, memory_order_relaxed);
}

static void handle_pending(struct pt_outlier_host *s, uint64_t now)
{
    uint32_t bits = atomic_exchange(&s->pending, 0);
    if (s->dc == NULL)
        return;
    /* Gateway before 5xx: the order a worker sees them in for one response (Envoy). */
    static const pt_outlier_type_t order[] = {PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
                                              PT_OUTLIER_CONSECUTIVE_5XX,
                                              PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (bits & EV_BIT(order[i]))
            on_consecutive(s, order[i], now);
}

void pt_outlier_detector_run_events(pt_outlier_detector_t *d, uint64_t now_ms)
{
    if (d == NULL)
        return;
    struct pt_outlier_host *list = atomic_exchange_explicit(&d->events, NULL, memory_order_acquire);
    /* The stack is newest first: reverse it to handle hosts in the order they were queued. */
    struct pt_outlier_host *fifo = NULL;
    while (list != NULL) {
        struct pt_outlier_host *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo != NULL) {
        struct pt_outlier_host *s = fifo, *next = s->next;
        /* Unqueue before reading the bits: a bit set after this re-queues the host. */
        atomic_store(&s->queued, 0);
        handle_pending(s, now_ms); /* a host no longer watched (s->dc NULL) is dropped */
        pt_host_unref(s->host);    /* the queue's reference; may free s */
        fifo = next;
    }
}

static void on_wakeup(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    pt_outlier_detector_run_events(w->data, pt_now_ms());
}

static void cluster_expiry(od_cluster_t *dc, uint64_t now)
{
    for (unsigned i = 0; i < dc->c->nhosts; i++) {
        struct pt_outlier_host *s = dc->c->hosts[i]->outlier;
        if (s != NULL && s->dc == dc && is_ejected(s) && s->uneject_at_ms <= now)
            uneject(s, now);
    }
    arm_expiry(dc, now);
}

void pt_outlier_detector_run_expiry(pt_outlier_detector_t *d, uint64_t now_ms)
{
    if (d == NULL)
        return;
    for (unsigned i = 0; i < d->nclusters; i++)
        cluster_expiry(d->clusters[i], now_ms);
}

static void on_expiry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    cluster_expiry(t->data, pt_now_ms());
}

/* Runs one family's verdicts over one origin of a cluster. */
static void apply_verdicts(od_cluster_t *dc, unsigned verdict_bit, pt_outlier_type_t type,
                           double mean, double threshold, uint64_t now)
{
    pt_cluster_t *c = dc->c;
    for (unsigned i = 0; i < c->nhosts; i++) {
        struct pt_outlier_host *s = c->hosts[i]->outlier;
        if (s == NULL || s->dc != dc || !(dc->verdicts[i] & verdict_bit))
            continue;
        pt_stat_inc(dc->cfg->stats.ejections_detected[type]);
        if (verdict_bit == PT_OUTLIER_VERDICT_SUCCESS_RATE)
            pt_stat_inc(dc->cfg->stats.ejections_success_rate);
        /* Ejected by the other family in this sweep: detected, nothing more to do. */
        eject_detail_t detail = {dc->rates[i], mean, threshold};
        if (!is_ejected(s))
            eject(s, type, &detail, now);
    }
}

static void cluster_interval(od_cluster_t *dc, uint64_t now)
{
    pt_cluster_t *c = dc->c;
    const pt_outlier_config_t *o = dc->cfg;
    cluster_expiry(dc, now);
    for (int origin = 0; origin < 2; origin++) {
        for (unsigned i = 0; i < c->nhosts; i++) {
            struct pt_outlier_host *s = c->hosts[i]->outlier;
            pt_outlier_sample_t *smp = &dc->samples[i];
            memset(smp, 0, sizeof(*smp));
            if (s == NULL || s->dc != dc) {
                smp->excluded = 1;
                continue;
            }
            uint64_t total = atomic_load_explicit(&s->total[origin], memory_order_relaxed);
            uint64_t success = atomic_load_explicit(&s->success[origin], memory_order_relaxed);
            smp->total = total - s->prev_total[origin];
            smp->success = success - s->prev_success[origin];
            s->prev_total[origin] = total;
            s->prev_success[origin] = success;
            smp->excluded = is_ejected(s);
        }
        double threshold, mean;
        pt_outlier_analyze(o, dc->samples, c->nhosts, dc->rates, dc->verdicts, &threshold,
                           &mean);
        for (unsigned i = 0; i < c->nhosts; i++) {
            struct pt_outlier_host *s = c->hosts[i]->outlier;
            if (s != NULL && s->dc == dc)
                set_rate(s, origin, dc->rates[i]);
        }
        apply_verdicts(dc, PT_OUTLIER_VERDICT_SUCCESS_RATE,
                       origin ? PT_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN : PT_OUTLIER_SUCCESS_RATE,
                       mean, threshold, now);
        apply_verdicts(dc, PT_OUTLIER_VERDICT_FAILURE_PERCENTAGE,
                       origin ? PT_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN
                              : PT_OUTLIER_FAILURE_PERCENTAGE,
                       mean, threshold, now);
    }
    /* A host healthy for a whole interval since it came back: one less time ejected. */
    for (unsigned i = 0; i < c->nhosts; i++) {
        struct pt_outlier_host *s = c->hosts[i]->outlier;
        if (s == NULL || s->dc != dc || is_ejected(s) || !s->was_unejected)
            continue;
        if (now - s->unejected_at_ms >= o->interval_ms && s->times_ejected > 0)
            s->times_ejected--;
    }
}

void pt_outlier_detector_run_interval(pt_outlier_detector_t *d, uint64_t now_ms)
{
    if (d == NULL)
        return;
    for (unsigned i = 0; i < d->nclusters; i++)
        cluster_interval(d->clusters[i], now_ms);
}

static void on_interval(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    cluster_interval(t->data, pt_now_ms());
}

void pt_outlier_health_check_passed(pt_host_t *h)
{
    struct pt_outlier_host *s = h != NULL ? h->outlier : NULL;
    if (s == NULL || s->dc == NULL || !s->dc->cfg->successful_active_health_check_uneject_host)
        return;
    uint32_t health = atomic_load(&h->health);
    if (!(health & PT_HOST_FAILED_OUTLIER_CHECK) || (health & PT_HOST_FAILED_ACTIVE_HC))
        return;
    uint64_t now = pt_now_ms();
    uneject(s, now);
    arm_expiry(s->dc, now);
}

int pt_outlier_host_info(const pt_host_t *h, pt_outlier_host_info_t *out)
{
    const struct pt_outlier_host *s = h != NULL ? h->outlier : NULL;
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return -1;
    out->ejected = is_ejected(s);
    out->num_ejections = s->num_ejections;
    out->times_ejected = s->times_ejected;
    out->ejected_at_ms = s->ejected_at_ms;
    out->uneject_at_ms = s->uneject_at_ms;
    out->consecutive_5xx = atomic_load(&s->consecutive[PT_OUTLIER_CONSECUTIVE_5XX]);
    out->consecutive_gateway_failure =
        atomic_load(&s->consecutive[PT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE]);
    out->consecutive_local_origin_failure =
        atomic_load(&s->consecutive[PT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE]);
    return 0;
}

/* ---- following views ------------------------------------------------------------- */

pt_outlier_detector_t *pt_outlier_start(pt_worker_t *main_worker)
{
    pt_outlier_detector_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        pt_error("outlier_detection: out of memory, detection is off");
        return NULL;
    }
    d->loop = main_worker->loop;
    atomic_init(&d->events, NULL);
    ev_async_init(&d->wakeup, on_wakeup);
    d->wakeup.data = d;
    ev_async_start(d->loop, &d->wakeup);
    return d;
}

static void set_unknown_rates(struct pt_outlier_host *s)
{
    set_rate(s, 0, -1.0);
    set_rate(s, 1, -1.0);
}

/* Takes back an ejection no detector accounts for: the host is usable, and its consecutive
 * counts (left past their threshold while it was out) start over, as at a return. */
static void lift(struct pt_outlier_host *s)
{
    pt_host_health_update(s->host, 0, PT_HOST_FAILED_OUTLIER_CHECK);
    for (int k = 0; k < 3; k++)
        atomic_store_explicit(&s->consecutive[k], 0, memory_order_relaxed);
}

/* The host is no longer listed by the version dc watches. As in Envoy, a removed host's
 * ejection stops counting toward ejections_active and max_ejection_percent at once; its bit
 * stays for the older versions that still list it (a request that pinned one does not go
 * back to it), and it starts afresh should it be listed again (adopt). */
static void forget(od_cluster_t *dc, struct pt_outlier_host *s)
{
    if (is_ejected(s) && dc->ejected > 0)
        dc->ejected--;
    s->dc = NULL;
    set_unknown_rates(s);
}

/* A host new to dc starts as a host joining a cluster does in Envoy: no ejection history,
 * its first interval counting from now. An ejection it still carries (it was ejected when
 * it left, and its object lived on) belongs to no detector any more and is lifted.
 * Consecutive counts and pending events stay: results reported through this version
 * before it was registered must not be lost. */
static void adopt(od_cluster_t *dc, struct pt_outlier_host *s)
{
    s->dc = dc;
    for (int k = 0; k < 2; k++) {
        s->prev_total[k] = atomic_load(&s->total[k]);
        s->prev_success[k] = atomic_load(&s->success[k]);
    }
    s->times_ejected = 0;
    s->num_ejections = 0;
    s->ejected_at_ms = s->uneject_at_ms = s->unejected_at_ms = 0;
    s->was_unejected = 0;
    set_unknown_rates(s);
    if (is_ejected(s))
        lift(s);
}

/* A host that stays under a changed config: workers raise an event when a consecutive
 * count *equals* its threshold, so a count already at or past a lowered threshold would
 * never trigger; it is raised here instead. */
static void recheck_thresholds(struct pt_outlier_host *s, const pt_outlier_config_t *was,
                               const pt_outlier_config_t *now)
{
    if (is_ejected(s))
        return; /* its counts start over when it is back */
    const uint32_t before[3] = {
        was->consecutive_5xx, was->consecutive_gateway_failure,
        was->split_external_local_origin_errors ? was->consecutive_local_origin_failure : 0};
    const uint32_t after[3] = {
        now->consecutive_5xx, now->consecutive_gateway_failure,
        now->split_external_local_origin_errors ? now->consecutive_local_origin_failure : 0};
    for (int k = 0; k < 3; k++)
        if (after[k] != before[k] && after[k] > 0 &&
            atomic_load_explicit(&s->consecutive[k], memory_order_relaxed) >= after[k])
            atomic_fetch_or(&s->pending, EV_BIT(k));
}

/* Brings dc (watching an earlier version of its cluster, or none yet when dc->c is NULL)
 * to version c: hosts that stay keep their state and ejection, removed ones are forgotten,
 * new ones adopted. -1 when out of memory (dc then keeps its version). */
static int cluster_move_to(od_cluster_t *dc, pt_cluster_t *c, uint64_t now)
{
    pt_outlier_detector_t *d = dc->d;
    size_t nh = c->nhosts ? c->nhosts : 1;
    pt_outlier_sample_t *samples = calloc(nh, sizeof(*samples));
    double *rates = calloc(nh, sizeof(*rates));
    unsigned *verdicts = calloc(nh, sizeof(*verdicts));
    if (samples == NULL || rates == NULL || verdicts == NULL) {
        free(samples);
        free(rates);
        free(verdicts);
        return -1;
    }
    pt_cluster_t *old = dc->c;
    const pt_outlier_config_t *old_cfg = dc->cfg;
    /* Removed hosts: listed by the old version, not marked by the new one. */
    uint64_t epoch = ++d->epoch;
    for (unsigned i = 0; i < c->nhosts; i++)
        if (c->hosts[i]->outlier != NULL)
            c->hosts[i]->outlier->mark = epoch;
    for (unsigned i = 0; old != NULL && i < old->nhosts; i++) {
        struct pt_outlier_host *s = old->hosts[i]->outlier;
        if (s != NULL && s->dc == dc && s->mark != epoch)
            forget(dc, s);
    }
    free(dc->samples);
    free(dc->rates);
    free(dc->verdicts);
    dc->samples = samples;
    dc->rates = rates;
    dc->verdicts = verdicts;
    dc->c = pt_cluster_ref(c);
    dc->cfg = c->outlier;
    /* Registered before its hosts are scanned for pending events (see raise_event): a
     * report through this version either finds the detector or is found here. */
    atomic_store(&dc->cfg->detector, d);
    for (unsigned i = 0; i < c->nhosts; i++) {
        struct pt_outlier_host *s = c->hosts[i]->outlier;
        if (s == NULL)
            continue; /* out of memory at prepare: not watched */
        if (s->dc != dc)
            adopt(dc, s);
        else if (old_cfg != NULL)
            recheck_thresholds(s, old_cfg, dc->cfg);
        if (atomic_load(&s->pending) != 0)
            queue_host(d, s);
    }
    double iv = (double)dc->cfg->interval_ms / 1000.0;
    if (old_cfg == NULL) {
        ev_timer_set(&dc->interval, iv, iv);
        ev_timer_start(d->loop, &dc->interval);
    } else if (old_cfg->interval_ms != dc->cfg->interval_ms) {
        ev_timer_stop(d->loop, &dc->interval);
        ev_timer_set(&dc->interval, iv, iv);
        ev_timer_start(d->loop, &dc->interval);
    }
    pt_cluster_unref(old);
    update_gauges(dc);
    arm_expiry(dc, now);
    return 0;
}

static od_cluster_t *cluster_new(pt_outlier_detector_t *d)
{
    if (d->nclusters == d->cap) {
        unsigned cap = d->cap ? d->cap * 2 : 8;
        od_cluster_t **n = realloc(d->clusters, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        d->clusters = n;
        d->cap = cap;
    }
    od_cluster_t *dc = calloc(1, sizeof(*dc));
    if (dc == NULL)
        return NULL;
    dc->d = d;
    ev_timer_init(&dc->interval, on_interval, 1., 1.);
    dc->interval.data = dc;
    ev_timer_init(&dc->expiry, on_expiry, 1., 0.);
    dc->expiry.data = dc;
    d->clusters[d->nclusters++] = dc;
    return dc;
}

static void cluster_free(od_cluster_t *dc)
{
    ev_timer_stop(dc->d->loop, &dc->interval);
    ev_timer_stop(dc->d->loop, &dc->expiry);
    free(dc->samples);
    free(dc->rates);
    free(dc->verdicts);
    pt_cluster_unref(dc->c);
    free(dc);
}

/* dc's cluster left the view (still NULL), or its version `still` has no outlier_detection
 * any more: the detector forgets it. The hosts `still` lists are usable again (Envoy builds
 * such a cluster without a detector: nothing ejects them); a removed cluster's hosts keep
 * their bit for the requests that still use an older version. */
static void cluster_drop(od_cluster_t *dc, pt_cluster_t *still)
{
    pt_cluster_t *c = dc->c;
    for (unsigned i = 0; i < c->nhosts; i++) {
        struct pt_outlier_host *s = c->hosts[i]->outlier;
        if (s != NULL && s->dc == dc)
            forget(dc, s);
    }
    pt_stat_set(dc->cfg->stats.ejections_active, 0);
    if (still != NULL) {
        for (unsigned i = 0; i < still->nhosts; i++) {
            struct pt_outlier_host *s = still->hosts[i]->outlier;
            if (s != NULL && is_ejected(s))
                lift(s);
        }
    }
    pt_info("outlier_detection: cluster '%s': %s", c->name,
            still != NULL ? "no longer configured, its hosts are back" : "removed");
    cluster_free(dc);
}

/* Open addressing by cluster state, built per update (the detector's clusters change only
 * there): finding a cluster's detector state stays O(1) with many clusters. */
typedef struct od_index {
    od_cluster_t **slots; /* NULL when out of memory: linear search */
    unsigned mask;
} od_index_t;

static unsigned state_hash(const pt_cluster_state_t *st, unsigned mask)
{
    uint64_t x = (uint64_t)(uintptr_t)st;
    x ^= x >> 29;
    x *= 0x9e3779b97f4a7c15ull;
    return (unsigned)(x >> 32) & mask;
}

static void index_put(od_index_t *ix, od_cluster_t *dc)
{
    if (ix->slots == NULL)
        return;
    unsigned i = state_hash(dc->c->state, ix->mask);
    while (ix->slots[i] != NULL)
        i = (i + 1) & ix->mask;
    ix->slots[i] = dc;
}

static od_cluster_t *index_find(const od_index_t *ix, const pt_outlier_detector_t *d,
                                const pt_cluster_state_t *st)
{
    if (ix->slots == NULL) {
        for (unsigned i = 0; i < d->nclusters; i++)
            if (d->clusters[i]->c->state == st)
                return d->clusters[i];
        return NULL;
    }
    for (unsigned i = state_hash(st, ix->mask); ix->slots[i] != NULL; i = (i + 1) & ix->mask)
        if (ix->slots[i]->c->state == st)
            return ix->slots[i];
    return NULL;
}

int pt_outlier_update(pt_outlier_detector_t *d, const pt_view_t *view)
{
    if (d == NULL)
        return 0; /* detection is off (the start failed, and said so) */
    uint64_t now = pt_now_ms();
    int rc = 0;
    /* Clusters gone, or no longer with outlier_detection. */
    for (unsigned i = 0; i < d->nclusters;) {
        od_cluster_t *dc = d->clusters[i];
        pt_cluster_t *c = pt_view_find_cluster(view, dc->c->name);
        if (c != NULL && c->state != dc->c->state)
            c = NULL; /* another cluster by that name: this one is gone */
        if (c != NULL && c->outlier != NULL) {
            i++;
            continue;
        }
        cluster_drop(dc, c);
        d->clusters[i] = d->clusters[--d->nclusters];
    }
    /* Room for every cluster of the view at half load. */
    od_index_t ix = {0};
    unsigned cap = 16;
    while (cap < 2 * (d->nclusters + view->nclusters))
        cap *= 2;
    if ((ix.slots = calloc(cap, sizeof(*ix.slots))) != NULL)
        ix.mask = cap - 1;
    for (unsigned i = 0; i < d->nclusters; i++)
        index_put(&ix, d->clusters[i]);
    /* New and changed ones: work only for what changed. */
    for (unsigned i = 0; i < view->nclusters; i++) {
        pt_cluster_t *c = view->clusters[i];
        if (c->outlier == NULL)
            continue;
        od_cluster_t *dc = index_find(&ix, d, c->state);
        if (dc != NULL && dc->c == c)
            continue;
        int fresh = dc == NULL;
        if (fresh && (dc = cluster_new(d)) == NULL) {
            rc = -1;
            continue;
        }
        if (cluster_move_to(dc, c, now) != 0) {
            rc = -1;
            if (fresh) {
                d->nclusters--; /* the last one: cluster_new appended it */
                free(dc);
            }
            continue;
        }
        if (fresh) {
            index_put(&ix, dc);
            pt_info("outlier_detection: cluster '%s': watching %u host%s", c->name, c->nhosts,
                    c->nhosts == 1 ? "" : "s");
        }
    }
    free(ix.slots);
    if (rc != 0)
        pt_error("outlier_detection: out of memory: some clusters are not watched");
    /* Thresholds reached before a version was registered, and rechecked ones. */
    pt_outlier_detector_run_events(d, now);
    return rc;
}

void pt_outlier_stop(pt_outlier_detector_t *d)
{
    if (d == NULL)
        return;
    for (unsigned i = 0; i < d->nclusters; i++) {
        od_cluster_t *dc = d->clusters[i];
        atomic_store(&dc->cfg->detector, NULL);
        for (unsigned j = 0; j < dc->c->nhosts; j++) {
            struct pt_outlier_host *s = dc->c->hosts[j]->outlier;
            if (s != NULL && s->dc == dc)
                s->dc = NULL;
        }
        cluster_free(dc);
    }
    free(d->clusters);
    if (d->event_log != NULL)
        fclose(d->event_log);
    /* Whatever is still queued is dropped (its hosts are no longer watched). */
    struct pt_outlier_host *list = atomic_exchange(&d->events, NULL);
    while (list != NULL) {
        struct pt_outlier_host *next = list->next;
        atomic_store(&list->queued, 0);
        pt_host_unref(list->host);
        list = next;
    }
    ev_async_stop(d->loop, &d->wakeup);
    free(d);
}
