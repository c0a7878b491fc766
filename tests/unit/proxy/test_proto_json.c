/* Unit tests for protobuf <-> JSON tree by schema (proxy/proto_json.c): hand-written wire
 * bytes of every wire type and scalar type decode to proto3 JSON; every malformed or
 * unmappable input is refused with its exact path and reason; the encoder's output decodes
 * back to what it was given; the messages petrel sends encode to the bytes protobuf gives.
 *
 * Most cases use a small test schema (test.All) with a field of every type, written the way
 * the generated tables are; the real schema is used where a case is about Envoy's messages. */
#include "proxy/proto_json.h"
#include "proxy/proto_schema.h"
#include "pt_test.h"

#include <stdint.h>

static size_t hex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ') {
            s++;
            continue;
        }
        unsigned v;
        sscanf(s, "%2x", &v);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

/* ---- the test schema ------------------------------------------------------------------- */

static const pt_pb_enum_value_t color_values[] = {
    {.name = "COLOR_UNSET", .number = 0},
    {.name = "RED", .number = 1},
    {.name = "BLUE", .number = 2},
};
static const pt_pb_enum_t color = {.full_name = "test.Color", .values = color_values, .nvalues = 3};

static const pt_pb_field_t entry_fields[] = {
    {.name = "key", .number = 1, .type = PT_PB_STRING, .oneof = -1},
    {.name = "value", .number = 2, .type = PT_PB_INT32, .oneof = -1},
};
static const pt_pb_message_t entry = {
    .full_name = "test.All.MEntry",
    .fields = entry_fields,
    .nfields = 2,
    .kind = PT_PB_KIND_MAP_ENTRY,
};

static const pt_pb_message_t all;
static const char *const all_oneofs[] = {"choice"};
static const pt_pb_field_t all_fields[] = {
    {.name = "f_double", .number = 1, .type = PT_PB_DOUBLE, .oneof = -1},
    {.name = "f_float", .number = 2, .type = PT_PB_FLOAT, .oneof = -1},
    {.name = "f_int64", .number = 3, .type = PT_PB_INT64, .oneof = -1},
    {.name = "f_uint64", .number = 4, .type = PT_PB_UINT64, .oneof = -1},
    {.name = "f_int32", .number = 5, .type = PT_PB_INT32, .oneof = -1},
    {.name = "f_fixed64", .number = 6, .type = PT_PB_FIXED64, .oneof = -1},
    {.name = "f_fixed32", .number = 7, .type = PT_PB_FIXED32, .oneof = -1},
    {.name = "f_bool", .number = 8, .type = PT_PB_BOOL, .oneof = -1},
    {.name = "f_string", .number = 9, .type = PT_PB_STRING, .oneof = -1},
    {.name = "child", .number = 11, .type = PT_PB_MESSAGE, .oneof = -1, .message = &all},
    {.name = "f_bytes", .number = 12, .type = PT_PB_BYTES, .oneof = -1},
    {.name = "f_uint32", .number = 13, .type = PT_PB_UINT32, .oneof = -1},
    {.name = "f_enum", .number = 14, .type = PT_PB_ENUM, .oneof = -1, .enumeration = &color},
    {.name = "f_sfixed32", .number = 15, .type = PT_PB_SFIXED32, .oneof = -1},
    {.name = "f_sfixed64", .number = 16, .type = PT_PB_SFIXED64, .oneof = -1},
    {.name = "f_sint32", .number = 17, .type = PT_PB_SINT32, .oneof = -1},
    {.name = "f_sint64", .number = 18, .type = PT_PB_SINT64, .oneof = -1},
    {.name = "r_int32", .number = 19, .type = PT_PB_INT32, .flags = PT_PB_REPEATED, .oneof = -1},
    {.name = "r_string", .number = 20, .type = PT_PB_STRING, .flags = PT_PB_REPEATED, .oneof = -1},
    {.name = "m",
     .number = 21,
     .type = PT_PB_MESSAGE,
     .flags = PT_PB_MAP,
     .oneof = -1,
     .message = &entry},
    {.name = "o_a", .number = 22, .type = PT_PB_STRING, .oneof = 0},
    {.name = "o_b", .number = 23, .type = PT_PB_INT32, .oneof = 0},
    {.name = "opt", .number = 24, .type = PT_PB_INT32, .flags = PT_PB_PRESENCE, .oneof = -1},
    {.name = "dur", .number = 25, .type = PT_PB_MESSAGE, .oneof = -1, .message = &pt_pb_duration},
    {.name = "any", .number = 26, .type = PT_PB_MESSAGE, .oneof = -1, .message = &pt_pb_any},
    {.name = "st", .number = 27, .type = PT_PB_MESSAGE, .oneof = -1, .message = &pt_pb_struct},
    {.name = "u32w",
     .number = 28,
     .type = PT_PB_MESSAGE,
     .oneof = -1,
     .message = &pt_pb_uint32_value},
    {.name = "ts", .number = 29, .type = PT_PB_MESSAGE, .oneof = -1, .message = &pt_pb_timestamp},
    {.name = "children",
     .number = 30,
     .type = PT_PB_MESSAGE,
     .flags = PT_PB_REPEATED,
     .oneof = -1,
     .message = &all},
    {.name = "fm", .number = 31, .type = PT_PB_MESSAGE, .oneof = -1, .message = &pt_pb_field_mask},
    {.name = "empty", .number = 32, .type = PT_PB_MESSAGE, .oneof = -1, .message = &pt_pb_empty},
    {.name = "val", .number = 33, .type = PT_PB_MESSAGE, .oneof = -1, .message = &pt_pb_value},
    {.name = "r_double", .number = 34, .type = PT_PB_DOUBLE, .flags = PT_PB_REPEATED, .oneof = -1},
};
static const pt_pb_message_t all = {
    .full_name = "test.All",
    .fields = all_fields,
    .nfields = sizeof(all_fields) / sizeof(all_fields[0]),
    .oneofs = all_oneofs,
    .noneofs = 1,
};

