/* The admin endpoint: a small HTTP/1.1 server on the main thread (admin.address), the
 * operator's window into a running petrel. Read-only endpoints answer GET (and HEAD);
 * endpoints that change state answer POST only. See docs/admin.md for the list. */
#ifndef PT_ADMIN_H
#define PT_ADMIN_H

#include <stddef.h>

#include "proxy/address.h"
#include "proxy/buf.h"

typedef struct pt_server pt_server_t;
typedef struct pt_admin pt_admin_t;

pt_admin_t *pt_admin_start(pt_server_t *s, const pt_addr_t *addr, char *err, size_t errlen);
void pt_admin_stop(pt_admin_t *a);

/* Renders the stats in the three formats (exposed for unit tests). `filter` is a POSIX
 * extended regex or NULL; used_only skips stats that are zero. Returns 0, -EINVAL for a
 * filter that does not compile, or -ENOMEM. */
int pt_admin_render_stats_text(pt_buf_t *out, const char *filter, int used_only);
int pt_admin_render_stats_json(pt_buf_t *out, const char *filter, int used_only);
int pt_admin_render_prometheus(pt_buf_t *out, const char *filter, int used_only);

#endif
