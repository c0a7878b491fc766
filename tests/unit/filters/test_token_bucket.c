/* Unit tests for filters/token_bucket: refill arithmetic on a simulated clock (fills at
 * fixed interval boundaries, the cap, bursts, a clock reading older than the state), the
 * x-ratelimit-reset value, exactness with 4 threads taking from one bucket while the
 * simulated clock advances with their attempts (no sleeps), the shared-bucket registry and
 * TokenBucket config errors. */
#include "filters/token_bucket.h"
#include "pt_test.h"
#include "pt_test_json.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- a simulated clock ----------------------------------------------------------------- */

static _Atomic uint64_t sim_ms;
static uint64_t sim_clock(void)
{
    return atomic_load(&sim_ms);
}
static void sim_set(uint64_t ms)
{
    atomic_store(&sim_ms, ms);
}

static pt_token_bucket_config_t TB(uint32_t max, uint32_t per_fill, uint64_t interval)
{
    pt_token_bucket_config_t c = {max, per_fill, interval};
    return c;
}

static unsigned take(pt_token_bucket_t *b, unsigned n)
{
    unsigned got = 0;
    for (unsigned i = 0; i < n; i++)
        got += (unsigned)pt_token_bucket_consume(b);
    return got;
}

static uint32_t remaining(pt_token_bucket_t *b)
{
    uint32_t r;
    pt_token_bucket_status(b, &r, NULL);
    return r;
}

static uint64_t reset_s(pt_token_bucket_t *b)
{
    uint64_t s;
    pt_token_bucket_status(b, NULL, &s);
    return s;
}

/* ---- refill math -------------------------------------------------------------------------- */

static void test_starts_full_and_empties(void)
{
    sim_set(1000);
    pt_token_bucket_config_t c = TB(5, 2, 100);
    pt_token_bucket_t b;
    pt_token_bucket_init(&b, &c, sim_clock);
    PT_CHECK_INT(remaining(&b), 5);
    PT_CHECK_INT(take(&b, 7), 5);
    PT_CHECK_INT(remaining(&b), 0);
    PT_CHECK_INT(pt_token_bucket_consume(&b), 0);
}

static void test_fills_at_interval_boundaries(void)
{
    sim_set(1000);
    pt_token_bucket_config_t c = TB(5, 2, 100);
    pt_token_bucket_t b;
    pt_token_bucket_init(&b, &c, sim_clock);
    PT_CHECK_INT(take(&b, 5), 5);
    sim_set(1099); /* not yet a whole interval */
    PT_CHECK_INT(pt_token_bucket_consume(&b), 0);
    sim_set(1100); /* first fill: 2 tokens */
    PT_CHECK_INT(remaining(&b), 2);
    PT_CHECK_INT(take(&b, 3), 2);
    sim_set(1250); /* second fill at 1200 (not 1100 + 150) */
    PT_CHECK_INT(take(&b, 3), 2);
    sim_set(1299);
    PT_CHECK_INT(pt_token_bucket_consume(&b), 0);
    sim_set(1300);
    PT_CHECK_INT(take(&b, 1), 1);
    PT_CHECK_INT(remaining(&b), 1);
}

static void test_fills_never_exceed_max(void)
{
    sim_set(0);
    pt_token_bucket_config_t c = TB(5, 2, 100);
    pt_token_bucket_t b;
    pt_token_bucket_init(&b, &c, sim_clock);
    PT_CHECK_INT(take(&b, 4), 4); /* 1 left */
    sim_set(200);                 /* two fills: 1 + 4 = 5 */
    PT_CHECK_INT(remaining(&b), 5);
    sim_set(100000); /* a thousand fills later: still 5 */
    PT_CHECK_INT(remaining(&b), 5);
    PT_CHECK_INT(take(&b, 10), 5);
    /* A fill credited while full is not banked for later. */
    sim_set(100100);
    PT_CHECK_INT(take(&b, 10), 2);
}

