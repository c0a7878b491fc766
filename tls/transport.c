#include "tls/transport.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy/arena.h"
#include "proxy/log.h"

#define TLS_WRITE_CHUNK 16384 /* one full record per SSL_write */

typedef struct pt_tls_conn {
    SSL *ssl;
    pt_tls_context_t *ctx;
    int server;
    int fd_set;
    int handshake_done;
    int fatal;          /* a fatal TLS or socket error: SSL_shutdown must not be called */
    int verified;
    pt_tls_identity_t peer;
    char *local_uri_san;
    char *sni;
    char *expect_san;   /* auto_san_validation: the SAN the peer must present */
    char alpn[64];
} pt_tls_conn_t;

void *pt_tls_conn_new(pt_tls_context_t *ctx, int server, const char *sni, const char *san)
{
    pt_tls_conn_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    SSL_CTX *sctx = pt_tls_context_acquire(ctx);
    if (sctx == NULL && atomic_load_explicit(&ctx->secrets_missing, memory_order_relaxed) > 0)
        pt_stat_inc(ctx->secrets_not_ready);
    t->ssl = sctx ? SSL_new(sctx) : NULL;
    SSL_CTX_free(sctx); /* the SSL holds its own reference */
    if (t->ssl == NULL) {
        free(t);
        return NULL;
    }
    t->ctx = ctx;
    t->server = server;
    if (server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (sni != NULL && sni[0])
            SSL_set_tlsext_host_name(t->ssl, sni);
        if (san != NULL && (t->expect_san = strdup(san)) == NULL) {
            SSL_free(t->ssl);
            free(t);
            return NULL;
        }
        if (t->expect_san != NULL)
            pt_tls_expect_san(t->ssl, ctx, t->expect_san);
    }
    return t;
}

/* transport->free_ctx: state from pt_tls_conn_new that never reached a connection. */
static void tls_free_ctx(void *transport_ctx)
{
    pt_tls_conn_t *t = transport_ctx;
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    free(t->expect_san);
    free(t);
}

static void handshake_finished(pt_conn_t *c, pt_tls_conn_t *t)
{
    t->handshake_done = 1;
    pt_tls_stats_t *st = &t->ctx->stats;
    pt_stat_inc(st->handshake);
    if (SSL_session_reused(t->ssl))
        pt_stat_inc(st->session_reused);
    X509 *peer = SSL_get1_peer_certificate(t->ssl);
    if (peer == NULL) {
        if (t->server)
            pt_stat_inc(st->no_certificate);
    } else {
        pt_identity_from_cert(&t->peer, peer);
        t->verified = t->ctx->settings->has_validation &&
                      SSL_get_verify_result(t->ssl) == X509_V_OK;
        X509_free(peer);
    }
    X509 *local = SSL_get_certificate(t->ssl);
    if (local != NULL) {
        pt_tls_identity_t id;
        pt_identity_from_cert(&id, local);
        if (id.nuri > 0)
            t->local_uri_san = strdup(id.uri_sans[0]);
        pt_identity_dispose(&id);
    }
    const char *sn = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
    if (sn != NULL)
        t->sni = strdup(sn);
    const unsigned char *a;
    unsigned alen;
    SSL_get0_alpn_selected(t->ssl, &a, &alen);
    if (alen > 0 && alen < sizeof(t->alpn)) {
        memcpy(t->alpn, a, alen);
        t->alpn[alen] = '\0';
    }
    pt_debug("tls: handshake done (%s, %s)%s", SSL_get_version(t->ssl), SSL_get_cipher(t->ssl),
             SSL_session_reused(t->ssl) ? " resumed" : "");
    (void)c;
}

/* Why this thread's last handshake failed, for %UPSTREAM_TRANSPORT_FAILURE_REASON%. */
static _Thread_local char last_failure[160];

const char *pt_tls_last_handshake_failure(void)
{
    return last_failure[0] ? last_failure : NULL;
}

