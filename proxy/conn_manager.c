#include "proxy/conn_manager.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "proxy/grpc.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/path.h"
#include "proxy/route_manager.h"
#include "proxy/runtime.h"
#include "proxy/random.h"
#include "proxy/stats.h"
#include "proxy/time.h"
#include "proxy/tracing.h"
#include "proxy/view.h"
#include "tls/transport.h"

/* One downstream connection. */
struct pt_hcm_conn {
    pt_session_t *session;
    const pt_hcm_config_t *config;
    pt_http_server_codec_t *codec;
    pt_http_stream_t *streams;   /* active (not yet complete) streams */
    unsigned nstreams;
    uint32_t requests;           /* streams started on this connection */
    /* One timer, two uses that never overlap: the connection idle timeout while no request
     * is under way, request_headers_timeout while a request head is arriving. */
    ev_timer timer;
    unsigned timer_headers : 1;  /* the timer is the request_headers_timeout */
    ev_timer *max_duration;      /* max_connection_duration, allocated only when set (an idle
                                    connection's memory is what a sidecar pays per client) */
    pt_addr_t local;             /* our address on this connection, for logs */
    unsigned closing : 1;
    unsigned upgraded : 1;
    unsigned http2 : 1;          /* the codec is HTTP/2 */
    unsigned draining : 1;       /* drained before the codec was chosen */
    /* Streams ended, and those among them the client reset early, before any response
     * (Envoy's premature resets: the rapid-reset attack, CVE-2023-44487). */
    uint32_t closed_streams, premature_resets;
};

/* Envoy's premature-reset rule: once 500 streams have ended on a connection, half of them
 * reset by the client within a second (two, counting whole seconds as Envoy does) of their
 * start and before a response began close it. */
#define PREMATURE_RESET_MIN_STREAMS 500
#define PREMATURE_RESET_LIFETIME_US 2000000

static void stream_complete(pt_http_stream_t *s);
static const pt_hfm_sink_t hcm_sink;
static void hcm_close(pt_hcm_conn_t *h, pt_close_how_t how);

/* ======================================================================================
 * Config
 * ====================================================================================== */

static const char *const hcm_unsupported[] = {
    "scoped_routes", "add_user_agent", "http3_protocol_options",
    "access_log_options",
    "internal_address_config", "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
    "local_reply_config",
    "request_id_extension", "stream_error_on_invalid_http_message",
    "path_normalization_options", "strip_trailing_host_dot", "proxy_status_config",
    "typed_header_validation_config", "append_x_forwarded_port", "early_header_mutation_extensions",
    "original_ip_detection_extensions", "scheme_header_transformation",
    "max_connection_duration", "append_local_overload", "add_proxy_protocol_connection_state",
    "http1_safe_max_connection_duration", NULL};

static const char *const codec_names[] = {"AUTO", "HTTP1", "HTTP2", NULL};
static const char *const codec_known[] = {"HTTP3", NULL};
static const char *const server_transform_names[] = {"OVERWRITE", "APPEND_IF_ABSENT",
                                                     "PASS_THROUGH", NULL};
static const char *const underscore_names[] = {"ALLOW", "REJECT_REQUEST", "DROP_HEADER", NULL};
/* path_with_escaped_slashes_action, mapped to pt_escaped_slashes_t by escaped_slashes_map. */
static const char *const escaped_slashes_names[] = {"IMPLEMENTATION_SPECIFIC_DEFAULT",
                                                    "KEEP_UNCHANGED", "REJECT_REQUEST",
                                                    "UNESCAPE_AND_REDIRECT",
                                                    "UNESCAPE_AND_FORWARD", NULL};
static const pt_escaped_slashes_t escaped_slashes_map[] = {
    PT_ESCAPED_SLASHES_KEEP, PT_ESCAPED_SLASHES_KEEP, PT_ESCAPED_SLASHES_REJECT,
    PT_ESCAPED_SLASHES_REDIRECT, PT_ESCAPED_SLASHES_FORWARD};

