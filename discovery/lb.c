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

pt_host_t *pt_lb_round_robin(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                             unsigned nexclude)
{
    if (c->nhosts == 0)
        return NULL;
    pt_cluster_local_t *l = local_state(c, w);
    /* Weighted round robin by stepping a cursor over the expanded weight space; with equal
     * weights this is plain round robin. Two passes: healthy and not excluded, then any
     * not excluded, then anything (a retry may go back to a tried host). */
    uint64_t total = 0;
    for (unsigned i = 0; i < c->nhosts; i++)
        total += c->hosts[i]->weight;
    for (int pass = 0; pass < 3; pass++) {
        for (uint64_t step = 0; step < c->nhosts; step++) {
            uint64_t pos = l->rr_next++ % total, acc = 0;
            pt_host_t *h = NULL;
            for (unsigned i = 0; i < c->nhosts; i++) {
                acc += c->hosts[i]->weight;
                if (pos < acc) {
                    h = c->hosts[i];
                    break;
                }
            }
            if (pass == 0 && atomic_load_explicit(&h->health, memory_order_relaxed) != 0)
                continue;
            if (pass < 2 && excluded(h, exclude, nexclude))
                continue;
            return h;
        }
    }
    return c->hosts[l->rr_next++ % c->nhosts];
}
