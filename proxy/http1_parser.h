/* Strict, zero-copy, incremental HTTP/1.1 message parser (RFC 9112).
 *
 * A pure module: no allocation, no I/O, libc only. Heads are parsed in place; every pointer
 * the parser hands out points into the caller's buffer. The parser is deliberately strict:
 * a proxy that is more lenient than the server behind it (or the other way round) is how
 * request smuggling happens, so anything ambiguous about message framing is an error.
 *
 * Heads: pt_h1_parse_request()/pt_h1_parse_response() are called with a buffer that grows
 * between calls; on PT_H1_INCOMPLETE they keep enough state in the pt_h1_head_t that the next
 * call resumes where the last one stopped. The buffer may move between calls (realloc): the
 * parser rebases the pointers it already stored.
 *
 * Bodies: pt_h1_body_decode() walks the framing (Content-Length, chunked, read-until-close)
 * and reports where payload bytes are inside the input it was given. */
#ifndef PT_HTTP1_PARSER_H
#define PT_HTTP1_PARSER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PT_H1_INCOMPLETE (-2) /* need more bytes */
#define PT_H1_ERROR      (-1) /* malformed; see ->error_status and ->error_reason */

/* Defaults for the body decoder's limits (pt_h1_body_t.max_chunk_line, .max_trailer_bytes). */
#define PT_H1_DEFAULT_MAX_CHUNK_LINE    4096
#define PT_H1_DEFAULT_MAX_TRAILER_BYTES 16384

typedef struct pt_h1_header {
    const char *name; /* points into the caller's buffer */
    size_t name_len;
    const char *value; /* OWS trimmed both ends; may be empty */
    size_t value_len;
} pt_h1_header_t;

typedef struct pt_h1_limits {
    /* Start line + header lines including the final CRLF. Over it: 431 for requests, 502 for
     * responses, reported as soon as the buffer holds more than this without a complete head.
     * Values above INT_MAX are treated as INT_MAX (the head length is returned as an int). */
    size_t max_head_bytes;
    /* Capacity of pt_h1_head_t.headers, and the limit on the number of header lines. */
    unsigned max_headers;
} pt_h1_limits_t;

enum pt_h1_body_mode {
    PT_H1_BODY_NONE,    /* no body (also: HEAD responses, 1xx, 204, 304) */
    PT_H1_BODY_LENGTH,  /* Content-Length bytes; content_length may be 0 */
    PT_H1_BODY_CHUNKED, /* chunked transfer coding is the final coding */
    PT_H1_BODY_EOF,     /* responses only: read until the server closes */
};

typedef struct pt_h1_head {
    /* request line */
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    /* status line */
    int status;
    const char *reason;
    size_t reason_len;
    int minor_version; /* 0 or 1 */

    /* Caller provides the array; its capacity is pt_h1_limits_t.max_headers. Headers are in
     * wire order; duplicates are kept as separate entries. */
    pt_h1_header_t *headers;
    unsigned num_headers;

    /* Derived while parsing, valid once the head is complete, so callers need not rescan. */
    enum pt_h1_body_mode body_mode;
    uint64_t content_length;         /* valid when body_mode == PT_H1_BODY_LENGTH */
    unsigned keep_alive : 1;         /* the connection may carry another message after this one */
    unsigned connection_close : 1;   /* Connection has the token "close" */
    unsigned connection_upgrade : 1; /* Connection has the token "upgrade" */
    unsigned has_upgrade : 1;        /* an Upgrade header is present */
    unsigned expect_continue : 1;    /* HTTP/1.1 request with Expect: 100-continue */
    const pt_h1_header_t *host;      /* requests: the (single) Host header, or NULL */

    int error_status; /* on PT_H1_ERROR: 400, 431, 501, 505 for requests; 502 for responses */
    const char *error_reason; /* static string, e.g. "content-length with transfer-encoding" */

    size_t scanned; /* internal: offset of the first line not parsed yet (head length once done) */

    /* Private state carried across PT_H1_INCOMPLETE; all-zero means "nothing parsed yet". */
    struct {
        const char *base;      /* buffer of the previous call, to rebase pointers if it moved */
        size_t searched;       /* bytes from `scanned` already known to hold no LF */
        unsigned char phase;   /* start line, headers, done, error */
        unsigned char is_resp; /* set by the parse function in use */
        unsigned cl_seen : 1;
        unsigned te_seen : 1;
        unsigned te_bad : 1;          /* a transfer coding that is not a token */
        unsigned te_last_chunked : 1; /* the last coding seen so far is "chunked" */
        unsigned te_other : 1;        /* a coding other than bare "chunked" was listed */
        unsigned conn_keep_alive : 1; /* Connection has the token "keep-alive" */
        unsigned expect_100 : 1;
        unsigned te_chunked; /* how many times "chunked" was listed */
        unsigned hosts;      /* Host header count */
    } priv;
} pt_h1_head_t;

