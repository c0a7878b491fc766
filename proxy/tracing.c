/* Tracing per request (proxy/tracing.h): the decision, the incoming context, the stream's
 * span and the upstream tries' spans, the propagation headers, and the span's copy for the
 * main thread (proxy/span_queue.c). Worker threads. */
#include "proxy/tracing.h"

#include <stdio.h>
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

#define MAX_BUILTIN_TAGS 20 /* the request span's own tags, at most */

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
};

static uint64_t wall_us_now(const pt_http_stream_t *s)
{
    return s->info.start_wall_us + (pt_loop_us() - s->info.start_mono_us);
}

/* The request headers tracing reads, found in one pass. */
typedef struct trace_headers {
    const char *rid, *client_trace_id, *force_trace, *decorator_op, *authority;
    const char *b3, *b3_trace, *b3_span, *b3_parent, *b3_sampled, *b3_flags, *traceparent;
    int any_context; /* some B3 or traceparent header came: injecting must replace them */
} trace_headers_t;

#define NAME_IS(e, lit)                                                                            \
    ((e)->name_len == sizeof(lit) - 1 && memcmp((e)->name, lit, sizeof(lit) - 1) == 0)

static void scan_headers(const pt_http_headers_t *h, trace_headers_t *th)
{
    memset(th, 0, sizeof(*th));
    for (uint32_t i = 0; i < h->count; i++) {
        const pt_http_header_t *e = &h->items[i];
        /* Every name of interest starts with x, b or t: most headers go by on one test. */
        char c = e->name[0];
        if (c == ':') {
            if (NAME_IS(e, ":authority") && th->authority == NULL)
                th->authority = e->value;
        } else if (c == 'x') {
            if (NAME_IS(e, "x-request-id"))
                th->rid = th->rid ? th->rid : e->value;
            else if (e->name_len > 5 && memcmp(e->name, "x-b3-", 5) == 0) {
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
            } else if (NAME_IS(e, "x-client-trace-id"))
                th->client_trace_id = e->value;
            else if (NAME_IS(e, "x-envoy-force-trace"))
                th->force_trace = e->value;
            else if (NAME_IS(e, "x-envoy-decorator-operation"))
                th->decorator_op = e->value;
        } else if (c == 'b' && NAME_IS(e, "b3")) {
            th->b3 = e->value;
            th->any_context = 1;
        } else if (c == 't' && NAME_IS(e, "traceparent")) {
            th->traceparent = e->value;
            th->any_context = 1;
        }
    }
}

