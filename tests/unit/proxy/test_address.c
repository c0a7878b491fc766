/* Unit tests for proxy/address: formatting of IPv4/IPv6 addresses (petrel formats IPv4
 * itself, so every octet value is compared with inet_ntop), truncation, and the
 * address:port and stat-name forms. */
#include "proxy/address.h"
#include "pt_test.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

static pt_addr_t v4(const char *ip, unsigned port)
{
    pt_addr_t a;
    memset(&a, 0, sizeof(a));
    a.sin.sin_family = AF_INET;
    a.sin.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &a.sin.sin_addr);
    return a;
}

static void test_ipv4_matches_inet_ntop(void)
{
    /* Every value in every octet position (the others vary too), against libc. */
    for (unsigned v = 0; v < 256; v++) {
        for (unsigned pos = 0; pos < 4; pos++) {
            pt_addr_t a;
            memset(&a, 0, sizeof(a));
            a.sin.sin_family = AF_INET;
            unsigned char *b = (unsigned char *)&a.sin.sin_addr;
            for (unsigned k = 0; k < 4; k++)
                b[k] = (unsigned char)(k == pos ? v : (v * 37 + k * 101) & 0xff);
            char want[INET_ADDRSTRLEN], got[INET6_ADDRSTRLEN];
            inet_ntop(AF_INET, &a.sin.sin_addr, want, sizeof(want));
            pt_addr_format_ip(&a, got, sizeof(got));
            PT_CHECK_STR(got, want);
        }
    }
    pt_addr_t a = v4("255.255.255.255", 0);
    char out[INET_ADDRSTRLEN];
    pt_addr_format_ip(&a, out, sizeof(out)); /* exactly 16 bytes with the NUL */
    PT_CHECK_STR(out, "255.255.255.255");
}

static void test_truncation(void)
{
    pt_addr_t a = v4("192.168.100.200", 80);
    char out[8];
    memset(out, 'x', sizeof(out));
    pt_addr_format_ip(&a, out, sizeof(out));
    PT_CHECK_STR(out, "192.168");
    char one[1] = {'x'};
    pt_addr_format_ip(&a, one, sizeof(one));
    PT_CHECK_INT(one[0], '\0');
}

static void test_forms(void)
{
    char out[PT_ADDR_STRLEN];
    pt_addr_t a = v4("10.0.0.1", 8080);
    pt_addr_format(&a, out, sizeof(out));
    PT_CHECK_STR(out, "10.0.0.1:8080");
    pt_addr_stat_name(&a, out, sizeof(out));
    PT_CHECK_STR(out, "10.0.0.1_8080");

    pt_addr_t b;
    memset(&b, 0, sizeof(b));
    b.sin6.sin6_family = AF_INET6;
    b.sin6.sin6_port = htons(443);
    inet_pton(AF_INET6, "fd00::1", &b.sin6.sin6_addr);
    pt_addr_format_ip(&b, out, sizeof(out));
    PT_CHECK_STR(out, "fd00::1");
    pt_addr_format(&b, out, sizeof(out));
    PT_CHECK_STR(out, "[fd00::1]:443");

    pt_addr_t none;
    memset(&none, 0, sizeof(none));
    pt_addr_format_ip(&none, out, sizeof(out));
    PT_CHECK_STR(out, "-");
}

static void test_is_any(void)
{
    pt_addr_t a = v4("0.0.0.0", 80), b = v4("127.0.0.1", 80);
    PT_CHECK(pt_addr_is_any(&a));
    PT_CHECK(!pt_addr_is_any(&b));
    pt_addr_t c;
    memset(&c, 0, sizeof(c));
    c.sin6.sin6_family = AF_INET6;
    PT_CHECK(pt_addr_is_any(&c)); /* :: */
    inet_pton(AF_INET6, "::1", &c.sin6.sin6_addr);
    PT_CHECK(!pt_addr_is_any(&c));
}

/* Unix socket paths (pipe): interned once, formatted as the path, compared by path, and
 * turned into the sockaddr_un to connect to (an abstract name starts with a NUL). */
static void test_pipes(void)
{
    pt_addr_t a, b, c, unnamed;
    PT_CHECK_INT(pt_addr_parse_pipe(&a, "/run/agent.sock"), 0);
    PT_CHECK_INT(pt_addr_parse_pipe(&b, "/run/agent.sock"), 0);
    PT_CHECK_INT(pt_addr_parse_pipe(&c, "@xds"), 0);
    PT_CHECK(pt_addr_equal(&a, &b));
    PT_CHECK(!pt_addr_equal(&a, &c));
    PT_CHECK(memcmp(&a, &b, sizeof(a)) == 0); /* hashed by their bytes: the same bytes */
    char out[PT_ADDR_STRLEN];
    pt_addr_format(&a, out, sizeof(out));
    PT_CHECK_STR(out, "/run/agent.sock");
    PT_CHECK_INT(pt_addr_port(&a), 0);
    struct sockaddr_storage ss;
    socklen_t len = pt_addr_sockaddr(&c, &ss);
    const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
    PT_CHECK_INT(un->sun_family, AF_UNIX);
    PT_CHECK_INT(len, offsetof(struct sockaddr_un, sun_path) + 4);
    PT_CHECK(un->sun_path[0] == '\0' && memcmp(un->sun_path + 1, "xds", 3) == 0);
    len = pt_addr_sockaddr(&a, &ss);
    PT_CHECK_STR(un->sun_path, "/run/agent.sock");
    PT_CHECK_INT(len, offsetof(struct sockaddr_un, sun_path) + strlen("/run/agent.sock") + 1);
    /* what getsockname leaves for a client socket: no path */
    memset(&unnamed, 0, sizeof(unnamed));
    unnamed.sa.sa_family = AF_UNIX;
    PT_CHECK(pt_addr_pipe_path(&unnamed) == NULL);
    pt_addr_format(&unnamed, out, sizeof(out));
    PT_CHECK_STR(out, "-");
    char longer[200];
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    PT_CHECK_INT(pt_addr_parse_pipe(&a, longer), -1);
    PT_CHECK_INT(pt_addr_parse_pipe(&a, ""), -1);
}

int main(void)
{
    PT_RUN(test_pipes);
    PT_RUN(test_is_any);
    PT_RUN(test_ipv4_matches_inet_ntop);
    PT_RUN(test_truncation);
    PT_RUN(test_forms);
    PT_TEST_EXIT();
}
