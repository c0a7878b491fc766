/* HPACK (RFC 7541): header compression for HTTP/2, one decoder and one encoder per
 * connection, for petrel's own HTTP/2 codec.
 *
 * What this module does and does not do:
 * - A header block is decoded whole: the codec joins a HEADERS frame and its CONTINUATION
 *   frames into one buffer first (the block is bounded by the codec's limits anyway), so
 *   the decoder keeps no state between calls other than its dynamic table.
 * - Field names are passed through as they are: rejecting uppercase names, pseudo-header
 *   order, connection-specific headers and the like is HTTP/2's rule (RFC 9113 §8.2), so
 *   it is the codec's job, not HPACK's. The encoder expects lowercase names likewise.
 * - Errors: every decoder error but PT_HPACK_E_LIST_SIZE leaves the dynamic table out of
 *   step with the peer's, so it is a connection error, COMPRESSION_ERROR
 *   (pt_hpack_connection_error()). PT_HPACK_E_LIST_SIZE is reported after the whole block
 *   was decoded and the table updated: the stream fails (431), the connection lives on.
 * - Memory: a table holds no memory until its first insertion, then grows with what is
 *   inserted, up to about twice its maximum size in bytes (RFC 7541 §4.1 counts 32 bytes
 *   per entry on top of its strings; the strings are what is stored). No allocation
 *   happens per header block once a table has grown to its working size. */
#ifndef PT_HPACK_H
#define PT_HPACK_H

#include <stddef.h>
#include <stdint.h>

enum {
    PT_HPACK_OK = 0,
    PT_HPACK_E_TRUNCATED = -1,       /* the block ends inside a representation */
    PT_HPACK_E_INTEGER = -2,         /* an integer past 2^32-1 or with too many octets */
    PT_HPACK_E_INDEX = -3,           /* index 0, or past the static + dynamic table */
    PT_HPACK_E_HUFFMAN = -4,         /* EOS in a string, or padding > 7 bits or not all 1s */
    PT_HPACK_E_STRING_TOO_LONG = -5, /* a string over the decoder's max_string */
    PT_HPACK_E_TABLE_SIZE = -6,      /* size update over the limit, mid-block, or missing */
    PT_HPACK_E_LIST_SIZE = -7,       /* header list over the caller's limit (stream error) */
    PT_HPACK_E_NOMEM = -8,
    PT_HPACK_E_BUFFER = -9, /* encoder: output buffer smaller than pt_hpack_encode_bound() */
};

/* Field flags. */
#define PT_HPACK_F_NEVER_INDEX 0x1u /* §6.2.3: never indexed, here and by any intermediary */
#define PT_HPACK_F_NO_INDEX    0x2u /* encoder: literal without indexing (decoder reports it) */
/* Decoder: the view outlives the callback, as long as the block does (it points into the
 * block itself or the static table), so a consumer need not copy it while it keeps the
 * block. */
#define PT_HPACK_F_NAME_STABLE  0x100u
#define PT_HPACK_F_VALUE_STABLE 0x200u

/* A header field as views: name and value are not NUL-terminated. */
typedef struct pt_hpack_field {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
    unsigned flags;
} pt_hpack_field_t;

/* The dynamic table (§2.3.2), shared by both directions' code: a FIFO of entries whose
 * strings live contiguously (name then value) in one byte area used as a circular buffer
 * that never splits an entry; entry metadata in a power-of-two ring, the entry inserted
 * n-th (from 0) in slot n & (ent_cap - 1). Index 1 is the newest entry. An encoder's table
 * also keeps an index (hash chains) to find entries without a scan. */
typedef struct pt_hpack_entry {
    uint32_t off; /* of the name in bytes; the value follows it */
    uint32_t name_len;
    uint32_t value_len;
} pt_hpack_entry_t;

/* Encoder only, beside each entry: its keys and the next older entry (insertion number +
 * 1, 0 for none) with the same key in its hash chain. */
typedef struct pt_hpack_link {
    uint32_t name_key;
    uint32_t exact_key;
    uint32_t next_name;
    uint32_t next_exact;
} pt_hpack_link_t;

