/* Routing tables: envoy.config.route.v3.RouteConfiguration, its virtual hosts and routes,
 * and everything the connection manager and router ask of them per request.
 *
 * A route config is parsed once into the arena of the config snapshot that owns it, with
 * every matcher precompiled (regexes, string matchers, header-value formats) and every
 * referenced cluster checked. Per request:
 *   vh = pt_route_find_vhost(rc, authority)      O(1) for exact domains (hash table), then
 *                                                 one hash probe per distinct wildcard length
 *   rt = pt_route_match(vh, headers)              first route whose match accepts; with
 *                                                 16 routes or more, the routes matched by
 *                                                 path alone are hashed (route_index.h)
 *   then the action: forward (pick a cluster, rewrite the path, mutate headers), redirect
 *   (pt_route_redirect) or direct response (status and body from the struct).
 * The lookup functions take no lock and allocate only from the request's arena (the header
 * map's), so workers call them on the hot path. Envoy's semantics throughout; the
 * differences are listed in docs/routing.md. */
#ifndef PT_ROUTE_H
#define PT_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config.h"
#include "proxy/config_reader.h"
#include "proxy/header_mutation.h"
#include "proxy/http.h"
#include "proxy/matcher.h"

typedef struct pt_format pt_format_t;
typedef struct pt_retry_policy pt_retry_policy_t;
typedef struct pt_route_config pt_route_config_t;
typedef struct pt_vhost pt_vhost_t;
typedef struct pt_route pt_route_t;

/* idle_timeout_ms when the route does not set one (the connection manager's applies). */
#define PT_ROUTE_TIMEOUT_UNSET UINT64_MAX

/* ---- route match --------------------------------------------------------------------- */

typedef struct pt_query_matcher {
    const char *name;
    size_t name_len;
    int has_string_match; /* else: the parameter must be present */
    pt_string_matcher_t string;
} pt_query_matcher_t;

typedef enum pt_path_match_kind {
    PT_PATH_PREFIX,           /* prefix: the beginning of :path (query string included) */
    PT_PATH_EXACT,            /* path: all of :path without the query string */
    PT_PATH_REGEX,            /* safe_regex: full match of :path without the query string */
    PT_PATH_SEPARATED_PREFIX, /* path_separated_prefix: prefix ending at '/', '?' or the end */
    PT_PATH_CONNECT,          /* connect_matcher: CONNECT requests (no :path), and only them */
} pt_path_match_kind_t;

typedef struct pt_route_match_spec {
    pt_path_match_kind_t kind;
    const char *path; /* prefix or path; NULL for regex */
    size_t path_len;
    const pt_regex_t *regex;
    int case_sensitive; /* prefix/path only; regexes are always case-sensitive (as Envoy) */
    const pt_header_matcher_t *headers;
    unsigned nheaders;
    const pt_query_matcher_t *query;
    unsigned nquery;
} pt_route_match_spec_t;

/* ---- route actions ------------------------------------------------------------------- */

typedef enum pt_route_action {
    PT_ROUTE_ACTION_ROUTE, /* forward upstream */
    PT_ROUTE_ACTION_REDIRECT,
    PT_ROUTE_ACTION_DIRECT_RESPONSE,
} pt_route_action_t;

typedef enum pt_route_cluster_kind {
    PT_ROUTE_CLUSTER_NAME,     /* cluster */
    PT_ROUTE_CLUSTER_WEIGHTED, /* weighted_clusters */
    PT_ROUTE_CLUSTER_HEADER,   /* cluster_header: the cluster is named by a request header */
} pt_route_cluster_kind_t;

typedef struct pt_weighted_cluster {
    const char *name;
    uint32_t weight;
    uint64_t range_end; /* cumulative weight through this entry: picked when r < range_end */
    const char *host_rewrite_literal; /* or NULL */
    pt_header_mutations_t request_headers, response_headers;
} pt_weighted_cluster_t;

