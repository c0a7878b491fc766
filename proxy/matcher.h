/* Matching as Envoy configures it: envoy.type.matcher.v3.StringMatcher and RegexMatcher,
 * shared by routing (header, query and path matchers), RBAC and certificate SAN checks, and
 * envoy.config.route.v3.HeaderMatcher, shared by routes, retry policies, RBAC, the fault and
 * health check filters.
 *
 * Regexes: Envoy writes them in RE2 syntax. petrel runs them on the C library's POSIX
 * extended regex engine (regcomp with REG_EXTENDED), so each pattern is translated once, when
 * the config is loaded: the RE2 escapes POSIX lacks (\d \D \w \W \s \S, \A \z, \n \t ...,
 * \xHH, escaped punctuation inside [...]) become their POSIX equivalents, (?:...) and named
 * groups become plain groups (capture numbers are remapped for rewrite substitutions), and
 * RE2 syntax POSIX cannot express ((?i) flags, lazy quantifiers, \b, \pN, \Q...\E) is a
 * config error that says so. Matching is a full match, like RE2::FullMatch in Envoy: the
 * whole input must match, not a substring. Inputs are matched byte-wise (C locale), not as
 * UTF-8 code points. See docs/routing.md for the dialect and its differences from RE2.
 *
 * Everything is compiled into the owner's arena; regex_t cleanup is registered with
 * pt_arena_defer, so disposing the arena frees it. Matching allocates nothing. */
#ifndef PT_MATCHER_H
#define PT_MATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/http.h"

typedef struct pt_regex pt_regex_t;

/* Compile flags. */
enum pt_regex_flags {
    /* Also compile for search and replace (pt_regex_replace_all), e.g. regex_rewrite.
     * Without it only full matching is available. */
    PT_REGEX_SEARCH = 1u << 0,
};

/* Translates and compiles an RE2 pattern. NULL on error with the reason in err, worded to
 * follow the quoted pattern: `is not a valid regex: missing )` or `uses RE2 syntax that
 * petrel's POSIX regex engine does not support: (?i)`. */
pt_regex_t *pt_regex_compile(pt_arena_t *a, const char *pattern, unsigned flags, char *err,
                             size_t errlen);
/* 1 when all of s[0..len) matches (s need not be NUL-terminated), else 0. */
int pt_regex_full_match(const pt_regex_t *re, const char *s, size_t len);
/* The pattern as written in the config. */
const char *pt_regex_pattern(const pt_regex_t *re);
/* Number of capturing groups as RE2 counts them ((?:...) excluded). */
unsigned pt_regex_groups(const pt_regex_t *re);
/* Checks an RE2 rewrite string (\0..\9 name groups, \\ is a backslash) against re, as
 * RE2::CheckRewriteString does. 0 or -1 with the reason in err. */
int pt_regex_check_substitution(const pt_regex_t *re, const char *sub, char *err, size_t errlen);
/* RE2::GlobalReplace: replaces every non-overlapping match in s[0..len) with sub (checked
 * with pt_regex_check_substitution; re compiled with PT_REGEX_SEARCH). Returns the result in
 * arena (NUL-terminated; its length in *out_len when not NULL), or NULL on out-of-memory or
 * when re cannot search. */
char *pt_regex_replace_all(const pt_regex_t *re, const char *s, size_t len, const char *sub,
                           pt_arena_t *a, size_t *out_len);

/* Workers get private compiled copies of every regex (glibc's regexec locks a shared one
 * for the whole match). Set the worker count once at start, before any config is built;
 * each worker thread calls pt_regex_thread_init with its index (0-based) before matching. */
void pt_regex_set_worker_slots(unsigned n);
void pt_regex_thread_init(unsigned worker_index);
/* How many workers have compiled their copy of re so far (for tests). */
unsigned pt_regex_copies_compiled(const pt_regex_t *re);

/* Parses an envoy.type.matcher.v3.RegexMatcher the reader is positioned in ({regex,
 * google_re2: {}}). Errors name the path of `regex`. NULL when invalid (errors in r). */
pt_regex_t *pt_regex_parse(pt_cfg_t *r, pt_arena_t *a, unsigned flags);

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
