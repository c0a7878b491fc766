/* Tracing per request (proxy/tracing.h): the decision, the incoming context, the stream's
 * span and the upstream tries' spans, the propagation headers, and the span's copy for the
 * main thread (proxy/span_queue.c). Worker threads. */
#include "proxy/tracing.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config.h"
#include "proxy/conn_manager.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/random.h"
#include "proxy/route.h"
#include "proxy/time.h"
#include "proxy/trace_context.h"
#include "proxy/tracer.h"

/* ======================================================================================
 * Spans (worker)
 * ====================================================================================== */

struct pt_trace_span {
    pt_tracer_t *tracer;
    uint64_t trace_hi, trace_lo, id, parent_id;
    uint64_t start_wall_us, start_mono_us;
    const char *name;
    uint8_t kind, shared, sampled, debug;
    uint8_t spawn;        /* tries get CLIENT spans of their own */
    uint8_t ingress;      /* the listener is not OUTBOUND */
    uint8_t propagate_op; /* the decorator's operation goes to the response / upstream */
    uint8_t replace;      /* the request holds trace headers: injecting replaces them */
    int status;           /* a try's response status */
    char trace_hex[33];   /* the trace id, for %TRACE_ID% */
    /* What inject writes (the values of the headers it adds point here): the span id, the
     * parent's, a traceparent. */
    char span_hex[17], parent_hex[17], traceparent[56];
};

static uint64_t wall_us_now(const pt_http_stream_t *s)
{
    return s->info.start_wall_us + (pt_loop_us() - s->info.start_mono_us);
}

/* The request headers tracing reads, found in one pass. */
typedef struct trace_headers {
    const char *rid, *client_trace_id, *force_trace, *decorator_op, *authority;
    const char *b3, *b3_trace, *b3_span, *b3_parent, *b3_sampled, *b3_flags, *traceparent;
    pt_http_header_t *rid_entry; /* the first x-request-id */
    int rid_dups;                /* more than one came */
    uint32_t rid_len;
    int any_context; /* some B3 or traceparent header came: injecting must replace them */
} trace_headers_t;

#define NAME_IS(e, lit)                                                                            \
    ((e)->name_len == sizeof(lit) - 1 && memcmp((e)->name, lit, sizeof(lit) - 1) == 0)

/* One pass, dispatched on the name's length first: most headers go by on a jump and one
 * compare. Where a name comes twice, :authority and x-request-id take the first, the others
 * the last. */
static void scan_headers(pt_http_headers_t *h, trace_headers_t *th)
{
    memset(th, 0, sizeof(*th));
    for (uint32_t i = 0; i < h->count; i++) {
        pt_http_header_t *e = &h->items[i];
        switch (e->name_len) {
        case 2:
            if (NAME_IS(e, "b3")) {
                th->b3 = e->value;
                th->any_context = 1;
            }
            continue;
        case 10:
            if (NAME_IS(e, ":authority")) {
                if (th->authority == NULL)
                    th->authority = e->value;
                continue;
            }
            break;
        case 11:
            if (NAME_IS(e, "traceparent")) {
                th->traceparent = e->value;
                th->any_context = 1;
                continue;
            }
            break;
        case 12:
            if (NAME_IS(e, "x-request-id")) {
                if (th->rid == NULL) {
                    th->rid = e->value;
                    th->rid_len = e->value_len;
                    th->rid_entry = e;
                } else {
                    th->rid_dups = 1;
                }
                continue;
            }
            break;
        case 17:
            if (NAME_IS(e, "x-client-trace-id")) {
                th->client_trace_id = e->value;
                continue;
            }
            break;
        case 19:
            if (NAME_IS(e, "x-envoy-force-trace")) {
                th->force_trace = e->value;
                continue;
            }
            break;
        case 27:
            if (NAME_IS(e, "x-envoy-decorator-operation")) {
                th->decorator_op = e->value;
                continue;
            }
            break;
        default:
            break;
        }
        /* Any x-b3-* header, even one petrel does not read, is a context to replace. */
        if (e->name_len > 5 && e->name[0] == 'x' && memcmp(e->name, "x-b3-", 5) == 0) {
            th->any_context = 1;
            if (NAME_IS(e, "x-b3-traceid"))
                th->b3_trace = e->value;
            else if (NAME_IS(e, "x-b3-spanid"))
                th->b3_span = e->value;
            else if (NAME_IS(e, "x-b3-parentspanid"))
                th->b3_parent = e->value;
            else if (NAME_IS(e, "x-b3-sampled"))
                th->b3_sampled = e->value;
            else if (NAME_IS(e, "x-b3-flags"))
                th->b3_flags = e->value;
        }
    }
}

