/* ChaCha20-Poly1305 on every backend this machine runs (RFC 8439 section
 * 2.8.2), all three agreeing at every length up to a few chunks, the
 * WireGuard counter nonce, in-place operation, forgeries, prepared keys
 * (also from many threads at once), XChaCha20. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "wg/aead.h"

static const char rfc_plain[] =
	"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
static const uint8_t rfc_aad[] = { 0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7 };
static const uint8_t rfc_nonce[] = { 0x07, 0x00, 0x00, 0x00, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47 };
static const char rfc_sealed[] =
	"\xd3\x1a\x8d\x34\x64\x8e\x60\xdb\x7b\x86\xaf\xbc\x53\xef\x7e\xc2\xa4\xad\xed\x51\x29\x6e\x08\xfe"
	"\xa9\xe2\xb5\xa7\x36\xee\x62\xd6\x3d\xbe\xa4\x5e\x8c\xa9\x67\x12\x82\xfa\xfb\x69\xda\x92\x72\x8b"
	"\x1a\x71\xde\x0a\x9e\x06\x0b\x29\x05\xd6\xa5\xb6\x7e\xcd\x3b\x36\x92\xdd\xbd\x7f\x2d\x77\x8b\x8c"
	"\x98\x03\xae\xe3\x28\x09\x1b\x58\xfa\xb3\x24\xe4\xfa\xd6\x75\x94\x55\x85\x80\x8b\x48\x31\xd7\xbc"
	"\x3f\xf4\xde\xf0\x8e\x4b\x7a\x9d\xe5\x76\xd2\x65\x86\xce\xc6\x4b\x61\x16"
	"\x1a\xe1\x0b\x59\x4f\x09\xe2\x6a\x7e\x90\x2e\xcb\xd0\x60\x06\x91";

/* The backends under test: those this machine can run (setup fills it;
 * the AVX2 and AVX-512 ones must be among them wherever the CPU can run
 * them). */
static enum aead_impl impls[4];
static size_t nimpls;

static void rfc_key(uint8_t key[32])
{
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(0x80 + i);
}

static int setup(void **state)
{
	static const enum aead_impl all[] = { AEAD_IMPL_SODIUM, AEAD_IMPL_OPENSSL, AEAD_IMPL_AVX2,
					      AEAD_IMPL_AVX512 };

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (aead_impl_usable(all[i]))
			impls[nimpls++] = all[i];
		else
			print_message("backend %s: not usable on this machine\n", aead_impl_name(all[i]));
	}
	return aead_init(AEAD_IMPL_SODIUM);
}

/* The AVX2 and AVX-512 backends are there wherever they can run: their
 * self-checks against libsodium passed (a failing one would hide behind
 * the others). */
static void test_x86_present(void **state)
{
#if defined(__x86_64__)
	bool avx2, avx512;

	__builtin_cpu_init();
	avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");
	avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
	assert_int_equal(aead_impl_usable(AEAD_IMPL_AVX2), avx2);
	assert_int_equal(aead_impl_usable(AEAD_IMPL_AVX512), avx512);
	print_message("avx2 %s, avx512 %s\n", avx2 ? "here" : "absent", avx512 ? "here" : "absent");
#else
	assert_false(aead_impl_usable(AEAD_IMPL_AVX2));
	assert_false(aead_impl_usable(AEAD_IMPL_AVX512));
#endif
	assert_int_equal(aead_init(AEAD_IMPL_SODIUM), 0);
}

/* Every length from 0 to 1600 (the chunk and block boundaries of each
 * backend: 16, 64, 448, 512...) with AD of 0-33 bytes, in place and not:
 * each backend seals what libsodium seals and opens it back. */
static void test_every_length(void **state)
{
	static uint8_t p[1601], ref[1601 + 16], a[1601 + 16];
	uint8_t key[32], nonce[12], ad[33];

	randombytes_buf(p, sizeof(p));
	randombytes_buf(key, sizeof(key));
	randombytes_buf(nonce, sizeof(nonce));
	randombytes_buf(ad, sizeof(ad));
	for (size_t len = 0; len <= 1600; len++) {
		size_t adlen = len % 34;

		assert_true(aead_seal_ietf(AEAD_IMPL_SODIUM, ref, p, len, ad, adlen, nonce, key));
		for (size_t i = 0; i < nimpls; i++) {
			if (len % 2) {
				memcpy(a, p, len);
				assert_true(aead_seal_ietf(impls[i], a, a, len, ad, adlen, nonce, key));
			} else {
				assert_true(aead_seal_ietf(impls[i], a, p, len, ad, adlen, nonce, key));
			}
			assert_memory_equal(a, ref, len + 16);
			assert_true(aead_open_ietf(impls[i], a, a, len + 16, ad, adlen, nonce, key));
			assert_true(len == 0 || memcmp(a, p, len) == 0);
			/* the last byte of the ciphertext and of the tag */
			memcpy(a, ref, len + 16);
			a[len ? len - 1 : 0] ^= 0x80;
			assert_false(aead_open_ietf(impls[i], a, a, len + 16, ad, adlen, nonce, key));
			memcpy(a, ref, len + 16);
			a[len + 15] ^= 0x01;
			assert_false(aead_open_ietf(impls[i], a, a, len + 16, ad, adlen, nonce, key));
		}
	}
}

