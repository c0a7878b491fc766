/* Unit tests for the protobuf wire format (proxy/protobuf.c): every primitive read from
 * hand-written bytes, every malformed input refused with its code and without reading past
 * the end, and the writer's output read back. */
#include "proxy/protobuf.h"
#include "pt_test.h"

#include <stdint.h>

/* Hex text ("0a 03 61") to bytes; returns the count. */
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

/* Reads from a heap copy of exactly len bytes, so ASan sees any read past the end. */
static uint8_t *exact(const uint8_t *p, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    memcpy(c, p, len);
    return c;
}

static void test_varint(void)
{
    static const struct {
        const char *hex;
        uint64_t value;
    } cases[] = {
        {"00", 0},
        {"01", 1},
        {"7f", 127},
        {"80 01", 128},
        {"ac 02", 300},
        {"ff ff ff ff 0f", 0xffffffffu},
        {"ff ff ff ff ff ff ff ff ff 01", UINT64_MAX},
        /* A non-minimal encoding is valid protobuf (parsers accept it). */
        {"80 80 80 00", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[16];
        size_t n = hex(cases[i].hex, buf);
        uint8_t *b = exact(buf, n);
        pt_pb_reader_t r;
        pt_pb_reader_init(&r, b, n);
        uint64_t v = 12345;
        int rc = pt_pb_read_varint(&r, &v);
        free(b);
        PT_CHECK_INT(rc, 0);
        PT_CHECK(v == cases[i].value);
        PT_CHECK(pt_pb_reader_done(&r));
    }
}

static void test_varint_errors(void)
{
    static const struct {
        const char *hex;
        int rc;
    } cases[] = {
        {"", PT_PB_ETRUNCATED},
        {"80", PT_PB_ETRUNCATED},
        {"ff ff ff", PT_PB_ETRUNCATED},
        /* 10th byte beyond bit 63 */
        {"ff ff ff ff ff ff ff ff ff 02", PT_PB_EOVERLONG},
        /* 11 bytes */
        {"80 80 80 80 80 80 80 80 80 80 00", PT_PB_EOVERLONG},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[16];
        size_t n = hex(cases[i].hex, buf);
        uint8_t *b = exact(buf, n);
        pt_pb_reader_t r;
        pt_pb_reader_init(&r, b, n);
        uint64_t v;
        int rc = pt_pb_read_varint(&r, &v);
        free(b);
        PT_CHECK_INT(rc, cases[i].rc);
    }
}

static void test_zigzag(void)
{
    static const struct {
        int64_t v;
        uint64_t z;
    } cases[] = {{0, 0},
                 {-1, 1},
                 {1, 2},
                 {-2, 3},
                 {2147483647, 4294967294u},
                 {-2147483648LL, 4294967295u},
                 {INT64_MAX, UINT64_MAX - 1},
                 {INT64_MIN, UINT64_MAX}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        PT_CHECK(pt_pb_zigzag_encode(cases[i].v) == cases[i].z);
        PT_CHECK(pt_pb_zigzag_decode(cases[i].z) == cases[i].v);
    }
}

static void test_fixed(void)
{
    uint8_t buf[16];
    size_t n = hex("78 56 34 12 ef cd ab 90 78 56 34 12", buf);
    uint8_t *b = exact(buf, n);
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, b, n);
    uint32_t v32;
    uint64_t v64;
    PT_CHECK_INT(pt_pb_read_fixed32(&r, &v32), 0);
    PT_CHECK(v32 == 0x12345678u);
    PT_CHECK_INT(pt_pb_read_fixed64(&r, &v64), 0);
    PT_CHECK(v64 == 0x1234567890abcdefULL);
    PT_CHECK(pt_pb_reader_done(&r));
    free(b);
    /* 3 bytes for a fixed32, 7 for a fixed64: truncated, nothing consumed past the end. */
    b = exact(buf, 7);
    pt_pb_reader_init(&r, b, 3);
    PT_CHECK_INT(pt_pb_read_fixed32(&r, &v32), PT_PB_ETRUNCATED);
    pt_pb_reader_init(&r, b, 7);
    PT_CHECK_INT(pt_pb_read_fixed64(&r, &v64), PT_PB_ETRUNCATED);
    free(b);
}

