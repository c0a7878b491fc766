/* Unit tests for discovery/health_check.c: the HealthCheck parser (every bad input rejected
 * with its exact message and full path; Envoy's defaults where the config is silent), the
 * decision helpers (status ranges, TCP payload matching), and the checker's lifecycle on a
 * private loop (hosts start failed_active_hc, a passing connect-only check clears the bit,
 * a refused one keeps it, stop frees everything: run under ASan to check the last part).
 *
 * Configs are inline JSON with single quotes (J() turns them into double quotes). */
#include "discovery/health_check.h"
#include "proxy/view.h"
#include "proxy/cluster.h"
#include "proxy/config.h"
#include "proxy/conn.h"
#include "proxy/stats.h"
#include "proxy/worker.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------- */

static pt_cfg_t R;

static pt_boot_t *build(const char *json)
{
    json_t *root = J(json);
    pt_cfg_init(&R, root);
    pt_boot_t *c = pt_test_boot(root, &R);
    json_decref(root);
    return c;
}

static void print_errors(void)
{
    for (size_t i = 0; i < R.nerrors; i++)
        fprintf(stderr, "    %s\n", R.errors[i]);
}

static int rejects(int line, pt_boot_t *c, const char *const *want)
{
    size_t n = 0;
    while (want[n] != NULL)
        n++;
    int same = c == NULL && R.nerrors == n;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(R.errors[i], want[i]) == 0;
    if (!same) {
        fprintf(stderr, "  line %d: %s, got %zu error(s):\n", line,
                c ? "config was accepted" : "config rejected", R.nerrors);
        print_errors();
        fprintf(stderr, "  want %zu:\n", n);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "    %s\n", want[i]);
    }
    pt_boot_free(c);
    pt_cfg_dispose(&R);
    return same;
}
#define REJECTS(json, ...)                                                               \
    do {                                                                                 \
        int rejected_as_expected =                                                       \
            rejects(__LINE__, build(json), (const char *const[]){__VA_ARGS__, NULL});    \
        PT_CHECK(rejected_as_expected);                                                  \
    } while (0)

static pt_boot_t *accepts(int line, pt_boot_t *c)
{
    if (c == NULL) {
        fprintf(stderr, "  line %d: config rejected:\n", line);
        print_errors();
    }
    pt_cfg_dispose(&R);
    return c;
}
#define ACCEPTS(json) accepts(__LINE__, build(json))

/* A one-cluster bootstrap whose cluster has health_checks `hcs` (a JSON list). */
#define SA(ip, port) "{'socket_address':{'address':'" ip "','port_value':" #port "}}"
#define EP(ip, port) "{'endpoint':{'address':" SA(ip, port) "}}"
#define WITH_HC(hcs)                                                                     \
    "{'static_resources':{'clusters':[{'name':'web','connect_timeout':'1s',"             \
    "'load_assignment':{'cluster_name':'web','endpoints':[{'lb_endpoints':["             \
    EP("127.0.0.1", 9000) "]}]},'health_checks':" hcs "}]}}"
/* The required fields, then more. */
#define BASE "'timeout':'1s','interval':'5s','unhealthy_threshold':3,'healthy_threshold':2"
#define HTTP_HC(extra) "[{" BASE ",'http_health_check':{'path':'/healthz'" extra "}}]"
#define HC0 "static_resources.clusters[0].health_checks[0]"
#define HTTP0 HC0 ".http_health_check"
#define TCP0 HC0 ".tcp_health_check"

static const pt_health_check_config_t *only_hc(pt_boot_t *c)
{
    if (c == NULL || c->nclusters != 1 || c->clusters[0]->nhealth_checks != 1)
        return NULL;
    return &c->clusters[0]->health_checks[0];
}

/* ---- happy paths ----------------------------------------------------------------- */

