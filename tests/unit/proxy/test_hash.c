/* Unit tests for proxy/hash: content hashes that decide whether a configuration changed. A
 * digest must not tell apart what is equal (members in another order) and must tell apart
 * what differs, however slightly (one value, a type, an element's place). */
#include "proxy/hash.h"
#include "pt_test.h"
#include "pt_test_json.h"

static int same(const char *a, const char *b)
{
    json_t *x = J(a), *y = J(b);
    int eq = pt_digest_equal(pt_json_digest(x), pt_json_digest(y));
    json_decref(x);
    json_decref(y);
    return eq;
}

static void test_bytes(void)
{
    PT_CHECK(pt_hash64("abc", 3, 1) == pt_hash64("abc", 3, 1));
    PT_CHECK(pt_hash64("abc", 3, 1) != pt_hash64("abd", 3, 1));
    PT_CHECK(pt_hash64("abc", 3, 1) != pt_hash64("abc", 3, 2));
    PT_CHECK(pt_hash64("abcdefghij", 10, 1) != pt_hash64("abcdefghik", 10, 1));
    PT_CHECK(pt_hash64("", 0, 1) != pt_hash64("\0", 1, 1));
    json_t *x = J("'x'");
    pt_digest_t d = pt_json_digest(x);
    json_decref(x);
    PT_CHECK(d.a != d.b); /* two independent lanes */
}

/* The digest of bytes tells apart every one-bit change, every length, and lanes' contents
 * moved between lanes. */
static void test_bytes_digest(void)
{
    unsigned char buf[100];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    for (size_t n = 0; n <= sizeof(buf); n++) {
        pt_digest_t d = pt_bytes_digest(buf, n);
        PT_CHECK(pt_digest_equal(d, pt_bytes_digest(buf, n)));
        PT_CHECK(d.a != d.b);
        if (n > 0)
            PT_CHECK(!pt_digest_equal(d, pt_bytes_digest(buf, n - 1)));
        for (size_t i = 0; i < n; i++)
            for (int bit = 0; bit < 8; bit++) {
                buf[i] ^= (unsigned char)(1u << bit);
                PT_CHECK(!pt_digest_equal(d, pt_bytes_digest(buf, n)));
                buf[i] ^= (unsigned char)(1u << bit);
            }
    }
    /* 64 bytes whose 8-byte words are swapped around: two blocks of four lanes */
    unsigned char x[64], y[64];
    for (int w = 0; w < 8; w++)
        for (int k = 0; k < 8; k++) {
            x[w * 8 + k] = (unsigned char)(w + 1);
            y[((w + 1) % 8) * 8 + k] = (unsigned char)(w + 1);
        }
    PT_CHECK(!pt_digest_equal(pt_bytes_digest(x, 64), pt_bytes_digest(y, 64)));
    PT_CHECK(!pt_digest_equal(pt_bytes_digest(x, 64), pt_bytes_digest(x + 32, 32)));
    PT_CHECK(!pt_digest_equal(pt_bytes_digest("", 0), pt_bytes_digest("\0", 1)));
}

static void test_json_equal_values(void)
{
    PT_CHECK(same("{'a':1,'b':[1,2],'c':{'d':'x','e':null}}",
                  "{'c':{'e':null,'d':'x'},'b':[1,2],'a':1}"));
    PT_CHECK(same("[]", "[]"));
    PT_CHECK(same("{}", "{}"));
    PT_CHECK(same("'s'", "'s'"));
}

static void test_json_different_values(void)
{
    static const char *const pairs[][2] = {
        {"{'a':1}", "{'a':2}"},
        {"{'a':1}", "{'b':1}"},
        {"{'a':1}", "{'a':1.0}"},          /* an integer is not a real */
        {"{'a':'1'}", "{'a':1}"},
        {"[1,2]", "[2,1]"},                 /* order of elements counts */
        {"[1]", "[1,1]"},
        {"{'a':true}", "{'a':false}"},
        {"{'a':null}", "{'a':false}"},
        {"{'a':{}}", "{'a':[]}"},
        {"{'a':1,'b':2}", "{'a':2,'b':1}"}, /* values swapped between keys */
        {"{'a':{'b':1}}", "{'a':{'b':1},'c':{}}"},
        {"{'x':[{'p':1},{'p':2}]}", "{'x':[{'p':2},{'p':1}]}"},
        {"'ab'", "'ba'"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        if (same(pairs[i][0], pairs[i][1]))
            fprintf(stderr, "same digest: %s %s\n", pairs[i][0], pairs[i][1]);
        PT_CHECK(!same(pairs[i][0], pairs[i][1]));
    }
}

/* An assignment of many endpoints where one port changes: a different digest each time. */
static void test_json_one_port_among_many(void)
{
    char buf[16384];
    pt_digest_t seen[64];
    for (int v = 0; v < 64; v++) {
        size_t n = (size_t)snprintf(buf, sizeof(buf), "{'cluster_name':'c','endpoints':[");
        for (int k = 0; k < 50; k++)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s{'port':%d}", k ? "," : "",
                                  k == 25 ? 30000 + v : 20000 + k);
        snprintf(buf + n, sizeof(buf) - n, "]}");
        json_t *j = J(buf);
        seen[v] = pt_json_digest(j);
        json_decref(j);
        for (int w = 0; w < v; w++)
            PT_CHECK(!pt_digest_equal(seen[v], seen[w]));
    }
}

int main(void)
{
    PT_RUN(test_bytes);
    PT_RUN(test_bytes_digest);
    PT_RUN(test_json_equal_values);
    PT_RUN(test_json_different_values);
    PT_RUN(test_json_one_port_among_many);
    PT_TEST_EXIT();
}
