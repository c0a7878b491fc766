/* envoy.filters.http.compressor: compresses response bodies (and, when enabled, request
 * bodies) with the gzip, brotli or zstd library of its compressor_library, as Envoy does.
 *
 * A response is compressed when all of these hold (Envoy's order, which decides the stats):
 * compression is enabled; its content-length, when given, is at least min_content_length
 * (content_length_too_small otherwise); it is not an upgrade or one of
 * uncompressible_response_codes; its content-type (without parameters) is in the list, or
 * absent; cache-control has no no-transform; it has no etag when disable_on_etag_header
 * (not_compressed_etag otherwise); it has no content-encoding; the request's
 * Accept-Encoding chooses this filter's coding among the compressor filters that run for
 * the stream (filters/accept_encoding.h: q-values, identity, "*", choose_first); its
 * transfer-encoding holds no compression; and it has a body (not a HEAD, 204 or 304).
 * Then content-length goes,
 * content-encoding is set, a strong etag becomes weak; a response that could have been
 * compressed gets "Vary: Accept-Encoding" whatever the client accepted.
 *
 * The body is compressed as it passes: each chunk is replaced by the encoder's output for
 * it, flushed, so nothing is buffered beyond the encoder's own state; the end of the body
 * (or the trailers) finishes the stream. A request is compressed the same way when
 * request_direction_config enables it (content-type, length, no content-encoding).
 *
 * Stats, under http.<hcm stat_prefix>.compressor.<library name>.<library stat prefix>.:
 * the response ones both there (Envoy's legacy names) and under response., the request
 * ones under request.. Runtime keys (enabled.runtime_key) are accepted and the
 * default_value decides. A route's CompressorPerRoute turns the filter off for its requests
 * (disabled: true) or overrides remove_accept_encoding_header. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "filters/accept_encoding.h"
#include "filters/compression.h"
#include "filters/http_filter.h"
#include "proxy/config.h"
#include "proxy/conn_manager.h"
#include "proxy/stats.h"

extern const pt_http_filter_ops_t pt_compressor_filter;

/* Envoy's content types compressed when the config lists none. */
static const char *const default_types[] = {
    "text/html",       "text/plain",        "text/css",          "application/javascript",
    "application/x-javascript", "text/javascript", "text/x-javascript", "text/ecmascript",
    "text/js",         "text/jscript",      "text/x-js",         "application/ecmascript",
    "application/x-json", "application/xml", "application/json", "image/svg+xml",
    "text/xml",        "application/xhtml+xml",
};
#define NDEFAULT_TYPES (sizeof(default_types) / sizeof(default_types[0]))

#define MAX_CODES 16

typedef struct direction {
    int enabled;
    uint64_t min_length;
    const char *const *types;
    unsigned ntypes;
} direction_t;

#define RESPONSE_STATS(X)                                                                          \
    X(compressed) X(not_compressed) X(no_accept_header) X(header_identity)                         \
    X(header_compressor_used) X(header_compressor_overshadowed) X(header_wildcard)                 \
    X(header_not_valid) X(total_uncompressed_bytes) X(total_compressed_bytes)                      \
    X(content_length_too_small) X(not_compressed_etag)
#define REQUEST_STATS(X)                                                                           \
    X(compressed) X(not_compressed) X(total_uncompressed_bytes) X(total_compressed_bytes)

#define STAT_FIELD(n) pt_stat_t n;
typedef struct response_stats {
    RESPONSE_STATS(STAT_FIELD)
} response_stats_t;
typedef struct request_stats {
    REQUEST_STATS(STAT_FIELD)
} request_stats_t;

typedef struct compressor_config {
    pt_compression_lib_t lib;
    const char *lib_name; /* compressor_library.name */
    direction_t rs, rq;
    int disable_on_etag, remove_accept_encoding, choose_first;
    uint32_t codes[MAX_CODES]; /* uncompressible_response_codes */
    unsigned ncodes;
    response_stats_t legacy, response;
    request_stats_t request;
} compressor_config_t;

/* CompressorPerRoute: exactly one of disabled (true) or overrides. */
typedef struct compressor_per_route {
    int disabled;
    int remove_accept_encoding; /* -1: the filter's own setting */
} compressor_per_route_t;

