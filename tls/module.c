/* The TLS module's table (see tls/module.h). */
#include "tls/module.h"

#include "tls/secret.h"
#include "tls/transport.h"

/* The module's objects are compiled with -fvisibility=hidden, so that its calls and the
 * addresses below bind to its own functions, not to the binary's trampolines of the same
 * names; this table is the one symbol it exports. */
__attribute__((visibility("default"))) const pt_tls_module_t pt_tls_module = {
    .abi = PT_TLS_MODULE_ABI_INIT,
    .context_new = pt_tls_context_new,
    .context_free = pt_tls_context_free,
    .certs_json = pt_tls_certs_json,
    .secret_attach = pt_secret_attach,
    .secret_watch_start = pt_secret_watch_start,
    .secret_watch_stop = pt_secret_watch_stop,
    .transport = &pt_transport_tls,
    .conn_new = pt_tls_conn_new,
    .peer_identity = pt_tls_peer_identity,
    .local_uri_san = pt_tls_local_uri_san,
    .sni = pt_tls_sni,
    .alpn = pt_tls_alpn,
    .peer_verified = pt_tls_peer_verified,
    .peer_cert_fill = pt_tls_peer_cert_fill,
    .last_handshake_failure = pt_tls_last_handshake_failure,
};
