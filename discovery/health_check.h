/* Active health checking (envoy.config.core.v3.HealthCheck): the main thread probes every
 * host of a cluster on a schedule and marks hosts healthy or unhealthy; load balancers on
 * the workers skip unhealthy hosts (the PT_HOST_FAILED_ACTIVE_HC bit). */
#ifndef PT_HEALTH_CHECK_H
#define PT_HEALTH_CHECK_H

#include <ev.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"

typedef struct pt_config pt_config_t;
typedef struct pt_worker pt_worker_t;
typedef struct pt_health_check_config pt_health_check_config_t;

/* Parses the `field` list of HealthCheck (the reader is inside the cluster). Sets *out and
 * *n (0 when absent). Returns 0 or -1 with errors recorded. */
int pt_health_checks_parse(pt_cfg_t *r, pt_arena_t *a, const char *field,
                           pt_health_check_config_t **out, unsigned *n);

#endif
