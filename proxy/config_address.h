/* envoy.config.core.v3.Address as petrel reads it: a socket_address (TCP) with an IP
 * address and a port. One reader for every place an address appears (listeners, the admin,
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

#endif
