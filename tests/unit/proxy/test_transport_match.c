/* Unit tests for proxy/transport_match: Cluster.transport_socket_matches parsed from inline
 * JSON (single quotes) and the choice each endpoint metadata gets: Envoy's first match whose
 * fields all appear with equal values in filter_metadata["envoy.transport_socket_match"], an
 * empty match taking every endpoint, -1 (the cluster's transport_socket) when none does. */
#include "proxy/transport_match.h"
#include "pt_test.h"
#include "pt_test_json.h"

static pt_arena_t arena;

/* Parses {"transport_socket_matches": <json>} into *m; the number of errors. */
static size_t parse(const char *json, pt_transport_match_t **m, unsigned *n, char *err,
                    size_t errlen)
{
    json_t *root = json_object();
    json_object_set_new(root, "transport_socket_matches", J(json));
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    *n = pt_transport_matches_parse(&r, &arena, m);
    pt_cfg_finish(&r);
    size_t nerr = r.nerrors;
    if (err != NULL)
        snprintf(err, errlen, "%s", nerr ? r.errors[0] : "");
    pt_cfg_dispose(&r);
    json_decref(root);
    return nerr;
}

#define RAW                                                                                        \
    "{'name':'envoy.transport_sockets.raw_buffer','typed_config':{'@type':'type.googleapis."       \
    "com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer'}}"

static void test_istio_matches(void)
{
    pt_transport_match_t *m;
    unsigned n;
    PT_CHECK_INT(
        parse("[{'name':'tlsMode-istio','match':{'tlsMode':'istio'},'transport_socket':" RAW
              "},{'name':'tlsMode-disabled','match':{},'transport_socket':" RAW "}]",
              &m, &n, NULL, 0),
        0);
    PT_CHECK_INT(n, 2);
    PT_CHECK_STR(m[0].name, "tlsMode-istio");
    PT_CHECK(m[0].match != NULL);
    PT_CHECK(m[1].match == NULL); /* empty: every endpoint */
    PT_CHECK(m[0].tls == NULL);   /* raw_buffer */
    const char *istio =
        "{\"filter_metadata\":{\"envoy.transport_socket_match\":{\"tlsMode\":\"istio\"},"
        "\"istio\":{\"network\":\"n2\"}}}";
    PT_CHECK_INT(pt_transport_match_find(m, n, istio), 0);
    /* Other values, other namespaces, no metadata: the catch-all. */
    PT_CHECK_INT(pt_transport_match_find(m, n,
                                         "{\"filter_metadata\":{\"envoy.transport_socket_match\":"
                                         "{\"tlsMode\":\"disabled\"}}}"),
                 1);
    PT_CHECK_INT(
        pt_transport_match_find(m, n, "{\"filter_metadata\":{\"istio\":{\"tlsMode\":\"istio\"}}}"),
        1);
    PT_CHECK_INT(pt_transport_match_find(m, n, NULL), 1);
    /* Envoy matches filter_metadata only. */
    PT_CHECK_INT(
        pt_transport_match_find(m, n,
                                "{\"typed_filter_metadata\":{\"envoy.transport_socket_match\":"
                                "{\"tlsMode\":\"istio\"}}}"),
        1);
}

static void test_every_field_must_match(void)
{
    pt_transport_match_t *m;
    unsigned n;
    PT_CHECK_INT(parse("[{'name':'a','match':{'mode':'x','version':2}},"
                       "{'name':'b','match':{'mode':'x'}}]",
                       &m, &n, NULL, 0),
                 0);
    PT_CHECK_INT(n, 2);
    PT_CHECK_INT(pt_transport_match_find(m, n,
                                         "{\"filter_metadata\":{\"envoy.transport_socket_"
                                         "match\":{\"mode\":\"x\",\"version\":2,"
                                         "\"extra\":true}}}"),
                 0); /* a superset matches */
    PT_CHECK_INT(pt_transport_match_find(m, n,
                                         "{\"filter_metadata\":{\"envoy.transport_socket_"
                                         "match\":{\"mode\":\"x\",\"version\":\"2\"}}}"),
                 1); /* "2" is not 2 */
    PT_CHECK_INT(pt_transport_match_find(m, n,
                                         "{\"filter_metadata\":{\"envoy.transport_socket_"
                                         "match\":{\"version\":2}}}"),
                 -1); /* none: the cluster's transport_socket */
    PT_CHECK_INT(pt_transport_match_find(m, n, NULL), -1);
    PT_CHECK_INT(pt_transport_match_find(m, 0, NULL), -1);
}

static void test_errors(void)
{
    pt_transport_match_t *m;
    unsigned n;
    char err[512];
    PT_CHECK_INT(parse("[{'match':{'a':'b'}}]", &m, &n, err, sizeof(err)), 1);
    PT_CHECK_STR(err, "transport_socket_matches[0].name: is required");
    PT_CHECK_INT(parse("[{'name':'m','match':[1]}]", &m, &n, err, sizeof(err)), 1);
    PT_CHECK_STR(err, "transport_socket_matches[0].match: must be an object "
                      "(google.protobuf.Struct)");
    PT_CHECK_INT(parse("[{'name':'m','what':1}]", &m, &n, err, sizeof(err)), 1);
    PT_CHECK(strstr(err, "transport_socket_matches[0].what") != NULL);
    PT_CHECK_INT(parse("[{'name':'m','transport_socket':{'name':'x','typed_config':{'@type':"
                       "'type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts'}}}]",
                       &m, &n, err, sizeof(err)),
                 1);
    PT_CHECK(strstr(err, "transport_socket_matches[0].transport_socket.typed_config.@type") !=
             NULL);
}

int main(void)
{
    PT_RUN(test_istio_matches);
    PT_RUN(test_every_field_must_match);
    PT_RUN(test_errors);
    pt_arena_dispose(&arena);
    PT_TEST_EXIT();
}
