/* Unit tests for histograms: the bucket layout (proxy/histogram.c) and its math (quantiles
 * within one bucket of the truth, Prometheus `le` counts, number formatting), the
 * per-thread storage and merge in proxy/stats.c (threads recording while the merge reads,
 * intervals and cumulative state, memory released with the stat), the bucket settings
 * (stats_config.histogram_bucket_settings: chosen by the first matching rule, bad input
 * refused naming the field), and the admin's three renderings of a histogram.
 *
 * The stats registry is process-global: every test uses its own scope or names. */
#include "proxy/admin.h"
#include "proxy/buf.h"
#include "proxy/config.h"
#include "proxy/histogram.h"
#include "proxy/stats.h"
#include "proxy/stats_tags.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"
#include "pt_test_stats.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* counts[] of values[0..n). */
static void fill(uint64_t *counts, const uint64_t *values, size_t n)
{
    memset(counts, 0, PT_HIST_BUCKETS * sizeof(*counts));
    for (size_t i = 0; i < n; i++)
        counts[pt_hist_bucket(values[i])]++;
}

static char *take(pt_buf_t *b)
{
    char *s = malloc(pt_buf_len(b) + 1);
    size_t n = pt_buf_copyout(b, 0, s, pt_buf_len(b));
    s[n] = '\0';
    pt_buf_dispose(b);
    return s;
}

/* ---- the layout ------------------------------------------------------------------ */

/* Every value has one bucket that holds it; buckets tile the integers without gaps or
 * overlaps, in order; a bucket is at most 1/16 of its lower bound wide, 1 below 32. */
static void test_layout(void)
{
    for (unsigned b = 0; b < PT_HIST_BUCKETS; b++) {
        uint64_t lo = pt_hist_bucket_lower(b), hi = pt_hist_bucket_upper(b);
        PT_CHECK(lo <= hi);
        PT_CHECK_INT(pt_hist_bucket(lo), b);
        PT_CHECK_INT(pt_hist_bucket(hi), b);
        if (b + 1 < PT_HIST_BUCKETS)
            PT_CHECK(pt_hist_bucket_lower(b + 1) == hi + 1);
        if (lo < 32)
            PT_CHECK(hi == lo);
        else
            PT_CHECK((hi - lo + 1) * 16 <= lo);
    }
    PT_CHECK_INT(pt_hist_bucket(0), 0);
    PT_CHECK_INT(pt_hist_bucket(15), 15);
    PT_CHECK_INT(pt_hist_bucket(16), 16);
    PT_CHECK_INT(pt_hist_bucket(31), 31);
    PT_CHECK_INT(pt_hist_bucket(32), 32);
    PT_CHECK_INT(pt_hist_bucket(33), 32);
    PT_CHECK(pt_hist_bucket_upper(PT_HIST_BUCKETS - 1) == PT_HIST_MAX);
    /* Past the top: the last bucket. */
    PT_CHECK_INT(pt_hist_bucket(PT_HIST_MAX + 1), PT_HIST_BUCKETS - 1);
    PT_CHECK_INT(pt_hist_bucket(UINT64_MAX), PT_HIST_BUCKETS - 1);
    for (int i = 0; i < 100000; i++) {
        uint64_t v = next_rand() >> (next_rand() % 64);
        unsigned b = pt_hist_bucket(v);
        if (v <= PT_HIST_MAX)
            PT_CHECK(pt_hist_bucket_lower(b) <= v && v <= pt_hist_bucket_upper(b));
    }
}

/* ---- quantiles ------------------------------------------------------------------- */

/* The estimate for q is within the width of the bucket that holds the true value of rank
 * ceil(q * n) (q = 0: the smallest). */
static int quantiles_close(const uint64_t *values, size_t n, const char *what)
{
    uint64_t *sorted = malloc(n * sizeof(*sorted));
    memcpy(sorted, values, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_u64);
    static uint64_t counts[PT_HIST_BUCKETS];
    fill(counts, values, n);
    double est[PT_HIST_NQ];
    pt_hist_quantiles_of(counts, n, pt_hist_quantiles, PT_HIST_NQ, est);
    int ok = 1;
    for (int i = 0; i < PT_HIST_NQ; i++) {
        double rank = ceil(pt_hist_quantiles[i] * (double)n);
        size_t k = rank < 1 ? 0 : (size_t)rank - 1;
        uint64_t truth = sorted[k];
        unsigned b = pt_hist_bucket(truth);
        double width = (double)(pt_hist_bucket_upper(b) - pt_hist_bucket_lower(b) + 1);
        if (!(fabs(est[i] - (double)truth) <= width)) {
            fprintf(stderr, "  %s: P%s estimate %g, true %llu (bucket width %g)\n", what,
                    pt_hist_quantile_names[i], est[i], (unsigned long long)truth, width);
            ok = 0;
        }
    }
    free(sorted);
    return ok;
}

