/* Noise_IKpsk2 between two in-memory peers: handshakes with and without
 * PSK, transport both ways, key confirmation, rotation, rekey by time and
 * by messages, rejected replays/floods/corruptions, the cookie path, and
 * X25519 (RFC 7748). */
#include <endian.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "wg/aead.h"
#include "wg/cookie.h"
#include "wg/noise.h"

struct node {
	struct noise_local *local;
	struct cookie_checker checker;
	uint8_t priv[32], pub[32];
	/* its one peer */
	struct noise_remote *remote;
	struct cookie_maker maker;
	uint8_t peer_pub[32];
	struct timespec clock; /* wall clock for TAI64N */
};

struct pair {
	struct node a, b; /* a initiates */
	uint64_t now;
};

static const uint8_t src_a[6] = { 192, 0, 2, 1, 0xca, 0xfe }; /* 192.0.2.1:51966 */

static struct noise_remote *remote_get(void *arg, const uint8_t pub[32])
{
	struct node *n = arg;

	return memcmp(pub, n->peer_pub, 32) == 0 ? n->remote : NULL;
}

static void node_init(struct node *n)
{
	struct noise_upcalls up = { .remote_get = remote_get, .arg = n };

	n->local = noise_local_new(&up, NULL);
	assert_non_null(n->local);
	noise_keygen(n->priv);
	assert_true(noise_local_set_private(n->local, n->priv));
	assert_true(noise_local_public(n->local, n->pub));
	cookie_checker_init(&n->checker);
	cookie_checker_set_public(&n->checker, n->pub);
	n->clock.tv_sec = 1700000000;
}

static void node_connect(struct node *n, const uint8_t peer_pub[32])
{
	memcpy(n->peer_pub, peer_pub, 32);
	n->remote = noise_remote_new(n->local, peer_pub, n);
	assert_non_null(n->remote);
	cookie_maker_init(&n->maker, peer_pub);
}

static void node_free(struct node *n)
{
	noise_remote_free(n->remote);
	cookie_maker_destroy(&n->maker);
	cookie_checker_destroy(&n->checker);
	noise_local_free(n->local);
	sodium_memzero(n->priv, sizeof(n->priv));
}

static int setup(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	assert_int_equal(aead_init(AEAD_IMPL_AUTO), 0);
	node_init(&p->a);
	node_init(&p->b);
	node_connect(&p->a, p->b.pub);
	node_connect(&p->b, p->a.pub);
	p->now = 1000000;
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	struct pair *p = *state;

	node_free(&p->a);
	node_free(&p->b);
	free(p);
	aead_thread_cleanup();
	return 0;
}

static void make_initiation(struct pair *p, struct node *from, struct message_handshake_initiation *m)
{
	uint8_t ts[12];

	from->clock.tv_sec++;
	noise_tai64n(ts, &from->clock);
	assert_true(noise_handshake_create_initiation(from->remote, m, ts));
	cookie_maker_add_macs(&from->maker, m, sizeof(*m), p->now);
}

/* One full handshake from -> to; returns true if it completed. */
static bool handshake(struct pair *p, struct node *from, struct node *to)
{
	struct message_handshake_initiation init;
	struct message_handshake_response resp;

	make_initiation(p, from, &init);
	if (cookie_checker_check(&to->checker, &init, sizeof(init), false, src_a, sizeof(src_a), p->now) !=
	    COOKIE_ACCEPT)
		return false;
	if (noise_handshake_consume_initiation(to->local, &init, p->now) != to->remote)
		return false;
	assert_true(noise_handshake_create_response(to->remote, &resp));
	cookie_maker_add_macs(&to->maker, &resp, sizeof(resp), p->now);
	assert_true(noise_handshake_begin_session(to->remote, p->now));
	if (cookie_checker_check(&from->checker, &resp, sizeof(resp), false, src_a, sizeof(src_a), p->now) !=
	    COOKIE_ACCEPT)
		return false;
	if (noise_handshake_consume_response(from->local, &resp) != from->remote)
		return false;
	return noise_handshake_begin_session(from->remote, p->now);
}

/* Encrypts msg with from's current keypair; returns the packet length (0: no key). */
static size_t seal(struct pair *p, struct node *from, uint8_t *pkt, const char *msg)
{
	struct noise_keypair *kp = noise_keypair_current(from->remote);
	size_t len = strlen(msg), padded = message_data_padded_len(len, 1420), out = 0;

	if (!kp)
		return 0;
	memset(pkt + MESSAGE_DATA_HEADER_LEN, 0, padded);
	memcpy(pkt + MESSAGE_DATA_HEADER_LEN, msg, len);
	if (!noise_keypair_encrypt(kp, pkt, padded, p->now, &out))
		out = 0;
	noise_keypair_put(kp);
	return out;
}

