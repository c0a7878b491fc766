/* Unit tests for discovery/file_watch: a real inotify watch on a temporary directory, driven
 * by a real libev loop. Each way a file changes (in-place write, atomic rename, Kubernetes'
 * `..data` symlink swap with and without a watched directory, removal and return, a symlink
 * created, the directory itself removed and made again) is delivered exactly once; the same
 * bytes written again are delivered zero times; watches can be removed from inside any
 * callback; watches on one directory share one inotify watch; errors name their cause.
 *
 * "Exactly once" needs to know that every event of a change was handled. inotify keeps one
 * ordered queue per descriptor, and all watches of a loop share one descriptor, so each test
 * ends with a barrier: it writes a sentinel file watched in the same directory and waits for
 * that write to be delivered; by then every earlier event has been read and acted on. Waits
 * are for conditions, with a generous guard that only turns a hang into a failure. */
#include "discovery/file_watch.h"
#include "pt_test.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define GUARD_SECONDS 60.0

static struct ev_loop *loop;
static char root[PATH_MAX];

/* What one watch delivered. */
typedef struct rec {
    int n;
    char content[256]; /* of the last delivery; "" when it had none */
    char error[512];   /* of the last delivery without content */
    pt_file_watch_t *w;
    /* Set by a test: what the callback removes when called. */
    pt_file_watch_t *remove_on_call;
    int remove_self;
} rec_t;

static void on_change(void *data, const char *path, const pt_file_state_t *now)
{
    (void)path;
    rec_t *r = data;
    r->n++;
    snprintf(r->content, sizeof(r->content), "%s", now->content ? now->content : "");
    snprintf(r->error, sizeof(r->error), "%s", now->content ? "" : now->error);
    if (r->remove_on_call != NULL) {
        pt_file_watch_remove(r->remove_on_call);
        r->remove_on_call = NULL;
    }
    if (r->remove_self) {
        pt_file_watch_remove(r->w);
        r->w = NULL;
    }
}

/* ---- helpers -------------------------------------------------------------------------- */

/* snprintf for paths and messages that must fit: a test with a truncated path would test
 * something else, so it stops instead. */
static void fmt(char *out, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t len, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, len, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "test path too long: %s\n", out);
        abort();
    }
}

