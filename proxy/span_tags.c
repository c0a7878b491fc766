/* A span record's tags (proxy/tracer.h), formatted on the main thread as the exporters
 * write them: the worker copies only the strings a request holds and leaves numbers, flags
 * and addresses binary, so each is formatted once, here, and the fixed names and the
 * formatted values are marked as needing no JSON escaping. The order is Envoy's (the
 * request's span: component, node_id, zone, guid:x-request-id, http.url, http.method,
 * downstream_cluster, user_agent, http.protocol, peer.address, request_size,
 * response_size, upstream_cluster, upstream_cluster.name, http.status_code,
 * response_flags, error; an upstream try's: component, upstream_cluster,
 * upstream_cluster.name, upstream_address, peer.address, http.protocol, http.status_code,
 * retry.count, error), then the custom tags. */
#include <string.h>

#include "proxy/http.h"
#include "proxy/tracer.h"

#define PLAIN (PT_TAG_KEY_PLAIN | PT_TAG_VALUE_PLAIN)

typedef struct builder {
    pt_span_tags_t *out;
    char *scratch, *end;
} builder_t;

static void put(builder_t *b, const char *k, uint32_t klen, const char *v, uint32_t vlen,
                uint8_t plain)
{
    pt_span_tags_t *o = b->out;
    if (o->n < PT_SPAN_MAX_TAGS)
        o->tag[o->n++] = (pt_span_tag_t){k, v, klen, vlen, plain};
}

/* A fixed name and a fixed value. */
#define PUT_LIT(b, k, v) put(b, k, sizeof(k) - 1, v, sizeof(v) - 1, PLAIN)

/* A fixed name and a string of the record (absent: no tag). */
static void put_str(builder_t *b, const char *k, uint32_t klen, const pt_span_str_t *v)
{
    if (v->p != NULL)
        put(b, k, klen, v->p, v->len, PT_TAG_KEY_PLAIN);
}
#define PUT_STR(b, k, v) put_str(b, k, sizeof(k) - 1, v)

/* A fixed name and a decimal number, written into the scratch space. */
static void put_num(builder_t *b, const char *k, uint32_t klen, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    uint32_t n = (uint32_t)(sizeof(tmp) - (size_t)i);
    if (b->end - b->scratch < (ptrdiff_t)n + 1)
        return;
    memcpy(b->scratch, tmp + i, n);
    b->scratch[n] = '\0';
    put(b, k, klen, b->scratch, n, PLAIN);
    b->scratch += n + 1;
}
#define PUT_NUM(b, k, v) put_num(b, k, sizeof(k) - 1, v)

/* The custom tags: each replaces a tag of its name, or comes last. */
static void put_custom(builder_t *b, const pt_span_rec_t *rec)
{
    pt_span_tags_t *o = b->out;
    for (unsigned i = 0; i < rec->ncustom; i++) {
        const pt_span_str_t *k = &rec->custom[2 * i], *v = &rec->custom[2 * i + 1];
        unsigned j = 0;
        while (j < o->n && !(o->tag[j].klen == k->len && memcmp(o->tag[j].key, k->p, k->len) == 0))
            j++;
        if (j < o->n) {
            o->tag[j].value = v->p;
            o->tag[j].vlen = v->len;
            o->tag[j].plain &= (uint8_t)~PT_TAG_VALUE_PLAIN;
        } else {
            put(b, k->p, k->len, v->p, v->len, 0);
        }
    }
}

