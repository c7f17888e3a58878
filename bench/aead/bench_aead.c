/* ChaCha20-Poly1305 throughput per backend, in place, as the data path
 * runs it: one key, counter nonce, 16-byte tag after the payload.
 *
 *   bench_aead [seconds-per-case]   (default 0.5)
 *
 * Prints a table of MB/s (10^6 bytes of plaintext per second) for seal and
 * open at several packet sizes, then which backend aead_init(AUTO) picks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "wg/aead.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* seal runs in place; open reads a sealed packet into a second buffer
 * (in place would leave plaintext behind for the next round). */
static double run(enum aead_impl impl, size_t len, bool seal, double secs)
{
	static uint8_t buf[65536 + AEAD_TAG_LEN], out[65536];
	uint8_t key[AEAD_KEY_LEN], nonce[AEAD_NONCE_LEN] = { 0 };
	double start, elapsed;
	uint64_t n = 0;

	randombytes_buf(key, sizeof(key));
	randombytes_buf(buf, len);
	if (!seal && !aead_seal_ietf(impl, buf, buf, len, NULL, 0, nonce, key))
		return -1;
	start = now_s();
	do {
		for (int i = 0; i < 256; i++, n++) {
			bool ok = seal ? aead_seal_ietf(impl, buf, buf, len, NULL, 0, nonce, key)
				       : aead_open_ietf(impl, out, buf, len + AEAD_TAG_LEN, NULL, 0, nonce, key);

			if (!ok)
				return -1;
		}
		elapsed = now_s() - start;
	} while (elapsed < secs);
	return (double)n * (double)len / elapsed / 1e6;
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = { 64, 576, 1420, 8192, 65536 };
	static const enum aead_impl impls[] = { AEAD_IMPL_AVX2, AEAD_IMPL_OPENSSL, AEAD_IMPL_SODIUM };
	double secs = argc > 1 ? atof(argv[1]) : 0.5;

	if (aead_init(AEAD_IMPL_SODIUM) != 0) {
		fprintf(stderr, "bench_aead: libsodium unusable\n");
		return 1;
	}
	printf("%-10s %7s %12s %12s\n", "backend", "bytes", "seal MB/s", "open MB/s");
	for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
		if (!aead_impl_usable(impls[i])) {
			printf("%-10s (not usable on this machine)\n", aead_impl_name(impls[i]));
			continue;
		}
		for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++)
			printf("%-10s %7zu %12.0f %12.0f\n", aead_impl_name(impls[i]), sizes[j],
			       run(impls[i], sizes[j], true, secs), run(impls[i], sizes[j], false, secs));
	}
	if (aead_init(AEAD_IMPL_AUTO) != 0)
		return 1;
	printf("aead_init(AUTO) picks: %s for 1420 bytes, %s for 128 bytes\n", aead_impl_name(aead_impl()),
	       aead_impl_name(aead_impl_for(128)));
	aead_thread_cleanup();
	return 0;
}
