/* A non-blocking stream connection, inbound or outbound, over a pluggable transport (raw
 * TCP, TLS). It owns the socket, a read buffer and a write queue; its owner reacts to it
 * through a handler table that it swaps as the connection moves between phases.
 *
 * Contract:
 *  - Reading is on unless paused; bytes arrive in c->in and handler->on_read is called once
 *    per readiness event after up to PT_CONN_READ_BUDGET bytes were read. After the peer's
 *    FIN, PT_CONN_F_EOF is set and on_read is called once more (c->in may be empty).
 *  - pt_conn_write moves bytes to the write queue; the queue is written at the end of the
 *    loop turn (one sendmsg for everything produced in the turn).
 *    PT_CONN_F_ABOVE_HIGH is set while the queue is above the high watermark; the owner
 *    then pauses whatever feeds it and resumes in handler->on_drain, called when the queue
 *    falls to the low watermark (half the high one). That keeps memory bounded end to end.
 *  - pt_conn_shutdown sends FIN after the queue drains (half-close).
 *  - pt_conn_close ends the connection: no handler call happens after it returns and the
 *    memory is released at the next loop turn, so a callback may close its own
 *    connection and return safely.
 *  - Errors (reset, write failure, connect failure, handshake failure) arrive once through
 *    on_error; the owner then closes. */
#ifndef PT_CONN_H
#define PT_CONN_H

#include <ev.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "proxy/address.h"
#include "proxy/buf.h"
#include "proxy/fd_reserve.h"
#include "proxy/stats.h"

typedef struct pt_conn pt_conn_t;
typedef struct pt_worker pt_worker_t;

/* Bytes read per readiness event: one chunk. Forwarding each chunk while it is still in the
 * cache costs less CPU per byte than gathering 64 KiB into four chunks before one big write
 * (bench/README.md, tcp); it also bounds what one busy connection takes per loop turn. */
#define PT_CONN_READ_BUDGET  (PT_BUF_CHUNK_SIZE - sizeof(pt_chunk_t))
#define PT_CONN_DEFAULT_HIGH (1024 * 1024) /* per_connection_buffer_limit_bytes default */

/* Transport: how bytes cross the socket. Return conventions: >0 bytes, 0 EOF (read only),
 * -EAGAIN would block, other negative errno = error. A transport that needs the opposite
 * readiness to progress (TLS reading during a renegotiation-free key update, writing
 * during handshake) sets PT_CONN_F_READ_WANTS_WRITE / PT_CONN_F_WRITE_WANTS_READ. */
typedef struct pt_transport_ops {
    const char *name;
    /* 1 for the TLS transport: its connections answer the pt_tls_* accessors. */
    int is_tls;
    /* Drives the handshake: 0 done, -EAGAIN in progress, <0 failed. NULL: none needed. */
    int (*handshake)(pt_conn_t *c);
    ssize_t (*read)(pt_conn_t *c, void *buf, size_t len);
    ssize_t (*writev)(pt_conn_t *c, const struct iovec *iov, int iovcnt);
    /* Sends the end-of-stream (FIN, or close_notify then FIN). */
    void (*shutdown)(pt_conn_t *c);
    void (*dispose)(pt_conn_t *c);
    /* Frees transport state that never became part of a connection (the socket could not
     * be made): pt_conn_connect calls it, so no caller has to. NULL: nothing to free. */
    void (*free_ctx)(void *transport_ctx);
    /* Bytes already read from the socket and held inside the transport (decrypted TLS
     * records): they must be delivered without waiting for socket readiness. May be NULL. */
    int (*has_pending)(pt_conn_t *c);
} pt_transport_ops_t;

extern const pt_transport_ops_t pt_transport_raw;

typedef struct pt_conn_handler {
    void (*on_read)(pt_conn_t *c);
    /* Outbound connect (or inbound handshake) finished: status 0, or <0 and on_error is not
     * called for it. */
    void (*on_connect)(pt_conn_t *c, int status);
    void (*on_drain)(pt_conn_t *c);
    void (*on_error)(pt_conn_t *c, int status);
} pt_conn_handler_t;

