/* A DiscoveryResponse (envoy.service.discovery.v3.DiscoveryResponse) as proto3 JSON: the
 * envelope every state-of-the-world xDS update comes in, whatever its transport (a watched
 * file today). This module checks the envelope and hands out the resources; what a resource
 * means is its consumer's business (clusters, listeners, secrets, ...).
 *
 *   version_info: "7"                       optional string
 *   type_url: type.googleapis.com/...       optional; when present, the expected type
 *   nonce, canary, control_plane            accepted (what a control plane puts there)
 *   resources:                              a list, possibly empty
 *   - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
 *     name: ...                             the resource itself (an Any)
 *   - "@type": type.googleapis.com/envoy.service.discovery.v3.Resource
 *     name: ...                             or wrapped, as Envoy accepts it: the wrapper's
 *     version: ...                          name and version, the resource in `resource`
 *     resource: {"@type": ..., ...}
 *
 * Checks, each reported with the field's path: the top level is an object with no unknown
 * field; resources is a list of objects; each has @type, the expected type or a Resource
 * wrapping the expected type; a wrapper has `resource` and its name, when both say one,
 * agrees with the resource's; no two resources share a name. The resources' own fields are
 * not looked at here. */
#ifndef PT_DISCOVERY_RESPONSE_H
#define PT_DISCOVERY_RESPONSE_H

#include <jansson.h>
#include <stddef.h>

#include "proxy/config_reader.h"

#define PT_RESOURCE_WRAPPER_TYPE "type.googleapis.com/envoy.service.discovery.v3.Resource"

typedef struct pt_discovery_resource {
    json_t *json;        /* the resource: its "@type" and the message's fields (borrowed) */
    const char *name;    /* the wrapper's name, else the resource's own (cluster_name for a
                          * ClusterLoadAssignment, name otherwise); NULL when neither says */
    const char *version; /* the wrapper's version, or NULL */
    char path[48];       /* where it is: "resources[3]" or "resources[3].resource" */
    size_t index;        /* in resources */
    /* Read resource by resource: the element's text (in the response's), else NULL. */
    const char *text;
    size_t text_len;
    /* text is the resource's canonical JSON (pt_json_canonical of json), not a file's. */
    int canonical;
} pt_discovery_resource_t;

typedef struct pt_discovery_stream pt_discovery_stream_t;
typedef struct pt_discovery_lazy pt_discovery_lazy_t;

typedef struct pt_discovery_response {
    json_t *root;             /* a reference held until dispose */
    const char *version_info; /* "" when absent */
    pt_discovery_resource_t *resources;
    size_t nresources;
    /* Read resource by resource (pt_discovery_response_parse_text): resources is then
     * empty, and pt_discovery_response_next hands them out. */
    pt_discovery_stream_t *stream;
    /* Decoded resource by resource from protobuf (pt_discovery_response_parse_protobuf_lazy,
     * pt_discovery_response_parse_delta): resources is empty until
     * pt_discovery_response_materialize, and pt_discovery_response_next hands them out. */
    pt_discovery_lazy_t *lazy;
} pt_discovery_response_t;

/* Checks root against type_url (a full type URL) and fills *out (which then holds its own
 * reference to root). 0, or -1 with every error in err, "; "-separated, each
 * "<field path>: <why>". *out needs pt_discovery_response_dispose either way. */
int pt_discovery_response_parse(json_t *root, const char *type_url, pt_discovery_response_t *out,
                                char *err, size_t errlen);
void pt_discovery_response_dispose(pt_discovery_response_t *resp);

/* The same from a DiscoveryResponse in the protobuf wire format (what xDS over gRPC sends):
 * decoded by the schema into the tree its JSON form gives (proxy/proto_json.h), so each
 * resource is read by the same parser and means the same, then checked as above. Errors
 * name the field's path either way: the decoder's ("resources[2].load_assignment: unknown
 * field number 99 of ...") or the envelope's. *out needs pt_discovery_response_dispose. */
int pt_discovery_response_parse_protobuf(const void *buf, size_t len, const char *type_url,
                                         pt_discovery_response_t *out, char *err,
                                         size_t errlen);

/* The same, resource by resource: the envelope (every field but resources) is decoded and
 * checked now, each resource's Any only when pt_discovery_response_next reaches it (its tree
 * freed at the next call), so a response of 10,000 ClusterLoadAssignments never becomes one
 * tree (0.64 MB of protobuf made ~26 MB of tree). buf must outlive *out. Errors as above:
 * the envelope's now (-1), a resource's from pt_discovery_response_next, with the same
 * paths ("resources[2].load_assignment: unknown field number 99 of ...").
 *
 * A consumer that reads such a response with pt_discovery_response_next reads it to its
 * end and refuses it when any element is invalid, wanted or not (the whole response is
 * NACKed then, nothing of it applied). Elements no reading reached are checked by
 * pt_discovery_response_check_rest; pt_discovery_response_materialize decodes them all
 * into resources, for a consumer that wants them at once. */
int pt_discovery_response_parse_protobuf_lazy(const void *buf, size_t len, const char *type_url,
                                              pt_discovery_response_t *out, char *err,
                                              size_t errlen);
/* A DeltaDiscoveryResponse read the same way: root is its envelope (system_version_info,
 * removed_resources, ...), version_info its system_version_info; its elements are the
 * Resources of `resources`, each handed out as the Any it holds (path
 * "resources[3].resource"; a Resource without one is checked and skipped). keep_text: each
 * resource's canonical JSON text is kept once decoded (res->text, and
 * pt_discovery_response_element for the resources a delta stream keeps as text). */
