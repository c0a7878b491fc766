#include "proxy/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proxy/buf.h"
#include "proxy/log.h"
#include "proxy/stats.h"

#define TYPE_FILE   "envoy.extensions.access_loggers.file.v3.FileAccessLog"
#define TYPE_STDOUT "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
#define TYPE_STDERR "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"

#define SPARE_KEEP_MAX  (1u << 20) /* a flushed buffer larger than this is freed, not kept */
#define FORMAT_FILE_MAX (1u << 20) /* text_format_source.filename */

/* Envoy loggers petrel does not implement: "not supported" rather than "unknown". */
static const char *const unsupported_types[] = {
    "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
    "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig",
    "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
    "envoy.extensions.access_loggers.fluentd.v3.FluentdAccessLogConfig",
    "envoy.extensions.access_loggers.wasm.v3.WasmAccessLog",
    "envoy.extensions.access_loggers.dynamic_modules.v3.DynamicModuleAccessLog",
    NULL};

/* One output. Two locks so that a worker appending a line never waits for the disk:
 * `lock` guards the active buffer and is held only for a memcpy; `io_lock` serializes
 * flushes and reopens (so bytes reach the file in the order they were appended) and is
 * held across write(2), by the flusher or a main-thread flush, never by a worker. */
typedef struct al_sink {
    struct al_sink *next; /* registry list (registry_lock) */
    char *path;
    unsigned refs;   /* registry_lock */
    int in_registry; /* registry_lock; 0 once shut down or released */
    int std_fd;      /* 1 or 2: the process's own stdout/stderr, never closed/reopened */

    pthread_mutex_t lock;
    char *buf; /* lock: lines waiting for the flusher */
    size_t len, cap;
    int closed; /* lock: after shutdown, writes are dropped */

    pthread_mutex_t io_lock;
    int fd;      /* io_lock; -1 when closed */
    char *spare; /* io_lock: the buffer being written out, swapped with buf */
    size_t spare_cap;
    int failing; /* io_lock: a write failed; log again only after a success */
} al_sink_t;

