#include "proxy/config_reader.h"

#include "proxy/proto_schema.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pt_cfg_frame_t *top(pt_cfg_t *r)
{
    return &r->frames[r->depth - 1];
}

static void add_error_line(pt_cfg_t *r, char *line)
{
    if (r->nerrors == r->cap_errors) {
        size_t ncap = r->cap_errors ? r->cap_errors * 2 : 8;
        char **n = realloc(r->errors, ncap * sizeof(char *));
        if (n == NULL) {
            free(line);
            return;
        }
        r->errors = n;
        r->cap_errors = ncap;
    }
    r->errors[r->nerrors++] = line;
}

static void verror(pt_cfg_t *r, const char *field, const char *fmt, va_list ap)
{
    char msg[768], line[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (field != NULL)
        snprintf(line, sizeof(line), "%s%s%s: %s", r->path, r->path_len ? "." : "", field, msg);
    else
        snprintf(line, sizeof(line), "%s: %s", r->path_len ? r->path : "(root)", msg);
    add_error_line(r, strdup(line));
}

void pt_cfg_error(pt_cfg_t *r, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(r, field, fmt, ap);
    va_end(ap);
}

void pt_cfg_error_at(pt_cfg_t *r, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    add_error_line(r, strdup(line));
}

const char *pt_cfg_quote(const char *s, char *out, size_t len)
{
    json_t *j = json_string(s);
    char *d = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    snprintf(out, len, "%s", d ? d : "\"?\"");
    free(d);
    json_decref(j);
    return out;
}

const char *pt_cfg_path(const pt_cfg_t *r)
{
    return r->path;
}

/* Appends n bytes to the path, cut at its bound. (Paths are built for every field read,
 * so this is plain copying, not printf.) */
static void path_append(pt_cfg_t *r, const char *s, size_t n)
{
    size_t room = sizeof(r->path) - 1 - r->path_len;
    if (n > room)
        n = room;
    memcpy(r->path + r->path_len, s, n);
    r->path_len += n;
    r->path[r->path_len] = '\0';
}

static void push_field_path(pt_cfg_t *r, const char *field)
{
    if (r->path_len)
        path_append(r, ".", 1);
    path_append(r, field, strlen(field));
}

void pt_cfg_push_index(pt_cfg_t *r, size_t idx)
{
    char digits[24], *d = digits + sizeof(digits);
    *--d = ']';
    do {
        *--d = (char)('0' + idx % 10);
        idx /= 10;
    } while (idx > 0);
    *--d = '[';
    path_append(r, d, (size_t)(digits + sizeof(digits) - d));
}

void pt_cfg_pop_path(pt_cfg_t *r, size_t saved_len)
{
    r->path_len = saved_len;
    r->path[saved_len] = '\0';
}

/* The message a value of message type m is: m itself, or for an Any the message its @type
 * names; NULL for the well-known types (their JSON forms are not objects of fields) and for
 * what the schema does not know. */
static const pt_pb_message_t *value_message(const pt_pb_message_t *m, json_t *value)
{
    if (m != NULL && m->kind == PT_PB_KIND_ANY) {
        json_t *t = json_is_object(value) ? json_object_get(value, "@type") : NULL;
        m = json_is_string(t) ? pt_pb_message_for_type_url(json_string_value(t)) : NULL;
    }
    return m != NULL && m->kind == PT_PB_KIND_MESSAGE ? m : NULL;
}

/* The message of the current object's field (of each element, for a repeated one), or
 * NULL. Maps are left out: their entries are keys chosen by the config. */
static const pt_pb_message_t *field_message(const pt_cfg_t *r, const char *field)
{
    const pt_pb_message_t *parent = r->depth > 0 ? r->frames[r->depth - 1].msg : NULL;
    const pt_pb_field_t *f = parent ? pt_pb_field_by_name(parent, field) : NULL;
    if (f == NULL || f->type != PT_PB_MESSAGE || (f->flags & PT_PB_MAP))
        return NULL;
    return f->message;
}

static void push_frame(pt_cfg_t *r, json_t *node, int is_array, const pt_pb_message_t *msg)
{
    pt_cfg_frame_t *f = &r->frames[r->depth++];
    f->msg = msg;
    f->node = node;
    f->path_len = r->path_len;
    f->is_array = is_array;
    f->nseen = 0;
    f->unsupported = NULL;
    f->skip_rest = 0;
    f->camel_keys = -1;
}

/* Only the head of the reader is cleared: the frames (28 KB of them) are set as they are
 * pushed, and clearing them all cost more than reading a small resource. */
static void reader_reset(pt_cfg_t *r)
{
    r->path[0] = '\0';
    r->path_len = 0;
    r->depth = 0;
    r->errors = NULL;
    r->nerrors = r->cap_errors = 0;
}

void pt_cfg_init(pt_cfg_t *r, json_t *root)
{
    reader_reset(r);
    push_frame(r, root, 0, NULL);
    if (!json_is_object(root))
        pt_cfg_error(r, NULL, "the configuration must be an object");
}

void pt_cfg_init_at(pt_cfg_t *r, json_t *node, const char *path)
{
    reader_reset(r);
    path_append(r, path, strlen(path));
    push_frame(r, node, 0, value_message(&pt_pb_any, node));
    if (!json_is_object(node))
        pt_cfg_error(r, NULL, "must be an object");
}

void pt_cfg_set_message(pt_cfg_t *r, const char *full_name)
{
    if (r->depth > 0)
        r->frames[r->depth - 1].msg = value_message(pt_pb_message_find(full_name), NULL);
}

void pt_cfg_dispose(pt_cfg_t *r)
{
    for (size_t i = 0; i < r->nerrors; i++)
        free(r->errors[i]);
    free(r->errors);
    r->errors = NULL;
    r->nerrors = r->cap_errors = 0;
}

char *pt_cfg_errors_joined(const pt_cfg_t *r)
{
    size_t n = 1;
    for (size_t i = 0; i < r->nerrors; i++)
        n += strlen(r->errors[i]) + 1;
    char *out = malloc(n), *p = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < r->nerrors; i++) {
        size_t l = strlen(r->errors[i]);
        memcpy(p, r->errors[i], l);
        p += l;
        *p++ = '\n';
    }
    *p = '\0';
    return out;
}

