#include "proxy/pool.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "discovery/outlier.h"
#include "proxy/hash.h"
#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/time.h"
#include "proxy/view.h"
#include "proxy/worker.h"
#include "tls/transport.h"

enum { PC_CONNECTING, PC_BUSY, PC_AVAIL, PC_IDLE };

/* A pool serves one host of one cluster, in one protocol, on one worker. It is found by the
 * host object, the protocol and, for auto_sni / auto_san_validation, the upstream name (a
 * host belongs to one cluster, and is the same object in every version of the cluster that
 * lists it), holds a reference to the host and to the newest version of the cluster that
 * used it (its settings: connect timeout, TLS, limits), and outlives both versions' other
 * users. */
struct pt_pool {
    pt_worker_t *worker;
    pt_addr_t address;
    const char *address_str;      /* the host's */
    pt_host_t *host;              /* a reference */
    pt_cluster_t *cluster;        /* a reference: the newest version that used this pool */
    pt_cluster_stats_t stats;
    uint64_t idle_timeout_ms;
    uint64_t max_duration_ms;     /* max_connection_duration, 0 = none */
    uint32_t max_requests;
    uint32_t expect_streams;      /* streams a connection being established will take */
    pt_pool_protocol_t protocol;
    /* The upstream name its connections were made for (auto_sni / auto_san_validation:
     * SNI and expected SAN), part of its key; NULL for every other cluster. */
    char *name;
    pt_pool_conn_t *idle, *avail, *busy, *connecting;
    unsigned nidle, nconnecting;
    pt_pool_request_t *pending_head, *pending_tail;
    unsigned npending;
    int closing;                  /* pt_pool_close_all is tearing it down */
    /* Its cluster left the worker's view (pt_pool_prune): connections close as they go
     * idle, and once it has none and no request waits the pool is freed (a deferred
     * release, queued once), letting go of the cluster's last version and its stats. */
    int orphan;
    int release_queued;
    pt_defer_t release;
    struct pt_pool *next_in_bucket;
};

/* Per-worker map of pools, by host. */
typedef struct pool_map {
    pt_pool_t **buckets;
    unsigned nbuckets;
    unsigned count;
} pool_map_t;

static unsigned host_bucket(const pt_host_t *h, pt_pool_protocol_t proto, const char *name,
                            unsigned nbuckets)
{
    uintptr_t v = (uintptr_t)h + (uintptr_t)proto;
    if (name != NULL)
        v += (uintptr_t)pt_hash_name(name);
    v ^= v >> 17;
    v *= 0x9E3779B97F4A7C15ull;
    return (unsigned)((v >> 32) % nbuckets);
}

static void list_push(pt_pool_conn_t **head, pt_pool_conn_t *pc)
{
    pc->prev = NULL;
    pc->next = *head;
    if (*head != NULL)
        (*head)->prev = pc;
    *head = pc;
}

static void list_remove(pt_pool_conn_t **head, pt_pool_conn_t *pc)
{
    if (pc->prev != NULL)
        pc->prev->next = pc->next;
    else
        *head = pc->next;
    if (pc->next != NULL)
        pc->next->prev = pc->prev;
    pc->prev = pc->next = NULL;
}

static pt_pool_conn_t **list_of(pt_pool_t *p, pt_pool_conn_t *pc)
{
    switch (pc->state) {
    case PC_IDLE:
        return &p->idle;
    case PC_AVAIL:
        return &p->avail;
    case PC_BUSY:
        return &p->busy;
    default:
        return &p->connecting;
    }
}