static void path_in(char *out, size_t len, const char *dir, const char *name)
{
    fmt(out, len, "%s/%s", dir, name);
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* A new file next to path, renamed over it: one IN_MOVED_TO on path's name. */
static int atomic_write(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    fmt(tmp, sizeof(tmp), "%s.tmp", path);
    if (write_file(tmp, text) != 0)
        return -1;
    return rename(tmp, path);
}

static int rm_rf(const char *path)
{
    char cmd[PATH_MAX + 16];
    fmt(cmd, sizeof(cmd), "rm -rf '%s'", path);
    return system(cmd);
}

static int expired;
static void on_guard(struct ev_loop *l, ev_timer *t, int revents)
{
    (void)l, (void)t, (void)revents;
    expired = 1;
}

/* Runs the loop until *counter reaches want (1) or the guard expires (0). */
static int run_until(const int *counter, int want)
{
    ev_timer guard;
    ev_timer_init(&guard, on_guard, GUARD_SECONDS, 0);
    expired = 0;
    ev_timer_start(loop, &guard);
    while (*counter < want && !expired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &guard);
    if (*counter < want)
        fprintf(stderr, "  waited %.0fs for %d deliveries, got %d\n", GUARD_SECONDS, want,
                *counter);
    return *counter >= want;
}

/* The sentinel of a directory: its file changes, and its delivery means every event queued
 * before has been handled. */
typedef struct barrier {
    char path[PATH_MAX];
    rec_t rec;
    int serial;
} barrier_t;

static int barrier_init(barrier_t *b, const char *dir)
{
    memset(b, 0, sizeof(*b));
    path_in(b->path, sizeof(b->path), dir, "zz-sentinel");
    char err[256];
    b->rec.w = pt_file_watch_add(loop, b->path, NULL, on_change, &b->rec, err, sizeof(err));
    if (b->rec.w == NULL) {
        fprintf(stderr, "  sentinel: %s\n", err);
        return -1;
    }
    return 0;
}

static int barrier_pass(barrier_t *b)
{
    char text[32];
    fmt(text, sizeof(text), "%d", ++b->serial);
    int want = b->rec.n + 1;
    return write_file(b->path, text) == 0 && run_until(&b->rec.n, want);
}

static void barrier_dispose(barrier_t *b)
{
    pt_file_watch_remove(b->rec.w);
    b->rec.w = NULL;
}

/* A fresh directory under root for one test. */
static void test_dir(char *out, size_t len, const char *name)
{
    path_in(out, len, root, name);
    mkdir(out, 0755);
}

/* A Kubernetes volume: dir/..ts<N>/file, dir/..data -> ..ts<N>, dir/file -> ..data/file. */
typedef struct volume {
    char dir[PATH_MAX];
    int version;
} volume_t;

static int volume_write_version(volume_t *v, const char *text)
{
    char d[PATH_MAX], f[PATH_MAX];
    v->version++;
    fmt(d, sizeof(d), "%s/..2026_12_07_ts%d", v->dir, v->version);
    if (mkdir(d, 0755) != 0)
        return -1;
    path_in(f, sizeof(f), d, "config.json");
    return write_file(f, text);
}

static int volume_init(volume_t *v, const char *dir, const char *text)
{
    memset(v, 0, sizeof(*v));
    fmt(v->dir, sizeof(v->dir), "%s", dir);
    char data[PATH_MAX], file[PATH_MAX], target[64];
    if (volume_write_version(v, text) != 0)
        return -1;
    fmt(target, sizeof(target), "..2026_12_07_ts%d", v->version);
    path_in(data, sizeof(data), dir, "..data");
    path_in(file, sizeof(file), dir, "config.json");
    return symlink(target, data) == 0 && symlink("..data/config.json", file) == 0 ? 0 : -1;
}

/* As the kubelet's atomic writer: new version directory, a temporary symlink to it renamed
 * over ..data, the old version removed. */
static int volume_swap(volume_t *v, const char *text)
{
    char old[PATH_MAX], tmp[PATH_MAX], data[PATH_MAX], target[64];
    fmt(old, sizeof(old), "%s/..2026_12_07_ts%d", v->dir, v->version);
    if (volume_write_version(v, text) != 0)
        return -1;
    fmt(target, sizeof(target), "..2026_12_07_ts%d", v->version);
    path_in(tmp, sizeof(tmp), v->dir, "..data_tmp");
    path_in(data, sizeof(data), v->dir, "..data");
    if (symlink(target, tmp) != 0 || rename(tmp, data) != 0)
        return -1;
    return rm_rf(old);
}

/* Number of inotify watches this process holds (from /proc/self/fdinfo). */
static int inotify_watch_count(void)
{
    char cmd[128];
    fmt(cmd, sizeof(cmd), "cat /proc/%d/fdinfo/* 2>/dev/null | grep -c '^inotify wd:'",
        (int)getpid());
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p != NULL) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_in_place_write(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[256];
    test_dir(dir, sizeof(dir), "in_place");
    path_in(path, sizeof(path), dir, "clusters.json");
    PT_CHECK(write_file(path, "one") == 0);
    rec_t r = {0};
    r.w = pt_file_watch_add(loop, path, NULL, on_change, &r, err, sizeof(err));
    PT_CHECK(r.w != NULL);
    barrier_t b;
    PT_CHECK(barrier_init(&b, dir) == 0);
    /* Nothing read yet: a check delivers what is there, once. */
    PT_CHECK_INT(pt_file_watch_check(r.w), 1);
    PT_CHECK_INT(r.n, 1);
    PT_CHECK_STR(r.content, "one");
    PT_CHECK_INT(pt_file_watch_check(r.w), 0);
    PT_CHECK(write_file(path, "two") == 0);
    PT_CHECK(run_until(&r.n, 2));
    PT_CHECK_STR(r.content, "two");
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 2);
    /* Written in several steps, closed once: one delivery of the whole. */
    FILE *f = fopen(path, "w");
    PT_CHECK(f != NULL);
    fputs("three", f);
    fflush(f);
    fputs(" and more", f);
    fclose(f);
    PT_CHECK(run_until(&r.n, 3));
    PT_CHECK_STR(r.content, "three and more");
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 3);
    pt_file_watch_remove(r.w);
    barrier_dispose(&b);
}

