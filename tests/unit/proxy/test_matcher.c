/* Unit tests for proxy/matcher and proxy/regex: RE2's syntax and semantics as Envoy has them
 * (what matches, what is rejected and with which message, the program size limits),
 * RE2::GlobalReplace, rewrite strings, StringMatcher and HeaderMatcher parsing and matching.
 * Table-driven: each table row is one case. */
#include "proxy/matcher.h"
#include "pt_test.h"
#include "pt_test_json.h"

#include <pthread.h>
#include <stdint.h>

enum { STRING_MATCHER, HEADER_MATCHER };

/* Parses {'m': json} with the StringMatcher or HeaderMatcher parser (kind) into out, from
 * arena a, and leaves every object so that unknown fields are reported too. Returns the
 * parser's result; *r holds the errors. The caller disposes *r, *root and a. */
static int parse_matcher(int kind, const char *json, pt_arena_t *a, void *out, pt_cfg_t *r,
                         json_t **root)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "{'m':%s}", json);
    *root = J(buf);
    pt_cfg_init(r, *root);
    int rc = -1;
    if (pt_cfg_enter(r, "m") > 0) {
        rc = kind == STRING_MATCHER ? pt_string_matcher_parse(r, a, out)
                                    : pt_header_matcher_parse(r, a, out);
        pt_cfg_leave(r);
    }
    pt_cfg_finish(r);
    return rc;
}

/* ---- full matching ------------------------------------------------------------------ */

