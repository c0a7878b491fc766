/* Clusters and their hosts.
 *
 * A cluster (pt_cluster_t) is an immutable, refcounted resource parsed from
 * envoy.config.cluster.v3.Cluster into its own arena. Hosts come from its load_assignment
 * (STATIC now; DNS and EDS clusters plug in through discovery/). What must survive an update
 * of the cluster lives in its state (pt_cluster_state_t), one per cluster name: the circuit
 * breakers' counts and the workers' balancer cursors. Host counters shown by /clusters are
 * shared atomics; the Envoy-named cluster stats are per-worker slots (proxy/stats.h), found
 * again by name. */
#ifndef PT_CLUSTER_H
#define PT_CLUSTER_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "proxy/address.h"
#include "proxy/circuit_breaker.h"
#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/config_source.h"
#include "proxy/conn.h"
#include "proxy/stats.h"

/* Declared here as well as in config.h (the same types): the cluster module stands below
 * the config module and does not include it. */
typedef struct pt_cluster pt_cluster_t;
typedef struct pt_tls_settings pt_tls_settings_t;
typedef struct pt_tls_context pt_tls_context_t;

typedef struct pt_worker pt_worker_t;

#define PT_CLUSTER_COUNTERS(X)                                                                 \
    X(upstream_cx_total)                                                                       \
    X(upstream_cx_connect_fail)                                                                \
    X(upstream_cx_connect_timeout)                                                             \
    X(upstream_cx_connect_attempts_exceeded)                                                   \
    X(upstream_cx_destroy)                                                                     \
    X(upstream_cx_destroy_local)                                                               \
    X(upstream_cx_destroy_remote)                                                              \
    X(upstream_cx_rx_bytes_total)                                                              \
    X(upstream_cx_tx_bytes_total)                                                              \
    X(upstream_cx_none_healthy)                                                                \
    X(upstream_cx_http1_total)                                                                 \
    X(upstream_cx_http2_total)                                                                 \
    X(upstream_cx_close_notify)                                                                \
    X(upstream_cx_idle_timeout)                                                                \
    X(upstream_cx_max_requests)                                                                \
    X(upstream_cx_max_duration_reached)                                                        \
    X(upstream_cx_protocol_error)                                                              \
    X(upstream_rq_total)                                                                       \
    X(upstream_rq_completed)                                                                   \
    X(upstream_rq_pending_total)                                                               \
    X(upstream_rq_pending_failure_eject)                                                       \
    X(upstream_rq_cancelled)                                                                   \
    X(upstream_rq_timeout)                                                                     \
    X(upstream_rq_rx_reset)                                                                    \
    X(upstream_rq_tx_reset)                                                                    \
    X(upstream_rq_1xx)                                                                         \
    X(upstream_rq_2xx)                                                                         \
    X(upstream_rq_3xx)                                                                         \
    X(upstream_rq_4xx)                                                                         \
    X(upstream_rq_5xx)                                                                         \
    X(upstream_cx_overflow)                                                                    \
    X(upstream_rq_pending_overflow)                                                            \
    X(upstream_rq_retry)                                                                       \
    X(upstream_rq_retry_success)                                                               \
    X(upstream_rq_retry_limit_exceeded)                                                        \
    X(upstream_rq_retry_overflow)                                                              \
    X(upstream_rq_retry_backoff_exponential)                                                   \
    X(upstream_rq_per_try_timeout)                                                             \
    X(upstream_rq_per_try_idle_timeout)                                                        \
    X(original_dst_host_invalid)

/* The load balancer's counters, made the first time they count (most clusters never panic
 * nor route by zone: a cluster's stats are most of its memory). */
#define PT_CLUSTER_LB_COUNTERS(X)                                                              \
    X(lb_healthy_panic)                                                                        \
    X(lb_local_cluster_not_ok)                                                                 \
    X(lb_recalculate_zone_structures)                                                          \
    X(lb_zone_cluster_too_small)                                                               \
    X(lb_zone_no_capacity_left)                                                                \
    X(lb_zone_routing_all_directly)                                                            \
    X(lb_zone_routing_sampled)                                                                 \
    X(lb_zone_routing_cross_zone)

enum pt_cluster_lb_stat {
#define PT_X(n) PT_LB_STAT_##n,
    PT_CLUSTER_LB_COUNTERS(PT_X)
#undef PT_X
    PT_LB_NSTATS
};

