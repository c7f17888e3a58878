/* Disco: messages round-trip sealed between two disco keys and refuse
 * tampering, other recipients and malformed bodies; path selection starts
 * on the relay, goes direct on the first pong, falls back when pongs stop
 * for DISCO_TRUST_MS, returns, and switches only to a clearly faster
 * endpoint; the route before a pong is the first netmap endpoint (and the
 * relay too only when there is one). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "disco/message.h"
#include "disco/path.h"

static struct sockaddr_storage v4(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	inet_pton(AF_INET, ip, &s->sin_addr);
	return ss;
}

static struct sockaddr_storage v6(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	inet_pton(AF_INET6, ip, &s->sin6_addr);
	return ss;
}

static void test_seal_open(void **state)
{
	uint8_t apub[32], apriv[32], bpub[32], bpriv[32], cpub[32], cpriv[32];
	uint8_t pkt[DISCO_MAX_SEALED];
	struct disco_msg m = { .type = DISCO_CALL_ME_MAYBE }, got;
	char err[128];
	size_t n;

	crypto_box_keypair(apub, apriv);
	crypto_box_keypair(bpub, bpriv);
	crypto_box_keypair(cpub, cpriv);

	/* ping */
	m.type = DISCO_PING;
	randombytes_buf(m.txid, sizeof(m.txid));
	memset(m.node_key, 0x77, 32);
	n = disco_seal(&m, apub, apriv, bpub, pkt, sizeof(pkt));
	assert_true(n > 0);
	assert_true(disco_is(pkt, n));
	assert_memory_equal(disco_sender(pkt, n), apub, 32);
	assert_true(disco_open(pkt, n, bpriv, &got, err, sizeof(err)));
	assert_int_equal(got.type, DISCO_PING);
	assert_memory_equal(got.txid, m.txid, 12);
	assert_memory_equal(got.node_key, m.node_key, 32);
	/* not for C; tampered anywhere: refused */
	assert_false(disco_open(pkt, n, cpriv, &got, err, sizeof(err)));
	for (size_t i = DISCO_MAGIC_LEN; i < n; i++) {
		pkt[i] ^= 1;
		assert_false(disco_open(pkt, n, bpriv, &got, NULL, 0));
		pkt[i] ^= 1;
	}
	for (size_t k = 0; k < n; k++)
		assert_false(disco_open(pkt, k, bpriv, &got, NULL, 0));

	/* pong with an IPv4 and an IPv6 source */
	m.type = DISCO_PONG;
	m.src = v4("198.51.100.7", 41641);
	n = disco_seal(&m, apub, apriv, bpub, pkt, sizeof(pkt));
	assert_true(disco_open(pkt, n, bpriv, &got, err, sizeof(err)));
	assert_int_equal(got.src.ss_family, AF_INET);
	assert_memory_equal(&got.src, &m.src, sizeof(struct sockaddr_in));
	m.src = v6("2001:db8::9", 443);
	n = disco_seal(&m, apub, apriv, bpub, pkt, sizeof(pkt));
	assert_true(disco_open(pkt, n, bpriv, &got, err, sizeof(err)));
	assert_int_equal(got.src.ss_family, AF_INET6);
	assert_memory_equal(&got.src, &m.src, sizeof(struct sockaddr_in6));

	/* call-me-maybe: empty, full, over full */
	m.type = DISCO_CALL_ME_MAYBE;
	m.neps = 0;
	n = disco_seal(&m, apub, apriv, bpub, pkt, sizeof(pkt));
	assert_true(disco_open(pkt, n, bpriv, &got, err, sizeof(err)));
	assert_int_equal(got.neps, 0);
	for (size_t i = 0; i < DISCO_MAX_ENDPOINTS; i++)
		m.eps[i] = i % 2 ? v4("192.0.2.1", (uint16_t)(1000 + i)) : v6("fe80::1", (uint16_t)(2000 + i));
	m.neps = DISCO_MAX_ENDPOINTS;
	n = disco_seal(&m, apub, apriv, bpub, pkt, sizeof(pkt));
	assert_int_equal(n, DISCO_MAX_SEALED);
	assert_true(disco_open(pkt, n, bpriv, &got, err, sizeof(err)));
	assert_int_equal(got.neps, DISCO_MAX_ENDPOINTS);
	assert_memory_equal(&got.eps[5], &m.eps[5], sizeof(struct sockaddr_in));
	m.neps = DISCO_MAX_ENDPOINTS + 1;
	assert_int_equal(disco_seal(&m, apub, apriv, bpub, pkt, sizeof(pkt)), 0);
	assert_int_equal(disco_seal(&m, apub, apriv, bpub, pkt, 10), 0);
}

