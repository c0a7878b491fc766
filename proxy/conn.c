#include "proxy/conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/log.h"
#include "proxy/worker.h"

#define CLOSE_FLUSH_DEADLINE 5.0 /* seconds a closing connection may spend flushing */
#define READ_MIN_SPACE       2048

/* Internal flags beyond the public ones: callbacks recorded inside an API call and
 * delivered from a fresh event-loop frame, so owners never see reentrant callbacks. */
enum {
    F_PENDING_ERROR = 1u << 20,
    F_PENDING_DRAIN = 1u << 21,
    F_PENDING_CONNECT = 1u << 22,
    F_PENDING_READ = 1u << 23,
    F_PENDING_QUEUED = 1u << 24, /* on the worker's pending list */
    F_PENDING_IOREAD = 1u << 25, /* read the transport (bytes may sit inside it, socket quiet) */
    F_DELAYED_CLOSE = 1u << 26,  /* FIN sent; dropping input until the peer's FIN or timeout */
    F_WANT_LEVEL = 1u << 27,     /* on_drain once the queue is at or below drain_level */
};

static void on_null_read(pt_conn_t *c)
{
    (void)c;
}
static void on_null_status(pt_conn_t *c, int status)
{
    (void)c;
    (void)status;
}
static const pt_conn_handler_t null_handler = {
    .on_read = on_null_read,
    .on_connect = on_null_status,
    .on_drain = on_null_read,
    .on_error = on_null_status,
};

/* ---- raw transport --------------------------------------------------------------- */

static ssize_t raw_read(pt_conn_t *c, void *buf, size_t len)
{
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n >= 0)
        return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
}

static ssize_t raw_writev(pt_conn_t *c, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    if (n >= 0)
        return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
}

static void raw_shutdown(pt_conn_t *c)
{
    shutdown(c->fd, SHUT_WR);
}

const pt_transport_ops_t pt_transport_raw = {
    .name = "raw_buffer",
    .handshake = NULL,
    .read = raw_read,
    .writev = raw_writev,
    .shutdown = raw_shutdown,
    .dispose = NULL,
};

/* ---- socket helpers -------------------------------------------------------------- */

int pt_socket_set_nodelay(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int set_int_option(int fd, int level, int name, uint32_t value)
{
    int v = (int)value;
    return value == 0 ? 0 : setsockopt(fd, level, name, &v, sizeof(v));
}

int pt_socket_set_keepalive(int fd, const pt_tcp_keepalive_t *k)
{
    if (!k->enabled)
        return 0;
    if (set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, 1) != 0 ||
        set_int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE, k->time_s) != 0 ||
        set_int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL, k->interval_s) != 0 ||
        set_int_option(fd, IPPROTO_TCP, TCP_KEEPCNT, k->probes) != 0)
        return -errno;
    return 0;
}

int pt_socket_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- watchers -------------------------------------------------------------------- */

static void update_watchers(pt_conn_t *c)
{
    struct ev_loop *loop = c->worker->loop;
    uint32_t f = c->flags;
    if (f & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR)) {
        ev_io_stop(loop, &c->rio);
        ev_io_stop(loop, &c->wio);
        return;
    }
    int want_read, want_write;
    if (f & F_DELAYED_CLOSE) {
        want_read = 1;
        want_write = 0;
    } else if (f & PT_CONN_F_CONNECTING) {
        want_read = 0;
        want_write = 1;
    } else if (f & PT_CONN_F_HANDSHAKING) {
        want_write = (f & PT_CONN_F_READ_WANTS_WRITE) != 0;
        want_read = !want_write;
    } else {
        want_read = (!(f & (PT_CONN_F_READ_PAUSED | PT_CONN_F_EOF | PT_CONN_F_CLOSING))) ||
                    (f & PT_CONN_F_WRITE_WANTS_READ);
        want_write = pt_buf_len(&c->out) > 0 || (f & PT_CONN_F_READ_WANTS_WRITE);
    }
    if (want_read)
        ev_io_start(loop, &c->rio);
    else
        ev_io_stop(loop, &c->rio);
    if (want_write)
        ev_io_start(loop, &c->wio);
    else
        ev_io_stop(loop, &c->wio);
}

