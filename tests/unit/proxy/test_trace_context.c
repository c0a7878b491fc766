/* Trace context parsing and formatting (W3C traceparent, B3 single and multi-header), Envoy's
 * x-request-id trace bits and id generation (the encoders: test_span_encoders.c). */
#include <stdlib.h>
#include <string.h>

#include "proxy/trace_context.h"
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
    /* With the length known: the same answers, either case of hex. */
    PT_CHECK_INT(pt_trace_rid_integer_n(rid, strlen(rid), &v), 0);
    PT_CHECK(v == 0xa1b2c3d4ull);
    PT_CHECK_INT(pt_trace_rid_integer_n("ABCDEF09-x", 10, &v), 0);
    PT_CHECK(v == 0xabcdef09ull);
    PT_CHECK_INT(pt_trace_rid_integer_n("1234567", 7, &v), -1);
    PT_CHECK_INT(pt_trace_rid_integer_n("1234567g", 8, &v), -1);
    PT_CHECK_INT(pt_trace_rid_integer_n("g2345678", 8, &v), -1);
    PT_CHECK_INT(pt_trace_rid_integer_n("12 45678", 8, &v), -1);
    PT_CHECK_INT(pt_trace_rid_integer_n(NULL, 0, &v), -1);
    /* Each byte next to the hex ranges, in each position, is refused. */
    static const char edges[] = {'/', ':', '@', 'G', '`', 'g', ' ', '\x10', '\x80', '\xc1'};
    for (unsigned pos = 0; pos < 8; pos++) {
        for (unsigned e = 0; e < sizeof(edges); e++) {
            char id[9] = "09afAF00";
            id[pos] = edges[e];
            PT_CHECK_INT(pt_trace_rid_integer_n(id, 8, &v), -1);
            PT_CHECK_INT(pt_trace_rid_integer(id, &v), -1);
        }
    }
    PT_CHECK_INT(pt_trace_rid_integer_n("09afAF00", 8, &v), 0);
    PT_CHECK(v == 0x09afaf00ull);
    PT_CHECK_INT(pt_trace_rid_integer_n("ffffffff", 8, &v), 0);
    PT_CHECK(v == 0xffffffffull);
    PT_CHECK_INT(pt_trace_rid_status_n(rid, strlen(rid)), pt_trace_rid_status(rid));
    PT_CHECK_INT(pt_trace_rid_status_n(rid, 35), PT_TRACE_NONE);
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

int main(void)
{
    PT_RUN(test_traceparent);
    PT_RUN(test_b3_single);
    PT_RUN(test_b3_multi);
    PT_RUN(test_request_id_bits);
    PT_RUN(test_decide);
    PT_RUN(test_ids);
    PT_TEST_EXIT();
}
