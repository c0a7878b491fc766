/* envoy.config.core.v3.Address as petrel reads it: a socket_address (TCP) with an IP
 * address (a hostname only in a DNS cluster's endpoints) and a port. One reader for every place an address appears (listeners, the admin,
 * endpoints of static clusters and of EDS assignments), below the config and cluster
 * modules that use it. */
#ifndef PT_CONFIG_ADDRESS_H
#define PT_CONFIG_ADDRESS_H

#include "proxy/address.h"
#include "proxy/config_reader.h"

/* Parses the Address at `field` of the current object into out. Returns 1 if valid, 0 if
 * absent, -1 with errors recorded (a pipe or internal address, a name instead of an IP
 * address, a missing port, UDP). */
int pt_config_read_address(pt_cfg_t *r, const char *field, pt_addr_t *out);
/* The same for an endpoint of a STATIC or EDS cluster: a hostname is refused with a hint
 * at the DNS cluster types. */
int pt_config_read_endpoint_address(pt_cfg_t *r, const char *field, pt_addr_t *out);
/* The same for the idx-th element of the current array (a list of Address). */
int pt_config_read_address_at(pt_cfg_t *r, size_t idx, pt_addr_t *out);
/* An endpoint of a DNS cluster: socket_address.address may be a hostname (or an IP literal),
 * returned in *name as the config gives it, with the port in *port. 1, 0 absent, -1 with
 * errors. */
int pt_config_read_address_or_name(pt_cfg_t *r, const char *field, const char **name,
                                   unsigned *port);

#endif
