/* envoy.tracers.zipkin: ZipkinConfig, and the reports to the collector.
 *
 * Spans go as Zipkin v2 JSON (collector_endpoint_version HTTP_JSON, the default) or as a
 * zipkin.proto3 ListOfSpans (HTTP_PROTO), POSTed to collector_endpoint on a host of
 * collector_cluster from the main thread (discovery/rest_fetch.c), one report in flight at a
 * time. Counters as Envoy names them: tracing.zipkin.spans_sent (spans handed to a report),
 * reports_sent (the collector answered 202), reports_dropped (it answered something else),
 * reports_failed (no answer: no connection, a reset, the 5 s timeout), timer_flushed,
 * reports_skipped_no_cluster; and tracing.zipkin.spans_dropped, petrel's: spans let go
 * because the queue or the batch was full. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/rest_fetch.h"
#include "proxy/buf.h"
#include "proxy/cluster_manager.h"
#include "proxy/config.h"
#include "proxy/http.h"
#include "proxy/log.h"
#include "proxy/protobuf.h"
#include "proxy/trace_context.h"
#include "proxy/tracer.h"
#include "proxy/view.h"

#define REPORT_TIMEOUT_MS 5000

void pt_zipkin_parse(pt_cfg_t *r, pt_config_t *cfg, pt_tracer_t *t)
{
    const char *s;
    if (pt_cfg_string(r, "collector_cluster", &s, NULL) == 0 || s == NULL || !s[0])
        pt_cfg_error(r, "collector_cluster", "is required");
    else if (!cfg->has_cds && !pt_config_cluster_exists(cfg, s))
        pt_cfg_error(r, "collector_cluster", "cluster \"%s\" does not exist", s);
    t->collector_cluster = strdup(s ? s : "");
    if (pt_cfg_string(r, "collector_endpoint", &s, NULL) == 0 || s == NULL || !s[0])
        pt_cfg_error(r, "collector_endpoint", "is required");
    else if (s[0] != '/')
        pt_cfg_error(r, "collector_endpoint", "\"%s\" is not a path (it must start with /)", s);
    t->collector_endpoint = strdup(s ? s : "/");
    pt_cfg_string(r, "collector_hostname", &s, NULL);
    t->collector_hostname = strdup(s != NULL && s[0] ? s : t->collector_cluster);
    static const char *const versions[] = {"DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", "HTTP_JSON",
                                           "HTTP_PROTO", NULL};
    static const char *const versions_known[] = {"GRPC", NULL};
    int v;
    pt_cfg_enum(r, "collector_endpoint_version", versions, versions_known, &v, 1);
    if (v == 0)
        pt_cfg_error(r, "collector_endpoint_version",
                     "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE (Zipkin v1) is not available");
    t->proto = v == 2;
    pt_cfg_bool(r, "trace_id_128bit", &t->trace_id_128bit, 0);
    pt_cfg_bool(r, "shared_span_context", &t->shared_span_context, 1);
    pt_cfg_bool(r, "split_spans_for_request", &t->split_spans, 0);
    /* trace_context_option: B3 always; USE_B3_WITH_W3C_PROPAGATION reads traceparent when
     * no B3 came and writes both. */
    static const char *const options[] = {"USE_B3", "USE_B3_WITH_W3C_PROPAGATION", NULL};
    int opt;
    pt_cfg_enum(r, "trace_context_option", options, NULL, &opt, 0);
    t->extract_b3 = t->inject_b3 = 1;
    t->extract_w3c = t->inject_w3c = opt == 1;
    if (t->collector_cluster == NULL || t->collector_endpoint == NULL ||
        t->collector_hostname == NULL)
        pt_cfg_error(r, NULL, "out of memory");
}

/* ---- encoding ---------------------------------------------------------------------- */

/* The report's buffer: room is reserved once per span for the most that span can take,
 * then written through a plain pointer (no check per field). */
typedef struct jbuf {
    char *p;
    size_t len, cap;
    int failed;
} jbuf_t;

/* A pointer to room for n more bytes, or NULL (failed) when memory runs out. */
static char *jb_reserve(jbuf_t *b, size_t n)
{
    if (b->failed)
        return NULL;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->len;
}

