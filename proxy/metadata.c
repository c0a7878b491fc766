/* Metadata, dynamic metadata and metadata matchers (see proxy/metadata.h). */
#include "proxy/metadata.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/matcher.h"

#define MD_MAX_DEPTH 16 /* struct keys followed when indexing (Envoy's paths are short) */

/* ---- JSON text of a google.protobuf.Value ------------------------------------------ */

/* A number as protobuf's JSON printer writes a double: the shortest form that reads back
 * the same, integers without a fraction ("5", not "5.0"). */
static void put_number(FILE *f, double d)
{
    if (!isfinite(d)) {
        fputs(isnan(d) ? "\"NaN\"" : d > 0 ? "\"Infinity\"" : "\"-Infinity\"", f);
        return;
    }
    char b[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, sizeof(b), "%.*g", prec, d);
        if (strtod(b, NULL) == d)
            break;
    }
    fputs(b, f);
}

static double num_of(const json_t *v)
{
    return json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
}

static void put_string(FILE *f, const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    char *t = j != NULL ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(t != NULL ? t : "\"\"", f);
    free(t);
    json_decref(j);
}

/* Compact JSON with keys sorted (protobuf prints a Struct's map in key order). */
static void put_value(FILE *f, const json_t *v)
{
    if (json_is_object(v)) {
        size_t n = json_object_size(v), k = 0;
        const char **keys = malloc((n ? n : 1) * sizeof(*keys));
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            if (keys != NULL)
                keys[k++] = key;
        }
        for (size_t i = 1; i < k; i++) /* insertion sort: structs are small */
            for (size_t j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
                const char *t = keys[j];
                keys[j] = keys[j - 1];
                keys[j - 1] = t;
            }
        fputc('{', f);
        for (size_t i = 0; i < k; i++) {
            if (i)
                fputc(',', f);
            put_string(f, keys[i], strlen(keys[i]));
            fputc(':', f);
            put_value(f, json_object_get(v, keys[i]));
        }
        fputc('}', f);
        free(keys);
    } else if (json_is_array(v)) {
        fputc('[', f);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                fputc(',', f);
            put_value(f, json_array_get(v, i));
        }
        fputc(']', f);
    } else if (json_is_string(v)) {
        put_string(f, json_string_value(v), json_string_length(v));
    } else if (json_is_number(v)) {
        put_number(f, num_of(v));
    } else if (json_is_true(v)) {
        fputs("true", f);
    } else if (json_is_false(v)) {
        fputs("false", f);
    } else {
        fputs("null", f);
    }
}

/* v's JSON text, in a (or, a == NULL, into buf of cap bytes). NULL when it does not fit. */
static const char *value_json(const json_t *v, pt_arena_t *a, char *buf, size_t cap, size_t *len)
{
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (f == NULL)
        return NULL;
    put_value(f, v);
    if (fclose(f) != 0 || text == NULL) {
        free(text);
        return NULL;
    }
    const char *out = NULL;
    if (a != NULL) {
        out = pt_arena_strndup(a, text, n);
    } else if (n < cap) {
        memcpy(buf, text, n + 1);
        out = buf;
    }
    free(text);
    *len = n;
    return out;
}

/* Fills out from v. Strings point into a copy in a (or buf after the JSON text). 0 or -1. */
static int make_value(const json_t *v, pt_arena_t *a, char *buf, size_t cap, pt_md_value_t *out)
{
    memset(out, 0, sizeof(*out));
    out->json = value_json(v, a, buf, cap, &out->json_len);
    if (out->json == NULL)
        return -1;
    if (json_is_object(v)) {
        out->type = PT_MD_STRUCT;
    } else if (json_is_array(v)) {
        out->type = PT_MD_LIST;
        size_t n = json_array_size(v);
        if (a != NULL && n > 0) { /* a config's list keeps its elements for list_match */
            pt_md_value_t *items = pt_arena_alloc(a, n * sizeof(*items));
            if (items == NULL)
                return -1;
            for (size_t i = 0; i < n; i++)
                if (make_value(json_array_get(v, i), a, NULL, 0, &items[i]) != 0)
                    return -1;
            out->items = items;
            out->nitems = (unsigned)n;
        }
    } else if (json_is_string(v)) {
        out->type = PT_MD_STRING;
        out->str_len = json_string_length(v);
        if (a != NULL) {
            out->str = pt_arena_strndup(a, json_string_value(v), out->str_len);
        } else {
            size_t used = out->json_len + 1;
            if (used + out->str_len >= cap)
                return -1;
            memcpy(buf + used, json_string_value(v), out->str_len);
            buf[used + out->str_len] = '\0';
            out->str = buf + used;
        }
        if (out->str == NULL)
            return -1;
    } else if (json_is_number(v)) {
        out->type = PT_MD_NUMBER;
        out->num = num_of(v);
    } else if (json_is_boolean(v)) {
        out->type = PT_MD_BOOL;
        out->boolean = json_is_true(v);
    } else {
        out->type = PT_MD_NULL;
    }
    return 0;
}

