/* Unit tests for proxy/route_index: a virtual host's route index gives exactly the route the
 * ordered scan (pt_route_match_scan, Envoy's first match) gives. Randomised tables mixing
 * routes matched by path alone (prefix, path, either case) with every other kind (regex,
 * path_separated_prefix, connect_matcher, header and query parameter conditions), against
 * random requests; then the cases that matter one by one: a complex route ahead of a simple
 * one wins, case-insensitive keys, a catch-all "/" last of 10,001, duplicate paths, the
 * query string, CONNECT, and when no index is built.
 *
 * Route configurations are parsed as RDS resources (every cluster accepted). */
#include "proxy/route.h"
#include "proxy/route_index.h"
#include "pt_test.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>

static int any_cluster(void *data, const char *name)
{
    (void)data;
    (void)name;
    return 1;
}

/* Parses a RouteConfiguration; NULL (errors printed) when it does not load. */
static pt_route_config_t *load_tree(json_t *rcj)
{
    pt_cfg_t r;
    pt_cfg_init(&r, rcj);
    pt_route_config_t *rc = pt_route_config_parse_resource(&r, any_cluster, NULL);
    pt_cfg_finish(&r);
    for (size_t i = 0; i < r.nerrors; i++)
        fprintf(stderr, "  unexpected error: %s\n", r.errors[i]);
    if (!pt_cfg_ok(&r) && rc != NULL) {
        pt_route_config_unref(rc);
        rc = NULL;
    }
    pt_cfg_dispose(&r);
    return rc;
}

/* One virtual host "*" with these routes (an array, stolen). */
static pt_route_config_t *load_routes(json_t *routes)
{
    json_t *rcj = json_pack("{s:s,s:[{s:s,s:[s],s:o}]}", "name", "t", "virtual_hosts", "name", "v",
                            "domains", "*", "routes", routes);
    pt_route_config_t *rc = load_tree(rcj);
    json_decref(rcj);
    return rc;
}

/* A route named `name` with this match (stolen) sent to cluster a. */
static json_t *route(const char *name, json_t *match)
{
    return json_pack("{s:s,s:o,s:{s:s}}", "name", name, "match", match, "route", "cluster", "a");
}

static json_t *connect_route(const char *name)
{
    return json_pack("{s:s,s:{s:{}},s:{s:s,s:[{s:s,s:{}}]}}", "name", name, "match",
                     "connect_matcher", "route", "cluster", "a", "upgrade_configs", "upgrade_type",
                     "CONNECT", "connect_config");
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
        pt_http_headers_add_str(h, n, va_arg(ap, const char *));
    }
    va_end(ap);
    return h;
}

/* The name of the route a GET of `path` (and x-h: 1 when hdr) matches, by the index; ""
 * when none. Checks that the scan agrees. */
static int disagreements;
static const char *match_name(const pt_vhost_t *vh, const char *path, int hdr)
{
    static char name[64];
    pt_arena_t a = {0};
    pt_http_headers_t *h = hdr ? H(&a, ":method", "GET", ":path", path, "x-h", "1", NULL)
                               : H(&a, ":method", "GET", ":path", path, NULL);
    const pt_route_t *rt = pt_route_match(vh, h), *want = pt_route_match_scan(vh, h);
    if (rt != want) {
        fprintf(stderr, "  %s: index %s, scan %s\n", path, rt ? rt->name : "(none)",
                want ? want->name : "(none)");
        disagreements++;
    }
    snprintf(name, sizeof(name), "%s", rt ? rt->name : "");
    pt_arena_dispose(&a);
    return name;
}

/* ---- randomised tables against the scan -------------------------------------------- */

static uint64_t rng_state = 0x5eed;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static unsigned below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

/* A short path over a small alphabet, so that routes share prefixes, differ only in case,
 * and requests hit them often. */
static void random_path(char *out, size_t cap, const char *alphabet, unsigned maxlen)
{
    size_t n = 0, na = strlen(alphabet);
    if (below(4) != 0)
        out[n++] = '/';
    unsigned len = below(maxlen + 1);
    for (unsigned i = 0; i < len && n + 1 < cap; i++)
        out[n++] = alphabet[below((unsigned)na)];
    out[n] = '\0';
}

