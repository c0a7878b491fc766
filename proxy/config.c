#include "proxy/config.h"
#include "proxy/access_log.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "filters/filter.h"
#include "discovery/discovery_response.h"
#include "proxy/config_address.h"
#include "proxy/config_source.h"
#include "proxy/hash.h"
#include "proxy/log.h"
#include "proxy/matcher.h"
#include "proxy/metadata.h"
#include "proxy/overload.h"
#include "proxy/stats.h"
#include "proxy/stats_config.h"
#include "proxy/stats_sink.h"
#include "proxy/tracing.h"
#include "discovery/dns.h"
#include "tls/context.h"
#include "tls/secret.h"

static const char *const bootstrap_unsupported[] = {
    "hds_config", "flags_path", "watchdog", "watchdogs",
    "enable_dispatcher_stats",
    "header_prefix", "stats_server_version_override", "bootstrap_extensions",
    "fatal_actions", "config_sources", "default_config_source", "default_socket_interface",
    "certificate_provider_instances", "inline_headers", "perf_tracing_file_path",
    "default_regex_engine", "xds_delegate_extension", "xds_config_tracker_extension",
    "listener_manager", "grpc_async_client_manager_config",
    "memory_allocator_manager", "node_context_params", NULL};
static const char *const static_unsupported[] = {"secrets", NULL};
static const char *const node_unsupported[] = {"dynamic_parameters",
                                               "user_agent_name", "user_agent_version",
                                               "user_agent_build_version", "extensions",
                                               "client_features", "listening_addresses", NULL};
static const char *const admin_unsupported[] = {"socket_options", NULL};
static const char *const listener_unsupported[] = {
    "filter_chain_matcher",
    "drain_type", "transparent", "freebind", "socket_options", "tcp_fast_open_queue_length",
    "udp_listener_config", "api_listener", "connection_balance_config", "reuse_port",
    "access_log", "tcp_backlog_size", "internal_listener",
    "enable_mptcp", "additional_addresses", "listener_specifier",
    "deprecated_v1", "enable_reuse_port", NULL};
static const char *const chain_unsupported[] = {"use_proxy_proto",
                                                "on_demand_configuration", NULL};
static const char *const filter_unsupported[] = {"config_discovery", NULL};

static _Atomic uint64_t next_version = 1;

/* dynamic_resources.ads_config: an ApiConfigSource for the ADS stream (discovery/ads.h):
 * api_type GRPC (state of the world) or DELTA_GRPC, V3, one grpc_services entry naming a
 * static cluster (envoy_grpc). */
static void parse_ads_config(pt_cfg_t *r, pt_config_t *cfg)
{
    if (pt_cfg_enter(r, "ads_config") <= 0)
        return;
    pt_api_source_t api;
    pt_api_source_parse(r, &cfg->arena, 0, &api);
    cfg->ads_delta = api.api_type == PT_API_DELTA_GRPC;
    cfg->ads_node_first_only = api.node_first_only;
    cfg->ads_cluster = api.cluster;
    cfg->has_ads = cfg->ads_cluster != NULL;
    pt_cfg_leave(r);
}

/* bootstrap.dynamic_resources: where listeners and clusters come from besides
 * static_resources. */
static void parse_dynamic_resources(pt_cfg_t *r, pt_config_t *cfg)
{
    if (pt_cfg_enter(r, "dynamic_resources") <= 0)
        return;
    static const char *const unsupported[] = {"lds_resources_locator", "cds_resources_locator",
                                              NULL};
    pt_cfg_unsupported(r, unsupported);
    parse_ads_config(r, cfg);
    cfg->has_lds = pt_config_source_parse(r, &cfg->arena, "lds_config", &cfg->lds) > 0;
    cfg->has_cds = pt_config_source_parse(r, &cfg->arena, "cds_config", &cfg->cds) > 0;
    pt_cfg_leave(r);
}

static int parse_node(pt_cfg_t *r, pt_config_t *cfg)
{
    int rc = pt_cfg_enter(r, "node");
    if (rc <= 0)
        return rc;
    pt_cfg_unsupported(r, node_unsupported);
    const char *s;
    pt_cfg_string(r, "id", &s, NULL);
    cfg->node.id = pt_arena_strdup(&cfg->arena, s);
    pt_cfg_string(r, "cluster", &s, NULL);
    cfg->node.cluster = pt_arena_strdup(&cfg->arena, s);
    cfg->node.metadata = pt_struct_parse(r, "metadata", &cfg->arena);
    if (pt_cfg_enter(r, "locality") > 0) {
        pt_cfg_string(r, "region", &s, NULL);
        cfg->node.region = pt_arena_strdup(&cfg->arena, s);
        pt_cfg_string(r, "zone", &s, NULL);
        cfg->node.zone = pt_arena_strdup(&cfg->arena, s);
        pt_cfg_string(r, "sub_zone", &s, NULL);
        cfg->node.sub_zone = pt_arena_strdup(&cfg->arena, s);
        pt_cfg_leave(r);
    }
    pt_cfg_leave(r);
    return 1;
}

/* bootstrap.application_log_config.log_format: the format of petrel's own log lines
 * (proxy/log.h). Checked here; pt_config_app_log_pattern compiles it for the server. */
