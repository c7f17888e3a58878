#include "wg/aead.h"
#include "wg/aead-backend.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

static const struct aead_backend *backends[] = {
	[AEAD_IMPL_SODIUM] = &aead_backend_sodium,
	[AEAD_IMPL_OPENSSL] = &aead_backend_openssl,
};

/* Written once by aead_init() before threads start; read-only after. */
static enum aead_impl selected = AEAD_IMPL_SODIUM;
static const struct aead_backend *active = &aead_backend_sodium;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Nanoseconds for a burst of 1420-byte seals (the common tunnel MTU). */
static uint64_t measure(const struct aead_backend *b)
{
	static uint8_t buf[1420 + AEAD_TAG_LEN];
	uint8_t key[AEAD_KEY_LEN] = { 1 }, nonce[AEAD_NONCE_LEN] = { 0 };
	uint64_t best = UINT64_MAX;

	for (int round = 0; round < 3; round++) {
		uint64_t start = now_ns(), t;

		for (int i = 0; i < 256; i++) {
			nonce[4] = (uint8_t)i;
			if (!b->seal(buf, buf, 1420, NULL, 0, nonce, key))
				return UINT64_MAX;
		}
		t = now_ns() - start;
		if (t < best)
			best = t;
	}
	return best;
}

int aead_init(enum aead_impl impl)
{
	if (sodium_init() < 0)
		return -ENOSYS;
	switch (impl) {
	case AEAD_IMPL_AUTO:
		impl = AEAD_IMPL_SODIUM;
		if (aead_backend_openssl.available() &&
		    measure(&aead_backend_openssl) < measure(&aead_backend_sodium))
			impl = AEAD_IMPL_OPENSSL;
		break;
	case AEAD_IMPL_SODIUM:
	case AEAD_IMPL_OPENSSL:
		if (!backends[impl]->available())
			return -ENOSYS;
		break;
	default:
		return -EINVAL;
	}
	selected = impl;
	active = backends[impl];
	return 0;
}

enum aead_impl aead_impl(void)
{
	return selected;
}

const char *aead_impl_name(enum aead_impl impl)
{
	switch (impl) {
	case AEAD_IMPL_SODIUM:
	case AEAD_IMPL_OPENSSL:
		return backends[impl]->name;
	case AEAD_IMPL_AUTO:
		return "auto";
	}
	return "unknown";
}

void aead_thread_cleanup(void)
{
	aead_backend_openssl.thread_cleanup();
	aead_backend_sodium.thread_cleanup();
}

static const struct aead_backend *backend_for(enum aead_impl impl)
{
	if (impl == AEAD_IMPL_SODIUM || impl == AEAD_IMPL_OPENSSL)
		return backends[impl];
	return active;
}

static inline void counter_nonce(uint8_t nonce[AEAD_NONCE_LEN], uint64_t counter)
{
	memset(nonce, 0, 4);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = (uint8_t)(counter >> (8 * i));
}

bool aead_seal_ietf(enum aead_impl impl, uint8_t *dst, const uint8_t *src, size_t len,
		    const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN],
		    const uint8_t key[AEAD_KEY_LEN])
{
	return backend_for(impl)->seal(dst, src, len, ad, adlen, nonce, key);
}

bool aead_open_ietf(enum aead_impl impl, uint8_t *dst, const uint8_t *src, size_t len,
		    const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN],
		    const uint8_t key[AEAD_KEY_LEN])
{
	if (len < AEAD_TAG_LEN)
		return false;
	if (!backend_for(impl)->open(dst, src, len, ad, adlen, nonce, key)) {
		if (len > AEAD_TAG_LEN)
			memset(dst, 0, len - AEAD_TAG_LEN);
		return false;
	}
	return true;
}

bool aead_seal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
	       uint64_t counter, const uint8_t key[AEAD_KEY_LEN])
{
	uint8_t nonce[AEAD_NONCE_LEN];

	counter_nonce(nonce, counter);
	return active->seal(dst, src, len, ad, adlen, nonce, key);
}

bool aead_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
	       uint64_t counter, const uint8_t key[AEAD_KEY_LEN])
{
	uint8_t nonce[AEAD_NONCE_LEN];

	counter_nonce(nonce, counter);
	return aead_open_ietf(AEAD_IMPL_AUTO, dst, src, len, ad, adlen, nonce, key);
}

bool aead_xseal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		const uint8_t nonce[AEAD_XNONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	return crypto_aead_xchacha20poly1305_ietf_encrypt_detached(dst, dst + len, NULL, src, len, ad, adlen,
								   NULL, nonce, key) == 0;
}

bool aead_xopen(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		const uint8_t nonce[AEAD_XNONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	if (len < AEAD_TAG_LEN)
		return false;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt_detached(dst, NULL, src, len - AEAD_TAG_LEN,
								src + len - AEAD_TAG_LEN, ad, adlen,
								nonce, key) != 0) {
		if (len > AEAD_TAG_LEN)
			memset(dst, 0, len - AEAD_TAG_LEN);
		return false;
	}
	return true;
}
