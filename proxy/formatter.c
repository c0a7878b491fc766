#include "proxy/formatter.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "proxy/cluster.h"
#include "proxy/grpc.h"
#include "proxy/metadata.h"

const char *const PT_FORMAT_DEFAULT =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

#define JSON_MAX_DEPTH 32
#define TMP_LEN        512 /* one operator's text form (a custom START_TIME is cut here) */

/* ---- operators ----------------------------------------------------------------------- */

enum op {
    OP_LITERAL,
    OP_CONST, /* %HOSTNAME%, %ENVIRONMENT(X)%: resolved at compile time; str NULL = not set */
    OP_START_TIME,
    OP_REQ, /* request header (with fallback), first value */
    OP_RESP,
    OP_TRAILER,
    OP_RESPONSE_CODE,
    OP_RESPONSE_FLAGS,
    OP_ATTEMPTS,
    OP_U64,       /* uint64_t field at off */
    OP_DURATION,  /* field at off2 minus field at off, in ms; either 0 = not set */
    OP_STR,       /* const char * field at off; NULL or "" = not set */
    OP_HOST,      /* "ip:port" string field at off: whole */
    OP_HOST_IP,   /* ... without the port */
    OP_HOST_PORT, /* ... the port alone */
    OP_ADDR,      /* pt_addr_t field at off: "ip:port" */
    OP_ADDR_IP,
    OP_ADDR_PORT,
    OP_UNIQUE_ID,
    OP_GRPC_STATUS, /* str: "C" camel, "S" snake, "N" number */
    OP_METADATA,    /* off: enum md_source; str: namespace; keys/nkeys: the path */
    OP_LOCAL_REPLY_BODY,
    OP_PEER_CERT,      /* off: offsetof a string in pt_peer_cert_t */
    OP_PEER_CERT_TIME, /* off: offsetof an int64_t in pt_peer_cert_t; tf: its format */
};

/* Where %..._METADATA% and %METADATA(TYPE:...)% look. */
enum md_source { MD_DYNAMIC, MD_CLUSTER, MD_ROUTE, MD_UPSTREAM_HOST, MD_VIRTUAL_HOST, MD_LISTENER };

enum arg { ARG_NONE, ARG_HEADER, ARG_TIME, ARG_ENV, ARG_HOSTNAME, ARG_GRPC, ARG_METADATA };

typedef struct op_def {
    const char *name;
    uint8_t op;
    uint8_t arg;
    uint8_t num; /* renders as a JSON number in typed JSON */
    uint16_t off, off2;
} op_def_t;

#define SI(field) ((uint16_t)offsetof(pt_stream_info_t, field))
#define PC(field) ((uint16_t)offsetof(pt_peer_cert_t, field))

static const op_def_t op_defs[] = {
    {"START_TIME", OP_START_TIME, ARG_TIME, 0, 0, 0},
    {"REQ", OP_REQ, ARG_HEADER, 0, 0, 0},
    {"REQUEST_HEADER", OP_REQ, ARG_HEADER, 0, 0, 0},
    {"RESP", OP_RESP, ARG_HEADER, 0, 0, 0},
    {"RESPONSE_HEADER", OP_RESP, ARG_HEADER, 0, 0, 0},
    {"TRAILER", OP_TRAILER, ARG_HEADER, 0, 0, 0},
    {"RESPONSE_TRAILER", OP_TRAILER, ARG_HEADER, 0, 0, 0},
    {"RESPONSE_CODE", OP_RESPONSE_CODE, ARG_NONE, 1, 0, 0},
    {"RESPONSE_CODE_DETAILS", OP_STR, ARG_NONE, 0, SI(response_code_details), 0},
    {"RESPONSE_FLAGS", OP_RESPONSE_FLAGS, ARG_NONE, 0, 0, 0},
    {"BYTES_RECEIVED", OP_U64, ARG_NONE, 1, SI(bytes_received), 0},
    {"BYTES_SENT", OP_U64, ARG_NONE, 1, SI(bytes_sent), 0},
    {"DURATION", OP_DURATION, ARG_NONE, 1, SI(start_mono_us), SI(end_mono_us)},
    {"REQUEST_DURATION", OP_DURATION, ARG_NONE, 1, SI(start_mono_us),
     SI(first_upstream_tx_mono_us)},
    {"RESPONSE_DURATION", OP_DURATION, ARG_NONE, 1, SI(start_mono_us),
     SI(first_upstream_rx_mono_us)},
    {"RESPONSE_TX_DURATION", OP_DURATION, ARG_NONE, 1, SI(first_upstream_rx_mono_us),
     SI(last_downstream_tx_mono_us)},
    {"UPSTREAM_HOST", OP_STR, ARG_NONE, 0, SI(upstream_host), 0},
    {"UPSTREAM_REMOTE_ADDRESS", OP_HOST, ARG_NONE, 0, SI(upstream_host), 0},
    {"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_HOST_IP, ARG_NONE, 0, SI(upstream_host), 0},
    {"UPSTREAM_REMOTE_PORT", OP_HOST_PORT, ARG_NONE, 1, SI(upstream_host), 0},
    {"UPSTREAM_CLUSTER", OP_STR, ARG_NONE, 0, SI(upstream_cluster), 0},
    {"UPSTREAM_LOCAL_ADDRESS", OP_ADDR, ARG_NONE, 0, SI(upstream_local), 0},
    {"UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_ADDR_IP, ARG_NONE, 0, SI(upstream_local), 0},
    {"UPSTREAM_LOCAL_PORT", OP_ADDR_PORT, ARG_NONE, 1, SI(upstream_local), 0},
    {"DOWNSTREAM_REMOTE_ADDRESS", OP_ADDR, ARG_NONE, 0, SI(downstream_remote), 0},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_ADDR_IP, ARG_NONE, 0, SI(downstream_remote), 0},
    {"DOWNSTREAM_REMOTE_PORT", OP_ADDR_PORT, ARG_NONE, 1, SI(downstream_remote), 0},
    /* No PROXY protocol or XFF-derived remote address yet: the direct one is the same. */
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", OP_ADDR, ARG_NONE, 0, SI(downstream_remote), 0},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", OP_ADDR_IP, ARG_NONE, 0,
     SI(downstream_remote), 0},
    {"DOWNSTREAM_DIRECT_REMOTE_PORT", OP_ADDR_PORT, ARG_NONE, 1, SI(downstream_remote), 0},
    {"DOWNSTREAM_LOCAL_ADDRESS", OP_ADDR, ARG_NONE, 0, SI(downstream_local), 0},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_ADDR_IP, ARG_NONE, 0, SI(downstream_local), 0},
    {"DOWNSTREAM_LOCAL_PORT", OP_ADDR_PORT, ARG_NONE, 1, SI(downstream_local), 0},
    {"PROTOCOL", OP_STR, ARG_NONE, 0, SI(protocol), 0},
    {"ROUTE_NAME", OP_STR, ARG_NONE, 0, SI(route_name), 0},
    {"TRACE_ID", OP_STR, ARG_NONE, 0, SI(trace_id), 0},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", OP_STR, ARG_NONE, 0,
     SI(upstream_transport_failure_reason), 0},
    {"CONNECTION_TERMINATION_DETAILS", OP_STR, ARG_NONE, 0, SI(connection_termination_details),
     0},
    {"REQUESTED_SERVER_NAME", OP_STR, ARG_NONE, 0, SI(requested_server_name), 0},
    {"DOWNSTREAM_PEER_URI_SAN", OP_STR, ARG_NONE, 0, SI(downstream_peer_uri_san), 0},
    {"DOWNSTREAM_LOCAL_URI_SAN", OP_STR, ARG_NONE, 0, SI(downstream_local_uri_san), 0},
    {"DOWNSTREAM_PEER_SUBJECT", OP_STR, ARG_NONE, 0, SI(downstream_peer_subject), 0},
    {"UPSTREAM_REQUEST_ATTEMPT_COUNT", OP_ATTEMPTS, ARG_NONE, 1, 0, 0},
    {"HOSTNAME", OP_CONST, ARG_HOSTNAME, 0, 0, 0},
    {"ENVIRONMENT", OP_CONST, ARG_ENV, 0, 0, 0},
    {"UNIQUE_ID", OP_UNIQUE_ID, ARG_NONE, 0, 0, 0},
    {"GRPC_STATUS", OP_GRPC_STATUS, ARG_GRPC, 0, 0, 0},
    {"GRPC_STATUS_NUMBER", OP_GRPC_STATUS, ARG_NONE, 1, 0, 0},
    {"LOCAL_REPLY_BODY", OP_LOCAL_REPLY_BODY, ARG_NONE, 0, 0, 0},
    {"DOWNSTREAM_PEER_ISSUER", OP_PEER_CERT, ARG_NONE, 0, PC(issuer), 0},
    {"DOWNSTREAM_PEER_FINGERPRINT_256", OP_PEER_CERT, ARG_NONE, 0, PC(fingerprint_256), 0},
    {"DOWNSTREAM_PEER_FINGERPRINT_1", OP_PEER_CERT, ARG_NONE, 0, PC(fingerprint_1), 0},
    {"DOWNSTREAM_PEER_SERIAL", OP_PEER_CERT, ARG_NONE, 0, PC(serial), 0},
    {"DOWNSTREAM_PEER_CERT", OP_PEER_CERT, ARG_NONE, 0, PC(cert), 0},
    {"DOWNSTREAM_PEER_DNS_SAN", OP_PEER_CERT, ARG_NONE, 0, PC(dns_san), 0},
    {"DOWNSTREAM_PEER_CERT_V_START", OP_PEER_CERT_TIME, ARG_TIME, 0, PC(not_before), 0},
    {"DOWNSTREAM_PEER_CERT_V_END", OP_PEER_CERT_TIME, ARG_TIME, 0, PC(not_after), 0},
    {"DYNAMIC_METADATA", OP_METADATA, ARG_METADATA, 0, MD_DYNAMIC, 0},
    {"CLUSTER_METADATA", OP_METADATA, ARG_METADATA, 0, MD_CLUSTER, 0},
    {"UPSTREAM_METADATA", OP_METADATA, ARG_METADATA, 0, MD_UPSTREAM_HOST, 0},
    {"ROUTE_METADATA", OP_METADATA, ARG_METADATA, 0, MD_ROUTE, 0},
    /* %METADATA(TYPE:NAMESPACE:KEY)%: off is set from TYPE. */
    {"METADATA", OP_METADATA, ARG_METADATA, 0, UINT16_MAX, 0},
};

