/* Unit tests for discovery/priority_set and discovery/lb: Envoy's priority load, degraded
 * load, panic and locality weights against the tables of its documentation, then clusters
 * made from configs, picked from many times: failover between priorities as hosts fail and
 * come back (health checks and EDS health_status), locality weights, zone aware routing, and
 * each balancer's distribution. Distributions are checked with bounds many standard
 * deviations wide, so a correct balancer fails them with negligible probability. */
#include <jansson.h>
#include <math.h>

#include "discovery/lb.h"
#include "discovery/priority_set.h"
#include "proxy/view.h"
#include "proxy/worker.h"
#include "pt_test.h"

/* ---- Envoy's tables ---------------------------------------------------------------- */

/* Priorities of 100 hosts each, `healthy[i]` percent of them healthy (and degraded[i]
 * degraded), with the default overprovisioning factor 140 and the panic threshold (50 unless
 * set below: the priority tables of Envoy's docs leave panic aside). */
static uint32_t threshold = 50;

static void loads(const unsigned *healthy, const unsigned *degraded, unsigned n,
                  pt_lb_loads_t *out)
{
    pt_lb_prio_counts_t p[8];
    memset(p, 0, sizeof(p));
    for (unsigned i = 0; i < n; i++) {
        p[i].hosts = 100;
        p[i].healthy = healthy[i];
        p[i].degraded = degraded ? degraded[i] : 0;
    }
    pt_lb_compute_loads(p, n, 140, 0, threshold, out);
}

static void test_priority_levels_two(void)
{
    /* docs: intro/arch_overview/upstream/load_balancing/priority, P=1 100% healthy. */
    static const unsigned rows[][3] = {
        {100, 100, 0}, {72, 100, 0}, {71, 99, 1}, {50, 70, 30}, {25, 35, 65}, {0, 0, 100}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        unsigned h[2] = {rows[i][0], 100};
        pt_lb_loads_t l;
        loads(h, NULL, 2, &l);
        PT_CHECK_INT(l.healthy_load[0], rows[i][1]);
        PT_CHECK_INT(l.healthy_load[1], rows[i][2]);
        PT_CHECK_INT(l.panic[0], 0);
    }
    /* Both levels degraded: the normalized total health. */
    static const unsigned both[][4] = {{100, 100, 100, 0}, {72, 72, 100, 0}, {71, 71, 99, 1},
                                       {50, 50, 70, 30}, {25, 100, 35, 65}, {25, 25, 50, 50}};
    for (size_t i = 0; i < sizeof(both) / sizeof(both[0]); i++) {
        unsigned h[2] = {both[i][0], both[i][1]};
        pt_lb_loads_t l;
        loads(h, NULL, 2, &l);
        PT_CHECK_INT(l.healthy_load[0], both[i][2]);
        PT_CHECK_INT(l.healthy_load[1], both[i][3]);
    }
}

static void test_priority_levels_three(void)
{
    /* docs: the three-level table, panic aside (with the default threshold its last row,
     * every level below 50%, is total panic: load by host count, 34/33/33). That row reads
     * 36/36/28; Envoy's code (which this follows) gives the rounding remainder to the first
     * available level: 37/35/28. */
    threshold = 0;
    static const unsigned rows[][6] = {
        {100, 100, 100, 100, 0, 0}, {72, 72, 100, 100, 0, 0}, {71, 71, 100, 99, 1, 0},
        {50, 50, 100, 70, 30, 0},   {25, 100, 100, 35, 65, 0}, {25, 25, 100, 35, 35, 30},
        {25, 25, 20, 37, 35, 28}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        unsigned h[3] = {rows[i][0], rows[i][1], rows[i][2]};
        pt_lb_loads_t l;
        loads(h, NULL, 3, &l);
        PT_CHECK_INT(l.healthy_load[0], rows[i][3]);
        PT_CHECK_INT(l.healthy_load[1], rows[i][4]);
        PT_CHECK_INT(l.healthy_load[2], rows[i][5]);
    }
    threshold = 50;
    unsigned h[3] = {25, 25, 20};
    pt_lb_loads_t l;
    loads(h, NULL, 3, &l);
    PT_CHECK_INT(l.total_panic, 1);
    PT_CHECK_INT(l.healthy_load[0], 34);
    PT_CHECK_INT(l.healthy_load[1], 33);
    PT_CHECK_INT(l.healthy_load[2], 33);
}

static void test_degraded(void)
{
    /* docs: degraded endpoints, P=0 healthy/degraded/unhealthy -> healthy, degraded. */
    static const unsigned rows[][4] = {
        {100, 0, 100, 0}, {71, 0, 100, 0}, {71, 29, 99, 1}, {25, 65, 35, 65}, {5, 0, 100, 0}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        unsigned h[1] = {rows[i][0]}, d[1] = {rows[i][1]};
        pt_lb_loads_t l;
        loads(h, d, 1, &l);
        PT_CHECK_INT(l.healthy_load[0], rows[i][2]);
        PT_CHECK_INT(l.degraded_load[0], rows[i][3]);
    }
}

