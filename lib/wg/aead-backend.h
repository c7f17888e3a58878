/* The backends behind aead.c's dispatcher; not for use elsewhere. */
#ifndef KNIT_WG_AEAD_BACKEND_H
#define KNIT_WG_AEAD_BACKEND_H

#include "wg/aead.h"

struct aead_backend {
	const char *name;
	bool (*available)(void);
	bool (*seal)(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		     const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN]);
	bool (*open)(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		     const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN]);
	void (*thread_cleanup)(void); /* optional: frees the calling thread's state */
	/* Optional per-key state (NULL: the key is passed with each call).
	 * key_state_new returns NULL on ENOMEM; key_state_free wipes. */
	void *(*key_state_new)(const uint8_t key[AEAD_KEY_LEN], bool seal);
	void (*key_state_free)(void *state);
	bool (*seal_keyed)(void *state, uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
			   size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN]);
	bool (*open_keyed)(void *state, uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
			   size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN]);
	/* Optional: runs of transport messages under one key (state as for
	 * the keyed calls, NULL if none). Sets each ok. */
	void (*seal_many)(void *state, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN]);
	void (*open_many)(void *state, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN]);
};

/* WireGuard's nonce: 32 zero bits, then the counter little-endian. */
static inline void counter_nonce(uint8_t nonce[AEAD_NONCE_LEN], uint64_t counter)
{
	for (int i = 0; i < 4; i++)
		nonce[i] = 0;
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = (uint8_t)(counter >> (8 * i));
}

extern const struct aead_backend aead_backend_sodium;
extern const struct aead_backend aead_backend_openssl;
extern const struct aead_backend aead_backend_avx2;
extern const struct aead_backend aead_backend_avx512;

#endif
