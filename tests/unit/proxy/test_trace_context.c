/* Trace context parsing and formatting (W3C traceparent, B3 single and multi-header), Envoy's
 * x-request-id trace bits, id generation, and the Zipkin encoders (v2 JSON, proto3). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/protobuf.h"
#include "proxy/trace_context.h"
#include "proxy/tracer.h"
#include "pt_test.h"

static void test_traceparent(void)
{
    pt_trace_ctx_t c;
    PT_CHECK_INT(
        pt_trace_parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &c),
        0);
    PT_CHECK(c.trace_hi == 0x0af7651916cd43ddull && c.trace_lo == 0x8448eb211c80319cull);
    PT_CHECK(c.span_id == 0xb7ad6b7169203331ull);
    PT_CHECK_INT(c.sampled, 1);
    PT_CHECK_INT(
        pt_trace_parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", &c),
        0);
    PT_CHECK_INT(c.sampled, 0);
    /* A later version: the four fields are read, more may follow after a '-'. */
    PT_CHECK_INT(pt_trace_parse_traceparent(
                     "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", &c),
                 0);
    static const char *const bad[] = {
        "",
        "garbage",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",     /* no flags */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-", /* v00 is exactly 55 */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  /* version ff */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  /* zero trace */
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  /* zero parent */
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  /* uppercase */
        "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",  /* not hex */
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  /* separator */
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x", /* later version, no '-' */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pt_trace_parse_traceparent(bad[i], &c) == 0) {
            fprintf(stderr, "  accepted: %s\n", bad[i]);
            PT_CHECK(0);
        }
    }
    PT_CHECK_INT(pt_trace_parse_traceparent(NULL, &c), -1);
    char out[56];
    pt_trace_format_traceparent(0x0af7651916cd43ddull, 0x8448eb211c80319cull, 0xb7ad6b7169203331ull,
                                1, out);
    PT_CHECK_STR(out, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    /* A 64-bit trace id goes out zero-padded to 128 bits. */
    pt_trace_format_traceparent(0, 0x1ull, 0x2ull, 0, out);
    PT_CHECK_STR(out, "00-00000000000000000000000000000001-0000000000000002-00");
}

static void test_b3_single(void)
{
    pt_trace_ctx_t c;
    PT_CHECK_INT(pt_trace_parse_b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-"
                                   "05e3ac9a4f6e3b90",
                                   &c),
                 0);
    PT_CHECK(c.trace_hi == 0x80f198ee56343ba8ull && c.trace_lo == 0x64fe8b2a57d3eff7ull);
    PT_CHECK(c.span_id == 0xe457b5a2e4d86bd1ull && c.parent_id == 0x05e3ac9a4f6e3b90ull);
    PT_CHECK_INT(c.sampled, 1);
    PT_CHECK_INT(pt_trace_parse_b3("64fe8b2a57d3eff7-e457b5a2e4d86bd1", &c), 0);
    PT_CHECK(c.trace_hi == 0 && c.trace_lo == 0x64fe8b2a57d3eff7ull);
    PT_CHECK_INT(c.sampled, -1);
    PT_CHECK_INT(pt_trace_parse_b3("64fe8b2a57d3eff7-e457b5a2e4d86bd1-d", &c), 0);
    PT_CHECK(c.debug && c.sampled == 1);
    /* A decision alone. */
    PT_CHECK_INT(pt_trace_parse_b3("0", &c), 0);
    PT_CHECK(c.sampled == 0 && c.span_id == 0);
    static const char *const bad[] = {"2",
                                      "",
                                      "64fe8b2a57d3eff7",
                                      "64fe8b2a57d3eff7-e457b5a2e4d86bd",
                                      "64fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
                                      "64fe8b2a57d3eff7-e457b5a2e4d86bd1-true",
                                      "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9",
                                      "0000000000000000-e457b5a2e4d86bd1",
                                      "64fe8b2a57d3eff7-0000000000000000",
                                      "64fe8b2a57d3ef-e457b5a2e4d86bd1",
                                      "zzfe8b2a57d3eff7-e457b5a2e4d86bd1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pt_trace_parse_b3(bad[i], &c) == 0) {
            fprintf(stderr, "  accepted: %s\n", bad[i]);
            PT_CHECK(0);
        }
    }
}

