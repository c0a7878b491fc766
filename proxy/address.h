/* Socket addresses: one compact union for IPv4/IPv6 (28 bytes, kept per connection) and
 * the parsing and formatting the config, logs and stats need. */
#ifndef PT_ADDRESS_H
#define PT_ADDRESS_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef union pt_addr {
    struct sockaddr sa;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    /* AF_UNIX (Envoy's `pipe`): the path by number in a table of interned paths
     * (pt_addr_pipe_path), since a sockaddr_un would make every address petrel keeps four
     * times larger. path_id 0: unnamed (what getsockname gives a client socket). */
    struct {
        sa_family_t family;
        uint16_t unused;
        uint32_t path_id;
    } un;
} pt_addr_t;

#define PT_ADDR_STRLEN 64 /* "[ffff:...:ffff]:65535" fits */

static inline socklen_t pt_addr_len(const pt_addr_t *a)
{
    return a->sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Numeric IP only (no DNS): returns 0 or -1 when `ip` is not an IPv4/IPv6 literal. */
int pt_addr_parse(pt_addr_t *out, const char *ip, unsigned port);
/* A Unix socket path ("@name": Linux's abstract namespace). Main thread (the paths are
 * interned for the process's life; at most PT_ADDR_MAX_PIPES distinct ones). 0, or -1 when
 * the path is empty, too long for a sockaddr_un, or the table is full. */
#define PT_ADDR_MAX_PIPES 4096
int pt_addr_parse_pipe(pt_addr_t *out, const char *path);
/* The path of an AF_UNIX address, or NULL (unnamed, or not AF_UNIX). Any thread. */
const char *pt_addr_pipe_path(const pt_addr_t *a);
/* The sockaddr to connect to or bind: *ss filled, its length returned (0: none). */
socklen_t pt_addr_sockaddr(const pt_addr_t *a, struct sockaddr_storage *ss);
/* "10.0.0.1:80" or "[::1]:80". */
void pt_addr_format(const pt_addr_t *a, char *out, size_t len);
/* The IP alone, "10.0.0.1" or "::1". */
void pt_addr_format_ip(const pt_addr_t *a, char *out, size_t len);
unsigned pt_addr_port(const pt_addr_t *a);
/* Envoy's stat-name form of a listener address: "0.0.0.0_10000", "[::1]_10000". */
void pt_addr_stat_name(const pt_addr_t *a, char *out, size_t len);
int pt_addr_equal(const pt_addr_t *a, const pt_addr_t *b);

/* envoy.config.core.v3.CidrRange. An IPv4 address also matches an IPv4-mapped IPv6 range
 * and the other way round. */
typedef struct pt_cidr {
    pt_addr_t addr;
    unsigned prefix_len;
} pt_cidr_t;

int pt_cidr_parse(pt_cidr_t *out, const char *ip, unsigned prefix_len);
int pt_cidr_match(const pt_cidr_t *c, const pt_addr_t *a);
/* Loopback (127/8, ::1). */
int pt_addr_is_loopback(const pt_addr_t *a);
/* 0.0.0.0 or :: (a listener bound to every address). */
int pt_addr_is_any(const pt_addr_t *a);
/* Envoy's classic internal addresses: loopback, RFC 1918, RFC 4193 (fc00::/7). */
int pt_addr_is_internal(const pt_addr_t *a);

#endif
