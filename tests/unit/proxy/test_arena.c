/* Unit tests for proxy/arena: zeroed, aligned allocations; small arenas that start with a
 * small block and grow to the standard one; big allocations; cleanups newest first. */
#include "proxy/arena.h"
#include "pt_test.h"

#include <stdint.h>

static int order[4], norder;

static void note(void *arg)
{
    order[norder++] = (int)(intptr_t)arg;
}

static void test_alloc_zeroed_aligned(void)
{
    pt_arena_t a = {0};
    for (int i = 0; i < 1000; i++) {
        unsigned char *p = pt_arena_alloc(&a, (size_t)(i % 37) + 1);
        PT_CHECK(p != NULL);
        PT_CHECK(((uintptr_t)p & 15) == 0);
        for (int k = 0; k < i % 37 + 1; k++)
            PT_CHECK(p[k] == 0);
        p[0] = 0xff;
    }
    char *big = pt_arena_alloc(&a, 100000);
    PT_CHECK(big != NULL);
    big[99999] = 1;
    pt_arena_dispose(&a);
}

static void test_small_arena_grows(void)
{
    pt_arena_t a;
    pt_arena_init_small(&a);
    PT_CHECK(pt_arena_alloc(&a, 64) != NULL);
    PT_CHECK_INT(a.used_total, 64);
    /* Many small allocations: blocks double to the standard size, then stay there. */
    for (int i = 0; i < 2000; i++)
        PT_CHECK(pt_arena_alloc(&a, 48) != NULL);
    PT_CHECK_INT(a.next_block, 8192);
    /* One bigger than a small block fits in a block of its own. */
    pt_arena_t b;
    pt_arena_init_small(&b);
    char *p = pt_arena_alloc(&b, 3000);
    PT_CHECK(p != NULL);
    p[2999] = 1;
    PT_CHECK(pt_arena_strdup(&b, "hello") != NULL);
    pt_arena_dispose(&a);
    pt_arena_dispose(&b);
}

static void test_cleanups_newest_first(void)
{
    pt_arena_t a;
    pt_arena_init_small(&a);
    norder = 0;
    for (int i = 1; i <= 3; i++)
        PT_CHECK_INT(pt_arena_defer(&a, note, (void *)(intptr_t)i), 0);
    pt_arena_dispose(&a);
    PT_CHECK_INT(norder, 3);
    PT_CHECK_INT(order[0], 3);
    PT_CHECK_INT(order[2], 1);
}

int main(void)
{
    PT_RUN(test_alloc_zeroed_aligned);
    PT_RUN(test_small_arena_grows);
    PT_RUN(test_cleanups_newest_first);
    pt_arena_thread_cleanup();
    PT_TEST_EXIT();
}
