#include "proxy/route.h"
#include "proxy/retry.h"
#include "proxy/route_index.h"
#include "proxy/tracing.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "discovery/lb_hash.h"
#include "filters/http_filter.h"
#include "proxy/formatter.h"
#include "proxy/access_log.h"
#include "proxy/metadata.h"

/* Longest domain accepted; wildcard lengths are kept as uint16_t. */
#define MAX_DOMAIN_LEN 1024

enum { DOM_EMPTY, DOM_EXACT, DOM_SUFFIX, DOM_PREFIX };

struct pt_route_domain {
    uint64_t hash;
    const char *key; /* lowercase; for wildcards the part without '*' (".foo.com", "foo.") */
    uint32_t len;
    uint8_t kind; /* DOM_*; DOM_EMPTY marks a free slot */
    const pt_vhost_t *vh;
};

/* ---- Envoy fields petrel does not implement (yet): an error that says so ------------- */

static const char *const route_config_unsupported[] = {"vhds",
                                                       "internal_only_headers",
                                                       "cluster_specifier_plugins",
                                                       "request_mirror_policies",
                                                       "ignore_path_parameters_in_path_matching",
                                                       NULL};
static const char *const vhost_unsupported[] = {"virtual_clusters",
                                                "rate_limits",
                                                "cors",
                                                "retry_policy_typed_config",
                                                "hedge_policy",
                                                "include_is_timeout_retry_header",
                                                "request_mirror_policies",
                                                "matcher",
                                                NULL};
static const char *const route_unsupported[] = {"stat_prefix", "filter_action",
                                                "non_forwarding_action", NULL};
static const char *const match_unsupported[] = {
    "path_match_policy", "runtime_fraction", "grpc",        "tls_context",
    "dynamic_metadata",  "filter_state",     "cel_matcher", NULL};
static const char *const action_unsupported[] = {"cluster_specifier_plugin",
                                                 "inline_cluster_specifier_plugin",
                                                 "metadata_match",
                                                 "path_rewrite_policy",
                                                 "host_rewrite_header",
                                                 "host_rewrite_path_regex",
                                                 "append_x_forwarded_host",
                                                 "max_stream_duration",
                                                 "request_mirror_policies",
                                                 "rate_limits",
                                                 "include_vh_rate_limits",
                                                 "cors",
                                                 "internal_redirect_policy",
                                                 "internal_redirect_action",
                                                 "max_internal_redirects",
                                                 "hedge_policy",
                                                 "retry_policy_typed_config",
                                                 "early_data_policy",
                                                 NULL};
static const char *const weighted_unsupported[] = {"runtime_key_prefix", "header_name",
                                                   "use_hash_policy", NULL};
static const char *const cluster_weight_unsupported[] = {"cluster_header", "metadata_match",
                                                         "typed_per_filter_config", NULL};
static const char *const connect_config_unsupported[] = {"proxy_protocol_config", "allow_post",
                                                         NULL};
static const char *const data_source_unsupported[] = {"environment_variable", "watched_directory",
                                                      NULL};
static const char *const require_tls_names[] = {"NONE", "EXTERNAL_ONLY", "ALL", NULL};
static const char *const redirect_code_names[] = {
    "MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT", "PERMANENT_REDIRECT", NULL};
static const int redirect_codes[] = {301, 302, 303, 307, 308};

const char *pt_require_tls_str(pt_require_tls_t t)
{
    return (unsigned)t < 3 ? require_tls_names[t] : "?";
}

const char *pt_route_action_str(pt_route_action_t a)
{
    switch (a) {
    case PT_ROUTE_ACTION_ROUTE:
        return "route";
    case PT_ROUTE_ACTION_REDIRECT:
        return "redirect";
    case PT_ROUTE_ACTION_DIRECT_RESPONSE:
        return "direct_response";
    }
    return "?";
}

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t fnv_start(int kind)
{
    return (1469598103934665603ull ^ (uint64_t)kind) * 1099511628211ull;
}

/* FNV-1a of s[0..n) lowercased: lookups hash the request's host without copying it. */
static uint64_t hash_lower(int kind, const char *s, size_t n)
{
    uint64_t h = fnv_start(kind);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)tolower((unsigned char)s[i]);
        h *= 1099511628211ull;
    }
    return h;
}

/* s[0..n) equals t[0..n) ignoring ASCII case on both sides. */
static int eq_nocase(const char *s, const char *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)s[i]) != tolower((unsigned char)t[i]))
            return 0;
    return 1;
}

static int eq_case(const char *s, const char *t, size_t n, int case_sensitive)
{
    return case_sensitive ? memcmp(s, t, n) == 0 : eq_nocase(s, t, n);
}

