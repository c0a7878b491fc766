/* Role-based access control as Envoy configures it (envoy.config.rbac.v3.RBAC): an engine
 * that decides whether a request or a connection is allowed, shared by the HTTP filter
 * envoy.filters.http.rbac (filters/rbac_http.c) and the network filter
 * envoy.filters.network.rbac (filters/rbac_network.c).
 *
 * A rule set is an action (ALLOW or DENY) and a map of named policies. A policy matches when
 * ANY of its permissions (what is asked: path, header, destination, SNI) matches AND ANY of
 * its principals (who asks: peer certificate, source address, header) matches. Policies are
 * tried in byte order of their names; the first that matches is the "effective policy".
 *   ALLOW: allowed iff some policy matches.      DENY: denied iff some policy matches.
 * A filter has enforced `rules` and `shadow_rules`; shadow rules are evaluated the same way
 * but only counted and logged. A filter without `rules` enforces nothing.
 *
 * The engine knows nothing of HTTP streams or sessions: the caller fills a pt_rbac_ctx_t
 * with what it knows (headers, addresses, SNI, peer identity) and asks. Everything is parsed
 * once into the config snapshot's arena, matchers precompiled; evaluation takes no lock and
 * allocates nothing (except when a header that appears several times must be joined, from
 * the header map's own arena). Envoy's semantics; differences are listed in docs/rbac.md. */
#ifndef PT_RBAC_H
#define PT_RBAC_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/address.h"
#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/http.h"
#include "proxy/stats.h"

/* Who the peer proved to be with its TLS certificate. Filled by the TLS transport (from
 * pt_tls_identity_t); strings must outlive the evaluation. `verified` is 1 when the peer
 * presented a certificate that passed validation; the names are only trusted then. */
typedef struct pt_peer_identity {
    const char *const *uri_sans; /* SPIFFE IDs live here: spiffe://td/ns/x/sa/y */
    unsigned nuri_sans;
    const char *const *dns_sans;
    unsigned ndns_sans;
    const char *subject; /* RFC 2253 form, or NULL */
    int verified;
} pt_peer_identity_t;

/* What a rule may look at. An address whose sa_family is 0 is unknown: no CIDR range and no
 * port matches it. */
typedef struct pt_rbac_ctx {
    const pt_http_headers_t *headers;  /* request headers with :path, :method...; NULL when
                                        * there is no HTTP (the network filter) */
    pt_addr_t direct_remote;           /* the connection's peer (source_ip, direct_remote_ip) */
    pt_addr_t remote;                  /* the client after x-forwarded-for (remote_ip); the
                                        * peer when there is no HTTP */
    pt_addr_t local;                   /* our address (destination_ip, destination_port[_range]) */
    const char *requested_server_name; /* SNI; NULL = none, matched as "" as Envoy does */
    const pt_peer_identity_t *peer;    /* NULL = no TLS or no certificate */
    const struct pt_dyn_md *dynamic_metadata;     /* the stream's; NULL = none */
    const struct pt_metadata *route_metadata;     /* the route's; NULL = none */
} pt_rbac_ctx_t;

typedef struct pt_conn pt_conn_t;

/* The identity of a connection's TLS peer (NULL when it is not TLS or showed no
 * certificate); `storage` holds the result, which points into the connection. */
const pt_peer_identity_t *pt_rbac_identity_from_conn(const pt_conn_t *c,
                                                     pt_peer_identity_t *storage);

/* ---- rule sets (one envoy.config.rbac.v3.RBAC message) ------------------------------- */

typedef enum pt_rbac_action {
    PT_RBAC_ACTION_ALLOW,
    PT_RBAC_ACTION_DENY,
} pt_rbac_action_t;

typedef struct pt_rbac_rules pt_rbac_rules_t;

/* What evaluating rules needs from the caller, so a filter fetches only that. */
enum pt_rbac_needs {
    PT_RBAC_NEEDS_HEADERS = 1u << 0,       /* header / url_path rules */
    PT_RBAC_NEEDS_DIRECT_REMOTE = 1u << 1, /* source_ip / direct_remote_ip */
    PT_RBAC_NEEDS_REMOTE = 1u << 2,        /* remote_ip */
    PT_RBAC_NEEDS_LOCAL = 1u << 3,         /* destination_ip / destination_port[_range] */
    PT_RBAC_NEEDS_SNI = 1u << 4,           /* requested_server_name */
    PT_RBAC_NEEDS_PEER = 1u << 5,          /* authenticated */
    PT_RBAC_NEEDS_METADATA = 1u << 6,      /* metadata, sourced_metadata */
};

/* Parse flags. */
enum pt_rbac_parse_flags {
    /* For the network filter: header rules are a config error, as in Envoy (there are no
     * headers; url_path is accepted and never matches). */
    PT_RBAC_PARSE_NETWORK = 1u << 0,
};

/* Parses the envoy.config.rbac.v3.RBAC the reader is positioned in, into a. NULL when any
 * error was found (all of them are in r). */