static json_t *random_route(unsigned i)
{
    char name[16], p[16];
    snprintf(name, sizeof(name), "r%u", i);
    random_path(p, sizeof(p), "aAbB/?", 4);
    static const char *const regexes[] = {"/a.*", "/[aA]b?", ".*b", "/a/.*", "/"};
    switch (below(12)) {
    case 0:
    case 1:
    case 2:
        return route(name, json_pack("{s:s}", "prefix", p));
    case 3:
        return route(name, json_pack("{s:s,s:b}", "prefix", p, "case_sensitive", 0));
    case 4:
    case 5:
        return route(name, json_pack("{s:s}", "path", p));
    case 6:
        return route(name, json_pack("{s:s,s:b}", "path", p, "case_sensitive", 0));
    case 7:
        return route(name, json_pack("{s:{s:s}}", "safe_regex", "regex", regexes[below(5)]));
    case 8: {
        /* Envoy's rule for it: at least 2 characters, no '?' or '#', no trailing '/'. */
        random_path(p, sizeof(p), "aAb", 3);
        if (strlen(p) < 2 || p[strlen(p) - 1] == '/')
            snprintf(p, sizeof(p), "/a");
        return route(name, json_pack("{s:s,s:b}", "path_separated_prefix", p, "case_sensitive",
                                     (int)below(2)));
    }
    case 9:
        return route(name, json_pack("{s:s,s:[{s:s,s:b}]}", "prefix", p, "headers", "name", "x-h",
                                     "present_match", 1));
    case 10:
        return route(name, json_pack("{s:s,s:[{s:s,s:b}]}", "path", p, "query_parameters", "name",
                                     "q", "present_match", 1));
    default:
        return below(3) == 0 ? connect_route(name)
                             : route(name, json_pack("{s:s}", "prefix", below(2) ? "/" : ""));
    }
}

static void test_random_tables(void)
{
    unsigned tables = 0, requests = 0, indexed = 0;
    for (unsigned t = 0; t < 300; t++) {
        unsigned n = t % 10 == 9 ? 200 + below(800) : 8 + below(60);
        json_t *routes = json_array();
        for (unsigned i = 0; i < n; i++)
            json_array_append_new(routes, random_route(i));
        pt_route_config_t *rc = load_routes(routes);
        PT_CHECK(rc != NULL);
        const pt_vhost_t *vh = &rc->vhosts[0];
        PT_CHECK_INT(vh->nroutes, n);
        indexed += vh->index != NULL;
        if (n < PT_ROUTE_INDEX_MIN_ROUTES)
            PT_CHECK(vh->index == NULL);
        for (unsigned k = 0; k < 400; k++) {
            pt_arena_t a = {0};
            char path[32];
            if (below(3) == 0) {
                /* A route's own path, with something after it half the time. */
                const pt_route_t *rt = &vh->routes[below(n)];
                snprintf(path, sizeof(path), "%s", rt->match.path ? rt->match.path : "/a");
                if (below(2))
                    random_path(path + strlen(path), sizeof(path) - strlen(path), "aAbB/?#q=", 4);
            } else {
                random_path(path, sizeof(path), "aAbB/?#q=", 8);
            }
            pt_http_headers_t *h;
            unsigned kind = below(10);
            if (kind == 0)
                h = H(&a, ":method", "CONNECT", ":authority", "h:443", NULL);
            else if (kind < 5)
                h = H(&a, ":method", "GET", ":path", path, "x-h", "1", NULL);
            else
                h = H(&a, ":method", "GET", ":path", path, NULL);
            const pt_route_t *got = pt_route_match(vh, h), *want = pt_route_match_scan(vh, h);
            if (got != want)
                fprintf(stderr, "  table %u (%u routes), request %s: index %s, scan %s\n", t, n,
                        kind == 0 ? "CONNECT" : path, got ? got->name : "(none)",
                        want ? want->name : "(none)");
            pt_arena_dispose(&a);
            requests++;
            PT_CHECK(got == want);
        }
        pt_route_config_unref(rc);
        tables++;
    }
    printf("     %u tables (%u indexed), %u requests: index and scan agree\n", tables, indexed,
           requests);
    PT_CHECK(indexed > tables / 2); /* the comparison is about the index, mostly */
}

