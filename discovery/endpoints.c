#include "discovery/endpoints.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/config_address.h"
#include "proxy/hash.h"

static const char *const cla_unsupported[] = {"named_endpoints", NULL};
static const char *const policy_unsupported[] = {"drop_overloads", NULL};
static const char *const locality_lb_unsupported[] = {"metadata", "proximity",
                                                      "load_balancer_endpoints",
                                                      "leds_cluster_locality_config", NULL};
static const char *const lb_endpoint_unsupported[] = {"endpoint_name", NULL};
static const char *const endpoint_unsupported[] = {"health_check_config",
                                                   "additional_addresses", NULL};
/* config.core.v3.HealthStatus, in the order of pt_eds_health_t. */
static const char *const health_names[] = {"UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING",
                                           "TIMEOUT", "DEGRADED", NULL};

void pt_cla_policy_default(pt_cla_policy_t *p)
{
    memset(p, 0, sizeof(*p));
    p->overprovisioning_factor = 140;
}

/* ClusterLoadAssignment.policy (reader in the assignment). */
static void parse_policy(pt_cfg_t *r, pt_cla_policy_t *p)
{
    pt_cla_policy_default(p);
    if (pt_cfg_enter(r, "policy") <= 0)
        return;
    pt_cfg_unsupported(r, policy_unsupported);
    uint64_t v;
    /* Envoy's validation: greater than 0 (a factor of 0 would make every level unavailable
     * however healthy). */
    if (pt_cfg_uint(r, "overprovisioning_factor", &v, 140, 0, UINT32_MAX) > 0 && v == 0)
        pt_cfg_error(r, "overprovisioning_factor", "must be greater than 0 (a percentage: "
                                                   "140 is Envoy's default)");
    p->overprovisioning_factor = v ? (uint32_t)v : 140;
    if (pt_cfg_duration_ms(r, "endpoint_stale_after", &p->endpoint_stale_after_ms, 0) > 0 &&
        p->endpoint_stale_after_ms == 0)
        pt_cfg_error(r, "endpoint_stale_after", "must be greater than 0");
    pt_cfg_bool(r, "weighted_priority_health", &p->weighted_priority_health, 0);
    pt_cfg_leave(r);
}

/* The LocalityLbEndpoints seen so far by priority and locality, to find one listed twice
 * with different weights. */
typedef struct seen_locality {
    uint32_t priority, weight;
    pt_locality_t loc;
    size_t index;
    int used;
} seen_locality_t;

static uint64_t locality_hash(uint32_t priority, const pt_locality_t *l)
{
    uint64_t h = priority * 0x9e3779b97f4a7c15ull;
    h ^= pt_hash_name(l->region) * 3 + pt_hash_name(l->zone) * 5 + pt_hash_name(l->sub_zone) * 7;
    return h;
}

static void locality_string(const pt_locality_t *l, char *out, size_t len)
{
    snprintf(out, len, "{region: \"%s\", zone: \"%s\", sub_zone: \"%s\"}", l->region, l->zone,
             l->sub_zone);
}

/* Records entry `index`'s (priority, locality, weight); an error when the same pair came
 * before with another weight (Envoy would keep one of them silently). */
static void check_locality(pt_cfg_t *r, seen_locality_t *seen, size_t cap, size_t index,
                           uint32_t priority, const pt_locality_t *l, uint32_t weight)
{
    if (cap == 0)
        return;
    for (size_t k = locality_hash(priority, l) & (cap - 1);; k = (k + 1) & (cap - 1)) {
        seen_locality_t *s = &seen[k];
        if (!s->used) {
            *s = (seen_locality_t){priority, weight, *l, index, 1};
            return;
        }
        if (s->priority == priority && pt_locality_equal(&s->loc, l)) {
            if (s->weight != weight) {
                char buf[512];
                locality_string(l, buf, sizeof(buf));
                pt_cfg_error(r, "load_balancing_weight",
                             "%u differs from the weight %u endpoints[%zu] gives the same "
                             "locality %s at priority %u (one locality, one weight)",
                             weight, s->weight, s->index, buf, priority);
            }
            return;
        }
    }
}