static void test_b3_multi(void)
{
    pt_trace_ctx_t c;
    PT_CHECK_INT(pt_trace_parse_b3_multi("463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312",
                                         "0020000000000001", "1", NULL, &c),
                 0);
    PT_CHECK(c.trace_hi == 0x463ac35c9f6413adull && c.span_id == 0xa2fb4a1d1a96d312ull);
    PT_CHECK(c.parent_id == 0x0020000000000001ull && c.sampled == 1);
    PT_CHECK_INT(
        pt_trace_parse_b3_multi("463ac35c9f6413ad", "a2fb4a1d1a96d312", NULL, "false", NULL, &c),
        0);
    PT_CHECK_INT(c.sampled, 0);
    /* x-b3-flags: 1 is debug, which implies sampled. */
    PT_CHECK_INT(
        pt_trace_parse_b3_multi("463ac35c9f6413ad", "a2fb4a1d1a96d312", NULL, "0", "1", &c), 0);
    PT_CHECK(c.debug && c.sampled == 1);
    /* No ids: no context, but the decision stands. */
    PT_CHECK_INT(pt_trace_parse_b3_multi(NULL, NULL, NULL, "1", NULL, &c), -1);
    PT_CHECK_INT(c.sampled, 1);
    PT_CHECK_INT(pt_trace_parse_b3_multi("463ac35c9f6413ad", NULL, NULL, NULL, NULL, &c), -1);
    PT_CHECK_INT(
        pt_trace_parse_b3_multi("463ac35c9f6413ad", "a2fb4a1d1a96d31", NULL, NULL, NULL, &c), -1);
    PT_CHECK_INT(
        pt_trace_parse_b3_multi("463ac35c9f6413ad", "a2fb4a1d1a96d312", "xyz", NULL, NULL, &c), -1);
    PT_CHECK(c.trace_lo == 0 && c.span_id == 0); /* nothing half-read */
}

static void test_request_id_bits(void)
{
    char rid[] = "a1b2c3d4-0000-4000-8000-000000000000";
    PT_CHECK_INT(pt_trace_rid_status(rid), PT_TRACE_NONE);
    PT_CHECK_INT(pt_trace_rid_set_status(rid, PT_TRACE_SAMPLED), 0);
    PT_CHECK_STR(rid, "a1b2c3d4-0000-9000-8000-000000000000");
    PT_CHECK_INT(pt_trace_rid_status(rid), PT_TRACE_SAMPLED);
    pt_trace_rid_set_status(rid, PT_TRACE_FORCED);
    PT_CHECK_INT(rid[14], 'a');
    PT_CHECK_INT(pt_trace_rid_status(rid), PT_TRACE_FORCED);
    pt_trace_rid_set_status(rid, PT_TRACE_CLIENT);
    PT_CHECK_INT(pt_trace_rid_status(rid), PT_TRACE_CLIENT);
    pt_trace_rid_set_status(rid, PT_TRACE_NONE);
    PT_CHECK_INT(rid[14], '4');
    char notuuid[] = "my-request";
    PT_CHECK_INT(pt_trace_rid_set_status(notuuid, PT_TRACE_SAMPLED), -1);
    PT_CHECK_STR(notuuid, "my-request");
    PT_CHECK_INT(pt_trace_rid_status("short"), PT_TRACE_NONE);
    PT_CHECK_INT(pt_trace_rid_status(NULL), PT_TRACE_NONE);
    uint64_t v;
    PT_CHECK_INT(pt_trace_rid_integer(rid, &v), 0);
    PT_CHECK(v == 0xa1b2c3d4ull);
    PT_CHECK_INT(pt_trace_rid_integer("1234567", &v), -1);
    PT_CHECK_INT(pt_trace_rid_integer("zzzzzzzz-", &v), -1);
    PT_CHECK_INT(pt_trace_rid_integer(NULL, &v), -1);
}

