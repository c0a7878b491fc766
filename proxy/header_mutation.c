#include "proxy/header_mutation.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/formatter.h"

/* Additions whose per-request scratch (rendered values, decisions) fits on the stack. */
#define STACK_ADDS 16

static const char *const header_value_unsupported[] = {"raw_value", NULL};
static const char *const append_action_names[] = {"APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT",
                                                  "OVERWRITE_IF_EXISTS_OR_ADD",
                                                  "OVERWRITE_IF_EXISTS", NULL};

/* ---- parsing ---------------------------------------------------------------------------- */

/* Envoy's HeaderUtility::isModifiableHeader / isRemovableHeader. */
static int mutable_header(const char *name)
{
    return name[0] != ':' && strcasecmp(name, "host") != 0;
}

static void *alloc_or_error(pt_cfg_t *r, pt_arena_t *a, size_t n)
{
    void *m = pt_arena_alloc(a, n ? n : 1);
    if (m == NULL)
        pt_cfg_error(r, NULL, "out of memory");
    return m;
}

/* lowercased copy of s in a; NULL with an error on out-of-memory */
static char *lower_dup(pt_cfg_t *r, pt_arena_t *a, const char *s)
{
    char *d = pt_arena_strdup(a, s);
    if (d == NULL)
        pt_cfg_error(r, NULL, "out of memory");
    for (char *p = d; p != NULL && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

/* header {key, value} of a HeaderValueOption (reader inside it). */
static void parse_header_value(pt_cfg_t *r, pt_arena_t *a, pt_header_add_t *out)
{
    pt_cfg_unsupported(r, header_value_unsupported);
    const char *key, *value;
    int krc = pt_cfg_string(r, "key", &key, NULL);
    char q[300];
    if (krc == 0) {
        pt_cfg_error(r, "key", "is required");
    } else if (krc > 0) {
        pt_cfg_quote(key, q, sizeof(q));
        if (!mutable_header(key))
            pt_cfg_error(r, "key",
                         "%s may not be modified: pseudo-headers and host are not mutable "
                         "(as in Envoy)",
                         q);
        else if (!pt_http_header_name_valid(key, 0))
            pt_cfg_error(r, "key", "%s is not a valid header name", q);
        else
            out->key = lower_dup(r, a, key);
    }
    if (pt_cfg_string(r, "value", &value, "") > 0 && strpbrk(value, "\r\n") != NULL) {
        pt_cfg_error(r, "value", "must not contain CR or LF");
    } else if (strchr(value, '%') != NULL) {
        /* Formatter operators (%DOWNSTREAM_REMOTE_ADDRESS%...) compile now; values that do
         * not depend on the request ("%%", %HOSTNAME%) are rendered once. */
        char err[256];
        pt_format_t *f = pt_format_compile_ex(a, value, PT_FORMAT_OMIT_EMPTY, err, sizeof(err));
        if (f == NULL) {
            pt_cfg_error(r, "value", "%s", err);
        } else if (pt_format_is_constant(f)) {
            out->value = pt_format_render_str(f, NULL, a);
            if (out->value == NULL)
                out->value = "";
        } else {
            out->value = NULL;
            out->fmt = f;
        }
    } else if ((out->value = pt_arena_strdup(a, value)) == NULL) {
        out->value = "";
        pt_cfg_error(r, "value", "out of memory");
    }
}

/* One HeaderValueOption (reader inside it). */
static void parse_option(pt_cfg_t *r, pt_arena_t *a, pt_header_add_t *out)
{
    memset(out, 0, sizeof(*out));
    out->value = "";
    int rc = pt_cfg_enter(r, "header");
    if (rc == 0)
        pt_cfg_error(r, "header", "is required");
    if (rc > 0) {
        parse_header_value(r, a, out);
        pt_cfg_leave(r);
    }
    int append, action;
    int has_append = pt_cfg_bool(r, "append", &append, 1);
    int has_action = pt_cfg_enum(r, "append_action", append_action_names, NULL, &action,
                                 PT_HEADER_APPEND_IF_EXISTS_OR_ADD);
    if (has_append > 0 && has_action > 0)
        pt_cfg_error(r, NULL,
                     "append and append_action may not both be set (append is deprecated: use "
                     "append_action)");
    if (has_append > 0)
        action = append ? PT_HEADER_APPEND_IF_EXISTS_OR_ADD : PT_HEADER_OVERWRITE_IF_EXISTS_OR_ADD;
    out->action = (pt_header_append_action_t)action;
    pt_cfg_bool(r, "keep_empty_value", &out->keep_empty_value, 0);
}

static void parse_adds(pt_cfg_t *r, pt_arena_t *a, const char *field, pt_header_mutations_t *m)
{
    int present;
    size_t n = pt_cfg_array(r, field, &present);
    if (!present)
        return;
    pt_header_add_t *adds = alloc_or_error(r, a, n * sizeof(*adds));
    for (size_t i = 0; adds != NULL && i < n; i++) {
        if (pt_cfg_enter_index(r, i) > 0) {
            parse_option(r, a, &adds[m->nadd]);
            if (adds[m->nadd].key != NULL)
                m->nadd++;
            pt_cfg_leave(r);
        }
    }
    m->add = adds;
    pt_cfg_leave_array(r);
}

static void parse_removes(pt_cfg_t *r, pt_arena_t *a, const char *field, pt_header_mutations_t *m)
{
    int present;
    size_t n = pt_cfg_array(r, field, &present);
    if (!present)
        return;
    const char **rm = alloc_or_error(r, a, n * sizeof(*rm));
    for (size_t i = 0; rm != NULL && i < n; i++) {
        json_t *v = pt_cfg_index_value(r, i);
        size_t saved = r->path_len;
        pt_cfg_push_index(r, i);
        char q[300];
        if (!json_is_string(v)) {
            char *d = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            pt_cfg_error(r, NULL, "%s is not a string", d ? d : "null");
            free(d);
        } else {
            const char *name = json_string_value(v);
            pt_cfg_quote(name, q, sizeof(q));
            if (!mutable_header(name))
                pt_cfg_error(r, NULL,
                             "%s may not be removed: pseudo-headers and host are not mutable "
                             "(as in Envoy)",
                             q);
            else if (!pt_http_header_name_valid(name, 0))
                pt_cfg_error(r, NULL, "%s is not a valid header name", q);
            else if ((rm[m->nremove] = lower_dup(r, a, name)) != NULL)
                m->nremove++;
        }
        pt_cfg_pop_path(r, saved);
    }
    m->remove = rm;
    pt_cfg_leave_array(r);
}

int pt_header_mutations_parse(pt_cfg_t *r, pt_arena_t *a, const char *add_field,
                              const char *remove_field, pt_header_mutations_t *m)
{
    size_t errors_before = r->nerrors;
    memset(m, 0, sizeof(*m));
    if (add_field != NULL)
        parse_adds(r, a, add_field, m);
    if (remove_field != NULL)
        parse_removes(r, a, remove_field, m);
    return r->nerrors == errors_before ? 0 : -1;
}

/* ---- applying --------------------------------------------------------------------------- */

enum { OP_SKIP, OP_SET, OP_ADD };

void pt_header_mutations_apply(const pt_header_mutations_t *m, pt_http_headers_t *h,
                               const pt_stream_info_t *si)
{
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->nremove; i++)
        pt_http_headers_remove(h, m->remove[i]);
    if (m->nadd == 0)
        return;
    const char *vals_stack[STACK_ADDS];
    unsigned char ops_stack[STACK_ADDS];
    const char **vals = vals_stack;
    unsigned char *ops = ops_stack;
    if (m->nadd > STACK_ADDS) {
        vals = pt_arena_alloc(h->arena, m->nadd * sizeof(*vals));
        ops = pt_arena_alloc(h->arena, m->nadd);
        if (vals == NULL || ops == NULL)
            return;
    }
    /* Render every value and decide every action against the headers as they are now, then
     * overwrite, then append: Envoy's order, so a list's formatters and ADD_IF_ABSENT never
     * see its own additions. */
    for (unsigned i = 0; i < m->nadd; i++) {
        const pt_header_add_t *e = &m->add[i];
        const char *v = e->value;
        if (v == NULL)
            v = e->fmt ? pt_format_render_str(e->fmt, si, h->arena) : "";
        if (v == NULL)
            v = "";
        vals[i] = v;
        ops[i] = OP_SKIP;
        if (v[0] == '\0' && !e->keep_empty_value)
            continue;
        switch (e->action) {
        case PT_HEADER_APPEND_IF_EXISTS_OR_ADD:
            ops[i] = OP_ADD;
            break;
        case PT_HEADER_ADD_IF_ABSENT:
            ops[i] = pt_http_headers_find(h, e->key) ? OP_SKIP : OP_ADD;
            break;
        case PT_HEADER_OVERWRITE_IF_EXISTS:
            ops[i] = pt_http_headers_find(h, e->key) ? OP_SET : OP_SKIP;
            break;
        case PT_HEADER_OVERWRITE_IF_EXISTS_OR_ADD:
            ops[i] = OP_SET;
            break;
        }
    }
    for (unsigned i = 0; i < m->nadd; i++)
        if (ops[i] == OP_SET)
            pt_http_headers_set(h, m->add[i].key, vals[i]);
    for (unsigned i = 0; i < m->nadd; i++)
        if (ops[i] == OP_ADD)
            pt_http_headers_add_ref(h, m->add[i].key, vals[i]);
}
