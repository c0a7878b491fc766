/* DNS clusters (STRICT_DNS, LOGICAL_DNS, envoy.cluster.dns) and the c-ares resolver they use.
 *
 * Three layers, each usable alone:
 *  - configuration: the DNS fields of a Cluster (dns_refresh_rate, dns_failure_refresh_rate,
 *    respect_dns_ttl, dns_lookup_family, the resolver in typed_dns_resolver_config,
 *    dns_resolution_config or the deprecated dns_resolvers / use_tcp_for_dns_lookups, or the
 *    same in cluster_type's DnsCluster) parsed into a pt_dns_config_t, and the pure rules of
 *    when to resolve again (pt_dns_refresh_ms, the failure backoff);
 *  - the resolver: one c-ares channel on an ev loop (main thread only): its sockets watched
 *    with ev_io, its timeouts with one ev_timer, so a lookup never blocks the loop, let alone
 *    a worker;
 *  - the resolving of one cluster (pt_dns_cluster_t): every endpoint hostname resolved, again
 *    every dns_refresh_rate (or the TTL, or the backoff after a failure), and a new host list
 *    handed to its owner (the cluster manager) only when the addresses changed, so hosts that
 *    stay are the same hosts with their health, outlier state and pooled connections. */
#ifndef PT_DNS_H
#define PT_DNS_H

#include <stdint.h>

#include "proxy/address.h"
#include "proxy/arena.h"
#include "proxy/cluster.h"
#include "proxy/config_reader.h"
#include "proxy/stats.h"

struct ev_loop;
struct pt_cluster;
struct pt_endpoint;

/* dns_lookup_family, in Envoy's order (the index of its name). */
typedef enum pt_dns_family {
    PT_DNS_AUTO,         /* AAAA; A when that gave no address */
    PT_DNS_V4_ONLY,      /* A */
    PT_DNS_V6_ONLY,      /* AAAA */
    PT_DNS_V4_PREFERRED, /* A; AAAA when that gave no address */
    PT_DNS_ALL,          /* both */
} pt_dns_family_t;

/* The lookups of a family in order: first[0] then, when it gave no address, first[1]
 * (AF_UNSPEC for ALL: one lookup of both; 0 in second: no fallback). */
void pt_dns_family_plan(pt_dns_family_t f, int *first, int *second);

/* The resolver a DNS cluster uses (Envoy's CaresDnsResolverConfig and its older
 * spellings). No resolvers: those of /etc/resolv.conf. */
typedef struct pt_dns_resolver_config {
    pt_addr_t *resolvers;
    unsigned nresolvers;
    int use_tcp;                   /* dns_resolver_options.use_tcp_for_dns_lookups */
    int no_default_search_domain;  /* dns_resolver_options.no_default_search_domain */
    int use_resolvers_as_fallback; /* resolvers only when resolv.conf names none */
    int rotate_nameservers;
    uint64_t query_timeout_ms; /* query_timeout_seconds (c-ares' default: 5 s) */
    unsigned query_tries;      /* query_tries (c-ares' default: 4) */
} pt_dns_resolver_config_t;

/* One endpoint of a DNS cluster: a name (or an IP literal, which resolves to itself). */
typedef struct pt_dns_target {
    const char *name;     /* socket_address.address */
    const char *hostname; /* endpoint.hostname, else name: the hosts' hostname */
    unsigned port;        /* socket_address.port_value */
    uint32_t weight;      /* lb_endpoint load_balancing_weight */
    /* What its hosts take from the endpoint and its locality (strings in the cluster's
     * arena). */
    uint32_t priority;
    pt_locality_t locality;
    uint32_t locality_weight;
    pt_eds_health_t health;
    const char *metadata;
} pt_dns_target_t;

typedef struct pt_dns_config {
    int has_resolver; /* the cluster names its resolver (else the bootstrap's default) */
    int logical;      /* LOGICAL_DNS (or all_addresses_in_single_endpoint) */
    pt_dns_family_t family;
    uint64_t refresh_ms;  /* dns_refresh_rate: 5000 */
    int respect_ttl;      /* respect_dns_ttl */
    uint64_t jitter_ms;   /* dns_jitter: a refresh after a success comes up to this late */
    int has_failure_rate; /* dns_failure_refresh_rate given */
    uint64_t failure_base_ms, failure_max_ms;
    pt_dns_resolver_config_t resolver;
    pt_dns_target_t *targets;
    unsigned ntargets;
} pt_dns_config_t;

/* The DNS settings of a Cluster (the reader positioned in it; type and dns_lookup_family
 * already read, passed in): the top-level fields, or cluster_type's DnsCluster when
 * `from_cluster_type` (the reader then positioned in that typed_config). Everything goes into
 * arena; errors into r with their paths. */
void pt_dns_config_parse(pt_cfg_t *r, pt_arena_t *arena, pt_dns_config_t *out,
                         int from_cluster_type);
/* The resolver of typed_dns_resolver_config (reader inside it: name and typed_config), also
 * read by the bootstrap. */
