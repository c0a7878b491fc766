/* The config snapshot: an immutable, refcounted, fully validated view of the bootstrap.
 *
 * The main thread builds a snapshot from a JSON tree (pt_config_build). Building either
 * succeeds completely or reports every error with its field path and yields nothing, so no
 * half-valid config is ever visible. Workers adopt a published snapshot at their next loop
 * turn; every connection holds a reference to the snapshot it started with. All memory of a
 * snapshot lives in its arena and goes in one pt_config_unref. */
#ifndef PT_CONFIG_H
#define PT_CONFIG_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "discovery/dns.h"
#include "proxy/address.h"
#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/config_source.h"
#include "proxy/stats.h"

typedef struct pt_network_filter_ops pt_network_filter_ops_t;

typedef struct pt_network_filter {
    const pt_network_filter_ops_t *ops;
    const char *name; /* as written in the config */
    void *config;
} pt_network_filter_t;

typedef struct pt_tls_settings pt_tls_settings_t;
typedef struct pt_tls_context pt_tls_context_t;

typedef enum pt_source_type {
    PT_SOURCE_ANY,
    PT_SOURCE_SAME_IP_OR_LOOPBACK,
    PT_SOURCE_EXTERNAL,
} pt_source_type_t;

/* envoy.config.listener.v3.FilterChainMatch. Empty fields match anything. */
typedef struct pt_filter_chain_match {
    uint32_t destination_port; /* 0: any */
    const pt_cidr_t *prefix_ranges;
    unsigned nprefix_ranges;
    const char *const *server_names; /* lowercase; "*.example.com" wildcards */
    unsigned nserver_names;
    const char *transport_protocol;  /* "tls", "raw_buffer", or NULL */
    const char *const *application_protocols;
    unsigned napplication_protocols;
    pt_source_type_t source_type;
    const pt_cidr_t *source_prefix_ranges;
    unsigned nsource_prefix_ranges;
    const uint32_t *source_ports;
    unsigned nsource_ports;
    /* The peer's address as the socket sees it (no PROXY protocol here: the same as the
     * source, matched as its own criterion after application_protocols, as Envoy does). */
    const pt_cidr_t *direct_source_prefix_ranges;
    unsigned ndirect_source_prefix_ranges;
} pt_filter_chain_match_t;

typedef struct pt_filter_chain {
    json_t *source;             /* the chain as configured (a reference): LDS compares it */
    const char *name;
    pt_filter_chain_match_t match;
    pt_network_filter_t *filters;
    unsigned nfilters;
    pt_tls_settings_t *tls;     /* transport_socket: DownstreamTlsContext, or NULL (raw) */
    pt_tls_context_t *tls_ctx;  /* built at prepare */
    uint64_t handshake_timeout_ms; /* transport_socket_connect_timeout; 0 = none (Envoy) */
    const struct pt_metadata *metadata; /* FilterChain.metadata, or NULL */
    /* The route configuration its connection manager takes from RDS (NULL: none, or
     * inline): the listener warms until it comes (pt_listener_config_warming). */
    const char *rds_name;
} pt_filter_chain_t;

/* What the listener knows of a new connection when it picks a filter chain. */
typedef struct pt_chain_query {
    const pt_addr_t *local;
    const pt_addr_t *remote;
    const char *sni;                 /* lowercase, or NULL */
    const char *transport_protocol;  /* "tls" or "raw_buffer" */
    const char *const *alpn;
    unsigned nalpn;
    const pt_addr_t *direct_remote; /* the socket's peer (NULL: the same as remote) */
} pt_chain_query_t;

typedef struct pt_listener_stats {
    pt_stat_t downstream_cx_total;
    pt_stat_t downstream_cx_active;
    pt_stat_t downstream_cx_destroy;
    pt_stat_t no_filter_chain_match;
    pt_stat_t downstream_cx_overflow;        /* the listener's connection_limit, or no fds */
    pt_stat_t downstream_global_cx_overflow; /* the process-wide connection limit */
    pt_stat_t downstream_cx_transport_socket_connect_timeout;
    pt_stat_t downstream_cx_length_ms;       /* histogram: accept to close */
} pt_listener_stats_t;

/* Listener.traffic_direction (core.v3.TrafficDirection): shown, changes nothing. */
typedef enum pt_traffic_direction {
    PT_TRAFFIC_UNSPECIFIED,
    PT_TRAFFIC_INBOUND,
    PT_TRAFFIC_OUTBOUND,
} pt_traffic_direction_t;