/* Envoy operators petrel knows but cannot fill yet: "not supported" rather than "unknown",
 * so a user sees the difference between a typo and a missing feature. */
static const char *const unsupported_ops[] = {"START_TIME_LOCAL",
                                              "EMIT_TIME",
                                              "REQUEST_HEADERS_BYTES",
                                              "RESPONSE_HEADERS_BYTES",
                                              "RESPONSE_TRAILERS_BYTES",
                                              "UPSTREAM_PROTOCOL",
                                              "CONNECTION_TERMINATION_DETAILS",
                                              "UPSTREAM_WIRE_BYTES_SENT",
                                              "UPSTREAM_WIRE_BYTES_RECEIVED",
                                              "UPSTREAM_HEADER_BYTES_SENT",
                                              "UPSTREAM_HEADER_BYTES_RECEIVED",
                                              "DOWNSTREAM_WIRE_BYTES_SENT",
                                              "DOWNSTREAM_WIRE_BYTES_RECEIVED",
                                              "DOWNSTREAM_HEADER_BYTES_SENT",
                                              "DOWNSTREAM_HEADER_BYTES_RECEIVED",
                                              "REQUEST_TX_DURATION",
                                              "RESPONSE_FLAGS_LONG",
                                              "VIRTUAL_CLUSTER_NAME",
                                              "UPSTREAM_TRANSPORT_FAILURE_REASON",
                                              "CONNECTION_ID",
                                              "FILTER_STATE",
                                              "UPSTREAM_FILTER_STATE",
                                              "DOWNSTREAM_LOCAL_SUBJECT",
                                              "DOWNSTREAM_TLS_SESSION_ID",
                                              "DOWNSTREAM_TLS_CIPHER",
                                              "DOWNSTREAM_TLS_VERSION",
                                              "DOWNSTREAM_LOCAL_DNS_SAN",
                                              "UPSTREAM_PEER_SUBJECT",
                                              "UPSTREAM_PEER_ISSUER",
                                              "UPSTREAM_TLS_SESSION_ID",
                                              "UPSTREAM_TLS_CIPHER",
                                              "UPSTREAM_TLS_VERSION",
                                              "UPSTREAM_PEER_CERT",
                                              "UPSTREAM_PEER_CERT_V_START",
                                              "UPSTREAM_PEER_CERT_V_END",
                                              "FILTER_CHAIN_NAME",
                                              "CEL",
                                              "REQ_WITHOUT_QUERY",
                                              "UPSTREAM_CONNECTION_ID",
                                              "STREAM_ID",
                                              "ACCESS_LOG_TYPE",
                                              NULL};

/* START_TIME(...) is split at compile time into strftime runs and Envoy's extensions. */
enum tseg_kind {
    TS_STRFTIME, /* fmt: a strftime format with no special specifier */
    TS_EPOCH,    /* %s: seconds since the epoch (strftime's would use the local zone) */
    TS_FRAC,     /* %f, %Nf: N digits of the fraction of the second (default 9) */
    TS_SECFRAC,  /* %EnS (absl): seconds "SS.fff" with n fraction digits */
    TS_TEXT,     /* fmt printed as is (%Ez: "+00:00", the zone is always UTC) */
};

typedef struct tseg {
    uint8_t kind;
    uint8_t digits;
    const char *fmt;
} tseg_t;

typedef struct tfmt {
    unsigned n;
    tseg_t segs[];
} tfmt_t;

typedef struct fpart {
    uint8_t op;
    uint8_t num;
    uint16_t off, off2;
    uint32_t max_len; /* 0 = no truncation */
    const char *str;  /* literal text, header name (lowercase) or constant value */
    size_t len;
    const char *alt;  /* fallback header name, or NULL */
    const tfmt_t *tf; /* START_TIME format; NULL = Envoy's default */
    const char *const *keys; /* OP_METADATA: the path under the namespace str */
    unsigned nkeys;
} fpart_t;

enum jkind { JN_OBJECT, JN_ARRAY, JN_RAW, JN_FMT };

typedef struct jnode {
    uint8_t kind;
    const char *key; /* object members: the encoded key with its colon, "\"k\":" */
    size_t key_len;
    struct jnode *child;
    unsigned nchild;
    const char *raw; /* JN_RAW: encoded JSON text (numbers, booleans, null, constant strings) */
    size_t raw_len;
    const pt_format_t *fmt; /* JN_FMT */
} jnode_t;

