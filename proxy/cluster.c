#include "proxy/cluster.h"

#include <stdlib.h>
#include <string.h>

#include "discovery/endpoints.h"
#include "discovery/lb.h"
#include "proxy/worker.h"

/* Cluster fields Envoy has that petrel does not implement (yet): using one is an error
 * that says so, never silently ignored. */
static const char *const cluster_unsupported[] = {
    "transport_socket_matches", "alt_stat_name", "eds_cluster_config", 
    "lb_subset_config", "ring_hash_lb_config", "maglev_lb_config", "original_dst_lb_config",
    "least_request_lb_config", "round_robin_lb_config", "common_lb_config",
    "transport_socket", "metadata", "protocol_selection", "upstream_connection_options",
    "close_connections_on_host_health_failure", "ignore_health_on_host_removal", "filters",
    "load_balancing_policy", "lrs_server", "track_timeout_budgets", "upstream_config",
    "track_cluster_stats", "preconnect_policy", "connection_pool_per_downstream_connection",
    "dns_lookup_family", "dns_resolvers", "use_tcp_for_dns_lookups", "dns_resolution_config",
    "typed_dns_resolver_config", "wait_for_warm_on_init", "respect_dns_ttl", "dns_refresh_rate",
    "dns_failure_refresh_rate", "cluster_type", "circuit_breakers", "outlier_detection",
    "health_checks", "typed_extension_protocol_options", "http2_protocol_options",
    "http_protocol_options", "common_http_protocol_options", "upstream_http_protocol_options",
    "cleanup_interval", "upstream_bind_config", "max_requests_per_connection",
    "dns_jitter", "hosts", NULL};

static const char *const type_names[] = {"STATIC", NULL};
static const char *const type_known[] = {"STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST",
                                          NULL};
static const char *const lb_names[] = {"ROUND_ROBIN", NULL};
static const char *const lb_known[] = {"LEAST_REQUEST", "RING_HASH",        "RANDOM",
                                       "MAGLEV",        "CLUSTER_PROVIDED", "LOAD_BALANCING_POLICY_CONFIG",
                                       NULL};

pt_cluster_t *pt_cluster_parse(pt_cfg_t *r, pt_config_t *cfg, unsigned index)
{
    size_t errors_before = r->nerrors;
    pt_cluster_t *c = pt_arena_alloc(&cfg->arena, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->index = index;
    pt_cfg_unsupported(r, cluster_unsupported);

    const char *name;
    if (pt_cfg_string(r, "name", &name, NULL) == 0 || (name != NULL && name[0] == '\0'))
        pt_cfg_error(r, "name", "is required");
    c->name = pt_arena_strdup(&cfg->arena, name ? name : "");

    int type, lb;
    pt_cfg_enum(r, "type", type_names, type_known, &type, PT_CLUSTER_STATIC);
    c->type = (pt_cluster_type_t)type;
    pt_cfg_duration_ms(r, "connect_timeout", &c->connect_timeout_ms, 5000);
    if (c->connect_timeout_ms == 0 && pt_cfg_has(r, "connect_timeout"))
        pt_cfg_error(r, "connect_timeout", "must be greater than 0");
    pt_cfg_enum(r, "lb_policy", lb_names, lb_known, &lb, PT_LB_ROUND_ROBIN);
    c->lb_policy = (pt_lb_policy_t)lb;
    uint64_t limit;
    pt_cfg_uint(r, "per_connection_buffer_limit_bytes", &limit, 1024 * 1024, 1, UINT32_MAX);
    c->buffer_limit = (uint32_t)limit;

    int rc = pt_cfg_enter(r, "load_assignment");
    if (rc > 0) {
        pt_endpoints_t eps;
        if (pt_endpoints_parse(r, &cfg->arena, c->name, &eps) == 0) {
            c->hosts = eps.hosts;
            c->nhosts = eps.nhosts;
        }
        pt_cfg_leave(r);
    } else if (rc == 0 && c->type == PT_CLUSTER_STATIC) {
        /* Envoy accepts a STATIC cluster with no endpoints; it simply has no hosts. */
    }
    return r->nerrors == errors_before ? c : NULL;
}

void pt_cluster_prepare(pt_cluster_t *c)
{
#define PT_X(n) c->stats.n = pt_stats_counter("cluster", "envoy_cluster_name", c->name, #n);
    PT_CLUSTER_COUNTERS(PT_X)
#undef PT_X
#define PT_X(n) c->stats.n = pt_stats_gauge("cluster", "envoy_cluster_name", c->name, #n);
    PT_CLUSTER_GAUGES(PT_X)
#undef PT_X
    /* Membership gauges are set, not summed: owned by the main thread. */
    unsigned healthy = 0;
    for (unsigned i = 0; i < c->nhosts; i++)
        healthy += atomic_load(&c->hosts[i]->health) == 0;
    pt_stat_set(c->stats.membership_total, c->nhosts);
    pt_stat_set(c->stats.membership_healthy, healthy);
}

pt_host_t *pt_cluster_pick_host(pt_cluster_t *c, pt_worker_t *w, pt_host_t *const *exclude,
                                unsigned nexclude)
{
    return pt_lb_round_robin(c, w, exclude, nexclude);
}
