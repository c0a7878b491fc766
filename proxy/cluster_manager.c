#include "proxy/cluster_manager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "discovery/discovery_response.h"
#include "discovery/dns.h"
#include "discovery/file_subscription.h"
#include "discovery/subscription.h"
#include "proxy/config_source.h"
#include "proxy/hash.h"
#include "proxy/cluster.h"
#include "proxy/transport_match.h"
#include "proxy/log.h"
#include "proxy/time.h"
#include "tls/context.h"

typedef struct eds_sub eds_sub_t;

static void collect_errors(const pt_cfg_t *r, char *err, size_t errlen);
static void eds_sub_free(eds_sub_t *es);

/* A cluster's endpoint_stale_after (below). */
typedef struct cm_stale {
    ev_timer timer;
    int on;
    uint64_t ms;
    pt_stat_t assignment_stale, assignment_timeout_received;
} cm_stale_t;

/* The version_info of the CDS update that last changed an entry: one string shared by the
 * entries of that update (thousands of clusters added by one update all say "1"). */
typedef struct cm_version {
    unsigned refs;
    char s[];
} cm_version_t;

static cm_version_t *version_new(const char *s)
{
    if (s == NULL)
        s = "";
    size_t len = strlen(s);
    cm_version_t *v = malloc(sizeof(*v) + len + 1);
    if (v != NULL) {
        v->refs = 1;
        memcpy(v->s, s, len + 1);
    }
    return v;
}

static void version_put(cm_version_t *v)
{
    if (v != NULL && --v->refs == 0)
        free(v);
}

typedef struct cm_entry {
    char *name; /* in the entry's own allocation */
    int dynamic;
    /* cluster.<name>.update_*: counters computed from the counts here. They count on the
     * main thread only, and a main-thread slot of every cluster would commit the main
     * thread's whole slot array over the clusters' ids (~470 bytes a cluster). */
    pt_stat_t eds_attempt, eds_success, eds_rejected;
    eds_sub_t *eds;         /* type EDS: the subscription its endpoints come from */
    uint64_t n_attempt, n_success, n_rejected;
    /* EDS: a digest of the assignment in force (of its canonical JSON), so that an update
     * repeating it is skipped without keeping it. */
    pt_digest_t cla_digest;
    unsigned char has_digest;
    /* And of its text, when it came from a file read resource by resource: the same bytes
     * again are known without being parsed. Where they were (the element's index) and how
     * long, for guessing where they are in the next update. */
    unsigned char has_text_digest;
    unsigned char dns_ready; /* (DNS types, below) */
    uint32_t cla_text_len, cla_text_index;
    unsigned seen;          /* the CDS update (cm->gen) that listed it */
    pt_digest_t cla_text_digest;
    uint64_t warm_until_ms; /* EDS, no assignment yet: warming until then (monotonic ms;
                             * UINT64_MAX: no timeout), 0 once it has one */
    /* DNS types: the resolving of its names (started once the manager has its loop), and
     * (dns_ready, above) whether its first lookup ended; until then it is warming. */
    pt_dns_cluster_t *dns;
    /* EDS with ClusterLoadAssignment.policy.endpoint_stale_after: the timer that removes the
     * endpoints when no assignment comes in time (armed when the loop is set, if it came
     * before: ms), and cluster.<name>.assignment_stale / assignment_timeout_received. */
    struct cm_stale *stale; /* made with the first such assignment: few clusters have one */
    pt_cluster_manager_t *cm;
    struct cm_entry *next_in_bucket;
    pt_cluster_t *active;   /* a reference */
    cm_version_t *version; /* a reference */
    double last_updated;
} cm_entry_t;

/* One file of ClusterLoadAssignments, shared by every EDS cluster that names it; or the
 * ADS stream's EDS, shared by every EDS cluster whose eds_config says `ads` (path "ads"); or
 * a control plane's EDS stream, shared by the clusters whose eds_config names it the same
 * way (path: the source's key, pt_config_source_t). */
struct eds_sub {
    pt_cluster_manager_t *cm;
    char *path, *watched_directory;
    pt_subscription_t *sub;
    int joining;            /* eds_rebind: clusters join it (1), it is new (2) */
    int rereading;          /* a read for clusters that joined, not a change of the file */
    /* The clusters it serves (set by eds_rebind): a change of one file among thousands
     * (Envoy's file-per-cluster layout) is work for its own clusters only. */
    cm_entry_t **members;
    unsigned nmembers, cap_members;
    uint64_t hash;          /* of path and watched_directory */
    eds_sub_t *next;
    eds_sub_t *next_in_bucket;
};

