#include "proxy/http.h"

#include <ctype.h>
#include <string.h>

#include "proxy/log.h"

static const char *const flag_codes[] = {
#define PT_X(name, code) code,
    PT_RESPONSE_FLAGS(PT_X)
#undef PT_X
};

const char *pt_response_flags_str(uint32_t flags, char *out, size_t len)
{
    size_t o = 0;
    if (len == 0)
        return out;
    out[0] = '\0';
    for (int i = 0; i < PT_RF_BIT_COUNT; i++) {
        if (!(flags & (1u << i)))
            continue;
        size_t cl = strlen(flag_codes[i]);
        if (o + cl + 2 > len)
            break;
        if (o > 0)
            out[o++] = ',';
        memcpy(out + o, flag_codes[i], cl);
        o += cl;
        out[o] = '\0';
    }
    if (o == 0 && len >= 2) {
        out[0] = '-';
        out[1] = '\0';
    }
    return out;
}

void pt_http_headers_init(pt_http_headers_t *h, pt_arena_t *arena)
{
    memset(h, 0, sizeof(*h));
    h->arena = arena;
}

unsigned pt_http_headers_count(const pt_http_headers_t *h, const char *lname)
{
    size_t n = strlen(lname);
    unsigned c = 0;
    for (uint32_t i = 0; i < h->count; i++)
        c += h->items[i].name_len == n && memcmp(h->items[i].name, lname, n) == 0;
    return c;
}

static pt_http_header_t *grow(pt_http_headers_t *h)
{
    if (h->count == h->cap) {
        uint32_t ncap = h->cap ? h->cap * 2 : 16;
        pt_http_header_t *n = pt_arena_alloc(h->arena, ncap * sizeof(*n));
        if (n == NULL)
            return NULL;
        if (h->count)
            memcpy(n, h->items, h->count * sizeof(*n));
        h->items = n; /* the old array stays in the arena until the stream ends */
        h->cap = ncap;
    }
    return &h->items[h->count];
}

int pt_http_headers_add(pt_http_headers_t *h, const char *name, size_t name_len,
                        const char *value, size_t value_len)
{
    pt_http_header_t *e = grow(h);
    if (e == NULL)
        return -1;
    char *n = pt_arena_alloc(h->arena, name_len + 1 + value_len + 1);
    if (n == NULL)
        return -1;
    for (size_t i = 0; i < name_len; i++) {
        char c = name[i];
        n[i] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c); /* ASCII only: no locale lookup */
    }
    n[name_len] = '\0';
    char *v = n + name_len + 1;
    memcpy(v, value, value_len);
    v[value_len] = '\0';
    e->name = n;
    e->name_len = (uint32_t)name_len;
    e->value = v;
    e->value_len = (uint32_t)value_len;
    h->count++;
    return 0;
}

int pt_http_headers_add_str(pt_http_headers_t *h, const char *name, const char *value)
{
    return pt_http_headers_add(h, name, strlen(name), value, strlen(value));
}

int pt_http_headers_add_ref_n(pt_http_headers_t *h, const char *lname, size_t name_len,
                              const char *value, size_t value_len)
{
    pt_http_header_t *e = grow(h);
    if (e == NULL)
        return -1;
    e->name = lname;
    e->name_len = (uint32_t)name_len;
    e->value = value;
    e->value_len = (uint32_t)value_len;
    h->count++;
    return 0;
}

int pt_http_headers_add_ref(pt_http_headers_t *h, const char *lname, const char *value)
{
    pt_http_header_t *e = grow(h);
    if (e == NULL)
        return -1;
    e->name = lname;
    e->name_len = (uint32_t)strlen(lname);
    e->value = value;
    e->value_len = (uint32_t)strlen(value);
    h->count++;
    return 0;
}