static void request_tags(builder_t *b, const pt_span_rec_t *rec)
{
    const pt_span_str_t *s = rec->str;
    PUT_LIT(b, "component", "proxy");
    PUT_STR(b, "node_id", &s[PT_SPAN_S_NODE_ID]);
    PUT_STR(b, "zone", &s[PT_SPAN_S_ZONE]);
    if (rec->headers) {
        PUT_STR(b, "guid:x-request-id", &s[PT_SPAN_S_REQUEST_ID]);
        PUT_STR(b, "http.url", &s[PT_SPAN_S_URL]);
        PUT_STR(b, "http.method", &s[PT_SPAN_S_METHOD]);
        if (s[PT_SPAN_S_DOWNSTREAM_CLUSTER].p != NULL)
            PUT_STR(b, "downstream_cluster", &s[PT_SPAN_S_DOWNSTREAM_CLUSTER]);
        else
            PUT_LIT(b, "downstream_cluster", "-");
        if (s[PT_SPAN_S_USER_AGENT].p != NULL)
            PUT_STR(b, "user_agent", &s[PT_SPAN_S_USER_AGENT]);
        else
            PUT_LIT(b, "user_agent", "-");
    }
    if (rec->protocol != NULL)
        put(b, "http.protocol", 13, rec->protocol, (uint32_t)strlen(rec->protocol), PLAIN);
    if (b->end - b->scratch >= PT_ADDR_STRLEN) {
        pt_addr_format_ip(&rec->peer, b->scratch, PT_ADDR_STRLEN);
        uint32_t n = (uint32_t)strlen(b->scratch);
        /* A Unix socket's path may hold anything: only an IP is plain. */
        put(b, "peer.address", 12, b->scratch, n,
            rec->peer.sa.sa_family == AF_UNIX ? PT_TAG_KEY_PLAIN : PLAIN);
        b->scratch += n + 1;
    }
    PUT_NUM(b, "request_size", rec->bytes_received);
    PUT_NUM(b, "response_size", rec->bytes_sent);
    if (s[PT_SPAN_S_CLUSTER].p != NULL) {
        PUT_STR(b, "upstream_cluster", &s[PT_SPAN_S_CLUSTER]);
        PUT_STR(b, "upstream_cluster.name", &s[PT_SPAN_S_CLUSTER]);
    }
    PUT_NUM(b, "http.status_code", (uint64_t)rec->status);
    if (rec->response_flags == 0) {
        PUT_LIT(b, "response_flags", "-");
    } else if (b->end - b->scratch >= 128) {
        pt_response_flags_str(rec->response_flags, b->scratch, 128);
        uint32_t n = (uint32_t)strlen(b->scratch);
        put(b, "response_flags", 14, b->scratch, n, PLAIN);
        b->scratch += n + 1;
    }
    if (rec->status == 0 || rec->status >= 500) {
        PUT_LIT(b, "error", "true");
        b->out->error = 1;
    }
}

static void try_tags(builder_t *b, const pt_span_rec_t *rec)
{
    const pt_span_str_t *s = rec->str;
    PUT_LIT(b, "component", "proxy");
    PUT_STR(b, "upstream_cluster", &s[PT_SPAN_S_CLUSTER]);
    PUT_STR(b, "upstream_cluster.name", &s[PT_SPAN_S_CLUSTER]);
    PUT_STR(b, "upstream_address", &s[PT_SPAN_S_UPSTREAM_HOST]);
    PUT_STR(b, "peer.address", &s[PT_SPAN_S_UPSTREAM_HOST]);
    if (rec->protocol != NULL)
        put(b, "http.protocol", 13, rec->protocol, (uint32_t)strlen(rec->protocol), PLAIN);
    PUT_NUM(b, "http.status_code", (uint64_t)rec->status);
    PUT_NUM(b, "retry.count", rec->retries);
    if (rec->status == 0 || rec->status >= 500) {
        PUT_LIT(b, "error", "true");
        b->out->error = 1;
    }
}

void pt_span_tags(const pt_span_rec_t *rec, pt_span_tags_t *out)
{
    builder_t b = {out, out->scratch, out->scratch + sizeof(out->scratch)};
    out->n = 0;
    out->error = 0;
    out->local_ip = NULL;
    out->local_ip_len = 0;
    if (rec->upstream_try) {
        try_tags(&b, rec);
    } else {
        request_tags(&b, rec);
        pt_addr_format_ip(&rec->local, out->local_buf, sizeof(out->local_buf));
        out->local_ip = out->local_buf;
        out->local_ip_len = (uint32_t)strlen(out->local_buf);
    }
    if (rec->ncustom == 0)
        return;
    /* A custom tag may set or replace "error". */
    put_custom(&b, rec);
    out->error = 0;
    for (unsigned i = 0; i < out->n; i++)
        if (out->tag[i].klen == 5 && memcmp(out->tag[i].key, "error", 5) == 0 &&
            out->tag[i].vlen == 4 && memcmp(out->tag[i].value, "true", 4) == 0)
            out->error = 1;
}