/* Envoy's decision, on the request id (ConnectionManagerUtility::mutateTracingRequestHeader). */
static pt_trace_status_t decide(pt_http_stream_t *s, const trace_headers_t *th,
                                const pt_tracing_config_t *tc, const pt_route_tracing_t *rt)
{
    const char *rid = th->rid;
    uint64_t rint;
    if (pt_trace_rid_integer(rid, &rint) != 0)
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
    pt_trace_status_t was = pt_trace_rid_status(rid);
    int external = s->config->use_remote_address && !s->internal;
    pt_trace_status_t st = pt_trace_decide(
        was, rint, th->client_trace_id != NULL, !external && th->force_trace != NULL,
        th->client_trace_id != NULL ? pt_random_below(client.den) : 0, client, random, overall);
    if (st != was) {
        char *copy = pt_arena_strdup(&s->arena, rid);
        if (copy != NULL && pt_trace_rid_set_status(copy, st) == 0)
            pt_http_headers_set_ref(s->request_headers, "x-request-id", copy);
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
    memset(sp, 0, sizeof(*sp));
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

typedef struct tag_list {
    pt_span_tag_t *tags;
    unsigned n, cap;
} tag_list_t;

static void tag(tag_list_t *l, const char *k, const char *v)
{
    if (v != NULL && l->n < l->cap)
        l->tags[l->n++] = (pt_span_tag_t){k, v};
}

static void custom_tags(tag_list_t *l, const pt_custom_tag_t *ct, unsigned n,
                        const pt_http_headers_t *h)
{
    for (unsigned i = 0; i < n; i++) {
        const char *v = ct[i].value;
        if (ct[i].kind == PT_TAG_REQUEST_HEADER) {
            v = h != NULL ? pt_http_headers_get(h, ct[i].value) : NULL;
            if (v == NULL)
                v = ct[i].default_value;
        }
        if (v == NULL)
            continue;
        /* A custom tag of a name already set replaces it, as Envoy's setTag does. */
        unsigned k = 0;
        while (k < l->n && strcmp(l->tags[k].key, ct[i].tag) != 0)
            k++;
        if (k < l->n)
            l->tags[k].value = v;
        else
            tag(l, ct[i].tag, v);
    }
}

/* Copies the span into one heap block and queues it for the main thread. */
static void emit(const pt_trace_span_t *sp, uint64_t end_wall_us, const char *name,
                 const char *local_ip, const tag_list_t *l)
{
    size_t size = sizeof(pt_span_rec_t) + l->n * sizeof(pt_span_tag_t);
    uint32_t lens[2 * (MAX_BUILTIN_TAGS + 2 * PT_MAX_CUSTOM_TAGS)];
    size_t strs = strlen(name) + 1 + (local_ip ? strlen(local_ip) + 1 : 0);
    for (unsigned i = 0; i < l->n; i++) {
        lens[2 * i] = (uint32_t)strlen(l->tags[i].key) + 1;
        lens[2 * i + 1] = (uint32_t)strlen(l->tags[i].value) + 1;
        strs += lens[2 * i] + lens[2 * i + 1];
    }
    pt_span_rec_t *rec = malloc(size + strs);
    if (rec == NULL) {
        pt_stat_inc(sp->tracer->stats.spans_dropped);
        return;
    }
    char *p = (char *)rec + size;
#define COPY(dst, src)                                                                             \
    do {                                                                                           \
        size_t n_ = strlen(src) + 1;                                                               \
        memcpy(p, src, n_);                                                                        \
        dst = p;                                                                                   \
        p += n_;                                                                                   \
    } while (0)
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
    COPY(rec->name, name);
    rec->local_ip = NULL;
    if (local_ip != NULL)
        COPY(rec->local_ip, local_ip);
    rec->ntags = l->n;
#undef COPY
    for (unsigned i = 0; i < l->n; i++) {
        memcpy(p, l->tags[i].key, lens[2 * i]);
        rec->tags[i].key = p;
        p += lens[2 * i];
        memcpy(p, l->tags[i].value, lens[2 * i + 1]);
        rec->tags[i].value = p;
        p += lens[2 * i + 1];
    }
    pt_span_queue_push(rec);
}

/* Decimal into the arena, without printf (a sampled request formats a few). */
static const char *fmt_u64(pt_arena_t *a, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    tmp[--i] = '\0';
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    char *out = pt_arena_alloc(a, sizeof(tmp) - (size_t)i);
    if (out != NULL)
        memcpy(out, tmp + i, sizeof(tmp) - (size_t)i);
    return out;
}

/* scheme://authority path, cut to max bytes, into the arena. */
static const char *make_url(pt_arena_t *a, const char *scheme, const char *auth, const char *path,
                            uint32_t max)
{
    size_t ls = strlen(scheme), la = auth ? strlen(auth) : 0, lp = path ? strlen(path) : 0;
    size_t n = ls + 3 + la + lp;
    char *url = pt_arena_alloc(a, n + 1);
    if (url == NULL)
        return NULL;
    memcpy(url, scheme, ls);
    memcpy(url + ls, "://", 3);
    if (la)
        memcpy(url + ls + 3, auth, la);
    if (lp)
        memcpy(url + ls + 3 + la, path, lp);
    url[n < max ? n : max] = '\0';
    return url;
}

void pt_tracing_end(pt_http_stream_t *s)
{
    pt_trace_span_t *sp = s->span;
    if (!sp->sampled)
        return;
    const pt_tracing_config_t *tc = s->config->tracing;
    const pt_route_tracing_t *rt = s->route != NULL ? s->route->tracing : NULL;
    const pt_http_headers_t *h = s->request_headers;
    pt_arena_t *a = &s->arena;
    pt_span_tag_t buf[MAX_BUILTIN_TAGS + 2 * PT_MAX_CUSTOM_TAGS];
    tag_list_t l = {buf, 0, sizeof(buf) / sizeof(buf[0])};
    const pt_config_t *cfg = s->hcm != NULL ? pt_hcm_snapshot(s->hcm) : NULL;
    tag(&l, "component", "proxy");
    if (cfg != NULL) {
        tag(&l, "node_id", cfg->node.id);
        tag(&l, "zone", cfg->node.zone);
    }
    if (h != NULL) {
        tag(&l, "guid:x-request-id", pt_http_headers_get(h, "x-request-id"));
        const char *path = pt_http_headers_get(h, "x-envoy-original-path");
        if (path == NULL)
            path = pt_http_headers_get(h, ":path");
        tag(&l, "http.url",
            make_url(a, s->scheme, pt_http_headers_get(h, ":authority"), path,
                     tc->max_path_tag_length));
        tag(&l, "http.method", pt_http_headers_get(h, ":method"));
        const char *dc = pt_http_headers_get(h, "x-envoy-downstream-service-cluster");
        tag(&l, "downstream_cluster", dc ? dc : "-");
        const char *ua = pt_http_headers_get(h, "user-agent");
        tag(&l, "user_agent", ua ? ua : "-");
    }
    tag(&l, "http.protocol", s->info.protocol);
    char *ip = pt_arena_alloc(a, PT_ADDR_STRLEN);
    if (ip != NULL) {
        pt_addr_format_ip(&s->info.downstream_remote, ip, PT_ADDR_STRLEN);
        tag(&l, "peer.address", ip);
    }
    tag(&l, "request_size", fmt_u64(a, s->info.bytes_received));
    tag(&l, "response_size", fmt_u64(a, s->info.bytes_sent));
    if (s->info.upstream_cluster != NULL) {
        tag(&l, "upstream_cluster", s->info.upstream_cluster);
        tag(&l, "upstream_cluster.name", s->info.upstream_cluster);
    }
    tag(&l, "http.status_code", fmt_u64(a, (uint64_t)s->info.response_code));
    char flags[128];
    tag(&l, "response_flags", pt_response_flags_str(s->info.response_flags, flags, sizeof(flags)));
    if (s->info.response_code == 0 || s->info.response_code >= 500)
        tag(&l, "error", "true");
    custom_tags(&l, tc->tags, tc->ntags, h);
    if (rt != NULL)
        custom_tags(&l, rt->tags, rt->ntags, h);
    char *lip = pt_arena_alloc(a, PT_ADDR_STRLEN);
    if (lip != NULL)
        pt_addr_format_ip(&s->info.downstream_local, lip, PT_ADDR_STRLEN);
    uint64_t end = s->info.start_wall_us + (s->info.end_mono_us - s->info.start_mono_us);
    emit(sp, end, sp->name, lip, &l);
}

/* Writes the context whose innermost span is `sp` into the upstream request: the headers
 * are appended (after removing any that came in, or that an earlier try wrote), their
 * values in one arena block. */
static void inject(pt_http_stream_t *s, pt_trace_span_t *root, const pt_trace_span_t *sp,
                   pt_http_headers_t *h)
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
    char *v = pt_arena_alloc(&s->arena, 33 + 17 + 17 + 56);
    if (v == NULL)
        return;
    if (t->inject_b3) {
        char *sid = v + 33, *pid = v + 50;
        /* The trace id is the request's, formatted once (it is %TRACE_ID% too). */
        pt_http_headers_add_ref_n(h, "x-b3-traceid", 12, root->trace_hex,
                                  root->trace_hi != 0 ? 32 : 16);
        pt_trace_hex64(sp->id, sid);
        pt_http_headers_add_ref_n(h, "x-b3-spanid", 11, sid, 16);
        if (sp->parent_id != 0) {
            pt_trace_hex64(sp->parent_id, pid);
            pt_http_headers_add_ref_n(h, "x-b3-parentspanid", 17, pid, 16);
        }
        pt_http_headers_add_ref_n(h, "x-b3-sampled", 12, sp->sampled ? "1" : "0", 1);
    }
    if (t->inject_w3c) {
        char *tp = v + 67;
        pt_trace_format_traceparent(sp->trace_hi, sp->trace_lo, sp->id, sp->sampled, tp);
        pt_http_headers_add_ref_n(h, "traceparent", 11, tp, 55);
    }
}

pt_trace_span_t *pt_tracing_upstream_start(pt_http_stream_t *s, pt_http_headers_t *h, int child)
{
    pt_trace_span_t *sp = s->span;
    if (!sp->spawn && !child) {
        inject(s, sp, sp, h);
        return NULL;
    }
    pt_trace_span_t *c = pt_arena_alloc(&s->arena, sizeof(*c));
    if (c == NULL) {
        inject(s, sp, sp, h);
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
    inject(s, sp, c, h);
    return c;
}

void pt_tracing_upstream_end(pt_http_stream_t *s, pt_trace_span_t *c, int status)
{
    if (c == NULL || !c->sampled)
        return;
    pt_arena_t *a = &s->arena;
    pt_span_tag_t buf[16];
    tag_list_t l = {buf, 0, sizeof(buf) / sizeof(buf[0])};
    tag(&l, "component", "proxy");
    tag(&l, "upstream_cluster", s->info.upstream_cluster);
    tag(&l, "upstream_cluster.name", s->info.upstream_cluster);
    tag(&l, "upstream_address", s->info.upstream_host);
    tag(&l, "peer.address", s->info.upstream_host);
    tag(&l, "http.protocol", s->info.protocol);
    tag(&l, "http.status_code", fmt_u64(a, (uint64_t)status));
    tag(&l, "retry.count",
        fmt_u64(a, s->info.upstream_attempts > 0 ? s->info.upstream_attempts - 1 : 0));
    if (status == 0 || status >= 500)
        tag(&l, "error", "true");
    const char *name = pt_arena_sprintf(a, "router %s egress",
                                        s->info.upstream_cluster ? s->info.upstream_cluster : "-");
    emit(c, wall_us_now(s), name ? name : "router", NULL, &l);
}
