/* Protobuf wire format <-> proto3 JSON tree, by the schema (see proto_json.h). */
#include "proxy/proto_json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config_reader.h"

/* Where the walk is (the path errors name), how deep, how many values it made. */
typedef struct pbctx {
    char path[1024];
    size_t plen;
    int depth;
    size_t values;
    char *err;
    size_t errlen;
    int failed;
} pbctx_t;

static void ctx_init(pbctx_t *c, const char *path, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->err = err;
    c->errlen = errlen;
    if (errlen > 0)
        err[0] = '\0';
    if (path != NULL)
        c->plen = (size_t)snprintf(c->path, sizeof(c->path), "%s", path);
    if (c->plen >= sizeof(c->path))
        c->plen = sizeof(c->path) - 1;
}

/* Appends n bytes to the path, as far as it has room (a path too long for it is cut).
 * Every field decoded pushes its name, so this is plain copying, not printf: formatting
 * the path took a third of the decoding. */
static void append(pbctx_t *c, const char *p, size_t n)
{
    size_t room = sizeof(c->path) - 1 - c->plen;
    if (n > room)
        n = room;
    memcpy(c->path + c->plen, p, n);
    c->plen += n;
    c->path[c->plen] = '\0';
}

static size_t push_name(pbctx_t *c, const char *name)
{
    size_t saved = c->plen;
    if (c->plen > 0)
        append(c, ".", 1);
    append(c, name, strlen(name));
    return saved;
}

static size_t push_index(pbctx_t *c, size_t i)
{
    size_t saved = c->plen;
    char digits[24];
    size_t n = sizeof(digits);
    digits[--n] = ']';
    do {
        digits[--n] = (char)('0' + i % 10);
        i /= 10;
    } while (i > 0);
    digits[--n] = '[';
    append(c, digits + n, sizeof(digits) - n);
    return saved;
}

static void pop(pbctx_t *c, size_t saved)
{
    c->plen = saved;
    c->path[saved] = '\0';
}

