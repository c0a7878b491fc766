#include "proxy/tracing.h"
#include "proxy/server.h"

#include "discovery/priority_set.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "discovery/ads.h"
#include "discovery/file_subscription.h"
#include "discovery/subscription.h"
#include "discovery/health_check.h"
#include "discovery/outlier.h"
#include "discovery/priority_set.h"
#include "proxy/access_log.h"
#include "proxy/admin.h"
#include "proxy/buf.h"
#include "proxy/config_source.h"
#include "proxy/heap.h"
#include "proxy/log.h"
#include "proxy/runtime.h"
#include "proxy/cluster.h"
#include "proxy/pool.h"
#include "proxy/stats.h"
#include "proxy/stats_config.h"
#include "proxy/stats_sink.h"
#include "proxy/time.h"
#include "discovery/dns.h"
#include "proxy/cluster_manager.h"
#include "proxy/route_manager.h"
#include "proxy/view.h"
#include "tls/secret.h"

#define DRAIN_POLL_INTERVAL 0.05

const char *pt_server_state_str(pt_server_state_t st)
{
    switch (st) {
    case PT_SERVER_INITIALIZING:
        return "INITIALIZING";
    case PT_SERVER_LIVE:
        return "LIVE";
    case PT_SERVER_DRAINING:
        return "DRAINING";
    case PT_SERVER_STOPPED:
        return "STOPPED";
    }
    return "?";
}

static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void worker_adopt_view(pt_worker_t *w, void *arg)
{
    if (w->stopping) { /* past its loop: nothing will release it */
        pt_view_unref(arg);
        return;
    }
    pt_worker_view_adopt(w, arg);
    /* Pools of clusters that went let them go (against the view adopted: out of memory,
     * the worker keeps its old one). */
    if (w->view != NULL)
        pt_pool_prune(w, w->view->view);
}

/* The cluster manager applied a change: every worker adopts the new view at its next loop
 * turn, health checking and outlier detection follow it. */
/* A new view from what the managers hold (clusters, RDS route configurations): every
 * worker adopts it at its next loop turn; health checking and outlier detection follow
 * it. */
static void publish_view(pt_server_t *s)
{
    unsigned nroutes = 0;
    pt_route_config_t *const *routes =
        s->routes != NULL ? pt_route_manager_routes(s->routes, &nroutes) : NULL;
    /* The cluster manager's clusters, shared: a change builds their index once. */
    pt_view_t *view = pt_view_with_routes(s->cluster_view, routes, nroutes);
    if (view == NULL) {
        pt_error("out of memory: the last change is not in force");
        return;
    }
    pt_view_unref(s->view);
    s->view = view;
    /* Before the workers see the view, so their reports through its new versions find the
     * detector registered (after would be safe too, a report then waits for the update). */
    pt_outlier_update(s->outlier, view);
    for (unsigned i = 0; i < s->nworkers_started; i++) {
        if (pt_worker_post(&s->workers[i], worker_adopt_view, pt_view_ref(view)) != 0) {
            pt_view_unref(view); /* the worker's reference, never posted */
            pt_error("out of memory: worker %u keeps its configuration until the next change",
                     i);
        }
    }
    pt_health_checker_update(s->health_checker, view);
}

/* Initializing until the clusters warmed at start (their first endpoints came, or their
 * initial_fetch_timeout ran out) and, over ADS, the first clusters and listeners came (or
 * their sources' initial_fetch_timeout ran out): then live, as Envoy's server once its init
 * manager is done. Checked when clusters change and on the housekeeping tick (for the timeouts). */
static void check_warm(pt_server_t *s)
{
    if (s->state != PT_SERVER_INITIALIZING || !s->running)
        return;
    unsigned warming = s->clusters != NULL ? pt_cluster_manager_warming(s->clusters) : 0;
    if (warming > 0 || pt_subscription_warming(s->cds) || pt_subscription_warming(s->lds))
        return;
    for (unsigned i = 0; i < s->nlisteners; i++)
        if (s->listeners[i]->warming)
            return;
    s->state = PT_SERVER_LIVE;
    if (s->announced_warming)
        pt_info("initial resources in: live");
}

static void on_clusters_published(void *data, pt_view_t *view)
{
    pt_server_t *s = data;
    pt_view_unref(s->cluster_view);
    s->cluster_view = view;
    publish_view(s);
    check_warm(s);
}

static void start_warm_listeners(pt_server_t *s);

/* Route configurations came (or the first update of one was rejected): listeners that
 * warmed for them may go on. */
static void on_routes_published(void *data)
{
    pt_server_t *s = data;
    publish_view(s);
    start_warm_listeners(s);
    check_warm(s);
}

/* A cluster lookup over a view (the static clusters while the bootstrap is validated). */
static int view_has_cluster(void *data, const char *name)
{
    return pt_view_find_cluster(data, name) != NULL;
}

/* RDS validate_clusters and LDS listeners: against the clusters in force. */
static int cluster_exists(void *data, const char *name)
{
    pt_server_t *s = data;
    return pt_view_find_cluster(s->cluster_view, name) != NULL;
}

/* Every route configuration the connection managers name from RDS, read now: a file that
 * cannot be read or is invalid fails the start like any config error. */
static int ensure_route_manager(pt_server_t *s)
{
    if (s->routes == NULL) {
        s->routes = pt_route_manager_new(on_routes_published, s, cluster_exists, s);
        if (s->routes != NULL && s->loop != NULL)
            pt_route_manager_set_loop(s->routes, s->loop);
    }
    return s->routes != NULL ? 0 : -1;
}

static int start_rds(pt_server_t *s)
{
    if (ensure_route_manager(s) != 0) {
        fprintf(stderr, "error: out of memory\n");
        return -1;
    }
    for (pt_rds_need_t *n = s->config->rds_needs; n != NULL; n = n->next) {
        char err[2048];
        if (pt_route_manager_want(s->routes, &n->source, n->name, n->stat_prefix, err,
                                  sizeof(err)) != 0) {
            fprintf(stderr, "error: %s: rds %s: %s\n", s->opts.config_path, n->name, err);
            return -1;
        }
    }
    publish_view(s);
    return 0;
}

