#include "proxy/address.h"

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

int pt_addr_parse(pt_addr_t *out, const char *ip, unsigned port)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, ip, &out->sin.sin_addr) == 1) {
        out->sin.sin_family = AF_INET;
        out->sin.sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &out->sin6.sin6_addr) == 1) {
        out->sin6.sin6_family = AF_INET6;
        out->sin6.sin6_port = htons((uint16_t)port);
        return 0;
    }
    return -1;
}

/* Dotted quad without inet_ntop: glibc formats IPv4 through sprintf, and the connection
 * manager formats the client address on every request (x-forwarded-for). */
static void format_ipv4(const unsigned char *b, char *out, size_t len)
{
    char tmp[16];
    char *p = tmp;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100) {
            *p++ = (char)('0' + v / 100);
            v %= 100;
            *p++ = (char)('0' + v / 10);
        } else if (v >= 10) {
            *p++ = (char)('0' + v / 10);
        }
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
    size_t n = (size_t)(p - tmp); /* includes the NUL */
    if (len == 0)
        return;
    if (n > len) {
        n = len;
        tmp[n - 1] = '\0';
    }
    memcpy(out, tmp, n);
}

/* Interned Unix socket paths: written on the main thread before the count that publishes
 * them; read by any thread below the count. */
static char *pipe_paths[PT_ADDR_MAX_PIPES];
static _Atomic uint32_t npipe_paths;

int pt_addr_parse_pipe(pt_addr_t *out, const char *path)
{
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -1;
    memset(out, 0, sizeof(*out));
    out->un.family = AF_UNIX;
    uint32_t count = atomic_load_explicit(&npipe_paths, memory_order_acquire);
    for (uint32_t i = 0; i < count; i++)
        if (strcmp(pipe_paths[i], path) == 0) {
            out->un.path_id = i + 1;
            return 0;
        }
    if (count == PT_ADDR_MAX_PIPES || (pipe_paths[count] = strdup(path)) == NULL)
        return -1;
    atomic_store_explicit(&npipe_paths, count + 1, memory_order_release);
    out->un.path_id = count + 1;
    return 0;
}

const char *pt_addr_pipe_path(const pt_addr_t *a)
{
    if (a->sa.sa_family != AF_UNIX || a->un.path_id == 0 ||
        a->un.path_id > atomic_load_explicit(&npipe_paths, memory_order_acquire))
        return NULL;
    return pipe_paths[a->un.path_id - 1];
}

socklen_t pt_addr_sockaddr(const pt_addr_t *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->sa.sa_family != AF_UNIX) {
        memcpy(ss, a, pt_addr_len(a));
        return pt_addr_len(a);
    }
    const char *path = pt_addr_pipe_path(a);
    if (path == NULL)
        return 0;
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    un->sun_family = AF_UNIX;
    size_t n = strlen(path);
    memcpy(un->sun_path, path, n);
    if (path[0] == '@') /* abstract: a leading NUL, and the length says where it ends */
        un->sun_path[0] = '\0';
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));
}

void pt_addr_format_ip(const pt_addr_t *a, char *out, size_t len)
{
    if (a->sa.sa_family == AF_UNIX) {
        const char *path = pt_addr_pipe_path(a);
        snprintf(out, len, "%s", path != NULL ? path : "-");
        return;
    }
    if (a->sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &a->sin6.sin6_addr, out, (socklen_t)len);
    else if (a->sa.sa_family == AF_INET)
        format_ipv4((const unsigned char *)&a->sin.sin_addr, out, len);
    else
        snprintf(out, len, "-");
}

unsigned pt_addr_port(const pt_addr_t *a)
{
    if (a->sa.sa_family == AF_UNIX)
        return 0;
    return a->sa.sa_family == AF_INET6 ? ntohs(a->sin6.sin6_port) : ntohs(a->sin.sin_port);
}

