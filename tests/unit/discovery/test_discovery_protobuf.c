/* End to end: DiscoveryResponses of clusters (RING_HASH and typed load balancing policies among
 * them), endpoint assignments, listeners (with an HTTP
 * connection manager, its filters and routes) and route configurations, written as YAML,
 * encoded to the protobuf wire format by the schema, then read the way a gRPC xDS update is
 * read (pt_discovery_response_parse_protobuf). The decoded tree must equal the YAML's, and
 * the real parsers must accept every resource; a resource with an error is reported the
 * same, with the same path, whichever encoding it came in; secrets and a delta response
 * round-trip to the same tree. One cluster is built byte by byte with the wire writer, so
 * the decoding is not only checked against its own encoder. */
#include "discovery/discovery_response.h"
#include "discovery/endpoints.h"
#include "discovery/lb_hash.h"
#include "proxy/arena.h"
#include "proxy/cluster.h"
#include "proxy/config.h"
#include "proxy/conn_manager.h"
#include "proxy/formatter.h"
#include "proxy/matcher.h"
#include "proxy/proto_json.h"
#include "proxy/route.h"
#include "pt_test.h"
#include "pt_test_json.h"

#define CLUSTER_TYPE  "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define CLA_TYPE      "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define LISTENER_TYPE "type.googleapis.com/envoy.config.listener.v3.Listener"
#define ROUTE_TYPE    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

static char err[2048];

/* JSON equality where numbers compare by value (YAML's 2 and a decoded 2.0 are one number). */
static int same_json(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_typeof(a) != json_typeof(b))
        return 0;
    if (json_is_object(a)) {
        const char *k;
        json_t *v;
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach(a, k, v)
        {
            json_t *w = json_object_get(b, k);
            if (w == NULL || !same_json(v, w))
                return 0;
        }
        return 1;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same_json(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    return json_equal(a, b);
}

static json_t *yaml(const char *text)
{
    char e[256];
    json_t *t = pt_yaml_parse(text, strlen(text), e, sizeof(e));
    if (t == NULL)
        fprintf(stderr, "bad test YAML: %s\n", e);
    return t;
}

/* The YAML response in protobuf, read back; NULL-free *resp on success (0). */
static int via_protobuf(json_t *doc, const char *type_url, pt_discovery_response_t *resp)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    const pt_pb_message_t *m = pt_pb_message_find("envoy.service.discovery.v3.DiscoveryResponse");
    if (pt_pb_from_json(m, doc, &w, err, sizeof(err)) < 0) {
        fprintf(stderr, "  encode: %s\n", err);
        pt_pb_writer_dispose(&w);
        memset(resp, 0, sizeof(*resp));
        return -1;
    }
    int rc = pt_discovery_response_parse_protobuf(w.buf, w.len, type_url, resp, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "  decode: %s\n", err);
    else if (!same_json(resp->root, doc)) {
        char *a = json_dumps(resp->root, JSON_SORT_KEYS | JSON_COMPACT);
        char *b = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
        fprintf(stderr, "  decoded: %s\n  yaml:    %s\n", a, b);
        free(a);
        free(b);
        rc = -1;
    }
    pt_pb_writer_dispose(&w);
    return rc;
}

static void print_errors(const pt_cfg_t *r)
{
    for (size_t i = 0; i < r->nerrors; i++)
        fprintf(stderr, "    %s\n", r->errors[i]);
}

/* ---- clusters --------------------------------------------------------------------------- */

static const char cds_yaml[] =
    "version_info: '3'\n"
    "type_url: " CLUSTER_TYPE "\n"
    "nonce: n1\n"
    "resources:\n"
    "- '@type': " CLUSTER_TYPE "\n"
    "  name: backend\n"
    "  type: STATIC\n"
    "  connect_timeout: 1.500s\n"
    "  lb_policy: LEAST_REQUEST\n"
    "  dns_lookup_family: V4_ONLY\n"
    "  per_connection_buffer_limit_bytes: 32768\n"
    "  circuit_breakers:\n"
    "    thresholds:\n"
    "    - max_connections: 7\n"
    "      max_pending_requests: 0\n"
    "  load_assignment:\n"
    "    cluster_name: backend\n"
    "    endpoints:\n"
    "    - locality: {region: r1, zone: z1}\n"
    "      lb_endpoints:\n"
    "      - endpoint: {address: {socket_address: {address: 10.1.2.3, port_value: 8080}}}\n"
    "        load_balancing_weight: 3\n"
    "  health_checks:\n"
    "  - timeout: 1s\n"
    "    interval: 5s\n"
    "    unhealthy_threshold: 2\n"
    "    healthy_threshold: 1\n"
    "    http_health_check: {path: /healthz}\n"
    "  outlier_detection: {consecutive_5xx: 3, base_ejection_time: 30s}\n"
    "  typed_extension_protocol_options:\n"
    "    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "      '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "      explicit_http_config: {http2_protocol_options: {max_concurrent_streams: 50}}\n"
    "- '@type': " CLUSTER_TYPE "\n"
    "  name: eds\n"
    "  type: EDS\n"
    "  connect_timeout: 0.250s\n"
    "  eds_cluster_config:\n"
    "    service_name: backend\n"
    "    eds_config: {path_config_source: {path: /etc/petrel/eds.yaml}}\n"
    "- '@type': " CLUSTER_TYPE "\n"
    "  name: ring\n"
    "  lb_policy: RING_HASH\n"
    "  ring_hash_lb_config: {minimum_ring_size: 64, hash_function: MURMUR_HASH_2}\n"
    "  common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}\n"
    "- '@type': " CLUSTER_TYPE "\n"
    "  name: typed\n"
    "  load_balancing_policy:\n"
    "    policies:\n"
    "    - typed_extension_config:\n"
    "        name: envoy.load_balancing_policies.maglev\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3"
    ".Maglev\n"
    "          table_size: 251\n"
    "    - typed_extension_config:\n"
    "        name: envoy.load_balancing_policies.ring_hash\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash"
    ".v3.RingHash\n"
    "          minimum_ring_size: 16\n";

