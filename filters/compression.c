/* The compressor libraries (see compression.h): config with Envoy's defaults and ranges,
 * and streams that compress a body chunk by chunk. */
#include "filters/compression.h"

#include <brotli/encode.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define GZIP_TYPE   "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"
#define BROTLI_TYPE "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli"
#define ZSTD_TYPE   "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd"

/* ---- config ----------------------------------------------------------------------------- */

/* chunk_size in every library: 4096 to 65536, 4096 by default. */
static void parse_chunk_size(pt_cfg_t *r, pt_compression_lib_t *l)
{
    uint64_t v;
    pt_cfg_uint(r, "chunk_size", &v, 4096, 4096, 65536);
    l->chunk_size = (uint32_t)v;
}

static void parse_gzip(pt_cfg_t *r, pt_compression_lib_t *l)
{
    /* The enum's names with their aliases (BEST_SPEED is level 1, BEST_COMPRESSION 9). */
    static const char *const levels[] = {
        "DEFAULT_COMPRESSION", "BEST_SPEED",          "COMPRESSION_LEVEL_1", "COMPRESSION_LEVEL_2",
        "COMPRESSION_LEVEL_3", "COMPRESSION_LEVEL_4", "COMPRESSION_LEVEL_5", "COMPRESSION_LEVEL_6",
        "COMPRESSION_LEVEL_7", "COMPRESSION_LEVEL_8", "COMPRESSION_LEVEL_9", "BEST_COMPRESSION",
        NULL};
    static const int level_value[] = {Z_DEFAULT_COMPRESSION, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9};
    static const char *const strategies[] = {"DEFAULT_STRATEGY", "FILTERED", "HUFFMAN_ONLY", "RLE",
                                             "FIXED", NULL};
    static const int strategy_value[] = {Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE,
                                         Z_FIXED};
    int i;
    pt_cfg_enum(r, "compression_level", levels, NULL, &i, 0);
    l->u.gzip.level = level_value[i];
    pt_cfg_enum(r, "compression_strategy", strategies, NULL, &i, 0);
    l->u.gzip.strategy = strategy_value[i];
    uint64_t v;
    pt_cfg_uint(r, "memory_level", &v, 5, 1, 9);
    l->u.gzip.memory_level = (int)v;
    pt_cfg_uint(r, "window_bits", &v, 12, 9, 15);
    l->u.gzip.window_bits = (int)v;
    parse_chunk_size(r, l);
}

static void parse_brotli(pt_cfg_t *r, pt_compression_lib_t *l)
{
    static const char *const modes[] = {"DEFAULT", "GENERIC", "TEXT", "FONT", NULL};
    static const int mode_value[] = {BROTLI_DEFAULT_MODE, BROTLI_MODE_GENERIC, BROTLI_MODE_TEXT,
                                     BROTLI_MODE_FONT};
    uint64_t v;
    pt_cfg_uint(r, "quality", &v, 3, 0, 11);
    l->u.brotli.quality = (uint32_t)v;
    pt_cfg_uint(r, "window_bits", &v, 18, 10, 24);
    l->u.brotli.window_bits = (uint32_t)v;
    pt_cfg_uint(r, "input_block_bits", &v, 24, 16, 24);
    l->u.brotli.input_block_bits = (uint32_t)v;
    int i;
    pt_cfg_enum(r, "encoder_mode", modes, NULL, &i, 0);
    l->u.brotli.mode = mode_value[i];
    pt_cfg_bool(r, "disable_literal_context_modeling", &l->u.brotli.disable_literal_context_modeling,
                0);
    parse_chunk_size(r, l);
}

static void parse_zstd(pt_cfg_t *r, pt_compression_lib_t *l)
{
    static const char *const strategies[] = {"DEFAULT", "FAST",    "DFAST", "GREEDY",
                                             "LAZY",    "LAZY2",   "BTLAZY2", "BTOPT",
                                             "BTULTRA", "BTULTRA2", NULL};
    static const char *const unsupported[] = {"dictionary", NULL};
    pt_cfg_unsupported(r, unsupported);
    uint64_t v;
    /* 0 is zstd's default level (3); past its highest level zstd would clamp silently. */
    pt_cfg_uint(r, "compression_level", &v, 0, 0, (uint64_t)ZSTD_maxCLevel());
    l->u.zstd.level = (int)v;
    pt_cfg_bool(r, "enable_checksum", &l->u.zstd.checksum, 0);
    pt_cfg_enum(r, "strategy", strategies, NULL, &l->u.zstd.strategy, 0);
    parse_chunk_size(r, l);
}

