/* Unit tests for proxy/config_reader: duration parsing, the typed getters and their exact
 * error messages, the Any (typed_config) entry, and loading files by extension. */
#include "proxy/config_reader.h"
#include "pt_test.h"
#include "pt_test_json.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#define ERRORS_ARE(r, ...) PT_CHECK(errors_are((r), (const char *const[]){__VA_ARGS__, NULL}))
#define NO_ERRORS(r)       PT_CHECK(errors_are((r), (const char *const[]){NULL}))

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---- pt_duration_parse_ms --------------------------------------------------------- */

static void test_duration_valid(void)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } cases[] = {
        {"0s", 0},
        {"1s", 1000},
        {"0.25s", 250},
        {"1.5s", 1500},
        {"0.0001s", 1},        /* sub-millisecond rounds up: a timeout is never zero */
        {"0.000000001s", 1},
        {"0.001s", 1},
        {"0.0011s", 2},
        {"10.000000001s", 10001},
        {"60s", 60000},
        {"3600.000s", 3600000},
        {"315576000000s", 315576000000000ull}, /* proto Duration's maximum */
        {"315576000000.999999999s", 315576000001000ull},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 12345;
        if (pt_duration_parse_ms(cases[i].s, &ms) != 0 || ms != cases[i].ms) {
            fprintf(stderr, "  duration \"%s\" -> %llu\n", cases[i].s, (unsigned long long)ms);
            PT_CHECK(0);
        }
    }
}

static void test_duration_invalid(void)
{
    static const char *const cases[] = {
        "",  "s",  "1",  "1.s",  ".5s", "-1s", "+1s", "1m", "1ms", "1S", "1.0000000001s",
        " 1s", "1s ", "1 s", "1.5.s", "0x10s", "1e3s", "315576000001s", "99999999999999999999999s",
        "1s\n", "inf", "nan", NULL};
    for (int i = 0; cases[i] != NULL; i++) {
        uint64_t ms = 777;
        if (pt_duration_parse_ms(cases[i], &ms) != -1 || ms != 777) {
            fprintf(stderr, "  duration \"%s\" accepted (%llu)\n", cases[i],
                    (unsigned long long)ms);
            PT_CHECK(0);
        }
    }
}

/* ---- typed getters ------------------------------------------------------------- */

static void test_duration_getter(void)
{
    json_t *root = J("{'a': '1.5s', 'b': {'seconds': 2, 'nanos': 500000000}, 'c': {'seconds': 3},"
                     " 'd': {'nanos': 1}, 'e': null, 'f': 'abc', 'g': 5, 'h': {'seconds': -1},"
                     " 'i': {'seconds': 1, 'nanos': 1000000000}, 'j': {'seconds': 1, 'x': 2},"
                     " 'k': {'seconds': 9223372036854775807}, 'l': {'seconds': 1.5},"
                     " 'm': {'seconds': 315576000000}, 'n': '-1s'}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    uint64_t ms;
    PT_CHECK_INT(pt_cfg_duration_ms(&r, "a", &ms, 9), 1);
    PT_CHECK_INT(ms, 1500);
    PT_CHECK_INT(pt_cfg_duration_ms(&r, "b", &ms, 9), 1);
    PT_CHECK_INT(ms, 2500);
    PT_CHECK_INT(pt_cfg_duration_ms(&r, "c", &ms, 9), 1);
    PT_CHECK_INT(ms, 3000);
    PT_CHECK_INT(pt_cfg_duration_ms(&r, "d", &ms, 9), 1);
    PT_CHECK_INT(ms, 1);
    PT_CHECK_INT(pt_cfg_duration_ms(&r, "e", &ms, 9), 0); /* null = absent: default */
    PT_CHECK_INT(ms, 9);
    PT_CHECK_INT(pt_cfg_duration_ms(&r, "absent", &ms, 10), 0);
    PT_CHECK_INT(ms, 10);
    PT_CHECK_INT(pt_cfg_duration_ms(&r, "m", &ms, 9), 1);
    PT_CHECK_INT(ms, 315576000000000ull);
    static const char *const bad[] = {"f", "g", "h", "i", "j", "k", "l", "n", NULL};
    for (int i = 0; bad[i] != NULL; i++) {
        PT_CHECK_INT(pt_cfg_duration_ms(&r, bad[i], &ms, 11), -1);
        PT_CHECK_INT(ms, 11); /* an invalid value leaves the default */
    }
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "f: \"abc\" is not a duration (expected a string like \"1.5s\")",
               "g: 5 is not a duration (expected a string like \"1.5s\")",
               "h: {\"seconds\":-1} is not a duration (expected a string like \"1.5s\")",
               "i: {\"seconds\":1,\"nanos\":1000000000} is not a duration (expected a string "
               "like \"1.5s\")",
               "j: {\"seconds\":1,\"x\":2} is not a duration (expected a string like \"1.5s\")",
               /* would overflow uint64 milliseconds: beyond proto Duration's range */
               "k: {\"seconds\":9223372036854775807} is not a duration (expected a string like "
               "\"1.5s\")",
               "l: {\"seconds\":1.5} is not a duration (expected a string like \"1.5s\")",
               "n: \"-1s\" is not a duration (expected a string like \"1.5s\")");
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void test_uint_getter(void)
{
    json_t *root = J("{'a': 8080, 'b': '8080', 'c': 70000, 'd': -1, 'e': '-1', 'f': 5.5,"
                     " 'g': true, 'h': '18446744073709551615', 'i': '18446744073709551616',"
                     " 'j': ' 5', 'k': '5x', 'l': '', 'm': {'value': 7}, 'n': null, 'o': 0,"
                     " 'p': '0012', 'q': [1], 'r': {'value': 'x'}}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    uint64_t v;
    PT_CHECK_INT(pt_cfg_uint(&r, "a", &v, 1, 0, 65535), 1);
    PT_CHECK_INT(v, 8080);
    PT_CHECK_INT(pt_cfg_uint(&r, "b", &v, 1, 0, 65535), 1); /* proto3: integers as strings */
    PT_CHECK_INT(v, 8080);
    PT_CHECK_INT(pt_cfg_uint(&r, "c", &v, 1, 0, 65535), -1);
    PT_CHECK_INT(v, 1);
    PT_CHECK_INT(pt_cfg_uint(&r, "d", &v, 1, 0, 65535), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "e", &v, 1, 0, 65535), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "f", &v, 1, 0, 65535), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "g", &v, 1, 0, 65535), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "h", &v, 1, 0, UINT64_MAX), 1);
    PT_CHECK(v == UINT64_MAX);
    PT_CHECK_INT(pt_cfg_uint(&r, "i", &v, 1, 0, UINT64_MAX), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "j", &v, 1, 0, 100), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "k", &v, 1, 0, 100), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "l", &v, 1, 0, 100), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "m", &v, 1, 0, 100), 1); /* UInt32Value wrapper */
    PT_CHECK_INT(v, 7);
    PT_CHECK_INT(pt_cfg_uint(&r, "n", &v, 3, 0, 100), 0);
    PT_CHECK_INT(v, 3);
    PT_CHECK_INT(pt_cfg_uint(&r, "o", &v, 3, 1, 100), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "p", &v, 3, 0, 100), 1);
    PT_CHECK_INT(v, 12);
    PT_CHECK_INT(pt_cfg_uint(&r, "q", &v, 3, 0, 100), -1);
    PT_CHECK_INT(pt_cfg_uint(&r, "r", &v, 3, 0, 100), -1);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "c: 70000 is out of range [0, 65535]",
               "d: -1 is not a non-negative integer",
               "e: \"-1\" is not a non-negative integer",
               "f: 5.5 is not a non-negative integer",
               "g: true is not a non-negative integer",
               "i: \"18446744073709551616\" is not a non-negative integer",
               "j: \" 5\" is not a non-negative integer",
               "k: \"5x\" is not a non-negative integer",
               "l: \"\" is not a non-negative integer",
               "o: 0 is out of range [1, 100]",
               "q: [1] is not a non-negative integer",
               "r: \"x\" is not a non-negative integer");
    pt_cfg_dispose(&r);
    json_decref(root);
}

