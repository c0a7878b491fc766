/* Fuzz target: access-log format strings (text) from untrusted bytes, compiled and rendered
 * against a populated stream info. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/buf.h"
#include "proxy/formatter.h"
#include "proxy/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    pt_arena_t a = {0};
    char *text = pt_arena_strndup(&a, (const char *)data, size);
    if (text == NULL || strlen(text) != size) {
        pt_arena_dispose(&a);
        return 0;
    }
    pt_http_headers_t req, resp;
    pt_http_headers_init(&req, &a);
    pt_http_headers_init(&resp, &a);
    pt_http_headers_add_str(&req, ":method", "GET");
    pt_http_headers_add_str(&req, ":path", "/a/b?c=d");
    pt_http_headers_add_str(&req, ":authority", "example.com");
    pt_http_headers_add_str(&req, "user-agent", "fuzz");
    pt_http_headers_add_str(&resp, ":status", "200");
    pt_stream_info_t si;
    memset(&si, 0, sizeof(si));
    si.request_headers = &req;
    si.response_headers = &resp;
    si.response_code = 200;
    si.protocol = "HTTP/1.1";
    si.upstream_host = "10.0.0.1:80";
    si.upstream_cluster = "c";
    si.start_wall_us = 1700000000000000ull;
    si.end_mono_us = 5000;
    pt_addr_parse(&si.downstream_remote, "192.0.2.1", 1234);
    char err[256];
    pt_format_t *f = pt_format_compile(&a, text, err, sizeof(err));
    if (f != NULL) {
        pt_buf_t out = {0};
        pt_format_render(f, &si, &out);
        pt_buf_dispose(&out);
        (void)pt_format_render_str(f, &si, &a);
    }
    pt_arena_dispose(&a);
    return 0;
}
