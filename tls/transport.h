/* The TLS transport socket (envoy.transport_sockets.tls): a pt_transport_ops_t that runs
 * OpenSSL over a non-blocking socket, driven by the connection's event loop. The
 * connection code stays the same for raw and TLS; what TLS adds (peer identity, SNI, ALPN)
 * is read through the accessors below. */
#ifndef PT_TLS_TRANSPORT_H
#define PT_TLS_TRANSPORT_H

#include "proxy/conn.h"
#include "tls/context.h"
#include "tls/identity.h"

extern const pt_transport_ops_t pt_transport_tls;
/* The TLS transport's ops table, for code outside the TLS module (which cannot name
 * pt_transport_tls: in the binary it lives in the module, see tls/module.h). */
const pt_transport_ops_t *pt_tls_transport(void);

/* Transport state for a new connection (pt_conn_new / pt_conn_connect transport_ctx, which
 * take ownership of it, even when they fail). server: accept side; sni: client SNI (may be
 * NULL); san: client side, a SAN the peer's certificate must carry besides what ctx
 * requires (auto_san_validation; NULL: none). NULL on failure. */
void *pt_tls_conn_new(pt_tls_context_t *ctx, int server, const char *sni, const char *san);

static inline int pt_conn_is_tls(const pt_conn_t *c)
{
    return c->transport->is_tls;
}
/* After the handshake. NULL when not TLS (or no peer certificate for the identity). */
const pt_tls_identity_t *pt_tls_peer_identity(const pt_conn_t *c);
const char *pt_tls_local_uri_san(const pt_conn_t *c);
const char *pt_tls_sni(const pt_conn_t *c);
const char *pt_tls_alpn(const pt_conn_t *c);
const char *pt_tls_version(const pt_conn_t *c);
const char *pt_tls_cipher(const pt_conn_t *c);
int pt_tls_peer_verified(const pt_conn_t *c);
/* The peer certificate's details as the access log shows them, into *out (strings in a).
 * 0, or -1 when c is not TLS, has no peer certificate, or memory ran out. */
int pt_tls_peer_cert_fill(const pt_conn_t *c, pt_arena_t *a, pt_peer_cert_t *out);
/* Why this thread's last TLS handshake failed ("TLS_error:_certificate_verify_failed"), or
 * NULL; read right after a connection reports the failure. */
const char *pt_tls_last_handshake_failure(void);

#endif