struct pt_cluster_manager {
    pt_cluster_manager_publish_fn publish;
    struct ev_loop *loop;   /* subscriptions are watched once set */
    eds_sub_t *eds_subs;
    eds_sub_t **sub_buckets; /* eds_subs by source (eds_sub_t.hash) */
    unsigned nsub_buckets, nsubs;
    int in_eds_load;        /* an initial EDS read is being applied (publish once, after) */
    void *publish_data;
    cm_entry_t **entries;   /* static first, then dynamic, each in name order */
    unsigned n, cap;
    int unsorted;           /* entries were added or removed since they were sorted */
    cm_entry_t **buckets;   /* by name: an update's work follows what it names */
    unsigned nbuckets;
    unsigned gen;           /* counts CDS updates, for cm_entry_t.seen */
    pt_view_t *view;        /* the last one published (a reference) */
    char *cds_version;
    char *rejected_version, *rejected_errors;
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

static int64_t read_attempt(const void *e)
{
    return (int64_t)((const cm_entry_t *)e)->n_attempt;
}
static int64_t read_success(const void *e)
{
    return (int64_t)((const cm_entry_t *)e)->n_success;
}
static int64_t read_rejected(const void *e)
{
    return (int64_t)((const cm_entry_t *)e)->n_rejected;
}

/* A count computed from *n from now on; what the stat's slots held (an entry of the same
 * name before, whose stats outlived it) moves into *n, so the counter goes on from there. */
static void own_count(pt_stat_t id, uint64_t *n, int64_t (*fn)(const void *), cm_entry_t *e)
{
    uint64_t before = pt_stats_value(id);
    if (before != 0)
        pt_stat_add(id, (uint64_t)0 - before);
    *n = before;
    pt_stats_gauge_fn(id, fn, e);
}

/* The counts go back into the stats' slots (main thread), where they go on counting when an
 * entry of the same name comes back before the stats are released. */
static void disown_count(pt_stat_t id, uint64_t n, const cm_entry_t *e)
{
    pt_stats_gauge_fn_clear(id, e);
    pt_stat_add(id, n);
}

/* A zeroed entry with its name in the same allocation; NULL out of memory. */
static cm_entry_t *entry_new(const char *name)
{
    size_t len = strlen(name);
    cm_entry_t *e = calloc(1, sizeof(*e) + len + 1);
    if (e != NULL)
        e->name = memcpy((char *)(e + 1), name, len + 1);
    return e;
}

/* e no longer counts its EDS updates (it goes, or its cluster is of another type now,
 * whose own update_* counters count in slots). */
static void entry_disown_counts(cm_entry_t *e)
{
    if (e->eds_attempt == 0)
        return;
    disown_count(e->eds_attempt, e->n_attempt, e);
    disown_count(e->eds_success, e->n_success, e);
    disown_count(e->eds_rejected, e->n_rejected, e);
    e->eds_attempt = e->eds_success = e->eds_rejected = 0;
}

static void entry_free(cm_entry_t *e)
{
    if (e == NULL)
        return;
    entry_disown_counts(e);
    if (e->stale != NULL && e->stale->on)
        ev_timer_stop(e->cm->loop, &e->stale->timer);
    free(e->stale);
    pt_dns_cluster_stop(e->dns);
    pt_cluster_unref(e->active);
    version_put(e->version);
    free(e);
}

pt_cluster_manager_t *pt_cluster_manager_new(pt_cluster_manager_publish_fn publish, void *data)
{
    pt_cluster_manager_t *cm = calloc(1, sizeof(*cm));
    if (cm == NULL)
        return NULL;
    cm->publish = publish;
    cm->publish_data = data;
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
    free(cm->buckets);
    while (cm->eds_subs != NULL) {
        eds_sub_t *es = cm->eds_subs;
        cm->eds_subs = es->next;
        eds_sub_free(es);
    }
    free(cm->sub_buckets);
    pt_view_unref(cm->view);
    free(cm->cds_version);
    free(cm->rejected_version);
    free(cm->rejected_errors);
    free(cm);
}

static cm_entry_t *find(pt_cluster_manager_t *cm, const char *name)
{
    if (cm->nbuckets == 0)
        return NULL;
    cm_entry_t *e = cm->buckets[pt_hash_name(name) % cm->nbuckets];
    while (e != NULL && strcmp(e->name, name) != 0)
        e = e->next_in_bucket;
    return e;
}

static void unindex(pt_cluster_manager_t *cm, cm_entry_t *e)
{
    cm_entry_t **pp = &cm->buckets[pt_hash_name(e->name) % cm->nbuckets];
    while (*pp != e)
        pp = &(*pp)->next_in_bucket;
    *pp = e->next_in_bucket;
}

/* Keeps the name index at least as large as the entries. */
static int reindex(pt_cluster_manager_t *cm, unsigned want)
{
    if (want <= cm->nbuckets)
        return 0;
    unsigned nb = cm->nbuckets ? cm->nbuckets : 64;
    while (nb < want)
        nb *= 2;
    cm_entry_t **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return -1;
    for (unsigned i = 0; i < cm->n; i++) {
        cm_entry_t *e = cm->entries[i];
        unsigned k = (unsigned)(pt_hash_name(e->name) % nb);
        e->next_in_bucket = b[k];
        b[k] = e;
    }
    free(cm->buckets);
    cm->buckets = b;
    cm->nbuckets = nb;
    return 0;
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
    /* Sorted only when the set changed: an endpoint update sorts nothing. */
    if (cm->unsorted && cm->n > 1)
        qsort(cm->entries, cm->n, sizeof(*cm->entries), by_kind_then_name);
    cm->unsorted = 0;
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
    if (reindex(cm, cm->n + 1) != 0)
        return -1;
    cm->entries[cm->n++] = e;
    cm->unsorted = 1;
    unsigned k = (unsigned)(pt_hash_name(e->name) % cm->nbuckets);
    e->next_in_bucket = cm->buckets[k];
    cm->buckets[k] = e;
    return 0;
}


/* ---- DNS ------------------------------------------------------------------------------ */

/* A DNS cluster's names resolve to other addresses: a new version of it with those hosts,
 * through the same path as an EDS assignment (hosts that stay keep their state). */
static void dns_on_update(void *data, const pt_endpoint_t *eps, unsigned n)
{
    cm_entry_t *e = data;
    json_t *none = json_object(); /* the reader only collects errors */
    pt_cfg_t r;
    pt_cfg_init(&r, none);
    pt_cluster_t *next = none != NULL ? pt_cluster_with_endpoints(e->active, eps, n, &r) : NULL;
    pt_cfg_dispose(&r);
    json_decref(none);
    if (next == NULL) {
        pt_error("dns: cluster %s: out of memory making its new hosts", e->name);
        return;
    }
    pt_info("dns: cluster %s: %u host%s", e->name, next->nhosts, next->nhosts == 1 ? "" : "s");
    pt_cluster_unref(e->active);
    e->active = next;
    e->last_updated = wall_now();
    if (publish(e->cm) != 0)
        pt_error("dns: cluster %s: out of memory publishing its hosts", e->name);
}

/* Its first lookup ended: no longer warming. Published so that the server sees it. */
static void dns_on_init(void *data)
{
    cm_entry_t *e = data;
    if (e->dns_ready)
        return;
    e->dns_ready = 1;
    if (publish(e->cm) != 0)
        pt_error("dns: cluster %s: out of memory publishing it", e->name);
}

/* After entries changed, once the loop is set: every DNS cluster resolves (those whose
 * configuration changed were stopped by the update and start again with the new one). */
static void dns_rebind(pt_cluster_manager_t *cm)
{
    if (cm->loop == NULL)
        return;
    for (unsigned i = 0; i < cm->n; i++) {
        cm_entry_t *e = cm->entries[i];
        if (!pt_cluster_type_is_dns(e->active->type) || e->active->dns == NULL) {
            pt_dns_cluster_stop(e->dns);
            e->dns = NULL;
            continue;
        }
        if (e->dns != NULL)
            continue;
        e->cm = cm;
        char err[256];
        e->dns = pt_dns_cluster_start(cm->loop, e->active, dns_on_update, dns_on_init, e, err,
                                      sizeof(err));
        if (e->dns == NULL) {
            /* Not waited for: it has no hosts (503) until a change of the cluster. */
            pt_error("dns: cluster %s: %s", e->name, err);
            e->dns_ready = 1;
        } else if (pt_dns_cluster_initialized(e->dns)) {
            e->dns_ready = 1;
        }
    }
}

/* ---- EDS ------------------------------------------------------------------------------ */

#define CLA_TYPE_URL "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

/* The clusters of a subscription by the name of the assignment they take (their
 * eds_service_name; several clusters may share one), for lookups in O(1). */
typedef struct member_index {
    uint32_t *slots; /* member position + 1; 0 empty */
    size_t cap;
} member_index_t;

static int member_index_build(member_index_t *ix, const eds_sub_t *es)
{
    ix->cap = 16;
    while (ix->cap < (size_t)es->nmembers * 2)
        ix->cap *= 2;
    ix->slots = calloc(ix->cap, sizeof(*ix->slots));
    if (ix->slots == NULL)
        return -1;
    for (unsigned k = 0; k < es->nmembers; k++) {
        size_t h = pt_hash_name(es->members[k]->active->eds_service_name) & (ix->cap - 1);
        while (ix->slots[h] != 0)
            h = (h + 1) & (ix->cap - 1);
        ix->slots[h] = k + 1;
    }
    return 0;
}

/* Applies a response of subscription es to the clusters it serves: those it names with an
 * assignment other than the one in force get a new version; all of them or, when one is
 * invalid, none. The resources are taken one at a time (a JSON file is read resource by
 * resource: discovery/discovery_response.h), each used by its clusters and let go.
 * `version`: that of a change of the file (cluster.<name>.update_* count it), NULL for a
 * read for clusters that joined. */
/* What eds_apply knows while it reads an update. */
typedef struct eds_read {
    eds_sub_t *es;
    size_t *seen_at;            /* per member: 1 + the index of its resource, 0: none yet */
    uint32_t *by_text;          /* members by the digest of their assignment's text */
    size_t text_cap;
    /* The last read's elements known now: the length of each (0: none known), by index.
     * The next element is guessed to be the one after the last recognized. */
    uint32_t *len_at;
    size_t nlen_at, next_old;
} eds_read_t;

/* pt_discovery_known_t.known: an element whose bytes are a member's assignment in force is that
 * assignment again, for every member that has it (unless it came before: a duplicate, which
 * the parse then reports). */
static int eds_known(void *data, size_t index, const char *text, size_t len)
{
    eds_read_t *rd = data;
    if (rd->text_cap == 0)
        return 0;
    pt_digest_t d = pt_bytes_digest(text, len);
    int known = 0;
    for (size_t h = d.a & (rd->text_cap - 1); rd->by_text[h] != 0;
         h = (h + 1) & (rd->text_cap - 1)) {
        unsigned i = rd->by_text[h] - 1;
        cm_entry_t *e = rd->es->members[i];
        if (!pt_digest_equal(e->cla_text_digest, d))
            continue;
        if (rd->seen_at[i] != 0)
            return 0;
        rd->seen_at[i] = index + 1;
        rd->next_old = (size_t)e->cla_text_index + 1;
        known = 1;
    }
    return known;
}

/* pt_discovery_known_t.expected_len: the last read's element after the one recognized last
 * (an update that changes, adds or removes a few assignments keeps the rest in order). */
static size_t eds_expected_len(void *data, size_t index)
{
    eds_read_t *rd = data;
    (void)index;
    return rd->next_old < rd->nlen_at ? rd->len_at[rd->next_old] : 0;
}

/* endpoint_stale_after ran out without a new assignment: as Envoy, an empty assignment
 * takes its place (hosts that active health checks find healthy stay pending removal). */
static void on_stale(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    cm_entry_t *e = w->data;
    e->stale->on = 0;
    if (e->active->type != PT_CLUSTER_EDS)
        return;
    json_t *cla = json_pack("{s:s}", "cluster_name", e->active->eds_service_name);
    pt_cfg_t r;
    pt_cfg_init(&r, cla);
    pt_cluster_t *next = cla != NULL ? pt_cluster_with_assignment(e->active, &r) : NULL;
    pt_cfg_finish(&r);
    if (next == NULL || !pt_cfg_ok(&r)) {
        pt_error("eds: cluster %s: out of memory removing its stale endpoints", e->name);
        pt_cluster_unref(next);
    } else {
        pt_warn("eds: cluster %s: no assignment within endpoint_stale_after (%llums): its "
                "endpoints are removed", e->name,
                (unsigned long long)e->active->cla_policy.endpoint_stale_after_ms);
        pt_stat_inc(e->stale->assignment_stale);
        pt_cluster_unref(e->active);
        e->active = next;
        e->has_digest = 0; /* the same assignment again is news now */
        e->has_text_digest = 0;
        e->last_updated = wall_now();
        if (publish(e->cm) != 0)
            pt_error("eds: cluster %s: out of memory publishing it", e->name);
    }
    pt_cfg_dispose(&r);
    json_decref(cla);
}

/* An assignment came for e (new or the same again): its endpoint_stale_after starts over. */
static void eds_arm_stale(pt_cluster_manager_t *cm, cm_entry_t *e)
{
    uint64_t ms = e->active->cla_policy.endpoint_stale_after_ms;
    e->cm = cm;
    cm_stale_t *st = e->stale;
    if (st != NULL) {
        if (st->on) {
            ev_timer_stop(cm->loop, &st->timer);
            st->on = 0;
        }
        st->ms = 0;
    }
    if (ms == 0)
        return;
    if (st == NULL) {
        if ((st = e->stale = calloc(1, sizeof(*st))) == NULL) {
            pt_error("eds: cluster %s: out of memory arming endpoint_stale_after", e->name);
            return;
        }
        st->assignment_stale =
            pt_stats_counter("cluster", "envoy_cluster_name", e->name, "assignment_stale");
        st->assignment_timeout_received = pt_stats_counter("cluster", "envoy_cluster_name",
                                                           e->name, "assignment_timeout_received");
    }
    pt_stat_inc(st->assignment_timeout_received);
    if (cm->loop == NULL) {
        st->ms = ms; /* armed by pt_cluster_manager_set_loop */
        return;
    }
    ev_timer_init(&st->timer, on_stale, (double)ms / 1000.0, 0.);
    st->timer.data = e;
    ev_timer_start(cm->loop, &st->timer);
    st->on = 1;
}

static int eds_apply(eds_sub_t *es, const pt_discovery_response_t *resp, const char *version,
                     char *err, size_t errlen)
{
    pt_cluster_manager_t *cm = es->cm;
    int counted = version != NULL;
    err[0] = '\0';
    member_index_t ix;
    unsigned n = es->nmembers, changed = 0;
    int bad = 0;
    pt_cluster_t **built = calloc(n ? n : 1, sizeof(*built));
    pt_digest_t *digests = calloc(n ? n : 1, sizeof(*digests));
    unsigned char *in_place = calloc(n ? n : 1, 1);
    pt_digest_t *text_digests = calloc(n ? n : 1, sizeof(*text_digests));
    uint32_t *text_lens = calloc(n ? n : 1, sizeof(*text_lens));
    unsigned char *has_text = calloc(n ? n : 1, 1);
    eds_read_t rd = {.es = es, .seen_at = calloc(n ? n : 1, sizeof(size_t))};
    unsigned with_text = 0;
    for (unsigned i = 0; i < n; i++) {
        const cm_entry_t *e = es->members[i];
        with_text += e->has_text_digest;
        if (e->has_text_digest && e->cla_text_index >= rd.nlen_at)
            rd.nlen_at = (size_t)e->cla_text_index + 1;
    }
    if (with_text > 0) {
        rd.text_cap = 16;
        while (rd.text_cap < 2 * (size_t)with_text)
            rd.text_cap *= 2;
        rd.by_text = calloc(rd.text_cap, sizeof(*rd.by_text));
        rd.len_at = calloc(rd.nlen_at, sizeof(*rd.len_at));
    }
    ix.slots = NULL;
    if (built == NULL || digests == NULL || in_place == NULL || text_digests == NULL ||
        text_lens == NULL || has_text == NULL || rd.seen_at == NULL ||
        (with_text > 0 && (rd.by_text == NULL || rd.len_at == NULL)) ||
        member_index_build(&ix, es) != 0) {
        snprintf(err, errlen, "out of memory");
        bad = 1;
        goto release;
    }
    for (unsigned i = 0; with_text > 0 && i < n; i++) {
        const cm_entry_t *e = es->members[i];
        if (!e->has_text_digest)
            continue;
        size_t h = e->cla_text_digest.a & (rd.text_cap - 1);
        while (rd.by_text[h] != 0)
            h = (h + 1) & (rd.text_cap - 1);
        rd.by_text[h] = i + 1;
        rd.len_at[e->cla_text_index] = e->cla_text_len;
    }
    size_t cursor = 0;
    pt_discovery_resource_t res;
    char why[1024];
    int got;
    const pt_discovery_known_t known = {.known = eds_known, .expected_len = eds_expected_len, .data = &rd};
    while ((got = pt_discovery_response_next_known(resp, &cursor, &res, &known, why,
                                                    sizeof(why))) != 0) {
        if (got == 2)
            continue; /* the same bytes as an assignment in force */
        if (got < 0) { /* an invalid element: the update is */
            size_t len = strlen(err);
            snprintf(err + len, errlen - len, "%s%s", len ? "; " : "", why);
            bad = 1;
            continue;
        }
        if (res.name == NULL)
            continue;
        /* Every cluster taking this assignment (one at most has it by name: duplicate names
         * are invalid). */
        for (size_t h = pt_hash_name(res.name) & (ix.cap - 1); ix.slots[h] != 0;
             h = (h + 1) & (ix.cap - 1)) {
            unsigned i = ix.slots[h] - 1;
            cm_entry_t *e = es->members[i];
            if (strcmp(e->active->eds_service_name, res.name) != 0)
                continue;
            if (rd.seen_at[i] != 0) { /* known by its text before: the same name again */
                size_t len = strlen(err);
                snprintf(err + len, errlen - len, "%sresources[%zu]: duplicate name \"%s\" "
                         "(resources[%zu] has it too)", len ? "; " : "", res.index, res.name,
                         rd.seen_at[i] - 1);
                bad = 1;
                continue;
            }
            rd.seen_at[i] = res.index + 1;
            if (e->has_text_digest) /* in the last read too: the next is guessed after it */
                rd.next_old = (size_t)e->cla_text_index + 1;
            if (res.text != NULL && res.text_len <= UINT32_MAX) {
                text_digests[i] = pt_bytes_digest(res.text, res.text_len);
                text_lens[i] = (uint32_t)res.text_len;
                has_text[i] = 1;
            }
            /* Equal assignments, however written, have equal digests. */
            digests[i] = pt_json_digest(res.json);
            if (e->has_digest && pt_digest_equal(e->cla_digest, digests[i]))
                continue; /* the same as in force */
            pt_cfg_t r;
            pt_discovery_resource_reader(&res, &r);
            if (!pt_cluster_prepared(e->active)) {
                /* New with the CDS update being applied: its first endpoints go into it. */
                in_place[i] = pt_cluster_take_assignment(e->active, &r) == 0;
                pt_cfg_finish(&r);
                if (!in_place[i] || !pt_cfg_ok(&r)) {
                    collect_errors(&r, err, errlen);
                    bad = 1;
                }
            } else {
                built[i] = pt_cluster_with_assignment(e->active, &r);
                pt_cfg_finish(&r);
                if (built[i] == NULL || !pt_cfg_ok(&r)) {
                    collect_errors(&r, err, errlen);
                    pt_cluster_unref(built[i]);
                    built[i] = NULL;
                    bad = 1;
                }
            }
            pt_cfg_dispose(&r);
        }
    }
    /* A member after the list: this reading is void, the response will be read whole. */
    int void_reading = pt_discovery_response_read_whole(resp);
    for (unsigned i = 0; i < n; i++) {
        cm_entry_t *e = es->members[i];
        if (counted && !void_reading)
            e->n_attempt++;
        if (bad) {
            if (counted && !void_reading)
                e->n_rejected++;
            pt_cluster_unref(built[i]);
            if (in_place[i])
                pt_cluster_drop_assignment(e->active);
            continue;
        }
        if (counted)
            e->n_success++;
        if (has_text[i]) { /* read this time: its text is what it has now */
            e->cla_text_digest = text_digests[i];
            e->cla_text_len = text_lens[i];
            e->has_text_digest = 1;
        } else if (rd.seen_at[i] != 0 && resp->stream == NULL) {
            e->has_text_digest = 0; /* read whole: its text is not known */
        }
        if (e->has_text_digest && rd.seen_at[i] != 0 && rd.seen_at[i] - 1 <= UINT32_MAX)
            e->cla_text_index = (uint32_t)(rd.seen_at[i] - 1);
        if (built[i] == NULL && !in_place[i]) {
            if (rd.seen_at[i] != 0 && !es->rereading)
                eds_arm_stale(cm, e); /* the same assignment again: not stale */
            continue;
        }
        if (built[i] != NULL) {
            pt_cluster_unref(e->active);
            e->active = built[i];
        }
        eds_arm_stale(cm, e);
        e->warm_until_ms = 0;
        e->cla_digest = digests[i];
        e->has_digest = 1;
        changed++;
    }
release:
    free(built);
    free(digests);
    free(in_place);
    free(text_digests);
    free(text_lens);
    free(has_text);
    free(rd.seen_at);
    free(rd.by_text);
    free(rd.len_at);
    free(ix.slots);
    if (bad)
        return -1;
    if (counted)
        pt_info("eds: version %s of %s: endpoints of %u cluster%s changed", version, es->path,
                changed, changed == 1 ? "" : "s");
    if (changed && !cm->in_eds_load && publish(cm) != 0) {
        snprintf(err, errlen, "out of memory publishing the endpoints");
        return -1;
    }
    return 0;
}

/* A read of an EDS file: a change of it, or the read for clusters that joined. */
static int on_eds_update(void *data, const pt_discovery_response_t *resp, char *err,
                         size_t errlen)
{
    eds_sub_t *es = data;
    return eds_apply(es, resp, es->rereading ? NULL : resp->version_info, err, errlen);
}

static void eds_sub_free(eds_sub_t *es)
{
    free(es->members);
    pt_subscription_free(es->sub);
    free(es->path);
    free(es->watched_directory);
    free(es);
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* What names a source among the subscriptions: its file, "ads", or its control plane. */
static const char *source_key(const pt_config_source_t *src)
{
    return src->key;
}

static uint64_t source_hash(const pt_config_source_t *src)
{
    uint64_t h = pt_hash_name(source_key(src));
    return src->watched_directory != NULL ? h * 31 + pt_hash_name(src->watched_directory) : h;
}

/* Doubles the buckets of the subscriptions' index when it is as full as it has entries. */
static int subs_reindex(pt_cluster_manager_t *cm)
{
    if (cm->nsubs < cm->nsub_buckets)
        return 0;
    unsigned nb = cm->nsub_buckets ? cm->nsub_buckets * 2 : 16;
    eds_sub_t **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return -1;
    for (eds_sub_t *es = cm->eds_subs; es != NULL; es = es->next) {
        eds_sub_t **slot = &b[es->hash & (nb - 1)];
        es->next_in_bucket = *slot;
        *slot = es;
    }
    free(cm->sub_buckets);
    cm->sub_buckets = b;
    cm->nsub_buckets = nb;
    return 0;
}

/* Takes es out of the index (the caller takes it out of the list and frees it). */
static void subs_unindex(pt_cluster_manager_t *cm, eds_sub_t *es)
{
    for (eds_sub_t **pp = &cm->sub_buckets[es->hash & (cm->nsub_buckets - 1)]; *pp != NULL;
         pp = &(*pp)->next_in_bucket)
        if (*pp == es) {
            *pp = es->next_in_bucket;
            break;
        }
    cm->nsubs--;
}

static int member_add(eds_sub_t *es, cm_entry_t *e)
{
    if (es->nmembers == es->cap_members) {
        unsigned cap = es->cap_members ? es->cap_members * 2 : 4;
        cm_entry_t **m = realloc(es->members, cap * sizeof(*m));
        if (m == NULL)
            return -1;
        es->members = m;
        es->cap_members = cap;
    }
    es->members[es->nmembers++] = e;
    return 0;
}

/* A control plane's subscription asks for its members' assignments (by their service
 * names). */
static void ads_ask_for_members(eds_sub_t *es)
{
    const char **names = malloc((es->nmembers ? es->nmembers : 1) * sizeof(*names));
    if (names == NULL) {
        pt_error("eds: out of memory naming the clusters' assignments");
        return;
    }
    for (unsigned i = 0; i < es->nmembers; i++)
        names[i] = es->members[i]->active->eds_service_name;
    if (pt_subscription_set_names(es->sub, names, es->nmembers) != 0)
        pt_error("eds: out of memory naming the clusters' assignments");
    free(names);
}

static eds_sub_t *eds_sub_for(pt_cluster_manager_t *cm, const pt_config_source_t *src, int *fresh)
{
    *fresh = 0;
    uint64_t hash = source_hash(src);
    if (cm->nsub_buckets != 0)
        for (eds_sub_t *es = cm->sub_buckets[hash & (cm->nsub_buckets - 1)]; es != NULL;
             es = es->next_in_bucket)
            if (es->hash == hash && same_str(es->path, source_key(src)) &&
                same_str(es->watched_directory, src->watched_directory))
                return es;
    if (subs_reindex(cm) != 0)
        return NULL;
    eds_sub_t *es = calloc(1, sizeof(*es));
    if (es == NULL || (es->path = strdup(source_key(src))) == NULL ||
        (src->watched_directory != NULL &&
         (es->watched_directory = strdup(src->watched_directory)) == NULL)) {
        if (es != NULL)
            eds_sub_free(es);
        return NULL;
    }
    es->cm = cm;
    pt_file_subscription_config_t sc = {
        .type_url = CLA_TYPE_URL,
        .stat_scope = "cluster_manager",
        .stat_prefix = "eds.",
        .what = "endpoints",
        .resource_by_resource = 1, /* thousands of assignments in a file, used one by one */
    };
    char err[256];
    es->sub = pt_subscription_new(src, &sc, on_eds_update, es, err, sizeof(err));
    if (es->sub == NULL) {
        pt_error("eds: %s", err);
        eds_sub_free(es);
        return NULL;
    }
    es->hash = hash;
    es->next = cm->eds_subs;
    cm->eds_subs = es;
    eds_sub_t **slot = &cm->sub_buckets[hash & (cm->nsub_buckets - 1)];
    es->next_in_bucket = *slot;
    *slot = es;
    cm->nsubs++;
    *fresh = 1;
    return es;
}

/* After entries changed: every EDS cluster without its endpoints is connected to the
 * subscription of its eds_config (made and read on first use) and given its assignment: a
 * cluster that joins a file already read gets it from the last update. Without one (no such
 * resource yet, or the file missing or invalid) the cluster has no hosts until one comes, as
 * in Envoy once initial_fetch_timeout is over. Subscriptions nobody uses any more go. Work:
 * one pass per subscription that has new members. */
static void eds_rebind(pt_cluster_manager_t *cm)
{
    for (eds_sub_t *es = cm->eds_subs; es != NULL; es = es->next)
        es->joining = 0, es->nmembers = 0;
    for (unsigned i = 0; i < cm->n; i++) {
        cm_entry_t *e = cm->entries[i];
        if (e->active->type != PT_CLUSTER_EDS) {
            e->eds = NULL;
            entry_disown_counts(e);
            continue;
        }
        if (e->active->has_assignment) {
            if (e->eds != NULL && member_add(e->eds, e) != 0)
                pt_error("eds: cluster %s: out of memory", e->name);
            continue;
        }
        e->has_digest = 0; /* a new version without endpoints: give it its assignment */
        e->has_text_digest = 0;
        uint64_t timeout = e->active->eds_config->initial_fetch_timeout_ms;
        e->warm_until_ms = timeout == 0 ? UINT64_MAX : pt_now_ms() + timeout;
        if (e->eds_attempt == 0) {
            e->eds_attempt = pt_stats_counter("cluster", "envoy_cluster_name", e->name, "update_attempt");
            e->eds_success = pt_stats_counter("cluster", "envoy_cluster_name", e->name, "update_success");
            e->eds_rejected = pt_stats_counter("cluster", "envoy_cluster_name", e->name, "update_rejected");
            own_count(e->eds_attempt, &e->n_attempt, read_attempt, e);
            own_count(e->eds_success, &e->n_success, read_success, e);
            own_count(e->eds_rejected, &e->n_rejected, read_rejected, e);
        }
        int fresh;
        e->eds = eds_sub_for(cm, e->active->eds_config, &fresh);
        if (e->eds == NULL || member_add(e->eds, e) != 0) {
            pt_error("eds: cluster %s: out of memory", e->name);
            continue;
        }
        e->eds->joining |= fresh ? 2 : 1;
    }
    char err[2048];
    for (eds_sub_t *es = cm->eds_subs; es != NULL; es = es->next) {
        if (es->joining & 2) { /* new: read it (delivered through on_eds_update) */
            cm->in_eds_load++;
            int rc = pt_subscription_load(es->sub, err, sizeof(err));
            if (rc != PT_UPDATE_ACCEPTED && rc != PT_UPDATE_PENDING)
                pt_warn("eds: %s (its clusters have no hosts until it is valid)", err);
            cm->in_eds_load--;
            if (cm->loop != NULL &&
                pt_subscription_watch(es->sub, cm->loop, err, sizeof(err)) != 0)
                pt_warn("eds: %s: %s", es->path, err);
        } else if ((es->joining & 1) && pt_subscription_is_remote(es->sub)) {
            /* From a control plane the names sent below ask it for the new ones. */
        } else if (es->joining & 1) {
            /* Clusters join a file read before: read it again, as Envoy's new subscription
             * would (nothing of the earlier read is kept but digests; clusters already
             * served see their own assignments again and skip them). */
            cm->in_eds_load++;
            es->rereading = 1;
            if (pt_subscription_load(es->sub, err, sizeof(err)) != PT_UPDATE_ACCEPTED)
                pt_warn("eds: %s (the clusters that joined have no hosts until it is valid)",
                        err);
            es->rereading = 0;
            cm->in_eds_load--;
        }
    }
    for (eds_sub_t **pp = &cm->eds_subs; *pp != NULL;) {
        eds_sub_t *es = *pp;
        if (es->nmembers != 0) {
            pp = &es->next;
            continue;
        }
        *pp = es->next; /* nobody uses it any more */
        subs_unindex(cm, es);
        eds_sub_free(es);
    }
    for (eds_sub_t *es = cm->eds_subs; es != NULL; es = es->next)
        if (pt_subscription_is_remote(es->sub))
            ads_ask_for_members(es);
}

void pt_cluster_manager_set_loop(pt_cluster_manager_t *cm, struct ev_loop *loop)
{
    cm->loop = loop;
    dns_rebind(cm);
    for (unsigned i = 0; i < cm->n; i++) {
        cm_entry_t *e = cm->entries[i];
        cm_stale_t *st = e->stale;
        if (st != NULL && st->ms > 0 && !st->on) {
            ev_timer_init(&st->timer, on_stale, (double)st->ms / 1000.0, 0.);
            st->timer.data = e;
            ev_timer_start(loop, &st->timer);
            st->on = 1;
            st->ms = 0;
        }
    }
    char err[512];
    for (eds_sub_t *es = cm->eds_subs; es != NULL; es = es->next)
        if (pt_subscription_watch(es->sub, loop, err, sizeof(err)) != 0)
            pt_warn("eds: %s: %s", es->path, err);
}

/* The static clusters parsed so far, with an index by name for the duplicate check (Istio
 * bootstraps and generated configs carry thousands). */
typedef struct cluster_list {
    pt_cluster_t **items;
    unsigned n;
    pt_cluster_t **index; /* open addressing, cap a power of two over twice the count */
    unsigned cap;
} cluster_list_t;

/* Adds c unless a cluster of its name is there: 1 added, 0 a duplicate. */
static int list_add(cluster_list_t *l, pt_cluster_t *c)
{
    uint64_t h = pt_hash_name(c->name) & (l->cap - 1);
    for (; l->index[h] != NULL; h = (h + 1) & (l->cap - 1))
        if (strcmp(l->index[h]->name, c->name) == 0)
            return 0;
    l->index[h] = c;
    l->items[l->n++] = c;
    return 1;
}

pt_view_t *pt_cluster_manager_parse_static(json_t *bootstrap, pt_cfg_t *r)
{
    /* A reader of its own, rooted at the bootstrap: the config (proxy/config.c) reads
     * everything else, and reports what is wrong with static_resources itself. */
    pt_cfg_t cr;
    pt_cfg_init(&cr, bootstrap);
    pt_cfg_set_message(&cr, "envoy.config.bootstrap.v3.Bootstrap");
    cluster_list_t list = {0};
    int present = 0;
    int oom = 0;
    /* -1: the bootstrap or its static_resources is not an object (the config reports it). */
    int in = json_is_object(bootstrap) ? pt_cfg_enter(&cr, "static_resources") : -1;
    if (in > 0) {
        size_t n = pt_cfg_array(&cr, "clusters", &present);
        list.cap = 16;
        while (list.cap < n * 2)
            list.cap *= 2;
        list.items = calloc(n ? n : 1, sizeof(*list.items));
        list.index = calloc(list.cap, sizeof(*list.index));
        oom = list.items == NULL || list.index == NULL;
        for (size_t i = 0; !oom && i < n; i++) {
            if (pt_cfg_enter_index(&cr, i) <= 0)
                continue;
            /* Kept even with errors of its own: the listeners' references to it are then
             * not reported as well. */
            pt_cluster_t *c = pt_cluster_parse(&cr);
            if (c != NULL && c->name[0] && !list_add(&list, c)) {
                pt_cfg_error(&cr, "name", "duplicate cluster name \"%s\"", c->name);
                pt_cluster_unref(c);
            } else if (c == NULL || !c->name[0]) {
                pt_cluster_unref(c);
            }
            pt_cfg_leave(&cr);
        }
        if (present)
            pt_cfg_leave_array(&cr);
        pt_cfg_skip_rest(&cr);
        pt_cfg_leave(&cr);
    }
    pt_cfg_skip_rest(&cr);
    pt_cfg_finish(&cr);
    for (size_t i = 0; in >= 0 && i < cr.nerrors; i++)
        pt_cfg_error_at(r, "%s", cr.errors[i]);
    pt_cfg_dispose(&cr);
    pt_view_t *v = oom ? NULL : pt_view_new(list.items, list.n);
    for (unsigned i = 0; i < list.n; i++)
        pt_cluster_unref(list.items[i]); /* the view has its own references */
    free(list.items);
    free(list.index);
    if (v == NULL)
        pt_cfg_error(r, NULL, "out of memory");
    return v;
}

int pt_cluster_manager_prepare_static(pt_view_t *statics, pt_cfg_t *r)
{
    char where[96];
    for (unsigned i = 0; i < statics->nclusters && pt_cfg_ok(r); i++) {
        pt_cluster_t *c = statics->clusters[i];
        if (!pt_cluster_has_tls(c))
            continue;
        /* The bootstrap validated, so the view holds every cluster at its index. */
        snprintf(where, sizeof(where), "static_resources.clusters[%u]", i);
        (void)pt_cluster_build_tls(c, r, where);
    }
    for (unsigned i = 0; i < statics->nclusters && pt_cfg_ok(r); i++)
        if (!pt_cluster_prepared(statics->clusters[i]) &&
            pt_cluster_prepare(statics->clusters[i]) != 0)
            pt_cfg_error(r, NULL, "could not prepare cluster \"%s\"", statics->clusters[i]->name);
    return pt_cfg_ok(r) ? 0 : -1;
}

int pt_cluster_manager_set_static(pt_cluster_manager_t *cm, const pt_view_t *statics)
{
    for (unsigned i = 0; i < statics->nclusters; i++) {
        pt_cluster_t *c = statics->clusters[i];
        cm_entry_t *e = entry_new(c->name);
        if (e == NULL || (e->version = version_new("")) == NULL || add_entry(cm, e) != 0) {
            entry_free(e);
            return -1;
        }
        e->active = pt_cluster_ref(c);
        e->last_updated = wall_now();
    }
    eds_rebind(cm);
    dns_rebind(cm);
    return publish(cm);
}

/* The clusters of an update keep their configuration as text only, once their first
 * endpoints are in (before they are published). */
static void drop_source_trees(pt_cluster_manager_t *cm)
{
    for (unsigned i = 0; i < cm->n; i++) {
        pt_cluster_t *c = cm->entries[i]->active;
        if (c->source != NULL && c->source_text != NULL) {
            json_decref(c->source);
            c->source = NULL;
        }
    }
}

/* Whether the assignment in force for `old` is the one `next` (a new version of the same
 * cluster) asks for: both EDS, from the same file, under the same service name. */
static int same_assignment_source(const pt_cluster_t *old, const pt_cluster_t *next)
{
    return old->type == PT_CLUSTER_EDS && next->type == PT_CLUSTER_EDS &&
           old->has_assignment && old->eds_config != NULL && next->eds_config != NULL &&
           same_str(old->eds_config->path, next->eds_config->path) &&
           same_str(old->eds_config->watched_directory, next->eds_config->watched_directory) &&
           same_str(old->eds_service_name, next->eds_service_name);
}

/* One resource of a CDS update as parsed (a new version), or kept (unchanged). */
typedef struct staged {
    const char *name;
    pt_cluster_t *next;   /* a new version, or NULL when the active one stays */
    cm_entry_t *entry;    /* the current entry by that name, or NULL */
} staged_t;

static void record_rejection(pt_cluster_manager_t *cm, const char *version, const char *errors)
{
    free(cm->rejected_version);
    free(cm->rejected_errors);
    cm->rejected_version = dup_or_empty(version);
    cm->rejected_errors = dup_or_empty(errors);
}

/* Appends r's errors to err ("; "-separated). */
static void collect_errors(const pt_cfg_t *r, char *err, size_t errlen)
{
    size_t len = strlen(err);
    for (size_t i = 0; i < r->nerrors && len + 1 < errlen; i++) {
        int n = snprintf(err + len, errlen - len, "%s%s", len ? "; " : "", r->errors[i]);
        if (n < 0)
            break;
        len += (size_t)n;
        if (len >= errlen)
            len = errlen - 1;
    }
}

/* What a CDS update has staged so far (grows as it is read, resource by resource). */
typedef struct cds_read {
    pt_cluster_manager_t *cm;
    staged_t *st;
    size_t n, cap;
} cds_read_t;

static int stage(cds_read_t *cr, staged_t s)
{
    if (cr->n == cr->cap) {
        size_t cap = cr->cap ? cr->cap * 2 : 64;
        staged_t *st = realloc(cr->st, cap * sizeof(*st));
        if (st == NULL)
            return -1;
        cr->st = st;
        cr->cap = cap;
    }
    cr->st[cr->n++] = s;
    return 0;
}

/* pt_discovery_known_t.known_text: a resource a delta stream keeps in force, by its name and
 * canonical text: the same text as the dynamic cluster of that name was made from means the
 * same cluster, which stays (staged unchanged) without its text being parsed. */
static int cds_known_text(void *data, const char *name, const char *text, size_t len)
{
    cds_read_t *cr = data;
    cm_entry_t *e = name != NULL ? find(cr->cm, name) : NULL;
    const char *src = e != NULL && e->dynamic ? e->active->source_text : NULL;
    if (src == NULL || strlen(src) != len || memcmp(src, text, len) != 0)
        return 0;
    return stage(cr, (staged_t){.name = e->name, .entry = e}) == 0;
}

int pt_cluster_manager_apply_cds(pt_cluster_manager_t *cm, const pt_discovery_response_t *resp,
                                 char *err, size_t errlen)
{
    err[0] = '\0';
    cds_read_t cr = {.cm = cm};
    /* 1. Parse what changed; keep what did not. Read resource by resource (each resource's
     * tree lives on only in the cluster made of it); every one is read, and any invalid one
     * rejects the update. The reading checks @type and that no two resources share a name. */
    int bad = 0, got;
    size_t cursor = 0;
    pt_discovery_resource_t res_buf;
    const pt_discovery_known_t known = {.known_text = cds_known_text, .data = &cr};
    char why[1024];
    while ((got = pt_discovery_response_next_known(resp, &cursor, &res_buf, &known, why,
                                                   sizeof(why))) != 0) {
        if (got == 2)
            continue; /* in force, the same */
        if (got < 0) {
            size_t len = strlen(err);
            snprintf(err + len, errlen - len, "%s%s", len ? "; " : "", why);
            bad = 1;
            continue;
        }
        const pt_discovery_resource_t *res = &res_buf;
        const char *name = res->name;
        cm_entry_t *e = name != NULL ? find(cm, name) : NULL;
        if (e != NULL && !e->dynamic) {
            snprintf(err + strlen(err), errlen - strlen(err),
                     "%s%s.name: \"%s\" is a static cluster of the bootstrap: CDS cannot "
                     "change it", err[0] ? "; " : "", res->path, name);
            bad = 1;
            continue;
        }
        /* Compared as canonical text: what a dynamic cluster keeps of its source (a delta
         * stream's reading has it made already). */
        char *canonical = res->canonical && res->text != NULL
                              ? strndup(res->text, res->text_len)
                              : pt_json_canonical(res->json);
        if (canonical == NULL) {
            snprintf(err, errlen, "out of memory");
            bad = 1;
            break;
        }
        if (e != NULL && pt_cluster_source_is(e->active, canonical)) {
            free(canonical);
            if (stage(&cr, (staged_t){.name = e->name, .entry = e}) != 0) {
                snprintf(err, errlen, "out of memory");
                bad = 1;
                break;
            }
            continue; /* unchanged: the active version stays */
        }
        pt_cfg_t r;
        pt_discovery_resource_reader(res, &r);
        pt_cluster_t *c = pt_cluster_parse(&r);
        pt_cfg_finish(&r);
        if (c != NULL && pt_cfg_ok(&r) && pt_cluster_has_tls(c)) {
            /* Materials: the TLS contexts (files read, keys checked), part of validation. */
            char where[96];
            snprintf(where, sizeof(where), "%s", res->path);
            /* A cluster whose transport_socket did not change keeps its context. */
            if (e == NULL || !e->dynamic || !pt_cluster_share_tls(c, e->active))
                (void)pt_cluster_build_tls(c, &r, where);
        }
        if (!pt_cfg_ok(&r) || c == NULL || !c->name[0]) {
            if (c == NULL && pt_cfg_ok(&r))
                pt_cfg_error(&r, NULL, "out of memory");
            collect_errors(&r, err, errlen);
            pt_cluster_unref(c);
            bad = 1;
        } else {
            /* Kept as text from here on; the tree only until the cluster has its first
             * endpoints (an EDS cluster is built again with them, from the tree). */
            pt_cluster_keep_source_text(c, canonical);
            canonical = NULL;
            if (stage(&cr, (staged_t){.name = c->name, .next = c, .entry = e}) != 0) {
                pt_cluster_unref(c);
                snprintf(err, errlen, "out of memory");
                bad = 1;
            }
        }
        free(canonical);
        pt_cfg_dispose(&r);
    }
    staged_t *st = cr.st;
    size_t nst = cr.n;
    /* A file read resource by resource that has a member after its list: this reading is
     * void (the file is read whole next), not a rejection. */
    int void_reading = pt_discovery_response_read_whole(resp);
    /* 2. Prepared (state, hosts, stats) only once everything validated. A new version of
     * an EDS cluster whose assignment still applies keeps its endpoints. */
    for (size_t k = 0; !bad && k < nst; k++) {
        pt_cluster_t *c = st[k].next;
        const cm_entry_t *e = st[k].entry;
        if (c == NULL)
            continue;
        if (e != NULL && e->has_digest && same_assignment_source(e->active, c) &&
            pt_cluster_adopt_endpoints(c, e->active) != 0)
            bad = 1;
        /* A DNS cluster changed: its hosts stay until its names resolve again with the new
         * configuration (Envoy keeps the old cluster until the new one is warm). */
        if (!bad && e != NULL && pt_cluster_type_is_dns(e->active->type) &&
            pt_cluster_type_is_dns(c->type) && pt_cluster_adopt_endpoints(c, e->active) != 0)
            bad = 1;
        /* An EDS cluster still without endpoints is prepared once its first assignment is
         * in it (below, after eds_rebind): its stats and state are made once. */
        if (!bad && (c->type != PT_CLUSTER_EDS || c->has_assignment) &&
            pt_cluster_prepare(c) != 0)
            bad = 1;
        if (bad)
            snprintf(err, errlen, "out of memory");
    }
    if (bad) {
        for (size_t k = 0; k < nst; k++)
            pt_cluster_unref(st[k].next);
        free(st);
        if (!void_reading)
            record_rejection(cm, resp->version_info, err);
        return -1;
    }
    /* 3. Commit: nothing can fail from here on but memory for the bookkeeping. */
    double now = wall_now();
    unsigned nadded = 0, nmodified = 0, nremoved = 0;
    cm->gen++;
    for (size_t k = 0; k < nst; k++)
        if (st[k].entry != NULL)
            st[k].entry->seen = cm->gen;
    for (unsigned i = 0; i < cm->n;) {
        cm_entry_t *e = cm->entries[i];
        int kept = !e->dynamic || e->seen == cm->gen;
        if (kept) {
            i++;
            continue;
        }
        pt_stat_inc(cm->cluster_removed);
        pt_debug("cds: cluster %s removed", e->name);
        nremoved++;
        cm->entries[i] = cm->entries[--cm->n];
        cm->unsorted = 1;
        unindex(cm, e);
        entry_free(e);
    }
    cm_version_t *version = NULL; /* this update's, made for its first changed entry */
    for (size_t k = 0; k < nst; k++) {
        cm_entry_t *e = st[k].entry;
        if (st[k].next == NULL)
            continue; /* unchanged */
        if (e == NULL) {
            e = entry_new(st[k].next->name);
            if (e == NULL || add_entry(cm, e) != 0) {
                entry_free(e);
                pt_cluster_unref(st[k].next);
                pt_error("cds: out of memory adding cluster %s", st[k].name);
                continue;
            }
            e->dynamic = 1;
            pt_stat_inc(cm->cluster_added);
            pt_debug("cds: cluster %s added", e->name);
            nadded++;
        } else {
            pt_stat_inc(cm->cluster_modified);
            pt_debug("cds: cluster %s updated", e->name);
            nmodified++;
            /* Resolved again with its new configuration (dns_rebind, below). */
            pt_dns_cluster_stop(e->dns);
            e->dns = NULL;
        }
        pt_cluster_unref(e->active);
        e->active = st[k].next;
        if (version == NULL && (version = version_new(resp->version_info)) == NULL)
            pt_error("cds: out of memory keeping version %s", resp->version_info);
        version_put(e->version);
        e->version = version;
        if (version != NULL)
            version->refs++;
        e->last_updated = now;
    }
    version_put(version); /* the entries hold it */
    free(st);
    free(cm->cds_version);
    cm->cds_version = dup_or_empty(resp->version_info);
    eds_rebind(cm);
    dns_rebind(cm);
    drop_source_trees(cm);
    for (unsigned i = 0; i < cm->n; i++) /* those whose assignment has not come (warming) */
        if (!pt_cluster_prepared(cm->entries[i]->active) &&
            pt_cluster_prepare(cm->entries[i]->active) != 0)
            pt_error("cds: cluster %s: out of memory", cm->entries[i]->name);
    if (publish(cm) != 0) {
        snprintf(err, errlen, "out of memory publishing the clusters");
        return -1;
    }
    /* One line per update, as Envoy's (each cluster at debug level), once it is in force
     * with the endpoints of its EDS clusters. */
    pt_info("cds: version %s: %u cluster%s added, %u updated, %u removed, %u unchanged",
            resp->version_info, nadded, nadded == 1 ? "" : "s", nmodified, nremoved,
            (unsigned)nst - nadded - nmodified);
    return 0;
}

pt_view_t *pt_cluster_manager_view(pt_cluster_manager_t *cm)
{
    return pt_view_ref(cm->view);
}

void pt_cluster_manager_prune(pt_cluster_manager_t *cm)
{
    unsigned changed = 0;
    uint64_t now = pt_now_ms();
    for (unsigned i = 0; i < cm->n; i++) {
        cm_entry_t *e = cm->entries[i];
        if (e->active->type == PT_CLUSTER_ORIGINAL_DST) {
            /* Its hosts made on demand: the idle ones go every cleanup_interval. */
            unsigned gone = pt_cluster_odst_cleanup(e->active, now);
            if (gone > 0)
                pt_debug("cluster %s: %u idle original destination host%s removed", e->name,
                         gone, gone == 1 ? "" : "s");
            continue;
        }
        if (e->active->npending == 0 || !pt_cluster_pending_failed(e->active))
            continue;
        pt_cluster_t *next = pt_cluster_without_failed_pending(e->active);
        if (next == NULL) {
            pt_error("cluster %s: out of memory removing its failed hosts", e->name);
            continue;
        }
        pt_info("cluster %s: %u host%s pending removal failed health checks: removed", e->name,
                e->active->npending - next->npending,
                e->active->npending - next->npending == 1 ? "" : "s");
        pt_cluster_unref(e->active);
        e->active = next;
        changed++;
    }
    if (changed && publish(cm) != 0)
        pt_error("out of memory publishing the clusters");
}

static int is_warming(const cm_entry_t *e, uint64_t now)
{
    if (!e->active->wait_for_warm)
        return 0;
    /* Its TLS context waits for an SDS secret (within its initial_fetch_timeout). */
    if (pt_tls_context_warming(e->active->tls_ctx, now))
        return 1;
    for (unsigned i = 0; i < e->active->nmatches; i++)
        if (pt_tls_context_warming(e->active->matches[i].tls_ctx, now))
            return 1;
    if (pt_cluster_type_is_dns(e->active->type))
        return !e->dns_ready;
    return e->active->type == PT_CLUSTER_EDS && !e->active->has_assignment &&
           e->warm_until_ms > now;
}

unsigned pt_cluster_manager_warming(pt_cluster_manager_t *cm)
{
    uint64_t now = pt_now_ms();
    unsigned n = 0;
    for (unsigned i = 0; i < cm->n; i++)
        n += is_warming(cm->entries[i], now);
    return n;
}

void pt_cluster_manager_foreach(pt_cluster_manager_t *cm,
                                void (*fn)(void *data, const pt_cluster_entry_info_t *e),
                                void *data)
{
    uint64_t now = pt_now_ms();
    for (unsigned i = 0; i < cm->n; i++) {
        cm_entry_t *e = cm->entries[i];
        pt_cluster_entry_info_t info = {
            .name = e->name,
            .dynamic = e->dynamic,
            .version_info = e->version != NULL ? e->version->s : "",
            .last_updated = e->last_updated,
            .active = e->active,
            .warming = is_warming(e, now),
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
