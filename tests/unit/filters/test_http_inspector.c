/* Unit tests for filters/http_inspector: the h2 preface, HTTP/1.x request lines (custom
 * methods, LF or CRLF), every prefix of each (MORE, never a wrong answer), and what is not
 * HTTP decided as soon as the bytes say so. */
#include "filters/http_inspector.h"
#include "pt_test.h"

static pt_http_inspect_result_t inspect(const char *s, const char **proto)
{
    *proto = NULL;
    return pt_http_inspect((const uint8_t *)s, strlen(s), proto);
}

/* Every strict prefix asks for more; the whole says `want`. */
static int prefixes_then(const char *s, pt_http_inspect_result_t want, const char *proto_want)
{
    size_t n = strlen(s);
    for (size_t i = 1; i < n; i++) {
        const char *proto = NULL;
        if (pt_http_inspect((const uint8_t *)s, i, &proto) != PT_HTTP_INSPECT_MORE) {
            fprintf(stderr, "prefix %zu of \"%s\" decided early\n", i, s);
            return 0;
        }
    }
    const char *proto;
    if (inspect(s, &proto) != want)
        return 0;
    return proto_want == NULL ? proto == NULL : proto != NULL && strcmp(proto, proto_want) == 0;
}

static void test_h2_preface(void)
{
    PT_CHECK(prefixes_then("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", PT_HTTP_INSPECT_FOUND, "h2c"));
    const char *proto;
    /* A SETTINGS frame right behind it changes nothing. */
    PT_CHECK_INT(inspect("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04", &proto),
                 PT_HTTP_INSPECT_FOUND);
    PT_CHECK_STR(proto, "h2c");
    /* The preface's request line alone with another ending is not the preface: as a request
     * line, it is method PRI and version 2.0. */
    PT_CHECK_INT(inspect("PRI * HTTP/2.0\r\nHost: x\r\n", &proto), PT_HTTP_INSPECT_FOUND);
    PT_CHECK_STR(proto, "http/1.0");
}

static void test_http1_request_lines(void)
{
    PT_CHECK(prefixes_then("GET / HTTP/1.1\r\n", PT_HTTP_INSPECT_FOUND, "http/1.1"));
    PT_CHECK(prefixes_then("POST /a?b=c HTTP/1.0\r\n", PT_HTTP_INSPECT_FOUND, "http/1.0"));
    PT_CHECK(prefixes_then("GET / HTTP/1.1\n", PT_HTTP_INSPECT_FOUND, "http/1.1"));
    PT_CHECK(prefixes_then("PURGE http://x/y HTTP/1.1\r\n", PT_HTTP_INSPECT_FOUND, "http/1.1"));
    PT_CHECK(prefixes_then("CONNECT example.com:443 HTTP/1.1\r\n", PT_HTTP_INSPECT_FOUND,
                           "http/1.1"));
    const char *proto;
    /* Headers after the line are not looked at. */
    PT_CHECK_INT(inspect("GET / HTTP/1.1\r\n\x01\x02 anything", &proto), PT_HTTP_INSPECT_FOUND);
    PT_CHECK_STR(proto, "http/1.1");
}

static void test_not_http(void)
{
    const char *proto;
    static const char *const cases[] = {
        "\x16\x03\x01\x02\x00",     /* a TLS record */
        "{\"json\": 1}",             /* no method */
        " GET / HTTP/1.1\r\n",       /* leading space */
        "\r\nGET / HTTP/1.1\r\n",    /* an empty first line (Envoy refuses it too) */
        "GET  / HTTP/1.1\r\n",       /* two spaces: an empty target */
        "GET / HTTP/1.1 \r\n",       /* trailing space */
        "GET / HTTP/x.1\r\n",
        "GET / HTTPS/1.1\r\n",
        "GET / HTTP/1.1\rX",
        "GET / HTTP/11\r\n",
        "SSH-2.0-OpenSSH_9.2p1\r\n", /* a server banner shape: no space before "\r\n" */
        "not http at all\r\n",
        "GET /\x7f HTTP/1.1\r\n",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_http_inspect_result_t rc = inspect(cases[i], &proto);
        if (rc != PT_HTTP_INSPECT_NOT_HTTP)
            fprintf(stderr, "case %zu (%s): %d\n", i, cases[i], (int)rc);
        PT_CHECK_INT(rc, PT_HTTP_INSPECT_NOT_HTTP);
        PT_CHECK(proto == NULL);
    }
}

static void test_undecided_prefixes(void)
{
    const char *proto;
    /* What could still become a request line waits (Envoy's inspector does the same, until
     * listener_filters_timeout). */
    PT_CHECK_INT(inspect("", &proto), PT_HTTP_INSPECT_MORE);
    PT_CHECK_INT(inspect("hello", &proto), PT_HTTP_INSPECT_MORE);
    PT_CHECK_INT(inspect("hello world", &proto), PT_HTTP_INSPECT_MORE);
    PT_CHECK_INT(inspect("PRI * HTTP/2.0\r\n\r\n", &proto), PT_HTTP_INSPECT_MORE);
}

int main(void)
{
    PT_RUN(test_h2_preface);
    PT_RUN(test_http1_request_lines);
    PT_RUN(test_not_http);
    PT_RUN(test_undecided_prefixes);
    PT_TEST_EXIT();
}
