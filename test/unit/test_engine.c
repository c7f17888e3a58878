/* The WireGuard engine end to end inside one process: two identities on
 * ONE hub (one UDP socket, demultiplexed by MAC1 for initiations and by
 * receiver index for everything else), their TUN devices in two network
 * namespaces so that traffic really crosses the tunnel. Runs as root in
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

#include "buf.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "wg/aead.h"
#include "wg/engine.h"
#include "wg/hub.h"
#include "wg/noise.h"
#include "wg/peer.h"
#include "wg/pool.h"
#include "wg/receive.h"
#include "wg/exporter.h"
#include "wg/uapi.h"

static int ns_x = -1, ns_y = -1;

static void enter(int ns)
{
	assert_int_equal(setns(ns, CLONE_NEWNET), 0);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(system(cmd), 0);
}

struct pair {
	struct loop *loop;
	struct hub *hub;
	struct engine *a, *b; /* a's TUN in x (10.91.0.1), b's in y (10.91.0.2) */
	uint8_t ka[32], kb[32], pa[32], pb[32];
};

static struct uapi_peer peer_of(const uint8_t pub[32], const char *aip, uint16_t port)
{
	static struct uapi_allowed_ip ips[2];
	static int n;
	struct uapi_allowed_ip *ip = &ips[n++ % 2];
	struct uapi_peer p = { .flags = UAPI_PEER_REPLACE_ALLOWED_IPS, .allowed_ips = ip, .n_allowed_ips = 1 };

	memcpy(p.public_key, pub, 32);
	ip->family = AF_INET;
	ip->cidr = 32;
	assert_int_equal(inet_pton(AF_INET, aip, &ip->ip.v4), 1);
	if (port) {
		p.flags |= UAPI_PEER_HAS_ENDPOINT;
		p.endpoint.addr.in4.sin_family = AF_INET;
		p.endpoint.addr.in4.sin_port = htons(port);
		p.endpoint.addr.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	return p;
}

static size_t large_slots; /* hub_config.pool_large_buffers for the next pair */

/* A relay for the next pair (relay_pair_setup): each engine's relay_send
 * keeps the last message it took, and for which peer. */
static bool with_relay;
struct relayed {
	uint8_t to[32];
	uint8_t msg[MESSAGE_INITIATION_LEN];
	size_t len, count;
};
static struct relayed relayed_a, relayed_b;

static size_t relay_capture(void *arg, const uint8_t peer[32], const struct iovec *pkts, size_t n)
{
	struct relayed *r = arg;

	for (size_t i = 0; i < n; i++) {
		memcpy(r->to, peer, 32);
		r->len = pkts[i].iov_len < sizeof(r->msg) ? pkts[i].iov_len : sizeof(r->msg);
		memcpy(r->msg, pkts[i].iov_base, r->len);
		r->count++;
	}
	return n;
}

static int pair_setup(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));
	struct hub_config hc = { .workers = 2, .readers_help = true, .pool_large_buffers = large_slots,
				 .under_load_at = with_relay ? 1 : 0 };
	struct engine_config ca = { .ifname = "kte0a" }, cb = { .ifname = "kte0b" };
	struct uapi_peer up;

	if (with_relay) {
		memset(&relayed_a, 0, sizeof(relayed_a));
		memset(&relayed_b, 0, sizeof(relayed_b));
		ca.relay_send = cb.relay_send = relay_capture;
		ca.relay_arg = &relayed_a;
		cb.relay_arg = &relayed_b;
	}

	assert_non_null(p);
	p->loop = loop_new();
	assert_non_null(p->loop);
	enter(ns_x);
	assert_int_equal(hub_new(&p->hub, p->loop, &hc), 0);
	assert_int_equal(engine_new(&p->a, p->hub, &ca), 0);
	sh("ip addr add 10.91.0.1/24 dev kte0a && ip link set kte0a up");
	enter(ns_y);
	assert_int_equal(engine_new(&p->b, p->hub, &cb), 0);
	sh("ip addr add 10.91.0.2/24 dev kte0b && ip link set kte0b up");
	enter(ns_x);

	noise_keygen(p->ka);
	noise_keygen(p->kb);
	assert_true(noise_public_from_private(p->pa, p->ka));
	assert_true(noise_public_from_private(p->pb, p->kb));
	assert_int_equal(engine_set_private_key(p->a, p->ka), 0);
	assert_int_equal(engine_set_private_key(p->b, p->kb), 0);
	/* Both identities share the hub's port: the endpoints are that port. */
	up = peer_of(p->pb, "10.91.0.2", hub_port(p->hub));
	assert_int_equal(engine_peer_set(p->a, &up), 0);
	up = peer_of(p->pa, "10.91.0.1", hub_port(p->hub));
	assert_int_equal(engine_peer_set(p->b, &up), 0);
	*state = p;
	return 0;
}

