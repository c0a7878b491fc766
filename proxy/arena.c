#include "proxy/arena.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK 8192

struct pt_arena_block {
    pt_arena_block_t *next;
    size_t used, cap;
    _Alignas(16) char data[];
};

/* Standard blocks are recycled per thread: a stream's arena is made and dropped for every
 * request, and the allocator's large-bin path is slower than a free list. */
#define BLOCK_CACHE_MAX 64
static _Thread_local pt_arena_block_t *block_cache;
static _Thread_local unsigned block_cache_n;
static _Thread_local unsigned block_cache_low; /* fewest cached since the last decay */
#define BLOCK_CACHE_KEEP 8

static pt_arena_block_t *block_get(size_t cap)
{
    if (cap == ARENA_BLOCK && block_cache != NULL) {
        pt_arena_block_t *b = block_cache;
        block_cache = b->next;
        block_cache_n--;
        if (block_cache_n < block_cache_low)
            block_cache_low = block_cache_n;
        return b;
    }
    return malloc(sizeof(pt_arena_block_t) + cap);
}

/* Any thread that caches blocks gets them freed when it exits, whoever started it. */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_destructor(void *unused)
{
    (void)unused;
    pt_arena_thread_cleanup();
}

static void cache_key_init(void)
{
    pthread_key_create(&cache_key, cache_destructor);
}

static void block_put(pt_arena_block_t *b)
{
    if (b->cap == ARENA_BLOCK && block_cache_n < BLOCK_CACHE_MAX) {
        if (block_cache_n == 0) {
            pthread_once(&cache_once, cache_key_init);
            pthread_setspecific(cache_key, (void *)1);
        }
        b->next = block_cache;
        block_cache = b;
        block_cache_n++;
        return;
    }
    free(b);
}

void pt_arena_cache_decay(void)
{
    /* As pt_buf_pool_decay: blocks unused for a whole period go back to malloc. */
    unsigned idle = block_cache_low < block_cache_n ? block_cache_low : block_cache_n;
    unsigned above_keep = block_cache_n > BLOCK_CACHE_KEEP ? block_cache_n - BLOCK_CACHE_KEEP : 0;
    unsigned drop = idle < above_keep ? idle : above_keep;
    while (drop-- > 0 && block_cache != NULL) {
        pt_arena_block_t *b = block_cache;
        block_cache = b->next;
        block_cache_n--;
        free(b);
    }
    block_cache_low = block_cache_n;
}

void pt_arena_thread_cleanup(void)
{
    while (block_cache != NULL) {
        pt_arena_block_t *b = block_cache;
        block_cache = b->next;
        free(b);
    }
    block_cache_n = 0;
}

struct pt_arena_cleanup {
    pt_arena_cleanup_t *next;
    void (*fn)(void *);
    void *arg;
};

/* A plain cluster uses ~100 bytes of its arena (its name, its EDS source), and there may be
 * tens of thousands: the first block is small, and doubles from there. */
#define ARENA_SMALL_FIRST 128

void pt_arena_init_small(pt_arena_t *a)
{
    a->blocks = NULL;
    a->cleanups = NULL;
    a->used_total = 0;
    a->next_block = ARENA_SMALL_FIRST;
}

void *pt_arena_alloc(pt_arena_t *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    pt_arena_block_t *b = a->blocks;
    if (b == NULL || b->cap - b->used < size) {
        size_t cap = a->next_block ? a->next_block : ARENA_BLOCK;
        if (size > ARENA_BLOCK / 2) {
            cap = size; /* a big one-off */
        } else {
            while (cap < size)
                cap *= 2;
            if (a->next_block != 0 && a->next_block < ARENA_BLOCK)
                a->next_block = cap * 2 < ARENA_BLOCK ? cap * 2 : ARENA_BLOCK;
        }
        b = block_get(cap);
        if (b == NULL)
            return NULL;
        b->used = 0;
        b->cap = cap;
        /* Big one-off allocations go behind the current block so its free tail stays usable. */
        if (cap > ARENA_BLOCK && a->blocks != NULL) {
            b->next = a->blocks->next;
            a->blocks->next = b;
        } else {
            b->next = a->blocks;
            a->blocks = b;
        }
    }
    void *p = b->data + b->used;
    b->used += size;
    a->used_total += size;
    memset(p, 0, size);
    return p;
}

char *pt_arena_strndup(pt_arena_t *a, const char *s, size_t n)
{
    char *p = pt_arena_alloc(a, n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *pt_arena_strdup(pt_arena_t *a, const char *s)
{
    return s ? pt_arena_strndup(a, s, strlen(s)) : NULL;
}

char *pt_arena_sprintf(pt_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = pt_arena_alloc(a, (size_t)n + 1);
    if (p == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

int pt_arena_defer(pt_arena_t *a, void (*fn)(void *), void *arg)
{
    pt_arena_cleanup_t *c = malloc(sizeof(*c));
    if (c == NULL)
        return -1;
    c->fn = fn;
    c->arg = arg;
    c->next = a->cleanups;
    a->cleanups = c;
    return 0;
}

void pt_arena_dispose(pt_arena_t *a)
{
    while (a->cleanups != NULL) {
        pt_arena_cleanup_t *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->arg);
        free(c);
    }
    while (a->blocks != NULL) {
        pt_arena_block_t *b = a->blocks;
        a->blocks = b->next;
        block_put(b);
    }
    a->used_total = 0;
}
