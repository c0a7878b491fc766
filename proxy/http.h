/* HTTP building blocks shared by codecs, the connection manager, filters, the router and
 * the access log: header maps, response flags and per-stream information.
 *
 * Header maps follow the HTTP/2 model whatever the wire protocol: names are lowercase,
 * request pseudo-headers (:method, :path, :authority, :scheme) and the response :status are
 * entries of the map. The HTTP/1 codec turns Host into :authority on the way in and back on
 * the way out, so routing, filters and logs see one shape and the HTTP/2 codec plugs in
 * without changing them. Strings are NUL-terminated and live in the stream's arena. */
#ifndef PT_HTTP_H
#define PT_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proxy/address.h"
#include "proxy/arena.h"

typedef struct pt_http_header {
    const char *name; /* lowercase */
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
} pt_http_header_t;

typedef struct pt_http_headers {
    pt_http_header_t *items;
    uint32_t count;
    uint32_t cap;
    pt_arena_t *arena; /* where names, values and the array live */
} pt_http_headers_t;

void pt_http_headers_init(pt_http_headers_t *h, pt_arena_t *arena);
/* The first entry named `lname` (lowercase), or NULL. Inline: callers pass literals, so the
 * length folds to a constant and the compare inlines; a request does a few dozen lookups. */
static inline const pt_http_header_t *pt_http_headers_find(const pt_http_headers_t *h,
                                                           const char *lname)
{
    size_t n = strlen(lname);
    for (uint32_t i = 0; i < h->count; i++)
        if (h->items[i].name_len == n && memcmp(h->items[i].name, lname, n) == 0)
            return &h->items[i];
    return NULL;
}
/* The number in a `:status` value ("200"), or `fallback` when it is missing or not three
 * digits. Every response reads it a few times, so no strtol. */
static inline int pt_http_status_value(const char *st, int fallback)
{
    if (st == NULL || st[0] < '1' || st[0] > '9' || st[1] < '0' || st[1] > '9' || st[2] < '0' ||
        st[2] > '9' || st[3] != '\0')
        return fallback;
    return (st[0] - '0') * 100 + (st[1] - '0') * 10 + (st[2] - '0');
}

/* First value of `lname` (lowercase), or NULL. */
static inline const char *pt_http_headers_get(const pt_http_headers_t *h, const char *lname)
{
    const pt_http_header_t *e = pt_http_headers_find(h, lname);
    return e ? e->value : NULL;
}
/* Number of entries named lname. */
unsigned pt_http_headers_count(const pt_http_headers_t *h, const char *lname);
/* Appends a copy (the name is lowercased). Returns 0 or -1 on out-of-memory. */
int pt_http_headers_add(pt_http_headers_t *h, const char *name, size_t name_len,
                        const char *value, size_t value_len);
int pt_http_headers_add_str(pt_http_headers_t *h, const char *name, const char *value);
/* Appends without copying: name (lowercase) and value must outlive the map. */
int pt_http_headers_add_ref(pt_http_headers_t *h, const char *lname, const char *value);
/* The same with lengths; both strings must still be NUL-terminated at their lengths. */
int pt_http_headers_add_ref_n(pt_http_headers_t *h, const char *lname, size_t name_len,
                              const char *value, size_t value_len);
/* Replaces every entry named lname with one (added at the first one's place, or at the end). */
int pt_http_headers_set(pt_http_headers_t *h, const char *lname, const char *value);
/* The same without copying: lname (lowercase) and value must outlive the map. */
int pt_http_headers_set_ref(pt_http_headers_t *h, const char *lname, const char *value);
/* Removes every entry named lname; returns how many. */
unsigned pt_http_headers_remove(pt_http_headers_t *h, const char *lname);
/* Removes every entry named any of lnames (at most 16) in one pass. */
unsigned pt_http_headers_remove_any(pt_http_headers_t *h, const char *const *lnames,
                                    unsigned nnames);
/* Joins every value of lname with "," into the arena (NULL when absent). */
const char *pt_http_headers_get_joined(const pt_http_headers_t *h, const char *lname);
/* 1 when s is a header name a config may give: an RFC 9110 token, after one ':' when
 * allow_pseudo (matchers may name :method, :path...). */
int pt_http_header_name_valid(const char *s, int allow_pseudo);

