/* Unit tests for proxy/retry: retry_on parsing (every name, unknown names), the
 * pt_retry_should truth table for every outcome x condition, the bounds and spread of the
 * jittered exponential backoff, and RetryPolicy config errors with their exact messages.
 *
 * Policies are parsed from inline JSON (single quotes) placed at the key "rp", so error
 * paths read "rp.<field>". */
#include "proxy/retry.h"
#include "pt_test.h"
#include "pt_test_json.h"

#include <stdint.h>

/* ---- helpers ------------------------------------------------------------------------- */

static pt_arena_t arena;

/* Parses {"rp": <json>}; errors stay in r (the caller disposes it). NULL on any error. */
static pt_retry_policy_t *parse(const char *json, pt_cfg_t *r)
{
    json_t *root = json_object();
    json_object_set_new(root, "rp", J(json));
    pt_cfg_init(r, root);
    pt_retry_policy_t *p = NULL;
    if (pt_cfg_enter(r, "rp") > 0) {
        p = pt_retry_policy_parse(r, &arena);
        pt_cfg_leave(r);
    }
    pt_cfg_finish(r);
    json_decref(root);
    return pt_cfg_ok(r) ? p : NULL;
}

/* A policy that must parse; prints its errors otherwise. */
static pt_retry_policy_t *load(const char *json)
{
    pt_cfg_t r;
    pt_retry_policy_t *p = parse(json, &r);
    for (size_t i = 0; i < r.nerrors; i++)
        fprintf(stderr, "  unexpected error: %s\n", r.errors[i]);
    pt_cfg_dispose(&r);
    return p;
}

/* The errors of a policy that must not parse, joined by newlines (static buffer). */
static const char *errors_of(const char *json)
{
    static char out[4096];
    pt_cfg_t r;
    pt_retry_policy_t *p = parse(json, &r);
    out[0] = '\0';
    for (size_t i = 0; i < r.nerrors; i++) {
        size_t o = strlen(out);
        snprintf(out + o, sizeof(out) - o, "%s%s", i ? "\n" : "", r.errors[i]);
    }
    if (p != NULL && r.nerrors == 0)
        snprintf(out, sizeof(out), "(parsed without error)");
    pt_cfg_dispose(&r);
    return out;
}

/* A splitmix64 stream: deterministic "uniform" 64-bit values. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Known divergences from Envoy, reported but not failing the run (like Python's
 * unittest.expectedFailure): an expectation that starts to hold is reported as XPASS and
 * fails, so the marker gets removed when the bug is fixed. */
static int xfail_seen;
#define PT_XFAIL(cond, why)                                                                        \
    do {                                                                                           \
        if (cond) {                                                                                \
            fprintf(stderr, "%s:%d: %s: XPASS (remove the xfail): %s\n", __FILE__, __LINE__,       \
                    pt_test_current, #cond);                                                       \
            pt_test_failures++;                                                                    \
        } else {                                                                                   \
            fprintf(stderr, "%s:%d: %s: xfail (%s): %s\n", __FILE__, __LINE__, pt_test_current,    \
                    why, #cond);                                                                   \
            xfail_seen++;                                                                          \
        }                                                                                          \
    } while (0)

/* ---- retry_on ------------------------------------------------------------------------ */

static void test_retry_on_every_name(void)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } names[] = {
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
    uint32_t all = 0;
    char list[512] = "";
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        uint32_t bits = 0xdead;
        char bad[64] = "";
        PT_CHECK_INT(pt_retry_on_parse(names[i].name, &bits, bad, sizeof(bad)), 0);
        PT_CHECK_INT(bits, names[i].bit);
        all |= names[i].bit;
        size_t o = strlen(list);
        snprintf(list + o, sizeof(list) - o, "%s%s", i ? "," : "", names[i].name);
    }
    uint32_t bits;
    char bad[64];
    PT_CHECK_INT(pt_retry_on_parse(list, &bits, bad, sizeof(bad)), 0);
    PT_CHECK_INT(bits, all);
}

