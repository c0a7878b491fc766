/* Unit tests for proxy/header_mutation: parsing HeaderValueOption lists and header name
 * lists (what is accepted, every error with its full path) and applying them in Envoy's
 * order. Routes, the local rate limit filter and HTTP health checks all go through these. */
#include "proxy/header_mutation.h"
#include "pt_test.h"
#include "pt_test_json.h"

#include "proxy/formatter.h"

/* Parses {'o': json}'s add/remove lists (either field name may be NULL) into m, leaving
 * every object. Returns the parser's result; the caller disposes r and the root. */
static int parse(const char *json, const char *add, const char *remove, pt_arena_t *a,
                 pt_header_mutations_t *m, pt_cfg_t *r, json_t **root)
{
    char buf[2048];
    snprintf(buf, sizeof(buf), "{'o':%s}", json);
    *root = J(buf);
    pt_cfg_init(r, *root);
    int rc = -2;
    if (pt_cfg_enter(r, "o") > 0) {
        rc = pt_header_mutations_parse(r, a, add, remove, m);
        pt_cfg_leave(r);
    }
    pt_cfg_finish(r);
    return rc;
}

/* Every value of `name` joined with '|' ("" when absent), in arena a. */
static const char *values(pt_arena_t *a, const pt_http_headers_t *h, const char *name)
{
    const char *out = "";
    for (uint32_t i = 0; i < h->count; i++)
        if (strcmp(h->items[i].name, name) == 0)
            out = pt_arena_sprintf(a, "%s%s%s", out, out[0] ? "|" : "", h->items[i].value);
    return out;
}

static void test_parse(void)
{
    pt_arena_t a = {0};
    pt_header_mutations_t m;
    pt_cfg_t r;
    json_t *root;
    int rc = parse("{'adds':[{'header':{'key':'X-One','value':'1'}},"
                   "{'header':{'key':'x-pct','value':'100%%'},'append':false},"
                   "{'header':{'key':'x-addr','value':'%DOWNSTREAM_REMOTE_ADDRESS%'},"
                   "'append_action':'ADD_IF_ABSENT','keep_empty_value':true},"
                   "{'header':{'key':'x-none'},'append_action':'OVERWRITE_IF_EXISTS'}],"
                   "'drops':['X-Gone','x-also']}",
                   "adds", "drops", &a, &m, &r, &root);
    for (size_t i = 0; i < r.nerrors; i++)
        fprintf(stderr, "  unexpected error: %s\n", r.errors[i]);
    PT_CHECK_INT(rc, 0);
    PT_CHECK_INT(m.nadd, 4);
    PT_CHECK_STR(m.add[0].key, "x-one"); /* lowercased */
    PT_CHECK_STR(m.add[0].value, "1");
    PT_CHECK_INT(m.add[0].action, PT_HEADER_APPEND_IF_EXISTS_OR_ADD);
    PT_CHECK_STR(m.add[1].value, "100%"); /* constant formats are rendered once */
    PT_CHECK(m.add[1].fmt == NULL);
    PT_CHECK_INT(m.add[1].action, PT_HEADER_OVERWRITE_IF_EXISTS_OR_ADD); /* append: false */
    PT_CHECK(m.add[2].value == NULL && m.add[2].fmt != NULL);            /* rendered per request */
    PT_CHECK_INT(m.add[2].action, PT_HEADER_ADD_IF_ABSENT);
    PT_CHECK_INT(m.add[2].keep_empty_value, 1);
    PT_CHECK_STR(m.add[3].value, ""); /* value defaults to empty */
    PT_CHECK_INT(m.add[3].action, PT_HEADER_OVERWRITE_IF_EXISTS);
    PT_CHECK_INT(m.nremove, 2);
    PT_CHECK_STR(m.remove[0], "x-gone");
    PT_CHECK_STR(m.remove[1], "x-also");
    pt_cfg_dispose(&r);
    json_decref(root);

    /* Only the fields named are read; the others are the caller's (unknown here). */
    rc = parse("{'adds':[],'drops':['x']}", "adds", NULL, &a, &m, &r, &root);
    PT_CHECK_INT(rc, 0);
    PT_CHECK_INT(m.nadd + m.nremove, 0);
    PT_CHECK_INT((int)r.nerrors, 1);
    PT_CHECK_STR(r.errors[0], "o.drops: unknown field");
    pt_cfg_dispose(&r);
    json_decref(root);
    rc = parse("{}", "adds", "drops", &a, &m, &r, &root);
    PT_CHECK_INT(rc, 0);
    PT_CHECK(m.add == NULL && m.remove == NULL);
    PT_CHECK_INT((int)r.nerrors, 0);
    pt_cfg_dispose(&r);
    json_decref(root);
    pt_arena_dispose(&a);
}