static int pair_teardown(void **state)
{
	struct pair *p = *state;

	enter(ns_x);
	engine_free(p->a);
	engine_free(p->b);
	hub_free(p->hub);
	loop_free(p->loop);
	free(p);
	return 0;
}

static int udp_socket_in(int ns, const char *addr, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int s;

	enter(ns);
	s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	assert_true(s >= 0);
	inet_pton(AF_INET, addr, &sin.sin_addr);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	enter(ns_x);
	return s;
}

/* Sends msg from s to addr:port until it arrives on r (handshakes first;
 * a retransmitted initiation takes 5 s), running the loop meanwhile.
 * Returns the bytes received, or -1 after timeout_ms. */
static ssize_t through_within(struct pair *p, int s, const char *addr, uint16_t port, int r, const char *msg,
			      uint64_t timeout_ms)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port) };
	char buf[256];
	uint64_t deadline = loop_mono_ms() + timeout_ms, next = 0;
	ssize_t n = -1;

	inet_pton(AF_INET, addr, &to.sin_addr);
	while (loop_mono_ms() < deadline) {
		if (loop_mono_ms() >= next) {
			assert_int_equal(sendto(s, msg, strlen(msg), 0, (struct sockaddr *)&to, sizeof(to)),
					 (ssize_t)strlen(msg));
			next = loop_mono_ms() + 200;
		}
		loop_run_once(p->loop, 10);
		/* Skip whatever else is still arriving (earlier bursts). */
		while ((n = recv(r, buf, sizeof(buf) - 1, 0)) >= 0) {
			buf[n] = '\0';
			if (!strcmp(buf, msg))
				return n;
		}
	}
	return -1;
}

static ssize_t through(struct pair *p, int s, const char *addr, uint16_t port, int r, const char *msg)
{
	return through_within(p, s, addr, port, r, msg, 12000);
}

static void test_two_identities_one_socket(void **state)
{
	struct pair *p = *state;
	int sx = udp_socket_in(ns_x, "10.91.0.1", 7001), sy = udp_socket_in(ns_y, "10.91.0.2", 7002);
	struct engine_peer_stats st;
	struct uapi_device d = { 0 };

	assert_int_equal(through(p, sx, "10.91.0.2", 7002, sy, "hello y"), 7);
	assert_int_equal(through(p, sy, "10.91.0.1", 7001, sx, "hello x"), 7);

	assert_int_equal(engine_peer_stats(p->a, p->pb, &st), 0);
	assert_true(st.has_session);
	assert_true(st.last_handshake_ns > 0);
	assert_true(st.rx_bytes > 0 && st.tx_bytes > 0);
	assert_true(st.has_endpoint);
	assert_int_equal(engine_peer_stats(p->a, p->pa, &st), -ENOENT);

	assert_int_equal(engine_get(p->b, &d), 0);
	assert_true(d.has_private_key);
	assert_int_equal(d.listen_port, hub_port(p->hub));
	assert_int_equal(d.n_peers, 1);
	assert_memory_equal(d.peers[0].public_key, p->pa, 32);
	assert_int_equal(d.peers[0].n_allowed_ips, 1);
	assert_int_equal(d.peers[0].allowed_ips[0].cidr, 32);
	assert_true(d.peers[0].last_handshake_sec > 0);
	uapi_device_release(&d);
	close(sx);
	close(sy);
}

/* A restarted knitd's first initiation goes out on a path that carries
 * nothing (the relay, before disco finds the direct path): when the path
 * changes, the initiation goes again at once, not after REKEY_TIMEOUT
 * (5 s and jitter). */