/* "TLS_error:_<OpenSSL's reason>", whitespace as "_" (the shape of Envoy's reasons). */
static void remember_failure(pt_tls_conn_t *t, unsigned long e)
{
    const char *why = NULL;
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK)
        why = X509_verify_cert_error_string(v);
    else if (e != 0)
        why = ERR_reason_error_string(e);
    int n = snprintf(last_failure, sizeof(last_failure), "TLS_error:_%s",
                     why ? why : "connection_closed_during_handshake");
    for (int i = 0; i < n && i < (int)sizeof(last_failure); i++)
        if (last_failure[i] == ' ')
            last_failure[i] = '_';
}

/* Counts why a handshake failed, in Envoy's terms. */
static void handshake_failed(pt_tls_conn_t *t)
{
    pt_tls_stats_t *st = &t->ctx->stats;
    unsigned long e = ERR_peek_error();
    remember_failure(t, e);
    if (t->server && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        pt_stat_inc(st->fail_verify_no_cert);
    pt_stat_inc(st->connection_error);
    if (pt_log_threshold <= PT_LOG_DEBUG) {
        char buf[256] = "";
        if (e != 0)
            ERR_error_string_n(e, buf, sizeof(buf));
        pt_debug("tls: handshake failed: %s", buf[0] ? buf : "connection closed");
    }
    ERR_clear_error();
}

static int tls_handshake(pt_conn_t *c)
{
    pt_tls_conn_t *t = c->transport_ctx;
    if (!t->fd_set) {
        SSL_set_fd(t->ssl, c->fd);
        t->fd_set = 1;
    }
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        handshake_finished(c, t);
        return 0;
    }
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        c->flags &= ~PT_CONN_F_READ_WANTS_WRITE;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->flags |= PT_CONN_F_READ_WANTS_WRITE; /* during a handshake: wait for writability */
        return -EAGAIN;
    default:
        t->fatal = 1;
        handshake_failed(t);
        return -EPROTO;
    }
}

static ssize_t tls_read(pt_conn_t *c, void *buf, size_t len)
{
    pt_tls_conn_t *t = c->transport_ctx;
    ERR_clear_error();
    int n = SSL_read(t->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(t->ssl, n)) {
    case SSL_ERROR_ZERO_RETURN:
        return 0; /* close_notify */
    case SSL_ERROR_WANT_READ:
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->flags |= PT_CONN_F_READ_WANTS_WRITE;
        return -EAGAIN;
    case SSL_ERROR_SYSCALL:
        /* A FIN without close_notify: treat as end of stream, like most proxies do. */
        t->fatal = 1;
        if (errno == 0 || ERR_peek_error() == 0) {
            ERR_clear_error();
            return errno == ECONNRESET ? -ECONNRESET : 0;
        }
        ERR_clear_error();
        return -EIO;
    default:
        t->fatal = 1;
        pt_stat_inc(t->ctx->stats.connection_error);
        ERR_clear_error();
        return -EPROTO;
    }
}

static ssize_t tls_writev(pt_conn_t *c, const struct iovec *iov, int iovcnt)
{
    pt_tls_conn_t *t = c->transport_ctx;
    /* Gather into full records: small iovecs (chunk framing) must not become tiny records. */
    static _Thread_local char staging[TLS_WRITE_CHUNK];
    size_t n = 0;
    const void *src;
    if (iovcnt >= 1 && iov[0].iov_len >= TLS_WRITE_CHUNK) {
        src = iov[0].iov_base;
        n = TLS_WRITE_CHUNK;
    } else {
        for (int i = 0; i < iovcnt && n < TLS_WRITE_CHUNK; i++) {
            size_t take = iov[i].iov_len < TLS_WRITE_CHUNK - n ? iov[i].iov_len : TLS_WRITE_CHUNK - n;
            memcpy(staging + n, iov[i].iov_base, take);
            n += take;
        }
        src = staging;
    }
    if (n == 0)
        return 0;
    ERR_clear_error();
    int w = SSL_write(t->ssl, src, (int)n);
    if (w > 0)
        return w;
    switch (SSL_get_error(t->ssl, w)) {
    case SSL_ERROR_WANT_WRITE:
        return -EAGAIN;
    case SSL_ERROR_WANT_READ:
        c->flags |= PT_CONN_F_WRITE_WANTS_READ;
        return -EAGAIN;
    case SSL_ERROR_SYSCALL:
        t->fatal = 1;
        ERR_clear_error();
        return errno ? -errno : -EPIPE;
    default:
        t->fatal = 1;
        ERR_clear_error();
        return -EPROTO;
    }
}