static void test_defaults(void)
{
    pt_boot_t *c = ACCEPTS(WITH_HC(HTTP_HC("")));
    const pt_health_check_config_t *hc = only_hc(c);
    PT_CHECK(hc != NULL);
    PT_CHECK_INT(hc->kind, PT_HC_HTTP);
    PT_CHECK_INT(hc->timeout_ms, 1000);
    PT_CHECK_INT(hc->interval_ms, 5000);
    PT_CHECK_INT(hc->initial_jitter_ms, 0);
    PT_CHECK_INT(hc->interval_jitter_ms, 0);
    PT_CHECK_INT(hc->interval_jitter_percent, 0);
    PT_CHECK_INT(hc->unhealthy_threshold, 3);
    PT_CHECK_INT(hc->healthy_threshold, 2);
    PT_CHECK_INT(hc->reuse_connection, 1);
    PT_CHECK_INT(hc->no_traffic_interval_ms, 60000);
    PT_CHECK_INT(hc->no_traffic_healthy_interval_ms, 0);
    PT_CHECK_INT(hc->unhealthy_interval_ms, 5000);      /* = interval */
    PT_CHECK_INT(hc->unhealthy_edge_interval_ms, 5000); /* = unhealthy_interval */
    PT_CHECK_INT(hc->healthy_edge_interval_ms, 5000);   /* = interval */
    PT_CHECK_INT(hc->always_log_health_check_failures, 0);
    PT_CHECK(hc->http.host == NULL); /* the cluster's name is used */
    PT_CHECK_STR(hc->http.path, "/healthz");
    PT_CHECK_STR(hc->http.method, "GET");
    PT_CHECK_INT(hc->http.nexpected, 1); /* 200 only */
    PT_CHECK_INT(hc->http.expected[0].start, 200);
    PT_CHECK_INT(hc->http.expected[0].end, 201);
    PT_CHECK_INT(hc->http.nretriable, 0);
    PT_CHECK_INT(hc->http.headers.nadd + hc->http.headers.nremove, 0);
    pt_boot_free(c);

    /* An explicit empty expected_statuses list is the default too. */
    c = ACCEPTS(WITH_HC(HTTP_HC(",'expected_statuses':[]")));
    hc = only_hc(c);
    PT_CHECK(hc != NULL);
    PT_CHECK_INT(hc->http.nexpected, 1);
    PT_CHECK_INT(hc->http.expected[0].start, 200);
    pt_boot_free(c);

    /* unhealthy_edge_interval follows unhealthy_interval when only that is set. */
    c = ACCEPTS(WITH_HC("[{" BASE ",'unhealthy_interval':'2s','tcp_health_check':{}}]"));
    hc = only_hc(c);
    PT_CHECK(hc != NULL);
    PT_CHECK_INT(hc->unhealthy_interval_ms, 2000);
    PT_CHECK_INT(hc->unhealthy_edge_interval_ms, 2000);
    PT_CHECK_INT(hc->healthy_edge_interval_ms, 5000);
    pt_boot_free(c);
}

static void test_http_full(void)
{
    pt_boot_t *c = ACCEPTS(WITH_HC(
        "[{'timeout':'0.25s','interval':'0.1s','initial_jitter':'0.05s','interval_jitter':'0.02s',"
        "'interval_jitter_percent':10,'unhealthy_threshold':{'value':4},'healthy_threshold':'5',"
        "'reuse_connection':false,'no_traffic_interval':'3s','no_traffic_healthy_interval':'4s',"
        "'unhealthy_interval':'6s','unhealthy_edge_interval':'7s','healthy_edge_interval':'8s',"
        "'always_log_health_check_failures':true,"
        "'http_health_check':{'host':'svc.local','path':'/ready?x=1','method':'HEAD',"
        "'codec_client_type':'HTTP1',"
        "'request_headers_to_add':[{'header':{'key':'X-Check','value':'1'}},"
        "{'header':{'key':'user-agent','value':'probe'},'append_action':'OVERWRITE_IF_EXISTS_OR_ADD'},"
        "{'header':{'key':'x-lit','value':'100%%'},'append':false}],"
        "'request_headers_to_remove':['X-Gone'],"
        "'expected_statuses':[{'start':200,'end':300},{'start':'404','end':'405'}],"
        "'retriable_statuses':[{'start':503,'end':504}]}}]"));
    const pt_health_check_config_t *hc = only_hc(c);
    PT_CHECK(hc != NULL);
    PT_CHECK_INT(hc->timeout_ms, 250);
    PT_CHECK_INT(hc->interval_ms, 100);
    PT_CHECK_INT(hc->initial_jitter_ms, 50);
    PT_CHECK_INT(hc->interval_jitter_ms, 20);
    PT_CHECK_INT(hc->interval_jitter_percent, 10);
    PT_CHECK_INT(hc->unhealthy_threshold, 4);
    PT_CHECK_INT(hc->healthy_threshold, 5);
    PT_CHECK_INT(hc->reuse_connection, 0);
    PT_CHECK_INT(hc->no_traffic_interval_ms, 3000);
    PT_CHECK_INT(hc->no_traffic_healthy_interval_ms, 4000);
    PT_CHECK_INT(hc->unhealthy_interval_ms, 6000);
    PT_CHECK_INT(hc->unhealthy_edge_interval_ms, 7000);
    PT_CHECK_INT(hc->healthy_edge_interval_ms, 8000);
    PT_CHECK_INT(hc->always_log_health_check_failures, 1);
    PT_CHECK_STR(hc->http.host, "svc.local");
    PT_CHECK_STR(hc->http.path, "/ready?x=1");
    PT_CHECK_STR(hc->http.method, "HEAD");
    PT_CHECK_INT(hc->http.headers.nadd, 3);
    PT_CHECK_STR(hc->http.headers.add[0].key, "x-check");
    PT_CHECK_STR(hc->http.headers.add[0].value, "1");
    PT_CHECK_INT(hc->http.headers.add[0].action, PT_HEADER_APPEND_IF_EXISTS_OR_ADD);
    PT_CHECK_STR(hc->http.headers.add[1].key, "user-agent");
    PT_CHECK_INT(hc->http.headers.add[1].action, PT_HEADER_OVERWRITE_IF_EXISTS_OR_ADD);
    PT_CHECK_STR(hc->http.headers.add[2].value, "100%"); /* a formatter string, rendered once */
    PT_CHECK_INT(hc->http.headers.add[2].action, PT_HEADER_OVERWRITE_IF_EXISTS_OR_ADD); /* append: false */
    PT_CHECK_INT(hc->http.headers.nremove, 1);
    PT_CHECK_STR(hc->http.headers.remove[0], "x-gone");
    PT_CHECK_INT(hc->http.nexpected, 2);
    PT_CHECK_INT(hc->http.expected[1].start, 404);
    PT_CHECK_INT(hc->http.expected[1].end, 405);
    PT_CHECK_INT(hc->http.nretriable, 1);
    PT_CHECK_INT(hc->http.retriable[0].start, 503);
    pt_boot_free(c);

    /* camelCase spellings, as proto3 JSON allows. */
    c = ACCEPTS(WITH_HC("[{'timeout':'1s','interval':'1s','unhealthyThreshold':1,"
                        "'healthyThreshold':1,'httpHealthCheck':{'path':'/h',"
                        "'expectedStatuses':[{'start':200,'end':204}]}}]"));
    hc = only_hc(c);
    PT_CHECK(hc != NULL);
    PT_CHECK_INT(hc->http.expected[0].end, 204);
    pt_boot_free(c);
}

