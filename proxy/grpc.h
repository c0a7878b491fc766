/* gRPC as the HTTP layer sees it: which requests are gRPC, and the headers of a gRPC status.
 *
 * A gRPC response carries its status in grpc-status / grpc-message, in trailers or, when
 * there is no message to send, in the response head alone ("trailers-only"). Every answer
 * petrel makes itself to a gRPC request (no route, no healthy upstream, a timeout, a denial,
 * a rate limit) is such a trailers-only response, as Envoy's local replies are: a gRPC
 * client reads the status from there, never from the HTTP status. */
#ifndef PT_GRPC_H
#define PT_GRPC_H

#include "proxy/http.h"

/* 1 when the request is gRPC: content-type application/grpc, application/grpc+<x> or
 * application/grpc;<params>. */
int pt_grpc_is_request(const pt_http_headers_t *h);
/* The gRPC status for an HTTP status (Envoy's Grpc::Utility::httpToGrpcStatus, from gRPC's
 * http-grpc-status-mapping). */
int pt_grpc_status_from_http(int http_status);
/* Adds content-type application/grpc, grpc-status and (when message is not empty) its
 * percent-encoded grpc-message to h. 0, or -ENOMEM. */
int pt_grpc_add_status(pt_http_headers_t *h, int grpc_status, const char *message);

#endif