/* ---- parsing ------------------------------------------------------------------------ */

typedef struct indexer {
    pt_arena_t *a;
    pt_md_entry_t *e;
    unsigned n, cap;
    const char *keys[MD_MAX_DEPTH];
} indexer_t;

static int count_entries(const json_t *v, int depth)
{
    int n = 1;
    if (json_is_object(v) && depth < MD_MAX_DEPTH) {
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c)
        {
            n += count_entries(c, depth + 1);
        }
    }
    return n;
}

static int index_value(indexer_t *ix, const char *ns, const json_t *v, unsigned depth)
{
    pt_md_entry_t *e = &ix->e[ix->n++];
    e->ns = ns;
    e->nkeys = depth;
    if (depth > 0) {
        const char **keys = pt_arena_alloc(ix->a, depth * sizeof(*keys));
        if (keys == NULL)
            return -1;
        memcpy(keys, ix->keys, depth * sizeof(*keys));
        e->keys = keys;
    }
    if (make_value(v, ix->a, NULL, 0, &e->v) != 0)
        return -1;
    if (!json_is_object(v) || depth >= MD_MAX_DEPTH)
        return 0;
    const char *k;
    json_t *c;
    json_object_foreach((json_t *)v, k, c)
    {
        if ((ix->keys[depth] = pt_arena_strdup(ix->a, k)) == NULL ||
            index_value(ix, ns, c, depth + 1) != 0)
            return -1;
    }
    return 0;
}

const pt_metadata_t *pt_metadata_parse(pt_cfg_t *r, const char *field, pt_arena_t *a)
{
    json_t *md = pt_cfg_get(r, field);
    if (md == NULL)
        return NULL;
    if (!json_is_object(md)) {
        pt_cfg_error(r, field, "must be an object (config.core.v3.Metadata)");
        return NULL;
    }
    const char *key;
    json_t *v;
    json_t *fm = NULL;
    int bad = 0, any = 0;
    json_object_foreach(md, key, v)
    {
        int typed = strcmp(key, "typed_filter_metadata") == 0 ||
                    strcmp(key, "typedFilterMetadata") == 0;
        int plain = strcmp(key, "filter_metadata") == 0 || strcmp(key, "filterMetadata") == 0;
        if (!typed && !plain) {
            pt_cfg_error(r, field, "unknown field \"%s\" (expected filter_metadata or "
                                   "typed_filter_metadata)", key);
            bad = 1;
            continue;
        }
        if (json_is_null(v))
            continue;
        if (!json_is_object(v)) {
            pt_cfg_error(r, field, "%s must be a map of namespaces to %s", key,
                         typed ? "Any messages" : "objects");
            bad = 1;
            continue;
        }
        const char *ns;
        json_t *inner;
        json_object_foreach(v, ns, inner)
        {
            if (!json_is_object(inner)) {
                pt_cfg_error(r, field, "%s[\"%s\"] must be an object", key, ns);
                bad = 1;
            } else if (typed && !json_is_string(json_object_get(inner, "@type"))) {
                pt_cfg_error(r, field, "%s[\"%s\"] must be an Any with an \"@type\"", key, ns);
                bad = 1;
            }
            any = 1;
        }
        if (plain)
            fm = v;
    }
    if (bad || !any)
        return NULL;
    pt_metadata_t *m = pt_arena_alloc(a, sizeof(*m));
    if (m == NULL)
        goto oom;
    memset(m, 0, sizeof(*m));
    size_t len;
    if ((m->json = value_json(md, a, NULL, 0, &len)) == NULL)
        goto oom;
    if (fm != NULL && json_object_size(fm) > 0) {
        indexer_t ix = {.a = a};
        unsigned total = 0;
        const char *ns;
        json_t *inner;
        json_object_foreach(fm, ns, inner)
        {
            total += (unsigned)count_entries(inner, 0);
        }
        if ((ix.e = pt_arena_alloc(a, total * sizeof(*ix.e))) == NULL)
            goto oom;
        memset(ix.e, 0, total * sizeof(*ix.e));
        json_object_foreach(fm, ns, inner)
        {
            const char *nsc = pt_arena_strdup(a, ns);
            if (nsc == NULL || index_value(&ix, nsc, inner, 0) != 0)
                goto oom;
        }
        m->entries = ix.e;
        m->nentries = ix.n;
    }
    return m;
oom:
    pt_cfg_error(r, field, "out of memory");
    return NULL;
}

