#include "proxy/matcher.h"

#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* POSIX groups per regex (ours plus the ones (?:...) and UTF-8 atoms add); bounds the
 * submatch array that replace_all keeps on the stack. */
#define MAX_GROUPS 255
/* RE2's limit on a counted repetition {n,m}. */
#define MAX_REPEAT 1000

/* glibc's regexec takes a lock inside the regex_t for the whole match, so workers sharing
 * one compiled regex would take turns. Each worker therefore compiles its own copy the first
 * time it uses a regex (copies[slot]); the main thread and threads without a slot use the
 * shared one. Only the worker that owns a slot touches it; the copies are freed with the
 * snapshot's arena, after every worker has let go of the snapshot. */
typedef struct regex_copy {
    regex_t full, search;
    int state; /* 0 not yet compiled, 1 ready, -1 failed (use the shared one) */
} regex_copy_t;

struct pt_regex {
    regex_t full;   /* ^(translated)$ with REG_NOSUB: full matching */
    regex_t search; /* translated, with submatches: replace_all (PT_REGEX_SEARCH only) */
    int has_search;
    char *full_src;        /* the translated patterns, for the per-worker copies */
    char *search_src;
    regex_copy_t *copies;  /* [ncopies], or NULL */
    unsigned ncopies;
    const char *pattern;
    unsigned groups;       /* capturing groups as RE2 counts them */
    unsigned nmatch;       /* submatches replace_all needs (1 + highest mapped group) */
    unsigned char map[10]; /* RE2 group n (0..9, what a rewrite can name) -> POSIX group */
};

/* ---- RE2 -> POSIX ERE translation ------------------------------------------------------ */

typedef struct xlat {
    char *out;
    size_t len, cap;
    int oom;
    unsigned groups;       /* RE2 capturing groups */
    unsigned posix_groups; /* every '(' we emit */
    unsigned char map[10];
    char *err;
    size_t errlen;
} xlat_t;

/* A byte set: what one bracket expression or class escape stands for. */
typedef struct byteset {
    unsigned char bits[32];
} byteset_t;

static void bs_add(byteset_t *b, unsigned c)
{
    b->bits[c >> 3] |= (unsigned char)(1u << (c & 7));
}

static int bs_has(const byteset_t *b, unsigned c)
{
    return (b->bits[c >> 3] >> (c & 7)) & 1;
}

static void bs_range(byteset_t *b, unsigned lo, unsigned hi)
{
    for (unsigned c = lo; c <= hi; c++)
        bs_add(b, c);
}

/* Adds `src` (or its complement over bytes 1..255 when negate) to dst. */
static void bs_merge(byteset_t *dst, const byteset_t *src, int negate)
{
    for (unsigned c = 1; c < 256; c++)
        if (bs_has(src, c) != negate)
            bs_add(dst, c);
}

static int bs_empty(const byteset_t *b)
{
    for (unsigned i = 0; i < 32; i++)
        if (b->bits[i])
            return 0;
    return 1;
}

/* RE2's Perl classes, ASCII only as in RE2: \d [0-9], \w [0-9A-Za-z_], \s [\t\n\f\r ]. */
static void bs_perl_class(byteset_t *b, char k)
{
    memset(b, 0, sizeof(*b));
    switch (k) {
    case 'd':
        bs_range(b, '0', '9');
        break;
    case 'w':
        bs_range(b, '0', '9');
        bs_range(b, 'A', 'Z');
        bs_range(b, 'a', 'z');
        bs_add(b, '_');
        break;
    case 's':
        bs_add(b, '\t');
        bs_add(b, '\n');
        bs_add(b, '\f');
        bs_add(b, '\r');
        bs_add(b, ' ');
        break;
    }
}

