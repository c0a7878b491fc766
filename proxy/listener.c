#include "proxy/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filters/filter.h"
#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/time.h"
#include "proxy/worker.h"

#define ACCEPT_BATCH 64 /* connections accepted per readiness event, for fairness */
#define EMFILE_WARN_INTERVAL_MS 1000

/* A descriptor held in reserve for accept() when the process runs out (shed_one). Shared by
 * all listeners and workers; opened with the first listener, closed with the last. */
static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static int reserve_fd = -1;
static unsigned reserve_users;
static _Atomic uint64_t emfile_warned_ms;

static void reserve_acquire(void)
{
    pthread_mutex_lock(&reserve_lock);
    if (reserve_users++ == 0 && reserve_fd < 0)
        reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&reserve_lock);
}

static void reserve_release(void)
{
    pthread_mutex_lock(&reserve_lock);
    if (--reserve_users == 0 && reserve_fd >= 0) {
        close(reserve_fd);
        reserve_fd = -1;
    }
    pthread_mutex_unlock(&reserve_lock);
}

/* Out of descriptors (EMFILE/ENFILE): the connection stays queued and the listening socket
 * readable, so the level-triggered loop would call accept (and log) again at full speed
 * until a descriptor frees up. Shed the connection instead: give up the reserved
 * descriptor, accept, close at once (the client sees an orderly close, not a hang), and
 * reserve again (the remedy libev and libuv use). Returns 1 if a connection was shed. */
static int shed_one(int listen_fd)
{
    int shed = 0;
    pthread_mutex_lock(&reserve_lock);
    if (reserve_fd >= 0) {
        close(reserve_fd);
        reserve_fd = -1;
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            shed = 1;
        }
    }
    /* Another thread may have taken the freed number: then retry at the next shortage. */
    if (reserve_fd < 0 && reserve_users > 0)
        reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&reserve_lock);
    return shed;
}

pt_listener_t *pt_listener_open(const pt_listener_config_t *cfg, unsigned nworkers, char *err,
                                size_t errlen)
{
    pt_listener_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        goto nomem;
    reserve_acquire(); /* released by pt_listener_free */
    l->name = strdup(cfg->name);
    l->address = cfg->address;
    l->fds = calloc(nworkers, sizeof(int));
    if (l->name == NULL || l->fds == NULL)
        goto nomem;
    for (unsigned i = 0; i < nworkers; i++) {
        int fd = socket(cfg->address.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto sockerr;
        l->fds[l->nfds++] = fd;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        /* One socket per worker: the kernel spreads connections across workers. */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
            goto sockerr;
        if (cfg->address.sa.sa_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, &cfg->address.sa, pt_addr_len(&cfg->address)) != 0)
            goto sockerr;
        if (listen(fd, 1024) != 0)
            goto sockerr;
        /* Port 0: later sockets must bind to the port the kernel chose for the first. */
        if (i == 0 && pt_addr_port(&cfg->address) == 0) {
            socklen_t len = sizeof(l->address);
            getsockname(fd, &l->address.sa, &len);
        }
    }
    return l;
sockerr: {
    char a[PT_ADDR_STRLEN];
    pt_addr_format(&cfg->address, a, sizeof(a));
    snprintf(err, errlen, "listener \"%s\": cannot listen on %s: %s", cfg->name, a,
             strerror(errno));
    pt_listener_free(l);
    return NULL;
}
nomem:
    snprintf(err, errlen, "out of memory");
    pt_listener_free(l);
    return NULL;
}

void pt_listener_free(pt_listener_t *l)
{
    if (l == NULL)
        return;
    for (unsigned i = 0; i < l->nfds; i++)
        if (l->fds[i] >= 0)
            close(l->fds[i]);
    free(l->fds);
    free((char *)l->name);
    free(l);
    reserve_release();
}

static const pt_listener_config_t *find_listener_config(const pt_config_t *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

static void start_session(pt_worker_t *w, const pt_listener_config_t *lc, int fd,
                          const pt_addr_t *peer)
{
    pt_session_t *s = calloc(1, sizeof(*s));
    pt_conn_t *c = s ? pt_conn_new(w, fd, peer, &pt_transport_raw, NULL) : NULL;
    if (c == NULL) {
        free(s);
        close(fd);
        return;
    }
    c->high_watermark = lc->buffer_limit;
    s->conn = c;
    s->worker = w;
    s->config = pt_config_ref(w->config);
    s->listener = lc;
    s->start_ms = pt_now_ms();
    s->next = w->sessions;
    if (w->sessions != NULL)
        w->sessions->prev = s;
    w->sessions = s;
    atomic_fetch_add_explicit(&w->downstream_active, 1, memory_order_relaxed);
    pt_stat_inc(lc->stats.downstream_cx_total);
    pt_stat_inc(lc->stats.downstream_cx_active);

    /* One filter chain until filter_chain_match lands. */
    if (lc->nchains == 0) {
        pt_stat_inc(lc->stats.no_filter_chain_match);
        pt_conn_close(c, PT_CLOSE_NOW);
        pt_session_end(s);
        return;
    }
    s->chain = &lc->chains[0];
    pt_session_continue(s);
}

void pt_listener_accept(pt_worker_t *w, pt_listener_t *l, int listen_fd)
{
    const pt_listener_config_t *lc = w->config ? find_listener_config(w->config, l->name) : NULL;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        pt_addr_t peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(listen_fd, &peer.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EMFILE && errno != ENFILE)
                return;
            int err = errno;
            int shed = shed_one(listen_fd);
            /* At most one line a second however many connections are shed. */
            uint64_t now = pt_now_ms(), last = atomic_load(&emfile_warned_ms);
            if (now - last >= EMFILE_WARN_INTERVAL_MS &&
                atomic_compare_exchange_strong(&emfile_warned_ms, &last, now))
                pt_warn("listener %s: accept: %s: closing new connections until descriptors "
                        "free up", l->name, strerror(err));
            if (!shed)
                return;
            if (lc != NULL)
                pt_stat_inc(lc->stats.downstream_cx_overflow);
            continue;
        }
        if (lc == NULL) {
            close(fd);
            continue;
        }
        pt_socket_set_nodelay(fd);
        start_session(w, lc, fd, &peer);
    }
}

void pt_session_continue(pt_session_t *s)
{
    const pt_filter_chain_t *fc = s->chain;
    while (s->next_filter < fc->nfilters) {
        const pt_network_filter_t *f = &fc->filters[s->next_filter++];
        /* A terminal filter owns the session from here; it may have ended it already. */
        if (f->ops->terminal) {
            f->ops->on_new_connection(s, f->config);
            return;
        }
        if (f->ops->on_new_connection(s, f->config) == PT_STOP)
            return;
    }
}

void pt_session_end(pt_session_t *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        s->worker->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    pt_stat_dec(s->listener->stats.downstream_cx_active);
    pt_stat_inc(s->listener->stats.downstream_cx_destroy);
    atomic_fetch_sub_explicit(&s->worker->downstream_active, 1, memory_order_relaxed);
    pt_config_unref(s->config);
    free(s);
}

void pt_session_abort_all(pt_worker_t *w)
{
    while (w->sessions != NULL) {
        pt_session_t *s = w->sessions;
        if (s->abort != NULL) {
            s->abort(s);
        } else {
            pt_conn_close(s->conn, PT_CLOSE_NOW);
            pt_session_end(s);
        }
    }
}