#define PT_CLUSTER_GAUGES(X)                                                                   \
    X(upstream_cx_active)                                                                      \
    X(upstream_rq_active)                                                                      \
    X(upstream_rq_pending_active)                                                              \
    X(membership_total)                                                                        \
    X(membership_healthy)

/* Histograms (milliseconds): connect (from the connect to the connection ready, TLS
 * handshake included), connection length (from the connect to the close, for every
 * connection), and request time (from the end of the downstream request to the end of the
 * upstream response). */
#define PT_CLUSTER_HISTOGRAMS(X)                                                               \
    X(upstream_cx_connect_ms)                                                                  \
    X(upstream_cx_length_ms)                                                                   \
    X(upstream_rq_time)

/* cluster.<name>.http2.*: made only for a cluster that may speak HTTP/2 upstream. */
#define PT_CLUSTER_HTTP2_COUNTERS(X)                                                           \
    X(rx_reset)                                                                                \
    X(tx_reset)                                                                                \
    X(trailers)                                                                                \
    X(rx_messaging_error)                                                                      \
    X(stream_refused_errors)                                                                   \
    X(keepalive_timeout)                                                                       \
    X(goaway_sent)
#define PT_CLUSTER_HTTP2_GAUGES(X) X(streams_active)

typedef struct pt_cluster_stats {
#define PT_X(n) pt_stat_t n;
    PT_CLUSTER_COUNTERS(PT_X) PT_CLUSTER_GAUGES(PT_X) PT_CLUSTER_HISTOGRAMS(PT_X)
#undef PT_X
#define PT_X(n) pt_stat_t http2_##n;
    PT_CLUSTER_HTTP2_COUNTERS(PT_X) PT_CLUSTER_HTTP2_GAUGES(PT_X)
#undef PT_X
} pt_cluster_stats_t;

/* Which protocol a cluster speaks upstream (HttpProtocolOptions.upstream_protocol_options). */
typedef enum pt_upstream_protocol {
    PT_UPSTREAM_HTTP1,      /* explicit_http_config.http_protocol_options, or nothing */
    PT_UPSTREAM_HTTP2,      /* explicit_http_config.http2_protocol_options (prior knowledge) */
    PT_UPSTREAM_DOWNSTREAM, /* use_downstream_protocol_config: the request's protocol */
    PT_UPSTREAM_AUTO,       /* auto_config: ALPN on TLS, HTTP/1.1 on plain connections */
} pt_upstream_protocol_t;

/* Http2ProtocolOptions for the upstream side. */
typedef struct pt_cluster_http2 {
    uint32_t max_concurrent_streams;         /* default 2147483647 */
    uint32_t initial_stream_window_size;     /* default 65535 */
    uint32_t initial_connection_window_size; /* default 1 MiB */
    uint32_t hpack_table_size;               /* default 4096 */
    uint64_t keepalive_interval_ms;          /* connection_keepalive.interval, 0 = off */
    uint64_t keepalive_timeout_ms;           /* connection_keepalive.timeout */
    int allow_connect; /* accepted as Envoy does; upgrades go as extended CONNECT regardless */
} pt_cluster_http2_t;

/* In the order of Cluster.type's names. A cluster_type of envoy.cluster.dns is one of the DNS
 * types (its all_addresses_in_single_endpoint picks LOGICAL_DNS). */
typedef enum pt_cluster_type {
    PT_CLUSTER_STATIC,
    PT_CLUSTER_EDS,
    PT_CLUSTER_STRICT_DNS,
    PT_CLUSTER_LOGICAL_DNS,
    PT_CLUSTER_ORIGINAL_DST, /* hosts made on demand from each connection's destination */
} pt_cluster_type_t;

static inline int pt_cluster_type_is_dns(pt_cluster_type_t t)
{
    return t == PT_CLUSTER_STRICT_DNS || t == PT_CLUSTER_LOGICAL_DNS;
}
typedef enum pt_lb_policy {
    PT_LB_ROUND_ROBIN,
    PT_LB_LEAST_REQUEST,
    PT_LB_RANDOM,
    PT_LB_RING_HASH, /* discovery/lb_hash.h */
    PT_LB_MAGLEV,
    PT_LB_CLUSTER_PROVIDED, /* ORIGINAL_DST only: the cluster picks */
} pt_lb_policy_t;

/* The load balancer context of a pick (below). */
typedef struct pt_lb_context pt_lb_context_t;

