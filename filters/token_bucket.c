#include "filters/token_bucket.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/time.h"

static uint64_t default_clock(void)
{
    return pt_now_ms();
}

#define PACK(fills, tokens) (((uint64_t)(uint32_t)(fills) << 32) | (uint32_t)(tokens))
#define FILLS(state)        ((uint32_t)((state) >> 32))
#define TOKENS(state)       ((uint32_t)(state))

void pt_token_bucket_init(pt_token_bucket_t *b, const pt_token_bucket_config_t *cfg,
                          pt_clock_ms_fn clock)
{
    b->cfg = *cfg;
    if (b->cfg.fill_interval_ms == 0)
        b->cfg.fill_interval_ms = 1; /* never 0: it divides */
    b->clock = clock ? clock : default_clock;
    b->origin_ms = b->clock();
    atomic_init(&b->state, PACK(0, cfg->max_tokens));
}

/* The fill count due at `now` (mod 2^32). */
static uint32_t fills_due(const pt_token_bucket_t *b, uint64_t now)
{
    if (now <= b->origin_ms)
        return 0;
    return (uint32_t)((now - b->origin_ms) / b->cfg.fill_interval_ms);
}

/* The state after crediting the fills due by `due` to `s`. A `due` behind the state's count
 * (a thread that read the clock before another one credited a fill) credits nothing; the
 * signed difference makes that hold across the 2^32 wrap. */
static uint64_t refill(const pt_token_bucket_t *b, uint64_t s, uint32_t due)
{
    int32_t delta = (int32_t)(due - FILLS(s));
    if (delta <= 0)
        return s;
    uint64_t tokens = (uint64_t)TOKENS(s) + (uint64_t)(uint32_t)delta * b->cfg.tokens_per_fill;
    if (tokens > b->cfg.max_tokens)
        tokens = b->cfg.max_tokens;
    return PACK(due, tokens);
}

int pt_token_bucket_consume(pt_token_bucket_t *b)
{
    uint32_t due = fills_due(b, b->clock());
    uint64_t old = atomic_load_explicit(&b->state, memory_order_relaxed);
    for (;;) {
        uint64_t cur = refill(b, old, due);
        if (TOKENS(cur) == 0) {
            /* Nothing to take. Publishing the fill count is not needed for exactness: a
             * later caller credits the same fills from the stored state. */
            return 0;
        }
        uint64_t next = PACK(FILLS(cur), TOKENS(cur) - 1);
        /* Relaxed ordering: the word is the whole state, nothing else is published with
         * it. */
        if (atomic_compare_exchange_weak_explicit(&b->state, &old, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return 1;
    }
}

void pt_token_bucket_status(pt_token_bucket_t *b, uint32_t *remaining, uint64_t *reset_seconds)
{
    uint64_t now = b->clock();
    uint32_t due = fills_due(b, now);
    uint64_t s = refill(b, atomic_load_explicit(&b->state, memory_order_relaxed), due);
    if (remaining != NULL)
        *remaining = TOKENS(s);
    if (reset_seconds != NULL) {
        /* The last fill (timer tick in Envoy) happened at origin + due * interval, whether or
         * not anybody used the bucket since. */
        uint64_t interval = b->cfg.fill_interval_ms;
        uint64_t since = now > b->origin_ms ? (now - b->origin_ms) % interval : 0;
        uint64_t left_ms = interval - (since / 1000) * 1000;
        *reset_seconds = left_ms / 1000;
    }
}

/* ---- config -------------------------------------------------------------------------- */

int pt_token_bucket_config_parse(pt_cfg_t *r, pt_token_bucket_config_t *out)
{
    size_t before = r->nerrors;
    uint64_t v;
    memset(out, 0, sizeof(*out));
    int rc = pt_cfg_uint(r, "max_tokens", &v, 0, 0, UINT32_MAX);
    if (rc == 0)
        pt_cfg_error(r, "max_tokens", "is required");
    else if (rc > 0 && v == 0)
        pt_cfg_error(r, "max_tokens", "must be greater than 0");
    out->max_tokens = (uint32_t)v;
    if (pt_cfg_uint(r, "tokens_per_fill", &v, 1, 0, UINT32_MAX) > 0 && v == 0)
        pt_cfg_error(r, "tokens_per_fill", "must be greater than 0");
    out->tokens_per_fill = (uint32_t)v;
    rc = pt_cfg_duration_ms(r, "fill_interval", &out->fill_interval_ms, 0);
    if (rc == 0)
        pt_cfg_error(r, "fill_interval", "is required");
    else if (rc > 0 && out->fill_interval_ms < PT_TOKEN_BUCKET_MIN_FILL_MS)
        pt_cfg_error(r, "fill_interval", "must be at least 50ms (as in Envoy)");
    return r->nerrors == before ? 0 : -1;
}

int pt_token_bucket_config_field(pt_cfg_t *r, const char *field, pt_token_bucket_config_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = pt_cfg_enter(r, field);
    if (rc == 0) {
        pt_cfg_error(r, field, "is required");
        return -1;
    }
    if (rc < 0)
        return -1;
    int ok = pt_token_bucket_config_parse(r, out);
    pt_cfg_leave(r);
    return ok;
}

/* ---- shared buckets -------------------------------------------------------------------- */

/* The registry: a short list (one entry per configured filter), walked only when a config
 * is built or released. The bucket is the first member, so a bucket pointer is its entry. */
typedef struct shared_entry {
    pt_token_bucket_t bucket;
    struct shared_entry *next;
    unsigned refs;
    char *key;
} shared_entry_t;

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static shared_entry_t *shared_head;

pt_token_bucket_t *pt_token_bucket_shared_get(const char *key, const pt_token_bucket_config_t *cfg)
{
    pthread_mutex_lock(&shared_lock);
    shared_entry_t *e;
    for (e = shared_head; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0 && e->bucket.cfg.max_tokens == cfg->max_tokens &&
            e->bucket.cfg.tokens_per_fill == cfg->tokens_per_fill &&
            e->bucket.cfg.fill_interval_ms == cfg->fill_interval_ms)
            break;
    }
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e != NULL)
            e->key = strdup(key);
        if (e == NULL || e->key == NULL) {
            free(e);
            pthread_mutex_unlock(&shared_lock);
            return NULL;
        }
        pt_token_bucket_init(&e->bucket, cfg, NULL);
        e->next = shared_head;
        shared_head = e;
    }
    e->refs++;
    pthread_mutex_unlock(&shared_lock);
    return &e->bucket;
}

void pt_token_bucket_shared_put(pt_token_bucket_t *b)
{
    if (b == NULL)
        return;
    shared_entry_t *e = (shared_entry_t *)b;
    pthread_mutex_lock(&shared_lock);
    if (--e->refs == 0) {
        for (shared_entry_t **pp = &shared_head; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == e) {
                *pp = e->next;
                break;
            }
        }
        free(e->key);
        free(e);
    }
    pthread_mutex_unlock(&shared_lock);
}

void pt_token_bucket_shared_put_cb(void *b)
{
    pt_token_bucket_shared_put(b);
}
