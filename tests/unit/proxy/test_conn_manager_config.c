/* Unit tests for the HTTP connection manager's codec config (proxy/conn_manager.c), through
 * the whole config build so every error carries the path a user sees: codec_type (AUTO,
 * HTTP1, HTTP2; HTTP3 not supported), http2_protocol_options with Envoy's defaults and
 * ranges, the fields petrel does not implement, and the ALPN a TLS chain offers following
 * codec_type. */
#include "proxy/config.h"
#include "proxy/conn_manager.h"
#include "proxy/stats.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#define ROUTER_TYPE "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define HCM_TYPE                                                                                   \
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."             \
    "HttpConnectionManager"
#define P  "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
#define H2 P ".http2_protocol_options"

/* A bootstrap with one HTTP listener: `hcm_fields` are more fields of the connection
 * manager (JSON with single quotes), `chain_fields` more fields of the filter chain. */
static json_t *bootstrap(const char *hcm_fields, const char *chain_fields)
{
    char doc[8192];
    snprintf(doc, sizeof(doc),
             "{'static_resources':{'listeners':[{'name':'l','address':{'socket_address':{"
             "'address':'127.0.0.1','port_value':10000}},'filter_chains':[{%s%s'filters':[{"
             "'name':'hcm','typed_config':{'@type':'" HCM_TYPE "','stat_prefix':'ingress',"
             "'route_config':{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':{"
             "'prefix':'/'},'route':{'cluster':'a'}}]}]},'http_filters':[{'name':'router',"
             "'typed_config':{'@type':'" ROUTER_TYPE "'}}]%s%s}}]}]}],'clusters':[{'name':'a',"
             "'connect_timeout':'1s','load_assignment':{'cluster_name':'a','endpoints':[{"
             "'lb_endpoints':[{'endpoint':{'address':{'socket_address':{'address':'127.0.0.1',"
             "'port_value':1}}}}]}]}}]}}",
             chain_fields, chain_fields[0] ? "," : "", hcm_fields[0] ? "," : "", hcm_fields);
    return J(doc);
}

static pt_cfg_t R;

static pt_boot_t *build(const char *hcm_fields, const char *chain_fields)
{
    json_t *root = bootstrap(hcm_fields, chain_fields);
    pt_cfg_init(&R, root);
    pt_boot_t *c = pt_test_boot(root, &R);
    json_decref(root);
    return c;
}

/* Builds; checks the errors are exactly `want` (NULL-terminated; empty = must build). */
static int check(int line, const char *fields, const char *const *want)
{
    pt_boot_t *c = build(fields, "");
    size_t n = 0;
    while (want[n] != NULL)
        n++;
    int same = (n == 0) == (c != NULL) && R.nerrors == n;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(R.errors[i], want[i]) == 0;
    if (!same) {
        fprintf(stderr, "  line %d: %s: got %zu error(s):\n", line, fields, R.nerrors);
        for (size_t i = 0; i < R.nerrors; i++)
            fprintf(stderr, "    %s\n", R.errors[i]);
        fprintf(stderr, "  want %zu:\n", n);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "    %s\n", want[i]);
    }
    pt_boot_free(c);
    pt_cfg_dispose(&R);
    return same;
}

#define E(...)              ((const char *const[]){__VA_ARGS__, NULL})
#define OK                  ((const char *const[]){NULL})
#define CHECK(fields, want) PT_CHECK(check(__LINE__, fields, want))

/* The connection manager's parsed config in a built bootstrap. */
static const pt_hcm_config_t *hcm_of(const pt_boot_t *c)
{
    return c->config->listeners[0].chains[0].filters[0].config;
}

