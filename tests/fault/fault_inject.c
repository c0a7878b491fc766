/* petrel-fault-inject.so: an LD_PRELOAD shim that makes the calls petrel depends on fail at
 * random while it runs (docs/testing.md, tests/integration/test_failure_injection.py).
 *
 * Classes of calls and the failures injected, each as the kernel or the library reports it:
 *   socket   socket()                               EMFILE, ENFILE, ENOBUFS, ENOMEM
 *   accept   accept(), accept4()                     EMFILE, ENFILE, ENOBUFS, ENOMEM,
 *                                                    ECONNABORTED (the connection stays queued)
 *   connect  connect(); or, later, SO_ERROR          ECONNREFUSED, EADDRNOTAVAIL, ENETUNREACH;
 *                                                    SO_ERROR: ECONNREFUSED, ETIMEDOUT
 *   read     read, recv, recvfrom, recvmsg, readv    ECONNRESET, EINTR, EAGAIN (without the
 *            on sockets                              socket being empty), or a short read
 *   write    write, send, sendto, sendmsg, writev    EPIPE, ECONNRESET, EAGAIN, or a short write
 *            on sockets                              (after ECONNRESET or EPIPE the socket is
 *                                                    shut both ways: broken for good)
 *   malloc   malloc, calloc, realloc, strdup,        NULL (ENOMEM); only calls made by petrel's
 *            strndup                                 own code (the binary, petrel-tls.so):
 *                                                    libev, for one, aborts when its own fail
 *   ssl      SSL_new                                 NULL
 *            SSL_do_handshake, SSL_read, SSL_write   -1 with an error queued (SSL_ERROR_SSL)
 *
 * Environment:
 *   PT_FAULT_SEED     the seed (decimal); when unset one is made up. Printed when injection
 *                     starts, so a failing run can be replayed.
 *   PT_FAULT_RATE     per-call probability: "0.01" for every class, and/or per class:
 *                     "0.01,malloc=0.001,ssl=0.05". Default 0.01.
 *   PT_FAULT_CALLS    the classes to inject, comma-separated, or "all" (the default).
 *   PT_FAULT_MALLOC_SIZE  only allocations of exactly this many bytes fail (with the malloc
 *                     rate), to aim at one allocation in a regression test.
 *   PT_FAULT_CONTROL  a path: injection is on while this file exists (looked at every 20 ms),
 *                     so start-up (config loading) runs clean and a test can switch it off
 *                     to check that nothing stays broken. Unset: on from the start.
 *   PT_FAULT_REPORT   a path: "<class> <calls> <injected>" lines, written whenever injection
 *                     stops and at exit. Also printed to stderr when injection stops.
 *
 * Each thread draws from its own generator, seeded from the seed and the thread's rank (the
 * order in which threads first roll): the same seed gives each thread the same sequence of
 * decisions for the same sequence of calls. Network timing still varies from run to run, so a
 * replay reproduces the decisions, not necessarily the interleaving; repeat it a few times.
 *
 * The shim must not allocate through the allocator it wraps, nor write through the write it
 * wraps: it formats on the stack and writes with raw system calls. It is built without
 * sanitizers; under ASan it goes first in the library list (ASAN_OPTIONS
 * verify_asan_link_order=0) and forwards to ASan's allocator and interceptors. */
#undef _FORTIFY_SOURCE
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define TLS_IE __thread __attribute__((tls_model("initial-exec")))

enum { C_SOCKET, C_ACCEPT, C_CONNECT, C_READ, C_WRITE, C_MALLOC, C_SSL, C_COUNT };
static const char *const class_names[C_COUNT] = {"socket", "accept", "connect", "read",
                                                 "write",  "malloc", "ssl"};

#define PPM            1000000u
#define CHECK_EVERY_NS (20 * 1000 * 1000)
#define MAX_RANGES     16
#define MAX_FD         65536

static struct {
    int configured;
    uint64_t seed;
    uint32_t rate_ppm[C_COUNT]; /* 0 for a class not injected */
    size_t malloc_size;         /* 0: any */
    char control[512];
    char report[512];
} cfg;

