/* Config helpers for unit tests: JSON literals written with single quotes, and checking the
 * exact errors a config reader collected. Include after pt_test.h. */
#ifndef PT_TEST_JSON_H
#define PT_TEST_JSON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config_reader.h"

/* Parses JSON written with single quotes (tests read better that way); duplicate keys are
 * rejected as petrel's own loader rejects them. Bad test JSON aborts the test. */
static inline json_t *J(const char *s)
{
    char *t = strdup(s);
    for (char *p = t; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t je;
    json_t *v = json_loads(t, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (v == NULL) {
        fprintf(stderr, "bad test JSON (%s at %d): %s\n", je.text, je.column, t);
        abort();
    }
    free(t);
    return v;
}

/* 1 when r holds exactly the errors `want` (NULL-terminated), in order; otherwise prints both
 * lists and returns 0. */
static inline int errors_are(const pt_cfg_t *r, const char *const *want)
{
    size_t n = 0;
    while (want[n] != NULL)
        n++;
    int same = n == r->nerrors;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(r->errors[i], want[i]) == 0;
    if (!same) {
        fprintf(stderr, "  got %zu error(s):\n", r->nerrors);
        for (size_t i = 0; i < r->nerrors; i++)
            fprintf(stderr, "    %s\n", r->errors[i]);
        fprintf(stderr, "  want %zu:\n", n);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "    %s\n", want[i]);
    }
    return same;
}

#endif
