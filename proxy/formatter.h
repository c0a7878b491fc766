/* Substitution formatter: Envoy's format strings ("command operators") for access logs and
 * header values.
 *
 * A format is compiled once, when a config snapshot is built, into a flat list of parts
 * (literal text or one operator with its pre-parsed arguments: lowercased header names, a
 * split START_TIME format, a truncation length) allocated from the snapshot's arena.
 * Rendering walks that list against a pt_stream_info_t and appends to a pt_buf_t; it takes
 * no lock, allocates nothing beyond buffer chunks and makes no syscall, so workers can
 * render on the hot path.
 *
 * Semantics follow Envoy: a value that is not set renders as "-" (or "" with
 * PT_FORMAT_OMIT_EMPTY); header names are case-insensitive; %REQ(X?Y):N% falls back to Y
 * and truncates to N bytes. JSON formats (format dictionaries) render one compact object per
 * line; a value that is exactly one operator keeps its type (numbers for %RESPONSE_CODE%,
 * %BYTES_SENT%, %DURATION%..., null when not set), anything else is a string. See
 * docs/access_log.md for the operator list and the differences from Envoy. */
#ifndef PT_FORMATTER_H
#define PT_FORMATTER_H

#include <jansson.h>
#include <stddef.h>

#include "proxy/arena.h"
#include "proxy/buf.h"
#include "proxy/http.h"

typedef struct pt_format pt_format_t;

/* Compile flags. */
enum pt_format_flags {
    /* SubstitutionFormatString.omit_empty_values: values that are not set render as "" in
     * text, and their keys are left out in JSON. Envoy compiles header-value formats
     * (request_headers_to_add ...) this way. */
    PT_FORMAT_OMIT_EMPTY = 1u << 0,
    /* The deprecated FileAccessLog.json_format: every value is a string, "-" when not set. */
    PT_FORMAT_JSON_STRINGS = 1u << 1,
    /* json_format_options.sort_properties: keys in byte order instead of config order. */
    PT_FORMAT_JSON_SORT = 1u << 2,
};

/* Envoy's default access log format (with its trailing newline). */
extern const char *const PT_FORMAT_DEFAULT;

/* Compiles an Envoy format string ("[%START_TIME%] \"%REQ(:METHOD)%\" ...") into literal and
 * operator parts allocated from arena. NULL on error with a message in err, e.g.
 * `unknown command operator "%FOO%"` or `%REQ()% needs a header name`. */
pt_format_t *pt_format_compile(pt_arena_t *arena, const char *text, char *err, size_t errlen);
pt_format_t *pt_format_compile_ex(pt_arena_t *arena, const char *text, unsigned flags, char *err,
                                  size_t errlen);

/* json_format: an object whose values are format strings, nested objects or arrays, or
 * constants (numbers, booleans, null). Renders one JSON object per line ("...}\n"). A value
 * that is a single operator keeps its type; not-set values are null. Errors name the key:
 * `"status": unknown command operator "%FOO%"`. */
pt_format_t *pt_format_compile_json(pt_arena_t *arena, json_t *obj, char *err, size_t errlen);
pt_format_t *pt_format_compile_json_ex(pt_arena_t *arena, json_t *obj, unsigned flags, char *err,
                                       size_t errlen);

/* Appends the rendering to out. si may be NULL (every stream value is then "not set"). */
void pt_format_render(const pt_format_t *f, const pt_stream_info_t *si, pt_buf_t *out);
/* Renders to a NUL-terminated string in arena (header values in route header mutations).
 * NULL only on out-of-memory. */
char *pt_format_render_str(const pt_format_t *f, const pt_stream_info_t *si, pt_arena_t *arena);
/* True when the output does not depend on the stream: only literals, %%, %HOSTNAME% and
 * %ENVIRONMENT(...)% (both resolved at compile time). Such a format can be rendered once
 * (with si = NULL) and the string used as is. */
int pt_format_is_constant(const pt_format_t *f);
/* True for formats from pt_format_compile_json*. */
int pt_format_is_json(const pt_format_t *f);

/* What rendering f needs that the stream info holds only when asked (so that streams whose
 * logs do not use it pay nothing for it). */
enum pt_format_needs {
    PT_FORMAT_NEEDS_PEER_CERT = 1u << 0, /* si->downstream_peer_cert (%DOWNSTREAM_PEER_CERT%...) */
};
unsigned pt_format_needs(const pt_format_t *f);

#endif
