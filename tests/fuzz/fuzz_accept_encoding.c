/* Fuzz target: Accept-Encoding negotiation (filters/accept_encoding.c) on untrusted header
 * values. The first byte picks the candidates (how many of gzip, br, zstd, and which has
 * choose_first); the rest is the header. A chosen candidate must be one of them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/accept_encoding.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    static const char *const codings[] = {"gzip", "br", "zstd"};
    pt_ae_candidate_t c[3];
    unsigned n = 1 + data[0] % 3;
    for (unsigned i = 0; i < n; i++)
        c[i] = (pt_ae_candidate_t){codings[i], (data[0] >> (2 + i)) & 1};
    char *header = malloc(size);
    if (header == NULL)
        return 0;
    memcpy(header, data + 1, size - 1);
    header[size - 1] = '\0';
    unsigned chosen = 1000;
    pt_ae_result_t r = pt_accept_encoding_choose(header, c, n, &chosen);
    if ((r == PT_AE_CODING || r == PT_AE_WILDCARD) && chosen >= n)
        abort();
    free(header);
    return 0;
}