static pt_log_pattern_t *app_log_pattern(pt_cfg_t *r, json_t *root)
{
    json_t *alc = json_object_get(root, "application_log_config");
    json_t *lf = json_object_get(alc, "log_format");
    if (r != NULL) {
        if (pt_cfg_enter(r, "application_log_config") <= 0)
            return NULL;
        if (pt_cfg_enter(r, "log_format") <= 0) {
            pt_cfg_error(r, "log_format", "is required");
            pt_cfg_leave(r);
            return NULL;
        }
    }
    static const char *const kinds[] = {"json_format", "text_format", NULL};
    int k = 0, esc = 0;
    const char *text = NULL;
    json_t *obj = NULL;
    if (r != NULL) {
        k = pt_cfg_oneof(r, kinds, 1);
        pt_cfg_bool(r, "escape_new_line", &esc, 0);
        if (k == 0 && !json_is_object(obj = pt_cfg_get(r, "json_format")))
            pt_cfg_error(r, "json_format", "must be an object");
        if (k == 1 && pt_cfg_string(r, "text_format", &text, NULL) > 0 && text[0] == '\0')
            pt_cfg_error(r, "text_format", "must not be empty");
    } else {
        obj = json_object_get(lf, "json_format");
        text = json_string_value(json_object_get(lf, "text_format"));
        esc = json_is_true(json_object_get(lf, "escape_new_line"));
        k = obj != NULL ? 0 : 1;
    }
    pt_log_pattern_t *p = NULL;
    char err[512];
    if ((k == 0 && json_is_object(obj)) || (k == 1 && text != NULL && text[0] != '\0')) {
        p = pt_log_pattern_compile(text, k == 0 ? obj : NULL, esc, err, sizeof(err));
        if (p == NULL && r != NULL)
            pt_cfg_error(r, kinds[k], "%s", err);
    }
    if (r != NULL) {
        pt_cfg_leave(r);
        pt_cfg_leave(r);
        pt_log_pattern_free(p); /* validated; the server compiles its own */
        return NULL;
    }
    return p;
}

pt_log_pattern_t *pt_config_app_log_pattern(const pt_config_t *cfg)
{
    return cfg->source != NULL && json_object_get(cfg->source, "application_log_config") != NULL
               ? app_log_pattern(NULL, cfg->source)
               : NULL;
}

/* bootstrap.cluster_manager: local_cluster_name, the cluster of the proxies like this one
 * (zone aware routing compares its localities with an upstream's). */
static void parse_cluster_manager(pt_cfg_t *r, pt_config_t *cfg)
{
    if (pt_cfg_enter(r, "cluster_manager") <= 0)
        return;
    static const char *const unsupported[] = {"upstream_bind_config", "load_stats_config",
                                              "enable_deferred_cluster_creation", NULL};
    pt_cfg_unsupported(r, unsupported);
    if (pt_cfg_enter(r, "outlier_detection") > 0) {
        /* The file every cluster's ejections and returns are written to (Envoy's outlier
         * event log); the typed event_logger extensions are not implemented. */
        static const char *const od_unsupported[] = {"event_logger", NULL};
        pt_cfg_unsupported(r, od_unsupported);
        const char *path;
        pt_cfg_string(r, "event_log_path", &path, NULL);
        if (path != NULL && path[0])
            cfg->outlier_event_log_path = pt_arena_strdup(&cfg->arena, path);
        pt_cfg_leave(r);
    }
    const char *name;
    pt_cfg_string(r, "local_cluster_name", &name, NULL);
    if (name != NULL && name[0]) {
        cfg->local_cluster_name = pt_arena_strdup(&cfg->arena, name);
        /* Envoy: the local cluster is one of static_resources' clusters. */
        if (cfg->clusters.exists != NULL && !cfg->clusters.exists(cfg->clusters.data, name))
            pt_cfg_error(r, "local_cluster_name", "local cluster \"%s\" must be defined in "
                                                  "static_resources.clusters", name);
    }
    pt_cfg_leave(r);
}

static void parse_admin(pt_cfg_t *r, pt_config_t *cfg)
{
    if (pt_cfg_enter(r, "admin") <= 0)
        return;
    pt_cfg_unsupported(r, admin_unsupported);
    if (pt_config_read_address(r, "address", &cfg->admin_address) > 0)
        cfg->has_admin = 1;
    pt_access_log_parse_list(r, "access_log", &cfg->arena, &cfg->admin_logs, &cfg->nadmin_logs);
    pt_access_log_t *legacy = pt_access_log_parse_path(r, "access_log_path", &cfg->arena);
    if (legacy != NULL) {
        pt_access_log_t **all =
            pt_arena_alloc(&cfg->arena, (cfg->nadmin_logs + 1) * sizeof(*all));
        if (all != NULL) {
            for (unsigned i = 0; i < cfg->nadmin_logs; i++)
                all[i] = cfg->admin_logs[i];
            all[cfg->nadmin_logs++] = legacy;
            cfg->admin_logs = all;
        }
    }
    /* profile_path: where Envoy's /cpuprofiler writes; petrel's admin has no profiler, so the
     * path is never used (accepted, as Istio's bootstraps set it). */
    const char *s;
    pt_cfg_string(r, "profile_path", &s, NULL);
    /* ignore_global_conn_limit: petrel never counts admin connections against the global
     * connection limit, which is what true asks; false (Envoy's default) is accepted as
     * petrel's fixed behaviour (docs/configuration.md). */
    int b;
    pt_cfg_bool(r, "ignore_global_conn_limit", &b, 0);
    pt_cfg_leave(r);
}

/* ---- stats_config, stats_flush_interval, stats_flush_on_admin -------------------------- */

/* stats_config.histogram_bucket_settings: the Prometheus buckets of the histograms whose
 * names the first matching rule's StringMatcher matches. The rules live in an arena of
 * their own, handed to the stats registry when the snapshot is prepared (config_finish):
 * histograms made from then on (a CDS cluster's, later) take their buckets by these rules,
 * and keep a copy of them. */
typedef struct hist_rule {
    pt_string_matcher_t match;
    double *bounds;
    uint32_t n;
} hist_rule_t;

struct pt_hist_settings {
    pt_arena_t arena;
    hist_rule_t *rules;
    unsigned n;
};

static void hist_settings_free(void *arg)
{
    pt_hist_settings_t *hs = arg;
    if (hs == NULL)
        return;
    pt_arena_dispose(&hs->arena);
    free(hs);
}

static const double *hist_settings_bounds(const void *arg, const char *name, uint32_t *n)
{
    const pt_hist_settings_t *hs = arg;
    for (unsigned i = 0; i < hs->n; i++) {
        if (pt_string_matcher_match(&hs->rules[i].match, name, strlen(name))) {
            *n = hs->rules[i].n;
            return hs->rules[i].bounds;
        }
    }
    return NULL;
}