static void test_identical_rewrite_is_not_delivered(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[256];
    test_dir(dir, sizeof(dir), "identical");
    path_in(path, sizeof(path), dir, "listeners.yaml");
    PT_CHECK(write_file(path, "same") == 0);
    rec_t r = {0};
    r.w = pt_file_watch_add(loop, path, NULL, on_change, &r, err, sizeof(err));
    PT_CHECK(r.w != NULL);
    barrier_t b;
    PT_CHECK(barrier_init(&b, dir) == 0);
    PT_CHECK_INT(pt_file_watch_check(r.w), 1);
    /* In place, by rename, and a bare touch: the bytes are the same each time. */
    PT_CHECK(write_file(path, "same") == 0);
    PT_CHECK(atomic_write(path, "same") == 0);
    PT_CHECK(utimes(path, NULL) == 0);
    PT_CHECK(chmod(path, 0600) == 0);
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 1);
    /* Other files of the directory are not this file. */
    char other[PATH_MAX];
    path_in(other, sizeof(other), dir, "other.yaml");
    PT_CHECK(write_file(other, "x") == 0);
    PT_CHECK(atomic_write(other, "y") == 0);
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 1);
    pt_file_watch_remove(r.w);
    barrier_dispose(&b);
}

static void test_atomic_rename(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[256];
    test_dir(dir, sizeof(dir), "rename");
    path_in(path, sizeof(path), dir, "routes.json");
    PT_CHECK(write_file(path, "v1") == 0);
    /* The state the caller already has: only a change from it is delivered. */
    pt_file_state_t st;
    PT_CHECK_INT(pt_file_state_read(path, &st), 0);
    PT_CHECK_STR(st.content, "v1");
    PT_CHECK_INT(st.len, 2);
    rec_t r = {0};
    r.w = pt_file_watch_add(loop, path, NULL, on_change, &r, err, sizeof(err));
    PT_CHECK(r.w != NULL);
    pt_file_watch_seen(r.w, st.fingerprint);
    pt_file_state_dispose(&st);
    PT_CHECK_INT(pt_file_watch_check(r.w), 0);
    barrier_t b;
    PT_CHECK(barrier_init(&b, dir) == 0);
    /* The temporary file is written, closed and renamed: one delivery. */
    PT_CHECK(atomic_write(path, "v2") == 0);
    PT_CHECK(run_until(&r.n, 1));
    PT_CHECK_STR(r.content, "v2");
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 1);
    /* Several renames before the loop runs: one delivery, of the last. */
    PT_CHECK(atomic_write(path, "v3") == 0);
    PT_CHECK(atomic_write(path, "v4") == 0);
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 2);
    PT_CHECK_STR(r.content, "v4");
    pt_file_watch_remove(r.w);
    barrier_dispose(&b);
}