int pt_discovery_response_parse_delta(const void *buf, size_t len, const char *type_url,
                                      int keep_text, pt_discovery_response_t *out, char *err,
                                      size_t errlen);
/* Appends to a delta response read lazily one resource in force it does not carry: its name
 * and canonical text (borrowed; must outlive resp), handed out after the response's own, so
 * that the response reads as the whole set the update makes. 0, or -1 out of memory. */
int pt_discovery_response_add_text(pt_discovery_response_t *resp, const char *name,
                                   const char *text, size_t len);
/* A lazy response's elements (0 for others), and what is known of element i without
 * decoding it: its name as the wire says it (NULL when it says none), and for a delta
 * Resource its version; once decoded, whether it carries a resource (delta) and, with
 * keep_text, its canonical text (NULL before). */
typedef struct pt_discovery_element {
    const char *name;
    const char *version;
    int has_body;
    const char *text;
    size_t text_len;
} pt_discovery_element_t;
size_t pt_discovery_response_count(const pt_discovery_response_t *resp);
void pt_discovery_response_element(const pt_discovery_response_t *resp, size_t i,
                                   pt_discovery_element_t *out);
/* Decodes and checks the elements of a lazy response that no reading reached: 0, or -1
 * with their errors in err. */
int pt_discovery_response_check_rest(const pt_discovery_response_t *resp, char *err,
                                     size_t errlen);
/* Decodes every element of a lazy response into resources (as pt_discovery_response_parse
 * would have them); next then hands those out. 0, or -1 with every error in err. */
int pt_discovery_response_materialize(pt_discovery_response_t *resp, char *err, size_t errlen);

/* The same from JSON text, resource by resource: the envelope is checked now (as above, for
 * all but the resources) and each resource is parsed from its own part of the text when
 * pt_discovery_response_next reaches it, its tree freed at the next call. A 13 MB file of
 * 10,000 ClusterLoadAssignments then never becomes one tree of ~150 MB: reading it costs a
 * third (the allocator reuses one resource's memory for the next). text must outlive *out.
 * 0, or -2 when the text is not a plain JSON object whose last member is the "resources"
 * list, or its envelope is invalid: then parse it whole, which reports what is wrong.
 *
 * The list is taken to end at the text's last ']'; should a member follow it after all,
 * reading the resources finds out (pt_discovery_response_read_whole), and the response is
 * then to be read whole, whatever its consumer made of it so far. */
int pt_discovery_response_parse_text(const char *text, size_t len, const char *type_url,
                                     pt_discovery_response_t *out, char *err, size_t errlen);
/* The next resource, whichever way the response was read: 1 (*out valid until the next
 * call), 0 at the end, -1 with the resource's errors in err (a stream checks each element
 * as pt_discovery_response_parse does: its @type, a wrapper, a duplicate name); the update
 * is then invalid. *cursor starts at 0. */
int pt_discovery_response_next(const pt_discovery_response_t *resp, size_t *cursor,
                               pt_discovery_resource_t *out, char *err, size_t errlen);

/* What a consumer knows of the resources it accepted before, for reading an update that
 * mostly repeats them. */
typedef struct pt_discovery_known {
    /* Whether the element at index, these len bytes, is the same bytes as one the consumer
     * accepted before (1; it notes which), or not (0). */
    int (*known)(void *data, size_t index, const char *text, size_t len);
    /* Optional: the length the element at index had when the consumer last read it (its
     * guess of which that was), or 0. A guess confirmed by known() spares scanning the
     * element: an update of 10,000 assignments of which one changed then costs a digest of
     * the text and one parse, not a scan of every bracket and quote. */
    size_t (*expected_len)(void *data, size_t index);
    /* Optional: for an element whose name and canonical text are known without parsing it
     * (a resource a delta stream keeps in force): whether it is the same as one the
     * consumer accepted before (1; it notes which). */
    int (*known_text)(void *data, const char *name, const char *text, size_t len);
    void *data;
} pt_discovery_known_t;

/* As pt_discovery_response_next, for a consumer that knows some resources by their text:
 * read resource by resource, an element k knows is neither parsed nor checked again; the
 * call then returns 2 with *out not filled. Equal bytes are an equal resource. A response
 * read whole never asks. */
int pt_discovery_response_next_known(const pt_discovery_response_t *resp, size_t *cursor,
                                     pt_discovery_resource_t *out,
                                     const pt_discovery_known_t *k, char *err, size_t errlen);
/* Whether reading resource by resource found the text not to be JSON (a resource that
 * does not parse, a malformed list): what reading it whole would have failed on. */
int pt_discovery_response_malformed(const pt_discovery_response_t *resp);
/* Whether reading resource by resource found a member after the list (see
 * pt_discovery_response_parse_text): the response is to be read whole and delivered again;
 * what was made of this reading is void. */
int pt_discovery_response_read_whole(const pt_discovery_response_t *resp);

/* Starts reading a resource's fields: a reader whose paths begin at res->path, with @type
 * already consumed. The caller reads the message's fields, then pt_cfg_finish and
 * pt_cfg_dispose. */
void pt_discovery_resource_reader(const pt_discovery_resource_t *res, pt_cfg_t *r);

#endif