static void test_panic(void)
{
    /* docs: panic threshold, two levels. P=1 fully healthy: never panic. */
    static const unsigned p1ok[] = {72, 71, 50, 25, 0};
    for (size_t i = 0; i < sizeof(p1ok) / sizeof(p1ok[0]); i++) {
        unsigned h[2] = {p1ok[i], 100};
        pt_lb_loads_t l;
        loads(h, NULL, 2, &l);
        PT_CHECK_INT(l.panic[0], 0);
        PT_CHECK_INT(l.panic[1], 0);
        PT_CHECK_INT(l.normalized_total, 100);
    }
    /* P=0, P=1, traffic, panic, normalized total. The doc's last row reads 7/93; by Envoy's
     * integer arithmetic (7 and 91 of a total of 98: 7 and 92, remainder to P=0) it is 8/92. */
    static const unsigned rows[][7] = {{72, 72, 100, 0, 0, 0, 100}, {71, 71, 99, 1, 0, 0, 100},
                                       {50, 60, 70, 30, 0, 0, 100}, {25, 100, 35, 65, 0, 0, 100},
                                       {25, 25, 50, 50, 1, 1, 70},  {5, 65, 8, 92, 1, 0, 98}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        unsigned h[2] = {rows[i][0], rows[i][1]};
        pt_lb_loads_t l;
        loads(h, NULL, 2, &l);
        PT_CHECK_INT(l.healthy_load[0], rows[i][2]);
        PT_CHECK_INT(l.healthy_load[1], rows[i][3]);
        PT_CHECK_INT(l.panic[0], rows[i][4]);
        PT_CHECK_INT(l.panic[1], rows[i][5]);
        PT_CHECK_INT(l.normalized_total, rows[i][6]);
    }
    /* Every level in panic: load by host count (docs: 2 and 8 hosts: 20% and 80%). */
    pt_lb_prio_counts_t p[2] = {{.hosts = 2}, {.hosts = 8}};
    pt_lb_loads_t l;
    pt_lb_compute_loads(p, 2, 140, 0, 50, &l);
    PT_CHECK_INT(l.total_panic, 1);
    PT_CHECK_INT(l.healthy_load[0], 20);
    PT_CHECK_INT(l.healthy_load[1], 80);
    p[0].hosts = p[1].hosts = 5;
    pt_lb_compute_loads(p, 2, 140, 0, 50, &l);
    PT_CHECK_INT(l.healthy_load[0], 50);
    PT_CHECK_INT(l.healthy_load[1], 50);
    /* Threshold 0: never panic; no host healthy sends the load to P=0 (which fails). */
    pt_lb_compute_loads(p, 2, 140, 0, 0, &l);
    PT_CHECK_INT(l.total_panic, 0);
    PT_CHECK_INT(l.healthy_load[0], 100);
    PT_CHECK_INT(l.panic[0], 0);
    /* Excluded hosts do not count: 5 hosts, 3 draining, 2 healthy: fully available. */
    pt_lb_prio_counts_t x = {.hosts = 5, .excluded = 3, .healthy = 2};
    pt_lb_compute_loads(&x, 1, 140, 0, 50, &l);
    PT_CHECK_INT(l.health[0], 100);
    PT_CHECK_INT(l.panic[0], 0);
    /* weighted_priority_health: by weight, not by count (1 healthy host of weight 3 of 4). */
    pt_lb_prio_counts_t w = {.hosts = 2, .healthy = 1, .weight = 4, .healthy_weight = 3};
    pt_lb_compute_loads(&w, 1, 100, 1, 50, &l);
    PT_CHECK_INT(l.health[0], 75);
    pt_lb_compute_loads(&w, 1, 100, 0, 50, &l);
    PT_CHECK_INT(l.health[0], 50);
}

static void test_locality_weights_table(void)
{
    /* docs: locality weighted load balancing. X weight 1, Y weight 2 fully available. The
     * doc rounds its percentages loosely (26 for 25.9, 32 for 32.6): within a point. */
    static const unsigned rows[][2] = {{100, 33}, {70, 33}, {69, 32}, {50, 26}, {25, 15}, {0, 0}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        double x = pt_lb_locality_weight(1, rows[i][0], 100, 0, 140);
        double y = pt_lb_locality_weight(2, 100, 100, 0, 140);
        double share = 100.0 * x / (x + y);
        PT_CHECK(fabs(share - rows[i][1]) <= 1.0);
    }
    PT_CHECK(pt_lb_locality_weight(7, 0, 3, 3, 140) == 0.0); /* all excluded */
}

/* ---- clusters made from configs --------------------------------------------------- */

/* One LocalityLbEndpoints: n endpoints (10.<group>.<k/250>.<k%250+1>:80). */
typedef struct group {
    unsigned priority;
    const char *zone;
    unsigned lweight; /* 0: none */
    unsigned n;
    unsigned weight;  /* each endpoint's (0: unset) */
    const char *health; /* health_status or NULL */
} group_t;

static pt_cluster_t *make(const char *policy, const char *extra, const group_t *g, unsigned ng)
{
    json_t *eps = json_array();
    for (unsigned i = 0; i < ng; i++) {
        json_t *lbe = json_array();
        for (unsigned k = 0; k < g[i].n; k++) {
            char ip[32];
            snprintf(ip, sizeof(ip), "10.%u.%u.%u", i, k / 250, k % 250 + 1);
            json_t *e = json_pack("{s:{s:{s:{s:s,s:i}}}}", "endpoint", "address",
                                  "socket_address", "address", ip, "port_value", 80);
            if (g[i].weight)
                json_object_set_new(e, "load_balancing_weight", json_integer(g[i].weight));
            if (g[i].health)
                json_object_set_new(e, "health_status", json_string(g[i].health));
            json_array_append_new(lbe, e);
        }
        json_t *le = json_pack("{s:o,s:i}", "lb_endpoints", lbe, "priority", (int)g[i].priority);
        if (g[i].zone)
            json_object_set_new(le, "locality", json_pack("{s:s,s:s}", "region", "r", "zone",
                                                          g[i].zone));
        if (g[i].lweight)
            json_object_set_new(le, "load_balancing_weight", json_integer(g[i].lweight));
        json_array_append_new(eps, le);
    }
    static int serial;
    char name[32];
    snprintf(name, sizeof(name), "c%d", ++serial);
    json_t *cj = json_pack("{s:s,s:s,s:{s:o}}", "name", name, "lb_policy", policy,
                           "load_assignment", "endpoints", eps);
    if (extra != NULL) {
        json_error_t err;
        json_t *x = json_loads(extra, 0, &err);
        if (x == NULL) {
            fprintf(stderr, "bad extra json: %s\n", err.text);
            exit(2);
        }
        json_object_update(cj, x);
        json_decref(x);
    }
    pt_cfg_t r;
    pt_cfg_init(&r, cj);
    pt_cluster_t *c = pt_cluster_parse(&r);
    pt_cfg_finish(&r);
    if (c == NULL || !pt_cfg_ok(&r) || pt_cluster_prepare(c) != 0) {
        for (size_t i = 0; i < r.nerrors; i++)
            fprintf(stderr, "config error: %s\n", r.errors[i]);
        exit(2);
    }
    pt_cfg_dispose(&r);
    json_decref(cj);
    return c;
}

