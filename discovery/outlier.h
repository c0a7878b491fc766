/* Outlier detection (envoy.config.cluster.v3.OutlierDetection): passive health checking
 * from the results of real traffic. Workers report each result for a host (atomics on the
 * hot path); the main thread decides ejections, publishes them through the host's
 * PT_HOST_FAILED_OUTLIER_CHECK bit, and brings hosts back after their ejection time. */
#ifndef PT_OUTLIER_H
#define PT_OUTLIER_H

#include "proxy/arena.h"
#include "proxy/config_reader.h"

typedef struct pt_cluster pt_cluster_t;
typedef struct pt_host pt_host_t;
typedef struct pt_config pt_config_t;
typedef struct pt_worker pt_worker_t;
typedef struct pt_outlier_config pt_outlier_config_t;

typedef enum pt_outlier_result {
    PT_OUTLIER_HTTP_RESPONSE,       /* an upstream response; its status decides (5xx, gateway) */
    PT_OUTLIER_CONNECT_FAILED,      /* local origin: connection failure */
    PT_OUTLIER_CONNECT_SUCCESS,     /* local origin: connection established */
    PT_OUTLIER_TIMEOUT,             /* local origin: request timeout */
    PT_OUTLIER_RESET,               /* local origin: reset before a response */
} pt_outlier_result_t;

/* Parses the outlier_detection object the reader is in. NULL with errors recorded. */
pt_outlier_config_t *pt_outlier_parse(pt_cfg_t *r, pt_arena_t *a);
/* Worker thread: one result for host h of cluster c (http_status for HTTP responses). */
void pt_outlier_report(pt_cluster_t *c, pt_host_t *h, pt_outlier_result_t result,
                       int http_status);

#endif