/* The pool takes the settings of the newest cluster version that used it. */
static void pool_adopt_cluster(pt_pool_t *p, pt_cluster_t *c)
{
    if (p->cluster == c)
        return;
    pt_cluster_ref(c);
    pt_cluster_unref(p->cluster);
    p->cluster = c;
    p->stats = c->stats;
    p->idle_timeout_ms = c->http_idle_timeout_ms;
    p->max_duration_ms = c->max_connection_duration_ms;
    p->max_requests = c->max_requests_per_connection;
    /* A connection being established is expected to take this many streams: HTTP/2 as many
     * as the cluster allows (the peer's SETTINGS may lower it once they arrive), HTTP/1
     * (and a protocol ALPN has yet to pick) one. */
    uint32_t expect = 1;
    if (p->protocol == PT_POOL_HTTP2) {
        expect = (c->http2 != NULL ? c->http2->max_concurrent_streams : 2147483647u);
        if (p->max_requests > 0 && p->max_requests < expect)
            expect = p->max_requests;
    }
    p->expect_streams = expect > 0 ? expect : 1;
}

static int map_grow(pool_map_t *m)
{
    unsigned n = m->nbuckets ? m->nbuckets * 2 : 64;
    pt_pool_t **nb = calloc(n, sizeof(*nb));
    if (nb == NULL)
        return -1;
    for (unsigned i = 0; i < m->nbuckets; i++) {
        pt_pool_t *p = m->buckets[i];
        while (p != NULL) {
            pt_pool_t *next = p->next_in_bucket;
            unsigned b = host_bucket(p->host, p->protocol, p->name, n);
            p->next_in_bucket = nb[b];
            nb[b] = p;
            p = next;
        }
    }
    free(m->buckets);
    m->buckets = nb;
    m->nbuckets = n;
    return 0;
}

/* Frees a pool that has nothing left (no connection, no waiting request). */
static void pool_free(pt_pool_t *p)
{
    pt_cluster_unref(p->cluster);
    pt_host_unref(p->host);
    free(p->name);
    free(p);
}

pt_pool_t *pt_pool_get(pt_worker_t *w, pt_cluster_t *c, pt_host_t *h, pt_pool_protocol_t proto,
                       const char *name)
{
    pool_map_t *m = w->pool_map;
    if (m == NULL) {
        m = calloc(1, sizeof(*m));
        if (m == NULL || map_grow(m) != 0) {
            free(m);
            return NULL;
        }
        w->pool_map = m;
    }
    for (pt_pool_t *p = m->buckets[host_bucket(h, proto, name, m->nbuckets)]; p != NULL;
         p = p->next_in_bucket) {
        if (p->host == h && p->protocol == proto &&
            (p->name == name || (p->name != NULL && name != NULL && strcmp(p->name, name) == 0))) {
            p->orphan = 0; /* the cluster is back (the same state: its hosts are the same) */
            pool_adopt_cluster(p, c);
            return p;
        }
    }
    if (m->count >= m->nbuckets && map_grow(m) != 0)
        return NULL;
    pt_pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    if (name != NULL && (p->name = strdup(name)) == NULL) {
        free(p);
        return NULL;
    }
    p->worker = w;
    p->host = pt_host_ref(h);
    p->address = h->address;
    p->address_str = h->address_str;
    p->protocol = proto;
    pool_adopt_cluster(p, c);
    unsigned b = host_bucket(h, proto, name, m->nbuckets);
    p->next_in_bucket = m->buckets[b];
    m->buckets[b] = p;
    m->count++;
    return p;
}

/* ---- connection accounting -------------------------------------------------------- */

static void pool_maybe_release(pt_pool_t *p);

static void account_bytes(pt_pool_conn_t *pc)
{
    pt_pool_t *p = pc->pool;
    if (pc->conn == NULL)
        return;
    pt_stat_add(p->stats.upstream_cx_rx_bytes_total, pc->conn->rx_bytes - pc->rx_accounted);
    pt_stat_add(p->stats.upstream_cx_tx_bytes_total, pc->conn->tx_bytes - pc->tx_accounted);
    pc->rx_accounted = pc->conn->rx_bytes;
    pc->tx_accounted = pc->conn->tx_bytes;
}

static int start_connect(pt_pool_t *p, int priority);

