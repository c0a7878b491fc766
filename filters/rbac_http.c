/* envoy.filters.http.rbac: allows or denies each request with the RBAC engine
 * (filters/rbac.h), on the request headers, before the router.
 *
 * Denied: a local 403 "RBAC: access denied" whose response code details name the effective
 * policy (rbac_access_denied_matched_policy[<name>|none]). Shadow rules are evaluated too,
 * counted (rbac.shadow_allowed / rbac.shadow_denied), logged at debug and written, as in
 * Envoy, to the stream's dynamic metadata under "envoy.filters.http.rbac":
 * shadow_engine_result ("allowed" or "denied") and shadow_effective_policy_id (when a policy
 * matched), each prefixed by shadow_rules_stat_prefix. Filters after this one (a second
 * RBAC filter's metadata matcher) and the access log (%DYNAMIC_METADATA%) read them. Stats
 * live under http.<connection manager stat_prefix>.rbac.
 *
 * A route's RBACPerRoute replaces the filter's rules for its requests: its `rbac` (an RBAC
 * message), or, without one, no rules at all (the route is not checked), as in Envoy. The
 * filter's stats count either way. */
#include <string.h>

#include "filters/http_filter.h"
#include "filters/rbac.h"
#include "proxy/conn_manager.h"
#include "proxy/listener.h"
#include "proxy/metadata.h"

static void *rbac_http_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    return pt_rbac_config_parse(r, &cfg->arena, PT_RBAC_FILTER_HTTP);
}

/* RBACPerRoute {rbac}: the rules, or an empty config (no rbac: nothing is checked). */
static void *rbac_http_parse_per_route(pt_cfg_t *r, pt_arena_t *a)
{
    static const pt_rbac_config_t none;
    if (pt_cfg_enter(r, "rbac") <= 0)
        return (void *)&none;
    pt_rbac_config_t *c = pt_rbac_config_parse(r, a, PT_RBAC_FILTER_HTTP);
    pt_cfg_leave(r);
    return c;
}

static int rbac_http_prepare(void *fc, pt_config_t *cfg, const char *stat_prefix)
{
    (void)cfg;
    pt_rbac_config_register_stats(fc, stat_prefix);
    return 0;
}

static int rbac_http_decode_headers(pt_http_stream_t *s, void *cfg, void *state,
                                    pt_http_headers_t *h, int end_stream)
{
    (void)state;
    (void)end_stream;
    const pt_rbac_config_t *base = cfg, *route = pt_http_stream_route_config(s);
    const pt_rbac_config_t *c = route != NULL ? route : base;
    if (c->rules == NULL && c->shadow_rules == NULL)
        return PT_CONTINUE;
    pt_rbac_ctx_t ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.headers = h;
    ctx.remote = s->info.downstream_remote;
    ctx.direct_remote = s->info.downstream_direct_remote;
    ctx.local = s->info.downstream_local;
    ctx.requested_server_name = s->info.requested_server_name;
    pt_peer_identity_t id;
    ctx.peer = pt_rbac_identity_from_conn(pt_http_stream_downstream_conn(s), &id);
    ctx.dynamic_metadata = s->info.dynamic_metadata;
    ctx.route_metadata = s->info.route_metadata;

    pt_rbac_result_t res;
    pt_rbac_evaluate(c, &ctx, &res);
    pt_rbac_account(base, &res, "request");
    if (res.shadow.verdict != PT_RBAC_NO_RULES) {
        static const char ns[] = "envoy.filters.http.rbac";
        int ok = pt_dyn_md_set_string(&s->info.dynamic_metadata, &s->arena, ns,
                                      c->md_shadow_result_key,
                                      res.shadow.verdict == PT_RBAC_ALLOWED ? "allowed"
                                                                            : "denied") == 0;
        if (ok && res.shadow.policy != NULL)
            ok = pt_dyn_md_set_string(&s->info.dynamic_metadata, &s->arena, ns,
                                      c->md_shadow_policy_key, res.shadow.policy) == 0;
        if (!ok) {
            pt_http_stream_local_reply(s, 503, "", NULL, 0, "out_of_memory");
            return PT_STOP;
        }
    }
    if (res.enforced.verdict == PT_RBAC_DENIED) {
        pt_http_stream_local_reply(s, 403, "RBAC: access denied", NULL, 0, res.enforced.details);
        return PT_STOP;
    }
    return PT_CONTINUE;
}

const pt_http_filter_ops_t pt_rbac_http_filter = {
    .name = "envoy.filters.http.rbac",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    .parse = rbac_http_parse,
    .prepare = rbac_http_prepare,
    .per_route_type_url = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    .parse_per_route = rbac_http_parse_per_route,
    .decode_headers = rbac_http_decode_headers,
};
