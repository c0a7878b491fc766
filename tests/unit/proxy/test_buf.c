/* Unit tests for proxy/buf: the chunked FIFO, zero-copy moves, pullup, iovecs, searching,
 * the per-thread chunk pool, and a randomized run that mirrors every operation on a flat
 * byte array and compares after each step. Every test disposes what it made, and the last
 * checks that no chunk leaked. */
#include "proxy/buf.h"
#include "pt_test.h"

#include <stdint.h>

#define DATA_CAP (PT_BUF_CHUNK_SIZE - sizeof(pt_chunk_t))

static size_t live_at_start;

/* Deterministic pattern bytes: byte i of stream `seed`. */
static char pat(size_t i, unsigned seed)
{
    return (char)('!' + (i * 7 + seed * 13 + i / 251) % 90);
}

static void fill(char *p, size_t n, size_t from, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pat(from + i, seed);
}

/* The buffer's whole contents, copied out (caller frees). */
static char *contents(const pt_buf_t *b)
{
    char *out = malloc(b->len + 1);
    size_t got = pt_buf_copyout(b, 0, out, b->len);
    out[got] = '\0';
    return got == b->len ? out : (free(out), NULL);
}

/* Structural invariants: len equals the sum of the chunks, tail is the last chunk. */
static int well_formed(const pt_buf_t *b)
{
    size_t sum = 0;
    const pt_chunk_t *last = NULL;
    for (const pt_chunk_t *c = b->head; c != NULL; c = c->next) {
        if (c->off > c->end || c->end > c->cap)
            return 0;
        sum += c->end - c->off;
        last = c;
    }
    return sum == b->len && last == b->tail && (b->head == NULL) == (b->tail == NULL);
}

static size_t nchunks(const pt_buf_t *b)
{
    size_t n = 0;
    for (const pt_chunk_t *c = b->head; c != NULL; c = c->next)
        n++;
    return n;
}

static int all_zero(const pt_buf_t *b)
{
    static const pt_buf_t zero;
    return memcmp(b, &zero, sizeof(zero)) == 0;
}

static void test_empty(void)
{
    pt_buf_t b = {0};
    size_t n = 99;
    PT_CHECK_INT(pt_buf_len(&b), 0);
    PT_CHECK(pt_buf_peek(&b, &n) == NULL);
    PT_CHECK_INT(n, 0);
    struct iovec iov[4];
    PT_CHECK_INT(pt_buf_iov(&b, iov, 4), 0);
    char x;
    PT_CHECK_INT(pt_buf_copyout(&b, 0, &x, 1), 0);
    PT_CHECK_INT(pt_buf_find(&b, 0, "a", 1), -1);
    PT_CHECK(pt_buf_pullup(&b, 0) == NULL);
    pt_buf_drain(&b, 0);
    pt_buf_dispose(&b);
    PT_CHECK(all_zero(&b));
    PT_CHECK_INT(pt_buf_append(&b, "", 0), 0); /* appending nothing takes no chunk */
    PT_CHECK(all_zero(&b));
}

static void test_append_across_chunks(void)
{
    pt_buf_t b = {0};
    size_t total = DATA_CAP * 3 + 1000;
    char *src = malloc(total);
    fill(src, total, 0, 1);
    /* Odd-sized pieces so chunk boundaries fall inside appends. */
    size_t off = 0, step = 777;
    while (off < total) {
        size_t n = total - off < step ? total - off : step;
        PT_CHECK_INT(pt_buf_append(&b, src + off, n), 0);
        off += n;
        step = step * 3 % 5000 + 1;
    }
    PT_CHECK_INT(pt_buf_len(&b), total);
    PT_CHECK(well_formed(&b));
    PT_CHECK_INT(nchunks(&b), 4); /* chunks are filled before a new one is taken */
    char *got = contents(&b);
    PT_CHECK_MEM(got, total, src, total);
    free(got);

    /* One append larger than a chunk spans several. */
    pt_buf_t c = {0};
    PT_CHECK_INT(pt_buf_append(&c, src, total), 0);
    PT_CHECK_INT(nchunks(&c), 4);
    got = contents(&c);
    PT_CHECK_MEM(got, total, src, total);
    free(got);
    PT_CHECK_INT(pt_buf_append_str(&c, "tail"), 0);
    PT_CHECK_INT(pt_buf_len(&c), total + 4);
    char tail[4];
    PT_CHECK_INT(pt_buf_copyout(&c, total, tail, 4), 4);
    PT_CHECK_MEM(tail, 4, "tail", 4);
    pt_buf_dispose(&b);
    pt_buf_dispose(&c);
    free(src);
    PT_CHECK(all_zero(&b) && all_zero(&c));
}