static int fail(pbctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(pbctx_t *c, const char *fmt, ...)
{
    if (!c->failed && c->errlen > 0) {
        char why[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        if (c->plen > 0)
            snprintf(c->err, c->errlen, "%s: %s", c->path, why);
        else
            snprintf(c->err, c->errlen, "%s", why);
    }
    c->failed = 1;
    return -1;
}

/* Every value made goes through here: the bound on a tree's size, and allocation failure. */
static json_t *made(pbctx_t *c, json_t *v)
{
    if (v == NULL) {
        fail(c, "out of memory");
        return NULL;
    }
    if (++c->values > PT_DOC_MAX_VALUES) {
        json_decref(v);
        fail(c, "more than %u values", PT_DOC_MAX_VALUES);
        return NULL;
    }
    return v;
}

static const char *type_name(int type)
{
    static const char *const names[] = {
        [PT_PB_DOUBLE] = "double",   [PT_PB_FLOAT] = "float",       [PT_PB_INT64] = "int64",
        [PT_PB_UINT64] = "uint64",   [PT_PB_INT32] = "int32",       [PT_PB_FIXED64] = "fixed64",
        [PT_PB_FIXED32] = "fixed32", [PT_PB_BOOL] = "bool",         [PT_PB_STRING] = "string",
        [PT_PB_MESSAGE] = "message", [PT_PB_BYTES] = "bytes",       [PT_PB_UINT32] = "uint32",
        [PT_PB_ENUM] = "enum",       [PT_PB_SFIXED32] = "sfixed32", [PT_PB_SFIXED64] = "sfixed64",
        [PT_PB_SINT32] = "sint32",   [PT_PB_SINT64] = "sint64",
    };
    return type > 0 && type <= PT_PB_SINT64 && names[type] ? names[type] : "?";
}

/* The wire type a value of this type is written with (packed repeated fields aside). */
static int wire_type_of(int type)
{
    switch (type) {
    case PT_PB_DOUBLE:
    case PT_PB_FIXED64:
    case PT_PB_SFIXED64:
        return PT_PB_WIRE_I64;
    case PT_PB_FLOAT:
    case PT_PB_FIXED32:
    case PT_PB_SFIXED32:
        return PT_PB_WIRE_I32;
    case PT_PB_STRING:
    case PT_PB_BYTES:
    case PT_PB_MESSAGE:
        return PT_PB_WIRE_LEN;
    }
    return PT_PB_WIRE_VARINT;
}

/* Whether d is a whole number within [-limit, limit] (limit below 2^63). Without libm's
 * floor(): the core links no libm. */
static int whole(double d, double limit)
{
    return d >= -limit && d <= limit && d == (double)(int64_t)d;
}

/* ---- decoding ------------------------------------------------------------------------- */

/* Well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF) without NUL. */
static int utf8_valid(const uint8_t *s, size_t len, const char **why)
{
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        if (b == 0) {
            *why = "holds a NUL byte";
            return 0;
        }
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((b & 0xe0) == 0xc0) {
            n = 1, cp = b & 0x1f, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            n = 2, cp = b & 0x0f, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            n = 3, cp = b & 0x07, min = 0x10000;
        } else {
            goto bad;
        }
        if (len - i - 1 < n)
            goto bad;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                goto bad;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            goto bad;
        i += n + 1;
    }
    return 1;
bad:
    *why = "is not valid UTF-8";
    return 0;
}

static char *base64_encode(const uint8_t *p, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = i + 1 < len ? tbl[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* A double as proto3 JSON writes it: a number, or "NaN", "Infinity", "-Infinity". */
static json_t *double_json(double v)
{
    if (isnan(v))
        return json_string("NaN");
    if (isinf(v))
        return json_string(v > 0 ? "Infinity" : "-Infinity");
    return json_real(v);
}

static json_t *uint64_json(uint64_t v)
{
    if (v <= (uint64_t)INT64_MAX)
        return json_integer((json_int_t)v);
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    return json_string(buf);
}

/* One scalar of `type` (not a message) read with wire type wt. *dflt tells whether it is
 * the type's default (what proto3 leaves out). NULL after an error. */
static json_t *decode_scalar(pbctx_t *c, const pt_pb_field_t *f, int wt, pt_pb_reader_t *rd,
                             int *dflt)
{
    uint64_t v = 0;
    uint32_t v32 = 0;
    const uint8_t *p = NULL;
    size_t len = 0;
    int rc;
    if (wt != wire_type_of(f->type)) {
        fail(c, "wire type %d does not fit a field of type %s", wt, type_name(f->type));
        return NULL;
    }
    switch (wt) {
    case PT_PB_WIRE_VARINT:
        rc = pt_pb_read_varint(rd, &v);
        break;
    case PT_PB_WIRE_I64:
        rc = pt_pb_read_fixed64(rd, &v);
        break;
    case PT_PB_WIRE_I32:
        rc = pt_pb_read_fixed32(rd, &v32);
        v = v32;
        break;
    default:
        rc = pt_pb_read_len(rd, &p, &len);
        break;
    }
    if (rc < 0) {
        fail(c, "%s", pt_pb_strerror(rc));
        return NULL;
    }
    *dflt = v == 0 && len == 0;
    switch (f->type) {
    case PT_PB_INT32:
        return made(c, json_integer((int32_t)v));
    case PT_PB_INT64:
    case PT_PB_SFIXED64:
        return made(c, json_integer((int64_t)v));
    case PT_PB_UINT32:
        return made(c, json_integer((uint32_t)v));
    case PT_PB_UINT64:
    case PT_PB_FIXED64:
        return made(c, uint64_json(v));
    case PT_PB_FIXED32:
        return made(c, json_integer(v32));
    case PT_PB_SFIXED32:
        return made(c, json_integer((int32_t)v32));
    case PT_PB_SINT32:
        return made(c, json_integer((int32_t)pt_pb_zigzag_decode(v)));
    case PT_PB_SINT64:
        return made(c, json_integer(pt_pb_zigzag_decode(v)));
    case PT_PB_BOOL:
        return made(c, json_boolean(v != 0));
    case PT_PB_DOUBLE: {
        double d;
        memcpy(&d, &v, sizeof(d));
        return made(c, double_json(d));
    }
    case PT_PB_FLOAT: {
        float fl;
        memcpy(&fl, &v32, sizeof(fl));
        return made(c, double_json(fl));
    }
    case PT_PB_ENUM: {
        const char *name = pt_pb_enum_name(f->enumeration, (int32_t)v);
        if (name == NULL) {
            fail(c, "%" PRId32 " is not a value of %s", (int32_t)v, f->enumeration->full_name);
            return NULL;
        }
        return made(c, json_string(name));
    }
    case PT_PB_STRING: {
        const char *why;
        if (!utf8_valid(p, len, &why)) {
            fail(c, "string %s", why);
            return NULL;
        }
        return made(c, json_stringn((const char *)p, len));
    }
    case PT_PB_BYTES: {
        char *s = base64_encode(p, len);
        json_t *j = s != NULL ? json_string(s) : NULL;
        free(s);
        return made(c, j);
    }
    }
    fail(c, "field of unknown type %d", f->type);
    return NULL;
}

static int decode_fields(pbctx_t *c, const pt_pb_message_t *m, const uint8_t *p, size_t len,
                         json_t *obj);

/* A message that has a JSON form of its own (a well-known type), from its bytes. */
static json_t *decode_special(pbctx_t *c, const pt_pb_message_t *m, const uint8_t *p, size_t len);

/* The JSON value of a message field's bytes: an object of its fields, or a well-known type's
 * form. */
static json_t *decode_message(pbctx_t *c, const pt_pb_message_t *m, const uint8_t *p, size_t len)
{
    if (m->kind != PT_PB_KIND_MESSAGE && m->kind != PT_PB_KIND_MAP_ENTRY)
        return decode_special(c, m, p, len);
    json_t *obj = made(c, json_object());
    if (obj == NULL)
        return NULL;
    if (decode_fields(c, m, p, len, obj) < 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* The JSON form of a field that is absent from a map entry: its default. */
static json_t *default_json(pbctx_t *c, const pt_pb_field_t *f)
{
    switch (f->type) {
    case PT_PB_MESSAGE:
        return decode_message(c, f->message, NULL, 0);
    case PT_PB_STRING:
    case PT_PB_BYTES:
        return made(c, json_string(""));
    case PT_PB_BOOL:
        return made(c, json_false());
    case PT_PB_ENUM:
        return made(
            c, json_string(f->enumeration->nvalues > 0 ? f->enumeration->values[0].name : "0"));
    case PT_PB_DOUBLE:
    case PT_PB_FLOAT:
        return made(c, json_real(0));
    }
    return made(c, json_integer(0));
}

/* A map entry's bytes into obj[key] = value (the key as proto3 JSON spells it: a string). */
static int decode_map_entry(pbctx_t *c, const pt_pb_message_t *entry, const uint8_t *p, size_t len,
                            json_t *map)
{
    json_t *e = decode_message(c, entry, p, len);
    if (e == NULL)
        return -1;
    json_t *k = json_object_get(e, "key");
    char buf[32];
    const char *key;
    if (k == NULL)
        key = entry->fields[0].type == PT_PB_BOOL     ? "false"
              : entry->fields[0].type == PT_PB_STRING ? ""
                                                      : "0";
    else if (json_is_string(k))
        key = json_string_value(k);
    else if (json_is_boolean(k))
        key = json_is_true(k) ? "true" : "false";
    else
        key = (snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(k)), buf);
    json_t *v = json_object_get(e, "value");
    int rc;
    if (v != NULL) {
        rc = json_object_set(map, key, v);
    } else {
        size_t saved = push_name(c, key);
        v = default_json(c, &entry->fields[1]);
        pop(c, saved);
        rc = v != NULL ? json_object_set_new(map, key, v) : -1;
    }
    json_decref(e);
    if (rc < 0)
        return c->failed ? -1 : fail(c, "out of memory");
    return 0;
}

/* Appends one element of a repeated field to arr (its path: the field's, with the index). */
static int decode_element(pbctx_t *c, const pt_pb_field_t *f, int wt, pt_pb_reader_t *rd,
                          json_t *arr)
{
    size_t saved = push_index(c, json_array_size(arr));
    json_t *v;
    int dflt;
    if (f->type == PT_PB_MESSAGE) {
        const uint8_t *p;
        size_t len;
        int rc;
        if (wt != PT_PB_WIRE_LEN) {
            pop(c, saved);
            return fail(c, "wire type %d does not fit a field of type message", wt);
        }
        if ((rc = pt_pb_read_len(rd, &p, &len)) < 0) {
            pop(c, saved);
            return fail(c, "%s", pt_pb_strerror(rc));
        }
        v = decode_message(c, f->message, p, len);
    } else {
        v = decode_scalar(c, f, wt, rd, &dflt);
    }
    pop(c, saved);
    if (v == NULL)
        return -1;
    if (json_array_append_new(arr, v) < 0)
        return fail(c, "out of memory");
    return 0;
}

/* The array or object obj[name] holds for a repeated or map field, made on first use. */
static json_t *container(pbctx_t *c, json_t *obj, const char *name, int array)
{
    json_t *v = json_object_get(obj, name);
    if (v != NULL && (array ? json_is_array(v) : json_is_object(v)))
        return v;
    v = made(c, array ? json_array() : json_object());
    if (v == NULL || json_object_set_new(obj, name, v) < 0) {
        if (!c->failed)
            fail(c, "out of memory");
        return NULL;
    }
    return v;
}

static int decode_field(pbctx_t *c, const pt_pb_message_t *m, const pt_pb_field_t *f, int wt,
                        pt_pb_reader_t *rd, json_t *obj)
{
    const uint8_t *p;
    size_t len;
    int rc;
    if (f->flags & PT_PB_MAP) {
        if (wt != PT_PB_WIRE_LEN)
            return fail(c, "wire type %d does not fit a map field", wt);
        if ((rc = pt_pb_read_len(rd, &p, &len)) < 0)
            return fail(c, "%s", pt_pb_strerror(rc));
        json_t *map = container(c, obj, f->name, 0);
        return map != NULL ? decode_map_entry(c, f->message, p, len, map) : -1;
    }
    if (f->flags & PT_PB_REPEATED) {
        json_t *arr = container(c, obj, f->name, 1);
        if (arr == NULL)
            return -1;
        int scalar_wt = wire_type_of(f->type);
        if (wt == PT_PB_WIRE_LEN && scalar_wt != PT_PB_WIRE_LEN) {
            /* Packed: the elements one after another in one length-delimited record. */
            if ((rc = pt_pb_read_len(rd, &p, &len)) < 0)
                return fail(c, "%s", pt_pb_strerror(rc));
            pt_pb_reader_t packed;
            pt_pb_reader_init(&packed, p, len);
            while (!pt_pb_reader_done(&packed))
                if (decode_element(c, f, scalar_wt, &packed, arr) < 0)
                    return -1;
            /* An empty packed record adds nothing: proto3 JSON writes no empty list. */
            if (json_array_size(arr) == 0)
                json_object_del(obj, f->name);
            return 0;
        }
        return decode_element(c, f, wt, rd, arr);
    }
    json_t *v;
    int dflt = 0;
    if (f->type == PT_PB_MESSAGE) {
        if (wt != PT_PB_WIRE_LEN)
            return fail(c, "wire type %d does not fit a field of type message", wt);
        if ((rc = pt_pb_read_len(rd, &p, &len)) < 0)
            return fail(c, "%s", pt_pb_strerror(rc));
        json_t *prev = json_object_get(obj, f->name);
        if (f->message->kind == PT_PB_KIND_MESSAGE && json_is_object(prev)) {
            /* A message given twice: the second merges into the first. */
            if (decode_fields(c, f->message, p, len, prev) < 0)
                return -1;
            v = json_incref(prev);
        } else {
            v = decode_message(c, f->message, p, len);
        }
    } else {
        v = decode_scalar(c, f, wt, rd, &dflt);
    }
    if (v == NULL)
        return -1;
    if (f->oneof >= 0) {
        /* Setting one member of a oneof clears the others. */
        for (unsigned i = 0; i < m->nfields; i++)
            if (m->fields[i].oneof == f->oneof && &m->fields[i] != f)
                json_object_del(obj, m->fields[i].name);
    } else if (dflt && !(f->flags & PT_PB_PRESENCE)) {
        /* proto3 has no presence here: a default is no value (and undoes an earlier one). */
        json_decref(v);
        json_object_del(obj, f->name);
        return 0;
    }
    if (json_object_set_new(obj, f->name, v) < 0)
        return fail(c, "out of memory");
    return 0;
}

/* Decodes the fields of m from [p, p + len) into obj, an object (which may already hold
 * fields: a message merged into). */
static int decode_fields(pbctx_t *c, const pt_pb_message_t *m, const uint8_t *p, size_t len,
                         json_t *obj)
{
    if (c->depth >= PT_PB_MAX_DEPTH)
        return fail(c, "messages nested more than %d deep", PT_PB_MAX_DEPTH);
    c->depth++;
    pt_pb_reader_t rd;
    pt_pb_reader_init(&rd, p, len);
    int rc = 0;
    while (!pt_pb_reader_done(&rd)) {
        uint32_t number;
        int wt;
        if ((rc = pt_pb_read_tag(&rd, &number, &wt)) < 0) {
            rc = fail(c, "%s", pt_pb_strerror(rc));
            break;
        }
        if (wt == PT_PB_WIRE_SGROUP || wt == PT_PB_WIRE_EGROUP) {
            rc = fail(c, "field %" PRIu32 " is a group (wire type %d): groups are not supported",
                      number, wt);
            break;
        }
        const pt_pb_field_t *f = pt_pb_field_by_number(m, number);
        if (f == NULL) {
            rc = fail(c, "unknown field number %" PRIu32 " of %s", number, m->full_name);
            break;
        }
        size_t saved = push_name(c, f->name);
        rc = decode_field(c, m, f, wt, &rd, obj);
        pop(c, saved);
        if (rc < 0)
            break;
    }
    c->depth--;
    return rc < 0 ? -1 : 0;
}

/* The integer obj[name] holds (decoded from an int64 or int32 field), 0 when absent. */
static int64_t int_field(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    if (json_is_string(v)) /* only a uint64 beyond int64's range is a string */
        return INT64_MAX;
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

#define DURATION_MAX_SECONDS 315576000000LL   /* 10,000 years, as protobuf bounds it */
#define TIMESTAMP_MIN        (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define TIMESTAMP_MAX        253402300799LL   /* 9999-12-31T23:59:59Z */

/* ".5", ".000001" ...: nanoseconds in 0, 3, 6 or 9 digits, as proto3 JSON writes them. */
static void format_nanos(char *out, size_t len, int32_t nanos)
{
    if (nanos == 0)
        out[0] = '\0';
    else if (nanos % 1000000 == 0)
        snprintf(out, len, ".%03" PRId32, nanos / 1000000);
    else if (nanos % 1000 == 0)
        snprintf(out, len, ".%06" PRId32, nanos / 1000);
    else
        snprintf(out, len, ".%09" PRId32, nanos);
}

static json_t *duration_json(pbctx_t *c, json_t *tmp)
{
    int64_t s = int_field(tmp, "seconds");
    int64_t n = int_field(tmp, "nanos");
    if (s < -DURATION_MAX_SECONDS || s > DURATION_MAX_SECONDS || n <= -1000000000 ||
        n >= 1000000000 || (s > 0 && n < 0) || (s < 0 && n > 0)) {
        fail(c, "Duration out of range (seconds %" PRId64 ", nanos %" PRId64 ")", s, n);
        return NULL;
    }
    char frac[16], buf[48];
    format_nanos(frac, sizeof(frac), (int32_t)(n < 0 ? -n : n));
    snprintf(buf, sizeof(buf), "%s%" PRId64 "%ss", s < 0 || n < 0 ? "-" : "", s < 0 ? -s : s, frac);
    return made(c, json_string(buf));
}

/* Days since 1970-01-01 to a civil date (proleptic Gregorian; H. Hinnant's algorithm). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static json_t *timestamp_json(pbctx_t *c, json_t *tmp)
{
    int64_t s = int_field(tmp, "seconds");
    int64_t n = int_field(tmp, "nanos");
    if (s < TIMESTAMP_MIN || s > TIMESTAMP_MAX || n < 0 || n >= 1000000000) {
        fail(c, "Timestamp out of range (seconds %" PRId64 ", nanos %" PRId64 ")", s, n);
        return NULL;
    }
    int64_t days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
    int64_t rem = s - days * 86400;
    int64_t y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    char frac[16], buf[64];
    format_nanos(frac, sizeof(frac), (int32_t)n);
    snprintf(buf, sizeof(buf), "%04" PRId64 "-%02u-%02uT%02d:%02d:%02d%sZ", y, mo, d,
             (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), frac);
    return made(c, json_string(buf));
}

/* A Value's kind as the JSON value it stands for. A number that is a whole number within
 * 2^53 becomes an integer, which is what a JSON or YAML file's `5` gives. */
static json_t *value_json(pbctx_t *c, json_t *tmp)
{
    const char *key;
    json_t *v;
    json_object_foreach(tmp, key, v)
    {
        if (strcmp(key, "null_value") == 0)
            return made(c, json_null());
        if (strcmp(key, "number_value") == 0) {
            double d = json_is_real(v) ? json_real_value(v) : NAN;
            if (!isfinite(d)) {
                fail(c, "a Value's number is not finite");
                return NULL;
            }
            if (whole(d, 9007199254740992.0))
                return made(c, json_integer((json_int_t)d));
            return json_incref(v);
        }
        return json_incref(v); /* string, bool, struct or list: already in their form */
    }
    return made(c, json_null()); /* no kind set */
}

/* snake_case path of a FieldMask to its lowerCamelCase JSON form, appended to out. */
static int field_mask_json(pbctx_t *c, json_t *tmp, json_t **out)
{
    json_t *paths = json_object_get(tmp, "paths");
    size_t total = 1, i;
    json_t *p;
    json_array_foreach(paths, i, p)
    {
        /* proto3 JSON can only write a path of lower-case words: "a_b" is "aB", so "aB" or
         * "a_1" or a comma (or an empty path) would not read back as itself. */
        const char *s = json_string_value(p);
        if (s[0] == '\0')
            return fail(c, "FieldMask has an empty path");
        for (size_t k = 0; s[k] != '\0'; k++)
            if ((s[k] >= 'A' && s[k] <= 'Z') || s[k] == ',' ||
                (s[k] == '_' && !(s[k + 1] >= 'a' && s[k + 1] <= 'z'))) {
                char q[256];
                return fail(c, "FieldMask path %s has no JSON form", pt_cfg_quote(s, q, sizeof(q)));
            }
        total += json_string_length(p) + 1;
    }
    char *buf = malloc(total), *o = buf;
    if (buf == NULL)
        return fail(c, "out of memory");
    json_array_foreach(paths, i, p)
    {
        if (i > 0)
            *o++ = ',';
        for (const char *s = json_string_value(p); *s; s++) {
            if (*s == '_' && s[1] >= 'a' && s[1] <= 'z')
                *o++ = (char)(*++s - 'a' + 'A');
            else
                *o++ = *s;
        }
    }
    *o = '\0';
    *out = made(c, json_string(buf));
    free(buf);
    return *out != NULL ? 0 : -1;
}

static json_t *decode_any(pbctx_t *c, const uint8_t *p, size_t len)
{
    pt_pb_reader_t rd;
    pt_pb_reader_init(&rd, p, len);
    const uint8_t *url = NULL, *value = NULL;
    size_t url_len = 0, value_len = 0;
    while (!pt_pb_reader_done(&rd)) {
        uint32_t number;
        int wt, rc;
        const uint8_t *vp;
        size_t vl;
        if ((rc = pt_pb_read_tag(&rd, &number, &wt)) < 0) {
            fail(c, "%s", pt_pb_strerror(rc));
            return NULL;
        }
        if (number != 1 && number != 2) {
            fail(c, "unknown field number %" PRIu32 " of google.protobuf.Any", number);
            return NULL;
        }
        size_t saved = push_name(c, number == 1 ? "type_url" : "value");
        if (wt != PT_PB_WIRE_LEN) {
            fail(c, "wire type %d does not fit a field of type %s", wt,
                 number == 1 ? "string" : "bytes");
            return NULL;
        }
        if ((rc = pt_pb_read_len(&rd, &vp, &vl)) < 0) {
            fail(c, "%s", pt_pb_strerror(rc));
            return NULL;
        }
        pop(c, saved);
        if (number == 1)
            url = vp, url_len = vl;
        else
            value = vp, value_len = vl;
    }
    if (url_len == 0) {
        if (value_len > 0) {
            fail(c, "Any has a value but no type_url");
            return NULL;
        }
        return made(c, json_object()); /* an empty Any; its reader reports @type missing */
    }
    const char *why;
    char name[512];
    if (!utf8_valid(url, url_len, &why) || url_len >= sizeof(name)) {
        fail(c, "Any's type_url is not a type URL");
        return NULL;
    }
    memcpy(name, url, url_len);
    name[url_len] = '\0';
    const pt_pb_message_t *m = pt_pb_message_for_type_url(name);
    if (m == NULL) {
        char q[600];
        fail(c, "Any of type %s: petrel does not know this type", pt_cfg_quote(name, q, sizeof(q)));
        return NULL;
    }
    json_t *obj = made(c, json_object());
    if (obj == NULL)
        return NULL;
    json_t *type = made(c, json_string(name));
    if (type == NULL || json_object_set_new(obj, "@type", type) < 0)
        goto fail;
    if (m->kind == PT_PB_KIND_MESSAGE) {
        if (decode_fields(c, m, value, value_len, obj) < 0)
            goto fail;
    } else {
        /* A well-known type in an Any: its JSON form goes under "value". */
        size_t saved = push_name(c, "value");
        json_t *v = decode_special(c, m, value, value_len);
        pop(c, saved);
        if (v == NULL || json_object_set_new(obj, "value", v) < 0)
            goto fail;
    }
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

static json_t *decode_special(pbctx_t *c, const pt_pb_message_t *m, const uint8_t *p, size_t len)
{
    if (m->kind == PT_PB_KIND_ANY) {
        if (c->depth >= PT_PB_MAX_DEPTH) {
            fail(c, "messages nested more than %d deep", PT_PB_MAX_DEPTH);
            return NULL;
        }
        c->depth++;
        json_t *v = decode_any(c, p, len);
        c->depth--;
        return v;
    }
    /* The others decode as plain messages first ({seconds, nanos}, {fields: {...}}), which
     * checks their field numbers and wire types; then take their JSON form. */
    json_t *tmp = made(c, json_object()), *v = NULL;
    if (tmp == NULL)
        return NULL;
    if (decode_fields(c, m, p, len, tmp) < 0)
        goto done;
    switch (m->kind) {
    case PT_PB_KIND_DURATION:
        v = duration_json(c, tmp);
        break;
    case PT_PB_KIND_TIMESTAMP:
        v = timestamp_json(c, tmp);
        break;
    case PT_PB_KIND_STRUCT:
        v = json_object_get(tmp, "fields");
        v = v != NULL ? json_incref(v) : made(c, json_object());
        break;
    case PT_PB_KIND_LIST_VALUE:
        v = json_object_get(tmp, "values");
        v = v != NULL ? json_incref(v) : made(c, json_array());
        break;
    case PT_PB_KIND_VALUE:
        v = value_json(c, tmp);
        break;
    case PT_PB_KIND_WRAPPER:
        v = json_object_get(tmp, "value");
        v = v != NULL ? json_incref(v) : default_json(c, &m->fields[0]);
        break;
    case PT_PB_KIND_EMPTY:
        v = json_incref(tmp);
        break;
    case PT_PB_KIND_FIELD_MASK:
        field_mask_json(c, tmp, &v);
        break;
    default:
        fail(c, "%s has no JSON form", m->full_name);
        break;
    }
done:
    json_decref(tmp);
    return v;
}

json_t *pt_pb_to_json(const pt_pb_message_t *m, const void *buf, size_t len, const char *path,
                      char *err, size_t errlen)
{
    return pt_pb_to_json_nested(m, buf, len, path, 0, err, errlen);
}

json_t *pt_pb_to_json_nested(const pt_pb_message_t *m, const void *buf, size_t len,
                             const char *path, int depth, char *err, size_t errlen)
{
    pbctx_t c;
    ctx_init(&c, path, err, errlen);
    c.depth = depth;
    return decode_message(&c, m, len > 0 ? buf : NULL, len);
}

/* ---- encoding ------------------------------------------------------------------------- */

static void put_scalar_raw(pt_pb_writer_t *w, int type, uint64_t bits)
{
    switch (wire_type_of(type)) {
    case PT_PB_WIRE_I64:
        pt_pb_put_fixed64(w, bits);
        break;
    case PT_PB_WIRE_I32:
        pt_pb_put_fixed32(w, (uint32_t)bits);
        break;
    default:
        pt_pb_put_varint(w, bits);
        break;
    }
}

/* A JSON integer (a number, an integral real, or a decimal string) within [min, max]. */
static int json_to_int(pbctx_t *c, json_t *v, int64_t min, int64_t max, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) && whole(json_real_value(v), 9.2e18)) {
        *out = (int64_t)json_real_value(v);
    } else if (json_is_string(v)) {
        char *end;
        errno = 0;
        long long n = strtoll(json_string_value(v), &end, 10);
        if (errno != 0 || end == json_string_value(v) || *end != '\0')
            return fail(c, "is not an integer");
        *out = n;
    } else {
        return fail(c, "is not an integer");
    }
    if (*out < min || *out > max)
        return fail(c, "%" PRId64 " is out of range", *out);
    return 0;
}

static int json_to_uint(pbctx_t *c, json_t *v, uint64_t max, uint64_t *out)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        unsigned long long n = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || *s == '-')
            return fail(c, "is not an unsigned integer");
        *out = n;
    } else {
        int64_t n;
        if (json_to_int(c, v, 0, INT64_MAX, &n) < 0)
            return -1;
        *out = (uint64_t)n;
    }
    if (*out > max)
        return fail(c, "%" PRIu64 " is out of range", *out);
    return 0;
}

static int json_to_double(pbctx_t *c, json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
    } else if (json_is_string(v) && strcmp(json_string_value(v), "NaN") == 0) {
        *out = NAN;
    } else if (json_is_string(v) && strcmp(json_string_value(v), "Infinity") == 0) {
        *out = INFINITY;
    } else if (json_is_string(v) && strcmp(json_string_value(v), "-Infinity") == 0) {
        *out = -INFINITY;
    } else {
        return fail(c, "is not a number");
    }
    return 0;
}

