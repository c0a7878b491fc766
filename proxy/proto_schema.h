/* The protobuf schema of the Envoy v3 messages petrel reads: for each message its full name
 * and fields (snake_case name, number, type, repeated/map/presence, oneof), for each enum its
 * values. One schema, two encodings: proxy/proto_json.h decodes the protobuf wire format by
 * these tables into the same JSON tree a JSON/YAML config gives, so every message is parsed
 * and validated by one parser (the pt_cfg_* readers of its module), whichever way it came.
 *
 * The tables of Envoy's messages are generated from Envoy's .proto files by
 * scripts/gen_proto_schema.py (proxy/proto_schema_tables.c, committed); the well-known types
 * (google.protobuf.*) are written by hand in proxy/proto_schema.c, because proto3 JSON gives
 * them forms of their own (a Duration is "1.5s", a UInt32Value a plain number). The test
 * tests/proto_schema checks every message and field here against Envoy's real files. */
#ifndef PT_PROTO_SCHEMA_H
#define PT_PROTO_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

/* Field types, numbered as in descriptor.proto (FieldDescriptorProto.Type). */
typedef enum pt_pb_type {
    PT_PB_DOUBLE = 1,
    PT_PB_FLOAT = 2,
    PT_PB_INT64 = 3,
    PT_PB_UINT64 = 4,
    PT_PB_INT32 = 5,
    PT_PB_FIXED64 = 6,
    PT_PB_FIXED32 = 7,
    PT_PB_BOOL = 8,
    PT_PB_STRING = 9,
    /* 10 is TYPE_GROUP: petrel rejects groups (proto3 has none). */
    PT_PB_MESSAGE = 11,
    PT_PB_BYTES = 12,
    PT_PB_UINT32 = 13,
    PT_PB_ENUM = 14,
    PT_PB_SFIXED32 = 15,
    PT_PB_SFIXED64 = 16,
    PT_PB_SINT32 = 17,
    PT_PB_SINT64 = 18,
} pt_pb_type_t;

/* Field flags. */
#define PT_PB_REPEATED 0x01 /* repeated: a JSON array */
#define PT_PB_MAP                                                                                  \
    0x02                    /* map<K, V>: repeated entries of `message` (key 1, value 2), a        \
                             * JSON object */
#define PT_PB_PRESENCE 0x04 /* proto3 `optional`: a zero value is still a value (kept) */

/* How a message maps to JSON: an object of its fields, or a well-known type's own form. */
typedef enum pt_pb_kind {
    PT_PB_KIND_MESSAGE = 0,
    PT_PB_KIND_MAP_ENTRY, /* synthesized entry of a map field */
    PT_PB_KIND_ANY,       /* {"@type": url, ...the message's fields} */
    PT_PB_KIND_DURATION,  /* "1.5s" */
    PT_PB_KIND_TIMESTAMP, /* "1972-01-01T10:00:20.021Z" */
    PT_PB_KIND_STRUCT,    /* any JSON object */
    PT_PB_KIND_VALUE,     /* any JSON value */
    PT_PB_KIND_LIST_VALUE,
    PT_PB_KIND_WRAPPER,   /* the wrapped scalar (field 1, `value`) */
    PT_PB_KIND_EMPTY,     /* {} */
    PT_PB_KIND_FIELD_MASK /* "a.b,cD" */
} pt_pb_kind_t;

typedef struct pt_pb_enum_value {
    const char *name;
    int32_t number;
} pt_pb_enum_value_t;

typedef struct pt_pb_enum {
    const char *full_name;
    const pt_pb_enum_value_t *values; /* in declaration order; the first of aliases wins */
    unsigned nvalues;
} pt_pb_enum_t;

typedef struct pt_pb_message pt_pb_message_t;

typedef struct pt_pb_field {
    const char *name; /* as in the .proto file (snake_case) */
    uint32_t number;
    uint8_t type;                    /* pt_pb_type_t */
    uint8_t flags;                   /* PT_PB_REPEATED | PT_PB_MAP | PT_PB_PRESENCE */
    int16_t oneof;                   /* index into the message's oneofs, or -1 */
    const pt_pb_message_t *message;  /* PT_PB_MESSAGE (the entry message for a map) */
    const pt_pb_enum_t *enumeration; /* PT_PB_ENUM */
} pt_pb_field_t;

struct pt_pb_message {
    const char *full_name;
    const pt_pb_field_t *fields; /* sorted by number */
    unsigned nfields;
    const char *const *oneofs;
    unsigned noneofs;
    uint8_t kind; /* pt_pb_kind_t */
};

/* The message by its full name ("envoy.config.cluster.v3.Cluster"), or NULL. */
const pt_pb_message_t *pt_pb_message_find(const char *full_name);
/* The message a type URL names: whatever precedes its last '/' is the URL's authority
 * (type.googleapis.com/ for every control plane), the rest the full name. NULL if unknown. */
const pt_pb_message_t *pt_pb_message_for_type_url(const char *type_url);
/* The field by number (binary search), or NULL. */
const pt_pb_field_t *pt_pb_field_by_number(const pt_pb_message_t *m, uint32_t number);
/* The field by name: snake_case as in the .proto, or its lowerCamelCase JSON name. */
const pt_pb_field_t *pt_pb_field_by_name(const pt_pb_message_t *m, const char *name);
/* The value's name, or NULL; and back (-1 when none, else 0 and *number). */
const char *pt_pb_enum_name(const pt_pb_enum_t *e, int32_t number);
int pt_pb_enum_number(const pt_pb_enum_t *e, const char *name, int32_t *number);

/* Every message: generated ones, then the well-known types. For tests and tools (the schema
 * check lists them all); i < pt_pb_message_count(). */
size_t pt_pb_message_count(void);
const pt_pb_message_t *pt_pb_message_at(size_t i);

/* The well-known types, for the generated tables and for code that builds messages. */
extern const pt_pb_message_t pt_pb_any, pt_pb_duration, pt_pb_timestamp, pt_pb_struct, pt_pb_value,
    pt_pb_list_value, pt_pb_empty, pt_pb_field_mask, pt_pb_double_value, pt_pb_float_value,
    pt_pb_int64_value, pt_pb_uint64_value, pt_pb_int32_value, pt_pb_uint32_value, pt_pb_bool_value,
    pt_pb_string_value, pt_pb_bytes_value;
extern const pt_pb_enum_t pt_pb_null_value_enum;

/* From proxy/proto_schema_tables.c (generated), sorted by full name. */
extern const pt_pb_message_t *const pt_pb_generated_messages[];
extern const size_t pt_pb_generated_nmessages;

#endif
