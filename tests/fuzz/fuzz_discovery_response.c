/* Fuzz target: a DiscoveryResponse from untrusted bytes, as a watched file delivers it: YAML
 * (and so JSON) parsed into a tree, the envelope checked for a type, then every resource's
 * fields read through pt_discovery_resource_reader. Errors must be reported, never crash;
 * an accepted response must hold only resources of the type, each an object, with distinct
 * names and a path. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/discovery_response.h"
#include "proxy/config_reader.h"
#include "proxy/log.h"

static const char *const types[] = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
};

static void check(json_t *root, const char *type_url)
{
    pt_discovery_response_t resp;
    char err[2048];
    int rc = pt_discovery_response_parse(root, type_url, &resp, err, sizeof(err));
    if (rc != 0 && err[0] == '\0')
        abort(); /* a refusal always says why */
    if (rc == 0) {
        json_t *names = json_object();
        for (size_t i = 0; i < resp.nresources; i++) {
            const pt_discovery_resource_t *res = &resp.resources[i];
            json_t *t = json_object_get(res->json, "@type");
            if (!json_is_object(res->json) || !json_is_string(t) ||
                strcmp(json_string_value(t), type_url) != 0 || res->path[0] == '\0')
                abort();
            if (res->name != NULL) {
                if (json_object_get(names, res->name) != NULL)
                    abort();
                json_object_set_new(names, res->name, json_true());
            }
            pt_cfg_t r;
            pt_discovery_resource_reader(res, &r);
            const char *name;
            pt_cfg_string(&r, "name", &name, NULL);
            pt_cfg_finish(&r);
            char *joined = pt_cfg_errors_joined(&r);
            free(joined);
            pt_cfg_dispose(&r);
        }
        json_decref(names);
    }
    pt_discovery_response_dispose(&resp);
}

/* The same bytes read whole and resource by resource must agree: both accept, with the
 * same resources in the same order, or both refuse. */
static void check_stream(const char *text, size_t size, const char *type_url)
{
    pt_discovery_response_t whole, stream;
    char err[2048];
    int src = pt_discovery_response_parse_text(text, size, type_url, &stream, err, sizeof(err));
    if (src == -2)
        return; /* read whole: nothing to compare */
    json_t *root = pt_json_parse(text, size, err, sizeof(err));
    int wrc = root != NULL ? pt_discovery_response_parse(root, type_url, &whole, err, sizeof(err))
                           : -1;
    size_t cursor = 0, k = 0;
    pt_discovery_resource_t res;
    int got = 0, all = src == 0;
    while (all && (got = pt_discovery_response_next(&stream, &cursor, &res, err, sizeof(err))) != 0) {
        if (got < 0) {
            if (err[0] == '\0')
                abort(); /* a refusal always says why */
            all = 0;
            break;
        }
        if (wrc == 0) { /* the whole reading must have it at the same place */
            if (k >= whole.nresources || strcmp(whole.resources[k].path, res.path) != 0 ||
                (whole.resources[k].name == NULL) != (res.name == NULL) ||
                (res.name != NULL && strcmp(whole.resources[k].name, res.name) != 0) ||
                !json_equal(whole.resources[k].json, res.json))
                abort();
        }
        k++;
    }
    if (all != (wrc == 0) || (wrc == 0 && k != whole.nresources))
        abort();
    if (root != NULL)
        pt_discovery_response_dispose(&whole);
    json_decref(root);
    pt_discovery_response_dispose(&stream);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        pt_log_threshold = PT_LOG_OFF;
        init = 1;
    }
    if (size > 64 * 1024)
        return 0;
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        check_stream(text, size, types[i]);
    char err[512];
    json_t *root = pt_yaml_parse(text, size, err, sizeof(err));
    free(text);
    if (root == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        check(root, types[i]);
    json_decref(root);
    return 0;
}
