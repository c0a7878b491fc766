/* RDS (main thread): route configurations that HTTP connection managers name instead of
 * holding inline (`rds: {config_source, route_config_name}`), read from files.
 *
 * Each name gets a slot (pt_rds_slot), fixed for the life of the process, so a request finds
 * its route configuration in the view by index. A file (a DiscoveryResponse of
 * RouteConfigurations) is read once for every name it serves; a change is applied to the
 * names it contains, all of them or, when one is invalid, none (RouteConfigurations missing
 * from a change are unchanged, as in Envoy's RDS). Each applied change is handed to the
 * publish callback, which builds the next view (proxy/view.h). A request resolves its route
 * configuration when it starts: the next request on a keep-alive connection sees a change. */
#ifndef PT_ROUTE_MANAGER_H
#define PT_ROUTE_MANAGER_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/config_source.h"
#include "proxy/route.h"

typedef struct pt_route_manager pt_route_manager_t;
struct ev_loop;

/* The slot of a route configuration name, made on first use (main thread). */
unsigned pt_rds_slot(const char *name);
/* Frees the slot registry (at exit). */
void pt_rds_slots_dispose(void);

pt_route_manager_t *pt_route_manager_new(void (*publish)(void *data), void *data,
                                         pt_cluster_exists_fn exists, void *exists_data);
void pt_route_manager_free(pt_route_manager_t *rm);

/* An HTTP connection manager (stat_prefix) needs route configuration `name` from `src`:
 * the file is subscribed to (and read, now) on first need. 0, or -1 with err when the file
 * cannot be read or is invalid (a config error at start). */
int pt_route_manager_want(pt_route_manager_t *rm, const pt_config_source_t *src,
                          const char *name, const char *stat_prefix, char *err, size_t errlen);
/* From here on its files are watched on loop. */
void pt_route_manager_set_loop(pt_route_manager_t *rm, struct ev_loop *loop);

/* Whether route configuration `name` is from a control plane, has not come, and its source's
 * initial_fetch_timeout has not run out (nor its first update been rejected): a listener
 * whose connection manager names it warms meanwhile, as Envoy's does. *until (when given)
 * is lowered to when that ends (monotonic ms). rm may be NULL (no RDS: never). */
int pt_route_manager_warming(const pt_route_manager_t *rm, const char *name, uint64_t now_ms,
                             uint64_t *until);

/* The route configurations in force by slot (NULL where none has come); n slots. */
pt_route_config_t *const *pt_route_manager_routes(pt_route_manager_t *rm, unsigned *n);

typedef struct pt_route_entry_info {
    const char *name;
    const char *version_info;
    double last_updated;
    json_t *source;           /* borrowed */
} pt_route_entry_info_t;
void pt_route_manager_foreach(pt_route_manager_t *rm,
                              void (*fn)(void *data, const pt_route_entry_info_t *e), void *data);

#endif
