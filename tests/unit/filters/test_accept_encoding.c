/* Unit tests for Accept-Encoding negotiation (filters/accept_encoding.c): q-values, q=0
 * refusals, "identity", "*", malformed elements, case, and the rule for several compressor
 * filters on one chain (the first in the chain for "*", choose_first on ties). */
#include "filters/accept_encoding.h"
#include "pt_test.h"

static const pt_ae_candidate_t GZ[] = {{"gzip", 0}};
static const pt_ae_candidate_t THREE[] = {{"gzip", 0}, {"br", 0}, {"zstd", 0}};
static const pt_ae_candidate_t FIRST[] = {{"gzip", 0}, {"br", 1}, {"zstd", 0}};

/* The result, with the chosen candidate's coding folded in ("gzip", "identity", "none"). */
static const char *choose(const char *header, const pt_ae_candidate_t *c, unsigned n)
{
    unsigned chosen = 99;
    switch (pt_accept_encoding_choose(header, c, n, &chosen)) {
    case PT_AE_CODING:
        return chosen < n ? c[chosen].encoding : "bad index";
    case PT_AE_WILDCARD:
        return chosen < n ? (c[chosen].encoding[0] == 'g'   ? "*gzip"
                             : c[chosen].encoding[0] == 'b' ? "*br"
                                                            : "*zstd")
                          : "bad index";
    case PT_AE_IDENTITY:
        return "identity";
    case PT_AE_NOT_VALID:
        return "none";
    }
    return "?";
}

static void test_single_filter(void)
{
    PT_CHECK_STR(choose("gzip", GZ, 1), "gzip");
    PT_CHECK_STR(choose("deflate, gzip", GZ, 1), "gzip");
    PT_CHECK_STR(choose(" GZip ;q=0.5 ", GZ, 1), "gzip");
    PT_CHECK_STR(choose("gzip;q=0", GZ, 1), "none");
    PT_CHECK_STR(choose("gzip;q=0.000", GZ, 1), "none");
    PT_CHECK_STR(choose("gzip; Q=0", GZ, 1), "none");
    PT_CHECK_STR(choose("deflate", GZ, 1), "none");
    PT_CHECK_STR(choose("", GZ, 1), "none");
    PT_CHECK_STR(choose(",,", GZ, 1), "none");
    PT_CHECK_STR(choose(NULL, GZ, 1), "none");
    PT_CHECK_STR(choose("*", GZ, 1), "*gzip");
    PT_CHECK_STR(choose("*;q=0", GZ, 1), "none");
    /* gzip's own q outranks "*" whatever the order */
    PT_CHECK_STR(choose("gzip;q=0,*;q=1", GZ, 1), "none");
    PT_CHECK_STR(choose("*;q=0,gzip;q=1", GZ, 1), "gzip");
    PT_CHECK_STR(choose("identity", GZ, 1), "identity");
    PT_CHECK_STR(choose("identity;q=0.9, gzip;q=0.8", GZ, 1), "identity");
    PT_CHECK_STR(choose("identity;q=0.5, gzip;q=0.8", GZ, 1), "gzip");
    /* equal q: the first listed */
    PT_CHECK_STR(choose("identity, gzip", GZ, 1), "identity");
    PT_CHECK_STR(choose("gzip, identity", GZ, 1), "gzip");
    /* a q that is not a number drops its element; other parameters leave q at 1 */
    PT_CHECK_STR(choose("gzip;q=abc", GZ, 1), "none");
    PT_CHECK_STR(choose("gzip;q=", GZ, 1), "none");
    PT_CHECK_STR(choose("gzip;q=abc, identity;q=0.1", GZ, 1), "identity");
    PT_CHECK_STR(choose("gzip;level=1", GZ, 1), "gzip");
    PT_CHECK_STR(choose("gzip;q=nan", GZ, 1), "none");
}

static void test_several_filters(void)
{
    PT_CHECK_STR(choose("br", THREE, 3), "br");
    PT_CHECK_STR(choose("gzip, br;q=0.5", THREE, 3), "gzip");
    PT_CHECK_STR(choose("gzip;q=0.5, br;q=0.7, zstd;q=0.6", THREE, 3), "br");
    PT_CHECK_STR(choose("gzip, br", THREE, 3), "gzip");
    PT_CHECK_STR(choose("br, gzip", THREE, 3), "br");
    /* "*": the first filter in the chain that is not refused */
    PT_CHECK_STR(choose("*", THREE, 3), "*gzip");
    PT_CHECK_STR(choose("gzip;q=0, *", THREE, 3), "*br");
    PT_CHECK_STR(choose("gzip;q=0, br;q=0, *", THREE, 3), "*zstd");
    PT_CHECK_STR(choose("gzip;q=0, br;q=0, zstd;q=0, *", THREE, 3), "none");
    PT_CHECK_STR(choose("gzip;q=0, deflate", THREE, 3), "none");
    /* choose_first: wins ties and "*", never a higher q */
    PT_CHECK_STR(choose("gzip, br, zstd", FIRST, 3), "br");
    PT_CHECK_STR(choose("*", FIRST, 3), "*br");
    PT_CHECK_STR(choose("gzip, br;q=0.9", FIRST, 3), "gzip");
    PT_CHECK_STR(choose("br;q=0, *", FIRST, 3), "*gzip");
    PT_CHECK_STR(choose("identity, br", FIRST, 3), "br");
}

int main(void)
{
    PT_RUN(test_single_filter);
    PT_RUN(test_several_filters);
    PT_TEST_EXIT();
}
