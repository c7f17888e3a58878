/* ChaCha20-Poly1305 throughput per backend, in place, as the data path
 * runs it: one key, counter nonce, 16-byte tag after the payload.
 *
 *   bench_aead [seconds-per-case]   (default 0.5)
 *
 * Prints a table of MB/s (10^6 bytes of plaintext per second) for seal and
 * open at several packet sizes, then the same for runs of RUN 1420-byte
 * packets under one prepared key (aead_key_seal_many/open_many: how the
 * data path calls it), then which backend aead_init(AUTO) picks. */
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

#define RUN 32

/* Runs of RUN packets of len bytes, sealed or opened with the batch calls
 * on impl's prepared key; MB/s and ns per packet. */
static double run_many(enum aead_impl impl, size_t len, bool seal, double secs, double *ns_per_pkt)
{
	static uint8_t bufs[RUN][1420 + AEAD_TAG_LEN], sealed[RUN][1420 + AEAD_TAG_LEN];
	struct aead_msg v[RUN];
	uint8_t key[AEAD_KEY_LEN];
	struct aead_key *k;
	double start, elapsed;
	uint64_t n = 0, ctr = 0;

	if (len > 1420 || aead_init(impl) != 0)
		return -1;
	randombytes_buf(key, sizeof(key));
	if (!(k = aead_key_new(key, seal)))
		return -1;
	for (size_t i = 0; i < RUN; i++) {
		randombytes_buf(bufs[i], len);
		if (!aead_seal(sealed[i], bufs[i], len, NULL, 0, i, key)) {
			aead_key_free(k);
			return -1;
		}
	}
	start = now_s();
	do {
		for (size_t i = 0; i < RUN; i++) {
			if (!seal)
				memcpy(bufs[i], sealed[i], len + AEAD_TAG_LEN);
			v[i] = (struct aead_msg){ .dst = bufs[i],
						  .src = bufs[i],
						  .len = seal ? len : len + AEAD_TAG_LEN,
						  .counter = seal ? ctr++ : i };
		}
		if (seal)
			aead_key_seal_many(k, v, RUN);
		else
			aead_key_open_many(k, v, RUN);
		for (size_t i = 0; i < RUN; i++)
			if (!v[i].ok) {
				aead_key_free(k);
				return -1;
			}
		n += RUN;
		elapsed = now_s() - start;
	} while (elapsed < secs);
	aead_key_free(k);
	*ns_per_pkt = elapsed * 1e9 / (double)n;
	return (double)n * (double)len / elapsed / 1e6;
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = { 64, 576, 1420, 8192, 65536 };
	static const enum aead_impl impls[] = { AEAD_IMPL_AVX512, AEAD_IMPL_AVX2, AEAD_IMPL_OPENSSL, AEAD_IMPL_SODIUM };
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
	printf("runs of %d x 1420 bytes under one key (the data path; open includes copying the sealed packets in):\n",
	       RUN);
	for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
		double ns_seal = 0, ns_open = 0, seal, open;

		if (!aead_impl_usable(impls[i]))
			continue;
		seal = run_many(impls[i], 1420, true, secs, &ns_seal);
		open = run_many(impls[i], 1420, false, secs, &ns_open);
		printf("%-10s %7s %12.0f %12.0f   (%.0f / %.0f ns per packet)\n", aead_impl_name(impls[i]), "run",
		       seal, open, ns_seal, ns_open);
	}
	if (aead_init(AEAD_IMPL_AUTO) != 0)
		return 1;
	printf("aead_init(AUTO) picks: %s for 1420 bytes, %s for 128 bytes\n", aead_impl_name(aead_impl()),
	       aead_impl_name(aead_impl_for(128)));
	aead_thread_cleanup();
	return 0;
}
