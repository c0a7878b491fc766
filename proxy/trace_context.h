/* Trace context on the wire, and Envoy's x-request-id trace bits: pure functions, no state,
 * so the parsers are unit-tested and fuzzable alone.
 *
 *  - W3C Trace Context (`traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex
 *    flags>`, `tracestate` passed on untouched);
 *  - B3, as Zipkin defines it: multi-header (x-b3-traceid, x-b3-spanid, x-b3-parentspanid,
 *    x-b3-sampled, x-b3-flags) and single (`b3: {traceid}-{spanid}[-{sampled}[-{parent}]]`,
 *    or `b3: {sampled}` alone);
 *  - Envoy's UUID request id (x-request-id): the character at offset 14, '4' in a fresh
 *    version-4 UUID, carries the trace decision ('9' sampled, 'a' forced, 'b' client), and the
 *    first 8 hex digits are the integer random sampling compares against.
 *
 * Input that does not parse is rejected as a whole (-1): a half-read context would join a
 * request to a trace it does not belong to. */
#ifndef PT_TRACE_CONTEXT_H
#define PT_TRACE_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

typedef struct pt_trace_ctx {
    uint64_t trace_hi, trace_lo; /* trace_hi 0: a 64-bit trace id */
    uint64_t span_id;            /* the caller's span: the parent of ours */
    uint64_t parent_id;          /* B3 only: the caller's parent (0: none) */
    int sampled;                 /* -1: the caller did not say, else 0 / 1 */
    int debug;                   /* B3 x-b3-flags: 1 / `d`: sampled, and forced */
} pt_trace_ctx_t;

/* `traceparent`. Version 00 exactly (55 characters); a later version is read for its first
 * four fields as the spec asks. All-zero trace or parent ids are invalid. 0 or -1. */
int pt_trace_parse_traceparent(const char *v, pt_trace_ctx_t *out);
/* Single-header `b3`. 0, or -1; a sampling-only value ("0", "1", "d") gives span_id 0. */
int pt_trace_parse_b3(const char *v, pt_trace_ctx_t *out);
/* The multi-header B3 values (each may be NULL). 0, or -1 when trace and span ids are not
 * both present and valid (out->sampled may still be set: a sampling decision alone). */
int pt_trace_parse_b3_multi(const char *trace_id, const char *span_id, const char *parent_id,
                            const char *sampled, const char *flags, pt_trace_ctx_t *out);

/* Lowercase hex: 16 digits of v, NUL-terminated. */
void pt_trace_hex64(uint64_t v, char out[17]);
/* The trace id in hex: 32 digits, or 16 when hi is 0 and `short_ok`. Returns the length. */
size_t pt_trace_id_hex(uint64_t hi, uint64_t lo, int short_ok, char out[33]);
/* `00-<trace>-<span>-<flags>`: 55 characters plus NUL. */
void pt_trace_format_traceparent(uint64_t hi, uint64_t lo, uint64_t span, int sampled,
                                 char out[56]);
/* A non-zero random id. */
uint64_t pt_trace_new_id(void);

/* Envoy's trace reasons, as the x-request-id carries them. */
typedef enum pt_trace_status {
    PT_TRACE_NONE,    /* '4' (or not a UUID) */
    PT_TRACE_SAMPLED, /* '9': random_sampling chose it */
    PT_TRACE_FORCED,  /* 'a': x-envoy-force-trace */
    PT_TRACE_CLIENT,  /* 'b': x-client-trace-id and client_sampling */
} pt_trace_status_t;

/* A FractionalPercent; a Percent p is {p * 100, 10000}. */
typedef struct pt_fraction {
    uint32_t num, den;
} pt_fraction_t;

/* What Envoy decides for a request (ConnectionManagerUtility::mutateTracingRequestHeader),
 * from the reason its request id already carries (`was`), the id's integer, whether it has
 * x-client-trace-id and an x-envoy-force-trace petrel honours, and `client_draw`, a random
 * number for client_sampling: a reason already there stays; else client, forced, then
 * random_sampling on (integer % 10000); then overall_sampling on the same value can undo
 * any of them. */
pt_trace_status_t pt_trace_decide(pt_trace_status_t was, uint64_t rid_integer, int client_id,
                                  int force, uint64_t client_draw, pt_fraction_t client,
                                  pt_fraction_t random, pt_fraction_t overall);

/* The reason a request id carries; NONE for anything but a 36-character UUID. */
pt_trace_status_t pt_trace_rid_status(const char *rid);
/* The same for a request id of known length. */
pt_trace_status_t pt_trace_rid_status_n(const char *rid, size_t len);
/* Writes the reason into a 36-character UUID (rid is modified): 0, or -1 when rid is not
 * one (it is left alone, as Envoy does). */
int pt_trace_rid_set_status(char *rid, pt_trace_status_t st);
/* The request id's first 8 hex digits as an integer: 0, or -1 (too short, not hex). */
int pt_trace_rid_integer(const char *rid, uint64_t *out);
/* The same for a request id of known length. */
int pt_trace_rid_integer_n(const char *rid, size_t len, uint64_t *out);

#endif
