/* Unit tests for proxy/formatter: every operator against one filled-in stream, the same with
 * nothing set ("-"), header fallback and truncation, START_TIME formats, Envoy's default
 * line, JSON formats (parsed back with jansson to check validity and types), compile errors
 * with their exact messages. */
#include "proxy/formatter.h"
#include "pt_test.h"

#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

static pt_arena_t arena;
static pt_http_headers_t req, resp, trl;
static pt_stream_info_t si;

/* 2026-11-29T17:42:00.623456Z */
#define START_WALL 1795974120623456ull
#define T0         5000000ull /* monotonic start */

static void fill(void)
{
    pt_arena_dispose(&arena);
    memset(&si, 0, sizeof(si));
    pt_http_headers_init(&req, &arena);
    pt_http_headers_init(&resp, &arena);
    pt_http_headers_init(&trl, &arena);
    pt_http_headers_add_str(&req, ":method", "POST");
    pt_http_headers_add_str(&req, ":path", "/api/v1/locations");
    pt_http_headers_add_str(&req, ":authority", "locations");
    pt_http_headers_add_str(&req, ":scheme", "http");
    pt_http_headers_add_str(&req, "User-Agent", "nsq2http");
    pt_http_headers_add_str(&req, "x-forwarded-for", "10.0.35.28");
    pt_http_headers_add_str(&req, "x-request-id", "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2");
    pt_http_headers_add_str(&req, "X-Multi", "first");
    pt_http_headers_add_str(&req, "x-multi", "second");
    pt_http_headers_add_str(&req, "x-empty", "");
    pt_http_headers_add_str(&resp, ":status", "204");
    pt_http_headers_add_str(&resp, "x-envoy-upstream-service-time", "100");
    pt_http_headers_add_str(&resp, "content-type", "application/json");
    pt_http_headers_add_str(&trl, "grpc-status", "0");
    pt_http_headers_add_str(&trl, "grpc-message", "all good");
    si.start_wall_us = START_WALL;
    si.start_mono_us = T0;
    si.first_upstream_tx_mono_us = T0 + 1999;    /* 1 ms */
    si.first_upstream_rx_mono_us = T0 + 13200;   /* 13 ms */
    si.last_downstream_tx_mono_us = T0 + 226900; /* 226 ms */
    si.end_mono_us = T0 + 226999;                /* 226 ms */
    si.request_headers = &req;
    si.response_headers = &resp;
    si.response_trailers = &trl;
    si.response_code = 204;
    si.response_code_details = "via_upstream";
    si.response_flags = PT_RF(UPSTREAM_CONNECTION_FAILURE) | PT_RF(UPSTREAM_RETRY_LIMIT_EXCEEDED);
    si.bytes_received = 154;
    si.bytes_sent = 0;
    si.protocol = "HTTP/2";
    si.upstream_host = "10.0.2.1:80";
    si.upstream_cluster = "locations_cluster";
    si.route_name = "locations_route";
    pt_addr_parse(&si.downstream_remote, "192.168.1.5", 54321);
    pt_addr_parse(&si.downstream_local, "10.0.0.1", 10000);
    pt_addr_parse(&si.upstream_local, "fd00::1", 40000);
    si.requested_server_name = "locations.example.com";
    si.downstream_peer_uri_san = "spiffe://cluster.local/ns/default/sa/client";
    si.downstream_local_uri_san = "spiffe://cluster.local/ns/default/sa/proxy";
    si.downstream_peer_subject = "CN=client,O=petrel";
    si.upstream_attempts = 2;
}

/* Compiles fmt (must succeed) and renders it against s into a static string. */
static const char *render(const char *fmt, const pt_stream_info_t *s, unsigned flags)
{
    static char out[4096];
    char err[256];
    pt_format_t *f = pt_format_compile_ex(&arena, fmt, flags, err, sizeof(err));
    if (f == NULL) {
        snprintf(out, sizeof(out), "COMPILE ERROR: %s", err);
        return out;
    }
    char *str = pt_format_render_str(f, s, &arena);
    snprintf(out, sizeof(out), "%s", str);
    return out;
}

/* Compile error message for fmt, or "(compiled)". */
static const char *compile_err(const char *fmt)
{
    static char err[256];
    if (pt_format_compile(&arena, fmt, err, sizeof(err)) != NULL)
        return "(compiled)";
    return err;
}

typedef struct {
    const char *fmt, *want;
} case_t;

