/* Unit tests for config loading (proxy/config.c with cluster.c, discovery/endpoints.c and
 * the tcp_proxy filter's parser): every bad input is rejected with its exact message, naming
 * the full path of the field, and errors are all collected in one pass; every valid value
 * lands in the snapshot, with Envoy's defaults where the config is silent.
 *
 * Configs are written inline as JSON with single quotes (J() turns them into double
 * quotes), or as YAML. The regression tests at the end pin error reporting that was once
 * wrong (duplicate paths, cascading errors). */
#include "discovery/ads.h"
#include "filters/filter.h"
#include "proxy/cluster.h"
#include "proxy/config.h"
#include "proxy/runtime.h"
#include "proxy/config_source.h"
#include "tls/context.h"
#include "discovery/priority_set.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#include <stdint.h>
#include <time.h>

/* ---- helpers --------------------------------------------------------------------- */

static pt_cfg_t R;

static pt_boot_t *build_tree(json_t *root)
{
    pt_cfg_init(&R, root);
    pt_boot_t *c = pt_test_boot(root, &R);
    json_decref(root);
    return c;
}

static pt_boot_t *build(const char *json)
{
    return build_tree(J(json));
}

static pt_boot_t *build_yaml(const char *yaml)
{
    char err[256];
    json_t *root = pt_yaml_parse(yaml, strlen(yaml), err, sizeof(err));
    if (root == NULL) {
        fprintf(stderr, "bad test YAML: %s\n", err);
        abort();
    }
    return build_tree(root);
}

static void print_errors(void)
{
    for (size_t i = 0; i < R.nerrors; i++)
        fprintf(stderr, "    %s\n", R.errors[i]);
}

/* Builds `json` and checks that it is rejected with exactly the errors `want`, in order. */
static int rejects(int line, pt_boot_t *c, const char *const *want)
{
    size_t n = 0;
    while (want[n] != NULL)
        n++;
    int same = c == NULL && R.nerrors == n;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(R.errors[i], want[i]) == 0;
    if (!same) {
        fprintf(stderr, "  line %d: %s, got %zu error(s):\n", line,
                c ? "config was accepted" : "config rejected", R.nerrors);
        print_errors();
        fprintf(stderr, "  want %zu:\n", n);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "    %s\n", want[i]);
    }
    pt_boot_free(c);
    pt_cfg_dispose(&R);
    return same;
}
#define REJECTS(json, ...)                                                               \
    do {                                                                                 \
        int rejected_as_expected =                                                       \
            rejects(__LINE__, build(json), (const char *const[]){__VA_ARGS__, NULL});    \
        PT_CHECK(rejected_as_expected);                                                  \
    } while (0)
#define REJECTS_YAML(yaml, ...)                                                          \
    do {                                                                                 \
        int rejected_as_expected =                                                       \
            rejects(__LINE__, build_yaml(yaml), (const char *const[]){__VA_ARGS__, NULL}); \
        PT_CHECK(rejected_as_expected);                                                  \
    } while (0)

/* Builds and expects success; the caller unrefs. */
static pt_boot_t *accepts(int line, pt_boot_t *c)
{
    if (c == NULL) {
        fprintf(stderr, "  line %d: config rejected:\n", line);
        print_errors();
    }
    pt_cfg_dispose(&R);
    return c;
}
#define ACCEPTS(json)      accepts(__LINE__, build(json))
#define ACCEPTS_YAML(yaml) accepts(__LINE__, build_yaml(yaml))

/* Pieces of configs. */
#define TCP_TYPE "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define SA(ip, port) "{'socket_address':{'address':'" ip "','port_value':" #port "}}"
#define EP(ip, port) "{'endpoint':{'address':" SA(ip, port) "}}"
#define CLUSTER(name)                                                                    \
    "{'name':'" name "','connect_timeout':'1s','load_assignment':{'cluster_name':'" name  \
    "','endpoints':[{'lb_endpoints':[" EP("127.0.0.1", 9000) "]}]}}"
#define TCP(cluster)                                                                     \
    "{'name':'envoy.filters.network.tcp_proxy','typed_config':{'@type':'" TCP_TYPE       \
    "','stat_prefix':'tcp','cluster':'" cluster "'}}"
#define LISTENER(name, port, filters)                                                    \
    "{'name':'" name "','address':" SA("127.0.0.1", port)                                \
    ",'filter_chains':[{'filters':[" filters "]}]}"
#define HCM_ROUTES(routes)                                                               \
    "{'name':'envoy.filters.network.http_connection_manager','typed_config':{'@type':"    \
    "'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."  \
    "HttpConnectionManager','stat_prefix':'h','route_config':{'virtual_hosts':[{'name':"   \
    "'v','domains':['*']," routes "}]},'http_filters':[{'name':'envoy.filters.http.router'," \
    "'typed_config':{'@type':'type.googleapis.com/envoy.extensions.filters.http.router.v3." \
    "Router'}}]}}"
#define BOOT(clusters, listeners)                                                        \
    "{'static_resources':{'clusters':[" clusters "],'listeners':[" listeners "]}}"
#define CLUSTERS_ONLY(clusters) "{'static_resources':{'clusters':[" clusters "]}}"

#define L0  "static_resources.listeners[0]"
#define F00 L0 ".filter_chains[0].filters[0]"
#define TC  F00 ".typed_config"
#define C0  "static_resources.clusters[0]"
#define E00 C0 ".load_assignment.endpoints[0].lb_endpoints[0].endpoint"

/* tcp_proxy's parsed config is private to filters/tcp_proxy.c; these are its leading
 * fields, mirrored here to check parsed values and defaults. Keep in sync. */
typedef struct tcp_proxy_config_view {
    const char *stat_prefix;
    const char *cluster;
    uint64_t idle_timeout_ms;
    uint64_t max_connect_attempts;
} tcp_proxy_config_view_t;

/* ---- happy paths ----------------------------------------------------------------- */

static void test_minimal(void)
{
    pt_boot_t *c = ACCEPTS(BOOT(CLUSTER("a"), LISTENER("l", 10000, TCP("a"))));
    PT_CHECK(c != NULL);
    PT_CHECK_INT(c->nclusters, 1);
    PT_CHECK_INT(c->config->nlisteners, 1);
    pt_boot_free(c);
    /* An empty bootstrap is valid: nothing to do, but nothing wrong. */
    c = ACCEPTS("{}");
    PT_CHECK(c != NULL);
    PT_CHECK_INT(c->nclusters + c->config->nlisteners, 0);
    PT_CHECK(!c->config->has_admin);
    PT_CHECK(pt_boot_find(c, "a") == NULL);
    pt_boot_free(c);
}

static const char *const full_config =
    "{'node': {'id': 'sidecar-1', 'cluster': 'web',"
    "          'locality': {'region': 'eu-west-1', 'zone': 'eu-west-1a', 'sub_zone': 'r7'}},"
    " 'admin': {'address': " SA("127.0.0.1", 9901) "},"
    " 'static_resources': {"
    "  'clusters': ["
    "   {'name': 'backend', 'type': 'STATIC', 'connect_timeout': '1.5s',"
    "    'lb_policy': 'ROUND_ROBIN', 'per_connection_buffer_limit_bytes': 65536,"
    "    'load_assignment': {'cluster_name': 'backend', 'endpoints': ["
    "     {'lb_endpoints': ["
    "       {'endpoint': {'address': " SA("10.0.0.1", 80) "}, 'load_balancing_weight': 3},"
    "       {'endpoint': {'address': " SA("10.0.0.2", 81) "}}]},"
    "     {'priority': 0, 'locality': {'zone': 'b'}, 'lb_endpoints': ["
    "       {'endpoint': {'address': " SA("fd00::1", 8443) ", 'hostname': 'backend-3'}}]}]}},"
    "   {'name': 'empty'}],"
    "  'listeners': ["
    "   {'name': 'tcp_in', 'address': " SA("0.0.0.0", 15001) ","
    "    'per_connection_buffer_limit_bytes': 32768,"
    "    'filter_chains': [{'name': 'only', 'filters': [{'name': 'envoy.filters.network.tcp_proxy',"
    "      'typed_config': {'@type': '" TCP_TYPE "', 'stat_prefix': 'ingress_tcp',"
    "       'cluster': 'backend', 'idle_timeout': '300s', 'max_connect_attempts': 3}}]}]},"
    "   {'name': 'tcp_v6', 'stat_prefix': 'v6', 'address': " SA("::1", 15002) ","
    "    'filter_chains': [{'filters': [{'name': 'tcp',"
    "      'typed_config': {'@type': '" TCP_TYPE "', 'stat_prefix': 'p2', 'cluster': 'empty'}}]}]}]}}";

static void check_full(pt_boot_t *c)
{
    PT_CHECK(c != NULL);
    char buf[PT_ADDR_STRLEN];
    PT_CHECK_STR(c->config->node.id, "sidecar-1");
    PT_CHECK_STR(c->config->node.cluster, "web");
    PT_CHECK_STR(c->config->node.region, "eu-west-1");
    PT_CHECK_STR(c->config->node.zone, "eu-west-1a");
    PT_CHECK_STR(c->config->node.sub_zone, "r7");
    PT_CHECK(c->config->has_admin);
    pt_addr_format(&c->config->admin_address, buf, sizeof(buf));
    PT_CHECK_STR(buf, "127.0.0.1:9901");

    PT_CHECK_INT(c->nclusters, 2);
    pt_cluster_t *b = c->clusters[0];
    PT_CHECK_STR(b->name, "backend");
    /* Each cluster has its state, found again by name by a later version. */
    PT_CHECK(b->state != NULL);
    pt_cluster_state_t *again = pt_cluster_state_get("backend");
    PT_CHECK(again == b->state);
    pt_cluster_state_unref(again);
    PT_CHECK_INT(b->type, PT_CLUSTER_STATIC);
    PT_CHECK_INT(b->lb_policy, PT_LB_ROUND_ROBIN);
    PT_CHECK_INT(b->connect_timeout_ms, 1500);
    PT_CHECK_INT(b->buffer_limit, 65536);
    PT_CHECK_INT(b->nhosts, 3);
    PT_CHECK_STR(b->hosts[0]->address_str, "10.0.0.1:80");
    PT_CHECK_INT(pt_cluster_host_info(b, 0)->weight, 3);
    PT_CHECK_INT(pt_cluster_host_info(b, 0)->priority, 0);
    PT_CHECK(b->hosts[0]->hostname == NULL);
    PT_CHECK_STR(b->hosts[1]->address_str, "10.0.0.2:81");
    PT_CHECK_INT(pt_cluster_host_info(b, 1)->weight, 1); /* default weight */
    PT_CHECK_STR(b->hosts[2]->address_str, "[fd00::1]:8443");
    PT_CHECK_INT(b->hosts[2]->address.sa.sa_family, AF_INET6);
    PT_CHECK_INT(pt_cluster_host_info(b, 2)->priority, 0);
    PT_CHECK_STR(b->localities[pt_cluster_host_info(b, 2)->locality].zone, "b");
    PT_CHECK_STR(b->hosts[2]->hostname, "backend-3");
    PT_CHECK_INT(atomic_load(&b->hosts[2]->health), 0);
    /* Defaults: connect_timeout 5s, buffer limit 1 MiB, STATIC, ROUND_ROBIN, no hosts. */
    pt_cluster_t *e = c->clusters[1];
    PT_CHECK_STR(e->name, "empty");
    PT_CHECK(e->state != NULL && e->state != b->state);
    PT_CHECK_INT(e->connect_timeout_ms, 5000);
    PT_CHECK_INT(e->buffer_limit, 1024 * 1024);
    PT_CHECK_INT(e->type, PT_CLUSTER_STATIC);
    PT_CHECK_INT(e->lb_policy, PT_LB_ROUND_ROBIN);
    PT_CHECK_INT(e->nhosts, 0);
    PT_CHECK(pt_boot_find(c, "backend") == b);
    PT_CHECK(pt_boot_find(c, "empty") == e);
    PT_CHECK(pt_boot_find(c, "Backend") == NULL);
    PT_CHECK(pt_boot_find(c, NULL) == NULL);
    /* Stats were registered for the validated snapshot. */
    PT_CHECK(b->stats.upstream_cx_total != 0);
    PT_CHECK_INT(pt_stats_find("cluster.backend.upstream_cx_total"), b->stats.upstream_cx_total);

    PT_CHECK_INT(c->config->nlisteners, 2);
    pt_listener_config_t *l = &c->config->listeners[0];
    PT_CHECK_STR(l->name, "tcp_in");
    pt_addr_format(&l->address, buf, sizeof(buf));
    PT_CHECK_STR(buf, "0.0.0.0:15001");
    PT_CHECK_STR(l->stat_name, "0.0.0.0_15001"); /* no stat_prefix: the address, Envoy-style */
    PT_CHECK_INT(l->buffer_limit, 32768);
    PT_CHECK_INT(l->nchains, 1);
    PT_CHECK_STR(l->chains[0].name, "only");
    PT_CHECK_INT(l->chains[0].nfilters, 1);
    pt_network_filter_t *f = &l->chains[0].filters[0];
    PT_CHECK_STR(f->name, "envoy.filters.network.tcp_proxy");
    PT_CHECK(f->ops == pt_network_filter_find(TCP_TYPE));
    PT_CHECK_STR(f->ops->name, "envoy.filters.network.tcp_proxy");
    PT_CHECK(f->ops->terminal);
    const tcp_proxy_config_view_t *tp = f->config;
    PT_CHECK_STR(tp->stat_prefix, "ingress_tcp");
    PT_CHECK_STR(tp->cluster, "backend");
    PT_CHECK_INT(tp->idle_timeout_ms, 300000);
    PT_CHECK_INT(tp->max_connect_attempts, 3);
    PT_CHECK(l->stats.downstream_cx_total != 0);
    PT_CHECK_INT(pt_stats_find("listener.0.0.0.0_15001.downstream_cx_total"),
                 l->stats.downstream_cx_total);

    l = &c->config->listeners[1];
    PT_CHECK_STR(l->name, "tcp_v6");
    PT_CHECK_STR(l->stat_name, "v6");
    pt_addr_format(&l->address, buf, sizeof(buf));
    PT_CHECK_STR(buf, "[::1]:15002");
    PT_CHECK_INT(l->buffer_limit, 1024 * 1024); /* default */
    PT_CHECK(l->chains[0].name == NULL);
    PT_CHECK_STR(l->chains[0].filters[0].name, "tcp");
    tp = l->chains[0].filters[0].config;
    PT_CHECK_STR(tp->cluster, "empty");
    PT_CHECK_INT(tp->idle_timeout_ms, 3600 * 1000); /* default 1h */
    PT_CHECK_INT(tp->max_connect_attempts, 1);      /* default 1 */
}

