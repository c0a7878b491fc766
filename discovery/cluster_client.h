/* One HTTP client connection from the main thread to a host of a cluster, for petrel's own
 * requests to a control plane (discovery/grpc_stream.c: gRPC streams; discovery/rest_fetch.c:
 * REST-JSON polls). It picks the cluster's hosts in turn (each connection the next one),
 * connects with the cluster's transport (TLS, pipe), and once up puts the client codec on
 * the connection: HTTP/2 when asked or when the cluster speaks it, else HTTP/1.1.
 *
 * The owner embeds the struct and learns of it through two callbacks, called from the
 * connection's events: ready (the codec is up: start the stream; -1 means it could not, out
 * of memory) and failed (the connection could not be made, or closed; before or after
 * ready). A connection that could not be made is gone when failed is called (conn NULL);
 * otherwise the codec and connection stay until pt_cluster_client_close, which the owner
 * calls from outside their callbacks. */
#ifndef PT_CLUSTER_CLIENT_H
#define PT_CLUSTER_CLIENT_H

#include <stddef.h>

#include "proxy/cluster.h"
#include "proxy/conn.h"
#include "proxy/http_codec.h"

typedef struct pt_cluster_client {
    pt_conn_t *conn;                /* NULL once closed */
    pt_http_client_codec_t *codec;  /* NULL until ready */
    pt_cluster_t *cluster;          /* the owner's reference */
    int http2;                      /* HTTP/2 whatever the cluster says (gRPC) */
    int (*ready)(void *owner);
    void (*failed)(void *owner, const char *why);
    void *owner;
} pt_cluster_client_t;

/* Starts connecting cc (its cluster, http2, callbacks and owner set by the caller) to the
 * cluster's next host. 0, or -1 with err ("cluster x has no hosts", "connect to ...: ..."). */
int pt_cluster_client_connect(pt_cluster_client_t *cc, pt_worker_t *w, char *err, size_t errlen);
/* Destroys the codec and closes the connection, what of them is left (no callback). */
void pt_cluster_client_close(pt_cluster_client_t *cc);

#endif