/* The precomputed-key variants interoperate with the plain ones, and a
 * third party's shared key opens nothing. */
static void test_seal_open_shared(void **state)
{
	uint8_t apub[32], apriv[32], bpub[32], bpriv[32], cpub[32], cpriv[32];
	uint8_t ab[DISCO_SHARED_LEN], ba[DISCO_SHARED_LEN], cb[DISCO_SHARED_LEN];
	uint8_t pkt[DISCO_MAX_SEALED];
	struct disco_msg m = { .type = DISCO_PING }, got;
	size_t n;

	(void)state;
	crypto_box_keypair(apub, apriv);
	crypto_box_keypair(bpub, bpriv);
	crypto_box_keypair(cpub, cpriv);
	assert_true(disco_shared(ab, bpub, apriv));
	assert_true(disco_shared(ba, apub, bpriv));
	assert_true(disco_shared(cb, bpub, cpriv));
	randombytes_buf(m.txid, sizeof(m.txid));
	memset(m.node_key, 0x42, 32);
	n = disco_seal_shared(&m, apub, ab, pkt, sizeof(pkt));
	assert_true(n > 0);
	assert_memory_equal(disco_sender(pkt, n), apub, 32);
	assert_true(disco_open(pkt, n, bpriv, &got, NULL, 0));
	assert_memory_equal(got.txid, m.txid, DISCO_TXID_LEN);
	assert_true(disco_open_shared(pkt, n, ba, &got, NULL, 0));
	assert_false(disco_open_shared(pkt, n, cb, &got, NULL, 0));
	pkt[n - 1] ^= 1;
	assert_false(disco_open_shared(pkt, n, ba, &got, NULL, 0));
	n = disco_seal(&m, bpub, bpriv, apub, pkt, sizeof(pkt));
	assert_true(disco_open_shared(pkt, n, ab, &got, NULL, 0));
	assert_int_equal(disco_seal_shared(&m, apub, ab, pkt, 10), 0);
}

static void test_parse_malformed(void **state)
{
	static const struct {
		const char *bytes;
		size_t len;
	} bad[] = {
		{ "", 0 },
		{ "\x01", 1 },
		{ "\x01\x00" "012345678901" "0123456789012345678901234567890", 45 }, /* version 0 */
		{ "\x01\x01" "01234567890", 13 },		 /* short ping */
		{ "\x02\x01" "012345678901" "0123456789012345", 30 }, /* short pong */
		{ "\x03\x01" "0123456789012345678", 21 },	 /* endpoint not a multiple of 18 */
		{ "\x09\x01", 2 },				 /* unknown type */
	};
	struct disco_msg m;
	char err[128];
	uint8_t pong[2 + 12 + 18] = { DISCO_PONG, 1 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_false(disco_msg_parse((const uint8_t *)bad[i].bytes, bad[i].len, &m, err, sizeof(err)));
		assert_true(err[0]);
	}
	/* port 0 in a pong */
	assert_false(disco_msg_parse(pong, sizeof(pong), &m, err, sizeof(err)));
	/* non-disco bytes the demultiplexer must not take: WireGuard, STUN */
	assert_false(disco_is((const uint8_t *)"\x01\x00\x00\x00", 4));
	{
		uint8_t wg[148] = { 1 }, stun[100] = { 0, 1, 0, 80, 0x21, 0x12, 0xa4, 0x42 };

		assert_false(disco_is(wg, sizeof(wg)));
		assert_false(disco_is(stun, sizeof(stun)));
	}
}

/* Answers every due ping to addrs in ok after rtt ms. */
static void answer(struct disco_peer *p, uint64_t now, const struct sockaddr_storage *ok, size_t nok,
		   uint32_t rtt)
{
	struct disco_ping_req req[DISCO_MAX_CANDIDATES];
	size_t n = disco_peer_pings_due(p, now, req, DISCO_MAX_CANDIDATES);

	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < nok; k++)
			if (memcmp(&req[i].addr, &ok[k], sizeof(struct sockaddr_in)) == 0)
				assert_true(disco_peer_on_pong(p, req[i].txid, (struct sockaddr *)&req[i].addr,
							       now + rtt));
}