enum pt_conn_flags {
    PT_CONN_F_CONNECTING = 1u << 0,      /* outbound connect() in progress */
    PT_CONN_F_HANDSHAKING = 1u << 1,     /* transport handshake in progress */
    PT_CONN_F_READ_PAUSED = 1u << 2,     /* owner paused reading (backpressure) */
    PT_CONN_F_EOF = 1u << 3,             /* peer sent FIN */
    PT_CONN_F_SHUTDOWN_PENDING = 1u << 4,/* FIN to send once the queue drains */
    PT_CONN_F_SHUT = 1u << 5,            /* FIN sent */
    PT_CONN_F_CLOSING = 1u << 6,         /* close requested; flushing before close */
    PT_CONN_F_CLOSED = 1u << 7,          /* fd closed; waiting to be freed */
    PT_CONN_F_ABOVE_HIGH = 1u << 8,      /* write queue above the high watermark */
    PT_CONN_F_ERROR = 1u << 9,           /* an error was reported; no more I/O */
    PT_CONN_F_READ_WANTS_WRITE = 1u << 10, /* transport read needs writability */
    PT_CONN_F_WRITE_WANTS_READ = 1u << 11, /* transport write needs readability */
    PT_CONN_F_OUTBOUND = 1u << 12,       /* we connected (upstream) */
    PT_CONN_F_STARTED = 1u << 13,        /* pt_conn_start ran (the handshake began) */
    PT_CONN_F_FLUSH_QUEUED = 1u << 14,   /* on the worker's list to write at end of turn */
};

struct pt_conn {
    int fd;
    uint32_t flags;
    pt_worker_t *worker;
    const pt_conn_handler_t *handler;
    void *data;                         /* the owner */
    ev_io rio, wio;
    ev_timer timer;                     /* connect timeout, or flush deadline when closing */
    const pt_transport_ops_t *transport;
    void *transport_ctx;
    pt_buf_t in;
    pt_buf_t out;
    uint32_t high_watermark;
    uint32_t drain_level;               /* pt_conn_drain_to's level while it waits */
    /* A flushed PT_CLOSE_FLUSH close sends the FIN, then waits up to this long for the peer's
     * (reading and dropping what it still sends) before closing the socket: closing with
     * unread bytes would send a RST that can destroy the response on its way (HTTP
     * connection manager's delayed_close_timeout). 0: close at once. */
    uint32_t delayed_close_ms;
    pt_stat_t delayed_close_timeout_stat; /* counted when the wait runs out */
    uint64_t rx_bytes, tx_bytes;
    pt_addr_t peer;
    /* Set by an owner that must keep being reachable when descriptors run out (the admin
     * endpoint): if this spare is missing when the connection closes, the descriptor
     * becomes the spare instead of being closed, with no moment in which another thread
     * could take the number. NULL: closed as usual. */
    pt_fd_reserve_t *fd_spare;
    int pending_status;                 /* error to deliver from the loop */
    pt_conn_t *reap_next;
    pt_conn_t *wprev, *wnext;           /* the worker's list of open connections */
    pt_conn_t *flush_next;              /* the worker's list of queued writes */
    pt_conn_t *pending_prev, *pending_next; /* the worker's list of callbacks to deliver */
};

typedef enum pt_close_how {
    PT_CLOSE_FLUSH, /* write what is queued (bounded by a deadline), then close */
    PT_CLOSE_NOW,   /* close at once, dropping the queue */
    PT_CLOSE_RESET, /* close with RST (SO_LINGER 0) */
} pt_close_how_t;

/* Wraps an accepted, non-blocking socket. The transport's handshake (if any) starts when
 * pt_conn_start is called, and on_connect reports its end. Returns NULL only when out of
 * memory; the caller still owns fd then (transport_ctx is freed either way: see below). */
pt_conn_t *pt_conn_new(pt_worker_t *w, int fd, const pt_addr_t *peer,
                       const pt_transport_ops_t *transport, void *transport_ctx);
