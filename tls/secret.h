/* Secrets from files (SDS over a path_config_source): certificates and trusted CAs that
 * rotate without a restart.
 *
 * A TLS context whose config names tls_certificate_sds_secret_configs or
 * validation_context_sds_secret_config is attached here when its snapshot is built. Each
 * secret, identified by its name, its file, its watched directory and whether it is a
 * certificate or a CA, has one provider, shared by every context that uses it (Envoy's
 * dynamic secret providers): a file subscription (discovery/file_subscription.h) to the
 * secret file, a DiscoveryResponse in JSON or YAML whose resources are
 * envoy.extensions.transport_sockets.tls.v3.Secret, of which the one with the right name is
 * used. The first context to use a secret reads it; later ones get the material in force.
 *
 * Once the main loop runs, the secret file is watched as every file subscription is, and
 * so are the files the secret names (certificate_chain, private_key, trusted_ca), each in
 * its own directory, as Envoy watches them: in-place writes, atomic renames and the symlink
 * swaps Kubernetes uses for mounted secrets are seen. When the material changes it is
 * checked (PEM parses, key matches certificate, certificate currently valid) and installed
 * in every context using the secret, or in none: new handshakes use it, established
 * connections keep what they have. The secret file's updates are counted as a
 * subscription's under sds.<name>. (update_attempt, update_success, update_rejected,
 * update_failure, version_text); a rotation of the named files that fails is counted in
 * sds.<name>.key_rotation_failed, as in Envoy. A bad update is logged and the old material
 * stays. */
#ifndef PT_TLS_SECRET_H
#define PT_TLS_SECRET_H

#include <ev.h>
#include <stddef.h>

#include "tls/context.h"

/* Loads the context's SDS secrets and registers it for updates. Main thread. */
int pt_secret_attach(pt_tls_context_t *ctx, char *err, size_t errlen);
void pt_secret_detach(pt_tls_context_t *ctx);
/* Starts watching on the main loop (call after the config is built); secrets attached later
 * are watched at once. Idempotent. */
int pt_secret_watch_start(struct ev_loop *loop);
/* Stops every watch (before the loop goes away); the secrets in force stay. */
void pt_secret_watch_stop(void);

#endif