static void test_printf(void)
{
    pt_buf_t b = {0};
    PT_CHECK_INT(pt_buf_printf(&b, "%s=%d;", "a", 42), 0);
    PT_CHECK_INT(pt_buf_printf(&b, "%s", ""), 0);
    char *got = contents(&b);
    PT_CHECK_STR(got, "a=42;");
    free(got);
    /* Longer than the 512-byte stack buffer: formatted again into the heap. */
    char big[3000];
    fill(big, sizeof(big) - 1, 0, 2);
    big[sizeof(big) - 1] = '\0';
    PT_CHECK_INT(pt_buf_printf(&b, "[%s|%u]", big, 7u), 0);
    PT_CHECK_INT(pt_buf_len(&b), 5 + 1 + 2999 + 3);
    got = contents(&b);
    PT_CHECK(strncmp(got, "a=42;[", 6) == 0);
    PT_CHECK(memcmp(got + 6, big, 2999) == 0);
    PT_CHECK_STR(got + 6 + 2999, "|7]");
    free(got);
    /* Exactly 511 and 512 characters: the edge of the stack buffer. */
    pt_buf_dispose(&b);
    PT_CHECK_INT(pt_buf_printf(&b, "%.*s", 511, big), 0);
    PT_CHECK_INT(pt_buf_printf(&b, "%.*s", 512, big), 0);
    PT_CHECK_INT(pt_buf_len(&b), 1023);
    got = contents(&b);
    PT_CHECK(memcmp(got, big, 511) == 0 && memcmp(got + 511, big, 512) == 0);
    free(got);
    /* A printf that crosses a chunk boundary. */
    pt_buf_dispose(&b);
    char *pad = malloc(DATA_CAP - 10);
    fill(pad, DATA_CAP - 10, 0, 3);
    pt_buf_append(&b, pad, DATA_CAP - 10);
    PT_CHECK_INT(pt_buf_printf(&b, "%s-%s", "0123456789", "abcdef"), 0);
    PT_CHECK_INT(nchunks(&b), 2);
    char t[17];
    PT_CHECK_INT(pt_buf_copyout(&b, DATA_CAP - 10, t, 17), 17);
    PT_CHECK_MEM(t, 17, "0123456789-abcdef", 17);
    free(pad);
    pt_buf_dispose(&b);
}

static void test_reserve_commit(void)
{
    pt_buf_t b = {0};
    size_t avail;
    char *p = pt_buf_reserve(&b, 100, &avail);
    PT_CHECK(p != NULL);
    PT_CHECK_INT(avail, DATA_CAP);
    memcpy(p, "hello", 5);
    pt_buf_commit(&b, 5);
    PT_CHECK_INT(pt_buf_len(&b), 5);
    p = pt_buf_reserve(&b, 10, &avail);
    PT_CHECK_INT(avail, DATA_CAP - 5);
    memcpy(p, " world", 6);
    pt_buf_commit(&b, 6);
    /* Asking for more than is left in the tail takes a new chunk. */
    p = pt_buf_reserve(&b, DATA_CAP - 5, &avail);
    PT_CHECK_INT(avail, DATA_CAP);
    PT_CHECK_INT(nchunks(&b), 2);
    memcpy(p, "!", 1);
    pt_buf_commit(&b, 1);
    PT_CHECK(well_formed(&b));
    char *got = contents(&b);
    PT_CHECK_STR(got, "hello world!");
    free(got);
    /* Committing zero leaves the content alone. */
    p = pt_buf_reserve(&b, 1, &avail);
    pt_buf_commit(&b, 0);
    PT_CHECK_INT(pt_buf_len(&b), 12);
    /* A drained single chunk is rewound so its whole capacity is usable again. */
    pt_buf_dispose(&b);
    p = pt_buf_reserve(&b, 1, &avail);
    memset(p, 'x', 1000);
    pt_buf_commit(&b, 1000);
    pt_buf_drain(&b, 999);
    p = pt_buf_reserve(&b, DATA_CAP - 1, &avail);
    PT_CHECK_INT(nchunks(&b), 2); /* 1 byte still unread: cannot rewind */
    pt_buf_commit(&b, 0);
    pt_buf_drain(&b, 1);
    PT_CHECK_INT(pt_buf_len(&b), 0);
    pt_buf_dispose(&b);
    /* Reserving more than a chunk on an empty buffer gives one oversized chunk. */
    p = pt_buf_reserve(&b, DATA_CAP * 2, &avail);
    PT_CHECK(p != NULL);
    PT_CHECK(avail >= DATA_CAP * 2);
    memset(p, 'y', DATA_CAP * 2);
    pt_buf_commit(&b, DATA_CAP * 2);
    PT_CHECK_INT(nchunks(&b), 1);
    size_t n;
    pt_buf_peek(&b, &n);
    PT_CHECK_INT(n, DATA_CAP * 2);
    pt_buf_dispose(&b);
    PT_CHECK(all_zero(&b));
}

