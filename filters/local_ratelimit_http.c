/* envoy.filters.http.local_ratelimit: a token bucket in front of the router.
 *
 * For the fraction of requests filter_enabled selects (0% when unset, as in Envoy), a request
 * takes one token. With none left it is rate limited; for the fraction filter_enforced
 * selects (0% when unset) it is answered locally with `status` (429) and the body
 * "local_rate_limited", response flag RL, details "local_rate_limited", plus
 * response_headers_to_add. A gRPC request gets a trailers-only answer instead (grpc-status
 * UNAVAILABLE, or RESOURCE_EXHAUSTED with rate_limited_as_resource_exhausted). A limited
 * request that is not enforced goes on upstream with request_headers_to_add_when_not_enforced.
 * With enable_x_ratelimit_headers: DRAFT_VERSION_03, every response to an enabled request
 * carries x-ratelimit-limit, x-ratelimit-remaining and x-ratelimit-reset, read when the
 * response headers pass (encode_headers), as Envoy does.
 *
 * The bucket is one per filter for the whole process (all workers take from the same atomic
 * word: filters/token_bucket.h), or with local_rate_limit_per_downstream_connection one per
 * downstream connection. Stats: <stat_prefix>.http_local_rate_limit.{enabled, ok,
 * rate_limited, enforced}.
 *
 * Per route (typed_per_filter_config), a LocalRateLimit of its own replaces the filter's for
 * the route's requests: its own bucket, fractions, answer and stats (under its own
 * stat_prefix), as in Envoy. The filter itself may then leave token_bucket out: requests of
 * routes without a config of their own are not limited. Differences from Envoy:
 * docs/local_ratelimit.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/filter_common.h"
#include "proxy/grpc.h"
#include "filters/http_filter.h"
#include "filters/token_bucket.h"
#include "proxy/conn_manager.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/stats.h"

#define MAX_HEADER_OPTIONS 10 /* Envoy's max_items for both header lists */

typedef struct lrl_stats {
    pt_stat_t enabled;
    pt_stat_t ok;
    pt_stat_t rate_limited;
    pt_stat_t enforced;
} lrl_stats_t;

typedef struct lrl_config {
    const char *stat_prefix;
    int has_bucket; /* token_bucket given (a filter may leave it to its routes) */
    int status;
    pt_token_bucket_config_t bucket_cfg;
    pt_token_bucket_t *shared; /* the process-wide bucket (NULL when per connection) */
    int per_connection;
    pt_fractional_percent_t enabled, enforced;
    pt_header_mutations_t response_headers;
    pt_header_mutations_t request_headers_not_enforced;
    int x_ratelimit_headers;
    int resource_exhausted;
    lrl_stats_t stats;
} lrl_config_t;

struct conn_bucket;

typedef struct lrl_state {
    const struct lrl_config *c; /* in force for the request: the route's, else the filter's */
    pt_token_bucket_t *bucket; /* set when the request was enabled (x-ratelimit-* source) */
    struct conn_bucket *entry; /* the per-connection bucket's entry, held until on_destroy */
} lrl_state_t;

static const char *const lrl_unsupported[] = {"local_cluster_rate_limit", "rate_limits", NULL};
static const char *const xrl_names[] = {"OFF", "DRAFT_VERSION_03", NULL};
static const char *const vh_rate_limits_names[] = {"OVERRIDE", "INCLUDE", "IGNORE", NULL};

/* A HeaderValueOption list with Envoy's max_items. */
static void parse_header_list(pt_cfg_t *r, const char *field, pt_arena_t *a,
                              pt_header_mutations_t *m)
{
    json_t *v = pt_cfg_has(r, field) ? pt_cfg_get(r, field) : NULL;
    if (v != NULL && json_is_array(v) && json_array_size(v) > MAX_HEADER_OPTIONS) {
        pt_cfg_error(r, field, "has %zu entries; at most %d are allowed (as in Envoy)",
                     json_array_size(v), MAX_HEADER_OPTIONS);
        memset(m, 0, sizeof(*m));
        return;
    }
    pt_header_mutations_parse(r, a, field, NULL, m);
}