/* Starts I/O on an accepted connection with this handler. For a transport with a handshake
 * on_connect is called when it completes. */
void pt_conn_start(pt_conn_t *c, const pt_conn_handler_t *h, void *data);
/* Opens an outbound connection; on_connect reports success or failure (timeout = -ETIMEDOUT).
 * Returns NULL (and sets *err) only if the socket could not be created.
 *
 * Ownership of transport_ctx passes to the call in every case, for pt_conn_new too: the
 * connection disposes of it when it closes, and a call that fails frees it through
 * transport->free_ctx before returning. Callers never clean up transport state themselves,
 * so no error path of a connection set-up has to know which transport it was using. */
pt_conn_t *pt_conn_connect(pt_worker_t *w, const pt_addr_t *addr, uint64_t timeout_ms,
                           const pt_transport_ops_t *transport, void *transport_ctx,
                           const pt_conn_handler_t *h, void *data, int *err);

void pt_conn_set_handler(pt_conn_t *c, const pt_conn_handler_t *h, void *data);
/* Bounds an accepted connection's transport handshake: on_connect(-ETIMEDOUT) if it has not
 * finished in ms. Call before pt_conn_start. */
void pt_conn_handshake_timeout(pt_conn_t *c, uint64_t ms);
void pt_conn_pause_read(pt_conn_t *c);
void pt_conn_resume_read(pt_conn_t *c);
/* Moves all of `data` into the write queue and writes what the socket takes now. */
void pt_conn_write(pt_conn_t *c, pt_buf_t *data);
void pt_conn_write_bytes(pt_conn_t *c, const void *data, size_t len);
void pt_conn_shutdown(pt_conn_t *c);
/* 0 when pt_conn_write would drop what it is given: the connection is closing, shut for
 * writing, or a write failed (its on_error may still be on the way). */
int pt_conn_can_write(const pt_conn_t *c);
/* Calls handler->on_drain once, when the write queue has fallen to `level` bytes or below
 * (from the next loop turn if it already has): for an owner that holds back work until
 * what it wrote has left, whatever the watermarks say (HTTP/1 pipelining). */
void pt_conn_drain_to(pt_conn_t *c, size_t level);
/* Calls handler->on_read from the next loop turn even if no new bytes arrive: for input
 * already buffered in c->in that the owner could not process before (pipelining). */
void pt_conn_schedule_read(pt_conn_t *c);
/* Fails the connection as a write error would: what is queued is dropped, later writes too,
 * and handler->on_error(status) comes from the next loop turn. For an owner that could not
 * put a message together (no memory): the peer must not get it in pieces. */
void pt_conn_fail(pt_conn_t *c, int status);
void pt_conn_close(pt_conn_t *c, pt_close_how_t how);
static inline size_t pt_conn_queued(const pt_conn_t *c)
{
    return pt_buf_len(&c->out);
}
/* Writes what connections queued during this loop turn (run by the worker before it
 * sleeps). */
void pt_conn_flush_queued(pt_worker_t *w);
/* Delivers callbacks recorded inside API calls; returns 1 if any ran. */
int pt_conn_run_pending(pt_worker_t *w);
/* Frees the connections closed since the last call (run by the worker's reaper). */
void pt_conn_reap(pt_worker_t *w);
/* Closes every connection the worker still has (shutdown) and frees them. */
void pt_conn_close_all(pt_worker_t *w);

/* Socket helpers shared by listeners and connects. */
int pt_socket_set_nodelay(int fd);
/* TCP keepalive (core.v3.TcpKeepalive): on when enabled; a 0 field keeps the system's
 * value (net.ipv4.tcp_keepalive_*). */
typedef struct pt_tcp_keepalive {
    int enabled;
    uint32_t probes, time_s, interval_s;
} pt_tcp_keepalive_t;
int pt_socket_set_keepalive(int fd, const pt_tcp_keepalive_t *k);
int pt_socket_set_nonblock(int fd);

#endif
