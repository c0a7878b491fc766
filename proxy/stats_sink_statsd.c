/* envoy.stat_sinks.statsd (envoy.config.metrics.v3.StatsdSink): Envoy's statsd lines, without
 * tags (Envoy's statsd sink sends none; DogStatsD's `|#tag:value` form is another sink):
 *
 *   <prefix>.<dotted name>:<change since the last flush>|c   counters ever counted
 *   <prefix>.<dotted name>:<value>|g                          gauges ever not 0
 *   <prefix>.<dotted name>:<value>|ms                         each value a histogram
 *                                                             recorded in the interval
 *
 * prefix defaults to "envoy". Envoy sends a histogram's values as they are recorded, from the
 * worker; petrel sends them at the flush, from the main thread, out of the merged interval:
 * one `|ms` line a value (its bucket's value: exact below 32 ms, else within 3.2%), or, for
 * a bucket holding more than PER_BUCKET_LINES values, one line with statsd's sample rate
 * (`:48|ms|@0.01` counts as 100 values of 48).
 *
 * To an `address`: UDP datagrams of whole lines joined by '\n', each at most 1432 bytes (a
 * statsd server splits a datagram on newlines), sent without blocking; a datagram the
 * socket refuses (no buffer space, the server's port closed) is dropped and counted.
 *
 * To a `tcp_cluster_name`: one TCP connection from the main thread to a host of that
 * cluster (made at start-up), lines ending in '\n'. While there is no connection (being
 * made, or the collector down) the lines wait, up to MAX_TCP_QUEUED bytes, and go when one
 * is up; a flush that does not fit, or that finds more than MAX_TCP_QUEUED bytes still
 * queued on the connection (a slow collector), is dropped and counted. A connection that
 * fails or closes is made again at the next flush (the cluster's next host). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/address.h"
#include "proxy/buf.h"
#include "proxy/cluster.h"
#include "proxy/cluster_manager.h"
#include "proxy/conn.h"
#include "proxy/log.h"
#include "proxy/stats_sink.h"
#include "proxy/view.h"

#define DATAGRAM_MAX     1432
#define PER_BUCKET_LINES 16
#define MAX_TCP_QUEUED   (1u << 20)

typedef struct statsd_sink {
    pt_stats_sink_t super;
    char *prefix;
    int udp_fd;     /* -1 for TCP */
    pt_addr_t addr; /* UDP */
    char *cluster;  /* TCP */
    pt_cluster_manager_t *cm;
    pt_worker_t *worker;
    pt_conn_t *conn; /* TCP: NULL until made, and after it failed */
    int connected;
    pt_buf_t pending; /* TCP: lines of flushes while no connection was up (bounded) */
    unsigned pending_lines;
    /* Its own stats: what it could not deliver, and what it did. */
    pt_stat_t flushed, dropped_lines, send_failed, cx_connect_fail, cx_overflow;
} statsd_sink_t;

static void free_sink(pt_stats_sink_t *base)
{
    statsd_sink_t *s = (statsd_sink_t *)base;
    if (s->udp_fd >= 0)
        close(s->udp_fd);
    if (s->conn != NULL)
        pt_conn_close(s->conn, PT_CLOSE_NOW);
    pt_buf_dispose(&s->pending);
    free(s->prefix);
    free(s->cluster);
    free(s);
}

/* ---- lines ---------------------------------------------------------------------------- */

/* The name as a statsd line may carry it: ':', '|', '@' and line breaks would end a field
 * early, so they become '_' (Envoy's names never have them; a cluster name may). */
static size_t put_name(char *out, size_t len, const char *prefix, const char *name)
{
    int n = snprintf(out, len, "%s%s%s", prefix, prefix[0] ? "." : "", name);
    size_t k = n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
    for (size_t i = 0; i < k; i++)
        if (out[i] == ':' || out[i] == '|' || out[i] == '@' || out[i] == '\n' || out[i] == '\r')
            out[i] = '_';
    return k;
}