static lrl_config_t *parse_lrl(pt_cfg_t *r, pt_arena_t *a, int per_route)
{
    size_t before = r->nerrors;
    char where[sizeof(r->path)];
    snprintf(where, sizeof(where), "%s", pt_cfg_path(r));
    lrl_config_t *c = pt_arena_alloc(a, sizeof(*c));
    if (c == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    pt_cfg_unsupported(r, lrl_unsupported);

    const char *s;
    if (pt_cfg_string(r, "stat_prefix", &s, NULL) == 0 || (s != NULL && s[0] == '\0'))
        pt_cfg_error(r, "stat_prefix", "is required");
    c->stat_prefix = pt_arena_strdup(a, s ? s : "");

    int status;
    pt_http_status_field(r, "status", &status, 429);
    c->status = status >= 400 ? status : 429; /* Envoy: below 400 means 429 */

    /* A filter may leave the bucket to per-route configs; a route's config needs one. */
    c->has_bucket = pt_cfg_has(r, "token_bucket");
    if (c->has_bucket)
        pt_token_bucket_config_field(r, "token_bucket", &c->bucket_cfg);
    else if (per_route)
        pt_cfg_error(r, "token_bucket", "is required in a route's local rate limit config");

    pt_fractional_percent_t zero = {0, 100};
    pt_runtime_fractional_percent_field(r, "filter_enabled", &c->enabled, zero);
    pt_runtime_fractional_percent_field(r, "filter_enforced", &c->enforced, zero);
    parse_header_list(r, "response_headers_to_add", a, &c->response_headers);
    parse_header_list(r, "request_headers_to_add_when_not_enforced", a,
                      &c->request_headers_not_enforced);

    /* Descriptors need the route's rate_limits actions to produce request descriptors;
     * petrel has neither. An empty list changes nothing and is accepted. */
    json_t *d = pt_cfg_has(r, "descriptors") ? pt_cfg_get(r, "descriptors") : NULL;
    if (d != NULL && !(json_is_array(d) && json_array_size(d) == 0))
        pt_cfg_error(r, "descriptors", "descriptors are not supported");
    /* These only shape how descriptors are produced and consumed: without descriptors they
     * have no effect, in Envoy as here. They are validated and accepted. */
    uint64_t u;
    pt_cfg_uint(r, "stage", &u, 0, 0, 10);
    int e, b;
    pt_cfg_enum_or_number(r, "vh_rate_limits", vh_rate_limits_names, &e, 0);
    pt_cfg_bool(r, "always_consume_default_token_bucket", &b, 1);
    pt_cfg_uint(r, "max_dynamic_descriptors", &u, 20, 0, UINT32_MAX);

    pt_cfg_bool(r, "local_rate_limit_per_downstream_connection", &c->per_connection, 0);
    pt_cfg_enum_or_number(r, "enable_x_ratelimit_headers", xrl_names, &c->x_ratelimit_headers, 0);
    pt_cfg_bool(r, "rate_limited_as_resource_exhausted", &c->resource_exhausted, 0);

    if (r->nerrors != before)
        return NULL;
    if (!c->per_connection && c->has_bucket) {
        /* One bucket per place in the config: a reload that keeps this filter (or route)
         * where it was, with the same token_bucket, keeps the bucket's state. */
        char key[sizeof(where) + 32];
        snprintf(key, sizeof(key), "http_local_ratelimit|%s", where);
        c->shared = pt_token_bucket_shared_get(key, &c->bucket_cfg);
        if (c->shared == NULL ||
            pt_arena_defer(a, pt_token_bucket_shared_put_cb, c->shared) != 0) {
            pt_token_bucket_shared_put(c->shared);
            pt_cfg_error(r, NULL, "out of memory");
            return NULL;
        }
    }
    return c;
}

static void register_stats(lrl_config_t *c);

static void *lrl_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    return parse_lrl(r, &cfg->arena, 0);
}

/* A route's own LocalRateLimit. Its stats are registered here (route configurations are
 * parsed on the main thread, as prepare runs): <its stat_prefix>.http_local_rate_limit.*. */
static void *lrl_parse_per_route(pt_cfg_t *r, pt_arena_t *a)
{
    lrl_config_t *c = parse_lrl(r, a, 1);
    if (c != NULL)
        register_stats(c);
    return c;
}

static int lrl_prepare(void *fc, pt_config_t *cfg, const char *hcm_stat_prefix)
{
    (void)cfg;
    (void)hcm_stat_prefix;
    register_stats(fc);
    return 0;
}