static void test_clusters(void)
{
    json_t *doc = yaml(cds_yaml);
    PT_CHECK(doc != NULL);
    pt_discovery_response_t resp;
    int rc = via_protobuf(doc, CLUSTER_TYPE, &resp);
    json_decref(doc);
    PT_CHECK_INT(rc, 0);
    PT_CHECK_STR(resp.version_info, "3");
    PT_CHECK_INT(resp.nresources, 4);
    for (size_t i = 0; i < resp.nresources; i++) {
        pt_cfg_t r;
        pt_discovery_resource_reader(&resp.resources[i], &r);
        pt_cluster_t *c = pt_cluster_parse(&r);
        pt_cfg_finish(&r);
        print_errors(&r);
        int ok = c != NULL && pt_cfg_ok(&r);
        if (ok && i == 0)
            ok = c->connect_timeout_ms == 1500;
        /* The hash balancers and the typed policies come through protobuf as from YAML. */
        if (ok && i == 2)
            ok = c->lb_policy == PT_LB_RING_HASH && c->lb_hash != NULL &&
                 c->lb_hash->min_ring_size == 64 &&
                 c->lb_hash->hash_function == PT_HASH_MURMUR_HASH_2 && c->lb_hash->use_hostname;
        if (ok && i == 3)
            ok =
                c->lb_policy == PT_LB_MAGLEV && c->lb_hash != NULL && c->lb_hash->table_size == 251;
        if (c != NULL)
            pt_cluster_unref(c);
        pt_cfg_dispose(&r);
        PT_CHECK(ok);
    }
    pt_discovery_response_dispose(&resp);
}

/* ---- endpoints -------------------------------------------------------------------------- */

static const char eds_yaml[] =
    "version_info: '9'\n"
    "resources:\n"
    "- '@type': " CLA_TYPE "\n"
    "  cluster_name: backend\n"
    "  endpoints:\n"
    "  - lb_endpoints:\n"
    "    - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}\n"
    "    - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 81}}}\n"
    "      load_balancing_weight: 2\n"
    "  - locality: {region: r2, zone: z2, sub_zone: s2}\n"
    "    priority: 1\n"
    "    load_balancing_weight: 7\n"
    "    lb_endpoints:\n"
    "    - endpoint: {address: {socket_address: {address: '::1', port_value: 82}}, hostname: "
    "h3}\n"
    "      load_balancing_weight: 5\n"
    "      health_status: DEGRADED\n"
    "      metadata: {filter_metadata: {istio: {network: n2, weight: 1.5}}}\n"
    "  policy: {overprovisioning_factor: 120, endpoint_stale_after: 30s, "
    "weighted_priority_health: true}\n";

static void test_endpoints(void)
{
    json_t *doc = yaml(eds_yaml);
    PT_CHECK(doc != NULL);
    pt_discovery_response_t resp;
    int rc = via_protobuf(doc, CLA_TYPE, &resp);
    json_decref(doc);
    PT_CHECK_INT(rc, 0);
    PT_CHECK_INT(resp.nresources, 1);
    PT_CHECK_STR(resp.resources[0].name, "backend");
    pt_cfg_t r;
    pt_discovery_resource_reader(&resp.resources[0], &r);
    pt_arena_t arena;
    pt_arena_init_small(&arena);
    pt_endpoints_t eps;
    memset(&eps, 0, sizeof(eps));
    rc = pt_endpoints_parse(&r, &arena, "backend", &eps);
    pt_cfg_finish(&r);
    print_errors(&r);
    int ok = rc == 0 && pt_cfg_ok(&r) && eps.nendpoints == 3 && eps.endpoints[1].weight == 2;
    /* Every field of the assignment arrives through the protobuf schema as through JSON. */
    const pt_endpoint_t *e = ok ? &eps.endpoints[2] : NULL;
    int full = e != NULL && e->priority == 1 && e->locality_weight == 7 &&
               strcmp(e->locality.region, "r2") == 0 && strcmp(e->locality.zone, "z2") == 0 &&
               strcmp(e->locality.sub_zone, "s2") == 0 && e->health == PT_EDS_DEGRADED &&
               e->hostname != NULL && strcmp(e->hostname, "h3") == 0 && e->metadata != NULL &&
               strcmp(e->metadata, "{\"filter_metadata\":{\"istio\":{\"network\":\"n2\","
                                   "\"weight\":1.5}}}") == 0 &&
               eps.policy.overprovisioning_factor == 120 &&
               eps.policy.endpoint_stale_after_ms == 30000 && eps.policy.weighted_priority_health;
    if (ok && !full)
        fprintf(stderr, "metadata: %s\n", e->metadata ? e->metadata : "(null)");
    pt_cfg_dispose(&r);
    pt_arena_dispose(&arena);
    pt_discovery_response_dispose(&resp);
    PT_CHECK(ok);
    PT_CHECK(full);
}

/* ---- listeners -------------------------------------------------------------------------- */

