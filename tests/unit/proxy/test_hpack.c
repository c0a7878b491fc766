/* HPACK (proxy/hpack.c): RFC 7541's Appendix B code and Appendix C examples byte for byte,
 * every decoding error, random round trips, and both directions against libnghttp2's own
 * HPACK (nghttp2_hd_deflate_* / nghttp2_hd_inflate_*). */
#include <nghttp2/nghttp2.h>
#include <stdint.h>

#include "proxy/hpack.h"
#include "pt_test.h"

/* Appendix B, the "code as hex" and "len in bits" columns, symbols 0..255 then EOS: an
 * independent check of the codes hpack.c derives from the lengths alone. */
static const struct {
    uint32_t code;
    uint8_t len;
} rfc_code[257] = {
    {0x1ff8, 13},     {0x7fffd8, 23},   {0xfffffe2, 28},  {0xfffffe3, 28},  {0xfffffe4, 28},
    {0xfffffe5, 28},  {0xfffffe6, 28},  {0xfffffe7, 28},  {0xfffffe8, 28},  {0xffffea, 24},
    {0x3ffffffc, 30}, {0xfffffe9, 28},  {0xfffffea, 28},  {0x3ffffffd, 30}, {0xfffffeb, 28},
    {0xfffffec, 28},  {0xfffffed, 28},  {0xfffffee, 28},  {0xfffffef, 28},  {0xffffff0, 28},
    {0xffffff1, 28},  {0xffffff2, 28},  {0x3ffffffe, 30}, {0xffffff3, 28},  {0xffffff4, 28},
    {0xffffff5, 28},  {0xffffff6, 28},  {0xffffff7, 28},  {0xffffff8, 28},  {0xffffff9, 28},
    {0xffffffa, 28},  {0xffffffb, 28},  {0x14, 6},        {0x3f8, 10},      {0x3f9, 10},
    {0xffa, 12},      {0x1ff9, 13},     {0x15, 6},        {0xf8, 8},        {0x7fa, 11},
    {0x3fa, 10},      {0x3fb, 10},      {0xf9, 8},        {0x7fb, 11},      {0xfa, 8},
    {0x16, 6},        {0x17, 6},        {0x18, 6},        {0x0, 5},         {0x1, 5},
    {0x2, 5},         {0x19, 6},        {0x1a, 6},        {0x1b, 6},        {0x1c, 6},
    {0x1d, 6},        {0x1e, 6},        {0x1f, 6},        {0x5c, 7},        {0xfb, 8},
    {0x7ffc, 15},     {0x20, 6},        {0xffb, 12},      {0x3fc, 10},      {0x1ffa, 13},
    {0x21, 6},        {0x5d, 7},        {0x5e, 7},        {0x5f, 7},        {0x60, 7},
    {0x61, 7},        {0x62, 7},        {0x63, 7},        {0x64, 7},        {0x65, 7},
    {0x66, 7},        {0x67, 7},        {0x68, 7},        {0x69, 7},        {0x6a, 7},
    {0x6b, 7},        {0x6c, 7},        {0x6d, 7},        {0x6e, 7},        {0x6f, 7},
    {0x70, 7},        {0x71, 7},        {0x72, 7},        {0xfc, 8},        {0x73, 7},
    {0xfd, 8},        {0x1ffb, 13},     {0x7fff0, 19},    {0x1ffc, 13},     {0x3ffc, 14},
    {0x22, 6},        {0x7ffd, 15},     {0x3, 5},         {0x23, 6},        {0x4, 5},
    {0x24, 6},        {0x5, 5},         {0x25, 6},        {0x26, 6},        {0x27, 6},
    {0x6, 5},         {0x74, 7},        {0x75, 7},        {0x28, 6},        {0x29, 6},
    {0x2a, 6},        {0x7, 5},         {0x2b, 6},        {0x76, 7},        {0x2c, 6},
    {0x8, 5},         {0x9, 5},         {0x2d, 6},        {0x77, 7},        {0x78, 7},
    {0x79, 7},        {0x7a, 7},        {0x7b, 7},        {0x7ffe, 15},     {0x7fc, 11},
    {0x3ffd, 14},     {0x1ffd, 13},     {0xffffffc, 28},  {0xfffe6, 20},    {0x3fffd2, 22},
    {0xfffe7, 20},    {0xfffe8, 20},    {0x3fffd3, 22},   {0x3fffd4, 22},   {0x3fffd5, 22},
    {0x7fffd9, 23},   {0x3fffd6, 22},   {0x7fffda, 23},   {0x7fffdb, 23},   {0x7fffdc, 23},
    {0x7fffdd, 23},   {0x7fffde, 23},   {0xffffeb, 24},   {0x7fffdf, 23},   {0xffffec, 24},
    {0xffffed, 24},   {0x3fffd7, 22},   {0x7fffe0, 23},   {0xffffee, 24},   {0x7fffe1, 23},
    {0x7fffe2, 23},   {0x7fffe3, 23},   {0x7fffe4, 23},   {0x1fffdc, 21},   {0x3fffd8, 22},
    {0x7fffe5, 23},   {0x3fffd9, 22},   {0x7fffe6, 23},   {0x7fffe7, 23},   {0xffffef, 24},
    {0x3fffda, 22},   {0x1fffdd, 21},   {0xfffe9, 20},    {0x3fffdb, 22},   {0x3fffdc, 22},
    {0x7fffe8, 23},   {0x7fffe9, 23},   {0x1fffde, 21},   {0x7fffea, 23},   {0x3fffdd, 22},
    {0x3fffde, 22},   {0xfffff0, 24},   {0x1fffdf, 21},   {0x3fffdf, 22},   {0x7fffeb, 23},
    {0x7fffec, 23},   {0x1fffe0, 21},   {0x1fffe1, 21},   {0x3fffe0, 22},   {0x1fffe2, 21},
    {0x7fffed, 23},   {0x3fffe1, 22},   {0x7fffee, 23},   {0x7fffef, 23},   {0xfffea, 20},
    {0x3fffe2, 22},   {0x3fffe3, 22},   {0x3fffe4, 22},   {0x7ffff0, 23},   {0x3fffe5, 22},
    {0x3fffe6, 22},   {0x7ffff1, 23},   {0x3ffffe0, 26},  {0x3ffffe1, 26},  {0xfffeb, 20},
    {0x7fff1, 19},    {0x3fffe7, 22},   {0x7ffff2, 23},   {0x3fffe8, 22},   {0x1ffffec, 25},
    {0x3ffffe2, 26},  {0x3ffffe3, 26},  {0x3ffffe4, 26},  {0x7ffffde, 27},  {0x7ffffdf, 27},
    {0x3ffffe5, 26},  {0xfffff1, 24},   {0x1ffffed, 25},  {0x7fff2, 19},    {0x1fffe3, 21},
    {0x3ffffe6, 26},  {0x7ffffe0, 27},  {0x7ffffe1, 27},  {0x3ffffe7, 26},  {0x7ffffe2, 27},
    {0xfffff2, 24},   {0x1fffe4, 21},   {0x1fffe5, 21},   {0x3ffffe8, 26},  {0x3ffffe9, 26},
    {0xffffffd, 28},  {0x7ffffe3, 27},  {0x7ffffe4, 27},  {0x7ffffe5, 27},  {0xfffec, 20},
    {0xfffff3, 24},   {0xfffed, 20},    {0x1fffe6, 21},   {0x3fffe9, 22},   {0x1fffe7, 21},
    {0x1fffe8, 21},   {0x7ffff3, 23},   {0x3fffea, 22},   {0x3fffeb, 22},   {0x1ffffee, 25},
    {0x1ffffef, 25},  {0xfffff4, 24},   {0xfffff5, 24},   {0x3ffffea, 26},  {0x7ffff4, 23},
    {0x3ffffeb, 26},  {0x7ffffe6, 27},  {0x3ffffec, 26},  {0x3ffffed, 26},  {0x7ffffe7, 27},
    {0x7ffffe8, 27},  {0x7ffffe9, 27},  {0x7ffffea, 27},  {0x7ffffeb, 27},  {0xffffffe, 28},
    {0x7ffffec, 27},  {0x7ffffed, 27},  {0x7ffffee, 27},  {0x7ffffef, 27},  {0x7fffff0, 27},
    {0x3ffffee, 26},  {0x3fffffff, 30},
};

