/* TUN tests run in a network namespace of their own (unshare at start):
 * knitt0 gets 10.9.0.1/24 and the test plays 10.9.0.2, the peer on the far
 * side of the tunnel, speaking just enough TCP to make the kernel send TSO
 * super-packets and take our GRO ones. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "net/tun.h"
#include "pkt_ref.h"

#define NSLOT 128
#define SLOT 2048

static uint8_t mem[NSLOT][SLOT];
static struct pktbuf pb[NSLOT];

static void assert_v4_valid(const uint8_t *p, size_t len)
{
	size_t iph = (size_t)(p[0] & 15) * 4;

	assert_int_equal(p[0] >> 4, 4);
	assert_int_equal(rd16(p + 2), len);
	assert_int_equal(ref_sum(p, iph, 0), 0xffff);
	uint32_t ps = ref_sum(p + 12, 8, 0) + p[9] + (uint32_t)(len - iph);
	assert_int_equal(ref_sum(p + iph, len - iph, ps), 0xffff);
}

static void sh(const char *cmd)
{
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

static int wait_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms);
}

static void reset_slots(void)
{
	for (int i = 0; i < NSLOT; i++)
		pb[i] = (struct pktbuf){ .data = mem[i], .cap = SLOT };
}

/* Index of the first IPv4 packet with this protocol in pb[0..n), or -1. */
static int find_v4(int n, uint8_t proto)
{
	for (int i = 0; i < n; i++)
		if (pb[i].len >= 20 && pb[i].data[0] == 0x45 && pb[i].data[9] == proto)
			return i;
	return -1;
}

/* Reads until at least one packet; -EAGAIN after a second without. */
static int read_some(struct tun *t)
{
	int n;

	reset_slots();
	for (int tries = 0; tries < 20; tries++) {
		n = tun_read(t, pb, NSLOT);
		if (n != -EAGAIN)
			return n;
		wait_readable(tun_fd(t), 50);
	}
	return -EAGAIN;
}

static struct tun *tun;

static int setup(void **state)
{
	alarm(60);
	return 0;
}

static void test_open(void **state)
{
	int mtu = 0;

	assert_int_equal(tun_open(&tun, "knitt0", 0), 0);
	assert_string_equal(tun_name(tun), "knitt0");
	assert_true(tun_vnet(tun));
	assert_true(tun_offloads(tun) & TUN_F_TSO4);
	printf("# tun offloads: 0x%x (USO %s)\n", tun_offloads(tun),
	       tun_offloads(tun) & TUN_F_USO4 ? "yes" : "no");
	assert_int_equal(tun_set_mtu(tun, 1420), 0);
	assert_int_equal(tun_get_mtu(tun, &mtu), 0);
	assert_int_equal(mtu, 1420);
	assert_int_equal(tun_set_up(tun, true), 0);
	sh("ip addr add 10.9.0.1/24 dev knitt0");
	sh("ip link set knitt0 txqueuelen 10000");

	struct tun *bad;
	assert_int_equal(tun_open(&bad, "this-name-is-too-long", 0), -ENAMETOOLONG);
	assert_null(bad);
}

static void test_udp_through_tun(void **state)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9999) };
	const char msg[] = "hello through the tunnel";
	int n, i;

	inet_pton(AF_INET, "10.9.0.2", &to.sin_addr);
	assert_true(s >= 0);
	assert_int_equal(sendto(s, msg, sizeof(msg), 0, (struct sockaddr *)&to, sizeof(to)), sizeof(msg));
	/* skip IPv6 router solicitations and the like */
	do {
		n = read_some(tun);
		assert_true(n > 0);
	} while ((i = find_v4(n, 17)) < 0);
	assert_int_equal(pb[i].len, 28 + sizeof(msg));
	assert_v4_valid(pb[i].data, pb[i].len);
	assert_int_equal(rd16(pb[i].data + 22), 9999);
	assert_memory_equal(pb[i].data + 28, msg, sizeof(msg));
	close(s);
}

/* ---- the peer's side of one TCP connection ---- */