/* CDS from a file: every change of the file is an update of the dynamic clusters, applied
 * whole or not at all (proxy/cluster_manager.h). */
static int on_cds_update(void *data, const pt_discovery_response_t *resp, char *err,
                         size_t errlen)
{
    pt_server_t *s = data;
    return pt_cluster_manager_apply_cds(s->clusters, resp, err, errlen);
}

/* The initial fetch happens here, while the config is validated: a CDS file that cannot be
 * read or is invalid fails the start (or `--mode validate`) like any config error. */
static int start_cds(pt_server_t *s)
{
    const pt_config_source_t *src = &s->config->cds;
    pt_file_subscription_config_t sc = {
        .type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        .stat_scope = "cluster_manager",
        .stat_prefix = "cds.",
        .what = "clusters",
        /* Read whole, not resource by resource as assignments are: a cluster keeps many
         * small allocations, and making and freeing each resource's tree among them leaves
         * holes the heap cannot give back (10,000 clusters from a file: 5,590 B of RSS a
         * cluster read one by one, 3,831 B read whole, for the same heap in use). */
        .resource_by_resource = 0,
    };
    char err[2048];
    s->cds = pt_subscription_new(src, &sc, on_cds_update, s, err, sizeof(err));
    if (s->cds == NULL) {
        fprintf(stderr, "error: %s: dynamic_resources.cds_config: %s\n", s->opts.config_path,
                err);
        return -1;
    }
    int rc = pt_subscription_load(s->cds, err, sizeof(err));
    if (rc != PT_UPDATE_ACCEPTED && rc != PT_UPDATE_PENDING) {
        fprintf(stderr, "error: %s: dynamic_resources.cds_config: %s\n", s->opts.config_path,
                err);
        return -1;
    }
    return 0;
}

/* ---- listeners from LDS ---------------------------------------------------------------- */

static void worker_adopt(pt_worker_t *w, void *arg)
{
    pt_worker_adopt_config(w, arg);
}

/* One listener's socket handed to a worker (the worker owns the descriptor from here). */
typedef struct listener_assignment {
    pt_listener_t *listener;
    int fd;
} listener_assignment_t;

static void worker_add_listener(pt_worker_t *w, void *arg)
{
    listener_assignment_t *a = arg;
    if (w->stopping || pt_worker_add_listener(w, a->listener, a->fd) != 0) {
        /* The socket is ours now: close it rather than leak it. */
        close(a->fd);
        a->listener->fds[w->id] = -1;
    }
    free(a);
}

static void worker_remove_listener(pt_worker_t *w, void *arg)
{
    pt_listener_t *l = arg;
    if (!w->stopping)
        pt_worker_remove_listener(w, l);
    pt_listener_unref(l);
}

typedef struct drain_changed {
    pt_config_t *cfg;
    uint64_t drain_ms;
} drain_changed_t;

static void worker_drain_changed(pt_worker_t *w, void *arg)
{
    drain_changed_t *d = arg;
    if (!w->stopping)
        pt_session_drain_changed(w, d->cfg, d->drain_ms);
    pt_config_unref(d->cfg);
    free(d);
}

static void post_listener(pt_server_t *s, unsigned worker, pt_listener_t *l)
{
    if (worker >= l->nfds)
        return; /* bind_to_port false: nothing to watch */
    listener_assignment_t *a = malloc(sizeof(*a));
    if (a == NULL) {
        close(l->fds[worker]);
        l->fds[worker] = -1;
        return;
    }
    a->listener = l;
    a->fd = l->fds[worker];
    if (pt_worker_post(&s->workers[worker], worker_add_listener, a) != 0) {
        close(a->fd);
        l->fds[worker] = -1;
        free(a);
    }
}

static int ensure_route_manager(pt_server_t *s);
static void publish_view(pt_server_t *s);

static int modified_warming(pt_server_t *s, const pt_config_t *next, uint64_t now,
                            uint64_t *until);
static int lds_commit(pt_server_t *s, pt_config_t *next, char *err, size_t errlen);

/* listener_manager.total_listeners_active and _warming, as Envoy counts them. */
static void count_listeners(pt_server_t *s)
{
    unsigned warming = 0;
    for (unsigned i = 0; i < s->nlisteners; i++)
        warming += s->listeners[i]->warming != 0;
    pt_stat_set(s->lds_stats.active, s->nlisteners - warming);
    /* A listener changed in place serves as it was while its new version warms: that
     * version counts as warming too, as in Envoy's warming list. */
    if (s->lds_pending != NULL)
        warming += (unsigned)modified_warming(s, s->lds_pending, pt_now_ms(), NULL);
    pt_stat_set(s->lds_stats.warming, warming);
}

/* Warming listeners (bound, not listening: their TLS contexts wait for SDS secrets, their
 * connection managers for RDS route configurations) whose dependencies came or whose
 * initial_fetch_timeout ran out start listening and go to the workers; the timer is set
 * for the next timeout of those left. */
static void start_warm_listeners(pt_server_t *s)
{
    if (s->workers == NULL || s->loop == NULL)
        return; /* before the run: pt_server_run opens them as they are then */
    uint64_t now = pt_now_ms(), next = UINT64_MAX;
    if (s->lds_pending != NULL && !modified_warming(s, s->lds_pending, now, &next)) {
        /* The listeners an update changes warmed: it applies whole now. */
        pt_config_t *pending = s->lds_pending;
        s->lds_pending = NULL;
        char err[2048];
        if (lds_commit(s, pending, err, sizeof(err)) != 0)
            pt_error("lds: the update that waited for its listeners to warm cannot apply: %s", err);
        return; /* lds_commit looked at the warming listeners again */
    }
    for (unsigned i = 0; i < s->nlisteners; i++) {
        pt_listener_t *l = s->listeners[i];
        if (!l->warming)
            continue;
        const pt_listener_config_t *lc = pt_config_find_listener(s->config, l->name);
        if (lc != NULL && pt_listener_config_warming(lc, s->routes, now, &next))
            continue;
        char err[512];
        if (pt_listener_listen(l, err, sizeof(err)) != 0) {
            pt_error("%s", err);
            continue;
        }
        pt_info("listener %s: warmed (its TLS secrets and route configurations came, or "
                "their initial_fetch_timeout ran out): listening", l->name);
        for (unsigned w = 0; w < s->nworkers_started; w++)
            post_listener(s, w, l);
    }
    count_listeners(s);
    ev_timer_stop(s->loop, &s->listener_warm);
    if (next != UINT64_MAX) {
        ev_timer_set(&s->listener_warm, next > now ? (double)(next - now) / 1000.0 + 0.001 : 0.,
                     0.);
        ev_timer_start(s->loop, &s->listener_warm);
    }
}

