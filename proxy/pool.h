/* Upstream connection pools: per worker, one pool per (host, protocol[, upstream name]),
 * holding the connections to that host and the requests waiting for one.
 *
 * A connection carries as many streams as its codec's capacity says: one at a time for
 * HTTP/1, up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS (and the cluster's
 * max_concurrent_streams) for HTTP/2. The pool keeps its connections in four lists
 * (HAProxy's avail_streams, h2o's httpclient): connecting; idle (no stream); available
 * (streams, and room for more); busy (no room). A request is attached to an available
 * connection first, then to an idle one; otherwise it waits in the pool's FIFO while a new
 * connection is established. A connection being established counts for the streams it is
 * expected to take (1 for HTTP/1 and for a protocol ALPN will pick, max_concurrent_streams
 * for HTTP/2), so a burst of requests to an HTTP/2 host opens one connection, not one per
 * request. Whichever connection gets room first serves the oldest waiting requests. A
 * connect failure fails one waiting request. A connection is closed when it has no stream
 * left and its codec says it cannot take another (HTTP/1 after a reset or a response that
 * does not keep the connection, HTTP/2 after GOAWAY), after max_requests_per_connection
 * streams, after the cluster's idle timeout, or when the upstream closes it while idle.
 * Ending one stream never closes a connection that carries others. A pool is found by its
 * host object, the same in every version of the cluster that lists the host, so an update
 * of the cluster keeps its pooled connections; the pool uses the settings of the newest
 * version that asked for it. */
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
    struct pt_pool_conn *prev, *next; /* in one of the pool's lists (its state's) */
    ev_timer idle_timer;
    ev_timer duration_timer;          /* max_connection_duration, from the connect */
    uint32_t requests;                /* streams started on this connection */
    uint32_t streams;                 /* streams attached now */
    uint64_t rx_accounted, tx_accounted;
    uint64_t start_ms;                /* the connect began (loop clock), for the histograms */
    pt_addr_t local;                  /* our end of the connection, for logs */
    /* The counts its connection slot was taken from: the cluster state's, which outlives
     * the version whose breaker took the slot (the pool holds the host, the host holds the
     * state). */
    pt_breaker_counts_t *breaker_counts;
    unsigned state : 2;               /* connecting, busy, available, idle */
    unsigned draining : 1;            /* max_connection_duration reached: no new stream */
} pt_pool_conn_t;

struct pt_pool_request {
    /* Exactly one of these is called, unless the request is cancelled first. */
    void (*on_ready)(pt_pool_request_t *pr, pt_pool_conn_t *pc);
    void (*on_failure)(pt_pool_request_t *pr, int status); /* -ETIMEDOUT, -ECONNREFUSED ... */
    int priority;                     /* which circuit breakers count it (0 DEFAULT, 1 HIGH) */
    struct pt_pool_request *prev, *next;
    pt_pool_t *pool;
};

/* The protocol a pool speaks: its connections' codec, or ALPN's choice per connection. */
typedef enum pt_pool_protocol {
    PT_POOL_HTTP1,
    PT_POOL_HTTP2,
    PT_POOL_ALPN, /* TLS: h2 when the upstream selects it, else HTTP/1.1 */
} pt_pool_protocol_t;

/* The pool for host h (of cluster c), protocol and upstream name on this worker, created on
 * first use. name: the request's upstream name when c has auto_sni or auto_san_validation
 * (pt_cluster_upstream_name; its connections carry that SNI / expect that SAN, so a
 * connection is never reused for another name), else NULL. A named pool is freed once it
 * has no connection and no waiting request. */
pt_pool_t *pt_pool_get(pt_worker_t *w, pt_cluster_t *c, pt_host_t *h, pt_pool_protocol_t proto,
                       const char *name);
/* Returns a connection with a stream attached for the request (the caller then calls the
 * codec's new_stream), or NULL with the request queued (on_ready or
 * on_failure comes later), or NULL with *err < 0 when it cannot be queued: -EOVERFLOW when
 * max_pending_requests is reached (the caller answers 503 UO), or the error that kept a
 * connection from being started (-EMFILE, -ENOMEM, ...) when none is under way to wait for. New connections respect max_connections and the per-host limit; a request over
 * them waits for a connection to free up. Never calls the request's callbacks before
 * returning. */
pt_pool_conn_t *pt_pool_acquire(pt_pool_t *p, pt_pool_request_t *pr, int *err);
void pt_pool_cancel(pt_pool_request_t *pr);
/* The request's stream on pc ended (completed, or reset through the codec first): the
 * connection takes another when its codec says it can, and closes when it has no stream
 * left and cannot. May be called from inside the codec's callbacks. */
void pt_pool_release(pt_pool_conn_t *pc);
/* Frees this worker's pools whose host an ORIGINAL_DST cleanup dropped and that hold no
 * connection and no waiting request (a dropped host has none in use: its idle
 * connections timed out first). */
void pt_pool_sweep_removed(pt_worker_t *w);
struct pt_view;
/* The worker adopted `view`: pools whose cluster it no longer has (removed by CDS: another
 * cluster of the name would have another state) close their idle connections now and the
 * others as they go idle, then are freed, so the cluster's last version, its hosts and its
 * stats can go. A pool found again (the cluster back before its state went) is kept. */
void pt_pool_prune(pt_worker_t *w, const struct pt_view *view);
/* Worker shutdown: closes every pooled connection and frees the pools. */
void pt_pool_close_all(pt_worker_t *w);
/* Idle connections across this worker's pools (tests, admin). */
unsigned pt_pool_idle_count(pt_pool_t *p);

#endif
