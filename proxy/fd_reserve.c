#include "proxy/fd_reserve.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/* Shared by every accept, exclusive around a spare's use (see fd_reserve.h). Writers are
 * preferred so a thread at the limit is not kept waiting by a stream of ordinary accepts. */
static pthread_rwlock_t accept_lock;
static pthread_once_t accept_lock_once = PTHREAD_ONCE_INIT;
/* The descriptor every spare is a duplicate of. */
static int devnull = -1;

static void init_once(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&accept_lock, &a);
    pthread_rwlockattr_destroy(&a);
    devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void pt_fd_reserve_init(pt_fd_reserve_t *r)
{
    pthread_once(&accept_lock_once, init_once);
    r->fd = -1;
}

int pt_fd_reserve_fill(pt_fd_reserve_t *r)
{
    if (r->fd >= 0)
        return 0;
    if (devnull < 0)
        return -EBADF;
    r->fd = fcntl(devnull, F_DUPFD_CLOEXEC, 0);
    return r->fd >= 0 ? 0 : -errno;
}

int pt_fd_reserve_take_back(pt_fd_reserve_t *r, int fd)
{
    if (r->fd >= 0 || devnull < 0 || fd == devnull)
        return -1;
    if (dup3(devnull, fd, O_CLOEXEC) < 0)
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
    pthread_rwlock_rdlock(&accept_lock);
    int fd = do_accept(listen_fd, peer);
    pthread_rwlock_unlock(&accept_lock);
    if (!out_of_fds(fd))
        return fd;
    pthread_rwlock_wrlock(&accept_lock);
    fd = do_accept(listen_fd, peer); /* a descriptor may have freed up meanwhile */
    if (out_of_fds(fd)) {
        (void)pt_fd_reserve_fill(spare); /* a number freed since the last call */
        if (spare->fd < 0) {
            fd = -EMFILE;
        } else {
            close(spare->fd);
            spare->fd = -1;
            fd = do_accept(listen_fd, peer);
            if (fd >= 0 && !serve_spare) {
                /* Shed: the connection's number becomes the spare again, in one step. */
                if (pt_fd_reserve_take_back(spare, fd) != 0)
                    close(fd);
                fd = PT_FD_SHED;
            } else if (fd < 0) {
                (void)pt_fd_reserve_fill(spare); /* nothing queued after all */
                if (out_of_fds(fd))
                    fd = -EMFILE;
            }
        }
    }
    pthread_rwlock_unlock(&accept_lock);
    return fd;
}