int pt_compression_lib_parse(pt_cfg_t *r, pt_arena_t *a, pt_compression_lib_t *out)
{
    (void)a;
    size_t before = r->nerrors;
    const char *name = NULL;
    if (pt_cfg_string(r, "name", &name, NULL) == 0 || name == NULL || *name == '\0')
        pt_cfg_error(r, "name", "is required");
    int rc = 0;
    const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
    if (type == NULL) {
        if (rc == 0)
            pt_cfg_error(r, "typed_config", "is required");
        return -1;
    }
    if (strcmp(type, GZIP_TYPE) == 0) {
        *out = (pt_compression_lib_t){.kind = PT_COMPRESSION_GZIP, .encoding = "gzip",
                                      .stat_prefix = "gzip"};
        parse_gzip(r, out);
    } else if (strcmp(type, BROTLI_TYPE) == 0) {
        *out = (pt_compression_lib_t){.kind = PT_COMPRESSION_BROTLI, .encoding = "br",
                                      .stat_prefix = "brotli"};
        parse_brotli(r, out);
    } else if (strcmp(type, ZSTD_TYPE) == 0) {
        *out = (pt_compression_lib_t){.kind = PT_COMPRESSION_ZSTD, .encoding = "zstd",
                                      .stat_prefix = "zstd"};
        parse_zstd(r, out);
    } else {
        pt_cfg_error(r, "@type",
                     "\"%s\" is not a compressor library petrel has (gzip, brotli or zstd)", type);
        pt_cfg_skip_rest(r);
    }
    pt_cfg_leave(r);
    return r->nerrors == before ? 0 : -1;
}

/* ---- streams ---------------------------------------------------------------------------- */

struct pt_compression_stream {
    const pt_compression_lib_t *lib;
    union {
        z_stream gz;
        BrotliEncoderState *br;
        ZSTD_CStream *zs;
    } e;
};

pt_compression_stream_t *pt_compression_stream_new(const pt_compression_lib_t *lib)
{
    pt_compression_stream_t *z = calloc(1, sizeof(*z));
    if (z == NULL)
        return NULL;
    z->lib = lib;
    switch (lib->kind) {
    case PT_COMPRESSION_GZIP:
        /* window_bits + 16: a gzip header and trailer around the deflate stream. */
        if (deflateInit2(&z->e.gz, lib->u.gzip.level, Z_DEFLATED, lib->u.gzip.window_bits + 16,
                         lib->u.gzip.memory_level, lib->u.gzip.strategy) != Z_OK)
            goto fail;
        break;
    case PT_COMPRESSION_BROTLI:
        z->e.br = BrotliEncoderCreateInstance(NULL, NULL, NULL);
        if (z->e.br == NULL)
            goto fail;
        BrotliEncoderSetParameter(z->e.br, BROTLI_PARAM_QUALITY, lib->u.brotli.quality);
        BrotliEncoderSetParameter(z->e.br, BROTLI_PARAM_LGWIN, lib->u.brotli.window_bits);
        BrotliEncoderSetParameter(z->e.br, BROTLI_PARAM_LGBLOCK, lib->u.brotli.input_block_bits);
        BrotliEncoderSetParameter(z->e.br, BROTLI_PARAM_MODE, (uint32_t)lib->u.brotli.mode);
        BrotliEncoderSetParameter(z->e.br, BROTLI_PARAM_DISABLE_LITERAL_CONTEXT_MODELING,
                                  (uint32_t)lib->u.brotli.disable_literal_context_modeling);
        break;
    case PT_COMPRESSION_ZSTD:
        z->e.zs = ZSTD_createCStream();
        if (z->e.zs == NULL)
            goto fail;
        if (lib->u.zstd.level > 0)
            ZSTD_CCtx_setParameter(z->e.zs, ZSTD_c_compressionLevel, lib->u.zstd.level);
        ZSTD_CCtx_setParameter(z->e.zs, ZSTD_c_checksumFlag, lib->u.zstd.checksum);
        if (lib->u.zstd.strategy > 0)
            ZSTD_CCtx_setParameter(z->e.zs, ZSTD_c_strategy, lib->u.zstd.strategy);
        break;
    }
    return z;
fail:
    free(z);
    return NULL;
}

/* One encoder step over `in` (all of it is consumed before a flush or finish completes),
 * writing into reserved space of `out`. Returns 1 while the encoder has more to give for
 * this step, 0 when it is done, -1 on error. */