/* The receive path: find the keypair by receiver index, decrypt,
 * confirm. */
static enum noise_rx open_pkt(struct pair *p, struct node *to, uint8_t *pkt, size_t len, const char *want)
{
	const struct message_data *hdr = (const struct message_data *)pkt;
	struct noise_keypair *kp;
	enum noise_rx rx;
	size_t plen = 0;

	if (message_classify(pkt, len) != MESSAGE_DATA)
		return NOISE_RX_INVALID;
	kp = noise_keypair_lookup(noise_local_index(to->local), le32toh(hdr->key_idx));
	if (!kp)
		return NOISE_RX_INVALID;
	assert_ptr_equal(noise_keypair_remote(kp), to->remote);
	rx = noise_keypair_decrypt(kp, pkt, len, p->now, &plen);
	if (rx == NOISE_RX_OK) {
		noise_keypair_received_with(kp);
		if (want) {
			assert_true(plen >= strlen(want) && plen % 16 == 0);
			assert_memory_equal(pkt + MESSAGE_DATA_HEADER_LEN, want, strlen(want));
		}
	}
	noise_keypair_put(kp);
	return rx;
}

static void test_x25519_rfc7748(void **state)
{
	static const uint8_t alice_priv[32] = {
		0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45,
		0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a,
	};
	static const uint8_t alice_pub[32] = {
		0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7, 0x5a,
		0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a,
	};
	static const uint8_t bob_priv[32] = {
		0x5d, 0xab, 0x08, 0x7e, 0x62, 0x4a, 0x8a, 0x4b, 0x79, 0xe1, 0x7f, 0x8b, 0x83, 0x80, 0x0e, 0xe6,
		0x6f, 0x3b, 0xb1, 0x29, 0x26, 0x18, 0xb6, 0xfd, 0x1c, 0x2f, 0x8b, 0x27, 0xff, 0x88, 0xe0, 0xeb,
	};
	static const uint8_t bob_pub[32] = {
		0xde, 0x9e, 0xdb, 0x7d, 0x7b, 0x7d, 0xc1, 0xb4, 0xd3, 0x5b, 0x61, 0xc2, 0xec, 0xe4, 0x35, 0x37,
		0x3f, 0x83, 0x43, 0xc8, 0x5b, 0x78, 0x67, 0x4d, 0xad, 0xfc, 0x7e, 0x14, 0x6f, 0x88, 0x2b, 0x4f,
	};
	static const uint8_t shared[32] = {
		0x4a, 0x5d, 0x9d, 0x5b, 0xa4, 0xce, 0x2d, 0xe1, 0x72, 0x8e, 0x3b, 0xf4, 0x80, 0x35, 0x0f, 0x25,
		0xe0, 0x7e, 0x21, 0xc9, 0x47, 0xd1, 0x9e, 0x33, 0x76, 0xf0, 0x9b, 0x3c, 0x1e, 0x16, 0x17, 0x42,
	};
	uint8_t out[32], zero[32] = { 0 };

	assert_true(noise_public_from_private(out, alice_priv));
	assert_memory_equal(out, alice_pub, 32);
	assert_true(noise_public_from_private(out, bob_priv));
	assert_memory_equal(out, bob_pub, 32);
	assert_true(noise_dh(out, alice_priv, bob_pub));
	assert_memory_equal(out, shared, 32);
	assert_true(noise_dh(out, bob_priv, alice_pub));
	assert_memory_equal(out, shared, 32);
	/* low-order points give an all-zero secret: rejected */
	assert_false(noise_dh(out, alice_priv, zero));
	assert_memory_equal(out, zero, 32);
	assert_false(noise_public_from_private(out, zero));
}

static void test_tai64n(void **state)
{
	struct timespec ts = { .tv_sec = 0x11223344, .tv_nsec = 999999999 };
	uint8_t out[12];

	noise_tai64n(out, &ts);
	assert_memory_equal(out, "\x40\x00\x00\x00\x11\x22\x33\x4e", 8); /* 2^62 + 10 + sec, big-endian */
	/* nanoseconds rounded down to a multiple of 2^24 */
	assert_memory_equal(out + 8, "\x3b\x00\x00\x00", 4);
}