typedef struct pt_listener_config {
    json_t *source;              /* the listener as configured (a reference) */
    int dynamic;                 /* from LDS */
    const char *version_info;    /* LDS: of the update that last changed it */
    double last_updated;         /* LDS: wall-clock seconds */
    const char *name;
    const struct pt_metadata *metadata; /* Listener.metadata, or NULL */
    pt_addr_t address;
    const char *stat_name;       /* stat_prefix, or the address as Envoy writes it */
    uint32_t buffer_limit;       /* per_connection_buffer_limit_bytes */
    pt_filter_chain_t *chains;
    unsigned nchains;
    pt_filter_chain_t *default_chain;   /* default_filter_chain, or NULL */
    int tls_inspector;                  /* peek the ClientHello before choosing a chain */
    int http_inspector;                 /* peek the first bytes: HTTP/1.x, h2c or neither */
    int original_dst;                   /* envoy.filters.listener.original_dst */
    int use_original_dst;               /* hand restored connections to the listener of
                                           their original destination */
    int bind_to_port;                   /* 0: never bound, reached only by a hand-off */
    pt_traffic_direction_t traffic_direction;
    uint64_t listener_filters_timeout_ms;
    int continue_on_listener_filters_timeout;
    uint64_t connection_limit;          /* runtime envoy.resource_limits.listener.<name>.
                                           connection_limit; 0: none */
    int ignore_global_conn_limit;       /* its connections are not counted globally */
    int bypass_overload_manager;        /* the overload manager's limit does not apply to it
                                           (pt_listener_counts_globally) */
    uint32_t max_accept_per_event;      /* max_connections_to_accept_per_socket_event;
                                           0: petrel's batch (until none is left) */
    pt_listener_stats_t stats;
    pt_stat_t tls_inspector_tls_found, tls_inspector_tls_not_found,
        tls_inspector_client_hello_too_large, tls_inspector_sni_found, tls_inspector_alpn_found,
        listener_filters_timeout;
    pt_stat_t http_inspector_http10_found, http_inspector_http11_found,
        http_inspector_http2_found, http_inspector_http_not_found, http_inspector_read_error;
} pt_listener_config_t;

typedef struct pt_node_info {
    const char *id;
    const char *cluster;
    const char *region, *zone, *sub_zone;
    const char *metadata; /* node.metadata, a Struct (sent to control planes) as JSON, or NULL */
} pt_node_info_t;

/* An HTTP connection manager's rds: the route configuration `name` from `source`. */
typedef struct pt_rds_need {
    pt_config_source_t source;
    const char *name;
    const char *stat_prefix;
    struct pt_rds_need *next;
} pt_rds_need_t;

/* Whether a cluster of this name exists: what a config being built checks its references
 * against (Envoy's validate_clusters for a static route configuration, tcp_proxy's cluster
 * when every cluster is static). Clusters are the cluster manager's
 * (proxy/cluster_manager.h); whoever builds a config answers from it. */
typedef int (*pt_cluster_exists_fn)(void *data, const char *name);
typedef struct pt_cluster_lookup {
    pt_cluster_exists_fn exists;
    void *data;
} pt_cluster_lookup_t;

/* stats_config.histogram_bucket_settings, parsed (proxy/config.c). */
typedef struct pt_hist_settings pt_hist_settings_t;