/* Envoy's decision, on the request id (ConnectionManagerUtility::mutateTracingRequestHeader). */
static pt_trace_status_t decide(pt_http_stream_t *s, const trace_headers_t *th,
                                const pt_tracing_config_t *tc, const pt_route_tracing_t *rt)
{
    const char *rid = th->rid;
    uint64_t rint;
    if (pt_trace_rid_integer_n(rid, th->rid_len, &rint) != 0)
        return PT_TRACE_NONE;
    pt_fraction_t client = tc->client_sampling, random = tc->random_sampling,
                  overall = tc->overall_sampling;
    if (rt != NULL) {
        if (rt->has_client)
            client = rt->client_sampling;
        if (rt->has_random)
            random = rt->random_sampling;
        if (rt->has_overall)
            overall = rt->overall_sampling;
    }
    pt_trace_status_t was = pt_trace_rid_status_n(rid, th->rid_len);
    int external = s->config->use_remote_address && !s->internal;
    pt_trace_status_t st = pt_trace_decide(
        was, rint, th->client_trace_id != NULL, !external && th->force_trace != NULL,
        th->client_trace_id != NULL ? pt_random_below(client.den) : 0, client, random, overall);
    if (st != was && th->rid_len == 36) {
        /* The decision goes into the request id (a copy: the value may be the read buffer's). */
        char *copy = pt_arena_alloc(&s->arena, 37);
        if (copy == NULL)
            return st;
        pt_span_copy(copy, rid, 36);
        copy[36] = '\0';
        pt_trace_rid_set_status(copy, st);
        if (th->rid_dups)
            pt_http_headers_set_ref(s->request_headers, "x-request-id", copy);
        else
            th->rid_entry->value = copy; /* the one entry, its length unchanged */
    }
    return st;
}

/* The incoming context, as the tracer reads it. Returns 1 with ids, 0 without; *sampled is
 * the caller's decision (-1: none), *b3 whether the ids came by B3. */
static int extract(const pt_tracer_t *t, const trace_headers_t *th, pt_trace_ctx_t *in,
                   int *sampled, int *b3)
{
    *sampled = -1;
    *b3 = 0;
    if (!th->any_context)
        return 0;
    if (t->extract_b3) {
        int rc = -1;
        if (th->b3 != NULL)
            rc = pt_trace_parse_b3(th->b3, in);
        else
            rc = pt_trace_parse_b3_multi(th->b3_trace, th->b3_span, th->b3_parent, th->b3_sampled,
                                         th->b3_flags, in);
        if (rc == 0 || in->sampled >= 0)
            *sampled = in->sampled;
        if (rc == 0 && in->span_id != 0) {
            *b3 = 1;
            return 1;
        }
    }
    if (t->extract_w3c && th->traceparent != NULL) {
        pt_trace_ctx_t w;
        if (pt_trace_parse_traceparent(th->traceparent, &w) == 0) {
            *in = w;
            if (*sampled < 0)
                *sampled = w.sampled;
            return 1;
        }
    }
    return 0;
}