static int teardown(void **state)
{
	aead_thread_cleanup();
	return 0;
}

static void test_rfc8439_vector(void **state)
{
	size_t len = sizeof(rfc_plain) - 1;
	uint8_t key[32], buf[256], out[256];

	assert_int_equal(len, 114);
	rfc_key(key);
	for (size_t i = 0; i < nimpls; i++) {
		/* separate buffers */
		assert_true(aead_seal_ietf(impls[i], buf, (const uint8_t *)rfc_plain, len, rfc_aad, sizeof(rfc_aad),
					   rfc_nonce, key));
		assert_memory_equal(buf, rfc_sealed, len + 16);
		assert_true(aead_open_ietf(impls[i], out, buf, len + 16, rfc_aad, sizeof(rfc_aad), rfc_nonce, key));
		assert_memory_equal(out, rfc_plain, len);
		/* in place */
		memcpy(buf, rfc_plain, len);
		assert_true(aead_seal_ietf(impls[i], buf, buf, len, rfc_aad, sizeof(rfc_aad), rfc_nonce, key));
		assert_memory_equal(buf, rfc_sealed, len + 16);
		assert_true(aead_open_ietf(impls[i], buf, buf, len + 16, rfc_aad, sizeof(rfc_aad), rfc_nonce, key));
		assert_memory_equal(buf, rfc_plain, len);
	}
}

/* A flipped bit anywhere (ciphertext, tag, AD) or a wrong nonce fails and
 * leaves no plaintext behind. */
static void test_forgery(void **state)
{
	size_t len = sizeof(rfc_plain) - 1;
	uint8_t key[32], buf[256], out[256], aad[sizeof(rfc_aad)], nonce[12];

	rfc_key(key);
	for (size_t i = 0; i < nimpls; i++) {
		for (size_t pos = 0; pos < len + 16; pos++) {
			memcpy(buf, rfc_sealed, len + 16);
			buf[pos] ^= 0x01;
			memset(out, 0xAA, sizeof(out));
			assert_false(aead_open_ietf(impls[i], out, buf, len + 16, rfc_aad, sizeof(rfc_aad), rfc_nonce, key));
			for (size_t j = 0; j < len; j++)
				assert_int_equal(out[j], 0);
		}
		memcpy(aad, rfc_aad, sizeof(aad));
		aad[3] ^= 0x80;
		assert_false(aead_open_ietf(impls[i], out, (const uint8_t *)rfc_sealed, len + 16, aad, sizeof(aad),
					    rfc_nonce, key));
		memcpy(nonce, rfc_nonce, sizeof(nonce));
		nonce[0] = 0;
		assert_false(aead_open_ietf(impls[i], out, (const uint8_t *)rfc_sealed, len + 16, rfc_aad,
					    sizeof(rfc_aad), nonce, key));
		assert_false(aead_open_ietf(impls[i], out, (const uint8_t *)rfc_sealed, 15, NULL, 0, rfc_nonce, key));
	}
}

/* WireGuard's nonce is 4 zero bytes and the counter little-endian. */
static void test_counter_nonce(void **state)
{
	static const uint8_t nonce[12] = { 0, 0, 0, 0, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07 };
	uint8_t key[32], a[64], b[64], p[48];

	rfc_key(key);
	memset(p, 0x5A, sizeof(p));
	for (size_t i = 0; i < nimpls; i++) {
		assert_int_equal(aead_init(impls[i]), 0);
		assert_int_equal(aead_impl(), impls[i]);
		assert_true(aead_seal(a, p, sizeof(p), NULL, 0, 0x0706050403020100ULL, key));
		assert_true(aead_seal_ietf(AEAD_IMPL_SODIUM, b, p, sizeof(p), NULL, 0, nonce, key));
		assert_memory_equal(a, b, sizeof(p) + 16);
		assert_true(aead_open(b, a, sizeof(p) + 16, NULL, 0, 0x0706050403020100ULL, key));
		assert_memory_equal(b, p, sizeof(p));
		assert_false(aead_open(b, a, sizeof(p) + 16, NULL, 0, 0x0706050403020101ULL, key));
	}
	assert_int_equal(aead_init(AEAD_IMPL_SODIUM), 0);
}

