/* ptload: the small load generator behind bench/run.sh. Compiled at run time with `cc -O2`.
 *
 *   ptload rate HOST PORT PATH RATE SECONDS CONNS [WARMUP_S [close]]
 *       Open-loop, fixed-rate HTTP/1.1 GETs over CONNS keep-alive connections (with "close":
 *       each request on a new connection, sent with Connection: close; latency then includes
 *       the handshake). Request i is due
 *       at t0 + i/RATE; it is sent on a free connection, or queued until one frees up, and its
 *       latency runs from its due time (not its send time), so a stall shows up in the tail
 *       instead of silently lowering the rate (no coordinated omission). The first WARMUP_S
 *       seconds (default 1) are not recorded. Prints one JSON object.
 *       Every request ends in exactly one outcome, counted in the JSON: a response by status
 *       class (status_2xx .. status_5xx, status_other), "failed_io" (the connection broke
 *       before the full response: reset, close, garbage, a failed send), or "unanswered"
 *       (no answer 10 s after the last request was due). "completed" counts the 2xx
 *       responses, "connect_errors" failed connects (they carry no request) and "errors"
 *       every outcome but 2xx plus the connect errors (exit status 1 when it is not 0).
 *       Latency percentiles cover every recorded request that ended, failed ones at the
 *       time they failed. A response with "Connection: close" is followed by a new
 *       connection.
 *
 *   ptload idle HOST PORT PATH N
 *       Opens N connections (at most 256 handshakes in flight) and holds them, then talks on
 *       stdin/stdout so a driver can sample the proxy between phases:
 *         prints "connected <n>"   when N connections are established (no byte sent yet);
 *         on a line "request"      sends one GET on every connection (at most 32 in flight),
 *                                  reads each full response, keeps the connection open and
 *                                  prints "requested <ok> <failed>";
 *         on EOF or "close"        closes everything and exits.
 *
 *   ptload pipeline HOST PORT PATH N REQS RCVBUF
 *       The abuse suite's pipelining non-readers: opens N connections (at most 256 handshakes
 *       in flight) with a receive buffer of RCVBUF bytes, and on each writes REQS pipelined
 *       GETs as fast as the socket takes them, never reading a byte of the responses. Prints
 *       "connected <ok> <failed>" once all are up and keeps writing until stdin says "close"
 *       (or ends); then prints one JSON object (requests written, connections the server
 *       closed) and exits, which closes every connection.
 *
 *   ptload slow HOST PORT PATH N READ_BPS RCVBUF
 *       Slow readers: N connections (receive buffer RCVBUF), one GET on each, then every
 *       100 ms each connection reads at most READ_BPS/10 bytes (READ_BPS 0: never reads).
 *       Same "connected" line, "close" and JSON summary as pipeline.
 *
 *   ptload flood HOST PORT PATH N
 *       Descriptor exhaustion: N non-blocking connects issued at once (no limit in flight);
 *       every connection that comes up sends one GET and, once answered, is held open. Prints
 *       "burst <n>" when every connect has been issued. On "close" prints one JSON object:
 *       how many were answered (by status class), shed (closed or reset by the server before
 *       any answer; with the times from the burst to each close), still waiting for an answer
 *       or for the connect to complete, or failed to connect; then closes everything.
 *
 * Deliberately simple: responses must carry Content-Length or be chunked (the upstream is
 * nginx serving a static file); only the pipeline mode pipelines requests.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RBUF 16384
#define MAX_INFLIGHT 256 /* handshakes in flight while opening idle connections */
#define MAX_REQ_INFLIGHT 32 /* requests in flight in the idle test: below wrk's 50, so warm pools suffice */

typedef struct {
    int fd;
    int state;          /* 0 closed, 1 connecting, 2 idle, 3 waiting for response */
    size_t rlen;        /* bytes in rbuf */
    long body_left;     /* -1: headers not complete yet */
    int chunked;
    int status;         /* status code of the response being read */
    int close_after;    /* the response said "Connection: close" */
    int64_t due_ns;     /* due time of the request in flight (rate mode) */
    char rbuf[RBUF];
} conn_t;

static struct sockaddr_in g_addr;
static char g_req[512];
static size_t g_req_len;
static int g_ep;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int conn_open(conn_t *c, int idx) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->state = 1;
    c->rlen = 0;
    c->body_left = -1;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)idx};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll_ctl");
    return 0;
}

static void conn_close(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = 0;
}

