/* Runs in a network namespace of its own (unshare), on a dummy-free setup:
 * a TUN device made here, so nothing outside the test is touched. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <cmocka.h>

#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include "net/iface.h"

static int tunfd = -1;

static int setup(void **state)
{
	struct ifreq ifr = { 0 };

	if (unshare(CLONE_NEWNET) != 0) {
		fprintf(stderr, "test_iface needs root (unshare CLONE_NEWNET): %s\n", strerror(errno));
		return -1;
	}
	tunfd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (tunfd < 0)
		return -1;
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "knitrt0");
	return ioctl(tunfd, TUNSETIFF, &ifr) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	close(tunfd);
	return 0;
}

static int run(const char *cmd, char *out, size_t outlen)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	if (!p)
		return -1;
	n = fread(out, 1, outlen - 1, p);
	out[n] = '\0';
	return pclose(p);
}

static void test_link_mtu_up(void **state)
{
	char out[4096];

	assert_int_equal(iface_link_set_mtu("knitrt0", 1280), 0);
	assert_int_equal(iface_link_up("knitrt0"), 0);
	run("ip link show knitrt0", out, sizeof(out));
	assert_non_null(strstr(out, "mtu 1280"));
	assert_non_null(strstr(out, ",UP"));
	assert_int_equal(iface_link_up("nonexistent0"), -ENODEV);
	assert_int_equal(iface_link_set_mtu("knitrt0", 0), -EINVAL);
}

static void test_addresses(void **state)
{
	char out[4096];

	assert_int_equal(iface_link_up("knitrt0"), 0);
	assert_int_equal(iface_addr_add("knitrt0", "100.64.0.5/32"), 0);
	assert_int_equal(iface_addr_add("knitrt0", "100.64.0.5/32"), 0); /* idempotent */
	assert_int_equal(iface_addr_add("knitrt0", "fd7a:115c:a1e0::5/128"), 0);
	assert_true(iface_addr_has("knitrt0", "100.64.0.5/32"));
	assert_true(iface_addr_has("knitrt0", "fd7a:115c:a1e0::5/128"));
	assert_false(iface_addr_has("knitrt0", "100.64.0.6/32"));
	run("ip -o addr show dev knitrt0", out, sizeof(out));
	assert_non_null(strstr(out, "inet 100.64.0.5/32"));
	assert_non_null(strstr(out, "inet6 fd7a:115c:a1e0::5/128"));
	assert_int_equal(iface_addr_del("knitrt0", "100.64.0.5/32"), 0);
	assert_int_equal(iface_addr_del("knitrt0", "100.64.0.5/32"), 0); /* already gone */
	assert_false(iface_addr_has("knitrt0", "100.64.0.5/32"));
	assert_int_equal(iface_addr_add("knitrt0", "100.64.0.5"), -EINVAL);
	assert_int_equal(iface_addr_add("knitrt0", "garbage/32"), -EINVAL);
	assert_int_equal(iface_addr_add("nope0", "100.64.0.5/32"), -ENODEV);
}

static void test_routes(void **state)
{
	char out[4096];

	assert_int_equal(iface_link_up("knitrt0"), 0);
	assert_int_equal(iface_route_add("knitrt0", "100.64.0.0/10"), 0);
	assert_int_equal(iface_route_add("knitrt0", "100.64.0.0/10"), 0);
	assert_int_equal(iface_route_add("knitrt0", "fd7a:115c:a1e0::/48"), 0);
	run("ip route show dev knitrt0; ip -6 route show dev knitrt0", out, sizeof(out));
	assert_non_null(strstr(out, "100.64.0.0/10"));
	assert_non_null(strstr(out, "fd7a:115c:a1e0::/48"));
	run("ip route get 100.100.1.1", out, sizeof(out));
	assert_non_null(strstr(out, "dev knitrt0"));
	assert_int_equal(iface_route_del("knitrt0", "100.64.0.0/10"), 0);
	assert_int_equal(iface_route_del("knitrt0", "100.64.0.0/10"), 0);
	run("ip route show dev knitrt0", out, sizeof(out));
	assert_null(strstr(out, "100.64.0.0/10"));
}

/* A host route for the same prefix is never replaced or removed by ours. */
static void test_main_table_keeps_host_routes(void **state)
{
	char out[4096];

	assert_int_equal(iface_link_up("knitrt0"), 0);
	assert_int_equal(system("ip link add knitrt1 type veth peer name knitrt1p && ip link set knitrt1p up && ip link set knitrt1 up && "
				"ip addr add 192.0.2.1/24 dev knitrt1 && ip route add default via 192.0.2.254"), 0);
	assert_int_equal(iface_route_add("knitrt0", "0.0.0.0/0"), 0); /* no-op, not a replace */
	assert_int_equal(iface_route_add("knitrt0", "192.0.2.0/24"), 0);
	run("ip route show", out, sizeof(out));
	assert_non_null(strstr(out, "default via 192.0.2.254 dev knitrt1"));
	assert_non_null(strstr(out, "192.0.2.0/24 dev knitrt1"));
	assert_null(strstr(out, "dev knitrt0"));
	assert_int_equal(iface_route_del("knitrt0", "0.0.0.0/0"), 0);
	assert_int_equal(iface_route_del("knitrt0", "192.0.2.0/24"), 0);
	run("ip route show", out, sizeof(out));
	assert_non_null(strstr(out, "default via 192.0.2.254 dev knitrt1"));
	assert_non_null(strstr(out, "192.0.2.0/24 dev knitrt1"));
	assert_int_equal(system("ip link del knitrt1"), 0);
}

