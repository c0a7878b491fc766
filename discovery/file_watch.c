#include "discovery/file_watch.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/config_reader.h"
#include "proxy/hash.h"
#include "proxy/log.h"

/* One mask for every directory: inotify_add_watch on an inode already watched replaces its
 * mask, so watches sharing a directory must all ask for the same events. */
#define DIR_EVENTS                                                                                 \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB |            \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
/* Events on one of the file's names that change what reading it finds (IN_CREATE only for a
 * symlink: a regular file is complete at its IN_CLOSE_WRITE, not when created). */
#define NAME_EVENTS                                                                                \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB | IN_CREATE)
/* With a watched directory: as Envoy (any entry moved in) plus writes closed there. */
#define WATCHED_DIR_EVENTS (IN_MOVED_TO | IN_CLOSE_WRITE)
/* Symlink hops followed to find the names a file is reached through. */
#define MAX_NAMES     8
#define RETRY_SECONDS 1.0

typedef struct watch_ctx watch_ctx_t;

/* One inotify watch on a directory, shared by every file watch on it (keyed by wd: the
 * kernel gives one directory the same wd however it is named). */
typedef struct watch_dir {
    int wd;
    unsigned refs;
    struct watch_dir *next;
} watch_dir_t;

/* A name a watch listens for, in its context's index: an event finds the watches it
 * concerns by its name, whatever their number (Envoy's file-per-cluster EDS layout puts
 * thousands of files in one directory). A watch with a watched directory listens for any
 * name: its entry has name NULL, indexed under ANY_NAME_HASH. */
typedef struct name_ent {
    char *name;
    uint64_t hash;
    pt_file_watch_t *w;
    struct name_ent *next_in_bucket;
} name_ent_t;
#define ANY_NAME_HASH 0

/* Everything watched on one loop: one inotify descriptor. Freed with its last watch. */
struct watch_ctx {
    struct ev_loop *loop;
    int fd;
    ev_io io;
    ev_timer retry; /* re-adds directories that disappeared; runs while any has */
    watch_dir_t *dirs;
    pt_file_watch_t *watches;    /* doubly linked */
    name_ent_t **buckets;        /* the names of the watches, by hash */
    unsigned nbuckets, nnames;
    /* Watches an event concerns, in the order the events came: read once each after the
     * batch. */
    pt_file_watch_t *pending, *pending_tail;
    pt_file_watch_t *dead;       /* removed during a delivery: freed after it */
    unsigned depth;              /* > 0 while delivering */
    struct watch_ctx *next;
};

struct pt_file_watch {
    watch_ctx_t *ctx;
    char *path;
    char *dir_path;   /* the directory watched: watched_dir, or path's directory */
    int dir_mode;     /* a watched directory was given */
    watch_dir_t *dir; /* NULL while dir_path is lost */
    /* File mode: the names in dir_path that lead to the file (its own name first, then the
     * first component of each symlink hop that stays in dir_path). Dir mode: one entry,
     * any name. */
    name_ent_t names[MAX_NAMES];
    unsigned nnames;
    uint64_t fingerprint;
    int known;     /* fingerprint holds what was last delivered or seen */
    int triggered; /* in ctx->pending */
    int removed;
    pt_file_watch_cb cb;
    void *data;
    pt_file_watch_t *prev, *next;  /* ctx->watches, or ctx->dead once removed */
    pt_file_watch_t *next_pending;
};

static watch_ctx_t *contexts;

/* ---- reading ------------------------------------------------------------------------ */

int pt_file_state_read(const char *path, pt_file_state_t *out)
{
    memset(out, 0, sizeof(*out));
    out->content = pt_config_read_text(path, &out->len, out->error, sizeof(out->error));
    if (out->content == NULL) {
        /* Different seeds: no content can have the fingerprint of an error. */
        out->fingerprint = pt_hash64(out->error, strlen(out->error), 2);
        return -1;
    }
    /* The digest's four lanes: a 13 MB file in a millisecond. */
    out->fingerprint = pt_bytes_digest(out->content, out->len).a;
    return 0;
}

void pt_file_state_dispose(pt_file_state_t *s)
{
    pt_config_text_free(s->content);
    s->content = NULL;
}

/* ---- directories -------------------------------------------------------------------- */