static void register_stats(lrl_config_t *c)
{
    /* Envoy roots these at <stat_prefix>.http_local_rate_limit. (not under http.<hcm>). */
#define LRL_STAT(n)                                                                                \
    c->stats.n = pt_stats_counter(c->stat_prefix, NULL, NULL, "http_local_rate_limit." #n)
    LRL_STAT(enabled);
    LRL_STAT(ok);
    LRL_STAT(rate_limited);
    LRL_STAT(enforced);
#undef LRL_STAT
}

/* ---- per-connection buckets -------------------------------------------------------------
 *
 * HTTP filters see streams, not connections, so the per-connection buckets live in a table
 * per worker (touched only by that worker's thread), keyed by the connection manager's
 * connection object and the filter config. A closed connection's memory may be reused by
 * the next one, so an entry also records the downstream connection and its peer address
 * (with the port) and starts over as a new, full bucket when they no longer match. Entries
 * of closed connections are swept when the table has grown to twice what was alive at the
 * last sweep (one walk of the worker's sessions, amortized over the insertions); an entry a
 * stream still points at (its response not yet sent) waits for that stream to end. */

typedef struct conn_bucket {
    struct conn_bucket *next;
    unsigned refs; /* streams using it: freed only when none is (and its connection is gone) */
    const void *hcm;
    const lrl_config_t *cfg;
    const pt_conn_t *conn;
    pt_addr_t peer;
    pt_token_bucket_t bucket;
} conn_bucket_t;

typedef struct conn_table {
    conn_bucket_t **slots;
    size_t cap; /* power of two */
    size_t count;
    size_t sweep_at;
} conn_table_t;

#define MAX_WORKER_TABLES 1024
/* Reachable from here for the life of the process (as worker state is). */
static conn_table_t *worker_tables[MAX_WORKER_TABLES];

static size_t hash_ptr(const void *p, size_t mask)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull;
    return (size_t)((h ^ (h >> 29)) & mask);
}

static size_t slot_of(const conn_table_t *t, const void *hcm, const lrl_config_t *cfg)
{
    return hash_ptr((const char *)hcm + ((uintptr_t)cfg >> 4), t->cap - 1);
}

static int same_connection(const conn_bucket_t *e, const pt_conn_t *conn)
{
    return e->conn == conn && memcmp(&e->peer, &conn->peer, sizeof(e->peer)) == 0;
}

/* Drops the entries whose connection is gone. */
static void sweep(conn_table_t *t, pt_worker_t *w)
{
    size_t nlive = 0;
    for (const pt_session_t *ss = w->sessions; ss != NULL; ss = ss->next)
        nlive++;
    size_t scap = 16;
    while (scap < nlive * 2)
        scap <<= 1;
    const pt_session_t **set = calloc(scap, sizeof(*set));
    if (set == NULL)
        return;
    for (const pt_session_t *ss = w->sessions; ss != NULL; ss = ss->next) {
        if (ss->terminal == NULL)
            continue;
        size_t h = hash_ptr(ss->terminal, scap - 1);
        while (set[h] != NULL)
            h = (h + 1) & (scap - 1);
        set[h] = ss;
    }
    for (size_t i = 0; i < t->cap; i++) {
        conn_bucket_t **pp = &t->slots[i];
        while (*pp != NULL) {
            conn_bucket_t *e = *pp;
            int alive = 0;
            for (size_t h = hash_ptr(e->hcm, scap - 1); set[h] != NULL && !alive;
                 h = (h + 1) & (scap - 1))
                alive = set[h]->terminal == e->hcm && set[h]->conn != NULL &&
                        same_connection(e, set[h]->conn);
            if (alive || e->refs > 0) {
                pp = &e->next;
            } else {
                *pp = e->next;
                free(e);
                t->count--;
            }
        }
    }
    free(set);
    t->sweep_at = t->count * 2 + 64;
}

static int table_grow(conn_table_t *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 64;
    conn_bucket_t **n = calloc(ncap, sizeof(*n));
    if (n == NULL)
        return -1;
    conn_table_t nt = {n, ncap, t->count, t->sweep_at};
    for (size_t i = 0; i < t->cap; i++) {
        while (t->slots[i] != NULL) {
            conn_bucket_t *e = t->slots[i];
            t->slots[i] = e->next;
            size_t k = slot_of(&nt, e->hcm, e->cfg);
            e->next = n[k];
            n[k] = e;
        }
    }
    free(t->slots);
    *t = nt;
    return 0;
}

static conn_bucket_t *connection_bucket(pt_http_stream_t *s, const lrl_config_t *c)
{
    int id = s->worker->id;
    const pt_conn_t *conn = pt_http_stream_downstream_conn(s);
    if (id < 0 || id >= MAX_WORKER_TABLES || conn == NULL)
        return NULL;
    conn_table_t *t = worker_tables[id];
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL)
            return NULL;
        t->sweep_at = 64;
        worker_tables[id] = t;
    }
    if (t->cap > 0) {
        for (conn_bucket_t *e = t->slots[slot_of(t, s->hcm, c)]; e != NULL; e = e->next) {
            if (e->hcm != (const void *)s->hcm || e->cfg != c)
                continue;
            if (!same_connection(e, conn)) {
                /* A new connection where a closed one was: a new, full bucket. */
                e->conn = conn;
                e->peer = conn->peer;
                pt_token_bucket_init(&e->bucket, &c->bucket_cfg, NULL);
            }
            return e;
        }
    }
    if (t->count >= t->sweep_at)
        sweep(t, s->worker);
    if ((t->count + 1) * 2 > t->cap && table_grow(t) != 0)
        return NULL;
    conn_bucket_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->hcm = s->hcm;
    e->cfg = c;
    e->conn = conn;
    e->peer = conn->peer;
    pt_token_bucket_init(&e->bucket, &c->bucket_cfg, NULL);
    size_t k = slot_of(t, s->hcm, c);
    e->next = t->slots[k];
    t->slots[k] = e;
    t->count++;
    return e;
}