static pt_pool_request_t *pending_pop(pt_pool_t *p);

/* No connection could be started and none is under way or busy, so nothing will ever serve
 * the requests that wait: fail them now (with the reason) instead of leaving them to their
 * timeouts, or forever when they have none. */
static void fail_stranded(pt_pool_t *p, int status)
{
    while (p->nconnecting == 0 && p->busy == NULL && p->avail == NULL &&
           p->pending_head != NULL) {
        pt_pool_request_t *pr = pending_pop(p);
        pt_stat_inc(p->stats.upstream_rq_pending_failure_eject);
        pr->on_failure(pr, status);
    }
}

/* Closes and frees a pool connection in any state. */
static void pc_destroy(pt_pool_conn_t *pc, int remote)
{
    pt_pool_t *p = pc->pool;
    list_remove(list_of(p, pc), pc);
    if (pc->state == PC_IDLE)
        p->nidle--;
    else if (pc->state == PC_CONNECTING)
        p->nconnecting--;
    ev_timer_stop(p->worker->loop, &pc->idle_timer);
    ev_timer_stop(p->worker->loop, &pc->duration_timer);
    account_bytes(pc);
    if (pc->codec != NULL)
        pc->codec->ops->destroy(pc->codec);
    pt_conn_close(pc->conn, PT_CLOSE_NOW);
    if (pc->breaker_counts != NULL)
        pt_breaker_counts_release_cx(pc->breaker_counts);
    pt_stat_dec(p->stats.upstream_cx_active);
    pt_stat_inc(p->stats.upstream_cx_destroy);
    pt_stat_inc(remote ? p->stats.upstream_cx_destroy_remote : p->stats.upstream_cx_destroy_local);
    pt_hist_record(p->stats.upstream_cx_length_ms, pt_loop_ms() - pc->start_ms);
    atomic_fetch_sub_explicit(&p->host->cx_active, 1, memory_order_relaxed);
    free(pc);
    /* A slot under max_connections may have freed up for a request that waits. */
    if (p->npending > (uint64_t)p->nconnecting * p->expect_streams && !p->closing) {
        int rc = start_connect(p, p->pending_head ? p->pending_head->priority : 0);
        if (rc < 0)
            fail_stranded(p, rc);
    }
    pool_maybe_release(p);
}

static void on_idle_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    pt_pool_conn_t *pc = t->data;
    if (!pc->pool->orphan) /* else it closes because its cluster went */
        pt_stat_inc(pc->pool->stats.upstream_cx_idle_timeout);
    pc_destroy(pc, 0);
}

static void pc_set_state(pt_pool_conn_t *pc, unsigned state);

/* max_connection_duration (Envoy's): the connection drains. It takes no new stream; an idle
 * one closes now, a busy HTTP/1 one after its request, an HTTP/2 one says GOAWAY and closes
 * once its streams finished (pt_pool_release). */
static void on_duration_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    pt_pool_conn_t *pc = t->data;
    pt_stat_inc(pc->pool->stats.upstream_cx_max_duration_reached);
    pc->draining = 1;
    if (pc->streams == 0) {
        pc_destroy(pc, 0);
        return;
    }
    if (pc->codec->ops == &pt_http2_client_codec)
        pt_http2_client_codec_goaway(pc->codec);
    pc_set_state(pc, PC_BUSY);
}

static void pc_connect_failed(pt_pool_conn_t *pc, int status);

/* A connection with no stream can no longer be used: its upstream closed it, sent junk or
 * GOAWAY. An HTTP/2 connection that ends before its SETTINGS came fails like a connect. */
static void on_codec_closed(void *owner, pt_http_client_codec_t *codec)
{
    (void)codec;
    pt_pool_conn_t *pc = owner;
    if (pc->state == PC_CONNECTING)
        pc_connect_failed(pc, -ECONNRESET);
    else if (pc->streams == 0)
        pc_destroy(pc, 1);
}

