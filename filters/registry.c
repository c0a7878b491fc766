/* The filters petrel knows, looked up by the type URL of their typed_config. */
#include <string.h>

#include "filters/filter.h"
#include "filters/http_filter.h"

extern const pt_network_filter_ops_t pt_tcp_proxy_filter;
extern const pt_network_filter_ops_t pt_http_connection_manager_filter;
extern const pt_network_filter_ops_t pt_sni_cluster_filter;
extern const pt_http_filter_ops_t pt_router_filter;
extern const pt_network_filter_ops_t pt_rbac_network_filter;
extern const pt_http_filter_ops_t pt_rbac_http_filter;
extern const pt_network_filter_ops_t pt_local_ratelimit_network_filter;
extern const pt_http_filter_ops_t pt_local_ratelimit_http_filter;
extern const pt_http_filter_ops_t pt_fault_filter;
extern const pt_http_filter_ops_t pt_health_check_http_filter;
extern const pt_http_filter_ops_t pt_buffer_filter;
extern const pt_http_filter_ops_t pt_grpc_stats_filter;
extern const pt_http_filter_ops_t pt_compressor_filter;

static const pt_network_filter_ops_t *const network_filters[] = {
    &pt_tcp_proxy_filter,
    &pt_http_connection_manager_filter,
    &pt_rbac_network_filter,
    &pt_sni_cluster_filter,
    &pt_local_ratelimit_network_filter,
    NULL,
};

static const pt_http_filter_ops_t *const http_filters[] = {
    &pt_rbac_http_filter,
    &pt_fault_filter,
    &pt_health_check_http_filter,
    &pt_local_ratelimit_http_filter,
    &pt_buffer_filter,
    &pt_grpc_stats_filter,
    &pt_compressor_filter,
    &pt_router_filter,
    NULL,
};

const pt_http_filter_ops_t *pt_http_filter_find(const char *type_url)
{
    for (int i = 0; http_filters[i] != NULL; i++)
        if (strcmp(http_filters[i]->type_url, type_url) == 0)
            return http_filters[i];
    return NULL;
}

const pt_http_filter_ops_t *pt_http_filter_find_per_route(const char *type_url)
{
    for (int i = 0; http_filters[i] != NULL; i++) {
        const pt_http_filter_ops_t *f = http_filters[i];
        const char *t = f->per_route_type_url ? f->per_route_type_url : f->type_url;
        if (f->parse_per_route != NULL && strcmp(t, type_url) == 0)
            return f;
    }
    return NULL;
}

const pt_network_filter_ops_t *pt_network_filter_find(const char *type_url)
{
    for (int i = 0; network_filters[i] != NULL; i++)
        if (strcmp(network_filters[i]->type_url, type_url) == 0)
            return network_filters[i];
    return NULL;
}
