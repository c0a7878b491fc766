/* Content hashes for change detection: two texts with equal hashes are taken to be equal
 * (a file's fingerprint, an endpoint assignment's digest). Not for anything an attacker
 * could choose to collide against: the inputs are the operator's own configuration. */
#ifndef PT_HASH_H
#define PT_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a of a NUL-terminated string: names in the hash tables keyed by name (clusters,
 * cluster states, views, route configurations). */
static inline uint64_t pt_hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h;
}

/* 64-bit hash of n bytes, 8 bytes a step (MurmurHash64A's construction). Different seeds
 * give independent hashes. */
uint64_t pt_hash64(const void *p, size_t n, uint64_t seed);

/* 128 bits: two independent 64-bit hashes, for digests compared across many values. */
typedef struct pt_digest {
    uint64_t a, b;
} pt_digest_t;

/* The digest of a JSON value, computed on the tree (no text built, no keys sorted): equal
 * values (objects compared without regard to member order) have equal digests. Numbers
 * are distinguished by type (1 and 1.0 differ), as json_equal does. */
struct json_t;
pt_digest_t pt_json_digest(const struct json_t *v);

/* The digest of n bytes. */
pt_digest_t pt_bytes_digest(const void *p, size_t n);

static inline int pt_digest_equal(pt_digest_t x, pt_digest_t y)
{
    return x.a == y.a && x.b == y.b;
}

#endif