static void test_decide(void)
{
    const pt_fraction_t all = {10000, 10000}, none = {0, 10000}, half = {5000, 10000};
    /* random_sampling on the request id's integer modulo 10000. */
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 4999, 0, 0, 0, all, half, all), PT_TRACE_SAMPLED);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 5000, 0, 0, 0, all, half, all), PT_TRACE_NONE);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 0xa1b2c3d4, 0, 0, 0, all, half, all),
                 0xa1b2c3d4ull % 10000 < 5000 ? PT_TRACE_SAMPLED : PT_TRACE_NONE);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 10003, 0, 0, 0, all, half, all), PT_TRACE_SAMPLED);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 0, 0, 0, 0, all, none, all), PT_TRACE_NONE);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 9999, 0, 0, 0, all, all, all), PT_TRACE_SAMPLED);
    /* A reason already in the id stays (the previous hop decided), unless overall says no. */
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_SAMPLED, 9999, 0, 0, 0, all, none, all),
                 PT_TRACE_SAMPLED);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_FORCED, 9999, 0, 0, 0, all, none, half), PT_TRACE_NONE);
    /* Client before force before random; client_sampling on its own draw. */
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 1, 1, 1, 0, all, all, all), PT_TRACE_CLIENT);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 1, 1, 1, 0, none, all, all), PT_TRACE_FORCED);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 1, 1, 0, 7000, half, none, all), PT_TRACE_NONE);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 1, 1, 0, 4000, half, none, all), PT_TRACE_CLIENT);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 1, 0, 1, 0, all, none, all), PT_TRACE_FORCED);
    /* overall_sampling 0 undoes everything. */
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 1, 1, 1, 0, all, all, none), PT_TRACE_NONE);
    /* A route's FractionalPercent in millions sees the same (integer % 10000) value. */
    const pt_fraction_t m = {5000, 1000000};
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 4999, 0, 0, 0, all, m, all), PT_TRACE_SAMPLED);
    PT_CHECK_INT(pt_trace_decide(PT_TRACE_NONE, 5000, 0, 0, 0, all, m, all), PT_TRACE_NONE);
}

static void test_ids(void)
{
    char hex[33];
    PT_CHECK_INT(pt_trace_id_hex(0, 0xabcull, 1, hex), 16);
    PT_CHECK_STR(hex, "0000000000000abc");
    PT_CHECK_INT(pt_trace_id_hex(0, 0xabcull, 0, hex), 32);
    PT_CHECK_STR(hex, "00000000000000000000000000000abc");
    PT_CHECK_INT(pt_trace_id_hex(1, 2, 1, hex), 32);
    uint64_t prev = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t id = pt_trace_new_id();
        PT_CHECK(id != 0 && id != prev);
        prev = id;
    }
}