static void describe_add_error(int e, const char *dir, char *err, size_t errlen)
{
    if (e == ENOSPC)
        snprintf(err, errlen,
                 "cannot watch %s: the inotify watch limit (fs.inotify.max_user_watches) is "
                 "reached",
                 dir);
    else
        snprintf(err, errlen, "cannot watch %s: %s", dir, strerror(e));
}

static int dir_attach(watch_ctx_t *ctx, pt_file_watch_t *w, char *err, size_t errlen)
{
    int wd = inotify_add_watch(ctx->fd, w->dir_path, DIR_EVENTS);
    if (wd < 0) {
        describe_add_error(errno, w->dir_path, err, errlen);
        return -1;
    }
    for (watch_dir_t *d = ctx->dirs; d != NULL; d = d->next) {
        if (d->wd == wd) {
            d->refs++;
            w->dir = d;
            return 0;
        }
    }
    watch_dir_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        /* Another watch may share wd only through an entry, and there is none. */
        inotify_rm_watch(ctx->fd, wd);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    d->wd = wd;
    d->refs = 1;
    d->next = ctx->dirs;
    ctx->dirs = d;
    w->dir = d;
    return 0;
}

static void dir_unlink(watch_ctx_t *ctx, watch_dir_t *d)
{
    for (watch_dir_t **pp = &ctx->dirs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    free(d);
}

static void dir_release(watch_ctx_t *ctx, watch_dir_t *d)
{
    if (d == NULL || --d->refs > 0)
        return;
    inotify_rm_watch(ctx->fd, d->wd);
    dir_unlink(ctx, d);
}

static watch_dir_t *dir_by_wd(watch_ctx_t *ctx, int wd)
{
    for (watch_dir_t *d = ctx->dirs; d != NULL; d = d->next)
        if (d->wd == wd)
            return d;
    return NULL;
}

/* ---- names -------------------------------------------------------------------------- */

static int index_grow(watch_ctx_t *ctx)
{
    if (ctx->nnames < ctx->nbuckets)
        return 0;
    unsigned nb = ctx->nbuckets ? ctx->nbuckets * 2 : 16;
    name_ent_t **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return -1;
    for (unsigned i = 0; i < ctx->nbuckets; i++) {
        for (name_ent_t *e = ctx->buckets[i], *next; e != NULL; e = next) {
            next = e->next_in_bucket;
            e->next_in_bucket = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(ctx->buckets);
    ctx->buckets = b;
    ctx->nbuckets = nb;
    return 0;
}

static void index_remove(watch_ctx_t *ctx, name_ent_t *e)
{
    for (name_ent_t **pp = &ctx->buckets[e->hash & (ctx->nbuckets - 1)]; *pp != NULL;
         pp = &(*pp)->next_in_bucket) {
        if (*pp == e) {
            *pp = e->next_in_bucket;
            ctx->nnames--;
            return;
        }
    }
}

static void names_clear(pt_file_watch_t *w)
{
    for (unsigned i = 0; i < w->nnames; i++) {
        if (w->ctx != NULL)
            index_remove(w->ctx, &w->names[i]);
        free(w->names[i].name);
    }
    w->nnames = 0;
}

/* Adds a name (NULL: any) to w and to its context's index. Out of memory, the name is
 * left out: events on it are then missed, as for a name past MAX_NAMES. */
static void names_add(pt_file_watch_t *w, const char *name, size_t len)
{
    if (name != NULL && (len == 0 || (len == 1 && name[0] == '.') ||
                         (len == 2 && memcmp(name, "..", 2) == 0)))
        return;
    for (unsigned i = 0; name != NULL && i < w->nnames; i++)
        if (strlen(w->names[i].name) == len && memcmp(w->names[i].name, name, len) == 0)
            return;
    if (w->nnames == MAX_NAMES || index_grow(w->ctx) != 0)
        return;
    name_ent_t *e = &w->names[w->nnames];
    e->name = NULL;
    if (name != NULL && (e->name = strndup(name, len)) == NULL)
        return;
    e->hash = name != NULL ? pt_hash64(name, len, 3) | 1 : ANY_NAME_HASH;
    e->w = w;
    name_ent_t **slot = &w->ctx->buckets[e->hash & (w->ctx->nbuckets - 1)];
    e->next_in_bucket = *slot;
    *slot = e;
    w->ctx->nnames++;
    w->nnames++;
}

/* The file's name, then, while it is a symlink sitting in dir_path, the first component of
 * its target when that stays in dir_path: for `dir/file -> ..data/file` the names are file
 * and ..data, and a rename over ..data is a change of the file. Recomputed before each
 * read, since a swap changes the targets. */
static void names_compute(pt_file_watch_t *w)
{
    names_clear(w);
    const char *base = strrchr(w->path, '/');
    base = base ? base + 1 : w->path;
    names_add(w, base, strlen(base));
    size_t dlen = strlen(w->dir_path);
    char cur[PATH_MAX], target[PATH_MAX];
    snprintf(cur, sizeof(cur), "%s", w->path);
    for (int hop = 0; hop < MAX_NAMES; hop++) {
        ssize_t n = readlink(cur, target, sizeof(target) - 1);
        if (n <= 0)
            break;
        target[n] = '\0';
        const char *rel = target;
        if (target[0] == '/') {
            /* An absolute target counts only where it names an entry of dir_path. */
            if (strncmp(target, w->dir_path, dlen) != 0 || target[dlen] != '/')
                break;
            rel = target + dlen + 1;
        }
        const char *slash = strchr(rel, '/');
        size_t clen = slash ? (size_t)(slash - rel) : strlen(rel);
        if (clen == 0 || (clen == 1 && rel[0] == '.') || (clen == 2 && memcmp(rel, "..", 2) == 0))
            break;
        names_add(w, rel, clen);
        /* Only a hop that is itself an entry of dir_path can be followed further from here
         * (a symlink inside a subdirectory resolves relative to that subdirectory). */
        if (slash != NULL)
            break;
        if (snprintf(cur, sizeof(cur), "%s/%s", w->dir_path, rel) >= (int)sizeof(cur))
            break;
    }
}

static int is_symlink(const pt_file_watch_t *w, const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    if (snprintf(p, sizeof(p), "%s/%s", w->dir_path, name) >= (int)sizeof(p))
        return 0;
    return lstat(p, &st) == 0 && S_ISLNK(st.st_mode);
}

/* Whether one event in w's directory, on one of w's names (any, in dir mode), concerns w. */
static int event_concerns(const pt_file_watch_t *w, const struct inotify_event *e)
{
    if (w->dir_mode)
        return (e->mask & WATCHED_DIR_EVENTS) != 0;
    if (!(e->mask & NAME_EVENTS))
        return 0;
    if ((e->mask & NAME_EVENTS) == IN_CREATE)
        return is_symlink(w, e->name);
    return 1;
}

/* ---- delivery ----------------------------------------------------------------------- */

static void ctx_free(watch_ctx_t *ctx);

static void watch_free(pt_file_watch_t *w)
{
    names_clear(w);
    free(w->path);
    free(w->dir_path);
    free(w);
}

/* Frees the watches removed during a delivery, and the context with its last watch. Only
 * at depth 0. */
static void sweep(watch_ctx_t *ctx)
{
    if (ctx->depth > 0)
        return;
    while (ctx->dead != NULL) {
        pt_file_watch_t *w = ctx->dead;
        ctx->dead = w->next;
        watch_free(w);
    }
    if (ctx->watches == NULL)
        ctx_free(ctx);
}

/* Queues w to be read after this batch of events (once however many concern it). */
static void trigger(watch_ctx_t *ctx, pt_file_watch_t *w)
{
    if (w->triggered || w->removed)
        return;
    w->triggered = 1;
    w->next_pending = NULL;
    if (ctx->pending_tail != NULL)
        ctx->pending_tail->next_pending = w;
    else
        ctx->pending = w;
    ctx->pending_tail = w;
}

/* Reads w's file and delivers it if it changed. The caller holds ctx->depth. */
static int check_one(pt_file_watch_t *w)
{
    if (!w->dir_mode)
        names_compute(w);
    pt_file_state_t now;
    pt_file_state_read(w->path, &now);
    int deliver = !w->known || now.fingerprint != w->fingerprint;
    if (deliver) {
        w->fingerprint = now.fingerprint;
        w->known = 1;
        w->cb(w->data, w->path, &now);
    }
    pt_file_state_dispose(&now);
    return deliver;
}

static void deliver_triggered(watch_ctx_t *ctx)
{
    ctx->depth++;
    /* A watch removed by a callback stays allocated (on ctx->dead) until the sweep. */
    while (ctx->pending != NULL) {
        pt_file_watch_t *w = ctx->pending;
        ctx->pending = w->next_pending;
        if (ctx->pending == NULL)
            ctx->pending_tail = NULL;
        if (!w->triggered)
            continue; /* removed since */
        w->triggered = 0;
        check_one(w);
    }
    ctx->depth--;
}

static void retry_lost(watch_ctx_t *ctx)
{
    int still_lost = 0;
    for (pt_file_watch_t *w = ctx->watches; w != NULL; w = w->next) {
        if (w->removed || w->dir != NULL)
            continue;
        char err[256];
        if (dir_attach(ctx, w, err, sizeof(err)) == 0) {
            pt_info("file watch: watching %s again (for %s)", w->dir_path, w->path);
            trigger(ctx, w); /* what changed while nothing was watched */
        } else {
            still_lost = 1;
        }
    }
    if (still_lost && !ev_is_active(&ctx->retry)) {
        ev_timer_set(&ctx->retry, RETRY_SECONDS, RETRY_SECONDS);
        ev_timer_start(ctx->loop, &ctx->retry);
    } else if (!still_lost && ev_is_active(&ctx->retry)) {
        ev_timer_stop(ctx->loop, &ctx->retry);
    }
}

/* The directory behind d no longer is where its watches look (removed, moved away,
 * unmounted): every watch on it reads its file again and waits for the directory. */
static void dir_lost(watch_ctx_t *ctx, watch_dir_t *d, int still_watched)
{
    for (pt_file_watch_t *w = ctx->watches; w != NULL; w = w->next) {
        if (w->dir != d)
            continue;
        if (!w->removed)
            pt_warn("file watch: %s is gone; %s is not watched until it is back", w->dir_path,
                    w->path);
        w->dir = NULL;
        trigger(ctx, w);
    }
    if (still_watched)
        inotify_rm_watch(ctx->fd, d->wd); /* its IN_IGNORED then finds no entry */
    dir_unlink(ctx, d);
}

static void on_event(watch_ctx_t *ctx, const struct inotify_event *e, int *lost)
{
    if (e->mask & IN_Q_OVERFLOW) {
        /* Events were dropped: anything may have changed. */
        for (pt_file_watch_t *w = ctx->watches; w != NULL; w = w->next)
            trigger(ctx, w);
        return;
    }
    watch_dir_t *d = dir_by_wd(ctx, e->wd);
    if (d == NULL)
        return; /* released since (IN_IGNORED of a removed watch) */
    if (e->mask & (IN_IGNORED | IN_MOVE_SELF | IN_DELETE_SELF | IN_UNMOUNT)) {
        dir_lost(ctx, d, !(e->mask & IN_IGNORED));
        *lost = 1;
        return;
    }
    if (e->len == 0 || e->name[0] == '\0' || ctx->nbuckets == 0)
        return; /* the directory itself */
    /* The watches listening for this name, then those listening for any. */
    uint64_t hashes[2] = {pt_hash64(e->name, strlen(e->name), 3) | 1, ANY_NAME_HASH};
    for (int k = 0; k < 2; k++)
        for (name_ent_t *n = ctx->buckets[hashes[k] & (ctx->nbuckets - 1)]; n != NULL;
             n = n->next_in_bucket)
            if (n->hash == hashes[k] && (n->name == NULL || strcmp(n->name, e->name) == 0) &&
                n->w->dir == d && !n->w->triggered && event_concerns(n->w, e))
                trigger(ctx, n->w);
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    watch_ctx_t *ctx = io->data;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    int lost = 0;
    /* Drain everything queued, then read each concerned file once: the events of one
     * change (a temp file closed, renamed, the old version deleted) make one check. */
    for (;;) {
        ssize_t n = read(ctx->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            on_event(ctx, e, &lost);
            p += sizeof(*e) + e->len;
        }
    }
    if (lost)
        retry_lost(ctx);
    deliver_triggered(ctx);
    sweep(ctx);
}

static void on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    watch_ctx_t *ctx = t->data;
    retry_lost(ctx);
    deliver_triggered(ctx);
    sweep(ctx);
}

/* ---- contexts ----------------------------------------------------------------------- */

static watch_ctx_t *ctx_get(struct ev_loop *loop, char *err, size_t errlen)
{
    for (watch_ctx_t *c = contexts; c != NULL; c = c->next)
        if (c->loop == loop)
            return c;
    watch_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ctx->fd < 0) {
        int e = errno;
        if (e == EMFILE)
            snprintf(err, errlen,
                     "inotify unavailable: %s (or the per-user limit "
                     "fs.inotify.max_user_instances is reached)",
                     strerror(e));
        else
            snprintf(err, errlen, "inotify unavailable: %s", strerror(e));
        free(ctx);
        return NULL;
    }
    ctx->loop = loop;
    ev_io_init(&ctx->io, on_inotify, ctx->fd, EV_READ);
    ctx->io.data = ctx;
    ev_io_start(loop, &ctx->io);
    ev_init(&ctx->retry, on_retry);
    ctx->retry.data = ctx;
    ctx->next = contexts;
    contexts = ctx;
    return ctx;
}

static void ctx_free(watch_ctx_t *ctx)
{
    for (watch_ctx_t **pp = &contexts; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == ctx) {
            *pp = ctx->next;
            break;
        }
    }
    ev_io_stop(ctx->loop, &ctx->io);
    ev_timer_stop(ctx->loop, &ctx->retry);
    while (ctx->dirs != NULL)
        dir_unlink(ctx, ctx->dirs);
    close(ctx->fd); /* drops every inotify watch with it */
    free(ctx->buckets);
    free(ctx);
}

