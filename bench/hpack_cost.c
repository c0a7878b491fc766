/* hpack_cost: the instructions petrel's HPACK (proxy/hpack.c) and libnghttp2's
 * (nghttp2_hd_inflate_* / nghttp2_hd_deflate_*) spend on a typical request header block:
 * the one h2load sends for a GET (captured from h2load 1.52 against a listening socket):
 *
 *   :path /tiny  :scheme http  :authority 127.0.0.1:18531  :method GET
 *   user-agent h2load nghttp2/1.52.0
 *
 * bench/hpack_cost.py runs it under callgrind with --toggle-collect=measured and divides
 * the instructions of that function by the blocks it handled:
 *
 *   hpack_cost petrel|nghttp2 decode|encode|decode-first|encode-first N
 *
 * decode: N blocks on one connection, as nghttp2's deflater (h2load) writes them: the first
 *   with literals (:authority and user-agent indexed), the rest indexed references, except
 *   :path, which nghttp2 never indexes. Each field is delivered to a consumer that reads it.
 * encode: the same list encoded N times on one connection.
 * decode-first / encode-first: a new context per block (the first request of a connection),
 *   creation and destruction included.
 * encode-proxied: what a proxy sends upstream on one connection: the request above as
 *   forwarded (:authority of the upstream, x-forwarded-proto, x-request-id, an Envoy
 *   timeout header), with a new x-request-id each time: indexed, so the table churns and
 *   fills (about 50 entries), the case that makes the dynamic-table search matter. */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/hpack.h"

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)n, (uint8_t *)v, sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE             \
    }
static nghttp2_nv req_nv[] = {
    NV(":path", "/tiny"),
    NV(":scheme", "http"),
    NV(":authority", "127.0.0.1:18531"),
    NV(":method", "GET"),
    NV("user-agent", "h2load nghttp2/1.52.0"),
};
#define NF (sizeof(req_nv) / sizeof(req_nv[0]))
static pt_hpack_field_t req_f[NF];

static uint8_t block1[256], block2[256]; /* first and later blocks of a connection */
static size_t block1_len, block2_len;
static uint8_t scratch[1 << 14];
static uint8_t out[1024];
static volatile size_t sink;

static int consume(void *data, const pt_hpack_field_t *f)
{
    *(size_t *)data += f->name_len + f->value_len + (unsigned char)f->value[0];
    return 0;
}

static size_t petrel_decode_block(pt_hpack_decoder_t *d, const uint8_t *b, size_t n)
{
    size_t acc = 0;
    if (pt_hpack_decode(d, b, n, 1 << 16, scratch, sizeof(scratch), consume, &acc) != 0)
        abort();
    return acc;
}

static size_t nghttp2_decode_block(nghttp2_hd_inflater *inf, const uint8_t *b, size_t n)
{
    size_t acc = 0;
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t used = nghttp2_hd_inflate_hd2(inf, &nv, &flags, b, n, 1);
        if (used < 0)
            abort();
        b += used;
        n -= (size_t)used;
        if (flags & NGHTTP2_HD_INFLATE_EMIT)
            acc += nv.namelen + nv.valuelen + nv.value[0];
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inf);
            return acc;
        }
        if (used == 0 && !(flags & NGHTTP2_HD_INFLATE_EMIT))
            abort();
    }
}

static size_t petrel_encode_block(pt_hpack_encoder_t *e)
{
    size_t n;
    if (pt_hpack_encode(e, req_f, NF, out, sizeof(out), &n) != 0)
        abort();
    return n;
}

static size_t nghttp2_encode_block(nghttp2_hd_deflater *def)
{
    ssize_t n = nghttp2_hd_deflate_hd(def, out, sizeof(out), req_nv, NF);
    if (n < 0)
        abort();
    return (size_t)n;
}

/* The proxied request, x-request-id rewritten per block (a UUID-like, 36 bytes). */
static char request_id[37] = "0a1b2c3d-0000-4e5f-8a9b-0c1d2e3f4a5b";
#define NP 8
static nghttp2_nv proxied_nv[NP] = {
    NV(":method", "GET"),
    NV(":scheme", "http"),
    NV(":authority", "backend.default.svc.cluster.local:8080"),
    NV(":path", "/tiny"),
    NV("user-agent", "h2load nghttp2/1.52.0"),
    NV("x-forwarded-proto", "http"),
    {(uint8_t *)"x-request-id", (uint8_t *)request_id, 12, 36, NGHTTP2_NV_FLAG_NONE},
    NV("x-envoy-expected-rq-timeout-ms", "15000"),
};
static pt_hpack_field_t proxied_f[NP];

static void next_request_id(long i)
{
    static const char hex[] = "0123456789abcdef";
    for (int k = 0; k < 8; k++)
        request_id[9 + (k < 4 ? k : k + 1)] = hex[(i >> (4 * k)) & 15];
}

