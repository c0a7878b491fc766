#include "filters/http_inspector.h"

#include <string.h>

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* RFC 9110 tchar: what a method is made of (custom methods included, as Envoy's parser
 * allows them). */
static int is_tchar(uint8_t c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

pt_http_inspect_result_t pt_http_inspect(const uint8_t *buf, size_t len, const char **protocol)
{
    size_t plen = sizeof(h2_preface) - 1;
    size_t cmp = len < plen ? len : plen;
    if (len > 0 && memcmp(buf, h2_preface, cmp) == 0) {
        if (len < plen)
            return PT_HTTP_INSPECT_MORE;
        *protocol = "h2c";
        return PT_HTTP_INSPECT_FOUND;
    }
    /* The request line: method SP request-target SP HTTP/x.y CRLF (a bare LF is taken too).
     * Each part is checked as far as the bytes go, so a prefix that cannot become a request
     * line is refused without waiting for more. */
    size_t i = 0;
    while (i < len && is_tchar(buf[i]))
        i++;
    if (i == len)
        return PT_HTTP_INSPECT_MORE;
    if (i == 0 || buf[i] != ' ')
        return PT_HTTP_INSPECT_NOT_HTTP;
    size_t target = ++i;
    while (i < len && buf[i] > ' ' && buf[i] != 0x7f)
        i++;
    if (i == len)
        return PT_HTTP_INSPECT_MORE;
    if (i == target || buf[i] != ' ')
        return PT_HTTP_INSPECT_NOT_HTTP;
    i++;
    static const char version[] = "HTTP/d.d"; /* d: a digit */
    for (size_t k = 0; k < sizeof(version) - 1; k++, i++) {
        if (i == len)
            return PT_HTTP_INSPECT_MORE;
        int ok =
            version[k] == 'd' ? (buf[i] >= '0' && buf[i] <= '9') : buf[i] == (uint8_t)version[k];
        if (!ok)
            return PT_HTTP_INSPECT_NOT_HTTP;
    }
    if (i == len)
        return PT_HTTP_INSPECT_MORE;
    if (buf[i] == '\r') {
        if (++i == len)
            return PT_HTTP_INSPECT_MORE;
    }
    if (buf[i] != '\n')
        return PT_HTTP_INSPECT_NOT_HTTP;
    const uint8_t *v = buf + i - (buf[i - 1] == '\r' ? 4 : 3); /* "1.1" */
    *protocol = v[0] == '1' && v[2] == '1' ? "http/1.1" : "http/1.0";
    return PT_HTTP_INSPECT_FOUND;
}