/* Two spans through both encoders. */
static void test_zipkin_encoders(void)
{
    pt_tracer_t t = {.service_name = "svc"};
    size_t sz = sizeof(pt_span_rec_t) + 2 * sizeof(pt_span_tag_t);
    pt_span_rec_t *a = calloc(1, sz), *b = calloc(1, sz);
    PT_CHECK(a != NULL && b != NULL);
    *a = (pt_span_rec_t){.tracer = &t,
                         .trace_lo = 0x1234,
                         .id = 0x55,
                         .start_us = 1700000000000000ull,
                         .duration_us = 42,
                         .kind = PT_SPAN_SERVER,
                         .shared = 1,
                         .name = "op",
                         .local_ip = "10.0.0.1",
                         .ntags = 2};
    a->tags[0] = (pt_span_tag_t){"http.method", "GET"};
    a->tags[1] = (pt_span_tag_t){"component", "proxy"};
    *b = (pt_span_rec_t){.tracer = &t,
                         .trace_hi = 0x1,
                         .trace_lo = 0x2,
                         .id = 0x66,
                         .parent_id = 0x55,
                         .start_us = 5,
                         .duration_us = 1,
                         .kind = PT_SPAN_CLIENT,
                         .name = "c"};
    pt_span_rec_t *spans[2] = {a, b};
    size_t len;
    char *text = pt_zipkin_encode_json(spans, 2, &len);
    PT_CHECK(text != NULL && len == strlen(text));
    json_error_t err;
    json_t *arr = json_loads(text, 0, &err);
    free(text);
    PT_CHECK(json_is_array(arr) && json_array_size(arr) == 2);
    json_t *s0 = json_array_get(arr, 0), *s1 = json_array_get(arr, 1);
    PT_CHECK_STR(json_string_value(json_object_get(s0, "traceId")), "0000000000001234");
    PT_CHECK_STR(json_string_value(json_object_get(s0, "id")), "0000000000000055");
    PT_CHECK(json_object_get(s0, "parentId") == NULL);
    PT_CHECK_STR(json_string_value(json_object_get(s0, "kind")), "SERVER");
    PT_CHECK(json_is_true(json_object_get(s0, "shared")));
    PT_CHECK(json_integer_value(json_object_get(s0, "timestamp")) == 1700000000000000ll);
    PT_CHECK_STR(json_string_value(json_object_get(json_object_get(s0, "localEndpoint"), "ipv4")),
                 "10.0.0.1");
    PT_CHECK_STR(json_string_value(json_object_get(json_object_get(s0, "tags"), "http.method")),
                 "GET");
    PT_CHECK_STR(json_string_value(json_object_get(s1, "traceId")),
                 "00000000000000010000000000000002");
    PT_CHECK_STR(json_string_value(json_object_get(s1, "parentId")), "0000000000000055");
    PT_CHECK_STR(json_string_value(json_object_get(s1, "kind")), "CLIENT");
    json_decref(arr);

    uint8_t *pb = pt_zipkin_encode_proto(spans, 2, &len);
    PT_CHECK(pb != NULL);
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, pb, len);
    int nspans = 0;
    while (!pt_pb_reader_done(&r)) {
        uint32_t field;
        int wt;
        const uint8_t *p;
        size_t n;
        PT_CHECK_INT(pt_pb_read_tag(&r, &field, &wt), 0);
        PT_CHECK(field == 1 && wt == 2);
        PT_CHECK_INT(pt_pb_read_len(&r, &p, &n), 0);
        pt_pb_reader_t sr;
        pt_pb_reader_init(&sr, p, n);
        int saw_trace = 0, saw_kind = 0, ntags = 0;
        while (!pt_pb_reader_done(&sr)) {
            PT_CHECK_INT(pt_pb_read_tag(&sr, &field, &wt), 0);
            const uint8_t *q;
            size_t qn;
            uint64_t v;
            if (field == 1) {
                PT_CHECK_INT(pt_pb_read_len(&sr, &q, &qn), 0);
                PT_CHECK_INT(qn, nspans == 0 ? 8 : 16);
                PT_CHECK_INT(q[qn - 1], nspans == 0 ? 0x34 : 0x02);
                saw_trace = 1;
            } else if (field == 4) {
                PT_CHECK_INT(pt_pb_read_varint(&sr, &v), 0);
                PT_CHECK_INT(v, nspans == 0 ? 2 : 1); /* SERVER, CLIENT */
                saw_kind = 1;
            } else if (field == 6) {
                PT_CHECK_INT(wt, 1);
                PT_CHECK_INT(pt_pb_read_fixed64(&sr, &v), 0);
                PT_CHECK(v == (nspans == 0 ? 1700000000000000ull : 5));
            } else if (field == 11) {
                ntags++;
                PT_CHECK_INT(pt_pb_skip(&sr, wt), 0);
            } else {
                PT_CHECK_INT(pt_pb_skip(&sr, wt), 0);
            }
        }
        PT_CHECK(saw_trace && saw_kind);
        PT_CHECK_INT(ntags, nspans == 0 ? 2 : 0);
        nspans++;
    }
    PT_CHECK_INT(nspans, 2);
    free(pb);
    free(a);
    free(b);
}