/* Delivers recorded callbacks from the next loop iteration via the write watcher. */
static void schedule_pending(pt_conn_t *c)
{
    /* A list on the worker, not an event fed to a watcher: stopping a watcher would drop
     * a fed event, and a lost "drain" leaves a paused peer paused forever. */
    if (c->flags & F_PENDING_QUEUED)
        return;
    c->flags |= F_PENDING_QUEUED;
    pt_worker_t *w = c->worker;
    c->pending_next = NULL;
    c->pending_prev = w->pending_tail;
    if (w->pending_tail != NULL)
        w->pending_tail->pending_next = c;
    else
        w->pending_list = c;
    w->pending_tail = c;
    w->npending++;
}

static void unlink_pending(pt_conn_t *c)
{
    pt_worker_t *w = c->worker;
    if (c->pending_prev != NULL)
        c->pending_prev->pending_next = c->pending_next;
    else
        w->pending_list = c->pending_next;
    if (c->pending_next != NULL)
        c->pending_next->pending_prev = c->pending_prev;
    else
        w->pending_tail = c->pending_prev;
    c->pending_next = c->pending_prev = NULL;
    c->flags &= ~F_PENDING_QUEUED;
    w->npending--;
}

/* Asks for a transport read from the worker's end-of-turn loop. Not ev_feed_event: an
 * event fed while that loop runs is handled after it in the same libev iteration, so what
 * the read produces would wait, unflushed, until some other event ends the next poll. */
static void schedule_io_read(pt_conn_t *c)
{
    c->flags |= F_PENDING_IOREAD;
    schedule_pending(c);
}

static void report_error(pt_conn_t *c, int status)
{
    if (c->flags & (PT_CONN_F_ERROR | PT_CONN_F_CLOSED))
        return;
    c->flags |= PT_CONN_F_ERROR;
    update_watchers(c);
    c->handler->on_error(c, status);
}

static void finish_close(pt_conn_t *c)
{
    struct ev_loop *loop = c->worker->loop;
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    ev_timer_stop(loop, &c->timer);
    ev_clear_pending(loop, &c->rio);
    ev_clear_pending(loop, &c->wio);
    ev_clear_pending(loop, &c->timer);
    if (c->transport != NULL && c->transport->dispose != NULL)
        c->transport->dispose(c);
    if (c->fd >= 0) {
        /* A connection of a thread that keeps a spare descriptor hands its number back as
         * the spare when that is missing (see pt_conn_t.fd_spare). */
        if (c->fd_spare == NULL || pt_fd_reserve_take_back(c->fd_spare, c->fd) != 0)
            close(c->fd);
        c->fd = -1;
    }
    pt_buf_dispose(&c->in);
    pt_buf_dispose(&c->out);
    c->flags |= PT_CONN_F_CLOSED;
    if (c->flags & F_PENDING_QUEUED)
        unlink_pending(c);
    if (c->flags & PT_CONN_F_FLUSH_QUEUED) {
        /* Leave the flush list: the connection is freed at the next reap. */
        pt_conn_t **pp = &c->worker->flush_list;
        while (*pp != NULL && *pp != c)
            pp = &(*pp)->flush_next;
        if (*pp == c)
            *pp = c->flush_next;
        c->flush_next = NULL;
        c->flags &= ~PT_CONN_F_FLUSH_QUEUED;
    }
    if (c->wprev != NULL)
        c->wprev->wnext = c->wnext;
    else
        c->worker->conns = c->wnext;
    if (c->wnext != NULL)
        c->wnext->wprev = c->wprev;
    c->wprev = c->wnext = NULL;
    c->reap_next = c->worker->reap_list;
    c->worker->reap_list = c;
}

/* ---- reading and writing --------------------------------------------------------- */