static void test_full(void)
{
    json_t *root = J(full_config);
    pt_cfg_init(&R, root);
    pt_boot_t *c = pt_test_boot(root, &R);
    if (c == NULL)
        print_errors();
    pt_cfg_dispose(&R);
    PT_CHECK(c != NULL);
    PT_CHECK(c->config->source == root); /* kept for /config_dump */
    json_decref(root);
    check_full(c);
    /* Snapshots are refcounted and versioned. */
    PT_CHECK(pt_config_ref(c->config) == c->config);
    PT_CHECK_INT(atomic_load(&c->config->refs), 2);
    pt_config_unref(c->config);
    pt_boot_t *c2 = ACCEPTS(full_config);
    PT_CHECK(c2 != NULL && c2->config->version > c->config->version);
    /* A stat keeps its id across snapshots. */
    PT_CHECK_INT(c2->clusters[0]->stats.upstream_cx_total, c->clusters[0]->stats.upstream_cx_total);
    pt_boot_free(c2);
    pt_boot_free(c);
}

/* The same bootstrap as YAML, written the way people write it. */
static void test_full_yaml(void)
{
    pt_boot_t *c = ACCEPTS_YAML(
        "node:\n"
        "  id: sidecar-1\n"
        "  cluster: web\n"
        "  locality: {region: eu-west-1, zone: eu-west-1a, sub_zone: r7}\n"
        "admin:\n"
        "  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}\n"
        "static_resources:\n"
        "  clusters:\n"
        "  - name: backend\n"
        "    type: STATIC\n"
        "    connect_timeout: 1.5s\n"
        "    lb_policy: ROUND_ROBIN\n"
        "    per_connection_buffer_limit_bytes: 65536\n"
        "    load_assignment:\n"
        "      cluster_name: backend\n"
        "      endpoints:\n"
        "      - lb_endpoints:\n"
        "        - endpoint:\n"
        "            address:\n"
        "              socket_address: {address: 10.0.0.1, port_value: 80}\n"
        "          load_balancing_weight: 3\n"
        "        - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 81}}}\n"
        "      - priority: 0\n"
        "        locality: {zone: b}\n"
        "        lb_endpoints:\n"
        "        - endpoint:\n"
        "            address: {socket_address: {address: 'fd00::1', port_value: 8443}}\n"
        "            hostname: backend-3\n"
        "  - name: empty\n"
        "  listeners:\n"
        "  - name: tcp_in\n"
        "    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}\n"
        "    per_connection_buffer_limit_bytes: 32768\n"
        "    filter_chains:\n"
        "    - name: only\n"
        "      filters:\n"
        "      - name: envoy.filters.network.tcp_proxy\n"
        "        typed_config:\n"
        "          '@type': " TCP_TYPE "\n"
        "          stat_prefix: ingress_tcp\n"
        "          cluster: backend\n"
        "          idle_timeout: 300s\n"
        "          max_connect_attempts: 3\n"
        "  - name: tcp_v6\n"
        "    stat_prefix: v6\n"
        "    address: {socket_address: {address: '::1', port_value: 15002}}\n"
        "    filter_chains:\n"
        "    - filters:\n"
        "      - name: tcp\n"
        "        typed_config: {'@type': " TCP_TYPE ", stat_prefix: p2, cluster: empty}\n");
    check_full(c);
    pt_boot_free(c);
}

/* proto3 JSON: lowerCamelCase spellings, integers as strings, null as absent. */
static void test_camel_case_accepted(void)
{
    pt_boot_t *c = ACCEPTS(
        "{'staticResources': {'clusters': [{'name': 'a', 'connectTimeout': '2s',"
        "   'lbPolicy': 'ROUND_ROBIN', 'perConnectionBufferLimitBytes': '4096',"
        "   'loadAssignment': {'clusterName': 'a', 'endpoints': [{'lbEndpoints': ["
        "     {'endpoint': {'address': {'socketAddress': {'address': '10.1.1.1', 'portValue': '8080'}}},"
        "      'loadBalancingWeight': '7'}]}]}}],"
        " 'listeners': [{'name': 'l', 'statPrefix': 'lp',"
        "   'address': {'socketAddress': {'address': '127.0.0.1', 'portValue': 10000}},"
        "   'perConnectionBufferLimitBytes': 1024,"
        "   'filterChains': [{'filters': [{'name': 'tcp', 'typedConfig': {'@type': '" TCP_TYPE "',"
        "     'statPrefix': 's', 'cluster': 'a', 'idleTimeout': '10s', 'maxConnectAttempts': '2'}}]}]}]}}");
    PT_CHECK(c != NULL);
    pt_cluster_t *a = c->clusters[0];
    PT_CHECK_INT(a->connect_timeout_ms, 2000);
    PT_CHECK_INT(a->buffer_limit, 4096);
    PT_CHECK_INT(a->nhosts, 1);
    PT_CHECK_STR(a->hosts[0]->address_str, "10.1.1.1:8080");
    PT_CHECK_INT(pt_cluster_host_info(a, 0)->weight, 7);
    PT_CHECK_STR(c->config->listeners[0].stat_name, "lp");
    PT_CHECK_INT(c->config->listeners[0].buffer_limit, 1024);
    const tcp_proxy_config_view_t *tp = c->config->listeners[0].chains[0].filters[0].config;
    PT_CHECK_STR(tp->stat_prefix, "s");
    PT_CHECK_INT(tp->idle_timeout_ms, 10000);
    PT_CHECK_INT(tp->max_connect_attempts, 2);
    pt_boot_free(c);
}

static void test_nulls_are_absent(void)
{
    pt_boot_t *c = ACCEPTS(
        "{'node': null, 'admin': null, 'static_resources': {'clusters': [{'name': 'a',"
        "   'type': null, 'connect_timeout': null, 'lb_policy': null, 'load_assignment': null,"
        "   'per_connection_buffer_limit_bytes': null}],"
        " 'listeners': [{'name': 'l', 'stat_prefix': null, 'address': " SA("127.0.0.1", 10000) ","
        "   'filter_chains': [{'name': null, 'filters': [{'name': 'tcp', 'typed_config': {"
        "     '@type': '" TCP_TYPE "', 'stat_prefix': 's', 'cluster': 'a',"
        "     'idle_timeout': null, 'max_connect_attempts': null}}]}]}]}}");
    PT_CHECK(c != NULL);
    PT_CHECK(!c->config->has_admin);
    PT_CHECK(c->config->node.id == NULL);
    PT_CHECK_INT(c->clusters[0]->connect_timeout_ms, 5000);
    PT_CHECK_INT(c->clusters[0]->buffer_limit, 1024 * 1024);
    PT_CHECK_INT(c->clusters[0]->nhosts, 0);
    PT_CHECK_STR(c->config->listeners[0].stat_name, "127.0.0.1_10000");
    const tcp_proxy_config_view_t *tp = c->config->listeners[0].chains[0].filters[0].config;
    PT_CHECK_INT(tp->idle_timeout_ms, 3600 * 1000);
    PT_CHECK_INT(tp->max_connect_attempts, 1);
    pt_boot_free(c);
    /* A required field given as null is missing. */
    REJECTS(CLUSTERS_ONLY("{'name': null}"), C0 ".name: is required");
}

/* YAML-specific spellings: quoted numbers, durations unquoted, camelCase. */
static void test_yaml_scalars_in_config(void)
{
    pt_boot_t *c = ACCEPTS_YAML("staticResources:\n"
                                  "  clusters:\n"
                                  "  - name: a\n"
                                  "    connectTimeout: 0.25s\n"
                                  "    perConnectionBufferLimitBytes: '2048'\n"
                                  "  listeners:\n"
                                  "  - name: l\n"
                                  "    address:\n"
                                  "      socketAddress: {address: 127.0.0.1, portValue: \"8080\"}\n"
                                  "    filterChains:\n"
                                  "    - filters:\n"
                                  "      - name: tcp\n"
                                  "        typedConfig:\n"
                                  "          \"@type\": " TCP_TYPE "\n"
                                  "          statPrefix: s\n"
                                  "          cluster: a\n"
                                  "          idleTimeout: {seconds: 90, nanos: 500000000}\n");
    PT_CHECK(c != NULL);
    PT_CHECK_INT(c->clusters[0]->connect_timeout_ms, 250);
    PT_CHECK_INT(c->clusters[0]->buffer_limit, 2048);
    char buf[PT_ADDR_STRLEN];
    pt_addr_format(&c->config->listeners[0].address, buf, sizeof(buf));
    PT_CHECK_STR(buf, "127.0.0.1:8080");
    const tcp_proxy_config_view_t *tp = c->config->listeners[0].chains[0].filters[0].config;
    PT_CHECK_INT(tp->idle_timeout_ms, 90500);
    pt_boot_free(c);
    /* A duration written as a YAML number is not a duration. */
    REJECTS_YAML("static_resources:\n  clusters:\n  - name: a\n    connect_timeout: 5\n",
                 C0 ".connect_timeout: 5 is not a duration (expected a string like \"1.5s\")");
}

