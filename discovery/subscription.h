/* A subscription to one type of xDS resources, wherever its ConfigSource says they come
 * from: a watched file (discovery/file_subscription.h), the ADS stream to the control
 * plane (discovery/ads.h, `ads: {}`), or the source's own control plane
 * (`api_config_source`: a stream of its type, discovery/ads.h). The consumer's callback,
 * outcomes and stats are the same either way; what differs is when the first update comes:
 * a file is read by _load (so a config can be validated with what it holds), while from a
 * control plane the first update comes when it sends it (_load answers
 * PT_UPDATE_PENDING). Main thread. */
#ifndef PT_SUBSCRIPTION_H
#define PT_SUBSCRIPTION_H

#include "discovery/file_subscription.h"
#include "proxy/config_source.h"

typedef struct pt_subscription pt_subscription_t;

/* The first update has not come yet (ADS): the consumer waits for it. */
#define PT_UPDATE_PENDING 1

/* cfg's path and watched_directory are taken from src. NULL with why in err: out of
 * memory, or `ads` without an ADS stream in the bootstrap (dynamic_resources.ads_config). */
pt_subscription_t *pt_subscription_new(const pt_config_source_t *src,
                                       const pt_file_subscription_config_t *cfg,
                                       pt_file_subscription_cb on_update, void *data, char *err,
                                       size_t errlen);
int pt_subscription_load(pt_subscription_t *s, char *err, size_t errlen);
int pt_subscription_watch(pt_subscription_t *s, struct ev_loop *loop, char *err, size_t errlen);
/* The resources wanted (EDS, RDS and SDS from a control plane name theirs); a file holds
 * what it holds. */
int pt_subscription_set_names(pt_subscription_t *s, const char *const *names, size_t n);
/* Safe from the subscription's own callback. NULL is ignored. */
void pt_subscription_free(pt_subscription_t *s);
const char *pt_subscription_version(const pt_subscription_t *s);
/* From a control plane (ADS or a source's own), not a file. */
int pt_subscription_is_remote(const pt_subscription_t *s);
/* From a control plane: the first update has not come and the source's initial_fetch_timeout has not
 * run out (a file's is read by _load: never). */
int pt_subscription_warming(const pt_subscription_t *s);

#endif