/* Raw sockets: one readv of up to the whole budget into as many chunks as it takes. */
static ssize_t raw_read_budget(pt_conn_t *c, int *eof)
{
    struct iovec iov[8];
    int cnt = pt_buf_reserve_iov(&c->in, PT_CONN_READ_BUDGET, iov, 8);
    if (cnt == 0)
        return -ENOMEM;
    ssize_t n = readv(c->fd, iov, cnt);
    if (n < 0) {
        int e = errno;
        pt_buf_commit_iov(&c->in, iov, cnt, 0);
        return e == EAGAIN || e == EWOULDBLOCK || e == EINTR ? 0 : -e;
    }
    pt_buf_commit_iov(&c->in, iov, cnt, (size_t)n);
    if (n == 0) {
        *eof = 1;
        c->flags |= PT_CONN_F_EOF;
    }
    c->rx_bytes += (uint64_t)n;
    return n;
}

static void do_read(pt_conn_t *c)
{
    size_t total = 0;
    int eof = 0;
    if (c->transport == &pt_transport_raw) {
        ssize_t n = raw_read_budget(c, &eof);
        if (n < 0) {
            report_error(c, (int)n);
            return;
        }
        total = (size_t)n;
    }
    while (c->transport != &pt_transport_raw && total < PT_CONN_READ_BUDGET) {
        size_t avail;
        char *p = pt_buf_reserve(&c->in, READ_MIN_SPACE, &avail);
        if (p == NULL) {
            report_error(c, -ENOMEM);
            return;
        }
        ssize_t n = c->transport->read(c, p, avail);
        if (n > 0) {
            pt_buf_commit(&c->in, (size_t)n);
            c->rx_bytes += (uint64_t)n;
            total += (size_t)n;
            if ((size_t)n < avail && c->transport == &pt_transport_raw)
                break; /* short read: the socket is drained, skip the EAGAIN round trip */
            continue;
        }
        if (n == 0) {
            eof = 1;
            c->flags |= PT_CONN_F_EOF;
            break;
        }
        if (n == -EAGAIN)
            break;
        report_error(c, (int)n);
        return;
    }
    /* Idle connections hold no buffer memory. */
    if (pt_buf_len(&c->in) == 0)
        pt_buf_dispose(&c->in);
    update_watchers(c);
    /* Out of budget with bytes left inside the transport: the socket may stay quiet, so
     * come back on the next loop turn rather than wait for it. */
    if (!eof && total >= PT_CONN_READ_BUDGET && c->transport->has_pending != NULL &&
        c->transport->has_pending(c))
        schedule_io_read(c);
    /* Also when nothing new arrived but bytes wait in c->in (a resumed reader). */
    if (total > 0 || eof || pt_buf_len(&c->in) > 0)
        c->handler->on_read(c);
}

/* Writes as much of the queue as the socket takes. Returns 0, or a negative errno on a
 * write error (not yet reported). */
static int do_flush(pt_conn_t *c)
{
    while (pt_buf_len(&c->out) > 0) {
        struct iovec iov[64];
        int n = pt_buf_iov(&c->out, iov, 64);
        ssize_t w = c->transport->writev(c, iov, n);
        if (w > 0) {
            pt_buf_drain(&c->out, (size_t)w);
            c->tx_bytes += (uint64_t)w;
            continue;
        }
        if (w == -EAGAIN || w == 0)
            break;
        return (int)w;
    }
    if (pt_buf_len(&c->out) == 0) {
        if ((c->flags & PT_CONN_F_SHUTDOWN_PENDING) && !(c->flags & PT_CONN_F_SHUT)) {
            c->flags |= PT_CONN_F_SHUT;
            c->flags &= ~PT_CONN_F_SHUTDOWN_PENDING;
            c->transport->shutdown(c);
        }
    }
    if ((c->flags & PT_CONN_F_ABOVE_HIGH) && pt_buf_len(&c->out) <= c->high_watermark / 2) {
        c->flags &= ~PT_CONN_F_ABOVE_HIGH;
        c->flags |= F_PENDING_DRAIN;
    }
    if ((c->flags & F_WANT_LEVEL) && pt_buf_len(&c->out) <= c->drain_level) {
        c->flags &= ~F_WANT_LEVEL;
        c->flags |= F_PENDING_DRAIN;
    }
    return 0;
}