/* ---- targeted cases ------------------------------------------------------------------- */

/* n filler routes "/fN/" (simple), then the given ones. */
static json_t *filler(unsigned n)
{
    json_t *routes = json_array();
    for (unsigned i = 0; i < n; i++) {
        char name[16], p[16];
        snprintf(name, sizeof(name), "f%u", i);
        snprintf(p, sizeof(p), "/f%u/", i);
        json_array_append_new(routes, route(name, json_pack("{s:s}", "prefix", p)));
    }
    return routes;
}

/* A regex, or a header condition, ahead of a simple route that also accepts the path:
 * the earlier one wins; when it does not accept, the simple one. */
static void test_shadowing(void)
{
    json_t *routes = filler(20);
    json_array_append_new(routes,
                          route("regex", json_pack("{s:{s:s}}", "safe_regex", "regex", "/api/.*")));
    json_array_append_new(routes,
                          route("hdr", json_pack("{s:s,s:[{s:s,s:s}]}", "prefix", "/web", "headers",
                                                 "name", "x-h", "exact_match", "1")));
    json_array_append_new(routes, route("api", json_pack("{s:s}", "prefix", "/api")));
    json_array_append_new(routes, route("web", json_pack("{s:s}", "prefix", "/web")));
    json_array_append_new(
        routes, route("late_regex", json_pack("{s:{s:s}}", "safe_regex", "regex", "/w.*")));
    pt_route_config_t *rc = load_routes(routes);
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = &rc->vhosts[0];
    PT_CHECK(vh->index != NULL);
    disagreements = 0;
    PT_CHECK_STR(match_name(vh, "/api/x", 0), "regex");
    PT_CHECK_STR(match_name(vh, "/api", 0), "api"); /* the regex wants "/api/..." */
    PT_CHECK_STR(match_name(vh, "/web/x", 1), "hdr");
    PT_CHECK_STR(match_name(vh, "/web/x", 0), "web");
    PT_CHECK_STR(match_name(vh, "/wx", 0), "late_regex"); /* no simple candidate */
    PT_CHECK_STR(match_name(vh, "/f7/a", 1), "f7");
    PT_CHECK_STR(match_name(vh, "/f7", 1), "");
    PT_CHECK_INT(disagreements, 0);
    pt_route_config_unref(rc);
}

static void test_case_insensitive(void)
{
    json_t *routes = filler(16);
    json_array_append_new(routes, route("cs", json_pack("{s:s}", "prefix", "/CS/")));
    json_array_append_new(
        routes, route("ci", json_pack("{s:s,s:b}", "prefix", "/Ci/", "case_sensitive", 0)));
    json_array_append_new(
        routes, route("exact_ci", json_pack("{s:s,s:b}", "path", "/Exact", "case_sensitive", 0)));
    json_array_append_new(routes, route("exact_cs", json_pack("{s:s}", "path", "/Exact2")));
    pt_route_config_t *rc = load_routes(routes);
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = &rc->vhosts[0];
    PT_CHECK(vh->index != NULL);
    disagreements = 0;
    PT_CHECK_STR(match_name(vh, "/CS/x", 0), "cs");
    PT_CHECK_STR(match_name(vh, "/cs/x", 0), "");
    PT_CHECK_STR(match_name(vh, "/ci/x", 0), "ci");
    PT_CHECK_STR(match_name(vh, "/CI/x", 0), "ci");
    PT_CHECK_STR(match_name(vh, "/cI/", 0), "ci");
    PT_CHECK_STR(match_name(vh, "/EXACT", 0), "exact_ci");
    PT_CHECK_STR(match_name(vh, "/exact?x=1", 0), "exact_ci");
    PT_CHECK_STR(match_name(vh, "/exact/", 0), "");
    PT_CHECK_STR(match_name(vh, "/Exact2", 0), "exact_cs");
    PT_CHECK_STR(match_name(vh, "/exact2", 0), "");
    PT_CHECK_STR(match_name(vh, "/F3/", 0), ""); /* the fillers are case-sensitive */
    PT_CHECK_INT(disagreements, 0);
    pt_route_config_unref(rc);
}

