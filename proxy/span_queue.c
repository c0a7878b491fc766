/* How finished spans get from the workers to the exporters (proxy/tracing.h): one
 * ring per worker (and one for the main thread), one writer and one reader, no lock; the
 * main thread's timer drains them every 100 ms into each tracer's batch, bounded, and hands
 * a batch to its exporter when it is due. */
#include <ev.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/rest_fetch.h"
#include "proxy/cluster_manager.h"
#include "proxy/log.h"
#include "proxy/runtime.h"
#include "proxy/time.h"
#include "proxy/tracer.h"
#include "proxy/view.h"
#include "proxy/worker.h"

/* ---- the queues -------------------------------------------------------------------- */

#define RING_SIZE 2048u /* a power of two */

/* Records come back to the worker that made them: a record malloc'd on a worker and freed
 * on the main thread takes the allocator's slow paths on both sides (neither thread's cache
 * ever sees it again), so most records are blocks of one size that the main thread returns
 * through a second ring, the worker its only reader. Spare blocks a worker may hold: */
#define FREE_RING_SIZE 256u /* a power of two */
#define REC_BLOCK      1024u /* a record that needs more is malloc'd and freed as it is */

typedef struct span_ring {
    _Atomic uint32_t head; /* the main thread's */
    char pad[60];
    _Atomic uint32_t tail; /* the worker's */
    char pad2[60];
    _Atomic uint32_t free_head; /* the worker's */
    char pad3[60];
    _Atomic uint32_t free_tail; /* the main thread's */
    pt_span_rec_t *slot[RING_SIZE];
    pt_span_rec_t *free_slot[FREE_RING_SIZE];
} span_ring_t;

static span_ring_t *rings;
static unsigned nrings;

/* The ring of the calling thread: its worker's, else the last (the main thread's). */
static unsigned ring_index(void)
{
    pt_worker_t *w = pt_worker_current;
    return w != NULL && w->id >= 0 ? (unsigned)w->id : nrings - 1;
}

pt_span_rec_t *pt_span_rec_alloc(size_t size)
{
    unsigned i = ring_index();
    pt_span_rec_t *rec = NULL;
    if (size <= REC_BLOCK && rings != NULL && i < nrings) {
        span_ring_t *q = &rings[i];
        uint32_t head = atomic_load_explicit(&q->free_head, memory_order_relaxed);
        uint32_t tail = atomic_load_explicit(&q->free_tail, memory_order_acquire);
        if (head != tail) {
            rec = q->free_slot[head & (FREE_RING_SIZE - 1)];
            atomic_store_explicit(&q->free_head, head + 1, memory_order_release);
        } else {
            rec = malloc(REC_BLOCK);
        }
        if (rec != NULL)
            rec->pool = (uint16_t)(i + 1);
        return rec;
    }
    rec = malloc(size);
    if (rec != NULL)
        rec->pool = 0;
    return rec;
}

void pt_span_rec_free(pt_span_rec_t *rec)
{
    if (rec == NULL)
        return;
    unsigned i = rec->pool;
    if (i == 0 || rings == NULL || i > nrings) {
        free(rec);
        return;
    }
    span_ring_t *q = &rings[i - 1];
    uint32_t tail = atomic_load_explicit(&q->free_tail, memory_order_relaxed);
    uint32_t head = atomic_load_explicit(&q->free_head, memory_order_acquire);
    if (tail - head >= FREE_RING_SIZE) {
        free(rec); /* the worker holds enough spare blocks */
        return;
    }
    q->free_slot[tail & (FREE_RING_SIZE - 1)] = rec;
    atomic_store_explicit(&q->free_tail, tail + 1, memory_order_release);
}

void pt_span_queue_push(pt_span_rec_t *rec)
{
    unsigned i = ring_index();
    if (rings == NULL || i >= nrings) {
        free(rec);
        return;
    }
    span_ring_t *q = &rings[i];
    uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint32_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail - head >= RING_SIZE) {
        pt_stat_inc(rec->tracer->stats.spans_dropped);
        free(rec);
        return;
    }
    q->slot[tail & (RING_SIZE - 1)] = rec;
    atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
}

/* ======================================================================================
 * Main thread: draining the queues, batching
 * ====================================================================================== */

#define DRAIN_INTERVAL_S 0.1

static struct {
    struct pt_cluster_manager *cm;
    pt_worker_t *worker;
    ev_timer drain;
    int started;
} main_side;

struct pt_cluster_manager *pt_tracing_cluster_manager(void)
{
    return main_side.cm;
}

pt_worker_t *pt_tracing_main_worker(void)
{
    return main_side.worker;
}

int pt_tracer_send_report_buf(pt_tracer_t *t, pt_buf_t *body, const char *content_type,
                              uint64_t timeout_ms, unsigned flags, pt_rest_fetch_cb cb)
{
    pt_cluster_manager_t *cm = pt_tracing_cluster_manager();
    pt_view_t *view = cm != NULL ? pt_cluster_manager_view(cm) : NULL;
    pt_cluster_t *c = view != NULL ? pt_view_find_cluster(view, t->collector_cluster) : NULL;
    int rc = 0;
    if (c == NULL) {
        pt_stat_inc(t->stats.reports_skipped_no_cluster);
        rc = -1;
    } else {
        char err[256];
        t->fetch = pt_rest_fetch_start_buf(c, pt_tracing_main_worker(), "POST",
                                           t->collector_endpoint, t->collector_hostname,
                                           content_type, body, timeout_ms, flags, cb, t, err,
                                           sizeof(err));
        if (t->fetch == NULL) {
            pt_stat_inc(t->stats.reports_failed);
            pt_debug("%s: report failed: %s", t->provider, err);
            rc = -1;
        }
    }
    pt_view_unref(view);
    pt_buf_dispose(body);
    return rc;
}

