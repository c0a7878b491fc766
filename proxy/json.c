/* JSON text to a jansson tree within the document bounds of config_reader.h.
 *
 * jansson has no bound on the values it builds and its own depth bound is 2048, so one pass
 * over the bytes comes first: it follows only the structure (strings, brackets, the tokens
 * between them), and stops at the first byte past a bound, naming its line and column before
 * jansson allocates anything. The syntax is left to jansson, which reports it as before. */
#include "proxy/config_reader.h"

#include <stdio.h>
#include <string.h>

/* 0 when within the bounds; else -1 with "line L column C: <why>" in err. Lines and columns
 * count as jansson's do: from 1, in characters (a UTF-8 continuation byte is no column). */
static int check_bounds(const char *text, size_t len, char *err, size_t errlen)
{
    unsigned char in_object[PT_DOC_MAX_DEPTH + 1]; /* per open level: an object? */
    int depth = 0;
    size_t values = 0;
    unsigned long line = 1, column = 0;
    int in_string = 0, escaped = 0, in_token = 0;
    char prev = 0; /* the last structural character, or '"' after a string */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c & 0xC0) != 0x80)
            column++;
        if (c == '\n') {
            line++;
            column = 0;
        }
        if (in_string) {
            if (escaped)
                escaped = 0;
            else if (c == '\\')
                escaped = 1;
            else if (c == '"')
                in_string = 0;
            continue;
        }
        int value = 0;
        switch (c) {
        case ' ':
        case '\t':
        case '\n':
        case '\r':
            in_token = 0;
            continue;
        case '[':
        case '{':
            if (depth >= PT_DOC_MAX_DEPTH) {
                snprintf(err, errlen, "line %lu column %lu: nesting deeper than %d levels", line,
                         column, PT_DOC_MAX_DEPTH);
                return -1;
            }
            in_object[++depth] = c == '{';
            value = 1;
            break;
        case ']':
        case '}':
            if (depth > 0)
                depth--;
            break;
        case ',':
        case ':':
            break;
        case '"':
            in_string = 1;
            /* A key is no value: a string right after '{' or ',' in an object. */
            value = !(depth > 0 && in_object[depth] && (prev == '{' || prev == ','));
            break;
        default: /* a number, true, false, null (or garbage, jansson's to report) */
            prev = (char)c;
            if (in_token)
                continue;
            in_token = 1;
            if (++values > PT_DOC_MAX_VALUES)
                goto too_many;
            continue;
        }
        in_token = 0;
        prev = (char)c;
        if (value && ++values > PT_DOC_MAX_VALUES)
            goto too_many;
    }
    return 0;
too_many:
    snprintf(err, errlen, "line %lu column %lu: the document holds more than %u values", line,
             column, PT_DOC_MAX_VALUES);
    return -1;
}

json_t *pt_json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    if (len > PT_DOC_MAX_BYTES) {
        snprintf(err, errlen, "larger than %u bytes (%u MiB)", PT_DOC_MAX_BYTES,
                 PT_DOC_MAX_BYTES >> 20);
        return NULL;
    }
    if (text == NULL)
        text = "";
    if (check_bounds(text, len, err, errlen) != 0)
        return NULL;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        snprintf(err, errlen, "line %d column %d: %s", je.line, je.column, je.text);
    return root;
}