/* typed_extension_protocol_options with Envoy's HttpProtocolOptions: HTTP/1.1 upstream
 * options load, and override the deprecated cluster fields; anything else is refused. */
static void test_cluster_http_protocol_options(void)
{
    const char *yaml =
        "static_resources:\n"
        "  clusters:\n"
        "  - name: a\n"
        "    max_requests_per_connection: 5\n"
        "    http_protocol_options: {}\n"
        "    typed_extension_protocol_options:\n"
        "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
        "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
        "        common_http_protocol_options: {idle_timeout: 30s, max_requests_per_connection: 100,"
        " max_connection_duration: 2.5s}\n"
        "        explicit_http_config: {http_protocol_options: {}}\n";
    pt_boot_t *c = ACCEPTS_YAML(yaml);
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_INT(c->clusters[0]->http_idle_timeout_ms, 30000);
        PT_CHECK_INT(c->clusters[0]->max_requests_per_connection, 100);
        PT_CHECK_INT(c->clusters[0]->max_connection_duration_ms, 2500);
        pt_boot_free(c);
    }
    /* HTTP/2 upstream: explicit, automatic (ALPN), by the downstream's protocol, and the
     * deprecated cluster-level http2_protocol_options. */
    c = ACCEPTS_YAML("static_resources:\n  clusters:\n  - name: a\n"
                     "    typed_extension_protocol_options:\n"
                     "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
                     "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3."
                     "HttpProtocolOptions\n"
                     "        explicit_http_config:\n"
                     "          http2_protocol_options: {max_concurrent_streams: 7, "
                     "initial_stream_window_size: 131072, initial_connection_window_size: "
                     "262144, hpack_table_size: 0, connection_keepalive: {interval: 2s, "
                     "timeout: 0.5s}}\n"
                     "  - name: b\n    http2_protocol_options: {}\n"
                     "  - name: c\n"
                     "    typed_extension_protocol_options:\n"
                     "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
                     "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3."
                     "HttpProtocolOptions\n"
                     "        auto_config: {http_protocol_options: {}, http2_protocol_options: {}}\n"
                     "  - name: d\n"
                     "    typed_extension_protocol_options:\n"
                     "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
                     "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3."
                     "HttpProtocolOptions\n"
                     "        use_downstream_protocol_config: {http2_protocol_options: {}}\n"
                     "  - name: e\n");
    PT_CHECK(c != NULL);
    if (c != NULL) {
        const pt_cluster_t *a = c->clusters[0];
        PT_CHECK_INT(a->protocol, PT_UPSTREAM_HTTP2);
        PT_CHECK(a->http2 != NULL);
        PT_CHECK_INT(a->http2->max_concurrent_streams, 7);
        PT_CHECK_INT(a->http2->initial_stream_window_size, 131072);
        PT_CHECK_INT(a->http2->initial_connection_window_size, 262144);
        PT_CHECK_INT(a->http2->hpack_table_size, 0);
        PT_CHECK_INT(a->http2->keepalive_interval_ms, 2000);
        PT_CHECK_INT(a->http2->keepalive_timeout_ms, 500);
        PT_CHECK_INT(c->clusters[1]->protocol, PT_UPSTREAM_HTTP2);
        /* http2_protocol_options: {}: its defaults */
        PT_CHECK(c->clusters[1]->http2 != NULL);
        PT_CHECK_INT(c->clusters[1]->http2->max_concurrent_streams, 2147483647);
        PT_CHECK_INT(c->clusters[1]->http2->initial_stream_window_size, 65535);
        PT_CHECK(c->clusters[4]->http2 == NULL); /* none: no HTTP/2 settings held */
        PT_CHECK_INT(c->clusters[2]->protocol, PT_UPSTREAM_AUTO);
        PT_CHECK_INT(c->clusters[3]->protocol, PT_UPSTREAM_DOWNSTREAM);
        PT_CHECK_INT(c->clusters[4]->protocol, PT_UPSTREAM_HTTP1);
        PT_CHECK_INT(c->clusters[4]->max_connection_duration_ms, 0); /* default: none */
        pt_boot_free(c);
    }
#define HPO_HEAD                                                                          \
    "static_resources:\n  clusters:\n  - name: a\n    typed_extension_protocol_options:\n"
#define HPO_KEY "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
#define HPO_TYPE                                                                          \
    "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
#define TPO C0 ".typed_extension_protocol_options"
#define HPO TPO ".envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE
                 "        common_http_protocol_options: {max_connection_duration: soon}\n"
                 "        explicit_http_config: {http_protocol_options: {}}\n",
                 HPO ".common_http_protocol_options.max_connection_duration: \"soon\" is not a "
                     "duration (expected a string like \"1.5s\")");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE "        explicit_http_config: {}\n",
                 HPO ".explicit_http_config: one of http_protocol_options, "
                     "http2_protocol_options or http3_protocol_options is required");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE
                 "        explicit_http_config: {http3_protocol_options: {}}\n",
                 HPO ".explicit_http_config.http3_protocol_options: field is not supported");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE
                 "        explicit_http_config: {http2_protocol_options: {allow_connect: 3}}\n",
                 HPO ".explicit_http_config.http2_protocol_options.allow_connect: "
                     "3 is not a boolean");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE
                 "        explicit_http_config: {http2_protocol_options: {max_streams: 3}}\n",
                 HPO ".explicit_http_config.http2_protocol_options.max_streams: unknown field");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE
                 "        auto_config: {http2_protocol_options: {max_concurrent_streams: 0}}\n",
                 HPO ".auto_config.http2_protocol_options.max_concurrent_streams: 0 is out of "
                     "range [1, 2147483647]");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE
                 "        auto_config: {}\n        explicit_http_config: {http_protocol_options: {}}\n",
                 HPO ": only one of explicit_http_config, use_downstream_protocol_config, "
                     "auto_config may be given (found explicit_http_config, auto_config)");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE
                 "        explicit_http_config: {http2_protocol_options: "
                 "{connection_keepalive: {interval: 1s}}}\n",
                 HPO ".explicit_http_config.http2_protocol_options.connection_keepalive.timeout: "
                     "is required (at least 1ms)");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE
                 "        explicit_http_config: {http_protocol_options: {enable_trailers: true}}\n",
                 HPO ".explicit_http_config.http_protocol_options.enable_trailers: "
                     "field is not supported");
    REJECTS_YAML(HPO_HEAD HPO_KEY "        '@type': type.googleapis.com/google.protobuf.Struct\n",
                 HPO ".@type: \"type.googleapis.com/google.protobuf.Struct\" does not match the "
                     "key envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    REJECTS_YAML(HPO_HEAD "      envoy.filters.network.tcp_proxy:\n" HPO_TYPE,
                 TPO ".envoy.filters.network.tcp_proxy: protocol options for "
                     "\"envoy.filters.network.tcp_proxy\" are not supported (only "
                     "envoy.extensions.upstreams.http.v3.HttpProtocolOptions)");
    REJECTS_YAML(HPO_HEAD HPO_KEY HPO_TYPE "        common_http_protocol_options: {bogus: 1}\n",
                 HPO ".common_http_protocol_options.bogus: unknown field");
}

/* Connection limits: layered_runtime static layers and the overload manager's downstream
 * connections monitor (proxy/overload.c). */
