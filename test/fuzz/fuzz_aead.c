/* Differential fuzzing of the ChaCha20-Poly1305 backends (lib/wg/aead.h):
 * every backend this machine runs (libsodium, OpenSSL, the hand-written
 * AVX2 and AVX-512 code) must seal exactly what libsodium's own
 * crypto_aead_chacha20poly1305_ietf_encrypt seals, open it back, and refuse
 * it with any one bit flipped in the ciphertext, the tag or the AD (leaving
 * the output zeroed) or with a byte cut off. The same through a prepared
 * key with WireGuard's counter nonce, and through runs of messages
 * (aead_key_seal_many/open_many, which the AVX2 backend pipelines).
 *
 * Input: key[32] nonce[12] len[2] adlen[2] flip[4] flags[1] counter[8],
 * then content (little-endian integers; missing bytes are zero). With
 * flags bit 7 len and adlen are 0-65535, else len is taken modulo 2048 and
 * adlen modulo 256: the backends' chunk and block edges are all below 2048,
 * and long messages cost a hundred times the time. The plaintext and AD
 * are the content when it is long enough, else a ChaCha20 stream seeded
 * with the content's BLAKE2b hash, so short inputs reach long messages.
 * flip picks the bit to flip; flags bits 0 and 1 ask for in-place seal
 * and open. Buffers are allocated to their exact sizes, so ASan sees any
 * read or write past a message. */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wg/aead.h"

#define HEADER_LEN (32 + 12 + 2 + 2 + 4 + 1 + 8)
#define FLAG_SEAL_IN_PLACE 0x01
#define FLAG_OPEN_IN_PLACE 0x02
#define FLAG_LONG 0x80

struct input {
	uint8_t key[AEAD_KEY_LEN], nonce[AEAD_NONCE_LEN];
	size_t len, adlen;
	uint32_t flip;
	uint8_t flags;
	uint64_t counter;
	uint8_t *pt, *ad; /* len and adlen bytes */
};

static enum aead_impl impls[4];
static size_t nimpls;

static void init_once(void)
{
	static const enum aead_impl all[] = { AEAD_IMPL_SODIUM, AEAD_IMPL_OPENSSL, AEAD_IMPL_AVX2,
					      AEAD_IMPL_AVX512 };
	static bool done;

	if (done)
		return;
	if (sodium_init() < 0)
		abort();
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (aead_impl_usable(all[i]))
			impls[nimpls++] = all[i];
	if (!nimpls)
		abort();
	done = true;
}

static void __attribute__((noreturn)) fail(enum aead_impl impl, const char *what, const struct input *in)
{
	fprintf(stderr, "fuzz_aead: backend %s: %s (len %zu, adlen %zu)\n", aead_impl_name(impl), what, in->len,
		in->adlen);
	abort();
}

