#include "discovery/cluster_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proxy/worker.h"

/* The connection could not be made: it goes now, and the owner is told why. */
static void fail_connect(pt_cluster_client_t *cc, const char *why)
{
    pt_conn_close(cc->conn, PT_CLOSE_NOW);
    cc->conn = NULL;
    cc->failed(cc->owner, why);
}

/* The codec's connection closed: the owner is told; codec and connection stay until
 * pt_cluster_client_close (not from inside their own callbacks). */
static void on_codec_closed(void *owner, pt_http_client_codec_t *codec)
{
    (void)codec;
    pt_cluster_client_t *cc = owner;
    cc->failed(cc->owner, "connection closed");
}

static void conn_connect(pt_conn_t *c, int status)
{
    pt_cluster_client_t *cc = c->data;
    char why[128];
    if (status < 0) {
        snprintf(why, sizeof(why), "connect failed: %s", strerror(-status));
        fail_connect(cc, why);
        return;
    }
    pt_cluster_t *cl = cc->cluster;
    /* The cluster's own HTTP/2 stats (cluster.<name>.http2.*) count the connection. */
    if (cc->http2 || cl->protocol == PT_UPSTREAM_HTTP2)
        cc->codec = pt_http2_client_codec_new(c, cl->http2, &cl->stats,
                                              on_codec_closed, cc);
    else
        cc->codec = pt_http1_client_codec.create(c, on_codec_closed, cc);
    if (cc->codec == NULL || cc->ready(cc->owner) != 0)
        cc->failed(cc->owner, "out of memory");
}

static void conn_error(pt_conn_t *c, int status)
{
    pt_cluster_client_t *cc = c->data;
    char why[128];
    snprintf(why, sizeof(why), "connection error: %s", strerror(status < 0 ? -status : EIO));
    fail_connect(cc, why);
}

static void conn_idle(pt_conn_t *c)
{
    (void)c; /* the codec takes the connection over once it is up */
}

static const pt_conn_handler_t connect_handler = {
    .on_read = conn_idle,
    .on_connect = conn_connect,
    .on_drain = conn_idle,
    .on_error = conn_error,
};

int pt_cluster_client_connect(pt_cluster_client_t *cc, pt_worker_t *w, char *err, size_t errlen)
{
    static unsigned next_host; /* round robin over connections: a reconnect tries the next */
    const pt_cluster_t *c = cc->cluster;
    if (c->nhosts == 0) {
        snprintf(err, errlen, "cluster %s has no hosts", c->name);
        return -1;
    }
    const pt_host_t *host = c->hosts[next_host++ % c->nhosts];
    int cerr = 0;
    cc->conn = pt_cluster_connect(c, w, host, &connect_handler, cc, &cerr);
    if (cc->conn == NULL) {
        snprintf(err, errlen, "connect to %s: %s", host->address_str, strerror(-cerr));
        return -1;
    }
    return 0;
}

void pt_cluster_client_close(pt_cluster_client_t *cc)
{
    if (cc->codec != NULL)
        cc->codec->ops->destroy(cc->codec);
    cc->codec = NULL;
    if (cc->conn != NULL)
        pt_conn_close(cc->conn, PT_CLOSE_NOW);
    cc->conn = NULL;
}