static void test_quantiles_within_a_bucket(void)
{
    enum { N = 20000 };
    static uint64_t v[N];
    /* Uniform small, uniform wide, log-uniform latencies, bimodal (10 and 100 ms with
     * jitter), a constant, a few values, one value, huge values. */
    for (size_t i = 0; i < N; i++)
        v[i] = next_rand() % 20;
    PT_CHECK(quantiles_close(v, N, "uniform 0..19"));
    for (size_t i = 0; i < N; i++)
        v[i] = next_rand() % 100000;
    PT_CHECK(quantiles_close(v, N, "uniform 0..99999"));
    for (size_t i = 0; i < N; i++)
        v[i] = (uint64_t)exp((double)(next_rand() % 1000000) / 1000000.0 * log(60000.0));
    PT_CHECK(quantiles_close(v, N, "log-uniform 1..60000"));
    for (size_t i = 0; i < N; i++)
        v[i] = (i % 2 ? 100 : 10) + next_rand() % 3;
    PT_CHECK(quantiles_close(v, N, "bimodal 10/100"));
    for (size_t i = 0; i < N; i++)
        v[i] = 250;
    PT_CHECK(quantiles_close(v, N, "constant 250"));
    uint64_t few[] = {3, 700, 41, 41, 90000};
    PT_CHECK(quantiles_close(few, 5, "five values"));
    uint64_t one[] = {12345};
    PT_CHECK(quantiles_close(one, 1, "one value"));
    for (size_t i = 0; i < N; i++)
        v[i] = (UINT64_C(1) << 30) + next_rand() % (UINT64_C(1) << 33);
    PT_CHECK(quantiles_close(v, N, "huge"));

    /* Exact below 32: the estimates are the values. */
    uint64_t exact[] = {1, 2, 3, 4};
    static uint64_t counts[PT_HIST_BUCKETS];
    fill(counts, exact, 4);
    double q[PT_HIST_NQ];
    pt_hist_quantiles_of(counts, 4, pt_hist_quantiles, PT_HIST_NQ, q);
    PT_CHECK(q[0] == 1 && q[2] == 2 && q[9] == 4);
    /* Read by chunk: chunks left out of the mask count as empty, whatever they hold. */
    double qm[PT_HIST_NQ];
    counts[PT_HIST_BUCKETS - 1] = 999; /* garbage in the last chunk */
    pt_hist_quantiles_in(counts, 1u, 4, pt_hist_quantiles, PT_HIST_NQ, qm);
    PT_CHECK(memcmp(q, qm, sizeof(q)) == 0);
    /* No values: NaN everywhere (Envoy's "nan"). */
    memset(counts, 0, sizeof(counts));
    pt_hist_quantiles_of(counts, 0, pt_hist_quantiles, PT_HIST_NQ, q);
    for (int i = 0; i < PT_HIST_NQ; i++)
        PT_CHECK(isnan(q[i]));
}

/* Prometheus counts: exact where bounds fall on bucket edges (everything below 32, and the
 * default bounds' 0.5, 1, 5, 10, 25), off by at most the straddled bucket's count
 * elsewhere, never decreasing. */
static void test_count_le(void)
{
    enum { N = 50000 };
    static uint64_t v[N], counts[PT_HIST_BUCKETS];
    for (size_t i = 0; i < N; i++)
        v[i] = (uint64_t)exp((double)(next_rand() % 1000000) / 1000000.0 * log(4000000.0));
    fill(counts, v, N);
    uint64_t prev = 0;
    for (int i = 0; i < PT_HIST_DEFAULT_NBOUNDS; i++) {
        double le = pt_hist_default_bounds[i];
        uint64_t exact = 0;
        for (size_t k = 0; k < N; k++)
            exact += (double)v[k] <= le;
        uint64_t est = pt_hist_count_le(counts, le);
        uint64_t slack = counts[pt_hist_bucket((uint64_t)le)];
        PT_CHECK(est >= prev);
        PT_CHECK(est + slack >= exact && est <= exact + slack);
        if (le < 32)
            PT_CHECK(est == exact);
        prev = est;
    }
    PT_CHECK(pt_hist_count_le(counts, 1e300) == N);
    PT_CHECK(pt_hist_count_le(counts, -1) == 0);
    /* A bucket straddled: 48..49 holds 10 values, half of its integers are <= 48.5. */
    memset(counts, 0, sizeof(counts));
    counts[pt_hist_bucket(48)] = 10;
    PT_CHECK_INT(pt_hist_bucket(48), pt_hist_bucket(49));
    PT_CHECK_INT(pt_hist_count_le(counts, 48.5), 5);
    PT_CHECK_INT(pt_hist_count_le(counts, 49), 10);
    PT_CHECK_INT(pt_hist_count_le(counts, 47.9), 0);
}