typedef struct compressor_state {
    uint8_t off;            /* the route disabled the filter */
    uint8_t registered;     /* response compression enabled: a candidate in negotiation */
    uint8_t head;           /* a HEAD request */
    const char *accept;     /* the request's Accept-Encoding (arena copy), or NULL */
    pt_compression_stream_t *rs, *rq;
} compressor_state_t;

/* ---- config ------------------------------------------------------------------------------ */

/* A RuntimeFeatureFlag: default_value decides (petrel reads no runtime for it). */
static void parse_flag(pt_cfg_t *r, const char *field, int *out)
{
    if (pt_cfg_enter(r, field) <= 0)
        return;
    if (pt_cfg_bool(r, "default_value", out, 1) == 0)
        pt_cfg_error(r, "default_value", "is required");
    const char *key;
    int krc = pt_cfg_string(r, "runtime_key", &key, NULL);
    if (krc == 0 || (krc > 0 && key[0] == '\0'))
        pt_cfg_error(r, "runtime_key", "is required");
    pt_cfg_leave(r);
}

static void parse_types(pt_cfg_t *r, pt_arena_t *a, const char *field, direction_t *d)
{
    int present;
    size_t n = pt_cfg_array(r, field, &present);
    if (n > 0) {
        const char **types = pt_arena_alloc(a, n * sizeof(char *));
        for (size_t i = 0; i < n && types != NULL; i++) {
            json_t *v = pt_cfg_index_value(r, i);
            if (json_is_string(v) && json_string_length(v) > 0) {
                /* Compared as the response's is: the media type without parameters. */
                const char *t = json_string_value(v);
                while (*t == ' ' || *t == '\t')
                    t++;
                size_t len = strcspn(t, ";");
                while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
                    len--;
                types[d->ntypes++] = pt_arena_strndup(a, t, len);
                continue;
            }
            size_t saved = strlen(pt_cfg_path(r));
            pt_cfg_push_index(r, i);
            pt_cfg_error(r, NULL, "must be a non-empty string");
            pt_cfg_pop_path(r, saved);
        }
        d->types = types;
    }
    if (present)
        pt_cfg_leave_array(r);
}

/* CommonDirectionConfig: enabled, min_content_length (30), content_type. */
static void parse_common(pt_cfg_t *r, pt_arena_t *a, direction_t *d)
{
    if (pt_cfg_enter(r, "common_config") <= 0)
        return;
    parse_flag(r, "enabled", &d->enabled);
    pt_cfg_uint(r, "min_content_length", &d->min_length, 30, 0, UINT32_MAX);
    parse_types(r, a, "content_type", d);
    pt_cfg_leave(r);
}

static void parse_codes(pt_cfg_t *r, compressor_config_t *c)
{
    int present;
    size_t n = pt_cfg_array(r, "uncompressible_response_codes", &present);
    for (size_t i = 0; i < n; i++) {
        json_t *v = pt_cfg_index_value(r, i);
        json_int_t code = json_is_integer(v) ? json_integer_value(v) : 0;
        int dup = 0;
        for (unsigned k = 0; k < c->ncodes; k++)
            dup |= c->codes[k] == (uint32_t)code;
        if (code >= 200 && code < 600 && !dup && c->ncodes < MAX_CODES) {
            c->codes[c->ncodes++] = (uint32_t)code;
            continue;
        }
        size_t saved = strlen(pt_cfg_path(r));
        pt_cfg_push_index(r, i);
        pt_cfg_error(r, NULL,
                     dup ? "is listed twice"
                     : c->ncodes >= MAX_CODES && code >= 200 && code < 600
                         ? "is one code too many (petrel takes 16)"
                         : "must be a status code from 200 to 599");
        pt_cfg_pop_path(r, saved);
    }
    if (present)
        pt_cfg_leave_array(r);
}

