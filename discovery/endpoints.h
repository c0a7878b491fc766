/* ClusterLoadAssignment (envoy.config.endpoint.v3): the host list of a cluster, read the
 * same way whether it comes from a static cluster's load_assignment, a DNS cluster's, or
 * EDS: localities with their priority and weight, endpoints with their weight, health_status,
 * hostname and metadata, and the assignment's policy. */
#ifndef PT_ENDPOINTS_H
#define PT_ENDPOINTS_H

#include "proxy/arena.h"
#include "proxy/cluster.h"
#include "proxy/config_reader.h"

typedef struct pt_endpoints {
    pt_endpoint_t *endpoints;
    unsigned nendpoints;
    pt_cla_policy_t policy;
} pt_endpoints_t;

/* The defaults of ClusterLoadAssignment.policy (overprovisioning_factor 140). */
void pt_cla_policy_default(pt_cla_policy_t *p);

/* The reader is inside the ClusterLoadAssignment object; strings go into arena. Returns 0,
 * or -1 with errors. */
int pt_endpoints_parse(pt_cfg_t *r, pt_arena_t *arena, const char *cluster_name,
                       pt_endpoints_t *out);
/* The same for a DNS cluster: each endpoint's socket_address.address is a name to resolve
 * (or an IP literal), kept in dns_name with its port in dns_port; address stays empty. */
int pt_endpoints_parse_names(pt_cfg_t *r, pt_arena_t *arena, pt_endpoints_t *out);

#endif
