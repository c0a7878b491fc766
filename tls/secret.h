/* Secrets from files (SDS over a path_config_source): certificates and trusted CAs that
 * rotate without a restart.
 *
 * A TLS context whose config names tls_certificate_sds_secret_configs or
 * validation_context_sds_secret_config is attached here when its snapshot is built: the
 * secret file (a DiscoveryResponse in JSON or YAML whose resources are
 * envoy.extensions.transport_sockets.tls.v3.Secret) is read and the named secret loaded.
 * The main thread then watches the file's directory (or the configured watched_directory)
 * with inotify, which sees in-place writes, atomic renames and the symlink swaps Kubernetes
 * uses for mounted secrets. When the file's content changes, the secret is parsed and
 * checked (PEM parses, key matches certificate, certificate currently valid) and installed
 * in every context that uses it: new handshakes use it, established connections keep what
 * they have. A bad update is logged and counted (sds.<name>.update_rejected) and the old
 * material stays. */
#ifndef PT_TLS_SECRET_H
#define PT_TLS_SECRET_H

#include <ev.h>
#include <stddef.h>

#include "tls/context.h"

/* Loads the context's SDS secrets and registers it for updates. Main thread. */
int pt_secret_attach(pt_tls_context_t *ctx, char *err, size_t errlen);
void pt_secret_detach(pt_tls_context_t *ctx);
/* Starts watching on the main loop (call after the config is built); idempotent. */
int pt_secret_watch_start(struct ev_loop *loop);
void pt_secret_watch_stop(void);
/* Re-reads every secret file now; returns how many secrets changed. */
int pt_secret_refresh(void);

#endif