static void do_handshake(pt_conn_t *c)
{
    int rc = c->transport->handshake(c);
    if (rc == -EAGAIN) {
        update_watchers(c);
        return;
    }
    c->flags &= ~(PT_CONN_F_HANDSHAKING | PT_CONN_F_READ_WANTS_WRITE | PT_CONN_F_WRITE_WANTS_READ);
    if (c->flags & PT_CONN_F_OUTBOUND)
        ev_timer_stop(c->worker->loop, &c->timer); /* the connect timeout (connect_done) */
    if (rc < 0) {
        c->flags |= PT_CONN_F_ERROR;
        update_watchers(c);
        c->handler->on_connect(c, rc);
        return;
    }
    update_watchers(c);
    c->handler->on_connect(c, 0);
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR | PT_CONN_F_CLOSING))
        return;
    /* Data may have been queued while the handshake ran, or read already buffered by TLS. */
    if (pt_buf_len(&c->out) > 0) {
        int err = do_flush(c);
        if (err < 0) {
            report_error(c, err);
            return;
        }
        update_watchers(c);
    }
}

/* Closing after the flush: with delayed_close_ms, FIN first and wait for the peer's. */
static void close_flushed(pt_conn_t *c)
{
    if (c->flags & F_DELAYED_CLOSE)
        return; /* already waiting */
    if (c->delayed_close_ms == 0 || (c->flags & (PT_CONN_F_EOF | PT_CONN_F_ERROR)) ||
        c->fd < 0) {
        finish_close(c);
        return;
    }
    if (!(c->flags & PT_CONN_F_SHUT)) {
        c->flags |= PT_CONN_F_SHUT;
        c->transport->shutdown(c); /* TLS: close_notify, then FIN */
    }
    c->flags |= F_DELAYED_CLOSE;
    pt_buf_dispose(&c->in);
    pt_buf_dispose(&c->out);
    struct ev_loop *loop = c->worker->loop;
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, (double)c->delayed_close_ms / 1000.0, 0.);
    ev_timer_start(loop, &c->timer);
    update_watchers(c);
}

/* Delayed close: drop what arrives (raw bytes; a TLS peer's records are not decrypted),
 * close on the peer's FIN or an error. A bounded number of reads per event. */
static void delayed_close_read(pt_conn_t *c)
{
    char sink[16384];
    for (int i = 0; i < 4; i++) {
        ssize_t n = read(c->fd, sink, sizeof(sink));
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        finish_close(c); /* FIN, or reset: the peer is done */
        return;
    }
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    pt_conn_t *c = w->data;
    if (c->flags & PT_CONN_F_CLOSED)
        return;
    if (c->flags & F_DELAYED_CLOSE) {
        delayed_close_read(c);
        return;
    }
    if (c->flags & PT_CONN_F_ERROR)
        return;
    if (c->flags & PT_CONN_F_HANDSHAKING) {
        do_handshake(c);
        return;
    }
    if (c->flags & PT_CONN_F_WRITE_WANTS_READ) {
        c->flags &= ~PT_CONN_F_WRITE_WANTS_READ;
        int err = do_flush(c);
        if (err < 0) {
            report_error(c, err);
            return;
        }
    }
    if (!(c->flags & (PT_CONN_F_READ_PAUSED | PT_CONN_F_EOF | PT_CONN_F_CLOSING)))
        do_read(c);
    else
        update_watchers(c);
}

