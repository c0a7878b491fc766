#include "proxy/fd_reserve.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

/* Set while the process is out of descriptors: accepts then take shortage_lock, so no other
 * accept can run between a spare's close and the accept that uses its number. */
static _Atomic int shortage;
static pthread_mutex_t shortage_lock = PTHREAD_MUTEX_INITIALIZER;

void pt_fd_reserve_init(pt_fd_reserve_t *r)
{
    r->fd = -1;
    r->source = -1;
}

int pt_fd_reserve_fill(pt_fd_reserve_t *r)
{
    if (r->fd >= 0)
        return 0;
    r->fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return r->fd >= 0 ? 0 : -errno;
}

int pt_fd_reserve_take_back(pt_fd_reserve_t *r, int fd)
{
    if (r->fd >= 0 || r->source < 0 || fd == r->source)
        return -1;
    if (dup3(r->source, fd, O_CLOEXEC) < 0)
        return -1;
    r->fd = fd;
    return 0;
}

void pt_fd_reserve_dispose(pt_fd_reserve_t *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

static int do_accept(int listen_fd, pt_addr_t *peer)
{
    socklen_t len = sizeof(*peer);
    int fd = accept4(listen_fd, peer != NULL ? &peer->sa : NULL, peer != NULL ? &len : NULL,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

static int out_of_fds(int err)
{
    return err == -EMFILE || err == -ENFILE;
}

int pt_fd_accept(pt_fd_reserve_t *spare, int listen_fd, pt_addr_t *peer, int serve_spare)
{
    if (!atomic_load_explicit(&shortage, memory_order_relaxed)) {
        int fd = do_accept(listen_fd, peer);
        if (!out_of_fds(fd))
            return fd;
        atomic_store_explicit(&shortage, 1, memory_order_relaxed);
    }
    pthread_mutex_lock(&shortage_lock);
    int fd = do_accept(listen_fd, peer);
    if (fd >= 0)
        atomic_store_explicit(&shortage, 0, memory_order_relaxed); /* descriptors again */
    if (!out_of_fds(fd)) {
        pthread_mutex_unlock(&shortage_lock);
        return fd;
    }
    /* Still out: the spare's number accepts the connection. */
    (void)pt_fd_reserve_fill(spare); /* a number freed since the last call */
    if (spare->fd < 0) {
        pthread_mutex_unlock(&shortage_lock);
        return -EMFILE;
    }
    close(spare->fd);
    spare->fd = -1;
    fd = do_accept(listen_fd, peer);
    if (fd >= 0 && !serve_spare) {
        close(fd);
        fd = PT_FD_SHED;
    }
    /* Take the spare again, but not while a served connection holds its number. */
    if (!serve_spare || fd < 0)
        (void)pt_fd_reserve_fill(spare);
    pthread_mutex_unlock(&shortage_lock);
    return out_of_fds(fd) ? -EMFILE : fd;
}