static void on_listener_warm(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    pt_server_t *s = t->data;
    start_warm_listeners(s);
    check_warm(s);
}

/* SDS secrets came (tls/secret.c): listeners and clusters waiting for them may be done. */
static void on_secrets_changed(void *data)
{
    pt_server_t *s = data;
    start_warm_listeners(s);
    check_warm(s);
}

/* An LDS update: a new listener snapshot (static listeners and every listener of the update),
 * validated whole, with the RDS files its connection managers name read, and every new
 * socket bound, before anything changes. Then workers take the snapshot (new connections get
 * the new filter chains), sockets of listeners that stay are kept (no accept gap), new ones
 * are watched, removed ones closed, and the connections of listeners or filter chains that
 * changed or went drain and close within --drain-time-s. */
/* A listener snapshot from an LDS update (static listeners and every listener of resp),
 * validated whole; NULL with the errors in err. */
static pt_config_t *lds_build(pt_server_t *s, const pt_discovery_response_t *resp, char *err,
                              size_t errlen)
{
    pt_cfg_t r;
    json_t *none = json_object(); /* r only collects the errors */
    pt_cfg_init(&r, none);
    pt_cluster_lookup_t known = {cluster_exists, s};
    pt_config_t *next = pt_config_build_lds(s->config->source, &known, resp, s->config, &r);
    if (next == NULL) {
        err[0] = '\0';
        size_t len = 0;
        for (size_t i = 0; i < r.nerrors && len + 1 < errlen; i++) {
            int n = snprintf(err + len, errlen - len, "%s%s", len ? "; " : "", r.errors[i]);
            len = n < 0 ? len : (len + (size_t)n < errlen ? len + (size_t)n : errlen - 1);
        }
    }
    pt_cfg_dispose(&r);
    json_decref(none);
    return next;
}

/* The listener that serves cfg's listener of this name now, if it serves at the same address
 * (its socket is kept by an update). */
static pt_listener_t *bound_listener(pt_server_t *s, const pt_listener_config_t *lc)
{
    for (unsigned j = 0; j < s->nlisteners; j++)
        if (strcmp(s->listeners[j]->name, lc->name) == 0 &&
            pt_addr_equal(&s->listeners[j]->address, &lc->address))
            return s->listeners[j];
    return NULL;
}

/* How many listeners of next change one that serves now (same name and address) into a
 * version that waits for TLS secrets or route configurations: Envoy keeps the old version
 * serving until the new one warmed. *until is lowered to when that waiting may end. */
static int modified_warming(pt_server_t *s, const pt_config_t *next, uint64_t now,
                            uint64_t *until)
{
    int any = 0;
    for (unsigned i = 0; i < next->nlisteners; i++) {
        const pt_listener_config_t *lc = &next->listeners[i];
        pt_listener_t *l = bound_listener(s, lc);
        const pt_listener_config_t *was = pt_config_find_listener(s->config, lc->name);
        if (l == NULL || l->warming || was == NULL || json_equal(was->source, lc->source))
            continue;
        any += pt_listener_config_warming(lc, s->routes, now, until) != 0;
    }
    return any;
}

/* The update as it can serve now: next with each listener it changes in place into a version
 * that waits for secrets taken back to the version in force. NULL when that is not
 * needed or cannot be had (then next applies as it is). */
static pt_config_t *lds_interim(pt_server_t *s, const pt_config_t *next,
                                const pt_discovery_response_t *resp)
{
    uint64_t now = pt_now_ms();
    if (!modified_warming(s, next, now, NULL))
        return NULL;
    pt_discovery_resource_t *res = calloc(resp->nresources ? resp->nresources : 1, sizeof(*res));
    if (res == NULL)
        return NULL;
    for (size_t i = 0; i < resp->nresources; i++) {
        res[i] = resp->resources[i];
        const pt_listener_config_t *lc =
            res[i].name != NULL ? pt_config_find_listener(next, res[i].name) : NULL;
        const pt_listener_config_t *was =
            res[i].name != NULL ? pt_config_find_listener(s->config, res[i].name) : NULL;
        if (lc == NULL || was == NULL || !was->dynamic || was->source == NULL ||
            json_equal(was->source, lc->source) || bound_listener(s, lc) == NULL ||
            bound_listener(s, lc)->warming || !pt_listener_config_warming(lc, s->routes, now, NULL))
            continue;
        res[i].json = was->source; /* the version in force, for now */
        res[i].text = NULL;
        res[i].text_len = 0;
    }
    pt_discovery_response_t interim = {.root = resp->root,
                                       .version_info = resp->version_info,
                                       .resources = res,
                                       .nresources = resp->nresources};
    char err[2048];
    pt_config_t *cfg = lds_build(s, &interim, err, sizeof(err));
    free(res);
    if (cfg == NULL)
        pt_warn("lds: the listeners in force cannot be kept while the new ones warm (%s): "
                "the update applies now", err);
    return cfg;
}

/* An LDS update (see lds_commit). A listener it changes in place whose new version waits for
 * TLS secrets keeps serving as it was (the update applies without that change) until they
 * come or their initial_fetch_timeout runs out; then the update applies whole
 * (start_warm_listeners). */
