/* Regexes as Envoy runs them: RE2 (Google's engine, Envoy's `safe_regex` / `google_re2`).
 * The engine is RE2 itself, through the one C++ file of the project (proxy/regex_re2.cc), so
 * a pattern means exactly what it means in Envoy: the same syntax ((?i), lazy repetition,
 * Unicode classes \pL, named groups ...), UTF-8 matching, linear time, and the same program
 * size limit (Envoy refuses a pattern whose compiled program is larger than the runtime key
 * re2.max_program_size.error_level, 100 by default, or than its own
 * google_re2.max_program_size).
 *
 * A compiled regex belongs to the arena it was compiled into (freed with it) and is shared
 * by every thread: RE2's matching is thread-safe and allocates nothing per match. */
#ifndef PT_REGEX_H
#define PT_REGEX_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pt_regex pt_regex_t;

/* Compiles an RE2 pattern whose program may have at most max_program_size instructions
 * (0: no limit; configs get theirs from pt_regex_parse in proxy/matcher.h, which applies
 * Envoy's rules). NULL on error with the reason in err, worded to follow the quoted pattern:
 * `is not a valid regex: missing ): (a` or `is too complex: its RE2 program size 120 is over
 * 100`. */
pt_regex_t *pt_regex_compile(pt_arena_t *a, const char *pattern, uint32_t max_program_size,
                             char *err, size_t errlen);
/* 1 when all of s[0..len) matches (s need not be NUL-terminated), else 0 (RE2::FullMatch). */
int pt_regex_full_match(const pt_regex_t *re, const char *s, size_t len);
/* 1 when some part of s[0..len) matches (RE2::PartialMatch), else 0. */
int pt_regex_partial_match(const pt_regex_t *re, const char *s, size_t len);
/* Searches s[0..len) for the leftmost match (RE2::Match, unanchored unless the pattern
 * anchors itself) and reports capturing groups 1..ngroups as byte offsets: group g spans
 * [spans[2(g-1)], spans[2(g-1)+1]), both SIZE_MAX when the group did not take part. Returns
 * 1 on a match, 0 otherwise (and when out of memory). Allocates nothing for up to 8 groups. */
int pt_regex_search_groups(const pt_regex_t *re, const char *s, size_t len, size_t *spans,
                           unsigned ngroups);
/* The pattern as written in the config. */
const char *pt_regex_pattern(const pt_regex_t *re);
/* Number of capturing groups ((?:...) excluded). */
unsigned pt_regex_groups(const pt_regex_t *re);
/* RE2::GlobalReplace: every non-overlapping match in s[0..len) replaced by sub (\0..\9 name
 * groups, \\ is a backslash; checked with pt_regex_check_substitution). Returns the result
 * in arena (NUL-terminated; its length in *out_len when not NULL), NULL out of memory. */
char *pt_regex_replace_all(const pt_regex_t *re, const char *s, size_t len, const char *sub,
                           pt_arena_t *a, size_t *out_len);

/* The size of the compiled program (RE2::ProgramSize), what Envoy's limits count. */
unsigned pt_regex_program_size(const pt_regex_t *re);

#ifdef __cplusplus
}
#endif

#endif
