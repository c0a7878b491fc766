/* Unit tests for discovery/dns.c: the pure rules (the lookups of each dns_lookup_family,
 * when to resolve again after a success with and without respect_dns_ttl, the failure
 * backoff) and the DNS fields of a Cluster as pt_cluster_parse reads them (values, Envoy's
 * defaults, and bad input rejected with its exact message and path).
 *
 * Configs are inline JSON with single quotes (J() turns them into double quotes). */
#include "discovery/dns.h"
#include "proxy/cluster.h"
#include "pt_test.h"
#include "pt_test_json.h"

#include <arpa/inet.h>
#include <sys/socket.h>

static void test_family_plan(void)
{
    int first, second;
    pt_dns_family_plan(PT_DNS_AUTO, &first, &second);
    PT_CHECK_INT(first, AF_INET6);
    PT_CHECK_INT(second, AF_INET);
    pt_dns_family_plan(PT_DNS_V4_PREFERRED, &first, &second);
    PT_CHECK_INT(first, AF_INET);
    PT_CHECK_INT(second, AF_INET6);
    pt_dns_family_plan(PT_DNS_V4_ONLY, &first, &second);
    PT_CHECK_INT(first, AF_INET);
    PT_CHECK_INT(second, 0);
    pt_dns_family_plan(PT_DNS_V6_ONLY, &first, &second);
    PT_CHECK_INT(first, AF_INET6);
    PT_CHECK_INT(second, 0);
    pt_dns_family_plan(PT_DNS_ALL, &first, &second);
    PT_CHECK_INT(first, AF_UNSPEC);
    PT_CHECK_INT(second, 0);
}

static void test_refresh_after_success(void)
{
    pt_dns_config_t cfg = {.refresh_ms = 5000};
    PT_CHECK_INT(pt_dns_refresh_ms(&cfg, 2, 30, 77), 5000); /* TTL ignored by default */
    cfg.respect_ttl = 1;
    PT_CHECK_INT(pt_dns_refresh_ms(&cfg, 2, 30, 77), 30000);
    PT_CHECK_INT(pt_dns_refresh_ms(&cfg, 1, 1, 77), 1000);
    PT_CHECK_INT(pt_dns_refresh_ms(&cfg, 2, 0, 77), 5000);  /* TTL 0: the refresh rate */
    PT_CHECK_INT(pt_dns_refresh_ms(&cfg, 0, 30, 77), 5000); /* no address: no TTL to follow */
    /* dns_jitter: up to that much later. */
    cfg.jitter_ms = 100;
    PT_CHECK_INT(pt_dns_refresh_ms(&cfg, 2, 30, 77), 30077);
    PT_CHECK_INT(pt_dns_refresh_ms(&cfg, 2, 30, 1234), 30034);
}

static void test_backoff(void)
{
    pt_dns_backoff_t b;
    /* Without dns_failure_refresh_rate: dns_refresh_rate, every time. */
    pt_dns_config_t fixed = {.refresh_ms = 700};
    pt_dns_backoff_reset(&b, &fixed);
    PT_CHECK_INT(pt_dns_backoff_next(&b, &fixed, 12345), 700);
    PT_CHECK_INT(pt_dns_backoff_next(&b, &fixed, 1), 700);
    /* Jittered exponential: a draw below the interval, which doubles up to max. */
    pt_dns_config_t cfg = {
        .refresh_ms = 5000, .has_failure_rate = 1, .failure_base_ms = 1000, .failure_max_ms = 3000};
    pt_dns_backoff_reset(&b, &cfg);
    PT_CHECK_INT(pt_dns_backoff_next(&b, &cfg, 999), 999);   /* interval 1000 */
    PT_CHECK_INT(pt_dns_backoff_next(&b, &cfg, 1999), 1999); /* 2000 */
    PT_CHECK_INT(pt_dns_backoff_next(&b, &cfg, 2999), 2999); /* 3000: the max */
    PT_CHECK_INT(pt_dns_backoff_next(&b, &cfg, 3000), 0);    /* stays at 3000 */
    PT_CHECK_INT(pt_dns_backoff_next(&b, &cfg, 3001), 1);
    pt_dns_backoff_reset(&b, &cfg); /* a success starts again from the base */
    PT_CHECK_INT(pt_dns_backoff_next(&b, &cfg, 1500), 500);
}

