#include "tls/context.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/log.h"
#include "tls/identity.h"
#include "tls/secret.h"

/* Envoy's defaults, in OpenSSL's spelling: ECDHE with AEAD ciphers only (TLS 1.2; TLS 1.3
 * suites are AEAD by construction). */
#define DEFAULT_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"                             \
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"                                 \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define DEFAULT_CURVES "X25519:P-256"

/* ======================================================================================
 * Session ticket keys: one ring for the process, rotated so a stolen key exposes only a
 * bounded window. New tickets use the newest key; the previous ones still decrypt.
 * ====================================================================================== */

#define TICKET_KEYS         3
#define TICKET_ROTATE_SECS  3600

typedef struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t created;
} ticket_key_t;

static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static ticket_key_t ticket_keys[TICKET_KEYS]; /* [0] newest */
static int ticket_keys_ready;

static void ticket_keys_rotate_locked(time_t now)
{
    memmove(&ticket_keys[1], &ticket_keys[0], sizeof(ticket_key_t) * (TICKET_KEYS - 1));
    RAND_bytes(ticket_keys[0].name, sizeof(ticket_keys[0].name));
    RAND_bytes(ticket_keys[0].aes, sizeof(ticket_keys[0].aes));
    RAND_bytes(ticket_keys[0].hmac, sizeof(ticket_keys[0].hmac));
    ticket_keys[0].created = now;
    ticket_keys_ready = 1;
}

static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    time_t now = time(NULL);
    ticket_key_t k;
    int found = 0;
    pthread_mutex_lock(&ticket_lock);
    if (!ticket_keys_ready || now - ticket_keys[0].created >= TICKET_ROTATE_SECS)
        ticket_keys_rotate_locked(now);
    if (enc) {
        k = ticket_keys[0];
        found = 1;
    } else {
        for (int i = 0; i < TICKET_KEYS; i++) {
            if (ticket_keys[i].created != 0 &&
                memcmp(ticket_keys[i].name, key_name, 16) == 0) {
                k = ticket_keys[i];
                found = i + 1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&ticket_lock);
    if (!found)
        return 0; /* unknown key: full handshake */
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string("key", k.hmac, sizeof(k.hmac));
    params[1] = OSSL_PARAM_construct_utf8_string("digest", "sha256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (enc) {
        memcpy(key_name, k.name, 16);
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) <= 0)
            return -1;
        if (!EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv) ||
            !EVP_MAC_CTX_set_params(hctx, params))
            return -1;
        return 1;
    }
    if (!EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv) ||
        !EVP_MAC_CTX_set_params(hctx, params))
        return -1;
    /* 2 (renew) makes OpenSSL hand out a fresh ticket after this resumed handshake: always
     * on TLS 1.3, whose clients use each ticket once (RFC 8446, appendix C.4: a ticket
     * offered twice links the two connections; OpenSSL's client does so), so a resumed
     * connection that brought no new ticket would leave the next reconnect a full
     * handshake; on TLS 1.2 only when the key is no longer the newest. */
    return (SSL_version(ssl) >= TLS1_3_VERSION || found != 1) ? 2 : 1;
}

/* ======================================================================================
 * Building SSL_CTXs
 * ====================================================================================== */

