/* envoy.filters.network.tcp_proxy: relays bytes between the downstream connection and one
 * upstream connection to a host of the configured cluster.
 *
 * Flow control: each direction moves whole chunks from one connection's read buffer to the
 * other's write queue; when that queue passes its high watermark, reading from the source
 * pauses until the queue drains to the low watermark. Memory per connection is therefore
 * bounded by roughly two buffer limits whatever the peers do.
 *
 * Half-close: a FIN from one side is passed on (after queued bytes) as a FIN to the other;
 * the session ends when both sides have sent FIN, or either resets, or the idle timeout. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/lb_hash.h"
#include "discovery/outlier.h"
#include "filters/filter.h"
#include "proxy/access_log.h"
#include "proxy/cluster.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/stats.h"
#include "proxy/time.h"
#include "proxy/worker.h"
#include "proxy/view.h"
#include "tls/transport.h"

#define MAX_TRIED_HOSTS 8

typedef struct tcp_proxy_stats {
    pt_stat_t downstream_cx_total;
    pt_stat_t downstream_cx_no_route;
    pt_stat_t downstream_cx_rx_bytes_total;
    pt_stat_t downstream_cx_tx_bytes_total;
    pt_stat_t downstream_flow_control_paused_reading_total;
    pt_stat_t downstream_flow_control_resumed_reading_total;
    pt_stat_t idle_timeout;
    pt_stat_t upstream_flush_total;
} tcp_proxy_stats_t;

typedef struct tcp_proxy_config {
    const char *stat_prefix;
    const char *cluster;
    uint64_t idle_timeout_ms; /* 0 = disabled */
    uint64_t max_connect_attempts;
    int hash_source_ip; /* hash_policy source_ip: the client's address is the hash */
    pt_access_log_t **access_logs;
    unsigned naccess_logs;
    unsigned access_log_needs; /* PT_FORMAT_NEEDS_* */
    tcp_proxy_stats_t stats;
} tcp_proxy_config_t;

/* Session state bits. */
enum {
    TP_DS_EOF = 1u << 0, /* downstream sent FIN */
    TP_US_EOF = 1u << 1, /* upstream sent FIN */
    TP_CONNECTED = 1u << 2,
    TP_DONE = 1u << 3,
};

typedef struct tcp_proxy {
    pt_session_t *session;
    const tcp_proxy_config_t *cfg;
    pt_cluster_t *cluster;
    pt_conn_t *ds;
    pt_conn_t *us;
    pt_host_t *host;
    pt_host_t *tried[MAX_TRIED_HOSTS];
    unsigned attempts;
    uint32_t state;
    ev_timer idle;
    uint64_t last_activity_ms;
    uint64_t us_start_ms;                  /* this upstream connection's connect began */
    uint64_t start_wall_us, start_mono_us; /* for the access log */
    uint32_t response_flags;               /* PT_RF(...) for the access log */
} tcp_proxy_t;

static const char *const tcp_proxy_unsupported[] = {
    "weighted_clusters", "on_demand", "metadata_match",
    "tunneling_config", "max_downstream_connection_duration", "access_log_flush_interval",
    "flush_access_log_on_connected", "access_log_options", "backoff_options",
    "proxy_protocol_tlvs", "upstream_connect_mode", "max_early_data_bytes", NULL};

