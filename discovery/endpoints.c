#include "discovery/endpoints.h"

#include <string.h>

#include "proxy/config_address.h"

static const char *const cla_unsupported[] = {"policy", "named_endpoints", NULL};
static const char *const locality_lb_unsupported[] = {"metadata", "proximity",
                                                      "load_balancer_endpoints",
                                                      "leds_cluster_locality_config", NULL};
static const char *const lb_endpoint_unsupported[] = {"metadata", "health_status",
                                                      "endpoint_name", NULL};
static const char *const endpoint_unsupported[] = {"health_check_config",
                                                   "additional_addresses", NULL};

static int parse(pt_cfg_t *r, pt_arena_t *arena, int names, pt_endpoints_t *out)
{
    size_t errors_before = r->nerrors;
    memset(out, 0, sizeof(*out));
    pt_cfg_unsupported(r, cla_unsupported);
    const char *cn;
    /* Envoy ignores a mismatching cluster_name in a static assignment. */
    pt_cfg_string(r, "cluster_name", &cn, NULL);

    /* Count hosts first so the array is allocated once. */
    unsigned total = 0;
    json_t *eps = pt_cfg_get(r, "endpoints");
    if (json_is_array(eps)) {
        size_t i;
        json_t *le;
        json_array_foreach(eps, i, le) {
            json_t *lbe = json_object_get(le, "lb_endpoints");
            if (lbe == NULL)
                lbe = json_object_get(le, "lbEndpoints");
            if (json_is_array(lbe))
                total += (unsigned)json_array_size(lbe);
        }
    }
    out->endpoints = pt_arena_alloc(arena, (total ? total : 1) * sizeof(pt_endpoint_t));

    int eps_present;
    size_t n = pt_cfg_array(r, "endpoints", &eps_present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        pt_cfg_unsupported(r, locality_lb_unsupported);
        uint64_t priority, lweight;
        /* Priority failover is not implemented yet: a priority other than 0 would be
         * silently flattened, so it is refused. */
        if (pt_cfg_uint(r, "priority", &priority, 0, 0, 128) > 0 && priority != 0)
            pt_cfg_error(r, "priority", "%llu is not supported yet (only priority 0)",
                         (unsigned long long)priority);
        pt_cfg_uint(r, "load_balancing_weight", &lweight, 1, 1, UINT32_MAX);
        if (pt_cfg_enter(r, "locality") > 0) {
            const char *s;
            pt_cfg_string(r, "region", &s, NULL);
            pt_cfg_string(r, "zone", &s, NULL);
            pt_cfg_string(r, "sub_zone", &s, NULL);
            pt_cfg_leave(r);
        }
        int lbe_present;
        size_t m = pt_cfg_array(r, "lb_endpoints", &lbe_present);
        for (size_t j = 0; j < m; j++) {
            if (out->nendpoints >= total || pt_cfg_enter_index(r, j) <= 0)
                continue;
            pt_cfg_unsupported(r, lb_endpoint_unsupported);
            pt_endpoint_t *h = &out->endpoints[out->nendpoints];
            uint64_t weight;
            pt_cfg_uint(r, "load_balancing_weight", &weight, 1, 1, UINT32_MAX);
            h->weight = (uint32_t)weight;
            h->priority = (uint32_t)priority;
            int rc = pt_cfg_enter(r, "endpoint");
            if (rc > 0) {
                pt_cfg_unsupported(r, endpoint_unsupported);
                const char *hn;
                pt_cfg_string(r, "hostname", &hn, NULL);
                h->hostname = pt_arena_strdup(arena, hn);
                int got;
                if (names) {
                    const char *name;
                    unsigned port;
                    got = pt_config_read_address_or_name(r, "address", &name, &port);
                    h->dns_name = got > 0 ? pt_arena_strdup(arena, name) : NULL;
                    h->dns_port = port;
                } else {
                    got = pt_config_read_endpoint_address(r, "address", &h->address);
                }
                if (got == 0)
                    pt_cfg_error(r, "address", "is required");
                pt_cfg_leave(r);
            } else if (rc == 0) {
                pt_cfg_error(r, "endpoint", "is required");
            }
            out->nendpoints++;
            pt_cfg_leave(r);
        }
        if (lbe_present)
            pt_cfg_leave_array(r);
        pt_cfg_leave(r);
    }
    if (eps_present)
        pt_cfg_leave_array(r);
    return r->nerrors == errors_before ? 0 : -1;
}

int pt_endpoints_parse(pt_cfg_t *r, pt_arena_t *arena, const char *cluster_name,
                       pt_endpoints_t *out)
{
    (void)cluster_name;
    return parse(r, arena, 0, out);
}

int pt_endpoints_parse_names(pt_cfg_t *r, pt_arena_t *arena, pt_endpoints_t *out)
{
    return parse(r, arena, 1, out);
}