/* Strings are escaped eight bytes at a time while they are plain: special bytes after the
 * first words, and at the very end, must still be found. */
static void test_zipkin_json_escaping(void)
{
    pt_tracer_t t = {.service_name = "s\"vc"};
    size_t sz = sizeof(pt_span_rec_t) + 3 * sizeof(pt_span_tag_t);
    pt_span_rec_t *a = calloc(1, sz);
    PT_CHECK(a != NULL);
    *a = (pt_span_rec_t){.tracer = &t,
                         .trace_lo = 1,
                         .id = 2,
                         .start_us = 1,
                         .duration_us = 1,
                         .name = "0123456789abcdef\\",
                         .ntags = 3};
    a->tags[0] = (pt_span_tag_t){"k", "0123456789abcdefgh\nij\"kl\x01"};
    a->tags[1] = (pt_span_tag_t){"utf8", "0123456789abcdef\xc3\xa9\xe2\x82\xac"};
    a->tags[2] = (pt_span_tag_t){"bad", "0123456789abcdef\xe9x\xc3"};
    pt_span_rec_t *spans[1] = {a};
    size_t len;
    char *text = pt_zipkin_encode_json(spans, 1, &len);
    PT_CHECK(text != NULL);
    json_error_t err;
    json_t *arr = json_loads(text, 0, &err);
    free(text);
    free(a);
    PT_CHECK(arr != NULL);
    json_t *s0 = json_array_get(arr, 0), *tags = json_object_get(s0, "tags");
    PT_CHECK_STR(json_string_value(json_object_get(s0, "name")), "0123456789abcdef\\");
    PT_CHECK_STR(
        json_string_value(json_object_get(json_object_get(s0, "localEndpoint"), "serviceName")),
        "s\"vc");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "k")), "0123456789abcdefgh\nij\"kl\x01");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "utf8")),
                 "0123456789abcdef\xc3\xa9\xe2\x82\xac");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "bad")),
                 "0123456789abcdef\xef\xbf\xbdx\xef\xbf\xbd");
    json_decref(arr);
}

/* The first length-delimited field `want` of a message (0 when absent). */
static int pb_field(const uint8_t *p, size_t n, uint32_t want, const uint8_t **out, size_t *outlen)
{
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, p, n);
    while (!pt_pb_reader_done(&r)) {
        uint32_t f;
        int wt;
        if (pt_pb_read_tag(&r, &f, &wt) != 0)
            return -1;
        if (f == want && wt == 2)
            return pt_pb_read_len(&r, out, outlen) == 0 ? 1 : -1;
        if (pt_pb_skip(&r, wt) != 0)
            return -1;
    }
    return 0;
}

/* An OTLP ExportTraceServiceRequest: resource attributes, one span's ids, kind, times,
 * attributes and ERROR status. */