struct peer {
	uint16_t lport; /* the kernel socket's port */
	uint32_t snd_nxt, rcv_nxt;
};

static size_t mk_tcp(uint8_t *b, const struct peer *p, uint8_t flags, const uint8_t *data, size_t len,
		     uint32_t seq)
{
	size_t thl = flags & 0x02 ? 24 : 20, tot = 20 + thl + len;
	uint8_t *th = b + 20;

	memset(b, 0, 20 + thl);
	b[0] = 0x45;
	wr16(b + 2, (uint16_t)tot);
	b[6] = 0x40;
	b[8] = 64;
	b[9] = 6;
	b[12] = 10, b[13] = 9, b[15] = 2;
	b[16] = 10, b[17] = 9, b[19] = 1;
	wr16(b + 10, ~ref_sum(b, 20, 0));
	wr16(th, 7000);
	wr16(th + 2, p->lport);
	wr32(th + 4, seq);
	wr32(th + 8, p->rcv_nxt);
	th[12] = (uint8_t)(thl / 4) << 4;
	th[13] = flags;
	wr16(th + 14, 65535);
	if (thl == 24) { /* MSS 1380 */
		th[20] = 2, th[21] = 4;
		wr16(th + 22, 1380);
	}
	if (len)
		memcpy(th + thl, data, len);
	wr16(th + 16, ~ref_sum(th, thl + len, ref_sum(b + 12, 8, 0) + 6 + (uint32_t)(thl + len)));
	return tot;
}

static void send_ctl(struct peer *p, uint8_t flags)
{
	uint8_t buf[64];
	struct pktbuf one = { .data = buf, .cap = sizeof(buf) };

	one.len = mk_tcp(buf, p, flags, NULL, 0, p->snd_nxt);
	assert_int_equal(tun_write(tun, &one, 1, 0), 1);
	if (flags & 0x02)
		p->snd_nxt++;
}

