/* cni-plugin/podns.c on a real network namespace (root): a TUN device
 * (what knitd moves into the pod) with the addresses and routes knitd
 * would give knit0, then each of them taken away. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "podns.h"

static char ns[64], path[128];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0)
		fail_msg("failed: %s", cmd);
}

static int setup(void **state)
{
	char cmd[1024];

	if (geteuid() != 0)
		return 0;
	snprintf(ns, sizeof(ns), "knit-cni-unit-%d", getpid());
	snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
	snprintf(cmd, sizeof(cmd),
		 "set -e; ip netns add %1$s; ip -n %1$s tuntap add dev knit0 mode tun; ip -n %1$s link set knit0 up;"
		 "ip -n %1$s addr add 100.64.0.9/32 dev knit0; ip -n %1$s addr add fd7a:115c:a1e0::9/128 dev knit0 nodad;"
		 "ip -n %1$s route add 100.64.0.0/10 dev knit0; ip -n %1$s route add fd7a:115c:a1e0::/48 dev knit0",
		 ns);
	if (system(cmd) != 0) {
		/* cmocka skips teardown after a failed setup. */
		snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", ns);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove netns %s\n", ns);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	if (geteuid() == 0)
		sh("ip netns del %s", ns);
	return 0;
}

static const char *const addrs[] = { "100.64.0.9/32", "fd7a:115c:a1e0::9/128" };
static const char *const routes[] = { "100.64.0.0/10", "fd7a:115c:a1e0::/48" };

static void test_check(void **state)
{
	struct podns_expect x = { "knit0", addrs, 2, routes, 2 };
	struct podns_expect other = { "knit1", addrs, 2, routes, 2 };
	char why[256] = "";

	if (geteuid() != 0)
		skip();
	if (podns_check(path, &x, why, sizeof(why)) != 0)
		fail_msg("healthy pod: %s", why);
	assert_int_equal(podns_check(path, &other, why, sizeof(why)), -ESRCH);
	assert_non_null(strstr(why, "knit1 is missing"));
	assert_int_equal(podns_check("/var/run/netns/knit-cni-unit-none", &x, why, sizeof(why)), -ENOENT);

	/* Take each away in turn: CHECK must notice, and pass once it is back. */
	sh("ip -n %s route del fd7a:115c:a1e0::/48 dev knit0", ns);
	assert_int_equal(podns_check(path, &x, why, sizeof(why)), -ESRCH);
	assert_non_null(strstr(why, "route fd7a:115c:a1e0::/48"));
	sh("ip -n %s route add fd7a:115c:a1e0::/48 dev knit0", ns);
	assert_int_equal(podns_check(path, &x, why, sizeof(why)), 0);

	sh("ip -n %s addr del 100.64.0.9/32 dev knit0", ns);
	assert_int_equal(podns_check(path, &x, why, sizeof(why)), -ESRCH);
	assert_non_null(strstr(why, "address 100.64.0.9/32"));
	sh("ip -n %s addr add 100.64.0.9/32 dev knit0", ns);

	sh("ip -n %s link set knit0 down", ns);
	assert_int_equal(podns_check(path, &x, why, sizeof(why)), -ESRCH);
	assert_non_null(strstr(why, "down"));
	/* Up again, the kernel has dropped the IPv6 address and the routes
	 * with the link: still not what the result says. */
	sh("ip -n %s link set knit0 up", ns);
	assert_int_equal(podns_check(path, &x, why, sizeof(why)), -ESRCH);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_check, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
