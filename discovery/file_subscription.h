/* A file subscription: xDS resources of one type from a file holding a DiscoveryResponse
 * (JSON or YAML by its extension), named by a ConfigSource's path_config_source {path,
 * watched_directory} or its older bare `path`. Envoy's filesystem subscription: the source
 * LDS, CDS, RDS, EDS and SDS read from files.
 *
 * Life: _new (nothing read), _load (the initial fetch: read now, delivered before it
 * returns, so a config can be validated with what the file holds), _watch (from then on
 * every change of the file is read and delivered, on the loop; see discovery/file_watch.h
 * for which events count and why one change is delivered exactly once), _free.
 *
 * Each delivery is an update attempt. The file is read within the config document bounds
 * and parsed; its envelope is checked (discovery/discovery_response.h) against the
 * subscription's type; then the consumer's callback judges the resources and applies them
 * or refuses them. Outcomes, counted as Envoy counts them for a subscription (the caller
 * names the stats, e.g. cluster_manager.cds.*, sds.<secret>.*):
 *   update_attempt   every delivery
 *   update_success   the consumer accepted the update; version_text (a text readout)
 *                    becomes its version_info
 *   update_failure   the file could not be read or parsed (missing, unreadable, not JSON or
 *                    YAML, over a bound): Envoy's "fetch failed", no update was received
 *   update_rejected  the update was received and is invalid: a bad envelope, or refused by
 *                    the consumer (Envoy's "schema/validation errors")
 * A failed or rejected update changes nothing: the consumer's previous state stays in
 * force, and the reason is logged (and returned by _load). Main thread. */
#ifndef PT_FILE_SUBSCRIPTION_H
#define PT_FILE_SUBSCRIPTION_H

#include <ev.h>
#include <stddef.h>

#include "discovery/discovery_response.h"
#include "proxy/stats.h"

typedef struct pt_file_subscription pt_file_subscription_t;

/* Outcomes of one update. */
#define PT_UPDATE_ACCEPTED 0
#define PT_UPDATE_FAILED   (-1) /* not read: the file is missing, unreadable or unparsable */
#define PT_UPDATE_REJECTED (-2) /* read, and invalid */

typedef struct pt_file_subscription_config {
    const char *path;
    const char *watched_directory; /* NULL: the file's own directory */
    const char *type_url;          /* e.g. type.googleapis.com/envoy.config.cluster.v3.Cluster */
    /* Stats <scope>.[<tag_value>.]<prefix>update_attempt, ... (pt_stats_counter's scope,
     * tag and tag_value; prefix may be NULL): scope "cluster_manager", prefix "cds." gives
     * cluster_manager.cds.update_attempt. */
    const char *stat_scope, *stat_tag, *stat_tag_value, *stat_prefix;
    /* How logs name what is updated: `secret "default"`, `clusters`. */
    const char *what;
    /* A JSON file is read resource by resource (pt_discovery_response_parse_text): the
     * consumer takes them with pt_discovery_response_next, each valid until the next. For
     * files of thousands of resources the consumer uses one at a time (EDS). */
    int resource_by_resource;
} pt_file_subscription_config_t;

typedef struct pt_subscription_stats {
    pt_stat_t update_attempt, update_success, update_failure, update_rejected, version_text;
} pt_subscription_stats_t;

/* The stats a subscription counts into, named by cfg (shared with xDS subscriptions). */
void pt_subscription_stats_init(pt_subscription_stats_t *st,
                                const pt_file_subscription_config_t *cfg);

/* The consumer's judgement of an update whose envelope is valid: 0 when accepted (and
 * applied), else nonzero with why in err, as "<path>: <why>" for a resource's field
 * (pt_discovery_resource_reader starts the path). It may free the subscription. */
typedef int (*pt_file_subscription_cb)(void *data, const pt_discovery_response_t *resp, char *err,
                                       size_t errlen);

/* The config is copied. NULL only when out of memory. */
pt_file_subscription_t *pt_file_subscription_new(const pt_file_subscription_config_t *cfg,
                                                 pt_file_subscription_cb on_update, void *data);
/* Reads the file and delivers it now. PT_UPDATE_ACCEPTED, or the outcome with err saying
 * why, "<path>: <why>". */
int pt_file_subscription_load(pt_file_subscription_t *s, char *err, size_t errlen);
/* Starts watching on loop. What the file holds is compared with what _load read, so a
 * change made in between is delivered at once (from this call). 0, or -1 with err
 * (the directory missing, inotify unavailable). */
int pt_file_subscription_watch(pt_file_subscription_t *s, struct ev_loop *loop, char *err,
                               size_t errlen);
/* Safe at any time, including from its own callback. NULL is ignored. */
void pt_file_subscription_free(pt_file_subscription_t *s);

/* version_info of the last accepted update ("" before one). */
const char *pt_file_subscription_version(const pt_file_subscription_t *s);
const pt_subscription_stats_t *pt_file_subscription_stats(const pt_file_subscription_t *s);
const char *pt_file_subscription_path(const pt_file_subscription_t *s);

#endif