/* A scalar's wire bits (varint value, or fixed32/64 bits) from its JSON form; *dflt when it
 * is the default. Strings and bytes are not scalars here. */
static int scalar_bits(pbctx_t *c, const pt_pb_field_t *f, json_t *v, uint64_t *bits, int *dflt)
{
    int64_t i;
    uint64_t u;
    double d;
    int rc = 0;
    switch (f->type) {
    case PT_PB_INT32:
    case PT_PB_SFIXED32:
    case PT_PB_SINT32:
        rc = json_to_int(c, v, INT32_MIN, INT32_MAX, &i);
        *bits = f->type == PT_PB_SINT32     ? pt_pb_zigzag_encode(i)
                : f->type == PT_PB_SFIXED32 ? (uint32_t)(int32_t)i
                                            : (uint64_t)i;
        break;
    case PT_PB_INT64:
    case PT_PB_SFIXED64:
    case PT_PB_SINT64:
        rc = json_to_int(c, v, INT64_MIN, INT64_MAX, &i);
        *bits = f->type == PT_PB_SINT64 ? pt_pb_zigzag_encode(i) : (uint64_t)i;
        break;
    case PT_PB_UINT32:
    case PT_PB_FIXED32:
        rc = json_to_uint(c, v, UINT32_MAX, &u);
        *bits = u;
        break;
    case PT_PB_UINT64:
    case PT_PB_FIXED64:
        rc = json_to_uint(c, v, UINT64_MAX, &u);
        *bits = u;
        break;
    case PT_PB_BOOL:
        if (!json_is_boolean(v))
            return fail(c, "is not a boolean");
        *bits = json_is_true(v);
        break;
    case PT_PB_DOUBLE:
        rc = json_to_double(c, v, &d);
        memcpy(bits, &d, sizeof(d));
        break;
    case PT_PB_FLOAT: {
        rc = json_to_double(c, v, &d);
        float fl = (float)d;
        uint32_t b32;
        memcpy(&b32, &fl, sizeof(b32));
        *bits = b32;
        break;
    }
    case PT_PB_ENUM: {
        int32_t n;
        if (json_is_string(v)) {
            char q[256];
            if (pt_pb_enum_number(f->enumeration, json_string_value(v), &n) < 0)
                return fail(c, "%s is not a value of %s",
                            pt_cfg_quote(json_string_value(v), q, sizeof(q)),
                            f->enumeration->full_name);
        } else {
            int64_t n64;
            if (json_to_int(c, v, INT32_MIN, INT32_MAX, &n64) < 0)
                return -1;
            n = (int32_t)n64;
        }
        *bits = (uint64_t)(int64_t)n;
        break;
    }
    default:
        return fail(c, "is not a scalar");
    }
    *dflt = *bits == 0;
    return rc;
}