static void test_drain(void)
{
    pt_buf_t b = {0};
    size_t total = DATA_CAP * 2 + 500;
    char *src = malloc(total);
    fill(src, total, 0, 4);
    pt_buf_append(&b, src, total);
    pt_buf_drain(&b, 10); /* within the first chunk */
    PT_CHECK_INT(pt_buf_len(&b), total - 10);
    size_t n;
    const char *p = pt_buf_peek(&b, &n);
    PT_CHECK_INT(n, DATA_CAP - 10);
    PT_CHECK(memcmp(p, src + 10, n) == 0);
    pt_buf_drain(&b, DATA_CAP - 10); /* exactly the first chunk */
    PT_CHECK_INT(nchunks(&b), 2);
    pt_buf_drain(&b, DATA_CAP + 100); /* across a boundary */
    PT_CHECK_INT(nchunks(&b), 1);
    PT_CHECK_INT(pt_buf_len(&b), 400);
    p = pt_buf_peek(&b, &n);
    PT_CHECK_MEM(p, n, src + total - 400, 400);
    PT_CHECK(well_formed(&b));
    pt_buf_drain(&b, 400); /* the whole: no chunk is kept */
    PT_CHECK(all_zero(&b));
    pt_buf_append(&b, src, total);
    pt_buf_drain(&b, total);
    PT_CHECK(all_zero(&b));
    free(src);
}

static void test_move(void)
{
    pt_buf_t a = {0}, b = {0};
    size_t total = DATA_CAP + 300;
    char *src = malloc(total * 2);
    fill(src, total * 2, 0, 5);
    pt_buf_append(&a, src, total);
    pt_buf_append(&b, src + total, total);
    const pt_chunk_t *bh = b.head, *bt = b.tail;
    pt_buf_move(&a, &b);
    PT_CHECK(all_zero(&b));
    PT_CHECK_INT(pt_buf_len(&a), total * 2);
    PT_CHECK(well_formed(&a));
    /* Zero copy: b's chunks are now a's, relinked. */
    PT_CHECK(a.head->next->next == bh);
    PT_CHECK(a.tail == bt);
    char *got = contents(&a);
    PT_CHECK_MEM(got, total * 2, src, total * 2);
    free(got);
    /* Moving an empty buffer changes nothing; moving into an empty buffer takes all. */
    pt_buf_move(&a, &b);
    PT_CHECK_INT(pt_buf_len(&a), total * 2);
    pt_buf_move(&b, &a);
    PT_CHECK(all_zero(&a));
    PT_CHECK_INT(pt_buf_len(&b), total * 2);
    /* Appending after a move goes on at the end. */
    pt_buf_append_str(&b, "END");
    char end[3];
    pt_buf_copyout(&b, total * 2, end, 3);
    PT_CHECK_MEM(end, 3, "END", 3);
    pt_buf_dispose(&b);
    free(src);
}

/* Small moves are copied into the room left in the destination's last chunk, so a queue of
 * small writes takes the bytes it holds, not a chunk per write; big ones are relinked. */
