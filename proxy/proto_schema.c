/* The well-known types and the lookups over the schema (see proto_schema.h). The
 * google.protobuf messages are few, fixed for a decade, and special in proto3 JSON, so they
 * are written here rather than generated; their field numbers are checked against
 * protobuf's own definitions like every other message (tests/proto_schema). */
#include "proxy/proto_schema.h"

#include <string.h>

#define WRAPPER(var, fname, ftype)                                                                 \
    static const pt_pb_field_t var##_fields[] = {                                                  \
        {.name = "value", .number = 1, .type = ftype, .oneof = -1},                                \
    };                                                                                             \
    const pt_pb_message_t var = {                                                                  \
        .full_name = fname,                                                                        \
        .fields = var##_fields,                                                                    \
        .nfields = 1,                                                                              \
        .kind = PT_PB_KIND_WRAPPER,                                                                \
    }

WRAPPER(pt_pb_double_value, "google.protobuf.DoubleValue", PT_PB_DOUBLE);
WRAPPER(pt_pb_float_value, "google.protobuf.FloatValue", PT_PB_FLOAT);
WRAPPER(pt_pb_int64_value, "google.protobuf.Int64Value", PT_PB_INT64);
WRAPPER(pt_pb_uint64_value, "google.protobuf.UInt64Value", PT_PB_UINT64);
WRAPPER(pt_pb_int32_value, "google.protobuf.Int32Value", PT_PB_INT32);
WRAPPER(pt_pb_uint32_value, "google.protobuf.UInt32Value", PT_PB_UINT32);
WRAPPER(pt_pb_bool_value, "google.protobuf.BoolValue", PT_PB_BOOL);
WRAPPER(pt_pb_string_value, "google.protobuf.StringValue", PT_PB_STRING);
WRAPPER(pt_pb_bytes_value, "google.protobuf.BytesValue", PT_PB_BYTES);

static const pt_pb_field_t any_fields[] = {
    {.name = "type_url", .number = 1, .type = PT_PB_STRING, .oneof = -1},
    {.name = "value", .number = 2, .type = PT_PB_BYTES, .oneof = -1},
};
const pt_pb_message_t pt_pb_any = {
    .full_name = "google.protobuf.Any",
    .fields = any_fields,
    .nfields = 2,
    .kind = PT_PB_KIND_ANY,
};

static const pt_pb_field_t duration_fields[] = {
    {.name = "seconds", .number = 1, .type = PT_PB_INT64, .oneof = -1},
    {.name = "nanos", .number = 2, .type = PT_PB_INT32, .oneof = -1},
};
const pt_pb_message_t pt_pb_duration = {
    .full_name = "google.protobuf.Duration",
    .fields = duration_fields,
    .nfields = 2,
    .kind = PT_PB_KIND_DURATION,
};
const pt_pb_message_t pt_pb_timestamp = {
    .full_name = "google.protobuf.Timestamp",
    .fields = duration_fields, /* the same two fields */
    .nfields = 2,
    .kind = PT_PB_KIND_TIMESTAMP,
};

static const pt_pb_enum_value_t null_values[] = {{.name = "NULL_VALUE", .number = 0}};
const pt_pb_enum_t pt_pb_null_value_enum = {
    .full_name = "google.protobuf.NullValue",
    .values = null_values,
    .nvalues = 1,
};

static const pt_pb_message_t struct_fields_entry;
static const pt_pb_field_t struct_fields[] = {
    {.name = "fields",
     .number = 1,
     .type = PT_PB_MESSAGE,
     .flags = PT_PB_MAP,
     .oneof = -1,
     .message = &struct_fields_entry},
};
const pt_pb_message_t pt_pb_struct = {
    .full_name = "google.protobuf.Struct",
    .fields = struct_fields,
    .nfields = 1,
    .kind = PT_PB_KIND_STRUCT,
};
static const pt_pb_field_t struct_fields_entry_fields[] = {
    {.name = "key", .number = 1, .type = PT_PB_STRING, .oneof = -1},
    {.name = "value", .number = 2, .type = PT_PB_MESSAGE, .oneof = -1, .message = &pt_pb_value},
};
static const pt_pb_message_t struct_fields_entry = {
    .full_name = "google.protobuf.Struct.FieldsEntry",
    .fields = struct_fields_entry_fields,
    .nfields = 2,
    .kind = PT_PB_KIND_MAP_ENTRY,
};

static const char *const value_oneofs[] = {"kind"};
static const pt_pb_field_t value_fields[] = {
    {.name = "null_value",
     .number = 1,
     .type = PT_PB_ENUM,
     .oneof = 0,
     .enumeration = &pt_pb_null_value_enum},
    {.name = "number_value", .number = 2, .type = PT_PB_DOUBLE, .oneof = 0},
    {.name = "string_value", .number = 3, .type = PT_PB_STRING, .oneof = 0},
    {.name = "bool_value", .number = 4, .type = PT_PB_BOOL, .oneof = 0},
    {.name = "struct_value",
     .number = 5,
     .type = PT_PB_MESSAGE,
     .oneof = 0,
     .message = &pt_pb_struct},
    {.name = "list_value",
     .number = 6,
     .type = PT_PB_MESSAGE,
     .oneof = 0,
     .message = &pt_pb_list_value},
};
const pt_pb_message_t pt_pb_value = {
    .full_name = "google.protobuf.Value",
    .fields = value_fields,
    .nfields = 6,
    .oneofs = value_oneofs,
    .noneofs = 1,
    .kind = PT_PB_KIND_VALUE,
};