/* Appendix C.3 to C.6: each example's encoded block, the header list it decodes to and
 * the dynamic table after it (newest first, "name: value"), and the table's size. */
typedef struct cstep {
    const char *name;
    const char *hex;
    const char *headers[8];
    const char *table[8];
    uint32_t size;
} cstep_t;

static const cstep_t appendix_c[] = {
    {"C.3.1",
     "828684410f7777772e6578616d706c652e636f6d",
     {":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com", NULL},
     {":authority: www.example.com", NULL},
     57},
    {"C.3.2",
     "828684be58086e6f2d6361636865",
     {":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com",
      "cache-control: no-cache", NULL},
     {"cache-control: no-cache", ":authority: www.example.com", NULL},
     110},
    {"C.3.3",
     "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
     {":method: GET", ":scheme: https", ":path: /index.html", ":authority: www.example.com",
      "custom-key: custom-value", NULL},
     {"custom-key: custom-value", "cache-control: no-cache", ":authority: www.example.com", NULL},
     164},
    {"C.4.1",
     "828684418cf1e3c2e5f23a6ba0ab90f4ff",
     {":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com", NULL},
     {":authority: www.example.com", NULL},
     57},
    {"C.4.2",
     "828684be5886a8eb10649cbf",
     {":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com",
      "cache-control: no-cache", NULL},
     {"cache-control: no-cache", ":authority: www.example.com", NULL},
     110},
    {"C.4.3",
     "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
     {":method: GET", ":scheme: https", ":path: /index.html", ":authority: www.example.com",
      "custom-key: custom-value", NULL},
     {"custom-key: custom-value", "cache-control: no-cache", ":authority: www.example.com", NULL},
     164},
    {"C.5.1",
     "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1"
     "768747470733a2f2f7777772e6578616d706c652e636f6d",
     {":status: 302", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:21 GMT",
      "location: https://www.example.com", NULL},
     {"location: https://www.example.com", "date: Mon, 21 Oct 2013 20:13:21 GMT",
      "cache-control: private", ":status: 302", NULL},
     222},
    {"C.5.2",
     "4803333037c1c0bf",
     {":status: 307", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:21 GMT",
      "location: https://www.example.com", NULL},
     {":status: 307", "location: https://www.example.com", "date: Mon, 21 Oct 2013 20:13:21 GMT",
      "cache-control: private", NULL},
     222},
    {"C.5.3",
     "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4"
     "153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273"
     "696f6e3d31",
     {":status: 200", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:22 GMT",
      "location: https://www.example.com", "content-encoding: gzip",
      "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1", NULL},
     {"set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
      "content-encoding: gzip", "date: Mon, 21 Oct 2013 20:13:22 GMT", NULL},
     215},
    {"C.6.1",
     "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b9"
     "7c8e9ae82ae43d3",
     {":status: 302", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:21 GMT",
      "location: https://www.example.com", NULL},
     {"location: https://www.example.com", "date: Mon, 21 Oct 2013 20:13:21 GMT",
      "cache-control: private", ":status: 302", NULL},
     222},
    {"C.6.2",
     "4883640effc1c0bf",
     {":status: 307", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:21 GMT",
      "location: https://www.example.com", NULL},
     {":status: 307", "location: https://www.example.com", "date: Mon, 21 Oct 2013 20:13:21 GMT",
      "cache-control: private", NULL},
     222},
    {"C.6.3",
     "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfc"
     "d5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
     {":status: 200", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:22 GMT",
      "location: https://www.example.com", "content-encoding: gzip",
      "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1", NULL},
     {"set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
      "content-encoding: gzip", "date: Mon, 21 Oct 2013 20:13:22 GMT", NULL},
     215},
};

/* ---- helpers ---------------------------------------------------------------------- */

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (uint8_t)v;
    }
    return n;
}

/* "name: value" (a name may start with ':') into a field. */
static pt_hpack_field_t field_of(const char *line)
{
    const char *sep = strstr(line + 1, ": ");
    pt_hpack_field_t f = {line, sep + 2, (uint32_t)(sep - line), (uint32_t)strlen(sep + 2), 0};
    return f;
}

static int field_is(const pt_hpack_field_t *f, const char *line)
{
    pt_hpack_field_t g = field_of(line);
    return f->name_len == g.name_len && f->value_len == g.value_len &&
           memcmp(f->name, g.name, g.name_len) == 0 && memcmp(f->value, g.value, g.value_len) == 0;
}

static uint8_t scratch[1 << 16];
static pt_hpack_field_t list_fields[512];
static char list_buf[1 << 17];

static int decode(pt_hpack_decoder_t *d, const uint8_t *in, size_t len, pt_hpack_list_t *l)
{
    l->fields = list_fields;
    l->cap = sizeof(list_fields) / sizeof(list_fields[0]);
    l->buf = list_buf;
    l->buf_cap = sizeof(list_buf);
    return pt_hpack_decode_list(d, in, len, 1 << 16, scratch, sizeof(scratch), l);
}

/* The block stays in a static buffer: the list's views may point into it. */
static int decode_hex(pt_hpack_decoder_t *d, const char *hex, pt_hpack_list_t *l)
{
    static uint8_t in[1024];
    size_t n = unhex(hex, in);
    return decode(d, in, n, l);
}

/* The table holds exactly these entries, newest first, and has this size. */
static int table_is(const pt_hpack_table_t *t, const char *const *want, uint32_t size)
{
    uint32_t n = 0;
    for (; want[n]; n++) {
        pt_hpack_field_t f;
        if (pt_hpack_table_get(t, n + 1, &f) != 0 || !field_is(&f, want[n]))
            return 0;
    }
    return t->count == n && t->size == size;
}

/* ---- Appendix B ------------------------------------------------------------------- */