static atomic_int active;
static atomic_uint thread_rank;
static atomic_ullong calls[C_COUNT], injected[C_COUNT];

/* Executable ranges of petrel's own code, for the malloc class (found when injection starts). */
static struct {
    uintptr_t lo, hi;
} ranges[MAX_RANGES];
static atomic_int nranges;

/* connect() decided to fail later: the error SO_ERROR reports for this descriptor. */
static atomic_ushort late_error[MAX_FD];

static TLS_IE uint64_t rng;
static TLS_IE int in_shim; /* inside the shim's own work: never inject, never recurse */

/* ---- output without the wrapped calls ------------------------------------------------ */

static void raw_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        long w = syscall(SYS_write, fd, p, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    raw_write_all(2, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* "0.010000" from parts per million, without floating point formatting. */
static const char *ppm_str(uint32_t ppm, char *buf, size_t len)
{
    snprintf(buf, len, "%u.%06u", ppm / PPM, ppm % PPM);
    return buf;
}

static void write_report(void)
{
    char text[1024];
    size_t n = 0;
    for (int i = 0; i < C_COUNT && n < sizeof(text); i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s %llu %llu\n", class_names[i],
                              (unsigned long long)atomic_load(&calls[i]),
                              (unsigned long long)atomic_load(&injected[i]));
    if (n > sizeof(text))
        n = sizeof(text);
    if (cfg.report[0]) {
        char tmp[600];
        snprintf(tmp, sizeof(tmp), "%s.tmp", cfg.report);
        long fd =
            syscall(SYS_openat, AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            raw_write_all((int)fd, text, n);
            syscall(SYS_close, fd);
            syscall(SYS_rename, tmp, cfg.report);
        }
    }
}

/* ---- the real functions -------------------------------------------------------------- */

/* dlsym may allocate while the real allocator is being looked up: those few bytes come
 * from here and are never freed. */
static char bootstrap_heap[8192] __attribute__((aligned(16)));
static size_t bootstrap_used;

static int from_bootstrap(const void *p)
{
    return (const char *)p >= bootstrap_heap &&
           (const char *)p < bootstrap_heap + sizeof(bootstrap_heap);
}

static void *bootstrap_alloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (bootstrap_used + n > sizeof(bootstrap_heap))
        return NULL;
    void *p = bootstrap_heap + bootstrap_used;
    bootstrap_used += n;
    return p;
}

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static char *(*real_strdup)(const char *);
static char *(*real_strndup)(const char *, size_t);
static int resolving;

static void *next(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (f == NULL) {
        say("petrel-fault-inject: cannot find %s\n", name);
        abort();
    }
    return f;
}

#define REAL(name)                                                                                 \
    static __typeof__(name) *real;                                                                 \
    if (real == NULL)                                                                              \
        real = (__typeof__(name) *)next(#name);

static void resolve_alloc(void)
{
    if (real_free != NULL)
        return;
    resolving = 1;
    real_malloc = next("malloc");
    real_calloc = next("calloc");
    real_realloc = next("realloc");
    real_strdup = next("strdup");
    real_strndup = next("strndup");
    real_free = next("free");
    resolving = 0;
}

/* ---- configuration and switching ----------------------------------------------------- */

static uint32_t parse_ppm(const char *s, const char **end)
{
    /* A decimal in [0, 1], by hand: strtod may allocate. */
    uint64_t whole = 0, frac = 0, scale = PPM;
    while (*s >= '0' && *s <= '9')
        whole = whole * 10 + (uint64_t)(*s++ - '0');
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') {
            if (scale > 1) {
                scale /= 10;
                frac += (uint64_t)(*s - '0') * scale;
            }
            s++;
        }
    }
    *end = s;
    uint64_t v = whole * PPM + frac;
    return v > PPM ? PPM : (uint32_t)v;
}

static int class_of(const char *s, size_t n)
{
    for (int i = 0; i < C_COUNT; i++)
        if (strlen(class_names[i]) == n && strncmp(s, class_names[i], n) == 0)
            return i;
    return -1;
}