static void connect_done(pt_conn_t *c, int status)
{
    struct ev_loop *loop = c->worker->loop;
    c->flags &= ~PT_CONN_F_CONNECTING;
    /* connect_timeout covers the transport handshake too, as in Envoy (whose Connected
     * event comes after it): with a handshake to run, the timer keeps going. */
    if (status != 0 || c->transport->handshake == NULL)
        ev_timer_stop(loop, &c->timer);
    if (status != 0) {
        c->flags |= PT_CONN_F_ERROR;
        update_watchers(c);
        c->handler->on_connect(c, status);
        return;
    }
    if (c->transport->handshake != NULL) {
        c->flags |= PT_CONN_F_HANDSHAKING;
        do_handshake(c);
        return;
    }
    update_watchers(c);
    c->handler->on_connect(c, 0);
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR | PT_CONN_F_CLOSING))
        return;
    int err = do_flush(c);
    if (err < 0)
        report_error(c, err);
    else
        update_watchers(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    pt_conn_t *c = w->data;
    (void)revents;
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR | F_PENDING_ERROR | F_PENDING_CONNECT |
                    F_DELAYED_CLOSE))
        return; /* the pending list delivers these; a delayed close only reads */
    if (c->flags & PT_CONN_F_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        connect_done(c, err ? -err : 0);
        return;
    }
    if (c->flags & PT_CONN_F_HANDSHAKING) {
        do_handshake(c);
        return;
    }
    if (c->flags & PT_CONN_F_READ_WANTS_WRITE) {
        c->flags &= ~PT_CONN_F_READ_WANTS_WRITE;
        do_read(c);
        if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR))
            return;
    }
    int err = do_flush(c);
    if (err < 0) {
        if (c->flags & PT_CONN_F_CLOSING)
            finish_close(c);
        else
            report_error(c, err);
        return;
    }
    if ((c->flags & PT_CONN_F_CLOSING) && pt_buf_len(&c->out) == 0) {
        close_flushed(c);
        return;
    }
    update_watchers(c);
    if (c->flags & F_PENDING_DRAIN) {
        c->flags &= ~F_PENDING_DRAIN;
        c->handler->on_drain(c);
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    pt_conn_t *c = (pt_conn_t *)((char *)t - offsetof(pt_conn_t, timer));
    if (c->flags & F_DELAYED_CLOSE) {
        pt_stat_inc(c->delayed_close_timeout_stat); /* the peer never closed */
        finish_close(c);
        return;
    }
    if (c->flags & PT_CONN_F_CLOSING) {
        finish_close(c); /* flush deadline passed: drop what the peer would not take */
        return;
    }
    if (c->flags & PT_CONN_F_CONNECTING) {
        connect_done(c, -ETIMEDOUT);
    } else if (c->flags & PT_CONN_F_HANDSHAKING) {
        /* The handshake did not finish in time (connect_timeout upstream,
         * transport_socket_connect_timeout downstream). */
        c->flags &= ~(PT_CONN_F_HANDSHAKING | PT_CONN_F_READ_WANTS_WRITE |
                      PT_CONN_F_WRITE_WANTS_READ);
        c->flags |= PT_CONN_F_ERROR;
        update_watchers(c);
        c->handler->on_connect(c, -ETIMEDOUT);
    }
}

/* ---- lifecycle ------------------------------------------------------------------- */

static pt_conn_t *conn_alloc(pt_worker_t *w, int fd, const pt_transport_ops_t *transport,
                             void *transport_ctx)
{
    pt_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->fd = fd;
    c->worker = w;
    c->handler = &null_handler;
    c->transport = transport ? transport : &pt_transport_raw;
    c->transport_ctx = transport_ctx;
    c->high_watermark = PT_CONN_DEFAULT_HIGH;
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    ev_init(&c->timer, on_timer);
    c->rio.data = c;
    c->wio.data = c;
    c->wnext = w->conns;
    if (w->conns != NULL)
        w->conns->wprev = c;
    w->conns = c;
    return c;
}

/* The set-up failed before a connection held transport_ctx: free it here (see conn.h). */
static void free_transport_ctx(const pt_transport_ops_t *transport, void *transport_ctx)
{
    if (transport_ctx != NULL && transport != NULL && transport->free_ctx != NULL)
        transport->free_ctx(transport_ctx);
}

pt_conn_t *pt_conn_new(pt_worker_t *w, int fd, const pt_addr_t *peer,
                       const pt_transport_ops_t *transport, void *transport_ctx)
{
    pt_conn_t *c = conn_alloc(w, fd, transport, transport_ctx);
    if (c == NULL) {
        free_transport_ctx(transport, transport_ctx);
        return NULL;
    }
    if (peer != NULL)
        c->peer = *peer;
    return c;
}

