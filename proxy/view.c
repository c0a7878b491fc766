#include "proxy/view.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/cluster.h"
#include "proxy/hash.h"
#include "proxy/route.h"
#include "proxy/worker.h"

static _Atomic uint64_t next_version = 1;

/* The clusters of a view and their index by name: shared by the views that differ only in
 * their route configurations (the cluster manager's and the server's, a route update's),
 * so a change builds them once. Freed with the last view on them. */
struct pt_cluster_set {
    _Atomic long refs;
    pt_cluster_t **clusters; /* a reference each */
    unsigned n;
    pt_cluster_t **index;
    unsigned cap;
};

static pt_cluster_set_t *set_new(pt_cluster_t *const *clusters, unsigned n)
{
    pt_cluster_set_t *cs = calloc(1, sizeof(*cs));
    if (cs == NULL)
        return NULL;
    unsigned cap = 16;
    while (cap < n * 2)
        cap *= 2;
    cs->clusters = calloc(n ? n : 1, sizeof(*cs->clusters));
    cs->index = calloc(cap, sizeof(*cs->index));
    if (cs->clusters == NULL || cs->index == NULL) {
        free(cs->clusters);
        free(cs->index);
        free(cs);
        return NULL;
    }
    atomic_init(&cs->refs, 1);
    cs->cap = cap;
    for (unsigned i = 0; i < n; i++) {
        pt_cluster_t *c = clusters[i];
        uint64_t h = pt_hash_name(c->name) & (cap - 1);
        while (cs->index[h] != NULL)
            h = (h + 1) & (cap - 1);
        cs->index[h] = pt_cluster_ref(c);
        cs->clusters[cs->n++] = c;
    }
    return cs;
}

static void set_unref(pt_cluster_set_t *cs)
{
    if (atomic_fetch_sub_explicit(&cs->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < cs->n; i++)
        pt_cluster_unref(cs->clusters[i]);
    free(cs->clusters);
    free(cs->index);
    free(cs);
}

/* A view on cs (taking a reference) with these route configurations. */
static pt_view_t *view_on(pt_cluster_set_t *cs, pt_route_config_t *const *routes,
                          unsigned nroutes)
{
    pt_view_t *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return NULL;
    v->routes = calloc(nroutes ? nroutes : 1, sizeof(*v->routes));
    if (v->routes == NULL) {
        free(v);
        return NULL;
    }
    for (unsigned i = 0; i < nroutes; i++)
        v->routes[i] = pt_route_config_ref(routes[i]);
    v->nroutes = nroutes;
    atomic_init(&v->refs, 1);
    v->version = atomic_fetch_add(&next_version, 1);
    atomic_fetch_add_explicit(&cs->refs, 1, memory_order_relaxed);
    v->set = cs;
    v->clusters = cs->clusters;
    v->nclusters = cs->n;
    v->index = cs->index;
    v->cap = cs->cap;
    return v;
}

static pt_view_t *view_new(pt_cluster_t *const *clusters, unsigned n,
                           pt_route_config_t *const *routes, unsigned nroutes)
{
    pt_cluster_set_t *cs = set_new(clusters, n);
    if (cs == NULL)
        return NULL;
    pt_view_t *v = view_on(cs, routes, nroutes);
    set_unref(cs); /* the view's reference, or none */
    return v;
}

pt_view_t *pt_view_with_routes(const pt_view_t *base, pt_route_config_t *const *routes,
                               unsigned nroutes)
{
    if (base == NULL)
        return view_new(NULL, 0, routes, nroutes);
    return view_on(base->set, routes, nroutes);
}

pt_view_t *pt_view_new(pt_cluster_t *const *clusters, unsigned n)
{
    return view_new(clusters, n, NULL, 0);
}

pt_view_t *pt_view_ref(pt_view_t *v)
{
    if (v != NULL)
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

static pthread_mutex_t reap_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_view_t *to_reap;

static void view_destroy(pt_view_t *v)
{
    for (unsigned i = 0; i < v->nroutes; i++)
        pt_route_config_unref(v->routes[i]);
    free(v->routes);
    set_unref(v->set);
    free(v);
}

void pt_view_unref(pt_view_t *v)
{
    if (v == NULL || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (pt_cluster_states_on_main_thread()) {
        view_destroy(v);
        return;
    }
    pthread_mutex_lock(&reap_lock);
    v->next_reap = to_reap;
    to_reap = v;
    pthread_mutex_unlock(&reap_lock);
}

void pt_views_reap(void)
{
    pthread_mutex_lock(&reap_lock);
    pt_view_t *list = to_reap;
    to_reap = NULL;
    pthread_mutex_unlock(&reap_lock);
    while (list != NULL) {
        pt_view_t *v = list;
        list = v->next_reap;
        view_destroy(v);
    }
}

pt_cluster_t *pt_view_find_cluster(const pt_view_t *v, const char *name)
{
    if (v == NULL || name == NULL)
        return NULL;
    uint64_t h = pt_hash_name(name) & (v->cap - 1);
    while (v->index[h] != NULL) {
        if (strcmp(v->index[h]->name, name) == 0)
            return v->index[h];
        h = (h + 1) & (v->cap - 1);
    }
    return NULL;
}

/* ---- per worker ------------------------------------------------------------------ */

static void worker_view_free(pt_worker_view_t *wv)
{
    pt_view_unref(wv->view);
    free(wv);
}

void pt_worker_view_adopt(pt_worker_t *w, pt_view_t *v)
{
    pt_worker_view_t *wv = calloc(1, sizeof(*wv));
    if (wv == NULL) {
        pt_view_unref(v); /* keep serving with the view we have */
        return;
    }
    wv->view = v;
    pt_worker_view_t *old = w->view;
    w->view = wv;
    if (old != NULL) {
        old->retired = 1;
        if (old->pins == 0)
            worker_view_free(old);
    }
}

pt_worker_view_t *pt_worker_view_pin(pt_worker_t *w)
{
    pt_worker_view_t *wv = w->view;
    if (wv != NULL)
        wv->pins++;
    return wv;
}

void pt_worker_view_unpin(pt_worker_view_t *wv)
{
    if (wv != NULL && --wv->pins == 0 && wv->retired)
        worker_view_free(wv);
}

void pt_worker_view_release(pt_worker_t *w)
{
    pt_worker_view_t *wv = w->view;
    w->view = NULL;
    if (wv != NULL) {
        wv->retired = 1;
        if (wv->pins == 0)
            worker_view_free(wv);
    }
}