static void test_connection_limits(void)
{
#define REGEX_BOOT(extra)                                                                   \
    "{'static_resources':{'clusters':[" CLUSTER("a") "],'listeners':[" LISTENER(             \
        "l", 1, HCM_ROUTES("'routes':[{'match':{'safe_regex':{'regex':"                       \
                           "'(?i)/(users|accounts)/[a-z0-9-]{1,64}'}},'route':{'cluster':'a'}}]")) \
    "]}" extra "}"
#define LIMITS_BOOT(extra)                                                                  \
    "{" extra ", 'static_resources':{'clusters':[" CLUSTER("a") "],'listeners':["           \
    LISTENER("l", 1, TCP("a")) "]}}"
    pt_boot_t *c = ACCEPTS(LIMITS_BOOT(
        "'layered_runtime': {'layers': ["
        "{'name': 'one', 'static_layer': {'overload': {'global_downstream_max_connections': 7},"
        " 'envoy.resource_limits.listener.l.connection_limit': 3}},"
        "{'name': 'two', 'static_layer': {'overload.global_downstream_max_connections': 9}}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_INT(c->config->max_downstream_connections, 9); /* the later layer wins */
        PT_CHECK_INT(c->config->listeners[0].connection_limit, 3);
        pt_boot_free(c);
    }
    c = ACCEPTS(LIMITS_BOOT(
        "'overload_manager': {'refresh_interval': '0.25s', 'resource_monitors': [{'name': "
        "'envoy.resource_monitors.global_downstream_max_connections', 'typed_config': {"
        "'@type': 'type.googleapis.com/envoy.extensions.resource_monitors."
        "downstream_connections.v3.DownstreamConnectionsConfig', "
        "'max_active_downstream_connections': 100}}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_INT(c->config->max_downstream_connections, 100);
        PT_CHECK_INT(c->config->listeners[0].connection_limit, 0);
        pt_boot_free(c);
    }
    REJECTS(LIMITS_BOOT("'layered_runtime': {'layers': [{'name': 'x', 'static_layer': "
                        "{'envoy.reloadable_features.no_such_feature': true}}]}"),
            "layered_runtime.layers[0]: runtime key envoy.reloadable_features.no_such_feature "
            "is not supported (docs/configuration.md, \"Runtime\", lists the keys petrel "
            "reads)");
    /* The regex limits Istio's bootstrap sets (as strings): a regex over the default 100
     * loads only with the larger limit. */
    REJECTS(REGEX_BOOT(""), "static_resources.listeners[0].filter_chains[0].filters[0]."
                            "typed_config.route_config.virtual_hosts[0].routes[0].match."
                            "safe_regex.regex: \"(?i)/(users|accounts)/[a-z0-9-]{1,64}\" is "
                            "too complex: its RE2 program size 602 is over 100 (the runtime key "
                            "re2.max_program_size.error_level)");
    c = ACCEPTS(REGEX_BOOT(", 'layered_runtime': {'layers': [{'name': 'global config', "
                           "'static_layer': {'re2.max_program_size.error_level': '32768', "
                           "'re2': {'max_program_size': {'warn_level': 1000}}}}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL)
        pt_boot_free(c);
    REJECTS(REGEX_BOOT(", 'layered_runtime': {'layers': [{'name': 'x', 'static_layer': "
                       "{'re2.max_program_size.error_level': 'lots'}}]}"),
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
            "route_config.virtual_hosts[0].routes[0].match.safe_regex.regex: \"(?i)/(users|"
            "accounts)/[a-z0-9-]{1,64}\" is too complex: its RE2 program size 602 is over 100 "
            "(the runtime key re2.max_program_size.error_level)",
            "layered_runtime.layers[0]: runtime key re2.max_program_size.error_level: "
            "expected a non-negative integer");
    /* A limit for a listener that does not exist is valid (Envoy's front-proxy example has
     * one for "example_listener_name"): it limits nothing. */
    c = ACCEPTS(LIMITS_BOOT("'layered_runtime': {'layers': [{'name': 'x', 'static_layer': "
                            "{'envoy.resource_limits.listener.m.connection_limit': 1}}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_INT(c->config->listeners[0].connection_limit, 0);
        pt_boot_free(c);
    }
    REJECTS(LIMITS_BOOT("'layered_runtime': {'layers': [{'name': 'x', 'static_layer': "
                        "{'overload.global_downstream_max_connections': 'many'}}]}"),
            "layered_runtime.layers[0]: runtime key overload.global_downstream_max_connections: "
            "expected a non-negative integer");
    /* Istio's runtime, as its pilot-agent bootstraps write it. */
    c = ACCEPTS(LIMITS_BOOT(
        "'layered_runtime': {'layers': [{'name': 'global config', 'static_layer': {"
        "'envoy.deprecated_features:envoy.config.listener.v3.Listener."
        "hidden_envoy_deprecated_use_original_dst': 'true',"
        "'envoy.reloadable_features.http_reject_path_with_fragment': 'false',"
        "'envoy.reloadable_features.no_extension_lookup_by_name': 'false',"
        "'overload.global_downstream_max_connections': '2147483647',"
        "'re2.max_program_size.error_level': '32768'}}, {'name': 'admin', 'admin_layer': {}}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_INT(pt_runtime.reject_path_with_fragment, 0);
        PT_CHECK_INT(c->config->max_downstream_connections, 2147483647);
        pt_boot_free(c);
    }
    REJECTS(LIMITS_BOOT("'layered_runtime': {'layers': [{'name': 'x', 'static_layer': {"
                        "'envoy.restart_features.use_eds_cache_for_ads': 'yes'}}, "
                        "{'name': 'a', 'admin_layer': {'x': 1}}]}"),
            "layered_runtime.layers[0]: runtime key envoy.restart_features.use_eds_cache_for_ads: "
            "expected true or false",
            "layered_runtime.layers[1].admin_layer.x: unknown field");
    c = ACCEPTS(LIMITS_BOOT("'layered_runtime': {'layers': [{'name': 'x', 'static_layer': {}}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_INT(pt_runtime.reject_path_with_fragment, 1); /* the default again */
        pt_boot_free(c);
    }
    REJECTS(LIMITS_BOOT("'overload_manager': {'resource_monitors': [{'name': "
                        "'envoy.resource_monitors.fixed_heap', 'typed_config': {'@type': 'x'}}]}"),
            "overload_manager.resource_monitors[0].name: \"envoy.resource_monitors.fixed_heap\" "
            "is not supported (only envoy.resource_monitors.global_downstream_max_connections)");
    REJECTS(LIMITS_BOOT("'overload_manager': {'actions': [{'name': 'envoy.overload_actions."
                        "shrink_heap'}]}"),
            "overload_manager.actions: overload actions are not supported");
    /* Both: accepted as Envoy does (a warning), the overload manager's limit wins. */
    c = ACCEPTS(LIMITS_BOOT(
        "'overload_manager': {'resource_monitors': [{'name': "
        "'envoy.resource_monitors.global_downstream_max_connections', 'typed_config': {"
        "'@type': 'type.googleapis.com/envoy.extensions.resource_monitors."
        "downstream_connections.v3.DownstreamConnectionsConfig', "
        "'max_active_downstream_connections': 100}}]}, 'layered_runtime': {'layers': ["
        "{'name': 'x', 'static_layer': {'overload.global_downstream_max_connections': 5}}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_INT(c->config->max_downstream_connections, 100);
        pt_boot_free(c);
    }
    /* A runtime value written as a string that spells a number is that number. */
    c = ACCEPTS(LIMITS_BOOT("'layered_runtime': {'layers': [{'name': 'x', 'static_layer': "
                            "{'overload': {'global_downstream_max_connections': '5000'}}}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_INT(c->config->max_downstream_connections, 5000);
        pt_boot_free(c);
    }
    REJECTS(LIMITS_BOOT("'layered_runtime': {'layers': [{'name': 'x', 'static_layer': "
                        "{'overload.global_downstream_max_connections': '-1'}}]}"),
            "layered_runtime.layers[0]: runtime key overload.global_downstream_max_connections: "
            "expected a non-negative integer");
#undef LIMITS_BOOT
#undef REGEX_BOOT
}

/* 10000 clusters: every one found by name, in O(1), and a missing one not found. */
static void test_many_clusters(void)
{
    enum { N = 10000 };
    json_t *clusters = json_array();
    char name[64];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "outbound|%d||svc-%d.ns.svc.cluster.local", 8000 + i % 100, i);
        json_array_append_new(clusters, json_pack("{s:s,s:s}", "name", name, "connect_timeout",
                                                  i % 2 ? "1s" : "0.5s"));
    }
    json_t *root = json_pack("{s:{s:o}}", "static_resources", "clusters", clusters);
    pt_boot_t *c = accepts(__LINE__, build_tree(root));
    PT_CHECK(c != NULL);
    PT_CHECK_INT(c->nclusters, N);
    PT_CHECK(c->view->cap >= 2 * N);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "outbound|%d||svc-%d.ns.svc.cluster.local", 8000 + i % 100, i);
        pt_cluster_t *cl = pt_boot_find(c, name);
        if (cl == NULL || strcmp(cl->name, name) != 0 || cl != c->clusters[i] ||
            cl->connect_timeout_ms != (i % 2 ? 1000u : 500u)) {
            fprintf(stderr, "  cluster %s not found or wrong\n", name);
            PT_CHECK(0);
        }
    }
    PT_CHECK(pt_boot_find(c, "outbound|8000||svc-10000.ns.svc.cluster.local") == NULL);
    PT_CHECK(pt_boot_find(c, "outbound|8000||svc-0.ns.svc.cluster.loca") == NULL);
    PT_CHECK(pt_boot_find(c, "") == NULL);
    pt_boot_free(c);
}

/* ---- unknown and unsupported fields --------------------------------------------- */

static void test_unknown_fields(void)
{
    REJECTS("{'foo': 1, 'static_resources': {'clusters': [" CLUSTER("a") "]}}",
            "foo: unknown field");
    REJECTS("{'static_resources': {'clusters': [], 'bar': {}}}",
            "static_resources.bar: unknown field");
    REJECTS(CLUSTERS_ONLY(CLUSTER("a") ",{'name': 'b', 'colour': 'red'}"),
            "static_resources.clusters[1].colour: unknown field");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': ["
                          EP("10.0.0.1", 80) ", {'endpoint': {'address': " SA("10.0.0.2", 80)
                          ", 'port': 1}}]}]}}"),
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[1]"
            ".endpoint.port: unknown field");
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 10000, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                      "', 'stat_prefix': 's', 'cluster': 'a', 'clustr': 'a'}}")),
            TC ".clustr: unknown field");
    /* A misspelt required field: both what is missing and what is unknown. */
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 10000, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                      "', 'stat_prefix': 's', 'clustr': 'a'}}")),
            TC ".cluster: is required", TC ".clustr: unknown field");
    /* Unknown fields at every level of a listener. */
    REJECTS(BOOT(CLUSTER("a"),
                 "{'name': 'l', 'x1': 1, 'address': {'x2': 2, 'socket_address': {'address': "
                 "'127.0.0.1', 'port_value': 1, 'x3': 3}}, 'filter_chains': [{'x4': 4, "
                 "'filters': [{'x5': 5, 'name': 't', 'typed_config': {'@type': '" TCP_TYPE
                 "', 'stat_prefix': 's', 'cluster': 'a'}}]}]}"),
            L0 ".address.socket_address.x3: unknown field", L0 ".address.x2: unknown field",
            F00 ".x5: unknown field", L0 ".filter_chains[0].x4: unknown field",
            L0 ".x1: unknown field");
    /* Field names are case-sensitive: ConnectTimeout is not connectTimeout. */
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'ConnectTimeout': '1s'}"),
            C0 ".ConnectTimeout: unknown field");
}

static void test_unsupported_fields(void)
{
    REJECTS("{'dynamic_resources': {'ads_config': {}}}",
            "dynamic_resources.ads_config.api_type: is required (GRPC or DELTA_GRPC)",
            "dynamic_resources.ads_config.grpc_services: must name exactly one service (has 0)");
    REJECTS("{'dynamic_resources': {'ads_config': {'api_type': 'REST', "
            "'grpc_services': [{'google_grpc': {}}]}}}",
            "dynamic_resources.ads_config.api_type: \"REST\" is not supported",
            "dynamic_resources.ads_config.grpc_services[0].envoy_grpc: is required",
            "dynamic_resources.ads_config.grpc_services[0].google_grpc: field is not supported");
    REJECTS("{'dynamic_resources': {'cds_config': {'ads': {}, 'path': '/x'}}}",
            "dynamic_resources.cds_config: only one of ads, api_config_source and "
            "path_config_source may be given (found ads, path_config_source)");
    REJECTS("{'dynamic_resources': {'cds_config': {'api_config_source': {}}}}",
            "dynamic_resources.cds_config.api_config_source.api_type: is required (GRPC, "
            "DELTA_GRPC or REST)",
            "dynamic_resources.cds_config.api_config_source.grpc_services: must name exactly "
            "one service (has 0)");
    REJECTS("{'dynamic_resources': {'cds_config': {'resource_api_version': 'V2', "
            "'path': '/x'}}}",
            "dynamic_resources.cds_config.resource_api_version: \"V2\" is not supported");
    REJECTS("{'dynamic_resources': {'cds_config': {'initial_fetch_timeout': '1s'}}}",
            "dynamic_resources.cds_config: needs path_config_source, ads or "
            "api_config_source");
    REJECTS("{'dynamic_resources': {'cds_config': {'path_config_source': "
            "{'watched_directory': {}}}}}",
            "dynamic_resources.cds_config.path_config_source.path: is required",
            "dynamic_resources.cds_config.path_config_source.watched_directory.path: is "
            "required");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_subset_config': {'fallback_policy': 'ANY_ENDPOINT'}}"),
            C0 ".lb_subset_config: field is not supported");
    /* Named as written, camelCase included. */
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lrsServer': {}}"),
            C0 ".lrsServer: field is not supported");
    REJECTS("{'static_resources': {'secrets': []}}",
            "static_resources.secrets: field is not supported");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'transparent': true, 'filter_chains': [{'filters': [" TCP("a")
                               "]}]}"),
            L0 ".transparent: field is not supported");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'filter_chains': [{'transport_socket': {}, 'filters': [" TCP("a")
                               "]}]}"),
            L0 ".filter_chains[0].transport_socket.typed_config: is required");
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                  "', 'stat_prefix': 's', 'cluster': 'a', "
                                  "'weighted_clusters': {}}}")),
            TC ".weighted_clusters: field is not supported");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'policy': {'drop_overloads': []}, "
                          "'endpoints': [{"
                          "'lb_endpoints': [{'health_status': 'HEALTHY', 'endpoint': {"
                          "'health_check_config': {}, 'address': " SA("10.0.0.1", 80) "}}]}]}}"),
            C0 ".load_assignment.policy.drop_overloads: field is not supported",
            E00 ".health_check_config: field is not supported");
    REJECTS("{'admin': {'socket_options': [], 'address': " SA("127.0.0.1", 9901) "}}",
            "admin.socket_options: field is not supported");
    /* Listener and admin fields with their bad values. */
    REJECTS(BOOT(CLUSTER("a"), "{'name':'l','address':" SA("127.0.0.1", 80) ","
                 "'max_connections_to_accept_per_socket_event':0,"
                 "'ignore_global_conn_limit':'yes','filter_chains':[{'filters':[" TCP("a") "]}]}"),
            L0 ".ignore_global_conn_limit: \"yes\" is not a boolean",
            L0 ".max_connections_to_accept_per_socket_event: 0 is out of range [1, 4294967295]");
    REJECTS("{'admin': {'access_log_path': '', 'profile_path': 1, 'address': "
            SA("127.0.0.1", 9901) "}}",
            "admin.access_log_path: must not be empty", "admin.profile_path: 1 is not a string");
    REJECTS("{'admin': {'address': {'pipe': {'path': '/tmp/x'}}}}",
            "admin.address.socket_address: is required",
            "admin.address.pipe: field is not supported");
}

