/* Header mutations as Envoy configures them: lists of envoy.config.core.v3.HeaderValueOption
 * (*_headers_to_add) and of header names (*_headers_to_remove), used by routes (route config,
 * virtual host, route, weighted cluster), the local rate limit filter's replies and active
 * HTTP health checks.
 *
 * Parsing validates keys as Envoy's HeaderParser does (no pseudo-headers, no host) and
 * compiles values as access-log formats (%REQ(...)%, %DOWNSTREAM_REMOTE_ADDRESS%...) into the
 * owner's arena; a value that does not depend on the request is rendered once, then. Applying
 * follows Envoy's HeaderParser::evaluateHeaders: removals first, then every value is rendered
 * and every append_action decided against the headers as they are, then overwrites, then
 * appends, so one list never sees its own additions. */
#ifndef PT_HEADER_MUTATION_H
#define PT_HEADER_MUTATION_H

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/http.h"

typedef struct pt_format pt_format_t;

typedef enum pt_header_append_action {
    PT_HEADER_APPEND_IF_EXISTS_OR_ADD,    /* add another value (the default) */
    PT_HEADER_ADD_IF_ABSENT,              /* add only when the header is not there */
    PT_HEADER_OVERWRITE_IF_EXISTS_OR_ADD, /* replace every value, or add */
    PT_HEADER_OVERWRITE_IF_EXISTS,        /* replace every value; nothing when absent */
} pt_header_append_action_t;

typedef struct pt_header_add {
    const char *key;        /* lowercase */
    const char *value;      /* the value when it does not depend on the request, else NULL */
    const pt_format_t *fmt; /* renders the value per request when value is NULL */
    pt_header_append_action_t action;
    int keep_empty_value; /* add even when the value renders empty */
} pt_header_add_t;

/* One level's *_headers_to_add and *_headers_to_remove. Removal runs before additions. */
typedef struct pt_header_mutations {
    const pt_header_add_t *add;
    unsigned nadd;
    const char *const *remove; /* lowercase names */
    unsigned nremove;
} pt_header_mutations_t;

/* Parses the list of HeaderValueOption at add_field and the list of header names at
 * remove_field of the current object (either field name may be NULL: not read) into m,
 * allocated from a. Errors name the entry's full path (request_headers_to_add[2].header.key:
 * ...). Returns 0, or -1 with the errors in r (m then holds the valid entries). */
int pt_header_mutations_parse(pt_cfg_t *r, pt_arena_t *a, const char *add_field,
                              const char *remove_field, pt_header_mutations_t *m);

/* Applies m to h (see above). Values are rendered with si (NULL: operators that read the
 * stream render empty) into h->arena. No allocation for lists of up to 16 additions beyond
 * the rendered values and h's own growth. */
void pt_header_mutations_apply(const pt_header_mutations_t *m, pt_http_headers_t *h,
                               const pt_stream_info_t *si);

#endif
