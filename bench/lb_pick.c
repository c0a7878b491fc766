/* Cost of one pick of the hash load balancers (RING_HASH, MAGLEV) at scale: a cluster of N
 * hosts (equal weights) built the way pt_cluster_prepare builds one, then P picks through
 * pt_cluster_pick_host on a worker's slot, each with its own request hash.
 *
 *   build/tests/pt_bench_lb_pick ring|maglev HOSTS PICKS
 *   bench/lb_pick.sh [HOSTS]     instructions per pick under callgrind, both policies
 *
 * Under callgrind only the picks are counted (CALLGRIND_START/STOP_INSTRUMENTATION around the
 * loop, the hashes drawn before it), so instructions / PICKS is the cost of a pick: the
 * context, the table lookup (the worker's reference checked against the published one) and
 * the ring's binary search or Maglev's slot. Without valgrind it prints ns per pick. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <valgrind/callgrind.h>

#include "discovery/lb_hash.h"
#include "proxy/cluster.h"
#include "proxy/worker.h"

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "ring") != 0 && strcmp(argv[1], "maglev") != 0)) {
        fprintf(stderr, "usage: %s ring|maglev HOSTS PICKS\n", argv[0]);
        return 2;
    }
    int maglev = strcmp(argv[1], "maglev") == 0;
    unsigned n = (unsigned)strtoul(argv[2], NULL, 10);
    unsigned picks = (unsigned)strtoul(argv[3], NULL, 10);
    pt_worker_set_count(1); /* one worker slot: picks take the workers' path */

    pt_cluster_t c;
    memset(&c, 0, sizeof(c));
    c.name = "bench";
    c.healthy_panic_threshold = 50;
    c.lb_policy = maglev ? PT_LB_MAGLEV : PT_LB_RING_HASH;
    pt_lb_hash_config_t cfg = {.kind = maglev ? PT_LB_HASH_MAGLEV : PT_LB_HASH_RING,
                               .min_ring_size = PT_RING_HASH_MIN_DEFAULT,
                               .max_ring_size = PT_RING_HASH_MAX_DEFAULT,
                               .hash_function = PT_HASH_XX_HASH,
                               .table_size = PT_MAGLEV_TABLE_SIZE_DEFAULT};
    c.lb_hash = &cfg;
    pt_host_t *hosts = calloc(n, sizeof(*hosts));
    char (*names)[32] = calloc(n, 32);
    c.hosts = calloc(n, sizeof(*c.hosts));
    c.hinfo_default.weight = 1; /* every host's weight (no per-host array) */
    uint64_t *hashes = malloc((size_t)picks * sizeof(*hashes));
    if (hosts == NULL || names == NULL || c.hosts == NULL || hashes == NULL)
        return 1;
    for (unsigned i = 0; i < n; i++) {
        snprintf(names[i], 32, "10.%u.%u.%u:8080", i >> 16, (i >> 8) & 255, i & 255);
        hosts[i].address_str = names[i];
        c.hosts[i] = &hosts[i];
    }
    c.nhosts = n;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (pt_lb_hash_cluster_prepare(&c) != 0)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const pt_lb_hash_t *t = pt_lb_hash_cluster_table(&c);
    double build_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;

    uint64_t seed = 1;
    for (unsigned i = 0; i < picks; i++)
        hashes[i] = splitmix(&seed);
    pt_worker_t w;
    memset(&w, 0, sizeof(w));
    w.id = 0;
    pt_lb_context_t ctx = {.has_hash = 1};
    /* The first pick takes the worker's reference to the table; the rest are the steady
     * state. */
    ctx.hash = 0;
    (void)pt_cluster_pick_host(&c, &w, &ctx, NULL, 0);
    uintptr_t sink = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CALLGRIND_START_INSTRUMENTATION;
    for (unsigned i = 0; i < picks; i++) {
        ctx.hash = hashes[i];
        sink ^= (uintptr_t)pt_cluster_pick_host(&c, &w, &ctx, NULL, 0);
    }
    CALLGRIND_STOP_INSTRUMENTATION;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / picks;
    printf("%s: %u hosts, %zu %s, built in %.1f ms; %u picks: %.1f ns each (%lx)\n", argv[1],
           n, t->size, maglev ? "slots" : "ring entries", build_ms, picks, ns,
           (unsigned long)(sink & 0xf));
    pt_lb_hash_cluster_dispose(&c);
    free(hashes);
    free(c.hosts);
    free(names);
    free(hosts);
    return 0;
}
