#include "discovery/lb.h"

#include "proxy/random.h"
#include "proxy/worker.h"

static int excluded(const pt_host_t *h, pt_host_t *const *exclude, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (exclude[i] == h)
            return 1;
    return 0;
}

/* The worker's own cursor for the cluster (kept across updates of the cluster: it lives in
 * the cluster's state); a thread without a slot (the main thread, tests) shares one. */
static pt_cluster_local_t *local_state(pt_cluster_t *c, pt_worker_t *w)
{
    static _Thread_local pt_cluster_local_t fallback;
    const pt_cluster_state_t *st = c->state;
    if (w != NULL && st != NULL && w->id >= 0 && (unsigned)w->id < st->nlocals)
        return &st->locals[w->id];
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

/* ---- random and least request -------------------------------------------------------- */

/* Whether h may be picked: healthy (or panic), and on the first pass not already tried. */
static int eligible(const pt_host_t *h, int panic, int pass, pt_host_t *const *exclude,
                    unsigned nexclude)
{
    if (!panic && atomic_load_explicit(&h->health, memory_order_relaxed) != 0)
        return 0;
    return pass == 1 || !excluded(h, exclude, nexclude);
}

/* The i-th (0-based) eligible host, or NULL. */
static pt_host_t *nth_eligible(pt_cluster_t *c, uint64_t i, int panic, int pass,
                               pt_host_t *const *exclude, unsigned nexclude)
{
    for (unsigned k = 0; k < c->nhosts; k++)
        if (eligible(c->hosts[k], panic, pass, exclude, nexclude) && i-- == 0)
            return c->hosts[k];
    return NULL;
}

static unsigned count_eligible(pt_cluster_t *c, int panic, int pass, pt_host_t *const *exclude,
                               unsigned nexclude)
{
    unsigned n = 0;
    for (unsigned k = 0; k < c->nhosts; k++)
        n += eligible(c->hosts[k], panic, pass, exclude, nexclude);
    return n;
}

/* A uniformly random eligible host, or NULL when none is. Draws among all hosts and rejects
 * ineligible ones, O(1) when most hosts are eligible; after a few misses it counts. Either
 * way the pick is uniform over the eligible hosts. */
static pt_host_t *random_eligible(pt_cluster_t *c, int panic, int pass,
                                  pt_host_t *const *exclude, unsigned nexclude)
{
    for (int i = 0; i < 4; i++) {
        pt_host_t *h = c->hosts[pt_random_below(c->nhosts)];
        if (eligible(h, panic, pass, exclude, nexclude))
            return h;
    }
    unsigned n = count_eligible(c, panic, pass, exclude, nexclude);
    return n > 0 ? nth_eligible(c, pt_random_below(n), panic, pass, exclude, nexclude) : NULL;
}

/* Whether any host can be picked; *panic says whether health is ignored. */
static int pickable(pt_cluster_t *c, int *panic)
{
    unsigned healthy;
    *panic = in_panic(c, &healthy);
    return c->nhosts > 0 && (*panic || healthy > 0);
}

pt_host_t *pt_lb_random(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                        unsigned nexclude)
{
    (void)w;
    int panic;
    if (!pickable(c, &panic))
        return NULL;
    /* First pass avoids hosts already tried; the second allows them (as round robin). */
    for (int pass = 0; pass < 2; pass++) {
        pt_host_t *h = random_eligible(c, panic, pass, exclude, nexclude);
        if (h != NULL)
            return h;
    }
    return NULL;
}

static uint64_t active_requests(const pt_host_t *h)
{
    return atomic_load_explicit(&h->rq_active, memory_order_relaxed);
}

pt_host_t *pt_lb_least_request(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                               unsigned nexclude)
{
    (void)w;
    int panic;
    if (!pickable(c, &panic))
        return NULL;
    for (int pass = 0; pass < 2; pass++) {
        if (c->equal_weights) {
            /* Power of choices: draws with replacement, as Envoy does. */
            pt_host_t *best = random_eligible(c, panic, pass, exclude, nexclude);
            if (best == NULL)
                continue;
            for (uint32_t i = 1; i < c->lb_choice_count; i++) {
                pt_host_t *h = random_eligible(c, panic, pass, exclude, nexclude);
                if (h != NULL && active_requests(h) < active_requests(best))
                    best = h;
            }
            return best;
        }
        /* Weighted (rarer): one pass over the hosts per pick. */
        unsigned n = count_eligible(c, panic, pass, exclude, nexclude);
        if (n == 0)
            continue;
        /* Weighted: weight / (active + 1), drawn in fixed point (2^20 per unit weight). */
        uint64_t total = 0;
        for (unsigned k = 0; k < c->nhosts; k++)
            if (eligible(c->hosts[k], panic, pass, exclude, nexclude))
                total += ((uint64_t)c->hosts[k]->weight << 20) / (active_requests(c->hosts[k]) + 1);
        if (total == 0)
            return nth_eligible(c, pt_random_below(n), panic, pass, exclude, nexclude);
        uint64_t pick = pt_random_below(total);
        for (unsigned k = 0; k < c->nhosts; k++) {
            pt_host_t *h = c->hosts[k];
            if (!eligible(h, panic, pass, exclude, nexclude))
                continue;
            uint64_t share = ((uint64_t)h->weight << 20) / (active_requests(h) + 1);
            if (pick < share)
                return h;
            pick -= share;
        }
        /* rq_active moved between the two sums: take the last eligible host. */
        return nth_eligible(c, n - 1, panic, pass, exclude, nexclude);
    }
    return NULL;
}
