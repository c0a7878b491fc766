/* Matching as Envoy configures it: envoy.type.matcher.v3.StringMatcher and RegexMatcher,
 * shared by routing (header, query and path matchers), RBAC and certificate SAN checks, and
 * envoy.config.route.v3.HeaderMatcher, shared by routes, retry policies, RBAC, the fault and
 * health check filters.
 *
 * Regexes are RE2's (proxy/regex.h), as in Envoy; pt_regex_parse reads a RegexMatcher and
 * applies Envoy's program size limits.
 *
 * Everything is compiled into the owner's arena; disposing the arena frees it. Matching
 * allocates nothing. */
#ifndef PT_MATCHER_H
#define PT_MATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/http.h"
#include "proxy/regex.h"

/* Checks an RE2 rewrite string (\0..\9 name groups, \\ is a backslash) against re, as
 * RE2::CheckRewriteString does. 0 or -1 with the reason in err. */
int pt_regex_check_substitution(const pt_regex_t *re, const char *sub, char *err, size_t errlen);

/* The runtime keys re2.max_program_size.error_level (default 100: a regex whose RE2 program
 * is larger is a config error) and re2.max_program_size.warn_level (default UINT32_MAX, none:
 * a larger one is logged), as Envoy. Set once from the bootstrap, before configs are read. */
void pt_regex_set_program_size_limits(uint32_t error_level, uint32_t warn_level);

/* Parses an envoy.type.matcher.v3.RegexMatcher the reader is positioned in ({regex,
 * google_re2: {max_program_size}}): the pattern's own max_program_size replaces the runtime
 * levels, as in Envoy. Errors name the path of `regex`. NULL when invalid (errors in r). */
pt_regex_t *pt_regex_parse(pt_cfg_t *r, pt_arena_t *a);

typedef enum pt_string_match_kind {
    PT_STRING_EXACT,
    PT_STRING_PREFIX,
    PT_STRING_SUFFIX,
    PT_STRING_CONTAINS,
    PT_STRING_REGEX,
} pt_string_match_kind_t;

typedef struct pt_string_matcher {
    pt_string_match_kind_t kind;
    int ignore_case;   /* exact/prefix/suffix/contains; no effect on regex (as in Envoy) */
    const char *value; /* lowercased when ignore_case; NULL for regex */
    size_t len;
    const pt_regex_t *regex;
} pt_string_matcher_t;

/* Parses an envoy.type.matcher.v3.StringMatcher the reader is positioned in: exactly one of
 * exact, prefix, suffix, contains, safe_regex, plus ignore_case. Returns 0, or -1 with the
 * errors in r. */
int pt_string_matcher_parse(pt_cfg_t *r, pt_arena_t *a, pt_string_matcher_t *out);
/* Sets up an exact/prefix/suffix/contains matcher in code (value must outlive m; it is
 * lowercased into arena when ignore_case). 0 or -1 on out-of-memory. */
int pt_string_matcher_init(pt_string_matcher_t *m, pt_arena_t *a, pt_string_match_kind_t kind,
                           const char *value, int ignore_case);
/* 1 when s[0..len) matches, else 0. No allocation, no lock of petrel's own. */
int pt_string_matcher_match(const pt_string_matcher_t *m, const char *s, size_t len);

/* ---- envoy.config.route.v3.HeaderMatcher ---------------------------------------------- */

typedef enum pt_header_match_kind {
    PT_HEADER_MATCH_EXACT,   /* exact_match; an empty value only checks presence */
    PT_HEADER_MATCH_REGEX,   /* safe_regex_match */
    PT_HEADER_MATCH_RANGE,   /* range_match: integer in [start, end) */
    PT_HEADER_MATCH_PRESENT, /* present_match, or no specifier at all (present = 1) */
    PT_HEADER_MATCH_PREFIX,
    PT_HEADER_MATCH_SUFFIX,
    PT_HEADER_MATCH_CONTAINS,
    PT_HEADER_MATCH_STRING, /* string_match (StringMatcher) */
} pt_header_match_kind_t;

typedef struct pt_header_matcher {
    const char *name; /* lowercase */
    pt_header_match_kind_t kind;
    const char *value; /* exact/prefix/suffix/contains */
    size_t value_len;
    const pt_regex_t *regex;
    int64_t range_start, range_end;
    int present;
    pt_string_matcher_t string;
    int invert;
    int treat_missing_as_empty;
} pt_header_matcher_t;

/* Parses the HeaderMatcher the reader is inside: name (required; a pseudo-header such as
 * :path is allowed), at most one of exact_match, safe_regex_match, range_match,
 * present_match, prefix_match, suffix_match, contains_match, string_match (none: a presence
 * check), invert_match, treat_missing_header_as_empty. Returns 0, or -1 with the errors in
 * r. */
int pt_header_matcher_parse(pt_cfg_t *r, pt_arena_t *a, pt_header_matcher_t *out);
/* Envoy's HeaderUtility: the values of a repeated header are matched joined with ",". A
 * missing header fails every matcher, even an inverted one, except a presence check asking
 * for absence (present_match: false, or a presence check with invert_match); with
 * treat_missing_header_as_empty it is matched as an empty value instead (a presence check
 * then answers present != invert). h may be NULL (no headers). A joined value is built in
 * h's arena; nothing else is allocated. */
int pt_header_matcher_match(const pt_header_matcher_t *hm, const pt_http_headers_t *h);

#endif
