/* The cost of one host pick (pt_cluster_pick_host), per policy and cluster shape, at a given
 * host count: bench/lb_picks.py runs it under callgrind with --toggle-collect=measured_picks
 * and divides the instructions of that function by the picks it made.
 *
 *   lb_pick_cost <scenario> <hosts> <picks>
 *
 * Scenarios: rr, rr_weighted, lr, lr_weighted, random (one priority, one locality);
 * lr_weighted_busy (lr_weighted with each pick's request ending 64 picks later, counted in
 * the measure: the loop's own bookkeeping is about 15 instructions more);
 * rr_priorities (half the hosts at P=0, 60% of them failed: a priority draw on every pick);
 * rr_localities (locality_weighted_lb_config over 8 localities); rr_zone (zone aware
 * routing against a local cluster, in residual mode). Before the measured picks, as many
 * picks warm the worker's state up (its schedules are made on the first pick of a subset). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/priority_set.h"
#include "proxy/cluster.h"
#include "proxy/view.h"
#include "proxy/worker.h"

static pt_cluster_t *make(const char *name, const char *policy, unsigned n, int weighted,
                          unsigned nprio, unsigned nloc, const char *extra)
{
    json_t *eps = json_array();
    for (unsigned p = 0; p < nprio; p++)
        for (unsigned l = 0; l < nloc; l++) {
            json_t *lbe = json_array();
            unsigned per = n / (nprio * nloc);
            for (unsigned k = 0; k < per; k++) {
                char ip[32];
                unsigned i = (p * nloc + l) * per + k;
                snprintf(ip, sizeof(ip), "10.%u.%u.%u", i / 62500, (i / 250) % 250, i % 250 + 1);
                json_t *e = json_pack("{s:{s:{s:{s:s,s:i}}}}", "endpoint", "address",
                                      "socket_address", "address", ip, "port_value", 80);
                if (weighted)
                    json_object_set_new(e, "load_balancing_weight", json_integer(1 + i % 10));
                json_array_append_new(lbe, e);
            }
            char zone[16];
            snprintf(zone, sizeof(zone), "z%u", l);
            json_array_append_new(eps, json_pack("{s:o,s:i,s:{s:s,s:s},s:i}", "lb_endpoints",
                                                 lbe, "priority", (int)p, "locality", "region",
                                                 "r", "zone", zone, "load_balancing_weight",
                                                 (int)(l + 1)));
        }
    json_t *cj = json_pack("{s:s,s:s,s:{s:o}}", "name", name, "lb_policy", policy,
                           "load_assignment", "endpoints", eps);
    if (extra != NULL) {
        json_t *x = json_loads(extra, 0, NULL);
        json_object_update(cj, x);
        json_decref(x);
    }
    pt_cfg_t r;
    pt_cfg_init(&r, cj);
    pt_cluster_t *c = pt_cluster_parse(&r);
    pt_cfg_finish(&r);
    if (c == NULL || !pt_cfg_ok(&r) || pt_cluster_prepare(c) != 0) {
        for (size_t i = 0; i < r.nerrors; i++)
            fprintf(stderr, "lb_pick_cost: %s\n", r.errors[i]);
        exit(2);
    }
    pt_cfg_dispose(&r);
    json_decref(cj);
    return c;
}

static volatile uintptr_t sink;

/* lr_weighted_busy: each pick starts a request on its host, which ends BUSY_DEPTH picks
 * later (active requests change all the time, as under load). */
#define BUSY_DEPTH 64
static int busy;
static pt_host_t *inflight[BUSY_DEPTH];

static __attribute__((noinline)) void busy_picks(pt_cluster_t *c, pt_worker_t *w, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        pt_host_t *h = pt_cluster_pick_host(c, w, NULL, NULL, 0), **slot;
        slot = &inflight[i % BUSY_DEPTH];
        if (*slot != NULL)
            atomic_fetch_sub_explicit(&(*slot)->rq_active, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->rq_active, 1, memory_order_relaxed);
        *slot = h;
    }
}

