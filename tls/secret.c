#include "tls/secret.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "proxy/config_reader.h"
#include "proxy/log.h"
#include "proxy/stats.h"

#define SECRET_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

/* One context's use of one secret. */
typedef struct secret_use {
    pt_tls_context_t *ctx;
    const pt_sds_ref_t *ref;
    int is_cert; /* tls_certificate; else validation_context */
    char *dir;   /* directory watched for it */
    uint64_t hash; /* of the file content last applied (0 = never) */
    char *origin;  /* "sds:<name> (<path>)", shown by /certs */
    int wd;      /* inotify watch of dir */
    pt_stat_t update_success, update_rejected;
    struct secret_use *next;
} secret_use_t;

static secret_use_t *uses;
static int inotify_fd = -1;
static ev_io inotify_io;
static struct ev_loop *watch_loop;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

static char *dir_of(const char *path)
{
    char *d = strdup(path);
    if (d == NULL)
        return NULL;
    char *slash = strrchr(d, '/');
    if (slash == NULL) {
        free(d);
        return strdup(".");
    }
    if (slash == d)
        slash[1] = '\0';
    else
        *slash = '\0';
    return d;
}

/* Material of one secret as read from the file. */
typedef struct secret_material {
    char *cert, *key, *ca;
} secret_material_t;

static void material_dispose(secret_material_t *m)
{
    free(m->cert);
    if (m->key != NULL) {
        memset(m->key, 0, strlen(m->key));
        free(m->key);
    }
    free(m->ca);
    memset(m, 0, sizeof(*m));
}

/* Reads the secret `name` from the DiscoveryResponse file at path. */
static int read_secret(const char *path, const char *name, int want_cert, secret_material_t *out,
                       uint64_t *hash, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    json_t *root = pt_config_load_file(path, err, errlen);
    if (root == NULL)
        return -1;
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    *hash = text ? fnv(text, strlen(text)) : 1;
    free(text);
    int rc = -1;
    pt_arena_t arena = {0};
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    /* The DiscoveryResponse envelope: version_info, type_url, nonce and control_plane are
     * what a control plane (or a tool writing the file) puts there, and Envoy's own file
     * SDS examples carry version_info. They say nothing about the secret: accepted and
     * ignored (only a type_url naming something else is an error). */
    const char *type_url, *ignored;
    pt_cfg_string(&r, "version_info", &ignored, NULL);
    pt_cfg_string(&r, "nonce", &ignored, NULL);
    pt_cfg_get(&r, "canary");
    pt_cfg_get(&r, "control_plane");
    if (pt_cfg_string(&r, "type_url", &type_url, NULL) > 0 && strcmp(type_url, SECRET_TYPE) != 0)
        pt_cfg_error(&r, "type_url", "is not %s", SECRET_TYPE);
    int present, found = 0;
    size_t n = pt_cfg_array(&r, "resources", &present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(&r, i) <= 0)
            continue;
        const char *type, *rname;
        pt_cfg_string(&r, "@type", &type, NULL);
        pt_cfg_string(&r, "name", &rname, NULL);
        if (type == NULL || strcmp(type, SECRET_TYPE) != 0) {
            pt_cfg_error(&r, "@type", "is not %s", SECRET_TYPE);
            pt_cfg_skip_rest(&r);
        } else if (rname == NULL || strcmp(rname, name) != 0) {
            pt_cfg_skip_rest(&r); /* another secret in the same file */
        } else {
            found = 1;
            static const char *const secret_unsupported[] = {"session_ticket_keys",
                                                             "generic_secret", NULL};
            pt_cfg_unsupported(&r, secret_unsupported);
            pt_data_source_t cert = {0}, key = {0}, ca = {0};
            if (pt_cfg_enter(&r, "tls_certificate") > 0) {
                static const char *const tc_unsupported[] = {"password", "ocsp_staple",
                                                             "watched_directory", NULL};
                pt_cfg_unsupported(&r, tc_unsupported);
                if (pt_data_source_parse(&r, &arena, "certificate_chain", &cert) == 0)
                    pt_cfg_error(&r, "certificate_chain", "is required");
                if (pt_data_source_parse(&r, &arena, "private_key", &key) == 0)
                    pt_cfg_error(&r, "private_key", "is required");
                pt_cfg_leave(&r);
            }
            if (pt_cfg_enter(&r, "validation_context") > 0) {
                if (pt_data_source_parse(&r, &arena, "trusted_ca", &ca) == 0)
                    pt_cfg_error(&r, "trusted_ca", "is required");
                pt_cfg_leave(&r);
            }
            if (pt_cfg_ok(&r)) {
                if (want_cert && cert.filename == NULL && cert.inline_data == NULL)
                    pt_cfg_error(&r, NULL, "secret \"%s\" has no tls_certificate", name);
                else if (!want_cert && ca.filename == NULL && ca.inline_data == NULL)
                    pt_cfg_error(&r, NULL, "secret \"%s\" has no validation_context", name);
            }
            if (pt_cfg_ok(&r)) {
                if (want_cert) {
                    out->cert = pt_data_source_read(&cert, NULL, err, errlen);
                    out->key = out->cert ? pt_data_source_read(&key, NULL, err, errlen) : NULL;
                    rc = out->key ? 0 : -1;
                } else {
                    out->ca = pt_data_source_read(&ca, NULL, err, errlen);
                    rc = out->ca ? 0 : -1;
                }
            }
        }
        pt_cfg_leave(&r);
    }
    if (present)
        pt_cfg_leave_array(&r);
    pt_cfg_finish(&r);
    if (!pt_cfg_ok(&r)) {
        snprintf(err, errlen, "%s: %s", path, r.errors[0]);
        rc = -1;
    } else if (!found) {
        snprintf(err, errlen, "%s: no secret named \"%s\"", path, name);
        rc = -1;
    }
    pt_cfg_dispose(&r);
    pt_arena_dispose(&arena);
    json_decref(root);
    if (rc != 0)
        material_dispose(out);
    return rc;
}

