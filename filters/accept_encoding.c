/* Accept-Encoding negotiation (see accept_encoding.h for the rules). Pure: no allocation,
 * so the filter runs it per response and the unit tests call it directly. */
#include "filters/accept_encoding.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_CANDIDATES 16

typedef struct span {
    const char *p;
    size_t n;
} span_t;

static span_t trim(const char *p, size_t n)
{
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return (span_t){p, n};
}

static int span_is(span_t s, const char *word)
{
    return strlen(word) == s.n && strncasecmp(s.p, word, s.n) == 0;
}

/* One list element: its coding and q (1 when absent). 0 when the element is dropped (a q
 * that is not a number, or an empty coding). */
static int parse_element(const char *p, size_t n, span_t *coding, double *q)
{
    const char *semi = memchr(p, ';', n);
    *coding = trim(p, semi ? (size_t)(semi - p) : n);
    *q = 1.0;
    if (coding->n == 0)
        return 0;
    if (semi == NULL)
        return 1;
    const char *params = semi + 1;
    size_t plen = n - (size_t)(params - p);
    const char *eq = memchr(params, '=', plen);
    if (eq == NULL || !span_is(trim(params, (size_t)(eq - params)), "q"))
        return 1; /* a parameter other than q leaves q at 1, as Envoy does */
    span_t v = trim(eq + 1, plen - (size_t)(eq + 1 - params));
    char num[32];
    if (v.n == 0 || v.n >= sizeof(num))
        return 0;
    memcpy(num, v.p, v.n);
    num[v.n] = '\0';
    char *end;
    double d = strtod(num, &end);
    if (*end != '\0' || !isfinite(d))
        return 0;
    *q = d;
    return 1;
}

/* Runs body for each element of the list (body must not `continue`: the loop advances
 * after it). */
#define FOR_EACH_ELEMENT(header, coding, q, body)                                                  \
    do {                                                                                           \
        const char *p_ = (header);                                                                 \
        while (*p_ != '\0') {                                                                      \
            const char *c_ = strchr(p_, ',');                                                      \
            size_t n_ = c_ ? (size_t)(c_ - p_) : strlen(p_);                                       \
            span_t coding;                                                                         \
            double q;                                                                              \
            if (parse_element(p_, n_, &coding, &q)) {                                              \
                body                                                                               \
            }                                                                                      \
            p_ += n_;                                                                              \
            if (*p_ == ',')                                                                        \
                p_++;                                                                              \
        }                                                                                          \
    } while (0)

pt_ae_result_t pt_accept_encoding_choose(const char *header, const pt_ae_candidate_t *c,
                                         unsigned n, unsigned *chosen)
{
    if (header == NULL || n > MAX_CANDIDATES)
        return PT_AE_NOT_VALID;
    /* First pass: the candidates a q=0 refuses. */
    int refused[MAX_CANDIDATES] = {0};
    int elements = 0;
    FOR_EACH_ELEMENT(header, coding, q, {
        elements++;
        if (q == 0.0)
            for (unsigned i = 0; i < n; i++)
                if (span_is(coding, c[i].encoding))
                    refused[i] = 1;
    });
    int preferred = -1, first = -1, left = 0;
    for (unsigned i = 0; i < n; i++) {
        if (refused[i])
            continue;
        left++;
        if (first < 0)
            first = (int)i;
        if (c[i].choose_first)
            preferred = (int)i;
    }
    if (elements == 0 || left == 0)
        return PT_AE_NOT_VALID;
    if (preferred < 0)
        preferred = first;
    /* Second pass: the acceptable element with the highest q. */
    double best_q = 0.0;
    pt_ae_result_t best = PT_AE_NOT_VALID;
    int best_index = -1;
    FOR_EACH_ELEMENT(header, coding, q, {
        pt_ae_result_t kind = PT_AE_NOT_VALID;
        int index = -1;
        if (span_is(coding, "identity")) {
            kind = PT_AE_IDENTITY;
        } else if (span_is(coding, "*")) {
            kind = PT_AE_WILDCARD;
            index = preferred;
        } else {
            for (unsigned i = 0; i < n; i++)
                if (!refused[i] && span_is(coding, c[i].encoding)) {
                    kind = PT_AE_CODING;
                    index = (int)i;
                    break;
                }
        }
        /* On a tie, the choose_first candidate beats what was listed before it. */
        int tie_won = q == best_q && index >= 0 && c[index].choose_first &&
                      (best_index < 0 || !c[best_index].choose_first);
        if (kind != PT_AE_NOT_VALID && (q > best_q || (q > 0.0 && tie_won))) {
            best_q = q;
            best = kind;
            best_index = index;
        }
    });
    if (best == PT_AE_WILDCARD || best == PT_AE_CODING)
        *chosen = (unsigned)best_index;
    return best;
}
