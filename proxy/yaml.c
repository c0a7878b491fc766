/* YAML to a jansson tree, so the config code sees one representation whatever the file
 * format. Scalars follow the YAML 1.2 core schema as Envoy's loader does: plain null/~,
 * true/false, integers and floats become JSON types; anything quoted stays a string; so
 * "0.25s" or 0.25s are both the string 0.25s. Anchors and aliases are resolved (an alias is a
 * copy of its anchor's tree); `<<` merge keys are honoured; duplicate keys are an error.
 *
 * The tree is built from libyaml's events, not from its document loader, so that the bounds
 * of config_reader.h hold by the first event past them: libyaml's scanner spends time
 * proportional to the flow nesting on every token (its simple-key stack is walked per
 * token), so a 100k-level `[[[[...` took tens of seconds to load whole before its depth could
 * be judged; stopped at the first collection too deep, it costs a few thousand tokens (the
 * scanner looks ahead at most 1024 characters of a line, the longest a simple key can be). */
#include "proxy/config_reader.h"
#include "proxy/heap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

typedef struct yanchor {
    char *name;
    json_t *value; /* the anchored tree (a reference; copied at each alias) */
    size_t values; /* values in it, what each alias adds to the document */
    char *text;    /* a scalar's text, for an alias used as a mapping key */
    int open;      /* a collection still being built: an alias to it is a cycle */
    yaml_mark_t mark;
} yanchor_t;

typedef struct yframe {
    json_t *node; /* the array or object being filled */
    int is_map;
    char *key;        /* mapping: the key awaiting its value (NULL: a key comes next) */
    int key_is_merge; /* that key is a plain `<<` */
    yaml_mark_t key_mark;
    json_t *merges;       /* mappings named by `<<`, merged at the end (NULL: none) */
    long anchor;          /* index in anchors of this collection's anchor, or -1 */
    size_t values_before; /* document values before this collection began */
    yaml_mark_t mark;     /* where the collection began */
} yframe_t;

typedef struct yconv {
    char *err;
    size_t errlen;
    size_t values; /* values in the tree so far, alias copies included */
    int level;     /* collections open; counted in skipped documents too */
    int skip;      /* in a second document: only syntax and depth are checked */
    json_t *root;
    yframe_t frames[PT_DOC_MAX_DEPTH];
    yanchor_t *anchors;
    size_t nanchors, cap_anchors;
    json_t *anchor_index; /* name -> index in anchors */
} yconv_t;

