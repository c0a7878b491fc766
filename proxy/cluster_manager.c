#include "proxy/cluster_manager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "proxy/cluster.h"
#include "proxy/log.h"
#include "tls/context.h"

#define CLUSTER_TYPE_URL "type.googleapis.com/envoy.config.cluster.v3.Cluster"

typedef struct cm_entry {
    char *name;
    int dynamic;
    pt_cluster_t *active;   /* a reference */
    json_t *source;         /* a reference (dynamic clusters) */
    char *version_info;
    double last_updated;
} cm_entry_t;

struct pt_cluster_manager {
    pt_cluster_manager_publish_fn publish;
    void *publish_data;
    cm_entry_t **entries;   /* static first, then dynamic, each in name order */
    unsigned n, cap;
    pt_view_t *view;        /* the last one published (a reference) */
    char *cds_version;
    char *rejected_version, *rejected_errors;
    pt_update_stats_t cds;
    pt_stat_t cluster_added, cluster_modified, cluster_removed, active_clusters;
};

static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static void entry_free(cm_entry_t *e)
{
    if (e == NULL)
        return;
    pt_cluster_unref(e->active);
    json_decref(e->source);
    free(e->version_info);
    free(e->name);
    free(e);
}

pt_cluster_manager_t *pt_cluster_manager_new(pt_cluster_manager_publish_fn publish, void *data)
{
    pt_cluster_manager_t *cm = calloc(1, sizeof(*cm));
    if (cm == NULL)
        return NULL;
    cm->publish = publish;
    cm->publish_data = data;
#define C(f, n) cm->cds.f = pt_stats_counter("cluster_manager", NULL, NULL, "cds." n)
    C(update_attempt, "update_attempt");
    C(update_success, "update_success");
    C(update_rejected, "update_rejected");
    C(update_failure, "update_failure");
    C(init_fetch_timeout, "init_fetch_timeout");
#undef C
    cm->cds.update_time = pt_stats_gauge("cluster_manager", NULL, NULL, "cds.update_time");
    cm->cds.version = pt_stats_gauge("cluster_manager", NULL, NULL, "cds.version");
    cm->cluster_added = pt_stats_counter("cluster_manager", NULL, NULL, "cluster_added");
    cm->cluster_modified = pt_stats_counter("cluster_manager", NULL, NULL, "cluster_modified");
    cm->cluster_removed = pt_stats_counter("cluster_manager", NULL, NULL, "cluster_removed");
    cm->active_clusters = pt_stats_gauge("cluster_manager", NULL, NULL, "active_clusters");
    return cm;
}

void pt_cluster_manager_free(pt_cluster_manager_t *cm)
{
    if (cm == NULL)
        return;
    for (unsigned i = 0; i < cm->n; i++)
        entry_free(cm->entries[i]);
    free(cm->entries);
    pt_view_unref(cm->view);
    free(cm->cds_version);
    free(cm->rejected_version);
    free(cm->rejected_errors);
    free(cm);
}

static cm_entry_t *find(pt_cluster_manager_t *cm, const char *name)
{
    for (unsigned i = 0; i < cm->n; i++)
        if (strcmp(cm->entries[i]->name, name) == 0)
            return cm->entries[i];
    return NULL;
}

static int by_kind_then_name(const void *a, const void *b)
{
    const cm_entry_t *x = *(cm_entry_t *const *)a, *y = *(cm_entry_t *const *)b;
    if (x->dynamic != y->dynamic)
        return x->dynamic - y->dynamic;
    return strcmp(x->name, y->name);
}

/* Builds and hands out a view of the active clusters. */
static int publish(pt_cluster_manager_t *cm)
{
    qsort(cm->entries, cm->n, sizeof(*cm->entries), by_kind_then_name);
    pt_cluster_t **list = malloc((cm->n ? cm->n : 1) * sizeof(*list));
    if (list == NULL)
        return -1;
    for (unsigned i = 0; i < cm->n; i++)
        list[i] = cm->entries[i]->active;
    pt_view_t *v = pt_view_new(list, cm->n);
    free(list);
    if (v == NULL)
        return -1;
    pt_view_unref(cm->view);
    cm->view = v;
    pt_stat_set(cm->active_clusters, cm->n);
    if (cm->publish != NULL)
        cm->publish(cm->publish_data, pt_view_ref(v));
    return 0;
}

static int add_entry(pt_cluster_manager_t *cm, cm_entry_t *e)
{
    if (cm->n == cm->cap) {
        unsigned cap = cm->cap ? cm->cap * 2 : 16;
        cm_entry_t **n = realloc(cm->entries, cap * sizeof(*n));
        if (n == NULL)
            return -1;
        cm->entries = n;
        cm->cap = cap;
    }
    cm->entries[cm->n++] = e;
    return 0;
}

