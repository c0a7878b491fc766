#include "proxy/stats_config.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/arena.h"
#include "proxy/matcher.h"
#include "proxy/stats.h"
#include "proxy/stats_tags.h"

typedef enum stats_match_mode {
    MATCH_ALL,       /* no stats_matcher, or reject_all: false */
    MATCH_NONE,      /* reject_all: true */
    MATCH_EXCLUSION, /* made unless a pattern matches */
    MATCH_INCLUSION, /* made only when a pattern matches */
} stats_match_mode_t;

struct pt_stats_settings {
    pt_arena_t arena;
    pt_tag_producer_t *tags; /* NULL: Envoy's defaults */
    stats_match_mode_t mode;
    pt_string_matcher_t *patterns;
    size_t npatterns;
};

static void settings_free(pt_stats_settings_t *s)
{
    if (s == NULL)
        return;
    pt_arena_dispose(&s->arena);
    free(s);
}

static void parse_tags(pt_cfg_t *r, pt_stats_settings_t *s)
{
    int use_defaults;
    int has_flag = pt_cfg_bool(r, "use_all_default_tags", &use_defaults, 1) != 0;
    int present;
    size_t n = pt_cfg_array(r, "stats_tags", &present);
    if (!present && !has_flag)
        return; /* Envoy's defaults, shared */
    s->tags = pt_tag_producer_new(&s->arena, use_defaults);
    if (s->tags == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        if (present)
            pt_cfg_leave_array(r);
        return;
    }
    /* Tag names given by the defaults in force and by earlier entries: Envoy refuses a
     * name given twice. */
    const char **seen = n ? calloc(n, sizeof(*seen)) : NULL;
    size_t nseen = 0;
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        const char *name = NULL, *regex = NULL, *fixed = NULL;
        pt_cfg_string(r, "tag_name", &name, NULL);
        static const char *const values[] = {"regex", "fixed_value", NULL};
        int which = pt_cfg_oneof(r, values, 0);
        if (which == 0 && pt_cfg_string(r, "regex", &regex, NULL) > 0 && regex[0] == '\0')
            regex = NULL; /* Envoy: an empty regex means the default's, by the name */
        else if (which == 1)
            pt_cfg_string(r, "fixed_value", &fixed, NULL);
        if (name == NULL || name[0] == '\0') {
            pt_cfg_error(r, "tag_name", "is required");
        } else if (which != PT_CFG_ONEOF_MANY) {
            /* A default name is taken when the defaults are in force; any name when an
             * earlier entry gave it. */
            int dup = use_defaults && pt_tag_is_default_name(name);
            for (size_t k = 0; k < nseen && !dup; k++)
                dup = strcmp(seen[k], name) == 0;
            char err[300];
            if (dup) {
                pt_cfg_error(r, "tag_name", "\"%s\" is specified twice (%s): Envoy refuses that",
                             name,
                             use_defaults && pt_tag_is_default_name(name)
                                 ? "use_all_default_tags already extracts it"
                                 : "an earlier stats_tags entry has it");
            } else if (pt_tag_producer_add(s->tags, name, regex, fixed, err, sizeof(err)) != 0) {
                if (regex != NULL) {
                    char q[300];
                    pt_cfg_error(r, "regex", "%s %s", pt_cfg_quote(regex, q, sizeof(q)), err);
                } else {
                    pt_cfg_error(r, fixed != NULL ? "fixed_value" : "tag_name", "%s", err);
                }
            } else if (seen != NULL) {
                seen[nseen++] = name;
            }
        }
        pt_cfg_leave(r);
    }
    free(seen);
    if (present)
        pt_cfg_leave_array(r);
}

static void parse_matcher(pt_cfg_t *r, pt_stats_settings_t *s)
{
    if (pt_cfg_enter(r, "stats_matcher") <= 0)
        return;
    static const char *const kinds[] = {"reject_all", "exclusion_list", "inclusion_list", NULL};
    int which = pt_cfg_oneof(r, kinds, 1);
    if (which == 0) {
        int all;
        pt_cfg_bool(r, "reject_all", &all, 0);
        s->mode = all ? MATCH_NONE : MATCH_ALL;
    } else if (which == 1 || which == 2) {
        s->mode = which == 1 ? MATCH_EXCLUSION : MATCH_INCLUSION;
        if (pt_cfg_enter(r, kinds[which]) > 0) {
            int present;
            size_t n = pt_cfg_array(r, "patterns", &present);
            if (!present || n == 0) /* inside the list's frame when it is there */
                pt_cfg_error(r, present ? NULL : "patterns",
                             "must list at least one StringMatcher");
            s->patterns = n ? pt_arena_alloc(&s->arena, n * sizeof(*s->patterns)) : NULL;
            for (size_t i = 0; i < n; i++) {
                if (pt_cfg_enter_index(r, i) <= 0)
                    continue;
                if (s->patterns != NULL &&
                    pt_string_matcher_parse(r, &s->arena, &s->patterns[s->npatterns]) == 0)
                    s->npatterns++;
                pt_cfg_leave(r);
            }
            if (present)
                pt_cfg_leave_array(r);
            pt_cfg_leave(r);
        }
    }
    pt_cfg_leave(r);
}

int pt_stats_config_parse(pt_cfg_t *r, pt_stats_settings_t **out)
{
    size_t before = r->nerrors;
    pt_stats_settings_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return -1;
    }
    pt_arena_init_small(&s->arena);
    parse_tags(r, s);
    parse_matcher(r, s);
    if (r->nerrors != before || out == NULL) {
        settings_free(s);
        return r->nerrors != before ? -1 : 0;
    }
    *out = s;
    return 0;
}

/* Whether the stat of this full name is made (stats_matcher). Runs under the registry's
 * lock, once per stat made: never on a counted path. */
static int keep_stat(const void *arg, const char *full_name)
{
    const pt_stats_settings_t *s = arg;
    size_t len = strlen(full_name);
    switch (s->mode) {
    case MATCH_ALL:
        return 1;
    case MATCH_NONE:
        return 0;
    case MATCH_EXCLUSION:
    case MATCH_INCLUSION:
        for (size_t i = 0; i < s->npatterns; i++)
            if (pt_string_matcher_match(&s->patterns[i], full_name, len))
                return s->mode == MATCH_INCLUSION;
        return s->mode == MATCH_EXCLUSION;
    }
    return 1;
}

static pt_stats_settings_t *installed;

void pt_stats_settings_install(pt_stats_settings_t *s)
{
    pt_stats_settings_t *old = installed;
    installed = s;
    pt_stats_set_matcher(s != NULL && s->mode != MATCH_ALL ? keep_stat : NULL, s);
    /* The producer's arena is the settings' own: it goes with them. */
    pt_stats_tags_install(s != NULL ? s->tags : NULL, NULL);
    settings_free(old);
}

void pt_stats_config_install(json_t *root)
{
    json_t *sc = json_object_get(root, "stats_config");
    if (!json_is_object(sc))
        return;
    pt_cfg_t r;
    pt_cfg_init_at(&r, sc, "stats_config");
    pt_stats_settings_t *s = NULL;
    if (pt_stats_config_parse(&r, &s) == 0 && s != NULL)
        pt_stats_settings_install(s);
    pt_cfg_skip_rest(&r);
    pt_cfg_dispose(&r);
}