static void errorf(yconv_t *y, const yaml_mark_t *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errorf(yconv_t *y, const yaml_mark_t *m, const char *fmt, ...)
{
    int n = 0;
    if (m != NULL)
        n = snprintf(y->err, y->errlen, "line %lu column %lu: ", (unsigned long)m->line + 1,
                     (unsigned long)m->column + 1);
    if (n < 0 || (size_t)n >= y->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(y->err + n, y->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

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

static json_t *scalar_to_json(const char *s, size_t len, yaml_scalar_style_t style)
{
    if (style != YAML_PLAIN_SCALAR_STYLE)
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

/* One more value in the document: 0, or -1 past PT_DOC_MAX_VALUES. */
static int count_values(yconv_t *y, size_t n, const yaml_mark_t *m, const char *alias)
{
    if (n > PT_DOC_MAX_VALUES - y->values) {
        if (alias != NULL)
            errorf(y, m, "alias *%s expands the document to more than %u values", alias,
                   PT_DOC_MAX_VALUES);
        else
            errorf(y, m, "the document holds more than %u values", PT_DOC_MAX_VALUES);
        return -1;
    }
    y->values += n;
    return 0;
}

static yanchor_t *find_anchor(yconv_t *y, const char *name)
{
    json_t *i = json_object_get(y->anchor_index, name);
    return i != NULL ? &y->anchors[json_integer_value(i)] : NULL;
}

/* Registers &name; the tree is set when the node is complete (open until then). */
static long add_anchor(yconv_t *y, const char *name, const yaml_mark_t *m)
{
    yanchor_t *prev = find_anchor(y, name);
    if (prev != NULL) {
        errorf(y, m, "anchor &%s is already defined at line %lu column %lu", name,
               (unsigned long)prev->mark.line + 1, (unsigned long)prev->mark.column + 1);
        return -1;
    }
    if (y->nanchors == y->cap_anchors) {
        size_t ncap = y->cap_anchors ? y->cap_anchors * 2 : 16;
        yanchor_t *n = realloc(y->anchors, ncap * sizeof(*n));
        if (n == NULL)
            goto oom;
        y->anchors = n;
        y->cap_anchors = ncap;
    }
    yanchor_t *a = &y->anchors[y->nanchors];
    memset(a, 0, sizeof(*a));
    a->name = strdup(name);
    a->open = 1;
    a->mark = *m;
    if (a->name == NULL ||
        json_object_set_new(y->anchor_index, name, json_integer((json_int_t)y->nanchors)) != 0) {
        free(a->name);
        goto oom;
    }
    return (long)y->nanchors++;
oom:
    errorf(y, NULL, "out of memory");
    return -1;
}

static void close_anchor(yconv_t *y, long idx, json_t *value, size_t values)
{
    yanchor_t *a = &y->anchors[idx];
    a->value = json_incref(value);
    a->values = values;
    a->open = 0;
}

static int add_merge(yconv_t *y, yframe_t *f, json_t *v, const yaml_mark_t *m)
{
    /* `<<: *anchor` or `<<: [*a, *b]` (or the mappings written in place). */
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_object(e))
                goto bad;
        }
    } else if (!json_is_object(v)) {
        goto bad;
    }
    if (f->merges == NULL)
        f->merges = json_array();
    if (json_is_array(v))
        json_array_extend(f->merges, v);
    else
        json_array_append(f->merges, v);
    json_decref(v);
    return 0;
bad:
    json_decref(v);
    errorf(y, m, "merge key value is not a mapping");
    return -1;
}

/* Applies a mapping's merge keys: keys written in it win, then earlier merged mappings. */
static void apply_merges(yframe_t *f)
{
    size_t i;
    json_t *src;
    json_array_foreach(f->merges, i, src) {
        const char *k;
        json_t *v;
        json_object_foreach(src, k, v) {
            if (json_object_get(f->node, k) == NULL)
                json_object_set(f->node, k, v);
        }
    }
}

/* Puts a complete value (a reference the callee takes) where the document is: the root,
 * the next item of a sequence, or the value of the pending key. */
static int add_value(yconv_t *y, json_t *v, const yaml_mark_t *m)
{
    if (v == NULL) {
        errorf(y, NULL, "out of memory");
        return -1;
    }
    if (y->level == 0) {
        y->root = v;
        return 0;
    }
    yframe_t *f = &y->frames[y->level - 1];
    if (!f->is_map) {
        json_array_append_new(f->node, v);
        return 0;
    }
    int rc = 0;
    if (f->key_is_merge)
        rc = add_merge(y, f, v, m);
    else
        json_object_set_new(f->node, f->key, v);
    free(f->key);
    f->key = NULL;
    f->key_is_merge = 0;
    return rc;
}

/* In a mapping waiting for a key: takes `text` as that key. */
static int set_key(yconv_t *y, yframe_t *f, const char *text, int plain, const yaml_mark_t *m)
{
    if (plain && strcmp(text, "<<") == 0) {
        if (f->merges != NULL) {
            errorf(y, m, "duplicate key \"<<\"");
            return -1;
        }
        f->key_is_merge = 1;
    } else if (json_object_get(f->node, text) != NULL) {
        errorf(y, m, "duplicate key \"%s\"", text);
        return -1;
    }
    f->key = strdup(text);
    if (f->key == NULL) {
        errorf(y, NULL, "out of memory");
        return -1;
    }
    f->key_mark = *m;
    return 0;
}

static int wants_key(const yconv_t *y)
{
    const yframe_t *f = y->level > 0 ? &y->frames[y->level - 1] : NULL;
    return f != NULL && f->is_map && f->key == NULL && !f->key_is_merge;
}

static int on_scalar(yconv_t *y, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    yaml_scalar_style_t style = ev->data.scalar.style;
    const yaml_mark_t *m = &ev->start_mark;
    long a = -1;
    if (ev->data.scalar.anchor != NULL &&
        (a = add_anchor(y, (const char *)ev->data.scalar.anchor, m)) < 0)
        return -1;
    if (a >= 0 && (y->anchors[a].text = strdup(s)) == NULL) {
        errorf(y, NULL, "out of memory");
        return -1;
    }
    if (wants_key(y)) {
        if (a >= 0) {
            /* An alias to a key's anchor may be a key or a value elsewhere. */
            json_t *kv = scalar_to_json(s, len, style);
            close_anchor(y, a, kv, 1);
            json_decref(kv);
        }
        return set_key(y, &y->frames[y->level - 1], s, style == YAML_PLAIN_SCALAR_STYLE, m);
    }
    if (count_values(y, 1, m, NULL) != 0)
        return -1;
    json_t *v = scalar_to_json(s, len, style);
    if (a >= 0 && v != NULL)
        close_anchor(y, a, v, 1);
    return add_value(y, v, m);
}

static int on_alias(yconv_t *y, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    const yaml_mark_t *m = &ev->start_mark;
    yanchor_t *a = find_anchor(y, name);
    if (a == NULL) {
        errorf(y, m, "found undefined alias *%s", name);
        return -1;
    }
    if (a->open) {
        errorf(y, m,
               "alias *%s refers to a node that contains it (anchored at line %lu column "
               "%lu)",
               name, (unsigned long)a->mark.line + 1, (unsigned long)a->mark.column + 1);
        return -1;
    }
    if (wants_key(y)) {
        if (a->text == NULL) {
            errorf(y, m, "mapping keys must be scalars");
            return -1;
        }
        return set_key(y, &y->frames[y->level - 1], a->text, 0, m);
    }
    /* Checked before copying, so an alias bomb costs at most the bound. */
    if (count_values(y, a->values, m, name) != 0)
        return -1;
    return add_value(y, json_deep_copy(a->value), m);
}

static int on_start(yconv_t *y, const yaml_event_t *ev, int is_map)
{
    const yaml_mark_t *m = &ev->start_mark;
    if (y->level >= PT_DOC_MAX_DEPTH) {
        errorf(y, m, "nesting deeper than %d levels", PT_DOC_MAX_DEPTH);
        return -1;
    }
    if (y->skip) {
        y->level++;
        return 0;
    }
    if (wants_key(y)) {
        errorf(y, m, "mapping keys must be scalars");
        return -1;
    }
    if (count_values(y, 1, m, NULL) != 0)
        return -1;
    const yaml_char_t *anchor =
        is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    long a = -1;
    if (anchor != NULL && (a = add_anchor(y, (const char *)anchor, m)) < 0)
        return -1;
    yframe_t *f = &y->frames[y->level];
    memset(f, 0, sizeof(*f));
    f->node = is_map ? json_object() : json_array();
    if (f->node == NULL) {
        errorf(y, NULL, "out of memory");
        return -1;
    }
    f->is_map = is_map;
    f->anchor = a;
    f->values_before = y->values - 1;
    f->mark = *m;
    y->level++;
    return 0;
}

static int on_end(yconv_t *y)
{
    y->level--;
    if (y->skip)
        return 0;
    yframe_t *f = &y->frames[y->level];
    if (f->merges != NULL) {
        apply_merges(f);
        json_decref(f->merges);
        f->merges = NULL;
    }
    json_t *node = f->node;
    f->node = NULL;
    if (f->anchor >= 0)
        close_anchor(y, f->anchor, node, y->values - f->values_before);
    return add_value(y, node, &f->mark);
}

static void yconv_dispose(yconv_t *y)
{
    if (!y->skip) {
        for (int i = 0; i < y->level; i++) {
            json_decref(y->frames[i].node);
            json_decref(y->frames[i].merges);
            free(y->frames[i].key);
        }
    }
    for (size_t i = 0; i < y->nanchors; i++) {
        free(y->anchors[i].name);
        free(y->anchors[i].text);
        json_decref(y->anchors[i].value);
    }
    free(y->anchors);
    json_decref(y->anchor_index);
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
    if (len > PT_DOC_MAX_BYTES) {
        snprintf(err, errlen, "larger than %u bytes (%u MiB)", PT_DOC_MAX_BYTES,
                 PT_DOC_MAX_BYTES >> 20);
        return NULL;
    }
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "cannot initialise the YAML parser");
        return NULL;
    }
    /* libyaml asserts on a NULL input even when empty. */
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text ? text : ""),
                                 text ? len : 0);
    yconv_t *y = calloc(1, sizeof(*y));
    if (y == NULL || (y->anchor_index = json_object()) == NULL) {
        free(y);
        yaml_parser_delete(&parser);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    y->err = err;
    y->errlen = errlen;
    json_t *out = NULL;
    int docs = 0, rc = 0;
    for (int done = 0; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            parser_error(&parser, text, len, err, errlen);
            rc = -1;
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            /* A second document is a mistake worth reporting, after any error in it (it
             * used to be ignored): the rest is still read, for syntax and depth only. */
            y->skip = ++docs > 1;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            rc = on_start(y, &ev, ev.type == YAML_MAPPING_START_EVENT);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            rc = on_end(y);
            break;
        case YAML_SCALAR_EVENT:
            rc = y->skip ? 0 : on_scalar(y, &ev);
            break;
        case YAML_ALIAS_EVENT:
            rc = y->skip ? 0 : on_alias(y, &ev);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    if (rc == 0) {
        if (y->root == NULL)
            snprintf(err, errlen, "the file is empty");
        else if (docs > 1)
            snprintf(err, errlen, "the file holds more than one YAML document");
        else
            out = json_incref(y->root);
    }
    json_decref(y->root);
    yconv_dispose(y);
    free(y);
    yaml_parser_delete(&parser);
    return out;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

char *pt_config_read_text(const char *path, size_t *len_out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    /* Read until end of file or one byte past the bound: the file need not be regular (a
     * pipe, a /dev/fd/N), and a wrong one (/dev/zero) must not be read forever. A regular
     * file is read into a buffer of its size (and unbuffered): thousands of small EDS
     * files read in a row must not leave 64 KiB holes between what lives on. */
    char *data = NULL;
    size_t len = 0, cap = 0, first = 65536;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0 &&
        (uint64_t)st.st_size < PT_DOC_MAX_BYTES) {
        first = (size_t)st.st_size + 1; /* + 1: the read that finds the end */
        setvbuf(f, NULL, _IONBF, 0);
    }
    for (;;) {
        if (len == cap) {
            if (cap > PT_DOC_MAX_BYTES) {
                snprintf(err, errlen, "%s: larger than %u bytes (%u MiB)", path, PT_DOC_MAX_BYTES,
                         PT_DOC_MAX_BYTES >> 20);
                goto fail;
            }
            cap = cap ? cap * 2 : first;
            if (cap > (size_t)PT_DOC_MAX_BYTES + 1)
                cap = (size_t)PT_DOC_MAX_BYTES + 1;
            char *n = pt_heap_big_alloc(cap + 1); /* + 1: room for the NUL */
            if (n == NULL) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            if (len > 0)
                memcpy(n, data, len);
            pt_heap_big_free(data);
            data = n;
        }
        errno = 0;
        size_t got = fread(data + len, 1, cap - len, f);
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
    data[len] = '\0';
    *len_out = len;
    return data;
fail:
    fclose(f);
    pt_heap_big_free(data);
    return NULL;
}

void pt_config_text_free(char *text)
{
    pt_heap_big_free(text);
}

json_t *pt_config_parse_text(const char *path, const char *text, size_t len, char *err,
                             size_t errlen)
{
    json_t *root = NULL;
    char perr[512];
    if (ends_with(path, ".json")) {
        root = pt_json_parse(text, len, perr, sizeof(perr));
    } else if (ends_with(path, ".yaml") || ends_with(path, ".yml")) {
        root = pt_yaml_parse(text, len, perr, sizeof(perr));
    } else {
        snprintf(perr, sizeof(perr), "unknown config format (use a .json, .yaml or .yml file)");
    }
    if (root == NULL)
        snprintf(err, errlen, "%s: %s", path, perr);
    return root;
}

json_t *pt_config_load_file(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *data = pt_config_read_text(path, &len, err, errlen);
    if (data == NULL)
        return NULL;
    json_t *root = pt_config_parse_text(path, data, len, err, errlen);
    pt_config_text_free(data);
    return root;
}
