/* The protobuf wire format (see protobuf.h). */
#include "proxy/protobuf.h"

#include <stdlib.h>
#include <string.h>

const char *pt_pb_strerror(int code)
{
    switch (code) {
    case PT_PB_ETRUNCATED:
        return "truncated";
    case PT_PB_EOVERLONG:
        return "varint longer than 64 bits";
    case PT_PB_EWIRETYPE:
        return "invalid wire type";
    case PT_PB_EFIELD:
        return "invalid field number";
    case PT_PB_ELENGTH:
        return "length past the end of the message";
    case PT_PB_ENOMEM:
        return "out of memory";
    }
    return "invalid";
}

int pt_pb_read_varint(pt_pb_reader_t *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return PT_PB_ETRUNCATED;
        uint8_t b = *r->p++;
        /* The 10th byte holds bit 63 only: anything more does not fit 64 bits. */
        if (i == 9 && b > 1)
            return PT_PB_EOVERLONG;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return PT_PB_EOVERLONG;
}

int pt_pb_read_tag(pt_pb_reader_t *r, uint32_t *field, int *wire_type)
{
    uint64_t v;
    int rc = pt_pb_read_varint(r, &v);
    if (rc < 0)
        return rc;
    if ((v >> 3) == 0 || (v >> 3) > PT_PB_MAX_FIELD_NUMBER)
        return PT_PB_EFIELD;
    *wire_type = (int)(v & 7);
    if (*wire_type > PT_PB_WIRE_I32)
        return PT_PB_EWIRETYPE;
    *field = (uint32_t)(v >> 3);
    return 0;
}

int pt_pb_read_fixed32(pt_pb_reader_t *r, uint32_t *out)
{
    if (r->end - r->p < 4)
        return PT_PB_ETRUNCATED;
    *out = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
           (uint32_t)r->p[3] << 24;
    r->p += 4;
    return 0;
}

int pt_pb_read_fixed64(pt_pb_reader_t *r, uint64_t *out)
{
    uint32_t lo = 0, hi = 0;
    if (r->end - r->p < 8)
        return PT_PB_ETRUNCATED;
    pt_pb_read_fixed32(r, &lo);
    pt_pb_read_fixed32(r, &hi);
    *out = (uint64_t)hi << 32 | lo;
    return 0;
}

int pt_pb_read_len(pt_pb_reader_t *r, const uint8_t **p, size_t *len)
{
    uint64_t n;
    int rc = pt_pb_read_varint(r, &n);
    if (rc < 0)
        return rc;
    if (n > (uint64_t)(r->end - r->p))
        return PT_PB_ELENGTH;
    *p = r->p;
    *len = (size_t)n;
    r->p += n;
    return 0;
}

int pt_pb_skip(pt_pb_reader_t *r, int wire_type)
{
    uint64_t v;
    uint32_t v32;
    const uint8_t *p;
    size_t len;
    switch (wire_type) {
    case PT_PB_WIRE_VARINT:
        return pt_pb_read_varint(r, &v);
    case PT_PB_WIRE_I64:
        return pt_pb_read_fixed64(r, &v);
    case PT_PB_WIRE_LEN:
        return pt_pb_read_len(r, &p, &len);
    case PT_PB_WIRE_I32:
        return pt_pb_read_fixed32(r, &v32);
    }
    return PT_PB_EWIRETYPE;
}

void pt_pb_writer_init(pt_pb_writer_t *w)
{
    memset(w, 0, sizeof(*w));
}

void pt_pb_writer_dispose(pt_pb_writer_t *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

static int reserve(pt_pb_writer_t *w, size_t more)
{
    if (w->failed)
        return -1;
    if (w->cap - w->len >= more)
        return 0;
    size_t cap = w->cap ? w->cap : 64;
    while (cap - w->len < more) {
        if (cap > SIZE_MAX / 2)
            goto fail;
        cap *= 2;
    }
    uint8_t *buf = realloc(w->buf, cap);
    if (buf == NULL)
        goto fail;
    w->buf = buf;
    w->cap = cap;
    return 0;
fail:
    w->failed = 1;
    return -1;
}

void pt_pb_put_raw(pt_pb_writer_t *w, const void *p, size_t len)
{
    if (len == 0 || reserve(w, len) < 0)
        return;
    memcpy(w->buf + w->len, p, len);
    w->len += len;
}

static size_t varint_encode(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

void pt_pb_put_varint(pt_pb_writer_t *w, uint64_t v)
{
    uint8_t tmp[10];
    pt_pb_put_raw(w, tmp, varint_encode(tmp, v));
}

void pt_pb_put_tag(pt_pb_writer_t *w, uint32_t field, int wire_type)
{
    pt_pb_put_varint(w, (uint64_t)field << 3 | (unsigned)wire_type);
}

void pt_pb_put_fixed32(pt_pb_writer_t *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    pt_pb_put_raw(w, b, 4);
}

void pt_pb_put_fixed64(pt_pb_writer_t *w, uint64_t v)
{
    pt_pb_put_fixed32(w, (uint32_t)v);
    pt_pb_put_fixed32(w, (uint32_t)(v >> 32));
}

void pt_pb_put_bytes(pt_pb_writer_t *w, uint32_t field, const void *p, size_t len)
{
    pt_pb_put_tag(w, field, PT_PB_WIRE_LEN);
    pt_pb_put_varint(w, len);
    pt_pb_put_raw(w, p, len);
}

size_t pt_pb_begin_len(pt_pb_writer_t *w, uint32_t field)
{
    pt_pb_put_tag(w, field, PT_PB_WIRE_LEN);
    return w->len;
}

void pt_pb_end_len(pt_pb_writer_t *w, size_t mark)
{
    if (w->failed)
        return;
    /* The body is written; move it up by the length's size and put the length before it. */
    size_t body = w->len - mark;
    uint8_t tmp[10];
    size_t n = varint_encode(tmp, body);
    if (reserve(w, n) < 0)
        return;
    memmove(w->buf + mark + n, w->buf + mark, body);
    memcpy(w->buf + mark, tmp, n);
    w->len += n;
}