static void want(conn_t *c, int idx, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)idx};
    epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int conn_send(conn_t *c) {
    ssize_t n = send(c->fd, g_req, g_req_len, MSG_NOSIGNAL);
    if (n != (ssize_t)g_req_len)
        return -1; /* a 100-byte request into an empty socket buffer: short writes are errors */
    c->state = 3;
    c->rlen = 0;
    c->body_left = -1;
    c->chunked = 0;
    c->status = 0;
    c->close_after = 0;
    return 0;
}

/* Returns 1 when a full response has arrived, 0 when more is needed, -1 on error/close. */
static int conn_read(conn_t *c) {
    for (;;) {
        if (c->rlen == RBUF) {
            /* Only the body's tail matters once headers are parsed: keep the last 8 bytes. */
            if (c->body_left < 0 && !c->chunked)
                return -1;
            memmove(c->rbuf, c->rbuf + RBUF - 8, 8);
            c->rlen = 8;
        }
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
        if (n == 0)
            return -1;
        if (n < 0)
            return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        c->rlen += (size_t)n;
        if (c->body_left >= 0 && !c->chunked) {
            c->body_left -= n;
            c->rlen = 0;
        } else if (c->body_left < 0 && !c->chunked) {
            char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
            if (!end)
                continue;
            size_t hlen = (size_t)(end - c->rbuf) + 4;
            if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0)
                return -1;
            c->status = atoi(c->rbuf + 9);
            long cl = -1;
            for (char *p = c->rbuf; p < end;) {
                char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
                if (!eol)
                    break;
                if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
                    cl = strtol(p + 15, NULL, 10);
                else if ((size_t)(eol - p) > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0 &&
                         memmem(p, (size_t)(eol - p), "chunked", 7))
                    c->chunked = 1;
                else if ((size_t)(eol - p) > 11 && strncasecmp(p, "connection:", 11) == 0 &&
                         memmem(p, (size_t)(eol - p), "close", 5))
                    c->close_after = 1;
                p = eol + 2;
            }
            if (c->chunked) {
                memmove(c->rbuf, c->rbuf + hlen, c->rlen - hlen);
                c->rlen -= hlen;
                c->body_left = 0;
            } else {
                if (cl < 0)
                    return -1;
                c->body_left = cl - (long)(c->rlen - hlen);
                c->rlen = 0;
            }
        }
        if (c->chunked) {
            if (c->rlen >= 5 && memcmp(c->rbuf + c->rlen - 5, "0\r\n\r\n", 5) == 0) {
                c->state = 2;
                c->rlen = 0;
                return 1;
            }
            continue;
        }
        if (c->body_left == 0) {
            c->state = 2;
            return 1;
        }
        if (c->body_left < 0)
            return -1;
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint32_t *v, size_t n, double p) {
    if (n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i];
}

