#include "discovery/lb.h"

#include "proxy/worker.h"

static int excluded(const pt_host_t *h, pt_host_t *const *exclude, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (exclude[i] == h)
            return 1;
    return 0;
}

static pt_cluster_local_t *local_state(pt_cluster_t *c, pt_worker_t *w)
{
    static _Thread_local pt_cluster_local_t fallback;
    if (w != NULL && c->index < w->ncluster_locals && w->cluster_locals[c->index] != NULL)
        return w->cluster_locals[c->index];
    return &fallback;
}

/* Envoy's panic mode: when fewer than healthy_panic_threshold percent of the hosts are
 * healthy, health is ignored and traffic spreads over all of them rather than crushing the
 * few survivors. Below that, unhealthy hosts are never picked (no host: 503 UH). */
static int in_panic(const pt_cluster_t *c, unsigned *healthy_out)
{
    unsigned healthy = 0;
    for (unsigned i = 0; i < c->nhosts; i++)
        healthy += atomic_load_explicit(&c->hosts[i]->health, memory_order_relaxed) == 0;
    *healthy_out = healthy;
    return healthy < c->nhosts &&
           (double)healthy * 100.0 < c->healthy_panic_threshold * (double)c->nhosts;
}

pt_host_t *pt_lb_round_robin(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                             unsigned nexclude)
{
    if (c->nhosts == 0)
        return NULL;
    pt_cluster_local_t *l = local_state(c, w);
    unsigned healthy;
    int panic = in_panic(c, &healthy);
    if (!panic && healthy == 0)
        return NULL;
    /* Weighted round robin by stepping a cursor over the expanded weight space; with equal
     * weights this is plain round robin. First pass avoids excluded hosts (already tried);
     * the second allows them (a retry may go back to a tried host). */
    uint64_t total = 0;
    for (unsigned i = 0; i < c->nhosts; i++)
        total += c->hosts[i]->weight;
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t step = 0; step < total && step < 4u * c->nhosts + 16; step++) {
            uint64_t pos = l->rr_next++ % total, acc = 0;
            pt_host_t *h = NULL;
            for (unsigned i = 0; i < c->nhosts; i++) {
                acc += c->hosts[i]->weight;
                if (pos < acc) {
                    h = c->hosts[i];
                    break;
                }
            }
            if (!panic && atomic_load_explicit(&h->health, memory_order_relaxed) != 0)
                continue;
            if (pass == 0 && excluded(h, exclude, nexclude))
                continue;
            return h;
        }
    }
    /* Skewed weights can starve the stepping above: fall back to a scan. */
    for (unsigned i = 0; i < c->nhosts; i++) {
        pt_host_t *h = c->hosts[(l->rr_next + i) % c->nhosts];
        if (panic || atomic_load_explicit(&h->health, memory_order_relaxed) == 0)
            return h;
    }
    return NULL;
}