static void test_burst(void)
{
    sim_set(50);
    pt_token_bucket_config_t c = TB(1000, 10, 1000);
    pt_token_bucket_t b;
    pt_token_bucket_init(&b, &c, sim_clock);
    /* The whole bucket at once, then nothing until the next fill, then one fill's worth. */
    PT_CHECK_INT(take(&b, 5000), 1000);
    sim_set(1049);
    PT_CHECK_INT(take(&b, 50), 0);
    sim_set(1050);
    PT_CHECK_INT(take(&b, 50), 10);
    /* Many intervals of idleness bank up to max_tokens. */
    sim_set(1050 + 1000 * 1000);
    PT_CHECK_INT(take(&b, 5000), 1000);
}

static void test_stale_clock_credits_nothing(void)
{
    sim_set(0);
    pt_token_bucket_config_t c = TB(10, 1, 100);
    pt_token_bucket_t b;
    pt_token_bucket_init(&b, &c, sim_clock);
    PT_CHECK_INT(take(&b, 10), 10);
    sim_set(300); /* three fills */
    PT_CHECK_INT(take(&b, 1), 1);
    /* A thread that read the clock before that (150 ms: one fill due) must not credit the
     * fill again nor take the state back. */
    sim_set(150);
    PT_CHECK_INT(take(&b, 5), 2);
    sim_set(300);
    PT_CHECK_INT(take(&b, 5), 0);
    sim_set(400);
    PT_CHECK_INT(take(&b, 5), 1);
}

static void test_reset_seconds(void)
{
    sim_set(0);
    pt_token_bucket_config_t c = TB(10, 1, 60000);
    pt_token_bucket_t b;
    pt_token_bucket_init(&b, &c, sim_clock);
    /* Envoy: fill_interval - whole seconds since the last fill, in whole seconds. */
    PT_CHECK_INT(reset_s(&b), 60);
    sim_set(500);
    PT_CHECK_INT(reset_s(&b), 60);
    sim_set(1000);
    PT_CHECK_INT(reset_s(&b), 59);
    sim_set(59500);
    PT_CHECK_INT(reset_s(&b), 1);
    sim_set(60000); /* a fill happened: a new interval */
    PT_CHECK_INT(reset_s(&b), 60);
    sim_set(61999);
    PT_CHECK_INT(reset_s(&b), 59);

    pt_token_bucket_config_t c2 = TB(10, 1, 1500);
    pt_token_bucket_t b2;
    sim_set(0);
    pt_token_bucket_init(&b2, &c2, sim_clock);
    PT_CHECK_INT(reset_s(&b2), 1); /* 1.5 s truncated */
    sim_set(1000);
    PT_CHECK_INT(reset_s(&b2), 0);

    pt_token_bucket_config_t c3 = TB(10, 1, 50);
    pt_token_bucket_t b3;
    pt_token_bucket_init(&b3, &c3, sim_clock);
    PT_CHECK_INT(reset_s(&b3), 0);
}

static void test_large_counts(void)
{
    sim_set(0);
    pt_token_bucket_config_t c = TB(UINT32_MAX, UINT32_MAX, 50);
    pt_token_bucket_t b;
    pt_token_bucket_init(&b, &c, sim_clock);
    PT_CHECK_INT(remaining(&b), UINT32_MAX);
    PT_CHECK_INT(take(&b, 3), 3);
    sim_set(50);
    PT_CHECK_INT(remaining(&b), UINT32_MAX); /* no overflow past the cap */
}

/* ---- exactness under contention ----------------------------------------------------------
 *
 * Four threads take from one bucket. The simulated clock is driven by the attempts
 * themselves (one millisecond per TICKS attempts, all threads together), so fills happen
 * while the threads race, at points no thread controls. With far more attempts per interval
 * than tokens per fill, the bucket never reaches its cap after the start, so nothing is
 * lost to it and the count must be exact: tokens granted + tokens left ==
 * max_tokens + tokens_per_fill * (fills due at the end). Any double credit of a fill or
 * double take of a token breaks the equality. */

#define THREADS  4
#define ATTEMPTS 200000
#define TICKS    4