/* ---- configuration ----------------------------------------------------------------- */

static pt_cfg_t R;

static pt_cluster_t *parse(const char *json)
{
    json_t *root = J(json);
    pt_cfg_init(&R, root);
    pt_cluster_t *c = pt_cluster_parse(&R);
    pt_cfg_finish(&R);
    json_decref(root);
    return c;
}

#define EP(name, port)                                                                             \
    "{'endpoint': {'address': {'socket_address': {'address': '" name "', 'port_value': " #port     \
    "}}}}"
#define LA(...) "'load_assignment': {'endpoints': [{'lb_endpoints': [" __VA_ARGS__ "]}]}"
#define CARES                                                                                      \
    "'@type': 'type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3."                \
    "CaresDnsResolverConfig'"

static void test_strict_dns_defaults(void)
{
    pt_cluster_t *c = parse("{'name': 'web', 'type': 'STRICT_DNS', " LA(
        EP("a.example", 8080) ", " EP("10.0.0.1", 80)) "}");
    PT_CHECK(c != NULL);
    const char *const none[] = {NULL};
    PT_CHECK(errors_are(&R, none));
    PT_CHECK_INT(c->type, PT_CLUSTER_STRICT_DNS);
    PT_CHECK(c->dns != NULL);
    PT_CHECK_INT(c->dns->logical, 0);
    PT_CHECK_INT(c->dns->refresh_ms, 5000);
    PT_CHECK_INT(c->dns->respect_ttl, 0);
    PT_CHECK_INT(c->dns->has_failure_rate, 0);
    PT_CHECK_INT(c->dns->family, PT_DNS_AUTO);
    PT_CHECK_INT(c->dns->resolver.nresolvers, 0); /* resolv.conf */
    PT_CHECK_INT(c->dns->ntargets, 2);
    PT_CHECK_STR(c->dns->targets[0].name, "a.example");
    PT_CHECK_STR(c->dns->targets[0].hostname, "a.example");
    PT_CHECK_INT(c->dns->targets[0].port, 8080);
    PT_CHECK_STR(c->dns->targets[1].name, "10.0.0.1"); /* a literal resolves to itself */
    PT_CHECK_INT(c->nendpoints, 0);                    /* hosts come from resolving */
    pt_cfg_dispose(&R);
    pt_cluster_unref(c);
}

/* A DNS cluster's load_assignment is a ClusterLoadAssignment too: priorities, localities,
 * health_status and metadata go with the names to the hosts they resolve to. */
static void test_strict_dns_priorities_and_localities(void)
{
    pt_cluster_t *c = parse(
        "{'name': 'web', 'type': 'STRICT_DNS', 'load_assignment': {'policy': "
        "{'overprovisioning_factor': 120}, 'endpoints': [{'locality': {'region': 'eu', "
        "'zone': 'a'}, 'lb_endpoints': [" EP("a.example", 80) "]}, {'priority': 1, "
        "'locality': {'region': 'us'}, 'load_balancing_weight': 4, 'lb_endpoints': [{"
        "'health_status': 'DEGRADED', 'metadata': {'filter_metadata': {'x': {'y': 1}}}, "
        "'endpoint': {'address': {'socket_address': {'address': 'b.example', "
        "'port_value': 81}}}}]}]}}");
    PT_CHECK(c != NULL);
    const char *const none[] = {NULL};
    PT_CHECK(errors_are(&R, none));
    PT_CHECK_INT(c->dns->ntargets, 2);
    PT_CHECK_INT(c->dns->targets[0].priority, 0);
    PT_CHECK_STR(c->dns->targets[0].locality.zone, "a");
    PT_CHECK_INT(c->dns->targets[1].priority, 1);
    PT_CHECK_STR(c->dns->targets[1].locality.region, "us");
    PT_CHECK_INT(c->dns->targets[1].locality_weight, 4);
    PT_CHECK_INT(c->dns->targets[1].health, PT_EDS_DEGRADED);
    PT_CHECK_STR(c->dns->targets[1].metadata, "{\"filter_metadata\":{\"x\":{\"y\":1}}}");
    PT_CHECK_INT(c->cla_policy.overprovisioning_factor, 120);
    pt_cfg_dispose(&R);
    pt_cluster_unref(c);
    /* A DNS cluster's assignment is never replaced: endpoint_stale_after means nothing. */
    c = parse("{'name': 'web', 'type': 'STRICT_DNS', 'load_assignment': {'policy': "
              "{'endpoint_stale_after': '1s'}, 'endpoints': [{'lb_endpoints': ["
              EP("a.example", 80) "]}]}}");
    const char *const stale[] = {
        "load_assignment.policy.endpoint_stale_after: applies only to assignments from EDS (a "
        "STRICT_DNS cluster's load_assignment is never replaced, so it cannot go stale)",
        NULL};
    PT_CHECK(errors_are(&R, stale));
    pt_cfg_dispose(&R);
    pt_cluster_unref(c);
}