/* Calls emit(s, line, len) for each of the snapshot's lines. */
typedef void (*emit_fn)(statsd_sink_t *s, const char *line, size_t len);

static void each_line(statsd_sink_t *s, const pt_sink_snapshot_t *snap, emit_fn emit)
{
    char line[PT_STAT_NAME_MAX + 128];
    for (size_t i = 0; i < snap->n; i++) {
        const pt_sink_stat_t *st = &snap->stats[i];
        if (!st->used)
            continue;
        size_t k = put_name(line, sizeof(line) - 64, s->prefix, st->name);
        switch (st->kind) {
        case PT_STAT_COUNTER:
            k += (size_t)snprintf(line + k, sizeof(line) - k, ":%llu|c",
                                  (unsigned long long)st->delta);
            emit(s, line, k);
            break;
        case PT_STAT_GAUGE:
            k += (size_t)snprintf(line + k, sizeof(line) - k, ":%llu|g",
                                  (unsigned long long)st->value);
            emit(s, line, k);
            break;
        case PT_STAT_HISTOGRAM:
            for (uint32_t b = 0; b < st->nbuckets; b++) {
                const pt_sink_bucket_t *bk = &st->buckets[b];
                size_t kk = k;
                if (bk->count <= PER_BUCKET_LINES) {
                    kk += (size_t)snprintf(line + k, sizeof(line) - k, ":%llu|ms",
                                           (unsigned long long)bk->value);
                    for (uint64_t c = 0; c < bk->count; c++)
                        emit(s, line, kk);
                } else {
                    kk += (size_t)snprintf(line + k, sizeof(line) - k, ":%llu|ms|@%.9g",
                                           (unsigned long long)bk->value, 1.0 / (double)bk->count);
                    emit(s, line, kk);
                }
            }
            break;
        default:
            break;
        }
    }
}

/* ---- UDP ------------------------------------------------------------------------------ */

static char dgram[DATAGRAM_MAX];
static size_t dgram_len;
static unsigned dgram_lines;

