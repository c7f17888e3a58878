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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_link_mtu_up),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_routes),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