/* ---- enums ------------------------------------------------------------------------ */

static void test_enums(void)
{
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 'CLUSTER_PROVIDED'}"),
            "static_resources.clusters[0].lb_policy: CLUSTER_PROVIDED is allowed only with a "
            "cluster of type ORIGINAL_DST");
    pt_boot_t *dns = ACCEPTS(CLUSTERS_ONLY("{'name': 'a', 'dns_lookup_family': 'V4_ONLY'}"));
    PT_CHECK(dns != NULL);
    if (dns != NULL) {
        PT_CHECK_INT(dns->clusters[0]->dns_lookup_family, 1);
        pt_boot_free(dns);
    }
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'dns_lookup_family': 'V5_ONLY'}"),
            C0 ".dns_lookup_family: \"V5_ONLY\" is not a valid value (expected one of: AUTO, "
               "V4_ONLY, V6_ONLY, V4_PREFERRED, ALL)");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 'LOAD_BALANCING_POLICY_CONFIG'}"),
            C0 ".lb_policy: \"LOAD_BALANCING_POLICY_CONFIG\" is not supported");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 'FASTEST'}"),
            C0 ".lb_policy: \"FASTEST\" is not a valid value (expected one of: ROUND_ROBIN, "
               "LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV, CLUSTER_PROVIDED)");
    /* Envoy reads enum names in any case: strict_dns, random and auto load there. */
    pt_boot_t *lower = ACCEPTS(CLUSTERS_ONLY(
        "{'name': 'a', 'lb_policy': 'random', 'type': 'strict_dns', 'dns_lookup_family': "
        "'v4_Only', 'load_assignment': {'cluster_name': 'a', 'endpoints': [{'lb_endpoints': [{"
        "'endpoint': {'address': {'socket_address': {'address': 'localhost', "
        "'port_value': 80}}}}]}]}}"));
    PT_CHECK(lower != NULL);
    if (lower != NULL) {
        PT_CHECK_INT(lower->clusters[0]->lb_policy, PT_LB_RANDOM);
        PT_CHECK_INT(lower->clusters[0]->type, PT_CLUSTER_STRICT_DNS);
        PT_CHECK_INT(lower->clusters[0]->dns_lookup_family, 1);
        pt_boot_free(lower);
    }
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 'load_balancing_policy_config'}"),
            C0 ".lb_policy: \"load_balancing_policy_config\" is not supported");
    pt_boot_t *lb = ACCEPTS(CLUSTERS_ONLY(
        "{'name': 'a', 'lb_policy': 'LEAST_REQUEST', 'least_request_lb_config': "
        "{'choice_count': 5}}, {'name': 'b', 'lb_policy': 'RANDOM'}"));
    PT_CHECK(lb != NULL);
    if (lb != NULL) {
        PT_CHECK_INT(lb->clusters[0]->lb_policy, PT_LB_LEAST_REQUEST);
        PT_CHECK_INT(lb->clusters[0]->lb_choice_count, 5);
        PT_CHECK_INT(lb->clusters[1]->lb_policy, PT_LB_RANDOM);
        PT_CHECK_INT(lb->clusters[1]->lb_choice_count, 2);
        pt_boot_free(lb);
    }
    pt_boot_t *ka = ACCEPTS(CLUSTERS_ONLY(
        "{'name': 'a', 'upstream_connection_options': {'tcp_keepalive': "
        "{'keepalive_time': 60, 'keepalive_probes': 4}}}, {'name': 'b'}"));
    PT_CHECK(ka != NULL);
    if (ka != NULL) {
        PT_CHECK_INT(ka->clusters[0]->tcp_keepalive.enabled, 1);
        PT_CHECK_INT(ka->clusters[0]->tcp_keepalive.time_s, 60);
        PT_CHECK_INT(ka->clusters[0]->tcp_keepalive.probes, 4);
        PT_CHECK_INT(ka->clusters[0]->tcp_keepalive.interval_s, 0); /* the system's */
        PT_CHECK_INT(ka->clusters[1]->tcp_keepalive.enabled, 0);
        pt_boot_free(ka);
    }
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'upstream_connection_options': {'tcp_keepalive': "
                          "{'keepalive_time': 40000}}}"),
            C0 ".upstream_connection_options.tcp_keepalive.keepalive_time: 40000 is out of "
               "range [0, 32767]");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'upstream_connection_options': "
                          "{'happy_eyeballs_config': {}}}"),
            C0 ".upstream_connection_options.happy_eyeballs_config: field is not supported");
    /* Whether the weights are all equal is found when the hosts' set is computed: a
     * weighted subset has EDF steps, an equal one none. */
    pt_boot_t *w = ACCEPTS(CLUSTERS_ONLY(
        "{'name': 'eq', 'load_assignment': {'endpoints': [{'lb_endpoints': ["
        EP("127.0.0.1", 1) "," EP("127.0.0.1", 2) "]}]}},"
        "{'name': 'uneq', 'load_assignment': {'endpoints': [{'lb_endpoints': ["
        EP("127.0.0.1", 1) ", {'endpoint': {'address': " SA("127.0.0.1", 2) "}, "
        "'load_balancing_weight': 3}]}]}}"));
    PT_CHECK(w != NULL);
    if (w != NULL) {
        PT_CHECK(w->clusters[0]->lb_set->prio[0].hosts[PT_LB_HEALTHY].runs == NULL);
        PT_CHECK(w->clusters[1]->lb_set->prio[0].hosts[PT_LB_HEALTHY].runs != NULL);
        pt_boot_free(w);
    }
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 'LEAST_REQUEST', "
                          "'least_request_lb_config': {'choice_count': 1}}"),
            C0 ".least_request_lb_config.choice_count: 1 is out of range [2, 100]");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'least_request_lb_config': {}}"),
            C0 ".least_request_lb_config: applies only with lb_policy LEAST_REQUEST");
    pt_boot_t *bias = ACCEPTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 'LEAST_REQUEST', "
                                            "'least_request_lb_config': {'active_request_bias': "
                                            "{'default_value': 0.5, 'runtime_key': 'x'}}}"));
    PT_CHECK(bias != NULL);
    if (bias != NULL) {
        PT_CHECK(bias->clusters[0]->active_request_bias == 0.5);
        pt_boot_free(bias);
    }
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 0}"), C0 ".lb_policy: 0 is not an enum name");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'type': 'ORIGINAL_DST'}"),
            C0 ".lb_policy: ROUND_ROBIN is not valid for a cluster of type ORIGINAL_DST: only "
               "CLUSTER_PROVIDED is allowed");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'type': 'EDS'}"),
            C0 ".eds_cluster_config: is required for a cluster of type EDS");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'type': 'STATICK'}"),
            C0 ".type: \"STATICK\" is not a valid value (expected one of: STATIC, EDS, "
               "STRICT_DNS, LOGICAL_DNS, ORIGINAL_DST)");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': {'socket_address': {'address': "
                               "'127.0.0.1', 'port_value': 53, 'protocol': 'UDP'}}, "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.protocol: \"UDP\" is not supported");
    pt_boot_t *c = ACCEPTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': {'socket_address': {"
                                                "'address': '127.0.0.1', 'port_value': 53, "
                                                "'protocol': 'TCP'}}, 'filter_chains': [{"
                                                "'filters': [" TCP("a") "]}]}"));
    PT_CHECK(c != NULL);
    pt_boot_free(c);
}

/* ---- values ---------------------------------------------------------------------- */

/* Fields of a cluster that shape its updates: ignore_health_on_host_removal (a boolean,
 * default false) and the EDS config source's initial_fetch_timeout (a duration, default
 * 15 s, 0 for no limit). */
static void test_cluster_update_fields(void)
{
    pt_boot_t *c = ACCEPTS(CLUSTERS_ONLY(
        "{'name':'a','connect_timeout':'1s','ignore_health_on_host_removal':true,"
        "'load_assignment':{'cluster_name':'a','endpoints':[{'lb_endpoints':["
        EP("127.0.0.1", 9000) "]}]}},"
        "{'name':'e','type':'EDS','connect_timeout':'1s','eds_cluster_config':{'eds_config':"
        "{'path_config_source':{'path':'/nonexistent/eds.json'},'initial_fetch_timeout':'0s'}}},"
        CLUSTER("d")));
    if (c != NULL) {
        PT_CHECK_INT(c->clusters[0]->ignore_health_on_host_removal, 1);
        PT_CHECK_INT(c->clusters[1]->eds_config->initial_fetch_timeout_ms, 0);
        PT_CHECK_INT(c->clusters[2]->ignore_health_on_host_removal, 0);
        pt_boot_free(c);
    }
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'connect_timeout': '1s', "
                          "'ignore_health_on_host_removal': 'yes'}"),
            C0 ".ignore_health_on_host_removal: \"yes\" is not a boolean");
    REJECTS(CLUSTERS_ONLY("{'name':'e','type':'EDS','connect_timeout':'1s',"
                          "'eds_cluster_config':{'eds_config':{'path_config_source':"
                          "{'path':'/x/eds.json'},'initial_fetch_timeout':'soon'}}}"),
            C0 ".eds_cluster_config.eds_config.initial_fetch_timeout: \"soon\" is not a "
               "duration (expected a string like \"1.5s\")");
}

/* A source's own control plane (api_config_source): GRPC, DELTA_GRPC and REST, what each
 * keeps, and the cluster it names checked against the bootstrap's static clusters. */
#define XDS_CLUSTER CLUSTER("xds")
#define API(type, extra)                                                                 \
    "{'api_config_source':{'api_type':'" type "','transport_api_version':'V3'" extra "}}"
#define GRPC_SVC(cluster) ",'grpc_services':[{'envoy_grpc':{'cluster_name':'" cluster "'}}]"

static pt_boot_t *build_checked(const char *json)
{
    json_t *root = J(json);
    pt_config_source_set_static_clusters(root);
    json_incref(root);
    pt_boot_t *c = build_tree(root);
    json_decref(root);
    return c;
}