/* How a priority's locality is chosen (Cluster.CommonLbConfig.locality_config_specifier). */
typedef enum pt_locality_lb {
    PT_LOCALITY_ZONE_AWARE, /* the default: zone aware routing when a local cluster is set */
    PT_LOCALITY_WEIGHTED,   /* locality_weighted_lb_config */
} pt_locality_lb_t;

/* Host health bits that belong to the host whichever version lists it, set on the main
 * thread by active health checking and outlier detection (pt_host_health_update). Envoy's
 * /clusters health_flags of the same names. */
enum pt_host_health {
    PT_HOST_FAILED_ACTIVE_HC = 1u << 0,
    PT_HOST_FAILED_OUTLIER_CHECK = 1u << 1,
    /* Passing its HTTP checks with an x-envoy-degraded header: used only for the load its
     * priority's healthy hosts cannot take, as an EDS DEGRADED host. */
    PT_HOST_DEGRADED_ACTIVE_HC = 1u << 2,
};
/* The bits that make a host unhealthy (not picked unless in panic). */
#define PT_HOST_FAILED_MASK (PT_HOST_FAILED_ACTIVE_HC | PT_HOST_FAILED_OUTLIER_CHECK)

/* LbEndpoint.health_status (config.core.v3.HealthStatus), in its order. What a version's
 * assignment says of a host: UNHEALTHY and TIMEOUT make it unhealthy (Envoy's
 * failed_eds_health), DRAINING excludes it (eds_status_draining: not picked, and not counted
 * in the availability of its priority and locality), DEGRADED makes it degraded (used when
 * the healthy hosts cannot take all the load). */
typedef enum pt_eds_health {
    PT_EDS_UNKNOWN,
    PT_EDS_HEALTHY,
    PT_EDS_UNHEALTHY,
    PT_EDS_DRAINING,
    PT_EDS_TIMEOUT,
    PT_EDS_DEGRADED,
} pt_eds_health_t;

/* config.core.v3.Locality; empty strings where a field is not set. */
typedef struct pt_locality {
    const char *region, *zone, *sub_zone;
} pt_locality_t;

/* Whether two localities are the same (NULL and "" are the same). */
int pt_locality_equal(const pt_locality_t *a, const pt_locality_t *b);

/* A host, the same object in every version of its cluster that lists it (keyed by address
 * and hostname in the cluster's state), so what petrel knows of it survives updates: health
 * bits, outlier state, counters, active requests, pooled connections. Refcounted by the
 * cluster versions that list it and by pools and checkers that hold it. What an assignment
 * says of it (weight, priority, locality, EDS health, metadata) is the version's
 * (pt_host_info_t): two versions may say different things. */
typedef struct pt_host {
    _Atomic uint32_t refs;
    _Atomic uint32_t health; /* pt_host_health bits; 0 = no verdict against it */
    struct pt_cluster_state *state;
    struct pt_host *next_in_bucket; /* the state's host registry */
    pt_addr_t address;
    /* Its priority in the newest version that lists it (a retry's previous_priorities asks
     * which priorities its attempts went to). */
    _Atomic uint32_t priority;
    const char *hostname;    /* (owned) or NULL */
    struct pt_outlier_host *outlier;  /* discovery/outlier.c state (owned), or NULL */
    /* /clusters counters, shared by all workers (the order packs the struct, 144 bytes and
     * its address text in one 176-byte block: a cluster may have thousands of hosts). */
    _Atomic uint64_t cx_total, cx_connect_fail, rq_total, rq_error, rq_success, rq_timeout;
    _Atomic uint32_t cx_active, rq_active;
    _Atomic uint32_t odst_flags; /* PT_HOST_ODST_* (ORIGINAL_DST hosts) */
    /* Its transport_socket_matches choice, made from the newest version's metadata when that
     * version was prepared: (id of that version's match list << 16) | (index of the match
     * + 1, or 0 for the cluster's own transport socket). 0: none made. */
    _Atomic uint64_t transport;
    char address_str[]; /* "10.0.0.1:80", in the host's own allocation */
} pt_host_t;

/* An ORIGINAL_DST host's flags: picked since the last cleanup; dropped by a cleanup (its
 * workers' pools free themselves once empty). */
enum { PT_HOST_ODST_USED = 1u << 0, PT_HOST_ODST_REMOVED = 1u << 1 };

/* Main thread: sets then clears health bits of h. When that changes them, every live version
 * of h's cluster computes its priorities and localities again (at the end of the main loop's
 * turn, or at once before the server runs one: pt_lb_flush). */
void pt_host_health_update(pt_host_t *h, uint32_t set, uint32_t clear);

