#include "control/channel.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "buf.h"
#include "wg/aead.h"
#include "wg/blake2s.h"
#include "wg/noise.h"

static const char protocol_name[] = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
static const char prologue[] = "knit control v1";

#define TAG 16

static void mix_hash(uint8_t h[32], const void *data, size_t len)
{
	struct blake2s_state st;

	blake2s_init(&st, 32);
	blake2s_update(&st, h, 32);
	blake2s_update(&st, data, len);
	blake2s_final(&st, h);
}

/* ck, k = KDF2(ck, DH(priv, pub)); false for an all-zero shared secret. */
static bool mix_dh(uint8_t ck[32], uint8_t k[32], const uint8_t priv[32], const uint8_t pub[32])
{
	uint8_t shared[32];
	bool ok = noise_dh(shared, priv, pub);

	if (ok)
		blake2s_kdf(ck, k, NULL, shared, sizeof(shared), ck);
	sodium_memzero(shared, sizeof(shared));
	return ok;
}

static void init_hash(uint8_t h[32], uint8_t ck[32], const uint8_t server_pub[32])
{
	/* The name is 33 bytes, longer than HASHLEN: h = HASH(name). */
	blake2s(h, 32, protocol_name, strlen(protocol_name), NULL, 0);
	memcpy(ck, h, 32);
	mix_hash(h, prologue, strlen(prologue));
	mix_hash(h, server_pub, 32);
}

static void split(struct channel_session *s, const uint8_t ck[32], bool initiator)
{
	uint8_t a[32], b[32];

	blake2s_kdf(a, b, NULL, NULL, 0, ck);
	memcpy(initiator ? s->send_key : s->recv_key, a, 32);
	memcpy(initiator ? s->recv_key : s->send_key, b, 32);
	s->send_counter = 0;
	replay_init(&s->recv_window);
	sodium_memzero(a, sizeof(a));
	sodium_memzero(b, sizeof(b));
}

void channel_keygen(uint8_t priv[CHANNEL_KEY_LEN])
{
	noise_keygen(priv);
}

void channel_public_key(uint8_t pub[CHANNEL_KEY_LEN], const uint8_t priv[CHANNEL_KEY_LEN])
{
	crypto_scalarmult_base(pub, priv);
}

int channel_initiate(struct channel_initiator *st, const uint8_t machine_priv[CHANNEL_KEY_LEN],
		     const uint8_t server_pub[CHANNEL_KEY_LEN], const uint8_t tai64n[CHANNEL_TAI64N_LEN],
		     uint8_t msg1[CHANNEL_MSG1_LEN])
{
	uint8_t k[32], s_pub[32];
	uint8_t *p = msg1;
	int err = -EINVAL;

	memset(st, 0, sizeof(*st));
	memcpy(st->s_priv, machine_priv, 32);
	memcpy(st->server_pub, server_pub, 32);
	init_hash(st->h, st->ck, server_pub);

	*p++ = 0x01;
	/* e */
	channel_keygen(st->e_priv);
	channel_public_key(st->e_pub, st->e_priv);
	memcpy(p, st->e_pub, 32);
	mix_hash(st->h, p, 32);
	p += 32;
	/* es */
	if (!mix_dh(st->ck, k, st->e_priv, server_pub))
		goto out;
	/* s */
	channel_public_key(s_pub, machine_priv);
	aead_seal(p, s_pub, 32, st->h, 32, 0, k);
	mix_hash(st->h, p, 32 + TAG);
	p += 32 + TAG;
	/* ss */
	if (!mix_dh(st->ck, k, machine_priv, server_pub))
		goto out;
	/* {timestamp} */
	aead_seal(p, tai64n, CHANNEL_TAI64N_LEN, st->h, 32, 0, k);
	mix_hash(st->h, p, CHANNEL_TAI64N_LEN + TAG);
	err = 0;
out:
	sodium_memzero(k, sizeof(k));
	if (err)
		sodium_memzero(st, sizeof(*st));
	return err;
}

int channel_finish(struct channel_initiator *st, const uint8_t *msg2, size_t len, struct channel_session *out)
{
	uint8_t k[32], id[8];
	const uint8_t *p = msg2;
	int err = -EBADMSG;

	memset(out, 0, sizeof(*out));
	if (len != CHANNEL_MSG2_LEN || *p++ != 0x02)
		goto out;
	/* e */
	mix_hash(st->h, p, 32);
	/* ee, se */
	if (!mix_dh(st->ck, k, st->e_priv, p) || !mix_dh(st->ck, k, st->s_priv, p))
		goto out;
	p += 32;
	/* {session id} */
	if (!aead_open(id, p, 8 + TAG, st->h, 32, 0, k))
		goto out;
	mix_hash(st->h, p, 8 + TAG);
	memcpy(&out->id, id, 8);
	memcpy(out->peer_static, st->server_pub, 32);
	split(out, st->ck, true);
	err = 0;
out:
	sodium_memzero(k, sizeof(k));
	sodium_memzero(st, sizeof(*st));
	if (err)
		channel_session_wipe(out);
	return err;
}