static void test_huffman_code_matches_appendix_b(void)
{
    /* Each symbol alone: its code, MSB first, padded with ones. */
    for (unsigned s = 0; s < 256; s++) {
        uint8_t in = (uint8_t)s, out[8], want[8];
        size_t n = pt_hpack_huffman_encode(&in, 1, out);
        unsigned len = rfc_code[s].len, bytes = (len + 7) / 8, pad = bytes * 8 - len;
        uint64_t v = ((uint64_t)rfc_code[s].code << pad) | ((1u << pad) - 1);
        for (unsigned i = 0; i < bytes; i++)
            want[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
        PT_CHECK_INT(pt_hpack_huffman_encoded_len(&in, 1), bytes);
        PT_CHECK_MEM(out, n, want, bytes);
        uint8_t back[4];
        PT_CHECK_INT(pt_hpack_huffman_decode(out, n, back, sizeof(back)), 1);
        PT_CHECK_INT(back[0], s);
    }
    /* EOS itself (30 ones) inside a string is an error (§5.2). */
    PT_CHECK_INT(rfc_code[256].len, 30);
    const uint8_t eos[] = {0xff, 0xff, 0xff, 0xff};
    uint8_t out[8];
    PT_CHECK_INT(pt_hpack_huffman_decode(eos, 4, out, sizeof(out)), PT_HPACK_E_HUFFMAN);
}

static void test_huffman_all_bytes_round_trip(void)
{
    uint8_t in[1024], enc[1024 * 4], dec[1024];
    for (unsigned i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 7 + (i >> 8));
    size_t n = pt_hpack_huffman_encode(in, sizeof(in), enc);
    PT_CHECK_INT(n, pt_hpack_huffman_encoded_len(in, sizeof(in)));
    PT_CHECK_INT(pt_hpack_huffman_decode(enc, n, dec, sizeof(dec)), sizeof(in));
    PT_CHECK(memcmp(in, dec, sizeof(in)) == 0);
    /* The output limit is honoured. */
    PT_CHECK_INT(pt_hpack_huffman_decode(enc, n, dec, sizeof(dec) - 1), PT_HPACK_E_STRING_TOO_LONG);
    PT_CHECK_INT(pt_hpack_huffman_decode(enc, 0, dec, 0), 0);
}

static void test_huffman_padding_rules(void)
{
    uint8_t out[16];
    /* 'a' = 00011, padded with 111: fine. */
    const uint8_t ok[] = {0x1f};
    PT_CHECK_INT(pt_hpack_huffman_decode(ok, 1, out, sizeof(out)), 1);
    PT_CHECK_INT(out[0], 'a');
    /* Padded with zeros: not the start of EOS. */
    const uint8_t zeros[] = {0x18};
    PT_CHECK_INT(pt_hpack_huffman_decode(zeros, 1, out, sizeof(out)), PT_HPACK_E_HUFFMAN);
    /* Padding of 8 bits or more. */
    const uint8_t long_pad[] = {0x1f, 0xff};
    PT_CHECK_INT(pt_hpack_huffman_decode(long_pad, 2, out, sizeof(out)), PT_HPACK_E_HUFFMAN);
    const uint8_t only_pad[] = {0xff};
    PT_CHECK_INT(pt_hpack_huffman_decode(only_pad, 1, out, sizeof(out)), PT_HPACK_E_HUFFMAN);
    /* Padding with a zero among the ones. */
    const uint8_t mixed[] = {0x1d};
    PT_CHECK_INT(pt_hpack_huffman_decode(mixed, 1, out, sizeof(out)), PT_HPACK_E_HUFFMAN);
    /* A symbol whose code ends exactly on the byte boundary, then nothing: no padding. */
    const uint8_t exact[] = {0xf8}; /* '&' = 11111000 */
    PT_CHECK_INT(pt_hpack_huffman_decode(exact, 1, out, sizeof(out)), 1);
    PT_CHECK_INT(out[0], '&');
    /* EOS followed by more data. */
    const uint8_t eos_then[] = {0xff, 0xff, 0xff, 0xfc, 0x1f};
    PT_CHECK_INT(pt_hpack_huffman_decode(eos_then, 5, out, sizeof(out)), PT_HPACK_E_HUFFMAN);
}

/* ---- Static table --------------------------------------------------------------------- */

static void test_static_lookup(void)
{
    uint32_t exact;
    PT_CHECK_INT(pt_hpack_static_find(":method", 7, "POST", 4, &exact), 2);
    PT_CHECK_INT(exact, 3);
    PT_CHECK_INT(pt_hpack_static_find(":status", 7, "404", 3, &exact), 8);
    PT_CHECK_INT(exact, 13);
    PT_CHECK_INT(pt_hpack_static_find(":status", 7, "418", 3, &exact), 8);
    PT_CHECK_INT(exact, 0);
    PT_CHECK_INT(pt_hpack_static_find("www-authenticate", 16, "", 0, &exact), 61);
    PT_CHECK_INT(exact, 61);
    PT_CHECK_INT(pt_hpack_static_find("x-custom", 8, "", 0, &exact), 0);
    PT_CHECK_INT(pt_hpack_static_find("", 0, "", 0, &exact), 0);
    /* Every entry finds itself, and its name finds the first entry of that name. */
    for (uint32_t i = 1; i <= PT_HPACK_STATIC_COUNT; i++) {
        const pt_hpack_field_t *f = pt_hpack_static_entry(i);
        uint32_t first = pt_hpack_static_find(f->name, f->name_len, f->value, f->value_len, &exact);
        PT_CHECK_INT(exact, i);
        PT_CHECK(first <= i && first >= 1);
        PT_CHECK_STR(pt_hpack_static_entry(first)->name, f->name);
    }
    PT_CHECK(pt_hpack_static_entry(0) == NULL && pt_hpack_static_entry(62) == NULL);
}

/* ---- Appendix C ----------------------------------------------------------------------- */

static void test_appendix_c2_single_representations(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_list_t l;
    pt_hpack_decoder_init(&d, 4096, 4096);
    /* C.2.1 literal with indexing. */
    PT_CHECK_INT(decode_hex(&d, "400a637573746f6d2d6b65790d637573746f6d2d686561646572", &l), 0);
    PT_CHECK_INT(l.count, 1);
    PT_CHECK(field_is(&l.fields[0], "custom-key: custom-header"));
    const char *t1[] = {"custom-key: custom-header", NULL};
    PT_CHECK(table_is(&d.table, t1, 55));
    pt_hpack_decoder_dispose(&d);
    /* C.2.2 literal without indexing. */
    pt_hpack_decoder_init(&d, 4096, 4096);
    PT_CHECK_INT(decode_hex(&d, "040c2f73616d706c652f70617468", &l), 0);
    PT_CHECK(l.count == 1 && field_is(&l.fields[0], ":path: /sample/path"));
    PT_CHECK_INT(l.fields[0].flags & PT_HPACK_F_NO_INDEX, PT_HPACK_F_NO_INDEX);
    PT_CHECK_INT(d.table.count, 0);
    /* C.2.3 never indexed: the flag is kept. */
    PT_CHECK_INT(decode_hex(&d, "100870617373776f726406736563726574", &l), 0);
    PT_CHECK(l.count == 1 && field_is(&l.fields[0], "password: secret"));
    PT_CHECK_INT(l.fields[0].flags & PT_HPACK_F_NEVER_INDEX, PT_HPACK_F_NEVER_INDEX);
    PT_CHECK_INT(d.table.count, 0);
    /* C.2.4 indexed. */
    PT_CHECK_INT(decode_hex(&d, "82", &l), 0);
    PT_CHECK(l.count == 1 && field_is(&l.fields[0], ":method: GET"));
    PT_CHECK_INT(d.table.count, 0);
    pt_hpack_decoder_dispose(&d);

    /* The encoder writes C.2.2 and C.2.3 from the flags. */
    pt_hpack_encoder_t e;
    pt_hpack_encoder_init(&e, 4096, PT_HPACK_ENC_NO_HUFFMAN);
    pt_hpack_field_t f[2] = {field_of(":path: /sample/path"), field_of("password: secret")};
    f[0].flags = PT_HPACK_F_NO_INDEX;
    f[1].flags = PT_HPACK_F_NEVER_INDEX;
    uint8_t out[128], want[128];
    size_t n, wn = unhex("040c2f73616d706c652f70617468"
                         "100870617373776f726406736563726574",
                         want);
    PT_CHECK_INT(pt_hpack_encode(&e, f, 2, out, sizeof(out), &n), 0);
    PT_CHECK_MEM(out, n, want, wn);
    PT_CHECK_INT(e.table.count, 0);
    /* C.2.1 and C.2.4 as the encoder's own choices (a new name is indexed; an exact static
     * match is one byte). */
    pt_hpack_field_t g[2] = {field_of("custom-key: custom-header"), field_of(":method: GET")};
    wn = unhex("400a637573746f6d2d6b65790d637573746f6d2d686561646572"
               "82",
               want);
    PT_CHECK_INT(pt_hpack_encode(&e, g, 2, out, sizeof(out), &n), 0);
    PT_CHECK_MEM(out, n, want, wn);
    const char *t1e[] = {"custom-key: custom-header", NULL};
    PT_CHECK(table_is(&e.table, t1e, 55));
    pt_hpack_encoder_dispose(&e);
}

/* A table holds no memory until something is inserted, then grows with what is. */
static void test_table_memory_follows_use(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_list_t l;
    pt_hpack_decoder_init(&d, 4096, 4096);
    PT_CHECK(d.table.bytes == NULL && d.table.ent == NULL);
    PT_CHECK_INT(decode_hex(&d, "828684", &l), 0); /* static references only */
    PT_CHECK(d.table.bytes == NULL && d.table.ent == NULL);
    /* h2load's first GET: :authority and user-agent are indexed, 56 bytes of strings. */
    PT_CHECK_INT(decode_hex(&d,
                            "04846126abd78641"
                            "8b089d5c0b8170dc0bcdb21f827a8f9c541c722954d3a5358980aed89707",
                            &l),
                 0);
    PT_CHECK_INT(l.count, 5);
    PT_CHECK(field_is(&l.fields[4], "user-agent: h2load nghttp2/1.52.0"));
    PT_CHECK_INT(d.table.count, 2);
    PT_CHECK_INT(d.table.bytes_cap, 256);
    PT_CHECK_INT(d.table.ent_cap, 8);
    pt_hpack_decoder_dispose(&d);
    PT_CHECK(d.table.bytes == NULL && d.table.ent == NULL);
    /* The encoder the same, its chain links and heads in the entries' allocation. */
    pt_hpack_encoder_t e;
    pt_hpack_encoder_init(&e, 4096, 0);
    pt_hpack_field_t f[] = {field_of(":path: /tiny"), field_of(":scheme: http"),
                            field_of(":authority: 127.0.0.1:18531"), field_of(":method: GET"),
                            field_of("user-agent: h2load nghttp2/1.52.0")};
    uint8_t out[256], want[64];
    size_t n, wn = unhex("04846126abd78641"
                         "8b089d5c0b8170dc0bcdb21f827a8f9c541c722954d3a5358980aed89707",
                         want);
    PT_CHECK_INT(pt_hpack_encode(&e, f, 2, out, sizeof(out), &n), 0);
    PT_CHECK(e.table.bytes == NULL && e.table.ent == NULL);
    PT_CHECK_INT(pt_hpack_encode(&e, f, 5, out, sizeof(out), &n), 0);
    PT_CHECK_MEM(out, n, want, wn); /* h2load's own bytes (nghttp2's encoder) */
    PT_CHECK_INT(e.table.count, 2);
    PT_CHECK_INT(e.table.bytes_cap, 256);
    PT_CHECK_INT(e.table.ent_cap, 8);
    PT_CHECK(e.table.link != NULL && e.table.bucket != NULL);
    pt_hpack_encoder_dispose(&e);
}

/* Decode a series of Appendix C, and encode its header lists, comparing bytes and tables at
 * every step. table_size: 4096 for C.3/C.4, 256 for C.5/C.6. */
static void run_appendix_c(const char *first, int steps, uint32_t table_size, int huffman)
{
    unsigned k = 0;
    while (strcmp(appendix_c[k].name, first) != 0)
        k++;
    pt_hpack_decoder_t d;
    pt_hpack_encoder_t e;
    pt_hpack_decoder_t d2; /* decodes the encoder's output */
    pt_hpack_decoder_init(&d, table_size, 4096);
    pt_hpack_decoder_init(&d2, table_size, 4096);
    pt_hpack_encoder_init(&e, table_size,
                          PT_HPACK_ENC_INDEX_ALL | (huffman ? 0 : PT_HPACK_ENC_NO_HUFFMAN));
    for (int s = 0; s < steps; s++) {
        const cstep_t *c = &appendix_c[k + s];
        pt_hpack_list_t l;
        PT_CHECK_INT(decode_hex(&d, c->hex, &l), 0);
        size_t nh = 0;
        while (c->headers[nh])
            nh++;
        PT_CHECK_INT(l.count, nh);
        for (size_t i = 0; i < nh; i++)
            if (!field_is(&l.fields[i], c->headers[i])) {
                fprintf(stderr, "%s: header %zu is not %s\n", c->name, i, c->headers[i]);
                PT_CHECK(0);
            }
        if (!table_is(&d.table, c->table, c->size)) {
            fprintf(stderr, "%s: decoder table differs\n", c->name);
            PT_CHECK(0);
        }
        /* The encoder makes the same choices, so the same bytes. A table smaller than
         * HTTP/2's initial 4096 is announced first by a size update (§4.2); the RFC's
         * examples take the size as agreed beforehand, so it precedes their bytes. */
        pt_hpack_field_t f[8];
        for (size_t i = 0; i < nh; i++)
            f[i] = field_of(c->headers[i]);
        uint8_t out[512], want[512];
        size_t n, wn = 0;
        if (s == 0 && table_size < 4096) {
            want[wn++] = 0x3f;
            want[wn++] = (uint8_t)(((table_size - 31) & 0x7f) | 0x80);
            want[wn++] = (uint8_t)((table_size - 31) >> 7);
        }
        wn += unhex(c->hex, want + wn);
        PT_CHECK_INT(pt_hpack_encode(&e, f, nh, out, sizeof(out), &n), 0);
        if (n != wn || memcmp(out, want, n) != 0) {
            fprintf(stderr, "%s: encoder bytes differ\n", c->name);
            PT_CHECK(0);
        }
        PT_CHECK(table_is(&e.table, c->table, c->size));
        PT_CHECK_INT(decode(&d2, out, n, &l), 0);
        PT_CHECK_INT(l.count, nh);
        PT_CHECK(table_is(&d2.table, c->table, c->size));
    }
    pt_hpack_decoder_dispose(&d);
    pt_hpack_decoder_dispose(&d2);
    pt_hpack_encoder_dispose(&e);
}

static void test_appendix_c3_requests_raw(void)
{
    run_appendix_c("C.3.1", 3, 4096, 0);
}

static void test_appendix_c4_requests_huffman(void)
{
    run_appendix_c("C.4.1", 3, 4096, 1);
}

static void test_appendix_c5_responses_raw_eviction(void)
{
    run_appendix_c("C.5.1", 3, 256, 0);
}

static void test_appendix_c6_responses_huffman_eviction(void)
{
    run_appendix_c("C.6.1", 3, 256, 1);
}

/* ---- Decoding errors ------------------------------------------------------------------ */

static int decode_err(pt_hpack_decoder_t *d, const char *hex)
{
    pt_hpack_list_t l;
    return decode_hex(d, hex, &l);
}

static void test_error_integers(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_decoder_init(&d, 4096, 4096);
    PT_CHECK_INT(decode_err(&d, "ff"), PT_HPACK_E_TRUNCATED);             /* no continuation */
    PT_CHECK_INT(decode_err(&d, "ff80"), PT_HPACK_E_TRUNCATED);           /* continuation cut */
    PT_CHECK_INT(decode_err(&d, "ffffffffff0f"), PT_HPACK_E_INTEGER);     /* > 2^32-1 */
    PT_CHECK_INT(decode_err(&d, "ff80808080808000"), PT_HPACK_E_INTEGER); /* zero padding */
    /* 2^32-1 exactly decodes, then is an index past the table. */
    PT_CHECK_INT(decode_err(&d, "ff80feffff0f"), PT_HPACK_E_INDEX);
    pt_hpack_decoder_dispose(&d);
}

static void test_error_indexes(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_decoder_init(&d, 4096, 4096);
    PT_CHECK_INT(decode_err(&d, "80"), PT_HPACK_E_INDEX);       /* index 0 */
    PT_CHECK_INT(decode_err(&d, "be"), PT_HPACK_E_INDEX);       /* 62, empty dynamic table */
    PT_CHECK_INT(decode_err(&d, "7f0001"), PT_HPACK_E_INDEX);   /* name index 63 */
    PT_CHECK_INT(decode_err(&d, "0f2f0161"), PT_HPACK_E_INDEX); /* name 62, not indexed */
    /* With one entry, 62 works and 63 does not. */
    PT_CHECK_INT(decode_err(&d, "4001610162"), 0);
    PT_CHECK_INT(decode_err(&d, "be"), 0);
    PT_CHECK_INT(decode_err(&d, "bf"), PT_HPACK_E_INDEX);
    pt_hpack_decoder_dispose(&d);
}

static void test_error_strings(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_decoder_init(&d, 4096, 8);
    PT_CHECK_INT(decode_err(&d, "00"), PT_HPACK_E_TRUNCATED);     /* name length missing */
    PT_CHECK_INT(decode_err(&d, "000361"), PT_HPACK_E_TRUNCATED); /* name cut short */
    PT_CHECK_INT(decode_err(&d, "00016100"), 0);                  /* a: "" */
    PT_CHECK_INT(decode_err(&d, "000161"), PT_HPACK_E_TRUNCATED); /* value missing */
    /* Over max_string (8): raw, and Huffman whose decoded length passes it. */
    PT_CHECK_INT(decode_err(&d, "0001610961616161616161616161"), PT_HPACK_E_STRING_TOO_LONG);
    PT_CHECK_INT(decode_err(&d, "000161"
                                "86"
                                "18c631"
                                "8c631f"),
                 PT_HPACK_E_STRING_TOO_LONG);
    /* Bad padding and EOS inside a string, in a name and in a value. */
    PT_CHECK_INT(decode_err(&d, "008118"
                                "00"),
                 PT_HPACK_E_HUFFMAN);
    PT_CHECK_INT(decode_err(&d, "000161"
                                "821fff"),
                 PT_HPACK_E_HUFFMAN);
    PT_CHECK_INT(decode_err(&d, "000161"
                                "84ffffffff"),
                 PT_HPACK_E_HUFFMAN);
    pt_hpack_decoder_dispose(&d);
}

static void test_error_table_size_updates(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_list_t l;
    pt_hpack_decoder_init(&d, 4096, 4096);
    /* Over the limit: 4097 = 31 + 4066 (0xfe2 -> e2 1f). */
    PT_CHECK_INT(decode_err(&d, "3fe21f"), PT_HPACK_E_TABLE_SIZE);
    /* 4096 is fine, as are two at the start (§4.2), and an empty block of updates. */
    PT_CHECK_INT(decode_err(&d, "3fe11f"), 0);
    PT_CHECK_INT(decode_err(&d, "203fe11f82"), 0);
    PT_CHECK_INT(d.table.max_size, 4096);
    /* After a field: refused. */
    PT_CHECK_INT(decode_err(&d, "8220"), PT_HPACK_E_TABLE_SIZE);
    /* Shrinking evicts: an entry, then an update to 0 empties the table. */
    PT_CHECK_INT(decode_err(&d, "4001610162"), 0);
    PT_CHECK_INT(d.table.count, 1);
    PT_CHECK_INT(decode_err(&d, "20"), 0);
    PT_CHECK_INT(d.table.count, 0);
    PT_CHECK_INT(decode_err(&d, "be"), PT_HPACK_E_INDEX);
    /* Our limit falls below the table's size: the next block must open with an update to
     * at most the new limit. */
    PT_CHECK_INT(decode_err(&d, "3fe11f"), 0);
    pt_hpack_decoder_set_settings_max(&d, 100);
    PT_CHECK_INT(decode_err(&d, "82"), PT_HPACK_E_TABLE_SIZE);
    PT_CHECK_INT(decode_err(&d, "3f46"), PT_HPACK_E_TABLE_SIZE); /* 101 */
    PT_CHECK_INT(decode_hex(&d, "3f4582", &l), 0);               /* 100, then a field */
    PT_CHECK_INT(l.count, 1);
    PT_CHECK_INT(decode_err(&d, "82"), 0);
    pt_hpack_decoder_dispose(&d);
}

static void test_error_list_size_keeps_table_in_step(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_decoder_init(&d, 4096, 4096);
    /* Three fields of 32 + 1 + 1 = 34 each; a limit of 70 lets two through. The third is
     * inserted all the same, so the next block can refer to it. */
    uint8_t in[64];
    size_t n = unhex("400161016240016301644001650166", in);
    pt_hpack_list_t l;
    l.fields = list_fields;
    l.cap = 16;
    l.buf = list_buf;
    l.buf_cap = sizeof(list_buf);
    PT_CHECK_INT(pt_hpack_decode_list(&d, in, n, 70, scratch, sizeof(scratch), &l),
                 PT_HPACK_E_LIST_SIZE);
    PT_CHECK(!pt_hpack_connection_error(PT_HPACK_E_LIST_SIZE));
    PT_CHECK(pt_hpack_connection_error(PT_HPACK_E_HUFFMAN));
    PT_CHECK_INT(l.count, 2);
    PT_CHECK_INT(d.table.count, 3);
    PT_CHECK_INT(decode_hex(&d, "be", &l), 0);
    PT_CHECK(l.count == 1 && field_is(&l.fields[0], "e: f"));
    /* The array filling up is the same stream error. */
    l.cap = 1;
    PT_CHECK_INT(pt_hpack_decode_list(&d, in, n, 1 << 16, scratch, sizeof(scratch), &l),
                 PT_HPACK_E_LIST_SIZE);
    PT_CHECK_INT(d.table.count, 6);
    pt_hpack_decoder_dispose(&d);
}

static int stop_cb(void *data, const pt_hpack_field_t *f)
{
    (void)f;
    return --*(int *)data == 0 ? -100 : 0;
}

static void test_callback_stops_decoding(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_decoder_init(&d, 4096, 4096);
    uint8_t in[] = {0x82, 0x84, 0x86};
    int left = 2;
    PT_CHECK_INT(pt_hpack_decode(&d, in, 3, 1 << 16, scratch, sizeof(scratch), stop_cb, &left),
                 -100);
    PT_CHECK_INT(left, 0);
    pt_hpack_decoder_dispose(&d);
}

/* A literal with indexing whose name refers to the entry its own insertion evicts
 * (§4.4): the name must survive. */
static void test_name_reference_to_evicted_entry(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_list_t l;
    pt_hpack_decoder_init(&d, 4096, 4096);
    PT_CHECK_INT(decode_err(&d, "3f1b"), 0); /* max 58: room for one 32+26 entry */
    /* "abcdefghijklm: nopqrstuvwxyz" = 32 + 13 + 13 = 58 */
    PT_CHECK_INT(decode_err(&d, "400d6162636465666768696a6b6c6d0d6e6f707172737475767778797a"), 0);
    PT_CHECK_INT(d.table.count, 1);
    /* Name = index 62 (that entry), new value "0123456789abc": evicts it first. */
    PT_CHECK_INT(decode_hex(&d, "7e0d30313233343536373839616263", &l), 0);
    PT_CHECK(l.count == 1 && field_is(&l.fields[0], "abcdefghijklm: 0123456789abc"));
    const char *t[] = {"abcdefghijklm: 0123456789abc", NULL};
    PT_CHECK(table_is(&d.table, t, 58));
    pt_hpack_decoder_dispose(&d);
}

/* ---- Encoder policy ------------------------------------------------------------------- */

static void test_encoder_sensitive_and_volatile(void)
{
    pt_hpack_encoder_t e;
    pt_hpack_decoder_t d;
    pt_hpack_encoder_init(&e, 4096, 0);
    pt_hpack_decoder_init(&d, 4096, 4096);
    pt_hpack_field_t f[] = {
        field_of("authorization: Bearer abc"),
        field_of("cookie: a=b"),
        field_of("cookie: session=0123456789abcdefghij"),
        field_of(":path: /x/y"),
        field_of("x-trace: 1"),
        field_of(":method: GET"),
    };
    size_t nf = sizeof(f) / sizeof(f[0]);
    uint8_t out[512];
    size_t n;
    PT_CHECK_INT(pt_hpack_encode(&e, f, nf, out, sizeof(out), &n), 0);
    pt_hpack_list_t l;
    PT_CHECK_INT(decode(&d, out, n, &l), 0);
    PT_CHECK_INT(l.count, nf);
    PT_CHECK(l.fields[0].flags & PT_HPACK_F_NEVER_INDEX);
    PT_CHECK(l.fields[1].flags & PT_HPACK_F_NEVER_INDEX);
    PT_CHECK(!(l.fields[2].flags & PT_HPACK_F_NEVER_INDEX)); /* long cookie: indexed */
    PT_CHECK(l.fields[3].flags & PT_HPACK_F_NO_INDEX);       /* per-request path */
    for (size_t i = 0; i < nf; i++)
        PT_CHECK(field_is(&l.fields[i], i == 0   ? "authorization: Bearer abc"
                                        : i == 1 ? "cookie: a=b"
                                        : i == 2 ? "cookie: session=0123456789abcdefghij"
                                        : i == 3 ? ":path: /x/y"
                                        : i == 4 ? "x-trace: 1"
                                                 : ":method: GET"));
    /* Indexed: the long cookie and x-trace only. */
    PT_CHECK_INT(e.table.count, 2);
    PT_CHECK_INT(d.table.count, 2);
    /* The second time, indexed fields take one byte each. */
    size_t n2;
    PT_CHECK_INT(pt_hpack_encode(&e, f + 2, 1, out, sizeof(out), &n2), 0);
    PT_CHECK_INT(n2, 1);
    PT_CHECK_INT(out[0], 0x80 | 63);
    /* A too-small buffer changes nothing. */
    PT_CHECK_INT(pt_hpack_encode(&e, f, nf, out, 10, &n2), PT_HPACK_E_BUFFER);
    PT_CHECK_INT(e.table.count, 2);
    pt_hpack_encoder_dispose(&e);
    pt_hpack_decoder_dispose(&d);
}

/* Past a few entries the encoder searches its table through hash chains: entries are still
 * found (an indexed byte or two), names too, and after heavy churn. */
static void test_encoder_finds_entries_in_large_table(void)
{
    pt_hpack_encoder_t e;
    pt_hpack_decoder_t d;
    pt_hpack_encoder_init(&e, 4096, PT_HPACK_ENC_NO_HUFFMAN);
    pt_hpack_decoder_init(&d, 4096, 4096);
    static char names[600][16], values[600][16];
    pt_hpack_field_t f[600];
    for (int i = 0; i < 600; i++) {
        snprintf(names[i], sizeof(names[i]), "x-h%d", i % 300);
        snprintf(values[i], sizeof(values[i]), "v%d", i);
        f[i] = (pt_hpack_field_t){names[i], values[i], (uint32_t)strlen(names[i]),
                                  (uint32_t)strlen(values[i]), 0};
    }
    uint8_t out[256];
    size_t n;
    pt_hpack_list_t l;
    for (int i = 0; i < 40; i++) {
        PT_CHECK_INT(pt_hpack_encode(&e, &f[i], 1, out, sizeof(out), &n), 0);
        PT_CHECK_INT(decode(&d, out, n, &l), 0);
    }
    PT_CHECK_INT(e.table.count, 40);
    /* Each again: one indexed byte, the right entry. */
    for (int i = 0; i < 40; i++) {
        PT_CHECK_INT(pt_hpack_encode(&e, &f[i], 1, out, sizeof(out), &n), 0);
        PT_CHECK_INT(n, 1);
        PT_CHECK_INT(out[0], 0x80 | (61 + 40 - i));
        PT_CHECK_INT(decode(&d, out, n, &l), 0);
        PT_CHECK(l.count == 1 && l.fields[0].value_len == f[i].value_len &&
                 memcmp(l.fields[0].value, f[i].value, f[i].value_len) == 0);
    }
    /* A known name with a new value: a dynamic name reference (6-bit index past 63). */
    pt_hpack_field_t g = {names[5], "new", (uint32_t)strlen(names[5]), 3, 0};
    PT_CHECK_INT(pt_hpack_encode(&e, &g, 1, out, sizeof(out), &n), 0);
    PT_CHECK_INT(out[0], 0x7f);
    PT_CHECK_INT(n, 2 + 1 + 3);
    PT_CHECK_INT(decode(&d, out, n, &l), 0);
    PT_CHECK(l.count == 1 && l.fields[0].name_len == g.name_len &&
             memcmp(l.fields[0].name, g.name, g.name_len) == 0);
    /* Churn: 560 more entries, most evicting others; the newest are still found. */
    for (int i = 40; i < 600; i++) {
        PT_CHECK_INT(pt_hpack_encode(&e, &f[i], 1, out, sizeof(out), &n), 0);
        PT_CHECK_INT(decode(&d, out, n, &l), 0);
    }
    PT_CHECK(e.table.count > 8);
    for (int i = 599; i > 599 - (int)e.table.count; i--) {
        PT_CHECK_INT(pt_hpack_encode(&e, &f[i], 1, out, sizeof(out), &n), 0);
        PT_CHECK(n <= 2 && (out[0] & 0x80));
        PT_CHECK_INT(decode(&d, out, n, &l), 0);
        PT_CHECK(l.count == 1 && l.fields[0].value_len == f[i].value_len &&
                 memcmp(l.fields[0].value, f[i].value, f[i].value_len) == 0);
    }
    PT_CHECK_INT(e.table.size, d.table.size);
    pt_hpack_encoder_dispose(&e);
    pt_hpack_decoder_dispose(&d);
}

static void test_encoder_size_updates(void)
{
    pt_hpack_encoder_t e;
    pt_hpack_decoder_t d;
    pt_hpack_encoder_init(&e, 8192, 0);
    pt_hpack_decoder_init(&d, 4096, 4096);
    PT_CHECK_INT(e.table.max_size, 4096);
    pt_hpack_field_t f = field_of("x-a: 1");
    uint8_t out[128];
    size_t n;
    PT_CHECK_INT(pt_hpack_encode(&e, &f, 1, out, sizeof(out), &n), 0);
    PT_CHECK(out[0] == 0x40); /* no update: 4096 is the initial size */
    pt_hpack_list_t l;
    PT_CHECK_INT(decode(&d, out, n, &l), 0);
    /* The peer lowers its table to 0, then raises it to 1024, before our next block:
     * both are signalled, smallest first (§4.2), and the table was emptied. */
    pt_hpack_encoder_set_peer_max(&e, 0);
    pt_hpack_encoder_set_peer_max(&e, 1024);
    pt_hpack_decoder_set_settings_max(&d, 1024);
    PT_CHECK_INT(e.table.count, 0);
    PT_CHECK_INT(pt_hpack_encode(&e, &f, 1, out, sizeof(out), &n), 0);
    PT_CHECK_INT(out[0], 0x20);
    PT_CHECK_INT(out[1], 0x3f);
    PT_CHECK_INT(decode(&d, out, n, &l), 0);
    PT_CHECK_INT(d.table.max_size, 1024);
    PT_CHECK(l.count == 1 && field_is(&l.fields[0], "x-a: 1"));
    PT_CHECK_INT(d.table.count, 1);
    /* local_max caps what the peer allows; an unchanged size sends nothing. */
    pt_hpack_encoder_set_peer_max(&e, 1u << 20);
    PT_CHECK_INT(e.table.max_size, 8192);
    pt_hpack_decoder_set_settings_max(&d, 1u << 20);
    PT_CHECK_INT(pt_hpack_encode(&e, &f, 1, out, sizeof(out), &n), 0);
    PT_CHECK_INT(out[0], 0x3f); /* 8192 */
    PT_CHECK_INT(decode(&d, out, n, &l), 0);
    PT_CHECK_INT(pt_hpack_encode(&e, &f, 1, out, sizeof(out), &n), 0);
    PT_CHECK_INT(n, 1);
    pt_hpack_encoder_dispose(&e);
    pt_hpack_decoder_dispose(&d);
}

/* ---- Random round trips, and against libnghttp2 ---------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static const char *const name_pool[] = {
    ":method",         ":path",           ":authority", ":scheme",       ":status",
    "accept-encoding", "user-agent",      "cookie",     "authorization", "content-type",
    "x-request-id",    "x-forwarded-for", "set-cookie", "grpc-status",   "te",
    "x-b3-traceid",    "content-length",  "location",
};
static const char *const value_pool[] = {"GET",
                                         "/",
                                         "200",
                                         "gzip, deflate",
                                         "trailers",
                                         "0",
                                         "application/grpc",
                                         "https",
                                         "www.example.com"};

static char text_store[1 << 16];
static size_t text_len;

/* A random header list: pool names and values, random lowercase names, random bytes. */
static size_t random_list(pt_hpack_field_t *f, size_t max)
{
    size_t n = 1 + rnd((uint32_t)max);
    text_len = 0;
    for (size_t i = 0; i < n; i++) {
        char *name = text_store + text_len;
        uint32_t nl;
        if (rnd(3)) {
            const char *p = name_pool[rnd(sizeof(name_pool) / sizeof(name_pool[0]))];
            nl = (uint32_t)strlen(p);
            memcpy(name, p, nl);
        } else {
            nl = 1 + rnd(20);
            for (uint32_t k = 0; k < nl; k++)
                name[k] = (char)('a' + rnd(26));
        }
        text_len += nl;
        char *value = text_store + text_len;
        uint32_t vl;
        uint32_t kind = rnd(4);
        if (kind == 0) {
            const char *p = value_pool[rnd(sizeof(value_pool) / sizeof(value_pool[0]))];
            vl = (uint32_t)strlen(p);
            memcpy(value, p, vl);
        } else if (kind == 1) {
            vl = rnd(300);
            for (uint32_t k = 0; k < vl; k++)
                value[k] = (char)rnd(256);
        } else {
            vl = rnd(40);
            for (uint32_t k = 0; k < vl; k++)
                value[k] = (char)(' ' + rnd(95));
        }
        text_len += vl;
        f[i] = (pt_hpack_field_t){name, value, nl, vl, rnd(10) == 0 ? PT_HPACK_F_NEVER_INDEX : 0};
    }
    return n;
}

static int same_fields(const pt_hpack_field_t *a, const pt_hpack_field_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].name_len != b[i].name_len || a[i].value_len != b[i].value_len ||
            memcmp(a[i].name, b[i].name, a[i].name_len) != 0 ||
            memcmp(a[i].value, b[i].value, a[i].value_len) != 0)
            return 0;
    return 1;
}

