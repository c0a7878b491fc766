/* The RBAC engine and the config of both RBAC filters (see filters/rbac.h).
 *
 * Permissions and principals are one tree of nodes: and/or/not sets over leaves (any,
 * header, url_path, CIDR ranges, ports, SNI, authenticated). Policies are sorted by name at
 * parse time so evaluation walks them in Envoy's order and stops at the first match. */
#include "filters/rbac.h"

#include "tls/transport.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/log.h"
#include "proxy/matcher.h"
#include "proxy/metadata.h"

/* ---- the rule tree ------------------------------------------------------------------- */

typedef enum node_kind {
    N_ANY,
    N_AND,
    N_OR,
    N_NOT,
    N_HEADER,
    N_URL_PATH,
    N_DEST_IP,
    N_DEST_PORT, /* destination_port and destination_port_range: [start, end) */
    N_SNI,
    N_AUTHENTICATED,
    N_DIRECT_REMOTE_IP, /* direct_remote_ip and the deprecated source_ip */
    N_REMOTE_IP,
    N_METADATA, /* metadata: dynamic metadata; sourced_metadata: dynamic or the route's */
} node_kind_t;

typedef struct cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned len;
    uint8_t bytes[16]; /* host bits cleared */
} cidr_t;

typedef struct node node_t;
struct node {
    node_kind_t kind;
    union {
        struct {
            const node_t *kids;
            unsigned n;
        } set; /* and/or; not has n == 1 */
        pt_header_matcher_t header;
        struct {
            int has; /* authenticated without principal_name: has == 0 */
            pt_string_matcher_t m;
        } str; /* url_path, requested_server_name, authenticated */
        cidr_t cidr;
        struct {
            uint32_t start, end;
        } ports;
        struct {
            const pt_md_matcher_t *m;
            int route; /* sourced_metadata with metadata_source ROUTE */
        } md;
    } u;
};

typedef struct policy {
    const char *name;
    const char *details; /* rbac_access_denied_matched_policy[name] */
    const node_t *perms;
    unsigned nperms;
    const node_t *principals;
    unsigned nprincipals;
} policy_t;

struct pt_rbac_rules {
    pt_rbac_action_t action;
    const policy_t *policies; /* sorted by name (byte order, as std::map<std::string>) */
    unsigned npolicies;
    unsigned needs;
};

static const char DETAILS_NONE[] = "rbac_access_denied_matched_policy[none]";

/* ---- parsing ------------------------------------------------------------------------- */

typedef struct pctx {
    pt_cfg_t *r;
    pt_arena_t *a;
    unsigned flags;
    unsigned needs;
} pctx_t;

static const char *const rbac_unsupported[] = {"audit_logging_options", NULL};
static const char *const policy_unsupported[] = {"condition", "checked_condition", "cel_config",
                                                 NULL};
static const char *const perm_kinds[] = {"and_rules",
                                         "or_rules",
                                         "any",
                                         "header",
                                         "url_path",
                                         "destination_ip",
                                         "destination_port",
                                         "destination_port_range",
                                         "requested_server_name",
                                         "not_rule",
                                         "metadata",
                                         "sourced_metadata",
                                         NULL};
static const char *const perm_unsupported[] = {"matcher", "uri_template", NULL};
static const char *const principal_kinds[] = {
    "and_ids",   "or_ids", "any",      "authenticated", "source_ip", "direct_remote_ip",
    "remote_ip", "header", "url_path", "not_id",        "metadata", "sourced_metadata", NULL};
static const char *const principal_unsupported[] = {"filter_state", "custom", NULL};
static const char *const action_names[] = {"ALLOW", "DENY", NULL};
static const char *const action_known[] = {"LOG", NULL};
static const char *const enforcement_names[] = {"ONE_TIME_ON_FIRST_BYTE", "CONTINUOUS", NULL};
static const char *const http_unsupported[] = {"matcher", "shadow_matcher", NULL};
static const char *const network_unsupported[] = {"matcher", "shadow_matcher", "delay_deny", NULL};