void pt_cfg_unsupported(pt_cfg_t *r, const char *const *names)
{
    top(r)->unsupported = names;
}

void pt_cfg_accept_empty(pt_cfg_t *r, const char *field)
{
    json_t *v = json_object_get(top(r)->node, field);
    if (v != NULL && ((json_is_object(v) && json_object_size(v) == 0) ||
                      (json_is_array(v) && json_array_size(v) == 0)))
        (void)pt_cfg_get(r, field);
}

void pt_cfg_skip_rest(pt_cfg_t *r)
{
    top(r)->skip_rest = 1;
}

/* connect_timeout -> connectTimeout */
static void camel_case(const char *snake, char *out, size_t outlen)
{
    size_t o = 0;
    int up = 0;
    for (const char *p = snake; *p && o + 1 < outlen; p++) {
        if (*p == '_') {
            up = 1;
            continue;
        }
        out[o++] = up ? (char)toupper((unsigned char)*p) : *p;
        up = 0;
    }
    out[o] = '\0';
}

/* Whether the frame's object has a key with an upper-case letter: only then can a field be
 * there in its camelCase form, and only then is that form looked for (most configs are
 * written in snake_case, and every field read would otherwise be looked up twice). */
static int frame_has_camel_keys(pt_cfg_frame_t *f)
{
    if (f->camel_keys < 0) {
        f->camel_keys = 0;
        const char *key;
        json_t *v;
        json_object_foreach(f->node, key, v) {
            for (const char *p = key; *p; p++)
                if (*p >= 'A' && *p <= 'Z') {
                    f->camel_keys = 1;
                    return 1;
                }
        }
    }
    return f->camel_keys;
}

static int is_seen(const pt_cfg_frame_t *f, const char *key)
{
    for (unsigned i = 0; i < f->nseen; i++)
        if (strcmp(f->seen[i], key) == 0)
            return 1;
    return 0;
}