static void test_handshake_and_transport(void **state)
{
	struct pair *p = *state;
	uint8_t pkt[256];
	size_t n;

	assert_true(handshake(p, &p->a, &p->b));
	/* the responder may not send before the initiator's first packet */
	assert_int_equal(seal(p, &p->b, pkt, "too early"), 0);
	n = seal(p, &p->a, pkt, "hello from a");
	assert_int_equal(n, 16 + 16 + 16);
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "hello from a"), NOISE_RX_OK);
	/* now confirmed */
	n = seal(p, &p->b, pkt, "hello back from b, a longer message");
	assert_int_equal(n, 16 + 48 + 16);
	assert_int_equal(open_pkt(p, &p->a, pkt, n, "hello back from b, a longer message"), NOISE_RX_OK);
	/* keepalive: empty payload */
	n = seal(p, &p->a, pkt, "");
	assert_int_equal(n, MESSAGE_DATA_MIN_LEN);
	assert_int_equal(open_pkt(p, &p->b, pkt, n, ""), NOISE_RX_OK);
}

static void test_psk(void **state)
{
	struct pair *p = *state;
	uint8_t psk[32], other[32], got[32], pkt[128];
	size_t n;

	randombytes_buf(psk, sizeof(psk));
	assert_false(noise_remote_psk(p->a.remote, got));
	noise_remote_set_psk(p->a.remote, psk);
	noise_remote_set_psk(p->b.remote, psk);
	assert_true(noise_remote_psk(p->a.remote, got));
	assert_memory_equal(got, psk, 32);
	assert_true(handshake(p, &p->a, &p->b));
	n = seal(p, &p->a, pkt, "psk ok");
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "psk ok"), NOISE_RX_OK);

	/* mismatched PSK: the response does not decrypt */
	p->now += 1000;
	memcpy(other, psk, 32);
	other[0] ^= 1;
	noise_remote_set_psk(p->b.remote, other);
	assert_false(handshake(p, &p->a, &p->b));
	/* one side without */
	noise_remote_set_psk(p->b.remote, NULL);
	p->now += 1000;
	assert_false(handshake(p, &p->a, &p->b));
	noise_remote_set_psk(p->a.remote, NULL);
	p->now += 1000;
	assert_true(handshake(p, &p->a, &p->b));
}

static void test_data_rejects(void **state)
{
	struct pair *p = *state;
	uint8_t pkt[128], copy[128];
	size_t n;

	assert_true(handshake(p, &p->a, &p->b));
	n = seal(p, &p->a, pkt, "once");
	memcpy(copy, pkt, n);
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "once"), NOISE_RX_OK);
	memcpy(pkt, copy, n);
	assert_int_equal(open_pkt(p, &p->b, pkt, n, NULL), NOISE_RX_REPLAY);
	/* corruption anywhere past the header fails authentication */
	for (size_t i = MESSAGE_DATA_HEADER_LEN; i < n; i++) {
		memcpy(pkt, copy, n);
		pkt[i] ^= 0x40;
		assert_int_equal(open_pkt(p, &p->b, pkt, n, NULL), NOISE_RX_AUTH);
	}
	/* counter changed: wrong nonce */
	memcpy(pkt, copy, n);
	pkt[8] ^= 1;
	assert_int_equal(open_pkt(p, &p->b, pkt, n, NULL), NOISE_RX_AUTH);
	/* unknown receiver index, truncated */
	memcpy(pkt, copy, n);
	pkt[4] ^= 1;
	assert_int_equal(open_pkt(p, &p->b, pkt, n, NULL), NOISE_RX_INVALID);
	memcpy(pkt, copy, n);
	assert_int_equal(open_pkt(p, &p->b, pkt, 31, NULL), NOISE_RX_INVALID);
	/* reordered delivery within the window is fine */
	{
		uint8_t p1[128], p2[128];
		size_t n1 = seal(p, &p->a, p1, "first"), n2 = seal(p, &p->a, p2, "second");

		assert_int_equal(open_pkt(p, &p->b, p2, n2, "second"), NOISE_RX_OK);
		assert_int_equal(open_pkt(p, &p->b, p1, n1, "first"), NOISE_RX_OK);
	}
}

/* Batches (encrypt_many/decrypt_many) are the single calls in a row: what
 * one seals the other opens, counters consecutive; in one batch a
 * duplicate is a replay, a corrupted packet fails alone, a wrong index or
 * a short packet is invalid, and a keepalive opens to 0 bytes. */
