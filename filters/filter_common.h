/* Small pieces the HTTP filters share (local_ratelimit, fault):
 *
 *  - envoy.type.v3.FractionalPercent and envoy.config.core.v3.RuntimeFractionalPercent:
 *    parsed into a numerator over a denominator and sampled per request with
 *    pt_random_below. petrel has no runtime layer: runtime_key is accepted and ignored,
 *    so default_value always applies.
 *  - envoy.type.v3.HttpStatus (code by number or by StatusCode enum name).
 *  - gRPC local replies: Envoy answers a gRPC request (content-type application/grpc) that
 *    it rejects itself with a trailers-only response (200, grpc-status, grpc-message)
 *    instead of an HTTP error status. */
#ifndef PT_FILTER_COMMON_H
#define PT_FILTER_COMMON_H

#include <stdint.h>

#include "proxy/config_reader.h"
#include "proxy/http.h"
#include "proxy/route.h"

typedef struct pt_http_stream pt_http_stream_t;

/* ---- FractionalPercent --------------------------------------------------------------- */

typedef struct pt_fractional_percent {
    uint32_t numerator;
    uint32_t denominator; /* 100, 10000 or 1000000 */
} pt_fractional_percent_t;

/* Reads the FractionalPercent the reader is in ({numerator, denominator}); absent fields
 * take proto defaults (0 over HUNDRED). Returns 0, or -1 with errors recorded. */
int pt_fractional_percent_parse(pt_cfg_t *r, pt_fractional_percent_t *out);
/* Reads the field `field` of the current object as a FractionalPercent. `def` is stored when
 * the field is absent. Returns 1 present, 0 absent, -1 invalid. */
int pt_fractional_percent_field(pt_cfg_t *r, const char *field, pt_fractional_percent_t *out,
                                pt_fractional_percent_t def);
/* RuntimeFractionalPercent at `field`: default_value is required, runtime_key accepted and
 * ignored. Returns 1 present, 0 absent (def stored), -1 invalid. */
int pt_runtime_fractional_percent_field(pt_cfg_t *r, const char *field,
                                        pt_fractional_percent_t *out, pt_fractional_percent_t def);
/* One Bernoulli trial: true with probability numerator/denominator (always when
 * numerator >= denominator, never when numerator is 0; no random draw in either case). */
int pt_fractional_percent_sample(const pt_fractional_percent_t *p);

/* An enum field given by name or (proto3 JSON allows it) by number: the number must be an
 * index of `values`. Same returns as pt_cfg_enum. */
int pt_cfg_enum_or_number(pt_cfg_t *r, const char *field, const char *const *values, int *out,
                          int def);

/* ---- HttpStatus ------------------------------------------------------------------------ */

/* Reads an HttpStatus object at `field` ({code: 429 | "TooManyRequests"}). The code must be
 * a defined StatusCode value other than Empty (0), as Envoy validates it. Returns 1 present,
 * 0 absent (*out = def), -1 invalid. */
int pt_http_status_field(pt_cfg_t *r, const char *field, int *out, int def);

/* ---- gRPC ------------------------------------------------------------------------------ */

/* A trailers-only gRPC answer with this grpc_status: 200, content-type application/grpc,
 * grpc-status and (when message is not empty) a percent-encoded grpc-message, plus `extra`
 * headers (may be NULL). `flags` and `details` as for pt_http_stream_local_reply, which
 * makes the same answer to a gRPC request by itself, with the status its HTTP status maps
 * to (proxy/grpc.h): this is for a filter whose config names the gRPC status. */
void pt_http_grpc_local_reply(pt_http_stream_t *s, int grpc_status, const char *message,
                              const pt_http_headers_t *extra, uint32_t flags, const char *details);

/* %UPSTREAM_TRANSPORT_FAILURE_REASON% for an upstream connection that failed with status
 * (-errno): "TLS_error:_<reason>" for a failed TLS handshake, "delayed_connect_error:_<why>"
 * for a refused or unreachable connect (spaces as "_", as Envoy writes them), NULL for a
 * timeout (no transport failure: nothing answered). In the arena. */
const char *pt_transport_failure_reason(pt_arena_t *a, int status);

#endif