static void test_api_config_sources(void)
{
    pt_boot_t *c = accepts(__LINE__, build_checked(
        "{'dynamic_resources':{'cds_config':" API("DELTA_GRPC", GRPC_SVC("xds")
        ",'set_node_on_first_message_only':true") ",'lds_config':" API("REST",
        ",'cluster_names':['xds'],'refresh_delay':'2s'") "},"
        "'static_resources':{'clusters':[" XDS_CLUSTER "]}}"));
    if (c != NULL) {
        const pt_config_source_t *cds = &c->config->cds, *lds = &c->config->lds;
        PT_CHECK(cds->api != NULL && !cds->ads && cds->path == NULL);
        PT_CHECK_INT(cds->api->api_type, PT_API_DELTA_GRPC);
        PT_CHECK_STR(cds->api->cluster, "xds");
        PT_CHECK_INT(cds->api->node_first_only, 1);
        PT_CHECK_STR(cds->key, "api_config_source{DELTA_GRPC,xds,set_node_on_first_message_only}");
        PT_CHECK_INT(cds->initial_fetch_timeout_ms, 15000);
        PT_CHECK(lds->api != NULL);
        PT_CHECK_INT(lds->api->api_type, PT_API_REST);
        PT_CHECK_INT(lds->api->refresh_delay_ms, 2000);
        PT_CHECK_INT(lds->api->request_timeout_ms, 1000);
        pt_boot_free(c);
    }
    PT_CHECK(c != NULL);
    /* SDS from a control plane: the certificate, and the CA of a combined validation context
     * whose SAN matchers come from its default_validation_context (as Istio writes it); the
     * CA over ADS (a mux made as the server makes it before the config is built). */
    pt_xds_init(NULL, NULL, NULL);
    pt_ads_config_t ac = {.cluster_name = "sds-grpc"};
    PT_CHECK(pt_xds_ads_new(&ac) != NULL);
    c = accepts(__LINE__, build_checked(
        "{'static_resources':{'clusters':[" CLUSTER("sds-grpc") "],'listeners':[{'name':'l',"
        "'address':" SA("127.0.0.1", 1) ",'filter_chains':[{'filters':[" TCP("sds-grpc") "],"
        "'transport_socket':{'name':'tls','typed_config':{'@type':'type.googleapis.com/"
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',"
        "'require_client_certificate':true,'common_tls_context':{"
        "'tls_certificate_sds_secret_configs':[{'name':'default','sds_config':"
        API("GRPC", GRPC_SVC("sds-grpc")) "}],'combined_validation_context':{"
        "'default_validation_context':{'match_subject_alt_names':[{'prefix':'spiffe://a/'}]},"
        "'validation_context_sds_secret_config':{'name':'ROOTCA','sds_config':{'ads':{},"
        "'initial_fetch_timeout':'0s'}}}}}}}]}]}}"));
    if (c != NULL) {
        const pt_filter_chain_t *fc = &c->config->listeners[0].chains[0];
        PT_CHECK(fc->tls != NULL && fc->tls->cert_sds != NULL && fc->tls->validation_sds != NULL);
        PT_CHECK_STR(fc->tls->cert_sds->name, "default");
        PT_CHECK_STR(fc->tls->cert_sds->source.api->cluster, "sds-grpc");
        PT_CHECK_STR(fc->tls->validation_sds->name, "ROOTCA");
        PT_CHECK_INT(fc->tls->validation_sds->source.ads, 1);
        PT_CHECK_INT(fc->tls->nsan_matchers, 1);
        PT_CHECK_INT(fc->tls->has_validation, 1);
        /* Neither has come: the context makes no handshake, and warms (the CA's source has
         * no initial_fetch_timeout: for ever). */
        PT_CHECK_INT(fc->tls_ctx->secrets_missing, 2);
        PT_CHECK(pt_tls_context_warming(fc->tls_ctx, 0));
        pt_boot_free(c);
    }
    PT_CHECK(c != NULL);
    const char *const rej_cluster[] = {
        "dynamic_resources.cds_config.api_config_source.grpc_services[0].envoy_grpc."
        "cluster_name: \"nope\" is not a cluster of static_resources (the cluster of a "
        "control plane must be defined statically)",
        NULL};
    PT_CHECK(rejects(__LINE__, build_checked("{'dynamic_resources':{'cds_config':"
                                             API("GRPC", GRPC_SVC("nope")) "},"
                                             "'static_resources':{'clusters':[" XDS_CLUSTER
                                             "]}}"),
                     rej_cluster));
    const char *const rej_rest[] = {
        "dynamic_resources.cds_config.api_config_source.refresh_delay: is required for "
        "api_type REST",
        "dynamic_resources.cds_config.api_config_source.grpc_services: is for gRPC sources "
        "(api_type REST names its cluster in cluster_names)",
        NULL};
    PT_CHECK(rejects(__LINE__, build_checked("{'dynamic_resources':{'cds_config':"
                                             API("REST", ",'cluster_names':['xds']" GRPC_SVC(
                                                             "xds")) "},"
                                             "'static_resources':{'clusters':[" XDS_CLUSTER
                                             "]}}"),
                     rej_rest));
    REJECTS("{'dynamic_resources':{'cds_config':" API("GRPC", GRPC_SVC("xds")
            ",'refresh_delay':'1s'") "}}",
            "dynamic_resources.cds_config.api_config_source.refresh_delay: is for api_type REST");
    pt_config_source_set_static_clusters(NULL);
    pt_xds_free(); /* the secrets' subscriptions were watches on muxes never started */
}

static void test_durations(void)
{
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'connect_timeout': 'abc'}"),
            "static_resources.clusters[0].connect_timeout: \"abc\" is not a duration (expected "
            "a string like \"1.5s\")");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'connect_timeout': '5'}"),
            C0 ".connect_timeout: \"5\" is not a duration (expected a string like \"1.5s\")");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'connect_timeout': '-1s'}"),
            C0 ".connect_timeout: \"-1s\" is not a duration (expected a string like \"1.5s\")");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'connect_timeout': '0s'}"),
            C0 ".connect_timeout: must be greater than 0");
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                  "', 'stat_prefix': 's', 'cluster': 'a', "
                                  "'idle_timeout': '1h'}}")),
            TC ".idle_timeout: \"1h\" is not a duration (expected a string like \"1.5s\")");
    /* idle_timeout 0s disables the timeout, as in Envoy. */
    pt_boot_t *c = ACCEPTS(BOOT(CLUSTER("a"), LISTENER("l", 1, "{'name': 'tcp', 'typed_config': "
                                                                 "{'@type': '" TCP_TYPE "', "
                                                                 "'stat_prefix': 's', 'cluster': "
                                                                 "'a', 'idle_timeout': '0s'}}")));
    PT_CHECK(c != NULL);
    const tcp_proxy_config_view_t *tp = c->config->listeners[0].chains[0].filters[0].config;
    PT_CHECK_INT(tp->idle_timeout_ms, 0);
    pt_boot_free(c);
}

static void test_addresses_and_ports(void)
{
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 70000, TCP("a"))),
            L0 ".address.socket_address.port_value: 70000 is out of range [0, 65535]");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", -1, TCP("a"))),
            L0 ".address.socket_address.port_value: -1 is not a non-negative integer");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("localhost", 80) ", "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.address: \"localhost\" is not an IP address");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("1.2.3", 80) ", "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.address: \"1.2.3\" is not an IP address");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("256.0.0.1", 80) ", "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.address: \"256.0.0.1\" is not an IP address");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("[::1]", 80) ", "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.address: \"[::1]\" is not an IP address");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': ["
                          EP("backend.local", 80) "]}]}}"),
            E00 ".address.socket_address.address: \"backend.local\" is not an IP address (a "
                "hostname needs a cluster of type STRICT_DNS or LOGICAL_DNS)");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': ["
                          EP("10.0.0.1", 65536) "]}]}}"),
            E00 ".address.socket_address.port_value: 65536 is out of range [0, 65535]");
    /* Both socket_address fields are required. */
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': {'socket_address': {}}, "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.address: is required",
            L0 ".address.socket_address.port_value: is required");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': {}, "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address: is required");
    /* Port 0 and IPv6 are fine; "8080" as a string is an integer (proto3 JSON). */
    pt_boot_t *c = ACCEPTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': {'socket_address': {"
                                                "'address': '::', 'port_value': '8080'}}, "
                                                "'filter_chains': [{'filters': [" TCP("a") "]}]}"));
    PT_CHECK(c != NULL);
    PT_CHECK_STR(c->config->listeners[0].stat_name, "[::]_8080");
    pt_boot_free(c);
}

static void test_integers(void)
{
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'per_connection_buffer_limit_bytes': 0}"),
            C0 ".per_connection_buffer_limit_bytes: 0 is out of range [1, 4294967295]");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'per_connection_buffer_limit_bytes': 4294967296}"),
            C0 ".per_connection_buffer_limit_bytes: 4294967296 is out of range [1, 4294967295]");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'per_connection_buffer_limit_bytes': 1.5}"),
            C0 ".per_connection_buffer_limit_bytes: 1.5 is not a non-negative integer");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'per_connection_buffer_limit_bytes': '1k'}"),
            C0 ".per_connection_buffer_limit_bytes: \"1k\" is not a non-negative integer");
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                  "', 'stat_prefix': 's', 'cluster': 'a', "
                                  "'max_connect_attempts': 0}}")),
            TC ".max_connect_attempts: 0 is out of range [1, 4294967295]");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': [{"
                          "'load_balancing_weight': 0, 'endpoint': {'address': "
                          SA("10.0.0.1", 80) "}}]}]}}"),
            C0 ".load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight: 0 is out "
               "of range [1, 4294967295]");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'priority': 200, "
                          "'lb_endpoints': []}]}}"),
            C0 ".load_assignment.endpoints[0].priority: 200 is out of range [0, 128]");
    /* ClusterLoadAssignment, fully: what it refuses. */
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'policy': "
                          "{'overprovisioning_factor': 0}, 'endpoints': []}}"),
            C0 ".load_assignment.policy.overprovisioning_factor: must be greater than 0 (a "
               "percentage: 140 is Envoy's default)");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': [{"
                          "'health_status': 'SICK', 'endpoint': {'address': " SA("10.0.0.1", 80)
                          "}}]}]}}"),
            C0 ".load_assignment.endpoints[0].lb_endpoints[0].health_status: \"SICK\" is not a "
               "valid value (expected one of: UNKNOWN, HEALTHY, UNHEALTHY, DRAINING, TIMEOUT, "
               "DEGRADED)");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': [{"
                          "'health_status': 2, 'endpoint': {'address': " SA("10.0.0.1", 80)
                          "}}]}]}}"),
            C0 ".load_assignment.endpoints[0].lb_endpoints[0].health_status: 2 is not an enum "
               "name");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'priority': 0, "
                          "'load_balancing_weight': 0, 'lb_endpoints': []}]}}"),
            C0 ".load_assignment.endpoints[0].load_balancing_weight: 0 is out of range [1, "
               "4294967295]");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': ["
                          "{'locality': {'zone': 'z1'}, 'load_balancing_weight': 2, "
                          "'lb_endpoints': []}, {'locality': {'zone': 'z1'}, "
                          "'load_balancing_weight': 3, 'lb_endpoints': []}]}}"),
            C0 ".load_assignment.endpoints[1].load_balancing_weight: 3 differs from the weight 2 "
               "endpoints[0] gives the same locality {region: \"\", zone: \"z1\", sub_zone: "
               "\"\"} at priority 0 (one locality, one weight)");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'policy': {'endpoint_stale_after': "
                          "'5s'}, 'endpoints': []}}"),
            C0 ".load_assignment.policy.endpoint_stale_after: applies only to assignments from "
               "EDS (a STATIC cluster's load_assignment is never replaced, so it cannot go "
               "stale)");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': [{"
                          "'metadata': {'filter_metadata': {'istio': 3}}, 'endpoint': "
                          "{'address': " SA("10.0.0.1", 80) "}}]}]}}"),
            C0 ".load_assignment.endpoints[0].lb_endpoints[0].metadata: filter_metadata[\"istio\"] "
               "must be an object");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'common_lb_config': {'zone_aware_lb_config': {}, "
                          "'locality_weighted_lb_config': {}}}"),
            C0 ".common_lb_config: only one of zone_aware_lb_config, locality_weighted_lb_config "
               "may be given (found zone_aware_lb_config, locality_weighted_lb_config)");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'common_lb_config': {'healthy_panic_threshold': "
                          "{'value': 120}}}"),
            C0 ".common_lb_config.healthy_panic_threshold.value: 120 is out of range [0, 100]");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'round_robin_lb_config': {}, 'lb_policy': 'RANDOM'}"),
            C0 ".round_robin_lb_config: applies only with lb_policy ROUND_ROBIN");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 'LEAST_REQUEST', 'least_request_lb_config': "
                          "{'active_request_bias': {'default_value': -1, 'runtime_key': 'k'}}}"),
            C0 ".least_request_lb_config.active_request_bias.default_value: -1 is out of range "
               "[0, 1e+09]");
    REJECTS("{'cluster_manager': {'local_cluster_name': 'nope'}, "
            "'static_resources': {'clusters': [" CLUSTER("a") "]}}",
            "cluster_manager.local_cluster_name: local cluster \"nope\" must be defined in "
            "static_resources.clusters");
    /* Priorities may skip levels, as Envoy allows (an empty level takes no load). */
    pt_boot_t *gap = ACCEPTS(CLUSTERS_ONLY(
        "{'name': 'a', 'load_assignment': {'policy': {'overprovisioning_factor': 200, "
        "'weighted_priority_health': true}, 'endpoints': [{'priority': 2, 'locality': {"
        "'region': 'r', 'zone': 'z', 'sub_zone': 's'}, 'load_balancing_weight': 5, "
        "'lb_endpoints': [{'health_status': 'DEGRADED', 'metadata': {'filter_metadata': {"
        "'envoy.lb': {'canary': true}}}, 'endpoint': {'hostname': 'h1', 'address': "
        SA("10.0.0.1", 80) "}}]}]}}"));
    PT_CHECK(gap != NULL);
    if (gap != NULL) {
        pt_cluster_t *a = gap->clusters[0];
        PT_CHECK_INT(pt_cluster_host_info(a, 0)->priority, 2);
        PT_CHECK_INT(pt_cluster_host_info(a, 0)->locality_weight, 5);
        PT_CHECK_INT(pt_cluster_host_info(a, 0)->eds_health, PT_EDS_DEGRADED);
        PT_CHECK_STR(pt_cluster_host_metadata(a, 0), "{\"filter_metadata\":{\"envoy.lb\":{\"canary\":true}}}");
        PT_CHECK_STR(a->localities[pt_cluster_host_info(a, 0)->locality].sub_zone, "s");
        PT_CHECK_INT(a->cla_policy.overprovisioning_factor, 200);
        PT_CHECK_INT(a->cla_policy.weighted_priority_health, 1);
        PT_CHECK_INT(a->lb_set->npriorities, 3);
        /* Only degraded hosts, all at P=2: all the load goes there, as degraded load. */
        PT_CHECK_INT(a->lb_set->degraded_load[2], 100);
        pt_boot_free(gap);
    }
}

