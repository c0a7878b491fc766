/* Access logs: Envoy's file, stdout and stderr access loggers.
 *
 * A logger (pt_access_log_t) is config: a compiled format and a reference to a sink, built
 * on the main thread while a config snapshot is parsed and freed with the snapshot's arena.
 * A sink is one output (a file path, or fd 1 / fd 2) shared by every logger that names it,
 * reference counted, and outliving snapshots: a reloaded config naming the same path keeps
 * the same open file and buffer, so a reload loses and reorders nothing.
 *
 * Workers never touch the disk. pt_access_log_write renders the line into a per-thread
 * scratch buffer without any lock, then copies it into the sink's memory buffer under the
 * sink's mutex (held for one memcpy). One background flusher thread, started with the first
 * sink, writes each buffer out with write(2) every second, or as soon as a buffer passes
 * PT_ACCESS_LOG_FLUSH_BYTES. Each buffer is bounded (PT_ACCESS_LOG_BUFFER_MAX by default):
 * when the disk cannot keep up, new lines are dropped and counted (access_log.dropped)
 * rather than letting memory grow or a worker block.
 *
 * Stats: access_log.dropped, and Envoy's filesystem.write_buffered, write_completed,
 * write_failed, flushed_by_timer and reopen_failed counters. */
#ifndef PT_ACCESS_LOG_H
#define PT_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/formatter.h"
#include "proxy/http.h"

#define PT_ACCESS_LOG_FLUSH_BYTES (64u * 1024)        /* wake the flusher at this much */
#define PT_ACCESS_LOG_BUFFER_MAX  (16u * 1024 * 1024) /* per sink; beyond it lines drop */
#define PT_ACCESS_LOG_FLUSH_MS    1000                /* flush interval */

typedef struct pt_access_log pt_access_log_t; /* one configured logger (snapshot lifetime) */

/* Parses one entry of an `access_log` list; the reader is positioned inside the AccessLog
 * object (name, typed_config, filter). Supported typed_config @types:
 *   type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
 *     path, log_format (SubstitutionFormatString: text_format, text_format_source
 *     {inline_string | filename | environment_variable}, json_format, omit_empty_values,
 *     content_type, json_format_options.sort_properties), or the deprecated format,
 *     json_format (string values) and typed_json_format; none means Envoy's default format.
 *   type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
 *   type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
 *     log_format.
 * `filter` is reported as not supported. The file is opened (O_APPEND|O_CREAT, 0644) here,
 * so a bad path is a config error on the path field. Returns NULL with errors recorded in r.
 * The sink reference is released when arena is disposed. */
pt_access_log_t *pt_access_log_parse(pt_cfg_t *r, pt_arena_t *arena);
/* The SubstitutionFormatString in `field` of the current object (text_format,
 * text_format_source, json_format; omit_empty_values, json_format_options, content_type),
 * compiled into arena. *content_type (when not NULL) gets its content_type, or NULL. NULL
 * when absent or wrong (errors recorded). */
const pt_format_t *pt_substitution_format_parse(pt_cfg_t *r, const char *field, pt_arena_t *arena,
                                                const char **content_type);

/* Parses the `field` list of the current object (HCM and tcp_proxy `access_log`) into an
 * arena array of loggers (*out, *count; NULL and 0 when absent). Returns 0, or -1 when an
 * error was recorded (the loggers parsed without error are still stored). */
int pt_access_log_parse_list(pt_cfg_t *r, const char *field, pt_arena_t *arena,
                             pt_access_log_t ***out, unsigned *count);

/* A file logger with Envoy's default format at the path that the string field `field` of
 * the current object holds (the admin's deprecated access_log_path). NULL when absent, or
 * with an error recorded in r. */
pt_access_log_t *pt_access_log_parse_path(pt_cfg_t *r, const char *field, pt_arena_t *arena);

/* Writes one entry (worker thread, hot path): formats into a per-thread scratch buffer, then
 * appends to the sink's memory buffer under a short mutex; never does file I/O here. */
void pt_access_log_write(const pt_access_log_t *l, const pt_stream_info_t *si);

/* The output a logger writes to ("/dev/stdout" for StdoutAccessLog) and its format. */
const char *pt_access_log_path(const pt_access_log_t *l);
const pt_format_t *pt_access_log_format(const pt_access_log_t *l);
/* The PT_FORMAT_NEEDS_* bits of every logger in the list. */
unsigned pt_access_logs_needs(pt_access_log_t *const *logs, unsigned n);

/* Flushes every sink now, on the calling thread (tests, admin, shutdown). */
void pt_access_log_flush_all(void);
/* Reopens every file sink at its path (log rotation: Envoy's POST /reopen_logs, SIGUSR1):
 * buffered lines go to the old file first, later ones to the new file. A failed reopen
 * keeps the old file and counts filesystem.reopen_failed. Main thread. */
void pt_access_log_reopen_all(void);
/* Stops the flusher thread, flushes and closes every file. Loggers still alive afterwards
 * drop (and count) what they write; a later parse starts afresh. */
void pt_access_log_shutdown(void);

/* Lines dropped so far, all sinks (full buffer, or written after shutdown). */
uint64_t pt_access_log_dropped(void);
/* Per-sink buffer bound for new writes (tests; 0 restores PT_ACCESS_LOG_BUFFER_MAX). */
void pt_access_log_set_buffer_max(size_t bytes);

#endif