static void test_retry_on_lists(void)
{
    uint32_t bits;
    char bad[64];
    /* Commas, spaces and tabs separate; empty items are skipped; repeats are harmless. */
    PT_CHECK_INT(pt_retry_on_parse("5xx, reset,,\tconnect-failure ,5xx", &bits, bad, sizeof(bad)),
                 0);
    PT_CHECK_INT(bits, PT_RETRY_5XX | PT_RETRY_RESET | PT_RETRY_CONNECT_FAILURE);
    PT_CHECK_INT(pt_retry_on_parse("", &bits, bad, sizeof(bad)), 0);
    PT_CHECK_INT(bits, 0);
    PT_CHECK_INT(pt_retry_on_parse(" , ", &bits, bad, sizeof(bad)), 0);
    PT_CHECK_INT(bits, 0);
}

static void test_retry_on_unknown_names(void)
{
    static const struct {
        const char *list, *bad;
    } cases[] = {
        {"5XX", "5XX"}, /* names are case-sensitive, as in Envoy */
        {"4xx", "4xx"},
        {"5xx,bogus,reset", "bogus"}, /* the first unknown name is named */
        {"reset,gateway_error", "gateway_error"},
        {"retriable-status-code", "retriable-status-code"},
        {"5xxx", "5xxx"},
        {"unavailable,canceled", "canceled"}, /* gRPC spells it cancelled */
        {"http3-post-connect-failure", "http3-post-connect-failure"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t bits;
        char bad[64] = "";
        PT_CHECK_INT(pt_retry_on_parse(cases[i].list, &bits, bad, sizeof(bad)), -1);
        PT_CHECK_STR(bad, cases[i].bad);
    }
    /* A long unknown name is cut to the buffer, never overflowing it. */
    uint32_t bits;
    char bad[8];
    PT_CHECK_INT(pt_retry_on_parse("averyveryverylongname", &bits, bad, sizeof(bad)), -1);
    PT_CHECK_STR(bad, "averyve");
}

/* ---- pt_retry_should ----------------------------------------------------------------- */

/* Every single condition against every outcome. Statuses: 503 502 504 500 501 409 429 404
 * 200, and the "no response" outcomes. */
static void test_should_truth_table(void)
{
    /* A policy with retriable_status_codes [429] and a retriable header, so those
     * conditions have something to match. */
    pt_retry_policy_t *p = load("{'retriable_status_codes':[429],'retriable_headers':"
                                "[{'name':'x-retry-me','string_match':{'exact':'yes'}}]}");
    PT_CHECK(p != NULL);
    pt_http_headers_t plain, marked, ratelimited;
    pt_http_headers_init(&plain, &arena);
    pt_http_headers_init(&marked, &arena);
    pt_http_headers_init(&ratelimited, &arena);
    pt_http_headers_add_str(&marked, "x-retry-me", "yes");
    pt_http_headers_add_str(&ratelimited, "x-envoy-ratelimited", "true");

    static const int statuses[] = {500, 501, 502, 503, 504, 599, 409, 429, 404, 400, 200, 302};
    enum { NSTAT = sizeof(statuses) / sizeof(statuses[0]) };
    /* For each condition: which statuses retry (plain response headers), and which of the
     * no-response outcomes retry: connect failure, reset, per-try timeout, refused stream. */
    static const struct {
        uint32_t on;
        int status_retries[NSTAT];
        int connect, reset, per_try, refused;
    } rows[] = {
        /* clang-format off */
        /*                     500 501 502 503 504 599 409 429 404 400 200 302 */
        {PT_RETRY_5XX,         {1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, 1, 1, 1, 1},
        {PT_RETRY_GATEWAY_ERROR, {0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0}, 1, 1, 1, 0},
        {PT_RETRY_RESET,       {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1, 1, 1, 1},
        {PT_RETRY_CONNECT_FAILURE, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1, 0, 0, 0},
        {PT_RETRY_RETRIABLE_4XX, {0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0}, 0, 0, 0, 0},
        {PT_RETRY_REFUSED_STREAM, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0, 0, 0, 1},
        {PT_RETRY_RETRIABLE_STATUS_CODES, {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, 0, 0, 0, 0},
        {PT_RETRY_RETRIABLE_HEADERS, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0, 0, 0, 0},
        {PT_RETRY_ENVOY_RATELIMITED, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0, 0, 0, 0},
        {0,                    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0, 0, 0, 0},
        /* clang-format on */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint32_t on = rows[i].on;
        for (int k = 0; k < NSTAT; k++) {
            int got =
                pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, statuses[k], &plain, NULL, 0);
            if (got != rows[i].status_retries[k])
                fprintf(stderr, "  retry_on bit 0x%x, status %d\n", on, statuses[k]);
            PT_CHECK_INT(got, rows[i].status_retries[k]);
        }
        PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_CONNECT_FAILURE, 0, NULL, NULL, 0),
                     rows[i].connect);
        PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESET, 0, NULL, NULL, 0),
                     rows[i].reset);
        PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_PER_TRY_TIMEOUT, 0, NULL, NULL, 0),
                     rows[i].per_try);
        if (on == PT_RETRY_GATEWAY_ERROR)
            continue; /* see test_should_refused_stream_gateway_error */
        PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_REFUSED_STREAM, 0, NULL, NULL, 0),
                     rows[i].refused);
    }
    /* Header-driven conditions look at the response headers, whatever the status. */
    PT_CHECK_INT(pt_retry_should(p, PT_RETRY_RETRIABLE_HEADERS, PT_RETRY_OUTCOME_RESPONSE, 200,
                                 &marked, NULL, 0),
                 1);
    PT_CHECK_INT(pt_retry_should(p, PT_RETRY_RETRIABLE_HEADERS, PT_RETRY_OUTCOME_RESPONSE, 200,
                                 &plain, NULL, 0),
                 0);
    PT_CHECK_INT(pt_retry_should(p, PT_RETRY_RETRIABLE_HEADERS, PT_RETRY_OUTCOME_RESPONSE, 200,
                                 NULL, NULL, 0),
                 0);
    PT_CHECK_INT(pt_retry_should(p, PT_RETRY_ENVOY_RATELIMITED, PT_RETRY_OUTCOME_RESPONSE, 429,
                                 &ratelimited, NULL, 0),
                 1);
    PT_CHECK_INT(pt_retry_should(p, PT_RETRY_ENVOY_RATELIMITED, PT_RETRY_OUTCOME_RESPONSE, 429,
                                 &plain, NULL, 0),
                 0);
    /* ...but only with their bit: a marked response under 5xx is not retried. */
    PT_CHECK_INT(pt_retry_should(p, PT_RETRY_5XX, PT_RETRY_OUTCOME_RESPONSE, 200, &marked, NULL, 0),
                 0);
    PT_CHECK_INT(pt_retry_should(p,
                                 PT_RETRY_5XX | PT_RETRY_GATEWAY_ERROR | PT_RETRY_RESET |
                                     PT_RETRY_CONNECT_FAILURE | PT_RETRY_RETRIABLE_4XX |
                                     PT_RETRY_REFUSED_STREAM | PT_RETRY_RETRIABLE_STATUS_CODES,
                                 PT_RETRY_OUTCOME_RESPONSE, 200, &ratelimited, NULL, 0),
                 0);
}