static void test_tcp_tso_and_gro(void **state)
{
	enum { BIG = 300000, BACK = 60 * 1000 };
	static uint8_t sent[BIG], got[BIG];
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(7000) };
	struct sockaddr_in me;
	socklen_t mlen = sizeof(me);
	struct peer p = { .snd_nxt = 0x12345678 };
	struct tun_stats st0, st1;
	uint32_t isn = 0;
	size_t have = 0, segs = 0, sent_len = 0;
	int n, j, one = 1;

	assert_true(s >= 0);
	setsockopt(s, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
	inet_pton(AF_INET, "10.9.0.2", &to.sin_addr);
	assert_int_equal(connect(s, (struct sockaddr *)&to, sizeof(to)), -1);
	assert_int_equal(errno, EINPROGRESS);
	getsockname(s, (struct sockaddr *)&me, &mlen);
	p.lport = ntohs(me.sin_port);

	/* SYN -> SYN/ACK -> (kernel ACKs) */
	do {
		n = read_some(tun);
		assert_true(n > 0);
	} while ((j = find_v4(n, 6)) < 0);
	assert_true(pb[j].data[33] & 0x02);
	isn = rd32(pb[j].data + 24);
	p.rcv_nxt = isn + 1;
	send_ctl(&p, 0x12);
	struct pollfd pf = { .fd = s, .events = POLLOUT };
	assert_int_equal(poll(&pf, 1, 2000), 1);

	/* kernel -> peer: large writes must arrive as TSO super-packets */
	for (size_t i = 0; i < BIG; i++)
		sent[i] = (uint8_t)(i * 31 + (i >> 10));
	tun_stats(tun, &st0);
	while (have < BIG) {
		while (sent_len < BIG) {
			ssize_t w = send(s, sent + sent_len, BIG - sent_len, 0);
			if (w <= 0)
				break;
			sent_len += (size_t)w;
		}
		n = read_some(tun);
		assert_true(n > 0);
		for (int i = 0; i < n; i++) {
			const uint8_t *d = pb[i].data;
			if (d[0] != 0x45 || d[9] != 6)
				continue;
			assert_v4_valid(d, pb[i].len);
			size_t hl = 20 + (size_t)(d[32] >> 4) * 4, plen = pb[i].len - hl;
			assert_true(pb[i].len <= 1420);
			uint32_t off = rd32(d + 24) - (isn + 1);
			if (plen == 0 || off != have) /* in order only, no retransmits expected */
				continue;
			assert_true(off + plen <= BIG);
			memcpy(got + off, d + hl, plen);
			have += plen;
			segs++;
		}
		p.rcv_nxt = isn + 1 + (uint32_t)have;
		send_ctl(&p, 0x10);
	}
	assert_memory_equal(got, sent, BIG);
	tun_stats(tun, &st1);
	printf("# kernel->tun: %zu segments from %llu reads, %llu TSO super-packets\n", segs,
	       st1.read_syscalls - st0.read_syscalls, st1.gso_reads - st0.gso_reads);
	assert_true(st1.gso_reads > st0.gso_reads);

	/* peer -> kernel: one batch of segments, written as GRO super-packets */
	static uint8_t back[BACK], rcv[BACK];
	size_t nseg = BACK / 1000, r = 0;
	for (size_t i = 0; i < BACK; i++)
		back[i] = (uint8_t)(i * 7 + 3);
	reset_slots();
	for (size_t i = 0; i < nseg; i++) {
		pb[i].len = mk_tcp(pb[i].data, &p, i == nseg - 1 ? 0x18 : 0x10, back + i * 1000, 1000,
				   p.snd_nxt + (uint32_t)(i * 1000));
	}
	tun_stats(tun, &st0);
	assert_int_equal(tun_write(tun, pb, nseg, 0), (int)nseg);
	tun_stats(tun, &st1);
	printf("# tun->kernel: %zu segments in %llu writes (%llu GRO)\n", nseg,
	       st1.write_syscalls - st0.write_syscalls, st1.gro_writes - st0.gro_writes);
	assert_true(st1.write_syscalls - st0.write_syscalls <= 2);
	assert_int_equal(st1.dropped_tx, st0.dropped_tx);
	while (r < BACK) {
		pf = (struct pollfd){ .fd = s, .events = POLLIN };
		assert_int_equal(poll(&pf, 1, 2000), 1);
		ssize_t k = recv(s, rcv + r, BACK - r, 0);
		assert_true(k > 0);
		r += (size_t)k;
	}
	assert_memory_equal(rcv, back, BACK);
	close(s);
}

static void test_plain_tun(void **state)
{
	struct tun *t;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9) };
	int n, i;

	assert_int_equal(tun_open(&t, "knitt1", TUN_OPEN_NO_VNET), 0);
	assert_false(tun_vnet(t));
	assert_int_equal(tun_offloads(t), 0);
	assert_int_equal(tun_set_up(t, true), 0);
	sh("ip addr add 10.8.0.1/24 dev knitt1");
	inet_pton(AF_INET, "10.8.0.2", &to.sin_addr);
	assert_int_equal(sendto(s, "x", 1, 0, (struct sockaddr *)&to, sizeof(to)), 1);
	do {
		n = read_some(t);
		assert_true(n > 0);
	} while ((i = find_v4(n, 17)) < 0);
	assert_int_equal(pb[i].len, 29);
	assert_v4_valid(pb[i].data, 29);
	/* a write with no vnet header goes out as is; garbage is dropped */
	pb[1].len = 3;
	assert_int_equal(tun_write(t, pb, 2, 0), 2);
	tun_close(t);
	close(s);
}

/* A packet too big for the caller's slots is dropped, counted, and answered
 * with ICMP fragmentation needed: the kernel's path MTU drops to the slot
 * size (RFC 1191), as IP_MTU on a connected socket shows. */