static void test_tcp(void)
{
    /* Connect-only: no send, no receive. */
    pt_boot_t *c = ACCEPTS(WITH_HC("[{" BASE ",'tcp_health_check':{}}]"));
    const pt_health_check_config_t *hc = only_hc(c);
    PT_CHECK(hc != NULL);
    PT_CHECK_INT(hc->kind, PT_HC_TCP);
    PT_CHECK_INT(hc->tcp.send.len, 0);
    PT_CHECK_INT(hc->tcp.nreceive, 0);
    pt_boot_free(c);

    /* Hex text (either case) and base64 binary payloads. */
    c = ACCEPTS(WITH_HC("[{" BASE ",'tcp_health_check':{'send':{'text':'50494e47'},"
                        "'receive':[{'text':'504f'},{'binary':'Tkc='}]}}]"));
    hc = only_hc(c);
    PT_CHECK(hc != NULL);
    PT_CHECK_MEM(hc->tcp.send.data, hc->tcp.send.len, "PING", 4);
    PT_CHECK_INT(hc->tcp.nreceive, 2);
    PT_CHECK_MEM(hc->tcp.receive[0].data, hc->tcp.receive[0].len, "PO", 2);
    PT_CHECK_MEM(hc->tcp.receive[1].data, hc->tcp.receive[1].len, "NG", 2);
    pt_boot_free(c);

    c = ACCEPTS(WITH_HC("[{" BASE ",'tcp_health_check':{'send':{'text':'0aFF'}}}]"));
    hc = only_hc(c);
    PT_CHECK(hc != NULL);
    PT_CHECK_MEM(hc->tcp.send.data, hc->tcp.send.len, "\x0a\xff", 2);
    pt_boot_free(c);
}

static void test_several_checks(void)
{
    /* Envoy allows several health checks per cluster; a host must pass all of them. */
    pt_boot_t *c = ACCEPTS(
        WITH_HC("[{" BASE ",'http_health_check':{'path':'/a'}},{" BASE ",'tcp_health_check':{}}]"));
    PT_CHECK(c != NULL);
    PT_CHECK_INT(c->clusters[0]->nhealth_checks, 2);
    PT_CHECK_INT(c->clusters[0]->health_checks[0].kind, PT_HC_HTTP);
    PT_CHECK_INT(c->clusters[0]->health_checks[1].kind, PT_HC_TCP);
    pt_boot_free(c);

    /* An empty list: no health checking. */
    c = ACCEPTS(WITH_HC("[]"));
    PT_CHECK(c != NULL);
    PT_CHECK_INT(c->clusters[0]->nhealth_checks, 0);
    pt_boot_free(c);
}

/* ---- errors ---------------------------------------------------------------------- */

static void test_required(void)
{
    REJECTS(WITH_HC("[{}]"), HC0 ".timeout: is required", HC0 ".interval: is required",
            HC0 ".unhealthy_threshold: is required", HC0 ".healthy_threshold: is required",
            HC0 ": one of http_health_check, tcp_health_check, grpc_health_check or "
                "custom_health_check is required");
    REJECTS(WITH_HC("[{" BASE ",'http_health_check':{}}]"), HTTP0 ".path: is required");
    REJECTS(WITH_HC("[{" BASE ",'http_health_check':{'path':''}}]"), HTTP0 ".path: is required");
    REJECTS(WITH_HC(HTTP_HC(",'expected_statuses':[{'start':200}]")),
            HTTP0 ".expected_statuses[0].end: is required");
    REJECTS(WITH_HC(HTTP_HC(",'request_headers_to_add':[{'append_action':'ADD_IF_ABSENT'}]")),
            HTTP0 ".request_headers_to_add[0].header: is required");
    REJECTS(WITH_HC(HTTP_HC(",'request_headers_to_add':[{'header':{'value':'v'}}]")),
            HTTP0 ".request_headers_to_add[0].header.key: is required");
}

