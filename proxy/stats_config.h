/* Bootstrap stats_config: stats_tags and use_all_default_tags (the tag producer of
 * proxy/stats_tags.h) and stats_matcher (which stats are made at all).
 *
 * Both are process-wide and fixed at start-up, as in Envoy (a stat is named and tagged when
 * it is made, and lives across config updates): pt_stats_config_install reads them from the
 * bootstrap before anything makes a stat. Later builds of the bootstrap (LDS, reloads)
 * validate the same fields with the same parser and leave what is installed alone. */
#ifndef PT_STATS_CONFIG_H
#define PT_STATS_CONFIG_H

#include <jansson.h>

#include "proxy/config_reader.h"

typedef struct pt_stats_settings pt_stats_settings_t;

/* Parses stats_tags, use_all_default_tags and stats_matcher of the stats_config the reader
 * is positioned in (other fields are left to the caller). Returns 0, or -1 with errors in r
 * naming each field's path. With out: the result, for pt_stats_settings_install. */
int pt_stats_config_parse(pt_cfg_t *r, pt_stats_settings_t **out);
/* Makes s the process's tag producer and stats matcher (taking it). */
void pt_stats_settings_install(pt_stats_settings_t *s);
/* Reads and installs bootstrap root's stats_config. Errors are left for the full build of
 * the bootstrap to report (it reads the same fields); nothing is installed then. */
void pt_stats_config_install(json_t *root);

#endif