static int encode_fields(pbctx_t *c, const pt_pb_message_t *m, json_t *obj, pt_pb_writer_t *w,
                         int any);
static int encode_special(pbctx_t *c, const pt_pb_message_t *m, json_t *v, pt_pb_writer_t *w);

/* A message's body: its fields, or a well-known type's from its own JSON form. */
static int encode_body(pbctx_t *c, const pt_pb_message_t *m, json_t *v, pt_pb_writer_t *w)
{
    if (m->kind == PT_PB_KIND_MESSAGE || m->kind == PT_PB_KIND_MAP_ENTRY)
        return encode_fields(c, m, v, w, 0);
    return encode_special(c, m, v, w);
}

/* One value of field f (a repeated field's element, or a singular field), with its tag.
 * `always`: written even when it is the default (elements, map values, oneof members). */
static int encode_value(pbctx_t *c, const pt_pb_field_t *f, json_t *v, pt_pb_writer_t *w,
                        int always)
{
    if (f->type == PT_PB_MESSAGE) {
        if (c->depth >= PT_PB_MAX_DEPTH)
            return fail(c, "messages nested more than %d deep", PT_PB_MAX_DEPTH);
        c->depth++;
        size_t mark = pt_pb_begin_len(w, f->number);
        int rc = encode_body(c, f->message, v, w);
        pt_pb_end_len(w, mark);
        c->depth--;
        return rc;
    }
    if (f->type == PT_PB_STRING || f->type == PT_PB_BYTES) {
        if (!json_is_string(v))
            return fail(c, "is not a string");
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (len == 0 && !always)
            return 0;
        if (f->type == PT_PB_STRING) {
            pt_pb_put_bytes(w, f->number, s, len);
            return 0;
        }
        unsigned char *buf = malloc(len / 4 * 3 + 3);
        if (buf == NULL)
            return fail(c, "out of memory");
        long n = pt_base64_decode(s, buf);
        if (n >= 0)
            pt_pb_put_bytes(w, f->number, buf, (size_t)n);
        free(buf);
        return n >= 0 ? 0 : fail(c, "is not base64");
    }
    uint64_t bits;
    int dflt;
    if (scalar_bits(c, f, v, &bits, &dflt) < 0)
        return -1;
    if (dflt && !always)
        return 0;
    pt_pb_put_tag(w, f->number, wire_type_of(f->type));
    put_scalar_raw(w, f->type, bits);
    return 0;
}

