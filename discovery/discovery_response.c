#include "discovery/discovery_response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLA_TYPE "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

/* The resource's own name, where its type keeps it (Envoy's resource decoders know the
 * same): a ClusterLoadAssignment is named by cluster_name, everything else by name. */
static const char *own_name(json_t *res, const char *type_url)
{
    int cla = strcmp(type_url, CLA_TYPE) == 0;
    json_t *v = json_object_get(res, cla ? "cluster_name" : "name");
    if (v == NULL && cla)
        v = json_object_get(res, "clusterName");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void join_errors(const pt_cfg_t *r, char *err, size_t errlen)
{
    size_t used = 0;
    err[0] = '\0';
    for (size_t i = 0; i < r->nerrors && used + 1 < errlen; i++) {
        int n = snprintf(err + used, errlen - used, "%s%s", i ? "; " : "", r->errors[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* One element of resources, the reader inside it. Fills *res when it holds a resource of
 * the expected type. */
static int read_element(pt_cfg_t *r, json_t *node, size_t i, const char *type_url,
                        pt_discovery_resource_t *res)
{
    const char *type;
    int trc = pt_cfg_string(r, "@type", &type, NULL);
    if (trc == 0)
        pt_cfg_error(r, "@type", "is required");
    if (trc <= 0) {
        pt_cfg_skip_rest(r);
        return 0;
    }
    if (strcmp(type, type_url) == 0) {
        res->json = node;
        res->name = own_name(node, type_url);
        snprintf(res->path, sizeof(res->path), "resources[%zu]", i);
        pt_cfg_skip_rest(r); /* its fields are the consumer's to read */
        return 1;
    }
    if (strcmp(type, PT_RESOURCE_WRAPPER_TYPE) != 0) {
        pt_cfg_error(r, "@type", "is %s, expected %s", type, type_url);
        pt_cfg_skip_rest(r);
        return 0;
    }
    /* envoy.service.discovery.v3.Resource: what delta xDS sends, and what Envoy accepts in
     * a state-of-the-world response too. */
    static const char *const wrapper_unsupported[] = {"resource_name", "aliases",  "ttl",
                                                      "cache_control", "metadata", NULL};
    pt_cfg_unsupported(r, wrapper_unsupported);
    const char *wname = NULL, *version = NULL;
    pt_cfg_string(r, "name", &wname, NULL);
    pt_cfg_string(r, "version", &version, NULL);
    int rc, found = 0;
    const char *inner = pt_cfg_enter_any(r, "resource", &rc);
    if (rc == 0)
        pt_cfg_error(r, "resource", "is required");
    if (inner == NULL)
        return 0;
    if (strcmp(inner, type_url) != 0) {
        pt_cfg_error(r, "@type", "is %s, expected %s", inner, type_url);
    } else {
        json_t *body = json_object_get(node, "resource");
        const char *iname = own_name(body, type_url);
        if (wname != NULL && iname != NULL && strcmp(wname, iname) != 0) {
            /* Reported at the wrapper's name, once back out of the resource. */
            found = -1;
        } else {
            res->json = body;
            res->name = wname ? wname : iname;
            res->version = version;
            snprintf(res->path, sizeof(res->path), "resources[%zu].resource", i);
            found = 1;
        }
    }
    pt_cfg_skip_rest(r);
    pt_cfg_leave(r);
    if (found < 0) {
        pt_cfg_error(r, "name", "\"%s\" is not the resource's name \"%s\"", wname,
                     own_name(json_object_get(node, "resource"), type_url));
        found = 0;
    }
    return found;
}

int pt_discovery_response_parse(json_t *root, const char *type_url, pt_discovery_response_t *out,
                                char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->version_info = "";
    if (!json_is_object(root)) {
        snprintf(err, errlen, "(root): a DiscoveryResponse must be an object");
        return -1;
    }
    out->root = json_incref(root);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    const char *s;
    if (pt_cfg_string(&r, "version_info", &s, "") >= 0)
        out->version_info = s;
    if (pt_cfg_string(&r, "type_url", &s, NULL) > 0 && strcmp(s, type_url) != 0)
        pt_cfg_error(&r, "type_url", "is %s, expected %s", s, type_url);
    /* What a control plane puts in its responses; nothing for a consumer. */
    pt_cfg_string(&r, "nonce", &s, NULL);
    int canary;
    pt_cfg_bool(&r, "canary", &canary, 0);
    if (pt_cfg_enter(&r, "control_plane") > 0) {
        pt_cfg_string(&r, "identifier", &s, NULL);
        pt_cfg_leave(&r);
    }
    int present;
    size_t n = pt_cfg_array(&r, "resources", &present);
    out->resources = calloc(n ? n : 1, sizeof(*out->resources));
    json_t *names = json_object(); /* name -> index of its first resource */
    if (out->resources == NULL || names == NULL) {
        pt_cfg_error(&r, "resources", "out of memory");
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(&r, i) <= 0)
            continue;
        json_t *node = json_array_get(json_object_get(root, "resources"), i);
        pt_discovery_resource_t *res = &out->resources[out->nresources];
        int got = read_element(&r, node, i, type_url, res);
        pt_cfg_leave(&r);
        if (!got)
            continue;
        if (res->name != NULL) {
            json_t *first = json_object_get(names, res->name);
            if (first != NULL) {
                size_t saved = r.path_len;
                pt_cfg_push_index(&r, i);
                pt_cfg_error(&r, NULL, "duplicate name \"%s\" (resources[%lld] has it too)",
                             res->name, (long long)json_integer_value(first));
                pt_cfg_pop_path(&r, saved);
                continue;
            }
            json_object_set_new(names, res->name, json_integer((json_int_t)i));
        }
        out->nresources++;
    }
    json_decref(names);
    if (present)
        pt_cfg_leave_array(&r);
    pt_cfg_finish(&r);
    int rc = 0;
    if (!pt_cfg_ok(&r)) {
        join_errors(&r, err, errlen);
        rc = -1;
    }
    pt_cfg_dispose(&r);
    return rc;
}

void pt_discovery_response_dispose(pt_discovery_response_t *resp)
{
    free(resp->resources);
    json_decref(resp->root);
    memset(resp, 0, sizeof(*resp));
    resp->version_info = "";
}

void pt_discovery_resource_reader(const pt_discovery_resource_t *res, pt_cfg_t *r)
{
    pt_cfg_init_at(r, res->json, res->path);
    (void)pt_cfg_get(r, "@type");
}