typedef struct pt_upgrade_config {
    const char *upgrade_type; /* lowercase ("websocket") */
    int enabled;
    int connect_config; /* route, "connect": terminate CONNECT (a TCP tunnel to the cluster) */
} pt_upgrade_config_t;

/* prefix_rewrite / regex_rewrite, of a route action or of a redirect. */
typedef struct pt_path_rewrite {
    const char *prefix;      /* prefix_rewrite, or NULL */
    const pt_regex_t *regex; /* regex_rewrite.pattern, or NULL */
    const char *substitution;
} pt_path_rewrite_t;

/* RouteAction.HashPolicy: what a request's hash for RING_HASH and MAGLEV is made of. */
typedef enum pt_hash_policy_kind {
    PT_HASH_POLICY_HEADER,      /* header: the values of a request header */
    PT_HASH_POLICY_COOKIE,      /* cookie: a cookie's value, generated with a ttl */
    PT_HASH_POLICY_SOURCE_IP,   /* connection_properties.source_ip: the client's address */
    PT_HASH_POLICY_QUERY_PARAM, /* query_parameter: a query parameter's first value */
} pt_hash_policy_kind_t;

typedef struct pt_cookie_attribute {
    const char *name, *value; /* value "" for a bare attribute */
} pt_cookie_attribute_t;

/* typed_per_filter_config: per HTTP filter name, its per-route config and whether the filter
 * runs (Envoy's envoy.config.route.v3.FilterConfig {disabled, config}; a bare config enables
 * the filter too). */
typedef struct pt_per_filter_config {
    const char *name;   /* the filter's name in the connection manager's http_filters */
    const void *config; /* parsed by the filter's parse_per_route, or NULL (none given) */
    int disabled;
} pt_per_filter_config_t;

typedef struct pt_per_filter_configs {
    const pt_per_filter_config_t *v;
    unsigned n;
} pt_per_filter_configs_t;

typedef struct pt_hash_policy {
    pt_hash_policy_kind_t kind;
    int terminal;                 /* a hash from this one ends the list */
    const char *name;             /* header (lowercase), cookie or parameter name */
    size_t name_len;
    const pt_regex_t *regex;      /* header: regex_rewrite.pattern, or NULL */
    const char *substitution;
    int has_ttl;                  /* cookie: a ttl was given: a missing cookie is made */
    uint64_t ttl_s;
    const char *path;             /* cookie: its Path, or NULL */
    const pt_cookie_attribute_t *attributes;
    unsigned nattributes;
} pt_hash_policy_t;

typedef struct pt_redirect {
    int https_redirect;
    const char *scheme_redirect; /* or NULL */
    const char *host_redirect;   /* or NULL */
    uint32_t port_redirect;      /* 0 = keep */
    const char *path_redirect;   /* or NULL */
    int path_redirect_has_query; /* path_redirect has a query: it wins, strip_query ignored */
    int strip_query;
    int response_code; /* 301 (default), 302, 303, 307, 308 */
} pt_redirect_t;

struct pt_route {
    pt_per_filter_configs_t per_filter; /* typed_per_filter_config */
    const char *name; /* "" when unnamed */
    const struct pt_metadata *metadata; /* Route.metadata (%ROUTE_METADATA%), or NULL */
    const pt_vhost_t *vhost;
    pt_route_match_spec_t match;
    pt_route_action_t action;