/* The bench's shape: 10,000 prefixes and "/" last. */
static void test_catch_all_last(void)
{
    enum { N = 10000 };
    json_t *routes = json_array();
    for (unsigned i = 0; i < N; i++) {
        char name[16], p[16];
        snprintf(name, sizeof(name), "c%u", i);
        snprintf(p, sizeof(p), "/c%u/", i);
        json_array_append_new(routes, route(name, json_pack("{s:s}", "prefix", p)));
    }
    json_array_append_new(routes, route("steady", json_pack("{s:s}", "prefix", "/")));
    pt_route_config_t *rc = load_routes(routes);
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = &rc->vhosts[0];
    PT_CHECK(vh->index != NULL);
    disagreements = 0;
    PT_CHECK_STR(match_name(vh, "/steady", 0), "steady");
    PT_CHECK_STR(match_name(vh, "/c42/x", 0), "c42");
    PT_CHECK_STR(match_name(vh, "/c42", 0), "steady");
    PT_CHECK_STR(match_name(vh, "/c9999/", 0), "c9999");
    PT_CHECK_STR(match_name(vh, "/c10000/", 0), "steady");
    PT_CHECK_STR(match_name(vh, "", 0), "");
    PT_CHECK_STR(match_name(vh, "*", 0), "");
    PT_CHECK_INT(disagreements, 0);
    size_t bytes = pt_route_index_bytes(vh->index);
    printf("     index of %u routes: %zu bytes, %.1f per route\n", N + 1, bytes,
           (double)bytes / (N + 1));
    PT_CHECK(bytes < 24 * (N + 1)); /* 16,384 slots of 8 bytes for 10,001 keys */
    pt_route_config_unref(rc);
}

/* The same key twice: the first route has it. Across cases, the earlier one still wins. */
static void test_duplicates(void)
{
    json_t *routes = filler(16);
    json_array_append_new(routes, route("p1", json_pack("{s:s}", "prefix", "/dup")));
    json_array_append_new(routes, route("p2", json_pack("{s:s}", "prefix", "/dup")));
    json_array_append_new(routes, route("e1", json_pack("{s:s}", "path", "/e")));
    json_array_append_new(routes, route("e2", json_pack("{s:s}", "path", "/e")));
    json_array_append_new(routes, route("cs_upper", json_pack("{s:s}", "prefix", "/D/")));
    json_array_append_new(
        routes, route("ci1", json_pack("{s:s,s:b}", "prefix", "/d/", "case_sensitive", 0)));
    json_array_append_new(
        routes, route("ci2", json_pack("{s:s,s:b}", "prefix", "/D/", "case_sensitive", 0)));
    json_array_append_new(routes, route("f3_again", json_pack("{s:s}", "prefix", "/f3/")));
    pt_route_config_t *rc = load_routes(routes);
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = &rc->vhosts[0];
    disagreements = 0;
    PT_CHECK_STR(match_name(vh, "/dup/x", 0), "p1");
    PT_CHECK_STR(match_name(vh, "/e", 0), "e1");
    PT_CHECK_STR(match_name(vh, "/D/x", 0), "cs_upper");
    PT_CHECK_STR(match_name(vh, "/d/x", 0), "ci1");
    PT_CHECK_STR(match_name(vh, "/f3/x", 0), "f3");
    PT_CHECK_INT(disagreements, 0);
    pt_route_config_unref(rc);
}

/* Prefixes see the query string and fragment; exact paths do not. A shorter prefix earlier
 * beats a longer one later; an empty prefix accepts everything. */
