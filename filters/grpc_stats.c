/* envoy.filters.http.grpc_stats: counts gRPC calls by their outcome, and the messages each
 * way, in the namespace of the cluster the route sent the call to:
 *
 *   cluster.<cluster>.grpc[.<service>.<method>].{success,failure,total,<grpc-status>,
 *                                                  request_message_count,
 *                                                  response_message_count}
 *
 * The service/method part is there for every method with stats_for_all_methods: true, for
 * the methods of individual_method_stats_allowlist, and never otherwise (Envoy's default:
 * a client cannot grow the stats without bound). The status comes from grpc-status in the
 * trailers, or in the head of a trailers-only answer (petrel's own gRPC local replies too);
 * a response without one counts nothing, as in Envoy. Messages are counted by their 5-byte
 * length prefixes as the body passes, across chunk boundaries.
 *
 * With enable_upstream_stats, the histogram upstream_rq_time in the same namespace: from
 * the request's end sent upstream to the end of the response (its trailers, or a
 * trailers-only head), for calls an upstream answered.
 *
 * Stats are found (or made) once per call, under the stats registry's lock, and the
 * message counters kept in the call's state. Not supported: emit_filter_state (petrel has
 * no filter state objects). */
#include <stdio.h>
#include <string.h>

#include "filters/http_filter.h"
#include "proxy/config.h"
#include "proxy/conn_manager.h"
#include "proxy/grpc.h"
#include "proxy/stats.h"
#include "proxy/time.h"

typedef struct method_list {
    const char *service;
    const char **methods;
    unsigned nmethods;
} method_list_t;

typedef struct grpc_stats_config {
    int all_methods;
    int replace_dots;
    int upstream_stats;   /* enable_upstream_stats */
    method_list_t *allow; /* individual_method_stats_allowlist, or NULL */
    unsigned nallow;
} grpc_stats_config_t;

/* Finds message boundaries in a gRPC body: each message is a flag byte, a 4-byte
 * big-endian length and that many bytes. */
typedef struct frame_counter {
    uint8_t header_seen; /* bytes of the current 5-byte prefix seen */
    uint32_t length;     /* the current message's length, as its prefix is read */
    uint64_t left;       /* bytes of the current message still to come */
} frame_counter_t;

typedef struct grpc_stats_state {
    const char *prefix; /* "grpc." or "grpc.<service>.<method>."; NULL: not a gRPC call */
    const char *cluster;
    frame_counter_t rq, rs;
    uint64_t rq_pending, rs_pending; /* messages not yet added to their stats */
    pt_stat_t rq_stat, rs_stat;      /* the message counters, found once per call */
    int charged;                     /* the status was counted */
    int timed;                       /* upstream_rq_time was recorded */
} grpc_stats_state_t;

static void *gs_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    size_t before = r->nerrors;
    grpc_stats_config_t *c = pt_arena_alloc(&cfg->arena, sizeof(*c));
    if (c == NULL)
        return NULL;
    int flag = 0;
    pt_cfg_bool(r, "emit_filter_state", &flag, 0);
    if (flag)
        pt_cfg_error(r, "emit_filter_state", "is not supported (petrel has no filter state)");
    pt_cfg_bool(r, "enable_upstream_stats", &c->upstream_stats, 0);
    pt_cfg_bool(r, "replace_dots_in_grpc_service_name", &c->replace_dots, 0);
    static const char *const oneof[] = {"individual_method_stats_allowlist",
                                        "stats_for_all_methods", NULL};
    pt_cfg_oneof(r, oneof, 0);
    pt_cfg_bool(r, "stats_for_all_methods", &c->all_methods, 0);
    if (pt_cfg_enter(r, "individual_method_stats_allowlist") > 0) {
        int present;
        size_t n = pt_cfg_array(r, "services", &present);
        c->allow = pt_arena_alloc(&cfg->arena, (n ? n : 1) * sizeof(*c->allow));
        for (size_t i = 0; i < n && c->allow != NULL; i++) {
            if (pt_cfg_enter_index(r, i) <= 0)
                continue;
            method_list_t *m = &c->allow[c->nallow];
            if (pt_cfg_string(r, "name", &m->service, NULL) == 0 || *m->service == '\0')
                pt_cfg_error(r, "name", "is required");
            int mp;
            size_t nm = pt_cfg_array(r, "method_names", &mp);
            m->methods = pt_arena_alloc(&cfg->arena, (nm ? nm : 1) * sizeof(char *));
            for (size_t k = 0; k < nm && m->methods != NULL; k++) {
                json_t *v = pt_cfg_index_value(r, k);
                if (json_is_string(v) && json_string_length(v) > 0) {
                    m->methods[m->nmethods++] = pt_arena_strdup(&cfg->arena, json_string_value(v));
                    continue;
                }
                size_t saved = strlen(pt_cfg_path(r));
                pt_cfg_push_index(r, k);
                pt_cfg_error(r, NULL, "must be a non-empty string");
                pt_cfg_pop_path(r, saved);
            }
            if (mp)
                pt_cfg_leave_array(r);
            c->nallow++;
            pt_cfg_leave(r);
        }
        if (present)
            pt_cfg_leave_array(r);
        pt_cfg_leave(r);
    }
    return r->nerrors == before ? c : NULL;
}