static void *tcp_proxy_parse(pt_cfg_t *r, pt_config_t *cfg)
{
    size_t errors_before = r->nerrors;
    tcp_proxy_config_t *tc = pt_arena_alloc(&cfg->arena, sizeof(*tc));
    pt_cfg_unsupported(r, tcp_proxy_unsupported);
    const char *s;
    if (pt_cfg_string(r, "stat_prefix", &s, NULL) == 0 || (s && !s[0]))
        pt_cfg_error(r, "stat_prefix", "is required");
    tc->stat_prefix = pt_arena_strdup(&cfg->arena, s ? s : "");
    if (pt_cfg_string(r, "cluster", &s, NULL) == 0 || (s && !s[0]))
        pt_cfg_error(r, "cluster", "is required");
    else if (s != NULL && !cfg->has_cds && !cfg->has_lds && !pt_config_cluster_exists(cfg, s))
        /* Only when every cluster is static (a typo can then never be right); with CDS the
         * cluster may come later, and a missing one closes the connection, as in Envoy. */
        pt_cfg_error(r, "cluster", "unknown cluster \"%s\"", s);
    tc->cluster = pt_arena_strdup(&cfg->arena, s ? s : "");
    pt_cfg_duration_ms(r, "idle_timeout", &tc->idle_timeout_ms, 3600 * 1000);
    pt_cfg_uint(r, "max_connect_attempts", &tc->max_connect_attempts, 1, 1, UINT32_MAX);
    /* hash_policy (envoy.type.v3.HashPolicy, at most one): source_ip, for RING_HASH and
     * MAGLEV clusters. */
    int present;
    size_t n = pt_cfg_array(r, "hash_policy", &present);
    if (present) {
        if (n > 1)
            pt_cfg_error(r, NULL, "must have at most 1 item (Envoy takes one hash policy)");
        for (size_t i = 0; i < n && i < 1; i++) {
            if (pt_cfg_enter_index(r, i) <= 0)
                continue;
            static const char *const kinds[] = {"source_ip", "filter_state", NULL};
            int kind = pt_cfg_oneof(r, kinds, 1);
            if (kind == 0) {
                if (pt_cfg_enter(r, "source_ip") > 0)
                    pt_cfg_leave(r);
                tc->hash_source_ip = 1;
            } else if (kind == 1) {
                pt_cfg_error(r, "filter_state", "is not supported (petrel keeps no filter "
                                                "state objects to hash)");
                (void)pt_cfg_get(r, "filter_state");
            }
            pt_cfg_leave(r);
        }
        pt_cfg_leave_array(r);
    }
    pt_access_log_parse_list(r, "access_log", &cfg->arena, &tc->access_logs, &tc->naccess_logs);
    tc->access_log_needs = pt_access_logs_needs(tc->access_logs, tc->naccess_logs);
    return r->nerrors == errors_before ? tc : NULL;
}

static int tcp_proxy_prepare(void *fc, pt_config_t *cfg)
{
    (void)cfg;
    tcp_proxy_config_t *tc = fc;
    const char *t = "envoy_tcp_prefix";
#define TP_STAT(n) tc->stats.n = pt_stats_counter("tcp", t, tc->stat_prefix, #n)
    TP_STAT(downstream_cx_total);
    TP_STAT(downstream_cx_no_route);
    TP_STAT(downstream_cx_rx_bytes_total);
    TP_STAT(downstream_cx_tx_bytes_total);
    TP_STAT(downstream_flow_control_paused_reading_total);
    TP_STAT(downstream_flow_control_resumed_reading_total);
    TP_STAT(idle_timeout);
    TP_STAT(upstream_flush_total);
#undef TP_STAT
    return 0;
}

/* ---- teardown -------------------------------------------------------------------- */

static void upstream_released(tcp_proxy_t *tp)
{
    if (tp->us == NULL)
        return;
    pt_stat_dec(tp->cluster->stats.upstream_cx_active);
    pt_stat_inc(tp->cluster->stats.upstream_cx_destroy);
    pt_hist_record(tp->cluster->stats.upstream_cx_length_ms, pt_loop_ms() - tp->us_start_ms);
    atomic_fetch_sub_explicit(&tp->host->cx_active, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&tp->host->rq_active, 1, memory_order_relaxed);
    pt_breaker_release_cx(&tp->cluster->breakers[0]);
    tp->us = NULL;
}

/* The session's hold on its host (ORIGINAL_DST hosts are referenced while used). */
static void host_release(tcp_proxy_t *tp)
{
    if (tp->host != NULL)
        pt_cluster_host_done(tp->cluster, tp->host);
    tp->host = NULL;
}

/* Ends everything. `ds_how`/`us_how` say how each side closes. */
/* One access log entry per connection, in Envoy's TCP terms: bytes from and to the client,
 * the upstream, the flags (UF, UO, UH, NR), the TLS identity when terminated here. */