static void configure(void)
{
    const char *seed = getenv("PT_FAULT_SEED");
    if (seed != NULL && *seed) {
        cfg.seed = strtoull(seed, NULL, 10);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        cfg.seed = ((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20)) % 1000000000u;
    }
    uint32_t rate[C_COUNT];
    for (int i = 0; i < C_COUNT; i++)
        rate[i] = PPM / 100;
    const char *r = getenv("PT_FAULT_RATE");
    while (r != NULL && *r) {
        const char *eq = strchr(r, '=');
        const char *comma = strchr(r, ',');
        const char *end;
        if (eq != NULL && (comma == NULL || eq < comma)) {
            int c = class_of(r, (size_t)(eq - r));
            uint32_t v = parse_ppm(eq + 1, &end);
            if (c < 0) {
                say("petrel-fault-inject: PT_FAULT_RATE: unknown class \"%.*s\"\n", (int)(eq - r),
                    r);
                _exit(2);
            }
            rate[c] = v;
        } else {
            uint32_t v = parse_ppm(r, &end);
            for (int i = 0; i < C_COUNT; i++)
                rate[i] = v;
        }
        r = strchr(end, ',');
        if (r != NULL)
            r++;
    }
    const char *which = getenv("PT_FAULT_CALLS");
    int on[C_COUNT] = {0};
    if (which == NULL || !*which || strcmp(which, "all") == 0) {
        for (int i = 0; i < C_COUNT; i++)
            on[i] = 1;
    } else {
        for (const char *p = which; *p;) {
            size_t n = strcspn(p, ",");
            int c = class_of(p, n);
            if (c < 0) {
                say("petrel-fault-inject: PT_FAULT_CALLS: unknown class \"%.*s\"\n", (int)n, p);
                _exit(2);
            }
            on[c] = 1;
            p += n;
            if (*p == ',')
                p++;
        }
    }
    for (int i = 0; i < C_COUNT; i++)
        cfg.rate_ppm[i] = on[i] ? rate[i] : 0;
    const char *size = getenv("PT_FAULT_MALLOC_SIZE");
    if (size != NULL)
        cfg.malloc_size = strtoull(size, NULL, 10);
    const char *control = getenv("PT_FAULT_CONTROL");
    if (control != NULL)
        snprintf(cfg.control, sizeof(cfg.control), "%s", control);
    const char *report = getenv("PT_FAULT_REPORT");
    if (report != NULL)
        snprintf(cfg.report, sizeof(cfg.report), "%s", report);
    cfg.configured = 1;
}

static int add_range(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    int *first = data;
    const char *name = info->dlpi_name;
    const char *base = strrchr(name, '/');
    base = base != NULL ? base + 1 : name;
    int mine = *first || strncmp(base, "petrel", 6) == 0;
    *first = 0;
    if (!mine || strncmp(base, "petrel-fault-inject", 19) == 0)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        int n = atomic_load(&nranges);
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || n >= MAX_RANGES)
            continue;
        ranges[n].lo = info->dlpi_addr + ph->p_vaddr;
        ranges[n].hi = ranges[n].lo + ph->p_memsz;
        atomic_store(&nranges, n + 1);
    }
    return 0;
}

static void switch_on(void)
{
    int first = 1;
    atomic_store(&nranges, 0);
    dl_iterate_phdr(add_range, &first); /* the main program comes first */
    char buf[C_COUNT][24];
    for (int i = 0; i < C_COUNT; i++)
        ppm_str(cfg.rate_ppm[i], buf[i], sizeof(buf[i]));
    say("petrel-fault-inject: on: seed=%llu rates socket=%s accept=%s connect=%s read=%s "
        "write=%s malloc=%s ssl=%s (replay: PT_FAULT_SEED=%llu)\n",
        (unsigned long long)cfg.seed, buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6],
        (unsigned long long)cfg.seed);
    atomic_store(&active, 1);
}