static void test_new_path_resends_initiation(void **state)
{
	struct pair *p = *state;
	int sx = udp_socket_in(ns_x, "10.91.0.1", 7005), sy = udp_socket_in(ns_y, "10.91.0.2", 7006);
	struct endpoint dead = { 0 }, good = { 0 };
	struct engine_peer_stats st;
	int blackhole = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in bh = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t bhlen = sizeof(bh);
	uint64_t until;

	/* A bound socket nobody reads: initiations sent there vanish. */
	assert_true(blackhole >= 0);
	assert_int_equal(bind(blackhole, (struct sockaddr *)&bh, sizeof(bh)), 0);
	assert_int_equal(getsockname(blackhole, (struct sockaddr *)&bh, &bhlen), 0);
	dead.addr.in4 = bh;
	good.addr.in4 = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(hub_port(p->hub)),
					      .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(engine_peer_set_path(p->a, p->pb, false, &dead), 0);
	/* Traffic for b: a's initiation leaves for the dead endpoint. */
	assert_int_equal(sendto(sx, "x", 1, 0, (struct sockaddr *)&(struct sockaddr_in){ .sin_family = AF_INET,
				.sin_port = htons(7006), .sin_addr.s_addr = inet_addr("10.91.0.2") },
				sizeof(struct sockaddr_in)), 1);
	for (until = loop_mono_ms() + 300; loop_mono_ms() < until;)
		loop_run_once(p->loop, 10);
	assert_int_equal(engine_peer_stats(p->a, p->pb, &st), 0);
	assert_false(st.has_session);
	assert_true(st.handshake_attempts == 0 || st.handshake_attempts == 1);
	/* The path that works: a session well within REKEY_TIMEOUT. */
	assert_int_equal(engine_peer_set_path(p->a, p->pb, false, &good), 0);
	assert_int_equal(through_within(p, sx, "10.91.0.2", 7006, sy, "new path", 2500), 8);
	close(blackhole);
	close(sx);
	close(sy);
}

/* Cryptokey routing on receive: a peer may only send from its allowed IPs. */
static void test_source_check(void **state)
{
	struct pair *p = *state;
	int sx = udp_socket_in(ns_x, "10.91.0.1", 7003), sy = udp_socket_in(ns_y, "10.91.0.2", 7004);
	struct uapi_peer up = peer_of(p->pb, "10.91.0.99", 0);
	struct engine_stats es;

	assert_int_equal(through(p, sx, "10.91.0.2", 7004, sy, "warm up"), 7);
	/* a no longer accepts 10.91.0.2 as b's source, though it still routes to it */
	assert_int_equal(engine_peer_set(p->a, &up), 0);
	up = peer_of(p->pb, "10.91.0.2", 0);
	up.flags = 0; /* add, do not replace */
	assert_int_equal(engine_peer_set(p->a, &up), 0);
	up = peer_of(p->pb, "10.91.0.99", 0);
	assert_int_equal(engine_peer_set(p->a, &up), 0);
	assert_int_equal(through_within(p, sy, "10.91.0.1", 7003, sx, "spoofed", 1500), -1);
	engine_stats(p->a, &es);
	assert_true(es.rx_bad_source > 0);
	close(sx);
	close(sy);
}

/* Removing a peer while packets fly, then adding it back. */
static void test_remove_under_traffic(void **state)
{
	struct pair *p = *state;
	int sx = udp_socket_in(ns_x, "10.91.0.1", 7005), sy = udp_socket_in(ns_y, "10.91.0.2", 7006);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(7006) };
	struct engine_peer_stats st;
	char blob[1200] = { 0 };
	struct uapi_peer up;

	assert_int_equal(through(p, sx, "10.91.0.2", 7006, sy, "before"), 6);
	inet_pton(AF_INET, "10.91.0.2", &to.sin_addr);
	for (int i = 0; i < 2000; i++) {
		sendto(sx, blob, sizeof(blob), 0, (struct sockaddr *)&to, sizeof(to));
		if (i == 1000)
			assert_int_equal(engine_peer_remove(p->a, p->pb), 0);
		if (i % 100 == 0)
			loop_run_once(p->loop, 0);
	}
	assert_int_equal(engine_peer_stats(p->a, p->pb, &st), -ENOENT);
	assert_int_equal(engine_peer_remove(p->a, p->pb), -ENOENT);
	up = peer_of(p->pb, "10.91.0.2", hub_port(p->hub));
	assert_int_equal(engine_peer_set(p->a, &up), 0);
	if (through(p, sx, "10.91.0.2", 7006, sy, "after") != 5) {
		struct engine_stats ea, eb;
		struct hub_stats hs;
		engine_stats(p->a, &ea);
		engine_stats(p->b, &eb);
		hub_stats(p->hub, &hs);
		engine_peer_stats(p->a, p->pb, &st);
		fprintf(stderr, "A: hs sent %llu rcvd %llu tx_dropped %llu noroute %llu noep %llu; peer attempts %u session %d\n",
			ea.handshakes_sent, ea.handshakes_received, ea.tx_dropped, ea.tx_no_route, ea.tx_no_endpoint,
			st.handshake_attempts, st.has_session);
		fprintf(stderr, "B: hs sent %llu rcvd %llu rx bad src %llu auth %llu replay %llu bad %llu dropped %llu\n",
			eb.handshakes_sent, eb.handshakes_received, eb.rx_bad_source, eb.rx_auth_failed, eb.rx_replayed,
			eb.rx_bad_packet, eb.rx_dropped);
		fprintf(stderr, "hub: hsq %llu hsdrop %llu unknown %llu invalid %llu pool %zu/%zu\n", hs.handshakes_queued,
			hs.handshakes_dropped, hs.rx_unknown_index, hs.rx_invalid, hs.pool_free, hs.pool_size);
		fail();
	}
	close(sx);
	close(sy);
}