/* Streams the connection can still take: its codec's room, within
 * max_requests_per_connection. */
static unsigned pc_capacity(const pt_pool_conn_t *pc)
{
    if (pc->draining)
        return 0;
    unsigned cap = pc->codec->ops->capacity(pc->codec);
    uint32_t max = pc->pool->max_requests;
    if (max > 0 && cap > 0 && max - pc->requests < cap)
        cap = pc->requests >= max ? 0 : max - pc->requests;
    return cap;
}

/* Moves an established connection to the list its streams and room say. */
static void pc_set_state(pt_pool_conn_t *pc, unsigned state)
{
    pt_pool_t *p = pc->pool;
    if (pc->state == state)
        return;
    list_remove(list_of(p, pc), pc);
    if (pc->state == PC_IDLE) {
        p->nidle--;
        ev_timer_stop(p->worker->loop, &pc->idle_timer);
    } else if (pc->state == PC_CONNECTING) {
        p->nconnecting--;
    }
    pc->state = state;
    list_push(list_of(p, pc), pc);
    if (state == PC_IDLE) {
        p->nidle++;
        /* An orphan pool's connection closes at the next loop turn: not here, its caller
         * still holds it; nor while requests wait in the pool, which it is about to serve
         * (a connection that came up after its cluster went still carries the requests
         * that were waiting for it). */
        if (p->idle_timeout_ms > 0 || (p->orphan && p->pending_head == NULL)) {
            ev_timer_set(&pc->idle_timer,
                         p->orphan && p->pending_head == NULL ? 0.
                                                              : (double)p->idle_timeout_ms / 1000.0,
                         0.);
            ev_timer_start(p->worker->loop, &pc->idle_timer);
        }
    }
}

static void pc_place(pt_pool_conn_t *pc, unsigned capacity)
{
    pc_set_state(pc, capacity == 0 ? PC_BUSY : pc->streams == 0 ? PC_IDLE : PC_AVAIL);
}

/* Attaches one stream to pc (the request's callbacks are the caller's business). */
static void pc_attach(pt_pool_conn_t *pc)
{
    pc->streams++;
    pc->requests++;
    pc_place(pc, pc_capacity(pc));
}

static pt_pool_request_t *pending_pop(pt_pool_t *p)
{
    pt_pool_request_t *pr = p->pending_head;
    if (pr == NULL)
        return NULL;
    p->pending_head = pr->next;
    if (p->pending_head != NULL)
        p->pending_head->prev = NULL;
    else
        p->pending_tail = NULL;
    pr->next = pr->prev = NULL;
    pr->pool = NULL;
    p->npending--;
    pt_stat_dec(p->stats.upstream_rq_pending_active);
    if (p->cluster != NULL)
        pt_breaker_release_pending(&p->cluster->breakers[pr->priority]);
    return pr;
}

/* A connection with room serves the oldest waiting requests, as many as it can take, or
 * waits (idle, available). The requests are attached before any of them is told: a
 * request's callback may end its stream at once, and the connection must not look empty
 * (and be closed) while the others still have to be told. */
static void pc_ready(pt_pool_conn_t *pc)
{
    pt_pool_t *p = pc->pool;
    unsigned cap = pc_capacity(pc);
    if (p->pending_head == NULL || cap == 0) {
        pc_place(pc, cap);
        return;
    }
    if (cap == 1) { /* HTTP/1: one request */
        pt_pool_request_t *pr = pending_pop(p);
        pc_attach(pc);
        pr->on_ready(pr, pc);
        return;
    }
    pt_pool_request_t *head = NULL, **tail = &head;
    while (cap > 0 && p->pending_head != NULL) {
        pt_pool_request_t *pr = pending_pop(p);
        *tail = pr;
        tail = &pr->next;
        pc->streams++;
        pc->requests++;
        cap--;
    }
    pc_place(pc, pc_capacity(pc));
    while (head != NULL) {
        pt_pool_request_t *pr = head;
        head = pr->next;
        pr->next = NULL;
        pr->on_ready(pr, pc);
    }
}


