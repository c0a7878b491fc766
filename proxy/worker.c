#include "proxy/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "discovery/lb.h"
#include "proxy/buf.h"
#include "proxy/conn.h"
#include "proxy/http_codec.h"
#include "proxy/matcher.h"
#include "proxy/time.h"
#include "proxy/config.h"
#include "proxy/heap.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/pool.h"
#include "proxy/stats.h"
#include "proxy/view.h"

_Thread_local pt_worker_t *pt_worker_current;

static unsigned worker_count;

void pt_worker_set_count(unsigned n)
{
    worker_count = n;
}

unsigned pt_worker_count(void)
{
    return worker_count;
}

struct pt_worker_call {
    pt_worker_call_t *next;
    pt_worker_fn fn;
    void *arg;
};

static void run_calls(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    pt_worker_t *w = a->data;
    pthread_mutex_lock(&w->lock);
    pt_worker_call_t *list = w->calls_head;
    w->calls_head = w->calls_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (list != NULL) {
        pt_worker_call_t *next = list->next;
        list->fn(w, list->arg);
        free(list);
        list = next;
    }
    unsigned req = atomic_exchange_explicit(&w->requests, 0, memory_order_acquire);
    if (req & PT_WORKER_CLOSE_LISTENERS)
        pt_worker_close_listeners(w);
    if (req & PT_WORKER_DRAIN_SESSIONS)
        pt_session_drain_all(w);
    if (req & PT_WORKER_STOP) {
        w->stopping = 1;
        ev_break(w->loop, EVBREAK_ALL);
    }
}

void pt_worker_defer(pt_worker_t *w, pt_defer_t *d)
{
    d->next = w->defer_list;
    w->defer_list = d;
}

void pt_worker_run_deferred(pt_worker_t *w)
{
    /* A deferred release may defer more (a stream freeing its upstream request): loop. */
    while (w->defer_list != NULL) {
        pt_defer_t *list = w->defer_list;
        w->defer_list = NULL;
        while (list != NULL) {
            pt_defer_t *next = list->next;
            list->fn(list);
            list = next;
        }
    }
}

/* Rounds of deliver/flush/release per loop turn before the reaper yields to the poll. */
#define PREPARE_ROUNDS_MAX 64

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)revents;
    pt_worker_t *w = p->data;
    /* Before the loop sleeps: deliver recorded callbacks, write what this turn produced,
     * release what ended; any of these can cause more of the others. */
    for (int round = 0;; round++) {
        pt_worker_run_deferred(w);
        w->round_requests = 0;
        pt_conn_flush_queued(w);
        if (round == PREPARE_ROUNDS_MAX && w->pending_list != NULL) {
            /* A transport that keeps producing (a fast TLS peer read 64 KiB at a time)
             * must not keep the other connections from the poll: yield, and come back
             * right after a poll that does not block. */
            ev_idle_start(loop, &w->kick);
            break;
        }
        if (!pt_conn_run_pending(w) && w->defer_list == NULL && w->flush_list == NULL)
            break;
    }
    pt_conn_reap(w);
}

_Thread_local uint64_t pt_loop_clock_us;

static void on_clock(struct ev_loop *loop, ev_check *c, int revents)
{
    (void)loop, (void)c, (void)revents;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pt_loop_clock_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void on_kick(struct ev_loop *loop, ev_idle *i, int revents)
{
    (void)revents;
    ev_idle_stop(loop, i); /* its only job was to make that poll non-blocking */
}

/* How long a worker out of descriptors leaves a listener socket alone before it tries again:
 * short enough that connections queued meanwhile barely notice, long enough that a process
 * at its limit costs nothing (nginx pauses accepting for 500 ms). */
#define ACCEPT_RETRY_SECS 0.1

static void on_accept_retry(struct ev_loop *loop, ev_timer *t, int revents);

static void on_heap_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    pt_worker_t *w = t->data;
    /* ORIGINAL_DST hosts were dropped since the last look: their empty pools go. */
    uint64_t epoch = atomic_load_explicit(&pt_odst_removed_epoch, memory_order_relaxed);
    if (w != NULL && epoch != w->odst_epoch) {
        w->odst_epoch = epoch;
        pt_pool_sweep_removed(w);
    }
    pt_heap_thread_tick();
}

int pt_worker_init(pt_worker_t *w, int id)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    pt_fd_reserve_init(&w->fd_reserve);
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL)
        return -ENOMEM;
    pthread_mutex_init(&w->lock, NULL);
    ev_async_init(&w->wakeup, run_calls);
    w->wakeup.data = w;
    ev_async_start(w->loop, &w->wakeup);
    ev_idle_init(&w->kick, on_kick);
    ev_prepare_init(&w->reaper, on_prepare);
    w->reaper.data = w;
    ev_prepare_start(w->loop, &w->reaper);
    ev_unref(w->loop); /* the reaper alone must not keep the loop alive */
    ev_init(&w->accept_retry, on_accept_retry);
    w->accept_retry.data = w;
    /* A spare descriptor for shedding connections when the process runs out (a worker that
     * cannot take one now takes it at its first shortage's retry). */
    (void)pt_fd_reserve_fill(&w->fd_reserve);
    return 0;
}

