#include "proxy/config_address.h"

#include <string.h>

static const char *const address_unsupported[] = {"pipe", "envoy_internal_address", NULL};
static const char *const socket_address_unsupported[] = {
    "named_port", "resolver_name", "ipv4_compat", "network_namespace_filepath", NULL};
static const char *const protocols[] = {"TCP", NULL};
static const char *const protocols_known[] = {"UDP", NULL};

/* The Address the reader is in. With `name` (DNS clusters), an address that is not an IP
 * literal is a hostname: *name points at it (the config's string), out gets the port alone. */
static int read_here(pt_cfg_t *r, pt_addr_t *out, const char **name, unsigned *port_out,
                     int endpoint)
{
    /* A Unix socket: an endpoint of a static or EDS cluster (a control plane, a local agent
     * or service). mode matters only to a socket petrel would bind: none is. */
    static const char *const endpoint_unsupported[] = {"envoy_internal_address", NULL};
    int pipe_ok = endpoint && name == NULL;
    pt_cfg_unsupported(r, pipe_ok ? endpoint_unsupported : address_unsupported);
    if (pipe_ok && pt_cfg_get(r, "pipe") != NULL) {
        int ok = -1;
        if (pt_cfg_enter(r, "pipe") > 0) {
            const char *path;
            uint64_t mode;
            pt_cfg_uint(r, "mode", &mode, 0, 0, 0777);
            if (pt_cfg_string(r, "path", &path, NULL) <= 0 || path[0] == '\0')
                pt_cfg_error(r, "path", "is required");
            else if (pt_addr_parse_pipe(out, path) != 0)
                pt_cfg_error(r, "path",
                             "\"%s\" is too long for a Unix socket (or too many "
                             "distinct paths)",
                             path);
            else
                ok = 1;
            pt_cfg_leave(r);
        }
        if (pt_cfg_has(r, "socket_address"))
            pt_cfg_error(r, "socket_address", "and pipe are both given");
        return ok;
    }
    int ok = -1;
    int sa = pt_cfg_enter(r, "socket_address");
    if (sa > 0) {
        pt_cfg_unsupported(r, socket_address_unsupported);
        const char *ip;
        uint64_t port;
        int proto;
        pt_cfg_enum(r, "protocol", protocols, protocols_known, &proto, 0);
        int has_ip = pt_cfg_string(r, "address", &ip, NULL);
        int has_port = pt_cfg_uint(r, "port_value", &port, 0, 0, 65535);
        if (port_out != NULL)
            *port_out = (unsigned)port;
        if (has_ip == 0) {
            pt_cfg_error(r, "address", "is required");
        } else if (has_ip > 0 && name != NULL) {
            *name = ip;
            ok = has_port >= 0 && ip[0] ? 1 : -1;
            if (!ip[0])
                pt_cfg_error(r, "address", "is required");
        } else if (has_ip > 0 && pt_addr_parse(out, ip, (unsigned)port) != 0) {
            pt_cfg_error(r, "address", "\"%s\" is not an IP address%s", ip,
                         endpoint ? " (a hostname needs a cluster of type STRICT_DNS or "
                                    "LOGICAL_DNS)"
                                  : "");
        } else if (has_ip > 0 && has_port >= 0) {
            ok = 1;
        }
        if (has_port == 0) {
            pt_cfg_error(r, "port_value", "is required");
            ok = -1;
        }
        pt_cfg_leave(r);
    } else if (sa == 0) {
        pt_cfg_error(r, "socket_address", "is required");
    }
    return ok;
}

int pt_config_read_address(pt_cfg_t *r, const char *field, pt_addr_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    int ok = read_here(r, out, NULL, NULL, 0);
    pt_cfg_leave(r);
    return ok;
}

int pt_config_read_endpoint_address(pt_cfg_t *r, const char *field, pt_addr_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    int ok = read_here(r, out, NULL, NULL, 1);
    pt_cfg_leave(r);
    return ok;
}

int pt_config_read_address_at(pt_cfg_t *r, size_t idx, pt_addr_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = pt_cfg_enter_index(r, idx);
    if (rc <= 0)
        return rc;
    int ok = read_here(r, out, NULL, NULL, 0);
    pt_cfg_leave(r);
    return ok;
}

int pt_config_read_address_or_name(pt_cfg_t *r, const char *field, const char **name,
                                   unsigned *port)
{
    *name = NULL;
    *port = 0;
    pt_addr_t unused;
    memset(&unused, 0, sizeof(unused));
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    int ok = read_here(r, &unused, name, port, 1);
    pt_cfg_leave(r);
    return ok;
}
