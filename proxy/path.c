#include "proxy/path.h"

#include <string.h>

/* Length of the path part: up to "?" or "#". */
static size_t path_len(const char *path)
{
    return strcspn(path, "?#");
}

static int is_dot(const char *s, size_t len, size_t *dot_len)
{
    if (len >= 1 && s[0] == '.') {
        *dot_len = 1;
        return 1;
    }
    if (len >= 3 && s[0] == '%' && s[1] == '2' && (s[2] == 'e' || s[2] == 'E')) {
        *dot_len = 3;
        return 1;
    }
    return 0;
}

/* How many dots segment [s, s+len) is made of: 1 for ".", 2 for "..", else 0. */
static int dot_segment(const char *s, size_t len)
{
    size_t n1, n2;
    if (!is_dot(s, len, &n1))
        return 0;
    if (n1 == len)
        return 1;
    if (is_dot(s + n1, len - n1, &n2) && n1 + n2 == len)
        return 2;
    return 0;
}

char *pt_path_normalize(pt_arena_t *a, const char *path)
{
    size_t plen = path_len(path), total = strlen(path);
    if (plen == 0 || path[0] != '/')
        return NULL;
    char *out = pt_arena_alloc(a, total + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    /* Walk the segments after each "/"; the output always starts with "/". */
    size_t i = 1;
    out[o++] = '/';
    while (i <= plen) {
        size_t end = i;
        while (end < plen && path[end] != '/')
            end++;
        int dots = dot_segment(path + i, end - i);
        int last = end >= plen;
        if (dots == 1) {
            /* "." : nothing to add; a trailing one leaves the directory's "/". */
        } else if (dots == 2) {
            /* ".." : drop the last output segment (never the root's "/"). */
            if (o > 1) {
                o--; /* the "/" that ends the previous segment */
                while (o > 0 && out[o - 1] != '/')
                    o--;
            }
        } else {
            memcpy(out + o, path + i, end - i);
            o += end - i;
            if (!last)
                out[o++] = '/';
        }
        if (last)
            break;
        i = end + 1;
    }
    memcpy(out + o, path + plen, total - plen);
    o += total - plen;
    out[o] = '\0';
    return out;
}

const char *pt_path_merge_slashes(pt_arena_t *a, const char *path)
{
    size_t plen = path_len(path), total = strlen(path);
    if (strstr(path, "//") == NULL || strstr(path, "//") >= path + plen)
        return path;
    char *out = pt_arena_alloc(a, total + 1);
    if (out == NULL)
        return path;
    size_t o = 0;
    for (size_t i = 0; i < plen; i++)
        if (!(path[i] == '/' && o > 0 && out[o - 1] == '/'))
            out[o++] = path[i];
    memcpy(out + o, path + plen, total - plen + 1);
    return out;
}

static int escaped_slash_at(const char *s)
{
    return s[0] == '%' &&
           ((s[1] == '2' && (s[2] == 'f' || s[2] == 'F')) ||
            (s[1] == '5' && (s[2] == 'c' || s[2] == 'C')));
}

int pt_path_has_escaped_slash(const char *path)
{
    size_t plen = path_len(path);
    for (size_t i = 0; i + 2 < plen; i++)
        if (escaped_slash_at(path + i))
            return 1;
    return 0;
}

char *pt_path_unescape_slashes(pt_arena_t *a, const char *path)
{
    size_t plen = path_len(path), total = strlen(path);
    char *out = pt_arena_alloc(a, total + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0, i = 0;
    while (i < plen) {
        if (i + 2 < plen && escaped_slash_at(path + i)) {
            out[o++] = path[i + 1] == '2' ? '/' : '\\';
            i += 3;
        } else {
            out[o++] = path[i++];
        }
    }
    memcpy(out + o, path + plen, total - plen + 1);
    return out;
}
