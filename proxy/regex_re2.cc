// The C API of proxy/regex.h over RE2, petrel's one C++ file: RE2 has no C interface, and
// running Envoy's regexes on RE2 itself is the only way to give them Envoy's exact meaning.
// Nothing here throws into C: allocation failures are caught and reported as errors.
extern "C" {
#include "proxy/arena.h" // a C header without C++ guards
}
#include "proxy/regex.h"

#include <re2/re2.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <cstdint>
#include <new>
#include <string>

struct pt_regex {
    re2::RE2 *re;
    const char *pattern; // in the arena
};

// Named groups may be written (?<name>...) as well as (?P<name>...) in the RE2 that Envoy
// builds with (from 2023); Debian 12's RE2 (2022-06) knows only the second spelling, so the
// first becomes it. Escapes and character classes are stepped over: "\(?<" and "[(?<]" stay.
static std::string with_python_named_groups(const char *p)
{
    std::string out;
    int in_class = 0;
    for (size_t i = 0; p[i] != '\0'; i++) {
        if (p[i] == '\\' && p[i + 1] != '\0') {
            out += p[i];
            out += p[++i];
            continue;
        }
        if (in_class) {
            in_class = p[i] != ']';
        } else if (p[i] == '[') {
            in_class = 1;
            if (p[i + 1] == '^')
                out += p[i++];
            if (p[i + 1] == ']') // a ']' right after '[' (or "[^") is a member
                out += p[i++];
        } else if (p[i] == '(' && p[i + 1] == '?' && p[i + 2] == '<' &&
                   (isalpha((unsigned char)p[i + 3]) || p[i + 3] == '_')) {
            out += "(?P<";
            i += 2;
            continue;
        }
        out += p[i];
    }
    return out;
}

static void regex_free(void *arg)
{
    delete static_cast<pt_regex *>(arg)->re;
}

extern "C" pt_regex_t *pt_regex_compile(pt_arena_t *a, const char *pattern,
                                        uint32_t max_program_size, char *err, size_t errlen)
{
    pt_regex_t *out = static_cast<pt_regex_t *>(pt_arena_alloc(a, sizeof(pt_regex_t)));
    const char *copy = pt_arena_strdup(a, pattern);
    if (out == nullptr || copy == nullptr) {
        std::snprintf(err, errlen, "cannot be compiled: out of memory");
        return nullptr;
    }
    re2::RE2 *re = nullptr;
    try {
        re = new re2::RE2(with_python_named_groups(pattern), re2::RE2::Quiet);
    } catch (...) { // std::bad_alloc
    }
    if (re == nullptr) {
        std::snprintf(err, errlen, "cannot be compiled: out of memory");
        return nullptr;
    }
    if (!re->ok()) {
        std::snprintf(err, errlen, "is not a valid regex: %s", re->error().c_str());
        delete re;
        return nullptr;
    }
    unsigned size = static_cast<unsigned>(re->ProgramSize());
    if (max_program_size > 0 && size > max_program_size) {
        std::snprintf(err, errlen, "is too complex: its RE2 program size %u is over %u", size,
                      static_cast<unsigned>(max_program_size));
        delete re;
        return nullptr;
    }
    out->re = re;
    out->pattern = copy;
    if (pt_arena_defer(a, regex_free, out) != 0) {
        delete re;
        std::snprintf(err, errlen, "cannot be compiled: out of memory");
        return nullptr;
    }
    return out;
}

extern "C" int pt_regex_full_match(const pt_regex_t *re, const char *s, size_t len)
{
    return re2::RE2::FullMatch(re2::StringPiece(s != nullptr ? s : "", len), *re->re);
}

extern "C" int pt_regex_partial_match(const pt_regex_t *re, const char *s, size_t len)
{
    return re2::RE2::PartialMatch(re2::StringPiece(s != nullptr ? s : "", len), *re->re);
}

extern "C" int pt_regex_search_groups(const pt_regex_t *re, const char *s, size_t len,
                                      size_t *spans, unsigned ngroups)
{
    re2::StringPiece text(s != nullptr ? s : "", len);
    re2::StringPiece stack[9], *sub = stack;
    unsigned have = static_cast<unsigned>(re->re->NumberOfCapturingGroups());
    unsigned n = (ngroups < have ? ngroups : have) + 1; // group 0 is the whole match
    for (unsigned g = n; g <= ngroups; g++) // groups the pattern does not have
        spans[2 * (g - 1)] = spans[2 * (g - 1) + 1] = SIZE_MAX;
    if (n > 9) {
        sub = new (std::nothrow) re2::StringPiece[n];
        if (sub == nullptr)
            return 0;
    }
    int ok = re->re->Match(text, 0, len, re2::RE2::UNANCHORED, sub, static_cast<int>(n));
    for (unsigned g = 1; ok && g < n; g++) {
        if (sub[g].data() == nullptr) {
            spans[2 * (g - 1)] = spans[2 * (g - 1) + 1] = SIZE_MAX;
        } else {
            spans[2 * (g - 1)] = static_cast<size_t>(sub[g].data() - text.data());
            spans[2 * (g - 1) + 1] = spans[2 * (g - 1)] + sub[g].size();
        }
    }
    if (sub != stack)
        delete[] sub;
    return ok;
}

extern "C" unsigned pt_regex_program_size(const pt_regex_t *re)
{
    return static_cast<unsigned>(re->re->ProgramSize());
}

extern "C" const char *pt_regex_pattern(const pt_regex_t *re)
{
    return re->pattern;
}

extern "C" unsigned pt_regex_groups(const pt_regex_t *re)
{
    return static_cast<unsigned>(re->re->NumberOfCapturingGroups());
}

extern "C" char *pt_regex_replace_all(const pt_regex_t *re, const char *s, size_t len,
                                      const char *sub, pt_arena_t *a, size_t *out_len)
{
    try {
        std::string str(s != nullptr ? s : "", len);
        re2::RE2::GlobalReplace(&str, *re->re, sub);
        char *out = pt_arena_strndup(a, str.data(), str.size());
        if (out != nullptr && out_len != nullptr)
            *out_len = str.size();
        return out;
    } catch (...) { // std::bad_alloc
        return nullptr;
    }
}
