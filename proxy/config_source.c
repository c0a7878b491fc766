#include "proxy/config_source.h"

#include <stdio.h>
#include <string.h>

/* name -> 1 (a static cluster an ApiConfigSource may name) or 0 (static, of type EDS). */
static json_t *static_clusters;

void pt_config_source_set_static_clusters(json_t *bootstrap)
{
    json_decref(static_clusters);
    static_clusters = NULL;
    if (bootstrap == NULL)
        return;
    static_clusters = json_object();
    json_t *list = json_object_get(json_object_get(bootstrap, "static_resources"), "clusters");
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        json_t *name = json_object_get(c, "name"), *type = json_object_get(c, "type");
        if (!json_is_string(name))
            continue;
        int eds = (json_is_string(type) && strcmp(json_string_value(type), "EDS") == 0) ||
                  (json_is_integer(type) && json_integer_value(type) == 3);
        json_object_set_new(static_clusters, json_string_value(name), json_boolean(!eds));
    }
}

/* The reader is at grpc_services[i].envoy_grpc (or the REST source): name must be a static
 * cluster of the bootstrap that is not of type EDS. */
static void check_cluster(pt_cfg_t *r, const char *field, const char *name)
{
    if (static_clusters == NULL || name == NULL || name[0] == '\0')
        return;
    json_t *v = json_object_get(static_clusters, name);
    char q[300];
    if (v == NULL)
        pt_cfg_error(r, field, "%s is not a cluster of static_resources (the cluster of a "
                               "control plane must be defined statically)",
                     pt_cfg_quote(name, q, sizeof(q)));
    else if (!json_is_true(v))
        pt_cfg_error(r, field, "%s is a cluster of type EDS (the cluster of a control plane "
                               "must have its endpoints in the bootstrap)",
                     pt_cfg_quote(name, q, sizeof(q)));
}