void pt_tracing_begin(pt_http_stream_t *s)
{
    const pt_tracing_config_t *tc = s->config->tracing;
    pt_tracer_t *t = tc->tracer;
    pt_http_headers_t *h = s->request_headers;
    const pt_route_tracing_t *rt = s->route != NULL ? s->route->tracing : NULL;
    trace_headers_t th;
    scan_headers(h, &th);
    pt_trace_status_t st = decide(s, &th, tc, rt);
    pt_trace_span_t *sp = pt_arena_alloc(&s->arena, sizeof(*sp));
    if (sp == NULL)
        return;
    /* The ids' text is written where it is used, so only the fields before it are cleared. */
    memset(sp, 0, offsetof(pt_trace_span_t, trace_hex));
    sp->tracer = t;
    sp->spawn = tc->spawn_upstream_span || t->split_spans;
    sp->replace = (uint8_t)th.any_context;
    const pt_listener_config_t *l = s->hcm != NULL ? pt_hcm_listener(s->hcm) : NULL;
    sp->ingress = l == NULL || l->traffic_direction != PT_TRAFFIC_OUTBOUND;
    sp->kind = sp->ingress || sp->spawn ? PT_SPAN_SERVER : PT_SPAN_CLIENT;
    pt_trace_ctx_t in;
    int sampled, b3;
    if (extract(t, &th, &in, &sampled, &b3)) {
        sp->trace_hi = in.trace_hi;
        sp->trace_lo = in.trace_lo;
        if (sp->kind == PT_SPAN_SERVER && b3 && t->shared_span_context) {
            /* Zipkin's shared span: the server side of the caller's client span. */
            sp->id = in.span_id;
            sp->parent_id = in.parent_id;
            sp->shared = 1;
        } else {
            sp->id = pt_trace_new_id();
            sp->parent_id = in.span_id;
        }
        sp->debug = (uint8_t)in.debug;
    } else {
        /* Not a context (or a bad one: it is ignored): a new trace starts here. */
        sp->trace_lo = pt_trace_new_id();
        sp->trace_hi = t->trace_id_128bit ? pt_trace_new_id() : 0;
        sp->id = pt_trace_new_id();
        sp->parent_id = 0;
    }
    sp->sampled = (uint8_t)(sampled >= 0 ? sampled : st != PT_TRACE_NONE);
    sp->start_wall_us = s->info.start_wall_us;
    sp->start_mono_us = s->info.start_mono_us;
    sp->name = th.authority != NULL ? th.authority : "";
    if (rt != NULL && rt->operation != NULL) {
        sp->name = rt->operation;
        sp->propagate_op = (uint8_t)rt->propagate;
    }
    if (sp->ingress) {
        /* The caller's decorator names the span, and the header stops here. */
        if (th.decorator_op != NULL) {
            if (th.decorator_op[0]) {
                sp->name = th.decorator_op;
                sp->propagate_op = 0;
            }
            pt_http_headers_remove(h, "x-envoy-decorator-operation");
        }
    } else if (sp->propagate_op && rt != NULL && rt->operation != NULL) {
        pt_http_headers_set_ref(h, "x-envoy-decorator-operation", rt->operation);
    }
    pt_trace_id_hex(sp->trace_hi, sp->trace_lo, 1, sp->trace_hex);
    s->info.trace_id = sp->trace_hex;
    s->span = sp;
}

void pt_tracing_response_headers(pt_http_stream_t *s, pt_http_headers_t *h)
{
    pt_trace_span_t *sp = s->span;
    if (sp->ingress && sp->propagate_op && s->route != NULL && s->route->tracing != NULL &&
        s->route->tracing->operation != NULL)
        pt_http_headers_set_ref(h, "x-envoy-decorator-operation", s->route->tracing->operation);
}

/* ---- finishing --------------------------------------------------------------------- */

/* A sampled span ends: its record, one heap block, is filled here and queued for the main
 * thread, which formats it (proxy/span_tags.c, the exporters). Only what the request holds
 * is copied (header values, names); numbers, flags and addresses stay binary, so the worker
 * formats nothing. */

/* Room for `strs` bytes of strings and `ncustom` custom tags; NULL (counted as dropped) when
 * memory runs out. *p: where the strings go. */
static pt_span_rec_t *rec_new(const pt_trace_span_t *sp, uint64_t end_wall_us, size_t strs,
                              unsigned ncustom, char **p)
{
    size_t size = sizeof(pt_span_rec_t) + 2 * ncustom * sizeof(pt_span_str_t);
    pt_span_rec_t *rec = pt_span_rec_alloc(size + strs);
    if (rec == NULL) {
        pt_stat_inc(sp->tracer->stats.spans_dropped);
        return NULL;
    }
    uint16_t pool = rec->pool;
    memset(rec, 0, offsetof(pt_span_rec_t, custom));
    rec->pool = pool;
    rec->tracer = sp->tracer;
    rec->trace_hi = sp->trace_hi;
    rec->trace_lo = sp->trace_lo;
    rec->id = sp->id;
    rec->parent_id = sp->parent_id;
    rec->start_us = sp->start_wall_us;
    /* Zipkin reads a duration of 0 as "not set": a span always lasts at least 1 us. */
    rec->duration_us = end_wall_us > sp->start_wall_us ? end_wall_us - sp->start_wall_us : 1;
    rec->kind = sp->kind;
    rec->shared = sp->shared;
    rec->debug = sp->debug;
    *p = (char *)rec + size;
    return rec;
}