unsigned pt_http_headers_remove_any(pt_http_headers_t *h, const char *const *lnames,
                                    unsigned nnames)
{
    size_t lens[16];
    uint64_t lenmask = 0; /* bit n: some name has length n (names >= 64 bytes: bit 63) */
    if (nnames > 16)
        nnames = 16;
    for (unsigned k = 0; k < nnames; k++) {
        lens[k] = strlen(lnames[k]);
        lenmask |= 1ull << (lens[k] < 63 ? lens[k] : 63);
    }
    uint32_t o = 0;
    unsigned removed = 0;
    for (uint32_t i = 0; i < h->count; i++) {
        const pt_http_header_t *e = &h->items[i];
        int drop = 0;
        /* Most headers have a length no listed name has: one test, no compare. */
        if (lenmask & (1ull << (e->name_len < 63 ? e->name_len : 63)))
            for (unsigned k = 0; k < nnames && !drop; k++)
                drop = e->name_len == lens[k] && memcmp(e->name, lnames[k], lens[k]) == 0;
        if (drop) {
            removed++;
            continue;
        }
        if (o != i)
            h->items[o] = h->items[i];
        o++;
    }
    h->count = o;
    return removed;
}

unsigned pt_http_headers_remove(pt_http_headers_t *h, const char *lname)
{
    size_t n = strlen(lname);
    uint32_t o = 0;
    unsigned removed = 0;
    for (uint32_t i = 0; i < h->count; i++) {
        if (h->items[i].name_len == n && memcmp(h->items[i].name, lname, n) == 0) {
            removed++;
            continue;
        }
        h->items[o++] = h->items[i];
    }
    h->count = o;
    return removed;
}

static int set_value(pt_http_headers_t *h, const char *lname, const char *value, int copy)
{
    size_t n = strlen(lname);
    for (uint32_t i = 0; i < h->count; i++) {
        if (h->items[i].name_len == n && memcmp(h->items[i].name, lname, n) == 0) {
            size_t vlen = strlen(value);
            const char *v = value;
            if (copy) {
                char *c = pt_arena_alloc(h->arena, vlen + 1);
                if (c == NULL)
                    return -1;
                memcpy(c, value, vlen + 1);
                v = c;
            }
            h->items[i].value = v;
            h->items[i].value_len = (uint32_t)vlen;
            /* Drop later duplicates. */
            uint32_t o = i + 1;
            for (uint32_t j = i + 1; j < h->count; j++) {
                if (h->items[j].name_len == n && memcmp(h->items[j].name, lname, n) == 0)
                    continue;
                h->items[o++] = h->items[j];
            }
            h->count = o;
            return 0;
        }
    }
    return copy ? pt_http_headers_add(h, lname, n, value, strlen(value))
                : pt_http_headers_add_ref_n(h, lname, n, value, strlen(value));
}

int pt_http_headers_set(pt_http_headers_t *h, const char *lname, const char *value)
{
    return set_value(h, lname, value, 1);
}

int pt_http_headers_set_ref(pt_http_headers_t *h, const char *lname, const char *value)
{
    return set_value(h, lname, value, 0);
}

const char *pt_http_headers_get_joined(const pt_http_headers_t *h, const char *lname)
{
    size_t n = strlen(lname), total = 0;
    unsigned count = 0;
    const char *only = NULL;
    for (uint32_t i = 0; i < h->count; i++) {
        if (h->items[i].name_len == n && memcmp(h->items[i].name, lname, n) == 0) {
            total += h->items[i].value_len + 1;
            count++;
            only = h->items[i].value;
        }
    }
    if (count <= 1)
        return only;
    char *out = pt_arena_alloc(h->arena, total), *p = out;
    if (out == NULL)
        return NULL;
    for (uint32_t i = 0; i < h->count; i++) {
        if (h->items[i].name_len == n && memcmp(h->items[i].name, lname, n) == 0) {
            if (p != out)
                *p++ = ',';
            memcpy(p, h->items[i].value, h->items[i].value_len);
            p += h->items[i].value_len;
        }
    }
    *p = '\0';
    return out;
}

int pt_http_header_name_valid(const char *s, int allow_pseudo)
{
    if (allow_pseudo && *s == ':')
        s++;
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!isalnum(c) && strchr("!#$%&'*+-.^_`|~", c) == NULL)
            return 0;
    }
    return 1;
}