    /* PT_ROUTE_ACTION_ROUTE */
    pt_route_cluster_kind_t cluster_kind;
    const char *cluster;                   /* PT_ROUTE_CLUSTER_NAME */
    const char *cluster_header;            /* PT_ROUTE_CLUSTER_HEADER, lowercase */
    const pt_weighted_cluster_t *weighted; /* PT_ROUTE_CLUSTER_WEIGHTED */
    unsigned nweighted;
    uint64_t total_weight;
    const char *host_rewrite_literal; /* or NULL */
    int auto_host_rewrite;
    uint64_t timeout_ms;      /* 15000 by default; 0 = no timeout */
    /* gRPC requests (max_grpc_timeout set): their grpc-timeout, less grpc_timeout_offset,
     * capped at max_grpc_timeout (0: no cap), is their timeout instead of timeout_ms. */
    int has_max_grpc_timeout;
    uint64_t max_grpc_timeout_ms, grpc_timeout_offset_ms;
    int cluster_not_found_status; /* cluster_not_found_response_code: 503, 404 or 500 */
    uint64_t idle_timeout_ms; /* PT_ROUTE_TIMEOUT_UNSET, 0 = disabled, or a value */
    const pt_upgrade_config_t *upgrades;
    unsigned nupgrades;

    /* PT_ROUTE_ACTION_ROUTE and PT_ROUTE_ACTION_REDIRECT */
    pt_path_rewrite_t rewrite;

    /* PT_ROUTE_ACTION_REDIRECT */
    pt_redirect_t redirect;

    /* PT_ROUTE_ACTION_DIRECT_RESPONSE */
    int direct_status;
    const char *direct_body; /* NULL when none; may hold NUL bytes (inline_bytes) */
    size_t direct_body_len;
    const struct pt_format *direct_format; /* body_format, or NULL */
    const char *direct_content_type;      /* with body_format: its content type */

    pt_header_mutations_t request_headers, response_headers;

    /* Resilience (PT_ROUTE_ACTION_ROUTE): the route's retry policy or its virtual host's. */
    const pt_retry_policy_t *retry_policy;
    int priority;                      /* 0 DEFAULT, 1 HIGH: which circuit breakers apply */
    uint32_t per_request_buffer_limit; /* body kept for retries; 0 = the listener's limit */

    /* hash_policy (PT_ROUTE_ACTION_ROUTE), in order. */
    const pt_hash_policy_t *hash_policies;
    unsigned nhash_policies;

    /* decorator and tracing (proxy/tracing.h), or NULL */
    const struct pt_route_tracing *tracing;
};

/* ---- virtual hosts and the route config -------------------------------------------- */

typedef enum pt_require_tls {
    PT_REQUIRE_TLS_NONE,
    PT_REQUIRE_TLS_EXTERNAL_ONLY,
    PT_REQUIRE_TLS_ALL,
} pt_require_tls_t;

struct pt_vhost {
    pt_per_filter_configs_t per_filter; /* typed_per_filter_config */
    const char *name;
    const struct pt_metadata *metadata; /* VirtualHost.metadata, or NULL */
    const char *const *domains; /* lowercase, as configured */
    unsigned ndomains;
    pt_require_tls_t require_tls;
    const pt_route_t *routes;
    unsigned nroutes;
    /* The routes' index (proxy/route_index.h), built at parse time; NULL: pt_route_match
     * scans them (few routes, or none matched by path alone). */
    const struct pt_route_index *index;
    pt_header_mutations_t request_headers, response_headers;
    const pt_retry_policy_t *retry_policy;
    uint32_t per_request_buffer_limit;
    int include_request_attempt_count;     /* x-envoy-attempt-count upstream */
    int include_attempt_count_in_response; /* ... and downstream */
};

/* Private to route.c: one hashed domain (exact, or a wildcard's fixed part). */
typedef struct pt_route_domain pt_route_domain_t;

