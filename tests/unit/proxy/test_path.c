/* Unit tests for proxy/path: dot-segment removal (RFC 3986 5.2.4 and its examples),
 * slash merging and escaped slashes, query strings left alone. */
#include "proxy/path.h"
#include "pt_test.h"

static void test_normalize(void)
{
    static const struct {
        const char *in, *want; /* want NULL: rejected */
    } cases[] = {
        {"/", "/"},
        {"/a/b/c", "/a/b/c"},
        {"/a/b/../c", "/a/c"},
        {"/a/./b", "/a/b"},
        {"/a/.", "/a/"},
        {"/a/..", "/"},
        {"/..", "/"},
        {"/../../x", "/x"},               /* never above the root */
        {"/a/b/c/./../../g", "/a/g"},     /* RFC 3986 5.2.4's example */
        {"/mid/content=5/../6", "/mid/6"}, /* and its second one */
        {"/public/../admin", "/admin"},   /* what a prefix match on /public must not see */
        {"/public/%2e%2E/admin", "/admin"}, /* dots spelled as escapes */
        {"/public/.%2e/admin", "/admin"},
        {"/a/..b/c", "/a/..b/c"},         /* not a dot segment */
        {"/a/...", "/a/..."},
        {"/a//b/../c", "/a//c"},          /* empty segments are segments */
        {"/a/b/..?x=/../y", "/a/?x=/../y"}, /* the query is not a path */
        {"/a/./b#frag", "/a/b#frag"},
        {"*", NULL},
        {"a/b", NULL},
        {"", NULL},
    };
    pt_arena_t a = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = pt_path_normalize(&a, cases[i].in);
        int ok = cases[i].want == NULL ? out == NULL
                                       : out != NULL && strcmp(out, cases[i].want) == 0;
        if (!ok)
            fprintf(stderr, "  normalize \"%s\" -> \"%s\", want \"%s\"\n", cases[i].in,
                    out ? out : "(null)", cases[i].want ? cases[i].want : "(null)");
        PT_CHECK(ok);
    }
    pt_arena_dispose(&a);
}

static void test_merge_slashes(void)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"/", "/"},
        {"//", "/"},
        {"/a//b///c", "/a/b/c"},
        {"///a/", "/a/"},
        {"/a?x=//y", "/a?x=//y"},
        {"/a//b?x=//y", "/a/b?x=//y"},
    };
    pt_arena_t a = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        PT_CHECK_STR(pt_path_merge_slashes(&a, cases[i].in), cases[i].want);
    const char *same = "/a/b";
    PT_CHECK(pt_path_merge_slashes(&a, same) == same); /* nothing to do: no copy */
    pt_arena_dispose(&a);
}

static void test_escaped_slashes(void)
{
    PT_CHECK(pt_path_has_escaped_slash("/a%2Fb"));
    PT_CHECK(pt_path_has_escaped_slash("/a%2fb"));
    PT_CHECK(pt_path_has_escaped_slash("/a%5cb"));
    PT_CHECK(pt_path_has_escaped_slash("/a%5Cb"));
    PT_CHECK(!pt_path_has_escaped_slash("/a%2eb"));
    PT_CHECK(!pt_path_has_escaped_slash("/a?b=%2F"));   /* in the query: not the path's */
    PT_CHECK(!pt_path_has_escaped_slash("/a%2"));
    pt_arena_t a = {0};
    PT_CHECK_STR(pt_path_unescape_slashes(&a, "/a%2Fb%5cc?x=%2F"), "/a/b\\c?x=%2F");
    PT_CHECK_STR(pt_path_unescape_slashes(&a, "/..%2f..%2fetc"), "/../../etc");
    PT_CHECK_STR(pt_path_normalize(&a, pt_path_unescape_slashes(&a, "/x/..%2f..%2fetc")),
                 "/etc");
    pt_arena_dispose(&a);
}

int main(void)
{
    PT_RUN(test_normalize);
    PT_RUN(test_merge_slashes);
    PT_RUN(test_escaped_slashes);
    PT_TEST_EXIT();
}
