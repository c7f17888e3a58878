#include "wg/aead.h"
#include "wg/aead-backend.h"

#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct aead_backend *backends[] = {
	[AEAD_IMPL_SODIUM] = &aead_backend_sodium,
	[AEAD_IMPL_OPENSSL] = &aead_backend_openssl,
	[AEAD_IMPL_AVX2] = &aead_backend_avx2,
	[AEAD_IMPL_AVX512] = &aead_backend_avx512,
};
#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

/* Written once by aead_init() before threads start; read-only after.
 * OpenSSL's EVP re-initialisation per packet costs about as much as
 * sealing a few hundred bytes, so AUTO may pick a different backend for
 * packets below AEAD_SMALL_MAX. */
#define AEAD_SMALL_MAX 1024
static enum aead_impl selected = AEAD_IMPL_SODIUM, selected_small = AEAD_IMPL_SODIUM;
static const struct aead_backend *active = &aead_backend_sodium;
static const struct aead_backend *active_small = &aead_backend_sodium;

/* Which backends this CPU and library can run: probed once (the AVX2
 * backend checks itself against libsodium, OpenSSL's against its provider). */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool usable[NBACKENDS];

static void probe(void)
{
	for (size_t i = AEAD_IMPL_SODIUM; i < NBACKENDS; i++)
		usable[i] = backends[i]->available();
}

static bool backend_usable(enum aead_impl impl)
{
	if (impl <= AEAD_IMPL_AUTO || (size_t)impl >= NBACKENDS)
		return false;
	pthread_once(&probe_once, probe);
	return usable[impl];
}

