#include "discovery/discovery_response.h"
#include "proxy/cluster.h"
#include "proxy/proto_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLA_TYPE "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

/* The resource's own name, where its type keeps it (Envoy's resource decoders know the
 * same): a ClusterLoadAssignment is named by cluster_name, everything else by name. */
static const char *own_name(json_t *res, const char *type_url)
{
    int cla = strcmp(type_url, CLA_TYPE) == 0;
    json_t *v = json_object_get(res, cla ? "cluster_name" : "name");
    if (v == NULL && cla)
        v = json_object_get(res, "clusterName");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void join_errors(const pt_cfg_t *r, char *err, size_t errlen)
{
    size_t used = 0;
    err[0] = '\0';
    for (size_t i = 0; i < r->nerrors && used + 1 < errlen; i++) {
        int n = snprintf(err + used, errlen - used, "%s%s", i ? "; " : "", r->errors[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* One element of resources, the reader inside it. Fills *res when it holds a resource of
 * the expected type. */
static int read_element(pt_cfg_t *r, json_t *node, size_t i, const char *type_url,
                        pt_discovery_resource_t *res)
{
    const char *type;
    int trc = pt_cfg_string(r, "@type", &type, NULL);
    if (trc == 0)
        pt_cfg_error(r, "@type", "is required");
    if (trc <= 0) {
        pt_cfg_skip_rest(r);
        return 0;
    }
    if (strcmp(type, type_url) == 0) {
        res->json = node;
        res->name = own_name(node, type_url);
        snprintf(res->path, sizeof(res->path), "resources[%zu]", i);
        pt_cfg_skip_rest(r); /* its fields are the consumer's to read */
        return 1;
    }
    if (strcmp(type, PT_RESOURCE_WRAPPER_TYPE) != 0) {
        pt_cfg_error(r, "@type", "is %s, expected %s", type, type_url);
        pt_cfg_skip_rest(r);
        return 0;
    }
    /* envoy.service.discovery.v3.Resource: what delta xDS sends, and what Envoy accepts in
     * a state-of-the-world response too. */
    static const char *const wrapper_unsupported[] = {"resource_name", "aliases",  "ttl",
                                                      "cache_control", "metadata", NULL};
    pt_cfg_unsupported(r, wrapper_unsupported);
    const char *wname = NULL, *version = NULL;
    pt_cfg_string(r, "name", &wname, NULL);
    pt_cfg_string(r, "version", &version, NULL);
    int rc, found = 0;
    const char *inner = pt_cfg_enter_any(r, "resource", &rc);
    if (rc == 0)
        pt_cfg_error(r, "resource", "is required");
    if (inner == NULL)
        return 0;
    if (strcmp(inner, type_url) != 0) {
        pt_cfg_error(r, "@type", "is %s, expected %s", inner, type_url);
    } else {
        json_t *body = json_object_get(node, "resource");
        const char *iname = own_name(body, type_url);
        if (wname != NULL && iname != NULL && strcmp(wname, iname) != 0) {
            /* Reported at the wrapper's name, once back out of the resource. */
            found = -1;
        } else {
            res->json = body;
            res->name = wname ? wname : iname;
            res->version = version;
            snprintf(res->path, sizeof(res->path), "resources[%zu].resource", i);
            found = 1;
        }
    }
    pt_cfg_skip_rest(r);
    pt_cfg_leave(r);
    if (found < 0) {
        pt_cfg_error(r, "name", "\"%s\" is not the resource's name \"%s\"", wname,
                     own_name(json_object_get(node, "resource"), type_url));
        found = 0;
    }
    return found;
}

int pt_discovery_response_parse_protobuf(const void *buf, size_t len, const char *type_url,
                                         pt_discovery_response_t *out, char *err, size_t errlen)
{
    const pt_pb_message_t *msg =
        pt_pb_message_find("envoy.service.discovery.v3.DiscoveryResponse");
    memset(out, 0, sizeof(*out));
    out->version_info = "";
    json_t *root = pt_pb_to_json(msg, buf, len, NULL, err, errlen);
    if (root == NULL)
        return -1;
    int rc = pt_discovery_response_parse(root, type_url, out, err, errlen);
    json_decref(root); /* out holds its own reference */
    return rc;
}

int pt_discovery_response_parse(json_t *root, const char *type_url, pt_discovery_response_t *out,
                                char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->version_info = "";
    if (!json_is_object(root)) {
        snprintf(err, errlen, "(root): a DiscoveryResponse must be an object");
        return -1;
    }
    out->root = json_incref(root);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_cfg_set_message(&r, "envoy.service.discovery.v3.DiscoveryResponse");
    const char *s;
    if (pt_cfg_string(&r, "version_info", &s, "") >= 0)
        out->version_info = s;
    if (pt_cfg_string(&r, "type_url", &s, NULL) > 0 && strcmp(s, type_url) != 0)
        pt_cfg_error(&r, "type_url", "is %s, expected %s", s, type_url);
    /* What a control plane puts in its responses; nothing for a consumer. */
    pt_cfg_string(&r, "nonce", &s, NULL);
    int canary;
    pt_cfg_bool(&r, "canary", &canary, 0);
    if (pt_cfg_enter(&r, "control_plane") > 0) {
        pt_cfg_string(&r, "identifier", &s, NULL);
        pt_cfg_leave(&r);
    }
    int present;
    size_t n = pt_cfg_array(&r, "resources", &present);
    out->resources = calloc(n ? n : 1, sizeof(*out->resources));
    json_t *names = json_object(); /* name -> index of its first resource */
    if (out->resources == NULL || names == NULL) {
        pt_cfg_error(&r, "resources", "out of memory");
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(&r, i) <= 0)
            continue;
        json_t *node = json_array_get(json_object_get(root, "resources"), i);
        pt_discovery_resource_t *res = &out->resources[out->nresources];
        int got = read_element(&r, node, i, type_url, res);
        res->index = i;
        pt_cfg_leave(&r);
        if (!got)
            continue;
        if (res->name != NULL) {
            json_t *first = json_object_get(names, res->name);
            if (first != NULL) {
                size_t saved = r.path_len;
                pt_cfg_push_index(&r, i);
                pt_cfg_error(&r, NULL, "duplicate name \"%s\" (resources[%lld] has it too)",
                             res->name, (long long)json_integer_value(first));
                pt_cfg_pop_path(&r, saved);
                continue;
            }
            json_object_set_new(names, res->name, json_integer((json_int_t)i));
        }
        out->nresources++;
    }
    json_decref(names);
    if (present)
        pt_cfg_leave_array(&r);
    pt_cfg_finish(&r);
    int rc = 0;
    if (!pt_cfg_ok(&r)) {
        join_errors(&r, err, errlen);
        rc = -1;
    }
    pt_cfg_dispose(&r);
    return rc;
}

/* ---- reading resource by resource ------------------------------------------------- */

/* Where a response's resources are in its JSON text, and how far they were read. */
struct pt_discovery_stream {
    const char *text;   /* borrowed: the caller's, for the response's life */
    int broken;         /* the list itself is malformed: nothing more is read */
    int whole;          /* the list ended before `end`: the response must be read whole */
    size_t pos, end;    /* the next element from pos; end is the array's ']' */
    size_t index;       /* of the next element */
    const char *type_url;
    json_t *current;    /* the last element's tree, freed with the next call */
    json_t *names;      /* name -> index, for duplicates */
};

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *t, size_t i, size_t len)
{
    while (i < len && is_ws(t[i]))
        i++;
    return i;
}

/* The end of the JSON value at t[i] (one past it), or 0 when it is not well formed as far
 * as nesting and strings go (what it holds is jansson's to judge) or nests deeper than
 * max_depth. */
static size_t skip_value(const char *t, size_t i, size_t len, unsigned max_depth)
{
    char open[PT_DOC_MAX_DEPTH]; /* the brackets open, innermost last */
    unsigned depth = 0;
    if (max_depth > PT_DOC_MAX_DEPTH)
        max_depth = PT_DOC_MAX_DEPTH;
    while (i < len) {
        char c = t[i];
        if (c == '"') {
            for (i++; i < len && t[i] != '"'; i++)
                if (t[i] == '\\')
                    i++;
            if (i >= len)
                return 0;
            i++;
        } else if (c == '{' || c == '[') {
            if (depth == max_depth)
                return 0;
            open[depth++] = c;
            i++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return i; /* the end of a scalar inside a container */
            if (open[--depth] != (c == '}' ? '{' : '['))
                return 0; /* mismatched */
            i++;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return i;
        } else {
            i++;
        }
        if (depth == 0 && (c == '"' || c == '}' || c == ']'))
            return i;
    }
    return depth == 0 ? i : 0;
}

/* The span of the top level's "resources" array: [*open, *close] are its brackets. 0, or
 * -1 when the text is not a plain object whose last member is such an array (the whole
 * document is then parsed as usual, and whatever is wrong reported from there).
 *
 * The members before the list are scanned; the list is not: its closing bracket is taken
 * to be the text's last ']' (the object's '}' follows it), so a 13 MB list is not scanned
 * once here and again element by element. Should another member follow the list after all
 * (and end in ']'), reading the elements meets the list's real end before that bracket,
 * and the response is then read whole (pt_discovery_response_read_whole). */
static int find_resources(const char *t, size_t len, size_t *open, size_t *close)
{
    size_t i = skip_ws(t, 0, len);
    if (i >= len || t[i] != '{')
        return -1;
    i = skip_ws(t, i + 1, len);
    while (i < len && t[i] != '}') {
        size_t key = i, key_end = skip_value(t, i, len, PT_DOC_MAX_DEPTH);
        if (t[key] != '"' || key_end == 0)
            return -1;
        i = skip_ws(t, key_end, len);
        if (i >= len || t[i] != ':')
            return -1;
        i = skip_ws(t, i + 1, len);
        if (key_end - key == 11 && memcmp(t + key, "\"resources\"", 11) == 0) {
            if (i >= len || t[i] != '[')
                return -1;
            size_t end = len, last;
            while (end > i && is_ws(t[end - 1]))
                end--;
            if (end <= i + 1 || t[end - 1] != '}')
                return -1;
            for (last = end - 1; last > i && is_ws(t[last - 1]); last--)
                ;
            if (last <= i + 1 || t[last - 1] != ']')
                return -1;
            *open = i;
            *close = last - 1;
            return 0;
        }
        size_t value_end = skip_value(t, i, len, PT_DOC_MAX_DEPTH);
        if (value_end == 0 || value_end <= i)
            return -1;
        i = skip_ws(t, value_end, len);
        if (i < len && t[i] == ',')
            i = skip_ws(t, i + 1, len);
    }
    return -1;
}

int pt_discovery_response_parse_text(const char *text, size_t len, const char *type_url,
                                     pt_discovery_response_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->version_info = "";
    size_t open = 0, close = 0;
    if (find_resources(text, len, &open, &close) != 0)
        return -2;
    /* The envelope: the text with an empty list for the resources. */
    char *envelope = malloc(len - (close - open) + 2);
    if (envelope == NULL)
        return -2;
    memcpy(envelope, text, open);
    memcpy(envelope + open, "[]", 2);
    memcpy(envelope + open + 2, text + close + 1, len - close - 1);
    json_t *root = pt_json_parse(envelope, open + 2 + len - close - 1, err, errlen);
    free(envelope);
    if (root == NULL)
        return -2; /* reported by the whole document's parse */
    int rc = pt_discovery_response_parse(root, type_url, out, err, errlen);
    json_decref(root);
    if (rc != 0) {
        /* Read whole, which also tells a malformed resource (a failure) from an invalid
         * envelope, and reports every error. */
        pt_discovery_response_dispose(out);
        return -2;
    }
    struct pt_discovery_stream *st = calloc(1, sizeof(*st));
    if (st == NULL || (st->names = json_object()) == NULL) {
        free(st);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st->text = text;
    st->pos = open + 1;
    st->end = close;
    st->type_url = type_url;
    out->stream = st;
    return 0;
}

static int lazy_next(const pt_discovery_response_t *resp, size_t *cursor,
                     pt_discovery_resource_t *out, const pt_discovery_known_t *k, char *err,
                     size_t errlen);
static int lazy_is_open(const pt_discovery_response_t *resp);
static void lazy_free(pt_discovery_lazy_t *lz);

int pt_discovery_response_next(const pt_discovery_response_t *resp, size_t *cursor,
                               pt_discovery_resource_t *out, char *err, size_t errlen)
{
    return pt_discovery_response_next_known(resp, cursor, out, NULL, err, errlen);
}

/* Whether the element at t[i] is, by the consumer's guess, a known one of length len: it
 * looks like an object that ends where an element ends, and its bytes are known. Known bytes
 * are those of an element read before, so they are one whole value: nothing in them needs
 * scanning. */
static size_t known_at_guess(const struct pt_discovery_stream *st, size_t i, size_t index,
                             const pt_discovery_known_t *k)
{
    size_t len = k->expected_len != NULL ? k->expected_len(k->data, index) : 0;
    if (len < 2 || len > st->end - i || st->text[i] != '{' || st->text[i + len - 1] != '}')
        return 0;
    size_t after = skip_ws(st->text, i + len, st->end);
    if (after < st->end && st->text[after] != ',')
        return 0;
    return k->known(k->data, index, st->text + i, len) ? len : 0;
}

int pt_discovery_response_next_known(const pt_discovery_response_t *resp, size_t *cursor,
                                     pt_discovery_resource_t *out,
                                     const pt_discovery_known_t *k, char *err, size_t errlen)
{
    struct pt_discovery_stream *st = resp->stream;
    if (lazy_is_open(resp))
        return lazy_next(resp, cursor, out, k, err, errlen);
    if (st == NULL) {
        if (*cursor >= resp->nresources)
            return 0;
        *out = resp->resources[(*cursor)++];
        return 1;
    }
    json_decref(st->current);
    st->current = NULL;
    size_t i = skip_ws(st->text, st->pos, st->end);
    if (st->broken || st->whole || i >= st->end)
        return 0;
    if (st->index > 0) { /* elements are separated by commas, and one follows each */
        if (st->text[i] == ']') { /* the list ended here, not at the last ']' */
            snprintf(err, errlen, "resources: a member follows the list: read whole");
            st->whole = 1;
            return -1;
        }
        if (st->text[i] != ',' || (i = skip_ws(st->text, i + 1, st->end)) >= st->end) {
            snprintf(err, errlen, "resources: is not a JSON list after resources[%zu]",
                     st->index - 1);
            st->broken = 1;
            return -1;
        }
    } else if (st->text[i] == ']') {
        snprintf(err, errlen, "resources: a member follows the list: read whole");
        st->whole = 1;
        return -1;
    }
    size_t index = st->index++;
    size_t guessed = k != NULL && k->known != NULL ? known_at_guess(st, i, index, k) : 0;
    if (guessed > 0) {
        st->pos = i + guessed;
        return 2;
    }
    /* As deep as it may be inside the whole document (the object, its list). */
    size_t e = skip_value(st->text, i, st->end, PT_DOC_MAX_DEPTH - 2);
    if (e > i && k != NULL && k->known != NULL && k->known(k->data, index, st->text + i, e - i)) {
        st->pos = e;
        return 2;
    }
    char why[512];
    json_t *node = e > i ? pt_json_parse(st->text + i, e - i, why, sizeof(why)) : NULL;
    if (node == NULL) {
        snprintf(err, errlen, "resources[%zu]: %s", index,
                 e > i ? why : "is not JSON, or nests deeper than a document may");
        st->broken = 1;
        return -1;
    }
    st->pos = e;
    st->current = node;
    char path[48];
    snprintf(path, sizeof(path), "resources[%zu]", index);
    pt_cfg_t r;
    pt_cfg_init_at(&r, node, path);
    int got = 0;
    memset(out, 0, sizeof(*out));
    if (!json_is_object(node))
        pt_cfg_error(&r, NULL, "must be an object");
    else
        got = read_element(&r, node, index, st->type_url, out);
    pt_cfg_finish(&r);
    if (got) {
        out->index = index;
        out->text = st->text + i;
        out->text_len = e - i;
    }
    if (got && out->name != NULL) {
        json_t *first = json_object_get(st->names, out->name);
        if (first != NULL)
            pt_cfg_error_at(&r, "%s: duplicate name \"%s\" (resources[%lld] has it too)", path,
                            out->name, (long long)json_integer_value(first));
        else
            json_object_set_new(st->names, out->name, json_integer((json_int_t)index));
    }
    int rc = 1;
    if (!pt_cfg_ok(&r) || !got) {
        join_errors(&r, err, errlen);
        rc = -1;
    }
    pt_cfg_dispose(&r);
    return rc;
}

int pt_discovery_response_malformed(const pt_discovery_response_t *resp)
{
    return resp->stream != NULL && resp->stream->broken;
}

int pt_discovery_response_read_whole(const pt_discovery_response_t *resp)
{
    return resp->stream != NULL && resp->stream->whole;
}

void pt_discovery_response_dispose(pt_discovery_response_t *resp)
{
    if (resp->stream != NULL) {
        json_decref(resp->stream->current);
        json_decref(resp->stream->names);
        free(resp->stream);
    }
    lazy_free(resp->lazy);
    free(resp->resources);
    json_decref(resp->root);
    memset(resp, 0, sizeof(*resp));
    resp->version_info = "";
}

void pt_discovery_resource_reader(const pt_discovery_resource_t *res, pt_cfg_t *r)
{
    pt_cfg_init_at(r, res->json, res->path);
    (void)pt_cfg_get(r, "@type");
}

/* ---- decoding a protobuf response resource by resource ---------------------------- */

enum { EL_ANY, EL_DELTA, EL_TEXT };

/* One resource of a lazy response: its bytes, and what is known of it before decoding. */
typedef struct lazy_element {
    const uint8_t *p; /* an Any (state of the world), a Resource (delta), or JSON text */
    size_t len;
    size_t name, version; /* offsets in the lazy's strings, or NO_STR */
    char *text;           /* keep_text: the canonical text, once decoded */
    size_t text_len;
    long dup_of;          /* NOT_YET before a first decoding; -1, or an earlier element */
    unsigned char kind, has_body, checked;
} lazy_element_t;

#define NO_STR  ((size_t)-1)
#define NOT_YET (-2L)

struct pt_discovery_lazy {
    lazy_element_t *el;
    size_t n, cap;
    char *strs; /* the elements' names and versions, NUL-terminated, one after another */
    size_t strs_len, strs_cap;
    const char *type_url;
    int keep_text;
    int materialized;
    json_t *current; /* the last element's tree, freed with the next call */
    json_t *names;   /* decoded name -> index of its first element, for duplicates */
    json_t **trees;  /* materialized: each element's tree */
};

/* A lazy response not materialized: next decodes its elements. */
static int lazy_is_open(const pt_discovery_response_t *resp)
{
    return resp->lazy != NULL && !resp->lazy->materialized;
}

static size_t lazy_str(pt_discovery_lazy_t *lz, const uint8_t *p, size_t n)
{
    if (p == NULL)
        return NO_STR;
    if (lz->strs_len + n + 1 > lz->strs_cap) {
        size_t cap = lz->strs_cap ? lz->strs_cap : 4096;
        while (cap < lz->strs_len + n + 1)
            cap *= 2;
        char *s = realloc(lz->strs, cap);
        if (s == NULL)
            return NO_STR;
        lz->strs = s;
        lz->strs_cap = cap;
    }
    size_t off = lz->strs_len;
    memcpy(lz->strs + off, p, n);
    lz->strs[off + n] = '\0';
    lz->strs_len += n + 1;
    return off;
}

static const char *lazy_name(const pt_discovery_lazy_t *lz, size_t off)
{
    return off == NO_STR ? NULL : lz->strs + off;
}

/* The last occurrence of length-delimited field `number` in a message's bytes (NULL when
 * none, or the bytes end being readable first): names read before decoding. */
static const uint8_t *raw_field(const uint8_t *p, size_t len, uint32_t number, size_t *out_len)
{
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, p, len);
    const uint8_t *found = NULL;
    while (p != NULL && !pt_pb_reader_done(&r)) {
        uint32_t f;
        int wt;
        if (pt_pb_read_tag(&r, &f, &wt) != 0)
            break;
        if (f == number && wt == PT_PB_WIRE_LEN) {
            if (pt_pb_read_len(&r, &found, out_len) != 0) {
                found = NULL;
                break;
            }
        } else if (pt_pb_skip(&r, wt) != 0) {
            break;
        }
    }
    return found;
}

/* A non-empty string field, or NULL (proto3: "" is no name). */
static const uint8_t *raw_name(const uint8_t *p, size_t len, uint32_t number, size_t *n)
{
    const uint8_t *s = raw_field(p, len, number, n);
    return s != NULL && *n > 0 ? s : NULL;
}

static int lazy_add(pt_discovery_lazy_t *lz, int kind, const uint8_t *p, size_t len)
{
    if (lz->n == lz->cap) {
        size_t cap = lz->cap ? lz->cap * 2 : 64;
        lazy_element_t *el = realloc(lz->el, cap * sizeof(*el));
        if (el == NULL)
            return -1;
        lz->el = el;
        lz->cap = cap;
    }
    lazy_element_t *e = &lz->el[lz->n++];
    memset(e, 0, sizeof(*e));
    e->p = p;
    e->len = len;
    e->kind = (unsigned char)kind;
    e->dup_of = NOT_YET;
    e->name = e->version = NO_STR;
    /* The name as the wire says it (a resource's field 1 is its name, cluster_name for a
     * ClusterLoadAssignment; a Resource wrapper's is field 3), for routing the response to
     * the watches it concerns before anything is decoded. */
    size_t n = 0, vn = 0;
    const uint8_t *name = NULL;
    if (kind == EL_DELTA) {
        name = raw_name(p, len, 3, &n);
        const uint8_t *v = raw_field(p, len, 1, &vn);
        e->version = lazy_str(lz, v != NULL ? v : (const uint8_t *)"", v != NULL ? vn : 0);
    } else {
        size_t ul = 0, vl = 0;
        const uint8_t *url = raw_field(p, len, 1, &ul), *value = raw_field(p, len, 2, &vl);
        size_t tl = strlen(lz->type_url);
        if (url != NULL && ul == tl && memcmp(url, lz->type_url, tl) == 0) {
            name = raw_name(value, vl, 1, &n);
        } else if (url != NULL && ul == strlen(PT_RESOURCE_WRAPPER_TYPE) &&
                   memcmp(url, PT_RESOURCE_WRAPPER_TYPE, ul) == 0) {
            name = raw_name(value, vl, 3, &n);
            if (name == NULL) {
                size_t il = 0, ivl = 0;
                const uint8_t *inner = raw_field(value, vl, 2, &il);
                const uint8_t *iv = raw_field(inner, il, 2, &ivl);
                name = raw_name(iv, ivl, 1, &n);
            }
        }
    }
    e->name = lazy_str(lz, name, n);
    return 0;
}

/* Splits a response's bytes: its resources (field 2) as elements, everything else copied
 * into rest (the envelope, decoded and checked as a message of its own). -1 when the bytes
 * are malformed (decoding them whole says how), -2 out of memory. */
static int split_resources(pt_discovery_lazy_t *lz, int kind, const uint8_t *p, size_t len,
                           pt_pb_writer_t *rest)
{
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, p, len);
    while (!pt_pb_reader_done(&r)) {
        const uint8_t *start = r.p;
        uint32_t f;
        int wt;
        if (pt_pb_read_tag(&r, &f, &wt) != 0)
            return -1;
        if (f == 2 && wt == PT_PB_WIRE_LEN) {
            const uint8_t *v;
            size_t n;
            if (pt_pb_read_len(&r, &v, &n) != 0)
                return -1;
            if (lazy_add(lz, kind, v, n) != 0)
                return -2;
            continue;
        }
        if (pt_pb_skip(&r, wt) != 0)
            return -1;
        pt_pb_put_raw(rest, start, (size_t)(r.p - start));
    }
    return rest->failed ? -2 : 0;
}

static void lazy_free(pt_discovery_lazy_t *lz)
{
    if (lz == NULL)
        return;
    for (size_t i = 0; i < lz->n; i++) {
        free(lz->el[i].text);
        if (lz->trees != NULL)
            json_decref(lz->trees[i]);
    }
    free(lz->trees);
    free(lz->el);
    free(lz->strs);
    json_decref(lz->current);
    json_decref(lz->names);
    free(lz);
}

static pt_discovery_lazy_t *lazy_new(const char *type_url, int keep_text)
{
    pt_discovery_lazy_t *lz = calloc(1, sizeof(*lz));
    if (lz == NULL || (lz->names = json_object()) == NULL) {
        free(lz);
        return NULL;
    }
    lz->type_url = type_url;
    lz->keep_text = keep_text;
    return lz;
}

/* Decodes the envelope of a response of message `message` (its bytes but the resources) into
 * *root, the resources into lz's elements. 0, or -1 with why in err. */
static int lazy_open(pt_discovery_lazy_t *lz, const char *message, int kind, const void *buf,
                     size_t len, json_t **root, char *err, size_t errlen)
{
    const pt_pb_message_t *m = pt_pb_message_find(message);
    pt_pb_writer_t rest;
    pt_pb_writer_init(&rest);
    int rc = split_resources(lz, kind, buf, len, &rest);
    if (rc == -1) /* malformed: decoding it whole names where */
        *root = pt_pb_to_json(m, buf, len, NULL, err, errlen);
    else if (rc == 0)
        *root = pt_pb_to_json(m, rest.buf, rest.len, NULL, err, errlen);
    else
        snprintf(err, errlen, "out of memory");
    pt_pb_writer_dispose(&rest);
    if (rc != 0 && *root != NULL) { /* cannot be: the whole decoded when its parts did not */
        json_decref(*root);
        *root = NULL;
        snprintf(err, errlen, "(root): malformed message");
    }
    return *root != NULL ? 0 : -1;
}

int pt_discovery_response_parse_protobuf_lazy(const void *buf, size_t len, const char *type_url,
                                              pt_discovery_response_t *out, char *err,
                                              size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->version_info = "";
    pt_discovery_lazy_t *lz = lazy_new(type_url, 0);
    json_t *root = NULL;
    if (lz == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (lazy_open(lz, "envoy.service.discovery.v3.DiscoveryResponse", EL_ANY, buf, len, &root,
                  err, errlen) != 0 ||
        pt_discovery_response_parse(root, type_url, out, err, errlen) != 0) {
        json_decref(root);
        lazy_free(lz);
        return -1;
    }
    json_decref(root); /* out holds its own reference */
    out->lazy = lz;
    return 0;
}

int pt_discovery_response_parse_delta(const void *buf, size_t len, const char *type_url,
                                      int keep_text, pt_discovery_response_t *out, char *err,
                                      size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->version_info = "";
    pt_discovery_lazy_t *lz = lazy_new(type_url, keep_text);
    json_t *root = NULL;
    if (lz == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (lazy_open(lz, "envoy.service.discovery.v3.DeltaDiscoveryResponse", EL_DELTA, buf, len,
                  &root, err, errlen) != 0) {
        lazy_free(lz);
        return -1;
    }
    out->root = root;
    json_t *sv = json_object_get(root, "system_version_info");
    out->version_info = json_is_string(sv) ? json_string_value(sv) : "";
    out->lazy = lz;
    return 0;
}

int pt_discovery_response_add_text(pt_discovery_response_t *resp, const char *name,
                                   const char *text, size_t len)
{
    pt_discovery_lazy_t *lz = resp->lazy;
    if (lz == NULL || lazy_add(lz, EL_TEXT, (const uint8_t *)text, len) != 0)
        return -1;
    lazy_element_t *e = &lz->el[lz->n - 1];
    e->name = lazy_str(lz, (const uint8_t *)name, strlen(name));
    return e->name != NO_STR ? 0 : -1;
}

size_t pt_discovery_response_count(const pt_discovery_response_t *resp)
{
    return resp->lazy != NULL ? resp->lazy->n : 0;
}

void pt_discovery_response_element(const pt_discovery_response_t *resp, size_t i,
                                   pt_discovery_element_t *out)
{
    const pt_discovery_lazy_t *lz = resp->lazy;
    const lazy_element_t *e = &lz->el[i];
    out->name = lazy_name(lz, e->name);
    out->version = lazy_name(lz, e->version);
    out->has_body = e->has_body;
    out->text = e->text;
    out->text_len = e->text_len;
}

/* Decodes element i and checks it as pt_discovery_response_parse checks one (its @type, a
 * wrapper, a duplicate name): 1 with *out filled (its tree in lz->current), 0 for a delta
 * Resource that carries no resource (nothing to hand out), -1 with why in err. */
static int lazy_decode(pt_discovery_lazy_t *lz, size_t i, pt_discovery_resource_t *out,
                       char *err, size_t errlen)
{
    lazy_element_t *e = &lz->el[i];
    char path[48], why[1024];
    json_t *tree, *node;
    snprintf(path, sizeof(path), "resources[%zu]", i);
    if (e->kind == EL_TEXT) {
        tree = pt_json_parse((const char *)e->p, e->len, why, sizeof(why));
    } else {
        /* One message deep in its response: nested as deep as it may be there. */
        tree = pt_pb_to_json_nested(e->kind == EL_DELTA ? pt_pb_message_find(
                                                              "envoy.service.discovery.v3.Resource")
                                                        : &pt_pb_any,
                                    e->p, e->len, path, 1, why, sizeof(why));
    }
    e->checked = 1;
    if (tree == NULL) { /* the decoder's errors name their path; the parser's do not */
        if (e->kind == EL_TEXT)
            snprintf(err, errlen, "%s: %s", path, why);
        else
            snprintf(err, errlen, "%s", why);
        return -1;
    }
    lz->current = tree;
    node = tree;
    if (e->kind == EL_DELTA) { /* the Any the Resource holds */
        node = json_object_get(tree, "resource");
        e->has_body = json_is_object(node);
        if (!e->has_body)
            return 0;
        snprintf(path, sizeof(path), "resources[%zu].resource", i);
    }
    pt_cfg_t r;
    pt_cfg_init_at(&r, node, path);
    memset(out, 0, sizeof(*out));
    int got = 0;
    if (!json_is_object(node))
        pt_cfg_error(&r, NULL, "must be an object");
    else
        got = read_element(&r, node, i, lz->type_url, out);
    pt_cfg_finish(&r);
    if (got) {
        out->index = i;
        if (e->kind == EL_DELTA) /* where it is in the delta response */
            snprintf(out->path, sizeof(out->path), "%s", path);
        if (out->name != NULL && e->dup_of == NOT_YET) {
            json_t *first = json_object_get(lz->names, out->name);
            e->dup_of = first != NULL ? (long)json_integer_value(first) : -1;
            if (first == NULL)
                json_object_set_new(lz->names, out->name, json_integer((json_int_t)i));
        }
        if (out->name != NULL && e->dup_of >= 0)
            pt_cfg_error_at(&r, "%s: duplicate name \"%s\" (resources[%ld] has it too)", path,
                            out->name, e->dup_of);
    }
    int rc = 1;
    if (!pt_cfg_ok(&r) || !got) {
        join_errors(&r, err, errlen);
        rc = -1;
    }
    pt_cfg_dispose(&r);
    if (rc == 1 && e->kind == EL_TEXT) { /* kept as text: canonical already */
        out->text = (const char *)e->p;
        out->text_len = e->len;
        out->canonical = 1;
    } else if (rc == 1 && lz->keep_text) {
        if (e->text == NULL) {
            e->text = pt_json_canonical(out->json);
            e->text_len = e->text != NULL ? strlen(e->text) : 0;
        }
        if (e->text == NULL) {
            snprintf(err, errlen, "%s: out of memory", path);
            return -1;
        }
        out->text = e->text;
        out->text_len = e->text_len;
        out->canonical = 1;
    }
    return rc;
}

static int lazy_next(const pt_discovery_response_t *resp, size_t *cursor,
                     pt_discovery_resource_t *out, const pt_discovery_known_t *k, char *err,
                     size_t errlen)
{
    pt_discovery_lazy_t *lz = resp->lazy;
    for (;;) {
        json_decref(lz->current);
        lz->current = NULL;
        if (*cursor >= lz->n)
            return 0;
        size_t i = (*cursor)++;
        lazy_element_t *e = &lz->el[i];
        if (e->kind == EL_TEXT && k != NULL && k->known_text != NULL &&
            k->known_text(k->data, lazy_name(lz, e->name), (const char *)e->p, e->len)) {
            e->checked = 1; /* in force, the same: nothing to parse */
            return 2;
        }
        int rc = lazy_decode(lz, i, out, err, errlen);
        if (rc != 0)
            return rc;
    }
}

int pt_discovery_response_check_rest(const pt_discovery_response_t *resp, char *err,
                                     size_t errlen)
{
    pt_discovery_lazy_t *lz = resp->lazy;
    int rc = 0;
    err[0] = '\0';
    for (size_t i = 0; lz != NULL && !lz->materialized && i < lz->n; i++) {
        if (lz->el[i].checked)
            continue;
        pt_discovery_resource_t res;
        char why[1024];
        if (lazy_decode(lz, i, &res, why, sizeof(why)) < 0) {
            size_t used = strlen(err);
            snprintf(err + used, errlen - used, "%s%s", used ? "; " : "", why);
            rc = -1;
        }
        json_decref(lz->current);
        lz->current = NULL;
    }
    return rc;
}

int pt_discovery_response_materialize(pt_discovery_response_t *resp, char *err, size_t errlen)
{
    pt_discovery_lazy_t *lz = resp->lazy;
    if (lz == NULL || lz->materialized)
        return 0;
    free(resp->resources);
    resp->resources = calloc(lz->n ? lz->n : 1, sizeof(*resp->resources));
    resp->nresources = 0;
    lz->trees = calloc(lz->n ? lz->n : 1, sizeof(*lz->trees));
    if (resp->resources == NULL || lz->trees == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    err[0] = '\0';
    int rc = 0;
    for (size_t i = 0; i < lz->n; i++) {
        pt_discovery_resource_t res;
        char why[1024];
        int got = lazy_decode(lz, i, &res, why, sizeof(why));
        lz->trees[i] = lz->current; /* kept: the resource points into it */
        lz->current = NULL;
        if (got < 0) {
            size_t used = strlen(err);
            snprintf(err + used, errlen - used, "%s%s", used ? "; " : "", why);
            rc = -1;
        } else if (got > 0) {
            resp->resources[resp->nresources++] = res;
        }
    }
    lz->materialized = 1;
    return rc;
}