/* Copies n bytes of s (and a NUL) to p as *d; returns past it. */
static inline __attribute__((always_inline)) char *put_str(char *p, pt_span_str_t *d, const char *s,
                                                           size_t n)
{
    if (p != s)
        pt_span_copy(p, s, n);
    p[n] = '\0';
    d->p = p;
    d->len = (uint32_t)n;
    return p + n + 1;
}

/* A string of the span, its length measured once. */
typedef struct str_len {
    const char *s;
    size_t n;
} str_len_t;

static str_len_t sl(const char *s)
{
    return (str_len_t){s, s != NULL ? strlen(s) : 0};
}

static str_len_t hl(const pt_http_header_t *e)
{
    return e != NULL ? (str_len_t){e->value, e->value_len} : (str_len_t){NULL, 0};
}

static char *put_sl(char *p, pt_span_str_t *d, str_len_t v)
{
    return v.s != NULL ? put_str(p, d, v.s, v.n) : p;
}

/* The request headers the stream's span reads, found in one pass (the first of each). */
typedef struct span_headers {
    const pt_http_header_t *rid, *original_path, *path, *authority, *method, *dc, *ua;
} span_headers_t;

#define MATCH(e, lit, slot)                                                                        \
    do {                                                                                           \
        if ((slot) == NULL && memcmp((e)->name, lit, sizeof(lit) - 1) == 0)                        \
            (slot) = (e);                                                                          \
    } while (0)

static void scan_span_headers(const pt_http_headers_t *h, span_headers_t *sh)
{
    memset(sh, 0, sizeof(*sh));
    for (uint32_t i = 0; i < h->count; i++) {
        const pt_http_header_t *e = &h->items[i];
        switch (e->name_len) {
        case 5:
            MATCH(e, ":path", sh->path);
            break;
        case 7:
            MATCH(e, ":method", sh->method);
            break;
        case 10:
            if (e->name[0] == ':')
                MATCH(e, ":authority", sh->authority);
            else
                MATCH(e, "user-agent", sh->ua);
            break;
        case 12:
            MATCH(e, "x-request-id", sh->rid);
            break;
        case 21:
            MATCH(e, "x-envoy-original-path", sh->original_path);
            break;
        case 34:
            MATCH(e, "x-envoy-downstream-service-cluster", sh->dc);
            break;
        default:
            break;
        }
    }
}

/* The custom tags that have a value (a request header's, its default, a literal). */
static unsigned custom_values(const pt_custom_tag_t *ct, unsigned n, const pt_http_headers_t *h,
                              str_len_t *kv, size_t *strs)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *v = ct[i].value;
        if (ct[i].kind == PT_TAG_REQUEST_HEADER) {
            v = h != NULL ? pt_http_headers_get(h, ct[i].value) : NULL;
            if (v == NULL)
                v = ct[i].default_value;
        }
        if (v == NULL)
            continue;
        kv[2 * k] = sl(ct[i].tag);
        kv[2 * k + 1] = sl(v);
        *strs += kv[2 * k].n + kv[2 * k + 1].n + 2;
        k++;
    }
    return k;
}

/* n + 1 bytes for a string that is there. */
#define ROOM(v) ((v).s != NULL ? (v).n + 1 : 0)