/* ---- the filter ------------------------------------------------------------------------ */

static int lrl_decode_headers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                              int end_stream)
{
    (void)end_stream;
    const lrl_config_t *route = pt_http_stream_route_config(s);
    const lrl_config_t *c = route != NULL ? route : (const lrl_config_t *)cfg;
    lrl_state_t *st = state;
    st->c = c;
    if (!c->has_bucket || !pt_fractional_percent_sample(&c->enabled))
        return PT_CONTINUE;
    pt_stat_inc(c->stats.enabled);
    pt_token_bucket_t *b = c->shared;
    if (c->per_connection) {
        st->entry = connection_bucket(s, c);
        if (st->entry != NULL) {
            st->entry->refs++;
            b = &st->entry->bucket;
        } else {
            b = NULL;
        }
    }
    if (b == NULL) {
        /* Out of memory for a per-connection bucket: let the request through. */
        pt_stat_inc(c->stats.ok);
        return PT_CONTINUE;
    }
    st->bucket = b;
    int allowed = pt_token_bucket_consume(b);
    pt_debug("local_rate_limit %s: %s", c->stat_prefix, allowed ? "allowed" : "rate limited");
    if (allowed) {
        pt_stat_inc(c->stats.ok);
        return PT_CONTINUE;
    }
    pt_stat_inc(c->stats.rate_limited);
    if (!pt_fractional_percent_sample(&c->enforced)) {
        pt_header_mutations_apply(&c->request_headers_not_enforced, h, &s->info);
        return PT_CONTINUE;
    }
    pt_stat_inc(c->stats.enforced);
    pt_http_headers_t extra;
    pt_http_headers_init(&extra, &s->arena);
    pt_header_mutations_apply(&c->response_headers, &extra, &s->info);
    if (pt_grpc_is_request(h))
        pt_http_grpc_local_reply(s, c->resource_exhausted ? 8 : pt_grpc_status_from_http(c->status),
                                 "local_rate_limited", &extra, PT_RF(RATE_LIMITED),
                                 "local_rate_limited");
    else
        pt_http_stream_local_reply(s, c->status, "local_rate_limited", &extra, PT_RF(RATE_LIMITED),
                                   "local_rate_limited");
    return PT_STOP;
}

static int lrl_encode_headers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                              int end_stream)
{
    (void)s;
    (void)end_stream;
    (void)cfg;
    lrl_state_t *st = state;
    const lrl_config_t *c = st->c;
    if (st->bucket == NULL || c == NULL || !c->x_ratelimit_headers)
        return PT_CONTINUE;
    uint32_t remaining;
    uint64_t reset;
    pt_token_bucket_status(st->bucket, &remaining, &reset);
    char v[24];
    snprintf(v, sizeof(v), "%u", (unsigned)c->bucket_cfg.max_tokens);
    pt_http_headers_add_str(h, "x-ratelimit-limit", v);
    snprintf(v, sizeof(v), "%u", (unsigned)remaining);
    pt_http_headers_add_str(h, "x-ratelimit-remaining", v);
    snprintf(v, sizeof(v), "%llu", (unsigned long long)reset);
    pt_http_headers_add_str(h, "x-ratelimit-reset", v);
    return PT_CONTINUE;
}

static void lrl_on_destroy(pt_http_stream_t *s, void *cfg, void *state)
{
    (void)s;
    (void)cfg;
    lrl_state_t *st = state;
    if (st->entry != NULL) {
        st->entry->refs--;
        st->entry = NULL;
    }
    st->bucket = NULL;
}

const pt_http_filter_ops_t pt_local_ratelimit_http_filter = {
    .name = "envoy.filters.http.local_ratelimit",
    .type_url =
        "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    .state_size = sizeof(lrl_state_t),
    .parse = lrl_parse,
    .prepare = lrl_prepare,
    .parse_per_route = lrl_parse_per_route,
    .decode_headers = lrl_decode_headers,
    .encode_headers = lrl_encode_headers,
    .on_destroy = lrl_on_destroy,
};