static void test_too_big(void **state)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0), pmtu = IP_PMTUDISC_DO, mtu = 0;
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9998) };
	static char big[3000];
	struct tun_stats before, after;
	socklen_t len = sizeof(mtu);

	inet_pton(AF_INET, "10.9.0.2", &to.sin_addr);
	assert_true(s >= 0);
	assert_int_equal(tun_set_mtu(tun, 9000), 0);
	assert_int_equal(setsockopt(s, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu)), 0);
	assert_int_equal(connect(s, (struct sockaddr *)&to, sizeof(to)), 0);
	tun_stats(tun, &before);
	assert_int_equal(send(s, big, sizeof(big), 0), sizeof(big));
	/* read until the big one has been seen (other traffic passes) */
	for (int tries = 0; tries < 20; tries++) {
		read_some(tun);
		tun_stats(tun, &after);
		if (after.too_big > before.too_big)
			break;
	}
	assert_int_equal(after.too_big, before.too_big + 1);
	for (int tries = 0; tries < 50 && mtu != SLOT; tries++) {
		wait_readable(tun_fd(tun), 20);
		assert_int_equal(getsockopt(s, IPPROTO_IP, IP_MTU, &mtu, &len), 0);
	}
	assert_int_equal(mtu, SLOT);
	assert_int_equal(tun_set_mtu(tun, 1420), 0);
	close(s);
}

/* Packets bigger than the slots, with a grow callback: handed out in the
 * bigger buffer it gives (after waiting once while it has none); above its
 * max, answered with fragmentation needed advertising the max. Plain
 * packets (no vnet header) the same way. */
static uint8_t large[2][65536];
static int grow_refuse, grow_calls;

static int grow(void *arg, struct pktbuf *p, size_t len)
{
	grow_calls++;
	if (grow_refuse > 0) {
		grow_refuse--;
		return -ENOBUFS;
	}
	p->data = large[grow_calls % 2];
	p->cap = sizeof(large[0]);
	return 0;
}

/* Reads until a UDP packet of len bytes (other traffic passes); returns
 * its index in pb, and in *waited how often the read waited for room. */
static int read_udp_of(struct tun *t, size_t len, int *waited)
{
	for (int tries = 0; tries < 20; tries++) {
		int n = read_some(t), i;

		if (n == -ENOBUFS) {
			(*waited)++;
			continue;
		}
		assert_true(n > 0);
		if ((i = find_v4(n, 17)) >= 0 && pb[i].len == len)
			return i;
	}
	fail_msg("no %zu-byte UDP packet", len);
	return -1;
}

static void send_big(struct tun *t, const char *dst, size_t len, int expect_mtu)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0), pmtu = IP_PMTUDISC_DO, mtu = 0, waited = 0, i;
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9997) };
	static char payload[65536];
	socklen_t slen = sizeof(mtu);

	inet_pton(AF_INET, dst, &to.sin_addr);
	assert_int_equal(setsockopt(s, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu)), 0);
	assert_int_equal(connect(s, (struct sockaddr *)&to, sizeof(to)), 0);
	memset(payload, 0x5a, len);
	grow_refuse = 1;
	assert_int_equal(send(s, payload, len, 0), (ssize_t)len);
	if (expect_mtu) {
		/* above the max: dropped, and the path MTU drops to it */
		struct tun_stats before, after;

		tun_stats(t, &before);
		for (int tries = 0; tries < 20 && mtu != expect_mtu; tries++) {
			read_some(t);
			wait_readable(tun_fd(t), 20);
			assert_int_equal(getsockopt(s, IPPROTO_IP, IP_MTU, &mtu, &slen), 0);
		}
		tun_stats(t, &after);
		assert_int_equal(mtu, expect_mtu);
		assert_int_equal(after.too_big, before.too_big + 1);
		close(s);
		return;
	}
	i = read_udp_of(t, len + 28, &waited);
	/* refused once, kept, then handed out (maybe behind other packets
	 * read in the same batch, so without an -ENOBUFS) */
	assert_int_equal(grow_refuse, 0);
	assert_true(waited <= 1);
	assert_true(pb[i].data == large[0] || pb[i].data == large[1]);
	assert_v4_valid(pb[i].data, pb[i].len);
	assert_memory_equal(pb[i].data + 28, payload, len);
	close(s);
}