/* Picks per host position (counts has c->nhosts entries; a NULL pick counts in *none). */
static void tally(pt_cluster_t *c, pt_worker_t *w, unsigned draws, unsigned *counts,
                  unsigned *none)
{
    memset(counts, 0, c->nhosts * sizeof(unsigned));
    *none = 0;
    for (unsigned i = 0; i < draws; i++) {
        pt_host_t *h = pt_cluster_pick_host(c, w, NULL, NULL, 0);
        if (h == NULL) {
            (*none)++;
            continue;
        }
        for (unsigned k = 0; k < c->nhosts; k++)
            if (c->hosts[k] == h) {
                counts[k]++;
                break;
            }
    }
}

/* Picks that went to hosts [from, to). */
static unsigned sum(const unsigned *counts, unsigned from, unsigned to)
{
    unsigned s = 0;
    for (unsigned k = from; k < to; k++)
        s += counts[k];
    return s;
}

static void fail_hosts(pt_cluster_t *c, unsigned from, unsigned to, int failed)
{
    for (unsigned k = from; k < to; k++)
        pt_host_health_update(c->hosts[k], failed ? PT_HOST_FAILED_ACTIVE_HC : 0,
                              failed ? 0 : PT_HOST_FAILED_ACTIVE_HC);
}

static int near(unsigned got, double want, double tolerance)
{
    return fabs((double)got - want) <= tolerance;
}

