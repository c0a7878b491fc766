#include "proxy/listener.h"

#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filters/filter.h"
#include "proxy/log.h"
#include "proxy/route_manager.h"
#include "proxy/stats.h"
#include "proxy/time.h"
#include "proxy/view.h"
#include "proxy/worker.h"
#include "filters/client_hello.h"
#include "filters/http_inspector.h"
#include "tls/transport.h"

#define ACCEPT_BATCH 64 /* connections accepted per readiness event, for fairness */

static pt_log_limit_t emfile_log; /* one line a second for every listener and worker */
/* Open downstream connections of the whole process, for the global connection limit. */
static _Atomic uint64_t downstream_connections;

pt_listener_t *pt_listener_open(const pt_listener_config_t *cfg, unsigned nworkers, int warming,
                                char *err, size_t errlen)
{
    pt_listener_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        goto nomem;
    atomic_init(&l->refs, 1);
    l->name = strdup(cfg->name);
    l->address = cfg->address;
    l->fds = calloc(nworkers ? nworkers : 1, sizeof(int));
    if (l->name == NULL || l->fds == NULL)
        goto nomem;
    /* bind_to_port false (Istio's per-destination listeners): no socket at all; connections
     * reach it only when a use_original_dst listener hands them over. */
    for (unsigned i = 0; cfg->bind_to_port && i < nworkers; i++) {
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
        if (!warming && listen(fd, 1024) != 0)
            goto sockerr;
        /* Port 0: later sockets must bind to the port the kernel chose for the first. */
        if (i == 0 && pt_addr_port(&cfg->address) == 0) {
            socklen_t len = sizeof(l->address);
            getsockname(fd, &l->address.sa, &len);
        }
    }
    l->warming = warming;
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

int pt_listener_listen(pt_listener_t *l, char *err, size_t errlen)
{
    for (unsigned i = 0; i < l->nfds; i++) {
        if (listen(l->fds[i], 1024) != 0) {
            char a[PT_ADDR_STRLEN];
            pt_addr_format(&l->address, a, sizeof(a));
            snprintf(err, errlen, "listener \"%s\": cannot listen on %s: %s", l->name, a,
                     strerror(errno));
            return -1;
        }
    }
    l->warming = 0;
    return 0;
}

/* A chain warms while its TLS context waits for SDS secrets or its connection manager for
 * its RDS route configuration: one mechanism for both, as Envoy's listener init target
 * gathers every dependency of the listener. */
static int chain_warming(const pt_filter_chain_t *fc, const pt_route_manager_t *routes,
                         uint64_t now_ms, uint64_t *until)
{
    if (fc == NULL)
        return 0;
    int warming = 0;
    if (pt_tls_context_warming(fc->tls_ctx, now_ms)) {
        warming = 1;
        if (until != NULL && fc->tls_ctx->secrets_warm_until_ms < *until)
            *until = fc->tls_ctx->secrets_warm_until_ms;
    }
    if (fc->rds_name != NULL)
        warming |= pt_route_manager_warming(routes, fc->rds_name, now_ms, until);
    return warming;
}

int pt_listener_config_warming(const pt_listener_config_t *cfg, const pt_route_manager_t *routes,
                               uint64_t now_ms, uint64_t *until)
{
    int warming = chain_warming(cfg->default_chain, routes, now_ms, until);
    for (unsigned i = 0; i < cfg->nchains; i++)
        warming |= chain_warming(&cfg->chains[i], routes, now_ms, until);
    return warming;
}

pt_listener_t *pt_listener_ref(pt_listener_t *l)
{
    if (l != NULL)
        atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    return l;
}

void pt_listener_unref(pt_listener_t *l)
{
    if (l != NULL && atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1)
        pt_listener_free(l);
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
}

static const pt_listener_config_t *find_listener_config(const pt_config_t *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

/* ---- choosing the filter chain and the transport ----------------------------------- */

static void session_fail(pt_session_t *s)
{
    pt_conn_close(s->conn, PT_CLOSE_NOW);
    pt_session_end(s);
}

static void handshake_done(pt_conn_t *c, int status)
{
    pt_session_t *s = c->data;
    if (status != 0) {
        if (status == -ETIMEDOUT) /* transport_socket_connect_timeout */
            pt_stat_inc(s->listener->stats.downstream_cx_transport_socket_connect_timeout);
        session_fail(s);
        return;
    }
    pt_session_continue(s);
}

static void handshake_error(pt_conn_t *c, int status)
{
    (void)status;
    session_fail(c->data);
}

static void handshake_read(pt_conn_t *c)
{
    (void)c; /* bytes after the handshake wait for the filters */
}

static const pt_conn_handler_t handshake_handler = {
    .on_read = handshake_read,
    .on_connect = handshake_done,
    .on_drain = handshake_read,
    .on_error = handshake_error,
};

static void choose_chain(pt_session_t *s)
{
    const pt_listener_config_t *lc = s->listener;
    const char *const *alpn = (const char *const *)s->alpn;
    unsigned nalpn = s->nalpn;
    if (s->http_protocol != NULL) { /* the HTTP inspector's finding, as Envoy sets it */
        alpn = &s->http_protocol;
        nalpn = 1;
    }
    pt_chain_query_t q = {
        .local = &s->local,
        .remote = &s->conn->peer,
        .sni = s->sni,
        .transport_protocol = s->transport_protocol ? s->transport_protocol : "raw_buffer",
        .alpn = alpn,
        .nalpn = nalpn,
    };
    const pt_filter_chain_t *fc = pt_listener_find_chain(lc, &q);
    if (fc == NULL) {
        pt_stat_inc(lc->stats.no_filter_chain_match);
        pt_debug("listener %s: no filter chain matches (sni %s)", lc->name,
                 s->sni ? s->sni : "-");
        session_fail(s);
        return;
    }
    s->chain = fc;
    if (fc->tls_ctx == NULL) {
        pt_session_continue(s);
        return;
    }
    /* TLS terminates here: the handshake runs before any network filter, so filters (RBAC,
     * the connection manager) see the peer's verified identity. */
    void *t = pt_tls_conn_new(fc->tls_ctx, 1, NULL, NULL);
    if (t == NULL) {
        session_fail(s);
        return;
    }
    s->conn->transport = pt_tls_transport();
    s->conn->transport_ctx = t;
    pt_conn_handshake_timeout(s->conn, fc->handshake_timeout_ms);
    pt_conn_start(s->conn, &handshake_handler, s);
}

static void count_session(pt_session_t *s)
{
    if (s->counted)
        return;
    s->counted = 1;
    pt_stat_inc(s->listener->stats.downstream_cx_total);
    pt_stat_inc(s->listener->stats.downstream_cx_active);
}

/* ---- original_dst (envoy.filters.listener.original_dst) ------------------------------ */

/* The destination the connection had before an iptables REDIRECT (or DNAT) sent it here,
 * from the connection tracking entry: SO_ORIGINAL_DST (IPv4), IP6T_SO_ORIGINAL_DST (IPv6),
 * both 80, from <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>, whose
 * other declarations clash with the C library's. A connection that was not redirected has
 * no such entry (or one naming our own address): the local address stays as it is and is
 * not "restored", so use_original_dst does not hand it over. */
#define PT_SO_ORIGINAL_DST      80
#define PT_IP6T_SO_ORIGINAL_DST 80

static void restore_original_dst(pt_session_t *s)
{
    pt_addr_t orig;
    memset(&orig, 0, sizeof(orig));
    socklen_t len = sizeof(orig.sin6);
    int fam = s->local.sa.sa_family;
    int rc = -1;
    if (fam == AF_INET) {
        len = sizeof(orig.sin);
        rc = getsockopt(s->conn->fd, SOL_IP, PT_SO_ORIGINAL_DST, &orig.sin, &len);
    } else if (fam == AF_INET6) {
        rc = getsockopt(s->conn->fd, SOL_IPV6, PT_IP6T_SO_ORIGINAL_DST, &orig.sin6, &len);
    }
    if (rc != 0 || orig.sa.sa_family != fam)
        return;
    if (fam == AF_INET6)
        orig.sin6.sin6_scope_id = 0;
    if (pt_addr_equal(&orig, &s->local))
        return;
    s->local = orig;
    s->local_restored = 1;
}

static void run_listener_filters(pt_session_t *s);

/* Every listener filter of s->listener has run (or timed out with
 * continue_on_listener_filters_timeout): Envoy's use_original_dst hands a connection whose
 * original destination was restored to the listener of that address (exact, else the
 * wildcard one of its port, bound or not), whose own listener filters then run; otherwise
 * (or once handed over) the filter chain is chosen here. */
static void listener_filters_done(pt_session_t *s)
{
    const pt_listener_config_t *lc = s->listener;
    if (lc->use_original_dst && s->local_restored && !s->handed_off) {
        s->handed_off = 1;
        const pt_listener_config_t *to = pt_config_listener_for(s->config, &s->local);
        if (to != NULL && to != lc) {
            pt_debug("listener %s: connection to its original destination goes to listener %s",
                     lc->name, to->name);
            free(s->sni);
            s->sni = NULL;
            for (unsigned i = 0; i < s->nalpn; i++)
                free(s->alpn[i]);
            free(s->alpn);
            s->alpn = NULL;
            s->nalpn = 0;
            s->transport_protocol = NULL;
            s->http_protocol = NULL;
            s->listener = to;
            s->conn->high_watermark = to->buffer_limit;
            run_listener_filters(s);
            return;
        }
    }
    count_session(s);
    choose_chain(s);
}

/* ---- the TLS and HTTP inspectors (envoy.filters.listener.tls_inspector, http_inspector) -- */

#define INSPECT_MAX_BYTES  (64 * 1024) /* a ClientHello larger than this is refused */
#define INSPECT_RETRY_SECS 0.005

typedef struct pt_inspect {
    ev_io io;
    ev_timer deadline;
    ev_timer retry;
    size_t peeked;
    int tls_done; /* the TLS inspector has its answer (or does not run) */
} pt_inspect_t;

static void inspect_stop(pt_session_t *s)
{
    pt_inspect_t *in = s->inspect;
    if (in == NULL)
        return;
    struct ev_loop *loop = s->worker->loop;
    ev_io_stop(loop, &in->io);
    ev_timer_stop(loop, &in->deadline);
    ev_timer_stop(loop, &in->retry);
    free(in);
    s->inspect = NULL;
}

static void tls_inspected(pt_session_t *s, const pt_client_hello_t *ch)
{
    const pt_listener_config_t *lc = s->listener;
    s->inspect->tls_done = 1;
    if (ch != NULL) {
        s->transport_protocol = "tls";
        pt_stat_inc(lc->tls_inspector_tls_found);
        if (ch->sni[0]) {
            s->sni = strdup(ch->sni);
            pt_stat_inc(lc->tls_inspector_sni_found);
        }
        if (ch->nalpn > 0) {
            s->alpn = calloc(ch->nalpn, sizeof(char *));
            for (unsigned i = 0; s->alpn && i < ch->nalpn; i++)
                if ((s->alpn[i] = strdup(ch->alpn[i])) != NULL)
                    s->nalpn++;
            pt_stat_inc(lc->tls_inspector_alpn_found);
        }
    } else {
        s->transport_protocol = "raw_buffer";
        pt_stat_inc(lc->tls_inspector_tls_not_found);
    }
}

static void inspect_done(pt_session_t *s)
{
    inspect_stop(s);
    listener_filters_done(s);
}

static _Thread_local uint8_t *peek_buf;

void pt_listener_thread_cleanup(void)
{
    free(peek_buf);
    peek_buf = NULL;
}

/* The TLS inspector's part of a peek: 1 when it has its answer, 0 when it needs more bytes,
 * -1 when the session was failed. */
static int inspect_tls(pt_session_t *s, const uint8_t *buf, size_t n)
{
    pt_client_hello_t ch;
    pt_ch_result_t rc = pt_client_hello_parse(buf, n, INSPECT_MAX_BYTES, &ch);
    switch (rc) {
    case PT_CH_OK:
        tls_inspected(s, &ch);
        return 1;
    case PT_CH_ERROR:
        /* The parser also reports a hello that would outgrow the limit as an error. Envoy
         * closes those (client_hello_too_large) instead of taking them for plaintext: without
         * the limit such a prefix is only incomplete. */
        if (pt_client_hello_parse(buf, n, SIZE_MAX, &ch) == PT_CH_INCOMPLETE) {
            pt_stat_inc(s->listener->tls_inspector_client_hello_too_large);
            session_fail(s);
            return -1;
        }
        tls_inspected(s, NULL);
        return 1;
    case PT_CH_NOT_TLS:
        tls_inspected(s, NULL);
        return 1;
    case PT_CH_INCOMPLETE:
        break;
    }
    if (n >= INSPECT_MAX_BYTES) {
        pt_stat_inc(s->listener->tls_inspector_client_hello_too_large);
        session_fail(s);
        return -1;
    }
    return 0;
}

/* The HTTP inspector's part (plaintext connections only, as Envoy's): the same answers. */
static int inspect_http(pt_session_t *s, const uint8_t *buf, size_t n)
{
    const pt_listener_config_t *lc = s->listener;
    const char *proto = NULL;
    switch (pt_http_inspect(buf, n, &proto)) {
    case PT_HTTP_INSPECT_FOUND:
        s->http_protocol = proto;
        pt_stat_inc(strcmp(proto, "h2c") == 0        ? lc->http_inspector_http2_found
                    : strcmp(proto, "http/1.1") == 0 ? lc->http_inspector_http11_found
                                                     : lc->http_inspector_http10_found);
        return 1;
    case PT_HTTP_INSPECT_NOT_HTTP:
        pt_stat_inc(lc->http_inspector_http_not_found);
        return 1;
    case PT_HTTP_INSPECT_MORE:
        break;
    }
    if (n >= PT_HTTP_INSPECT_MAX) {
        /* A request line this long says nothing: Envoy closes the connection. */
        pt_stat_inc(lc->http_inspector_read_error);
        session_fail(s);
        return -1;
    }
    return 0;
}

static void inspect_peek(pt_session_t *s)
{
    uint8_t *buf = peek_buf;
    if (buf == NULL && (buf = peek_buf = malloc(INSPECT_MAX_BYTES)) == NULL) {
        session_fail(s);
        return;
    }
    pt_inspect_t *in = s->inspect;
    /* Peek, never read: the TLS library (or the plaintext filters) reads it all later. */
    ssize_t n = recv(s->conn->fd, buf, INSPECT_MAX_BYTES, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        session_fail(s); /* closed or reset before saying anything useful */
        return;
    }
    int rc = 1;
    if (!in->tls_done)
        rc = inspect_tls(s, buf, (size_t)n);
    if (rc > 0 && s->listener->http_inspector &&
        (s->transport_protocol == NULL || strcmp(s->transport_protocol, "raw_buffer") == 0))
        rc = inspect_http(s, buf, (size_t)n);
    if (rc < 0)
        return;
    if (rc == 0 && (size_t)n == in->peeked) {
        /* Nothing new since the last peek. A peek keeps returning the bytes a peer sent
         * before it reset the connection or sent its FIN, so ask the socket itself: a reset
         * ends the session now instead of at listener_filters_timeout; after a FIN no more
         * bytes will come, so a request line the HTTP inspector still waits for never will
         * (the TLS inspector keeps its timeout, as Envoy's). */
        struct pollfd pfd = {.fd = s->conn->fd, .events = POLLIN | POLLRDHUP};
        if (poll(&pfd, 1, 0) == 1) {
            if (pfd.revents & (POLLERR | POLLHUP)) {
                session_fail(s);
                return;
            }
            if ((pfd.revents & POLLRDHUP) && in->tls_done && s->listener->http_inspector) {
                pt_stat_inc(s->listener->http_inspector_http_not_found);
                inspect_done(s);
                return;
            }
        }
    }
    if (rc > 0) {
        inspect_done(s);
        return;
    }
    /* The socket stays readable while we only peek: wait for more bytes with a short timer
     * instead of spinning on readiness. */
    in->peeked = (size_t)n;
    ev_io_stop(s->worker->loop, &in->io);
    ev_timer_set(&in->retry, INSPECT_RETRY_SECS, 0.);
    ev_timer_start(s->worker->loop, &in->retry);
}

static void on_inspect_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    inspect_peek(w->data);
}

static void on_inspect_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    inspect_peek(t->data);
}