static const char lds_yaml[] =
    "version_info: '1'\n"
    "resources:\n"
    "- '@type': " LISTENER_TYPE "\n"
    "  name: http\n"
    "  address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
    "  filter_chains:\n"
    "  - filters:\n"
    "    - name: envoy.filters.network.http_connection_manager\n"
    "      typed_config:\n"
    "        '@type': type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager\n"
    "        stat_prefix: ingress\n"
    "        stream_idle_timeout: 300s\n"
    "        common_http_protocol_options: {idle_timeout: 60s}\n"
    "        route_config:\n"
    "          name: local\n"
    "          virtual_hosts:\n"
    "          - name: all\n"
    "            domains: ['*']\n"
    "            routes:\n"
    "            - match:\n"
    "                prefix: /api\n"
    "                headers: [{name: x-env, string_match: {exact: prod}}]\n"
    "              route:\n"
    "                cluster: backend\n"
    "                timeout: 2.500s\n"
    "                retry_policy: {retry_on: 5xx, num_retries: 2}\n"
    "            - match: {prefix: /}\n"
    "              direct_response: {status: 404, body: {inline_string: nope}}\n"
    "        http_filters:\n"
    "        - name: envoy.filters.http.fault\n"
    "          typed_config:\n"
    "            '@type': type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n"
    "            abort:\n"
    "              http_status: 503\n"
    "              percentage: {numerator: 10, denominator: TEN_THOUSAND}\n"
    "        - name: envoy.filters.http.router\n"
    "          typed_config:\n"
    "            '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
    "        access_log:\n"
    "        - name: envoy.access_loggers.stdout\n"
    "          typed_config:\n"
    "            '@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3."
    "StdoutAccessLog\n"
    "- '@type': " LISTENER_TYPE "\n"
    "  name: tcp\n"
    "  address: {socket_address: {address: 127.0.0.1, port_value: 10001}}\n"
    "  filter_chains:\n"
    "  - filters:\n"
    "    - name: envoy.filters.network.tcp_proxy\n"
    "      typed_config:\n"
    "        '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
    "        stat_prefix: tcp\n"
    "        cluster: backend\n"
    "        idle_timeout: 0s\n";

static int any_cluster(void *data, const char *name)
{
    (void)data;
    (void)name;
    return 1;
}

static void test_listeners(void)
{
    json_t *doc = yaml(lds_yaml);
    PT_CHECK(doc != NULL);
    pt_discovery_response_t resp;
    int rc = via_protobuf(doc, LISTENER_TYPE, &resp);
    json_decref(doc);
    PT_CHECK_INT(rc, 0);
    json_t *boot = J("{'static_resources': {}}");
    pt_cluster_lookup_t known = {any_cluster, NULL};
    pt_cfg_t r;
    pt_cfg_init(&r, boot);
    pt_config_t *cfg = pt_config_build_lds(boot, &known, &resp, NULL, &r);
    print_errors(&r);
    int ok = cfg != NULL && pt_cfg_ok(&r) && cfg->nlisteners == 2 &&
             pt_config_find_listener(cfg, "http") != NULL &&
             pt_config_find_listener(cfg, "tcp") != NULL;
    if (cfg != NULL)
        pt_config_unref(cfg);
    pt_cfg_dispose(&r);
    json_decref(boot);
    pt_discovery_response_dispose(&resp);
    PT_CHECK(ok);
}

/* ---- route configurations --------------------------------------------------------------- */

static const char rds_yaml[] =
    "version_info: '4'\n"
    "resources:\n"
    "- '@type': " ROUTE_TYPE "\n"
    "  name: routes\n"
    "  virtual_hosts:\n"
    "  - name: vh\n"
    "    domains: [example.com, '*.example.com']\n"
    "    routes:\n"
    "    - match: {path: /exact}\n"
    "      route: {cluster: a}\n"
    "    - match: {safe_regex: {regex: '^/r/[0-9]+$'}}\n"
    "      route:\n"
    "        weighted_clusters:\n"
    "          clusters: [{name: a, weight: 30}, {name: b, weight: 70}]\n"
    "    - match: {prefix: /old}\n"
    "      redirect: {path_redirect: /new}\n"
    "    - match: {prefix: /, case_sensitive: false}\n"
    "      route: {cluster: b, prefix_rewrite: /v2/}\n"
    "    request_headers_to_add:\n"
    "    - header: {key: x-a, value: '1'}\n"
    "      append_action: OVERWRITE_IF_EXISTS_OR_ADD\n";

static void test_routes(void)
{
    json_t *doc = yaml(rds_yaml);
    PT_CHECK(doc != NULL);
    pt_discovery_response_t resp;
    int rc = via_protobuf(doc, ROUTE_TYPE, &resp);
    json_decref(doc);
    PT_CHECK_INT(rc, 0);
    PT_CHECK_INT(resp.nresources, 1);
    pt_cfg_t r;
    pt_discovery_resource_reader(&resp.resources[0], &r);
    pt_route_config_t *rc2 = pt_route_config_parse_resource(&r, any_cluster, NULL);
    pt_cfg_finish(&r);
    print_errors(&r);
    int ok = rc2 != NULL && pt_cfg_ok(&r);
    if (rc2 != NULL)
        pt_route_config_unref(rc2);
    pt_cfg_dispose(&r);
    pt_discovery_response_dispose(&resp);
    PT_CHECK(ok);
}

/* ---- trees only: secrets and delta responses ------------------------------------------ */

/* YAML -> protobuf -> tree, equal to the YAML's tree: 1. */
static int same_through_protobuf(const char *message, const char *text)
{
    json_t *doc = yaml(text);
    if (doc == NULL)
        return 0;
    const pt_pb_message_t *m = pt_pb_message_find(message);
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    int same = 0;
    if (pt_pb_from_json(m, doc, &w, err, sizeof(err)) < 0) {
        fprintf(stderr, "  encode: %s\n", err);
    } else {
        json_t *t = pt_pb_to_json(m, w.buf, w.len, NULL, err, sizeof(err));
        same = t != NULL && same_json(t, doc);
        if (!same)
            fprintf(stderr, "  %s\n", t == NULL ? err : "trees differ");
        json_decref(t);
    }
    pt_pb_writer_dispose(&w);
    json_decref(doc);
    return same;
}

