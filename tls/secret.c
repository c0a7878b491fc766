#include "tls/secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/file_subscription.h"
#include "discovery/file_watch.h"
#include "discovery/subscription.h"
#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/time.h"

#define SECRET_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

/* The pieces of material a secret holds. */
enum { CERT, KEY, CA, NPARTS };

typedef struct remote remote_t;

/* One secret as used by contexts: see secret.h. */
typedef struct provider {
    int is_cert; /* tls_certificate; else validation_context */
    char *name, *key, *watched_dir; /* key: the source's (the file's path for a file) */
    char *origin;                /* "sds:<name> (<path or source>)", shown by /certs */
    pt_file_subscription_t *sub; /* a file's; NULL once watching stopped */
    remote_t *feed;              /* from a control plane: the subscription to the name */
    uint64_t warm_until_ms;      /* from a control plane, not come yet: warming until then */
    /* The material in force and where it comes from (src points into arena). */
    pt_arena_t arena;
    pt_data_source_t src[NPARTS];
    char *pem[NPARTS];
    uint64_t hash;
    int loaded;
    uint64_t failed_state; /* what the last failed rotation read (0: none since) */
    /* On src[i].filename while watching: [0] in its own directory, [1] in watched_dir. */
    pt_file_watch_t *file_watch[NPARTS][2];
    pt_tls_context_t **ctxs;
    size_t nctxs, cap;
    pt_stat_t key_rotation_failed;
    struct provider *next;
} provider_t;

/* A secret from a control plane (sds_config `ads` or api_config_source): one subscription
 * to its name, shared by its certificate's provider and its CA's (a secret may hold both),
 * and the resource last accepted, for a provider that comes later. */
struct remote {
    char *key, *name;
    pt_subscription_t *sub;
    provider_t *users[2]; /* [0] the CA's, [1] the certificate's */
    json_t *resource;     /* the Secret last accepted, or NULL */
    remote_t *next;
};

static provider_t *providers;
static remote_t *remotes;
static struct ev_loop *watch_loop;

/* A context's secrets from control planes that have not come, and until when it warms for
 * them (the latest of their initial_fetch_timeouts). */
static void refresh_missing(pt_tls_context_t *ctx)
{
    int missing = 0;
    uint64_t until = 0;
    for (provider_t *p = providers; p != NULL; p = p->next) {
        if (p->loaded || p->feed == NULL)
            continue;
        for (size_t i = 0; i < p->nctxs; i++) {
            if (p->ctxs[i] != ctx)
                continue;
            missing++;
            if (p->warm_until_ms > until)
                until = p->warm_until_ms;
            break;
        }
    }
    ctx->secrets_warm_until_ms = until;
    atomic_store_explicit(&ctx->secrets_missing, missing, memory_order_relaxed);
}

static uint64_t fnv(const char *s, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Identity of a secret is its material, not the files naming it: certificate files swapped
 * behind an unchanged secret file are a change, a secret file rewritten around the same
 * material is none. */
static uint64_t material_hash(char *const pem[NPARTS])
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < NPARTS; i++) {
        char tag = (char)('0' + i + (pem[i] != NULL ? 8 : 0));
        h = fnv(&tag, 1, h);
        if (pem[i] != NULL)
            h = fnv(pem[i], strlen(pem[i]) + 1, h);
    }
    return h;
}

static void wipe(char *pem[NPARTS])
{
    for (int i = 0; i < NPARTS; i++) {
        if (pem[i] != NULL) {
            memset(pem[i], 0, strlen(pem[i]));
            free(pem[i]);
            pem[i] = NULL;
        }
    }
}

static int read_material(const pt_data_source_t src[NPARTS], char *pem[NPARTS], char *err,
                         size_t errlen)
{
    for (int i = 0; i < NPARTS; i++) {
        pem[i] = NULL;
        if (src[i].filename == NULL && src[i].inline_data == NULL)
            continue;
        pem[i] = pt_data_source_read(&src[i], NULL, err, errlen);
        if (pem[i] == NULL) {
            wipe(pem);
            return -1;
        }
    }
    return 0;
}

