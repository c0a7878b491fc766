/* Typed, path-tracking reading of a JSON config tree (the Envoy v3 API as proto3 JSON).
 *
 * A reader walks the tree the way a module's config parser does: enter an object, read its
 * fields with typed getters, leave it. Every getter knows the full path of the field it reads
 * (static_resources.clusters[2].connect_timeout), so every error names that path and why.
 * Errors are collected, not fatal: parsing goes on to find them all (`--mode validate`
 * prints each). On leaving an object, any key no getter asked for is reported as an unknown
 * or unsupported field, so nothing a user wrote is silently ignored.
 *
 * Proto3 JSON rules honoured: lowerCamelCase spellings are accepted for every field
 * (connectTimeout for connect_timeout), a null value means "not set", 64-bit integers may be
 * strings, durations are strings like "0.25s" (or {seconds, nanos} objects as YAML users
 * sometimes write them).
 *
 * Usage:
 *   pt_cfg_t r; pt_cfg_init(&r, root);
 *   if (pt_cfg_enter(&r, "admin")) { ...getters...; pt_cfg_leave(&r); }
 *   size_t n = pt_cfg_array(&r, "clusters");
 *   for (i..n) { if (pt_cfg_enter_index(&r, i)) { ...; pt_cfg_leave(&r); } }
 *   pt_cfg_leave_array(&r);
 *   pt_cfg_finish(&r);   (leaves the root object, reporting its unknown fields)
 */
#ifndef PT_CONFIG_READER_H
#define PT_CONFIG_READER_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define PT_CFG_MAX_DEPTH  48
#define PT_CFG_MAX_FIELDS 64

typedef struct pt_cfg_frame {
    json_t *node;           /* object or array being read */
    size_t path_len;        /* length of the path up to and including this node */
    int is_array;
    unsigned nseen;
    const char *seen[PT_CFG_MAX_FIELDS]; /* keys consumed (pointers into the tree's keys) */
    const char *const *unsupported;      /* known Envoy fields petrel does not implement */
    int skip_rest;                       /* pt_cfg_skip_rest: report no unknown fields */
    signed char camel_keys;              /* has a key in camelCase: 1, none: 0, not looked: -1 */
    /* The Envoy message this object is (for a list: its elements' message), when known:
     * a field of it that petrel does not read is "not supported", not "unknown". */
    const struct pt_pb_message *msg;
} pt_cfg_frame_t;

typedef struct pt_cfg {
    char path[1024];
    size_t path_len;
    int depth;
    pt_cfg_frame_t frames[PT_CFG_MAX_DEPTH];
    /* Collected error lines, each "path: reason". */
    char **errors;
    size_t nerrors, cap_errors;
} pt_cfg_t;

void pt_cfg_init(pt_cfg_t *r, json_t *root);
/* As pt_cfg_init, for a node that sits inside a larger document (a resource of a
 * DiscoveryResponse): every path starts with `path` ("resources[3]"), so errors name the
 * field where it is in the file. */
void pt_cfg_init_at(pt_cfg_t *r, json_t *node, const char *path);
/* Names the Envoy message the root object is ("envoy.config.bootstrap.v3.Bootstrap"), so
 * that every field of it, and of the messages under it, that petrel does not read is
 * reported as "field is not supported" rather than "unknown field" (a real Envoy config that
 * uses a feature petrel lacks is told so). pt_cfg_init_at does this by itself for a node
 * with an "@type". */
void pt_cfg_set_message(pt_cfg_t *r, const char *full_name);
/* Leaves the root frame (reporting unknown fields). */
void pt_cfg_finish(pt_cfg_t *r);
void pt_cfg_dispose(pt_cfg_t *r);
static inline int pt_cfg_ok(const pt_cfg_t *r)
{
    return r->nerrors == 0;
}
/* All errors joined by newlines; caller frees. */
char *pt_cfg_errors_joined(const pt_cfg_t *r);