/* A map's key (always a string in JSON) as the entry's key field. */
static int encode_map_key(pbctx_t *c, const pt_pb_field_t *kf, const char *key, pt_pb_writer_t *w)
{
    json_t *k;
    if (kf->type == PT_PB_STRING)
        k = json_string(key);
    else if (kf->type == PT_PB_BOOL)
        k = strcmp(key, "true") == 0    ? json_true()
            : strcmp(key, "false") == 0 ? json_false()
                                        : json_null();
    else
        k = json_string(key); /* integers from their decimal text */
    if (k == NULL)
        return fail(c, "out of memory");
    int rc = encode_value(c, kf, k, w, 1);
    json_decref(k);
    return rc;
}

static int encode_field(pbctx_t *c, const pt_pb_field_t *f, json_t *v, pt_pb_writer_t *w)
{
    if (f->flags & PT_PB_MAP) {
        if (!json_is_object(v))
            return fail(c, "is not an object");
        const char *key;
        json_t *ev;
        json_object_foreach(v, key, ev)
        {
            size_t saved = push_name(c, key);
            size_t mark = pt_pb_begin_len(w, f->number);
            int rc = encode_map_key(c, &f->message->fields[0], key, w);
            if (rc == 0)
                rc = encode_value(c, &f->message->fields[1], ev, w, 1);
            pt_pb_end_len(w, mark);
            pop(c, saved);
            if (rc < 0)
                return -1;
        }
        return 0;
    }
    if (f->flags & PT_PB_REPEATED) {
        if (!json_is_array(v))
            return fail(c, "is not a list");
        size_t i;
        json_t *ev;
        int packed = wire_type_of(f->type) != PT_PB_WIRE_LEN;
        size_t mark = 0;
        if (packed && json_array_size(v) > 0)
            mark = pt_pb_begin_len(w, f->number);
        json_array_foreach(v, i, ev)
        {
            size_t saved = push_index(c, i);
            int rc;
            if (packed) {
                uint64_t bits;
                int dflt;
                rc = scalar_bits(c, f, ev, &bits, &dflt);
                put_scalar_raw(w, f->type, bits);
            } else {
                rc = encode_value(c, f, ev, w, 1);
            }
            pop(c, saved);
            if (rc < 0)
                return -1;
        }
        if (packed && json_array_size(v) > 0)
            pt_pb_end_len(w, mark);
        return 0;
    }
    return encode_value(c, f, v, w, f->oneof >= 0 || (f->flags & PT_PB_PRESENCE));
}