/* pt_cfg_int64: proto3 JSON int64, a number or a decimal string. */
static void test_int64_getter(void)
{
    json_t *root = J("{'a': -5, 'b': '-9223372036854775808', 'c': '9223372036854775807',"
                     " 'd': '9223372036854775808', 'e': ' 1', 'f': '1x', 'g': 1.5, 'h': '',"
                     " 'i': null, 'j': true}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    int64_t v = 7;
    PT_CHECK_INT(pt_cfg_int64(&r, "a", &v), 1);
    PT_CHECK_INT(v, -5);
    PT_CHECK_INT(pt_cfg_int64(&r, "b", &v), 1);
    PT_CHECK(v == INT64_MIN);
    PT_CHECK_INT(pt_cfg_int64(&r, "c", &v), 1);
    PT_CHECK(v == INT64_MAX);
    PT_CHECK_INT(pt_cfg_int64(&r, "d", &v), -1); /* overflow */
    PT_CHECK_INT(v, 0);
    PT_CHECK_INT(pt_cfg_int64(&r, "e", &v), -1);
    PT_CHECK_INT(pt_cfg_int64(&r, "f", &v), -1);
    PT_CHECK_INT(pt_cfg_int64(&r, "g", &v), -1);
    PT_CHECK_INT(pt_cfg_int64(&r, "h", &v), -1);
    PT_CHECK_INT(pt_cfg_int64(&r, "i", &v), 0);
    PT_CHECK_INT(pt_cfg_int64(&r, "absent", &v), 0);
    PT_CHECK_INT(v, 0);
    PT_CHECK_INT(pt_cfg_int64(&r, "j", &v), -1);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "d: \"9223372036854775808\" is not an integer", "e: \" 1\" is not an integer",
               "f: \"1x\" is not an integer", "g: 1.5 is not an integer",
               "h: \"\" is not an integer", "j: true is not an integer");
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void test_bool_string_double_getters(void)
{
    json_t *root = J("{'a': true, 'b': {'value': false}, 'bv': {'value': true}, 'c': 'true',"
                     " 'd': 1, 'e': null,"
                     " 'f': {'value': true, 'x': 1}, 's': 'str', 't': 5, 'u': '',"
                     " 'v': 0.5, 'w': 2, 'x': '0.5', 'y': 1.5, 'z': 'a\\nb\\u0022c'}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    int b;
    PT_CHECK_INT(pt_cfg_bool(&r, "a", &b, 0), 1);
    PT_CHECK_INT(b, 1);
    PT_CHECK_INT(pt_cfg_bool(&r, "b", &b, 1), 1); /* BoolValue wrapper */
    PT_CHECK_INT(b, 0);
    PT_CHECK_INT(pt_cfg_bool(&r, "bv", &b, 0), 1);
    PT_CHECK_INT(b, 1);
    PT_CHECK_INT(pt_cfg_bool(&r, "c", &b, 0), -1);
    PT_CHECK_INT(pt_cfg_bool(&r, "d", &b, 0), -1);
    PT_CHECK_INT(pt_cfg_bool(&r, "e", &b, 1), 0);
    PT_CHECK_INT(b, 1);
    PT_CHECK_INT(pt_cfg_bool(&r, "f", &b, 0), -1);
    const char *s;
    PT_CHECK_INT(pt_cfg_string(&r, "s", &s, NULL), 1);
    PT_CHECK_STR(s, "str");
    PT_CHECK_INT(pt_cfg_string(&r, "t", &s, "def"), -1);
    PT_CHECK_STR(s, "def");
    PT_CHECK_INT(pt_cfg_string(&r, "u", &s, NULL), 1);
    PT_CHECK_STR(s, "");
    PT_CHECK_INT(pt_cfg_string(&r, "absent", &s, "def"), 0);
    PT_CHECK_STR(s, "def");
    double d;
    PT_CHECK_INT(pt_cfg_double(&r, "v", &d, 0, 0, 1), 1);
    PT_CHECK(d == 0.5);
    PT_CHECK_INT(pt_cfg_double(&r, "w", &d, 0, 0, 100), 1); /* an integer is a number */
    PT_CHECK(d == 2.0);
    PT_CHECK_INT(pt_cfg_double(&r, "x", &d, 0, 0, 1), -1);
    PT_CHECK_INT(pt_cfg_double(&r, "y", &d, 0, 0, 1), -1);
    /* A string with a newline and a quote is rendered escaped: one error stays one line. */
    PT_CHECK_INT(pt_cfg_bool(&r, "z", &b, 0), -1);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "c: \"true\" is not a boolean", "d: 1 is not a boolean",
               "f: {\"value\":true,\"x\":1} is not a boolean", "t: 5 is not a string",
               "x: \"0.5\" is not a number", "y: 1.5 is out of range [0, 1]",
               "z: \"a\\nb\\\"c\" is not a boolean");
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void test_enum_getter(void)
{
    static const char *const values[] = {"ROUND_ROBIN", "LEAST_REQUEST", NULL};
    static const char *const known[] = {"MAGLEV", NULL};
    json_t *root = J("{'a': 'LEAST_REQUEST', 'b': 'MAGLEV', 'c': 'FASTEST', 'd': 1,"
                     " 'e': 'round_robin', 'f': 'maglev'}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    int v;
    PT_CHECK_INT(pt_cfg_enum(&r, "a", values, known, &v, 0), 1);
    PT_CHECK_INT(v, 1);
    PT_CHECK_INT(pt_cfg_enum(&r, "b", values, known, &v, 0), -1);
    PT_CHECK_INT(v, 0);
    PT_CHECK_INT(pt_cfg_enum(&r, "c", values, known, &v, 0), -1);
    PT_CHECK_INT(pt_cfg_enum(&r, "d", values, known, &v, 0), -1);
    /* Any case, as Envoy's JSON parser takes enum names. */
    PT_CHECK_INT(pt_cfg_enum(&r, "e", values, NULL, &v, 1), 1);
    PT_CHECK_INT(v, 0);
    PT_CHECK_INT(pt_cfg_enum(&r, "f", values, known, &v, 0), -1);
    PT_CHECK_INT(pt_cfg_enum(&r, "absent", values, NULL, &v, 1), 0);
    PT_CHECK_INT(v, 1);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "b: \"MAGLEV\" is not supported",
               "c: \"FASTEST\" is not a valid value (expected one of: ROUND_ROBIN, "
               "LEAST_REQUEST)",
               "d: 1 is not an enum name", "f: \"maglev\" is not supported");
    pt_cfg_dispose(&r);
    json_decref(root);
}

/* ---- objects, arrays, paths, unknown and unsupported fields ------------------------ */

/* A reader that knows which Envoy message it is reading reports every real field of it
 * that the code did not read as not supported, through nested messages, lists and Anys;
 * a name Envoy does not have stays unknown. */
static void test_fields_of_known_messages_are_not_supported(void)
{
    json_t *root = J("{'name': 'c', 'lrsServer': {'ads': {}}, 'typoField': 1,"
                     " 'circuit_breakers': {'thresholds': [{'priority': 'HIGH', 'trackRemaining': true,"
                     "   'bogus': 1}]},"
                     " 'transport_socket': {'name': 't', 'typed_config': {"
                     "   '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext', 'sni': 'a', 'max_session_keys': 2, 'nope': 1}}}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_cfg_set_message(&r, "envoy.config.cluster.v3.Cluster");
    const char *s;
    pt_cfg_string(&r, "name", &s, NULL);
    PT_CHECK_INT(pt_cfg_enter(&r, "circuit_breakers"), 1);
    PT_CHECK_INT(pt_cfg_array(&r, "thresholds", NULL), 1);
    PT_CHECK_INT(pt_cfg_enter_index(&r, 0), 1);
    pt_cfg_string(&r, "priority", &s, NULL);
    pt_cfg_leave(&r);
    pt_cfg_leave_array(&r);
    pt_cfg_leave(&r);
    PT_CHECK_INT(pt_cfg_enter(&r, "transport_socket"), 1);
    pt_cfg_string(&r, "name", &s, NULL);
    int rc;
    PT_CHECK(pt_cfg_enter_any(&r, "typed_config", &rc) != NULL);
    pt_cfg_string(&r, "sni", &s, NULL);
    pt_cfg_leave(&r);
    pt_cfg_leave(&r);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "circuit_breakers.thresholds[0].trackRemaining: field is not supported",
               "circuit_breakers.thresholds[0].bogus: unknown field",
               "transport_socket.typed_config.max_session_keys: field is not supported",
               "transport_socket.typed_config.nope: unknown field",
               "lrsServer: field is not supported", "typoField: unknown field");
    pt_cfg_dispose(&r);
    json_decref(root);

    /* A resource read where it sits in a response: its @type names the message. */
    root = J("{'@type': 'type.googleapis.com/envoy.config.listener.v3.Listener',"
             " 'name': 'l', 'enable_mptcp': true, 'wat': 1}");
    pt_cfg_init_at(&r, root, "resources[2]");
    (void)pt_cfg_get(&r, "@type");
    pt_cfg_string(&r, "name", &s, NULL);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "resources[2].enable_mptcp: field is not supported",
               "resources[2].wat: unknown field");
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void test_paths_and_unknown_fields(void)
{
    static const char *const unsupported[] = {"circuit_breakers", NULL};
    json_t *root = J("{'top': {'items': [{'x': 1, 'y': 2}, 'str', {'circuitBreakers': {}},"
                     " {'circuit_breakers': 1, 'deep': {'z': {}}}], 'k': 1}, 'extra': 1,"
                     " 'list': [1, 'a'], 'notobj': 3, 'notlist': {}}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    PT_CHECK_INT(pt_cfg_enter(&r, "top"), 1);
    PT_CHECK_STR(pt_cfg_path(&r), "top");
    int present;
    size_t n = pt_cfg_array(&r, "items", &present);
    PT_CHECK_INT(n, 4);
    PT_CHECK_INT(present, 1);
    PT_CHECK_STR(pt_cfg_path(&r), "top.items");
    uint64_t v;
    PT_CHECK_INT(pt_cfg_enter_index(&r, 0), 1);
    PT_CHECK_STR(pt_cfg_path(&r), "top.items[0]");
    pt_cfg_uint(&r, "x", &v, 0, 0, 10);
    pt_cfg_leave(&r); /* y: unknown */
    PT_CHECK_STR(pt_cfg_path(&r), "top.items");
    PT_CHECK_INT(pt_cfg_enter_index(&r, 1), -1);
    PT_CHECK_STR(pt_cfg_path(&r), "top.items");
    PT_CHECK_INT(pt_cfg_enter_index(&r, 2), 1);
    pt_cfg_unsupported(&r, unsupported);
    pt_cfg_leave(&r); /* circuitBreakers: not supported, named as written */
    PT_CHECK_INT(pt_cfg_enter_index(&r, 3), 1);
    pt_cfg_unsupported(&r, unsupported);
    PT_CHECK_INT(pt_cfg_enter(&r, "deep"), 1);
    PT_CHECK_STR(pt_cfg_path(&r), "top.items[3].deep");
    pt_cfg_leave(&r); /* z: unknown */
    pt_cfg_leave(&r);
    PT_CHECK_INT(pt_cfg_enter_index(&r, 4), 0); /* past the end */
    pt_cfg_leave_array(&r);
    PT_CHECK_STR(pt_cfg_path(&r), "top");
    pt_cfg_leave(&r); /* k: unknown */
    PT_CHECK_STR(pt_cfg_path(&r), "");

    /* Scalar arrays: elements addressed by index. */
    n = pt_cfg_array(&r, "list", &present);
    PT_CHECK_INT(n, 2);
    for (size_t i = 0; i < n; i++) {
        json_t *e = pt_cfg_index_value(&r, i);
        if (!json_is_integer(e)) {
            size_t saved = r.path_len;
            pt_cfg_push_index(&r, i);
            pt_cfg_error(&r, NULL, "is not a port");
            pt_cfg_pop_path(&r, saved);
        }
    }
    pt_cfg_leave_array(&r);
    PT_CHECK_INT(pt_cfg_enter(&r, "notobj"), -1);
    PT_CHECK_INT(pt_cfg_array(&r, "notlist", &present), 0);
    PT_CHECK_INT(present, 0);
    PT_CHECK_INT(pt_cfg_enter(&r, "absent"), 0);
    pt_cfg_finish(&r);
    PT_CHECK_INT(r.depth, 0);
    ERRORS_ARE(&r, "top.items[0].y: unknown field", "top.items[1]: \"str\" is not an object",
               "top.items[2].circuitBreakers: field is not supported",
               "top.items[3].deep.z: unknown field",
               "top.items[3].circuit_breakers: field is not supported",
               "top.k: unknown field", "list[1]: is not a port",
               "notobj: 3 is not an object", "notlist: {} is not a list",
               "extra: unknown field");
    char *all = pt_cfg_errors_joined(&r);
    PT_CHECK(all != NULL);
    PT_CHECK(strncmp(all, "top.items[0].y: unknown field\ntop.items[1]:", 43) == 0);
    PT_CHECK(all[strlen(all) - 1] == '\n');
    free(all);
    pt_cfg_dispose(&r);
    PT_CHECK_INT(r.nerrors, 0);
    PT_CHECK(r.errors == NULL);
    json_decref(root);
}

static void test_root_not_object(void)
{
    json_t *root = J("[1, 2]");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    const char *s;
    PT_CHECK_INT(pt_cfg_string(&r, "a", &s, NULL), 0);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "(root): the configuration must be an object");
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void test_camel_case(void)
{
    json_t *root = J("{'connectTimeout': '2s', 'lb_policy': 'X', 'lbPolicy': 'Y',"
                     " 'perConnectionBufferLimitBytes': '1024', 'some_thing': 1, 'someThing': 2}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    uint64_t ms, v;
    PT_CHECK_INT(pt_cfg_duration_ms(&r, "connect_timeout", &ms, 0), 1);
    PT_CHECK_INT(ms, 2000);
    PT_CHECK(pt_cfg_has(&r, "connect_timeout"));
    PT_CHECK(!pt_cfg_has(&r, "idle_timeout"));
    const char *s;
    PT_CHECK_INT(pt_cfg_string(&r, "lb_policy", &s, NULL), 1);
    PT_CHECK_STR(s, "X"); /* the snake_case spelling wins, after the error */
    PT_CHECK_INT(pt_cfg_uint(&r, "per_connection_buffer_limit_bytes", &v, 0, 0, UINT32_MAX), 1);
    PT_CHECK_INT(v, 1024);
    /* Reading a doubly-given field twice reports it once. */
    PT_CHECK(pt_cfg_get(&r, "some_thing") != NULL);
    PT_CHECK(pt_cfg_get(&r, "some_thing") != NULL);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "lb_policy: is given twice (as lb_policy and lbPolicy)",
               "some_thing: is given twice (as some_thing and someThing)");
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void test_enter_any(void)
{
    json_t *root = J("{'a': {'@type': 'type.googleapis.com/x.Y', 'f': 1, 'g': 2},"
                     " 'b': {'stat_prefix': 's', 'cluster': 'c'},"
                     " 'c': {'@type': 5, 'stat_prefix': 's'}, 'd': 'x', 'e': null}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    int rc;
    const char *t = pt_cfg_enter_any(&r, "a", &rc);
    PT_CHECK_INT(rc, 1);
    PT_CHECK_STR(t, "type.googleapis.com/x.Y");
    PT_CHECK_STR(pt_cfg_path(&r), "a");
    uint64_t v;
    pt_cfg_uint(&r, "f", &v, 0, 0, 10);
    pt_cfg_leave(&r); /* g: unknown */
    /* A missing or invalid @type is the one error: the other fields of an Any whose type is
     * unknown cannot be judged, so they are not also reported as unknown. */
    PT_CHECK(pt_cfg_enter_any(&r, "b", &rc) == NULL);
    PT_CHECK_INT(rc, -1);
    PT_CHECK_STR(pt_cfg_path(&r), "");
    PT_CHECK(pt_cfg_enter_any(&r, "c", &rc) == NULL);
    PT_CHECK_INT(rc, -1);
    PT_CHECK(pt_cfg_enter_any(&r, "d", &rc) == NULL);
    PT_CHECK_INT(rc, -1);
    PT_CHECK(pt_cfg_enter_any(&r, "e", &rc) == NULL);
    PT_CHECK_INT(rc, 0);
    PT_CHECK(pt_cfg_enter_any(&r, "absent", &rc) == NULL);
    PT_CHECK_INT(rc, 0);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "a.g: unknown field", "b.@type: is required", "c.@type: 5 is not a string",
               "d: \"x\" is not an object");
    pt_cfg_dispose(&r);
    json_decref(root);
}

/* pt_cfg_skip_rest: after an error that makes an object's other fields meaningless. */
static void test_skip_rest(void)
{
    json_t *root = J("{'a': {'@type': 'type.googleapis.com/unknown', 'f': 1}, 'b': 1}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    int rc;
    const char *t = pt_cfg_enter_any(&r, "a", &rc);
    PT_CHECK_STR(t, "type.googleapis.com/unknown");
    pt_cfg_error(&r, "@type", "\"%s\" is not supported", t);
    pt_cfg_skip_rest(&r);
    pt_cfg_leave(&r);
    pt_cfg_finish(&r); /* b is still reported: skipping applies to one object */
    ERRORS_ARE(&r, "a.@type: \"type.googleapis.com/unknown\" is not supported",
               "b: unknown field");
    pt_cfg_dispose(&r);
    json_decref(root);
}

/* pt_cfg_quote: a string as errors show it, escaped so one error stays one line. */
static void test_quote(void)
{
    char q[16];
    PT_CHECK_STR(pt_cfg_quote("a b", q, sizeof(q)), "\"a b\"");
    PT_CHECK_STR(pt_cfg_quote("", q, sizeof(q)), "\"\"");
    PT_CHECK_STR(pt_cfg_quote("x\r\n\"y", q, sizeof(q)), "\"x\\r\\n\\\"y\"");
    PT_CHECK_STR(pt_cfg_quote("0123456789abcdef", q, sizeof(q)), "\"0123456789abcd"); /* cut */
    PT_CHECK_STR(pt_cfg_quote("\xff", q, sizeof(q)), "\"?\""); /* not UTF-8 */
}

/* pt_cfg_oneof: which of a set of exclusive fields is present, with the errors for none and
 * several at the object's full path. */
static void test_oneof(void)
{
    static const char *const abc[] = {"alpha", "beta_field", "gamma", NULL};
    static const char *const two[] = {"alpha", "gamma", NULL};
    static const char *const alternatives[] = {"delta", NULL};
    json_t *root = J("{'one': {'gamma': 1},"
                     " 'camel': {'betaField': 'x'},"
                     " 'none': {'other': 1},"
                     " 'nulls': {'alpha': null},"
                     " 'optional': {},"
                     " 'many': {'alpha': 1, 'gamma': 2, 'beta_field': 3},"
                     " 'pair': {'alpha': 1, 'gamma': 2},"
                     " 'alt': {'delta': {}},"
                     " 'list': [{'x': {'alpha': 1, 'beta_field': 2}}]}");
    pt_cfg_t r;
    pt_cfg_init(&r, root);

    /* Exactly one: its index, and it is left for the caller to read (so unread, it would be
     * reported as unknown). */
    PT_CHECK_INT(pt_cfg_enter(&r, "one"), 1);
    PT_CHECK_INT(pt_cfg_oneof(&r, abc, 1), 2);
    uint64_t v;
    PT_CHECK_INT(pt_cfg_uint(&r, "gamma", &v, 0, 0, 10), 1);
    pt_cfg_leave(&r);
    PT_CHECK_INT(pt_cfg_enter(&r, "camel"), 1); /* proto3 JSON spelling counts */
    PT_CHECK_INT(pt_cfg_oneof(&r, abc, 1), 1);
    PT_CHECK(pt_cfg_get(&r, "beta_field") != NULL);
    pt_cfg_leave(&r);
    NO_ERRORS(&r);

    /* None: an error only when required. A null value is not set. */
    PT_CHECK_INT(pt_cfg_enter(&r, "none"), 1);
    PT_CHECK_INT(pt_cfg_oneof(&r, abc, 1), PT_CFG_ONEOF_NONE);
    (void)pt_cfg_get(&r, "other");
    pt_cfg_leave(&r);
    PT_CHECK_INT(pt_cfg_enter(&r, "nulls"), 1);
    PT_CHECK_INT(pt_cfg_oneof(&r, two, 1), PT_CFG_ONEOF_NONE);
    (void)pt_cfg_get(&r, "alpha");
    pt_cfg_leave(&r);
    PT_CHECK_INT(pt_cfg_enter(&r, "optional"), 1);
    PT_CHECK_INT(pt_cfg_oneof(&r, abc, 0), PT_CFG_ONEOF_NONE);
    pt_cfg_leave(&r);

    /* Several: one error naming those found; all are consumed, none is also "unknown". */
    PT_CHECK_INT(pt_cfg_enter(&r, "many"), 1);
    PT_CHECK_INT(pt_cfg_oneof(&r, abc, 1), PT_CFG_ONEOF_MANY);
    pt_cfg_leave(&r);
    PT_CHECK_INT(pt_cfg_enter(&r, "pair"), 1);
    PT_CHECK_INT(pt_cfg_oneof(&r, two, 0), PT_CFG_ONEOF_MANY);
    pt_cfg_leave(&r);

    /* A known alternative stands in for a required choice: the caller says so. */
    PT_CHECK_INT(pt_cfg_enter(&r, "alt"), 1);
    PT_CHECK_INT(pt_cfg_has_any(&r, alternatives), 1);
    PT_CHECK_INT(pt_cfg_has_any(&r, abc), 0);
    PT_CHECK_INT(pt_cfg_oneof(&r, abc, !pt_cfg_has_any(&r, alternatives)), PT_CFG_ONEOF_NONE);
    pt_cfg_leave(&r); /* delta was not read: unknown */

    /* Inside a list element the path has the index. */
    PT_CHECK_INT((int)pt_cfg_array(&r, "list", NULL), 1);
    PT_CHECK_INT(pt_cfg_enter_index(&r, 0), 1);
    PT_CHECK_INT(pt_cfg_enter(&r, "x"), 1);
    PT_CHECK_INT(pt_cfg_oneof(&r, abc, 1), PT_CFG_ONEOF_MANY);
    pt_cfg_leave(&r);
    pt_cfg_leave(&r);
    pt_cfg_leave_array(&r);
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "none: one of alpha, beta_field or gamma is required",
               "nulls: one of alpha or gamma is required",
               "many: only one of alpha, beta_field, gamma may be given (found alpha, beta_field, "
               "gamma)",
               "pair: only one of alpha, gamma may be given (found alpha, gamma)",
               "alt.delta: unknown field",
               "list[0].x: only one of alpha, beta_field, gamma may be given (found alpha, "
               "beta_field)");
    pt_cfg_dispose(&r);
    json_decref(root);
}

/* Nesting beyond PT_CFG_MAX_DEPTH is an error, not a frame-stack overflow, whether the
 * deepest level is entered as an object, a list element or a list. */
static json_t *nested(int levels)
{
    /* {"o": {"o": ... }} with `levels` objects; the one at the deepest depth the reader can
     * enter also holds a list "l". */
    json_t *root = json_object(), *cur = root;
    for (int i = 0; i < levels; i++) {
        json_t *o = json_object();
        if (i == PT_CFG_MAX_DEPTH - 1) {
            json_t *arr = json_array();
            json_array_append_new(arr, json_object());
            json_object_set_new(cur, "l", arr);
        }
        json_object_set_new(cur, "o", o);
        cur = o;
    }
    return root;
}

static void test_depth_limit_objects(void)
{
    json_t *root = nested(PT_CFG_MAX_DEPTH + 4);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    int entered = 0, present;
    while (pt_cfg_enter(&r, "o") > 0)
        entered++;
    PT_CHECK_INT(entered, PT_CFG_MAX_DEPTH - 1);
    PT_CHECK_INT(r.depth, PT_CFG_MAX_DEPTH);
    /* The frame stack is full: a list cannot be entered either. */
    PT_CHECK_INT(pt_cfg_array(&r, "l", &present), 0);
    PT_CHECK_INT(present, 0);
    PT_CHECK_INT(r.depth, PT_CFG_MAX_DEPTH);
    pt_cfg_finish(&r);
    PT_CHECK_INT(r.depth, 0);
    PT_CHECK_INT(r.nerrors, 2);
    PT_CHECK(strncmp(r.errors[0], "o.o.o.o.", 8) == 0);
    PT_CHECK(ends_with(r.errors[0], ".o: nesting is too deep"));
    PT_CHECK(ends_with(r.errors[1], ".l: nesting is too deep"));
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void test_depth_limit_lists(void)
{
    json_t *root = json_object(), *cur = root;
    for (int i = 0; i < PT_CFG_MAX_DEPTH; i++) {
        json_t *o = json_object(), *arr = json_array();
        json_array_append_new(arr, o);
        json_object_set_new(cur, "l", arr);
        cur = o;
    }
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    int levels = 0, present;
    for (;;) {
        size_t n = pt_cfg_array(&r, "l", &present);
        if (!present)
            break;
        PT_CHECK_INT(n, 1);
        if (pt_cfg_enter_index(&r, 0) <= 0)
            break;
        levels++;
    }
    PT_CHECK(r.depth <= PT_CFG_MAX_DEPTH);
    PT_CHECK_INT(levels, (PT_CFG_MAX_DEPTH - 2) / 2);
    pt_cfg_finish(&r);
    PT_CHECK_INT(r.nerrors, 1);
    PT_CHECK(strncmp(r.errors[0], "l[0].l[0].l", 11) == 0);
    PT_CHECK(ends_with(r.errors[0], ".l[0]: nesting is too deep"));
    pt_cfg_dispose(&r);
    json_decref(root);
}

/* ---- pt_cfg_init_at --------------------------------------------------------------- */

/* A reader started inside a larger document names fields from where the node sits. */
static void test_init_at(void)
{
    json_t *node = J("{'name': 'a', 'connect_timeout': 'abc', 'extra': 1}");
    pt_cfg_t r;
    pt_cfg_init_at(&r, node, "resources[3]");
    const char *name;
    uint64_t ms;
    PT_CHECK_INT(pt_cfg_string(&r, "name", &name, NULL), 1);
    PT_CHECK_STR(pt_cfg_path(&r), "resources[3]");
    pt_cfg_duration_ms(&r, "connect_timeout", &ms, 0);
    pt_cfg_error(&r, NULL, "whole resource");
    pt_cfg_finish(&r);
    ERRORS_ARE(&r,
               "resources[3].connect_timeout: \"abc\" is not a duration (expected a string like "
               "\"1.5s\")",
               "resources[3]: whole resource", "resources[3].extra: unknown field");
    pt_cfg_dispose(&r);
    json_decref(node);
    json_t *list = J("[1]");
    pt_cfg_init_at(&r, list, "resources[0]");
    pt_cfg_finish(&r);
    ERRORS_ARE(&r, "resources[0]: must be an object");
    pt_cfg_dispose(&r);
    json_decref(list);
}

/* ---- pt_config_load_file --------------------------------------------------------- */

/* Writes `text` to a new unique file /tmp/pt_ut_XXXXXX<suffix>; returns its path (static). */
static const char *write_temp(const char *suffix, const char *text)
{
    static char path[4][128];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 128, "/tmp/pt_ut_cfgXXXXXX%s", suffix);
    int fd = mkstemps(p, (int)strlen(suffix));
    if (fd < 0) {
        perror("mkstemps");
        abort();
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        abort();
    close(fd);
    return p;
}

static void test_load_file(void)
{
    char err[512], want[600];
    const char *p = write_temp(".json", "{\"a\": [1, 2], \"b\": {\"c\": \"0.25s\"}}");
    json_t *j = pt_config_load_file(p, err, sizeof(err));
    PT_CHECK(j != NULL);
    unlink(p);
    p = write_temp(".yaml", "a: [1, 2]\nb:\n  c: 0.25s\n");
    json_t *y = pt_config_load_file(p, err, sizeof(err));
    PT_CHECK(y != NULL);
    unlink(p);
    PT_CHECK(json_equal(j, y));
    json_decref(y);
    p = write_temp(".yml", "a:\n- 1\n- 2\nb: {c: \"0.25s\"}\n");
    y = pt_config_load_file(p, err, sizeof(err));
    PT_CHECK(y != NULL);
    unlink(p);
    PT_CHECK(json_equal(j, y));
    json_decref(y);
    json_decref(j);

    /* The two halves: text read within the bounds, parsed by the name's extension. */
    size_t len;
    p = write_temp(".yaml", "a: [1, 2]\nb:\n  c: 0.25s\n");
    char *text = pt_config_read_text(p, &len, err, sizeof(err));
    unlink(p);
    PT_CHECK(text != NULL);
    PT_CHECK_INT(len, strlen("a: [1, 2]\nb:\n  c: 0.25s\n"));
    y = pt_config_parse_text("x.yaml", text, len, err, sizeof(err));
    PT_CHECK(y != NULL);
    json_t *j2 = pt_config_parse_text("x.json", "{\"a\": [1, 2], \"b\": {\"c\": \"0.25s\"}}", 34,
                                      err, sizeof(err));
    PT_CHECK(j2 != NULL && json_equal(j2, y));
    json_decref(j2);
    json_decref(y);
    PT_CHECK(pt_config_parse_text("x.json", text, len, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "x.json: line 1 column 1: '[' or '{' expected near 'a'");
    pt_config_text_free(text);
    PT_CHECK(pt_config_read_text("/tmp/pt_ut_no_such_dir/x.json", &len, err, sizeof(err)) ==
             NULL);
    PT_CHECK_STR(err, "/tmp/pt_ut_no_such_dir/x.json: No such file or directory");

    /* Unknown extension. */
    p = write_temp(".conf", "{}");
    PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "%s: unknown config format (use a .json, .yaml or .yml file)", p);
    unlink(p);
    PT_CHECK_STR(err, want);

    /* Missing file. */
    PT_CHECK(pt_config_load_file("/tmp/pt_ut_no_such_dir/x.json", err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "/tmp/pt_ut_no_such_dir/x.json: No such file or directory");

    /* A directory: the reason, not just "read error". */
    PT_CHECK(pt_config_load_file("/tmp/", err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "/tmp/: Is a directory");

    /* Invalid JSON: line and column. */
    p = write_temp(".json", "{\n  \"a\": 1,\n  \"b\": \n}\n");
    PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "%s: line 4 column 1: unexpected token near '}'", p);
    unlink(p);
    PT_CHECK_STR(err, want);

    /* Duplicate keys in JSON are rejected too (as they are in YAML). */
    p = write_temp(".json", "{\"a\": 1, \"a\": 2}");
    PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "%s: line 1 column 12: duplicate object key near '\"a\"'", p);
    unlink(p);
    PT_CHECK_STR(err, want);

    /* Empty JSON file. */
    p = write_temp(".json", "");
    PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "%s: line 1 column 0: '[' or '{' expected near end of file", p);
    unlink(p);
    PT_CHECK_STR(err, want);

    /* Invalid YAML: line and column. */
    p = write_temp(".yaml", "a: 1\nb: [1, 2\nc: 3\n");
    PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want),
             "%s: line 3 column 2: did not find expected ',' or ']' while parsing a flow "
             "sequence started at line 2 column 4",
             p);
    unlink(p);
    PT_CHECK_STR(err, want);

    /* Empty YAML file. */
    p = write_temp(".yml", "# only a comment\n");
    PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "%s: the file is empty", p);
    unlink(p);
    PT_CHECK_STR(err, want);
}

/* A file larger than one read block is read whole. */
static void test_load_large_file(void)
{
    size_t n = 20000;
    char *text = malloc(n * 16 + 16);
    size_t o = 0;
    o += (size_t)sprintf(text + o, "{\"l\": [");
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(text + o, "%s%zu", i ? "," : "", i);
    sprintf(text + o, "]}");
    const char *p = write_temp(".json", text);
    free(text);
    char err[256];
    json_t *j = pt_config_load_file(p, err, sizeof(err));
    unlink(p);
    PT_CHECK(j != NULL);
    json_t *l = json_object_get(j, "l");
    PT_CHECK_INT(json_array_size(l), n);
    PT_CHECK_INT(json_integer_value(json_array_get(l, n - 1)), n - 1);
    json_decref(j);
}

/* Writes a file of exactly `size` bytes: `head`, then spaces. Returns its path (static). */
static const char *write_sized(const char *suffix, const char *head, size_t size)
{
    const char *p = write_temp(suffix, head);
    FILE *f = fopen(p, "ab");
    static char spaces[65536];
    memset(spaces, ' ', sizeof(spaces));
    for (size_t left = size - strlen(head); left > 0;) {
        size_t n = left < sizeof(spaces) ? left : sizeof(spaces);
        if (fwrite(spaces, 1, n, f) != n)
            abort();
        left -= n;
    }
    fclose(f);
    return p;
}

/* The document bounds hold for files, with the file named: size (judged while reading, so a
 * device that never ends is refused too), nesting and values, in JSON and YAML alike. */
static void test_load_file_bounds(void)
{
    char err[512], want[600];
    const char *p = write_sized(".json", "{\"a\": 1}", PT_DOC_MAX_BYTES);
    json_t *j = pt_config_load_file(p, err, sizeof(err));
    unlink(p);
    PT_CHECK(j != NULL);
    PT_CHECK_INT(json_integer_value(json_object_get(j, "a")), 1);
    json_decref(j);
    p = write_sized(".yaml", "a: 1\n", (size_t)PT_DOC_MAX_BYTES + 1);
    PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "%s: larger than 67108864 bytes (64 MiB)", p);
    unlink(p);
    PT_CHECK_STR(err, want);
    /* A config path that is a link to /dev/zero. */
    char link[64];
    snprintf(link, sizeof(link), "/tmp/pt_ut_zero_%d.yaml", (int)getpid());
    unlink(link);
    PT_CHECK(symlink("/dev/zero", link) == 0);
    PT_CHECK(pt_config_load_file(link, err, sizeof(err)) == NULL);
    unlink(link);
    snprintf(want, sizeof(want), "%s: larger than 67108864 bytes (64 MiB)", link);
    PT_CHECK_STR(err, want);

    static const struct {
        const char *suffix, *open, *close, *want;
    } deep[] = {
        {".json", "[", "]", "line 1 column 129: nesting deeper than 128 levels"},
        {".json", "{\"k\": ", "}", "line 1 column 769: nesting deeper than 128 levels"},
        {".yaml", "[", "]", "line 1 column 129: nesting deeper than 128 levels"},
        {".yml", "- ", "", "line 1 column 257: nesting deeper than 128 levels"},
    };
    for (size_t i = 0; i < sizeof(deep) / sizeof(deep[0]); i++) {
        size_t n = 100000, lo = strlen(deep[i].open), lc = strlen(deep[i].close);
        char *text = malloc(n * (lo + lc) + 2), *t = text;
        for (size_t k = 0; k < n; k++, t += lo)
            memcpy(t, deep[i].open, lo);
        *t++ = '1';
        for (size_t k = 0; k < n; k++, t += lc)
            memcpy(t, deep[i].close, lc);
        *t = '\0';
        p = write_temp(deep[i].suffix, text);
        free(text);
        PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
        snprintf(want, sizeof(want), "%s: %s", p, deep[i].want);
        unlink(p);
        PT_CHECK_STR(err, want);
    }

    /* One value past the bound: a list of 4194304 items is 4194305 values. */
    size_t n = PT_DOC_MAX_VALUES;
    char *text = malloc(2 * n + 2);
    text[0] = '[';
    for (size_t k = 0; k < n; k++) {
        text[1 + 2 * k] = '0';
        text[2 + 2 * k] = ',';
    }
    text[2 * n] = ']';
    text[2 * n + 1] = '\0';
    for (int yaml = 0; yaml < 2; yaml++) {
        p = write_temp(yaml ? ".yaml" : ".json", text);
        PT_CHECK(pt_config_load_file(p, err, sizeof(err)) == NULL);
        snprintf(want, sizeof(want),
                 "%s: line 1 column 8388608: the document holds more than 4194304 values", p);
        unlink(p);
        PT_CHECK_STR(err, want);
    }
    free(text);
}