static uint8_t block[1 << 17];

static void test_random_round_trips(void)
{
    for (int conn = 0; conn < 20; conn++) {
        pt_hpack_encoder_t e;
        pt_hpack_decoder_t d;
        uint32_t local = conn % 3 == 0 ? 256 : 4096;
        pt_hpack_encoder_init(&e, local, conn % 4 == 1 ? PT_HPACK_ENC_NO_HUFFMAN : 0);
        pt_hpack_decoder_init(&d, 4096, 1 << 15);
        for (int b = 0; b < 100; b++) {
            if (b % 37 == 36) { /* the decoder side changes its SETTINGS */
                uint32_t s = rnd(3) == 0 ? 0 : 64 + rnd(8000);
                pt_hpack_encoder_set_peer_max(&e, s);
                pt_hpack_decoder_set_settings_max(&d, s);
            }
            pt_hpack_field_t f[40];
            size_t nf = random_list(f, 40), n;
            PT_CHECK_INT(pt_hpack_encode(&e, f, nf, block, sizeof(block), &n), 0);
            pt_hpack_list_t l;
            int rc = decode(&d, block, n, &l);
            if (rc != 0)
                fprintf(stderr, "conn %d block %d: %s\n", conn, b, pt_hpack_strerror(rc));
            PT_CHECK_INT(rc, 0);
            PT_CHECK_INT(l.count, nf);
            PT_CHECK(same_fields(f, l.fields, nf));
            for (size_t i = 0; i < nf; i++)
                if (f[i].flags & PT_HPACK_F_NEVER_INDEX)
                    PT_CHECK(l.fields[i].flags & PT_HPACK_F_NEVER_INDEX);
            PT_CHECK_INT(e.table.size, d.table.size);
            PT_CHECK_INT(e.table.count, d.table.count);
        }
        pt_hpack_encoder_dispose(&e);
        pt_hpack_decoder_dispose(&d);
    }
}

