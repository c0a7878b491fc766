/* Fast per-thread pseudo-random numbers (xoshiro256**), seeded from the kernel. For load
 * balancing, jitter, sampling and request ids: not for secrets. */
#ifndef PT_RANDOM_H
#define PT_RANDOM_H

#include <stddef.h>
#include <stdint.h>

uint64_t pt_random_u64(void);
/* Uniform in [0, n) (n > 0), without modulo bias. */
uint64_t pt_random_below(uint64_t n);
/* Writes a random (version 4) UUID, 36 characters plus NUL. */
void pt_uuid4(char out[37]);

#endif