/* Envoy counts every reset (refused stream included) as a 5xx and a gateway error
 * (RetryStateImpl::wouldRetryFromReset). */
static void test_should_refused_stream_gateway_error(void)
{
    PT_CHECK(pt_retry_should(NULL, PT_RETRY_GATEWAY_ERROR, PT_RETRY_OUTCOME_REFUSED_STREAM, 0, NULL,
                             NULL, 0) == 1);
}

static void test_should_status_codes(void)
{
    pt_retry_policy_t *p = load("{'retry_on':'retriable-status-codes',"
                                "'retriable_status_codes':[418, 503]}");
    PT_CHECK(p != NULL);
    uint32_t on = p->retry_on;
    PT_CHECK_INT(on, PT_RETRY_RETRIABLE_STATUS_CODES);
    PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, 418, NULL, NULL, 0), 1);
    PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, 503, NULL, NULL, 0), 1);
    PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, 500, NULL, NULL, 0), 0);
    PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, 200, NULL, NULL, 0), 0);
    /* Extra codes (x-envoy-retriable-status-codes) add to the policy's list. */
    uint32_t extra[] = {500, 202};
    PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, 500, NULL, extra, 2), 1);
    PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, 202, NULL, extra, 2), 1);
    PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, 418, NULL, extra, 2), 1);
    PT_CHECK_INT(pt_retry_should(p, on, PT_RETRY_OUTCOME_RESPONSE, 501, NULL, extra, 2), 0);
    /* Only with the retriable-status-codes condition: listed codes alone retry nothing. */
    PT_CHECK_INT(pt_retry_should(p, PT_RETRY_RESET, PT_RETRY_OUTCOME_RESPONSE, 418, NULL, extra, 2),
                 0);
    PT_CHECK_INT(pt_retry_should(p, PT_RETRY_RESET, PT_RETRY_OUTCOME_RESPONSE, 500, NULL, extra, 2),
                 0);
    /* No route policy at all (retry_on from x-envoy-retry-on): the extra codes still work. */
    PT_CHECK_INT(pt_retry_should(NULL, on, PT_RETRY_OUTCOME_RESPONSE, 202, NULL, extra, 2), 1);
    PT_CHECK_INT(pt_retry_should(NULL, on, PT_RETRY_OUTCOME_RESPONSE, 418, NULL, extra, 2), 0);
    PT_CHECK_INT(pt_retry_should(NULL, on, PT_RETRY_OUTCOME_RESPONSE, 418, NULL, NULL, 0), 0);
    /* Conditions combine: 5xx plus the list. */
    PT_CHECK_INT(
        pt_retry_should(p, on | PT_RETRY_5XX, PT_RETRY_OUTCOME_RESPONSE, 501, NULL, NULL, 0), 1);
    PT_CHECK_INT(
        pt_retry_should(p, on | PT_RETRY_5XX, PT_RETRY_OUTCOME_RESPONSE, 418, NULL, NULL, 0), 1);
    PT_CHECK_INT(
        pt_retry_should(p, on | PT_RETRY_5XX, PT_RETRY_OUTCOME_RESPONSE, 404, NULL, NULL, 0), 0);
}