static int ctx_ex_index = -1;
/* On an SSL: the name its peer's certificate must carry (auto_san_validation). */
static int san_ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void init_ex_index(void)
{
    ctx_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    san_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_tls_context_t *registry;

static void ssl_errors(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

/* Does the string matcher accept one SAN value? DNS wildcards in the certificate
 * ("*.example.com") match one label of an exact name, as Envoy's dnsNameMatch. */
static int san_value_matches(const pt_san_matcher_t *m, const char *value, int is_dns)
{
    if (pt_string_matcher_match(&m->matcher, value, strlen(value)))
        return 1;
    if (is_dns && value[0] == '*' && value[1] == '.' && m->matcher.kind == PT_STRING_EXACT) {
        const char *want = m->matcher.value;
        const char *dot = want ? strchr(want, '.') : NULL;
        if (dot != NULL && dot != want && strcasecmp(dot, value + 1) == 0)
            return 1;
    }
    return 0;
}

static int san_check(const pt_tls_settings_t *t, X509 *cert)
{
    if (t->nsan_matchers == 0)
        return 1;
    pt_tls_identity_t id;
    pt_identity_from_cert(&id, cert);
    int ok = 0;
    for (unsigned i = 0; i < t->nsan_matchers && !ok; i++) {
        const pt_san_matcher_t *m = &t->san_matchers[i];
        if (m->type == PT_SAN_URI || m->type == PT_SAN_ANY)
            for (unsigned j = 0; j < id.nuri && !ok; j++)
                ok = san_value_matches(m, id.uri_sans[j], 0);
        if (m->type == PT_SAN_DNS || m->type == PT_SAN_ANY)
            for (unsigned j = 0; j < id.ndns && !ok; j++)
                ok = san_value_matches(m, id.dns_sans[j], 1);
        if (m->type == PT_SAN_IP || m->type == PT_SAN_ANY)
            for (unsigned j = 0; j < id.nip && !ok; j++)
                ok = san_value_matches(m, id.ip_sans[j], 0);
        if (m->type == PT_SAN_EMAIL || m->type == PT_SAN_ANY)
            for (unsigned j = 0; j < id.nemail && !ok; j++)
                ok = san_value_matches(m, id.email_sans[j], 0);
    }
    pt_identity_dispose(&id);
    return ok;
}

/* Does the certificate carry name as a SAN? Envoy's rule for a request's name: a DNS SAN
 * equal to it (case-insensitively) or a wildcard one matching its first label, else a URI
 * or IP SAN equal to it. */
static int cert_has_name(X509 *cert, const char *name)
{
    pt_tls_identity_t id;
    pt_identity_from_cert(&id, cert);
    int ok = 0;
    const char *dot = strchr(name, '.');
    for (unsigned j = 0; j < id.ndns && !ok; j++) {
        const char *san = id.dns_sans[j];
        ok = strcasecmp(san, name) == 0 ||
             (san[0] == '*' && san[1] == '.' && dot != NULL && dot != name &&
              strcasecmp(dot, san + 1) == 0);
    }
    for (unsigned j = 0; j < id.nuri && !ok; j++)
        ok = strcmp(id.uri_sans[j], name) == 0;
    for (unsigned j = 0; j < id.nip && !ok; j++)
        ok = strcmp(id.ip_sans[j], name) == 0;
    pt_identity_dispose(&id);
    return ok;
}

/* Chain errors are counted here; the SAN checks run on the leaf once its chain verified:
 * the context's matchers, and the connection's own name (auto_san_validation) on top. A
 * context without validation verifies no chain, yet still checks the connection's name
 * (pt_tls_expect_san turned verification on for that connection alone). */
static int verify_cb(int preverify_ok, X509_STORE_CTX *xctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    SSL_CTX *sctx = ssl ? SSL_get_SSL_CTX(ssl) : NULL;
    pt_tls_context_t *ctx = sctx ? SSL_CTX_get_ex_data(sctx, ctx_ex_index) : NULL;
    if (ctx == NULL)
        return preverify_ok;
    int depth = X509_STORE_CTX_get_error_depth(xctx);
    const char *want = SSL_get_ex_data(ssl, san_ex_index);
    if (!preverify_ok) {
        if (ctx->settings->trust_chain_verification_accept_untrusted ||
            !ctx->settings->has_validation) {
            if (depth != 0 || want == NULL)
                return 1;
            /* The leaf's chain is not checked here, its name is. */
        } else {
            pt_stat_inc(ctx->stats.fail_verify_error);
            pt_debug("tls: certificate verification failed at depth %d: %s", depth,
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(xctx)));
            return 0;
        }
    }
    if (depth == 0 && want != NULL &&
        !cert_has_name(X509_STORE_CTX_get_current_cert(xctx), want)) {
        pt_stat_inc(ctx->stats.fail_verify_san);
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_SUBJECT_ISSUER_MISMATCH);
        pt_debug("tls: peer certificate has no SAN %s", want);
        return 0;
    }
    if (!preverify_ok)
        return 1;
    if (depth == 0 && !san_check(ctx->settings, X509_STORE_CTX_get_current_cert(xctx))) {
        pt_stat_inc(ctx->stats.fail_verify_san);
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_SUBJECT_ISSUER_MISMATCH);
        pt_debug("tls: peer certificate SAN does not match");
        return 0;
    }
    return 1;
}

