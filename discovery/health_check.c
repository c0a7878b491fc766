/* Active health checking: config parsing and the main-thread checker.
 *
 * One session per (host, health check). A session is a small state machine driven by two
 * timers: the interval timer starts an attempt, the timeout timer ends one that took too
 * long. An attempt ends exactly once, through handle_success or handle_failure, which update
 * the session's verdict, fold the verdicts of the host's sessions into its
 * PT_HOST_FAILED_ACTIVE_HC and PT_HOST_DEGRADED_ACTIVE_HC bits, and arm the interval timer for the next attempt. Probe
 * connections belong to the main worker; a session closes its connection before it drops
 * the pointer, so no connection callback ever sees a stale session. */
#include "discovery/health_check.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "discovery/health_check_grpc.h"
#include "discovery/outlier.h"
#include "proxy/cluster.h"
#include "proxy/view.h"
#include "proxy/conn.h"
#include "proxy/formatter.h"
#include "proxy/http1_parser.h"
#include "proxy/log.h"
#include "proxy/random.h"
#include "proxy/stats.h"
#include "proxy/time.h"
#include "proxy/worker.h"
#include "tls/context.h"
#include "tls/transport.h"

#define HC_MAX_HEAD_BYTES (64 * 1024)  /* a health check response head larger than this fails */
#define HC_MAX_HEADERS    64
#define HC_MAX_TCP_BYTES  (256 * 1024) /* TCP response bytes buffered while looking for a match */
#define HC_USER_AGENT     "Envoy/HC"   /* what Envoy sends: upstream filters key on it */

/* ---- config ---------------------------------------------------------------------------- */

static const char *const hc_unsupported[] = {"alt_port",
                                             "custom_health_check",
                                             "event_service",
                                             "tls_options",
                                             "transport_socket_match_criteria",
                                             NULL};
static const char *const http_unsupported[] = {"send", "receive", "service_name_matcher",
                                               "response_buffer_size", NULL};
static const char *const codec_names[] = {"HTTP1", NULL};
static const char *const codec_known[] = {"HTTP2", "HTTP3", NULL};
/* envoy.config.core.v3.RequestMethod; index 0 (unspecified) means GET. */
static const char *const method_names[] = {"METHOD_UNSPECIFIED", "GET",     "HEAD",
                                           "POST",               "PUT",     "DELETE",
                                           "OPTIONS",            "TRACE",   "PATCH",
                                           NULL};
static const char *const method_known[] = {"CONNECT", NULL};

