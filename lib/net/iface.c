#include "net/iface.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <net/if.h>
#include <string.h>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>

/* libnl's error codes are its own: map the ones that mean something here. */
static int nl_to_errno(int nlerr)
{
	switch (-nlerr) {
	case 0: return 0;
	case NLE_EXIST: return -EEXIST;
	case NLE_OBJ_NOTFOUND: return -ENOENT;
	case NLE_NODEV: return -ENODEV;
	case NLE_PERM: return -EPERM;
	case NLE_INVAL: return -EINVAL;
	case NLE_NOMEM: return -ENOMEM;
	case NLE_NOADDR: return -EADDRNOTAVAIL;
	case NLE_AF_NOSUPPORT: return -EAFNOSUPPORT;
	case NLE_BUSY: return -EBUSY;
	case NLE_RANGE: return -ERANGE;
	case NLE_NOACCESS: return -EACCES;
	default: return -EIO;
	}
}

static struct nl_sock *open_sock(int *err)
{
	struct nl_sock *sk = nl_socket_alloc();

	if (!sk) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = nl_to_errno(nl_connect(sk, NETLINK_ROUTE));
	if (*err) {
		nl_socket_free(sk);
		return NULL;
	}
	return sk;
}

/* Strict: "address/prefix" with a real address and prefix, or -EINVAL. */
static int parse_cidr(const char *cidr, struct nl_addr **out)
{
	int family = strchr(cidr, ':') ? AF_INET6 : AF_INET;
	const char *slash = strchr(cidr, '/');
	unsigned char buf[16];
	char addr[INET6_ADDRSTRLEN];
	char *end;
	long bits;

	if (!slash || (size_t)(slash - cidr) >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, cidr, (size_t)(slash - cidr));
	addr[slash - cidr] = '\0';
	bits = strtol(slash + 1, &end, 10);
	if (inet_pton(family, addr, buf) != 1 || end == slash + 1 || *end || bits < 0 ||
	    bits > (family == AF_INET ? 32 : 128))
		return -EINVAL;
	return nl_to_errno(nl_addr_parse(cidr, family, out));
}

static int addr_op(const char *ifname, const char *cidr, bool add)
{
	struct rtnl_addr *a = NULL;
	struct nl_addr *local = NULL;
	struct nl_sock *sk = NULL;
	unsigned idx = if_nametoindex(ifname);
	int err;

	if (!idx)
		return -ENODEV;
	err = parse_cidr(cidr, &local);
	if (err)
		goto out;
	sk = open_sock(&err);
	if (!sk)
		goto out;
	a = rtnl_addr_alloc();
	if (!a) {
		err = -ENOMEM;
		goto out;
	}
	rtnl_addr_set_ifindex(a, (int)idx);
	rtnl_addr_set_family(a, nl_addr_get_family(local));
	err = nl_to_errno(rtnl_addr_set_local(a, local));
	if (err)
		goto out;
	err = nl_to_errno(add ? rtnl_addr_add(sk, a, NLM_F_REPLACE) : rtnl_addr_delete(sk, a, 0));
	if (err == -EEXIST && add)
		err = 0;
	if ((err == -ENOENT || err == -EADDRNOTAVAIL) && !add)
		err = 0;
out:
	rtnl_addr_put(a);
	nl_addr_put(local);
	nl_socket_free(sk);
	return err;
}

int iface_addr_add(const char *ifname, const char *cidr)
{
	return addr_op(ifname, cidr, true);
}

int iface_addr_del(const char *ifname, const char *cidr)
{
	return addr_op(ifname, cidr, false);
}

/* A route in table: through ifname (point-to-point, no gateway) when
 * ifname is set, else a "throw" that sends the lookup on to the next rule.
 * In the main table an existing route is never replaced (it may be the
 * host's own); in a table of knit's own it is. */
