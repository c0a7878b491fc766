/* YAML to a jansson tree, so the config code sees one representation whatever the file
 * format. Scalars follow the YAML 1.2 core schema as Envoy's loader does: plain null/~,
 * true/false, integers and floats become JSON types; anything quoted stays a string; so
 * "0.25s" or 0.25s are both the string 0.25s. Anchors and aliases are resolved by libyaml's
 * document loader; `<<` merge keys are honoured; duplicate keys are an error. */
#include "proxy/config_reader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define YAML_MAX_DEPTH 64
/* Aliases are resolved by converting the anchored node again at each use, so a few lines
 * that alias aliases ("billion laughs") would expand exponentially. A document may expand
 * to YAML_EXPANSION times its own node count (at least YAML_MIN_NODE_BUDGET nodes): ample
 * for anchored defaults merged into thousands of clusters, fatal to an alias bomb. */
#define YAML_EXPANSION       8
#define YAML_MIN_NODE_BUDGET (1u << 20)

typedef struct yconv {
    yaml_document_t *doc;
    char *err;
    size_t errlen;
    size_t nodes, max_nodes; /* JSON nodes made so far, and the budget */
    yaml_node_t *path[YAML_MAX_DEPTH + 2]; /* collections being converted, root first */
} yconv_t;

static int is_int(const char *s)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (*p == '\0')
        return 0;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

static int is_float(const char *s)
{
    /* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
    const char *p = s;
    int digits = 0;
    if (*p == '-' || *p == '+')
        p++;
    while (*p >= '0' && *p <= '9') {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            p++;
            digits++;
        }
    }
    if (digits == 0)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

static json_t *scalar_to_json(yaml_node_t *n)
{
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return json_stringn(s, len);
    if (strlen(s) != len) /* embedded NUL: keep as string, jansson rejects it later */
        return json_stringn(s, len);
    if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
        strcmp(s, "NULL") == 0)
        return json_null();
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        return json_true();
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        return json_false();
    if (is_int(s)) {
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        if (errno == 0)
            return json_integer(v);
        return json_string(s); /* too large for int64: keep digits, readers accept strings */
    }
    if (is_float(s))
        return json_real(strtod(s, NULL));
    if (strcmp(s, ".inf") == 0 || strcmp(s, ".nan") == 0)
        return json_string(s);
    return json_stringn(s, len);
}

static json_t *node_to_json(yconv_t *y, yaml_node_t *n, int depth);

static int merge_into(yconv_t *y, json_t *obj, yaml_node_t *src, int depth)
{
    /* `<<: *anchor` or `<<: [*a, *b]`: keys already present win. */
    if (src->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = src->data.sequence.items.start;
             it < src->data.sequence.items.top; it++) {
            if (merge_into(y, obj, yaml_document_get_node(y->doc, *it), depth) != 0)
                return -1;
        }
        return 0;
    }
    json_t *m = node_to_json(y, src, depth + 1);
    if (m == NULL)
        return -1;
    if (!json_is_object(m)) {
        json_decref(m);
        snprintf(y->err, y->errlen, "line %lu: merge key value is not a mapping",
                 (unsigned long)src->start_mark.line + 1);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (json_object_get(obj, k) == NULL)
            json_object_set(obj, k, v);
    }
    json_decref(m);
    return 0;
}

static json_t *node_to_json(yconv_t *y, yaml_node_t *n, int depth)
{
    if (n == NULL) {
        snprintf(y->err, y->errlen, "invalid YAML node");
        return NULL;
    }
    if (depth > YAML_MAX_DEPTH) {
        snprintf(y->err, y->errlen, "line %lu: nesting is too deep",
                 (unsigned long)n->start_mark.line + 1);
        return NULL;
    }
    if (++y->nodes > y->max_nodes) {
        /* No line: the node where the budget ran out is an anchor's, not the culprit. */
        snprintf(y->err, y->errlen, "aliases expand the document to more than %zu nodes",
                 y->max_nodes);
        return NULL;
    }
    if (n->type != YAML_SCALAR_NODE) {
        /* libyaml lets an alias refer to the collection that contains it (&a [*a]): a
         * cycle, which has no JSON form. */
        for (int i = 0; i < depth; i++) {
            if (y->path[i] == n) {
                snprintf(y->err, y->errlen, "line %lu: an alias refers to a node that contains it",
                         (unsigned long)n->start_mark.line + 1);
                return NULL;
            }
        }
        y->path[depth] = n;
    }
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return scalar_to_json(n);
    case YAML_SEQUENCE_NODE: {
        json_t *arr = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            json_t *v = node_to_json(y, yaml_document_get_node(y->doc, *it), depth + 1);
            if (v == NULL) {
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, v);
        }
        return arr;
    }
    case YAML_MAPPING_NODE: {
        json_t *obj = json_object();
        yaml_node_t *merge = NULL;
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
            yaml_node_t *v = yaml_document_get_node(y->doc, p->value);
            if (k == NULL || k->type != YAML_SCALAR_NODE) {
                snprintf(y->err, y->errlen, "line %lu: mapping keys must be scalars",
                         (unsigned long)n->start_mark.line + 1);
                json_decref(obj);
                return NULL;
            }
            const char *key = (const char *)k->data.scalar.value;
            if (strcmp(key, "<<") == 0 && k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                merge = v;
                continue;
            }
            if (json_object_get(obj, key) != NULL) {
                snprintf(y->err, y->errlen, "line %lu: duplicate key \"%s\"",
                         (unsigned long)k->start_mark.line + 1, key);
                json_decref(obj);
                return NULL;
            }
            json_t *jv = node_to_json(y, v, depth + 1);
            if (jv == NULL) {
                json_decref(obj);
                return NULL;
            }
            json_object_set_new(obj, key, jv);
        }
        if (merge != NULL && merge_into(y, obj, merge, depth) != 0) {
            json_decref(obj);
            return NULL;
        }
        return obj;
    }
    default:
        snprintf(y->err, y->errlen, "empty YAML node");
        return NULL;
    }
}