#define PUT_LIT(o, lit) (memcpy(o, lit, sizeof(lit) - 1), (o) += sizeof(lit) - 1)

/* The most a string of n bytes takes as JSON: every byte may become a 6-byte escape, and
 * the quotes. */
#define JSON_MAX(n) (6 * (size_t)(n) + 2)

/* Decimal, two digits at a time from the end (timestamps have sixteen). */
static char *put_u64(char *o, uint64_t v)
{
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324"
                                   "25262728293031323334353637383940414243444546474849"
                                   "50515253545556575859606162636465666768697071727374"
                                   "75767778798081828384858687888990919293949596979899";
    static const uint64_t pow10[20] = {1ull,
                                       10ull,
                                       100ull,
                                       1000ull,
                                       10000ull,
                                       100000ull,
                                       1000000ull,
                                       10000000ull,
                                       100000000ull,
                                       1000000000ull,
                                       10000000000ull,
                                       100000000000ull,
                                       1000000000000ull,
                                       10000000000000ull,
                                       100000000000000ull,
                                       1000000000000000ull,
                                       10000000000000000ull,
                                       100000000000000000ull,
                                       1000000000000000000ull,
                                       10000000000000000000ull};
    /* The digits: log10 from the bit length (1233 / 4096 ~ log10(2)), corrected by one. */
    unsigned t = ((64u - (unsigned)__builtin_clzll(v | 1)) * 1233u) >> 12;
    unsigned n = t + 1 - (v < pow10[t]);
    if (n == 0)
        n = 1;
    char *p = o + n;
    while (v >= 100) {
        p -= 2;
        memcpy(p, pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10)
        memcpy(p - 2, pairs + 2 * v, 2);
    else
        p[-1] = (char)('0' + v);
    return o + n;
}

/* The length of a valid UTF-8 sequence at s (1-4), or 0. The string is NUL-terminated, and a
 * NUL is never a continuation byte, so no read passes its end. */
static size_t utf8_len(const unsigned char *s)
{
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (s[0] >= 0xe0 && s[0] <= 0xef) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f))
            return 0; /* overlong, surrogate */
        return 3;
    }
    if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
}

/* The body of a JSON string (no quotes): escapes for '"', '\\' and control characters, and
 * U+FFFD for a byte that is not valid UTF-8 (a header value may hold anything); a NUL ends
 * it. At most JSON_MAX(n) - 2 bytes at o. */
static char *put_escaped(char *o, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* 1: the byte ends a run of bytes written as they are (NUL, control, '"', '\\', non-ASCII). */
    static const uint8_t special[256] = {
        [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1};
    const unsigned char *s = (const unsigned char *)str, *end = s + n;
    /* Eight bytes at a time while none is special (most values are plain ASCII). */
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    if (n < 8) {
        /* A short string: checked as one word padded with plain bytes, and written as eight
         * bytes (the room reserved for it, 6 * n + 2, plus what follows, always holds
         * them). */
        char w[8] = "aaaaaaaa";
        pt_span_copy(w, str, n);
        uint64_t x, q, bs;
        memcpy(&x, w, 8);
        q = x ^ (ones * '"');
        bs = x ^ (ones * '\\');
        uint64_t hit = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs) | x;
        if (!(hit & highs)) {
            memcpy(o, w, 8);
            return o + n;
        }
    }
    while (s + 8 <= end) {
        uint64_t x, q, bs;
        memcpy(&x, s, 8);
        q = x ^ (ones * '"');
        bs = x ^ (ones * '\\');
        uint64_t hit = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs) | x;
        if (hit & highs)
            break;
        memcpy(o, s, 8);
        o += 8;
        s += 8;
    }
    if (s < end && end - s < 8 && n >= 8) {
        /* The last bytes: the final eight checked at once (the first of them were written
         * as they are), and written again over themselves when none is special. */
        uint64_t x, q, bs;
        memcpy(&x, end - 8, 8);
        q = x ^ (ones * '"');
        bs = x ^ (ones * '\\');
        uint64_t hit = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs) | x;
        if (!(hit & highs)) {
            o += end - s;
            memcpy(o - 8, end - 8, 8);
            return o;
        }
    }
    while (s < end) {
        unsigned char c = *s;
        if (!special[c]) {
            *o++ = (char)c;
            s++;
        } else if (c == 0) {
            break;
        } else if (c == '"' || c == '\\') {
            o[0] = '\\';
            o[1] = (char)c;
            o += 2;
            s++;
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
            s++;
        } else {
            size_t k = utf8_len(s);
            if (k == 0 || s + k > end) {
                PUT_LIT(o, "\\ufffd");
                s++;
            } else {
                memcpy(o, s, k);
                o += k;
                s += k;
            }
        }
    }
    return o;
}

