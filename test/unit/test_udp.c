/* UDP batch I/O over loopback in a network namespace of our own. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "net/endpoint.h"
#include "net/udp.h"

#define N 256
#define SLOT 2048

struct msgs {
	uint8_t mem[N][SLOT];
	struct udp_msg m[N];
};

static struct msgs *msgs_new(size_t cap)
{
	struct msgs *b = calloc(1, sizeof(*b));
	assert_non_null(b);
	for (int i = 0; i < N; i++)
		b->m[i] = (struct udp_msg){ .data = b->mem[i], .cap = cap };
	return b;
}

static void fill(uint8_t *p, size_t len, unsigned k)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(k * 13 + i);
}

static size_t size_of(unsigned k)
{
	/* runs of equal sizes with odd ones between, so GSO groups form and end */
	return k % 50 == 49 ? 300 + k : 1200;
}

static struct endpoint ep_of(const char *s)
{
	struct endpoint ep;
	const char *why;

	if (!endpoint_parse(&ep, s, &why))
		fail_msg("%s: %s", s, why);
	return ep;
}

/* Receives until `want` datagrams; returns how many came. */
static size_t recv_all(struct udp *u, struct msgs *in, size_t want, unsigned *seen)
{
	size_t got = 0;

	for (int idle = 0; got < want && idle < 20;) {
		int n = udp_recv(u, in->m, N);
		if (n == -EAGAIN) {
			struct pollfd p = { .fd = udp_fd(u), .events = POLLIN };
			if (poll(&p, 1, 100) == 0)
				idle++;
			continue;
		}
		assert_true(n > 0);
		for (int i = 0; i < n; i++, got++) {
			unsigned k = in->m[i].data[0] | (unsigned)in->m[i].data[1] << 8;
			uint8_t want_bytes[SLOT];
			assert_int_equal(k, *seen); /* in order, none lost */
			assert_int_equal(in->m[i].len, size_of(k));
			fill(want_bytes, in->m[i].len, k);
			want_bytes[0] = k & 0xff, want_bytes[1] = (uint8_t)(k >> 8);
			assert_memory_equal(in->m[i].data, want_bytes, in->m[i].len);
			(*seen)++;
		}
	}
	return got;
}

static void roundtrip(int family, unsigned flags)
{
	struct udp *tx, *rx;
	struct msgs *out = msgs_new(SLOT), *in = msgs_new(SLOT);
	struct udp_stats ts, rs;
	char dst[64];
	unsigned seen = 0, total = 0;

	assert_int_equal(udp_open(&tx, family, 0, flags), 0);
	assert_int_equal(udp_open(&rx, family, 0, flags), 0);
	assert_int_not_equal(udp_port(rx), 0);
	snprintf(dst, sizeof(dst), "%s:%u", family == AF_INET ? "127.0.0.1" : "[::1]", udp_port(rx));

	for (int round = 0; round < 4; round++) {
		size_t n = N, done = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned k = total + (unsigned)i;
			out->m[i].len = size_of(k);
			fill(out->m[i].data, out->m[i].len, k);
			out->m[i].data[0] = k & 0xff, out->m[i].data[1] = (uint8_t)(k >> 8);
			out->m[i].ep = ep_of(dst);
		}
		while (done < n) {
			int r = udp_send(tx, out->m + done, n - done);
			if (r == -EAGAIN) {
				recv_all(rx, in, 1, &seen); /* make room */
				continue;
			}
			assert_true(r > 0);
			done += (size_t)r;
		}
		total += (unsigned)n;
		recv_all(rx, in, total - seen, &seen);
	}
	assert_int_equal(seen, total);

	/* the sender's address and our local one come with each datagram */
	udp_stats(tx, &ts);
	udp_stats(rx, &rs);
	printf("# family %d flags %u: gso=%d gro=%d tx %llu syscalls (%llu GSO sends), rx %llu syscalls (%llu coalesced)\n",
	       family, flags, udp_gso(tx), udp_gro(rx), ts.send_syscalls, ts.gso_sends, rs.recv_syscalls,
	       rs.gro_datagrams);
	assert_int_equal(ts.dropped_tx, 0);
	assert_int_equal(rs.dropped_rx, 0);
	if (!(flags & UDP_OPEN_NO_GSO)) {
		assert_true(udp_gso(tx));
		assert_true(ts.gso_sends > 0);
		assert_true(ts.send_syscalls < total / 10);
	}
	if (!(flags & (UDP_OPEN_NO_GRO | UDP_OPEN_NO_GSO))) {
		assert_true(udp_gro(rx));
		assert_true(rs.gro_datagrams > 0);
	}
	udp_close(tx);
	udp_close(rx);
	free(out);
	free(in);
}