/* A duration that must be > 0 when given (Envoy's `gt {}`); `required` reports absence. */
static int positive_duration(pt_cfg_t *r, const char *field, uint64_t *out, uint64_t def,
                             int required)
{
    int rc = pt_cfg_duration_ms(r, field, out, def);
    if (rc == 0 && required)
        pt_cfg_error(r, field, "is required");
    if (rc > 0 && *out == 0) {
        pt_cfg_error(r, field, "must be greater than 0");
        *out = def;
        return -1;
    }
    return rc;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* HealthCheck.Payload (reader inside it): exactly one of text (hex) or binary (base64). */
static void parse_payload(pt_cfg_t *r, pt_arena_t *a, pt_hc_payload_t *out)
{
    static const char *const kinds[] = {"text", "binary", NULL};
    memset(out, 0, sizeof(*out));
    if (pt_cfg_oneof(r, kinds, 1) < 0)
        return;
    const char *s;
    if (pt_cfg_string(r, "text", &s, NULL) > 0) {
        size_t len = strlen(s);
        if (len == 0) {
            pt_cfg_error(r, "text", "must not be empty");
            return;
        }
        unsigned char *d = pt_arena_alloc(a, len / 2 + 1);
        if (d == NULL)
            return;
        int ok = len % 2 == 0;
        for (size_t i = 0; ok && i < len; i += 2) {
            int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
            ok = hi >= 0 && lo >= 0;
            if (ok)
                d[i / 2] = (unsigned char)(hi << 4 | lo);
        }
        if (!ok) {
            char q[128];
            pt_cfg_quote(s, q, sizeof(q));
            pt_cfg_error(r, "text", "%s is not a hex string (an even number of hex digits)", q);
            return;
        }
        out->data = d;
        out->len = len / 2;
    } else if (pt_cfg_string(r, "binary", &s, NULL) > 0) {
        unsigned char *d = pt_arena_alloc(a, strlen(s) / 4 * 3 + 4);
        long len = d ? pt_base64_decode(s, d) : -1;
        if (len < 0) {
            pt_cfg_error(r, "binary", "is not valid base64");
            return;
        }
        if (len == 0) {
            pt_cfg_error(r, "binary", "must not be empty");
            return;
        }
        out->data = d;
        out->len = (size_t)len;
    }
}

/* A list of type.v3.Int64Range status ranges, each within [100, 600). */
static void parse_ranges(pt_cfg_t *r, pt_arena_t *a, const char *field,
                         const pt_hc_range_t **out, unsigned *nout)
{
    int present;
    size_t n = pt_cfg_array(r, field, &present);
    if (!present)
        return;
    pt_hc_range_t *rs = pt_arena_alloc(a, (n ? n : 1) * sizeof(*rs));
    unsigned k = 0;
    for (size_t i = 0; rs != NULL && i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        uint64_t start, end;
        int src = pt_cfg_uint(r, "start", &start, 0, 100, 599);
        int erc = pt_cfg_uint(r, "end", &end, 0, 101, 600);
        if (src == 0)
            pt_cfg_error(r, "start", "is required");
        if (erc == 0)
            pt_cfg_error(r, "end", "is required");
        if (src > 0 && erc > 0) {
            if (start >= end) {
                pt_cfg_error(r, NULL,
                             "start (%llu) must be less than end (%llu): the range is "
                             "[start, end)",
                             (unsigned long long)start, (unsigned long long)end);
            } else {
                rs[k].start = (int64_t)start;
                rs[k].end = (int64_t)end;
                k++;
            }
        }
        pt_cfg_leave(r);
    }
    pt_cfg_leave_array(r);
    *out = rs;
    *nout = k;
}

static void parse_http(pt_cfg_t *r, pt_arena_t *a, pt_health_check_config_t *hc)
{
    pt_cfg_unsupported(r, http_unsupported);
    const char *s;
    char q[300];
    if (pt_cfg_string(r, "host", &s, NULL) > 0) {
        if (strpbrk(s, "\r\n") != NULL)
            pt_cfg_error(r, "host", "must not contain CR or LF");
        else if (s[0] != '\0')
            hc->http.host = pt_arena_strdup(a, s);
    }
    int prc = pt_cfg_string(r, "path", &s, NULL);
    if (prc == 0 || (prc > 0 && s[0] == '\0')) {
        pt_cfg_error(r, "path", "is required");
    } else if (prc > 0) {
        int bad = 0;
        for (const char *p = s; *p && !bad; p++)
            bad = (unsigned char)*p <= ' ' || *p == 0x7f;
        pt_cfg_quote(s, q, sizeof(q));
        if (bad)
            pt_cfg_error(r, "path", "%s must not contain spaces or control characters", q);
        else
            hc->http.path = pt_arena_strdup(a, s);
    }

    int codec;
    pt_cfg_enum(r, "codec_client_type", codec_names, codec_known, &codec, 0);
    int method;
    pt_cfg_enum(r, "method", method_names, method_known, &method, 0);
    hc->http.method = method_names[method == 0 ? 1 : method];

    pt_header_mutations_parse(r, a, "request_headers_to_add", "request_headers_to_remove",
                              &hc->http.headers);

    parse_ranges(r, a, "expected_statuses", &hc->http.expected, &hc->http.nexpected);
    if (hc->http.nexpected == 0) {
        /* Envoy's default (also for an empty list): 200 only. */
        static const pt_hc_range_t only_200 = {200, 201};
        hc->http.expected = &only_200;
        hc->http.nexpected = 1;
    }
    parse_ranges(r, a, "retriable_statuses", &hc->http.retriable, &hc->http.nretriable);
}

static void parse_tcp(pt_cfg_t *r, pt_arena_t *a, pt_health_check_config_t *hc)
{
    if (pt_cfg_enter(r, "send") > 0) {
        parse_payload(r, a, &hc->tcp.send);
        pt_cfg_leave(r);
    }
    int present;
    size_t n = pt_cfg_array(r, "receive", &present);
    if (present) {
        pt_hc_payload_t *rs = pt_arena_alloc(a, (n ? n : 1) * sizeof(*rs));
        for (size_t i = 0; rs != NULL && i < n; i++) {
            if (pt_cfg_enter_index(r, i) > 0) {
                parse_payload(r, a, &rs[hc->tcp.nreceive]);
                if (rs[hc->tcp.nreceive].len > 0)
                    hc->tcp.nreceive++;
                pt_cfg_leave(r);
            }
        }
        hc->tcp.receive = rs;
        pt_cfg_leave_array(r);
    }
}

static void parse_grpc(pt_cfg_t *r, pt_arena_t *a, pt_health_check_config_t *hc)
{
    const char *s;
    hc->grpc.service_name = "";
    if (pt_cfg_string(r, "service_name", &s, NULL) > 0)
        hc->grpc.service_name = pt_arena_strdup(a, s);
    if (pt_cfg_string(r, "authority", &s, NULL) > 0 && s[0] != '\0') {
        if (strpbrk(s, "\r\n") != NULL)
            pt_cfg_error(r, "authority", "must not contain CR or LF");
        else
            hc->grpc.authority = pt_arena_strdup(a, s);
    }
    /* HeaderValueOptions added to the Check's headers (append or not is all the same on a
     * request of its own). */
    pt_header_mutations_parse(r, a, "initial_metadata", NULL, &hc->grpc.metadata);
}

#define FILE_SINK_TYPE                                                                           \
    "type.googleapis.com/envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink"

/* event_log_path (deprecated in Envoy, still written by many configs) or event_logger with the
 * file sink: the one file the check's events go to. */
static void parse_event_log(pt_cfg_t *r, pt_arena_t *a, pt_health_check_config_t *hc)
{
    const char *path = NULL;
    pt_cfg_string(r, "event_log_path", &path, NULL);
    int present;
    size_t n = pt_cfg_array(r, "event_logger", &present);
    for (size_t i = 0; i < n; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        const char *name;
        pt_cfg_string(r, "name", &name, NULL);
        int rc;
        const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
        if (type == NULL) {
            if (rc == 0)
                pt_cfg_error(r, "typed_config", "is required");
            pt_cfg_leave(r);
            continue;
        }
        if (strcmp(type, FILE_SINK_TYPE) != 0) {
            pt_cfg_error(r, "@type", "\"%s\" is not supported (only the file sink, %s)", type,
                         FILE_SINK_TYPE);
            pt_cfg_skip_rest(r);
        } else {
            const char *p = NULL;
            pt_cfg_string(r, "event_log_path", &p, NULL);
            if (p == NULL || p[0] == '\0')
                pt_cfg_error(r, "event_log_path", "is required");
            else if (path != NULL && strcmp(path, p) != 0)
                pt_cfg_error(r, "event_log_path", "names a second file (\"%s\"): one event log "
                                                  "file per health check", path);
            else
                path = p;
        }
        pt_cfg_leave(r);
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    if (path != NULL && path[0])
        hc->event_log_path = pt_arena_strdup(a, path);
}

/* One HealthCheck (reader inside it). */
static void parse_one(pt_cfg_t *r, pt_arena_t *a, pt_health_check_config_t *hc)
{
    pt_cfg_unsupported(r, hc_unsupported);
    positive_duration(r, "timeout", &hc->timeout_ms, 1000, 1);
    positive_duration(r, "interval", &hc->interval_ms, 1000, 1);
    pt_cfg_duration_ms(r, "initial_jitter", &hc->initial_jitter_ms, 0);
    pt_cfg_duration_ms(r, "interval_jitter", &hc->interval_jitter_ms, 0);
    uint64_t v;
    pt_cfg_uint(r, "interval_jitter_percent", &v, 0, 0, UINT32_MAX);
    hc->interval_jitter_percent = (uint32_t)v;
    if (pt_cfg_uint(r, "unhealthy_threshold", &v, 1, 0, UINT32_MAX) == 0)
        pt_cfg_error(r, "unhealthy_threshold", "is required");
    hc->unhealthy_threshold = (uint32_t)v;
    if (pt_cfg_uint(r, "healthy_threshold", &v, 1, 0, UINT32_MAX) == 0)
        pt_cfg_error(r, "healthy_threshold", "is required");
    hc->healthy_threshold = (uint32_t)v;
    pt_cfg_bool(r, "reuse_connection", &hc->reuse_connection, 1);
    positive_duration(r, "no_traffic_interval", &hc->no_traffic_interval_ms, 60000, 0);
    positive_duration(r, "no_traffic_healthy_interval", &hc->no_traffic_healthy_interval_ms, 0,
                      0);
    positive_duration(r, "unhealthy_interval", &hc->unhealthy_interval_ms, hc->interval_ms, 0);
    positive_duration(r, "unhealthy_edge_interval", &hc->unhealthy_edge_interval_ms,
                      hc->unhealthy_interval_ms, 0);
    positive_duration(r, "healthy_edge_interval", &hc->healthy_edge_interval_ms,
                      hc->interval_ms, 0);
    pt_cfg_bool(r, "always_log_health_check_failures", &hc->always_log_health_check_failures,
                0);
    pt_cfg_bool(r, "always_log_health_check_success", &hc->always_log_health_check_success, 0);
    parse_event_log(r, a, hc);

    /* The health_checker oneof. custom is Envoy's too, reported as not supported when the
     * object is left. */
    static const char *const kinds[] = {"http_health_check", "tcp_health_check",
                                        "grpc_health_check", "custom_health_check", NULL};
    int kind = pt_cfg_oneof(r, kinds, 1);
    if (kind == 0 && pt_cfg_enter(r, "http_health_check") > 0) {
        hc->kind = PT_HC_HTTP;
        parse_http(r, a, hc);
        pt_cfg_leave(r);
    } else if (kind == 1) {
        hc->kind = PT_HC_TCP;
        if (pt_cfg_enter(r, "tcp_health_check") > 0) {
            parse_tcp(r, a, hc);
            pt_cfg_leave(r);
        }
    } else if (kind == 2) {
        hc->kind = PT_HC_GRPC;
        hc->grpc.service_name = "";
        if (pt_cfg_enter(r, "grpc_health_check") > 0) {
            parse_grpc(r, a, hc);
            pt_cfg_leave(r);
        }
    }
}

int pt_health_checks_parse(pt_cfg_t *r, pt_arena_t *a, const char *field,
                           pt_health_check_config_t **out, unsigned *n)
{
    *out = NULL;
    *n = 0;
    size_t errors_before = r->nerrors;
    int present;
    size_t count = pt_cfg_array(r, field, &present);
    if (!present)
        return r->nerrors > errors_before ? -1 : 0;
    pt_health_check_config_t *hcs = pt_arena_alloc(a, (count ? count : 1) * sizeof(*hcs));
    unsigned k = 0;
    for (size_t i = 0; hcs != NULL && i < count; i++) {
        int rc = pt_cfg_enter_index(r, i);
        if (rc <= 0)
            continue;
        size_t before = r->nerrors;
        /* The slot of a check that had errors is reused: start from zero (counts index
         * arrays). */
        memset(&hcs[k], 0, sizeof(hcs[k]));
        parse_one(r, a, &hcs[k]);
        pt_cfg_leave(r);
        if (r->nerrors == before)
            k++;
    }
    pt_cfg_leave_array(r);
    if (hcs == NULL && count > 0)
        pt_cfg_error(r, field, "out of memory");
    *out = k ? hcs : NULL;
    *n = k;
    return r->nerrors > errors_before ? -1 : 0;
}

int pt_hc_status_in(const pt_hc_range_t *ranges, unsigned n, int64_t status)
{
    for (unsigned i = 0; i < n; i++)
        if (status >= ranges[i].start && status < ranges[i].end)
            return 1;
    return 0;
}

int pt_hc_tcp_match(const pt_hc_payload_t *receive, unsigned n, const unsigned char *data,
                    size_t len)
{
    size_t pos = 0;
    for (unsigned i = 0; i < n; i++) {
        if (receive[i].len == 0)
            continue;
        const unsigned char *hit =
            pos <= len ? memmem(data + pos, len - pos, receive[i].data, receive[i].len) : NULL;
        if (hit == NULL)
            return 0;
        pos = (size_t)(hit - data) + receive[i].len;
    }
    return 1;
}

/* ---- the checker ----------------------------------------------------------------------- */

typedef enum fail_kind {
    FAIL_ACTIVE,  /* the host answered, wrongly (an HTTP status not expected) */
    FAIL_NETWORK, /* connect failure, reset, close or malformed answer */
    FAIL_TIMEOUT, /* no (complete) answer within timeout */
} fail_kind_t;

/* What a check result did to the session's verdict (Envoy's HealthTransition). */
typedef enum transition {
    T_UNCHANGED,
    T_PENDING, /* a change is under way: the threshold is not reached yet */
    T_CHANGED,
} transition_t;

typedef struct hc_cluster hc_cluster_t;

/* HTTP response parsing state, allocated on a session's first HTTP attempt. */
typedef struct hc_http_state {
    pt_h1_head_t head;
    pt_h1_header_t headers[HC_MAX_HEADERS];
    pt_h1_body_t body;
    int head_done;
    int degraded; /* the final response head has x-envoy-degraded */
} hc_http_state_t;

typedef struct hc_session {
    hc_cluster_t *cl;
    const pt_health_check_config_t *cfg;
    unsigned check;     /* index of cfg in the cluster's health_checks */
    unsigned host_idx;
    pt_host_t *host;
    ev_timer interval_timer, timeout_timer;
    pt_conn_t *conn;    /* probe connection, kept between attempts when reused */
    hc_http_state_t *http;
    pt_hc_grpc_t *grpc; /* gRPC checks: the HTTP/2 probe on conn, once connected */
    int in_flight;      /* an attempt is running (its timeout timer is armed) */
    int first_check;    /* no result yet: the first success marks the host healthy */
    int failed;         /* this check's verdict on the host */
    int degraded;       /* its last success said x-envoy-degraded (HTTP checks) */
    uint32_t num_healthy, num_unhealthy; /* consecutive results toward a threshold */
    int logged_failure; /* a failure was logged since the last success */
} hc_session_t;

struct hc_cluster {
    pt_health_checker_t *hc;
    pt_cluster_t *c;        /* the version being checked (a reference) */
    unsigned nchecks;
    char **requests;        /* per check: the HTTP request bytes (NULL for TCP) */
    size_t *request_lens;
    /* c->nhosts * nchecks, host-major, each allocated on its own (libev holds pointers to
     * their timers): a session moves to the next version of the cluster when its host and
     * the checks stay the same. */
    hc_session_t **sessions;
    struct {
        pt_stat_t attempt, success, failure, passive_failure, network_failure, verify_cluster,
            healthy, degraded;
    } st;
};

/* An event log file, opened the first time a check names it and kept until the checker
 * stops (a path is named by config, so there are few). */
typedef struct hc_event_file {
    struct hc_event_file *next;
    FILE *f; /* NULL: could not be opened (said once) */
    char path[];
} hc_event_file_t;

struct pt_health_checker {
    pt_worker_t *worker;
    struct ev_loop *loop;
    hc_cluster_t **clusters; /* one per checked cluster of the current view */
    unsigned nclusters, cap;
    hc_event_file_t *event_files;
};

static const pt_conn_handler_t probe_handler;

static struct ev_loop *loop_of(const hc_session_t *s)
{
    return s->cl->hc->loop;
}

static void drop_conn(hc_session_t *s)
{
    pt_hc_grpc_free(s->grpc);
    s->grpc = NULL;
    if (s->conn != NULL) {
        pt_conn_close(s->conn, PT_CLOSE_NOW);
        s->conn = NULL;
    }
}

static void end_attempt(hc_session_t *s)
{
    s->in_flight = 0;
    ev_timer_stop(loop_of(s), &s->timeout_timer);
}

/* Envoy's interval choice: the cluster's traffic decides between the regular intervals and
 * the no-traffic ones; pending transitions use the edge intervals; then jitter is added. */
static uint64_t next_interval_ms(const hc_session_t *s, int healthy_state, transition_t t)
{
    const pt_health_check_config_t *k = s->cfg;
    uint64_t base;
    int traffic = pt_stats_value(s->cl->c->stats.upstream_cx_total) > 0;
    if (traffic) {
        if (!healthy_state)
            base = t == T_PENDING ? k->unhealthy_edge_interval_ms : k->unhealthy_interval_ms;
        else
            base = t == T_PENDING ? k->healthy_edge_interval_ms : k->interval_ms;
    } else if (!s->failed && k->no_traffic_healthy_interval_ms > 0) {
        base = k->no_traffic_healthy_interval_ms;
    } else {
        base = k->no_traffic_interval_ms;
    }
    if (k->interval_jitter_percent > 0) {
        /* In floating point: percent * base overflows 64 bits for absurd but valid values.
         * Durations stay below 2^49 ms, so the clamped sum below cannot overflow either. */
        double j = (double)k->interval_jitter_percent * (double)base / 100.0;
        if (j > 1e15)
            j = 1e15;
        if (j >= 1.0)
            base += pt_random_below((uint64_t)j);
    }
    if (k->interval_jitter_ms > 0)
        base += pt_random_below(k->interval_jitter_ms);
    return base;
}

static void schedule(hc_session_t *s, int healthy_state, transition_t t)
{
    uint64_t ms = next_interval_ms(s, healthy_state, t);
    ev_timer_stop(loop_of(s), &s->interval_timer);
    ev_timer_set(&s->interval_timer, (double)ms / 1000.0, 0.);
    ev_timer_start(loop_of(s), &s->interval_timer);
}

/* Gauges owned by the main thread: hosts passing active health checks, and those of them
 * that pass degraded. */
static void refresh_gauges(hc_cluster_t *cl)
{
    pt_cluster_t *c = cl->c;
    unsigned passing = 0, degraded = 0;
    for (unsigned i = 0; i < c->nhosts; i++) {
        uint32_t h = atomic_load_explicit(&c->hosts[i]->health, memory_order_relaxed);
        passing += (h & PT_HOST_FAILED_ACTIVE_HC) == 0;
        degraded += (h & (PT_HOST_FAILED_ACTIVE_HC | PT_HOST_DEGRADED_ACTIVE_HC)) ==
                    PT_HOST_DEGRADED_ACTIVE_HC;
    }
    pt_stat_set(cl->st.healthy, passing);
    pt_stat_set(cl->st.degraded, degraded);
}

/* ---- the event log ------------------------------------------------------------------ */

static FILE *event_file(pt_health_checker_t *hc, const char *path)
{
    for (hc_event_file_t *e = hc->event_files; e != NULL; e = e->next)
        if (strcmp(e->path, path) == 0)
            return e->f;
    size_t len = strlen(path);
    hc_event_file_t *e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->path, path, len + 1);
    e->f = fopen(path, "ae");
    if (e->f == NULL)
        pt_error("health check: event log %s cannot be opened: %s (its events are not written)",
                 path, strerror(errno));
    e->next = hc->event_files;
    hc->event_files = e;
    return e->f;
}

static const char *const failure_type_names[] = {
    [FAIL_ACTIVE] = "ACTIVE", [FAIL_NETWORK] = "NETWORK", [FAIL_TIMEOUT] = "NETWORK_TIMEOUT"};

/* One HealthCheckEvent as Envoy's file sink writes it (proto JSON, every primitive field
 * printed): the checker type, the host's address, the cluster, then `key` with its body. */
static void log_event(hc_session_t *s, const char *key, json_t *body)
{
    FILE *f = s->cfg->event_log_path != NULL ? event_file(s->cl->hc, s->cfg->event_log_path)
                                             : NULL;
    if (f == NULL) {
        json_decref(body);
        return;
    }
    static const char *const checker_names[] = {[PT_HC_HTTP] = "HTTP", [PT_HC_TCP] = "TCP",
                                                [PT_HC_GRPC] = "GRPC"};
    char ip[64];
    pt_addr_format_ip(&s->host->address, ip, sizeof(ip));
    const char *pipe = pt_addr_pipe_path(&s->host->address);
    json_t *host = pipe != NULL
                       ? json_pack("{s:{s:s, s:i}}", "pipe", "path", pipe, "mode", 0)
                       : json_pack("{s:{s:s, s:s, s:s, s:b, s:i}}", "socket_address", "protocol",
                                   "TCP", "address", ip, "resolver_name", "", "ipv4_compat", 0,
                                   "port_value", (int)pt_addr_port(&s->host->address));
    char ts[32];
    pt_time_rfc3339_now(ts);
    json_t *ev = json_pack("{s:s, s:o, s:s, s:o, s:s}", "health_checker_type",
                           checker_names[s->cfg->kind], "host", host, "cluster_name",
                           s->cl->c->name, key, body, "timestamp", ts);
    if (ev == NULL)
        return;
    char *line = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (line == NULL)
        return;
    fprintf(f, "%s\n", line);
    fflush(f);
    free(line);
}

/* Folds the host's per-check verdicts into its health bits: it fails active health checking
 * while any check fails it, and is degraded while any check's last success said so. */
static void update_host(hc_session_t *s, const char *why)
{
    hc_cluster_t *cl = s->cl;
    int failed = 0, degraded = 0;
    for (unsigned k = 0; k < cl->nchecks; k++) {
        const hc_session_t *o = cl->sessions[s->host_idx * cl->nchecks + k];
        failed |= o->failed;
        degraded |= o->degraded;
    }
    pt_host_t *h = s->host;
    uint32_t old = atomic_load(&h->health);
    if (degraded != ((old & PT_HOST_DEGRADED_ACTIVE_HC) != 0)) {
        pt_host_health_update(h, degraded ? PT_HOST_DEGRADED_ACTIVE_HC : 0,
                              degraded ? 0 : PT_HOST_DEGRADED_ACTIVE_HC);
        pt_info("health check: cluster %s host %s is %s degraded", cl->c->name, h->address_str,
                degraded ? "now" : "no longer");
        refresh_gauges(cl);
    }
    if (failed && !(old & PT_HOST_FAILED_ACTIVE_HC)) {
        pt_host_health_update(h, PT_HOST_FAILED_ACTIVE_HC, 0);
        pt_info("health check: cluster %s host %s is now unhealthy (%s)", cl->c->name,
                h->address_str, why);
        refresh_gauges(cl);
    } else if (!failed && (old & PT_HOST_FAILED_ACTIVE_HC)) {
        pt_host_health_update(h, 0, PT_HOST_FAILED_ACTIVE_HC);
        pt_info("health check: cluster %s host %s is now healthy", cl->c->name,
                h->address_str);
        refresh_gauges(cl);
    }
}

static uint32_t at_least_1(uint32_t v)
{
    return v ? v : 1;
}

/* degraded: the answer said x-envoy-degraded (HTTP checks; 0 for the others). */
static void handle_success(hc_session_t *s, int degraded)
{
    end_attempt(s);
    if (degraded != s->degraded && s->cfg->event_log_path != NULL)
        log_event(s, degraded ? "degraded_healthy_host" : "no_longer_degraded_host",
                  json_object());
    s->degraded = degraded;
    s->num_unhealthy = 0;
    s->logged_failure = 0;
    transition_t t = T_UNCHANGED;
    if (s->failed) {
        /* At start the first result decides at once: startup is faster, at a small cost in
         * certainty (Envoy's rule). */
        if (s->first_check || ++s->num_healthy >= at_least_1(s->cfg->healthy_threshold)) {
            s->failed = 0;
            t = T_CHANGED;
            if (s->cfg->event_log_path != NULL)
                log_event(s, "add_healthy_event",
                          json_pack("{s:b}", "first_check", s->first_check));
        } else {
            t = T_PENDING;
        }
    }
    if (t != T_CHANGED && s->cfg->always_log_health_check_success &&
        s->cfg->event_log_path != NULL)
        log_event(s, "successful_health_check_event", json_object());
    s->first_check = 0;
    pt_stat_inc(s->cl->st.success);
    if (s->cfg->always_log_health_check_success)
        pt_info("health check: cluster %s host %s passed", s->cl->c->name, s->host->address_str);
    update_host(s, "");
    /* Envoy's successful_active_health_check_uneject_host: an ejected host that passes its
     * active checks comes back at once (the outlier detector decides). */
    pt_outlier_health_check_passed(s->host);
    schedule(s, 1, t);
}

static void handle_failure(hc_session_t *s, fail_kind_t kind, int retriable, const char *why)
{
    end_attempt(s);
    s->num_healthy = 0;
    transition_t t = T_UNCHANGED;
    if (!s->failed) {
        /* An answer that is plainly wrong fails the host at once; network trouble and
         * retriable statuses count toward unhealthy_threshold. */
        if ((kind == FAIL_ACTIVE && !retriable) ||
            ++s->num_unhealthy >= at_least_1(s->cfg->unhealthy_threshold)) {
            s->failed = 1;
            t = T_CHANGED;
            if (s->cfg->event_log_path != NULL)
                log_event(s, "eject_unhealthy_event",
                          json_pack("{s:s}", "failure_type", failure_type_names[kind]));
        } else {
            t = T_PENDING;
        }
    }
    if ((s->first_check || s->cfg->always_log_health_check_failures) &&
        s->cfg->event_log_path != NULL)
        log_event(s, "health_check_failure_event",
                  json_pack("{s:s, s:b}", "failure_type", failure_type_names[kind],
                            "first_check", s->first_check));
    s->first_check = 0;
    pt_stat_inc(s->cl->st.failure);
    if (kind != FAIL_ACTIVE)
        pt_stat_inc(s->cl->st.network_failure);
    if (!s->logged_failure || s->cfg->always_log_health_check_failures)
        PT_LOG(s->cfg->always_log_health_check_failures ? PT_LOG_INFO : PT_LOG_DEBUG,
               "health check: cluster %s host %s failed: %s", s->cl->c->name,
               s->host->address_str, why);
    s->logged_failure = 1;
    update_host(s, why);
    schedule(s, 0, t);
}

static int open_conn(hc_session_t *s)
{
    int err = 0;
    s->conn = pt_cluster_connect(s->cl->c, s->cl->hc->worker, s->host, &probe_handler,
                                 s, &err);
    return s->conn != NULL ? 0 : err;
}

/* A gRPC Check's outcome (health_check_grpc.h). */
static void grpc_done(void *owner, int outcome, const char *why)
{
    hc_session_t *s = owner;
    if (!s->in_flight)
        return;
    if (outcome == PT_HC_GRPC_NETWORK || !s->cfg->reuse_connection)
        drop_conn(s);
    if (outcome == PT_HC_GRPC_SERVING)
        handle_success(s, 0);
    else
        handle_failure(s, outcome == PT_HC_GRPC_NETWORK ? FAIL_NETWORK : FAIL_ACTIVE, 0, why);
}

/* Starts a gRPC Check on the session's connected probe. */
static void grpc_start(hc_session_t *s)
{
    const pt_health_check_config_t *k = s->cfg;
    const char *authority = k->grpc.authority ? k->grpc.authority : s->cl->c->name;
    if (pt_hc_grpc_check(s->grpc, k->grpc.service_name, authority, &k->grpc.metadata) != 0) {
        drop_conn(s);
        handle_failure(s, FAIL_NETWORK, 0, "cannot start a Check on the connection");
    }
}

static void on_interval(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    hc_session_t *s = t->data;
    const pt_health_check_config_t *k = s->cfg;
    pt_stat_inc(s->cl->st.attempt);
    s->in_flight = 1;
    ev_timer_set(&s->timeout_timer, (double)k->timeout_ms / 1000.0, 0.);
    ev_timer_start(loop, &s->timeout_timer);

    if (k->kind == PT_HC_HTTP) {
        if (s->http == NULL && (s->http = calloc(1, sizeof(*s->http))) == NULL) {
            handle_failure(s, FAIL_NETWORK, 0, "out of memory");
            return;
        }
        pt_h1_head_init(&s->http->head, s->http->headers);
        s->http->head_done = 0;
    }
    /* Input left over on a reused connection belongs to no attempt: a fresh connection is
     * the only safe start. An HTTP/2 probe says itself whether it takes another Check. */
    if (s->conn != NULL && pt_buf_len(&s->conn->in) > 0)
        drop_conn(s);
    if (k->kind == PT_HC_GRPC && s->conn != NULL &&
        (s->grpc == NULL || !pt_hc_grpc_reusable(s->grpc)))
        drop_conn(s);
    if (k->kind == PT_HC_GRPC && s->conn != NULL) {
        grpc_start(s);
        return;
    }
    if (s->conn == NULL) {
        int err = open_conn(s);
        if (err < 0) {
            /* No socket here (out of descriptors or memory) says nothing about the host:
             * failing it would turn petrel's own shortage into an outage of healthy
             * hosts once the shortage is over. Skip this round and try again later. */
            static pt_log_limit_t limit;
            pt_log_limited(&limit, PT_LOG_WARN,
                           "health check: cluster %s host %s: cannot open a connection: %s",
                           s->cl->c->name, s->host->address_str, strerror(-err));
            end_attempt(s);
            schedule(s, !s->failed, T_UNCHANGED);
            return;
        }
    }
    if (k->kind == PT_HC_GRPC)
        return; /* the Check starts once connected (probe_connect) */
    if (k->kind == PT_HC_HTTP)
        pt_conn_write_bytes(s->conn, s->cl->requests[s->check], s->cl->request_lens[s->check]);
    else if (k->tcp.send.len > 0)
        pt_conn_write_bytes(s->conn, k->tcp.send.data, k->tcp.send.len);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    hc_session_t *s = t->data;
    drop_conn(s);
    char why[64];
    snprintf(why, sizeof(why), "no answer within %llums", (unsigned long long)s->cfg->timeout_ms);
    handle_failure(s, FAIL_TIMEOUT, 0, why);
}

static void probe_connect(pt_conn_t *c, int status)
{
    hc_session_t *s = c->data;
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect failed: %s", strerror(-status));
        drop_conn(s);
        if (s->in_flight)
            handle_failure(s, FAIL_NETWORK, 0, why);
        return;
    }
    if (s->cfg->kind == PT_HC_GRPC) {
        if (!s->in_flight) {
            drop_conn(s);
            return;
        }
        s->grpc = pt_hc_grpc_new(c, s->cl->c->http2, grpc_done, s);
        if (s->grpc == NULL) {
            drop_conn(s);
            handle_failure(s, FAIL_NETWORK, 0, "out of memory");
            return;
        }
        grpc_start(s);
        return;
    }
    if (s->cfg->kind == PT_HC_TCP && s->cfg->tcp.nreceive == 0 && s->in_flight) {
        /* Connect-only: connecting is the check. The connection is not kept (Envoy). */
        drop_conn(s);
        handle_success(s, 0);
    }
}

