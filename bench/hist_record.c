/* The cost of recording one histogram value (pt_hist_record, proxy/stats.h), counted by
 * callgrind: the instr suite (bench.py) builds this with the stats sources and runs
 *
 *   valgrind --tool=callgrind --toggle-collect=record_many ./hist_record
 *
 * so that only record_many is counted; its instructions divided by the values it recorded
 * are the cost of one (the loop's own increment, compare and load included).
 *
 * The values are latencies as a proxy sees them: log-uniform from 0 to ~2 s, so they fall in
 * many buckets and chunks (the chunks are made before the measured loop: a histogram's first
 * values, which allocate, are not the steady state being measured). Prints
 * `values <n> recorded <m>`; m must equal 2n (the warm-up and the measured pass). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "proxy/stats.h"

#define NVALUES 200000

__attribute__((noipa)) static void record_many(pt_stat_t id, const uint32_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pt_hist_record(id, v[i]);
}

__attribute__((noipa)) static void warm_up(pt_stat_t id, const uint32_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pt_hist_record(id, v[i]);
}

int main(void)
{
    if (pt_stats_thread_init() != 0) {
        fprintf(stderr, "hist_record: no stats slots\n");
        return 1;
    }
    pt_stat_t id = pt_stats_histogram("cluster", "envoy_cluster_name", "bench", "upstream_rq_time");
    uint32_t *v = malloc(NVALUES * sizeof(*v));
    if (id == 0 || v == NULL)
        return 1;
    uint64_t x = 88172645463325252ull; /* xorshift64: the same values every run */
    for (size_t i = 0; i < NVALUES; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double u = (double)(x >> 11) / 9007199254740992.0; /* [0, 1) */
        v[i] = (uint32_t)(exp(u * log(2000.0 + 1)) - 1);   /* 0 .. 2000, log-uniform */
    }
    warm_up(id, v, NVALUES);
    record_many(id, v, NVALUES);
    pt_stats_merge_histograms();
    pt_hist_summary_t hs;
    pt_stats_histogram_summary(id, &hs, NULL);
    printf("values %d recorded %llu\n", NVALUES, (unsigned long long)hs.count);
    free(v);
    return hs.count == 2 * (uint64_t)NVALUES ? 0 : 1;
}
