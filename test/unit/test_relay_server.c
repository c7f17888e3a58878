/* knit-relay's core on a real loop over loopback TCP, with clients driven
 * by the relay client core: packets between two clients, PEER_GONE for
 * unknown and departed keys, a client that cannot prove its key, garbage
 * frames, a reader too slow for its queue, and two meshed relays. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "buf.h"
#include "loop.h"
#include "relay/client.h"
#include "relay/frame.h"
#include "relay/hello.h"
#include "server.h"

struct tc {
	int fd;
	bool read_paused, closed;
	uint8_t pub[32], priv[32];
	struct relay_client rc;
	struct buf out;
	unsigned packets, gone, health;
	uint8_t last_src[32], last_gone[32];
	uint8_t last_reason;
	char last_data[64];
};

static void on_packet(const uint8_t src[32], const uint8_t *data, size_t len, void *arg)
{
	struct tc *t = arg;

	t->packets++;
	memcpy(t->last_src, src, 32);
	snprintf(t->last_data, sizeof(t->last_data), "%.*s", (int)(len < 63 ? len : 63), data);
}

static void on_gone(const uint8_t key[32], uint8_t reason, void *arg)
{
	struct tc *t = arg;

	t->gone++;
	memcpy(t->last_gone, key, 32);
	t->last_reason = reason;
}

static void on_health(const char *p, size_t len, void *arg)
{
	((struct tc *)arg)->health++;
}

static const struct relay_client_cb cb = { .packet = on_packet, .peer_gone = on_gone, .health = on_health };

static int tcp_connect(uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(0x7f000001);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

static void tc_open(struct tc *t, uint16_t port)
{
	memset(t, 0, sizeof(*t));
	crypto_box_keypair(t->pub, t->priv);
	t->fd = tcp_connect(port);
	buf_init(&t->out, 1 << 24);
	relay_client_init(&t->rc, t->pub, t->priv, NULL, &cb, t);
	assert_int_equal(relay_client_start(&t->rc, "localhost", &t->out), 0);
}

static void tc_close(struct tc *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	relay_client_free(&t->rc);
	buf_free(&t->out);
}

/* Moves bytes both ways without blocking. */
static void tc_io(struct tc *t)
{
	uint8_t b[65536];
	ssize_t n = -1; /* nothing read: not closed */

	if (t->fd < 0)
		return;
	while (t->out.len) {
		n = send(t->fd, t->out.data, t->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n <= 0)
			break;
		buf_consume(&t->out, (size_t)n);
	}
	while (!t->read_paused && (n = recv(t->fd, b, sizeof(b), MSG_DONTWAIT)) != 0) {
		if (n < 0)
			return;
		if (relay_client_feed(&t->rc, b, (size_t)n, &t->out) < 0)
			return;
	}
	if (n == 0)
		t->closed = true;
}

static void pump(struct loop *loop, struct tc **tcs, size_t n, bool (*done)(void *), void *arg)
{
	for (int i = 0; i < (done ? 2000 : 20); i++) {
		for (size_t k = 0; k < n; k++)
			tc_io(tcs[k]);
		if (done && done(arg))
			return;
		loop_run_once(loop, 2);
	}
	if (done)
		fail_msg("condition not reached");
}

static bool both_ready(void *arg)
{
	struct tc **t = arg;

	return relay_client_ready(&t[0]->rc) && relay_client_ready(&t[1]->rc);
}

static bool got_packet(void *arg)
{
	return ((struct tc *)arg)->packets > 0;
}

static bool got_gone(void *arg)
{
	return ((struct tc *)arg)->gone > 0;
}

static bool is_closed(void *arg)
{
	return ((struct tc *)arg)->closed;
}

static struct relay_server *server(struct loop *loop, const uint8_t *mesh_key, const char *const *mesh_with,
				   size_t queue, uint8_t priv[32])
{
	struct relay_server_opts o = { .listen = "127.0.0.1:0", .listen_fd = -1, .private_key = priv,
				       .mesh_key = mesh_key, .mesh_with = mesh_with, .queue_bytes = queue };
	struct relay_server *s = NULL;

	randombytes_buf(priv, 32);
	assert_int_equal(relay_server_new(loop, &o, &s), 0);
	return s;
}

