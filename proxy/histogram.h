/* Histograms: the bucket layout and the math on it. proxy/stats.c keeps the storage (one
 * set of counts per histogram per thread, merged when read); this module knows what a
 * bucket covers, turns counts into quantiles and into Prometheus `le` counts, and formats
 * numbers as Envoy prints them.
 *
 * Values are unsigned integers (milliseconds for every histogram petrel records, as Envoy's
 * are). The layout is log-linear: 0..15 have a bucket each; above, every power of two
 * [2^e, 2^(e+1)) is cut into 16 equal buckets of width 2^(e-4). A bucket's width is thus at
 * most 1/16 of its lower bound: any value is known to within 6.25%, and exactly below 32.
 * 32 chunks of 16 buckets reach 2^35 - 1 ms (about 397 days); larger values count in the
 * last bucket (their sum stays exact). A chunk is the unit of storage: a thread allocates the
 * chunks its values fall in, so a latency histogram that spans 1..300 ms holds 6 of them. */
#ifndef PT_HISTOGRAM_H
#define PT_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define PT_HIST_SUB_BITS 4
#define PT_HIST_SUB      (1u << PT_HIST_SUB_BITS) /* buckets per chunk (per power of two) */
#define PT_HIST_CHUNKS   32u
#define PT_HIST_BUCKETS  (PT_HIST_CHUNKS * PT_HIST_SUB) /* 512 */
#define PT_HIST_MAX      ((UINT64_C(1) << (PT_HIST_CHUNKS + PT_HIST_SUB_BITS - 1)) - 1)

/* The bucket a value counts in. */
static inline unsigned pt_hist_bucket(uint64_t v)
{
    if (v < PT_HIST_SUB)
        return (unsigned)v;
    if (v > PT_HIST_MAX)
        return PT_HIST_BUCKETS - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* 4 .. 34 */
    return ((e - (PT_HIST_SUB_BITS - 1)) << PT_HIST_SUB_BITS) |
           (unsigned)((v >> (e - PT_HIST_SUB_BITS)) & (PT_HIST_SUB - 1));
}

/* The smallest and largest value a bucket holds (both included). */
uint64_t pt_hist_bucket_lower(unsigned b);
uint64_t pt_hist_bucket_upper(unsigned b);

/* Envoy's supported quantiles, in order: P0 P25 P50 P75 P90 P95 P99 P99.5 P99.9 P100. */
#define PT_HIST_NQ 10
extern const double pt_hist_quantiles[PT_HIST_NQ];
/* Their names without the P, as Envoy prints them ("0", "25", ..., "99.5", "99.9", "100"). */
extern const char *const pt_hist_quantile_names[PT_HIST_NQ];

/* Envoy's default Prometheus buckets (HistogramSettingsImpl::defaultBuckets). */
#define PT_HIST_DEFAULT_NBOUNDS 19
extern const double pt_hist_default_bounds[PT_HIST_DEFAULT_NBOUNDS];

/* Quantiles of the distribution in counts[PT_HIST_BUCKETS] (total: their sum), for the
 * increasing fractions q[0..nq) in [0, 1]: the q-th value is found in the bucket where the
 * running count reaches q * total, and placed in it by linear interpolation between the
 * bucket's smallest and largest value. So the estimate lies in the same bucket as the true
 * value of that rank: off by less than the bucket's width. NaN for every q when total is 0
 * (Envoy prints "nan" for an interval without values). */
void pt_hist_quantiles_of(const uint64_t *counts, uint64_t total, const double *q, size_t nq,
                          double *out);

/* The same, reading only the chunks whose bits are set in `chunks` (bit c: buckets
 * c * PT_HIST_SUB ..): the others are taken as empty, whatever counts[] holds there. */
void pt_hist_quantiles_in(const uint64_t *counts, uint32_t chunks, uint64_t total,
                          const double *q, size_t nq, double *out);

/* How many values are <= le (a Prometheus bucket's upper bound): whole buckets whose largest
 * value is <= le, and of the bucket le falls in, the share of its integers that are <= le
 * (values taken as spread evenly over it), rounded down. Non-decreasing in le. */
uint64_t pt_hist_count_le(const uint64_t *counts, double le);

/* A double as Envoy's admin prints it: the shortest text that reads back the same ("10",
 * "10.5", "0.1"), "nan" for NaN. Returns out. */
const char *pt_hist_fmt_double(double v, char *out, size_t len);

#endif