/* Zero *h and attach the caller's header array: the way to start a new message. */
void pt_h1_head_init(pt_h1_head_t *h, pt_h1_header_t *headers);

/* Parse a complete request head from buf[0..len). Returns the head's length in bytes (> 0)
 * when complete, PT_H1_INCOMPLETE, or PT_H1_ERROR (h->error_status, h->error_reason).
 * Before the first call for a message, zero *h and set h->headers (pt_h1_head_init); on
 * PT_H1_INCOMPLETE call again with the same bytes plus more (the buffer may have moved).
 * Empty lines (CRLF) before the request line are skipped and counted in the length, as RFC
 * 9112 2.2 asks, so a client's stray CRLF after a body does not break pipelining.
 * Transfer-Encoding: the only coding implemented is "chunked", once and final. A request whose
 * codings break RFC 9112 6.3 (chunked not final, listed twice, not a token) is a 400; a
 * well-framed one that also lists another coding ("gzip, chunked") is a 501 (RFC 9112 6.1):
 * forwarding it re-chunked would silently drop the other coding.
 * Once complete or failed, further calls return the same result. */
int pt_h1_parse_request(const char *buf, size_t len, pt_h1_head_t *h, const pt_h1_limits_t *lim);

/* Same for a response. `request_was_head`, 1xx, 204 and 304 mean no body; otherwise
 * Transfer-Encoding with final "chunked" means chunked, an empty Transfer-Encoding or no
 * framing header at all means PT_H1_BODY_EOF (and keep_alive = 0). A Transfer-Encoding that
 * lists any coding other than "chunked" is an error, whatever the status: the proxy could
 * neither undo the coding nor pass it on once it has re-framed the body (Envoy rejects it
 * too). Every error reports error_status 502: the status the proxy answers downstream with. */
int pt_h1_parse_response(const char *buf, size_t len, pt_h1_head_t *h, const pt_h1_limits_t *lim,
                         int request_was_head);

/* Incremental body decoder: zero copy, it reports where payload bytes are inside its input. */
typedef struct pt_h1_body {
    enum pt_h1_body_mode mode;
    uint64_t remaining; /* LENGTH: bytes left in the body; CHUNKED: bytes left in this chunk */
    int state;          /* private: decoder state */
    int error_status;   /* on PT_H1_ERROR: 400 */
    const char *error_reason;
    pt_h1_header_t trailer;   /* valid when pt_h1_body_has_trailer() after a call */
    unsigned has_trailer : 1; /* private; use pt_h1_body_has_trailer() */
    unsigned size_digits : 1; /* private: the chunk-size line has at least one hex digit */
    size_t max_chunk_line;    /* chunk-size line incl. extensions and CRLF; default 4096 */
    size_t max_trailer_bytes; /* whole trailer section incl. final CRLF; default 16384 */
    size_t line_bytes;        /* private: bytes of the current chunk-size line so far */
    size_t trailer_bytes;     /* private: bytes of the trailer section so far */
    uint64_t payload_bytes;   /* payload bytes reported so far (for stats and limits) */
} pt_h1_body_t;

/* Prepare to decode the body of a complete head (body_mode, content_length). */
void pt_h1_body_init(pt_h1_body_t *b, const pt_h1_head_t *h);
/* Same without a head: `content_length` is used for PT_H1_BODY_LENGTH only. */
void pt_h1_body_init_mode(pt_h1_body_t *b, enum pt_h1_body_mode mode, uint64_t content_length);

/* Consume from in[0..len). Sets *data and *data_len to a span of payload inside `in` (possibly
 * empty) and returns the bytes consumed (>= 0), or PT_H1_ERROR (b->error_status 400,
 * b->error_reason). Each call yields at most one payload span or one trailer field; bytes
 * not consumed must be passed again, followed by new ones, on the next call. A call that
 * returns 0 with no payload and no trailer and !pt_h1_body_done() needs more input. Trailer
 * field lines are consumed only whole. Once done, nothing more is consumed: what follows is
 * the next message. PT_H1_BODY_EOF never completes; the caller ends it on close. */
ssize_t pt_h1_body_decode(pt_h1_body_t *b, const char *in, size_t len, const char **data,
                          size_t *data_len);
int pt_h1_body_done(const pt_h1_body_t *b);
/* True when the last pt_h1_body_decode() call consumed a trailer field, now in b->trailer. */
int pt_h1_body_has_trailer(const pt_h1_body_t *b);

/* Helpers used by the connection manager: */
int pt_h1_header_name_eq(const pt_h1_header_t *h, const char *lower_name); /* case-insensitive */
/* Does the comma-separated list v[0..len) hold lower_token (case-insensitive, OWS around
 * elements ignored)? */
int pt_h1_token_list_contains(const char *v, size_t len, const char *lower_token);
const char *pt_h1_body_mode_str(enum pt_h1_body_mode mode);

#endif