void pt_conn_start(pt_conn_t *c, const pt_conn_handler_t *h, void *data)
{
    c->handler = h;
    c->data = data;
    if (c->flags & PT_CONN_F_STARTED) {
        /* A later owner taking over (the listener ran the handshake, a filter now reads). */
        update_watchers(c);
        if (!(c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR | PT_CONN_F_HANDSHAKING)) &&
            (pt_buf_len(&c->in) > 0 ||
             (c->transport->has_pending != NULL && c->transport->has_pending(c))))
            schedule_io_read(c);
        return;
    }
    c->flags |= PT_CONN_F_STARTED;
    if (c->transport->handshake != NULL) {
        c->flags |= PT_CONN_F_HANDSHAKING;
        update_watchers(c);
        /* Start at once: the ClientHello may already be in the socket buffer. */
        schedule_io_read(c);
        return;
    }
    update_watchers(c);
}

pt_conn_t *pt_conn_connect(pt_worker_t *w, const pt_addr_t *addr, uint64_t timeout_ms,
                           const pt_transport_ops_t *transport, void *transport_ctx,
                           const pt_conn_handler_t *h, void *data, int *err)
{
    int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        free_transport_ctx(transport, transport_ctx);
        return NULL;
    }
    if (addr->sa.sa_family != AF_UNIX)
        pt_socket_set_nodelay(fd);
    pt_conn_t *c = conn_alloc(w, fd, transport, transport_ctx);
    if (c == NULL) {
        close(fd);
        *err = -ENOMEM;
        free_transport_ctx(transport, transport_ctx);
        return NULL;
    }
    c->peer = *addr;
    c->handler = h;
    c->data = data;
    c->flags |= PT_CONN_F_CONNECTING | PT_CONN_F_OUTBOUND;
    struct sockaddr_storage ss;
    socklen_t sslen = pt_addr_sockaddr(addr, &ss); /* a pipe's path, or the IP address */
    int rc = sslen > 0 ? connect(fd, (struct sockaddr *)&ss, sslen) : (errno = EINVAL, -1);
    if (rc != 0 && errno != EINPROGRESS) {
        /* Report from the loop, never from inside the caller's frame. */
        c->pending_status = -errno;
        c->flags |= F_PENDING_CONNECT;
        schedule_pending(c);
        return c;
    }
    if (timeout_ms > 0) {
        ev_timer_set(&c->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(w->loop, &c->timer);
    }
    update_watchers(c);
    return c;
}

void pt_conn_handshake_timeout(pt_conn_t *c, uint64_t ms)
{
    if (ms == 0 || (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_CLOSING)))
        return;
    ev_timer_stop(c->worker->loop, &c->timer);
    ev_timer_set(&c->timer, (double)ms / 1000.0, 0.);
    ev_timer_start(c->worker->loop, &c->timer);
}

void pt_conn_set_handler(pt_conn_t *c, const pt_conn_handler_t *h, void *data)
{
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_CLOSING))
        return;
    c->handler = h != NULL ? h : &null_handler; /* NULL: ignore events until closed */
    c->data = data;
}

void pt_conn_pause_read(pt_conn_t *c)
{
    if (!(c->flags & PT_CONN_F_READ_PAUSED)) {
        c->flags |= PT_CONN_F_READ_PAUSED;
        update_watchers(c);
    }
}

void pt_conn_resume_read(pt_conn_t *c)
{
    if (c->flags & PT_CONN_F_READ_PAUSED) {
        c->flags &= ~PT_CONN_F_READ_PAUSED;
        update_watchers(c);
        /* Bytes may already sit in c->in or inside the transport (decrypted TLS records)
         * with the socket quiet: deliver them. */
        if (!(c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR)) &&
            (pt_buf_len(&c->in) > 0 ||
             (c->transport->has_pending != NULL && c->transport->has_pending(c))))
            schedule_io_read(c);
    }
}

