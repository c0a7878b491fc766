#include "discovery/discovery_response.h"
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
    size_t guessed = k != NULL ? known_at_guess(st, i, index, k) : 0;
    if (guessed > 0) {
        st->pos = i + guessed;
        return 2;
    }
    /* As deep as it may be inside the whole document (the object, its list). */
    size_t e = skip_value(st->text, i, st->end, PT_DOC_MAX_DEPTH - 2);
    if (e > i && k != NULL && k->known(k->data, index, st->text + i, e - i)) {
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