int channel_respond(const uint8_t server_priv[CHANNEL_KEY_LEN], const uint8_t *msg1, size_t len,
		    uint64_t session_id, uint8_t msg2[CHANNEL_MSG2_LEN], struct channel_session *out,
		    uint8_t tai64n[CHANNEL_TAI64N_LEN])
{
	uint8_t h[32], ck[32], k[32], server_pub[32], s_pub[32], e_priv[32], e_pub[32];
	const uint8_t *p = msg1, *ie;
	uint8_t *q = msg2;
	int err = -EBADMSG;

	memset(out, 0, sizeof(*out));
	if (len != CHANNEL_MSG1_LEN || *p++ != 0x01)
		return -EBADMSG;
	channel_public_key(server_pub, server_priv);
	init_hash(h, ck, server_pub);
	/* e */
	ie = p;
	mix_hash(h, p, 32);
	p += 32;
	/* es */
	if (!mix_dh(ck, k, server_priv, ie))
		goto out;
	/* s */
	if (!aead_open(s_pub, p, 32 + TAG, h, 32, 0, k))
		goto out;
	mix_hash(h, p, 32 + TAG);
	p += 32 + TAG;
	/* ss */
	if (!mix_dh(ck, k, server_priv, s_pub))
		goto out;
	/* {timestamp} */
	if (!aead_open(tai64n, p, CHANNEL_TAI64N_LEN + TAG, h, 32, 0, k))
		goto out;
	mix_hash(h, p, CHANNEL_TAI64N_LEN + TAG);

	*q++ = 0x02;
	/* e */
	channel_keygen(e_priv);
	channel_public_key(e_pub, e_priv);
	memcpy(q, e_pub, 32);
	mix_hash(h, q, 32);
	q += 32;
	/* ee, se */
	if (!mix_dh(ck, k, e_priv, ie) || !mix_dh(ck, k, e_priv, s_pub))
		goto out;
	/* {session id} */
	aead_seal(q, (const uint8_t *)&session_id, 8, h, 32, 0, k);
	mix_hash(h, q, 8 + TAG);
	out->id = session_id;
	memcpy(out->peer_static, s_pub, 32);
	split(out, ck, false);
	err = 0;
out:
	sodium_memzero(h, sizeof(h));
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(k, sizeof(k));
	sodium_memzero(e_priv, sizeof(e_priv));
	if (err) {
		channel_session_wipe(out);
		memset(tai64n, 0, CHANNEL_TAI64N_LEN);
	}
	return err;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int channel_seal(struct channel_session *s, const void *plain, size_t len, struct buf *out)
{
	uint8_t *p;
	int err;

	if (s->send_counter >= UINT64_MAX - 1)
		return -EOVERFLOW;
	p = buf_reserve(out, CHANNEL_OVERHEAD + len, &err);
	if (!p)
		return err;
	memcpy(p, &s->id, 8);
	put_le64(p + 8, s->send_counter);
	aead_seal(p + CHANNEL_HEADER_LEN, plain, len, p, CHANNEL_HEADER_LEN, s->send_counter, s->send_key);
	s->send_counter++;
	buf_commit(out, CHANNEL_OVERHEAD + len);
	return 0;
}

int channel_open(struct channel_session *s, const void *frame, size_t len, struct buf *out)
{
	const uint8_t *f = frame;
	uint64_t id, counter;
	uint8_t *p;
	int err;

	if (len < CHANNEL_OVERHEAD)
		return -EBADMSG;
	memcpy(&id, f, 8);
	if (id != s->id)
		return -EBADMSG;
	counter = get_le64(f + 8);
	p = buf_reserve(out, len - CHANNEL_OVERHEAD, &err);
	if (!p)
		return err;
	if (!aead_open(p, f + CHANNEL_HEADER_LEN, len - CHANNEL_HEADER_LEN, f, CHANNEL_HEADER_LEN, counter,
		       s->recv_key))
		return -EKEYREJECTED;
	/* Only an authentic frame may move the window. */
	if (!replay_check(&s->recv_window, counter)) {
		sodium_memzero(p, len - CHANNEL_OVERHEAD);
		return -EALREADY;
	}
	buf_commit(out, len - CHANNEL_OVERHEAD);
	return 0;
}

bool channel_frame_session(const void *frame, size_t len, uint64_t *id)
{
	if (len < CHANNEL_OVERHEAD)
		return false;
	memcpy(id, frame, 8);
	return true;
}

void channel_session_wipe(struct channel_session *s)
{
	sodium_memzero(s, sizeof(*s));
}

bool channel_key_parse(const char *text, const char *prefix, uint8_t key[CHANNEL_KEY_LEN])
{
	size_t plen = strlen(prefix), n = 0;
	const char *end;

	if (!text || strncmp(text, prefix, plen) != 0 || strlen(text + plen) != 64)
		return false;
	if (sodium_hex2bin(key, CHANNEL_KEY_LEN, text + plen, 64, NULL, &n, &end) != 0 || n != 32 || *end)
		return false;
	return true;
}

void channel_key_format(const uint8_t key[CHANNEL_KEY_LEN], const char *prefix, char *out, size_t outlen)
{
	char hex[65];

	sodium_bin2hex(hex, sizeof(hex), key, CHANNEL_KEY_LEN);
	snprintf(out, outlen, "%s%s", prefix, hex);
}
