/* The requests petrel sends to an xDS control plane over gRPC, in the protobuf wire format:
 * DiscoveryRequest (state of the world) and DeltaDiscoveryRequest
 * (envoy.service.discovery.v3). Both are written by the same schema that reads the
 * responses (proxy/proto_schema.h, proxy/proto_json.h): a request is built as its proto3
 * JSON tree and encoded, so what is sent is exactly what the schema says, field by field.
 *
 * A request that rejects a response (a NACK) carries error_detail, a google.rpc.Status with
 * code INVALID_ARGUMENT and the errors as message, as Envoy sends it. */
#ifndef PT_DISCOVERY_REQUEST_H
#define PT_DISCOVERY_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#include "proxy/protobuf.h"

#define PT_GRPC_INVALID_ARGUMENT 3 /* google.rpc.Code */

typedef struct pt_discovery_request {
    /* envoy.config.core.v3.Node in its JSON form (the bootstrap's `node`), or NULL: a
     * stream's first request carries it, later ones need not. Borrowed. */
    json_t *node;
    const char *type_url;
    const char *version_info;   /* of the last response accepted, or NULL */
    const char *response_nonce; /* of the response this answers, or NULL */
    const char *const *resource_names;
    size_t nresource_names;
    const char *error_message; /* non-NULL: a NACK, with this message */
} pt_discovery_request_t;

typedef struct pt_delta_discovery_request {
    json_t *node; /* as above */
    const char *type_url;
    const char *response_nonce;
    const char *const *subscribe;
    size_t nsubscribe;
    const char *const *unsubscribe;
    size_t nunsubscribe;
    /* The resources petrel holds when a stream starts again: names[i] at versions[i]. */
    const char *const *initial_names;
    const char *const *initial_versions;
    size_t ninitial;
    const char *error_message;
} pt_delta_discovery_request_t;

/* Appends the request's encoding to w. 0, or -1 with "<field path>: <why>" in err (a node
 * with a field the Node message does not have, a name that is not UTF-8, ...). */
int pt_discovery_request_encode(const pt_discovery_request_t *req, pt_pb_writer_t *w, char *err,
                                size_t errlen);
/* The request as proto3 JSON text (REST-JSON xDS: its POST body; field names as in the
 * .proto), checked by the schema as the encoding is. Caller frees; NULL with why in err. */
char *pt_discovery_request_json(const pt_discovery_request_t *req, char *err, size_t errlen);
int pt_delta_discovery_request_encode(const pt_delta_discovery_request_t *req, pt_pb_writer_t *w,
                                      char *err, size_t errlen);

#endif