static void test_base64(void)
{
    static const struct {
        const char *in;
        const char *out; /* NULL: invalid */
        long len;
    } cases[] = {
        {"", "", 0},
        {"Zg==", "f", 1},
        {"Zg", "f", 1},           /* padding optional (proto3 JSON) */
        {"Zm8=", "fo", 2},
        {"Zm9v", "foo", 3},
        {"Zm9vYmFy", "foobar", 6},
        {"-_8=", "\xfb\xff", 2}, /* URL-safe alphabet */
        {"+/8=", "\xfb\xff", 2},
        {"Z", NULL, -1},          /* one char left over cannot encode a byte */
        {"Zg===", NULL, -1},      /* too much padding */
        {"Zm 9v", NULL, -1},      /* not in the alphabet */
        {"Zm9v*", NULL, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char out[16];
        long n = pt_base64_decode(cases[i].in, out);
        if (n != cases[i].len || (n > 0 && memcmp(out, cases[i].out, (size_t)n) != 0)) {
            fprintf(stderr, "  base64 \"%s\" -> %ld\n", cases[i].in, n);
            PT_CHECK(0);
        }
    }
}

static void test_read_file(void)
{
    char path[] = "/tmp/petrel-read-file-XXXXXX";
    int fd = mkstemp(path);
    PT_CHECK(fd >= 0);
    PT_CHECK_INT(write(fd, "0123456789", 10), 10);
    close(fd);
    char err[256] = "";
    size_t len = 0;
    char *data = pt_read_file(path, 10, &len, err, sizeof(err));
    PT_CHECK_STR(data, "0123456789");
    PT_CHECK_INT(len, 10);
    free(data);
    /* One byte over the limit is refused, with the limit in the message. */
    PT_CHECK(pt_read_file(path, 9, &len, err, sizeof(err)) == NULL);
    char want[512];
    snprintf(want, sizeof(want), "cannot read %s: larger than 9 bytes", path);
    PT_CHECK_STR(err, want);
    unlink(path);
    PT_CHECK(pt_read_file(path, 10, NULL, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "cannot read %s: No such file or directory", path);
    PT_CHECK_STR(err, want);
}

int main(void)
{
    PT_RUN(test_duration_valid);
    PT_RUN(test_fields_of_known_messages_are_not_supported);
    PT_RUN(test_duration_invalid);
    PT_RUN(test_duration_getter);
    PT_RUN(test_uint_getter);
    PT_RUN(test_int64_getter);
    PT_RUN(test_bool_string_double_getters);
    PT_RUN(test_enum_getter);
    PT_RUN(test_paths_and_unknown_fields);
    PT_RUN(test_root_not_object);
    PT_RUN(test_camel_case);
    PT_RUN(test_enter_any);
    PT_RUN(test_skip_rest);
    PT_RUN(test_oneof);
    PT_RUN(test_quote);
    PT_RUN(test_depth_limit_objects);
    PT_RUN(test_depth_limit_lists);
    PT_RUN(test_init_at);
    PT_RUN(test_load_file);
    PT_RUN(test_load_large_file);
    PT_RUN(test_load_file_bounds);
    PT_RUN(test_base64);
    PT_RUN(test_read_file);
    PT_TEST_EXIT();
}
