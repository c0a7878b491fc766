/* TLS contexts: envoy.extensions.transport_sockets.tls.v3 DownstreamTlsContext and
 * UpstreamTlsContext turned into OpenSSL SSL_CTXs.
 *
 * A pt_tls_context_t is built when a config snapshot is prepared (listener filter chains,
 * clusters). It owns the current SSL_CTX behind a small lock: handshakes take a reference
 * under the lock (pt_tls_context_acquire), and a certificate rotation (SDS by file, see
 * tls/secret.h) swaps in a new SSL_CTX the same way, so new handshakes use the new
 * material while established connections keep theirs. Secure defaults: TLS 1.2 minimum,
 * AEAD ECDHE ciphers, stateless session tickets with rotating keys, no renegotiation.
 *
 * Peer identity (SPIFFE): URI SANs are the principal for RBAC, the access log and
 * x-forwarded-client-cert; DNS SANs and the subject are kept too. */
#ifndef PT_TLS_CONTEXT_H
#define PT_TLS_CONTEXT_H

#include <jansson.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/config_source.h"
#include "proxy/matcher.h"
#include "proxy/stats.h"

typedef struct pt_config pt_config_t;

/* envoy.config.core.v3.DataSource: a file, or bytes inline. */
typedef struct pt_data_source {
    const char *filename;
    const char *inline_data; /* inline_string, or decoded inline_bytes */
    size_t inline_len;
} pt_data_source_t;

typedef enum pt_san_type {
    PT_SAN_ANY, /* match_subject_alt_names: any SAN type */
    PT_SAN_DNS,
    PT_SAN_URI,
    PT_SAN_EMAIL,
    PT_SAN_IP,
} pt_san_type_t;

typedef struct pt_san_matcher {
    pt_san_type_t type;
    pt_string_matcher_t matcher;
} pt_san_matcher_t;

/* An SDS secret: its name and where it comes from (sds_config: a file, the ADS stream or a
 * control plane of its own). */
typedef struct pt_sds_ref {
    const char *name;
    pt_config_source_t source;
} pt_sds_ref_t;

#define PT_TLS_STATS(X)                                                                        \
    X(handshake)                                                                               \
    X(connection_error)                                                                        \
    X(no_certificate)                                                                          \
    X(fail_verify_no_cert)                                                                     \
    X(fail_verify_san)                                                                         \
    X(fail_verify_error)                                                                       \
    X(fail_verify_cert_hash)                                                                   \
    X(session_reused)                                                                          \
    X(ocsp_staple_failed)

typedef struct pt_tls_stats {
#define PT_X(n) pt_stat_t n;
    PT_TLS_STATS(PT_X)
#undef PT_X
} pt_tls_stats_t;

typedef struct pt_tls_context pt_tls_context_t;

/* What the config says; the material (PEM text) is loaded when the context is built. */
typedef struct pt_tls_settings {
    int server;
    /* certificate: tls_certificates[0] or tls_certificate_sds_secret_configs[0] */
    int has_cert;
    pt_data_source_t cert_chain, private_key;
    /* tls_certificates[1]: a second certificate of the other key type (an RSA + ECDSA
     * pair); OpenSSL serves the one the client's signature algorithms and ciphers allow. */
    int has_cert2;
    pt_data_source_t cert_chain2, private_key2;
    const pt_sds_ref_t *cert_sds;
    /* validation: validation_context or validation_context_sds_secret_config */
    int has_validation;
    pt_data_source_t trusted_ca;
    const pt_sds_ref_t *validation_sds;
    const pt_san_matcher_t *san_matchers;
    unsigned nsan_matchers;
    int trust_chain_verification_accept_untrusted;
    /* parameters */
    int min_version, max_version; /* TLS1_2_VERSION ... (OpenSSL constants) */
    const char *cipher_suites;    /* OpenSSL cipher list (TLS 1.2 and below) */
    const char *ecdh_curves;      /* OpenSSL groups list */
    const unsigned char *alpn;    /* wire format (length-prefixed names) */
    size_t alpn_len;
    int require_client_certificate;
    /* upstream */
    const char *sni;
    int auto_host_sni;
    int allow_renegotiation;
} pt_tls_settings_t;

struct pt_tls_context {
    const pt_tls_settings_t *settings;
    pthread_mutex_t lock;        /* guards `current` against a swap during SSL_new */
    SSL_CTX *current;
    pt_tls_stats_t stats;
    const char *stat_scope;      /* "listener" or "cluster", for stats */
    const char *stat_owner;      /* the listener address or cluster name */
    /* What is loaded now, for /certs. */
    char *cert_pem;              /* leaf + chain as loaded */
    char *key_pem;               /* kept to rebuild on a CA-only rotation; wiped on free */
    char *cert2_pem, *key2_pem;  /* the pair's second certificate (static), or NULL */
    char *ca_pem;
    const char *cert_origin;     /* file path or "<inline>" or "sds:<name>" */
    const char *ca_origin;
    pt_tls_context_t *next_all;  /* every live context, for /certs and rotation */
    pt_tls_context_t *prev_all;
    /* SDS from a control plane: how many of its secrets (certificate, CA) have not come yet.
     * While any is missing it makes no handshake (a connection is closed and counted in
     * secrets_not_ready); until secrets_warm_until_ms (their initial_fetch_timeout) it is
     * warming: its listener does not listen yet, its cluster warms (Envoy). Set by
     * tls/secret.c on the main thread; read by workers. */
    _Atomic int secrets_missing;
    uint64_t secrets_warm_until_ms;
    /* <scope>.<owner>.{server,client}_ssl_socket_factory.{down,up}stream_context_secrets_
     * not_ready and .ssl_context_update_by_sds, as Envoy names them. */
    pt_stat_t secrets_not_ready, update_by_sds;
};

