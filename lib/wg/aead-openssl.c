/* EVP_CIPHER_meth_dup() is deprecated in OpenSSL 3 but still the one way to
 * reach the built-in (non-provider) ChaCha20-Poly1305 glue; see cipher(). */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "wg/aead-backend.h"

#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The cipher every context uses. OpenSSL 3 routes EVP_chacha20_poly1305()
 * through its provider layer, whose per-call parameter handling (string
 * lookups for the IV length, the tag...) costs about as much as sealing a
 * few hundred bytes. A duplicate of the method is a "legacy" cipher that
 * EVP calls directly, with the same assembly underneath: 13% less time per
 * 1420-byte packet here. It is used only if it computes what the provider
 * does; otherwise, or where the duplicate cannot be made, the provider. */
static pthread_once_t cipher_once = PTHREAD_ONCE_INIT;
static const EVP_CIPHER *the_cipher;
static EVP_CIPHER *legacy;

static bool seal_with(EVP_CIPHER_CTX *ctx, const uint8_t *key, uint8_t *dst, const uint8_t *src, size_t len,
		      const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN])
{
	int outl;

	if (len > INT_MAX || adlen > INT_MAX)
		return false;
	if (EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, 1) != 1)
		return false;
	if (adlen && EVP_CipherUpdate(ctx, NULL, &outl, ad, (int)adlen) != 1)
		return false;
	if (len && EVP_CipherUpdate(ctx, dst, &outl, src, (int)len) != 1)
		return false;
	if (EVP_CipherFinal_ex(ctx, dst + len, &outl) != 1)
		return false;
	return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, dst + len) == 1;
}

static bool open_with(EVP_CIPHER_CTX *ctx, const uint8_t *key, uint8_t *dst, const uint8_t *src, size_t len,
		      const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN])
{
	uint8_t tag[AEAD_TAG_LEN];
	size_t plen;
	int outl;

	if (len < AEAD_TAG_LEN || len > INT_MAX || adlen > INT_MAX)
		return false;
	plen = len - AEAD_TAG_LEN;
	/* Copy the tag first: in place, decrypting may not overwrite it, but
	 * the caller's buffer is theirs to reuse. */
	memcpy(tag, src + plen, AEAD_TAG_LEN);
	if (EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, 0) != 1)
		return false;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, tag) != 1)
		return false;
	if (adlen && EVP_CipherUpdate(ctx, NULL, &outl, ad, (int)adlen) != 1)
		return false;
	if (plen && EVP_CipherUpdate(ctx, dst, &outl, src, (int)plen) != 1)
		return false;
	if (EVP_CipherFinal_ex(ctx, dst + plen, &outl) != 1) {
		memset(dst, 0, plen);
		return false;
	}
	return true;
}

static EVP_CIPHER_CTX *ctx_new(const EVP_CIPHER *c, const uint8_t *key, int enc)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

	if (ctx && EVP_CipherInit_ex(ctx, c, NULL, key, NULL, enc) != 1) {
		EVP_CIPHER_CTX_free(ctx);
		ctx = NULL;
	}
	return ctx;
}

/* Both ciphers seal a test message alike. */
static bool legacy_agrees(void)
{
	static const uint8_t key[AEAD_KEY_LEN] = { 1, 2, 3 }, nonce[AEAD_NONCE_LEN] = { 4, 5, 6 }, ad[5] = { 7 };
	uint8_t msg[100], a[sizeof(msg) + AEAD_TAG_LEN], b[sizeof(a)];
	EVP_CIPHER_CTX *pa = ctx_new(EVP_chacha20_poly1305(), NULL, 1), *pb = ctx_new(legacy, NULL, 1);
	bool ok;

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)i;
	ok = pa && pb && seal_with(pa, key, a, msg, sizeof(msg), ad, sizeof(ad), nonce) &&
	     seal_with(pb, key, b, msg, sizeof(msg), ad, sizeof(ad), nonce) && !memcmp(a, b, sizeof(a)) &&
	     open_with(pb, key, b, b, sizeof(b), ad, sizeof(ad), nonce) && !memcmp(b, msg, sizeof(msg));
	EVP_CIPHER_CTX_free(pa);
	EVP_CIPHER_CTX_free(pb);
	return ok;
}

static void cipher_init(void)
{
	legacy = EVP_CIPHER_meth_dup(EVP_chacha20_poly1305());
	if (legacy && !legacy_agrees()) {
		EVP_CIPHER_meth_free(legacy);
		legacy = NULL;
	}
	the_cipher = legacy ? legacy : EVP_chacha20_poly1305();
}

static const EVP_CIPHER *cipher(void)
{
	pthread_once(&cipher_once, cipher_init);
	return the_cipher;
}

/* ---- per-thread contexts, keyed per call ---- */

static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static bool ctx_key_ok;
static __thread EVP_CIPHER_CTX *tls_ctx[2]; /* [0] seal, [1] open */

static void ctx_destroy(void *p)
{
	EVP_CIPHER_CTX **ctxs = p;

	EVP_CIPHER_CTX_free(ctxs[0]);
	EVP_CIPHER_CTX_free(ctxs[1]);
	ctxs[0] = ctxs[1] = NULL;
}