/* A JSON string: as it is when `plain` (known to need no escape), else escaped. */
static char *put_jstr(char *o, const char *s, size_t n, int plain)
{
    *o++ = '"';
    if (plain) {
        pt_span_copy(o, s, n);
        o += n;
    } else {
        o = put_escaped(o, s, n);
    }
    *o++ = '"';
    return o;
}

/* ---- the tags, written straight from the record ---------------------------------------
 * A record without custom tags (nearly all of them) has its tags written here without a
 * tag list: the names and their punctuation are constants, numbers and addresses are
 * formatted in place, and only the strings a request brought are escaped. The order and
 * the text are pt_span_tags's (proxy/span_tags.c), which the records with custom tags go
 * through; the unit tests hold both to the same bytes. */

/* A record's string, escaped, with its quotes. */
static char *put_rec_str(char *o, const pt_span_str_t *v)
{
    return put_jstr(o, v->p, v->len, 0);
}

/* The same string again: the n bytes written at `from` copied. */
static char *put_again(char *o, const char *from, size_t n)
{
    pt_span_copy(o, from, n);
    return o + n;
}

/* Each octet's decimal text: an address is four loads and four short copies. */
static const struct {
    char s[4];
    uint8_t n;
} octets[256] = {
    {"0", 1},   {"1", 1},   {"2", 1},   {"3", 1},   {"4", 1},   {"5", 1},   {"6", 1},   {"7", 1},
    {"8", 1},   {"9", 1},   {"10", 2},  {"11", 2},  {"12", 2},  {"13", 2},  {"14", 2},  {"15", 2},
    {"16", 2},  {"17", 2},  {"18", 2},  {"19", 2},  {"20", 2},  {"21", 2},  {"22", 2},  {"23", 2},
    {"24", 2},  {"25", 2},  {"26", 2},  {"27", 2},  {"28", 2},  {"29", 2},  {"30", 2},  {"31", 2},
    {"32", 2},  {"33", 2},  {"34", 2},  {"35", 2},  {"36", 2},  {"37", 2},  {"38", 2},  {"39", 2},
    {"40", 2},  {"41", 2},  {"42", 2},  {"43", 2},  {"44", 2},  {"45", 2},  {"46", 2},  {"47", 2},
    {"48", 2},  {"49", 2},  {"50", 2},  {"51", 2},  {"52", 2},  {"53", 2},  {"54", 2},  {"55", 2},
    {"56", 2},  {"57", 2},  {"58", 2},  {"59", 2},  {"60", 2},  {"61", 2},  {"62", 2},  {"63", 2},
    {"64", 2},  {"65", 2},  {"66", 2},  {"67", 2},  {"68", 2},  {"69", 2},  {"70", 2},  {"71", 2},
    {"72", 2},  {"73", 2},  {"74", 2},  {"75", 2},  {"76", 2},  {"77", 2},  {"78", 2},  {"79", 2},
    {"80", 2},  {"81", 2},  {"82", 2},  {"83", 2},  {"84", 2},  {"85", 2},  {"86", 2},  {"87", 2},
    {"88", 2},  {"89", 2},  {"90", 2},  {"91", 2},  {"92", 2},  {"93", 2},  {"94", 2},  {"95", 2},
    {"96", 2},  {"97", 2},  {"98", 2},  {"99", 2},  {"100", 3}, {"101", 3}, {"102", 3}, {"103", 3},
    {"104", 3}, {"105", 3}, {"106", 3}, {"107", 3}, {"108", 3}, {"109", 3}, {"110", 3}, {"111", 3},
    {"112", 3}, {"113", 3}, {"114", 3}, {"115", 3}, {"116", 3}, {"117", 3}, {"118", 3}, {"119", 3},
    {"120", 3}, {"121", 3}, {"122", 3}, {"123", 3}, {"124", 3}, {"125", 3}, {"126", 3}, {"127", 3},
    {"128", 3}, {"129", 3}, {"130", 3}, {"131", 3}, {"132", 3}, {"133", 3}, {"134", 3}, {"135", 3},
    {"136", 3}, {"137", 3}, {"138", 3}, {"139", 3}, {"140", 3}, {"141", 3}, {"142", 3}, {"143", 3},
    {"144", 3}, {"145", 3}, {"146", 3}, {"147", 3}, {"148", 3}, {"149", 3}, {"150", 3}, {"151", 3},
    {"152", 3}, {"153", 3}, {"154", 3}, {"155", 3}, {"156", 3}, {"157", 3}, {"158", 3}, {"159", 3},
    {"160", 3}, {"161", 3}, {"162", 3}, {"163", 3}, {"164", 3}, {"165", 3}, {"166", 3}, {"167", 3},
    {"168", 3}, {"169", 3}, {"170", 3}, {"171", 3}, {"172", 3}, {"173", 3}, {"174", 3}, {"175", 3},
    {"176", 3}, {"177", 3}, {"178", 3}, {"179", 3}, {"180", 3}, {"181", 3}, {"182", 3}, {"183", 3},
    {"184", 3}, {"185", 3}, {"186", 3}, {"187", 3}, {"188", 3}, {"189", 3}, {"190", 3}, {"191", 3},
    {"192", 3}, {"193", 3}, {"194", 3}, {"195", 3}, {"196", 3}, {"197", 3}, {"198", 3}, {"199", 3},
    {"200", 3}, {"201", 3}, {"202", 3}, {"203", 3}, {"204", 3}, {"205", 3}, {"206", 3}, {"207", 3},
    {"208", 3}, {"209", 3}, {"210", 3}, {"211", 3}, {"212", 3}, {"213", 3}, {"214", 3}, {"215", 3},
    {"216", 3}, {"217", 3}, {"218", 3}, {"219", 3}, {"220", 3}, {"221", 3}, {"222", 3}, {"223", 3},
    {"224", 3}, {"225", 3}, {"226", 3}, {"227", 3}, {"228", 3}, {"229", 3}, {"230", 3}, {"231", 3},
    {"232", 3}, {"233", 3}, {"234", 3}, {"235", 3}, {"236", 3}, {"237", 3}, {"238", 3}, {"239", 3},
    {"240", 3}, {"241", 3}, {"242", 3}, {"243", 3}, {"244", 3}, {"245", 3}, {"246", 3}, {"247", 3},
    {"248", 3}, {"249", 3}, {"250", 3}, {"251", 3}, {"252", 3}, {"253", 3}, {"254", 3}, {"255", 3}};

