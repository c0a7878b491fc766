/* Stats helpers for unit tests. Include after pt_test.h. */
#ifndef PT_TEST_STATS_H
#define PT_TEST_STATS_H

#include "proxy/stats.h"

/* A stat's full dotted name, or "(none)" (two static buffers: two names at a time). */
static inline const char *full_name(pt_stat_t id)
{
    static char buf[2][PT_STAT_NAME_MAX];
    static int k;
    k ^= 1;
    const pt_stat_info_t *i = pt_stats_info(id);
    if (i == NULL)
        return "(none)";
    pt_stat_full_name(i, buf[k], sizeof(buf[k]));
    return buf[k];
}

#endif