static void *compressor_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    size_t before = r->nerrors;
    pt_arena_t *a = &cfg->arena;
    compressor_config_t *c = pt_arena_alloc(a, sizeof(*c));
    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->rs = (direction_t){.enabled = 1, .min_length = 30};
    c->rq = (direction_t){.enabled = 0, .min_length = 30};

    if (pt_cfg_enter(r, "compressor_library") > 0) {
        pt_cfg_string(r, "name", &c->lib_name, "");
        c->lib_name = pt_arena_strdup(a, c->lib_name);
        pt_compression_lib_parse(r, a, &c->lib);
        pt_cfg_leave(r);
    } else {
        pt_cfg_error(r, "compressor_library", "is required");
    }

    /* The deprecated top-level fields count only without response_direction_config, as in
     * Envoy (the new fields win where both are given). */
    int legacy_etag = 0, legacy_remove = 0;
    uint64_t legacy_length = 30;
    direction_t legacy = {.enabled = 1};
    parse_flag(r, "runtime_enabled", &legacy.enabled);
    pt_cfg_uint(r, "content_length", &legacy_length, 30, 0, UINT32_MAX);
    parse_types(r, a, "content_type", &legacy);
    pt_cfg_bool(r, "disable_on_etag_header", &legacy_etag, 0);
    pt_cfg_bool(r, "remove_accept_encoding_header", &legacy_remove, 0);
    legacy.min_length = legacy_length;

    if (pt_cfg_enter(r, "response_direction_config") > 0) {
        parse_common(r, a, &c->rs);
        pt_cfg_bool(r, "disable_on_etag_header", &c->disable_on_etag, 0);
        pt_cfg_bool(r, "remove_accept_encoding_header", &c->remove_accept_encoding, 0);
        parse_codes(r, c);
        int status_header = 0;
        pt_cfg_bool(r, "status_header_enabled", &status_header, 0);
        if (status_header)
            pt_cfg_error(r, "status_header_enabled",
                         "is not supported (petrel adds no compression status header)");
        pt_cfg_leave(r);
    } else {
        c->rs = legacy;
        c->disable_on_etag = legacy_etag;
        c->remove_accept_encoding = legacy_remove;
    }
    if (pt_cfg_enter(r, "request_direction_config") > 0) {
        /* Request compression is off unless common_config.enabled says otherwise. */
        parse_common(r, a, &c->rq);
        pt_cfg_leave(r);
    }
    pt_cfg_bool(r, "choose_first", &c->choose_first, 0);
    if (c->rs.ntypes == 0) {
        c->rs.types = default_types;
        c->rs.ntypes = NDEFAULT_TYPES;
    }
    if (c->rq.ntypes == 0) {
        c->rq.types = default_types;
        c->rq.ntypes = NDEFAULT_TYPES;
    }
    return r->nerrors == before ? c : NULL;
}