static void write_access_log(tcp_proxy_t *tp)
{
    pt_session_t *s = tp->session;
    pt_stream_info_t si;
    memset(&si, 0, sizeof(si));
    si.start_wall_us = tp->start_wall_us;
    si.start_mono_us = tp->start_mono_us;
    si.end_mono_us = pt_loop_us();
    si.bytes_received = tp->ds->rx_bytes;
    si.bytes_sent = tp->ds->tx_bytes;
    si.response_flags = tp->response_flags;
    si.upstream_host = tp->host ? tp->host->address_str : NULL;
    si.upstream_cluster = tp->cluster ? tp->cluster->name : NULL;
    si.cluster_metadata = tp->cluster ? tp->cluster->metadata : NULL;
    si.upstream_cluster_ref = tp->cluster;
    si.upstream_host_ref = tp->cluster && tp->cluster->type != PT_CLUSTER_ORIGINAL_DST ? tp->host
                                                                                       : NULL;
    si.downstream_remote = tp->ds->peer;
    si.downstream_direct_remote = tp->ds->peer;
    si.downstream_local = s->local;
    si.listener_metadata = s->listener->metadata;
    si.upstream_attempts = tp->attempts;
    si.requested_server_name = s->sni;
    if (pt_conn_is_tls(tp->ds)) {
        const pt_tls_identity_t *peer = pt_tls_peer_identity(tp->ds);
        if (peer != NULL) {
            si.downstream_peer_uri_san = peer->nuri ? peer->uri_sans[0] : NULL;
            si.downstream_peer_subject = peer->subject;
        }
        si.downstream_local_uri_san = pt_tls_local_uri_san(tp->ds);
        if (si.requested_server_name == NULL)
            si.requested_server_name = pt_tls_sni(tp->ds);
    }
    pt_arena_t arena = {0};
    pt_peer_cert_t pc;
    if ((tp->cfg->access_log_needs & PT_FORMAT_NEEDS_PEER_CERT) && pt_conn_is_tls(tp->ds)) {
        pt_arena_init_small(&arena);
        if (pt_tls_peer_cert_fill(tp->ds, &arena, &pc) == 0)
            si.downstream_peer_cert = &pc;
    }
    for (unsigned i = 0; i < tp->cfg->naccess_logs; i++)
        pt_access_log_write(tp->cfg->access_logs[i], &si);
    pt_arena_dispose(&arena);
}

static void tp_finish(tcp_proxy_t *tp, pt_close_how_t ds_how, pt_close_how_t us_how)
{
    if (tp->state & TP_DONE)
        return;
    tp->state |= TP_DONE;
    if (tp->cfg->naccess_logs > 0)
        write_access_log(tp);
    ev_timer_stop(tp->session->worker->loop, &tp->idle);
    if (tp->us != NULL) {
        if (pt_conn_queued(tp->us) > 0 && us_how == PT_CLOSE_FLUSH)
            pt_stat_inc(tp->cfg->stats.upstream_flush_total);
        pt_conn_close(tp->us, us_how);
        upstream_released(tp);
    }
    host_release(tp);
    pt_conn_close(tp->ds, ds_how);
    pt_session_end(tp->session);
    free(tp);
}

static void maybe_done(tcp_proxy_t *tp)
{
    /* Both directions ended with FIN: flush what is queued (the FINs go out after it). */
    if ((tp->state & (TP_DS_EOF | TP_US_EOF)) == (TP_DS_EOF | TP_US_EOF))
        tp_finish(tp, PT_CLOSE_FLUSH, PT_CLOSE_FLUSH);
}

/* ---- relaying -------------------------------------------------------------------- */