static void test_exchange(void **state)
{
	struct loop *loop = loop_new();
	uint8_t priv[32], nobody[32] = { 7 };
	struct relay_server *s = server(loop, NULL, NULL, 0, priv);
	struct tc a, b;
	struct tc *both[2] = { &a, &b };
	struct relay_server_stats st;

	tc_open(&a, relay_server_port(s));
	tc_open(&b, relay_server_port(s));
	pump(loop, both, 2, both_ready, both);
	assert_true(a.health > 0); /* HEALTH "" on accept */

	assert_int_equal(relay_client_send(&a.rc, b.pub, "hello b", 7, &a.out), 0);
	pump(loop, both, 2, got_packet, &b);
	assert_string_equal(b.last_data, "hello b");
	assert_memory_equal(b.last_src, a.pub, 32);

	/* To a key nobody holds: PEER_GONE(not here). */
	assert_int_equal(relay_client_send(&a.rc, nobody, "x", 1, &a.out), 0);
	pump(loop, both, 2, got_gone, &a);
	assert_memory_equal(a.last_gone, nobody, 32);
	assert_int_equal(a.last_reason, RELAY_GONE_NOT_HERE);

	/* B leaves: A, who sent to B, hears of it. */
	a.gone = 0;
	close(b.fd);
	b.fd = -1;
	pump(loop, both, 2, got_gone, &a);
	assert_memory_equal(a.last_gone, b.pub, 32);
	assert_int_equal(a.last_reason, RELAY_GONE_DISCONNECTED);
	relay_server_stats(s, &st);
	assert_int_equal(st.clients, 1);
	assert_int_equal(st.packets_out, 1);
	assert_int_equal(st.drops_unknown_dest, 1);

	tc_close(&a);
	tc_close(&b);
	relay_server_free(s);
	loop_free(loop);
}

static bool b_ready(void *arg)
{
	return relay_client_ready(&((struct tc *)arg)->rc);
}

/* A client claiming a key it does not hold gets closed, and nothing sent
 * to that key reaches it. */
static void test_no_proof(void **state)
{
	struct loop *loop = loop_new();
	uint8_t priv[32], wrong_pub[32], wrong_priv[32];
	struct relay_server *s = server(loop, NULL, NULL, 0, priv);
	struct tc a, b;
	struct tc *both[2] = { &a, &b };
	struct relay_server_stats st;

	tc_open(&a, relay_server_port(s));
	tc_open(&b, relay_server_port(s));
	/* b claims its public key but signs with another private key. */
	crypto_box_keypair(wrong_pub, wrong_priv);
	memcpy(b.rc.priv, wrong_priv, 32);
	pump(loop, both, 2, b_ready, &a);
	pump(loop, both, 2, is_closed, &b);
	assert_false(relay_client_ready(&b.rc));
	relay_server_stats(s, &st);
	assert_int_equal(st.handshake_failures, 1);
	assert_int_equal(st.clients, 1);
	assert_int_equal(relay_client_send(&a.rc, b.pub, "secret", 6, &a.out), 0);
	pump(loop, both, 2, got_gone, &a);
	assert_int_equal(a.last_reason, RELAY_GONE_NOT_HERE);
	assert_int_equal(b.packets, 0);

	tc_close(&a);
	tc_close(&b);
	relay_server_free(s);
	loop_free(loop);
}

/* Malformed and unknown frames from a client are dropped, counted, and
 * change nothing: the client still relays afterwards. A client speaking
 * garbage before the handshake is closed. */
