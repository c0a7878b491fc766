/* Request path normalization, as the HTTP connection manager's normalize_path,
 * merge_slashes and path_with_escaped_slashes_action ask for. Pure functions on the path
 * (":path", query included); the query is never changed. Used before routing, so routes,
 * RBAC and the upstream all see the same path. */
#ifndef PT_PATH_H
#define PT_PATH_H

#include <stddef.h>

#include "proxy/arena.h"

/* RFC 3986 5.2.4 remove_dot_segments on the path part: "." and ".." segments (also spelled
 * %2e/%2E, which is how a client hides them from a prefix match) are resolved; ".." above
 * the root stays at the root. Returns the new path in the arena, or NULL when the path does
 * not start with "/" (the caller rejects the request). */
char *pt_path_normalize(pt_arena_t *a, const char *path);

/* Runs of "/" in the path part become one. Returns path itself when nothing changes. */
const char *pt_path_merge_slashes(pt_arena_t *a, const char *path);

/* Whether the path part holds an escaped slash or backslash (%2F, %5C, either case). */
int pt_path_has_escaped_slash(const char *path);
/* The path with %2F/%5C in the path part decoded to "/" and "\". */
char *pt_path_unescape_slashes(pt_arena_t *a, const char *path);

#endif