static int on_lds_update(void *data, const pt_discovery_response_t *resp, char *err,
                         size_t errlen)
{
    pt_server_t *s = data;
    pt_config_t *next = lds_build(s, resp, err, errlen);
    if (next == NULL)
        return -1;
    /* Route configurations the new connection managers name: read before anything changes. */
    for (pt_rds_need_t *n = next->rds_needs; n != NULL; n = n->next) {
        if (ensure_route_manager(s) != 0 ||
            pt_route_manager_want(s->routes, &n->source, n->name, n->stat_prefix, err, errlen) != 0) {
            pt_config_unref(next);
            return -1;
        }
    }
    pt_config_unref(s->lds_pending); /* a newer update replaces one that waited */
    s->lds_pending = NULL;
    pt_config_t *interim = s->workers != NULL ? lds_interim(s, next, resp) : NULL;
    if (interim == NULL)
        return lds_commit(s, next, err, errlen);
    int rc = lds_commit(s, interim, err, errlen);
    if (rc == 0) {
        pt_info("lds: version %s waits for the TLS secrets or route configurations of the "
                "listeners it changes; they serve as they were until then", resp->version_info);
        s->lds_pending = next;
        start_warm_listeners(s); /* arms the timer for their timeouts */
    } else {
        pt_config_unref(next);
    }
    return rc;
}

/* Applies a listener snapshot: sockets of listeners that stay are kept (no accept gap), new
 * ones are bound (listening unless they warm), removed ones closed, and the connections of
 * listeners or filter chains that changed or went drain. next is taken. */
