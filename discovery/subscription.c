#include "discovery/subscription.h"

#include <stdio.h>
#include <stdlib.h>

#include "discovery/ads.h"

struct pt_subscription {
    pt_file_subscription_t *file; /* one of the two */
    pt_ads_watch_t *ads;
};

pt_subscription_t *pt_subscription_new(const pt_config_source_t *src,
                                       const pt_file_subscription_config_t *cfg,
                                       pt_file_subscription_cb on_update, void *data, char *err,
                                       size_t errlen)
{
    pt_subscription_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (src->ads || src->api != NULL) {
        pt_ads_t *a = src->ads ? pt_ads_current() : pt_xds_mux_for(src, cfg, err, errlen);
        if (a == NULL) {
            if (src->ads)
                snprintf(err, errlen, "ads: the bootstrap has no dynamic_resources.ads_config");
            free(s);
            return NULL;
        }
        s->ads = pt_ads_watch(a, cfg, on_update, data);
        if (s->ads != NULL)
            pt_ads_watch_set_initial_fetch(s->ads, src->initial_fetch_timeout_ms);
    } else {
        pt_file_subscription_config_t fc = *cfg;
        fc.path = src->path;
        fc.watched_directory = src->watched_directory;
        s->file = pt_file_subscription_new(&fc, on_update, data);
    }
    if (s->ads == NULL && s->file == NULL) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    return s;
}

int pt_subscription_load(pt_subscription_t *s, char *err, size_t errlen)
{
    if (s->ads != NULL)
        return PT_UPDATE_PENDING;
    return pt_file_subscription_load(s->file, err, errlen);
}

int pt_subscription_watch(pt_subscription_t *s, struct ev_loop *loop, char *err, size_t errlen)
{
    if (s->ads != NULL)
        return 0; /* the ADS stream delivers */
    return pt_file_subscription_watch(s->file, loop, err, errlen);
}

int pt_subscription_set_names(pt_subscription_t *s, const char *const *names, size_t n)
{
    return s->ads != NULL ? pt_ads_watch_set_names(s->ads, names, n) : 0;
}

void pt_subscription_free(pt_subscription_t *s)
{
    if (s == NULL)
        return;
    pt_ads_unwatch(s->ads);
    pt_file_subscription_free(s->file);
    free(s);
}

const char *pt_subscription_version(const pt_subscription_t *s)
{
    return s->ads != NULL ? pt_ads_watch_version(s->ads) : pt_file_subscription_version(s->file);
}

int pt_subscription_is_remote(const pt_subscription_t *s)
{
    return s->ads != NULL;
}

int pt_subscription_warming(const pt_subscription_t *s)
{
    return s != NULL && s->ads != NULL && pt_ads_watch_warming(s->ads);
}
