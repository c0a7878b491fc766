/* The aggregated discovery service (ADS), state of the world, over one gRPC stream to the
 * control plane: envoy.service.discovery.v3.AggregatedDiscoveryService/
 * StreamAggregatedResources, as Envoy's gRPC mux speaks it.
 *
 * Consumers watch a resource type (CDS and LDS as wildcards, EDS and RDS by resource names)
 * with the same callback a file subscription has (discovery/file_subscription.h): each
 * DiscoveryResponse of the type is checked and handed to every watch of the type, which
 * accepts it (applied) or refuses it with why. The mux then ACKs (a DiscoveryRequest with
 * the response's version_info and nonce) or NACKs (the last accepted version, the nonce,
 * and error_detail {code 3 INVALID_ARGUMENT, message: the refusal's field path and
 * reason}); a refused update changes nothing. Names that change (an EDS cluster added) are
 * sent at once with the last version and nonce.
 *
 * The stream is opened to a host of the ADS cluster once the static clusters exist
 * (pt_ads_start); when it ends or cannot be opened it is opened again after a jittered
 * exponential backoff (0.5 s doubling to 30 s, reset by a response), and every type is
 * asked for again with the version it has, while the last accepted config keeps serving.
 * The first request carries the node (and, unless set_node_on_first_message_only, every
 * request does). Stats: control_plane.connected_state (gauge, 1 while a stream is up), and
 * each watch's update_attempt / update_success / update_rejected / version_text as a file
 * subscription counts them. Main thread. */
#ifndef PT_ADS_H
#define PT_ADS_H

#include <jansson.h>

#include "discovery/file_subscription.h"

typedef struct pt_ads pt_ads_t;
typedef struct pt_ads_watch pt_ads_watch_t;
struct pt_cluster_manager;
struct pt_worker;

typedef struct pt_ads_config {
    const char *cluster_name;          /* grpc_services[0].envoy_grpc.cluster_name */
    int set_node_on_first_message_only;
    int delta;                         /* api_type DELTA_GRPC */
    json_t *node;                      /* the Node as proto3 JSON (a reference is taken) */
} pt_ads_config_t;

pt_ads_t *pt_ads_new(const pt_ads_config_t *cfg, struct pt_cluster_manager *cm,
                     struct pt_worker *main_worker);
/* Opens the stream (and keeps it open from then on). */
void pt_ads_start(pt_ads_t *a);
/* Closes the stream and opens no other (shutdown). NULL is ignored. */
void pt_ads_stop(pt_ads_t *a);
void pt_ads_free(pt_ads_t *a);

/* The process's ADS mux, for subscriptions whose ConfigSource says `ads: {}` (NULL until
 * the server made one). */
pt_ads_t *pt_ads_current(void);
void pt_ads_set_current(pt_ads_t *a);

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

#endif
