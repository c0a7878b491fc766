/* Accept-Encoding negotiation for the compressor filters of one filter chain, with Envoy's
 * rules (filters/compressor.c):
 *
 *   - the header is a comma-separated list of codings, each with an optional ";q=<value>";
 *     an element whose q is not a number is dropped; a coding with q=0 is refused;
 *   - the candidates are the content encodings of the compressor filters that run for the
 *     stream, in chain order; one refused by q=0 is out;
 *   - the acceptable coding with the highest q wins among the candidates, "identity" and
 *     "*"; on equal q the first listed wins, unless a candidate with choose_first is among
 *     them (the last such candidate in the chain is preferred);
 *   - "*" means the first candidate in the chain (or the choose_first one);
 *   - nothing acceptable (every q is 0, no candidate left, an empty header): "not valid",
 *     and the response goes uncompressed.
 *
 * Codings are compared without regard to case (RFC 9110 section 8.4.1). */
#ifndef PT_ACCEPT_ENCODING_H
#define PT_ACCEPT_ENCODING_H

#include <stddef.h>

typedef enum pt_ae_result {
    PT_AE_NOT_VALID, /* nothing acceptable: identity */
    PT_AE_IDENTITY,  /* "identity" had the highest q */
    PT_AE_WILDCARD,  /* "*" had the highest q: *chosen is the first (or choose_first) one */
    PT_AE_CODING,    /* a candidate's own coding had the highest q: *chosen */
} pt_ae_result_t;

typedef struct pt_ae_candidate {
    const char *encoding; /* "gzip", "br", "zstd" */
    int choose_first;
} pt_ae_candidate_t;

/* Chooses among n candidates (at most 16) for the Accept-Encoding value `header`; *chosen
 * is the index of the chosen candidate for PT_AE_WILDCARD and PT_AE_CODING. */
pt_ae_result_t pt_accept_encoding_choose(const char *header, const pt_ae_candidate_t *c,
                                         unsigned n, unsigned *chosen);

#endif