static void test_regex_full_match(void)
{
    static const struct {
        const char *re, *in;
        int want;
    } cases[] = {
        /* full match, not search */
        {"abc", "abc", 1},
        {"abc", "xabc", 0},
        {"abc", "abcx", 0},
        {"b", "abc", 0},
        {"a|ab", "ab", 1}, /* leftmost-first tries "a" first; a full match still needs "ab" */
        {"a|ab", "a", 1},
        {"(a|ab)(c|bcd)", "abcd", 1},
        {".*", "", 1},
        {"x*", "", 1},
        {"^/api/v[0-9]+$", "/api/v2", 1},
        {"/api/v[0-9]+", "/api/v2/x", 0},
        /* Perl classes outside brackets */
        {"\\d+", "0123456789", 1},
        {"\\d+", "12a", 0},
        {"\\D", "a", 1},
        {"\\D", "1", 0},
        {"\\w+", "a_Z9", 1},
        {"\\w", "-", 0},
        {"\\W", "-", 1},
        {"\\W", "_", 0},
        {"\\s", " ", 1},
        {"\\s", "\t", 1},
        {"\\s", "x", 0},
        {"\\S+", "ab", 1},
        {"\\S", " ", 0},
        /* ... and inside brackets, where POSIX has no escapes at all */
        {"[\\d.]+", "1.2.3", 1},
        {"[\\d.]+", "1,2", 0},
        {"[\\w-]+", "a-b_c", 1},
        {"[^\\d]+", "abc", 1},
        {"[^\\d]", "1", 0},
        {"[\\D]", "x", 1},
        {"[\\D]", "5", 0},
        {"[\\s\\d]+", " 1 2", 1},
        {"[\\]]", "]", 1},
        {"[\\[]", "[", 1},
        {"[\\^]", "^", 1},
        {"[\\^]", "a", 0},
        {"[^\\^]", "a", 1},
        {"[^\\^]", "^", 0},
        {"[\\-a]", "-", 1},
        {"[a\\-z]", "-", 1},
        {"[a\\-z]", "b", 0},
        {"[a-z]", "b", 1},
        {"[]a]", "]", 1},
        {"[a-]", "-", 1},
        {"[-^]", "^", 1},
        {"[\\\\]", "\\", 1},
        {"[\\.]", ".", 1},
        {"[\\.]", "\\", 0}, /* RE2 "[\.]" is a dot only; POSIX would also take '\' */
        {"[.]", "x", 0},
        {"[\\n]", "\n", 1},
        {"[!-~]+", "a]^-[z", 1},
        {"[[:alpha:]]+", "abcXYZ", 1},
        {"[[:alpha:]]", "1", 0},
        {"[[:^digit:]]", "a", 1},
        {"[[:^digit:]]", "7", 0},
        {"[[:word:]]+", "a_1", 1},
        {"[[:a]", ":", 1}, /* no ":]": a literal '[' */
        /* groups */
        {"(?:ab)+", "abab", 1},
        {"(?:ab)+", "aba", 0},
        {"(?P<x>a)b", "ab", 1},
        {"(?<x>a)b", "ab", 1},
        {"\\(?<x", "(<x", 1}, /* an escaped paren: not a group */
        {"[(?<x]+", "<(x", 1},
        {"()", "", 1},
        {"a|", "", 1},
        /* escapes */
        {"\\.foo", ".foo", 1},
        {"\\.foo", "xfoo", 0},
        {"\\/a\\-b", "/a-b", 1},
        {"a\\ b\\_c", "a b_c", 1},
        {"\\Aab\\z", "ab", 1},
        {"\\x41\\x{42}", "AB", 1},
        {"\\t", "\t", 1},
        {"a\\*", "a*", 1},
        {"a\\{2\\}", "a{2}", 1},
        /* repetition */
        {"a{2}", "aa", 1},
        {"a{2}", "aaa", 0},
        {"a{2,}", "aaaa", 1},
        {"a{1,2}", "aaa", 0},
        {"a{0,1000}", "", 1},
        {"a{", "a{", 1}, /* not a repetition: a literal brace, as in RE2 */
        {"a{,3}", "a{,3}", 1},
        {"a{x}", "a{x}", 1},
        {"a}", "a}", 1},
        {"a]", "a]", 1},
        /* UTF-8 literals repeat as one character */
        {"\xc3\xa9+", "\xc3\xa9\xc3\xa9", 1},
        {"caf\xc3\xa9", "caf\xc3\xa9", 1},
        /* What RE2 has and POSIX has not (Istio writes these): flags, lazy repetition, word
         * boundaries, \Q..\E, Unicode (UTF-8) character classes and code points */
        {"(?i)/API/v1", "/api/V1", 1},
        {"(?i:ab)c", "ABc", 1},
        {"(?i:ab)c", "ABC", 0},
        {"(?s)a.b", "a\nb", 1},
        {"a.b", "a\nb", 0},
        {"a+?b", "aab", 1},
        {"a{2,3}?", "aa", 1},
        {".*\\bfoo\\b.*", "a foo b", 1},
        {".*\\bfoo\\b.*", "afoob", 0},
        {"\\Qa.b\\E", "a.b", 1},
        {"\\Qa.b\\E", "axb", 0},
        {"\\p{Greek}+", "\xce\xb1\xce\xb2", 1},
        {"\\p{Greek}", "a", 0},
        {"\\x{e9}", "\xc3\xa9", 1},
        {".", "\xc3\xa9", 1}, /* one character, two bytes */
        {"[\xc3\xa9" "e]+", "e\xc3\xa9", 1},
        {"[\\d-z]", "-", 1}, /* a class then a literal '-' */
    };
    pt_arena_t a = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        pt_regex_t *re = pt_regex_compile(&a, cases[i].re, 0, err, sizeof(err));
        if (re == NULL) {
            fprintf(stderr, "  case %zu: /%s/ did not compile: %s\n", i, cases[i].re, err);
            PT_CHECK(re != NULL);
        }
        int got = pt_regex_full_match(re, cases[i].in, strlen(cases[i].in));
        if (got != cases[i].want)
            fprintf(stderr, "  case %zu: /%s/ on \"%s\": got %d\n", i, cases[i].re, cases[i].in,
                    got);
        PT_CHECK_INT(got, cases[i].want);
    }
    pt_arena_dispose(&a);
}

/* The subject is bounded by its length, not a NUL: a header value in the middle of a
 * buffer matches only its own bytes. */
static void test_regex_not_nul_terminated(void)
{
    pt_arena_t a = {0};
    char err[256];
    pt_regex_t *re = pt_regex_compile(&a, "ab", 0, err, sizeof(err));
    PT_CHECK(re != NULL);
    const char *buf = "abc";
    PT_CHECK_INT(pt_regex_full_match(re, buf, 2), 1);
    PT_CHECK_INT(pt_regex_full_match(re, buf, 3), 0);
    PT_CHECK_INT(pt_regex_full_match(re, buf, 1), 0);
    PT_CHECK_STR(pt_regex_pattern(re), "ab");
    pt_arena_dispose(&a);
}