static void test_values(void)
{
    REJECTS(WITH_HC("[{'timeout':'0s','interval':'5s','unhealthy_threshold':3,"
                    "'healthy_threshold':2,'tcp_health_check':{}}]"),
            HC0 ".timeout: must be greater than 0");
    REJECTS(WITH_HC("[{'timeout':'1s','interval':'soon','unhealthy_threshold':3,"
                    "'healthy_threshold':2,'tcp_health_check':{}}]"),
            HC0 ".interval: \"soon\" is not a duration (expected a string like \"1.5s\")");
    REJECTS(WITH_HC("[{" BASE ",'unhealthy_interval':'0s','no_traffic_interval':'0s',"
                    "'tcp_health_check':{}}]"),
            HC0 ".no_traffic_interval: must be greater than 0",
            HC0 ".unhealthy_interval: must be greater than 0");
    REJECTS(WITH_HC("[{'timeout':'1s','interval':'5s','unhealthy_threshold':-1,"
                    "'healthy_threshold':2,'tcp_health_check':{}}]"),
            HC0 ".unhealthy_threshold: -1 is not a non-negative integer");
    REJECTS(WITH_HC("[{'timeout':'1s','interval':'5s','unhealthy_threshold':3,"
                    "'healthy_threshold':4294967296,'tcp_health_check':{}}]"),
            HC0 ".healthy_threshold: 4294967296 is out of range [0, 4294967295]");
    REJECTS(WITH_HC("[{" BASE ",'reuse_connection':'yes','tcp_health_check':{}}]"),
            HC0 ".reuse_connection: \"yes\" is not a boolean");
    REJECTS(WITH_HC("{}"), "static_resources.clusters[0].health_checks: {} is not a list");
    REJECTS(WITH_HC("['x']"), HC0 ": \"x\" is not an object");
}

static void test_http_errors(void)
{
    REJECTS(WITH_HC(HTTP_HC(",'codec_client_type':'HTTP2'")),
            HTTP0 ".codec_client_type: \"HTTP2\" is not supported");
    REJECTS(WITH_HC(HTTP_HC(",'codec_client_type':'SPDY'")),
            HTTP0 ".codec_client_type: \"SPDY\" is not a valid value (expected one of: HTTP1)");
    REJECTS(WITH_HC(HTTP_HC(",'method':'CONNECT'")), HTTP0 ".method: \"CONNECT\" is not supported");
    REJECTS(WITH_HC("[{" BASE ",'http_health_check':{'path':'/a b'}}]"),
            HTTP0 ".path: \"/a b\" must not contain spaces or control characters");
    REJECTS(WITH_HC(HTTP_HC(",'host':'a\\r\\nb'")), HTTP0 ".host: must not contain CR or LF");
    REJECTS(WITH_HC(HTTP_HC(",'expected_statuses':[{'start':99,'end':200}]")),
            HTTP0 ".expected_statuses[0].start: 99 is out of range [100, 599]");
    REJECTS(WITH_HC(HTTP_HC(",'expected_statuses':[{'start':200,'end':601}]")),
            HTTP0 ".expected_statuses[0].end: 601 is out of range [101, 600]");
    REJECTS(WITH_HC(HTTP_HC(",'retriable_statuses':[{'start':300,'end':300}]")),
            HTTP0 ".retriable_statuses[0]: start (300) must be less than end (300): the range "
                  "is [start, end)");
    REJECTS(WITH_HC(HTTP_HC(",'request_headers_to_add':[{'header':{'key':'Host','value':'x'}}]")),
            HTTP0 ".request_headers_to_add[0].header.key: \"Host\" may not be modified: "
                  "pseudo-headers and host are not mutable (as in Envoy)");
    REJECTS(WITH_HC(HTTP_HC(",'request_headers_to_add':[{'header':{'key':'a b','value':'x'}}]")),
            HTTP0 ".request_headers_to_add[0].header.key: \"a b\" is not a valid header name");
    REJECTS(WITH_HC(HTTP_HC(",'request_headers_to_add':[{'header':{'key':'x','value':'1\\n2'}}]")),
            HTTP0 ".request_headers_to_add[0].header.value: must not contain CR or LF");
    REJECTS(WITH_HC(HTTP_HC(",'request_headers_to_add':[{'header':{'key':'x','value':'%NOPE%'}}]")),
            HTTP0 ".request_headers_to_add[0].header.value: unknown command operator \"%NOPE%\"");
    REJECTS(WITH_HC(HTTP_HC(",'request_headers_to_add':[{'header':{'key':'x','value':'1'},"
                            "'append':true,'append_action':'ADD_IF_ABSENT'}]")),
            HTTP0 ".request_headers_to_add[0]: append and append_action may not both be set "
                  "(append is deprecated: use append_action)");
    REJECTS(WITH_HC(HTTP_HC(",'request_headers_to_remove':[':path', 7]")),
            HTTP0 ".request_headers_to_remove[0]: \":path\" may not be removed: pseudo-headers "
                  "and host are not mutable (as in Envoy)",
            HTTP0 ".request_headers_to_remove[1]: 7 is not a string");
    REJECTS(WITH_HC(HTTP_HC(",'service_name_matcher':{'exact':'x'}")),
            HTTP0 ".service_name_matcher: field is not supported");
    REJECTS(WITH_HC(HTTP_HC(",'send':{'text':'00'}")), HTTP0 ".send: field is not supported");
    REJECTS(WITH_HC(HTTP_HC(",'use_http2':true")), HTTP0 ".use_http2: unknown field");
}

