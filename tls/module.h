/* The TLS module: the boundary between the core and the code that calls OpenSSL.
 *
 * The petrel binary does not link OpenSSL. Everything that does (tls/context.c,
 * tls/transport.c, tls/identity.c, tls/secret.c) is built into petrel-tls.so, which
 * tls/loader.c loads with dlopen() the first time a config snapshot builds a TLS context.
 * A config without TLS therefore never maps libssl and libcrypto: about 1.7 MiB of RSS
 * (their symbol and relocation tables and relocated data, ~0.4 MiB of it private) that a
 * plaintext sidecar or gateway would otherwise carry.
 *
 * The core keeps calling the functions it always called (pt_tls_context_new,
 * pt_tls_conn_new, pt_tls_peer_identity, ...). In the binary, tls/loader.c defines them as
 * trampolines through the table below; in the unit tests and fuzz targets, which link the
 * module objects statically, they are the real functions and tls/loader.c is not built.
 * Adding a call from the core into the module means adding it to this table, to
 * tls/module.c and to tls/loader.c (the link of the binary fails until all three agree).
 *
 * The module and the binary must come from the same build: the loader refuses a module
 * whose version or struct layouts differ (see pt_tls_module_abi). */
#ifndef PT_TLS_MODULE_H
#define PT_TLS_MODULE_H

#include <ev.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/conn.h"
#include "tls/context.h"
#include "tls/identity.h"

/* The file name the loader looks for beside the binary. */
#define PT_TLS_MODULE_FILE "petrel-tls.so"
/* The symbol that holds the table. */
#define PT_TLS_MODULE_SYMBOL "pt_tls_module"

/* Layout fingerprint: the version and the sizes of the structs both sides share. */
typedef struct pt_tls_module_abi {
    const char *version;
    uint32_t module_size, conn_size, context_size, settings_size, identity_size;
} pt_tls_module_abi_t;

#define PT_TLS_MODULE_ABI_INIT                                                                 \
    {                                                                                          \
        .version = PT_VERSION, .module_size = sizeof(pt_tls_module_t),                         \
        .conn_size = sizeof(pt_conn_t), .context_size = sizeof(pt_tls_context_t),              \
        .settings_size = sizeof(pt_tls_settings_t),                                            \
        .identity_size = sizeof(pt_tls_identity_t),                                            \
    }

typedef struct pt_tls_module {
    pt_tls_module_abi_t abi;
    /* tls/context.h */
    pt_tls_context_t *(*context_new)(const pt_tls_settings_t *settings, const char *scope,
                                     const char *owner, char *err, size_t errlen);
    void (*context_free)(pt_tls_context_t *ctx);
    json_t *(*certs_json)(void);
    /* tls/secret.h */
    int (*secret_attach)(pt_tls_context_t *ctx, char *err, size_t errlen);
    int (*secret_watch_start)(struct ev_loop *loop);
    void (*secret_watch_stop)(void);
    /* tls/transport.h */
    const pt_transport_ops_t *transport;
    void *(*conn_new)(pt_tls_context_t *ctx, int server, const char *sni, const char *san);
    const pt_tls_identity_t *(*peer_identity)(const pt_conn_t *c);
    const char *(*local_uri_san)(const pt_conn_t *c);
    const char *(*sni)(const pt_conn_t *c);
    const char *(*alpn)(const pt_conn_t *c);
    int (*peer_verified)(const pt_conn_t *c);
    int (*peer_cert_fill)(const pt_conn_t *c, pt_arena_t *a, pt_peer_cert_t *out);
    const char *(*last_handshake_failure)(void);
} pt_tls_module_t;

/* Defined by tls/module.c, found by dlsym. */
extern const pt_tls_module_t pt_tls_module;

/* The binary only (tls/loader.c): the loaded module, loading it on the first call (main
 * thread). NULL with the reason in err when it cannot be loaded. */
const pt_tls_module_t *pt_tls_module_load(char *err, size_t errlen);

#endif