/* Response flags, Envoy's %RESPONSE_FLAGS% short codes, in Envoy's output order. */
#define PT_RESPONSE_FLAGS(X)                                                                   \
    X(FAILED_LOCAL_HEALTH_CHECK, "LH")                                                         \
    X(NO_HEALTHY_UPSTREAM, "UH")                                                               \
    X(UPSTREAM_REQUEST_TIMEOUT, "UT")                                                          \
    X(LOCAL_RESET, "LR")                                                                       \
    X(UPSTREAM_REMOTE_RESET, "UR")                                                             \
    X(UPSTREAM_CONNECTION_FAILURE, "UF")                                                       \
    X(UPSTREAM_CONNECTION_TERMINATION, "UC")                                                   \
    X(UPSTREAM_OVERFLOW, "UO")                                                                 \
    X(NO_ROUTE_FOUND, "NR")                                                                    \
    X(DELAY_INJECTED, "DI")                                                                    \
    X(FAULT_INJECTED, "FI")                                                                    \
    X(RATE_LIMITED, "RL")                                                                      \
    X(UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX")                                                   \
    X(RATELIMIT_SERVICE_ERROR, "RLSE")                                                         \
    X(DOWNSTREAM_CONNECTION_TERMINATION, "DC")                                                 \
    X(UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX")                                                    \
    X(STREAM_IDLE_TIMEOUT, "SI")                                                               \
    X(INVALID_ENVOY_REQUEST_HEADERS, "IH")                                                     \
    X(DOWNSTREAM_PROTOCOL_ERROR, "DPE")                                                        \
    X(UPSTREAM_MAX_STREAM_DURATION_REACHED, "UMSDR")                                           \
    X(RESPONSE_FROM_CACHE_FILTER, "RFCF")                                                      \
    X(NO_FILTER_CONFIG_FOUND, "NFCF")                                                          \
    X(DURATION_TIMEOUT, "DT")                                                                  \
    X(UPSTREAM_PROTOCOL_ERROR, "UPE")                                                          \
    X(NO_CLUSTER_FOUND, "NC")                                                                  \
    X(OVERLOAD_MANAGER, "OM")                                                                  \
    X(DNS_RESOLUTION_FAILURE, "DF")

enum pt_response_flag_bit {
#define PT_X(name, code) PT_RF_BIT_##name,
    PT_RESPONSE_FLAGS(PT_X)
#undef PT_X
        PT_RF_BIT_COUNT
};
#define PT_RF(name) (1u << PT_RF_BIT_##name)

/* Writes the flags as Envoy does ("UF,URX", or "-" when none) into out; returns out. */
const char *pt_response_flags_str(uint32_t flags, char *out, size_t len);

/* What the access log (and stats) know of one stream or TCP session. Filled in as the
 * stream progresses; pointers stay valid until the log entry is written. */
/* What the access log shows of the downstream peer's certificate (%DOWNSTREAM_PEER_ISSUER%
 * ...), in Envoy's forms; made per stream only when a log asks for it. */
typedef struct pt_peer_cert {
    const char *issuer;          /* RFC 2253 */
    const char *fingerprint_256; /* lowercase hex of the DER's SHA-256 */
    const char *fingerprint_1;   /* ... SHA-1 */
    const char *serial;          /* lowercase hex */
    const char *cert;            /* the PEM, URL-encoded */
    const char *dns_san;         /* the DNS SANs joined by ",", or NULL */
    int64_t not_before, not_after; /* seconds since the epoch */
} pt_peer_cert_t;

typedef struct pt_stream_info {
    uint64_t start_wall_us;  /* wall clock (CLOCK_REALTIME) at the first byte */
    uint64_t start_mono_us;  /* monotonic, for durations */
    uint64_t end_mono_us;    /* response complete (or stream end) */
    uint64_t first_upstream_tx_mono_us, first_upstream_rx_mono_us, last_downstream_tx_mono_us;
    uint64_t last_upstream_tx_mono_us; /* the request's end went upstream (the last attempt) */
    const pt_http_headers_t *request_headers;   /* NULL for TCP */
    const pt_http_headers_t *response_headers;
    const pt_http_headers_t *response_trailers;
    int response_code;       /* 0 = none sent */
    const char *response_code_details;
    uint32_t response_flags; /* PT_RF(...) bits */
    uint64_t bytes_received; /* request body bytes (HTTP) or bytes from downstream (TCP) */
    uint64_t bytes_sent;     /* response body bytes (HTTP) or bytes to downstream (TCP) */
    const char *protocol;    /* "HTTP/1.1", "HTTP/1.0", "HTTP/2", or NULL for TCP */
    const char *upstream_host;    /* "10.0.0.1:80", or NULL */
    const char *upstream_cluster; /* or NULL */
    const char *route_name;
    const char *upstream_transport_failure_reason; /* why the upstream connect failed */
    const char *connection_termination_details;    /* why petrel ended the connection */
    pt_addr_t downstream_remote;        /* the client, after x-forwarded-for when trusted */
    pt_addr_t downstream_direct_remote; /* the peer of the connection */
    pt_addr_t downstream_local;
    pt_addr_t upstream_local;
    const char *requested_server_name; /* SNI */
    const char *downstream_peer_uri_san;
    const char *downstream_local_uri_san;
    const char *downstream_peer_subject;
    unsigned upstream_attempts;   /* 1 + retries */
    /* Metadata the access log and RBAC read (proxy/metadata.h); NULL when there is none.
     * upstream_cluster_ref and upstream_host_ref find the endpoint's metadata
     * (%UPSTREAM_METADATA%): the cluster version and the host the last attempt picked. */
    const struct pt_metadata *route_metadata;
    const struct pt_metadata *vhost_metadata;
    const struct pt_metadata *listener_metadata;
    const struct pt_metadata *cluster_metadata;
    const struct pt_cluster *upstream_cluster_ref;
    const struct pt_host *upstream_host_ref;
    struct pt_dyn_md *dynamic_metadata; /* written by filters, in the stream's arena */
    const pt_peer_cert_t *downstream_peer_cert; /* NULL: no certificate, or no log needs it */
    const char *local_reply_body; /* the body of a local reply petrel sent (may hold NULs) */
    size_t local_reply_body_len;
    const char *trace_id;         /* the stream's span's trace id (hex), or NULL */
} pt_stream_info_t;

#endif