static void test_every_operator(void)
{
    fill();
    char host[256];
    gethostname(host, sizeof(host));
    host[sizeof(host) - 1] = '\0';
    const case_t cases[] = {
        {"%START_TIME%", "2026-11-29T17:42:00.623Z"},
        {"%REQ(:METHOD)%", "POST"},
        {"%REQUEST_HEADER(:PATH)%", "/api/v1/locations"},
        {"%REQ(user-agent)%", "nsq2http"},
        {"%REQ(USER-AGENT)%", "nsq2http"},
        {"%RESP(CONTENT-TYPE)%", "application/json"},
        {"%RESPONSE_HEADER(:status)%", "204"},
        {"%TRAILER(GRPC-STATUS)%", "0"},
        {"%RESPONSE_TRAILER(grpc-message)%", "all good"},
        {"%RESPONSE_CODE%", "204"},
        {"%RESPONSE_CODE_DETAILS%", "via_upstream"},
        {"%RESPONSE_FLAGS%", "UF,URX"},
        {"%BYTES_RECEIVED%", "154"},
        {"%BYTES_SENT%", "0"},
        {"%DURATION%", "226"},
        {"%REQUEST_DURATION%", "1"},
        {"%RESPONSE_DURATION%", "13"},
        {"%RESPONSE_TX_DURATION%", "213"},
        {"%UPSTREAM_HOST%", "10.0.2.1:80"},
        {"%UPSTREAM_REMOTE_ADDRESS%", "10.0.2.1:80"},
        {"%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.2.1"},
        {"%UPSTREAM_REMOTE_PORT%", "80"},
        {"%UPSTREAM_CLUSTER%", "locations_cluster"},
        {"%UPSTREAM_LOCAL_ADDRESS%", "[fd00::1]:40000"},
        {"%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "fd00::1"},
        {"%UPSTREAM_LOCAL_PORT%", "40000"},
        {"%DOWNSTREAM_REMOTE_ADDRESS%", "192.168.1.5:54321"},
        {"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "192.168.1.5"},
        {"%DOWNSTREAM_REMOTE_PORT%", "54321"},
        {"%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "192.168.1.5:54321"},
        {"%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%", "192.168.1.5"},
        {"%DOWNSTREAM_DIRECT_REMOTE_PORT%", "54321"},
        {"%DOWNSTREAM_LOCAL_ADDRESS%", "10.0.0.1:10000"},
        {"%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.0.1"},
        {"%DOWNSTREAM_LOCAL_PORT%", "10000"},
        {"%PROTOCOL%", "HTTP/2"},
        {"%ROUTE_NAME%", "locations_route"},
        {"%REQUESTED_SERVER_NAME%", "locations.example.com"},
        {"%DOWNSTREAM_PEER_URI_SAN%", "spiffe://cluster.local/ns/default/sa/client"},
        {"%DOWNSTREAM_LOCAL_URI_SAN%", "spiffe://cluster.local/ns/default/sa/proxy"},
        {"%DOWNSTREAM_PEER_SUBJECT%", "CN=client,O=petrel"},
        {"%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "2"},
        {"%HOSTNAME%", host},
        {"a %PROTOCOL% b %RESPONSE_CODE%%BYTES_RECEIVED% c", "a HTTP/2 b 204154 c"},
        {"", ""},
        {"plain", "plain"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        PT_CHECK_STR(render(cases[i].fmt, &si, 0), cases[i].want);
}

/* %GRPC_STATUS(...)%: from the trailers, else the head, else the HTTP status mapped; only
 * for a gRPC request; names as Envoy writes them; statuses gRPC does not name as numbers. */
static void test_grpc_status(void)
{
    fill();
    PT_CHECK_STR(render("%GRPC_STATUS%", &si, 0), "-"); /* not a gRPC request */
    pt_http_headers_add_str(&req, "content-type", "application/grpc+proto");
    PT_CHECK_STR(render("%GRPC_STATUS%|%GRPC_STATUS(SNAKE_STRING)%|%GRPC_STATUS(NUMBER)%|"
                        "%GRPC_STATUS_NUMBER%|%GRPC_STATUS(CAMEL_STRING)%",
                        &si, 0),
                 "Ok|OK|0|0|Ok");
    pt_http_headers_set(&trl, "grpc-status", "1");
    PT_CHECK_STR(render("%GRPC_STATUS%/%GRPC_STATUS(SNAKE_STRING)%", &si, 0),
                 "Canceled/CANCELLED");
    pt_http_headers_set(&trl, "grpc-status", "42"); /* user-defined: its number */
    PT_CHECK_STR(render("%GRPC_STATUS%/%GRPC_STATUS(SNAKE_STRING)%", &si, 0), "42/42");
    pt_http_headers_set(&trl, "grpc-status", "x");
    PT_CHECK_STR(render("%GRPC_STATUS%", &si, 0), "-");
    /* trailers-only: the head's; none at all: the HTTP status mapped (503: Unavailable) */
    si.response_trailers = NULL;
    pt_http_headers_add_str(&resp, "grpc-status", "16");
    PT_CHECK_STR(render("%GRPC_STATUS%", &si, 0), "Unauthenticated");
    pt_http_headers_init(&resp, &arena);
    si.response_code = 503;
    PT_CHECK_STR(render("%GRPC_STATUS% %GRPC_STATUS_NUMBER%", &si, 0), "Unavailable 14");
    si.response_code = 0;
    PT_CHECK_STR(render("%GRPC_STATUS%", &si, 0), "-");
    /* typed JSON: the number is a number, the names strings */
    si.response_code = 404;
    PT_CHECK_STR(render("%GRPC_STATUS_NUMBER% %GRPC_STATUS(SNAKE_STRING)%", &si, 0),
                 "12 UNIMPLEMENTED");
    PT_CHECK_STR(compile_err("%GRPC_STATUS(LOUD)%"),
                 "%GRPC_STATUS(LOUD)%: expected CAMEL_STRING, SNAKE_STRING or NUMBER");
    PT_CHECK_STR(compile_err("%GRPC_STATUS_NUMBER(NUMBER)%"),
                 "%GRPC_STATUS_NUMBER% takes no parameter");
}

static void test_missing_values(void)
{
    fill();
    pt_stream_info_t empty = {0};
    const char *dash[] = {"%START_TIME%",
                          "%REQ(:METHOD)%",
                          "%RESP(content-type)%",
                          "%TRAILER(grpc-status)%",
                          "%RESPONSE_CODE_DETAILS%",
                          "%DURATION%",
                          "%REQUEST_DURATION%",
                          "%RESPONSE_DURATION%",
                          "%RESPONSE_TX_DURATION%",
                          "%UPSTREAM_HOST%",
                          "%UPSTREAM_CLUSTER%",
                          "%UPSTREAM_LOCAL_ADDRESS%",
                          "%UPSTREAM_LOCAL_PORT%",
                          "%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                          "%UPSTREAM_REMOTE_PORT%",
                          "%DOWNSTREAM_REMOTE_ADDRESS%",
                          "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                          "%DOWNSTREAM_LOCAL_ADDRESS%",
                          "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
                          "%DOWNSTREAM_LOCAL_PORT%",
                          "%PROTOCOL%",
                          "%ROUTE_NAME%",
                          "%REQUESTED_SERVER_NAME%",
                          "%DOWNSTREAM_PEER_URI_SAN%",
                          "%DOWNSTREAM_LOCAL_URI_SAN%",
                          "%DOWNSTREAM_PEER_SUBJECT%",
                          NULL};
    for (int i = 0; dash[i] != NULL; i++) {
        PT_CHECK_STR(render(dash[i], &empty, 0), "-");
        PT_CHECK_STR(render(dash[i], NULL, 0), "-");
        PT_CHECK_STR(render(dash[i], &empty, PT_FORMAT_OMIT_EMPTY), "");
    }
    /* No flags is Envoy's "-" string, a value rather than an unset one. */
    PT_CHECK_STR(render("%RESPONSE_FLAGS%", &empty, PT_FORMAT_OMIT_EMPTY), "-");
    /* Counters are numbers even when nothing happened. */
    PT_CHECK_STR(render("%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT% "
                        "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                        &empty, 0),
                 "0 0 0 0");
    /* A stream that has not ended has no duration yet; an empty route name is not set. */
    pt_stream_info_t s = si;
    s.end_mono_us = 0;
    s.route_name = "";
    s.first_upstream_rx_mono_us = 0;
    PT_CHECK_STR(
        render("%DURATION% %ROUTE_NAME% %RESPONSE_DURATION% %RESPONSE_TX_DURATION%", &s, 0),
        "- - - -");
    /* A header that is present but empty is "", not "-" (Envoy's header formatter). */
    PT_CHECK_STR(render("[%REQ(x-empty)%]", &si, 0), "[]");
    PT_CHECK_STR(render("%PROTOCOL%|%REQ(x-none)%|%BYTES_SENT%", &empty, PT_FORMAT_OMIT_EMPTY),
                 "||0");
}

static void test_headers_fallback_truncation(void)
{
    fill();
    PT_CHECK_STR(render("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", &si, 0), "/api/v1/locations");
    pt_http_headers_add_str(&req, "x-envoy-original-path", "/original");
    PT_CHECK_STR(render("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", &si, 0), "/original");
    PT_CHECK_STR(render("%REQ(x-nope?x-nope-either)%", &si, 0), "-");
    PT_CHECK_STR(render("%REQ(USER-AGENT):3%", &si, 0), "nsq");
    PT_CHECK_STR(render("%REQ(USER-AGENT):100%", &si, 0), "nsq2http");
    PT_CHECK_STR(render("%REQ(x-nope?USER-AGENT):4%", &si, 0), "nsq2");
    PT_CHECK_STR(render("%RESP(content-type):11%", &si, 0), "application");
    PT_CHECK_STR(render("%TRAILER(grpc-message):3%", &si, 0), "all");
    /* First value of a repeated header; Host is answered by :authority. */
    PT_CHECK_STR(render("%REQ(x-multi)%", &si, 0), "first");
    PT_CHECK_STR(render("%REQ(HOST)%", &si, 0), "locations");
    /* TCP sessions have no header maps. */
    pt_stream_info_t tcp = si;
    tcp.request_headers = tcp.response_headers = tcp.response_trailers = NULL;
    tcp.protocol = NULL;
    PT_CHECK_STR(render("%REQ(:METHOD)% %RESP(:status)% %TRAILER(x)% %PROTOCOL%", &tcp, 0),
                 "- - - -");
}

static void test_start_time(void)
{
    fill();
    const case_t cases[] = {
        {"%START_TIME%", "2026-11-29T17:42:00.623Z"},
        {"%START_TIME()%", "2026-11-29T17:42:00.623Z"},
        {"%START_TIME(%Y-%m-%dT%H:%M:%S%z)%", "2026-11-29T17:42:00+0000"},
        {"%START_TIME(%Y/%m/%d)%", "2026/11/29"},
        {"%START_TIME(%s)%", "1795974120"},
        {"%START_TIME(%s.%3f)%", "1795974120.623"},
        {"%START_TIME(%s.%6f)%", "1795974120.623456"},
        {"%START_TIME(%s.%9f)%", "1795974120.623456000"},
        {"%START_TIME(%f)%", "623456000"},
        {"%START_TIME(%1f)%", "6"},
        {"%START_TIME(%H:%M:%E3S)%", "17:42:00.623"},
        {"%START_TIME(%Y-%m-%dT%H:%M:%S%Ez)%", "2026-11-29T17:42:00+00:00"},
        {"%START_TIME(%H%%)%", "17%"},
        {"%START_TIME(at %H h)% then %START_TIME(%M)%", "at 17 h then 42"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        PT_CHECK_STR(render(cases[i].fmt, &si, 0), cases[i].want);
}

/* START_TIME's own UTC conversion agrees with libc's gmtime_r + strftime, leap days and
 * century years included. */
static void test_start_time_matches_libc(void)
{
    fill();
    const char *spec = "%Y-%m-%d %H:%M:%S %j %a %u";
    char fmt[64];
    snprintf(fmt, sizeof(fmt), "%%START_TIME(%s)%%", spec);
    char err[128];
    pt_format_t *f = pt_format_compile(&arena, fmt, err, sizeof(err));
    PT_CHECK(f != NULL);
    const int64_t fixed[] = {0,          59,         86399,       86400,      951782400,
                             951868799,  951868800,  4107542400,  4107542399, 1795974120,
                             1709164800, 1709251199, 253402300799};
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 2000; i++) {
        int64_t sec;
        if (i < (int)(sizeof(fixed) / sizeof(fixed[0]))) {
            sec = fixed[i];
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sec = (int64_t)(x % 253402300800ull); /* up to 9999-12-31 */
        }
        pt_stream_info_t s = {0};
        s.start_wall_us = (uint64_t)sec * 1000000 + 1;
        char *got = pt_format_render_str(f, &s, &arena);
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        char want[64];
        strftime(want, sizeof(want), spec, &tm);
        PT_CHECK_STR(got, want);
    }
    pt_stream_info_t s = {0};
    s.start_wall_us = 951868800ull * 1000000 + 7000; /* 2000-03-01 */
    PT_CHECK_STR(render("%START_TIME%", &s, 0), "2000-03-01T00:00:00.007Z");
    s.start_wall_us = 1000000; /* 1970-01-01T00:00:01 */
    PT_CHECK_STR(render("%START_TIME%", &s, 0), "1970-01-01T00:00:01.000Z");
}

static void test_default_format(void)
{
    fill();
    PT_CHECK_STR(render(PT_FORMAT_DEFAULT, &si, 0),
                 "[2026-11-29T17:42:00.623Z] \"POST /api/v1/locations HTTP/2\" 204 UF,URX 154 0 "
                 "226 100 \"10.0.35.28\" \"nsq2http\" \"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2\" "
                 "\"locations\" \"10.0.2.1:80\"\n");
    pt_stream_info_t empty = {0};
    PT_CHECK_STR(render(PT_FORMAT_DEFAULT, &empty, 0),
                 "[-] \"- - -\" 0 - 0 0 - - \"-\" \"-\" \"-\" \"-\" \"-\"\n");
}

static void test_percent_and_constants(void)
{
    fill();
    char err[128];
    PT_CHECK_STR(render("100%% done", &si, 0), "100% done");
    PT_CHECK_STR(render("%%%PROTOCOL%%%", &si, 0), "%HTTP/2%");
    PT_CHECK_STR(render("%%%%", &si, 0), "%%");
    pt_format_t *f = pt_format_compile(&arena, "x-%%-y", err, sizeof(err));
    PT_CHECK(f != NULL);
    PT_CHECK(pt_format_is_constant(f));
    PT_CHECK(!pt_format_is_json(f));
    PT_CHECK_STR(pt_format_render_str(f, NULL, &arena), "x-%-y");
    f = pt_format_compile(&arena, "%PROTOCOL%", err, sizeof(err));
    PT_CHECK(f != NULL && !pt_format_is_constant(f));
    /* HOSTNAME and ENVIRONMENT are resolved once, at compile time. */
    setenv("PT_TEST_FMT_VAR", "from-env", 1);
    f = pt_format_compile(&arena, "%HOSTNAME% %ENVIRONMENT(PT_TEST_FMT_VAR)%", err, sizeof(err));
    PT_CHECK(f != NULL && pt_format_is_constant(f));
    setenv("PT_TEST_FMT_VAR", "changed", 1);
    char host[256];
    gethostname(host, sizeof(host));
    host[sizeof(host) - 1] = '\0';
    char want[300];
    snprintf(want, sizeof(want), "%s from-env", host);
    PT_CHECK_STR(pt_format_render_str(f, &si, &arena), want);
    unsetenv("PT_TEST_FMT_VAR");
    PT_CHECK_STR(render("%ENVIRONMENT(PT_TEST_FMT_NOT_SET)%", &si, 0), "-");
    setenv("PT_TEST_FMT_VAR", "abcdef", 1);
    PT_CHECK_STR(render("%ENVIRONMENT(PT_TEST_FMT_VAR):3%", &si, 0), "abc");
    unsetenv("PT_TEST_FMT_VAR");
}

static void test_unique_id(void)
{
    fill();
    char err[128];
    pt_format_t *f = pt_format_compile(&arena, "%UNIQUE_ID%", err, sizeof(err));
    PT_CHECK(f != NULL);
    char *a = pt_format_render_str(f, &si, &arena);
    char *b = pt_format_render_str(f, NULL, &arena);
    PT_CHECK_INT(strlen(a), 36);
    PT_CHECK(strcmp(a, b) != 0);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            PT_CHECK(a[i] == '-');
        else
            PT_CHECK(strchr("0123456789abcdef", a[i]) != NULL);
    }
    PT_CHECK(a[14] == '4');                  /* version */
    PT_CHECK(strchr("89ab", a[19]) != NULL); /* variant */
}

static void test_render_appends(void)
{
    fill();
    char err[128];
    pt_format_t *f = pt_format_compile(&arena, "%RESPONSE_CODE%\n", err, sizeof(err));
    PT_CHECK(f != NULL);
    pt_buf_t b = {0};
    pt_buf_append_str(&b, "head:");
    pt_format_render(f, &si, &b);
    pt_format_render(f, &si, &b);
    size_t n = pt_buf_len(&b);
    PT_CHECK_MEM(pt_buf_pullup(&b, n), n, "head:204\n204\n", 13);
    pt_buf_dispose(&b);
}

static void test_compile_errors(void)
{
    fill();
    const case_t cases[] = {
        {"%FOO%", "unknown command operator \"%FOO%\""},
        {"a %REQUEST_METHOD% b", "unknown command operator \"%REQUEST_METHOD%\""},
        {"%FILTER_STATE(k)%", "command operator \"%FILTER_STATE%\" is not supported"},
        {"%DYNAMIC_METADATA%", "%DYNAMIC_METADATA% needs a metadata namespace"},
        {"%CLUSTER_METADATA(:k)%", "%CLUSTER_METADATA(:k)%: empty namespace or key"},
        {"%METADATA(NODE:ns)%", "%METADATA(NODE:ns)%: type \"NODE\" is not supported (DYNAMIC, "
                                "CLUSTER, ROUTE, UPSTREAM_HOST, VIRTUAL_HOST or "
                                "LISTENER)"},
        {"%REQ()%", "%REQ()% needs a header name"},
        {"%REQ%", "%REQ% needs a header name"},
        {"%RESP()%", "%RESP()% needs a header name"},
        {"%TRAILER%", "%TRAILER% needs a header name"},
        {"%REQ(a?b?c)%", "%REQ(a?b?c)%: more than one fallback header"},
        {"%REQ(a?)%", "%REQ(a?)% needs a header name on both sides of \"?\""},
        {"%REQ(?b)%", "%REQ(?b)% needs a header name on both sides of \"?\""},
        {"%REQ(x):0%", "%REQ%: length must be at least 1"},
        {"%REQ(x):99999999999%", "%REQ%: length is too large"},
        {"%REQ(x):%", "%REQ%: \":\" must be followed by a length"},
        {"%PROTOCOL(x)%", "%PROTOCOL% takes no parameter"},
        {"%PROTOCOL:5%", "%PROTOCOL% takes no length"},
        {"%START_TIME:5%", "%START_TIME% takes no length"},
        {"%ENVIRONMENT()%", "%ENVIRONMENT()% needs a variable name"},
        {"%REQ(x", "command operator \"%REQ(\" has no closing \")\""},
        {"100%", "stray \"%\" at position 3 (write %% for a literal percent)"},
        {"50% off", "stray \"%\" at position 2 (write %% for a literal percent)"},
        {"%protocol%", "stray \"%\" at position 0 (write %% for a literal percent)"},
        {"%PROTOCOL", "command operator \"%PROTOCOL\" at position 0 is not closed by \"%\""},
        {"x %PROTOCOL x", "command operator \"%PROTOCOL\" at position 2 is not closed by \"%\""},
        {"%REQ(a) %", "command operator \"%REQ(a)\" at position 0 is not closed by \"%\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        PT_CHECK_STR(compile_err(cases[i].fmt), cases[i].want);
}

/* ---- JSON ------------------------------------------------------------------------- */

static json_t *render_json(const char *spec, unsigned flags, const pt_stream_info_t *s, char *line,
                           size_t linelen)
{
    char err[256];
    json_error_t je;
    json_t *obj = json_loads(spec, JSON_PRESERVE_ORDER, &je);
    if (obj == NULL) {
        fprintf(stderr, "bad test spec: %s\n", je.text);
        return NULL;
    }
    pt_format_t *f = pt_format_compile_json_ex(&arena, obj, flags, err, sizeof(err));
    json_decref(obj);
    if (f == NULL) {
        fprintf(stderr, "compile: %s\n", err);
        return NULL;
    }
    char *str = pt_format_render_str(f, s, &arena);
    snprintf(line, linelen, "%s", str);
    size_t n = strlen(str);
    if (n == 0 || str[n - 1] != '\n' || strchr(str, '\n') != str + n - 1)
        return NULL; /* exactly one line */
    return json_loads(str, 0, &je);
}

static void test_json_typed(void)
{
    fill();
    char line[4096];
    json_t *j =
        render_json("{\"status\": \"%RESPONSE_CODE%\", \"bytes_sent\": \"%BYTES_SENT%\","
                    " \"bytes_received\": \"%BYTES_RECEIVED%\", \"duration\": \"%DURATION%\","
                    " \"port\": \"%DOWNSTREAM_LOCAL_PORT%\","
                    " \"attempts\": \"%UPSTREAM_REQUEST_ATTEMPT_COUNT%\","
                    " \"method\": \"%REQ(:METHOD)%\", \"missing\": \"%REQ(x-nope)%\","
                    " \"no_route\": \"%ROUTE_NAME%\", \"empty\": \"%REQ(x-empty)%\","
                    " \"time\": \"%START_TIME%\", \"line\": \"%REQ(:METHOD)% %REQ(:PATH)%\","
                    " \"mixed_missing\": \"%REQ(x-nope)%!\", \"lit\": \"just text\","
                    " \"pct\": \"100%%\", \"num\": 7, \"real\": 1.5, \"flag\": true,"
                    " \"nothing\": null, \"nested\": {\"cluster\": \"%UPSTREAM_CLUSTER%\","
                    " \"code\": \"%RESPONSE_CODE%\"}, \"list\": [\"%PROTOCOL%\", 1,"
                    " \"%REQ(x-nope)%\"], \"duration_text\": \"%DURATION%.0\"}",
                    0, &si, line, sizeof(line));
    PT_CHECK(j != NULL);
    PT_CHECK(json_is_integer(json_object_get(j, "status")));
    PT_CHECK_INT(json_integer_value(json_object_get(j, "status")), 204);
    PT_CHECK_INT(json_integer_value(json_object_get(j, "bytes_sent")), 0);
    PT_CHECK_INT(json_integer_value(json_object_get(j, "bytes_received")), 154);
    PT_CHECK_INT(json_integer_value(json_object_get(j, "duration")), 226);
    PT_CHECK_INT(json_integer_value(json_object_get(j, "port")), 10000);
    PT_CHECK_INT(json_integer_value(json_object_get(j, "attempts")), 2);
    PT_CHECK_STR(json_string_value(json_object_get(j, "method")), "POST");
    PT_CHECK(json_is_null(json_object_get(j, "missing")));
    PT_CHECK_STR(json_string_value(json_object_get(j, "no_route")), "locations_route");
    PT_CHECK_STR(json_string_value(json_object_get(j, "empty")), "");
    PT_CHECK_STR(json_string_value(json_object_get(j, "time")), "2026-11-29T17:42:00.623Z");
    PT_CHECK_STR(json_string_value(json_object_get(j, "line")), "POST /api/v1/locations");
    PT_CHECK_STR(json_string_value(json_object_get(j, "mixed_missing")), "-!");
    PT_CHECK_STR(json_string_value(json_object_get(j, "lit")), "just text");
    PT_CHECK_STR(json_string_value(json_object_get(j, "pct")), "100%");
    PT_CHECK_INT(json_integer_value(json_object_get(j, "num")), 7);
    PT_CHECK(json_real_value(json_object_get(j, "real")) == 1.5);
    PT_CHECK(json_is_true(json_object_get(j, "flag")));
    PT_CHECK(json_is_null(json_object_get(j, "nothing")));
    json_t *nested = json_object_get(j, "nested");
    PT_CHECK_STR(json_string_value(json_object_get(nested, "cluster")), "locations_cluster");
    PT_CHECK_INT(json_integer_value(json_object_get(nested, "code")), 204);
    json_t *list = json_object_get(j, "list");
    PT_CHECK_INT(json_array_size(list), 3);
    PT_CHECK_STR(json_string_value(json_array_get(list, 0)), "HTTP/2");
    PT_CHECK_INT(json_integer_value(json_array_get(list, 1)), 1);
    PT_CHECK(json_is_null(json_array_get(list, 2)));
    PT_CHECK_STR(json_string_value(json_object_get(j, "duration_text")), "226.0");
    json_decref(j);
    /* Keys come out in config order, compactly. */
    PT_CHECK(strncmp(line, "{\"status\":204,\"bytes_sent\":0,", 29) == 0);
}

static void test_json_options(void)
{
    fill();
    char line[2048];
    pt_stream_info_t empty = {0};
    /* omit_empty_values: keys of unset values are left out. */
    json_t *j = render_json("{\"a\": \"%PROTOCOL%\", \"b\": \"%REQ(x)%\", \"c\": \"%BYTES_SENT%\","
                            " \"d\": \"x%REQ(x)%y\"}",
                            PT_FORMAT_OMIT_EMPTY, &empty, line, sizeof(line));
    PT_CHECK(j != NULL);
    PT_CHECK_STR(line, "{\"c\":0,\"d\":\"xy\"}\n");
    json_decref(j);
    j = render_json("{\"a\": \"%PROTOCOL%\"}", PT_FORMAT_OMIT_EMPTY, &empty, line, sizeof(line));
    PT_CHECK(j != NULL);
    PT_CHECK_STR(line, "{}\n");
    json_decref(j);
    /* sort_properties */
    j = render_json("{\"z\": 1, \"a\": {\"y\": 2, \"b\": 3}, \"m\": \"%RESPONSE_CODE%\"}",
                    PT_FORMAT_JSON_SORT, &si, line, sizeof(line));
    PT_CHECK(j != NULL);
    PT_CHECK_STR(line, "{\"a\":{\"b\":3,\"y\":2},\"m\":204,\"z\":1}\n");
    json_decref(j);
    /* The deprecated FileAccessLog.json_format: strings everywhere, "-" for unset. */
    j = render_json(
        "{\"code\": \"%RESPONSE_CODE%\", \"miss\": \"%REQ(x)%\", \"m\": \"%REQ(:METHOD)%\"}",
        PT_FORMAT_JSON_STRINGS, &si, line, sizeof(line));
    PT_CHECK(j != NULL);
    PT_CHECK_STR(line, "{\"code\":\"204\",\"miss\":\"-\",\"m\":\"POST\"}\n");
    json_decref(j);
}

static void test_json_escaping(void)
{
    fill();
    char line[2048];
    pt_http_headers_add_str(&req, "x-evil", "a\"b\\c\nd\te\x01 caf\xc3\xa9 \xff\xfe end");
    json_t *j = render_json("{\"v\": \"%REQ(x-evil)%\", \"w\": \"<%REQ(x-evil)%>\","
                            " \"k\\\"ey\": \"q\\\"uote\"}",
                            0, &si, line, sizeof(line));
    PT_CHECK(j != NULL);
    PT_CHECK_STR(json_string_value(json_object_get(j, "v")),
                 "a\"b\\c\nd\te\x01 caf\xc3\xa9 \xc3\xbf\xc3\xbe end");
    PT_CHECK_STR(json_string_value(json_object_get(j, "w")),
                 "<a\"b\\c\nd\te\x01 caf\xc3\xa9 \xc3\xbf\xc3\xbe end>");
    PT_CHECK_STR(json_string_value(json_object_get(j, "k\"ey")), "q\"uote");
    json_decref(j);
}

static void test_json_errors(void)
{
    fill();
    char err[256];
    json_t *obj =
        json_loads("{\"ok\": \"%PROTOCOL%\", \"inner\": {\"status\": \"%FOO%\"}}", 0, NULL);
    PT_CHECK(pt_format_compile_json(&arena, obj, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "\"inner.status\": unknown command operator \"%FOO%\"");
    json_decref(obj);
    obj = json_loads("{\"l\": [1, \"%REQ()%\"]}", 0, NULL);
    PT_CHECK(pt_format_compile_json(&arena, obj, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "\"l[1]\": %REQ()% needs a header name");
    json_decref(obj);
    obj = json_loads("[\"%PROTOCOL%\"]", 0, NULL);
    PT_CHECK(pt_format_compile_json(&arena, obj, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "a JSON format must be an object");
    json_decref(obj);
    obj = json_loads("{\"a\": \"%HOSTNAME%\", \"b\": \"x\"}", 0, NULL);
    pt_format_t *f = pt_format_compile_json(&arena, obj, err, sizeof(err));
    PT_CHECK(f != NULL && pt_format_is_json(f) && pt_format_is_constant(f));
    json_decref(obj);
}

int main(void)
{
    PT_RUN(test_every_operator);
    PT_RUN(test_grpc_status);
    PT_RUN(test_missing_values);
    PT_RUN(test_headers_fallback_truncation);
    PT_RUN(test_start_time);
    PT_RUN(test_start_time_matches_libc);
    PT_RUN(test_default_format);
    PT_RUN(test_percent_and_constants);
    PT_RUN(test_unique_id);
    PT_RUN(test_render_appends);
    PT_RUN(test_compile_errors);
    PT_RUN(test_json_typed);
    PT_RUN(test_json_options);
    PT_RUN(test_json_escaping);
    PT_RUN(test_json_errors);
    pt_arena_dispose(&arena);
    pt_buf_pool_trim();
    PT_TEST_EXIT();
}