static void test_v4_gso_gro(void **state)
{
	roundtrip(AF_INET, 0);
}

static void test_v6_gso_gro(void **state)
{
	roundtrip(AF_INET6, 0);
}

static void test_v4_plain(void **state)
{
	roundtrip(AF_INET, UDP_OPEN_NO_GSO | UDP_OPEN_NO_GRO);
}

static void test_v6_gso_no_gro(void **state)
{
	roundtrip(AF_INET6, UDP_OPEN_NO_GRO);
}

/* WireGuard endpoint semantics: a reply leaves from the address the peer
 * wrote to, not from whatever the routing table would pick. */
static void test_reply_from_dst_address(void **state)
{
	struct udp *a, *b;
	struct msgs *m = msgs_new(SLOT);
	char dst[64], addr[64];
	int n;

	assert_int_equal(udp_open(&a, AF_INET, 0, 0), 0);
	assert_int_equal(udp_open(&b, AF_INET, 0, 0), 0);
	snprintf(dst, sizeof(dst), "127.0.0.2:%u", udp_port(b));
	m->m[0].ep = ep_of(dst);
	memcpy(m->m[0].data, "ping", 4);
	m->m[0].len = 4;
	assert_int_equal(udp_send(a, m->m, 1), 1);
	do {
		struct pollfd p = { .fd = udp_fd(b), .events = POLLIN };
		poll(&p, 1, 1000);
	} while ((n = udp_recv(b, m->m, N)) == -EAGAIN);
	assert_int_equal(n, 1);
	assert_true(m->m[0].ep.has_src);
	assert_int_equal(m->m[0].ep.src.v4.s_addr, inet_addr("127.0.0.2"));
	assert_int_equal(ntohs(m->m[0].ep.addr.in4.sin_port), udp_port(a));

	/* reply through the endpoint we learnt */
	memcpy(m->m[0].data, "pong", 4);
	assert_int_equal(udp_send(b, m->m, 1), 1);
	do {
		struct pollfd p = { .fd = udp_fd(a), .events = POLLIN };
		poll(&p, 1, 1000);
	} while ((n = udp_recv(a, m->m + 1, 1)) == -EAGAIN);
	assert_int_equal(n, 1);
	assert_memory_equal(m->m[1].data, "pong", 4);
	assert_true(endpoint_format(&m->m[1].ep, addr, sizeof(addr)) > 0);
	snprintf(dst, sizeof(dst), "127.0.0.2:%u", udp_port(b));
	assert_string_equal(addr, dst);

	/* a source that is no longer ours: sent anyway, from the default */
	m->m[0].ep.src.v4.s_addr = inet_addr("10.255.0.1");
	assert_int_equal(udp_send(b, m->m, 1), 1);
	assert_false(m->m[0].ep.has_src);
	do {
		struct pollfd p = { .fd = udp_fd(a), .events = POLLIN };
		poll(&p, 1, 1000);
	} while ((n = udp_recv(a, m->m + 1, 1)) == -EAGAIN);
	assert_int_equal(n, 1);

	/* wrong family for this socket: dropped, not fatal */
	m->m[0].ep = ep_of("[::1]:9");
	assert_int_equal(udp_send(b, m->m, 1), 1);
	struct udp_stats st;
	udp_stats(b, &st);
	assert_int_equal(st.dropped_tx, 1);
	udp_close(a);
	udp_close(b);
	free(m);
}

