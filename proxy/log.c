#include "proxy/log.h"

#include <stdarg.h>

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

_Atomic pt_log_level_t pt_log_threshold = PT_LOG_INFO;

static _Thread_local char thread_tag[16] = "main";

static const char *const level_names[] = {"trace", "debug",    "info", "warning",
                                          "error", "critical", "off"};

int pt_log_level_parse(const char *name, pt_log_level_t *out)
{
    for (int i = 0; i <= PT_LOG_OFF; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (pt_log_level_t)i;
            return 0;
        }
    }
    if (strcmp(name, "warn") == 0) {
        *out = PT_LOG_WARN;
        return 0;
    }
    return -1;
}

const char *pt_log_level_str(pt_log_level_t level)
{
    return level <= PT_LOG_OFF ? level_names[level] : "?";
}

void pt_log_set_thread(int worker_id)
{
    if (worker_id < 0)
        snprintf(thread_tag, sizeof(thread_tag), "main");
    else
        snprintf(thread_tag, sizeof(thread_tag), "w%d", worker_id);
}

/* application_log_config's format, when one is set (pt_log_set_pattern). */
static _Atomic(pt_log_pattern_t *) log_pattern;
static size_t render_line(const pt_log_pattern_t *lp, pt_log_level_t level, const char *msg,
                          size_t mlen, char *line, size_t cap);

static void log_vwrite(pt_log_level_t level, const char *suffix, const char *fmt, va_list ap)
{
    char line[2048];
    const pt_log_pattern_t *lp = atomic_load_explicit(&log_pattern, memory_order_acquire);
    if (lp != NULL) {
        char msg[2048];
        int m = vsnprintf(msg, sizeof(msg), fmt, ap);
        size_t mlen = m < 0 ? 0 : (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1;
        if (suffix != NULL && mlen < sizeof(msg) - 1) {
            int k = snprintf(msg + mlen, sizeof(msg) - mlen, "%s", suffix);
            mlen += k < 0 ? 0 : (size_t)k < sizeof(msg) - mlen ? (size_t)k : sizeof(msg) - mlen - 1;
        }
        size_t len = render_line(lp, level, msg, mlen, line, sizeof(line));
        line[len++] = '\n';
        ssize_t rc = write(STDERR_FILENO, line, len);
        (void)rc;
        return;
    }
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "[%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ][%s][%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), thread_tag, pt_log_level_str(level));
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (suffix != NULL && len < sizeof(line) - 2)
        len += (size_t)snprintf(line + len, sizeof(line) - 1 - len, "%s", suffix);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line: atomic with respect to other threads' lines for pipes and files. */
    ssize_t rc = write(STDERR_FILENO, line, len);
    (void)rc;
}

void pt_log_write(pt_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, NULL, fmt, ap);
    va_end(ap);
}

void pt_log_limited(pt_log_limit_t *limit, pt_log_level_t level, const char *fmt, ...)
{
    if (level < atomic_load_explicit(&pt_log_threshold, memory_order_relaxed))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* +1: a clock that reads 0 ms must not look like "never logged". */
    unsigned long long now = (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000 + 1;
    unsigned long long last = atomic_load_explicit(&limit->last_ms, memory_order_relaxed);
    if ((last != 0 && now - last < PT_LOG_LIMIT_INTERVAL_MS) ||
        !atomic_compare_exchange_strong(&limit->last_ms, &last, now)) {
        atomic_fetch_add_explicit(&limit->suppressed, 1, memory_order_relaxed);
        return;
    }
    unsigned long long left_out = atomic_exchange(&limit->suppressed, 0);
    char suffix[64];
    if (left_out > 0)
        snprintf(suffix, sizeof(suffix), " (%llu similar lines left out)", left_out);
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, left_out > 0 ? suffix : NULL, fmt, ap);
    va_end(ap);
}

/* ---- application_log_config ------------------------------------------------------------ */


enum seg_kind { SEG_TEXT, SEG_FLAG };

typedef struct seg {
    uint8_t kind;
    char flag;
    const char *text; /* SEG_TEXT */
    size_t len;
} seg_t;

typedef struct pat {
    seg_t *segs;
    unsigned nsegs;
    char *key; /* JSON: the member's encoded key with its colon ("\"level\":"), else NULL */
} pat_t;

struct pt_log_pattern {
    pat_t *pats; /* text: one; JSON: one per member */
    unsigned npats;
    int json;
    int escape_new_line;
};