static void test_strict_dns_fields(void)
{
    pt_cluster_t *c = parse(
        "{'name': 'web', 'type': 'STRICT_DNS', 'dns_refresh_rate': '2.5s', "
        "'respect_dns_ttl': true, 'dns_lookup_family': 'V4_PREFERRED', 'dns_jitter': '0.5s', "
        "'dns_failure_refresh_rate': {'base_interval': '1s'}, "
        "'typed_dns_resolver_config': {'name': 'envoy.network.dns_resolver.cares', "
        "'typed_config': {" CARES ", 'resolvers': [{'socket_address': {'address': "
        "'127.0.0.53', 'port_value': 5353}}, {'socket_address': {'address': '::1', "
        "'port_value': 53}}], 'use_resolvers_as_fallback': true, 'rotate_nameservers': true, "
        "'query_timeout_seconds': 2, 'query_tries': 3, 'dns_resolver_options': "
        "{'use_tcp_for_dns_lookups': true, 'no_default_search_domain': true}}}, "
        "'dns_resolvers': [{'socket_address': {'address': '10.9.9.9', 'port_value': 53}}], " LA(
            "{'endpoint': {'hostname': 'shown', 'address': {'socket_address': {'address': "
            "'a.example', 'port_value': 80}}}, 'load_balancing_weight': 3}") "}");
    PT_CHECK(c != NULL);
    const char *const none[] = {NULL};
    PT_CHECK(errors_are(&R, none));
    const pt_dns_config_t *d = c->dns;
    PT_CHECK_INT(d->refresh_ms, 2500);
    PT_CHECK_INT(d->respect_ttl, 1);
    PT_CHECK_INT(d->jitter_ms, 500);
    PT_CHECK_INT(d->family, PT_DNS_V4_PREFERRED);
    PT_CHECK_INT(d->has_failure_rate, 1);
    PT_CHECK_INT(d->failure_base_ms, 1000);
    PT_CHECK_INT(d->failure_max_ms, 10000); /* Envoy: 10 times the base */
    /* typed_dns_resolver_config wins over the deprecated dns_resolvers. */
    PT_CHECK_INT(d->resolver.nresolvers, 2);
    PT_CHECK_INT(pt_addr_port(&d->resolver.resolvers[0]), 5353);
    PT_CHECK_INT(d->resolver.resolvers[1].sa.sa_family, AF_INET6);
    PT_CHECK_INT(d->resolver.use_resolvers_as_fallback, 1);
    PT_CHECK_INT(d->resolver.rotate_nameservers, 1);
    PT_CHECK_INT(d->resolver.use_tcp, 1);
    PT_CHECK_INT(d->resolver.no_default_search_domain, 1);
    PT_CHECK_INT(d->resolver.query_timeout_ms, 2000);
    PT_CHECK_INT(d->resolver.query_tries, 3);
    PT_CHECK_STR(d->targets[0].hostname, "shown");
    PT_CHECK_INT(d->targets[0].weight, 3);
    pt_cfg_dispose(&R);
    pt_cluster_unref(c);
}