void pt_dns_resolver_config_parse_typed(pt_cfg_t *r, pt_arena_t *arena,
                                        pt_dns_resolver_config_t *out);

/* The bootstrap's typed_dns_resolver_config, dns_resolution_config or use_tcp_for_dns_lookups
 * (reader in the bootstrap), in Envoy's order: the resolver of DNS clusters that name none.
 * Errors into r with their paths. */
void pt_dns_bootstrap_parse(pt_cfg_t *r, pt_arena_t *arena, pt_dns_resolver_config_t *out);
/* Main thread: makes cfg (copied) the default resolver of clusters started from now on. 0, or
 * -1 out of memory. */
int pt_dns_set_default_resolver(const pt_dns_resolver_config_t *cfg);
/* Frees the copy (at exit). */
void pt_dns_clear_default_resolver(void);

/* dns_failure_refresh_rate's backoff (Envoy's jittered exponential): a delay drawn in
 * [0, interval), the interval doubling from base up to max; without dns_failure_refresh_rate
 * the delay is dns_refresh_rate itself. */
typedef struct pt_dns_backoff {
    uint64_t next_interval_ms;
} pt_dns_backoff_t;
void pt_dns_backoff_reset(pt_dns_backoff_t *b, const pt_dns_config_t *cfg);
uint64_t pt_dns_backoff_next(pt_dns_backoff_t *b, const pt_dns_config_t *cfg, uint64_t random);

/* When to resolve again after a lookup that succeeded (with naddresses addresses, the
 * smallest TTL min_ttl_s among them): dns_refresh_rate, or that TTL with respect_dns_ttl
 * when there were addresses and the TTL is not 0 (Envoy's rule), plus random % dns_jitter
 * when it is set. */
uint64_t pt_dns_refresh_ms(const pt_dns_config_t *cfg, unsigned naddresses, uint32_t min_ttl_s,
                           uint64_t random);

/* ---- the resolver (c-ares on an ev loop) ----------------------------------------------- */

typedef struct pt_dns_resolver pt_dns_resolver_t;
typedef struct pt_dns_query pt_dns_query_t;

/* A resolved address (port 0) with its TTL. */
typedef struct pt_dns_answer {
    pt_addr_t address;
    uint32_t ttl_s;
} pt_dns_answer_t;

/* How a lookup ended. NXDOMAIN and "no such record" are a completed lookup with no address,
 * as in Envoy's c-ares resolver; a failure is the server failing, refusing or not
 * answering. */
typedef enum pt_dns_status { PT_DNS_COMPLETED, PT_DNS_FAILED } pt_dns_status_t;

/* The answers are valid during the call only. Never called for a cancelled query. */
typedef void (*pt_dns_resolve_cb)(void *data, pt_dns_status_t status,
                                  const pt_dns_answer_t *answers, unsigned n, const char *why);

/* A resolver with cfg's servers and options, its sockets on loop. NULL with the reason in
 * err (out of memory, resolv.conf unreadable, a server list c-ares refuses). */
pt_dns_resolver_t *pt_dns_resolver_new(struct ev_loop *loop, const pt_dns_resolver_config_t *cfg,
                                       char *err, size_t errlen);
/* Cancels what is under way (no callback runs) and frees the resolver. */
void pt_dns_resolver_free(pt_dns_resolver_t *res);
/* Starts the lookups of family f for name; cb runs from a later loop turn (or at once for an
 * answer known without the network: an IP literal, /etc/hosts). NULL when out of memory. */
pt_dns_query_t *pt_dns_resolve(pt_dns_resolver_t *res, const char *name, pt_dns_family_t f,
                               pt_dns_resolve_cb cb, void *data);
/* Its callback will not run. */
void pt_dns_query_cancel(pt_dns_query_t *q);

/* ---- one cluster's resolving ------------------------------------------------------------ */

typedef struct pt_dns_cluster pt_dns_cluster_t;

/* The cluster's hosts changed: eps (n of them, valid during the call) are all its hosts
 * now. The owner makes a new version of the cluster with them. */
typedef void (*pt_dns_cluster_update_fn)(void *data, const struct pt_endpoint *eps, unsigned n);
/* The first lookup ended (Envoy's initialization of a DNS cluster: one target's first
 * lookup, whatever its outcome). */
typedef void (*pt_dns_cluster_init_fn)(void *data);

/* Starts resolving cluster c's targets on loop (main thread). The cluster's current hosts
 * are the starting point (a new version of a cluster that was resolving keeps what was
 * known). NULL with the reason in err. */
pt_dns_cluster_t *pt_dns_cluster_start(struct ev_loop *loop, const struct pt_cluster *c,
                                       pt_dns_cluster_update_fn update, pt_dns_cluster_init_fn init,
                                       void *data, char *err, size_t errlen);
void pt_dns_cluster_stop(pt_dns_cluster_t *dc);
/* Whether its first lookup ended. */
int pt_dns_cluster_initialized(const pt_dns_cluster_t *dc);

#endif
