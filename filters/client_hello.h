/* TLS ClientHello parser for the tls_inspector listener filter.
 *
 * A pure module: no allocation, no I/O, libc only. The listener filter peeks the first bytes of
 * a connection (MSG_PEEK, nothing is consumed) and asks this parser whether they are a TLS
 * ClientHello and, if so, for the SNI and ALPN it needs for filter-chain matching; the bytes
 * stay in the socket for the TLS transport socket (or for tcp_proxy passthrough) to read.
 *
 * The parser is stateless: each call re-parses the buffer from the start, so the caller simply
 * peeks again with more bytes after PT_CH_INCOMPLETE. It is prefix-monotone: once a prefix gives
 * NOT_TLS, ERROR or OK, every longer buffer starting with that prefix gives the same result (and
 * the same fields for OK), so it never matters how the bytes were split between peeks.
 *
 * Records are processed only when complete, as a real TLS stack does: OK needs every record that
 * carries part of the handshake message, in full. Bytes after the message (the rest of its last
 * record, later records, early data) are never looked at. */
#ifndef PT_CLIENT_HELLO_H
#define PT_CLIENT_HELLO_H

#include <stddef.h>
#include <stdint.h>

#define PT_CH_MAX_SNI  255
#define PT_CH_MAX_ALPN 8

typedef enum pt_ch_result {
    PT_CH_OK,         /* a complete ClientHello was parsed */
    PT_CH_INCOMPLETE, /* looks like TLS so far; need more bytes */
    PT_CH_NOT_TLS,    /* not a TLS handshake record (plaintext): transport_protocol raw_buffer */
    PT_CH_ERROR,      /* TLS record framing but a malformed ClientHello */
} pt_ch_result_t;

typedef struct pt_client_hello {
    /* server_name (host_name type), lowercased, "" if none */
    char sni[PT_CH_MAX_SNI + 1];
    /* protocol names in client order (longer ones truncated are skipped) */
    unsigned nalpn;
    char alpn[PT_CH_MAX_ALPN][64];
    uint16_t legacy_version; /* client_version field */
    int supports_tls13;      /* supported_versions lists 0x0304 */
    /* on INCOMPLETE: total bytes known to be needed so far; always > len (never 0 = unknown:
     * before the lengths are in, it counts the smallest possible ClientHello) */
    size_t needed;
} pt_client_hello_t;

/* Parses the first bytes of a connection (as peeked with MSG_PEEK; never consumes). The
 * ClientHello may span several TLS records (record type 22); fragmentation across records is
 * handled. Limit: max_bytes (e.g. 64 KiB): a ClientHello whose records would need more than
 * max_bytes bytes from the start of the connection is PT_CH_ERROR, reported as soon as a
 * record or handshake length shows it.
 *
 * Results, in detail:
 *  - PT_CH_NOT_TLS: the first record header is not a handshake record of TLS 1.0..1.3 (first
 *    byte other than 0x16, which also covers SSLv2-style hellos and all plaintext protocols,
 *    or a version other than 0x0301..0x0304). Decided as soon as the deciding byte is there.
 *  - PT_CH_ERROR: anything malformed after that: a later record that is not a handshake
 *    record, an empty or oversized (> 2^14) record, a handshake message other than
 *    ClientHello, a length that overruns its enclosing length, session_id > 32 bytes, odd or
 *    empty cipher_suites, empty compression_methods, bytes after the extensions, a server_name
 *    that is empty, longer than 255 bytes, given twice, or has bytes outside printable ASCII
 *    (NUL, controls, space, DEL, 8-bit), an empty ALPN list or an empty protocol name, a
 *    malformed supported_versions, a repeated server_name/ALPN/supported_versions extension,
 *    or the max_bytes limit.
 *  - PT_CH_INCOMPLETE: no verdict yet; out->needed (> len) is a lower bound on the total length
 *    any well-formed ClientHello continuing these bytes needs, so a caller may wait for that
 *    many bytes before peeking again and never waits past a valid hello. Where the records are
 *    known it is exact: with the record header and the handshake header in hand it is the end
 *    of the record that completes the message.
 *  - PT_CH_OK: sni, alpn/nalpn, legacy_version, supports_tls13 are set. ALPN names that do not
 *    fit (63 bytes max) or contain a NUL are skipped, as are names after the 8th: a skipped
 *    name can never match a configured protocol, so it only has to be validated.
 * On every result other than OK all fields except needed are zero/empty; needed is 0 unless
 * INCOMPLETE. */
pt_ch_result_t pt_client_hello_parse(const uint8_t *buf, size_t len, size_t max_bytes,
                                     pt_client_hello_t *out);

/* "ok", "incomplete", "not_tls", "error": for logs and stats names. */
const char *pt_ch_result_str(pt_ch_result_t r);

#endif
