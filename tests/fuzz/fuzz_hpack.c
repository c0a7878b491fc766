/* libFuzzer target for proxy/hpack (RFC 7541).
 *
 * Input: two control bytes, then header-block bytes. Byte 0 picks our SETTINGS_HEADER_TABLE_SIZE
 * (x 32) and the list limit, byte 1 where the rest is cut into two blocks, decoded in order
 * by one decoder (so the second sees the table the first left). Every block that decodes is
 * re-encoded by petrel's encoder and decoded again by a fresh decoder, which must give the
 * same fields and never-indexed flags, and leave a table equal to the encoder's; the decoded
 * strings also go through Huffman encode/decode. Each block is also decoded by libnghttp2's
 * inflater, set up alike: when both accept a block, the fields, their never-indexed flags and
 * the tables' sizes must agree (the two may differ in what they refuse: their limits are not
 * the same). A decoder that fails must fail with one of the documented codes. abort() on any
 * disagreement. */
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/hpack.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAXF 256

static uint8_t scratch[1 << 15];
static pt_hpack_field_t fields[MAXF], again_fields[MAXF];
static char buf[1 << 16], again_buf[1 << 16];
static uint8_t enc[1 << 18];

static void check_round_trip(const pt_hpack_list_t *l, uint32_t table_size)
{
    pt_hpack_encoder_t e;
    pt_hpack_decoder_t d;
    pt_hpack_encoder_init(&e, table_size, l->count % 2 ? PT_HPACK_ENC_NO_HUFFMAN : 0);
    pt_hpack_decoder_init(&d, table_size, 1 << 14);
    size_t n;
    CHECK(pt_hpack_encode_bound(l->fields, l->count) <= sizeof(enc));
    CHECK(pt_hpack_encode(&e, l->fields, l->count, enc, sizeof(enc), &n) == 0);
    pt_hpack_list_t m = {again_fields, 0, MAXF, again_buf, 0, sizeof(again_buf)};
    CHECK(pt_hpack_decode_list(&d, enc, n, 1 << 20, scratch, sizeof(scratch), &m) == 0);
    CHECK(m.count == l->count);
    for (size_t i = 0; i < m.count; i++) {
        const pt_hpack_field_t *a = &l->fields[i], *b = &m.fields[i];
        CHECK(a->name_len == b->name_len && a->value_len == b->value_len);
        CHECK(memcmp(a->name, b->name, a->name_len) == 0);
        CHECK(memcmp(a->value, b->value, a->value_len) == 0);
        if (a->flags & PT_HPACK_F_NEVER_INDEX)
            CHECK(b->flags & PT_HPACK_F_NEVER_INDEX);
        uint8_t h[1 << 14];
        uint8_t back[1 << 14];
        if (a->value_len <= sizeof(back) / 4) {
            size_t hl = pt_hpack_huffman_encode((const uint8_t *)a->value, a->value_len, h);
            CHECK(hl == pt_hpack_huffman_encoded_len((const uint8_t *)a->value, a->value_len));
            CHECK(pt_hpack_huffman_decode(h, hl, back, sizeof(back)) == (long)a->value_len);
            CHECK(memcmp(back, a->value, a->value_len) == 0);
        }
    }
    CHECK(e.table.size == d.table.size && e.table.count == d.table.count);
    pt_hpack_encoder_dispose(&e);
    pt_hpack_decoder_dispose(&d);
}

/* nghttp2's inflater on the same block: 1 if it accepts it and agrees with l, 0 if it
 * refuses it. */
static int nghttp2_agrees(nghttp2_hd_inflater *inf, const uint8_t *in, size_t len,
                          const pt_hpack_list_t *l)
{
    size_t got = 0;
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t used = nghttp2_hd_inflate_hd2(inf, &nv, &flags, in, len, 1);
        if (used < 0)
            return 0;
        in += used;
        len -= (size_t)used;
        if (flags & NGHTTP2_HD_INFLATE_EMIT) {
            CHECK(got < l->count);
            const pt_hpack_field_t *f = &l->fields[got++];
            CHECK(nv.namelen == f->name_len && nv.valuelen == f->value_len);
            CHECK(memcmp(nv.name, f->name, f->name_len) == 0);
            CHECK(memcmp(nv.value, f->value, f->value_len) == 0);
            CHECK(!!(nv.flags & NGHTTP2_NV_FLAG_NO_INDEX) == !!(f->flags & PT_HPACK_F_NEVER_INDEX));
        }
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inf);
            break;
        }
        if (used == 0 && !(flags & NGHTTP2_HD_INFLATE_EMIT))
            return 0;
    }
    CHECK(got == l->count);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 1 << 16)
        return 0;
    uint32_t table_size = (uint32_t)data[0] * 32;
    size_t max_list = (data[0] & 1) ? 256 : 1 << 16;
    const uint8_t *in = data + 2;
    size_t len = size - 2, cut = len * data[1] / 255;
    /* Both start at HTTP/2's 4096 and then take our setting, as after a SETTINGS ACK: a
     * smaller one must then be announced by the peer's first block. */
    pt_hpack_decoder_t d;
    pt_hpack_decoder_init(&d, PT_HPACK_DEFAULT_TABLE_SIZE, 1 << 13);
    pt_hpack_decoder_set_settings_max(&d, table_size);
    nghttp2_hd_inflater *inf = NULL;
    if (nghttp2_hd_inflate_new(&inf) != 0)
        return 0;
    nghttp2_hd_inflate_change_table_size(inf, table_size);
    int in_step = 1; /* nghttp2's table still matches ours */
    const uint8_t *blocks[2] = {in, in + cut};
    size_t lens[2] = {cut, len - cut};
    for (int b = 0; b < 2; b++) {
        pt_hpack_list_t l = {fields, 0, MAXF, buf, 0, sizeof(buf)};
        int rc =
            pt_hpack_decode_list(&d, blocks[b], lens[b], max_list, scratch, sizeof(scratch), &l);
        CHECK(rc <= 0 && rc >= PT_HPACK_E_NOMEM);
        CHECK(d.table.size <= d.table.max_size &&
              d.table.max_size <= (table_size > 4096 ? table_size : 4096));
        if (in_step) {
            if (rc == 0 && nghttp2_agrees(inf, blocks[b], lens[b], &l))
                CHECK(nghttp2_hd_inflate_get_dynamic_table_size(inf) == d.table.size);
            else
                in_step = 0;
        }
        if (rc == 0)
            check_round_trip(&l, table_size);
        if (pt_hpack_connection_error(rc))
            break;
    }
    nghttp2_hd_inflate_del(inf);
    pt_hpack_decoder_dispose(&d);
    return 0;
}