static void test_path_upgrade_fallback(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage eps[2] = { v4("10.0.0.2", 41641), v4("203.0.113.5", 60000) }, got;
	struct disco_ping_req req[4];
	uint32_t lat;
	uint64_t t = 1000;

	disco_peer_init(&p);
	assert_int_equal(disco_peer_path(&p, t, &got, NULL), DISCO_PATH_RELAY);
	disco_peer_set_endpoints(&p, eps, 2, t);
	assert_int_equal(disco_peer_next_due(&p, t), 0);
	/* Pings go out; only the public one answers: direct at once. */
	answer(&p, t, &eps[1], 1, 12);
	assert_int_equal(disco_peer_path(&p, t + 12, &got, &lat), DISCO_PATH_DIRECT);
	assert_memory_equal(&got, &eps[1], sizeof(struct sockaddr_in));
	assert_int_equal(lat, 12);
	/* Nothing due until the heartbeat. */
	assert_int_equal(disco_peer_pings_due(&p, t + 100, req, 4), 0);
	assert_int_equal(disco_peer_next_due(&p, t + 100), DISCO_HEARTBEAT_MS - 100);
	/* Heartbeats answered: stays direct for a long time. */
	for (t += DISCO_HEARTBEAT_MS; t < 30000; t += DISCO_HEARTBEAT_MS) {
		answer(&p, t, &eps[1], 1, 12);
		assert_int_equal(disco_peer_path(&p, t + 12, NULL, NULL), DISCO_PATH_DIRECT);
	}
	/* The path breaks (NAT mapping flushed): pongs stop; within
	 * DISCO_TRUST_MS of the last pong, the relay. */
	{
		uint64_t last_pong = t - DISCO_HEARTBEAT_MS + 12, broke = t;

		for (; disco_peer_path(&p, t, NULL, NULL) == DISCO_PATH_DIRECT; t += 100)
			answer(&p, t, NULL, 0, 0);
		assert_true(t - last_pong <= DISCO_TRUST_MS + 100);
		assert_true(t - broke <= DISCO_TRUST_MS);
	}
	/* It comes back: direct again at the next probe's pong. */
	for (int i = 0; i < 100 && disco_peer_path(&p, t, NULL, NULL) == DISCO_PATH_RELAY; i++, t += 100)
		answer(&p, t, &eps[1], 1, 15);
	assert_int_equal(disco_peer_path(&p, t, &got, NULL), DISCO_PATH_DIRECT);
	assert_memory_equal(&got, &eps[1], sizeof(struct sockaddr_in));
}

static void test_path_pong_checks(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage eps[2] = { v4("10.0.0.2", 41641), v4("10.0.0.3", 41641) };
	struct disco_ping_req req[4];
	uint8_t wrong[12] = { 0 };
	size_t n;

	disco_peer_init(&p);
	disco_peer_set_endpoints(&p, eps, 2, 0);
	n = disco_peer_pings_due(&p, 0, req, 4);
	assert_int_equal(n, 2);
	/* Wrong txid, right txid from the wrong address, unknown address,
	 * too late: none counts. */
	assert_false(disco_peer_on_pong(&p, wrong, (struct sockaddr *)&req[0].addr, 5));
	assert_false(disco_peer_on_pong(&p, req[0].txid, (struct sockaddr *)&req[1].addr, 5));
	{
		struct sockaddr_storage other = v4("10.9.9.9", 1);

		assert_false(disco_peer_on_pong(&p, req[0].txid, (struct sockaddr *)&other, 5));
	}
	assert_false(disco_peer_on_pong(&p, req[0].txid, (struct sockaddr *)&req[0].addr,
					DISCO_PING_TIMEOUT_MS + 1));
	assert_int_equal(disco_peer_path(&p, 5, NULL, NULL), DISCO_PATH_RELAY);
	/* The right one counts once. */
	assert_true(disco_peer_on_pong(&p, req[1].txid, (struct sockaddr *)&req[1].addr, 5));
	assert_false(disco_peer_on_pong(&p, req[1].txid, (struct sockaddr *)&req[1].addr, 6));
	assert_int_equal(disco_peer_path(&p, 6, NULL, NULL), DISCO_PATH_DIRECT);
}