static pt_token_bucket_t hammer_bucket;
static _Atomic uint64_t attempts;

static uint64_t attempt_clock(void)
{
    return atomic_load_explicit(&attempts, memory_order_relaxed) / TICKS;
}

static void *hammer(void *arg)
{
    uint64_t *granted = arg;
    for (int i = 0; i < ATTEMPTS; i++) {
        *granted += (uint64_t)pt_token_bucket_consume(&hammer_bucket);
        atomic_fetch_add_explicit(&attempts, 1, memory_order_relaxed);
    }
    return NULL;
}

static void test_exact_across_threads(void)
{
    atomic_store(&attempts, 0);
    pt_token_bucket_config_t c = TB(100, 7, 50);
    pt_token_bucket_init(&hammer_bucket, &c, attempt_clock);
    pthread_t th[THREADS];
    uint64_t granted[THREADS] = {0};
    for (int i = 0; i < THREADS; i++)
        PT_CHECK(pthread_create(&th[i], NULL, hammer, &granted[i]) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    uint64_t total = 0;
    for (int i = 0; i < THREADS; i++)
        total += granted[i];
    uint64_t end_ms = attempt_clock();
    PT_CHECK_INT(end_ms, (uint64_t)THREADS * ATTEMPTS / TICKS);
    uint64_t fills = end_ms / c.fill_interval_ms;
    uint32_t left = remaining(&hammer_bucket);
    PT_CHECK_INT(total + left, c.max_tokens + (uint64_t)c.tokens_per_fill * fills);
    /* And the run was long enough to mean something: thousands of fills raced over. */
    PT_CHECK(fills >= 1000);
}

/* With the clock stopped, 4 threads share exactly max_tokens. */
static void *drain(void *arg)
{
    uint64_t *granted = arg;
    for (int i = 0; i < ATTEMPTS; i++)
        *granted += (uint64_t)pt_token_bucket_consume(&hammer_bucket);
    return NULL;
}

static void test_exact_burst_across_threads(void)
{
    sim_set(7);
    pt_token_bucket_config_t c = TB(123457, 1, 1000);
    pt_token_bucket_init(&hammer_bucket, &c, sim_clock);
    pthread_t th[THREADS];
    uint64_t granted[THREADS] = {0};
    for (int i = 0; i < THREADS; i++)
        PT_CHECK(pthread_create(&th[i], NULL, drain, &granted[i]) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    uint64_t total = 0;
    for (int i = 0; i < THREADS; i++)
        total += granted[i];
    PT_CHECK_INT(total, 123457);
    PT_CHECK_INT(remaining(&hammer_bucket), 0);
}

/* ---- shared buckets ---------------------------------------------------------------------- */

static void test_shared_registry(void)
{
    pt_token_bucket_config_t c = TB(3, 1, 1000), c2 = TB(4, 1, 1000);
    pt_token_bucket_t *a = pt_token_bucket_shared_get("k", &c);
    pt_token_bucket_t *a2 = pt_token_bucket_shared_get("k", &c);
    pt_token_bucket_t *b = pt_token_bucket_shared_get("k", &c2); /* other config */
    pt_token_bucket_t *d = pt_token_bucket_shared_get("other", &c);
    PT_CHECK(a != NULL && b != NULL && d != NULL);
    PT_CHECK(a == a2);
    PT_CHECK(a != b && a != d && b != d);
    PT_CHECK_INT(take(a, 2), 2);
    PT_CHECK_INT(take(a2, 5), 1); /* the same state */
    /* Dropping one reference keeps the state; dropping the last frees it, and the next get
     * starts a full bucket. */
    pt_token_bucket_shared_put(a2);
    pt_token_bucket_t *a3 = pt_token_bucket_shared_get("k", &c);
    PT_CHECK(a3 == a);
    PT_CHECK_INT(take(a3, 5), 0);
    pt_token_bucket_shared_put(a3);
    pt_token_bucket_shared_put(a);
    pt_token_bucket_t *a4 = pt_token_bucket_shared_get("k", &c);
    PT_CHECK_INT(take(a4, 5), 3);
    pt_token_bucket_shared_put(a4);
    pt_token_bucket_shared_put(b);
    pt_token_bucket_shared_put_cb(d);
}

/* ---- config ------------------------------------------------------------------------------- */

/* Parses {"token_bucket": <json>}; returns the joined errors ("" when none) in out. */
static void parse_tb(const char *json, char *out, size_t len, pt_token_bucket_config_t *c)
{
    char doc[512];
    snprintf(doc, sizeof(doc), "{'token_bucket':%s}", json);
    json_t *root = J(doc);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_token_bucket_config_field(&r, "token_bucket", c);
    pt_cfg_finish(&r);
    char *e = pt_cfg_errors_joined(&r);
    snprintf(out, len, "%s", e ? e : "");
    size_t n = strlen(out);
    if (n > 0 && out[n - 1] == '\n')
        out[n - 1] = '\0'; /* one error: compare without the line end */
    free(e);
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void test_config(void)
{
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{'max_tokens':10,'fill_interval':'1s'}", ""},
        {"{'max_tokens':'10','tokens_per_fill':{'value':3},'fill_interval':'0.05s'}", ""},
        {"{'fill_interval':'1s'}", "token_bucket.max_tokens: is required"},
        {"{'max_tokens':0,'fill_interval':'1s'}",
         "token_bucket.max_tokens: must be greater than 0"},
        {"{'max_tokens':-1,'fill_interval':'1s'}",
         "token_bucket.max_tokens: -1 is not a non-negative integer"},
        {"{'max_tokens':4294967296,'fill_interval':'1s'}",
         "token_bucket.max_tokens: 4294967296 is out of range [0, 4294967295]"},
        {"{'max_tokens':1,'tokens_per_fill':0,'fill_interval':'1s'}",
         "token_bucket.tokens_per_fill: must be greater than 0"},
        {"{'max_tokens':1}", "token_bucket.fill_interval: is required"},
        {"{'max_tokens':1,'fill_interval':'0.049s'}",
         "token_bucket.fill_interval: must be at least 50ms (as in Envoy)"},
        {"{'max_tokens':1,'fill_interval':'1s','burst':2}", "token_bucket.burst: unknown field"},
        {"3", "token_bucket: 3 is not an object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char got[512];
        pt_token_bucket_config_t c;
        parse_tb(cases[i].json, got, sizeof(got), &c);
        if (strcmp(got, cases[i].want) != 0)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK_STR(got, cases[i].want);
    }
    char got[512];
    pt_token_bucket_config_t c;
    parse_tb("{'max_tokens':10,'tokens_per_fill':4,'fill_interval':'2.5s'}", got, sizeof(got), &c);
    PT_CHECK_INT(c.max_tokens, 10);
    PT_CHECK_INT(c.tokens_per_fill, 4);
    PT_CHECK_INT(c.fill_interval_ms, 2500);
    parse_tb("{'max_tokens':10,'fill_interval':'1s'}", got, sizeof(got), &c);
    PT_CHECK_INT(c.tokens_per_fill, 1);

    /* Missing altogether. */
    json_t *root = J("{}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    PT_CHECK_INT(pt_token_bucket_config_field(&r, "token_bucket", &c), -1);
    pt_cfg_finish(&r);
    PT_CHECK_INT(r.nerrors, 1);
    PT_CHECK_STR(r.errors[0], "token_bucket: is required");
    pt_cfg_dispose(&r);
    json_decref(root);
}

int main(void)
{
    PT_RUN(test_starts_full_and_empties);
    PT_RUN(test_fills_at_interval_boundaries);
    PT_RUN(test_fills_never_exceed_max);
    PT_RUN(test_burst);
    PT_RUN(test_stale_clock_credits_nothing);
    PT_RUN(test_reset_seconds);
    PT_RUN(test_large_counts);
    PT_RUN(test_exact_across_threads);
    PT_RUN(test_exact_burst_across_threads);
    PT_RUN(test_shared_registry);
    PT_RUN(test_config);
    PT_TEST_EXIT();
}