static void test_should_retriable_headers(void)
{
    pt_retry_policy_t *p = load("{'retry_on':'retriable-headers','retriable_headers':["
                                "{'name':':status','string_match':{'exact':'502'}},"
                                "{'name':'x-upstream-retry','present_match':true}]}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->nretriable_headers, 2);
    pt_http_headers_t a, b, c;
    pt_http_headers_init(&a, &arena);
    pt_http_headers_init(&b, &arena);
    pt_http_headers_init(&c, &arena);
    pt_http_headers_add_str(&a, ":status", "502");
    pt_http_headers_add_str(&b, ":status", "200");
    pt_http_headers_add_str(&b, "x-upstream-retry", "1");
    pt_http_headers_add_str(&c, ":status", "503");
    PT_CHECK_INT(pt_retry_should(p, p->retry_on, PT_RETRY_OUTCOME_RESPONSE, 502, &a, NULL, 0), 1);
    PT_CHECK_INT(pt_retry_should(p, p->retry_on, PT_RETRY_OUTCOME_RESPONSE, 200, &b, NULL, 0), 1);
    PT_CHECK_INT(pt_retry_should(p, p->retry_on, PT_RETRY_OUTCOME_RESPONSE, 503, &c, NULL, 0), 0);
    /* No response: header conditions never retry a reset or a connect failure. */
    PT_CHECK_INT(pt_retry_should(p, p->retry_on, PT_RETRY_OUTCOME_RESET, 0, NULL, NULL, 0), 0);
    PT_CHECK_INT(
        pt_retry_should(p, p->retry_on, PT_RETRY_OUTCOME_CONNECT_FAILURE, 0, NULL, NULL, 0), 0);
}

/* gRPC conditions: the grpc-status of a trailers-only answer, each condition its status. */
static void test_should_grpc_status(void)
{
    static const struct {
        uint32_t bit;
        const char *status;
    } map[] = {{PT_RETRY_GRPC_CANCELLED, "1"},
               {PT_RETRY_GRPC_DEADLINE_EXCEEDED, "4"},
               {PT_RETRY_GRPC_RESOURCE_EXHAUSTED, "8"},
               {PT_RETRY_GRPC_INTERNAL, "13"},
               {PT_RETRY_GRPC_UNAVAILABLE, "14"}};
    const size_t n = sizeof(map) / sizeof(map[0]);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            pt_http_headers_t h;
            pt_http_headers_init(&h, &arena);
            pt_http_headers_add_str(&h, ":status", "200");
            pt_http_headers_add_str(&h, "grpc-status", map[j].status);
            PT_CHECK_INT(pt_retry_should(NULL, map[i].bit, PT_RETRY_OUTCOME_RESPONSE, 200, &h,
                                         NULL, 0),
                         i == j);
        }
    }
    /* OK, an unknown or malformed status, none at all, a 5xx without one: not retried. */
    const char *others[] = {"0", "2", "17", "14x", "", "-14"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        pt_http_headers_t h;
        pt_http_headers_init(&h, &arena);
        pt_http_headers_add_str(&h, "grpc-status", others[i]);
        PT_CHECK_INT(pt_retry_should(NULL, PT_RETRY_GRPC_ALL, PT_RETRY_OUTCOME_RESPONSE, 200, &h,
                                     NULL, 0),
                     0);
    }
    pt_http_headers_t none;
    pt_http_headers_init(&none, &arena);
    PT_CHECK_INT(
        pt_retry_should(NULL, PT_RETRY_GRPC_ALL, PT_RETRY_OUTCOME_RESPONSE, 503, &none, NULL, 0),
        0);
    /* gRPC conditions do not retry a reset (the HTTP ones do). */
    PT_CHECK_INT(pt_retry_should(NULL, PT_RETRY_GRPC_ALL, PT_RETRY_OUTCOME_RESET, 0, NULL, NULL, 0),
                 0);
}