static void k8s_swap(int with_watched_dir)
{
    char dir[PATH_MAX], path[PATH_MAX], err[256];
    test_dir(dir, sizeof(dir), with_watched_dir ? "k8s_watched" : "k8s_file");
    volume_t v;
    PT_CHECK(volume_init(&v, dir, "{\"version_info\": \"1\"}") == 0);
    path_in(path, sizeof(path), dir, "config.json");
    rec_t r = {0};
    r.w = pt_file_watch_add(loop, path, with_watched_dir ? dir : NULL, on_change, &r, err,
                            sizeof(err));
    PT_CHECK(r.w != NULL);
    PT_CHECK_INT(pt_file_watch_check(r.w), 1);
    PT_CHECK_STR(r.content, "{\"version_info\": \"1\"}");
    barrier_t b;
    PT_CHECK(barrier_init(&b, dir) == 0);
    for (int i = 2; i <= 4; i++) {
        char text[64];
        fmt(text, sizeof(text), "{\"version_info\": \"%d\"}", i);
        PT_CHECK(volume_swap(&v, text) == 0);
        PT_CHECK(run_until(&r.n, i));
        PT_CHECK_STR(r.content, text);
        /* Directory made, files written in it, symlink made and renamed, old version
         * removed: one delivery. */
        PT_CHECK(barrier_pass(&b));
        PT_CHECK_INT(r.n, i);
    }
    /* A swap to the same content is no change. */
    PT_CHECK(volume_swap(&v, "{\"version_info\": \"4\"}") == 0);
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 4);
    pt_file_watch_remove(r.w);
    barrier_dispose(&b);
}

static void test_k8s_symlink_swap_watched_directory(void)
{
    k8s_swap(1);
}

/* Without a watched directory the file's own directory is watched, and the names its
 * symlink passes through there (..data) count: the swap is seen too. */
static void test_k8s_symlink_swap_file_directory(void)
{
    k8s_swap(0);
}

static void test_watched_directory_sees_other_entries(void)
{
    /* The file lives elsewhere; entries moved into or written in the watched directory
     * announce its changes, and nothing else does. */
    char dir[PATH_MAX], trigger_dir[PATH_MAX], path[PATH_MAX], marker[PATH_MAX], err[256];
    test_dir(dir, sizeof(dir), "announce");
    test_dir(trigger_dir, sizeof(trigger_dir), "announce/trigger");
    path_in(path, sizeof(path), dir, "eds.json");
    path_in(marker, sizeof(marker), trigger_dir, "ready");
    PT_CHECK(write_file(path, "e1") == 0);
    rec_t r = {0};
    r.w = pt_file_watch_add(loop, path, trigger_dir, on_change, &r, err, sizeof(err));
    PT_CHECK(r.w != NULL);
    PT_CHECK_INT(pt_file_watch_check(r.w), 1);
    /* The sentinel sits in the file's own directory, which r does not watch. */
    barrier_t b;
    PT_CHECK(barrier_init(&b, dir) == 0);
    PT_CHECK(write_file(path, "e2") == 0);
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 1);
    /* An entry moved into the watched directory: the file is read again. */
    PT_CHECK(atomic_write(marker, "go") == 0);
    PT_CHECK(run_until(&r.n, 2));
    PT_CHECK_STR(r.content, "e2");
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 2);
    /* A write closed there too. */
    PT_CHECK(write_file(path, "e3") == 0);
    PT_CHECK(write_file(marker, "again") == 0);
    PT_CHECK(run_until(&r.n, 3));
    PT_CHECK_STR(r.content, "e3");
    /* Entries removed there announce nothing. */
    PT_CHECK(write_file(path, "e4") == 0);
    PT_CHECK(unlink(marker) == 0);
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 3);
    pt_file_watch_remove(r.w);
    barrier_dispose(&b);
}