static void test_tcp_errors(void)
{
    REJECTS(WITH_HC("[{" BASE ",'tcp_health_check':{'send':{'text':'abc'}}}]"),
            TCP0 ".send.text: \"abc\" is not a hex string (an even number of hex digits)");
    REJECTS(WITH_HC("[{" BASE ",'tcp_health_check':{'send':{'text':'zz'}}}]"),
            TCP0 ".send.text: \"zz\" is not a hex string (an even number of hex digits)");
    REJECTS(WITH_HC("[{" BASE ",'tcp_health_check':{'send':{'text':''}}}]"),
            TCP0 ".send.text: must not be empty");
    REJECTS(WITH_HC("[{" BASE ",'tcp_health_check':{'send':{'binary':'@@'}}}]"),
            TCP0 ".send.binary: is not valid base64");
    REJECTS(WITH_HC("[{" BASE ",'tcp_health_check':{'send':{}}}]"),
            TCP0 ".send: one of text or binary is required");
    REJECTS(WITH_HC("[{" BASE ",'tcp_health_check':{'receive':[{'text':'00','binary':'AA=='}]}}]"),
            TCP0 ".receive[0]: only one of text, binary may be given (found text, binary)");
    REJECTS(WITH_HC("[{" BASE ",'tcp_health_check':{'receive':{'text':'00'}}}]"),
            TCP0 ".receive: {\"text\":\"00\"} is not a list");
}

static void test_unsupported(void)
{
    REJECTS(WITH_HC("[{" BASE ",'grpc_health_check':{'service_name':'x','spare':1}}]"),
            HC0 ".grpc_health_check.spare: unknown field");
    REJECTS(WITH_HC("[{" BASE ",'grpc_health_check':{'authority':'a\\nb'}}]"),
            HC0 ".grpc_health_check.authority: must not contain CR or LF");
    REJECTS(WITH_HC("[{" BASE ",'custom_health_check':{'name':'redis'}}]"),
            HC0 ".custom_health_check: field is not supported");
    REJECTS(WITH_HC("[{" BASE ",'http_health_check':{'path':'/'},'tcp_health_check':{}}]"),
            HC0 ": only one of http_health_check, tcp_health_check, grpc_health_check, "
                "custom_health_check may be given (found http_health_check, tcp_health_check)");
    REJECTS(WITH_HC("[{" BASE ",'event_logger':[{'name':'x','typed_config':{'@type':"
                    "'type.googleapis.com/envoy.extensions.health_check.event_sinks.grpc.v3."
                    "HealthCheckEventGrpcSink'}}],'tcp_health_check':{}}]"),
            HC0 ".event_logger[0].typed_config.@type: \"type.googleapis.com/envoy.extensions."
                "health_check.event_sinks.grpc.v3.HealthCheckEventGrpcSink\" is not supported "
                "(only the file sink, type.googleapis.com/envoy.extensions.health_check."
                "event_sinks.file.v3.HealthCheckEventFileSink)");
    REJECTS(WITH_HC("[{" BASE ",'event_log_path':'/a','event_logger':[{'name':'x','typed_config':"
                    "{'@type':'type.googleapis.com/envoy.extensions.health_check.event_sinks."
                    "file.v3.HealthCheckEventFileSink','event_log_path':'/b'}}],"
                    "'tcp_health_check':{}}]"),
            HC0 ".event_logger[0].typed_config.event_log_path: names a second file (\"/a\"): "
                "one event log file per health check");
    REJECTS(WITH_HC("[{" BASE ",'event_logger':[{'name':'x','typed_config':{'@type':"
                    "'type.googleapis.com/envoy.extensions.health_check.event_sinks.file.v3."
                    "HealthCheckEventFileSink'}}],'tcp_health_check':{}}]"),
            HC0 ".event_logger[0].typed_config.event_log_path: is required");
    pt_boot_t *logged =
        ACCEPTS(WITH_HC("[{" BASE ",'event_log_path':'/tmp/hc.log','tcp_health_check':{}}]"));
    PT_CHECK(logged != NULL);
    PT_CHECK_STR(logged->clusters[0]->health_checks[0].event_log_path, "/tmp/hc.log");
    pt_boot_free(logged);
    REJECTS(WITH_HC("[{" BASE ",'tls_options':{'alpn_protocols':['h2']},'tcp_health_check':{}}]"),
            HC0 ".tls_options: field is not supported");
    REJECTS(WITH_HC("[{" BASE ",'alt_port':8080,'tcp_health_check':{}}]"),
            HC0 ".alt_port: field is not supported");
    REJECTS(WITH_HC("[{" BASE ",'intervall':'1s','tcp_health_check':{}}]"),
            HC0 ".intervall: unknown field");
    /* Errors in two checks are all reported, each with its own index. */
    REJECTS(WITH_HC("[{" BASE ",'tcp_health_check':{'send':{'text':'x'}}},"
                    "{'interval':'1s','unhealthy_threshold':1,'healthy_threshold':1,"
                    "'tcp_health_check':{}}]"),
            TCP0 ".send.text: \"x\" is not a hex string (an even number of hex digits)",
            "static_resources.clusters[0].health_checks[1].timeout: is required");
    /* Regression: a check with errors left its counts behind for the next one, which then
     * wrote past its own header array (ASan). */
    REJECTS(WITH_HC("[{" BASE ",'bogus':1,'http_health_check':{'path':'/',"
                    "'request_headers_to_add':[{'header':{'key':'a','value':'1'}},"
                    "{'header':{'key':'b','value':'2'}}],"
                    "'expected_statuses':[{'start':200,'end':201},{'start':202,'end':203}]}},"
                    "{" BASE ",'http_health_check':{'path':'/',"
                    "'request_headers_to_add':[{'header':{'key':'c','value':'3'}}],"
                    "'expected_statuses':[{'start':200,'end':201}]}},"
                    "{" BASE ",'http_health_check':{}}]"),
            HC0 ".bogus: unknown field",
            "static_resources.clusters[0].health_checks[2].http_health_check.path: is required");
}