static int allowed(const grpc_stats_config_t *c, const char *svc, size_t svc_len,
                   const char *method)
{
    if (c->all_methods)
        return 1;
    for (unsigned i = 0; i < c->nallow; i++) {
        const method_list_t *m = &c->allow[i];
        if (strlen(m->service) != svc_len || memcmp(m->service, svc, svc_len) != 0)
            continue;
        for (unsigned k = 0; k < m->nmethods; k++)
            if (strcmp(m->methods[k], method) == 0)
                return 1;
    }
    return 0;
}

/* "grpc.<service>.<method>." for a :path of /<service>/<method> that the config counts
 * per method; "grpc." otherwise. */
static const char *stat_prefix(pt_http_stream_t *s, const grpc_stats_config_t *c, const char *path)
{
    const char *slash = path != NULL && path[0] == '/' ? strchr(path + 1, '/') : NULL;
    if (slash == NULL || slash == path + 1 || slash[1] == '\0' || strchr(slash + 1, '/') ||
        strchr(path, '?'))
        return "grpc.";
    const char *svc = path + 1;
    size_t svc_len = (size_t)(slash - svc);
    const char *method = slash + 1;
    if (!allowed(c, svc, svc_len, method))
        return "grpc.";
    size_t n = 5 + svc_len + 1 + strlen(method) + 2;
    char *p = pt_arena_alloc(&s->arena, n);
    if (p == NULL)
        return "grpc.";
    snprintf(p, n, "grpc.%.*s.%s.", (int)svc_len, svc, method);
    if (c->replace_dots)
        for (size_t i = 5; i < 5 + svc_len; i++)
            if (p[i] == '.')
                p[i] = '_';
    return p;
}

static pt_stat_t find_stat(const grpc_stats_state_t *st, const char *name)
{
    char full[PT_STAT_NAME_MAX];
    snprintf(full, sizeof(full), "%s%s", st->prefix, name);
    return pt_stats_counter("cluster", "envoy_cluster_name", st->cluster, full);
}

static void charge(const grpc_stats_state_t *st, const char *name, uint64_t n)
{
    pt_stat_add(find_stat(st, name), n);
}

/* Counts the messages that start in this chunk. */
static uint64_t count_frames(frame_counter_t *f, const pt_buf_t *data)
{
    uint64_t messages = 0;
    size_t len = pt_buf_len(data), off = 0;
    while (off < len) {
        if (f->left > 0) {
            size_t skip = f->left < len - off ? (size_t)f->left : len - off;
            f->left -= skip;
            off += skip;
            continue;
        }
        uint8_t byte;
        pt_buf_copyout(data, off++, &byte, 1);
        if (f->header_seen > 0)
            f->length = (f->length << 8) | byte;
        if (++f->header_seen == 5) {
            messages++;
            f->left = f->length;
            f->header_seen = 0;
            f->length = 0;
        }
    }
    return messages;
}

