/* envoy.filters.network.rbac: allows or denies a downstream connection with the RBAC engine
 * (filters/rbac.h), before the terminal filter (tcp_proxy, http_connection_manager) sees it.
 *
 * The decision is taken once, when the connection reaches the filter. Envoy decides on the
 * first byte (ONE_TIME_ON_FIRST_BYTE) or on every read (CONTINUOUS); everything a network
 * rule can look at (addresses, ports, SNI, the peer certificate) is fixed by then and does
 * not change for the life of the connection, so both enforcement types give the same
 * answer here. A denied connection is closed at once without flushing (Envoy's NoFlush),
 * and counted in <stat_prefix>.rbac.denied. */
#include <string.h>
#include <sys/socket.h>

#include "filters/filter.h"
#include "filters/rbac.h"
#include "proxy/conn.h"
#include "proxy/listener.h"
#include "proxy/log.h"

static void *rbac_network_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    return pt_rbac_config_parse(r, &cfg->arena, PT_RBAC_FILTER_NETWORK);
}

static int rbac_network_prepare(void *fc, pt_config_t *cfg)
{
    (void)cfg;
    pt_rbac_config_register_stats(fc, NULL);
    return 0;
}

/* The peer's certificate identity. The TLS transport fills this in once it records a
 * pt_peer_identity_t for the connection; until then no connection is authenticated. */
static int rbac_network_on_new_connection(pt_session_t *s, void *fc)
{
    const pt_rbac_config_t *c = fc;
    if (c->rules == NULL && c->shadow_rules == NULL)
        return PT_CONTINUE;
    pt_rbac_ctx_t ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.direct_remote = s->conn->peer;
    ctx.remote = s->conn->peer;
    ctx.local = s->local; /* recorded at accept */
    if (ctx.local.sa.sa_family == 0 && (c->needs & PT_RBAC_NEEDS_LOCAL)) {
        socklen_t len = sizeof(ctx.local);
        if (getsockname(s->conn->fd, &ctx.local.sa, &len) != 0)
            memset(&ctx.local, 0, sizeof(ctx.local)); /* unknown: nothing matches it */
    }
    ctx.requested_server_name = s->sni; /* from tls_inspector; NULL when not inspected */
    pt_peer_identity_t id;
    ctx.peer = pt_rbac_identity_from_conn(s->conn, &id);

    pt_rbac_result_t res;
    pt_rbac_evaluate(c, &ctx, &res);
    pt_rbac_account(c, &res, "connection");
    if (res.enforced.verdict != PT_RBAC_DENIED)
        return PT_CONTINUE;
    if (pt_log_threshold <= PT_LOG_DEBUG) {
        char peer[PT_ADDR_STRLEN];
        pt_addr_format(&s->conn->peer, peer, sizeof(peer));
        pt_debug("rbac: closing connection from %s: %s", peer, res.enforced.details);
    }
    pt_conn_close(s->conn, PT_CLOSE_NOW);
    pt_session_end(s);
    return PT_STOP;
}

const pt_network_filter_ops_t pt_rbac_network_filter = {
    .name = "envoy.filters.network.rbac",
    .type_url = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
    .parse = rbac_network_parse,
    .prepare = rbac_network_prepare,
    .on_new_connection = rbac_network_on_new_connection,
};