static void test_removed_file_and_back(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[256], want[PATH_MAX + 64];
    test_dir(dir, sizeof(dir), "removed");
    path_in(path, sizeof(path), dir, "cds.json");
    PT_CHECK(write_file(path, "c1") == 0);
    rec_t r = {0};
    r.w = pt_file_watch_add(loop, path, NULL, on_change, &r, err, sizeof(err));
    PT_CHECK(r.w != NULL);
    PT_CHECK_INT(pt_file_watch_check(r.w), 1);
    barrier_t b;
    PT_CHECK(barrier_init(&b, dir) == 0);
    PT_CHECK(unlink(path) == 0);
    PT_CHECK(run_until(&r.n, 2));
    fmt(want, sizeof(want), "%s: No such file or directory", path);
    PT_CHECK_STR(r.error, want);
    PT_CHECK_STR(r.content, "");
    /* Still missing at the next events: delivered once. */
    PT_CHECK(barrier_pass(&b));
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 2);
    /* Back by rename. */
    PT_CHECK(atomic_write(path, "c2") == 0);
    PT_CHECK(run_until(&r.n, 3));
    PT_CHECK_STR(r.content, "c2");
    /* Moved away: gone again. */
    char away[PATH_MAX];
    path_in(away, sizeof(away), dir, "cds.json.old");
    PT_CHECK(rename(path, away) == 0);
    PT_CHECK(run_until(&r.n, 4));
    PT_CHECK_STR(r.error, want);
    /* Back as a symlink made under its name (no close-write: its creation is the change). */
    PT_CHECK(symlink("cds.json.old", path) == 0);
    PT_CHECK(run_until(&r.n, 5));
    PT_CHECK_STR(r.content, "c2");
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(r.n, 5);
    pt_file_watch_remove(r.w);
    barrier_dispose(&b);
}

static void test_remove_inside_callback(void)
{
    char dir[PATH_MAX], pa[PATH_MAX], pb[PATH_MAX], err[256];
    test_dir(dir, sizeof(dir), "remove");
    path_in(pa, sizeof(pa), dir, "a.json");
    path_in(pb, sizeof(pb), dir, "b.json");
    PT_CHECK(write_file(pa, "a0") == 0);
    PT_CHECK(write_file(pb, "b0") == 0);
    rec_t ra = {0}, rb = {0};
    rb.w = pt_file_watch_add(loop, pb, NULL, on_change, &rb, err, sizeof(err));
    ra.w = pt_file_watch_add(loop, pa, NULL, on_change, &ra, err, sizeof(err));
    PT_CHECK(ra.w != NULL && rb.w != NULL);
    PT_CHECK_INT(pt_file_watch_check(ra.w), 1);
    PT_CHECK_INT(pt_file_watch_check(rb.w), 1);
    barrier_t b;
    PT_CHECK(barrier_init(&b, dir) == 0);
    /* Both change in one batch, delivered in the order of their events: a's callback
     * removes b, whose change is then never delivered, and a itself. */
    ra.remove_on_call = rb.w;
    ra.remove_self = 1;
    PT_CHECK(write_file(pa, "a1") == 0);
    PT_CHECK(write_file(pb, "b1") == 0);
    PT_CHECK(run_until(&ra.n, 2));
    PT_CHECK(ra.w == NULL);
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(rb.n, 1);
    PT_CHECK(write_file(pa, "a2") == 0);
    PT_CHECK(write_file(pb, "b2") == 0);
    PT_CHECK(barrier_pass(&b));
    PT_CHECK_INT(ra.n, 2);
    PT_CHECK_INT(rb.n, 1);
    /* The last watch of the loop removing itself from its own callback (the loop's inotify
     * descriptor goes with it), from a check. */
    barrier_dispose(&b);
    rec_t rc = {0};
    rc.w = pt_file_watch_add(loop, pa, NULL, on_change, &rc, err, sizeof(err));
    PT_CHECK(rc.w != NULL);
    rc.remove_self = 1;
    PT_CHECK_INT(pt_file_watch_check(rc.w), 1);
    PT_CHECK(rc.w == NULL);
    PT_CHECK_INT(inotify_watch_count(), 0);
    /* ...and from the loop. */
    rc.w = pt_file_watch_add(loop, pa, NULL, on_change, &rc, err, sizeof(err));
    PT_CHECK(rc.w != NULL);
    rc.remove_self = 1;
    PT_CHECK(write_file(pa, "a3") == 0);
    PT_CHECK(run_until(&rc.n, 2));
    PT_CHECK(rc.w == NULL);
    PT_CHECK_INT(inotify_watch_count(), 0);
}