static void test_regex_errors(void)
{
#define BAD "is not a valid regex: "
    static const struct {
        const char *re, *err;
    } cases[] = {
        {"(a)\\1", BAD "invalid escape sequence: \\1"}, /* no backreferences: linear time */
        {"(?=a)", BAD "invalid perl operator: (?="},          /* nor lookaround */
        {"a(b", BAD "missing ): a(b"},
        {"a)b", BAD "unexpected ): a)b"},
        {"(?:a", BAD "missing ): (?:a"},
        {"*a", BAD "no argument for repetition operator: *"},
        {"{2}", BAD "no argument for repetition operator: {2}"},
        {"a**", BAD "bad repetition operator: **"},
        {"a{1001}", BAD "invalid repetition size: {1001}"},
        {"a{3,2}", BAD "invalid repetition size: {3,2}"},
        {"[a", BAD "missing ]: [a"},
        {"[z-a]", BAD "invalid character class range: z-a"},
        {"[[:nope:]]", BAD "invalid character class range: [:nope:]"},
        {"\\q", BAD "invalid escape sequence: \\q"},
        {"a\\", BAD "trailing \\"},
        {"(?P<>a)", BAD "invalid named capture group: (?P<>"},
    };
    pt_arena_t a = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        pt_regex_t *re = pt_regex_compile(&a, cases[i].re, 0, err, sizeof(err));
        if (re != NULL)
            fprintf(stderr, "  case %zu: /%s/ compiled\n", i, cases[i].re);
        PT_CHECK(re == NULL);
        PT_CHECK_STR(err, cases[i].err);
    }
    pt_arena_dispose(&a);
#undef BAD
}

/* Envoy's limit on a regex's compiled size: re2.max_program_size.error_level (100 unless the
 * runtime says otherwise), or the pattern's own google_re2.max_program_size instead. */
static void test_regex_program_size(void)
{
    pt_arena_t a = {0};
    char err[256];
    pt_regex_t *re = pt_regex_compile(&a, "\\pL", 0, err, sizeof(err));
    PT_CHECK(re != NULL);
    PT_CHECK(pt_regex_program_size(re) > 1000);
    PT_CHECK(pt_regex_compile(&a, "\\pL", 100, err, sizeof(err)) == NULL);
    PT_CHECK(strncmp(err, "is too complex: its RE2 program size ", 37) == 0);
    PT_CHECK(strstr(err, " is over 100") != NULL);

    static const struct {
        const char *json, *err;
        uint32_t error_level;
    } cases[] = {
        {"{'regex': 'a+'}", NULL, 100},
        {"{'regex': '(?i)^/(users|accounts)/[a-z0-9-]{1,64}$'}",
         "m.regex: \"(?i)^/(users|accounts)/[a-z0-9-]{1,64}$\" is too complex: its RE2 program "
         "size 601 is over 100 (the runtime key re2.max_program_size.error_level)", 100},
        {"{'regex': '(?i)^/(users|accounts)/[a-z0-9-]{1,64}$'}", NULL, 32768},
        {"{'regex': '(?i)^/(users|accounts)/[a-z0-9-]{1,64}$', 'google_re2': "
         "{'max_program_size': 1000}}", NULL, 100},
        {"{'regex': 'abcdef', 'google_re2': {'max_program_size': 5}}",
         "m.regex: \"abcdef\" is too complex: its RE2 program size 10 is over 5 "
         "(google_re2.max_program_size)", 32768},
        {"{'regex': 'a', 'google_re2': {'max_program_size': 0}}",
         "m.google_re2.max_program_size: 0 is out of range [1, 4294967295]", 100},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_regex_set_program_size_limits(cases[i].error_level, UINT32_MAX);
        char buf[256];
        snprintf(buf, sizeof(buf), "{'m': %s}", cases[i].json);
        json_t *root = J(buf);
        pt_cfg_t r;
        pt_cfg_init(&r, root);
        PT_CHECK_INT(pt_cfg_enter(&r, "m"), 1);
        pt_regex_t *got = pt_regex_parse(&r, &a);
        pt_cfg_leave(&r);
        pt_cfg_finish(&r);
        const char *want[2] = {cases[i].err, NULL};
        if (!errors_are(&r, want))
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK(errors_are(&r, want));
        if (cases[i].err == NULL || strstr(cases[i].err, "too complex") != NULL)
            PT_CHECK(cases[i].err == NULL ? got != NULL : got == NULL);
        pt_cfg_dispose(&r);
        json_decref(root);
    }
    pt_regex_set_program_size_limits(100, UINT32_MAX);
    pt_arena_dispose(&a);
}

