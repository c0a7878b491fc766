#include "proxy/buf.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_DATA_CAP (PT_BUF_CHUNK_SIZE - sizeof(pt_chunk_t))

/* Per-thread free list: no locks, chunks are reused on the thread that freed them. */
static _Thread_local pt_chunk_t *pool_head;
static _Thread_local size_t pool_count;
static _Thread_local size_t pool_low; /* fewest free chunks since the last decay */
static _Atomic size_t chunks_live;

static pt_chunk_t *chunk_new(size_t min_cap)
{
    pt_chunk_t *c;
    if (min_cap <= CHUNK_DATA_CAP) {
        if (pool_head != NULL) {
            c = pool_head;
            pool_head = c->next;
            pool_count--;
            if (pool_count < pool_low)
                pool_low = pool_count;
        } else {
            c = malloc(PT_BUF_CHUNK_SIZE);
            if (c == NULL)
                return NULL;
            atomic_fetch_add_explicit(&chunks_live, 1, memory_order_relaxed);
        }
        c->cap = (uint32_t)CHUNK_DATA_CAP;
        c->pooled = 1;
    } else {
        /* Oversized chunks (a large header block pulled up) are never pooled. */
        c = malloc(sizeof(pt_chunk_t) + min_cap);
        if (c == NULL)
            return NULL;
        atomic_fetch_add_explicit(&chunks_live, 1, memory_order_relaxed);
        c->cap = (uint32_t)min_cap;
        c->pooled = 0;
    }
    c->next = NULL;
    c->off = c->end = 0;
    return c;
}

static void chunk_free(pt_chunk_t *c)
{
    if (c->pooled && pool_count < PT_BUF_POOL_MAX) {
        c->next = pool_head;
        pool_head = c;
        pool_count++;
        return;
    }
    atomic_fetch_sub_explicit(&chunks_live, 1, memory_order_relaxed);
    free(c);
}

void pt_buf_pool_trim(void)
{
    while (pool_head != NULL) {
        pt_chunk_t *c = pool_head;
        pool_head = c->next;
        atomic_fetch_sub_explicit(&chunks_live, 1, memory_order_relaxed);
        free(c);
    }
    pool_count = 0;
}

void pt_buf_pool_decay(void)
{
    /* The pool never went below pool_low since the last call: that many chunks sat unused
     * for a whole period (a burst is over). Free them, down to a floor kept for the next
     * requests; a busy thread keeps what it uses. */
    size_t idle = pool_low < pool_count ? pool_low : pool_count;
    size_t above_keep = pool_count > PT_BUF_POOL_KEEP ? pool_count - PT_BUF_POOL_KEEP : 0;
    size_t drop = idle < above_keep ? idle : above_keep;
    while (drop-- > 0 && pool_head != NULL) {
        pt_chunk_t *c = pool_head;
        pool_head = c->next;
        pool_count--;
        atomic_fetch_sub_explicit(&chunks_live, 1, memory_order_relaxed);
        free(c);
    }
    pool_low = pool_count;
}

size_t pt_buf_pool_free_count(void)
{
    return pool_count;
}

size_t pt_buf_chunks_live(void)
{
    return atomic_load_explicit(&chunks_live, memory_order_relaxed);
}

void pt_buf_dispose(pt_buf_t *b)
{
    pt_chunk_t *c = b->head;
    while (c != NULL) {
        pt_chunk_t *next = c->next;
        chunk_free(c);
        c = next;
    }
    b->head = b->tail = NULL;
    b->len = 0;
}

static void link_tail(pt_buf_t *b, pt_chunk_t *c)
{
    if (b->tail != NULL)
        b->tail->next = c;
    else
        b->head = c;
    b->tail = c;
}

char *pt_buf_reserve(pt_buf_t *b, size_t min, size_t *avail)
{
    if (min == 0)
        min = 1;
    pt_chunk_t *t = b->tail;
    if (t != NULL && t->off == t->end && t == b->head) {
        /* Empty single chunk: rewind so the whole chunk is usable. */
        t->off = t->end = 0;
    }
    if (t == NULL || t->cap - t->end < min) {
        t = chunk_new(min);
        if (t == NULL)
            return NULL;
        link_tail(b, t);
    }
    *avail = t->cap - t->end;
    return t->data + t->end;
}

void pt_buf_commit(pt_buf_t *b, size_t n)
{
    b->tail->end += (uint32_t)n;
    b->len += n;
}