/* What callgrind measures (--toggle-collect=measured_picks). */
__attribute__((noinline)) void measured_picks(pt_cluster_t *c, pt_worker_t *w, unsigned n)
{
    uintptr_t x = 0;
    if (busy) {
        busy_picks(c, w, n);
        return;
    }
    for (unsigned i = 0; i < n; i++)
        x ^= (uintptr_t)pt_cluster_pick_host(c, w, NULL, NULL, 0);
    sink = x;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: lb_pick_cost <scenario> <hosts> <picks>\n");
        return 2;
    }
    const char *sc = argv[1];
    unsigned n = (unsigned)atoi(argv[2]), picks = (unsigned)atoi(argv[3]);
    pt_cluster_t *c = NULL, *local = NULL;
    pt_worker_t w;
    memset(&w, 0, sizeof(w));
    pt_worker_view_t wv = {0};
    pt_view_t *v = NULL;
    if (strcmp(sc, "rr") == 0)
        c = make("c", "ROUND_ROBIN", n, 0, 1, 1, NULL);
    else if (strcmp(sc, "rr_weighted") == 0)
        c = make("c", "ROUND_ROBIN", n, 1, 1, 1, NULL);
    else if (strcmp(sc, "lr") == 0)
        c = make("c", "LEAST_REQUEST", n, 0, 1, 1, NULL);
    else if (strcmp(sc, "lr_weighted") == 0)
        c = make("c", "LEAST_REQUEST", n, 1, 1, 1, NULL);
    else if (strcmp(sc, "lr_weighted_busy") == 0) {
        c = make("c", "LEAST_REQUEST", n, 1, 1, 1, NULL);
        busy = 1;
    }
    else if (strcmp(sc, "random") == 0)
        c = make("c", "RANDOM", n, 0, 1, 1, NULL);
    else if (strcmp(sc, "rr_priorities") == 0) {
        c = make("c", "ROUND_ROBIN", n, 0, 2, 1, NULL);
        for (unsigned i = 0; i < c->nhosts / 2 * 6 / 10; i++)
            pt_host_health_update(c->hosts[i], PT_HOST_FAILED_ACTIVE_HC, 0);
    } else if (strcmp(sc, "rr_localities") == 0) {
        c = make("c", "ROUND_ROBIN", n, 0, 1, 8,
                 "{\"common_lb_config\": {\"locality_weighted_lb_config\": {}}}");
    } else if (strcmp(sc, "rr_zone") == 0) {
        pt_locality_t here = {"r", "z0", ""};
        pt_lb_set_local("local", &here);
        local = make("local", "ROUND_ROBIN", 80, 0, 1, 4, NULL);
        c = make("c", "ROUND_ROBIN", n, 0, 1, 4, NULL);
        pt_cluster_t *both[2] = {local, c};
        v = pt_view_new(both, 2);
        wv.view = v;
        w.view = &wv;
        /* Residual mode: the local cluster has more of its proxies in z0 than c has hosts. */
        for (unsigned i = 20; i < 50; i++)
            pt_host_health_update(local->hosts[i], PT_HOST_FAILED_ACTIVE_HC, 0);
    } else {
        fprintf(stderr, "lb_pick_cost: unknown scenario %s\n", sc);
        return 2;
    }
    pt_worker_t *wp = w.view != NULL ? &w : NULL;
    measured_picks(c, wp, 0); /* keeps the symbol called once even with 0 picks */
    uintptr_t x = 0;
    if (busy) /* warm: the same, requests in flight */
        busy_picks(c, wp, picks);
    else
        for (unsigned i = 0; i < picks; i++) /* warm: every subset's schedule is made */
            x ^= (uintptr_t)pt_cluster_pick_host(c, wp, NULL, NULL, 0);
    sink = x;
    measured_picks(c, wp, picks);
    printf("ok %s %u hosts %u picks\n", sc, c->nhosts, picks);
    pt_view_unref(v);
    pt_cluster_unref(c);
    pt_cluster_unref(local);
    return 0;
}