static void test_older_resolver_spellings(void)
{
    pt_cluster_t *c = parse(
        "{'name': 'web', 'type': 'LOGICAL_DNS', 'use_tcp_for_dns_lookups': true, "
        "'dns_resolvers': [{'socket_address': {'address': '10.9.9.9', 'port_value': 53}}], " LA(
            EP("a.example", 80)) "}");
    const char *const none[] = {NULL};
    PT_CHECK(c != NULL && errors_are(&R, none));
    PT_CHECK_INT(c->type, PT_CLUSTER_LOGICAL_DNS);
    PT_CHECK_INT(c->dns->logical, 1);
    PT_CHECK_INT(c->dns->resolver.nresolvers, 1);
    PT_CHECK_INT(c->dns->resolver.use_tcp, 1);
    pt_cfg_dispose(&R);
    pt_cluster_unref(c);
    /* dns_resolution_config wins over dns_resolvers. */
    c = parse(
        "{'name': 'web', 'type': 'STRICT_DNS', 'dns_resolution_config': {'resolvers': "
        "[{'socket_address': {'address': '10.1.1.1', 'port_value': 53}}, "
        "{'socket_address': {'address': '10.1.1.2', 'port_value': 53}}], "
        "'dns_resolver_options': {'no_default_search_domain': true}}, "
        "'dns_resolvers': [{'socket_address': {'address': '10.9.9.9', 'port_value': 53}}], " LA(
            EP("a.example", 80)) "}");
    PT_CHECK(c != NULL && errors_are(&R, none));
    PT_CHECK_INT(c->dns->resolver.nresolvers, 2);
    PT_CHECK_INT(c->dns->resolver.no_default_search_domain, 1);
    pt_cfg_dispose(&R);
    pt_cluster_unref(c);
}

static void test_cluster_type_dns(void)
{
    pt_cluster_t *c =
        parse("{'name': 'web', 'cluster_type': {'name': 'envoy.cluster.dns', 'typed_config': {"
              "'@type': 'type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster', "
              "'dns_refresh_rate': '1s', 'respect_dns_ttl': true, 'dns_lookup_family': 'V6_ONLY', "
              "'all_addresses_in_single_endpoint': true, 'typed_dns_resolver_config': {'name': "
              "'envoy.network.dns_resolver.cares', 'typed_config': {" CARES
              "}}}}, " LA(EP("a.example", 80)) "}");
    const char *const none[] = {NULL};
    PT_CHECK(c != NULL && errors_are(&R, none));
    PT_CHECK_INT(c->type, PT_CLUSTER_LOGICAL_DNS);
    PT_CHECK_INT(c->dns->refresh_ms, 1000);
    PT_CHECK_INT(c->dns->respect_ttl, 1);
    PT_CHECK_INT(c->dns->family, PT_DNS_V6_ONLY);
    PT_CHECK_INT(c->dns->ntargets, 1);
    pt_cfg_dispose(&R);
    pt_cluster_unref(c);
}

#define C "web"

static void check_rejects(int line, const char *json, const char *const *want)
{
    pt_cluster_t *c = parse(json);
    if (!errors_are(&R, want)) {
        fprintf(stderr, "  (line %d)\n", line);
        pt_test_failures++;
    }
    pt_cfg_dispose(&R);
    pt_cluster_unref(c);
}

#define REJECTS(json, ...)                                                                         \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__, NULL};                                           \
        int before_ = pt_test_failures;                                                            \
        check_rejects(__LINE__, json, want_);                                                      \
        if (pt_test_failures != before_)                                                           \
            return;                                                                                \
    } while (0)

