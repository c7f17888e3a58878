#include "wg/cookie.h"

#include "wg/aead.h"
#include "wg/blake2s.h"

#include <endian.h>
#include <sodium.h>
#include <string.h>

/* HASH(label || public key) */
static void precompute_key(uint8_t key[NOISE_SYMMETRIC_KEY_LEN], const uint8_t pub[NOISE_PUBLIC_KEY_LEN],
			   const char label[8])
{
	struct blake2s_state s;

	blake2s_init(&s, NOISE_SYMMETRIC_KEY_LEN);
	blake2s_update(&s, label, 8);
	blake2s_update(&s, pub, NOISE_PUBLIC_KEY_LEN);
	blake2s_final(&s, key);
}

/* mac1 = MAC(key, msg up to mac1) */
static void compute_mac1(uint8_t mac1[COOKIE_LEN], const void *msg, size_t len,
			 const uint8_t key[NOISE_SYMMETRIC_KEY_LEN])
{
	blake2s(mac1, COOKIE_LEN, msg, MESSAGE_MAC1_OFFSET(len), key, NOISE_SYMMETRIC_KEY_LEN);
}

/* mac2 = MAC(cookie, msg up to mac2) */
static void compute_mac2(uint8_t mac2[COOKIE_LEN], const void *msg, size_t len, const uint8_t cookie[COOKIE_LEN])
{
	blake2s(mac2, COOKIE_LEN, msg, MESSAGE_MAC2_OFFSET(len), cookie, COOKIE_LEN);
}

static inline bool has_expired(uint64_t birthdate, uint64_t age, uint64_t now)
{
	return now >= birthdate + age;
}

void cookie_checker_init(struct cookie_checker *c)
{
	memset(c, 0, sizeof(*c));
	pthread_rwlock_init(&c->lock, NULL);
}

void cookie_checker_destroy(struct cookie_checker *c)
{
	pthread_rwlock_destroy(&c->lock);
	sodium_memzero(c, sizeof(*c));
}

void cookie_checker_set_public(struct cookie_checker *c, const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	pthread_rwlock_wrlock(&c->lock);
	if (pub) {
		precompute_key(c->mac1_key, pub, COOKIE_LABEL_MAC1);
		precompute_key(c->encryption_key, pub, COOKIE_LABEL_COOKIE);
		c->has_keys = true;
	} else {
		sodium_memzero(c->mac1_key, sizeof(c->mac1_key));
		sodium_memzero(c->encryption_key, sizeof(c->encryption_key));
		c->has_keys = false;
	}
	pthread_rwlock_unlock(&c->lock);
}

/* cookie = MAC(secret, source address); the secret is rotated when older
 * than COOKIE_SECRET_MAX_AGE. */
static void make_cookie(struct cookie_checker *c, uint8_t cookie[COOKIE_LEN], const uint8_t *src, size_t srclen,
			uint64_t now)
{
	pthread_rwlock_rdlock(&c->lock);
	if (!c->has_secret || has_expired(c->secret_birthdate, COOKIE_SECRET_MAX_AGE_MS, now)) {
		pthread_rwlock_unlock(&c->lock);
		pthread_rwlock_wrlock(&c->lock);
		if (!c->has_secret || has_expired(c->secret_birthdate, COOKIE_SECRET_MAX_AGE_MS, now)) {
			randombytes_buf(c->secret, sizeof(c->secret));
			c->secret_birthdate = now;
			c->has_secret = true;
		}
	}
	blake2s(cookie, COOKIE_LEN, src, srclen, c->secret, sizeof(c->secret));
	pthread_rwlock_unlock(&c->lock);
}

bool cookie_msg_has_mac2(const void *msg, size_t len)
{
	const struct message_macs *macs;

	if (len != MESSAGE_INITIATION_LEN && len != MESSAGE_RESPONSE_LEN)
		return false;
	macs = (const struct message_macs *)((const uint8_t *)msg + MESSAGE_MAC1_OFFSET(len));
	return !sodium_is_zero(macs->mac2, COOKIE_LEN);
}

enum cookie_mac_state cookie_checker_validate(struct cookie_checker *c, const void *msg, size_t len,
					      bool check_cookie, const uint8_t *src, size_t srclen,
					      uint64_t now)
{
	const struct message_macs *macs;
	uint8_t computed[COOKIE_LEN];
	uint8_t cookie[COOKIE_LEN];
	enum cookie_mac_state ret = COOKIE_MAC_INVALID;
	bool has_keys;

	if (len != MESSAGE_INITIATION_LEN && len != MESSAGE_RESPONSE_LEN)
		return COOKIE_MAC_INVALID;
	macs = (const struct message_macs *)((const uint8_t *)msg + MESSAGE_MAC1_OFFSET(len));

	pthread_rwlock_rdlock(&c->lock);
	has_keys = c->has_keys;
	if (has_keys)
		compute_mac1(computed, msg, len, c->mac1_key);
	pthread_rwlock_unlock(&c->lock);
	if (!has_keys || sodium_memcmp(computed, macs->mac1, COOKIE_LEN) != 0)
		goto out;

	ret = COOKIE_MAC_VALID_NO_COOKIE;
	/* A sender without a cookie leaves MAC2 zero: nothing to compute. */
	if (!check_cookie || !cookie_msg_has_mac2(msg, len))
		goto out;
	make_cookie(c, cookie, src, srclen, now);
	compute_mac2(computed, msg, len, cookie);
	if (sodium_memcmp(computed, macs->mac2, COOKIE_LEN) != 0)
		goto out;
	ret = COOKIE_MAC_VALID_WITH_COOKIE;
out:
	sodium_memzero(cookie, sizeof(cookie));
	return ret;
}