/* The fields of obj (an object) as message m, in field-number order. With `any`, obj is an
 * Any's object and its "@type" is not a field. */
static int encode_fields(pbctx_t *c, const pt_pb_message_t *m, json_t *obj, pt_pb_writer_t *w,
                         int any)
{
    if (!json_is_object(obj))
        return fail(c, "is not an object");
    if (m->nfields == 0 && json_object_size(obj) == (size_t)(any && json_object_get(obj, "@type")))
        return 0;
    /* Each key to its field (by either spelling), then the fields in number order. */
    json_t **vals = calloc(m->nfields ? m->nfields : 1, sizeof(*vals));
    const char **keys = calloc(m->nfields ? m->nfields : 1, sizeof(*keys));
    int rc = 0;
    if (vals == NULL || keys == NULL) {
        rc = fail(c, "out of memory");
        goto done;
    }
    const char *key;
    json_t *kv;
    json_object_foreach(obj, key, kv)
    {
        if (any && strcmp(key, "@type") == 0)
            continue;
        const pt_pb_field_t *f = pt_pb_field_by_name(m, key);
        size_t saved = push_name(c, key);
        if (f == NULL)
            rc = fail(c, "unknown field of %s", m->full_name);
        else if (vals[f - m->fields] != NULL)
            rc = fail(c, "given twice (as %s and %s)", keys[f - m->fields], key);
        pop(c, saved);
        if (rc < 0)
            goto done;
        vals[f - m->fields] = kv;
        keys[f - m->fields] = key;
    }
    int seen_oneof[64] = {0};
    for (unsigned i = 0; i < m->nfields && rc == 0; i++) {
        const pt_pb_field_t *f = &m->fields[i];
        if (vals[i] == NULL || json_is_null(vals[i]))
            continue;
        if (f->oneof >= 0 && f->oneof < 64 && seen_oneof[f->oneof]++) {
            rc = fail(c, "more than one member of oneof %s", m->oneofs[f->oneof]);
            break;
        }
        size_t saved = push_name(c, keys[i]);
        rc = encode_field(c, f, vals[i], w);
        pop(c, saved);
    }
done:
    free(vals);
    free(keys);
    return rc < 0 ? -1 : 0;
}