static void on_inspect_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    pt_session_t *s = t->data;
    pt_stat_inc(s->listener->listener_filters_timeout);
    if (s->listener->continue_on_listener_filters_timeout) {
        /* As Envoy: on with what is known, raw_buffer unless the TLS inspector said more. */
        if (!s->inspect->tls_done && s->listener->tls_inspector)
            tls_inspected(s, NULL);
        inspect_done(s);
        return;
    }
    session_fail(s);
}

static void inspect_start(pt_session_t *s)
{
    pt_inspect_t *in = calloc(1, sizeof(*in));
    if (in == NULL) {
        session_fail(s);
        return;
    }
    s->inspect = in;
    in->tls_done = !s->listener->tls_inspector;
    struct ev_loop *loop = s->worker->loop;
    ev_io_init(&in->io, on_inspect_io, s->conn->fd, EV_READ);
    in->io.data = s;
    ev_init(&in->retry, on_inspect_retry);
    in->retry.data = s;
    ev_timer_init(&in->deadline, on_inspect_deadline,
                  (double)s->listener->listener_filters_timeout_ms / 1000.0, 0.);
    in->deadline.data = s;
    if (s->listener->listener_filters_timeout_ms > 0)
        ev_timer_start(loop, &in->deadline);
    ev_io_start(loop, &in->io);
}