int pt_buf_append(pt_buf_t *b, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        size_t avail;
        char *dst = pt_buf_reserve(b, 1, &avail);
        if (dst == NULL)
            return -ENOMEM;
        size_t n = len < avail ? len : avail;
        memcpy(dst, p, n);
        pt_buf_commit(b, n);
        p += n;
        len -= n;
    }
    return 0;
}

int pt_buf_printf(pt_buf_t *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof(small))
        return pt_buf_append(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (big == NULL)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = pt_buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

void pt_buf_drain(pt_buf_t *b, size_t n)
{
    b->len -= n;
    while (n > 0) {
        pt_chunk_t *c = b->head;
        size_t have = c->end - c->off;
        if (n < have) {
            c->off += (uint32_t)n;
            return;
        }
        n -= have;
        b->head = c->next;
        if (b->head == NULL)
            b->tail = NULL;
        chunk_free(c);
    }
    /* Keep no empty chunks around: an idle connection must hold no buffer memory. */
    if (b->head != NULL && b->head->off == b->head->end && b->head->next == NULL) {
        chunk_free(b->head);
        b->head = b->tail = NULL;
    }
}

/* Bytes pt_buf_move copies into the room left in dst's last chunk instead of linking src's
 * chunks: a queue of small writes (pipelined responses, a response head then a short body)
 * would otherwise hold a whole chunk per write, 16 KiB for a 100-byte response, and memory
 * per connection would follow the number of writes instead of the bytes. Above this size
 * relinking (no copy) wins. */
#define MOVE_COPY_MAX 4096

void pt_buf_move(pt_buf_t *dst, pt_buf_t *src)
{
    if (src->head == NULL)
        return;
    pt_chunk_t *t = dst->tail;
    if (t != NULL && src->len <= MOVE_COPY_MAX && src->len <= (size_t)(t->cap - t->end)) {
        for (pt_chunk_t *c = src->head; c != NULL; c = c->next) {
            memcpy(t->data + t->end, c->data + c->off, c->end - c->off);
            t->end += c->end - c->off;
        }
        dst->len += src->len;
        pt_buf_dispose(src);
        return;
    }
    if (dst->tail != NULL)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    dst->len += src->len;
    src->head = src->tail = NULL;
    src->len = 0;
}

int pt_buf_move_n(pt_buf_t *dst, pt_buf_t *src, size_t n)
{
    if (n >= src->len) {
        pt_buf_move(dst, src);
        return 0;
    }
    while (n > 0) {
        pt_chunk_t *c = src->head;
        size_t have = c->end - c->off;
        if (have <= n) {
            src->head = c->next;
            if (src->head == NULL)
                src->tail = NULL;
            c->next = NULL;
            src->len -= have;
            link_tail(dst, c);
            dst->len += have;
            n -= have;
        } else {
            int rc = pt_buf_append(dst, c->data + c->off, n);
            if (rc != 0)
                return rc;
            pt_buf_drain(src, n);
            n = 0;
        }
    }
    return 0;
}

char *pt_buf_pullup(pt_buf_t *b, size_t n)
{
    pt_chunk_t *h = b->head;
    if (h == NULL)
        return NULL;
    if (h->end - h->off >= n)
        return h->data + h->off;
    /* Gather into one chunk big enough, keeping what follows the first n bytes linked. */
    size_t cap = n > CHUNK_DATA_CAP ? n : CHUNK_DATA_CAP;
    pt_chunk_t *nc = chunk_new(cap);
    if (nc == NULL)
        return NULL;
    size_t copied = 0;
    while (copied < n) {
        pt_chunk_t *c = b->head;
        size_t have = c->end - c->off;
        size_t take = n - copied < have ? n - copied : have;
        memcpy(nc->data + copied, c->data + c->off, take);
        copied += take;
        if (take == have) {
            b->head = c->next;
            chunk_free(c);
        } else {
            c->off += (uint32_t)take;
        }
    }
    nc->end = (uint32_t)n;
    nc->next = b->head;
    b->head = nc;
    if (nc->next == NULL)
        b->tail = nc;
    return nc->data;
}

const char *pt_buf_peek(const pt_buf_t *b, size_t *len)
{
    if (b->head == NULL) {
        *len = 0;
        return NULL;
    }
    *len = b->head->end - b->head->off;
    return b->head->data + b->head->off;
}

int pt_buf_iov(const pt_buf_t *b, struct iovec *iov, int max)
{
    int n = 0;
    for (pt_chunk_t *c = b->head; c != NULL && n < max; c = c->next) {
        if (c->end == c->off)
            continue;
        iov[n].iov_base = c->data + c->off;
        iov[n].iov_len = c->end - c->off;
        n++;
    }
    return n;
}

size_t pt_buf_copyout(const pt_buf_t *b, size_t from, void *dst, size_t n)
{
    char *out = dst;
    size_t done = 0;
    for (pt_chunk_t *c = b->head; c != NULL && done < n; c = c->next) {
        size_t have = c->end - c->off;
        if (from >= have) {
            from -= have;
            continue;
        }
        size_t take = have - from;
        if (take > n - done)
            take = n - done;
        memcpy(out + done, c->data + c->off + from, take);
        done += take;
        from = 0;
    }
    return done;
}

/* Whether the bytes starting at c->data[c->off + i] (running on into the following chunks)
 * begin with needle. */
static int match_at(const pt_chunk_t *c, size_t i, const char *nd, size_t nlen)
{
    while (c != NULL && nlen > 0) {
        size_t have = c->end - c->off - i;
        size_t k = have < nlen ? have : nlen;
        if (memcmp(c->data + c->off + i, nd, k) != 0)
            return 0;
        nd += k;
        nlen -= k;
        c = c->next;
        i = 0;
    }
    return nlen == 0;
}

long pt_buf_find(const pt_buf_t *b, size_t from, const void *needle, size_t nlen)
{
    if (nlen == 0 || b->len < nlen || from > b->len - nlen)
        return -1;
    const char *nd = needle;
    /* Simple scan across chunk boundaries; used on small heads, not bodies. Compares in
     * place, so needles of any length work (a 64-byte copy used to cap them). */
    size_t base = 0;
    for (pt_chunk_t *c = b->head; c != NULL && base <= b->len - nlen; c = c->next) {
        size_t have = c->end - c->off;
        for (size_t i = from > base ? from - base : 0; i < have; i++) {
            if (base + i > b->len - nlen)
                return -1;
            if (c->data[c->off + i] == nd[0] && match_at(c, i, nd, nlen))
                return (long)(base + i);
        }
        base += have;
    }
    return -1;
}

int pt_buf_reserve_iov(pt_buf_t *b, size_t want, struct iovec *iov, int max)
{
    int n = 0;
    size_t have = 0;
    pt_chunk_t *t = b->tail;
    if (t != NULL && t->off == t->end && t == b->head)
        t->off = t->end = 0; /* empty single chunk: all of it is usable */
    if (t != NULL && t->cap > t->end && max > 0) {
        iov[n].iov_base = t->data + t->end;
        iov[n].iov_len = t->cap - t->end;
        have += iov[n].iov_len;
        n++;
    }
    while (have < want && n < max) {
        pt_chunk_t *c = chunk_new(1);
        if (c == NULL)
            break;
        link_tail(b, c);
        iov[n].iov_base = c->data;
        iov[n].iov_len = c->cap;
        have += c->cap;
        n++;
    }
    return n;
}

void pt_buf_commit_iov(pt_buf_t *b, const struct iovec *iov, int cnt, size_t n)
{
    if (cnt == 0)
        return;
    /* Find the chunk the first iovec points into, then fill forward. */
    pt_chunk_t *prev = NULL, *c = b->head;
    while (c != NULL && c->data + c->end != (char *)iov[0].iov_base) {
        prev = c;
        c = c->next;
    }
    b->len += n;
    for (; c != NULL && n > 0; prev = c, c = c->next) {
        size_t room = c->cap - c->end;
        size_t take = n < room ? n : room;
        c->end += (uint32_t)take;
        n -= take;
    }
    /* Chunks the read did not reach stay empty: give them back. */
    pt_chunk_t *keep = prev;
    while (c != NULL) {
        pt_chunk_t *next = c->next;
        if (c->end == c->off) {
            chunk_free(c);
        } else {
            keep = c;
        }
        c = next;
    }
    if (keep != NULL) {
        keep->next = NULL;
        b->tail = keep;
    } else {
        b->head = b->tail = NULL;
    }
    if (b->head != NULL && b->len == 0) {
        pt_buf_dispose(b);
    }
}