static void test_query_and_order(void)
{
    json_t *routes = filler(16);
    json_array_append_new(routes, route("pq", json_pack("{s:s}", "prefix", "/pq?x")));
    json_array_append_new(routes, route("ex", json_pack("{s:s}", "path", "/ex")));
    json_array_append_new(routes, route("ex_q", json_pack("{s:s}", "path", "/ex?y")));
    json_array_append_new(routes, route("short", json_pack("{s:s}", "prefix", "/s")));
    json_array_append_new(routes, route("long", json_pack("{s:s}", "prefix", "/s/long")));
    json_array_append_new(routes, route("empty", json_pack("{s:s}", "prefix", "")));
    pt_route_config_t *rc = load_routes(routes);
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = &rc->vhosts[0];
    disagreements = 0;
    PT_CHECK_STR(match_name(vh, "/pq?x=1", 0), "pq");
    PT_CHECK_STR(match_name(vh, "/pq?y=1", 0), "empty");
    PT_CHECK_STR(match_name(vh, "/ex?y", 0), "ex");
    PT_CHECK_STR(match_name(vh, "/ex#frag", 0), "ex");
    PT_CHECK_STR(match_name(vh, "/ex/", 0), "empty");
    PT_CHECK_STR(match_name(vh, "/s/long/x", 0), "short");
    PT_CHECK_STR(match_name(vh, "x", 0), "empty");
    PT_CHECK_INT(disagreements, 0);
    pt_route_config_unref(rc);
}

/* CONNECT requests match only connect_matcher routes, wherever they are; no :path and not
 * CONNECT: no route. */
static void test_connect(void)
{
    json_t *routes = filler(16);
    json_array_append_new(routes, route("all", json_pack("{s:s}", "prefix", "/")));
    json_array_append_new(routes, connect_route("tunnel"));
    pt_route_config_t *rc = load_routes(routes);
    PT_CHECK(rc != NULL);
    const pt_vhost_t *vh = &rc->vhosts[0];
    PT_CHECK(vh->index != NULL);
    pt_arena_t a = {0};
    const pt_route_t *rt =
        pt_route_match(vh, H(&a, ":method", "CONNECT", ":authority", "h:1", NULL));
    PT_CHECK(rt != NULL && strcmp(rt->name, "tunnel") == 0);
    PT_CHECK(pt_route_match(vh, H(&a, ":method", "GET", NULL)) == NULL);
    rt = pt_route_match(vh, H(&a, ":method", "CONNECT", ":path", "/x", NULL));
    PT_CHECK(rt != NULL && strcmp(rt->name, "all") == 0); /* with a :path: by its path */
    pt_arena_dispose(&a);
    pt_route_config_unref(rc);
}

/* Small virtual hosts, and ones with no route matched by path alone, are scanned. */
static void test_when_built(void)
{
    pt_route_config_t *rc = load_routes(filler(PT_ROUTE_INDEX_MIN_ROUTES - 1));
    PT_CHECK(rc != NULL);
    PT_CHECK(rc->vhosts[0].index == NULL);
    pt_route_config_unref(rc);
    rc = load_routes(filler(PT_ROUTE_INDEX_MIN_ROUTES));
    PT_CHECK(rc != NULL);
    PT_CHECK(rc->vhosts[0].index != NULL);
    pt_route_config_unref(rc);
    json_t *routes = json_array();
    for (unsigned i = 0; i < 40; i++)
        json_array_append_new(routes,
                              route("re", json_pack("{s:{s:s}}", "safe_regex", "regex", "/x.*")));
    rc = load_routes(routes);
    PT_CHECK(rc != NULL);
    PT_CHECK(rc->vhosts[0].index == NULL);
    pt_route_config_unref(rc);
    /* A prefix longer than the index takes is left to the ordered list, and still matches. */
    char longp[PT_ROUTE_INDEX_MAX_PATH + 3];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    routes = filler(16);
    json_array_append_new(routes, route("long", json_pack("{s:s}", "prefix", longp)));
    json_array_append_new(routes, route("short", json_pack("{s:s}", "prefix", "/a")));
    rc = load_routes(routes);
    PT_CHECK(rc != NULL);
    disagreements = 0;
    PT_CHECK_STR(match_name(&rc->vhosts[0], longp, 0), "long");
    PT_CHECK_STR(match_name(&rc->vhosts[0], "/aa", 0), "short");
    PT_CHECK_INT(disagreements, 0);
    pt_route_config_unref(rc);
}

int main(void)
{
    PT_RUN(test_random_tables);
    PT_RUN(test_shadowing);
    PT_RUN(test_case_insensitive);
    PT_RUN(test_catch_all_last);
    PT_RUN(test_duplicates);
    PT_RUN(test_query_and_order);
    PT_RUN(test_connect);
    PT_RUN(test_when_built);
    PT_TEST_EXIT();
}
