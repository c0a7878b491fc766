/* A DiscoveryResponse and a DeltaDiscoveryResponse in the protobuf wire format read resource
 * by resource (pt_discovery_response_parse_protobuf_lazy, pt_discovery_response_parse_delta):
 * each resource decoded when reached is the resource the whole decoding gives, with the same
 * name and path; an invalid resource in the middle is reported for itself, with the error
 * the whole decoding gives, and the others still read; elements no reading reached are
 * checked by pt_discovery_response_check_rest; materializing gives every resource or every
 * error; a delta response hands out the Any each Resource holds, keeps canonical texts, and
 * reads the texts of resources in force after its own. */
#include "discovery/discovery_response.h"
#include "proxy/cluster.h"
#include "proxy/proto_json.h"
#include "pt_test.h"

#define CLUSTER_TYPE "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define N            30

static char err[4096];

static json_t *cluster(const char *name, int ms)
{
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "0.%03ds", ms % 1000);
    return json_pack("{s:s, s:s, s:s, s:s}", "@type", CLUSTER_TYPE, "name", name, "type",
                     "STATIC", "connect_timeout", timeout);
}

/* Resources [from, to) of a response of N clusters named c0..c29 (c<dup> named c3 too),
 * with the envelope's fields when `envelope`, appended to w as a DiscoveryResponse. */
static int encode_part(pt_pb_writer_t *w, size_t from, size_t to, int envelope, int dup)
{
    json_t *doc = json_object(), *list = json_array();
    for (size_t i = from; i < to; i++) {
        char name[32];
        snprintf(name, sizeof(name), "c%zu", (int)i == dup ? (size_t)3 : i);
        if (i == 10) { /* one wrapped, as Envoy accepts it in a state-of-the-world response */
            json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:o}", "@type",
                                                  PT_RESOURCE_WRAPPER_TYPE, "name", name,
                                                  "version", "v10", "resource",
                                                  cluster(name, (int)i + 1)));
            continue;
        }
        json_array_append_new(list, cluster(name, (int)i + 1));
    }
    if (envelope) {
        json_object_set_new(doc, "version_info", json_string("7"));
        json_object_set_new(doc, "type_url", json_string(CLUSTER_TYPE));
        json_object_set_new(doc, "nonce", json_string("n7"));
    }
    json_object_set_new(doc, "resources", list);
    const pt_pb_message_t *m = pt_pb_message_find("envoy.service.discovery.v3.DiscoveryResponse");
    int rc = pt_pb_from_json(m, doc, w, err, sizeof(err));
    json_decref(doc);
    return rc;
}

/* A response of N clusters; with `bad`, resources[15] is a Cluster with field number 999,
 * which the schema does not have (bytes no encoder of the schema would write). */
static int encode(pt_pb_writer_t *w, int bad, int dup)
{
    if (!bad)
        return encode_part(w, 0, N, 1, dup);
    if (encode_part(w, 0, 15, 1, dup) != 0)
        return -1;
    pt_pb_writer_t v, any;
    pt_pb_writer_init(&v);
    pt_pb_writer_init(&any);
    pt_pb_put_bytes(&v, 1, "c15", 3);
    pt_pb_put_tag(&v, 999, PT_PB_WIRE_VARINT);
    pt_pb_put_varint(&v, 1);
    pt_pb_put_bytes(&any, 1, CLUSTER_TYPE, strlen(CLUSTER_TYPE));
    pt_pb_put_bytes(&any, 2, v.buf, v.len);
    pt_pb_put_bytes(w, 2, any.buf, any.len); /* messages concatenated: the lists append */
    pt_pb_writer_dispose(&v);
    pt_pb_writer_dispose(&any);
    /* the rest, shifted by one: c16.. at 16.. */
    return encode_part(w, 16, N, 0, dup);
}

