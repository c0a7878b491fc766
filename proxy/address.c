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

void pt_addr_format_ip(const pt_addr_t *a, char *out, size_t len)
{
    if (a->sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &a->sin6.sin6_addr, out, (socklen_t)len);
    else if (a->sa.sa_family == AF_INET)
        inet_ntop(AF_INET, &a->sin.sin_addr, out, (socklen_t)len);
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