/* The listener filters of s->listener, in the one order that gives their results meaning:
 * original_dst (synchronous), then the inspectors, which peek. */
static void run_listener_filters(pt_session_t *s)
{
    const pt_listener_config_t *lc = s->listener;
    if (lc->original_dst && !s->local_restored)
        restore_original_dst(s);
    if (lc->tls_inspector || lc->http_inspector)
        inspect_start(s);
    else
        listener_filters_done(s);
}

/* Whether a connection of lc takes a place under the global connection limit: not with
 * ignore_global_conn_limit, nor with bypass_overload_manager when the limit is the overload
 * manager's (Envoy gives such a listener a null overload manager; the runtime key's limit
 * is not the overload manager's and still applies to it). */
static int counts_globally(const pt_config_t *cfg, const pt_listener_config_t *lc)
{
    return !lc->ignore_global_conn_limit &&
           !(lc->bypass_overload_manager && cfg->max_downstream_from_overload_manager);
}

/* Takes a place for one more connection under the global and the listener's limits, or
 * counts the overflow and returns 0 (the caller closes the connection). A listener with
 * ignore_global_conn_limit takes no place under the global one (Envoy's rule for, say, a
 * health or admin listener that must answer when the proxy is full). */
static int admit(const pt_config_t *cfg, pt_listener_t *l, const pt_listener_config_t *lc)
{
    int global = counts_globally(cfg, lc);
    uint64_t all =
        global ? atomic_fetch_add_explicit(&downstream_connections, 1, memory_order_relaxed) : 0;
    if (global && cfg->max_downstream_connections > 0 && all >= cfg->max_downstream_connections) {
        atomic_fetch_sub_explicit(&downstream_connections, 1, memory_order_relaxed);
        pt_stat_inc(lc->stats.downstream_global_cx_overflow);
        return 0;
    }
    uint64_t mine = atomic_fetch_add_explicit(&l->active, 1, memory_order_relaxed);
    if (lc->connection_limit > 0 && mine >= lc->connection_limit) {
        atomic_fetch_sub_explicit(&l->active, 1, memory_order_relaxed);
        if (global)
            atomic_fetch_sub_explicit(&downstream_connections, 1, memory_order_relaxed);
        pt_stat_inc(lc->stats.downstream_cx_overflow);
        return 0;
    }
    return 1;
}