struct pt_format {
    unsigned flags;
    unsigned needs; /* PT_FORMAT_NEEDS_* */
    unsigned nparts;
    const fpart_t *parts; /* text formats and JN_FMT values */
    const jnode_t *json;  /* JSON formats: the root object */
    int constant;
};

/* ---- errors ------------------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- compiling text ----------------------------------------------------------------- */

static const op_def_t *find_op(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(op_defs) / sizeof(op_defs[0]); i++)
        if (strlen(op_defs[i].name) == len && memcmp(op_defs[i].name, name, len) == 0)
            return &op_defs[i];
    return NULL;
}

static int is_unsupported_op(const char *name, size_t len)
{
    for (int i = 0; unsupported_ops[i] != NULL; i++)
        if (strlen(unsupported_ops[i]) == len && memcmp(unsupported_ops[i], name, len) == 0)
            return 1;
    return 0;
}

static char *arena_lower(pt_arena_t *a, const char *s, size_t n)
{
    char *d = pt_arena_strndup(a, s, n);
    if (d != NULL)
        for (size_t i = 0; i < n; i++)
            d[i] = (char)tolower((unsigned char)d[i]);
    return d;
}

/* Splits a START_TIME format into segments. Specifiers other than Envoy's own go to
 * strftime in runs, so "%Y-%m-%dT%H:%M:%S" is one strftime call per render. */
static const tfmt_t *compile_time(pt_arena_t *a, const char *p, size_t n)
{
    if (n == 0)
        return NULL; /* %START_TIME()% is the default format */
    /* At most one segment per specifier plus one run between each. */
    size_t max = 1;
    for (size_t i = 0; i < n; i++)
        max += p[i] == '%' ? 2 : 0;
    tfmt_t *tf = pt_arena_alloc(a, sizeof(*tf) + max * sizeof(tseg_t));
    if (tf == NULL)
        return NULL;
    size_t run = 0, i = 0;
#define FLUSH_RUN()                                                                                \
    do {                                                                                           \
        if (i > run) {                                                                             \
            tf->segs[tf->n].kind = TS_STRFTIME;                                                    \
            tf->segs[tf->n++].fmt = pt_arena_strndup(a, p + run, i - run);                         \
        }                                                                                          \
    } while (0)
    while (i < n) {
        if (p[i] != '%' || i + 1 >= n) {
            i++;
            continue;
        }
        char c = p[i + 1];
        size_t adv = 0;
        tseg_t seg = {0};
        if (c == 's') {
            seg.kind = TS_EPOCH;
            adv = 2;
        } else if (c == 'f') {
            seg.kind = TS_FRAC;
            seg.digits = 9;
            adv = 2;
        } else if (c >= '1' && c <= '9' && i + 2 < n && p[i + 2] == 'f') {
            seg.kind = TS_FRAC;
            seg.digits = (uint8_t)(c - '0');
            adv = 3;
        } else if (c == 'E' && i + 3 < n && p[i + 2] >= '0' && p[i + 2] <= '9' && p[i + 3] == 'S') {
            seg.kind = TS_SECFRAC;
            seg.digits = (uint8_t)(p[i + 2] - '0');
            adv = 4;
        } else if (c == 'E' && i + 2 < n && p[i + 2] == 'z') {
            seg.kind = TS_TEXT;
            seg.fmt = "+00:00";
            adv = 3;
        } else {
            i += 2; /* "%%" and every strftime specifier stay in the run */
            continue;
        }
        FLUSH_RUN();
        tf->segs[tf->n++] = seg;
        i += adv;
        run = i;
    }
    FLUSH_RUN();
#undef FLUSH_RUN
    return tf;
}

/* The parameter of a metadata operator: NAMESPACE(:KEY)*, after TYPE: for %METADATA%. */
static int compile_metadata(pt_arena_t *a, fpart_t *p, const char *name, size_t nlen,
                            const char *param, size_t plen, char *err, size_t errlen)
{
    static const char *const types[] = {"DYNAMIC", "CLUSTER",      "ROUTE",
                                        "UPSTREAM_HOST", "VIRTUAL_HOST", "LISTENER"};
    if (param == NULL || plen == 0) {
        set_err(err, errlen, "%%%.*s%s%% needs a metadata namespace", (int)nlen, name,
                param ? "()" : "");
        return -1;
    }
    /* Split at ':': the type (for %METADATA%), the namespace, then the keys. */
    const char *seg[1 + 16];
    size_t seglen[1 + 16], nseg = 0, start = 0;
    for (size_t i = 0; i <= plen; i++) {
        if (i < plen && param[i] != ':')
            continue;
        if (nseg == sizeof(seg) / sizeof(seg[0])) {
            set_err(err, errlen, "%%%.*s(%.*s)%%: too many keys", (int)nlen, name, (int)plen,
                    param);
            return -1;
        }
        if (i == start) {
            set_err(err, errlen, "%%%.*s(%.*s)%%: empty namespace or key", (int)nlen, name,
                    (int)plen, param);
            return -1;
        }
        seg[nseg] = param + start;
        seglen[nseg++] = i - start;
        start = i + 1;
    }
    size_t first = 0;
    if (p->off == UINT16_MAX) { /* %METADATA(TYPE:NAMESPACE:KEY)% */
        p->off = UINT16_MAX;
        for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++)
            if (strlen(types[t]) == seglen[0] && memcmp(types[t], seg[0], seglen[0]) == 0)
                p->off = (uint16_t)t;
        if (p->off == UINT16_MAX) {
            set_err(err, errlen, "%%METADATA(%.*s)%%: type \"%.*s\" is not supported (DYNAMIC, "
                    "CLUSTER, ROUTE, UPSTREAM_HOST, VIRTUAL_HOST or LISTENER)", (int)plen, param,
                    (int)seglen[0], seg[0]);
            return -1;
        }
        if (nseg < 2) {
            set_err(err, errlen, "%%METADATA(%.*s)%% needs a metadata namespace", (int)plen,
                    param);
            return -1;
        }
        first = 1;
    }
    p->str = pt_arena_strndup(a, seg[first], seglen[first]);
    p->len = seglen[first];
    p->nkeys = (unsigned)(nseg - first - 1);
    const char **keys = pt_arena_alloc(a, (p->nkeys ? p->nkeys : 1) * sizeof(*keys));
    if (p->str == NULL || keys == NULL) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    for (unsigned k = 0; k < p->nkeys; k++)
        if ((keys[k] = pt_arena_strndup(a, seg[first + 1 + k], seglen[first + 1 + k])) == NULL) {
            set_err(err, errlen, "out of memory");
            return -1;
        }
    p->keys = keys;
    return 0;
}

