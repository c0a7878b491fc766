/* Unit tests for proxy/metadata: parsing Metadata (values, nested paths, typed_filter_metadata,
 * errors with their exact text), lookups in the index and in JSON text, dynamic metadata
 * (set, replace, merge from a struct, the namespace as a struct), and every ValueMatcher kind
 * of a MetadataMatcher, inverted or not. */
#include "proxy/metadata.h"
#include "pt_test.h"

#include <jansson.h>
#include <string.h>

static pt_arena_t arena;

/* Parses {"metadata": <text>} and returns the Metadata (NULL on error, *err the first). */
static const pt_metadata_t *parse(const char *text, char *err, size_t errlen)
{
    char doc[2048];
    snprintf(doc, sizeof(doc), "{\"metadata\": %s}", text);
    json_t *root = json_loads(doc, 0, NULL);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    const pt_metadata_t *md = pt_metadata_parse(&r, "metadata", &arena);
    pt_cfg_finish(&r);
    if (err != NULL)
        snprintf(err, errlen, "%s", r.nerrors ? r.errors[0] : "");
    pt_cfg_dispose(&r);
    json_decref(root);
    return md;
}

static const char *const K_PORT[] = {"port"};
static const char *const K_LABELS[] = {"labels"};
static const char *const K_VERSION[] = {"labels", "version"};
static const char *const K_DEEP[] = {"labels", "version", "x"};
static const char *const K_NONE[] = {"nope"};

static void test_parse_and_find(void)
{
    char err[512];
    const pt_metadata_t *md = parse(
        "{\"filter_metadata\": {\"istio\": {\"service\": \"reviews\", \"port\": 9080, "
        "\"ratio\": 0.5, \"on\": true, \"none\": null, \"tags\": [\"a\", 2], "
        "\"labels\": {\"version\": \"v2\", \"app\": \"r\"}}}, "
        "\"typed_filter_metadata\": {\"t\": {\"@type\": \"type.googleapis.com/x.Y\"}}}",
        err, sizeof(err));
    PT_CHECK(md != NULL);
    PT_CHECK_STR(err, "");
    if (md == NULL)
        return;
    PT_CHECK(strstr(md->json, "\"typed_filter_metadata\"") != NULL);
    pt_md_value_t v;
    const char *const svc[] = {"service"};
    PT_CHECK(pt_metadata_find(md, "istio", svc, 1, &v));
    PT_CHECK_INT(v.type, PT_MD_STRING);
    PT_CHECK_MEM(v.str, v.str_len, "reviews", 7);
    PT_CHECK_MEM(v.json, v.json_len, "\"reviews\"", 9);
    PT_CHECK(pt_metadata_find(md, "istio", K_PORT, 1, &v));
    PT_CHECK_INT(v.type, PT_MD_NUMBER);
    PT_CHECK_MEM(v.json, v.json_len, "9080", 4); /* protobuf's form: no ".0" */
    const char *const ratio[] = {"ratio"}, *const on[] = {"on"}, *const none[] = {"none"},
                      *const tags[] = {"tags"};
    PT_CHECK(pt_metadata_find(md, "istio", ratio, 1, &v) && v.num == 0.5);
    PT_CHECK(pt_metadata_find(md, "istio", on, 1, &v) && v.type == PT_MD_BOOL && v.boolean);
    PT_CHECK(pt_metadata_find(md, "istio", none, 1, &v) && v.type == PT_MD_NULL);
    PT_CHECK(pt_metadata_find(md, "istio", tags, 1, &v) && v.type == PT_MD_LIST &&
             v.nitems == 2);
    PT_CHECK(pt_metadata_find(md, "istio", K_LABELS, 1, &v) && v.type == PT_MD_STRUCT);
    PT_CHECK_MEM(v.json, v.json_len, "{\"app\":\"r\",\"version\":\"v2\"}", 26); /* sorted */
    PT_CHECK(pt_metadata_find(md, "istio", K_VERSION, 2, &v));
    PT_CHECK_MEM(v.str, v.str_len, "v2", 2);
    PT_CHECK(pt_metadata_find(md, "istio", NULL, 0, &v) && v.type == PT_MD_STRUCT);
    PT_CHECK(!pt_metadata_find(md, "istio", K_DEEP, 3, &v)); /* through a string */
    PT_CHECK(!pt_metadata_find(md, "istio", K_NONE, 1, &v));
    PT_CHECK(!pt_metadata_find(md, "other", K_PORT, 1, &v));
    PT_CHECK(!pt_metadata_find(NULL, "istio", K_PORT, 1, &v));

    /* The same lookups on text (an endpoint's metadata). */
    char buf[128];
    PT_CHECK(pt_metadata_find_text(md->json, "istio", K_VERSION, 2, buf, sizeof(buf), &v));
    PT_CHECK_MEM(v.str, v.str_len, "v2", 2);
    PT_CHECK(!pt_metadata_find_text(md->json, "istio", K_NONE, 1, buf, sizeof(buf), &v));
    PT_CHECK(!pt_metadata_find_text(md->json, "istio", K_LABELS, 1, buf, 8, &v)); /* too big */
}

