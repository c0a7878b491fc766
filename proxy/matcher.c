#include "proxy/matcher.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/log.h"

/* ---- regexes ------------------------------------------------------------------------- */

static uint32_t program_size_error_level = 100;
static uint32_t program_size_warn_level = UINT32_MAX;

void pt_regex_set_program_size_limits(uint32_t error_level, uint32_t warn_level)
{
    program_size_error_level = error_level;
    program_size_warn_level = warn_level;
}

int pt_regex_check_substitution(const pt_regex_t *re, const char *sub, char *err, size_t errlen)
{
    for (const char *s = sub; *s; s++) {
        if (*s != '\\')
            continue;
        s++;
        if (*s == '\\')
            continue;
        if (*s >= '0' && *s <= '9') {
            unsigned n = (unsigned)(*s - '0');
            unsigned groups = pt_regex_groups(re);
            if (n > groups) {
                snprintf(err, errlen,
                         "refers to group \\%u, but the regex has %u capturing group%s", n,
                         groups, groups == 1 ? "" : "s");
                return -1;
            }
            continue;
        }
        snprintf(err, errlen, "%s",
                 *s == '\0' ? "must not end with a single '\\'"
                            : "'\\' must be followed by a digit or '\\'");
        return -1;
    }
    return 0;
}

/* ---- config parsing ------------------------------------------------------------------ */

pt_regex_t *pt_regex_parse(pt_cfg_t *r, pt_arena_t *a)
{
    uint64_t own = 0;
    if (pt_cfg_enter(r, "google_re2") > 0) {
        pt_cfg_uint(r, "max_program_size", &own, 0, 1, UINT32_MAX);
        pt_cfg_leave(r);
    }
    const char *pattern;
    int rc = pt_cfg_string(r, "regex", &pattern, NULL);
    if (rc == 0) {
        pt_cfg_error(r, "regex", "is required");
        return NULL;
    }
    if (rc < 0)
        return NULL;
    if (pattern[0] == '\0') {
        pt_cfg_error(r, "regex", "must not be empty");
        return NULL;
    }
    /* As Envoy: the pattern's own limit replaces the runtime levels. */
    uint32_t limit = own > 0 ? (uint32_t)own : program_size_error_level;
    char err[256], q[160];
    pt_regex_t *re = pt_regex_compile(a, pattern, limit, err, sizeof(err));
    if (re == NULL) {
        pt_cfg_quote(pattern, q, sizeof(q));
        pt_cfg_error(r, "regex", "%s %s%s", q, err,
                     strncmp(err, "is too complex", 14) != 0 ? ""
                     : own > 0 ? " (google_re2.max_program_size)"
                               : " (the runtime key re2.max_program_size.error_level)");
    } else if (own == 0 && pt_regex_program_size(re) > program_size_warn_level) {
        pt_cfg_quote(pattern, q, sizeof(q));
        pt_warn("%s.regex: %s: its RE2 program size %u is over "
                "re2.max_program_size.warn_level (%u)", pt_cfg_path(r), q,
                pt_regex_program_size(re), program_size_warn_level);
    }
    return re;
}

static const char *const string_matcher_unsupported[] = {"custom", NULL};

int pt_string_matcher_init(pt_string_matcher_t *m, pt_arena_t *a, pt_string_match_kind_t kind,
                           const char *value, int ignore_case)
{
    memset(m, 0, sizeof(*m));
    m->kind = kind;
    m->ignore_case = ignore_case;
    m->len = strlen(value);
    m->value = value;
    if (ignore_case) {
        char *low = pt_arena_strndup(a, value, m->len);
        if (low == NULL)
            return -1;
        for (size_t i = 0; i < m->len; i++)
            low[i] = (char)tolower((unsigned char)low[i]);
        m->value = low;
    }
    return 0;
}

