/* Fuzz target: a config file from untrusted bytes, as `--mode validate` would see it: YAML
 * (and so JSON, a subset) parsed into a tree, then the whole bootstrap built and validated.
 * Every error must be reported, never crash; a valid snapshot must free cleanly. The same
 * bytes go through the JSON reader too (its bounds check walks them before jansson does). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/ads.h"
#include "proxy/config.h"
#include "proxy/config_reader.h"
#include "proxy/log.h"
#include "../unit/pt_test_boot.h"

/* The nesting of a tree (a scalar is 0 levels, [] is 1) and, added to *values, its values:
 * what the parsers promise to bound. */
static int depth_of(json_t *v, size_t *values)
{
    int deepest = 0;
    (*values)++;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            int d = depth_of(e, values);
            deepest = d > deepest ? d : deepest;
        }
        return deepest + 1;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e) {
            int d = depth_of(e, values);
            deepest = d > deepest ? d : deepest;
        }
        return deepest + 1;
    }
    return 0;
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
    char err[512];
    json_t *as_json = pt_json_parse(text, size, err, sizeof(err));
    size_t values = 0;
    if (as_json != NULL &&
        (depth_of(as_json, &values) > PT_DOC_MAX_DEPTH || values > PT_DOC_MAX_VALUES))
        abort();
    json_decref(as_json);
    json_t *root = pt_yaml_parse(text, size, err, sizeof(err));
    free(text);
    values = 0;
    if (root != NULL && (depth_of(root, &values) > PT_DOC_MAX_DEPTH || values > PT_DOC_MAX_VALUES))
        abort();
    if (root == NULL)
        return 0;
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_boot_t *boot = pt_test_boot(root, &r);
    /* Errors and success are exclusive: a snapshot comes only from an error-free build. */
    if ((boot != NULL) != (r.nerrors == 0))
        abort();
    char *joined = pt_cfg_errors_joined(&r);
    free(joined);
    pt_cfg_dispose(&r);
    pt_boot_free(boot);
    /* The control planes' muxes its SDS secrets made (api_config_source): gone with it. */
    pt_xds_free();
    json_decref(root);
    return 0;
}