typedef struct pt_config {
    _Atomic long refs;
    pt_arena_t arena;
    json_t *source;              /* the bootstrap as loaded, for /config_dump */
    uint64_t version;            /* increments with each snapshot built */
    pt_node_info_t node;
    const char *local_cluster_name; /* cluster_manager.local_cluster_name, or NULL */
    const char *outlier_event_log_path; /* cluster_manager.outlier_detection.event_log_path */
    int has_admin;
    pt_addr_t admin_address;
    /* admin.access_log and the deprecated admin.access_log_path: every admin request */
    struct pt_access_log **admin_logs;
    unsigned nadmin_logs;
    pt_listener_config_t *listeners;
    unsigned nlisteners;
    /* Listeners by address, for use_original_dst's hand-off (pt_config_listener_for): an
     * open-addressing table of listener index + 1 (0: empty), built with the snapshot. */
    uint32_t *listener_slots;
    unsigned nlistener_slots;
    /* The clusters references are checked against, while the config is built (then
     * cleared: a config outlives no lookup). */
    pt_cluster_lookup_t clusters;
    /* dynamic_resources: listeners (LDS) and clusters (CDS) from files. */
    int has_lds, has_cds;
    pt_config_source_t lds, cds;
    /* dynamic_resources.ads_config: the ADS stream's cluster (discovery/ads.h). */
    int has_ads;
    const char *ads_cluster;
    int ads_node_first_only;
    int ads_delta;                  /* api_type DELTA_GRPC */
    pt_rds_need_t *rds_needs;    /* every rds of the listeners' connection managers */
    /* Downstream connections the whole process accepts (proxy/overload.c); 0: no limit. */
    uint64_t max_downstream_connections;
    int max_downstream_from_overload_manager; /* that limit is the overload manager's monitor's */
    /* The bootstrap's DNS resolver: DNS clusters without one of their own use it. */
    pt_dns_resolver_config_t dns_resolver;
    /* Histograms are merged (their interval ends) every stats_flush_interval (5 s), or, with
     * stats_flush_on_admin, each time the admin shows stats. */
    uint64_t stats_flush_interval_ms;
    int stats_flush_on_admin;
    /* Until the snapshot is prepared: then the stats registry owns it (NULL). */
    pt_hist_settings_t *hist_settings;
    /* The bootstrap's tracing.http provider (proxy/tracing.h), or NULL: what a connection
     * manager's tracing without a provider of its own uses. Lives for the process. */
    struct pt_tracer *tracer;
} pt_config_t;

/* The bootstrap's application_log_config as a log pattern for pt_log_set_pattern (proxy/log.h),
 * or NULL when it has none. The config validated it. */
struct pt_log_pattern *pt_config_app_log_pattern(const pt_config_t *cfg);

/* Builds and validates a snapshot from a bootstrap tree (takes a reference to root):
 * everything but static_resources.clusters, which are the cluster manager's
 * (pt_cluster_manager_parse_static); `clusters` (NULL: none) answers which exist. Returns
 * NULL when any error was found; the errors are in r. Stats are registered only for a
 * snapshot that validated. */
pt_config_t *pt_config_build(json_t *root, const pt_cluster_lookup_t *clusters, pt_cfg_t *r);
pt_config_t *pt_config_ref(pt_config_t *c);
void pt_config_unref(pt_config_t *c);
struct pt_discovery_response;
/* A listener snapshot for an LDS update: the bootstrap read again (node, admin, runtime, its
 * static listeners), plus the listeners of `lds`, checked against `clusters` (those in
 * force). `prev` (the snapshot in force, or NULL) lends unchanged dynamic listeners their
 * version and time. NULL with every error in r. */
pt_config_t *pt_config_build_lds(json_t *bootstrap, const pt_cluster_lookup_t *clusters,
                                 const struct pt_discovery_response *lds,
                                 const pt_config_t *prev, pt_cfg_t *r);
/* The listener named so, or NULL. */
const pt_listener_config_t *pt_config_find_listener(const pt_config_t *c, const char *name);
/* The listener a connection whose original destination is `dst` is handed to (Envoy's
 * use_original_dst): the one whose address is exactly dst, else the wildcard one
 * (0.0.0.0 or ::) of dst's port, bound to a port or not; NULL when none. */
const pt_listener_config_t *pt_config_listener_for(const pt_config_t *c, const pt_addr_t *dst);
/* Builds c's table of listeners by address (in its arena): 0, or -1 out of memory. */
int pt_config_index_listeners(pt_config_t *c);

/* While c is built (a filter's or route's parse): whether a cluster of this name exists. */
int pt_config_cluster_exists(const pt_config_t *c, const char *name);

/* Chooses the filter chain for a connection the way Envoy does: each criterion in turn
 * (destination port, destination IP, server name, transport protocol, application
 * protocols, direct source IP, source type, source IP, source port) keeps only the most specific matching
 * chains. Falls back to the default chain; NULL when nothing matches. */
const pt_filter_chain_t *pt_listener_find_chain(const pt_listener_config_t *l,
                                                const pt_chain_query_t *q);
int pt_chain_match_equal(const pt_filter_chain_match_t *a, const pt_filter_chain_match_t *b);


#endif