/* An endpoint as a ClusterLoadAssignment lists it, before it is resolved to a host. Its
 * strings are borrowed (the parse's arena, a DNS target, an older version) until
 * pt_cluster_prepare copies what it keeps. */
typedef struct pt_endpoint {
    pt_addr_t address;
    const char *hostname;
    uint32_t weight;          /* LbEndpoint.load_balancing_weight (1) */
    uint32_t priority;        /* LocalityLbEndpoints.priority, 0..128 */
    pt_locality_t locality;   /* LocalityLbEndpoints.locality */
    uint32_t locality_weight; /* LocalityLbEndpoints.load_balancing_weight, 0 unset */
    pt_eds_health_t health;   /* LbEndpoint.health_status */
    const char *metadata;     /* LbEndpoint.metadata as canonical JSON text, or NULL */
    /* DNS clusters' endpoints as configured: the name to resolve and the port its addresses
     * take (address unset). */
    const char *dns_name;
    unsigned dns_port;
} pt_endpoint_t;

pt_host_t *pt_host_ref(pt_host_t *h);
void pt_host_unref(pt_host_t *h);

/* What a version says of each of its hosts (parallel to its hosts; 12 bytes). */
typedef struct pt_host_info {
    uint32_t weight;
    uint32_t locality_weight; /* 0: its locality has none */
    uint16_t locality;        /* index into the version's localities */
    uint8_t priority;
    uint8_t eds_health;       /* pt_eds_health_t */
} pt_host_info_t;

/* ClusterLoadAssignment.policy. */
typedef struct pt_cla_policy {
    uint64_t endpoint_stale_after_ms; /* 0: never stale */
    uint32_t overprovisioning_factor; /* percent, 140 */
    int weighted_priority_health;     /* priority health by weight, not host count */
} pt_cla_policy_t;

/* What belongs to a cluster's name rather than to one version of it: kept across updates of
 * the cluster, dropped with the last version that uses it. */
typedef struct pt_cluster_state {
    _Atomic long refs;
    char *name;
    pt_breaker_counts_t breaker_counts[PT_PRIORITIES];
    struct pt_cluster_state *next_in_bucket;
    /* Its live prepared versions, newest first (guarded by the registry lock): a change of
     * a host's health is computed again for each of them (discovery/priority_set.h). */
    struct pt_cluster *versions;
    int health_dirty; /* main thread: queued for pt_lb_flush */
    struct pt_cluster_state *next_dirty;
    /* Hosts of every live version, by address and hostname (guarded by the registry lock:
     * a host's last reference may go on any thread). */
    pt_host_t **host_buckets;
    unsigned nhost_buckets, nhost_entries;
    /* The membership gauges' values, set by the main thread and read through computed
     * gauges (pt_stats_gauge_fn): one value, not a slot on every thread, so thousands of
     * clusters do not commit the main thread's slot pages. membership_degraded and
     * membership_excluded are registered when they are first above 0. */
    _Atomic uint32_t membership_total, membership_healthy, membership_degraded,
        membership_excluded;
    pt_stat_t membership_total_id, membership_healthy_id, membership_degraded_id,
        membership_excluded_id;
} pt_cluster_state_t;

/* The state of the cluster with this name, made on first use, with a reference for the
 * caller. Thread-safe. NULL when out of memory. */
pt_cluster_state_t *pt_cluster_state_get(const char *name);
/* The last reference also releases the cluster's stats (cluster.<name>.*), which only the
 * main thread may do: on the main thread at once, on a worker (that dropped the last
 * version) at the main thread's next pt_cluster_states_reap. */
void pt_cluster_state_unref(pt_cluster_state_t *st);
/* Names the main thread (the server's, at start). Until then the calling thread of every
 * unref counts as main (single-threaded programs and tests). */
void pt_cluster_states_set_main_thread(void);
/* Whether the calling thread is that main thread (also before one was named). */
int pt_cluster_states_on_main_thread(void);
/* Main thread: releases the stats of clusters whose last version went on a worker, unless
 * a cluster of that name came back meanwhile (its stats are in use again). */
void pt_cluster_states_reap(void);