/* Pings what is due at t (expecting exactly the endpoint want) and
 * answers at t + rtt. */
static void ping_one(struct disco_peer *p, uint64_t t, const struct sockaddr_storage *want, uint32_t rtt)
{
	struct disco_ping_req req[4];

	assert_int_equal(disco_peer_pings_due(p, t, req, 4), 1);
	assert_memory_equal(&req[0].addr, want, sizeof(struct sockaddr_in));
	assert_true(disco_peer_on_pong(p, req[0].txid, (struct sockaddr *)&req[0].addr, t + rtt));
}

static void test_path_switch_margin(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage eps[2] = { v4("10.0.0.2", 41641), v4("192.168.1.2", 41641) }, got;
	struct disco_ping_req req[4];

	disco_peer_init(&p);
	disco_peer_set_endpoints(&p, eps, 2, 0);
	assert_int_equal(disco_peer_pings_due(&p, 0, req, 1), 1); /* eps[0] only */
	assert_true(disco_peer_on_pong(&p, req[0].txid, (struct sockaddr *)&req[0].addr, 10));
	/* eps[1] at 9 ms vs 10 ms: not better by the margin, stay. */
	ping_one(&p, 20, &eps[1], 9);
	disco_peer_path(&p, 30, &got, NULL);
	assert_memory_equal(&got, &eps[0], sizeof(struct sockaddr_in));
	/* Heartbeats to the path in use, then eps[1]'s probe at 2 ms: switch. */
	ping_one(&p, DISCO_HEARTBEAT_MS + 10, &eps[0], 10);
	ping_one(&p, 2 * DISCO_HEARTBEAT_MS + 10, &eps[0], 10);
	ping_one(&p, 3 * DISCO_HEARTBEAT_MS + 10, &eps[0], 10);
	ping_one(&p, DISCO_PROBE_MS + 20, &eps[1], 2);
	disco_peer_path(&p, DISCO_PROBE_MS + 22, &got, NULL);
	assert_memory_equal(&got, &eps[1], sizeof(struct sockaddr_in));
}

static void test_path_call_me_maybe_and_ping(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage a = v4("198.51.100.1", 5000), b = v6("2001:db8::2", 6000);
	struct sockaddr_storage many[DISCO_MAX_CANDIDATES + 4];
	struct disco_ping_req req[DISCO_MAX_CANDIDATES];

	disco_peer_init(&p);
	disco_peer_on_call_me_maybe(&p, &a, 1, 0);
	disco_peer_on_ping(&p, (struct sockaddr *)&b, 0);
	disco_peer_on_ping(&p, (struct sockaddr *)&b, 0); /* no duplicate */
	assert_int_equal(p.ncand, 2);
	assert_int_equal(disco_peer_pings_due(&p, 0, req, DISCO_MAX_CANDIDATES), 2);
	/* A call-me-maybe makes an endpoint due again at once, unless it was
	 * pinged just now (two peers pinging back would never stop). */
	assert_int_equal(disco_peer_pings_due(&p, 10, req, DISCO_MAX_CANDIDATES), 0);
	disco_peer_on_call_me_maybe(&p, &a, 1, 10);
	disco_peer_on_ping(&p, (struct sockaddr *)&b, 10);
	assert_int_equal(disco_peer_pings_due(&p, 10, req, DISCO_MAX_CANDIDATES), 0);
	disco_peer_on_call_me_maybe(&p, &a, 1, DISCO_REPING_MIN_MS);
	assert_int_equal(disco_peer_pings_due(&p, DISCO_REPING_MIN_MS, req, DISCO_MAX_CANDIDATES), 1);
	/* Capped at DISCO_MAX_CANDIDATES. */
	for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++)
		many[i] = v4("10.1.1.1", (uint16_t)(100 + i));
	disco_peer_set_endpoints(&p, many, sizeof(many) / sizeof(many[0]), 20);
	assert_int_equal(p.ncand, DISCO_MAX_CANDIDATES);
}