struct pt_route_config {
    /* A route configuration from RDS is a resource of its own: refcounted, in its own arena
     * (own_arena). One inline in an HTTP connection manager lives in its snapshot's arena
     * (own_arena NULL; ref and unref do nothing). */
    _Atomic long refs;
    pt_arena_t *own_arena;
    const char *name; /* "" when unnamed */
    const struct pt_metadata *metadata; /* RouteConfiguration.metadata, or NULL */
    pt_per_filter_configs_t per_filter; /* typed_per_filter_config */
    int has_per_filter; /* any level of it has typed_per_filter_config */
    const pt_vhost_t *vhosts;
    unsigned nvhosts;
    pt_header_mutations_t request_headers, response_headers;
    int validate_clusters;
    int most_specific_header_mutations_wins;
    int ignore_port_in_host_matching;
    uint32_t max_direct_response_body_size;
    /* Domain index (route.c): open-addressing table of exact domains and wildcard parts,
     * and the distinct wildcard lengths, longest first, so a lookup probes once per
     * length instead of scanning virtual hosts. */
    const pt_route_domain_t *domain_table;
    uint32_t domain_cap;
    const uint16_t *suffix_lens;
    unsigned nsuffix_lens;
    const uint16_t *prefix_lens;
    unsigned nprefix_lens;
    const pt_vhost_t *default_vhost; /* domain "*" */
};

/* Parse flags. */
enum pt_route_parse_flags {
    /* The config came from RDS: validate_clusters defaults to false (clusters may arrive
     * later), as in Envoy. Inline configs validate by default. */
    PT_ROUTE_PARSE_RDS = 1u << 0,
};

/* Parses the RouteConfiguration the reader is positioned in, into cfg's arena. Cluster
 * names are checked against the clusters cfg is built with when validate_clusters is on. NULL when any
 * error was found (all of them are in r). */
pt_route_config_t *pt_route_config_parse(pt_cfg_t *r, pt_config_t *cfg);
pt_route_config_t *pt_route_config_parse_ex(pt_cfg_t *r, pt_config_t *cfg, unsigned flags);
/* A RouteConfiguration resource (RDS) in an arena of its own, with one reference.
 * validate_clusters defaults to false, as Envoy's for RDS; when the resource turns it on,
 * cluster names are checked with exists(data, name). NULL when any error was found. */
pt_route_config_t *pt_route_config_parse_resource(pt_cfg_t *r, pt_cluster_exists_fn exists,
                                                  void *data);
pt_route_config_t *pt_route_config_ref(pt_route_config_t *rc);
void pt_route_config_unref(pt_route_config_t *rc);

/* Virtual host for an :authority, in Envoy's order: exact domain (hashed), longest suffix
 * wildcard ("*.foo.com"), longest prefix wildcard ("foo.*"), then "*". Case-insensitive. If
 * nothing matches the authority with its port, the port is stripped and the lookup retried
 * before falling back to "*" (with ignore_port_in_host_matching the port is stripped
 * first). NULL when nothing matches: 404. */
const pt_vhost_t *pt_route_find_vhost(const pt_route_config_t *rc, const char *authority);

/* First route of vh whose match accepts the request (:path, headers, query string). NULL =
 * no route (404). Allocates only from req->arena, and only when a header has several
 * values or a long query parameter must be decoded. With vh->index, the routes matched by
 * path alone are looked up by hash and only the others ahead of the best of them are
 * tried: the same route as the scan, at a cost that does not grow with the routes. */
const pt_route_t *pt_route_match(const pt_vhost_t *vh, const pt_http_headers_t *req);
/* The definition pt_route_match must agree with: every route tried in order, no index. For
 * tests and benches. */
const pt_route_t *pt_route_match_scan(const pt_vhost_t *vh, const pt_http_headers_t *req);

/* Cluster for a forwarding route: the route's cluster, or for weighted clusters the entry
 * `random` (uniform 64-bit) falls in, in proportion to the weights (an entry of weight 0 is
 * never picked); *weighted_entry_out is that pt_weighted_cluster_t (NULL otherwise; the
 * pointer may be NULL). NULL for cluster_header routes (use pt_route_cluster_for_request)
 * and for non-forwarding routes. */
const char *pt_route_pick_cluster(const pt_route_t *rt, uint64_t random,
                                  const void **weighted_entry_out);
/* Same, also resolving cluster_header from the request (NULL when the header is absent). */
const char *pt_route_cluster_for_request(const pt_route_t *rt, const pt_http_headers_t *req,
                                         uint64_t random, const void **weighted_entry_out);