/* An address as a JSON string: an IP formatted in place; anything else (a Unix socket's
 * path) formatted aside and escaped. */
static char *put_addr(char *o, const pt_addr_t *a)
{
    if (a->sa.sa_family == AF_INET) {
        const uint8_t *b = (const uint8_t *)&a->sin.sin_addr;
        *o++ = '"';
        for (int i = 0; i < 4; i++) {
            memcpy(o, octets[b[i]].s, 4); /* the room holds the fourth byte */
            o += octets[b[i]].n;
            *o++ = '.';
        }
        o[-1] = '"';
        return o;
    }
    if (a->sa.sa_family == AF_INET6) {
        *o++ = '"';
        pt_addr_format_ip(a, o, PT_ADDR_STRLEN);
        o += strlen(o);
        *o++ = '"';
        return o;
    }
    char tmp[PT_ADDR_STRLEN];
    pt_addr_format_ip(a, tmp, sizeof(tmp));
    return put_jstr(o, tmp, strlen(tmp), 0);
}

static char *put_num_str(char *o, uint64_t v)
{
    *o++ = '"';
    o = put_u64(o, v);
    *o++ = '"';
    return o;
}

static char *request_tags(char *o, const pt_span_rec_t *rec)
{
    const pt_span_str_t *s = rec->str;
    PUT_LIT(o, "\"component\":\"proxy\"");
    if (s[PT_SPAN_S_NODE_ID].p != NULL) {
        PUT_LIT(o, ",\"node_id\":");
        o = put_rec_str(o, &s[PT_SPAN_S_NODE_ID]);
    }
    if (s[PT_SPAN_S_ZONE].p != NULL) {
        PUT_LIT(o, ",\"zone\":");
        o = put_rec_str(o, &s[PT_SPAN_S_ZONE]);
    }
    if (rec->headers) {
        if (s[PT_SPAN_S_REQUEST_ID].p != NULL) {
            PUT_LIT(o, ",\"guid:x-request-id\":");
            o = put_rec_str(o, &s[PT_SPAN_S_REQUEST_ID]);
        }
        if (s[PT_SPAN_S_URL].p != NULL) {
            PUT_LIT(o, ",\"http.url\":");
            o = put_rec_str(o, &s[PT_SPAN_S_URL]);
        }
        if (s[PT_SPAN_S_METHOD].p != NULL) {
            PUT_LIT(o, ",\"http.method\":");
            o = put_rec_str(o, &s[PT_SPAN_S_METHOD]);
        }
        PUT_LIT(o, ",\"downstream_cluster\":");
        if (s[PT_SPAN_S_DOWNSTREAM_CLUSTER].p != NULL)
            o = put_rec_str(o, &s[PT_SPAN_S_DOWNSTREAM_CLUSTER]);
        else
            PUT_LIT(o, "\"-\"");
        PUT_LIT(o, ",\"user_agent\":");
        if (s[PT_SPAN_S_USER_AGENT].p != NULL)
            o = put_rec_str(o, &s[PT_SPAN_S_USER_AGENT]);
        else
            PUT_LIT(o, "\"-\"");
    }
    if (rec->protocol != NULL) {
        PUT_LIT(o, ",\"http.protocol\":");
        o = put_jstr(o, rec->protocol, strlen(rec->protocol), 1);
    }
    PUT_LIT(o, ",\"peer.address\":");
    o = put_addr(o, &rec->peer);
    PUT_LIT(o, ",\"request_size\":");
    o = put_num_str(o, rec->bytes_received);
    PUT_LIT(o, ",\"response_size\":");
    o = put_num_str(o, rec->bytes_sent);
    if (s[PT_SPAN_S_CLUSTER].p != NULL) {
        PUT_LIT(o, ",\"upstream_cluster\":");
        char *v = o;
        o = put_rec_str(o, &s[PT_SPAN_S_CLUSTER]);
        size_t vlen = (size_t)(o - v);
        PUT_LIT(o, ",\"upstream_cluster.name\":");
        o = put_again(o, v, vlen);
    }
    PUT_LIT(o, ",\"http.status_code\":");
    o = put_num_str(o, (uint64_t)rec->status);
    PUT_LIT(o, ",\"response_flags\":");
    if (rec->response_flags == 0) {
        PUT_LIT(o, "\"-\"");
    } else {
        char flags[128];
        pt_response_flags_str(rec->response_flags, flags, sizeof(flags));
        o = put_jstr(o, flags, strlen(flags), 1);
    }
    if (rec->status == 0 || rec->status >= 500)
        PUT_LIT(o, ",\"error\":\"true\"");
    return o;
}

