#include "proxy/retry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    uint32_t bit;
} retry_names[] = {
    {"5xx", PT_RETRY_5XX},
    {"gateway-error", PT_RETRY_GATEWAY_ERROR},
    {"reset", PT_RETRY_RESET},
    {"connect-failure", PT_RETRY_CONNECT_FAILURE},
    {"retriable-4xx", PT_RETRY_RETRIABLE_4XX},
    {"refused-stream", PT_RETRY_REFUSED_STREAM},
    {"retriable-status-codes", PT_RETRY_RETRIABLE_STATUS_CODES},
    {"retriable-headers", PT_RETRY_RETRIABLE_HEADERS},
    {"envoy-ratelimited", PT_RETRY_ENVOY_RATELIMITED},
    {"cancelled", PT_RETRY_GRPC_CANCELLED},
    {"deadline-exceeded", PT_RETRY_GRPC_DEADLINE_EXCEEDED},
    {"internal", PT_RETRY_GRPC_INTERNAL},
    {"resource-exhausted", PT_RETRY_GRPC_RESOURCE_EXHAUSTED},
    {"unavailable", PT_RETRY_GRPC_UNAVAILABLE},
};

/* The gRPC status of a trailers-only response, as Envoy reads it for retries: -1 when the
 * head has none (a response with a body has it in its trailers, too late to retry). */
static int grpc_status_of(const pt_http_headers_t *response)
{
    const char *v = response != NULL ? pt_http_headers_get(response, "grpc-status") : NULL;
    if (v == NULL || v[0] < '0' || v[0] > '9')
        return -1;
    char *end;
    long n = strtol(v, &end, 10);
    return *end == '\0' && n <= 16 ? (int)n : -1;
}

int pt_retry_on_parse(const char *list, uint32_t *bits, char *bad, size_t badlen)
{
    int rc = 0;
    *bits = 0;
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *t = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        size_t n = (size_t)(p - t);
        if (n == 0)
            continue;
        int found = 0;
        for (size_t i = 0; i < sizeof(retry_names) / sizeof(retry_names[0]); i++) {
            if (strlen(retry_names[i].name) == n && strncmp(retry_names[i].name, t, n) == 0) {
                *bits |= retry_names[i].bit;
                found = 1;
            }
        }
        /* Keep going: the caller may use the known names (a request header) even when one
         * is unknown (which a config treats as an error). */
        if (!found && rc == 0) {
            snprintf(bad, badlen, "%.*s", (int)n, t);
            rc = -1;
        }
    }
    return rc;
}

static const pt_header_matcher_t *parse_matchers(pt_cfg_t *r, pt_arena_t *a, const char *field,
                                                 unsigned *n)
{
    int present;
    size_t count = pt_cfg_array(r, field, &present);
    *n = 0;
    if (!present)
        return NULL;
    pt_header_matcher_t *m = pt_arena_alloc(a, (count ? count : 1) * sizeof(*m));
    for (size_t i = 0; i < count; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        if (pt_header_matcher_parse(r, a, &m[*n]) == 0)
            (*n)++;
        pt_cfg_leave(r);
    }
    pt_cfg_leave_array(r);
    return m;
}

#define PREVIOUS_PRIORITIES_TYPE                                                               \
    "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."             \
    "PreviousPrioritiesConfig"

/* retry_priority (reader in the RetryPolicy): Envoy's one retry priority plugin,
 * previous_priorities, whose update_frequency must be above 0. */
static void parse_retry_priority(pt_cfg_t *r, pt_retry_policy_t *p)
{
    if (pt_cfg_enter(r, "retry_priority") <= 0)
        return;
    const char *name;
    pt_cfg_string(r, "name", &name, NULL);
    int rc;
    const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
    if (type == NULL) {
        if (rc == 0)
            pt_cfg_error(r, "typed_config", "is required (a PreviousPrioritiesConfig)");
    } else if (strcmp(type, PREVIOUS_PRIORITIES_TYPE) != 0) {
        pt_cfg_error(r, "@type", "\"%s\" is not a retry priority petrel has (only "
                                 "envoy.retry_priorities.previous_priorities)", type);
        pt_cfg_skip_rest(r);
        pt_cfg_leave(r);
    } else {
        int64_t f = 0;
        int got = pt_cfg_int64(r, "update_frequency", &f);
        if (got >= 0 && (f <= 0 || f > INT32_MAX))
            pt_cfg_error(r, "update_frequency", "must be greater than 0 (an int32)");
        else if (got > 0)
            p->previous_priorities = (uint32_t)f;
        pt_cfg_leave(r);
    }
    pt_cfg_leave(r);
}