void pt_tls_expect_san(SSL *ssl, const pt_tls_context_t *ctx, const char *name)
{
    pthread_once(&ex_once, init_ex_index);
    SSL_set_ex_data(ssl, san_ex_index, (void *)name);
    if (!ctx->settings->has_validation)
        SSL_set_verify(ssl, SSL_VERIFY_PEER, verify_cb);
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const pt_tls_settings_t *t = arg;
    unsigned char *sel;
    /* Server preference order, as Envoy; no overlap means no ALPN, not a failure. */
    if (SSL_select_next_proto(&sel, outlen, t->alpn, (unsigned)t->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int load_cert_chain(SSL_CTX *sctx, const char *pem, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *leaf = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    if (leaf == NULL) {
        BIO_free(bio);
        ssl_errors(err, errlen, "certificate_chain: no PEM certificate");
        return -1;
    }
    int ok = SSL_CTX_use_certificate(sctx, leaf);
    X509_free(leaf);
    if (!ok) {
        BIO_free(bio);
        ssl_errors(err, errlen, "certificate_chain: cannot use the certificate");
        return -1;
    }
    X509 *ca;
    while ((ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(sctx, ca)) {
            X509_free(ca);
            BIO_free(bio);
            ssl_errors(err, errlen, "certificate_chain: bad chain certificate");
            return -1;
        }
    }
    ERR_clear_error(); /* the loop ends on "no start line" */
    BIO_free(bio);
    return 0;
}

static int load_key(SSL_CTX *sctx, const char *pem, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (key == NULL) {
        ssl_errors(err, errlen, "private_key: no PEM private key");
        return -1;
    }
    int ok = SSL_CTX_use_PrivateKey(sctx, key);
    EVP_PKEY_free(key);
    if (!ok || !SSL_CTX_check_private_key(sctx)) {
        ssl_errors(err, errlen, "private_key: does not match the certificate");
        return -1;
    }
    return 0;
}

static int load_ca(SSL_CTX *sctx, const char *pem, char *err, size_t errlen)
{
    X509_STORE *store = SSL_CTX_get_cert_store(sctx);
    BIO *bio = BIO_new_mem_buf(pem, -1);
    int n = 0;
    X509 *ca;
    while (bio && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(store, ca);
        X509_free(ca);
        n++;
    }
    ERR_clear_error();
    BIO_free(bio);
    if (n == 0) {
        snprintf(err, errlen, "trusted_ca: no PEM certificate");
        return -1;
    }
    return 0;
}

/* SHA-256 (truncated to SSL_MAX_SID_CTX_LENGTH) over the server certificate, the trusted
 * CAs and the client verification settings; 0 on failure. */
static unsigned session_context_id(const pt_tls_settings_t *t, const char *cert_pem,
                                   const char *cert2_pem, const char *ca_pem,
                                   unsigned char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    int ok = h != NULL && EVP_DigestInit_ex(h, EVP_sha256(), NULL);
#define HASH_BYTES(p, n) (ok = ok && EVP_DigestUpdate(h, (p), (n)))
#define HASH_STR(s)                                                                            \
    do {                                                                                       \
        const char *s_ = (s) ? (s) : "";                                                       \
        HASH_BYTES(s_, strlen(s_) + 1); /* with the NUL: fields cannot run together */         \
    } while (0)
#define HASH_INT(v)                                                                            \
    do {                                                                                       \
        int v_ = (v);                                                                          \
        HASH_BYTES(&v_, sizeof(v_));                                                           \
    } while (0)
    HASH_STR(cert_pem);
    HASH_STR(cert2_pem);
    HASH_STR(ca_pem);
    HASH_INT(t->has_validation);
    HASH_INT(t->require_client_certificate);
    HASH_INT(t->trust_chain_verification_accept_untrusted);
    HASH_STR(t->validation_sds ? t->validation_sds->name : NULL);
    HASH_INT((int)t->nsan_matchers);
    for (unsigned i = 0; i < t->nsan_matchers; i++) {
        const pt_san_matcher_t *m = &t->san_matchers[i];
        HASH_INT((int)m->type);
        HASH_INT((int)m->matcher.kind);
        HASH_INT(m->matcher.ignore_case);
        HASH_STR(m->matcher.regex ? pt_regex_pattern(m->matcher.regex) : m->matcher.value);
    }
#undef HASH_INT
#undef HASH_STR
#undef HASH_BYTES
    ok = ok && EVP_DigestFinal_ex(h, md, &mdlen);
    EVP_MD_CTX_free(h);
    if (!ok)
        return 0;
    unsigned n = mdlen < SSL_MAX_SID_CTX_LENGTH ? mdlen : SSL_MAX_SID_CTX_LENGTH;
    memcpy(out, md, n);
    return n;
}

/* The key type of a certificate chain's leaf (EVP_PKEY_RSA, EVP_PKEY_EC...), or -1. */
static int leaf_key_type(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    EVP_PKEY *k = x ? X509_get0_pubkey(x) : NULL;
    int type = k ? EVP_PKEY_get_base_id(k) : -1;
    X509_free(x);
    ERR_clear_error();
    return type;
}

/* The pair's second certificate: OpenSSL keeps one certificate per key type in a context
 * and picks, per handshake, one the client's signature algorithms (and, up to TLS 1.2,
 * cipher suites) allow. Two of the same type would replace each other: refused. */
static int load_second_cert(SSL_CTX *sctx, const char *cert_pem, const char *cert2_pem,
                            const char *key2_pem, char *err, size_t errlen)
{
    int t1 = leaf_key_type(cert_pem), t2 = leaf_key_type(cert2_pem);
    if (t1 == t2) {
        snprintf(err, errlen, "tls_certificates: both certificates have %s keys; a second "
                              "certificate must be of the other key type (one RSA and one "
                              "ECDSA)", t1 == EVP_PKEY_RSA ? "RSA" : t1 == EVP_PKEY_EC ? "ECDSA"
                                                                                  : "the same");
        return -1;
    }
    if (load_cert_chain(sctx, cert2_pem, err, errlen) != 0 ||
        load_key(sctx, key2_pem, err, errlen) != 0) {
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "tls_certificates[1].%s", err);
        snprintf(err, errlen, "%s", tmp);
        return -1;
    }
    return 0;
}

/* Builds a configured SSL_CTX from PEM material (any of which may be NULL). The pair's
 * second certificate, when configured, is the context's own (ctx->cert2_pem). */
static SSL_CTX *build_ssl_ctx(pt_tls_context_t *ctx, const char *cert_pem, const char *key_pem,
                              const char *ca_pem, char *err, size_t errlen)
{
    const pt_tls_settings_t *t = ctx->settings;
    SSL_CTX *sctx = SSL_CTX_new(t->server ? TLS_server_method() : TLS_client_method());
    if (sctx == NULL) {
        ssl_errors(err, errlen, "cannot create an SSL context");
        return NULL;
    }
    SSL_CTX_set_ex_data(sctx, ctx_ex_index, ctx);
    SSL_CTX_set_min_proto_version(sctx, t->min_version);
    SSL_CTX_set_max_proto_version(sctx, t->max_version);
    /* SSL_OP_IGNORE_UNEXPECTED_EOF: OpenSSL 3 turns a FIN without close_notify into a fatal
     * protocol error (and an alert), which breaks half-close relaying (tcp_proxy) and
     * counts every such client as an ssl.connection_error. Many clients close that way;
     * like Envoy, petrel takes it as the end of the peer's stream and may still write. */
    SSL_CTX_set_options(sctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                  SSL_OP_CIPHER_SERVER_PREFERENCE |
                                  SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(sctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS |
                               SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read-ahead: OpenSSL fills its record buffer with one read() instead of reading each
     * record's 5-byte header and then its body. Bytes it holds are reported by
     * SSL_has_pending (the transport's has_pending), so none are stranded. */
    SSL_CTX_set_read_ahead(sctx, 1);
    if (!SSL_CTX_set_cipher_list(sctx, t->cipher_suites ? t->cipher_suites : DEFAULT_CIPHERS)) {
        ssl_errors(err, errlen, "tls_params.cipher_suites: no usable cipher");
        goto fail;
    }
    if (!SSL_CTX_set1_groups_list(sctx, t->ecdh_curves ? t->ecdh_curves : DEFAULT_CURVES)) {
        ssl_errors(err, errlen, "tls_params.ecdh_curves: unknown curve");
        goto fail;
    }
    if (cert_pem != NULL && (load_cert_chain(sctx, cert_pem, err, errlen) != 0 ||
                             key_pem == NULL || load_key(sctx, key_pem, err, errlen) != 0)) {
        if (key_pem == NULL)
            snprintf(err, errlen, "private_key: missing");
        goto fail;
    }
    if (cert_pem != NULL && ctx->cert2_pem != NULL &&
        load_second_cert(sctx, cert_pem, ctx->cert2_pem, ctx->key2_pem, err, errlen) != 0)
        goto fail;
    if (ca_pem != NULL && load_ca(sctx, ca_pem, err, errlen) != 0)
        goto fail;
    if (t->has_validation) {
        int mode = SSL_VERIFY_PEER;
        if (t->server && t->require_client_certificate)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(sctx, mode, verify_cb);
    } else {
        SSL_CTX_set_verify(sctx, SSL_VERIFY_NONE, NULL);
    }
    if (t->server) {
        if (t->alpn != NULL)
            SSL_CTX_set_alpn_select_cb(sctx, alpn_select_cb, (void *)t);
        /* Stateless resumption with our rotating keys; no server-side session cache, so
         * resumption works across workers and rotations without shared state. */
        SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(sctx, ticket_key_cb);
        SSL_CTX_set_num_tickets(sctx, 1);
        /* The session ID context ties a ticket to what was checked when it was issued.
         * Ticket keys are shared by every context of the process, so with one fixed
         * context a session from a listener that asks for no client certificate (or
         * trusts another CA) would resume on an mTLS listener and skip its verification
         * entirely. OpenSSL refuses to resume a session whose context differs (a full
         * handshake happens instead), so the context is a digest of everything that
         * decides who is accepted, plus the certificate served (as Envoy does). */
        unsigned char sid_ctx[SSL_MAX_SID_CTX_LENGTH];
        unsigned sid_len = session_context_id(t, cert_pem, ctx->cert2_pem, ca_pem, sid_ctx);
        if (sid_len == 0 || !SSL_CTX_set_session_id_context(sctx, sid_ctx, sid_len)) {
            ssl_errors(err, errlen, "cannot set the session ID context");
            goto fail;
        }
    } else {
        if (t->alpn != NULL)
            SSL_CTX_set_alpn_protos(sctx, t->alpn, (unsigned)t->alpn_len);
        SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    }
    return sctx;
fail:
    SSL_CTX_free(sctx);
    return NULL;
}

/* Validity of a certificate: parseable, and now within notBefore..notAfter. */
static int check_cert_dates(const char *pem, const char *what, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (x == NULL) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: no PEM certificate", what);
        return -1;
    }
    int rc = 0;
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        snprintf(err, errlen, "%s: the certificate has expired", what);
        rc = -1;
    } else if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        snprintf(err, errlen, "%s: the certificate is not valid yet", what);
        rc = -1;
    }
    X509_free(x);
    return rc;
}

int pt_tls_check_material(const char *cert_pem, const char *key_pem, const char *ca_pem,
                          char *err, size_t errlen)
{
    if (cert_pem != NULL && check_cert_dates(cert_pem, "certificate_chain", err, errlen) != 0)
        return -1;
    if (ca_pem != NULL && check_cert_dates(ca_pem, "trusted_ca", err, errlen) != 0)
        return -1;
    if (cert_pem != NULL && key_pem != NULL) {
        SSL_CTX *tmp = SSL_CTX_new(TLS_server_method());
        int rc = tmp && load_cert_chain(tmp, cert_pem, err, errlen) == 0 &&
                         load_key(tmp, key_pem, err, errlen) == 0
                     ? 0
                     : -1;
        SSL_CTX_free(tmp);
        return rc;
    }
    return 0;
}

static char *strdup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void free_secret(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void register_ctx(pt_tls_context_t *ctx)
{
    pthread_mutex_lock(&registry_lock);
    ctx->next_all = registry;
    if (registry != NULL)
        registry->prev_all = ctx;
    registry = ctx;
    pthread_mutex_unlock(&registry_lock);
}

pt_tls_context_t *pt_tls_contexts_first(void)
{
    return registry;
}

void pt_tls_contexts_lock(void)
{
    pthread_mutex_lock(&registry_lock);
}

void pt_tls_contexts_unlock(void)
{
    pthread_mutex_unlock(&registry_lock);
}

pt_tls_context_t *pt_tls_context_new(const pt_tls_settings_t *t, const char *scope,
                                     const char *owner, char *err, size_t errlen)
{
    pthread_once(&ex_once, init_ex_index);
    pt_tls_context_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->settings = t;
    pthread_mutex_init(&ctx->lock, NULL);
    ctx->stat_scope = scope;
    ctx->stat_owner = owner;
    char *cert = NULL, *key = NULL, *ca = NULL;
    /* SDS secrets are loaded by tls/secret.c once the context exists; static material now. */
    if (t->has_cert && t->cert_sds == NULL) {
        cert = pt_data_source_read(&t->cert_chain, NULL, err, errlen);
        if (cert == NULL)
            goto fail;
        key = pt_data_source_read(&t->private_key, NULL, err, errlen);
        if (key == NULL)
            goto fail;
        ctx->cert_origin = t->cert_chain.filename ? t->cert_chain.filename : "<inline>";
    }
    if (t->has_cert2) {
        ctx->cert2_pem = pt_data_source_read(&t->cert_chain2, NULL, err, errlen);
        if (ctx->cert2_pem == NULL)
            goto fail;
        ctx->key2_pem = pt_data_source_read(&t->private_key2, NULL, err, errlen);
        if (ctx->key2_pem == NULL)
            goto fail;
    }
    if (t->trusted_ca.filename != NULL || t->trusted_ca.inline_data != NULL) {
        ca = pt_data_source_read(&t->trusted_ca, NULL, err, errlen);
        if (ca == NULL)
            goto fail;
        ctx->ca_origin = t->trusted_ca.filename ? t->trusted_ca.filename : "<inline>";
    }
    ctx->current = build_ssl_ctx(ctx, cert, key, ca, err, errlen);
    if (ctx->current == NULL)
        goto fail;
    ctx->cert_pem = cert;
    ctx->key_pem = key;
    ctx->ca_pem = ca;
    const char *tag = scope[0] == 'c' ? "envoy_cluster_name" : "envoy_listener_address";
#define PT_X(n) ctx->stats.n = pt_stats_counter(scope, tag, owner, "ssl." #n);
    PT_TLS_STATS(PT_X)
#undef PT_X
    ctx->secrets_not_ready = pt_stats_counter(
        scope, tag, owner,
        t->server ? "server_ssl_socket_factory.downstream_context_secrets_not_ready"
                  : "client_ssl_socket_factory.upstream_context_secrets_not_ready");
    ctx->update_by_sds = pt_stats_counter(scope, tag, owner,
                                          t->server ? "server_ssl_socket_factory.ssl_context_"
                                                      "update_by_sds"
                                                    : "client_ssl_socket_factory.ssl_context_"
                                                      "update_by_sds");
    register_ctx(ctx);
    return ctx;
fail:
    free(cert);
    if (key != NULL) {
        OPENSSL_cleanse(key, strlen(key));
        free(key);
    }
    free(ca);
    free_secret(ctx->cert2_pem);
    free_secret(ctx->key2_pem);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
    return NULL;
}

void pt_tls_context_free(pt_tls_context_t *ctx)
{
    if (ctx == NULL)
        return;
    pt_secret_detach(ctx);
    pthread_mutex_lock(&registry_lock);
    if (ctx->prev_all != NULL)
        ctx->prev_all->next_all = ctx->next_all;
    else if (registry == ctx)
        registry = ctx->next_all;
    if (ctx->next_all != NULL)
        ctx->next_all->prev_all = ctx->prev_all;
    pthread_mutex_unlock(&registry_lock);
    SSL_CTX_free(ctx->current);
    free_secret(ctx->cert_pem);
    free_secret(ctx->key_pem);
    free_secret(ctx->ca_pem);
    free_secret(ctx->cert2_pem);
    free_secret(ctx->key2_pem);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

SSL_CTX *pt_tls_context_acquire(pt_tls_context_t *ctx)
{
    if (atomic_load_explicit(&ctx->secrets_missing, memory_order_relaxed) > 0)
        return NULL; /* an SDS secret has not come: no handshake without it */
    pthread_mutex_lock(&ctx->lock);
    SSL_CTX *s = ctx->current;
    if (s != NULL)
        SSL_CTX_up_ref(s);
    pthread_mutex_unlock(&ctx->lock);
    return s;
}

int pt_tls_context_prepare(pt_tls_context_t *ctx, const char *cert_pem, const char *key_pem,
                           const char *ca_pem, pt_tls_pending_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if ((cert_pem == NULL) != (key_pem == NULL)) {
        snprintf(err, errlen, "a certificate and its private key must change together");
        return -1;
    }
    if (pt_tls_check_material(cert_pem, key_pem, ca_pem, err, errlen) != 0)
        return -1;
    /* Material not being replaced is taken from what is loaded now. */
    pthread_mutex_lock(&ctx->lock);
    out->cert_pem = strdup_or_null(cert_pem ? cert_pem : ctx->cert_pem);
    out->key_pem = strdup_or_null(key_pem ? key_pem : ctx->key_pem);
    out->ca_pem = strdup_or_null(ca_pem ? ca_pem : ctx->ca_pem);
    pthread_mutex_unlock(&ctx->lock);
    out->new_cert = cert_pem != NULL;
    out->new_ca = ca_pem != NULL;
    out->ssl_ctx = build_ssl_ctx(ctx, out->cert_pem, out->key_pem, out->ca_pem, err, errlen);
    if (out->ssl_ctx == NULL) {
        pt_tls_pending_dispose(out);
        return -1;
    }
    return 0;
}

void pt_tls_context_commit(pt_tls_context_t *ctx, pt_tls_pending_t *p, const char *origin)
{
    pthread_mutex_lock(&ctx->lock);
    SSL_CTX *old = ctx->current;
    ctx->current = p->ssl_ctx;
    char *oc = ctx->cert_pem, *ok = ctx->key_pem, *oca = ctx->ca_pem;
    ctx->cert_pem = p->cert_pem;
    ctx->key_pem = p->key_pem;
    ctx->ca_pem = p->ca_pem;
    if (p->new_cert)
        ctx->cert_origin = origin;
    if (p->new_ca)
        ctx->ca_origin = origin;
    pthread_mutex_unlock(&ctx->lock);
    memset(p, 0, sizeof(*p));
    free_secret(oc);
    free_secret(ok);
    free_secret(oca);
    SSL_CTX_free(old); /* connections made with it keep their own reference */
}

void pt_tls_pending_dispose(pt_tls_pending_t *p)
{
    SSL_CTX_free(p->ssl_ctx);
    free_secret(p->cert_pem);
    free_secret(p->key_pem);
    free_secret(p->ca_pem);
    memset(p, 0, sizeof(*p));
}

/* ======================================================================================
 * /certs
 * ====================================================================================== */

static void asn1_time_iso(const ASN1_TIME *t, char *out, size_t len)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) == 1)
        strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        snprintf(out, len, "?");
}

static json_t *cert_details(X509 *x, const char *origin)
{
    pt_tls_identity_t id;
    pt_identity_from_cert(&id, x);
    json_t *sans = json_array();
    for (unsigned i = 0; i < id.nuri; i++)
        json_array_append_new(sans, json_pack("{s:s}", "uri", id.uri_sans[i]));
    for (unsigned i = 0; i < id.ndns; i++)
        json_array_append_new(sans, json_pack("{s:s}", "dns", id.dns_sans[i]));
    for (unsigned i = 0; i < id.nip; i++)
        json_array_append_new(sans, json_pack("{s:s}", "ip_address", id.ip_sans[i]));
    char from[32], to[32];
    asn1_time_iso(X509_get0_notBefore(x), from, sizeof(from));
    asn1_time_iso(X509_get0_notAfter(x), to, sizeof(to));
    int days = 0, secs = 0;
    ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x));
    json_t *j = json_pack("{s:s,s:s,s:s,s:o,s:s,s:s,s:s}", "path", origin ? origin : "<inline>",
                          "serial_number", id.serial ? id.serial : "", "subject",
                          id.subject ? id.subject : "", "subject_alt_names", sans,
                          "days_until_expiration", "", "valid_from", from, "expiration_time", to);
    char d[16];
    snprintf(d, sizeof(d), "%d", days);
    json_object_set_new(j, "days_until_expiration", json_string(d));
    pt_identity_dispose(&id);
    return j;
}

