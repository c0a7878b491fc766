/* Prints petrel's protobuf schema (proxy/proto_schema.h) one line per fact, for
 * check_schema.js to compare with Envoy's .proto files:
 *
 *   M <message> <kind>
 *   F <message> <field> <number> <type> <label> <type name or -> <oneof or ->
 *   E <enum> <value> <number>
 *
 * label is one of optional (proto3 `optional`), repeated, map, single. For a map field the
 * type name is its entry message, whose key and value fields are listed like any other. */
#include <stdio.h>
#include <string.h>

#include "proxy/proto_schema.h"

static const char *const type_names[] = {
    [PT_PB_DOUBLE] = "double",   [PT_PB_FLOAT] = "float",       [PT_PB_INT64] = "int64",
    [PT_PB_UINT64] = "uint64",   [PT_PB_INT32] = "int32",       [PT_PB_FIXED64] = "fixed64",
    [PT_PB_FIXED32] = "fixed32", [PT_PB_BOOL] = "bool",         [PT_PB_STRING] = "string",
    [PT_PB_MESSAGE] = "message", [PT_PB_BYTES] = "bytes",       [PT_PB_UINT32] = "uint32",
    [PT_PB_ENUM] = "enum",       [PT_PB_SFIXED32] = "sfixed32", [PT_PB_SFIXED64] = "sfixed64",
    [PT_PB_SINT32] = "sint32",   [PT_PB_SINT64] = "sint64",
};

/* Each enum once, however many fields use it. */
static const pt_pb_enum_t *seen[4096];
static size_t nseen;

static void dump_enum(const pt_pb_enum_t *e)
{
    for (size_t i = 0; i < nseen; i++)
        if (seen[i] == e)
            return;
    if (nseen < sizeof(seen) / sizeof(seen[0]))
        seen[nseen++] = e;
    for (unsigned i = 0; i < e->nvalues; i++)
        printf("E %s %s %d\n", e->full_name, e->values[i].name, (int)e->values[i].number);
}

static void dump_message(const pt_pb_message_t *m)
{
    printf("M %s %s\n", m->full_name, m->kind == PT_PB_KIND_MAP_ENTRY ? "map_entry" : "message");
    for (unsigned j = 0; j < m->nfields; j++) {
        const pt_pb_field_t *f = &m->fields[j];
        const char *label = (f->flags & PT_PB_MAP)        ? "map"
                            : (f->flags & PT_PB_REPEATED) ? "repeated"
                            : (f->flags & PT_PB_PRESENCE) ? "optional"
                                                          : "single";
        const char *ref = f->type == PT_PB_MESSAGE ? f->message->full_name
                          : f->type == PT_PB_ENUM  ? f->enumeration->full_name
                                                   : "-";
        printf("F %s %s %u %s %s %s %s\n", m->full_name, f->name, (unsigned)f->number,
               type_names[f->type], label, ref, f->oneof >= 0 ? m->oneofs[f->oneof] : "-");
        if (f->type == PT_PB_ENUM)
            dump_enum(f->enumeration);
        /* An entry the lookups do not list (Struct's): its key and value, here. */
        if ((f->flags & PT_PB_MAP) && pt_pb_message_find(f->message->full_name) == NULL)
            dump_message(f->message);
    }
}

int main(void)
{
    for (size_t i = 0; i < pt_pb_message_count(); i++)
        dump_message(pt_pb_message_at(i));
    return 0;
}