void pt_api_source_parse(pt_cfg_t *r, pt_arena_t *a, int rest, pt_api_source_t *out)
{
    memset(out, 0, sizeof(*out));
    static const char *const unsupported[] = {"rate_limit_settings", "config_validators",
                                              NULL};
    pt_cfg_unsupported(r, unsupported);
    static const char *const api_types[] = {"GRPC", "DELTA_GRPC", "REST", NULL};
    static const char *const api_types_grpc[] = {"GRPC", "DELTA_GRPC", NULL};
    static const char *const api_known[] = {"DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE",
                                            "AGGREGATED_GRPC", "AGGREGATED_DELTA_GRPC", NULL};
    static const char *const api_known_grpc[] = {"DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE",
                                                 "REST", "AGGREGATED_GRPC",
                                                 "AGGREGATED_DELTA_GRPC", NULL};
    int v = -1;
    if (pt_cfg_enum(r, "api_type", rest ? api_types : api_types_grpc,
                    rest ? api_known : api_known_grpc, &v, -1) == 0)
        pt_cfg_error(r, "api_type", "is required (%s)", rest ? "GRPC, DELTA_GRPC or REST"
                                                             : "GRPC or DELTA_GRPC");
    out->api_type = v == 1 ? PT_API_DELTA_GRPC : v == 2 ? PT_API_REST : PT_API_GRPC;
    int is_rest = v == 2;
    static const char *const versions[] = {"V3", NULL};
    static const char *const versions_known[] = {"AUTO", "V2", NULL};
    int ver;
    pt_cfg_enum(r, "transport_api_version", versions, versions_known, &ver, 0);
    pt_cfg_bool(r, "set_node_on_first_message_only", &out->node_first_only, 0);
    /* REST: the cluster by name, polled every refresh_delay; gRPC: one service. */
    int present;
    size_t n = pt_cfg_array(r, "cluster_names", &present);
    /* (Inside the list when it is present: errors about it are at the current path.) */
    const char *here = present ? NULL : "cluster_names";
    if (present && !is_rest && v >= 0)
        pt_cfg_error(r, here, "is for api_type REST (a gRPC source names its cluster in "
                              "grpc_services)");
    else if (is_rest && n != 1)
        pt_cfg_error(r, here, "must name exactly one cluster (has %zu)", n);
    for (size_t i = 0; is_rest && n == 1 && i < n; i++) {
        json_t *name = pt_cfg_index_value(r, i);
        size_t saved = strlen(pt_cfg_path(r));
        pt_cfg_push_index(r, i);
        if (!json_is_string(name) || json_string_length(name) == 0) {
            pt_cfg_error(r, NULL, "is not a cluster name");
        } else {
            out->cluster = pt_arena_strdup(a, json_string_value(name));
            check_cluster(r, NULL, out->cluster);
        }
        pt_cfg_pop_path(r, saved);
    }
    if (present)
        pt_cfg_leave_array(r);
    if (is_rest) {
        if (pt_cfg_duration_ms(r, "refresh_delay", &out->refresh_delay_ms, 0) == 0)
            pt_cfg_error(r, "refresh_delay", "is required for api_type REST");
        else if (out->refresh_delay_ms == 0)
            pt_cfg_error(r, "refresh_delay", "must be more than 0s");
        pt_cfg_duration_ms(r, "request_timeout", &out->request_timeout_ms, 1000);
        if (out->request_timeout_ms == 0)
            pt_cfg_error(r, "request_timeout", "must be more than 0s");
    } else {
        static const char *const rest_only[] = {"refresh_delay", "request_timeout", NULL};
        for (int i = 0; rest_only[i] != NULL; i++)
            if (pt_cfg_has(r, rest_only[i]) && v >= 0)
                pt_cfg_error(r, rest_only[i], "is for api_type REST");
        uint64_t ignored;
        pt_cfg_duration_ms(r, "refresh_delay", &ignored, 0);
        pt_cfg_duration_ms(r, "request_timeout", &ignored, 0);
    }
    n = pt_cfg_array(r, "grpc_services", &present);
    here = present ? NULL : "grpc_services";
    if (is_rest && present && n > 0)
        pt_cfg_error(r, here, "is for gRPC sources (api_type REST names its cluster in "
                              "cluster_names)");
    else if (!is_rest && n != 1)
        pt_cfg_error(r, here, "must name exactly one service (has %zu)", n);
    for (size_t i = 0; !is_rest && i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        static const char *const gs_unsupported[] = {"google_grpc", "retry_policy",
                                                     "initial_metadata", NULL};
        pt_cfg_unsupported(r, gs_unsupported);
        uint64_t timeout;
        pt_cfg_duration_ms(r, "timeout", &timeout, 0); /* a stream has no deadline */
        if (pt_cfg_enter(r, "envoy_grpc") > 0) {
            static const char *const eg_unsupported[] = {"authority", "retry_policy",
                                                         "max_receive_message_length",
                                                         "skip_envoy_headers", NULL};
            pt_cfg_unsupported(r, eg_unsupported);
            const char *name;
            if (pt_cfg_string(r, "cluster_name", &name, NULL) == 0 || name == NULL ||
                name[0] == '\0') {
                pt_cfg_error(r, "cluster_name", "is required");
            } else {
                out->cluster = pt_arena_strdup(a, name);
                check_cluster(r, "cluster_name", name);
            }
            pt_cfg_leave(r);
        } else {
            pt_cfg_error(r, "envoy_grpc", "is required");
        }
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
}

/* The key of an ApiConfigSource: what makes two of them the same control plane. */
static const char *api_key(pt_arena_t *a, const pt_api_source_t *api)
{
    static const char *const names[] = {"GRPC", "DELTA_GRPC", "REST"};
    char buf[512];
    if (api->api_type == PT_API_REST)
        snprintf(buf, sizeof(buf), "api_config_source{REST,%s,refresh_delay=%llums,"
                                   "request_timeout=%llums}",
                 api->cluster ? api->cluster : "",
                 (unsigned long long)api->refresh_delay_ms,
                 (unsigned long long)api->request_timeout_ms);
    else
        snprintf(buf, sizeof(buf), "api_config_source{%s,%s%s}", names[api->api_type],
                 api->cluster ? api->cluster : "",
                 api->node_first_only ? ",set_node_on_first_message_only" : "");
    return pt_arena_strdup(a, buf);
}

int pt_config_no_xdstp(pt_cfg_t *r, const char *field, const char *name)
{
    if (name == NULL || strncmp(name, "xdstp:", 6) != 0)
        return 0;
    pt_cfg_error(r, field, "\"%s\": xDS-TP names (xdstp://) are not supported", name);
    return -1;
}

int pt_config_source_parse(pt_cfg_t *r, pt_arena_t *a, const char *field,
                           pt_config_source_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    size_t errors_before = r->nerrors;
    static const char *const unsupported[] = {"self", "authorities", "config_source_specifier",
                                              NULL};
    pt_cfg_unsupported(r, unsupported);
    static const char *const api_versions[] = {"V3", NULL};
    static const char *const api_known[] = {"AUTO", "V2", NULL};
    int v;
    pt_cfg_enum(r, "resource_api_version", api_versions, api_known, &v, 0);
    pt_cfg_duration_ms(r, "initial_fetch_timeout", &out->initial_fetch_timeout_ms, 15000);
    int given = 0;
    if (pt_cfg_enter(r, "ads") > 0) {
        /* AggregatedConfigSource has no fields. */
        out->ads = 1;
        given++;
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "api_config_source") > 0) {
        pt_api_source_t *api = pt_arena_alloc(a, sizeof(*api));
        if (api != NULL) {
            pt_api_source_parse(r, a, 1, api);
            out->api = api;
        }
        given++;
        pt_cfg_leave(r);
    }
    const char *path = NULL;
    pt_cfg_string(r, "path", &path, NULL); /* the deprecated spelling */
    if (pt_cfg_enter(r, "path_config_source") > 0) {
        const char *p2;
        if (path != NULL && pt_cfg_has(r, "path"))
            pt_cfg_error(r, NULL, "and path are both given");
        if (pt_cfg_string(r, "path", &p2, NULL) == 0)
            pt_cfg_error(r, "path", "is required");
        else if (p2 != NULL)
            path = p2;
        if (pt_cfg_enter(r, "watched_directory") > 0) {
            const char *wd;
            if (pt_cfg_string(r, "path", &wd, NULL) == 0)
                pt_cfg_error(r, "path", "is required");
            out->watched_directory = pt_arena_strdup(a, wd);
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    if (path != NULL && path[0] == '\0')
        pt_cfg_error(r, "path", "must not be empty");
    if (path != NULL)
        given++;
    if (given > 1)
        pt_cfg_error(r, NULL, "only one of ads, api_config_source and path_config_source may "
                              "be given (found %s%s%s%s%s)",
                     out->ads ? "ads" : "", out->ads && out->api ? ", " : "",
                     out->api ? "api_config_source" : "", path != NULL ? ", " : "",
                     path != NULL ? "path_config_source" : "");
    if (given == 0 && r->nerrors == errors_before)
        pt_cfg_error(r, NULL, "needs path_config_source, ads or api_config_source");
    out->path = pt_arena_strdup(a, path);
    out->key = out->ads ? "ads" : out->api != NULL ? api_key(a, out->api) : out->path;
    pt_cfg_leave(r);
    return r->nerrors == errors_before ? 1 : -1;
}