int pt_tracer_send_report(pt_tracer_t *t, void *body, size_t len, const char *content_type,
                          uint64_t timeout_ms, unsigned flags, pt_rest_fetch_cb cb)
{
    pt_buf_t b = {0};
    int rc = pt_buf_append(&b, body, len);
    free(body);
    if (rc != 0) {
        pt_stat_inc(t->stats.reports_failed);
        pt_buf_dispose(&b);
        return -1;
    }
    return pt_tracer_send_report_buf(t, &b, content_type, timeout_ms, flags, cb);
}

int pt_tracing_init(unsigned nworkers)
{
    if (rings != NULL)
        return 0;
    nrings = nworkers + 1; /* the last: the main thread (and tests without workers) */
    rings = calloc(nrings, sizeof(*rings));
    return rings != NULL ? 0 : -1;
}

/* The spans a tracer holds go out when there are enough of them or the flush interval
 * passed, one report at a time. */
static void maybe_flush(pt_tracer_t *t, uint64_t now_ms, int *timer)
{
    if (t->npending == 0)
        return;
    int otel = t->ops == &pt_otel_ops;
    int full =
        t->npending >= (otel ? pt_runtime.otel_min_flush_spans : pt_runtime.zipkin_min_flush_spans);
    int due = now_ms - t->last_flush_ms >=
              (otel ? pt_runtime.otel_flush_interval_ms : pt_runtime.zipkin_flush_interval_ms);
    if ((!full && !due) || !t->ops->ready(t))
        return;
    if (!full)
        *timer = 1;
    unsigned n = t->npending < PT_TRACER_MAX_BATCH ? t->npending : PT_TRACER_MAX_BATCH;
    t->last_flush_ms = now_ms;
    if (!full)
        pt_stat_inc(t->stats.timer_flushed);
    pt_span_rec_t **batch = malloc(n * sizeof(*batch));
    if (batch == NULL)
        return;
    memcpy(batch, t->pending, n * sizeof(*batch));
    memmove(t->pending, t->pending + n, (t->npending - n) * sizeof(*batch));
    t->npending -= n;
    t->ops->flush(t, batch, n);
    free(batch);
}

static void drain(void)
{
    for (unsigned i = 0; rings != NULL && i < nrings; i++) {
        span_ring_t *q = &rings[i];
        uint32_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
        uint32_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
        while (head != tail) {
            pt_span_rec_t *rec = q->slot[head & (RING_SIZE - 1)];
            head++;
            pt_tracer_t *t = rec->tracer;
            if (t->pending == NULL) {
                /* Made with the tracer's first span: a tracer of a config that was
                 * rejected, or that never samples, holds no batch. */
                t->pending = calloc(PT_TRACER_MAX_PENDING, sizeof(*t->pending));
                t->cap = t->pending != NULL ? PT_TRACER_MAX_PENDING : 0;
            }
            if (t->npending >= t->cap) {
                pt_stat_inc(t->stats.spans_dropped); /* the collector is not keeping up */
                pt_span_rec_free(rec);
            } else {
                t->pending[t->npending++] = rec;
            }
        }
        atomic_store_explicit(&q->head, head, memory_order_release);
    }
    uint64_t now = pt_now_ms();
    for (pt_tracer_t *t = pt_tracer_registry; t != NULL; t = t->next) {
        int timer = 0;
        maybe_flush(t, now, &timer);
    }
}

static void on_drain(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    drain();
}

/* The drain runs once some tracer exists: a process that traces nothing never wakes for
 * it. */
void pt_span_queue_start_drain(void)
{
    if (main_side.started || main_side.worker == NULL || pt_tracer_registry == NULL)
        return;
    ev_timer_init(&main_side.drain, on_drain, DRAIN_INTERVAL_S, DRAIN_INTERVAL_S);
    ev_timer_start(main_side.worker->loop, &main_side.drain);
    ev_unref(main_side.worker->loop); /* the drain alone does not keep the loop alive */
    main_side.started = 1;
}

void pt_tracing_start(struct pt_cluster_manager *cm, pt_worker_t *main_worker)
{
    main_side.cm = cm;
    main_side.worker = main_worker;
    for (pt_tracer_t *t = pt_tracer_registry; t != NULL; t = t->next)
        t->last_flush_ms = pt_now_ms();
    pt_span_queue_start_drain();
}

void pt_tracing_stop(void)
{
    if (main_side.started) {
        ev_ref(main_side.worker->loop);
        ev_timer_stop(main_side.worker->loop, &main_side.drain);
        main_side.started = 0;
    }
    /* Spans still queued, and spare blocks, are let go with their tracers. */
    for (unsigned i = 0; rings != NULL && i < nrings; i++) {
        span_ring_t *q = &rings[i];
        for (uint32_t h = q->head; h != q->tail; h++)
            free(q->slot[h & (RING_SIZE - 1)]);
        for (uint32_t h = q->free_head; h != q->free_tail; h++)
            free(q->free_slot[h & (FREE_RING_SIZE - 1)]);
    }
    free(rings);
    rings = NULL;
    nrings = 0;
    while (pt_tracer_registry != NULL) {
        pt_tracer_t *t = pt_tracer_registry;
        pt_tracer_registry = t->next;
        pt_rest_fetch_free(t->fetch);
        for (unsigned i = 0; i < t->npending; i++)
            free(t->pending[i]);
        pt_tracer_free(t);
    }
    main_side.cm = NULL;
    main_side.worker = NULL;
}