/* GRO'd datagrams too big for the caller's slots are dropped, not split. */
static void test_small_slots(void **state)
{
	struct udp *a, *b;
	struct msgs *out = msgs_new(SLOT), *in = msgs_new(100);
	char dst[64];
	int n, got = 0;

	assert_int_equal(udp_open(&a, AF_INET, 0, 0), 0);
	assert_int_equal(udp_open(&b, AF_INET, 0, 0), 0);
	snprintf(dst, sizeof(dst), "127.0.0.1:%u", udp_port(b));
	for (int i = 0; i < 10; i++) {
		out->m[i].ep = ep_of(dst);
		out->m[i].len = i < 5 ? 80 : 200;
		memset(out->m[i].data, i, out->m[i].len);
	}
	assert_int_equal(udp_send(a, out->m, 10), 10);
	for (int idle = 0; idle < 5;) {
		n = udp_recv(b, in->m, N);
		if (n == -EAGAIN) {
			struct pollfd p = { .fd = udp_fd(b), .events = POLLIN };
			idle += poll(&p, 1, 100) == 0;
			continue;
		}
		for (int i = 0; i < n; i++) {
			assert_int_equal(in->m[i].len, 80);
			assert_int_equal(in->m[i].data[0], got++);
		}
	}
	assert_int_equal(got, 5);
	struct udp_stats st;
	udp_stats(b, &st);
	assert_int_equal(st.dropped_rx, 5);
	udp_close(a);
	udp_close(b);
	free(out);
	free(in);
}

/* Datagrams bigger than the slots (a large tunnel MTU), fragmented by IP on
 * a 1500-byte link: the grow callback gives them room, or makes them wait
 * while it has none. */
static uint8_t large[2][65536];
static int grow_refuse, grow_calls;

static int grow(void *arg, struct udp_msg *m, size_t len)
{
	grow_calls++;
	if (grow_refuse > 0) {
		grow_refuse--;
		return -ENOBUFS;
	}
	if (len > sizeof(large[0]))
		return -EMSGSIZE;
	m->data = large[grow_calls % 2];
	m->cap = sizeof(large[0]);
	return 0;
}

static void large_datagrams(unsigned flags)
{
	static const size_t sizes[] = { 80, 80, 40000, 80, 30000, 30000, 65507, 80 };
	enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
	static uint8_t out_mem[NS][65536];
	struct udp_msg out[NS];
	struct udp *a, *b;
	struct msgs *in = msgs_new(SLOT);
	struct udp_stats st;
	char dst[64];
	size_t got = 0;
	int n, waited = 0;

	assert_int_equal(system("ip link set lo mtu 1500"), 0);
	assert_int_equal(udp_open(&a, AF_INET, 0, flags), 0);
	assert_int_equal(udp_open(&b, AF_INET, 0, flags), 0);
	assert_int_equal(udp_set_grow(b, grow, NULL), 0);
	snprintf(dst, sizeof(dst), "127.0.0.1:%u", udp_port(b));
	for (size_t i = 0; i < NS; i++) {
		out[i] = (struct udp_msg){ .data = out_mem[i], .len = sizes[i], .cap = sizes[i], .ep = ep_of(dst) };
		fill(out[i].data, sizes[i], (unsigned)i);
	}
	/* Two 30000-byte ones in a row would be one GSO send: refused
	 * (EMSGSIZE) above the link's MTU, so they go one by one. */
	assert_int_equal(udp_send(a, out, NS), NS);
	grow_refuse = 2;
	for (int idle = 0; got < NS && idle < 20;) {
		n = udp_recv(b, in->m, 3);
		if (n == -EAGAIN) {
			struct pollfd p = { .fd = udp_fd(b), .events = POLLIN };
			idle += poll(&p, 1, 100) == 0;
			continue;
		}
		if (n == -ENOBUFS) {
			waited++;
			continue;
		}
		assert_true(n > 0);
		for (int i = 0; i < n; i++, got++) {
			assert_int_equal(in->m[i].len, sizes[got]);
			assert_memory_equal(in->m[i].data, out_mem[got], sizes[got]);
			/* Give the slot back as the caller would. */
			in->m[i] = (struct udp_msg){ .data = in->mem[i], .cap = SLOT };
		}
	}
	assert_int_equal(got, NS);
	assert_int_equal(waited, 1); /* the second refusal found nothing else to hand out */
	udp_stats(b, &st);
	assert_int_equal(st.dropped_rx, 0);
	udp_stats(a, &st);
	assert_int_equal(st.dropped_tx, 0);
	udp_close(a);
	udp_close(b);
	free(in);
	assert_int_equal(system("ip link set lo mtu 65536"), 0);
}

