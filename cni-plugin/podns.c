#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>

#include "buf.h"
#include "cniresult.h"
#include "podns.h"

/* Child exit codes. */
enum { CHILD_OK = 0, CHILD_MISSING = 1, CHILD_FAILED = 2 };

static bool nladdr_equal(struct nl_addr *a, const struct cniresult_prefix *p)
{
	size_t n = p->family == AF_INET ? 4 : 16;

	return a && nl_addr_get_family(a) == p->family && nl_addr_get_len(a) == n &&
	       nl_addr_get_prefixlen(a) == p->len && memcmp(nl_addr_get_binary_addr(a), p->addr, n) == 0;
}

static bool has_addr(struct nl_cache *addrs, int ifindex, const struct cniresult_prefix *p)
{
	for (struct nl_object *o = nl_cache_get_first(addrs); o; o = nl_cache_get_next(o)) {
		struct rtnl_addr *a = (struct rtnl_addr *)o;

		if (rtnl_addr_get_ifindex(a) == ifindex && nladdr_equal(rtnl_addr_get_local(a), p))
			return true;
	}
	return false;
}

static bool has_route(struct nl_cache *routes, int ifindex, const struct cniresult_prefix *p)
{
	for (struct nl_object *o = nl_cache_get_first(routes); o; o = nl_cache_get_next(o)) {
		struct rtnl_route *r = (struct rtnl_route *)o;
		struct rtnl_nexthop *nh;

		if (rtnl_route_get_table(r) != RT_TABLE_MAIN || !nladdr_equal(rtnl_route_get_dst(r), p))
			continue;
		for (int i = 0; i < rtnl_route_get_nnexthops(r); i++)
			if ((nh = rtnl_route_nexthop_n(r, i)) && rtnl_route_nh_get_ifindex(nh) == ifindex)
				return true;
	}
	return false;
}

/* Runs in the child, inside the netns: writes why to fd, returns the exit code. */
static int inspect(const struct podns_expect *x, char *why, size_t whylen)
{
	struct nl_sock *sk = nl_socket_alloc();
	struct nl_cache *addrs = NULL, *routes = NULL;
	struct rtnl_link *link = NULL;
	struct cniresult_prefix p;
	int ret = CHILD_FAILED, ifindex;

	if (!sk || nl_connect(sk, NETLINK_ROUTE) < 0) {
		errbuf_printf(why, whylen, "cannot open rtnetlink in the pod's netns");
		goto out;
	}
	if (rtnl_link_get_kernel(sk, 0, x->ifname, &link) < 0) {
		errbuf_printf(why, whylen, "interface %s is missing in the pod", x->ifname);
		ret = CHILD_MISSING;
		goto out;
	}
	ifindex = rtnl_link_get_ifindex(link);
	if (!(rtnl_link_get_flags(link) & IFF_UP)) {
		errbuf_printf(why, whylen, "interface %s is down in the pod", x->ifname);
		ret = CHILD_MISSING;
		goto out;
	}
	if (rtnl_addr_alloc_cache(sk, &addrs) < 0 || rtnl_route_alloc_cache(sk, AF_UNSPEC, 0, &routes) < 0) {
		errbuf_printf(why, whylen, "cannot read the pod's addresses and routes");
		goto out;
	}
	for (size_t i = 0; i < x->naddresses; i++) {
		if (!cniresult_prefix_parse(x->addresses[i], &p) || !has_addr(addrs, ifindex, &p)) {
			errbuf_printf(why, whylen, "address %s is missing on %s in the pod", x->addresses[i],
				      x->ifname);
			ret = CHILD_MISSING;
			goto out;
		}
	}
	for (size_t i = 0; i < x->nroutes; i++) {
		if (!cniresult_prefix_parse(x->routes[i], &p) || !has_route(routes, ifindex, &p)) {
			errbuf_printf(why, whylen, "route %s via %s is missing in the pod", x->routes[i], x->ifname);
			ret = CHILD_MISSING;
			goto out;
		}
	}
	ret = CHILD_OK;
out:
	if (routes)
		nl_cache_free(routes);
	if (addrs)
		nl_cache_free(addrs);
	if (link)
		rtnl_link_put(link);
	nl_socket_free(sk);
	return ret;
}

int podns_check(const char *netns, const struct podns_expect *x, char *why, size_t whylen)
{
	int pfd[2] = { -1, -1 }, nsfd = -1, status, ret;
	char msg[512] = "";
	ssize_t n;
	pid_t pid;

	if ((nsfd = open(netns, O_RDONLY | O_CLOEXEC)) < 0) {
		ret = -errno;
		errbuf_printf(why, whylen, "cannot open the pod's netns %s: %s", netns, strerror(errno));
		goto out;
	}
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		ret = -errno;
		errbuf_printf(why, whylen, "pipe: %s", strerror(errno));
		goto out;
	}
	if ((pid = fork()) < 0) {
		ret = -errno;
		errbuf_printf(why, whylen, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		int code;

		close(pfd[0]);
		if (setns(nsfd, CLONE_NEWNET) < 0) {
			errbuf_printf(msg, sizeof(msg), "cannot enter the pod's netns %s: %s", netns, strerror(errno));
			code = CHILD_FAILED;
		} else {
			code = inspect(x, msg, sizeof(msg));
		}
		if (write(pfd[1], msg, strlen(msg)) < 0)
			code = CHILD_FAILED;
		_exit(code);
	}
	close(pfd[1]);
	pfd[1] = -1;
	n = read(pfd[0], msg, sizeof(msg) - 1);
	msg[n > 0 ? n : 0] = '\0';
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK) {
		ret = 0;
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_MISSING) {
		ret = -ESRCH;
		errbuf_printf(why, whylen, "%s", msg);
	} else {
		ret = -EIO;
		errbuf_printf(why, whylen, "%s", msg[0] ? msg : "the netns inspector died");
	}
out:
	if (nsfd >= 0)
		close(nsfd);
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	return ret;
}
