/* Minimal unit-test support: each test file is one executable with a main() that calls
 * PT_RUN(test_fn) for each case; a failed check prints file:line and the test exits 1. */
#ifndef PT_TEST_H
#define PT_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int pt_test_failures;
static const char *pt_test_current;

#define PT_CHECK(cond)                                                                   \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__,         \
                    pt_test_current, #cond);                                             \
            pt_test_failures++;                                                          \
            return;                                                                      \
        }                                                                                \
    } while (0)

#define PT_CHECK_INT(a, b)                                                               \
    do {                                                                                 \
        long long pt_a_ = (long long)(a), pt_b_ = (long long)(b);                        \
        if (pt_a_ != pt_b_) {                                                            \
            fprintf(stderr, "%s:%d: %s: %s == %lld, expected %lld\n", __FILE__,          \
                    __LINE__, pt_test_current, #a, pt_a_, pt_b_);                        \
            pt_test_failures++;                                                          \
            return;                                                                      \
        }                                                                                \
    } while (0)

#define PT_CHECK_STR(a, b)                                                               \
    do {                                                                                 \
        const char *pt_a_ = (a), *pt_b_ = (b);                                           \
        if (pt_a_ == NULL || pt_b_ == NULL || strcmp(pt_a_, pt_b_) != 0) {               \
            fprintf(stderr, "%s:%d: %s: %s\n     got: \"%s\"\n    want: \"%s\"\n",       \
                    __FILE__, __LINE__, pt_test_current, #a, pt_a_ ? pt_a_ : "(null)",   \
                    pt_b_ ? pt_b_ : "(null)");                                           \
            pt_test_failures++;                                                          \
            return;                                                                      \
        }                                                                                \
    } while (0)

#define PT_CHECK_MEM(a, alen, b, blen)                                                   \
    do {                                                                                 \
        size_t pt_al_ = (alen), pt_bl_ = (blen);                                         \
        if (pt_al_ != pt_bl_ || memcmp((a), (b), pt_al_) != 0) {                         \
            fprintf(stderr, "%s:%d: %s: %s: \"%.*s\" != \"%.*s\"\n", __FILE__, __LINE__, \
                    pt_test_current, #a, (int)pt_al_, (const char *)(a), (int)pt_bl_,    \
                    (const char *)(b));                                                  \
            pt_test_failures++;                                                          \
            return;                                                                      \
        }                                                                                \
    } while (0)

#define PT_RUN(fn)                                                                       \
    do {                                                                                 \
        int pt_before_ = pt_test_failures;                                               \
        pt_test_current = #fn;                                                           \
        fn();                                                                            \
        printf("%s %s\n", pt_test_failures == pt_before_ ? "ok  " : "FAIL", #fn);        \
    } while (0)

#define PT_TEST_EXIT() return pt_test_failures ? 1 : 0

#endif