/* Reports an error at the current path, or at current.field when field != NULL. */
void pt_cfg_error(pt_cfg_t *r, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An error whose message starts with its own full path (checks that run after parsing, when
 * the reader is back at the root): the line is the message as given. */
void pt_cfg_error_at(pt_cfg_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string (quoted and escaped, the way errors show values) into out; returns out.
 * For error messages that quote a string the config gave. */
const char *pt_cfg_quote(const char *s, char *out, size_t len);
/* The current path as a string (valid until the next enter/leave). */
const char *pt_cfg_path(const pt_cfg_t *r);

/* Declares fields of the current object that Envoy has and petrel does not implement, so
 * that using one is reported as "is not supported" rather than "unknown field". The list
 * must outlive the frame (use a static array, NULL-terminated). */
void pt_cfg_unsupported(pt_cfg_t *r, const char *const *names);
/* Consumes field when it is empty ({} or []): Envoy configs often carry an empty map or list
 * for a feature petrel lacks, which changes nothing. A non-empty one is left to be reported
 * (as not supported, when listed with pt_cfg_unsupported). */
void pt_cfg_accept_empty(pt_cfg_t *r, const char *field);
/* Marks every field of the current object consumed, so leaving it reports none as unknown.
 * For an object whose other fields cannot be judged after an error, such as an Any whose
 * @type is not supported: that error is the one worth reading. */
void pt_cfg_skip_rest(pt_cfg_t *r);

/* Raw access: the field's value (NULL when absent or null) and marks it consumed. */
json_t *pt_cfg_get(pt_cfg_t *r, const char *field);
int pt_cfg_has(pt_cfg_t *r, const char *field);
/* 1 when any of the NULL-terminated `fields` is present (not null) in the current object;
 * consumes nothing. */
int pt_cfg_has_any(pt_cfg_t *r, const char *const *fields);

/* A proto oneof, or fields that exclude each other, in the current object: `fields` is
 * NULL-terminated. Returns the index of the one that is present (null counts as absent),
 * without consuming it: the caller reads it. When none is present: PT_CFG_ONEOF_NONE, and if
 * `required`, the error "one of a, b or c is required". When several are: PT_CFG_ONEOF_MANY,
 * the error "only one of a, b, c may be given (found a, c)", and all of them are consumed so
 * that none is reported again as unknown. Both errors are at the current object's path.
 * A choice Envoy has and petrel does not implement stands in for a required one by passing
 * required = !pt_cfg_has_any(r, unsupported): leaving the object reports it as not
 * supported, which is the error worth reading. */
#define PT_CFG_ONEOF_NONE (-1)
#define PT_CFG_ONEOF_MANY (-2)
int pt_cfg_oneof(pt_cfg_t *r, const char *const *fields, int required);

/* Typed getters. Each returns 1 if the field was present and valid, 0 if absent (the default
 * is stored), -1 if invalid (an error was recorded and the default stored). */
int pt_cfg_string(pt_cfg_t *r, const char *field, const char **out, const char *def);
int pt_cfg_bool(pt_cfg_t *r, const char *field, int *out, int def);
int pt_cfg_uint(pt_cfg_t *r, const char *field, uint64_t *out, uint64_t def, uint64_t min,
                uint64_t max);
int pt_cfg_double(pt_cfg_t *r, const char *field, double *out, double def, double min,
                  double max);
/* A signed 64-bit integer (proto3 JSON: a number or a decimal string); 0 when absent. */
int pt_cfg_int64(pt_cfg_t *r, const char *field, int64_t *out);
/* Duration in milliseconds ("1.5s", {seconds, nanos}); must be >= 0. */
int pt_cfg_duration_ms(pt_cfg_t *r, const char *field, uint64_t *out_ms, uint64_t def);
/* Enum by name. `values` is a NULL-terminated list of names petrel supports (index = result);
 * `known` optionally lists names Envoy accepts that petrel does not (reported as not
 * supported). */
int pt_cfg_enum(pt_cfg_t *r, const char *field, const char *const *values,
                const char *const *known, int *out, int def);

/* Objects and arrays. enter returns 1 and pushes a frame if the field is an object, 0 if
 * absent, -1 (error recorded) if it is not an object. leave pops and reports unknown keys. */
int pt_cfg_enter(pt_cfg_t *r, const char *field);
/* Enters the idx-th element of the current array (must be an object). */
int pt_cfg_enter_index(pt_cfg_t *r, size_t idx);
/* Enters an object element of an array without requiring it to be an object; for arrays of
 * scalars use pt_cfg_index_value. */
json_t *pt_cfg_index_value(pt_cfg_t *r, size_t idx);
void pt_cfg_leave(pt_cfg_t *r);
/* Pushes an array frame; returns its length (0 if absent or invalid). Always pair with
 * pt_cfg_leave_array when the field is present (pt_cfg_array returns its presence in
 * *present when not NULL). */
size_t pt_cfg_array(pt_cfg_t *r, const char *field, int *present);
void pt_cfg_leave_array(pt_cfg_t *r);
/* Enters an `Any` (typed_config): an object with "@type". Returns the type URL (without
 * checking it) or NULL if absent (0) / invalid (-1 via *rc). When @type is missing or not a
 * string, that is reported and the object left without reporting its other fields. */
const char *pt_cfg_enter_any(pt_cfg_t *r, const char *field, int *rc);

/* Pushes a path segment without a frame, for errors about elements of scalar arrays. */
void pt_cfg_push_index(pt_cfg_t *r, size_t idx);
void pt_cfg_pop_path(pt_cfg_t *r, size_t saved_len);

/* Parses a proto3 JSON duration string ("0.25s", "5s", "-1s" is rejected) into ms.
 * Sub-millisecond precision is rounded up so "0.0001s" is not zero. 0 or -1. */
int pt_duration_parse_ms(const char *s, uint64_t *out_ms);

/* proto3 JSON `bytes`: standard or URL-safe base64, padding optional. Returns the decoded
 * length, or -1 when s is not base64. out must hold strlen(s) / 4 * 3 + 3 bytes. */
long pt_base64_decode(const char *s, unsigned char *out);

/* A whole file of at most max bytes, NUL-terminated (*len, when given, is its length); the
 * caller frees it. NULL with "cannot read <path>: <why>" in err. For files a config names. */
char *pt_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);

/* Bounds on one config document: a bootstrap, a file a config names (SDS secrets), and any
 * control-plane message read through pt_json_parse / pt_yaml_parse. They are enforced while
 * the text is read, at the first event or byte past them, so no document stalls the main
 * thread or takes memory out of proportion to what a proxy config can need. Real configs are
 * far below each:
 *  - bytes: an Istio bootstrap is ~100 KB; an Istio-shaped CDS update of 10k clusters is
 *    22 MB of compact JSON (44 MB indented). The bound exists so that a wrong path (a log
 *    file, /dev/zero) fails at once instead of being read until memory runs out.
 *  - depth: Envoy configs nest ~30 levels, and Envoy itself cannot load one deeper than 100
 *    (protobuf's JSON parser stops there). libyaml spends time proportional to the nesting
 *    on every token, and tree walkers recurse, so the bound is Envoy's with a margin.
 *  - values: every object, array and scalar of the resulting tree, keys not counted, aliases
 *    counted at each expansion. Those 10k clusters are 0.9M values, 25 bytes of compact JSON
 *    and ~200 bytes of tree each, so 64 MiB of real JSON holds fewer than 3M. Without this
 *    bound `[{},{},...]` (3 bytes a value) or a YAML alias bomb would take many GB; with it
 *    a document's tree stays under ~1 GB, what the largest real one within 64 MiB takes.
 * (PT_CFG_MAX_DEPTH is a different bound: how deep the typed reader walks.) */
#define PT_DOC_MAX_BYTES  (64u << 20)
#define PT_DOC_MAX_DEPTH  128
#define PT_DOC_MAX_VALUES (4u << 20)

/* Loads a file as JSON (.json) or YAML (.yaml/.yml) into a jansson tree within the bounds
 * above. On failure returns NULL and writes "<path>: <why>" into err. */
json_t *pt_config_load_file(const char *path, char *err, size_t errlen);
/* The two halves of pt_config_load_file, for a caller that needs the bytes as well (a file
 * watch compares them with what it read before). read_text: the whole file within the size
 * bound, NUL-terminated, *len its length, freed with pt_config_text_free (a large file's
 * buffer is a mapping of its own: proxy/heap.h). parse_text: text read from path, parsed
 * by path's extension. Errors as pt_config_load_file. */
char *pt_config_read_text(const char *path, size_t *len, char *err, size_t errlen);
void pt_config_text_free(char *text);
json_t *pt_config_parse_text(const char *path, const char *text, size_t len, char *err,
                             size_t errlen);
/* YAML text to a jansson tree (YAML 1.2 core schema scalars, anchors, aliases, merge keys),
 * within the PT_DOC_MAX_* bounds. NULL with "line L column C: <why>" (or a message without
 * position when there is none) in err. */
json_t *pt_yaml_parse(const char *text, size_t len, char *err, size_t errlen);
/* JSON text to a jansson tree within the PT_DOC_MAX_* bounds (checked by one pass over the
 * bytes before jansson parses them); duplicate keys are an error. Errors as pt_yaml_parse. */
json_t *pt_json_parse(const char *text, size_t len, char *err, size_t errlen);

#endif
