#include "proxy/log.h"

#include <stdarg.h>

#include <stdio.h>
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

static void log_vwrite(pt_log_level_t level, const char *suffix, const char *fmt, va_list ap)
{
    char line[2048];
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