/* ---- search and replace (regex_rewrite) ------------------------------------------------- */

static void test_regex_replace_all(void)
{
    static const struct {
        const char *re, *sub, *in, *want;
    } cases[] = {
        /* Envoy's documented regex_rewrite examples */
        {"^/service/([^/]+)(/.*)$", "\\2/instance/\\1", "/service/foo/v1/api",
         "/v1/api/instance/foo"},
        {"one", "two", "/xxx/one/yyy/one/zzz", "/xxx/two/yyy/two/zzz"},
        /* RE2::GlobalReplace's treatment of empty matches */
        {"x*", "-", "abc", "-a-b-c-"},
        {"b*", "-", "abc", "-a-c-"},
        /* (?:...) does not count: \1 is the first capturing group */
        {"(?:a)(b)", "[\\1]", "abab", "[b][b]"},
        {"(?P<n>\\d+)", "<\\1>", "a12b3", "a<12>b<3>"},
        {"(a)|(b)", "[\\1\\2]", "ab", "[a][b]"}, /* a group that did not take part: "" */
        {"\\d", "#", "a1b22", "a#b##"},
        {"a", "\\\\", "banana", "b\\n\\n\\"},
        {"a", "\\0\\0", "xa", "xaa"},
        {"z", "y", "abc", "abc"},
        {"^a", "X", "aaa", "Xaa"}, /* ^ only at the start, not after each match */
        {"a$", "X", "aaa", "aaX"},
        {"\xc3\xa9", "e", "caf\xc3\xa9", "cafe"},
        {"", "-", "\xc3\xa9", "-\xc3\xa9-"}, /* an empty match steps over a whole character */
        {"/+", "/", "//a///b", "/a/b"},
        /* leftmost-first, as RE2 (and Perl): the first alternative that matches wins */
        {"a|ab", "X", "/ab", "/Xb"},
        {"(?i)a", "-", "aAb", "--b"},
    };
    pt_arena_t a = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        pt_regex_t *re = pt_regex_compile(&a, cases[i].re, 0, err, sizeof(err));
        if (re == NULL)
            fprintf(stderr, "  case %zu: %s\n", i, err);
        PT_CHECK(re != NULL);
        PT_CHECK_INT(pt_regex_check_substitution(re, cases[i].sub, err, sizeof(err)), 0);
        size_t n = 0;
        char *out =
            pt_regex_replace_all(re, cases[i].in, strlen(cases[i].in), cases[i].sub, &a, &n);
        PT_CHECK_STR(out, cases[i].want);
        PT_CHECK_INT(n, strlen(cases[i].want));
    }
    pt_arena_dispose(&a);
}

static void test_regex_substitution_errors(void)
{
    static const struct {
        const char *re, *sub, *err;
    } cases[] = {
        {"(a)", "\\2", "refers to group \\2, but the regex has 1 capturing group"},
        {"a", "\\1", "refers to group \\1, but the regex has 0 capturing groups"},
        {"(?:a)(b)(c)", "\\3", "refers to group \\3, but the regex has 2 capturing groups"},
        {"a", "x\\", "must not end with a single '\\'"},
        {"a", "\\x", "'\\' must be followed by a digit or '\\'"},
        {"(a)(b)", "\\2\\1\\0\\\\", NULL},
    };
    pt_arena_t a = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        pt_regex_t *re = pt_regex_compile(&a, cases[i].re, 0, err, sizeof(err));
        PT_CHECK(re != NULL);
        int rc = pt_regex_check_substitution(re, cases[i].sub, err, sizeof(err));
        if (cases[i].err == NULL) {
            PT_CHECK_INT(rc, 0);
        } else {
            PT_CHECK_INT(rc, -1);
            PT_CHECK_STR(err, cases[i].err);
        }
    }
    pt_arena_dispose(&a);
}

/* ---- StringMatcher ------------------------------------------------------------------- */

