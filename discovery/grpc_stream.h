/* One bidirectional gRPC call from the main thread: the transport of xDS over gRPC.
 *
 * pt_grpc_stream_open connects to a host of a cluster (static, or any the cluster manager
 * has: resolved by name at each open), speaks HTTP/2 over it with the cluster's HTTP/2
 * options and transport (plain or TLS), and starts a POST to `path` with gRPC's headers.
 * Messages go out with pt_grpc_stream_send (framed: a flag byte and a 4-byte length);
 * messages that come in are handed over whole (reassembled across DATA frames, at most
 * PT_DOC_MAX_BYTES each). The call ends once, reported by on_close with its grpc-status (or
 * UNAVAILABLE, 14, when the connection failed or broke, with why); the stream is then to be
 * freed by its owner, who decides whether and when to open another (backoff). Main thread. */
#ifndef PT_GRPC_STREAM_H
#define PT_GRPC_STREAM_H

#include <stddef.h>

typedef struct pt_grpc_stream pt_grpc_stream_t;
struct pt_cluster;
struct pt_worker;

typedef struct pt_grpc_stream_callbacks {
    /* The server answered the call's head (HTTP 200, application/grpc): the call is up. */
    void (*on_open)(void *data);
    /* One message (its bytes, without the frame); may close the stream. */
    void (*on_message)(void *data, const void *msg, size_t len);
    /* The call is over: the gRPC status (0 OK) and its message or why. The owner frees the
     * stream (not from this callback's caller: pt_grpc_stream_free is safe here). */
    void (*on_close)(void *data, int grpc_status, const char *message);
} pt_grpc_stream_callbacks_t;

/* Starts connecting to one of the cluster's hosts (round robin over opens) on the main
 * worker's loop. NULL with why in err when no connection can be started (no host, no
 * socket). authority is the :authority to send (the cluster's name, as Envoy sends it). */
pt_grpc_stream_t *pt_grpc_stream_open(const struct pt_cluster *cluster, struct pt_worker *w,
                                      const char *path, const char *authority,
                                      const pt_grpc_stream_callbacks_t *cb, void *data,
                                      char *err, size_t errlen);
/* Frames and queues one message; sent once the call is up. 0, or -1 when the call is over
 * or out of memory. */
int pt_grpc_stream_send(pt_grpc_stream_t *g, const void *msg, size_t len);
/* Ends the request side (END_STREAM after what was sent): the last message of a unary or
 * client-streaming call; the answer comes through on_message and on_close. 0, or -1 when
 * the call is over or was ended already. */
int pt_grpc_stream_send_done(pt_grpc_stream_t *g);
/* 1 while what was sent has not left: the call is not up yet, or the bytes wait above the
 * connection's high watermark (a peer that reads slowly). A sender of periodic messages
 * skips one then rather than queue without bound. */
int pt_grpc_stream_backed_up(const pt_grpc_stream_t *g);
/* Ends the call (RST_STREAM CANCEL if it is up), closes the connection, frees. No callback.
 * NULL is ignored. */
void pt_grpc_stream_free(pt_grpc_stream_t *g);

#endif
