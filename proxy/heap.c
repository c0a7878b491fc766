#include "proxy/heap.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "proxy/arena.h"
#include "proxy/buf.h"

static size_t peak_in_use; /* main thread only */
static _Atomic size_t trims;

void pt_heap_thread_tick(void)
{
    pt_buf_pool_decay();
    pt_arena_cache_decay();
}

void pt_heap_note_peak(void)
{
    struct mallinfo2 mi = mallinfo2();
    size_t in_use = mi.uordblks + mi.hblkhd;
    if (in_use > peak_in_use)
        peak_in_use = in_use;
}

static void spare_tick(void);

int pt_heap_maybe_trim(void)
{
    pt_heap_thread_tick();
    spare_tick();
    struct mallinfo2 mi = mallinfo2();
    size_t in_use = mi.uordblks + mi.hblkhd;
    if (in_use > peak_in_use)
        peak_in_use = in_use;
    if (peak_in_use - in_use < PT_HEAP_TRIM_DROP)
        return 0;
    malloc_trim(0);
    peak_in_use = in_use;
    atomic_fetch_add_explicit(&trims, 1, memory_order_relaxed);
    return 1;
}

void pt_heap_stats(pt_heap_stats_t *out)
{
    struct mallinfo2 mi = mallinfo2();
    out->in_use = mi.uordblks + mi.hblkhd;
    out->heap = mi.arena + mi.hblkhd;
    out->trims = atomic_load_explicit(&trims, memory_order_relaxed);
}

/* What precedes a big buffer: where its memory came from. */
typedef struct big_header {
    void *mapping;      /* the mapping holding it, or NULL: malloc'd (the header starts it) */
    size_t mapping_len;
    size_t capacity;    /* bytes usable from the buffer's start */
} big_header_t;

#define HUGE_PAGE ((size_t)2 << 20)
#define BIG_HEADER_ROOM ((size_t)64) /* keeps the buffer as aligned as malloc's */

/* The last big buffer freed, kept for the next one: a file rewritten again and again (a
 * control plane's 13 MB of assignments) is read into pages already there, not into fresh
 * ones the kernel must zero and fault in. Given back at the second tick it goes unused
 * (pt_heap_maybe_trim), so it never outlives the burst by more than two seconds. */
static _Atomic(big_header_t *) spare;
static _Atomic unsigned spare_idle_ticks;

static void big_unmap(big_header_t *h)
{
    if (h != NULL)
        munmap(h->mapping, h->mapping_len);
}

static void spare_tick(void)
{
    if (atomic_load_explicit(&spare, memory_order_relaxed) == NULL)
        return;
    if (atomic_fetch_add_explicit(&spare_idle_ticks, 1, memory_order_relaxed) >= 1)
        big_unmap(atomic_exchange_explicit(&spare, NULL, memory_order_acq_rel));
}

void *pt_heap_big_alloc(size_t n)
{
    if (n < PT_HEAP_BIG_MIN || n > SIZE_MAX - 2 * HUGE_PAGE) {
        if (n > SIZE_MAX - BIG_HEADER_ROOM)
            return NULL;
        big_header_t *h = malloc(BIG_HEADER_ROOM + n);
        if (h == NULL)
            return NULL;
        h->mapping = NULL;
        return (char *)h + BIG_HEADER_ROOM;
    }
    big_header_t *kept = atomic_exchange_explicit(&spare, NULL, memory_order_acq_rel);
    if (kept != NULL && kept->capacity >= n && kept->capacity / 2 <= n)
        return (char *)kept + BIG_HEADER_ROOM; /* not wildly larger than needed */
    big_unmap(kept);
    /* A huge page's worth more than needed, to start the buffer on a huge page boundary
     * (the header just before it, on the ordinary page that precedes it). */
    size_t len = BIG_HEADER_ROOM + n + HUGE_PAGE;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    uintptr_t start = ((uintptr_t)m + BIG_HEADER_ROOM + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    char *p = (char *)start;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, (size_t)(m + len - p) & ~(HUGE_PAGE - 1), MADV_HUGEPAGE);
#endif
    big_header_t *h = (big_header_t *)(void *)(p - BIG_HEADER_ROOM);
    h->mapping = m;
    h->mapping_len = len;
    h->capacity = (size_t)(m + len - p);
    return p;
}

void pt_heap_big_free(void *p)
{
    if (p == NULL)
        return;
    big_header_t *h = (big_header_t *)(void *)((char *)p - BIG_HEADER_ROOM);
    if (h->mapping == NULL) {
        free(h);
        return;
    }
    atomic_store_explicit(&spare_idle_ticks, 0, memory_order_relaxed);
    big_unmap(atomic_exchange_explicit(&spare, h, memory_order_acq_rel));
}

void pt_heap_big_release(void)
{
    big_unmap(atomic_exchange_explicit(&spare, NULL, memory_order_acq_rel));
}