/* Sends close_notify once, if the session is in a state that allows it. */
static void send_close_notify(pt_tls_conn_t *t)
{
    if (!t->handshake_done || t->fatal || (SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN))
        return;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* we do not wait for the peer's */
    ERR_clear_error();
}

static void tls_shutdown(pt_conn_t *c)
{
    send_close_notify(c->transport_ctx);
    shutdown(c->fd, SHUT_WR);
}

static int tls_has_pending(pt_conn_t *c)
{
    pt_tls_conn_t *t = c->transport_ctx;
    /* SSL_has_pending, not SSL_pending: with read-ahead, a record not yet decrypted sits in
     * OpenSSL's buffer, and the socket may never wake us for it. */
    return t->handshake_done && SSL_has_pending(t->ssl);
}

static void tls_dispose(pt_conn_t *c)
{
    pt_tls_conn_t *t = c->transport_ctx;
    if (t == NULL)
        return;
    /* The connection closes (the socket is still open here). A close without a half-close
     * first (HTTP/1 "Connection: close", an idle timeout) must still end the TLS stream with
     * close_notify, as Envoy does: without it the peer cannot tell the end of the data from
     * a truncation, and OpenSSL 3 peers report "unexpected eof". Not after an error, and
     * not on a reset (SO_LINGER 0), whose point is to send nothing more. */
    if (c->fd >= 0 && !(c->flags & PT_CONN_F_ERROR)) {
        struct linger lg = {0};
        socklen_t lglen = sizeof(lg);
        int resetting = getsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, &lglen) == 0 &&
                        lg.l_onoff && lg.l_linger == 0;
        if (!resetting)
            send_close_notify(t);
    }
    SSL_free(t->ssl);
    pt_identity_dispose(&t->peer);
    free(t->local_uri_san);
    free(t->sni);
    free(t->expect_san);
    free(t);
    c->transport_ctx = NULL;
}

const pt_transport_ops_t pt_transport_tls = {
    .name = "tls",
    .is_tls = 1,
    .handshake = tls_handshake,
    .read = tls_read,
    .writev = tls_writev,
    .shutdown = tls_shutdown,
    .dispose = tls_dispose,
    .free_ctx = tls_free_ctx,
    .has_pending = tls_has_pending,
};

const pt_transport_ops_t *pt_tls_transport(void)
{
    return &pt_transport_tls;
}

static pt_tls_conn_t *tls_of(const pt_conn_t *c)
{
    return c != NULL && c->transport == &pt_transport_tls ? c->transport_ctx : NULL;
}

const pt_tls_identity_t *pt_tls_peer_identity(const pt_conn_t *c)
{
    pt_tls_conn_t *t = tls_of(c);
    return t != NULL && t->peer.present ? &t->peer : NULL;
}

const char *pt_tls_local_uri_san(const pt_conn_t *c)
{
    pt_tls_conn_t *t = tls_of(c);
    return t ? t->local_uri_san : NULL;
}

const char *pt_tls_sni(const pt_conn_t *c)
{
    pt_tls_conn_t *t = tls_of(c);
    return t ? t->sni : NULL;
}

const char *pt_tls_alpn(const pt_conn_t *c)
{
    pt_tls_conn_t *t = tls_of(c);
    return t && t->alpn[0] ? t->alpn : NULL;
}

const char *pt_tls_version(const pt_conn_t *c)
{
    pt_tls_conn_t *t = tls_of(c);
    return t ? SSL_get_version(t->ssl) : NULL;
}