static int lds_commit(pt_server_t *s, pt_config_t *next, char *err, size_t errlen)
{
    if (s->workers == NULL) { /* at start: the listeners are bound when the server runs */
        pt_config_unref(s->config);
        s->config = next;
        publish_view(s);
        return 0;
    }
    /* Sockets: kept for a listener of the same name and address, else opened now. */
    pt_listener_t **bound = calloc(next->nlisteners ? next->nlisteners : 1, sizeof(*bound));
    int *fresh = calloc(next->nlisteners ? next->nlisteners : 1, sizeof(*fresh));
    int failed = bound == NULL || fresh == NULL;
    for (unsigned i = 0; !failed && i < next->nlisteners; i++) {
        const pt_listener_config_t *lc = &next->listeners[i];
        for (unsigned j = 0; j < s->nlisteners && bound[i] == NULL; j++)
            if (strcmp(s->listeners[j]->name, lc->name) == 0 &&
                pt_addr_equal(&s->listeners[j]->address, &lc->address) &&
                (s->listeners[j]->nfds > 0) == (lc->bind_to_port && s->nworkers > 0))
                bound[i] = s->listeners[j];
        if (bound[i] != NULL)
            continue;
        char why[512];
        bound[i] = pt_listener_open(lc, s->nworkers, pt_listener_config_warming(lc, s->routes, pt_now_ms(), NULL),
                                    why, sizeof(why));
        if (bound[i] == NULL) {
            snprintf(err, errlen, "resources: %s", why);
            failed = 1;
        }
        fresh[i] = 1;
    }
    if (failed) {
        for (unsigned i = 0; bound != NULL && fresh != NULL && i < next->nlisteners; i++)
            if (fresh[i])
                pt_listener_unref(bound[i]);
        free(bound);
        free(fresh);
        pt_config_unref(next);
        if (!err[0])
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Commit. Each worker, in order: the new snapshot, new sockets, removed sockets, then
     * the connections whose listener or chain changed drain. */
    uint64_t drain_ms = (uint64_t)(s->opts.drain_time_s * 1000.0);
    for (unsigned w = 0; w < s->nworkers_started; w++) {
        pt_worker_post(&s->workers[w], worker_adopt, pt_config_ref(next));
        for (unsigned i = 0; i < next->nlisteners; i++)
            if (fresh[i] && !bound[i]->warming)
                post_listener(s, w, bound[i]);
    }
    unsigned added = 0, removed = 0, modified = 0;
    for (unsigned j = 0; j < s->nlisteners; j++) {
        pt_listener_t *old = s->listeners[j];
        int kept = 0;
        for (unsigned i = 0; i < next->nlisteners && !kept; i++)
            kept = bound[i] == old;
        if (kept)
            continue;
        removed++;
        pt_info("lds: listener %s removed", old->name);
        for (unsigned w = 0; w < s->nworkers_started; w++)
            if (pt_worker_post(&s->workers[w], worker_remove_listener, pt_listener_ref(old)) != 0)
                pt_listener_unref(old);
        pt_listener_unref(old); /* the server's */
    }
    for (unsigned i = 0; i < next->nlisteners; i++) {
        const pt_listener_config_t *lc = &next->listeners[i];
        const pt_listener_config_t *was = pt_config_find_listener(s->config, lc->name);
        if (fresh[i]) {
            added++;
            pt_info("lds: listener %s added%s", lc->name,
                    bound[i]->warming
                        ? " (warming: its TLS secrets or route configurations have not come)"
                        : "");
        } else if (was != NULL && !json_equal(was->source, lc->source)) {
            modified++;
            pt_info("lds: listener %s updated in place", lc->name);
        }
    }
    for (unsigned w = 0; w < s->nworkers_started; w++) {
        drain_changed_t *d = malloc(sizeof(*d));
        if (d == NULL)
            continue;
        d->cfg = pt_config_ref(next);
        d->drain_ms = drain_ms;
        if (pt_worker_post(&s->workers[w], worker_drain_changed, d) != 0) {
            pt_config_unref(d->cfg);
            free(d);
        }
    }
    free(s->listeners);
    s->listeners = bound;
    s->nlisteners = next->nlisteners;
    free(fresh);
    pt_config_unref(s->config);
    s->config = next;
    pt_stat_add(s->lds_stats.added, added);
    pt_stat_add(s->lds_stats.modified, modified);
    pt_stat_add(s->lds_stats.removed, removed);
    publish_view(s);
    start_warm_listeners(s); /* their secrets may be there already */
    check_warm(s); /* the first listeners from the control plane may end the start */
    return 0;
}

/* The initial LDS read happens here, while the config is validated: an LDS file that cannot
 * be read or is invalid fails the start like any config error. */
static int start_lds(pt_server_t *s)
{
    const pt_config_source_t *src = &s->config->lds;
    pt_file_subscription_config_t sc = {
        .type_url = "type.googleapis.com/envoy.config.listener.v3.Listener",
        .stat_scope = "listener_manager",
        .stat_prefix = "lds.",
        .what = "listeners",
    };
    s->lds_stats.added = pt_stats_counter("listener_manager", NULL, NULL, "listener_added");
    s->lds_stats.modified = pt_stats_counter("listener_manager", NULL, NULL, "listener_modified");
    s->lds_stats.removed = pt_stats_counter("listener_manager", NULL, NULL, "listener_removed");
    char err[4096];
    s->lds = pt_subscription_new(src, &sc, on_lds_update, s, err, sizeof(err));
    if (s->lds == NULL) {
        fprintf(stderr, "error: %s: dynamic_resources.lds_config: %s\n", s->opts.config_path,
                err);
        return -1;
    }
    int rc = pt_subscription_load(s->lds, err, sizeof(err));
    if (rc != PT_UPDATE_ACCEPTED && rc != PT_UPDATE_PENDING) {
        fprintf(stderr, "error: %s: dynamic_resources.lds_config: %s\n", s->opts.config_path,
                err);
        return -1;
    }
    return 0;
}

/* The node as the control plane sees it (envoy.config.core.v3.Node): the bootstrap's id,
 * cluster and locality, and petrel's name and version as the user agent. */
static json_t *node_json(const pt_node_info_t *n)
{
    json_t *node = json_object();
    if (n->id != NULL)
        json_object_set_new(node, "id", json_string(n->id));
    if (n->cluster != NULL)
        json_object_set_new(node, "cluster", json_string(n->cluster));
    if (n->region != NULL || n->zone != NULL || n->sub_zone != NULL) {
        json_t *loc = json_object();
        if (n->region != NULL)
            json_object_set_new(loc, "region", json_string(n->region));
        if (n->zone != NULL)
            json_object_set_new(loc, "zone", json_string(n->zone));
        if (n->sub_zone != NULL)
            json_object_set_new(loc, "sub_zone", json_string(n->sub_zone));
        json_object_set_new(node, "locality", loc);
    }
    if (n->metadata != NULL) {
        json_t *md = json_loads(n->metadata, 0, NULL);
        if (md != NULL)
            json_object_set_new(node, "metadata", md);
    }
    json_object_set_new(node, "user_agent_name", json_string("petrel"));
    json_object_set_new(node, "user_agent_version", json_string(PT_VERSION));
    return node;
}

/* The control planes' muxes, made before the config is built: a TLS context's SDS secret
 * over ADS (`sds_config: {ads: {}}`) watches the ADS stream as the config is validated. The
 * bootstrap's ads_config is read for it here (pt_config_build reads it again and reports
 * what is wrong with it). Streams open only when the server runs (pt_xds_start). */
static int pre_xds(pt_server_t *s, json_t *root)
{
    pt_xds_init(NULL, &s->main_worker, NULL);
    json_t *ads = json_object_get(json_object_get(root, "dynamic_resources"), "ads_config");
    if (!json_is_object(ads))
        return 0;
    pt_cfg_t r;
    pt_arena_t arena = {0};
    pt_cfg_init_at(&r, ads, "dynamic_resources.ads_config");
    pt_api_source_t api;
    pt_api_source_parse(&r, &arena, 0, &api);
    int rc = 0;
    if (api.cluster != NULL) {
        pt_ads_config_t ac = {.cluster_name = api.cluster,
                              .set_node_on_first_message_only = api.node_first_only,
                              .delta = api.api_type == PT_API_DELTA_GRPC};
        if (pt_xds_ads_new(&ac) == NULL) {
            fprintf(stderr, "error: out of memory\n");
            rc = -1;
        }
    }
    pt_cfg_dispose(&r);
    pt_arena_dispose(&arena);
    return rc;
}

/* Once the config is built: the node every stream announces, and the clusters a stream
 * looks its control plane up in. */
static void start_xds(pt_server_t *s)
{
    json_t *node = node_json(&s->config->node);
    pt_xds_init(s->clusters, &s->main_worker, node);
    json_decref(node);
}

int pt_server_init(pt_server_t *s, const pt_options_t *opts)
{
    memset(s, 0, sizeof(*s));
    s->opts = *opts;
    s->start_time = wall_now();
    s->state = PT_SERVER_INITIALIZING;
    pt_stats_thread_init();

    if (!opts->validate_only) {
        pt_worker_set_count(opts->concurrency);
    }
    char err[1024];
    json_t *root = pt_config_load_file(opts->config_path, err, sizeof(err));
    if (root == NULL) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    /* Static clusters first (the cluster manager's), then the rest checked against them. */
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_cfg_set_message(&r, "envoy.config.bootstrap.v3.Bootstrap");
    pt_runtime_apply_early(root); /* before any regex is compiled */
    pt_stats_config_install(root); /* before any stat is made: tags and stats_matcher */
    pt_stats_sinks_configure(root);
    /* The clusters a control plane may be reached through (an ApiConfigSource's), and
     * the muxes of control planes, before anything watches them. */
    pt_config_source_set_static_clusters(root);
    if (pre_xds(s, root) != 0) {
        json_decref(root);
        return -1;
    }
    pt_view_t *statics = pt_cluster_manager_parse_static(root, &r);
    pt_cluster_lookup_t known = {view_has_cluster, statics};
    pt_config_t *cfg = pt_config_build(root, &known, &r);
    /* Zone aware routing's local cluster and locality, before clusters compute theirs. */
    if (cfg != NULL &&
        pt_lb_set_local(cfg->local_cluster_name,
                        &(pt_locality_t){cfg->node.region, cfg->node.zone, cfg->node.sub_zone}) != 0)
        pt_cfg_error(&r, NULL, "out of memory");
    if (cfg != NULL && statics != NULL && pt_cluster_manager_prepare_static(statics, &r) != 0) {
        pt_config_unref(cfg);
        cfg = NULL;
    }
    json_decref(root);
    if (cfg == NULL || statics == NULL) {
        for (size_t i = 0; i < r.nerrors; i++)
            fprintf(stderr, "error: %s: %s\n", opts->config_path, r.errors[i]);
        pt_cfg_dispose(&r);
        pt_config_unref(cfg);
        pt_view_unref(statics);
        return -1;
    }
    pt_cfg_dispose(&r);
    s->config = cfg;
    /* Petrel's own lines in the operator's format from here on (before any worker runs). */
    pt_log_set_pattern(pt_config_app_log_pattern(cfg));
    s->lds_stats.active = pt_stats_gauge("listener_manager", NULL, NULL, "total_listeners_active");
    s->lds_stats.warming =
        pt_stats_gauge("listener_manager", NULL, NULL, "total_listeners_warming");
    if (pt_dns_set_default_resolver(&cfg->dns_resolver) != 0) {
        fprintf(stderr, "error: out of memory\n");
        return -1;
    }
    s->clusters = pt_cluster_manager_new(on_clusters_published, s);
    if (s->clusters != NULL)
        start_xds(s);
    int rc = s->clusters != NULL ? pt_cluster_manager_set_static(s->clusters, statics) : -1;
    pt_view_unref(statics);
    if (rc != 0) {
        fprintf(stderr, "error: out of memory\n");
        return -1;
    }
    if (cfg->has_cds && start_cds(s) != 0)
        return -1;
    if (cfg->rds_needs != NULL && start_rds(s) != 0)
        return -1;
    if (cfg->has_lds && start_lds(s) != 0)
        return -1;
    return 0;
}

/* ---- drain and stop -------------------------------------------------------------- */

static uint64_t active_downstream(pt_server_t *s)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < s->nworkers; i++)
        n += atomic_load_explicit(&s->workers[i].downstream_active, memory_order_relaxed);
    return n;
}