pt_rbac_rules_t *pt_rbac_rules_parse(pt_cfg_t *r, pt_arena_t *a, unsigned flags);
pt_rbac_action_t pt_rbac_rules_action(const pt_rbac_rules_t *rules);
unsigned pt_rbac_rules_npolicies(const pt_rbac_rules_t *rules);
/* PT_RBAC_NEEDS_* bits of every rule in the set. */
unsigned pt_rbac_rules_needs(const pt_rbac_rules_t *rules);

/* Evaluates rules: 1 allowed, 0 denied. *policy (may be NULL) is set to the effective
 * policy's name: the first policy, in name order, that matched, or NULL when none did. */
int pt_rbac_rules_check(const pt_rbac_rules_t *rules, const pt_rbac_ctx_t *ctx,
                        const char **policy);

/* ---- a filter's rules and shadow rules ----------------------------------------------- */

typedef enum pt_rbac_verdict {
    PT_RBAC_NO_RULES, /* nothing configured: allowed, and not counted */
    PT_RBAC_ALLOWED,
    PT_RBAC_DENIED,
} pt_rbac_verdict_t;

typedef struct pt_rbac_outcome {
    pt_rbac_verdict_t verdict;
    const char *policy;  /* effective policy name, or NULL when no policy matched */
    const char *details; /* "rbac_access_denied_matched_policy[<policy or none>]", whitespace
                          * in the name replaced by '_' (Envoy's response code details) */
} pt_rbac_outcome_t;

typedef struct pt_rbac_result {
    pt_rbac_outcome_t enforced; /* `rules`: what the filter does */
    pt_rbac_outcome_t shadow;   /* `shadow_rules`: only counted and logged */
} pt_rbac_result_t;

typedef struct pt_rbac_stats {
    pt_stat_t allowed, denied, shadow_allowed, shadow_denied;
} pt_rbac_stats_t;

typedef enum pt_rbac_filter_kind {
    PT_RBAC_FILTER_HTTP,    /* envoy.extensions.filters.http.rbac.v3.RBAC */
    PT_RBAC_FILTER_NETWORK, /* envoy.extensions.filters.network.rbac.v3.RBAC */
} pt_rbac_filter_kind_t;

typedef enum pt_rbac_enforcement {
    PT_RBAC_ONE_TIME_ON_FIRST_BYTE,
    PT_RBAC_CONTINUOUS,
} pt_rbac_enforcement_t;

/* The typed_config of either filter. */
typedef struct pt_rbac_config {
    pt_rbac_filter_kind_t kind;
    const pt_rbac_rules_t *rules;           /* NULL: nothing enforced */
    const pt_rbac_rules_t *shadow_rules;    /* NULL: no shadow evaluation */
    const char *stat_prefix;                /* network filter (required there); NULL for HTTP */
    const char *rules_stat_prefix;          /* HTTP only; "" when unset */
    const char *shadow_rules_stat_prefix;   /* "" when unset */
    pt_rbac_enforcement_t enforcement_type; /* network only; both evaluate once */
    unsigned needs;                         /* PT_RBAC_NEEDS_* of rules and shadow rules */
    /* The dynamic metadata keys of the shadow verdict (Envoy's, under the filter's name):
     * <shadow_rules_stat_prefix>shadow_engine_result and ...shadow_effective_policy_id. */
    const char *md_shadow_result_key, *md_shadow_policy_key;
    pt_rbac_stats_t stats;
} pt_rbac_config_t;

/* Parses a filter's typed_config (the reader is inside it, @type consumed) into a. NULL
 * with the errors in r. */
pt_rbac_config_t *pt_rbac_config_parse(pt_cfg_t *r, pt_arena_t *a, pt_rbac_filter_kind_t kind);

/* Registers the stats as Envoy names them (main thread, once the snapshot validated):
 *   HTTP:    http.<hcm_stat_prefix>.rbac.[<rules_stat_prefix>.]allowed|denied
 *            http.<hcm_stat_prefix>.rbac.[<shadow_rules_stat_prefix>.]shadow_allowed|...
 *            (Prometheus: envoy_http_rbac_allowed{envoy_http_conn_manager_prefix=...})
 *   network: <stat_prefix>.rbac.allowed ... (a trailing '.' of stat_prefix is not doubled)
 * hcm_stat_prefix is used for HTTP only. */
void pt_rbac_config_register_stats(pt_rbac_config_t *c, const char *hcm_stat_prefix);

/* Evaluates shadow and enforced rules. Pure: no stats, no logs. */
void pt_rbac_evaluate(const pt_rbac_config_t *c, const pt_rbac_ctx_t *ctx, pt_rbac_result_t *out);
/* Counts a result (allowed/denied/shadow_*) and logs it at debug, `what` naming the
 * request or connection in the log line. */
void pt_rbac_account(const pt_rbac_config_t *c, const pt_rbac_result_t *res, const char *what);

#endif
