/* The one buffer type: a queue of chunks.
 *
 * A pt_buf_t is a FIFO of bytes stored in a list of fixed-size chunks taken from the calling
 * thread's chunk pool. An all-zero pt_buf_t is a valid empty buffer that owns no memory, so
 * structs holding buffers can be calloc'ed and idle connections hold no buffer memory.
 *
 * Moving bytes between buffers (pt_buf_move) relinks chunks instead of copying them, so the
 * TCP proxy hands what it read from one socket to the other's write queue without a copy.
 * Writes go out with writev over the chunk list (pt_buf_iov). Parsers that need a
 * contiguous view call pt_buf_pullup, which copies only when the bytes span chunks.
 *
 * Not thread-safe: a buffer belongs to one thread at a time. Chunks freed on a thread go to
 * that thread's pool; pools keep at most PT_BUF_POOL_MAX free chunks, the rest go back to
 * malloc, and pt_buf_pool_decay (each worker, once a second) frees what stayed unused for a
 * whole period beyond PT_BUF_POOL_KEEP, so memory returns after a burst. */
#ifndef PT_BUF_H
#define PT_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define PT_BUF_CHUNK_SIZE 16384 /* bytes per pooled chunk, header included */
#define PT_BUF_POOL_MAX   256   /* free chunks a thread keeps for reuse */
#define PT_BUF_POOL_KEEP  16    /* free chunks an idle thread keeps after decaying */

typedef struct pt_chunk {
    struct pt_chunk *next;
    uint32_t cap; /* bytes of data[] */
    uint32_t off; /* first unread byte */
    uint32_t end; /* one past the last written byte */
    uint32_t pooled : 1;
    char data[];
} pt_chunk_t;

typedef struct pt_buf {
    pt_chunk_t *head;
    pt_chunk_t *tail;
    size_t len; /* unread bytes across all chunks */
} pt_buf_t;

static inline size_t pt_buf_len(const pt_buf_t *b)
{
    return b->len;
}

/* Frees every chunk; leaves the buffer empty and valid. */
void pt_buf_dispose(pt_buf_t *b);
/* Appends a copy of data. Returns 0 or -ENOMEM. */
int pt_buf_append(pt_buf_t *b, const void *data, size_t len);
static inline int pt_buf_append_str(pt_buf_t *b, const char *s);
int pt_buf_printf(pt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns writable contiguous space at the tail of at least `min` bytes (min must be at most
 * one chunk's data capacity unless the buffer is empty) and its size in *avail; commit what
 * was written with pt_buf_commit. NULL on allocation failure. */
char *pt_buf_reserve(pt_buf_t *b, size_t min, size_t *avail);
void pt_buf_commit(pt_buf_t *b, size_t n);
/* For one readv into several chunks: makes at least `want` bytes of space at the tail
 * (adding empty chunks) and describes it in iov; returns the iovec count. Then
 * pt_buf_commit_iov with the bytes actually read, which drops the chunks left empty. */
int pt_buf_reserve_iov(pt_buf_t *b, size_t want, struct iovec *iov, int max);
void pt_buf_commit_iov(pt_buf_t *b, const struct iovec *iov, int cnt, size_t n);
/* Discards the first n bytes (n <= len). */
void pt_buf_drain(pt_buf_t *b, size_t n);
/* Moves all of src to the end of dst, without copying. */
void pt_buf_move(pt_buf_t *dst, pt_buf_t *src);
/* Moves the first n bytes of src to dst; copies at most one partial chunk. Returns 0 or -ENOMEM. */
int pt_buf_move_n(pt_buf_t *dst, pt_buf_t *src, size_t n);
/* Makes the first n bytes (n <= len) contiguous and returns a pointer to them. */
char *pt_buf_pullup(pt_buf_t *b, size_t n);
/* Pointer and length of the first chunk's unread bytes (NULL, 0 when empty). */
const char *pt_buf_peek(const pt_buf_t *b, size_t *len);
/* Fills up to max iovecs from the front of the buffer; returns how many. */
int pt_buf_iov(const pt_buf_t *b, struct iovec *iov, int max);
/* Copies up to n bytes from offset `from` into dst without consuming; returns bytes copied. */
size_t pt_buf_copyout(const pt_buf_t *b, size_t from, void *dst, size_t n);
/* Searches for `needle` starting at offset `from`; returns its offset or -1. */
long pt_buf_find(const pt_buf_t *b, size_t from, const void *needle, size_t nlen);

/* The calling thread's pool. Counts are for tests and the admin memory view. */
void pt_buf_pool_trim(void);
/* Frees the pooled chunks that went unused since the last call, keeping PT_BUF_POOL_KEEP. */
void pt_buf_pool_decay(void);
size_t pt_buf_pool_free_count(void);
size_t pt_buf_chunks_live(void);

static inline int pt_buf_append_str(pt_buf_t *b, const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return pt_buf_append(b, s, n);
}

#endif