int pt_cluster_manager_set_static(pt_cluster_manager_t *cm, pt_cluster_t *const *clusters,
                                  unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        cm_entry_t *e = calloc(1, sizeof(*e));
        if (e == NULL || (e->name = strdup(clusters[i]->name)) == NULL ||
            (e->version_info = strdup("")) == NULL || add_entry(cm, e) != 0) {
            entry_free(e);
            return -1;
        }
        e->active = pt_cluster_ref(clusters[i]);
        e->last_updated = wall_now();
    }
    return publish(cm);
}

/* One resource of a CDS update as parsed (a new version), or kept (unchanged). */
typedef struct staged {
    const char *name;
    json_t *source;
    pt_cluster_t *next;   /* a new version, or NULL when the active one stays */
    cm_entry_t *entry;    /* the current entry by that name, or NULL */
} staged_t;

static void record_rejection(pt_cluster_manager_t *cm, const char *version, const pt_cfg_t *r)
{
    free(cm->rejected_version);
    free(cm->rejected_errors);
    cm->rejected_version = dup_or_empty(version);
    cm->rejected_errors = pt_cfg_errors_joined(r);
}

/* Envoy's version gauge: a hash of the version string. */
static int64_t version_hash(const char *v)
{
    uint64_t h = 1469598103934665603ull;
    for (; v != NULL && *v; v++) {
        h ^= (unsigned char)*v;
        h *= 1099511628211ull;
    }
    return (int64_t)(h & 0x7fffffffffffffffull);
}

static int apply_cds(pt_cluster_manager_t *cm, const char *version_info, json_t *resources,
                     pt_cfg_t *r);

int pt_cluster_manager_apply_cds(pt_cluster_manager_t *cm, json_t *response, char **errors)
{
    pt_cfg_t r;
    pt_cfg_init(&r, response);
    static const char *const unsupported[] = {"control_plane", NULL};
    pt_cfg_unsupported(&r, unsupported);
    const char *version = NULL, *type_url = NULL, *nonce;
    int canary;
    pt_cfg_string(&r, "version_info", &version, "");
    pt_cfg_string(&r, "nonce", &nonce, NULL);
    pt_cfg_bool(&r, "canary", &canary, 0);
    if (pt_cfg_string(&r, "type_url", &type_url, NULL) > 0 &&
        strcmp(type_url, CLUSTER_TYPE_URL) != 0)
        pt_cfg_error(&r, "type_url", "\"%s\" is not %s", type_url, CLUSTER_TYPE_URL);
    json_t *resources = json_object_get(response, "resources");
    int rc = apply_cds(cm, version, resources, &r);
    if (errors != NULL)
        *errors = rc != 0 ? pt_cfg_errors_joined(&r) : NULL;
    pt_cfg_dispose(&r);
    return rc;
}

