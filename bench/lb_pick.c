/* Cost of one pick of the hash load balancers (RING_HASH, MAGLEV) at scale: a cluster of N
 * hosts (equal weights, one priority) parsed and prepared as a bootstrap's, then P picks through
 * pt_cluster_pick_host on a worker's slot, each with its own request hash.
 *
 *   build/tests/pt_bench_lb_pick ring|maglev HOSTS PICKS
 *   bench/lb_pick.sh [HOSTS]     instructions per pick under callgrind, both policies
 *
 * Under callgrind only the picks are counted (CALLGRIND_START/STOP_INSTRUMENTATION around the
 * loop, the hashes drawn before it), so instructions / PICKS is the cost of a pick: the
 * context, the table lookup (the worker's reference checked against the published one) and
 * the ring's binary search or Maglev's slot. Without valgrind it prints ns per pick. */
#include <jansson.h>
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

    /* The cluster as a bootstrap's: parsed, then prepared (hosts, priority set, tables). */
    json_t *lbe = json_array();
    for (unsigned i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
        json_array_append_new(lbe, json_pack("{s:{s:{s:{s:s,s:i}}}}", "endpoint", "address",
                                             "socket_address", "address", ip, "port_value",
                                             8080));
    }
    json_t *cj = json_pack("{s:s,s:s,s:{s:[{s:o}]}}", "name", "bench", "lb_policy",
                           maglev ? "MAGLEV" : "RING_HASH", "load_assignment", "endpoints",
                           "lb_endpoints", lbe);
    pt_cfg_t r;
    pt_cfg_init(&r, cj);
    pt_cluster_t *c = pt_cluster_parse(&r);
    pt_cfg_finish(&r);
    if (c == NULL || !pt_cfg_ok(&r)) {
        for (size_t i = 0; i < r.nerrors; i++)
            fprintf(stderr, "lb_pick: %s\n", r.errors[i]);
        return 1;
    }
    pt_cfg_dispose(&r);
    json_decref(cj);
    uint64_t *hashes = malloc((size_t)picks * sizeof(*hashes));
    if (hashes == NULL)
        return 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (pt_cluster_prepare(c) != 0)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const pt_lb_hash_t *t = pt_lb_hash_cluster_table(c, 0, 0);
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
    (void)pt_cluster_pick_host(c, &w, &ctx, NULL, 0);
    uintptr_t sink = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CALLGRIND_START_INSTRUMENTATION;
    for (unsigned i = 0; i < picks; i++) {
        ctx.hash = hashes[i];
        sink ^= (uintptr_t)pt_cluster_pick_host(c, &w, &ctx, NULL, 0);
    }
    CALLGRIND_STOP_INSTRUMENTATION;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / picks;
    printf("%s: %u hosts, %zu %s, built in %.1f ms; %u picks: %.1f ns each (%lx)\n", argv[1],
           n, t->size, maglev ? "slots" : "ring entries", build_ms, picks, ns,
           (unsigned long)(sink & 0xf));
    pt_cluster_unref(c);
    free(hashes);
    return 0;
}
