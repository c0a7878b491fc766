/* xDS over gRPC: the mux that speaks to a control plane, as Envoy's gRPC mux does, over one
 * stream per mux, state of the world or delta:
 *
 *  - the aggregated stream (ADS, the bootstrap's dynamic_resources.ads_config):
 *    envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources (or
 *    DeltaAggregatedResources), carrying every type whose source says `ads: {}`;
 *  - a source's own control plane (its `api_config_source`, GRPC or DELTA_GRPC): one mux per
 *    control plane and resource type, on the type's own service
 *    (envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters or DeltaClusters,
 *    ListenerDiscoveryService, RouteDiscoveryService, EndpointDiscoveryService,
 *    envoy.service.secret.v3.SecretDiscoveryService). Sources that name the same control
 *    plane the same way share it (pt_xds_mux_for): a thousand EDS clusters with one
 *    eds_config make one EDS stream asking for a thousand names.
 * One state machine serves both: per type, its watches, version, nonce and (delta) the
 * resources in force; what differs is the path of the stream and whether it carries one
 * type or several.
 *
 * Consumers watch a resource type (CDS and LDS as wildcards, EDS, RDS and SDS by resource
 * names) with the same callback a file subscription has (discovery/file_subscription.h):
 * each DiscoveryResponse of the type is checked and handed to the watches it concerns (a
 * wildcard watch: every response; a watch of names: a response that has, changes or removes
 * one of them), which accept it (applied) or refuse it with why. The mux then ACKs (a
 * DiscoveryRequest with the response's version_info and nonce) or NACKs (the last accepted
 * version, the nonce, and error_detail {code 3 INVALID_ARGUMENT, message: the refusal's
 * field path and reason}); a refused update changes nothing. Names that change (an EDS
 * cluster added) are sent at once with the last version and nonce.
 *
 * A stream is opened to a host of the mux's cluster once the static clusters exist
 * (pt_xds_start; a source's own mux once it has a watch, and it is closed when its last
 * watch goes); when it ends or cannot be opened it is opened again after a jittered
 * exponential backoff (0.5 s doubling to 30 s, reset by a response), and every type is
 * asked for again with the version it has, while the last accepted config keeps serving.
 * The first request carries the node (and, unless set_node_on_first_message_only, every
 * request does). Stats: control_plane.connected_state for ADS and
 * <scope>.<prefix>control_plane.connected_state for a source's own stream
 * (cluster_manager.cds.control_plane.connected_state, ...): gauges of the streams up; and
 * each watch's update_attempt / update_success / update_rejected / version_text as a file
 * subscription counts them. Main thread. */
#ifndef PT_ADS_H
#define PT_ADS_H

#include <jansson.h>

#include "discovery/file_subscription.h"
#include "proxy/config_source.h"

typedef struct pt_ads pt_ads_t;
typedef struct pt_ads_watch pt_ads_watch_t;
struct pt_cluster_manager;
struct pt_worker;

typedef struct pt_ads_config {
    const char *cluster_name;          /* grpc_services[0].envoy_grpc.cluster_name */
    int set_node_on_first_message_only;
    int delta;                         /* api_type DELTA_GRPC */
    json_t *node;                      /* the Node as proto3 JSON (a reference is taken) */
    /* NULL: the aggregated stream, for any type. Else the one type this mux carries, on
     * the type's own service, and the stats its connected_state gauge is named after
     * (<stat_scope>.<stat_prefix>control_plane.connected_state). */
    const char *type_url;
    const char *stat_scope, *stat_prefix;
} pt_ads_config_t;

/* What a mux needs to open streams: the clusters (the control plane's is looked up at each
 * open), the main thread's worker, and the node to announce (a reference is taken). Call
 * before any mux is made; pt_xds_free undoes it. */
void pt_xds_init(struct pt_cluster_manager *cm, struct pt_worker *main_worker, json_t *node);
/* The bootstrap's ADS stream. NULL when out of memory. */
pt_ads_t *pt_xds_ads_new(const pt_ads_config_t *cfg);
/* The mux of src's api_config_source (gRPC) for cfg->type_url: the one made before for the
 * same control plane, source settings and type, or a new one. NULL with why in err. */
pt_ads_t *pt_xds_mux_for(const pt_config_source_t *src, const pt_file_subscription_config_t *cfg,
                         char *err, size_t errlen);
/* Opens the streams (the static clusters, among them the control planes', are up); muxes
 * made later open theirs as soon as they have a watch. */
void pt_xds_start(void);
/* Closes every stream and opens no other (shutdown). */
void pt_xds_stop(void);
/* Frees every mux. Watches still held by subscriptions outlive them, orphaned: they deliver
 * nothing and pt_ads_unwatch frees them. */
void pt_xds_free(void);

/* The process's ADS mux, for subscriptions whose ConfigSource says `ads: {}` (NULL when
 * the bootstrap has no ads_config). */
pt_ads_t *pt_ads_current(void);

/* Watches cfg->type_url (stats and logs as cfg names them; path is ignored). A watch starts
 * as a wildcard; pt_ads_watch_set_names narrows it. NULL when out of memory. */
pt_ads_watch_t *pt_ads_watch(pt_ads_t *a, const pt_file_subscription_config_t *cfg,
                             pt_file_subscription_cb cb, void *data);
/* The resource names this watch wants (copied); n = 0 with names NULL: the wildcard. The
 * type's request goes out at once when the union of its watches' names changed. */
int pt_ads_watch_set_names(pt_ads_watch_t *w, const char *const *names, size_t n);
/* Safe from the watch's own callback. NULL is ignored. */
void pt_ads_unwatch(pt_ads_watch_t *w);
/* Initial fetch: until the first response of the watch's type comes (accepted or not) or
 * timeout_ms passes (0: no limit), the watch is warming; the server is not ready until its
 * listeners and clusters are no longer (Envoy's initial_fetch_timeout). */
void pt_ads_watch_set_initial_fetch(pt_ads_watch_t *w, uint64_t timeout_ms);
int pt_ads_watch_warming(const pt_ads_watch_t *w);
/* version_info of the last update this watch accepted ("" before one). */
const char *pt_ads_watch_version(const pt_ads_watch_t *w);
const pt_subscription_stats_t *pt_ads_watch_stats(const pt_ads_watch_t *w);

/* The gRPC method of a type's own discovery service ("/envoy.service.cluster.v3.
 * ClusterDiscoveryService/StreamClusters", DeltaClusters with delta), or NULL for a type
 * without one. */
const char *pt_xds_service_path(const char *type_url, int delta);

#endif
