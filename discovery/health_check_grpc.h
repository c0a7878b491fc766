/* One gRPC health check probe (grpc.health.v1.Health/Check, as Envoy's grpc_health_check):
 * an HTTP/2 client codec on a connected connection, one Check call at a time, judged as
 * Envoy judges it: status 200, content-type application/grpc, one HealthCheckResponse whose
 * status is SERVING, and grpc-status 0. The health checker (health_check.c) owns the probe,
 * its connection and its timers; this file knows only the protocol. */
#ifndef PT_HEALTH_CHECK_GRPC_H
#define PT_HEALTH_CHECK_GRPC_H

#include "proxy/conn.h"

typedef struct pt_hc_grpc pt_hc_grpc_t;
struct pt_cluster_http2;

/* A Check's outcome: PT_HC_GRPC_SERVING, PT_HC_GRPC_FAILED (the server answered: not
 * serving, a gRPC error, a malformed answer) or PT_HC_GRPC_NETWORK (reset, GOAWAY, the
 * connection gone); why says what, for the log. The callback may free the probe. */
enum { PT_HC_GRPC_SERVING = 1, PT_HC_GRPC_FAILED = 0, PT_HC_GRPC_NETWORK = -1 };
typedef void (*pt_hc_grpc_done_fn)(void *owner, int outcome, const char *why);

/* Takes over conn (connected; the probe becomes its handler). opts: the cluster's HTTP/2
 * options, or NULL for the defaults. NULL when out of memory (conn untouched). */
pt_hc_grpc_t *pt_hc_grpc_new(pt_conn_t *conn, const struct pt_cluster_http2 *opts,
                             pt_hc_grpc_done_fn done, void *owner);
/* Starts a Check of service (may be "") with :authority authority and the initial
 * metadata applied to its headers. 0, or -1 when the connection cannot take it. */
struct pt_header_mutations;
int pt_hc_grpc_check(pt_hc_grpc_t *g, const char *service, const char *authority,
                     const struct pt_header_mutations *metadata);
/* Whether another Check may go on this connection. */
int pt_hc_grpc_reusable(const pt_hc_grpc_t *g);
/* Abandons any Check in flight (no callback) and releases the codec; the caller closes
 * the connection. */
void pt_hc_grpc_free(pt_hc_grpc_t *g);

/* The HealthCheckResponse status in a gRPC message body (5-byte frame header and the
 * message): 0-3 as the enum (SERVING is 1), -1 when the body is not exactly one
 * uncompressed message that holds a well-formed HealthCheckResponse. For tests. */
int pt_hc_grpc_parse_response(const unsigned char *body, size_t len);
/* The framed HealthCheckRequest for service into out (room for 5 + 2 + 10 + strlen). Its
 * length. For tests. */
size_t pt_hc_grpc_encode_request(const char *service, unsigned char *out);

#endif