static void parse_stats_config(pt_cfg_t *r, pt_config_t *cfg)
{
    uint64_t ms;
    int has_interval = pt_cfg_duration_ms(r, "stats_flush_interval", &ms, 5000) > 0;
    cfg->stats_flush_interval_ms = ms;
    /* Envoy's bounds: at least 1 ms, under 300 s. */
    if (has_interval && (ms < 1 || ms >= 300000))
        pt_cfg_error(r, "stats_flush_interval", "must be at least 1ms and less than 300s");
    pt_cfg_bool(r, "stats_flush_on_admin", &cfg->stats_flush_on_admin, 0);
    if (has_interval && cfg->stats_flush_on_admin)
        pt_cfg_error(r, "stats_flush_on_admin",
                     "cannot be set together with stats_flush_interval (Envoy's oneof)");
    if (pt_cfg_enter(r, "stats_config") <= 0)
        return;
    /* Validated here with their paths; in force since start-up (proxy/stats_config.h). */
    pt_stats_config_parse(r, NULL);
    int present;
    size_t n = pt_cfg_array(r, "histogram_bucket_settings", &present);
    if (present && n > 0) {
        pt_hist_settings_t *hs = calloc(1, sizeof(*hs));
        if (hs != NULL) {
            pt_arena_init_small(&hs->arena);
            hs->rules = pt_arena_alloc(&hs->arena, n * sizeof(hist_rule_t));
        }
        if (hs == NULL || hs->rules == NULL) {
            pt_cfg_error(r, NULL, "out of memory");
            hist_settings_free(hs);
            hs = NULL;
        }
        for (size_t i = 0; hs != NULL && i < n; i++) {
            if (pt_cfg_enter_index(r, i) <= 0)
                continue;
            hist_rule_t *rule = &hs->rules[hs->n];
            int ok = 1;
            if (pt_cfg_enter(r, "match") > 0) {
                ok = pt_string_matcher_parse(r, &hs->arena, &rule->match) == 0;
                pt_cfg_leave(r);
            } else {
                pt_cfg_error(r, "match", "is required");
                ok = 0;
            }
            int bpresent;
            size_t nb = pt_cfg_array(r, "buckets", &bpresent);
            if (!bpresent || nb == 0) {
                if (bpresent)
                    pt_cfg_leave_array(r);
                pt_cfg_error(r, "buckets", "must list at least one bucket");
                ok = 0;
            } else {
                rule->bounds = pt_arena_alloc(&hs->arena, nb * sizeof(double));
                double prev = 0; /* the last valid bucket */
                for (size_t j = 0; rule->bounds != NULL && j < nb; j++) {
                    json_t *jv = pt_cfg_index_value(r, j);
                    double d = json_is_number(jv) ? json_number_value(jv) : NAN;
                    const char *why = NULL;
                    if (json_is_string(jv)) { /* proto3 JSON allows numbers as strings */
                        char *end;
                        d = strtod(json_string_value(jv), &end);
                        if (*end != '\0' || end == json_string_value(jv))
                            d = NAN;
                    }
                    if (!(d == d) || isinf(d))
                        why = "is not a number";
                    else if (d <= 0)
                        why = "must be greater than 0";
                    else if (j > 0 && !(d > prev))
                        why = "must be greater than the bucket before it (buckets are "
                              "increasing, without repeats)";
                    if (why != NULL) {
                        size_t saved = strlen(pt_cfg_path(r));
                        pt_cfg_push_index(r, j);
                        pt_cfg_error(r, NULL, "%s", why);
                        pt_cfg_pop_path(r, saved);
                        ok = 0;
                        continue;
                    }
                    rule->bounds[j] = prev = d;
                }
                rule->n = (uint32_t)nb;
                pt_cfg_leave_array(r);
            }
            /* circllhist's initial bins: petrel's layout is fixed, so it has no use. */
            uint64_t bins;
            pt_cfg_uint(r, "bins", &bins, 100, 1, UINT32_MAX);
            pt_cfg_leave(r);
            if (ok)
                hs->n++;
        }
        if (hs != NULL) {
            hist_settings_free(cfg->hist_settings);
            cfg->hist_settings = hs;
        }
    }
    if (present)
        pt_cfg_leave_array(r);
    pt_cfg_leave(r);
}

static void parse_filter(pt_cfg_t *r, pt_config_t *cfg, pt_network_filter_t *f, int last)
{
    pt_cfg_unsupported(r, filter_unsupported);
    const char *name;
    if (pt_cfg_string(r, "name", &name, NULL) == 0)
        pt_cfg_error(r, "name", "is required");
    f->name = pt_arena_strdup(&cfg->arena, name ? name : "");
    int rc;
    const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
    if (rc == 0) {
        /* config_discovery (ECDS) instead: refused as not supported, one error is enough */
        if (!pt_cfg_has(r, "config_discovery"))
            pt_cfg_error(r, "typed_config", "is required");
        return;
    }
    if (type == NULL)
        return;
    f->ops = pt_network_filter_find(type);
    if (f->ops == NULL) {
        pt_cfg_error(r, "@type", "\"%s\" is not a supported network filter", type);
        pt_cfg_skip_rest(r); /* its fields mean nothing to us: one error is enough */
        pt_cfg_leave(r);
        return;
    }
    f->config = f->ops->parse(r, cfg);
    pt_cfg_leave(r);
    if (f->ops->terminal && !last)
        pt_cfg_error(r, NULL, "%s is a terminal filter and must be the last in the chain",
                     f->ops->name);
    if (!f->ops->terminal && last)
        pt_cfg_error(r, NULL, "the last filter must be a terminal filter (tcp_proxy or "
                              "http_connection_manager), not %s",
                     f->ops->name);
}

