#include "proxy/config_source.h"

#include <string.h>

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
    if (pt_cfg_enter(r, "ads") > 0) {
        /* AggregatedConfigSource has no fields. */
        out->ads = 1;
        pt_cfg_leave(r);
    }
    if (pt_cfg_get(r, "api_config_source") != NULL)
        pt_cfg_error(r, "api_config_source", "is not supported yet: petrel reads resources "
                                             "from files (path_config_source) or over ADS "
                                             "(ads)");
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
    if (out->ads && path != NULL)
        pt_cfg_error(r, "ads", "and path_config_source are both given");
    if (path == NULL && !out->ads && r->nerrors == errors_before)
        pt_cfg_error(r, NULL, "needs path_config_source or ads (petrel reads resources from "
                              "files or over ADS)");
    out->path = pt_arena_strdup(a, path);
    pt_cfg_leave(r);
    return r->nerrors == errors_before ? 1 : -1;
}
