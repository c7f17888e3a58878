/* Arbitrary bytes as a datagram received by a WireGuard responder: type
 * demux, MAC1/MAC2 check, then whatever the message type leads to
 * (consume initiation + create response, consume response, cookie reply,
 * data decryption with key confirmation).
 *
 * Randomness is made deterministic so each input runs against the same
 * state: A (under test) holds a session as responder (B initiated), has
 * its own initiation to B outstanding, and sees the input at a fixed time.
 * The seeds in corpus/wg_packet were written by this file built with
 * -DFUZZ_WG_GEN_SEEDS (see gen_seeds() below), so they are valid
 * messages for that state: an initiation, a response, a cookie reply and
 * a data packet. */
#include <endian.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wg/aead.h"
#include "wg/cookie.h"
#include "wg/noise.h"

static uint64_t rng_state;

static uint64_t splitmix64(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static const char *rng_name(void)
{
	return "fuzz-deterministic";
}

static uint32_t rng_random(void)
{
	return (uint32_t)splitmix64();
}

static void rng_stir(void)
{
}

static void rng_buf(void *const buf, const size_t size)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < size; i++)
		p[i] = (uint8_t)splitmix64();
}

static int rng_close(void)
{
	return 0;
}

static struct randombytes_implementation rng = {
	.implementation_name = rng_name,
	.random = rng_random,
	.stir = rng_stir,
	.uniform = NULL,
	.buf = rng_buf,
	.close = rng_close,
};

struct side {
	struct noise_local *local;
	struct noise_remote *remote;
	struct cookie_checker checker;
	struct cookie_maker maker;
	uint8_t pub[32], peer_pub[32];
};

static struct side A, B;
static const uint8_t src[6] = { 198, 51, 100, 7, 0x1f, 0x90 };
#define T0 1000000ULL

static struct noise_remote *remote_get(void *arg, const uint8_t pub[32])
{
	struct side *s = arg;

	return memcmp(pub, s->peer_pub, 32) == 0 ? s->remote : NULL;
}

static void side_init(struct side *s, uint8_t fill, struct noise_index *index)
{
	struct noise_upcalls up = { .remote_get = remote_get, .arg = s };
	uint8_t priv[32];

	memset(priv, fill, sizeof(priv));
	s->local = noise_local_new(&up, index);
	if (!s->local)
		abort();
	noise_local_set_private(s->local, priv);
	noise_local_public(s->local, s->pub);
	cookie_checker_init(&s->checker);
	cookie_checker_set_public(&s->checker, s->pub);
	sodium_memzero(priv, sizeof(priv));
}

static void side_connect(struct side *s, const struct side *peer)
{
	memcpy(s->peer_pub, peer->pub, 32);
	s->remote = noise_remote_new(s->local, peer->pub, s);
	if (!s->remote)
		abort();
	cookie_maker_init(&s->maker, peer->pub);
}

static void side_free(struct side *s)
{
	noise_remote_free(s->remote);
	cookie_maker_destroy(&s->maker);
	cookie_checker_destroy(&s->checker);
	noise_local_free(s->local);
}

static void initiation(struct side *from, struct message_handshake_initiation *m, time_t sec)
{
	struct timespec ts = { .tv_sec = sec };
	uint8_t t[12];

	noise_tai64n(t, &ts);
	if (!noise_handshake_create_initiation(from->remote, m, t))
		abort();
	cookie_maker_add_macs(&from->maker, m, sizeof(*m), T0);
}

/* Where the random stream stood before each of A's steps in the full
 * setup, and B's initiation: what A's setup needs of B. */
static struct {
	uint64_t after_b_init, after_b_connect, after_b_initiation, after_b_consume;
	struct message_handshake_initiation b_init;
	struct noise_index *a_index;
	bool valid;
} snap;

/* B -> A handshake (A responds, keypair pending confirmation), then A's
 * own initiation to B left outstanding. Returns that initiation. */
static void setup(struct message_handshake_initiation *a_init)
{
	struct message_handshake_initiation init;
	struct message_handshake_response resp;

	rng_state = 1;
	side_init(&A, 0x41, NULL);
	side_init(&B, 0x42, NULL);
	snap.after_b_init = rng_state;
	side_connect(&A, &B);
	side_connect(&B, &A);
	snap.after_b_connect = rng_state;
	initiation(&B, &init, 1700000000);
	snap.after_b_initiation = rng_state;
	snap.b_init = init;
	if (noise_handshake_consume_initiation(A.local, &init, T0) != A.remote ||
	    !noise_handshake_create_response(A.remote, &resp) || !noise_handshake_begin_session(A.remote, T0))
		abort();
	cookie_maker_add_macs(&A.maker, &resp, sizeof(resp), T0);
	if (noise_handshake_consume_response(B.local, &resp) != B.remote || !noise_handshake_begin_session(B.remote, T0))
		abort();
	snap.after_b_consume = rng_state;
	initiation(&A, a_init, 1700000001);
}

/* The same state for A with B's side replayed from snap instead of
 * recomputed: B is never touched by an input, so it is built once and
 * kept, and A gets a long-lived index (a 64 KiB table otherwise
 * allocated and faulted in per input). Each of A's steps sees the random
 * stream exactly where the full setup had it, so A ends up byte for byte
 * the same (the seeds, made by the full setup, stay valid). This halves
 * the public-key operations per input. */