static void mark_seen(pt_cfg_frame_t *f, const char *key)
{
    if (!is_seen(f, key) && f->nseen < PT_CFG_MAX_FIELDS)
        f->seen[f->nseen++] = key;
}

/* Finds `field` (or its camelCase form) in the current object, marks it consumed and
 * returns its value; null values count as absent. */
json_t *pt_cfg_get(pt_cfg_t *r, const char *field)
{
    pt_cfg_frame_t *f = top(r);
    if (f->is_array || !json_is_object(f->node))
        return NULL;
    void *it = json_object_iter_at(f->node, field);
    void *it2 = NULL;
    char camel[128];
    if (frame_has_camel_keys(f) && strchr(field, '_') != NULL) {
        camel_case(field, camel, sizeof(camel));
        it2 = json_object_iter_at(f->node, camel);
    }
    if (it != NULL && it2 != NULL) {
        /* Once per object, even when a parser reads the field twice (count, then parse). */
        if (!is_seen(f, json_object_iter_key(it2)))
            pt_cfg_error(r, field, "is given twice (as %s and %s)", field, camel);
        mark_seen(f, json_object_iter_key(it2));
    }
    if (it == NULL)
        it = it2;
    if (it == NULL)
        return NULL;
    mark_seen(f, json_object_iter_key(it));
    json_t *v = json_object_iter_value(it);
    return json_is_null(v) ? NULL : v;
}

int pt_cfg_has(pt_cfg_t *r, const char *field)
{
    pt_cfg_frame_t *f = top(r);
    if (f->is_array || !json_is_object(f->node))
        return 0;
    json_t *v = json_object_get(f->node, field);
    if (v == NULL && frame_has_camel_keys(f) && strchr(field, '_') != NULL) {
        char camel[128];
        camel_case(field, camel, sizeof(camel));
        v = json_object_get(f->node, camel);
    }
    return v != NULL && !json_is_null(v);
}

int pt_cfg_has_any(pt_cfg_t *r, const char *const *fields)
{
    for (int i = 0; fields[i] != NULL; i++)
        if (pt_cfg_has(r, fields[i]))
            return 1;
    return 0;
}

/* Appends `s` to out[0..len) after what is there, separated by `sep` when not first. */
static void append_name(char *out, size_t len, const char *sep, const char *s)
{
    size_t o = strlen(out);
    if (o + 1 < len)
        snprintf(out + o, len - o, "%s%s", o ? sep : "", s);
}

int pt_cfg_oneof(pt_cfg_t *r, const char *const *fields, int required)
{
    int found = PT_CFG_ONEOF_NONE, n = 0, nfields = 0;
    char present[512] = "";
    for (int i = 0; fields[i] != NULL; i++, nfields++) {
        if (!pt_cfg_has(r, fields[i]))
            continue;
        if (n++ == 0)
            found = i;
        append_name(present, sizeof(present), ", ", fields[i]);
    }
    if (n == 1)
        return found;
    if (n == 0 && !required)
        return PT_CFG_ONEOF_NONE;
    char all[512] = "";
    for (int i = 0; i < nfields; i++)
        append_name(all, sizeof(all), n == 0 && i == nfields - 1 ? " or " : ", ", fields[i]);
    if (n == 0) {
        pt_cfg_error(r, NULL, "one of %s is required", all);
        return PT_CFG_ONEOF_NONE;
    }
    pt_cfg_error(r, NULL, "only one of %s may be given (found %s)", all, present);
    for (int i = 0; i < nfields; i++)
        (void)pt_cfg_get(r, fields[i]);
    return PT_CFG_ONEOF_MANY;
}

/* Short rendering of a JSON value for error messages. Strings too are rendered as JSON, so
 * a quote or newline inside a value is escaped and each error stays on one line. */
static void render(json_t *v, char *out, size_t len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(out, len, "%s", s ? s : "?");
    free(s);
}