static int run_rate(double rate, double seconds, int nconns, double warmup, int closing) {
    conn_t *cs = calloc((size_t)nconns, sizeof *cs);
    int *freelist = malloc(sizeof(int) * (size_t)nconns);
    int nfree = 0;
    for (int i = 0; i < nconns; i++) {
        cs[i].fd = -1;
        if (conn_open(&cs[i], i) != 0)
            die("connect");
    }
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &tev);

    size_t total = (size_t)(rate * (warmup + seconds));
    size_t cap = (size_t)(rate * seconds) + 16;
    uint32_t *lat = malloc(sizeof(uint32_t) * cap);
    size_t nlat = 0;
    /* Pending requests (due but no free connection): FIFO of due times. */
    int64_t *queue = malloc(sizeof(int64_t) * (total + 1));
    size_t qh = 0, qt = 0;
    size_t issued = 0, errors = 0, done = 0, max_queue = 0;
    /* Outcomes: by status class (1xx and 6xx+ are "other"), broken connection, no answer. */
    size_t by_class[6] = {0}, failed_io = 0, unanswered = 0, connect_errors = 0;
    double interval_ns = 1e9 / rate;
    int64_t t0 = 0, rec_from = 0;
    int started = 0, established = 0;
    struct epoll_event evs[256];

    for (;;) {
        int64_t now = now_ns();
        if (started) {
            while (issued < total && t0 + (int64_t)(issued * interval_ns) <= now) {
                queue[qt++] = t0 + (int64_t)(issued * interval_ns);
                issued++;
            }
            if (qt - qh > max_queue)
                max_queue = qt - qh;
            while (qh < qt && nfree > 0) {
                int i = freelist[--nfree];
                cs[i].due_ns = queue[qh++];
                if (conn_send(&cs[i]) != 0) {
                    errors++;
                    failed_io++;
                    if (cs[i].due_ns >= rec_from && nlat < cap)
                        lat[nlat++] = (uint32_t)((now_ns() - cs[i].due_ns) / 1000);
                    conn_close(&cs[i]);
                    conn_open(&cs[i], i);
                }
            }
            if (issued == total && qh == qt && nfree == nconns)
                break;
            if (now > t0 + (int64_t)((warmup + seconds + 10) * 1e9)) {
                /* Responses still missing 10 s after the last was due: count them and stop. */
                for (int i = 0; i < nconns; i++)
                    unanswered += cs[i].state == 3;
                unanswered += qt - qh;
                errors += unanswered;
                break;
            }
            if (issued < total) {
                int64_t next = t0 + (int64_t)(issued * interval_ns);
                struct itimerspec its = {0};
                its.it_value.tv_sec = next / 1000000000LL;
                its.it_value.tv_nsec = next % 1000000000LL;
                timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
            }
        }
        int n = epoll_wait(g_ep, evs, 256, started ? 1000 : 5000);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (n == 0 && !started)
            die("timeout connecting");
        for (int k = 0; k < n; k++) {
            uint32_t idx = evs[k].data.u32;
            if (idx == UINT32_MAX) {
                uint64_t x;
                (void)!read(tfd, &x, sizeof x);
                continue;
            }
            conn_t *c = &cs[idx];
            if (c->state == 1) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err != 0) {
                    errors++;
                    connect_errors++;
                    if (!started || connect_errors > 1000) {
                        fprintf(stderr, "ptload: connect: %s\n", strerror(err));
                        exit(2);
                    }
                    conn_close(c);
                    conn_open(c, (int)idx);
                    continue;
                }
                c->state = 2;
                want(c, (int)idx, EPOLLIN);
                freelist[nfree++] = (int)idx;
                if (!started && ++established == nconns) {
                    started = 1;
                    t0 = now_ns();
                    rec_from = t0 + (int64_t)(warmup * 1e9);
                }
                continue;
            }
            if (c->state != 3) {
                /* Readable while idle: the server closed it (or sent garbage). Reopen. */
                for (int j = 0; j < nfree; j++)
                    if (freelist[j] == (int)idx) {
                        freelist[j] = freelist[--nfree];
                        break;
                    }
                conn_close(c);
                conn_open(c, (int)idx);
                continue;
            }
            int r = conn_read(c);
            if (r == 0)
                continue;
            int64_t t = now_ns();
            if (c->due_ns >= rec_from && nlat < cap)
                lat[nlat++] = (uint32_t)((t - c->due_ns) / 1000);
            if (r < 0) {
                errors++;
                failed_io++;
                conn_close(c);
                conn_open(c, (int)idx);
                continue;
            }
            int cls = c->status >= 100 && c->status < 600 ? c->status / 100 : 0;
            by_class[cls == 1 ? 0 : cls]++;
            if (cls == 2)
                done++;
            else
                errors++;
            if (closing || c->close_after) {
                /* Back on the free list once the new connection is established. */
                conn_close(c);
                if (conn_open(c, (int)idx) != 0)
                    die("connect");
                continue;
            }
            freelist[nfree++] = (int)idx;
        }
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    qsort(lat, nlat, sizeof *lat, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < nlat; i++)
        sum += lat[i];
    printf("{\"target_rps\": %.0f, \"conns\": %d, \"requests\": %zu, \"completed\": %zu, "
           "\"errors\": %zu, \"achieved_rps\": %.1f, \"recorded\": %zu, \"max_queue\": %zu, "
           "\"mean_us\": %.1f, \"p50_us\": %.0f, \"p90_us\": %.0f, \"p99_us\": %.0f, "
           "\"p999_us\": %.0f, \"max_us\": %.0f, \"status_2xx\": %zu, \"status_3xx\": %zu, "
           "\"status_4xx\": %zu, \"status_5xx\": %zu, \"status_other\": %zu, "
           "\"failed_io\": %zu, \"unanswered\": %zu, \"connect_errors\": %zu}\n",
           rate, nconns, issued, done, errors, (double)done / elapsed, nlat, max_queue,
           nlat ? sum / (double)nlat : 0.0, pct(lat, nlat, 50), pct(lat, nlat, 90),
           pct(lat, nlat, 99), pct(lat, nlat, 99.9), nlat ? (double)lat[nlat - 1] : 0.0,
           by_class[2], by_class[3], by_class[4], by_class[5], by_class[0], failed_io, unanswered,
           connect_errors);
    return errors ? 1 : 0;
}

