/* Watching one file for changes, on the main loop (inotify): the transport under file
 * subscriptions (discovery/file_subscription.h) and the files SDS secrets name.
 *
 * What is watched is a directory, never the file itself: a file replaced by rename or by a
 * symlink swap is a new inode, and a watch on the old one would see nothing. Two modes, as
 * Envoy's path_config_source:
 *  - without a watched directory, the file's own directory, for events that concern the
 *    file: a write closed (IN_CLOSE_WRITE), a file moved onto its name (IN_MOVED_TO: an
 *    atomic rename by the writer), the name removed or moved away (IN_DELETE,
 *    IN_MOVED_FROM), its attributes changed (IN_ATTRIB: permissions), or a symlink created
 *    under it. When the name is a symlink that passes through other names of that directory
 *    (a Kubernetes volume's `file -> ..data/file`), events on those names count too, so a
 *    `..data` swap is seen. (Envoy reacts to IN_MOVED_TO on the name only.)
 *  - with a watched directory, any file moved into it or written and closed in it
 *    (IN_MOVED_TO, IN_CLOSE_WRITE), whatever its name; nothing else is watched. This is the
 *    mode for a file whose change is announced by another entry, such as Kubernetes'
 *    rename of a new `..data` symlink over the old one. (Envoy reacts to IN_MOVED_TO.)
 * A symlink into another directory is not followed: changes there are seen only with that
 * directory as the watched directory. Writes the writer has not closed yet are not seen.
 *
 * Delivery. After each batch of events the file is read again (within the config document
 * bounds, proxy/config_reader.h), and the callback runs only when what was read differs
 * from what was last read or delivered: the content, or, when the file cannot be read, the
 * reason (a file that disappears is delivered once as missing, and again when it is back).
 * So one change is delivered exactly once however many events it caused, and rewriting the
 * same bytes is delivered zero times. The callback gets the bytes it is about: a caller
 * that parses them never reads a newer version than the one compared.
 *
 * Files are read in the order of their first events of the batch.
 *
 * Several watches on one directory share one inotify watch; all watches of a loop share one
 * inotify descriptor, and an event finds the watches of its name through an index, so a
 * change costs the same with one watched file or with thousands in one directory (EDS's
 * file-per-cluster layout). A watched directory that disappears (IN_IGNORED, moved away) is
 * delivered as whatever reading the file then finds, and re-added every second until it is
 * back. Main thread; callbacks run from the loop (or from pt_file_watch_check) and may add
 * or remove any watch, including their own. */
#ifndef PT_FILE_WATCH_H
#define PT_FILE_WATCH_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pt_file_watch pt_file_watch_t;

/* What one read of a file found. */
typedef struct pt_file_state {
    char *content; /* NUL-terminated; NULL when the file could not be read */
    size_t len;
    char error[512];      /* content == NULL: "<path>: <why>" */
    uint64_t fingerprint; /* equal fingerprints: the same bytes, or the same error */
} pt_file_state_t;

/* Reads path now (bounded as a config document). Always fills *out; returns 0 when the
 * content was read, -1 otherwise (out->error says why). Dispose either way. */
int pt_file_state_read(const char *path, pt_file_state_t *out);
void pt_file_state_dispose(pt_file_state_t *s);

/* now: what the file holds at delivery; valid during the call only. */
typedef void (*pt_file_watch_cb)(void *data, const char *path, const pt_file_state_t *now);

/* Watches path (watched_dir NULL: the file's own directory, see above). Nothing is read yet:
 * the first batch of events that concerns the file delivers whatever is there, unless
 * pt_file_watch_seen or pt_file_watch_check said what the caller has. The file itself may
 * be missing; its directory (or watched_dir) must exist. NULL on error, with err saying
 * why: "inotify unavailable: ...", "cannot watch <dir>: No such file or directory", the
 * inotify watch limit reached (fs.inotify.max_user_watches), ... */
pt_file_watch_t *pt_file_watch_add(struct ev_loop *loop, const char *path, const char *watched_dir,
                                   pt_file_watch_cb on_change, void *data, char *err,
                                   size_t errlen);
/* Stops watching. Safe at any time, from any callback of any watch, including w's own;
 * w is not delivered again. NULL is ignored. */
void pt_file_watch_remove(pt_file_watch_t *w);
/* The caller already has the state with this fingerprint (it read the file itself with
 * pt_file_state_read): only a change from it is delivered. */
void pt_file_watch_seen(pt_file_watch_t *w, uint64_t fingerprint);
/* Reads the file now and delivers it, from within this call, if it changed (or nothing was
 * read or seen yet). Returns 1 if delivered, else 0. */
int pt_file_watch_check(pt_file_watch_t *w);
const char *pt_file_watch_path(const pt_file_watch_t *w);

#endif