static void test_secret_and_delta_trees(void)
{
    /* bytes as base64, a oneof of data sources, repeated matchers, a Duration in a wrapper
     * message, a Struct */
    PT_CHECK(same_through_protobuf(
        "envoy.service.discovery.v3.DiscoveryResponse",
        "resources:\n"
        "- '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n"
        "  name: server\n"
        "  tls_certificate:\n"
        "    certificate_chain: {inline_bytes: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==}\n"
        "    private_key: {filename: /etc/certs/key.pem}\n"
        "- '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n"
        "  name: ca\n"
        "  validation_context:\n"
        "    trusted_ca: {inline_string: pem}\n"
        "    match_typed_subject_alt_names:\n"
        "    - san_type: URI\n"
        "      matcher: {prefix: 'spiffe://cluster.local/'}\n"));
    PT_CHECK(same_through_protobuf("envoy.service.discovery.v3.DeltaDiscoveryResponse",
                                   "system_version_info: v2\n"
                                   "type_url: " CLUSTER_TYPE "\n"
                                   "nonce: n\n"
                                   "removed_resources: [old]\n"
                                   "resources:\n"
                                   "- name: a\n"
                                   "  version: '1'\n"
                                   "  ttl: 30s\n"
                                   "  metadata: {filter_metadata: {m: {k: [1, x, true, null]}}}\n"
                                   "  resource: {'@type': " CLUSTER_TYPE
                                   ", name: a, connect_timeout: 0.001s}\n"));
}

/* ---- the same errors either way --------------------------------------------------------- */

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The errors pt_cluster_parse reports for each resource, sorted (a decoded message lists
 * its fields in number order, a YAML file in its own: unknown fields are reported in that
 * order), "; "-joined. */
static char *cluster_errors(pt_discovery_response_t *resp)
{
    static char out[2048];
    out[0] = '\0';
    for (size_t i = 0; i < resp->nresources; i++) {
        pt_cfg_t r;
        pt_discovery_resource_reader(&resp->resources[i], &r);
        pt_cluster_t *c = pt_cluster_parse(&r);
        pt_cfg_finish(&r);
        if (r.nerrors > 0) /* qsort takes no NULL array, even empty */
            qsort(r.errors, r.nerrors, sizeof(r.errors[0]), by_string);
        for (size_t j = 0; j < r.nerrors; j++)
            snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%s", out[0] ? "; " : "",
                     r.errors[j]);
        if (c != NULL)
            pt_cluster_unref(c);
        pt_cfg_dispose(&r);
    }
    return out;
}

static void test_same_errors(void)
{
    json_t *doc = yaml("resources:\n"
                       "- '@type': " CLUSTER_TYPE "\n"
                       "  name: a\n"
                       "  connect_timeout: 1s\n"
                       "  lb_subset_config: {fallback_policy: ANY_ENDPOINT}\n"
                       "  upstream_bind_config: {source_address: {address: 10.0.0.1}}\n"
                       "  load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: "
                       "[{endpoint: {address: {socket_address: {address: 10.0.0.1, "
                       "port_value: 80}}}}]}]}\n");
    PT_CHECK(doc != NULL);
    pt_discovery_response_t from_json, from_pb;
    PT_CHECK_INT(pt_discovery_response_parse(doc, CLUSTER_TYPE, &from_json, err, sizeof(err)), 0);
    char json_errors[2048];
    snprintf(json_errors, sizeof(json_errors), "%s", cluster_errors(&from_json));
    pt_discovery_response_dispose(&from_json);
    int rc = via_protobuf(doc, CLUSTER_TYPE, &from_pb);
    json_decref(doc);
    PT_CHECK(json_errors[0] != '\0');
    if (rc == 0) {
        PT_CHECK_STR(cluster_errors(&from_pb), json_errors);
    }
    pt_discovery_response_dispose(&from_pb);
}

/* The errors pt_config_build_lds reports for the listeners of resp, sorted, "; "-joined. */
static char *listener_errors(pt_discovery_response_t *resp)
{
    static char out[2048];
    out[0] = '\0';
    json_t *boot = J("{'static_resources': {}}");
    pt_cluster_lookup_t known = {any_cluster, NULL};
    pt_cfg_t r;
    pt_cfg_init(&r, boot);
    pt_config_t *cfg = pt_config_build_lds(boot, &known, resp, NULL, &r);
    if (r.nerrors > 0) /* qsort takes no NULL array, even empty */
        qsort(r.errors, r.nerrors, sizeof(r.errors[0]), by_string);
    for (size_t j = 0; j < r.nerrors; j++)
        snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%s", out[0] ? "; " : "",
                 r.errors[j]);
    if (cfg != NULL)
        pt_config_unref(cfg);
    pt_cfg_dispose(&r);
    json_decref(boot);
    return out;
}

/* An access logger petrel knows and does not implement (gRPC), a listener filter it does not
 * have (proxy_protocol): refused by the parsers, in the same words, from either encoding. */
