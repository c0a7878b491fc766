/* config.core.v3.Metadata on the resources that carry it (node, listener, filter chain,
 * cluster, endpoint, route configuration, virtual host, route), a stream's dynamic metadata
 * (what filters learn and write for those after them: RBAC's shadow verdict), and
 * type.matcher.v3.MetadataMatcher, which reads either.
 *
 * Metadata given in a config is kept twice, both in the resource's arena: as canonical JSON
 * text (what the control plane and /config_dump see; typed_filter_metadata included) and as
 * a flat index of every value under filter_metadata reachable by a path of struct keys, each
 * with its JSON text, so a lookup on a worker is a short scan that allocates nothing and
 * takes no lock. Resources without metadata hold NULL: nothing is kept and nothing runs.
 *
 * Dynamic metadata is a list in the stream's arena, empty (NULL) until a filter writes to
 * it. Lookups follow Envoy's: a namespace, then a path of keys; the value is a
 * google.protobuf.Value; a path that goes through a value that is not a struct finds
 * nothing. */
#ifndef PT_METADATA_H
#define PT_METADATA_H

#include <stddef.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"

typedef enum pt_md_type {
    PT_MD_NONE, /* not found */
    PT_MD_NULL,
    PT_MD_NUMBER,
    PT_MD_STRING,
    PT_MD_BOOL,
    PT_MD_STRUCT,
    PT_MD_LIST,
} pt_md_type_t;

/* One google.protobuf.Value. */
typedef struct pt_md_value {
    pt_md_type_t type;
    const char *str; /* PT_MD_STRING: the string itself (not escaped) */
    size_t str_len;
    const char *json; /* every type: its compact JSON text (a string's quoted and escaped) */
    size_t json_len;
    double num;  /* PT_MD_NUMBER */
    int boolean; /* PT_MD_BOOL */
    const struct pt_md_value *items; /* PT_MD_LIST from a config: its elements */
    unsigned nitems;
} pt_md_value_t;

typedef struct pt_md_entry {
    const char *ns;
    const char *const *keys; /* the path under the namespace; nkeys 0: the namespace's struct */
    unsigned nkeys;
    pt_md_value_t v;
} pt_md_entry_t;

typedef struct pt_metadata {
    const char *json; /* the Metadata message, canonical JSON (sorted keys) */
    const pt_md_entry_t *entries;
    unsigned nentries;
} pt_metadata_t;

/* Reads the Metadata in `field` of the object the reader is in: filter_metadata (a map of
 * namespaces to structs) and typed_filter_metadata (a map of namespaces to Any, kept for
 * config_dump and the control plane: no lookup reads them, as none does in Envoy). NULL when
 * absent, empty, or wrong (errors recorded in r naming the path). */
const pt_metadata_t *pt_metadata_parse(pt_cfg_t *r, const char *field, pt_arena_t *a);

/* Reads the google.protobuf.Struct in `field` (Node.metadata: any JSON object), kept as
 * canonical JSON text in a. NULL when absent or empty, or wrong (error recorded). */
const char *pt_struct_parse(pt_cfg_t *r, const char *field, pt_arena_t *a);

/* The value at ns:keys[0]:...:keys[nkeys-1] of md (md may be NULL): 1 found, else 0. */
int pt_metadata_find(const pt_metadata_t *md, const char *ns, const char *const *keys,
                     unsigned nkeys, pt_md_value_t *out);
/* As pt_metadata_find on metadata given as JSON text (an endpoint's, which hosts keep as
 * text): parsed for this lookup, the value's text copied into buf (cap bytes; a value that
 * does not fit is not found). */
int pt_metadata_find_text(const char *json_text, const char *ns, const char *const *keys,
                          unsigned nkeys, char *buf, size_t cap, pt_md_value_t *out);

/* ---- dynamic metadata ------------------------------------------------------------------ */

typedef struct pt_dyn_md {
    struct pt_dyn_md *next;
    const char *ns, *key;
    pt_md_value_t v;
    const pt_metadata_t *src; /* set from a config's struct: deeper paths are found there */
} pt_dyn_md_t;

/* Sets ns.key to the string value (copied into a) in the list at *head, replacing an
 * earlier value of that key, as Envoy's setDynamicMetadata merges into the namespace.
 * 0, or -1 out of memory. */
int pt_dyn_md_set_string(pt_dyn_md_t **head, pt_arena_t *a, const char *ns, const char *key,
                         const char *value);
/* Reads the google.protobuf.Struct in `field` as the contents of one namespace `ns` (a
 * filter's filter_metadata, which it writes to dynamic metadata), indexed for lookups. NULL
 * when absent or empty, or wrong (error recorded). */
const pt_metadata_t *pt_struct_parse_ns(pt_cfg_t *r, const char *field, pt_arena_t *a,
                                        const char *ns);
/* Merges every top-level field of the struct md holds (pt_struct_parse_ns) into the list,
 * as Envoy merges a Struct into a namespace. md must outlive the list (it lives in the
 * config the stream pins). 0, or -1 out of memory. */
int pt_dyn_md_merge(pt_dyn_md_t **head, pt_arena_t *a, const pt_metadata_t *md);
/* The value at ns:keys... (nkeys 0: the namespace as a struct, its JSON built in buf of cap
 * bytes). A path of more than one key goes into a struct merged from a config. */
int pt_dyn_md_find(const pt_dyn_md_t *head, const char *ns, const char *const *keys,
                   unsigned nkeys, char *buf, size_t cap, pt_md_value_t *out);

/* ---- type.matcher.v3.MetadataMatcher --------------------------------------------------- */

typedef struct pt_md_matcher pt_md_matcher_t;

/* Parses the MetadataMatcher the reader is in: filter, path [{key}], value (a ValueMatcher:
 * null_match, double_match {exact | range}, string_match, bool_match, present_match,
 * list_match {one_of}, or_match {value_matchers}) and invert. NULL with errors in r. */
const pt_md_matcher_t *pt_md_matcher_parse(pt_cfg_t *r, pt_arena_t *a);
/* Whether the value the matcher's path finds matches (invert applied). The value is looked
 * up in dyn (dynamic metadata) or, when md is given instead, in md. */
int pt_md_matcher_match(const pt_md_matcher_t *m, const pt_dyn_md_t *dyn, const pt_metadata_t *md);

#endif
