/* Placeholder parse so the cluster parser links: health_checks are reported as not
 * supported until the checker lands. */
#include "discovery/health_check.h"

int pt_health_checks_parse(pt_cfg_t *r, pt_arena_t *a, const char *field,
                           pt_health_check_config_t **out, unsigned *n)
{
    (void)a;
    *out = NULL;
    *n = 0;
    if (pt_cfg_has(r, field)) {
        pt_cfg_get(r, field);
        pt_cfg_error(r, field, "field is not supported");
        return -1;
    }
    return 0;
}
