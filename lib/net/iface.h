/* Addresses, routes and link state through rtnetlink (libnl-route-3), for
 * putting a tailnet identity's addresses on its TUN device and routing the
 * tailnet (and approved subnets) into it. Calls are synchronous and
 * idempotent: adding what is there, or deleting what is not, succeeds. */
#ifndef KNIT_NET_IFACE_H
#define KNIT_NET_IFACE_H

#include <stdbool.h>

/* "100.64.0.5/32", "fd7a:115c:a1e0::5/128" on ifname. */
int iface_addr_add(const char *ifname, const char *cidr);
int iface_addr_del(const char *ifname, const char *cidr);
/* A route for cidr through ifname (no gateway: point-to-point), in the
 * main table, metric 0. */
int iface_route_add(const char *ifname, const char *cidr);
int iface_route_del(const char *ifname, const char *cidr);
int iface_link_up(const char *ifname);
int iface_link_set_mtu(const char *ifname, unsigned mtu);
/* True if ifname has exactly this address. */
bool iface_addr_has(const char *ifname, const char *cidr);

#endif