/* "line 3 column 2: did not find expected ',' or ']' while parsing a flow sequence
 * started at line 2 column 4": where the problem is, and where the construct it breaks
 * began when that is elsewhere (the usual place of the actual mistake). */
static void parser_error(const yaml_parser_t *p, const char *text, size_t len, char *err,
                         size_t errlen)
{
    unsigned long line = (unsigned long)p->problem_mark.line + 1;
    unsigned long column = (unsigned long)p->problem_mark.column + 1;
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors (bad UTF-8, control characters) carry a byte offset, no mark. */
        line = column = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (text[i] == '\n') {
                line++;
                column = 1;
            } else {
                column++;
            }
        }
    }
    int n = snprintf(err, errlen, "line %lu column %lu: %s", line, column,
                     p->problem ? p->problem : "invalid YAML");
    if (p->context == NULL || n < 0 || (size_t)n >= errlen)
        return;
    if (p->context_mark.line != p->problem_mark.line ||
        p->context_mark.column != p->problem_mark.column)
        snprintf(err + n, errlen - (size_t)n, " %s started at line %lu column %lu", p->context,
                 (unsigned long)p->context_mark.line + 1,
                 (unsigned long)p->context_mark.column + 1);
    else
        snprintf(err + n, errlen - (size_t)n, " %s", p->context);
}

json_t *pt_yaml_parse(const char *text, size_t len, char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    json_t *out = NULL;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "cannot initialise the YAML parser");
        return NULL;
    }
    /* libyaml asserts on a NULL input even when empty. */
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text ? text : ""),
                                 text ? len : 0);
    if (!yaml_parser_load(&parser, &doc)) {
        parser_error(&parser, text, len, err, errlen);
        yaml_parser_delete(&parser);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        snprintf(err, errlen, "the file is empty");
    } else {
        size_t doc_nodes = (size_t)(doc.nodes.top - doc.nodes.start);
        yconv_t y = {.doc = &doc, .err = err, .errlen = errlen};
        y.max_nodes = doc_nodes * YAML_EXPANSION;
        if (y.max_nodes < YAML_MIN_NODE_BUDGET)
            y.max_nodes = YAML_MIN_NODE_BUDGET;
        out = node_to_json(&y, root, 0);
        if (out != NULL) {
            /* A second document in the stream is a mistake worth reporting, and so is one
             * that does not even parse (it used to be ignored). */
            yaml_document_t next;
            if (yaml_parser_load(&parser, &next)) {
                if (yaml_document_get_root_node(&next) != NULL) {
                    snprintf(err, errlen, "the file holds more than one YAML document");
                    json_decref(out);
                    out = NULL;
                }
                yaml_document_delete(&next);
            } else {
                parser_error(&parser, text, len, err, errlen);
                json_decref(out);
                out = NULL;
            }
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

json_t *pt_config_load_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > (64u << 20)) {
                snprintf(err, errlen, "%s: file is larger than 64 MiB", path);
                goto fail;
            }
            char *n = realloc(data, cap);
            if (n == NULL) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            data = n;
        }
        errno = 0;
        size_t got = fread(data + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        /* Say why: a directory given as the config file reads as EISDIR. */
        snprintf(err, errlen, "%s: %s", path, errno ? strerror(errno) : "read error");
        goto fail;
    }
    fclose(f);
    f = NULL;
    data[len] = '\0';

    json_t *root = NULL;
    if (ends_with(path, ".json")) {
        json_error_t je;
        root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
        if (root == NULL)
            snprintf(err, errlen, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
    } else if (ends_with(path, ".yaml") || ends_with(path, ".yml")) {
        char yerr[512];
        root = pt_yaml_parse(data, len, yerr, sizeof(yerr));
        if (root == NULL)
            snprintf(err, errlen, "%s: %s", path, yerr);
    } else {
        snprintf(err, errlen, "%s: unknown config format (use a .json, .yaml or .yml file)",
                 path);
    }
    free(data);
    return root;
fail:
    if (f != NULL)
        fclose(f);
    free(data);
    return NULL;
}