static void *compressor_parse_per_route(pt_cfg_t *r, pt_arena_t *a)
{
    size_t before = r->nerrors;
    compressor_per_route_t *pr = pt_arena_alloc(a, sizeof(*pr));
    if (pr == NULL)
        return NULL;
    pr->disabled = 0;
    pr->remove_accept_encoding = -1;
    static const char *const oneof[] = {"disabled", "overrides", NULL};
    pt_cfg_oneof(r, oneof, 1);
    if (pt_cfg_bool(r, "disabled", &pr->disabled, 0) > 0 && !pr->disabled)
        pt_cfg_error(r, "disabled", "must be true (leave it out to keep the filter on)");
    if (pt_cfg_enter(r, "overrides") > 0) {
        if (pt_cfg_enter(r, "response_direction_config") > 0) {
            int v;
            if (pt_cfg_bool(r, "remove_accept_encoding_header", &v, 0) > 0)
                pr->remove_accept_encoding = v;
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    return r->nerrors == before ? pr : NULL;
}

static int compressor_prepare(void *fc, pt_config_t *cfg, const char *hcm_stat_prefix)
{
    (void)cfg;
    compressor_config_t *c = fc;
    const char *t = "envoy_http_conn_manager_prefix";
    const char *hcm = hcm_stat_prefix ? hcm_stat_prefix : "";
    char root[PT_STAT_NAME_MAX / 2], name[PT_STAT_NAME_MAX];
    snprintf(root, sizeof(root), "compressor.%s.%s.", c->lib_name, c->lib.stat_prefix);
#define LEGACY(n)                                                                                  \
    snprintf(name, sizeof(name), "%s" #n, root);                                               \
    c->legacy.n = pt_stats_counter("http", t, hcm, name);
#define RESPONSE(n)                                                                                \
    snprintf(name, sizeof(name), "%sresponse." #n, root);                                      \
    c->response.n = pt_stats_counter("http", t, hcm, name);
#define REQUEST(n)                                                                                 \
    snprintf(name, sizeof(name), "%srequest." #n, root);                                       \
    c->request.n = pt_stats_counter("http", t, hcm, name);
    RESPONSE_STATS(LEGACY)
    RESPONSE_STATS(RESPONSE)
    REQUEST_STATS(REQUEST)
    return 0;
}

/* ---- header rules --------------------------------------------------------------------- */

/* Adds n to a response stat, under both of its names. */
#define RS_ADD(c, n, v) (pt_stat_add((c)->legacy.n, (v)), pt_stat_add((c)->response.n, (v)))

/* 1 when the comma-separated header value lists `token` (any case). */
static int has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e != '\0' && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        /* A directive may carry an argument (no-transform has none): compare the name. */
        const char *eq = memchr(p, '=', (size_t)(t - p));
        if (eq != NULL)
            t = eq;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return 1;
        p = e;
    }
    return 0;
}

static int type_allowed(const direction_t *d, const pt_http_headers_t *h)
{
    const char *ct = pt_http_headers_get(h, "content-type");
    if (ct == NULL)
        return 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    for (unsigned i = 0; i < d->ntypes; i++)
        if (strlen(d->types[i]) == n && strncasecmp(d->types[i], ct, n) == 0)
            return 1;
    return 0;
}

/* content-length at least min_length; no content-length passes (the body may be long). */
static int long_enough(const direction_t *d, const pt_http_headers_t *h, int *too_small)
{
    const char *cl = pt_http_headers_get(h, "content-length");
    *too_small = 0;
    if (cl == NULL)
        return 1;
    uint64_t n = 0;
    size_t i = 0;
    for (; cl[i] >= '0' && cl[i] <= '9' && i < 19; i++)
        n = n * 10 + (uint64_t)(cl[i] - '0');
    int ok = i > 0 && cl[i] == '\0' && n >= d->min_length;
    *too_small = !ok;
    return ok;
}

/* No transfer-coding of the message is a compression already. */
static int transfer_encoding_allowed(const pt_http_headers_t *h)
{
    const char *te = pt_http_headers_get_joined(h, "transfer-encoding");
    if (te == NULL)
        return 1;
    static const char *const codings[] = {"gzip", "x-gzip", "deflate", "compress", "br", "zstd"};
    for (size_t i = 0; i < sizeof(codings) / sizeof(codings[0]); i++)
        if (has_token(te, codings[i]))
            return 0;
    return 1;
}

/* "Vary: Accept-Encoding", appended to a Vary that does not already say it (or "*"). */
static int add_vary(pt_http_headers_t *h)
{
    const char *vary = pt_http_headers_get_joined(h, "vary");
    if (vary == NULL)
        return pt_http_headers_set_ref(h, "vary", "Accept-Encoding");
    if (has_token(vary, "accept-encoding") || has_token(vary, "*"))
        return 0;
    char *v = pt_arena_sprintf(h->arena, "%s, Accept-Encoding", vary);
    return v != NULL ? pt_http_headers_set(h, "vary", v) : -1;
}

/* A strong etag names exact bytes: once compressed it can only be a weak one. */
static int weaken_etag(pt_http_headers_t *h)
{
    const char *etag = pt_http_headers_get(h, "etag");
    if (etag == NULL || strncmp(etag, "W/", 2) == 0)
        return 0;
    char *v = pt_arena_sprintf(h->arena, "W/%s", etag);
    return v != NULL ? pt_http_headers_set(h, "etag", v) : -1;
}

/* Whether this filter's coding is the one the client's Accept-Encoding chooses among the
 * compressor filters running for the stream; counts the header stats. */
static int accepted(pt_http_stream_t *s, const compressor_config_t *c, const compressor_state_t *st)
{
    if (st->accept == NULL) {
        RS_ADD(c, no_accept_header, 1);
        return 0;
    }
    pt_ae_candidate_t cand[16];
    unsigned n = 0, self = 0;
    const pt_http_filter_manager_t *m = &s->fm;
    for (unsigned i = 0; i < m->nfilters && n < 16; i++) {
        if (m->filters[i].ops != &pt_compressor_filter)
            continue;
        const compressor_state_t *other = m->state[i];
        if (other == NULL || !other->registered)
            continue;
        const compressor_config_t *oc = m->filters[i].config;
        if (other == st)
            self = n;
        cand[n++] = (pt_ae_candidate_t){oc->lib.encoding, oc->choose_first};
    }
    unsigned chosen = 0;
    switch (pt_accept_encoding_choose(st->accept, cand, n, &chosen)) {
    case PT_AE_CODING:
        if (chosen == self)
            RS_ADD(c, header_compressor_used, 1);
        else
            RS_ADD(c, header_compressor_overshadowed, 1);
        return chosen == self;
    case PT_AE_WILDCARD:
        RS_ADD(c, header_wildcard, 1);
        return chosen == self;
    case PT_AE_IDENTITY:
        RS_ADD(c, header_identity, 1);
        return 0;
    case PT_AE_NOT_VALID:
        break;
    }
    RS_ADD(c, header_not_valid, 1);
    return 0;
}

static int status_excluded(const compressor_config_t *c, int status)
{
    if (status == 101)
        return 1;
    for (unsigned i = 0; i < c->ncodes; i++)
        if (c->codes[i] == (uint32_t)status)
            return 1;
    return 0;
}

/* ---- hooks -------------------------------------------------------------------------------- */

static int compressor_decode_headers(pt_http_stream_t *s, void *cfg, void *state,
                                     pt_http_headers_t *h, int end_stream)
{
    const compressor_config_t *c = cfg;
    compressor_state_t *st = state;
    const compressor_per_route_t *pr = pt_http_stream_route_config(s);
    if (pr != NULL && pr->disabled) {
        st->off = 1;
        return PT_CONTINUE;
    }
    st->registered = (uint8_t)c->rs.enabled;
    const char *method = pt_http_headers_get(h, ":method");
    st->head = method != NULL && strcmp(method, "HEAD") == 0;
    const char *ae = pt_http_headers_get_joined(h, "accept-encoding");
    if (ae != NULL)
        st->accept = pt_arena_strdup(&s->arena, ae);
    int remove = pr != NULL && pr->remove_accept_encoding >= 0 ? pr->remove_accept_encoding
                                                               : c->remove_accept_encoding;
    if (remove)
        pt_http_headers_remove(h, "accept-encoding");

    if (!c->rq.enabled)
        return PT_CONTINUE;
    int too_small;
    if (!end_stream && long_enough(&c->rq, h, &too_small) && type_allowed(&c->rq, h) &&
        !has_token(pt_http_headers_get_joined(h, "cache-control"), "no-transform") &&
        pt_http_headers_get(h, "content-encoding") == NULL && transfer_encoding_allowed(h)) {
        st->rq = pt_compression_stream_new(&c->lib);
        if (st->rq == NULL || pt_http_headers_set_ref(h, "content-encoding", c->lib.encoding) != 0) {
            pt_http_stream_local_reply(s, 503, "", NULL, 0, "out_of_memory");
            return PT_STOP;
        }
        pt_http_headers_remove(h, "content-length");
        pt_stat_inc(c->request.compressed);
    } else {
        pt_stat_inc(c->request.not_compressed);
    }
    return PT_CONTINUE;
}

/* Compresses a chunk in place; a failing encoder ends the stream. */
static int run(pt_http_stream_t *s, pt_compression_stream_t *z, pt_buf_t *data, int finish,
               pt_stat_t in_stat, pt_stat_t in_stat2, pt_stat_t out_stat, pt_stat_t out_stat2)
{
    size_t in = pt_buf_len(data);
    if (pt_compression_stream_run(z, data, finish) != 0) {
        pt_http_stream_reset(s, 0, "compressor_failed");
        return PT_STOP;
    }
    size_t out = pt_buf_len(data);
    pt_stat_add(in_stat, in);
    pt_stat_add(in_stat2, in);
    pt_stat_add(out_stat, out);
    pt_stat_add(out_stat2, out);
    return PT_CONTINUE;
}

static int compressor_decode_data(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                                  int end_stream)
{
    const compressor_config_t *c = cfg;
    compressor_state_t *st = state;
    if (st->rq == NULL)
        return PT_CONTINUE;
    return run(s, st->rq, data, end_stream, c->request.total_uncompressed_bytes, 0,
               c->request.total_compressed_bytes, 0);
}

static int compressor_decode_trailers(pt_http_stream_t *s, void *cfg, void *state,
                                      pt_http_headers_t *t)
{
    (void)t;
    const compressor_config_t *c = cfg;
    compressor_state_t *st = state;
    if (st->rq == NULL)
        return PT_CONTINUE;
    pt_buf_t tail = {0};
    if (run(s, st->rq, &tail, 1, 0, 0, c->request.total_compressed_bytes, 0) != PT_CONTINUE)
        return PT_STOP;
    pt_http_stream_add_decoded_data(s, &tail);
    return PT_CONTINUE;
}

static int compressor_encode_headers(pt_http_stream_t *s, void *cfg, void *state,
                                     pt_http_headers_t *h, int end_stream)
{
    const compressor_config_t *c = cfg;
    compressor_state_t *st = state;
    int too_small = 0;
    int status = pt_http_status_value(pt_http_headers_get(h, ":status"), 0);
    int enabled = c->rs.enabled && !st->off;
    int enough = enabled && long_enough(&c->rs, h, &too_small);
    if (too_small && enabled)
        RS_ADD(c, content_length_too_small, 1);
    int etag_ok = 1;
    int compressible =
        enough && !status_excluded(c, status) &&
        pt_http_headers_get(h, "upgrade") == NULL && type_allowed(&c->rs, h) &&
        !has_token(pt_http_headers_get_joined(h, "cache-control"), "no-transform") &&
        (etag_ok = !(c->disable_on_etag && pt_http_headers_get(h, "etag") != NULL)) &&
        pt_http_headers_get(h, "content-encoding") == NULL;
    if (!etag_ok)
        RS_ADD(c, not_compressed_etag, 1);
    /* A response that has no body (HEAD, 204, 304) is never compressed, but it varies as its
     * full form would: the Vary below still applies. */
    int bodyless = end_stream || st->head || status == 204 || status == 304;
    if (!bodyless && compressible && accepted(s, c, st) && transfer_encoding_allowed(h)) {
        st->rs = pt_compression_stream_new(&c->lib);
        if (st->rs == NULL || weaken_etag(h) != 0 ||
            pt_http_headers_set_ref(h, "content-encoding", c->lib.encoding) != 0) {
            pt_http_stream_reset(s, 0, "compressor_failed");
            return PT_STOP;
        }
        pt_http_headers_remove(h, "content-length");
        RS_ADD(c, compressed, 1);
    } else {
        RS_ADD(c, not_compressed, 1);
    }
    if (compressible && add_vary(h) != 0) {
        pt_http_stream_reset(s, 0, "compressor_failed");
        return PT_STOP;
    }
    return PT_CONTINUE;
}

static int compressor_encode_data(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                                  int end_stream)
{
    const compressor_config_t *c = cfg;
    compressor_state_t *st = state;
    if (st->rs == NULL)
        return PT_CONTINUE;
    return run(s, st->rs, data, end_stream, c->legacy.total_uncompressed_bytes,
               c->response.total_uncompressed_bytes, c->legacy.total_compressed_bytes,
               c->response.total_compressed_bytes);
}

static int compressor_encode_trailers(pt_http_stream_t *s, void *cfg, void *state,
                                      pt_http_headers_t *t)
{
    (void)t;
    const compressor_config_t *c = cfg;
    compressor_state_t *st = state;
    if (st->rs == NULL)
        return PT_CONTINUE;
    pt_buf_t tail = {0};
    if (run(s, st->rs, &tail, 1, 0, 0, c->legacy.total_compressed_bytes,
            c->response.total_compressed_bytes) != PT_CONTINUE)
        return PT_STOP;
    pt_http_stream_add_encoded_data(s, &tail);
    return PT_CONTINUE;
}

static void compressor_on_destroy(pt_http_stream_t *s, void *cfg, void *state)
{
    (void)s, (void)cfg;
    compressor_state_t *st = state;
    pt_compression_stream_free(st->rs);
    pt_compression_stream_free(st->rq);
    st->rs = st->rq = NULL;
}

const pt_http_filter_ops_t pt_compressor_filter = {
    .name = "envoy.filters.http.compressor",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
    .state_size = sizeof(compressor_state_t),
    .parse = compressor_parse,
    .prepare = compressor_prepare,
    .per_route_type_url =
        "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute",
    .parse_per_route = compressor_parse_per_route,
    .decode_headers = compressor_decode_headers,
    .decode_data = compressor_decode_data,
    .decode_trailers = compressor_decode_trailers,
    .encode_headers = compressor_encode_headers,
    .encode_data = compressor_encode_data,
    .encode_trailers = compressor_encode_trailers,
    .on_destroy = compressor_on_destroy,
};