/* "1.5s", "-0.000000001s", "300s" to seconds and nanos (exact, unlike the config reader's
 * milliseconds). */
static int parse_duration(const char *s, int64_t *secs, int32_t *nanos)
{
    int neg = *s == '-';
    if (neg)
        s++;
    if (*s < '0' || *s > '9')
        return -1;
    int64_t sec = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (sec > DURATION_MAX_SECONDS)
            return -1;
        sec = sec * 10 + (*s - '0');
    }
    int32_t n = 0;
    if (*s == '.') {
        int digits = 0;
        for (s++; *s >= '0' && *s <= '9'; s++, digits++)
            if (digits < 9)
                n = n * 10 + (*s - '0');
            else
                return -1;
        if (digits == 0)
            return -1;
        for (; digits < 9; digits++)
            n *= 10;
    }
    if (strcmp(s, "s") != 0 || sec > DURATION_MAX_SECONDS)
        return -1;
    *secs = neg ? -sec : sec;
    *nanos = neg ? -n : n;
    return 0;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* RFC 3339 as proto3 JSON writes a Timestamp: 1972-01-01T10:00:20.021Z (or an offset). */
static int parse_timestamp(const char *s, int64_t *secs, int32_t *nanos)
{
    int y, mo, d, h, mi, se, used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &used) != 6 ||
        used != 19 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59)
        return -1;
    s += used;
    int32_t n = 0;
    if (*s == '.') {
        int digits = 0;
        for (s++; *s >= '0' && *s <= '9'; s++, digits++)
            if (digits < 9)
                n = n * 10 + (*s - '0');
            else
                return -1;
        if (digits == 0)
            return -1;
        for (; digits < 9; digits++)
            n *= 10;
    }
    int64_t off = 0;
    if (*s == '+' || *s == '-') {
        int oh, om;
        used = 0;
        if (sscanf(s + 1, "%2d:%2d%n", &oh, &om, &used) != 2 || used != 5)
            return -1;
        off = (*s == '-' ? -1 : 1) * (int64_t)(oh * 3600 + om * 60);
        s += 6;
    } else if (*s++ != 'Z') {
        return -1;
    }
    if (*s != '\0')
        return -1;
    *secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se - off;
    *nanos = n;
    return *secs < TIMESTAMP_MIN || *secs > TIMESTAMP_MAX ? -1 : 0;
}

static int encode_value_kind(pbctx_t *c, json_t *v, pt_pb_writer_t *w);