/* POSIX classes inside [...] as RE2 defines them (ASCII). 0 or -1 for an unknown name. */
static int bs_posix_class(byteset_t *b, const char *name, size_t n)
{
    static const struct {
        const char *name;
        int (*fn)(int);
    } classes[] = {
        {"alnum", isalnum}, {"alpha", isalpha}, {"blank", isblank}, {"cntrl", iscntrl},
        {"digit", isdigit}, {"graph", isgraph}, {"lower", islower}, {"print", isprint},
        {"punct", ispunct}, {"space", isspace}, {"upper", isupper}, {"xdigit", isxdigit},
    };
    memset(b, 0, sizeof(*b));
    if (n == 5 && memcmp(name, "ascii", 5) == 0) {
        bs_range(b, 1, 0x7f);
        return 0;
    }
    if (n == 4 && memcmp(name, "word", 4) == 0) {
        bs_perl_class(b, 'w');
        return 0;
    }
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
        if (strlen(classes[i].name) == n && memcmp(classes[i].name, name, n) == 0) {
            /* The ctype functions in the C locale, restricted to ASCII like RE2. */
            for (unsigned c = 1; c < 0x80; c++)
                if (classes[i].fn((int)c))
                    bs_add(b, c);
            return 0;
        }
    }
    return -1;
}

static void put(xlat_t *x, char c)
{
    if (x->oom)
        return;
    if (x->len + 1 >= x->cap) {
        size_t ncap = x->cap ? x->cap * 2 : 64;
        char *n = realloc(x->out, ncap);
        if (n == NULL) {
            x->oom = 1;
            return;
        }
        x->out = n;
        x->cap = ncap;
    }
    x->out[x->len++] = c;
    x->out[x->len] = '\0';
}

static void put_str(xlat_t *x, const char *s)
{
    while (*s)
        put(x, *s++);
}