/* ---- names, duplicates, references --------------------------------------------- */

static void test_duplicates(void)
{
    REJECTS(CLUSTERS_ONLY(CLUSTER("a") "," CLUSTER("b") "," CLUSTER("a")),
            "static_resources.clusters[2].name: duplicate cluster name \"a\"");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 10000, TCP("a")) "," LISTENER("l", 10001, TCP("a"))),
            "static_resources.listeners[1].name: duplicate listener name \"l\"");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l1", 10000, TCP("a")) "," LISTENER("l2", 10000, TCP("a"))),
            "static_resources.listeners[1].address: listener \"l1\" already uses this address");
    /* The same IPv6 address spelled two ways is the same address. */
    REJECTS(BOOT(CLUSTER("a"),
                 "{'name': 'l1', 'address': " SA("::1", 80) ", 'filter_chains': [{'filters': ["
                 TCP("a") "]}]}, {'name': 'l2', 'address': " SA("0:0::1", 80) ", "
                 "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            "static_resources.listeners[1].address: listener \"l1\" already uses this address");
    /* Same port on other IPs, or the same IP on other ports, is fine. */
    pt_boot_t *c = ACCEPTS(BOOT(CLUSTER("a"), LISTENER("l1", 10000, TCP("a")) ","
                                  "{'name': 'l2', 'address': " SA("127.0.0.2", 10000) ", "
                                  "'filter_chains': [{'filters': [" TCP("a") "]}]}"));
    PT_CHECK(c != NULL);
    pt_boot_free(c);
}

static void test_references(void)
{
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 10000, TCP("nope"))),
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.cluster: "
            "unknown cluster \"nope\"");
    /* Cluster names are exact: no case folding, no trimming. */
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 10000, TCP("A"))),
            TC ".cluster: unknown cluster \"A\"");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 10000, TCP("a "))),
            TC ".cluster: unknown cluster \"a \"");
}

/* ---- required fields ------------------------------------------------------------ */

static void test_required(void)
{
    REJECTS(CLUSTERS_ONLY("{'connect_timeout': '1s'}"), C0 ".name: is required");
    REJECTS(CLUSTERS_ONLY("{'name': ''}"), C0 ".name: is required");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address: is required");
    /* A listener's name is optional, as in Envoy: it is named by its address. */
    pt_boot_t *c = ACCEPTS(BOOT(CLUSTER("a"), "{'address': " SA("127.0.0.1", 1) ", "
                                                "'filter_chains': [{'filters': [" TCP("a") "]}]}"));
    PT_CHECK(c != NULL);
    if (c != NULL) {
        PT_CHECK_STR(c->config->listeners[0].name, "127.0.0.1_1");
        pt_boot_free(c);
    }
    /* (Missing and empty filter_chains / filters: see the regression tests.) */
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                  "', 'cluster': 'a'}}")),
            TC ".stat_prefix: is required");
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                  "', 'stat_prefix': '', 'cluster': 'a'}}")),
            TC ".stat_prefix: is required");
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                  "', 'stat_prefix': 's'}}")),
            TC ".cluster: is required");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, "{'name': 'tcp'}")),
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config: is "
            "required");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, "{'typed_config': {'@type': '" TCP_TYPE
                                                "', 'stat_prefix': 's', 'cluster': 'a'}}")),
            F00 ".name: is required");
    /* A typed_config without @type: that one error, not its fields as unknown too. */
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'stat_prefix': 's', "
                                  "'cluster': 'a'}}")),
            TC ".@type: is required");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': 7}}")),
            TC ".@type: 7 is not a string");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': [{"
                          "'load_balancing_weight': 1}]}]}}"),
            C0 ".load_assignment.endpoints[0].lb_endpoints[0].endpoint: is required");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': [{"
                          "'endpoint': {'hostname': 'x'}}]}]}}"),
            E00 ".address: is required");
}

/* ---- filters ------------------------------------------------------------------------ */

static void test_filters(void)
{
    /* Only one terminal filter, and it must be last. */
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, TCP("a") "," TCP("a"))),
            "static_resources.listeners[0].filter_chains[0].filters[0]: "
            "envoy.filters.network.tcp_proxy is a terminal filter and must be the last in the "
            "chain");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, TCP("a") "," TCP("a") "," TCP("a"))),
            F00 ": envoy.filters.network.tcp_proxy is a terminal filter and must be the last in "
                "the chain",
            L0 ".filter_chains[0].filters[1]: envoy.filters.network.tcp_proxy is a terminal "
               "filter and must be the last in the chain");
    /* (A non-terminal filter last in the chain cannot be tested yet: no non-terminal network
     * filter is registered.) */
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, "{'name': 'x', 'typed_config': {'@type': "
                                                "'type.googleapis.com/acme.Filter'}}")),
            TC ".@type: \"type.googleapis.com/acme.Filter\" is not a supported network filter");
    /* The type URL is matched whole: no prefix or version games. */
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, "{'name': 'x', 'typed_config': {'@type': "
                                                "'envoy.extensions.filters.network.tcp_proxy.v3."
                                                "TcpProxy'}}")),
            TC ".@type: \"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\" is not a "
               "supported network filter");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'filter_chains': [{'filters': [" TCP("a") "]}, {'filters': ["
                               TCP("a") "]}]}"),
            L0 ".filter_chains: filter chains 0 and 1 have the same filter_chain_match");
}

/* ---- transparent interception ------------------------------------------------------- */

#define LF(kind, type)                                                                   \
    "{'name': 'envoy.filters.listener." kind "', 'typed_config': {'@type': "             \
    "'type.googleapis.com/envoy.extensions.filters.listener." kind ".v3." type "'"
#define ODST(extra)                                                                      \
    "{'name': 'p', 'type': 'ORIGINAL_DST', 'lb_policy': 'CLUSTER_PROVIDED'" extra "}"

static void test_interception(void)
{
    pt_boot_t *c = ACCEPTS(BOOT(
        ODST(", 'cleanup_interval': '2s', 'original_dst_lb_config': {'use_http_header': true, "
             "'http_header_name': 'X-Dst', 'upstream_port_override': 8080}"),
        "{'name': 'out', 'address': " SA("0.0.0.0", 15001) ", 'use_original_dst': true, "
        " 'traffic_direction': 'OUTBOUND', 'listener_filters': ["
        LF("original_dst", "OriginalDst") "}}, " LF("http_inspector", "HttpInspector")
        ", 'initial_read_buffer_size': 8192}}], "
        " 'filter_chains': [{'filter_chain_match': {'direct_source_prefix_ranges': "
        "  [{'address_prefix': '10.0.0.0', 'prefix_len': 8}]}, 'filters': [" TCP("p") "]}]},"
        "{'name': 'v', 'address': " SA("10.0.0.1", 80) ", 'bind_to_port': false, "
        " 'listener_filters': [{'name': 'envoy.filters.listener.original_dst'}], "
        " 'filter_chains': [{'filters': [" TCP("p") "]}]}"));
    if (c == NULL)
        return;
    const pt_listener_config_t *out = &c->config->listeners[0], *v = &c->config->listeners[1];
    PT_CHECK(out->original_dst && out->http_inspector && out->use_original_dst);
    PT_CHECK(out->bind_to_port && !out->tls_inspector);
    PT_CHECK_INT(out->traffic_direction, PT_TRAFFIC_OUTBOUND);
    PT_CHECK_INT(out->chains[0].match.ndirect_source_prefix_ranges, 1);
    PT_CHECK(!v->bind_to_port && v->original_dst && !v->use_original_dst);
    PT_CHECK_INT(v->traffic_direction, PT_TRAFFIC_UNSPECIFIED);
    const pt_cluster_t *p = c->clusters[0];
    PT_CHECK_INT(p->type, PT_CLUSTER_ORIGINAL_DST);
    PT_CHECK_INT(p->lb_policy, PT_LB_CLUSTER_PROVIDED);
    PT_CHECK_STR(p->odst_header, "x-dst");
    PT_CHECK_INT(p->odst_port_override, 8080);
    PT_CHECK_INT(p->odst_cleanup_ms, 2000);
    pt_boot_free(c);
    c = ACCEPTS(CLUSTERS_ONLY(ODST(", 'original_dst_lb_config': {'use_http_header': true}")));
    if (c != NULL) {
        PT_CHECK_STR(c->clusters[0]->odst_header, "x-envoy-original-dst-host");
        PT_CHECK_INT(c->clusters[0]->odst_port_override, -1);
        PT_CHECK_INT(c->clusters[0]->odst_cleanup_ms, 5000);
        pt_boot_free(c);
    }

    /* Bad input, each naming its field. */
    REJECTS(CLUSTERS_ONLY(ODST(", 'load_assignment': {'cluster_name': 'p', 'endpoints': [{"
                               "'lb_endpoints': [" EP("10.0.0.1", 80) "]}]}")),
            C0 ".load_assignment: ORIGINAL_DST clusters must have no load assignment "
               "configured (their hosts are the connections' original destinations)");
    REJECTS(CLUSTERS_ONLY("{'name': 'p', 'type': 'ORIGINAL_DST', 'lb_policy': 'RANDOM'}"),
            C0 ".lb_policy: RANDOM is not valid for a cluster of type ORIGINAL_DST: only "
               "CLUSTER_PROVIDED is allowed");
    REJECTS(CLUSTERS_ONLY(ODST(", 'original_dst_lb_config': {'upstream_port_override': 70000}")),
            C0 ".original_dst_lb_config.upstream_port_override: 70000 is out of range [0, 65535]");
    REJECTS(CLUSTERS_ONLY(ODST(", 'health_checks': []")),
            C0 ".health_checks: are not supported for a cluster of type ORIGINAL_DST");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("0.0.0.0", 1) ", "
                               "'listener_filters': [" LF("http_inspector", "HttpInspector")
                               ", 'mode': 'fast'}}], 'filter_chains': [{'filters': [" TCP("a")
                               "]}]}"),
            L0 ".listener_filters[0].typed_config.mode: unknown field");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("0.0.0.0", 1) ", "
                               "'listener_filters': [{'name': 'envoy.filters.listener.nope'}], "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".listener_filters[0].typed_config: is required");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("0.0.0.0", 1) ", "
                               "'use_original_dst': 'yes', 'filter_chains': [{'filters': ["
                               TCP("a") "]}]}"),
            L0 ".use_original_dst: \"yes\" is not a boolean");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("0.0.0.0", 1) ", "
                               "'filter_chains': [{'filter_chain_match': {"
                               "'direct_source_prefix_ranges': [{'address_prefix': 'x'}]}, "
                               "'filters': [" TCP("a") "]}]}"),
            L0 ".filter_chains[0].filter_chain_match.direct_source_prefix_ranges[0]: \"x/128\" "
               "is not a valid CIDR range");
}