static void *worker_main(void *arg)
{
    pt_worker_t *w = arg;
    pt_worker_current = w;
    pt_log_set_thread(w->id);
    /* Checks run first after each poll (highest priority), before any event's callback. */
    ev_check_init(&w->clock, on_clock);
    ev_set_priority(&w->clock, EV_MAXPRI);
    ev_check_start(w->loop, &w->clock);
    ev_unref(w->loop);
    on_clock(w->loop, &w->clock, 0);
    ev_timer_init(&w->heap_tick, on_heap_tick, PT_HEAP_TICK_SECS, PT_HEAP_TICK_SECS);
    w->heap_tick.data = w;
    ev_timer_start(w->loop, &w->heap_tick);
    ev_unref(w->loop); /* housekeeping alone must not keep the loop alive */
    pt_stats_thread_init();
    ev_run(w->loop, 0);
    /* Past the drain: whatever is still open is closed now, so nothing leaks. */
    pt_session_abort_all(w);
    pt_worker_run_deferred(w);
    pt_pool_close_all(w);
    pt_worker_run_deferred(w);
    pt_conn_close_all(w);
    pt_worker_run_deferred(w);
    pt_worker_view_release(w);
    pt_http1_codec_thread_cleanup();
    pt_arena_thread_cleanup();
    pt_listener_thread_cleanup();
    pt_buf_pool_trim();
    pt_stats_thread_dispose();
    return NULL;
}

int pt_worker_start(pt_worker_t *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    return rc == 0 ? 0 : -rc;
}

int pt_worker_post(pt_worker_t *w, pt_worker_fn fn, void *arg)
{
    pt_worker_call_t *c = malloc(sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->next = NULL;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&w->lock);
    if (w->calls_tail != NULL)
        w->calls_tail->next = c;
    else
        w->calls_head = c;
    w->calls_tail = c;
    pthread_mutex_unlock(&w->lock);
    ev_async_send(w->loop, &w->wakeup);
    return 0;
}

void pt_worker_request(pt_worker_t *w, unsigned bits)
{
    atomic_fetch_or_explicit(&w->requests, bits, memory_order_release);
    ev_async_send(w->loop, &w->wakeup);
}

void pt_worker_stop_and_join(pt_worker_t *w)
{
    if (w->loop == NULL)
        return;
    pt_worker_request(w, PT_WORKER_STOP);
    pthread_join(w->thread, NULL);
}

void pt_worker_dispose(pt_worker_t *w)
{
    if (w->loop == NULL)
        return;
    pt_worker_close_listeners(w);
    pt_config_unref(w->config);
    w->config = NULL;
    /* Calls posted after the loop stopped still own their argument: run them so each can
     * release it (they see w->stopping). */
    run_calls(w->loop, &w->wakeup, 0);
    ev_timer_stop(w->loop, &w->accept_retry);
    ev_loop_destroy(w->loop);
    w->loop = NULL;
    pthread_mutex_destroy(&w->lock);
    pt_fd_reserve_dispose(&w->fd_reserve);
}

void pt_worker_adopt_config(pt_worker_t *w, pt_config_t *cfg)
{
    pt_config_t *old = w->config;
    w->config = cfg;
    pt_config_unref(old);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    pt_worker_listener_t *wl = (pt_worker_listener_t *)io;
    pt_worker_t *w = wl->worker;
    if (pt_listener_accept(w, wl->listener, wl->fd) == 0)
        return;
    /* Out of descriptors with no spare to shed with: stop watching this socket (its
     * connections wait in the backlog) rather than spin on it, and try again shortly. */
    ev_io_stop(loop, &wl->io);
    wl->paused = 1;
    if (!ev_is_active(&w->accept_retry)) {
        ev_timer_set(&w->accept_retry, ACCEPT_RETRY_SECS, 0.);
        ev_timer_start(loop, &w->accept_retry);
    }
}

static void on_accept_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    pt_worker_t *w = t->data;
    if (pt_fd_reserve_fill(&w->fd_reserve) != 0) {
        ev_timer_set(t, ACCEPT_RETRY_SECS, 0.); /* still none free */
        ev_timer_start(loop, t);
        return;
    }
    /* A spare again: accept resumes, and sheds with it if the process is still full. */
    for (unsigned i = 0; i < w->nlisteners; i++) {
        pt_worker_listener_t *wl = w->listeners[i];
        if (wl->paused) {
            wl->paused = 0;
            ev_io_start(loop, &wl->io);
        }
    }
}

int pt_worker_add_listener(pt_worker_t *w, pt_listener_t *l, int fd)
{
    /* Watchers are allocated one by one: libev keeps pointers to them. */
    pt_worker_listener_t **n = realloc(w->listeners, (w->nlisteners + 1) * sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    w->listeners = n;
    pt_worker_listener_t *wl = calloc(1, sizeof(*wl));
    if (wl == NULL)
        return -ENOMEM;
    wl->worker = w;
    wl->listener = pt_listener_ref(l);
    wl->fd = fd;
    ev_io_init(&wl->io, on_accept, fd, EV_READ);
    ev_io_start(w->loop, &wl->io);
    w->listeners[w->nlisteners++] = wl;
    return 0;
}

/* The worker closes its own sockets: the kernel then stops queueing connections to them,
 * and no other thread can be using the descriptor. */
static void close_listener(pt_worker_t *w, pt_worker_listener_t *wl)
{
    ev_io_stop(w->loop, &wl->io);
    close(wl->fd);
    if ((unsigned)w->id < wl->listener->nfds)
        wl->listener->fds[w->id] = -1;
    pt_listener_unref(wl->listener);
    free(wl);
}

void pt_worker_close_listeners(pt_worker_t *w)
{
    for (unsigned i = 0; i < w->nlisteners; i++)
        close_listener(w, w->listeners[i]);
    free(w->listeners);
    w->listeners = NULL;
    w->nlisteners = 0;
}

void pt_worker_remove_listener(pt_worker_t *w, pt_listener_t *l)
{
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i]->listener != l)
            continue;
        close_listener(w, w->listeners[i]);
        w->listeners[i] = w->listeners[--w->nlisteners];
        return;
    }
}