static void relay(tcp_proxy_t *tp, pt_conn_t *from, pt_conn_t *to, int downstream_to_upstream)
{
    size_t n = pt_buf_len(&from->in);
    if (n > 0) {
        tp->last_activity_ms = pt_loop_ms();
        if (downstream_to_upstream) {
            pt_stat_add(tp->cfg->stats.downstream_cx_rx_bytes_total, n);
            pt_stat_add(tp->cluster->stats.upstream_cx_tx_bytes_total, n);
        } else {
            pt_stat_add(tp->cfg->stats.downstream_cx_tx_bytes_total, n);
            pt_stat_add(tp->cluster->stats.upstream_cx_rx_bytes_total, n);
        }
        pt_conn_write(to, &from->in);
        if (to->flags & PT_CONN_F_ABOVE_HIGH) {
            pt_conn_pause_read(from);
            if (downstream_to_upstream)
                pt_stat_inc(tp->cfg->stats.downstream_flow_control_paused_reading_total);
        }
    }
    if (from->flags & PT_CONN_F_EOF) {
        tp->state |= downstream_to_upstream ? TP_DS_EOF : TP_US_EOF;
        /* The FIN travels on. When this ends the second direction, both connections close
         * now (after what is queued), and the close sends it: no separate shutdown call. */
        if ((tp->state & (TP_DS_EOF | TP_US_EOF)) != (TP_DS_EOF | TP_US_EOF))
            pt_conn_shutdown(to);
        maybe_done(tp);
    }
}

static void ds_on_read(pt_conn_t *c)
{
    tcp_proxy_t *tp = c->data;
    if (!(tp->state & TP_CONNECTED)) {
        /* Still connecting: keep the bytes (and a FIN) for the upstream, holding at most one
         * buffer limit. Reading goes on below that, so a client reset is still noticed. */
        if (pt_buf_len(&c->in) >= c->high_watermark)
            pt_conn_pause_read(c);
        return;
    }
    relay(tp, c, tp->us, 1);
}

static void us_on_read(pt_conn_t *c)
{
    tcp_proxy_t *tp = c->data;
    relay(tp, c, tp->ds, 0);
}

static void ds_on_drain(pt_conn_t *c)
{
    /* Downstream's queue drained: read from upstream again. */
    tcp_proxy_t *tp = c->data;
    if (tp->us != NULL && !(tp->state & TP_US_EOF))
        pt_conn_resume_read(tp->us);
}

static void us_on_drain(pt_conn_t *c)
{
    tcp_proxy_t *tp = c->data;
    if (!(tp->state & TP_DS_EOF)) {
        pt_conn_resume_read(tp->ds);
        pt_stat_inc(tp->cfg->stats.downstream_flow_control_resumed_reading_total);
    }
}

static void ds_on_error(pt_conn_t *c, int status)
{
    tcp_proxy_t *tp = c->data;
    pt_debug("tcp_proxy: downstream error: %s", strerror(-status));
    pt_stat_inc(tp->cluster->stats.upstream_cx_destroy_local);
    tp_finish(tp, PT_CLOSE_NOW, PT_CLOSE_FLUSH);
}

static void us_on_error(pt_conn_t *c, int status)
{
    tcp_proxy_t *tp = c->data;
    pt_debug("tcp_proxy: upstream error: %s", strerror(-status));
    pt_stat_inc(tp->cluster->stats.upstream_cx_destroy_remote);
    tp_finish(tp, PT_CLOSE_FLUSH, PT_CLOSE_NOW);
}

static void us_on_connect(pt_conn_t *c, int status);
static void ignore_connect(pt_conn_t *c, int status)
{
    (void)c;
    (void)status;
}

static const pt_conn_handler_t ds_handler = {
    .on_read = ds_on_read,
    .on_connect = ignore_connect,
    .on_drain = ds_on_drain,
    .on_error = ds_on_error,
};

static const pt_conn_handler_t us_handler = {
    .on_read = us_on_read,
    .on_connect = us_on_connect,
    .on_drain = us_on_drain,
    .on_error = us_on_error,
};

static void on_idle_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    tcp_proxy_t *tp = t->data;
    uint64_t now = pt_now_ms(), deadline = tp->last_activity_ms + tp->cfg->idle_timeout_ms;
    if (now < deadline) {
        /* Activity since the timer was armed: sleep for the rest (cheaper than re-arming
         * the timer on every read). */
        ev_timer_set(t, (double)(deadline - now) / 1000.0, 0.);
        ev_timer_start(loop, t);
        return;
    }
    pt_stat_inc(tp->cfg->stats.idle_timeout);
    tp_finish(tp, PT_CLOSE_FLUSH, PT_CLOSE_FLUSH);
}

