#include "proxy/grpc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int pt_grpc_is_request(const pt_http_headers_t *h)
{
    const char *ct = h != NULL ? pt_http_headers_get(h, "content-type") : NULL;
    static const char prefix[] = "application/grpc";
    if (ct == NULL || strncasecmp(ct, prefix, sizeof(prefix) - 1) != 0)
        return 0;
    char c = ct[sizeof(prefix) - 1];
    return c == '\0' || c == '+' || c == ';';
}

int pt_grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

int pt_grpc_add_status(pt_http_headers_t *h, int grpc_status, const char *message)
{
    char st[16];
    snprintf(st, sizeof(st), "%d", grpc_status);
    if (pt_http_headers_set(h, "content-type", "application/grpc") != 0 ||
        pt_http_headers_set(h, "grpc-status", st) != 0)
        return -ENOMEM;
    if (message == NULL || message[0] == '\0')
        return 0;
    /* gRPC's percent-encoding: bytes outside 0x20..0x7e, and '%', are escaped. */
    size_t n = strlen(message);
    char *enc = pt_arena_alloc(h->arena, n * 3 + 1);
    if (enc == NULL)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)message[i];
        if (c < 0x20 || c > 0x7e || c == '%')
            o += (size_t)snprintf(enc + o, 4, "%%%02X", c);
        else
            enc[o++] = (char)c;
    }
    enc[o] = '\0';
    return pt_http_headers_set(h, "grpc-message", enc) != 0 ? -ENOMEM : 0;
}