static void test_same_listener_errors(void)
{
    json_t *doc =
        yaml("resources:\n"
             "- '@type': " LISTENER_TYPE "\n"
             "  name: l\n"
             "  address: {socket_address: {address: 127.0.0.1, port_value: 10002}}\n"
             "  listener_filters:\n"
             "  - name: envoy.filters.listener.proxy_protocol\n"
             "    typed_config:\n"
             "      '@type': type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol."
             "v3.ProxyProtocol\n"
             "  filter_chains:\n"
             "  - filters:\n"
             "    - name: envoy.filters.network.tcp_proxy\n"
             "      typed_config:\n"
             "        '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3."
             "TcpProxy\n"
             "        stat_prefix: tcp\n"
             "        cluster: backend\n"
             "        access_log:\n"
             "        - name: envoy.access_loggers.tcp_grpc\n"
             "          typed_config:\n"
             "            '@type': type.googleapis.com/envoy.extensions.access_loggers.grpc.v3."
             "TcpGrpcAccessLogConfig\n"
             "            common_config: {log_name: x, transport_api_version: V3}\n");
    PT_CHECK(doc != NULL);
    pt_discovery_response_t from_json, from_pb;
    PT_CHECK_INT(pt_discovery_response_parse(doc, LISTENER_TYPE, &from_json, err, sizeof(err)), 0);
    char json_errors[2048];
    snprintf(json_errors, sizeof(json_errors), "%s", listener_errors(&from_json));
    pt_discovery_response_dispose(&from_json);
    int rc = via_protobuf(doc, LISTENER_TYPE, &from_pb);
    json_decref(doc);
    PT_CHECK(strstr(json_errors, "access_log[0]") != NULL);
    PT_CHECK(strstr(json_errors, "listener_filters[0]") != NULL);
    if (rc == 0) {
        PT_CHECK_STR(listener_errors(&from_pb), json_errors);
    }
    pt_discovery_response_dispose(&from_pb);
    PT_CHECK_INT(rc, 0);
}

/* ---- fields newer than the pinned .proto files (scripts/proto_schema_additions.txt) ---- */

static const char newer_yaml[] =
    "resources:\n"
    "- '@type': " LISTENER_TYPE "\n"
    "  name: newer\n"
    "  address: {socket_address: {address: 127.0.0.1, port_value: 10003}}\n"
    "  filter_chains:\n"
    "  - filters:\n"
    "    - name: envoy.filters.network.http_connection_manager\n"
    "      typed_config:\n"
    "        '@type': type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager\n"
    "        stat_prefix: newer\n"
    "        common_http_protocol_options: {idle_timeout: 30s}\n"
    "        http_protocol_options:\n"
    "          accept_http_10: true\n"
    "          ignore_http_11_upgrade: [{exact: websocket}, {prefix: TLS, ignore_case: true}]\n"
    "        route_config:\n"
    "          virtual_hosts:\n"
    "          - name: all\n"
    "            domains: ['*']\n"
    "            routes:\n"
    "            - match: {prefix: /down}\n"
    "              direct_response:\n"
    "                status: 503\n"
    "                body: {inline_string: maintenance}\n"
    "                body_format:\n"
    "                  text_format: \"[%LOCAL_REPLY_BODY%]\\n\"\n"
    "                  content_type: text/x-down\n"
    "            - match: {prefix: /}\n"
    "              route: {cluster: backend}\n"
    "        http_filters:\n"
    "        - name: envoy.filters.http.router\n"
    "          typed_config:\n"
    "            '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n";

/* What the listener "newer" was built into, as text: the fields the YAML sets. */
static char *newer_summary(const pt_config_t *cfg, char *out, size_t len)
{
    const pt_listener_config_t *l = pt_config_find_listener(cfg, "newer");
    if (l == NULL || l->nchains != 1 || l->chains[0].nfilters != 1) {
        snprintf(out, len, "no listener");
        return out;
    }
    const pt_hcm_config_t *hc = l->chains[0].filters[0].config;
    int n = snprintf(out, len, "idle %llu http10 %d ignore_upgrade",
                     (unsigned long long)hc->idle_timeout_ms, hc->accept_http_10);
    for (unsigned i = 0; i < hc->settings.nignore_upgrade && n > 0 && (size_t)n < len; i++) {
        const pt_string_matcher_t *m = &hc->settings.ignore_upgrade[i];
        n += snprintf(out + n, len - (size_t)n, " %d:%s:%d", (int)m->kind,
                      m->value ? m->value : "-", m->ignore_case);
    }
    const pt_route_t *rt = hc->route_config != NULL && hc->route_config->nvhosts == 1 &&
                                   hc->route_config->vhosts[0].nroutes == 2
                               ? &hc->route_config->vhosts[0].routes[0]
                               : NULL;
    if (rt == NULL || rt->direct_format == NULL || n <= 0 || (size_t)n >= len)
        return out;
    /* The body as the router renders it: body_format with `body` as %LOCAL_REPLY_BODY%. */
    pt_stream_info_t si;
    memset(&si, 0, sizeof(si));
    si.local_reply_body = rt->direct_body;
    si.local_reply_body_len = rt->direct_body_len;
    pt_arena_t a = {0};
    char *body = pt_format_render_str(rt->direct_format, &si, &a);
    snprintf(out + n, len - (size_t)n, " direct %d %s %s", rt->direct_status,
             rt->direct_content_type ? rt->direct_content_type : "-", body ? body : "-");
    pt_arena_dispose(&a);
    return out;
}

static pt_config_t *build_lds(pt_discovery_response_t *resp, json_t *boot, pt_cfg_t *r)
{
    pt_cluster_lookup_t known = {any_cluster, NULL};
    pt_cfg_init(r, boot);
    pt_config_t *cfg = pt_config_build_lds(boot, &known, resp, NULL, r);
    print_errors(r);
    return cfg;
}

/* http_protocol_options.ignore_http_11_upgrade (Http1ProtocolOptions field 11) and
 * direct_response.body_format (DirectResponseAction field 3) are newer than the pinned
 * files: from protobuf they decode to the YAML's tree and build the same listener as the
 * JSON path. */