/* ---- helpers --------------------------------------------------------------------------- */

static char err[1024];
static char dumped[4096];

/* The decoded tree as compact JSON with sorted keys, or "ERROR: <err>". */
static const char *decode_buf(const pt_pb_message_t *m, const uint8_t *p, size_t n,
                              const char *path)
{
    /* An exact-size heap copy: ASan reports any read past the end. */
    uint8_t *copy = malloc(n ? n : 1);
    if (n > 0)
        memcpy(copy, p, n);
    json_t *t = pt_pb_to_json(m, copy, n, path, err, sizeof(err));
    free(copy);
    if (t == NULL) {
        snprintf(dumped, sizeof(dumped), "ERROR: %s", err);
        return dumped;
    }
    char *s = json_dumps(t, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    snprintf(dumped, sizeof(dumped), "%s", s);
    free(s);
    json_decref(t);
    return dumped;
}

static const char *decode_hex(const pt_pb_message_t *m, const char *h)
{
    uint8_t buf[512];
    size_t n = hex(h, buf);
    return decode_buf(m, buf, n, NULL);
}

/* JSON (single quotes) -> bytes -> JSON. */
static const char *round_trip(const pt_pb_message_t *m, const char *json)
{
    char *t = strdup(json);
    for (char *p = t; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t je;
    json_t *in = json_loads(t, JSON_DECODE_ANY, &je);
    free(t);
    if (in == NULL)
        return "bad test JSON";
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    if (pt_pb_from_json(m, in, &w, err, sizeof(err)) < 0) {
        snprintf(dumped, sizeof(dumped), "ENCODE ERROR: %s", err);
    } else {
        decode_buf(m, w.buf, w.len, NULL);
    }
    pt_pb_writer_dispose(&w);
    json_decref(in);
    return dumped;
}

/* ---- decoding -------------------------------------------------------------------------- */

static void test_every_scalar_type(void)
{
    PT_CHECK_STR(decode_hex(&all, "09 00 00 00 00 00 00 f8 3f"       /* double 1.5 */
                                  "15 00 00 20 c0"                   /* float -2.5 */
                                  "18 ff ff ff ff ff ff ff ff ff 01" /* int64 -1 */
                                  "20 ff ff ff ff ff ff ff ff ff 01" /* uint64 max */
                                  "28 fe ff ff ff ff ff ff ff ff 01" /* int32 -2 */
                                  "31 07 00 00 00 00 00 00 00"       /* fixed64 7 */
                                  "3d ff ff ff ff"                   /* fixed32 max */
                                  "40 01"                            /* bool */
                                  "4a 03 68 c3 a9"                   /* string "hé" */
                                  "62 03 00 ff 10"                   /* bytes */
                                  "68 80 80 80 80 08"                /* uint32 2^31 */
                                  "70 02"                            /* enum BLUE */
                                  "7d fe ff ff ff"                   /* sfixed32 -2 */
                                  "81 01 fd ff ff ff ff ff ff ff"    /* sfixed64 -3 */
                                  "88 01 03"                         /* sint32 -2 */
                                  "90 01 04"),                       /* sint64 2 */
                 "{\"f_bool\":true,\"f_bytes\":\"AP8Q\",\"f_double\":1.5,\"f_enum\":\"BLUE\","
                 "\"f_fixed32\":4294967295,\"f_fixed64\":7,\"f_float\":-2.5,\"f_int32\":-2,"
                 "\"f_int64\":-1,\"f_sfixed32\":-2,\"f_sfixed64\":-3,\"f_sint32\":-2,"
                 "\"f_sint64\":2,\"f_string\":\"h\xc3\xa9\",\"f_uint32\":2147483648,"
                 "\"f_uint64\":\"18446744073709551615\"}");
    /* Doubles proto3 JSON spells as strings. */
    PT_CHECK_STR(decode_hex(&all, "09 00 00 00 00 00 00 f8 7f 15 00 00 80 ff"),
                 "{\"f_double\":\"NaN\",\"f_float\":\"-Infinity\"}");
}

static void test_defaults_left_out(void)
{
    /* int32 0, bool false, "" and enum 0 are no value; `optional` and oneof members are. */
    PT_CHECK_STR(decode_hex(&all, "28 00 40 00 4a 00 70 00 62 00 c0 01 00 b8 01 00"),
                 "{\"o_b\":0,\"opt\":0}");
    PT_CHECK_STR(decode_hex(&all, ""), "{}");
}

static void test_repeated_occurrences(void)
{
    /* Last scalar wins, and a later default undoes an earlier value. */
    PT_CHECK_STR(decode_hex(&all, "28 01 28 02"), "{\"f_int32\":2}");
    PT_CHECK_STR(decode_hex(&all, "28 05 28 00"), "{}");
    /* Repeated: unpacked and packed mix, in order. */
    PT_CHECK_STR(decode_hex(&all, "98 01 01 98 01 02 9a 01 03 03 96 01 a2 01 01 61 a2 01 00"),
                 "{\"r_int32\":[1,2,3,150],\"r_string\":[\"a\",\"\"]}");
    PT_CHECK_STR(decode_hex(&all, "92 02 10 00 00 00 00 00 00 f0 3f 00 00 00 00 00 00 00 c0"),
                 "{\"r_double\":[1.0,-2.0]}");
    PT_CHECK_STR(decode_hex(&all, "9a 01 00"), "{}");
    PT_CHECK_STR(decode_hex(&all, "98 01 01 9a 01 00"), "{\"r_int32\":[1]}");
    /* Maps: an entry without its value has the default; a later key replaces. */
    PT_CHECK_STR(decode_hex(&all, "aa 01 05 0a 01 6b 10 07 aa 01 04 0a 02 6b 32"
                                  "aa 01 05 0a 01 6b 10 09 aa 01 00"),
                 "{\"m\":{\"\":0,\"k\":9,\"k2\":0}}");
    /* A oneof member clears the other. */
    PT_CHECK_STR(decode_hex(&all, "b2 01 01 78 b8 01 05"), "{\"o_b\":5}");
    PT_CHECK_STR(decode_hex(&all, "b8 01 05 b2 01 01 78"), "{\"o_a\":\"x\"}");
    /* A message given twice merges. */
    PT_CHECK_STR(decode_hex(&all, "5a 02 28 01 5a 02 40 01"),
                 "{\"child\":{\"f_bool\":true,\"f_int32\":1}}");
    PT_CHECK_STR(decode_hex(&all, "f2 01 00 f2 01 02 28 03"),
                 "{\"children\":[{},{\"f_int32\":3}]}");
}

static void test_malformed(void)
{
    static const struct {
        const char *hex, *want;
    } cases[] = {
        {"28", "ERROR: f_int32: truncated"},
        {"a8", "ERROR: truncated"},
        {"4a 05 61", "ERROR: f_string: length past the end of the message"},
        {"28 ff ff ff ff ff ff ff ff ff 7f", "ERROR: f_int32: varint longer than 64 bits"},
        {"2d 00 00 00 00", "ERROR: f_int32: wire type 5 does not fit a field of type int32"},
        {"4d 00 00 00 00", "ERROR: f_string: wire type 5 does not fit a field of type string"},
        {"58 01", "ERROR: child: wire type 0 does not fit a field of type message"},
        {"aa 01 01", "ERROR: m: length past the end of the message"},
        {"a8 01 01", "ERROR: m: wire type 0 does not fit a map field"},
        {"c0 3e 01", "ERROR: unknown field number 1000 of test.All"},
        {"5a 03 c0 3e 01", "ERROR: child: unknown field number 1000 of test.All"},
        {"f2 01 00 f2 01 03 c0 3e 01", "ERROR: children[1]: unknown field number 1000 of test.All"},
        {"5a 05 28", "ERROR: child: length past the end of the message"},
        {"5a 01 28", "ERROR: child.f_int32: truncated"},
        {"9a 01 02 01 80", "ERROR: r_int32[1]: truncated"},
        {"4a 02 c3 28", "ERROR: f_string: string is not valid UTF-8"},
        {"4a 02 c0 80", "ERROR: f_string: string is not valid UTF-8"},    /* overlong */
        {"4a 03 ed a0 80", "ERROR: f_string: string is not valid UTF-8"}, /* surrogate */
        {"4a 01 ff", "ERROR: f_string: string is not valid UTF-8"},
        {"4a 03 61 00 62", "ERROR: f_string: string holds a NUL byte"},
        {"5b 0c", "ERROR: field 11 is a group (wire type 3): groups are not supported"},
        {"0c", "ERROR: field 1 is a group (wire type 4): groups are not supported"},
        {"0e", "ERROR: invalid wire type"},
        {"00", "ERROR: invalid field number"},
        {"70 09", "ERROR: f_enum: 9 is not a value of test.Color"},
        {"ca 01 0d 08 01 10 ff ff ff ff ff ff ff ff ff 01",
         "ERROR: dur: Duration out of range (seconds 1, nanos -1)"},
        {"ca 01 07 08 80 80 80 80 80 20",
         "ERROR: dur: Duration out of range (seconds 1099511627776, nanos 0)"},
        {"ea 01 0b 10 ff ff ff ff ff ff ff ff ff 01",
         "ERROR: ts: Timestamp out of range (seconds 0, nanos -1)"},
        {"82 02 02 08 01", "ERROR: empty: unknown field number 1 of google.protobuf.Empty"},
        {"e2 01 02 10 01", "ERROR: u32w: unknown field number 2 of google.protobuf.UInt32Value"},
        {"e2 01 02 0d 00", "ERROR: u32w.value: wire type 5 does not fit a field of type uint32"},
        {"fa 01 04 0a 02 61 42", "ERROR: fm: FieldMask path \"aB\" has no JSON form"},
        {"fa 01 05 0a 03 61 5f 31", "ERROR: fm: FieldMask path \"a_1\" has no JSON form"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = decode_hex(&all, cases[i].hex);
        if (strcmp(got, cases[i].want) != 0)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].hex);
        PT_CHECK_STR(got, cases[i].want);
    }
}

/* Builds `levels` nested `child` messages around an int32 field. */
static void nest(pt_pb_writer_t *w, int levels)
{
    if (levels == 0) {
        pt_pb_put_tag(w, 5, PT_PB_WIRE_VARINT);
        pt_pb_put_varint(w, 1);
        return;
    }
    size_t mark = pt_pb_begin_len(w, 11);
    nest(w, levels - 1);
    pt_pb_end_len(w, mark);
}

static void test_depth_bomb(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    nest(&w, PT_PB_MAX_DEPTH - 1); /* with the top message: 100 deep */
    const char *got = decode_buf(&all, w.buf, w.len, NULL);
    PT_CHECK(strncmp(got, "{\"child\":{\"child\":", 18) == 0);
    pt_pb_writer_dispose(&w);

    pt_pb_writer_init(&w);
    nest(&w, PT_PB_MAX_DEPTH);
    got = decode_buf(&all, w.buf, w.len, NULL);
    PT_CHECK(strncmp(got, "ERROR: child.child.", 19) == 0);
    PT_CHECK(strstr(got, ": messages nested more than 100 deep") != NULL);
    pt_pb_writer_dispose(&w);

    /* The same through Anys, each holding the next: one level each. */
    const pt_pb_message_t *resource = pt_pb_message_find("envoy.service.discovery.v3.Resource");
    PT_CHECK(resource != NULL);
    uint8_t *buf = NULL;
    size_t len = 0;
    for (int i = 0; i < 200; i++) {
        /* Resource { resource (field 2): Any { type_url: Resource, value: buf } } */
        static const char url[] = "type.googleapis.com/envoy.service.discovery.v3.Resource";
        pt_pb_writer_init(&w);
        size_t mark = pt_pb_begin_len(&w, 2);
        pt_pb_put_bytes(&w, 1, url, sizeof(url) - 1);
        pt_pb_put_bytes(&w, 2, buf, len);
        pt_pb_end_len(&w, mark);
        free(buf);
        buf = w.buf;
        len = w.len;
    }
    got = decode_buf(resource, buf, len, NULL);
    PT_CHECK(strstr(got, ": messages nested more than 100 deep") != NULL);
    free(buf);
}

static void test_well_known_types(void)
{
    static const struct {
        const char *hex, *want;
    } cases[] = {
        /* Duration: 0, 3, 6 or 9 digits; negative; zero */
        {"ca 01 08 08 01 10 80 ca b5 ee 01", "{\"dur\":\"1.500s\"}"},
        {"ca 01 03 10 e8 07", "{\"dur\":\"0.000001s\"}"},
        {"ca 01 02 10 01", "{\"dur\":\"0.000000001s\"}"},
        {"ca 01 02 08 05", "{\"dur\":\"5s\"}"},
        {"ca 01 00", "{\"dur\":\"0s\"}"},
        {"ca 01 16 08 ff ff ff ff ff ff ff ff ff 01 10 80 b6 ca 91 fe ff ff ff ff 01",
         "{\"dur\":\"-1.500s\"}"},
        /* Timestamp */
        {"ea 01 00", "{\"ts\":\"1970-01-01T00:00:00Z\"}"},
        {"ea 01 0b 08 80 e2 cf aa 06 10 c0 de 81 0a", "{\"ts\":\"2023-11-14T22:13:20.021Z\"}"},
        {"ea 01 0b 08 ff ff ff ff ff ff ff ff ff 01", "{\"ts\":\"1969-12-31T23:59:59Z\"}"},
        /* Wrapper: its value, also when it is the default */
        {"e2 01 00", "{\"u32w\":0}"},
        {"e2 01 02 08 07", "{\"u32w\":7}"},
        /* Struct {"a": 2} (a whole number: an integer, as in a JSON file) */
        {"da 01 10 0a 0e 0a 01 61 12 09 11 00 00 00 00 00 00 00 40", "{\"st\":{\"a\":2}}"},
        /* Value: null, string, list [true, 0.5] */
        {"8a 02 02 08 00", "{\"val\":null}"},
        {"8a 02 03 1a 01 78", "{\"val\":\"x\"}"},
        {"8a 02 11 32 0f 0a 02 20 01 0a 09 11 00 00 00 00 00 00 e0 3f", "{\"val\":[true,0.5]}"},
        /* FieldMask: paths in lowerCamelCase, comma-joined */
        {"fa 01 0a 0a 05 61 2e 62 5f 63 0a 01 64", "{\"fm\":\"a.bC,d\"}"},
        /* Empty */
        {"82 02 00", "{\"empty\":{}}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = decode_hex(&all, cases[i].hex);
        if (strcmp(got, cases[i].want) != 0)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].hex);
        PT_CHECK_STR(got, cases[i].want);
    }
}

