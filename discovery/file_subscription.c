#include "discovery/file_subscription.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/file_watch.h"
#include "proxy/config_reader.h"
#include "proxy/heap.h"
#include "proxy/log.h"

struct pt_file_subscription {
    char *path, *watched_directory, *type_url, *what;
    pt_subscription_stats_t stats;
    char *version; /* of the last accepted update */
    pt_file_subscription_cb cb;
    void *data;
    pt_file_watch_t *watch; /* once watching */
    uint64_t fingerprint;   /* of what the last update read */
    int loaded;             /* fingerprint is valid */
    int resource_by_resource;
    int delivering;         /* inside cb: a free waits until it returns */
    int freed;
};

static pt_stat_t stat_of(const pt_file_subscription_config_t *c, pt_stat_kind_t kind,
                         const char *name)
{
    char full[128];
    snprintf(full, sizeof(full), "%s%s", c->stat_prefix ? c->stat_prefix : "", name);
    return pt_stats_get(kind, c->stat_scope, c->stat_tag, c->stat_tag_value, full);
}

pt_file_subscription_t *pt_file_subscription_new(const pt_file_subscription_config_t *cfg,
                                                 pt_file_subscription_cb on_update, void *data)
{
    pt_file_subscription_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->path = strdup(cfg->path);
    s->watched_directory = cfg->watched_directory ? strdup(cfg->watched_directory) : NULL;
    s->type_url = strdup(cfg->type_url);
    s->what = strdup(cfg->what ? cfg->what : cfg->path);
    s->version = strdup("");
    if (s->path == NULL || s->type_url == NULL || s->what == NULL || s->version == NULL ||
        (cfg->watched_directory != NULL && s->watched_directory == NULL)) {
        pt_file_subscription_free(s);
        return NULL;
    }
    s->cb = on_update;
    s->data = data;
    size_t plen = strlen(s->path);
    s->resource_by_resource = cfg->resource_by_resource && plen > 5 &&
                              strcmp(s->path + plen - 5, ".json") == 0;
    pt_subscription_stats_init(&s->stats, cfg);
    return s;
}

void pt_subscription_stats_init(pt_subscription_stats_t *st, const pt_file_subscription_config_t *cfg)
{
    st->update_attempt = stat_of(cfg, PT_STAT_COUNTER, "update_attempt");
    st->update_success = stat_of(cfg, PT_STAT_COUNTER, "update_success");
    st->update_failure = stat_of(cfg, PT_STAT_COUNTER, "update_failure");
    st->update_rejected = stat_of(cfg, PT_STAT_COUNTER, "update_rejected");
    st->version_text = stat_of(cfg, PT_STAT_TEXT, "version_text");
}

static void destroy(pt_file_subscription_t *s)
{
    pt_file_watch_remove(s->watch);
    free(s->path);
    free(s->watched_directory);
    free(s->type_url);
    free(s->what);
    free(s->version);
    free(s);
}

/* Hands resp to the consumer; on acceptance, its version is the subscription's. */
static int deliver(pt_file_subscription_t *s, const pt_discovery_response_t *resp, char *why,
                   size_t whylen)
{
    why[0] = '\0';
    s->delivering = 1;
    int rc = s->cb(s->data, resp, why, whylen);
    s->delivering = 0;
    if (rc == 0 && !s->freed) {
        char *v = strdup(resp->version_info);
        if (v != NULL) {
            free(s->version);
            s->version = v;
        }
        pt_stat_set_text(s->stats.version_text, resp->version_info);
    }
    return rc;
}