static int encode_struct(pbctx_t *c, json_t *v, pt_pb_writer_t *w)
{
    if (!json_is_object(v))
        return fail(c, "is not an object");
    const char *key;
    json_t *ev;
    json_object_foreach(v, key, ev)
    {
        size_t saved = push_name(c, key);
        size_t mark = pt_pb_begin_len(w, 1);
        pt_pb_put_bytes(w, 1, key, strlen(key));
        size_t vmark = pt_pb_begin_len(w, 2);
        int rc = encode_value_kind(c, ev, w);
        pt_pb_end_len(w, vmark);
        pt_pb_end_len(w, mark);
        pop(c, saved);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A google.protobuf.Value's body for any JSON value. */
static int encode_value_kind(pbctx_t *c, json_t *v, pt_pb_writer_t *w)
{
    if (c->depth >= PT_PB_MAX_DEPTH)
        return fail(c, "messages nested more than %d deep", PT_PB_MAX_DEPTH);
    int rc = 0;
    c->depth++;
    if (json_is_null(v)) {
        pt_pb_put_tag(w, 1, PT_PB_WIRE_VARINT);
        pt_pb_put_varint(w, 0);
    } else if (json_is_number(v)) {
        double d = json_number_value(v);
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        pt_pb_put_tag(w, 2, PT_PB_WIRE_I64);
        pt_pb_put_fixed64(w, bits);
    } else if (json_is_string(v)) {
        pt_pb_put_bytes(w, 3, json_string_value(v), json_string_length(v));
    } else if (json_is_boolean(v)) {
        pt_pb_put_tag(w, 4, PT_PB_WIRE_VARINT);
        pt_pb_put_varint(w, json_is_true(v));
    } else if (json_is_object(v)) {
        size_t mark = pt_pb_begin_len(w, 5);
        rc = encode_struct(c, v, w);
        pt_pb_end_len(w, mark);
    } else {
        size_t mark = pt_pb_begin_len(w, 6);
        size_t i;
        json_t *ev;
        json_array_foreach(v, i, ev)
        {
            size_t saved = push_index(c, i);
            size_t emark = pt_pb_begin_len(w, 1);
            rc = encode_value_kind(c, ev, w);
            pt_pb_end_len(w, emark);
            pop(c, saved);
            if (rc < 0)
                break;
        }
        pt_pb_end_len(w, mark);
    }
    c->depth--;
    return rc;
}

static int encode_special(pbctx_t *c, const pt_pb_message_t *m, json_t *v, pt_pb_writer_t *w)
{
    int64_t secs;
    int32_t nanos;
    switch (m->kind) {
    case PT_PB_KIND_ANY: {
        json_t *type = json_is_object(v) ? json_object_get(v, "@type") : NULL;
        if (!json_is_object(v))
            return fail(c, "is not an object");
        if (type == NULL && json_object_size(v) == 0)
            return 0;
        if (!json_is_string(type))
            return fail(c, "an Any needs a string @type");
        const pt_pb_message_t *t = pt_pb_message_for_type_url(json_string_value(type));
        if (t == NULL) {
            char q[600];
            return fail(c, "Any of type %s: petrel does not know this type",
                        pt_cfg_quote(json_string_value(type), q, sizeof(q)));
        }
        pt_pb_put_bytes(w, 1, json_string_value(type), json_string_length(type));
        size_t mark = pt_pb_begin_len(w, 2);
        int rc;
        if (t->kind == PT_PB_KIND_MESSAGE) {
            rc = encode_fields(c, t, v, w, 1);
        } else {
            size_t saved = push_name(c, "value");
            json_t *inner = json_object_get(v, "value");
            rc = inner != NULL ? encode_special(c, t, inner, w) : fail(c, "is required");
            pop(c, saved);
        }
        pt_pb_end_len(w, mark);
        return rc;
    }
    case PT_PB_KIND_DURATION:
    case PT_PB_KIND_TIMESTAMP:
        if (m->kind == PT_PB_KIND_DURATION && json_is_object(v))
            return encode_fields(c, m, v, w, 0); /* {seconds, nanos}, as YAML may say it */
        if (!json_is_string(v) || (m->kind == PT_PB_KIND_DURATION
                                       ? parse_duration(json_string_value(v), &secs, &nanos)
                                       : parse_timestamp(json_string_value(v), &secs, &nanos)) < 0)
            return fail(c, "is not a %s",
                        m->kind == PT_PB_KIND_DURATION ? "duration" : "timestamp");
        if (secs != 0) {
            pt_pb_put_tag(w, 1, PT_PB_WIRE_VARINT);
            pt_pb_put_varint(w, (uint64_t)secs);
        }
        if (nanos != 0) {
            pt_pb_put_tag(w, 2, PT_PB_WIRE_VARINT);
            pt_pb_put_varint(w, (uint64_t)(int64_t)nanos);
        }
        return 0;
    case PT_PB_KIND_STRUCT:
        return encode_struct(c, v, w);
    case PT_PB_KIND_VALUE:
        return encode_value_kind(c, v, w);
    case PT_PB_KIND_LIST_VALUE: {
        if (!json_is_array(v))
            return fail(c, "is not a list");
        size_t i;
        json_t *ev;
        json_array_foreach(v, i, ev)
        {
            size_t saved = push_index(c, i);
            size_t mark = pt_pb_begin_len(w, 1);
            int rc = encode_value_kind(c, ev, w);
            pt_pb_end_len(w, mark);
            pop(c, saved);
            if (rc < 0)
                return -1;
        }
        return 0;
    }
    case PT_PB_KIND_WRAPPER:
        return encode_value(c, &m->fields[0], v, w, 0);
    case PT_PB_KIND_EMPTY:
        if (!json_is_object(v) || json_object_size(v) != 0)
            return fail(c, "is not an empty object");
        return 0;
    case PT_PB_KIND_FIELD_MASK: {
        if (!json_is_string(v))
            return fail(c, "is not a string");
        const char *s = json_string_value(v);
        while (*s != '\0') {
            const char *e = strchr(s, ',');
            size_t n = e != NULL ? (size_t)(e - s) : strlen(s);
            char path[256];
            size_t o = 0;
            for (size_t i = 0; i < n && o + 2 < sizeof(path); i++) {
                if (s[i] >= 'A' && s[i] <= 'Z') {
                    path[o++] = '_';
                    path[o++] = (char)(s[i] - 'A' + 'a');
                } else {
                    path[o++] = s[i];
                }
            }
            pt_pb_put_bytes(w, 1, path, o);
            s += n + (e != NULL);
        }
        return 0;
    }
    }
    return fail(c, "%s has no JSON form", m->full_name);
}

int pt_pb_from_json(const pt_pb_message_t *m, json_t *tree, pt_pb_writer_t *w, char *err,
                    size_t errlen)
{
    pbctx_t c;
    ctx_init(&c, NULL, err, errlen);
    if (encode_body(&c, m, tree, w) < 0)
        return -1;
    if (w->failed) {
        fail(&c, "out of memory");
        return -1;
    }
    return 0;
}