static char *try_tags(char *o, const pt_span_rec_t *rec)
{
    const pt_span_str_t *s = rec->str;
    PUT_LIT(o, "\"component\":\"proxy\"");
    if (s[PT_SPAN_S_CLUSTER].p != NULL) {
        PUT_LIT(o, ",\"upstream_cluster\":");
        char *v = o;
        o = put_rec_str(o, &s[PT_SPAN_S_CLUSTER]);
        size_t vlen = (size_t)(o - v);
        PUT_LIT(o, ",\"upstream_cluster.name\":");
        o = put_again(o, v, vlen);
    }
    if (s[PT_SPAN_S_UPSTREAM_HOST].p != NULL) {
        PUT_LIT(o, ",\"upstream_address\":");
        char *v = o;
        o = put_rec_str(o, &s[PT_SPAN_S_UPSTREAM_HOST]);
        size_t vlen = (size_t)(o - v);
        PUT_LIT(o, ",\"peer.address\":");
        o = put_again(o, v, vlen);
    }
    if (rec->protocol != NULL) {
        PUT_LIT(o, ",\"http.protocol\":");
        o = put_jstr(o, rec->protocol, strlen(rec->protocol), 1);
    }
    PUT_LIT(o, ",\"http.status_code\":");
    o = put_num_str(o, (uint64_t)rec->status);
    PUT_LIT(o, ",\"retry.count\":");
    o = put_num_str(o, rec->retries);
    if (rec->status == 0 || rec->status >= 500)
        PUT_LIT(o, ",\"error\":\"true\"");
    return o;
}