/* Many files in one directory (EDS's file-per-cluster layout): events find their watches
 * by name through an index that grows and shrinks with them; each change is delivered to
 * its own watch once, removed watches get nothing, and a watched-directory watch among them
 * sees every change. */
static void test_many_files_in_one_directory(void)
{
    enum { N = 300 };
    char dir[PATH_MAX], err[256];
    test_dir(dir, sizeof(dir), "many");
    static char paths[N][PATH_MAX];
    static rec_t recs[N];
    memset(recs, 0, sizeof(recs));
    for (int i = 0; i < N; i++) {
        char name[32];
        fmt(name, sizeof(name), "c%d.json", i);
        path_in(paths[i], sizeof(paths[i]), dir, name);
        PT_CHECK(write_file(paths[i], "v0") == 0);
        recs[i].w = pt_file_watch_add(loop, paths[i], NULL, on_change, &recs[i], err,
                                      sizeof(err));
        PT_CHECK(recs[i].w != NULL);
        PT_CHECK_INT(pt_file_watch_check(recs[i].w), 1);
    }
    rec_t any = {0};
    any.w = pt_file_watch_add(loop, paths[0], dir, on_change, &any, err, sizeof(err));
    PT_CHECK(any.w != NULL);
    PT_CHECK_INT(pt_file_watch_check(any.w), 1);
    barrier_t b;
    PT_CHECK(barrier_init(&b, dir) == 0);
    PT_CHECK_INT(inotify_watch_count(), 1);
    for (int i = 1; i < N; i += 2) {
        pt_file_watch_remove(recs[i].w);
        recs[i].w = NULL;
    }
    /* One file changes: only its watch (and the directory's) is delivered. */
    PT_CHECK(atomic_write(paths[42], "v1") == 0);
    PT_CHECK(barrier_pass(&b));
    int delivered = 0;
    for (int i = 0; i < N; i++)
        delivered += recs[i].n;
    PT_CHECK_INT(delivered, N + 1);
    PT_CHECK_INT(recs[42].n, 2);
    PT_CHECK_STR(recs[42].content, "v1");
    /* Every file changes: each remaining watch once, the removed ones never. */
    for (int i = 0; i < N; i++)
        PT_CHECK(atomic_write(paths[i], "v2") == 0);
    PT_CHECK(barrier_pass(&b));
    for (int i = 0; i < N; i++) {
        int want = i % 2 ? 1 : (i == 42 ? 3 : 2);
        if (recs[i].n != want) {
            fprintf(stderr, "  c%d: %d deliveries, want %d\n", i, recs[i].n, want);
            PT_CHECK(0);
            break;
        }
    }
    PT_CHECK(any.n >= 2); /* paths[0] read again: it changed too */
    PT_CHECK_STR(any.content, "v2");
    for (int i = 0; i < N; i += 2)
        pt_file_watch_remove(recs[i].w);
    pt_file_watch_remove(any.w);
    barrier_dispose(&b);
    PT_CHECK_INT(inotify_watch_count(), 0);
}

