/* lib/net/netns: entering a namespace in a thread, moving a link into
 * another and renaming it there, and the refusal when the name is taken.
 * Needs CAP_SYS_ADMIN: the test makes namespaces of its own (unshare for
 * itself, and two more through /proc/<thread>/ns/net kept open), never
 * touching the host's. */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/netns.h"

static bool have_ns;

/* A fresh namespace as an fd: the caller unshares, opens its own, and goes
 * back to where it was. */
static int new_netns(void)
{
	int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC), fd = -1;

	if (home < 0)
		return -1;
	if (unshare(CLONE_NEWNET) == 0) {
		fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (setns(home, CLONE_NEWNET) != 0)
			abort();
	}
	close(home);
	return fd;
}

static int lo_index(void *arg)
{
	return (int)if_nametoindex("lo");
}

static int add_tun(void *arg)
{
	char cmd[128];

	/* A persistent TUN device, what knitd moves; fork from this thread:
	 * the child is in the thread's namespace. */
	snprintf(cmd, sizeof(cmd), "ip tuntap add dev %s mode tun 2>/dev/null", (const char *)arg);
	return system(cmd) == 0 ? 0 : -EIO;
}

struct move {
	const char *from, *to;
	int nsfd;
};

static int do_move(void *arg)
{
	struct move *m = arg;

	return netns_link_move(m->from, m->nsfd, m->to);
}

static void test_open(void **state)
{
	int fd = netns_open("/proc/self/ns/net");

	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(netns_open("/proc/self/ns/uts"), -EINVAL);
	assert_int_equal(netns_open("/nonexistent/netns"), -ENOENT);
	/* A plain file where a netns mount should be. */
	assert_int_equal(netns_open("/proc/self/stat"), -EINVAL);
}

static void test_run_and_move(void **state)
{
	int a, b;

	if (!have_ns) {
		printf("# skipped: no namespaces (not root?)\n");
		return;
	}
	a = new_netns();
	b = new_netns();
	assert_true(a >= 0 && b >= 0);
	/* A fresh namespace has only lo, at index 1. */
	assert_int_equal(netns_run(a, lo_index, NULL), 1);
	assert_int_equal(netns_run(a, add_tun, "kut0"), 0);
	assert_true(netns_link_exists(a, "kut0"));
	assert_false(netns_link_exists(b, "kut0"));

	struct move m = { .from = "kut0", .to = "knit0", .nsfd = b };
	assert_int_equal(netns_run(a, do_move, &m), 0);
	assert_false(netns_link_exists(a, "kut0"));
	assert_true(netns_link_exists(b, "knit0"));
	assert_false(netns_link_exists(b, "kut0"));

	/* The name taken there: refused, and the link stays home. */
	assert_int_equal(netns_run(a, add_tun, "kut1"), 0);
	m.from = "kut1";
	assert_int_equal(netns_run(a, do_move, &m), -EEXIST);
	assert_true(netns_link_exists(a, "kut1"));
	/* Keeping its name. */
	m.to = NULL;
	assert_int_equal(netns_run(a, do_move, &m), 0);
	assert_true(netns_link_exists(b, "kut1"));
	close(a);
	close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_run_and_move),
	};
	int fd = new_netns();

	have_ns = fd >= 0;
	if (fd >= 0)
		close(fd);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