static const char FLAGS[] = "v_jlLtnPYmdHMSefFTDz%";

static int compile_pat(pat_t *p, const char *s, int json, char *err, size_t errlen)
{
    size_t n = strlen(s);
    p->segs = calloc(n + 1, sizeof(seg_t));
    if (p->segs == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%')
            continue;
        if (i + 1 >= n) {
            snprintf(err, errlen, "\"%s\": a \"%%\" at the end (write %%%% for a percent)", s);
            return -1;
        }
        char f = s[i + 1];
        if (strchr(FLAGS, f) == NULL || f == '\0') {
            snprintf(err, errlen, "\"%s\": flag \"%%%c\" is not supported", s, f);
            return -1;
        }
        if (json && (f == 'v' || f == '_')) {
            snprintf(err, errlen, "\"%s\": usage of %%%c is unavailable for JSON log formats "
                                  "(use %%j)", s, f);
            return -1;
        }
        if (i > run)
            p->segs[p->nsegs++] = (seg_t){.kind = SEG_TEXT, .text = s + run, .len = i - run};
        p->segs[p->nsegs++] = (seg_t){.kind = SEG_FLAG, .flag = f};
        i++;
        run = i + 1;
    }
    if (n > run)
        p->segs[p->nsegs++] = (seg_t){.kind = SEG_TEXT, .text = s + run, .len = n - run};
    /* The literal text points into s: copy it so the pattern outlives the config tree. */
    for (unsigned k = 0; k < p->nsegs; k++)
        if (p->segs[k].kind == SEG_TEXT) {
            char *t = strndup(p->segs[k].text, p->segs[k].len);
            if (t == NULL) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            p->segs[k].text = t;
        }
    return 0;
}

void pt_log_pattern_free(pt_log_pattern_t *lp)
{
    if (lp == NULL)
        return;
    for (unsigned i = 0; i < lp->npats; i++) {
        for (unsigned k = 0; k < lp->pats[i].nsegs; k++)
            if (lp->pats[i].segs[k].kind == SEG_TEXT)
                free((char *)lp->pats[i].segs[k].text);
        free(lp->pats[i].segs);
        free(lp->pats[i].key);
    }
    free(lp->pats);
    free(lp);
}

pt_log_pattern_t *pt_log_pattern_compile(const char *text, const void *json_obj,
                                         int escape_new_line, char *err, size_t errlen)
{
    const json_t *obj = json_obj;
    pt_log_pattern_t *lp = calloc(1, sizeof(*lp));
    if (lp == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    lp->escape_new_line = escape_new_line;
    lp->json = obj != NULL;
    size_t n = obj != NULL ? json_object_size(obj) : 1;
    if ((lp->pats = calloc(n ? n : 1, sizeof(pat_t))) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(lp);
        return NULL;
    }
    if (obj == NULL) {
        lp->npats = 1;
        if (compile_pat(&lp->pats[0], text, 0, err, errlen) != 0)
            goto fail;
        return lp;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        pat_t *p = &lp->pats[lp->npats++];
        if (!json_is_string(v)) {
            snprintf(err, errlen, "\"%s\": must be a string (a log pattern)", key);
            goto fail;
        }
        json_t *k = json_string(key);
        char *ks = k != NULL ? json_dumps(k, JSON_ENCODE_ANY) : NULL;
        json_decref(k);
        if (ks == NULL || (p->key = malloc(strlen(ks) + 2)) == NULL) {
            free(ks);
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        sprintf(p->key, "%s:", ks);
        free(ks);
        if (compile_pat(p, json_string_value(v), 1, err, errlen) != 0)
            goto fail;
    }
    return lp;
fail:
    pt_log_pattern_free(lp);
    return NULL;
}

void pt_log_set_pattern(pt_log_pattern_t *p)
{
    pt_log_pattern_t *old = atomic_exchange(&log_pattern, p);
    /* Only before the workers run (see log.h): no thread can be using the old one. */
    pt_log_pattern_free(old);
}

typedef struct lbuf {
    char *b;
    size_t n, cap;
} lbuf_t;

static void put(lbuf_t *o, const char *s, size_t n)
{
    if (n > o->cap - o->n)
        n = o->cap - o->n;
    memcpy(o->b + o->n, s, n);
    o->n += n;
}

/* s escaped for inside a JSON string (escape_nl_only: only newlines, for %_). */
static void put_escaped(lbuf_t *o, const char *s, size_t n, int nl_only)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            put(o, "\\n", 2);
        } else if (nl_only) {
            put(o, (const char *)&c, 1);
        } else if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(o, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(o, e, 6);
        } else {
            put(o, (const char *)&c, 1);
        }
    }
}

