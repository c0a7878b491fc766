/* grpc_echo: a minimal, single-threaded h2c (prior knowledge) server on libnghttp2 for the h2
 * bench suite (bench/suite_h2.py). Every request whose content-type is application/grpc gets,
 * once its body has ended, a fixed gRPC answer: HEADERS (:status 200, content-type
 * application/grpc), one DATA frame with one length-prefixed message (RESP_LEN bytes of
 * payload), then trailers (grpc-status: 0, grpc-message: OK). Any other request gets
 * 200 "ok\n". The request body is read and dropped (nghttp2 returns its window itself).
 *
 *   grpc_echo PORT [MAX_CONCURRENT_STREAMS]       (listens on 127.0.0.1; default 1024 streams)
 *
 * Built at bench time: cc -O2 -o grpc_echo grpc_echo.c $(pkg-config --cflags --libs libnghttp2)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define RESP_LEN 32
#define RBUF     65536

struct conn {
    int fd;
    nghttp2_session *s;
    uint8_t *out; /* bytes nghttp2 produced that the socket has not taken yet */
    size_t out_len, out_cap;
    int want_out; /* EPOLLOUT armed */
};

static int ep;
static uint8_t grpc_msg[5 + RESP_LEN];
static const uint8_t plain_body[] = "ok\n";

/* Stream user data: 1 = gRPC request, 2 = other; the answer's body is written from it. */
#define ST_GRPC  ((void *)1)
#define ST_PLAIN ((void *)2)

static void conn_close(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    nghttp2_session_del(c->s);
    free(c->out);
    free(c);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST && namelen == 12 &&
        memcmp(name, "content-type", 12) == 0 && valuelen >= 16 &&
        memcmp(value, "application/grpc", 16) == 0)
        nghttp2_session_set_stream_user_data(s, f->hd.stream_id, ST_GRPC);
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)ud;
    (void)src;
    int grpc = nghttp2_session_get_stream_user_data(s, sid) == ST_GRPC;
    const uint8_t *body = grpc ? grpc_msg : plain_body;
    size_t n = grpc ? sizeof grpc_msg : sizeof plain_body - 1;
    if (len < n)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* never: nghttp2 offers at least 16 KiB */
    memcpy(buf, body, n);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (grpc) {
        static const nghttp2_nv tr[] = {
            {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"grpc-message", (uint8_t *)"OK", 12, 2, NGHTTP2_NV_FLAG_NONE},
        };
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(s, sid, tr, 2) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    int32_t sid = f->hd.stream_id;
    if (!nghttp2_session_get_stream_user_data(s, sid))
        nghttp2_session_set_stream_user_data(s, sid, ST_PLAIN);
    int grpc = nghttp2_session_get_stream_user_data(s, sid) == ST_GRPC;
    static const nghttp2_nv grpc_hd[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
    };
    static const nghttp2_nv plain_hd[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-length", (uint8_t *)"3", 14, 1, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider dp = {.read_callback = read_body};
    if (grpc)
        nghttp2_submit_response(s, sid, grpc_hd, 2, &dp);
    else
        nghttp2_submit_response(s, sid, plain_hd, 3, &dp);
    return 0;
}

static int arm(struct conn *c, int want)
{
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
    return 0;
}

/* Hands nghttp2's output to the socket in batches of up to 64 KiB; keeps what the socket does
 * not take and waits for EPOLLOUT. 0, or -1 to close. */
static int flush(struct conn *c)
{
    for (;;) {
        int more = 1;
        while (c->out_len < 65536) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->s, &data);
            if (n < 0)
                return -1;
            if (n == 0) {
                more = 0;
                break;
            }
            if (c->out_len + (size_t)n > c->out_cap) {
                size_t cap = c->out_cap ? c->out_cap : 16384;
                while (cap < c->out_len + (size_t)n)
                    cap *= 2;
                uint8_t *p = realloc(c->out, cap);
                if (!p)
                    return -1;
                c->out = p;
                c->out_cap = cap;
            }
            memcpy(c->out + c->out_len, data, (size_t)n);
            c->out_len += (size_t)n;
        }
        while (c->out_len > 0) {
            ssize_t w = write(c->fd, c->out, c->out_len);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN)
                    return arm(c, 1);
                return -1;
            }
            memmove(c->out, c->out + w, c->out_len - (size_t)w);
            c->out_len -= (size_t)w;
        }
        if (!more)
            break;
    }
    arm(c, 0);
    if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: grpc_echo PORT [MAX_CONCURRENT_STREAMS]\n");
        return 2;
    }
    uint32_t max_streams = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1024;
    signal(SIGPIPE, SIG_IGN);
    grpc_msg[0] = 0;
    grpc_msg[1] = grpc_msg[2] = grpc_msg[3] = 0;
    grpc_msg[4] = RESP_LEN;
    for (int i = 0; i < RESP_LEN; i++)
        grpc_msg[5 + i] = (uint8_t)('a' + i % 26);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) {
        perror("grpc_echo: bind/listen");
        return 1;
    }
    ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams}};

    static uint8_t rbuf[RBUF];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            return 1;
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    nghttp2_session_server_new(&c->s, cbs, c);
                    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 1);
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                    if (flush(c) < 0)
                        conn_close(c);
                }
                continue;
            }
            int dead = 0;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (;;) {
                    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
                    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                        dead = 1;
                        break;
                    }
                    if (r < 0) {
                        if (errno == EINTR)
                            continue;
                        break;
                    }
                    if (nghttp2_session_mem_recv(c->s, rbuf, (size_t)r) < 0) {
                        dead = 1;
                        break;
                    }
                    if ((size_t)r < sizeof rbuf)
                        break;
                }
            }
            if (dead || flush(c) < 0)
                conn_close(c);
        }
    }
}