/* One update from what the file holds now (st). Returns the outcome; err says why. */
static int update(pt_file_subscription_t *s, const pt_file_state_t *st, char *err, size_t errlen)
{
    pt_stat_inc(s->stats.update_attempt);
    s->fingerprint = st->fingerprint;
    s->loaded = 1;
    if (st->content == NULL) {
        snprintf(err, errlen, "%s", st->error);
        pt_stat_inc(s->stats.update_failure);
        return PT_UPDATE_FAILED;
    }
    pt_discovery_response_t resp;
    char why[1536];
    int rc = s->resource_by_resource
                 ? pt_discovery_response_parse_text(st->content, st->len, s->type_url, &resp,
                                                    why, sizeof(why))
                 : -2;
    if (rc == 0) {
        rc = deliver(s, &resp, why, sizeof(why));
        if (rc != 0 && !s->freed && pt_discovery_response_read_whole(&resp)) {
            pt_discovery_response_dispose(&resp);
            rc = -2; /* a member after the list: the consumer made nothing of it */
        }
    }
    if (rc == -2) { /* the whole document */
        json_t *root = pt_config_parse_text(s->path, st->content, st->len, err, errlen);
        if (root == NULL) {
            pt_stat_inc(s->stats.update_failure);
            return PT_UPDATE_FAILED;
        }
        rc = pt_discovery_response_parse(root, s->type_url, &resp, why, sizeof(why));
        json_decref(root);
        if (rc == 0)
            rc = deliver(s, &resp, why, sizeof(why));
    }
    if (rc != 0)
        snprintf(err, errlen, "%s: %s", s->path, why[0] ? why : "refused");
    /* Read resource by resource, a file found not to be JSON on the way is what it would
     * have been read whole: a failure, not a rejected update. */
    int failed = rc != 0 && pt_discovery_response_malformed(&resp);
    /* The counts belong to the stats, not to s: they stand even when s was freed. */
    pt_stat_inc(rc == 0 ? s->stats.update_success
                        : failed ? s->stats.update_failure : s->stats.update_rejected);
    if (resp.stream == NULL) /* read whole: its tree goes now, before a tick could see it */
        pt_heap_note_peak();
    pt_discovery_response_dispose(&resp);
    return rc == 0 ? PT_UPDATE_ACCEPTED : failed ? PT_UPDATE_FAILED : PT_UPDATE_REJECTED;
}

static void log_outcome(const pt_file_subscription_t *s, int rc, const char *err)
{
    if (rc == PT_UPDATE_FAILED)
        pt_error("cannot read update of %s: %s; keeping the current one", s->what, err);
    else if (rc == PT_UPDATE_REJECTED)
        pt_error("rejected update of %s: %s; keeping the current one", s->what, err);
    else
        pt_debug("update of %s from %s accepted (version \"%s\")", s->what, s->path, s->version);
}

int pt_file_subscription_load(pt_file_subscription_t *s, char *err, size_t errlen)
{
    pt_file_state_t st;
    pt_file_state_read(s->path, &st);
    int rc = update(s, &st, err, errlen);
    pt_file_state_dispose(&st);
    if (s->freed)
        destroy(s); /* by its own callback */
    return rc;
}

static void on_change(void *data, const char *path, const pt_file_state_t *now)
{
    (void)path;
    pt_file_subscription_t *s = data;
    char err[2048];
    int rc = update(s, now, err, sizeof(err));
    if (s->freed) {
        destroy(s);
        return;
    }
    log_outcome(s, rc, err);
}

int pt_file_subscription_watch(pt_file_subscription_t *s, struct ev_loop *loop, char *err,
                               size_t errlen)
{
    if (s->watch != NULL)
        return 0;
    char why[512];
    s->watch =
        pt_file_watch_add(loop, s->path, s->watched_directory, on_change, s, why, sizeof(why));
    if (s->watch == NULL) {
        snprintf(err, errlen, "%s: %s", s->path, why);
        return -1;
    }
    if (s->loaded)
        pt_file_watch_seen(s->watch, s->fingerprint);
    /* Whatever changed since the load (or everything, without one) is delivered now. */
    pt_file_watch_check(s->watch);
    return 0;
}

void pt_file_subscription_free(pt_file_subscription_t *s)
{
    if (s == NULL)
        return;
    if (s->delivering) {
        /* Inside the callback: update() and on_change still use s. */
        s->freed = 1;
        pt_file_watch_remove(s->watch);
        s->watch = NULL;
        return;
    }
    destroy(s);
}

const char *pt_file_subscription_version(const pt_file_subscription_t *s)
{
    return s->version;
}

const pt_subscription_stats_t *pt_file_subscription_stats(const pt_file_subscription_t *s)
{
    return &s->stats;
}

const char *pt_file_subscription_path(const pt_file_subscription_t *s)
{
    return s->path;
}