static char *lower_dup(pt_arena_t *a, const char *s)
{
    char *d = pt_arena_strdup(a, s);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

/* Envoy's HTTP_HEADER_VALUE (not strict): no NUL, CR or LF, so nothing configured can split
 * a header or a response. */
static int valid_header_value(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

/* "<value> is not a string" at the current path (an element of a list of strings). */
static void not_a_string(pt_cfg_t *r, json_t *v)
{
    char *d = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    pt_cfg_error(r, NULL, "%s is not a string", d ? d : "null");
    free(d);
}

/* A growable open-addressing set of strings (malloc'd; lives only while parsing). */
typedef struct strset {
    const char **slots;
    size_t cap, count;
} strset_t;

static void strset_dispose(strset_t *s)
{
    free(s->slots);
    memset(s, 0, sizeof(*s));
}

/* Adds s; returns 1 if added, 0 if already present, -1 on out-of-memory. */
static int strset_add(strset_t *set, const char *s)
{
    if ((set->count + 1) * 2 > set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 16;
        const char **n = calloc(ncap, sizeof(*n));
        if (n == NULL)
            return -1;
        for (size_t i = 0; i < set->cap; i++) {
            if (set->slots[i] == NULL)
                continue;
            size_t h = (size_t)hash_lower(0, set->slots[i], strlen(set->slots[i])) & (ncap - 1);
            while (n[h] != NULL)
                h = (h + 1) & (ncap - 1);
            n[h] = set->slots[i];
        }
        free(set->slots);
        set->slots = n;
        set->cap = ncap;
    }
    size_t h = (size_t)hash_lower(0, s, strlen(s)) & (set->cap - 1);
    while (set->slots[h] != NULL) {
        if (strcmp(set->slots[h], s) == 0)
            return 0;
        h = (h + 1) & (set->cap - 1);
    }
    set->slots[h] = s;
    set->count++;
    return 1;
}

/* ---- parsing context ---------------------------------------------------------------- */

typedef struct domain_builder {
    pt_route_domain_t *slots; /* malloc'd while parsing; copied into the arena at the end */
    uint32_t cap, count;
    unsigned char suffix_lens[MAX_DOMAIN_LEN + 1];
    unsigned char prefix_lens[MAX_DOMAIN_LEN + 1];
} domain_builder_t;

typedef struct pctx {
    pt_cfg_t *r;
    pt_config_t *cfg;
    pt_cluster_exists_fn exists; /* instead of cfg's clusters (RDS) */
    void *exists_data;
    pt_arena_t *a;
    pt_route_config_t *rc;
    int validate_clusters;
    uint32_t max_body;
    domain_builder_t dom;
    strset_t vhost_names;
    int oom;
} pctx_t;

static void *alloc(pctx_t *p, size_t n)
{
    void *m = pt_arena_alloc(p->a, n ? n : 1);
    if (m == NULL && !p->oom) {
        p->oom = 1;
        pt_cfg_error(p->r, NULL, "out of memory");
    }
    return m;
}

static char *sdup(pctx_t *p, const char *s)
{
    char *d = pt_arena_strdup(p->a, s ? s : "");
    if (d == NULL && !p->oom) {
        p->oom = 1;
        pt_cfg_error(p->r, NULL, "out of memory");
    }
    return d;
}

static void check_cluster(pctx_t *p, const char *field, const char *name)
{
    int known = p->exists != NULL ? p->exists(p->exists_data, name)
                                  : p->cfg != NULL && pt_config_cluster_exists(p->cfg, name);
    if (p->validate_clusters && name[0] != '\0' && !known) {
        char q[300];
        pt_cfg_quote(name, q, sizeof(q));
        pt_cfg_error(p->r, field, "unknown cluster %s", q);
    }
}

/* ---- header mutations ----------------------------------------------------------------- */

/* <prefix>_headers_to_add and <prefix>_headers_to_remove of the current object. */
static void parse_mutations(pctx_t *p, const char *prefix, pt_header_mutations_t *m)
{
    char add[48], remove[48];
    snprintf(add, sizeof(add), "%s_headers_to_add", prefix);
    snprintf(remove, sizeof(remove), "%s_headers_to_remove", prefix);
    pt_header_mutations_parse(p->r, p->a, add, remove, m);
}

/* ---- route match ---------------------------------------------------------------------- */

static void parse_query_matcher(pctx_t *p, pt_query_matcher_t *qm)
{
    pt_cfg_t *r = p->r;
    memset(qm, 0, sizeof(*qm));
    const char *name;
    int rc = pt_cfg_string(r, "name", &name, NULL);
    if (rc == 0 || (rc > 0 && name[0] == '\0'))
        pt_cfg_error(r, "name", "is required");
    else if (rc > 0 && strlen(name) > 1024)
        pt_cfg_error(r, "name", "is longer than 1024 bytes");
    if (rc > 0) {
        qm->name = sdup(p, name);
        qm->name_len = strlen(name);
    }
    static const char *const kinds[] = {"string_match", "present_match", NULL};
    int has_string = pt_cfg_oneof(r, kinds, 0) == 0;
    /* present_match (either value, as Envoy evaluates it) and no specifier at all both mean
     * "the parameter is present". */
    int present;
    pt_cfg_bool(r, "present_match", &present, 0);
    if (has_string && pt_cfg_enter(r, "string_match") > 0) {
        qm->has_string_match = pt_string_matcher_parse(r, p->a, &qm->string) == 0;
        pt_cfg_leave(r);
    }
}

static void parse_match(pctx_t *p, pt_route_match_spec_t *m)
{
    static const char *const kinds[] = {
        "prefix", "path", "safe_regex", "path_separated_prefix", "connect_matcher", NULL};
    static const char *const kinds_unsupported[] = {"path_match_policy", NULL};
    static const pt_path_match_kind_t kind_of[] = {PT_PATH_PREFIX, PT_PATH_EXACT, PT_PATH_REGEX,
                                                   PT_PATH_SEPARATED_PREFIX, PT_PATH_CONNECT};
    pt_cfg_t *r = p->r;
    pt_cfg_unsupported(r, match_unsupported);
    memset(m, 0, sizeof(*m));
    int found = pt_cfg_oneof(r, kinds, !pt_cfg_has_any(r, kinds_unsupported));
    pt_cfg_bool(r, "case_sensitive", &m->case_sensitive, 1);
    if (found >= 0) {
        m->kind = kind_of[found];
        const char *s;
        if (found == 4) {
            /* ConnectMatcher is an empty message. */
            if (pt_cfg_enter(r, "connect_matcher") > 0)
                pt_cfg_leave(r);
        } else if (found == 2) {
            if (pt_cfg_enter(r, "safe_regex") > 0) {
                m->regex = pt_regex_parse(r, p->a);
                pt_cfg_leave(r);
            }
        } else if (pt_cfg_string(r, kinds[found], &s, "") > 0) {
            if (found == 3) {
                /* Envoy's rule: ^[^?#]+[^?#/]$ */
                size_t n = strlen(s);
                if (n < 2 || strpbrk(s, "?#") != NULL || s[n - 1] == '/') {
                    char q[300];
                    pt_cfg_quote(s, q, sizeof(q));
                    pt_cfg_error(r, kinds[found],
                                 "%s must be at least 2 characters long, "
                                 "contain no '?' or '#', and not end with '/'",
                                 q);
                }
            } else if (!valid_header_value(s)) {
                pt_cfg_error(r, kinds[found], "must not contain CR or LF");
            }
            m->path = sdup(p, s);
            m->path_len = strlen(s);
        }
    }

    int present;
    size_t n = pt_cfg_array(r, "headers", &present);
    if (present) {
        pt_header_matcher_t *hms = alloc(p, n * sizeof(*hms));
        for (size_t i = 0; hms != NULL && i < n; i++) {
            if (pt_cfg_enter_index(r, i) > 0) {
                pt_header_matcher_parse(r, p->a, &hms[m->nheaders++]);
                pt_cfg_leave(r);
            }
        }
        m->headers = hms;
        pt_cfg_leave_array(r);
    }
    n = pt_cfg_array(r, "query_parameters", &present);
    if (present) {
        pt_query_matcher_t *qms = alloc(p, n * sizeof(*qms));
        for (size_t i = 0; qms != NULL && i < n; i++) {
            if (pt_cfg_enter_index(r, i) > 0) {
                parse_query_matcher(p, &qms[m->nquery++]);
                pt_cfg_leave(r);
            }
        }
        m->query = qms;
        pt_cfg_leave_array(r);
    }
}

/* ---- route actions ----------------------------------------------------------------------- */

/* regex_rewrite {pattern: RegexMatcher, substitution} (reader inside it). */
static void parse_regex_rewrite(pctx_t *p, pt_path_rewrite_t *rw)
{
    pt_cfg_t *r = p->r;
    int rc = pt_cfg_enter(r, "pattern");
    if (rc == 0)
        pt_cfg_error(r, "pattern", "is required");
    if (rc > 0) {
        rw->regex = pt_regex_parse(r, p->a);
        pt_cfg_leave(r);
    }
    const char *sub;
    pt_cfg_string(r, "substitution", &sub, "");
    char err[200];
    if (!valid_header_value(sub))
        pt_cfg_error(r, "substitution", "must not contain CR or LF");
    else if (rw->regex != NULL && pt_regex_check_substitution(rw->regex, sub, err, sizeof(err)))
        pt_cfg_error(r, "substitution", "%s", err);
    rw->substitution = sdup(p, sub);
}

/* A string field that ends up in a header (Location, Host, :path): no CR or LF. */
static const char *header_string(pctx_t *p, const char *field, int required)
{
    const char *s;
    int rc = pt_cfg_string(p->r, field, &s, NULL);
    if (rc == 0 && required)
        pt_cfg_error(p->r, field, "is required");
    if (rc <= 0)
        return NULL;
    if (!valid_header_value(s)) {
        pt_cfg_error(p->r, field, "must not contain CR or LF");
        return NULL;
    }
    return sdup(p, s);
}

static void parse_weighted_clusters(pctx_t *p, pt_route_t *rt)
{
    pt_cfg_t *r = p->r;
    pt_cfg_unsupported(r, weighted_unsupported);
    int present;
    size_t n = pt_cfg_array(r, "clusters", &present);
    if (!present)
        pt_cfg_error(r, "clusters", "is required");
    else if (n == 0)
        pt_cfg_error(r, NULL, "must not be empty"); /* the list's own frame */
    pt_weighted_cluster_t *wc = present ? alloc(p, n * sizeof(*wc)) : NULL;
    uint64_t sum = 0;
    for (size_t i = 0; wc != NULL && i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        pt_weighted_cluster_t *e = &wc[rt->nweighted++];
        pt_cfg_unsupported(r, cluster_weight_unsupported);
        pt_cfg_accept_empty(r, "typed_per_filter_config");
        const char *name;
        int nrc = pt_cfg_string(r, "name", &name, NULL);
        if (nrc == 0 || (nrc > 0 && name[0] == '\0'))
            pt_cfg_error(r, "name", "is required");
        e->name = sdup(p, nrc > 0 ? name : "");
        if (nrc > 0)
            check_cluster(p, "name", name);
        uint64_t w;
        pt_cfg_uint(r, "weight", &w, 0, 0, UINT32_MAX);
        e->weight = (uint32_t)w;
        sum += w;
        e->range_end = sum;
        e->host_rewrite_literal = header_string(p, "host_rewrite_literal", 0);
        parse_mutations(p, "request", &e->request_headers);
        parse_mutations(p, "response", &e->response_headers);
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    rt->weighted = wc;
    uint64_t total;
    int trc = pt_cfg_uint(r, "total_weight", &total, 0, 1, UINT32_MAX);
    if (trc > 0 && wc != NULL && total != sum)
        pt_cfg_error(r, "total_weight",
                     "is %" PRIu64 ", but the cluster weights add up to %" PRIu64, total, sum);
    else if (wc != NULL && rt->nweighted > 0 && sum == 0)
        pt_cfg_error(r, "clusters", "the sum of the weights must be greater than 0");
    else if (sum > UINT32_MAX)
        pt_cfg_error(r, "clusters", "the sum of the weights must not exceed %" PRIu32, UINT32_MAX);
    rt->total_weight = sum;
}

/* One RouteAction.HashPolicy (reader inside it). */
static void parse_hash_policy(pctx_t *p, pt_hash_policy_t *hp)
{
    pt_cfg_t *r = p->r;
    static const char *const kinds[] = {"header", "cookie", "connection_properties",
                                        "query_parameter", "filter_state", NULL};
    int kind = pt_cfg_oneof(r, kinds, 1);
    pt_cfg_bool(r, "terminal", &hp->terminal, 0);
    const char *s;
    char q[300];
    switch (kind) {
    case 0:
        hp->kind = PT_HASH_POLICY_HEADER;
        if (pt_cfg_enter(r, "header") <= 0)
            break;
        if (pt_cfg_string(r, "header_name", &s, "") <= 0 || s[0] == '\0') {
            pt_cfg_error(r, "header_name", "is required");
        } else if (!pt_http_header_name_valid(s, 1)) {
            pt_cfg_error(r, "header_name", "%s is not a valid header name",
                         pt_cfg_quote(s, q, sizeof(q)));
        } else {
            hp->name = lower_dup(p->a, s);
            hp->name_len = strlen(s);
        }
        if (pt_cfg_enter(r, "regex_rewrite") > 0) {
            pt_path_rewrite_t rw = {0};
            parse_regex_rewrite(p, &rw);
            hp->regex = rw.regex;
            hp->substitution = rw.substitution;
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
        break;
    case 1: {
        hp->kind = PT_HASH_POLICY_COOKIE;
        if (pt_cfg_enter(r, "cookie") <= 0)
            break;
        const char *name = header_string(p, "name", 1);
        if (name != NULL && (name[0] == '\0' || strpbrk(name, "=; \t\",") != NULL))
            pt_cfg_error(r, "name", "%s is not a cookie name",
                         pt_cfg_quote(name, q, sizeof(q)));
        hp->name = name;
        hp->name_len = name != NULL ? strlen(name) : 0;
        uint64_t ms;
        hp->has_ttl = pt_cfg_duration_ms(r, "ttl", &ms, 0) > 0;
        hp->ttl_s = ms / 1000;
        hp->path = header_string(p, "path", 0);
        if (hp->path != NULL && (hp->path[0] == '\0' || strchr(hp->path, ';') != NULL)) {
            if (hp->path[0] != '\0')
                pt_cfg_error(r, "path", "must not contain ';'");
            hp->path = NULL;
        }
        int present;
        size_t n = pt_cfg_array(r, "attributes", &present);
        if (present) {
            pt_cookie_attribute_t *at = alloc(p, n * sizeof(*at));
            for (size_t i = 0; at != NULL && i < n; i++) {
                if (pt_cfg_enter_index(r, i) <= 0)
                    continue;
                const char *an = header_string(p, "name", 1);
                const char *av = header_string(p, "value", 0);
                if (an != NULL && (an[0] == '\0' || strpbrk(an, "=;") != NULL))
                    pt_cfg_error(r, "name", "is not a cookie attribute name");
                else if (av != NULL && strchr(av, ';') != NULL)
                    pt_cfg_error(r, "value", "must not contain ';'");
                else if (an != NULL)
                    at[hp->nattributes++] = (pt_cookie_attribute_t){an, av ? av : ""};
                pt_cfg_leave(r);
            }
            hp->attributes = at;
            pt_cfg_leave_array(r);
        }
        pt_cfg_leave(r);
        break;
    }
    case 2: {
        hp->kind = PT_HASH_POLICY_SOURCE_IP;
        if (pt_cfg_enter(r, "connection_properties") <= 0)
            break;
        int source_ip;
        pt_cfg_bool(r, "source_ip", &source_ip, 0);
        /* source_ip false: Envoy adds no policy; this one then never yields a hash. */
        if (!source_ip)
            hp->kind = (pt_hash_policy_kind_t)-1;
        pt_cfg_leave(r);
        break;
    }
    case 3:
        hp->kind = PT_HASH_POLICY_QUERY_PARAM;
        if (pt_cfg_enter(r, "query_parameter") <= 0)
            break;
        if (pt_cfg_string(r, "name", &s, "") <= 0 || s[0] == '\0')
            pt_cfg_error(r, "name", "is required");
        hp->name = sdup(p, s);
        hp->name_len = strlen(s);
        pt_cfg_leave(r);
        break;
    case 4:
        pt_cfg_error(r, "filter_state", "is not supported (petrel keeps no filter state "
                                        "objects to hash)");
        (void)pt_cfg_get(r, "filter_state");
        break;
    default:
        break;
    }
}

static void parse_hash_policies(pctx_t *p, pt_route_t *rt)
{
    pt_cfg_t *r = p->r;
    int present;
    size_t n = pt_cfg_array(r, "hash_policy", &present);
    if (!present)
        return;
    pt_hash_policy_t *hps = n > 0 ? alloc(p, n * sizeof(*hps)) : NULL;
    for (size_t i = 0; hps != NULL && i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        memset(&hps[rt->nhash_policies], 0, sizeof(*hps));
        parse_hash_policy(p, &hps[rt->nhash_policies++]);
        pt_cfg_leave(r);
    }
    rt->hash_policies = hps;
    pt_cfg_leave_array(r);
}

static void parse_route_action(pctx_t *p, pt_route_t *rt)
{
    pt_cfg_t *r = p->r;
    pt_cfg_unsupported(r, action_unsupported);
    rt->action = PT_ROUTE_ACTION_ROUTE;
    parse_hash_policies(p, rt);
    if (pt_cfg_enter(r, "retry_policy") > 0) {
        rt->retry_policy = pt_retry_policy_parse(r, p->a);
        pt_cfg_leave(r);
    }
    static const char *const priorities[] = {"DEFAULT", "HIGH", NULL};
    int prio;
    pt_cfg_enum(r, "priority", priorities, NULL, &prio, 0);
    rt->priority = prio;
    static const char *const kinds[] = {"cluster", "weighted_clusters", "cluster_header", NULL};
    static const char *const plugins[] = {"cluster_specifier_plugin",
                                          "inline_cluster_specifier_plugin", NULL};
    int found = pt_cfg_oneof(r, kinds, !pt_cfg_has_any(r, plugins));
    const char *s;
    char q[300];
    if (found == 0) {
        rt->cluster_kind = PT_ROUTE_CLUSTER_NAME;
        if (pt_cfg_string(r, "cluster", &s, "") > 0) {
            if (s[0] == '\0')
                pt_cfg_error(r, "cluster", "must not be empty");
            else
                check_cluster(p, "cluster", s);
            rt->cluster = sdup(p, s);
        }
    } else if (found == 1) {
        rt->cluster_kind = PT_ROUTE_CLUSTER_WEIGHTED;
        if (pt_cfg_enter(r, "weighted_clusters") > 0) {
            parse_weighted_clusters(p, rt);
            pt_cfg_leave(r);
        }
    } else if (found == 2) {
        rt->cluster_kind = PT_ROUTE_CLUSTER_HEADER;
        if (pt_cfg_string(r, "cluster_header", &s, "") > 0) {
            pt_cfg_quote(s, q, sizeof(q));
            if (!pt_http_header_name_valid(s, 1))
                pt_cfg_error(r, "cluster_header", "%s is not a valid header name", q);
            rt->cluster_header = lower_dup(p->a, s);
        }
    }

    /* Path rewrites: one of prefix_rewrite, regex_rewrite. */
    static const char *const path_rewrites[] = {"prefix_rewrite", "regex_rewrite", NULL};
    pt_cfg_oneof(r, path_rewrites, 0);
    rt->rewrite.prefix = header_string(p, "prefix_rewrite", 0);
    if (pt_cfg_enter(r, "regex_rewrite") > 0) {
        parse_regex_rewrite(p, &rt->rewrite);
        pt_cfg_leave(r);
    }

    /* Host rewrites: one of host_rewrite_literal, auto_host_rewrite. */
    static const char *const host_rewrites[] = {"host_rewrite_literal", "auto_host_rewrite", NULL};
    pt_cfg_oneof(r, host_rewrites, 0);
    pt_cfg_bool(r, "auto_host_rewrite", &rt->auto_host_rewrite, 0);
    rt->host_rewrite_literal = header_string(p, "host_rewrite_literal", 0);

    pt_cfg_duration_ms(r, "timeout", &rt->timeout_ms, 15000);
    rt->has_max_grpc_timeout =
        pt_cfg_duration_ms(r, "max_grpc_timeout", &rt->max_grpc_timeout_ms, 0) > 0;
    pt_cfg_duration_ms(r, "grpc_timeout_offset", &rt->grpc_timeout_offset_ms, 0);
    static const char *const not_found_names[] = {"SERVICE_UNAVAILABLE", "NOT_FOUND",
                                                  "INTERNAL_SERVER_ERROR", NULL};
    static const int not_found_statuses[] = {503, 404, 500};
    int not_found;
    pt_cfg_enum(r, "cluster_not_found_response_code", not_found_names, NULL, &not_found, 0);
    rt->cluster_not_found_status = not_found_statuses[not_found];
    if (pt_cfg_duration_ms(r, "idle_timeout", &rt->idle_timeout_ms, 0) <= 0)
        rt->idle_timeout_ms = PT_ROUTE_TIMEOUT_UNSET;

    int present;
    size_t n = pt_cfg_array(r, "upgrade_configs", &present);
    if (present) {
        pt_upgrade_config_t *u = alloc(p, n * sizeof(*u));
        for (size_t i = 0; u != NULL && i < n; i++) {
            if (pt_cfg_enter_index(r, i) <= 0)
                continue;
            int rc = pt_cfg_string(r, "upgrade_type", &s, NULL);
            if (rc == 0 || (rc > 0 && s[0] == '\0')) {
                pt_cfg_error(r, "upgrade_type", "is required");
            } else if (rc > 0) {
                char *t = lower_dup(p->a, s);
                int dup = 0;
                for (unsigned j = 0; j < rt->nupgrades && t; j++)
                    dup |= strcmp(u[j].upgrade_type, t) == 0;
                pt_cfg_quote(s, q, sizeof(q));
                if (dup)
                    pt_cfg_error(r, "upgrade_type", "duplicate upgrade %s", q);
                u[rt->nupgrades].upgrade_type = t;
                pt_cfg_bool(r, "enabled", &u[rt->nupgrades].enabled, 1);
                u[rt->nupgrades].connect_config = 0;
                if (pt_cfg_enter(r, "connect_config") > 0) {
                    /* Envoy: CONNECT is terminated here (a TCP connection to the cluster)
                     * instead of being forwarded upstream as a CONNECT request. */
                    pt_cfg_unsupported(r, connect_config_unsupported);
                    pt_cfg_leave(r);
                    if (t != NULL && strcmp(t, "connect") != 0)
                        pt_cfg_error(r, "connect_config", "is only for upgrade_type CONNECT");
                    u[rt->nupgrades].connect_config = 1;
                }
                rt->nupgrades++;
            }
            pt_cfg_leave(r);
        }
        rt->upgrades = u;
        pt_cfg_leave_array(r);
    }
}

static void parse_redirect(pctx_t *p, pt_route_t *rt)
{
    pt_cfg_t *r = p->r;
    pt_redirect_t *rd = &rt->redirect;
    rt->action = PT_ROUTE_ACTION_REDIRECT;
    static const char *const schemes[] = {"https_redirect", "scheme_redirect", NULL};
    static const char *const paths[] = {"path_redirect", "prefix_rewrite", "regex_rewrite", NULL};
    pt_cfg_oneof(r, schemes, 0);
    pt_cfg_bool(r, "https_redirect", &rd->https_redirect, 0);
    rd->scheme_redirect = header_string(p, "scheme_redirect", 0);
    if (rd->scheme_redirect != NULL) {
        const char *s = rd->scheme_redirect;
        int ok = isalpha((unsigned char)s[0]);
        for (const char *c = s; ok && *c; c++)
            ok = isalnum((unsigned char)*c) || *c == '+' || *c == '-' || *c == '.';
        if (!ok)
            pt_cfg_error(r, "scheme_redirect", "\"%s\" is not a URI scheme", s);
        rd->scheme_redirect = lower_dup(p->a, s);
    }
    rd->host_redirect = header_string(p, "host_redirect", 0);
    uint64_t port;
    pt_cfg_uint(r, "port_redirect", &port, 0, 0, 65535);
    rd->port_redirect = (uint32_t)port;

    pt_cfg_oneof(r, paths, 0);
    rd->path_redirect = header_string(p, "path_redirect", 0);
    if (rd->path_redirect != NULL)
        rd->path_redirect_has_query = strchr(rd->path_redirect, '?') != NULL;
    rt->rewrite.prefix = header_string(p, "prefix_rewrite", 0);
    if (pt_cfg_enter(r, "regex_rewrite") > 0) {
        parse_regex_rewrite(p, &rt->rewrite);
        pt_cfg_leave(r);
    }
    pt_cfg_bool(r, "strip_query", &rd->strip_query, 0);
    int code;
    pt_cfg_enum(r, "response_code", redirect_code_names, NULL, &code, 0);
    rd->response_code = redirect_codes[code];
}

/* body (envoy.config.core.v3.DataSource), reader inside it. */
static void parse_body(pctx_t *p, pt_route_t *rt)
{
    pt_cfg_t *r = p->r;
    pt_cfg_unsupported(r, data_source_unsupported);
    static const char *const sources[] = {"filename", "inline_bytes", "inline_string", NULL};
    if (pt_cfg_oneof(r, sources, !pt_cfg_has_any(r, data_source_unsupported)) < 0)
        return;
    const char *s;
    const char *field = NULL;
    if (pt_cfg_string(r, "inline_string", &s, NULL) > 0) {
        field = "inline_string";
        rt->direct_body = sdup(p, s);
        rt->direct_body_len = strlen(s);
    } else if (pt_cfg_string(r, "inline_bytes", &s, NULL) > 0) {
        field = "inline_bytes";
        unsigned char *buf = alloc(p, strlen(s) / 4 * 3 + 4);
        long len = buf ? pt_base64_decode(s, buf) : 0;
        if (len < 0)
            pt_cfg_error(r, "inline_bytes", "is not valid base64");
        rt->direct_body = (const char *)buf;
        rt->direct_body_len = len > 0 ? (size_t)len : 0;
    } else if (pt_cfg_string(r, "filename", &s, NULL) > 0) {
        field = "filename";
        /* Read once at load: the response is then served from memory, as in Envoy. Read in
         * chunks and stop past the limit, so a huge file costs no huge allocation. */
        FILE *f = fopen(s, "rb");
        if (f == NULL) {
            pt_cfg_error(r, "filename", "cannot read \"%s\": %s", s, strerror(errno));
            return;
        }
        char *buf = NULL;
        size_t got = 0, cap = 0;
        int err = 0;
        while (!err && got <= p->max_body) {
            if (got == cap) {
                size_t ncap = cap ? cap * 2 : 4096;
                char *nb = realloc(buf, ncap);
                if (nb == NULL) {
                    err = ENOMEM;
                    break;
                }
                buf = nb;
                cap = ncap;
            }
            size_t nr = fread(buf + got, 1, cap - got, f);
            got += nr;
            if (nr == 0) {
                err = ferror(f) ? EIO : 0;
                break;
            }
        }
        fclose(f);
        if (err) {
            pt_cfg_error(r, "filename", "cannot read \"%s\": %s", s, strerror(err));
            free(buf);
            return;
        }
        if (got <= p->max_body) {
            char *body = alloc(p, got + 1);
            if (body != NULL && got > 0)
                memcpy(body, buf, got);
            rt->direct_body = body;
        }
        rt->direct_body_len = got;
        free(buf);
    }
    if (field != NULL && rt->direct_body_len > p->max_body) {
        int file = strcmp(field, "filename") == 0; /* read only up to the limit */
        pt_cfg_error(r, field,
                     "the body is %s%zu bytes, more than "
                     "max_direct_response_body_size_bytes (%" PRIu32 ")",
                     file ? "over " : "", file ? (size_t)p->max_body : rt->direct_body_len,
                     p->max_body);
    }
}

static void parse_direct_response(pctx_t *p, pt_route_t *rt)
{
    pt_cfg_t *r = p->r;
    rt->action = PT_ROUTE_ACTION_DIRECT_RESPONSE;
    uint64_t status;
    if (pt_cfg_uint(r, "status", &status, 0, 100, 599) == 0)
        pt_cfg_error(r, "status", "is required");
    rt->direct_status = (int)status;
    if (pt_cfg_enter(r, "body") > 0) {
        parse_body(p, rt);
        pt_cfg_leave(r);
    }
    /* body_format: the body is this format's rendering, `body` being %LOCAL_REPLY_BODY%. */
    const char *ctype = NULL;
    rt->direct_format = pt_substitution_format_parse(r, "body_format", p->a, &ctype);
    if (rt->direct_format != NULL)
        rt->direct_content_type = ctype != NULL ? ctype
                                  : pt_format_is_json(rt->direct_format) ? "application/json"
                                                                         : "text/plain";
}

#define FILTER_CONFIG_TYPE "type.googleapis.com/envoy.config.route.v3.FilterConfig"

/* One per-route config (an Any the reader is in, its @type read): the filter whose
 * per-route type it is parses it. 0, or -1 when no filter takes that type (error recorded
 * unless `optional`). */
static int parse_filter_any(pctx_t *p, const char *type, int optional, const void **out)
{
    const pt_http_filter_ops_t *ops = pt_http_filter_find_per_route(type);
    if (ops == NULL) {
        if (!optional)
            pt_cfg_error(p->r, "@type", "\"%s\" is not the per-route config of an HTTP filter "
                                        "petrel has", type);
        pt_cfg_skip_rest(p->r);
        return -1;
    }
    *out = ops->parse_per_route(p->r, p->a);
    return 0;
}

/* typed_per_filter_config: {filter name: Any}. The Any is the filter's own per-route message
 * or an envoy.config.route.v3.FilterConfig {config, disabled, is_optional}; an optional
 * config of a filter petrel does not have is left out, as Envoy does. */
static void parse_per_filter(pctx_t *p, pt_per_filter_configs_t *out)
{
    pt_cfg_t *r = p->r;
    if (pt_cfg_enter(r, "typed_per_filter_config") <= 0)
        return;
    json_t *obj = r->frames[r->depth - 1].node;
    size_t n = json_object_size(obj);
    pt_per_filter_config_t *v = alloc(p, n * sizeof(*v));
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (v == NULL)
            break;
        pt_per_filter_config_t *e = &v[out->n];
        memset(e, 0, sizeof(*e));
        int rc;
        const char *type = pt_cfg_enter_any(r, key, &rc);
        if (type == NULL)
            continue;
        int ok = 0;
        if (strcmp(type, FILTER_CONFIG_TYPE) == 0) {
            int optional;
            pt_cfg_bool(r, "disabled", &e->disabled, 0);
            pt_cfg_bool(r, "is_optional", &optional, 0);
            const char *inner = pt_cfg_enter_any(r, "config", &rc);
            if (inner != NULL) {
                ok = parse_filter_any(p, inner, optional, &e->config) == 0;
                pt_cfg_leave(r);
            } else {
                ok = rc == 0; /* FilterConfig without a config: enables or disables only */
            }
        } else {
            ok = parse_filter_any(p, type, 0, &e->config) == 0;
        }
        pt_cfg_leave(r);
        if (ok) {
            e->name = sdup(p, key);
            out->n++;
            p->rc->has_per_filter = 1;
        }
    }
    out->v = v;
    pt_cfg_leave(r);
}

static const pt_per_filter_config_t *per_filter_find(const pt_per_filter_configs_t *c,
                                                     const char *name)
{
    for (unsigned i = 0; i < c->n; i++)
        if (strcmp(c->v[i].name, name) == 0)
            return &c->v[i];
    return NULL;
}

const pt_per_filter_config_t *pt_route_per_filter(const pt_route_config_t *rc, const pt_route_t *rt,
                                                  const char *name)
{
    const pt_per_filter_config_t *e = NULL;
    if (rt != NULL && (e = per_filter_find(&rt->per_filter, name)) == NULL && rt->vhost != NULL)
        e = per_filter_find(&rt->vhost->per_filter, name);
    if (e == NULL && rc != NULL)
        e = per_filter_find(&rc->per_filter, name);
    return e;
}

static void parse_route(pctx_t *p, pt_route_t *rt)
{
    pt_cfg_t *r = p->r;
    pt_cfg_unsupported(r, route_unsupported);
    parse_per_filter(p, &rt->per_filter);
    const char *name;
    pt_cfg_string(r, "name", &name, "");
    rt->name = sdup(p, name);
    rt->metadata = pt_metadata_parse(r, "metadata", p->a);
    rt->tracing = pt_route_tracing_parse(r, p->a);
    int rc = pt_cfg_enter(r, "match");
    if (rc == 0)
        pt_cfg_error(r, "match", "is required");
    if (rc > 0) {
        parse_match(p, &rt->match);
        pt_cfg_leave(r);
    }

    static const char *const kinds[] = {"route", "redirect", "direct_response", NULL};
    static const char *const other_actions[] = {"filter_action", "non_forwarding_action", NULL};
    int found = pt_cfg_oneof(r, kinds, !pt_cfg_has_any(r, other_actions));
    if (found >= 0 && pt_cfg_enter(r, kinds[found]) > 0) {
        if (found == 0)
            parse_route_action(p, rt);
        else if (found == 1)
            parse_redirect(p, rt);
        else
            parse_direct_response(p, rt);
        pt_cfg_leave(r);
    }
    if (rt->match.kind == PT_PATH_CONNECT && rt->action == PT_ROUTE_ACTION_ROUTE && found == 0) {
        /* petrel terminates CONNECT; Envoy's other mode, forwarding the CONNECT request to
         * an upstream proxy, is not supported: say so here rather than at run time. */
        int terminates = 0;
        for (unsigned i = 0; i < rt->nupgrades; i++)
            terminates |= strcmp(rt->upgrades[i].upgrade_type, "connect") == 0 &&
                          rt->upgrades[i].connect_config;
        if (!terminates)
            pt_cfg_error(r, "route.upgrade_configs",
                         "a connect_matcher route needs {upgrade_type: CONNECT, connect_config: "
                         "{}} (CONNECT is terminated; forwarding it upstream is not supported)");
    }
    parse_mutations(p, "request", &rt->request_headers);
    parse_mutations(p, "response", &rt->response_headers);
    uint64_t limit;
    pt_cfg_uint(r, "per_request_buffer_limit_bytes", &limit, 0, 0, UINT32_MAX);
    rt->per_request_buffer_limit = (uint32_t)limit;
    /* A route without its own retry policy or buffer limit uses its virtual host's. */
    if (rt->action == PT_ROUTE_ACTION_ROUTE && rt->retry_policy == NULL && rt->vhost != NULL)
        rt->retry_policy = rt->vhost->retry_policy;
    if (rt->per_request_buffer_limit == 0 && rt->vhost != NULL)
        rt->per_request_buffer_limit = rt->vhost->per_request_buffer_limit;
}

/* ---- virtual hosts and the domain index ------------------------------------------------- */

static int dom_grow(domain_builder_t *d)
{
    uint32_t ncap = d->cap ? d->cap * 2 : 64;
    pt_route_domain_t *n = calloc(ncap, sizeof(*n));
    if (n == NULL)
        return -1;
    for (uint32_t i = 0; i < d->cap; i++) {
        if (d->slots[i].kind == DOM_EMPTY)
            continue;
        uint32_t h = (uint32_t)d->slots[i].hash & (ncap - 1);
        while (n[h].kind != DOM_EMPTY)
            h = (h + 1) & (ncap - 1);
        n[h] = d->slots[i];
    }
    free(d->slots);
    d->slots = n;
    d->cap = ncap;
    return 0;
}

static const pt_route_domain_t *dom_probe(const pt_route_domain_t *slots, uint32_t cap, int kind,
                                          const char *s, size_t n, uint64_t h)
{
    uint32_t i = (uint32_t)h & (cap - 1);
    while (slots[i].kind != DOM_EMPTY) {
        const pt_route_domain_t *e = &slots[i];
        if (e->hash == h && e->kind == kind && e->len == n && eq_nocase(s, e->key, n))
            return e;
        i = (i + 1) & (cap - 1);
    }
    return NULL;
}

/* Adds a domain; returns the entry already holding it (a duplicate), or NULL. *oom is set
 * on allocation failure. */
static const pt_route_domain_t *dom_add(domain_builder_t *d, int kind, const char *key, size_t n,
                                        const pt_vhost_t *vh, int *oom)
{
    uint64_t h = hash_lower(kind, key, n);
    if (d->cap > 0) {
        const pt_route_domain_t *e = dom_probe(d->slots, d->cap, kind, key, n, h);
        if (e != NULL)
            return e;
    }
    if ((d->count + 1) * 2 > d->cap && dom_grow(d) != 0) {
        *oom = 1;
        return NULL;
    }
    uint32_t i = (uint32_t)h & (d->cap - 1);
    while (d->slots[i].kind != DOM_EMPTY)
        i = (i + 1) & (d->cap - 1);
    d->slots[i] = (pt_route_domain_t){
        .hash = h, .key = key, .len = (uint32_t)n, .kind = (uint8_t)kind, .vh = vh};
    d->count++;
    if (kind == DOM_SUFFIX)
        d->suffix_lens[n] = 1;
    else if (kind == DOM_PREFIX)
        d->prefix_lens[n] = 1;
    return NULL;
}

/* Classifies a (lowercase) domain. Returns NULL and the kind and hashed part, or the reason
 * it is invalid. Envoy's shapes: "*", "*.foo.com" / "*-bar.foo.com" (suffix wildcards),
 * "foo.*" / "foo-*" (prefix wildcards); petrel also insists that the wildcard stands for a
 * whole label or a '-'-separated part, and nowhere else. */
static const char *domain_shape(const char *d, int *kind, size_t *off, size_t *len)
{
    size_t n = strlen(d);
    if (n == 0)
        return "must not be empty";
    if (n > MAX_DOMAIN_LEN)
        return "is longer than 1024 characters";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)d[i] < 0x20 || d[i] == 0x7f || d[i] == ' ')
            return "must not contain spaces or control characters";
    static const char *const bad_wildcard =
        "a wildcard must be the whole domain (\"*\"), a prefix (\"*.example.com\", "
        "\"*-suffix.example.com\") or a suffix (\"example.*\", \"example-*\")";
    const char *star = strchr(d, '*');
    if (star == NULL) {
        *kind = DOM_EXACT;
        *off = 0;
        *len = n;
        return NULL;
    }
    if (n == 1) {
        *kind = 0; /* "*" */
        return NULL;
    }
    if (strchr(star + 1, '*') != NULL)
        return bad_wildcard;
    if (star == d && n >= 3 && (d[1] == '.' || d[1] == '-')) {
        *kind = DOM_SUFFIX;
        *off = 1;
        *len = n - 1;
        return NULL;
    }
    if (star == d + n - 1 && n >= 3 && (d[n - 2] == '.' || d[n - 2] == '-')) {
        *kind = DOM_PREFIX;
        *off = 0;
        *len = n - 1;
        return NULL;
    }
    return bad_wildcard;
}

static void parse_vhost(pctx_t *p, pt_vhost_t *vh)
{
    pt_cfg_t *r = p->r;
    pt_cfg_unsupported(r, vhost_unsupported);
    parse_per_filter(p, &vh->per_filter);
    vh->metadata = pt_metadata_parse(r, "metadata", p->a);
    const char *name;
    char q[300];
    int rc = pt_cfg_string(r, "name", &name, NULL);
    if (rc == 0 || (rc > 0 && name[0] == '\0'))
        pt_cfg_error(r, "name", "is required");
    vh->name = sdup(p, rc > 0 ? name : "");
    if (rc > 0 && name[0] != '\0' && vh->name != NULL) {
        int added = strset_add(&p->vhost_names, vh->name);
        pt_cfg_quote(name, q, sizeof(q));
        if (added == 0)
            pt_cfg_error(r, "name", "duplicate virtual host name %s", q);
        else if (added < 0)
            pt_cfg_error(r, "name", "out of memory");
    }

    int present;
    size_t n = pt_cfg_array(r, "domains", &present);
    if (!present)
        pt_cfg_error(r, "domains", "is required");
    else if (n == 0)
        pt_cfg_error(r, NULL, "must not be empty"); /* the list's own frame */
    const char **domains = present ? alloc(p, n * sizeof(*domains)) : NULL;
    for (size_t i = 0; domains != NULL && i < n; i++) {
        json_t *v = pt_cfg_index_value(r, i);
        size_t saved = r->path_len;
        pt_cfg_push_index(r, i);
        if (!json_is_string(v)) {
            not_a_string(r, v);
            pt_cfg_pop_path(r, saved);
            continue;
        }
        char *d = lower_dup(p->a, json_string_value(v));
        int kind = 0;
        size_t off = 0, len = 0;
        pt_cfg_quote(json_string_value(v), q, sizeof(q));
        const char *why = d ? domain_shape(d, &kind, &off, &len) : "out of memory";
        if (why != NULL) {
            pt_cfg_error(r, NULL, "%s is not a valid domain: %s", q, why);
        } else {
            const pt_vhost_t *prev = NULL;
            if (kind == 0) {
                prev = p->rc->default_vhost;
                if (prev == NULL)
                    p->rc->default_vhost = vh;
            } else {
                int oom = 0;
                const pt_route_domain_t *e = dom_add(&p->dom, kind, d + off, len, vh, &oom);
                prev = e ? e->vh : NULL;
                if (oom)
                    pt_cfg_error(r, NULL, "out of memory");
            }
            if (prev != NULL) {
                char pq[300];
                pt_cfg_quote(prev->name, pq, sizeof(pq));
                pt_cfg_error(r, NULL, "duplicate domain %s (already used by virtual host %s)", q,
                             pq);
            } else {
                domains[vh->ndomains++] = d;
            }
        }
        pt_cfg_pop_path(r, saved);
    }
    vh->domains = domains;
    if (present)
        pt_cfg_leave_array(r);

    int tls;
    pt_cfg_enum(r, "require_tls", require_tls_names, NULL, &tls, PT_REQUIRE_TLS_NONE);
    vh->require_tls = (pt_require_tls_t)tls;
    /* Before the routes: they inherit these. */
    if (pt_cfg_enter(r, "retry_policy") > 0) {
        vh->retry_policy = pt_retry_policy_parse(r, p->a);
        pt_cfg_leave(r);
    }
    uint64_t limit;
    pt_cfg_uint(r, "per_request_buffer_limit_bytes", &limit, 0, 0, UINT32_MAX);
    vh->per_request_buffer_limit = (uint32_t)limit;
    pt_cfg_bool(r, "include_request_attempt_count", &vh->include_request_attempt_count, 0);
    pt_cfg_bool(r, "include_attempt_count_in_response", &vh->include_attempt_count_in_response,
                0);

    n = pt_cfg_array(r, "routes", &present);
    if (present) {
        pt_route_t *routes = alloc(p, n * sizeof(*routes));
        for (size_t i = 0; routes != NULL && i < n; i++) {
            if (pt_cfg_enter_index(r, i) > 0) {
                pt_route_t *rt = &routes[vh->nroutes++];
                rt->vhost = vh;
                parse_route(p, rt);
                pt_cfg_leave(r);
            }
        }
        vh->routes = routes;
        pt_cfg_leave_array(r);
        /* Built here, once, so that no request pays for it. */
        if (routes != NULL && pt_route_index_build(routes, vh->nroutes, p->a, &vh->index) != 0) {
            p->oom = 1;
            pt_cfg_error(r, "routes", "out of memory");
        }
    }
    parse_mutations(p, "request", &vh->request_headers);
    parse_mutations(p, "response", &vh->response_headers);
}

/* Copies the domain index into the arena, with the wildcard lengths longest first. */
static void finish_domains(pctx_t *p)
{
    domain_builder_t *d = &p->dom;
    pt_route_config_t *rc = p->rc;
    if (d->count > 0) {
        pt_route_domain_t *t = alloc(p, d->cap * sizeof(*t));
        if (t != NULL)
            memcpy(t, d->slots, d->cap * sizeof(*t));
        rc->domain_table = t;
        rc->domain_cap = t ? d->cap : 0;
    }
    unsigned ns = 0, np = 0;
    for (unsigned l = 0; l <= MAX_DOMAIN_LEN; l++) {
        ns += d->suffix_lens[l];
        np += d->prefix_lens[l];
    }
    uint16_t *sl = alloc(p, ns * sizeof(uint16_t)), *pl = alloc(p, np * sizeof(uint16_t));
    if (sl == NULL || pl == NULL)
        return;
    for (unsigned l = MAX_DOMAIN_LEN + 1; l-- > 0;) {
        if (d->suffix_lens[l])
            sl[rc->nsuffix_lens++] = (uint16_t)l;
        if (d->prefix_lens[l])
            pl[rc->nprefix_lens++] = (uint16_t)l;
    }
    rc->suffix_lens = sl;
    rc->prefix_lens = pl;
}

static pt_route_config_t *parse_into(pt_cfg_t *r, pt_arena_t *a, pt_config_t *cfg,
                                      pt_cluster_exists_fn exists, void *exists_data,
                                      unsigned flags)
{
    size_t errors_before = r->nerrors;
    pctx_t *p = calloc(1, sizeof(*p)); /* the domain builder's length maps are sizeable */
    if (p == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    p->r = r;
    p->cfg = cfg;
    p->exists = exists;
    p->exists_data = exists_data;
    p->a = a;
    pt_route_config_t *rc = alloc(p, sizeof(*rc));
    if (rc == NULL)
        goto done;
    p->rc = rc;
    pt_cfg_unsupported(r, route_config_unsupported);
    parse_per_filter(p, &rc->per_filter);
    const char *name;
    pt_cfg_string(r, "name", &name, "");
    rc->name = sdup(p, name);
    rc->metadata = pt_metadata_parse(r, "metadata", p->a);
    pt_cfg_bool(r, "validate_clusters", &rc->validate_clusters, !(flags & PT_ROUTE_PARSE_RDS));
    p->validate_clusters = rc->validate_clusters;
    pt_cfg_bool(r, "most_specific_header_mutations_wins", &rc->most_specific_header_mutations_wins,
                0);
    pt_cfg_bool(r, "ignore_port_in_host_matching", &rc->ignore_port_in_host_matching, 0);
    uint64_t max_body;
    pt_cfg_uint(r, "max_direct_response_body_size_bytes", &max_body, 4096, 0, UINT32_MAX);
    rc->max_direct_response_body_size = p->max_body = (uint32_t)max_body;
    parse_mutations(p, "request", &rc->request_headers);
    parse_mutations(p, "response", &rc->response_headers);

    int present;
    size_t n = pt_cfg_array(r, "virtual_hosts", &present);
    if (present) {
        pt_vhost_t *vhosts = alloc(p, n * sizeof(*vhosts));
        for (size_t i = 0; vhosts != NULL && i < n; i++) {
            if (pt_cfg_enter_index(r, i) > 0) {
                parse_vhost(p, &vhosts[rc->nvhosts++]);
                pt_cfg_leave(r);
            }
        }
        rc->vhosts = vhosts;
        pt_cfg_leave_array(r);
    }
    finish_domains(p);
done:
    free(p->dom.slots);
    strset_dispose(&p->vhost_names);
    free(p);
    return r->nerrors == errors_before ? rc : NULL;
}

pt_route_config_t *pt_route_config_parse_ex(pt_cfg_t *r, pt_config_t *cfg, unsigned flags)
{
    return parse_into(r, &cfg->arena, cfg, NULL, NULL, flags);
}

pt_route_config_t *pt_route_config_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    return pt_route_config_parse_ex(r, cfg, 0);
}

pt_route_config_t *pt_route_config_parse_resource(pt_cfg_t *r, pt_cluster_exists_fn exists,
                                                  void *data)
{
    pt_arena_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    pt_arena_init_small(a);
    pt_route_config_t *rc = parse_into(r, a, NULL, exists, data, PT_ROUTE_PARSE_RDS);
    if (rc == NULL) {
        pt_arena_dispose(a);
        free(a);
        return NULL;
    }
    rc->own_arena = a;
    atomic_init(&rc->refs, 1);
    return rc;
}

pt_route_config_t *pt_route_config_ref(pt_route_config_t *rc)
{
    if (rc != NULL && rc->own_arena != NULL)
        atomic_fetch_add_explicit(&rc->refs, 1, memory_order_relaxed);
    return rc;
}

void pt_route_config_unref(pt_route_config_t *rc)
{
    if (rc == NULL || rc->own_arena == NULL ||
        atomic_fetch_sub_explicit(&rc->refs, 1, memory_order_acq_rel) != 1)
        return;
    pt_arena_t *a = rc->own_arena; /* rc itself lives in it */
    pt_arena_dispose(a);
    free(a);
}

/* ---- virtual host lookup ---------------------------------------------------------------- */

/* Envoy's HeaderUtility::getPortStart: the last ':' unless it is inside an IPv6 literal. */
static size_t port_start(const char *h, size_t n)
{
    const char *colon = NULL, *bracket = NULL;
    for (size_t i = n; i-- > 0;) {
        if (h[i] == ':' && colon == NULL)
            colon = h + i;
        if (h[i] == ']') {
            bracket = h + i;
            break;
        }
    }
    if (colon == NULL || (bracket != NULL && bracket > colon))
        return n;
    return (size_t)(colon - h);
}

static const pt_vhost_t *lookup(const pt_route_config_t *rc, const char *h, size_t n)
{
    const pt_route_domain_t *e;
    if (rc->domain_cap == 0)
        return NULL;
    e = dom_probe(rc->domain_table, rc->domain_cap, DOM_EXACT, h, n, hash_lower(DOM_EXACT, h, n));
    if (e != NULL)
        return e->vh;
    /* Longest wildcard first; a wildcard matches at least one character ('>' not '>='). */
    for (unsigned i = 0; i < rc->nsuffix_lens; i++) {
        size_t l = rc->suffix_lens[i];
        if (l >= n)
            continue;
        const char *s = h + n - l;
        e = dom_probe(rc->domain_table, rc->domain_cap, DOM_SUFFIX, s, l,
                      hash_lower(DOM_SUFFIX, s, l));
        if (e != NULL)
            return e->vh;
    }
    for (unsigned i = 0; i < rc->nprefix_lens; i++) {
        size_t l = rc->prefix_lens[i];
        if (l >= n)
            continue;
        e = dom_probe(rc->domain_table, rc->domain_cap, DOM_PREFIX, h, l,
                      hash_lower(DOM_PREFIX, h, l));
        if (e != NULL)
            return e->vh;
    }
    return NULL;
}

const pt_vhost_t *pt_route_find_vhost(const pt_route_config_t *rc, const char *authority)
{
    if (rc == NULL)
        return NULL;
    if (rc->domain_cap == 0 || authority == NULL)
        return rc->default_vhost;
    size_t n = strlen(authority);
    size_t port = port_start(authority, n);
    if (rc->ignore_port_in_host_matching)
        n = port;
    const pt_vhost_t *vh = lookup(rc, authority, n);
    if (vh == NULL && port < n)
        vh = lookup(rc, authority, port);
    return vh != NULL ? vh : rc->default_vhost;
}

/* ---- route matching ------------------------------------------------------------------ */

/* Percent-decodes s[0..n) into out (which holds n bytes); returns the decoded length.
 * Invalid escapes are kept as they are. */
static size_t pct_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

/* query[0..qlen) is the query string (after '?', before '#'). */
static int query_matches(const pt_query_matcher_t *qm, const char *query, size_t qlen,
                         pt_arena_t *a)
{
    size_t i = 0;
    while (i <= qlen) {
        size_t end = i;
        while (end < qlen && query[end] != '&')
            end++;
        size_t eq = i;
        while (eq < end && query[eq] != '=')
            eq++;
        if (end > i) {
            /* Names and values are compared percent-decoded, as Envoy does. */
            char nbuf[1024];
            size_t nraw = eq - i;
            int same = 0;
            if (nraw <= sizeof(nbuf)) {
                size_t nl = pct_decode(query + i, nraw, nbuf);
                same = nl == qm->name_len && memcmp(nbuf, qm->name, nl) == 0;
            }
            if (same) {
                if (!qm->has_string_match)
                    return 1;
                size_t vraw = eq < end ? end - eq - 1 : 0;
                const char *vs = query + (eq < end ? eq + 1 : end);
                char vbuf[1024];
                char *buf = vraw <= sizeof(vbuf) ? vbuf : (a ? pt_arena_alloc(a, vraw) : NULL);
                if (buf == NULL)
                    return 0;
                size_t vl = pct_decode(vs, vraw, buf);
                /* The first occurrence decides. */
                return pt_string_matcher_match(&qm->string, buf, vl);
            }
        }
        i = end + 1;
    }
    return 0;
}

static inline __attribute__((always_inline)) int
path_matches(const pt_route_match_spec_t *m, const char *path, size_t plen, size_t pend)
{
    switch (m->kind) {
    case PT_PATH_PREFIX:
        return plen >= m->path_len && eq_case(path, m->path, m->path_len, m->case_sensitive);
    case PT_PATH_EXACT:
        return pend == m->path_len && eq_case(path, m->path, pend, m->case_sensitive);
    case PT_PATH_REGEX:
        return m->regex != NULL && pt_regex_full_match(m->regex, path, pend);
    case PT_PATH_SEPARATED_PREFIX:
        return pend >= m->path_len && eq_case(path, m->path, m->path_len, m->case_sensitive) &&
               (pend == m->path_len || path[m->path_len] == '/');
    case PT_PATH_CONNECT:
        return 0; /* decided by the method (pt_route_match) */
    }
    return 0;
}

/* A request as the route matchers see it. */
typedef struct match_input {
    const pt_http_headers_t *req;
    const char *path;  /* :path as the connection manager left it (normalized); "" for CONNECT */
    size_t plen, pend; /* its length; the length without query string and fragment */
    const char *query; /* the query string (after '?', before '#') */
    size_t qlen;
    int connect; /* a CONNECT request (no :path): only connect_matcher routes match */
} match_input_t;

/* 0 when the request has nothing to match (no :path and not CONNECT): no route. */
static int match_input_init(match_input_t *in, const pt_http_headers_t *req)
{
    const char *path = pt_http_headers_get(req, ":path");
    const char *method = pt_http_headers_get(req, ":method");
    int connect = path == NULL && method != NULL && strcmp(method, "CONNECT") == 0;
    if (path == NULL && !connect)
        return 0;
    if (connect)
        path = ""; /* CONNECT (authority-form): only connect_matcher routes match it */
    in->req = req;
    in->connect = connect;
    in->path = path;
    in->plen = strlen(path);
    in->pend = strcspn(path, "?#"); /* the path without query string and fragment */
    in->query = path[in->pend] == '?' ? path + in->pend + 1 : path + in->pend;
    in->qlen = strcspn(in->query, "#");
    return 1;
}

/* Whether rt's match accepts the request: the one definition the scan and the index both
 * apply. Inlined: the scan of a small virtual host calls it per route. */
static inline __attribute__((always_inline)) int route_accepts(const pt_route_t *rt,
                                                               const match_input_t *in)
{
    const pt_route_match_spec_t *m = &rt->match;
    if (in->connect != (m->kind == PT_PATH_CONNECT) ||
        (!in->connect && !path_matches(m, in->path, in->plen, in->pend)))
        return 0;
    for (unsigned k = 0; k < m->nheaders; k++)
        if (!pt_header_matcher_match(&m->headers[k], in->req))
            return 0;
    for (unsigned k = 0; k < m->nquery; k++)
        if (!query_matches(&m->query[k], in->query, in->qlen, in->req->arena))
            return 0;
    return 1;
}

static const pt_route_t *scan_from(const pt_vhost_t *vh, const match_input_t *in, unsigned from)
{
    for (unsigned i = from; i < vh->nroutes; i++)
        if (route_accepts(&vh->routes[i], in))
            return &vh->routes[i];
    return NULL;
}

/* The index's answer: the best simple candidate S (lowest index among the routes matched by
 * path alone that accept the path), unless a complex route ahead of it accepts first. */
static const pt_route_t *match_indexed(const pt_vhost_t *vh, const match_input_t *in)
{
    const pt_route_index_t *ix = vh->index;
    /* A CONNECT request has no path: no simple route accepts it. */
    uint32_t s = in->connect
                     ? PT_ROUTE_INDEX_NONE
                     : pt_route_index_candidate(ix, vh->routes, in->path, in->plen, in->pend);
    unsigned nc;
    const uint32_t *complex = pt_route_index_complex(ix, &nc);
    for (unsigned k = 0; k < nc && complex[k] < s; k++)
        if (route_accepts(&vh->routes[complex[k]], in))
            return &vh->routes[complex[k]];
    if (s == PT_ROUTE_INDEX_NONE)
        return NULL;
    if (route_accepts(&vh->routes[s], in))
        return &vh->routes[s];
    /* Not reached (a simple route's path is all of its match); should the two ever
     * disagree, the routes after the candidate decide, in order, as the scan would. */
    return scan_from(vh, in, s + 1);
}

const pt_route_t *pt_route_match(const pt_vhost_t *vh, const pt_http_headers_t *req)
{
    match_input_t in;
    if (vh == NULL || req == NULL || !match_input_init(&in, req))
        return NULL;
    return vh->index != NULL ? match_indexed(vh, &in) : scan_from(vh, &in, 0);
}

const pt_route_t *pt_route_match_scan(const pt_vhost_t *vh, const pt_http_headers_t *req)
{
    match_input_t in;
    if (vh == NULL || req == NULL || !match_input_init(&in, req))
        return NULL;
    return scan_from(vh, &in, 0);
}

/* ---- actions ------------------------------------------------------------------------------ */

const char *pt_route_pick_cluster(const pt_route_t *rt, uint64_t random,
                                  const void **weighted_entry_out)
{
    if (weighted_entry_out != NULL)
        *weighted_entry_out = NULL;
    if (rt == NULL || rt->action != PT_ROUTE_ACTION_ROUTE)
        return NULL;
    switch (rt->cluster_kind) {
    case PT_ROUTE_CLUSTER_NAME:
        return rt->cluster;
    case PT_ROUTE_CLUSTER_HEADER:
        return NULL;
    case PT_ROUTE_CLUSTER_WEIGHTED:
        break;
    }
    if (rt->nweighted == 0 || rt->total_weight == 0)
        return NULL;
    /* Envoy's selection: a value in [0, total) lands in the entry whose cumulative range
     * holds it; binary search keeps long lists cheap. Zero-weight entries have an empty
     * range and are never picked. */
    uint64_t v = random % rt->total_weight;
    unsigned lo = 0, hi = rt->nweighted - 1;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (rt->weighted[mid].range_end > v)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (weighted_entry_out != NULL)
        *weighted_entry_out = &rt->weighted[lo];
    return rt->weighted[lo].name;
}

const char *pt_route_cluster_for_request(const pt_route_t *rt, const pt_http_headers_t *req,
                                         uint64_t random, const void **weighted_entry_out)
{
    if (rt != NULL && rt->action == PT_ROUTE_ACTION_ROUTE &&
        rt->cluster_kind == PT_ROUTE_CLUSTER_HEADER) {
        if (weighted_entry_out != NULL)
            *weighted_entry_out = NULL;
        const char *v = req ? pt_http_headers_get(req, rt->cluster_header) : NULL;
        return v != NULL && v[0] != '\0' ? v : NULL;
    }
    return pt_route_pick_cluster(rt, random, weighted_entry_out);
}

const char *pt_route_rewrite_path(const pt_route_t *rt, const char *path, pt_arena_t *a)
{
    if (rt == NULL || path == NULL || (rt->rewrite.prefix == NULL && rt->rewrite.regex == NULL))
        return NULL;
    size_t plen = strlen(path), pend = strcspn(path, "?#");
    if (rt->rewrite.prefix != NULL) {
        /* Replace what the route matched: the prefix, the whole path (path and regex
         * routes), keeping the rest (and the query string). */
        size_t matched = rt->match.kind == PT_PATH_REGEX ? pend : rt->match.path_len;
        if (matched > plen)
            matched = plen;
        return pt_arena_sprintf(a, "%s%s", rt->rewrite.prefix, path + matched);
    }
    size_t n;
    char *r = pt_regex_replace_all(rt->rewrite.regex, path, pend, rt->rewrite.substitution, a, &n);
    if (r == NULL)
        return NULL;
    return pt_arena_sprintf(a, "%.*s%s", (int)n, r, path + pend);
}

/* Envoy's processRequestHost: the request's host, without its port when a port_redirect
 * replaces it, or when the scheme changes and the port was the old scheme's default. */
static size_t redirect_host_len(const char *host, const char *new_scheme,
                                const char *request_scheme, int new_port)
{
    size_t n = strlen(host);
    if (n == 0)
        return 0;
    size_t end = n;
    if (host[0] == '[') {
        const char *p = NULL;
        for (size_t i = n; i-- > 1;)
            if (host[i] == ':' && host[i - 1] == ']') {
                p = host + i;
                break;
            }
        if (p != NULL)
            end = (size_t)(p - host);
    } else {
        const char *p = strrchr(host, ':');
        if (p != NULL)
            end = (size_t)(p - host);
    }
    if (end == n)
        return n;
    const char *port = host + end;
    int remove = new_port;
    if (strcmp(new_scheme, request_scheme) != 0) {
        remove |= strcmp(request_scheme, "https") == 0 && strcmp(port, ":443") == 0;
        remove |= strcmp(request_scheme, "http") == 0 && strcmp(port, ":80") == 0;
    }
    return remove ? end : n;
}

int pt_route_redirect(const pt_route_t *rt, const pt_http_headers_t *req, const char *scheme,
                      pt_arena_t *a, const char **location)
{
    if (rt == NULL || rt->action != PT_ROUTE_ACTION_REDIRECT || location == NULL)
        return -1;
    const pt_redirect_t *rd = &rt->redirect;
    const char *path = req ? pt_http_headers_get(req, ":path") : NULL;
    const char *host = req ? pt_http_headers_get(req, ":authority") : NULL;
    if (path == NULL)
        path = "";
    if (host == NULL)
        host = "";
    if (scheme == NULL)
        scheme = "http";
    const char *rw = pt_route_rewrite_path(rt, path, a);
    if (rw != NULL)
        path = rw;

    const char *final_scheme = rd->scheme_redirect  ? rd->scheme_redirect
                               : rd->https_redirect ? "https"
                                                    : scheme;
    char port[16] = "";
    if (rd->port_redirect != 0)
        snprintf(port, sizeof(port), ":%u", (unsigned)rd->port_redirect);
    size_t host_len = rd->host_redirect
                          ? strlen(host = rd->host_redirect)
                          : redirect_host_len(host, final_scheme, scheme, port[0] != '\0');

    /* The path: path_redirect (keeping the request's query unless it has its own), or the
     * (rewritten) request path. */
    const char *fp = path, *fq = "";
    if (rd->path_redirect != NULL) {
        fp = rd->path_redirect;
        if (!rd->path_redirect_has_query) {
            const char *q = strchr(path, '?');
            fq = q ? q : "";
        }
    }
    size_t fp_len = strlen(fp), fq_len = strlen(fq);
    if (rd->strip_query && !rd->path_redirect_has_query) {
        const char *q = memchr(fp, '?', fp_len);
        if (q != NULL) {
            fp_len = (size_t)(q - fp);
            fq_len = 0;
        } else {
            fq_len = 0;
        }
    }
    const char *slash = fp[0] == '/' ? "" : "/";
    *location = pt_arena_sprintf(a, "%s://%.*s%s%s%.*s%.*s", final_scheme, (int)host_len, host,
                                 port, slash, (int)fp_len, fp, (int)fq_len, fq);
    return *location != NULL ? rd->response_code : -1;
}

int pt_vhost_tls_redirect(const pt_vhost_t *vh, const pt_http_headers_t *req, int is_tls,
                          int internal, pt_arena_t *a, const char **location)
{
    if (vh == NULL || is_tls || vh->require_tls == PT_REQUIRE_TLS_NONE)
        return 0;
    if (vh->require_tls == PT_REQUIRE_TLS_EXTERNAL_ONLY && internal)
        return 0;
    const char *host = req ? pt_http_headers_get(req, ":authority") : NULL;
    const char *path = req ? pt_http_headers_get(req, ":path") : NULL;
    *location = pt_arena_sprintf(a, "https://%s%s", host ? host : "", path ? path : "/");
    return *location != NULL ? 301 : 0;
}

/* ---- header mutations at request time -------------------------------------------------- */

static void mutate(const pt_route_config_t *rc, const pt_vhost_t *vh, const pt_route_t *rt,
                   const pt_weighted_cluster_t *wc, pt_http_headers_t *h,
                   const pt_stream_info_t *si, int response)
{
#define LEVEL(x) ((x) == NULL ? NULL : response ? &(x)->response_headers : &(x)->request_headers)
    /* The weighted cluster entry always goes first (as Envoy evaluates it), then route,
     * virtual host and route config: later levels overwrite earlier ones, so by default
     * the least specific wins; most_specific_header_mutations_wins reverses the three. */
    pt_header_mutations_apply(LEVEL(wc), h, si);
    const pt_header_mutations_t *levels[3] = {LEVEL(rt), LEVEL(vh), LEVEL(rc)};
#undef LEVEL
    int ascend = rc != NULL && rc->most_specific_header_mutations_wins;
    for (int i = 0; i < 3; i++)
        pt_header_mutations_apply(levels[ascend ? 2 - i : i], h, si);
}

void pt_route_mutate_request_headers(const pt_route_config_t *rc, const pt_vhost_t *vh,
                                     const pt_route_t *rt, const void *weighted_entry,
                                     pt_http_headers_t *h, const pt_stream_info_t *si)
{
    mutate(rc, vh, rt, weighted_entry, h, si, 0);
}

void pt_route_mutate_response_headers(const pt_route_config_t *rc, const pt_vhost_t *vh,
                                      const pt_route_t *rt, const void *weighted_entry,
                                      pt_http_headers_t *h, const pt_stream_info_t *si)
{
    mutate(rc, vh, rt, weighted_entry, h, si, 1);
}

/* ---- hash policies ------------------------------------------------------------------------ */

typedef struct hash_value {
    const char *s;
    size_t len;
} hash_value_t;

static int value_cmp(const void *a, const void *b)
{
    const hash_value_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Envoy's header hash: every value of the header (rewritten by regex_rewrite), sorted so
 * their order does not matter, each hashed with the hash of those before it as the seed. */
static int header_hash(const pt_hash_policy_t *hp, const pt_http_headers_t *req, uint64_t *out)
{
    hash_value_t local[8], *vals = local;
    unsigned n = 0, cap = 8;
    for (uint32_t i = 0; i < req->count; i++) {
        const pt_http_header_t *e = &req->items[i];
        if (e->name_len != hp->name_len || memcmp(e->name, hp->name, hp->name_len) != 0)
            continue;
        if (n == cap) {
            hash_value_t *more = pt_arena_alloc(req->arena, 2 * cap * sizeof(*more));
            if (more == NULL)
                return 0;
            memcpy(more, vals, n * sizeof(*more));
            vals = more;
            cap *= 2;
        }
        vals[n].s = e->value;
        vals[n].len = e->value_len;
        if (hp->regex != NULL) {
            size_t len;
            const char *v = pt_regex_replace_all(hp->regex, e->value, e->value_len,
                                                 hp->substitution, req->arena, &len);
            if (v == NULL)
                return 0;
            vals[n].s = v;
            vals[n].len = len;
        }
        n++;
    }
    if (n == 0)
        return 0;
    if (n > 1)
        qsort(vals, n, sizeof(*vals), value_cmp);
    uint64_t h = 0;
    for (unsigned i = 0; i < n; i++)
        h = pt_xxhash64(vals[i].s, vals[i].len, h);
    *out = h;
    return 1;
}

/* The value of cookie `name` in the request's Cookie headers (the first found, without
 * surrounding double quotes), as Envoy's parseCookieValue. 0 when absent. */
static int cookie_value(const pt_http_headers_t *req, const char *name, size_t nlen,
                        const char **v, size_t *vlen)
{
    for (uint32_t i = 0; i < req->count; i++) {
        const pt_http_header_t *e = &req->items[i];
        if (e->name_len != 6 || memcmp(e->name, "cookie", 6) != 0)
            continue;
        const char *p = e->value, *end = p + e->value_len;
        while (p < end) {
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *ce = semi ? semi : end;
            while (p < ce && *p == ' ')
                p++;
            const char *eq = memchr(p, '=', (size_t)(ce - p));
            if (eq != NULL && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
                const char *vs = eq + 1;
                size_t vl = (size_t)(ce - vs);
                if (vl >= 2 && vs[0] == '"' && vs[vl - 1] == '"') {
                    vs++;
                    vl -= 2;
                }
                *v = vs;
                *vlen = vl;
                return 1;
            }
            p = semi ? semi + 1 : end;
        }
    }
    return 0;
}

/* The first value of query parameter `name` in :path, undecoded, as Envoy's
 * QueryParamsMulti::getFirstValue ("?a" has the value ""). */
static int query_value(const pt_http_headers_t *req, const char *name, size_t nlen,
                       const char **v, size_t *vlen)
{
    const char *path = pt_http_headers_get(req, ":path");
    const char *q = path != NULL ? strchr(path, '?') : NULL;
    if (q == NULL)
        return 0;
    q++;
    size_t qlen = strcspn(q, "#");
    const char *end = q + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - q) == nlen && memcmp(q, name, nlen) == 0) {
            *v = eq ? eq + 1 : pe;
            *vlen = eq ? (size_t)(pe - eq - 1) : 0;
            return 1;
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
}

static int policy_hash(const pt_hash_policy_t *hp, const pt_http_headers_t *req,
                       const pt_addr_t *client, pt_route_cookie_fn add_cookie, void *data,
                       uint64_t *out)
{
    const char *v;
    size_t vlen;
    switch (hp->kind) {
    case PT_HASH_POLICY_HEADER:
        return hp->name != NULL && header_hash(hp, req, out);
    case PT_HASH_POLICY_COOKIE:
        if (hp->name == NULL)
            return 0;
        if (cookie_value(req, hp->name, hp->name_len, &v, &vlen) && vlen > 0) {
            *out = pt_xxhash64(v, vlen, 0);
            return 1;
        }
        /* No cookie (or an empty one): with a ttl one is made and set on the response. */
        if (!hp->has_ttl || add_cookie == NULL || (v = add_cookie(data, hp)) == NULL)
            return 0;
        *out = pt_xxhash64(v, strlen(v), 0);
        return 1;
    case PT_HASH_POLICY_SOURCE_IP: {
        if (client == NULL || (client->sa.sa_family != AF_INET && client->sa.sa_family != AF_INET6))
            return 0;
        char ip[64];
        pt_addr_format_ip(client, ip, sizeof(ip));
        if (ip[0] == '\0')
            return 0;
        *out = pt_xxhash64(ip, strlen(ip), 0);
        return 1;
    }
    case PT_HASH_POLICY_QUERY_PARAM:
        if (hp->name == NULL || !query_value(req, hp->name, hp->name_len, &v, &vlen))
            return 0;
        *out = pt_xxhash64(v, vlen, 0);
        return 1;
    }
    return 0;
}

int pt_route_hash(const pt_route_t *rt, const pt_http_headers_t *req, const pt_addr_t *client,
                  pt_route_cookie_fn add_cookie, void *data, uint64_t *out)
{
    int have = 0;
    uint64_t hash = 0;
    for (unsigned i = 0; i < rt->nhash_policies; i++) {
        const pt_hash_policy_t *hp = &rt->hash_policies[i];
        uint64_t h;
        if (!policy_hash(hp, req, client, add_cookie, data, &h))
            continue;
        hash = have ? pt_hash_combine(hash, h) : h;
        have = 1;
        if (hp->terminal)
            break;
    }
    *out = hash;
    return have;
}

void pt_route_cookie_value(const pt_addr_t *remote, const pt_addr_t *local, char out[17])
{
    char buf[2 * PT_ADDR_STRLEN];
    size_t n = 0;
    if (remote != NULL) {
        pt_addr_format(remote, buf, PT_ADDR_STRLEN);
        n = strlen(buf);
    }
    if (local != NULL)
        pt_addr_format(local, buf + n, PT_ADDR_STRLEN);
    else
        buf[n] = '\0';
    uint64_t h = pt_xxhash64(buf, strlen(buf), 0);
    snprintf(out, 17, "%016" PRIx64, h);
}

const char *pt_route_set_cookie(const pt_hash_policy_t *p, const char *value, pt_arena_t *a)
{
    size_t len = strlen(p->name) + strlen(value) + 64 + (p->path ? strlen(p->path) : 0);
    for (unsigned i = 0; i < p->nattributes; i++)
        len += strlen(p->attributes[i].name) + strlen(p->attributes[i].value) + 4;
    char *out = pt_arena_alloc(a, len);
    if (out == NULL)
        return NULL;
    size_t n = (size_t)snprintf(out, len, "%s=\"%s\"", p->name, value);
    if (p->ttl_s > 0)
        n += (size_t)snprintf(out + n, len - n, "; Max-Age=%" PRIu64, p->ttl_s);
    if (p->path != NULL)
        n += (size_t)snprintf(out + n, len - n, "; Path=%s", p->path);
    for (unsigned i = 0; i < p->nattributes; i++) {
        const pt_cookie_attribute_t *at = &p->attributes[i];
        n += (size_t)snprintf(out + n, len - n, at->value[0] ? "; %s=%s" : "; %s", at->name,
                              at->value);
    }
    snprintf(out + n, len - n, "; HttpOnly");
    return out;
}
