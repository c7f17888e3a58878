/* agent/identity.c: two identities in one process, on one hub (one UDP
 * socket), each with its own TUN device, netmap and peers, reach different
 * peers; the peers are two identities of a second "node" (another hub in
 * the same process). Every TUN lives in a network namespace of its own, as
 * pods' will; the hubs' sockets talk over the test's loopback. Netmaps go
 * in as the map stream would hand them over, full and then a delta, and
 * come out as engine peers, addresses and routes. Runs as root in
 * namespaces of its own (skipped otherwise). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "control/messages.h"
#include "identity.h"
#include "log.h"
#include "loop.h"
#include "state.h"
#include "wg/aead.h"
#include "wg/engine.h"
#include "wg/hub.h"

enum { A, B, P, Q, N };
static const char *const names[N] = { "kti0a", "kti0b", "kti0p", "kti0q" };
/* A's peer is P, B's is Q: two tailnets that happen to share two nodes. */
static const char *const self_addr[N] = { "100.70.0.1/32", "100.71.0.1/32", "100.70.0.2/32", "100.71.0.2/32" };
static const int peer_of[N] = { P, Q, A, B };
static int ns_root = -1, ns[N] = { -1, -1, -1, -1 };

struct fx {
	struct loop *loop;
	struct hub *node1, *node2; /* A and B on node1, P and Q on node2 */
	struct identity *id[N];
	uint8_t pub[N][32];
};