static void test_format(void)
{
    char b[48];
    PT_CHECK_STR(pt_hist_fmt_double(NAN, b, sizeof(b)), "nan");
    PT_CHECK_STR(pt_hist_fmt_double(0, b, sizeof(b)), "0");
    PT_CHECK_STR(pt_hist_fmt_double(10, b, sizeof(b)), "10");
    PT_CHECK_STR(pt_hist_fmt_double(10.5, b, sizeof(b)), "10.5");
    PT_CHECK_STR(pt_hist_fmt_double(0.1, b, sizeof(b)), "0.1");
    PT_CHECK_STR(pt_hist_fmt_double(99.9, b, sizeof(b)), "99.9");
    PT_CHECK_STR(pt_hist_fmt_double(3600000, b, sizeof(b)), "3600000");
    PT_CHECK_STR(pt_hist_fmt_double(1.0 / 3, b, sizeof(b)), "0.3333333333333333");
}

/* ---- storage and merge ----------------------------------------------------------- */

/* Values recorded, merged: the interval is what came since the last merge, the cumulative
 * state everything; a merge with nothing new leaves an empty interval (NaN). */
static void test_intervals(void)
{
    PT_CHECK(pt_stats_thread_init() == 0);
    pt_stat_t id = pt_stats_histogram("uhi", NULL, NULL, "rq_time");
    PT_CHECK(id != 0);
    PT_CHECK_INT(pt_stat_family(pt_stats_info(id))->kind, PT_STAT_HISTOGRAM);
    PT_CHECK_INT(pt_stats_histogram("uhi", NULL, NULL, "rq_time"), id);
    pt_hist_summary_t hs;
    PT_CHECK(pt_stats_histogram_summary(id, &hs, NULL) == 0);
    PT_CHECK(!hs.used && hs.count == 0 && isnan(hs.cumulative[0]));
    /* Merged without a value (its merge state is made only by a merge that has values):
     * still nothing, and every Prometheus bucket counts 0. */
    pt_stats_merge_histograms();
    uint64_t le[PT_HIST_DEFAULT_NBOUNDS];
    memset(le, 0xff, sizeof(le));
    PT_CHECK(pt_stats_histogram_summary(id, &hs, le) == 0);
    PT_CHECK(!hs.used && hs.count == 0 && hs.interval_count == 0 && isnan(hs.interval[0]) &&
             isnan(hs.cumulative[PT_HIST_NQ - 1]));
    PT_CHECK_INT(hs.nbounds, PT_HIST_DEFAULT_NBOUNDS);
    PT_CHECK(le[0] == 0 && le[PT_HIST_DEFAULT_NBOUNDS - 1] == 0);
    PT_CHECK_INT(pt_stats_value(id), 0);
    for (int i = 0; i < 100; i++)
        pt_hist_record(id, 10);
    /* Not merged yet: nothing shows. */
    pt_stats_histogram_summary(id, &hs, NULL);
    PT_CHECK(!hs.used);
    pt_stats_merge_histograms();
    pt_stats_histogram_summary(id, &hs, NULL);
    PT_CHECK(hs.used && hs.count == 100 && hs.sum == 1000 && hs.interval_count == 100);
    PT_CHECK(hs.interval[0] == 10 && hs.interval[9] == 10 && hs.cumulative[5] == 10);
    PT_CHECK_INT(pt_stats_value(id), 100);
    for (int i = 0; i < 100; i++)
        pt_hist_record(id, 1000);
    pt_stats_merge_histograms();
    pt_stats_histogram_summary(id, &hs, NULL);
    PT_CHECK(hs.count == 200 && hs.sum == 101000 && hs.interval_count == 100);
    /* The interval saw only the 1000s; all time sees both. */
    PT_CHECK(hs.interval[0] >= 992 && hs.interval[9] <= 1023);
    PT_CHECK(hs.cumulative[0] == 10 && hs.cumulative[9] >= 992);
    pt_stats_merge_histograms();
    pt_stats_histogram_summary(id, &hs, NULL);
    PT_CHECK(hs.used && hs.count == 200 && hs.interval_count == 0);
    for (int i = 0; i < PT_HIST_NQ; i++)
        PT_CHECK(isnan(hs.interval[i]));
    PT_CHECK(hs.cumulative[0] == 10);
    /* A histogram's name asked for as a counter, or a counter's as a histogram: no stat
     * (its slots would be read as the other kind). */
    PT_CHECK_INT(pt_stats_counter("uhi", NULL, NULL, "rq_time"), 0);
    pt_stat_t cnt = pt_stats_counter("uhi", NULL, NULL, "a_counter");
    PT_CHECK(cnt != 0);
    PT_CHECK_INT(pt_stats_histogram("uhi", NULL, NULL, "a_counter"), 0);
    /* Id 0 ("no stat": a histogram that could not be made) records nothing. */
    pt_stat_add(0, 7); /* counters' updates to id 0 land in its slot */
    pt_hist_record(0, 5);
    pt_hist_record_slow(0, 5);
}