/* The backends agree on every length around block and tag boundaries,
 * including empty messages (WireGuard's keepalives and encrypted_nothing). */
static void test_backends_agree(void **state)
{
	static const size_t lens[] = { 0, 1, 15, 16, 17, 63, 64, 65, 255, 256, 1420, 1500, 4096, 65535 };
	static uint8_t p[65536], a[65536 + 16], b[65536 + 16];
	uint8_t key[32], nonce[12], ad[32];

	randombytes_buf(p, sizeof(p));
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		randombytes_buf(key, sizeof(key));
		randombytes_buf(nonce, sizeof(nonce));
		randombytes_buf(ad, sizeof(ad));
		assert_true(aead_seal_ietf(AEAD_IMPL_SODIUM, a, p, lens[i], ad, i % 2 ? sizeof(ad) : 0, nonce, key));
		for (size_t k = 0; k < nimpls; k++) {
			assert_true(aead_seal_ietf(impls[k], b, p, lens[i], ad, i % 2 ? sizeof(ad) : 0, nonce, key));
			assert_memory_equal(a, b, lens[i] + 16);
			assert_true(aead_open_ietf(impls[k], b, a, lens[i] + 16, ad, i % 2 ? sizeof(ad) : 0, nonce,
						   key));
			assert_true(lens[i] == 0 || memcmp(b, p, lens[i]) == 0);
		}
	}
}

/* Prepared keys compute what the per-call functions do, on each backend
 * and with AUTO's split between small and full-size packets, and refuse
 * forgeries and the other direction's key. */
static void test_prepared_key(void **state)
{
	static const enum aead_impl sel[] = { AEAD_IMPL_SODIUM, AEAD_IMPL_OPENSSL, AEAD_IMPL_AVX2, AEAD_IMPL_AVX512,
					      AEAD_IMPL_AUTO };
	static const size_t lens[] = { 0, 1, 16, 64, 1023, 1024, 1420, 4096 };
	static uint8_t p[4096], a[4096 + 16], b[4096 + 16];
	uint8_t key[32];

	randombytes_buf(p, sizeof(p));
	for (size_t s = 0; s < sizeof(sel) / sizeof(sel[0]); s++) {
		struct aead_key *enc, *dec;

		if (!aead_impl_usable(sel[s]))
			continue;
		assert_int_equal(aead_init(sel[s]), 0);
		randombytes_buf(key, sizeof(key));
		enc = aead_key_new(key, true);
		dec = aead_key_new(key, false);
		assert_non_null(enc);
		assert_non_null(dec);
		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			uint64_t ctr = 0x0102030405060708ULL + i;

			assert_true(aead_key_seal(enc, a, p, lens[i], NULL, 0, ctr));
			assert_true(aead_seal(b, p, lens[i], NULL, 0, ctr, key));
			assert_memory_equal(a, b, lens[i] + 16);
			/* in place, twice: the prepared context is reused */
			for (int round = 0; round < 2; round++) {
				memcpy(b, a, lens[i] + 16);
				assert_true(aead_key_open(dec, b, b, lens[i] + 16, NULL, 0, ctr));
				assert_true(lens[i] == 0 || memcmp(b, p, lens[i]) == 0);
			}
			assert_false(aead_key_open(dec, b, a, lens[i] + 16, NULL, 0, ctr + 1));
			a[lens[i]] ^= 1;
			assert_false(aead_key_open(dec, b, a, lens[i] + 16, NULL, 0, ctr));
			if (lens[i]) {
				static const uint8_t zero[4096];
				assert_memory_equal(b, zero, lens[i]);
			}
			assert_false(aead_key_open(dec, b, a, 15, NULL, 0, ctr));
		}
		aead_key_free(enc);
		aead_key_free(dec);
	}
	aead_key_free(NULL);
	assert_int_equal(aead_init(AEAD_IMPL_SODIUM), 0);
}

/* Runs of messages (aead_key_seal_many/open_many) compute what one call
 * per message does, on every backend: lengths that cross every chunk
 * boundary mixed in one run, in place, with one forged message in the
 * middle that alone fails and is zeroed, and too-short sealed messages. */
