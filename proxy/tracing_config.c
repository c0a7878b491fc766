/* Tracing config (proxy/tracing.h): the connection manager's, the route's and the
 * bootstrap's `tracing`, and the tracers, one per distinct provider config, kept in a
 * registry for the process's life. Main thread. */
#include "proxy/tracing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config.h"
#include "proxy/time.h"
#include "proxy/tracer.h"

/* ======================================================================================
 * Config
 * ====================================================================================== */

pt_tracer_t *pt_tracer_registry;

/* A Percent ({value: 0..100}) at `field`: {value * 100, 10000}; absent: `def`. */
static void parse_percent(pt_cfg_t *r, const char *field, pt_fraction_t *out, double def)
{
    double v = def;
    if (pt_cfg_enter(r, field) > 0) {
        pt_cfg_double(r, "value", &v, 0, 0, 100);
        pt_cfg_leave(r);
    }
    out->num = (uint32_t)(v * 100 + 0.5);
    out->den = 10000;
}

/* A FractionalPercent ({numerator, denominator: HUNDRED | TEN_THOUSAND | MILLION}). */
static int parse_fraction(pt_cfg_t *r, const char *field, pt_fraction_t *out)
{
    if (pt_cfg_enter(r, field) <= 0)
        return 0;
    static const char *const dens[] = {"HUNDRED", "TEN_THOUSAND", "MILLION", NULL};
    static const uint32_t den_value[] = {100, 10000, 1000000};
    uint64_t num;
    int d;
    pt_cfg_uint(r, "numerator", &num, 0, 0, UINT32_MAX);
    pt_cfg_enum(r, "denominator", dens, NULL, &d, 0);
    out->num = (uint32_t)num;
    out->den = den_value[d];
    pt_cfg_leave(r);
    return 1;
}

/* custom_tags: literal, environment, request_header (metadata and value are not
 * supported). */
static void parse_custom_tags(pt_cfg_t *r, pt_arena_t *a, const pt_custom_tag_t **out,
                              unsigned *nout)
{
    int present;
    size_t n = pt_cfg_array(r, "custom_tags", &present);
    if (n > PT_MAX_CUSTOM_TAGS) {
        pt_cfg_error(r, NULL, "has %zu entries; at most %d are supported", n, PT_MAX_CUSTOM_TAGS);
        n = 0;
    }
    pt_custom_tag_t *tags = pt_arena_alloc(a, (n ? n : 1) * sizeof(*tags));
    unsigned k = 0;
    for (size_t i = 0; i < n && tags != NULL; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        static const char *const tag_unsupported[] = {"metadata", "value", NULL};
        pt_cfg_unsupported(r, tag_unsupported);
        pt_custom_tag_t *t = &tags[k];
        const char *name, *v;
        if (pt_cfg_string(r, "tag", &name, NULL) == 0 || name == NULL || !name[0])
            pt_cfg_error(r, "tag", "is required");
        static const char *const kinds[] = {"literal", "environment", "request_header", NULL};
        static const char *const kinds_unsupported[] = {"metadata", "value", NULL};
        int which = pt_cfg_oneof(r, kinds, !pt_cfg_has_any(r, kinds_unsupported));
        if (which >= 0 && pt_cfg_enter(r, kinds[which]) > 0) {
            t->kind = (pt_custom_tag_kind_t)which;
            const char *key = which == 0 ? "value" : "name";
            if (pt_cfg_string(r, key, &v, NULL) == 0 || v == NULL || !v[0])
                pt_cfg_error(r, key, "is required");
            const char *def = NULL;
            if (which != 0)
                pt_cfg_string(r, "default_value", &def, NULL);
            if (v != NULL && which == PT_TAG_ENVIRONMENT) {
                /* Read once, as Envoy does when it builds the config. */
                const char *env = getenv(v);
                t->value = pt_arena_strdup(a, env != NULL ? env : def);
            } else if (v != NULL && which == PT_TAG_REQUEST_HEADER) {
                char *lower = pt_arena_strdup(a, v);
                for (char *p = lower; p && *p; p++)
                    *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
                t->value = lower;
            } else {
                t->value = pt_arena_strdup(a, v ? v : "");
            }
            t->default_value = def != NULL ? pt_arena_strdup(a, def) : NULL;
            pt_cfg_leave(r);
            if (name != NULL && name[0]) {
                t->tag = pt_arena_strdup(a, name);
                k++;
            }
        }
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    *out = tags;
    *nout = k;
}

pt_tracing_config_t *pt_tracing_config_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    if (pt_cfg_enter(r, "tracing") <= 0)
        return NULL;
    static const char *const unsupported[] = {"operation_name", "request_headers_for_tags",
                                              "operation", "upstream_operation", NULL};
    pt_cfg_unsupported(r, unsupported);
    pt_arena_t *a = &cfg->arena;
    pt_tracing_config_t *tc = pt_arena_alloc(a, sizeof(*tc));
    if (tc == NULL) {
        pt_cfg_leave(r);
        return NULL;
    }
    parse_percent(r, "client_sampling", &tc->client_sampling, 100);
    parse_percent(r, "random_sampling", &tc->random_sampling, 100);
    parse_percent(r, "overall_sampling", &tc->overall_sampling, 100);
    int verbose;
    if (pt_cfg_bool(r, "verbose", &verbose, 0) > 0 && verbose)
        pt_cfg_error(r, "verbose", "true is not supported (petrel records no span events)");
    uint64_t v;
    pt_cfg_uint(r, "max_path_tag_length", &v, 256, 0, UINT32_MAX);
    tc->max_path_tag_length = (uint32_t)v;
    pt_cfg_bool(r, "spawn_upstream_span", &tc->spawn_upstream_span, 0);
    parse_custom_tags(r, a, &tc->tags, &tc->ntags);
    if (pt_cfg_enter(r, "provider") > 0) {
        tc->tracer = pt_tracer_parse(r, cfg);
        pt_cfg_leave(r);
    } else {
        tc->tracer = cfg->tracer; /* the bootstrap's, as Envoy falls back to it */
    }
    pt_cfg_leave(r);
    /* No provider anywhere: Envoy traces nothing, and so the stream pays nothing. */
    return tc->tracer != NULL ? tc : NULL;
}

