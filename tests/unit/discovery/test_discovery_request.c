/* Unit tests for the requests petrel sends (discovery/discovery_request.c): an ACK and a
 * NACK encode to the bytes protobuf gives for them; the node travels whole (its metadata a
 * Struct); a delta request's initial versions are a map; and every request decodes back, by
 * the same schema, to what was asked. */
#include "discovery/discovery_request.h"
#include "proxy/proto_json.h"
#include "pt_test.h"
#include "pt_test_json.h"

#define CLUSTER_TYPE "type.googleapis.com/envoy.config.cluster.v3.Cluster"

static char err[512];

static size_t hex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ') {
            s++;
            continue;
        }
        unsigned v;
        sscanf(s, "%2x", &v);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

/* The encoding decoded again, as sorted compact JSON. */
static char *decoded(const char *message, const pt_pb_writer_t *w)
{
    json_t *t = pt_pb_to_json(pt_pb_message_find(message), w->buf, w->len, NULL, err, sizeof(err));
    if (t == NULL)
        return strdup(err);
    char *s = json_dumps(t, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(t);
    return s;
}

static void test_ack_bytes(void)
{
    static const char *const names[] = {"a", "b"};
    pt_discovery_request_t req = {
        .type_url = "t",
        .version_info = "1",
        .response_nonce = "x",
        .resource_names = names,
        .nresource_names = 2,
    };
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    PT_CHECK_INT(pt_discovery_request_encode(&req, &w, err, sizeof(err)), 0);
    uint8_t want[64];
    size_t n = hex("0a 01 31 1a 01 61 1a 01 62 22 01 74 2a 01 78", want);
    PT_CHECK_MEM(w.buf, w.len, want, n);
    pt_pb_writer_dispose(&w);
}

static void test_nack_with_node(void)
{
    json_t *node = J("{'id': 'sidecar~10.0.0.1~a.ns~ns.svc.cluster.local', 'cluster': 'a',"
                     " 'metadata': {'LABELS': {'app': 'a'}, 'N': 2},"
                     " 'locality': {'region': 'r'}}");
    pt_discovery_request_t req = {
        .node = node,
        .type_url = CLUSTER_TYPE,
        .version_info = "6",
        .response_nonce = "n7",
        .error_message = "resources[0].connect_timeout: \"abc\" is not a duration",
    };
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    PT_CHECK_INT(pt_discovery_request_encode(&req, &w, err, sizeof(err)), 0);
    char *got = decoded("envoy.service.discovery.v3.DiscoveryRequest", &w);
    PT_CHECK_STR(got, "{\"error_detail\":{\"code\":3,\"message\":\"resources[0].connect_timeout: "
                      "\\\"abc\\\" is not a duration\"},\"node\":{\"cluster\":\"a\",\"id\":"
                      "\"sidecar~10.0.0.1~a.ns~ns.svc.cluster.local\",\"locality\":{\"region\":"
                      "\"r\"},\"metadata\":{\"LABELS\":{\"app\":\"a\"},\"N\":2}},"
                      "\"response_nonce\":\"n7\",\"type_url\":\"" CLUSTER_TYPE "\","
                      "\"version_info\":\"6\"}");
    free(got);
    pt_pb_writer_dispose(&w);

    /* A node with a field Node does not have is refused, by its path. */
    json_object_set_new(node, "bogus", json_true());
    pt_pb_writer_init(&w);
    PT_CHECK_INT(pt_discovery_request_encode(&req, &w, err, sizeof(err)), -1);
    PT_CHECK_STR(err, "node.bogus: unknown field of envoy.config.core.v3.Node");
    pt_pb_writer_dispose(&w);
    json_decref(node);
}

static void test_delta(void)
{
    static const char *const sub[] = {"a", "b"};
    static const char *const unsub[] = {"c"};
    static const char *const names[] = {"a", "z"};
    static const char *const versions[] = {"1", "9"};
    pt_delta_discovery_request_t req = {
        .type_url = CLUSTER_TYPE,
        .subscribe = sub,
        .nsubscribe = 2,
        .unsubscribe = unsub,
        .nunsubscribe = 1,
        .initial_names = names,
        .initial_versions = versions,
        .ninitial = 2,
        .response_nonce = "n",
    };
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    PT_CHECK_INT(pt_delta_discovery_request_encode(&req, &w, err, sizeof(err)), 0);
    char *got = decoded("envoy.service.discovery.v3.DeltaDiscoveryRequest", &w);
    PT_CHECK_STR(got, "{\"initial_resource_versions\":{\"a\":\"1\",\"z\":\"9\"},"
                      "\"resource_names_subscribe\":[\"a\",\"b\"],"
                      "\"resource_names_unsubscribe\":[\"c\"],\"response_nonce\":\"n\","
                      "\"type_url\":\"" CLUSTER_TYPE "\"}");
    free(got);
    pt_pb_writer_dispose(&w);

    /* The smallest: a type alone, the bytes protobuf gives. */
    pt_delta_discovery_request_t first = {.type_url = "t"};
    pt_pb_writer_init(&w);
    PT_CHECK_INT(pt_delta_discovery_request_encode(&first, &w, err, sizeof(err)), 0);
    PT_CHECK_MEM(w.buf, w.len, "\x12\x01t", 3);
    pt_pb_writer_dispose(&w);
}

static void test_bad_names(void)
{
    static const char *const names[] = {"ok", "bad\xff"};
    pt_discovery_request_t req = {.type_url = "t", .resource_names = names, .nresource_names = 2};
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    PT_CHECK_INT(pt_discovery_request_encode(&req, &w, err, sizeof(err)), -1);
    PT_CHECK_STR(err, "resource_names[1]: is not valid UTF-8");
    pt_pb_writer_dispose(&w);
}

int main(void)
{
    PT_RUN(test_ack_bytes);
    PT_RUN(test_nack_with_node);
    PT_RUN(test_delta);
    PT_RUN(test_bad_names);
    PT_TEST_EXIT();
}