static void charge_messages(pt_http_stream_t *s, grpc_stats_state_t *st)
{
    if (st->cluster == NULL)
        st->cluster = s->info.upstream_cluster;
    if (st->cluster == NULL)
        return;
    if (st->rq_pending > 0) {
        if (st->rq_stat == 0)
            st->rq_stat = find_stat(st, "request_message_count");
        pt_stat_add(st->rq_stat, st->rq_pending);
    }
    if (st->rs_pending > 0) {
        if (st->rs_stat == 0)
            st->rs_stat = find_stat(st, "response_message_count");
        pt_stat_add(st->rs_stat, st->rs_pending);
    }
    st->rq_pending = st->rs_pending = 0;
}

static void charge_status(pt_http_stream_t *s, grpc_stats_state_t *st, const pt_http_headers_t *h)
{
    const char *status = pt_http_headers_get(h, "grpc-status");
    if (st->charged || status == NULL)
        return;
    /* A number, as gRPC defines them: anything else would let a peer make stats at will. */
    size_t n = strspn(status, "0123456789");
    if (n == 0 || n > 3 || status[n] != '\0')
        return;
    charge_messages(s, st);
    if (st->cluster == NULL)
        return;
    st->charged = 1;
    charge(st, strcmp(status, "0") == 0 ? "success" : "failure", 1);
    charge(st, "total", 1);
    charge(st, status, 1);
}

/* Envoy's upstream stat: the time from the request's end sent upstream to the response's
 * end (now), when an upstream took part (not for petrel's own answers). */
static void charge_upstream_time(pt_http_stream_t *s, const grpc_stats_config_t *c,
                                 grpc_stats_state_t *st)
{
    if (!c->upstream_stats || st->timed || s->info.last_upstream_tx_mono_us == 0 ||
        s->info.first_upstream_rx_mono_us == 0)
        return;
    if (st->cluster == NULL)
        st->cluster = s->info.upstream_cluster;
    if (st->cluster == NULL)
        return;
    st->timed = 1;
    char name[PT_STAT_NAME_MAX];
    snprintf(name, sizeof(name), "%supstream_rq_time", st->prefix);
    uint64_t now = pt_loop_us(), sent = s->info.last_upstream_tx_mono_us;
    pt_hist_record(pt_stats_histogram("cluster", "envoy_cluster_name", st->cluster, name),
                   now > sent ? (now - sent) / 1000 : 0);
}

static int gs_decode_headers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                             int end_stream)
{
    (void)end_stream;
    grpc_stats_state_t *st = state;
    if (pt_grpc_is_request(h))
        st->prefix = stat_prefix(s, cfg, pt_http_headers_get(h, ":path"));
    return PT_CONTINUE;
}

static int gs_decode_data(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                          int end_stream)
{
    (void)cfg, (void)end_stream;
    grpc_stats_state_t *st = state;
    if (st->prefix == NULL)
        return PT_CONTINUE;
    st->rq_pending += count_frames(&st->rq, data);
    if (st->rq_pending > 0)
        charge_messages(s, st);
    return PT_CONTINUE;
}

static int gs_encode_headers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *h,
                             int end_stream)
{
    grpc_stats_state_t *st = state;
    if (st->prefix != NULL && end_stream) {
        charge_status(s, st, h); /* trailers-only */
        charge_upstream_time(s, cfg, st);
    }
    return PT_CONTINUE;
}

static int gs_encode_data(pt_http_stream_t *s, void *cfg, void *state, pt_buf_t *data,
                          int end_stream)
{
    (void)cfg, (void)end_stream;
    grpc_stats_state_t *st = state;
    if (st->prefix == NULL)
        return PT_CONTINUE;
    st->rs_pending += count_frames(&st->rs, data);
    if (st->rs_pending > 0)
        charge_messages(s, st);
    return PT_CONTINUE;
}

static int gs_encode_trailers(pt_http_stream_t *s, void *cfg, void *state, pt_http_headers_t *t)
{
    grpc_stats_state_t *st = state;
    if (st->prefix != NULL) {
        charge_status(s, st, t);
        charge_upstream_time(s, cfg, st);
    }
    return PT_CONTINUE;
}

const pt_http_filter_ops_t pt_grpc_stats_filter = {
    .name = "envoy.filters.http.grpc_stats",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    .state_size = sizeof(grpc_stats_state_t),
    .parse = gs_parse,
    .decode_headers = gs_decode_headers,
    .decode_data = gs_decode_data,
    .encode_headers = gs_encode_headers,
    .encode_data = gs_encode_data,
    .encode_trailers = gs_encode_trailers,
};