void pt_tracing_end(pt_http_stream_t *s)
{
    pt_trace_span_t *sp = s->span;
    if (!sp->sampled)
        return;
    const pt_tracing_config_t *tc = s->config->tracing;
    const pt_route_tracing_t *rt = s->route != NULL ? s->route->tracing : NULL;
    const pt_http_headers_t *h = s->request_headers;
    const pt_config_t *cfg = s->hcm != NULL ? pt_hcm_snapshot(s->hcm) : NULL;
    str_len_t name = sl(sp->name), cluster = sl(s->info.upstream_cluster);
    str_len_t node = {NULL, 0}, zone = {NULL, 0};
    if (cfg != NULL) {
        node = sl(cfg->node.id);
        zone = sl(cfg->node.zone);
    }
    size_t strs = ROOM(name) + ROOM(cluster) + ROOM(node) + ROOM(zone);
    span_headers_t sh;
    str_len_t rid = {NULL, 0}, method = {NULL, 0}, dc = {NULL, 0}, ua = {NULL, 0};
    /* http.url: scheme://authority path, cut to max_path_tag_length. */
    const char *piece[4];
    size_t plen[4], url_len = 0;
    if (h != NULL) {
        scan_span_headers(h, &sh);
        rid = hl(sh.rid);
        method = hl(sh.method);
        dc = hl(sh.dc);
        ua = hl(sh.ua);
        const pt_http_header_t *path = sh.original_path != NULL ? sh.original_path : sh.path;
        piece[0] = s->scheme;
        plen[0] = strlen(s->scheme);
        piece[1] = "://";
        plen[1] = 3;
        piece[2] = sh.authority != NULL ? sh.authority->value : "";
        plen[2] = sh.authority != NULL ? sh.authority->value_len : 0;
        piece[3] = path != NULL ? path->value : "";
        plen[3] = path != NULL ? path->value_len : 0;
        url_len = plen[0] + plen[1] + plen[2] + plen[3];
        if (url_len > tc->max_path_tag_length)
            url_len = tc->max_path_tag_length;
        strs += ROOM(rid) + ROOM(method) + ROOM(dc) + ROOM(ua) + url_len + 1;
    }
    str_len_t kv[4 * PT_MAX_CUSTOM_TAGS];
    unsigned nc = custom_values(tc->tags, tc->ntags, h, kv, &strs);
    if (rt != NULL)
        nc += custom_values(rt->tags, rt->ntags, h, kv + 2 * nc, &strs);
    uint64_t end = s->info.start_wall_us + (s->info.end_mono_us - s->info.start_mono_us);
    char *p;
    pt_span_rec_t *rec = rec_new(sp, end, strs, nc, &p);
    if (rec == NULL)
        return;
    p = put_str(p, &rec->str[PT_SPAN_S_NAME], name.s, name.n);
    p = put_sl(p, &rec->str[PT_SPAN_S_NODE_ID], node);
    p = put_sl(p, &rec->str[PT_SPAN_S_ZONE], zone);
    p = put_sl(p, &rec->str[PT_SPAN_S_CLUSTER], cluster);
    if (h != NULL) {
        p = put_sl(p, &rec->str[PT_SPAN_S_REQUEST_ID], rid);
        p = put_sl(p, &rec->str[PT_SPAN_S_METHOD], method);
        p = put_sl(p, &rec->str[PT_SPAN_S_DOWNSTREAM_CLUSTER], dc);
        p = put_sl(p, &rec->str[PT_SPAN_S_USER_AGENT], ua);
        /* The URL's pieces, as far as the cut allows. */
        size_t o = 0;
        if (url_len == plen[0] + plen[1] + plen[2] + plen[3]) {
            /* Not cut (the usual case): the pieces one after the other. */
            for (unsigned i = 0; i < 4; i++) {
                pt_span_copy(p + o, piece[i], plen[i]);
                o += plen[i];
            }
        } else {
            for (unsigned i = 0; i < 4 && o < url_len; i++) {
                size_t k = plen[i] < url_len - o ? plen[i] : url_len - o;
                pt_span_copy(p + o, piece[i], k);
                o += k;
            }
        }
        p = put_str(p, &rec->str[PT_SPAN_S_URL], p, o);
    }
    rec->headers = h != NULL;
    rec->status = s->info.response_code;
    rec->response_flags = s->info.response_flags;
    rec->bytes_received = s->info.bytes_received;
    rec->bytes_sent = s->info.bytes_sent;
    rec->protocol = s->info.protocol;
    rec->peer = s->info.downstream_remote;
    rec->local = s->info.downstream_local;
    rec->ncustom = nc;
    for (unsigned i = 0; i < 2 * nc; i++)
        p = put_sl(p, &rec->custom[i], kv[i]);
    pt_span_queue_push(rec);
}

/* Writes the context whose innermost span is `sp` into the upstream request: the headers
 * are appended (after removing any that came in, or that an earlier try wrote), their
 * values formatted into the span. */
