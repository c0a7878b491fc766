/* envoy.config.core.v3.ConfigSource: where dynamic resources come from.
 *
 * From files (Envoy's filesystem subscription): `path_config_source` {path,
 * watched_directory {path}}, or the older bare `path`; or from the control plane over the
 * bootstrap's ADS stream: `ads: {}` (discovery/ads.h). A control plane of its own
 * (`api_config_source`) is reported as not supported, naming the field, so a config that
 * needs one never loads half-working. One parser for every place a ConfigSource appears
 * (bootstrap lds_config / cds_config, HCM rds, EDS clusters, SDS secrets). */
#ifndef PT_CONFIG_SOURCE_H
#define PT_CONFIG_SOURCE_H

#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"

typedef struct pt_config_source {
    int ads;                       /* from the ADS stream (path NULL) */
    const char *path;              /* the file holding a DiscoveryResponse */
    const char *watched_directory; /* NULL: the file's own directory is watched */
    uint64_t initial_fetch_timeout_ms; /* 15000 unless set (0: wait for ever) */
} pt_config_source_t;

/* Parses the ConfigSource at `field` of the current object into *out (strings in a).
 * Returns 1 when present and valid, 0 when absent, -1 with errors recorded. */
int pt_config_source_parse(pt_cfg_t *r, pt_arena_t *a, const char *field,
                           pt_config_source_t *out);

#endif
