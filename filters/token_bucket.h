/* Token buckets for the local rate limit filters (envoy.type.v3.TokenBucket).
 *
 * Semantics are those of Envoy's local rate limiter: the bucket starts full (max_tokens);
 * every fill_interval, counted from the bucket's creation, tokens_per_fill tokens are added,
 * never beyond max_tokens; a request or connection takes one token or is limited.
 *
 * Envoy refills with a timer. Here the fills are computed lazily from a monotonic clock
 * when the bucket is used: the state is one 64-bit word, (number of fills applied << 32) |
 * tokens, updated with a compare-and-swap loop, so any number of threads may share a bucket
 * without a lock or a timer and the count stays exact: every fill is credited exactly once
 * (by whichever thread first sees its interval elapsed) and every token is taken at most
 * once. A thread whose clock reading is older than the bucket's state simply credits no
 * fill. The fill counter is 32 bits: after 2^32 intervals (6.8 years at 50 ms) it wraps,
 * which only matters to a bucket left untouched that long (it then misses fills, never
 * gains any).
 *
 * The clock is injectable (unit tests use a simulated one). Shared buckets outlive config
 * snapshots: pt_token_bucket_shared_get hands out one refcounted bucket per key, so a
 * config reload that keeps a filter's place and token_bucket keeps its state, as a
 * listener Envoy does not rebuild keeps its limiter. */
#ifndef PT_TOKEN_BUCKET_H
#define PT_TOKEN_BUCKET_H

#include <stdatomic.h>
#include <stdint.h>

#include "proxy/config_reader.h"

typedef uint64_t (*pt_clock_ms_fn)(void);

/* Envoy's minimum fill_interval for the local rate limiters. */
#define PT_TOKEN_BUCKET_MIN_FILL_MS 50

typedef struct pt_token_bucket_config {
    uint32_t max_tokens;      /* > 0 */
    uint32_t tokens_per_fill; /* > 0, default 1 */
    uint64_t fill_interval_ms;
} pt_token_bucket_config_t;

typedef struct pt_token_bucket {
    pt_token_bucket_config_t cfg;
    pt_clock_ms_fn clock;
    uint64_t origin_ms;     /* fill k happens at origin_ms + k * fill_interval_ms */
    _Atomic uint64_t state; /* (fills applied, mod 2^32) << 32 | tokens */
} pt_token_bucket_t;

/* A full bucket whose fill intervals start now (clock NULL = pt_now_ms). */
void pt_token_bucket_init(pt_token_bucket_t *b, const pt_token_bucket_config_t *cfg,
                          pt_clock_ms_fn clock);
/* Takes one token: 1 when there was one, 0 when the bucket is empty. Thread-safe. */
int pt_token_bucket_consume(pt_token_bucket_t *b);
/* What the x-ratelimit-* headers report, read now: the tokens left (with due fills
 * counted) and Envoy's x-ratelimit-reset, the whole seconds of fill_interval not yet
 * elapsed since the last fill (fill_interval - floor(seconds since it)), truncated. */
void pt_token_bucket_status(pt_token_bucket_t *b, uint32_t *remaining, uint64_t *reset_seconds);

/* Reads the TokenBucket the reader is in. max_tokens is required and > 0, tokens_per_fill
 * > 0 (default 1), fill_interval required and >= 50ms. Returns 0, or -1 (errors recorded). */
int pt_token_bucket_config_parse(pt_cfg_t *r, pt_token_bucket_config_t *out);
/* Same for the field `field` of the current object; a missing field is an error. */
int pt_token_bucket_config_field(pt_cfg_t *r, const char *field, pt_token_bucket_config_t *out);

/* The process-wide bucket named key with this config (the config is part of the identity:
 * the same key with another token_bucket is another bucket), created full on first use.
 * Each get takes a reference; pt_token_bucket_shared_put drops it and frees the bucket with
 * the last one. Thread-safe. NULL on out-of-memory. */
pt_token_bucket_t *pt_token_bucket_shared_get(const char *key, const pt_token_bucket_config_t *cfg);
void pt_token_bucket_shared_put(pt_token_bucket_t *b);
/* Signature for pt_arena_defer. */
void pt_token_bucket_shared_put_cb(void *b);

#endif