static int run_idle(int n) {
    conn_t *cs = calloc((size_t)n, sizeof *cs);
    if (!cs)
        die("calloc");
    struct epoll_event evs[256];
    int opened = 0, inflight = 0, ok = 0, failed = 0;
    char line[64];

    /* Phase 1: establish N connections, at most MAX_INFLIGHT handshakes at once. */
    while (ok + failed < n) {
        while (opened < n && inflight < MAX_INFLIGHT) {
            if (conn_open(&cs[opened], opened) != 0) {
                failed++;
                cs[opened].fd = -1;
            } else {
                inflight++;
            }
            opened++;
        }
        int k = epoll_wait(g_ep, evs, 256, 10000);
        if (k <= 0) {
            fprintf(stderr, "ptload idle: connect stalled at %d/%d\n", ok, n);
            return 2;
        }
        for (int j = 0; j < k; j++) {
            conn_t *c = &cs[evs[j].data.u32];
            if (c->state != 1)
                continue;
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            inflight--;
            if (err) {
                failed++;
                conn_close(c);
            } else {
                ok++;
                c->state = 2;
                /* Watch for nothing while idle: no wakeups, no reads. */
                want(c, (int)evs[j].data.u32, 0);
            }
        }
    }
    printf("connected %d %d\n", ok, failed);
    fflush(stdout);

    if (!fgets(line, sizeof line, stdin) || strncmp(line, "request", 7) != 0)
        return 0;

    /* Phase 2: one request on every open connection, MAX_INFLIGHT at a time. */
    int next = 0, rok = 0, rfail = 0;
    inflight = 0;
    while (next < n || inflight > 0) {
        while (next < n && inflight < MAX_REQ_INFLIGHT) {
            conn_t *c = &cs[next];
            if (c->state == 2) {
                if (conn_send(c) == 0) {
                    want(c, next, EPOLLIN);
                    inflight++;
                } else {
                    rfail++;
                    conn_close(c);
                }
            }
            next++;
        }
        int k = epoll_wait(g_ep, evs, 256, 10000);
        if (k <= 0) {
            fprintf(stderr, "ptload idle: requests stalled (%d in flight)\n", inflight);
            return 2;
        }
        for (int j = 0; j < k; j++) {
            uint32_t idx = evs[j].data.u32;
            conn_t *c = &cs[idx];
            if (c->state != 3)
                continue;
            int r = conn_read(c);
            if (r == 0)
                continue;
            inflight--;
            if (r < 0 || c->status < 200 || c->status > 299) {
                rfail++;
                conn_close(c);
            } else {
                rok++;
                want(c, (int)idx, 0);
            }
        }
    }
    printf("requested %d %d\n", rok, rfail);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) && strncmp(line, "close", 5) != 0) {
    }
    return 0;
}

/* ---- abuse modes (bench/suite_abuse.py) ------------------------------------------------ */

#define CTL_ID (UINT32_MAX - 1) /* epoll tag of stdin, the driver's control channel */
#define SLOW_TICK_NS 100000000LL

typedef struct {
    int fd;
    int state;        /* 0 closed, 1 connecting, 2 connected */
    int answered;     /* a status line arrived */
    int status;
    size_t off;       /* pipeline: bytes of the request stream written */
    long long got;    /* bytes read */
    int hlen;
    char head[16];    /* the first bytes of the response: "HTTP/1.1 200" */
} aconn_t;

static void ctl_watch(void) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = CTL_ID};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, 0, &ev) != 0)
        die("epoll_ctl(stdin): stdin must be a pipe");
}

/* stdin is readable: 1 when it says "close" or has ended. */
static int ctl_close(void) {
    char buf[256];
    ssize_t n = read(0, buf, sizeof buf - 1);
    if (n < 0)
        return errno != EAGAIN && errno != EINTR;
    if (n == 0)
        return 1;
    buf[n] = 0;
    return strstr(buf, "close") != NULL;
}

/* Starts a non-blocking connect; 0 or -errno. rcvbuf > 0 shrinks the receive buffer first, so
 * that responses the client does not read pile up in the server, not in this socket. */