/* A list of CidrRange at `field`. */
static const pt_cidr_t *parse_cidrs(pt_cfg_t *r, pt_arena_t *a, const char *field, unsigned *n)
{
    int present;
    size_t count = pt_cfg_array(r, field, &present);
    *n = 0;
    if (!present)
        return NULL;
    pt_cidr_t *out = pt_arena_alloc(a, (count ? count : 1) * sizeof(*out));
    for (size_t i = 0; i < count; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        const char *ip;
        uint64_t len;
        pt_cfg_string(r, "address_prefix", &ip, NULL);
        int has_len = pt_cfg_uint(r, "prefix_len", &len, 0, 0, 128);
        if (ip == NULL) {
            pt_cfg_error(r, "address_prefix", "is required");
        } else {
            pt_addr_t probe;
            int v4 = pt_addr_parse(&probe, ip, 0) == 0 && probe.sa.sa_family == AF_INET;
            if (has_len == 0)
                len = v4 ? 32 : 128;
            if (pt_cidr_parse(&out[*n], ip, (unsigned)len) != 0)
                pt_cfg_error(r, NULL, "\"%s/%u\" is not a valid CIDR range", ip, (unsigned)len);
            else
                (*n)++;
        }
        pt_cfg_leave(r);
    }
    pt_cfg_leave_array(r);
    return out;
}

/* A list of strings at `field`, lowercased when asked. */
static const char *const *parse_strings(pt_cfg_t *r, pt_arena_t *a, const char *field,
                                        int lower, unsigned *n)
{
    int present;
    size_t count = pt_cfg_array(r, field, &present);
    *n = 0;
    if (!present)
        return NULL;
    const char **out = pt_arena_alloc(a, (count ? count : 1) * sizeof(*out));
    for (size_t i = 0; i < count; i++) {
        json_t *v = pt_cfg_index_value(r, i);
        if (!json_is_string(v) || json_string_length(v) == 0) {
            size_t saved = strlen(pt_cfg_path(r));
            pt_cfg_push_index(r, i);
            pt_cfg_error(r, NULL, "is not a non-empty string");
            pt_cfg_pop_path(r, saved);
            continue;
        }
        char *c = pt_arena_strdup(a, json_string_value(v));
        for (char *p = c; lower && *p; p++)
            *p = (char)tolower((unsigned char)*p);
        out[(*n)++] = c;
    }
    pt_cfg_leave_array(r);
    return out;
}

static void parse_chain_match(pt_cfg_t *r, pt_arena_t *a, pt_filter_chain_match_t *m)
{
    static const char *const unsupported[] = {"address_suffix", "suffix_len", NULL};
    pt_cfg_unsupported(r, unsupported);
    uint64_t port;
    pt_cfg_uint(r, "destination_port", &port, 0, 1, 65535);
    m->destination_port = (uint32_t)port;
    m->prefix_ranges = parse_cidrs(r, a, "prefix_ranges", &m->nprefix_ranges);
    m->server_names = parse_strings(r, a, "server_names", 1, &m->nserver_names);
    for (unsigned i = 0; i < m->nserver_names; i++) {
        const char *sn = m->server_names[i];
        if (strchr(sn + 1, '*') != NULL || (sn[0] == '*' && sn[1] != '.'))
            pt_cfg_error(r, "server_names", "\"%s\": a wildcard is allowed only as a "
                                            "leading \"*.\"", sn);
    }
    const char *tp;
    pt_cfg_string(r, "transport_protocol", &tp, NULL);
    if (tp != NULL && strcmp(tp, "tls") != 0 && strcmp(tp, "raw_buffer") != 0)
        pt_cfg_error(r, "transport_protocol", "\"%s\" is not \"tls\" or \"raw_buffer\"", tp);
    m->transport_protocol = pt_arena_strdup(a, tp);
    m->application_protocols =
        parse_strings(r, a, "application_protocols", 0, &m->napplication_protocols);
    static const char *const source_types[] = {"ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL", NULL};
    int st;
    pt_cfg_enum(r, "source_type", source_types, NULL, &st, 0);
    m->source_type = (pt_source_type_t)st;
    m->source_prefix_ranges = parse_cidrs(r, a, "source_prefix_ranges", &m->nsource_prefix_ranges);
    m->direct_source_prefix_ranges =
        parse_cidrs(r, a, "direct_source_prefix_ranges", &m->ndirect_source_prefix_ranges);
    int present;
    size_t n = pt_cfg_array(r, "source_ports", &present);
    if (present) {
        uint32_t *ports = pt_arena_alloc(a, (n ? n : 1) * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++) {
            json_t *v = pt_cfg_index_value(r, i);
            json_int_t pv = json_is_integer(v) ? json_integer_value(v) : -1;
            if (pv < 1 || pv > 65535) {
                size_t saved = strlen(pt_cfg_path(r));
                pt_cfg_push_index(r, i);
                pt_cfg_error(r, NULL, "is not a port (1 to 65535)");
                pt_cfg_pop_path(r, saved);
                continue;
            }
            ports[m->nsource_ports++] = (uint32_t)pv;
        }
        m->source_ports = ports;
        pt_cfg_leave_array(r);
    }
}

static void decref_json(void *arg)
{
    json_decref(arg);
}

/* A reference to the JSON of the object the reader is in, released with the snapshot. */
static json_t *keep_source(pt_cfg_t *r, pt_config_t *cfg)
{
    json_t *j = r->frames[r->depth - 1].node;
    if (j == NULL || pt_arena_defer(&cfg->arena, decref_json, j) != 0)
        return NULL;
    return json_incref(j);
}

/* A TLS chain whose terminal filter speaks only some application protocols offers only
 * those of its ALPN list (in the list's order); the others are logged once, here. */