static void test_parse_errors(void)
{
#define IMMUTABLE "pseudo-headers and host are not mutable (as in Envoy)"
    static const struct {
        const char *json;
        const char *errs[3];
    } cases[] = {
        {"{'adds':{}}", {"o.adds: {} is not a list"}},
        {"{'adds':[1]}", {"o.adds[0]: 1 is not an object"}},
        {"{'adds':[{}]}", {"o.adds[0].header: is required"}},
        {"{'adds':[{'header':{'value':'v'}}]}", {"o.adds[0].header.key: is required"}},
        {"{'adds':[{'header':{'key':':path','value':'/'}}]}",
         {"o.adds[0].header.key: \":path\" may not be modified: " IMMUTABLE}},
        {"{'adds':[{'header':{'key':'HOST','value':'h'}}]}",
         {"o.adds[0].header.key: \"HOST\" may not be modified: " IMMUTABLE}},
        {"{'adds':[{'header':{'key':'a b','value':'v'}}]}",
         {"o.adds[0].header.key: \"a b\" is not a valid header name"}},
        {"{'adds':[{'header':{'key':'x','value':'a\\r\\nb: c'}}]}",
         {"o.adds[0].header.value: must not contain CR or LF"}},
        {"{'adds':[{'header':{'key':'x','value':'%NOPE%'}}]}",
         {"o.adds[0].header.value: unknown command operator \"%NOPE%\""}},
        {"{'adds':[{'header':{'key':'x','raw_value':'dg=='}}]}",
         {"o.adds[0].header.raw_value: field is not supported"}},
        {"{'adds':[{'header':{'key':'x','value':'1'},'append':true,"
         "'append_action':'ADD_IF_ABSENT'}]}",
         {"o.adds[0]: append and append_action may not both be set (append is deprecated: use "
          "append_action)"}},
        {"{'adds':[{'header':{'key':'x','value':'1'},'append_action':'REPLACE'}]}",
         {"o.adds[0].append_action: \"REPLACE\" is not a valid value (expected one of: "
          "APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD, "
          "OVERWRITE_IF_EXISTS)"}},
        {"{'adds':[{'header':{'key':'x','value':'1'},'colour':'red'}]}",
         {"o.adds[0].colour: unknown field"}},
        {"{'drops':[':authority','Host',null]}",
         {"o.drops[0]: \":authority\" may not be removed: " IMMUTABLE,
          "o.drops[1]: \"Host\" may not be removed: " IMMUTABLE,
          "o.drops[2]: null is not a string"}},
        {"{'drops':['ok',{},'a:b']}",
         {"o.drops[1]: {} is not a string", "o.drops[2]: \"a:b\" is not a valid header name"}},
    };
#undef IMMUTABLE
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_arena_t a = {0};
        pt_header_mutations_t m;
        pt_cfg_t r;
        json_t *root;
        parse(cases[i].json, "adds", "drops", &a, &m, &r, &root);
        const char *want[4] = {cases[i].errs[0], cases[i].errs[1], cases[i].errs[2], NULL};
        if (!errors_are(&r, want))
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK(errors_are(&r, want));
        /* entries with a usable key are kept (the caller rejects the config anyway) */
        PT_CHECK_INT(m.nadd, strstr(cases[i].json, "'key':'x'") ? 1 : 0);
        PT_CHECK_INT(m.nremove, strstr(cases[i].json, "'ok'") ? 1 : 0);
        pt_cfg_dispose(&r);
        json_decref(root);
        pt_arena_dispose(&a);
    }
}