/* ---- decision helpers ------------------------------------------------------------ */

static void test_status_ranges(void)
{
    const pt_hc_range_t rs[] = {{200, 300}, {404, 405}};
    PT_CHECK(pt_hc_status_in(rs, 2, 200));
    PT_CHECK(pt_hc_status_in(rs, 2, 299));
    PT_CHECK(!pt_hc_status_in(rs, 2, 300)); /* end is exclusive */
    PT_CHECK(pt_hc_status_in(rs, 2, 404));
    PT_CHECK(!pt_hc_status_in(rs, 2, 405));
    PT_CHECK(!pt_hc_status_in(rs, 2, 199));
    PT_CHECK(!pt_hc_status_in(rs, 0, 200));
}

static void test_tcp_match(void)
{
    const pt_hc_payload_t two[] = {{(const unsigned char *)"PO", 2},
                                   {(const unsigned char *)"NG", 2}};
    const unsigned char *d = (const unsigned char *)"xxPOyyNGzz";
    PT_CHECK(pt_hc_tcp_match(two, 2, d, 10));                              /* in order, gaps ok */
    PT_CHECK(pt_hc_tcp_match(two, 2, (const unsigned char *)"PONG", 4));   /* contiguous */
    PT_CHECK(!pt_hc_tcp_match(two, 2, (const unsigned char *)"NGPO", 4));  /* wrong order */
    PT_CHECK(!pt_hc_tcp_match(two, 2, (const unsigned char *)"PON", 3));   /* incomplete */
    PT_CHECK(!pt_hc_tcp_match(two, 2, (const unsigned char *)"PING", 4)); /* wrong bytes */
    const pt_hc_payload_t same[] = {{(const unsigned char *)"ab", 2},
                                    {(const unsigned char *)"ab", 2}};
    PT_CHECK(!pt_hc_tcp_match(same, 2, (const unsigned char *)"ab", 2)); /* no overlap reuse */
    PT_CHECK(pt_hc_tcp_match(same, 2, (const unsigned char *)"abab", 4));
    PT_CHECK(pt_hc_tcp_match(two, 0, (const unsigned char *)"", 0)); /* nothing to find */
}

/* ---- the checker on a private loop ---------------------------------------------- */