/* Loads or reloads one use. initial: at attach time, where failure is a config error. */
static int apply(secret_use_t *u, int initial, char *err, size_t errlen)
{
    secret_material_t m;
    uint64_t hash;
    if (read_secret(u->ref->path, u->ref->name, u->is_cert, &m, &hash, err, errlen) != 0)
        return -1;
    /* Identity of the secret is its material, not the file naming it: certificate files
     * swapped behind an unchanged secret file count as a change. */
    hash = 1469598103934665603ull;
    const char *parts[3] = {m.cert, m.key, m.ca};
    for (int i = 0; i < 3; i++)
        if (parts[i] != NULL)
            hash ^= fnv(parts[i], strlen(parts[i])) * (uint64_t)(i + 1);
    if (!initial && hash == u->hash) {
        material_dispose(&m);
        return 0; /* the directory changed, not this secret */
    }
    int rc = pt_tls_context_update(u->ctx, m.cert, m.key, m.ca, u->origin, err, errlen);
    material_dispose(&m);
    if (rc == 0)
        u->hash = hash;
    return rc;
}

static int add_watch(secret_use_t *u)
{
    if (inotify_fd < 0)
        return 0; /* not watching yet; pt_secret_watch_start adds it */
    u->wd = inotify_add_watch(inotify_fd, u->dir,
                              IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB |
                                  IN_MOVE_SELF | IN_DELETE_SELF);
    if (u->wd < 0)
        pt_warn("sds: cannot watch %s: %s (rotation by file will not be seen)", u->dir,
                strerror(errno));
    return 0;
}