/* A failed connection fails the waiting requests it was expected to serve (one for
 * HTTP/1; the other connections under way cover the rest; this one still counts in
 * nconnecting). They leave the queue before the connection goes: pc_destroy opens a
 * connection for every waiting request without one, which for these requests would retry
 * the dead host at once, and forever, instead of failing them. */
static void pc_connect_failed(pt_pool_conn_t *pc, int status)
{
    pt_pool_t *p = pc->pool;
    uint64_t covered = (uint64_t)(p->nconnecting - 1) * p->expect_streams;
    uint64_t n = p->npending > covered ? p->npending - covered : 0;
    if (n > p->expect_streams)
        n = p->expect_streams;
    pt_pool_request_t *head = NULL, **tail = &head;
    for (; n > 0; n--) {
        pt_pool_request_t *pr = pending_pop(p);
        *tail = pr;
        tail = &pr->next;
    }
    pc_destroy(pc, 1);
    while (head != NULL) {
        pt_pool_request_t *pr = head;
        head = pr->next;
        pr->next = NULL;
        pt_stat_inc(p->stats.upstream_rq_pending_failure_eject);
        pr->on_failure(pr, status);
    }
}

/* The HTTP/2 peer's SETTINGS arrived: the connection is ready with the room they give. A
 * room smaller than expected leaves requests waiting that need a connection of their own. */
static void pc_on_h2_ready(void *owner)
{
    pt_pool_conn_t *pc = owner;
    pt_pool_t *p = pc->pool;
    pc_ready(pc);
    if (p->npending > (uint64_t)p->nconnecting * p->expect_streams && !p->closing) {
        int rc = start_connect(p, p->pending_head ? p->pending_head->priority : 0);
        if (rc < 0)
            fail_stranded(p, rc);
    }
}

static void pc_on_connect(pt_conn_t *c, int status)
{
    pt_pool_conn_t *pc = c->data;
    pt_pool_t *p = pc->pool;
    if (status != 0) {
        if (status == -ETIMEDOUT)
            pt_stat_inc(p->stats.upstream_cx_connect_timeout);
        pt_stat_inc(p->stats.upstream_cx_connect_fail);
        atomic_fetch_add_explicit(&p->host->cx_connect_fail, 1, memory_order_relaxed);
        pt_outlier_report(p->cluster, p->host, PT_OUTLIER_CONNECT_FAILED, 0);
        pt_debug("upstream connect to %s failed: %s", p->address_str, strerror(-status));
        pc->codec = NULL;
        pc_connect_failed(pc, status);
        return;
    }
    pt_outlier_report(p->cluster, p->host, PT_OUTLIER_CONNECT_SUCCESS, 0);
    pt_hist_record(p->stats.upstream_cx_connect_ms, pt_loop_ms() - pc->start_ms);
    socklen_t alen = sizeof(pc->local);
    getsockname(c->fd, &pc->local.sa, &alen);
    int h2 = p->protocol == PT_POOL_HTTP2;
    if (p->protocol == PT_POOL_ALPN) {
        const char *alpn = c->transport->is_tls ? pt_tls_alpn(c) : NULL;
        h2 = alpn != NULL && strcmp(alpn, "h2") == 0;
        pt_stat_inc(h2 ? p->stats.upstream_cx_http2_total : p->stats.upstream_cx_http1_total);
    }
    if (h2)
        pc->codec = pt_http2_client_codec_new(c, p->cluster->http2, &p->stats, on_codec_closed,
                                              pc);
    else
        pc->codec = pt_http1_client_codec.create(c, on_codec_closed, pc);
    if (pc->codec == NULL) {
        pc_destroy(pc, 0);
        return;
    }
    if (p->max_duration_ms > 0) {
        ev_timer_set(&pc->duration_timer, (double)p->max_duration_ms / 1000.0, 0.);
        ev_timer_start(p->worker->loop, &pc->duration_timer);
    }
    if (h2) {
        /* Ready when the peer's SETTINGS say how many streams it takes. */
        pt_http2_client_codec_on_ready(pc->codec, pc_on_h2_ready);
        return;
    }
    pc_ready(pc);
}