struct seen {
	char text[1024];
};

static void collect(void *arg, const char *cidr, enum iface_route_kind kind)
{
	struct seen *s = arg;
	size_t n = strlen(s->text);

	snprintf(s->text + n, sizeof(s->text) - n, "%s=%d ", cidr, (int)kind);
}

/* Routes in a table of our own behind a rule; throws send lookups back to
 * the host's routes; the host's routes are listed without ours. */
static void test_table_rules_throws(void **state)
{
	char out[4096];
	struct seen s = { "" };

	assert_int_equal(iface_link_up("knitrt0"), 0);
	assert_int_equal(system("ip link add knitrt2 type veth peer name knitrt2p && ip link set knitrt2p up && ip link set knitrt2 up && "
				"ip addr add 198.51.100.1/24 dev knitrt2 && ip route add default via 198.51.100.254"), 0);
	assert_int_equal(iface_rule_add(AF_INET, 5270, 52, 0, 0), 0);
	assert_int_equal(iface_rule_add(AF_INET, 5270, 52, 0, 0), 0); /* idempotent */
	assert_int_equal(iface_rule_add(AF_INET, 5210, RT_TABLE_MAIN, 0x80000, 0xff0000), 0);
	assert_int_equal(iface_rule_add(AF_INET6, 5270, 52, 0, 0), 0);
	run("ip rule show; ip -6 rule show", out, sizeof(out));
	assert_non_null(strstr(out, "5270:\tfrom all lookup 52"));
	assert_non_null(strstr(out, "5210:\tfrom all fwmark 0x80000/0xff0000 lookup main"));
	/* An exit node's default route and a subnet covering the LAN... */
	assert_int_equal(iface_table_route_add("knitrt0", "0.0.0.0/0", 52), 0);
	assert_int_equal(iface_table_route_add("knitrt0", "198.51.0.0/16", 52), 0);
	assert_int_equal(iface_table_route_add("knitrt0", "198.51.0.0/16", 52), 0);
	run("ip route get 203.0.113.9; ip route get 198.51.7.7", out, sizeof(out));
	assert_int_equal(strstr(strstr(out, "dev knitrt0") + 1, "dev knitrt0") != NULL, 1);
	/* ... with the LAN thrown back to the main table. */
	assert_int_equal(iface_table_throw_add("198.51.100.0/24", 52), 0);
	run("ip route get 198.51.100.7", out, sizeof(out));
	assert_non_null(strstr(out, "dev knitrt2"));
	run("ip route show table 52", out, sizeof(out));
	assert_non_null(strstr(out, "throw 198.51.100.0/24"));
	/* The host's routes, ours excluded. */
	assert_int_equal(iface_host_routes(AF_INET, "knitrt0", collect, &s), 0);
	assert_non_null(strstr(s.text, "0.0.0.0/0=2 "));
	assert_non_null(strstr(s.text, "198.51.100.0/24=0 "));
	assert_null(strstr(s.text, "198.51.0.0/16"));
	/* Withdrawn: the table is empty, the rules gone, the host unchanged. */
	assert_int_equal(iface_table_route_del("knitrt0", "0.0.0.0/0", 52), 0);
	assert_int_equal(iface_table_route_del("knitrt0", "198.51.0.0/16", 52), 0);
	assert_int_equal(iface_table_throw_del("198.51.100.0/24", 52), 0);
	assert_int_equal(iface_table_throw_del("198.51.100.0/24", 52), 0);
	assert_int_equal(iface_rule_del(AF_INET, 5270, 52, 0, 0), 0);
	assert_int_equal(iface_rule_del(AF_INET, 5270, 52, 0, 0), 0);
	assert_int_equal(iface_rule_del(AF_INET, 5210, RT_TABLE_MAIN, 0x80000, 0xff0000), 0);
	assert_int_equal(iface_rule_del(AF_INET6, 5270, 52, 0, 0), 0);
	run("ip route show table 52; ip rule show", out, sizeof(out));
	assert_null(strstr(out, "lookup 52"));
	assert_null(strstr(out, "knitrt0"));
	assert_null(strstr(out, "5210"));
	run("ip route get 203.0.113.9", out, sizeof(out));
	assert_non_null(strstr(out, "via 198.51.100.254 dev knitrt2"));
	assert_int_equal(iface_rule_add(AF_UNIX, 1, 52, 0, 0), -EAFNOSUPPORT);
	assert_int_equal(iface_table_throw_add("198.51.100.0/abc", 52), -EINVAL);
	assert_int_equal(system("ip link del knitrt2"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_link_mtu_up),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_main_table_keeps_host_routes),
		cmocka_unit_test(test_table_rules_throws),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
