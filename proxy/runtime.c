#include "proxy/runtime.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/matcher.h"

#define RE2_ERROR_KEY "re2.max_program_size.error_level"
#define RE2_WARN_KEY "re2.max_program_size.warn_level"

pt_runtime_flags_t pt_runtime = {.reject_path_with_fragment = 1,
                                  .zipkin_min_flush_spans = 5,
                                  .zipkin_flush_interval_ms = 5000,
                                  .otel_min_flush_spans = 5,
                                  .otel_flush_interval_ms = 5000};

/* Non-negative integer keys, with their defaults and ranges. */
static const struct {
    const char *key;
    uint64_t def, min, max;
    uint64_t *value;
} uint_keys[] = {
    {"tracing.zipkin.min_flush_spans", 5, 1, 1000000, &pt_runtime.zipkin_min_flush_spans},
    {"tracing.zipkin.flush_interval_ms", 5000, 1, 3600000, &pt_runtime.zipkin_flush_interval_ms},
    {"tracing.opentelemetry.min_flush_spans", 5, 1, 1000000, &pt_runtime.otel_min_flush_spans},
    {"tracing.opentelemetry.flush_interval_ms", 5000, 1, 3600000,
     &pt_runtime.otel_flush_interval_ms},
};

/* A boolean feature flag. `honoured`: its value sets *flag. Otherwise petrel behaves one way
 * whatever the value (`fixed` says how, for the docs and the code's reader), and both values
 * are accepted because a config written for either is served alike. */
typedef struct feature {
    const char *key;
    int def;
    int *flag; /* honoured: where the value goes; NULL: accepted, fixed behaviour */
} feature_t;

static const feature_t features[] = {
    {"envoy.reloadable_features.http_reject_path_with_fragment", 1,
     &pt_runtime.reject_path_with_fragment},
    /* Extensions are found by their typed_config's @type only; with false Envoy also looks
     * them up by name when a config has no typed_config, which petrel refuses either way. */
    {"envoy.reloadable_features.no_extension_lookup_by_name", 1, NULL},
    /* petrel keeps an EDS cluster's endpoints when its Cluster changes over ADS (what the
     * cache gives Envoy); with false Envoy waits for them again. */
    {"envoy.restart_features.use_eds_cache_for_ads", 1, NULL},
    /* petrel accepts every deprecated field it implements. */
    {"envoy.features.enable_all_deprecated_features", 0, NULL},
};

#define DEPRECATED_PREFIX "envoy.deprecated_features:"

int pt_runtime_uint(json_t *v, uint64_t *out)
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

/* A runtime boolean: true/false, or a string "true"/"false" (any case), as Envoy reads them. */
static int runtime_bool(json_t *v, int *out)
{
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcasecmp(s, "true") == 0 || strcasecmp(s, "false") == 0) {
            *out = strcasecmp(s, "true") == 0;
            return 0;
        }
    }
    return -1;
}

static const feature_t *feature_of(const char *key)
{
    for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
        if (strcmp(features[i].key, key) == 0)
            return &features[i];
    return NULL;
}

int pt_runtime_check_key(pt_cfg_t *r, const char *key, json_t *v)
{
    uint64_t n;
    int b;
    if (strcmp(key, RE2_ERROR_KEY) == 0 || strcmp(key, RE2_WARN_KEY) == 0) {
        if (pt_runtime_uint(v, &n) != 0)
            pt_cfg_error(r, NULL, "runtime key %s: expected a non-negative integer", key);
        else if (n > UINT32_MAX)
            pt_cfg_error(r, NULL, "runtime key %s: %llu is over %u", key, (unsigned long long)n,
                         UINT32_MAX);
        return 1; /* in force already: pt_runtime_apply_early */
    }
    for (size_t i = 0; i < sizeof(uint_keys) / sizeof(uint_keys[0]); i++) {
        if (strcmp(key, uint_keys[i].key) != 0)
            continue;
        if (pt_runtime_uint(v, &n) != 0 || n < uint_keys[i].min || n > uint_keys[i].max)
            pt_cfg_error(r, NULL, "runtime key %s: expected an integer from %llu to %llu", key,
                         (unsigned long long)uint_keys[i].min,
                         (unsigned long long)uint_keys[i].max);
        return 1;
    }
    if (feature_of(key) != NULL || strncmp(key, DEPRECATED_PREFIX, strlen(DEPRECATED_PREFIX)) == 0) {
        if (runtime_bool(v, &b) != 0)
            pt_cfg_error(r, NULL, "runtime key %s: expected true or false", key);
        return 1;
    }
    return 0;
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

void pt_runtime_apply_early(json_t *bootstrap)
{
    uint64_t error = 100, warn = UINT32_MAX, n;
    for (size_t f = 0; f < sizeof(features) / sizeof(features[0]); f++)
        if (features[f].flag != NULL)
            *features[f].flag = features[f].def;
    for (size_t k = 0; k < sizeof(uint_keys) / sizeof(uint_keys[0]); k++)
        *uint_keys[k].value = uint_keys[k].def;
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
        if (pt_runtime_uint(layer_value(st, RE2_ERROR_KEY), &n) == 0 && n <= UINT32_MAX)
            error = n;
        if (pt_runtime_uint(layer_value(st, RE2_WARN_KEY), &n) == 0 && n <= UINT32_MAX)
            warn = n;
        for (size_t k = 0; k < sizeof(uint_keys) / sizeof(uint_keys[0]); k++)
            if (pt_runtime_uint(layer_value(st, uint_keys[k].key), &n) == 0 &&
                n >= uint_keys[k].min && n <= uint_keys[k].max)
                *uint_keys[k].value = n;
        for (size_t f = 0; f < sizeof(features) / sizeof(features[0]); f++) {
            int b;
            if (features[f].flag != NULL &&
                runtime_bool(layer_value(st, features[f].key), &b) == 0)
                *features[f].flag = b;
        }
    }
    pt_regex_set_program_size_limits((uint32_t)error, (uint32_t)warn);
}
