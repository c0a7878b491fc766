/* One HTTP request from the main thread to a host of a cluster, and its whole response: the
 * transport of REST-JSON xDS (api_type REST), a DiscoveryRequest POSTed as JSON to
 * /v3/discovery:<type>.
 *
 * pt_rest_fetch_start connects to one of the cluster's hosts (round robin over fetches) with
 * the cluster's transport (plain or TLS) and protocol (HTTP/2 when the cluster says so, else
 * HTTP/1.1), sends the request with its body, and reads the response body whole (at most
 * PT_DOC_MAX_BYTES). The outcome is reported once, from a loop turn of its own: the HTTP
 * status and body, or status 0 with why (no connection, a reset, the timeout). The fetch is
 * then to be freed by its owner. Main thread. */
#ifndef PT_REST_FETCH_H
#define PT_REST_FETCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct pt_rest_fetch pt_rest_fetch_t;
struct pt_cluster;
struct pt_worker;

/* status: the HTTP status, or 0 when there is none (why says what happened); body: the
 * response body (NUL-terminated, len bytes). pt_rest_fetch_free is safe from here. */
typedef void (*pt_rest_fetch_cb)(void *data, int status, const char *body, size_t len,
                                 const char *why);

/* NULL with why in err when no connection can be started. timeout_ms: for the whole exchange
 * (0: none). */
pt_rest_fetch_t *pt_rest_fetch_start(const struct pt_cluster *cluster, struct pt_worker *w,
                                     const char *method, const char *path, const char *authority,
                                     const char *content_type, const void *body, size_t len,
                                     uint64_t timeout_ms, pt_rest_fetch_cb cb, void *data,
                                     char *err, size_t errlen);
/* The same, with flags: PT_REST_FETCH_GRPC makes it a unary gRPC call (HTTP/2 whatever the
 * cluster says, `te: trailers`; the body is the framed message): the call's grpc-status is
 * pt_rest_fetch_grpc_status's, from the callback on (-1 when none came). */
#define PT_REST_FETCH_GRPC 1u
pt_rest_fetch_t *pt_rest_fetch_start_ex(const struct pt_cluster *cluster, struct pt_worker *w,
                                        const char *method, const char *path,
                                        const char *authority, const char *content_type,
                                        const void *body, size_t len, uint64_t timeout_ms,
                                        unsigned flags, pt_rest_fetch_cb cb, void *data,
                                        char *err, size_t errlen);
/* The same with the body in a buffer, whose content is taken without a copy (the buffer is
 * left empty, whatever the outcome). */
struct pt_buf;
pt_rest_fetch_t *pt_rest_fetch_start_buf(const struct pt_cluster *cluster, struct pt_worker *w,
                                         const char *method, const char *path,
                                         const char *authority, const char *content_type,
                                         struct pt_buf *body, uint64_t timeout_ms,
                                         unsigned flags, pt_rest_fetch_cb cb, void *data,
                                         char *err, size_t errlen);
int pt_rest_fetch_grpc_status(const pt_rest_fetch_t *f);
/* Abandons the fetch (no callback) and frees it. NULL is ignored. */
void pt_rest_fetch_free(pt_rest_fetch_t *f);

#endif