/* The peer's ping crosses ours: made due again, the endpoint is pinged
 * anew, and the pong to the earlier ping still counts (both NATs' holes
 * open at that moment; losing it would cost a probe interval). Two pings
 * back is too far. */
static void test_path_crossing_pings(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage a = v4("198.51.100.1", 5000);
	struct disco_ping_req first[1], second[1], third[1];

	disco_peer_init(&p);
	disco_peer_set_endpoints(&p, &a, 1, 0);
	assert_int_equal(disco_peer_pings_due(&p, 0, first, 1), 1);
	const uint64_t t = DISCO_REPING_MIN_MS;
	disco_peer_on_ping(&p, (struct sockaddr *)&a, t);
	assert_int_equal(disco_peer_pings_due(&p, t, second, 1), 1);
	assert_memory_not_equal(first[0].txid, second[0].txid, DISCO_TXID_LEN);
	assert_true(disco_peer_on_pong(&p, first[0].txid, (struct sockaddr *)&a, t + 1));
	assert_int_equal(p.cand[0].latency_ms, t + 1);
	assert_true(disco_peer_on_pong(&p, second[0].txid, (struct sockaddr *)&a, t + 2));
	assert_int_equal(p.cand[0].latency_ms, 2);
	assert_int_equal(disco_peer_path(&p, t + 2, NULL, NULL), DISCO_PATH_DIRECT);
	/* Three pings out: only the last two are answerable. */
	p.cand[0].pinged = false;
	assert_int_equal(disco_peer_pings_due(&p, t + 6, first, 1), 1);
	p.cand[0].pinged = false;
	assert_int_equal(disco_peer_pings_due(&p, t + 7, second, 1), 1);
	p.cand[0].pinged = false;
	assert_int_equal(disco_peer_pings_due(&p, t + 8, third, 1), 1);
	assert_false(disco_peer_on_pong(&p, first[0].txid, (struct sockaddr *)&a, t + 9));
	assert_true(disco_peer_on_pong(&p, second[0].txid, (struct sockaddr *)&a, t + 9));
	assert_true(disco_peer_on_pong(&p, third[0].txid, (struct sockaddr *)&a, t + 9));
}

/* A working path survives an endpoint update that no longer lists it. */
static void test_path_kept_across_update(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage a = v4("198.51.100.1", 5000), b = v4("198.51.100.1", 5001), got;

	disco_peer_init(&p);
	disco_peer_set_endpoints(&p, &a, 1, 0);
	answer(&p, 0, &a, 1, 3);
	disco_peer_set_endpoints(&p, &b, 1, 10);
	assert_int_equal(disco_peer_path(&p, 10, &got, NULL), DISCO_PATH_DIRECT);
	assert_memory_equal(&got, &a, sizeof(struct sockaddr_in));
	assert_int_equal(p.ncand, 2);
}

/* Before any pong: the first netmap endpoint at once, never the relay
 * alone when the map has none - however long no pong comes. */
static void test_route_no_relay_direct_at_once(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage eps[2] = { v4("10.0.0.2", 41641), v4("203.0.113.5", 60000) };
	struct disco_route r;
	uint64_t t = 1000;

	disco_peer_init(&p);
	disco_peer_route(&p, t, false, &r);
	assert_false(r.direct);
	assert_false(r.relay); /* nothing known: nowhere */
	disco_peer_set_endpoints(&p, eps, 2, t);
	/* The first packet, before any ping went out. */
	disco_peer_route(&p, t, false, &r);
	assert_true(r.direct);
	assert_false(r.relay);
	assert_false(r.measured);
	assert_memory_equal(&r.addr, &eps[0], sizeof(struct sockaddr_in));
	/* Probed for a minute, never answered: still the endpoint. */
	for (; t < 61000; t += 250) {
		answer(&p, t, NULL, 0, 0);
		disco_peer_route(&p, t, false, &r);
		assert_true(r.direct);
		assert_false(r.relay);
		assert_memory_equal(&r.addr, &eps[0], sizeof(struct sockaddr_in));
	}
}

/* A relay and no pong yet: the first netmap endpoint and the relay both;
 * the relay alone once DISCO_OPTIMISTIC_MS of probing got no pong; new
 * endpoints make it optimistic again. */
