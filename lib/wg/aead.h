/* ChaCha20-Poly1305 (RFC 8439) for transport data and the handshake, and
 * XChaCha20-Poly1305 for cookie replies, as WireGuard uses them.
 *
 * Three interchangeable backends compute the same bytes: OpenSSL 3's EVP
 * (fastest where it has AVX-512 code), knit's own AVX2 code (ChaCha20 and
 * Poly1305 stitched; aead-avx2.c) and libsodium. aead_init() picks one;
 * until then libsodium is used. XChaCha20 always comes from libsodium
 * (OpenSSL has none; cookie replies are rare).
 *
 * Thread-safety: all functions are reentrant. The OpenSSL backend keeps one
 * EVP_CIPHER_CTX per thread, made on first use and freed at thread exit (or
 * by aead_thread_cleanup()); nothing is allocated per packet. src and dst
 * may be the same buffer (in-place); partial overlap is not allowed.
 *
 * A transport key seals or opens millions of packets: struct aead_key
 * prepares it once (OpenSSL: a few keyed contexts that threads take in
 * turn, so a packet only sets its nonce) and wipes it when freed. */
#ifndef KNIT_WG_AEAD_H
#define KNIT_WG_AEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AEAD_KEY_LEN 32
#define AEAD_NONCE_LEN 12
#define AEAD_XNONCE_LEN 24
#define AEAD_TAG_LEN 16

enum aead_impl {
	AEAD_IMPL_AUTO = 0, /* measure each, keep the fastest (separately for packets under 1 KiB) */
	AEAD_IMPL_SODIUM,
	AEAD_IMPL_OPENSSL,
	AEAD_IMPL_AVX2, /* x86-64 with AVX2 and BMI2 only */
	AEAD_IMPL_AVX512, /* x86-64 with AVX-512F/VL, AVX2 and BMI2 only */
};

/* Call once at startup, before threads use the AEAD. Also initialises
 * libsodium. Returns 0 or -EINVAL/-ENOSYS (unknown or unusable backend). */
int aead_init(enum aead_impl impl);
/* aead_init() by backend name ("libsodium", "openssl", "avx2", "avx512";
 * NULL, "" or "auto": AUTO), as knitd's KNIT_AEAD gives it. */
int aead_init_named(const char *name);
/* aead_init_named(getenv("KNIT_AEAD")), logging the backends chosen or
 * why there is none: how both of knitd's modes start. */
int aead_init_env(void);
/* Whether this machine can run impl (AUTO: always). */
bool aead_impl_usable(enum aead_impl impl);
/* The backend for full-size packets, and the one used for len bytes. */
enum aead_impl aead_impl(void);
enum aead_impl aead_impl_for(size_t len);
const char *aead_impl_name(enum aead_impl impl);
/* Frees this thread's cipher context, if any. */
void aead_thread_cleanup(void);

/* WireGuard's nonce: 32 zero bits, then the 64-bit counter little-endian.
 * seal writes len + AEAD_TAG_LEN bytes to dst; open reads len (>= tag) and
 * writes len - AEAD_TAG_LEN bytes. open returns false on forgery and then
 * leaves dst zeroed. */
bool aead_seal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
	       uint64_t counter, const uint8_t key[AEAD_KEY_LEN]);
bool aead_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
	       uint64_t counter, const uint8_t key[AEAD_KEY_LEN]);

/* The same with a full 96-bit nonce on a named backend (test vectors, the
 * benchmark). AEAD_IMPL_AUTO means the selected one; a backend this
 * machine cannot run fails (returns false). */
bool aead_seal_ietf(enum aead_impl impl, uint8_t *dst, const uint8_t *src, size_t len,
		    const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN],
		    const uint8_t key[AEAD_KEY_LEN]);
bool aead_open_ietf(enum aead_impl impl, uint8_t *dst, const uint8_t *src, size_t len,
		    const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN],
		    const uint8_t key[AEAD_KEY_LEN]);

/* A prepared key for one direction (seal or open). NULL on ENOMEM.
 * Call after aead_init(); any thread may use it, several at once. */
struct aead_key;
struct aead_key *aead_key_new(const uint8_t key[AEAD_KEY_LEN], bool seal);
/* Wipes and frees; NULL is a no-op. No thread may still be using it. */
void aead_key_free(struct aead_key *k);
/* aead_seal()/aead_open() with a prepared key of the matching direction. */
bool aead_key_seal(struct aead_key *k, uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		   size_t adlen, uint64_t counter);
bool aead_key_open(struct aead_key *k, uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		   size_t adlen, uint64_t counter);

/* Runs of transport messages under one prepared key, in one call: a
 * backend may pipeline them (the AVX2 one stitches each message's last
 * Poly1305 chunk into the next one's first ChaCha20 batch). Each message
 * is what aead_key_seal()/aead_key_open() take: seal len plaintext bytes
 * to len + AEAD_TAG_LEN at dst; open len sealed bytes (tag included) to
 * len - AEAD_TAG_LEN at dst, zeroed on failure. dst may equal src, but
 * messages must not overlap one another. Sets every ok. */
struct aead_msg {
	uint8_t *dst;
	const uint8_t *src;
	size_t len;
	uint64_t counter;
	bool ok;
};
void aead_key_seal_many(struct aead_key *k, struct aead_msg *v, size_t n);
void aead_key_open_many(struct aead_key *k, struct aead_msg *v, size_t n);

bool aead_xseal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		const uint8_t nonce[AEAD_XNONCE_LEN], const uint8_t key[AEAD_KEY_LEN]);
bool aead_xopen(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		const uint8_t nonce[AEAD_XNONCE_LEN], const uint8_t key[AEAD_KEY_LEN]);

#endif