pt_retry_policy_t *pt_retry_policy_parse(pt_cfg_t *r, pt_arena_t *a)
{
    size_t errors_before = r->nerrors;
    static const char *const unsupported[] = {"rate_limited_retry_back_off",
                                              "retry_options_predicates", NULL};
    pt_cfg_unsupported(r, unsupported);
    pt_retry_policy_t *p = pt_arena_alloc(a, sizeof(*p));
    if (p == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    parse_retry_priority(r, p);
    const char *on;
    if (pt_cfg_string(r, "retry_on", &on, NULL) > 0) {
        char bad[64];
        if (pt_retry_on_parse(on, &p->retry_on, bad, sizeof(bad)) != 0)
            pt_cfg_error(r, "retry_on", "\"%s\" is not a retry condition petrel knows "
                                        "(5xx, gateway-error, reset, connect-failure, "
                                        "retriable-4xx, refused-stream, "
                                        "retriable-status-codes, retriable-headers, "
                                        "envoy-ratelimited)", bad);
    }
    uint64_t v;
    pt_cfg_uint(r, "num_retries", &v, 1, 0, 1000);
    p->num_retries = (uint32_t)v;
    pt_cfg_duration_ms(r, "per_try_timeout", &p->per_try_timeout_ms, 0);
    pt_cfg_duration_ms(r, "per_try_idle_timeout", &p->per_try_idle_timeout_ms, 0);
    p->base_interval_ms = 25;
    p->max_interval_ms = 250;
    if (pt_cfg_enter(r, "retry_back_off") > 0) {
        if (pt_cfg_duration_ms(r, "base_interval", &p->base_interval_ms, 25) == 0)
            pt_cfg_error(r, "base_interval", "is required");
        if (p->base_interval_ms == 0)
            pt_cfg_error(r, "base_interval", "must be greater than 0");
        pt_cfg_duration_ms(r, "max_interval", &p->max_interval_ms, p->base_interval_ms * 10);
        if (p->max_interval_ms < p->base_interval_ms)
            pt_cfg_error(r, "max_interval", "must not be less than base_interval");
        pt_cfg_leave(r);
    }
    int present;
    size_t n = pt_cfg_array(r, "retry_host_predicate", &present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        const char *name;
        pt_cfg_string(r, "name", &name, NULL);
        int rc;
        const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
        int prev = (name && strcmp(name, "envoy.retry_host_predicates.previous_hosts") == 0) ||
                   (type && strcmp(type, "type.googleapis.com/envoy.extensions.retry.host."
                                         "previous_hosts.v3.PreviousHostsPredicate") == 0);
        if (type != NULL)
            pt_cfg_leave(r);
        if (prev)
            p->previous_hosts = 1;
        else
            pt_cfg_error(r, NULL, "only the previous_hosts retry host predicate is supported");
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    pt_cfg_uint(r, "host_selection_retry_max_attempts", &v, 1, 1, 100);
    p->host_selection_max_attempts = (uint32_t)v;
    n = pt_cfg_array(r, "retriable_status_codes", &present);
    if (present) {
        uint32_t *codes = pt_arena_alloc(a, (n ? n : 1) * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++) {
            json_t *jv = pt_cfg_index_value(r, i);
            json_int_t c = json_is_integer(jv) ? json_integer_value(jv) : -1;
            if (c < 100 || c > 599) {
                size_t saved = strlen(pt_cfg_path(r));
                pt_cfg_push_index(r, i);
                pt_cfg_error(r, NULL, "is not an HTTP status code");
                pt_cfg_pop_path(r, saved);
                continue;
            }
            codes[p->nretriable_status_codes++] = (uint32_t)c;
        }
        p->retriable_status_codes = codes;
        pt_cfg_leave_array(r);
    }
    p->retriable_headers = parse_matchers(r, a, "retriable_headers", &p->nretriable_headers);
    p->retriable_request_headers =
        parse_matchers(r, a, "retriable_request_headers", &p->nretriable_request_headers);
    return r->nerrors == errors_before ? p : NULL;
}

static int code_listed(const uint32_t *codes, unsigned n, int status)
{
    for (unsigned i = 0; i < n; i++)
        if ((int)codes[i] == status)
            return 1;
    return 0;
}

int pt_retry_should(const pt_retry_policy_t *p, uint32_t on, pt_retry_outcome_t outcome,
                    int status, const pt_http_headers_t *response, const uint32_t *extra_codes,
                    unsigned nextra)
{
    switch (outcome) {
    case PT_RETRY_OUTCOME_CONNECT_FAILURE:
        return (on & (PT_RETRY_CONNECT_FAILURE | PT_RETRY_5XX | PT_RETRY_GATEWAY_ERROR |
                      PT_RETRY_RESET)) != 0;
    case PT_RETRY_OUTCOME_RESET:
    case PT_RETRY_OUTCOME_PER_TRY_TIMEOUT:
        return (on & (PT_RETRY_RESET | PT_RETRY_5XX | PT_RETRY_GATEWAY_ERROR)) != 0;
    case PT_RETRY_OUTCOME_REFUSED_STREAM:
        return (on & (PT_RETRY_REFUSED_STREAM | PT_RETRY_5XX | PT_RETRY_RESET |
                      PT_RETRY_GATEWAY_ERROR)) != 0;
    case PT_RETRY_OUTCOME_RESPONSE:
        break;
    }
    if ((on & PT_RETRY_5XX) && status >= 500 && status <= 599)
        return 1;
    if ((on & PT_RETRY_GATEWAY_ERROR) && (status == 502 || status == 503 || status == 504))
        return 1;
    if ((on & PT_RETRY_RETRIABLE_4XX) && status == 409)
        return 1;
    if ((on & PT_RETRY_RETRIABLE_STATUS_CODES) &&
        ((p && code_listed(p->retriable_status_codes, p->nretriable_status_codes, status)) ||
         code_listed(extra_codes, nextra, status)))
        return 1;
    if ((on & PT_RETRY_ENVOY_RATELIMITED) && response != NULL &&
        pt_http_headers_get(response, "x-envoy-ratelimited") != NULL)
        return 1;
    if (on & PT_RETRY_GRPC_ALL) {
        int g = grpc_status_of(response);
        if ((g == 1 && (on & PT_RETRY_GRPC_CANCELLED)) ||
            (g == 4 && (on & PT_RETRY_GRPC_DEADLINE_EXCEEDED)) ||
            (g == 8 && (on & PT_RETRY_GRPC_RESOURCE_EXHAUSTED)) ||
            (g == 13 && (on & PT_RETRY_GRPC_INTERNAL)) ||
            (g == 14 && (on & PT_RETRY_GRPC_UNAVAILABLE)))
            return 1;
    }
    if ((on & PT_RETRY_RETRIABLE_HEADERS) && p != NULL && response != NULL)
        for (unsigned i = 0; i < p->nretriable_headers; i++)
            if (pt_header_matcher_match(&p->retriable_headers[i], response))
                return 1;
    return 0;
}

uint64_t pt_retry_backoff_ms(const pt_retry_policy_t *p, unsigned n, uint64_t random)
{
    uint64_t base = p ? p->base_interval_ms : 25;
    uint64_t max = p ? p->max_interval_ms : 250;
    if (n == 0)
        n = 1;
    /* Envoy's fully jittered exponential backoff: uniform in [0, (2^n - 1) x base), and never
     * more than max_interval. The span saturates instead of overflowing. */
    uint64_t mult = n >= 63 ? UINT64_MAX : (1ull << n) - 1;
    uint64_t span = mult > UINT64_MAX / base ? UINT64_MAX : mult * base;
    uint64_t v = random % span;
    return v < max ? v : max;
}