static const pt_pb_field_t list_value_fields[] = {
    {.name = "values",
     .number = 1,
     .type = PT_PB_MESSAGE,
     .flags = PT_PB_REPEATED,
     .oneof = -1,
     .message = &pt_pb_value},
};
const pt_pb_message_t pt_pb_list_value = {
    .full_name = "google.protobuf.ListValue",
    .fields = list_value_fields,
    .nfields = 1,
    .kind = PT_PB_KIND_LIST_VALUE,
};

const pt_pb_message_t pt_pb_empty = {
    .full_name = "google.protobuf.Empty",
    .kind = PT_PB_KIND_EMPTY,
};

static const pt_pb_field_t field_mask_fields[] = {
    {.name = "paths", .number = 1, .type = PT_PB_STRING, .flags = PT_PB_REPEATED, .oneof = -1},
};
const pt_pb_message_t pt_pb_field_mask = {
    .full_name = "google.protobuf.FieldMask",
    .fields = field_mask_fields,
    .nfields = 1,
    .kind = PT_PB_KIND_FIELD_MASK,
};

/* Sorted by full name, like the generated list. */
static const pt_pb_message_t *const wkt_messages[] = {
    &pt_pb_any,         &pt_pb_bool_value,  &pt_pb_bytes_value,  &pt_pb_double_value,
    &pt_pb_duration,    &pt_pb_empty,       &pt_pb_field_mask,   &pt_pb_float_value,
    &pt_pb_int32_value, &pt_pb_int64_value, &pt_pb_list_value,   &pt_pb_string_value,
    &pt_pb_struct,      &pt_pb_timestamp,   &pt_pb_uint32_value, &pt_pb_uint64_value,
    &pt_pb_value,
};
#define NWKT (sizeof(wkt_messages) / sizeof(wkt_messages[0]))

static const pt_pb_message_t *find_sorted(const pt_pb_message_t *const *list, size_t n,
                                          const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(list[mid]->full_name, name);
        if (c == 0)
            return list[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const pt_pb_message_t *pt_pb_message_find(const char *full_name)
{
    const pt_pb_message_t *m =
        find_sorted(pt_pb_generated_messages, pt_pb_generated_nmessages, full_name);
    return m != NULL ? m : find_sorted(wkt_messages, NWKT, full_name);
}

const pt_pb_message_t *pt_pb_message_for_type_url(const char *type_url)
{
    const char *slash = strrchr(type_url, '/');
    const pt_pb_message_t *m = pt_pb_message_find(slash != NULL ? slash + 1 : type_url);
    /* A map entry is not a message a type URL can name. */
    return m != NULL && m->kind != PT_PB_KIND_MAP_ENTRY ? m : NULL;
}

size_t pt_pb_message_count(void)
{
    return pt_pb_generated_nmessages + NWKT;
}

const pt_pb_message_t *pt_pb_message_at(size_t i)
{
    if (i < pt_pb_generated_nmessages)
        return pt_pb_generated_messages[i];
    i -= pt_pb_generated_nmessages;
    return i < NWKT ? wkt_messages[i] : NULL;
}

const pt_pb_field_t *pt_pb_field_by_number(const pt_pb_message_t *m, uint32_t number)
{
    size_t lo = 0, hi = m->nfields;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->fields[mid].number == number)
            return &m->fields[mid];
        if (m->fields[mid].number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Whether name is snake's lowerCamelCase form (protoc's json_name: each '_' dropped and the
 * letter after it upper-cased). */
static int camel_equals(const char *snake, const char *name)
{
    for (; *snake != '\0'; snake++, name++) {
        if (*snake == '_' && snake[1] >= 'a' && snake[1] <= 'z') {
            snake++;
            if (*name != *snake - 'a' + 'A')
                return 0;
        } else if (*snake == '_') {
            name--; /* dropped */
        } else if (*name != *snake) {
            return 0;
        }
    }
    return *name == '\0';
}

const pt_pb_field_t *pt_pb_field_by_name(const pt_pb_message_t *m, const char *name)
{
    for (unsigned i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].name, name) == 0)
            return &m->fields[i];
    for (unsigned i = 0; i < m->nfields; i++)
        if (camel_equals(m->fields[i].name, name))
            return &m->fields[i];
    return NULL;
}

const char *pt_pb_enum_name(const pt_pb_enum_t *e, int32_t number)
{
    for (unsigned i = 0; i < e->nvalues; i++)
        if (e->values[i].number == number)
            return e->values[i].name;
    return NULL;
}

int pt_pb_enum_number(const pt_pb_enum_t *e, const char *name, int32_t *number)
{
    for (unsigned i = 0; i < e->nvalues; i++)
        if (strcmp(e->values[i].name, name) == 0) {
            *number = e->values[i].number;
            return 0;
        }
    return -1;
}