static void probe_error(pt_conn_t *c, int status)
{
    hc_session_t *s = c->data;
    char why[128];
    snprintf(why, sizeof(why), "connection error: %s", strerror(status < 0 ? -status : EIO));
    drop_conn(s);
    if (s->in_flight)
        handle_failure(s, FAIL_NETWORK, 0, why);
}

static void probe_drain(pt_conn_t *c)
{
    (void)c;
}

/* The whole response arrived: judge its status. */
static void http_complete(hc_session_t *s, int status, int keep_alive)
{
    const pt_health_check_config_t *k = s->cfg;
    if (!k->reuse_connection || !keep_alive || (s->conn && pt_buf_len(&s->conn->in) > 0))
        drop_conn(s);
    if (pt_hc_status_in(k->http.expected, k->http.nexpected, status)) {
        handle_success(s, s->http->degraded);
        return;
    }
    char why[64];
    snprintf(why, sizeof(why), "HTTP status %d", status);
    handle_failure(s, FAIL_ACTIVE, pt_hc_status_in(k->http.retriable, k->http.nretriable, status),
                   why);
}

static void http_read(hc_session_t *s, pt_conn_t *c)
{
    hc_http_state_t *st = s->http;
    int eof = (c->flags & PT_CONN_F_EOF) != 0;
    static const pt_h1_limits_t lim = {.max_head_bytes = HC_MAX_HEAD_BYTES,
                                       .max_headers = HC_MAX_HEADERS};
    int is_head = strcmp(s->cfg->http.method, "HEAD") == 0;
    while (!st->head_done) {
        size_t len = pt_buf_len(&c->in);
        if (len == 0)
            break;
        size_t take = len < HC_MAX_HEAD_BYTES + 1 ? len : HC_MAX_HEAD_BYTES + 1;
        const char *p = pt_buf_pullup(&c->in, take);
        if (p == NULL) {
            drop_conn(s);
            handle_failure(s, FAIL_NETWORK, 0, "out of memory");
            return;
        }
        int rc = pt_h1_parse_response(p, take, &st->head, &lim, is_head);
        if (rc == PT_H1_INCOMPLETE)
            break;
        if (rc == PT_H1_ERROR) {
            char why[160];
            snprintf(why, sizeof(why), "malformed response: %s",
                     st->head.error_reason ? st->head.error_reason : "?");
            drop_conn(s);
            handle_failure(s, FAIL_NETWORK, 0, why);
            return;
        }
        int status = st->head.status;
        if (status >= 100 && status < 200 && status != 101) {
            /* Interim response: the final one follows. */
            pt_buf_drain(&c->in, (size_t)rc);
            pt_h1_head_init(&st->head, st->headers);
            continue;
        }
        st->head_done = 1;
        st->degraded = 0;
        for (unsigned i = 0; i < st->head.num_headers; i++)
            if (st->head.headers[i].name_len == 16 &&
                strncasecmp(st->head.headers[i].name, "x-envoy-degraded", 16) == 0)
                st->degraded = 1;
        pt_h1_body_init(&st->body, &st->head);
        pt_buf_drain(&c->in, (size_t)rc);
        if (status == 101)
            st->head.keep_alive = 0; /* the connection would now speak something else */
    }
    if (!st->head_done) {
        if (eof) {
            drop_conn(s);
            handle_failure(s, FAIL_NETWORK, 0, "connection closed before a response");
        }
        return;
    }
    /* Consume the body: the connection can carry the next check only after it. */
    while (!pt_h1_body_done(&st->body) && st->body.mode != PT_H1_BODY_NONE) {
        size_t len = pt_buf_len(&c->in);
        if (len == 0)
            break;
        size_t take = len < 65536 ? len : 65536;
        const char *p = pt_buf_pullup(&c->in, take);
        const char *d;
        size_t dl;
        ssize_t used = p ? pt_h1_body_decode(&st->body, p, take, &d, &dl) : PT_H1_ERROR;
        if (used < 0) {
            drop_conn(s);
            handle_failure(s, FAIL_NETWORK, 0, "malformed response body");
            return;
        }
        pt_buf_drain(&c->in, (size_t)used);
        if (used == 0 && dl == 0 && !pt_h1_body_has_trailer(&st->body))
            break; /* needs more input */
    }
    if (st->body.mode == PT_H1_BODY_NONE || pt_h1_body_done(&st->body)) {
        http_complete(s, st->head.status, st->head.keep_alive && !eof);
        return;
    }
    if (eof) {
        if (st->body.mode == PT_H1_BODY_EOF) {
            http_complete(s, st->head.status, 0);
        } else {
            drop_conn(s);
            handle_failure(s, FAIL_NETWORK, 0, "connection closed in the response body");
        }
    }
}