int pt_string_matcher_parse(pt_cfg_t *r, pt_arena_t *a, pt_string_matcher_t *out)
{
    static const char *const kinds[] = {"exact",    "prefix",     "suffix",
                                        "contains", "safe_regex", NULL};
    size_t errors_before = r->nerrors;
    memset(out, 0, sizeof(*out));
    pt_cfg_unsupported(r, string_matcher_unsupported);
    int ignore_case;
    pt_cfg_bool(r, "ignore_case", &ignore_case, 0);

    int found = pt_cfg_oneof(r, kinds, 1);
    if (found < 0)
        return -1;
    if (found == PT_STRING_REGEX) {
        int rc = pt_cfg_enter(r, "safe_regex");
        if (rc > 0) {
            out->kind = PT_STRING_REGEX;
            out->ignore_case = ignore_case;
            out->regex = pt_regex_parse(r, a);
            pt_cfg_leave(r);
        }
        return r->nerrors == errors_before && out->regex != NULL ? 0 : -1;
    }
    const char *v;
    if (pt_cfg_string(r, kinds[found], &v, NULL) <= 0)
        return -1;
    if (v[0] == '\0' && found != PT_STRING_EXACT) {
        pt_cfg_error(r, kinds[found], "must not be empty");
        return -1;
    }
    const char *copy = pt_arena_strdup(a, v);
    if (copy == NULL ||
        pt_string_matcher_init(out, a, (pt_string_match_kind_t)found, copy, ignore_case) != 0) {
        pt_cfg_error(r, kinds[found], "out of memory");
        return -1;
    }
    return r->nerrors == errors_before ? 0 : -1;
}

/* s[0..n) equals lowercase v[0..n) ignoring the case of s. */
static int eq_icase(const char *s, const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((char)tolower((unsigned char)s[i]) != v[i])
            return 0;
    return 1;
}

int pt_string_matcher_match(const pt_string_matcher_t *m, const char *s, size_t len)
{
    if (s == NULL)
        s = "";
    switch (m->kind) {
    case PT_STRING_EXACT:
        return len == m->len &&
               (m->ignore_case ? eq_icase(s, m->value, len) : memcmp(s, m->value, len) == 0);
    case PT_STRING_PREFIX:
        return len >= m->len &&
               (m->ignore_case ? eq_icase(s, m->value, m->len) : memcmp(s, m->value, m->len) == 0);
    case PT_STRING_SUFFIX: {
        if (len < m->len)
            return 0;
        const char *t = s + len - m->len;
        return m->ignore_case ? eq_icase(t, m->value, m->len) : memcmp(t, m->value, m->len) == 0;
    }
    case PT_STRING_CONTAINS:
        if (m->len == 0)
            return 1;
        if (len < m->len)
            return 0;
        if (!m->ignore_case)
            return memmem(s, len, m->value, m->len) != NULL;
        for (size_t i = 0; i + m->len <= len; i++)
            if (eq_icase(s + i, m->value, m->len))
                return 1;
        return 0;
    case PT_STRING_REGEX:
        return m->regex != NULL && pt_regex_full_match(m->regex, s, len);
    }
    return 0;
}

/* ---- HeaderMatcher --------------------------------------------------------------------- */

/* s copied into a, lowercased when `lower`; an "out of memory" error at the current object
 * when that fails. */
