/* Unit tests for proxy/json.c: JSON within the document bounds (nesting, values, size),
 * judged by the pass over the bytes before jansson builds anything, with the line and
 * column of the first byte past a bound; and jansson's own errors, unchanged. */
#include "proxy/config_reader.h"
#include "pt_test.h"

static char err[512];

static json_t *P(const char *text)
{
    err[0] = '\0';
    return pt_json_parse(text, strlen(text), err, sizeof(err));
}

static json_t *Pfree(char *text)
{
    json_t *v = P(text);
    free(text);
    return v;
}

/* n copies of `open`, then `middle`, then n copies of `close`. */
static char *nest(const char *open, int n, const char *middle, const char *close)
{
    size_t lo = strlen(open), lm = strlen(middle), lc = strlen(close);
    char *t = malloc((size_t)n * (lo + lc) + lm + 1), *p = t;
    for (int i = 0; i < n; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, middle, lm);
    p += lm;
    for (int i = 0; i < n; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return t;
}

static void test_parse(void)
{
    json_t *v = P("{\"a\": [1, 2.5, \"x\", true, null], \"b\": {\"c\": \"0.25s\"}}");
    PT_CHECK(v != NULL);
    PT_CHECK_INT(json_array_size(json_object_get(v, "a")), 5);
    PT_CHECK_STR(json_string_value(json_object_get(json_object_get(v, "b"), "c")), "0.25s");
    json_decref(v);
    /* Any value at the top (the config reader wants an object, and says so). */
    v = P("[]");
    PT_CHECK(json_is_array(v));
    json_decref(v);

    /* jansson's errors, with its line and column. */
    PT_CHECK(P("{\n  \"a\": 1,\n  \"b\": \n}\n") == NULL);
    PT_CHECK_STR(err, "line 4 column 1: unexpected token near '}'");
    PT_CHECK(P("{\"a\": 1, \"a\": 2}") == NULL);
    PT_CHECK_STR(err, "line 1 column 12: duplicate object key near '\"a\"'");
    PT_CHECK(P("") == NULL);
    PT_CHECK_STR(err, "line 1 column 0: '[' or '{' expected near end of file");
    PT_CHECK(pt_json_parse(NULL, 0, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "line 1 column 0: '[' or '{' expected near end of file");
    PT_CHECK(pt_json_parse("{}\0", 3, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "line 1 column 3: end of file expected near end of file");
}

static void test_nesting_limit(void)
{
    json_t *v = Pfree(nest("[", PT_DOC_MAX_DEPTH, "1", "]"));
    PT_CHECK(v != NULL);
    json_decref(v);
    v = Pfree(nest("{\"a\": ", PT_DOC_MAX_DEPTH, "1", "}"));
    PT_CHECK(v != NULL);
    json_decref(v);

    PT_CHECK(Pfree(nest("[", PT_DOC_MAX_DEPTH + 1, "1", "]")) == NULL);
    PT_CHECK_STR(err, "line 1 column 129: nesting deeper than 128 levels");
    /* 100k levels: far below jansson's own bound of 2048, the message is petrel's. */
    PT_CHECK(Pfree(nest("[", 100000, "", "]")) == NULL);
    PT_CHECK_STR(err, "line 1 column 129: nesting deeper than 128 levels");
    PT_CHECK(Pfree(nest("{\"a\":", 100000, "1", "}")) == NULL);
    PT_CHECK_STR(err, "line 1 column 641: nesting deeper than 128 levels");
    /* Lines, and columns in characters: é is two bytes, one column. */
    PT_CHECK(Pfree(nest("[\n", 100000, "", "]")) == NULL);
    PT_CHECK_STR(err, "line 129 column 1: nesting deeper than 128 levels");
    char *deep = nest("[", 100000, "", "]");
    char *t = malloc(strlen(deep) + 16);
    sprintf(t, "{\"\xc3\xa9\": %s}", deep);
    free(deep);
    PT_CHECK(Pfree(t) == NULL);
    PT_CHECK_STR(err, "line 1 column 134: nesting deeper than 128 levels");

    /* Brackets in strings are text, escaped quotes do not end a string. */
    char *s = nest("[", 200, "", "]");
    t = malloc(strlen(s) * 2 + 32);
    sprintf(t, "[\"\\\"%s\", {\"%s\": 1}]", s, s);
    free(s);
    v = Pfree(t);
    PT_CHECK(v != NULL);
    PT_CHECK_INT(json_array_size(v), 2);
    json_decref(v);
    /* The bound holds after such strings too. */
    s = nest("[", 200, "", "]");
    t = malloc(strlen(s) * 2 + 32);
    sprintf(t, "[\"\\\\\", %s]", s);
    free(s);
    PT_CHECK(Pfree(t) == NULL);
    PT_CHECK_STR(err, "line 1 column 135: nesting deeper than 128 levels");
}

/* [item,item,...] with n > 0 items, as a new string. */
static char *list_of(size_t n, const char *item)
{
    size_t li = strlen(item);
    char *t = malloc(n * (li + 1) + 2), *p = t;
    *p++ = '[';
    for (size_t i = 0; i < n; i++) {
        memcpy(p, item, li);
        p += li;
        *p++ = ',';
    }
    p[-1] = ']';
    *p = '\0';
    return t;
}

static void test_value_limit(void)
{
    /* The list and its items: exactly the bound, then one more (rejected before jansson
     * builds any of it). */
    json_t *v = Pfree(list_of(PT_DOC_MAX_VALUES - 1, "1"));
    PT_CHECK(v != NULL);
    PT_CHECK_INT(json_array_size(v), PT_DOC_MAX_VALUES - 1);
    json_decref(v);
    PT_CHECK(Pfree(list_of(PT_DOC_MAX_VALUES, "1")) == NULL);
    PT_CHECK_STR(err, "line 1 column 8388608: the document holds more than 4194304 values");
    /* Multi-character tokens count once; strings, objects and arrays count; keys do not:
     * {"k": [true]} is three values, and 4194303 is a multiple of 3, so the first value of
     * item 1398102 is the one past the bound (were keys counted, an earlier one would be). */
    PT_CHECK(Pfree(list_of(PT_DOC_MAX_VALUES / 3 + 1, "{\"k\": [true]}")) == NULL);
    PT_CHECK_STR(err, "line 1 column 19573416: the document holds more than 4194304 values");
    PT_CHECK(Pfree(list_of(PT_DOC_MAX_VALUES, "\"s\"")) == NULL);
    PT_CHECK_STR(err, "line 1 column 16777214: the document holds more than 4194304 values");
}

static void test_size_limit(void)
{
    PT_CHECK(pt_json_parse("{}", (size_t)PT_DOC_MAX_BYTES + 1, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "larger than 67108864 bytes (64 MiB)");
}

int main(void)
{
    PT_RUN(test_parse);
    PT_RUN(test_nesting_limit);
    PT_RUN(test_value_limit);
    PT_RUN(test_size_limit);
    PT_TEST_EXIT();
}