/* What a pick knows of the request beyond the cluster, as Envoy's LoadBalancerContext. */
struct pt_lb_context {
    /* The request's hash (route or tcp_proxy hash_policy), for RING_HASH and MAGLEV. */
    int has_hash;
    uint64_t hash;
    /* ORIGINAL_DST clusters: the downstream connection's original destination, when
     * original_dst restored one, and the request's headers (HTTP), for
     * original_dst_lb_config.use_http_header. */
    const pt_addr_t *original_dst;
    const struct pt_http_headers *headers;
    /* A retry's priority load (retry_priority previous_priorities, pt_lb_retry_choice), or
     * NULL for the cluster's own. Hash balancers follow the cluster's, as Envoy's do. */
    const uint16_t *priority_choice;
};

struct pt_odst_hosts;

struct pt_cluster {
    _Atomic long refs;
    pt_arena_t arena;            /* everything of this version */
    const char *name;
    const struct pt_metadata *metadata; /* Cluster.metadata, or NULL */
    pt_cluster_state_t *state;   /* set by pt_cluster_prepare */
    pt_cluster_type_t type;
    pt_lb_policy_t lb_policy;
    uint64_t connect_timeout_ms;
    uint32_t lb_choice_count; /* least_request_lb_config.choice_count (default 2) */
    int equal_weights;        /* every host has the same weight (LEAST_REQUEST uses P2C) */
    /* RING_HASH and MAGLEV: their configuration (in the arena), and the table picks use,
     * built when the version is prepared and again when its hosts' health changes
     * (discovery/lb_hash.h). NULL for the other policies. */
    const struct pt_lb_hash_config *lb_hash;
    int lb_hash_use_hostname; /* common_lb_config.consistent_hashing_lb_config's */
    /* common_lb_config: healthy_panic_threshold as Envoy rounds it (percent, 50), how a
     * locality is chosen, and zone_aware_lb_config. */
    uint32_t healthy_panic_threshold;
    struct pt_lb_hash_pub *lb_hash_pub;
    double active_request_bias; /* least_request_lb_config.active_request_bias (1.0) */
    pt_locality_lb_t locality_lb;
    uint32_t zone_routing_enabled;  /* routing_enabled, percent (100) */
    uint64_t zone_min_cluster_size; /* min_cluster_size (6) */
    int fail_traffic_on_panic;
    int dns_lookup_family;    /* index into AUTO, V4_ONLY, V6_ONLY, V4_PREFERRED, ALL */
    /* DNS types: what to resolve and how (discovery/dns.h), in the arena; NULL otherwise. */
    struct pt_dns_config *dns;
    /* wait_for_warm_on_init (default true): an EDS or DNS cluster is warming until its first
     * endpoints or lookup; false: initialized at once, without hosts until they come. */
    int wait_for_warm;
    pt_tcp_keepalive_t tcp_keepalive; /* upstream_connection_options.tcp_keepalive */
    uint32_t buffer_limit; /* per_connection_buffer_limit_bytes */
    uint64_t http_idle_timeout_ms;        /* common_http_protocol_options.idle_timeout */
    uint64_t max_connection_duration_ms;  /* ...max_connection_duration, 0 = none */
    uint32_t max_requests_per_connection; /* 0 = unlimited */
    pt_upstream_protocol_t protocol;
    /* Its http2_protocol_options, in the arena; NULL when it has none (HTTP/2 then takes the
     * defaults): most clusters speak HTTP/1 and carry no HTTP/2 settings. */
    const pt_cluster_http2_t *http2;
    /* upstream_http_protocol_options: the upstream TLS name taken from each request (its
     * host after the route's rewrites, or the header auto_sni_header names when the request
     * has it): auto_sni sends it as SNI (unless it is an IP address), auto_san_validation
     * requires the certificate to carry it as a SAN. Either one keys the pool by that name,
     * so a connection is only reused for requests of the same name. */
    unsigned auto_sni : 1;
    unsigned auto_san_validation : 1;
    const char *auto_sni_header; /* lowercase, in the arena; NULL: the host */
    _Atomic(pt_stat_t *) code_stats;      /* upstream_rq_<code>, created on first use */
    _Atomic(pt_stat_t *) lb_stats; /* PT_CLUSTER_LB_COUNTERS, made on first use */
    /* As parsed, in ep_arena, until pt_cluster_prepare resolves them into hosts and frees
     * them (what a version keeps of its endpoints is its hosts: per endpoint a pointer). */
    pt_endpoint_t *endpoints;
    unsigned nendpoints;
    unsigned nhosts;
    pt_arena_t ep_arena;
    pt_host_t **hosts;            /* a reference each */
    /* What this version says of each host (pt_cluster_host_info): parallel to hosts, or NULL
     * when it says the same of all of them (hinfo_default: the common case of plain
     * endpoints costs nothing per host); their metadata likewise (NULL: none has any). */
    pt_host_info_t *hinfo;
    pt_host_info_t hinfo_default;
    unsigned nlocalities;
    const char **hmeta;
    /* The distinct localities of its hosts, in the arena (pt_host_info_t.locality). */
    pt_locality_t *localities;
    pt_cla_policy_t cla_policy;
    /* The last npending hosts (and endpoints) are pending removal: an EDS update dropped
     * them, but active health checks still find them healthy, so they stay until they fail
     * (Envoy's PENDING_DYNAMIC_REMOVAL; not with ignore_health_on_host_removal). */
    unsigned npending;
    int ignore_health_on_host_removal;
    pt_cluster_stats_t stats;
    pt_breaker_t breakers[PT_PRIORITIES]; /* circuit_breakers by priority */
    struct pt_outlier_config *outlier; /* outlier_detection, or NULL (discovery/outlier.h) */
    struct pt_health_check_config *health_checks; /* discovery/health_check.h */
    unsigned nhealth_checks;
    /* This version's endpoints came from an assignment (EDS), not from the cluster. */
    int has_assignment;
    json_t *health_checks_json;  /* as configured (a reference): versions compare it */
    /* The Cluster as configured: a reference to the tree (bootstrap clusters, whose tree
     * the config keeps anyway), or, for clusters of an update, its canonical text
     * (a few hundred bytes where the tree took kilobytes). */
    json_t *source;
    char *source_text; /* without the type URL when source_typed (pt_cluster_keep_source_text) */
    /* type EDS: where its ClusterLoadAssignment comes from, and the name it has there
     * (eds_cluster_config.service_name, else the cluster's name). */
    struct pt_config_source *eds_config;
    const char *eds_service_name;
    pt_tls_settings_t *tls;    /* transport_socket: UpstreamTlsContext, or NULL (raw) */
    pt_tls_context_t *tls_ctx; /* built once the cluster validated (pt_cluster_build_tls) */
    /* transport_socket_matches (proxy/transport_match.h): the transport of each host
     * chosen by its metadata (pt_cluster_host_tls); none: every host uses tls_ctx. */
    struct pt_transport_match *matches;
    unsigned nmatches;
    int odst_port_override;        /* upstream_port_override, -1 for none */
    /* Where tls, tls_ctx and the matches live: an arena of their own, shared by the
     * versions of the cluster with the same transport_socket and transport_socket_matches,
     * so certificates are read and SSL contexts made once, not again with each endpoint
     * update or unrelated change. NULL with neither. */
    struct pt_cluster_tls *tls_own;
    /* ORIGINAL_DST: original_dst_lb_config and cleanup_interval, and the hosts made so far
     * (proxy/cluster.c explains why they live in a locked map); its upstream_port_override
     * is beside nmatches above (the fields are ordered to leave no holes). */
    const char *odst_header;       /* use_http_header: the header (lowercase), or NULL */
    uint64_t odst_cleanup_ms;      /* cleanup_interval (default 5 s) */
    struct pt_odst_hosts *odst;
    /* Load balancing (discovery/priority_set.h, discovery/lb.h): the priorities and
     * localities computed from the hosts' health, published by the main thread for the
     * workers, and each worker's own state for this version (nlb_locals slots: one per
     * worker and one for any other thread). */
    _Atomic(struct pt_lb_set *) lb_set;
    _Atomic(struct pt_lb_local **) lb_locals; /* made by the first thread that picks */
    unsigned nlb_locals;
    unsigned char source_typed; /* source_text's type URL was left out */
    struct pt_cluster *next_version, *prev_version; /* the state's live versions */
};