static void test_tags(void)
{
    static const struct {
        const char *hex;
        int rc;
        uint32_t field;
        int wt;
    } cases[] = {
        {"08", 0, 1, PT_PB_WIRE_VARINT},
        {"12", 0, 2, PT_PB_WIRE_LEN},
        {"f8 ff ff ff 0f", 0, PT_PB_MAX_FIELD_NUMBER, PT_PB_WIRE_VARINT},
        {"1d", 0, 3, PT_PB_WIRE_I32},
        {"09", 0, 1, PT_PB_WIRE_I64},
        {"0b", 0, 1, PT_PB_WIRE_SGROUP},        /* read; the decoder refuses groups */
        {"00", PT_PB_EFIELD, 0, 0},             /* field 0 */
        {"80 80 80 80 10", PT_PB_EFIELD, 0, 0}, /* field 2^29 */
        {"0e", PT_PB_EWIRETYPE, 0, 0},
        {"0f", PT_PB_EWIRETYPE, 0, 0},
        {"88", PT_PB_ETRUNCATED, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[16];
        size_t n = hex(cases[i].hex, buf);
        uint8_t *b = exact(buf, n);
        pt_pb_reader_t r;
        pt_pb_reader_init(&r, b, n);
        uint32_t field = 0;
        int wt = -1;
        int rc = pt_pb_read_tag(&r, &field, &wt);
        free(b);
        PT_CHECK_INT(rc, cases[i].rc);
        if (rc == 0) {
            PT_CHECK_INT(field, cases[i].field);
            PT_CHECK_INT(wt, cases[i].wt);
        }
    }
}

static void test_length_delimited(void)
{
    uint8_t buf[16];
    size_t n = hex("03 61 62 63 05 61", buf);
    uint8_t *b = exact(buf, n);
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, b, n);
    const uint8_t *p;
    size_t len;
    PT_CHECK_INT(pt_pb_read_len(&r, &p, &len), 0);
    PT_CHECK_MEM(p, len, "abc", 3);
    /* Says 5 bytes, 1 left. */
    PT_CHECK_INT(pt_pb_read_len(&r, &p, &len), PT_PB_ELENGTH);
    free(b);
    /* A length near 2^64 must not wrap the pointer. */
    n = hex("ff ff ff ff ff ff ff ff ff 01 00", buf);
    b = exact(buf, n);
    pt_pb_reader_init(&r, b, n);
    PT_CHECK_INT(pt_pb_read_len(&r, &p, &len), PT_PB_ELENGTH);
    free(b);
}

static void test_skip(void)
{
    uint8_t buf[32];
    size_t n = hex("96 01 01 02 03 04 05 06 07 08 02 aa bb 01 02 03 04", buf);
    uint8_t *b = exact(buf, n);
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, b, n);
    PT_CHECK_INT(pt_pb_skip(&r, PT_PB_WIRE_VARINT), 0);
    PT_CHECK_INT(pt_pb_skip(&r, PT_PB_WIRE_I64), 0);
    PT_CHECK_INT(pt_pb_skip(&r, PT_PB_WIRE_LEN), 0);
    PT_CHECK_INT(pt_pb_skip(&r, PT_PB_WIRE_I32), 0);
    PT_CHECK(pt_pb_reader_done(&r));
    PT_CHECK_INT(pt_pb_skip(&r, PT_PB_WIRE_SGROUP), PT_PB_EWIRETYPE);
    PT_CHECK_INT(pt_pb_skip(&r, PT_PB_WIRE_EGROUP), PT_PB_EWIRETYPE);
    PT_CHECK_INT(pt_pb_skip(&r, PT_PB_WIRE_VARINT), PT_PB_ETRUNCATED);
    free(b);
}

static void test_writer(void)
{
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    pt_pb_put_tag(&w, 1, PT_PB_WIRE_VARINT);
    pt_pb_put_varint(&w, 300);
    pt_pb_put_bytes(&w, 2, "hi", 2);
    pt_pb_put_tag(&w, 3, PT_PB_WIRE_I32);
    pt_pb_put_fixed32(&w, 0x01020304);
    pt_pb_put_tag(&w, 4, PT_PB_WIRE_I64);
    pt_pb_put_fixed64(&w, 1);
    /* A nested message of 200 bytes: its length takes two bytes, put in front afterwards. */
    size_t mark = pt_pb_begin_len(&w, 5);
    for (int i = 0; i < 100; i++) {
        pt_pb_put_tag(&w, 1, PT_PB_WIRE_VARINT);
        pt_pb_put_varint(&w, (uint64_t)i);
    }
    pt_pb_end_len(&w, mark);
    PT_CHECK(!w.failed);
    uint8_t want[32];
    size_t n = hex("08 ac 02 12 02 68 69 1d 04 03 02 01 21 01 00 00 00 00 00 00 00 2a c8 01", want);
    PT_CHECK(w.len == n + 200);
    PT_CHECK_MEM(w.buf, n, want, n);
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, w.buf + n - 3, 203);
    uint32_t field;
    int wt;
    const uint8_t *p;
    size_t len;
    PT_CHECK_INT(pt_pb_read_tag(&r, &field, &wt), 0);
    PT_CHECK_INT(field, 5);
    PT_CHECK_INT(pt_pb_read_len(&r, &p, &len), 0);
    PT_CHECK_INT(len, 200);
    PT_CHECK(p[0] == 0x08 && p[1] == 0 && p[198] == 0x08 && p[199] == 99);
    pt_pb_writer_dispose(&w);
}

static void test_writer_varints_round_trip(void)
{
    static const uint64_t values[] = {
        0, 1, 127, 128, 16383, 16384, 0xffffffffu, (uint64_t)1 << 63, UINT64_MAX};
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        pt_pb_put_varint(&w, values[i]);
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, w.buf, w.len);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint64_t v;
        PT_CHECK_INT(pt_pb_read_varint(&r, &v), 0);
        PT_CHECK(v == values[i]);
    }
    PT_CHECK(pt_pb_reader_done(&r));
    pt_pb_writer_dispose(&w);
}

int main(void)
{
    PT_RUN(test_varint);
    PT_RUN(test_varint_errors);
    PT_RUN(test_zigzag);
    PT_RUN(test_fixed);
    PT_RUN(test_tags);
    PT_RUN(test_length_delimited);
    PT_RUN(test_skip);
    PT_RUN(test_writer);
    PT_RUN(test_writer_varints_round_trip);
    PT_TEST_EXIT();
}
