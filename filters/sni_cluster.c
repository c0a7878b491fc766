/* envoy.filters.network.sni_cluster: routes a connection to the cluster named by its TLS
 * SNI, for tcp_proxy after it. With the TLS inspector and no TLS termination this forwards
 * TLS unterminated between regions (Istio's AUTO_PASSTHROUGH pattern, SNI like
 * outbound_.8080_._.reviews.default.svc.cluster.local mapped to a cluster of that name), so
 * an east-west gateway routes without holding workload keys. No SNI: the tcp_proxy's own
 * cluster applies. */
#include "filters/filter.h"
#include "proxy/config.h"
#include "proxy/listener.h"
#include "tls/transport.h"

static void *sni_cluster_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    (void)r;
    /* Empty config message; a non-NULL pointer says "parsed". */
    return pt_arena_alloc(&cfg->arena, 1);
}

static int sni_cluster_on_new_connection(pt_session_t *s, void *fc)
{
    (void)fc;
    const char *sni = s->sni;
    if (sni == NULL && pt_conn_is_tls(s->conn))
        sni = pt_tls_sni(s->conn); /* terminated here: the handshake's server name */
    if (sni != NULL && sni[0] != '\0')
        s->cluster_override = sni;
    return PT_CONTINUE;
}

const pt_network_filter_ops_t pt_sni_cluster_filter = {
    .name = "envoy.filters.network.sni_cluster",
    .type_url = "type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster",
    .terminal = 0,
    .parse = sni_cluster_parse,
    .on_new_connection = sni_cluster_on_new_connection,
};