const char *pt_struct_parse(pt_cfg_t *r, const char *field, pt_arena_t *a)
{
    json_t *v = pt_cfg_get(r, field);
    if (v == NULL)
        return NULL;
    if (!json_is_object(v)) {
        pt_cfg_error(r, field, "must be an object (google.protobuf.Struct)");
        return NULL;
    }
    if (json_object_size(v) == 0)
        return NULL;
    size_t len;
    const char *text = value_json(v, a, NULL, 0, &len);
    if (text == NULL)
        pt_cfg_error(r, field, "out of memory");
    return text;
}

const pt_metadata_t *pt_struct_parse_ns(pt_cfg_t *r, const char *field, pt_arena_t *a,
                                        const char *ns)
{
    json_t *v = pt_cfg_get(r, field);
    if (v == NULL)
        return NULL;
    if (!json_is_object(v)) {
        pt_cfg_error(r, field, "must be an object (google.protobuf.Struct)");
        return NULL;
    }
    if (json_object_size(v) == 0)
        return NULL;
    pt_metadata_t *m = pt_arena_alloc(a, sizeof(*m));
    indexer_t ix = {.a = a};
    unsigned total = (unsigned)count_entries(v, 0);
    size_t len;
    if (m == NULL || (ix.e = pt_arena_alloc(a, total * sizeof(*ix.e))) == NULL ||
        (m->json = value_json(v, a, NULL, 0, &len)) == NULL) {
        pt_cfg_error(r, field, "out of memory");
        return NULL;
    }
    memset(ix.e, 0, total * sizeof(*ix.e));
    if (index_value(&ix, ns, v, 0) != 0) {
        pt_cfg_error(r, field, "out of memory");
        return NULL;
    }
    m->entries = ix.e;
    m->nentries = ix.n;
    return m;
}

/* ---- lookups ------------------------------------------------------------------------ */

int pt_metadata_find(const pt_metadata_t *md, const char *ns, const char *const *keys,
                     unsigned nkeys, pt_md_value_t *out)
{
    if (md == NULL)
        return 0;
    for (unsigned i = 0; i < md->nentries; i++) {
        const pt_md_entry_t *e = &md->entries[i];
        if (e->nkeys != nkeys || strcmp(e->ns, ns) != 0)
            continue;
        unsigned k = 0;
        while (k < nkeys && strcmp(e->keys[k], keys[k]) == 0)
            k++;
        if (k == nkeys) {
            *out = e->v;
            return 1;
        }
    }
    return 0;
}

int pt_metadata_find_text(const char *json_text, const char *ns, const char *const *keys,
                          unsigned nkeys, char *buf, size_t cap, pt_md_value_t *out)
{
    if (json_text == NULL)
        return 0;
    json_t *root = json_loads(json_text, 0, NULL);
    json_t *v = json_object_get(json_object_get(root, "filter_metadata"), ns);
    for (unsigned i = 0; v != NULL && i < nkeys; i++)
        v = json_is_object(v) ? json_object_get(v, keys[i]) : NULL;
    int found = v != NULL && make_value(v, NULL, buf, cap, out) == 0;
    json_decref(root);
    return found;
}

/* ---- dynamic metadata ------------------------------------------------------------- */