/* Whether the context waits for an SDS secret within its initial_fetch_timeout (main
 * thread). */
static inline int pt_tls_context_warming(const pt_tls_context_t *ctx, uint64_t now_ms)
{
    return ctx != NULL && atomic_load_explicit(&ctx->secrets_missing, memory_order_relaxed) > 0 &&
           now_ms < ctx->secrets_warm_until_ms;
}

/* Core side (tls/settings.c): who hears that SDS secrets came (tls/secret.c calls
 * pt_tls_secrets_changed after installing a secret that was missing): the server, which
 * then starts the listeners and clusters that warmed for it. One hook; main thread. */
void pt_tls_set_secrets_hook(void (*fn)(void *data), void *data);
void pt_tls_secrets_changed(void);
/* Core side: contexts whose snapshot was released on a worker thread are freed here, on the
 * main thread (the housekeeping tick, and at shutdown), where their SDS providers live. */
void pt_tls_contexts_reap(void);

/* Parses a DownstreamTlsContext (server=1) or UpstreamTlsContext (server=0); the reader is
 * inside the typed_config object. NULL with errors recorded. */
pt_tls_settings_t *pt_tls_settings_parse(pt_cfg_t *r, pt_arena_t *a, int server);

/* Parses `transport_socket` (envoy.transport_sockets.tls or raw_buffer) at `field`.
 * Returns 1 with *out set for TLS, 0 for none/raw_buffer, -1 on error. */
int pt_tls_transport_socket_parse(pt_cfg_t *r, pt_arena_t *a, const char *field, int server,
                                  pt_tls_settings_t **out);

/* Builds the context (loads files, creates the SSL_CTX). Errors (unreadable file, bad PEM,
 * key mismatch, unknown cipher) are written to err and NULL returned. The context is
 * registered for /certs and SDS rotation; free with pt_tls_context_free (the snapshot's
 * arena does it). Stats are scoped `<scope>.<owner>.ssl.*`. */
pt_tls_context_t *pt_tls_context_new(const pt_tls_settings_t *settings, const char *scope,
                                     const char *owner, char *err, size_t errlen);
void pt_tls_context_free(pt_tls_context_t *ctx);
/* For config builders: pt_tls_context_new with its SDS secrets attached, freed with `arena`;
 * errors are recorded in r as "<where>: <why>" (where: the transport socket's path). NULL on
 * error. (Core side: tls/settings.c.) */
pt_tls_context_t *pt_tls_context_build(pt_cfg_t *r, pt_arena_t *arena,
                                       const pt_tls_settings_t *t, const char *scope,
                                       const char *owner, const char *where);
/* Client side, one connection (auto_san_validation): its peer's certificate must carry
 * name as a SAN, on top of ctx's own SAN matchers; without ctx validation the chain stays
 * unchecked but the name is. name must outlive ssl. */
void pt_tls_expect_san(SSL *ssl, const pt_tls_context_t *ctx, const char *name);
/* A reference to the current SSL_CTX (SSL_CTX_free it when done; SSL_new takes its own). */
SSL_CTX *pt_tls_context_acquire(pt_tls_context_t *ctx);

/* Rotation in two steps, so that material shared by several contexts is installed in all
 * of them or in none: prepare builds a context's new SSL_CTX from PEM material (checked as
 * pt_tls_check_material does; cert/key/ca NULL keep what the context has) without touching
 * the context, -1 with the reason in err; commit installs it (new handshakes use it,
 * established connections keep theirs); a prepared update not committed is disposed. */
typedef struct pt_tls_pending {
    SSL_CTX *ssl_ctx;
    char *cert_pem, *key_pem, *ca_pem;
    int new_cert, new_ca; /* which of them change (their origin becomes the new one) */
} pt_tls_pending_t;
int pt_tls_context_prepare(pt_tls_context_t *ctx, const char *cert_pem, const char *key_pem,
                           const char *ca_pem, pt_tls_pending_t *out, char *err, size_t errlen);
void pt_tls_context_commit(pt_tls_context_t *ctx, pt_tls_pending_t *p, const char *origin);
void pt_tls_pending_dispose(pt_tls_pending_t *p);

/* Every loaded certificate and CA, in the shape of Envoy's /certs admin output. */
json_t *pt_tls_certs_json(void);

/* Iterates over every live context (main thread). */
pt_tls_context_t *pt_tls_contexts_first(void);
void pt_tls_contexts_lock(void);
void pt_tls_contexts_unlock(void);

/* Reads a DataSource into a NUL-terminated malloc'd string. NULL with err on failure. */
char *pt_data_source_read(const pt_data_source_t *ds, size_t *len, char *err, size_t errlen);
/* Parses a DataSource object at `field`. 1 present, 0 absent, -1 invalid. */
int pt_data_source_parse(pt_cfg_t *r, pt_arena_t *a, const char *field, pt_data_source_t *out);

/* Checks a certificate PEM (and optional key PEM): parses, key matches, not expired, not
 * yet valid. 0 or -1 with err. */
int pt_tls_check_material(const char *cert_pem, const char *key_pem, const char *ca_pem,
                          char *err, size_t errlen);

#endif
