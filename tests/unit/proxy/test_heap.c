/* Unit tests for proxy/heap: buffers for whole files, from malloc below PT_HEAP_BIG_MIN and
 * from mappings of their own above it, each usable to its last byte and given back by
 * pt_heap_big_free; and text files read into them, whatever their size or kind. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proxy/config_reader.h"
#include "proxy/heap.h"
#include "pt_test.h"

static void test_big_buffers(void)
{
    const size_t sizes[] = {0, 1, 4096, PT_HEAP_BIG_MIN - 1, PT_HEAP_BIG_MIN,
                            PT_HEAP_BIG_MIN + 12345, 3 * PT_HEAP_BIG_MIN};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        unsigned char *p = pt_heap_big_alloc(n);
        PT_CHECK(p != NULL);
        PT_CHECK((uintptr_t)p % 16 == 0);
        if (n >= PT_HEAP_BIG_MIN)
            PT_CHECK((uintptr_t)p % (2u << 20) == 0); /* on a huge page boundary */
        for (size_t k = 0; k < n; k += 4096)
            p[k] = (unsigned char)k;
        if (n > 0)
            p[n - 1] = 0xab;
        for (size_t k = 0; k < n; k += 4096)
            PT_CHECK(k == n - 1 ? p[k] == 0xab : p[k] == (unsigned char)k);
        pt_heap_big_free(p);
    }
    pt_heap_big_free(NULL);
}

/* The last big buffer freed serves the next one of about its size; a much larger one gets
 * a mapping of its own; the kept one goes at the second tick it sits unused. */
static void test_big_buffer_kept(void)
{
    size_t n = PT_HEAP_BIG_MIN + 100000;
    char *a = pt_heap_big_alloc(n);
    PT_CHECK(a != NULL);
    a[n - 1] = 'x';
    pt_heap_big_free(a);
    char *b = pt_heap_big_alloc(n - 5000);
    PT_CHECK(b == a); /* the same pages, already there */
    PT_CHECK(b[n - 1] == 'x');
    pt_heap_big_free(b);
    char *c = pt_heap_big_alloc(4 * n); /* too large for it: a new one */
    PT_CHECK(c != NULL);
    c[4 * n - 1] = 'y';
    pt_heap_big_free(c);
    pt_heap_maybe_trim();
    pt_heap_maybe_trim(); /* two ticks unused: given back */
    char *d = pt_heap_big_alloc(n);
    PT_CHECK(d != NULL);
    d[n - 1] = 'z';
    pt_heap_big_free(d);
    pt_heap_big_release();
}

/* A file larger than PT_HEAP_BIG_MIN, and a pipe (read in growing buffers), read whole. */
static void test_read_text_sizes(void)
{
    char path[] = "/tmp/pt_ut_heap_XXXXXX";
    int fd = mkstemp(path);
    PT_CHECK(fd >= 0);
    size_t n = PT_HEAP_BIG_MIN + 777;
    char *want = malloc(n);
    PT_CHECK(want != NULL);
    for (size_t i = 0; i < n; i++)
        want[i] = (char)('a' + i % 26);
    PT_CHECK(write(fd, want, n) == (ssize_t)n);
    close(fd);
    char err[256];
    size_t len = 0;
    char *text = pt_config_read_text(path, &len, err, sizeof(err));
    unlink(path);
    PT_CHECK(text != NULL);
    PT_CHECK_INT(len, n);
    PT_CHECK(memcmp(text, want, n) == 0 && text[n] == '\0');
    pt_config_text_free(text);

    int pipefd[2];
    PT_CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    if (pid == 0) { /* a writer of more than the first buffer (64 KiB) holds */
        close(pipefd[0]);
        size_t off = 0;
        while (off < 300000) {
            ssize_t w = write(pipefd[1], want + off, 300000 - off);
            if (w <= 0)
                _exit(1);
            off += (size_t)w;
        }
        _exit(0);
    }
    close(pipefd[1]);
    char dev[64];
    snprintf(dev, sizeof(dev), "/dev/fd/%d", pipefd[0]);
    text = pt_config_read_text(dev, &len, err, sizeof(err));
    close(pipefd[0]);
    waitpid(pid, NULL, 0);
    PT_CHECK(text != NULL);
    PT_CHECK_INT(len, 300000);
    PT_CHECK(memcmp(text, want, 300000) == 0 && text[len] == '\0');
    pt_config_text_free(text);
    free(want);
}

int main(void)
{
    PT_RUN(test_big_buffers);
    PT_RUN(test_big_buffer_kept);
    PT_RUN(test_read_text_sizes);
    PT_TEST_EXIT();
}
