/* A bootstrap loaded the way the server loads one (proxy/server.c): the cluster manager
 * parses the static clusters, the rest of the config is built and checked against them, and
 * once everything validated the clusters are prepared. For unit tests that need a config, its
 * clusters, or both (and the config fuzz target). */
#ifndef PT_TEST_BOOT_H
#define PT_TEST_BOOT_H

#include <stdlib.h>

#include "proxy/cluster.h"
#include "proxy/cluster_manager.h"
#include "proxy/runtime.h"
#include "proxy/config.h"
#include "proxy/view.h"

typedef struct pt_boot {
    pt_config_t *config;
    pt_view_t *view;         /* the static clusters */
    pt_cluster_t **clusters; /* view->clusters, in the bootstrap's order */
    unsigned nclusters;
} pt_boot_t;

static int pt_boot_view_has(void *data, const char *name)
{
    return pt_view_find_cluster(data, name) != NULL;
}

static inline void pt_boot_free(pt_boot_t *b)
{
    if (b == NULL)
        return;
    pt_config_unref(b->config);
    pt_view_unref(b->view);
    free(b);
}

/* The loaded bootstrap, or NULL with every error in r. */
static inline pt_boot_t *pt_test_boot(json_t *root, pt_cfg_t *r)
{
    pt_boot_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    pt_runtime_apply_early(root);
    b->view = pt_cluster_manager_parse_static(root, r);
    pt_cluster_lookup_t known = {pt_boot_view_has, b->view};
    b->config = pt_config_build(root, &known, r);
    if (b->config == NULL || b->view == NULL ||
        pt_cluster_manager_prepare_static(b->view, r) != 0) {
        pt_boot_free(b);
        return NULL;
    }
    b->clusters = b->view->clusters;
    b->nclusters = b->view->nclusters;
    return b;
}

static inline pt_cluster_t *pt_boot_find(const pt_boot_t *b, const char *name)
{
    return pt_view_find_cluster(b->view, name);
}

#endif