/* The value of the series line that starts with series (name and labels). */
static double scrape(struct metrics *m, const char *series)
{
	struct buf b = BUF_INIT(1u << 20);
	char *text, *at;
	size_t len = strlen(series);
	double v = -1;

	assert_int_equal(metrics_render(m, &b), 0);
	text = buf_steal(&b, NULL);
	for (at = text; (at = strstr(at, series)); at += len) {
		if ((at == text || at[-1] == '\n') && at[len] == ' ') {
			v = strtod(at + len + 1, NULL);
			break;
		}
	}
	free(text);
	assert_true(v >= 0);
	return v;
}

/* knitd's data-plane series follow the engine's own counters, and the
 * byte totals do not go down when a peer is removed. */
static void test_exporter(void **state)
{
	struct pair *p = *state;
	int sx = udp_socket_in(ns_x, "10.91.0.1", 7011), sy = udp_socket_in(ns_y, "10.91.0.2", 7012);
	struct metrics *m = metrics_new();
	struct exporter *x;
	struct engine_peer_stats st;
	struct engine_stats es;
	double out, in;

	assert_non_null(m);
	x = exporter_new(m, p->a);
	assert_non_null(x);
	assert_null(exporter_new(m, p->a)); /* the names are taken */
	metrics_set_collector(m, exporter_collect, x);
	assert_int_equal(scrape(m, "knitd_peers"), 1);
	assert_int_equal(scrape(m, "knitd_peers_with_session"), 0);
	assert_int_equal(scrape(m, "knitd_outbound_bytes_total"), 0);

	assert_int_equal(through(p, sx, "10.91.0.2", 7012, sy, "counted"), 7);
	assert_int_equal(through(p, sy, "10.91.0.1", 7011, sx, "back"), 4);
	assert_int_equal(engine_peer_stats(p->a, p->pb, &st), 0);
	out = scrape(m, "knitd_outbound_bytes_total");
	in = scrape(m, "knitd_inbound_bytes_total");
	assert_true(out >= (double)st.tx_bytes && out > 0);
	assert_true(in >= (double)st.rx_bytes && in > 0);
	assert_int_equal(scrape(m, "knitd_peers_with_session"), 1);
	assert_true(scrape(m, "knitd_handshakes_total{direction=\"sent\"}") +
			    scrape(m, "knitd_handshakes_total{direction=\"received\"}") >= 1);
	assert_true(scrape(m, "knitd_packet_buffers_free") > 0);
	/* Packets at MTU 1420 fit small slots: no large one is made. */
	assert_int_equal(scrape(m, "knitd_large_packet_buffers"), 0);
	assert_int_equal(scrape(m, "knitd_large_packet_buffers_taken_total"), 0);

	/* A destination no peer routes: counted as an outbound drop. */
	{
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9) };
		double before = scrape(m, "knitd_dropped_packets_total{direction=\"outbound\",reason=\"no_route\"}");

		sh("ip route add 10.92.0.0/24 dev kte0a");
		inet_pton(AF_INET, "10.92.0.7", &to.sin_addr);
		assert_int_equal(sendto(sx, "x", 1, 0, (struct sockaddr *)&to, sizeof(to)), 1);
		for (int i = 0; i < 100 &&
				scrape(m, "knitd_dropped_packets_total{direction=\"outbound\",reason=\"no_route\"}") == before;
		     i++)
			loop_run_once(p->loop, 10);
		assert_true(scrape(m, "knitd_dropped_packets_total{direction=\"outbound\",reason=\"no_route\"}") > before);
	}

	assert_int_equal(engine_peer_remove(p->a, p->pb), 0);
	engine_stats(p->a, &es);
	assert_true((double)es.rx_bytes >= in && (double)es.tx_bytes >= out);
	assert_int_equal(scrape(m, "knitd_peers"), 0);
	assert_int_equal(scrape(m, "knitd_peers_with_session"), 0);
	assert_true(scrape(m, "knitd_outbound_bytes_total") >= out);
	assert_true(scrape(m, "knitd_inbound_bytes_total") >= in);

	exporter_free(x);
	metrics_free(m);
	close(sx);
	close(sy);
}