static void enter(int fd)
{
	assert_int_equal(setns(fd, CLONE_NEWNET), 0);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static struct hub *hub_of(struct fx *f, int i)
{
	return i == A || i == B ? f->node1 : f->node2;
}

/* i's netmap: itself and its one peer, reachable on the peer's hub. */
static void netmap_of(struct fx *f, int i, struct netmap *nm)
{
	int p = peer_of[i];
	struct netmap_node *n;

	memset(nm, 0, sizeof(*nm));
	nm->seq = 1;
	nm->self.addresses = calloc(1, sizeof(struct netmap_prefix));
	assert_non_null(nm->self.addresses);
	assert_true(netmap_prefix_parse(&nm->self.addresses[0], self_addr[i]));
	nm->self.naddresses = 1;
	memcpy(nm->self.node_key, f->pub[i], 32);
	nm->peers = n = calloc(1, sizeof(*n));
	assert_non_null(n);
	nm->npeers = 1;
	memcpy(n->node_key, f->pub[p], 32);
	n->name = strdup(names[p]);
	n->addresses = calloc(1, sizeof(struct netmap_prefix));
	n->allowed_ips = calloc(1, sizeof(struct netmap_prefix));
	n->endpoints = calloc(1, sizeof(struct endpoint));
	assert_true(n->name && n->addresses && n->allowed_ips && n->endpoints);
	assert_true(netmap_prefix_parse(&n->addresses[0], self_addr[p]));
	n->allowed_ips[0] = n->addresses[0];
	n->naddresses = n->nallowed_ips = 1;
	n->endpoints[0].addr.in4.sin_family = AF_INET;
	n->endpoints[0].addr.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	n->endpoints[0].addr.in4.sin_port = htons(hub_port(hub_of(f, p)));
	n->nendpoints = 1;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct hub_config hc = { .workers = 0, .readers_help = true };

	assert_non_null(f);
	f->loop = loop_new();
	assert_non_null(f->loop);
	enter(ns_root);
	assert_int_equal(hub_new(&f->node1, f->loop, &hc), 0);
	assert_int_equal(hub_new(&f->node2, f->loop, &hc), 0);
	for (int i = 0; i < N; i++) {
		struct identity_config ic = { .ifname = names[i] };
		struct state *st;

		assert_int_equal(state_new(&st), 0);
		crypto_scalarmult_base(f->pub[i], st->node_key);
		enter(ns[i]);
		assert_int_equal(identity_new(&f->id[i], f->loop, hub_of(f, i), st, &ic), 0);
		assert_string_equal(engine_ifname(identity_engine(f->id[i])), names[i]);
	}
	for (int i = 0; i < N; i++) {
		struct netmap nm;

		netmap_of(f, i, &nm);
		enter(ns[i]);
		assert_int_equal(identity_apply_netmap(f->id[i], &nm), 0);
		netmap_free(&nm);
	}
	enter(ns_root);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	enter(ns_root);
	for (int i = 0; i < N; i++)
		identity_free(f->id[i]);
	hub_free(f->node1);
	hub_free(f->node2);
	loop_free(f->loop);
	free(f);
	return 0;
}

static int udp_in(int i, const char *addr, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int s;

	enter(ns[i]);
	s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	assert_true(s >= 0);
	inet_pton(AF_INET, addr, &sin.sin_addr);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	enter(ns_root);
	return s;
}

/* Sends msg from s to addr:port until it arrives on r (the handshake
 * first), running the loop meanwhile. The bytes received, -1 after 12 s,
 * or -errno when the sender's namespace has no route. */
static ssize_t through(struct fx *f, int s, const char *addr, uint16_t port, int r, const char *msg)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port) };
	uint64_t deadline = loop_mono_ms() + 12000, next = 0;
	char buf[256];
	ssize_t n;

	inet_pton(AF_INET, addr, &to.sin_addr);
	while (loop_mono_ms() < deadline) {
		if (loop_mono_ms() >= next) {
			if (sendto(s, msg, strlen(msg), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
				return -errno;
			next = loop_mono_ms() + 200;
		}
		loop_run_once(f->loop, 10);
		while ((n = recv(r, buf, sizeof(buf) - 1, 0)) >= 0) {
			buf[n] = '\0';
			if (!strcmp(buf, msg))
				return n;
		}
	}
	return -1;
}

static bool has_on_link(int i, const char *what)
{
	int r;

	enter(ns[i]);
	r = sh("ip -4 addr show dev %s | grep -q ' %s ' && ip -4 route show dev %s | grep -q '^%s '", names[i],
	       self_addr[i], names[i], what);
	enter(ns_root);
	return r == 0;
}

static void test_two_identities_reach_different_peers(void **state)
{
	struct fx *f = *state;
	struct engine_peer_stats st;
	int sa = udp_in(A, "100.70.0.1", 7101), sp = udp_in(P, "100.70.0.2", 7102);
	int sb = udp_in(B, "100.71.0.1", 7103), sq = udp_in(Q, "100.71.0.2", 7104);

	/* Both identities of node1 share its hub, so its one UDP port. */
	assert_ptr_equal(identity_engine(f->id[A])->hub, f->node1);
	assert_ptr_equal(identity_engine(f->id[B])->hub, f->node1);
	assert_true(has_on_link(A, "100.70.0.2"));
	assert_true(has_on_link(B, "100.71.0.2"));
	assert_false(has_on_link(A, "100.71.0.2"));

	assert_int_equal(through(f, sa, "100.70.0.2", 7102, sp, "A to P"), 6);
	assert_int_equal(through(f, sp, "100.70.0.1", 7101, sa, "P to A"), 6);
	assert_int_equal(through(f, sb, "100.71.0.2", 7104, sq, "B to Q"), 6);
	assert_int_equal(through(f, sq, "100.71.0.1", 7103, sb, "Q to B"), 6);

	assert_int_equal(engine_peer_stats(identity_engine(f->id[A]), f->pub[P], &st), 0);
	assert_true(st.has_session && st.rx_bytes > 0);
	assert_int_equal(engine_peer_stats(identity_engine(f->id[B]), f->pub[Q], &st), 0);
	assert_true(st.has_session && st.rx_bytes > 0);
	/* Each identity has its own peers, and only those. */
	assert_int_equal(engine_peer_stats(identity_engine(f->id[A]), f->pub[Q], &st), -ENOENT);
	assert_int_equal(engine_peer_stats(identity_engine(f->id[B]), f->pub[P], &st), -ENOENT);
	/* A's namespace has no way to B's peer. */
	assert_int_equal(through(f, sa, "100.71.0.2", 7104, sq, "A to Q"), -ENETUNREACH);
	close(sa);
	close(sp);
	close(sb);
	close(sq);
}

/* A delta that removes A's peer takes it out of A's engine and its route
 * off A's TUN, and leaves B alone. */
static void test_delta_on_one_identity(void **state)
{
	struct fx *f = *state;
	struct netmap_delta d = { .seq = 2 };
	struct engine_peer_stats st;
	int sb = udp_in(B, "100.71.0.1", 7105), sq = udp_in(Q, "100.71.0.2", 7106);

	d.remove = calloc(1, sizeof(*d.remove));
	assert_non_null(d.remove);
	memcpy(d.remove[0], f->pub[P], 32);
	d.nremove = 1;
	enter(ns[A]);
	assert_int_equal(identity_apply_delta(f->id[A], &d), 0);
	netmap_delta_free(&d);
	enter(ns_root);
	assert_int_equal(engine_peer_stats(identity_engine(f->id[A]), f->pub[P], &st), -ENOENT);
	assert_false(has_on_link(A, "100.70.0.2"));
	assert_int_equal(identity_netmap(f->id[A])->npeers, 0);
	assert_int_equal(identity_netmap(f->id[A])->seq, 2);
	/* A stale delta is refused and changes nothing. */
	d = (struct netmap_delta){ .seq = 2 };
	assert_int_equal(identity_apply_delta(f->id[A], &d), -ESTALE);
	netmap_delta_free(&d);

	assert_int_equal(through(f, sb, "100.71.0.2", 7106, sq, "B still"), 7);
	assert_true(has_on_link(B, "100.71.0.2"));
	close(sb);
	close(sq);
}

/* Identities come and go at run time: a third one on node1, then gone,
 * with its TUN device. */
static void test_created_and_destroyed_at_run_time(void **state)
{
	struct fx *f = *state;
	struct identity_config ic = { .ifname = "kti0c" };
	struct identity *c;
	struct state *st;

	assert_int_equal(state_new(&st), 0);
	enter(ns[A]);
	assert_int_equal(identity_new(&c, f->loop, f->node1, st, &ic), 0);
	assert_string_equal(identity_backend_state(c), "NeedsLogin");
	assert_null(identity_netmap(c));
	assert_int_equal(sh("ip link show kti0c >/dev/null 2>&1"), 0);
	identity_free(c);
	assert_true(sh("ip link show kti0c >/dev/null 2>&1") != 0);
	enter(ns_root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_two_identities_reach_different_peers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delta_on_one_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_created_and_destroyed_at_run_time, setup, teardown),
	};
	enum log_level level = LOG_WARN;

	if (getenv("KNIT_LOG_LEVEL"))
		log_level_parse(getenv("KNIT_LOG_LEVEL"), &level);
	log_init("test_identity", level);
	if (aead_init(AEAD_IMPL_AUTO) != 0)
		return 1;
	if (unshare(CLONE_NEWNET) != 0) {
		printf("# skipped: unshare(CLONE_NEWNET): %s\n", strerror(errno));
		return 0;
	}
	ns_root = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns_root < 0 || system("ip link set lo up") != 0)
		return 1;
	for (int i = 0; i < N; i++) {
		if (unshare(CLONE_NEWNET) != 0)
			return 1;
		ns[i] = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (ns[i] < 0 || system("ip link set lo up") != 0)
			return 1;
	}
	enter(ns_root);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