/* ---- API ---------------------------------------------------------------------------- */

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

pt_file_watch_t *pt_file_watch_add(struct ev_loop *loop, const char *path, const char *watched_dir,
                                   pt_file_watch_cb on_change, void *data, char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0') {
        snprintf(err, errlen, "the path to watch is empty");
        return NULL;
    }
    if (path[strlen(path) - 1] == '/') {
        snprintf(err, errlen, "%s: names a directory, not a file", path);
        return NULL;
    }
    if (watched_dir != NULL && watched_dir[0] == '\0') {
        snprintf(err, errlen, "%s: the watched directory is empty", path);
        return NULL;
    }
    pt_file_watch_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->path = strdup(path);
    w->dir_mode = watched_dir != NULL;
    if (watched_dir != NULL) {
        /* "dir/" and "dir" are one directory; keep "/" as it is. */
        size_t n = strlen(watched_dir);
        while (n > 1 && watched_dir[n - 1] == '/')
            n--;
        w->dir_path = strndup(watched_dir, n);
    } else {
        w->dir_path = dir_of(path);
    }
    w->cb = on_change;
    w->data = data;
    if (w->path == NULL || w->dir_path == NULL) {
        snprintf(err, errlen, "out of memory");
        watch_free(w);
        return NULL;
    }
    watch_ctx_t *ctx = ctx_get(loop, err, errlen);
    if (ctx == NULL) {
        watch_free(w);
        return NULL;
    }
    w->ctx = ctx;
    if (dir_attach(ctx, w, err, errlen) != 0) {
        watch_free(w);
        if (ctx->watches == NULL && ctx->depth == 0)
            ctx_free(ctx);
        return NULL;
    }
    if (w->dir_mode)
        names_add(w, NULL, 0);
    else
        names_compute(w);
    w->next = ctx->watches;
    if (ctx->watches != NULL)
        ctx->watches->prev = w;
    ctx->watches = w;
    return w;
}

void pt_file_watch_remove(pt_file_watch_t *w)
{
    if (w == NULL || w->removed)
        return;
    watch_ctx_t *ctx = w->ctx;
    w->removed = 1;
    w->triggered = 0; /* a pending delivery skips it */
    dir_release(ctx, w->dir);
    w->dir = NULL;
    names_clear(w);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        ctx->watches = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    /* Freed now, or after the delivery under way (it may be the watch being delivered, or
     * still queued). */
    w->next = ctx->dead;
    ctx->dead = w;
    sweep(ctx);
}

void pt_file_watch_seen(pt_file_watch_t *w, uint64_t fingerprint)
{
    w->fingerprint = fingerprint;
    w->known = 1;
}

int pt_file_watch_check(pt_file_watch_t *w)
{
    if (w == NULL || w->removed)
        return 0;
    watch_ctx_t *ctx = w->ctx;
    ctx->depth++;
    int delivered = check_one(w);
    ctx->depth--;
    sweep(ctx);
    return delivered;
}

const char *pt_file_watch_path(const pt_file_watch_t *w)
{
    return w->path;
}