static void test_nghttp2_deflate_petrel_inflate(void)
{
    nghttp2_hd_deflater *def;
    PT_CHECK_INT(nghttp2_hd_deflate_new(&def, 4096), 0);
    pt_hpack_decoder_t d;
    pt_hpack_decoder_init(&d, 4096, 1 << 15);
    for (int b = 0; b < 1000; b++) {
        pt_hpack_field_t f[40];
        nghttp2_nv nv[40];
        size_t nf = random_list(f, 40);
        for (size_t i = 0; i < nf; i++)
            nv[i] = (nghttp2_nv){(uint8_t *)f[i].name, (uint8_t *)f[i].value, f[i].name_len,
                                 f[i].value_len,
                                 (f[i].flags & PT_HPACK_F_NEVER_INDEX) ? NGHTTP2_NV_FLAG_NO_INDEX
                                                                       : NGHTTP2_NV_FLAG_NONE};
        if (b % 100 == 99) {
            uint32_t s = rnd(4096);
            PT_CHECK_INT(nghttp2_hd_deflate_change_table_size(def, s), 0);
        }
        ssize_t n = nghttp2_hd_deflate_hd(def, block, sizeof(block), nv, nf);
        PT_CHECK(n >= 0);
        pt_hpack_list_t l;
        PT_CHECK_INT(decode(&d, block, (size_t)n, &l), 0);
        PT_CHECK_INT(l.count, nf);
        PT_CHECK(same_fields(f, l.fields, nf));
        for (size_t i = 0; i < nf; i++)
            if (f[i].flags & PT_HPACK_F_NEVER_INDEX)
                PT_CHECK(l.fields[i].flags & PT_HPACK_F_NEVER_INDEX);
        PT_CHECK_INT(d.table.size, nghttp2_hd_deflate_get_dynamic_table_size(def));
        PT_CHECK_INT(d.table.count, nghttp2_hd_deflate_get_num_table_entries(def) - 61);
    }
    nghttp2_hd_deflate_del(def);
    pt_hpack_decoder_dispose(&d);
}