/* Envoy's HeaderParser::evaluateHeaders: remove, then decide every addition against the
 * headers as they are, overwrite, append. */
static void test_apply(void)
{
    pt_arena_t a = {0};
    pt_header_mutations_t m;
    pt_cfg_t r;
    json_t *root;
    int rc = parse(
        "{'adds':["
        "{'header':{'key':'x-gone','value':'added'}},"
        "{'header':{'key':'x-twice','value':'1'},'append_action':'ADD_IF_ABSENT'},"
        "{'header':{'key':'x-twice','value':'2'},'append_action':'ADD_IF_ABSENT'},"
        "{'header':{'key':'x-mixed','value':'add'}},"
        "{'header':{'key':'x-mixed','value':'set'},'append_action':'OVERWRITE_IF_EXISTS_OR_ADD'},"
        "{'header':{'key':'x-have','value':'new'},'append_action':'OVERWRITE_IF_EXISTS'},"
        "{'header':{'key':'x-lack','value':'new'},'append_action':'OVERWRITE_IF_EXISTS'},"
        "{'header':{'key':'x-have','value':'more'},'append_action':'ADD_IF_ABSENT'},"
        "{'header':{'key':'x-addr','value':'%DOWNSTREAM_REMOTE_ADDRESS%'}},"
        "{'header':{'key':'x-addr-keep','value':'%DOWNSTREAM_REMOTE_ADDRESS%'},"
        "'keep_empty_value':true}],"
        "'drops':['x-gone']}",
        "adds", "drops", &a, &m, &r, &root);
    PT_CHECK_INT(rc, 0);
    pt_http_headers_t h;
    pt_http_headers_init(&h, &a);
    pt_http_headers_add_str(&h, "x-gone", "old");
    pt_http_headers_add_str(&h, "x-have", "old");
    pt_header_mutations_apply(&m, &h, NULL);
    PT_CHECK_STR(values(&a, &h, "x-gone"), "added"); /* removal runs first */
    PT_CHECK_STR(values(&a, &h, "x-twice"), "1|2");  /* neither sees the other */
    PT_CHECK_STR(values(&a, &h, "x-mixed"), "set|add");
    PT_CHECK_STR(values(&a, &h, "x-have"), "new");
    PT_CHECK_STR(values(&a, &h, "x-lack"), "");
    /* no stream: an operator that reads one renders empty, which is not added unless
     * keep_empty_value */
    PT_CHECK_STR(values(&a, &h, "x-addr"), "");
    PT_CHECK_INT(pt_http_headers_count(&h, "x-addr-keep"), 1);
    PT_CHECK_STR(values(&a, &h, "x-addr-keep"), "");
    pt_header_mutations_apply(NULL, &h, NULL); /* nothing to do */
    pt_cfg_dispose(&r);
    json_decref(root);

    /* More additions than the stack scratch holds: the same rules. */
    char buf[2048] = "{'adds':[";
    for (int i = 0; i < 20; i++)
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf),
                 "%s{'header':{'key':'x-n','value':'%d'},'append_action':'ADD_IF_ABSENT'}",
                 i ? "," : "", i);
    strcat(buf, "]}");
    rc = parse(buf, "adds", NULL, &a, &m, &r, &root);
    PT_CHECK_INT(rc, 0);
    PT_CHECK_INT(m.nadd, 20);
    pt_http_headers_init(&h, &a);
    pt_header_mutations_apply(&m, &h, NULL);
    PT_CHECK_INT(pt_http_headers_count(&h, "x-n"), 20);
    pt_http_headers_init(&h, &a);
    pt_http_headers_add_str(&h, "x-n", "old");
    pt_header_mutations_apply(&m, &h, NULL);
    PT_CHECK_STR(values(&a, &h, "x-n"), "old");
    pt_cfg_dispose(&r);
    json_decref(root);
    pt_arena_dispose(&a);
}

int main(void)
{
    PT_RUN(test_parse);
    PT_RUN(test_parse_errors);
    PT_RUN(test_apply);
    PT_TEST_EXIT();
}