/* The tags through pt_span_tags (a record with custom tags). */
static char *listed_tags(char *o, const pt_span_tags_t *tags)
{
    for (unsigned k = 0; k < tags->n; k++) {
        const pt_span_tag_t *t = &tags->tag[k];
        if (k > 0)
            *o++ = ',';
        o = put_jstr(o, t->key, t->klen, t->plain & PT_TAG_KEY_PLAIN);
        *o++ = ':';
        o = put_jstr(o, t->value, t->vlen, t->plain & PT_TAG_VALUE_PLAIN);
    }
    return o;
}

/* The most a record's span takes as JSON, its tags written from the record. */
static size_t json_max(const pt_span_rec_t *sp, size_t svc_len)
{
    /* The fixed text, ids, numbers and flags take under 800 bytes (the skeleton about 270,
     * the tag names and fixed values about 500, flags included); each address at most
     * JSON_MAX(PT_ADDR_STRLEN) (a Unix socket's path, escaped); 32 more for the few bytes a
     * string or an id may write past its end before the next is written over them. */
    size_t n = 832 + 2 * JSON_MAX(PT_ADDR_STRLEN) + JSON_MAX(svc_len) +
               JSON_MAX(sp->str[PT_SPAN_S_CLUSTER].len) +
               JSON_MAX(sp->str[PT_SPAN_S_UPSTREAM_HOST].len);
    for (unsigned i = 0; i < PT_SPAN_NSTR; i++)
        n += JSON_MAX(sp->str[i].len);
    return n;
}

/* The most a span takes as JSON (tags: filled for a record with custom tags). */
static size_t span_json_max(const pt_span_rec_t *sp, pt_span_tags_t *tags)
{
    size_t svc_len = strlen(sp->tracer->service_name);
    if (sp->ncustom == 0)
        return json_max(sp, svc_len);
    pt_span_tags(sp, tags);
    size_t need = 320 + JSON_MAX(sp->str[PT_SPAN_S_NAME].len) + JSON_MAX(svc_len) +
                  JSON_MAX(tags->local_ip_len);
    for (unsigned k = 0; k < tags->n; k++)
        need += JSON_MAX(tags->tag[k].klen) + JSON_MAX(tags->tag[k].vlen) + 2;
    return need;
}

/* One span's JSON object at o, in the room span_json_max said; returns its end. */
static char *span_json(char *o, const pt_span_rec_t *sp, const pt_span_tags_t *tags)
{
    const char *svc = sp->tracer->service_name;
    const pt_span_str_t *name = &sp->str[PT_SPAN_S_NAME];
    PUT_LIT(o, "{\"traceId\":\"");
    o += pt_trace_id_hex(sp->trace_hi, sp->trace_lo, 1, o);
    PUT_LIT(o, "\",\"id\":\"");
    pt_trace_hex64(sp->id, o);
    o += 16;
    if (sp->parent_id != 0) {
        PUT_LIT(o, "\",\"parentId\":\"");
        pt_trace_hex64(sp->parent_id, o);
        o += 16;
    }
    PUT_LIT(o, "\",\"name\":");
    o = put_jstr(o, name->p != NULL ? name->p : "", name->len, 0);
    if (sp->kind == PT_SPAN_CLIENT)
        PUT_LIT(o, ",\"kind\":\"CLIENT\",\"timestamp\":");
    else
        PUT_LIT(o, ",\"kind\":\"SERVER\",\"timestamp\":");
    o = put_u64(o, sp->start_us);
    PUT_LIT(o, ",\"duration\":");
    o = put_u64(o, sp->duration_us);
    PUT_LIT(o, ",\"localEndpoint\":{\"serviceName\":");
    o = put_jstr(o, svc, strlen(svc), 0);
    if (!sp->upstream_try) {
        /* The local address: "ipv6" when it holds a ':' (what pt_span_tags formats). */
        char *v = o + 8;
        PUT_LIT(o, ",\"ipv4\":");
        o = put_addr(o, &sp->local);
        if (memchr(v, ':', (size_t)(o - v)) != NULL)
            memcpy(v - 6, "ipv6", 4);
    }
    *o++ = '}';
    if (sp->shared)
        PUT_LIT(o, ",\"shared\":true");
    if (sp->debug)
        PUT_LIT(o, ",\"debug\":true");
    PUT_LIT(o, ",\"tags\":{");
    if (sp->ncustom > 0)
        o = listed_tags(o, tags);
    else if (sp->upstream_try)
        o = try_tags(o, sp);
    else
        o = request_tags(o, sp);
    PUT_LIT(o, "}}");
    return o;
}