/* Installs material in every context using p, or in none (err says why). pem is taken
 * either way. Unchanged material is no update. from: where the change was seen, for the
 * log (NULL at the first load). */
static int install(provider_t *p, char *pem[NPARTS], const char *from, char *err, size_t errlen)
{
    uint64_t h = material_hash(pem);
    if (p->loaded && h == p->hash) {
        wipe(pem);
        return 0;
    }
    int rc = p->is_cert ? pt_tls_check_material(pem[CERT], pem[KEY], NULL, err, errlen)
                        : pt_tls_check_material(NULL, NULL, pem[CA], err, errlen);
    pt_tls_pending_t *pending = calloc(p->nctxs ? p->nctxs : 1, sizeof(*pending));
    if (pending == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    size_t prepared = 0;
    for (; rc == 0 && prepared < p->nctxs; prepared++)
        rc = pt_tls_context_prepare(p->ctxs[prepared], pem[CERT], pem[KEY], pem[CA],
                                    &pending[prepared], err, errlen);
    if (rc != 0) {
        for (size_t i = 0; pending != NULL && i < prepared; i++)
            pt_tls_pending_dispose(&pending[i]);
        free(pending);
        wipe(pem);
        return -1;
    }
    for (size_t i = 0; i < p->nctxs; i++) {
        pt_tls_context_commit(p->ctxs[i], &pending[i], p->origin);
        pt_stat_inc(p->ctxs[i]->update_by_sds);
    }
    free(pending);
    wipe(p->pem);
    memcpy(p->pem, pem, sizeof(p->pem));
    p->hash = h;
    int first = !p->loaded;
    p->loaded = 1;
    p->failed_state = 0;
    if (first && p->feed != NULL) {
        /* Its contexts may now make handshakes, their listeners listen. */
        pt_info("sds: secret \"%s\" came from %s", p->name, p->key);
        for (size_t i = 0; i < p->nctxs; i++)
            refresh_missing(p->ctxs[i]);
        if (p->nctxs > 0)
            pt_tls_secrets_changed();
    } else if (from != NULL) {
        pt_info("sds: secret \"%s\" updated from %s", p->name, from);
    }
    return 0;
}

/* ---- watching the files a secret names ---------------------------------------------- */

static void on_file_change(void *data, const char *path, const pt_file_state_t *now)
{
    (void)now; /* the material is read from all its files, this one among them */
    provider_t *p = data;
    char *pem[NPARTS], err[1024];
    /* What this change amounts to: the material read, or why it could not be. Several
     * watches see one change (the certificate's and the key's, a swap seen in two
     * directories): a failed state is reported and counted once. */
    uint64_t state;
    int rc = read_material(p->src, pem, err, sizeof(err));
    if (rc != 0) {
        state = fnv(err, strlen(err), 1469598103934665603ull) | 1;
    } else {
        state = material_hash(pem);
        if (state == p->failed_state) {
            wipe(pem);
            return;
        }
        rc = install(p, pem, path, err, sizeof(err));
    }
    if (rc == 0) {
        p->failed_state = 0;
        return;
    }
    if (state == p->failed_state)
        return;
    p->failed_state = state;
    pt_error("sds: rejected rotation of secret \"%s\" after a change of %s: %s; keeping the "
             "current one",
             p->name, path, err);
    pt_stat_inc(p->key_rotation_failed);
}

/* Watches exactly the files p's material comes from, once the main loop runs: each in its
 * own directory (as Envoy watches a secret's certificate and key files), and, when the
 * secret file has a watched directory, there too, so that a swap announced there (a
 * Kubernetes volume's ..data) is seen for them as well. A new watch reads its file at once:
 * a change made since the material was read is not missed. */
static void sync_file_watches(provider_t *p)
{
    for (int i = 0; i < NPARTS; i++) {
        const char *want = watch_loop != NULL ? p->src[i].filename : NULL;
        for (int j = 0; j < i && want != NULL; j++)
            if (p->src[j].filename != NULL && strcmp(p->src[j].filename, want) == 0)
                want = NULL; /* one watch per file */
        for (int k = 0; k < 2; k++) {
            const char *dir = k == 0 ? NULL : p->watched_dir;
            const char *w_want = k == 0 || dir != NULL ? want : NULL;
            pt_file_watch_t *w = p->file_watch[i][k];
            if (w != NULL && (w_want == NULL || strcmp(pt_file_watch_path(w), w_want) != 0)) {
                pt_file_watch_remove(w);
                p->file_watch[i][k] = NULL;
            }
            if (w_want == NULL || p->file_watch[i][k] != NULL)
                continue;
            char err[512];
            w = pt_file_watch_add(watch_loop, w_want, dir, on_file_change, p, err, sizeof(err));
            p->file_watch[i][k] = w;
            if (w == NULL)
                pt_warn("sds: secret \"%s\": %s (changes of %s will not be seen)", p->name, err,
                        w_want);
            else
                pt_file_watch_check(w);
        }
    }
}

/* ---- updates of the secret file ---------------------------------------------------- */

static void join_errors(const pt_cfg_t *r, char *err, size_t errlen)
{
    size_t used = 0;
    err[0] = '\0';
    for (size_t i = 0; i < r->nerrors && used + 1 < errlen; i++) {
        int n = snprintf(err + used, errlen - used, "%s%s", i ? "; " : "", r->errors[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* Reads one Secret resource into src (allocated in arena). */
static int parse_secret(const provider_t *p, const pt_discovery_resource_t *res, pt_arena_t *arena,
                        pt_data_source_t src[NPARTS], char *err, size_t errlen)
{
    pt_cfg_t r;
    pt_discovery_resource_reader(res, &r);
    const char *name;
    pt_cfg_string(&r, "name", &name, NULL);
    static const char *const secret_unsupported[] = {"session_ticket_keys", "generic_secret", NULL};
    pt_cfg_unsupported(&r, secret_unsupported);
    if (pt_cfg_enter(&r, "tls_certificate") > 0) {
        static const char *const tc_unsupported[] = {"password", "ocsp_staple", "watched_directory",
                                                     NULL};
        pt_cfg_unsupported(&r, tc_unsupported);
        if (pt_data_source_parse(&r, arena, "certificate_chain", &src[CERT]) == 0)
            pt_cfg_error(&r, "certificate_chain", "is required");
        if (pt_data_source_parse(&r, arena, "private_key", &src[KEY]) == 0)
            pt_cfg_error(&r, "private_key", "is required");
        pt_cfg_leave(&r);
    }
    if (pt_cfg_enter(&r, "validation_context") > 0) {
        if (pt_data_source_parse(&r, arena, "trusted_ca", &src[CA]) == 0)
            pt_cfg_error(&r, "trusted_ca", "is required");
        pt_cfg_leave(&r);
    }
    if (pt_cfg_ok(&r)) {
        if (p->is_cert && src[CERT].filename == NULL && src[CERT].inline_data == NULL)
            pt_cfg_error(&r, NULL, "secret \"%s\" has no tls_certificate", p->name);
        else if (!p->is_cert && src[CA].filename == NULL && src[CA].inline_data == NULL)
            pt_cfg_error(&r, NULL, "secret \"%s\" has no validation_context", p->name);
    }
    pt_cfg_finish(&r);
    int rc = pt_cfg_ok(&r) ? 0 : -1;
    if (rc != 0)
        join_errors(&r, err, errlen);
    pt_cfg_dispose(&r);
    /* A secret holding both kinds serves each use with its own. */
    if (p->is_cert)
        memset(&src[CA], 0, sizeof(src[CA]));
    else
        memset(src, 0, 2 * sizeof(src[0]));
    return rc;
}

/* Takes the Secret res as p's material: parsed, read, checked and installed in every
 * context using p, or nothing changes (why in err). */
static int provider_take(provider_t *p, const pt_discovery_resource_t *res, char *err,
                         size_t errlen)
{
    pt_arena_t arena = {0};
    pt_data_source_t src[NPARTS] = {{0}};
    char *pem[NPARTS], why[1024];
    if (parse_secret(p, res, &arena, src, err, errlen) != 0)
        goto fail;
    if (read_material(src, pem, why, sizeof(why)) != 0 ||
        install(p, pem, p->loaded ? p->key : NULL, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s.%s: %s", res->path,
                 p->is_cert ? "tls_certificate" : "validation_context", why);
        goto fail;
    }
    /* In force: where the material comes from is what the next file change re-reads. */
    pt_arena_dispose(&p->arena);
    p->arena = arena;
    memcpy(p->src, src, sizeof(p->src));
    sync_file_watches(p);
    return 0;
fail:
    pt_arena_dispose(&arena);
    return -1;
}

/* Whether p could take the Secret res: parsed, its files read, its material checked (PEM,
 * key matching the certificate, dates); nothing is installed. */
static int provider_check(provider_t *p, const pt_discovery_resource_t *res, char *err,
                          size_t errlen)
{
    pt_arena_t arena = {0};
    pt_data_source_t src[NPARTS] = {{0}};
    char *pem[NPARTS], why[1024];
    int rc = parse_secret(p, res, &arena, src, err, errlen);
    if (rc == 0) {
        rc = read_material(src, pem, why, sizeof(why));
        if (rc == 0) {
            rc = p->is_cert ? pt_tls_check_material(pem[CERT], pem[KEY], NULL, why, sizeof(why))
                            : pt_tls_check_material(NULL, NULL, pem[CA], why, sizeof(why));
            wipe(pem);
        }
        if (rc != 0)
            snprintf(err, errlen, "%s.%s: %s", res->path,
                     p->is_cert ? "tls_certificate" : "validation_context", why);
    }
    pt_arena_dispose(&arena);
    return rc;
}

/* A file's update: the secret must be in it (other secrets may share the file). */
static int on_update(void *data, const pt_discovery_response_t *resp, char *err, size_t errlen)
{
    provider_t *p = data;
    for (size_t i = 0; i < resp->nresources; i++)
        if (resp->resources[i].name != NULL && strcmp(resp->resources[i].name, p->name) == 0)
            return provider_take(p, &resp->resources[i], err, errlen);
    snprintf(err, errlen, "no secret named \"%s\"", p->name);
    return -1;
}

/* A control plane's update of the secret's type: the secret, if it has it (a response may
 * carry other secrets of the same stream, or not this one yet), for each of its users; all
 * of them take it or the update is refused. */
static int on_remote_update(void *data, const pt_discovery_response_t *resp, char *err,
                            size_t errlen)
{
    remote_t *r = data;
    const pt_discovery_resource_t *res = NULL;
    for (size_t i = 0; i < resp->nresources && res == NULL; i++)
        if (resp->resources[i].name != NULL && strcmp(resp->resources[i].name, r->name) == 0)
            res = &resp->resources[i];
    if (res == NULL)
        return 0; /* not (yet) sent: what is in force stays */
    /* Checked for every use first, so that one use refusing it leaves the other as it was. */
    for (int k = 1; k >= 0; k--)
        if (r->users[k] != NULL && provider_check(r->users[k], res, err, errlen) != 0)
            return -1;
    for (int k = 1; k >= 0; k--)
        if (r->users[k] != NULL && provider_take(r->users[k], res, err, errlen) != 0)
            return -1;
    json_t *copy = json_deep_copy(res->json);
    if (copy != NULL) {
        json_decref(r->resource);
        r->resource = copy;
    }
    return 0;
}

static void remote_free(remote_t *r)
{
    for (remote_t **pp = &remotes; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    pt_subscription_free(r->sub);
    json_decref(r->resource);
    free(r->key);
    free(r->name);
    free(r);
}

/* The subscription to the name at the source ref says, shared by the secret's users. */
static remote_t *remote_get(const pt_sds_ref_t *ref, char *err, size_t errlen)
{
    for (remote_t *r = remotes; r != NULL; r = r->next)
        if (strcmp(r->key, ref->source.key) == 0 && strcmp(r->name, ref->name) == 0)
            return r;
    remote_t *r = calloc(1, sizeof(*r));
    char what[300];
    snprintf(what, sizeof(what), "secret \"%.280s\"", ref->name);
    if (r == NULL || (r->key = strdup(ref->source.key)) == NULL ||
        (r->name = strdup(ref->name)) == NULL) {
        if (r != NULL) {
            free(r->key);
            free(r);
        }
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const pt_file_subscription_config_t cfg = {
        .type_url = SECRET_TYPE,
        .stat_scope = "sds",
        .stat_tag = "envoy_sds_secret",
        .stat_tag_value = ref->name,
        .what = what,
    };
    r->sub = pt_subscription_new(&ref->source, &cfg, on_remote_update, r, err, errlen);
    const char *names[] = {ref->name};
    if (r->sub == NULL || pt_subscription_set_names(r->sub, names, 1) != 0) {
        if (r->sub != NULL)
            snprintf(err, errlen, "out of memory");
        pt_subscription_free(r->sub);
        free(r->key);
        free(r->name);
        free(r);
        return NULL;
    }
    r->next = remotes;
    remotes = r;
    return r;
}

/* ---- providers ---------------------------------------------------------------------- */

static int same(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void provider_watch(provider_t *p)
{
    char err[1024];
    if (p->sub != NULL && pt_file_subscription_watch(p->sub, watch_loop, err, sizeof(err)) != 0)
        pt_warn("sds: secret \"%s\": %s (rotation by file will not be seen)", p->name, err);
    sync_file_watches(p);
}

static void provider_unwatch(provider_t *p)
{
    for (int i = 0; i < NPARTS; i++) {
        for (int k = 0; k < 2; k++) {
            pt_file_watch_remove(p->file_watch[i][k]);
            p->file_watch[i][k] = NULL;
        }
    }
    pt_file_subscription_free(p->sub);
    p->sub = NULL;
}

static void provider_free(provider_t *p)
{
    provider_unwatch(p);
    if (p->feed != NULL) {
        remote_t *r = p->feed;
        r->users[p->is_cert != 0] = NULL;
        if (r->users[0] == NULL && r->users[1] == NULL)
            remote_free(r);
    }
    wipe(p->pem);
    pt_arena_dispose(&p->arena);
    free(p->name);
    free(p->key);
    free(p->watched_dir);
    free(p->origin);
    free(p->ctxs);
    free(p);
}

static void provider_unlink(provider_t *p)
{
    for (provider_t **pp = &providers; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            return;
        }
    }
}

/* The provider of the secret ref names, made when this is its first use: from a file, read
 * now (a secret that cannot be read fails the config); from a control plane, asked for (it
 * comes when the control plane sends it; its contexts wait for it). */
static provider_t *provider_get(int is_cert, const pt_sds_ref_t *ref, char *err, size_t errlen)
{
    const pt_config_source_t *src = &ref->source;
    for (provider_t *p = providers; p != NULL; p = p->next)
        if (p->is_cert == is_cert && strcmp(p->name, ref->name) == 0 &&
            strcmp(p->key, src->key) == 0 && same(p->watched_dir, src->watched_directory))
            return p;
    provider_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->is_cert = is_cert;
    p->name = strdup(ref->name);
    p->key = strdup(src->key);
    p->watched_dir = src->watched_directory ? strdup(src->watched_directory) : NULL;
    size_t olen = strlen(ref->name) + strlen(src->key) + 16;
    p->origin = malloc(olen);
    size_t wlen = strlen(ref->name) + 16;
    char *what = malloc(wlen);
    if (p->name == NULL || p->key == NULL || p->origin == NULL || what == NULL ||
        (src->watched_directory != NULL && p->watched_dir == NULL)) {
        snprintf(err, errlen, "out of memory");
        free(what);
        provider_free(p);
        return NULL;
    }
    snprintf(p->origin, olen, "sds:%s (%s)", ref->name, src->key);
    snprintf(what, wlen, "secret \"%s\"", ref->name);
    p->key_rotation_failed =
        pt_stats_counter("sds", "envoy_sds_secret", ref->name, "key_rotation_failed");
    if (src->ads || src->api != NULL) {
        free(what);
        remote_t *r = remote_get(ref, err, errlen);
        if (r == NULL) {
            provider_free(p);
            return NULL;
        }
        p->feed = r;
        r->users[is_cert != 0] = p;
        p->warm_until_ms = src->initial_fetch_timeout_ms == 0
                               ? UINT64_MAX
                               : pt_now_ms() + src->initial_fetch_timeout_ms;
        p->next = providers;
        providers = p;
        if (r->resource != NULL) {
            /* The secret came already, for its other use: this one takes it too. */
            pt_discovery_resource_t res = {.json = r->resource, .name = r->name};
            snprintf(res.path, sizeof(res.path), "resources[0]");
            char why[1024];
            if (provider_take(p, &res, why, sizeof(why)) != 0)
                pt_warn("sds: secret \"%s\": %s (waiting for an update)", p->name, why);
        }
        return p;
    }
    const pt_file_subscription_config_t cfg = {
        .path = src->path,
        .watched_directory = src->watched_directory,
        .type_url = SECRET_TYPE,
        .stat_scope = "sds",
        .stat_tag = "envoy_sds_secret",
        .stat_tag_value = ref->name,
        .what = what,
    };
    p->sub = pt_file_subscription_new(&cfg, on_update, p);
    free(what);
    if (p->sub == NULL) {
        snprintf(err, errlen, "out of memory");
        provider_free(p);
        return NULL;
    }
    if (pt_file_subscription_load(p->sub, err, errlen) != PT_UPDATE_ACCEPTED) {
        provider_free(p);
        return NULL;
    }
    p->next = providers;
    providers = p;
    if (watch_loop != NULL)
        provider_watch(p);
    return p;
}

/* Gives ctx the material in force and registers it for updates. */
static int provider_add(provider_t *p, pt_tls_context_t *ctx, char *err, size_t errlen)
{
    if (p->nctxs == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 4;
        pt_tls_context_t **n = realloc(p->ctxs, ncap * sizeof(*n));
        if (n == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        p->ctxs = n;
        p->cap = ncap;
    }
    if (!p->loaded) { /* from a control plane, not come yet: the context waits for it */
        p->ctxs[p->nctxs++] = ctx;
        refresh_missing(ctx);
        return 0;
    }
    pt_tls_pending_t pending;
    if (pt_tls_context_prepare(ctx, p->pem[CERT], p->pem[KEY], p->pem[CA], &pending, err, errlen) !=
        0)
        return -1;
    pt_tls_context_commit(ctx, &pending, p->origin);
    p->ctxs[p->nctxs++] = ctx;
    return 0;
}

static int attach_one(pt_tls_context_t *ctx, const pt_sds_ref_t *ref, int is_cert, char *err,
                      size_t errlen)
{
    provider_t *p = provider_get(is_cert, ref, err, errlen);
    if (p == NULL)
        return -1;
    if (provider_add(p, ctx, err, errlen) != 0) {
        if (p->nctxs == 0) {
            provider_unlink(p);
            provider_free(p);
        }
        return -1;
    }
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
    provider_t **pp = &providers;
    while (*pp != NULL) {
        provider_t *p = *pp;
        for (size_t i = 0; i < p->nctxs; i++) {
            if (p->ctxs[i] == ctx) {
                p->ctxs[i] = p->ctxs[--p->nctxs];
                break;
            }
        }
        if (p->nctxs == 0) {
            /* No context uses the secret any more: stop reading it. */
            *pp = p->next;
            provider_free(p);
        } else {
            pp = &p->next;
        }
    }
}

int pt_secret_watch_start(struct ev_loop *loop)
{
    if (watch_loop != NULL)
        return 0;
    watch_loop = loop;
    for (provider_t *p = providers; p != NULL; p = p->next)
        provider_watch(p);
    return 0;
}

void pt_secret_watch_stop(void)
{
    for (provider_t *p = providers; p != NULL; p = p->next)
        provider_unwatch(p);
    watch_loop = NULL;
}