static void test_newer_fields(void)
{
    json_t *doc = yaml(newer_yaml);
    PT_CHECK(doc != NULL);
    json_t *boot = J("{'static_resources': {}}");
    pt_discovery_response_t from_json, from_pb;
    pt_cfg_t r;
    char json_built[512] = "", pb_built[512] = "";

    PT_CHECK_INT(pt_discovery_response_parse(doc, LISTENER_TYPE, &from_json, err, sizeof(err)), 0);
    pt_config_t *cfg = build_lds(&from_json, boot, &r);
    PT_CHECK(cfg != NULL && pt_cfg_ok(&r));
    if (cfg != NULL) {
        newer_summary(cfg, json_built, sizeof(json_built));
        pt_config_unref(cfg);
    }
    pt_cfg_dispose(&r);
    pt_discovery_response_dispose(&from_json);

    PT_CHECK_INT(via_protobuf(doc, LISTENER_TYPE, &from_pb), 0); /* the same tree */
    json_decref(doc);
    cfg = build_lds(&from_pb, boot, &r);
    PT_CHECK(cfg != NULL && pt_cfg_ok(&r));
    if (cfg != NULL) {
        newer_summary(cfg, pb_built, sizeof(pb_built));
        pt_config_unref(cfg);
    }
    pt_cfg_dispose(&r);
    pt_discovery_response_dispose(&from_pb);
    json_decref(boot);

    char want[256];
    snprintf(want, sizeof(want),
             "idle 30000 http10 1 ignore_upgrade %d:websocket:0 %d:tls:1 "
             "direct 503 text/x-down [maintenance]\n",
             (int)PT_STRING_EXACT, (int)PT_STRING_PREFIX);
    PT_CHECK_STR(json_built, want);
    PT_CHECK_STR(pb_built, want);
}

/* The same two fields written byte by byte with their numbers in Envoy's API, so that the
 * check does not rest on the schema's own encoder. */