static void test_garbage(void **state)
{
	struct loop *loop = loop_new();
	uint8_t priv[32], junk[64];
	struct relay_server *s = server(loop, NULL, NULL, 0, priv);
	struct tc a, b, g;
	struct tc *all[3] = { &a, &b, &g };
	struct relay_server_stats st;

	tc_open(&a, relay_server_port(s));
	tc_open(&b, relay_server_port(s));
	pump(loop, all, 2, both_ready, all);
	relay_frame_append(&a.out, RELAY_FRAME_SEND_PACKET, "short", 5, NULL, 0, NULL, 0);
	relay_frame_append(&a.out, RELAY_FRAME_PING, "bad", 3, NULL, 0, NULL, 0);
	relay_frame_append(&a.out, RELAY_FRAME_FORWARD_PACKET, junk, sizeof(junk), NULL, 0, NULL, 0);
	relay_frame_append(&a.out, RELAY_FRAME_RECV_PACKET, junk, sizeof(junk), NULL, 0, NULL, 0);
	relay_frame_append(&a.out, 0x66, "future", 6, NULL, 0, NULL, 0);
	relay_client_send(&a.rc, b.pub, "after", 5, &a.out);
	pump(loop, all, 2, got_packet, &b);
	assert_string_equal(b.last_data, "after");
	relay_server_stats(s, &st);
	assert_int_equal(st.bad_frames, 4);
	assert_int_equal(st.clients, 2);

	/* Garbage instead of an upgrade. */
	memset(&g, 0, sizeof(g));
	g.fd = tcp_connect(relay_server_port(s));
	buf_init(&g.out, 1024);
	buf_add_str(&g.out, "\x16\x03\x01garbage that is no request\r\n\r\n");
	relay_client_init(&g.rc, a.pub, a.priv, NULL, &cb, &g);
	g.rc.state = RELAY_CLIENT_UPGRADING;
	pump(loop, all, 3, is_closed, &g);
	assert_false(relay_client_ready(&g.rc));
	relay_server_stats(s, &st);
	assert_int_equal(st.clients, 2);

	tc_close(&a);
	tc_close(&b);
	tc_close(&g);
	relay_server_free(s);
	loop_free(loop);
}

static bool all_in(void *arg)
{
	struct relay_server_stats st;

	relay_server_stats(arg, &st);
	return st.packets_in == 8000;
}

/* A destination that never reads: the relay's memory for it stays under
 * its queue cap and the excess is dropped and counted. */