static void test_large_gro(void **state)
{
	large_datagrams(0);
}

static void test_large_no_gro(void **state)
{
	large_datagrams(UDP_OPEN_NO_GRO);
}

static void test_endpoint_parse(void **state)
{
	static const struct {
		const char *in, *out; /* out NULL: must fail */
	} cases[] = {
		{ "192.0.2.1:51820", "192.0.2.1:51820" },
		{ "[2001:db8::1]:1", "[2001:db8::1]:1" },
		{ "[fe80::1%7]:5", "[fe80::1%7]:5" },
		{ "[::ffff:1.2.3.4]:0", "[::ffff:1.2.3.4]:0" },
		{ "192.0.2.1", NULL },
		{ "192.0.2.1:", NULL },
		{ "192.0.2.1:65536", NULL },
		{ "192.0.2.1:-1", NULL },
		{ "192.0.2.1:1x", NULL },
		{ "2001:db8::1:80", NULL },
		{ "[2001:db8::1]80", NULL },
		{ "[2001:db8::1:80", NULL },
		{ "[]:80", NULL },
		{ ":80", NULL },
		{ "example.com:80", NULL },
		{ "[fe80::1%nosuchif]:5", NULL },
		{ "1.2.3.256:1", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct endpoint ep;
		const char *why = NULL;
		char buf[80];
		bool ok = endpoint_parse(&ep, cases[i].in, &why);
		if (ok != (cases[i].out != NULL))
			fail_msg("%s: parse %s", cases[i].in, ok ? "accepted" : why);
		if (!ok) {
			assert_non_null(why);
			continue;
		}
		assert_true(endpoint_format(&ep, buf, sizeof(buf)) > 0);
		assert_string_equal(buf, cases[i].out);
		assert_int_equal(endpoint_format(&ep, buf, 5), -ENOSPC);
	}
	struct endpoint a = ep_of("10.0.0.1:1"), b = ep_of("10.0.0.1:1"), c = ep_of("10.0.0.1:2");
	assert_true(endpoint_equal(&a, &b));
	assert_false(endpoint_equal(&a, &c));
	b.has_src = true;
	assert_true(endpoint_equal(&a, &b));
	assert_false(endpoint_equal_src(&a, &b));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_endpoint_parse),
		cmocka_unit_test(test_v4_gso_gro),
		cmocka_unit_test(test_v6_gso_gro),
		cmocka_unit_test(test_v4_plain),
		cmocka_unit_test(test_v6_gso_no_gro),
		cmocka_unit_test(test_reply_from_dst_address),
		cmocka_unit_test(test_small_slots),
		cmocka_unit_test(test_large_gro),
		cmocka_unit_test(test_large_no_gro),
	};

	alarm(120);
	if (unshare(CLONE_NEWNET) != 0) {
		printf("# skipped: unshare(CLONE_NEWNET): %s\n", strerror(errno));
		return 0;
	}
	if (system("ip link set lo up") != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