/* ---- backoff ------------------------------------------------------------------------- */

static void test_backoff_bounds(void)
{
    pt_retry_policy_t *p = load("{'retry_back_off':{'base_interval':'0.1s','max_interval':"
                                "'3s'}}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->base_interval_ms, 100);
    PT_CHECK_INT(p->max_interval_ms, 3000);
    for (unsigned n = 1; n <= 8; n++) {
        uint64_t bound = ((1ull << n) - 1) * p->base_interval_ms; /* exclusive */
        for (int i = 0; i < 20000; i++) {
            uint64_t v = pt_retry_backoff_ms(p, n, rnd());
            if (v >= bound || v > p->max_interval_ms)
                fprintf(stderr, "  n=%u: %llu (bound %llu)\n", n, (unsigned long long)v,
                        (unsigned long long)bound);
            PT_CHECK(v < bound);
            PT_CHECK(v <= p->max_interval_ms);
        }
        /* The extremes themselves. */
        PT_CHECK_INT(pt_retry_backoff_ms(p, n, 0), 0);
        uint64_t top = pt_retry_backoff_ms(p, n, UINT64_MAX);
        PT_CHECK(top < bound && top <= p->max_interval_ms);
    }
    /* Exact values of the formula: random % ((2^n - 1) x base), capped. */
    PT_CHECK_INT(pt_retry_backoff_ms(p, 1, 99), 99);
    PT_CHECK_INT(pt_retry_backoff_ms(p, 1, 100), 0);
    PT_CHECK_INT(pt_retry_backoff_ms(p, 2, 299), 299);
    PT_CHECK_INT(pt_retry_backoff_ms(p, 2, 300), 0);
    PT_CHECK_INT(pt_retry_backoff_ms(p, 5, 3099), 3000); /* capped at max_interval */
    PT_CHECK_INT(pt_retry_backoff_ms(p, 5, 2999), 2999);
    /* n = 0 is treated as the first retry. */
    PT_CHECK(pt_retry_backoff_ms(p, 0, 12345) < 100);
    /* Huge n saturates instead of overflowing. */
    PT_CHECK(pt_retry_backoff_ms(p, 64, rnd()) <= 3000);
    PT_CHECK(pt_retry_backoff_ms(p, 1000, rnd()) <= 3000);
}

/* Over many samples the backoff covers its range: both halves of [0, bound) are hit, and
 * so is every tenth of it, with roughly uniform counts. */
static void test_backoff_distribution(void)
{
    pt_retry_policy_t *p = load("{'retry_back_off':{'base_interval':'0.025s',"
                                "'max_interval':'100s'}}");
    PT_CHECK(p != NULL);
    for (unsigned n = 1; n <= 8; n++) {
        uint64_t bound = ((1ull << n) - 1) * p->base_interval_ms;
        enum { SAMPLES = 20000, BINS = 10 };
        unsigned bins[BINS] = {0}, low = 0, high = 0;
        for (int i = 0; i < SAMPLES; i++) {
            uint64_t v = pt_retry_backoff_ms(p, n, rnd());
            PT_CHECK(v < bound);
            bins[v * BINS / bound]++;
            if (v * 2 < bound)
                low++;
            else
                high++;
        }
        PT_CHECK(low > SAMPLES / 3 && high > SAMPLES / 3);
        for (int b = 0; b < BINS; b++) {
            /* Expect 2000 per bin; with a 25 ms span (n = 1) the bins are whole ms
             * (2.5 values each), so allow wide margins. */
            if (bins[b] < SAMPLES / BINS / 3 || bins[b] > SAMPLES / BINS * 2)
                fprintf(stderr, "  n=%u bin %d: %u\n", n, b, bins[b]);
            PT_CHECK(bins[b] >= SAMPLES / BINS / 3 && bins[b] <= SAMPLES / BINS * 2);
        }
    }
}

static void test_backoff_defaults(void)
{
    /* No retry_back_off: base 25 ms, max 250 ms (Envoy's defaults). */
    pt_retry_policy_t *p = load("{'retry_on':'5xx'}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->base_interval_ms, 25);
    PT_CHECK_INT(p->max_interval_ms, 250);
    for (unsigned n = 1; n <= 8; n++)
        for (int i = 0; i < 2000; i++) {
            uint64_t v = pt_retry_backoff_ms(p, n, rnd());
            PT_CHECK(v <= 250 && v < ((1ull << n) - 1) * 25);
        }
    /* No policy (retry_on from x-envoy-retry-on only): the same defaults. */
    for (int i = 0; i < 2000; i++) {
        PT_CHECK(pt_retry_backoff_ms(NULL, 1, rnd()) < 25);
        PT_CHECK(pt_retry_backoff_ms(NULL, 7, rnd()) <= 250);
    }
    /* max_interval defaults to 10 x base_interval. */
    p = load("{'retry_back_off':{'base_interval':'0.2s'}}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->max_interval_ms, 2000);
}

/* ---- parsing ------------------------------------------------------------------------- */

static void test_parse_fields(void)
{
    pt_retry_policy_t *p =
        load("{'retry_on':'5xx,reset','num_retries':4,'per_try_timeout':'0.5s',"
             "'per_try_idle_timeout':'0.25s','retry_back_off':{'base_interval':'0.01s',"
             "'max_interval':'0.05s'},'retry_host_predicate':[{'name':"
             "'envoy.retry_host_predicates.previous_hosts','typed_config':{'@type':"
             "'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
             "PreviousHostsPredicate'}}],'host_selection_retry_max_attempts':3,"
             "'retriable_status_codes':[409,503],"
             "'retriable_request_headers':[{'name':':method','string_match':{'exact':'GET'}}]}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->retry_on, PT_RETRY_5XX | PT_RETRY_RESET);
    PT_CHECK_INT(p->num_retries, 4);
    PT_CHECK_INT(p->per_try_timeout_ms, 500);
    PT_CHECK_INT(p->per_try_idle_timeout_ms, 250);
    PT_CHECK_INT(p->base_interval_ms, 10);
    PT_CHECK_INT(p->max_interval_ms, 50);
    PT_CHECK_INT(p->previous_hosts, 1);
    PT_CHECK_INT(p->host_selection_max_attempts, 3);
    PT_CHECK_INT(p->nretriable_status_codes, 2);
    PT_CHECK_INT(p->retriable_status_codes[0], 409);
    PT_CHECK_INT(p->retriable_status_codes[1], 503);
    PT_CHECK_INT(p->nretriable_request_headers, 1);

    /* Defaults: num_retries 1 (Envoy's), no per-try timeouts, one host selection. */
    p = load("{}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->retry_on, 0);
    PT_CHECK_INT(p->num_retries, 1);
    PT_CHECK_INT(p->per_try_timeout_ms, 0);
    PT_CHECK_INT(p->per_try_idle_timeout_ms, 0);
    PT_CHECK_INT(p->previous_hosts, 0);
    PT_CHECK_INT(p->host_selection_max_attempts, 1);
    PT_CHECK_INT(p->nretriable_status_codes, 0);

    /* The predicate by name alone, or by type alone; num_retries 0 is allowed. */
    p = load("{'num_retries':0,'retry_host_predicate':[{'name':"
             "'envoy.retry_host_predicates.previous_hosts'}]}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->num_retries, 0);
    PT_CHECK_INT(p->previous_hosts, 1);
    p = load("{'retry_host_predicate':[{'name':'x','typed_config':{'@type':"
             "'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
             "PreviousHostsPredicate'}}]}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->previous_hosts, 1);
    /* proto3 JSON camelCase spellings. */
    p = load("{'retryOn':'gateway-error','numRetries':2,'perTryTimeout':'1s',"
             "'retriableStatusCodes':[500]}");
    PT_CHECK(p != NULL);
    PT_CHECK_INT(p->retry_on, PT_RETRY_GATEWAY_ERROR);
    PT_CHECK_INT(p->num_retries, 2);
    PT_CHECK_INT(p->per_try_timeout_ms, 1000);
    PT_CHECK_INT(p->nretriable_status_codes, 1);
}

#define PREV_PRIO                                                                              \
    "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."             \
    "PreviousPrioritiesConfig"

static void test_parse_errors(void)
{
    static const struct {
        const char *json, *errors;
    } cases[] = {
        {"{'retry_on':'5xx,bogus'}",
         "rp.retry_on: \"bogus\" is not a retry condition petrel knows (5xx, gateway-error, "
         "reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, "
         "retriable-headers, envoy-ratelimited)"},
        {"{'retry_back_off':{'max_interval':'1s'}}",
         "rp.retry_back_off.base_interval: is required"},
        {"{'retry_back_off':{'base_interval':'0s'}}",
         "rp.retry_back_off.base_interval: must be greater than 0"},
        {"{'retry_back_off':{'base_interval':'1s','max_interval':'0.5s'}}",
         "rp.retry_back_off.max_interval: must not be less than base_interval"},
        {"{'retriable_status_codes':[503, 99]}",
         "rp.retriable_status_codes[1]: is not an HTTP status code"},
        {"{'retriable_status_codes':[600]}",
         "rp.retriable_status_codes[0]: is not an HTTP status code"},
        {"{'retriable_status_codes':['503']}",
         "rp.retriable_status_codes[0]: is not an HTTP status code"},
        {"{'retry_host_predicate':[{'name':'envoy.retry_host_predicates.omit_canary_hosts'}]}",
         "rp.retry_host_predicate[0]: only the previous_hosts retry host predicate is "
         "supported"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        PT_CHECK_STR(errors_of(cases[i].json), cases[i].errors);

    /* retry_priority: previous_priorities only, with an update_frequency above 0. */
    const char *e = errors_of("{'retry_priority':{'name':'x'}}");
    PT_CHECK_STR(e, "rp.retry_priority.typed_config: is required (a PreviousPrioritiesConfig)");
    e = errors_of("{'retry_priority':{'name':'x','typed_config':{'@type':'type.googleapis.com/"
                  "envoy.extensions.retry.priority.other.v3.Other'}}}");
    PT_CHECK_STR(e, "rp.retry_priority.typed_config.@type: \"type.googleapis.com/envoy."
                    "extensions.retry.priority.other.v3.Other\" is not a retry priority petrel "
                    "has (only envoy.retry_priorities.previous_priorities)");
    e = errors_of("{'retry_priority':{'name':'x','typed_config':{'@type':'" PREV_PRIO "'}}}");
    PT_CHECK_STR(e, "rp.retry_priority.typed_config.update_frequency: must be greater than 0 "
                    "(an int32)");
    e = errors_of("{'retry_priority':{'name':'x','typed_config':{'@type':'" PREV_PRIO
                  "','update_frequency':0}}}");
    PT_CHECK_STR(e, "rp.retry_priority.typed_config.update_frequency: must be greater than 0 "
                    "(an int32)");
    pt_retry_policy_t *p = load("{'retry_priority':{'name':'envoy.retry_priorities."
                                "previous_priorities','typed_config':{'@type':'" PREV_PRIO
                                "','update_frequency':2}}}");
    PT_CHECK(p != NULL && p->previous_priorities == 2);
    /* Fields petrel does not implement are errors, never silently ignored. */
    e = errors_of("{'rate_limited_retry_back_off':{}}");
    PT_CHECK(strstr(e, "rp.rate_limited_retry_back_off") != NULL &&
             strstr(e, "not supported") != NULL);
    e = errors_of("{'num_retries':-1}");
    PT_CHECK(strstr(e, "rp.num_retries") != NULL);
    e = errors_of("{'per_try_timeout':'abc'}");
    PT_CHECK(strstr(e, "rp.per_try_timeout") != NULL);
    e = errors_of("{'retry_on':'5xx','no_such_field':1}");
    PT_CHECK(strstr(e, "rp.no_such_field") != NULL);
    /* Every error is reported, not just the first. */
    e = errors_of("{'retry_on':'nope','retriable_status_codes':[1],"
                  "'retry_back_off':{'base_interval':'2s','max_interval':'1s'}}");
    PT_CHECK(strstr(e, "rp.retry_on") != NULL);
    PT_CHECK(strstr(e, "rp.retriable_status_codes[0]") != NULL);
    PT_CHECK(strstr(e, "rp.retry_back_off.max_interval") != NULL);
}

int main(void)
{
    PT_RUN(test_retry_on_every_name);
    PT_RUN(test_retry_on_lists);
    PT_RUN(test_retry_on_unknown_names);
    PT_RUN(test_should_truth_table);
    PT_RUN(test_should_refused_stream_gateway_error);
    PT_RUN(test_should_status_codes);
    PT_RUN(test_should_retriable_headers);
    PT_RUN(test_should_grpc_status);
    PT_RUN(test_backoff_bounds);
    PT_RUN(test_backoff_distribution);
    PT_RUN(test_backoff_defaults);
    PT_RUN(test_parse_fields);
    PT_RUN(test_parse_errors);
    pt_arena_dispose(&arena);
    if (xfail_seen)
        printf("%d expected failure(s): known divergences, see the xfail lines\n", xfail_seen);
    PT_TEST_EXIT();
}
