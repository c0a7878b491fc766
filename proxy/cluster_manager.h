/* The cluster manager (main thread): owns every cluster by name, static ones from the
 * bootstrap and dynamic ones from CDS, and publishes the view workers resolve names through.
 *
 * Every source (the bootstrap, a watched file, later a control plane) feeds the same apply
 * path, so a source is only a transport. An update is validated completely before anything
 * changes: each resource is parsed into a new cluster version and its TLS context built;
 * one error anywhere rejects the whole update, which then changes nothing (the last good
 * clusters keep serving) and is reported with every error's field path. A resource equal to
 * the cluster's active one changes nothing either, so the work of an update follows what it
 * changed. After an applied update the manager builds one new view and hands it to its
 * listener (the server), which posts it to the workers and updates health checking and
 * outlier detection.
 *
 * State survives updates: a new version of a cluster shares the cluster's state (breaker
 * counts, balancer cursors) and host objects (health, outlier state, counters, pooled
 * connections) with the versions before it (proxy/cluster.h). */
#ifndef PT_CLUSTER_MANAGER_H
#define PT_CLUSTER_MANAGER_H

#include <jansson.h>

#include "proxy/config_reader.h"
#include "proxy/stats.h"
#include "proxy/view.h"

typedef struct pt_cluster_manager pt_cluster_manager_t;

/* Called after every applied change with the new view (a reference for the callee). */
typedef void (*pt_cluster_manager_publish_fn)(void *data, pt_view_t *view);

pt_cluster_manager_t *pt_cluster_manager_new(pt_cluster_manager_publish_fn publish, void *data);
void pt_cluster_manager_free(pt_cluster_manager_t *cm);

/* The bootstrap's static clusters, in two steps, as the server validates a bootstrap:
 *  _parse_static reads static_resources.clusters (every error into r, with its path) into a
 *    view of the clusters that parsed, also when some did not, so that the listeners can be
 *    checked against them (proxy/config.h, pt_cluster_lookup_t) and every error reported;
 *    NULL only when out of memory;
 *  _prepare_static, once the whole bootstrap validated, builds their TLS contexts (files
 *    read, keys checked: errors into r) and prepares them (hosts, state, stats); 0 or -1.
 * Then _set_static installs them (the manager takes a reference to each) and publishes a
 * view; 0, or -1 when out of memory. */
pt_view_t *pt_cluster_manager_parse_static(json_t *bootstrap, pt_cfg_t *r);
int pt_cluster_manager_prepare_static(pt_view_t *statics, pt_cfg_t *r);
int pt_cluster_manager_set_static(pt_cluster_manager_t *cm, const pt_view_t *statics);

struct pt_discovery_response;
/* A state-of-the-world CDS update (its envelope already checked: discovery/
 * discovery_response.h): the dynamic clusters are exactly its resources. Returns 0 when
 * applied (also when nothing changed), -1 when rejected: nothing changed, and err holds every
 * error with its path ("resources[2].connect_timeout: ...", "; "-separated). The caller's
 * subscription counts the update (cluster_manager.cds.*). */
int pt_cluster_manager_apply_cds(pt_cluster_manager_t *cm, const struct pt_discovery_response *resp,
                                 char *err, size_t errlen);

struct ev_loop;
/* From here on the manager's file subscriptions (EDS) are watched on loop (main thread). */
void pt_cluster_manager_set_loop(pt_cluster_manager_t *cm, struct ev_loop *loop);

/* The view of the clusters in force (a reference for the caller). */
pt_view_t *pt_cluster_manager_view(pt_cluster_manager_t *cm);

/* What /config_dump and /clusters show of one cluster. */
typedef struct pt_cluster_entry_info {
    const char *name;
    int dynamic;                /* from CDS (added_via_api) */
    const char *version_info;   /* of the update that last changed it ("" for static) */
    double last_updated;        /* wall-clock seconds */
    pt_cluster_t *active;       /* borrowed */
    /* An EDS cluster still waiting for its first assignment, within its eds_config's
     * initial_fetch_timeout (Envoy's warming cluster). */
    int warming;
} pt_cluster_entry_info_t;

/* Main thread, now and then: hosts pending removal (dropped by EDS while healthy) that have
 * failed their health checks since leave their clusters (new versions, published). */
void pt_cluster_manager_prune(pt_cluster_manager_t *cm);

/* How many clusters are warming now: EDS clusters whose first assignment has not come and
 * whose initial_fetch_timeout has not run out. The server is not ready (/ready 503) until
 * none is left at start. */
unsigned pt_cluster_manager_warming(pt_cluster_manager_t *cm);

/* Calls fn for every cluster, static first, each group in name order. */
void pt_cluster_manager_foreach(pt_cluster_manager_t *cm,
                                void (*fn)(void *data, const pt_cluster_entry_info_t *e),
                                void *data);
/* The last rejected CDS update: its version and errors (NULL when none was rejected). */
const char *pt_cluster_manager_last_rejected(pt_cluster_manager_t *cm, const char **version);
const char *pt_cluster_manager_cds_version(pt_cluster_manager_t *cm);

#endif