enum cookie_verdict cookie_checker_check(struct cookie_checker *c, const void *msg, size_t len,
					 bool under_load, const uint8_t *src, size_t srclen, uint64_t now)
{
	enum cookie_mac_state st = cookie_checker_validate(c, msg, len, under_load, src, srclen, now);

	if (st == COOKIE_MAC_INVALID)
		return COOKIE_DROP;
	if (!under_load || st == COOKIE_MAC_VALID_WITH_COOKIE)
		return COOKIE_ACCEPT;
	return COOKIE_SEND_REPLY;
}

bool cookie_checker_create_reply(struct cookie_checker *c, struct message_handshake_cookie *dst,
				 const void *msg, size_t len, uint32_t index,
				 const uint8_t *src, size_t srclen, uint64_t now)
{
	const struct message_macs *macs;
	uint8_t cookie[COOKIE_LEN];
	bool ret = false;

	if (len != MESSAGE_INITIATION_LEN && len != MESSAGE_RESPONSE_LEN)
		return false;
	macs = (const struct message_macs *)((const uint8_t *)msg + MESSAGE_MAC1_OFFSET(len));

	dst->header.type = htole32(MESSAGE_HANDSHAKE_COOKIE);
	dst->receiver_index = htole32(index);
	randombytes_buf(dst->nonce, COOKIE_NONCE_LEN);
	make_cookie(c, cookie, src, srclen, now);

	pthread_rwlock_rdlock(&c->lock);
	if (c->has_keys)
		ret = aead_xseal(dst->encrypted_cookie, cookie, COOKIE_LEN, macs->mac1, COOKIE_LEN, dst->nonce,
				 c->encryption_key);
	pthread_rwlock_unlock(&c->lock);
	sodium_memzero(cookie, sizeof(cookie));
	return ret;
}

void cookie_maker_init(struct cookie_maker *m, const uint8_t remote_pub[NOISE_PUBLIC_KEY_LEN])
{
	memset(m, 0, sizeof(*m));
	pthread_rwlock_init(&m->lock, NULL);
	precompute_key(m->mac1_key, remote_pub, COOKIE_LABEL_MAC1);
	precompute_key(m->decryption_key, remote_pub, COOKIE_LABEL_COOKIE);
}

void cookie_maker_destroy(struct cookie_maker *m)
{
	pthread_rwlock_destroy(&m->lock);
	sodium_memzero(m, sizeof(*m));
}

void cookie_maker_add_macs(struct cookie_maker *m, void *msg, size_t len, uint64_t now)
{
	struct message_macs *macs = (struct message_macs *)((uint8_t *)msg + MESSAGE_MAC1_OFFSET(len));

	pthread_rwlock_wrlock(&m->lock);
	compute_mac1(macs->mac1, msg, len, m->mac1_key);
	memcpy(m->last_mac1_sent, macs->mac1, COOKIE_LEN);
	m->have_sent_mac1 = true;
	/* A cookie is good for a little less than the checker's secret, so
	 * we stop using it before the responder forgets it. */
	if (m->is_valid && !has_expired(m->birthdate, COOKIE_SECRET_MAX_AGE_MS - COOKIE_SECRET_LATENCY_MS, now))
		compute_mac2(macs->mac2, msg, len, m->cookie);
	else
		memset(macs->mac2, 0, COOKIE_LEN);
	pthread_rwlock_unlock(&m->lock);
}

bool cookie_maker_consume_reply(struct cookie_maker *m, const struct message_handshake_cookie *src, uint64_t now)
{
	uint8_t cookie[COOKIE_LEN];
	bool ret = false;

	if (le32toh(src->header.type) != MESSAGE_HANDSHAKE_COOKIE)
		return false;
	pthread_rwlock_wrlock(&m->lock);
	if (!m->have_sent_mac1)
		goto out;
	if (!aead_xopen(cookie, src->encrypted_cookie, sizeof(src->encrypted_cookie), m->last_mac1_sent,
			COOKIE_LEN, src->nonce, m->decryption_key))
		goto out;
	memcpy(m->cookie, cookie, COOKIE_LEN);
	m->birthdate = now;
	m->is_valid = true;
	m->have_sent_mac1 = false;
	ret = true;
out:
	pthread_rwlock_unlock(&m->lock);
	sodium_memzero(cookie, sizeof(cookie));
	return ret;
}

bool cookie_under_load(struct cookie_load *l, size_t queued, size_t max_queued, uint64_t now)
{
	if (queued >= max_queued / 8) {
		l->seen = true;
		l->last_under_load = now;
		return true;
	}
	return l->seen && !has_expired(l->last_under_load, 1000, now);
}