static int a_connect(aconn_t *c, uint32_t idx, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    c->fd = fd;
    c->state = 1;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLRDHUP, .data.u32 = idx};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll_ctl");
    return 0;
}

static void a_close(aconn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = 0;
}

/* The connect finished (EPOLLOUT or an error): 0 when up, else the socket error. */
static int a_connected(aconn_t *c) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        err = errno;
    if (err == 0)
        c->state = 2;
    return err;
}

static void a_want(aconn_t *c, uint32_t idx, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u32 = idx};
    epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Keeps the first bytes of a response and parses the status once there are enough. */
static void a_head(aconn_t *c, const char *p, ssize_t n) {
    c->got += n;
    if (c->answered)
        return;
    while (n > 0 && c->hlen < (int)sizeof c->head - 1) {
        c->head[c->hlen++] = *p++;
        n--;
    }
    if (c->hlen >= 12) {
        c->answered = 1;
        c->status = memcmp(c->head, "HTTP/1.", 7) == 0 ? atoi(c->head + 9) : 0;
    }
}

static int run_pipeline(int n, long reqs, int rcvbuf) {
    aconn_t *cs = calloc((size_t)n, sizeof *cs);
    size_t total = g_req_len * (size_t)reqs;
    char *stream = malloc(total);
    if (!cs || !stream)
        die("malloc");
    for (long i = 0; i < reqs; i++)
        memcpy(stream + (size_t)i * g_req_len, g_req, g_req_len);
    int opened = 0, inflight = 0, up = 0, failed = 0, reported = 0, peer_closed = 0;
    struct epoll_event evs[256];
    ctl_watch();
    for (;;) {
        while (opened < n && inflight < MAX_INFLIGHT) {
            cs[opened].fd = -1;
            if (a_connect(&cs[opened], (uint32_t)opened, rcvbuf) != 0)
                failed++;
            else
                inflight++;
            opened++;
        }
        if (!reported && up + failed == n) {
            printf("connected %d %d\n", up, failed);
            fflush(stdout);
            reported = 1;
        }
        int k = epoll_wait(g_ep, evs, 256, 1000);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int j = 0; j < k; j++) {
            uint32_t idx = evs[j].data.u32;
            if (idx == CTL_ID) {
                if (!ctl_close())
                    continue;
                long long written = 0;
                int complete = 0;
                for (int i = 0; i < n; i++) {
                    written += (long long)(cs[i].off / g_req_len);
                    complete += cs[i].off == total;
                }
                printf("{\"conns\": %d, \"connected\": %d, \"connect_failed\": %d, "
                       "\"requests_per_conn\": %ld, \"requests_written\": %lld, "
                       "\"conns_all_written\": %d, \"closed_by_server\": %d}\n",
                       n, up, failed, reqs, written, complete, peer_closed);
                return 0; /* exit closes every socket */
            }
            aconn_t *c = &cs[idx];
            if (c->state == 1) {
                inflight--;
                if (a_connected(c) != 0) {
                    failed++;
                    a_close(c);
                    continue;
                }
                up++;
            }
            if (c->state != 2)
                continue;
            if (evs[j].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                peer_closed++;
                a_close(c);
                continue;
            }
            while (c->off < total) {
                ssize_t w = send(c->fd, stream + c->off, total - c->off, MSG_NOSIGNAL);
                if (w > 0) {
                    c->off += (size_t)w;
                } else {
                    if (w < 0 && (errno == EAGAIN || errno == EINTR))
                        break;
                    peer_closed++;
                    a_close(c);
                    break;
                }
            }
            if (c->state == 2 && c->off == total)
                a_want(c, idx, EPOLLRDHUP); /* all written: only watch for the server's close */
        }
    }
}