static void tcp_read(hc_session_t *s, pt_conn_t *c)
{
    const pt_health_check_config_t *k = s->cfg;
    int eof = (c->flags & PT_CONN_F_EOF) != 0;
    size_t len = pt_buf_len(&c->in);
    if (k->tcp.nreceive > 0 && len > 0) {
        size_t take = len < HC_MAX_TCP_BYTES ? len : HC_MAX_TCP_BYTES;
        const char *p = pt_buf_pullup(&c->in, take);
        if (p != NULL &&
            pt_hc_tcp_match(k->tcp.receive, k->tcp.nreceive, (const unsigned char *)p, take)) {
            pt_buf_drain(&c->in, len);
            if (!k->reuse_connection || eof)
                drop_conn(s);
            handle_success(s, 0);
            return;
        }
        if (len >= HC_MAX_TCP_BYTES) {
            drop_conn(s);
            handle_failure(s, FAIL_NETWORK, 0, "too many bytes without the expected payload");
            return;
        }
    } else if (k->tcp.nreceive == 0) {
        pt_buf_drain(&c->in, len);
    }
    if (eof) {
        drop_conn(s);
        handle_failure(s, FAIL_NETWORK, 0, "connection closed before the expected payload");
    }
}

static void probe_read(pt_conn_t *c)
{
    hc_session_t *s = c->data;
    if (!s->in_flight) {
        /* Between checks a kept connection has nothing to say: anything it says (or its
         * close) ends it, and the next check opens a fresh one. */
        drop_conn(s);
        return;
    }
    if (s->cfg->kind == PT_HC_HTTP)
        http_read(s, c);
    else
        tcp_read(s, c);
}