static void test_same_resources_as_whole(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    PT_CHECK_INT(encode(&w, 0, -1), 0);
    pt_discovery_response_t whole, lazy;
    PT_CHECK_INT(pt_discovery_response_parse_protobuf(w.buf, w.len, CLUSTER_TYPE, &whole, err,
                                                      sizeof(err)),
                 0);
    PT_CHECK_INT(pt_discovery_response_parse_protobuf_lazy(w.buf, w.len, CLUSTER_TYPE, &lazy,
                                                           err, sizeof(err)),
                 0);
    PT_CHECK_STR(lazy.version_info, "7");
    PT_CHECK_INT(lazy.nresources, 0); /* nothing decoded yet */
    PT_CHECK_INT(pt_discovery_response_count(&lazy), N);
    pt_discovery_element_t el;
    pt_discovery_response_element(&lazy, 10, &el); /* the wrapper's name, from the wire */
    PT_CHECK_STR(el.name, "c10");
    pt_discovery_response_element(&lazy, 29, &el);
    PT_CHECK_STR(el.name, "c29");
    size_t cursor = 0, k = 0;
    pt_discovery_resource_t res;
    int got;
    while ((got = pt_discovery_response_next(&lazy, &cursor, &res, err, sizeof(err))) != 0) {
        PT_CHECK_INT(got, 1);
        PT_CHECK(k < whole.nresources);
        PT_CHECK(json_equal(res.json, whole.resources[k].json));
        PT_CHECK_STR(res.name, whole.resources[k].name);
        PT_CHECK_STR(res.path, whole.resources[k].path);
        PT_CHECK_INT(res.index, whole.resources[k].index);
        k++;
    }
    PT_CHECK_INT(k, N);
    PT_CHECK_STR(whole.resources[10].path, "resources[10].resource");
    PT_CHECK_INT(pt_discovery_response_check_rest(&lazy, err, sizeof(err)), 0);
    /* read again (another watch): the same */
    cursor = 0;
    PT_CHECK_INT(pt_discovery_response_next(&lazy, &cursor, &res, err, sizeof(err)), 1);
    PT_CHECK_STR(res.name, "c0");
    pt_discovery_response_dispose(&lazy);
    /* materialized: the array the whole decoding gives */
    PT_CHECK_INT(pt_discovery_response_parse_protobuf_lazy(w.buf, w.len, CLUSTER_TYPE, &lazy,
                                                           err, sizeof(err)),
                 0);
    PT_CHECK_INT(pt_discovery_response_materialize(&lazy, err, sizeof(err)), 0);
    PT_CHECK_INT(lazy.nresources, N);
    for (size_t i = 0; i < N; i++) {
        PT_CHECK(json_equal(lazy.resources[i].json, whole.resources[i].json));
        PT_CHECK_STR(lazy.resources[i].path, whole.resources[i].path);
    }
    cursor = 0;
    PT_CHECK_INT(pt_discovery_response_next(&lazy, &cursor, &res, err, sizeof(err)), 1);
    PT_CHECK(res.json == lazy.resources[0].json);
    pt_discovery_response_dispose(&lazy);
    pt_discovery_response_dispose(&whole);
    pt_pb_writer_dispose(&w);
}

static void test_bad_resource_in_the_middle(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    PT_CHECK_INT(encode(&w, 1, -1), 0);
    pt_discovery_response_t whole, lazy;
    char whole_err[1024];
    PT_CHECK_INT(pt_discovery_response_parse_protobuf(w.buf, w.len, CLUSTER_TYPE, &whole,
                                                      whole_err, sizeof(whole_err)),
                 -1);
    pt_discovery_response_dispose(&whole);
    PT_CHECK(strstr(whole_err, "resources[15]") != NULL);
    PT_CHECK(strstr(whole_err, "999") != NULL);
    PT_CHECK_INT(pt_discovery_response_parse_protobuf_lazy(w.buf, w.len, CLUSTER_TYPE, &lazy,
                                                           err, sizeof(err)),
                 0);
    /* nothing read: the bad one is found by the check of the rest */
    PT_CHECK_INT(pt_discovery_response_check_rest(&lazy, err, sizeof(err)), -1);
    PT_CHECK_STR(err, whole_err);
    pt_discovery_response_dispose(&lazy);
    /* read: the bad one reported where it is, with the whole decoding's error; the others
     * still read */
    PT_CHECK_INT(pt_discovery_response_parse_protobuf_lazy(w.buf, w.len, CLUSTER_TYPE, &lazy,
                                                           err, sizeof(err)),
                 0);
    size_t cursor = 0, ok = 0, bad = 0;
    pt_discovery_resource_t res;
    int got;
    while ((got = pt_discovery_response_next(&lazy, &cursor, &res, err, sizeof(err))) != 0) {
        if (got < 0) {
            PT_CHECK_INT(cursor, 16); /* resources[15] */
            PT_CHECK_STR(err, whole_err);
            bad++;
        } else {
            ok++;
        }
    }
    PT_CHECK_INT(ok, N - 1);
    PT_CHECK_INT(bad, 1);
    PT_CHECK_INT(pt_discovery_response_check_rest(&lazy, err, sizeof(err)), 0); /* all read */
    pt_discovery_response_dispose(&lazy);
    /* materialized: refused, with the error */
    PT_CHECK_INT(pt_discovery_response_parse_protobuf_lazy(w.buf, w.len, CLUSTER_TYPE, &lazy,
                                                           err, sizeof(err)),
                 0);
    PT_CHECK_INT(pt_discovery_response_materialize(&lazy, err, sizeof(err)), -1);
    PT_CHECK_STR(err, whole_err);
    pt_discovery_response_dispose(&lazy);
    pt_pb_writer_dispose(&w);
}

