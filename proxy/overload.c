#include "proxy/overload.h"

#include <string.h>

#include "proxy/log.h"
#include "proxy/runtime.h"

#define GLOBAL_KEY "overload.global_downstream_max_connections"
#define LISTENER_KEY_PREFIX "envoy.resource_limits.listener."
#define LISTENER_KEY_SUFFIX ".connection_limit"
#define MONITOR_NAME "envoy.resource_monitors.global_downstream_max_connections"
#define MONITOR_TYPE                                                                           \
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."       \
    "DownstreamConnectionsConfig"

typedef struct runtime {
    uint64_t global; /* 0: not set */
    int global_set;
} runtime_t;

static pt_listener_config_t *listener_named(pt_config_t *cfg, const char *name, size_t len)
{
    for (unsigned i = 0; i < cfg->nlisteners; i++)
        if (strlen(cfg->listeners[i].name) == len &&
            memcmp(cfg->listeners[i].name, name, len) == 0)
            return &cfg->listeners[i];
    return NULL;
}

/* One flattened runtime key with its value (the reader is at the layer). */
static void runtime_key(pt_cfg_t *r, pt_config_t *cfg, runtime_t *rt, const char *key,
                        json_t *v)
{
    if (pt_runtime_check_key(r, key, v))
        return; /* proxy/runtime.c's */
    size_t klen = strlen(key), plen = strlen(LISTENER_KEY_PREFIX),
           slen = strlen(LISTENER_KEY_SUFFIX);
    int global = strcmp(key, GLOBAL_KEY) == 0;
    int listener = klen > plen + slen && strncmp(key, LISTENER_KEY_PREFIX, plen) == 0 &&
                   strcmp(key + klen - slen, LISTENER_KEY_SUFFIX) == 0;
    if (!global && !listener) {
        pt_cfg_error(r, NULL, "runtime key %s is not supported (docs/configuration.md, "
                              "\"Runtime\", lists the keys petrel reads)", key);
        return;
    }
    uint64_t n = 0;
    if (pt_runtime_uint(v, &n) != 0) {
        pt_cfg_error(r, NULL, "runtime key %s: expected a non-negative integer", key);
        return;
    }
    if (global) {
        rt->global = n;
        rt->global_set = 1;
    } else {
        pt_listener_config_t *l = listener_named(cfg, key + plen, klen - plen - slen);
        if (l != NULL)
            l->connection_limit = n;
        else /* valid, as in Envoy: it applies to a listener of that name if there is one */
            pt_warn("%s: runtime key %s names no listener; it limits nothing", pt_cfg_path(r),
                    key);
    }
}

/* A static layer is a Struct; nested objects are dotted keys ({a: {b: 1}} is a.b). */
static void flatten(pt_cfg_t *r, pt_config_t *cfg, runtime_t *rt, const char *prefix,
                    json_t *node)
{
    const char *k;
    json_t *v;
    json_object_foreach(node, k, v) {
        char key[512];
        snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", k);
        if (json_is_object(v))
            flatten(r, cfg, rt, key, v);
        else
            runtime_key(r, cfg, rt, key, v);
    }
}

static void parse_runtime(pt_cfg_t *r, pt_config_t *cfg, runtime_t *rt)
{
    if (pt_cfg_enter(r, "layered_runtime") <= 0)
        return;
    int present;
    size_t n = pt_cfg_array(r, "layers", &present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        static const char *const unsupported[] = {"disk_layer", "rtds_layer", NULL};
        pt_cfg_unsupported(r, unsupported);
        /* The admin layer holds what /runtime_modify sets; petrel's admin has no such
         * endpoint, so it stays empty, as it starts in Envoy (Istio's bootstraps list it). */
        if (pt_cfg_enter(r, "admin_layer") > 0)
            pt_cfg_leave(r);
        const char *name;
        pt_cfg_string(r, "name", &name, NULL);
        json_t *layer = pt_cfg_get(r, "static_layer");
        if (layer != NULL && !json_is_object(layer))
            pt_cfg_error(r, "static_layer", "is not an object");
        else if (layer != NULL)
            flatten(r, cfg, rt, "", layer); /* later layers override earlier ones */
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    pt_cfg_leave(r);
}

/* overload_manager: only the global downstream connections monitor. Returns its limit, or
 * 0 when there is none. */
static uint64_t parse_overload_manager(pt_cfg_t *r)
{
    if (pt_cfg_enter(r, "overload_manager") <= 0)
        return 0;
    static const char *const unsupported[] = {"buffer_factory_config", "loadshed_points",
                                              NULL};
    pt_cfg_unsupported(r, unsupported);
    uint64_t ms, limit = 0;
    pt_cfg_duration_ms(r, "refresh_interval", &ms, 1000); /* the monitor is proactive */
    int present;
    size_t n = pt_cfg_array(r, "actions", &present);
    if (n > 0)
        pt_cfg_error(r, NULL, "overload actions are not supported");
    if (present)
        pt_cfg_leave_array(r);
    n = pt_cfg_array(r, "resource_monitors", &present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        const char *name;
        pt_cfg_string(r, "name", &name, NULL);
        if (name == NULL || strcmp(name, MONITOR_NAME) != 0) {
            pt_cfg_error(r, "name", "\"%s\" is not supported (only " MONITOR_NAME ")",
                         name ? name : "");
            pt_cfg_skip_rest(r);
            pt_cfg_leave(r);
            continue;
        }
        int rc;
        const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
        if (type == NULL) {
            if (rc == 0)
                pt_cfg_error(r, "typed_config", "is required");
        } else if (strcmp(type, MONITOR_TYPE) != 0) {
            pt_cfg_error(r, "@type", "\"%s\" is not the type of " MONITOR_NAME, type);
            pt_cfg_skip_rest(r);
            pt_cfg_leave(r);
        } else {
            if (pt_cfg_uint(r, "max_active_downstream_connections", &limit, 0, 1,
                            UINT32_MAX) == 0)
                pt_cfg_error(r, "max_active_downstream_connections", "is required");
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    pt_cfg_leave(r);
    return limit;
}

void pt_overload_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    runtime_t rt = {0};
    parse_runtime(r, cfg, &rt);
    uint64_t monitor = parse_overload_manager(r);
    /* Both: Envoy warns and takes the overload manager's. */
    if (monitor > 0 && rt.global_set)
        pt_warn("the global downstream connection limit is set both by the runtime key "
                GLOBAL_KEY " (%llu) and by " MONITOR_NAME " (%llu): using the overload "
                "manager's", (unsigned long long)rt.global, (unsigned long long)monitor);
    cfg->max_downstream_connections = monitor > 0 ? monitor : rt.global;
    cfg->max_downstream_from_overload_manager = monitor > 0;
}
