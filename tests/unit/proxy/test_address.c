/* Unit tests for proxy/address: formatting of IPv4/IPv6 addresses (petrel formats IPv4
 * itself, so every octet value is compared with inet_ntop), truncation, and the
 * address:port and stat-name forms. */
#include "proxy/address.h"
#include "pt_test.h"

#include <arpa/inet.h>
#include <string.h>

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

int main(void)
{
    PT_RUN(test_is_any);
    PT_RUN(test_ipv4_matches_inet_ntop);
    PT_RUN(test_truncation);
    PT_RUN(test_forms);
    PT_TEST_EXIT();
}