int pt_cfg_string(pt_cfg_t *r, const char *field, const char **out, const char *def)
{
    json_t *v = pt_cfg_get(r, field);
    *out = def;
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        char tmp[128];
        render(v, tmp, sizeof(tmp));
        pt_cfg_error(r, field, "%s is not a string", tmp);
        return -1;
    }
    *out = json_string_value(v);
    return 1;
}

int pt_cfg_bool(pt_cfg_t *r, const char *field, int *out, int def)
{
    json_t *v = pt_cfg_get(r, field);
    *out = def;
    if (v == NULL)
        return 0;
    /* google.protobuf.BoolValue appears both bare and as {"value": bool}. */
    if (json_is_object(v) && json_object_size(v) == 1 && json_object_get(v, "value"))
        v = json_object_get(v, "value");
    if (!json_is_boolean(v)) {
        char tmp[128];
        render(v, tmp, sizeof(tmp));
        pt_cfg_error(r, field, "%s is not a boolean", tmp);
        return -1;
    }
    *out = json_is_true(v);
    return 1;
}

int pt_cfg_uint(pt_cfg_t *r, const char *field, uint64_t *out, uint64_t def, uint64_t min,
                uint64_t max)
{
    json_t *v = pt_cfg_get(r, field);
    *out = def;
    if (v == NULL)
        return 0;
    if (json_is_object(v) && json_object_size(v) == 1 && json_object_get(v, "value"))
        v = json_object_get(v, "value");
    uint64_t val = 0;
    int ok = 0;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i >= 0) {
            val = (uint64_t)i;
            ok = 1;
        }
    } else if (json_is_string(v)) {
        /* proto3 JSON allows integers as strings. */
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        if (*s >= '0' && *s <= '9') {
            unsigned long long u = strtoull(s, &end, 10);
            if (*end == '\0' && errno == 0) {
                val = u;
                ok = 1;
            }
        }
    }
    char tmp[128];
    if (!ok) {
        render(v, tmp, sizeof(tmp));
        pt_cfg_error(r, field, "%s is not a non-negative integer", tmp);
        return -1;
    }
    if (val < min || val > max) {
        pt_cfg_error(r, field, "%" PRIu64 " is out of range [%" PRIu64 ", %" PRIu64 "]", val,
                     min, max);
        return -1;
    }
    *out = val;
    return 1;
}

int pt_cfg_double(pt_cfg_t *r, const char *field, double *out, double def, double min,
                  double max)
{
    json_t *v = pt_cfg_get(r, field);
    *out = def;
    if (v == NULL)
        return 0;
    if (json_is_object(v) && json_object_size(v) == 1 && json_object_get(v, "value"))
        v = json_object_get(v, "value");
    if (!json_is_number(v)) {
        char tmp[128];
        render(v, tmp, sizeof(tmp));
        pt_cfg_error(r, field, "%s is not a number", tmp);
        return -1;
    }
    double d = json_number_value(v);
    if (!(d >= min && d <= max)) {
        pt_cfg_error(r, field, "%g is out of range [%g, %g]", d, min, max);
        return -1;
    }
    *out = d;
    return 1;
}

int pt_cfg_int64(pt_cfg_t *r, const char *field, int64_t *out)
{
    json_t *v = pt_cfg_get(r, field);
    *out = 0;
    if (v == NULL)
        return 0;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 1;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long long n = strtoll(s, &end, 10);
        if (*s != '\0' && *end == '\0' && errno == 0 && !isspace((unsigned char)*s)) {
            *out = (int64_t)n;
            return 1;
        }
    }
    char tmp[128];
    render(v, tmp, sizeof(tmp));
    pt_cfg_error(r, field, "%s is not an integer", tmp);
    return -1;
}

int pt_duration_parse_ms(const char *s, uint64_t *out_ms)
{
    const char *p = s;
    uint64_t secs = 0;
    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        if (secs > 315576000000ull) /* proto Duration's range: ±10000 years */
            return -1;
        secs = secs * 10 + (uint64_t)(*p++ - '0');
    }
    uint64_t nanos = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (++digits > 9)
                return -1;
            nanos = nanos * 10 + (uint64_t)(*p++ - '0');
        }
        if (digits == 0)
            return -1;
        for (; digits < 9; digits++)
            nanos *= 10;
    }
    if (p[0] != 's' || p[1] != '\0')
        return -1;
    if (secs > 315576000000ull)
        return -1;
    *out_ms = secs * 1000 + (nanos + 999999) / 1000000;
    return 0;
}

