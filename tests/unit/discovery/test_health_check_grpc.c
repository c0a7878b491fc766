/* Unit tests for the gRPC health check's messages: HealthCheckRequest framed as gRPC sends
 * it, and HealthCheckResponse read from a response body whatever else the message holds,
 * refusing what is not exactly one well-formed, uncompressed message. */
#include <string.h>

#include "discovery/health_check_grpc.h"
#include "pt_test.h"

static void test_encode_request(void)
{
    unsigned char out[400];
    size_t n = pt_hc_grpc_encode_request("", out);
    static const unsigned char empty[] = {0, 0, 0, 0, 0};
    PT_CHECK_INT(n, 5);
    PT_CHECK(memcmp(out, empty, 5) == 0);
    n = pt_hc_grpc_encode_request("backend", out);
    static const unsigned char backend[] = {0, 0, 0, 0, 9, 0x0a, 7, 'b', 'a', 'c', 'k', 'e', 'n', 'd'};
    PT_CHECK_INT(n, sizeof(backend));
    PT_CHECK(memcmp(out, backend, n) == 0);
    char longname[300];
    memset(longname, 's', 299);
    longname[299] = '\0';
    n = pt_hc_grpc_encode_request(longname, out); /* a two-byte length: 299 = 0xab 0x02 */
    PT_CHECK_INT(n, 5 + 1 + 2 + 299);
    PT_CHECK(out[4] == 302 - 256 && out[3] == 1 && out[5] == 0x0a && out[6] == 0xab &&
             out[7] == 0x02 && out[8] == 's');
}

static int parse(const unsigned char *b, size_t n)
{
    return pt_hc_grpc_parse_response(b, n);
}

static void test_parse_response(void)
{
    static const unsigned char serving[] = {0, 0, 0, 0, 2, 0x08, 1};
    static const unsigned char not_serving[] = {0, 0, 0, 0, 2, 0x08, 2};
    static const unsigned char empty[] = {0, 0, 0, 0, 0}; /* status absent: UNKNOWN */
    PT_CHECK_INT(parse(serving, sizeof(serving)), 1);
    PT_CHECK_INT(parse(not_serving, sizeof(not_serving)), 2);
    PT_CHECK_INT(parse(empty, sizeof(empty)), 0);
    /* unknown fields of every wire type around the status, which is read */
    static const unsigned char extra_ok[] = {0, 0, 0, 0, 22, 0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4,
                                             5, 6, 7, 8, 0x08, 1, 0x22, 1, 'x', 0x2d, 1, 2, 3, 4};
    PT_CHECK_INT(parse(extra_ok, sizeof(extra_ok)), 1);
    static const unsigned char status_big[] = {0, 0, 0, 0, 2, 0x08, 9}; /* unknown enum */
    PT_CHECK_INT(parse(status_big, sizeof(status_big)), 0);
    /* refused: compressed, cut, two messages, a bad varint, a field past the end, no
     * frame at all, wire types 3/4 (groups) */
    static const unsigned char compressed[] = {1, 0, 0, 0, 2, 0x08, 1};
    static const unsigned char cut[] = {0, 0, 0, 0, 3, 0x08, 1};
    static const unsigned char two[] = {0, 0, 0, 0, 2, 0x08, 1, 0, 0, 0, 0, 2, 0x08, 1};
    static const unsigned char bad_varint[] = {0, 0, 0, 0, 2, 0x08, 0x81};
    static const unsigned char past[] = {0, 0, 0, 0, 3, 0x22, 5, 'x'};
    static const unsigned char group[] = {0, 0, 0, 0, 2, 0x0b, 0x0c};
    PT_CHECK_INT(parse(compressed, sizeof(compressed)), -1);
    PT_CHECK_INT(parse(cut, sizeof(cut)), -1);
    PT_CHECK_INT(parse(two, sizeof(two)), -1);
    PT_CHECK_INT(parse(bad_varint, sizeof(bad_varint)), -1);
    PT_CHECK_INT(parse(past, sizeof(past)), -1);
    PT_CHECK_INT(parse(group, sizeof(group)), -1);
    PT_CHECK_INT(parse(serving, 4), -1);
    PT_CHECK_INT(parse(serving, 0), -1);
}

int main(void)
{
    PT_RUN(test_encode_request);
    PT_RUN(test_parse_response);
    PT_TEST_EXIT();
}
