/* Between the protobuf wire format and the JSON tree that petrel's config parsers read, by the
 * schema of proxy/proto_schema.h: one schema, two encodings.
 *
 * pt_pb_to_json decodes a message into the tree proto3's JSON mapping gives for it, which is
 * the tree a JSON or YAML file of the same resource gives: fields by their .proto names
 * (snake_case), enums by name, 64-bit integers as numbers (as strings above 2^63 - 1), bytes
 * as base64, a Duration as "1.5s", a Timestamp as RFC 3339 text, a wrapper as its plain
 * value, a Struct as an object, an Any as {"@type": url, ...its message's fields}, a map as
 * an object. A proto3 field without presence that holds its default (0, "", false, the first
 * enum value) is left out, as proto3 JSON leaves it out. The existing pt_cfg_* parsers then
 * read it unchanged, and a field petrel does not implement is reported by them with its path,
 * exactly as for a JSON config.
 *
 * What the schema cannot map is an error naming the field's path ("resources[0].
 * load_assignment.endpoints[1]: unknown field number 99 of envoy.config.endpoint.v3.
 * LocalityLbEndpoints"): a field number the message does not have, a wire type that does
 * not fit the field, an enum number the enum does not have, a string that is not UTF-8 (or
 * holds a NUL byte, which no C parser could see), an Any whose type the schema does not
 * have, malformed bytes (see proxy/protobuf.h). Bounds: messages nest at most
 * PT_PB_MAX_DEPTH deep (protobuf's own default), and a tree holds at most PT_DOC_MAX_VALUES
 * values, as for JSON and YAML documents.
 *
 * Repeated occurrences of a field are what protobuf makes of them: the last scalar wins, a
 * message merges into the one before, a repeated field appends (packed or not), a oneof
 * member clears the others.
 *
 * pt_pb_from_json is the reverse, for the messages petrel sends (DiscoveryRequest ...) and
 * for tests: a proto3 JSON tree (snake_case or lowerCamelCase names) to wire bytes, fields in
 * number order, defaults left out, repeated scalars packed. */
#ifndef PT_PROTO_JSON_H
#define PT_PROTO_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "proxy/proto_schema.h"
#include "proxy/protobuf.h"

#define PT_PB_MAX_DEPTH 100

/* The tree for len bytes of message m (a new reference), or NULL with "<path>: <why>" in err.
 * path is where the message sits ("resources[2]"), prefixed to every error path; "" or NULL
 * for a message on its own. */
json_t *pt_pb_to_json(const pt_pb_message_t *m, const void *buf, size_t len, const char *path,
                      char *err, size_t errlen);
/* The same for a message that sits `depth` messages deep in another (a resource of a
 * response, decoded on its own): the nesting bound counts from there, as it would when
 * decoding the whole. */
json_t *pt_pb_to_json_nested(const pt_pb_message_t *m, const void *buf, size_t len,
                             const char *path, int depth, char *err, size_t errlen);

/* Appends message m's encoding of tree to w. 0, or -1 with "<path>: <why>" in err (and w's
 * contents unspecified). */
int pt_pb_from_json(const pt_pb_message_t *m, json_t *tree, pt_pb_writer_t *w, char *err,
                    size_t errlen);

#endif