static int route_op(const char *ifname, const char *cidr, uint32_t table, bool add)
{
	struct rtnl_route *r = NULL;
	struct rtnl_nexthop *nh = NULL;
	struct nl_addr *dst = NULL;
	struct nl_sock *sk = NULL;
	unsigned idx = 0;
	int err, flags;

	if (ifname && !(idx = if_nametoindex(ifname)))
		return -ENODEV;
	err = parse_cidr(cidr, &dst);
	if (err)
		goto out;
	sk = open_sock(&err);
	if (!sk)
		goto out;
	r = rtnl_route_alloc();
	if (!r) {
		err = -ENOMEM;
		goto out;
	}
	rtnl_route_set_family(r, (uint8_t)nl_addr_get_family(dst));
	rtnl_route_set_table(r, table);
	rtnl_route_set_protocol(r, RTPROT_STATIC);
	err = nl_to_errno(rtnl_route_set_dst(r, dst));
	if (err)
		goto out;
	if (ifname) {
		nh = rtnl_route_nh_alloc();
		if (!nh) {
			err = -ENOMEM;
			goto out;
		}
		rtnl_route_set_scope(r, RT_SCOPE_LINK);
		rtnl_route_nh_set_ifindex(nh, (int)idx);
		rtnl_route_add_nexthop(r, nh);
		nh = NULL; /* the route owns it now */
	} else {
		rtnl_route_set_type(r, RTN_THROW);
		rtnl_route_set_scope(r, RT_SCOPE_UNIVERSE);
	}
	flags = NLM_F_CREATE | (table == RT_TABLE_MAIN ? NLM_F_EXCL : NLM_F_REPLACE);
	err = nl_to_errno(add ? rtnl_route_add(sk, r, flags) : rtnl_route_delete(sk, r, 0));
	if (err == -EEXIST && add)
		err = 0;
	if ((err == -ENOENT || err == -ESRCH) && !add)
		err = 0;
out:
	if (nh)
		rtnl_route_nh_free(nh);
	rtnl_route_put(r);
	nl_addr_put(dst);
	nl_socket_free(sk);
	return err;
}

int iface_route_add(const char *ifname, const char *cidr)
{
	return route_op(ifname, cidr, RT_TABLE_MAIN, true);
}

int iface_route_del(const char *ifname, const char *cidr)
{
	return route_op(ifname, cidr, RT_TABLE_MAIN, false);
}

int iface_table_route_add(const char *ifname, const char *cidr, uint32_t table)
{
	return ifname ? route_op(ifname, cidr, table, true) : -EINVAL;
}

int iface_table_route_del(const char *ifname, const char *cidr, uint32_t table)
{
	return ifname ? route_op(ifname, cidr, table, false) : -EINVAL;
}

int iface_table_throw_add(const char *cidr, uint32_t table)
{
	return route_op(NULL, cidr, table, true);
}

int iface_table_throw_del(const char *cidr, uint32_t table)
{
	return route_op(NULL, cidr, table, false);
}

static int rule_op(int family, uint32_t priority, uint32_t table, uint32_t mark, uint32_t mask, bool add)
{
	struct rtnl_rule *r = NULL;
	struct nl_sock *sk;
	int err;

	if (family != AF_INET && family != AF_INET6)
		return -EAFNOSUPPORT;
	sk = open_sock(&err);
	if (!sk)
		return err;
	r = rtnl_rule_alloc();
	if (!r) {
		err = -ENOMEM;
		goto out;
	}
	rtnl_rule_set_family(r, family);
	rtnl_rule_set_prio(r, priority);
	rtnl_rule_set_table(r, table);
	rtnl_rule_set_action(r, FR_ACT_TO_TBL);
	if (mask) {
		rtnl_rule_set_mark(r, mark);
		rtnl_rule_set_mask(r, mask);
	}
	err = nl_to_errno(add ? rtnl_rule_add(sk, r, NLM_F_CREATE | NLM_F_EXCL) : rtnl_rule_delete(sk, r, 0));
	if (err == -EEXIST && add)
		err = 0;
	if ((err == -ENOENT || err == -ESRCH) && !add)
		err = 0;
out:
	rtnl_rule_put(r);
	nl_socket_free(sk);
	return err;
}

int iface_rule_add(int family, uint32_t priority, uint32_t table, uint32_t mark, uint32_t mask)
{
	return rule_op(family, priority, table, mark, mask, true);
}

int iface_rule_del(int family, uint32_t priority, uint32_t table, uint32_t mark, uint32_t mask)
{
	return rule_op(family, priority, table, mark, mask, false);
}

struct host_routes_ctx {
	int skip_ifindex;
	iface_route_fn fn;
	void *arg;
};