static void test_data_batches(void **state)
{
	enum { N = 70 }; /* more than one AEAD run */
	struct pair *p = *state;
	static uint8_t bufs[N][1600], copies[N][1600];
	uint8_t *pkt[N], ok[N], rx[N];
	uint32_t plen[N], len[N], got[N];
	struct noise_keypair *kp, *rkp;
	size_t n1, pl;
	uint64_t c0;

	assert_true(handshake(p, &p->a, &p->b));
	n1 = seal(p, &p->a, bufs[0], "confirm");
	assert_int_equal(open_pkt(p, &p->b, bufs[0], n1, "confirm"), NOISE_RX_OK);
	kp = noise_keypair_current(p->a.remote);
	assert_non_null(kp);
	for (unsigned i = 0; i < N; i++) {
		pkt[i] = bufs[i];
		plen[i] = (uint32_t)(i == 5 ? 0 : message_data_padded_len(17 * i % 1420 + 1, 1420));
		for (unsigned b = 0; b < plen[i]; b++)
			bufs[i][MESSAGE_DATA_HEADER_LEN + b] = (uint8_t)(i + b);
	}
	noise_keypair_encrypt_many(kp, pkt, plen, N, p->now, ok, len);
	c0 = le64toh(((struct message_data *)bufs[0])->counter);
	for (unsigned i = 0; i < N; i++) {
		assert_true(ok[i]);
		assert_int_equal(len[i], MESSAGE_DATA_MIN_LEN + plen[i]);
		assert_int_equal(le64toh(((struct message_data *)bufs[i])->counter), c0 + i);
		memcpy(copies[i], bufs[i], len[i]);
	}
	noise_keypair_put(kp);
	/* the first ten one by one */
	for (unsigned i = 0; i < 10; i++) {
		assert_int_equal(open_pkt(p, &p->b, bufs[i], len[i], NULL), NOISE_RX_OK);
		for (unsigned b = 0; b < plen[i]; b++)
			assert_int_equal(bufs[i][MESSAGE_DATA_HEADER_LEN + b], (uint8_t)(i + b));
	}
	/* all again as one batch (the first ten are replays now; they were
	 * opened in place), with faults planted */
	for (unsigned i = 0; i < 10; i++)
		memcpy(bufs[i], copies[i], len[i]);
	rkp = noise_keypair_lookup(noise_local_index(p->b.local), le32toh(((struct message_data *)bufs[0])->key_idx));
	assert_non_null(rkp);
	memcpy(bufs[0], copies[3], len[3]); /* a replay of one opened above */
	len[0] = len[3];
	memcpy(bufs[1], copies[40], len[40]); /* the same as a later one: the later one is the replay */
	len[1] = len[40];
	bufs[20][len[20] - 1] ^= 1; /* a corrupted tag */
	bufs[21][4] ^= 1; /* another receiver index */
	len[22] = 31; /* short */
	noise_keypair_decrypt_many(rkp, pkt, len, N, p->now, rx, got);
	for (unsigned i = 0; i < N; i++) {
		enum noise_rx want = NOISE_RX_OK;

		if (i == 0 || i == 40 || (i >= 2 && i < 10))
			want = NOISE_RX_REPLAY;
		else if (i == 20)
			want = NOISE_RX_AUTH;
		else if (i == 21 || i == 22)
			want = NOISE_RX_INVALID;
		assert_int_equal(rx[i], want);
		if (want != NOISE_RX_OK)
			continue;
		pl = i == 1 ? plen[40] : plen[i];
		assert_int_equal(got[i], pl);
		for (unsigned b = 0; b < pl; b++)
			assert_int_equal(bufs[i][MESSAGE_DATA_HEADER_LEN + b], (uint8_t)((i == 1 ? 40 : i) + b));
	}
	noise_keypair_put(rkp);
	/* a keypair that may no longer send fails every packet of a batch,
	 * past the first AEAD run too */
	kp = noise_keypair_current(p->a.remote);
	assert_non_null(kp);
	noise_keypairs_expire(p->a.remote);
	memset(ok, 1, sizeof(ok));
	noise_keypair_encrypt_many(kp, pkt, plen, N, p->now, ok, len);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(ok[i], 0);
	noise_keypair_put(kp);
}

