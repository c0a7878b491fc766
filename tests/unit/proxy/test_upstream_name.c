/* Unit tests for a request's upstream TLS name (proxy/cluster.c, auto_sni and
 * auto_san_validation): the host without its port, an IPv6 literal without its brackets,
 * the override header's value first when it has one, nothing for clusters without the
 * options; and the options as parsed from both spellings. */
#include "proxy/cluster.h"
#include "pt_test.h"
#include "pt_test_json.h"

static pt_cluster_t *make(const char *json, size_t *nerrors)
{
    json_t *j = J(json);
    pt_cfg_t r;
    pt_cfg_init(&r, j);
    pt_cluster_t *c = pt_cluster_parse(&r);
    pt_cfg_finish(&r);
    *nerrors = r.nerrors;
    pt_cfg_dispose(&r);
    json_decref(j);
    return c;
}

#define TYPED(uhpo)                                                                      \
    "{\"name\":\"c\",\"typed_extension_protocol_options\":{"                           \
    "\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\":{\"@type\":"            \
    "\"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\","   \
    "\"upstream_http_protocol_options\":" uhpo "}}}"

static void test_name_from_host(void)
{
    size_t n;
    pt_cluster_t *c = make(TYPED("{\"auto_sni\":true}"), &n);
    PT_CHECK(c != NULL);
    PT_CHECK_INT(n, 0);
    pt_arena_t a = {0};
    PT_CHECK_STR(pt_cluster_upstream_name(c, &a, "api.example.com", NULL), "api.example.com");
    PT_CHECK_STR(pt_cluster_upstream_name(c, &a, "api.example.com:8443", NULL),
                 "api.example.com");
    PT_CHECK_STR(pt_cluster_upstream_name(c, &a, "10.0.0.1:80", NULL), "10.0.0.1");
    PT_CHECK_STR(pt_cluster_upstream_name(c, &a, "[2001:db8::1]:443", NULL), "2001:db8::1");
    PT_CHECK_STR(pt_cluster_upstream_name(c, &a, "[2001:db8::1]", NULL), "2001:db8::1");
    PT_CHECK_STR(pt_cluster_upstream_name(c, &a, "2001:db8::1", NULL), "2001:db8::1");
    /* The override's value wins when it has one; an empty one does not count. */
    PT_CHECK_STR(pt_cluster_upstream_name(c, &a, "a.test", "b.test:1"), "b.test");
    PT_CHECK_STR(pt_cluster_upstream_name(c, &a, "a.test", ""), "a.test");
    /* Nothing to name. */
    PT_CHECK(pt_cluster_upstream_name(c, &a, NULL, NULL) == NULL);
    PT_CHECK(pt_cluster_upstream_name(c, &a, "", NULL) == NULL);
    PT_CHECK(pt_cluster_upstream_name(c, &a, ":80", NULL) == NULL);
    PT_CHECK(pt_cluster_upstream_name(c, &a, "[]:80", NULL) == NULL);
    pt_arena_dispose(&a);
    pt_cluster_unref(c);
}

static void test_no_options_no_name(void)
{
    size_t n;
    pt_cluster_t *c = make("{\"name\":\"c\"}", &n);
    PT_CHECK(c != NULL);
    PT_CHECK(!c->auto_sni && !c->auto_san_validation && c->auto_sni_header == NULL);
    pt_arena_t a = {0};
    PT_CHECK(pt_cluster_upstream_name(c, &a, "api.example.com", NULL) == NULL);
    pt_arena_dispose(&a);
    pt_cluster_unref(c);
}

static void test_parse(void)
{
    size_t n;
    pt_cluster_t *c = make(TYPED("{\"auto_san_validation\":true,"
                                 "\"override_auto_sni_header\":\"X-Upstream-SNI\"}"),
                           &n);
    PT_CHECK(c != NULL);
    PT_CHECK_INT(n, 0);
    PT_CHECK(!c->auto_sni && c->auto_san_validation);
    PT_CHECK_STR(c->auto_sni_header, "x-upstream-sni"); /* headers are looked up lowercase */
    pt_cluster_unref(c);
    /* The deprecated cluster field. */
    c = make("{\"name\":\"c\",\"upstream_http_protocol_options\":{\"auto_sni\":true}}", &n);
    PT_CHECK(c != NULL);
    PT_CHECK_INT(n, 0);
    PT_CHECK(c->auto_sni && !c->auto_san_validation);
    pt_cluster_unref(c);
    /* Not a header name. */
    c = make(TYPED("{\"override_auto_sni_header\":\"a b\"}"), &n);
    PT_CHECK_INT(n, 1);
    pt_cluster_unref(c);
}

int main(void)
{
    PT_RUN(test_name_from_host);
    PT_RUN(test_no_options_no_name);
    PT_RUN(test_parse);
    PT_TEST_EXIT();
}