/* Any: its message's fields beside "@type"; a well-known type under "value"; a type the
 * schema does not have is an error naming the path and the URL. */
static void test_any(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    size_t any = pt_pb_begin_len(&w, 26);
    static const char sa[] = "type.googleapis.com/envoy.config.core.v3.SocketAddress";
    pt_pb_put_bytes(&w, 1, sa, sizeof(sa) - 1);
    size_t val = pt_pb_begin_len(&w, 2);
    pt_pb_put_bytes(&w, 2, "1.2.3.4", 7);
    pt_pb_put_tag(&w, 3, PT_PB_WIRE_VARINT);
    pt_pb_put_varint(&w, 80);
    pt_pb_end_len(&w, val);
    pt_pb_end_len(&w, any);
    PT_CHECK_STR(decode_buf(&all, w.buf, w.len, NULL),
                 "{\"any\":{\"@type\":\"type.googleapis.com/envoy.config.core.v3.SocketAddress\","
                 "\"address\":\"1.2.3.4\",\"port_value\":80}}");
    pt_pb_writer_dispose(&w);

    PT_CHECK_STR(decode_hex(&all, "d2 01 32 0a 2c 74 79 70 65 2e 67 6f 6f 67 6c 65 61 70 69 73"
                                  "2e 63 6f 6d 2f 67 6f 6f 67 6c 65 2e 70 72 6f 74 6f 62 75 66"
                                  "2e 44 75 72 61 74 69 6f 6e 12 02 08 02"),
                 "{\"any\":{\"@type\":\"type.googleapis.com/google.protobuf.Duration\","
                 "\"value\":\"2s\"}}");
    /* type.googleapis.com/foo.Bar */
    PT_CHECK_STR(decode_hex(&all, "d2 01 1d 0a 1b 74 79 70 65 2e 67 6f 6f 67 6c 65 61 70 69 73"
                                  "2e 63 6f 6d 2f 66 6f 6f 2e 42 61 72"),
                 "ERROR: any: Any of type \"type.googleapis.com/foo.Bar\": petrel does not "
                 "know this type");
    PT_CHECK_STR(decode_hex(&all, "d2 01 00"), "{\"any\":{}}");
    PT_CHECK_STR(decode_hex(&all, "d2 01 03 12 01 00"),
                 "ERROR: any: Any has a value but no type_url");
    PT_CHECK_STR(decode_hex(&all, "d2 01 02 18 01"),
                 "ERROR: any: unknown field number 3 of google.protobuf.Any");
}