__attribute__((noinline)) static void measured(int petrel, const char *mode, long n)
{
    size_t acc = 0;
    if (strcmp(mode, "encode-proxied") == 0) {
        pt_hpack_encoder_t e;
        nghttp2_hd_deflater *def = NULL;
        if (petrel)
            pt_hpack_encoder_init(&e, 4096, 0);
        else
            nghttp2_hd_deflate_new(&def, 4096);
        for (long i = 0; i < n; i++) {
            next_request_id(i);
            size_t len;
            if (petrel) {
                if (pt_hpack_encode(&e, proxied_f, NP, out, sizeof(out), &len) != 0)
                    abort();
            } else {
                ssize_t r = nghttp2_hd_deflate_hd(def, out, sizeof(out), proxied_nv, NP);
                if (r < 0)
                    abort();
                len = (size_t)r;
            }
            acc += len;
        }
        if (petrel)
            pt_hpack_encoder_dispose(&e);
        else
            nghttp2_hd_deflate_del(def);
    }
    if (strcmp(mode, "decode") == 0) {
        if (petrel) {
            pt_hpack_decoder_t d;
            pt_hpack_decoder_init(&d, 4096, 1 << 13);
            for (long i = 0; i < n; i++)
                acc += i == 0 ? petrel_decode_block(&d, block1, block1_len)
                              : petrel_decode_block(&d, block2, block2_len);
            pt_hpack_decoder_dispose(&d);
        } else {
            nghttp2_hd_inflater *inf;
            nghttp2_hd_inflate_new(&inf);
            for (long i = 0; i < n; i++)
                acc += i == 0 ? nghttp2_decode_block(inf, block1, block1_len)
                              : nghttp2_decode_block(inf, block2, block2_len);
            nghttp2_hd_inflate_del(inf);
        }
    } else if (strcmp(mode, "decode-first") == 0) {
        for (long i = 0; i < n; i++) {
            if (petrel) {
                pt_hpack_decoder_t d;
                pt_hpack_decoder_init(&d, 4096, 1 << 13);
                acc += petrel_decode_block(&d, block1, block1_len);
                pt_hpack_decoder_dispose(&d);
            } else {
                nghttp2_hd_inflater *inf;
                nghttp2_hd_inflate_new(&inf);
                acc += nghttp2_decode_block(inf, block1, block1_len);
                nghttp2_hd_inflate_del(inf);
            }
        }
    } else if (strcmp(mode, "encode") == 0) {
        if (petrel) {
            pt_hpack_encoder_t e;
            pt_hpack_encoder_init(&e, 4096, 0);
            for (long i = 0; i < n; i++)
                acc += petrel_encode_block(&e);
            pt_hpack_encoder_dispose(&e);
        } else {
            nghttp2_hd_deflater *def;
            nghttp2_hd_deflate_new(&def, 4096);
            for (long i = 0; i < n; i++)
                acc += nghttp2_encode_block(def);
            nghttp2_hd_deflate_del(def);
        }
    } else if (strcmp(mode, "encode-first") == 0) {
        for (long i = 0; i < n; i++) {
            if (petrel) {
                pt_hpack_encoder_t e;
                pt_hpack_encoder_init(&e, 4096, 0);
                acc += petrel_encode_block(&e);
                pt_hpack_encoder_dispose(&e);
            } else {
                nghttp2_hd_deflater *def;
                nghttp2_hd_deflate_new(&def, 4096);
                acc += nghttp2_encode_block(def);
                nghttp2_hd_deflate_del(def);
            }
        }
    }
    sink = acc;
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "petrel") != 0 && strcmp(argv[1], "nghttp2") != 0)) {
        fprintf(stderr, "usage: hpack_cost petrel|nghttp2 decode|encode|decode-first|"
                        "encode-first|encode-proxied N\n");
        return 2;
    }
    for (size_t i = 0; i < NP; i++)
        proxied_f[i] = (pt_hpack_field_t){
            (const char *)proxied_nv[i].name, (const char *)proxied_nv[i].value,
            (uint32_t)proxied_nv[i].namelen, (uint32_t)proxied_nv[i].valuelen, 0};
    for (size_t i = 0; i < NF; i++)
        req_f[i] = (pt_hpack_field_t){(const char *)req_nv[i].name, (const char *)req_nv[i].value,
                                      (uint32_t)req_nv[i].namelen, (uint32_t)req_nv[i].valuelen, 0};
    /* The blocks h2load sends, from nghttp2's deflater; petrel's encoder must produce the
     * same bytes (it makes the same choices), checked here so the comparison is like for
     * like. */
    nghttp2_hd_deflater *def;
    nghttp2_hd_deflate_new(&def, 4096);
    block1_len = (size_t)nghttp2_hd_deflate_hd(def, block1, sizeof(block1), req_nv, NF);
    block2_len = (size_t)nghttp2_hd_deflate_hd(def, block2, sizeof(block2), req_nv, NF);
    nghttp2_hd_deflate_del(def);
    pt_hpack_encoder_t e;
    pt_hpack_encoder_init(&e, 4096, 0);
    size_t n1, n2;
    uint8_t b[256];
    if (pt_hpack_encode(&e, req_f, NF, b, sizeof(b), &n1) != 0 || n1 != block1_len ||
        memcmp(b, block1, n1) != 0 || pt_hpack_encode(&e, req_f, NF, b, sizeof(b), &n2) != 0 ||
        n2 != block2_len || memcmp(b, block2, n2) != 0) {
        fprintf(stderr, "hpack_cost: petrel's encoding differs from nghttp2's\n");
        return 1;
    }
    pt_hpack_encoder_dispose(&e);
    measured(strcmp(argv[1], "petrel") == 0, argv[2], atol(argv[3]));
    printf("%s %s: blocks of %zu and %zu bytes\n", argv[1], argv[2], block1_len, block2_len);
    return 0;
}