static void start_session(pt_worker_t *w, pt_listener_t *l, const pt_listener_config_t *lc, int fd,
                          const pt_addr_t *peer)
{
    pt_session_t *s = calloc(1, sizeof(*s));
    pt_conn_t *c = s ? pt_conn_new(w, fd, peer, &pt_transport_raw, NULL) : NULL;
    if (c == NULL) {
        free(s);
        close(fd);
        atomic_fetch_sub_explicit(&l->active, 1, memory_order_relaxed);
        if (counts_globally(w->config, lc))
            atomic_fetch_sub_explicit(&downstream_connections, 1, memory_order_relaxed);
        return;
    }
    s->global = counts_globally(w->config, lc);
    s->bound = pt_listener_ref(l);
    c->high_watermark = lc->buffer_limit;
    s->conn = c;
    s->worker = w;
    s->config = pt_config_ref(w->config);
    s->view = pt_worker_view_pin(w);
    s->listener = lc;
    s->start_ms = pt_loop_ms();
    /* The local address: the listener's own when it is bound to one address and port (no
     * syscall); a wildcard (or port 0) listener asks the kernel what the client reached. */
    if (pt_addr_is_any(&lc->address) || pt_addr_port(&lc->address) == 0) {
        socklen_t alen = sizeof(s->local);
        getsockname(fd, &s->local.sa, &alen);
    } else {
        s->local = lc->address;
    }
    s->next = w->sessions;
    if (w->sessions != NULL)
        w->sessions->prev = s;
    w->sessions = s;
    atomic_fetch_add_explicit(&w->downstream_active, 1, memory_order_relaxed);
    /* A listener that may hand the connection over counts it once it is known whose it is
     * (as Envoy, on the listener that gets it). */
    if (!lc->use_original_dst)
        count_session(s);
    run_listener_filters(s);
}

