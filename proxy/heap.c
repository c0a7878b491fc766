#include "proxy/heap.h"

#include <malloc.h>
#include <stdatomic.h>

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

int pt_heap_maybe_trim(void)
{
    pt_heap_thread_tick();
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