int pt_dyn_md_set_string(pt_dyn_md_t **head, pt_arena_t *a, const char *ns, const char *key,
                         const char *value)
{
    pt_dyn_md_t *d = NULL;
    for (pt_dyn_md_t *it = *head; it != NULL; it = it->next)
        if (strcmp(it->ns, ns) == 0 && strcmp(it->key, key) == 0)
            d = it;
    if (d == NULL) {
        if ((d = pt_arena_alloc(a, sizeof(*d))) == NULL)
            return -1;
        memset(d, 0, sizeof(*d));
        d->ns = ns; /* namespaces and keys are the producers' constants or config strings */
        d->key = key;
        d->next = *head;
        *head = d;
    }
    d->src = NULL;
    json_t *j = json_string(value);
    char *text = j != NULL ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    memset(&d->v, 0, sizeof(d->v));
    d->v.type = PT_MD_STRING;
    d->v.str_len = strlen(value);
    d->v.str = pt_arena_strndup(a, value, d->v.str_len);
    d->v.json = text != NULL ? pt_arena_strdup(a, text) : NULL;
    d->v.json_len = text != NULL ? strlen(text) : 0;
    free(text);
    if (d->v.str == NULL || d->v.json == NULL) {
        d->v.type = PT_MD_NONE;
        return -1;
    }
    return 0;
}

int pt_dyn_md_merge(pt_dyn_md_t **head, pt_arena_t *a, const pt_metadata_t *md)
{
    for (unsigned i = 0; i < md->nentries; i++) {
        const pt_md_entry_t *e = &md->entries[i];
        if (e->nkeys != 1)
            continue;
        pt_dyn_md_t *d = NULL;
        for (pt_dyn_md_t *it = *head; it != NULL; it = it->next)
            if (strcmp(it->ns, e->ns) == 0 && strcmp(it->key, e->keys[0]) == 0)
                d = it;
        if (d == NULL) {
            if ((d = pt_arena_alloc(a, sizeof(*d))) == NULL)
                return -1;
            d->ns = e->ns;
            d->key = e->keys[0];
            d->next = *head;
            *head = d;
        }
        d->v = e->v;
        d->src = md;
    }
    return 0;
}

int pt_dyn_md_find(const pt_dyn_md_t *head, const char *ns, const char *const *keys,
                   unsigned nkeys, char *buf, size_t cap, pt_md_value_t *out)
{
    if (head == NULL)
        return 0;
    if (nkeys > 1) {
        for (const pt_dyn_md_t *d = head; d != NULL; d = d->next)
            if (d->src != NULL && strcmp(d->ns, ns) == 0 && strcmp(d->key, keys[0]) == 0)
                return pt_metadata_find(d->src, ns, keys, nkeys, out);
        return 0;
    }
    if (nkeys == 1) {
        for (const pt_dyn_md_t *d = head; d != NULL; d = d->next)
            if (strcmp(d->ns, ns) == 0 && strcmp(d->key, keys[0]) == 0 && d->v.type != PT_MD_NONE) {
                *out = d->v;
                return 1;
            }
        return 0;
    }
    /* The namespace as a struct: its keys sorted, as protobuf prints a map. */
    const pt_dyn_md_t *sel[32];
    unsigned n = 0;
    for (const pt_dyn_md_t *d = head; d != NULL && n < 32; d = d->next)
        if (strcmp(d->ns, ns) == 0 && d->v.type != PT_MD_NONE)
            sel[n++] = d;
    if (n == 0)
        return 0;
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && strcmp(sel[j - 1]->key, sel[j]->key) > 0; j--) {
            const pt_dyn_md_t *t = sel[j];
            sel[j] = sel[j - 1];
            sel[j - 1] = t;
        }
    size_t o = 0;
    if (cap < 3)
        return 0;
    buf[o++] = '{';
    for (unsigned i = 0; i < n; i++) {
        json_t *k = json_string(sel[i]->key);
        char *kt = k != NULL ? json_dumps(k, JSON_ENCODE_ANY) : NULL;
        json_decref(k);
        int w = kt != NULL ? snprintf(buf + o, cap - o, "%s%s:%.*s", i ? "," : "", kt,
                                      (int)sel[i]->v.json_len, sel[i]->v.json)
                           : -1;
        free(kt);
        if (w < 0 || (size_t)w >= cap - o - 1)
            return 0;
        o += (size_t)w;
    }
    buf[o++] = '}';
    buf[o] = '\0';
    memset(out, 0, sizeof(*out));
    out->type = PT_MD_STRUCT;
    out->json = buf;
    out->json_len = o;
    return 1;
}

/* ---- MetadataMatcher ---------------------------------------------------------------- */

