/* Cluster.transport_socket_matches: a transport socket per endpoint, chosen by the
 * endpoint's metadata. Istio's outbound clusters are made this way: endpoints whose
 * filter_metadata["envoy.transport_socket_match"] says tlsMode: istio (workloads with a
 * sidecar, remote networks' east-west gateways) get mTLS, the others plain text.
 *
 * Envoy's rule: the first match whose `match` fields all appear, with equal values, in the
 * endpoint's filter_metadata["envoy.transport_socket_match"] gives the transport socket; an
 * empty `match` takes every endpoint; when none matches, the cluster's transport_socket
 * applies. */
#ifndef PT_TRANSPORT_MATCH_H
#define PT_TRANSPORT_MATCH_H

#include <jansson.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"

struct pt_tls_settings;
struct pt_tls_context;

/* The metadata namespace Envoy matches against. */
#define PT_TRANSPORT_MATCH_NS "envoy.transport_socket_match"

typedef struct pt_transport_match {
    const char *name;
    json_t *match;                  /* the Struct (the arena holds the reference); NULL or
                                     * empty: every endpoint */
    struct pt_tls_settings *tls;    /* NULL: raw_buffer */
    struct pt_tls_context *tls_ctx; /* built with the cluster's (pt_cluster_build_tls) */
} pt_transport_match_t;

/* Parses Cluster.transport_socket_matches (the reader in the Cluster) into a: the number of
 * matches, *out the array (NULL when there are none). Errors are recorded in r. */
unsigned pt_transport_matches_parse(pt_cfg_t *r, pt_arena_t *a, pt_transport_match_t **out);

/* The index of the first of the n matches that endpoint metadata (canonical JSON text of a
 * config.core.v3.Metadata, or NULL) satisfies, or -1: the cluster's own transport socket. */
int pt_transport_match_find(const pt_transport_match_t *m, unsigned n, const char *metadata);

#endif