static void test_runs(void **state)
{
	enum { N = 40 };
	static uint8_t p[N][2100], sealed[N][2100 + 16], buf[N][2100 + 16];
	static const uint8_t zero[2100];
	struct aead_msg v[N];
	uint8_t key[32];

	for (size_t s = 0; s < nimpls + 1; s++) {
		enum aead_impl impl = s < nimpls ? impls[s] : AEAD_IMPL_AUTO;
		struct aead_key *enc, *dec;
		size_t len[N];

		assert_int_equal(aead_init(impl), 0);
		randombytes_buf(key, sizeof(key));
		enc = aead_key_new(key, true);
		dec = aead_key_new(key, false);
		assert_non_null(enc);
		assert_non_null(dec);
		for (size_t i = 0; i < N; i++) {
			len[i] = i < 8 ? (size_t[]){ 0, 1, 64, 447, 448, 449, 512, 1420 }[i] : randombytes_uniform(2100);
			randombytes_buf(p[i], len[i]);
			memcpy(buf[i], p[i], len[i]);
			v[i] = (struct aead_msg){ .dst = buf[i], .src = buf[i], .len = len[i], .counter = 1000 + i };
		}
		aead_key_seal_many(enc, v, N);
		for (size_t i = 0; i < N; i++) {
			assert_true(v[i].ok);
			assert_true(aead_seal(sealed[i], p[i], len[i], NULL, 0, 1000 + i, key));
			assert_memory_equal(buf[i], sealed[i], len[i] + 16);
			v[i].len = len[i] + 16;
		}
		buf[N / 2][len[N / 2] + 3] ^= 0x10; /* its tag */
		buf[N / 2 + 1][0] ^= 0x01;
		v[3].len = 15;
		aead_key_open_many(dec, v, N);
		for (size_t i = 0; i < N; i++) {
			if (i == 3 || i == N / 2 || i == N / 2 + 1) {
				assert_false(v[i].ok);
				if (i != 3)
					assert_memory_equal(buf[i], zero, len[i]);
				continue;
			}
			assert_true(v[i].ok);
			assert_true(len[i] == 0 || memcmp(buf[i], p[i], len[i]) == 0);
		}
		aead_key_free(enc);
		aead_key_free(dec);
	}
	assert_int_equal(aead_init(AEAD_IMPL_SODIUM), 0);
}

/* More threads than a prepared key has contexts, sealing and opening
 * with one key pair at once: every packet must still come out right. */
#define KEY_THREADS 8

struct key_worker {
	struct aead_key *enc, *dec;
	const uint8_t *key;
	unsigned id;
	bool ok;
};

static void *key_worker(void *arg)
{
	struct key_worker *w = arg;
	uint8_t p[1420], a[1436], b[1436];

	w->ok = true;
	for (unsigned i = 0; i < 2000 && w->ok; i++) {
		uint64_t ctr = (uint64_t)w->id << 32 | i;

		memset(p, (int)(w->id + i), sizeof(p));
		w->ok = aead_key_seal(w->enc, a, p, sizeof(p), NULL, 0, ctr) &&
			aead_seal(b, p, sizeof(p), NULL, 0, ctr, w->key) && !memcmp(a, b, sizeof(a)) &&
			aead_key_open(w->dec, b, a, sizeof(a), NULL, 0, ctr) && !memcmp(b, p, sizeof(p));
	}
	aead_thread_cleanup();
	return NULL;
}

static void test_prepared_key_threads(void **state)
{
	struct key_worker w[KEY_THREADS];
	pthread_t t[KEY_THREADS];
	uint8_t key[32];
	struct aead_key *enc, *dec;

	assert_int_equal(aead_init(AEAD_IMPL_OPENSSL), 0);
	randombytes_buf(key, sizeof(key));
	enc = aead_key_new(key, true);
	dec = aead_key_new(key, false);
	assert_non_null(enc);
	assert_non_null(dec);
	for (unsigned i = 0; i < KEY_THREADS; i++) {
		w[i] = (struct key_worker){ .enc = enc, .dec = dec, .key = key, .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, key_worker, &w[i]), 0);
	}
	for (unsigned i = 0; i < KEY_THREADS; i++) {
		pthread_join(t[i], NULL);
		assert_true(w[i].ok);
	}
	aead_key_free(enc);
	aead_key_free(dec);
	assert_int_equal(aead_init(AEAD_IMPL_SODIUM), 0);
}

