/* Stats helpers for unit tests. Include after pt_test.h. */
#ifndef PT_TEST_STATS_H
#define PT_TEST_STATS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Runs `promtool check metrics` on an exposition: 1 when it passes, 0 when promtool is not
 * installed, -1 (with promtool's words and the exposition on stderr) when it fails.
 *
 * Passing means what it means for Envoy's own output: well formed (promtool's exit 1 is a
 * parse error) and no lint problem, except those Envoy's names make unavoidable (exit 3):
 * promtool 2.x calls the "ms" in upstream_cx_connect_ms, upstream_cx_length_ms and
 * downstream_cx_length_ms an abbreviated unit, wants "_total" on every counter and on no
 * gauge. Those names are Envoy's, kept for its dashboards; any other problem fails. */
static inline int pt_test_promtool(const char *text)
{
    if (access("/usr/bin/promtool", X_OK) != 0) {
        printf("skip promtool: /usr/bin/promtool not installed\n");
        return 0;
    }
    char out[] = "/tmp/pt_ut_promtoolXXXXXX";
    int fd = mkstemp(out);
    if (fd < 0)
        return -1;
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics >%s 2>&1", out);
    FILE *p = popen(cmd, "w");
    if (p == NULL)
        return -1;
    fputs(text, p);
    int status = pclose(p);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    int ok = code == 0 || code == 3;
    FILE *f = fopen(out, "r");
    char line[1024];
    while (ok && code == 3 && f != NULL && fgets(line, sizeof(line), f) != NULL) {
        static const char units[] = " metric names should not contain abbreviated units\n";
        static const char no_total[] = " counter metrics should have \"_total\" suffix\n";
        static const char gauge_total[] =
            " non-counter metrics should not have \"_total\" suffix\n";
        char *sp = strchr(line, ' ');
        size_t nlen = sp ? (size_t)(sp - line) : 0;
        int envoy = sp != NULL && nlen > 6 && strncmp(line, "envoy_", 6) == 0;
        ok = envoy && ((strcmp(sp, units) == 0 && strncmp(line + nlen - 3, "_ms", 3) == 0) ||
                       strcmp(sp, no_total) == 0 ||
                       (strcmp(sp, gauge_total) == 0 && strncmp(line + nlen - 6, "_total", 6) == 0));
    }
    if (!ok) {
        fprintf(stderr, "  promtool exit %d; exposition:\n%s\n  promtool said:\n", code, text);
        if (f != NULL) {
            rewind(f);
            while (fgets(line, sizeof(line), f) != NULL)
                fprintf(stderr, "    %s", line);
        }
    }
    if (f != NULL)
        fclose(f);
    unlink(out);
    return ok ? 1 : -1;
}

#endif