static void restrict_alpn(pt_filter_chain_t *fc, pt_arena_t *a, const char *where)
{
    if (fc->tls == NULL || fc->tls->alpn_len == 0 || fc->nfilters == 0)
        return;
    const pt_network_filter_t *last = &fc->filters[fc->nfilters - 1];
    const char *spoken =
        last->ops->alpn_for != NULL ? last->ops->alpn_for(last->config) : last->ops->alpn;
    if (spoken == NULL)
        return;
    unsigned char *kept = pt_arena_alloc(a, fc->tls->alpn_len), *k = kept;
    if (kept == NULL)
        return; /* the list stays: out of memory is reported by what fails next */
    for (size_t i = 0; i < fc->tls->alpn_len; i += 1u + fc->tls->alpn[i]) {
        const unsigned char *name = &fc->tls->alpn[i];
        int known = 0;
        for (const unsigned char *s = (const unsigned char *)spoken; *s && !known; s += 1u + *s)
            known = *s == name[0] && memcmp(s + 1, name + 1, name[0]) == 0;
        if (known) {
            memcpy(k, name, 1u + name[0]);
            k += 1u + name[0];
        } else {
            pt_info("%s: ALPN protocol \"%.*s\" is not offered: %s does not speak it",
                    where, (int)name[0], (const char *)name + 1,
                    fc->filters[fc->nfilters - 1].ops->name);
        }
    }
    fc->tls->alpn = kept;
    fc->tls->alpn_len = (size_t)(k - kept);
}

static void parse_filter_chain(pt_cfg_t *r, pt_config_t *cfg, pt_filter_chain_t *fc)
{
    fc->source = keep_source(r, cfg);
    pt_cfg_unsupported(r, chain_unsupported);
    const char *name;
    pt_cfg_string(r, "name", &name, NULL);
    fc->name = pt_arena_strdup(&cfg->arena, name);
    fc->metadata = pt_metadata_parse(r, "metadata", &cfg->arena);
    if (pt_cfg_enter(r, "filter_chain_match") > 0) {
        parse_chain_match(r, &cfg->arena, &fc->match);
        pt_cfg_leave(r);
    }
    pt_tls_transport_socket_parse(r, &cfg->arena, "transport_socket", 1, &fc->tls);
    pt_cfg_duration_ms(r, "transport_socket_connect_timeout", &fc->handshake_timeout_ms, 0);
    int present;
    size_t n = pt_cfg_array(r, "filters", &present);
    if (present && n == 0)
        pt_cfg_error(r, NULL, "must not be empty"); /* inside the list: its own path */
    else if (!present && !pt_cfg_has(r, "filters")) /* a wrong type was reported already */
        pt_cfg_error(r, "filters", "is required");
    fc->filters = pt_arena_alloc(&cfg->arena, (n ? n : 1) * sizeof(pt_network_filter_t));
    const pt_rds_need_t *rds_before = cfg->rds_needs;
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) > 0) {
            parse_filter(r, cfg, &fc->filters[fc->nfilters], i + 1 == n);
            fc->nfilters++;
            pt_cfg_leave(r);
        }
    }
    if (present)
        pt_cfg_leave_array(r);
    /* Only its last (terminal) filter can be a connection manager: one rds at most. */
    if (cfg->rds_needs != rds_before)
        fc->rds_name = cfg->rds_needs->name;
    if (pt_cfg_ok(r))
        restrict_alpn(fc, &cfg->arena, pt_cfg_path(r));
}

static void parse_listener_filter(pt_cfg_t *r, pt_listener_config_t *l);

static void parse_listener(pt_cfg_t *r, pt_config_t *cfg, pt_listener_config_t *l)
{
    l->source = keep_source(r, cfg);
    pt_cfg_unsupported(r, listener_unsupported);
    l->metadata = pt_metadata_parse(r, "metadata", &cfg->arena);
    const char *name;
    pt_cfg_string(r, "name", &name, NULL);
    if (pt_config_read_address(r, "address", &l->address) == 0)
        pt_cfg_error(r, "address", "is required");
    if (name == NULL || !name[0]) {
        /* Optional in Envoy (which makes up a UUID): petrel names it by its address, as
         * its stats are ("0.0.0.0_443"). */
        char buf[PT_ADDR_STRLEN];
        pt_addr_stat_name(&l->address, buf, sizeof(buf));
        name = buf;
        l->name = pt_arena_strdup(&cfg->arena, name);
    } else {
        l->name = pt_arena_strdup(&cfg->arena, name);
    }
    const char *prefix;
    pt_cfg_string(r, "stat_prefix", &prefix, NULL);
    if (prefix != NULL && prefix[0]) {
        l->stat_name = pt_arena_strdup(&cfg->arena, prefix);
    } else {
        char buf[PT_ADDR_STRLEN];
        pt_addr_stat_name(&l->address, buf, sizeof(buf));
        l->stat_name = pt_arena_strdup(&cfg->arena, buf);
    }
    uint64_t limit;
    pt_cfg_uint(r, "per_connection_buffer_limit_bytes", &limit, 1024 * 1024, 1, UINT32_MAX);
    l->buffer_limit = (uint32_t)limit;
    int present;
    size_t n = pt_cfg_array(r, "filter_chains", &present);
    if (present && n == 0)
        pt_cfg_error(r, NULL, "must not be empty");
    else if (!present && !pt_cfg_has(r, "filter_chains") && !pt_cfg_has(r, "default_filter_chain"))
        pt_cfg_error(r, "filter_chains", "is required");
    l->chains = pt_arena_alloc(&cfg->arena, (n ? n : 1) * sizeof(pt_filter_chain_t));
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) > 0) {
            parse_filter_chain(r, cfg, &l->chains[l->nchains++]);
            pt_cfg_leave(r);
        }
    }
    if (present)
        pt_cfg_leave_array(r);
    if (pt_cfg_enter(r, "default_filter_chain") > 0) {
        l->default_chain = pt_arena_alloc(&cfg->arena, sizeof(pt_filter_chain_t));
        parse_filter_chain(r, cfg, l->default_chain);
        pt_cfg_leave(r);
    }
    /* Two chains with the same match could never both be chosen: Envoy rejects that. */
    for (unsigned i = 0; i < l->nchains; i++)
        for (unsigned j = i + 1; j < l->nchains; j++)
            if (pt_chain_match_equal(&l->chains[i].match, &l->chains[j].match))
                pt_cfg_error(r, "filter_chains", "filter chains %u and %u have the same "
                                                 "filter_chain_match",
                             i, j);

    l->listener_filters_timeout_ms = 15000;
    pt_cfg_duration_ms(r, "listener_filters_timeout", &l->listener_filters_timeout_ms, 15000);
    pt_cfg_bool(r, "continue_on_listener_filters_timeout",
                &l->continue_on_listener_filters_timeout, 0);
    n = pt_cfg_array(r, "listener_filters", &present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        parse_listener_filter(r, l);
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    pt_cfg_bool(r, "use_original_dst", &l->use_original_dst, 0);
    pt_cfg_bool(r, "ignore_global_conn_limit", &l->ignore_global_conn_limit, 0);
    pt_cfg_bool(r, "bypass_overload_manager", &l->bypass_overload_manager, 0);
    uint64_t per_event;
    pt_cfg_uint(r, "max_connections_to_accept_per_socket_event", &per_event, 0, 1, UINT32_MAX);
    l->max_accept_per_event = (uint32_t)per_event;
    pt_cfg_bool(r, "bind_to_port", &l->bind_to_port, 1);
    static const char *const directions[] = {"UNSPECIFIED", "INBOUND", "OUTBOUND", NULL};
    int dir;
    pt_cfg_enum(r, "traffic_direction", directions, NULL, &dir, 0);
    l->traffic_direction = (pt_traffic_direction_t)dir;
    /* A listener that is never bound is only reached by a hand-off from one that is: its own
     * use_original_dst could never act (Envoy hands a connection over once). */
    if (!l->bind_to_port && l->use_original_dst)
        pt_cfg_error(r, "use_original_dst", "has no effect on a listener with bind_to_port "
                                            "false (connections handed to it are not handed "
                                            "on)");
    /* As Envoy does, chains that match on what the ClientHello says turn the inspector on. */
    for (unsigned i = 0; i < l->nchains; i++) {
        const pt_filter_chain_match_t *m = &l->chains[i].match;
        if (m->nserver_names > 0 || m->transport_protocol != NULL ||
            m->napplication_protocols > 0)
            l->tls_inspector = 1;
    }
}

