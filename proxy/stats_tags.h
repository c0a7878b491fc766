/* Tag extraction, as Envoy's TagProducer does it: a stat's full dotted name
 * (cluster.backend.upstream_rq_200) gives a tag-extracted name (cluster.upstream_rq) and
 * tags (envoy.cluster_name=backend, envoy.response_code=200). Prometheus output, and the
 * sinks that carry tags, show stats this way.
 *
 * The extractors are Envoy's defaults (source/common/config/well_known_names.cc; dropped by
 * stats_config.use_all_default_tags: false), then the TagSpecifiers of stats_config.
 * stats_tags, in order:
 *  - a regex: matched against the original full name (not against what earlier extractors
 *    left); its first capture group is the part removed from the name, its second (when it
 *    has one) the tag's value, else the first is the value too;
 *  - Envoy's tokenized form for most defaults ("cluster.$.**": `$` is the value, removed
 *    with its dot; `*` one token; `**` one token or more);
 *  - a fixed_value: the tag on every stat, the name unchanged.
 * A tag name already given to the stat by an earlier extractor is not extracted again (one
 * value per tag name, as Envoy keeps). The removed parts of every extractor are cut from the
 * name at the end.
 *
 * Extraction runs where stats are shown (the admin, a sink's flush), on the main thread, not
 * where they are counted; a name costs a few compares and at most a couple of RE2 matches,
 * each extractor being skipped unless the name has its literal part (Envoy's prefilter). */
#ifndef PT_STATS_TAGS_H
#define PT_STATS_TAGS_H

#include <stddef.h>

#include "proxy/arena.h"
#include "proxy/stats.h"

#define PT_STAT_TAGS_MAX 16

/* One stat's extraction. Tag names point into the producer (valid while it is installed);
 * the values and the name are copied here. */
typedef struct pt_stat_tags {
    char name[PT_STAT_NAME_MAX]; /* the tag-extracted name */
    unsigned n;
    const char *tag_name[PT_STAT_TAGS_MAX];
    const char *tag_value[PT_STAT_TAGS_MAX]; /* into values[] */
    char values[PT_STAT_NAME_MAX + PT_STAT_TAGS_MAX];
} pt_stat_tags_t;

typedef struct pt_tag_producer pt_tag_producer_t;

/* A producer in arena a (freed with it). use_defaults adds Envoy's default extractors
 * first. NULL out of memory. */
pt_tag_producer_t *pt_tag_producer_new(pt_arena_t *a, int use_defaults);
/* Adds a stats_tags entry. Exactly one of regex and fixed_value, or neither: then the tag
 * name must be one of Envoy's defaults and its default extractor is used. Returns 0, or -1
 * with the reason in err (worded to follow the field it is about). */
int pt_tag_producer_add(pt_tag_producer_t *p, const char *tag_name, const char *regex,
                        const char *fixed_value, char *err, size_t errlen);
/* Whether name is the name of one of Envoy's default tags (envoy.cluster_name ...). */
int pt_tag_is_default_name(const char *name);

/* The extraction of full_name. */
void pt_tag_producer_extract(const pt_tag_producer_t *p, const char *full_name,
                             pt_stat_tags_t *out);

/* The producer in force: the one installed from stats_config, else Envoy's defaults (built
 * on first use). Main thread. pt_stats_tags_install takes p (and the arena it lives in,
 * freed when another is installed); NULL goes back to the defaults. */
const pt_tag_producer_t *pt_stats_tags_current(void);
void pt_stats_tags_install(pt_tag_producer_t *p, pt_arena_t *owner);

/* Prometheus spelling of a name: every character outside [a-zA-Z0-9_] becomes '_' (Envoy's
 * sanitizer; a tag name envoy.cluster_name is the label envoy_cluster_name). Writes at
 * most len - 1 bytes. */
void pt_stats_prom_sanitize(const char *in, char *out, size_t len);

#endif
