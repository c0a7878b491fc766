/* Arena: bump allocation for objects that live exactly as long as one owner (a config
 * snapshot), freed in one call. Owners with resources beyond memory (regex_t, SSL_CTX)
 * register cleanups that run, newest first, when the arena is disposed. */
#ifndef PT_ARENA_H
#define PT_ARENA_H

#include <stddef.h>

typedef struct pt_arena_block pt_arena_block_t;
typedef struct pt_arena_cleanup pt_arena_cleanup_t;

typedef struct pt_arena {
    pt_arena_block_t *blocks;
    pt_arena_cleanup_t *cleanups;
    size_t used_total;
    /* Size of the next block: 0 means the standard one (recycled per thread, for the
     * short-lived arenas of requests). pt_arena_init_small starts small and doubles up to
     * the standard size, for the many small long-lived ones (a cluster, a route
     * configuration), where a standard block would be mostly empty. */
    size_t next_block;
} pt_arena_t;

/* An empty arena whose first block is small (see next_block). */
void pt_arena_init_small(pt_arena_t *a);

/* Zeroed memory, 16-byte aligned; NULL only on out-of-memory. */
void *pt_arena_alloc(pt_arena_t *a, size_t size);
char *pt_arena_strdup(pt_arena_t *a, const char *s);
char *pt_arena_strndup(pt_arena_t *a, const char *s, size_t n);
char *pt_arena_sprintf(pt_arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int pt_arena_defer(pt_arena_t *a, void (*fn)(void *), void *arg);
void pt_arena_dispose(pt_arena_t *a);
/* Frees the calling thread's cache of arena blocks (a thread exiting). */
void pt_arena_thread_cleanup(void);
/* Frees the calling thread's cached blocks that went unused since the last call. */
void pt_arena_cache_decay(void);

#endif
