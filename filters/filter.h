/* Filter plug-in points. Each filter is one ops table with designated initializers,
 * registered in filters/registry.c and chosen by the `@type` of its `typed_config`.
 *
 * Network filters run in order when a downstream connection is accepted and its filter
 * chain chosen. Non-terminal filters (rbac, sni_cluster, local_ratelimit) inspect the
 * session and return PT_CONTINUE or PT_STOP; a filter that stopped (to wait for something)
 * resumes the chain with pt_session_continue(). The last filter is terminal (tcp_proxy,
 * http_connection_manager): it takes the connection over and ends the session when done. */
#ifndef PT_FILTER_H
#define PT_FILTER_H

#include "proxy/config_reader.h"

#define PT_CONTINUE 0
#define PT_STOP     1

typedef struct pt_config pt_config_t;
typedef struct pt_session pt_session_t;

typedef struct pt_network_filter_ops {
    const char *name;     /* canonical name, e.g. envoy.filters.network.tcp_proxy */
    const char *type_url; /* type.googleapis.com/... of its typed_config */
    unsigned terminal : 1;
    /* A terminal filter that speaks application protocols itself: the ALPN names it speaks
     * (wire format, each length-prefixed). A TLS filter chain ending in it offers only
     * those of its alpn_protocols: negotiating a protocol the filter cannot speak would
     * break every connection that chose it. NULL: any (tcp_proxy passes bytes through). */
    const char *alpn;
    /* When the names depend on the filter's config (the HTTP connection manager's
     * codec_type): returns them for this config, overriding `alpn`. May be NULL. */
    const char *(*alpn_for)(const void *filter_config);
    /* Reads typed_config (the reader is inside it, @type consumed) and returns the filter's
     * config allocated from cfg->arena, or NULL with errors recorded. Clusters are parsed
     * before listeners, so references to them are checked here. */
    void *(*parse)(pt_cfg_t *r, pt_config_t *cfg);
    /* Called once the whole snapshot validated: register stats, build lookup tables. */
    int (*prepare)(void *filter_config, pt_config_t *cfg);
    /* A new downstream connection reached this filter (worker thread). */
    int (*on_new_connection)(pt_session_t *s, void *filter_config);
} pt_network_filter_ops_t;

const pt_network_filter_ops_t *pt_network_filter_find(const char *type_url);

#endif