/* The UAPI glue: a set request's text through uapi_parse_set() and
 * engine_set(), and back out through engine_get(). */
static void test_uapi_set_get(void **state)
{
	struct pair *p = *state;
	static const char hexa[] = "0123456789abcdef";
	char text[1024], khex[65], phex[65];
	struct uapi_config *cfg = NULL;
	struct uapi_error err;
	struct uapi_device d = { 0 };
	uint8_t other[32], other_pub[32];
	struct buf out = BUF_INIT(1 << 16);

	noise_keygen(other);
	assert_true(noise_public_from_private(other_pub, other));
	for (int i = 0; i < 32; i++) {
		khex[2 * i] = hexa[other_pub[i] >> 4];
		khex[2 * i + 1] = hexa[other_pub[i] & 15];
		phex[2 * i] = hexa[p->pa[i] >> 4];
		phex[2 * i + 1] = hexa[p->pa[i] & 15];
	}
	khex[64] = phex[64] = '\0';
	snprintf(text, sizeof(text),
		 "replace_peers=true\n"
		 "public_key=%s\nendpoint=192.0.2.7:51820\npersistent_keepalive_interval=25\n"
		 "allowed_ip=10.92.0.0/16\nallowed_ip=fd92::/64\n"
		 "public_key=%s\nremove=true\n\n",
		 khex, phex);
	assert_true(uapi_parse_set(text, strlen(text), &cfg, &err));
	assert_int_equal(engine_set(p->b, cfg), 0);
	uapi_config_free(cfg);

	assert_int_equal(engine_get(p->b, &d), 0);
	assert_int_equal(d.n_peers, 1);
	assert_memory_equal(d.peers[0].public_key, other_pub, 32);
	assert_int_equal(d.peers[0].persistent_keepalive, 25);
	assert_int_equal(d.peers[0].n_allowed_ips, 2);
	assert_true(d.peers[0].has_endpoint);
	assert_int_equal(uapi_format_get(&d, &out), 0);
	assert_non_null(strstr(buf_str(&out), "endpoint=192.0.2.7:51820\n"));
	assert_non_null(strstr(buf_str(&out), "allowed_ip=fd92::/64\n"));
	uapi_device_release(&d);
	buf_free(&out);

	/* A private key equal to a peer's removes that peer, as wg(8) does. */
	assert_int_equal(engine_set_private_key(p->b, other), 0);
	assert_int_equal(engine_get(p->b, &d), 0);
	assert_int_equal(d.n_peers, 0);
	uapi_device_release(&d);
	/* The key is kept and reported clamped (RFC 7748), as the kernel and
	 * wireguard-go report it; the same key unclamped is no change. */
	{
		uint8_t raw[32], clamped[32], pub1[32], pub2[32];

		memset(raw, 0xff, sizeof(raw));
		memcpy(clamped, raw, sizeof(raw));
		clamped[0] &= 248;
		clamped[31] = (clamped[31] & 127) | 64;
		assert_int_equal(engine_set_private_key(p->b, raw), 0);
		assert_true(engine_public_key(p->b, pub1));
		assert_int_equal(engine_get(p->b, &d), 0);
		assert_memory_equal(d.private_key, clamped, 32);
		uapi_device_release(&d);
		assert_int_equal(engine_set_private_key(p->b, clamped), 0);
		assert_true(engine_public_key(p->b, pub2));
		assert_memory_equal(pub1, pub2, 32);
	}
	/* Listen port belongs to the hub: a non-owning engine refuses a change. */
	cfg = calloc(1, sizeof(*cfg));
	assert_non_null(cfg);
	cfg->flags = UAPI_DEVICE_HAS_LISTEN_PORT;
	cfg->listen_port = (uint16_t)(hub_port(p->hub) + 1);
	assert_int_equal(engine_set(p->b, cfg), -EBUSY);
	cfg->listen_port = hub_port(p->hub);
	assert_int_equal(engine_set(p->b, cfg), 0);
	uapi_config_free(cfg);
}

/* Sends blobs of len bytes from s until one arrives whole on r (running
 * the loop); then sends burst more without waiting. */