typedef struct rec_arg {
    pt_stat_t id;
    unsigned seed, n;
} rec_arg_t;

static void *record_thread(void *p)
{
    rec_arg_t *a = p;
    if (pt_stats_thread_init() != 0)
        return NULL;
    uint64_t x = a->seed;
    for (unsigned i = 0; i < a->n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        pt_hist_record(a->id, (x >> 33) % 5000);
    }
    return NULL;
}

/* Eight threads record while the merge runs again and again: once they are done, the merged
 * counts are exactly the values each thread recorded (regenerated here), bucket by bucket. */
static void test_threads_merge(void)
{
    pt_stat_t id = pt_stats_histogram("uht", "envoy_cluster_name", "merge", "upstream_rq_time");
    PT_CHECK(id != 0);
    enum { T = 8, N = 200000 };
    pthread_t th[T];
    rec_arg_t args[T];
    for (int t = 0; t < T; t++) {
        args[t] = (rec_arg_t){id, 1000u + (unsigned)t, N};
        PT_CHECK(pthread_create(&th[t], NULL, record_thread, &args[t]) == 0);
    }
    for (int i = 0; i < 200; i++)
        pt_stats_merge_histograms();
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    pt_stats_merge_histograms();
    static uint64_t want[PT_HIST_BUCKETS], got[PT_HIST_BUCKETS];
    memset(want, 0, sizeof(want));
    uint64_t sum = 0;
    for (int t = 0; t < T; t++) {
        uint64_t x = args[t].seed;
        for (unsigned i = 0; i < N; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t v = (x >> 33) % 5000;
            want[pt_hist_bucket(v)]++;
            sum += v;
        }
    }
    PT_CHECK(pt_stats_histogram_counts(id, got) == 0);
    PT_CHECK(memcmp(want, got, sizeof(want)) == 0);
    pt_hist_summary_t hs;
    pt_stats_histogram_summary(id, &hs, NULL);
    PT_CHECK(hs.count == (uint64_t)T * N && hs.sum == sum);
    /* The merged quantiles are those of the union of the threads' values. */
    double q[PT_HIST_NQ];
    pt_hist_quantiles_of(want, (uint64_t)T * N, pt_hist_quantiles, PT_HIST_NQ, q);
    for (int i = 0; i < PT_HIST_NQ; i++)
        PT_CHECK(q[i] == hs.cumulative[i]);
    PT_CHECK(fabs(hs.cumulative[2] - 2500) < 2500.0 / 16);
}

/* A cluster's histograms go with its stats: every thread's copy is freed, the ids are reused
 * by stats that start from nothing. */
