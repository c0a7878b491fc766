/* The server: the main thread's view of everything. It loads and validates the config,
 * binds listeners, starts the workers and the admin endpoint, handles signals, and runs the
 * drain on shutdown (stop accepting, let open connections finish for up to --drain-time-s,
 * then exit). */
#ifndef PT_SERVER_H
#define PT_SERVER_H

#include <ev.h>
#include <stdint.h>

#include "proxy/config.h"
#include "proxy/listener.h"
#include "proxy/worker.h"

typedef struct pt_admin pt_admin_t;

typedef enum pt_server_state {
    PT_SERVER_INITIALIZING,
    PT_SERVER_LIVE,
    PT_SERVER_DRAINING,
    PT_SERVER_STOPPED,
} pt_server_state_t;

typedef struct pt_options {
    const char *config_path;
    unsigned concurrency;
    double drain_time_s;
    const char *log_level;
    int validate_only;
    char *command_line; /* as given, for /server_info */
} pt_options_t;

typedef struct pt_server {
    pt_options_t opts;
    struct ev_loop *loop;     /* the main thread's loop (libev's default loop) */
    pt_worker_t main_worker;  /* owns the main loop's connections (admin) */
    pt_worker_t *workers;
    unsigned nworkers;
    pt_config_t *config;      /* current snapshot */
    int running;              /* the loop runs: initializing may end */
    int announced_warming;    /* started with warming clusters (logged) */
    struct pt_view *view;     /* the view workers resolve clusters through (proxy/view.h) */
    struct pt_cluster_manager *clusters; /* owns the clusters, publishes views */
    struct pt_view *cluster_view;        /* the cluster manager's last (clusters only) */
    struct pt_route_manager *routes;     /* RDS, or NULL */
    struct pt_subscription *lds;         /* dynamic_resources.lds_config, or NULL */
    struct {
        pt_stat_t added, modified, removed, active, warming;
    } lds_stats; /* listener_manager.*: active and warming counted for every listener */
    struct pt_subscription *cds;         /* dynamic_resources.cds_config, or NULL */
    unsigned nworkers_started; /* workers that were sent the view (later views go to them) */
    pt_listener_t **listeners;
    unsigned nlisteners;
    pt_admin_t *admin;
    struct pt_outlier_detector *outlier; /* discovery/outlier.h, or NULL */
    struct pt_health_checker *health_checker; /* active health checks (main thread), or NULL */
    pt_server_state_t state;
    double start_time;        /* wall clock, seconds */
    ev_signal sigterm, sigint, sigusr1, sighup;
    unsigned signals_caught;  /* SIGTERM/SIGINT so far: the second one stops at once */
    ev_timer drain_poll;
    ev_timer heap_tick;         /* gives memory back after a burst (proxy/heap.h) */
    ev_timer listener_warm;     /* the next initial_fetch_timeout of a warming listener */
    /* An LDS update waiting for the TLS secrets of listeners it changes in place (those
     * serve as they were meanwhile), or NULL. */
    struct pt_config *lds_pending;
    ev_timer stats_flush;       /* merges histograms every stats_flush_interval */
    uint64_t drain_deadline_ms;    /* monotonic */
    int listeners_closed;          /* drain_listeners ran */
    int exit_pending;              /* a drain that ends the process is under way */
    int exit_code;
} pt_server_t;

/* Loads the config; on error prints every problem to stderr and returns -1. */
int pt_server_init(pt_server_t *s, const pt_options_t *opts);
/* Binds, starts workers and admin, runs until shutdown. Returns the exit code. */
int pt_server_run(pt_server_t *s);
void pt_server_dispose(pt_server_t *s);
/* Starts the graceful drain (SIGTERM) or stops at once (POST /quitquitquit). */
void pt_server_drain(pt_server_t *s);
/* Closes the listeners only (POST /drain_listeners, a preStop hook): the process keeps
 * serving open connections and exits only on a later SIGTERM or /quitquitquit. */
void pt_server_drain_listeners(pt_server_t *s);
/* Whether health checks answered by petrel (envoy.filters.http.health_check) fail: after
 * POST /healthcheck/fail until /healthcheck/ok, and for good once the server drains, so a
 * load balancer in front stops sending new connections. Any thread. */
int pt_server_health_check_failed(void);
void pt_server_set_health_check_failed(int failed);
void pt_server_stop(pt_server_t *s);
const char *pt_server_state_str(pt_server_state_t st);

#endif
