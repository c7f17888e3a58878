/* BLAKE2s (RFC 7693), keyed and unkeyed, and the HMAC and HKDF built on it
 * that the WireGuard whitepaper (section 5.4) names HMAC and KDF1..3. */
#ifndef KNIT_WG_BLAKE2S_H
#define KNIT_WG_BLAKE2S_H

#include <stddef.h>
#include <stdint.h>

#define BLAKE2S_BLOCK_SIZE 64
#define BLAKE2S_HASH_SIZE 32
#define BLAKE2S_KEY_SIZE 32

struct blake2s_state {
	uint32_t h[8];
	uint32_t t[2];
	uint32_t f[2];
	uint8_t buf[BLAKE2S_BLOCK_SIZE];
	size_t buflen;
	size_t outlen;
};

/* outlen in 1..32, keylen in 0..32 (RFC 7693 section 2.5). */
void blake2s_init(struct blake2s_state *s, size_t outlen);
void blake2s_init_key(struct blake2s_state *s, size_t outlen, const void *key, size_t keylen);
void blake2s_update(struct blake2s_state *s, const void *in, size_t inlen);
/* Writes outlen bytes and wipes the state. */
void blake2s_final(struct blake2s_state *s, uint8_t *out);
/* One shot; key may be NULL when keylen is 0. */
void blake2s(uint8_t *out, size_t outlen, const void *in, size_t inlen, const void *key, size_t keylen);

/* HMAC (RFC 2104) over BLAKE2s, 32-byte output: the paper's HMAC(key, input). */
void blake2s_hmac(uint8_t out[BLAKE2S_HASH_SIZE], const void *in, size_t inlen,
		  const void *key, size_t keylen);

/* The paper's KDF_n(key, input) with key = chaining_key: t0 = HMAC(key,
 * input), t1 = HMAC(t0, 0x1), t_i = HMAC(t0, t_{i-1} || i). Outputs that are
 * NULL are not computed (KDF1/KDF2/KDF3 by passing NULL for the tail); each
 * output is 32 bytes and may alias chaining_key. */
void blake2s_kdf(uint8_t *t1, uint8_t *t2, uint8_t *t3, const void *in, size_t inlen,
		 const uint8_t chaining_key[BLAKE2S_HASH_SIZE]);

#endif
