#include "proxy/histogram.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

const double pt_hist_quantiles[PT_HIST_NQ] = {0,    0.25, 0.5,   0.75,  0.90,
                                              0.95, 0.99, 0.995, 0.999, 1};
const char *const pt_hist_quantile_names[PT_HIST_NQ] = {"0",  "25", "50",   "75",   "90",
                                                        "95", "99", "99.5", "99.9", "100"};

const double pt_hist_default_bounds[PT_HIST_DEFAULT_NBOUNDS] = {
    0.5,  1,    5,     10,    25,    50,     100,    250,     500,    1000,
    2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000};

uint64_t pt_hist_bucket_lower(unsigned b)
{
    if (b < PT_HIST_SUB)
        return b;
    unsigned chunk = b >> PT_HIST_SUB_BITS, sub = b & (PT_HIST_SUB - 1);
    return (uint64_t)(PT_HIST_SUB + sub) << (chunk - 1);
}

uint64_t pt_hist_bucket_upper(unsigned b)
{
    if (b < PT_HIST_SUB)
        return b;
    return pt_hist_bucket_lower(b) + (UINT64_C(1) << ((b >> PT_HIST_SUB_BITS) - 1)) - 1;
}

void pt_hist_quantiles_in(const uint64_t *counts, uint32_t chunks, uint64_t total,
                          const double *q, size_t nq, double *out)
{
    size_t i = 0;
    if (total == 0) {
        for (; i < nq; i++)
            out[i] = NAN;
        return;
    }
    uint64_t before = 0; /* values in the buckets below b */
    for (unsigned b = 0; b < PT_HIST_BUCKETS && i < nq; b++) {
        if (!(chunks >> (b >> PT_HIST_SUB_BITS) & 1)) {
            b |= PT_HIST_SUB - 1; /* the chunk is empty (its counts may not even be set) */
            continue;
        }
        uint64_t c = counts[b];
        if (c == 0)
            continue;
        double lo = (double)pt_hist_bucket_lower(b), hi = (double)pt_hist_bucket_upper(b);
        /* Every quantile whose rank this bucket reaches. */
        while (i < nq && (double)before + (double)c >= q[i] * (double)total) {
            double f = (q[i] * (double)total - (double)before) / (double)c;
            f = f < 0 ? 0 : f > 1 ? 1 : f;
            out[i++] = lo + f * (hi - lo);
        }
        before += c;
    }
    /* Rounding cannot leave one unplaced, but never leave garbage. */
    for (; i < nq; i++)
        out[i] = NAN;
}

void pt_hist_quantiles_of(const uint64_t *counts, uint64_t total, const double *q, size_t nq,
                          double *out)
{
    pt_hist_quantiles_in(counts, UINT32_MAX, total, q, nq, out);
}

uint64_t pt_hist_count_le(const uint64_t *counts, double le)
{
    if (!(le >= 0))
        return 0;
    uint64_t top = le >= (double)PT_HIST_MAX ? PT_HIST_MAX : (uint64_t)le; /* floor */
    unsigned last = pt_hist_bucket(top);
    uint64_t n = 0;
    for (unsigned b = 0; b < last; b++)
        n += counts[b];
    uint64_t c = counts[last];
    if (c == 0)
        return n;
    if (le >= (double)PT_HIST_MAX)
        return n + c;
    uint64_t lo = pt_hist_bucket_lower(last), hi = pt_hist_bucket_upper(last);
    uint64_t in = top - lo + 1, width = hi - lo + 1;
    if (in >= width)
        return n + c;
    return n + (uint64_t)(((unsigned __int128)c * in) / width);
}

const char *pt_hist_fmt_double(double v, char *out, size_t len)
{
    if (isnan(v)) {
        snprintf(out, len, "nan");
        return out;
    }
    /* A whole number (without libm's floor(): the core links no libm). */
    if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v) {
        snprintf(out, len, "%.0f", v);
        return out;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    return out;
}
