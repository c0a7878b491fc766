/* Route index of a virtual host: Envoy's first-match result without scanning every route.
 *
 * Envoy (and pt_route_match's definition) tries a virtual host's routes in order and takes
 * the first whose match accepts the request. With thousands of routes in one virtual host
 * (a mesh's RDS), a request whose route is last pays a scan of all of them. The index,
 * built once when the route configuration is parsed, splits the routes in two:
 *   - "simple" routes: a `path` (exact) or a `prefix` match, either case, and no other
 *     condition (no headers, no query_parameters). Their paths are hashed, keyed by kind
 *     (exact or prefix), case (case-insensitive keys hashed lowercase) and bytes, each key
 *     mapping to the lowest route index that has it. A request's path is hashed once, byte by
 *     byte, and probed at every length some indexed prefix has (and at the length of its
 *     path without query string for exact paths): the lowest index found is its best simple
 *     candidate S.
 *   - every other route ("complex": regexes, path_separated_prefix, connect_matcher, any
 *     route with header or query parameter matchers, paths too long to index) stays in an
 *     ordered list. Only those before S need to be tried, in order, with the full matcher.
 * Cost per request: the path's bytes up to the longest indexed path, one probe per distinct
 * indexed length, and the complex routes ahead of the candidate; not the number of routes.
 * Memory: 8 bytes per hash slot (at most 2/3 full), 4 bytes per complex route, one byte per
 * indexed length up to the longest. */
#ifndef PT_ROUTE_INDEX_H
#define PT_ROUTE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"

struct pt_route;
typedef struct pt_route_index pt_route_index_t;

/* Virtual hosts with fewer routes are scanned: the scan is cheaper than hashing the path. */
#define PT_ROUTE_INDEX_MIN_ROUTES 16
/* Longer exact paths and prefixes are left to the ordered list (they are rare, and each
 * indexed length costs a byte of the length table). */
#define PT_ROUTE_INDEX_MAX_PATH 1024
/* No simple candidate. */
#define PT_ROUTE_INDEX_NONE UINT32_MAX

/* Builds the index of routes[0..n) in a. 0 with *out set, or left NULL when the routes are
 * too few or none is simple (scan them); -1 out of memory. */
int pt_route_index_build(const struct pt_route *routes, unsigned n, pt_arena_t *a,
                         const pt_route_index_t **out);

/* Whether a route's match is one the index answers for by path alone. */
int pt_route_index_is_simple(const struct pt_route *rt);

/* The lowest index of a simple route whose path accepts path[0..plen) (pend: the length of
 * the path without query string and fragment), or PT_ROUTE_INDEX_NONE. routes are the ones
 * the index was built from. */
uint32_t pt_route_index_candidate(const pt_route_index_t *ix, const struct pt_route *routes,
                                  const char *path, size_t plen, size_t pend);

/* The complex routes' indexes, ascending. */
const uint32_t *pt_route_index_complex(const pt_route_index_t *ix, unsigned *n);

/* Bytes the index holds (its struct included). 0 for NULL. */
size_t pt_route_index_bytes(const pt_route_index_t *ix);

#endif
