/* Unit tests for discovery/lb: the random and least-request balancers on hand-built
 * clusters (health, panic, retries avoiding tried hosts, weights, active requests).
 * Distributions are checked with bounds many standard deviations wide, so a correct
 * balancer fails them with negligible probability. */
#include "discovery/lb.h"
#include "pt_test.h"

enum { MAXH = 4 };

typedef struct fixture {
    pt_cluster_t c;
    pt_host_t h[MAXH];
    pt_host_t *hp[MAXH];
} fixture_t;

static void setup(fixture_t *f, unsigned n, pt_lb_policy_t policy)
{
    memset(f, 0, sizeof(*f));
    for (unsigned i = 0; i < n; i++) {
        f->h[i].weight = 1;
        f->hp[i] = &f->h[i];
    }
    f->c.name = "c";
    f->c.hosts = f->hp;
    f->c.nhosts = n;
    f->c.lb_policy = policy;
    f->c.lb_choice_count = 2;
    f->c.healthy_panic_threshold = 50.0;
    f->c.equal_weights = 1;
}

/* How often each host is picked in `draws` picks (excluding `ex`, if not NULL). */
static void tally(fixture_t *f, unsigned draws, pt_host_t *ex, unsigned counts[MAXH])
{
    pt_host_t *exclude[1] = {ex};
    memset(counts, 0, sizeof(unsigned) * MAXH);
    for (unsigned i = 0; i < draws; i++) {
        pt_host_t *h = pt_cluster_pick_host(&f->c, NULL, NULL, exclude, ex ? 1 : 0);
        if (h == NULL) {
            counts[MAXH - 1] += 1000000; /* makes any bound check fail */
            continue;
        }
        counts[h - f->h]++;
    }
}

static void test_random_is_uniform_and_skips_unhealthy(void)
{
    fixture_t f;
    unsigned n[MAXH];
    setup(&f, 3, PT_LB_RANDOM);
    f.h[0].weight = 100; /* weights are not used by RANDOM */
    tally(&f, 30000, NULL, n);
    for (int i = 0; i < 3; i++)
        PT_CHECK(n[i] > 9000 && n[i] < 11000);
    /* Host 1 unhealthy: never picked (2 of 3 healthy is above the 50% panic threshold). */
    atomic_store(&f.h[1].health, PT_HOST_FAILED_ACTIVE_HC);
    tally(&f, 3000, NULL, n);
    PT_CHECK_INT(n[1], 0);
    PT_CHECK(n[0] > 1200 && n[2] > 1200);
    /* A retry avoids the host already tried while another is available. */
    tally(&f, 1000, &f.h[0], n);
    PT_CHECK_INT(n[2], 1000);
    /* Panic (1 of 3 healthy < 50%): every host is used again. */
    atomic_store(&f.h[2].health, PT_HOST_FAILED_ACTIVE_HC);
    tally(&f, 3000, NULL, n);
    for (int i = 0; i < 3; i++)
        PT_CHECK(n[i] > 700);
}

static void test_least_request_prefers_idle_hosts(void)
{
    fixture_t f;
    unsigned n[MAXH];
    setup(&f, 3, PT_LB_LEAST_REQUEST);
    /* P2C: a busy host wins only when both draws are it: 1/9 of the picks. */
    atomic_store(&f.h[0].rq_active, 10);
    tally(&f, 18000, NULL, n);
    PT_CHECK(n[0] > 1600 && n[0] < 2400);
    PT_CHECK(n[1] > 7200 && n[2] > 7200);
    /* With as many choices as it takes, the least loaded host is (nearly) always found. */
    f.c.lb_choice_count = 100;
    atomic_store(&f.h[1].rq_active, 3);
    atomic_store(&f.h[2].rq_active, 2);
    tally(&f, 1000, NULL, n);
    PT_CHECK_INT(n[2], 1000);
    /* Tried hosts are avoided first, even when least loaded. */
    tally(&f, 1000, &f.h[2], n);
    PT_CHECK_INT(n[1], 1000);
}

static void test_least_request_weighted(void)
{
    fixture_t f;
    unsigned n[MAXH];
    setup(&f, 2, PT_LB_LEAST_REQUEST);
    f.h[1].weight = 3;
    f.c.equal_weights = 0; /* as pt_cluster_parse would have found */
    /* Idle: in proportion to weight, 1:3. */
    tally(&f, 20000, NULL, n);
    PT_CHECK(n[0] > 4400 && n[0] < 5600);
    /* Weight over (active + 1): 1/1 against 3/(5+1) = 0.5, so 2:1. */
    atomic_store(&f.h[1].rq_active, 5);
    tally(&f, 21000, NULL, n);
    PT_CHECK(n[0] > 13300 && n[0] < 14700);
}

static void test_no_hosts(void)
{
    fixture_t f;
    setup(&f, 0, PT_LB_LEAST_REQUEST);
    PT_CHECK(pt_cluster_pick_host(&f.c, NULL, NULL, NULL, 0) == NULL);
    setup(&f, 0, PT_LB_RANDOM);
    PT_CHECK(pt_cluster_pick_host(&f.c, NULL, NULL, NULL, 0) == NULL);
}

int main(void)
{
    PT_RUN(test_random_is_uniform_and_skips_unhealthy);
    PT_RUN(test_least_request_prefers_idle_hosts);
    PT_RUN(test_least_request_weighted);
    PT_RUN(test_no_hosts);
    PT_TEST_EXIT();
}
