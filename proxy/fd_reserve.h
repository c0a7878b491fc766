/* Accepting when the process runs out of descriptors.
 *
 * When accept() fails with EMFILE or ENFILE the connection stays queued and the listening
 * socket stays readable, so a level-triggered loop would call accept again at full speed
 * and never make progress. The remedy libev and libuv describe: keep a spare descriptor; at
 * the limit, close it, accept with the number it frees, and either shed that connection
 * (close it at once: the client sees an orderly close instead of a hang) or serve it (the
 * admin endpoint), then take a spare again.
 *
 * Each thread that accepts keeps its own spare (workers, and the main thread for the admin
 * endpoint). Two things keep the spares from leaking to other threads, which would leave a
 * thread with nothing to shed with while every descriptor is held by clients:
 *  - accepts take a process-wide lock, shared normally and exclusive at the limit, so no
 *    accept can run between a spare's close and the accept that uses its number;
 *  - a spare is taken again by duplicating one process-wide /dev/null descriptor over the
 *    number it replaces (dup3 closes the shed connection and keeps the number in one
 *    step), never by a close followed by an open.
 * Other descriptor users (an upstream socket made in the window) can still take a freed
 * number; then the spare is gone for a while, pt_fd_accept answers -EMFILE, and the caller
 * pauses accepting and calls pt_fd_reserve_fill later: it succeeds once any descriptor is
 * closed. */
#ifndef PT_FD_RESERVE_H
#define PT_FD_RESERVE_H

#include "proxy/address.h"

typedef struct pt_fd_reserve {
    int fd; /* -1: no spare held */
} pt_fd_reserve_t;

void pt_fd_reserve_init(pt_fd_reserve_t *r);
/* Takes a spare if none is held. 0 when one is held, or -errno. */
int pt_fd_reserve_fill(pt_fd_reserve_t *r);
/* A connection served with the spare's number closes: if no spare is held, its descriptor
 * becomes the spare at once (the /dev/null descriptor duplicated over it closes the socket
 * and keeps the number). 0 if so; -1 and the caller closes fd as usual. */
int pt_fd_reserve_take_back(pt_fd_reserve_t *r, int fd);
void pt_fd_reserve_dispose(pt_fd_reserve_t *r);

/* pt_fd_accept's answer when it shed a connection (accept again). */
#define PT_FD_SHED (-100000)

/* accept4(listen_fd) (non-blocking, close-on-exec) with the shortage handled. Returns the new
 * descriptor, or:
 *   -EAGAIN and other accept errors (-ECONNABORTED, -EINTR: accept again),
 *   PT_FD_SHED: out of descriptors, one queued connection was shed with the spare,
 *   -EMFILE: out of descriptors and no spare to shed with: stop watching the socket and
 *            retry after pt_fd_reserve_fill succeeds.
 * serve_spare: at the limit, return the connection accepted with the spare instead of
 * shedding it (the spare is taken again when that connection closes: pt_fd_reserve_take_back,
 * or at a later call). */
int pt_fd_accept(pt_fd_reserve_t *spare, int listen_fd, pt_addr_t *peer, int serve_spare);

#endif