static void switch_off(void)
{
    atomic_store(&active, 0);
    write_report();
    char text[512];
    size_t n = 0;
    for (int i = 0; i < C_COUNT && n < sizeof(text); i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, " %s=%llu/%llu", class_names[i],
                              (unsigned long long)atomic_load(&injected[i]),
                              (unsigned long long)atomic_load(&calls[i]));
    say("petrel-fault-inject: off: seed=%llu injected/calls:%s\n", (unsigned long long)cfg.seed,
        text);
}

/* Follows the control file from a thread of its own, so that it does not depend on petrel
 * making calls (an idle petrel makes none). Every signal is blocked there: they are for
 * petrel's threads. */
static void *watch_control(void *arg)
{
    (void)arg;
    in_shim = 1;
    for (;;) {
        int want =
            cfg.control[0] == '\0' || syscall(SYS_faccessat, AT_FDCWD, cfg.control, F_OK, 0) == 0;
        if (want && !atomic_load(&active))
            switch_on();
        else if (!want && atomic_load(&active))
            switch_off();
        struct timespec ts = {0, CHECK_EVERY_NS};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void start_watching(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    if (pthread_create(&t, NULL, watch_control, NULL) != 0) {
        say("petrel-fault-inject: cannot start the control thread\n");
        _exit(2);
    }
    pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static uint64_t splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t draw(void)
{
    if (rng == 0) {
        unsigned rank = atomic_fetch_add(&thread_rank, 1);
        rng = splitmix(cfg.seed * 0x100000001b3ull + rank) | 1;
    }
    /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

/* Whether a call of class c fails (the in_shim check done). */
static int decide(int c)
{
    if (!atomic_load_explicit(&active, memory_order_relaxed) || cfg.rate_ppm[c] == 0)
        return 0;
    atomic_fetch_add_explicit(&calls[c], 1, memory_order_relaxed);
    return (draw() % PPM) < cfg.rate_ppm[c];
}

/* Whether this call of class c fails. */
static int roll(int c)
{
    return in_shim ? 0 : decide(c);
}

static void count(int c)
{
    atomic_fetch_add_explicit(&injected[c], 1, memory_order_relaxed);
}

/* A number in [0, n). */
static unsigned pick(unsigned n)
{
    return (unsigned)((draw() >> 33) % n);
}

static int is_socket(int fd)
{
    struct stat st;
    return fd > 2 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

static int from_petrel(const void *ret)
{
    uintptr_t a = (uintptr_t)ret;
    int n = atomic_load_explicit(&nranges, memory_order_relaxed);
    for (int i = 0; i < n; i++)
        if (a >= ranges[i].lo && a < ranges[i].hi)
            return 1;
    return 0;
}

__attribute__((constructor)) static void init(void)
{
    resolve_alloc();
    configure();
    start_watching();
}

__attribute__((destructor)) static void fini(void)
{
    if (cfg.configured)
        write_report();
}

/* ---- socket, accept, connect ---------------------------------------------------------- */

static int fail(int err)
{
    errno = err;
    return -1;
}

EXPORT int socket(int domain, int type, int protocol)
{
    REAL(socket);
    if ((domain == AF_INET || domain == AF_INET6) && roll(C_SOCKET)) {
        static const int errs[] = {EMFILE, ENFILE, ENOBUFS, ENOMEM};
        count(C_SOCKET);
        return fail(errs[pick(4)]);
    }
    return real(domain, type, protocol);
}

static int accept_fails(void)
{
    static const int errs[] = {EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED};
    if (!roll(C_ACCEPT))
        return 0;
    count(C_ACCEPT);
    return fail(errs[pick(5)]);
}

EXPORT int accept(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len)
{
    REAL(accept);
    if (accept_fails() != 0)
        return -1;
    return real(fd, addr, len);
}

EXPORT int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len, int flags)
{
    REAL(accept4);
    if (accept_fails() != 0)
        return -1;
    return real(fd, addr, len, flags);
}

EXPORT int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
    REAL(connect);
    if (roll(C_CONNECT)) {
        count(C_CONNECT);
        unsigned how = pick(4);
        if (how < 3 || fd < 0 || fd >= MAX_FD) {
            static const int errs[] = {ECONNREFUSED, EADDRNOTAVAIL, ENETUNREACH};
            return fail(errs[how % 3]);
        }
        /* Fails later: the connection is made, but SO_ERROR says it was not. */
        atomic_store(&late_error[fd], pick(2) ? ECONNREFUSED : ETIMEDOUT);
    }
    return real(fd, addr, len);
}

EXPORT int getsockopt(int fd, int level, int name, void *restrict val, socklen_t *restrict len)
{
    REAL(getsockopt);
    int rc = real(fd, level, name, val, len);
    if (rc == 0 && level == SOL_SOCKET && name == SO_ERROR && fd >= 0 && fd < MAX_FD &&
        *len >= sizeof(int)) {
        int err = atomic_exchange(&late_error[fd], 0);
        if (err != 0 && *(int *)val == 0)
            *(int *)val = err;
    }
    return rc;
}

EXPORT int close(int fd)
{
    REAL(close);
    if (fd >= 0 && fd < MAX_FD)
        atomic_store_explicit(&late_error[fd], 0, memory_order_relaxed);
    return real(fd);
}

/* ---- read and write ------------------------------------------------------------------- */

/* A connection the shim says is broken must be broken for good, as it would be: OpenSSL, for
 * one, takes EPIPE or ECONNRESET while it sends a TLS 1.3 session ticket to mean that the
 * peer is gone, goes on as if the ticket had left, and the peer, which never got it, could
 * not decrypt what follows. Both directions are shut: later writes fail with EPIPE for real,
 * reads see the end, and the peer sees a FIN. */
static int broken(int fd, int err)
{
    syscall(SYS_shutdown, fd, SHUT_RDWR);
    return fail(err);
}

/* A read that fails: -1 with errno set; or 0 and *len shortened (a short read). */
static int read_fails(int fd, size_t *len)
{
    if (!roll(C_READ) || !is_socket(fd))
        return 0;
    count(C_READ);
    switch (pick(4)) {
    case 0:
        return broken(fd, ECONNRESET);
    case 1:
        return fail(EINTR);
    case 2:
        return fail(EAGAIN);
    default:
        if (*len > 1)
            *len = 1 + pick((unsigned)(*len - 1 < 65536 ? *len - 1 : 65536));
        return 0;
    }
}

static int write_fails(int fd, size_t *len)
{
    if (!roll(C_WRITE) || !is_socket(fd))
        return 0;
    count(C_WRITE);
    switch (pick(4)) {
    case 0:
        return broken(fd, EPIPE);
    case 1:
        return broken(fd, ECONNRESET);
    case 2:
        return fail(EAGAIN);
    default:
        if (*len > 1)
            *len = 1 + pick((unsigned)(*len - 1 < 65536 ? *len - 1 : 65536));
        return 0;
    }
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* Copies iov into out, cut after len bytes; returns the new count. */
static int iov_cut(const struct iovec *iov, int cnt, size_t len, struct iovec *out)
{
    int k = 0;
    for (int i = 0; i < cnt && len > 0; i++) {
        out[k] = iov[i];
        if (out[k].iov_len > len)
            out[k].iov_len = len;
        len -= out[k].iov_len;
        k++;
    }
    return k;
}

EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    REAL(read);
    if (read_fails(fd, &len) != 0)
        return -1;
    return real(fd, buf, len);
}

EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    REAL(recv);
    if (read_fails(fd, &len) != 0)
        return -1;
    return real(fd, buf, len, flags);
}

EXPORT ssize_t recvfrom(int fd, void *restrict buf, size_t len, int flags, __SOCKADDR_ARG addr,
                        socklen_t *restrict alen)
{
    REAL(recvfrom);
    if (read_fails(fd, &len) != 0)
        return -1;
    return real(fd, buf, len, flags, addr, alen);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    REAL(readv);
    size_t total = iov_total(iov, cnt), len = total;
    if (read_fails(fd, &len) != 0)
        return -1;
    if (len < total && cnt <= IOV_MAX) {
        struct iovec cut[IOV_MAX];
        return real(fd, cut, iov_cut(iov, cnt, len, cut));
    }
    return real(fd, iov, cnt);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    REAL(recvmsg);
    size_t total = iov_total(msg->msg_iov, (int)msg->msg_iovlen), len = total;
    if (read_fails(fd, &len) != 0)
        return -1;
    if (len < total && msg->msg_iovlen <= IOV_MAX) {
        struct iovec cut[IOV_MAX], *saved = msg->msg_iov;
        size_t saved_len = msg->msg_iovlen;
        msg->msg_iovlen = (size_t)iov_cut(saved, (int)saved_len, len, cut);
        msg->msg_iov = cut;
        ssize_t n = real(fd, msg, flags);
        msg->msg_iov = saved;
        msg->msg_iovlen = saved_len;
        return n;
    }
    return real(fd, msg, flags);
}

EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    REAL(write);
    if (write_fails(fd, &len) != 0)
        return -1;
    return real(fd, buf, len);
}

EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    REAL(send);
    if (write_fails(fd, &len) != 0)
        return -1;
    return real(fd, buf, len, flags);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, __CONST_SOCKADDR_ARG addr,
                      socklen_t alen)
{
    REAL(sendto);
    if (write_fails(fd, &len) != 0)
        return -1;
    return real(fd, buf, len, flags, addr, alen);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    REAL(writev);
    size_t total = iov_total(iov, cnt), len = total;
    if (write_fails(fd, &len) != 0)
        return -1;
    if (len < total && cnt <= IOV_MAX) {
        struct iovec cut[IOV_MAX];
        return real(fd, cut, iov_cut(iov, cnt, len, cut));
    }
    return real(fd, iov, cnt);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    REAL(sendmsg);
    size_t total = iov_total(msg->msg_iov, (int)msg->msg_iovlen), len = total;
    if (write_fails(fd, &len) != 0)
        return -1;
    if (len < total && msg->msg_iovlen <= IOV_MAX) {
        struct iovec cut[IOV_MAX];
        struct msghdr m = *msg;
        m.msg_iovlen = (size_t)iov_cut(msg->msg_iov, (int)msg->msg_iovlen, len, cut);
        m.msg_iov = cut;
        return real(fd, &m, flags);
    }
    return real(fd, msg, flags);
}

