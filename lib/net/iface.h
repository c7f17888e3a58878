/* Addresses, routes and link state through rtnetlink (libnl-route-3), for
 * putting a tailnet identity's addresses on its TUN device and routing the
 * tailnet (and approved subnets) into it. Calls are synchronous and
 * idempotent: adding what is there, or deleting what is not, succeeds. */
#ifndef KNIT_NET_IFACE_H
#define KNIT_NET_IFACE_H

#include <stdbool.h>
#include <stdint.h>

/* "100.64.0.5/32", "fd7a:115c:a1e0::5/128" on ifname. */
int iface_addr_add(const char *ifname, const char *cidr);
int iface_addr_del(const char *ifname, const char *cidr);
/* A route for cidr through ifname (no gateway: point-to-point), in the
 * main table, metric 0. Never replaces a route that is already there for
 * the same prefix (it may be the host's): adding one is then a no-op. */
int iface_route_add(const char *ifname, const char *cidr);
int iface_route_del(const char *ifname, const char *cidr);
/* The same in a routing table of knit's own (where an existing route for
 * the prefix is replaced), and "throw" routes there: a lookup that meets
 * one goes on to the next rule, so the host's own routes decide. */
int iface_table_route_add(const char *ifname, const char *cidr, uint32_t table);
int iface_table_route_del(const char *ifname, const char *cidr, uint32_t table);
int iface_table_throw_add(const char *cidr, uint32_t table);
int iface_table_throw_del(const char *cidr, uint32_t table);
/* A policy rule "[fwmark mark/mask] lookup table" at priority, for family
 * AF_INET or AF_INET6 (mask 0: no fwmark match). */
int iface_rule_add(int family, uint32_t priority, uint32_t table, uint32_t mark, uint32_t mask);
int iface_rule_del(int family, uint32_t priority, uint32_t table, uint32_t mark, uint32_t mask);

/* The host's unicast routes in the main table (family AF_INET, AF_INET6 or
 * 0 for both), except those through skip_ifname: "10.1.0.0/24" with its
 * kind. Calls fn once per route. */
enum iface_route_kind {
	IFACE_ROUTE_CONNECTED, /* scope link: a directly attached network */
	IFACE_ROUTE_VIA, /* through a gateway */
	IFACE_ROUTE_DEFAULT, /* 0.0.0.0/0 or ::/0 */
};
typedef void (*iface_route_fn)(void *arg, const char *cidr, enum iface_route_kind kind);
int iface_host_routes(int family, const char *skip_ifname, iface_route_fn fn, void *arg);
int iface_link_up(const char *ifname);
int iface_link_set_mtu(const char *ifname, unsigned mtu);
/* True if ifname has exactly this address. */
bool iface_addr_has(const char *ifname, const char *cidr);

#endif