static const pt_conn_handler_t probe_handler = {
    .on_read = probe_read,
    .on_connect = probe_connect,
    .on_drain = probe_drain,
    .on_error = probe_error,
};

/* The request bytes of an HTTP check: method, path, host (the configured one or the
 * cluster's name), user-agent Envoy/HC, with request_headers_to_remove and _to_add applied
 * as a route applies them (a check has no stream: operators that read one render empty). */
static char *build_request(const pt_health_check_config_t *k, const char *cluster_name,
                           size_t *len_out)
{
    pt_arena_t a = {0};
    pt_http_headers_t hs;
    char *out = NULL;
    pt_http_headers_init(&hs, &a);
    if (pt_http_headers_add_ref(&hs, "user-agent", HC_USER_AGENT) != 0)
        goto done;
    pt_header_mutations_apply(&k->http.headers, &hs, NULL);
    const char *m = k->http.method;
    const char *host = k->http.host ? k->http.host : cluster_name;
    int body_method = strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
    size_t len = strlen(m) + strlen(k->http.path) + 64 + strlen(host);
    for (uint32_t j = 0; j < hs.count; j++)
        len += hs.items[j].name_len + hs.items[j].value_len + 4;
    out = malloc(len);
    if (out == NULL)
        goto done;
    size_t o = (size_t)snprintf(out, len, "%s %s HTTP/1.1\r\nhost: %s\r\n", m, k->http.path, host);
    for (uint32_t j = 0; j < hs.count; j++)
        o += (size_t)snprintf(out + o, len - o, "%s: %s\r\n", hs.items[j].name, hs.items[j].value);
    if (body_method)
        o += (size_t)snprintf(out + o, len - o, "content-length: 0\r\n");
    o += (size_t)snprintf(out + o, len - o, "\r\n");
    *len_out = o;
done:
    pt_arena_dispose(&a);
    return out;
}