static int attach_one(pt_tls_context_t *ctx, const pt_sds_ref_t *ref, int is_cert, char *err,
                      size_t errlen)
{
    secret_use_t *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    u->ctx = ctx;
    u->ref = ref;
    u->is_cert = is_cert;
    u->wd = -1;
    u->dir = ref->watched_directory ? strdup(ref->watched_directory) : dir_of(ref->path);
    size_t olen = strlen(ref->name) + strlen(ref->path) + 16;
    u->origin = malloc(olen);
    if (u->origin != NULL)
        snprintf(u->origin, olen, "sds:%s (%s)", ref->name, ref->path);
    if (u->dir == NULL || u->origin == NULL || apply(u, 1, err, errlen) != 0) {
        if (u->dir == NULL || u->origin == NULL)
            snprintf(err, errlen, "out of memory");
        free(u->dir);
        free(u->origin);
        free(u);
        return -1;
    }
    u->update_success = pt_stats_counter("sds", "envoy_sds_secret", ref->name, "update_success");
    u->update_rejected = pt_stats_counter("sds", "envoy_sds_secret", ref->name, "update_rejected");
    u->next = uses;
    uses = u;
    add_watch(u);
    return 0;
}

int pt_secret_attach(pt_tls_context_t *ctx, char *err, size_t errlen)
{
    const pt_tls_settings_t *t = ctx->settings;
    if (t->cert_sds != NULL && attach_one(ctx, t->cert_sds, 1, err, errlen) != 0)
        return -1;
    if (t->validation_sds != NULL && attach_one(ctx, t->validation_sds, 0, err, errlen) != 0) {
        pt_secret_detach(ctx);
        return -1;
    }
    return 0;
}

void pt_secret_detach(pt_tls_context_t *ctx)
{
    secret_use_t **pp = &uses;
    while (*pp != NULL) {
        secret_use_t *u = *pp;
        if (u->ctx != ctx) {
            pp = &u->next;
            continue;
        }
        *pp = u->next;
        /* The watch may be shared with another use of the same directory: keep it; a
         * stray event only causes a harmless rescan. */
        free(u->dir);
        free(u->origin);
        free(u);
    }
}

int pt_secret_refresh(void)
{
    int changed = 0;
    for (secret_use_t *u = uses; u != NULL; u = u->next) {
        uint64_t before = u->hash;
        char err[512];
        if (apply(u, 0, err, sizeof(err)) != 0) {
            pt_error("sds: rejected update of secret \"%s\": %s; keeping the current one",
                     u->ref->name, err);
            pt_stat_inc(u->update_rejected);
            continue;
        }
        if (u->hash != before) {
            pt_info("sds: secret \"%s\" updated from %s", u->ref->name, u->ref->path);
            pt_stat_inc(u->update_success);
            changed++;
        }
    }
    return changed;
}

static void on_inotify(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int any = 0;
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        any = 1;
    }
    if (!any)
        return;
    /* Re-read everything: cheap (a few files) and robust to every way a file can change
     * (symlink swaps change files whose own names never appear in events). */
    pt_secret_refresh();
    /* A watched directory that was replaced needs a new watch. */
    for (secret_use_t *u = uses; u != NULL; u = u->next)
        add_watch(u);
}

int pt_secret_watch_start(struct ev_loop *loop)
{
    if (inotify_fd >= 0 || uses == NULL)
        return 0;
    inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd < 0) {
        pt_warn("sds: inotify unavailable: %s", strerror(errno));
        return -1;
    }
    for (secret_use_t *u = uses; u != NULL; u = u->next)
        add_watch(u);
    watch_loop = loop;
    ev_io_init(&inotify_io, on_inotify, inotify_fd, EV_READ);
    ev_io_start(loop, &inotify_io);
    return 0;
}

void pt_secret_watch_stop(void)
{
    if (inotify_fd < 0)
        return;
    if (watch_loop != NULL)
        ev_io_stop(watch_loop, &inotify_io);
    close(inotify_fd);
    inotify_fd = -1;
    watch_loop = NULL;
}