static int run_slow(int n, long bps, int rcvbuf) {
    aconn_t *cs = calloc((size_t)n, sizeof *cs);
    if (!cs)
        die("calloc");
    int opened = 0, inflight = 0, up = 0, failed = 0, reported = 0, peer_closed = 0;
    struct epoll_event evs[256];
    char buf[65536];
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {0, SLOW_TICK_NS}, .it_value = {0, SLOW_TICK_NS}};
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (tfd < 0 || epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &tev) != 0)
        die("timerfd");
    timerfd_settime(tfd, 0, &its, NULL);
    long quota = bps / 10;
    ctl_watch();
    for (;;) {
        while (opened < n && inflight < MAX_INFLIGHT) {
            cs[opened].fd = -1;
            if (a_connect(&cs[opened], (uint32_t)opened, rcvbuf) != 0)
                failed++;
            else
                inflight++;
            opened++;
        }
        if (!reported && up + failed == n) {
            printf("connected %d %d\n", up, failed);
            fflush(stdout);
            reported = 1;
        }
        int k = epoll_wait(g_ep, evs, 256, 1000);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int j = 0; j < k; j++) {
            uint32_t idx = evs[j].data.u32;
            if (idx == CTL_ID) {
                if (!ctl_close())
                    continue;
                long long got = 0;
                int ok = 0, answered = 0;
                for (int i = 0; i < n; i++) {
                    got += cs[i].got;
                    answered += cs[i].answered;
                    ok += cs[i].answered && cs[i].status >= 200 && cs[i].status < 300;
                }
                printf("{\"conns\": %d, \"connected\": %d, \"connect_failed\": %d, "
                       "\"read_bps\": %ld, \"bytes_read\": %lld, \"answered\": %d, "
                       "\"status_2xx\": %d, \"closed_by_server\": %d}\n",
                       n, up, failed, bps, got, answered, ok, peer_closed);
                return 0;
            }
            if (idx == UINT32_MAX) {
                uint64_t x;
                (void)!read(tfd, &x, sizeof x);
                if (quota <= 0)
                    continue;
                for (int i = 0; i < n; i++) {
                    aconn_t *c = &cs[i];
                    long left = quota;
                    while (c->state == 2 && left > 0) {
                        ssize_t r = recv(c->fd, buf, left < (long)sizeof buf ? (size_t)left
                                                                              : sizeof buf, 0);
                        if (r > 0) {
                            a_head(c, buf, r);
                            left -= r;
                        } else {
                            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                break;
                            peer_closed++;
                            a_close(c);
                        }
                    }
                }
                continue;
            }
            aconn_t *c = &cs[idx];
            if (c->state == 1) {
                inflight--;
                if (a_connected(c) != 0) {
                    failed++;
                    a_close(c);
                    continue;
                }
                up++;
                if (send(c->fd, g_req, g_req_len, MSG_NOSIGNAL) != (ssize_t)g_req_len) {
                    peer_closed++;
                    a_close(c);
                    continue;
                }
                a_want(c, idx, EPOLLRDHUP); /* reads happen on the clock, not on arrival */
                continue;
            }
            if (c->state == 2 && (evs[j].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                peer_closed++;
                a_close(c);
            }
        }
    }
}

