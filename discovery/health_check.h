/* Active health checking (envoy.config.core.v3.HealthCheck): the main thread probes every
 * host of a cluster on a schedule and marks hosts healthy or unhealthy; load balancers on
 * the workers skip unhealthy hosts (the PT_HOST_FAILED_ACTIVE_HC bit).
 *
 * Threading: everything here runs on the main thread. Probes are pt_conn connections on the
 * server's main worker (whose loop is the main loop); the verdicts reach the workers only
 * through the hosts' atomic health bits, which the load balancer reads on each pick.
 *
 * Semantics follow Envoy (see docs/health_check.md):
 *  - While a cluster has health checks, its hosts start with PT_HOST_FAILED_ACTIVE_HC set;
 *    the first check of a host that succeeds clears it at once, whatever healthy_threshold
 *    says ("the first success marks a host healthy at start").
 *  - Afterwards a host turns unhealthy after unhealthy_threshold consecutive failures of a
 *    network kind (connect failure, reset, timeout) or of an HTTP status listed in
 *    retriable_statuses, and at once on any other HTTP status outside expected_statuses; it
 *    turns healthy again after healthy_threshold consecutive successes.
 *  - With several health checks on one cluster a host is healthy only while it passes all.
 *  - The next check is due after interval (healthy), unhealthy_interval (unhealthy), the edge
 *    intervals while a transition is pending, or no_traffic_interval while the cluster has
 *    never opened an upstream connection; plus interval_jitter and interval_jitter_percent. */
#ifndef PT_HEALTH_CHECK_H
#define PT_HEALTH_CHECK_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/arena.h"
#include "proxy/config_reader.h"
#include "proxy/header_mutation.h"

typedef struct pt_config pt_config_t;
typedef struct pt_worker pt_worker_t;
typedef struct pt_health_check_config pt_health_check_config_t;
typedef struct pt_health_checker pt_health_checker_t;

typedef enum pt_hc_kind {
    PT_HC_HTTP, /* http_health_check */
    PT_HC_TCP,  /* tcp_health_check */
    PT_HC_GRPC, /* grpc_health_check: grpc.health.v1.Health/Check over HTTP/2 */
} pt_hc_kind_t;

/* type.v3.Int64Range: [start, end). */
typedef struct pt_hc_range {
    int64_t start, end;
} pt_hc_range_t;

/* HealthCheck.Payload, decoded (hex text or base64 binary). */
typedef struct pt_hc_payload {
    const unsigned char *data;
    size_t len;
} pt_hc_payload_t;

struct pt_health_check_config {
    /* HealthCheck, in milliseconds. Intervals that are not set hold their defaults. */
    uint64_t timeout_ms;
    uint64_t interval_ms;
    uint64_t initial_jitter_ms;  /* 0: first check at once */
    uint64_t interval_jitter_ms; /* 0: none */
    uint32_t interval_jitter_percent;
    uint32_t unhealthy_threshold;
    uint32_t healthy_threshold;
    int reuse_connection;                    /* default 1 */
    uint64_t no_traffic_interval_ms;         /* default 60000 */
    uint64_t no_traffic_healthy_interval_ms; /* 0: not set (no_traffic_interval applies) */
    uint64_t unhealthy_interval_ms;          /* default interval */
    uint64_t unhealthy_edge_interval_ms;     /* default unhealthy_interval */
    uint64_t healthy_edge_interval_ms;       /* default interval */
    int always_log_health_check_failures;
    int always_log_health_check_success;
    /* event_log_path, or the event_logger's envoy.health_check.event_sinks.file: where
     * HealthCheckEvent JSON lines go (NULL: nowhere). */
    const char *event_log_path;
    pt_hc_kind_t kind;

    struct {
        const char *host;   /* NULL: the cluster's name */
        const char *path;
        const char *method; /* "GET" unless set */
        /* request_headers_to_add and _to_remove. A check has no downstream request:
         * operators that read one render empty (as in Envoy). */
        pt_header_mutations_t headers;
        const pt_hc_range_t *expected; /* default [200, 201) */
        unsigned nexpected;
        const pt_hc_range_t *retriable;
        unsigned nretriable;
    } http;

    struct {
        const char *service_name; /* "" unless set */
        const char *authority;    /* NULL: the cluster's name */
        pt_header_mutations_t metadata; /* initial_metadata */
    } grpc;

    struct {
        pt_hc_payload_t send; /* len 0: nothing to send */
        const pt_hc_payload_t *receive;
        unsigned nreceive; /* 0 (and no send): connect-only */
    } tcp;
};

/* Parses the `field` list of HealthCheck (the reader is inside the cluster). Sets *out and
 * *n (0 when absent). Returns 0 or -1 with errors recorded. */
int pt_health_checks_parse(pt_cfg_t *r, pt_arena_t *a, const char *field,
                           pt_health_check_config_t **out, unsigned *n);

/* The checker of the main thread. Probes are connections of `main_worker`, whose loop must
 * be the main loop. NULL when out of memory. */
pt_health_checker_t *pt_health_checker_start(pt_worker_t *main_worker);
struct pt_view;
/* Checks every host of every cluster of `view` that has health checks, from the next loop
 * turn (after initial_jitter), registering the cluster.<name>.health_check.* stats. Work
 * follows what changed since the last view: a cluster whose version is the same keeps
 * everything; a new version with the same checks keeps the sessions (schedule, counts,
 * verdict) of the hosts it still lists and starts sessions for new ones (failed until their
 * first check passes); changed checks start over, each host keeping its current verdict
 * until its first result; a cluster gone or no longer checked stops, and its hosts are no
 * longer failed by it. 0, or -1 when out of memory (some hosts are then not checked). */
int pt_health_checker_update(pt_health_checker_t *hc, const struct pt_view *view);
/* Stops every timer, closes every probe connection (freed by the worker's reaper) and frees
 * the checker. NULL is fine. The hosts keep their last health bits. */
void pt_health_checker_stop(pt_health_checker_t *hc);
struct pt_cluster;
struct pt_host;
/* Any worker: the upstream answered `x-envoy-immediate-health-check-fail` (a peer proxy
 * failing its own health checks, draining say). With active health checking on the cluster,
 * the host fails its checks at once (from the main thread) and comes back through them;
 * health_check.passive_failure counts it. Without, nothing happens, as in Envoy. */
void pt_health_check_passive_failure(const struct pt_cluster *c, struct pt_host *h);

/* The same decision rules as the checker, exposed for unit tests. */
/* Is `status` inside one of the ranges? */
int pt_hc_status_in(const pt_hc_range_t *ranges, unsigned n, int64_t status);
/* TCP receive matching: is every payload found in `data`, in order (not necessarily
 * contiguous)? An empty list matches anything. */
int pt_hc_tcp_match(const pt_hc_payload_t *receive, unsigned n, const unsigned char *data,
                    size_t len);

#endif