static void test_duplicate_names(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    PT_CHECK_INT(encode(&w, 0, 7), 0); /* resources[7] is named c3 too */
    pt_discovery_response_t whole, lazy;
    char whole_err[1024];
    PT_CHECK_INT(pt_discovery_response_parse_protobuf(w.buf, w.len, CLUSTER_TYPE, &whole,
                                                      whole_err, sizeof(whole_err)),
                 -1);
    pt_discovery_response_dispose(&whole);
    PT_CHECK_STR(whole_err, "resources[7]: duplicate name \"c3\" (resources[3] has it too)");
    PT_CHECK_INT(pt_discovery_response_parse_protobuf_lazy(w.buf, w.len, CLUSTER_TYPE, &lazy,
                                                           err, sizeof(err)),
                 0);
    for (int pass = 0; pass < 2; pass++) { /* a second reading finds it the same */
        size_t cursor = 0, bad = 0;
        pt_discovery_resource_t res;
        int got;
        while ((got = pt_discovery_response_next(&lazy, &cursor, &res, err, sizeof(err))) != 0)
            if (got < 0) {
                PT_CHECK_STR(err, whole_err);
                bad++;
            }
        PT_CHECK_INT(bad, 1);
    }
    pt_discovery_response_dispose(&lazy);
    pt_pb_writer_dispose(&w);
}

static int known_k(void *data, const char *name, const char *text, size_t len)
{
    (void)text, (void)len;
    ++*(int *)data;
    return strcmp(name, "k") == 0;
}

static void test_delta(void)
{
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:[{s:s, s:s, s:o}, {s:s, s:s}, {s:s, s:s, s:o}], s:[s]}",
        "system_version_info", "v9", "type_url", CLUSTER_TYPE, "nonce", "n9", "resources",
        "name", "a", "version", "1", "resource", cluster("a", 5), "name", "b", "version", "2",
        "name", "c", "version", "3", "resource", cluster("c", 6), "removed_resources", "x");
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    const pt_pb_message_t *m =
        pt_pb_message_find("envoy.service.discovery.v3.DeltaDiscoveryResponse");
    PT_CHECK_INT(pt_pb_from_json(m, doc, &w, err, sizeof(err)), 0);
    json_decref(doc);
    pt_discovery_response_t resp;
    PT_CHECK_INT(pt_discovery_response_parse_delta(w.buf, w.len, CLUSTER_TYPE, 1, &resp, err,
                                                   sizeof(err)),
                 0);
    PT_CHECK_STR(resp.version_info, "v9");
    PT_CHECK_STR(json_string_value(json_array_get(json_object_get(resp.root,
                                                                  "removed_resources"), 0)),
                 "x");
    PT_CHECK_INT(pt_discovery_response_count(&resp), 3);
    pt_discovery_element_t el;
    pt_discovery_response_element(&resp, 1, &el);
    PT_CHECK_STR(el.name, "b");
    PT_CHECK_STR(el.version, "2");
    /* a resource in force the response does not carry, as its canonical text */
    json_t *k = cluster("k", 7);
    char *ktext = pt_json_canonical(k);
    PT_CHECK_INT(pt_discovery_response_add_text(&resp, "k", ktext, strlen(ktext)), 0);
    const char *want[] = {"a", "c", "k"};
    const char *paths[] = {"resources[0].resource", "resources[2].resource", "resources[3]"};
    size_t cursor = 0, n = 0;
    pt_discovery_resource_t res;
    int got;
    while ((got = pt_discovery_response_next(&resp, &cursor, &res, err, sizeof(err))) != 0) {
        PT_CHECK_INT(got, 1);
        PT_CHECK(n < 3);
        PT_CHECK_STR(res.name, want[n]);
        PT_CHECK_STR(res.path, paths[n]);
        PT_CHECK(res.canonical && res.text != NULL);
        char *mine = pt_json_canonical(res.json);
        PT_CHECK_MEM(res.text, res.text_len, mine, strlen(mine));
        free(mine);
        n++;
    }
    PT_CHECK_INT(n, 3);
    pt_discovery_response_element(&resp, 0, &el);
    PT_CHECK(el.has_body && el.text != NULL);
    pt_discovery_response_element(&resp, 1, &el);
    PT_CHECK(!el.has_body);
    pt_discovery_response_element(&resp, 3, &el);
    PT_CHECK(el.version == NULL); /* not the response's own */
    /* a consumer that knows a kept resource by its text is not handed it */
    int asked = 0;
    const pt_discovery_known_t known = {.known_text = known_k, .data = &asked};
    cursor = 0;
    n = 0;
    while ((got = pt_discovery_response_next_known(&resp, &cursor, &res, &known, err,
                                                   sizeof(err))) != 0)
        n += got == 2;
    PT_CHECK_INT(n, 1);
    PT_CHECK_INT(asked, 1);
    pt_discovery_response_dispose(&resp);
    free(ktext);
    json_decref(k);
    pt_pb_writer_dispose(&w);
}

int main(void)
{
    PT_RUN(test_same_resources_as_whole);
    PT_RUN(test_bad_resource_in_the_middle);
    PT_RUN(test_duplicate_names);
    PT_RUN(test_delta);
    PT_TEST_EXIT();
}
