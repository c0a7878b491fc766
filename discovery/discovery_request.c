/* DiscoveryRequest and DeltaDiscoveryRequest, encoded by the schema (see
 * discovery_request.h). */
#include "discovery/discovery_request.h"

#include <stdio.h>

#include "proxy/proto_json.h"

/* The tree being built: the first thing that went wrong, if any. */
typedef struct build {
    int failed;
    char why[256];
} build_t;

/* A string as a JSON value; NULL when it is not UTF-8 (jansson's strings must be). */
static json_t *string(build_t *b, const char *s, const char *key, size_t i)
{
    json_t *v = json_string(s);
    if (v == NULL) {
        if (b->failed++ == 0) {
            if (i == (size_t)-1)
                snprintf(b->why, sizeof(b->why), "%s: is not valid UTF-8", key);
            else
                snprintf(b->why, sizeof(b->why), "%s[%zu]: is not valid UTF-8", key, i);
        }
    }
    return v;
}

static void set(build_t *b, json_t *obj, const char *key, json_t *v)
{
    if (v == NULL)
        b->failed++;
    else if (json_object_set_new(obj, key, v) < 0 && b->failed++ == 0)
        snprintf(b->why, sizeof(b->why), "%s: cannot be set (a key that is not UTF-8?)", key);
}

static void set_string(build_t *b, json_t *obj, const char *key, const char *s)
{
    if (s != NULL && s[0] != '\0')
        set(b, obj, key, string(b, s, key, (size_t)-1));
}

static void set_names(build_t *b, json_t *obj, const char *key, const char *const *names, size_t n)
{
    if (n == 0)
        return;
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        json_t *v = string(b, names[i], key, i);
        if (v == NULL || json_array_append_new(arr, v) < 0)
            b->failed++;
    }
    set(b, obj, key, arr);
}

static void set_error(build_t *b, json_t *obj, const char *key, const char *message)
{
    if (message == NULL)
        return;
    json_t *status = json_object();
    if (status != NULL) {
        set(b, status, "code", json_integer(PT_GRPC_INVALID_ARGUMENT));
        set_string(b, status, "message", message);
    }
    set(b, obj, key, status);
}

/* Encodes tree (consumed) as the message named so. */
static int encode(const char *message, json_t *tree, const build_t *b, pt_pb_writer_t *w, char *err,
                  size_t errlen)
{
    int rc = -1;
    if (b->failed)
        snprintf(err, errlen, "%s", b->why[0] ? b->why : "out of memory");
    else if (tree == NULL)
        snprintf(err, errlen, "out of memory");
    else
        rc = pt_pb_from_json(pt_pb_message_find(message), tree, w, err, errlen);
    json_decref(tree);
    return rc;
}

static json_t *request_tree(const pt_discovery_request_t *req, build_t *b)
{
    json_t *t = json_object();
    if (t != NULL) {
        set_string(b, t, "version_info", req->version_info);
        if (req->node != NULL)
            set(b, t, "node", json_incref(req->node));
        set_names(b, t, "resource_names", req->resource_names, req->nresource_names);
        set_string(b, t, "type_url", req->type_url);
        set_string(b, t, "response_nonce", req->response_nonce);
        set_error(b, t, "error_detail", req->error_message);
    }
    return t;
}

int pt_discovery_request_encode(const pt_discovery_request_t *req, pt_pb_writer_t *w, char *err,
                                size_t errlen)
{
    build_t b = {0};
    json_t *t = request_tree(req, &b);
    return encode("envoy.service.discovery.v3.DiscoveryRequest", t, &b, w, err, errlen);
}

char *pt_discovery_request_json(const pt_discovery_request_t *req, char *err, size_t errlen)
{
    build_t b = {0};
    json_t *t = request_tree(req, &b);
    char *text = NULL;
    if (b.failed) {
        snprintf(err, errlen, "%s", b.why[0] ? b.why : "out of memory");
    } else if (t != NULL) {
        /* Checked against the message as the wire form is: a field the schema does not
         * have (a node's) is refused the same way. */
        pt_pb_writer_t w;
        pt_pb_writer_init(&w);
        if (pt_pb_from_json(pt_pb_message_find("envoy.service.discovery.v3.DiscoveryRequest"),
                            t, &w, err, errlen) == 0) {
            text = json_dumps(t, JSON_COMPACT);
            if (text == NULL)
                snprintf(err, errlen, "out of memory");
        }
        pt_pb_writer_dispose(&w);
    } else {
        snprintf(err, errlen, "out of memory");
    }
    json_decref(t);
    return text;
}

int pt_delta_discovery_request_encode(const pt_delta_discovery_request_t *req, pt_pb_writer_t *w,
                                      char *err, size_t errlen)
{
    build_t b = {0};
    json_t *t = json_object();
    if (t != NULL) {
        if (req->node != NULL)
            set(&b, t, "node", json_incref(req->node));
        set_string(&b, t, "type_url", req->type_url);
        set_names(&b, t, "resource_names_subscribe", req->subscribe, req->nsubscribe);
        set_names(&b, t, "resource_names_unsubscribe", req->unsubscribe, req->nunsubscribe);
        if (req->ninitial > 0) {
            json_t *versions = json_object();
            for (size_t i = 0; versions != NULL && i < req->ninitial; i++)
                set(&b, versions, req->initial_names[i],
                    string(&b, req->initial_versions[i], "initial_resource_versions", i));
            set(&b, t, "initial_resource_versions", versions);
        }
        set_string(&b, t, "response_nonce", req->response_nonce);
        set_error(&b, t, "error_detail", req->error_message);
    }
    return encode("envoy.service.discovery.v3.DeltaDiscoveryRequest", t, &b, w, err, errlen);
}