/* In Envoy's messages: errors name the path from the response down. */
static void test_real_schema_paths(void)
{
    const pt_pb_message_t *resp =
        pt_pb_message_find("envoy.service.discovery.v3.DiscoveryResponse");
    PT_CHECK(resp != NULL);
    static const char url[] = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    pt_pb_put_bytes(&w, 1, "7", 1);
    for (int i = 0; i < 2; i++) {
        size_t any = pt_pb_begin_len(&w, 2);
        pt_pb_put_bytes(&w, 1, url, sizeof(url) - 1);
        size_t val = pt_pb_begin_len(&w, 2);
        pt_pb_put_bytes(&w, 1, i ? "b" : "a", 1);
        if (i == 1) {
            /* load_assignment (33) { endpoints (2) { field 9999 } } */
            size_t la = pt_pb_begin_len(&w, 33);
            size_t ep = pt_pb_begin_len(&w, 2);
            pt_pb_put_tag(&w, 9999, PT_PB_WIRE_VARINT);
            pt_pb_put_varint(&w, 1);
            pt_pb_end_len(&w, ep);
            pt_pb_end_len(&w, la);
        }
        pt_pb_end_len(&w, val);
        pt_pb_end_len(&w, any);
    }
    PT_CHECK_STR(decode_buf(resp, w.buf, w.len, NULL),
                 "ERROR: resources[1].load_assignment.endpoints[0]: unknown field number 9999 "
                 "of envoy.config.endpoint.v3.LocalityLbEndpoints");
    /* With a path prefix, as for a message inside a larger one. */
    PT_CHECK_STR(decode_buf(resp, w.buf, w.len, "cds"),
                 "ERROR: cds.resources[1].load_assignment.endpoints[0]: unknown field number "
                 "9999 of envoy.config.endpoint.v3.LocalityLbEndpoints");
    pt_pb_writer_dispose(&w);

    /* An enum by name: Cluster.type (2) STRICT_DNS (1); lb_policy (6) 0 is left out. */
    const pt_pb_message_t *cluster = pt_pb_message_find("envoy.config.cluster.v3.Cluster");
    PT_CHECK_STR(decode_hex(cluster, "0a 01 63 10 01 30 00"),
                 "{\"name\":\"c\",\"type\":\"STRICT_DNS\"}");
    PT_CHECK_STR(decode_hex(cluster, "10 63"),
                 "ERROR: type: 99 is not a value of envoy.config.cluster.v3.Cluster.DiscoveryType");
}