void pt_addr_format(const pt_addr_t *a, char *out, size_t len)
{
    if (a->sa.sa_family == AF_UNIX) { /* the path, as Envoy prints a pipe */
        pt_addr_format_ip(a, out, len);
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    pt_addr_format_ip(a, ip, sizeof(ip));
    if (a->sa.sa_family == AF_INET6)
        snprintf(out, len, "[%s]:%u", ip, pt_addr_port(a));
    else
        snprintf(out, len, "%s:%u", ip, pt_addr_port(a));
}

void pt_addr_stat_name(const pt_addr_t *a, char *out, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    pt_addr_format_ip(a, ip, sizeof(ip));
    if (a->sa.sa_family == AF_INET6)
        snprintf(out, len, "[%s]_%u", ip, pt_addr_port(a));
    else
        snprintf(out, len, "%s_%u", ip, pt_addr_port(a));
}

int pt_addr_equal(const pt_addr_t *a, const pt_addr_t *b)
{
    if (a->sa.sa_family != b->sa.sa_family)
        return 0;
    if (a->sa.sa_family == AF_UNIX)
        return a->un.path_id == b->un.path_id;
    if (a->sa.sa_family == AF_INET)
        return a->sin.sin_port == b->sin.sin_port &&
               a->sin.sin_addr.s_addr == b->sin.sin_addr.s_addr;
    return a->sin6.sin6_port == b->sin6.sin6_port &&
           memcmp(&a->sin6.sin6_addr, &b->sin6.sin6_addr, sizeof(struct in6_addr)) == 0;
}

int pt_cidr_parse(pt_cidr_t *out, const char *ip, unsigned prefix_len)
{
    if (pt_addr_parse(&out->addr, ip, 0) != 0)
        return -1;
    unsigned max = out->addr.sa.sa_family == AF_INET ? 32 : 128;
    if (prefix_len > max)
        return -1;
    out->prefix_len = prefix_len;
    return 0;
}

/* The 16 bytes of an address in IPv6 form (IPv4 as ::ffff:a.b.c.d). */
static void as_v6(const pt_addr_t *a, unsigned char out[16])
{
    if (a->sa.sa_family == AF_INET6) {
        memcpy(out, &a->sin6.sin6_addr, 16);
    } else {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a->sin.sin_addr, 4);
    }
}

int pt_cidr_match(const pt_cidr_t *c, const pt_addr_t *a)
{
    if (a->sa.sa_family != AF_INET && a->sa.sa_family != AF_INET6)
        return 0;
    unsigned char x[16], y[16];
    as_v6(&c->addr, x);
    as_v6(a, y);
    unsigned bits = c->prefix_len + (c->addr.sa.sa_family == AF_INET ? 96 : 0);
    unsigned full = bits / 8, rem = bits % 8;
    if (memcmp(x, y, full) != 0)
        return 0;
    if (rem == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rem));
    return (x[full] & mask) == (y[full] & mask);
}

int pt_addr_is_loopback(const pt_addr_t *a)
{
    if (a->sa.sa_family == AF_INET)
        return (ntohl(a->sin.sin_addr.s_addr) >> 24) == 127;
    if (a->sa.sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&a->sin6.sin6_addr) ||
               (IN6_IS_ADDR_V4MAPPED(&a->sin6.sin6_addr) && a->sin6.sin6_addr.s6_addr[12] == 127);
    return 0;
}

int pt_addr_is_any(const pt_addr_t *a)
{
    if (a->sa.sa_family == AF_INET)
        return a->sin.sin_addr.s_addr == htonl(INADDR_ANY);
    if (a->sa.sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&a->sin6.sin6_addr);
    return 0;
}

int pt_addr_is_internal(const pt_addr_t *a)
{
    if (pt_addr_is_loopback(a))
        return 1;
    if (a->sa.sa_family == AF_INET) {
        uint32_t ip = ntohl(a->sin.sin_addr.s_addr);
        return (ip >> 24) == 10 || (ip >> 20) == ((172u << 4) | 1) ||
               (ip >> 16) == ((192u << 8) | 168);
    }
    if (a->sa.sa_family == AF_INET6)
        return (a->sin6.sin6_addr.s6_addr[0] & 0xfe) == 0xfc;
    return 0;
}