static void pc_on_error(pt_conn_t *c, int status)
{
    (void)status;
    pt_pool_conn_t *pc = c->data;
    pc_destroy(pc, 1);
}

static void pc_on_read(pt_conn_t *c)
{
    (void)c;
}

static const pt_conn_handler_t connecting_handler = {
    .on_read = pc_on_read,
    .on_connect = pc_on_connect,
    .on_drain = pc_on_read,
    .on_error = pc_on_error,
};

/* Out of descriptors, every request would log: one line a second for all pools. */
static void log_socket_failure(const pt_pool_t *p, int err)
{
    static pt_log_limit_t limit;
    pt_log_limited(&limit, PT_LOG_WARN, "upstream %s: cannot open a connection: %s",
                   p->address_str, strerror(-err));
}

/* Opens a connection if the circuit breakers allow one. Returns 1 if one is under way, 0 if
 * the breakers said no, or the negative errno of a connection that could not be started
 * (no descriptor, no memory). */
static int start_connect(pt_pool_t *p, int priority)
{
    pt_breaker_t *b = p->cluster ? &p->cluster->breakers[priority] : NULL;
    if (b != NULL) {
        int over = b->per_host_max_connections > 0 &&
                   atomic_load_explicit(&p->host->cx_active, memory_order_relaxed) >=
                       b->per_host_max_connections;
        if (over || !pt_breaker_try_cx(b)) {
            pt_stat_inc(p->stats.upstream_cx_overflow);
            /* As Envoy does: a pool with no connection at all opens one anyway, or a request
             * here could wait for a slot some other pool (another host, another worker)
             * never gives back. The limit can then be exceeded by one per such pool. */
            int empty = p->idle == NULL && p->busy == NULL && p->nconnecting == 0;
            if (!empty)
                return 0;
            pt_breaker_take_cx(b);
        }
    }
    pt_pool_conn_t *pc = calloc(1, sizeof(*pc));
    if (pc == NULL) {
        if (b != NULL)
            pt_breaker_release_cx(b);
        return -ENOMEM;
    }
    pc->pool = p;
    pc->breaker_counts = b != NULL ? b->counts : NULL;
    pc->state = PC_CONNECTING;
    pc->start_ms = pt_loop_ms();
    ev_init(&pc->idle_timer, on_idle_timeout);
    pc->idle_timer.data = pc;
    ev_init(&pc->duration_timer, on_duration_timeout);
    pc->duration_timer.data = pc;
    int err = 0;
    pc->conn = pt_cluster_connect_named(p->cluster, p->worker, p->host, p->name,
                                        &connecting_handler, pc, &err);
    pt_stat_inc(p->stats.upstream_cx_total);
    /* The protocol is known now, or (ALPN) once the handshake picked it. */
    if (p->protocol == PT_POOL_HTTP1)
        pt_stat_inc(p->stats.upstream_cx_http1_total);
    else if (p->protocol == PT_POOL_HTTP2)
        pt_stat_inc(p->stats.upstream_cx_http2_total);
    atomic_fetch_add_explicit(&p->host->cx_total, 1, memory_order_relaxed);
    if (pc->conn == NULL) {
        if (b != NULL)
            pt_breaker_release_cx(b);
        pt_stat_inc(p->stats.upstream_cx_connect_fail);
        log_socket_failure(p, err);
        free(pc);
        return err < 0 ? err : -ENOMEM;
    }
    pt_stat_inc(p->stats.upstream_cx_active);
    atomic_fetch_add_explicit(&p->host->cx_active, 1, memory_order_relaxed);
    list_push(&p->connecting, pc);
    p->nconnecting++;
    return 1;
}