typedef struct pt_hpack_table {
    pt_hpack_entry_t *ent; /* ring of ent_cap (a power of two) entries */
    pt_hpack_link_t *link; /* encoder: ring of ent_cap links */
    uint32_t *bucket;      /* encoder: chain heads (newest insertion number + 1), exact then name */
    uint32_t ent_cap;
    uint32_t first; /* ring slot of the oldest entry */
    uint32_t count;
    uint32_t inserted; /* insertions so far (mod 2^32): the newest entry is number inserted-1 */
    uint8_t indexed;   /* keep link and bucket (encoder) */
    char *bytes;       /* strings area of bytes_cap bytes */
    uint32_t bytes_cap;
    uint32_t head;     /* offset of the oldest entry's strings */
    uint32_t tail;     /* where the next entry's strings go */
    uint32_t wrap;     /* end of used bytes before tail wrapped to 0; 0 when not wrapped */
    uint32_t size;     /* §4.1 size: sum of 32 + name + value */
    uint32_t max_size; /* current maximum size (last size update) */
} pt_hpack_table_t;

typedef struct pt_hpack_decoder {
    pt_hpack_table_t table;
    uint32_t settings_max; /* our SETTINGS_HEADER_TABLE_SIZE, acknowledged by the peer */
    uint32_t max_string;   /* longest string accepted, after Huffman decoding */
    uint8_t need_update;   /* the limit went below max_size: next block opens with an update */
} pt_hpack_decoder_t;

typedef struct pt_hpack_encoder {
    pt_hpack_table_t table;
    uint32_t local_max;     /* the most this encoder will use, whatever the peer allows */
    uint32_t min_pending;   /* smallest max size set since the last block (§4.2) */
    uint8_t update_pending; /* emit size update(s) at the start of the next block */
    uint8_t huffman;        /* Huffman-code strings when not longer */
    uint8_t index_volatile; /* also index the headers that change per message (see .c) */
} pt_hpack_encoder_t;

/* Initial size of both tables before any SETTINGS (RFC 9113 §6.5.2). */
#define PT_HPACK_DEFAULT_TABLE_SIZE 4096u

/* The decoder. settings_max: our SETTINGS_HEADER_TABLE_SIZE, also the table's starting
 * maximum (so pass HTTP/2's initial 4096, then call pt_hpack_decoder_set_settings_max when
 * the peer acknowledges another value); max_string: the longest name or value accepted (a longer
 * one is a connection error: keep it at least the header list limit so that the list limit, a
 * stream error, trips first). */
void pt_hpack_decoder_init(pt_hpack_decoder_t *d, uint32_t settings_max, uint32_t max_string);
void pt_hpack_decoder_dispose(pt_hpack_decoder_t *d);

/* Our SETTINGS_HEADER_TABLE_SIZE changed and the peer acknowledged it. When it falls below
 * the table's current maximum, the peer's next block must start with a size update to at
 * most the new value (§4.2); a block without one fails with PT_HPACK_E_TABLE_SIZE. */
void pt_hpack_decoder_set_settings_max(pt_hpack_decoder_t *d, uint32_t settings_max);

/* Called once per decoded field, in order. The views are valid during the call only (they
 * point into the block, the static table, the dynamic table or the scratch buffer).
 * Return 0 to go on; a negative value stops decoding and is returned by pt_hpack_decode
 * (the table is then out of step: a connection error). */
typedef int (*pt_hpack_field_cb)(void *data, const pt_hpack_field_t *f);

/* Decode one complete header block. max_list_size: the header list limit (§4.1 sizes: 32 +
 * name + value per field, as SETTINGS_MAX_HEADER_LIST_SIZE counts); fields past it are not
 * delivered, the block is still decoded to its end, and PT_HPACK_E_LIST_SIZE is returned.
 * scratch: where Huffman-coded strings are decoded, at least 2 * max_string bytes (a
 * string that does not fit fails with PT_HPACK_E_STRING_TOO_LONG). */