int pt_listener_accept(pt_worker_t *w, pt_listener_t *l, int listen_fd)
{
    const pt_listener_config_t *lc = w->config ? find_listener_config(w->config, l->name) : NULL;
    /* max_connections_to_accept_per_socket_event bounds one readiness event's batch; the
     * socket stays readable, so the loop comes back for the rest after other work. */
    int batch = lc != NULL && lc->max_accept_per_event > 0 && lc->max_accept_per_event < ACCEPT_BATCH
                    ? (int)lc->max_accept_per_event
                    : ACCEPT_BATCH;
    for (int i = 0; i < batch; i++) {
        pt_addr_t peer;
        int fd = pt_fd_accept(&w->fd_reserve, listen_fd, &peer, 0);
        if (fd == PT_FD_SHED || fd == -EMFILE) {
            pt_log_limited(&emfile_log, PT_LOG_WARN,
                           "listener %s: accept: %s: closing new connections until "
                           "descriptors free up",
                           l->name, strerror(EMFILE));
            if (fd == -EMFILE)
                return 1; /* no spare: the worker pauses this socket and retries later */
            if (lc != NULL)
                pt_stat_inc(lc->stats.downstream_cx_overflow);
            continue;
        }
        if (fd == -EINTR || fd == -ECONNABORTED)
            continue;
        if (fd < 0)
            return 0;
        if (lc == NULL) {
            close(fd);
            continue;
        }
        if (!admit(w->config, l, lc)) {
            close(fd);
            continue;
        }
        pt_socket_set_nodelay(fd);
        start_session(w, l, lc, fd, &peer);
    }
    return 0;
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
    inspect_stop(s);
    free(s->sni);
    for (unsigned i = 0; i < s->nalpn; i++)
        free(s->alpn[i]);
    free(s->alpn);
    if (s->counted) {
        pt_stat_dec(s->listener->stats.downstream_cx_active);
        pt_stat_inc(s->listener->stats.downstream_cx_destroy);
        pt_hist_record(s->listener->stats.downstream_cx_length_ms, pt_loop_ms() - s->start_ms);
    }
    atomic_fetch_sub_explicit(&s->worker->downstream_active, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->bound->active, 1, memory_order_relaxed);
    if (s->drain_deadline != NULL) {
        ev_timer_stop(s->worker->loop, s->drain_deadline);
        free(s->drain_deadline);
        s->drain_deadline = NULL;
    }
    if (s->global)
        atomic_fetch_sub_explicit(&downstream_connections, 1, memory_order_relaxed);
    pt_config_unref(s->config);
    pt_worker_view_unpin(s->view);
    pt_listener_unref(s->bound);
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

void pt_session_drain_all(pt_worker_t *w)
{
    /* drain may end a session (an idle connection closes): take the next one first. */
    pt_session_t *s = w->sessions;
    while (s != NULL) {
        pt_session_t *next = s->next;
        if (s->drain != NULL)
            s->drain(s);
        s = next;
    }
}

/* ---- listeners changed by LDS -------------------------------------------------------- */

static void on_drain_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    pt_session_t *s = t->data;
    if (s->abort != NULL) {
        s->abort(s);
    } else {
        pt_conn_close(s->conn, PT_CLOSE_NOW);
        pt_session_end(s);
    }
}