#define LF_TYPE "type.googleapis.com/envoy.extensions.filters.listener."

/* One of listener_filters (reader in it): the TLS inspector, the HTTP inspector and
 * original_dst, by typed_config (or, as Envoy still takes it, by name alone). */
static void parse_listener_filter(pt_cfg_t *r, pt_listener_config_t *l)
{
    static const char *const lf_unsupported[] = {"filter_disabled", "config_discovery", NULL};
    pt_cfg_unsupported(r, lf_unsupported);
    static const struct {
        const char *name, *type;
    } known[] = {
        {"envoy.filters.listener.tls_inspector", LF_TYPE "tls_inspector.v3.TlsInspector"},
        {"envoy.filters.listener.http_inspector", LF_TYPE "http_inspector.v3.HttpInspector"},
        {"envoy.filters.listener.original_dst", LF_TYPE "original_dst.v3.OriginalDst"},
    };
    const char *lname;
    pt_cfg_string(r, "name", &lname, NULL);
    int rc, which = -1;
    const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
    for (int k = 0; k < 3 && which < 0; k++) {
        if (rc == 0 && lname != NULL && strcmp(lname, known[k].name) == 0)
            which = k;
        else if (type != NULL && strcmp(type, known[k].type) == 0)
            which = k;
    }
    if (rc == 0 && which < 0) {
        if (!pt_cfg_has(r, "config_discovery")) /* ECDS: refused as not supported */
            pt_cfg_error(r, "typed_config", "is required");
        return;
    }
    if (type == NULL && rc != 0)
        return; /* a malformed typed_config, reported */
    if (which < 0) {
        pt_cfg_error(r, "@type", "\"%s\" is not a supported listener filter (tls_inspector, "
                                 "http_inspector, original_dst)", type);
        pt_cfg_skip_rest(r);
        pt_cfg_leave(r);
        return;
    }
    switch (which) {
    case 0:
        if (type != NULL) {
            static const char *const ti_unsupported[] = {"enable_ja3_fingerprinting",
                                                         "enable_ja4_fingerprinting", NULL};
            pt_cfg_unsupported(r, ti_unsupported);
            uint64_t sz;
            pt_cfg_uint(r, "initial_read_buffer_size", &sz, 0, 0, 65536);
        }
        l->tls_inspector = 1;
        break;
    case 1:
        if (type != NULL) { /* Envoy's newer field; petrel peeks up to 64 KiB anyway */
            uint64_t sz;
            pt_cfg_uint(r, "initial_read_buffer_size", &sz, 0, 1, 65536);
        }
        l->http_inspector = 1;
        break;
    default:
        l->original_dst = 1; /* OriginalDst neither */
        break;
    }
    if (type != NULL)
        pt_cfg_leave(r);
}

int pt_config_cluster_exists(const pt_config_t *c, const char *name)
{
    return name != NULL && c->clusters.exists != NULL && c->clusters.exists(c->clusters.data, name);
}

/* The reader is in a listener: parses it as the next listener of cfg, checking its name and
 * address against the others. */
static void add_listener(pt_cfg_t *r, pt_config_t *cfg)
{
    pt_listener_config_t *l = &cfg->listeners[cfg->nlisteners];
    parse_listener(r, cfg, l);
    for (unsigned j = 0; j < cfg->nlisteners; j++) {
        if (l->name[0] && strcmp(cfg->listeners[j].name, l->name) == 0)
            pt_cfg_error(r, "name", "duplicate listener name \"%s\"", l->name);
        else if (pt_addr_equal(&cfg->listeners[j].address, &l->address) &&
                 l->address.sa.sa_family != 0)
            pt_cfg_error(r, "address", "listener \"%s\" already uses this address",
                         cfg->listeners[j].name);
    }
    cfg->nlisteners++;
}

