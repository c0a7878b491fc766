/* The config snapshot: an immutable, refcounted, fully validated view of the bootstrap.
 *
 * The main thread builds a snapshot from a JSON tree (pt_config_build). Building either
 * succeeds completely or reports every error with its field path and yields nothing, so no
 * half-valid config is ever visible. Workers adopt a published snapshot at their next loop
 * turn; every connection holds a reference to the snapshot it started with. All memory of a
 * snapshot lives in its arena and goes in one pt_config_unref. */
#ifndef PT_CONFIG_H
#define PT_CONFIG_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "proxy/address.h"
#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/stats.h"

typedef struct pt_cluster pt_cluster_t;
typedef struct pt_network_filter_ops pt_network_filter_ops_t;

typedef struct pt_network_filter {
    const pt_network_filter_ops_t *ops;
    const char *name; /* as written in the config */
    void *config;
} pt_network_filter_t;

typedef struct pt_filter_chain {
    const char *name;
    pt_network_filter_t *filters;
    unsigned nfilters;
} pt_filter_chain_t;

typedef struct pt_listener_stats {
    pt_stat_t downstream_cx_total;
    pt_stat_t downstream_cx_active;
    pt_stat_t downstream_cx_destroy;
    pt_stat_t no_filter_chain_match;
    pt_stat_t downstream_cx_overflow;
} pt_listener_stats_t;

typedef struct pt_listener_config {
    const char *name;
    pt_addr_t address;
    const char *stat_name;       /* stat_prefix, or the address as Envoy writes it */
    uint32_t buffer_limit;       /* per_connection_buffer_limit_bytes */
    pt_filter_chain_t *chains;
    unsigned nchains;
    pt_listener_stats_t stats;
} pt_listener_config_t;

typedef struct pt_node_info {
    const char *id;
    const char *cluster;
    const char *region, *zone, *sub_zone;
} pt_node_info_t;

typedef struct pt_config {
    _Atomic long refs;
    pt_arena_t arena;
    json_t *source;              /* the bootstrap as loaded, for /config_dump */
    uint64_t version;            /* increments with each snapshot built */
    pt_node_info_t node;
    int has_admin;
    pt_addr_t admin_address;
    pt_listener_config_t *listeners;
    unsigned nlisteners;
    pt_cluster_t **clusters;
    unsigned nclusters;
    pt_cluster_t **cluster_index; /* open-addressing hash by name, size cluster_index_cap */
    unsigned cluster_index_cap;
} pt_config_t;

/* Builds and validates a snapshot from a bootstrap tree (takes a reference to root).
 * Returns NULL when any error was found; the errors are in r. Stats are registered only
 * for a snapshot that validated. */
pt_config_t *pt_config_build(json_t *root, pt_cfg_t *r);
pt_config_t *pt_config_ref(pt_config_t *c);
void pt_config_unref(pt_config_t *c);
/* O(1) lookup of a cluster by name; NULL when absent. */
pt_cluster_t *pt_config_find_cluster(const pt_config_t *c, const char *name);

/* Parses an envoy.config.core.v3.Address holding a socket_address into out (the reader is
 * positioned at the object that has the `field`). Returns 1 if valid, 0 if absent, -1. */
int pt_config_read_address(pt_cfg_t *r, const char *field, pt_addr_t *out);

#endif