/* What petrel's encoder sends as never indexed: the caller's flag, credentials, short
 * cookies. */
static int sensitive(const pt_hpack_field_t *f)
{
    return (f->flags & PT_HPACK_F_NEVER_INDEX) ||
           (f->name_len == 13 && memcmp(f->name, "authorization", 13) == 0) ||
           (f->name_len == 19 && memcmp(f->name, "proxy-authorization", 19) == 0) ||
           (f->name_len == 6 && memcmp(f->name, "cookie", 6) == 0 && f->value_len < 20);
}

static void test_petrel_deflate_nghttp2_inflate(void)
{
    nghttp2_hd_inflater *inf;
    PT_CHECK_INT(nghttp2_hd_inflate_new(&inf), 0);
    pt_hpack_encoder_t e;
    pt_hpack_encoder_init(&e, 4096, 0);
    for (int b = 0; b < 1000; b++) {
        if (b % 100 == 99) { /* nghttp2's side lowers or raises its table */
            uint32_t s = rnd(4096);
            PT_CHECK_INT(nghttp2_hd_inflate_change_table_size(inf, s), 0);
            pt_hpack_encoder_set_peer_max(&e, s);
        }
        pt_hpack_field_t f[40];
        size_t nf = random_list(f, 40), n;
        PT_CHECK_INT(pt_hpack_encode(&e, f, nf, block, sizeof(block), &n), 0);
        const uint8_t *p = block;
        size_t left = n, got = 0;
        for (;;) {
            nghttp2_nv nv;
            int flags = 0;
            ssize_t used = nghttp2_hd_inflate_hd2(inf, &nv, &flags, p, left, 1);
            PT_CHECK(used >= 0);
            p += used;
            left -= (size_t)used;
            if (flags & NGHTTP2_HD_INFLATE_EMIT) {
                PT_CHECK(got < nf);
                pt_hpack_field_t g = {(const char *)nv.name, (const char *)nv.value,
                                      (uint32_t)nv.namelen, (uint32_t)nv.valuelen, 0};
                PT_CHECK(same_fields(&f[got], &g, 1));
                PT_CHECK_INT(!!(nv.flags & NGHTTP2_NV_FLAG_NO_INDEX), sensitive(&f[got]));
                got++;
            }
            if (flags & NGHTTP2_HD_INFLATE_FINAL) {
                nghttp2_hd_inflate_end_headers(inf);
                break;
            }
            if (used == 0 && !(flags & NGHTTP2_HD_INFLATE_EMIT))
                break;
        }
        PT_CHECK_INT(got, nf);
        PT_CHECK_INT(e.table.size, nghttp2_hd_inflate_get_dynamic_table_size(inf));
    }
    nghttp2_hd_inflate_del(inf);
    pt_hpack_encoder_dispose(&e);
}