static void setup_a(struct message_handshake_initiation *a_init)
{
	struct message_handshake_response resp;

	if (!snap.valid) {
		setup(a_init);
		noise_remote_free(A.remote);
		cookie_maker_destroy(&A.maker);
		cookie_checker_destroy(&A.checker);
		noise_local_free(A.local);
		snap.a_index = noise_index_new();
		if (!snap.a_index)
			abort();
		snap.valid = true;
	}
	rng_state = 1;
	side_init(&A, 0x41, snap.a_index);
	rng_state = snap.after_b_init;
	side_connect(&A, &B);
	rng_state = snap.after_b_initiation;
	if (noise_handshake_consume_initiation(A.local, &snap.b_init, T0) != A.remote ||
	    !noise_handshake_create_response(A.remote, &resp) || !noise_handshake_begin_session(A.remote, T0))
		abort();
	cookie_maker_add_macs(&A.maker, &resp, sizeof(resp), T0);
	rng_state = snap.after_b_consume;
	initiation(&A, a_init, 1700000001);
}

static void receive(const uint8_t *data, size_t size, bool under_load)
{
	uint64_t now = T0 + 1000;
	uint8_t pkt[1600];

	if (size > sizeof(pkt))
		return;
	memcpy(pkt, data, size); /* in place, like the real receive path */
	switch (message_classify(pkt, size)) {
	case MESSAGE_HANDSHAKE_INITIATION:
	case MESSAGE_HANDSHAKE_RESPONSE: {
		enum cookie_verdict v = cookie_checker_check(&A.checker, pkt, size, under_load, src, sizeof(src), now);

		if (v == COOKIE_SEND_REPLY) {
			struct message_handshake_cookie reply;
			uint32_t sender = le32toh(((const struct message_handshake_initiation *)pkt)->sender_index);

			cookie_checker_create_reply(&A.checker, &reply, pkt, size, sender, src, sizeof(src), now);
		} else if (v == COOKIE_ACCEPT && pkt[0] == MESSAGE_HANDSHAKE_INITIATION) {
			struct message_handshake_response resp;
			struct noise_remote *r = noise_handshake_consume_initiation(A.local, (const void *)pkt, now);

			if (r && noise_handshake_create_response(r, &resp))
				noise_handshake_begin_session(r, now);
		} else if (v == COOKIE_ACCEPT) {
			struct noise_remote *r = noise_handshake_consume_response(A.local, (const void *)pkt);

			if (r)
				noise_handshake_begin_session(r, now);
		}
		break;
	}
	case MESSAGE_HANDSHAKE_COOKIE: {
		const struct message_handshake_cookie *c = (const void *)pkt;
		struct noise_remote *r = noise_index_lookup_remote(noise_local_index(A.local), le32toh(c->receiver_index));

		if (r == A.remote)
			cookie_maker_consume_reply(&A.maker, c, now);
		break;
	}
	case MESSAGE_DATA: {
		const struct message_data *d = (const void *)pkt;
		struct noise_keypair *kp = noise_keypair_lookup(noise_local_index(A.local), le32toh(d->key_idx));
		size_t plen;

		if (!kp)
			break;
		if (noise_keypair_decrypt(kp, pkt, size, now, &plen) == NOISE_RX_OK)
			noise_keypair_received_with(kp);
		noise_keypair_put(kp);
		break;
	}
	default:
		break;
	}
}

static void init_once(void)
{
	static bool done;

	if (done)
		return;
	randombytes_set_implementation(&rng);
	if (aead_init(AEAD_IMPL_SODIUM) != 0)
		abort();
	done = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct message_handshake_initiation a_init;

	init_once();
	setup_a(&a_init);
	/* the last byte of an odd-length handshake-sized input is not part of
	 * it, so under-load is steered by the input's first MAC2 byte instead */
	receive(data, size, size >= 32 && (data[size - 16] & 1));
	side_free(&A);
	aead_thread_cleanup();
	return 0;
}

#ifdef FUZZ_WG_GEN_SEEDS
static void write_seed(const char *dir, const char *name, const void *p, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n)
		abort();
	fclose(f);
}

/* Same setup, then B produces what A would receive. */
int main(int argc, char **argv)
{
	struct message_handshake_initiation a_init, b_init;
	struct message_handshake_response resp;
	struct message_handshake_cookie reply;
	struct noise_keypair *kp;
	uint8_t pkt[16 + 32 + 16];
	size_t n;

	if (argc != 2)
		return 1;
	init_once();
	setup(&a_init);
	/* data from B on the session A has pending: confirms it */
	kp = noise_keypair_current(B.remote);
	memset(pkt, 0, sizeof(pkt));
	memcpy(pkt + 16, "\x45\x00\x00\x1c knit fuzz seed", 19);
	if (!kp || !noise_keypair_encrypt(kp, pkt, 32, T0 + 1000, &n))
		abort();
	noise_keypair_put(kp);
	write_seed(argv[1], "data", pkt, n);
	/* a cookie reply to A's outstanding initiation */
	cookie_checker_create_reply(&B.checker, &reply, &a_init, sizeof(a_init), le32toh(a_init.sender_index), src,
				    sizeof(src), T0);
	write_seed(argv[1], "cookie", &reply, sizeof(reply));
	/* B's answer to A's initiation */
	if (noise_handshake_consume_initiation(B.local, &a_init, T0 + 1000) != B.remote ||
	    !noise_handshake_create_response(B.remote, &resp))
		abort();
	cookie_maker_add_macs(&B.maker, &resp, sizeof(resp), T0);
	write_seed(argv[1], "response", &resp, sizeof(resp));
	/* a newer initiation from B */
	initiation(&B, &b_init, 1700000002);
	write_seed(argv[1], "initiation", &b_init, sizeof(b_init));
	side_free(&A);
	side_free(&B);
	return 0;
}
#endif