static const char *cfg_strdup(pt_cfg_t *r, pt_arena_t *a, const char *s, int lower)
{
    char *d = pt_arena_strdup(a, s);
    if (d == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    for (char *p = d; lower && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

int pt_header_matcher_parse(pt_cfg_t *r, pt_arena_t *a, pt_header_matcher_t *hm)
{
    static const char *const kinds[] = {"exact_match",    "safe_regex_match", "range_match",
                                        "present_match",  "prefix_match",     "suffix_match",
                                        "contains_match", "string_match",     NULL};
    size_t errors_before = r->nerrors;
    memset(hm, 0, sizeof(*hm));
    const char *name;
    int rc = pt_cfg_string(r, "name", &name, NULL);
    if (rc == 0) {
        pt_cfg_error(r, "name", "is required");
    } else if (rc > 0) {
        if (!pt_http_header_name_valid(name, 1)) {
            char q[300];
            pt_cfg_quote(name, q, sizeof(q));
            pt_cfg_error(r, "name", "%s is not a valid header name", q);
        }
        hm->name = cfg_strdup(r, a, name, 1);
    }
    pt_cfg_bool(r, "invert_match", &hm->invert, 0);
    pt_cfg_bool(r, "treat_missing_header_as_empty", &hm->treat_missing_as_empty, 0);

    /* kinds[] is in pt_header_match_kind_t order. No specifier is a presence check (so
     * invert_match asks for absence). */
    int found = pt_cfg_oneof(r, kinds, 0);
    hm->kind = found >= 0 ? (pt_header_match_kind_t)found : PT_HEADER_MATCH_PRESENT;
    hm->present = found == PT_CFG_ONEOF_NONE;
    const char *s;
    switch (found) {
    case PT_HEADER_MATCH_EXACT:
    case PT_HEADER_MATCH_PREFIX:
    case PT_HEADER_MATCH_SUFFIX:
    case PT_HEADER_MATCH_CONTAINS:
        if (pt_cfg_string(r, kinds[found], &s, "") > 0) {
            /* An empty exact_match checks presence; the others would match anything. */
            if (s[0] == '\0' && found != PT_HEADER_MATCH_EXACT)
                pt_cfg_error(r, kinds[found], "must not be empty");
            hm->value = cfg_strdup(r, a, s, 0);
            hm->value_len = strlen(s);
        }
        break;
    case PT_HEADER_MATCH_REGEX:
        if (pt_cfg_enter(r, "safe_regex_match") > 0) {
            hm->regex = pt_regex_parse(r, a);
            pt_cfg_leave(r);
        }
        break;
    case PT_HEADER_MATCH_RANGE:
        if (pt_cfg_enter(r, "range_match") > 0) {
            /* Int64Range: start inclusive, end exclusive. */
            pt_cfg_int64(r, "start", &hm->range_start);
            pt_cfg_int64(r, "end", &hm->range_end);
            pt_cfg_leave(r);
        }
        break;
    case PT_HEADER_MATCH_PRESENT:
        pt_cfg_bool(r, "present_match", &hm->present, 0);
        break;
    case PT_HEADER_MATCH_STRING:
        if (pt_cfg_enter(r, "string_match") > 0) {
            pt_string_matcher_parse(r, a, &hm->string);
            pt_cfg_leave(r);
        }
        break;
    }
    return r->nerrors == errors_before ? 0 : -1;
}

/* The value of header `name`, every value joined with ',' as Envoy does, or NULL. */
static const char *joined_header_value(const pt_http_headers_t *h, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    const pt_http_header_t *first = NULL;
    for (uint32_t i = 0; i < h->count; i++) {
        const pt_http_header_t *e = &h->items[i];
        if (e->name_len != nl || memcmp(e->name, name, nl) != 0)
            continue;
        if (first != NULL) {
            const char *j = pt_http_headers_get_joined(h, name);
            *len = j ? strlen(j) : 0;
            return j;
        }
        first = e;
    }
    if (first == NULL)
        return NULL;
    *len = first->value_len;
    return first->value;
}

/* absl::SimpleAtoi as Envoy's range match uses it: optional surrounding whitespace and
 * sign, decimal digits, no overflow. */
static int parse_int64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    while (n > i && isspace((unsigned char)s[n - 1]))
        n--;
    int neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    if (i == n)
        return 0;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
        return 0;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

int pt_header_matcher_match(const pt_header_matcher_t *hm, const pt_http_headers_t *h)
{
    size_t len = 0;
    const char *v = h != NULL && hm->name != NULL ? joined_header_value(h, hm->name, &len) : NULL;
    if (v == NULL && !hm->treat_missing_as_empty)
        return hm->kind == PT_HEADER_MATCH_PRESENT && (hm->invert ? hm->present : !hm->present);
    if (v == NULL) {
        v = "";
        len = 0;
    }
    int match = 0;
    switch (hm->kind) {
    case PT_HEADER_MATCH_EXACT:
        match = hm->value_len == 0 || (len == hm->value_len && memcmp(v, hm->value, len) == 0);
        break;
    case PT_HEADER_MATCH_REGEX:
        match = hm->regex != NULL && pt_regex_full_match(hm->regex, v, len);
        break;
    case PT_HEADER_MATCH_RANGE: {
        int64_t x;
        match = parse_int64(v, len, &x) && x >= hm->range_start && x < hm->range_end;
        break;
    }
    case PT_HEADER_MATCH_PRESENT:
        match = hm->present;
        break;
    case PT_HEADER_MATCH_PREFIX:
        match = len >= hm->value_len && memcmp(v, hm->value, hm->value_len) == 0;
        break;
    case PT_HEADER_MATCH_SUFFIX:
        match =
            len >= hm->value_len && memcmp(v + len - hm->value_len, hm->value, hm->value_len) == 0;
        break;
    case PT_HEADER_MATCH_CONTAINS:
        match = memmem(v, len, hm->value, hm->value_len) != NULL;
        break;
    case PT_HEADER_MATCH_STRING:
        match = pt_string_matcher_match(&hm->string, v, len);
        break;
    }
    return match != hm->invert;
}