static void test_slow_reader(void **state)
{
	struct loop *loop = loop_new();
	uint8_t priv[32], pkt[1200];
	const size_t cap = RELAY_MAX_FRAME + 1;
	struct relay_server *s = server(loop, NULL, NULL, cap, priv);
	struct tc a, b;
	struct tc *both[2] = { &a, &b };
	struct relay_server_stats st;
	int small = 4096;

	tc_open(&a, relay_server_port(s));
	tc_open(&b, relay_server_port(s));
	setsockopt(b.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	pump(loop, both, 2, both_ready, both);
	b.read_paused = true;
	memset(pkt, 0xab, sizeof(pkt));
	for (int round = 0; round < 40; round++) {
		for (int i = 0; i < 200; i++)
			relay_client_send(&a.rc, b.pub, pkt, sizeof(pkt), &a.out);
		pump(loop, both, 2, NULL, NULL);
		relay_server_stats(s, &st);
		assert_true(st.queued_bytes <= cap + 4096 + 1300);
	}
	pump(loop, both, 2, all_in, s);
	relay_server_stats(s, &st);
	assert_true(st.queued_bytes <= cap + 4096 + 1300);
	assert_true(st.drops_queue_full > 0);
	assert_int_equal(st.packets_out + st.drops_queue_full, 8000);

	tc_close(&a);
	tc_close(&b);
	relay_server_free(s);
	loop_free(loop);
}

struct mesh_ctx {
	struct relay_server *s1, *s2;
};

static bool meshed(void *arg)
{
	struct mesh_ctx *m = arg;
	struct relay_server_stats a, b;

	relay_server_stats(m->s1, &a);
	relay_server_stats(m->s2, &b);
	return a.mesh_peers_up == 1 && b.mesh_peers_up == 1 && a.remote_clients == 1 && b.remote_clients == 1;
}

static void test_mesh(void **state)
{
	struct loop *loop = loop_new();
	uint8_t priv1[32], priv2[32], mk[32], wrong[32];
	int l1 = socket(AF_INET, SOCK_STREAM, 0), l2 = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	char url1[64], url2[64];
	const char *m1[] = { url2, NULL }, *m2[] = { url1, NULL };
	struct relay_server_opts o1 = { .listen_fd = l1, .private_key = priv1, .mesh_key = mk, .mesh_with = m1 };
	struct relay_server_opts o2 = { .listen_fd = l2, .private_key = priv2, .mesh_key = mk, .mesh_with = m2 };
	struct mesh_ctx m;
	struct tc a, b;
	struct tc *both[2] = { &a, &b };

	relay_hello_mesh_key(mk, "region", 6);
	relay_hello_mesh_key(wrong, "other", 5);
	randombytes_buf(priv1, 32);
	randombytes_buf(priv2, 32);
	sin.sin_addr.s_addr = htonl(0x7f000001);
	assert_int_equal(bind(l1, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(bind(l2, (struct sockaddr *)&sin, sizeof(sin)), 0);
	listen(l1, 16);
	listen(l2, 16);
	getsockname(l1, (struct sockaddr *)&sin, &sl);
	snprintf(url1, sizeof(url1), "http://127.0.0.1:%u", ntohs(sin.sin_port));
	getsockname(l2, (struct sockaddr *)&sin, &sl);
	snprintf(url2, sizeof(url2), "http://127.0.0.1:%u", ntohs(sin.sin_port));
	assert_int_equal(relay_server_new(loop, &o1, &m.s1), 0);
	assert_int_equal(relay_server_new(loop, &o2, &m.s2), 0);

	tc_open(&a, relay_server_port(m.s1));
	tc_open(&b, relay_server_port(m.s2));
	pump(loop, both, 2, both_ready, both);
	pump(loop, both, 2, meshed, &m);
	assert_int_equal(relay_client_send(&a.rc, b.pub, "via mesh", 8, &a.out), 0);
	pump(loop, both, 2, got_packet, &b);
	assert_string_equal(b.last_data, "via mesh");
	assert_memory_equal(b.last_src, a.pub, 32);
	assert_int_equal(relay_client_send(&b.rc, a.pub, "back", 4, &b.out), 0);
	pump(loop, both, 2, got_packet, &a);
	assert_string_equal(a.last_data, "back");

	/* B leaves relay 2: relay 1 learns it, and A (a sender) is told. */
	close(b.fd);
	b.fd = -1;
	pump(loop, both, 2, got_gone, &a);
	assert_memory_equal(a.last_gone, b.pub, 32);

	tc_close(&a);
	tc_close(&b);
	relay_server_free(m.s1);
	relay_server_free(m.s2);

	/* A relay with the wrong mesh key never meshes. */
	{
		int l3 = socket(AF_INET, SOCK_STREAM, 0);
		struct relay_server *s3 = NULL, *s4 = NULL;
		struct relay_server_stats st;
		char url3[64];
		const char *m4[] = { url3, NULL };
		struct relay_server_opts o3 = { .listen_fd = l3, .private_key = priv1, .mesh_key = mk };
		struct relay_server_opts o4 = { .listen = "127.0.0.1:0", .listen_fd = -1, .private_key = priv2,
						.mesh_key = wrong, .mesh_with = m4 };

		sin.sin_port = 0;
		assert_int_equal(bind(l3, (struct sockaddr *)&sin, sizeof(sin)), 0);
		listen(l3, 16);
		sl = sizeof(sin);
		getsockname(l3, (struct sockaddr *)&sin, &sl);
		snprintf(url3, sizeof(url3), "http://127.0.0.1:%u", ntohs(sin.sin_port));
		assert_int_equal(relay_server_new(loop, &o3, &s3), 0);
		assert_int_equal(relay_server_new(loop, &o4, &s4), 0);
		for (int i = 0; i < 300; i++)
			loop_run_once(loop, 2);
		relay_server_stats(s4, &st);
		assert_int_equal(st.mesh_peers_up, 0);
		relay_server_stats(s3, &st);
		assert_true(st.handshake_failures >= 1);
		relay_server_free(s4);
		relay_server_free(s3);
	}
	loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exchange),
		cmocka_unit_test(test_no_proof),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_slow_reader),
		cmocka_unit_test(test_mesh),
	};
	if (sodium_init() < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