static int run_flood(int n) {
    aconn_t *cs = calloc((size_t)n, sizeof *cs);
    uint32_t *shed_ms = malloc(sizeof(uint32_t) * (size_t)(n + 1));
    uint32_t *ans_ms = malloc(sizeof(uint32_t) * (size_t)(n + 1));
    if (!cs || !shed_ms || !ans_ms)
        die("malloc");
    size_t nshed = 0, nans = 0;
    int connected = 0, refused = 0, timed_out = 0, other_err = 0, after_answer = 0;
    int by_class[6] = {0};
    struct epoll_event evs[256];
    char buf[16384];
    int64_t t0 = now_ns();
    for (int i = 0; i < n; i++) {
        cs[i].fd = -1;
        int rc = a_connect(&cs[i], (uint32_t)i, 0);
        if (rc == -EMFILE || rc == -ENFILE) {
            fprintf(stderr, "ptload flood: out of descriptors at %d (raise ulimit -n)\n", i);
            return 2;
        }
        if (rc == -ECONNREFUSED)
            refused++;
        else if (rc != 0)
            other_err++;
    }
    printf("burst %d\n", n);
    fflush(stdout);
    ctl_watch();
    for (;;) {
        int k = epoll_wait(g_ep, evs, 256, 1000);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int j = 0; j < k; j++) {
            uint32_t idx = evs[j].data.u32;
            if (idx == CTL_ID) {
                if (!ctl_close())
                    continue;
                int waiting_answer = 0, waiting_connect = 0;
                for (int i = 0; i < n; i++) {
                    waiting_connect += cs[i].state == 1;
                    waiting_answer += cs[i].state == 2 && !cs[i].answered;
                }
                qsort(shed_ms, nshed, sizeof *shed_ms, cmp_u32);
                qsort(ans_ms, nans, sizeof *ans_ms, cmp_u32);
                printf("{\"conns\": %d, \"connected\": %d, \"answered\": %zu, "
                       "\"status_2xx\": %d, \"status_4xx\": %d, \"status_5xx\": %d, "
                       "\"status_other\": %d, \"answer_ms_p50\": %.0f, \"answer_ms_max\": %.0f, "
                       "\"shed\": %zu, \"shed_ms_p50\": %.0f, \"shed_ms_p90\": %.0f, "
                       "\"shed_ms_max\": %.0f, \"waiting_answer\": %d, \"waiting_connect\": %d, "
                       "\"connect_refused\": %d, \"connect_timed_out\": %d, "
                       "\"connect_other_error\": %d, \"closed_after_answer\": %d}\n",
                       n, connected, nans, by_class[2], by_class[4], by_class[5],
                       by_class[0] + by_class[1] + by_class[3], pct(ans_ms, nans, 50),
                       nans ? (double)ans_ms[nans - 1] : 0.0, nshed, pct(shed_ms, nshed, 50),
                       pct(shed_ms, nshed, 90), nshed ? (double)shed_ms[nshed - 1] : 0.0,
                       waiting_answer, waiting_connect, refused, timed_out, other_err,
                       after_answer);
                return 0;
            }
            aconn_t *c = &cs[idx];
            if (c->state == 1) {
                int err = a_connected(c);
                if (err != 0) {
                    if (err == ECONNREFUSED)
                        refused++;
                    else if (err == ETIMEDOUT)
                        timed_out++;
                    else
                        other_err++;
                    a_close(c);
                    continue;
                }
                connected++;
                if (send(c->fd, g_req, g_req_len, MSG_NOSIGNAL) != (ssize_t)g_req_len) {
                    shed_ms[nshed++] = (uint32_t)((now_ns() - t0) / 1000000);
                    a_close(c);
                    continue;
                }
                a_want(c, idx, EPOLLIN | EPOLLRDHUP);
                continue;
            }
            if (c->state != 2)
                continue;
            for (;;) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r > 0) {
                    int was = c->answered;
                    a_head(c, buf, r);
                    if (!was && c->answered) {
                        int cls = c->status >= 100 && c->status < 600 ? c->status / 100 : 0;
                        by_class[cls]++;
                        ans_ms[nans++] = (uint32_t)((now_ns() - t0) / 1000000);
                    }
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                /* The server closed or reset it: shed, unless it answered first. */
                if (c->answered)
                    after_answer++;
                else
                    shed_ms[nshed++] = (uint32_t)((now_ns() - t0) / 1000000);
                a_close(c);
                break;
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: ptload rate HOST PORT PATH RATE SECONDS CONNS [WARMUP_S [close]]\n"
                        "       ptload idle HOST PORT PATH N\n"
                        "       ptload pipeline HOST PORT PATH N REQS RCVBUF\n"
                        "       ptload slow HOST PORT PATH N READ_BPS RCVBUF\n"
                        "       ptload flood HOST PORT PATH N\n");
        return 2;
    }
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &g_addr.sin_addr) != 1) {
        fprintf(stderr, "ptload: bad address %s\n", argv[2]);
        return 2;
    }
    int closing = strcmp(argv[1], "rate") == 0 && argc > 9 && strcmp(argv[9], "close") == 0;
    g_req_len = (size_t)snprintf(g_req, sizeof g_req,
                                 "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: ptload\r\n%s\r\n",
                                 argv[4], argv[2], argv[3],
                                 closing ? "Connection: close\r\n" : "");
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0)
        die("epoll_create1");
    if (strcmp(argv[1], "rate") == 0 && argc >= 8)
        return run_rate(atof(argv[5]), atof(argv[6]), atoi(argv[7]),
                        argc > 8 ? atof(argv[8]) : 1.0, closing);
    if (strcmp(argv[1], "idle") == 0)
        return run_idle(atoi(argv[5]));
    if (strcmp(argv[1], "pipeline") == 0 && argc >= 8)
        return run_pipeline(atoi(argv[5]), atol(argv[6]), atoi(argv[7]));
    if (strcmp(argv[1], "slow") == 0 && argc >= 8)
        return run_slow(atoi(argv[5]), atol(argv[6]), atoi(argv[7]));
    if (strcmp(argv[1], "flood") == 0)
        return run_flood(atoi(argv[5]));
    fprintf(stderr, "ptload: unknown mode or missing arguments\n");
    return 2;
}
