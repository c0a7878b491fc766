#include "proxy/overload.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/log.h"
#include "proxy/matcher.h"

#define GLOBAL_KEY "overload.global_downstream_max_connections"
#define RE2_ERROR_KEY "re2.max_program_size.error_level"
#define RE2_WARN_KEY "re2.max_program_size.warn_level"
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

/* A runtime value as a non-negative integer: Envoy's runtime reads a string that spells a
 * number as that number ("5000"), as layers written by tools often hold strings. */
static int runtime_uint(json_t *v, uint64_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *str = json_string_value(v);
        char *end;
        errno = 0;
        unsigned long long x = strtoull(str, &end, 10);
        if (isdigit((unsigned char)str[0]) && *end == '\0' && errno == 0) {
            *out = (uint64_t)x;
            return 0;
        }
    }
    return -1;
}

/* One flattened runtime key with its value (the reader is at the layer). */
static void runtime_key(pt_cfg_t *r, pt_config_t *cfg, runtime_t *rt, const char *key,
                        json_t *v)
{
    size_t klen = strlen(key), plen = strlen(LISTENER_KEY_PREFIX),
           slen = strlen(LISTENER_KEY_SUFFIX);
    int re2 = strcmp(key, RE2_ERROR_KEY) == 0 || strcmp(key, RE2_WARN_KEY) == 0;
    int global = strcmp(key, GLOBAL_KEY) == 0;
    int listener = klen > plen + slen && strncmp(key, LISTENER_KEY_PREFIX, plen) == 0 &&
                   strcmp(key + klen - slen, LISTENER_KEY_SUFFIX) == 0;
    if (!re2 && !global && !listener) {
        pt_cfg_error(r, NULL, "runtime key %s is not supported (petrel reads only "
                              GLOBAL_KEY ", " LISTENER_KEY_PREFIX "<name>"
                              LISTENER_KEY_SUFFIX ", " RE2_ERROR_KEY " and " RE2_WARN_KEY ")",
                     key);
        return;
    }
    uint64_t n = 0;
    if (runtime_uint(v, &n) != 0) {
        pt_cfg_error(r, NULL, "runtime key %s: expected a non-negative integer", key);
        return;
    }
    if (re2) {
        if (n > UINT32_MAX)
            pt_cfg_error(r, NULL, "runtime key %s: %llu is over %u", key,
                         (unsigned long long)n, UINT32_MAX);
        /* in force already: pt_runtime_apply_regex_limits */
    } else if (global) {
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
        static const char *const unsupported[] = {"disk_layer", "admin_layer", "rtds_layer",
                                                  NULL};
        pt_cfg_unsupported(r, unsupported);
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

/* The value of a dotted runtime key in a static layer ({a: {b: 1}} holds a.b), or NULL. */
static json_t *layer_value(json_t *layer, const char *key)
{
    json_t *v = json_object_get(layer, key);
    if (v != NULL)
        return v;
    for (const char *dot = strchr(key, '.'); dot != NULL; dot = strchr(dot + 1, '.')) {
        char head[256];
        size_t n = (size_t)(dot - key);
        if (n >= sizeof(head))
            break;
        memcpy(head, key, n);
        head[n] = '\0';
        json_t *sub = json_object_get(layer, head);
        if (json_is_object(sub) && (v = layer_value(sub, dot + 1)) != NULL)
            return v;
    }
    return NULL;
}

void pt_runtime_apply_regex_limits(json_t *bootstrap)
{
    uint64_t error = 100, warn = UINT32_MAX, n;
    json_t *rt = json_object_get(bootstrap, "layered_runtime");
    if (rt == NULL)
        rt = json_object_get(bootstrap, "layeredRuntime");
    json_t *layers = json_object_get(rt, "layers"), *layer;
    size_t i;
    json_array_foreach(layers, i, layer) { /* later layers win */
        json_t *st = json_object_get(layer, "static_layer");
        if (st == NULL)
            st = json_object_get(layer, "staticLayer");
        if (!json_is_object(st))
            continue;
        if (runtime_uint(layer_value(st, RE2_ERROR_KEY), &n) == 0 && n <= UINT32_MAX)
            error = n;
        if (runtime_uint(layer_value(st, RE2_WARN_KEY), &n) == 0 && n <= UINT32_MAX)
            warn = n;
    }
    pt_regex_set_program_size_limits((uint32_t)error, (uint32_t)warn);
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
}
