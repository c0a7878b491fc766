/* envoy.filters.network.local_ratelimit: a token bucket for new connections.
 *
 * Each connection that reaches the filter takes one token; one that finds the bucket empty
 * is closed at once, without flushing and without running the filters after this one
 * (Envoy's NoFlush close), and counted in local_rate_limit.<stat_prefix>.rate_limited.
 * runtime_enabled (a RuntimeFeatureFlag) switches the filter: its default_value decides,
 * runtime_key is accepted and ignored (petrel has no runtime layer).
 *
 * The bucket is shared by all workers (filters/token_bucket.h), exact across them. Filters
 * with the same share_key and the same token_bucket share one bucket, as in Envoy; without
 * a share_key each filter has its own, kept across config reloads that keep the filter's
 * place and token_bucket. */
#include <stdio.h>
#include <string.h>

#include "filters/filter.h"
#include "filters/token_bucket.h"
#include "proxy/config.h"
#include "proxy/conn.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/stats.h"

typedef struct lrl_net_config {
    const char *stat_prefix;
    pt_token_bucket_config_t bucket_cfg;
    pt_token_bucket_t *bucket;
    int enabled;
    pt_stat_t rate_limited;
} lrl_net_config_t;

static void *lrl_net_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    size_t before = r->nerrors;
    char where[sizeof(r->path)];
    snprintf(where, sizeof(where), "%s", pt_cfg_path(r));
    lrl_net_config_t *c = pt_arena_alloc(&cfg->arena, sizeof(*c));
    if (c == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    const char *s;
    if (pt_cfg_string(r, "stat_prefix", &s, NULL) == 0 || (s != NULL && s[0] == '\0'))
        pt_cfg_error(r, "stat_prefix", "is required");
    c->stat_prefix = pt_arena_strdup(&cfg->arena, s ? s : "");
    pt_token_bucket_config_field(r, "token_bucket", &c->bucket_cfg);

    c->enabled = 1;
    int rc = pt_cfg_enter(r, "runtime_enabled");
    if (rc > 0) {
        /* RuntimeFeatureFlag: both fields are required, as Envoy validates them. */
        if (pt_cfg_bool(r, "default_value", &c->enabled, 1) == 0)
            pt_cfg_error(r, "default_value", "is required");
        const char *key;
        int krc = pt_cfg_string(r, "runtime_key", &key, NULL);
        if (krc == 0 || (krc > 0 && key[0] == '\0'))
            pt_cfg_error(r, "runtime_key", "is required");
        pt_cfg_leave(r);
    }
    const char *share_key;
    pt_cfg_string(r, "share_key", &share_key, "");

    if (r->nerrors != before)
        return NULL;
    char key[sizeof(where) + 64];
    if (share_key[0] != '\0')
        snprintf(key, sizeof(key), "network_local_ratelimit|share|%s", share_key);
    else
        snprintf(key, sizeof(key), "network_local_ratelimit|%s", where);
    c->bucket = pt_token_bucket_shared_get(key, &c->bucket_cfg);
    if (c->bucket == NULL ||
        pt_arena_defer(&cfg->arena, pt_token_bucket_shared_put_cb, c->bucket) != 0) {
        pt_token_bucket_shared_put(c->bucket);
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    return c;
}

static int lrl_net_prepare(void *fc, pt_config_t *cfg)
{
    (void)cfg;
    lrl_net_config_t *c = fc;
    c->rate_limited = pt_stats_counter("local_rate_limit", "envoy_local_network_ratelimit_prefix",
                                       c->stat_prefix, "rate_limited");
    return 0;
}

static int lrl_net_on_new_connection(pt_session_t *s, void *fc)
{
    lrl_net_config_t *c = fc;
    if (!c->enabled || pt_token_bucket_consume(c->bucket))
        return PT_CONTINUE;
    pt_stat_inc(c->rate_limited);
    if (pt_log_threshold <= PT_LOG_DEBUG) {
        char peer[PT_ADDR_STRLEN];
        pt_addr_format(&s->conn->peer, peer, sizeof(peer));
        pt_debug("local_rate_limit: closing connection from %s: over limit", peer);
    }
    pt_conn_close(s->conn, PT_CLOSE_NOW);
    pt_session_end(s);
    return PT_STOP;
}

const pt_network_filter_ops_t pt_local_ratelimit_network_filter = {
    .name = "envoy.filters.network.local_ratelimit",
    .type_url =
        "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
    .parse = lrl_net_parse,
    .prepare = lrl_net_prepare,
    .on_new_connection = lrl_net_on_new_connection,
};