/* ---- connecting ------------------------------------------------------------------ */

static void try_connect(tcp_proxy_t *tp);

static void connect_failed(tcp_proxy_t *tp, int status)
{
    pt_cluster_stats_t *cs = &tp->cluster->stats;
    if (status == -ETIMEDOUT)
        pt_stat_inc(cs->upstream_cx_connect_timeout);
    pt_stat_inc(cs->upstream_cx_connect_fail);
    atomic_fetch_add_explicit(&tp->host->cx_connect_fail, 1, memory_order_relaxed);
    pt_outlier_report(tp->cluster, tp->host, PT_OUTLIER_CONNECT_FAILED, 0);
    pt_debug("tcp_proxy: connect to %s failed: %s", tp->host->address_str, strerror(-status));
    pt_conn_close(tp->us, PT_CLOSE_NOW);
    upstream_released(tp);
    if (tp->attempts >= tp->cfg->max_connect_attempts) {
        pt_stat_inc(cs->upstream_cx_connect_attempts_exceeded);
        tp->response_flags |= PT_RF(UPSTREAM_CONNECTION_FAILURE);
        tp_finish(tp, PT_CLOSE_NOW, PT_CLOSE_NOW);
        return;
    }
    try_connect(tp);
}

static void us_on_connect(pt_conn_t *c, int status)
{
    tcp_proxy_t *tp = c->data;
    if (status != 0) {
        connect_failed(tp, status);
        return;
    }
    tp->state |= TP_CONNECTED;
    pt_outlier_report(tp->cluster, tp->host, PT_OUTLIER_CONNECT_SUCCESS_FINAL, 0);
    tp->last_activity_ms = pt_loop_ms();
    pt_hist_record(tp->cluster->stats.upstream_cx_connect_ms,
                   tp->last_activity_ms - tp->us_start_ms);
    /* Anything the client sent while we connected (and a FIN) goes out now. */
    if (pt_buf_len(&tp->ds->in) > 0 || (tp->ds->flags & PT_CONN_F_EOF))
        relay(tp, tp->ds, tp->us, 1);
    /* Reading was paused if the held bytes reached the limit; resume unless relaying them
     * just filled the upstream queue (its drain resumes then). */
    if (!(tp->state & TP_DONE) && !(tp->ds->flags & PT_CONN_F_EOF) &&
        !(tp->us->flags & PT_CONN_F_ABOVE_HIGH))
        pt_conn_resume_read(tp->ds);
}