/* ---- JSON types ---------------------------------------------------------------------- */

static void test_wrong_types(void)
{
    REJECTS("[]", "(root): the configuration must be an object");
    REJECTS("'static_resources'", "(root): the configuration must be an object");
    REJECTS("{'static_resources': 'x'}", "static_resources: \"x\" is not an object");
    REJECTS("{'static_resources': {'clusters': {}}}",
            "static_resources.clusters: {} is not a list");
    REJECTS("{'static_resources': {'clusters': ['a']}}",
            "static_resources.clusters[0]: \"a\" is not an object");
    REJECTS("{'static_resources': {'listeners': 5}}",
            "static_resources.listeners: 5 is not a list");
    REJECTS("{'static_resources': {'listeners': [[]]}}",
            "static_resources.listeners[0]: [] is not an object");
    REJECTS(CLUSTERS_ONLY("{'name': 5}"), C0 ".name: 5 is not a string");
    REJECTS(CLUSTERS_ONLY("{'name': ['a']}"), C0 ".name: [\"a\"] is not a string");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'connect_timeout': 5}"),
            C0 ".connect_timeout: 5 is not a duration (expected a string like \"1.5s\")");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': []}"),
            C0 ".load_assignment: [] is not an object");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': {}}}"),
            C0 ".load_assignment.endpoints: {} is not a list");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': "
                          "'10.0.0.1:80'}]}}"),
            C0 ".load_assignment.endpoints[0].lb_endpoints: \"10.0.0.1:80\" is not a list");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': '127.0.0.1:80', "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address: \"127.0.0.1:80\" is not an object");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': {'socket_address': {'address': "
                               "'127.0.0.1', 'port_value': true}}, "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.port_value: true is not a non-negative integer");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': {'socket_address': {'address': "
                               "127001, 'port_value': 80}}, "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.address: 127001 is not a string");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'filter_chains': ['tcp_proxy']}"),
            L0 ".filter_chains[0]: \"tcp_proxy\" is not an object");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, "{'name': 'tcp', 'typed_config': 'tcp'}")),
            F00 ".typed_config: \"tcp\" is not an object");
    REJECTS(BOOT(CLUSTER("a"), LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': '"
                                                TCP_TYPE "', 'stat_prefix': {}, "
                                                "'cluster': 'a'}}")),
            TC ".stat_prefix: {} is not a string");
    REJECTS("{'node': {'id': 1}}", "node.id: 1 is not a string");
    REJECTS("{'admin': []}", "admin: [] is not an object");
}

/* ---- camelCase ------------------------------------------------------------------------ */

static void test_both_spellings_rejected(void)
{
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'connect_timeout': '1s', 'connectTimeout': '2s'}"),
            C0 ".connect_timeout: is given twice (as connect_timeout and connectTimeout)");
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'lb_policy': 'ROUND_ROBIN', 'lbPolicy': 'ROUND_ROBIN'}"),
            C0 ".lb_policy: is given twice (as lb_policy and lbPolicy)");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': {'socket_address': {'address': "
                               "'127.0.0.1', 'port_value': 1, 'portValue': 1}}, "
                               "'filter_chains': [{'filters': [" TCP("a") "]}]}"),
            L0 ".address.socket_address.port_value: is given twice (as port_value and "
               "portValue)");
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'tcp', 'typed_config': {'@type': '" TCP_TYPE
                                  "', 'stat_prefix': 's', 'statPrefix': 's', 'cluster': 'a'}}")),
            TC ".stat_prefix: is given twice (as stat_prefix and statPrefix)");
    /* Read twice by the parser (counted, then parsed): still reported once. */
    REJECTS(CLUSTERS_ONLY("{'name': 'a', 'load_assignment': {'endpoints': [{'lb_endpoints': [], "
                          "'lbEndpoints': []}]}}"),
            C0 ".load_assignment.endpoints[0].lb_endpoints: is given twice (as lb_endpoints "
               "and lbEndpoints)");
}

/* ---- many errors in one pass -------------------------------------------------------- */

static void test_all_errors_collected(void)
{
    pt_boot_t *c = build("{'colour': 1, 'static_resources': {'clusters': ["
                           "  {'name': 'a', 'connect_timeout': 'abc', 'lb_policy': 'LOAD_BALANCING_POLICY_CONFIG'},"
                           "  {'name': 'b', 'lb_policy': 'CLUSTER_PROVIDED', 'load_assignment': {'endpoints': "
                           "   [{'lb_endpoints': [" EP("localhost", 70000) "]}]}},"
                           "  {'connect_timeout': '1s'}, {'name': 'ok'}],"
                           " 'listeners': [" LISTENER("l", 80, TCP("zzz")) ","
                           "  {'name': 'l', 'address': " SA("127.0.0.1", 80) ", 'filter_chains': [{"
                           "   'filters': [" TCP("ok") "]}]}]}}");
    PT_CHECK(c == NULL);
    static const char *const want[] = {
        C0 ".connect_timeout: \"abc\" is not a duration (expected a string like \"1.5s\")",
        C0 ".lb_policy: \"LOAD_BALANCING_POLICY_CONFIG\" is not supported",
        "static_resources.clusters[1].lb_policy: CLUSTER_PROVIDED is allowed only with a "
        "cluster of type ORIGINAL_DST",
        "static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint"
        ".address.socket_address.port_value: 70000 is out of range [0, 65535]",
        "static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint"
        ".address.socket_address.address: \"localhost\" is not an IP address (a hostname "
        "needs a cluster of type STRICT_DNS or LOGICAL_DNS)",
        "static_resources.clusters[2].name: is required",
        TC ".cluster: unknown cluster \"zzz\"",
        "static_resources.listeners[1].name: duplicate listener name \"l\"",
        "colour: unknown field",
        NULL};
    size_t n = 0;
    while (want[n] != NULL)
        n++;
    int same = R.nerrors == n;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(R.errors[i], want[i]) == 0;
    if (!same) {
        fprintf(stderr, "  got %zu errors:\n", R.nerrors);
        print_errors();
    }
    /* --mode validate prints them all, one per line. */
    char *joined = pt_cfg_errors_joined(&R);
    size_t lines = 0;
    for (char *p = joined; p && *p; p++)
        lines += *p == '\n';
    free(joined);
    pt_cfg_dispose(&R);
    PT_CHECK(same);
    PT_CHECK_INT(lines, n);
}

/* A rejected config registers no stats: a bad update leaves no trace. */
static void test_rejected_registers_nothing(void)
{
    uint32_t before = pt_stats_count();
    REJECTS(BOOT(CLUSTER("unregistered") "," CLUSTER("unregistered2"),
                 LISTENER("l", 1, TCP("unregistered")) "," LISTENER("l", 2, TCP("unregistered"))),
            "static_resources.listeners[1].name: duplicate listener name \"l\"");
    PT_CHECK_INT(pt_stats_count(), before);
    PT_CHECK_INT(pt_stats_find("cluster.unregistered.upstream_cx_total"), 0);
}

/* ---- regressions: config path reporting -------------------------
 * Each expects the correct behaviour and fails until the patch in the report is applied. */

/* Regression (config.c parse_listener / parse_filter_chain): an empty list is reported with
 * the field name twice in its path ("filter_chains.filter_chains: must not be empty"): the
 * error is raised with the field name while the reader is already inside the list. */
static void test_regression_empty_list_path(void)
{
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'filter_chains': []}"),
            L0 ".filter_chains: must not be empty");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'filter_chains': [{'filters': []}]}"),
            L0 ".filter_chains[0].filters: must not be empty");
}

/* Regression (config.c parse_listener / parse_filter_chain): a missing list is reported at
 * the parent's path with the field name inside the message ("listeners[0]: filter_chains:
 * is required") instead of at the field's own path like every other "is required". */
static void test_regression_missing_list_path(void)
{
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) "}"),
            L0 ".filter_chains: is required");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'filter_chains': [{}]}"),
            L0 ".filter_chains[0].filters: is required");
}

/* Regression (config.c parse_listener / parse_filter_chain): a list of the wrong type is
 * reported twice, as "is not a list" and then as missing. */
static void test_regression_wrong_type_list_reported_twice(void)
{
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'filter_chains': {}}"),
            L0 ".filter_chains: {} is not a list");
    REJECTS(BOOT(CLUSTER("a"), "{'name': 'l', 'address': " SA("127.0.0.1", 1) ", "
                               "'filter_chains': [{'filters': {}}]}"),
            L0 ".filter_chains[0].filters: {} is not a list");
}

/* Regression (config.c parse_filter): an unsupported @type is the one error worth reading;
 * its other fields cannot be judged, yet each is also reported as "unknown field". */
static void test_regression_unsupported_type_cascade(void)
{
    REJECTS(BOOT(CLUSTER("a"),
                 LISTENER("l", 1, "{'name': 'redis', 'typed_config': {'@type': "
                                  "'type.googleapis.com/envoy.extensions.filters.network."
                                  "redis_proxy.v3.RedisProxy', 'stat_prefix': 'r', "
                                  "'settings': {'op_timeout': '1s'}}}")),
            TC ".@type: \"type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3."
               "RedisProxy\" is not a supported network filter");
}

/* Regression (config.c parse_clusters with cluster.c pt_cluster_parse): a cluster that is
 * present but invalid is left out of the name index, so every filter naming it also gets
 * 'unknown cluster "a"', which sends the reader looking for a typo that is not there. */
static void test_regression_invalid_cluster_reference(void)
{
    REJECTS(BOOT("{'name': 'a', 'connect_timeout': 'abc'}", LISTENER("l", 1, TCP("a"))),
            C0 ".connect_timeout: \"abc\" is not a duration (expected a string like \"1.5s\")");
}

int main(void)
{
    if (pt_stats_thread_init() != 0)
        return 1;
    PT_RUN(test_minimal);
    PT_RUN(test_full);
    PT_RUN(test_full_yaml);
    PT_RUN(test_camel_case_accepted);
    PT_RUN(test_nulls_are_absent);
    PT_RUN(test_yaml_scalars_in_config);
    PT_RUN(test_many_clusters);
    PT_RUN(test_connection_limits);
    PT_RUN(test_cluster_http_protocol_options);
    PT_RUN(test_unknown_fields);
    PT_RUN(test_unsupported_fields);
    PT_RUN(test_enums);
    PT_RUN(test_durations);
    PT_RUN(test_cluster_update_fields);
    PT_RUN(test_api_config_sources);
    PT_RUN(test_addresses_and_ports);
    PT_RUN(test_integers);
    PT_RUN(test_duplicates);
    PT_RUN(test_references);
    PT_RUN(test_required);
    PT_RUN(test_filters);
    PT_RUN(test_interception);
    PT_RUN(test_wrong_types);
    PT_RUN(test_both_spellings_rejected);
    PT_RUN(test_all_errors_collected);
    PT_RUN(test_rejected_registers_nothing);
    PT_RUN(test_regression_empty_list_path);
    PT_RUN(test_regression_missing_list_path);
    PT_RUN(test_regression_wrong_type_list_reported_twice);
    PT_RUN(test_regression_unsupported_type_cascade);
    PT_RUN(test_regression_invalid_cluster_reference);
    PT_TEST_EXIT();
}