static void test_release(void)
{
    uint32_t hists0 = pt_stats_histograms_live(), threads0 = pt_stats_histogram_threads();
    pt_stat_t a = pt_stats_histogram("cluster", "envoy_cluster_name", "gone", "upstream_rq_time");
    pt_stat_t b =
        pt_stats_histogram("cluster", "envoy_cluster_name", "gone", "upstream_cx_length_ms");
    PT_CHECK(a != 0 && b != 0);
    PT_CHECK_INT(pt_stats_histograms_live(), hists0 + 2);
    enum { T = 4 };
    pthread_t th[T];
    rec_arg_t args[T];
    for (int t = 0; t < T; t++) {
        args[t] = (rec_arg_t){t % 2 ? a : b, 7u + (unsigned)t, 1000};
        PT_CHECK(pthread_create(&th[t], NULL, record_thread, &args[t]) == 0);
    }
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    pt_hist_record(a, 3);
    PT_CHECK_INT(pt_stats_histogram_threads(), threads0 + T + 1);
    pt_stats_merge_histograms();
    PT_CHECK_INT(pt_stats_value(a), 2001);
    PT_CHECK(pt_stats_release_tagged("cluster", "gone") == 2);
    PT_CHECK_INT(pt_stats_histograms_live(), hists0);
    PT_CHECK_INT(pt_stats_histogram_threads(), threads0);
    pt_stats_trim();
    /* Made again: from nothing, on every thread (this one's slot was cleared). */
    pt_stat_t a2 = pt_stats_histogram("cluster", "envoy_cluster_name", "gone", "upstream_rq_time");
    pt_hist_summary_t hs;
    pt_stats_histogram_summary(a2, &hs, NULL);
    PT_CHECK(!hs.used && hs.count == 0);
    pt_hist_record(a2, 4);
    pt_stats_merge_histograms();
    pt_stats_histogram_summary(a2, &hs, NULL);
    PT_CHECK(hs.count == 1 && hs.sum == 4);
    /* A counter that takes a released histogram's id counts from zero. */
    pt_stats_release_tagged("cluster", "gone");
    pt_stat_t c = pt_stats_counter("cluster", "envoy_cluster_name", "gone", "upstream_rq_total");
    PT_CHECK_INT(pt_stats_value(c), 0);
    pt_stat_inc(c);
    PT_CHECK_INT(pt_stats_value(c), 1);
    pt_stats_release_tagged("cluster", "gone");
}

/* ---- bucket settings ------------------------------------------------------------- */

static pt_cfg_t R;

static pt_boot_t *build(const char *json)
{
    json_t *root = J(json);
    pt_cfg_init(&R, root);
    pt_boot_t *c = pt_test_boot(root, &R);
    json_decref(root);
    return c;
}

#define REJECTS(json, ...)                                                                         \
    do {                                                                                           \
        pt_boot_t *c_ = build(json);                                                               \
        int ok_ = c_ == NULL && errors_are(&R, (const char *const[]){__VA_ARGS__, NULL});          \
        pt_boot_free(c_);                                                                          \
        pt_cfg_dispose(&R);                                                                        \
        PT_CHECK(ok_);                                                                             \
    } while (0)