void pt_server_stop(pt_server_t *s)
{
    if (s->state == PT_SERVER_STOPPED)
        return;
    s->state = PT_SERVER_STOPPED;
    ev_timer_stop(s->loop, &s->drain_poll);
    ev_break(s->loop, EVBREAK_ALL);
}

static void on_drain_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    pt_server_t *s = t->data;
    uint64_t active = active_downstream(s);
    if (active == 0) {
        pt_info("drain complete: no open connections");
        pt_server_stop(s);
    } else if (pt_now_ms() >= s->drain_deadline_ms) {
        pt_info("drain time over with %llu connections open: closing them",
                (unsigned long long)active);
        pt_server_stop(s);
    }
}

static _Atomic int health_check_failed, health_check_draining;

int pt_server_health_check_failed(void)
{
    return atomic_load_explicit(&health_check_failed, memory_order_relaxed) ||
           atomic_load_explicit(&health_check_draining, memory_order_relaxed);
}

void pt_server_set_health_check_failed(int failed)
{
    atomic_store_explicit(&health_check_failed, failed != 0, memory_order_relaxed);
}

void pt_server_drain_listeners(pt_server_t *s)
{
    atomic_store_explicit(&health_check_draining, 1, memory_order_relaxed);
    if (s->listeners_closed || s->state == PT_SERVER_STOPPED)
        return;
    s->listeners_closed = 1;
    s->state = PT_SERVER_DRAINING;
    pt_info("draining: listeners closed");
    for (unsigned i = 0; i < s->nworkers; i++)
        pt_worker_request(&s->workers[i], PT_WORKER_CLOSE_LISTENERS);
}

void pt_server_drain(pt_server_t *s)
{
    if (s->exit_pending || s->state == PT_SERVER_STOPPED)
        return;
    s->exit_pending = 1;
    pt_server_drain_listeners(s);
    /* Keep-alive clients would hold the process for the whole drain time: HTTP connections
     * close when idle, or after the response in flight. */
    for (unsigned i = 0; i < s->nworkers; i++)
        pt_worker_request(&s->workers[i], PT_WORKER_DRAIN_SESSIONS);
    pt_info("waiting up to %.1fs for open connections, then exiting", s->opts.drain_time_s);
    /* Monotonic: a wall-clock step must not cut the drain short or stretch it. */
    s->drain_deadline_ms = pt_now_ms() + (uint64_t)(s->opts.drain_time_s * 1000.0);
    ev_timer_init(&s->drain_poll, on_drain_poll, DRAIN_POLL_INTERVAL, DRAIN_POLL_INTERVAL);
    s->drain_poll.data = s;
    ev_timer_start(s->loop, &s->drain_poll);
}

/* SIGUSR1 reopens the access log files, as Envoy does (after logrotate moved them). */
static void on_sigusr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    pt_info("caught SIGUSR1: reopening access logs");
    pt_access_log_reopen_all();
}

/* SIGHUP is ignored, as Envoy does: petrel has no reload on SIGHUP, and a hangup of the
 * terminal that started it (or a `kill -HUP` meant for a daemon that reloads) must not end a
 * proxy with requests in flight. One line says it came. */
static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    pt_info("caught SIGHUP: ignored (petrel reloads nothing on SIGHUP; SIGTERM drains and "
            "exits)");
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    pt_server_t *s = w->data;
    pt_info("caught %s", w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
    /* A second signal during the drain: stop now. Only a second *signal*: a drain started
     * by POST /drain_listeners (a preStop hook) must still let the SIGTERM that follows it
     * wait for open connections. */
    if (s->signals_caught++ > 0) {
        pt_server_stop(s);
        return;
    }
    pt_server_drain(s);
}

static void on_heap_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    check_warm(t->data);
    pt_server_t *s = t->data;
    if (s->clusters != NULL)
        pt_cluster_manager_prune(s->clusters);
    pt_views_reap(); /* first: the clusters they release may be the last versions */
    pt_cluster_states_reap();
    pt_tls_contexts_reap();
    pt_stats_trim();
    pt_heap_maybe_trim();
}

/* Envoy's stats flush, for what petrel has of it: histograms are merged (an interval ends)
 * every stats_flush_interval. Not with stats_flush_on_admin: the admin merges then. */
static void on_stats_flush(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents, (void)t;
    pt_stats_flush(); /* histograms merge, then the stats_sinks get their snapshot */
}

/* ---- start ----------------------------------------------------------------------- */