static void try_connect(tcp_proxy_t *tp)
{
    pt_session_t *s = tp->session;
    /* Envoy's source_ip hash: the client's IP without its port. */
    pt_lb_context_t ctx = {.original_dst = s->local_restored ? &s->local : NULL};
    if (tp->cfg->hash_source_ip &&
        (tp->ds->peer.sa.sa_family == AF_INET || tp->ds->peer.sa.sa_family == AF_INET6)) {
        char ip[64];
        pt_addr_format_ip(&tp->ds->peer, ip, sizeof(ip));
        ctx.has_hash = 1;
        ctx.hash = pt_xxhash64(ip, strlen(ip), 0);
    }
    pt_host_t *h = pt_cluster_pick_host(tp->cluster, s->worker, &ctx, tp->tried,
                                        tp->attempts < MAX_TRIED_HOSTS ? tp->attempts
                                                                       : MAX_TRIED_HOSTS);
    if (h == NULL) {
        tp->response_flags |= PT_RF(NO_HEALTHY_UPSTREAM);
        pt_stat_inc(tp->cluster->stats.upstream_cx_none_healthy);
        tp_finish(tp, PT_CLOSE_NOW, PT_CLOSE_NOW);
        return;
    }
    host_release(tp); /* the previous attempt's */
    tp->host = h;
    /* The cluster's max_connections (DEFAULT priority, and the per-host limit) bound TCP
     * connections too; over them the client is closed, as Envoy's tcp_proxy does. */
    pt_breaker_t *b = &tp->cluster->breakers[0];
    int host_full = b->per_host_max_connections > 0 &&
                    atomic_load_explicit(&h->cx_active, memory_order_relaxed) >=
                        b->per_host_max_connections;
    if (host_full || !pt_breaker_try_cx(b)) {
        tp->response_flags |= PT_RF(UPSTREAM_OVERFLOW);
        pt_stat_inc(tp->cluster->stats.upstream_cx_overflow);
        tp_finish(tp, PT_CLOSE_NOW, PT_CLOSE_NOW);
        return;
    }
    if (tp->attempts < MAX_TRIED_HOSTS)
        tp->tried[tp->attempts] = h;
    tp->attempts++;
    tp->us_start_ms = pt_loop_ms();
    int err = 0;
    pt_conn_t *us = pt_cluster_connect(tp->cluster, s->worker, h, &us_handler, tp, &err);
    pt_stat_inc(tp->cluster->stats.upstream_cx_total);
    if (us == NULL) {
        pt_breaker_release_cx(b);
        pt_stat_inc(tp->cluster->stats.upstream_cx_connect_fail);
        tp->response_flags |= PT_RF(UPSTREAM_CONNECTION_FAILURE);
        static pt_log_limit_t limit;
        pt_log_limited(&limit, PT_LOG_WARN, "tcp_proxy: upstream %s: cannot open a connection: %s",
                       h->address_str, strerror(-err));
        tp_finish(tp, PT_CLOSE_NOW, PT_CLOSE_NOW);
        return;
    }
    pt_stat_inc(tp->cluster->stats.upstream_cx_active);
    atomic_fetch_add_explicit(&h->cx_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->cx_active, 1, memory_order_relaxed);
    /* A session is the host's active request, as in Envoy: LEAST_REQUEST balances on it. */
    atomic_fetch_add_explicit(&h->rq_active, 1, memory_order_relaxed);
    tp->us = us;
}

static void tcp_proxy_abort(pt_session_t *s)
{
    tp_finish(s->terminal, PT_CLOSE_NOW, PT_CLOSE_NOW);
}

static int tcp_proxy_on_new_connection(pt_session_t *s, void *fc)
{
    const tcp_proxy_config_t *cfg = fc;
    pt_stat_inc(cfg->stats.downstream_cx_total);
    const char *name = s->cluster_override ? s->cluster_override : cfg->cluster;
    pt_cluster_t *cluster = s->view ? pt_view_find_cluster(s->view->view, name) : NULL;
    if (cluster == NULL) {
        pt_stat_inc(cfg->stats.downstream_cx_no_route);
        pt_conn_close(s->conn, PT_CLOSE_NOW);
        pt_session_end(s);
        return PT_STOP;
    }
    tcp_proxy_t *tp = calloc(1, sizeof(*tp));
    if (tp == NULL) {
        pt_conn_close(s->conn, PT_CLOSE_NOW);
        pt_session_end(s);
        return PT_STOP;
    }
    tp->session = s;
    tp->cfg = cfg;
    tp->cluster = cluster;
    tp->ds = s->conn;
    tp->start_mono_us = pt_loop_us();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tp->start_wall_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    s->terminal = tp;
    s->abort = tcp_proxy_abort;
    /* Downstream bytes are held in ds->in until the upstream is connected (ds_on_read). The
     * socket stays watched meanwhile: with reading paused a client that resets or gives up
     * during a slow connect would hold both connections until the connect timeout. */
    pt_conn_start(tp->ds, &ds_handler, tp);
    if (cfg->idle_timeout_ms > 0) {
        ev_timer_init(&tp->idle, on_idle_timer, (double)cfg->idle_timeout_ms / 1000.0, 0.);
        tp->idle.data = tp;
        tp->last_activity_ms = pt_loop_ms();
        ev_timer_start(s->worker->loop, &tp->idle);
    }
    try_connect(tp);
    return PT_STOP;
}

const pt_network_filter_ops_t pt_tcp_proxy_filter = {
    .name = "envoy.filters.network.tcp_proxy",
    .type_url = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    .terminal = 1,
    .parse = tcp_proxy_parse,
    .prepare = tcp_proxy_prepare,
    .on_new_connection = tcp_proxy_on_new_connection,
};