static void test_parse_errors(void)
{
    char err[512];
    PT_CHECK(parse("{}", err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, ""); /* empty: nothing kept, no error */
    struct {
        const char *text, *err;
    } cases[] = {
        {"3", "metadata: must be an object (config.core.v3.Metadata)"},
        {"{\"filter_meta\": {}}", "metadata: unknown field \"filter_meta\" (expected "
                                  "filter_metadata or typed_filter_metadata)"},
        {"{\"filter_metadata\": []}", "metadata: filter_metadata must be a map of namespaces "
                                      "to objects"},
        {"{\"filter_metadata\": {\"a\": 1}}", "metadata: filter_metadata[\"a\"] must be an "
                                              "object"},
        {"{\"typed_filter_metadata\": {\"a\": {\"value\": 1}}}",
         "metadata: typed_filter_metadata[\"a\"] must be an Any with an \"@type\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        PT_CHECK(parse(cases[i].text, err, sizeof(err)) == NULL);
        PT_CHECK_STR(err, cases[i].err);
    }
}

static void test_dynamic(void)
{
    pt_dyn_md_t *head = NULL;
    pt_md_value_t v;
    char buf[256];
    const char *const res[] = {"result"}, *const pol[] = {"policy"};
    PT_CHECK(!pt_dyn_md_find(head, "ns", res, 1, buf, sizeof(buf), &v));
    PT_CHECK_INT(pt_dyn_md_set_string(&head, &arena, "ns", "result", "allowed"), 0);
    PT_CHECK_INT(pt_dyn_md_set_string(&head, &arena, "ns", "result", "de\"nied"), 0);
    PT_CHECK_INT(pt_dyn_md_set_string(&head, &arena, "ns", "policy", "p1"), 0);
    PT_CHECK(pt_dyn_md_find(head, "ns", res, 1, buf, sizeof(buf), &v));
    PT_CHECK_MEM(v.str, v.str_len, "de\"nied", 7); /* replaced, not added */
    PT_CHECK(pt_dyn_md_find(head, "ns", pol, 1, buf, sizeof(buf), &v));
    PT_CHECK(pt_dyn_md_find(head, "ns", NULL, 0, buf, sizeof(buf), &v));
    const char *ns_json = "{\"policy\":\"p1\",\"result\":\"de\\\"nied\"}";
    PT_CHECK_MEM(v.json, v.json_len, ns_json, strlen(ns_json));
    PT_CHECK(!pt_dyn_md_find(head, "ns", NULL, 0, buf, 8, &v)); /* does not fit */
    PT_CHECK(!pt_dyn_md_find(head, "other", NULL, 0, buf, sizeof(buf), &v));

    /* A struct merged in (the fault filter's filter_metadata): nested paths are found. */
    json_t *root = json_loads("{\"fm\": {\"reason\": \"chaos\", \"drill\": {\"level\": 3}}}", 0,
                              NULL);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    const pt_metadata_t *md = pt_struct_parse_ns(&r, "fm", &arena, "fault");
    pt_cfg_finish(&r);
    PT_CHECK(md != NULL && r.nerrors == 0);
    pt_cfg_dispose(&r);
    json_decref(root);
    if (md == NULL)
        return;
    PT_CHECK_INT(pt_dyn_md_merge(&head, &arena, md), 0);
    const char *const reason[] = {"reason"}, *const level[] = {"drill", "level"};
    PT_CHECK(pt_dyn_md_find(head, "fault", reason, 1, buf, sizeof(buf), &v));
    PT_CHECK_MEM(v.str, v.str_len, "chaos", 5);
    PT_CHECK(pt_dyn_md_find(head, "fault", level, 2, buf, sizeof(buf), &v) && v.num == 3);
}

/* A MetadataMatcher from JSON text (NULL on error, *err the first). */
static const pt_md_matcher_t *matcher(const char *text, char *err, size_t errlen)
{
    json_t *root = json_loads(text, 0, NULL);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    const pt_md_matcher_t *m = pt_md_matcher_parse(&r, &arena);
    pt_cfg_finish(&r);
    snprintf(err, errlen, "%s", r.nerrors ? r.errors[0] : "");
    pt_cfg_dispose(&r);
    json_decref(root);
    return m;
}

static void test_matchers(void)
{
    char err[512];
    const pt_metadata_t *md = parse(
        "{\"filter_metadata\": {\"a\": {\"s\": \"gold\", \"n\": 5, \"b\": false, \"z\": null, "
        "\"l\": [\"x\", 7]}}}",
        NULL, 0);
    struct {
        const char *m;
        int want;
    } cases[] = {
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}],\"value\":{\"string_match\":{\"exact\":\"gold\"}}}", 1},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}],\"value\":{\"string_match\":{\"prefix\":\"x\"}}}", 0},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}],\"value\":{\"string_match\":{\"exact\":\"gold\"}},\"invert\":true}", 0},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"n\"}],\"value\":{\"double_match\":{\"exact\":5}}}", 1},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"n\"}],\"value\":{\"double_match\":{\"range\":{\"start\":5,\"end\":6}}}}", 1},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"n\"}],\"value\":{\"double_match\":{\"range\":{\"start\":1,\"end\":5}}}}", 0},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"b\"}],\"value\":{\"bool_match\":false}}", 1},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"z\"}],\"value\":{\"null_match\":{}}}", 1},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}],\"value\":{\"null_match\":{}}}", 0},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}],\"value\":{\"present_match\":true}}", 1},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"q\"}],\"value\":{\"present_match\":true}}", 0},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"q\"}],\"value\":{\"present_match\":true},\"invert\":true}", 1},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"l\"}],\"value\":{\"list_match\":{\"one_of\":{\"double_match\":{\"exact\":7}}}}}", 1},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"l\"}],\"value\":{\"list_match\":{\"one_of\":{\"string_match\":{\"exact\":\"y\"}}}}}", 0},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"n\"}],\"value\":{\"or_match\":{\"value_matchers\":[{\"bool_match\":true},{\"double_match\":{\"exact\":5}}]}}}", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const pt_md_matcher_t *m = matcher(cases[i].m, err, sizeof(err));
        PT_CHECK(m != NULL);
        if (m == NULL) {
            printf("  case %zu: %s\n", i, err);
            continue;
        }
        if (pt_md_matcher_match(m, NULL, md) != cases[i].want)
            printf("  case %zu: want %d\n", i, cases[i].want);
        PT_CHECK_INT(pt_md_matcher_match(m, NULL, md), cases[i].want);
    }
    struct {
        const char *m, *err;
    } bad[] = {
        {"{\"path\":[{\"key\":\"s\"}],\"value\":{\"present_match\":true}}",
         "filter: is required (the metadata namespace)"},
        {"{\"filter\":\"a\",\"value\":{\"present_match\":true}}",
         "path: is required (at least one key)"},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}]}", "value: is required"},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}],\"value\":{\"present_match\":false}}",
         "value.present_match: must be true (false would match nothing)"},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}],\"value\":{\"double_match\":{\"range\":{\"start\":2,\"end\":1}}}}",
         "value.double_match.range: start (2) must be less than end (1)"},
        {"{\"filter\":\"a\",\"path\":[{\"key\":\"s\"}],\"value\":{\"or_match\":{\"value_matchers\":[{\"bool_match\":true}]}}}",
         "value.or_match.value_matchers: needs at least 2 matchers"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        PT_CHECK(matcher(bad[i].m, err, sizeof(err)) == NULL);
        PT_CHECK_STR(err, bad[i].err);
    }
}

int main(void)
{
    PT_RUN(test_parse_and_find);
    PT_RUN(test_parse_errors);
    PT_RUN(test_dynamic);
    PT_RUN(test_matchers);
    pt_arena_dispose(&arena);
    PT_TEST_EXIT();
}