static int invalid(xlat_t *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int invalid(xlat_t *x, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(x->err, x->errlen, "is not a valid regex: %s", msg);
    return -1;
}

static int unsupported(xlat_t *x, const char *what)
{
    snprintf(x->err, x->errlen,
             "uses RE2 syntax that petrel's POSIX regex engine does not support: %s", what);
    return -1;
}

/* A literal byte outside brackets, escaped when ERE gives it a meaning. */
static void put_literal(xlat_t *x, unsigned char c)
{
    if (strchr(".[]()*+?{}|^$\\", c) != NULL && c != '\0')
        put(x, '\\');
    put(x, (char)c);
}

/* Emits a bracket expression for set (negated: [^set]). POSIX gives ']' '^' '-' and '['
 * (before '.', ':', '=') special meanings inside brackets and has no escapes there, so the
 * set is written in a canonical order where each is literal: ']' first, ordinary bytes as
 * ranges, then '[', '^' and '-' last. */
static int put_set(xlat_t *x, const byteset_t *set, int negated)
{
    if (bs_empty(set)) {
        if (negated) { /* [^] of nothing: any byte */
            put(x, '.');
            return 0;
        }
        return invalid(x, "empty character class");
    }
    int rb = bs_has(set, ']'), caret = bs_has(set, '^'), dash = bs_has(set, '-');
    int lb = bs_has(set, '[');
    byteset_t ord = *set;
    ord.bits[']' >> 3] &= (unsigned char)~(1u << (']' & 7));
    ord.bits['^' >> 3] &= (unsigned char)~(1u << ('^' & 7));
    ord.bits['-' >> 3] &= (unsigned char)~(1u << ('-' & 7));
    ord.bits['[' >> 3] &= (unsigned char)~(1u << ('[' & 7));
    int only_caret = caret && !rb && !lb && bs_empty(&ord);
    if (only_caret && !dash && !negated) {
        put_str(x, "\\^");
        return 0;
    }
    put(x, '[');
    if (negated)
        put(x, '^');
    if (rb)
        put(x, ']');
    for (unsigned c = 1; c < 256; c++) {
        if (!bs_has(&ord, c))
            continue;
        unsigned e = c;
        while (e + 1 < 256 && bs_has(&ord, e + 1))
            e++;
        put(x, (char)c);
        if (e >= c + 2) {
            put(x, '-');
            put(x, (char)e);
        } else if (e == c + 1) {
            put(x, (char)e);
        }
        c = e;
    }
    if (lb)
        put(x, '[');
    if (only_caret && dash) { /* "[-^]": '^' must not come first */
        put_str(x, "-^");
        dash = 0;
    } else if (caret) {
        put(x, '^');
    }
    if (dash)
        put(x, '-');
    put(x, ']');
    return 0;
}

/* What one escape (after the backslash) stands for. */
typedef struct term {
    int kind; /* 0 literal byte, 1 class (set/negated), 2 anchor (\A or \z) */
    unsigned char c;
    byteset_t set;
    int negated;
} term_t;

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Parses the escape at p[*i] (just after a backslash). */
static int parse_escape(xlat_t *x, const char *p, size_t *i, int in_class, term_t *t)
{
    memset(t, 0, sizeof(*t));
    unsigned char c = (unsigned char)p[*i];
    if (c == '\0')
        return invalid(x, "trailing \\");
    (*i)++;
    char tok[64];
    switch (c) {
    case 'd':
    case 'w':
    case 's':
    case 'D':
    case 'W':
    case 'S':
        t->kind = 1;
        bs_perl_class(&t->set, (char)tolower(c));
        t->negated = isupper(c) != 0;
        return 0;
    case 'A':
    case 'z':
        if (in_class)
            return invalid(x, "invalid escape sequence: \\%c", c);
        t->kind = 2;
        t->c = c;
        return 0;
    case 'b':
    case 'B':
    case 'C':
        snprintf(tok, sizeof(tok), "\\%c", c);
        return unsupported(x, tok);
    case 'Q':
    case 'E':
        return unsupported(x, "\\Q...\\E");
    case 'p':
    case 'P':
        if (p[*i] == '{') {
            const char *e = strchr(p + *i, '}');
            int n = e ? (int)(e - (p + *i)) + 1 : 1;
            snprintf(tok, sizeof(tok), "\\%c%.*s", c, n > 16 ? 16 : n, p + *i);
        } else {
            snprintf(tok, sizeof(tok), "\\%c%c", c, p[*i] ? p[*i] : ' ');
        }
        return unsupported(x, tok);
    case 'n':
        t->c = '\n';
        return 0;
    case 't':
        t->c = '\t';
        return 0;
    case 'r':
        t->c = '\r';
        return 0;
    case 'f':
        t->c = '\f';
        return 0;
    case 'v':
        t->c = '\v';
        return 0;
    case 'a':
        t->c = '\a';
        return 0;
    case 'x': {
        unsigned long v = 0;
        int digits = 0;
        if (p[*i] == '{') {
            size_t j = *i + 1;
            while (hexval((unsigned char)p[j]) >= 0 && digits < 8) {
                v = v * 16 + (unsigned long)hexval((unsigned char)p[j++]);
                digits++;
            }
            if (digits == 0 || p[j] != '}')
                return invalid(x, "invalid escape sequence: \\x%.*s", (int)(j - *i + 1), p + *i);
            *i = j + 1;
        } else {
            if (hexval((unsigned char)p[*i]) < 0 || hexval((unsigned char)p[*i + 1]) < 0)
                return invalid(x, "invalid escape sequence: \\x%.2s", p + *i);
            v = (unsigned long)(hexval((unsigned char)p[*i]) * 16 +
                                hexval((unsigned char)p[*i + 1]));
            *i += 2;
        }
        if (v == 0)
            return unsupported(x, "\\x00 (a NUL byte)");
        if (v > 0x7f) {
            snprintf(tok, sizeof(tok), "\\x{%lx} (beyond ASCII)", v);
            return unsupported(x, tok);
        }
        t->c = (unsigned char)v;
        return 0;
    }
    default:
        break;
    }
    if (c >= '0' && c <= '9') {
        snprintf(tok, sizeof(tok), "\\%c (backreference or octal escape)", c);
        return unsupported(x, tok);
    }
    /* As in RE2: an escaped ASCII character that is not a letter or digit is itself. */
    if (c < 0x80 && !isalnum(c)) {
        t->c = c;
        return 0;
    }
    if (c < 0x80 && isprint(c))
        return invalid(x, "invalid escape sequence: \\%c", c);
    return invalid(x, "invalid escape sequence");
}

/* Parses a bracket expression starting at p[*i] == '[' into one POSIX bracket expression. */
static int parse_class(xlat_t *x, const char *p, size_t *i)
{
    size_t start = *i;
    (*i)++;
    int negated = 0;
    if (p[*i] == '^') {
        negated = 1;
        (*i)++;
    }
    byteset_t set;
    memset(&set, 0, sizeof(set));
    for (int first = 1;; first = 0) {
        unsigned char c = (unsigned char)p[*i];
        if (c == '\0')
            return invalid(x, "missing ]: %s", p + start);
        if (c == ']' && !first) {
            (*i)++;
            break;
        }
        if (c == '[' && p[*i + 1] == ':') {
            const char *end = strstr(p + *i + 2, ":]");
            if (end != NULL) {
                const char *name = p + *i + 2;
                int neg = name[0] == '^';
                byteset_t cls;
                if (bs_posix_class(&cls, name + neg, (size_t)(end - name - neg)) != 0)
                    return invalid(x, "invalid character class range: %.*s",
                                   (int)(end + 2 - (p + *i)), p + *i);
                bs_merge(&set, &cls, neg);
                *i = (size_t)(end + 2 - p);
                if (p[*i] == '-' && p[*i + 1] != ']' && p[*i + 1] != '\0')
                    return invalid(x, "bad character class range in %s", p + start);
                continue;
            }
        }
        term_t lo;
        if (c >= 0x80)
            return unsupported(x, "a non-ASCII character inside [...]");
        if (c == '\\') {
            (*i)++;
            if (parse_escape(x, p, i, 1, &lo) != 0)
                return -1;
        } else {
            memset(&lo, 0, sizeof(lo));
            lo.c = c;
            (*i)++;
        }
        int is_range = p[*i] == '-' && p[*i + 1] != ']' && p[*i + 1] != '\0';
        if (lo.kind == 1) {
            if (is_range)
                return invalid(x, "bad character class range in %s", p + start);
            bs_merge(&set, &lo.set, lo.negated);
            continue;
        }
        if (!is_range) {
            bs_add(&set, lo.c);
            continue;
        }
        (*i)++; /* the '-' */
        term_t hi;
        unsigned char h = (unsigned char)p[*i];
        if (h >= 0x80)
            return unsupported(x, "a non-ASCII character inside [...]");
        if (h == '\\') {
            (*i)++;
            if (parse_escape(x, p, i, 1, &hi) != 0)
                return -1;
            if (hi.kind != 0)
                return invalid(x, "bad character class range in %s", p + start);
        } else {
            memset(&hi, 0, sizeof(hi));
            hi.c = h;
            (*i)++;
        }
        if (hi.c < lo.c)
            return invalid(x, "bad character class range: %c-%c", lo.c, hi.c);
        bs_range(&set, lo.c, hi.c);
    }
    return put_set(x, &set, negated);
}

/* Length of a valid RE2 counted repetition at p ("{2}", "{2,}", "{2,5}"), 0 if p does not
 * start one (RE2 then takes the '{' literally). */
static size_t parse_repeat(const char *p, long *min, long *max)
{
    size_t i = 1;
    if (!isdigit((unsigned char)p[i]))
        return 0;
    long a = 0, b;
    while (isdigit((unsigned char)p[i])) {
        if (a <= 100000)
            a = a * 10 + (p[i] - '0');
        i++;
    }
    b = a;
    if (p[i] == ',') {
        i++;
        if (isdigit((unsigned char)p[i])) {
            b = 0;
            while (isdigit((unsigned char)p[i])) {
                if (b <= 100000)
                    b = b * 10 + (p[i] - '0');
                i++;
            }
        } else {
            b = -1;
        }
    }
    if (p[i] != '}')
        return 0;
    *min = a;
    *max = b;
    return i + 1;
}

static size_t utf8_len(unsigned char c)
{
    if (c >= 0xf0)
        return 4;
    if (c >= 0xe0)
        return 3;
    if (c >= 0xc0)
        return 2;
    return 1;
}

static int opens_group(xlat_t *x, int capturing)
{
    if (++x->posix_groups > MAX_GROUPS)
        return invalid(x, "too many groups (at most %d)", MAX_GROUPS);
    if (capturing) {
        x->groups++;
        if (x->groups <= 9)
            x->map[x->groups] = (unsigned char)x->posix_groups;
    }
    put(x, '(');
    return 0;
}

static int is_repeat_at(const char *p)
{
    long a, b;
    return *p == '*' || *p == '+' || *p == '?' || (*p == '{' && parse_repeat(p, &a, &b) > 0);
}

/* Translates RE2 pattern p into POSIX ERE, appending to x->out. */
static int translate(xlat_t *x, const char *p)
{
    size_t i = 0;
    int atom = 0;     /* something repeatable precedes */
    int repeated = 0; /* ... and it was a repetition */
    char last_rep[24] = "";
    unsigned depth = 0;
    while (p[i] != '\0') {
        unsigned char c = (unsigned char)p[i];
        switch (c) {
        case '\\': {
            term_t t;
            i++;
            if (parse_escape(x, p, &i, 0, &t) != 0)
                return -1;
            if (t.kind == 2) {
                put(x, t.c == 'A' ? '^' : '$');
                atom = 0;
            } else {
                if (t.kind == 1) {
                    if (put_set(x, &t.set, t.negated) != 0)
                        return -1;
                } else {
                    put_literal(x, t.c);
                }
                atom = 1;
            }
            repeated = 0;
            break;
        }
        case '[':
            if (parse_class(x, p, &i) != 0)
                return -1;
            atom = 1;
            repeated = 0;
            break;
        case '(':
            if (p[i + 1] == '?') {
                if (p[i + 2] == ':') {
                    if (opens_group(x, 0) != 0)
                        return -1;
                    i += 3;
                } else if ((p[i + 2] == 'P' && p[i + 3] == '<') ||
                           (p[i + 2] == '<' && p[i + 3] != '=' && p[i + 3] != '!')) {
                    /* Named group: a capture; the name does not matter to a rewrite. */
                    size_t j = i + (p[i + 2] == 'P' ? 4 : 3), n0 = j;
                    while (isalnum((unsigned char)p[j]) || p[j] == '_')
                        j++;
                    if (j == n0 || p[j] != '>')
                        return invalid(x, "invalid named capture group");
                    if (opens_group(x, 1) != 0)
                        return -1;
                    i = j + 1;
                } else {
                    char tok[24];
                    size_t n = 2;
                    while (p[i + n] && p[i + n] != ')' && p[i + n] != ':' && n < 12)
                        n++;
                    if (p[i + n] == ')' || p[i + n] == ':')
                        n++;
                    snprintf(tok, sizeof(tok), "%.*s", (int)n, p + i);
                    return unsupported(x, tok);
                }
            } else {
                if (opens_group(x, 1) != 0)
                    return -1;
                i++;
            }
            depth++;
            atom = 0;
            repeated = 0;
            break;
        case ')':
            if (depth == 0)
                return invalid(x, "unexpected ): %s", p);
            depth--;
            put(x, ')');
            i++;
            atom = 1;
            repeated = 0;
            break;
        case '|':
            put(x, '|');
            i++;
            atom = 0;
            repeated = 0;
            break;
        case '*':
        case '+':
        case '?':
            if (repeated) {
                char tok[64];
                if (c == '?') {
                    snprintf(tok, sizeof(tok), "lazy quantifier %s?", last_rep);
                    return unsupported(x, tok);
                }
                return invalid(x, "bad repetition operator: %s%c", last_rep, c);
            }
            if (!atom)
                return invalid(x, "missing argument to repetition operator: %c", c);
            put(x, (char)c);
            snprintf(last_rep, sizeof(last_rep), "%c", c);
            i++;
            repeated = 1;
            break;
        case '{': {
            long mn, mx;
            size_t n = parse_repeat(p + i, &mn, &mx);
            if (n == 0) { /* not a repetition: RE2 takes '{' literally */
                put_str(x, "\\{");
                i++;
                atom = 1;
                repeated = 0;
                break;
            }
            if (repeated) {
                char tok[64];
                snprintf(tok, sizeof(tok), "%s%.*s", last_rep, (int)(n > 12 ? 12 : n), p + i);
                return invalid(x, "bad repetition operator: %s", tok);
            }
            if (!atom)
                return invalid(x, "missing argument to repetition operator: %.*s", (int)n, p + i);
            if (mn > MAX_REPEAT || mx > MAX_REPEAT || (mx >= 0 && mx < mn))
                return invalid(x, "bad repetition operator: %.*s", (int)n, p + i);
            for (size_t k = 0; k < n; k++)
                put(x, p[i + k]);
            snprintf(last_rep, sizeof(last_rep), "%.*s", (int)(n > 20 ? 20 : n), p + i);
            i += n;
            repeated = 1;
            break;
        }
        case '^':
        case '$':
            put(x, (char)c);
            i++;
            atom = 0;
            repeated = 0;
            break;
        default:
            if (c >= 0xc0) {
                /* A UTF-8 character is several bytes to POSIX: group it when a repetition
                 * follows, so "é+" repeats the character, not its last byte. */
                size_t n = utf8_len(c), k;
                for (k = 1; k < n && ((unsigned char)p[i + k] & 0xc0) == 0x80; k++)
                    ;
                n = k;
                int group = is_repeat_at(p + i + n);
                if (group && opens_group(x, 0) != 0)
                    return -1;
                for (k = 0; k < n; k++)
                    put(x, p[i + k]);
                if (group)
                    put(x, ')');
                i += n;
            } else {
                put(x, (char)c);
                i++;
            }
            atom = 1;
            repeated = 0;
            break;
        }
    }
    if (depth > 0)
        return invalid(x, "missing ): %s", p);
    return 0;
}

static void regex_free_full(void *arg)
{
    regfree(&((pt_regex_t *)arg)->full);
}

static void regex_free_search(void *arg)
{
    regfree(&((pt_regex_t *)arg)->search);
}

/* ---- per-worker copies ----------------------------------------------------------------- */

static unsigned worker_slots;                 /* set once at start, before any config */
static _Thread_local unsigned thread_slot;    /* worker index + 1; 0: no private copies */

void pt_regex_set_worker_slots(unsigned n)
{
    worker_slots = n;
}

void pt_regex_thread_init(unsigned worker_index)
{
    thread_slot = worker_index + 1;
}

static void regex_free_copies(void *arg)
{
    pt_regex_t *re = arg;
    for (unsigned i = 0; i < re->ncopies; i++) {
        regex_copy_t *c = &re->copies[i];
        if (c->state == 1) {
            regfree(&c->full);
            if (re->has_search)
                regfree(&c->search);
        }
    }
    free(re->copies);
}

/* This thread's copy of re, compiled on first use; NULL means use the shared one. */
static regex_copy_t *regex_copy(const pt_regex_t *re)
{
    unsigned slot = thread_slot;
    if (slot == 0 || slot > re->ncopies)
        return NULL;
    regex_copy_t *c = &re->copies[slot - 1];
    if (c->state == 0) {
        /* The pattern compiled once already, so only memory can fail here. */
        c->state = -1;
        if (regcomp(&c->full, re->full_src, REG_EXTENDED | REG_NOSUB) == 0) {
            if (!re->has_search || regcomp(&c->search, re->search_src, REG_EXTENDED) == 0)
                c->state = 1;
            else
                regfree(&c->full);
        }
    }
    return c->state == 1 ? c : NULL;
}

unsigned pt_regex_copies_compiled(const pt_regex_t *re)
{
    unsigned n = 0;
    for (unsigned i = 0; i < re->ncopies; i++)
        n += re->copies[i].state == 1;
    return n;
}

pt_regex_t *pt_regex_compile(pt_arena_t *a, const char *pattern, unsigned flags, char *err,
                             size_t errlen)
{
    xlat_t x;
    memset(&x, 0, sizeof(x));
    x.err = err;
    x.errlen = errlen;
    pt_regex_t *re = NULL;
    /* Anchoring the whole pattern gives full-match semantics without relying on the engine's
     * leftmost-longest rule; the translator has checked the parentheses balance, so the
     * wrapper cannot change the pattern's structure. */
    put_str(&x, "^(");
    if (translate(&x, pattern) != 0)
        goto fail;
    put_str(&x, ")$");
    if (x.oom) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    re = pt_arena_alloc(a, sizeof(*re));
    const char *pat = re ? pt_arena_strdup(a, pattern) : NULL;
    if (pat == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    re->pattern = pat;
    re->groups = x.groups;
    memcpy(re->map, x.map, sizeof(re->map));
    re->nmatch = 1;
    for (unsigned g = 1; g <= 9 && g <= x.groups; g++)
        if (x.map[g] + 1u > re->nmatch)
            re->nmatch = x.map[g] + 1u;
    int rc = regcomp(&re->full, x.out, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[160];
        regerror(rc, &re->full, msg, sizeof(msg));
        snprintf(err, errlen, "is not a valid regex: %s", msg);
        goto fail;
    }
    if (pt_arena_defer(a, regex_free_full, re) != 0) {
        regfree(&re->full);
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (flags & PT_REGEX_SEARCH) {
        x.out[x.len - 2] = '\0'; /* drop ")$" and skip "^(" */
        rc = regcomp(&re->search, x.out + 2, REG_EXTENDED);
        if (rc != 0) {
            char msg[160];
            regerror(rc, &re->search, msg, sizeof(msg));
            snprintf(err, errlen, "is not a valid regex: %s", msg);
            goto fail;
        }
        if (pt_arena_defer(a, regex_free_search, re) != 0) {
            regfree(&re->search);
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        re->has_search = 1;
        re->search_src = pt_arena_strdup(a, x.out + 2);
        x.out[x.len - 2] = ')';
    }
    if (worker_slots > 1) {
        re->full_src = pt_arena_strdup(a, x.out);
        re->copies = calloc(worker_slots, sizeof(regex_copy_t));
        if (re->full_src == NULL || (re->has_search && re->search_src == NULL) ||
            re->copies == NULL || pt_arena_defer(a, regex_free_copies, re) != 0) {
            free(re->copies);
            re->copies = NULL; /* still correct: every thread shares the one regex */
        } else {
            re->ncopies = worker_slots;
        }
    }
    free(x.out);
    return re;
fail:
    free(x.out);
    return NULL;
}

const char *pt_regex_pattern(const pt_regex_t *re)
{
    return re->pattern;
}

unsigned pt_regex_groups(const pt_regex_t *re)
{
    return re->groups;
}

int pt_regex_full_match(const pt_regex_t *re, const char *s, size_t len)
{
#ifdef REG_STARTEND
    /* REG_STARTEND bounds the subject by length: no NUL terminator, no copy. */
    regex_copy_t *c = regex_copy(re);
    regmatch_t m[1];
    m[0].rm_so = 0;
    m[0].rm_eo = (regoff_t)len;
    return regexec(c ? &c->full : &re->full, s != NULL ? s : "", 1, m, REG_STARTEND) == 0;
#else
    char buf[4096];
    if (len >= sizeof(buf))
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    regex_copy_t *c = regex_copy(re);
    return regexec(c ? &c->full : &re->full, buf, 0, NULL, 0) == 0;
#endif
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
            if (n > re->groups) {
                snprintf(err, errlen,
                         "refers to group \\%u, but the regex has %u capturing group%s", n,
                         re->groups, re->groups == 1 ? "" : "s");
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

/* Output buffer for replace_all that grows inside the arena (the old copy stays there until
 * the arena goes: the hot path allocates from nothing else). */
typedef struct obuf {
    char *p;
    size_t len, cap;
    pt_arena_t *a;
    int oom;
} obuf_t;

static void ob_put(obuf_t *o, const char *s, size_t n)
{
    if (o->oom || n == 0)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t ncap = o->cap ? o->cap * 2 : 64;
        while (ncap < o->len + n + 1)
            ncap *= 2;
        char *np = pt_arena_alloc(o->a, ncap);
        if (np == NULL) {
            o->oom = 1;
            return;
        }
        if (o->len)
            memcpy(np, o->p, o->len);
        o->p = np;
        o->cap = ncap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

char *pt_regex_replace_all(const pt_regex_t *re, const char *s, size_t len, const char *sub,
                           pt_arena_t *a, size_t *out_len)
{
#ifndef REG_STARTEND
    (void)re;
    (void)s;
    (void)len;
    (void)sub;
    (void)a;
    (void)out_len;
    return NULL;
#else
    if (!re->has_search)
        return NULL;
    obuf_t o = {.a = a};
    regex_copy_t *c = regex_copy(re);
    const regex_t *search = c ? &c->search : &re->search;
    regmatch_t m[MAX_GROUPS + 1];
    size_t p = 0, lastend = (size_t)-1;
    /* RE2::GlobalReplace: every non-overlapping match from left to right; an empty match
     * right where the previous match ended does not count (copy one character instead). */
    while (p <= len) {
        m[0].rm_so = (regoff_t)p;
        m[0].rm_eo = (regoff_t)len;
        if (regexec(search, s, re->nmatch, m, REG_STARTEND) != 0)
            break;
        size_t ms = (size_t)m[0].rm_so, me = (size_t)m[0].rm_eo;
        if (p < ms)
            ob_put(&o, s + p, ms - p);
        if (ms == me && ms == lastend) {
            if (p < len) {
                size_t n = utf8_len((unsigned char)s[p]);
                if (n > len - p)
                    n = len - p;
                ob_put(&o, s + p, n);
                p += n;
            } else {
                p++;
            }
            continue;
        }
        for (const char *r = sub; *r; r++) {
            if (*r == '\\' && r[1] == '\\') {
                ob_put(&o, "\\", 1);
                r++;
            } else if (*r == '\\' && r[1] >= '0' && r[1] <= '9') {
                unsigned g = (unsigned)(r[1] - '0');
                unsigned pg = g == 0 ? 0 : (g <= re->groups ? re->map[g] : MAX_GROUPS + 1);
                if (pg < re->nmatch && m[pg].rm_so >= 0)
                    ob_put(&o, s + m[pg].rm_so, (size_t)(m[pg].rm_eo - m[pg].rm_so));
                r++;
            } else {
                ob_put(&o, r, 1);
            }
        }
        p = me;
        lastend = me;
    }
    if (p < len)
        ob_put(&o, s + p, len - p);
    if (o.p == NULL && !o.oom)
        o.p = pt_arena_strndup(a, "", 0);
    if (o.oom || o.p == NULL)
        return NULL;
    if (out_len != NULL)
        *out_len = o.len;
    return o.p;
#endif
}

/* ---- config parsing ------------------------------------------------------------------ */

static const char *const google_re2_unsupported[] = {"max_program_size", NULL};

pt_regex_t *pt_regex_parse(pt_cfg_t *r, pt_arena_t *a, unsigned flags)
{
    if (pt_cfg_enter(r, "google_re2") > 0) {
        pt_cfg_unsupported(r, google_re2_unsupported);
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
    char err[256], q[160];
    pt_regex_t *re = pt_regex_compile(a, pattern, flags, err, sizeof(err));
    if (re == NULL) {
        pt_cfg_quote(pattern, q, sizeof(q));
        pt_cfg_error(r, "regex", "%s %s", q, err);
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
            out->regex = pt_regex_parse(r, a, 0);
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
            hm->regex = pt_regex_parse(r, a, 0);
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