static int listen_local(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A port nobody listens on (bound, then closed). */
static int closed_port(void)
{
    int port = 0;
    int fd = listen_local(&port);
    if (fd >= 0)
        close(fd);
    return port;
}

typedef struct wait_ctx {
    pt_cluster_t *c;
    pt_stat_t attempts;
    uint64_t want_attempts;
} wait_ctx_t;

static void on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    wait_ctx_t *w = t->data;
    if (pt_stats_value(w->attempts) >= w->want_attempts &&
        (atomic_load(&w->c->hosts[0]->health) & PT_HOST_FAILED_ACTIVE_HC) == 0)
        ev_break(loop, EVBREAK_ALL);
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void test_checker_lifecycle(void)
{
    int up_port = 0;
    int lfd = listen_local(&up_port);
    PT_CHECK(lfd >= 0);
    int down_port = closed_port();
    char json[2048];
    /* Cluster "up": connect-only TCP checks against a listening socket (the kernel completes
     * the handshake from the backlog). Cluster "down": the same against a closed port. */
    snprintf(json, sizeof(json),
             "{'static_resources':{'clusters':["
             "{'name':'up','load_assignment':{'cluster_name':'up','endpoints':[{'lb_endpoints':"
             "[{'endpoint':{'address':{'socket_address':{'address':'127.0.0.1','port_value':%d}}}}]"
             "}]},'health_checks':[{'timeout':'1s','interval':'0.05s','no_traffic_interval':"
             "'0.05s','unhealthy_threshold':1,'healthy_threshold':1,'tcp_health_check':{}}]},"
             "{'name':'down','load_assignment':{'cluster_name':'down','endpoints':[{'lb_endpoints':"
             "[{'endpoint':{'address':{'socket_address':{'address':'127.0.0.1','port_value':%d}}}}]"
             "}]},'health_checks':[{'timeout':'1s','interval':'0.05s','no_traffic_interval':"
             "'0.05s','unhealthy_threshold':1,'healthy_threshold':1,'tcp_health_check':{}}]},"
             "{'name':'plain','load_assignment':{'cluster_name':'plain','endpoints':[{'lb_endpoints':"
             "[{'endpoint':{'address':{'socket_address':{'address':'127.0.0.1','port_value':1}}}}]"
             "}]}}]}}",
             up_port, down_port);
    pt_boot_t *c = ACCEPTS(json);
    PT_CHECK(c != NULL);
    pt_cluster_t *up = pt_boot_find(c, "up");
    pt_cluster_t *down = pt_boot_find(c, "down");
    pt_cluster_t *plain = pt_boot_find(c, "plain");
    PT_CHECK(up && down && plain);

    pt_worker_t w;
    PT_CHECK_INT(pt_worker_init(&w, -1), 0);
    pt_health_checker_t *hc = pt_health_checker_start(&w);
    PT_CHECK(hc != NULL);
    pt_view_t *view = pt_view_new(c->clusters, c->nclusters);
    PT_CHECK_INT(pt_health_checker_update(hc, view), 0);
    /* Until a check passes, hosts of health-checked clusters are not used. */
    PT_CHECK_INT(atomic_load(&up->hosts[0]->health), PT_HOST_FAILED_ACTIVE_HC);
    PT_CHECK_INT(atomic_load(&down->hosts[0]->health), PT_HOST_FAILED_ACTIVE_HC);
    PT_CHECK_INT(atomic_load(&plain->hosts[0]->health), 0);
    PT_CHECK_INT(pt_stats_gauge_value(up->stats.membership_healthy), 0);
    pt_stat_t healthy_up = pt_stats_find("cluster.up.health_check.healthy");
    pt_stat_t attempts_up = pt_stats_find("cluster.up.health_check.attempt");
    pt_stat_t failures_down = pt_stats_find("cluster.down.health_check.failure");
    pt_stat_t netfail_down = pt_stats_find("cluster.down.health_check.network_failure");
    PT_CHECK(healthy_up && attempts_up && failures_down && netfail_down);
    PT_CHECK(pt_stats_find("cluster.up.health_check.passive_failure") != 0);
    PT_CHECK(pt_stats_find("cluster.up.health_check.verify_cluster") != 0);
    PT_CHECK(pt_stats_find("cluster.up.health_check.degraded") != 0);
    PT_CHECK(pt_stats_find("cluster.plain.health_check.attempt") == 0);

    /* Run until "up" passed a few checks (the first success alone marks it healthy). */
    uint64_t base = pt_stats_value(attempts_up);
    wait_ctx_t wc = {.c = up, .attempts = attempts_up, .want_attempts = base + 3};
    ev_timer poll, deadline;
    ev_timer_init(&poll, on_poll, 0.01, 0.01);
    poll.data = &wc;
    ev_timer_init(&deadline, on_deadline, 10., 0.);
    ev_timer_start(w.loop, &poll);
    ev_timer_start(w.loop, &deadline);
    ev_run(w.loop, 0);
    ev_timer_stop(w.loop, &poll);
    ev_timer_stop(w.loop, &deadline);

    PT_CHECK_INT(atomic_load(&up->hosts[0]->health), 0);
    PT_CHECK_INT(pt_stats_gauge_value(up->stats.membership_healthy), 1);
    PT_CHECK_INT(pt_stats_gauge_value(healthy_up), 1);
    PT_CHECK_INT(atomic_load(&down->hosts[0]->health), PT_HOST_FAILED_ACTIVE_HC);
    PT_CHECK(pt_stats_value(failures_down) >= 1);
    PT_CHECK(pt_stats_value(netfail_down) >= 1);

    /* A new version of "up" with the same checks and host: nothing starts over (the host
     * stays healthy, its session goes on). A second host is added (same address, another
     * hostname: another host): failed until its first check. */
    char json2[4096];
    snprintf(json2, sizeof(json2),
             "{'static_resources':{'clusters':["
             "{'name':'up','connect_timeout':'2s','load_assignment':{'cluster_name':'up',"
             "'endpoints':[{'lb_endpoints':["
             "{'endpoint':{'address':{'socket_address':{'address':'127.0.0.1','port_value':%d}}}},"
             "{'endpoint':{'hostname':'second','address':{'socket_address':{'address':'127.0.0.1',"
             "'port_value':%d}}}}"
             "]}]},'health_checks':[{'timeout':'1s','interval':'0.05s','no_traffic_interval':"
             "'0.05s','unhealthy_threshold':1,'healthy_threshold':1,'tcp_health_check':{}}]},"
             "{'name':'plain','load_assignment':{'cluster_name':'plain','endpoints':[{'lb_endpoints':"
             "[{'endpoint':{'address':{'socket_address':{'address':'127.0.0.1','port_value':1}}}}]"
             "}]}}]}}",
             up_port, up_port);
    pt_boot_t *c2 = ACCEPTS(json2);
    PT_CHECK(c2 != NULL);
    pt_cluster_t *up2 = pt_boot_find(c2, "up");
    PT_CHECK(up2 != NULL && up2 != up && up2->hosts[0] == up->hosts[0]);
    PT_CHECK_INT(atomic_load(&up2->hosts[0]->health), 0);                     /* kept */
    PT_CHECK_INT(atomic_load(&up2->hosts[1]->health), PT_HOST_FAILED_ACTIVE_HC); /* new */
    pt_view_t *view2 = pt_view_new(c2->clusters, c2->nclusters);
    PT_CHECK_INT(pt_health_checker_update(hc, view2), 0);
    /* "down" left the view: not checked any more. Its host keeps its last verdict (should
     * the cluster come back while the host object lives, the verdict stands until the
     * first check). */
    PT_CHECK_INT(atomic_load(&down->hosts[0]->health), PT_HOST_FAILED_ACTIVE_HC);
    PT_CHECK_INT(atomic_load(&up2->hosts[0]->health), 0);
    base = pt_stats_value(attempts_up);
    wc.c = up2;
    wc.want_attempts = base + 4;
    ev_timer_start(w.loop, &poll);
    ev_timer_start(w.loop, &deadline);
    ev_run(w.loop, 0);
    ev_timer_stop(w.loop, &poll);
    ev_timer_stop(w.loop, &deadline);
    PT_CHECK_INT(atomic_load(&up2->hosts[0]->health), 0);
    PT_CHECK_INT(atomic_load(&up2->hosts[1]->health), 0); /* passed its first check */
    PT_CHECK_INT(pt_stats_gauge_value(healthy_up), 2);

    /* A version of "up" without health checks: checking stops, its hosts are usable. */
    atomic_fetch_or(&up2->hosts[1]->health, (uint32_t)PT_HOST_FAILED_ACTIVE_HC);
    char json3[1024];
    snprintf(json3, sizeof(json3),
             "{'static_resources':{'clusters':["
             "{'name':'up','load_assignment':{'cluster_name':'up','endpoints':[{'lb_endpoints':["
             "{'endpoint':{'hostname':'second','address':{'socket_address':{'address':'127.0.0.1',"
             "'port_value':%d}}}}]}]}}]}}",
             up_port);
    pt_boot_t *c3 = ACCEPTS(json3);
    PT_CHECK(c3 != NULL);
    pt_view_t *empty = pt_view_new(c3->clusters, c3->nclusters);
    PT_CHECK_INT(pt_health_checker_update(hc, empty), 0);
    PT_CHECK_INT(atomic_load(&up2->hosts[1]->health), 0);

    pt_health_checker_stop(hc);
    pt_conn_close_all(&w); /* the server's reaper frees closed probes; here we do it */
    pt_worker_dispose(&w);
    close(lfd);
    pt_view_unref(view);
    pt_view_unref(view2);
    pt_view_unref(empty);
    pt_boot_free(c);
    pt_boot_free(c2);
    pt_boot_free(c3);
    pt_health_checker_stop(NULL);
}

int main(void)
{
    if (pt_stats_thread_init() != 0)
        return 1;
    PT_RUN(test_defaults);
    PT_RUN(test_http_full);
    PT_RUN(test_tcp);
    PT_RUN(test_several_checks);
    PT_RUN(test_required);
    PT_RUN(test_values);
    PT_RUN(test_http_errors);
    PT_RUN(test_tcp_errors);
    PT_RUN(test_unsupported);
    PT_RUN(test_status_ranges);
    PT_RUN(test_tcp_match);
    PT_RUN(test_checker_lifecycle);
    PT_TEST_EXIT();
}