pt_pool_conn_t *pt_pool_acquire(pt_pool_t *p, pt_pool_request_t *pr, int *err)
{
    *err = 0;
    /* A connection that carries streams and has room first (HTTP/2): no new connection
     * while one can take the stream. */
    while (p->avail != NULL) {
        pt_pool_conn_t *pc = p->avail;
        if (pc_capacity(pc) == 0) {
            pc_set_state(pc, PC_BUSY);
            continue;
        }
        pc_attach(pc);
        return pc;
    }
    /* Most recently used first: its socket is the most likely to still be open. */
    while (p->idle != NULL) {
        pt_pool_conn_t *pc = p->idle;
        if (pc_capacity(pc) == 0) {
            pc_destroy(pc, 1);
            continue;
        }
        pc_attach(pc);
        return pc;
    }
    if (p->cluster != NULL && !pt_breaker_try_pending(&p->cluster->breakers[pr->priority])) {
        pt_stat_inc(p->stats.upstream_rq_pending_overflow);
        *err = -EOVERFLOW;
        return NULL;
    }
    pr->pool = p;
    pr->next = NULL;
    pr->prev = p->pending_tail;
    if (p->pending_tail != NULL)
        p->pending_tail->next = pr;
    else
        p->pending_head = pr;
    p->pending_tail = pr;
    p->npending++;
    pt_stat_inc(p->stats.upstream_rq_pending_total);
    pt_stat_inc(p->stats.upstream_rq_pending_active);
    int started = (uint64_t)p->nconnecting * p->expect_streams < p->npending
                      ? start_connect(p, pr->priority)
                      : 1;
    if (p->nconnecting == 0 && p->busy == NULL && p->avail == NULL) {
        /* Nothing under way and nothing to wait for: no connection could be started. */
        pt_pool_cancel(pr);
        *err = started < 0 ? started : -ENOBUFS;
    }
    return NULL;
}

void pt_pool_cancel(pt_pool_request_t *pr)
{
    pt_pool_t *p = pr->pool;
    if (p == NULL)
        return;
    if (pr->prev != NULL)
        pr->prev->next = pr->next;
    else
        p->pending_head = pr->next;
    if (pr->next != NULL)
        pr->next->prev = pr->prev;
    else
        p->pending_tail = pr->prev;
    pr->next = pr->prev = NULL;
    pr->pool = NULL;
    p->npending--;
    pt_stat_dec(p->stats.upstream_rq_pending_active);
    pt_stat_inc(p->stats.upstream_rq_cancelled);
    if (p->cluster != NULL)
        pt_breaker_release_pending(&p->cluster->breakers[pr->priority]);
    /* The connection started for it keeps going and will wait idle. */
}

void pt_pool_release(pt_pool_conn_t *pc)
{
    pt_pool_t *p = pc->pool;
    account_bytes(pc);
    if (pc->streams > 0)
        pc->streams--;
    if (pc->draining || !pc->codec->ops->reusable(pc->codec)) {
        /* No new stream goes on it; the ones it still carries finish first. */
        if (pc->streams == 0)
            pc_destroy(pc, 0);
        else
            pc_set_state(pc, PC_BUSY);
        return;
    }
    if (p->max_requests > 0 && pc->requests >= p->max_requests) {
        if (pc->streams == 0) {
            pt_stat_inc(p->stats.upstream_cx_max_requests);
            pc_destroy(pc, 0);
        } else {
            pc_set_state(pc, PC_BUSY);
        }
        return;
    }
    /* To whoever waits, then back to the connection's idle (or available) handling. */
    pc_ready(pc);
}

unsigned pt_pool_idle_count(pt_pool_t *p)
{
    return p->nidle;
}