static void test_bucket_settings(void)
{
    /* The first matching rule gives a histogram its buckets; no match: Envoy's defaults. */
    pt_boot_t *c =
        build("{'stats_config': {'histogram_bucket_settings': ["
              " {'match': {'prefix': 'cluster.fast.'}, 'buckets': [0.1, 0.5, 1, 2.5, 10]},"
              " {'match': {'safe_regex': {'regex': 'cluster\\\\..*\\\\.upstream_rq_time'}},"
              "  'buckets': [1, 10, 100], 'bins': 50},"
              " {'match': {'suffix': 'rq_time'}, 'buckets': ['5', 50]}]},"
              " 'stats_flush_interval': '2s'}");
    if (c == NULL)
        for (size_t i = 0; i < R.nerrors; i++)
            fprintf(stderr, "  %s\n", R.errors[i]);
    pt_cfg_dispose(&R);
    PT_CHECK(c != NULL);
    PT_CHECK_INT(c->config->stats_flush_interval_ms, 2000);
    PT_CHECK_INT(c->config->stats_flush_on_admin, 0);
    pt_hist_summary_t hs;
    pt_stat_t fast =
        pt_stats_histogram("cluster", "envoy_cluster_name", "fast", "upstream_cx_length_ms");
    pt_stats_histogram_summary(fast, &hs, NULL);
    PT_CHECK(hs.nbounds == 5 && hs.bounds[0] == 0.1 && hs.bounds[4] == 10);
    pt_stat_t slow =
        pt_stats_histogram("cluster", "envoy_cluster_name", "slow", "upstream_rq_time");
    pt_stats_histogram_summary(slow, &hs, NULL);
    PT_CHECK(hs.nbounds == 3 && hs.bounds[2] == 100);
    pt_stat_t http =
        pt_stats_histogram("http", "envoy_http_conn_manager_prefix", "in", "downstream_rq_time");
    pt_stats_histogram_summary(http, &hs, NULL);
    PT_CHECK(hs.nbounds == 2 && hs.bounds[0] == 5 && hs.bounds[1] == 50);
    pt_stat_t other =
        pt_stats_histogram("listener", "envoy_listener_address", "x", "downstream_cx_length_ms");
    pt_stats_histogram_summary(other, &hs, NULL);
    PT_CHECK(hs.nbounds == PT_HIST_DEFAULT_NBOUNDS && hs.bounds[18] == 3600000);
    /* The counts at custom bounds. */
    for (int v = 0; v < 20; v++)
        pt_hist_record(slow, (uint64_t)v * 10); /* 0, 10, ..., 190 */
    pt_stats_merge_histograms();
    uint64_t n[3];
    pt_stats_histogram_summary(slow, &hs, n);
    /* 100 shares its bucket (100..103) with nothing: a quarter of it is <= 100, rounded
     * down (the one value within a bucket of the truth, 11). */
    PT_CHECK(n[0] == 1 && n[1] == 2 && n[2] == 10);
    pt_boot_free(c);
    /* The snapshot is gone; histograms made later still follow its rules (the registry
     * owns them), and those made before keep their bounds. */
    pt_stat_t fast2 =
        pt_stats_histogram("cluster", "envoy_cluster_name", "fast", "upstream_rq_time");
    pt_stats_histogram_summary(fast2, &hs, NULL);
    PT_CHECK(hs.nbounds == 5);
    pt_stats_histogram_summary(slow, &hs, NULL);
    PT_CHECK(hs.nbounds == 3);

    /* A config without settings: defaults for histograms made from then on. */
    c = build("{'stats_flush_on_admin': true}");
    pt_cfg_dispose(&R);
    PT_CHECK(c != NULL);
    PT_CHECK_INT(c->config->stats_flush_on_admin, 1);
    pt_stat_t fast3 =
        pt_stats_histogram("cluster", "envoy_cluster_name", "fast", "upstream_cx_connect_ms");
    pt_stats_histogram_summary(fast3, &hs, NULL);
    PT_CHECK(hs.nbounds == PT_HIST_DEFAULT_NBOUNDS);
    pt_boot_free(c);
    pt_stats_release_tagged("cluster", "fast");
    pt_stats_release_tagged("cluster", "slow");
}

static void test_bucket_settings_errors(void)
{
    REJECTS("{'stats_config': {'histogram_bucket_settings': ["
            " {'match': {'prefix': 'a'}, 'buckets': [1, 5, 5, 3]}]}}",
            "stats_config.histogram_bucket_settings[0].buckets[2]: must be greater than the "
            "bucket before it (buckets are increasing, without repeats)",
            "stats_config.histogram_bucket_settings[0].buckets[3]: must be greater than the "
            "bucket before it (buckets are increasing, without repeats)");
    REJECTS("{'stats_config': {'histogram_bucket_settings': ["
            " {'match': {'prefix': 'a'}, 'buckets': []}]}}",
            "stats_config.histogram_bucket_settings[0].buckets: must list at least one bucket");
    REJECTS("{'stats_config': {'histogram_bucket_settings': [{'match': {'prefix': 'a'}}]}}",
            "stats_config.histogram_bucket_settings[0].buckets: must list at least one bucket");
    REJECTS("{'stats_config': {'histogram_bucket_settings': ["
            " {'match': {'exact': 'a'}, 'buckets': [0, -1, 'x', 2]}]}}",
            "stats_config.histogram_bucket_settings[0].buckets[0]: must be greater than 0",
            "stats_config.histogram_bucket_settings[0].buckets[1]: must be greater than 0",
            "stats_config.histogram_bucket_settings[0].buckets[2]: is not a number");
    REJECTS("{'stats_config': {'histogram_bucket_settings': [{'buckets': [1]}]}}",
            "stats_config.histogram_bucket_settings[0].match: is required");
    REJECTS("{'stats_config': {'histogram_bucket_settings': ["
            " {'match': {'prefix': 'a'}, 'buckets': [1], 'bins': 0}]}}",
            "stats_config.histogram_bucket_settings[0].bins: 0 is out of range [1, 4294967295]");
    REJECTS("{'stats_config': {'stats_tags': [{'tag_name': 'x', 'regex': '(y'}]}}",
            "stats_config.stats_tags[0].regex: \"(y\" is not a valid regex: missing ): (y");
    REJECTS("{'stats_flush_interval': '0s'}",
            "stats_flush_interval: must be at least 1ms and less than 300s");
    REJECTS("{'stats_flush_interval': '300s'}",
            "stats_flush_interval: must be at least 1ms and less than 300s");
    REJECTS("{'stats_flush_interval': '1s', 'stats_flush_on_admin': true}",
            "stats_flush_on_admin: cannot be set together with stats_flush_interval (Envoy's "
            "oneof)");
}

