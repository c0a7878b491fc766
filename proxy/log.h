/* Logging: level-filtered lines on stderr, each with a UTC timestamp, the level and the id
 * of the thread that wrote it ("main" or "w<N>" for worker N). One write(2) per line so
 * lines from different threads never interleave. */
#ifndef PT_LOG_H
#define PT_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>

typedef enum pt_log_level {
    PT_LOG_TRACE,
    PT_LOG_DEBUG,
    PT_LOG_INFO,
    PT_LOG_WARN,
    PT_LOG_ERROR,
    PT_LOG_CRITICAL,
    PT_LOG_OFF
} pt_log_level_t;

/* Read by every thread, changed by the admin: relaxed atomic access. */
extern _Atomic pt_log_level_t pt_log_threshold;

/* Parses Envoy's level names (trace, debug, info, warning/warn, error, critical, off). */
int pt_log_level_parse(const char *name, pt_log_level_t *out);
const char *pt_log_level_str(pt_log_level_t level);
/* Names the calling thread in its log lines; -1 is the main thread. */
void pt_log_set_thread(int worker_id);

void pt_log_write(pt_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define PT_LOG(level, ...)                                                                     \
    do {                                                                                       \
        if ((level) >= atomic_load_explicit(&pt_log_threshold, memory_order_relaxed))           \
            pt_log_write((level), __VA_ARGS__);                                                \
    } while (0)
/* A line for an event that can repeat at the rate of traffic (out of descriptors, no
 * memory): at most one per PT_LOG_LIMIT_INTERVAL_MS for each limiter, process-wide, with the
 * number of lines left out since the last one appended. A limiter is a static, zero-filled
 * pt_log_limit_t next to the call. */
#define PT_LOG_LIMIT_INTERVAL_MS 1000
typedef struct pt_log_limit {
    _Atomic unsigned long long last_ms; /* monotonic ms of the last line, 0 = none yet */
    _Atomic unsigned long long suppressed;
} pt_log_limit_t;
void pt_log_limited(pt_log_limit_t *limit, pt_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- application_log_config: petrel's own lines in the operator's format ------------------
 * Envoy's ApplicationLogConfig.LogFormat: a text_format or a json_format whose strings are
 * spdlog patterns. Flags: %v message, %_ message with newlines escaped, %j message escaped for
 * a JSON string, %l level, %L its first letter, %t thread ("main", "w0"...), %n logger name
 * ("main"), %P process id, %Y %m %d %H %M %S %e (ms) %f (us) %F (ns) %T (%H:%M:%S) %D
 * (%m/%d/%y) %z (+00:00), %%; time in UTC. */
typedef struct pt_log_pattern pt_log_pattern_t;

/* Compiles a format: text (json == NULL) or a JSON object of patterns (values must be
 * strings; %v and %_ cannot be used there, as in Envoy). NULL with a message in err. The
 * result is malloc'd (pt_log_pattern_free). */
pt_log_pattern_t *pt_log_pattern_compile(const char *text, const void *json, int escape_new_line,
                                         char *err, size_t errlen);
void pt_log_pattern_free(pt_log_pattern_t *p);
/* Main thread, before the workers start: every line from now on is written with p (owned
 * from then on; NULL: petrel's default). */
void pt_log_set_pattern(pt_log_pattern_t *p);

#define pt_trace(...) PT_LOG(PT_LOG_TRACE, __VA_ARGS__)
#define pt_debug(...) PT_LOG(PT_LOG_DEBUG, __VA_ARGS__)
#define pt_info(...)  PT_LOG(PT_LOG_INFO, __VA_ARGS__)
#define pt_warn(...)  PT_LOG(PT_LOG_WARN, __VA_ARGS__)
#define pt_error(...) PT_LOG(PT_LOG_ERROR, __VA_ARGS__)

#endif
