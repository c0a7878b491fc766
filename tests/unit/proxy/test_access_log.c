/* Unit tests for proxy/access_log: config parsing (every format spelling, stdout/stderr, each
 * error with its full path), lines written from four threads at once arriving whole and
 * complete, sink sharing across loggers and config reloads, rotation with reopen, bounded
 * buffers dropping and counting, the background flusher, and shutdown. */
#include "proxy/access_log.h"
#include "proxy/stats.h"
#include "pt_test.h"

#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILE_TYPE "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

static char dir_prefix[128];

static const char *tmp_path(const char *name)
{
    static char paths[16][256];
    static int next;
    char *p = paths[next++ % 16];
    snprintf(p, 256, "%s_%s.log", dir_prefix, name);
    return p;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return strdup("(missing)");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Parses {"access_log": [...]} given as the JSON text of the list. Stores the loggers and the
 * joined errors (caller frees; "" when none). */
typedef struct parsed {
    pt_arena_t arena;
    pt_access_log_t **logs;
    unsigned n;
    int rc;
    char *errors;
} parsed_t;

static void parse_list(parsed_t *p, const char *list_json)
{
    memset(p, 0, sizeof(*p));
    char *doc = malloc(strlen(list_json) + 32);
    sprintf(doc, "{\"access_log\": %s}", list_json);
    json_error_t je;
    json_t *root = json_loads(doc, 0, &je);
    free(doc);
    if (root == NULL) {
        fprintf(stderr, "bad test JSON: %s\n", je.text);
        p->rc = -2;
        p->errors = strdup("bad test JSON");
        return;
    }
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    p->rc = pt_access_log_parse_list(&r, "access_log", &p->arena, &p->logs, &p->n);
    pt_cfg_finish(&r);
    if (!pt_cfg_ok(&r) && p->rc == 0)
        p->rc = -1; /* unknown fields are found when the caller leaves the object */
    p->errors = pt_cfg_errors_joined(&r);
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void parsed_dispose(parsed_t *p)
{
    pt_arena_dispose(&p->arena);
    free(p->errors);
    p->errors = NULL;
}

/* One FileAccessLog entry for path with the given extra typed_config fields. */
static char *file_entry(const char *path, const char *extra)
{
    static char buf[8][2048];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, 2048,
             "{\"name\": \"envoy.access_loggers.file\", \"typed_config\": {\"@type\": \"" FILE_TYPE
             "\", \"path\": \"%s\"%s%s}}",
             path, extra[0] ? ", " : "", extra);
    return b;
}

static pt_arena_t si_arena;
static pt_http_headers_t req, resp;

static pt_stream_info_t make_si(void)
{
    pt_arena_dispose(&si_arena);
    pt_http_headers_init(&req, &si_arena);
    pt_http_headers_init(&resp, &si_arena);
    pt_http_headers_add_str(&req, ":method", "GET");
    pt_http_headers_add_str(&req, ":path", "/hello");
    pt_http_headers_add_str(&req, ":authority", "example.com");
    pt_http_headers_add_str(&resp, ":status", "200");
    pt_stream_info_t si = {0};
    si.start_wall_us = 1795974120623456ull; /* 2026-11-29T17:42:00.623Z */
    si.start_mono_us = 1000000;
    si.end_mono_us = 1000000 + 42000;
    si.request_headers = &req;
    si.response_headers = &resp;
    si.response_code = 200;
    si.bytes_received = 3;
    si.bytes_sent = 11;
    si.protocol = "HTTP/1.1";
    si.upstream_host = "10.0.0.2:8080";
    return si;
}

/* Parses one file logger with `extra`, writes one entry, flushes, returns the file's text. */
static char *one_line(const char *name, const char *extra, char **errors)
{
    const char *path = tmp_path(name);
    unlink(path);
    char list[2300];
    snprintf(list, sizeof(list), "[%s]", file_entry(path, extra));
    parsed_t p;
    parse_list(&p, list);
    *errors = strdup(p.errors);
    char *out = NULL;
    if (p.rc == 0 && p.n == 1) {
        pt_stream_info_t si = make_si();
        pt_access_log_write(p.logs[0], &si);
        pt_access_log_flush_all();
        out = slurp(path);
    }
    parsed_dispose(&p);
    unlink(path);
    return out ? out : strdup("(parse failed)");
}

#define CHECK_LINE(name, extra, want)                                                              \
    do {                                                                                           \
        char *errs_, *got_ = one_line(name, extra, &errs_);                                        \
        int same_ = strcmp(got_, want) == 0 && errs_[0] == '\0';                                   \
        if (!same_)                                                                                \
            fprintf(stderr, "errors: %s\n", errs_);                                                \
        PT_CHECK_STR(got_, want);                                                                  \
        free(got_);                                                                                \
        free(errs_);                                                                               \
    } while (0)

static void test_parse_formats(void)
{
    CHECK_LINE("text_src",
               "\"log_format\": {\"text_format_source\": {\"inline_string\": "
               "\"%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\\n\"}}",
               "GET /hello 200\n");
    CHECK_LINE("text_fmt",
               "\"log_format\": {\"text_format\": \"%PROTOCOL% %DURATION%\\n\", "
               "\"content_type\": \"text/plain\"}",
               "HTTP/1.1 42\n");
    CHECK_LINE("legacy_format", "\"format\": \"%UPSTREAM_HOST% %BYTES_SENT%\\n\"",
               "10.0.0.2:8080 11\n");
    CHECK_LINE("omit",
               "\"log_format\": {\"text_format\": \"[%ROUTE_NAME%]\\n\", "
               "\"omit_empty_values\": true}",
               "[]\n");
    CHECK_LINE("json",
               "\"log_format\": {\"json_format\": {\"code\": \"%RESPONSE_CODE%\", \"m\": "
               "\"%REQ(:METHOD)%\", \"none\": \"%ROUTE_NAME%\"}}",
               "{\"code\":200,\"m\":\"GET\",\"none\":null}\n");
    CHECK_LINE("json_sorted",
               "\"log_format\": {\"json_format\": {\"z\": \"%BYTES_SENT%\", \"a\": \"%PROTOCOL%\","
               " \"n\": \"%ROUTE_NAME%\"}, \"json_format_options\": {\"sort_properties\": true},"
               " \"omit_empty_values\": true}",
               "{\"a\":\"HTTP/1.1\",\"z\":11}\n");
    CHECK_LINE("legacy_json",
               "\"json_format\": {\"code\": \"%RESPONSE_CODE%\", \"none\": \"%ROUTE_NAME%\"}",
               "{\"code\":\"200\",\"none\":\"-\"}\n");
    CHECK_LINE("typed_json", "\"typed_json_format\": {\"code\": \"%RESPONSE_CODE%\"}",
               "{\"code\":200}\n");
    CHECK_LINE("default", "",
               "[2026-11-29T17:42:00.623Z] \"GET /hello HTTP/1.1\" 200 - 3 11 42 - \"-\" \"-\" "
               "\"-\" \"example.com\" \"10.0.0.2:8080\"\n");

    /* text_format_source from a file and from the environment. */
    const char *fmt_file = tmp_path("fmtfile");
    FILE *f = fopen(fmt_file, "w");
    fputs("file:%RESPONSE_CODE%\n", f);
    fclose(f);
    char extra[512];
    snprintf(extra, sizeof(extra),
             "\"log_format\": {\"text_format_source\": {\"filename\": \"%s\"}}", fmt_file);
    CHECK_LINE("src_file", extra, "file:200\n");
    unlink(fmt_file);
    setenv("PT_TEST_AL_FORMAT", "env:%PROTOCOL%\n", 1);
    CHECK_LINE("src_env",
               "\"log_format\": {\"text_format_source\": {\"environment_variable\": "
               "\"PT_TEST_AL_FORMAT\"}}",
               "env:HTTP/1.1\n");
    unsetenv("PT_TEST_AL_FORMAT");
}

static void test_parse_stream_loggers(void)
{
    parsed_t p;
    parse_list(
        &p, "[{\"name\": \"envoy.access_loggers.stdout\", \"typed_config\": {\"@type\": "
            "\"type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\","
            " \"log_format\": {\"text_format\": \"%RESPONSE_CODE%\\n\"}}},"
            " {\"typed_config\": {\"@type\": "
            "\"type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog\"}},"
            " {\"typed_config\": {\"@type\": \"" FILE_TYPE "\", \"path\": \"/dev/stdout\"}}]");
    PT_CHECK_STR(p.errors, "");
    PT_CHECK_INT(p.rc, 0);
    PT_CHECK_INT(p.n, 3);
    PT_CHECK_STR(pt_access_log_path(p.logs[0]), "/dev/stdout");
    PT_CHECK_STR(pt_access_log_path(p.logs[1]), "/dev/stderr");
    /* A file logger naming /dev/stdout shares the stdout sink. */
    PT_CHECK(pt_access_log_path(p.logs[0]) == pt_access_log_path(p.logs[2]));
    PT_CHECK(!pt_format_is_json(pt_access_log_format(p.logs[0])));
    parsed_dispose(&p);
    /* An absent list is fine and yields nothing. */
    memset(&p, 0, sizeof(p));
    json_t *root = json_loads("{}", 0, NULL);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    PT_CHECK_INT(pt_access_log_parse_list(&r, "access_log", &p.arena, &p.logs, &p.n), 0);
    PT_CHECK(p.logs == NULL && p.n == 0);
    pt_cfg_finish(&r);
    pt_cfg_dispose(&r);
    json_decref(root);
}

static void check_error(const char *list, const char *want)
{
    parsed_t p;
    parse_list(&p, list);
    if (p.rc != -1 || strcmp(p.errors, want) != 0)
        fprintf(stderr, "for %s\n", list);
    int rc = p.rc;
    char got[2048];
    snprintf(got, sizeof(got), "%s", p.errors);
    parsed_dispose(&p);
    PT_CHECK_INT(rc, -1);
    PT_CHECK_STR(got, want);
}

static void test_parse_errors(void)
{
    const char *ok_path = tmp_path("errs");
    char list[4096];
    check_error("[{\"typed_config\": {\"@type\": \"type.googleapis.com/acme.Logger\", \"x\": 1}}]",
                "access_log[0].typed_config.@type: unknown access logger type "
                "\"type.googleapis.com/acme.Logger\"\n");
    check_error("[{\"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions."
                "access_loggers.grpc.v3.HttpGrpcAccessLogConfig\"}}]",
                "access_log[0].typed_config.@type: \"type.googleapis.com/envoy.extensions."
                "access_loggers.grpc.v3.HttpGrpcAccessLogConfig\" is not supported\n");
    check_error("[{\"name\": \"x\"}]", "access_log[0].typed_config: is required\n");
    check_error("[{\"typed_config\": {\"path\": \"/tmp/x\"}}]",
                "access_log[0].typed_config.@type: is required\n");
    snprintf(list, sizeof(list), "[%s]",
             "{\"filter\": {\"status_code_filter\": {}}, \"typed_config\": {\"@type\": \"" FILE_TYPE
             "\", \"path\": \"/dev/stdout\"}}");
    check_error(list, "access_log[0].filter: access log filters are not supported\n");
    snprintf(list, sizeof(list), "[%s]", file_entry("/nonexistent-petrel-dir/access.log", ""));
    check_error(list, "access_log[0].typed_config.path: cannot open "
                      "/nonexistent-petrel-dir/access.log: No such file or directory\n");
    if (geteuid() != 0) {
        snprintf(list, sizeof(list), "[%s]", file_entry("/proc/version", ""));
        parsed_t p;
        parse_list(&p, list);
        PT_CHECK(strstr(p.errors, "cannot open /proc/version: ") != NULL);
        parsed_dispose(&p);
    }
    check_error("[{\"typed_config\": {\"@type\": \"" FILE_TYPE "\"}}]",
                "access_log[0].typed_config.path: is required\n");
    snprintf(list, sizeof(list), "[%s]", file_entry(ok_path, "\"bogus\": 1"));
    check_error(list, "access_log[0].typed_config.bogus: unknown field\n");
    snprintf(list, sizeof(list), "[%s]",
             file_entry(ok_path, "\"log_format\": {\"text_format\": \"%FOO%\"}"));
    check_error(list, "access_log[0].typed_config.log_format.text_format: unknown command "
                      "operator \"%FOO%\"\n");
    snprintf(list, sizeof(list), "[%s]",
             file_entry(ok_path, "\"log_format\": {\"text_format_source\": {\"inline_string\": "
                                 "\"%REQ()%\"}}"));
    check_error(list, "access_log[0].typed_config.log_format.text_format_source: %REQ()% needs "
                      "a header name\n");
    snprintf(list, sizeof(list), "[%s]",
             file_entry(ok_path, "\"log_format\": {\"json_format\": {\"a\": {\"b\": "
                                 "\"%NOPE%\"}}}"));
    check_error(list, "access_log[0].typed_config.log_format.json_format: \"a.b\": unknown "
                      "command operator \"%NOPE%\"\n");
    snprintf(list, sizeof(list), "[%s]",
             file_entry(ok_path, "\"log_format\": {\"text_format\": \"a\", \"json_format\": {}}"));
    check_error(list, "access_log[0].typed_config.log_format: only one of text_format, "
                      "text_format_source, json_format may be given (found text_format, "
                      "json_format)\n");
    snprintf(list, sizeof(list), "[%s]", file_entry(ok_path, "\"log_format\": {}"));
    check_error(list, "access_log[0].typed_config.log_format: one of text_format, "
                      "text_format_source or json_format is required\n");
    snprintf(list, sizeof(list), "[%s]",
             file_entry(ok_path, "\"format\": \"a\", \"log_format\": {\"text_format\": \"b\"}"));
    check_error(list, "access_log[0].typed_config: only one of format, json_format, "
                      "typed_json_format, log_format may be given (found format, log_format)\n");
    snprintf(list, sizeof(list), "[%s]",
             file_entry(ok_path, "\"log_format\": {\"text_format\": \"a\", \"formatters\": []}"));
    check_error(list, "access_log[0].typed_config.log_format.formatters: field is not "
                      "supported\n");
    snprintf(list, sizeof(list), "[%s]",
             file_entry(ok_path, "\"log_format\": {\"text_format_source\": {\"inline_bytes\": "
                                 "\"YQ==\"}}"));
    check_error(list, "access_log[0].typed_config.log_format.text_format_source.inline_bytes: "
                      "field is not supported\n");
    snprintf(list, sizeof(list), "[%s]", file_entry(ok_path, "\"json_format\": \"x\""));
    check_error(list, "access_log[0].typed_config.json_format: is not an object\n");
    /* Errors in several entries are all reported; valid entries are still returned. */
    snprintf(list, sizeof(list), "[%s, %s, %s]", file_entry(ok_path, ""),
             file_entry(ok_path, "\"format\": \"%X%\""), file_entry(ok_path, "\"nope\": 1"));
    parsed_t p;
    parse_list(&p, list);
    PT_CHECK_INT(p.rc, -1);
    PT_CHECK_INT(p.n, 1); /* only the valid first entry */
    PT_CHECK_STR(p.errors, "access_log[1].typed_config.format: unknown command operator "
                           "\"%X%\"\naccess_log[2].typed_config.nope: unknown field\n");
    parsed_dispose(&p);
    unlink(ok_path);
}

/* ---- writing ---------------------------------------------------------------------- */

#define THREADS    4
#define PER_THREAD 5000

typedef struct worker_arg {
    const pt_access_log_t *log;
    int id;
} worker_arg_t;

static void *writer_main(void *argp)
{
    worker_arg_t *arg = argp;
    pt_arena_t a = {0};
    pt_http_headers_t h;
    pt_http_headers_init(&h, &a);
    char tid[16];
    snprintf(tid, sizeof(tid), "t%d", arg->id);
    pt_http_headers_add_str(&h, "x-thread", tid);
    pt_http_headers_add_str(&h, "x-pad", "0123456789abcdefghijklmnopqrstuvwxyz");
    pt_stream_info_t si = {0};
    si.request_headers = &h;
    si.response_code = 200;
    for (int i = 0; i < PER_THREAD; i++) {
        si.bytes_sent = (uint64_t)i;
        pt_access_log_write(arg->log, &si);
    }
    pt_arena_dispose(&a);
    pt_buf_pool_trim(); /* this thread's chunk pool dies with it */
    return NULL;
}

static void test_concurrent_writes(void)
{
    const char *path = tmp_path("concurrent");
    unlink(path);
    char list[2300];
    snprintf(list, sizeof(list), "[%s]",
             file_entry(path, "\"format\": \"%REQ(x-thread)% %BYTES_SENT% %RESPONSE_CODE% "
                              "%REQ(x-pad)%\\n\""));
    parsed_t p;
    parse_list(&p, list);
    PT_CHECK_STR(p.errors, "");
    uint64_t dropped_before = pt_access_log_dropped();
    pthread_t th[THREADS];
    worker_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].log = p.logs[0];
        args[i].id = i;
        pthread_create(&th[i], NULL, writer_main, &args[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pt_access_log_flush_all();
    PT_CHECK_INT(pt_access_log_dropped(), dropped_before);
    char *text = slurp(path);
    PT_CHECK_INT(count_lines(text), THREADS * PER_THREAD);
    /* Every line whole, and each thread's lines in the order it wrote them. */
    int next[THREADS] = {0};
    int bad = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int t, seq;
        char pad[64];
        if (sscanf(line, "t%d %d 200 %63s", &t, &seq, pad) != 3 || t < 0 || t >= THREADS ||
            seq != next[t] || strcmp(pad, "0123456789abcdefghijklmnopqrstuvwxyz") != 0) {
            bad++;
            continue;
        }
        next[t]++;
    }
    free(text);
    PT_CHECK_INT(bad, 0);
    for (int i = 0; i < THREADS; i++)
        PT_CHECK_INT(next[i], PER_THREAD);
    parsed_dispose(&p);
    unlink(path);
}

static void test_sink_shared_across_reload(void)
{
    const char *path = tmp_path("shared");
    unlink(path);
    char list[4700];
    snprintf(list, sizeof(list), "[%s, %s]", file_entry(path, "\"format\": \"a\\n\""),
             file_entry(path, "\"format\": \"b\\n\""));
    parsed_t old;
    parse_list(&old, list);
    PT_CHECK_STR(old.errors, "");
    PT_CHECK(pt_access_log_path(old.logs[0]) == pt_access_log_path(old.logs[1]));
    pt_access_log_write(old.logs[0], NULL);
    pt_access_log_write(old.logs[1], NULL);
    /* A reload naming the same path reuses the sink; the old snapshot then goes away. */
    snprintf(list, sizeof(list), "[%s]", file_entry(path, "\"format\": \"c\\n\""));
    parsed_t cur;
    parse_list(&cur, list);
    PT_CHECK_STR(cur.errors, "");
    PT_CHECK(pt_access_log_path(cur.logs[0]) == pt_access_log_path(old.logs[0]));
    pt_access_log_write(cur.logs[0], NULL);
    parsed_dispose(&old);
    pt_access_log_write(cur.logs[0], NULL);
    pt_access_log_flush_all();
    char *text = slurp(path);
    PT_CHECK_STR(text, "a\nb\nc\nc\n");
    free(text);
    /* The last logger going away writes what is left and closes the file. */
    pt_access_log_write(cur.logs[0], NULL);
    parsed_dispose(&cur);
    text = slurp(path);
    PT_CHECK_STR(text, "a\nb\nc\nc\nc\n");
    free(text);
    unlink(path);
}

static void test_reopen_after_rename(void)
{
    const char *path = tmp_path("rotate");
    char rotated[300];
    snprintf(rotated, sizeof(rotated), "%s.1", path);
    unlink(path);
    unlink(rotated);
    char list[2300];
    snprintf(list, sizeof(list), "[%s]", file_entry(path, "\"format\": \"line %BYTES_SENT%\\n\""));
    parsed_t p;
    parse_list(&p, list);
    PT_CHECK_STR(p.errors, "");
    pt_stream_info_t si = {0};
    si.bytes_sent = 1;
    pt_access_log_write(p.logs[0], &si);
    pt_access_log_flush_all();
    PT_CHECK(rename(path, rotated) == 0);
    si.bytes_sent = 2; /* logged before the reopen: still belongs to the old file */
    pt_access_log_write(p.logs[0], &si);
    pt_access_log_reopen_all();
    si.bytes_sent = 3;
    pt_access_log_write(p.logs[0], &si);
    pt_access_log_flush_all();
    char *old_text = slurp(rotated), *new_text = slurp(path);
    PT_CHECK_STR(old_text, "line 1\nline 2\n");
    PT_CHECK_STR(new_text, "line 3\n");
    free(old_text);
    free(new_text);
    struct stat stt;
    PT_CHECK(stat(path, &stt) == 0);
    PT_CHECK_INT(stt.st_mode & 0777, 0644); /* main() sets umask 022 */
    parsed_dispose(&p);
    unlink(path);
    unlink(rotated);
}

static void test_drop_when_full(void)
{
    const char *path = tmp_path("full");
    unlink(path);
    char list[2300];
    /* 100-byte lines into a 1000-byte buffer: at most 10 fit between flushes. */
    snprintf(list, sizeof(list), "[%s]", file_entry(path, "\"format\": \"%REQ(x-fill)%\\n\""));
    parsed_t p;
    parse_list(&p, list);
    PT_CHECK_STR(p.errors, "");
    pt_arena_t a = {0};
    pt_http_headers_t h;
    pt_http_headers_init(&h, &a);
    char fill[100];
    memset(fill, 'x', 99);
    fill[99] = '\0';
    pt_http_headers_add_str(&h, "x-fill", fill);
    pt_stream_info_t si = {0};
    si.request_headers = &h;
    pt_access_log_flush_all();
    uint64_t before = pt_access_log_dropped();
    pt_stat_t stat = pt_stats_find("access_log.dropped");
    uint64_t stat_before = pt_stats_value(stat);
    pt_access_log_set_buffer_max(1000);
    for (int i = 0; i < 100; i++)
        pt_access_log_write(p.logs[0], &si);
    pt_access_log_set_buffer_max(0);
    pt_access_log_flush_all();
    uint64_t dropped = pt_access_log_dropped() - before;
    char *text = slurp(path);
    size_t lines = count_lines(text);
    free(text);
    PT_CHECK(stat != 0);
    PT_CHECK(dropped >= 90 - 10); /* the 1 s timer may flush once in between, at most */
    PT_CHECK_INT(lines + dropped, 100);
    PT_CHECK_INT(pt_stats_value(stat) - stat_before, dropped);
    pt_arena_dispose(&a);
    parsed_dispose(&p);
    unlink(path);
}

static void test_background_flush(void)
{
    const char *path = tmp_path("timer");
    unlink(path);
    char list[2300];
    snprintf(list, sizeof(list), "[%s]", file_entry(path, "\"format\": \"tick\\n\""));
    parsed_t p;
    parse_list(&p, list);
    PT_CHECK_STR(p.errors, "");
    pt_access_log_write(p.logs[0], NULL);
    /* No explicit flush: the flusher's 1 s timer writes it out. */
    char *text = NULL;
    for (int i = 0; i < 60; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        free(text);
        text = slurp(path);
        if (strcmp(text, "tick\n") == 0)
            break;
    }
    PT_CHECK_STR(text, "tick\n");
    free(text);
    parsed_dispose(&p);
    unlink(path);
}

static void test_shutdown_flushes(void)
{
    const char *path = tmp_path("shutdown");
    unlink(path);
    char list[2300];
    snprintf(list, sizeof(list), "[%s]", file_entry(path, "\"format\": \"bye %BYTES_SENT%\\n\""));
    parsed_t p;
    parse_list(&p, list);
    PT_CHECK_STR(p.errors, "");
    pt_stream_info_t si = {0};
    for (int i = 0; i < 3; i++) {
        si.bytes_sent = (uint64_t)i;
        pt_access_log_write(p.logs[0], &si);
    }
    pt_access_log_shutdown();
    char *text = slurp(path);
    PT_CHECK_STR(text, "bye 0\nbye 1\nbye 2\n");
    free(text);
    /* Written after shutdown: dropped and counted, the file is left alone. */
    uint64_t before = pt_access_log_dropped();
    pt_access_log_write(p.logs[0], &si);
    PT_CHECK_INT(pt_access_log_dropped() - before, 1);
    pt_access_log_flush_all();
    parsed_dispose(&p);
    text = slurp(path);
    PT_CHECK_STR(text, "bye 0\nbye 1\nbye 2\n");
    free(text);
    /* A config loaded afterwards starts over: new sink, flusher running again. */
    parse_list(&p, list);
    PT_CHECK_STR(p.errors, "");
    si.bytes_sent = 9;
    pt_access_log_write(p.logs[0], &si);
    pt_access_log_flush_all();
    text = slurp(path);
    PT_CHECK_STR(text, "bye 0\nbye 1\nbye 2\nbye 9\n");
    free(text);
    parsed_dispose(&p);
    pt_access_log_shutdown();
    unlink(path);
}

int main(void)
{
    snprintf(dir_prefix, sizeof(dir_prefix), "/tmp/pt_access_log_test_%d", (int)getpid());
    pt_stats_thread_init();
    umask(022);
    PT_RUN(test_parse_formats);
    PT_RUN(test_parse_stream_loggers);
    PT_RUN(test_parse_errors);
    PT_RUN(test_concurrent_writes);
    PT_RUN(test_sink_shared_across_reload);
    PT_RUN(test_reopen_after_rename);
    PT_RUN(test_drop_when_full);
    PT_RUN(test_background_flush);
    PT_RUN(test_shutdown_flushes);
    pt_arena_dispose(&si_arena);
    pt_buf_pool_trim();
    PT_TEST_EXIT();
}