/* Zipkin v2 JSON, written directly from the records (a report of hundreds of spans is
 * encoded on the main thread every flush: no tree of objects, no printf). */
char *pt_zipkin_encode_json(pt_span_rec_t *const *spans, unsigned n, size_t *len)
{
    jbuf_t b = {0};
    pt_span_tags_t tags;
    char *o = jb_reserve(&b, 2);
    if (o != NULL) {
        *o = '[';
        b.len = 1;
    }
    for (unsigned i = 0; i < n; i++) {
        o = jb_reserve(&b, span_json_max(spans[i], &tags) + 1);
        if (o == NULL)
            break;
        char *start = o;
        if (i > 0)
            *o++ = ',';
        o = span_json(o, spans[i], &tags);
        b.len += (size_t)(o - start);
    }
    o = jb_reserve(&b, 2);
    if (o == NULL) {
        free(b.p);
        return NULL;
    }
    o[0] = ']';
    o[1] = '\0';
    *len = b.len + 1;
    return b.p;
}

int pt_zipkin_encode_json_buf(pt_span_rec_t *const *spans, unsigned n, pt_buf_t *out)
{
    pt_span_tags_t tags;
    if (pt_buf_append(out, "[", 1) != 0)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        size_t need = span_json_max(spans[i], &tags) + 1, avail;
        /* Most spans fit the buffer's current chunk, or a new one; a huge one is written
         * aside and copied. */
        int aside = need > PT_BUF_CHUNK_SIZE / 2;
        char *start = aside ? malloc(need) : pt_buf_reserve(out, need, &avail);
        if (start == NULL)
            return -1;
        char *o = start;
        if (i > 0)
            *o++ = ',';
        o = span_json(o, spans[i], &tags);
        if (!aside) {
            pt_buf_commit(out, (size_t)(o - start));
        } else {
            int rc = pt_buf_append(out, start, (size_t)(o - start));
            free(start);
            if (rc != 0)
                return -1;
        }
    }
    return pt_buf_append(out, "]", 1) != 0 ? -1 : 0;
}

static void put_id(pt_pb_writer_t *w, uint32_t field, uint64_t hi, uint64_t lo, int wide)
{
    uint8_t b[16];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(hi >> (56 - 8 * i));
        b[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
    }
    if (wide)
        pt_pb_put_bytes(w, field, b, 16);
    else
        pt_pb_put_bytes(w, field, b + 8, 8);
}

static void put_string(pt_pb_writer_t *w, uint32_t field, const char *s)
{
    pt_pb_put_bytes(w, field, s, strlen(s));
}

/* zipkin.proto3: ListOfSpans { repeated Span spans = 1; }, Span { bytes trace_id = 1;
 * bytes parent_id = 2; bytes id = 3; Kind kind = 4 (CLIENT 1, SERVER 2); string name = 5;
 * fixed64 timestamp = 6; uint64 duration = 7; Endpoint local_endpoint = 8;
 * map<string, string> tags = 11; bool debug = 12; bool shared = 13; },
 * Endpoint { string service_name = 1; bytes ipv4 = 2; bytes ipv6 = 3; }. */
