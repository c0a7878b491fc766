/* Unit tests for ORIGINAL_DST clusters' hosts (proxy/cluster.c): one host per destination,
 * made on demand and shared by every worker; the override header and the port override; a
 * worker's own copy of the hosts and its refill after a cleanup; Envoy's cleanup rule (kept
 * while picked since the last cleanup or carrying connections or requests). */
#include "proxy/cluster.h"
#include "proxy/http.h"
#include "proxy/worker.h"
#include "pt_test.h"
#include "pt_test_json.h"

static pt_cluster_t *make(const char *json)
{
    json_t *j = J(json);
    pt_cfg_t r;
    pt_cfg_init(&r, j);
    pt_cluster_t *c = pt_cluster_parse(&r);
    pt_cfg_finish(&r);
    for (size_t i = 0; i < r.nerrors; i++)
        fprintf(stderr, "  %s\n", r.errors[i]);
    int ok = c != NULL && pt_cfg_ok(&r) && pt_cluster_prepare(c) == 0;
    pt_cfg_dispose(&r);
    json_decref(j);
    if (!ok) {
        pt_cluster_unref(c);
        return NULL;
    }
    return c;
}

static pt_addr_t addr(const char *ip, unsigned port)
{
    pt_addr_t a;
    pt_addr_parse(&a, ip, port);
    return a;
}

static pt_host_t *pick_dst(pt_cluster_t *c, pt_worker_t *w, const char *ip, unsigned port)
{
    pt_addr_t a = addr(ip, port);
    pt_lb_context_t ctx = {.original_dst = &a};
    return pt_cluster_pick_host(c, w, &ctx, NULL, 0);
}

static void test_one_host_per_destination(void)
{
    pt_cluster_t *c = make("{'name': 'odst1', 'type': 'ORIGINAL_DST', "
                           "'lb_policy': 'CLUSTER_PROVIDED'}");
    PT_CHECK(c != NULL);
    pt_worker_t w0 = {.id = 0}, w1 = {.id = 1};
    pt_host_t *a = pick_dst(c, &w0, "10.0.0.1", 80);
    pt_host_t *b = pick_dst(c, &w1, "10.0.0.1", 80); /* another worker: the same host */
    pt_host_t *d = pick_dst(c, &w0, "10.0.0.2", 80);
    pt_host_t *e = pick_dst(c, NULL, "10.0.0.1", 80); /* no worker: the table itself */
    PT_CHECK(a != NULL && a == b && a == e && d != NULL && d != a);
    PT_CHECK_STR(a->address_str, "10.0.0.1:80");
    PT_CHECK_INT(atomic_load(&c->state->membership_total), 2);
    /* Without a destination (not redirected, no header): no host. */
    pt_lb_context_t none = {0};
    PT_CHECK(pt_cluster_pick_host(c, &w0, &none, NULL, 0) == NULL);
    PT_CHECK(pt_cluster_pick_host(c, &w0, NULL, NULL, 0) == NULL);
    unsigned n;
    pt_host_t **all = pt_cluster_odst_hosts(c, &n);
    PT_CHECK_INT(n, 2);
    for (unsigned i = 0; i < n; i++)
        pt_host_unref(all[i]);
    free(all);
    pt_cluster_host_done(c, a);
    pt_cluster_host_done(c, b);
    pt_cluster_host_done(c, d);
    pt_cluster_host_done(c, e);
    pt_cluster_unref(c);
}