/* Whether cfg still has this session's filter chain as it was: its listener (same name and
 * address) with a chain of the same configuration. */
static int chain_kept(const pt_session_t *s, const pt_config_t *cfg)
{
    const pt_listener_config_t *l = pt_config_find_listener(cfg, s->listener->name);
    if (l == NULL || !pt_addr_equal(&l->address, &s->listener->address))
        return 0;
    if (s->chain == NULL || s->chain->source == NULL)
        return json_equal(l->source, s->listener->source); /* still choosing: the whole */
    unsigned total = l->nchains + (l->default_chain != NULL);
    for (unsigned j = 0; j < total; j++) {
        const pt_filter_chain_t *fc = j < l->nchains ? &l->chains[j] : l->default_chain;
        if (fc->source != NULL && json_equal(fc->source, s->chain->source))
            return 1;
    }
    return 0;
}

void pt_session_drain_changed(pt_worker_t *w, const pt_config_t *cfg, uint64_t drain_ms)
{
    pt_session_t *s = w->sessions;
    while (s != NULL) {
        pt_session_t *next = s->next; /* draining may end the session */
        if (s->drain_deadline == NULL && !chain_kept(s, cfg)) {
            s->drain_deadline = calloc(1, sizeof(*s->drain_deadline));
            if (s->drain_deadline != NULL) {
                ev_timer_init(s->drain_deadline, on_drain_deadline, (double)drain_ms / 1000.0,
                              0.);
                s->drain_deadline->data = s;
                ev_timer_start(w->loop, s->drain_deadline);
            }
            if (s->drain != NULL)
                s->drain(s);
        }
        s = next;
    }
}