/* LbEndpoint.metadata (reader in the LbEndpoint): kept as canonical JSON text. */
static const char *parse_metadata(pt_cfg_t *r, pt_arena_t *arena)
{
    json_t *md = pt_cfg_get(r, "metadata");
    if (md == NULL)
        return NULL;
    if (!json_is_object(md)) {
        pt_cfg_error(r, "metadata", "must be an object (config.core.v3.Metadata)");
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(md, key, v) {
        if (strcmp(key, "filter_metadata") != 0 && strcmp(key, "typed_filter_metadata") != 0) {
            pt_cfg_error(r, "metadata", "unknown field \"%s\" (expected filter_metadata or "
                                        "typed_filter_metadata)", key);
            return NULL;
        }
        const char *ns;
        json_t *inner;
        if (!json_is_object(v)) {
            pt_cfg_error(r, "metadata", "%s must be a map of namespaces to objects", key);
            return NULL;
        }
        json_object_foreach(v, ns, inner) {
            if (!json_is_object(inner)) {
                pt_cfg_error(r, "metadata", "%s[\"%s\"] must be an object", key, ns);
                return NULL;
            }
        }
    }
    if (json_object_size(md) == 0)
        return NULL;
    char *text = pt_json_canonical(md);
    const char *kept = text != NULL ? pt_arena_strdup(arena, text) : NULL;
    free(text);
    if (kept == NULL)
        pt_cfg_error(r, "metadata", "out of memory");
    return kept;
}

static int parse(pt_cfg_t *r, pt_arena_t *arena, int names, pt_endpoints_t *out)
{
    size_t errors_before = r->nerrors;
    memset(out, 0, sizeof(*out));
    pt_cfg_unsupported(r, cla_unsupported);
    const char *cn;
    /* Envoy ignores a mismatching cluster_name in a static assignment. */
    pt_cfg_string(r, "cluster_name", &cn, NULL);
    parse_policy(r, &out->policy);

    /* Count hosts first so the array is allocated once. */
    unsigned total = 0;
    size_t nlocal = 0;
    json_t *eps = pt_cfg_get(r, "endpoints");
    if (json_is_array(eps)) {
        size_t i;
        json_t *le;
        nlocal = json_array_size(eps);
        json_array_foreach(eps, i, le) {
            json_t *lbe = json_object_get(le, "lb_endpoints");
            if (lbe == NULL)
                lbe = json_object_get(le, "lbEndpoints");
            if (json_is_array(lbe))
                total += (unsigned)json_array_size(lbe);
        }
    }
    out->endpoints = pt_arena_alloc(arena, (total ? total : 1) * sizeof(pt_endpoint_t));
    if (nlocal > 65535)
        pt_cfg_error(r, "endpoints", "has %zu localities (at most 65535)", nlocal);
    size_t cap = 0;
    while (cap < 2 * nlocal)
        cap = cap ? cap * 2 : 16;
    seen_locality_t *seen = cap ? calloc(cap, sizeof(*seen)) : NULL;
    if (cap && seen == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        cap = 0;
    }

    int eps_present;
    size_t n = pt_cfg_array(r, "endpoints", &eps_present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        pt_cfg_unsupported(r, locality_lb_unsupported);
        uint64_t priority, lweight;
        pt_cfg_uint(r, "priority", &priority, 0, 0, 128);
        /* Unset: no weight (a locality without one takes no load under
         * locality_weighted_lb_config). */
        pt_cfg_uint(r, "load_balancing_weight", &lweight, 0, 1, UINT32_MAX);
        pt_locality_t loc = {"", "", ""};
        if (pt_cfg_enter(r, "locality") > 0) {
            const char *s;
            pt_cfg_string(r, "region", &s, "");
            loc.region = pt_arena_strdup(arena, s);
            pt_cfg_string(r, "zone", &s, "");
            loc.zone = pt_arena_strdup(arena, s);
            pt_cfg_string(r, "sub_zone", &s, "");
            loc.sub_zone = pt_arena_strdup(arena, s);
            pt_cfg_leave(r);
            if (loc.region == NULL || loc.zone == NULL || loc.sub_zone == NULL) {
                pt_cfg_error(r, NULL, "out of memory");
                loc = (pt_locality_t){"", "", ""};
            }
        }
        check_locality(r, seen, cap, i, (uint32_t)priority, &loc, (uint32_t)lweight);
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
            h->locality = loc;
            h->locality_weight = (uint32_t)lweight;
            int health;
            pt_cfg_enum(r, "health_status", health_names, NULL, &health, PT_EDS_UNKNOWN);
            h->health = (pt_eds_health_t)health;
            h->metadata = parse_metadata(r, arena);
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
    free(seen);
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