/* ---- the allocator --------------------------------------------------------------------- */

/* Only petrel's own allocations fail (and count): not the libraries' it calls. */
static int alloc_fails(const void *caller, size_t n)
{
    if (in_shim)
        return 0;
    if ((cfg.malloc_size != 0 && n != cfg.malloc_size) || !from_petrel(caller) || !decide(C_MALLOC))
        return 0;
    count(C_MALLOC);
    errno = ENOMEM;
    return 1;
}

EXPORT void *malloc(size_t n)
{
    if (real_malloc == NULL) {
        if (resolving)
            return bootstrap_alloc(n);
        resolve_alloc();
    }
    if (n > 0 && alloc_fails(__builtin_return_address(0), n))
        return NULL;
    return real_malloc(n);
}

EXPORT void *calloc(size_t k, size_t n)
{
    if (real_calloc == NULL) {
        if (resolving)
            return bootstrap_alloc(k * n); /* zeroed: static storage, never reused */
        resolve_alloc();
    }
    if (k > 0 && n > 0 && alloc_fails(__builtin_return_address(0), k * n))
        return NULL;
    return real_calloc(k, n);
}

EXPORT void *realloc(void *p, size_t n)
{
    if (real_realloc == NULL) {
        if (resolving)
            return bootstrap_alloc(n);
        resolve_alloc();
    }
    if (from_bootstrap(p)) {
        void *q = real_malloc(n);
        if (q != NULL)
            memcpy(q, p,
                   n < sizeof(bootstrap_heap) - (size_t)((char *)p - bootstrap_heap)
                       ? n
                       : sizeof(bootstrap_heap) - (size_t)((char *)p - bootstrap_heap));
        return q;
    }
    if (n > 0 && alloc_fails(__builtin_return_address(0), n))
        return NULL;
    return real_realloc(p, n);
}