static int apply_cds(pt_cluster_manager_t *cm, const char *version_info, json_t *resources,
                     pt_cfg_t *r)
{
    pt_stat_inc(cm->cds.update_attempt);
    size_t n = json_is_array(resources) ? json_array_size(resources) : 0;
    staged_t *st = calloc(n ? n : 1, sizeof(*st));
    if (st == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        pt_stat_inc(cm->cds.update_rejected);
        return -1;
    }
    /* 1. Parse what changed; keep what did not. */
    size_t nst = 0;
    int present;
    size_t count = pt_cfg_array(r, "resources", &present);
    for (size_t i = 0; i < count; i++) {
        json_t *res = json_array_get(resources, i);
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        const char *type = NULL;
        pt_cfg_string(r, "@type", &type, NULL);
        if (type != NULL && strcmp(type, CLUSTER_TYPE_URL) != 0) {
            pt_cfg_error(r, "@type", "\"%s\" is not %s", type, CLUSTER_TYPE_URL);
            pt_cfg_skip_rest(r);
            pt_cfg_leave(r);
            continue;
        }
        json_t *jn = json_object_get(res, "name");
        const char *name = json_is_string(jn) ? json_string_value(jn) : NULL;
        cm_entry_t *e = name != NULL ? find(cm, name) : NULL;
        int dup = 0;
        for (size_t k = 0; name != NULL && k < nst; k++)
            dup |= strcmp(st[k].name, name) == 0;
        if (dup) {
            pt_cfg_error(r, "name", "cluster \"%s\" is given twice", name);
            pt_cfg_skip_rest(r);
        } else if (e != NULL && !e->dynamic) {
            pt_cfg_error(r, "name", "\"%s\" is a static cluster of the bootstrap: CDS cannot "
                                    "change it", name);
            pt_cfg_skip_rest(r);
        } else if (e != NULL && e->source != NULL && json_equal(e->source, res)) {
            pt_cfg_skip_rest(r); /* unchanged: the active version stays */
            st[nst++] = (staged_t){.name = e->name, .source = res, .entry = e};
        } else {
            pt_cluster_t *c = pt_cluster_parse(r);
            if (c != NULL && c->name[0])
                st[nst++] = (staged_t){.name = c->name, .source = res, .next = c, .entry = e};
            else
                pt_cluster_unref(c);
        }
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    pt_cfg_finish(r); /* fields of the response nobody read */
    /* 2. Materials: TLS contexts of the new versions (files read, keys checked). */
    for (size_t k = 0; pt_cfg_ok(r) && k < nst; k++) {
        pt_cluster_t *c = st[k].next;
        if (c == NULL || c->tls == NULL)
            continue;
        char where[160];
        snprintf(where, sizeof(where), "resources[%s].transport_socket", c->name);
        c->tls_ctx = pt_tls_context_build(r, &c->arena, c->tls, "cluster", c->name, where);
    }
    /* 3. Prepared (state, hosts, stats) only once everything validated. */
    for (size_t k = 0; pt_cfg_ok(r) && k < nst; k++)
        if (st[k].next != NULL && pt_cluster_prepare(st[k].next) != 0)
            pt_cfg_error(r, NULL, "out of memory");
    if (!pt_cfg_ok(r)) {
        for (size_t k = 0; k < nst; k++)
            pt_cluster_unref(st[k].next);
        free(st);
        record_rejection(cm, version_info, r);
        pt_stat_inc(cm->cds.update_rejected);
        char *all = pt_cfg_errors_joined(r);
        for (char *p = all; p != NULL && *p; p++)
            if (*p == '\n')
                *p = p[1] ? ';' : '\0';
        pt_warn("cds: update %s rejected, the clusters in force stay: %s",
                version_info ? version_info : "", all ? all : "");
        free(all);
        return -1;
    }
    /* 4. Commit: nothing can fail from here on but memory for the bookkeeping. */
    double now = wall_now();
    for (unsigned i = 0; i < cm->n;) {
        cm_entry_t *e = cm->entries[i];
        int kept = !e->dynamic;
        for (size_t k = 0; !kept && k < nst; k++)
            kept = st[k].entry == e;
        if (kept) {
            i++;
            continue;
        }
        pt_stat_inc(cm->cluster_removed);
        pt_info("cds: cluster %s removed", e->name);
        cm->entries[i] = cm->entries[--cm->n];
        entry_free(e);
    }
    for (size_t k = 0; k < nst; k++) {
        cm_entry_t *e = st[k].entry;
        if (st[k].next == NULL)
            continue; /* unchanged */
        if (e == NULL) {
            e = calloc(1, sizeof(*e));
            if (e == NULL || (e->name = strdup(st[k].next->name)) == NULL || add_entry(cm, e) != 0) {
                entry_free(e);
                pt_cluster_unref(st[k].next);
                pt_error("cds: out of memory adding cluster %s", st[k].name);
                continue;
            }
            e->dynamic = 1;
            pt_stat_inc(cm->cluster_added);
            pt_info("cds: cluster %s added", e->name);
        } else {
            pt_stat_inc(cm->cluster_modified);
            pt_info("cds: cluster %s updated", e->name);
        }
        pt_cluster_unref(e->active);
        e->active = st[k].next;
        json_decref(e->source);
        e->source = json_incref(st[k].source);
        free(e->version_info);
        e->version_info = dup_or_empty(version_info);
        e->last_updated = now;
    }
    free(st);
    free(cm->cds_version);
    cm->cds_version = dup_or_empty(version_info);
    pt_stat_inc(cm->cds.update_success);
    pt_stat_set(cm->cds.update_time, (int64_t)(now * 1000.0));
    pt_stat_set(cm->cds.version, version_hash(version_info));
    if (publish(cm) != 0) {
        pt_error("cds: out of memory publishing the clusters");
        return -1;
    }
    return 0;
}

pt_view_t *pt_cluster_manager_view(pt_cluster_manager_t *cm)
{
    return pt_view_ref(cm->view);
}

void pt_cluster_manager_foreach(pt_cluster_manager_t *cm,
                                void (*fn)(void *data, const pt_cluster_entry_info_t *e),
                                void *data)
{
    for (unsigned i = 0; i < cm->n; i++) {
        cm_entry_t *e = cm->entries[i];
        pt_cluster_entry_info_t info = {
            .name = e->name,
            .dynamic = e->dynamic,
            .version_info = e->version_info,
            .last_updated = e->last_updated,
            .source = e->source,
            .active = e->active,
        };
        fn(data, &info);
    }
}

const char *pt_cluster_manager_last_rejected(pt_cluster_manager_t *cm, const char **version)
{
    if (version != NULL)
        *version = cm->rejected_version;
    return cm->rejected_errors;
}

const char *pt_cluster_manager_cds_version(pt_cluster_manager_t *cm)
{
    return cm->cds_version;
}
