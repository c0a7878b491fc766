/* The runtime (layered_runtime's static layers): the keys petrel reads besides the connection
 * limits (proxy/overload.h), applied once from the bootstrap before anything else of it is
 * parsed, since they change how the rest is read (regex limits) or served:
 *
 *  - re2.max_program_size.error_level / .warn_level: regex limits (proxy/matcher.h);
 *  - feature flags Envoy's and Istio's / Envoy Gateway's bootstraps set, each either honoured
 *    or accepted because petrel always behaves one way and either value describes a config
 *    petrel serves the same (docs/configuration.md, "Runtime"): a value petrel cannot honour is
 *    an error naming the key.
 *
 * Values are what Envoy's runtime takes: numbers, booleans, or strings that spell them. */
#ifndef PT_RUNTIME_H
#define PT_RUNTIME_H

#include <jansson.h>
#include <stdint.h>

#include "proxy/config_reader.h"

/* The flags petrel honours, read by every thread, written only before the workers start. */
typedef struct pt_runtime_flags {
    /* envoy.reloadable_features.http_reject_path_with_fragment (default true): a request
     * target with a '#' fragment is refused (400); false strips the fragment instead. */
    int reject_path_with_fragment;
    /* tracing.zipkin.min_flush_spans (default 5) and tracing.zipkin.flush_interval_ms
     * (default 5000): a tracer reports when it holds that many spans, or that long after
     * its last report. */
    uint64_t zipkin_min_flush_spans;
    uint64_t zipkin_flush_interval_ms;
    /* tracing.opentelemetry.min_flush_spans / flush_interval_ms: the same for OTLP. */
    uint64_t otel_min_flush_spans;
    uint64_t otel_flush_interval_ms;
} pt_runtime_flags_t;

extern pt_runtime_flags_t pt_runtime;

/* Applies the bootstrap's runtime (defaults for what it does not set). */
void pt_runtime_apply_early(json_t *bootstrap);
/* A runtime value as a non-negative integer (a number, or a string of digits): 0, or -1. */
int pt_runtime_uint(json_t *v, uint64_t *out);
/* Checks one flattened runtime key that this module owns, its value v. 1 when it is one of
 * them (an error about its value recorded in r, the reader at the layer), 0 when it is not. */
int pt_runtime_check_key(pt_cfg_t *r, const char *key, json_t *v);

#endif