void *pt_zipkin_encode_proto(pt_span_rec_t *const *spans, unsigned n, size_t *len)
{
    pt_pb_writer_t w;
    pt_span_tags_t tags;
    pt_pb_writer_init(&w);
    for (unsigned i = 0; i < n; i++) {
        const pt_span_rec_t *sp = spans[i];
        pt_span_tags(sp, &tags);
        size_t span = pt_pb_begin_len(&w, 1);
        put_id(&w, 1, sp->trace_hi, sp->trace_lo, sp->trace_hi != 0);
        if (sp->parent_id != 0)
            put_id(&w, 2, 0, sp->parent_id, 0);
        put_id(&w, 3, 0, sp->id, 0);
        pt_pb_put_tag(&w, 4, 0);
        pt_pb_put_varint(&w, sp->kind == PT_SPAN_CLIENT ? 1 : 2);
        pt_pb_put_bytes(&w, 5, sp->str[PT_SPAN_S_NAME].p, sp->str[PT_SPAN_S_NAME].len);
        pt_pb_put_tag(&w, 6, 1);
        pt_pb_put_fixed64(&w, sp->start_us);
        pt_pb_put_tag(&w, 7, 0);
        pt_pb_put_varint(&w, sp->duration_us);
        size_t ep = pt_pb_begin_len(&w, 8);
        put_string(&w, 1, sp->tracer->service_name);
        if (tags.local_ip != NULL) {
            uint8_t a[16];
            if (inet_pton(AF_INET, tags.local_ip, a) == 1)
                pt_pb_put_bytes(&w, 2, a, 4);
            else if (inet_pton(AF_INET6, tags.local_ip, a) == 1)
                pt_pb_put_bytes(&w, 3, a, 16);
        }
        pt_pb_end_len(&w, ep);
        for (unsigned k = 0; k < tags.n; k++) {
            size_t e = pt_pb_begin_len(&w, 11);
            pt_pb_put_bytes(&w, 1, tags.tag[k].key, tags.tag[k].klen);
            pt_pb_put_bytes(&w, 2, tags.tag[k].value, tags.tag[k].vlen);
            pt_pb_end_len(&w, e);
        }
        if (sp->debug) {
            pt_pb_put_tag(&w, 12, 0);
            pt_pb_put_varint(&w, 1);
        }
        if (sp->shared) {
            pt_pb_put_tag(&w, 13, 0);
            pt_pb_put_varint(&w, 1);
        }
        pt_pb_end_len(&w, span);
    }
    if (w.failed) {
        pt_pb_writer_dispose(&w);
        return NULL;
    }
    *len = w.len;
    return w.buf; /* the caller frees it */
}

/* ---- sending ----------------------------------------------------------------------- */

static void on_report_done(void *data, int status, const char *body, size_t len, const char *why)
{
    (void)body;
    (void)len;
    pt_tracer_t *t = data;
    pt_rest_fetch_free(t->fetch);
    t->fetch = NULL;
    if (status == 202) {
        pt_stat_inc(t->stats.reports_sent);
    } else if (status != 0) {
        pt_stat_inc(t->stats.reports_dropped);
        pt_debug("zipkin: the collector answered %d", status);
    } else {
        pt_stat_inc(t->stats.reports_failed);
        pt_debug("zipkin: report failed: %s", why);
    }
}

static int zipkin_ready(pt_tracer_t *t)
{
    return t->fetch == NULL;
}

static void zipkin_flush(pt_tracer_t *t, pt_span_rec_t **spans, unsigned n)
{
    /* JSON is written into the request's own buffer (no copy of the report); proto is one
     * block, copied into it. */
    pt_buf_t body = {0};
    int rc;
    if (t->proto) {
        size_t len = 0;
        void *pb = pt_zipkin_encode_proto(spans, n, &len);
        rc = pb != NULL && pt_buf_append(&body, pb, len) == 0 ? 0 : -1;
        free(pb);
    } else {
        rc = pt_zipkin_encode_json_buf(spans, n, &body);
    }
    for (unsigned i = 0; i < n; i++)
        pt_span_rec_free(spans[i]);
    if (rc != 0) {
        pt_buf_dispose(&body);
        pt_stat_add(t->stats.spans_dropped, n);
        return;
    }
    pt_stat_add(t->stats.spans_sent, n);
    pt_tracer_send_report_buf(t, &body, t->proto ? "application/x-protobuf" : "application/json",
                              REPORT_TIMEOUT_MS, 0, on_report_done);
}

const pt_exporter_ops_t pt_zipkin_ops = {
    .flush = zipkin_flush,
    .ready = zipkin_ready,
};