static void session_free(hc_cluster_t *cl, hc_session_t *s)
{
    struct ev_loop *loop = cl->hc->loop;
    ev_timer_stop(loop, &s->interval_timer);
    ev_timer_stop(loop, &s->timeout_timer);
    drop_conn(s);
    free(s->http);
    free(s);
}

static void cluster_dispose(hc_cluster_t *cl)
{
    unsigned n = cl->c->nhosts * cl->nchecks;
    for (unsigned i = 0; cl->sessions != NULL && i < n; i++)
        if (cl->sessions[i] != NULL)
            session_free(cl, cl->sessions[i]);
    free(cl->sessions);
    cl->sessions = NULL;
    for (unsigned k = 0; cl->requests != NULL && k < cl->nchecks; k++)
        free(cl->requests[k]);
    free(cl->requests);
    free(cl->request_lens);
    cl->requests = NULL;
    cl->request_lens = NULL;
    pt_cluster_unref(cl->c);
    cl->c = NULL;
}

static pt_stat_t hc_stat(pt_cluster_t *c, int gauge, const char *name)
{
    char full[64];
    snprintf(full, sizeof(full), "health_check.%s", name);
    return gauge ? pt_stats_gauge("cluster", "envoy_cluster_name", c->name, full)
                 : pt_stats_counter("cluster", "envoy_cluster_name", c->name, full);
}