void pt_conn_write(pt_conn_t *c, pt_buf_t *data)
{
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR | PT_CONN_F_SHUT |
                    PT_CONN_F_SHUTDOWN_PENDING | F_PENDING_ERROR)) {
        pt_buf_dispose(data);
        return;
    }
    pt_buf_move(&c->out, data);
    if (pt_buf_len(&c->out) > c->high_watermark)
        c->flags |= PT_CONN_F_ABOVE_HIGH;
    if (c->flags & (PT_CONN_F_CONNECTING | PT_CONN_F_HANDSHAKING))
        return;
    /* Written at the end of this loop turn, not now: a response's head and body, produced
     * by separate calls in the same turn, then leave in one sendmsg. */
    if (!(c->flags & PT_CONN_F_FLUSH_QUEUED)) {
        c->flags |= PT_CONN_F_FLUSH_QUEUED;
        c->flush_next = c->worker->flush_list;
        c->worker->flush_list = c;
    }
}

/* Delivers what was recorded inside API calls: connect results, write errors, drains and
 * scheduled reads, each from this fresh frame. */
static void deliver_pending(pt_conn_t *c)
{
    if (c->flags & PT_CONN_F_CLOSED)
        return;
    if (c->flags & F_PENDING_CONNECT) {
        c->flags &= ~F_PENDING_CONNECT;
        connect_done(c, c->pending_status ? c->pending_status : -ECONNREFUSED);
        return;
    }
    if (c->flags & F_PENDING_ERROR) {
        c->flags &= ~F_PENDING_ERROR;
        report_error(c, c->pending_status ? c->pending_status : -EPIPE);
        return;
    }
    if (c->flags & PT_CONN_F_ERROR)
        return;
    if ((c->flags & F_PENDING_IOREAD) && !(c->flags & PT_CONN_F_CONNECTING)) {
        c->flags &= ~F_PENDING_IOREAD;
        on_readable(c->worker->loop, &c->rio, EV_READ); /* handshake, or read if not paused */
        if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR | PT_CONN_F_CLOSING))
            return;
    }
    if ((c->flags & F_PENDING_READ) && !(c->flags & PT_CONN_F_CONNECTING)) {
        c->flags &= ~F_PENDING_READ;
        c->handler->on_read(c);
        if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR | PT_CONN_F_CLOSING))
            return;
    }
    if (c->flags & F_PENDING_DRAIN) {
        c->flags &= ~F_PENDING_DRAIN;
        c->handler->on_drain(c);
    }
}

int pt_conn_run_pending(pt_worker_t *w)
{
    /* Only what was queued when the round began: what these callbacks queue (a pipeline
     * continuing in batches) waits for the next round, after the worker has released the
     * streams that ended and written what was produced. Otherwise one connection could keep
     * this loop, and every stream it started, going until its input ran out. */
    unsigned n = w->npending;
    int ran = 0;
    while (n-- > 0 && w->pending_list != NULL) {
        pt_conn_t *c = w->pending_list;
        unlink_pending(c);
        deliver_pending(c);
        ran = 1;
    }
    return ran;
}

void pt_conn_flush_queued(pt_worker_t *w)
{
    while (w->flush_list != NULL) {
        pt_conn_t *c = w->flush_list;
        w->flush_list = c->flush_next;
        c->flush_next = NULL;
        c->flags &= ~PT_CONN_F_FLUSH_QUEUED;
        if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_ERROR | F_PENDING_ERROR |
                        PT_CONN_F_CONNECTING | PT_CONN_F_HANDSHAKING))
            continue;
        int err = do_flush(c);
        if (err < 0) {
            if (c->flags & PT_CONN_F_CLOSING) {
                finish_close(c);
                continue;
            }
            c->flags |= F_PENDING_ERROR;
            c->pending_status = err;
            pt_buf_dispose(&c->out);
            schedule_pending(c);
            continue;
        }
        if ((c->flags & PT_CONN_F_CLOSING) && pt_buf_len(&c->out) == 0) {
            close_flushed(c);
            continue;
        }
        update_watchers(c);
        if (c->flags & F_PENDING_DRAIN)
            schedule_pending(c);
    }
}

void pt_conn_write_bytes(pt_conn_t *c, const void *data, size_t len)
{
    pt_buf_t tmp = {0};
    if (pt_buf_append(&tmp, data, len) != 0) {
        pt_buf_dispose(&tmp);
        return;
    }
    pt_conn_write(c, &tmp);
}