int pt_cfg_duration_ms(pt_cfg_t *r, const char *field, uint64_t *out_ms, uint64_t def)
{
    json_t *v = pt_cfg_get(r, field);
    *out_ms = def;
    if (v == NULL)
        return 0;
    char tmp[128];
    if (json_is_string(v)) {
        if (pt_duration_parse_ms(json_string_value(v), out_ms) == 0)
            return 1;
    } else if (json_is_object(v)) {
        json_t *sec = json_object_get(v, "seconds");
        json_t *nan = json_object_get(v, "nanos");
        size_t known = (sec != NULL) + (nan != NULL);
        if (known == json_object_size(v) && (!sec || json_is_integer(sec)) &&
            (!nan || json_is_integer(nan))) {
            json_int_t s = sec ? json_integer_value(sec) : 0;
            json_int_t n = nan ? json_integer_value(nan) : 0;
            /* Same range as the string form: larger seconds would overflow the ms value. */
            if (s >= 0 && s <= 315576000000ll && n >= 0 && n < 1000000000) {
                *out_ms = (uint64_t)s * 1000 + ((uint64_t)n + 999999) / 1000000;
                return 1;
            }
        }
    }
    render(v, tmp, sizeof(tmp));
    *out_ms = def;
    pt_cfg_error(r, field, "%s is not a duration (expected a string like \"1.5s\")", tmp);
    return -1;
}

int pt_cfg_enum(pt_cfg_t *r, const char *field, const char *const *values,
                const char *const *known, int *out, int def)
{
    json_t *v = pt_cfg_get(r, field);
    *out = def;
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        char tmp[128];
        render(v, tmp, sizeof(tmp));
        pt_cfg_error(r, field, "%s is not an enum name", tmp);
        return -1;
    }
    const char *s = json_string_value(v);
    for (int i = 0; values[i] != NULL; i++) {
        if (strcasecmp(values[i], s) == 0) { /* Envoy reads enum names in any case */
            *out = i;
            return 1;
        }
    }
    for (int i = 0; known != NULL && known[i] != NULL; i++) {
        if (strcasecmp(known[i], s) == 0) {
            pt_cfg_error(r, field, "\"%s\" is not supported", s);
            return -1;
        }
    }
    char list[512];
    size_t o = 0;
    list[0] = '\0';
    for (int i = 0; values[i] != NULL && o < sizeof(list); i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", values[i]);
    pt_cfg_error(r, field, "\"%s\" is not a valid value (expected one of: %s)", s, list);
    return -1;
}

int pt_cfg_enter(pt_cfg_t *r, const char *field)
{
    json_t *v = pt_cfg_get(r, field);
    if (v == NULL)
        return 0;
    if (!json_is_object(v)) {
        char tmp[128];
        render(v, tmp, sizeof(tmp));
        pt_cfg_error(r, field, "%s is not an object", tmp);
        return -1;
    }
    if (r->depth >= PT_CFG_MAX_DEPTH) {
        pt_cfg_error(r, field, "nesting is too deep");
        return -1;
    }
    const pt_pb_message_t *m = value_message(field_message(r, field), v);
    push_field_path(r, field);
    push_frame(r, v, 0, m);
    return 1;
}

int pt_cfg_enter_index(pt_cfg_t *r, size_t idx)
{
    pt_cfg_frame_t *f = top(r);
    json_t *v = f->is_array ? json_array_get(f->node, idx) : NULL;
    if (v == NULL)
        return 0;
    size_t saved = r->path_len;
    pt_cfg_push_index(r, idx);
    if (!json_is_object(v)) {
        char tmp[128];
        render(v, tmp, sizeof(tmp));
        pt_cfg_error(r, NULL, "%s is not an object", tmp);
        pt_cfg_pop_path(r, saved);
        return -1;
    }
    if (r->depth >= PT_CFG_MAX_DEPTH) {
        pt_cfg_error(r, NULL, "nesting is too deep");
        pt_cfg_pop_path(r, saved);
        return -1;
    }
    push_frame(r, v, 0, value_message(f->msg, v));
    return 1;
}