static void parse_header(pctx_t *p, pt_header_matcher_t *hm)
{
    p->needs |= PT_RBAC_NEEDS_HEADERS;
    pt_header_matcher_parse(p->r, p->a, hm);
}

/* core.v3.CidrRange {address_prefix, prefix_len}. */
static void parse_cidr(pctx_t *p, const char *field, cidr_t *c)
{
    pt_cfg_t *r = p->r;
    memset(c, 0, sizeof(*c));
    if (pt_cfg_enter(r, field) <= 0)
        return;
    const char *s;
    int rc = pt_cfg_string(r, "address_prefix", &s, NULL);
    pt_addr_t a;
    if (rc == 0 || (rc > 0 && s[0] == '\0')) {
        pt_cfg_error(r, "address_prefix", "is required");
    } else if (rc > 0 && pt_addr_parse(&a, s, 0) != 0) {
        char q[300];
        pt_cfg_error(r, "address_prefix", "%s is not an IP address", pt_cfg_quote(s, q, sizeof(q)));
    } else if (rc > 0) {
        c->family = a.sa.sa_family;
        if (c->family == AF_INET)
            memcpy(c->bytes, &a.sin.sin_addr, 4);
        else
            memcpy(c->bytes, &a.sin6.sin6_addr, 16);
    }
    uint64_t len;
    if (pt_cfg_uint(r, "prefix_len", &len, 0, 0, 128) > 0 && c->family == AF_INET && len > 32)
        pt_cfg_error(r, "prefix_len", "%u is out of range for an IPv4 address (at most 32)",
                     (unsigned)len);
    c->len = (unsigned)len;
    /* Envoy keeps the prefix only: 10.1.2.3/8 is 10.0.0.0/8. */
    unsigned bits = c->family == AF_INET ? 32 : 128;
    if (c->len > bits)
        c->len = bits;
    for (unsigned i = c->len; i < bits; i++)
        c->bytes[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    pt_cfg_leave(r);
}

static void parse_string_matcher(pctx_t *p, const char *field, pt_string_matcher_t *m)
{
    if (pt_cfg_enter(p->r, field) > 0) {
        pt_string_matcher_parse(p->r, p->a, m);
        pt_cfg_leave(p->r);
    }
}

/* type.matcher.v3.PathMatcher {path: StringMatcher}. */
static void parse_path_matcher(pctx_t *p, const char *field, pt_string_matcher_t *m)
{
    p->needs |= PT_RBAC_NEEDS_HEADERS;
    if (pt_cfg_enter(p->r, field) <= 0)
        return;
    if (!pt_cfg_has(p->r, "path"))
        pt_cfg_error(p->r, "path", "is required");
    else
        parse_string_matcher(p, "path", m);
    pt_cfg_leave(p->r);
}

static void parse_permission(pctx_t *p, node_t *n);
static void parse_principal(pctx_t *p, node_t *n);

/* metadata (a MetadataMatcher on the stream's dynamic metadata) or sourced_metadata
 * {metadata_matcher, metadata_source: DYNAMIC | ROUTE}. The network filter's connections
 * carry no metadata: there, as in Envoy, nothing is present, so only invert matches. */
static void parse_metadata(pctx_t *p, const char *field, node_t *n)
{
    pt_cfg_t *r = p->r;
    n->kind = N_METADATA;
    p->needs |= PT_RBAC_NEEDS_METADATA;
    if (pt_cfg_enter(r, field) <= 0)
        return;
    if (strcmp(field, "metadata") == 0) {
        n->u.md.m = pt_md_matcher_parse(r, p->a);
    } else {
        static const char *const sources[] = {"DYNAMIC", "ROUTE", NULL};
        int src;
        pt_cfg_enum(r, "metadata_source", sources, NULL, &src, 0);
        n->u.md.route = src == 1;
        if (pt_cfg_enter(r, "metadata_matcher") > 0) {
            n->u.md.m = pt_md_matcher_parse(r, p->a);
            pt_cfg_leave(r);
        } else {
            pt_cfg_error(r, "metadata_matcher", "is required");
        }
    }
    pt_cfg_leave(r);
}

/* A Set ({rules: [...]} or {ids: [...]}) or a single nested message (not_rule, not_id). */
static void parse_set(pctx_t *p, const char *field, const char *list, node_t *n, int principal)
{
    pt_cfg_t *r = p->r;
    if (pt_cfg_enter(r, field) <= 0)
        return;
    int present;
    size_t cnt = pt_cfg_array(r, list, &present);
    if (present && cnt == 0)
        pt_cfg_error(r, NULL, "must not be empty");
    else if (!present && !pt_cfg_has(r, list))
        pt_cfg_error(r, list, "is required");
    node_t *kids = pt_arena_alloc(p->a, (cnt ? cnt : 1) * sizeof(*kids));
    for (size_t i = 0; kids != NULL && i < cnt; i++) {
        if (pt_cfg_enter_index(r, i) > 0) {
            if (principal)
                parse_principal(p, &kids[n->u.set.n++]);
            else
                parse_permission(p, &kids[n->u.set.n++]);
            pt_cfg_leave(r);
        }
    }
    n->u.set.kids = kids;
    if (present)
        pt_cfg_leave_array(r);
    pt_cfg_leave(r);
}

static void parse_not(pctx_t *p, const char *field, node_t *n, int principal)
{
    node_t *kid = pt_arena_alloc(p->a, sizeof(*kid));
    n->u.set.kids = kid;
    n->u.set.n = 1;
    if (kid == NULL || pt_cfg_enter(p->r, field) <= 0) {
        n->u.set.n = 0;
        return;
    }
    if (principal)
        parse_principal(p, kid);
    else
        parse_permission(p, kid);
    pt_cfg_leave(p->r);
}

static void parse_any(pctx_t *p, node_t *n)
{
    int v;
    n->kind = N_ANY;
    if (pt_cfg_bool(p->r, "any", &v, 0) > 0 && !v)
        pt_cfg_error(p->r, "any", "must be true");
}

static void parse_permission(pctx_t *p, node_t *n)
{
    pt_cfg_t *r = p->r;
    memset(n, 0, sizeof(*n));
    n->kind = N_ANY;
    pt_cfg_unsupported(r, perm_unsupported);
    int k = pt_cfg_oneof(r, perm_kinds, !pt_cfg_has_any(r, perm_unsupported));
    uint64_t port;
    switch (k) {
    case 0:
        n->kind = N_AND;
        parse_set(p, "and_rules", "rules", n, 0);
        break;
    case 1:
        n->kind = N_OR;
        parse_set(p, "or_rules", "rules", n, 0);
        break;
    case 2:
        parse_any(p, n);
        break;
    case 3:
        n->kind = N_HEADER;
        if (p->flags & PT_RBAC_PARSE_NETWORK) {
            pt_cfg_error(r, "header",
                         "is not supported by the RBAC network filter (a "
                         "connection has no HTTP headers)");
            (void)pt_cfg_get(r, "header");
            break;
        }
        if (pt_cfg_enter(r, "header") > 0) {
            parse_header(p, &n->u.header);
            pt_cfg_leave(r);
        }
        break;
    case 4:
        n->kind = N_URL_PATH;
        parse_path_matcher(p, "url_path", &n->u.str.m);
        break;
    case 5:
        n->kind = N_DEST_IP;
        p->needs |= PT_RBAC_NEEDS_LOCAL;
        parse_cidr(p, "destination_ip", &n->u.cidr);
        break;
    case 6:
        n->kind = N_DEST_PORT;
        p->needs |= PT_RBAC_NEEDS_LOCAL;
        pt_cfg_uint(r, "destination_port", &port, 0, 0, 65535);
        n->u.ports.start = (uint32_t)port;
        n->u.ports.end = (uint32_t)port + 1;
        break;
    case 7: {
        n->kind = N_DEST_PORT;
        p->needs |= PT_RBAC_NEEDS_LOCAL;
        if (pt_cfg_enter(r, "destination_port_range") <= 0)
            break;
        /* type.v3.Int32Range: start inclusive, end exclusive; Envoy's bounds checks. */
        int64_t start, end;
        int rs = pt_cfg_int64(r, "start", &start), re = pt_cfg_int64(r, "end", &end);
        int ok = rs >= 0 && re >= 0;
        if (rs >= 0 && (start < 0 || start > 65536)) {
            pt_cfg_error(r, "start", "%lld is out of range [0, 65536]", (long long)start);
            ok = 0;
        }
        if (re >= 0 && (end < 0 || end > 65536)) {
            pt_cfg_error(r, "end", "%lld is out of range [0, 65536]", (long long)end);
            ok = 0;
        }
        if (ok && start >= end)
            pt_cfg_error(r, NULL, "start (%lld) must be less than end (%lld)", (long long)start,
                         (long long)end);
        n->u.ports.start = ok ? (uint32_t)start : 0;
        n->u.ports.end = ok ? (uint32_t)end : 0;
        pt_cfg_leave(r);
        break;
    }
    case 8:
        n->kind = N_SNI;
        p->needs |= PT_RBAC_NEEDS_SNI;
        n->u.str.has = 1;
        parse_string_matcher(p, "requested_server_name", &n->u.str.m);
        break;
    case 9:
        n->kind = N_NOT;
        parse_not(p, "not_rule", n, 0);
        break;
    case 10:
    case 11:
        parse_metadata(p, perm_kinds[k], n);
        break;
    default:
        break;
    }
}

static void parse_principal(pctx_t *p, node_t *n)
{
    pt_cfg_t *r = p->r;
    memset(n, 0, sizeof(*n));
    n->kind = N_ANY;
    pt_cfg_unsupported(r, principal_unsupported);
    int k = pt_cfg_oneof(r, principal_kinds, !pt_cfg_has_any(r, principal_unsupported));
    switch (k) {
    case 0:
        n->kind = N_AND;
        parse_set(p, "and_ids", "ids", n, 1);
        break;
    case 1:
        n->kind = N_OR;
        parse_set(p, "or_ids", "ids", n, 1);
        break;
    case 2:
        parse_any(p, n);
        break;
    case 3:
        n->kind = N_AUTHENTICATED;
        p->needs |= PT_RBAC_NEEDS_PEER;
        if (pt_cfg_enter(r, "authenticated") > 0) {
            if (pt_cfg_has(r, "principal_name")) {
                n->u.str.has = 1;
                parse_string_matcher(p, "principal_name", &n->u.str.m);
            }
            pt_cfg_leave(r);
        }
        break;
    case 4:
    case 5:
        /* source_ip is the connection's peer: petrel has no PROXY protocol, so it is the
         * direct remote address, as in Envoy without one. */
        n->kind = N_DIRECT_REMOTE_IP;
        p->needs |= PT_RBAC_NEEDS_DIRECT_REMOTE;
        parse_cidr(p, principal_kinds[k], &n->u.cidr);
        break;
    case 6:
        n->kind = N_REMOTE_IP;
        p->needs |= PT_RBAC_NEEDS_REMOTE;
        parse_cidr(p, "remote_ip", &n->u.cidr);
        break;
    case 7:
        n->kind = N_HEADER;
        if (p->flags & PT_RBAC_PARSE_NETWORK) {
            pt_cfg_error(r, "header",
                         "is not supported by the RBAC network filter (a "
                         "connection has no HTTP headers)");
            (void)pt_cfg_get(r, "header");
            break;
        }
        if (pt_cfg_enter(r, "header") > 0) {
            parse_header(p, &n->u.header);
            pt_cfg_leave(r);
        }
        break;
    case 8:
        n->kind = N_URL_PATH;
        parse_path_matcher(p, "url_path", &n->u.str.m);
        break;
    case 9:
        n->kind = N_NOT;
        parse_not(p, "not_id", n, 1);
        break;
    case 10:
    case 11:
        parse_metadata(p, principal_kinds[k], n);
        break;
    default:
        break;
    }
}

/* permissions / principals of a Policy: required, at least one entry. */
static const node_t *parse_node_list(pctx_t *p, const char *field, unsigned *count, int principal)
{
    pt_cfg_t *r = p->r;
    int present;
    size_t cnt = pt_cfg_array(r, field, &present);
    *count = 0;
    if (present && cnt == 0)
        pt_cfg_error(r, NULL, "must not be empty");
    else if (!present && !pt_cfg_has(r, field))
        pt_cfg_error(r, field, "is required");
    node_t *nodes = pt_arena_alloc(p->a, (cnt ? cnt : 1) * sizeof(*nodes));
    for (size_t i = 0; nodes != NULL && i < cnt; i++) {
        if (pt_cfg_enter_index(r, i) > 0) {
            if (principal)
                parse_principal(p, &nodes[*count]);
            else
                parse_permission(p, &nodes[*count]);
            (*count)++;
            pt_cfg_leave(r);
        }
    }
    if (present)
        pt_cfg_leave_array(r);
    return nodes;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Envoy's responseDetail: whitespace in the name would split access log fields. */
static const char *deny_details(pt_arena_t *a, const char *name)
{
    char *d = pt_arena_sprintf(a, "rbac_access_denied_matched_policy[%s]", name);
    for (char *c = d ? d + strlen("rbac_access_denied_matched_policy[") : NULL; c && *c; c++)
        if (isspace((unsigned char)*c))
            *c = '_';
    return d;
}

pt_rbac_rules_t *pt_rbac_rules_parse(pt_cfg_t *r, pt_arena_t *a, unsigned flags)
{
    size_t errors_before = r->nerrors;
    pctx_t p = {.r = r, .a = a, .flags = flags};
    pt_rbac_rules_t *rules = pt_arena_alloc(a, sizeof(*rules));
    if (rules == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    pt_cfg_unsupported(r, rbac_unsupported);
    int action;
    pt_cfg_enum(r, "action", action_names, action_known, &action, PT_RBAC_ACTION_ALLOW);
    rules->action = (pt_rbac_action_t)action;

    if (pt_cfg_enter(r, "policies") > 0) {
        /* A map: every key is a policy name and none is "unknown" (more than
         * PT_CFG_MAX_FIELDS of them would otherwise be reported). */
        json_t *map = r->frames[r->depth - 1].node;
        pt_cfg_skip_rest(r);
        size_t n = json_object_size(map), i = 0;
        const char **names = pt_arena_alloc(a, (n ? n : 1) * sizeof(*names));
        policy_t *pol = pt_arena_alloc(a, (n ? n : 1) * sizeof(*pol));
        const char *key;
        json_t *val;
        json_object_foreach(map, key, val)
        {
            if (names != NULL && i < n)
                names[i++] = key;
        }
        if (names != NULL)
            qsort(names, i, sizeof(*names), cmp_str);
        for (size_t j = 0; pol != NULL && names != NULL && j < i; j++) {
            policy_t *po = &pol[rules->npolicies];
            if (pt_cfg_enter(r, names[j]) <= 0)
                continue;
            pt_cfg_unsupported(r, policy_unsupported);
            po->name = pt_arena_strdup(a, names[j]);
            po->details = deny_details(a, names[j]);
            po->perms = parse_node_list(&p, "permissions", &po->nperms, 0);
            po->principals = parse_node_list(&p, "principals", &po->nprincipals, 1);
            rules->npolicies++;
            pt_cfg_leave(r);
        }
        rules->policies = pol;
        pt_cfg_leave(r);
    }
    rules->needs = p.needs;
    return r->nerrors == errors_before ? rules : NULL;
}

pt_rbac_action_t pt_rbac_rules_action(const pt_rbac_rules_t *rules)
{
    return rules->action;
}

unsigned pt_rbac_rules_npolicies(const pt_rbac_rules_t *rules)
{
    return rules->npolicies;
}

unsigned pt_rbac_rules_needs(const pt_rbac_rules_t *rules)
{
    return rules->needs;
}

/* ---- evaluation ---------------------------------------------------------------------- */

static int cidr_matches(const cidr_t *c, const pt_addr_t *a)
{
    if (c->family == 0 || a->sa.sa_family != c->family)
        return 0;
    const uint8_t *b = c->family == AF_INET ? (const uint8_t *)&a->sin.sin_addr
                                            : (const uint8_t *)&a->sin6.sin6_addr;
    unsigned full = c->len / 8, rest = c->len % 8;
    if (memcmp(b, c->bytes, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (b[full] & mask) == c->bytes[full];
}

static int port_of(const pt_addr_t *a, unsigned *port)
{
    if (a->sa.sa_family != AF_INET && a->sa.sa_family != AF_INET6)
        return 0;
    *port = pt_addr_port(a);
    return 1;
}

/* Envoy's AuthenticatedMatcher: URI SANs, then DNS SANs, then the subject. */
static int authenticated_matches(const node_t *n, const pt_peer_identity_t *id)
{
    if (id == NULL || !id->verified)
        return 0;
    if (!n->u.str.has)
        return 1;
    const pt_string_matcher_t *m = &n->u.str.m;
    for (unsigned i = 0; i < id->nuri_sans; i++)
        if (id->uri_sans[i] != NULL &&
            pt_string_matcher_match(m, id->uri_sans[i], strlen(id->uri_sans[i])))
            return 1;
    for (unsigned i = 0; i < id->ndns_sans; i++)
        if (id->dns_sans[i] != NULL &&
            pt_string_matcher_match(m, id->dns_sans[i], strlen(id->dns_sans[i])))
            return 1;
    const char *subj = id->subject ? id->subject : "";
    return pt_string_matcher_match(m, subj, strlen(subj));
}

static int node_matches(const node_t *n, const pt_rbac_ctx_t *ctx)
{
    switch (n->kind) {
    case N_ANY:
        return 1;
    case N_AND:
        for (unsigned i = 0; i < n->u.set.n; i++)
            if (!node_matches(&n->u.set.kids[i], ctx))
                return 0;
        return 1;
    case N_OR:
        for (unsigned i = 0; i < n->u.set.n; i++)
            if (node_matches(&n->u.set.kids[i], ctx))
                return 1;
        return 0;
    case N_NOT:
        return n->u.set.n == 1 && !node_matches(&n->u.set.kids[0], ctx);
    case N_HEADER:
        return pt_header_matcher_match(&n->u.header, ctx->headers);
    case N_URL_PATH: {
        const char *path = ctx->headers ? pt_http_headers_get(ctx->headers, ":path") : NULL;
        if (path == NULL)
            return 0;
        /* PathMatcher matches the path without the query string and fragment. */
        size_t len = strcspn(path, "?#");
        return pt_string_matcher_match(&n->u.str.m, path, len);
    }
    case N_DEST_IP:
        return cidr_matches(&n->u.cidr, &ctx->local);
    case N_DEST_PORT: {
        unsigned port;
        return port_of(&ctx->local, &port) && port >= n->u.ports.start && port < n->u.ports.end;
    }
    case N_SNI: {
        const char *sni = ctx->requested_server_name ? ctx->requested_server_name : "";
        return pt_string_matcher_match(&n->u.str.m, sni, strlen(sni));
    }
    case N_AUTHENTICATED:
        return authenticated_matches(n, ctx->peer);
    case N_DIRECT_REMOTE_IP:
        return cidr_matches(&n->u.cidr, &ctx->direct_remote);
    case N_REMOTE_IP:
        return cidr_matches(&n->u.cidr, &ctx->remote);
    case N_METADATA: {
        static const pt_metadata_t none;
        if (n->u.md.m == NULL)
            return 0;
        if (n->u.md.route)
            return pt_md_matcher_match(n->u.md.m, NULL,
                                       ctx->route_metadata ? ctx->route_metadata : &none);
        return pt_md_matcher_match(n->u.md.m, ctx->dynamic_metadata, NULL);
    }
    }
    return 0;
}

static int any_matches(const node_t *nodes, unsigned n, const pt_rbac_ctx_t *ctx)
{
    for (unsigned i = 0; i < n; i++)
        if (node_matches(&nodes[i], ctx))
            return 1;
    return 0;
}

/* The first policy (in name order) that matches, or NULL. */
static const policy_t *first_match(const pt_rbac_rules_t *rules, const pt_rbac_ctx_t *ctx)
{
    for (unsigned i = 0; i < rules->npolicies; i++) {
        const policy_t *po = &rules->policies[i];
        if (any_matches(po->perms, po->nperms, ctx) &&
            any_matches(po->principals, po->nprincipals, ctx))
            return po;
    }
    return NULL;
}

int pt_rbac_rules_check(const pt_rbac_rules_t *rules, const pt_rbac_ctx_t *ctx, const char **policy)
{
    const policy_t *po = first_match(rules, ctx);
    if (policy != NULL)
        *policy = po ? po->name : NULL;
    return rules->action == PT_RBAC_ACTION_ALLOW ? po != NULL : po == NULL;
}

static void outcome(const pt_rbac_rules_t *rules, const pt_rbac_ctx_t *ctx, pt_rbac_outcome_t *o)
{
    memset(o, 0, sizeof(*o));
    if (rules == NULL) {
        o->verdict = PT_RBAC_NO_RULES;
        return;
    }
    const policy_t *po = first_match(rules, ctx);
    int allowed = rules->action == PT_RBAC_ACTION_ALLOW ? po != NULL : po == NULL;
    o->verdict = allowed ? PT_RBAC_ALLOWED : PT_RBAC_DENIED;
    o->policy = po ? po->name : NULL;
    o->details = po ? po->details : DETAILS_NONE;
}

void pt_rbac_evaluate(const pt_rbac_config_t *c, const pt_rbac_ctx_t *ctx, pt_rbac_result_t *out)
{
    outcome(c->shadow_rules, ctx, &out->shadow);
    outcome(c->rules, ctx, &out->enforced);
}

void pt_rbac_account(const pt_rbac_config_t *c, const pt_rbac_result_t *res, const char *what)
{
    if (res->shadow.verdict != PT_RBAC_NO_RULES) {
        int ok = res->shadow.verdict == PT_RBAC_ALLOWED;
        pt_stat_inc(ok ? c->stats.shadow_allowed : c->stats.shadow_denied);
        pt_debug("rbac: %s: shadow %s, matched policy %s", what, ok ? "allowed" : "denied",
                 res->shadow.policy ? res->shadow.policy : "none");
    }
    if (res->enforced.verdict != PT_RBAC_NO_RULES) {
        int ok = res->enforced.verdict == PT_RBAC_ALLOWED;
        pt_stat_inc(ok ? c->stats.allowed : c->stats.denied);
        pt_debug("rbac: %s: enforced %s, matched policy %s", what, ok ? "allowed" : "denied",
                 res->enforced.policy ? res->enforced.policy : "none");
    }
}

/* ---- filter config ------------------------------------------------------------------- */

static const pt_rbac_rules_t *parse_rules_field(pt_cfg_t *r, pt_arena_t *a, const char *field,
                                                unsigned flags, int *bad)
{
    int rc = pt_cfg_enter(r, field);
    if (rc < 0)
        *bad = 1;
    if (rc <= 0)
        return NULL;
    pt_rbac_rules_t *rules = pt_rbac_rules_parse(r, a, flags);
    if (rules == NULL)
        *bad = 1;
    pt_cfg_leave(r);
    return rules;
}

pt_rbac_config_t *pt_rbac_config_parse(pt_cfg_t *r, pt_arena_t *a, pt_rbac_filter_kind_t kind)
{
    size_t errors_before = r->nerrors;
    pt_rbac_config_t *c = pt_arena_alloc(a, sizeof(*c));
    if (c == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    c->kind = kind;
    int net = kind == PT_RBAC_FILTER_NETWORK, bad = 0;
    unsigned flags = net ? PT_RBAC_PARSE_NETWORK : 0;
    pt_cfg_unsupported(r, net ? network_unsupported : http_unsupported);
    c->rules = parse_rules_field(r, a, "rules", flags, &bad);
    c->shadow_rules = parse_rules_field(r, a, "shadow_rules", flags, &bad);
    const char *s;
    pt_cfg_string(r, "shadow_rules_stat_prefix", &s, "");
    c->shadow_rules_stat_prefix = pt_arena_strdup(a, s ? s : "");
    char key[512];
    snprintf(key, sizeof(key), "%sshadow_engine_result", s ? s : "");
    c->md_shadow_result_key = pt_arena_strdup(a, key);
    snprintf(key, sizeof(key), "%sshadow_effective_policy_id", s ? s : "");
    c->md_shadow_policy_key = pt_arena_strdup(a, key);
    if (net) {
        if (pt_cfg_string(r, "stat_prefix", &s, NULL) == 0 || (s != NULL && s[0] == '\0'))
            pt_cfg_error(r, "stat_prefix", "is required");
        c->stat_prefix = pt_arena_strdup(a, s ? s : "");
        int e;
        pt_cfg_enum(r, "enforcement_type", enforcement_names, NULL, &e,
                    PT_RBAC_ONE_TIME_ON_FIRST_BYTE);
        c->enforcement_type = (pt_rbac_enforcement_t)e;
        c->rules_stat_prefix = "";
    } else {
        pt_cfg_string(r, "rules_stat_prefix", &s, "");
        c->rules_stat_prefix = pt_arena_strdup(a, s ? s : "");
        int track;
        if (pt_cfg_bool(r, "track_per_rule_stats", &track, 0) > 0 && track)
            pt_cfg_error(r, "track_per_rule_stats", "true is not supported");
    }
    c->needs = (c->rules ? c->rules->needs : 0) | (c->shadow_rules ? c->shadow_rules->needs : 0);
    return r->nerrors == errors_before && !bad ? c : NULL;
}

/* Envoy's statPrefixJoin: "a" + "b" is "a.b", "a." + "b" is "a.b", "" + "b" is "b". */
static void join(char *out, size_t len, const char *prefix, const char *token)
{
    size_t pl = strlen(prefix);
    snprintf(out, len, "%s%s%s", prefix, pl && prefix[pl - 1] != '.' ? "." : "", token);
}

void pt_rbac_config_register_stats(pt_rbac_config_t *c, const char *hcm_stat_prefix)
{
    char scope_buf[512];
    const char *scope, *tag = NULL, *tag_value = NULL;
    if (c->kind == PT_RBAC_FILTER_HTTP) {
        scope = "http";
        tag = "envoy_http_conn_manager_prefix";
        tag_value = hcm_stat_prefix ? hcm_stat_prefix : "";
    } else {
        /* <stat_prefix>.rbac.: a trailing '.' of stat_prefix is not doubled. */
        snprintf(scope_buf, sizeof(scope_buf), "%s", c->stat_prefix ? c->stat_prefix : "");
        size_t n = strlen(scope_buf);
        if (n > 0 && scope_buf[n - 1] == '.')
            scope_buf[n - 1] = '\0';
        scope = scope_buf;
    }
    char rules[512], shadow[512], name[600];
    join(rules, sizeof(rules), "rbac.", c->rules_stat_prefix ? c->rules_stat_prefix : "");
    join(shadow, sizeof(shadow), "rbac.",
         c->shadow_rules_stat_prefix ? c->shadow_rules_stat_prefix : "");
    join(name, sizeof(name), rules, "allowed");
    c->stats.allowed = pt_stats_counter(scope, tag, tag_value, name);
    join(name, sizeof(name), rules, "denied");
    c->stats.denied = pt_stats_counter(scope, tag, tag_value, name);
    join(name, sizeof(name), shadow, "shadow_allowed");
    c->stats.shadow_allowed = pt_stats_counter(scope, tag, tag_value, name);
    join(name, sizeof(name), shadow, "shadow_denied");
    c->stats.shadow_denied = pt_stats_counter(scope, tag, tag_value, name);
}

const pt_peer_identity_t *pt_rbac_identity_from_conn(const pt_conn_t *c,
                                                     pt_peer_identity_t *storage)
{
    const pt_tls_identity_t *t = c != NULL && pt_conn_is_tls(c) ? pt_tls_peer_identity(c) : NULL;
    if (t == NULL)
        return NULL;
    memset(storage, 0, sizeof(*storage));
    storage->uri_sans = (const char *const *)t->uri_sans;
    storage->nuri_sans = t->nuri;
    storage->dns_sans = (const char *const *)t->dns_sans;
    storage->ndns_sans = t->ndns;
    storage->subject = t->subject;
    storage->verified = pt_tls_peer_verified(c);
    return storage;
}