static void inject(pt_trace_span_t *root, pt_trace_span_t *sp, pt_http_headers_t *h)
{
    static const char *const names[] = {
        "b3",           "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
        "x-b3-sampled", "x-b3-flags",   "traceparent"};
    const pt_tracer_t *t = sp->tracer;
    if (root->replace) {
        /* Only the headers this tracer writes: a traceparent passes a B3-only tracer. */
        unsigned from = t->inject_b3 ? 0 : 6, to = t->inject_w3c ? 7 : 6;
        pt_http_headers_remove_any(h, names + from, to - from);
    }
    root->replace = 1; /* a later try replaces what this one writes */
    /* The values live in the span that is injected (the stream's, or the try's), which the
     * stream's arena keeps as long as the headers. */
    if (t->inject_b3) {
        /* The trace id is the request's, formatted once (it is %TRACE_ID% too). */
        pt_http_headers_add_ref_n(h, "x-b3-traceid", 12, root->trace_hex,
                                  root->trace_hi != 0 ? 32 : 16);
        pt_trace_hex64(sp->id, sp->span_hex);
        pt_http_headers_add_ref_n(h, "x-b3-spanid", 11, sp->span_hex, 16);
        if (sp->parent_id != 0) {
            pt_trace_hex64(sp->parent_id, sp->parent_hex);
            pt_http_headers_add_ref_n(h, "x-b3-parentspanid", 17, sp->parent_hex, 16);
        }
        pt_http_headers_add_ref_n(h, "x-b3-sampled", 12, sp->sampled ? "1" : "0", 1);
    }
    if (t->inject_w3c) {
        pt_trace_format_traceparent(sp->trace_hi, sp->trace_lo, sp->id, sp->sampled,
                                    sp->traceparent);
        pt_http_headers_add_ref_n(h, "traceparent", 11, sp->traceparent, 55);
    }
}

pt_trace_span_t *pt_tracing_upstream_start(pt_http_stream_t *s, pt_http_headers_t *h, int child)
{
    pt_trace_span_t *sp = s->span;
    if (!sp->spawn && !child) {
        inject(sp, sp, h);
        return NULL;
    }
    pt_trace_span_t *c = pt_arena_alloc(&s->arena, sizeof(*c));
    if (c == NULL) {
        inject(sp, sp, h);
        return NULL;
    }
    *c = *sp;
    c->kind = PT_SPAN_CLIENT;
    c->shared = 0;
    c->parent_id = sp->id;
    c->id = pt_trace_new_id();
    c->start_wall_us = wall_us_now(s);
    c->start_mono_us = pt_loop_us();
    c->status = 0;
    inject(sp, c, h);
    return c;
}

void pt_tracing_upstream_end(pt_http_stream_t *s, pt_trace_span_t *c, int status)
{
    if (c == NULL || !c->sampled)
        return;
    /* The name: "router <cluster> egress". */
    static const char pre[] = "router ", post[] = " egress";
    str_len_t cl = sl(s->info.upstream_cluster), host = sl(s->info.upstream_host);
    str_len_t nm = cl.s != NULL ? cl : (str_len_t){"-", 1};
    size_t name_len = sizeof(pre) - 1 + nm.n + sizeof(post) - 1;
    size_t strs = name_len + 1 + (cl.s ? cl.n + 1 : 0) + (host.s ? host.n + 1 : 0);
    char *p;
    pt_span_rec_t *rec = rec_new(c, wall_us_now(s), strs, 0, &p);
    if (rec == NULL)
        return;
    memcpy(p, pre, sizeof(pre) - 1);
    memcpy(p + sizeof(pre) - 1, nm.s, nm.n);
    memcpy(p + sizeof(pre) - 1 + nm.n, post, sizeof(post) - 1);
    p = put_str(p, &rec->str[PT_SPAN_S_NAME], p, name_len);
    p = put_sl(p, &rec->str[PT_SPAN_S_CLUSTER], cl);
    p = put_sl(p, &rec->str[PT_SPAN_S_UPSTREAM_HOST], host);
    rec->upstream_try = 1;
    rec->status = status;
    rec->retries = s->info.upstream_attempts > 0 ? s->info.upstream_attempts - 1 : 0;
    rec->protocol = s->info.protocol;
    pt_span_queue_push(rec);
}