/* A cookie policy with a ttl found no cookie: the callback makes one (its value, which the
 * request is hashed by) and has it set on the response. NULL out of memory: no hash. */
typedef const char *(*pt_route_cookie_fn)(void *data, const pt_hash_policy_t *p);

/* The request's hash from the route's hash_policy, as Envoy computes it: each policy that
 * yields a hash is folded in (pt_hash_combine) until one marked terminal did. `client` is the
 * downstream remote address (source_ip), may be NULL. 1 with *out set, or 0 when no policy
 * yielded one (the balancer then picks at random). */
int pt_route_hash(const pt_route_t *rt, const pt_http_headers_t *req, const pt_addr_t *client,
                  pt_route_cookie_fn add_cookie, void *data, uint64_t *out);
/* Envoy's generated cookie value: xxHash64 of the connection's remote then local address
 * ("10.0.0.1:5000" "10.0.0.2:80"), as 16 lowercase hex digits. */
void pt_route_cookie_value(const pt_addr_t *remote, const pt_addr_t *local, char out[17]);
/* The Set-Cookie value for cookie policy p with this value (Envoy's: name="value";
 * Max-Age=ttl; Path=path; attributes; HttpOnly), in a; NULL out of memory. */
const char *pt_route_set_cookie(const pt_hash_policy_t *p, const char *value, pt_arena_t *a);

/* Applies prefix_rewrite or regex_rewrite (of a forwarding or a redirect route) to path,
 * keeping the query string. Returns the new path in a, or NULL when the route has no path
 * rewrite (or on out-of-memory). */
const char *pt_route_rewrite_path(const pt_route_t *rt, const char *path, pt_arena_t *a);

/* Builds the Location of a redirect route for the request, which came on `scheme` ("http"
 * or "https"), into a. Returns the status code (301, 302, 303, 307, 308), or -1 when rt is
 * not a redirect route or memory ran out. */
int pt_route_redirect(const pt_route_t *rt, const pt_http_headers_t *req, const char *scheme,
                      pt_arena_t *a, const char **location);

/* require_tls: when the virtual host requires TLS of this request (not TLS, and external or
 * ALL), sets *location to "https://<authority><path>" in a and returns 301, as Envoy does;
 * else returns 0. `internal` is whether the request is internal (x-envoy-internal). */
int pt_vhost_tls_redirect(const pt_vhost_t *vh, const pt_http_headers_t *req, int is_tls,
                          int internal, pt_arena_t *a, const char **location);

/* Applies the headers_to_add/remove of the weighted cluster entry (may be NULL), the route,
 * the virtual host and the route config to h, in Envoy's order: the entry first, then route,
 * virtual host, route config (most_specific_header_mutations_wins reverses these three, so
 * the route's values win). Each level removes, then renders every value (formatters see the
 * headers as they were before the level's additions), overwrites, then appends. Values are
 * rendered with si (may be NULL) into h->arena. */
void pt_route_mutate_request_headers(const pt_route_config_t *rc, const pt_vhost_t *vh,
                                     const pt_route_t *rt, const void *weighted_entry,
                                     pt_http_headers_t *h, const pt_stream_info_t *si);
void pt_route_mutate_response_headers(const pt_route_config_t *rc, const pt_vhost_t *vh,
                                      const pt_route_t *rt, const void *weighted_entry,
                                      pt_http_headers_t *h, const pt_stream_info_t *si);

const char *pt_require_tls_str(pt_require_tls_t t);
const char *pt_route_action_str(pt_route_action_t a);

/* The most specific typed_per_filter_config entry for the HTTP filter `name`: the route's,
 * else its virtual host's, else the route configuration's (rc and rt may be NULL); NULL when
 * none names it. */
const pt_per_filter_config_t *pt_route_per_filter(const pt_route_config_t *rc, const pt_route_t *rt,
                                                  const char *name);

#endif
