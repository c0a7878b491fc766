/* Upstream connection pools: per worker, one pool per (cluster, host), holding idle
 * keep-alive connections for reuse and the requests waiting for a connection.
 *
 * A request asks its pool for a connection: an idle one is handed over at once; otherwise
 * the request waits in the pool's FIFO while a new connection is established, and whichever
 * connection becomes ready first (new, or released by another request) serves the oldest
 * waiting request. A connect failure fails one waiting request. Connections are dropped
 * after max_requests_per_connection requests, after the cluster's idle timeout, or when
 * the upstream closes them while idle. A pool is found by its host object, the same in every
 * version of the cluster that lists the host, so an update of the cluster keeps its pooled
 * connections; the pool uses the settings of the newest version that asked for it. */
#ifndef PT_POOL_H
#define PT_POOL_H

#include <ev.h>
#include <stdint.h>

#include "proxy/cluster.h"
#include "proxy/conn.h"
#include "proxy/http_codec.h"

typedef struct pt_pool pt_pool_t;
typedef struct pt_pool_request pt_pool_request_t;

typedef struct pt_pool_conn {
    pt_pool_t *pool;
    pt_conn_t *conn;
    pt_http_client_codec_t *codec;
    struct pt_pool_conn *prev, *next; /* in the pool's idle, busy or connecting list */
    ev_timer idle_timer;
    uint32_t requests;                /* requests started on this connection */
    uint64_t rx_accounted, tx_accounted;
    pt_addr_t local;                  /* our end of the connection, for logs */
    /* The counts its connection slot was taken from: the cluster state's, which outlives
     * the version whose breaker took the slot (the pool holds the host, the host holds the
     * state). */
    pt_breaker_counts_t *breaker_counts;
    unsigned state : 2;               /* connecting, busy, idle */
} pt_pool_conn_t;

struct pt_pool_request {
    /* Exactly one of these is called, unless the request is cancelled first. */
    void (*on_ready)(pt_pool_request_t *pr, pt_pool_conn_t *pc);
    void (*on_failure)(pt_pool_request_t *pr, int status); /* -ETIMEDOUT, -ECONNREFUSED ... */
    int priority;                     /* which circuit breakers count it (0 DEFAULT, 1 HIGH) */
    struct pt_pool_request *prev, *next;
    pt_pool_t *pool;
};

/* The pool for host h (of cluster c) on this worker, created on first use. */
pt_pool_t *pt_pool_get(pt_worker_t *w, pt_cluster_t *c, pt_host_t *h);
/* Returns an idle connection (now busy), or NULL with the request queued (on_ready or
 * on_failure comes later), or NULL with *err < 0 when it cannot be queued: -EOVERFLOW when
 * max_pending_requests is reached (the caller answers 503 UO), or the error that kept a
 * connection from being started (-EMFILE, -ENOMEM, ...) when none is under way to wait for. New connections respect max_connections and the per-host limit; a request over
 * them waits for a connection to free up. Never calls the request's callbacks before
 * returning. */
pt_pool_conn_t *pt_pool_acquire(pt_pool_t *p, pt_pool_request_t *pr, int *err);
void pt_pool_cancel(pt_pool_request_t *pr);
/* The request on pc finished: keep the connection if its codec says it is reusable. */
void pt_pool_release(pt_pool_conn_t *pc);
/* Drops the connection (request reset, protocol error). */
void pt_pool_discard(pt_pool_conn_t *pc);
/* Worker shutdown: closes every pooled connection and frees the pools. */
void pt_pool_close_all(pt_worker_t *w);
/* Idle connections across this worker's pools (tests, admin). */
unsigned pt_pool_idle_count(pt_pool_t *p);

#endif
