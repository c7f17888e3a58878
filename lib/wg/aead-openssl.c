#include "wg/aead-backend.h"

#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

/* One context per thread, keyed per call: EVP_CipherInit_ex() with a NULL
 * cipher only reloads key and nonce, so the data path never allocates. */
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
	EVP_CIPHER_CTX *ctx;

	if (tls_ctx[i])
		return tls_ctx[i];
	pthread_once(&ctx_once, ctx_key_init);
	if (!ctx_key_ok)
		return NULL;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return NULL;
	if (EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), NULL, NULL, NULL, enc) != 1) {
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	tls_ctx[i] = ctx;
	pthread_setspecific(ctx_key, tls_ctx);
	return ctx;
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
	int outl;

	if (!ctx || len > INT_MAX || adlen > INT_MAX)
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

static bool openssl_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
			 const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	EVP_CIPHER_CTX *ctx = get_ctx(0);
	uint8_t tag[AEAD_TAG_LEN];
	size_t plen;
	int outl;

	if (!ctx || len < AEAD_TAG_LEN || len > INT_MAX || adlen > INT_MAX)
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

static void openssl_thread_cleanup(void)
{
	ctx_destroy(tls_ctx);
}

const struct aead_backend aead_backend_openssl = {
	.name = "openssl",
	.available = openssl_available,
	.seal = openssl_seal,
	.open = openssl_open,
	.thread_cleanup = openssl_thread_cleanup,
};
