/* Listeners and downstream sessions.
 *
 * A pt_listener_t is the runtime side of a configured listener: one SO_REUSEPORT socket per
 * worker, bound by the main thread at start so bind errors surface before anything runs.
 * Each worker accepts on its own socket; an accepted connection becomes a pt_session_t that
 * runs the filter chain's network filters and lives on that worker until it closes. */
#ifndef PT_LISTENER_H
#define PT_LISTENER_H

#include <stdatomic.h>

#include "proxy/config.h"
#include "proxy/conn.h"

typedef struct pt_worker pt_worker_t;

struct pt_listener {
    /* Held by the server while the listener is configured, by each worker that watches one
     * of its sockets and by each session accepted on it: a listener that LDS removed lives
     * until its last connection is gone. */
    _Atomic long refs;
    const char *name;     /* owned copy: outlives snapshots */
    pt_addr_t address;
    int *fds;             /* one per worker */
    unsigned nfds;        /* 0 for a listener with bind_to_port false */
    _Atomic uint64_t active; /* open downstream connections, all workers (connection_limit) */
    /* Warming (main thread): its sockets are bound but do not listen, and no worker has
     * them, until the SDS secrets of its TLS contexts and the RDS route configurations of
     * its connection managers come (a connection is refused meanwhile, as by Envoy's
     * warming listener). */
    int warming;
};
typedef struct pt_listener pt_listener_t;

/* Binds one socket per worker, listening unless `warming` (then pt_listener_listen later).
 * Returns NULL and writes why into err. */
pt_listener_t *pt_listener_open(const pt_listener_config_t *cfg, unsigned nworkers, int warming,
                                char *err, size_t errlen);
/* A warming listener's sockets start listening. 0, or -1 with why in err. */
int pt_listener_listen(pt_listener_t *l, char *err, size_t errlen);
/* Whether one of the listener's filter chains waits, within its source's
 * initial_fetch_timeout, for an SDS secret of its TLS context or for the RDS route
 * configuration of its connection manager (routes: the server's route manager, may be
 * NULL); *until (when given) is lowered to the earliest moment that ends (monotonic ms).
 * Main thread. */
typedef struct pt_route_manager pt_route_manager_t;
int pt_listener_config_warming(const pt_listener_config_t *cfg, const pt_route_manager_t *routes,
                               uint64_t now_ms, uint64_t *until);
void pt_listener_free(pt_listener_t *l);
pt_listener_t *pt_listener_ref(pt_listener_t *l);
void pt_listener_unref(pt_listener_t *l); /* pt_listener_free at the last reference */

typedef struct pt_session pt_session_t;
struct pt_session {
    pt_conn_t *conn;          /* downstream connection */
    pt_worker_t *worker;
    pt_config_t *config;      /* snapshot this session started with (a reference) */
    /* The view the session resolved its cluster through (tcp_proxy), pinned for its life. */
    struct pt_worker_view *view;
    /* Its listener or filter chain was changed or removed (LDS): the session was asked to
     * drain and is closed when this timer (--drain-time-s) runs out. NULL otherwise. */
    struct ev_timer *drain_deadline;
    const pt_listener_config_t *listener;
    pt_listener_t *bound;     /* the listening socket's owner: connection counts */
    const pt_filter_chain_t *chain;
    unsigned next_filter;
    const char *cluster_override; /* set by sni_cluster for tcp_proxy */
    uint64_t start_ms;
    pt_addr_t local;          /* our address of the connection (destination); after
                                 original_dst, the destination before iptables redirected it */
    unsigned local_restored : 1; /* original_dst found an original destination */
    unsigned handed_off : 1;  /* moved to the listener of its original destination */
    unsigned counted : 1;     /* in its listener's downstream_cx_total/active */
    unsigned global : 1;      /* counted against the global connection limit */
    /* What the TLS inspector saw in the ClientHello (NULL/0 when not inspected). */
    char *sni;                /* lowercase */
    char **alpn;
    unsigned nalpn;
    const char *transport_protocol; /* "tls" or "raw_buffer" */
    const char *http_protocol;      /* the HTTP inspector's finding, or NULL */
    struct pt_inspect *inspect;     /* while the listener filter peeks */
    void *terminal;           /* the terminal filter's per-connection object */
    /* Ends the session at once (worker shutdown); set by the terminal filter. */
    void (*abort)(pt_session_t *s);
    /* The server drains: finish what is in flight, take nothing new (HTTP: close idle
     * keep-alive connections now, the others after their current response). NULL: the
     * session ends on its own (tcp_proxy). */
    void (*drain)(pt_session_t *s);
    struct pt_session *prev, *next; /* the worker's list of sessions */
};

/* Accept callback body, run on the worker that owns the listening socket. Returns 1 when
 * the process is out of descriptors and no connection could be shed (the worker's spare
 * is gone): the caller stops watching the socket until pt_fd_reserve_fill succeeds again,
 * instead of spinning on it. */
int pt_listener_accept(pt_worker_t *w, pt_listener_t *l, int listen_fd);
/* Runs the remaining network filters; called again by a filter that returned PT_STOP. */
void pt_session_continue(pt_session_t *s);
/* Ends a session: the caller has closed (or handed off) s->conn. Frees s. */
void pt_session_end(pt_session_t *s);
/* Frees the calling thread's inspection buffer (a worker thread exiting). */
void pt_listener_thread_cleanup(void);
/* Asks every session of the worker to drain (SIGTERM). */
void pt_session_drain_all(pt_worker_t *w);
/* LDS: sessions whose listener is gone from `cfg`, or whose filter chain is no longer in
 * it as it was, drain (HTTP: "connection: close" on the next response) and are closed after
 * drain_ms at the latest. Others carry on. */
void pt_session_drain_changed(pt_worker_t *w, const pt_config_t *cfg, uint64_t drain_ms);
/* Aborts every session of the worker (shutdown after the drain). */
void pt_session_abort_all(pt_worker_t *w);

#endif