static void test_grow(void **state)
{
	struct tun *t;

	/* 10.9.0.3: test_too_big lowered 10.9.0.2's path MTU */
	assert_int_equal(tun_set_mtu(tun, 9000), 0);
	tun_set_grow(tun, grow, NULL, 6000);
	send_big(tun, "10.9.0.3", 5000, 0);
	send_big(tun, "10.9.0.3", 7000, 6000);
	tun_set_grow(tun, NULL, NULL, 0);
	assert_int_equal(tun_set_mtu(tun, 1420), 0);

	assert_int_equal(tun_open(&t, "knitt4", TUN_OPEN_NO_VNET), 0);
	assert_int_equal(tun_set_mtu(t, 9000), 0);
	assert_int_equal(tun_set_up(t, true), 0);
	sh("ip addr add 10.7.0.1/24 dev knitt4");
	tun_set_grow(t, grow, NULL, 9000);
	send_big(t, "10.7.0.2", 8000, 0);
	tun_close(t);
}

/* A device moved to another namespace (as the CNI plugin moves a pod's
 * knit0) stays in reach through the fd; one deleted there reports EBADFD. */
static void test_moved_to_netns(void **state)
{
	char cmd[256], ns[64];
	struct tun *t;
	int mtu = 0;

	snprintf(ns, sizeof(ns), "knit-tunmv-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "ip netns add %s", ns);
	sh(cmd);
	assert_int_equal(tun_open(&t, "knitt2", 0), 0);
	assert_int_equal(tun_set_mtu(t, 1400), 0);
	snprintf(cmd, sizeof(cmd), "ip link set knitt2 netns %s", ns);
	sh(cmd);
	/* gone from here, yet its MTU reads and writes where it went */
	assert_int_not_equal(system("ip link show knitt2 >/dev/null 2>&1"), 0);
	assert_int_equal(tun_get_mtu(t, &mtu), 0);
	assert_int_equal(mtu, 1400);
	assert_int_equal(tun_set_mtu(t, 1300), 0);
	assert_int_equal(tun_set_up(t, true), 0);
	snprintf(cmd, sizeof(cmd), "ip -n %s link show knitt2 | grep -q 'UP.*mtu 1300'", ns);
	sh(cmd);
	/* renamed there: followed by the fd, not the name */
	snprintf(cmd, sizeof(cmd), "ip -n %s link set knitt2 down name knitt2b mtu 1280", ns);
	sh(cmd);
	assert_int_equal(tun_get_mtu(t, &mtu), 0);
	assert_int_equal(mtu, 1280);
	snprintf(cmd, sizeof(cmd), "ip -n %s link del knitt2b", ns);
	sh(cmd);
	assert_int_equal(tun_get_mtu(t, &mtu), -EBADFD);
	tun_close(t);

	/* Nothing of ours keeps the namespace alive: when it goes (a pod
	 * deleted), the device inside goes with it and the fd says so. */
	assert_int_equal(tun_open(&t, "knitt3", 0), 0);
	snprintf(cmd, sizeof(cmd), "ip link set knitt3 netns %s", ns);
	sh(cmd);
	assert_int_equal(tun_get_mtu(t, &mtu), 0);
	assert_int_equal(tun_set_up(t, true), 0);
	snprintf(cmd, sizeof(cmd), "ip netns del %s", ns);
	sh(cmd);
	for (int tries = 0; tries < 100 && tun_get_mtu(t, &mtu) != -EBADFD; tries++)
		usleep(50 * 1000);
	assert_int_equal(tun_get_mtu(t, &mtu), -EBADFD);
	tun_close(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_open, setup),
		cmocka_unit_test_setup(test_udp_through_tun, setup),
		cmocka_unit_test_setup(test_tcp_tso_and_gro, setup),
		cmocka_unit_test_setup(test_plain_tun, setup),
		cmocka_unit_test_setup(test_too_big, setup),
		cmocka_unit_test_setup(test_grow, setup),
		cmocka_unit_test_setup(test_moved_to_netns, setup),
	};
	int ret;

	if (unshare(CLONE_NEWNET) != 0) {
		printf("# skipped: unshare(CLONE_NEWNET): %s\n", strerror(errno));
		return 0;
	}
	if (system("ip link set lo up") != 0)
		return 1;
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	tun_close(tun);
	return ret;
}