static uint64_t le(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* (libsodium's: not instrumented, so it costs the fuzzer nothing) */
static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || sodium_is_zero(p, n);
}

/* Parses the header; the content becomes pt and ad (caller frees both). */
static bool input_parse(struct input *in, const uint8_t *data, size_t size)
{
	uint8_t h[HEADER_LEN] = { 0 }, seed[randombytes_SEEDBYTES];
	const uint8_t *rest = size > HEADER_LEN ? data + HEADER_LEN : NULL;
	size_t restlen = rest ? size - HEADER_LEN : 0;
	const uint8_t *p = h;

	memcpy(h, data, size < HEADER_LEN ? size : HEADER_LEN);
	memcpy(in->key, p, AEAD_KEY_LEN);
	p += AEAD_KEY_LEN;
	memcpy(in->nonce, p, AEAD_NONCE_LEN);
	p += AEAD_NONCE_LEN;
	in->len = (size_t)le(p, 2);
	in->adlen = (size_t)le(p + 2, 2);
	in->flip = (uint32_t)le(p + 4, 4);
	in->flags = p[8];
	in->counter = le(p + 9, 8);
	if (!(in->flags & FLAG_LONG)) {
		in->len %= 2048;
		in->adlen %= 256;
	}
	in->pt = malloc(in->len);
	in->ad = malloc(in->adlen);
	if ((in->len && !in->pt) || (in->adlen && !in->ad))
		return false;
	if (restlen >= in->len + in->adlen) {
		if (in->len)
			memcpy(in->pt, rest, in->len);
		if (in->adlen)
			memcpy(in->ad, rest + in->len, in->adlen);
		return true;
	}
	crypto_generichash(seed, sizeof(seed), rest, restlen, NULL, 0);
	if (in->len)
		randombytes_buf_deterministic(in->pt, in->len, seed);
	seed[0] ^= 1;
	if (in->adlen)
		randombytes_buf_deterministic(in->ad, in->adlen, seed);
	return true;
}

/* seal and open with a full nonce on one backend, against libsodium's ref. */
static void check_ietf(enum aead_impl impl, const struct input *in, const uint8_t *ref)
{
	size_t sealed = in->len + AEAD_TAG_LEN, where;
	uint8_t *ct = malloc(sealed), *pt = malloc(in->len ? in->len : 1), *ad = malloc(in->adlen ? in->adlen : 1);
	const uint8_t *src;

	if (!ct || !pt || !ad)
		goto out;
	/* seal: to another buffer, or in place */
	src = in->pt;
	if (in->flags & FLAG_SEAL_IN_PLACE) {
		if (in->len)
			memcpy(ct, in->pt, in->len);
		src = ct;
	}
	if (!aead_seal_ietf(impl, ct, src, in->len, in->ad, in->adlen, in->nonce, in->key))
		fail(impl, "seal failed", in);
	if (memcmp(ct, ref, sealed))
		fail(impl, "sealed other bytes than libsodium", in);
	/* open: to another buffer, or in place */
	if (in->flags & FLAG_OPEN_IN_PLACE) {
		if (!aead_open_ietf(impl, ct, ct, sealed, in->ad, in->adlen, in->nonce, in->key))
			fail(impl, "open (in place) refused libsodium's message", in);
		if (in->len && memcmp(ct, in->pt, in->len))
			fail(impl, "opened (in place) other bytes than were sealed", in);
		memcpy(ct, ref, sealed);
	} else {
		if (!aead_open_ietf(impl, pt, ct, sealed, in->ad, in->adlen, in->nonce, in->key))
			fail(impl, "open refused libsodium's message", in);
		if (in->len && memcmp(pt, in->pt, in->len))
			fail(impl, "opened other bytes than were sealed", in);
	}
	/* a forgery: one bit flipped in the ciphertext, the tag or the AD */
	if (in->adlen)
		memcpy(ad, in->ad, in->adlen);
	where = in->flip % (sealed + in->adlen);
	if (where < sealed)
		ct[where] ^= (uint8_t)(1u << (in->flip >> 29));
	else
		ad[where - sealed] ^= (uint8_t)(1u << (in->flip >> 29));
	memset(pt, 0xa5, in->len);
	if (aead_open_ietf(impl, pt, ct, sealed, ad, in->adlen, in->nonce, in->key))
		fail(impl, "opened a forgery", in);
	if (!all_zero(pt, in->len))
		fail(impl, "left plaintext of a forgery in dst", in);
	/* a message a byte short */
	memcpy(ct, ref, sealed);
	if (aead_open_ietf(impl, pt, ct, sealed - 1, in->ad, in->adlen, in->nonce, in->key))
		fail(impl, "opened a truncated message", in);
out:
	free(ct);
	free(pt);
	free(ad);
}

/* The WireGuard nonce for counter: 32 zero bits, the counter little-endian. */
static void counter_nonce_of(uint8_t nonce[AEAD_NONCE_LEN], uint64_t counter)
{
	memset(nonce, 0, 4);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = (uint8_t)(counter >> (8 * i));
}

/* Prepared keys with the counter nonce, and runs of three messages cut
 * from the plaintext (no AD, as transport data), on the backend that
 * aead_init(impl) selects. */
static void check_keyed(enum aead_impl impl, const struct input *in)
{
	size_t sealed = in->len + AEAD_TAG_LEN, cut[4], off = 0;
	uint8_t nonce[AEAD_NONCE_LEN], *ref = malloc(sealed), *ct = malloc(sealed), *pt = malloc(in->len ? in->len : 1);
	uint8_t *run = malloc(in->len + 3 * AEAD_TAG_LEN), *runref = malloc(in->len + 3 * AEAD_TAG_LEN);
	struct aead_key *enc = NULL, *dec = NULL;
	struct aead_msg v[3];

	if (!ref || !ct || !pt || !run || !runref)
		goto out;
	if (aead_init(impl))
		fail(impl, "aead_init refused a usable backend", in);
	enc = aead_key_new(in->key, true);
	dec = aead_key_new(in->key, false);
	if (!enc || !dec)
		goto out;
	counter_nonce_of(nonce, in->counter);
	crypto_aead_chacha20poly1305_ietf_encrypt(ref, NULL, in->pt, in->len, in->ad, in->adlen, NULL, nonce,
						  in->key);
	if (!aead_key_seal(enc, ct, in->pt, in->len, in->ad, in->adlen, in->counter) || memcmp(ct, ref, sealed))
		fail(impl, "prepared key sealed other bytes than libsodium", in);
	if (!aead_key_open(dec, pt, ct, sealed, in->ad, in->adlen, in->counter) ||
	    (in->len && memcmp(pt, in->pt, in->len)))
		fail(impl, "prepared key did not open its message", in);
	ct[in->flip % sealed] ^= (uint8_t)(1u << (in->flip >> 29));
	if (aead_key_open(dec, pt, ct, sealed, in->ad, in->adlen, in->counter) || !all_zero(pt, in->len))
		fail(impl, "prepared key opened a forgery", in);

	/* Three messages: lengths cut at two points the flip word picks. */
	cut[0] = 0;
	cut[1] = in->len ? (in->flip & 0xffff) % (in->len + 1) : 0;
	cut[2] = in->len ? (in->flip >> 16) % (in->len + 1) : 0;
	if (cut[1] > cut[2]) {
		size_t t = cut[1];

		cut[1] = cut[2];
		cut[2] = t;
	}
	cut[3] = in->len;
	for (int i = 0; i < 3; i++) {
		size_t n = cut[i + 1] - cut[i];

		counter_nonce_of(nonce, in->counter + (uint64_t)i);
		crypto_aead_chacha20poly1305_ietf_encrypt(runref + off, NULL, in->pt + cut[i], n, NULL, 0, NULL, nonce,
							  in->key);
		v[i] = (struct aead_msg){ .dst = run + off, .src = in->pt + cut[i], .len = n,
					  .counter = in->counter + (uint64_t)i };
		off += n + AEAD_TAG_LEN;
	}
	aead_key_seal_many(enc, v, 3);
	for (int i = 0; i < 3; i++)
		if (!v[i].ok)
			fail(impl, "seal_many failed", in);
	if (memcmp(run, runref, off))
		fail(impl, "seal_many sealed other bytes than libsodium", in);
	/* Open them in place, the middle one forged. */
	run[cut[1] + AEAD_TAG_LEN + (in->flip >> 8) % (cut[2] - cut[1] + AEAD_TAG_LEN)] ^= 0x40;
	off = 0;
	for (int i = 0; i < 3; i++) {
		size_t n = cut[i + 1] - cut[i];

		v[i] = (struct aead_msg){ .dst = run + off, .src = run + off, .len = n + AEAD_TAG_LEN,
					  .counter = in->counter + (uint64_t)i };
		off += n + AEAD_TAG_LEN;
	}
	aead_key_open_many(dec, v, 3);
	if (!v[0].ok || v[1].ok || !v[2].ok)
		fail(impl, "open_many judged a message wrongly", in);
	if (memcmp(v[0].dst, in->pt, cut[1]) || memcmp(v[2].dst, in->pt + cut[2], cut[3] - cut[2]) ||
	    !all_zero(v[1].dst, cut[2] - cut[1]))
		fail(impl, "open_many opened other bytes than were sealed", in);
out:
	aead_key_free(enc);
	aead_key_free(dec);
	free(ref);
	free(ct);
	free(pt);
	free(run);
	free(runref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { 0 };
	uint8_t *ref = NULL;

	init_once();
	if (!input_parse(&in, data, size))
		goto out;
	ref = malloc(in.len + AEAD_TAG_LEN);
	if (!ref)
		goto out;
	crypto_aead_chacha20poly1305_ietf_encrypt(ref, NULL, in.pt, in.len, in.ad, in.adlen, NULL, in.nonce, in.key);
	for (size_t i = 0; i < nimpls; i++) {
		check_ietf(impls[i], &in, ref);
		check_keyed(impls[i], &in);
	}
	aead_thread_cleanup();
out:
	free(ref);
	free(in.pt);
	free(in.ad);
	return 0;
}