const char *pt_tls_cipher(const pt_conn_t *c)
{
    pt_tls_conn_t *t = tls_of(c);
    return t ? SSL_get_cipher(t->ssl) : NULL;
}

int pt_tls_peer_verified(const pt_conn_t *c)
{
    pt_tls_conn_t *t = tls_of(c);
    return t ? t->verified : 0;
}

/* ---- the peer certificate as the access log shows it --------------------------------- */

static const char *hex_digest(X509 *x, const EVP_MD *md, pt_arena_t *a)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!X509_digest(x, md, d, &n))
        return NULL;
    char *out = pt_arena_alloc(a, n * 2 + 1);
    static const char hexd[] = "0123456789abcdef";
    for (unsigned i = 0; out != NULL && i < n; i++) {
        out[i * 2] = hexd[d[i] >> 4];
        out[i * 2 + 1] = hexd[d[i] & 15];
    }
    if (out != NULL)
        out[n * 2] = '\0';
    return out;
}

/* The text a BIO holds, in a. */
static const char *bio_text(BIO *b, pt_arena_t *a)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    return n >= 0 ? pt_arena_strndup(a, p, (size_t)n) : NULL;
}

/* Envoy's URL encoding of the PEM: every byte but A-Z a-z 0-9 - . _ ~ as %XX. */
static const char *url_encoded(const char *s, pt_arena_t *a)
{
    size_t n = strlen(s);
    char *out = pt_arena_alloc(a, n * 3 + 1), *o = out;
    static const char hexd[] = "0123456789ABCDEF";
    for (size_t i = 0; out != NULL && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hexd[c >> 4];
            *o++ = hexd[c & 15];
        }
    }
    if (out != NULL)
        *o = '\0';
    return out;
}

static int64_t asn1_epoch(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return (int64_t)timegm(&tm);
}

int pt_tls_peer_cert_fill(const pt_conn_t *c, pt_arena_t *a, pt_peer_cert_t *out)
{
    pt_tls_conn_t *t = tls_of(c);
    X509 *x = t != NULL && t->ssl != NULL ? SSL_get0_peer_certificate(t->ssl) : NULL;
    if (x == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return -1;
    X509_NAME_print_ex(b, X509_get_issuer_name(x), 0, XN_FLAG_RFC2253);
    out->issuer = bio_text(b, a);
    (void)BIO_reset(b);
    if (PEM_write_bio_X509(b, x)) {
        const char *pem = bio_text(b, a);
        out->cert = pem != NULL ? url_encoded(pem, a) : NULL;
    }
    BIO_free(b);
    out->fingerprint_256 = hex_digest(x, EVP_sha256(), a);
    out->fingerprint_1 = hex_digest(x, EVP_sha1(), a);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    if (hex != NULL) {
        for (char *p = hex; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
        out->serial = pt_arena_strdup(a, hex);
        OPENSSL_free(hex);
    }
    BN_free(bn);
    out->not_before = asn1_epoch(X509_get0_notBefore(x));
    out->not_after = asn1_epoch(X509_get0_notAfter(x));
    /* The DNS SANs, joined by ",", as Envoy joins them. */
    const pt_tls_identity_t *id = t->peer.present ? &t->peer : NULL;
    if (id != NULL && id->ndns > 0) {
        size_t len = 0;
        for (unsigned i = 0; i < id->ndns; i++)
            len += strlen(id->dns_sans[i]) + 1;
        char *j = pt_arena_alloc(a, len), *o = j;
        for (unsigned i = 0; j != NULL && i < id->ndns; i++) {
            size_t l = strlen(id->dns_sans[i]);
            if (i > 0)
                *o++ = ',';
            memcpy(o, id->dns_sans[i], l);
            o += l;
        }
        if (j != NULL)
            *o = '\0';
        out->dns_san = j;
    }
    return out->issuer != NULL && out->fingerprint_256 != NULL && out->fingerprint_1 != NULL &&
                   out->serial != NULL && out->cert != NULL
               ? 0
               : -1;
}