static void test_otel_encoder(void)
{
    pt_tracer_t t = {.otel_service_name = "checkout",
                     .otel_env_attrs = "team=mesh,bad,=x,service.name=ignored,k=v"};
    size_t sz = sizeof(pt_span_rec_t) + 2 * sizeof(pt_span_tag_t);
    pt_span_rec_t *a = calloc(1, sz);
    PT_CHECK(a != NULL);
    *a = (pt_span_rec_t){.tracer = &t,
                         .trace_hi = 0x0102030405060708ull,
                         .trace_lo = 9,
                         .id = 0xaa,
                         .parent_id = 0xbb,
                         .start_us = 1000,
                         .duration_us = 5,
                         .kind = PT_SPAN_SERVER,
                         .name = "op",
                         .ntags = 2};
    a->tags[0] = (pt_span_tag_t){"http.status_code", "503"};
    a->tags[1] = (pt_span_tag_t){"error", "true"};
    pt_span_rec_t *spans[1] = {a};
    size_t len;
    uint8_t *msg = pt_otel_encode(&t, spans, 1, &len);
    free(a);
    PT_CHECK(msg != NULL);
    const uint8_t *rs, *res, *ss, *span, *q;
    size_t rslen, reslen, sslen, spanlen, qlen;
    PT_CHECK_INT(pb_field(msg, len, 1, &rs, &rslen), 1);
    PT_CHECK_INT(pb_field(rs, rslen, 1, &res, &reslen), 1);
    /* Resource attributes: service.name, then the environment's well-formed pairs, not its
     * service.name (service_name wins). */
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, res, reslen);
    const char *want[][2] = {{"service.name", "checkout"}, {"team", "mesh"}, {"k", "v"}};
    int nattr = 0;
    while (!pt_pb_reader_done(&r)) {
        uint32_t f;
        int wt;
        PT_CHECK_INT(pt_pb_read_tag(&r, &f, &wt), 0);
        PT_CHECK_INT(pt_pb_read_len(&r, &q, &qlen), 0);
        PT_CHECK(nattr < 3);
        const uint8_t *k, *v, *sv;
        size_t klen, vlen, svlen;
        PT_CHECK_INT(pb_field(q, qlen, 1, &k, &klen), 1);
        PT_CHECK_INT(pb_field(q, qlen, 2, &v, &vlen), 1);
        PT_CHECK_INT(pb_field(v, vlen, 1, &sv, &svlen), 1);
        PT_CHECK_MEM(k, klen, want[nattr][0], strlen(want[nattr][0]));
        PT_CHECK_MEM(sv, svlen, want[nattr][1], strlen(want[nattr][1]));
        nattr++;
    }
    PT_CHECK_INT(nattr, 3);
    PT_CHECK_INT(pb_field(rs, rslen, 2, &ss, &sslen), 1);
    PT_CHECK_INT(pb_field(ss, sslen, 2, &span, &spanlen), 1);
    PT_CHECK_INT(pb_field(span, spanlen, 1, &q, &qlen), 1);
    PT_CHECK_INT(qlen, 16);
    PT_CHECK(q[0] == 1 && q[7] == 8 && q[15] == 9);
    PT_CHECK_INT(pb_field(span, spanlen, 2, &q, &qlen), 1);
    PT_CHECK(qlen == 8 && q[7] == 0xaa);
    PT_CHECK_INT(pb_field(span, spanlen, 4, &q, &qlen), 1);
    PT_CHECK(qlen == 8 && q[7] == 0xbb);
    PT_CHECK_INT(pb_field(span, spanlen, 15, &q, &qlen), 1);
    PT_CHECK(qlen == 2 && q[0] == 0x18 && q[1] == 2); /* status.code = ERROR */
    pt_pb_reader_init(&r, span, spanlen);
    uint64_t kind = 0, start = 0, end = 0;
    while (!pt_pb_reader_done(&r)) {
        uint32_t f;
        int wt;
        PT_CHECK_INT(pt_pb_read_tag(&r, &f, &wt), 0);
        if (f == 6)
            PT_CHECK_INT(pt_pb_read_varint(&r, &kind), 0);
        else if (f == 7)
            PT_CHECK_INT(pt_pb_read_fixed64(&r, &start), 0);
        else if (f == 8)
            PT_CHECK_INT(pt_pb_read_fixed64(&r, &end), 0);
        else
            PT_CHECK_INT(pt_pb_skip(&r, wt), 0);
    }
    PT_CHECK_INT(kind, 2);
    PT_CHECK(start == 1000000 && end == 1005000);
    free(msg);
}

int main(void)
{
    PT_RUN(test_traceparent);
    PT_RUN(test_b3_single);
    PT_RUN(test_b3_multi);
    PT_RUN(test_request_id_bits);
    PT_RUN(test_decide);
    PT_RUN(test_ids);
    PT_RUN(test_zipkin_encoders);
    PT_RUN(test_zipkin_json_escaping);
    PT_RUN(test_otel_encoder);
    PT_TEST_EXIT();
}