static int step(pt_compression_stream_t *z, const uint8_t **in, size_t *in_len, uint8_t *out,
                size_t out_cap, size_t *produced, int mode)
{
    switch (z->lib->kind) {
    case PT_COMPRESSION_GZIP: {
        z_stream *s = &z->e.gz;
        s->next_in = (Bytef *)(uintptr_t)*in;
        s->avail_in = (uInt)*in_len;
        s->next_out = out;
        s->avail_out = (uInt)out_cap;
        int flush = mode == 0 ? Z_NO_FLUSH : mode == 1 ? Z_SYNC_FLUSH : Z_FINISH;
        int rc = deflate(s, flush);
        if (rc == Z_STREAM_ERROR)
            return -1;
        *produced = out_cap - s->avail_out;
        *in += *in_len - s->avail_in;
        *in_len = s->avail_in;
        if (flush == Z_FINISH)
            return rc == Z_STREAM_END ? 0 : 1;
        return (*in_len > 0 || s->avail_out == 0) ? 1 : 0;
    }
    case PT_COMPRESSION_BROTLI: {
        size_t avail_out = out_cap;
        uint8_t *next_out = out;
        BrotliEncoderOperation op = mode == 0   ? BROTLI_OPERATION_PROCESS
                                    : mode == 1 ? BROTLI_OPERATION_FLUSH
                                                : BROTLI_OPERATION_FINISH;
        if (!BrotliEncoderCompressStream(z->e.br, op, in_len, in, &avail_out, &next_out, NULL))
            return -1;
        *produced = out_cap - avail_out;
        if (*in_len > 0 || BrotliEncoderHasMoreOutput(z->e.br))
            return 1;
        if (mode == 2)
            return BrotliEncoderIsFinished(z->e.br) ? 0 : 1;
        return 0;
    }
    case PT_COMPRESSION_ZSTD: {
        ZSTD_inBuffer ib = {*in, *in_len, 0};
        ZSTD_outBuffer ob = {out, out_cap, 0};
        ZSTD_EndDirective d = mode == 0 ? ZSTD_e_continue : mode == 1 ? ZSTD_e_flush : ZSTD_e_end;
        size_t left = ZSTD_compressStream2(z->e.zs, &ob, &ib, d);
        if (ZSTD_isError(left))
            return -1;
        *produced = ob.pos;
        *in += ib.pos;
        *in_len -= ib.pos;
        if (mode == 0)
            return *in_len > 0 ? 1 : 0;
        return left > 0 || *in_len > 0 ? 1 : 0;
    }
    }
    return -1;
}

/* Feeds one piece of input (mode 0: as it is; 1: then flush; 2: then finish) until the
 * encoder has taken it all and given all it has for it. */
static int feed(pt_compression_stream_t *z, const uint8_t *in, size_t in_len, pt_buf_t *out,
                int mode)
{
    for (;;) {
        size_t avail;
        uint8_t *space = (uint8_t *)pt_buf_reserve(out, 1, &avail);
        if (space == NULL)
            return -1;
        if (avail > z->lib->chunk_size)
            avail = z->lib->chunk_size;
        size_t produced = 0;
        int more = step(z, &in, &in_len, space, avail, &produced, mode);
        pt_buf_commit(out, produced);
        if (more <= 0)
            return more;
    }
}

int pt_compression_stream_run(pt_compression_stream_t *z, pt_buf_t *data, int finish)
{
    if (pt_buf_len(data) == 0 && !finish)
        return 0; /* an empty chunk: nothing to flush */
    pt_buf_t out = {0};
    int rc = 0;
    /* Every chunk of the input as it is, then the flush (or the end) with no more input. */
    while (pt_buf_len(data) > 0 && rc == 0) {
        size_t n;
        const char *p = pt_buf_peek(data, &n);
        rc = feed(z, (const uint8_t *)p, n, &out, 0);
        pt_buf_drain(data, n);
    }
    if (rc == 0)
        rc = feed(z, NULL, 0, &out, finish ? 2 : 1);
    pt_buf_dispose(data);
    if (rc < 0) {
        pt_buf_dispose(&out);
        return -1;
    }
    pt_buf_move(data, &out);
    return 0;
}

void pt_compression_stream_free(pt_compression_stream_t *z)
{
    if (z == NULL)
        return;
    switch (z->lib->kind) {
    case PT_COMPRESSION_GZIP:
        deflateEnd(&z->e.gz);
        break;
    case PT_COMPRESSION_BROTLI:
        BrotliEncoderDestroyInstance(z->e.br);
        break;
    case PT_COMPRESSION_ZSTD:
        ZSTD_freeCStream(z->e.zs);
        break;
    }
    free(z);
}