static void udp_send(statsd_sink_t *s)
{
    if (dgram_len == 0)
        return;
    if (send(s->udp_fd, dgram, dgram_len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        pt_stat_inc(s->send_failed);
        pt_stat_add(s->dropped_lines, dgram_lines);
    }
    dgram_len = 0;
    dgram_lines = 0;
}

static void udp_emit(statsd_sink_t *s, const char *line, size_t len)
{
    if (len > DATAGRAM_MAX) {
        pt_stat_inc(s->dropped_lines); /* a name of over 1.4 KB: no datagram holds it */
        return;
    }
    if (dgram_len + (dgram_len ? 1 : 0) + len > DATAGRAM_MAX)
        udp_send(s);
    if (dgram_len > 0)
        dgram[dgram_len++] = '\n';
    memcpy(dgram + dgram_len, line, len);
    dgram_len += len;
    dgram_lines++;
}

/* ---- TCP ------------------------------------------------------------------------------ */

static pt_buf_t tcp_out;
static unsigned tcp_lines;

static void tcp_emit(statsd_sink_t *s, const char *line, size_t len)
{
    (void)s;
    if (pt_buf_append(&tcp_out, line, len) == 0 && pt_buf_append(&tcp_out, "\n", 1) == 0)
        tcp_lines++;
}

static void tcp_gone(statsd_sink_t *s)
{
    if (s->conn != NULL)
        pt_conn_close(s->conn, PT_CLOSE_NOW);
    s->conn = NULL;
    s->connected = 0;
}

static void tcp_on_connect(pt_conn_t *c, int status)
{
    statsd_sink_t *s = c->data;
    if (status < 0) {
        pt_stat_inc(s->cx_connect_fail);
        tcp_gone(s);
        return;
    }
    s->connected = 1;
    if (pt_buf_len(&s->pending) > 0) {
        pt_conn_write(c, &s->pending); /* what the flushes meanwhile had */
        s->pending_lines = 0;
    }
}

static void tcp_on_read(pt_conn_t *c)
{
    /* A statsd server sends nothing; whatever comes is dropped. A FIN means it closed. */
    statsd_sink_t *s = c->data;
    pt_buf_drain(&c->in, pt_buf_len(&c->in));
    if (c->flags & PT_CONN_F_EOF)
        tcp_gone(s);
}

static void tcp_on_drain(pt_conn_t *c)
{
    (void)c;
}

static void tcp_on_error(pt_conn_t *c, int status)
{
    (void)status;
    tcp_gone(c->data);
}

static const pt_conn_handler_t tcp_handler = {
    .on_read = tcp_on_read,
    .on_connect = tcp_on_connect,
    .on_drain = tcp_on_drain,
    .on_error = tcp_on_error,
};

static void tcp_connect(statsd_sink_t *s)
{
    static unsigned next_host;
    pt_view_t *view = s->cm != NULL ? pt_cluster_manager_view(s->cm) : NULL;
    pt_cluster_t *c = view != NULL ? pt_view_find_cluster(view, s->cluster) : NULL;
    if (c != NULL && c->nhosts > 0 && s->worker != NULL) {
        const pt_host_t *host = c->hosts[next_host++ % c->nhosts];
        int err = 0;
        s->conn = pt_cluster_connect(c, s->worker, host, &tcp_handler, s, &err);
    }
    pt_view_unref(view);
    if (s->conn == NULL)
        pt_stat_inc(s->cx_connect_fail);
}

/* ---- the flush ------------------------------------------------------------------------ */

static void flush(pt_stats_sink_t *base, const pt_sink_snapshot_t *snap)
{
    statsd_sink_t *s = (statsd_sink_t *)base;
    pt_stat_inc(s->flushed);
    if (s->udp_fd >= 0) {
        each_line(s, snap, udp_emit);
        udp_send(s);
        return;
    }
    each_line(s, snap, tcp_emit);
    if (s->connected && s->conn != NULL && pt_conn_can_write(s->conn)) {
        if (pt_conn_queued(s->conn) > MAX_TCP_QUEUED) {
            /* The collector reads slower than we flush: this flush is dropped. */
            pt_stat_inc(s->cx_overflow);
            pt_stat_add(s->dropped_lines, tcp_lines);
            pt_buf_dispose(&tcp_out);
        } else {
            pt_conn_write(s->conn, &tcp_out);
        }
    } else {
        /* No connection (yet, or any more): the lines wait for the next one, up to
         * MAX_TCP_QUEUED bytes; a flush that does not fit is dropped. */
        if (s->conn == NULL)
            tcp_connect(s); /* one being made (connect_timeout bounds it) is waited for */
        if (pt_buf_len(&s->pending) + pt_buf_len(&tcp_out) <= MAX_TCP_QUEUED) {
            pt_buf_move(&s->pending, &tcp_out);
            s->pending_lines += tcp_lines;
        } else {
            pt_stat_inc(s->cx_overflow);
            pt_stat_add(s->dropped_lines, tcp_lines);
            pt_buf_dispose(&tcp_out);
        }
    }
    tcp_lines = 0;
}

static void start(pt_stats_sink_t *base, pt_cluster_manager_t *cm, pt_worker_t *w);

static const pt_stats_sink_ops_t statsd_ops = {
    .type = "envoy.config.metrics.v3.StatsdSink",
    .start = start,
    .flush = flush,
    .free = free_sink,
};

/* ---- configuration -------------------------------------------------------------------- */

/* StatsdSink.address: a socket_address with an IP address and a port; its protocol (TCP or
 * UDP) does not matter, the lines go by UDP (as in Envoy). */
static int read_udp_address(pt_cfg_t *r, pt_addr_t *out)
{
    static const char *const address_unsupported[] = {"pipe", "envoy_internal_address", NULL};
    static const char *const sa_unsupported[] = {"named_port", "resolver_name", "ipv4_compat",
                                                 "network_namespace_filepath", NULL};
    static const char *const protocols[] = {"TCP", "UDP", NULL};
    int ok = -1;
    if (pt_cfg_enter(r, "address") <= 0)
        return -1;
    pt_cfg_unsupported(r, address_unsupported);
    int sa = pt_cfg_enter(r, "socket_address");
    if (sa > 0) {
        pt_cfg_unsupported(r, sa_unsupported);
        int proto;
        const char *ip;
        uint64_t port;
        pt_cfg_enum(r, "protocol", protocols, NULL, &proto, 0);
        int has_ip = pt_cfg_string(r, "address", &ip, NULL);
        int has_port = pt_cfg_uint(r, "port_value", &port, 0, 1, 65535);
        if (has_ip == 0)
            pt_cfg_error(r, "address", "is required");
        else if (has_ip > 0 && pt_addr_parse(out, ip, (unsigned)port) != 0)
            pt_cfg_error(r, "address", "\"%s\" is not an IP address", ip);
        else if (has_ip > 0 && has_port > 0)
            ok = 1;
        if (has_port == 0)
            pt_cfg_error(r, "port_value", "is required");
        pt_cfg_leave(r);
    } else if (sa == 0) {
        pt_cfg_error(r, "socket_address", "is required");
    }
    pt_cfg_leave(r);
    return ok;
}

pt_stats_sink_t *pt_statsd_sink_parse(pt_cfg_t *r, int make)
{
    size_t before = r->nerrors;
    static const char *const targets[] = {"address", "tcp_cluster_name", NULL};
    int which = pt_cfg_oneof(r, targets, 1);
    pt_addr_t addr;
    const char *cluster = NULL, *prefix = NULL;
    if (which == 0)
        read_udp_address(r, &addr);
    else if (which == 1 && pt_cfg_string(r, "tcp_cluster_name", &cluster, NULL) > 0 &&
             cluster[0] == '\0')
        pt_cfg_error(r, "tcp_cluster_name", "must not be empty");
    pt_cfg_string(r, "prefix", &prefix, NULL);
    if (r->nerrors != before || !make)
        return NULL;
    statsd_sink_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return NULL;
    }
    s->super.ops = &statsd_ops;
    s->udp_fd = -1;
    s->prefix = strdup(prefix != NULL && prefix[0] ? prefix : "envoy");
    if (which == 1)
        s->cluster = strdup(cluster);
    if (which == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = pt_addr_sockaddr(&addr, &ss);
        s->addr = addr;
        s->udp_fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        /* Connected: the kernel checks the address once, and a closed port on the server
         * shows as a refused send (counted) rather than silence. */
        if (s->udp_fd < 0 || connect(s->udp_fd, (struct sockaddr *)&ss, sl) != 0) {
            pt_cfg_error(r, "address", "cannot send there: %s", strerror(errno));
            free_sink(&s->super);
            return NULL;
        }
    }
    if (s->prefix == NULL || (which == 1 && s->cluster == NULL)) {
        pt_cfg_error(r, NULL, "out of memory");
        free_sink(&s->super);
        return NULL;
    }
    s->flushed = pt_stats_counter("statsd", NULL, NULL, "flushed");
    s->dropped_lines = pt_stats_counter("statsd", NULL, NULL, "dropped_lines");
    s->send_failed = pt_stats_counter("statsd", NULL, NULL, "send_failed");
    s->cx_connect_fail = pt_stats_counter("statsd", NULL, NULL, "cx_connect_fail");
    s->cx_overflow = pt_stats_counter("statsd", NULL, NULL, "cx_overflow");
    return &s->super;
}

static void start(pt_stats_sink_t *base, pt_cluster_manager_t *cm, pt_worker_t *w)
{
    statsd_sink_t *s = (statsd_sink_t *)base;
    s->cm = cm;
    s->worker = w;
    if (s->cluster != NULL)
        tcp_connect(s); /* up before the first flush */
}