int pt_conn_can_write(const pt_conn_t *c)
{
    return !(c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_CLOSING | PT_CONN_F_ERROR | PT_CONN_F_SHUT |
                         PT_CONN_F_SHUTDOWN_PENDING | F_PENDING_ERROR));
}

void pt_conn_drain_to(pt_conn_t *c, size_t level)
{
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_CLOSING | PT_CONN_F_ERROR))
        return;
    if (pt_buf_len(&c->out) <= level) {
        c->flags |= F_PENDING_DRAIN; /* already there: from the next loop turn */
        schedule_pending(c);
        return;
    }
    c->drain_level = level > UINT32_MAX ? UINT32_MAX : (uint32_t)level;
    c->flags |= F_WANT_LEVEL;
}

void pt_conn_schedule_read(pt_conn_t *c)
{
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_CLOSING | PT_CONN_F_ERROR))
        return;
    c->flags |= F_PENDING_READ;
    schedule_pending(c);
}

void pt_conn_fail(pt_conn_t *c, int status)
{
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_CLOSING | PT_CONN_F_ERROR | F_PENDING_ERROR))
        return;
    c->flags |= F_PENDING_ERROR;
    c->pending_status = status;
    pt_buf_dispose(&c->out);
    schedule_pending(c);
}

void pt_conn_shutdown(pt_conn_t *c)
{
    if (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_SHUT | PT_CONN_F_ERROR))
        return;
    c->flags |= PT_CONN_F_SHUTDOWN_PENDING;
    if (!(c->flags & (PT_CONN_F_CONNECTING | PT_CONN_F_HANDSHAKING)) &&
        pt_buf_len(&c->out) == 0) {
        c->flags &= ~PT_CONN_F_SHUTDOWN_PENDING;
        c->flags |= PT_CONN_F_SHUT;
        c->transport->shutdown(c);
    }
}

void pt_conn_close(pt_conn_t *c, pt_close_how_t how)
{
    if (c == NULL || (c->flags & (PT_CONN_F_CLOSED | PT_CONN_F_CLOSING)))
        return;
    c->handler = &null_handler;
    c->data = NULL;
    c->flags &= ~(F_PENDING_DRAIN | F_PENDING_CONNECT | F_PENDING_READ | F_PENDING_IOREAD);
    /* Writes are queued until the end of the loop turn: what this turn produced (a
     * response head before an upstream reset) still gets its one chance to go out. */
    if (how != PT_CLOSE_FLUSH && pt_buf_len(&c->out) > 0 &&
        !(c->flags & (PT_CONN_F_ERROR | PT_CONN_F_CONNECTING | PT_CONN_F_HANDSHAKING |
                      F_PENDING_ERROR)))
        (void)do_flush(c);
    if (how == PT_CLOSE_RESET && c->fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (how == PT_CLOSE_FLUSH && pt_buf_len(&c->out) > 0 &&
        !(c->flags & (PT_CONN_F_ERROR | PT_CONN_F_CONNECTING | F_PENDING_ERROR))) {
        c->flags |= PT_CONN_F_CLOSING;
        ev_timer_stop(c->worker->loop, &c->timer);
        ev_timer_set(&c->timer, CLOSE_FLUSH_DEADLINE, 0.);
        ev_timer_start(c->worker->loop, &c->timer);
        update_watchers(c);
        return;
    }
    c->flags &= ~F_PENDING_ERROR;
    if (how == PT_CLOSE_FLUSH && !(c->flags & (PT_CONN_F_CONNECTING | PT_CONN_F_HANDSHAKING))) {
        c->flags |= PT_CONN_F_CLOSING;
        close_flushed(c);
        return;
    }
    finish_close(c);
}

void pt_conn_reap(pt_worker_t *w)
{
    while (w->reap_list != NULL) {
        pt_conn_t *c = w->reap_list;
        w->reap_list = c->reap_next;
        free(c);
    }
}

void pt_conn_close_all(pt_worker_t *w)
{
    while (w->conns != NULL) {
        pt_conn_t *c = w->conns;
        c->handler = &null_handler;
        finish_close(c); /* unlinks c */
    }
    pt_conn_reap(w);
}