static hc_session_t *session_new(hc_cluster_t *cl, unsigned check, unsigned host_idx)
{
    hc_session_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cl = cl;
    s->cfg = &cl->c->health_checks[check];
    s->check = check;
    s->host_idx = host_idx;
    s->host = cl->c->hosts[host_idx];
    s->first_check = 1;
    /* A host new to checking is not used for traffic until a check passes (Envoy marks
     * hosts of a health-checked cluster failed_active_hc when they are added; prepare set
     * the bit on hosts new to the cluster). A host checked before keeps its verdict. */
    s->failed = (atomic_load(&s->host->health) & PT_HOST_FAILED_ACTIVE_HC) != 0;
    s->degraded = (atomic_load(&s->host->health) & PT_HOST_DEGRADED_ACTIVE_HC) != 0;
    double first = 0.;
    if (s->cfg->initial_jitter_ms > 0)
        first = (double)pt_random_below(s->cfg->initial_jitter_ms) / 1000.0;
    ev_timer_init(&s->interval_timer, on_interval, first, 0.);
    ev_timer_init(&s->timeout_timer, on_timeout, 0., 0.);
    s->interval_timer.data = s;
    s->timeout_timer.data = s;
    ev_timer_start(cl->hc->loop, &s->interval_timer);
    return s;
}

/* Builds the per-check requests and stats of cl for version c (a reference taken). */
static int cluster_setup(pt_health_checker_t *hc, hc_cluster_t *cl, pt_cluster_t *c)
{
    cl->hc = hc;
    cl->c = pt_cluster_ref(c);
    cl->nchecks = c->nhealth_checks;
    cl->st.attempt = hc_stat(c, 0, "attempt");
    cl->st.success = hc_stat(c, 0, "success");
    cl->st.failure = hc_stat(c, 0, "failure");
    cl->st.passive_failure = hc_stat(c, 0, "passive_failure");
    cl->st.network_failure = hc_stat(c, 0, "network_failure");
    cl->st.verify_cluster = hc_stat(c, 0, "verify_cluster");
    cl->st.healthy = hc_stat(c, 1, "healthy");
    cl->st.degraded = hc_stat(c, 1, "degraded");
    cl->requests = calloc(cl->nchecks, sizeof(*cl->requests));
    cl->request_lens = calloc(cl->nchecks, sizeof(*cl->request_lens));
    if (cl->requests == NULL || cl->request_lens == NULL)
        return -1;
    for (unsigned k = 0; k < cl->nchecks; k++) {
        if (c->health_checks[k].kind != PT_HC_HTTP)
            continue;
        cl->requests[k] = build_request(&c->health_checks[k], c->name, &cl->request_lens[k]);
        if (cl->requests[k] == NULL)
            return -1;
    }
    if (c->nhosts > 0 &&
        (cl->sessions = calloc((size_t)c->nhosts * cl->nchecks, sizeof(*cl->sessions))) == NULL)
        return -1;
    return 0;
}

/* Gives every host of cl->c its sessions: those of `prev` (the checks of the previous
 * version, when they are the same) for hosts that stay, new ones for the others; what is
 * left of prev (removed hosts) is freed. */
static int cluster_fill(hc_cluster_t *cl, hc_session_t **prev, pt_host_t *const *prev_hosts,
                        unsigned prev_nhosts)
{
    pt_cluster_t *c = cl->c;
    int rc = 0;
    for (unsigned h = 0; h < c->nhosts; h++) {
        unsigned from = prev_nhosts;
        for (unsigned j = 0; prev != NULL && j < prev_nhosts; j++) {
            if (prev_hosts[j] == c->hosts[h] && prev[j * cl->nchecks] != NULL) {
                from = j;
                break;
            }
        }
        for (unsigned k = 0; k < cl->nchecks; k++) {
            hc_session_t *s;
            if (from < prev_nhosts) {
                s = prev[from * cl->nchecks + k];
                prev[from * cl->nchecks + k] = NULL;
                s->cl = cl;
                s->cfg = &c->health_checks[k];
                s->host_idx = h;
            } else if ((s = session_new(cl, k, h)) == NULL) {
                rc = -1;
                continue;
            }
            cl->sessions[h * cl->nchecks + k] = s;
        }
    }
    for (unsigned i = 0; prev != NULL && i < prev_nhosts * cl->nchecks; i++)
        if (prev[i] != NULL)
            session_free(cl, prev[i]);
    return rc;
}