pt_route_tracing_t *pt_route_tracing_parse(pt_cfg_t *r, pt_arena_t *a)
{
    if (!pt_cfg_has(r, "decorator") && !pt_cfg_has(r, "tracing"))
        return NULL;
    pt_route_tracing_t *rt = pt_arena_alloc(a, sizeof(*rt));
    if (rt == NULL)
        return NULL;
    rt->propagate = 1;
    if (pt_cfg_enter(r, "decorator") > 0) {
        const char *op;
        if (pt_cfg_string(r, "operation", &op, NULL) == 0 || op == NULL || !op[0])
            pt_cfg_error(r, "operation", "is required");
        rt->operation = op != NULL && op[0] ? pt_arena_strdup(a, op) : NULL;
        pt_cfg_bool(r, "propagate", &rt->propagate, 1);
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "tracing") > 0) {
        rt->has_client = parse_fraction(r, "client_sampling", &rt->client_sampling);
        rt->has_random = parse_fraction(r, "random_sampling", &rt->random_sampling);
        rt->has_overall = parse_fraction(r, "overall_sampling", &rt->overall_sampling);
        parse_custom_tags(r, a, &rt->tags, &rt->ntags);
        pt_cfg_leave(r);
    }
    return rt;
}

static void tracer_stats(pt_tracer_t *t)
{
    char name[64];
#define PT_X(f)                                                                                    \
    snprintf(name, sizeof(name), "%s." #f, t->provider);                                           \
    t->stats.f = pt_stats_counter("tracing", NULL, NULL, name);
    PT_X(spans_sent)
    PT_X(reports_sent)
    PT_X(reports_dropped)
    PT_X(reports_failed)
    PT_X(timer_flushed)
    PT_X(reports_skipped_no_cluster)
    PT_X(spans_dropped)
#undef PT_X
}

void pt_tracer_free(pt_tracer_t *t)
{
    if (t == NULL)
        return;
    free(t->key);
    free(t->service_name);
    free(t->collector_cluster);
    free(t->collector_endpoint);
    free(t->collector_hostname);
    free(t->otel_service_name);
    free(t->otel_env_attrs);
    free(t->pending);
    free(t);
}

pt_tracer_t *pt_tracer_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    /* The same provider config (and service) is the same tracer: its batch and collector
     * connection survive a listener update. */
    json_t *node = r->frames[r->depth].node;
    char *dump = json_dumps(node, JSON_SORT_KEYS | JSON_COMPACT);
    char *key = NULL;
    if (dump != NULL &&
        asprintf(&key, "%s|%s", dump, cfg->node.cluster ? cfg->node.cluster : "") < 0)
        key = NULL;
    free(dump);
    if (key == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    for (pt_tracer_t *t = pt_tracer_registry; t != NULL; t = t->next) {
        if (strcmp(t->key, key) == 0) {
            free(key);
            pt_cfg_skip_rest(r);
            return t;
        }
    }
    size_t errors_before = r->nerrors;
    pt_tracer_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        free(key);
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    t->key = key;
    const char *name;
    pt_cfg_string(r, "name", &name, NULL);
    int rc;
    const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
    if (rc == 0)
        pt_cfg_error(r, "typed_config", "is required");
    if (type != NULL) {
        if (strcmp(type, "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig") == 0) {
            t->provider = "zipkin";
            t->ops = &pt_zipkin_ops;
            pt_zipkin_parse(r, cfg, t);
        } else if (strcmp(type, "type.googleapis.com/envoy.config.trace.v3."
                                "OpenTelemetryConfig") == 0) {
            t->provider = "opentelemetry";
            t->ops = &pt_otel_ops;
            pt_otel_parse(r, cfg, t);
        } else {
            pt_cfg_error(r, "@type", "\"%s\" is not a supported tracer (petrel has %s)", type,
                         "envoy.config.trace.v3.ZipkinConfig and OpenTelemetryConfig");
            pt_cfg_skip_rest(r);
        }
        pt_cfg_leave(r);
    }
    if (r->nerrors != errors_before) {
        pt_tracer_free(t);
        return NULL;
    }
    t->service_name = strdup(cfg->node.cluster ? cfg->node.cluster : "");
    if (t->service_name == NULL) {
        pt_tracer_free(t);
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    tracer_stats(t);
    t->last_flush_ms = pt_now_ms();
    t->next = pt_tracer_registry;
    pt_tracer_registry = t;
    pt_span_queue_start_drain();
    return t;
}

void pt_tracing_bootstrap_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    if (pt_cfg_enter(r, "tracing") <= 0)
        return;
    if (pt_cfg_enter(r, "http") > 0) {
        cfg->tracer = pt_tracer_parse(r, cfg);
        pt_cfg_leave(r);
    }
    pt_cfg_leave(r);
}