static void test_move_coalesces_small_writes(void)
{
    pt_buf_t q = {0};
    for (int i = 0; i < 100; i++) {
        pt_buf_t w = {0};
        PT_CHECK_INT(pt_buf_printf(&w, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n%02d", i), 0);
        pt_buf_move(&q, &w);
        PT_CHECK_INT(pt_buf_len(&w), 0);
        PT_CHECK(w.head == NULL);
    }
    PT_CHECK_INT(pt_buf_len(&q), 100 * 40);
    PT_CHECK_INT(nchunks(&q), 1);
    char first[40], last[40];
    PT_CHECK_INT(pt_buf_copyout(&q, 0, first, 40), 40);
    PT_CHECK(memcmp(first + 38, "00", 2) == 0);
    PT_CHECK_INT(pt_buf_copyout(&q, 99 * 40, last, 40), 40);
    PT_CHECK(memcmp(last + 38, "99", 2) == 0);
    /* A big write is relinked, not copied. */
    char *big = malloc(DATA_CAP);
    fill(big, DATA_CAP, 0, 7);
    pt_buf_t w = {0};
    pt_buf_append(&w, big, DATA_CAP);
    pt_chunk_t *moved = w.head;
    pt_buf_move(&q, &w);
    PT_CHECK(q.tail == moved);
    PT_CHECK_INT(nchunks(&q), 2);
    /* A small write that does not fit the room left gets its own chunk. */
    pt_buf_t s2 = {0};
    pt_buf_append_str(&s2, "tail");
    pt_buf_move(&q, &s2);
    PT_CHECK_INT(nchunks(&q), 3);
    PT_CHECK_INT(pt_buf_len(&q), 100 * 40 + DATA_CAP + 4);
    free(big);
    pt_buf_dispose(&q);
}

static void test_move_n(void)
{
    pt_buf_t a = {0}, b = {0};
    size_t total = DATA_CAP * 3;
    char *src = malloc(total);
    fill(src, total, 0, 6);
    pt_buf_append(&a, src, total);
    const pt_chunk_t *first = a.head, *second = a.head->next;

    /* Whole chunks are relinked, not copied. */
    PT_CHECK_INT(pt_buf_move_n(&b, &a, DATA_CAP), 0);
    PT_CHECK(b.head == first && b.tail == first);
    PT_CHECK(a.head == second);
    PT_CHECK_INT(pt_buf_len(&b), DATA_CAP);
    PT_CHECK_INT(pt_buf_len(&a), total - DATA_CAP);
    PT_CHECK(well_formed(&a) && well_formed(&b));

    /* A chunk and a half: one relinked, the partial one copied. */
    PT_CHECK_INT(pt_buf_move_n(&b, &a, DATA_CAP + DATA_CAP / 2), 0);
    PT_CHECK(b.head->next == second);
    PT_CHECK_INT(pt_buf_len(&b), DATA_CAP * 2 + DATA_CAP / 2);
    PT_CHECK_INT(pt_buf_len(&a), DATA_CAP / 2);
    PT_CHECK(well_formed(&a) && well_formed(&b));
    char *got = contents(&b);
    PT_CHECK_MEM(got, pt_buf_len(&b), src, DATA_CAP * 2 + DATA_CAP / 2);
    free(got);
    got = contents(&a);
    PT_CHECK_MEM(got, pt_buf_len(&a), src + total - DATA_CAP / 2, DATA_CAP / 2);
    free(got);

    /* Zero bytes: nothing happens. n >= len: everything. */
    PT_CHECK_INT(pt_buf_move_n(&b, &a, 0), 0);
    PT_CHECK_INT(pt_buf_len(&a), DATA_CAP / 2);
    PT_CHECK_INT(pt_buf_move_n(&b, &a, (size_t)-1), 0);
    PT_CHECK(all_zero(&a));
    PT_CHECK_INT(pt_buf_len(&b), total);
    got = contents(&b);
    PT_CHECK_MEM(got, total, src, total);
    free(got);

    /* Small moves inside one chunk copy and keep the source consistent. */
    for (int i = 0; i < 10; i++)
        PT_CHECK_INT(pt_buf_move_n(&a, &b, 3), 0);
    PT_CHECK_INT(pt_buf_len(&a), 30);
    got = contents(&a);
    PT_CHECK_MEM(got, 30, src, 30);
    free(got);
    pt_buf_dispose(&a);
    pt_buf_dispose(&b);
    free(src);
}

static void test_pullup(void)
{
    pt_buf_t b = {0};
    /* Three chunks: head partly drained, so the bytes start mid-chunk. */
    size_t total = DATA_CAP * 3;
    char *src = malloc(total);
    fill(src, total, 0, 7);
    pt_buf_append(&b, src, total);
    pt_buf_drain(&b, 100);
    /* Already contiguous: no copy, same pointer. */
    size_t n;
    const char *head = pt_buf_peek(&b, &n);
    PT_CHECK(pt_buf_pullup(&b, 50) == head);
    /* Across the first two chunks. */
    char *p = pt_buf_pullup(&b, DATA_CAP);
    PT_CHECK(p != NULL);
    PT_CHECK(memcmp(p, src + 100, DATA_CAP) == 0);
    PT_CHECK_INT(pt_buf_len(&b), total - 100);
    PT_CHECK(well_formed(&b));
    char *got = contents(&b);
    PT_CHECK_MEM(got, total - 100, src + 100, total - 100);
    free(got);
    /* Larger than one chunk, across all three, leaving a remainder. */
    size_t want = DATA_CAP * 2 + 1000;
    p = pt_buf_pullup(&b, want);
    PT_CHECK(p != NULL);
    PT_CHECK(memcmp(p, src + 100, want) == 0);
    pt_buf_peek(&b, &n);
    PT_CHECK_INT(n, want);
    PT_CHECK(well_formed(&b));
    got = contents(&b);
    PT_CHECK_MEM(got, total - 100, src + 100, total - 100);
    free(got);
    /* Everything: the tail is the new chunk. */
    p = pt_buf_pullup(&b, total - 100);
    PT_CHECK(memcmp(p, src + 100, total - 100) == 0);
    PT_CHECK_INT(nchunks(&b), 1);
    PT_CHECK(well_formed(&b));
    /* And the buffer keeps working after: append, drain. */
    pt_buf_append_str(&b, "xyz");
    PT_CHECK_INT(pt_buf_len(&b), total - 97);
    pt_buf_drain(&b, total - 100);
    got = contents(&b);
    PT_CHECK_STR(got, "xyz");
    free(got);
    pt_buf_dispose(&b);
    free(src);
}

static void test_iov(void)
{
    pt_buf_t b = {0};
    size_t total = DATA_CAP * 2 + 10;
    char *src = malloc(total);
    fill(src, total, 0, 8);
    pt_buf_append(&b, src, total);
    pt_buf_drain(&b, 5);
    struct iovec iov[8];
    int n = pt_buf_iov(&b, iov, 8);
    PT_CHECK_INT(n, 3);
    PT_CHECK_INT(iov[0].iov_len, DATA_CAP - 5);
    PT_CHECK_INT(iov[1].iov_len, DATA_CAP);
    PT_CHECK_INT(iov[2].iov_len, 10);
    PT_CHECK(memcmp(iov[0].iov_base, src + 5, iov[0].iov_len) == 0);
    PT_CHECK(memcmp(iov[2].iov_base, src + total - 10, 10) == 0);
    PT_CHECK_INT(pt_buf_iov(&b, iov, 2), 2); /* at most max */
    PT_CHECK_INT(pt_buf_iov(&b, iov, 0), 0);
    pt_buf_dispose(&b);
    free(src);
}

static void test_copyout(void)
{
    pt_buf_t b = {0};
    size_t total = DATA_CAP * 2 + 10;
    char *src = malloc(total), *dst = malloc(total);
    fill(src, total, 0, 9);
    pt_buf_append(&b, src, total);
    static const size_t offs[] = {0, 1, DATA_CAP - 1, DATA_CAP, DATA_CAP + 1, DATA_CAP * 2 + 9};
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        size_t want = total - offs[i] < 300 ? total - offs[i] : 300;
        PT_CHECK_INT(pt_buf_copyout(&b, offs[i], dst, 300), want);
        PT_CHECK(memcmp(dst, src + offs[i], want) == 0);
    }
    PT_CHECK_INT(pt_buf_copyout(&b, total, dst, 10), 0);
    PT_CHECK_INT(pt_buf_copyout(&b, total + 100, dst, 10), 0);
    PT_CHECK_INT(pt_buf_copyout(&b, 0, dst, total + 50), total);
    PT_CHECK(memcmp(dst, src, total) == 0);
    PT_CHECK_INT(pt_buf_len(&b), total); /* not consumed */
    pt_buf_dispose(&b);
    free(src);
    free(dst);
}

static void test_find(void)
{
    pt_buf_t b = {0};
    char *pad = malloc(DATA_CAP);
    memset(pad, 'a', DATA_CAP);
    /* "\r\n\r\n" split 2|2 across the boundary of the first and second chunk. */
    pt_buf_append(&b, pad, DATA_CAP - 2);
    pt_buf_append_str(&b, "\r\n\r\nbody\r\n\r\n");
    PT_CHECK_INT(nchunks(&b), 2);
    PT_CHECK_INT(pt_buf_find(&b, 0, "\r\n\r\n", 4), DATA_CAP - 2);
    PT_CHECK_INT(pt_buf_find(&b, DATA_CAP - 2, "\r\n\r\n", 4), DATA_CAP - 2);
    PT_CHECK_INT(pt_buf_find(&b, DATA_CAP - 1, "\r\n\r\n", 4), DATA_CAP + 6);
    PT_CHECK_INT(pt_buf_find(&b, 0, "body", 4), DATA_CAP + 2);
    PT_CHECK_INT(pt_buf_find(&b, 0, "\n", 1), DATA_CAP - 1);
    PT_CHECK_INT(pt_buf_find(&b, 0, "zz", 2), -1);
    PT_CHECK_INT(pt_buf_find(&b, 0, "", 0), -1);
    PT_CHECK_INT(pt_buf_find(&b, pt_buf_len(&b), "a", 1), -1);
    PT_CHECK_INT(pt_buf_find(&b, pt_buf_len(&b) - 4, "\r\n\r\n", 4), pt_buf_len(&b) - 4);
    PT_CHECK_INT(pt_buf_find(&b, pt_buf_len(&b) - 3, "\r\n\r\n", 4), -1);
    /* After draining, offsets are relative to the new start. */
    pt_buf_drain(&b, 100);
    PT_CHECK_INT(pt_buf_find(&b, 0, "\r\n\r\n", 4), DATA_CAP - 102);
    /* A needle spanning three chunks (a tiny middle one). */
    pt_buf_t c = {0}, mid = {0}, last = {0};
    pt_buf_append(&c, pad, DATA_CAP - 1);
    pt_buf_append_str(&c, "X"); /* fills the chunk */
    pt_buf_append_str(&mid, "Y");
    pt_buf_append_str(&last, "Z");
    pt_buf_append(&last, pad, DATA_CAP - 1); /* too big to be copied into mid's chunk */
    pt_buf_move(&c, &mid);
    pt_buf_move(&c, &last);
    PT_CHECK_INT(nchunks(&c), 3);
    PT_CHECK_INT(pt_buf_find(&c, 0, "XYZ", 3), DATA_CAP - 1);
    PT_CHECK_INT(pt_buf_find(&c, 0, "aXYZ", 4), DATA_CAP - 2);
    /* Long needles (longer than any fixed scratch buffer) across a boundary. */
    char *needle = malloc(300);
    memset(needle, 'a', 298);
    memcpy(needle + 298, "XY", 2);
    PT_CHECK_INT(pt_buf_find(&c, 0, needle, 300), DATA_CAP - 299);
    PT_CHECK_INT(pt_buf_find(&c, DATA_CAP - 298, needle, 300), -1);
    needle[0] = 'b';
    PT_CHECK_INT(pt_buf_find(&c, 0, needle, 300), -1);
    free(needle);
    pt_buf_dispose(&b);
    pt_buf_dispose(&c);
    free(pad);
}

static void test_pool(void)
{
    pt_buf_pool_trim();
    PT_CHECK_INT(pt_buf_pool_free_count(), 0);
    size_t live0 = pt_buf_chunks_live();
    pt_buf_t b = {0};
    char *src = malloc(DATA_CAP * 4);
    fill(src, DATA_CAP * 4, 0, 10);
    pt_buf_append(&b, src, DATA_CAP * 4);
    PT_CHECK_INT(pt_buf_chunks_live(), live0 + 4);
    pt_buf_dispose(&b);
    PT_CHECK_INT(pt_buf_pool_free_count(), 4);
    PT_CHECK_INT(pt_buf_chunks_live(), live0 + 4); /* pooled chunks are still allocated */
    /* Reuse: the next buffer takes from the pool, allocating nothing. */
    pt_buf_append(&b, src, DATA_CAP * 2);
    PT_CHECK_INT(pt_buf_pool_free_count(), 2);
    PT_CHECK_INT(pt_buf_chunks_live(), live0 + 4);
    pt_buf_dispose(&b);
    /* Oversized chunks are never pooled. */
    size_t avail;
    pt_buf_reserve(&b, DATA_CAP * 3, &avail);
    pt_buf_commit(&b, 1);
    PT_CHECK_INT(pt_buf_chunks_live(), live0 + 5);
    pt_buf_dispose(&b);
    PT_CHECK_INT(pt_buf_pool_free_count(), 4);
    PT_CHECK_INT(pt_buf_chunks_live(), live0 + 4);
    /* The pool keeps at most PT_BUF_POOL_MAX chunks; the rest go back to malloc. */
    size_t many = PT_BUF_POOL_MAX + 40;
    pt_buf_t *bufs = calloc(many, sizeof(*bufs));
    for (size_t i = 0; i < many; i++)
        pt_buf_append(&bufs[i], src, 10);
    PT_CHECK_INT(pt_buf_pool_free_count(), 0);
    PT_CHECK_INT(pt_buf_chunks_live(), live0 + many);
    for (size_t i = 0; i < many; i++)
        pt_buf_dispose(&bufs[i]);
    PT_CHECK_INT(pt_buf_pool_free_count(), PT_BUF_POOL_MAX);
    PT_CHECK_INT(pt_buf_chunks_live(), live0 + PT_BUF_POOL_MAX);
    free(bufs);
    pt_buf_pool_trim();
    PT_CHECK_INT(pt_buf_pool_free_count(), 0);
    PT_CHECK_INT(pt_buf_chunks_live(), live0);
    free(src);
}

/* ---- randomized: every operation mirrored on a flat array -------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    /* xorshift64*: fixed seed, the same run every time. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

typedef struct model {
    char *p;
    size_t len, cap;
} model_t;

static void model_append(model_t *m, const char *s, size_t n)
{
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->len, s, n);
    m->len += n;
}

static void model_drain(model_t *m, size_t n)
{
    memmove(m->p, m->p + n, m->len - n);
    m->len -= n;
}

/* A random length: mostly small, sometimes around or beyond a chunk. */
static size_t rlen(void)
{
    switch (rnd() % 4) {
    case 0:
        return rnd() % 16;
    case 1:
        return rnd() % 600;
    case 2:
        return rnd() % (DATA_CAP + 100);
    default:
        return DATA_CAP - 8 + rnd() % 16;
    }
}

static int same(const pt_buf_t *b, const model_t *m)
{
    if (!well_formed(b) || b->len != m->len)
        return 0;
    size_t off = 0;
    for (const pt_chunk_t *c = b->head; c != NULL; c = c->next) {
        if (memcmp(c->data + c->off, m->p + off, c->end - c->off) != 0)
            return 0;
        off += c->end - c->off;
    }
    return 1;
}

static void test_randomized(void)
{
    pt_buf_t b[2] = {{0}, {0}};
    model_t m[2] = {{0}, {0}};
    char *scratch = malloc(DATA_CAP * 4);
    size_t counter = 0;
    for (int step = 0; step < 5000; step++) {
        int x = (int)(rnd() % 2), y = !x;
        pt_buf_t *B = &b[x];
        model_t *M = &m[x];
        unsigned op = (unsigned)(rnd() % 11);
        size_t n = rlen();
        switch (op) {
        case 0: /* append */
        case 1:
            fill(scratch, n, counter, 11);
            counter += n;
            PT_CHECK_INT(pt_buf_append(B, scratch, n), 0);
            model_append(M, scratch, n);
            break;
        case 2: { /* printf */
            int v = (int)(rnd() % 100000);
            char tmp[64];
            int k = snprintf(tmp, sizeof(tmp), "<%d:%zu>", v, counter);
            PT_CHECK_INT(pt_buf_printf(B, "<%d:%zu>", v, counter), 0);
            model_append(M, tmp, (size_t)k);
            break;
        }
        case 3: { /* reserve + partial commit */
            size_t avail;
            size_t want = n > DATA_CAP ? DATA_CAP : (n ? n : 1);
            char *p = pt_buf_reserve(B, want, &avail);
            PT_CHECK(p != NULL && avail >= want);
            size_t k = rnd() % (want + 1);
            fill(p, k, counter, 12);
            fill(scratch, k, counter, 12);
            counter += k;
            pt_buf_commit(B, k);
            model_append(M, scratch, k);
            break;
        }
        case 4: /* drain */
            n = M->len ? n % (M->len + 1) : 0;
            pt_buf_drain(B, n);
            model_drain(M, n);
            break;
        case 5: /* move all */
            pt_buf_move(&b[y], B);
            model_append(&m[y], M->p, M->len);
            M->len = 0;
            PT_CHECK(all_zero(B));
            break;
        case 6: /* move_n */
            n = M->len ? n % (M->len + 1) : 0;
            PT_CHECK_INT(pt_buf_move_n(&b[y], B, n), 0);
            model_append(&m[y], M->p, n);
            model_drain(M, n);
            break;
        case 7: { /* pullup */
            n = M->len ? n % (M->len + 1) : 0;
            if (n == 0)
                break;
            char *p = pt_buf_pullup(B, n);
            PT_CHECK(p != NULL);
            PT_CHECK(memcmp(p, M->p, n) == 0);
            break;
        }
        case 8: { /* copyout at an offset */
            size_t from = M->len ? rnd() % (M->len + 1) : 0;
            size_t want = from + n <= M->len ? n : M->len - from;
            PT_CHECK_INT(pt_buf_copyout(B, from, scratch, n), want);
            PT_CHECK(memcmp(scratch, M->p + from, want) == 0);
            break;
        }
        case 9: { /* find a needle taken from the model */
            if (M->len < 4)
                break;
            size_t at = rnd() % (M->len - 3), nl = 1 + rnd() % (rnd() % 2 ? 4 : 200);
            if (at + nl > M->len)
                nl = M->len - at;
            size_t from = rnd() % (at + 1);
            long expect = -1;
            for (size_t i = from; i + nl <= M->len; i++)
                if (memcmp(M->p + i, M->p + at, nl) == 0) {
                    expect = (long)i;
                    break;
                }
            PT_CHECK_INT(pt_buf_find(B, from, M->p + at, nl), expect);
            break;
        }
        default: { /* iov covers exactly the content */
            struct iovec iov[64];
            int k = pt_buf_iov(B, iov, 64);
            size_t off = 0;
            for (int i = 0; i < k; i++) {
                PT_CHECK(memcmp(iov[i].iov_base, M->p + off, iov[i].iov_len) == 0);
                off += iov[i].iov_len;
            }
            if (k < 64)
                PT_CHECK_INT(off, M->len);
            break;
        }
        }
        if (!same(&b[0], &m[0]) || !same(&b[1], &m[1])) {
            fprintf(stderr, "  diverged at step %d (op %u)\n", step, op);
            PT_CHECK(0);
        }
        /* Keep the buffers from growing without bound. */
        for (int i = 0; i < 2; i++) {
            if (m[i].len > DATA_CAP * 16) {
                pt_buf_drain(&b[i], m[i].len / 2);
                model_drain(&m[i], m[i].len / 2);
            }
        }
    }
    pt_buf_dispose(&b[0]);
    pt_buf_dispose(&b[1]);
    free(m[0].p);
    free(m[1].p);
    free(scratch);
}

/* Runs last: everything every test made has been disposed; with the pool trimmed, the
 * number of live chunks is back where it started. */
static void test_no_leaks(void)
{
    pt_buf_pool_trim();
    PT_CHECK_INT(pt_buf_pool_free_count(), 0);
    PT_CHECK_INT(pt_buf_chunks_live(), live_at_start);
}

/* One readv into several chunks: partial fills keep order and drop unused chunks. */
static void test_reserve_iov(void)
{
    pt_buf_t b = {0};
    pt_buf_append(&b, "abc", 3);
    struct iovec iov[8];
    int cnt = pt_buf_reserve_iov(&b, 40000, iov, 8);
    PT_CHECK(cnt >= 3);
    size_t space = 0;
    for (int i = 0; i < cnt; i++)
        space += iov[i].iov_len;
    PT_CHECK(space >= 40000);
    /* "Read" 20000 bytes spread over the iovecs. */
    size_t left = 20000, v = 0;
    for (int i = 0; i < cnt && left > 0; i++) {
        size_t take = left < iov[i].iov_len ? left : iov[i].iov_len;
        for (size_t k = 0; k < take; k++)
            ((char *)iov[i].iov_base)[k] = (char)('a' + (v++ % 26));
        left -= take;
    }
    pt_buf_commit_iov(&b, iov, cnt, 20000);
    PT_CHECK_INT(pt_buf_len(&b), 20003);
    char *all = malloc(20003);
    PT_CHECK_INT(pt_buf_copyout(&b, 0, all, 20003), 20003);
    PT_CHECK_MEM(all, 3, "abc", 3);
    for (size_t k = 0; k < 20000; k++)
        PT_CHECK(all[3 + k] == (char)('a' + (k % 26)));
    free(all);
    /* Nothing read: the buffer is as before and holds no empty chunk. */
    pt_buf_t e = {0};
    cnt = pt_buf_reserve_iov(&e, 65536, iov, 8);
    pt_buf_commit_iov(&e, iov, cnt, 0);
    PT_CHECK(e.head == NULL && e.tail == NULL && e.len == 0);
    pt_buf_dispose(&b);
}

int main(void)
{
    live_at_start = pt_buf_chunks_live();
    PT_RUN(test_reserve_iov);
    PT_RUN(test_empty);
    PT_RUN(test_append_across_chunks);
    PT_RUN(test_printf);
    PT_RUN(test_reserve_commit);
    PT_RUN(test_drain);
    PT_RUN(test_move);
    PT_RUN(test_move_n);
    PT_RUN(test_pullup);
    PT_RUN(test_iov);
    PT_RUN(test_copyout);
    PT_RUN(test_find);
    PT_RUN(test_pool);
    PT_RUN(test_randomized);
    PT_RUN(test_move_coalesces_small_writes);
    PT_RUN(test_no_leaks);
    PT_TEST_EXIT();
}
