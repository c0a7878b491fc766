/* The protobuf wire format: reading and writing its primitives (varints, zigzag, fixed32/64,
 * length-delimited records, tags). What the bytes mean is proxy/proto_json.h's business, by
 * the schema of proxy/proto_schema.h.
 *
 * The reader trusts nothing: every read is bounds-checked against the end of the buffer, a
 * varint longer than 10 bytes (or whose 10th byte carries more than the 64th bit) is
 * rejected, a length that runs past the end is rejected, groups (wire types 3 and 4, gone
 * from proto3) and the undefined wire types 6 and 7 are rejected, and so is field number 0 or
 * one past 2^29 - 1. Errors are negative PT_PB_E* codes; pt_pb_strerror names them. */
#ifndef PT_PROTOBUF_H
#define PT_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

#define PT_PB_WIRE_VARINT 0
#define PT_PB_WIRE_I64    1
#define PT_PB_WIRE_LEN    2
#define PT_PB_WIRE_SGROUP 3
#define PT_PB_WIRE_EGROUP 4
#define PT_PB_WIRE_I32    5

#define PT_PB_MAX_FIELD_NUMBER 536870911u /* 2^29 - 1 */

#define PT_PB_ETRUNCATED (-1) /* the input ends inside a value */
#define PT_PB_EOVERLONG  (-2) /* a varint of more than 64 bits */
#define PT_PB_EWIRETYPE  (-3) /* a group, or wire type 6 or 7 */
#define PT_PB_EFIELD     (-4) /* field number 0 or above PT_PB_MAX_FIELD_NUMBER */
#define PT_PB_ELENGTH    (-5) /* a length-delimited value longer than what is left */
#define PT_PB_ENOMEM     (-6)

const char *pt_pb_strerror(int code);

/* A cursor over [p, end). */
typedef struct pt_pb_reader {
    const uint8_t *p;
    const uint8_t *end;
} pt_pb_reader_t;

static inline void pt_pb_reader_init(pt_pb_reader_t *r, const void *buf, size_t len)
{
    r->p = buf;
    r->end = r->p + len;
}
static inline int pt_pb_reader_done(const pt_pb_reader_t *r)
{
    return r->p >= r->end;
}

int pt_pb_read_varint(pt_pb_reader_t *r, uint64_t *out);
/* A tag: field number and wire type (any of 0..5; the caller decides about groups). */
int pt_pb_read_tag(pt_pb_reader_t *r, uint32_t *field, int *wire_type);
int pt_pb_read_fixed32(pt_pb_reader_t *r, uint32_t *out);
int pt_pb_read_fixed64(pt_pb_reader_t *r, uint64_t *out);
/* A length-delimited value: *p points into the buffer, *len bytes, all within it. */
int pt_pb_read_len(pt_pb_reader_t *r, const uint8_t **p, size_t *len);
/* Skips a value of wire_type (groups: PT_PB_EWIRETYPE). */
int pt_pb_skip(pt_pb_reader_t *r, int wire_type);

static inline int64_t pt_pb_zigzag_decode(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}
static inline uint64_t pt_pb_zigzag_encode(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

/* A growing output buffer. An allocation failure sets `failed`; every later put does
 * nothing, so a writer is checked once at the end. */
typedef struct pt_pb_writer {
    uint8_t *buf;
    size_t len, cap;
    int failed;
} pt_pb_writer_t;

void pt_pb_writer_init(pt_pb_writer_t *w);
void pt_pb_writer_dispose(pt_pb_writer_t *w);
void pt_pb_put_raw(pt_pb_writer_t *w, const void *p, size_t len);
void pt_pb_put_varint(pt_pb_writer_t *w, uint64_t v);
void pt_pb_put_tag(pt_pb_writer_t *w, uint32_t field, int wire_type);
void pt_pb_put_fixed32(pt_pb_writer_t *w, uint32_t v);
void pt_pb_put_fixed64(pt_pb_writer_t *w, uint64_t v);
/* A length-delimited field: tag, length, bytes. */
void pt_pb_put_bytes(pt_pb_writer_t *w, uint32_t field, const void *p, size_t len);
/* A nested message whose length is not known yet: begin returns a mark, the caller writes
 * the message's fields, end writes the length in front of them. */
size_t pt_pb_begin_len(pt_pb_writer_t *w, uint32_t field);
void pt_pb_end_len(pt_pb_writer_t *w, size_t mark);

#endif