static void ctx_key_init(void)
{
	ctx_key_ok = pthread_key_create(&ctx_key, ctx_destroy) == 0;
}

static EVP_CIPHER_CTX *get_ctx(int enc)
{
	int i = enc ? 0 : 1;

	if (tls_ctx[i])
		return tls_ctx[i];
	pthread_once(&ctx_once, ctx_key_init);
	if (!ctx_key_ok)
		return NULL;
	tls_ctx[i] = ctx_new(cipher(), NULL, enc);
	if (tls_ctx[i])
		pthread_setspecific(ctx_key, tls_ctx);
	return tls_ctx[i];
}

static bool openssl_available(void)
{
	uint8_t key[AEAD_KEY_LEN] = { 0 }, nonce[AEAD_NONCE_LEN] = { 0 }, buf[AEAD_TAG_LEN];

	return get_ctx(1) && get_ctx(0) && aead_backend_openssl.seal(buf, buf, 0, NULL, 0, nonce, key);
}

static bool openssl_seal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
			 const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	EVP_CIPHER_CTX *ctx = get_ctx(1);

	return ctx && seal_with(ctx, key, dst, src, len, ad, adlen, nonce);
}

static bool openssl_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
			 const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	EVP_CIPHER_CTX *ctx = get_ctx(0);

	return ctx && open_with(ctx, key, dst, src, len, ad, adlen, nonce);
}

static void openssl_thread_cleanup(void)
{
	ctx_destroy(tls_ctx);
}

/* ---- prepared keys ---- */

/* A context keyed once, for one thread at a time: a thread takes a free
 * slot (its own first, so that with few threads each keeps one), sets only
 * the nonce per packet, and gives the slot back. When all are busy it falls
 * back to its own context. Slots get their context on first use. */
#define KEY_SLOTS 4

struct key_slot {
	atomic_bool busy;
	EVP_CIPHER_CTX *ctx; /* belongs to whoever holds busy */
} __attribute__((aligned(64)));

struct key_state {
	struct key_slot slot[KEY_SLOTS];
	int enc;
};

static atomic_uint slot_hints;
static __thread unsigned tls_slot_hint = UINT_MAX;

static void *openssl_key_state_new(const uint8_t key[AEAD_KEY_LEN], bool seal)
{
	struct key_state *ks = aligned_alloc(_Alignof(struct key_state), sizeof(*ks));

	(void)key;
	if (!ks)
		return NULL;
	memset(ks, 0, sizeof(*ks));
	ks->enc = seal ? 1 : 0;
	return ks;
}

static void openssl_key_state_free(void *state)
{
	struct key_state *ks = state;

	/* EVP_CIPHER_CTX_free() cleanses the keyed cipher data. */
	for (int i = 0; i < KEY_SLOTS; i++)
		EVP_CIPHER_CTX_free(ks->slot[i].ctx);
	free(ks);
}

static struct key_slot *slot_take(struct key_state *ks, const uint8_t key[AEAD_KEY_LEN])
{
	unsigned h = tls_slot_hint;

	if (h == UINT_MAX)
		h = tls_slot_hint = atomic_fetch_add_explicit(&slot_hints, 1, memory_order_relaxed) % KEY_SLOTS;
	for (unsigned i = 0; i < KEY_SLOTS; i++) {
		struct key_slot *s = &ks->slot[(h + i) % KEY_SLOTS];

		if (atomic_load_explicit(&s->busy, memory_order_relaxed) ||
		    atomic_exchange_explicit(&s->busy, true, memory_order_acquire))
			continue;
		if (!s->ctx)
			s->ctx = ctx_new(cipher(), key, ks->enc);
		if (s->ctx)
			return s;
		atomic_store_explicit(&s->busy, false, memory_order_release);
		return NULL;
	}
	return NULL;
}

static void slot_give(struct key_slot *s)
{
	atomic_store_explicit(&s->busy, false, memory_order_release);
}

static bool openssl_seal_keyed(void *state, uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
			       size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	struct key_slot *s = slot_take(state, key);
	bool ok;

	if (!s)
		return openssl_seal(dst, src, len, ad, adlen, nonce, key);
	ok = seal_with(s->ctx, NULL, dst, src, len, ad, adlen, nonce);
	slot_give(s);
	return ok;
}

static bool openssl_open_keyed(void *state, uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
			       size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	struct key_slot *s = slot_take(state, key);
	bool ok;

	if (!s)
		return openssl_open(dst, src, len, ad, adlen, nonce, key);
	ok = open_with(s->ctx, NULL, dst, src, len, ad, adlen, nonce);
	slot_give(s);
	return ok;
}

const struct aead_backend aead_backend_openssl = {
	.name = "openssl",
	.available = openssl_available,
	.seal = openssl_seal,
	.open = openssl_open,
	.thread_cleanup = openssl_thread_cleanup,
	.key_state_new = openssl_key_state_new,
	.key_state_free = openssl_key_state_free,
	.seal_keyed = openssl_seal_keyed,
	.open_keyed = openssl_open_keyed,
};