static void test_one_inotify_watch_per_directory(void)
{
    char dir[PATH_MAX], dir2[PATH_MAX], path[4][PATH_MAX], err[256];
    test_dir(dir, sizeof(dir), "shared");
    test_dir(dir2, sizeof(dir2), "shared2");
    rec_t r[4] = {{0}};
    PT_CHECK_INT(inotify_watch_count(), 0);
    for (int i = 0; i < 3; i++) {
        char name[16];
        fmt(name, sizeof(name), "f%d.json", i);
        path_in(path[i], sizeof(path[i]), dir, name);
        PT_CHECK(write_file(path[i], "x") == 0);
        r[i].w = pt_file_watch_add(loop, path[i], NULL, on_change, &r[i], err, sizeof(err));
        PT_CHECK(r[i].w != NULL);
    }
    /* The same directory as a watched directory, spelled with a trailing slash. */
    char spelled[PATH_MAX];
    fmt(spelled, sizeof(spelled), "%s/", dir);
    r[3].w = pt_file_watch_add(loop, path[0], spelled, on_change, &r[3], err, sizeof(err));
    PT_CHECK(r[3].w != NULL);
    PT_CHECK_INT(inotify_watch_count(), 1);
    rec_t other = {0};
    char opath[PATH_MAX];
    path_in(opath, sizeof(opath), dir2, "o.json");
    other.w = pt_file_watch_add(loop, opath, NULL, on_change, &other, err, sizeof(err));
    PT_CHECK(other.w != NULL);
    PT_CHECK_INT(inotify_watch_count(), 2);
    /* Each file still gets its own changes. */
    for (int i = 0; i < 4; i++)
        PT_CHECK_INT(pt_file_watch_check(r[i].w), 1);
    PT_CHECK(write_file(path[1], "y") == 0);
    PT_CHECK(run_until(&r[1].n, 2));
    PT_CHECK_INT(r[0].n, 1);
    PT_CHECK_INT(r[2].n, 1);
    /* The directory's watch stays while any of its file watches does. */
    pt_file_watch_remove(r[0].w);
    pt_file_watch_remove(r[1].w);
    pt_file_watch_remove(r[3].w);
    PT_CHECK_INT(inotify_watch_count(), 2);
    pt_file_watch_remove(r[2].w);
    PT_CHECK_INT(inotify_watch_count(), 1);
    pt_file_watch_remove(other.w);
    PT_CHECK_INT(inotify_watch_count(), 0);
}

static void test_directory_removed_and_back(void)
{
    char parent[PATH_MAX], dir[PATH_MAX], path[PATH_MAX], err[256], want[PATH_MAX + 64];
    test_dir(parent, sizeof(parent), "lost");
    test_dir(dir, sizeof(dir), "lost/conf");
    path_in(path, sizeof(path), dir, "rds.json");
    PT_CHECK(write_file(path, "r1") == 0);
    rec_t r = {0};
    r.w = pt_file_watch_add(loop, path, NULL, on_change, &r, err, sizeof(err));
    PT_CHECK(r.w != NULL);
    PT_CHECK_INT(pt_file_watch_check(r.w), 1);
    PT_CHECK(rm_rf(dir) == 0);
    PT_CHECK(run_until(&r.n, 2));
    fmt(want, sizeof(want), "%s: No such file or directory", path);
    PT_CHECK_STR(r.error, want);
    PT_CHECK_INT(inotify_watch_count(), 0);
    /* Made again, with new content: watched again (within a second) and delivered. */
    PT_CHECK(mkdir(dir, 0755) == 0);
    PT_CHECK(write_file(path, "r2") == 0);
    PT_CHECK(run_until(&r.n, 3));
    PT_CHECK_STR(r.content, "r2");
    PT_CHECK_INT(inotify_watch_count(), 1);
    /* And followed from then on. */
    PT_CHECK(atomic_write(path, "r3") == 0);
    PT_CHECK(run_until(&r.n, 4));
    PT_CHECK_STR(r.content, "r3");
    pt_file_watch_remove(r.w);
}

