/* A worker thread: one ev_loop, its share of every listener (an SO_REUSEPORT socket each),
 * the connections accepted there for their whole life, and per-worker upstream state.
 *
 * The main thread talks to a worker only by posting a function to run on it
 * (pt_worker_post); the worker runs posted calls in order at its next loop turn. New config
 * snapshots arrive that way: the worker adopts the newest one for new connections while
 * older connections keep the snapshot they started with (refcounted). */
#ifndef PT_WORKER_H
#define PT_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "proxy/fd_reserve.h"

typedef struct pt_config pt_config_t;
typedef struct pt_conn pt_conn_t;
typedef struct pt_worker pt_worker_t;
typedef struct pt_listener pt_listener_t;
typedef struct pt_worker_call pt_worker_call_t;

typedef void (*pt_worker_fn)(pt_worker_t *w, void *arg);

/* Deferred release: an object that must not be freed inside the callback that ends it embeds
 * one of these and is released by `fn` at the start of the next loop turn, when no callback
 * frame can still point at it. */
typedef struct pt_defer {
    struct pt_defer *next;
    void (*fn)(struct pt_defer *d);
} pt_defer_t;

/* One listener's socket on this worker. */
typedef struct pt_worker_listener {
    ev_io io;
    pt_worker_t *worker;
    pt_listener_t *listener;
    int fd;
    int paused; /* out of descriptors: not watched until the accept retry timer */
} pt_worker_listener_t;

struct pt_worker {
    int id;
    pthread_t thread;
    struct ev_loop *loop;
    ev_async wakeup;
    ev_prepare reaper;          /* frees closed connections once no callback can see them */
    ev_idle kick;               /* makes the next poll non-blocking when the reaper yields */
    ev_check clock;             /* refreshes the loop clock (proxy/time.h) after each poll */
    pthread_mutex_t lock;       /* guards the call queue only */
    pt_worker_call_t *calls_head, *calls_tail;
    pt_config_t *config;        /* snapshot for new connections; holds a reference */
    pt_worker_listener_t **listeners;
    unsigned nlisteners;
    pt_conn_t *reap_list;
    pt_conn_t *flush_list;      /* connections with writes queued this loop turn */
    pt_conn_t *pending_list;    /* connections with callbacks to deliver, oldest first */
    pt_conn_t *pending_tail;
    unsigned npending;
    /* Requests begun since the worker last released ended streams (each round of the
     * end-of-turn loop): a pipelining codec that finds it over PT_WORKER_ROUND_REQUESTS
     * continues in the next round, so the streams alive at once stay bounded however many
     * connections pipeline. */
    unsigned round_requests;
    pt_defer_t *defer_list;
    pt_conn_t *conns;           /* every open connection of this worker */
    struct pt_session *sessions; /* every downstream session */
    void *pool_map;             /* upstream connection pools (proxy/pool.c) */
    uint64_t odst_epoch;        /* pt_odst_removed_epoch when its pools were last swept */
    struct pt_worker_view *view; /* what new requests resolve names through (proxy/view.h) */
    _Atomic uint64_t downstream_active; /* open downstream connections, read by the drain */
    /* Out of descriptors: the spare that lets accept shed a connection, and the timer that
     * resumes paused listener sockets once a spare can be taken again. */
    pt_fd_reserve_t fd_reserve;
    ev_timer accept_retry;
    ev_timer heap_tick;         /* returns unused cached memory (proxy/heap.h) */
    _Atomic unsigned requests;  /* PT_WORKER_* bits from pt_worker_request */
    int stopping;
};

#define PT_WORKER_ROUND_REQUESTS 64

/* How many workers run (set once at start, before any config is built): per-worker slots in
 * objects shared by all workers are sized by it. 0 in tests without workers. */
void pt_worker_set_count(unsigned n);
unsigned pt_worker_count(void);

/* What the main thread asks of a worker when draining and stopping. Bits, not posted calls:
 * a request that cannot be lost to a failed allocation (a worker that missed its stop would
 * be joined for ever). They take effect after the calls posted before them. */
enum {
    PT_WORKER_CLOSE_LISTENERS = 1u << 0, /* stop accepting */
    PT_WORKER_DRAIN_SESSIONS = 1u << 1,  /* ask every session to finish (pt_session_drain_all) */
    PT_WORKER_STOP = 1u << 2,            /* leave the loop */
};

/* The calling thread's worker, or NULL on the main thread. */
extern _Thread_local pt_worker_t *pt_worker_current;

int pt_worker_init(pt_worker_t *w, int id);
int pt_worker_start(pt_worker_t *w);
/* Runs fn(w, arg) on the worker's thread at its next loop turn. Thread-safe. */
int pt_worker_post(pt_worker_t *w, pt_worker_fn fn, void *arg);
/* Sets PT_WORKER_* request bits and wakes the worker. Thread-safe; allocates nothing. */
void pt_worker_request(pt_worker_t *w, unsigned bits);
/* Asks the loop to finish and joins the thread. */
void pt_worker_stop_and_join(pt_worker_t *w);
void pt_worker_dispose(pt_worker_t *w);

/* Queues d->fn(d) for the next loop turn (worker thread only). */
void pt_worker_defer(pt_worker_t *w, pt_defer_t *d);
/* Runs everything deferred so far (the reaper does this each loop turn). */
void pt_worker_run_deferred(pt_worker_t *w);

/* Worker-thread side: swaps in a new snapshot (takes the caller's reference). */
void pt_worker_adopt_config(pt_worker_t *w, pt_config_t *cfg);
/* Adds this worker's socket of a listener to its loop / removes them all. */
int pt_worker_add_listener(pt_worker_t *w, pt_listener_t *l, int fd);
void pt_worker_close_listeners(pt_worker_t *w);
/* Stops accepting on this worker's socket of l (LDS removed or moved it). */
void pt_worker_remove_listener(pt_worker_t *w, pt_listener_t *l);

#endif