int pt_server_run(pt_server_t *s)
{
    char err[512];
    pt_cluster_states_set_main_thread(); /* workers leave cluster stats to this thread */
    s->loop = ev_default_loop(EVFLAG_AUTO);
    if (s->loop == NULL) {
        fprintf(stderr, "error: cannot create the event loop\n");
        return 1;
    }
    /* The main thread's connections (admin) live on a worker-shaped object that shares
     * the default loop. */
    pt_worker_init(&s->main_worker, -1);
    /* pt_worker_init started these on its own loop; libev ignores a start of a watcher
     * still marked active, so stop them there before moving them to the main loop. */
    ev_ref(s->main_worker.loop);
    ev_prepare_stop(s->main_worker.loop, &s->main_worker.reaper);
    ev_async_stop(s->main_worker.loop, &s->main_worker.wakeup);
    ev_loop_destroy(s->main_worker.loop);
    s->main_worker.loop = s->loop;
    ev_async_start(s->loop, &s->main_worker.wakeup);
    ev_prepare_start(s->loop, &s->main_worker.reaper);
    ev_unref(s->loop);
    pt_worker_current = &s->main_worker;
    signal(SIGPIPE, SIG_IGN);

    unsigned n = s->opts.concurrency;
    s->nworkers = n;
    s->workers = calloc(n, sizeof(pt_worker_t));
    s->listeners = calloc(s->config->nlisteners ? s->config->nlisteners : 1,
                          sizeof(pt_listener_t *));
    if (s->workers == NULL || s->listeners == NULL) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }

    /* Bind everything before starting anything, so a port in use fails the start. A
     * listener whose TLS secrets (SDS from a control plane) have not come is bound but does
     * not listen until they do (start_warm_listeners). */
    ev_timer_init(&s->listener_warm, on_listener_warm, 0., 0.);
    s->listener_warm.data = s;
    pt_tls_set_secrets_hook(on_secrets_changed, s);
    for (unsigned i = 0; i < s->config->nlisteners; i++) {
        const pt_listener_config_t *lc = &s->config->listeners[i];
        pt_listener_t *l = pt_listener_open(lc, n, pt_listener_config_warming(lc, s->routes, pt_now_ms(), NULL),
                                            err, sizeof(err));
        if (l == NULL) {
            pt_error("%s", err);
            return 1;
        }
        s->listeners[s->nlisteners++] = l;
    }
    if (s->config->has_admin) {
        s->admin = pt_admin_start(s, &s->config->admin_address, err, sizeof(err));
        if (s->admin == NULL) {
            pt_error("%s", err);
            return 1;
        }
    }

    /* Outlier detection decides on the main loop from what the workers report. It watches
     * the view before the workers get it, so their first reports find it registered. */
    s->outlier = pt_outlier_start(&s->main_worker);
    if (s->config->outlier_event_log_path != NULL) {
        int rc = pt_outlier_set_event_log(s->outlier, s->config->outlier_event_log_path);
        if (rc != 0) {
            pt_error("cluster_manager.outlier_detection.event_log_path: cannot open %s: %s",
                     s->config->outlier_event_log_path, strerror(-rc));
            return 1;
        }
    }
    pt_outlier_update(s->outlier, s->view);
    /* Spans come back from the workers through queues made before they start. */
    if (pt_tracing_init(n) != 0) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    pt_tracing_start(s->clusters, &s->main_worker);

    for (unsigned i = 0; i < n; i++) {
        if (pt_worker_init(&s->workers[i], (int)i) != 0 || pt_worker_start(&s->workers[i]) != 0) {
            pt_error("cannot start worker %u", i);
            return 1;
        }
        pt_worker_post(&s->workers[i], worker_adopt, pt_config_ref(s->config));
        pt_worker_post(&s->workers[i], worker_adopt_view, pt_view_ref(s->view));
        s->nworkers_started = i + 1;
        for (unsigned j = 0; j < s->nlisteners; j++) {
            if (i >= s->listeners[j]->nfds)
                continue; /* bind_to_port false: never bound */
            if (s->listeners[j]->warming)
                continue; /* given to the workers once it warmed */
            listener_assignment_t *a = malloc(sizeof(*a));
            if (a == NULL)
                return 1;
            a->listener = s->listeners[j];
            a->fd = s->listeners[j]->fds[i];
            pt_worker_post(&s->workers[i], worker_add_listener, a);
        }
    }

    /* Health checks probe from the main loop; workers only read the hosts' health bits. */
    s->health_checker = pt_health_checker_start(&s->main_worker);
    pt_health_checker_update(s->health_checker, s->view);

    ev_signal_init(&s->sigusr1, on_sigusr1, SIGUSR1);
    s->sigusr1.data = s;
    ev_signal_start(s->loop, &s->sigusr1);
    ev_signal_init(&s->sighup, on_sighup, SIGHUP);
    ev_signal_start(s->loop, &s->sighup);
    ev_signal_init(&s->sigterm, on_signal, SIGTERM);
    ev_signal_init(&s->sigint, on_signal, SIGINT);
    s->sigterm.data = s->sigint.data = s;
    ev_signal_start(s->loop, &s->sigterm);
    ev_signal_start(s->loop, &s->sigint);

    for (unsigned i = 0; i < s->nlisteners; i++) {
        char a[PT_ADDR_STRLEN];
        pt_addr_format(&s->listeners[i]->address, a, sizeof(a));
        pt_info("listener %s on %s%s", s->listeners[i]->name, a,
                s->listeners[i]->nfds == 0  ? " (not bound: bind_to_port false)"
                : s->listeners[i]->warming
                    ? " (warming: waiting for its TLS secrets or route configurations)"
                                           : "");
    }
    pt_secret_watch_start(s->loop);
    pt_cluster_manager_set_loop(s->clusters, s->loop);
    pt_lb_set_main_loop(s->loop); /* health changes are computed once per turn of it */
    if (s->lds != NULL && pt_subscription_watch(s->lds, s->loop, err, sizeof(err)) != 0) {
        pt_error("dynamic_resources.lds_config: %s", err);
        return 1;
    }
    if (s->routes != NULL)
        pt_route_manager_set_loop(s->routes, s->loop);
    if (s->cds != NULL && pt_subscription_watch(s->cds, s->loop, err, sizeof(err)) != 0) {
        pt_error("dynamic_resources.cds_config: %s", err);
        return 1;
    }
    pt_xds_start(); /* the static clusters (the control planes' among them) are up */
    pt_stats_sinks_start(s->clusters, &s->main_worker);
    ev_timer_init(&s->heap_tick, on_heap_tick, PT_HEAP_TICK_SECS, PT_HEAP_TICK_SECS);
    s->heap_tick.data = s;
    ev_timer_start(s->loop, &s->heap_tick);
    if (!s->config->stats_flush_on_admin) {
        double every = (double)s->config->stats_flush_interval_ms / 1000.0;
        ev_timer_init(&s->stats_flush, on_stats_flush, every, every);
        s->stats_flush.data = s;
        ev_timer_start(s->loop, &s->stats_flush);
        ev_unref(s->loop);
    }
    ev_unref(s->loop); /* housekeeping alone must not keep the loop alive */
    pt_info("petrel %s started: %u worker%s, config %s", PT_VERSION, n, n == 1 ? "" : "s",
            s->opts.config_path);
    s->running = 1;
    unsigned warming = s->clusters != NULL ? pt_cluster_manager_warming(s->clusters) : 0;
    if (warming > 0) {
        s->announced_warming = 1;
        pt_info("initializing: %u cluster%s waiting for endpoints (/ready answers 503 until "
                "they come or their initial_fetch_timeout runs out)", warming,
                warming == 1 ? "" : "s");
    }
    if (pt_subscription_warming(s->cds) || pt_subscription_warming(s->lds)) {
        s->announced_warming = 1;
        pt_info("initializing: waiting for the control plane's first clusters and listeners "
                "(/ready answers 503 until they come or initial_fetch_timeout runs out)");
    }
    unsigned warm_listeners = 0;
    for (unsigned i = 0; i < s->nlisteners; i++)
        warm_listeners += s->listeners[i]->warming != 0;
    if (warm_listeners > 0) {
        s->announced_warming = 1;
        pt_info("initializing: %u listener%s waiting for TLS secrets or route configurations "
                "(/ready answers 503 until "
                "they come or their initial_fetch_timeout runs out)",
                warm_listeners, warm_listeners == 1 ? "" : "s");
    }
    start_warm_listeners(s); /* arms the timer for their timeouts */
    check_warm(s);

    ev_run(s->loop, 0);

    pt_info("shutting down");
    for (unsigned i = 0; i < s->nworkers; i++)
        pt_worker_stop_and_join(&s->workers[i]);
    return s->exit_code;
}

