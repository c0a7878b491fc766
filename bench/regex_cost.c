/* regex_cost: instructions per regex match, RE2 (petrel's engine, proxy/regex.h) against the C
 * library's POSIX extended regexes (what petrel used before: the pattern anchored as
 * ^(...)$, REG_NOSUB), on patterns and inputs of the kind routes and header matchers use.
 * Run under callgrind for repeatable counts (bench/README.md, "Regex match cost"):
 *
 *   cc -O2 -I. bench/regex_cost.c build/libpetrel_core.a -lre2 -lstdc++ -lm -o /tmp/regex_cost
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.re2 /tmp/regex_cost re2 100000
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.posix /tmp/regex_cost posix 100000
 *
 * Each run compiles every pattern once and then matches every input N times; the difference
 * between two runs with different N, divided by the matches added, is the cost per match. */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/regex.h"

static const char *const patterns[] = {
    "/api/v[0-9]+/users/[0-9]+", /* a route's safe_regex */
    "v[0-9]+",                   /* a header's safe_regex_match */
    "[a-z0-9-]+\\.example\\.com", /* a host-like value */
};
static const char *const inputs[] = {"/api/v2/users/123456", "v12", "svc-1.example.com",
                                     "/static/css/site.css"};

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "re2") != 0 && strcmp(argv[1], "posix") != 0)) {
        fprintf(stderr, "usage: regex_cost re2|posix N\n");
        return 2;
    }
    int re2 = strcmp(argv[1], "re2") == 0;
    long n = atol(argv[2]);
    enum { NP = sizeof(patterns) / sizeof(patterns[0]), NI = sizeof(inputs) / sizeof(inputs[0]) };
    pt_arena_t arena = {0};
    const pt_regex_t *r[NP];
    regex_t p[NP];
    for (int i = 0; i < NP; i++) {
        char err[256], anchored[256];
        if (re2) {
            if ((r[i] = pt_regex_compile(&arena, patterns[i], 0, err, sizeof(err))) == NULL) {
                fprintf(stderr, "%s: %s\n", patterns[i], err);
                return 1;
            }
        } else {
            snprintf(anchored, sizeof(anchored), "^(%s)$", patterns[i]);
            if (regcomp(&p[i], anchored, REG_EXTENDED | REG_NOSUB) != 0)
                return 1;
        }
    }
    long matched = 0;
    for (long k = 0; k < n; k++)
        for (int i = 0; i < NP; i++)
            for (int j = 0; j < NI; j++)
                matched += re2 ? pt_regex_full_match(r[i], inputs[j], strlen(inputs[j]))
                               : regexec(&p[i], inputs[j], 0, NULL, 0) == 0;
    printf("%s: %ld matches of %ld\n", argv[1], matched, n * NP * NI);
    for (int i = 0; !re2 && i < NP; i++)
        regfree(&p[i]);
    pt_arena_dispose(&arena);
    return 0;
}
