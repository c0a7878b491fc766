/* The HTTP inspector's detection (envoy.filters.listener.http_inspector).
 *
 * A pure module: no allocation, no I/O. The listener peeks the first bytes of a plaintext
 * connection (nothing is consumed) and asks whether they start HTTP/2 with prior knowledge
 * (the client connection preface: application protocol "h2c") or an HTTP/1.x request line
 * ("http/1.1" for HTTP/1.1, "http/1.0" for any other version, as Envoy does), so that
 * filter_chain_match.application_protocols can tell HTTP from other TCP. Stateless and
 * prefix-monotone, like the ClientHello parser: call again with more bytes after
 * PT_HTTP_INSPECT_MORE. */
#ifndef PT_HTTP_INSPECTOR_H
#define PT_HTTP_INSPECTOR_H

#include <stddef.h>
#include <stdint.h>

/* What Envoy peeks at most before giving up (the connection is closed: read_error). */
#define PT_HTTP_INSPECT_MAX 65536

typedef enum pt_http_inspect_result {
    PT_HTTP_INSPECT_FOUND,    /* *protocol is "h2c", "http/1.1" or "http/1.0" */
    PT_HTTP_INSPECT_NOT_HTTP, /* neither: raw TCP as far as matching goes */
    PT_HTTP_INSPECT_MORE,     /* an HTTP prefix so far: need more bytes */
} pt_http_inspect_result_t;

pt_http_inspect_result_t pt_http_inspect(const uint8_t *buf, size_t len, const char **protocol);

#endif