/* Whether c has TLS contexts to build: its transport_socket's, or a match's. */
int pt_cluster_has_tls(const pt_cluster_t *c);
/* Builds c's TLS contexts (reads their certificates, checks their keys): transport_socket's
 * and each of transport_socket_matches'. Errors are recorded in r as "<where>.
 * transport_socket: ..." (where: the cluster's path, "" for none). 0, or -1 on error. */
int pt_cluster_build_tls(pt_cluster_t *c, pt_cfg_t *r, const char *where);
/* Gives c (a new version, its TLS not built) the TLS settings and contexts of `from` when
 * their transport_socket and transport_socket_matches configurations are equal. 1 when
 * shared, else 0. */
int pt_cluster_share_tls(pt_cluster_t *c, const pt_cluster_t *from);
/* The TLS context of connections to h, one of c's hosts: the transport_socket_matches entry
 * its metadata picks, else the cluster's transport_socket. NULL: raw. */
pt_tls_context_t *pt_cluster_host_tls(const pt_cluster_t *c, const pt_host_t *h);

/* Parses the cluster the reader is positioned in into a new cluster with one reference. The
 * result may be invalid when r holds new errors (the caller then drops it); NULL only on
 * out-of-memory. */
pt_cluster_t *pt_cluster_parse(pt_cfg_t *r);
/* Gives c (a new version of an EDS cluster, not yet prepared) the endpoints of `from`, the
 * version it replaces, whose assignment stays in force: a CDS change of the cluster does
 * not wait for its endpoints again. 0, or -1 out of memory. */