static void test_initiation_replay_and_flood(void **state)
{
	struct pair *p = *state;
	struct message_handshake_initiation init, old;
	uint8_t ts[12];

	make_initiation(p, &p->a, &old);
	make_initiation(p, &p->a, &init);
	assert_ptr_equal(noise_handshake_consume_initiation(p->b.local, &init, p->now), p->b.remote);
	/* the same initiation again: timestamp not newer */
	p->now += 1000;
	assert_null(noise_handshake_consume_initiation(p->b.local, &init, p->now));
	/* an older one (captured earlier, sent later) */
	assert_null(noise_handshake_consume_initiation(p->b.local, &old, p->now));
	/* newer timestamp but within 1/INITIATIONS_PER_SECOND of the last accepted */
	make_initiation(p, &p->a, &init);
	assert_ptr_equal(noise_handshake_consume_initiation(p->b.local, &init, p->now), p->b.remote);
	make_initiation(p, &p->a, &init);
	assert_null(noise_handshake_consume_initiation(p->b.local, &init, p->now + 1000 / INITIATIONS_PER_SECOND - 1));
	assert_ptr_equal(noise_handshake_consume_initiation(p->b.local, &init, p->now + 1000 / INITIATIONS_PER_SECOND),
			 p->b.remote);
	/* timestamps within the same 2^24 ns slot compare equal: replay */
	p->now += 1000;
	p->a.clock.tv_nsec = 1;
	noise_tai64n(ts, &p->a.clock);
	assert_true(noise_handshake_create_initiation(p->a.remote, &init, ts));
	assert_null(noise_handshake_consume_initiation(p->b.local, &init, p->now));
}

static void test_corrupted_handshakes(void **state)
{
	struct pair *p = *state;
	struct message_handshake_initiation init, bad;
	struct message_handshake_response resp, badr;

	make_initiation(p, &p->a, &init);
	/* every byte of the Noise payload matters (MACs are cookie.c's) */
	for (size_t i = 0; i < offsetof(struct message_handshake_initiation, macs); i++) {
		memcpy(&bad, &init, sizeof(bad));
		((uint8_t *)&bad)[i] ^= 0x04;
		if (i >= 4 && i < 8)
			continue; /* sender index is not authenticated by Noise */
		assert_null(noise_handshake_consume_initiation(p->b.local, &bad, p->now));
	}
	assert_ptr_equal(noise_handshake_consume_initiation(p->b.local, &init, p->now), p->b.remote);
	assert_true(noise_handshake_create_response(p->b.remote, &resp));
	/* response consumed only once, only uncorrupted */
	for (size_t i = 0; i < offsetof(struct message_handshake_response, macs); i++) {
		memcpy(&badr, &resp, sizeof(badr));
		((uint8_t *)&badr)[i] ^= 0x04;
		if (i >= 4 && i < 8)
			continue;
		assert_null(noise_handshake_consume_response(p->a.local, &badr));
	}
	assert_ptr_equal(noise_handshake_consume_response(p->a.local, &resp), p->a.remote);
	assert_null(noise_handshake_consume_response(p->a.local, &resp));
	/* begin_session only from the right states */
	assert_true(noise_handshake_begin_session(p->a.remote, p->now));
	assert_false(noise_handshake_begin_session(p->a.remote, p->now));
	/* a response for an initiation we never sent: no index */
	assert_null(noise_handshake_consume_response(p->b.local, &resp));
	/* create_response without a consumed initiation */
	assert_false(noise_handshake_create_response(p->a.remote, &resp));
}

/* An initiation from a key the responder does not know, or for another
 * identity, goes nowhere. */
static void test_unknown_peer(void **state)
{
	struct pair *p = *state;
	struct node c;
	struct message_handshake_initiation init;

	node_init(&c);
	node_connect(&c, p->b.pub); /* c knows b, b does not know c */
	make_initiation(p, &c, &init);
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), false, src_a, 6, p->now),
			 COOKIE_ACCEPT);
	assert_null(noise_handshake_consume_initiation(p->b.local, &init, p->now));
	/* MAC1 is keyed to b's public key: a's checker drops it cheaply */
	assert_int_equal(cookie_checker_check(&p->a.checker, &init, sizeof(init), false, src_a, 6, p->now),
			 COOKIE_DROP);
	node_free(&c);
}