int pt_hpack_decode(pt_hpack_decoder_t *d, const uint8_t *in, size_t len, size_t max_list_size,
                    uint8_t *scratch, size_t scratch_cap, pt_hpack_field_cb cb, void *data);

/* The same, collecting the fields into an array whose views stay valid until the block and
 * buf are reused: strings that are neither in the block nor in the static table (Huffman
 * decoded, or from the dynamic table, which later insertions may overwrite) are copied
 * into buf. Size fields for max_list_size / 32 entries and buf for max_list_size bytes:
 * then the list limit trips before either fills (if one fills anyway, the rest is dropped
 * and PT_HPACK_E_LIST_SIZE returned, the table still in step). */
typedef struct pt_hpack_list {
    pt_hpack_field_t *fields;
    size_t count, cap;
    char *buf;
    size_t buf_len, buf_cap;
} pt_hpack_list_t;

int pt_hpack_decode_list(pt_hpack_decoder_t *d, const uint8_t *in, size_t len, size_t max_list_size,
                         uint8_t *scratch, size_t scratch_cap, pt_hpack_list_t *list);

/* Encoder flags for pt_hpack_encoder_init. */
#define PT_HPACK_ENC_NO_HUFFMAN 0x1u /* strings as they are (tests, debugging) */
#define PT_HPACK_ENC_INDEX_ALL  0x2u /* index the per-message headers too (see .c) */

/* The encoder. local_max: the most table memory this side will use (4096 is typical);
 * the table starts at min(local_max, 4096), the peer's initial setting. */
void pt_hpack_encoder_init(pt_hpack_encoder_t *e, uint32_t local_max, unsigned flags);
void pt_hpack_encoder_dispose(pt_hpack_encoder_t *e);

/* The peer's SETTINGS_HEADER_TABLE_SIZE arrived: the table follows min(value, local_max),
 * and the next block opens with the size update(s) that tell the peer (§4.2, §6.3). */
void pt_hpack_encoder_set_peer_max(pt_hpack_encoder_t *e, uint32_t peer_max);

/* An upper bound on the encoding of these fields, size updates included. */
size_t pt_hpack_encode_bound(const pt_hpack_field_t *fields, size_t n);

/* Encode a header list as one block into out. Fields flagged PT_HPACK_F_NEVER_INDEX, and
 * authorization, proxy-authorization and cookie values shorter than 20 bytes, go out as
 * never indexed (§7.1.3). cap must be at least pt_hpack_encode_bound(): otherwise
 * PT_HPACK_E_BUFFER, before anything changed. */
int pt_hpack_encode(pt_hpack_encoder_t *e, const pt_hpack_field_t *fields, size_t n, uint8_t *out,
                    size_t cap, size_t *out_len);

/* Huffman coding (§5.2, Appendix B), exposed for tests and for the codec. */
size_t pt_hpack_huffman_encoded_len(const uint8_t *s, size_t n);
size_t pt_hpack_huffman_encode(const uint8_t *s, size_t n, uint8_t *out);
/* Decodes into out (cap bytes); returns the decoded length or a negative PT_HPACK_E_*. */
long pt_hpack_huffman_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* The static table (Appendix A): 1..61. */
#define PT_HPACK_STATIC_COUNT 61
const pt_hpack_field_t *pt_hpack_static_entry(uint32_t index);
/* 1-based index of the first static entry with this name (0 if none); *exact set to the
 * index of the entry with this name and value, or 0. */
uint32_t pt_hpack_static_find(const char *name, size_t name_len, const char *value,
                              size_t value_len, uint32_t *exact);

/* Dynamic table access, for tests and stats: entry 1 is the newest. */
int pt_hpack_table_get(const pt_hpack_table_t *t, uint32_t index, pt_hpack_field_t *out);

/* Whether a decoder error must end the connection with COMPRESSION_ERROR. */
static inline int pt_hpack_connection_error(int rc)
{
    return rc < 0 && rc != PT_HPACK_E_LIST_SIZE;
}

const char *pt_hpack_strerror(int rc);

#endif