EXPORT void free(void *p)
{
    if (p == NULL || from_bootstrap(p))
        return;
    if (real_free == NULL)
        resolve_alloc();
    real_free(p);
}

EXPORT char *strdup(const char *s)
{
    resolve_alloc();
    if (alloc_fails(__builtin_return_address(0), strlen(s) + 1))
        return NULL;
    return real_strdup(s);
}

EXPORT char *strndup(const char *s, size_t n)
{
    resolve_alloc();
    if (alloc_fails(__builtin_return_address(0), strnlen(s, n) + 1))
        return NULL;
    return real_strndup(s, n);
}

/* ---- OpenSSL ----------------------------------------------------------------------------- */

/* libssl and libcrypto are loaded with petrel-tls.so, RTLD_LOCAL: not in RTLD_NEXT's reach.
 * Found by name among the loaded objects when first needed. */
static int find_lib(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    const char **want = data;
    if (strstr(info->dlpi_name, want[0]) != NULL) {
        want[1] = info->dlpi_name;
        return 1;
    }
    return 0;
}

static void *lib_symbol(const char *lib, const char *name)
{
    const char *want[2] = {lib, NULL};
    in_shim++;
    dl_iterate_phdr(find_lib, want);
    void *h = want[1] != NULL ? dlopen(want[1], RTLD_NOW | RTLD_NOLOAD) : NULL;
    void *f = h != NULL ? dlsym(h, name) : NULL;
    in_shim--;
    if (f == NULL) {
        say("petrel-fault-inject: cannot find %s in %s\n", name, lib);
        abort();
    }
    return f; /* the handle stays: the library is loaded for good anyway */
}

