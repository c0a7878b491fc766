/* The cost of one route match (pt_route_match) in a virtual host of many routes, with the
 * virtual host's route index (proxy/route_index.h) and with the plain ordered scan
 * (pt_route_match_scan, what pt_route_match did before the index). bench/route_match_cost.sh
 * runs it under callgrind with --toggle-collect=measured_matches and divides the
 * instructions of that function by the matches it made.
 *
 *   route_match_cost index|scan <shape> <routes> <matches> [path]
 *
 * Shapes, both the shape of bench/xds.py's and bench/reload.py's route configuration:
 *   prefixes  <routes> prefix routes "/c<i>/", then the catch-all prefix "/" last;
 *   regexes   the same, but every tenth route a safe_regex "/c<i>/.*" instead of a prefix
 *             (routes the index cannot hash: they are tried in order ahead of the
 *             candidate).
 * The request is a GET of `path` (default "/steady": the catch-all, last of routes + 1). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/route.h"
#include "proxy/route_index.h"

static int any_cluster(void *data, const char *name)
{
    (void)data;
    (void)name;
    return 1;
}

static pt_route_config_t *make(const char *shape, unsigned n)
{
    json_t *routes = json_array();
    for (unsigned i = 0; i <= n; i++) {
        char name[32], p[32];
        snprintf(name, sizeof(name), "c%u", i);
        json_t *match;
        if (i == n) {
            match = json_pack("{s:s}", "prefix", "/");
        } else if (strcmp(shape, "regexes") == 0 && i % 10 == 9) {
            snprintf(p, sizeof(p), "/c%u/.*", i);
            match = json_pack("{s:{s:s}}", "safe_regex", "regex", p);
        } else {
            snprintf(p, sizeof(p), "/c%u/", i);
            match = json_pack("{s:s}", "prefix", p);
        }
        json_array_append_new(routes, json_pack("{s:s,s:o,s:{s:s}}", "name", name, "match",
                                                match, "route", "cluster", name));
    }
    json_t *rcj = json_pack("{s:s,s:[{s:s,s:[s],s:o}]}", "name", "main", "virtual_hosts",
                            "name", "all", "domains", "*", "routes", routes);
    pt_cfg_t r;
    pt_cfg_init(&r, rcj);
    pt_route_config_t *rc = pt_route_config_parse_resource(&r, any_cluster, NULL);
    pt_cfg_finish(&r);
    if (rc == NULL || !pt_cfg_ok(&r)) {
        for (size_t i = 0; i < r.nerrors; i++)
            fprintf(stderr, "route_match_cost: %s\n", r.errors[i]);
        exit(2);
    }
    pt_cfg_dispose(&r);
    json_decref(rcj);
    return rc;
}

static volatile uintptr_t sink;

/* What callgrind measures (--toggle-collect=measured_matches). */
__attribute__((noinline)) void measured_matches(const pt_vhost_t *vh, const pt_http_headers_t *h,
                                                int scan, unsigned n)
{
    uintptr_t x = 0;
    for (unsigned i = 0; i < n; i++)
        x ^= (uintptr_t)(scan ? pt_route_match_scan(vh, h) : pt_route_match(vh, h));
    sink = x;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6 || (strcmp(argv[1], "index") != 0 && strcmp(argv[1], "scan") != 0) ||
        (strcmp(argv[2], "prefixes") != 0 && strcmp(argv[2], "regexes") != 0)) {
        fprintf(stderr, "usage: route_match_cost index|scan prefixes|regexes <routes> <matches> "
                        "[path]\n");
        return 2;
    }
    int scan = strcmp(argv[1], "scan") == 0;
    unsigned n = (unsigned)atoi(argv[3]), matches = (unsigned)atoi(argv[4]);
    const char *path = argc == 6 ? argv[5] : "/steady";
    pt_route_config_t *rc = make(argv[2], n);
    const pt_vhost_t *vh = &rc->vhosts[0];
    pt_arena_t a = {0};
    pt_http_headers_t h;
    pt_http_headers_init(&h, &a);
    pt_http_headers_add_str(&h, ":method", "GET");
    pt_http_headers_add_str(&h, ":path", path);
    pt_http_headers_add_str(&h, ":authority", "example.com");
    const pt_route_t *rt = pt_route_match(vh, &h), *want = pt_route_match_scan(vh, &h);
    if (rt != want) {
        fprintf(stderr, "route_match_cost: the index and the scan disagree on %s\n", path);
        return 1;
    }
    measured_matches(vh, &h, scan, 0); /* keeps the symbol called once even with 0 matches */
    measured_matches(vh, &h, scan, matches);
    size_t bytes = pt_route_index_bytes(vh->index);
    printf("ok %s %s: %u routes, %s -> %s (route %ld); index %zu bytes (%.1f per route)\n",
           argv[1], argv[2], vh->nroutes, path, rt ? rt->name : "(none)",
           rt ? (long)(rt - vh->routes) : -1L, bytes, (double)bytes / vh->nroutes);
    pt_arena_dispose(&a);
    pt_route_config_unref(rc);
    return 0;
}