/* ---- encoding -------------------------------------------------------------------------- */

static void test_round_trip(void)
{
    const char *in =
        "{'child':{'f_int32':1,'m':{'a':1}},'children':[{},{'f_bool':true}],"
        "'dur':'-0.250s','empty':{},'f_bool':true,'f_bytes':'AP8Q','f_double':1.5,"
        "'f_enum':'BLUE','f_fixed32':4294967295,'f_fixed64':7,'f_float':-2.5,'f_int32':-2,"
        "'f_int64':-1,'f_sfixed32':-2,'f_sfixed64':-3,'f_sint32':-2,'f_sint64':2,"
        "'f_string':'x','f_uint32':2147483648,'f_uint64':'18446744073709551615',"
        "'fm':'a.bC,d','m':{'k':9,'z':0},'o_a':'','opt':0,'r_double':[1.5],"
        "'r_int32':[1,-1,150],'r_string':['a',''],'st':{'a':[1,'x',null,{'b':false}]},"
        "'ts':'2023-11-14T22:13:20.021Z','u32w':0,'val':{'n':0.5},"
        "'any':{'@type':'type.googleapis.com/envoy.config.core.v3.SocketAddress',"
        "'address':'::1','port_value':443}}";
    char *want = strdup(in);
    for (char *p = want; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_t *t = json_loads(want, 0, NULL);
    free(want);
    char *canon = json_dumps(t, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(t);
    PT_CHECK_STR(round_trip(&all, in), canon);
    free(canon);
    /* Defaults are not written, so they do not come back; lowerCamelCase names are read. */
    PT_CHECK_STR(round_trip(&all, "{'fInt32':0,'fString':'','fEnum':'COLOR_UNSET','rInt32':[]}"),
                 "{}");
    PT_CHECK_STR(round_trip(&all, "{'fInt64':'-5','fUint32':'7','fDouble':'NaN','dur':"
                                  "{'seconds':3,'nanos':1}}"),
                 "{\"dur\":\"3.000000001s\",\"f_double\":\"NaN\",\"f_int64\":-5,"
                 "\"f_uint32\":7}");
    PT_CHECK_STR(round_trip(&all, "{'ts':'2023-11-14T23:13:20+01:00'}"),
                 "{\"ts\":\"2023-11-14T22:13:20Z\"}");
}

static void test_encode_errors(void)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{'bogus':1}", "ENCODE ERROR: bogus: unknown field of test.All"},
        {"{'child':{'bogus':1}}", "ENCODE ERROR: child.bogus: unknown field of test.All"},
        {"{'f_int32':1,'fInt32':2}", "ENCODE ERROR: fInt32: given twice (as f_int32 and fInt32)"},
        {"{'dur':'1.5'}", "ENCODE ERROR: dur: is not a duration"},
        {"{'ts':'yesterday'}", "ENCODE ERROR: ts: is not a timestamp"},
        {"{'f_enum':'GREEN'}", "ENCODE ERROR: f_enum: \"GREEN\" is not a value of test.Color"},
        {"{'f_int32':2147483648}", "ENCODE ERROR: f_int32: 2147483648 is out of range"},
        {"{'f_uint32':-1}", "ENCODE ERROR: f_uint32: -1 is out of range"},
        {"{'f_bool':1}", "ENCODE ERROR: f_bool: is not a boolean"},
        {"{'f_bytes':'!!'}", "ENCODE ERROR: f_bytes: is not base64"},
        {"{'r_int32':[1,'x']}", "ENCODE ERROR: r_int32[1]: is not an integer"},
        {"{'o_a':'x','o_b':1}", "ENCODE ERROR: more than one member of oneof choice"},
        {"{'any':{'@type':'type.googleapis.com/foo.Bar'}}",
         "ENCODE ERROR: any: Any of type \"type.googleapis.com/foo.Bar\": petrel does not "
         "know this type"},
        {"{'any':{'@type':'type.googleapis.com/envoy.config.core.v3.SocketAddress','x':1}}",
         "ENCODE ERROR: any.x: unknown field of envoy.config.core.v3.SocketAddress"},
        {"{'m':[]}", "ENCODE ERROR: m: is not an object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = round_trip(&all, cases[i].json);
        if (strcmp(got, cases[i].want) != 0)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK_STR(got, cases[i].want);
    }
}

/* A DiscoveryRequest from its JSON form: the bytes protobuf gives for it, field by field. */
static void test_discovery_request_bytes(void)
{
    const pt_pb_message_t *req = pt_pb_message_find("envoy.service.discovery.v3.DiscoveryRequest");
    PT_CHECK(req != NULL);
    json_t *t = json_loads("{\"version_info\":\"1\",\"node\":{\"id\":\"n\"},\"resource_names\":"
                           "[\"a\",\"b\"],\"type_url\":\"t\",\"response_nonce\":\"x\","
                           "\"error_detail\":{\"code\":3,\"message\":\"bad\"}}",
                           0, NULL);
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    PT_CHECK_INT(pt_pb_from_json(req, t, &w, err, sizeof(err)), 0);
    uint8_t want[64];
    size_t n = hex("0a 01 31 12 03 0a 01 6e 1a 01 61 1a 01 62 22 01 74 2a 01 78"
                   "32 07 08 03 12 03 62 61 64",
                   want);
    PT_CHECK_MEM(w.buf, w.len, want, n);
    pt_pb_writer_dispose(&w);
    json_decref(t);

    const pt_pb_message_t *delta =
        pt_pb_message_find("envoy.service.discovery.v3.DeltaDiscoveryRequest");
    t = json_loads("{\"type_url\":\"t\",\"initial_resource_versions\":{\"a\":\"1\"}}", 0, NULL);
    pt_pb_writer_init(&w);
    PT_CHECK_INT(pt_pb_from_json(delta, t, &w, err, sizeof(err)), 0);
    n = hex("12 01 74 2a 06 0a 01 61 12 01 31", want);
    PT_CHECK_MEM(w.buf, w.len, want, n);
    pt_pb_writer_dispose(&w);
    json_decref(t);
}

/* The schema's lookups. */
static void test_schema_lookups(void)
{
    PT_CHECK(pt_pb_message_find("envoy.config.cluster.v3.Cluster") != NULL);
    PT_CHECK(pt_pb_message_find("google.protobuf.Duration") == &pt_pb_duration);
    PT_CHECK(pt_pb_message_find("envoy.config.cluster.v3.Nope") == NULL);
    PT_CHECK(pt_pb_message_for_type_url("type.googleapis.com/google.protobuf.Struct") ==
             &pt_pb_struct);
    PT_CHECK(pt_pb_message_for_type_url("example.com/x/envoy.config.cluster.v3.Cluster") != NULL);
    /* A map entry is no type of its own. */
    PT_CHECK(pt_pb_message_for_type_url("type.googleapis.com/google.protobuf.Struct.FieldsEntry") ==
             NULL);
    const pt_pb_message_t *c = pt_pb_message_find("envoy.config.cluster.v3.Cluster");
    const pt_pb_field_t *f = pt_pb_field_by_name(c, "connectTimeout");
    PT_CHECK(f != NULL && f->number == 4 && f->message == &pt_pb_duration);
    PT_CHECK(pt_pb_field_by_name(c, "connect_timeout") == f);
    PT_CHECK(pt_pb_field_by_number(c, 4) == f);
    PT_CHECK(pt_pb_field_by_name(c, "connecttimeout") == NULL);
    /* Sorted, every message once: the lookups rely on it. */
    for (size_t i = 1; i < pt_pb_generated_nmessages; i++)
        PT_CHECK(strcmp(pt_pb_generated_messages[i - 1]->full_name,
                        pt_pb_generated_messages[i]->full_name) < 0);
    for (size_t i = 0; i < pt_pb_message_count(); i++) {
        const pt_pb_message_t *m = pt_pb_message_at(i);
        PT_CHECK(pt_pb_message_find(m->full_name) == m);
        for (unsigned j = 1; j < m->nfields; j++)
            PT_CHECK(m->fields[j - 1].number < m->fields[j].number);
    }
}

int main(void)
{
    PT_RUN(test_every_scalar_type);
    PT_RUN(test_defaults_left_out);
    PT_RUN(test_repeated_occurrences);
    PT_RUN(test_malformed);
    PT_RUN(test_depth_bomb);
    PT_RUN(test_well_known_types);
    PT_RUN(test_any);
    PT_RUN(test_real_schema_paths);
    PT_RUN(test_round_trip);
    PT_RUN(test_encode_errors);
    PT_RUN(test_discovery_request_bytes);
    PT_RUN(test_schema_lookups);
    PT_TEST_EXIT();
}