static void test_codec_type(void)
{
    static const struct {
        const char *fields;
        pt_hcm_codec_type_t want;
    } cases[] = {
        {"", PT_HCM_CODEC_AUTO},
        {"'codec_type':'AUTO'", PT_HCM_CODEC_AUTO},
        {"'codec_type':'HTTP1'", PT_HCM_CODEC_HTTP1},
        {"'codec_type':'HTTP2'", PT_HCM_CODEC_HTTP2},
        {"'codecType':'HTTP2'", PT_HCM_CODEC_HTTP2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_boot_t *c = build(cases[i].fields, "");
        PT_CHECK(c != NULL);
        if (c != NULL)
            PT_CHECK_INT(hcm_of(c)->codec_type, cases[i].want);
        pt_boot_free(c);
        pt_cfg_dispose(&R);
    }
    CHECK("'codec_type':'HTTP3'", E(P ".codec_type: \"HTTP3\" is not supported"));
    CHECK("'codec_type':'SPDY'",
          E(P ".codec_type: \"SPDY\" is not a valid value (expected one of: AUTO, HTTP1, HTTP2)"));
    CHECK("'codec_type':2", E(P ".codec_type: 2 is not an enum name"));
}

static void test_http2_defaults(void)
{
    pt_boot_t *c = build("", "");
    PT_CHECK(c != NULL);
    if (c == NULL)
        return;
    const pt_http2_options_t *o = &hcm_of(c)->settings.http2;
    PT_CHECK_INT(o->max_concurrent_streams, 2147483647);
    PT_CHECK_INT(o->initial_stream_window_size, 268435456);
    PT_CHECK_INT(o->initial_connection_window_size, 268435456);
    PT_CHECK_INT(o->hpack_table_size, 4096);
    PT_CHECK_INT(o->max_outbound_frames, 10000);
    PT_CHECK_INT(o->max_outbound_control_frames, 1000);
    PT_CHECK_INT(o->max_consecutive_inbound_frames_with_empty_payload, 1);
    PT_CHECK_INT(o->max_inbound_priority_frames_per_stream, 100);
    PT_CHECK_INT(o->max_inbound_window_update_frames_per_data_frame_sent, 10);
    PT_CHECK_INT(o->keepalive_interval_ms, 0);
    PT_CHECK_INT(o->override_stream_error, 0);
    PT_CHECK_INT(o->allow_connect, 0);
    PT_CHECK_INT(hcm_of(c)->settings.drain_timeout_ms, 5000);
    pt_boot_free(c);
    pt_cfg_dispose(&R);
    /* Counters exist once a config may speak HTTP/2. */
    PT_CHECK(pt_stats_find("http2.rx_reset") != 0);
    PT_CHECK(pt_stats_find("http2.outbound_control_flood") != 0);
    PT_CHECK(pt_stats_find("http.ingress.downstream_cx_http2_total") != 0);
    PT_CHECK(pt_stats_find("http.ingress.downstream_rq_http2_total") != 0);
    PT_CHECK(pt_stats_find("http.ingress.downstream_cx_http2_active") != 0);
}

static void test_http2_values(void)
{
    pt_boot_t *c = build("'http2_protocol_options':{'max_concurrent_streams':100,"
                         "'initial_stream_window_size':65535,"
                         "'initialConnectionWindowSize':{'value':1048576},"
                         "'hpack_table_size':0,'max_outbound_frames':50,"
                         "'max_outbound_control_frames':20,"
                         "'max_consecutive_inbound_frames_with_empty_payload':0,"
                         "'max_inbound_priority_frames_per_stream':7,"
                         "'max_inbound_window_update_frames_per_data_frame_sent':3,"
                         "'override_stream_error_on_invalid_http_message':true,"
                         "'allow_connect':true,"
                         "'connection_keepalive':{'interval':'10s','timeout':'2.5s',"
                         "'interval_jitter':{'value':5}}},'drain_timeout':'1s'",
                         "");
    PT_CHECK(c != NULL);
    if (c == NULL) {
        for (size_t i = 0; i < R.nerrors; i++)
            fprintf(stderr, "    %s\n", R.errors[i]);
        pt_cfg_dispose(&R);
        return;
    }
    const pt_http2_options_t *o = &hcm_of(c)->settings.http2;
    PT_CHECK_INT(o->max_concurrent_streams, 100);
    PT_CHECK_INT(o->initial_stream_window_size, 65535);
    PT_CHECK_INT(o->initial_connection_window_size, 1048576);
    PT_CHECK_INT(o->hpack_table_size, 0);
    PT_CHECK_INT(o->max_outbound_frames, 50);
    PT_CHECK_INT(o->max_outbound_control_frames, 20);
    PT_CHECK_INT(o->max_consecutive_inbound_frames_with_empty_payload, 0);
    PT_CHECK_INT(o->max_inbound_priority_frames_per_stream, 7);
    PT_CHECK_INT(o->max_inbound_window_update_frames_per_data_frame_sent, 3);
    PT_CHECK_INT(o->override_stream_error, 1);
    PT_CHECK_INT(o->allow_connect, 1);
    PT_CHECK_INT(o->keepalive_interval_ms, 10000);
    PT_CHECK_INT(o->keepalive_timeout_ms, 2500);
    PT_CHECK_INT(o->keepalive_jitter_pct, 5);
    PT_CHECK_INT(hcm_of(c)->settings.drain_timeout_ms, 1000);
    pt_boot_free(c);
    pt_cfg_dispose(&R);
    CHECK("'codec_type':'HTTP2','http2_protocol_options':{}", OK);
}

static void test_http2_errors(void)
{
    CHECK("'http2_protocol_options':{'max_concurrent_streams':0}",
          E(H2 ".max_concurrent_streams: 0 is out of range [1, 2147483647]"));
    CHECK("'http2_protocol_options':{'initial_stream_window_size':1000}",
          E(H2 ".initial_stream_window_size: 1000 is out of range [65535, 2147483647]"));
    CHECK("'http2_protocol_options':{'initial_connection_window_size':2147483648}",
          E(H2 ".initial_connection_window_size: 2147483648 is out of range [65535, "
               "2147483647]"));
    CHECK("'http2_protocol_options':{'max_outbound_frames':0}",
          E(H2 ".max_outbound_frames: 0 is out of range [1, 4294967294]"));
    CHECK("'http2_protocol_options':{'hpack_table_size':-1}",
          E(H2 ".hpack_table_size: -1 is not a non-negative integer"));
    CHECK("'http2_protocol_options':{'allow_connect':'yes'}",
          E(H2 ".allow_connect: \"yes\" is not a boolean"));
    CHECK("'http2_protocol_options':{'allow_metadata':true,'custom_settings_parameters':[]}",
          E(H2 ".allow_metadata: field is not supported",
            H2 ".custom_settings_parameters: field is not supported"));
    CHECK("'http2_protocol_options':{'stream_error_on_invalid_http_messaging':true}",
          E(H2 ".stream_error_on_invalid_http_messaging: field is not supported"));
    CHECK("'http2_protocol_options':{'max_frame_size':1}", E(H2 ".max_frame_size: unknown field"));
    CHECK("'http2_protocol_options':{'connection_keepalive':{'interval':'1s'}}",
          E(H2 ".connection_keepalive.timeout: is required"));
    CHECK("'http2_protocol_options':{'connection_keepalive':{'timeout':'0s'}}",
          E(H2 ".connection_keepalive.timeout: must be greater than 0"));
    CHECK("'http2_protocol_options':{'connection_keepalive':{'timeout':'1s',"
          "'connection_idle_interval':'1s'}}",
          E(H2 ".connection_keepalive.connection_idle_interval: field is not supported"));
    /* Checked whatever codec_type says (Envoy loads it with HTTP1, unused). */
    CHECK("'codec_type':'HTTP1','http2_protocol_options':{}", OK);
    CHECK("'codec_type':'HTTP1','http2_protocol_options':{'max_concurrent_streams':0}",
          E(H2 ".max_concurrent_streams: 0 is out of range [1, 2147483647]"));
    CHECK("'http3_protocol_options':{}", E(P ".http3_protocol_options: field is not supported"));
}

/* The ALPN names the connection manager speaks follow codec_type (a TLS chain offers its
 * alpn_protocols restricted to them: proxy/config.c restrict_alpn; end to end in
 * tests/integration/test_http2_downstream.py). */
static void test_alpn_follows_codec_type(void)
{
    static const struct {
        const char *codec;
        const char *want; /* wire format */
    } cases[] = {
        {"", "\x02h2\x08http/1.1\x08http/1.0"},
        {"'codec_type':'HTTP2'", "\x02h2"},
        {"'codec_type':'HTTP1'", "\x08http/1.1\x08http/1.0"},
    };
    const pt_network_filter_ops_t *ops = &pt_http_connection_manager_filter;
    PT_CHECK(ops->alpn_for != NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_boot_t *c = build(cases[i].codec, "");
        PT_CHECK(c != NULL);
        PT_CHECK_STR(ops->alpn_for(hcm_of(c)), cases[i].want);
        pt_boot_free(c);
        pt_cfg_dispose(&R);
    }
}

int main(void)
{
    pt_stats_thread_init();
    PT_RUN(test_codec_type);
    PT_RUN(test_http2_defaults);
    PT_RUN(test_http2_values);
    PT_RUN(test_http2_errors);
    PT_RUN(test_alpn_follows_codec_type);
    PT_TEST_EXIT();
}