static void test_failover_between_priorities(void)
{
    /* P=0 and P=1, 10 hosts each (hosts 0-9 and 10-19). */
    group_t g[] = {{.priority = 0, .n = 10}, {.priority = 1, .n = 10}};
    static const char *const policies[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"};
    for (int pi = 0; pi < 3; pi++) {
        pt_cluster_t *c = make(policies[pi], NULL, g, 2);
        unsigned n[20], none;
        tally(c, NULL, 10000, n, &none);
        PT_CHECK_INT(sum(n, 0, 10), 10000); /* healthy P=0 takes everything */
        /* Half of P=0 fails: 50% x 1.4 = 70% stays, 30% goes to P=1. */
        fail_hosts(c, 0, 5, 1);
        tally(c, NULL, 20000, n, &none);
        PT_CHECK_INT(sum(n, 0, 5), 0);
        PT_CHECK(near(sum(n, 5, 10), 14000, 500));
        PT_CHECK(near(sum(n, 10, 20), 6000, 500));
        /* All of P=0 fails: P=1 takes everything. */
        fail_hosts(c, 5, 10, 1);
        tally(c, NULL, 5000, n, &none);
        PT_CHECK_INT(sum(n, 10, 20), 5000);
        /* Back. */
        fail_hosts(c, 0, 10, 0);
        tally(c, NULL, 5000, n, &none);
        PT_CHECK_INT(sum(n, 0, 10), 5000);
        /* Outlier ejections count the same: 8 of P=0 ejected, 20% x 1.4 = 28% stays. */
        for (unsigned k = 0; k < 8; k++)
            pt_host_health_update(c->hosts[k], PT_HOST_FAILED_OUTLIER_CHECK, 0);
        tally(c, NULL, 20000, n, &none);
        PT_CHECK(near(sum(n, 8, 10), 5600, 400));
        PT_CHECK(near(sum(n, 10, 20), 14400, 400));
        for (unsigned k = 0; k < 8; k++)
            pt_host_health_update(c->hosts[k], 0, PT_HOST_FAILED_OUTLIER_CHECK);
        pt_cluster_unref(c);
    }
}

/* retry_priority previous_priorities: the priority load without the priorities tried,
 * spread over the others by their availability as Envoy spreads it. */
static void test_retry_priority_choice(void)
{
    /* P=0, P=1, P=2 with 10 hosts each (0-9, 10-19, 20-29). */
    group_t g[] = {{.priority = 0, .n = 10}, {.priority = 1, .n = 10}, {.priority = 2, .n = 10}};
    pt_cluster_t *c = make("ROUND_ROBIN", NULL, g, 3);
    uint16_t choice[100];
    uint64_t ex[3] = {0};
    /* Nothing excluded: the set's own load (all to P=0). */
    PT_CHECK_INT(pt_lb_retry_choice(c, NULL, ex, choice), 0);
    PT_CHECK(choice[0] == 0 && choice[99] == 0);
    /* P=0 excluded: P=1 (100% available) takes all. */
    ex[0] = 1;
    PT_CHECK_INT(pt_lb_retry_choice(c, NULL, ex, choice), 0);
    PT_CHECK(choice[0] == 2 && choice[99] == 2);
    unsigned n[30], none;
    memset(n, 0, sizeof(n));
    pt_lb_context_t ctx = {.priority_choice = choice};
    for (int i = 0; i < 1000; i++) {
        pt_host_t *h = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
        for (unsigned k = 0; k < 30; k++)
            n[k] += c->hosts[k] == h;
    }
    PT_CHECK_INT(sum(n, 10, 20), 1000);
    /* P=1 at 30% healthy (x 1.4 = 42), P=2 full (100): total capped at 100, P=1 gets
     * 42 * 100 / 100 = 42, P=2 the other 58. */
    fail_hosts(c, 10, 17, 1);
    PT_CHECK_INT(pt_lb_retry_choice(c, NULL, ex, choice), 0);
    unsigned p1 = 0, p2 = 0;
    for (int d = 0; d < 100; d++) {
        p1 += choice[d] == 2;
        p2 += choice[d] == 4;
    }
    PT_CHECK_INT(p1, 42);
    PT_CHECK_INT(p2, 58);
    PT_CHECK(choice[0] == 2 && choice[99] == 4); /* in priority order */
    /* P=0 and P=2 excluded, P=1's 42 alone: it takes all (normalized). */
    ex[0] = 1 | 4;
    PT_CHECK_INT(pt_lb_retry_choice(c, NULL, ex, choice), 0);
    PT_CHECK(choice[0] == 2 && choice[99] == 2);
    /* Every priority excluded: no availability left, the set's own load applies (-1). */
    ex[0] = 7;
    PT_CHECK_INT(pt_lb_retry_choice(c, NULL, ex, choice), -1);
    fail_hosts(c, 10, 17, 0);
    /* The host's priority, for the router to know what an attempt tried. */
    PT_CHECK_INT(atomic_load(&c->hosts[25]->priority), 2);
    (void)none;
    pt_cluster_unref(c);
}

static void test_eds_health_status(void)
{
    /* P=0: 5 healthy, 5 UNHEALTHY per the assignment; P=1 healthy: 70/30 as above. */
    group_t g[] = {{.priority = 0, .n = 5, .health = "HEALTHY"},
                   {.priority = 0, .n = 5, .health = "UNHEALTHY"},
                   {.priority = 1, .n = 10}};
    pt_cluster_t *c = make("ROUND_ROBIN", NULL, g, 3);
    unsigned n[20], none;
    tally(c, NULL, 20000, n, &none);
    PT_CHECK_INT(sum(n, 5, 10), 0);
    PT_CHECK(near(sum(n, 0, 5), 14000, 500));
    pt_cluster_unref(c);
    /* TIMEOUT is unhealthy too; DRAINING hosts are excluded: not counted, never picked. */
    group_t d[] = {{.priority = 0, .n = 2, .health = "TIMEOUT"},
                   {.priority = 0, .n = 8, .health = "DRAINING"},
                   {.priority = 0, .n = 4},
                   {.priority = 1, .n = 4}};
    c = make("RANDOM", NULL, d, 4);
    tally(c, NULL, 10000, n, &none);
    /* P=0: 4 healthy of 6 counted: 66% x 1.4 = 93 percent stays. */
    PT_CHECK_INT(sum(n, 0, 10), 0);
    PT_CHECK(near(sum(n, 10, 14), 9300, 400));
    PT_CHECK(near(sum(n, 14, 18), 700, 250));
    PT_CHECK_INT(c->lb_set->excluded_total, 8);
    pt_cluster_unref(c);
    /* DEGRADED hosts take what the healthy ones cannot: 25% healthy, 65% degraded -> 35/65. */
    group_t dg[] = {{.priority = 0, .n = 5, .health = "HEALTHY"},
                    {.priority = 0, .n = 13, .health = "DEGRADED"},
                    {.priority = 0, .n = 2, .health = "UNHEALTHY"}};
    c = make("ROUND_ROBIN", NULL, dg, 3);
    tally(c, NULL, 20000, n, &none);
    PT_CHECK(near(sum(n, 0, 5), 7000, 500));
    PT_CHECK(near(sum(n, 5, 18), 13000, 500));
    PT_CHECK_INT(sum(n, 18, 20), 0);
    PT_CHECK_INT(c->lb_set->degraded_total, 13);
    pt_cluster_unref(c);
}

static void test_panic_picks(void)
{
    /* One priority, 4 of 10 healthy (< 50%): panic, every host takes traffic. */
    group_t g[] = {{.n = 10}};
    pt_cluster_t *c = make("ROUND_ROBIN", NULL, g, 1);
    fail_hosts(c, 0, 6, 1);
    unsigned n[10], none;
    tally(c, NULL, 1000, n, &none);
    for (int k = 0; k < 10; k++)
        PT_CHECK_INT(n[k], 100);
    pt_cluster_unref(c);
    /* fail_traffic_on_panic: nothing instead. */
    c = make("ROUND_ROBIN", "{\"common_lb_config\": {\"zone_aware_lb_config\": "
                            "{\"fail_traffic_on_panic\": true}}}", g, 1);
    fail_hosts(c, 0, 6, 1);
    tally(c, NULL, 100, n, &none);
    PT_CHECK_INT(none, 100);
    pt_cluster_unref(c);
    /* Threshold 0: never panic; the healthy ones only, and none when none is. */
    c = make("RANDOM", "{\"common_lb_config\": {\"healthy_panic_threshold\": {\"value\": 0}}}",
             g, 1);
    fail_hosts(c, 0, 9, 1);
    tally(c, NULL, 100, n, &none);
    PT_CHECK_INT(n[9], 100);
    fail_hosts(c, 9, 10, 1);
    tally(c, NULL, 100, n, &none);
    PT_CHECK_INT(none, 100);
    pt_cluster_unref(c);
    /* Total panic across priorities: by host count, 2 and 8 hosts. */
    group_t t[] = {{.priority = 0, .n = 2}, {.priority = 1, .n = 8}};
    c = make("RANDOM", NULL, t, 2);
    fail_hosts(c, 0, 10, 1);
    tally(c, NULL, 20000, n, &none);
    PT_CHECK(near(sum(n, 0, 2), 4000, 400));
    PT_CHECK(near(sum(n, 2, 10), 16000, 400));
    pt_cluster_unref(c);
}

static void test_locality_weighted(void)
{
    /* X (weight 1, hosts 0-9) and Y (weight 2, hosts 10-19). */
    const char *lw = "{\"common_lb_config\": {\"locality_weighted_lb_config\": {}}}";
    group_t g[] = {{.zone = "x", .lweight = 1, .n = 10}, {.zone = "y", .lweight = 2, .n = 10}};
    pt_cluster_t *c = make("ROUND_ROBIN", lw, g, 2);
    unsigned n[20], none;
    tally(c, NULL, 30000, n, &none);
    /* A weighted round robin of localities: exactly 1:2. */
    PT_CHECK(near(sum(n, 0, 10), 10000, 2));
    /* Half of X fails: 0.7 against 2 (docs: 26%). */
    fail_hosts(c, 0, 5, 1);
    tally(c, NULL, 27000, n, &none);
    PT_CHECK(near(sum(n, 5, 10), 7000, 3));
    PT_CHECK_INT(sum(n, 0, 5), 0);
    pt_cluster_unref(c);
    /* A locality without a weight takes no load. */
    group_t z[] = {{.zone = "x", .n = 3}, {.zone = "y", .lweight = 1, .n = 3}};
    c = make("RANDOM", lw, z, 2);
    tally(c, NULL, 1000, n, &none);
    PT_CHECK_INT(sum(n, 3, 6), 1000);
    pt_cluster_unref(c);
}

static void test_zone_aware(void)
{
    pt_locality_t here = {"r", "a", ""};
    PT_CHECK(pt_lb_set_local("local", &here) == 0);
    /* The local cluster: 3 proxies in zone a, 1 in zone b (a: 75%). */
    group_t lg[] = {{.zone = "a", .n = 3}, {.zone = "b", .n = 1}};
    pt_cluster_t *local = make("ROUND_ROBIN", "{\"name\": \"local\"}", lg, 2);
    /* Upstream: 5 hosts in a, 5 in b (a: 50%): a takes 50/75 = 66.66% of this proxy's
     * picks, the rest crosses to b (its residual capacity). */
    group_t ug[] = {{.zone = "a", .n = 5}, {.zone = "b", .n = 5}};
    pt_cluster_t *up = make("ROUND_ROBIN", NULL, ug, 2);
    pt_cluster_t *both[2] = {local, up};
    pt_view_t *v = pt_view_new(both, 2);
    pt_worker_view_t wv = {.view = v};
    pt_worker_t w;
    memset(&w, 0, sizeof(w));
    w.view = &wv;
    unsigned n[10], none;
    tally(up, &w, 30000, n, &none);
    PT_CHECK(near(sum(n, 0, 5), 20000, 600));
    /* Without a worker's view (no local cluster known): no zone routing, 50/50. */
    tally(up, NULL, 10000, n, &none);
    PT_CHECK(near(sum(n, 0, 5), 5000, 10));
    /* Upstream a 80%: more than the local share, every pick stays in a. */
    group_t dg[] = {{.zone = "a", .n = 8}, {.zone = "b", .n = 2}};
    pt_cluster_t *direct = make("RANDOM", NULL, dg, 2);
    tally(direct, &w, 2000, n, &none);
    PT_CHECK_INT(sum(n, 0, 8), 2000);
    /* The local cluster changes (zone a's proxies fail), seen at the next pick: in panic
     * (1 of 4 healthy < 50%), it says nothing: no zone routing, 80/20 by host count. */
    fail_hosts(local, 0, 3, 1);
    tally(direct, &w, 2000, n, &none);
    PT_CHECK(near(sum(n, 0, 8), 1600, 150));
    /* Too small a cluster (min_cluster_size 6 by default): no zone routing. */
    fail_hosts(local, 0, 3, 0);
    group_t sg[] = {{.zone = "a", .n = 2}, {.zone = "b", .n = 2}};
    pt_cluster_t *small = make("ROUND_ROBIN", NULL, sg, 2);
    tally(small, &w, 1000, n, &none);
    PT_CHECK_INT(sum(n, 0, 2), 500);
    pt_cluster_unref(small);
    pt_cluster_unref(direct);
    pt_view_unref(v);
    pt_cluster_unref(up);
    pt_cluster_unref(local);
    PT_CHECK(pt_lb_set_local(NULL, NULL) == 0);
}

/* ---- the balancers ------------------------------------------------------------------ */

static void test_round_robin(void)
{
    group_t g[] = {{.n = 4}};
    pt_cluster_t *c = make("ROUND_ROBIN", NULL, g, 1);
    /* In turn: each host once in every 4 picks. */
    pt_host_t *seen[4];
    for (int i = 0; i < 4; i++)
        seen[i] = pt_cluster_pick_host(c, NULL, NULL, NULL, 0);
    for (int round = 0; round < 10; round++)
        for (int i = 0; i < 4; i++)
            PT_CHECK(pt_cluster_pick_host(c, NULL, NULL, NULL, 0) == seen[i]);
    pt_cluster_unref(c);
    /* Weighted (1, 2, 3, 4): exact proportions over a cycle of 10, smoothly: the heaviest
     * never comes more than twice in a row. */
    group_t w[] = {{.n = 1, .weight = 1}, {.n = 1, .weight = 2}, {.n = 1, .weight = 3},
                   {.n = 1, .weight = 4}};
    c = make("ROUND_ROBIN", NULL, w, 4);
    unsigned n[4] = {0}, run = 0, maxrun = 0;
    pt_host_t *last = NULL;
    for (int i = 0; i < 1000; i++) {
        pt_host_t *h = pt_cluster_pick_host(c, NULL, NULL, NULL, 0);
        run = h == last ? run + 1 : 1;
        if (run > maxrun)
            maxrun = run;
        last = h;
        for (int k = 0; k < 4; k++)
            n[k] += c->hosts[k] == h;
    }
    for (int k = 0; k < 4; k++)
        PT_CHECK(near(n[k], 100.0 * (k + 1), 2));
    PT_CHECK(maxrun <= 2);
    pt_cluster_unref(c);
}

static void test_random(void)
{
    group_t g[] = {{.n = 1, .weight = 100}, {.n = 2}};
    pt_cluster_t *c = make("RANDOM", NULL, g, 2);
    unsigned n[3], none;
    tally(c, NULL, 30000, n, &none);
    for (int i = 0; i < 3; i++) /* weights are not used by RANDOM */
        PT_CHECK(n[i] > 9000 && n[i] < 11000);
    pt_cluster_unref(c);
}

static void test_least_request(void)
{
    group_t g[] = {{.n = 3}};
    pt_cluster_t *c = make("LEAST_REQUEST", NULL, g, 1);
    unsigned n[3], none;
    /* P2C: a busy host wins only when both draws are it: 1/9 of the picks. */
    atomic_store(&c->hosts[0]->rq_active, 10);
    tally(c, NULL, 18000, n, &none);
    PT_CHECK(n[0] > 1600 && n[0] < 2400);
    PT_CHECK(n[1] > 7200 && n[2] > 7200);
    atomic_store(&c->hosts[0]->rq_active, 0);
    pt_cluster_unref(c);
    /* With as many choices as it takes, the least loaded host is (nearly) always found. */
    c = make("LEAST_REQUEST", "{\"least_request_lb_config\": {\"choice_count\": 100}}", g, 1);
    atomic_store(&c->hosts[0]->rq_active, 5);
    atomic_store(&c->hosts[1]->rq_active, 3);
    atomic_store(&c->hosts[2]->rq_active, 2);
    tally(c, NULL, 1000, n, &none);
    PT_CHECK_INT(n[2], 1000);
    /* Tried hosts are avoided first, even when least loaded. */
    pt_host_t *tried[1] = {c->hosts[2]};
    unsigned other = 0;
    for (int i = 0; i < 1000; i++)
        other += pt_cluster_pick_host(c, NULL, NULL, tried, 1) != c->hosts[2];
    PT_CHECK_INT(other, 1000);
    pt_cluster_unref(c);
    /* Weighted: Envoy's EDF with weight / (active + 1)^bias. Idle: 1:3. */
    group_t w[] = {{.n = 1, .weight = 1}, {.n = 1, .weight = 3}};
    c = make("LEAST_REQUEST", NULL, w, 2);
    unsigned m[2];
    tally(c, NULL, 20000, m, &none);
    PT_CHECK(near(m[0], 5000, 10));
    /* 1/1 against 3/(5+1) = 0.5: 2:1. */
    atomic_store(&c->hosts[1]->rq_active, 5);
    tally(c, NULL, 21000, m, &none);
    PT_CHECK(near(m[0], 14000, 20));
    atomic_store(&c->hosts[1]->rq_active, 0);
    pt_cluster_unref(c);
    /* active_request_bias 0: plain weighted round robin whatever the load. */
    c = make("LEAST_REQUEST", "{\"least_request_lb_config\": {\"active_request_bias\": "
                              "{\"default_value\": 0, \"runtime_key\": \"x\"}}}", w, 2);
    atomic_store(&c->hosts[1]->rq_active, 50);
    tally(c, NULL, 20000, m, &none);
    PT_CHECK(near(m[0], 5000, 10));
    atomic_store(&c->hosts[1]->rq_active, 0);
    pt_cluster_unref(c);
}

/* ---- weighted schedules: wheels and least request classes --------------------------- */

/* Picks `draws` times, writing each pick's host position to seq. */
static void sequence(pt_cluster_t *c, unsigned draws, unsigned *seq)
{
    for (unsigned i = 0; i < draws; i++) {
        pt_host_t *h = pt_cluster_pick_host(c, NULL, NULL, NULL, 0);
        seq[i] = UINT32_MAX;
        for (unsigned k = 0; k < c->nhosts; k++)
            if (c->hosts[k] == h)
                seq[i] = k;
    }
}

/* Every `period` consecutive picks of seq (any window, not only aligned ones) hold host k
 * exactly want[k] times: the picks repeat one period, whatever the worker started at. */
static int exact_windows(const unsigned *seq, unsigned n, unsigned period, const unsigned *want,
                         unsigned nhosts)
{
    for (unsigned from = 0; from + period <= n; from++) {
        unsigned got[16] = {0};
        for (unsigned i = from; i < from + period; i++) {
            if (seq[i] >= nhosts)
                return 0;
            got[seq[i]]++;
        }
        for (unsigned k = 0; k < nhosts; k++)
            if (got[k] != want[k])
                return 0;
    }
    return 1;
}

static void test_round_robin_wheel(void)
{
    unsigned seq[2000];
    /* Weights 1, 2, 3, 4: a period of 10, in any 10 picks host k exactly k + 1 times. */
    group_t w[] = {{.n = 1, .weight = 1}, {.n = 1, .weight = 2}, {.n = 1, .weight = 3},
                   {.n = 1, .weight = 4}};
    pt_cluster_t *c = make("ROUND_ROBIN", NULL, w, 4);
    sequence(c, 1000, seq);
    static const unsigned want4[] = {1, 2, 3, 4};
    PT_CHECK(exact_windows(seq, 1000, 10, want4, 4));
    pt_cluster_unref(c);
    /* Runs: one host of weight 5, two of weight 3 (a run weighing 6): a period of 11, each
     * weight-3 host 3 times in it (round robin within the run goes on across periods). */
    group_t r[] = {{.n = 1, .weight = 5}, {.n = 2, .weight = 3}};
    c = make("ROUND_ROBIN", NULL, r, 2);
    sequence(c, 1000, seq);
    static const unsigned want3[] = {5, 3, 3};
    PT_CHECK(exact_windows(seq, 1000, 11, want3, 3));
    pt_cluster_unref(c);
    /* Equal weights scaled (20 and 40): the gcd goes, a period of 3. */
    group_t g[] = {{.n = 1, .weight = 20}, {.n = 1, .weight = 40}};
    c = make("ROUND_ROBIN", NULL, g, 2);
    sequence(c, 300, seq);
    static const unsigned want2[] = {1, 2};
    PT_CHECK(exact_windows(seq, 300, 3, want2, 2));
    pt_cluster_unref(c);
    /* A period too long for a wheel (4097 + 1 picks): the EDF over the runs, with the same
     * proportions. */
    group_t big[] = {{.n = 1, .weight = 4097}, {.n = 1, .weight = 1}};
    c = make("ROUND_ROBIN", NULL, big, 2);
    unsigned n[2], none;
    tally(c, NULL, 4098 * 4, n, &none);
    PT_CHECK(near(n[1], 4, 1));
    PT_CHECK(near(n[0], 4097 * 4, 1));
    pt_cluster_unref(c);
}

static void test_locality_wheel(void)
{
    const char *lw = "{\"common_lb_config\": {\"locality_weighted_lb_config\": {}}}";
    /* X weight 1 (hosts 0-1), Y weight 2 (hosts 2-3): in any 3 picks, one to X. */
    group_t g[] = {{.zone = "x", .lweight = 1, .n = 2}, {.zone = "y", .lweight = 2, .n = 2}};
    pt_cluster_t *c = make("ROUND_ROBIN", lw, g, 2);
    unsigned seq[600];
    sequence(c, 600, seq);
    unsigned bad = 0;
    for (unsigned from = 0; from + 3 <= 600; from++)
        bad += (seq[from] < 2) + (seq[from + 1] < 2) + (seq[from + 2] < 2) != 1;
    PT_CHECK_INT(bad, 0);
    pt_cluster_unref(c);
    /* Locality weights of a period too long for a wheel (4000 + 4001): the EDF, 4000:4001. */
    group_t b[] = {{.zone = "x", .lweight = 4000, .n = 1}, {.zone = "y", .lweight = 4001, .n = 1}};
    c = make("RANDOM", lw, b, 2);
    unsigned n[2], none;
    tally(c, NULL, 8001 * 2, n, &none);
    PT_CHECK(near(n[0], 8000, 2));
    pt_cluster_unref(c);
}

static void set_active(pt_cluster_t *c, const unsigned *active)
{
    for (unsigned k = 0; k < c->nhosts; k++)
        atomic_store(&c->hosts[k]->rq_active, active[k]);
}

static void test_least_request_classes(void)
{
    /* Weights 1, 2, 3, 4, one host each. */
    group_t w[] = {{.n = 1, .weight = 1}, {.n = 1, .weight = 2}, {.n = 1, .weight = 3},
                   {.n = 1, .weight = 4}};
    pt_cluster_t *c = make("LEAST_REQUEST", NULL, w, 4);
    unsigned n[4], none;
    /* Active 0, 1, 2, 3: every host weighs 1 now: the same share each. */
    static const unsigned even[] = {0, 1, 2, 3};
    set_active(c, even);
    tally(c, NULL, 4000, n, &none);
    for (int k = 0; k < 4; k++)
        PT_CHECK(near(n[k], 1000, 3));
    /* Host 3 busier than its classes count (99 active requests; a class per count below 8
     * here): put back in a heap of its own, with its weight 4 / 100. The others 1, 2, 3. */
    static const unsigned busy[] = {0, 0, 0, 99};
    set_active(c, busy);
    tally(c, NULL, 604, n, &none); /* the change settles */
    tally(c, NULL, 6040, n, &none);
    PT_CHECK(near(n[0], 1000, 3) && near(n[1], 2000, 3) && near(n[2], 3000, 3));
    PT_CHECK(near(n[3], 40, 3));
    /* Back and forth between the classes and that heap: each round's shares. */
    static const unsigned round[][4] = {{0, 0, 0, 0}, {300, 1, 0, 500}, {0, 0, 0, 0}};
    static const double share[][4] = {{1.0, 2.0, 3.0, 4.0}, {1.0 / 301, 1.0, 3.0, 4.0 / 501},
                                      {1.0, 2.0, 3.0, 4.0}};
    for (int rd = 0; rd < 3; rd++) {
        set_active(c, round[rd]);
        tally(c, NULL, 2000, n, &none);
        tally(c, NULL, 20000, n, &none);
        double total = share[rd][0] + share[rd][1] + share[rd][2] + share[rd][3];
        for (int k = 0; k < 4; k++)
            PT_CHECK(near(n[k], 20000.0 * share[rd][k] / total, 4));
    }
    /* A retry avoids the tried host however early its deadline. */
    static const unsigned idle[] = {0, 0, 0, 0};
    set_active(c, idle);
    pt_host_t *tried[1] = {c->hosts[3]};
    unsigned other = 0;
    for (int i = 0; i < 1000; i++)
        other += pt_cluster_pick_host(c, NULL, NULL, tried, 1) != c->hosts[3];
    PT_CHECK_INT(other, 1000);
    pt_cluster_unref(c);

    /* 1,000 hosts of weights 1..10: Envoy's EDF over the hosts takes each host in turn by
     * its weight: after 10 x 5,500 picks, host i exactly about 10 x its weight. */
    group_t many[10];
    for (unsigned k = 0; k < 10; k++)
        many[k] = (group_t){.n = 100, .weight = k + 1};
    c = make("LEAST_REQUEST", NULL, many, 10);
    static unsigned m[1000];
    tally(c, NULL, 55000, m, &none);
    unsigned off = 0;
    for (unsigned i = 0; i < 1000; i++)
        off += !near(m[i], 10.0 * (i / 100 + 1), 1);
    PT_CHECK_INT(off, 0);
    pt_cluster_unref(c);

    /* active_request_bias 0.5: weight / (active + 1)^0.5; active 0 and 3: 1 against 1/2. */
    group_t two[] = {{.n = 1, .weight = 2}, {.n = 1, .weight = 1}};
    c = make("LEAST_REQUEST", "{\"least_request_lb_config\": {\"active_request_bias\": "
                              "{\"default_value\": 0.5, \"runtime_key\": \"x\"}}}", two, 2);
    static const unsigned half[] = {3, 0};
    set_active(c, half);
    unsigned t[2];
    tally(c, NULL, 300, t, &none);
    tally(c, NULL, 30000, t, &none);
    PT_CHECK(near(t[0], 15000, 4)); /* 2 / 2 against 1 / 1 */
    set_active(c, idle);
    pt_cluster_unref(c);
}

static void test_retries_and_stale_health(void)
{
    group_t g[] = {{.priority = 0, .n = 3}, {.priority = 1, .n = 2}};
    static const char *const policies[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"};
    for (int pi = 0; pi < 3; pi++) {
        pt_cluster_t *c = make(policies[pi], NULL, g, 2);
        /* A retry avoids the hosts already tried while another is available. */
        pt_host_t *tried[2] = {c->hosts[0], c->hosts[1]};
        for (int i = 0; i < 300; i++)
            PT_CHECK(pt_cluster_pick_host(c, NULL, NULL, tried, 2) == c->hosts[2]);
        /* Every P=0 host tried: a P=1 host rather than a tried one. */
        pt_host_t *all0[3] = {c->hosts[0], c->hosts[1], c->hosts[2]};
        for (int i = 0; i < 300; i++) {
            pt_host_t *h = pt_cluster_pick_host(c, NULL, NULL, all0, 3);
            PT_CHECK(h == c->hosts[3] || h == c->hosts[4]);
        }
        /* Every host tried: one of them again rather than none. */
        pt_host_t *every[5] = {c->hosts[0], c->hosts[1], c->hosts[2], c->hosts[3], c->hosts[4]};
        PT_CHECK(pt_cluster_pick_host(c, NULL, NULL, every, 5) != NULL);
        /* A host whose health bit is set behind the set's back (the main thread has not
         * computed again yet) is not picked. */
        atomic_store(&c->hosts[0]->health, PT_HOST_FAILED_OUTLIER_CHECK);
        for (int i = 0; i < 300; i++)
            PT_CHECK(pt_cluster_pick_host(c, NULL, NULL, NULL, 0) != c->hosts[0]);
        atomic_store(&c->hosts[0]->health, 0);
        pt_cluster_unref(c);
    }
}

static void test_no_hosts(void)
{
    static const char *const policies[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"};
    for (int pi = 0; pi < 3; pi++) {
        pt_cluster_t *c = make(policies[pi], NULL, NULL, 0);
        PT_CHECK(pt_cluster_pick_host(c, NULL, NULL, NULL, 0) == NULL);
        pt_cluster_unref(c);
    }
}

/* A set is published again when health changes; a worker's state follows it. */
static void test_republish(void)
{
    group_t g[] = {{.n = 2}};
    pt_cluster_t *c = make("ROUND_ROBIN", NULL, g, 1);
    pt_lb_set_t *before = atomic_load(&c->lb_set);
    uint64_t gen = before->gen;
    PT_CHECK(pt_cluster_pick_host(c, NULL, NULL, NULL, 0) != NULL);
    fail_hosts(c, 0, 1, 1);
    PT_CHECK(atomic_load(&c->lb_set)->gen != gen);
    PT_CHECK_INT(atomic_load(&c->lb_set)->healthy_total, 1);
    for (int i = 0; i < 10; i++)
        PT_CHECK(pt_cluster_pick_host(c, NULL, NULL, NULL, 0) == c->hosts[1]);
    PT_CHECK_INT(atomic_load(&c->state->membership_healthy), 1);
    pt_cluster_unref(c);
}

int main(void)
{
    PT_RUN(test_priority_levels_two);
    PT_RUN(test_priority_levels_three);
    PT_RUN(test_degraded);
    PT_RUN(test_panic);
    PT_RUN(test_locality_weights_table);
    PT_RUN(test_failover_between_priorities);
    PT_RUN(test_retry_priority_choice);
    PT_RUN(test_eds_health_status);
    PT_RUN(test_panic_picks);
    PT_RUN(test_locality_weighted);
    PT_RUN(test_zone_aware);
    PT_RUN(test_round_robin);
    PT_RUN(test_random);
    PT_RUN(test_least_request);
    PT_RUN(test_round_robin_wheel);
    PT_RUN(test_locality_wheel);
    PT_RUN(test_least_request_classes);
    PT_RUN(test_retries_and_stale_health);
    PT_RUN(test_no_hosts);
    PT_RUN(test_republish);
    PT_TEST_EXIT();
}
