/* Unit tests for proxy/route: virtual host selection, route matching, weighted cluster
 * selection, path rewrites, redirects, direct responses, header mutations (order,
 * precedence, append actions, formatter values), config errors with their exact messages,
 * and a 10k virtual host config. Table-driven: each table row is one case.
 *
 * Route configs are parsed from inline JSON (single quotes) into one config snapshot whose
 * clusters are a, b, c, d and web, so validate_clusters has something to check against. */
#include "proxy/route.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static pt_boot_t *cfg;

static pt_boot_t *build_snapshot(void)
{
    json_t *root = J("{'static_resources':{'clusters':[{'name':'a'},{'name':'b'},{'name':'c'},"
                     "{'name':'d'},{'name':'web'}]}}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_boot_t *c = pt_test_boot(root, &r);
    for (size_t i = 0; i < r.nerrors; i++)
        fprintf(stderr, "snapshot: %s\n", r.errors[i]);
    pt_cfg_dispose(&r);
    json_decref(root);
    return c;
}

/* Parses a RouteConfiguration (JSON, single quotes) placed at the key "rc". Errors stay in
 * r (the caller disposes it). NULL when there was any error. */
static pt_route_config_t *parse_rc_tree(json_t *rcj, pt_cfg_t *r, unsigned flags)
{
    json_t *root = json_object();
    json_object_set(root, "rc", rcj);
    pt_cfg_init(r, root);
    pt_route_config_t *rc = NULL;
    if (pt_cfg_enter(r, "rc") > 0) {
        /* As while a bootstrap is built: references checked against its clusters. */
        cfg->config->clusters = (pt_cluster_lookup_t){pt_boot_view_has, cfg->view};
        rc = pt_route_config_parse_ex(r, cfg->config, flags);
        cfg->config->clusters = (pt_cluster_lookup_t){0};
        pt_cfg_leave(r);
    }
    pt_cfg_finish(r);
    json_decref(root); /* everything the config keeps was copied into the snapshot */
    return pt_cfg_ok(r) ? rc : NULL;
}

static pt_route_config_t *parse_rc(const char *json, pt_cfg_t *r, unsigned flags)
{
    json_t *rcj = J(json);
    pt_route_config_t *rc = parse_rc_tree(rcj, r, flags);
    json_decref(rcj);
    return rc;
}

/* A config that must load; prints its errors otherwise. */
static pt_route_config_t *load(const char *json)
{
    pt_cfg_t r;
    pt_route_config_t *rc = parse_rc(json, &r, 0);
    for (size_t i = 0; i < r.nerrors; i++)
        fprintf(stderr, "  unexpected error: %s\n", r.errors[i]);
    pt_cfg_dispose(&r);
    return rc;
}

/* A request: name/value pairs, NULL-terminated, in arena a. */
static pt_http_headers_t *H(pt_arena_t *a, ...)
{
    pt_http_headers_t *h = pt_arena_alloc(a, sizeof(*h));
    pt_http_headers_init(h, a);
    va_list ap;
    va_start(ap, a);
    for (;;) {
        const char *n = va_arg(ap, const char *);
        if (n == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        pt_http_headers_add_str(h, n, v);
    }
    va_end(ap);
    return h;
}

/* Every value of `name` joined with '|' ("" when absent), for compact expectations. */
static const char *values(pt_arena_t *a, const pt_http_headers_t *h, const char *name)
{
    char *out = pt_arena_alloc(a, 1024);
    size_t o = 0;
    for (uint32_t i = 0; i < h->count; i++)
        if (strcmp(h->items[i].name, name) == 0)
            o += (size_t)snprintf(out + o, 1024 - o, "%s%s", o ? "|" : "", h->items[i].value);
    return out;
}

/* ---- virtual host selection ------------------------------------------------------------ */

static void test_find_vhost(void)
{
    pt_route_config_t *rc = load("{'name':'domains','virtual_hosts':["
                                 "{'name':'exact','domains':['www.foo.com','foo.com:8080']},"
                                 "{'name':'suffix_short','domains':['*.foo.com']},"
                                 "{'name':'suffix_long','domains':['*-bar.foo.com']},"
                                 "{'name':'suffix_deeper','domains':['*.baz.foo.com']},"
                                 "{'name':'prefix_short','domains':['foo.*']},"
                                 "{'name':'prefix_long','domains':['foo-bar.*']},"
                                 "{'name':'upper','domains':['MiXeD.Example.com']},"
                                 "{'name':'porty','domains':['api.com:8443']},"
                                 "{'name':'any','domains':['*']}]}");
    PT_CHECK(rc != NULL);
    PT_CHECK_STR(rc->name, "domains");
    static const struct {
        const char *authority, *vhost;
    } cases[] = {
        {"www.foo.com", "exact"},
        {"WWW.FOO.COM", "exact"},         /* case-insensitive */
        {"www.foo.com:80", "exact"},      /* retried without the port */
        {"foo.com:8080", "exact"},        /* an exact domain with its port */
        {"foo.com:9090", "prefix_short"}, /* "foo." is a prefix of "foo.com:9090" */
        {"a.foo.com", "suffix_short"},
        {"A.Foo.Com", "suffix_short"},
        {"a.b.foo.com", "suffix_short"},
        {"x-bar.foo.com", "suffix_long"}, /* the longest wildcard wins */
        {"-bar.foo.com", "suffix_short"}, /* a wildcard never matches the empty string */
        {".foo.com", "any"},
        {"q.baz.foo.com", "suffix_deeper"},
        {"a.foo.com:443", "suffix_short"}, /* suffix found after stripping the port */
        {"foo.org", "prefix_short"},
        {"foo-bar.org", "prefix_long"},
        {"foo-bar.foo.com", "suffix_long"}, /* suffix wildcards before prefix wildcards */
        {"foo.", "any"},
        {"mixed.example.com", "upper"},
        {"api.com:8443", "porty"},
        {"api.com", "any"},
        {"api.com:9999", "any"},
        {"unknown.org", "any"},
        {"", "any"},
        {"[::1]:80", "any"},
        {"www.foo.com.", "any"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const pt_vhost_t *vh = pt_route_find_vhost(rc, cases[i].authority);
        if (vh == NULL || strcmp(vh->name, cases[i].vhost) != 0)
            fprintf(stderr, "  case %zu: %s -> %s\n", i, cases[i].authority,
                    vh ? vh->name : "(none)");
        PT_CHECK(vh != NULL);
        PT_CHECK_STR(vh->name, cases[i].vhost);
    }
}

static void test_find_vhost_no_default(void)
{
    pt_route_config_t *rc = load("{'virtual_hosts':["
                                 "{'name':'a','domains':['a.com','[::1]','[::1]:8080']},"
                                 "{'name':'w','domains':['*.w.com']}]}");
    PT_CHECK(rc != NULL);
    static const struct {
        const char *authority, *vhost; /* NULL: no virtual host (404) */
    } cases[] = {
        {"a.com", "a"},   {"A.COM:80", "a"}, {"b.com", NULL},     {"", NULL},
        {"[::1]", "a"},   {"[::1]:80", "a"}, {"[::1]:8080", "a"}, {"[::2]", NULL},
        {"x.w.com", "w"}, {"w.com", NULL},   {"x.w.com:1", "w"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *want = cases[i].vhost;
        const pt_vhost_t *vh = pt_route_find_vhost(rc, cases[i].authority);
        if (want == NULL) {
            if (vh != NULL)
                fprintf(stderr, "  case %zu: %s -> %s\n", i, cases[i].authority, vh->name);
            PT_CHECK(vh == NULL);
        } else {
            PT_CHECK(vh != NULL);
            PT_CHECK_STR(vh->name, want);
        }
    }
    PT_CHECK(pt_route_find_vhost(rc, NULL) == NULL);

    /* Only "*": every authority, even none, lands there (Envoy's fast path). */
    rc = load("{'virtual_hosts':[{'name':'all','domains':['*']}]}");
    PT_CHECK(rc != NULL);
    PT_CHECK_STR(pt_route_find_vhost(rc, "x.y")->name, "all");
    PT_CHECK_STR(pt_route_find_vhost(rc, NULL)->name, "all");

    /* ignore_port_in_host_matching: the port is stripped before any lookup. */
    rc = load("{'ignore_port_in_host_matching':true,'virtual_hosts':["
              "{'name':'a','domains':['a.com']},{'name':'ap','domains':['b.com:80']}]}");
    PT_CHECK(rc != NULL);
    PT_CHECK_STR(pt_route_find_vhost(rc, "a.com:1234")->name, "a");
    PT_CHECK(pt_route_find_vhost(rc, "b.com:80") == NULL);
}

/* ---- route matching ---------------------------------------------------------------------- */

static void test_route_match(void)
{
    pt_route_config_t *rc = load(
        "{'virtual_hosts':[{'name':'v','domains':['*'],'routes':["
        "{'name':'exact','match':{'path':'/exact'},'direct_response':{'status':200}},"
        "{'name':'exact_ci','match':{'path':'/CI','case_sensitive':false},'route':{'cluster':'a'}},"
        "{'name':'sep','match':{'path_separated_prefix':'/api/dev'},'route':{'cluster':'a'}},"
        "{'name':'regex','match':{'safe_regex':{'regex':'/regex/[0-9]+'}},'route':{'cluster':'a'}},"
        "{'name':'regex_ci','match':{'safe_regex':{'regex':'/rx/[a-z]+'},'case_sensitive':false},"
        "  'route':{'cluster':'a'}},"
        "{'name':'hdr_exact','match':{'prefix':'/h/"
        "exact','headers':[{'name':'x-a','exact_match':'1'}]},"
        "  'route':{'cluster':'a'}},"
        "{'name':'hdr_regex','match':{'prefix':'/h/regex','headers':[{'name':'X-A',"
        "  'safe_regex_match':{'regex':'v[0-9]'}}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_range','match':{'prefix':'/h/range','headers':[{'name':'x-n',"
        "  'range_match':{'start':10,'end':'20'}}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_neg_range','match':{'prefix':'/h/nrange','headers':[{'name':'x-n',"
        "  'range_match':{'start':'-10','end':0}}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_present','match':{'prefix':'/h/present','headers':[{'name':'x-p',"
        "  'present_match':true}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_absent','match':{'prefix':'/h/absent','headers':[{'name':'x-p',"
        "  'present_match':false}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_prefix','match':{'prefix':'/h/prefix','headers':[{'name':'x-a',"
        "  'prefix_match':'ab'}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_suffix','match':{'prefix':'/h/suffix','headers':[{'name':'x-a',"
        "  'suffix_match':'yz'}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_contains','match':{'prefix':'/h/contains','headers':[{'name':'x-a',"
        "  'contains_match':'mid'}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_string','match':{'prefix':'/h/string','headers':[{'name':'x-a',"
        "  'string_match':{'exact':'Val','ignore_case':true}}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_invert','match':{'prefix':'/h/invert','headers':[{'name':'x-a',"
        "  'exact_match':'no','invert_match':true}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_tmae','match':{'prefix':'/h/tmae','headers':[{'name':'x-e',"
        "  "
        "'string_match':{'exact':''},'treat_missing_header_as_empty':true}]},'route':{'cluster':'a'"
        "}},"
        "{'name':'hdr_notmae','match':{'prefix':'/h/notmae','headers':[{'name':'x-e',"
        "  'string_match':{'exact':''}}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_multi','match':{'prefix':'/h/multi','headers':[{'name':'x-m',"
        "  'exact_match':'a,b'}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_method','match':{'prefix':'/h/method','headers':[{'name':':method',"
        "  'exact_match':'POST'}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_any','match':{'prefix':'/h/any','headers':[{'name':'x-a'}]},"
        "  'route':{'cluster':'a'}},"
        "{'name':'hdr_inv_any','match':{'prefix':'/h/invany','headers':[{'name':'x-p',"
        "  'invert_match':true}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_empty_exact','match':{'prefix':'/h/eexact','headers':[{'name':'x-p',"
        "  'exact_match':''}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_invp','match':{'prefix':'/h/invp','headers':[{'name':'x-p',"
        "  'present_match':true,'invert_match':true}]},'route':{'cluster':'a'}},"
        "{'name':'hdr_two','match':{'prefix':'/h/two','headers':[{'name':'x-a','exact_match':'1'},"
        "  {'name':'x-b','exact_match':'2'}]},'route':{'cluster':'a'}},"
        "{'name':'q_string','match':{'prefix':'/q/string','query_parameters':[{'name':'debug',"
        "  'string_match':{'exact':'1'}}]},'route':{'cluster':'a'}},"
        "{'name':'q_present','match':{'prefix':'/q/present','query_parameters':[{'name':'flag',"
        "  'present_match':true}]},'route':{'cluster':'a'}},"
        "{'name':'q_dec','match':{'prefix':'/q/dec','query_parameters':[{'name':'a b',"
        "  'string_match':{'exact':'x/y'}}]},'route':{'cluster':'a'}},"
        "{'name':'q_two','match':{'prefix':'/q/two','query_parameters':[{'name':'a'},"
        "  {'name':'b','string_match':{'prefix':'x'}}]},'route':{'cluster':'a'}},"
        "{'name':'first','match':{'prefix':'/order'},'route':{'cluster':'a'}},"
        "{'name':'second','match':{'prefix':'/order/more'},'route':{'cluster':'a'}},"
        "{'name':'prefix_ci','match':{'prefix':'/"
        "CasE','case_sensitive':false},'route':{'cluster':'a'}},"
        "{'name':'prefix_query','match':{'prefix':'/pq?x'},'route':{'cluster':'a'}},"
        "{'name':'catchall','match':{'prefix':'/'},'route':{'cluster':'a'}}]},"
        "{'name':'narrow','domains':['narrow.com'],'routes':["
        "{'match':{'prefix':'/only'},'route':{'cluster':'b'}}]}]}");
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = pt_route_find_vhost(rc, "x");
    PT_CHECK(vh != NULL);

    static const struct {
        const char *path;
        const char *hdrs[8]; /* name, value, ... */
        const char *want;
    } cases[] = {
        {"/exact", {0}, "exact"},
        {"/exact?x=1", {0}, "exact"}, /* the query string does not count */
        {"/exact#frag", {0}, "exact"},
        {"/exact/", {0}, "catchall"},
        {"/EXACT", {0}, "catchall"},
        {"/ci", {0}, "exact_ci"},
        {"/Ci?q", {0}, "exact_ci"},
        {"/api/dev", {0}, "sep"},
        {"/api/dev/", {0}, "sep"},
        {"/api/dev/v1", {0}, "sep"},
        {"/api/dev?param=true", {0}, "sep"},
        {"/api/developer", {0}, "catchall"},
        {"/regex/123", {0}, "regex"},
        {"/regex/123?x=y", {0}, "regex"}, /* the regex sees the path without query */
        {"/regex/12a", {0}, "catchall"},
        {"/regex/", {0}, "catchall"},
        {"/x/regex/1", {0}, "catchall"}, /* full match, not search */
        {"/rx/abc", {0}, "regex_ci"},
        {"/rx/ABC", {0}, "catchall"}, /* case_sensitive does not apply to regexes */
        {"/h/exact", {"x-a", "1"}, "hdr_exact"},
        {"/h/exact", {"x-a", "2"}, "catchall"},
        {"/h/exact", {0}, "catchall"},
        {"/h/regex", {"x-a", "v1"}, "hdr_regex"},
        {"/h/regex", {"x-a", "v12"}, "catchall"},
        {"/h/range", {"x-n", "10"}, "hdr_range"},
        {"/h/range", {"x-n", "19"}, "hdr_range"},
        {"/h/range", {"x-n", " 15 "}, "hdr_range"},
        {"/h/range", {"x-n", "+15"}, "hdr_range"},
        {"/h/range", {"x-n", "20"}, "catchall"}, /* end is exclusive */
        {"/h/range", {"x-n", "9"}, "catchall"},
        {"/h/range", {"x-n", "abc"}, "catchall"},
        {"/h/range", {"x-n", "1.5e1"}, "catchall"},
        {"/h/range", {"x-n", "99999999999999999999"}, "catchall"},
        {"/h/nrange", {"x-n", "-10"}, "hdr_neg_range"},
        {"/h/nrange", {"x-n", "-1"}, "hdr_neg_range"},
        {"/h/nrange", {"x-n", "0"}, "catchall"},
        {"/h/present", {"x-p", "anything"}, "hdr_present"},
        {"/h/present", {"x-p", ""}, "hdr_present"},
        {"/h/present", {0}, "catchall"},
        {"/h/absent", {0}, "hdr_absent"},
        {"/h/absent", {"x-p", "1"}, "catchall"},
        {"/h/prefix", {"x-a", "abc"}, "hdr_prefix"},
        {"/h/prefix", {"x-a", "xab"}, "catchall"},
        {"/h/suffix", {"x-a", "xyz"}, "hdr_suffix"},
        {"/h/suffix", {"x-a", "yzx"}, "catchall"},
        {"/h/contains", {"x-a", "amidb"}, "hdr_contains"},
        {"/h/contains", {"x-a", "mi"}, "catchall"},
        {"/h/string", {"x-a", "VAL"}, "hdr_string"},
        {"/h/string", {"x-a", "VALUE"}, "catchall"},
        {"/h/invert", {"x-a", "yes"}, "hdr_invert"},
        {"/h/invert", {"x-a", "no"}, "catchall"},
        {"/h/invert", {0}, "catchall"}, /* a missing header fails even inverted */
        {"/h/tmae", {0}, "hdr_tmae"},   /* treat_missing_header_as_empty */
        {"/h/tmae", {"x-e", ""}, "hdr_tmae"},
        {"/h/tmae", {"x-e", "x"}, "catchall"},
        {"/h/notmae", {0}, "catchall"},
        {"/h/notmae", {"x-e", ""}, "hdr_notmae"},
        {"/h/multi", {"x-m", "a", "x-m", "b"}, "hdr_multi"}, /* values joined with ',' */
        {"/h/multi", {"x-m", "a"}, "catchall"},
        {"/h/method", {":method", "POST"}, "hdr_method"},
        {"/h/method", {":method", "GET"}, "catchall"},
        {"/h/any", {"x-a", ""}, "hdr_any"},
        {"/h/any", {0}, "catchall"},
        {"/h/invany", {0}, "hdr_inv_any"}, /* no specifier, inverted: absent */
        {"/h/invany", {"x-p", "1"}, "catchall"},
        {"/h/eexact", {"x-p", "1"}, "hdr_empty_exact"}, /* an empty exact_match: presence */
        {"/h/eexact", {0}, "catchall"},
        {"/h/invp", {0}, "hdr_invp"},
        {"/h/invp", {"x-p", "1"}, "catchall"},
        {"/h/two", {"x-a", "1", "x-b", "2"}, "hdr_two"},
        {"/h/two", {"x-a", "1"}, "catchall"}, /* every header matcher must match */
        {"/q/string?debug=1", {0}, "q_string"},
        {"/q/string?x=1&debug=1", {0}, "q_string"},
        {"/q/string?debug=1&debug=0", {0}, "q_string"}, /* the first value decides */
        {"/q/string?debug=0&debug=1", {0}, "catchall"},
        {"/q/string?debug=0", {0}, "catchall"},
        {"/q/string?debug", {0}, "catchall"},
        {"/q/string", {0}, "catchall"},
        {"/q/string?debug=1#frag", {0}, "q_string"},
        {"/q/present?flag", {0}, "q_present"},
        {"/q/present?flag=", {0}, "q_present"},
        {"/q/present?a=1&flag=2", {0}, "q_present"},
        {"/q/present?flags=1", {0}, "catchall"},
        {"/q/present?&&", {0}, "catchall"},
        {"/q/dec?a%20b=x%2Fy", {0}, "q_dec"}, /* names and values percent-decoded */
        {"/q/dec?a%20b=x/y", {0}, "q_dec"},
        {"/q/dec?a+b=x/y", {0}, "catchall"},
        {"/q/two?a&b=xy", {0}, "q_two"},
        {"/q/two?b=xy", {0}, "catchall"},
        {"/order/more", {0}, "first"}, /* the first match wins */
        {"/case/x", {0}, "prefix_ci"},
        {"/CASE", {0}, "prefix_ci"},
        {"/pq?x=1", {0}, "prefix_query"}, /* prefix sees the query string too */
        {"/pq?y=1", {0}, "catchall"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_arena_t a = {0};
        pt_http_headers_t *h = H(&a, ":method", "GET", ":path", cases[i].path, NULL);
        if (cases[i].hdrs[0] != NULL && strcmp(cases[i].hdrs[0], ":method") == 0)
            pt_http_headers_remove(h, ":method");
        for (int k = 0; k < 8 && cases[i].hdrs[k] != NULL; k += 2)
            pt_http_headers_add_str(h, cases[i].hdrs[k], cases[i].hdrs[k + 1]);
        const pt_route_t *rt = pt_route_match(vh, h);
        if (rt == NULL || strcmp(rt->name, cases[i].want) != 0)
            fprintf(stderr, "  case %zu: %s -> %s\n", i, cases[i].path, rt ? rt->name : "(none)");
        PT_CHECK(rt != NULL);
        PT_CHECK_STR(rt->name, cases[i].want);
        pt_arena_dispose(&a);
    }

    /* No route in the virtual host matches: NULL (404). No :path: no route. */
    pt_arena_t a = {0};
    const pt_vhost_t *narrow = pt_route_find_vhost(rc, "narrow.com");
    PT_CHECK_STR(narrow->name, "narrow");
    PT_CHECK(pt_route_match(narrow, H(&a, ":path", "/other", NULL)) == NULL);
    PT_CHECK(pt_route_match(narrow, H(&a, ":path", "/only/x", NULL)) != NULL);
    PT_CHECK(pt_route_match(vh, H(&a, ":method", "CONNECT", NULL)) == NULL);
    PT_CHECK(pt_route_match(vh, H(&a, ":method", "GET", NULL)) == NULL);
    PT_CHECK(pt_route_match(NULL, H(&a, ":path", "/", NULL)) == NULL);
    pt_arena_dispose(&a);
}

/* connect_matcher: CONNECT requests (no :path) match only such routes, and such routes
 * match nothing else, whatever their order (Envoy's rule). */
static void test_connect_matcher(void)
{
    pt_route_config_t *rc =
        load("{'virtual_hosts':[{'name':'v','domains':['*'],'routes':["
             "{'name':'all','match':{'prefix':'/'},'route':{'cluster':'a'}},"
             "{'name':'tunnel','match':{'connect_matcher':{},'headers':[{'name':'x-t',"
             "  'present_match':true}]},'route':{'cluster':'a','upgrade_configs':[{"
             "  'upgrade_type':'CONNECT','connect_config':{}}]}}]}]}");
    PT_CHECK(rc != NULL);
    if (rc == NULL)
        return;
    const pt_vhost_t *vh = pt_route_find_vhost(rc, "x");
    pt_arena_t a = {0};
    const pt_route_t *rt =
        pt_route_match(vh, H(&a, ":method", "CONNECT", ":authority", "h:443", "x-t", "1", NULL));
    PT_CHECK(rt != NULL && strcmp(rt->name, "tunnel") == 0);
    PT_CHECK(rt != NULL && rt->nupgrades == 1 && rt->upgrades[0].connect_config);
    /* Its header matchers still apply. */
    PT_CHECK(pt_route_match(vh, H(&a, ":method", "CONNECT", ":authority", "h:443", NULL)) == NULL);
    rt = pt_route_match(vh, H(&a, ":method", "GET", ":path", "/", "x-t", "1", NULL));
    PT_CHECK(rt != NULL && strcmp(rt->name, "all") == 0);
    pt_arena_dispose(&a);
    pt_route_config_unref(rc);
}

/* ---- weighted clusters ------------------------------------------------------------------ */

/* splitmix64: a fixed, well-mixed sequence, so the test is deterministic. */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static const pt_route_t *first_route(const pt_route_config_t *rc)
{
    return rc && rc->nvhosts && rc->vhosts[0].nroutes ? &rc->vhosts[0].routes[0] : NULL;
}

static void test_weighted_proportions(void)
{
    pt_route_config_t *rc =
        load("{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':{'prefix':'/'},"
             "'route':{'weighted_clusters':{'clusters':[{'name':'a','weight':10},{'name':'b','"
             "weight':0},"
             "{'name':'c','weight':30},{'name':'d','weight':60}],'total_weight':100}}}]}]}");
    const pt_route_t *rt = first_route(rc);
    PT_CHECK(rt != NULL);
    PT_CHECK_INT(rt->cluster_kind, PT_ROUTE_CLUSTER_WEIGHTED);
    PT_CHECK_INT(rt->nweighted, 4);
    PT_CHECK_INT(rt->total_weight, 100);
    static const char *const names[] = {"a", "b", "c", "d"};
    static const double weights[] = {10, 0, 30, 60};
    unsigned counts[4] = {0};
    const unsigned n = 100000;
    uint64_t seed = 42;
    for (unsigned i = 0; i < n; i++) {
        const void *entry = NULL;
        const char *c = pt_route_pick_cluster(rt, splitmix(&seed), &entry);
        PT_CHECK(c != NULL && entry != NULL);
        PT_CHECK_STR(((const pt_weighted_cluster_t *)entry)->name, c);
        for (int k = 0; k < 4; k++)
            if (strcmp(c, names[k]) == 0)
                counts[k]++;
    }
    for (int k = 0; k < 4; k++) {
        double p = weights[k] / 100.0, expect = n * p, sigma = sqrt(n * p * (1 - p));
        if (fabs(counts[k] - expect) > 5 * sigma)
            fprintf(stderr, "  %s: %u picks, expected %.0f +- %.0f\n", names[k], counts[k], expect,
                    5 * sigma);
        PT_CHECK(fabs(counts[k] - expect) <= 5 * sigma);
    }
    PT_CHECK_INT(counts[1], 0); /* weight 0: never */
}

static void test_weighted_boundaries(void)
{
    pt_route_config_t *rc =
        load("{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':{'prefix':'/'},"
             "'route':{'weighted_clusters':{'clusters':[{'name':'a','weight':10},{'name':'b','"
             "weight':0},"
             "{'name':'c','weight':30},{'name':'d','weight':60}]}}}]}]}");
    const pt_route_t *rt = first_route(rc);
    PT_CHECK(rt != NULL);
    static const struct {
        uint64_t random;
        const char *want;
    } cases[] = {
        {0, "a"},  {9, "a"},   {10, "c"},  {39, "c"},         {40, "d"},
        {99, "d"}, {100, "a"}, {110, "c"}, {UINT64_MAX, "c"}, /* 2^64-1 = 15 mod 100 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        PT_CHECK_STR(pt_route_pick_cluster(rt, cases[i].random, NULL), cases[i].want);

    /* One cluster; a plain cluster route; a cluster_header route. */
    rc = load("{'virtual_hosts':[{'name':'v','domains':['*'],'routes':["
              "{'match':{'prefix':'/"
              "w'},'route':{'weighted_clusters':{'clusters':[{'name':'web','weight':1}]}}},"
              "{'match':{'prefix':'/c'},'route':{'cluster':'b'}},"
              "{'match':{'prefix':'/h'},'route':{'cluster_header':'X-Cluster'}},"
              "{'match':{'prefix':'/r'},'redirect':{'path_redirect':'/'}}]}]}");
    PT_CHECK(rc != NULL);
    const pt_route_t *r = rc->vhosts[0].routes;
    const void *entry = (const void *)1;
    for (uint64_t v = 0; v < 5; v++)
        PT_CHECK_STR(pt_route_pick_cluster(&r[0], v * 7919, NULL), "web");
    PT_CHECK_STR(pt_route_pick_cluster(&r[1], 7, &entry), "b");
    PT_CHECK(entry == NULL);
    PT_CHECK(pt_route_pick_cluster(&r[2], 7, &entry) == NULL);
    PT_CHECK_STR(r[2].cluster_header, "x-cluster");
    PT_CHECK(pt_route_pick_cluster(&r[3], 7, &entry) == NULL);
    pt_arena_t a = {0};
    PT_CHECK_STR(pt_route_cluster_for_request(&r[2], H(&a, "x-cluster", "c", NULL), 1, &entry),
                 "c");
    PT_CHECK(pt_route_cluster_for_request(&r[2], H(&a, "x-other", "c", NULL), 1, &entry) == NULL);
    PT_CHECK_STR(pt_route_cluster_for_request(&r[1], H(&a, NULL), 1, &entry), "b");
    pt_arena_dispose(&a);
}

/* ---- forwarding details: timeouts, upgrades, host rewrites ----------------------------- */

static void test_route_action_fields(void)
{
    pt_route_config_t *rc = load(
        "{'virtual_hosts':[{'name':'v','domains':['*'],'require_tls':'EXTERNAL_ONLY','routes':["
        "{'name':'defaults','match':{'prefix':'/d'},'route':{'cluster':'a'}},"
        "{'name':'set','match':{'prefix':'/s'},'route':{'cluster':'a','timeout':'2.5s',"
        "  'idle_timeout':'30s','host_rewrite_literal':'up.internal','upgrade_configs':["
        "  {'upgrade_type':'WebSocket'},{'upgrade_type':'h2c','enabled':false}]}},"
        "{'name':'zero','match':{'prefix':'/z'},'route':{'cluster':'a','timeout':'0s',"
        "  'idle_timeout':'0s','auto_host_rewrite':true}}]}]}");
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = &rc->vhosts[0];
    PT_CHECK_INT(vh->require_tls, PT_REQUIRE_TLS_EXTERNAL_ONLY);
    PT_CHECK_STR(pt_require_tls_str(vh->require_tls), "EXTERNAL_ONLY");
    const pt_route_t *d = &vh->routes[0], *s = &vh->routes[1], *z = &vh->routes[2];
    PT_CHECK_INT(d->action, PT_ROUTE_ACTION_ROUTE);
    PT_CHECK_STR(pt_route_action_str(d->action), "route");
    PT_CHECK_STR(d->cluster, "a");
    PT_CHECK_INT(d->timeout_ms, 15000);
    PT_CHECK(d->idle_timeout_ms == PT_ROUTE_TIMEOUT_UNSET);
    PT_CHECK(d->host_rewrite_literal == NULL);
    PT_CHECK_INT(d->auto_host_rewrite, 0);
    PT_CHECK_INT(d->nupgrades, 0);
    PT_CHECK_INT(s->timeout_ms, 2500);
    PT_CHECK_INT(s->idle_timeout_ms, 30000);
    PT_CHECK_STR(s->host_rewrite_literal, "up.internal");
    PT_CHECK_INT(s->nupgrades, 2);
    PT_CHECK_STR(s->upgrades[0].upgrade_type, "websocket");
    PT_CHECK_INT(s->upgrades[0].enabled, 1);
    PT_CHECK_STR(s->upgrades[1].upgrade_type, "h2c");
    PT_CHECK_INT(s->upgrades[1].enabled, 0);
    PT_CHECK_INT(z->timeout_ms, 0);
    PT_CHECK_INT(z->idle_timeout_ms, 0);
    PT_CHECK_INT(z->auto_host_rewrite, 1);
    PT_CHECK(z->vhost == vh);
}

static void test_require_tls(void)
{
    pt_route_config_t *rc =
        load("{'virtual_hosts':[{'name':'none','domains':['none.com']},"
             "{'name':'ext','domains':['ext.com'],'require_tls':'EXTERNAL_ONLY'},"
             "{'name':'all','domains':['all.com:8080'],'require_tls':'ALL'}]}");
    PT_CHECK(rc != NULL);
    static const struct {
        const char *authority;
        int tls, internal, want;
        const char *location;
    } cases[] = {
        {"none.com", 0, 0, 0, NULL},
        {"ext.com", 0, 0, 301, "https://ext.com/p?q=1"},
        {"ext.com", 0, 1, 0, NULL}, /* internal requests may stay plaintext */
        {"ext.com", 1, 0, 0, NULL},
        {"all.com:8080", 0, 1, 301, "https://all.com:8080/p?q=1"}, /* host kept as sent */
        {"all.com:8080", 1, 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_arena_t a = {0};
        const pt_vhost_t *vh = pt_route_find_vhost(rc, cases[i].authority);
        PT_CHECK(vh != NULL);
        const char *loc = NULL;
        pt_http_headers_t *h = H(&a, ":authority", cases[i].authority, ":path", "/p?q=1", NULL);
        PT_CHECK_INT(pt_vhost_tls_redirect(vh, h, cases[i].tls, cases[i].internal, &a, &loc),
                     cases[i].want);
        if (cases[i].location)
            PT_CHECK_STR(loc, cases[i].location);
        pt_arena_dispose(&a);
    }
}

/* ---- path rewrites -------------------------------------------------------------------- */

static void test_rewrite_path(void)
{
    static const struct {
        const char *match, *action, *path, *want; /* want NULL: no rewrite */
    } cases[] = {
        {"{'prefix':'/foo'}", "'prefix_rewrite':'/bar'", "/foo/x?y=1", "/bar/x?y=1"},
        {"{'prefix':'/foo/'}", "'prefix_rewrite':'/'", "/foo/x", "/x"},
        {"{'prefix':'/FOO','case_sensitive':false}", "'prefix_rewrite':'/bar'", "/foo/x", "/bar/x"},
        {"{'path':'/exact'}", "'prefix_rewrite':'/new'", "/exact?q", "/new?q"},
        {"{'safe_regex':{'regex':'/a/[0-9]+'}}", "'prefix_rewrite':'/b'", "/a/12?z", "/b?z"},
        {"{'path_separated_prefix':'/api'}", "'prefix_rewrite':'/v2'", "/api/x", "/v2/x"},
        {"{'path_separated_prefix':'/api'}", "'prefix_rewrite':'/v2'", "/api?x", "/v2?x"},
        {"{'prefix':'/'}",
         "'regex_rewrite':{'pattern':{'regex':'^/service/([^/]+)(/.*)$'},"
         "'substitution':'\\\\2/instance/\\\\1'}",
         "/service/foo/v1/api?x=1", "/v1/api/instance/foo?x=1"},
        {"{'prefix':'/'}", "'regex_rewrite':{'pattern':{'regex':'one'},'substitution':'two'}",
         "/xxx/one/yyy/one/zzz", "/xxx/two/yyy/two/zzz"},
        {"{'prefix':'/'}", "'regex_rewrite':{'pattern':{'regex':'one'},'substitution':'two'}",
         "/one?one=one", "/two?one=one"}, /* the query string is left alone */
        {"{'prefix':'/'}", "'regex_rewrite':{'pattern':{'regex':'zzz'},'substitution':'y'}", "/abc",
         "/abc"},
        {"{'prefix':'/'}",
         "'regex_rewrite':{'pattern':{'regex':'(?:/v[0-9]+)(/.*)'},"
         "'substitution':'\\\\1'}",
         "/v1/users", "/users"},
        {"{'prefix':'/'}", "'timeout':'1s'", "/abc", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[1024];
        snprintf(json, sizeof(json),
                 "{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':%s,"
                 "'route':{'cluster':'a',%s}}]}]}",
                 cases[i].match, cases[i].action);
        const pt_route_t *rt = first_route(load(json));
        PT_CHECK(rt != NULL);
        pt_arena_t a = {0};
        const char *got = pt_route_rewrite_path(rt, cases[i].path, &a);
        if (cases[i].want == NULL) {
            PT_CHECK(got == NULL);
        } else {
            if (got == NULL || strcmp(got, cases[i].want) != 0)
                fprintf(stderr, "  case %zu\n", i);
            PT_CHECK_STR(got, cases[i].want);
        }
        pt_arena_dispose(&a);
    }
}

/* ---- redirects --------------------------------------------------------------------------- */

static void test_redirect(void)
{
    static const struct {
        const char *redirect, *scheme, *authority, *path;
        int code;
        const char *location;
    } cases[] = {
        /* https_redirect keeps the host; drops the old scheme's default port only */
        {"{'https_redirect':true}", "http", "example.com", "/p?q=1", 301,
         "https://example.com/p?q=1"},
        {"{'https_redirect':true}", "http", "example.com:80", "/p", 301, "https://example.com/p"},
        {"{'https_redirect':true}", "http", "example.com:8080", "/p", 301,
         "https://example.com:8080/p"},
        {"{'https_redirect':true}", "http", "example.com:443", "/", 301,
         "https://example.com:443/"},
        {"{'https_redirect':true}", "https", "example.com:443", "/", 301,
         "https://example.com:443/"}, /* same scheme: the port stays */
        {"{'https_redirect':true}", "http", "[::1]:80", "/", 301, "https://[::1]/"},
        {"{'https_redirect':true}", "http", "[::1]", "/", 301, "https://[::1]/"},
        {"{'https_redirect':true,'strip_query':true}", "http", "h:80", "/a?b", 301, "https://h/a"},
        {"{'scheme_redirect':'http'}", "https", "example.com:443", "/", 301, "http://example.com/"},
        {"{'scheme_redirect':'HTTP'}", "https", "example.com:8443", "/", 301,
         "http://example.com:8443/"},
        /* host and port */
        {"{'host_redirect':'new.com'}", "http", "old.com:8080", "/p", 301, "http://new.com/p"},
        {"{'port_redirect':8443}", "http", "old.com:8080", "/p", 301, "http://old.com:8443/p"},
        {"{'port_redirect':8443}", "http", "old.com", "/p", 301, "http://old.com:8443/p"},
        {"{'port_redirect':8443}", "http", "[::1]:80", "/p", 301, "http://[::1]:8443/p"},
        {"{'port_redirect':8443,'https_redirect':true}", "http", "old.com", "/p", 301,
         "https://old.com:8443/p"},
        {"{'host_redirect':'new.com','port_redirect':9000}", "http", "old.com:1", "/p", 301,
         "http://new.com:9000/p"},
        {"{'host_redirect':'new.com','https_redirect':true}", "http", "old.com:80", "/p", 301,
         "https://new.com/p"},
        /* path_redirect: the request's query is kept unless the new path has its own */
        {"{'path_redirect':'/new'}", "http", "h", "/old?x=1", 301, "http://h/new?x=1"},
        {"{'path_redirect':'/new'}", "http", "h", "/old", 301, "http://h/new"},
        {"{'path_redirect':'/new?y=2'}", "http", "h", "/old?x=1", 301, "http://h/new?y=2"},
        {"{'path_redirect':'/new?y=2','strip_query':true}", "http", "h", "/old?x=1", 301,
         "http://h/new?y=2"},
        {"{'path_redirect':'/new','strip_query':true}", "http", "h", "/old?x=1", 301,
         "http://h/new"},
        {"{'path_redirect':'noslash'}", "http", "h", "/old", 301, "http://h/noslash"},
        {"{'strip_query':true}", "http", "h", "/old?x=1", 301, "http://h/old"},
        {"{'host_redirect':'h2'}", "https", "h", "/old?x=1", 301, "https://h2/old?x=1"},
        /* prefix_rewrite / regex_rewrite applied to the request's path */
        {"{'prefix_rewrite':'/v2/'}", "http", "h", "/v1/a?b", 301, "http://h/v2/a?b"},
        {"{'prefix_rewrite':'/v2/','strip_query':true}", "http", "h", "/v1/a?b", 301,
         "http://h/v2/a"},
        {"{'regex_rewrite':{'pattern':{'regex':'^/v1/(.*)$'},'substitution':'/new/\\\\1'}}", "http",
         "h", "/v1/x?q", 301, "http://h/new/x?q"},
        /* response codes */
        {"{'response_code':'MOVED_PERMANENTLY'}", "http", "h", "/", 301, "http://h/"},
        {"{'response_code':'FOUND'}", "http", "h", "/", 302, "http://h/"},
        {"{'response_code':'SEE_OTHER'}", "http", "h", "/", 303, "http://h/"},
        {"{'response_code':'TEMPORARY_REDIRECT'}", "http", "h", "/", 307, "http://h/"},
        {"{'response_code':'PERMANENT_REDIRECT','https_redirect':true}", "http", "h", "/", 308,
         "https://h/"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[1024];
        snprintf(json, sizeof(json),
                 "{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':"
                 "{'prefix':'/v1/'},'redirect':%s},{'match':{'prefix':'/'},'redirect':%s}]}]}",
                 cases[i].redirect, cases[i].redirect);
        pt_route_config_t *rc = load(json);
        PT_CHECK(rc != NULL);
        pt_arena_t a = {0};
        pt_http_headers_t *h =
            H(&a, ":authority", cases[i].authority, ":path", cases[i].path, NULL);
        const pt_route_t *rt = pt_route_match(&rc->vhosts[0], h);
        PT_CHECK(rt != NULL);
        PT_CHECK_INT(rt->action, PT_ROUTE_ACTION_REDIRECT);
        const char *loc = NULL;
        int code = pt_route_redirect(rt, h, cases[i].scheme, &a, &loc);
        if (code != cases[i].code || loc == NULL || strcmp(loc, cases[i].location) != 0)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].redirect);
        PT_CHECK_INT(code, cases[i].code);
        PT_CHECK_STR(loc, cases[i].location);
        pt_arena_dispose(&a);
    }
    /* Not a redirect route. */
    const pt_route_t *rt = first_route(
        load("{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':{'prefix':'/'},"
             "'route':{'cluster':'a'}}]}]}"));
    pt_arena_t a = {0};
    const char *loc = NULL;
    PT_CHECK_INT(pt_route_redirect(rt, H(&a, ":path", "/", NULL), "http", &a, &loc), -1);
    pt_arena_dispose(&a);
}

/* ---- direct responses ---------------------------------------------------------------- */

static void test_direct_response(void)
{
    char path[] = "/tmp/pt_test_route_body_XXXXXX";
    int fd = mkstemp(path);
    PT_CHECK(fd >= 0);
    PT_CHECK_INT(write(fd, "file body\n", 10), 10);
    close(fd);
    char from_file[256];
    snprintf(from_file, sizeof(from_file), "{'status':200,'body':{'filename':'%s'}}", path);
    static const struct {
        const char *dr;
        int status;
        const char *body; /* NULL: no body */
        size_t len;
    } cases[] = {
        {"{'status':200,'body':{'inline_string':'hello'}}", 200, "hello", 5},
        {"{'status':404}", 404, NULL, 0},
        {"{'status':'503'}", 503, NULL, 0},
        {"{'status':100}", 100, NULL, 0},
        {"{'status':599,'body':{'inline_string':''}}", 599, "", 0},
        {"{'status':200,'body':{'inline_bytes':'aGVsbG8='}}", 200, "hello", 5},
        {"{'status':200,'body':{'inline_bytes':'aGVsbG8'}}", 200, "hello", 5},
        {"{'status':200,'body':{'inlineBytes':'AAE='}}", 200, "\0\1", 2},
        {"{'status':200,'body':{'inline_bytes':'-_8='}}", 200, "\xfb\xff", 2},
        {NULL, 200, "file body\n", 10},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[1024];
        snprintf(json, sizeof(json),
                 "{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':"
                 "{'prefix':'/'},'direct_response':%s}]}]}",
                 cases[i].dr ? cases[i].dr : from_file);
        const pt_route_t *rt = first_route(load(json));
        PT_CHECK(rt != NULL);
        PT_CHECK_INT(rt->action, PT_ROUTE_ACTION_DIRECT_RESPONSE);
        PT_CHECK_INT(rt->direct_status, cases[i].status);
        if (cases[i].body == NULL) {
            PT_CHECK(rt->direct_body == NULL);
        } else {
            PT_CHECK(rt->direct_body != NULL);
            PT_CHECK_MEM(rt->direct_body, rt->direct_body_len, cases[i].body, cases[i].len);
        }
    }
    /* A file over the limit is read only up to the limit, and rejected. */
    char json[1024], want[512];
    snprintf(json, sizeof(json),
             "{'max_direct_response_body_size_bytes':4,'virtual_hosts':[{'name':'v','domains':"
             "['*'],'routes':[{'match':{'prefix':'/'},'direct_response':%s}]}]}",
             from_file);
    snprintf(want, sizeof(want),
             "rc.virtual_hosts[0].routes[0].direct_response.body.filename: "
             "the body is over 4 bytes, more than max_direct_response_body_size_bytes (4)");
    pt_cfg_t r;
    PT_CHECK(parse_rc(json, &r, 0) == NULL);
    PT_CHECK(errors_are(&r, (const char *const[]){want, NULL}));
    pt_cfg_dispose(&r);
    unlink(path);
}

/* ---- header mutations -------------------------------------------------------------------- */

static const char *const mutation_config =
    "{'request_headers_to_add':[{'header':{'key':'x-level','value':'rc'},"
    "  'append_action':'OVERWRITE_IF_EXISTS_OR_ADD'},{'header':{'key':'x-rc','value':'1'}}],"
    " 'request_headers_to_remove':['x-remove-rc'],"
    " 'response_headers_to_add':[{'header':{'key':'x-level','value':'rc'},'append':false}],"
    " 'response_headers_to_remove':['server'],"
    " 'virtual_hosts':[{'name':'v','domains':['*'],"
    "  'request_headers_to_add':[{'header':{'key':'x-level','value':'vh'},"
    "    'append_action':'OVERWRITE_IF_EXISTS_OR_ADD'},{'header':{'key':'X-Order','value':'vh'}}],"
    "  'request_headers_to_remove':['x-remove-vh'],"
    "  'response_headers_to_add':[{'header':{'key':'x-level','value':'vh'},'append':false}],"
    "  'routes':[{'match':{'prefix':'/'},"
    "   'request_headers_to_add':[{'header':{'key':'x-level','value':'rt'},"
    "     'append_action':'OVERWRITE_IF_EXISTS_OR_ADD'},{'header':{'key':'x-order','value':'rt'}}],"
    "   'request_headers_to_remove':['X-Remove-Rt'],"
    "   'response_headers_to_add':[{'header':{'key':'x-level','value':'rt'},'append':false}],"
    "   'route':{'weighted_clusters':{'clusters':[{'name':'a','weight':1,"
    "     'request_headers_to_add':[{'header':{'key':'x-level','value':'wc'},"
    "       "
    "'append_action':'OVERWRITE_IF_EXISTS_OR_ADD'},{'header':{'key':'x-order','value':'wc'}}],"
    "     'request_headers_to_remove':['x-remove-wc'],"
    "     'response_headers_to_add':[{'header':{'key':'x-level','value':'wc'},'append':false}]"
    "   }]}}}]}]%s}";

static void test_mutation_precedence(void)
{
    static const struct {
        const char *extra;
        const char *level, *order, *resp_level;
    } cases[] = {
        /* Default: evaluated entry, route, vhost, config; the last overwrite (least specific)
         * wins, and appends come in that order. */
        {"", "rc", "wc|rt|vh", "rc"},
        {",'most_specific_header_mutations_wins':false", "rc", "wc|rt|vh", "rc"},
        /* most_specific_header_mutations_wins: config, vhost, route after the entry. */
        {",'most_specific_header_mutations_wins':true", "rt", "wc|vh|rt", "rt"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[4096];
        snprintf(json, sizeof(json), mutation_config, cases[i].extra);
        pt_route_config_t *rc = load(json);
        PT_CHECK(rc != NULL);
        const pt_vhost_t *vh = &rc->vhosts[0];
        const pt_route_t *rt = &vh->routes[0];
        const void *entry = NULL;
        PT_CHECK_STR(pt_route_pick_cluster(rt, 0, &entry), "a");
        pt_arena_t a = {0};
        pt_http_headers_t *h =
            H(&a, ":path", "/", "x-level", "client", "x-remove-rc", "1", "x-remove-vh", "1",
              "x-remove-rt", "1", "x-remove-wc", "1", "x-keep", "1", NULL);
        pt_route_mutate_request_headers(rc, vh, rt, entry, h, NULL);
        PT_CHECK_STR(values(&a, h, "x-level"), cases[i].level);
        PT_CHECK_STR(values(&a, h, "x-order"), cases[i].order);
        PT_CHECK_STR(values(&a, h, "x-rc"), "1");
        PT_CHECK_STR(values(&a, h, "x-keep"), "1");
        PT_CHECK_STR(values(&a, h, "x-remove-rc"), "");
        PT_CHECK_STR(values(&a, h, "x-remove-vh"), "");
        PT_CHECK_STR(values(&a, h, "x-remove-rt"), "");
        PT_CHECK_STR(values(&a, h, "x-remove-wc"), "");

        pt_http_headers_t *resp =
            H(&a, ":status", "200", "server", "upstream", "x-level", "upstream", NULL);
        pt_route_mutate_response_headers(rc, vh, rt, entry, resp, NULL);
        PT_CHECK_STR(values(&a, resp, "x-level"), cases[i].resp_level);
        PT_CHECK_STR(values(&a, resp, "server"), "");
        PT_CHECK_STR(values(&a, resp, ":status"), "200");

        /* Without the weighted entry (a direct response, say) its level is skipped. */
        pt_http_headers_t *h2 = H(&a, ":path", "/", NULL);
        pt_route_mutate_request_headers(rc, vh, rt, NULL, h2, NULL);
        PT_CHECK_STR(values(&a, h2, "x-order"), cases[i].order + 3);
        pt_arena_dispose(&a);
    }
}

static void test_mutation_append_actions(void)
{
    pt_route_config_t *rc = load(
        "{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':{'prefix':'/'},"
        "'route':{'cluster':'a'},'request_headers_to_remove':['x-replace'],"
        "'request_headers_to_add':["
        "{'header':{'key':'x-append','value':'new'}},"
        "{'header':{'key':'x-absent','value':'new'},'append_action':'ADD_IF_ABSENT'},"
        "{'header':{'key':'x-over','value':'new'},'append_action':'OVERWRITE_IF_EXISTS'},"
        "{'header':{'key':'x-over-add','value':'new'},'append_action':'OVERWRITE_IF_EXISTS_OR_ADD'}"
        ","
        "{'header':{'key':'x-legacy-false','value':'v'},'append':false},"
        "{'header':{'key':'x-legacy-true','value':'v'},'append':true},"
        "{'header':{'key':'x-empty','value':''}},"
        "{'header':{'key':'x-empty-keep','value':''},'keep_empty_value':true},"
        "{'header':{'key':'x-empty-over','value':''},'append_action':'OVERWRITE_IF_EXISTS'},"
        "{'header':{'key':'x-replace','value':'added'}},"
        "{'header':{'key':'x-twice','value':'1'},'append_action':'ADD_IF_ABSENT'},"
        "{'header':{'key':'x-twice','value':'2'},'append_action':'ADD_IF_ABSENT'},"
        "{'header':{'key':'x-mixed','value':'add'}},"
        "{'header':{'key':'x-mixed','value':'set'},'append_action':'OVERWRITE_IF_EXISTS_OR_ADD'}"
        "]}]}]}");
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = &rc->vhosts[0];
    const pt_route_t *rt = &vh->routes[0];
    static const struct {
        const char *name, *with, *without; /* result with pre-existing headers, and without */
    } cases[] = {
        {"x-append", "old|new", "new"},
        {"x-absent", "old", "new"},
        {"x-over", "new", ""},
        {"x-over-add", "new", "new"},
        {"x-legacy-false", "v", "v"},
        {"x-legacy-true", "old|v", "v"},
        {"x-empty", "old", ""},            /* empty values are not added ... */
        {"x-empty-keep", "old|", ""},      /* ... unless keep_empty_value */
        {"x-empty-over", "old", ""},       /* an empty value does not overwrite either */
        {"x-replace", "added", "added"},   /* removal runs before additions */
        {"x-twice", "old", "1|2"},         /* decided against the headers before this level */
        {"x-mixed", "set|add", "set|add"}, /* overwrites first, then appends */
    };
    pt_arena_t a = {0};
    pt_http_headers_t *with = H(&a, ":path", "/", NULL);
    pt_http_headers_t *without = H(&a, ":path", "/", NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_http_headers_add_str(with, cases[i].name, "old");
        if (strcmp(cases[i].name, "x-legacy-false") == 0)
            pt_http_headers_add_str(with, cases[i].name, "old2");
    }
    pt_route_mutate_request_headers(rc, vh, rt, NULL, with, NULL);
    pt_route_mutate_request_headers(rc, vh, rt, NULL, without, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *w = values(&a, with, cases[i].name), *wo = values(&a, without, cases[i].name);
        if (strcmp(w, cases[i].with) != 0 || strcmp(wo, cases[i].without) != 0)
            fprintf(stderr, "  %s: with \"%s\", without \"%s\"\n", cases[i].name, w, wo);
        PT_CHECK_STR(w, cases[i].with);
        PT_CHECK_STR(wo, cases[i].without);
    }
    pt_arena_dispose(&a);
}

static void test_mutation_formatter(void)
{
    pt_route_config_t *rc = load(
        "{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'name':'fmt','match':{'prefix':'/"
        "'},"
        "'route':{'cluster':'a'},"
        "'request_headers_to_add':["
        "{'header':{'key':'x-client-ip','value':'%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%'}},"
        "{'header':{'key':'x-client','value':'%DOWNSTREAM_REMOTE_ADDRESS%'}},"
        "{'header':{'key':'x-pct','value':'100%%'}},"
        "{'header':{'key':'x-echo','value':'in=%REQ(x-in)%;'}},"
        "{'header':{'key':'x-missing','value':'%REQ(x-nope)%'}},"
        "{'header':{'key':'x-missing-keep','value':'%REQ(x-nope)%'},'keep_empty_value':true},"
        "{'header':{'key':'x-route','value':'%ROUTE_NAME%'}},"
        "{'header':{'key':'x-in','value':'set-by-route'},'append_action':'OVERWRITE_IF_EXISTS'},"
        "{'header':{'key':'x-see','value':'%REQ(x-in)%'}}"
        "]}]}]}");
    PT_CHECK(rc != NULL);
    const pt_route_t *rt = first_route(rc);
    PT_CHECK(rt->request_headers.nadd == 9);
    /* "100%%" does not depend on the request: rendered once at load. */
    PT_CHECK_STR(rt->request_headers.add[2].value, "100%");
    PT_CHECK(rt->request_headers.add[2].fmt == NULL);
    PT_CHECK(rt->request_headers.add[0].value == NULL && rt->request_headers.add[0].fmt != NULL);

    pt_arena_t a = {0};
    pt_http_headers_t *h = H(&a, ":path", "/", "x-in", "hello", NULL);
    pt_stream_info_t si;
    memset(&si, 0, sizeof(si));
    PT_CHECK_INT(pt_addr_parse(&si.downstream_remote, "10.1.2.3", 5555), 0);
    si.request_headers = h;
    si.route_name = "fmt";
    pt_route_mutate_request_headers(rc, &rc->vhosts[0], rt, NULL, h, &si);
    PT_CHECK_STR(values(&a, h, "x-client-ip"), "10.1.2.3");
    PT_CHECK_STR(values(&a, h, "x-client"), "10.1.2.3:5555");
    PT_CHECK_STR(values(&a, h, "x-pct"), "100%");
    PT_CHECK_STR(values(&a, h, "x-echo"), "in=hello;");
    PT_CHECK_STR(values(&a, h, "x-missing"), ""); /* renders empty: not added */
    PT_CHECK(pt_http_headers_find(h, "x-missing-keep") != NULL);
    PT_CHECK_STR(values(&a, h, "x-missing-keep"), "");
    PT_CHECK_STR(values(&a, h, "x-route"), "fmt");
    PT_CHECK_STR(values(&a, h, "x-in"), "set-by-route");
    /* Values are rendered before the level applies: x-see saw the client's x-in. */
    PT_CHECK_STR(values(&a, h, "x-see"), "hello");

    /* No stream info: every stream value is "not set" (and so left out). */
    pt_http_headers_t *h2 = H(&a, ":path", "/", NULL);
    pt_route_mutate_request_headers(rc, &rc->vhosts[0], rt, NULL, h2, NULL);
    PT_CHECK_STR(values(&a, h2, "x-client-ip"), "");
    PT_CHECK_STR(values(&a, h2, "x-pct"), "100%");
    pt_arena_dispose(&a);
}

/* More additions than fit the per-request scratch on the stack. */
static void test_mutation_many(void)
{
    json_t *rcj = J("{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':"
                    "{'prefix':'/'},'route':{'cluster':'a'}}]}]}");
    json_t *route = json_array_get(
        json_object_get(json_array_get(json_object_get(rcj, "virtual_hosts"), 0), "routes"), 0);
    json_t *adds = json_array();
    for (int i = 0; i < 40; i++) {
        char k[32], v[32];
        snprintf(k, sizeof(k), "x-h%d", i);
        snprintf(v, sizeof(v), i % 2 ? "v%d" : "%%PROTOCOL%%-%d", i);
        json_array_append_new(adds, json_pack("{s:{s:s,s:s}}", "header", "key", k, "value", v));
    }
    json_object_set_new(route, "response_headers_to_add", adds);
    pt_cfg_t r;
    pt_route_config_t *rc = parse_rc_tree(rcj, &r, 0);
    json_decref(rcj);
    PT_CHECK(errors_are(&r, (const char *const[]){NULL}));
    pt_cfg_dispose(&r);
    pt_arena_t a = {0};
    pt_http_headers_t *h = H(&a, ":status", "200", NULL);
    pt_stream_info_t si;
    memset(&si, 0, sizeof(si));
    si.protocol = "HTTP/1.1";
    pt_route_mutate_response_headers(rc, &rc->vhosts[0], &rc->vhosts[0].routes[0], NULL, h, &si);
    PT_CHECK_INT(h->count, 41);
    PT_CHECK_STR(values(&a, h, "x-h0"), "HTTP/1.1-0");
    PT_CHECK_STR(values(&a, h, "x-h39"), "v39");
    pt_arena_dispose(&a);
}

/* ---- config errors ---------------------------------------------------------------------- */

#define VHX(pre, extra) "{" pre "'virtual_hosts':[{'name':'v','domains':['*']" extra "}]}"
#define VH(extra)       VHX("", extra)
#define ROUTE(r)        VH(",'routes':[" r "]")
#define ROUTEX(pre, r)  VHX(pre, ",'routes':[" r "]")

static void test_config_errors(void)
{
    /* A json starting with '@' is parsed as if from RDS (PT_ROUTE_PARSE_RDS). */
    static const struct {
        const char *json;
        const char *errs[4];
    } cases[] = {
        /* domains */
        {"{'virtual_hosts':[{'name':'one','domains':['a.com']},{'name':'two','domains':['A.com']}]"
         "}",
         {"rc.virtual_hosts[1].domains[0]: duplicate domain \"A.com\" (already used by virtual "
          "host \"one\")"}},
        {"{'virtual_hosts':[{'name':'one','domains':['a.com','b.com','a.com']}]}",
         {"rc.virtual_hosts[0].domains[2]: duplicate domain \"a.com\" (already used by virtual "
          "host \"one\")"}},
        {"{'virtual_hosts':[{'name':'one','domains':['*']},{'name':'two','domains':['*']}]}",
         {"rc.virtual_hosts[1].domains[0]: duplicate domain \"*\" (already used by virtual host "
          "\"one\")"}},
        {"{'virtual_hosts':[{'name':'one','domains':['*.a.com']},{'name':'two','domains':['*.A.COM'"
         "]}]}",
         {"rc.virtual_hosts[1].domains[0]: duplicate domain \"*.A.COM\" (already used by "
          "virtual host \"one\")"}},
        {"{'virtual_hosts':[{'name':'one','domains':['a.*']},{'name':'two','domains':['a.*']}]}",
         {"rc.virtual_hosts[1].domains[0]: duplicate domain \"a.*\" (already used by virtual "
          "host \"one\")"}},
        {"{'virtual_hosts':[{'name':'one','domains':['a.com','*.com','a.*','com']}]}", {NULL}},
        {"{'virtual_hosts':[{'name':'v','domains':['a.*.com','*foo.com','foo*','*.']}]}",
         {"rc.virtual_hosts[0].domains[0]: \"a.*.com\" is not a valid domain: x",
          "rc.virtual_hosts[0].domains[1]: \"*foo.com\" is not a valid domain: x",
          "rc.virtual_hosts[0].domains[2]: \"foo*\" is not a valid domain: x",
          "rc.virtual_hosts[0].domains[3]: \"*.\" is not a valid domain: x"}},
        {"{'virtual_hosts':[{'name':'v','domains':['**','.*','*-','x*y']}]}",
         {"rc.virtual_hosts[0].domains[0]: \"**\" is not a valid domain: x",
          "rc.virtual_hosts[0].domains[1]: \".*\" is not a valid domain: x",
          "rc.virtual_hosts[0].domains[2]: \"*-\" is not a valid domain: x",
          "rc.virtual_hosts[0].domains[3]: \"x*y\" is not a valid domain: x"}},
        {"{'virtual_hosts':[{'name':'v','domains':['', 'a b', 3]}]}",
         {"rc.virtual_hosts[0].domains[0]: \"\" is not a valid domain: must not be empty",
          "rc.virtual_hosts[0].domains[1]: \"a b\" is not a valid domain: must not contain "
          "spaces or control characters",
          "rc.virtual_hosts[0].domains[2]: 3 is not a string"}},
        {"{'virtual_hosts':[{'name':'v'}]}", {"rc.virtual_hosts[0].domains: is required"}},
        {"{'virtual_hosts':[{'name':'v','domains':[]}]}",
         {"rc.virtual_hosts[0].domains: must not be empty"}},
        /* virtual host names */
        {"{'virtual_hosts':[{'domains':['a']}]}", {"rc.virtual_hosts[0].name: is required"}},
        {"{'virtual_hosts':[{'name':'v','domains':['a']},{'name':'v','domains':['b']}]}",
         {"rc.virtual_hosts[1].name: duplicate virtual host name \"v\""}},
        {VH(",'require_tls':'SOME'"),
         {"rc.virtual_hosts[0].require_tls: \"SOME\" is not a valid value (expected one of: "
          "NONE, EXTERNAL_ONLY, ALL)"}},
        /* route actions */
        {ROUTE("{'match':{'prefix':'/'}}"),
         {"rc.virtual_hosts[0].routes[0]: one of route, redirect or direct_response is required"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a'},'redirect':{}}"),
         {"rc.virtual_hosts[0].routes[0]: only one of route, redirect, direct_response may be "
          "given (found route, redirect)"}},
        {ROUTE("{'route':{'cluster':'a'}}"), {"rc.virtual_hosts[0].routes[0].match: is required"}},
        {ROUTE("{'match':{},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match: one of prefix, path, safe_regex, "
          "path_separated_prefix or connect_matcher is required"}},
        {ROUTE("{'match':{'prefix':'/','path':'/x'},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match: only one of prefix, path, safe_regex, "
          "path_separated_prefix, connect_matcher may be given (found prefix, path)"}},
        /* CONNECT is terminated, never forwarded: a connect_matcher route must say so. */
        {ROUTE("{'match':{'connect_matcher':{}},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].route.upgrade_configs: a connect_matcher route needs "
          "{upgrade_type: CONNECT, connect_config: {}} (CONNECT is terminated; forwarding it "
          "upstream is not supported)"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','upgrade_configs':[{"
               "'upgrade_type':'websocket','connect_config':{}}]}}"),
         {"rc.virtual_hosts[0].routes[0].route.upgrade_configs[0].connect_config: is only for "
          "upgrade_type CONNECT"}},
        {ROUTE("{'match':{'connect_matcher':{}},'route':{'cluster':'a','upgrade_configs':[{"
               "'upgrade_type':'CONNECT','connect_config':{'proxy_protocol_config':{}}}]}}"),
         {"rc.virtual_hosts[0].routes[0].route.upgrade_configs[0].connect_config."
          "proxy_protocol_config: field is not supported"}},
        {ROUTE("{'match':{'path_separated_prefix':'/api/'},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match.path_separated_prefix: \"/api/\" must be at "
          "least 2 characters long, contain no '?' or '#', and not end with '/'"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{}}"),
         {"rc.virtual_hosts[0].routes[0].route: one of cluster, weighted_clusters or "
          "cluster_header is required"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','cluster_header':'x'}}"),
         {"rc.virtual_hosts[0].routes[0].route: only one of cluster, weighted_clusters, "
          "cluster_header may be given (found cluster, cluster_header)"}},
        /* clusters */
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'nope'}}"),
         {"rc.virtual_hosts[0].routes[0].route.cluster: unknown cluster \"nope\""}},
        {ROUTEX("'validate_clusters':false,",
                "{'match':{'prefix':'/'},'route':{'cluster':'nope'}}"),
         {NULL}},
        {"@" ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'nope'}}"), {NULL}},
        {"@" ROUTEX("'validate_clusters':true,",
                    "{'match':{'prefix':'/'},'route':{'cluster':'nope'}}"),
         {"rc.virtual_hosts[0].routes[0].route.cluster: unknown cluster \"nope\""}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':["
               "{'name':'a','weight':1},{'name':'nope','weight':1}]}}}"),
         {"rc.virtual_hosts[0].routes[0].route.weighted_clusters.clusters[1].name: unknown "
          "cluster \"nope\""}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':["
               "{'name':'a','weight':30},{'name':'b','weight':30}],'total_weight':100}}}"),
         {"rc.virtual_hosts[0].routes[0].route.weighted_clusters.total_weight: is 100, but the "
          "cluster weights add up to 60"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':["
               "{'name':'a','weight':0},{'name':'b'}]}}}"),
         {"rc.virtual_hosts[0].routes[0].route.weighted_clusters.clusters: the sum of the "
          "weights must be greater than 0"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':[]}}}"),
         {"rc.virtual_hosts[0].routes[0].route.weighted_clusters.clusters: must not be empty"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'weighted_clusters':{'clusters':["
               "{'weight':1}],'runtime_key_prefix':'x'}}}"),
         {"rc.virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].name: is required",
          "rc.virtual_hosts[0].routes[0].route.weighted_clusters.runtime_key_prefix: field is "
          "not supported"}},
        /* regexes */
        {ROUTE("{'match':{'safe_regex':{'regex':'/a(b'}},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match.safe_regex.regex: \"/a(b\" is not a valid regex: "
          "missing ): /a(b"}},
        {ROUTE("{'match':{'safe_regex':{'regex':'(a)\\\\1'}},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match.safe_regex.regex: \"(a)\\\\1\" is not a valid "
          "regex: invalid escape sequence: \\1"}},
        {ROUTE("{'match':{'prefix':'/','headers':[{'name':'x','safe_regex_match':"
               "{'regex':'a(?=b)'}}]},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match.headers[0].safe_regex_match.regex: "
          "\"a(?=b)\" is not a valid regex: invalid perl operator: (?="}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','regex_rewrite':{'pattern':"
               "{'regex':'\\\\pL+'},'substitution':''}}}"),
         {"rc.virtual_hosts[0].routes[0].route.regex_rewrite.pattern.regex: \"\\\\pL+\" is too "
          "complex: its RE2 program size 1198 is over 100 (the runtime key "
          "re2.max_program_size.error_level)"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','regex_rewrite':{'pattern':"
               "{'regex':'(a)'},'substitution':'\\\\2'}}}"),
         {"rc.virtual_hosts[0].routes[0].route.regex_rewrite.substitution: refers to group \\2, "
          "but the regex has 1 capturing group"}},
        {ROUTE("{'match':{'prefix':'/"
               "'},'route':{'cluster':'a','regex_rewrite':{'substitution':'x'}}}"),
         {"rc.virtual_hosts[0].routes[0].route.regex_rewrite.pattern: is required"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','prefix_rewrite':'/x',"
               "'regex_rewrite':{'pattern':{'regex':'a'},'substitution':'b'}}}"),
         {"rc.virtual_hosts[0].routes[0].route: only one of prefix_rewrite, regex_rewrite may "
          "be given (found prefix_rewrite, regex_rewrite)"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','host_rewrite_literal':'h',"
               "'auto_host_rewrite':true}}"),
         {"rc.virtual_hosts[0].routes[0].route: only one of host_rewrite_literal, "
          "auto_host_rewrite may be given (found host_rewrite_literal, auto_host_rewrite)"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','upgrade_configs':["
               "{'upgrade_type':'websocket'},{'upgrade_type':'WebSocket'}]}}"),
         {"rc.virtual_hosts[0].routes[0].route.upgrade_configs[1].upgrade_type: duplicate "
          "upgrade \"WebSocket\""}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','timeout':'soon'}}"),
         {"rc.virtual_hosts[0].routes[0].route.timeout: \"soon\" is not a duration (expected a "
          "string like \"1.5s\")"}},
        /* direct responses */
        {ROUTE("{'match':{'prefix':'/'},'direct_response':{'status':600}}"),
         {"rc.virtual_hosts[0].routes[0].direct_response.status: 600 is out of range [100, 599]"}},
        {ROUTE("{'match':{'prefix':'/'},'direct_response':{'status':99}}"),
         {"rc.virtual_hosts[0].routes[0].direct_response.status: 99 is out of range [100, 599]"}},
        {ROUTE("{'match':{'prefix':'/'},'direct_response':{}}"),
         {"rc.virtual_hosts[0].routes[0].direct_response.status: is required"}},
        {ROUTEX("'max_direct_response_body_size_bytes':4,",
                "{'match':{'prefix':'/"
                "'},'direct_response':{'status':200,'body':{'inline_string':'hello'}}}"),
         {"rc.virtual_hosts[0].routes[0].direct_response.body.inline_string: the body is 5 "
          "bytes, more than max_direct_response_body_size_bytes (4)"}},
        {ROUTE("{'match':{'prefix':'/'},'direct_response':{'status':200,'body':{'filename':'/"
               "nonexistent/x'}}}"),
         {"rc.virtual_hosts[0].routes[0].direct_response.body.filename: cannot read "
          "\"/nonexistent/x\": No such file or directory"}},
        {ROUTE("{'match':{'prefix':'/"
               "'},'direct_response':{'status':200,'body':{'inline_bytes':'@@'}}}"),
         {"rc.virtual_hosts[0].routes[0].direct_response.body.inline_bytes: is not valid base64"}},
        {ROUTE(
             "{'match':{'prefix':'/'},'direct_response':{'status':200,'body':{'inline_string':'a',"
             "'filename':'b'}}}"),
         {"rc.virtual_hosts[0].routes[0].direct_response.body: only one of filename, "
          "inline_bytes, inline_string may be given (found filename, inline_string)"}},
        {ROUTE("{'match':{'prefix':'/"
               "'},'direct_response':{'status':200,'body':{'environment_variable':'X'}}}"),
         {"rc.virtual_hosts[0].routes[0].direct_response.body.environment_variable: field is "
          "not supported"}},
        /* redirects */
        {ROUTE(
             "{'match':{'prefix':'/'},'redirect':{'https_redirect':true,'scheme_redirect':'ftp'}}"),
         {"rc.virtual_hosts[0].routes[0].redirect: only one of https_redirect, scheme_redirect "
          "may be given (found https_redirect, scheme_redirect)"}},
        {ROUTE("{'match':{'prefix':'/'},'redirect':{'path_redirect':'/a','prefix_rewrite':'/b'}}"),
         {"rc.virtual_hosts[0].routes[0].redirect: only one of path_redirect, prefix_rewrite, "
          "regex_rewrite may be given (found path_redirect, prefix_rewrite)"}},
        {ROUTE("{'match':{'prefix':'/'},'redirect':{'response_code':'MOVED'}}"),
         {"rc.virtual_hosts[0].routes[0].redirect.response_code: \"MOVED\" is not a valid value "
          "(expected one of: MOVED_PERMANENTLY, FOUND, SEE_OTHER, TEMPORARY_REDIRECT, "
          "PERMANENT_REDIRECT)"}},
        {ROUTE("{'match':{'prefix':'/'},'redirect':{'port_redirect':70000}}"),
         {"rc.virtual_hosts[0].routes[0].redirect.port_redirect: 70000 is out of range [0, "
          "65535]"}},
        {ROUTE("{'match':{'prefix':'/'},'redirect':{'host_redirect':'a\\r\\nb'}}"),
         {"rc.virtual_hosts[0].routes[0].redirect.host_redirect: must not contain CR or LF"}},
        /* header matchers */
        {ROUTE("{'match':{'prefix':'/"
               "','headers':[{'name':'x','exact_match':'a','prefix_match':'b'}]},"
               "'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match.headers[0]: only one of exact_match, "
          "safe_regex_match, range_match, present_match, prefix_match, suffix_match, "
          "contains_match, string_match may be given (found exact_match, prefix_match)"}},
        {ROUTE("{'match':{'prefix':'/','headers':[{'exact_match':'a'}]},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match.headers[0].name: is required"}},
        {ROUTE("{'match':{'prefix':'/','headers':[{'name':'x','range_match':{'start':'x'}}]},"
               "'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match.headers[0].range_match.start: \"x\" is not an "
          "integer"}},
        {ROUTE("{'match':{'prefix':'/','query_parameters':[{'name':'q','present_match':true,"
               "'string_match':{'exact':'1'}}]},'route':{'cluster':'a'}}"),
         {"rc.virtual_hosts[0].routes[0].match.query_parameters[0]: only one of string_match, "
          "present_match may be given (found string_match, present_match)"}},
        /* header mutations */
        {VH(",'response_headers_to_remove':[null,{}]"),
         {"rc.virtual_hosts[0].response_headers_to_remove[0]: null is not a string",
          "rc.virtual_hosts[0].response_headers_to_remove[1]: {} is not a string"}},
        {VH(",'request_headers_to_remove':[':path','host','Host','x-ok','bad name']"),
         {"rc.virtual_hosts[0].request_headers_to_remove[0]: \":path\" may not be removed: "
          "pseudo-headers and host are not mutable (as in Envoy)",
          "rc.virtual_hosts[0].request_headers_to_remove[1]: \"host\" may not be removed: "
          "pseudo-headers and host are not mutable (as in Envoy)",
          "rc.virtual_hosts[0].request_headers_to_remove[2]: \"Host\" may not be removed: "
          "pseudo-headers and host are not mutable (as in Envoy)",
          "rc.virtual_hosts[0].request_headers_to_remove[4]: \"bad name\" is not a valid "
          "header name"}},
        {"{'response_headers_to_add':[{'header':{'key':':status','value':'200'}},"
         "{'header':{'key':'host','value':'x'}}],'virtual_hosts':[]}",
         {"rc.response_headers_to_add[0].header.key: \":status\" may not be modified: "
          "pseudo-headers and host are not mutable (as in Envoy)",
          "rc.response_headers_to_add[1].header.key: \"host\" may not be modified: "
          "pseudo-headers and host are not mutable (as in Envoy)"}},
        {"{'request_headers_to_add':[{'header':{'key':'x','value':'v'},'append':true,"
         "'append_action':'ADD_IF_ABSENT'}]}",
         {"rc.request_headers_to_add[0]: append and append_action may not both be set (append "
          "is deprecated: use append_action)"}},
        {"{'request_headers_to_add':[{'header':{'key':'x','value':'%BOGUS%'}}]}",
         {"rc.request_headers_to_add[0].header.value: unknown command operator \"%BOGUS%\""}},
        {"{'request_headers_to_add':[{'header':{'key':'x','value':'a\\nb'}},{'append':true}]}",
         {"rc.request_headers_to_add[0].header.value: must not contain CR or LF",
          "rc.request_headers_to_add[1].header: is required"}},
        {"{'request_headers_to_add':[{'header':{'key':'x','raw_value':'dg=='}}]}",
         {"rc.request_headers_to_add[0].header.raw_value: field is not supported"}},
        /* fields petrel does not support, and unknown ones */
        /* an empty typed_per_filter_config changes nothing and is accepted */
        {VH(",'retry_policy':{'retry_on':'bogus'},'typed_per_filter_config':{}"),
         {"rc.virtual_hosts[0].retry_policy.retry_on: \"bogus\" is not a retry condition petrel "
          "knows (5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, "
          "retriable-status-codes, retriable-headers, envoy-ratelimited)"}},
        {VH(",'typed_per_filter_config':{'envoy.filters.http.cors':{}}"),
         {"rc.virtual_hosts[0].typed_per_filter_config.envoy.filters.http.cors.@type: is "
          "required"}},
        {VH(",'typed_per_filter_config':{'envoy.filters.http.cors':{'@type':'type.googleapis."
            "com/envoy.extensions.filters.http.cors.v3.CorsPolicy'}}"),
         {"rc.virtual_hosts[0].typed_per_filter_config.envoy.filters.http.cors.@type: "
          "\"type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy\" is not the "
          "per-route config of an HTTP filter petrel has"}},
        /* FilterConfig: is_optional leaves out what petrel does not have; disabled alone */
        {VH(",'typed_per_filter_config':{'envoy.filters.http.cors':{'@type':'type.googleapis."
            "com/envoy.config.route.v3.FilterConfig','is_optional':true,'config':{'@type':"
            "'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy'}},"
            "'envoy.filters.http.fault':{'@type':'type.googleapis.com/envoy.config.route.v3."
            "FilterConfig','disabled':true}}"),
         {NULL}},
        {VH(",'typed_per_filter_config':{'f':{'@type':'type.googleapis.com/envoy.config."
            "route.v3.FilterConfig','config':{'@type':'type.googleapis.com/envoy.extensions."
            "filters.http.cors.v3.CorsPolicy'}}}"),
         {"rc.virtual_hosts[0].typed_per_filter_config.f.config.@type: \"type.googleapis.com/"
          "envoy.extensions.filters.http.cors.v3.CorsPolicy\" is not the per-route config of an "
          "HTTP filter petrel has"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a'},'typed_per_filter_config':{"
               "'f':{'@type':'type.googleapis.com/envoy.extensions.filters.http.fault.v3."
               "HTTPFault','abort':{'http_status':99,'percentage':{'numerator':100}}}}}"),
         {"rc.virtual_hosts[0].routes[0].typed_per_filter_config.f.abort.http_status: 99 is "
          "out of range [200, 599]"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','retry_policy':{},'priority':'LOW',"
               "'hash_policy':[{'filter_state':{'key':'k'}}]}}"),
         {"rc.virtual_hosts[0].routes[0].route.hash_policy[0].filter_state: is not supported "
          "(petrel keeps no filter state objects to hash)",
          "rc.virtual_hosts[0].routes[0].route.priority: \"LOW\" is not a valid value (expected "
          "one of: DEFAULT, HIGH)"}},
        {ROUTE("{'match':{'prefix':'/','grpc':{}},'route':{'cluster':'a'},'stat_prefix':'s'}"),
         {"rc.virtual_hosts[0].routes[0].match.grpc: field is not supported",
          "rc.virtual_hosts[0].routes[0].stat_prefix: field is not supported"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a'},'decorator':{}}"),
         {"rc.virtual_hosts[0].routes[0].decorator.operation: is required"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a'},'tracing':{'overall_sampling':"
               "{'numerator':1,'denominator':'TEN'}}}"),
         {"rc.virtual_hosts[0].routes[0].tracing.overall_sampling.denominator: \"TEN\" is not "
          "a valid value (expected one of: HUNDRED, TEN_THOUSAND, MILLION)"}},
        {"{'vhds':{},'virtual_hosts':[]}", {"rc.vhds: field is not supported"}},
        {ROUTE("{'match':{'prefix':'/'},'route':{'cluster':'a','clusterr':'b'},'foo':1}"),
         {"rc.virtual_hosts[0].routes[0].route.clusterr: unknown field",
          "rc.virtual_hosts[0].routes[0].foo: unknown field"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_cfg_t r;
        int rds = cases[i].json[0] == '@';
        pt_route_config_t *rc = parse_rc(cases[i].json + rds, &r, rds ? PT_ROUTE_PARSE_RDS : 0);
        const char *want[5] = {cases[i].errs[0], cases[i].errs[1], cases[i].errs[2],
                               cases[i].errs[3], NULL};
        /* The wildcard explanation is long: "x" in the table stands for it. */
        char expanded[4][512];
        for (int k = 0; k < 4 && want[k] != NULL; k++) {
            size_t n = strlen(want[k]);
            if (n > 3 && strcmp(want[k] + n - 3, ": x") == 0) {
                snprintf(expanded[k], sizeof(expanded[k]),
                         "%.*s: a wildcard must be the whole "
                         "domain (\"*\"), a prefix (\"*.example.com\", \"*-suffix.example.com\") "
                         "or a suffix (\"example.*\", \"example-*\")",
                         (int)(n - 3), want[k]);
                want[k] = expanded[k];
            }
        }
        int ok = errors_are(&r, want);
        if (!ok)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK(ok);
        PT_CHECK((rc != NULL) == (want[0] == NULL));
        pt_cfg_dispose(&r);
    }
}

/* ---- scale: 10k virtual hosts ----------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pt_route_config_t *build_many(int n)
{
    json_t *vhosts = json_array();
    for (int i = 0; i < n; i++) {
        char name[32], d1[64], d2[64], d3[64];
        snprintf(name, sizeof(name), "v%d", i);
        snprintf(d1, sizeof(d1), "h%d.example.com", i);
        snprintf(d2, sizeof(d2), "*.w%d.example.com", i);
        snprintf(d3, sizeof(d3), "p%d-*", i);
        json_array_append_new(vhosts, json_pack("{s:s,s:[s,s,s],s:[{s:{s:s},s:{s:s}}]}", "name",
                                                name, "domains", d1, d2, d3, "routes", "match",
                                                "prefix", "/", "route", "cluster", "a"));
    }
    json_t *rcj = json_pack("{s:o}", "virtual_hosts", vhosts);
    pt_cfg_t r;
    pt_route_config_t *rc = parse_rc_tree(rcj, &r, 0);
    for (size_t i = 0; i < r.nerrors && i < 5; i++)
        fprintf(stderr, "  %s\n", r.errors[i]);
    pt_cfg_dispose(&r);
    json_decref(rcj);
    return rc;
}

static double time_lookups(const pt_route_config_t *rc, int n, const char *const *hosts, int nhosts)
{
    volatile uintptr_t sink = 0;
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        sink += (uintptr_t)pt_route_find_vhost(rc, hosts[i % nhosts]);
    (void)sink;
    return now_s() - t0;
}

static void test_many_vhosts(void)
{
    double t0 = now_s();
    pt_route_config_t *big = build_many(10000);
    double build = now_s() - t0;
    pt_route_config_t *small = build_many(10);
    PT_CHECK(big != NULL && small != NULL);
    PT_CHECK_INT(big->nvhosts, 10000);
    PT_CHECK_INT(big->domain_cap >= 2 * 30000, 1);
    static const struct {
        const char *authority, *vhost;
    } cases[] = {
        {"h0.example.com", "v0"},           {"h5000.example.com", "v5000"},
        {"H9999.EXAMPLE.COM:80", "v9999"},  {"x.w1234.example.com", "v1234"},
        {"a.b.w9999.example.com", "v9999"}, {"p42-anything", "v42"},
        {"p4242-x:8080", "v4242"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const pt_vhost_t *vh = pt_route_find_vhost(big, cases[i].authority);
        PT_CHECK(vh != NULL);
        PT_CHECK_STR(vh->name, cases[i].vhost);
    }
    PT_CHECK(pt_route_find_vhost(big, "nothing.here") == NULL);
    PT_CHECK(pt_route_find_vhost(big, "h10000.example.com") == NULL);

    /* Cost must not grow with the number of virtual hosts: the same lookups against 10 and
     * 10000 virtual hosts take about as long (generous bound for noisy machines). */
    static const char *const hosts[] = {"h7.example.com", "x.w3.example.com", "p5-q",
                                        "miss.example.org"};
    int n = 200000;
    time_lookups(small, n / 10, hosts, 4); /* warm up */
    double ts = time_lookups(small, n, hosts, 4);
    double tb = time_lookups(big, n, hosts, 4);
    printf("     10k vhosts: built in %.0f ms; %d lookups: %.1f ns each (10 vhosts: %.1f ns)\n",
           build * 1e3, n, tb / n * 1e9, ts / n * 1e9);
    PT_CHECK(tb < ts * 8 + 0.05);
}

int main(void)
{
    cfg = build_snapshot();
    if (cfg == NULL)
        return 1;
    PT_RUN(test_find_vhost);
    PT_RUN(test_find_vhost_no_default);
    PT_RUN(test_route_match);
    PT_RUN(test_connect_matcher);
    PT_RUN(test_weighted_proportions);
    PT_RUN(test_weighted_boundaries);
    PT_RUN(test_route_action_fields);
    PT_RUN(test_require_tls);
    PT_RUN(test_rewrite_path);
    PT_RUN(test_redirect);
    PT_RUN(test_direct_response);
    PT_RUN(test_mutation_precedence);
    PT_RUN(test_mutation_append_actions);
    PT_RUN(test_mutation_formatter);
    PT_RUN(test_mutation_many);
    PT_RUN(test_config_errors);
    PT_RUN(test_many_vhosts);
    pt_boot_free(cfg);
    PT_TEST_EXIT();
}
