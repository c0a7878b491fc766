/* Fuzz target: protobuf wire bytes from an untrusted peer (an xDS control plane over gRPC),
 * decoded by the schema. The first byte picks the message (an xDS envelope, a resource, or
 * any message of the schema), the rest is its encoding. A refusal must say why; an accepted
 * message's tree must encode again (the encoder takes whatever the decoder gives) and
 * decode to the same tree. A DiscoveryResponse is also read as a CDS update and each of
 * its clusters parsed, as the gRPC client will. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/discovery_response.h"
#include "proxy/cluster.h"
#include "proxy/log.h"
#include "proxy/proto_json.h"

static const char *const messages[] = {
    "envoy.service.discovery.v3.DiscoveryResponse",
    "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    "envoy.service.discovery.v3.DiscoveryRequest",
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "envoy.config.listener.v3.Listener",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.extensions.transport_sockets.tls.v3.Secret",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "google.protobuf.Struct",
};
#define NMESSAGES (sizeof(messages) / sizeof(messages[0]))

static void read_clusters(const uint8_t *data, size_t size)
{
    pt_discovery_response_t resp;
    char err[1024];
    err[0] = '\0';
    int rc = pt_discovery_response_parse_protobuf(
        data, size, "type.googleapis.com/envoy.config.cluster.v3.Cluster", &resp, err, sizeof(err));
    if (rc != 0 && err[0] == '\0')
        abort();
    for (size_t i = 0; rc == 0 && i < resp.nresources; i++) {
        pt_cfg_t r;
        pt_discovery_resource_reader(&resp.resources[i], &r);
        pt_cluster_t *c = pt_cluster_parse(&r);
        pt_cfg_finish(&r);
        if (c != NULL)
            pt_cluster_unref(c);
        pt_cfg_dispose(&r);
    }
    /* Read resource by resource (as xDS over gRPC reads it), the same: every resource the
     * same, or some error where the whole decoding has one. */
    pt_discovery_response_t lazy;
    int lrc = pt_discovery_response_parse_protobuf_lazy(
        data, size, "type.googleapis.com/envoy.config.cluster.v3.Cluster", &lazy, err,
        sizeof(err));
    int all_ok = lrc == 0;
    size_t cursor = 0, k = 0;
    pt_discovery_resource_t res;
    int got;
    while (lrc == 0 && (got = pt_discovery_response_next(&lazy, &cursor, &res, err,
                                                          sizeof(err))) != 0) {
        if (got < 0) {
            if (err[0] == '\0')
                abort();
            all_ok = 0;
            continue;
        }
        if (rc == 0 && (k >= resp.nresources || !json_equal(res.json, resp.resources[k].json) ||
                        strcmp(res.path, resp.resources[k].path) != 0))
            abort();
        k++;
    }
    if (all_ok != (rc == 0) || (rc == 0 && k != resp.nresources))
        abort();
    if (lrc == 0 && pt_discovery_response_check_rest(&lazy, err, sizeof(err)) != 0)
        abort(); /* everything was read */
    pt_discovery_response_dispose(&lazy);
    pt_discovery_response_dispose(&resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        pt_log_threshold = PT_LOG_OFF;
        init = 1;
    }
    if (size < 1 || size > 64 * 1024)
        return 0;
    const pt_pb_message_t *m =
        data[0] < NMESSAGES
            ? pt_pb_message_find(messages[data[0]])
            : pt_pb_message_at((size_t)(data[0] - NMESSAGES) * 13 % pt_pb_message_count());
    if (m == NULL)
        abort();
    data++, size--;
    char err[1024];
    err[0] = '\0';
    json_t *tree = pt_pb_to_json(m, data, size, NULL, err, sizeof(err));
    if (tree == NULL) {
        if (err[0] == '\0')
            abort(); /* a refusal always says why */
    } else {
        pt_pb_writer_t w;
        pt_pb_writer_init(&w);
        if (pt_pb_from_json(m, tree, &w, err, sizeof(err)) != 0)
            abort(); /* what the decoder gives, the encoder takes */
        json_t *again = pt_pb_to_json(m, w.buf, w.len, NULL, err, sizeof(err));
        if (again == NULL || !json_equal(again, tree))
            abort(); /* and it reads back as itself */
        json_decref(again);
        pt_pb_writer_dispose(&w);
        json_decref(tree);
    }
    if (m == pt_pb_message_find(messages[0]))
        read_clusters(data, size);
    return 0;
}
