/* The binary's side of the TLS module (tls/module.h): finds and loads petrel-tls.so on first
 * use, checks it comes from this build, and defines the core's TLS entry points as
 * trampolines into it.
 *
 * Loading happens on the main thread while a config snapshot is built, before any worker
 * can see a TLS context; the table pointer is published with release/acquire anyway so a
 * later reload (which also builds on the main thread) needs nothing more. Every trampoline
 * except the ones that run without a context (secret watching, /certs) is reached only
 * through a TLS context or a TLS connection, so the module is loaded by then. */
#include "tls/module.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "proxy/log.h"
#include "tls/secret.h"
#include "tls/transport.h"

static _Atomic(const pt_tls_module_t *) loaded;

static const pt_tls_module_t *module(void)
{
    return atomic_load_explicit(&loaded, memory_order_acquire);
}

/* <directory of /proc/self/exe>/petrel-tls.so */
static int module_path(char *out, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    int w = snprintf(out, len, "%s/%s", exe, PT_TLS_MODULE_FILE);
    return w > 0 && (size_t)w < len ? 0 : -1;
}

static int abi_matches(const pt_tls_module_abi_t *a, char *err, size_t errlen)
{
    const pt_tls_module_abi_t want = PT_TLS_MODULE_ABI_INIT;
    if (strcmp(a->version, want.version) != 0) {
        snprintf(err, errlen, "is version %s, the binary is %s", a->version, want.version);
        return 0;
    }
    if (a->module_size != want.module_size || a->conn_size != want.conn_size ||
        a->context_size != want.context_size || a->settings_size != want.settings_size ||
        a->identity_size != want.identity_size) {
        snprintf(err, errlen, "was built from different sources than the binary");
        return 0;
    }
    return 1;
}

const pt_tls_module_t *pt_tls_module_load(char *err, size_t errlen)
{
    const pt_tls_module_t *m = module();
    if (m != NULL)
        return m;
    char path[PATH_MAX + 32], why[256];
    if (module_path(path, sizeof(path)) != 0) {
        snprintf(err, errlen, "TLS module: cannot find the binary's directory");
        return NULL;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(err, errlen, "TLS module: cannot load %s: %s", path, dlerror());
        return NULL;
    }
    m = dlsym(h, PT_TLS_MODULE_SYMBOL);
    if (m == NULL) {
        snprintf(err, errlen, "TLS module: %s has no %s", path, PT_TLS_MODULE_SYMBOL);
        dlclose(h);
        return NULL;
    }
    if (!abi_matches(&m->abi, why, sizeof(why))) {
        snprintf(err, errlen, "TLS module: %s %s", path, why);
        dlclose(h);
        return NULL;
    }
    /* Never closed: contexts, connections and OpenSSL's own state live until exit. */
    atomic_store_explicit(&loaded, m, memory_order_release);
    pt_debug("TLS module loaded from %s", path);
    return m;
}

/* ---- trampolines ------------------------------------------------------------------- */

pt_tls_context_t *pt_tls_context_new(const pt_tls_settings_t *settings, const char *scope,
                                     const char *owner, char *err, size_t errlen)
{
    const pt_tls_module_t *m = pt_tls_module_load(err, errlen);
    return m != NULL ? m->context_new(settings, scope, owner, err, errlen) : NULL;
}

void pt_tls_context_free(pt_tls_context_t *ctx)
{
    if (ctx != NULL)
        module()->context_free(ctx);
}

json_t *pt_tls_certs_json(void)
{
    const pt_tls_module_t *m = module();
    return m != NULL ? m->certs_json() : json_pack("{s:[]}", "certificates");
}

int pt_secret_attach(pt_tls_context_t *ctx, char *err, size_t errlen)
{
    return module()->secret_attach(ctx, err, errlen);
}

int pt_secret_watch_start(struct ev_loop *loop)
{
    const pt_tls_module_t *m = module();
    return m != NULL ? m->secret_watch_start(loop) : 0;
}

void pt_secret_watch_stop(void)
{
    const pt_tls_module_t *m = module();
    if (m != NULL)
        m->secret_watch_stop();
}

const pt_transport_ops_t *pt_tls_transport(void)
{
    return module()->transport;
}

void *pt_tls_conn_new(pt_tls_context_t *ctx, int server, const char *sni, const char *san)
{
    return module()->conn_new(ctx, server, sni, san);
}

const pt_tls_identity_t *pt_tls_peer_identity(const pt_conn_t *c)
{
    return module()->peer_identity(c);
}

const char *pt_tls_local_uri_san(const pt_conn_t *c)
{
    return module()->local_uri_san(c);
}

const char *pt_tls_sni(const pt_conn_t *c)
{
    return module()->sni(c);
}

const char *pt_tls_alpn(const pt_conn_t *c)
{
    return module()->alpn(c);
}

int pt_tls_peer_verified(const pt_conn_t *c)
{
    return module()->peer_verified(c);
}

int pt_tls_peer_cert_fill(const pt_conn_t *c, pt_arena_t *a, pt_peer_cert_t *out)
{
    return module()->peer_cert_fill(c, a, out);
}

const char *pt_tls_last_handshake_failure(void)
{
    const pt_tls_module_t *m = module();
    return m != NULL ? m->last_handshake_failure() : NULL;
}