void pt_server_dispose(pt_server_t *s)
{
    /* The control planes' connections go while the main loop and its connections are whole. */
    pt_xds_stop();
    pt_stats_sinks_dispose(); /* a TCP statsd connection lives on the main loop too */
    /* Likewise the collectors' (the workers, which queue spans, are joined already). */
    pt_tracing_stop();
    pt_tls_set_secrets_hook(NULL, NULL);
    pt_config_unref(s->lds_pending);
    s->lds_pending = NULL;
    if (s->loop != NULL)
        ev_timer_stop(s->loop, &s->listener_warm);
    pt_secret_watch_stop();
    pt_health_checker_stop(s->health_checker);
    s->health_checker = NULL;
    if (s->admin != NULL) {
        pt_admin_stop(s->admin);
        s->admin = NULL;
    }
    for (unsigned i = 0; i < s->nworkers; i++)
        pt_worker_dispose(&s->workers[i]);
    pt_outlier_stop(s->outlier); /* after the workers: nothing reports any more */
    s->outlier = NULL;
    free(s->workers);
    s->workers = NULL;
    for (unsigned i = 0; i < s->nlisteners; i++)
        pt_listener_unref(s->listeners[i]);
    free(s->listeners);
    s->listeners = NULL;
    /* The subscriptions and managers own file watches and timers on the main loop: they
     * go before the loop does. */
    pt_subscription_free(s->cds);
    s->cds = NULL;
    pt_subscription_free(s->lds);
    s->lds = NULL;
    pt_route_manager_free(s->routes);
    s->routes = NULL;
    pt_rds_slots_dispose();
    pt_lb_set_main_loop(NULL); /* what is left to compute, now */
    pt_cluster_manager_free(s->clusters);
    s->clusters = NULL;
    pt_dns_clear_default_resolver();
    /* Last: the managers' subscriptions (EDS, RDS) are watches on the muxes (those of
     * secrets still held by the snapshots below are orphaned, then freed with them). */
    pt_xds_free();
    if (s->loop != NULL) {
        pt_conn_reap(&s->main_worker);
        ev_signal_stop(s->loop, &s->sigterm);
        ev_signal_stop(s->loop, &s->sigusr1);
        ev_signal_stop(s->loop, &s->sigint);
        ev_signal_stop(s->loop, &s->sighup);
        /* ev_signal_stop restores the default action; a hangup must not cut the last
         * access log lines short now either, nor a SIGTERM or SIGINT that comes while the
         * process is already on its way out (it would end it with that signal instead of
         * its exit status). */
        signal(SIGHUP, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        /* The main worker shares the default loop: detach it before disposing. */
        s->main_worker.loop = NULL;
        pthread_mutex_destroy(&s->main_worker.lock);
        pt_fd_reserve_dispose(&s->main_worker.fd_reserve);
        ev_loop_destroy(s->loop);
        s->loop = NULL;
    }
    pt_config_source_set_static_clusters(NULL);
    pt_view_unref(s->cluster_view);
    s->cluster_view = NULL;
    pt_view_unref(s->view);
    s->view = NULL;
    pt_config_unref(s->config);
    s->config = NULL;
    pt_views_reap();
    pt_cluster_states_reap();
    pt_tls_contexts_reap(); /* those the workers let go */
    /* Buffered access log lines go out before the process exits. */
    pt_access_log_shutdown();
    pt_log_set_pattern(NULL); /* the workers are gone: no thread logs with it any more */
    pt_arena_thread_cleanup();
    pt_buf_pool_trim();
}