#define REAL_SSL(name)                                                                             \
    static __typeof__(name) *real;                                                                 \
    if (real == NULL)                                                                              \
        real = (__typeof__(name) *)lib_symbol("/libssl.so", #name);

/* Queues an OpenSSL error, as a failed call would: SSL_get_error then says SSL_ERROR_SSL. */
static void queue_error(int reason)
{
    static void (*err_new)(void);
    static void (*err_set_debug)(const char *, int, const char *);
    static void (*err_set_error)(int, int, const char *, ...);
    if (err_set_error == NULL) {
        err_new = (void (*)(void))lib_symbol("/libcrypto.so", "ERR_new");
        err_set_debug =
            (void (*)(const char *, int, const char *))lib_symbol("/libcrypto.so", "ERR_set_debug");
        err_set_error =
            (void (*)(int, int, const char *, ...))lib_symbol("/libcrypto.so", "ERR_set_error");
    }
    in_shim++; /* the error queue allocates */
    err_new();
    err_set_debug("petrel-fault-inject", 0, "injected");
    err_set_error(ERR_LIB_SSL, reason, NULL);
    in_shim--;
}

EXPORT SSL *SSL_new(SSL_CTX *ctx)
{
    REAL_SSL(SSL_new);
    if (roll(C_SSL)) {
        count(C_SSL);
        return NULL;
    }
    return real(ctx);
}

EXPORT int SSL_do_handshake(SSL *s)
{
    REAL_SSL(SSL_do_handshake);
    if (roll(C_SSL)) {
        count(C_SSL);
        queue_error(SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE);
        return -1;
    }
    return real(s);
}

EXPORT int SSL_read(SSL *s, void *buf, int num)
{
    REAL_SSL(SSL_read);
    if (roll(C_SSL)) {
        count(C_SSL);
        queue_error(SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC);
        return -1;
    }
    return real(s, buf, num);
}

EXPORT int SSL_write(SSL *s, const void *buf, int num)
{
    REAL_SSL(SSL_write);
    if (roll(C_SSL)) {
        count(C_SSL);
        queue_error(SSL_R_BAD_LENGTH);
        return -1;
    }
    return real(s, buf, num);
}