json_t *pt_cfg_index_value(pt_cfg_t *r, size_t idx)
{
    pt_cfg_frame_t *f = top(r);
    return f->is_array ? json_array_get(f->node, idx) : NULL;
}

static int in_list(const char *const *list, const char *key)
{
    for (int i = 0; list != NULL && list[i] != NULL; i++) {
        char camel[128];
        camel_case(list[i], camel, sizeof(camel));
        if (strcmp(list[i], key) == 0 || strcmp(camel, key) == 0)
            return 1;
    }
    return 0;
}

void pt_cfg_leave(pt_cfg_t *r)
{
    pt_cfg_frame_t *f = top(r);
    if (!f->is_array && json_is_object(f->node)) {
        const char *key;
        json_t *val;
        json_object_foreach(f->node, key, val) {
            int seen = f->skip_rest;
            for (unsigned i = 0; i < f->nseen && !seen; i++)
                seen = strcmp(f->seen[i], key) == 0;
            if (seen)
                continue;
            if (in_list(f->unsupported, key) || (f->msg && pt_pb_field_by_name(f->msg, key)))
                pt_cfg_error(r, key, "field is not supported");
            else
                pt_cfg_error(r, key, "unknown field");
        }
    }
    r->depth--;
    pt_cfg_pop_path(r, r->depth > 0 ? r->frames[r->depth - 1].path_len : 0);
    /* An array element's frame sits under the array frame: restore the array's path. */
}

void pt_cfg_finish(pt_cfg_t *r)
{
    while (r->depth > 0)
        pt_cfg_leave(r);
}

size_t pt_cfg_array(pt_cfg_t *r, const char *field, int *present)
{
    json_t *v = pt_cfg_get(r, field);
    if (present)
        *present = 0;
    if (v == NULL)
        return 0;
    if (!json_is_array(v)) {
        char tmp[128];
        render(v, tmp, sizeof(tmp));
        pt_cfg_error(r, field, "%s is not a list", tmp);
        return 0;
    }
    /* Lists take a frame too: check the depth like pt_cfg_enter does. */
    if (r->depth >= PT_CFG_MAX_DEPTH) {
        pt_cfg_error(r, field, "nesting is too deep");
        return 0;
    }
    if (present)
        *present = 1;
    const pt_pb_message_t *m = field_message(r, field);
    push_field_path(r, field);
    push_frame(r, v, 1, m);
    return json_array_size(v);
}

void pt_cfg_leave_array(pt_cfg_t *r)
{
    r->depth--;
    pt_cfg_pop_path(r, r->depth > 0 ? r->frames[r->depth - 1].path_len : 0);
}

const char *pt_cfg_enter_any(pt_cfg_t *r, const char *field, int *rc)
{
    int e = pt_cfg_enter(r, field);
    *rc = e;
    if (e <= 0)
        return NULL;
    const char *type;
    /* Without a type the other fields cannot be judged: report only the @type problem (a
     * non-string @type as "is not a string", not as missing). */
    int trc = pt_cfg_string(r, "@type", &type, NULL);
    if (trc <= 0) {
        if (trc == 0)
            pt_cfg_error(r, "@type", "is required");
        pt_cfg_skip_rest(r);
        pt_cfg_leave(r);
        *rc = -1;
        return NULL;
    }
    return type;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

char *pt_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (buf == NULL || bad || n > max) {
        if (buf == NULL)
            snprintf(err, errlen, "cannot read %s: out of memory", path);
        else if (bad)
            snprintf(err, errlen, "cannot read %s: read error", path);
        else
            snprintf(err, errlen, "cannot read %s: larger than %zu bytes", path, max);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* See config_reader.h. */
long pt_base64_decode(const char *s, unsigned char *out)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (strlen(s) - n > 2 || n % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)o;
}
