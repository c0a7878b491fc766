/* envoy.config.core.v3.ConfigSource: where dynamic resources come from.
 *
 * From files (Envoy's filesystem subscription): `path_config_source` {path,
 * watched_directory {path}}, or the older bare `path`; from the control plane over the
 * bootstrap's ADS stream: `ads: {}` (discovery/ads.h); or from a control plane of the
 * source's own: `api_config_source` (an ApiConfigSource: GRPC or DELTA_GRPC over
 * grpc_services[0].envoy_grpc.cluster_name, one stream per resource type, as Envoy's gRPC
 * mux without ADS; or REST, polling). One parser for every place a ConfigSource appears
 * (bootstrap lds_config / cds_config, HCM rds, EDS clusters, SDS secrets), and for the
 * bootstrap's ads_config (an ApiConfigSource too).
 *
 * The cluster an ApiConfigSource names must be a static cluster of the bootstrap that is
 * not of type EDS (Envoy's rule: the control plane cannot be found through itself); once
 * the bootstrap's static clusters are known (pt_config_source_set_static_clusters) a
 * source naming another is refused at its cluster_name. */
#ifndef PT_CONFIG_SOURCE_H
#define PT_CONFIG_SOURCE_H

#include <jansson.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"

typedef enum pt_api_type {
    PT_API_GRPC = 0,   /* state of the world over gRPC */
    PT_API_DELTA_GRPC, /* incremental over gRPC */
    PT_API_REST,       /* DiscoveryRequest as JSON, polled over HTTP */
} pt_api_type_t;

/* An ApiConfigSource. */
typedef struct pt_api_source {
    pt_api_type_t api_type;
    const char *cluster;         /* grpc_services[0].envoy_grpc.cluster_name, or REST's
                                  * cluster_names[0] */
    int node_first_only;         /* set_node_on_first_message_only */
    uint64_t refresh_delay_ms;   /* REST: between polls (1 s unless set) */
    uint64_t request_timeout_ms; /* REST: of one poll (1 s unless set) */
} pt_api_source_t;

typedef struct pt_config_source {
    int ads;                       /* from the ADS stream (path NULL) */
    const pt_api_source_t *api;    /* from a control plane of its own, or NULL */
    const char *path;              /* the file holding a DiscoveryResponse */
    const char *watched_directory; /* NULL: the file's own directory is watched */
    uint64_t initial_fetch_timeout_ms; /* 15000 unless set (0: wait for ever) */
    /* What tells sources apart, for sharing one subscription among the users of the same
     * source: "ads", the file's path, or "api_config_source{GRPC,<cluster>...}". */
    const char *key;
} pt_config_source_t;

/* Parses the ConfigSource at `field` of the current object into *out (strings in a).
 * Returns 1 when present and valid, 0 when absent, -1 with errors recorded. */
int pt_config_source_parse(pt_cfg_t *r, pt_arena_t *a, const char *field,
                           pt_config_source_t *out);

/* A resource name given at `field` that is an xDS-TP URL (xdstp://authority/type/id): petrel
 * has no xDS-TP naming (authorities, collections, the context parameters), so such a name is
 * an error rather than an opaque name sent to a control plane. Returns -1 after recording
 * the error, else 0. */
int pt_config_no_xdstp(pt_cfg_t *r, const char *field, const char *name);

/* Parses the ApiConfigSource the reader is in (ads_config, a ConfigSource's
 * api_config_source) into *out. rest: whether api_type REST is allowed (not for ADS).
 * Errors are recorded, each naming its field. */
void pt_api_source_parse(pt_cfg_t *r, pt_arena_t *a, int rest, pt_api_source_t *out);

/* The bootstrap's static clusters (static_resources.clusters of this tree), which the
 * cluster of an ApiConfigSource must be one of (and not of type EDS). NULL forgets them
 * (nothing is checked then). Main thread. */
void pt_config_source_set_static_clusters(json_t *bootstrap);

#endif