/* static_resources.listeners, in an array with room for `more` after them (LDS). */
static void parse_listeners(pt_cfg_t *r, pt_config_t *cfg, size_t more)
{
    int present;
    size_t n = pt_cfg_array(r, "listeners", &present);
    cfg->listeners = pt_arena_alloc(&cfg->arena, (n + more ? n + more : 1) *
                                                     sizeof(pt_listener_config_t));
    for (size_t i = 0; cfg->listeners != NULL && i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        add_listener(r, cfg);
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
}

/* Loads certificates and builds SSL contexts: reading files can fail, so this is part of
 * validation and reports with the field's path. */
static void build_tls(pt_config_t *cfg, pt_cfg_t *r)
{
    char where[128];
    for (unsigned i = 0; i < cfg->nlisteners; i++) {
        pt_listener_config_t *l = &cfg->listeners[i];
        unsigned total = l->nchains + (l->default_chain != NULL);
        for (unsigned j = 0; j < total; j++) {
            pt_filter_chain_t *fc = j < l->nchains ? &l->chains[j] : l->default_chain;
            if (fc->tls == NULL)
                continue;
            if (j < l->nchains)
                snprintf(where, sizeof(where),
                         "static_resources.listeners[%u].filter_chains[%u].transport_socket", i, j);
            else
                snprintf(where, sizeof(where),
                         "static_resources.listeners[%u].default_filter_chain.transport_socket", i);
            fc->tls_ctx = pt_tls_context_build(r, &cfg->arena, fc->tls, "listener", l->stat_name,
                                           where);
        }
    }
}

static int prepare(pt_config_t *cfg)
{
    for (unsigned i = 0; i < cfg->nlisteners; i++) {
        pt_listener_config_t *l = &cfg->listeners[i];
        const char *t = "envoy_listener_address";
        l->stats.downstream_cx_total = pt_stats_counter("listener", t, l->stat_name, "downstream_cx_total");
        l->stats.downstream_cx_active = pt_stats_gauge("listener", t, l->stat_name, "downstream_cx_active");
        l->stats.downstream_cx_destroy = pt_stats_counter("listener", t, l->stat_name, "downstream_cx_destroy");
        l->stats.no_filter_chain_match = pt_stats_counter("listener", t, l->stat_name, "no_filter_chain_match");
        l->stats.downstream_cx_overflow = pt_stats_counter("listener", t, l->stat_name, "downstream_cx_overflow");
        l->stats.downstream_global_cx_overflow = pt_stats_counter("listener", t, l->stat_name, "downstream_global_cx_overflow");
        l->stats.downstream_cx_transport_socket_connect_timeout = pt_stats_counter(
            "listener", t, l->stat_name, "downstream_cx_transport_socket_connect_timeout");
        l->listener_filters_timeout = pt_stats_counter("listener", t, l->stat_name, "downstream_pre_cx_timeout");
        l->stats.downstream_cx_length_ms = pt_stats_histogram("listener", t, l->stat_name, "downstream_cx_length_ms");
        l->tls_inspector_tls_found = pt_stats_counter("tls_inspector", NULL, NULL, "tls_found");
        l->tls_inspector_tls_not_found = pt_stats_counter("tls_inspector", NULL, NULL, "tls_not_found");
        l->tls_inspector_client_hello_too_large = pt_stats_counter("tls_inspector", NULL, NULL, "client_hello_too_large");
        l->tls_inspector_sni_found = pt_stats_counter("tls_inspector", NULL, NULL, "sni_found");
        l->tls_inspector_alpn_found = pt_stats_counter("tls_inspector", NULL, NULL, "alpn_found");
        if (l->http_inspector) {
            l->http_inspector_http10_found = pt_stats_counter("http_inspector", NULL, NULL, "http10_found");
            l->http_inspector_http11_found = pt_stats_counter("http_inspector", NULL, NULL, "http11_found");
            l->http_inspector_http2_found = pt_stats_counter("http_inspector", NULL, NULL, "http2_found");
            l->http_inspector_http_not_found = pt_stats_counter("http_inspector", NULL, NULL, "http_not_found");
            l->http_inspector_read_error = pt_stats_counter("http_inspector", NULL, NULL, "read_error");
        }
        unsigned total = l->nchains + (l->default_chain != NULL);
        for (unsigned j = 0; j < total; j++) {
            pt_filter_chain_t *fc = j < l->nchains ? &l->chains[j] : l->default_chain;
            for (unsigned k = 0; k < fc->nfilters; k++) {
                pt_network_filter_t *f = &fc->filters[k];
                if (f->ops->prepare != NULL && f->ops->prepare(f->config, cfg) != 0)
                    return -1;
            }
        }
    }
    return 0;
}

/* A new snapshot checking its cluster references with `clusters`; NULL when out of memory. */
static pt_config_t *config_new(json_t *source, const pt_cluster_lookup_t *clusters, pt_cfg_t *r)
{
    pt_config_t *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    atomic_init(&cfg->refs, 1);
    cfg->source = json_incref(source);
    cfg->version = atomic_fetch_add(&next_version, 1);
    if (clusters != NULL)
        cfg->clusters = *clusters;
    return cfg;
}

/* The end of a build: TLS contexts and stats for a snapshot that validated; NULL (and cfg
 * released) otherwise. */
static pt_config_t *config_finish(pt_config_t *cfg, pt_cfg_t *r, const char *what)
{
    if (pt_cfg_ok(r))
        build_tls(cfg, r);
    /* Histograms made while this snapshot is prepared (and later) take these buckets; the
     * registry owns the rules from here. */
    if (pt_cfg_ok(r)) {
        pt_hist_settings_t *hs = cfg->hist_settings;
        cfg->hist_settings = NULL;
        pt_stats_set_histogram_bounds(hs != NULL ? hist_settings_bounds : NULL, hs,
                                      hist_settings_free);
    }
    int ok = pt_cfg_ok(r) && prepare(cfg) == 0 && pt_config_index_listeners(cfg) == 0;
    cfg->clusters = (pt_cluster_lookup_t){0};
    if (!ok) {
        if (pt_cfg_ok(r))
            pt_cfg_error(r, NULL, "could not prepare the %s", what);
        pt_config_unref(cfg);
        return NULL;
    }
    return cfg;
}

pt_config_t *pt_config_build(json_t *root, const pt_cluster_lookup_t *clusters, pt_cfg_t *r)
{
    pt_config_t *cfg = config_new(root, clusters, r);
    if (cfg == NULL)
        return NULL;

    pt_cfg_unsupported(r, bootstrap_unsupported);
    parse_node(r, cfg);
    app_log_pattern(r, root);
    parse_cluster_manager(r, cfg);
    parse_admin(r, cfg);
    parse_stats_config(r, cfg);
    pt_stats_sinks_parse(r, NULL, NULL); /* validated; made at start-up (proxy/stats_sink.h) */
    pt_dns_bootstrap_parse(r, &cfg->arena, &cfg->dns_resolver);
    parse_dynamic_resources(r, cfg);
    pt_tracing_bootstrap_parse(r, cfg); /* before the listeners: their fallback provider */
    if (pt_cfg_enter(r, "static_resources") > 0) {
        pt_cfg_unsupported(r, static_unsupported);
        (void)pt_cfg_get(r, "clusters"); /* the cluster manager's */
        parse_listeners(r, cfg, 0);
        pt_cfg_leave(r);
    }
    /* After the listeners: the runtime names them. */
    pt_overload_parse(r, cfg);
    pt_cfg_finish(r);
    return config_finish(cfg, r, "configuration");
}

const pt_listener_config_t *pt_config_find_listener(const pt_config_t *c, const char *name)
{
    for (unsigned i = 0; c != NULL && i < c->nlisteners; i++)
        if (strcmp(c->listeners[i].name, name) == 0)
            return &c->listeners[i];
    return NULL;
}

pt_config_t *pt_config_build_lds(json_t *bootstrap, const pt_cluster_lookup_t *clusters,
                                 const pt_discovery_response_t *lds, const pt_config_t *prev,
                                 pt_cfg_t *r)
{
    pt_config_t *cfg = config_new(bootstrap, clusters, r);
    if (cfg == NULL)
        return NULL;
    pt_cfg_t boot;
    pt_cfg_init(&boot, bootstrap);
    pt_cfg_set_message(&boot, "envoy.config.bootstrap.v3.Bootstrap");
    pt_cfg_unsupported(&boot, bootstrap_unsupported);
    parse_node(&boot, cfg);
    parse_cluster_manager(&boot, cfg);
    parse_admin(&boot, cfg);
    parse_stats_config(&boot, cfg);
    pt_stats_sinks_parse(&boot, NULL, NULL);
    pt_dns_bootstrap_parse(&boot, &cfg->arena, &cfg->dns_resolver);
    parse_dynamic_resources(&boot, cfg);
    pt_tracing_bootstrap_parse(&boot, cfg);
    if (pt_cfg_enter(&boot, "static_resources") > 0) {
        pt_cfg_unsupported(&boot, static_unsupported);
        (void)pt_cfg_get(&boot, "clusters"); /* the cluster manager's */
        parse_listeners(&boot, cfg, lds->nresources);
        pt_cfg_leave(&boot);
    }
    if (cfg->listeners == NULL) /* no static_resources: LDS's listeners are all there is */
        cfg->listeners = pt_arena_alloc(&cfg->arena, (lds->nresources ? lds->nresources : 1) *
                                                         sizeof(pt_listener_config_t));
    if (cfg->listeners == NULL)
        pt_cfg_error_at(r, "out of memory");
    size_t nstatic = cfg->nlisteners;
    for (size_t i = 0; cfg->listeners != NULL && i < lds->nresources; i++) {
        const pt_discovery_resource_t *res = &lds->resources[i];
        pt_cfg_t lr;
        pt_discovery_resource_reader(res, &lr);
        for (size_t j = 0; j < nstatic; j++) {
            if (res->name != NULL && strcmp(cfg->listeners[j].name, res->name) == 0) {
                pt_cfg_error(&lr, "name", "\"%s\" is a static listener of the bootstrap: LDS "
                                          "cannot change it", res->name);
                pt_cfg_skip_rest(&lr);
            }
        }
        if (pt_cfg_ok(&lr)) {
            pt_listener_config_t *l = &cfg->listeners[cfg->nlisteners];
            add_listener(&lr, cfg);
            l->dynamic = 1;
            /* An unchanged listener keeps its version and time; a changed one gets these. */
            const pt_listener_config_t *old = pt_config_find_listener(prev, l->name);
            if (old != NULL && old->dynamic && json_equal(old->source, l->source)) {
                l->version_info = pt_arena_strdup(&cfg->arena, old->version_info);
                l->last_updated = old->last_updated;
            } else {
                struct timeval tv;
                gettimeofday(&tv, NULL);
                l->version_info = pt_arena_strdup(&cfg->arena, lds->version_info);
                l->last_updated = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
            }
        }
        pt_cfg_finish(&lr);
        for (size_t j = 0; j < lr.nerrors; j++)
            pt_cfg_error_at(r, "%s", lr.errors[j]);
        pt_cfg_dispose(&lr);
    }
    pt_overload_parse(&boot, cfg);
    pt_cfg_finish(&boot);
    /* The bootstrap validated at start: its errors here can only be out of memory. */
    for (size_t i = 0; i < boot.nerrors; i++)
        pt_cfg_error_at(r, "bootstrap: %s", boot.errors[i]);
    pt_cfg_dispose(&boot);
    return config_finish(cfg, r, "listeners");
}

pt_config_t *pt_config_ref(pt_config_t *c)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void pt_config_unref(pt_config_t *c)
{
    if (c == NULL)
        return;
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    hist_settings_free(c->hist_settings);
    pt_arena_dispose(&c->arena);
    json_decref(c->source);
    free(c);
}