static bool large_through(struct pair *p, int s, const char *addr, uint16_t port, int r, size_t len, int burst)
{
	static uint8_t out[65536], in[65536];
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port) };
	uint64_t deadline = loop_mono_ms() + 12000, next = 0;

	for (size_t i = 0; i < len; i++)
		out[i] = (uint8_t)(i * 7 + len);
	inet_pton(AF_INET, addr, &to.sin_addr);
	while (loop_mono_ms() < deadline) {
		ssize_t n;

		if (loop_mono_ms() >= next) {
			for (int i = 0; i <= burst; i++)
				assert_int_equal(sendto(s, out, len, 0, (struct sockaddr *)&to, sizeof(to)), (ssize_t)len);
			next = loop_mono_ms() + 200;
		}
		loop_run_once(p->loop, 10);
		while ((n = recv(r, in, sizeof(in), 0)) >= 0)
			if ((size_t)n == len && !memcmp(in, out, len))
				return true;
	}
	return false;
}

/* A tunnel MTU of 34736 on both sides (the kernel selftest's big_mtu
 * round), the datagrams fragmented by IP on a 1500-byte underlay: inner
 * packets up to the MTU go through whole, in large pool slots. */
static void test_large_mtu(void **state)
{
	struct pair *p = *state;
	int sx = udp_socket_in(ns_x, "10.91.0.1", 7007), sy = udp_socket_in(ns_y, "10.91.0.2", 7008);
	struct engine_stats es;

	sh("ip link set lo mtu 1500 && ip link set kte0a mtu 34736");
	enter(ns_y);
	sh("ip link set kte0b mtu 34736");
	enter(ns_x);
	assert_true(large_through(p, sx, "10.91.0.2", 7008, sy, 34708, 0));
	assert_true(large_through(p, sy, "10.91.0.1", 7007, sx, 20000, 0));
	assert_true(large_through(p, sx, "10.91.0.2", 7008, sy, 1000, 0));
	engine_stats(p->a, &es);
	assert_int_equal(es.tun.too_big, 0);
	sh("ip link set lo mtu 65536");
	close(sx);
	close(sy);
}

/* Two large slots for bursts of fifty large packets: readers wait for a
 * slot, then drop rather than stall; the device keeps carrying traffic. */
static int pair_setup_few_large(void **state)
{
	int ret;

	large_slots = 2;
	ret = pair_setup(state);
	large_slots = 0;
	return ret;
}

static void test_large_slots_exhausted(void **state)
{
	struct pair *p = *state;
	int sx = udp_socket_in(ns_x, "10.91.0.1", 7009), sy = udp_socket_in(ns_y, "10.91.0.2", 7010);
	struct hub_stats hs;
	struct engine_stats ea, eb;
	struct metrics *m;
	struct exporter *x;
	uint8_t *held[2];
	unsigned long long before;

	sh("ip link set kte0a mtu 9000");
	enter(ns_y);
	sh("ip link set kte0b mtu 9000");
	enter(ns_x);
	assert_true(large_through(p, sx, "10.91.0.2", 7010, sy, 8000, 50));
	assert_true(large_through(p, sy, "10.91.0.1", 7009, sx, 8000, 50));
	assert_true(large_through(p, sx, "10.91.0.2", 7010, sy, 100, 0));
	/* The counters knitd exports: at least the first packet each way took
	 * a large slot at both ends (the TUN read and the datagram), and every
	 * slot comes back once the bursts are through. */
	hub_stats(p->hub, &hs);
	for (uint64_t deadline = loop_mono_ms() + 5000; hs.pool_large.in_use && loop_mono_ms() < deadline;) {
		loop_run_once(p->loop, 10);
		hub_stats(p->hub, &hs);
	}
	engine_stats(p->a, &ea);
	engine_stats(p->b, &eb);
	fprintf(stderr, "large slots: %zu made, %llu taken; no room: tx %llu + %llu, rx %llu\n", hs.pool_large.made,
		hs.pool_large.taken, ea.tx_no_large, eb.tx_no_large, hs.rx_no_large);
	assert_int_equal(hs.pool_large.made, 2);
	assert_int_equal(hs.pool_large.in_use, 0);
	assert_true(hs.pool_large.taken >= 4);

	/* Both large slots held (as by large packets staged for a peer that
	 * has no session): a large packet waits 20 ms for one, then is dropped
	 * and counted; the device carries on, and once the slots are back
	 * large packets flow again. */
	assert_int_equal(pool_get(p->hub->pool, held, 2), 2);
	assert_true(pool_swap_large(p->hub->pool, &held[0]));
	assert_true(pool_swap_large(p->hub->pool, &held[1]));
	{
		static uint8_t big[8000];
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(7010) };

		inet_pton(AF_INET, "10.91.0.2", &to.sin_addr);
		before = ea.tx_no_large; /* the bursts may have been short already */
		assert_int_equal(sendto(sx, big, sizeof(big), 0, (struct sockaddr *)&to, sizeof(to)), (ssize_t)sizeof(big));
		engine_stats(p->a, &ea);
		for (uint64_t deadline = loop_mono_ms() + 5000; ea.tx_no_large == before && loop_mono_ms() < deadline;) {
			loop_run_once(p->loop, 10);
			engine_stats(p->a, &ea);
		}
		assert_int_equal(ea.tx_no_large, before + 1);
	}
	assert_true(large_through(p, sx, "10.91.0.2", 7010, sy, 100, 0));
	pool_put(p->hub->pool, held, 2);
	assert_true(large_through(p, sx, "10.91.0.2", 7010, sy, 8000, 0));
	hub_stats(p->hub, &hs);
	engine_stats(p->a, &ea);

	/* ... and on /metrics. */
	m = metrics_new();
	assert_non_null(m);
	x = exporter_new(m, p->a);
	assert_non_null(x);
	metrics_set_collector(m, exporter_collect, x);
	assert_int_equal(scrape(m, "knitd_large_packet_buffers"), 2);
	assert_int_equal(scrape(m, "knitd_large_packet_buffers_in_use"), 0);
	assert_true(scrape(m, "knitd_large_packet_buffers_taken_total") >= (double)hs.pool_large.taken);
	assert_int_equal(scrape(m, "knitd_dropped_packets_total{direction=\"outbound\",reason=\"no_large_buffer\"}"),
			 ea.tx_no_large);
	assert_true(scrape(m, "knitd_dropped_packets_total{direction=\"inbound\",reason=\"no_large_buffer\"}") >=
		    (double)hs.rx_no_large);
	exporter_free(x);
	metrics_free(m);
	close(sx);
	close(sy);
}