static hc_cluster_t *find_cluster(pt_health_checker_t *hc, const pt_cluster_state_t *st)
{
    for (unsigned i = 0; i < hc->nclusters; i++)
        if (hc->clusters[i]->c->state == st)
            return hc->clusters[i];
    return NULL;
}

/* Whether two versions of a cluster check the same way (sessions and verdicts carry over). */
static int same_checks(const pt_cluster_t *a, const pt_cluster_t *b)
{
    if (a->health_checks_json == NULL || b->health_checks_json == NULL)
        return a->health_checks_json == b->health_checks_json;
    return json_equal(a->health_checks_json, b->health_checks_json);
}

/* A cluster no longer checked (removed, or its health checks gone): its hosts are usable
 * again unless another check fails them. */
static void cluster_drop(hc_cluster_t *cl, int clear_hosts)
{
    pt_cluster_t *c = cl->c;
    for (unsigned h = 0; clear_hosts && h < c->nhosts; h++)
        pt_host_health_update(c->hosts[h], 0,
                              PT_HOST_FAILED_ACTIVE_HC | PT_HOST_DEGRADED_ACTIVE_HC);
    cluster_dispose(cl);
    free(cl);
}

/* ---- passive failures -------------------------------------------------------------- */

/* The running checker (main thread) and the worker whose loop it runs on (read by workers
 * to post to it). */
static pt_health_checker_t *running;
static _Atomic(pt_worker_t *) running_worker;

typedef struct passive_event {
    pt_host_t *h; /* a reference: the event may outlive the version that listed the host */
} passive_event_t;

/* Main thread: every check of the host fails now; it comes back through the active checks
 * (healthy_threshold successes), as in Envoy. */
static void apply_passive_failure(pt_worker_t *w, void *arg)
{
    (void)w;
    passive_event_t *e = arg;
    hc_cluster_t *cl = running != NULL ? find_cluster(running, e->h->state) : NULL;
    for (unsigned hi = 0; cl != NULL && hi < cl->c->nhosts; hi++) {
        if (cl->c->hosts[hi] != e->h)
            continue;
        pt_stat_inc(cl->st.passive_failure);
        for (unsigned k = 0; k < cl->nchecks; k++) {
            hc_session_t *s = cl->sessions[hi * cl->nchecks + k];
            s->failed = 1;
            s->first_check = 0;
            s->num_healthy = 0;
        }
        update_host(cl->sessions[hi * cl->nchecks],
                    "immediate health check failure from the upstream");
        break;
    }
    pt_host_unref(e->h);
    free(e);
}

void pt_health_check_passive_failure(const pt_cluster_t *c, pt_host_t *h)
{
    pt_worker_t *w = atomic_load_explicit(&running_worker, memory_order_acquire);
    if (w == NULL || c->nhealth_checks == 0)
        return; /* without active health checking the header means nothing (Envoy) */
    passive_event_t *e = malloc(sizeof(*e));
    if (e == NULL)
        return;
    e->h = pt_host_ref(h);
    if (pt_worker_post(w, apply_passive_failure, e) != 0) {
        pt_host_unref(h);
        free(e);
    }
}

pt_health_checker_t *pt_health_checker_start(pt_worker_t *main_worker)
{
    pt_health_checker_t *hc = calloc(1, sizeof(*hc));
    if (hc == NULL)
        return NULL;
    hc->worker = main_worker;
    hc->loop = main_worker->loop;
    running = hc;
    atomic_store_explicit(&running_worker, main_worker, memory_order_release);
    return hc;
}

/* Brings cl (checking some version of a cluster, or a new one when cl->c is NULL) to
 * version c. */
static int cluster_move_to(pt_health_checker_t *hc, hc_cluster_t *cl, pt_cluster_t *c)
{
    hc_cluster_t old = *cl;
    int was_checked = old.c != NULL;
    int keep = was_checked && same_checks(old.c, c);
    memset(cl, 0, sizeof(*cl));
    int rc = cluster_setup(hc, cl, c);
    if (rc == 0)
        rc = cluster_fill(cl, keep ? old.sessions : NULL, keep ? old.c->hosts : NULL,
                          keep ? old.c->nhosts : 0);
    if (keep) {
        free(old.sessions); /* its sessions moved, or were freed by cluster_fill */
        old.sessions = NULL;
    }
    if (was_checked)
        cluster_dispose(&old);
    refresh_gauges(cl);
    if (!keep)
        pt_info("health check: cluster %s: %u check%s on %u host%s", c->name, cl->nchecks,
                cl->nchecks == 1 ? "" : "s", c->nhosts, c->nhosts == 1 ? "" : "s");
    return rc;
}

int pt_health_checker_update(pt_health_checker_t *hc, const pt_view_t *view)
{
    if (hc == NULL)
        return 0;
    int rc = 0;
    /* Clusters that are gone, or no longer checked. */
    for (unsigned i = 0; i < hc->nclusters;) {
        hc_cluster_t *cl = hc->clusters[i];
        pt_cluster_t *now = pt_view_find_cluster(view, cl->c->name);
        if (now != NULL && now->nhealth_checks > 0) {
            i++;
            continue;
        }
        cluster_drop(cl, now != NULL);
        hc->clusters[i] = hc->clusters[--hc->nclusters];
    }
    /* New and changed ones: work only for what changed. */
    for (unsigned i = 0; i < view->nclusters; i++) {
        pt_cluster_t *c = view->clusters[i];
        if (c->nhealth_checks == 0)
            continue;
        hc_cluster_t *cl = find_cluster(hc, c->state);
        if (cl != NULL && cl->c == c)
            continue;
        if (cl == NULL) {
            if (hc->nclusters == hc->cap) {
                unsigned cap = hc->cap ? hc->cap * 2 : 8;
                hc_cluster_t **n = realloc(hc->clusters, cap * sizeof(*n));
                if (n == NULL) {
                    rc = -1;
                    continue;
                }
                hc->clusters = n;
                hc->cap = cap;
            }
            if ((cl = calloc(1, sizeof(*cl))) == NULL) {
                rc = -1;
                continue;
            }
            hc->clusters[hc->nclusters++] = cl;
        }
        if (cluster_move_to(hc, cl, c) != 0)
            rc = -1;
    }
    if (rc != 0)
        pt_error("health check: out of memory: some hosts are not checked");
    return rc;
}

void pt_health_checker_stop(pt_health_checker_t *hc)
{
    if (hc == NULL)
        return;
    if (running == hc)
        running = NULL; /* events still queued find no checker and are dropped */
    for (unsigned i = 0; i < hc->nclusters; i++) {
        cluster_dispose(hc->clusters[i]);
        free(hc->clusters[i]);
    }
    free(hc->clusters);
    while (hc->event_files != NULL) {
        hc_event_file_t *e = hc->event_files;
        hc->event_files = e->next;
        if (e->f != NULL)
            fclose(e->f);
        free(e);
    }
    free(hc);
}