void pt_pool_sweep_removed(pt_worker_t *w)
{
    pool_map_t *m = w->pool_map;
    for (unsigned i = 0; m != NULL && i < m->nbuckets; i++) {
        pt_pool_t **pp = &m->buckets[i];
        while (*pp != NULL) {
            pt_pool_t *p = *pp;
            int removed = atomic_load_explicit(&p->host->odst_flags, memory_order_relaxed) &
                          PT_HOST_ODST_REMOVED;
            /* (An orphan pool whose release is queued is left to that release.) */
            if (!removed || p->release_queued || p->idle != NULL || p->avail != NULL ||
                p->busy != NULL || p->connecting != NULL || p->pending_head != NULL) {
                pp = &p->next_in_bucket;
                continue;
            }
            *pp = p->next_in_bucket;
            m->count--;
            pool_free(p);
        }
    }
}

/* ---- pools of clusters that went -------------------------------------------------- */

/* Freed once it holds nothing: the pool of a cluster that went, and a named pool (the
 * names come from requests, so a client sending ever new hosts must not grow the map
 * forever; the next request for a name makes its pool again). */
static int releasable(const pt_pool_t *p)
{
    return p->orphan || p->name != NULL;
}

static void pool_release(pt_defer_t *d)
{
    pt_pool_t *p = (pt_pool_t *)(void *)((char *)d - offsetof(pt_pool_t, release));
    p->release_queued = 0;
    /* Revived meanwhile (the cluster came back), or in use again: it stays. */
    if (!releasable(p) || p->closing || p->idle || p->avail || p->busy || p->connecting ||
        p->pending_head != NULL)
        return;
    pool_map_t *m = p->worker->pool_map;
    pt_pool_t **pp = &m->buckets[host_bucket(p->host, p->protocol, p->name, m->nbuckets)];
    while (*pp != p)
        pp = &(*pp)->next_in_bucket;
    *pp = p->next_in_bucket;
    m->count--;
    pool_free(p); /* may drop the cluster's last version: its stats go (main thread) */
}

/* Queues the release of an orphan or named pool left with nothing (never frees it here:
 * the caller may still use it). */
static void pool_maybe_release(pt_pool_t *p)
{
    if (!releasable(p) || p->closing || p->release_queued || p->idle || p->avail || p->busy ||
        p->connecting || p->pending_head != NULL)
        return;
    p->release_queued = 1;
    p->release.fn = pool_release;
    pt_worker_defer(p->worker, &p->release);
}

void pt_pool_prune(pt_worker_t *w, const pt_view_t *view)
{
    pool_map_t *m = w->pool_map;
    if (m == NULL || view == NULL)
        return;
    for (unsigned i = 0; i < m->nbuckets; i++) {
        for (pt_pool_t *p = m->buckets[i]; p != NULL; p = p->next_in_bucket) {
            const pt_cluster_t *c = pt_view_find_cluster(view, p->cluster->name);
            /* The same cluster (in another version, maybe) has the same state. */
            if (p->orphan || (c != NULL && c->state == p->host->state))
                continue;
            p->orphan = 1;
            while (p->idle != NULL)
                pc_destroy(p->idle, 0); /* queues the release when it was the last */
            pool_maybe_release(p);
        }
    }
}

void pt_pool_close_all(pt_worker_t *w)
{
    pool_map_t *m = w->pool_map;
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->nbuckets; i++) {
        pt_pool_t *p = m->buckets[i];
        while (p != NULL) {
            pt_pool_t *next = p->next_in_bucket;
            p->closing = 1;
            while (p->idle != NULL)
                pc_destroy(p->idle, 0);
            while (p->avail != NULL)
                pc_destroy(p->avail, 0);
            while (p->busy != NULL)
                pc_destroy(p->busy, 0);
            while (p->connecting != NULL)
                pc_destroy(p->connecting, 0);
            while (p->pending_head != NULL)
                pending_pop(p);
            pool_free(p);
            p = next;
        }
    }
    free(m->buckets);
    free(m);
    w->pool_map = NULL;
}