static char *decoded(const char *message, const pt_pb_writer_t *w)
{
    static char out[sizeof(err) + 64];
    json_t *t = pt_pb_to_json(pt_pb_message_find(message), w->buf, w->len, NULL, err, sizeof(err));
    char *s = t != NULL ? json_dumps(t, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    snprintf(out, sizeof(out), "%s", s != NULL ? s : err);
    free(s);
    json_decref(t);
    return out;
}

static void test_newer_fields_by_hand(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    size_t m = pt_pb_begin_len(&w, 11);     /* Http1ProtocolOptions.ignore_http_11_upgrade */
    pt_pb_put_bytes(&w, 1, "websocket", 9); /* StringMatcher.exact */
    pt_pb_end_len(&w, m);
    PT_CHECK_STR(decoded("envoy.config.core.v3.Http1ProtocolOptions", &w),
                 "{\"ignore_http_11_upgrade\":[{\"exact\":\"websocket\"}]}");
    pt_pb_writer_dispose(&w);

    pt_pb_writer_init(&w);
    pt_pb_put_tag(&w, 1, PT_PB_WIRE_VARINT); /* DirectResponseAction.status */
    pt_pb_put_varint(&w, 503);
    size_t f = pt_pb_begin_len(&w, 3);                  /* body_format */
    pt_pb_put_bytes(&w, 1, "[%LOCAL_REPLY_BODY%]", 20); /* SubstitutionFormatString.text_format */
    pt_pb_end_len(&w, f);
    PT_CHECK_STR(decoded("envoy.config.route.v3.DirectResponseAction", &w),
                 "{\"body_format\":{\"text_format\":\"[%LOCAL_REPLY_BODY%]\"},\"status\":503}");
    pt_pb_writer_dispose(&w);
}

/* Newer fields petrel does not implement: refused by name, with their path, the same from
 * either encoding (stream_flush_timeout, which no parser names: the schema makes it a
 * field of Envoy's; upstream_connect_mode, a newer enum the TCP proxy names). */
static void test_newer_unsupported_fields(void)
{
    json_t *doc =
        yaml("resources:\n"
             "- '@type': " LISTENER_TYPE "\n"
             "  name: l\n"
             "  address: {socket_address: {address: 127.0.0.1, port_value: 10004}}\n"
             "  filter_chains:\n"
             "  - filters:\n"
             "    - name: envoy.filters.network.http_connection_manager\n"
             "      typed_config:\n"
             "        '@type': type.googleapis.com/envoy.extensions.filters.network."
             "http_connection_manager.v3.HttpConnectionManager\n"
             "        stat_prefix: s\n"
             "        stream_flush_timeout: 5s\n"
             "        route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: "
             "[{match: {prefix: /}, route: {cluster: backend}}]}]}\n"
             "        http_filters:\n"
             "        - name: envoy.filters.http.router\n"
             "          typed_config:\n"
             "            '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3."
             "Router\n"
             "- '@type': " LISTENER_TYPE "\n"
             "  name: t\n"
             "  address: {socket_address: {address: 127.0.0.1, port_value: 10005}}\n"
             "  filter_chains:\n"
             "  - filters:\n"
             "    - name: envoy.filters.network.tcp_proxy\n"
             "      typed_config:\n"
             "        '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3."
             "TcpProxy\n"
             "        stat_prefix: tcp\n"
             "        cluster: backend\n"
             "        upstream_connect_mode: ON_DOWNSTREAM_DATA\n");
    PT_CHECK(doc != NULL);
    pt_discovery_response_t from_json, from_pb;
    PT_CHECK_INT(pt_discovery_response_parse(doc, LISTENER_TYPE, &from_json, err, sizeof(err)), 0);
    char json_errors[2048];
    snprintf(json_errors, sizeof(json_errors), "%s", listener_errors(&from_json));
    pt_discovery_response_dispose(&from_json);
    PT_CHECK_STR(json_errors,
                 "resources[0].filter_chains[0].filters[0].typed_config.stream_flush_timeout: "
                 "field is not supported; "
                 "resources[1].filter_chains[0].filters[0].typed_config.upstream_connect_mode: "
                 "field is not supported");
    PT_CHECK_INT(via_protobuf(doc, LISTENER_TYPE, &from_pb), 0);
    json_decref(doc);
    PT_CHECK_STR(listener_errors(&from_pb), json_errors);
    pt_discovery_response_dispose(&from_pb);
}

/* A newer field the additions leave out (RouteMatch.cookies, field 17: its CookieMatcher is
 * a type the schema does not have, for a field petrel neither reads nor names) is still
 * refused by number, with its path. */
static void test_left_out_field(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    size_t any = pt_pb_begin_len(&w, 2); /* DiscoveryResponse.resources */
    pt_pb_put_bytes(&w, 1, ROUTE_TYPE, strlen(ROUTE_TYPE));
    size_t value = pt_pb_begin_len(&w, 2);
    size_t vh = pt_pb_begin_len(&w, 2);      /* RouteConfiguration.virtual_hosts */
    pt_pb_put_bytes(&w, 1, "v", 1);          /* name */
    pt_pb_put_bytes(&w, 2, "*", 1);          /* domains */
    size_t route = pt_pb_begin_len(&w, 3);   /* routes */
    size_t match = pt_pb_begin_len(&w, 1);   /* match */
    pt_pb_put_bytes(&w, 1, "/", 1);          /* prefix */
    size_t cookie = pt_pb_begin_len(&w, 17); /* cookies */
    pt_pb_put_bytes(&w, 1, "session", 7);
    pt_pb_end_len(&w, cookie);
    pt_pb_end_len(&w, match);
    pt_pb_end_len(&w, route);
    pt_pb_end_len(&w, vh);
    pt_pb_end_len(&w, value);
    pt_pb_end_len(&w, any);
    pt_discovery_response_t resp;
    PT_CHECK_INT(
        pt_discovery_response_parse_protobuf(w.buf, w.len, ROUTE_TYPE, &resp, err, sizeof(err)),
        -1);
    pt_discovery_response_dispose(&resp);
    PT_CHECK_STR(err, "resources[0].virtual_hosts[0].routes[0].match: unknown field number 17 "
                      "of envoy.config.route.v3.RouteMatch");
    pt_pb_writer_dispose(&w);
}

/* What the decoder itself refuses, with the path, before any parser sees it. */
/* Istio's interception fields (wrapped booleans, an enum, empty listener filter messages,
 * direct_source_prefix_ranges) and ORIGINAL_DST clusters, accepted from either encoding. */
static void test_interception_fields(void)
{
    json_t *doc =
        yaml("resources:\n"
             "- '@type': " LISTENER_TYPE "\n"
             "  name: virtualOutbound\n"
             "  address: {socket_address: {address: 0.0.0.0, port_value: 15001}}\n"
             "  use_original_dst: true\n"
             "  traffic_direction: OUTBOUND\n"
             "  listener_filters:\n"
             "  - name: envoy.filters.listener.original_dst\n"
             "    typed_config:\n"
             "      '@type': type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3."
             "OriginalDst\n"
             "  - name: envoy.filters.listener.http_inspector\n"
             "    typed_config:\n"
             "      '@type': type.googleapis.com/envoy.extensions.filters.listener.http_inspector."
             "v3.HttpInspector\n"
             "  filter_chains:\n"
             "  - filter_chain_match:\n"
             "      direct_source_prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]\n"
             "      application_protocols: [http/1.1, h2c]\n"
             "    filters:\n"
             "    - name: envoy.filters.network.tcp_proxy\n"
             "      typed_config:\n"
             "        '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3."
             "TcpProxy\n"
             "        stat_prefix: tcp\n"
             "        cluster: PassthroughCluster\n"
             "- '@type': " LISTENER_TYPE "\n"
             "  name: 10.96.0.1_80\n"
             "  address: {socket_address: {address: 10.96.0.1, port_value: 80}}\n"
             "  bind_to_port: false\n"
             "  traffic_direction: INBOUND\n"
             "  default_filter_chain:\n"
             "    filters:\n"
             "    - name: envoy.filters.network.tcp_proxy\n"
             "      typed_config:\n"
             "        '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3."
             "TcpProxy\n"
             "        stat_prefix: tcp\n"
             "        cluster: PassthroughCluster\n");
    PT_CHECK(doc != NULL);
    pt_discovery_response_t from_json, from_pb;
    PT_CHECK_INT(pt_discovery_response_parse(doc, LISTENER_TYPE, &from_json, err, sizeof(err)), 0);
    PT_CHECK_STR(listener_errors(&from_json), "");
    pt_discovery_response_dispose(&from_json);
    PT_CHECK_INT(via_protobuf(doc, LISTENER_TYPE, &from_pb), 0);
    json_decref(doc);
    PT_CHECK_STR(listener_errors(&from_pb), "");
    pt_discovery_response_dispose(&from_pb);

    doc = yaml("resources:\n"
               "- '@type': " CLUSTER_TYPE "\n"
               "  name: PassthroughCluster\n"
               "  type: ORIGINAL_DST\n"
               "  lb_policy: CLUSTER_PROVIDED\n"
               "  connect_timeout: 10s\n"
               "  cleanup_interval: 30s\n"
               "  original_dst_lb_config: {use_http_header: true, upstream_port_override: 80}\n");
    PT_CHECK(doc != NULL);
    PT_CHECK_INT(pt_discovery_response_parse(doc, CLUSTER_TYPE, &from_json, err, sizeof(err)), 0);
    PT_CHECK_STR(cluster_errors(&from_json), "");
    pt_discovery_response_dispose(&from_json);
    PT_CHECK_INT(via_protobuf(doc, CLUSTER_TYPE, &from_pb), 0);
    json_decref(doc);
    PT_CHECK_STR(cluster_errors(&from_pb), "");
    pt_discovery_response_dispose(&from_pb);
}

static void test_decoder_errors(void)
{
    static const char url[] = "type.googleapis.com/envoy.config.cluster.v3.Nope";
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    size_t any = pt_pb_begin_len(&w, 2);
    pt_pb_put_bytes(&w, 1, url, sizeof(url) - 1);
    pt_pb_end_len(&w, any);
    pt_discovery_response_t resp;
    PT_CHECK_INT(
        pt_discovery_response_parse_protobuf(w.buf, w.len, CLUSTER_TYPE, &resp, err, sizeof(err)),
        -1);
    pt_discovery_response_dispose(&resp);
    PT_CHECK_STR(err, "resources[0]: Any of type "
                      "\"type.googleapis.com/envoy.config.cluster.v3.Nope\": petrel does not "
                      "know this type");
    pt_pb_writer_dispose(&w);

    /* A known type that is not what the subscription expects: the envelope's check. */
    static const char cla[] = CLA_TYPE;
    pt_pb_writer_init(&w);
    any = pt_pb_begin_len(&w, 2);
    pt_pb_put_bytes(&w, 1, cla, sizeof(cla) - 1);
    pt_pb_end_len(&w, any);
    PT_CHECK_INT(
        pt_discovery_response_parse_protobuf(w.buf, w.len, CLUSTER_TYPE, &resp, err, sizeof(err)),
        -1);
    pt_discovery_response_dispose(&resp);
    PT_CHECK_STR(err, "resources[0].@type: is " CLA_TYPE ", expected " CLUSTER_TYPE);
    pt_pb_writer_dispose(&w);
}

/* A Cluster written byte by byte with the wire writer, not the schema's encoder. */
static void test_hand_built_cluster(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    size_t any = pt_pb_begin_len(&w, 2); /* DiscoveryResponse.resources */
    pt_pb_put_bytes(&w, 1, CLUSTER_TYPE, strlen(CLUSTER_TYPE));
    size_t cluster = pt_pb_begin_len(&w, 2);
    pt_pb_put_bytes(&w, 1, "hb", 2);         /* name */
    pt_pb_put_tag(&w, 2, PT_PB_WIRE_VARINT); /* type: STATIC (0, but a oneof member) */
    pt_pb_put_varint(&w, 0);
    size_t ct = pt_pb_begin_len(&w, 4); /* connect_timeout */
    pt_pb_put_tag(&w, 1, PT_PB_WIRE_VARINT);
    pt_pb_put_varint(&w, 2);
    pt_pb_end_len(&w, ct);
    size_t la = pt_pb_begin_len(&w, 33); /* load_assignment */
    pt_pb_put_bytes(&w, 1, "hb", 2);
    size_t lle = pt_pb_begin_len(&w, 2);  /* endpoints */
    size_t lbe = pt_pb_begin_len(&w, 2);  /* lb_endpoints */
    size_t ep = pt_pb_begin_len(&w, 1);   /* endpoint */
    size_t addr = pt_pb_begin_len(&w, 1); /* address */
    size_t sa = pt_pb_begin_len(&w, 1);   /* socket_address */
    pt_pb_put_bytes(&w, 2, "127.0.0.1", 9);
    pt_pb_put_tag(&w, 3, PT_PB_WIRE_VARINT); /* port_value */
    pt_pb_put_varint(&w, 8080);
    pt_pb_end_len(&w, sa);
    pt_pb_end_len(&w, addr);
    pt_pb_end_len(&w, ep);
    pt_pb_end_len(&w, lbe);
    pt_pb_end_len(&w, lle);
    pt_pb_end_len(&w, la);
    pt_pb_end_len(&w, cluster);
    pt_pb_end_len(&w, any);
    pt_discovery_response_t resp;
    int rc =
        pt_discovery_response_parse_protobuf(w.buf, w.len, CLUSTER_TYPE, &resp, err, sizeof(err));
    pt_pb_writer_dispose(&w);
    PT_CHECK_INT(rc, 0);
    json_t *want = J("{'resources': [{'@type': '" CLUSTER_TYPE "', 'name': 'hb', "
                     "'type': 'STATIC', 'connect_timeout': '2s', 'load_assignment': "
                     "{'cluster_name': 'hb', 'endpoints': [{'lb_endpoints': [{'endpoint': "
                     "{'address': {'socket_address': {'address': '127.0.0.1', "
                     "'port_value': 8080}}}}]}]}}]}");
    int same = same_json(resp.root, want);
    json_decref(want);
    pt_cfg_t r;
    pt_discovery_resource_reader(&resp.resources[0], &r);
    pt_cluster_t *c = pt_cluster_parse(&r);
    pt_cfg_finish(&r);
    print_errors(&r);
    int ok = c != NULL && pt_cfg_ok(&r) && c->connect_timeout_ms == 2000;
    if (c != NULL)
        pt_cluster_unref(c);
    pt_cfg_dispose(&r);
    pt_discovery_response_dispose(&resp);
    PT_CHECK(same);
    PT_CHECK(ok);
}

int main(void)
{
    PT_RUN(test_clusters);
    PT_RUN(test_endpoints);
    PT_RUN(test_listeners);
    PT_RUN(test_routes);
    PT_RUN(test_secret_and_delta_trees);
    PT_RUN(test_same_errors);
    PT_RUN(test_same_listener_errors);
    PT_RUN(test_interception_fields);
    PT_RUN(test_newer_fields);
    PT_RUN(test_newer_fields_by_hand);
    PT_RUN(test_newer_unsupported_fields);
    PT_RUN(test_left_out_field);
    PT_RUN(test_decoder_errors);
    PT_RUN(test_hand_built_cluster);
    PT_TEST_EXIT();
}