static void test_bad_input(void)
{
    REJECTS("{'name': 'web', 'type': 'STATIC', " LA(EP("a.example", 80)) "}",
            "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address."
            "address: \"a.example\" is not an IP address (a hostname needs a cluster of type "
            "STRICT_DNS or LOGICAL_DNS)");
    REJECTS("{'name': 'web', 'type': 'LOGICAL_DNS', " LA(
                EP("a.example", 80) ", " EP("b.example", 80)) "}",
            "load_assignment: LOGICAL_DNS clusters must have a single locality_lb_endpoint and "
            "a single lb_endpoint");
    REJECTS("{'name': 'web', 'type': 'LOGICAL_DNS'}",
            "load_assignment: LOGICAL_DNS clusters must have a single host");
    REJECTS("{'name': 'web', 'type': 'STRICT_DNS', 'dns_refresh_rate': '0s'}",
            "dns_refresh_rate: must be at least 1ms");
    REJECTS("{'name': 'web', 'type': 'STRICT_DNS', 'dns_failure_refresh_rate': "
            "{'base_interval': '5s', 'max_interval': '1s'}}",
            "dns_failure_refresh_rate.max_interval: must be greater than or equal to the "
            "base_interval");
    REJECTS("{'name': 'web', 'type': 'STRICT_DNS', 'typed_dns_resolver_config': {'name': 'x', "
            "'typed_config': {" CARES ", 'resolvers': [{'socket_address': {'address': "
            "'dns.example', 'port_value': 53}}], 'filter_unroutable_families': true, "
            "'udp_max_queries': 10}}}",
            "typed_dns_resolver_config.typed_config.filter_unroutable_families: true is not "
            "supported",
            "typed_dns_resolver_config.typed_config.resolvers[0].socket_address.address: "
            "\"dns.example\" is not an IP address",
            "typed_dns_resolver_config.typed_config.udp_max_queries: field is not supported");
    REJECTS("{'name': 'web', 'type': 'STRICT_DNS', 'typed_dns_resolver_config': {'name': 'x'}}",
            "typed_dns_resolver_config.typed_config: is required");
    REJECTS("{'name': 'web', 'cluster_type': {'name': 'envoy.cluster.dns', 'typed_config': {"
            "'@type': 'type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster', "
            "'dns_jitter': 'soon'}}, 'dns_refresh_rate': '1s'}",
            "cluster_type.typed_config.dns_jitter: \"soon\" is not a duration (expected a "
            "string like \"1.5s\")",
            "dns_refresh_rate: is not used with cluster_type (set it in "
            "cluster_type.typed_config)");
    /* ORIGINAL_DST has no names to resolve, and Envoy wants its lb_policy said. */
    REJECTS("{'name': 'web', 'type': 'ORIGINAL_DST'}",
            "lb_policy: ROUND_ROBIN is not valid for a cluster of type ORIGINAL_DST: only "
            "CLUSTER_PROVIDED is allowed");
}

static void test_bootstrap_resolver(void)
{
    json_t *root = J("{'typed_dns_resolver_config': {'name': 'envoy.network.dns_resolver.cares', "
                     "'typed_config': {" CARES ", 'resolvers': [{'socket_address': {'address': "
                     "'10.0.0.53', 'port_value': 53}}]}}, 'dns_resolution_config': {"
                     "'resolvers': [{'socket_address': {'address': 'bad', 'port_value': 53}}]}, "
                     "'use_tcp_for_dns_lookups': true}");
    pt_cfg_init(&R, root);
    pt_arena_t arena;
    pt_arena_init_small(&arena);
    pt_dns_resolver_config_t res;
    pt_dns_bootstrap_parse(&R, &arena, &res);
    pt_cfg_finish(&R);
    /* The typed one wins; the older ones are still checked. */
    const char *const want[] = {"dns_resolution_config.resolvers[0].socket_address.address: "
                                "\"bad\" is not an IP address",
                                NULL};
    int ok = errors_are(&R, want);
    pt_cfg_dispose(&R);
    json_decref(root);
    PT_CHECK(ok);
    PT_CHECK_INT(res.nresolvers, 1);
    PT_CHECK_INT(res.use_tcp, 0);
    PT_CHECK_INT(pt_dns_set_default_resolver(&res), 0);
    pt_arena_dispose(&arena);
    pt_dns_clear_default_resolver();
}

int main(void)
{
    PT_RUN(test_family_plan);
    PT_RUN(test_refresh_after_success);
    PT_RUN(test_backoff);
    PT_RUN(test_strict_dns_defaults);
    PT_RUN(test_strict_dns_priorities_and_localities);
    PT_RUN(test_strict_dns_fields);
    PT_RUN(test_older_resolver_spellings);
    PT_RUN(test_cluster_type_dns);
    PT_RUN(test_bad_input);
    PT_RUN(test_bootstrap_resolver);
    PT_TEST_EXIT();
}