static int parse_upgrades(pt_cfg_t *r, pt_arena_t *a, pt_upgrade_config_t **out, unsigned *n)
{
    int present;
    size_t count = pt_cfg_array(r, "upgrade_configs", &present);
    *out = pt_arena_alloc(a, (count ? count : 1) * sizeof(pt_upgrade_config_t));
    *n = 0;
    for (size_t i = 0; i < count; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        static const char *const upgrade_unsupported[] = {"filters", NULL};
        pt_cfg_unsupported(r, upgrade_unsupported);
        const char *type;
        if (pt_cfg_string(r, "upgrade_type", &type, NULL) == 0)
            pt_cfg_error(r, "upgrade_type", "is required");
        int enabled;
        pt_cfg_bool(r, "enabled", &enabled, 1);
        if (type != NULL) {
            char *t = pt_arena_strdup(a, type);
            for (char *p = t; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            (*out)[*n].upgrade_type = t;
            (*out)[*n].connect_config = 0;
            (*out)[*n].enabled = enabled;
            (*n)++;
        }
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    return 0;
}

static void parse_http_filters(pt_cfg_t *r, pt_config_t *cfg, pt_hcm_config_t *hc)
{
    int present;
    size_t n = pt_cfg_array(r, "http_filters", &present);
    if (!present || n == 0) {
        /* Envoy requires the router to be listed; an empty chain could never answer. */
        if (present)
            pt_cfg_leave_array(r);
        pt_cfg_error(r, "http_filters",
                     "must list the router filter (envoy.filters.http.router) last");
        return;
    }
    if (n > PT_HFM_MAX_FILTERS) {
        pt_cfg_error(r, NULL, "has %zu HTTP filters; at most %d are supported", n,
                     PT_HFM_MAX_FILTERS);
        pt_cfg_leave_array(r);
        return;
    }
    hc->filters = pt_arena_alloc(&cfg->arena, n * sizeof(pt_http_filter_t));
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        static const char *const filter_unsupported[] = {"config_discovery", NULL};
        pt_cfg_unsupported(r, filter_unsupported);
        pt_http_filter_t *f = &hc->filters[hc->nfilters];
        const char *name;
        if (pt_cfg_string(r, "name", &name, NULL) == 0)
            pt_cfg_error(r, "name", "is required");
        f->name = pt_arena_strdup(&cfg->arena, name ? name : "");
        int optional;
        pt_cfg_bool(r, "disabled", &f->disabled, 0);
        pt_cfg_bool(r, "is_optional", &optional, 0);
        int rc;
        const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
        if (rc == 0 && !pt_cfg_has(r, "config_discovery")) /* ECDS: refused as unsupported */
            pt_cfg_error(r, "typed_config", "is required");
        if (type != NULL) {
            f->ops = pt_http_filter_find(type);
            if (f->ops == NULL && optional && i + 1 < n) {
                /* is_optional: a filter petrel does not have is left out, as Envoy does. */
                pt_info("%s: optional HTTP filter %s (%s) is not supported: left out",
                        pt_cfg_path(r), f->name, type);
                pt_cfg_skip_rest(r);
            } else if (f->ops == NULL) {
                pt_cfg_error(r, "@type", "\"%s\" is not a supported HTTP filter", type);
                pt_cfg_skip_rest(r);
            } else {
                f->config = f->ops->parse ? f->ops->parse(r, cfg) : NULL;
                int last = i + 1 == n;
                if (f->ops->terminal && !last)
                    pt_cfg_error(r, NULL, "%s must be the last HTTP filter", f->ops->name);
                if (!f->ops->terminal && last)
                    pt_cfg_error(r, NULL,
                                 "the last HTTP filter must be the router "
                                 "(envoy.filters.http.router), not %s",
                                 f->ops->name);
                if (f->ops->terminal && f->disabled)
                    pt_cfg_error(r, "disabled", "the terminal filter cannot be disabled");
                hc->has_disabled_filters |= f->disabled;
                hc->nfilters++;
            }
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    pt_cfg_leave_array(r);
}

/* http2_protocol_options (envoy.config.core.v3.Http2ProtocolOptions), Envoy's defaults and
 * ranges; the defaults apply when it is absent. */
void pt_http2_options_parse(pt_cfg_t *r, pt_http2_options_t *o)
{
    static const char *const h2_unsupported[] = {
        "allow_metadata", "stream_error_on_invalid_http_messaging",
        "custom_settings_parameters", "use_oghttp2_codec", "max_metadata_size", NULL};
    pt_cfg_unsupported(r, h2_unsupported);
    uint64_t v;
    pt_cfg_uint(r, "hpack_table_size", &v, 4096, 0, UINT32_MAX);
    o->hpack_table_size = (uint32_t)v;
    pt_cfg_uint(r, "max_concurrent_streams", &v, 2147483647, 1, 2147483647);
    o->max_concurrent_streams = (uint32_t)v;
    pt_cfg_uint(r, "initial_stream_window_size", &v, 268435456, 65535, 2147483647);
    o->initial_stream_window_size = (uint32_t)v;
    pt_cfg_uint(r, "initial_connection_window_size", &v, 268435456, 65535, 2147483647);
    o->initial_connection_window_size = (uint32_t)v;
    pt_cfg_uint(r, "max_outbound_frames", &v, 10000, 1, UINT32_MAX - 1);
    o->max_outbound_frames = (uint32_t)v;
    pt_cfg_uint(r, "max_outbound_control_frames", &v, 1000, 1, UINT32_MAX - 1);
    o->max_outbound_control_frames = (uint32_t)v;
    pt_cfg_uint(r, "max_consecutive_inbound_frames_with_empty_payload", &v, 1, 0, UINT32_MAX);
    o->max_consecutive_inbound_frames_with_empty_payload = (uint32_t)v;
    pt_cfg_uint(r, "max_inbound_priority_frames_per_stream", &v, 100, 0, UINT32_MAX);
    o->max_inbound_priority_frames_per_stream = (uint32_t)v;
    pt_cfg_uint(r, "max_inbound_window_update_frames_per_data_frame_sent", &v, 10, 1,
                UINT32_MAX);
    o->max_inbound_window_update_frames_per_data_frame_sent = (uint32_t)v;
    int b;
    pt_cfg_bool(r, "override_stream_error_on_invalid_http_message", &b, 0);
    o->override_stream_error = b;
    pt_cfg_bool(r, "allow_connect", &b, 0);
    o->allow_connect = b;
    o->keepalive_jitter_pct = 15;
    if (pt_cfg_enter(r, "connection_keepalive") > 0) {
        static const char *const ka_unsupported[] = {"connection_idle_interval", NULL};
        pt_cfg_unsupported(r, ka_unsupported);
        pt_cfg_duration_ms(r, "interval", &o->keepalive_interval_ms, 0);
        if (pt_cfg_duration_ms(r, "timeout", &o->keepalive_timeout_ms, 0) == 0)
            pt_cfg_error(r, "timeout", "is required");
        else if (o->keepalive_timeout_ms == 0)
            pt_cfg_error(r, "timeout", "must be greater than 0");
        if (pt_cfg_enter(r, "interval_jitter") > 0) {
            double d;
            pt_cfg_double(r, "value", &d, 15, 0, 100);
            o->keepalive_jitter_pct = (uint32_t)d;
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
}

static void parse_http2_options(pt_cfg_t *r, pt_http2_options_t *o)
{
    if (pt_cfg_enter(r, "http2_protocol_options") > 0) {
        pt_http2_options_parse(r, o);
        pt_cfg_leave(r);
        return;
    }
    *o = (pt_http2_options_t){
        .max_concurrent_streams = 2147483647,
        .initial_stream_window_size = 268435456,
        .initial_connection_window_size = 268435456,
        .hpack_table_size = 4096,
        .max_outbound_frames = 10000,
        .max_outbound_control_frames = 1000,
        .max_consecutive_inbound_frames_with_empty_payload = 1,
        .max_inbound_priority_frames_per_stream = 100,
        .max_inbound_window_update_frames_per_data_frame_sent = 10,
        .keepalive_jitter_pct = 15,
    };
}

static void *hcm_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    size_t errors_before = r->nerrors;
    pt_arena_t *a = &cfg->arena;
    pt_hcm_config_t *hc = pt_arena_alloc(a, sizeof(*hc));
    pt_cfg_unsupported(r, hcm_unsupported);
    const char *s;
    if (pt_cfg_string(r, "stat_prefix", &s, NULL) == 0 || (s && !s[0]))
        pt_cfg_error(r, "stat_prefix", "is required");
    hc->stat_prefix = pt_arena_strdup(a, s ? s : "");
    int codec;
    pt_cfg_enum(r, "codec_type", codec_names, codec_known, &codec, 0);
    hc->codec_type = (pt_hcm_codec_type_t)codec;

    static const char *const route_specifiers[] = {"route_config", "rds", NULL};
    static const char *const route_unsupported[] = {"scoped_routes", NULL};
    int which = pt_cfg_oneof(r, route_specifiers, !pt_cfg_has_any(r, route_unsupported));
    if (which == 0 && pt_cfg_enter(r, "route_config") > 0) {
        hc->route_config = pt_route_config_parse(r, cfg);
        pt_cfg_leave(r);
    } else if (which == 1 && pt_cfg_enter(r, "rds") > 0) {
        /* Routes by name from RDS, resolved for each request (proxy/route_manager.h). */
        pt_rds_need_t *need = pt_arena_alloc(a, sizeof(*need));
        const char *name;
        if (pt_cfg_string(r, "route_config_name", &name, NULL) == 0 || (name && !name[0]))
            pt_cfg_error(r, "route_config_name", "is required");
        else if (pt_config_no_xdstp(r, "route_config_name", name) != 0)
            name = NULL;
        if (need != NULL &&
            pt_config_source_parse(r, a, "config_source", &need->source) == 0)
            pt_cfg_error(r, "config_source", "is required");
        if (need != NULL && name != NULL && name[0]) {
            need->name = pt_arena_strdup(a, name);
            need->stat_prefix = hc->stat_prefix;
            need->next = cfg->rds_needs;
            cfg->rds_needs = need;
            hc->rds_name = need->name;
            hc->rds_slot = pt_rds_slot(name);
        }
        pt_cfg_leave(r);
    }
    parse_http_filters(r, cfg, hc);
    pt_access_log_parse_list(r, "access_log", a, &hc->access_logs, &hc->naccess_logs);
    hc->access_log_needs = pt_access_logs_needs(hc->access_logs, hc->naccess_logs);

    pt_cfg_bool(r, "use_remote_address", &hc->use_remote_address, 0);
    uint64_t v;
    pt_cfg_uint(r, "xff_num_trusted_hops", &v, 0, 0, 64);
    hc->xff_num_trusted_hops = (uint32_t)v;
    pt_cfg_bool(r, "skip_xff_append", &hc->skip_xff_append, 0);
    pt_cfg_string(r, "server_name", &s, "petrel");
    hc->server_name = pt_arena_strdup(a, s);
    int st;
    pt_cfg_enum(r, "server_header_transformation", server_transform_names, NULL, &st, 0);
    hc->server_header_transformation = (pt_server_header_transformation_t)st;
    pt_cfg_bool(r, "generate_request_id", &hc->generate_request_id, 1);
    pt_cfg_bool(r, "preserve_external_request_id", &hc->preserve_external_request_id, 0);
    pt_cfg_bool(r, "always_set_request_id_in_response", &hc->always_set_request_id_in_response, 0);
    pt_cfg_bool(r, "proxy_100_continue", &hc->proxy_100_continue, 0);
    if (hc->proxy_100_continue)
        pt_cfg_error(r, "proxy_100_continue", "true is not supported (petrel answers "
                                              "100-continue itself)");
    pt_cfg_uint(r, "max_request_headers_kb", &v, 60, 1, 8192);
    hc->settings.max_request_headers_kb = (uint32_t)v;
    hc->settings.max_headers_count = 100;
    pt_cfg_duration_ms(r, "stream_idle_timeout", &hc->stream_idle_timeout_ms, 300 * 1000);
    pt_cfg_duration_ms(r, "request_timeout", &hc->request_timeout_ms, 0);
    pt_cfg_duration_ms(r, "request_headers_timeout", &hc->request_headers_timeout_ms, 0);
    pt_cfg_bool(r, "strip_any_host_port", &hc->strip_any_host_port, 0);
    pt_cfg_bool(r, "strip_matching_host_port", &hc->strip_matching_host_port, 0);
    if (hc->strip_any_host_port && hc->strip_matching_host_port)
        pt_cfg_error(r, "strip_matching_host_port",
                     "cannot be set together with strip_any_host_port");
    uint64_t dc;
    pt_cfg_duration_ms(r, "delayed_close_timeout", &dc, 1000);
    if (dc > 3600 * 1000)
        pt_cfg_error(r, "delayed_close_timeout", "must be at most 3600s");
    hc->delayed_close_timeout_ms = (uint32_t)(dc > 3600 * 1000 ? 3600 * 1000 : dc);
    pt_cfg_duration_ms(r, "drain_timeout", &hc->drain_timeout_ms, 5000);
    pt_cfg_bool(r, "normalize_path", &hc->normalize_path, 0);
    pt_cfg_bool(r, "merge_slashes", &hc->merge_slashes, 0);
    int esc;
    pt_cfg_enum(r, "path_with_escaped_slashes_action", escaped_slashes_names, NULL, &esc, 0);
    hc->escaped_slashes = escaped_slashes_map[esc];
    pt_cfg_string(r, "via", &s, NULL);
    hc->via = s != NULL && s[0] ? pt_arena_strdup(a, s) : NULL;
    hc->idle_timeout_ms = 3600 * 1000;
    if (pt_cfg_enter(r, "common_http_protocol_options") > 0) {
        static const char *const chpo_unsupported[] = {"max_response_headers_kb", NULL};
        pt_cfg_unsupported(r, chpo_unsupported);
        pt_cfg_duration_ms(r, "idle_timeout", &hc->idle_timeout_ms, 3600 * 1000);
        pt_cfg_duration_ms(r, "max_connection_duration", &hc->max_connection_duration_ms, 0);
        pt_cfg_uint(r, "max_headers_count", &v, 100, 1, 10000);
        hc->settings.max_headers_count = (uint32_t)v;
        pt_cfg_duration_ms(r, "max_stream_duration", &hc->max_stream_duration_ms, 0);
        pt_cfg_uint(r, "max_requests_per_connection", &v, 0, 0, UINT32_MAX);
        hc->max_requests_per_connection = (uint32_t)v;
        int u;
        pt_cfg_enum(r, "headers_with_underscores_action", underscore_names, NULL, &u, 0);
        hc->settings.headers_with_underscores_action = u;
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "http_protocol_options") > 0) {
        static const char *const hpo_unsupported[] = {
            "header_key_format", "enable_trailers", "allow_chunked_length",
            "override_stream_error_on_invalid_http_message", "send_fully_qualified_url",
            "use_balsa_parser", "allow_custom_methods", "allow_absolute_url", NULL};
        pt_cfg_unsupported(r, hpo_unsupported);
        pt_cfg_bool(r, "accept_http_10", &hc->accept_http_10, 0);
        pt_cfg_string(r, "default_host_for_http_10", &s, NULL);
        hc->default_host_for_http_10 = pt_arena_strdup(a, s);
        int present;
        size_t n = pt_cfg_array(r, "ignore_http_11_upgrade", &present);
        pt_string_matcher_t *m = pt_arena_alloc(a, (n ? n : 1) * sizeof(*m));
        for (size_t i = 0; m != NULL && i < n; i++)
            if (pt_cfg_enter_index(r, i) > 0) {
                if (pt_string_matcher_parse(r, a, &m[hc->settings.nignore_upgrade]) == 0)
                    hc->settings.nignore_upgrade++;
                pt_cfg_leave(r);
            }
        if (present)
            pt_cfg_leave_array(r);
        hc->settings.ignore_upgrade = m;
        pt_cfg_leave(r);
    }
    parse_upgrades(r, a, &hc->upgrades, &hc->nupgrades);
    hc->tracing = pt_tracing_config_parse(r, cfg);
    static const char *const fccd_names[] = {"SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD",
                                             "SANITIZE_SET", "ALWAYS_FORWARD_ONLY", NULL};
    int fccd;
    pt_cfg_enum(r, "forward_client_cert_details", fccd_names, NULL, &fccd, 0);
    hc->forward_client_cert = (pt_fcc_mode_t)fccd;
    if (pt_cfg_enter(r, "set_current_client_cert_details") > 0) {
        pt_cfg_bool(r, "subject", &hc->xfcc_subject, 0);
        pt_cfg_bool(r, "dns", &hc->xfcc_dns, 0);
        pt_cfg_bool(r, "uri", &hc->xfcc_uri, 0);
        int cert, chain;
        pt_cfg_bool(r, "cert", &cert, 0);
        pt_cfg_bool(r, "chain", &chain, 0);
        if (cert)
            pt_cfg_error(r, "cert", "true is not supported");
        if (chain)
            pt_cfg_error(r, "chain", "true is not supported");
        pt_cfg_leave(r);
    }
    /* Read and checked whatever codec_type says: Envoy accepts it on an HTTP1 connection
     * manager too (where it is unused). */
    parse_http2_options(r, &hc->settings.http2);
    hc->settings.drain_timeout_ms = hc->drain_timeout_ms;
    hc->settings.server_name = hc->server_name;
    hc->buffer_limit = 1024 * 1024;
    return r->nerrors == errors_before ? hc : NULL;
}

static int hcm_prepare(void *fc, pt_config_t *cfg)
{
    pt_hcm_config_t *hc = fc;
    const char *t = "envoy_http_conn_manager_prefix";
#define PT_X(n) hc->stats.n = pt_stats_counter("http", t, hc->stat_prefix, #n);
    PT_HCM_STATS(PT_X)
#undef PT_X
#define PT_X(n) hc->stats.n = pt_stats_gauge("http", t, hc->stat_prefix, #n);
    PT_HCM_GAUGES(PT_X)
#undef PT_X
#define PT_X(n) hc->stats.n = pt_stats_histogram("http", t, hc->stat_prefix, #n);
    PT_HCM_HISTOGRAMS(PT_X)
#undef PT_X
    if (hc->codec_type != PT_HCM_CODEC_HTTP1) {
#define PT_X(n) hc->settings.http2_stats.n = pt_stats_counter("http2", NULL, NULL, #n);
        PT_HTTP2_STATS(PT_X)
#undef PT_X
    }
    for (unsigned i = 0; i < hc->nfilters; i++) {
        pt_http_filter_t *f = &hc->filters[i];
        if (f->ops->prepare != NULL && f->ops->prepare(f->config, cfg, hc->stat_prefix) != 0)
            return -1;
    }
    return 0;
}

/* ======================================================================================
 * Streams
 * ====================================================================================== */

static uint64_t wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

static void stream_touch(pt_http_stream_t *s)
{
    s->last_activity_ms = pt_loop_ms();
}

static void stream_release(pt_defer_t *d)
{
    pt_http_stream_t *s = (pt_http_stream_t *)((char *)d - offsetof(pt_http_stream_t, release));
    pt_hfm_dispose(&s->fm);
    pt_arena_dispose(&s->arena);
    pt_worker_view_unpin(s->view);
    free(s);
}

static void on_stream_idle(struct ev_loop *loop, ev_timer *t, int revents);
static void on_request_timer(struct ev_loop *loop, ev_timer *t, int revents);

static void arm_idle_timer(pt_http_stream_t *s)
{
    ev_timer_stop(s->worker->loop, &s->idle_timer);
    if (s->idle_timeout_ms > 0) {
        ev_timer_set(&s->idle_timer, (double)s->idle_timeout_ms / 1000.0, 0.);
        ev_timer_start(s->worker->loop, &s->idle_timer);
    }
}

/* The whole request arrived: request_timeout no longer applies. The same timer carries
 * max_stream_duration (armed with the earlier of the two deadlines), so it is re-armed for
 * what is left of that, measured from the stream's start, instead of just stopped. */
static void request_timer_on_request_end(pt_http_stream_t *s)
{
    const pt_hcm_config_t *hc = s->config;
    ev_timer_stop(s->worker->loop, &s->request_timer);
    if (hc->max_stream_duration_ms == 0 || (s->flags & PT_HS_COMPLETE))
        return;
    uint64_t elapsed_ms = (pt_loop_us() - s->info.start_mono_us) / 1000;
    uint64_t left_ms =
        elapsed_ms < hc->max_stream_duration_ms ? hc->max_stream_duration_ms - elapsed_ms : 0;
    ev_timer_set(&s->request_timer, (double)left_ms / 1000.0, 0.);
    ev_timer_start(s->worker->loop, &s->request_timer);
}

static void *hcm_on_new_stream(void *owner, pt_http_codec_stream_t *cs)
{
    pt_hcm_conn_t *h = owner;
    const pt_hcm_config_t *hc = h->config;
    pt_http_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->hcm = h;
    s->cs = cs;
    s->config = hc;
    s->view = pt_worker_view_pin(h->session->worker);
    /* The route configuration in force when the request starts, kept to its end (the view
     * holds it); one from RDS that has not come yet routes nothing: 404 NR. */
    s->route_config = hc->route_config != NULL ? hc->route_config
                                               : pt_view_route_config(s->view ? s->view->view
                                                                              : NULL,
                                                                      hc->rds_slot);
    s->worker = h->session->worker;
    s->release.fn = stream_release;
    s->filter_state = pt_arena_alloc(&s->arena, (hc->nfilters ? hc->nfilters : 1) * sizeof(void *));
    if (s->filter_state == NULL) {
        free(s);
        return NULL;
    }
    for (unsigned i = 0; i < hc->nfilters; i++) {
        size_t sz = hc->filters[i].ops->state_size;
        s->filter_state[i] = sz ? pt_arena_alloc(&s->arena, sz) : NULL;
    }
    pt_hfm_init(&s->fm, s, hc->filters, s->filter_state, hc->nfilters, hc->buffer_limit,
                &hcm_sink);
    h->codec->ops->set_stream_arena(cs, &s->arena);
    s->info.start_wall_us = wall_us();
    s->info.start_mono_us = pt_loop_us();
    s->info.downstream_remote = h->session->conn->peer;
    s->info.downstream_direct_remote = h->session->conn->peer;
    s->info.downstream_local = h->local;
    s->info.listener_metadata = h->session->listener->metadata;
    s->original_dst = h->session->local_restored ? &h->local : NULL;
    pt_conn_t *dc = h->session->conn;
    s->scheme = pt_conn_is_tls(dc) ? "https" : "http";
    if (pt_conn_is_tls(dc)) {
        /* Copies, not borrows: the TLS state goes with the connection, which an HTTP/1
         * codec may close (Connection: close, an early response) before the stream
         * completes and its access log line is written. */
        const pt_tls_identity_t *peer = pt_tls_peer_identity(dc);
        if (peer != NULL) {
            s->info.downstream_peer_uri_san =
                peer->nuri ? pt_arena_strdup(&s->arena, peer->uri_sans[0]) : NULL;
            s->info.downstream_peer_subject = pt_arena_strdup(&s->arena, peer->subject);
        }
        s->info.downstream_local_uri_san = pt_arena_strdup(&s->arena, pt_tls_local_uri_san(dc));
        if (hc->access_log_needs & PT_FORMAT_NEEDS_PEER_CERT) {
            /* Only for logs that show it: the PEM and digests cost a few microseconds. */
            pt_peer_cert_t *pc = pt_arena_alloc(&s->arena, sizeof(*pc));
            if (pc != NULL && pt_tls_peer_cert_fill(dc, &s->arena, pc) == 0)
                s->info.downstream_peer_cert = pc;
        }
        s->info.requested_server_name = pt_arena_strdup(&s->arena, pt_tls_sni(dc));
    } else {
        s->info.requested_server_name = h->session->sni;
    }
    s->idle_timeout_ms = hc->stream_idle_timeout_ms;
    ev_init(&s->idle_timer, on_stream_idle);
    s->idle_timer.data = s;
    ev_init(&s->request_timer, on_request_timer);
    s->request_timer.data = s;
    stream_touch(s);
    arm_idle_timer(s);
    uint64_t rq_deadline = hc->request_timeout_ms;
    if (hc->max_stream_duration_ms > 0 &&
        (rq_deadline == 0 || hc->max_stream_duration_ms < rq_deadline))
        rq_deadline = hc->max_stream_duration_ms;
    if (h->http2 && hc->request_headers_timeout_ms > 0 &&
        (rq_deadline == 0 || hc->request_headers_timeout_ms < rq_deadline)) {
        /* An HTTP/2 stream exists from its first HEADERS frame: its own headers timer (an
         * HTTP/1 head is timed by the connection's timer, before the stream exists). */
        rq_deadline = hc->request_headers_timeout_ms;
        s->flags |= PT_HS_HEADERS_TIMER;
    }
    if (rq_deadline > 0) {
        ev_timer_set(&s->request_timer, (double)rq_deadline / 1000.0, 0.);
        ev_timer_start(s->worker->loop, &s->request_timer);
    }
    s->next = h->streams;
    if (h->streams != NULL)
        h->streams->prev = s;
    h->streams = s;
    h->nstreams++;
    h->requests++;
    ev_timer_stop(s->worker->loop, &h->timer);
    pt_stat_inc(hc->stats.downstream_rq_total);
    pt_stat_inc(h->http2 ? hc->stats.downstream_rq_http2_total : hc->stats.downstream_rq_http1_total);
    pt_stat_inc(hc->stats.downstream_rq_active);
    if (hc->max_requests_per_connection > 0 && h->requests >= hc->max_requests_per_connection)
        h->codec->ops->shutdown_notice(h->codec);
    return s;
}

/* The client address petrel trusts for this request: the peer, or (use_remote_address
 * false) the x-forwarded-for entry xff_num_trusted_hops from the right. */
static void resolve_remote_address(pt_http_stream_t *s)
{
    const pt_hcm_config_t *hc = s->config;
    if (hc->use_remote_address)
        return;
    const char *xff = pt_http_headers_get_joined(s->request_headers, "x-forwarded-for");
    if (xff == NULL)
        return;
    /* Split from the right. */
    const char *end = xff + strlen(xff);
    uint32_t skip = hc->xff_num_trusted_hops;
    while (end > xff) {
        const char *comma = end;
        while (comma > xff && comma[-1] != ',')
            comma--;
        if (skip == 0) {
            const char *a = comma;
            while (a < end && (*a == ' ' || *a == '\t'))
                a++;
            const char *b = end;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            char ip[64];
            size_t n = (size_t)(b - a);
            if (n > 0 && n < sizeof(ip)) {
                memcpy(ip, a, n);
                ip[n] = '\0';
                pt_addr_t addr;
                if (pt_addr_parse(&addr, ip, 0) == 0)
                    s->info.downstream_remote = addr;
            }
            return;
        }
        skip--;
        end = comma > xff ? comma - 1 : xff;
    }
}

/* x-forwarded-client-cert (forward_client_cert_details / set_current_client_cert_details):
 * what the upstream learns of the client's certificate. Returns 0 or -ENOMEM. */
static int apply_xfcc(pt_http_stream_t *s)
{
    const pt_hcm_config_t *hc = s->config;
    pt_http_headers_t *h = s->request_headers;
    pt_conn_t *dc = s->hcm->session->conn;
    const pt_tls_identity_t *peer = pt_conn_is_tls(dc) ? pt_tls_peer_identity(dc) : NULL;
    int mtls = peer != NULL && pt_tls_peer_verified(dc);
    switch (hc->forward_client_cert) {
    case PT_FCC_SANITIZE:
        pt_http_headers_remove(h, "x-forwarded-client-cert");
        return 0;
    case PT_FCC_ALWAYS_FORWARD_ONLY:
        return 0;
    case PT_FCC_FORWARD_ONLY:
        if (!mtls)
            pt_http_headers_remove(h, "x-forwarded-client-cert");
        return 0;
    case PT_FCC_APPEND_FORWARD:
    case PT_FCC_SANITIZE_SET:
        break;
    }
    if (!mtls) {
        pt_http_headers_remove(h, "x-forwarded-client-cert");
        return 0;
    }
    pt_buf_t b = {0};
    int err = 0;
    const char *by = pt_tls_local_uri_san(dc);
    if (by != NULL)
        err |= pt_buf_printf(&b, "By=%s;", by);
    if (peer->sha256 != NULL)
        err |= pt_buf_printf(&b, "Hash=%s;", peer->sha256);
    if (hc->xfcc_subject && peer->subject != NULL)
        err |= pt_buf_printf(&b, "Subject=\"%s\";", peer->subject);
    if (hc->xfcc_uri)
        for (unsigned i = 0; i < peer->nuri; i++)
            err |= pt_buf_printf(&b, "URI=%s;", peer->uri_sans[i]);
    if (hc->xfcc_dns)
        for (unsigned i = 0; i < peer->ndns; i++)
            err |= pt_buf_printf(&b, "DNS=%s;", peer->dns_sans[i]);
    size_t n = pt_buf_len(&b);
    char *elem = err == 0 ? pt_arena_alloc(&s->arena, n + 1) : NULL;
    if (elem == NULL) {
        pt_buf_dispose(&b);
        return -ENOMEM;
    }
    pt_buf_copyout(&b, 0, elem, n);
    pt_buf_dispose(&b);
    if (n > 0 && elem[n - 1] == ';')
        n--;
    elem[n] = '\0';
    const char *prev = pt_http_headers_get_joined(h, "x-forwarded-client-cert");
    if (hc->forward_client_cert == PT_FCC_APPEND_FORWARD && prev != NULL) {
        const char *v = pt_arena_sprintf(&s->arena, "%s,%s", prev, elem);
        return v != NULL ? pt_http_headers_set_ref(h, "x-forwarded-client-cert", v) : -ENOMEM;
    }
    return pt_http_headers_set_ref(h, "x-forwarded-client-cert", elem);
}

/* Envoy's request header rules for a proxy hop. */
/* normalize_path, merge_slashes and path_with_escaped_slashes_action, in Envoy's order:
 * escaped slashes, then dot segments, then slashes. Returns 0 when the stream was answered
 * (400 for a rejected path, 307 to the unescaped one). */
static int normalize_request_path(pt_http_stream_t *s, pt_http_headers_t *headers)
{
    const pt_hcm_config_t *hc = s->config;
    const char *path = pt_http_headers_get(headers, ":path");
    if (path == NULL || path[0] != '/')
        return 1; /* "*" (OPTIONS) and CONNECT targets have no path to normalize */
    const char *p = path;
    int redirect = 0;
    if (hc->escaped_slashes != PT_ESCAPED_SLASHES_KEEP && pt_path_has_escaped_slash(p)) {
        if (hc->escaped_slashes == PT_ESCAPED_SLASHES_REJECT) {
            pt_stat_inc(hc->stats.downstream_rq_failed_path_normalization);
            pt_http_stream_local_reply(s, 400, "", NULL, 0, "path_normalization_failed");
            return 0;
        }
        p = pt_path_unescape_slashes(&s->arena, p);
        redirect = hc->escaped_slashes == PT_ESCAPED_SLASHES_REDIRECT;
    }
    if (p != NULL && hc->normalize_path)
        p = pt_path_normalize(&s->arena, p);
    if (p != NULL && hc->merge_slashes)
        p = pt_path_merge_slashes(&s->arena, p);
    if (p == NULL) {
        pt_stat_inc(hc->stats.downstream_rq_failed_path_normalization);
        pt_http_stream_local_reply(s, 400, "", NULL, 0, "path_normalization_failed");
        return 0;
    }
    if (redirect) {
        pt_stat_inc(hc->stats.downstream_rq_redirected_with_normalized_path);
        pt_http_headers_t extra;
        pt_http_headers_init(&extra, &s->arena);
        pt_http_headers_add_str(&extra, "location", p);
        pt_http_stream_local_reply(s, 307, "", &extra, 0, "path_normalization_redirect");
        return 0;
    }
    if (p != path)
        pt_http_headers_set_ref(headers, ":path", p);
    return 1;
}

/* strip_any_host_port / strip_matching_host_port: "host:port" becomes "host" (for the
 * matching mode, only when port is the listener's) before routing and upstream. */
static int strip_host_port(pt_http_stream_t *s, pt_http_headers_t *headers)
{
    const pt_http_header_t *a = pt_http_headers_find(headers, ":authority");
    const char *colon = a ? strrchr(a->value, ':') : NULL;
    if (colon == NULL || strchr(colon, ']') != NULL)
        return 0; /* no port (a bracketed IPv6 literal alone has colons inside) */
    if (s->config->strip_matching_host_port) {
        char *end;
        unsigned long port = strtoul(colon + 1, &end, 10);
        if (end == colon + 1 || *end != '\0' || port != pt_addr_port(&s->info.downstream_local))
            return 0;
    }
    char *v = pt_arena_strndup(&s->arena, a->value, (size_t)(colon - a->value));
    return v != NULL ? pt_http_headers_set_ref(headers, ":authority", v) : -ENOMEM;
}

/* via: appended to what the header already says, as Envoy does. Returns 0 or -ENOMEM. */
static int append_via(pt_http_stream_t *s, pt_http_headers_t *h)
{
    const char *old = pt_http_headers_get_joined(h, "via");
    if (old == NULL || old[0] == '\0')
        return pt_http_headers_set_ref(h, "via", s->config->via);
    char *v = pt_arena_sprintf(&s->arena, "%s, %s", old, s->config->via);
    return v != NULL ? pt_http_headers_set_ref(h, "via", v) : -ENOMEM;
}

/* Returns 0, or -ENOMEM when a rule could not be applied: the request must not go on
 * half-rewritten (an edge that could not strip a client's x-envoy-internal, or append to its
 * x-forwarded-for, would pass on what the client claims). */
static int mutate_request_headers(pt_http_stream_t *s)
{
    const pt_hcm_config_t *hc = s->config;
    pt_http_headers_t *h = s->request_headers;
    /* Values set below live in the stream's arena or the config, so the map refers to them
     * without another copy. */
    char *ip = pt_arena_alloc(&s->arena, PT_ADDR_STRLEN);
    if (ip == NULL)
        return -ENOMEM;
    pt_addr_format_ip(&s->info.downstream_remote, ip, PT_ADDR_STRLEN);

    int err = pt_http_headers_set_ref(h, ":scheme", s->scheme);
    /* te is hop-by-hop except "trailers" (RFC 9110 10.1.4). */
    const char *te = pt_http_headers_get(h, "te");
    if (te != NULL && strcasecmp(te, "trailers") != 0)
        pt_http_headers_remove(h, "te");

    if (hc->use_remote_address) {
        /* At the edge, a client outside the private address space may not steer petrel:
         * the x-envoy-* control headers are removed, as Envoy does. */
        int internal = pt_addr_is_internal(&s->info.downstream_remote);
        if (!internal) {
            static const char *const control[] = {
                "x-envoy-max-retries", "x-envoy-retry-on", "x-envoy-retriable-status-codes",
                "x-envoy-retriable-header-names", "x-envoy-upstream-rq-timeout-ms",
                "x-envoy-upstream-rq-per-try-timeout-ms", "x-envoy-expected-rq-timeout-ms",
                "x-envoy-internal", "x-envoy-external-address", "x-envoy-original-url",
                "x-envoy-upstream-alt-stat-name", "x-envoy-downstream-service-cluster",
                "x-envoy-downstream-service-node", "x-envoy-decorator-operation",
                "x-envoy-ip-tags", "x-envoy-retry-grpc-on"};
            pt_http_headers_remove_any(h, control, 16);
            err |= pt_http_headers_set_ref(h, "x-envoy-external-address", ip);
        } else {
            err |= pt_http_headers_set_ref(h, "x-envoy-internal", "true");
        }
        s->internal = internal;
        if (!hc->skip_xff_append) {
            const char *xff = pt_http_headers_get_joined(h, "x-forwarded-for");
            const char *v = xff != NULL ? pt_arena_sprintf(&s->arena, "%s,%s", xff, ip) : ip;
            err |= v != NULL ? pt_http_headers_set_ref(h, "x-forwarded-for", v) : -ENOMEM;
        }
        err |= pt_http_headers_set_ref(h, "x-forwarded-proto", s->scheme);
    } else {
        resolve_remote_address(s);
        if (pt_http_headers_get(h, "x-forwarded-proto") == NULL)
            err |= pt_http_headers_set_ref(h, "x-forwarded-proto", s->scheme);
    }
    err |= apply_xfcc(s);
    if (hc->via != NULL)
        err |= append_via(s, h);
    if (hc->generate_request_id) {
        const char *rid = pt_http_headers_get(h, "x-request-id");
        /* An edge proxy does not trust a client's id unless told to preserve it. */
        if (rid == NULL || rid[0] == '\0' ||
            (hc->use_remote_address && !s->internal && !hc->preserve_external_request_id)) {
            char *uuid = pt_arena_alloc(&s->arena, 37);
            if (uuid == NULL)
                return -ENOMEM;
            pt_uuid4(uuid);
            err |= pt_http_headers_set_ref(h, "x-request-id", uuid);
        }
    }
    return err != 0 ? -ENOMEM : 0;
}

static void mutate_response_headers(pt_http_stream_t *s, pt_http_headers_t *h)
{
    const pt_hcm_config_t *hc = s->config;
    switch (hc->server_header_transformation) {
    case PT_SERVER_HEADER_OVERWRITE:
        pt_http_headers_set_ref(h, "server", hc->server_name); /* config outlives streams */
        break;
    case PT_SERVER_HEADER_APPEND_IF_ABSENT:
        if (pt_http_headers_get(h, "server") == NULL)
            pt_http_headers_set_ref(h, "server", hc->server_name); /* config outlives streams */
        break;
    case PT_SERVER_HEADER_PASS_THROUGH:
        break;
    }
    if (hc->always_set_request_id_in_response && s->request_headers != NULL) {
        const char *rid = pt_http_headers_get(s->request_headers, "x-request-id");
        if (rid != NULL)
            pt_http_headers_set(h, "x-request-id", rid);
    }
    if (hc->via != NULL)
        (void)append_via(s, h); /* a response without it is still the upstream's answer */
    if (s->span != NULL)
        pt_tracing_response_headers(s, h);
    static const char *const hop_by_hop[] = {"keep-alive", "proxy-connection",
                                             "transfer-encoding", "connection", "upgrade"};
    /* An upgrade keeps Connection and Upgrade (the last two). */
    pt_http_headers_remove_any(h, hop_by_hop, (s->flags & PT_HS_UPGRADE) ? 3 : 5);
}

static const pt_upgrade_config_t *find_upgrade(const pt_upgrade_config_t *list, unsigned n,
                                               const char *type)
{
    for (unsigned i = 0; i < n; i++)
        if (strcasecmp(list[i].upgrade_type, type) == 0)
            return &list[i];
    return NULL;
}

/* Is the upgrade allowed? Route-level upgrade_configs override the connection manager's. */
static int upgrade_allowed(pt_http_stream_t *s, const char *type)
{
    const pt_hcm_config_t *hc = s->config;
    const pt_upgrade_config_t *u = find_upgrade(hc->upgrades, hc->nupgrades, type);
    int enabled = u != NULL && u->enabled;
    if (s->route != NULL) {
        /* Envoy: a route's entry overrides the connection manager's enabled flag, for
         * upgrade types the connection manager lists at all. */
        const pt_upgrade_config_t *ru =
            find_upgrade(s->route->upgrades, s->route->nupgrades, type);
        if (ru != NULL)
            enabled = u != NULL && ru->enabled;
    }
    return enabled;
}

/* Which filters run for this stream: those not disabled by default, unless the route (its
 * virtual host, its route configuration) disables them, and those disabled by default that
 * the route enables (any typed_per_filter_config entry for them, unless disabled). */
static void choose_filters(pt_http_stream_t *s)
{
    const pt_hcm_config_t *hc = s->config;
    if (!hc->has_disabled_filters && (s->route_config == NULL || !s->route_config->has_per_filter))
        return; /* the common case: every filter runs */
    uint64_t skip = 0;
    for (unsigned i = 0; i + 1 < hc->nfilters; i++) {
        const pt_http_filter_t *f = &hc->filters[i];
        const pt_per_filter_config_t *e =
            s->route != NULL ? pt_route_per_filter(s->route_config, s->route, f->name) : NULL;
        if (e != NULL ? e->disabled : f->disabled)
            skip |= 1ull << i;
    }
    pt_hfm_set_skip(&s->fm, skip);
}

static void hcm_on_headers(void *stream, pt_http_headers_t *headers, int end_stream)
{
    pt_http_stream_t *s = stream;
    const pt_hcm_config_t *hc = s->config;
    s->request_headers = headers;
    s->info.request_headers = headers;
    s->info.protocol = s->hcm->codec->ops->stream_protocol(s->cs);
    if (s->flags & PT_HS_HEADERS_TIMER) {
        /* The headers came in time: the timer goes back to request_timeout and
         * max_stream_duration, measured from the stream's start. */
        s->flags &= ~PT_HS_HEADERS_TIMER;
        ev_timer_stop(s->worker->loop, &s->request_timer);
        uint64_t d = hc->request_timeout_ms;
        if (hc->max_stream_duration_ms > 0 && (d == 0 || hc->max_stream_duration_ms < d))
            d = hc->max_stream_duration_ms;
        if (d > 0 && !end_stream) {
            uint64_t elapsed = (pt_loop_us() - s->info.start_mono_us) / 1000;
            ev_timer_set(&s->request_timer, (double)(d > elapsed ? d - elapsed : 0) / 1000.0, 0.);
            ev_timer_start(s->worker->loop, &s->request_timer);
        }
    }
    if (end_stream) {
        /* A request without a body is complete with its head (an upgrade request never
         * is: the codec passes end_stream 0 for it). */
        s->flags |= PT_HS_REQUEST_END;
        request_timer_on_request_end(s);
    }
    stream_touch(s);
    const char *method = pt_http_headers_get(headers, ":method");
    if (method != NULL && strcmp(method, "HEAD") == 0)
        s->flags |= PT_HS_HEAD_REQUEST;

    if (pt_http_headers_get(headers, ":authority") == NULL) {
        /* HTTP/1.0 without Host: only with accept_http_10 (Envoy answers 426 otherwise). */
        if (strcmp(s->info.protocol, "HTTP/1.0") == 0) {
            if (!hc->accept_http_10) {
                pt_http_stream_local_reply(s, 426, "", NULL, 0, "low_version");
                return;
            }
            pt_http_headers_add_str(headers, ":authority",
                                    hc->default_host_for_http_10 ? hc->default_host_for_http_10 : "");
        } else {
            pt_http_headers_add_str(headers, ":authority", "");
        }
    } else if (strcmp(s->info.protocol, "HTTP/1.0") == 0 && !hc->accept_http_10) {
        pt_http_stream_local_reply(s, 426, "", NULL, 0, "low_version");
        return;
    }
    /* A '#' fragment never belongs in a request (RFC 9112 3.2): refused, or stripped with
     * envoy.reloadable_features.http_reject_path_with_fragment false (Istio's bootstraps),
     * whichever codec it came by. */
    /* (HTTP/1's parser refused a fragment already unless it is to be stripped.) */
    const char *path = s->hcm->http2 || !pt_runtime.reject_path_with_fragment
                           ? pt_http_headers_get(headers, ":path")
                           : NULL;
    const char *fragment = path != NULL ? strchr(path, '#') : NULL;
    if (fragment != NULL) {
        if (pt_runtime.reject_path_with_fragment) {
            pt_http_stream_local_reply(s, 400, "", NULL, 0, "fragment_in_request_target");
            return;
        }
        const char *stripped = pt_arena_strndup(&s->arena, path, (size_t)(fragment - path));
        if (stripped == NULL || pt_http_headers_set(headers, ":path", stripped) != 0) {
            pt_http_stream_local_reply(s, 503, "", NULL, 0, "out_of_memory");
            return;
        }
    }
    if ((hc->normalize_path || hc->merge_slashes || hc->escaped_slashes) &&
        !normalize_request_path(s, headers))
        return;
    if (((hc->strip_any_host_port || hc->strip_matching_host_port) &&
         strip_host_port(s, headers) != 0) ||
        mutate_request_headers(s) != 0) {
        pt_http_stream_local_reply(s, 503, "", NULL, 0, "out_of_memory");
        return;
    }

    /* Route once, before the filters: they may act on it, the router follows it. */
    const char *authority = pt_http_headers_get(headers, ":authority");
    if (s->route_config != NULL) {
        s->vhost = pt_route_find_vhost(s->route_config, authority ? authority : "");
        s->route = s->vhost ? pt_route_match(s->vhost, headers) : NULL;
        if (s->route != NULL) {
            s->info.route_name = s->route->name;
            s->info.route_metadata = s->route->metadata;
            s->info.vhost_metadata = s->vhost->metadata;
            if (s->route->idle_timeout_ms != PT_ROUTE_TIMEOUT_UNSET) {
                s->idle_timeout_ms = s->route->idle_timeout_ms;
                arm_idle_timer(s);
            }
        }
    }

    choose_filters(s);
    if (hc->tracing != NULL)
        pt_tracing_begin(s);

    const char *upgrade = pt_http_headers_get(headers, "upgrade");
    if (method != NULL && strcmp(method, "CONNECT") == 0) {
        /* CONNECT is an upgrade of type CONNECT, as in Envoy: upgrade_configs decide, and a
         * 2xx answer turns the stream into a tunnel. */
        if (!upgrade_allowed(s, "connect")) {
            pt_stat_inc(hc->stats.downstream_rq_ws_on_non_ws_route);
            pt_http_stream_local_reply(s, 403, "", NULL, 0, "upgrade_failed");
            return;
        }
        s->flags |= PT_HS_UPGRADE | PT_HS_CONNECT;
    } else if (upgrade != NULL && pt_http_headers_get(headers, "connection") != NULL) {
        if (!upgrade_allowed(s, upgrade)) {
            pt_stat_inc(hc->stats.downstream_rq_ws_on_non_ws_route);
            pt_http_stream_local_reply(s, 403, "", NULL, 0, "upgrade_failed");
            return;
        }
        s->flags |= PT_HS_UPGRADE;
    }
    const char *expect = pt_http_headers_get(headers, "expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0) {
        /* petrel answers 100-continue itself and does not forward the expectation. */
        pt_http_headers_remove(headers, "expect");
        if (!end_stream)
            s->hcm->codec->ops->encode_100_continue(s->cs);
    }
    pt_hfm_decode_headers(&s->fm, headers, end_stream);
}

void pt_http_stream_continue(pt_http_stream_t *s)
{
    if (!(s->flags & PT_HS_COMPLETE))
        pt_hfm_continue_decoding(&s->fm);
}

void pt_http_stream_continue_encoding(pt_http_stream_t *s)
{
    if (!(s->flags & PT_HS_COMPLETE))
        pt_hfm_continue_encoding(&s->fm);
}

static void hcm_on_data(void *stream, pt_buf_t *data, int end_stream)
{
    pt_http_stream_t *s = stream;
    size_t n = pt_buf_len(data);
    s->info.bytes_received += n;
    if (end_stream)
        s->flags |= PT_HS_REQUEST_END;
    if (n > 0)
        stream_touch(s);
    if (end_stream && (s->flags & PT_HS_UPGRADE) == 0)
        request_timer_on_request_end(s);
    if (s->flags & PT_HS_COMPLETE) {
        pt_buf_dispose(data);
        return;
    }
    pt_hfm_decode_data(&s->fm, data, end_stream);
}

static void hcm_on_trailers(void *stream, pt_http_headers_t *trailers)
{
    pt_http_stream_t *s = stream;
    s->flags |= PT_HS_REQUEST_END;
    s->request_trailers = trailers;
    request_timer_on_request_end(s);
    if (s->flags & PT_HS_COMPLETE)
        return;
    pt_hfm_decode_trailers(&s->fm, trailers);
}

/* Tells every filter the stream is over early. */
static void notify_reset(pt_http_stream_t *s)
{
    const pt_hcm_config_t *hc = s->config;
    for (unsigned i = 0; i < hc->nfilters; i++) {
        const pt_http_filter_t *f = &hc->filters[i];
        if (f->ops->on_reset != NULL && !(i < PT_HFM_MAX_FILTERS && ((s->fm.skip >> i) & 1u)))
            f->ops->on_reset(s, f->config, s->filter_state[i]);
    }
}

const void *pt_http_stream_route_config(pt_http_stream_t *s)
{
    int i = s->fm.current;
    if (i < 0 || s->route == NULL || s->route_config == NULL || !s->route_config->has_per_filter)
        return NULL; /* the usual case: no route configuration here has any */
    const pt_per_filter_config_t *e =
        pt_route_per_filter(s->route_config, s->route, s->config->filters[i].name);
    return e != NULL ? e->config : NULL;
}

static void hcm_on_reset(void *stream, pt_http_reset_reason_t reason)
{
    pt_http_stream_t *s = stream;
    if (s->flags & PT_HS_COMPLETE)
        return;
    pt_debug("downstream stream reset: %s", pt_http_reset_reason_str(reason));
    s->cs = NULL; /* the codec forgot the stream */
    if (!(s->flags & PT_HS_RESPONSE_END))
        s->info.response_flags |= PT_RF(DOWNSTREAM_CONNECTION_TERMINATION);
    pt_stat_inc(s->config->stats.downstream_rq_rx_reset);
    pt_hcm_conn_t *h = s->hcm;
    if (s->info.response_code == 0 &&
        pt_loop_us() - s->info.start_mono_us < PREMATURE_RESET_LIFETIME_US)
        h->premature_resets++;
    notify_reset(s);
    stream_complete(s);
    if (h->closed_streams >= PREMATURE_RESET_MIN_STREAMS &&
        (uint64_t)h->premature_resets * 2 >= h->closed_streams && !h->closing) {
        pt_stat_inc(h->config->stats.downstream_rq_too_many_premature_resets);
        pt_debug("downstream connection closed: too many premature resets (%u of %u streams)",
                 h->premature_resets, h->closed_streams);
        hcm_close(h, PT_CLOSE_NOW);
    }
}

static void hcm_on_protocol_error(void *owner, void *stream, int status, const char *details)
{
    pt_hcm_conn_t *h = owner;
    pt_http_stream_t *s = stream;
    /* A timeout is not the client breaking the protocol. */
    if (status != 408)
        pt_stat_inc(h->config->stats.downstream_cx_protocol_error);
    if (status == 431 || status == 413)
        pt_stat_inc(h->config->stats.downstream_rq_too_large);
    if (status == 408 && details != NULL && strcmp(details, "request_header_timeout") == 0)
        pt_stat_inc(h->config->stats.downstream_rq_header_timeout);
    if (s != NULL)
        ev_timer_stop(s->worker->loop, &h->timer);
    pt_debug("downstream protocol error: %d %s", status, details);
    if (s == NULL) {
        hcm_close(h, PT_CLOSE_FLUSH);
        return;
    }
    if (s->info.protocol == NULL)
        s->info.protocol = h->codec->ops->stream_protocol(s->cs);
    if (status == 408 && details != NULL && strcmp(details, "stream_idle_timeout") == 0) {
        /* A head that stopped arriving, bounded by stream_idle_timeout: the same answer as
         * a stream that went idle later (Envoy's stream, and its idle timer, start at the
         * first byte of the head). */
        pt_http_stream_local_reply(s, 408, "stream timeout", NULL, PT_RF(STREAM_IDLE_TIMEOUT),
                                   details);
        return;
    }
    pt_http_stream_local_reply(s, status, "", NULL, PT_RF(DOWNSTREAM_PROTOCOL_ERROR), details);
}

/* The terminal filter (the router) paces the response by one signal: the downstream write
 * queue above its watermark, or an encoder filter holding more than the buffer limit. It
 * hears of each change (it ignores repeats), once it has the request. */
static void tell_terminal_watermark(pt_http_stream_t *s)
{
    const pt_hcm_config_t *hc = s->config;
    const pt_http_filter_t *f = &hc->filters[hc->nfilters - 1];
    if (pt_hfm_decoding_done(&s->fm) && f->ops->on_downstream_watermark != NULL)
        f->ops->on_downstream_watermark(s, f->config, s->filter_state[hc->nfilters - 1],
                                        pt_http_stream_downstream_above_high(s));
}

static void hcm_on_write_watermark(void *owner, void *stream, int above)
{
    (void)owner;
    pt_http_stream_t *s = stream;
    if (s == NULL || (s->flags & PT_HS_COMPLETE))
        return;
    if (above)
        s->flags |= PT_HS_ABOVE_HIGH;
    else
        s->flags &= ~PT_HS_ABOVE_HIGH;
    tell_terminal_watermark(s);
}

static void hcm_on_connection_closed(void *owner)
{
    pt_hcm_conn_t *h = owner;
    /* Any stream still here lost its connection. */
    while (h->streams != NULL) {
        pt_http_stream_t *s = h->streams;
        s->cs = NULL;
        if (!(s->flags & PT_HS_RESPONSE_END))
            s->info.response_flags |= PT_RF(DOWNSTREAM_CONNECTION_TERMINATION);
        notify_reset(s);
        stream_complete(s);
    }
    hcm_close(h, PT_CLOSE_NOW);
}

/* Connection idle timeout, or request_headers_timeout (slowloris defence: from the first
 * byte of a request head to its end). */
static void on_conn_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    pt_hcm_conn_t *h = t->data;
    if (h->timer_headers) {
        if (h->config->request_headers_timeout_ms == 0)
            pt_stat_inc(h->config->stats.downstream_rq_idle_timeout);
        h->codec->ops->send_error(h->codec, 408,
                                  h->config->request_headers_timeout_ms ? "request_header_timeout"
                                                                        : "stream_idle_timeout");
        return;
    }
    pt_stat_inc(h->config->stats.downstream_cx_idle_timeout);
    hcm_close(h, PT_CLOSE_FLUSH);
}

const pt_listener_config_t *pt_hcm_listener(const pt_hcm_conn_t *h)
{
    return h->session->listener;
}

const pt_config_t *pt_hcm_snapshot(const pt_hcm_conn_t *h)
{
    return h->session->config;
}

static void hcm_on_message_begin(void *owner)
{
    pt_hcm_conn_t *h = owner;
    pt_worker_t *w = h->session->worker;
    ev_timer_stop(w->loop, &h->timer);
    /* A head that stops arriving is bounded by request_headers_timeout, or else by the
     * stream idle timeout (Envoy's stream exists from the first byte, so its idle timeout
     * covers the head too). */
    uint64_t ms = h->config->request_headers_timeout_ms ? h->config->request_headers_timeout_ms
                                                        : h->config->stream_idle_timeout_ms;
    if (ms > 0) {
        h->timer_headers = 1;
        ev_timer_set(&h->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(w->loop, &h->timer);
    }
}

static void hcm_on_idle(void *owner)
{
    pt_hcm_conn_t *h = owner;
    pt_worker_t *w = h->session->worker;
    if (h->config->idle_timeout_ms > 0 && h->nstreams == 0) {
        ev_timer_stop(w->loop, &h->timer); /* libev: no ev_timer_set while active */
        h->timer_headers = 0;
        ev_timer_set(&h->timer, (double)h->config->idle_timeout_ms / 1000.0, 0.);
        ev_timer_start(w->loop, &h->timer);
    }
}

static const pt_http_server_callbacks_t hcm_callbacks = {
    .on_message_begin = hcm_on_message_begin,
    .on_new_stream = hcm_on_new_stream,
    .on_headers = hcm_on_headers,
    .on_data = hcm_on_data,
    .on_trailers = hcm_on_trailers,
    .on_reset = hcm_on_reset,
    .on_protocol_error = hcm_on_protocol_error,
    .on_write_watermark = hcm_on_write_watermark,
    .on_connection_closed = hcm_on_connection_closed,
    .on_idle = hcm_on_idle,
};

/* ---- completion ------------------------------------------------------------------ */

static void count_response(const pt_hcm_config_t *hc, int status)
{
    pt_stat_t id = status < 200   ? hc->stats.downstream_rq_1xx
                   : status < 300 ? hc->stats.downstream_rq_2xx
                   : status < 400 ? hc->stats.downstream_rq_3xx
                   : status < 500 ? hc->stats.downstream_rq_4xx
                                  : hc->stats.downstream_rq_5xx;
    pt_stat_inc(id);
}

/* Once per stream: filters release their state, the access log is written, and the stream
 * leaves the connection; its memory goes at the next loop turn. */
static void stream_complete(pt_http_stream_t *s)
{
    if (s->flags & PT_HS_COMPLETE)
        return;
    s->flags |= PT_HS_COMPLETE;
    pt_hfm_abort(&s->fm, PT_HFM_DECODE | PT_HFM_ENCODE);
    pt_hcm_conn_t *h = s->hcm;
    const pt_hcm_config_t *hc = s->config;
    ev_timer_stop(s->worker->loop, &s->idle_timer);
    ev_timer_stop(s->worker->loop, &s->request_timer);
    for (unsigned i = 0; i < hc->nfilters; i++) {
        const pt_http_filter_t *f = &hc->filters[i];
        if (f->ops->on_destroy != NULL)
            f->ops->on_destroy(s, f->config, s->filter_state[i]);
    }
    s->info.end_mono_us = pt_loop_us();
    if (s->span != NULL)
        pt_tracing_end(s);
    for (unsigned i = 0; i < hc->naccess_logs; i++)
        pt_access_log_write(hc->access_logs[i], &s->info);
    pt_stat_dec(hc->stats.downstream_rq_active);
    pt_stat_inc(hc->stats.downstream_rq_completed);
    pt_hist_record(hc->stats.downstream_rq_time,
                   (s->info.end_mono_us - s->info.start_mono_us) / 1000);
    if (s->flags & PT_HS_UPGRADED)
        pt_stat_dec(hc->stats.downstream_cx_upgrades_active);
    h->closed_streams++;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    h->nstreams--;
    pt_worker_defer(s->worker, &s->release);
    /* The codec reports the connection idle (on_idle) while it finishes the response, i.e.
     * before the stream leaves the connection here, so that call could not arm the idle
     * timer: arm it now that the last stream is gone. A closing connection stops it. */
    if (h->nstreams == 0 && !h->closing)
        hcm_on_idle(h);
}

/* Response fully sent: the stream is done when the request is too. An early response (the
 * request still arriving) ends the stream; the codec closes an HTTP/1 connection then. */
static void response_finished(pt_http_stream_t *s)
{
    s->flags |= PT_HS_RESPONSE_END;
    s->info.end_mono_us = pt_loop_us();
    if (!(s->flags & PT_HS_REQUEST_END)) {
        pt_stat_inc(s->config->stats.downstream_rq_response_before_rq_complete);
        notify_reset(s);
    }
    stream_complete(s);
}

void pt_http_stream_encode_headers(pt_http_stream_t *s, pt_http_headers_t *h, int end_stream)
{
    if (s->flags & (PT_HS_COMPLETE | PT_HS_RESPONSE_STARTED) || s->cs == NULL)
        return;
    s->flags |= PT_HS_RESPONSE_STARTED;
    s->response_headers = h;
    s->info.response_headers = h;
    s->info.response_code = pt_http_status_value(pt_http_headers_get(h, ":status"), 0);
    mutate_response_headers(s, h);
    pt_hfm_encode_headers(&s->fm, h, end_stream);
}

void pt_http_stream_encode_data(pt_http_stream_t *s, pt_buf_t *data, int end_stream)
{
    if ((s->flags & (PT_HS_COMPLETE | PT_HS_RESPONSE_END)) || s->cs == NULL) {
        pt_buf_dispose(data);
        return;
    }
    pt_hfm_encode_data(&s->fm, data, end_stream);
}

void pt_http_stream_encode_trailers(pt_http_stream_t *s, pt_http_headers_t *t)
{
    if ((s->flags & (PT_HS_COMPLETE | PT_HS_RESPONSE_END)) || s->cs == NULL)
        return;
    pt_hfm_encode_trailers(&s->fm, t);
}

/* ---- the filter manager's sink: the response leaves the encoders ---------------- */

static void write_headers(pt_http_stream_t *s, pt_http_headers_t *h, int end_stream)
{
    if ((s->flags & PT_HS_COMPLETE) || s->cs == NULL)
        return;
    const pt_hcm_config_t *hc = s->config;
    /* An encoder may have changed the status. */
    int status = pt_http_status_value(pt_http_headers_get(h, ":status"), 0);
    s->response_headers = h;
    s->info.response_headers = h;
    s->info.response_code = status;
    s->flags |= PT_HS_RESPONSE_WRITTEN;
    count_response(hc, status);
    stream_touch(s);
    int tunnel = (s->flags & PT_HS_UPGRADE) &&
                 (status == 101 ||
                  ((s->flags & PT_HS_CONNECT) && status >= 200 && status < 300 && !end_stream));
    if (tunnel) {
        pt_stat_inc(hc->stats.downstream_cx_upgrades_total);
        pt_stat_inc(hc->stats.downstream_cx_upgrades_active);
        /* An HTTP/1 connection is the tunnel; on HTTP/2 (extended CONNECT) one stream is,
         * among others, and the gauge goes down when that stream ends. */
        if (s->hcm->http2)
            s->flags |= PT_HS_UPGRADED;
        else
            s->hcm->upgraded = 1;
        /* A tunnel has no request timeout. */
        ev_timer_stop(s->worker->loop, &s->request_timer);
    }
    s->hcm->codec->ops->encode_headers(s->cs, h, end_stream);
    if (end_stream || ((s->flags & PT_HS_HEAD_REQUEST) && status >= 200))
        response_finished(s);
}

static void write_data(pt_http_stream_t *s, pt_buf_t *data, int end_stream)
{
    if ((s->flags & (PT_HS_COMPLETE | PT_HS_RESPONSE_END)) || s->cs == NULL) {
        pt_buf_dispose(data);
        return;
    }
    size_t n = pt_buf_len(data);
    s->info.bytes_sent += n;
    if (n > 0)
        stream_touch(s);
    s->hcm->codec->ops->encode_data(s->cs, data, end_stream);
    if (end_stream)
        response_finished(s);
}

static void write_trailers(pt_http_stream_t *s, pt_http_headers_t *t)
{
    if ((s->flags & (PT_HS_COMPLETE | PT_HS_RESPONSE_END)) || s->cs == NULL)
        return;
    s->info.response_trailers = t;
    s->hcm->codec->ops->encode_trailers(s->cs, t);
    response_finished(s);
}

/* Reading the request pauses while a filter holds more of it than the buffer limit, or
 * while a filter (the router) asks; it resumes when neither does. */
static void set_read_paused(pt_http_stream_t *s, uint32_t who, int pause)
{
    uint32_t before = s->flags & (PT_HS_READ_PAUSED | PT_HS_FILTER_PAUSED);
    if (pause)
        s->flags |= who;
    else
        s->flags &= ~who;
    uint32_t after = s->flags & (PT_HS_READ_PAUSED | PT_HS_FILTER_PAUSED);
    if ((before == 0) != (after == 0) && !(s->flags & PT_HS_COMPLETE) && s->cs != NULL)
        s->hcm->codec->ops->read_disable(s->cs, after != 0);
}

static void decode_pause(pt_http_stream_t *s, int pause)
{
    set_read_paused(s, PT_HS_READ_PAUSED, pause);
}

static void encode_pause(pt_http_stream_t *s, int pause)
{
    if (pause)
        s->flags |= PT_HS_ENCODER_HELD;
    else
        s->flags &= ~PT_HS_ENCODER_HELD;
    tell_terminal_watermark(s);
}

/* A filter buffering the whole request body got more than the buffer limit: 413, as
 * Envoy answers (a reset once the response started). */
static void decode_overflow(pt_http_stream_t *s)
{
    pt_stat_inc(s->config->stats.downstream_rq_too_large);
    pt_http_stream_local_reply(s, 413, "Payload Too Large", NULL, 0, "request_payload_too_large");
}

/* A filter buffering the whole response body got more than the buffer limit: 500 when
 * nothing of the response went out yet, sent past the encoders (they are what failed),
 * else a reset. */
static void encode_overflow(pt_http_stream_t *s)
{
    pt_hfm_abort(&s->fm, PT_HFM_ENCODE);
    s->info.response_code_details = "response_payload_too_large";
    if (s->flags & PT_HS_RESPONSE_WRITTEN) {
        pt_http_stream_reset(s, 0, "response_payload_too_large");
        return;
    }
    pt_http_headers_t *h = pt_arena_alloc(&s->arena, sizeof(*h));
    if (h == NULL) {
        pt_http_stream_reset(s, 0, NULL);
        return;
    }
    pt_http_headers_init(h, &s->arena);
    static const char body[] = "Internal Server Error";
    if (pt_http_headers_add_str(h, ":status", "500") != 0 ||
        pt_http_headers_add_str(h, "content-type", "text/plain") != 0 ||
        pt_http_headers_add_str(h, "content-length", "21") != 0) {
        pt_http_stream_reset(s, 0, NULL);
        return;
    }
    int with_body = !(s->flags & PT_HS_HEAD_REQUEST);
    write_headers(s, h, !with_body);
    if (with_body && !(s->flags & PT_HS_COMPLETE)) {
        pt_buf_t b = {0};
        if (pt_buf_append(&b, body, sizeof(body) - 1) != 0) {
            pt_buf_dispose(&b);
            pt_http_stream_reset(s, 0, NULL);
            return;
        }
        write_data(s, &b, 1);
    }
}

static const pt_hfm_sink_t hcm_sink = {
    .write_headers = write_headers,
    .write_data = write_data,
    .write_trailers = write_trailers,
    .decode_pause = decode_pause,
    .encode_pause = encode_pause,
    .decode_overflow = decode_overflow,
    .encode_overflow = encode_overflow,
};

void pt_http_stream_encode_100_continue(pt_http_stream_t *s)
{
    if (!(s->flags & (PT_HS_COMPLETE | PT_HS_RESPONSE_STARTED)) && s->cs != NULL)
        s->hcm->codec->ops->encode_100_continue(s->cs);
}

void pt_http_stream_reset(pt_http_stream_t *s, uint32_t flags, const char *details)
{
    if (s->flags & PT_HS_COMPLETE)
        return;
    s->info.response_flags |= flags;
    if (details != NULL)
        s->info.response_code_details = details;
    pt_stat_inc(s->config->stats.downstream_rq_tx_reset);
    if (s->flags & PT_HS_RESPONSE_STARTED)
        pt_stat_inc(s->config->stats.rq_reset_after_downstream_response_started);
    notify_reset(s);
    if (s->cs != NULL) {
        pt_http_codec_stream_t *cs = s->cs;
        s->cs = NULL;
        s->hcm->codec->ops->reset_stream(cs, PT_HTTP_RESET_LOCAL);
    }
    stream_complete(s);
}

void pt_http_stream_local_reply(pt_http_stream_t *s, int status, const char *body,
                                const pt_http_headers_t *extra, uint32_t flags,
                                const char *details)
{
    pt_http_stream_local_reply_n(s, status, body, body ? strlen(body) : 0, extra, flags, details);
}

/* A local reply to a gRPC request, as Envoy makes it: trailers-only, 200, the gRPC status
 * the HTTP status maps to, the body as grpc-message. */
static void grpc_local_reply(pt_http_stream_t *s, int status, const char *body, size_t blen,
                             const pt_http_headers_t *extra, uint32_t flags, const char *details)
{
    pt_http_headers_t *h = pt_arena_alloc(&s->arena, sizeof(*h));
    char *message = pt_arena_alloc(&s->arena, blen + 1);
    int err = h != NULL && message != NULL ? 0 : -ENOMEM;
    if (err == 0) {
        pt_http_headers_init(h, &s->arena);
        if (extra != NULL)
            for (uint32_t i = 0; i < extra->count; i++)
                err |= pt_http_headers_add_str(h, extra->items[i].name, extra->items[i].value);
        memcpy(message, body != NULL ? body : "", blen);
        message[blen] = '\0';
        err |= pt_grpc_add_status(h, pt_grpc_status_from_http(status), message);
    }
    if (err != 0) {
        pt_http_stream_reset(s, flags, details);
        return;
    }
    pt_http_stream_local_reply_n(s, 200, "", 0, h, flags, details);
}

void pt_http_stream_local_reply_n(pt_http_stream_t *s, int status, const char *body,
                                  size_t blen, const pt_http_headers_t *extra, uint32_t flags,
                                  const char *details)
{
    if (s->flags & PT_HS_COMPLETE)
        return;
    s->info.response_flags |= flags;
    if (details != NULL)
        s->info.response_code_details = details;
    s->info.local_reply_body = body; /* %LOCAL_REPLY_BODY% */
    s->info.local_reply_body_len = body != NULL ? blen : 0;
    if (s->flags & PT_HS_RESPONSE_STARTED) {
        pt_http_stream_reset(s, 0, details);
        return;
    }
    if (status != 200 && pt_grpc_is_request(s->request_headers) &&
        (extra == NULL || pt_http_headers_get(extra, "grpc-status") == NULL)) {
        grpc_local_reply(s, status, body, blen, extra, flags, details);
        return;
    }
    pt_http_headers_t *h = pt_arena_alloc(&s->arena, sizeof(*h));
    char st[8];
    snprintf(st, sizeof(st), "%d", status);
    int err = h != NULL ? 0 : -ENOMEM;
    if (h != NULL) {
        pt_http_headers_init(h, &s->arena);
        err |= pt_http_headers_add_str(h, ":status", st);
        if (extra != NULL)
            for (uint32_t i = 0; i < extra->count; i++)
                err |= pt_http_headers_add_str(h, extra->items[i].name, extra->items[i].value);
        if (blen > 0 && pt_http_headers_get(h, "content-type") == NULL)
            err |= pt_http_headers_add_str(h, "content-type", "text/plain");
        char cl[24];
        snprintf(cl, sizeof(cl), "%zu", blen);
        if (status != 204 && status != 304 && !(status >= 100 && status < 200))
            err |= pt_http_headers_set(h, "content-length", cl);
    }
    if (err != 0) {
        /* No memory for the answer's head (a status, a location): no answer, a reset. */
        pt_http_stream_reset(s, 0, NULL);
        return;
    }
    s->flags |= PT_HS_LOCAL_REPLY;
    /* A local reply ends any upgrade attempt and stops the filters behind it. */
    s->flags &= ~(PT_HS_UPGRADE | PT_HS_CONNECT);
    pt_hfm_abort(&s->fm, PT_HFM_DECODE);
    if (s->fm.decoded > 0)
        notify_reset(s);
    int with_body = blen > 0 && !(s->flags & PT_HS_HEAD_REQUEST);
    pt_http_stream_encode_headers(s, h, !with_body);
    if (with_body && !(s->flags & PT_HS_COMPLETE)) {
        pt_buf_t b = {0};
        if (pt_buf_append(&b, body, blen) != 0) {
            /* The head announced blen bytes: without them the stream cannot end well. */
            pt_buf_dispose(&b);
            pt_http_stream_reset(s, 0, NULL);
            return;
        }
        pt_http_stream_encode_data(s, &b, 1);
    }
}

void pt_http_stream_read_disable(pt_http_stream_t *s, int disable)
{
    set_read_paused(s, PT_HS_FILTER_PAUSED, disable);
}

int pt_http_stream_downstream_above_high(const pt_http_stream_t *s)
{
    return (s->flags & (PT_HS_ABOVE_HIGH | PT_HS_ENCODER_HELD)) != 0;
}

void pt_http_stream_upgrade(pt_http_stream_t *s)
{
    if (s->cs != NULL)
        s->hcm->codec->ops->upgrade(s->cs);
}

pt_conn_t *pt_http_stream_downstream_conn(const pt_http_stream_t *s)
{
    return s->hcm->session->conn;
}

const char *pt_http_stream_protocol(const pt_http_stream_t *s)
{
    return s->info.protocol ? s->info.protocol : "HTTP/1.1";
}

static void on_stream_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    pt_http_stream_t *s = t->data;
    uint64_t now = pt_now_ms(), deadline = s->last_activity_ms + s->idle_timeout_ms;
    if (now + 1 < deadline) {
        ev_timer_set(t, (double)(deadline - now) / 1000.0, 0.);
        ev_timer_start(loop, t);
        return;
    }
    pt_stat_inc(s->config->stats.downstream_rq_idle_timeout);
    pt_http_stream_local_reply(s, 408, "stream timeout", NULL, PT_RF(STREAM_IDLE_TIMEOUT),
                               "stream_idle_timeout");
}

static void on_request_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    pt_http_stream_t *s = t->data;
    if (s->flags & PT_HS_HEADERS_TIMER) {
        /* An HTTP/2 request's headers did not all come: its stream is reset. */
        pt_stat_inc(s->config->stats.downstream_rq_header_timeout);
        pt_http_stream_reset(s, 0, "request_header_timeout");
        return;
    }
    pt_stat_inc(s->config->stats.downstream_rq_timeout);
    if (!(s->flags & PT_HS_REQUEST_END))
        pt_http_stream_local_reply(s, 408, "request timeout", NULL, 0, "request_overall_timeout");
    else
        pt_http_stream_local_reply(s, 408, "request timeout", NULL, PT_RF(DURATION_TIMEOUT),
                                   "max_duration_reached");
}

/* ======================================================================================
 * Connections
 * ====================================================================================== */

static void hcm_close(pt_hcm_conn_t *h, pt_close_how_t how)
{
    if (h->closing)
        return;
    h->closing = 1;
    pt_session_t *sess = h->session;
    pt_worker_t *w = sess->worker;
    const pt_hcm_config_t *hc = h->config;
    if (h->max_duration != NULL) {
        ev_timer_stop(w->loop, h->max_duration);
        free(h->max_duration);
        h->max_duration = NULL;
    }
    while (h->streams != NULL) {
        pt_http_stream_t *s = h->streams;
        s->cs = NULL;
        if (!(s->flags & PT_HS_RESPONSE_END))
            s->info.response_flags |= PT_RF(DOWNSTREAM_CONNECTION_TERMINATION);
        notify_reset(s);
        stream_complete(s);
    }
    ev_timer_stop(w->loop, &h->timer);
    pt_conn_t *c = sess->conn;
    pt_stat_add(hc->stats.downstream_cx_rx_bytes_total, c->rx_bytes);
    pt_stat_add(hc->stats.downstream_cx_tx_bytes_total, c->tx_bytes);
    pt_stat_dec(hc->stats.downstream_cx_active);
    if (h->codec != NULL)
        pt_stat_dec(h->http2 ? hc->stats.downstream_cx_http2_active
                             : hc->stats.downstream_cx_http1_active);
    pt_stat_inc(hc->stats.downstream_cx_destroy);
    pt_hist_record(hc->stats.downstream_cx_length_ms, pt_loop_ms() - sess->start_ms);
    if (h->upgraded)
        pt_stat_dec(hc->stats.downstream_cx_upgrades_active);
    if (h->codec != NULL)
        h->codec->ops->close(h->codec, how);
    else
        pt_conn_close(c, how);
    pt_session_end(sess);
    free(h);
}

static void hcm_abort(pt_session_t *s)
{
    hcm_close(s->terminal, PT_CLOSE_NOW);
}

/* The server drains (SIGTERM, or the listener is going away): no more requests after the
 * one in flight, which says "connection: close". An idle keep-alive connection stays open,
 * as in Envoy's drain sequence: its client may be writing a request right now, and a close
 * would lose it unanswered. A request that arrives is answered with "connection: close";
 * connections still idle when the drain time ends are closed then. */
static void hcm_drain(pt_session_t *s)
{
    pt_hcm_conn_t *h = s->terminal;
    if (h->closing)
        return;
    if (h->codec == NULL) {
        h->draining = 1; /* told once the protocol is known */
        return;
    }
    h->codec->ops->shutdown_notice(h->codec);
}

/* max_connection_duration (Envoy's rule): closed now when idle, else after the response in
 * flight, which says "connection: close". */
static void on_max_duration(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    pt_hcm_conn_t *h = t->data;
    pt_stat_inc(h->config->stats.downstream_cx_max_duration_reached);
    if (h->closing)
        return;
    if (h->codec != NULL && h->http2) {
        /* HTTP/2: the drain sequence (GOAWAY, then the final one after drain_timeout). */
        h->codec->ops->shutdown_notice(h->codec);
        return;
    }
    if (h->nstreams == 0) {
        hcm_close(h, PT_CLOSE_FLUSH);
        return;
    }
    h->codec->ops->shutdown_notice(h->codec);
}

/* Creates the connection's codec: 1 HTTP/1, 2 HTTP/2. Returns 0 or -ENOMEM. */
static int start_codec(pt_hcm_conn_t *h, int proto)
{
    const pt_hcm_config_t *hc = h->config;
    pt_conn_t *c = h->session->conn;
    const pt_http_server_codec_ops_t *ops =
        proto == 2 ? &pt_http2_server_codec : &pt_http1_server_codec;
    h->http2 = proto == 2;
    h->codec = ops->create(c, &hc->settings, &hcm_callbacks, h);
    if (h->codec == NULL)
        return -ENOMEM;
    pt_stat_inc(h->http2 ? hc->stats.downstream_cx_http2_total
                         : hc->stats.downstream_cx_http1_total);
    pt_stat_inc(h->http2 ? hc->stats.downstream_cx_http2_active
                         : hc->stats.downstream_cx_http1_active);
    if (h->draining)
        h->codec->ops->shutdown_notice(h->codec);
    return 0;
}

/* codec_type AUTO on plain text: the first bytes tell. The HTTP/2 client preface
 * (RFC 9113 3.4) picks HTTP/2; a byte that differs from it picks HTTP/1. */
static void sniff_on_read(pt_conn_t *c)
{
    pt_hcm_conn_t *h = c->data;
    char head[PT_HTTP2_PREFACE_LEN];
    size_t n = pt_buf_copyout(&c->in, 0, head, sizeof(head));
    int prefix = memcmp(head, PT_HTTP2_PREFACE, n) == 0;
    if (n == 0 && !(c->flags & PT_CONN_F_EOF))
        return;
    if (n == 0 || (prefix && n < sizeof(head) && (c->flags & PT_CONN_F_EOF))) {
        hcm_close(h, PT_CLOSE_NOW); /* gone before saying anything */
        return;
    }
    if (prefix && n < sizeof(head))
        return; /* maybe HTTP/2: wait for the rest of the preface */
    if (start_codec(h, prefix ? 2 : 1) != 0) {
        hcm_close(h, PT_CLOSE_NOW);
        return;
    }
    c->handler->on_read(c); /* the codec takes what was read */
}

static void sniff_on_error(pt_conn_t *c, int status)
{
    (void)status;
    hcm_close(c->data, PT_CLOSE_NOW);
}

static void sniff_on_null(pt_conn_t *c)
{
    (void)c;
}

static void sniff_on_connect(pt_conn_t *c, int status)
{
    (void)c, (void)status;
}

static const pt_conn_handler_t sniff_handler = {
    .on_read = sniff_on_read,
    .on_connect = sniff_on_connect,
    .on_drain = sniff_on_null,
    .on_error = sniff_on_error,
};

static int hcm_on_new_connection(pt_session_t *sess, void *fc)
{
    const pt_hcm_config_t *hc = fc;
    pt_hcm_conn_t *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        pt_conn_close(sess->conn, PT_CLOSE_NOW);
        pt_session_end(sess);
        return PT_STOP;
    }
    h->session = sess;
    h->config = hc;
    h->local = sess->local;
    sess->terminal = h;
    sess->abort = hcm_abort;
    sess->drain = hcm_drain;
    /* The codec from the table: by codec_type, and for AUTO by the negotiated ALPN on TLS,
     * or else by the first bytes (start_codec, from sniff_on_read). */
    int proto = 0;
    const char *alpn = pt_conn_is_tls(sess->conn) ? pt_tls_alpn(sess->conn) : NULL;
    if (hc->codec_type == PT_HCM_CODEC_HTTP1)
        proto = 1;
    else if (hc->codec_type == PT_HCM_CODEC_HTTP2)
        proto = 2;
    else if (alpn != NULL)
        proto = strcmp(alpn, "h2") == 0 ? 2 : 1;
    if (proto != 0 && start_codec(h, proto) != 0) {
        free(h);
        pt_conn_close(sess->conn, PT_CLOSE_NOW);
        pt_session_end(sess);
        return PT_STOP;
    }
    if (proto == 0)
        pt_conn_set_handler(sess->conn, &sniff_handler, h);
    pt_stat_inc(hc->stats.downstream_cx_total);
    pt_stat_inc(hc->stats.downstream_cx_active);
    sess->conn->delayed_close_ms = hc->delayed_close_timeout_ms;
    sess->conn->delayed_close_timeout_stat = hc->stats.downstream_cx_delayed_close_timeout;
    ev_init(&h->timer, on_conn_timer);
    h->timer.data = h;
    if (hc->max_connection_duration_ms > 0 &&
        (h->max_duration = malloc(sizeof(*h->max_duration))) != NULL) {
        ev_timer_init(h->max_duration, on_max_duration,
                      (double)hc->max_connection_duration_ms / 1000.0, 0.);
        h->max_duration->data = h;
        ev_timer_start(sess->worker->loop, h->max_duration);
    }
    hcm_on_idle(h);
    /* The codec installed its handler on the connection; start reading. */
    pt_conn_start(sess->conn, sess->conn->handler, sess->conn->data);
    return PT_STOP;
}

/* The ALPN names the configured codecs speak, in preference order. */
static const char *hcm_alpn(const void *fc)
{
    const pt_hcm_config_t *hc = fc;
    switch (hc->codec_type) {
    case PT_HCM_CODEC_HTTP1:
        return "\x08http/1.1\x08http/1.0";
    case PT_HCM_CODEC_HTTP2:
        return "\x02h2";
    case PT_HCM_CODEC_AUTO:
        break;
    }
    return "\x02h2\x08http/1.1\x08http/1.0";
}

const pt_network_filter_ops_t pt_http_connection_manager_filter = {
    .name = "envoy.filters.network.http_connection_manager",
    .type_url = "type.googleapis.com/"
                "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    .terminal = 1,
    .alpn = "\x02h2\x08http/1.1\x08http/1.0", /* every codec's */
    .alpn_for = hcm_alpn,
    .parse = hcm_parse,
    .prepare = hcm_prepare,
    .on_new_connection = hcm_on_new_connection,
};