static void test_xchacha(void **state)
{
	uint8_t key[32], nonce[24], ad[16], cookie[16], sealed[32], out[16];

	randombytes_buf(key, sizeof(key));
	randombytes_buf(nonce, sizeof(nonce));
	randombytes_buf(ad, sizeof(ad));
	randombytes_buf(cookie, sizeof(cookie));
	assert_true(aead_xseal(sealed, cookie, 16, ad, 16, nonce, key));
	assert_true(aead_xopen(out, sealed, 32, ad, 16, nonce, key));
	assert_memory_equal(out, cookie, 16);
	/* matches libsodium's combined mode byte for byte */
	{
		uint8_t ref[32];
		unsigned long long rlen;

		crypto_aead_xchacha20poly1305_ietf_encrypt(ref, &rlen, cookie, 16, ad, 16, NULL, nonce, key);
		assert_int_equal(rlen, 32);
		assert_memory_equal(ref, sealed, 32);
	}
	sealed[31] ^= 1;
	assert_false(aead_xopen(out, sealed, 32, ad, 16, nonce, key));
	sealed[31] ^= 1;
	nonce[23] ^= 1;
	assert_false(aead_xopen(out, sealed, 32, ad, 16, nonce, key));
	assert_false(aead_xopen(out, sealed, 10, ad, 16, nonce, key));
}

static void test_init(void **state)
{
	assert_int_equal(aead_init(AEAD_IMPL_AUTO), 0);
	assert_true(aead_impl_usable(aead_impl()) && aead_impl() != AEAD_IMPL_AUTO);
	assert_true(aead_impl_usable(aead_impl_for(64)) && aead_impl_for(64) != AEAD_IMPL_AUTO);
	assert_int_equal(aead_impl_for(1420), aead_impl());
	assert_int_equal(aead_init(AEAD_IMPL_OPENSSL), 0);
	assert_int_equal(aead_impl_for(64), AEAD_IMPL_OPENSSL);
	assert_int_equal(aead_init((enum aead_impl)42), -22);
	assert_string_equal(aead_impl_name(AEAD_IMPL_OPENSSL), "openssl");
	assert_string_equal(aead_impl_name(AEAD_IMPL_SODIUM), "libsodium");
	assert_string_equal(aead_impl_name(AEAD_IMPL_AVX2), "avx2");
	assert_string_equal(aead_impl_name(AEAD_IMPL_AVX512), "avx512");
	assert_false(aead_impl_usable((enum aead_impl)42));
	/* by name, as KNIT_AEAD gives it */
	assert_int_equal(aead_init_named("openssl"), 0);
	assert_int_equal(aead_impl(), AEAD_IMPL_OPENSSL);
	assert_int_equal(aead_init_named("libsodium"), 0);
	assert_int_equal(aead_impl(), AEAD_IMPL_SODIUM);
	for (size_t i = 0; i < nimpls; i++) {
		assert_int_equal(aead_init_named(aead_impl_name(impls[i])), 0);
		assert_int_equal(aead_impl(), impls[i]);
		assert_int_equal(aead_impl_for(64), impls[i]);
	}
	assert_int_equal(aead_init_named(NULL), 0);
	assert_true(aead_impl() != AEAD_IMPL_AUTO);
	assert_int_equal(aead_init_named("auto"), 0);
	assert_int_equal(aead_init_named(""), 0);
	assert_int_equal(aead_init_named("AVX2"), -22);
	assert_int_equal(aead_init_named("chacha"), -22);
	if (!aead_impl_usable(AEAD_IMPL_AVX512))
		assert_int_equal(aead_init_named("avx512"), -38);
	/* from the environment, as knitd starts */
	assert_int_equal(setenv("KNIT_AEAD", "openssl", 1), 0);
	assert_int_equal(aead_init_env(), 0);
	assert_int_equal(aead_impl(), AEAD_IMPL_OPENSSL);
	assert_int_equal(setenv("KNIT_AEAD", "bogus", 1), 0);
	assert_int_equal(aead_init_env(), -22);
	assert_int_equal(aead_impl(), AEAD_IMPL_OPENSSL);
	assert_int_equal(unsetenv("KNIT_AEAD"), 0);
	assert_int_equal(aead_init_env(), 0);
	assert_true(aead_impl() != AEAD_IMPL_AUTO);
	assert_int_equal(aead_init(AEAD_IMPL_SODIUM), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_x86_present),
		cmocka_unit_test(test_rfc8439_vector),
		cmocka_unit_test(test_every_length),
		cmocka_unit_test(test_forgery),
		cmocka_unit_test(test_counter_nonce),
		cmocka_unit_test(test_backends_agree),
		cmocka_unit_test(test_prepared_key),
		cmocka_unit_test(test_prepared_key_threads),
		cmocka_unit_test(test_runs),
		cmocka_unit_test(test_xchacha),
		cmocka_unit_test(test_init),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
