/* The worker's view: the resources a worker resolves names through (clusters now, route
 * configurations and secrets as they become resources of their own), as one immutable,
 * refcounted object.
 *
 * The main thread builds a new view for every change it publishes and posts it to each
 * worker, which adopts it at its next loop turn. Filters never hold a cluster across
 * requests: they keep its name and look it up in the view of the request they serve, so a
 * cluster that is added, changed or removed is seen by the next request, and a missing one
 * is answered at run time (503, flag NC).
 *
 * A request pins the view it started with until it ends (the clusters it resolved stay
 * valid for its retries, timers and pooled connections), and so does a tcp_proxy session.
 * Pinning counts per worker (pt_worker_view_t), not on the shared view: a request touches no
 * memory another thread writes. */
#ifndef PT_VIEW_H
#define PT_VIEW_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pt_cluster pt_cluster_t;
typedef struct pt_worker pt_worker_t;
typedef struct pt_route_config pt_route_config_t;

typedef struct pt_cluster_set pt_cluster_set_t;

typedef struct pt_view {
    _Atomic long refs;
    uint64_t version;          /* increases with every view built */
    /* The clusters, in the order they were given, and their index by name: the set's,
     * which views differing only in routes share (it holds the references). */
    pt_cluster_set_t *set;
    pt_cluster_t **clusters;
    unsigned nclusters;
    pt_cluster_t **index;      /* open addressing by name, cap a power of two */
    unsigned cap;
    /* RDS route configurations by slot (pt_rds_slot, proxy/route_manager.h), a reference
     * each; NULL where none has come. */
    pt_route_config_t **routes;
    unsigned nroutes;
    struct pt_view *next_reap; /* waiting for the main thread (pt_views_reap) */
} pt_view_t;

/* A view of these clusters (taking a reference to each). NULL when out of memory. */
pt_view_t *pt_view_new(pt_cluster_t *const *clusters, unsigned n);
/* A view with base's clusters (shared, not copied: O(nroutes)) and these route
 * configurations; base NULL: no clusters. NULL when out of memory. */
pt_view_t *pt_view_with_routes(const pt_view_t *base, pt_route_config_t *const *routes,
                               unsigned nroutes);
/* O(1): the RDS route configuration in this slot; NULL when none has come. */
static inline pt_route_config_t *pt_view_route_config(const pt_view_t *v, unsigned slot)
{
    return v != NULL && slot < v->nroutes ? v->routes[slot] : NULL;
}
pt_view_t *pt_view_ref(pt_view_t *v);
/* The last reference, dropped on a worker, leaves the view to the main thread's next
 * pt_views_reap: releasing the thousands of clusters a view holds is not work for a worker
 * adopting a newer view in the middle of its requests. */
void pt_view_unref(pt_view_t *v);
/* Main thread: destroys the views whose last reference went on a worker (now and then, and
 * at exit once the workers are gone). */
void pt_views_reap(void);
/* O(1) by name; NULL when the view has no such cluster. */
pt_cluster_t *pt_view_find_cluster(const pt_view_t *v, const char *name);

/* A worker's handle on one view: what its requests pin. */
typedef struct pt_worker_view {
    pt_view_t *view;           /* a reference */
    unsigned pins;             /* requests and sessions of this worker using it */
    int retired;               /* a newer view has been adopted */
} pt_worker_view_t;

/* Worker thread: makes v (the caller's reference) the view new requests pin. */
void pt_worker_view_adopt(pt_worker_t *w, pt_view_t *v);
/* Worker thread: the view a new request or session starts with, pinned; NULL before the
 * worker adopted any. */
pt_worker_view_t *pt_worker_view_pin(pt_worker_t *w);
/* The request or session that pinned wv ended. */
void pt_worker_view_unpin(pt_worker_view_t *wv);
/* Worker thread at exit: drops its current view. */
void pt_worker_view_release(pt_worker_t *w);

#endif