static void test_errors(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[512], want[PATH_MAX + 128];
    rec_t r = {0};
    test_dir(dir, sizeof(dir), "errors");
    PT_CHECK(pt_file_watch_add(loop, "", NULL, on_change, &r, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "the path to watch is empty");
    fmt(path, sizeof(path), "%s/", dir);
    PT_CHECK(pt_file_watch_add(loop, path, NULL, on_change, &r, err, sizeof(err)) == NULL);
    fmt(want, sizeof(want), "%s/: names a directory, not a file", dir);
    PT_CHECK_STR(err, want);
    /* The file's directory is missing. */
    fmt(path, sizeof(path), "%s/missing/x.json", dir);
    PT_CHECK(pt_file_watch_add(loop, path, NULL, on_change, &r, err, sizeof(err)) == NULL);
    fmt(want, sizeof(want), "cannot watch %s/missing: No such file or directory", dir);
    PT_CHECK_STR(err, want);
    /* The watched directory is missing, or a file. */
    char wd[PATH_MAX];
    path_in(path, sizeof(path), dir, "x.json");
    path_in(wd, sizeof(wd), dir, "nodir");
    PT_CHECK(pt_file_watch_add(loop, path, wd, on_change, &r, err, sizeof(err)) == NULL);
    fmt(want, sizeof(want), "cannot watch %s: No such file or directory", wd);
    PT_CHECK_STR(err, want);
    PT_CHECK(write_file(path, "x") == 0);
    PT_CHECK(pt_file_watch_add(loop, path, path, on_change, &r, err, sizeof(err)) == NULL);
    fmt(want, sizeof(want), "cannot watch %s: Not a directory", path);
    PT_CHECK_STR(err, want);
    PT_CHECK(pt_file_watch_add(loop, path, "", on_change, &r, err, sizeof(err)) == NULL);
    fmt(want, sizeof(want), "%s: the watched directory is empty", path);
    PT_CHECK_STR(err, want);
    PT_CHECK_INT(inotify_watch_count(), 0);
    /* No descriptor left for inotify: the first watch of a loop says so. */
    struct rlimit saved;
    PT_CHECK(getrlimit(RLIMIT_NOFILE, &saved) == 0);
    int lowest = dup(0);
    PT_CHECK(lowest >= 0);
    close(lowest);
    struct rlimit low = {(rlim_t)lowest, saved.rlim_max};
    PT_CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    pt_file_watch_t *w = pt_file_watch_add(loop, path, NULL, on_change, &r, err, sizeof(err));
    setrlimit(RLIMIT_NOFILE, &saved);
    PT_CHECK(w == NULL);
    PT_CHECK_STR(err, "inotify unavailable: Too many open files (or the per-user limit "
                      "fs.inotify.max_user_instances is reached)");
    /* A read that fails says why, bounded like any config document. */
    pt_file_state_t st;
    PT_CHECK_INT(pt_file_state_read(dir, &st), -1);
    PT_CHECK(st.content == NULL);
    fmt(want, sizeof(want), "%s: Is a directory", dir);
    PT_CHECK_STR(st.error, want);
    pt_file_state_t st2;
    PT_CHECK_INT(pt_file_state_read(wd, &st2), -1);
    PT_CHECK(st2.fingerprint != st.fingerprint);
    pt_file_state_dispose(&st);
    pt_file_state_dispose(&st2);
    PT_CHECK_INT(pt_file_state_read("/dev/zero", &st), -1);
    PT_CHECK_STR(st.error, "/dev/zero: larger than 67108864 bytes (64 MiB)");
    pt_file_state_dispose(&st);
}

int main(void)
{
    fmt(root, sizeof(root), "/tmp/pt_ut_file_watch_XXXXXX");
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    PT_RUN(test_in_place_write);
    PT_RUN(test_identical_rewrite_is_not_delivered);
    PT_RUN(test_atomic_rename);
    PT_RUN(test_k8s_symlink_swap_watched_directory);
    PT_RUN(test_k8s_symlink_swap_file_directory);
    PT_RUN(test_watched_directory_sees_other_entries);
    PT_RUN(test_removed_file_and_back);
    PT_RUN(test_remove_inside_callback);
    PT_RUN(test_many_files_in_one_directory);
    PT_RUN(test_one_inotify_watch_per_directory);
    PT_RUN(test_directory_removed_and_back);
    PT_RUN(test_errors);
    ev_loop_destroy(loop);
    rm_rf(root);
    PT_TEST_EXIT();
}