static void test_string_matcher(void)
{
    static const struct {
        const char *json, *in;
        int want;
    } cases[] = {
        {"{'exact':'abc'}", "abc", 1},
        {"{'exact':'abc'}", "ABC", 0},
        {"{'exact':'abc'}", "abcd", 0},
        {"{'exact':'abc','ignore_case':true}", "ABC", 1},
        {"{'exact':'AbC','ignore_case':true}", "aBc", 1},
        {"{'exact':''}", "", 1},
        {"{'exact':''}", "a", 0},
        {"{'prefix':'/api'}", "/api/x", 1},
        {"{'prefix':'/api'}", "/ap", 0},
        {"{'prefix':'/api'}", "/API/x", 0},
        {"{'prefix':'/API','ignore_case':true}", "/api/x", 1},
        {"{'suffix':'.com'}", "a.com", 1},
        {"{'suffix':'.com'}", "a.org", 0},
        {"{'suffix':'.COM','ignoreCase':true}", "a.com", 1},
        {"{'contains':'mid'}", "amidb", 1},
        {"{'contains':'mid'}", "mi", 0},
        {"{'contains':'mid'}", "aMIDb", 0},
        {"{'contains':'MID','ignore_case':true}", "amidb", 1},
        {"{'contains':'MID','ignore_case':true}", "xxmixmid", 1},
        {"{'safe_regex':{'regex':'a.c'}}", "abc", 1},
        {"{'safe_regex':{'regex':'a.c'}}", "abcd", 0},
        {"{'safe_regex':{'google_re2':{},'regex':'[0-9]+'}}", "12", 1},
        {"{'safe_regex':{'regex':'spiffe://[a-z.]+/ns/\\\\w+/sa/.*'}}",
         "spiffe://cluster.local/ns/default/sa/web", 1},
        /* ignore_case has no effect on regexes, as in Envoy */
        {"{'safe_regex':{'regex':'abc'},'ignore_case':true}", "ABC", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *root;
        pt_cfg_t r;
        pt_arena_t a = {0};
        pt_string_matcher_t m;
        int rc = parse_matcher(STRING_MATCHER, cases[i].json, &a, &m, &r, &root);
        if (!pt_cfg_ok(&r))
            fprintf(stderr, "  case %zu: %s\n", i, r.errors[0]);
        PT_CHECK_INT(rc, 0);
        PT_CHECK(pt_cfg_ok(&r));
        int got = pt_string_matcher_match(&m, cases[i].in, strlen(cases[i].in));
        if (got != cases[i].want)
            fprintf(stderr, "  case %zu: %s on \"%s\"\n", i, cases[i].json, cases[i].in);
        PT_CHECK_INT(got, cases[i].want);
        pt_cfg_dispose(&r);
        pt_arena_dispose(&a);
        json_decref(root);
    }
}

static void test_string_matcher_init(void)
{
    pt_arena_t a = {0};
    pt_string_matcher_t m;
    PT_CHECK_INT(pt_string_matcher_init(&m, &a, PT_STRING_SUFFIX, ".Example.COM", 1), 0);
    PT_CHECK_INT(pt_string_matcher_match(&m, "www.example.com", 15), 1);
    PT_CHECK_INT(pt_string_matcher_init(&m, &a, PT_STRING_PREFIX, "spiffe://", 0), 0);
    PT_CHECK_INT(pt_string_matcher_match(&m, "spiffe://x", 10), 1);
    PT_CHECK_INT(pt_string_matcher_match(&m, "SPIFFE://x", 10), 0);
    pt_arena_dispose(&a);
}

static void test_string_matcher_errors(void)
{
    static const struct {
        const char *json;
        const char *errs[3];
    } cases[] = {
        {"{}", {"m: one of exact, prefix, suffix, contains or safe_regex is required"}},
        {"{'exact':'a','prefix':'b'}",
         {"m: only one of exact, prefix, suffix, contains, safe_regex may be given (found "
          "exact, prefix)"}},
        {"{'prefix':''}", {"m.prefix: must not be empty"}},
        {"{'suffix':''}", {"m.suffix: must not be empty"}},
        {"{'contains':''}", {"m.contains: must not be empty"}},
        {"{'exact':1}", {"m.exact: 1 is not a string"}},
        {"{'safe_regex':{'regex':'(?=x)'}}",
         {"m.safe_regex.regex: \"(?=x)\" is not a valid regex: invalid perl operator: (?="}},
        {"{'safe_regex':{'regex':'a(b'}}",
         {"m.safe_regex.regex: \"a(b\" is not a valid regex: missing ): a(b"}},
        {"{'safe_regex':{}}", {"m.safe_regex.regex: is required"}},
        {"{'safe_regex':{'regex':''}}", {"m.safe_regex.regex: must not be empty"}},
        {"{'safe_regex':{'regex':'a','google_re2':{'max_program_size':'x'}}}",
         {"m.safe_regex.google_re2.max_program_size: \"x\" is not a non-negative integer"}},
        {"{'safe_regex':{'regex':'a','engine':1}}", {"m.safe_regex.engine: unknown field"}},
        {"{'exact':'a','custom':{}}", {"m.custom: field is not supported"}},
        {"{'exact':'a','foo':1}", {"m.foo: unknown field"}},
        {"{'exact':'a','ignore_case':'yes'}", {"m.ignore_case: \"yes\" is not a boolean"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *root;
        pt_cfg_t r;
        pt_arena_t a = {0};
        pt_string_matcher_t m;
        parse_matcher(STRING_MATCHER, cases[i].json, &a, &m, &r, &root);
        const char *want[4] = {cases[i].errs[0], cases[i].errs[1], cases[i].errs[2], NULL};
        if (!errors_are(&r, want))
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK(errors_are(&r, want));
        pt_cfg_dispose(&r);
        pt_arena_dispose(&a);
        json_decref(root);
    }
}

/* ---- HeaderMatcher ------------------------------------------------------------------- */

/* Headers from "name: value|name: value" (NULL: no header map at all). */
static pt_http_headers_t *headers_of(pt_arena_t *a, pt_http_headers_t *h, const char *spec)
{
    if (spec == NULL)
        return NULL;
    pt_http_headers_init(h, a);
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", spec);
    for (char *save = NULL, *e = strtok_r(buf, "|", &save); e; e = strtok_r(NULL, "|", &save)) {
        char *colon = strchr(e + 1, ':'); /* a pseudo-header's name starts with ':' */
        const char *v = colon[1] == ' ' ? colon + 2 : colon + 1;
        pt_http_headers_add(h, e, (size_t)(colon - e), v, strlen(v));
    }
    return h;
}

static void test_header_matcher(void)
{
    static const struct {
        const char *json, *headers;
        int want;
    } cases[] = {
        {"{'name':':method','exact_match':'GET'}", ":method: GET", 1},
        {"{'name':':method','exact_match':'GET'}", ":method: get", 0},
        {"{'name':'X-A','exact_match':'1'}", "x-a: 1", 1}, /* names are lowercased */
        {"{'name':'x-a','exact_match':''}", "x-a: any", 1}, /* empty: presence only */
        {"{'name':'x-a','exact_match':''}", "x-b: 1", 0},
        {"{'name':'x-a','prefix_match':'ab'}", "x-a: abc", 1},
        {"{'name':'x-a','suffix_match':'bc'}", "x-a: abc", 1},
        {"{'name':'x-a','suffix_match':'bc'}", "x-a: c", 0},
        {"{'name':'x-a','contains_match':'b'}", "x-a: abc", 1},
        {"{'name':'x-a','safe_regex_match':{'regex':'a.c'}}", "x-a: abc", 1},
        {"{'name':'x-a','safe_regex_match':{'regex':'a.c'}}", "x-a: abcd", 0},
        {"{'name':'x-a','string_match':{'exact':'ABC','ignore_case':true}}", "x-a: abc", 1},
        {"{'name':'x-n','range_match':{'start':'-3','end':3}}", "x-n:  -3 ", 1},
        {"{'name':'x-n','range_match':{'start':-3,'end':3}}", "x-n: 3", 0},
        {"{'name':'x-n','range_match':{'start':0,'end':10}}", "x-n: 9223372036854775808", 0},
        {"{'name':'x-n','range_match':{'start':0,'end':10}}", "x-n: 1.0", 0},
        /* values of a repeated header are joined with ',' */
        {"{'name':'x-a','exact_match':'1,2'}", "x-a: 1|x-b: 0|x-a: 2", 1},
        {"{'name':'x-a','exact_match':'1'}", "x-a: 1|x-a: 2", 0},
        /* presence */
        {"{'name':'x-a'}", "x-a: ", 1},
        {"{'name':'x-a'}", "x-b: 1", 0},
        {"{'name':'x-a','present_match':true}", "x-a: 1", 1},
        {"{'name':'x-a','present_match':false}", "x-b: 1", 1},
        {"{'name':'x-a','present_match':false}", "x-a: 1", 0},
        {"{'name':'x-a','present_match':false}", NULL, 1},
        /* invert_match: a missing header fails every matcher except a presence check that
         * asks for absence */
        {"{'name':'x-a','exact_match':'1','invert_match':true}", "x-a: 2", 1},
        {"{'name':'x-a','exact_match':'1','invert_match':true}", "x-a: 1", 0},
        {"{'name':'x-a','exact_match':'1','invert_match':true}", "x-b: 1", 0},
        {"{'name':'x-a','invert_match':true}", "x-b: 1", 1},
        {"{'name':'x-a','invert_match':true}", "x-a: 1", 0},
        {"{'name':'x-a','invert_match':true}", NULL, 1},
        {"{'name':'x-a','present_match':true,'invert_match':true}", "x-b: 1", 1},
        {"{'name':'x-a','present_match':false,'invert_match':true}", "x-b: 1", 0},
        {"{'name':'x-a','present_match':false,'invert_match':true}", "x-a: 1", 1},
        /* treat_missing_header_as_empty: a missing header is matched as "" ... */
        {"{'name':'x-a','string_match':{'exact':''},'treat_missing_header_as_empty':true}",
         "x-b: 1", 1},
        {"{'name':'x-a','prefix_match':'a','treat_missing_header_as_empty':true}", "x-b: 1", 0},
        {"{'name':'x-a','prefix_match':'a','invert_match':true,"
         "'treat_missing_header_as_empty':true}",
         NULL, 1},
        {"{'name':'x-n','range_match':{'start':0,'end':1},'treat_missing_header_as_empty':true}",
         "x-b: 1", 0},
        /* ... and a presence check answers present_match != invert_match, as in Envoy */
        {"{'name':'x-a','present_match':true,'treat_missing_header_as_empty':true}", "x-b: 1", 1},
        {"{'name':'x-a','present_match':false,'treat_missing_header_as_empty':true}", "x-b: 1",
         0},
        {"{'name':'x-a','treat_missing_header_as_empty':true}", "x-b: 1", 1},
        {"{'name':'x-a','invert_match':true,'treat_missing_header_as_empty':true}", "x-b: 1", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *root;
        pt_cfg_t r;
        pt_arena_t a = {0};
        pt_header_matcher_t m;
        pt_http_headers_t hs;
        int rc = parse_matcher(HEADER_MATCHER, cases[i].json, &a, &m, &r, &root);
        if (!pt_cfg_ok(&r))
            fprintf(stderr, "  case %zu: %s\n", i, r.errors[0]);
        PT_CHECK_INT(rc, 0);
        PT_CHECK(pt_cfg_ok(&r));
        int got = pt_header_matcher_match(&m, headers_of(&a, &hs, cases[i].headers));
        if (got != cases[i].want)
            fprintf(stderr, "  case %zu: %s on \"%s\"\n", i, cases[i].json,
                    cases[i].headers ? cases[i].headers : "(no headers)");
        PT_CHECK_INT(got, cases[i].want);
        pt_cfg_dispose(&r);
        pt_arena_dispose(&a);
        json_decref(root);
    }
}

static void test_header_matcher_errors(void)
{
    static const struct {
        const char *json;
        const char *errs[3];
    } cases[] = {
        {"{}", {"m.name: is required"}},
        {"{'name':''}", {"m.name: \"\" is not a valid header name"}},
        {"{'name':'a b'}", {"m.name: \"a b\" is not a valid header name"}},
        {"{'name':':'}", {"m.name: \":\" is not a valid header name"}},
        {"{'name':1}", {"m.name: 1 is not a string"}},
        {"{'name':'x','exact_match':'a','prefix_match':'b'}",
         {"m: only one of exact_match, safe_regex_match, range_match, present_match, "
          "prefix_match, suffix_match, contains_match, string_match may be given (found "
          "exact_match, prefix_match)"}},
        {"{'name':'x','prefix_match':''}", {"m.prefix_match: must not be empty"}},
        {"{'name':'x','suffix_match':''}", {"m.suffix_match: must not be empty"}},
        {"{'name':'x','contains_match':''}", {"m.contains_match: must not be empty"}},
        {"{'name':'x','range_match':{'start':'x','end':1.5}}",
         {"m.range_match.start: \"x\" is not an integer",
          "m.range_match.end: 1.5 is not an integer"}},
        {"{'name':'x','safe_regex_match':{'regex':'a(b'}}",
         {"m.safe_regex_match.regex: \"a(b\" is not a valid regex: missing ): a(b"}},
        {"{'name':'x','string_match':{}}",
         {"m.string_match: one of exact, prefix, suffix, contains or safe_regex is required"}},
        {"{'name':'x','present_match':'yes'}", {"m.present_match: \"yes\" is not a boolean"}},
        {"{'name':'x','invert_match':1}", {"m.invert_match: 1 is not a boolean"}},
        {"{'name':'x','colour':1}", {"m.colour: unknown field"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *root;
        pt_cfg_t r;
        pt_arena_t a = {0};
        pt_header_matcher_t m;
        int rc = parse_matcher(HEADER_MATCHER, cases[i].json, &a, &m, &r, &root);
        const char *want[4] = {cases[i].errs[0], cases[i].errs[1], cases[i].errs[2], NULL};
        if (!errors_are(&r, want))
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK(errors_are(&r, want));
        /* unknown fields are found when the object is left, after parsing */
        PT_CHECK_INT(rc, strstr(cases[i].json, "colour") ? 0 : -1);
        pt_cfg_dispose(&r);
        pt_arena_dispose(&a);
        json_decref(root);
    }
}

/* Many regexes in one arena: every one is freed with it (ASan checks). */
static void test_regex_arena_cleanup(void)
{
    pt_arena_t a = {0};
    for (int i = 0; i < 200; i++) {
        char pat[64], err[256];
        snprintf(pat, sizeof(pat), "/v%d/(\\d+)/[\\w-]+", i);
        PT_CHECK(pt_regex_compile(&a, pat, 0, err, sizeof(err)) != NULL);
    }
    /* A failed compile leaves nothing behind either. */
    char err[256];
    PT_CHECK(pt_regex_compile(&a, "(", 0, err, sizeof(err)) == NULL);
    pt_arena_dispose(&a);
}

/* ---- one regex, many threads ------------------------------------------------------- */

typedef struct worker_arg {
    const pt_regex_t *full, *search;
    int wrong; /* results that differ from the expected ones */
} worker_arg_t;

static void *regex_worker(void *p)
{
    worker_arg_t *w = p;
    pt_arena_t a = {0};
    for (int i = 0; i < 2000; i++) {
        char path[32];
        int n = snprintf(path, sizeof(path), "/v1/%d/item", i);
        w->wrong += !pt_regex_full_match(w->full, path, (size_t)n);
        w->wrong += pt_regex_full_match(w->full, "/v1/x/item", 10);
        size_t len = 0;
        char *out = pt_regex_replace_all(w->search, path, (size_t)n, "#\\1", &a, &len);
        char want[32];
        snprintf(want, sizeof(want), "/v#%d/item", i);
        w->wrong += out == NULL || strcmp(out, want) != 0;
    }
    pt_arena_dispose(&a);
    return NULL;
}

/* Workers share every compiled regex: RE2's matching is thread-safe. */
static void test_regex_shared_by_threads(void)
{
    pt_arena_t a = {0};
    char err[256];
    pt_regex_t *full = pt_regex_compile(&a, "/v1/\\d+/[a-z]+", 0, err, sizeof(err));
    pt_regex_t *search = pt_regex_compile(&a, "1/(\\d+)", 0, err, sizeof(err));
    PT_CHECK(full != NULL && search != NULL);
    worker_arg_t w[3] = {{full, search, 0}, {full, search, 0}, {full, search, 0}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        PT_CHECK_INT(pthread_create(&t[i], NULL, regex_worker, &w[i]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 3; i++)
        PT_CHECK_INT(w[i].wrong, 0);
    pt_arena_dispose(&a);
}

int main(void)
{
    PT_RUN(test_regex_full_match);
    PT_RUN(test_regex_not_nul_terminated);
    PT_RUN(test_regex_errors);
    PT_RUN(test_regex_program_size);
    PT_RUN(test_regex_replace_all);
    PT_RUN(test_regex_substitution_errors);
    PT_RUN(test_string_matcher);
    PT_RUN(test_string_matcher_init);
    PT_RUN(test_string_matcher_errors);
    PT_RUN(test_header_matcher);
    PT_RUN(test_header_matcher_errors);
    PT_RUN(test_regex_arena_cleanup);
    PT_RUN(test_regex_shared_by_threads);
    PT_TEST_EXIT();
}
