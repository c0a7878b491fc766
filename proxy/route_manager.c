#include "proxy/route_manager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "discovery/discovery_response.h"
#include "discovery/file_subscription.h"
#include "discovery/subscription.h"
#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/time.h"

#define ROUTE_TYPE_URL "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

/* ---- slots by name ---------------------------------------------------------------- */

static char **slot_names;
static unsigned nslots, slot_cap;

unsigned pt_rds_slot(const char *name)
{
    for (unsigned i = 0; i < nslots; i++)
        if (strcmp(slot_names[i], name) == 0)
            return i;
    if (nslots == slot_cap) {
        unsigned cap = slot_cap ? slot_cap * 2 : 8;
        char **n = realloc(slot_names, cap * sizeof(*n));
        if (n == NULL)
            return (unsigned)-1; /* never found in a view: the request gets 404 */
        slot_names = n;
        slot_cap = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return (unsigned)-1;
    slot_names[nslots] = copy;
    return nslots++;
}

void pt_rds_slots_dispose(void)
{
    for (unsigned i = 0; i < nslots; i++)
        free(slot_names[i]);
    free(slot_names);
    slot_names = NULL;
    nslots = slot_cap = 0;
}

/* ---- the manager ------------------------------------------------------------------ */

typedef struct rds_file rds_file_t;

typedef struct rds_name {
    char *name;
    unsigned slot;
    rds_file_t *file;
    pt_route_config_t *active;  /* a reference, or NULL until one comes */
    /* From a control plane, none come yet: the listeners naming it warm until then
     * (monotonic ms: its source's initial_fetch_timeout from when it was first wanted;
     * UINT64_MAX for none). 0 once its first update came or was rejected, or for a file
     * (read when wanted), as Envoy's RDS init target is ready on either outcome. */
    uint64_t warm_until_ms;
    json_t *source;
    char *version_info;
    double last_updated;
    /* http.<stat_prefix>.rds.<name>.* of every connection manager that names it */
    struct rds_stats {
        pt_stat_t attempt, success, rejected, reload;
    } *stats;
    unsigned nstats;
    struct rds_name *next;
} rds_name_t;

struct rds_file {
    pt_route_manager_t *rm;
    char *path, *watched_directory;
    pt_subscription_t *sub; /* a file, the ADS stream (path "ads"), or a control plane's */
    rds_file_t *next;
};

struct pt_route_manager {
    void (*publish)(void *data);
    void *data;
    pt_cluster_exists_fn exists;
    void *exists_data;
    struct ev_loop *loop;
    rds_file_t *files;
    rds_name_t *names;
    pt_route_config_t **routes; /* by slot, for views */
    unsigned nroutes;
    int loading;                /* an initial read: publish once, by the caller */
};

static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

pt_route_manager_t *pt_route_manager_new(void (*publish)(void *data), void *data,
                                         pt_cluster_exists_fn exists, void *exists_data)
{
    pt_route_manager_t *rm = calloc(1, sizeof(*rm));
    if (rm == NULL)
        return NULL;
    rm->publish = publish;
    rm->data = data;
    rm->exists = exists;
    rm->exists_data = exists_data;
    return rm;
}

void pt_route_manager_free(pt_route_manager_t *rm)
{
    if (rm == NULL)
        return;
    while (rm->files != NULL) {
        rds_file_t *f = rm->files;
        rm->files = f->next;
        pt_subscription_free(f->sub);
        free(f->path);
        free(f->watched_directory);
        free(f);
    }
    while (rm->names != NULL) {
        rds_name_t *n = rm->names;
        rm->names = n->next;
        pt_route_config_unref(n->active);
        json_decref(n->source);
        free(n->version_info);
        free(n->stats);
        free(n->name);
        free(n);
    }
    free(rm->routes);
    free(rm);
}

/* The routes array for views, rebuilt after a change. */
static int rebuild_routes(pt_route_manager_t *rm)
{
    unsigned n = 0;
    for (rds_name_t *e = rm->names; e != NULL; e = e->next)
        if (e->slot + 1 > n)
            n = e->slot + 1;
    pt_route_config_t **routes = calloc(n ? n : 1, sizeof(*routes));
    if (routes == NULL)
        return -1;
    for (rds_name_t *e = rm->names; e != NULL; e = e->next)
        routes[e->slot] = e->active;
    free(rm->routes);
    rm->routes = routes;
    rm->nroutes = n;
    return 0;
}

static void count(rds_name_t *e, size_t offset)
{
    for (unsigned i = 0; i < e->nstats; i++)
        pt_stat_inc(*(pt_stat_t *)((char *)&e->stats[i] + offset));
}

/* A change of an RDS file: every name it serves that the change contains gets its new
 * route configuration, all of them or none. */
static int on_rds_update(void *data, const pt_discovery_response_t *resp, char *err,
                         size_t errlen)
{
    rds_file_t *f = data;
    pt_route_manager_t *rm = f->rm;
    err[0] = '\0';
    unsigned nnames = 0;
    for (rds_name_t *e = rm->names; e != NULL; e = e->next)
        nnames += e->file == f;
    pt_route_config_t **next = calloc(nnames ? nnames : 1, sizeof(*next));
    const pt_discovery_resource_t **src = calloc(nnames ? nnames : 1, sizeof(*src));
    if (next == NULL || src == NULL) {
        free(next);
        free(src);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int bad = 0;
    unsigned k = 0;
    for (rds_name_t *e = rm->names; e != NULL; e = e->next) {
        if (e->file != f)
            continue;
        count(e, offsetof(struct rds_stats, attempt));
        for (size_t i = 0; i < resp->nresources; i++) {
            const pt_discovery_resource_t *res = &resp->resources[i];
            if (res->name == NULL || strcmp(res->name, e->name) != 0)
                continue;
            src[k] = res;
            if (e->source != NULL && json_equal(e->source, res->json))
                break; /* unchanged: the active one stays */
            pt_cfg_t r;
            pt_discovery_resource_reader(res, &r);
            next[k] = pt_route_config_parse_resource(&r, rm->exists, rm->exists_data);
            pt_cfg_finish(&r);
            if (next[k] == NULL || !pt_cfg_ok(&r)) {
                size_t len = strlen(err);
                for (size_t j = 0; j < r.nerrors && len + 1 < errlen; j++) {
                    int w = snprintf(err + len, errlen - len, "%s%s", len ? "; " : "",
                                     r.errors[j]);
                    len = w < 0 ? len : (len + (size_t)w < errlen ? len + (size_t)w : errlen - 1);
                }
                bad = 1;
            }
            pt_cfg_dispose(&r);
            break;
        }
        k++;
    }
    k = 0;
    int changed = 0, warm_ended = 0;
    double now = wall_now();
    for (rds_name_t *e = rm->names; e != NULL; e = e->next) {
        if (e->file != f)
            continue;
        if (bad) {
            count(e, offsetof(struct rds_stats, rejected));
            pt_route_config_unref(next[k++]);
            /* A rejected first update ends the warming (Envoy lets the listeners go on
             * without routes: 404 NR). */
            warm_ended |= e->warm_until_ms != 0;
            e->warm_until_ms = 0;
            continue;
        }
        count(e, offsetof(struct rds_stats, success));
        if (next[k] != NULL) {
            e->warm_until_ms = 0;
            pt_route_config_unref(e->active);
            e->active = next[k];
            json_decref(e->source);
            e->source = json_incref(src[k]->json);
            free(e->version_info);
            e->version_info = strdup(resp->version_info);
            e->last_updated = now;
            count(e, offsetof(struct rds_stats, reload));
            changed = 1;
            pt_info("rds: route configuration %s updated (version %s)", e->name,
                    resp->version_info);
        }
        k++;
    }
    free(next);
    free(src);
    if (bad) {
        if (warm_ended && !rm->loading && rm->publish != NULL)
            rm->publish(rm->data); /* the listeners that waited go on */
        return -1;
    }
    if (changed && rebuild_routes(rm) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (changed && !rm->loading && rm->publish != NULL)
        rm->publish(rm->data);
    return 0;
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* The ADS subscription asks for every route configuration named on it. A name's routes
 * are absent (404 NR) until the control plane sends them. */
static int ads_ask_for_names(pt_route_manager_t *rm, rds_file_t *f, char *err, size_t errlen)
{
    size_t n = 0;
    for (rds_name_t *e = rm->names; e != NULL; e = e->next)
        n += e->file == f;
    const char **names = malloc((n ? n : 1) * sizeof(*names));
    if (names == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    n = 0;
    for (rds_name_t *e = rm->names; e != NULL; e = e->next)
        if (e->file == f)
            names[n++] = e->name;
    int rc = pt_subscription_set_names(f->sub, names, n);
    free(names);
    if (rc != 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

int pt_route_manager_want(pt_route_manager_t *rm, const pt_config_source_t *src,
                          const char *name, const char *stat_prefix, char *err, size_t errlen)
{
    const char *key = src->key; /* the source, as rds_file_t names it */
    rds_name_t *e = rm->names;
    while (e != NULL && strcmp(e->name, name) != 0)
        e = e->next;
    if (e != NULL && !(same_str(e->file->path, key) &&
                       same_str(e->file->watched_directory, src->watched_directory))) {
        snprintf(err, errlen, "route configuration \"%s\" is already read from %s", name,
                 e->file->path);
        return -1;
    }
    int fresh = e == NULL;
    if (fresh) {
        e = calloc(1, sizeof(*e));
        if (e == NULL || (e->name = strdup(name)) == NULL) {
            free(e);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        e->slot = pt_rds_slot(name);
    }
    /* The stats of this name under this manager's stat_prefix: one set however many
     * connection managers (every LDS update rebuilds them) want it, so an update counts
     * once, as Envoy's one subscription per name does. */
    struct rds_stats mine;
    char n[512];
#define S(f, what)                                                                          \
    snprintf(n, sizeof(n), "rds.%s." what, name);                                          \
    mine.f = pt_stats_counter("http", "envoy_http_conn_manager_prefix", stat_prefix, n)
    S(attempt, "update_attempt");
    S(success, "update_success");
    S(rejected, "update_rejected");
    S(reload, "config_reload");
#undef S
    int known = 0;
    for (size_t i = 0; i < e->nstats && !known; i++)
        known = e->stats[i].success == mine.success;
    if (!known) {
        struct rds_stats *st = realloc(e->stats, (e->nstats + 1) * sizeof(*st));
        if (st == NULL) {
            if (fresh) {
                free(e->name);
                free(e);
            }
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        e->stats = st;
        st[e->nstats++] = mine;
    }
    if (!fresh)
        return 0;
    rds_file_t *f = rm->files;
    while (f != NULL && !(same_str(f->path, key) &&
                          same_str(f->watched_directory, src->watched_directory)))
        f = f->next;
    e->file = f;
    e->next = rm->names;
    rm->names = e;
    if (src->ads || src->api != NULL)
        e->warm_until_ms = src->initial_fetch_timeout_ms == 0
                               ? UINT64_MAX
                               : pt_now_ms() + src->initial_fetch_timeout_ms;
    if (f != NULL && pt_subscription_is_remote(f->sub))
        return ads_ask_for_names(rm, f, err, errlen); /* it comes when the control plane sends it */
    if (f != NULL) {
        /* The file was read already: read it again now (a change for this name only). */
        rm->loading++;
        int rc = pt_subscription_load(f->sub, err, errlen);
        rm->loading--;
        return rc == PT_UPDATE_ACCEPTED ? rebuild_routes(rm) : -1;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL || (f->path = strdup(key)) == NULL ||
        (src->watched_directory != NULL &&
         (f->watched_directory = strdup(src->watched_directory)) == NULL)) {
        if (f != NULL) {
            free(f->path);
            free(f);
        }
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    f->rm = rm;
    pt_file_subscription_config_t sc = {
        .type_url = ROUTE_TYPE_URL,
        .stat_scope = "http",
        .stat_prefix = "rds_file.",
        .what = "route configurations",
    };
    f->sub = pt_subscription_new(src, &sc, on_rds_update, f, err, errlen);
    if (f->sub == NULL) {
        free(f->path);
        free(f->watched_directory);
        free(f);
        return -1;
    }
    f->next = rm->files;
    rm->files = f;
    e->file = f;
    if (pt_subscription_is_remote(f->sub))
        return ads_ask_for_names(rm, f, err, errlen);
    rm->loading++;
    int rc = pt_subscription_load(f->sub, err, errlen);
    rm->loading--;
    if (rc != PT_UPDATE_ACCEPTED)
        return -1;
    if (rm->loop != NULL && pt_subscription_watch(f->sub, rm->loop, err, errlen) != 0)
        return -1;
    return rebuild_routes(rm);
}

void pt_route_manager_set_loop(pt_route_manager_t *rm, struct ev_loop *loop)
{
    rm->loop = loop;
    char err[512];
    for (rds_file_t *f = rm->files; f != NULL; f = f->next)
        if (pt_subscription_watch(f->sub, loop, err, sizeof(err)) != 0)
            pt_warn("rds: %s: %s", f->path, err);
}

int pt_route_manager_warming(const pt_route_manager_t *rm, const char *name, uint64_t now_ms,
                             uint64_t *until)
{
    if (rm == NULL)
        return 0;
    for (const rds_name_t *e = rm->names; e != NULL; e = e->next) {
        if (strcmp(e->name, name) != 0)
            continue;
        if (e->active != NULL || now_ms >= e->warm_until_ms)
            return 0;
        if (until != NULL && e->warm_until_ms < *until)
            *until = e->warm_until_ms;
        return 1;
    }
    return 0;
}

pt_route_config_t *const *pt_route_manager_routes(pt_route_manager_t *rm, unsigned *n)
{
    *n = rm->nroutes;
    return rm->routes;
}

void pt_route_manager_foreach(pt_route_manager_t *rm,
                              void (*fn)(void *data, const pt_route_entry_info_t *e), void *data)
{
    for (rds_name_t *e = rm->names; e != NULL; e = e->next) {
        if (e->active == NULL)
            continue;
        pt_route_entry_info_t info = {.name = e->name,
                                      .version_info = e->version_info ? e->version_info : "",
                                      .last_updated = e->last_updated,
                                      .source = e->source};
        fn(data, &info);
    }
}