typedef enum vm_kind { VM_NULL, VM_DOUBLE_EXACT, VM_DOUBLE_RANGE, VM_STRING, VM_BOOL, VM_PRESENT,
                       VM_LIST, VM_OR } vm_kind_t;

typedef struct value_matcher value_matcher_t;
struct value_matcher {
    vm_kind_t kind;
    double exact, start, end; /* range: [start, end) */
    int boolean;
    pt_string_matcher_t string;
    const value_matcher_t *kids; /* VM_LIST: one (one_of); VM_OR: nkids */
    unsigned nkids;
};

struct pt_md_matcher {
    const char *ns;
    const char **keys;
    unsigned nkeys;
    value_matcher_t value;
    int invert;
};

static const char *const vm_kinds[] = {"null_match", "double_match", "string_match",
                                       "bool_match", "present_match", "list_match",
                                       "or_match", NULL};

static int parse_value_matcher(pt_cfg_t *r, pt_arena_t *a, value_matcher_t *m, int depth);

static int parse_double_matcher(pt_cfg_t *r, value_matcher_t *m)
{
    static const char *const kinds[] = {"range", "exact", NULL};
    int k = pt_cfg_oneof(r, kinds, 1);
    if (k == 1) {
        m->kind = VM_DOUBLE_EXACT;
        return pt_cfg_double(r, "exact", &m->exact, 0, -INFINITY, INFINITY) < 0 ? -1 : 0;
    }
    if (k != 0)
        return -1;
    m->kind = VM_DOUBLE_RANGE;
    if (pt_cfg_enter(r, "range") <= 0)
        return -1;
    int ok = pt_cfg_double(r, "start", &m->start, 0, -INFINITY, INFINITY) >= 0 &&
             pt_cfg_double(r, "end", &m->end, 0, -INFINITY, INFINITY) >= 0;
    if (ok && !(m->start < m->end)) {
        pt_cfg_error(r, NULL, "start (%g) must be less than end (%g)", m->start, m->end);
        ok = 0;
    }
    pt_cfg_leave(r);
    return ok ? 0 : -1;
}

static int parse_value_matcher(pt_cfg_t *r, pt_arena_t *a, value_matcher_t *m, int depth)
{
    memset(m, 0, sizeof(*m));
    if (depth > 8) {
        pt_cfg_error(r, NULL, "value matchers nest too deep");
        pt_cfg_skip_rest(r);
        return -1;
    }
    int k = pt_cfg_oneof(r, vm_kinds, 1), rc = 0, v;
    switch (k) {
    case 0: /* null_match: NullMatch {} */
        m->kind = VM_NULL;
        if (pt_cfg_enter(r, "null_match") > 0)
            pt_cfg_leave(r);
        break;
    case 1:
        if (pt_cfg_enter(r, "double_match") <= 0)
            return -1;
        rc = parse_double_matcher(r, m);
        pt_cfg_leave(r);
        break;
    case 2:
        m->kind = VM_STRING;
        if (pt_cfg_enter(r, "string_match") <= 0)
            return -1;
        rc = pt_string_matcher_parse(r, a, &m->string);
        pt_cfg_leave(r);
        break;
    case 3:
        m->kind = VM_BOOL;
        rc = pt_cfg_bool(r, "bool_match", &m->boolean, 0) < 0 ? -1 : 0;
        break;
    case 4:
        m->kind = VM_PRESENT;
        if (pt_cfg_bool(r, "present_match", &v, 0) < 0)
            return -1;
        if (!v) { /* Envoy: present_match false matches nothing; say so rather than surprise */
            pt_cfg_error(r, "present_match", "must be true (false would match nothing)");
            return -1;
        }
        break;
    case 5: {
        m->kind = VM_LIST;
        if (pt_cfg_enter(r, "list_match") <= 0)
            return -1;
        value_matcher_t *kid = pt_arena_alloc(a, sizeof(*kid));
        if (kid == NULL || pt_cfg_enter(r, "one_of") <= 0) {
            if (kid != NULL)
                pt_cfg_error(r, "one_of", "is required");
            pt_cfg_leave(r);
            return -1;
        }
        rc = parse_value_matcher(r, a, kid, depth + 1);
        pt_cfg_leave(r);
        pt_cfg_leave(r);
        m->kids = kid;
        m->nkids = 1;
        break;
    }
    case 6: {
        m->kind = VM_OR;
        if (pt_cfg_enter(r, "or_match") <= 0)
            return -1;
        int present;
        size_t n = pt_cfg_array(r, "value_matchers", &present);
        if (n < 2) {
            pt_cfg_error(r, present ? NULL : "value_matchers", "needs at least 2 matchers");
            rc = -1;
        }
        value_matcher_t *kids = pt_arena_alloc(a, (n ? n : 1) * sizeof(*kids));
        for (size_t i = 0; kids != NULL && i < n; i++)
            if (pt_cfg_enter_index(r, i) > 0) {
                if (parse_value_matcher(r, a, &kids[m->nkids++], depth + 1) != 0)
                    rc = -1;
                pt_cfg_leave(r);
            }
        if (present)
            pt_cfg_leave_array(r);
        pt_cfg_leave(r);
        m->kids = kids;
        break;
    }
    default:
        return -1;
    }
    return rc;
}