struct pt_access_log {
    const pt_format_t *format;
    al_sink_t *sink;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static al_sink_t *sinks;

static pthread_mutex_t flusher_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flusher_cv;
static pthread_once_t flusher_once = PTHREAD_ONCE_INIT;
static pthread_t flusher_thread;
static int flusher_running, flusher_stop, flush_wanted; /* flusher_mu */

static _Atomic size_t buffer_max = PT_ACCESS_LOG_BUFFER_MAX;
static _Atomic uint64_t dropped_total;

static pthread_once_t stats_once = PTHREAD_ONCE_INIT;
static struct {
    pt_stat_t dropped, write_buffered, write_completed, write_failed, flushed_by_timer,
        reopen_failed;
} st;

static _Thread_local pt_buf_t scratch; /* the line being rendered, per thread */

static void stats_init(void)
{
    st.dropped = pt_stats_counter("access_log", NULL, NULL, "dropped");
    st.write_buffered = pt_stats_counter("filesystem", NULL, NULL, "write_buffered");
    st.write_completed = pt_stats_counter("filesystem", NULL, NULL, "write_completed");
    st.write_failed = pt_stats_counter("filesystem", NULL, NULL, "write_failed");
    st.flushed_by_timer = pt_stats_counter("filesystem", NULL, NULL, "flushed_by_timer");
    st.reopen_failed = pt_stats_counter("filesystem", NULL, NULL, "reopen_failed");
}

static void count_drop(void)
{
    atomic_fetch_add_explicit(&dropped_total, 1, memory_order_relaxed);
    pt_stat_inc(st.dropped);
}

/* ---- writing out (flusher, main thread; io_lock held) ---------------------------- */

static void write_out(al_sink_t *s, const char *p, size_t n)
{
    int waits = 0;
    while (n > 0 && s->fd >= 0) {
        ssize_t w = write(s->fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        /* stdout may be a non-blocking pipe: wait a little for the reader, then give up. */
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && waits++ < 10) {
            struct pollfd pfd = {.fd = s->fd, .events = POLLOUT};
            poll(&pfd, 1, 100);
            continue;
        }
        pt_stat_inc(st.write_failed);
        if (!s->failing)
            pt_error("access log %s: write failed: %s; %zu bytes lost", s->path,
                     w < 0 ? strerror(errno) : "no progress", n);
        s->failing = 1;
        return;
    }
    if (n == 0) {
        s->failing = 0;
        pt_stat_inc(st.write_completed);
    }
}

/* Swaps out what workers appended and writes it. Caller holds io_lock. */
static void flush_io_locked(al_sink_t *s)
{
    pthread_mutex_lock(&s->lock);
    char *data = s->buf;
    size_t n = s->len, cap = s->cap;
    s->buf = s->spare;
    s->cap = s->spare_cap;
    s->len = 0;
    pthread_mutex_unlock(&s->lock);
    s->spare = data;
    s->spare_cap = cap;
    if (n > 0)
        write_out(s, data, n);
    /* Memory returns after a burst: keep a spare only of a modest size. */
    if (s->spare_cap > SPARE_KEEP_MAX) {
        free(s->spare);
        s->spare = NULL;
        s->spare_cap = 0;
    }
}

static void sink_flush(al_sink_t *s)
{
    pthread_mutex_lock(&s->io_lock);
    flush_io_locked(s);
    pthread_mutex_unlock(&s->io_lock);
}

/* ---- sinks ------------------------------------------------------------------------ */

static int open_path(const char *path)
{
    /* O_NONBLOCK only for the open itself, so a FIFO without a reader fails instead of
     * hanging config loading; writes (on the flusher) are blocking. */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0)
        return -errno;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

static void sink_destroy(al_sink_t *s)
{
    pthread_mutex_lock(&s->io_lock);
    flush_io_locked(s);
    if (s->std_fd == 0 && s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    pthread_mutex_unlock(&s->io_lock);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->io_lock);
    free(s->buf);
    free(s->spare);
    free(s->path);
    free(s);
}

static void sink_unref(al_sink_t *s)
{
    pthread_mutex_lock(&registry_lock);
    int last = --s->refs == 0;
    if (last && s->in_registry) {
        for (al_sink_t **pp = &sinks; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == s) {
                *pp = s->next;
                break;
            }
        }
        s->in_registry = 0;
    }
    pthread_mutex_unlock(&registry_lock);
    /* The last logger of a path is gone (config reloaded without it): write what is left
     * and close, on whichever thread let go last. */
    if (last)
        sink_destroy(s);
}

static void sink_release(void *arg)
{
    sink_unref(arg);
}

/* Every registered sink with a reference taken, so the list lock is not held across I/O.
 * Caller unrefs each and frees the array. */
