#include "proxy/address.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

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

void pt_addr_format_ip(const pt_addr_t *a, char *out, size_t len)
{
    if (a->sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &a->sin6.sin6_addr, out, (socklen_t)len);
    else if (a->sa.sa_family == AF_INET)
        format_ipv4((const unsigned char *)&a->sin.sin_addr, out, len);
    else
        snprintf(out, len, "-");
}

unsigned pt_addr_port(const pt_addr_t *a)
{
    return a->sa.sa_family == AF_INET6 ? ntohs(a->sin6.sin6_port) : ntohs(a->sin.sin_port);
}

void pt_addr_format(const pt_addr_t *a, char *out, size_t len)
{
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
        return (ip >> 24) == 10 || (ip >> 20) == ((172u << 4) | 1) || (ip >> 16) == ((192u << 8) | 168);
    }
    if (a->sa.sa_family == AF_INET6)
        return (a->sin6.sin6_addr.s6_addr[0] & 0xfe) == 0xfc;
    return 0;
}
