/* Giving memory back to the system after a burst.
 *
 * glibc's malloc keeps freed memory in its arenas: after 200 slow readers or a pipelining
 * flood leave, the bytes are free but the pages stay resident (fragmented heaps only shrink
 * from the top, and worker threads have arenas of their own). Each thread first frees what
 * its own caches kept beyond need (pt_buf_pool_decay, pt_arena_cache_decay, run by
 * pt_heap_thread_tick); the main thread then asks malloc to return free pages of every
 * arena (malloc_trim) when the heap in use has dropped well below its recent peak, so a
 * steady load, whose usage does not drop, never pays for it. */
#ifndef PT_HEAP_H
#define PT_HEAP_H

#include <stddef.h>

/* How often threads run their tick, and the drop in heap use that makes the main thread
 * trim. */
#define PT_HEAP_TICK_SECS 1.0
#define PT_HEAP_TRIM_DROP (1u * 1024 * 1024)

/* Per thread, once per tick: frees cached buffer chunks and arena blocks left unused. */
void pt_heap_thread_tick(void);
/* Main thread, once per tick: trims when use dropped by PT_HEAP_TRIM_DROP since the peak
 * seen after the last trim. Returns 1 if it trimmed. */
int pt_heap_maybe_trim(void);

/* Main thread: records the heap in use now as a peak, for work whose peak falls between
 * ticks (a config update parses a large file and frees it within one callback). */
void pt_heap_note_peak(void);

/* Buffers for whole files (a 13 MB file of endpoint assignments read again at each change):
 * from PT_HEAP_BIG_MIN on, a mapping of their own in 2 MiB huge pages where the system
 * allows, so filling one takes a handful of page faults instead of thousands, and freeing
 * it goes back to the system (malloc would keep it in the heap until a trim, which then
 * makes the next read fault it in again page by page). Smaller ones come from malloc. Memory from
 * pt_heap_big_alloc goes back only through pt_heap_big_free. */
#define PT_HEAP_BIG_MIN (4u * 1024 * 1024)
void *pt_heap_big_alloc(size_t n);
/* The last big buffer freed is kept for the next pt_heap_big_alloc of about its size (a
 * file read again and again), until the second main-thread tick it sits unused. */
void pt_heap_big_free(void *p);
/* Gives back the kept buffer now (shutdown; tests). */
void pt_heap_big_release(void);

typedef struct pt_heap_stats {
    size_t in_use;   /* bytes allocated (malloc's view) */
    size_t heap;     /* bytes malloc holds from the system */
    size_t trims;    /* malloc_trim calls so far */
} pt_heap_stats_t;
void pt_heap_stats(pt_heap_stats_t *out);

#endif