/* ---- rendering ------------------------------------------------------------------- */

/* Envoy's three forms: text `P0(interval,cumulative) ...` or "No recorded values" after
 * the counters; JSON's histograms object with supported_quantiles and computed_quantiles;
 * Prometheus _bucket/_sum/_count with the tag as a label. filter and usedonly apply. */
static void test_render(void)
{
    pt_stat_t h = pt_stats_histogram("urh", "envoy_cluster_name", "api", "upstream_rq_time");
    pt_stat_t unused =
        pt_stats_histogram("urh", "envoy_cluster_name", "api", "upstream_cx_length_ms");
    pt_stat_t c = pt_stats_counter("urh", "envoy_cluster_name", "api", "upstream_rq_total");
    pt_stat_t bare = pt_stats_histogram("urh", NULL, NULL, "zz_untagged");
    PT_CHECK(h && unused && c && bare);
    pt_stat_add(c, 4);
    pt_hist_record(h, 10);
    pt_hist_record(h, 10);
    pt_hist_record(h, 20);
    pt_hist_record(h, 30);
    pt_hist_record(bare, 1);
    pt_stats_merge_histograms();
    pt_hist_record(h, 30); /* after the merge: not shown yet */

    pt_buf_t b = {0};
    PT_CHECK(pt_admin_render_stats_text(&b, "^urh\\.", 0) == 0);
    char *text = take(&b);
    PT_CHECK_STR(text, "urh.api.upstream_rq_total: 4\n"
                       "urh.api.upstream_cx_length_ms: No recorded values\n"
                       "urh.api.upstream_rq_time: P0(10,10) P25(10,10) P50(10,10) P75(20,20) "
                       "P90(30,30) P95(30,30) P99(30,30) P99.5(30,30) P99.9(30,30) P100(30,30)\n"
                       "urh.zz_untagged: P0(1,1) P25(1,1) P50(1,1) P75(1,1) P90(1,1) P95(1,1) "
                       "P99(1,1) P99.5(1,1) P99.9(1,1) P100(1,1)\n");
    free(text);
    pt_stats_merge_histograms(); /* the 30 after: an interval of its own */
    PT_CHECK(pt_admin_render_stats_text(&b, "upstream_rq_time$", 1) == 0);
    text = take(&b);
    PT_CHECK(strstr(text, "urh.api.upstream_rq_time: P0(30,10) P25(30,10) ") != NULL);
    PT_CHECK(strstr(text, "No recorded values") == NULL);
    free(text);
    PT_CHECK(pt_admin_render_stats_text(&b, "^urh\\..*length", 1) == 0);
    text = take(&b);
    PT_CHECK_STR(text, ""); /* usedonly: never merged a value */
    free(text);

    PT_CHECK(pt_admin_render_stats_json(&b, "^urh\\.", 0) == 0);
    text = take(&b);
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    PT_CHECK(root != NULL);
    json_t *stats = json_object_get(root, "stats");
    PT_CHECK(json_array_size(stats) == 2);
    PT_CHECK_STR(json_string_value(json_object_get(json_array_get(stats, 0), "name")),
                 "urh.api.upstream_rq_total");
    json_t *hist = json_object_get(json_array_get(stats, 1), "histograms");
    json_t *sq = json_object_get(hist, "supported_quantiles");
    PT_CHECK(json_array_size(sq) == 10 && json_number_value(json_array_get(sq, 7)) == 99.5 &&
             json_number_value(json_array_get(sq, 9)) == 100);
    json_t *cq = json_object_get(hist, "computed_quantiles");
    PT_CHECK(json_array_size(cq) == 3);
    json_t *first = json_array_get(cq, 0); /* sorted by name: the unused one first */
    PT_CHECK_STR(json_string_value(json_object_get(first, "name")),
                 "urh.api.upstream_cx_length_ms");
    json_t *v0 = json_array_get(json_object_get(first, "values"), 0);
    PT_CHECK(json_is_null(json_object_get(v0, "interval")) &&
             json_is_null(json_object_get(v0, "cumulative")));
    json_t *rq = json_object_get(json_array_get(cq, 1), "values");
    PT_CHECK(json_array_size(rq) == 10);
    PT_CHECK(json_number_value(json_object_get(json_array_get(rq, 0), "interval")) == 30);
    PT_CHECK(json_number_value(json_object_get(json_array_get(rq, 0), "cumulative")) == 10);
    PT_CHECK(json_number_value(json_object_get(json_array_get(rq, 6), "cumulative")) == 30);
    json_decref(root);
    /* No histogram selected: no histograms object. */
    PT_CHECK(pt_admin_render_stats_json(&b, "^urh\\..*total", 0) == 0);
    text = take(&b);
    PT_CHECK(strstr(text, "histograms") == NULL);
    free(text);

    /* Tags as stats_config.stats_tags gives them: urh's second token is the cluster. */
    pt_arena_t tag_arena;
    pt_arena_init_small(&tag_arena);
    pt_tag_producer_t *tp = pt_tag_producer_new(&tag_arena, 0);
    char err[200];
    PT_CHECK(tp != NULL && pt_tag_producer_add(tp, "envoy.cluster_name", "^urh\\.((api)\\.)",
                                               NULL, err, sizeof(err)) == 0);
    pt_stats_tags_install(tp, NULL);
    PT_CHECK(pt_admin_render_prometheus(&b, "^urh\\.api\\.upstream_rq_time", 0) == 0);
    text = take(&b);
    const char *l = "envoy_cluster_name=\"api\"";
    char want[4096];
    snprintf(want, sizeof(want),
             "# HELP envoy_urh_upstream_rq_time Histogram urh.api.upstream_rq_time\n"
             "# TYPE envoy_urh_upstream_rq_time histogram\n"
             "envoy_urh_upstream_rq_time_bucket{%s,le=\"0.5\"} 0\n"
             "envoy_urh_upstream_rq_time_bucket{%s,le=\"1\"} 0\n"
             "envoy_urh_upstream_rq_time_bucket{%s,le=\"5\"} 0\n"
             "envoy_urh_upstream_rq_time_bucket{%s,le=\"10\"} 2\n"
             "envoy_urh_upstream_rq_time_bucket{%s,le=\"25\"} 3\n"
             "envoy_urh_upstream_rq_time_bucket{%s,le=\"50\"} 5\n",
             l, l, l, l, l, l);
    PT_CHECK(strncmp(text, want, strlen(want)) == 0);
    snprintf(want, sizeof(want),
             "envoy_urh_upstream_rq_time_bucket{%s,le=\"3600000\"} 5\n"
             "envoy_urh_upstream_rq_time_bucket{%s,le=\"+Inf\"} 5\n"
             "envoy_urh_upstream_rq_time_sum{%s} 100\n"
             "envoy_urh_upstream_rq_time_count{%s} 5\n",
             l, l, l, l);
    size_t tl = strlen(text), wl = strlen(want);
    PT_CHECK(tl >= wl && strcmp(text + tl - wl, want) == 0);
    free(text);
    PT_CHECK(pt_admin_render_prometheus(&b, "^urh\\.zz", 0) == 0);
    text = take(&b);
    PT_CHECK(strstr(text, "envoy_urh_zz_untagged_bucket{le=\"0.5\"} 0\n"
                          "envoy_urh_zz_untagged_bucket{le=\"1\"} 1\n") != NULL);
    PT_CHECK(strstr(text, "envoy_urh_zz_untagged_sum 1\nenvoy_urh_zz_untagged_count 1\n"));
    free(text);
    PT_CHECK(pt_admin_render_prometheus(&b, "^urh\\.", 1) == 0);
    text = take(&b);
    PT_CHECK(strstr(text, "upstream_cx_length_ms") == NULL); /* usedonly */
    PT_CHECK(strstr(text, "envoy_urh_upstream_rq_time_count") != NULL);
    pt_stats_tags_install(NULL, NULL);
    pt_arena_dispose(&tag_arena);
    int verdict = pt_test_promtool(text);
    free(text);
    PT_CHECK(verdict >= 0);
}

int main(void)
{
    if (pt_stats_thread_init() != 0) {
        fprintf(stderr, "pt_stats_thread_init failed\n");
        return 1;
    }
    PT_RUN(test_layout);
    PT_RUN(test_quantiles_within_a_bucket);
    PT_RUN(test_count_le);
    PT_RUN(test_format);
    PT_RUN(test_intervals);
    PT_RUN(test_threads_merge);
    PT_RUN(test_release);
    PT_RUN(test_bucket_settings);
    PT_RUN(test_bucket_settings_errors);
    PT_RUN(test_render);
    PT_TEST_EXIT();
}