static json_t *pem_details(const char *pem, const char *origin)
{
    json_t *arr = json_array();
    if (pem == NULL)
        return arr;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        json_array_append_new(arr, cert_details(x, origin));
        X509_free(x);
    }
    ERR_clear_error();
    BIO_free(bio);
    return arr;
}

json_t *pt_tls_certs_json(void)
{
    json_t *certs = json_array();
    pthread_mutex_lock(&registry_lock);
    for (pt_tls_context_t *c = registry; c != NULL; c = c->next_all) {
        pthread_mutex_lock(&c->lock);
        json_t *chain = pem_details(c->cert_pem, c->cert_origin);
        json_t *chain2 = c->cert2_pem != NULL ? pem_details(c->cert2_pem, c->cert_origin) : NULL;
        if (chain2 != NULL)
            json_array_extend(chain, chain2); /* Envoy lists every certificate served */
        json_decref(chain2);
        json_t *entry = json_pack("{s:o,s:o}", "ca_cert", pem_details(c->ca_pem, c->ca_origin),
                                  "cert_chain", chain);
        pthread_mutex_unlock(&c->lock);
        json_object_set_new(entry, "owner",
                            json_sprintf("%s.%s", c->stat_scope, c->stat_owner));
        json_array_append_new(certs, entry);
    }
    pthread_mutex_unlock(&registry_lock);
    return json_pack("{s:o}", "certificates", certs);
}