int pt_cluster_adopt_endpoints(pt_cluster_t *c, const pt_cluster_t *from);
/* The first assignment of an EDS cluster whose version is not prepared yet (it came with
 * the CDS update being applied): parsed into c itself rather than into a new version, which
 * saves parsing the cluster again and registering its stats twice. 0, or -1 with errors in
 * cla. pt_cluster_drop_assignment undoes it (the EDS update it came with was refused). */
int pt_cluster_take_assignment(pt_cluster_t *c, pt_cfg_t *cla);
void pt_cluster_drop_assignment(pt_cluster_t *c);
/* Main thread: c's hosts' health changed otherwise than through pt_host_health_update
 * (several at once): every live version of c's cluster is computed again. */
void pt_cluster_health_changed(pt_cluster_t *c);
/* Main thread: computes now what health changes left to compute. */
void pt_lb_flush(void);
/* Main thread: health changes are computed once per turn of this loop (before it waits);
 * NULL (at exit): at once, as before a loop is set. */
struct ev_loop;
void pt_lb_set_main_loop(struct ev_loop *loop);

/* What c says of its i-th host, and its metadata (canonical JSON text, or NULL). */
static inline const pt_host_info_t *pt_cluster_host_info(const pt_cluster_t *c, unsigned i)
{
    return c->hinfo != NULL ? &c->hinfo[i] : &c->hinfo_default;
}
static inline const char *pt_cluster_host_metadata(const pt_cluster_t *c, unsigned i)
{
    return c->hmeta != NULL ? c->hmeta[i] : NULL;
}

/* Whether c is prepared (pt_cluster_prepare ran). */
static inline int pt_cluster_prepared(const pt_cluster_t *c)
{
    return c->state != NULL;
}

/* Whether a host pending removal has failed its health checks since c was made. */
int pt_cluster_pending_failed(const pt_cluster_t *c);
/* A new version of c without the hosts pending removal that failed (prepared), NULL out of
 * memory. */
pt_cluster_t *pt_cluster_without_failed_pending(const pt_cluster_t *c);
/* c's configuration as a tree of the caller's own (to read or change), or NULL out of
 * memory. */
json_t *pt_cluster_source_copy(const pt_cluster_t *c);
/* Keeps canonical (a pt_json_canonical text of c's configuration, malloc'd; c owns it
 * from now on) as c's source_text, without the type URL a CDS resource begins with. */
void pt_cluster_keep_source_text(pt_cluster_t *c, char *canonical);
/* Whether c was configured by exactly `canonical` (a pt_json_canonical text). */
int pt_cluster_source_is(const pt_cluster_t *c, const char *canonical);
/* The canonical text of a JSON value (compact, keys sorted): equal values, equal texts.
 * The caller frees it; NULL out of memory. */
char *pt_json_canonical(const json_t *v);

/* Attaches the cluster's state and registers its stats: once it validated, before any
 * worker sees it. 0, or -1 when out of memory. */
int pt_cluster_prepare(pt_cluster_t *c);
/* A new version of EDS cluster c with the endpoints of a ClusterLoadAssignment (the reader
 * positioned in it, errors recorded there): c's configuration parsed again from its source
 * into a version of its own, with its TLS context. Prepared. NULL on error. */
pt_cluster_t *pt_cluster_with_assignment(const pt_cluster_t *c, pt_cfg_t *cla);
/* A new version of DNS cluster c whose hosts are eps (n of them: what its names resolve to
 * now), made the way an EDS assignment makes one: hosts that stay are the same hosts, and a
 * healthy one that went stays pending removal while health checks pass. Prepared. NULL out
 * of memory (recorded in r). */