static void render_pat(lbuf_t *o, const pat_t *p, const pt_log_pattern_t *lp,
                       pt_log_level_t level, const struct timespec *ts, const struct tm *tm,
                       const char *msg, size_t mlen)
{
    char t[64];
    for (unsigned i = 0; i < p->nsegs; i++) {
        const seg_t *s = &p->segs[i];
        if (s->kind == SEG_TEXT) {
            if (lp->json)
                put_escaped(o, s->text, s->len, 0);
            else
                put(o, s->text, s->len);
            continue;
        }
        int w = 0;
        switch (s->flag) {
        case 'v':
            if (lp->escape_new_line)
                put_escaped(o, msg, mlen, 1);
            else
                put(o, msg, mlen);
            continue;
        case '_':
            put_escaped(o, msg, mlen, 1);
            continue;
        case 'j':
            put_escaped(o, msg, mlen, 0);
            continue;
        case 'l':
            w = snprintf(t, sizeof(t), "%s", pt_log_level_str(level));
            break;
        case 'L':
            t[0] = pt_log_level_str(level)[0];
            w = 1;
            break;
        case 't':
            w = snprintf(t, sizeof(t), "%s", thread_tag);
            break;
        case 'n':
            w = snprintf(t, sizeof(t), "main");
            break;
        case 'P':
            w = snprintf(t, sizeof(t), "%ld", (long)getpid());
            break;
        case 'Y':
            w = snprintf(t, sizeof(t), "%04d", tm->tm_year + 1900);
            break;
        case 'm':
            w = snprintf(t, sizeof(t), "%02d", tm->tm_mon + 1);
            break;
        case 'd':
            w = snprintf(t, sizeof(t), "%02d", tm->tm_mday);
            break;
        case 'H':
            w = snprintf(t, sizeof(t), "%02d", tm->tm_hour);
            break;
        case 'M':
            w = snprintf(t, sizeof(t), "%02d", tm->tm_min);
            break;
        case 'S':
            w = snprintf(t, sizeof(t), "%02d", tm->tm_sec);
            break;
        case 'e':
            w = snprintf(t, sizeof(t), "%03ld", ts->tv_nsec / 1000000);
            break;
        case 'f':
            w = snprintf(t, sizeof(t), "%06ld", ts->tv_nsec / 1000);
            break;
        case 'F':
            w = snprintf(t, sizeof(t), "%09ld", ts->tv_nsec);
            break;
        case 'T':
            w = snprintf(t, sizeof(t), "%02d:%02d:%02d", tm->tm_hour, tm->tm_min, tm->tm_sec);
            break;
        case 'D':
            w = snprintf(t, sizeof(t), "%02d/%02d/%02d", tm->tm_mon + 1, tm->tm_mday,
                         (tm->tm_year + 1900) % 100);
            break;
        case 'z':
            w = snprintf(t, sizeof(t), "+00:00");
            break;
        case '%':
            t[0] = '%';
            w = 1;
            break;
        }
        if (w > 0)
            put(o, t, (size_t)w < sizeof(t) ? (size_t)w : sizeof(t) - 1);
    }
}

/* A line in the configured format into line (cap bytes, room for the newline kept). */
static size_t render_line(const pt_log_pattern_t *lp, pt_log_level_t level, const char *msg,
                          size_t mlen, char *line, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    lbuf_t o = {line, 0, cap - 1};
    if (!lp->json) {
        render_pat(&o, &lp->pats[0], lp, level, &ts, &tm, msg, mlen);
        return o.n;
    }
    put(&o, "{", 1);
    for (unsigned i = 0; i < lp->npats; i++) {
        if (i)
            put(&o, ",", 1);
        put(&o, lp->pats[i].key, strlen(lp->pats[i].key));
        put(&o, "\"", 1);
        render_pat(&o, &lp->pats[i], lp, level, &ts, &tm, msg, mlen);
        put(&o, "\"", 1);
    }
    put(&o, "}", 1);
    return o.n;
}