static void test_header_and_port_override(void)
{
    pt_cluster_t *c = make("{'name': 'odst2', 'type': 'ORIGINAL_DST', "
                           "'lb_policy': 'CLUSTER_PROVIDED', 'original_dst_lb_config': {"
                           "'use_http_header': true, 'upstream_port_override': 9000}}");
    PT_CHECK(c != NULL);
    pt_arena_t arena = {0};
    pt_http_headers_t hs;
    pt_http_headers_init(&hs, &arena);
    pt_http_headers_add_str(&hs, "x-envoy-original-dst-host", "[fd00::7]:1234");
    pt_addr_t orig = addr("10.0.0.1", 80);
    pt_lb_context_t ctx = {.original_dst = &orig, .headers = &hs};
    pt_host_t *h = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
    PT_CHECK(h != NULL);
    PT_CHECK_STR(h->address_str, "[fd00::7]:9000"); /* the header's, the override's port */
    pt_cluster_host_done(c, h);
    /* An invalid header: the connection's destination. */
    pt_http_headers_t bad;
    pt_http_headers_init(&bad, &arena);
    pt_http_headers_add_str(&bad, "x-envoy-original-dst-host", "fd00::7:1234");
    ctx.headers = &bad;
    h = pt_cluster_pick_host(c, NULL, &ctx, NULL, 0);
    PT_CHECK(h != NULL);
    PT_CHECK_STR(h->address_str, "10.0.0.1:9000");
    pt_cluster_host_done(c, h);
    pt_arena_dispose(&arena);
    pt_cluster_unref(c);
}

static void test_cleanup_rule_and_worker_copies(void)
{
    pt_cluster_t *c = make("{'name': 'odst3', 'type': 'ORIGINAL_DST', "
                           "'lb_policy': 'CLUSTER_PROVIDED', 'cleanup_interval': '1s'}");
    PT_CHECK(c != NULL);
    pt_worker_t w0 = {.id = 0};
    pt_host_t *idle = pick_dst(c, &w0, "10.0.0.1", 80);
    pt_host_t *busy = pick_dst(c, &w0, "10.0.0.2", 80);
    PT_CHECK(idle != NULL && busy != NULL);
    atomic_fetch_add(&busy->cx_active, 1);
    uint64_t now = 1000000, epoch = atomic_load(&pt_odst_removed_epoch);
    /* First cleanup: both were picked since (none before): kept, asked again next time. */
    PT_CHECK_INT(pt_cluster_odst_cleanup(c, now), 0);
    /* Not yet due. */
    PT_CHECK_INT(pt_cluster_odst_cleanup(c, now + 500), 0);
    /* Second: the idle one goes, the busy one stays. */
    PT_CHECK_INT(pt_cluster_odst_cleanup(c, now + 1000), 1);
    PT_CHECK(atomic_load(&idle->odst_flags) & PT_HOST_ODST_REMOVED);
    PT_CHECK(!(atomic_load(&busy->odst_flags) & PT_HOST_ODST_REMOVED));
    PT_CHECK_INT(atomic_load(&c->state->membership_total), 1);
    PT_CHECK(atomic_load(&pt_odst_removed_epoch) > epoch);
    /* The worker's copy is dropped at its next pick; the address comes back as the same
     * host object while something still holds it (here: this test). */
    pt_host_t *again = pick_dst(c, &w0, "10.0.0.1", 80);
    PT_CHECK(again == idle);
    PT_CHECK(!(atomic_load(&again->odst_flags) & PT_HOST_ODST_REMOVED));
    PT_CHECK_INT(atomic_load(&c->state->membership_total), 2);
    pt_cluster_host_done(c, again);
    pt_cluster_host_done(c, idle);
    atomic_fetch_sub(&busy->cx_active, 1);
    pt_cluster_host_done(c, busy);
    /* The busy one, idle now and not picked since the last cleanup, goes at the next; the
     * other was picked again: it goes one cleanup later. */
    PT_CHECK_INT(pt_cluster_odst_cleanup(c, now + 2000), 1);
    PT_CHECK_INT(atomic_load(&c->state->membership_total), 1);
    PT_CHECK_INT(pt_cluster_odst_cleanup(c, now + 3000), 1);
    PT_CHECK_INT(atomic_load(&c->state->membership_total), 0);
    pt_cluster_unref(c);
}

int main(void)
{
    pt_worker_set_count(2); /* per-worker copies for workers 0 and 1 */
    PT_RUN(test_one_host_per_destination);
    PT_RUN(test_header_and_port_override);
    PT_RUN(test_cleanup_rule_and_worker_copies);
    PT_TEST_EXIT();
}