pt_cluster_t *pt_cluster_with_endpoints(const pt_cluster_t *c, const pt_endpoint_t *eps,
                                        unsigned n, pt_cfg_t *r);
pt_cluster_t *pt_cluster_ref(pt_cluster_t *c);
void pt_cluster_unref(pt_cluster_t *c);
/* Counts one of the load balancer's counters (enum pt_cluster_lb_stat), made on its first
 * count. Any thread. */
void pt_cluster_lb_stat_make(pt_cluster_t *c, unsigned which);
static inline void pt_cluster_lb_stat_inc(pt_cluster_t *c, unsigned which)
{
    pt_stat_t *ids = atomic_load_explicit(&c->lb_stats, memory_order_acquire);
    pt_stat_t id = ids != NULL ? __atomic_load_n(&ids[which], __ATOMIC_RELAXED) : 0;
    if (__builtin_expect(id != 0, 1))
        pt_stat_inc(id);
    else
        pt_cluster_lb_stat_make(c, which);
}
/* Counts a response: upstream_rq_<class>xx and upstream_rq_<code>. */
void pt_cluster_count_response(pt_cluster_t *c, int status);

/* Picks the next host for a new upstream connection on this worker, skipping hosts in
 * `exclude` (already tried). ctx (may be NULL) carries what the request gives the balancer
 * (pt_lb_context_t). NULL when the cluster has no usable host. For an ORIGINAL_DST cluster
 * the host is the connection's original destination (or the override header's), made on
 * first use, and the caller holds a reference to it: it gives it back with
 * pt_cluster_host_done (which does nothing for other clusters, whose hosts live as long as
 * their version). */
pt_host_t *pt_cluster_pick_host(pt_cluster_t *c, pt_worker_t *w, const pt_lb_context_t *ctx,
                                pt_host_t *const *exclude, unsigned nexclude);
static inline void pt_cluster_host_done(const pt_cluster_t *c, pt_host_t *h)
{
    if (h != NULL && c->type == PT_CLUSTER_ORIGINAL_DST)
        pt_host_unref(h);
}
/* Main thread: drops the ORIGINAL_DST hosts of c that were not picked since the last
 * cleanup and carry no connection or request, when c's cleanup_interval has passed since
 * the last one (now_ms monotonic). Returns how many went. */
unsigned pt_cluster_odst_cleanup(pt_cluster_t *c, uint64_t now_ms);
/* ORIGINAL_DST: the hosts made so far, each with a reference (the caller unrefs each and
 * frees the array); NULL with *n 0 when none. */
pt_host_t **pt_cluster_odst_hosts(pt_cluster_t *c, unsigned *n);
/* Bumped by every cleanup that dropped a host: workers then free their pools of dropped
 * hosts that are empty (proxy/pool.c). */
extern _Atomic uint64_t pt_odst_removed_epoch;

/* Opens a connection to host (one of c's) the way every upstream user does (pools,
 * tcp_proxy, health checks): the host's transport (pt_cluster_host_tls: raw, or an
 * UpstreamTlsContext with its SNI), connect_timeout, per_connection_buffer_limit_bytes and
 * TCP keepalive. Returns NULL with *err < 0 when no connection could be started (-EMFILE and the like when no socket
 * can be made, -ENOMEM); nothing is left for the caller to clean up then. Otherwise
 * h->on_connect reports the outcome from a later loop turn. */
pt_conn_t *pt_cluster_connect(const pt_cluster_t *c, pt_worker_t *w, const pt_host_t *host,
                              const pt_conn_handler_t *h, void *data, int *err);
/* pt_cluster_connect for a request's upstream name (auto_sni / auto_san_validation): name
 * is the SNI when c has auto_sni and name is not an IP address (else the context's sni),
 * and the SAN the certificate must carry when c has auto_san_validation. NULL name: as
 * pt_cluster_connect. A raw transport has neither. */
pt_conn_t *pt_cluster_connect_named(const pt_cluster_t *c, pt_worker_t *w,
                                    const pt_host_t *host, const char *name,
                                    const pt_conn_handler_t *h, void *data, int *err);
/* The upstream name of a request to c from its host value (":authority" after the route's
 * rewrites) and the override header's value (NULL or "" when absent): the override when
 * set, without its port (an IPv6 literal without its brackets), copied into a. NULL when
 * c has neither auto_sni nor auto_san_validation, or the name is empty. */
const char *pt_cluster_upstream_name(const pt_cluster_t *c, pt_arena_t *a,
                                     const char *host_value, const char *override_value);

#endif