static void test_wrong_mac1(void **state)
{
	struct pair *p = *state;
	struct message_handshake_initiation init;
	struct message_handshake_response resp;

	make_initiation(p, &p->a, &init);
	for (size_t i = 0; i < sizeof(init) - 16; i++) { /* any byte up to MAC2 */
		((uint8_t *)&init)[i] ^= 0x80;
		assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), false, src_a, 6, p->now),
				 COOKIE_DROP);
		assert_int_equal(cookie_checker_validate(&p->b.checker, &init, sizeof(init), true, src_a, 6, p->now),
				 COOKIE_MAC_INVALID);
		((uint8_t *)&init)[i] ^= 0x80;
	}
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), false, src_a, 6, p->now),
			 COOKIE_ACCEPT);
	/* MAC2 is not checked when not under load */
	init.macs.mac2[0] ^= 1;
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), false, src_a, 6, p->now),
			 COOKIE_ACCEPT);
	/* wrong lengths */
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init) - 1, false, src_a, 6, p->now),
			 COOKIE_DROP);
	memset(&resp, 0, sizeof(resp));
	assert_int_equal(cookie_checker_check(&p->b.checker, &resp, sizeof(resp), false, src_a, 6, p->now),
			 COOKIE_DROP);
	/* no identity: nothing validates */
	cookie_checker_set_public(&p->b.checker, NULL);
	init.macs.mac2[0] ^= 1;
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), false, src_a, 6, p->now),
			 COOKIE_DROP);
}

/* Responder under load answers with a cookie reply; the initiator retries
 * with MAC2 and gets through; the cookie is bound to the source address. */
static void test_cookie_under_load(void **state)
{
	struct pair *p = *state;
	struct message_handshake_initiation init;
	struct message_handshake_response resp;
	struct message_handshake_cookie reply;
	struct cookie_load load = { 0 };
	const uint8_t src_other[6] = { 192, 0, 2, 1, 0xca, 0xff };
	uint64_t t0 = p->now;
	bool under_load;

	under_load = cookie_under_load(&load, 4096 / 8, 4096, p->now);
	assert_true(under_load);
	make_initiation(p, &p->a, &init);
	assert_false(cookie_msg_has_mac2(&init, sizeof(init))); /* no cookie yet */
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), under_load, src_a, 6, p->now),
			 COOKIE_SEND_REPLY);
	assert_true(cookie_checker_create_reply(&p->b.checker, &reply, &init, sizeof(init),
						le32toh(init.sender_index), src_a, 6, p->now));
	assert_int_equal(message_classify((const uint8_t *)&reply, sizeof(reply)), MESSAGE_HANDSHAKE_COOKIE);

	/* the initiator finds its peer by the receiver index and takes the cookie */
	assert_ptr_equal(noise_index_lookup_remote(noise_local_index(p->a.local), le32toh(reply.receiver_index)),
			 p->a.remote);
	{
		struct message_handshake_cookie bad = reply;

		bad.encrypted_cookie[0] ^= 1;
		assert_false(cookie_maker_consume_reply(&p->a.maker, &bad, p->now));
	}
	assert_true(cookie_maker_consume_reply(&p->a.maker, &reply, p->now));
	assert_false(cookie_maker_consume_reply(&p->a.maker, &reply, p->now)); /* answers nothing now */

	p->now += 100;
	make_initiation(p, &p->a, &init);
	assert_true(cookie_msg_has_mac2(&init, sizeof(init)));
	assert_false(cookie_msg_has_mac2(&init, sizeof(init) - 1));
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), true, src_a, 6, p->now),
			 COOKIE_ACCEPT);
	/* a MAC2 that is wrong in one bit is no cookie */
	init.macs.mac2[15] ^= 0x80;
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), true, src_a, 6, p->now),
			 COOKIE_SEND_REPLY);
	init.macs.mac2[15] ^= 0x80;
	/* from another address/port the cookie does not fit */
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), true, src_other, 6, p->now),
			 COOKIE_SEND_REPLY);
	assert_ptr_equal(noise_handshake_consume_initiation(p->b.local, &init, p->now), p->b.remote);
	assert_true(noise_handshake_create_response(p->b.remote, &resp));
	cookie_maker_add_macs(&p->b.maker, &resp, sizeof(resp), p->now);
	assert_true(noise_handshake_begin_session(p->b.remote, p->now));
	assert_ptr_equal(noise_handshake_consume_response(p->a.local, &resp), p->a.remote);
	assert_true(noise_handshake_begin_session(p->a.remote, p->now));

	/* the cookie goes stale after COOKIE_SECRET_MAX_AGE - LATENCY, and the
	 * responder's secret rotates after COOKIE_SECRET_MAX_AGE */
	p->now += COOKIE_SECRET_MAX_AGE_MS;
	make_initiation(p, &p->a, &init);
	assert_true(sodium_is_zero(init.macs.mac2, 16));
	assert_int_equal(cookie_checker_check(&p->b.checker, &init, sizeof(init), true, src_a, 6, p->now),
			 COOKIE_SEND_REPLY);

	/* load hysteresis: one second after the queue drains */
	assert_true(cookie_under_load(&load, 0, 4096, t0 + 999));
	assert_false(cookie_under_load(&load, 0, 4096, t0 + 1000));
	assert_false(cookie_under_load(&load, 4096 / 8 - 1, 4096, t0 + 1000));
}