/* Small slots swapped for large ones, given back in one mixed put; the
 * large slab made on first use; waiting for one, then giving up until one
 * is free again. */
static void test_pool_large(void **state)
{
	struct pool *pl;
	uint8_t *b[4], *small0;
	uint64_t since = 0;
	struct pool_large_stats ls;

	(void)state;
	assert_int_equal(pool_new(&pl, 4, 2), 0);
	assert_int_equal(pool_large_available(pl), 0);
	pool_large_stats(pl, &ls);
	assert_true(ls.made == 0 && ls.in_use == 0 && ls.taken == 0);
	assert_int_equal(pool_get(pl, b, 4), 4);
	small0 = b[0];
	assert_true(pool_swap_large(pl, &b[0]));
	assert_ptr_not_equal(b[0], small0);
	assert_int_equal(pool_available(pl), 1); /* the small one came back */
	assert_int_equal(pool_large_available(pl), 1);
	memset(b[0], 0xab, POOL_LARGE_SIZE); /* all of it is ours */
	assert_true(pool_swap_large(pl, &b[1]));
	assert_false(pool_swap_large(pl, &b[2]));
	pool_large_stats(pl, &ls);
	assert_true(ls.made == 2 && ls.in_use == 2 && ls.taken == 2);
	assert_int_equal(pool_large_wait(&since, 1000), -ENOBUFS);
	assert_int_equal(pool_large_wait(&since, 1000 + POOL_LARGE_WAIT_MS - 1), -ENOBUFS);
	assert_int_equal(pool_large_wait(&since, 1000 + POOL_LARGE_WAIT_MS), -ENOMEM);
	assert_int_equal(pool_large_wait(&since, 5000), -ENOMEM); /* until one is had again */
	pool_put(pl, b, 4);
	assert_int_equal(pool_available(pl), 4);
	assert_int_equal(pool_large_available(pl), 2);
	pool_large_stats(pl, &ls);
	assert_true(ls.made == 2 && ls.in_use == 0 && ls.taken == 2);
	pool_free(pl);
}

static int relay_pair_setup(void **state)
{
	int r;

	with_relay = true;
	r = pair_setup(state);
	with_relay = false;
	return r;
}

/* A handshake that came through a relay, under load: the cookie reply
 * goes back through the relay to the sender's key (it has no address),
 * and the sender takes it. */
