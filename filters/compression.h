/* The compressor libraries of the compressor filter (Envoy's envoy.compression.*.compressor
 * extensions): gzip on zlib, brotli on libbrotlienc, zstd on libzstd.
 *
 * A library's config is parsed from the compressor_library TypedExtensionConfig, with
 * Envoy's defaults and ranges. A stream compresses a body as it passes: each call takes
 * the bytes of one chunk and replaces them with what the encoder gives out after a flush
 * (so a client sees every chunk as it comes, as with Envoy), or after the end of the
 * stream when `finish`. Memory per stream is the encoder's own state and nothing else. */
#ifndef PT_COMPRESSION_H
#define PT_COMPRESSION_H

#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/buf.h"
#include "proxy/config_reader.h"

typedef enum pt_compression_kind {
    PT_COMPRESSION_GZIP,
    PT_COMPRESSION_BROTLI,
    PT_COMPRESSION_ZSTD,
} pt_compression_kind_t;

typedef struct pt_compression_lib {
    pt_compression_kind_t kind;
    const char *encoding;    /* the content coding: "gzip", "br", "zstd" */
    const char *stat_prefix; /* Envoy's library stat prefix: "gzip", "brotli", "zstd" */
    uint32_t chunk_size;     /* most output bytes produced per encoder call */
    union {
        struct {
            int level; /* -1: zlib's default */
            int strategy, memory_level, window_bits;
        } gzip;
        struct {
            uint32_t quality, window_bits, input_block_bits;
            int mode; /* BROTLI_MODE_* */
            int disable_literal_context_modeling;
        } brotli;
        struct {
            int level; /* 0: the library's default */
            int checksum;
            int strategy; /* 0: the library's default */
        } zstd;
    } u;
} pt_compression_lib_t;

/* Reads the compressor_library object the reader is in ({name, typed_config}); 0 or -1
 * with errors naming the fields. */
int pt_compression_lib_parse(pt_cfg_t *r, pt_arena_t *a, pt_compression_lib_t *out);

typedef struct pt_compression_stream pt_compression_stream_t;

pt_compression_stream_t *pt_compression_stream_new(const pt_compression_lib_t *lib);
/* Compresses the bytes of `data` and puts the output in their place (flushed; the stream's
 * end when finish). 0, or -1 when the encoder or an allocation fails. */
int pt_compression_stream_run(pt_compression_stream_t *z, pt_buf_t *data, int finish);
void pt_compression_stream_free(pt_compression_stream_t *z);

#endif