/* The dynamic table's storage: entries of every size, wrapping around its area, growing
 * it, and evicted in order, checked against a plain model. */
static uint8_t *put_int(uint8_t *p, uint8_t first, unsigned prefix, uint32_t v)
{
    uint32_t max = (1u << prefix) - 1;
    if (v < max) {
        *p++ = (uint8_t)(first | v);
        return p;
    }
    *p++ = (uint8_t)(first | max);
    for (v -= max; v >= 128; v >>= 7)
        *p++ = (uint8_t)(0x80 | (v & 0x7f));
    *p++ = (uint8_t)v;
    return p;
}

/* A literal with incremental indexing, new name, raw strings: name, then vlen copies of c. */
static uint8_t *put_literal(uint8_t *p, const char *name, uint32_t vlen, char c)
{
    size_t nl = strlen(name);
    *p++ = 0x40;
    p = put_int(p, 0, 7, (uint32_t)nl);
    memcpy(p, name, nl);
    p += nl;
    p = put_int(p, 0, 7, vlen);
    memset(p, c, vlen);
    return p + vlen;
}

/* An empty entry (no string bytes) at the end of the used area when the next entry wraps
 * to the start, evicted after the entries before it: the area must still know where the
 * live strings start, or a later entry overwrites them. */
static void test_table_empty_entry_at_wrap_point(void)
{
    pt_hpack_decoder_t d;
    pt_hpack_list_t l;
    pt_hpack_decoder_init(&d, 4096, 4096);
    static uint8_t b[1024];
    uint8_t *p = b;
    p = put_literal(p, "z", 79, 'z');  /* strings [0,80), 112 */
    p = put_literal(p, "a", 119, 'a'); /* [80,200), 152 */
    p = put_literal(p, "", 0, 0);      /* empty, at 200: 32 */
    PT_CHECK_INT(decode(&d, b, (size_t)(p - b), &l), 0);
    PT_CHECK_INT(d.table.bytes_cap, 256);
    p = b;
    p = put_int(p, 0x20, 5, 300);     /* max 300: b's insertion evicts z */
    p = put_literal(p, "b", 59, 'b'); /* 92: wraps to the start */
    PT_CHECK_INT(decode(&d, b, (size_t)(p - b), &l), 0);
    p = b;
    p = put_literal(p, "c", 59, 'c'); /* 92: evicts a */
    PT_CHECK_INT(decode(&d, b, (size_t)(p - b), &l), 0);
    p = b;
    p = put_int(p, 0x20, 5, 184); /* evicts the empty entry */
    p = put_int(p, 0x20, 5, 4096);
    p = put_literal(p, "d", 159, 'd'); /* 192, does not fit after c */
    PT_CHECK_INT(decode(&d, b, (size_t)(p - b), &l), 0);
    PT_CHECK_INT(d.table.count, 3);
    const char want[] = "dcb";
    const uint32_t want_len[] = {159, 59, 59};
    for (uint32_t i = 0; i < 3; i++) {
        pt_hpack_field_t g;
        PT_CHECK_INT(pt_hpack_table_get(&d.table, i + 1, &g), 0);
        PT_CHECK(g.name_len == 1 && g.name[0] == want[i]);
        PT_CHECK_INT(g.value_len, want_len[i]);
        for (uint32_t k = 0; k < g.value_len; k++)
            PT_CHECK_INT(g.value[k], want[i]);
    }
    pt_hpack_decoder_dispose(&d);
}