static void test_relayed_cookie_reply(void **state)
{
	struct pair *p = *state;
	struct hub_stats st;
	uint8_t init[MESSAGE_INITIATION_LEN];
	struct peer *pa_on_a;

	assert_int_equal(engine_peer_set_path(p->a, p->pb, true, NULL), 0);
	assert_int_equal(engine_peer_handshake(p->a, p->pb), 0);
	assert_int_equal(relayed_a.count, 1);
	assert_memory_equal(relayed_a.to, p->pb, 32);
	assert_int_equal(relayed_a.len, MESSAGE_INITIATION_LEN);
	memcpy(init, relayed_a.msg, sizeof(init));
	/* Two queued at once: the first is handled under load (no MAC2). */
	receive_relayed(p->hub, p->pa, init, sizeof(init));
	receive_relayed(p->hub, p->pa, init, sizeof(init));
	receive_handshakes(p->hub);
	hub_stats(p->hub, &st);
	assert_true(st.cookie_replies_sent >= 1);
	assert_true(relayed_b.count >= 1);
	assert_memory_equal(relayed_b.to, p->pa, 32);
	assert_int_equal(relayed_b.len, MESSAGE_COOKIE_LEN);
	assert_int_equal(relayed_b.msg[0], MESSAGE_HANDSHAKE_COOKIE);
	/* Relayed back to a: its peer b now holds the cookie. */
	receive_relayed(p->hub, p->pb, relayed_b.msg, relayed_b.len);
	receive_handshakes(p->hub);
	pa_on_a = engine_peer_lookup(p->a, p->pb);
	assert_non_null(pa_on_a);
	assert_true(pa_on_a->cookie.is_valid);
}

/* The handshake queue keeps its last quarter for messages a flood of
 * made-up initiations cannot send: those carrying a MAC2, and cookie
 * replies. */
static void test_handshake_queue_reserve(void **state)
{
	struct hub_config hc = { .handshake_queue_max = 8 };
	struct endpoint from = { 0 };
	struct hub_handshake out;
	struct hub_stats st;
	uint8_t plain[MESSAGE_INITIATION_LEN] = { MESSAGE_HANDSHAKE_INITIATION };
	uint8_t with_mac2[MESSAGE_INITIATION_LEN] = { MESSAGE_HANDSHAKE_INITIATION };
	uint8_t cookie[MESSAGE_COOKIE_LEN] = { MESSAGE_HANDSHAKE_COOKIE };
	struct loop *loop = loop_new();
	struct hub *h;
	size_t left;

	(void)state;
	assert_non_null(loop);
	assert_int_equal(hub_new(&h, loop, &hc), 0);
	with_mac2[MESSAGE_MAC2_OFFSET(sizeof(with_mac2)) + 3] = 1;
	from.addr.in4.sin_family = AF_INET;
	for (int i = 0; i < 6; i++)
		assert_true(hub_handshake_enqueue(h, plain, sizeof(plain), &from));
	assert_false(hub_handshake_enqueue(h, plain, sizeof(plain), &from));
	assert_true(hub_handshake_enqueue(h, with_mac2, sizeof(with_mac2), &from));
	assert_true(hub_handshake_enqueue(h, cookie, sizeof(cookie), &from));
	assert_false(hub_handshake_enqueue(h, with_mac2, sizeof(with_mac2), &from)); /* full */
	assert_false(hub_handshake_enqueue(h, cookie, sizeof(cookie), &from));
	/* In order, and a freed slot goes to a cookie reply, not a plain one. */
	assert_true(hub_handshake_dequeue(h, &out, &left));
	assert_int_equal(left, 7);
	assert_memory_equal(out.msg, plain, sizeof(plain));
	assert_false(hub_handshake_enqueue(h, plain, sizeof(plain), &from));
	assert_true(hub_handshake_enqueue(h, cookie, sizeof(cookie), &from));
	hub_stats(h, &st);
	assert_int_equal(st.handshakes_queued, 9);
	assert_int_equal(st.handshakes_dropped, 4);
	hub_free(h);
	loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_two_identities_one_socket, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_source_check, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_new_path_resends_initiation, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_remove_under_traffic, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_uapi_set_get, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_exporter, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_large_mtu, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_large_slots_exhausted, pair_setup_few_large, pair_teardown),
		cmocka_unit_test_setup_teardown(test_relayed_cookie_reply, relay_pair_setup, pair_teardown),
		cmocka_unit_test(test_handshake_queue_reserve),
		cmocka_unit_test(test_pool_large),
	};

	enum log_level level = LOG_WARN;

	if (getenv("KNIT_LOG_LEVEL"))
		log_level_parse(getenv("KNIT_LOG_LEVEL"), &level);
	log_init("test_engine", level);
	if (aead_init(AEAD_IMPL_AUTO) != 0)
		return 1;
	if (unshare(CLONE_NEWNET) != 0) {
		printf("# skipped: unshare(CLONE_NEWNET): %s\n", strerror(errno));
		return 0;
	}
	ns_x = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns_x < 0 || system("ip link set lo up") != 0)
		return 1;
	if (unshare(CLONE_NEWNET) != 0)
		return 1;
	ns_y = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns_y < 0 || system("ip link set lo up") != 0)
		return 1;
	enter(ns_x);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
