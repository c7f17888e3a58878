#include "wg/aead-backend.h"

#include <sodium.h>

static bool sodium_available(void)
{
	return true;
}

static bool sodium_seal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
			const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	crypto_aead_chacha20poly1305_ietf_encrypt_detached(dst, dst + len, NULL, src, len, ad, adlen,
							   NULL, nonce, key);
	return true;
}

static bool sodium_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
			const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	if (len < AEAD_TAG_LEN)
		return false;
	return crypto_aead_chacha20poly1305_ietf_decrypt_detached(dst, NULL, src, len - AEAD_TAG_LEN,
								  src + len - AEAD_TAG_LEN, ad, adlen,
								  nonce, key) == 0;
}

const struct aead_backend aead_backend_sodium = {
	.name = "libsodium",
	.available = sodium_available,
	.seal = sodium_seal,
	.open = sodium_open,
};