static void test_route_relay_optimistic(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage eps[2] = { v4("10.0.0.2", 41641), v4("203.0.113.5", 60000) };
	struct sockaddr_storage moved = v4("203.0.113.9", 60000);
	struct disco_route r;
	uint64_t t0 = 1000, t;

	disco_peer_init(&p);
	disco_peer_route(&p, t0, true, &r);
	assert_false(r.direct);
	assert_true(r.relay); /* no endpoint known: the relay */
	disco_peer_set_endpoints(&p, eps, 2, t0);
	disco_peer_route(&p, t0, true, &r);
	assert_true(r.direct);
	assert_true(r.relay);
	assert_false(r.measured);
	assert_memory_equal(&r.addr, &eps[0], sizeof(struct sockaddr_in));
	for (t = t0; t < t0 + DISCO_OPTIMISTIC_MS; t += 250) {
		answer(&p, t, NULL, 0, 0);
		disco_peer_route(&p, t, true, &r);
		assert_true(r.direct && r.relay);
	}
	disco_peer_route(&p, t0 + DISCO_OPTIMISTIC_MS, true, &r);
	assert_false(r.direct);
	assert_true(r.relay);
	/* The netmap names a new endpoint: tried optimistically again. */
	disco_peer_set_endpoints(&p, &moved, 1, t);
	disco_peer_route(&p, t, true, &r);
	assert_true(r.direct && r.relay);
	assert_memory_equal(&r.addr, &moved, sizeof(struct sockaddr_in));
}

/* A pong: the measured endpoint alone (not the first, not the relay). */
static void test_route_pong_wins(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage eps[2] = { v4("10.0.0.2", 41641), v4("203.0.113.5", 60000) };
	struct disco_route r;
	uint64_t t = 1000;

	disco_peer_init(&p);
	disco_peer_set_endpoints(&p, eps, 2, t);
	answer(&p, t, &eps[1], 1, 9);
	for (int relay = 0; relay < 2; relay++) {
		disco_peer_route(&p, t + 9, relay, &r);
		assert_true(r.direct);
		assert_true(r.measured);
		assert_false(r.relay);
		assert_int_equal(r.latency_ms, 9);
		assert_memory_equal(&r.addr, &eps[1], sizeof(struct sockaddr_in));
	}
}

/* A measured path that stops answering: the relay alone within
 * DISCO_TRUST_MS (the fallback budget); with no relay, the endpoint that
 * answered last. Its pongs back: direct again. */
static void test_route_break_falls_back(void **state)
{
	struct disco_peer p;
	struct sockaddr_storage eps[2] = { v4("10.0.0.2", 41641), v4("203.0.113.5", 60000) };
	struct disco_route r;
	uint64_t t = 1000, last_pong;

	disco_peer_init(&p);
	disco_peer_set_endpoints(&p, eps, 2, t);
	answer(&p, t, &eps[1], 1, 5);
	last_pong = t + 5;
	for (t += 100;; t += 100) {
		answer(&p, t, NULL, 0, 0);
		disco_peer_route(&p, t, true, &r);
		if (!r.direct)
			break;
		assert_false(r.relay);
	}
	assert_true(r.relay);
	assert_true(t - last_pong <= DISCO_TRUST_MS + 100);
	disco_peer_route(&p, t, false, &r);
	assert_true(r.direct);
	assert_false(r.relay);
	assert_false(r.measured);
	assert_memory_equal(&r.addr, &eps[1], sizeof(struct sockaddr_in));
	for (int i = 0; i < 100; i++, t += 100) {
		answer(&p, t, &eps[1], 1, 6);
		disco_peer_route(&p, t + 6, true, &r);
		if (r.measured)
			break;
	}
	assert_true(r.direct && r.measured && !r.relay);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seal_open),
		cmocka_unit_test(test_seal_open_shared),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_path_upgrade_fallback),
		cmocka_unit_test(test_path_pong_checks),
		cmocka_unit_test(test_path_switch_margin),
		cmocka_unit_test(test_path_call_me_maybe_and_ping),
		cmocka_unit_test(test_path_kept_across_update),
		cmocka_unit_test(test_path_crossing_pings),
		cmocka_unit_test(test_route_no_relay_direct_at_once),
		cmocka_unit_test(test_route_relay_optimistic),
		cmocka_unit_test(test_route_pong_wins),
		cmocka_unit_test(test_route_break_falls_back),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