static al_sink_t **collect_sinks(size_t *count)
{
    pthread_mutex_lock(&registry_lock);
    size_t n = 0;
    for (al_sink_t *s = sinks; s != NULL; s = s->next)
        n++;
    al_sink_t **arr = malloc((n ? n : 1) * sizeof(*arr));
    size_t k = 0;
    if (arr != NULL) {
        for (al_sink_t *s = sinks; s != NULL; s = s->next) {
            s->refs++;
            arr[k++] = s;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    *count = k;
    return arr;
}

static void flush_registered(void)
{
    size_t n;
    al_sink_t **arr = collect_sinks(&n);
    for (size_t i = 0; i < n; i++) {
        sink_flush(arr[i]);
        sink_unref(arr[i]);
    }
    free(arr);
}

/* ---- flusher thread ----------------------------------------------------------------- */

static void flusher_init_once(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&flusher_cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void *flusher_main(void *arg)
{
    (void)arg;
    pt_stats_thread_init();
    pthread_mutex_lock(&flusher_mu);
    while (!flusher_stop) {
        if (!flush_wanted) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += PT_ACCESS_LOG_FLUSH_MS / 1000;
            ts.tv_nsec += (long)(PT_ACCESS_LOG_FLUSH_MS % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&flusher_cv, &flusher_mu, &ts);
        }
        if (flusher_stop)
            break;
        int by_timer = !flush_wanted;
        flush_wanted = 0;
        pthread_mutex_unlock(&flusher_mu);
        if (by_timer)
            pt_stat_inc(st.flushed_by_timer);
        flush_registered();
        pthread_mutex_lock(&flusher_mu);
    }
    pthread_mutex_unlock(&flusher_mu);
    pt_stats_thread_dispose();
    return NULL;
}

/* Starts the flusher if it is not running. 0 or a negative errno. */
static int flusher_start(void)
{
    pthread_once(&flusher_once, flusher_init_once);
    int rc = 0;
    pthread_mutex_lock(&flusher_mu);
    if (!flusher_running) {
        /* The flusher must never take a process signal meant for the main loop. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        flusher_stop = 0;
        rc = -pthread_create(&flusher_thread, NULL, flusher_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        flusher_running = rc == 0;
    }
    pthread_mutex_unlock(&flusher_mu);
    return rc;
}

static void flusher_wake(void)
{
    pthread_mutex_lock(&flusher_mu);
    flush_wanted = 1;
    pthread_cond_signal(&flusher_cv);
    pthread_mutex_unlock(&flusher_mu);
}

/* Finds or opens the sink for path; takes a reference. NULL with *err = -errno. */
static al_sink_t *sink_get(const char *path, int *err)
{
    int std_fd = strcmp(path, "/dev/stdout") == 0 ? 1 : strcmp(path, "/dev/stderr") == 0 ? 2 : 0;
    pthread_mutex_lock(&registry_lock);
    for (al_sink_t *s = sinks; s != NULL; s = s->next) {
        if (strcmp(s->path, path) == 0) {
            s->refs++;
            pthread_mutex_unlock(&registry_lock);
            return s;
        }
    }
    al_sink_t *s = calloc(1, sizeof(*s));
    char *p = strdup(path);
    int fd = std_fd ? std_fd : (s && p) ? open_path(path) : -ENOMEM;
    if (s == NULL || p == NULL || fd < 0) {
        pthread_mutex_unlock(&registry_lock);
        free(s);
        free(p);
        if (fd >= 0 && !std_fd)
            close(fd);
        *err = fd < 0 ? fd : -ENOMEM;
        return NULL;
    }
    s->path = p;
    s->std_fd = std_fd;
    s->fd = fd;
    s->refs = 1;
    s->in_registry = 1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->io_lock, NULL);
    s->next = sinks;
    sinks = s;
    pthread_mutex_unlock(&registry_lock);
    return s;
}

static void sink_append(al_sink_t *s, const pt_buf_t *line, size_t n)
{
    size_t max = atomic_load_explicit(&buffer_max, memory_order_relaxed);
    pthread_mutex_lock(&s->lock);
    if (s->closed || s->len + n > max) {
        pthread_mutex_unlock(&s->lock);
        count_drop();
        return;
    }
    if (s->len + n > s->cap) {
        size_t ncap = s->cap ? s->cap : PT_ACCESS_LOG_FLUSH_BYTES;
        while (ncap < s->len + n)
            ncap *= 2;
        if (ncap > max)
            ncap = max; /* still >= len + n, checked above */
        char *nb = realloc(s->buf, ncap);
        if (nb == NULL) {
            pthread_mutex_unlock(&s->lock);
            count_drop();
            return;
        }
        s->buf = nb;
        s->cap = ncap;
    }
    pt_buf_copyout(line, 0, s->buf + s->len, n);
    size_t before = s->len;
    s->len += n;
    pthread_mutex_unlock(&s->lock);
    pt_stat_inc(st.write_buffered);
    /* Wake the flusher once per crossing, not once per line. */
    if (before < PT_ACCESS_LOG_FLUSH_BYTES && before + n >= PT_ACCESS_LOG_FLUSH_BYTES)
        flusher_wake();
}

/* ---- public: writing ---------------------------------------------------------------- */

void pt_access_log_write(const pt_access_log_t *l, const pt_stream_info_t *si)
{
    pt_buf_t *b = &scratch;
    pt_format_render(l->format, si, b);
    size_t n = pt_buf_len(b);
    if (n > 0) {
        sink_append(l->sink, b, n);
        pt_buf_drain(b, n);
    }
}

const char *pt_access_log_path(const pt_access_log_t *l)
{
    return l->sink->path;
}

const pt_format_t *pt_access_log_format(const pt_access_log_t *l)
{
    return l->format;
}

unsigned pt_access_logs_needs(pt_access_log_t *const *logs, unsigned n)
{
    unsigned needs = 0;
    for (unsigned i = 0; i < n; i++)
        if (logs[i] != NULL && logs[i]->format != NULL)
            needs |= pt_format_needs(logs[i]->format);
    return needs;
}

void pt_access_log_flush_all(void)
{
    flush_registered();
}

void pt_access_log_reopen_all(void)
{
    size_t n;
    al_sink_t **arr = collect_sinks(&n);
    for (size_t i = 0; i < n; i++) {
        al_sink_t *s = arr[i];
        if (!s->std_fd) {
            pthread_mutex_lock(&s->io_lock);
            flush_io_locked(s); /* what was logged before the rotation goes to the old file */
            int fd = open_path(s->path);
            if (fd >= 0) {
                if (s->fd >= 0)
                    close(s->fd);
                s->fd = fd;
            } else {
                pt_stat_inc(st.reopen_failed);
                pt_error("access log: cannot reopen %s: %s", s->path, strerror(-fd));
            }
            pthread_mutex_unlock(&s->io_lock);
        }
        sink_unref(s);
    }
    free(arr);
}

void pt_access_log_shutdown(void)
{
    pthread_mutex_lock(&flusher_mu);
    int running = flusher_running;
    flusher_stop = 1;
    if (running)
        pthread_cond_signal(&flusher_cv);
    pthread_mutex_unlock(&flusher_mu);
    if (running)
        pthread_join(flusher_thread, NULL);
    pthread_mutex_lock(&flusher_mu);
    flusher_running = 0;
    flusher_stop = 0;
    flush_wanted = 0;
    pthread_mutex_unlock(&flusher_mu);

    /* Detach every sink from the registry: the ones loggers still reference stay allocated
     * (closed) until their last logger goes; a later parse opens fresh ones. */
    pthread_mutex_lock(&registry_lock);
    al_sink_t *list = sinks;
    sinks = NULL;
    for (al_sink_t *s = list; s != NULL; s = s->next) {
        s->in_registry = 0;
        s->refs++;
    }
    pthread_mutex_unlock(&registry_lock);
    while (list != NULL) {
        al_sink_t *s = list;
        list = s->next;
        pthread_mutex_lock(&s->io_lock);
        flush_io_locked(s);
        pthread_mutex_lock(&s->lock);
        s->closed = 1;
        pthread_mutex_unlock(&s->lock);
        if (!s->std_fd && s->fd >= 0)
            close(s->fd);
        s->fd = -1;
        pthread_mutex_unlock(&s->io_lock);
        sink_unref(s);
    }
}

uint64_t pt_access_log_dropped(void)
{
    return atomic_load_explicit(&dropped_total, memory_order_relaxed);
}

void pt_access_log_set_buffer_max(size_t bytes)
{
    atomic_store_explicit(&buffer_max, bytes ? bytes : PT_ACCESS_LOG_BUFFER_MAX,
                          memory_order_relaxed);
}

/* ---- config ------------------------------------------------------------------------- */

/* Marks every field of the current object as read (after an error that makes them moot). */
static void consume_all(pt_cfg_t *r)
{
    json_t *node = r->frames[r->depth - 1].node;
    const char *key;
    json_t *val;
    json_object_foreach(node, key, val) {
        pt_cfg_get(r, key);
    }
}

/* text_format_source (a DataSource): the format text, or NULL with an error recorded.
 * A file's text is copied into the arena. */
static const char *parse_text_source(pt_cfg_t *r, pt_arena_t *arena)
{
    static const char *const ds_fields[] = {"inline_string", "filename", "environment_variable",
                                            NULL};
    static const char *const ds_unsupported[] = {"inline_bytes", "watched_directory", NULL};
    const char *text = NULL;
    if (pt_cfg_enter(r, "text_format_source") <= 0)
        return NULL;
    pt_cfg_unsupported(r, ds_unsupported);
    int found = pt_cfg_oneof(r, ds_fields, !pt_cfg_has_any(r, ds_unsupported));
    if (found == 0) {
        pt_cfg_string(r, "inline_string", &text, NULL);
    } else if (found == 1) {
        const char *fn;
        if (pt_cfg_string(r, "filename", &fn, NULL) > 0) {
            char e[512];
            char *data = pt_read_file(fn, FORMAT_FILE_MAX, NULL, e, sizeof(e));
            if (data == NULL) {
                pt_cfg_error(r, "filename", "%s", e);
            } else {
                text = pt_arena_strdup(arena, data);
                free(data);
            }
        }
    } else if (found == 2) {
        const char *var;
        if (pt_cfg_string(r, "environment_variable", &var, NULL) > 0) {
            text = getenv(var);
            if (text == NULL)
                pt_cfg_error(r, "environment_variable", "\"%s\" is not set", var);
            else
                text = pt_arena_strdup(arena, text);
        }
    }
    pt_cfg_leave(r);
    return text;
}

/* log_format, a SubstitutionFormatString. NULL with errors recorded. */
static const pt_format_t *parse_log_format(pt_cfg_t *r, pt_arena_t *arena)
{
    return pt_substitution_format_parse(r, "log_format", arena, NULL);
}

const pt_format_t *pt_substitution_format_parse(pt_cfg_t *r, const char *field, pt_arena_t *arena,
                                                const char **content_type_out)
{
    static const char *const kinds[] = {"text_format", "text_format_source", "json_format", NULL};
    static const char *const sfs_unsupported[] = {"formatters", NULL};
    if (pt_cfg_enter(r, field) <= 0)
        return NULL;
    pt_cfg_unsupported(r, sfs_unsupported);
    size_t errors_before = r->nerrors;
    int omit = 0, sort = 0;
    const char *content_type;
    pt_cfg_bool(r, "omit_empty_values", &omit, 0);
    /* content_type matters for response bodies only; an access log has no use for it. */
    pt_cfg_string(r, "content_type", &content_type, NULL);
    if (content_type_out != NULL)
        *content_type_out = content_type != NULL && content_type[0]
                                ? pt_arena_strdup(arena, content_type)
                                : NULL;
    if (pt_cfg_enter(r, "json_format_options") > 0) {
        pt_cfg_bool(r, "sort_properties", &sort, 0);
        pt_cfg_leave(r);
    }
    unsigned flags = (omit ? PT_FORMAT_OMIT_EMPTY : 0) | (sort ? PT_FORMAT_JSON_SORT : 0);
    const pt_format_t *f = NULL;
    char err[512];
    int found = pt_cfg_oneof(r, kinds, 1);
    if (found == 0) {
        const char *text;
        if (pt_cfg_string(r, "text_format", &text, NULL) > 0) {
            f = pt_format_compile_ex(arena, text, flags, err, sizeof(err));
            if (f == NULL)
                pt_cfg_error(r, "text_format", "%s", err);
        }
    } else if (found == 1) {
        const char *text = parse_text_source(r, arena);
        if (text != NULL) {
            f = pt_format_compile_ex(arena, text, flags, err, sizeof(err));
            if (f == NULL)
                pt_cfg_error(r, "text_format_source", "%s", err);
        }
    } else if (found == 2) {
        json_t *j = pt_cfg_get(r, "json_format");
        if (!json_is_object(j)) {
            pt_cfg_error(r, "json_format", "is not an object");
        } else {
            f = pt_format_compile_json_ex(arena, j, flags, err, sizeof(err));
            if (f == NULL)
                pt_cfg_error(r, "json_format", "%s", err);
        }
    }
    pt_cfg_leave(r);
    return r->nerrors == errors_before ? f : NULL;
}

/* The format of a FileAccessLog: one of format, json_format, typed_json_format, log_format,
 * or Envoy's default. NULL with errors recorded. */
static const pt_format_t *parse_file_format(pt_cfg_t *r, pt_arena_t *arena)
{
    static const char *const kinds[] = {"format", "json_format", "typed_json_format", "log_format",
                                        NULL};
    char err[512];
    const pt_format_t *f = NULL;
    if (pt_cfg_oneof(r, kinds, 0) == PT_CFG_ONEOF_MANY)
        return NULL;
    if (pt_cfg_has(r, "log_format"))
        return parse_log_format(r, arena);
    if (pt_cfg_has(r, "format")) {
        const char *text;
        if (pt_cfg_string(r, "format", &text, NULL) <= 0)
            return NULL;
        f = pt_format_compile(arena, text, err, sizeof(err));
        if (f == NULL)
            pt_cfg_error(r, "format", "%s", err);
        return f;
    }
    for (int typed = 0; typed <= 1; typed++) {
        const char *field = typed ? "typed_json_format" : "json_format";
        if (!pt_cfg_has(r, field))
            continue;
        json_t *j = pt_cfg_get(r, field);
        if (!json_is_object(j)) {
            pt_cfg_error(r, field, "is not an object");
            return NULL;
        }
        /* The deprecated json_format renders every value as a string, as Envoy does. */
        f = pt_format_compile_json_ex(arena, j, typed ? 0 : PT_FORMAT_JSON_STRINGS, err,
                                      sizeof(err));
        if (f == NULL)
            pt_cfg_error(r, field, "%s", err);
        return f;
    }
    f = pt_format_compile(arena, PT_FORMAT_DEFAULT, err, sizeof(err));
    if (f == NULL)
        pt_cfg_error(r, NULL, "default format: %s", err);
    return f;
}

/* Binds a logger to the sink for path, releasing the reference with the arena. */
static pt_access_log_t *make_logger(pt_cfg_t *r, pt_arena_t *arena, const char *path,
                                    const char *path_field, const pt_format_t *f)
{
    int e = 0;
    al_sink_t *s = sink_get(path, &e);
    if (s == NULL) {
        pt_cfg_error(r, path_field, "cannot open %s: %s", path, strerror(-e));
        return NULL;
    }
    if (pt_arena_defer(arena, sink_release, s) != 0) {
        sink_unref(s);
        pt_cfg_error(r, path_field, "out of memory");
        return NULL;
    }
    int rc = flusher_start();
    if (rc < 0) {
        pt_cfg_error(r, path_field, "cannot start the access log flusher thread: %s",
                     strerror(-rc));
        return NULL;
    }
    pt_access_log_t *l = pt_arena_alloc(arena, sizeof(*l));
    if (l == NULL) {
        pt_cfg_error(r, path_field, "out of memory");
        return NULL;
    }
    l->format = f;
    l->sink = s;
    return l;
}

pt_access_log_t *pt_access_log_parse_path(pt_cfg_t *r, const char *field, pt_arena_t *arena)
{
    const char *path;
    if (pt_cfg_string(r, field, &path, NULL) <= 0)
        return NULL;
    if (path[0] == '\0') {
        pt_cfg_error(r, field, "must not be empty");
        return NULL;
    }
    char err[256];
    const pt_format_t *f = pt_format_compile(arena, PT_FORMAT_DEFAULT, err, sizeof(err));
    if (f == NULL) {
        pt_cfg_error(r, field, "default format: %s", err);
        return NULL;
    }
    return make_logger(r, arena, path, field, f);
}

pt_access_log_t *pt_access_log_parse(pt_cfg_t *r, pt_arena_t *arena)
{
    pthread_once(&stats_once, stats_init);
    size_t errors_before = r->nerrors;
    const char *name;
    pt_cfg_string(r, "name", &name, NULL);
    if (pt_cfg_has(r, "filter")) {
        pt_cfg_get(r, "filter");
        pt_cfg_error(r, "filter", "access log filters are not supported");
    }
    int rc;
    const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
    if (rc == 0)
        pt_cfg_error(r, "typed_config", "is required");
    if (rc <= 0)
        return NULL;
    const char *slash = strrchr(type, '/');
    const char *t = slash ? slash + 1 : type;
    pt_access_log_t *l = NULL;
    if (strcmp(t, TYPE_FILE) == 0) {
        const char *path = NULL;
        int prc = pt_cfg_string(r, "path", &path, NULL);
        if (prc == 0 || (prc > 0 && path[0] == '\0'))
            pt_cfg_error(r, "path", "is required");
        const pt_format_t *f = parse_file_format(r, arena);
        if (f != NULL && prc > 0 && path[0] != '\0')
            l = make_logger(r, arena, path, "path", f);
    } else if (strcmp(t, TYPE_STDOUT) == 0 || strcmp(t, TYPE_STDERR) == 0) {
        const pt_format_t *f = NULL;
        char err[512];
        if (pt_cfg_has(r, "log_format"))
            f = parse_log_format(r, arena);
        else if ((f = pt_format_compile(arena, PT_FORMAT_DEFAULT, err, sizeof(err))) == NULL)
            pt_cfg_error(r, NULL, "default format: %s", err);
        if (f != NULL)
            l = make_logger(r, arena, strcmp(t, TYPE_STDOUT) == 0 ? "/dev/stdout" : "/dev/stderr",
                            NULL, f);
    } else {
        int known = 0;
        for (int i = 0; unsupported_types[i] != NULL; i++)
            known |= strcmp(unsupported_types[i], t) == 0;
        if (known)
            pt_cfg_error(r, "@type", "\"%s\" is not supported", type);
        else
            pt_cfg_error(r, "@type", "unknown access logger type \"%s\"", type);
        consume_all(r);
    }
    pt_cfg_leave(r);
    return r->nerrors == errors_before ? l : NULL;
}

int pt_access_log_parse_list(pt_cfg_t *r, const char *field, pt_arena_t *arena,
                             pt_access_log_t ***out, unsigned *count)
{
    int present = 0;
    size_t errors_before = r->nerrors;
    size_t n = pt_cfg_array(r, field, &present);
    *out = NULL;
    *count = 0;
    if (!present)
        return r->nerrors == errors_before ? 0 : -1;
    pt_access_log_t **arr = pt_arena_alloc(arena, (n ? n : 1) * sizeof(*arr));
    unsigned k = 0;
    for (size_t i = 0; i < n && arr != NULL; i++) {
        if (pt_cfg_enter_index(r, i) > 0) {
            pt_access_log_t *l = pt_access_log_parse(r, arena);
            pt_cfg_leave(r);
            if (l != NULL)
                arr[k++] = l;
        }
    }
    pt_cfg_leave_array(r);
    if (arr == NULL) {
        pt_cfg_error(r, field, "out of memory");
        return -1;
    }
    *out = arr;
    *count = k;
    return r->nerrors == errors_before ? 0 : -1;
}
