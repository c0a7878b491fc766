/* Every type petrel accepts in an Any has a schema, so it can come over gRPC as it comes in
 * a file: the filters registered in filters/registry.c (each module's ops table, the type
 * URL its parser is found by), the transport sockets, upstream options, access loggers and
 * retry predicate the parsers name, and the resources of each xDS type. A filter added
 * without its message in scripts/gen_proto_schema.py's roots fails here. */
#include "filters/filter.h"
#include "filters/http_filter.h"
#include "proxy/proto_schema.h"
#include "pt_test.h"

extern const pt_network_filter_ops_t pt_tcp_proxy_filter;
extern const pt_network_filter_ops_t pt_http_connection_manager_filter;
extern const pt_network_filter_ops_t pt_sni_cluster_filter;
extern const pt_network_filter_ops_t pt_rbac_network_filter;
extern const pt_network_filter_ops_t pt_local_ratelimit_network_filter;
extern const pt_http_filter_ops_t pt_router_filter;
extern const pt_http_filter_ops_t pt_rbac_http_filter;
extern const pt_http_filter_ops_t pt_local_ratelimit_http_filter;
extern const pt_http_filter_ops_t pt_fault_filter;
extern const pt_http_filter_ops_t pt_health_check_http_filter;
extern const pt_http_filter_ops_t pt_buffer_filter;
extern const pt_http_filter_ops_t pt_grpc_stats_filter;

static void test_registered_filters(void)
{
    const pt_network_filter_ops_t *const net[] = {
        &pt_tcp_proxy_filter, &pt_http_connection_manager_filter, &pt_sni_cluster_filter,
        &pt_rbac_network_filter, &pt_local_ratelimit_network_filter};
    const pt_http_filter_ops_t *const http[] = {&pt_router_filter, &pt_rbac_http_filter,
                                                &pt_local_ratelimit_http_filter, &pt_fault_filter,
                                                &pt_health_check_http_filter, &pt_buffer_filter,
                                                &pt_grpc_stats_filter};
    for (size_t i = 0; i < sizeof(net) / sizeof(net[0]); i++) {
        /* The registry finds it by this URL: it is the one in use. */
        PT_CHECK(pt_network_filter_find(net[i]->type_url) == net[i]);
        if (pt_pb_message_for_type_url(net[i]->type_url) == NULL)
            fprintf(stderr, "  no schema for %s\n", net[i]->type_url);
        PT_CHECK(pt_pb_message_for_type_url(net[i]->type_url) != NULL);
    }
    for (size_t i = 0; i < sizeof(http) / sizeof(http[0]); i++) {
        PT_CHECK(pt_http_filter_find(http[i]->type_url) == http[i]);
        if (pt_pb_message_for_type_url(http[i]->type_url) == NULL)
            fprintf(stderr, "  no schema for %s\n", http[i]->type_url);
        PT_CHECK(pt_pb_message_for_type_url(http[i]->type_url) != NULL);
    }
}

static void test_other_typed_configs(void)
{
    static const char *const urls[] = {
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "type.googleapis.com/envoy.service.discovery.v3.Resource",
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        ("type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
         "PreviousHostsPredicate"),
    };
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        if (pt_pb_message_for_type_url(urls[i]) == NULL)
            fprintf(stderr, "  no schema for %s\n", urls[i]);
        PT_CHECK(pt_pb_message_for_type_url(urls[i]) != NULL);
    }
}

int main(void)
{
    PT_RUN(test_registered_filters);
    PT_RUN(test_other_typed_configs);
    PT_TEST_EXIT();
}