/* Rekey after REKEY_AFTER_TIME: the initiator wants a new handshake; the
 * previous keypair still opens packets in flight; after REJECT_AFTER_TIME
 * a keypair neither sends nor receives. */
static void test_rekey_after_time(void **state)
{
	struct pair *p = *state;
	struct noise_keypair *kp, *old;
	uint8_t pkt[128], inflight[128];
	size_t n, nin;

	assert_true(handshake(p, &p->a, &p->b));
	n = seal(p, &p->a, pkt, "confirm");
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "confirm"), NOISE_RX_OK);
	old = noise_keypair_current(p->a.remote);
	assert_false(noise_keypair_should_rekey_send(old, p->now));
	assert_true(noise_keypair_is_initiator(old));

	p->now += REKEY_AFTER_TIME_MS;
	assert_true(noise_keypair_should_rekey_send(old, p->now));
	kp = noise_keypair_current(p->b.remote);
	assert_false(noise_keypair_should_rekey_send(kp, p->now)); /* responder does not rekey by time */
	noise_keypair_put(kp);
	assert_false(noise_keypair_should_rekey_recv(old, p->now));
	assert_true(noise_keypair_should_rekey_recv(old, p->now + REJECT_AFTER_TIME_MS - REKEY_AFTER_TIME_MS -
							      KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS));

	nin = seal(p, &p->b, inflight, "in flight on the old keys");
	assert_true(handshake(p, &p->a, &p->b));
	kp = noise_keypair_current(p->a.remote);
	assert_ptr_not_equal(kp, old);
	assert_int_not_equal(noise_keypair_local_index(kp), noise_keypair_local_index(old));
	noise_keypair_put(kp);
	/* b's current is still the old one until a confirms the new */
	assert_int_equal(open_pkt(p, &p->a, inflight, nin, "in flight on the old keys"), NOISE_RX_OK);
	n = seal(p, &p->a, pkt, "new keys");
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "new keys"), NOISE_RX_OK);
	n = seal(p, &p->b, pkt, "b on new keys");
	assert_int_equal(open_pkt(p, &p->a, pkt, n, "b on new keys"), NOISE_RX_OK);

	/* a third handshake pushes the first keypair out of the index */
	p->now += 1000;
	assert_true(handshake(p, &p->a, &p->b));
	assert_null(noise_keypair_lookup(noise_local_index(p->a.local), noise_keypair_local_index(old)));
	noise_keypair_put(old);

	/* reject after time */
	n = seal(p, &p->a, pkt, "late");
	assert_true(n > 0);
	p->now += REJECT_AFTER_TIME_MS;
	assert_int_equal(open_pkt(p, &p->b, pkt, n, NULL), NOISE_RX_INVALID);
	assert_int_equal(seal(p, &p->a, pkt, "too late"), 0);
}

static void test_rekey_after_messages(void **state)
{
	struct pair *p = *state;
	struct noise_keypair *kp;
	uint8_t pkt[128];
	size_t n;

	assert_true(handshake(p, &p->a, &p->b));
	kp = noise_keypair_current(p->a.remote);
	noise_keypair_set_send_counter(kp, REKEY_AFTER_MESSAGES);
	assert_false(noise_keypair_should_rekey_send(kp, p->now));
	n = seal(p, &p->a, pkt, "at 2^60");
	assert_true(noise_keypair_should_rekey_send(kp, p->now));
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "at 2^60"), NOISE_RX_OK);
	/* the last usable counter, then nothing */
	noise_keypair_set_send_counter(kp, REJECT_AFTER_MESSAGES - 1);
	n = seal(p, &p->a, pkt, "last");
	assert_true(n > 0);
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "last"), NOISE_RX_OK);
	assert_int_equal(seal(p, &p->a, pkt, "over"), 0);
	assert_int_equal(noise_keypair_send_counter(kp), REJECT_AFTER_MESSAGES);
	noise_keypair_put(kp);
	/* a new handshake brings sending back */
	p->now += 1000;
	assert_true(handshake(p, &p->a, &p->b));
	assert_true(seal(p, &p->a, pkt, "fresh") > 0);
}