static void test_table_ring_against_model(void)
{
    pt_hpack_encoder_t e;
    pt_hpack_decoder_t d;
    pt_hpack_encoder_init(&e, 4096, PT_HPACK_ENC_INDEX_ALL | PT_HPACK_ENC_NO_HUFFMAN);
    pt_hpack_decoder_init(&d, 4096, 4096);
    /* The model: the strings of field i in slot i % 256 (at most 128 entries fit in 4096
     * bytes), and a FIFO of the slots in the table, oldest first. */
    static char names[256][8], values[256][700];
    static uint32_t vlen[256], nlen[256], fifo[256];
    uint32_t first = 0, count = 0, size = 0;
    for (int i = 0; i < 3000; i++) {
        uint32_t k = (uint32_t)i % 256;
        /* One entry in four is empty (name and value): such entries take no string bytes
         * and must still keep their place around the area's end. */
        int empty = rnd(4) == 0;
        snprintf(names[k], sizeof(names[k]), "n%05d", i);
        nlen[k] = empty ? 0 : 6;
        vlen[k] = empty ? 0 : rnd(10) == 0 ? 600 + rnd(100) : rnd(120);
        memset(values[k], 'a' + i % 26, vlen[k]);
        pt_hpack_field_t f = {names[k], values[k], nlen[k], vlen[k], 0};
        size_t n;
        PT_CHECK_INT(pt_hpack_encode(&e, &f, 1, block, sizeof(block), &n), 0);
        pt_hpack_list_t l;
        PT_CHECK_INT(decode(&d, block, n, &l), 0);
        /* An empty entry already in the table is referred to, not added again. */
        int present = 0;
        for (uint32_t j = 0; empty && j < count; j++)
            present |= nlen[fifo[(first + j) % 256]] == 0;
        uint32_t esz = 32 + nlen[k] + vlen[k];
        if (!present && esz <= 4096 / 4 * 3) {
            while (size + esz > 4096) {
                uint32_t old = fifo[first % 256];
                size -= 32 + nlen[old] + vlen[old];
                first++;
                count--;
            }
            fifo[(first + count) % 256] = k;
            size += esz;
            count++;
        }
        PT_CHECK_INT(d.table.count, count);
        PT_CHECK_INT(d.table.size, size);
        PT_CHECK(d.table.bytes_cap <= 2 * 4096);
        for (uint32_t j = 1; j <= count; j++) {
            uint32_t m = fifo[(first + count - j) % 256];
            pt_hpack_field_t g;
            PT_CHECK_INT(pt_hpack_table_get(&d.table, j, &g), 0);
            PT_CHECK_MEM(g.name, g.name_len, names[m], nlen[m]);
            PT_CHECK_MEM(g.value, g.value_len, values[m], vlen[m]);
        }
    }
    pt_hpack_encoder_dispose(&e);
    pt_hpack_decoder_dispose(&d);
}

int main(void)
{
    PT_RUN(test_huffman_code_matches_appendix_b);
    PT_RUN(test_huffman_all_bytes_round_trip);
    PT_RUN(test_huffman_padding_rules);
    PT_RUN(test_static_lookup);
    PT_RUN(test_appendix_c2_single_representations);
    PT_RUN(test_table_memory_follows_use);
    PT_RUN(test_appendix_c3_requests_raw);
    PT_RUN(test_appendix_c4_requests_huffman);
    PT_RUN(test_appendix_c5_responses_raw_eviction);
    PT_RUN(test_appendix_c6_responses_huffman_eviction);
    PT_RUN(test_error_integers);
    PT_RUN(test_error_indexes);
    PT_RUN(test_error_strings);
    PT_RUN(test_error_table_size_updates);
    PT_RUN(test_error_list_size_keeps_table_in_step);
    PT_RUN(test_callback_stops_decoding);
    PT_RUN(test_name_reference_to_evicted_entry);
    PT_RUN(test_encoder_sensitive_and_volatile);
    PT_RUN(test_encoder_finds_entries_in_large_table);
    PT_RUN(test_encoder_size_updates);
    PT_RUN(test_random_round_trips);
    PT_RUN(test_nghttp2_deflate_petrel_inflate);
    PT_RUN(test_petrel_deflate_nghttp2_inflate);
    PT_RUN(test_table_ring_against_model);
    PT_RUN(test_table_empty_entry_at_wrap_point);
    PT_TEST_EXIT();
}