/* Compiles text[0..n) (a whole format string, or one JSON value) into parts. */
static pt_format_t *compile_text(pt_arena_t *a, const char *text, size_t n, unsigned flags,
                                 char *err, size_t errlen)
{
    size_t npct = 0;
    for (size_t i = 0; i < n; i++)
        npct += text[i] == '%';
    pt_format_t *f = pt_arena_alloc(a, sizeof(*f));
    fpart_t *parts = pt_arena_alloc(a, (npct + 1) * sizeof(fpart_t));
    char *lit = pt_arena_alloc(a, n + 1); /* all literal text, "%%" collapsed */
    if (f == NULL || parts == NULL || lit == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    f->flags = flags;
    f->constant = 1;
    f->needs = 0;
    unsigned np = 0;
    size_t lo = 0, lit_start = 0, i = 0;
#define END_LITERAL()                                                                              \
    do {                                                                                           \
        if (lo > lit_start) {                                                                      \
            memset(&parts[np], 0, sizeof(parts[np]));                                              \
            parts[np].op = OP_LITERAL;                                                             \
            parts[np].str = lit + lit_start;                                                       \
            parts[np++].len = lo - lit_start;                                                      \
        }                                                                                          \
        lit_start = lo;                                                                            \
    } while (0)
    while (i < n) {
        if (text[i] != '%') {
            lit[lo++] = text[i++];
            continue;
        }
        if (i + 1 < n && text[i + 1] == '%') {
            lit[lo++] = '%';
            i += 2;
            continue;
        }
        /* %NAME(param):len% -- the grammar of Envoy's command parser. */
        size_t pos = i, j = i + 1;
        while (j < n && (isupper((unsigned char)text[j]) || isdigit((unsigned char)text[j]) ||
                         text[j] == '_'))
            j++;
        const char *name = text + pos + 1;
        size_t nlen = j - pos - 1;
        if (nlen == 0) {
            set_err(err, errlen, "stray \"%%\" at position %zu (write %%%% for a literal percent)",
                    pos);
            return NULL;
        }
        const char *param = NULL;
        size_t plen = 0;
        if (j < n && text[j] == '(') {
            const char *close = memchr(text + j + 1, ')', n - j - 1);
            if (close == NULL) {
                set_err(err, errlen, "command operator \"%%%.*s(\" has no closing \")\"", (int)nlen,
                        name);
                return NULL;
            }
            param = text + j + 1;
            plen = (size_t)(close - param);
            j = (size_t)(close - text) + 1;
        }
        uint64_t max_len = 0;
        int has_len = 0;
        if (j < n && text[j] == ':') {
            j++;
            if (j >= n || !isdigit((unsigned char)text[j])) {
                set_err(err, errlen, "%%%.*s%%: \":\" must be followed by a length", (int)nlen,
                        name);
                return NULL;
            }
            while (j < n && isdigit((unsigned char)text[j])) {
                max_len = max_len * 10 + (uint64_t)(text[j++] - '0');
                if (max_len > UINT32_MAX) {
                    set_err(err, errlen, "%%%.*s%%: length is too large", (int)nlen, name);
                    return NULL;
                }
            }
            has_len = 1;
        }
        if (j >= n || text[j] != '%') {
            set_err(err, errlen,
                    "command operator \"%%%.*s\" at position %zu is not closed by \"%%\"",
                    (int)(j - pos - 1), name, pos);
            return NULL;
        }
        j++; /* the closing '%' */
        const op_def_t *d = find_op(name, nlen);
        if (d == NULL) {
            if (is_unsupported_op(name, nlen))
                set_err(err, errlen, "command operator \"%%%.*s%%\" is not supported", (int)nlen,
                        name);
            else
                set_err(err, errlen, "unknown command operator \"%%%.*s%%\"", (int)nlen, name);
            return NULL;
        }
        fpart_t op_part = {0}, *p = &op_part;
        p->op = d->op;
        p->num = d->num;
        p->off = d->off;
        p->off2 = d->off2;
        int len_ok = d->arg == ARG_HEADER || d->arg == ARG_ENV || d->arg == ARG_METADATA;
        if (has_len && !len_ok) {
            set_err(err, errlen, "%%%.*s%% takes no length", (int)nlen, name);
            return NULL;
        }
        if (has_len && max_len == 0) {
            set_err(err, errlen, "%%%.*s%%: length must be at least 1", (int)nlen, name);
            return NULL;
        }
        p->max_len = (uint32_t)max_len;
        if (d->op == OP_GRPC_STATUS)
            p->str = "N"; /* GRPC_STATUS_NUMBER; GRPC_STATUS's parameter says otherwise */
        switch (d->arg) {
        case ARG_NONE:
        case ARG_HOSTNAME:
            if (param != NULL) {
                set_err(err, errlen, "%%%.*s%% takes no parameter", (int)nlen, name);
                return NULL;
            }
            break;
        case ARG_HEADER: {
            if (param == NULL || plen == 0) {
                set_err(err, errlen, "%%%.*s%s%% needs a header name", (int)nlen, name,
                        param ? "()" : "");
                return NULL;
            }
            const char *q = memchr(param, '?', plen);
            size_t l1 = q ? (size_t)(q - param) : plen;
            if (q != NULL && memchr(q + 1, '?', plen - l1 - 1) != NULL) {
                set_err(err, errlen, "%%%.*s(%.*s)%%: more than one fallback header", (int)nlen,
                        name, (int)plen, param);
                return NULL;
            }
            if (l1 == 0 || (q != NULL && l1 + 1 == plen)) {
                set_err(err, errlen, "%%%.*s(%.*s)%% needs a header name on both sides of \"?\"",
                        (int)nlen, name, (int)plen, param);
                return NULL;
            }
            p->str = arena_lower(a, param, l1);
            p->len = l1;
            if (q != NULL)
                p->alt = arena_lower(a, q + 1, plen - l1 - 1);
            break;
        }
        case ARG_TIME:
            p->tf = compile_time(a, param ? param : "", plen);
            break;
        case ARG_GRPC:
            if (param == NULL || (plen == 12 && memcmp(param, "CAMEL_STRING", 12) == 0)) {
                p->str = "C";
            } else if (plen == 12 && memcmp(param, "SNAKE_STRING", 12) == 0) {
                p->str = "S";
            } else if (plen == 6 && memcmp(param, "NUMBER", 6) == 0) {
                p->str = "N";
                p->num = 1;
            } else {
                set_err(err, errlen, "%%%.*s(%.*s)%%: expected CAMEL_STRING, SNAKE_STRING or "
                        "NUMBER", (int)nlen, name, (int)plen, param);
                return NULL;
            }
            break;
        case ARG_METADATA:
            if (compile_metadata(a, p, name, nlen, param, plen, err, errlen) != 0)
                return NULL;
            break;
        case ARG_ENV:
            if (param == NULL || plen == 0) {
                set_err(err, errlen, "%%%.*s%s%% needs a variable name", (int)nlen, name,
                        param ? "()" : "");
                return NULL;
            }
            break;
        }
        /* Values that cannot change while the process runs are resolved now, as Envoy does. */
        if (d->arg == ARG_ENV) {
            char var[256];
            snprintf(var, sizeof(var), "%.*s", (int)plen, param);
            const char *v = getenv(var);
            if (v != NULL) {
                size_t vl = strlen(v);
                if (p->max_len && vl > p->max_len)
                    vl = p->max_len;
                p->str = pt_arena_strndup(a, v, vl);
                p->len = vl;
            }
        } else if (d->arg == ARG_HOSTNAME) {
            char host[256];
            if (gethostname(host, sizeof(host)) == 0) {
                host[sizeof(host) - 1] = '\0';
                p->str = pt_arena_strdup(a, host);
                p->len = strlen(host);
            }
        }
        if (p->op != OP_CONST)
            f->constant = 0;
        if (p->op == OP_PEER_CERT || p->op == OP_PEER_CERT_TIME)
            f->needs |= PT_FORMAT_NEEDS_PEER_CERT;
        /* The literal before this operator ends here; the operator follows it. */
        END_LITERAL();
        parts[np++] = op_part;
        i = j;
    }
    END_LITERAL();
#undef END_LITERAL
    f->parts = parts;
    f->nparts = np;
    return f;
}

pt_format_t *pt_format_compile_ex(pt_arena_t *arena, const char *text, unsigned flags, char *err,
                                  size_t errlen)
{
    if (text == NULL) {
        set_err(err, errlen, "no format string");
        return NULL;
    }
    return compile_text(arena, text, strlen(text), flags, err, errlen);
}

pt_format_t *pt_format_compile(pt_arena_t *arena, const char *text, char *err, size_t errlen)
{
    return pt_format_compile_ex(arena, text, 0, err, errlen);
}

/* ---- rendering values --------------------------------------------------------------- */

enum { V_NONE, V_STR, V_NUM, V_JSON /* s: JSON text of a value (metadata) */ };

typedef struct fval {
    int kind;
    const char *s;
    size_t len;
    uint64_t num;
} fval_t;

static const pt_http_header_t *find_header(const pt_http_headers_t *h, const char *lname)
{
    if (h == NULL)
        return NULL;
    const pt_http_header_t *e = pt_http_headers_find(h, lname);
    /* Envoy keeps Host as :authority and answers a lookup of "host" with it. */
    if (e == NULL && lname[0] == 'h' && strcmp(lname, "host") == 0)
        e = pt_http_headers_find(h, ":authority");
    return e;
}

/* gRPC's status names, as Envoy's %GRPC_STATUS% writes them. */
static const char *const grpc_camel[17] = {
    "Ok",       "Canceled",          "Unknown",          "InvalidArgument", "DeadlineExceeded",
    "NotFound", "AlreadyExists",     "PermissionDenied", "ResourceExhausted",
    "FailedPrecondition", "Aborted", "OutOfRange",       "Unimplemented",   "Internal",
    "Unavailable", "DataLoss",       "Unauthenticated"};
static const char *const grpc_snake[17] = {
    "OK",        "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",      "UNIMPLEMENTED",    "INTERNAL",
    "UNAVAILABLE", "DATA_LOSS",       "UNAUTHENTICATED"};

/* The gRPC status of a gRPC request's response, as Envoy finds it: its trailers' grpc-status,
 * else its head's (trailers-only), else the one its HTTP status maps to. -1 for a request
 * that is not gRPC or a response with none. */
static int grpc_status_of(const pt_stream_info_t *si)
{
    if (!pt_grpc_is_request(si->request_headers))
        return -1;
    const pt_http_header_t *e = find_header(si->response_trailers, "grpc-status");
    if (e == NULL)
        e = find_header(si->response_headers, "grpc-status");
    if (e != NULL) {
        char *end;
        unsigned long n = strtoul(e->value, &end, 10);
        return e->value_len > 0 && e->value[0] >= '0' && e->value[0] <= '9' && *end == '\0' &&
                       n <= INT32_MAX
                   ? (int)n
                   : -1;
    }
    return si->response_code > 0 ? pt_grpc_status_from_http(si->response_code) : -1;
}

/* Per-thread generator for %UNIQUE_ID%: seeded once from getrandom, so the hot path makes
 * no syscall. xorshift128+ is plenty for request ids (they are not secrets). */
static _Thread_local uint64_t rng_state[2];

static uint64_t rng_next(void)
{
    if (rng_state[0] == 0 && rng_state[1] == 0) {
        if (getrandom(rng_state, sizeof(rng_state), 0) != (ssize_t)sizeof(rng_state)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            rng_state[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
            rng_state[1] = (uint64_t)(uintptr_t)&rng_state ^ 0xbf58476d1ce4e5b9ull;
        }
        if (rng_state[0] == 0 && rng_state[1] == 0)
            rng_state[0] = 1;
    }
    uint64_t s1 = rng_state[0];
    const uint64_t s0 = rng_state[1];
    rng_state[0] = s0;
    s1 ^= s1 << 23;
    rng_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng_state[1] + s0;
}

static size_t uuid4(char *out)
{
    uint64_t hi = rng_next(), lo = rng_next();
    hi = (hi & ~0xf000ull) | 0x4000ull;               /* version 4 */
    lo = (lo & 0x3fffffffffffffffull) | (1ull << 63); /* variant 10xx */
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(hi >> (56 - 8 * i));
        b[8 + i] = (unsigned char)(lo >> (56 - 8 * i));
    }
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
    return o;
}

/* Broken-down UTC time without libc: glibc's gmtime_r takes the time zone lock, which every
 * worker would contend on per log line. Days-to-civil after H. Hinnant's algorithm. */
static void utc_tm(int64_t sec, struct tm *tm)
{
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    memset(tm, 0, sizeof(*tm));
    tm->tm_hour = (int)(rem / 3600);
    tm->tm_min = (int)(rem % 3600 / 60);
    tm->tm_sec = (int)(rem % 60);
    tm->tm_wday = (int)((days % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    tm->tm_year = (int)(y - 1900);
    tm->tm_mon = (int)(m - 1);
    tm->tm_mday = (int)d;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    static const int cum[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    tm->tm_yday = cum[tm->tm_mon] + (int)d - 1 + (leap && tm->tm_mon > 1);
}

static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* The second being logged is almost always the one logged just before on this thread. */
static _Thread_local struct {
    int64_t sec;
    int valid;
    struct tm tm;
    char prefix[20]; /* "YYYY-MM-DDTHH:MM:SS" */
} tcache;

static size_t format_time(const tfmt_t *tf, uint64_t wall_us, char *out, size_t cap)
{
    int64_t sec = (int64_t)(wall_us / 1000000);
    uint32_t nanos = (uint32_t)(wall_us % 1000000) * 1000;
    if (!tcache.valid || tcache.sec != sec) {
        utc_tm(sec, &tcache.tm);
        const struct tm *t = &tcache.tm;
        int y = t->tm_year + 1900;
        char *p = tcache.prefix;
        put2(p, y / 100);
        put2(p + 2, y % 100);
        p[4] = '-';
        put2(p + 5, t->tm_mon + 1);
        p[7] = '-';
        put2(p + 8, t->tm_mday);
        p[10] = 'T';
        put2(p + 11, t->tm_hour);
        p[13] = ':';
        put2(p + 14, t->tm_min);
        p[16] = ':';
        put2(p + 17, t->tm_sec);
        p[19] = '\0';
        tcache.sec = sec;
        tcache.valid = 1;
    }
    const struct tm tm = tcache.tm;
    if (tf == NULL) {
        /* Envoy's default, %Y-%m-%dT%H:%M:%E3SZ: the cached second plus milliseconds. */
        if (cap < 25)
            return 0;
        uint32_t ms = nanos / 1000000;
        memcpy(out, tcache.prefix, 19);
        out[19] = '.';
        out[20] = (char)('0' + ms / 100);
        put2(out + 21, (int)(ms % 100));
        out[23] = 'Z';
        out[24] = '\0';
        return 24;
    }
    char frac[10];
    snprintf(frac, sizeof(frac), "%09u", nanos);
    size_t o = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < tf->n && o + 1 < cap; i++) {
        const tseg_t *s = &tf->segs[i];
        int w = 0;
        switch (s->kind) {
        case TS_STRFTIME:
            o += strftime(out + o, cap - o, s->fmt, &tm);
            continue;
        case TS_EPOCH:
            w = snprintf(out + o, cap - o, "%lld", (long long)sec);
            break;
        case TS_FRAC:
            w = snprintf(out + o, cap - o, "%.*s", (int)s->digits, frac);
            break;
        case TS_SECFRAC:
            if (s->digits == 0)
                w = snprintf(out + o, cap - o, "%02d", tm.tm_sec);
            else
                w = snprintf(out + o, cap - o, "%02d.%.*s", tm.tm_sec, (int)s->digits, frac);
            break;
        case TS_TEXT:
            w = snprintf(out + o, cap - o, "%s", s->fmt);
            break;
        }
        if (w > 0)
            o += (size_t)w < cap - o ? (size_t)w : cap - o - 1;
    }
    return o;
}

/* "10.0.0.1:80" / "[::1]:80": the port's position, or NULL. */
static const char *host_port(const char *h)
{
    const char *c = strrchr(h, ':');
    if (c == NULL || (h[0] == '[' && (c == h || c[-1] != ']')))
        return NULL;
    return c;
}

/* The endpoint metadata of the host the request went to: the cluster version keeps it by
 * host index, so the host is looked for among the version's hosts. Only a format that asks
 * for %UPSTREAM_METADATA% pays for it, and only when the cluster's endpoints have metadata. */
static int upstream_metadata(const fpart_t *p, const pt_stream_info_t *si, char *tmp,
                             pt_md_value_t *mv)
{
    const pt_cluster_t *c = si->upstream_cluster_ref;
    if (c == NULL || si->upstream_host_ref == NULL || c->hmeta == NULL)
        return 0;
    for (unsigned i = 0; i < c->nhosts; i++)
        if (c->hosts[i] == si->upstream_host_ref)
            return pt_metadata_find_text(c->hmeta[i], p->str, p->keys, p->nkeys, tmp, TMP_LEN,
                                         mv);
    return 0;
}

/* A metadata value as Envoy's formatter gives it: a string as itself, anything else as its
 * JSON text; truncated to the operator's length. */
static void eval_metadata(const fpart_t *p, const pt_stream_info_t *si, fval_t *v, char *tmp)
{
    pt_md_value_t mv = {.type = PT_MD_NONE};
    int found = 0;
    switch (p->off) {
    case MD_DYNAMIC:
        found = pt_dyn_md_find(si->dynamic_metadata, p->str, p->keys, p->nkeys, tmp, TMP_LEN, &mv);
        break;
    case MD_CLUSTER:
        found = pt_metadata_find(si->cluster_metadata, p->str, p->keys, p->nkeys, &mv);
        break;
    case MD_ROUTE:
        found = pt_metadata_find(si->route_metadata, p->str, p->keys, p->nkeys, &mv);
        break;
    case MD_VIRTUAL_HOST:
        found = pt_metadata_find(si->vhost_metadata, p->str, p->keys, p->nkeys, &mv);
        break;
    case MD_UPSTREAM_HOST:
        found = upstream_metadata(p, si, tmp, &mv);
        break;
    case MD_LISTENER:
        found = pt_metadata_find(si->listener_metadata, p->str, p->keys, p->nkeys, &mv);
        break;
    }
    if (!found)
        return;
    if (mv.type == PT_MD_STRING) {
        v->kind = V_STR;
        v->s = mv.str;
        v->len = mv.str_len;
    } else {
        v->kind = V_JSON;
        v->s = mv.json;
        v->len = mv.json_len;
    }
    if (p->max_len && v->len > p->max_len) {
        v->len = p->max_len;
        v->kind = V_STR; /* cut JSON is no longer JSON: a typed log writes it as a string */
    }
}

/* Evaluates one operator. tmp (TMP_LEN bytes) holds text the value is built in. */
static void eval(const fpart_t *p, const pt_stream_info_t *si, fval_t *v, char *tmp)
{
    v->kind = V_NONE;
    if (p->op == OP_CONST) {
        if (p->str != NULL) {
            v->kind = V_STR;
            v->s = p->str;
            v->len = p->len;
        }
        return;
    }
    if (p->op == OP_UNIQUE_ID) {
        v->kind = V_STR;
        v->s = tmp;
        v->len = uuid4(tmp);
        return;
    }
    if (si == NULL)
        return;
    const char *base = (const char *)si;
    switch (p->op) {
    case OP_START_TIME:
        if (si->start_wall_us == 0)
            return;
        v->len = format_time(p->tf, si->start_wall_us, tmp, TMP_LEN);
        v->s = tmp;
        v->kind = V_STR;
        return;
    case OP_REQ:
    case OP_RESP:
    case OP_TRAILER: {
        const pt_http_headers_t *h = p->op == OP_REQ    ? si->request_headers
                                     : p->op == OP_RESP ? si->response_headers
                                                        : si->response_trailers;
        const pt_http_header_t *e = find_header(h, p->str);
        if (e == NULL && p->alt != NULL)
            e = find_header(h, p->alt);
        if (e == NULL)
            return;
        v->kind = V_STR;
        v->s = e->value;
        v->len = e->value_len;
        if (p->max_len && v->len > p->max_len)
            v->len = p->max_len;
        return;
    }
    case OP_GRPC_STATUS: {
        int g = grpc_status_of(si);
        if (g < 0)
            return;
        if (p->str[0] == 'N' || g > 16) { /* a status gRPC does not name: its number */
            v->kind = V_NUM;
            v->num = (uint64_t)g;
            return;
        }
        v->kind = V_STR;
        v->s = p->str[0] == 'C' ? grpc_camel[g] : grpc_snake[g];
        v->len = strlen(v->s);
        return;
    }
    case OP_RESPONSE_CODE:
        v->kind = V_NUM;
        v->num = si->response_code > 0 ? (uint64_t)si->response_code : 0;
        return;
    case OP_RESPONSE_FLAGS:
        v->kind = V_STR;
        v->s = pt_response_flags_str(si->response_flags, tmp, TMP_LEN);
        v->len = strlen(tmp);
        return;
    case OP_ATTEMPTS:
        v->kind = V_NUM;
        v->num = si->upstream_attempts;
        return;
    case OP_U64:
        v->kind = V_NUM;
        memcpy(&v->num, base + p->off, sizeof(uint64_t));
        return;
    case OP_DURATION: {
        uint64_t from, to;
        memcpy(&from, base + p->off, sizeof(from));
        memcpy(&to, base + p->off2, sizeof(to));
        if (from == 0 || to == 0 || to < from)
            return;
        v->kind = V_NUM;
        v->num = (to - from) / 1000; /* Envoy truncates to whole milliseconds */
        return;
    }
    case OP_STR:
    case OP_HOST:
    case OP_HOST_IP:
    case OP_HOST_PORT: {
        const char *s;
        memcpy(&s, base + p->off, sizeof(s));
        if (s == NULL || s[0] == '\0')
            return;
        if (p->op == OP_STR || p->op == OP_HOST) {
            v->kind = V_STR;
            v->s = s;
            v->len = strlen(s);
            return;
        }
        const char *c = host_port(s);
        if (c == NULL)
            return;
        if (p->op == OP_HOST_PORT) {
            char *end;
            unsigned long port = strtoul(c + 1, &end, 10);
            if (end == c + 1 || *end != '\0' || port > 65535)
                return;
            v->kind = V_NUM;
            v->num = port;
            return;
        }
        v->kind = V_STR;
        v->s = s;
        v->len = (size_t)(c - s);
        if (s[0] == '[' && v->len >= 2) {
            v->s++;
            v->len -= 2;
        }
        return;
    }
    case OP_METADATA:
        eval_metadata(p, si, v, tmp);
        return;
    case OP_PEER_CERT: {
        const char *s;
        if (si->downstream_peer_cert == NULL)
            return;
        memcpy(&s, (const char *)si->downstream_peer_cert + p->off, sizeof(s));
        if (s == NULL || s[0] == '\0')
            return;
        v->kind = V_STR;
        v->s = s;
        v->len = strlen(s);
        return;
    }
    case OP_PEER_CERT_TIME: {
        int64_t sec;
        if (si->downstream_peer_cert == NULL)
            return;
        memcpy(&sec, (const char *)si->downstream_peer_cert + p->off, sizeof(sec));
        if (sec <= 0)
            return;
        v->len = format_time(p->tf, (uint64_t)sec * 1000000u, tmp, TMP_LEN);
        v->s = tmp;
        v->kind = V_STR;
        return;
    }
    case OP_LOCAL_REPLY_BODY:
        if (si->local_reply_body == NULL)
            return;
        v->kind = V_STR;
        v->s = si->local_reply_body;
        v->len = si->local_reply_body_len;
        return;
    case OP_ADDR:
    case OP_ADDR_IP:
    case OP_ADDR_PORT: {
        const pt_addr_t *ad = (const pt_addr_t *)(const void *)(base + p->off);
        if (ad->sa.sa_family != AF_INET && ad->sa.sa_family != AF_INET6)
            return;
        if (p->op == OP_ADDR_PORT) {
            v->kind = V_NUM;
            v->num = pt_addr_port(ad);
            return;
        }
        if (p->op == OP_ADDR)
            pt_addr_format(ad, tmp, TMP_LEN);
        else
            pt_addr_format_ip(ad, tmp, TMP_LEN);
        v->kind = V_STR;
        v->s = tmp;
        v->len = strlen(tmp);
        return;
    }
    }
}

/* Rendering writes through a small stack buffer: a line is a few dozen fragments, and one
 * pt_buf_append per fragment cost more than everything else in a render. */
typedef struct wr {
    pt_buf_t *out;
    size_t n;
    char b[1024];
} wr_t;

static void wr_flush(wr_t *w)
{
    if (w->n > 0)
        pt_buf_append(w->out, w->b, w->n);
    w->n = 0;
}

static inline void wr_put(wr_t *w, const void *p, size_t n)
{
    if (n > sizeof(w->b) - w->n) {
        wr_flush(w);
        if (n > sizeof(w->b)) {
            pt_buf_append(w->out, p, n);
            return;
        }
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static size_t u64_str(uint64_t n, char *out)
{
    char rev[24];
    size_t k = 0;
    do {
        rev[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    for (size_t i = 0; i < k; i++)
        out[i] = rev[k - 1 - i];
    return k;
}

/* The text form of a value: "-" (or "" with omit_empty) when not set. */
static void append_text(wr_t *out, const fval_t *v, unsigned flags)
{
    char num[24];
    switch (v->kind) {
    case V_NONE:
        if (!(flags & PT_FORMAT_OMIT_EMPTY))
            wr_put(out, "-", 1);
        return;
    case V_STR:
    case V_JSON:
        wr_put(out, v->s, v->len);
        return;
    case V_NUM:
        wr_put(out, num, u64_str(v->num, num));
        return;
    }
}

static void render_text(const pt_format_t *f, const pt_stream_info_t *si, wr_t *out)
{
    char tmp[TMP_LEN];
    for (unsigned i = 0; i < f->nparts; i++) {
        const fpart_t *p = &f->parts[i];
        if (p->op == OP_LITERAL) {
            wr_put(out, p->str, p->len);
            continue;
        }
        fval_t v;
        eval(p, si, &v, tmp);
        append_text(out, &v, f->flags);
    }
}

/* ---- JSON --------------------------------------------------------------------------- */

/* Length of a valid UTF-8 sequence at s (multi-byte only), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0xc2 || c > 0xf4)
        return 0;
    size_t need = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (n < need)
        return 0;
    unsigned lo = 0x80, hi = 0xbf;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f; /* no surrogates */
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return need;
}

/* Appends s as the inside of a JSON string. Bytes that are not valid UTF-8 (header values may
 * carry any obs-text) are written as \u00XX, so every line stays valid JSON. */
static void json_escape(wr_t *out, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0, i = 0;
    static const char hex[] = "0123456789abcdef";
    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x7f) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_seq(s + i, n - i);
            if (l > 0) {
                i += l;
                continue;
            }
        }
        if (i > run)
            wr_put(out, s + run, i - run);
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            el = 6;
        }
        wr_put(out, esc, el);
        i++;
        run = i;
    }
    if (i > run)
        wr_put(out, s + run, i - run);
}

static void json_str_out(wr_t *out, const char *s, size_t n)
{
    wr_put(out, "\"", 1);
    json_escape(out, s, n);
    wr_put(out, "\"", 1);
}

/* A format string as a JSON string: every part's text form, escaped. */
static void render_json_text(const pt_format_t *f, const pt_stream_info_t *si, wr_t *out,
                             unsigned flags)
{
    char tmp[TMP_LEN], num[24];
    wr_put(out, "\"", 1);
    for (unsigned i = 0; i < f->nparts; i++) {
        const fpart_t *p = &f->parts[i];
        if (p->op == OP_LITERAL) {
            json_escape(out, p->str, p->len);
            continue;
        }
        fval_t v;
        eval(p, si, &v, tmp);
        if (v.kind == V_STR || v.kind == V_JSON)
            json_escape(out, v.s, v.len);
        else if (v.kind == V_NUM)
            wr_put(out, num, u64_str(v.num, num));
        else if (!(flags & PT_FORMAT_OMIT_EMPTY))
            wr_put(out, "-", 1);
    }
    wr_put(out, "\"", 1);
}

static int is_single_op(const pt_format_t *f)
{
    return f->nparts == 1 && f->parts[0].op != OP_LITERAL;
}

static void render_typed(const fval_t *v, wr_t *out)
{
    char num[24];
    if (v->kind == V_NONE)
        wr_put(out, "null", 4);
    else if (v->kind == V_NUM)
        wr_put(out, num, u64_str(v->num, num));
    else if (v->kind == V_JSON)
        wr_put(out, v->s, v->len); /* a struct, list, number...: its JSON as is */
    else
        json_str_out(out, v->s, v->len);
}

static void render_jnode(const jnode_t *n, const pt_stream_info_t *si, wr_t *out, unsigned flags);

/* One member or element. Returns 0 when an omitted value was left out (nothing written). */
static int render_jvalue(const jnode_t *c, const pt_stream_info_t *si, wr_t *out, unsigned flags,
                         int first, int in_object)
{
    fval_t v;
    char tmp[TMP_LEN];
    int typed = c->kind == JN_FMT && is_single_op(c->fmt) && !(flags & PT_FORMAT_JSON_STRINGS);
    if (c->kind == JN_FMT && is_single_op(c->fmt)) {
        eval(&c->fmt->parts[0], si, &v, tmp);
        if (v.kind == V_NONE && in_object && (flags & PT_FORMAT_OMIT_EMPTY))
            return 0;
    }
    if (!first)
        wr_put(out, ",", 1);
    if (in_object)
        wr_put(out, c->key, c->key_len);
    if (typed) {
        render_typed(&v, out);
    } else if (c->kind == JN_FMT && is_single_op(c->fmt)) {
        /* Legacy string-valued JSON: the text form, "-" when not set. */
        char num[24];
        if (v.kind == V_STR || v.kind == V_JSON)
            json_str_out(out, v.s, v.len);
        else if (v.kind == V_NUM) {
            wr_put(out, "\"", 1);
            wr_put(out, num, u64_str(v.num, num));
            wr_put(out, "\"", 1);
        } else if (flags & PT_FORMAT_OMIT_EMPTY)
            wr_put(out, "\"\"", 2);
        else
            wr_put(out, "\"-\"", 3);
    } else if (c->kind == JN_FMT) {
        render_json_text(c->fmt, si, out, flags);
    } else {
        render_jnode(c, si, out, flags);
    }
    return 1;
}

static void render_jnode(const jnode_t *n, const pt_stream_info_t *si, wr_t *out, unsigned flags)
{
    switch (n->kind) {
    case JN_RAW:
        wr_put(out, n->raw, n->raw_len);
        return;
    case JN_FMT:
        render_json_text(n->fmt, si, out, flags);
        return;
    case JN_OBJECT:
    case JN_ARRAY: {
        int obj = n->kind == JN_OBJECT;
        wr_put(out, obj ? "{" : "[", 1);
        int first = 1;
        for (unsigned i = 0; i < n->nchild; i++)
            if (render_jvalue(&n->child[i], si, out, flags, first, obj))
                first = 0;
        wr_put(out, obj ? "}" : "]", 1);
        return;
    }
    }
}

static char *buf_to_arena(pt_arena_t *a, pt_buf_t *b, size_t *len)
{
    size_t n = pt_buf_len(b);
    char *s = pt_arena_alloc(a, n + 1);
    if (s != NULL)
        pt_buf_copyout(b, 0, s, n);
    pt_buf_dispose(b);
    if (len != NULL)
        *len = n;
    return s;
}

static int key_cmp(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

typedef struct jctx {
    pt_arena_t *a;
    unsigned flags;
    unsigned needs;
    int constant;
    char *err;
    size_t errlen;
    char path[256];
} jctx_t;

static int compile_jvalue(jctx_t *cx, json_t *v, jnode_t *out, int depth);

static int compile_jcontainer(jctx_t *cx, json_t *v, jnode_t *out, int depth)
{
    int obj = json_is_object(v);
    size_t n = obj ? json_object_size(v) : json_array_size(v);
    out->kind = obj ? JN_OBJECT : JN_ARRAY;
    out->nchild = (unsigned)n;
    out->child = pt_arena_alloc(cx->a, (n ? n : 1) * sizeof(jnode_t));
    if (out->child == NULL) {
        set_err(cx->err, cx->errlen, "out of memory");
        return -1;
    }
    const char **keys = NULL;
    if (obj && n > 0) {
        keys = pt_arena_alloc(cx->a, n * sizeof(char *));
        if (keys == NULL) {
            set_err(cx->err, cx->errlen, "out of memory");
            return -1;
        }
        size_t k = 0;
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val)
        {
            keys[k++] = key;
        }
        if (cx->flags & PT_FORMAT_JSON_SORT)
            qsort(keys, n, sizeof(char *), key_cmp);
    }
    size_t saved = strlen(cx->path);
    for (size_t i = 0; i < n; i++) {
        json_t *cv;
        if (obj) {
            cv = json_object_get(v, keys[i]);
            snprintf(cx->path + saved, sizeof(cx->path) - saved, "%s%s", saved ? "." : "", keys[i]);
            pt_buf_t kb = {0};
            wr_t w = {.out = &kb};
            json_str_out(&w, keys[i], strlen(keys[i]));
            wr_put(&w, ":", 1);
            wr_flush(&w);
            out->child[i].key = buf_to_arena(cx->a, &kb, &out->child[i].key_len);
        } else {
            cv = json_array_get(v, i);
            snprintf(cx->path + saved, sizeof(cx->path) - saved, "[%zu]", i);
        }
        if (compile_jvalue(cx, cv, &out->child[i], depth + 1) < 0)
            return -1;
        cx->path[saved] = '\0';
    }
    return 0;
}

static int compile_jvalue(jctx_t *cx, json_t *v, jnode_t *out, int depth)
{
    if (depth > JSON_MAX_DEPTH) {
        set_err(cx->err, cx->errlen, "\"%s\": nesting is too deep", cx->path);
        return -1;
    }
    if (json_is_object(v) || json_is_array(v))
        return compile_jcontainer(cx, v, out, depth);
    if (json_is_string(v)) {
        char e[256];
        const char *s = json_string_value(v);
        pt_format_t *f = compile_text(cx->a, s, json_string_length(v),
                                      cx->flags & PT_FORMAT_OMIT_EMPTY, e, sizeof(e));
        if (f == NULL) {
            set_err(cx->err, cx->errlen, "\"%s\": %s", cx->path, e);
            return -1;
        }
        if (f->constant && f->nparts <= 1 && (f->nparts == 0 || f->parts[0].op == OP_LITERAL)) {
            /* A plain string: encode it once. */
            pt_buf_t b = {0};
            wr_t w = {.out = &b};
            if (f->nparts == 0)
                json_str_out(&w, "", 0);
            else
                json_str_out(&w, f->parts[0].str, f->parts[0].len);
            wr_flush(&w);
            out->kind = JN_RAW;
            out->raw = buf_to_arena(cx->a, &b, &out->raw_len);
            return 0;
        }
        if (!f->constant)
            cx->constant = 0;
        cx->needs |= f->needs;
        out->kind = JN_FMT;
        out->fmt = f;
        return 0;
    }
    /* Numbers, booleans and null are constants, written as the config gave them. */
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s == NULL) {
        set_err(cx->err, cx->errlen, "\"%s\": cannot encode value", cx->path);
        return -1;
    }
    out->kind = JN_RAW;
    out->raw_len = strlen(s);
    out->raw = pt_arena_strdup(cx->a, s);
    free(s);
    return 0;
}

pt_format_t *pt_format_compile_json_ex(pt_arena_t *arena, json_t *obj, unsigned flags, char *err,
                                       size_t errlen)
{
    if (!json_is_object(obj)) {
        set_err(err, errlen, "a JSON format must be an object");
        return NULL;
    }
    jctx_t cx = {.a = arena, .flags = flags, .constant = 1, .err = err, .errlen = errlen};
    pt_format_t *f = pt_arena_alloc(arena, sizeof(*f));
    jnode_t *root = pt_arena_alloc(arena, sizeof(*root));
    if (f == NULL || root == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    if (compile_jvalue(&cx, obj, root, 0) < 0)
        return NULL;
    f->flags = flags;
    f->json = root;
    f->constant = cx.constant;
    f->needs = cx.needs;
    return f;
}

pt_format_t *pt_format_compile_json(pt_arena_t *arena, json_t *obj, char *err, size_t errlen)
{
    return pt_format_compile_json_ex(arena, obj, 0, err, errlen);
}

/* ---- public rendering --------------------------------------------------------------- */

void pt_format_render(const pt_format_t *f, const pt_stream_info_t *si, pt_buf_t *out)
{
    wr_t w;
    w.out = out;
    w.n = 0;
    if (f->json != NULL) {
        render_jnode(f->json, si, &w, f->flags);
        wr_put(&w, "\n", 1);
    } else {
        render_text(f, si, &w);
    }
    wr_flush(&w);
}

char *pt_format_render_str(const pt_format_t *f, const pt_stream_info_t *si, pt_arena_t *arena)
{
    pt_buf_t b = {0};
    pt_format_render(f, si, &b);
    return buf_to_arena(arena, &b, NULL);
}

int pt_format_is_constant(const pt_format_t *f)
{
    return f->constant;
}

int pt_format_is_json(const pt_format_t *f)
{
    return f->json != NULL;
}

unsigned pt_format_needs(const pt_format_t *f)
{
    return f->needs;
}