static inline const struct aead_backend *backend_by_len(size_t len)
{
	return len < AEAD_SMALL_MAX ? active_small : active;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Best-of-three nanoseconds for a burst of len-byte seals. */
static uint64_t measure(const struct aead_backend *b, size_t len)
{
	static uint8_t buf[1420 + AEAD_TAG_LEN];
	uint8_t key[AEAD_KEY_LEN] = { 1 }, nonce[AEAD_NONCE_LEN] = { 0 };
	uint64_t best = UINT64_MAX;

	for (int round = 0; round < 3; round++) {
		uint64_t start = now_ns(), t;

		for (int i = 0; i < 256; i++) {
			nonce[4] = (uint8_t)i;
			if (!b->seal(buf, buf, len, NULL, 0, nonce, key))
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
	enum aead_impl small;

	if (sodium_init() < 0)
		return -ENOSYS;
	switch (impl) {
	case AEAD_IMPL_AUTO: {
		/* 1420: the usual tunnel MTU; 128: ACKs and keepalives. */
		uint64_t best = measure(&aead_backend_sodium, 1420);
		uint64_t best_small = measure(&aead_backend_sodium, 128);

		impl = small = AEAD_IMPL_SODIUM;
		for (enum aead_impl i = AEAD_IMPL_SODIUM + 1; i < NBACKENDS; i++) {
			uint64_t t;

			if (!backend_usable(i))
				continue;
			if ((t = measure(backends[i], 1420)) < best)
				best = t, impl = i;
			if ((t = measure(backends[i], 128)) < best_small)
				best_small = t, small = i;
		}
		break;
	}
	case AEAD_IMPL_SODIUM:
	case AEAD_IMPL_OPENSSL:
	case AEAD_IMPL_AVX2:
	case AEAD_IMPL_AVX512:
		if (!backend_usable(impl))
			return -ENOSYS;
		small = impl;
		break;
	default:
		return -EINVAL;
	}
	selected = impl;
	selected_small = small;
	active = backends[impl];
	active_small = backends[small];
	return 0;
}

int aead_init_named(const char *name)
{
	if (!name || !*name || !strcmp(name, "auto"))
		return aead_init(AEAD_IMPL_AUTO);
	for (size_t i = AEAD_IMPL_SODIUM; i < NBACKENDS; i++)
		if (!strcmp(name, backends[i]->name))
			return aead_init((enum aead_impl)i);
	return -EINVAL;
}

int aead_init_env(void)
{
	const char *name = getenv("KNIT_AEAD");
	int ret = aead_init_named(name);

	if (ret)
		log_error("no usable AEAD backend", "KNIT_AEAD=%s errno=%d", name ? name : "", -ret);
	else
		log_info("AEAD backend", "packets=%s small=%s", aead_impl_name(selected), aead_impl_name(selected_small));
	return ret;
}

bool aead_impl_usable(enum aead_impl impl)
{
	return impl == AEAD_IMPL_AUTO || backend_usable(impl);
}

enum aead_impl aead_impl(void)
{
	return selected;
}

enum aead_impl aead_impl_for(size_t len)
{
	return len < AEAD_SMALL_MAX ? selected_small : selected;
}

const char *aead_impl_name(enum aead_impl impl)
{
	switch (impl) {
	case AEAD_IMPL_SODIUM:
	case AEAD_IMPL_OPENSSL:
	case AEAD_IMPL_AVX2:
	case AEAD_IMPL_AVX512:
		return backends[impl]->name;
	case AEAD_IMPL_AUTO:
		return "auto";
	}
	return "unknown";
}

void aead_thread_cleanup(void)
{
	for (size_t i = AEAD_IMPL_SODIUM; i < NBACKENDS; i++)
		if (backends[i]->thread_cleanup)
			backends[i]->thread_cleanup();
}

static const struct aead_backend *backend_for(enum aead_impl impl, size_t len)
{
	if (impl == AEAD_IMPL_AUTO)
		return backend_by_len(len);
	return backend_usable(impl) ? backends[impl] : NULL;
}

bool aead_seal_ietf(enum aead_impl impl, uint8_t *dst, const uint8_t *src, size_t len,
		    const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN],
		    const uint8_t key[AEAD_KEY_LEN])
{
	const struct aead_backend *b = backend_for(impl, len);

	return b && b->seal(dst, src, len, ad, adlen, nonce, key);
}

bool aead_open_ietf(enum aead_impl impl, uint8_t *dst, const uint8_t *src, size_t len,
		    const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN],
		    const uint8_t key[AEAD_KEY_LEN])
{
	const struct aead_backend *b;

	if (len < AEAD_TAG_LEN || !(b = backend_for(impl, len - AEAD_TAG_LEN)))
		return false;
	if (!b->open(dst, src, len, ad, adlen, nonce, key)) {
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
	return backend_by_len(len)->seal(dst, src, len, ad, adlen, nonce, key);
}

bool aead_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
	       uint64_t counter, const uint8_t key[AEAD_KEY_LEN])
{
	uint8_t nonce[AEAD_NONCE_LEN];

	counter_nonce(nonce, counter);
	return aead_open_ietf(AEAD_IMPL_AUTO, dst, src, len, ad, adlen, nonce, key);
}

/* The key, and the backends selected when it was made with their state
 * for it: [0] for full-size packets, [1] for small ones when another
 * backend takes those. */
struct aead_key {
	uint8_t key[AEAD_KEY_LEN];
	const struct aead_backend *b[2];
	void *state[2];
};

struct aead_key *aead_key_new(const uint8_t key[AEAD_KEY_LEN], bool seal)
{
	struct aead_key *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	memcpy(k->key, key, AEAD_KEY_LEN);
	k->b[0] = active;
	k->b[1] = active_small != active ? active_small : NULL;
	for (int i = 0; i < 2; i++) {
		if (!k->b[i] || !k->b[i]->key_state_new)
			continue;
		k->state[i] = k->b[i]->key_state_new(key, seal);
		if (!k->state[i]) {
			aead_key_free(k);
			return NULL;
		}
	}
	return k;
}

void aead_key_free(struct aead_key *k)
{
	if (!k)
		return;
	for (int i = 0; i < 2; i++)
		if (k->state[i])
			k->b[i]->key_state_free(k->state[i]);
	sodium_memzero(k, sizeof(*k));
	free(k);
}

/* Which backend does len bytes, and its state for k (NULL: none kept). */
static const struct aead_backend *key_backend(struct aead_key *k, size_t len, void **state)
{
	int i = len < AEAD_SMALL_MAX && k->b[1] ? 1 : 0;

	*state = k->state[i];
	return k->b[i];
}

bool aead_key_seal(struct aead_key *k, uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		   size_t adlen, uint64_t counter)
{
	uint8_t nonce[AEAD_NONCE_LEN];
	const struct aead_backend *b;
	void *state;

	counter_nonce(nonce, counter);
	b = key_backend(k, len, &state);
	if (state)
		return b->seal_keyed(state, dst, src, len, ad, adlen, nonce, k->key);
	return b->seal(dst, src, len, ad, adlen, nonce, k->key);
}

bool aead_key_open(struct aead_key *k, uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		   size_t adlen, uint64_t counter)
{
	uint8_t nonce[AEAD_NONCE_LEN];
	const struct aead_backend *b;
	void *state;
	bool ok;

	if (len < AEAD_TAG_LEN)
		return false;
	counter_nonce(nonce, counter);
	b = key_backend(k, len - AEAD_TAG_LEN, &state);
	if (state)
		ok = b->open_keyed(state, dst, src, len, ad, adlen, nonce, k->key);
	else
		ok = b->open(dst, src, len, ad, adlen, nonce, k->key);
	if (!ok && len > AEAD_TAG_LEN)
		memset(dst, 0, len - AEAD_TAG_LEN);
	return ok;
}

/* The backend's run call when one backend takes every length under k. */
static bool key_run_backend(struct aead_key *k, bool seal, const struct aead_backend **b, void **state)
{
	if (k->b[1] || !(seal ? k->b[0]->seal_many : k->b[0]->open_many))
		return false;
	*b = k->b[0];
	*state = k->state[0];
	return true;
}

static void key_run(struct aead_key *k, bool seal, struct aead_msg *v, size_t n)
{
	const struct aead_backend *b;
	void *state;

	if (key_run_backend(k, seal, &b, &state)) {
		(seal ? b->seal_many : b->open_many)(state, v, n, k->key);
		return;
	}
	for (size_t i = 0; i < n; i++)
		v[i].ok = (seal ? aead_key_seal : aead_key_open)(k, v[i].dst, v[i].src, v[i].len, NULL, 0,
								 v[i].counter);
}

void aead_key_seal_many(struct aead_key *k, struct aead_msg *v, size_t n)
{
	key_run(k, true, v, n);
}

void aead_key_open_many(struct aead_key *k, struct aead_msg *v, size_t n)
{
	key_run(k, false, v, n);
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
