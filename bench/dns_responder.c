/* A small authoritative DNS responder for bench/dns_refresh.py: cheap enough that the queries
 * of a 1,000-host refresh cost the two cores almost nothing, so what the bench sees is
 * petrel's own cost.
 *
 *   dns_responder same|changing
 *
 * Binds UDP 127.0.0.1 on a free port and prints the port on stdout. Answers an A query for
 * h<N>.petrel.test with 10.<1 + flip>.<N / 256 % 256>.<N % 256>, TTL 1: `same` keeps flip at
 * 0; `changing` flips it every second of wall time, so every host's address changes between
 * two refreshes a second apart. Other names get NXDOMAIN, other types an empty answer. A line
 * "count" on stdin prints the number of queries answered so far; end of stdin ends it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The question's name as dotted text; returns the offset after QNAME, or 0 if malformed. */
static size_t read_qname(const unsigned char *m, size_t len, char *out, size_t cap)
{
    size_t i = 12, o = 0;
    while (i < len && m[i] != 0) {
        size_t l = m[i++];
        if (l > 63 || i + l > len || o + l + 2 > cap)
            return 0;
        if (o > 0)
            out[o++] = '.';
        memcpy(out + o, m + i, l);
        o += l;
        i += l;
    }
    if (i >= len)
        return 0;
    out[o] = '\0';
    return i + 1;
}

/* N of "h<N>.petrel.test", or -1. */
static long host_index(const char *name)
{
    if (name[0] != 'h' && name[0] != 'H')
        return -1;
    char *end;
    long n = strtol(name + 1, &end, 10);
    if (end == name + 1 || strcasecmp(end, ".petrel.test") != 0 || n < 0)
        return -1;
    return n;
}

int main(int argc, char **argv)
{
    int changing = argc > 1 && strcmp(argv[1], "changing") == 0;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("dns_responder");
        return 1;
    }
    /* A refresh's queries arrive in a burst: room for all of them (SO_RCVBUFFORCE, as root,
     * goes past net.core.rmem_max), so none is dropped here. */
    int rcvbuf = 8 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    printf("%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    unsigned long answered = 0;
    struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    for (;;) {
        if (poll(pf, 2, -1) < 0)
            continue;
        if (pf[1].revents) {
            char line[64];
            if (fgets(line, sizeof(line), stdin) == NULL)
                return 0;
            printf("%lu\n", answered);
            fflush(stdout);
        }
        if (!(pf[0].revents & POLLIN))
            continue;
        unsigned char m[512];
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(fd, m, sizeof(m), 0, (struct sockaddr *)&from, &fl);
        if (n < 12 || (m[2] & 0x80) || m[4] != 0 || m[5] != 1)
            continue; /* not one question */
        char name[256];
        size_t q = read_qname(m, (size_t)n, name, sizeof(name));
        if (q == 0 || q + 4 > (size_t)n)
            continue;
        unsigned qtype = (unsigned)m[q] << 8 | m[q + 1];
        size_t end = q + 4; /* the question, echoed; anything after it (EDNS) is dropped */
        long idx = host_index(name);
        m[2] = (unsigned char)(0x84 | (m[2] & 0x79)); /* QR, AA, the opcode and RD kept */
        m[3] = idx < 0 ? 0x83 : 0x80;                  /* RA; NXDOMAIN for other names */
        memset(m + 6, 0, 6);                           /* no answer, authority, additional */
        if (idx >= 0 && qtype == 1) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            unsigned flip = changing ? (unsigned)(ts.tv_sec & 1) : 0;
            static const unsigned char rr[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4};
            memcpy(m + end, rr, sizeof(rr));
            m[end + 12] = 10;
            m[end + 13] = (unsigned char)(1 + flip);
            m[end + 14] = (unsigned char)(idx >> 8);
            m[end + 15] = (unsigned char)idx;
            end += 16;
            m[7] = 1;
        }
        sendto(fd, m, end, 0, (struct sockaddr *)&from, fl);
        answered++;
    }
}