/* Both sides initiate at once: both sessions complete, traffic flows. */
static void test_simultaneous(void **state)
{
	struct pair *p = *state;
	uint8_t pkt[128];
	size_t n;

	assert_true(handshake(p, &p->a, &p->b));
	p->now += 1000;
	assert_true(handshake(p, &p->b, &p->a));
	n = seal(p, &p->b, pkt, "b initiated");
	assert_int_equal(open_pkt(p, &p->a, pkt, n, "b initiated"), NOISE_RX_OK);
	n = seal(p, &p->a, pkt, "a answers");
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "a answers"), NOISE_RX_OK);
}

static void test_clear_and_identity_change(void **state)
{
	struct pair *p = *state;
	struct noise_keypair *kp;
	uint8_t pkt[128], priv[32];
	uint32_t idx;

	assert_true(handshake(p, &p->a, &p->b));
	kp = noise_keypair_current(p->a.remote);
	idx = noise_keypair_local_index(kp);
	noise_keypair_put(kp);
	noise_keypairs_clear(p->a.remote);
	assert_null(noise_keypair_current(p->a.remote));
	assert_null(noise_keypair_lookup(noise_local_index(p->a.local), idx));

	/* a new private key: old sessions stop sending, handshakes need the new key */
	p->now += 1000;
	assert_true(handshake(p, &p->a, &p->b));
	noise_keygen(priv);
	assert_true(noise_local_set_private(p->a.local, priv));
	assert_int_equal(seal(p, &p->a, pkt, "x"), 0);
	p->now += 1000;
	assert_false(handshake(p, &p->a, &p->b)); /* b still has a's old public key */
	/* no identity at all */
	assert_true(noise_local_set_private(p->a.local, NULL));
	{
		struct message_handshake_initiation init;
		uint8_t ts[12] = { 0 };

		assert_false(noise_handshake_create_initiation(p->a.remote, &init, ts));
	}
	assert_true(noise_local_set_private(p->a.local, p->a.priv));
	p->now += 1000;
	assert_true(handshake(p, &p->a, &p->b));
}

/* Two identities sharing one index table: the receiver index alone finds
 * the keypair and through it the identity. */
static void test_shared_index(void **state)
{
	struct noise_index *idx = noise_index_new();
	struct pair *p;
	struct noise_keypair *kp;
	uint8_t pkt[128];
	size_t n;

	assert_non_null(idx);
	p = calloc(1, sizeof(*p));
	assert_non_null(p);
	for (int i = 0; i < 2; i++) {
		struct node *nd = i ? &p->b : &p->a;
		struct noise_upcalls up = { .remote_get = remote_get, .arg = nd };

		nd->local = noise_local_new(&up, idx);
		assert_non_null(nd->local);
		noise_keygen(nd->priv);
		assert_true(noise_local_set_private(nd->local, nd->priv));
		assert_true(noise_local_public(nd->local, nd->pub));
		cookie_checker_init(&nd->checker);
		cookie_checker_set_public(&nd->checker, nd->pub);
	}
	node_connect(&p->a, p->b.pub);
	node_connect(&p->b, p->a.pub);
	p->now = 5000;
	assert_true(handshake(p, &p->a, &p->b));
	n = seal(p, &p->a, pkt, "shared");
	kp = noise_keypair_lookup(idx, le32toh(((struct message_data *)pkt)->key_idx));
	assert_non_null(kp);
	assert_ptr_equal(noise_remote_local(noise_keypair_remote(kp)), p->b.local);
	noise_keypair_put(kp);
	assert_int_equal(open_pkt(p, &p->b, pkt, n, "shared"), NOISE_RX_OK);
	node_free(&p->a);
	node_free(&p->b);
	free(p);
	noise_index_free(idx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_x25519_rfc7748),
		cmocka_unit_test(test_tai64n),
		cmocka_unit_test_setup_teardown(test_handshake_and_transport, setup, teardown),
		cmocka_unit_test_setup_teardown(test_psk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_rejects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_initiation_replay_and_flood, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupted_handshakes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_peer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_mac1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_under_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rekey_after_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rekey_after_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_simultaneous, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clear_and_identity_change, setup, teardown),
		cmocka_unit_test(test_shared_index),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
