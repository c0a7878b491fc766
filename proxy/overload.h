/* The runtime (layered_runtime, static layers only) and connection limits, configured the
 * two ways Envoy has:
 *
 *  - layered_runtime: overload.global_downstream_max_connections and
 *    envoy.resource_limits.listener.<listener name>.connection_limit; the other keys petrel
 *    reads are proxy/runtime.h's. Any other key is a config error.
 *  - overload_manager with the envoy.resource_monitors.global_downstream_max_connections
 *    monitor (DownstreamConnectionsConfig.max_active_downstream_connections). Other
 *    monitors and overload actions are not supported.
 *
 * A connection over a limit is closed as soon as it is accepted and counted on its
 * listener (downstream_global_cx_overflow, downstream_cx_overflow). Counts are shared by
 * all workers (proxy/listener.c). */
#ifndef PT_OVERLOAD_H
#define PT_OVERLOAD_H

#include "proxy/config.h"
#include "proxy/config_reader.h"

/* Reads layered_runtime and overload_manager at the bootstrap level (after the listeners
 * are parsed) into cfg->max_downstream_connections and the listeners' connection_limit. */
void pt_overload_parse(pt_cfg_t *r, pt_config_t *cfg);

#endif