const pt_md_matcher_t *pt_md_matcher_parse(pt_cfg_t *r, pt_arena_t *a)
{
    size_t before = r->nerrors;
    pt_md_matcher_t *m = pt_arena_alloc(a, sizeof(*m));
    if (m == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    memset(m, 0, sizeof(*m));
    const char *s;
    if (pt_cfg_string(r, "filter", &s, NULL) <= 0 || s == NULL || !s[0])
        pt_cfg_error(r, "filter", "is required (the metadata namespace)");
    else
        m->ns = pt_arena_strdup(a, s);
    int present;
    size_t n = pt_cfg_array(r, "path", &present);
    if (n == 0)
        pt_cfg_error(r, present ? NULL : "path", "is required (at least one key)");
    m->keys = pt_arena_alloc(a, (n ? n : 1) * sizeof(*m->keys));
    for (size_t i = 0; m->keys != NULL && i < n; i++)
        if (pt_cfg_enter_index(r, i) > 0) {
            if (pt_cfg_string(r, "key", &s, NULL) <= 0 || s == NULL || !s[0])
                pt_cfg_error(r, "key", "is required and must not be empty");
            else
                m->keys[m->nkeys++] = pt_arena_strdup(a, s);
            pt_cfg_leave(r);
        }
    if (present)
        pt_cfg_leave_array(r);
    if (pt_cfg_enter(r, "value") > 0) {
        parse_value_matcher(r, a, &m->value, 0);
        pt_cfg_leave(r);
    } else {
        pt_cfg_error(r, "value", "is required");
    }
    pt_cfg_bool(r, "invert", &m->invert, 0);
    return r->nerrors == before ? m : NULL;
}

static int value_matches(const value_matcher_t *m, const pt_md_value_t *v)
{
    switch (m->kind) {
    case VM_NULL:
        return v->type == PT_MD_NULL;
    case VM_DOUBLE_EXACT:
        return v->type == PT_MD_NUMBER && v->num == m->exact;
    case VM_DOUBLE_RANGE:
        return v->type == PT_MD_NUMBER && v->num >= m->start && v->num < m->end;
    case VM_STRING:
        return v->type == PT_MD_STRING && pt_string_matcher_match(&m->string, v->str, v->str_len);
    case VM_BOOL:
        return v->type == PT_MD_BOOL && v->boolean == m->boolean;
    case VM_PRESENT:
        return v->type != PT_MD_NONE;
    case VM_LIST:
        for (unsigned i = 0; v->type == PT_MD_LIST && i < v->nitems; i++)
            if (value_matches(&m->kids[0], &v->items[i]))
                return 1;
        return 0;
    case VM_OR:
        for (unsigned i = 0; i < m->nkids; i++)
            if (value_matches(&m->kids[i], v))
                return 1;
        return 0;
    }
    return 0;
}

int pt_md_matcher_match(const pt_md_matcher_t *m, const pt_dyn_md_t *dyn, const pt_metadata_t *md)
{
    pt_md_value_t v = {.type = PT_MD_NONE};
    char buf[8];
    if (md != NULL)
        pt_metadata_find(md, m->ns, m->keys, m->nkeys, &v);
    else
        pt_dyn_md_find(dyn, m->ns, m->keys, m->nkeys, buf, sizeof(buf), &v);
    int hit = v.type != PT_MD_NONE && value_matches(&m->value, &v);
    return m->invert ? !hit : hit;
}
