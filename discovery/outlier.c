/* Placeholder until the detector lands: outlier_detection is refused with a precise error,
 * and reports are ignored. */
#include "discovery/outlier.h"

pt_outlier_config_t *pt_outlier_parse(pt_cfg_t *r, pt_arena_t *a)
{
    (void)a;
    pt_cfg_error(r, NULL, "outlier_detection is not supported yet");
    pt_cfg_skip_rest(r);
    return NULL;
}

void pt_outlier_report(pt_cluster_t *c, pt_host_t *h, pt_outlier_result_t result,
                       int http_status)
{
    (void)c;
    (void)h;
    (void)result;
    (void)http_status;
}
