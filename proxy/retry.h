/* Retry policies (envoy.config.route.v3.RetryPolicy) and the decisions the router makes
 * with them: which outcomes are retriable, and how long to back off before an attempt.
 *
 * Petrel's precise semantics (docs/resilience.md): num_retries counts retries, not
 * attempts (num_retries 2 = at most 3 attempts); the route timeout covers every attempt
 * and backoff; per_try_timeout bounds each attempt; a request whose body outgrew the replay
 * buffer is not retried. */
#ifndef PT_RETRY_H
#define PT_RETRY_H

#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/http.h"
#include "proxy/route.h"

enum pt_retry_on {
    PT_RETRY_5XX = 1u << 0,
    PT_RETRY_GATEWAY_ERROR = 1u << 1,
    PT_RETRY_RESET = 1u << 2,
    PT_RETRY_CONNECT_FAILURE = 1u << 3,
    PT_RETRY_RETRIABLE_4XX = 1u << 4,
    PT_RETRY_REFUSED_STREAM = 1u << 5,
    PT_RETRY_RETRIABLE_STATUS_CODES = 1u << 6,
    PT_RETRY_RETRIABLE_HEADERS = 1u << 7,
    PT_RETRY_ENVOY_RATELIMITED = 1u << 8,
    /* gRPC conditions: the grpc-status of a trailers-only response (in its head) */
    PT_RETRY_GRPC_CANCELLED = 1u << 9,
    PT_RETRY_GRPC_DEADLINE_EXCEEDED = 1u << 10,
    PT_RETRY_GRPC_INTERNAL = 1u << 11,
    PT_RETRY_GRPC_RESOURCE_EXHAUSTED = 1u << 12,
    PT_RETRY_GRPC_UNAVAILABLE = 1u << 13,
};
#define PT_RETRY_GRPC_ALL                                                                    \
    (PT_RETRY_GRPC_CANCELLED | PT_RETRY_GRPC_DEADLINE_EXCEEDED | PT_RETRY_GRPC_INTERNAL |    \
     PT_RETRY_GRPC_RESOURCE_EXHAUSTED | PT_RETRY_GRPC_UNAVAILABLE)

typedef struct pt_retry_policy {
    uint32_t retry_on;                 /* PT_RETRY_* bits */
    uint32_t num_retries;              /* default 1 */
    uint64_t per_try_timeout_ms;       /* 0 = none */
    uint64_t per_try_idle_timeout_ms;  /* 0 = none */
    uint64_t base_interval_ms;         /* default 25 */
    uint64_t max_interval_ms;          /* default 10 x base */
    int previous_hosts;                /* retry_host_predicate previous_hosts */
    uint32_t host_selection_max_attempts; /* default 1 */
    /* retry_priority envoy.retry_priorities.previous_priorities: its update_frequency, 0 when
     * there is none (retries follow the cluster's priority load). */
    uint32_t previous_priorities;
    const uint32_t *retriable_status_codes;
    unsigned nretriable_status_codes;
    const pt_header_matcher_t *retriable_headers;
    unsigned nretriable_headers;
    const pt_header_matcher_t *retriable_request_headers;
    unsigned nretriable_request_headers;
} pt_retry_policy_t;

/* Parses the RetryPolicy the reader is in. NULL with errors recorded. */
pt_retry_policy_t *pt_retry_policy_parse(pt_cfg_t *r, pt_arena_t *a);
/* Parses a retry_on list ("5xx,reset,unavailable": HTTP and gRPC conditions, as a route's
 * retry_on takes both). Unknown names: -1 with the first one in bad, and *bits still holds
 * the known ones. (x-envoy-retry-on takes the HTTP ones, x-envoy-retry-grpc-on the gRPC
 * ones: the caller masks with PT_RETRY_GRPC_ALL.) */
int pt_retry_on_parse(const char *list, uint32_t *bits, char *bad, size_t badlen);

/* What the router knows of an attempt's outcome. */
typedef enum pt_retry_outcome {
    PT_RETRY_OUTCOME_RESPONSE,        /* response headers arrived: status decides */
    PT_RETRY_OUTCOME_CONNECT_FAILURE, /* the connection never came up */
    PT_RETRY_OUTCOME_RESET,           /* reset/closed before response headers */
    PT_RETRY_OUTCOME_PER_TRY_TIMEOUT, /* no response within per_try_timeout */
    PT_RETRY_OUTCOME_REFUSED_STREAM,
} pt_retry_outcome_t;

/* Would this outcome be retried under retry_on bits `on` (the policy's, plus any from
 * x-envoy-retry-on)? extra_codes are x-envoy-retriable-status-codes. */
int pt_retry_should(const pt_retry_policy_t *p, uint32_t on, pt_retry_outcome_t outcome,
                    int status, const pt_http_headers_t *response, const uint32_t *extra_codes,
                    unsigned nextra);
/* Backoff before retry number n (1 for the first retry): uniform in
 * [0, (2^n - 1) x base_interval), capped at max_interval; `random` is uniform 64-bit. */
uint64_t pt_retry_backoff_ms(const pt_retry_policy_t *p, unsigned n, uint64_t random);

#endif