static void host_route_one(struct nl_object *obj, void *arg)
{
	struct host_routes_ctx *ctx = arg;
	struct rtnl_route *r = (struct rtnl_route *)obj;
	struct nl_addr *dst = rtnl_route_get_dst(r);
	struct rtnl_nexthop *nh;
	char text[INET6_ADDRSTRLEN + 8], addr[INET6_ADDRSTRLEN];
	bool def;

	if (rtnl_route_get_table(r) != RT_TABLE_MAIN || rtnl_route_get_type(r) != RTN_UNICAST || !dst)
		return;
	nh = rtnl_route_nexthop_n(r, 0);
	if (nh && ctx->skip_ifindex && rtnl_route_nh_get_ifindex(nh) == ctx->skip_ifindex)
		return;
	def = nl_addr_get_prefixlen(dst) == 0;
	/* A default route's destination carries no address bytes at all. */
	if (nl_addr_get_len(dst) == (nl_addr_get_family(dst) == AF_INET6 ? 16u : 4u)) {
		if (!inet_ntop(nl_addr_get_family(dst), nl_addr_get_binary_addr(dst), addr, sizeof(addr)))
			return;
	} else if (def) {
		snprintf(addr, sizeof(addr), "%s", nl_addr_get_family(dst) == AF_INET6 ? "::" : "0.0.0.0");
	} else {
		return;
	}
	snprintf(text, sizeof(text), "%s/%u", addr, nl_addr_get_prefixlen(dst));
	ctx->fn(ctx->arg, text, def ? IFACE_ROUTE_DEFAULT :
		rtnl_route_get_scope(r) == RT_SCOPE_LINK ? IFACE_ROUTE_CONNECTED : IFACE_ROUTE_VIA);
}

int iface_host_routes(int family, const char *skip_ifname, iface_route_fn fn, void *arg)
{
	struct host_routes_ctx ctx = { .fn = fn, .arg = arg };
	struct nl_cache *cache = NULL;
	struct nl_sock *sk;
	int err;

	if (skip_ifname)
		ctx.skip_ifindex = (int)if_nametoindex(skip_ifname);
	sk = open_sock(&err);
	if (!sk)
		return err;
	err = nl_to_errno(rtnl_route_alloc_cache(sk, family, 0, &cache));
	if (!err)
		nl_cache_foreach(cache, host_route_one, &ctx);
	nl_cache_free(cache);
	nl_socket_free(sk);
	return err;
}

static int link_change(const char *ifname, bool up, unsigned mtu)
{
	struct rtnl_link *link = NULL, *change = NULL;
	struct nl_sock *sk;
	int err;

	sk = open_sock(&err);
	if (!sk)
		return err;
	err = nl_to_errno(rtnl_link_get_kernel(sk, 0, ifname, &link));
	if (err)
		goto out;
	change = rtnl_link_alloc();
	if (!change) {
		err = -ENOMEM;
		goto out;
	}
	if (up)
		rtnl_link_set_flags(change, IFF_UP);
	if (mtu)
		rtnl_link_set_mtu(change, mtu);
	err = nl_to_errno(rtnl_link_change(sk, link, change, 0));
out:
	rtnl_link_put(change);
	rtnl_link_put(link);
	nl_socket_free(sk);
	return err;
}

int iface_link_up(const char *ifname)
{
	return link_change(ifname, true, 0);
}

int iface_link_set_mtu(const char *ifname, unsigned mtu)
{
	return mtu ? link_change(ifname, false, mtu) : -EINVAL;
}

struct has_ctx {
	int ifindex;
	struct nl_addr *want;
	bool found;
};

static void check_addr(struct nl_object *obj, void *arg)
{
	struct has_ctx *h = arg;
	struct rtnl_addr *a = (struct rtnl_addr *)obj;

	if (rtnl_addr_get_ifindex(a) == h->ifindex && nl_addr_cmp(rtnl_addr_get_local(a), h->want) == 0)
		h->found = true;
}

bool iface_addr_has(const char *ifname, const char *cidr)
{
	struct has_ctx h = { .ifindex = (int)if_nametoindex(ifname) };
	struct nl_cache *cache = NULL;
	struct nl_sock *sk;
	int err;

	if (!h.ifindex || parse_cidr(cidr, &h.want))
		return false;
	sk = open_sock(&err);
	if (sk && rtnl_addr_alloc_cache(sk, &cache) == 0)
		nl_cache_foreach(cache, check_addr, &h);
	nl_cache_free(cache);
	nl_socket_free(sk);
	nl_addr_put(h.want);
	return h.found;
}
