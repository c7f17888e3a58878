/* ChaCha20-Poly1305 (RFC 8439) written for x86-64 with AVX2.
 *
 * Why a third backend: on CPUs without AVX-512 (AMD before Zen 4, most
 * virtual machines) OpenSSL runs ChaCha20 and Poly1305 one after the other,
 * and per packet spends about a third of a 1420-byte seal on setup. Here:
 *
 *  - ChaCha20 makes eight blocks at once, one 32-bit word of all eight per
 *    ymm register, and the Poly1305 key comes out of the first batch with
 *    seven blocks of keystream (no separate block 0).
 *  - Poly1305 runs on the integer units in radix 2^64 (three limbs, 64x64
 *    products), which the vector units leave idle.
 *  - The two are stitched: while the vector units make the keystream for
 *    one 512-byte chunk, the integer units authenticate the previous chunk
 *    between the double rounds, and an out-of-order core runs both at once.
 *    Sealing authenticates ciphertext it has just written; opening
 *    authenticates the ciphertext before the keystream is XORed over it
 *    (so in-place works), which lags the same one chunk.
 *
 * Everything is constant-time (no branch or index on secret data), and the
 * keystream and Poly1305 state on the stack are wiped before returning.
 * available() checks the CPU and compares against libsodium before the
 * backend may be chosen. */
#include "wg/aead-backend.h"

#include <sodium.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#define TARGET __attribute__((target("avx2,bmi2")))

typedef unsigned __int128 u128;

static inline uint64_t le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static inline uint32_t le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* ---- Poly1305, radix 2^64 ---------------------------------------------
 * h = h0 + h1*2^64 + h2*2^128 with h2 small; r = r0 + r1*2^64 clamped so
 * that r1 is a multiple of 4, which lets 2^128*r1 fold to s1 = 5*r1/4
 * (2^130 = 5 mod p). */
struct poly {
	uint64_t r0, r1, s1;
	uint64_t h0, h1, h2;
	uint64_t pad0, pad1;
};

static inline void poly_init(struct poly *p, const uint8_t key[32])
{
	p->r0 = le64(key) & 0x0ffffffc0fffffffULL;
	p->r1 = le64(key + 8) & 0x0ffffffc0ffffffcULL;
	p->s1 = p->r1 + (p->r1 >> 2);
	p->h0 = p->h1 = p->h2 = 0;
	p->pad0 = le64(key + 16);
	p->pad1 = le64(key + 24);
}

/* h = (h + m + 2^128) * r, partly reduced, for one 16-byte block, on
 * limbs the caller keeps in registers:
 *   d0 = h0*r0 + h1*s1, d1 = h0*r1 + h1*r0 + h2*s1, d2 = h2*r0 (+ carries),
 * then everything from bit 130 up folds back times 5. In assembly because
 * both GCC's unsigned __int128 and its carry intrinsics spill the limbs
 * to the stack on every block, which doubles the cost here. Needs BMI2
 * (MULX). */
typedef uint64_t __attribute__((may_alias)) u64_alias;

static inline void poly_step(uint64_t *h0p, uint64_t *h1p, uint64_t *h2p, uint64_t r0, uint64_t r1, uint64_t s1,
			     const uint8_t *m)
{
	uint64_t h0 = *h0p, h1 = *h1p, h2 = *h2p, t0, t1, t2, a, b;

	__asm__("addq %[m0], %[h0]\n\t"
		"adcq %[m1], %[h1]\n\t"
		"adcq $1, %[h2]\n\t"
		"movq %[h0], %%rdx\n\t"
		"mulx %[r0], %[h0], %[t0]\n\t" /* t0:h0 = h0*r0 */
		"mulx %[r1], %[t1], %[t2]\n\t" /* t2:t1 = h0*r1 */
		"movq %[h1], %%rdx\n\t"
		"mulx %[s1], %[a], %[b]\n\t"   /* + h1*s1 into d0 */
		"addq %[a], %[h0]\n\t"
		"adcq %[b], %[t0]\n\t"
		"mulx %[r0], %[a], %[b]\n\t"   /* + h1*r0 into d1 */
		"addq %[a], %[t1]\n\t"
		"adcq %[b], %[t2]\n\t"
		"movq %[h2], %[a]\n\t"
		"imulq %[s1], %[a]\n\t"        /* + h2*s1 into d1 */
		"imulq %[r0], %[h2]\n\t"       /* d2 = h2*r0 */
		"addq %[a], %[t1]\n\t"
		"adcq $0, %[t2]\n\t"
		"addq %[t0], %[t1]\n\t"        /* d0's carry into d1 */
		"adcq %[t2], %[h2]\n\t"        /* d1's into d2 */
		"movq %[h2], %[a]\n\t"
		"movq %[h2], %[b]\n\t"
		"andq $-4, %[a]\n\t"
		"shrq $2, %[b]\n\t"
		"addq %[b], %[a]\n\t"          /* 5 * (d2 >> 2) */
		"andq $3, %[h2]\n\t"
		"movq %[t1], %[h1]\n\t"
		"addq %[a], %[h0]\n\t"
		"adcq $0, %[h1]\n\t"
		"adcq $0, %[h2]"
		: [h0] "+&r"(h0), [h1] "+&r"(h1), [h2] "+&r"(h2), [t0] "=&r"(t0), [t1] "=&r"(t1),
		  [t2] "=&r"(t2), [a] "=&r"(a), [b] "=&r"(b)
		: [m0] "m"(*(const u64_alias *)m), [m1] "m"(*(const u64_alias *)(m + 8)), [r0] "r"(r0),
		  [r1] "r"(r1), [s1] "r"(s1)
		: "rdx", "cc");
	*h0p = h0;
	*h1p = h1;
	*h2p = h2;
}

static inline void poly_blocks(struct poly *p, const uint8_t *m, size_t n)
{
	uint64_t h0 = p->h0, h1 = p->h1, h2 = p->h2;

	for (; n; n--, m += 16)
		poly_step(&h0, &h1, &h2, p->r0, p->r1, p->s1, m);
	p->h0 = h0;
	p->h1 = h1;
	p->h2 = h2;
}

/* Authenticates len bytes as whole blocks, the last zero-padded (AEAD). */
static inline void poly_padded(struct poly *p, const uint8_t *m, size_t len)
{
	uint8_t last[16] = { 0 };

	poly_blocks(p, m, len / 16);
	if (len % 16) {
		memcpy(last, m + len - len % 16, len % 16);
		poly_blocks(p, last, 1);
	}
}

static inline void poly_finish(struct poly *p, uint8_t tag[16])
{
	uint64_t h0 = p->h0, h1 = p->h1, h2 = p->h2, g0, g1, g2, mask;
	u128 t;

	/* h < 2p here, so one conditional subtraction of p = 2^130 - 5
	 * (add 5, look at bit 130) reduces it fully. */
	t = (u128)h0 + 5;
	g0 = (uint64_t)t;
	t = (u128)h1 + (uint64_t)(t >> 64);
	g1 = (uint64_t)t;
	g2 = h2 + (uint64_t)(t >> 64);
	mask = 0 - (g2 >> 2);
	h0 = (h0 & ~mask) | (g0 & mask);
	h1 = (h1 & ~mask) | (g1 & mask);
	t = (u128)h0 + p->pad0;
	h0 = (uint64_t)t;
	h1 = h1 + p->pad1 + (uint64_t)(t >> 64);
	memcpy(tag, &h0, 8);
	memcpy(tag + 8, &h1, 8);
}

/* ---- ChaCha20, eight blocks per call ----------------------------------- */
TARGET static inline __m256i rotl16(__m256i x)
{
	const __m256i m = _mm256_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2, 13, 12, 15, 14, 9,
					  8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2);

	return _mm256_shuffle_epi8(x, m);
}

TARGET static inline __m256i rotl8(__m256i x)
{
	const __m256i m = _mm256_set_epi8(14, 13, 12, 15, 10, 9, 8, 11, 6, 5, 4, 7, 2, 1, 0, 3, 14, 13, 12, 15, 10,
					  9, 8, 11, 6, 5, 4, 7, 2, 1, 0, 3);

	return _mm256_shuffle_epi8(x, m);
}

#define ROTL(x, n) _mm256_or_si256(_mm256_slli_epi32((x), (n)), _mm256_srli_epi32((x), 32 - (n)))

/* Four quarter rounds side by side, step by step: independent operations
 * next to each other, which also keeps fewer temporaries alive at once. */
#define ROUND4(mid, a0, b0, c0, d0, a1, b1, c1, d1, a2, b2, c2, d2, a3, b3, c3, d3)                        \
	do {                                                                                             \
		a0 = _mm256_add_epi32(a0, b0), a1 = _mm256_add_epi32(a1, b1);                              \
		a2 = _mm256_add_epi32(a2, b2), a3 = _mm256_add_epi32(a3, b3);                              \
		d0 = rotl16(_mm256_xor_si256(d0, a0)), d1 = rotl16(_mm256_xor_si256(d1, a1));              \
		d2 = rotl16(_mm256_xor_si256(d2, a2)), d3 = rotl16(_mm256_xor_si256(d3, a3));              \
		c0 = _mm256_add_epi32(c0, d0), c1 = _mm256_add_epi32(c1, d1);                              \
		c2 = _mm256_add_epi32(c2, d2), c3 = _mm256_add_epi32(c3, d3);                              \
		b0 = ROTL(_mm256_xor_si256(b0, c0), 12), b1 = ROTL(_mm256_xor_si256(b1, c1), 12);          \
		b2 = ROTL(_mm256_xor_si256(b2, c2), 12), b3 = ROTL(_mm256_xor_si256(b3, c3), 12);          \
		mid;                                                                                     \
		a0 = _mm256_add_epi32(a0, b0), a1 = _mm256_add_epi32(a1, b1);                              \
		a2 = _mm256_add_epi32(a2, b2), a3 = _mm256_add_epi32(a3, b3);                              \
		d0 = rotl8(_mm256_xor_si256(d0, a0)), d1 = rotl8(_mm256_xor_si256(d1, a1));                \
		d2 = rotl8(_mm256_xor_si256(d2, a2)), d3 = rotl8(_mm256_xor_si256(d3, a3));                \
		c0 = _mm256_add_epi32(c0, d0), c1 = _mm256_add_epi32(c1, d1);                              \
		c2 = _mm256_add_epi32(c2, d2), c3 = _mm256_add_epi32(c3, d3);                              \
		b0 = ROTL(_mm256_xor_si256(b0, c0), 7), b1 = ROTL(_mm256_xor_si256(b1, c1), 7);            \
		b2 = ROTL(_mm256_xor_si256(b2, c2), 7), b3 = ROTL(_mm256_xor_si256(b3, c3), 7);            \
	} while (0)
#define COLUMNS(mid) ROUND4(mid, x0, x4, x8, x12, x1, x5, x9, x13, x2, x6, x10, x14, x3, x7, x11, x15)
#define DIAGONALS(mid) ROUND4(mid, x0, x5, x10, x15, x1, x6, x11, x12, x2, x7, x8, x13, x3, x4, x9, x14)

/* Rows 0-7 or 8-15 of eight blocks (x[i] holds word i of blocks 0..7) to
 * the halves of eight 64-byte blocks at out (+0 or +32 per block). */
TARGET static inline void store_half(uint8_t *out, __m256i x0, __m256i x1, __m256i x2, __m256i x3, __m256i x4,
				     __m256i x5, __m256i x6, __m256i x7)
{
	__m256i t0 = _mm256_unpacklo_epi32(x0, x1), t1 = _mm256_unpackhi_epi32(x0, x1);
	__m256i t2 = _mm256_unpacklo_epi32(x2, x3), t3 = _mm256_unpackhi_epi32(x2, x3);
	__m256i t4 = _mm256_unpacklo_epi32(x4, x5), t5 = _mm256_unpackhi_epi32(x4, x5);
	__m256i t6 = _mm256_unpacklo_epi32(x6, x7), t7 = _mm256_unpackhi_epi32(x6, x7);
	__m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
	__m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
	__m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
	__m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);

	_mm256_store_si256((__m256i *)(out + 0 * 64), _mm256_permute2x128_si256(u0, u4, 0x20));
	_mm256_store_si256((__m256i *)(out + 1 * 64), _mm256_permute2x128_si256(u1, u5, 0x20));
	_mm256_store_si256((__m256i *)(out + 2 * 64), _mm256_permute2x128_si256(u2, u6, 0x20));
	_mm256_store_si256((__m256i *)(out + 3 * 64), _mm256_permute2x128_si256(u3, u7, 0x20));
	_mm256_store_si256((__m256i *)(out + 4 * 64), _mm256_permute2x128_si256(u0, u4, 0x31));
	_mm256_store_si256((__m256i *)(out + 5 * 64), _mm256_permute2x128_si256(u1, u5, 0x31));
	_mm256_store_si256((__m256i *)(out + 6 * 64), _mm256_permute2x128_si256(u2, u6, 0x31));
	_mm256_store_si256((__m256i *)(out + 7 * 64), _mm256_permute2x128_si256(u3, u7, 0x31));
}

/* Keystream blocks ctr..ctr+7 of state st into ks (512 bytes, 32-aligned),
 * authenticating nblocks 16-byte blocks at m on the way. */
TARGET static void chacha8_stitched(uint8_t *ks, const uint32_t st[16], uint32_t ctr, struct poly *p,
				    const uint8_t *m, size_t nblocks)
{
	const __m256i c12 = _mm256_add_epi32(_mm256_set1_epi32((int)ctr), _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0));
	__m256i x0 = _mm256_set1_epi32((int)st[0]), x1 = _mm256_set1_epi32((int)st[1]);
	__m256i x2 = _mm256_set1_epi32((int)st[2]), x3 = _mm256_set1_epi32((int)st[3]);
	__m256i x4 = _mm256_set1_epi32((int)st[4]), x5 = _mm256_set1_epi32((int)st[5]);
	__m256i x6 = _mm256_set1_epi32((int)st[6]), x7 = _mm256_set1_epi32((int)st[7]);
	__m256i x8 = _mm256_set1_epi32((int)st[8]), x9 = _mm256_set1_epi32((int)st[9]);
	__m256i x10 = _mm256_set1_epi32((int)st[10]), x11 = _mm256_set1_epi32((int)st[11]);
	__m256i x12 = c12, x13 = _mm256_set1_epi32((int)st[13]);
	__m256i x14 = _mm256_set1_epi32((int)st[14]), x15 = _mm256_set1_epi32((int)st[15]);
	/* One Poly1305 block after every two quarter rounds, four per
	 * double round: small enough pieces that the integer chain and the
	 * vector rounds sit in the core's reorder window together. Whole
	 * groups of four only, and no branch inside a round (a branch there
	 * makes the compiler spill the state around it). */
	uint64_t h0 = 0, h1 = 0, h2 = 0;
	uint64_t r0 = 0, r1 = 0, s1 = 0;
	int i = 0;

	if (nblocks >= 4) {
		h0 = p->h0, h1 = p->h1, h2 = p->h2;
		r0 = p->r0, r1 = p->r1, s1 = p->s1;
	}
	for (; i < 10 && nblocks >= 4; i++, nblocks -= 4, m += 64) {
		poly_step(&h0, &h1, &h2, r0, r1, s1, m);
		COLUMNS(poly_step(&h0, &h1, &h2, r0, r1, s1, m + 16));
		poly_step(&h0, &h1, &h2, r0, r1, s1, m + 32);
		DIAGONALS(poly_step(&h0, &h1, &h2, r0, r1, s1, m + 48));
	}
	if (i) {
		p->h0 = h0, p->h1 = h1, p->h2 = h2;
	}
	for (; i < 10; i++) {
		COLUMNS((void)0);
		DIAGONALS((void)0);
	}
	x0 = _mm256_add_epi32(x0, _mm256_set1_epi32((int)st[0]));
	x1 = _mm256_add_epi32(x1, _mm256_set1_epi32((int)st[1]));
	x2 = _mm256_add_epi32(x2, _mm256_set1_epi32((int)st[2]));
	x3 = _mm256_add_epi32(x3, _mm256_set1_epi32((int)st[3]));
	x4 = _mm256_add_epi32(x4, _mm256_set1_epi32((int)st[4]));
	x5 = _mm256_add_epi32(x5, _mm256_set1_epi32((int)st[5]));
	x6 = _mm256_add_epi32(x6, _mm256_set1_epi32((int)st[6]));
	x7 = _mm256_add_epi32(x7, _mm256_set1_epi32((int)st[7]));
	store_half(ks, x0, x1, x2, x3, x4, x5, x6, x7);
	x8 = _mm256_add_epi32(x8, _mm256_set1_epi32((int)st[8]));
	x9 = _mm256_add_epi32(x9, _mm256_set1_epi32((int)st[9]));
	x10 = _mm256_add_epi32(x10, _mm256_set1_epi32((int)st[10]));
	x11 = _mm256_add_epi32(x11, _mm256_set1_epi32((int)st[11]));
	x12 = _mm256_add_epi32(x12, c12);
	x13 = _mm256_add_epi32(x13, _mm256_set1_epi32((int)st[13]));
	x14 = _mm256_add_epi32(x14, _mm256_set1_epi32((int)st[14]));
	x15 = _mm256_add_epi32(x15, _mm256_set1_epi32((int)st[15]));
	store_half(ks + 32, x8, x9, x10, x11, x12, x13, x14, x15);
	if (nblocks)
		poly_blocks(p, m, nblocks);
}

/* dst = src ^ ks for n bytes (n <= 512); dst may equal src. */
TARGET static inline void xor_stream(uint8_t *dst, const uint8_t *src, const uint8_t *ks, size_t n)
{
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		__m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
		__m256i b = _mm256_load_si256((const __m256i *)(ks + i));

		_mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, b));
	}
	for (; i + 8 <= n; i += 8) {
		uint64_t a, b;

		memcpy(&a, src + i, 8);
		memcpy(&b, ks + i, 8);
		a ^= b;
		memcpy(dst + i, &a, 8);
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ ks[i];
}

/* One message of a run under one key. For sealing, len is the plaintext
 * and the tag goes to dst + len; for opening, len is the ciphertext
 * without its tag, which is read from src + len. */
struct msg {
	uint8_t *dst;
	const uint8_t *src;
	size_t len;
	const uint8_t *ad;
	size_t adlen;
	uint8_t nonce[AEAD_NONCE_LEN];
	bool ok;
};

/* The chunk the previous batch of keystream covered: authenticated during
 * the next batch (sealing: the ciphertext just written; opening: the
 * ciphertext, which the keystream is XORed over only afterwards). */
struct chunk {
	struct msg *m;
	struct poly *p;
	const uint8_t *ks;
	size_t off, n;
	bool last; /* the message's last chunk: its tag follows */
};

static inline void set_state(uint32_t st[16], const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN])
{
	st[0] = 0x61707865, st[1] = 0x3320646e, st[2] = 0x79622d32, st[3] = 0x6b206574;
	for (int i = 0; i < 8; i++)
		st[4 + i] = le32(key + 4 * i);
	st[12] = 0;
	for (int i = 0; i < 3; i++)
		st[13 + i] = le32(nonce + 4 * i);
}

/* The rest of chunk c after the stitched rounds authenticated its first
 * done bytes: the other blocks (a partial last one), the XOR when
 * opening, the tag when it ends its message. */
TARGET static void chunk_finish(bool enc, const struct chunk *c, size_t done)
{
	struct msg *m = c->m;
	uint8_t lens[16], tag[AEAD_TAG_LEN];

	if (!m)
		return;
	poly_padded(c->p, (enc ? m->dst : m->src) + c->off + done, c->n - done);
	if (!enc)
		xor_stream(m->dst + c->off, m->src + c->off, c->ks, c->n);
	if (!c->last)
		return;
	for (int i = 0; i < 8; i++) {
		lens[i] = (uint8_t)((uint64_t)m->adlen >> (8 * i));
		lens[8 + i] = (uint8_t)((uint64_t)m->len >> (8 * i));
	}
	poly_blocks(c->p, lens, 1);
	poly_finish(c->p, tag);
	if (enc) {
		memcpy(m->dst + m->len, tag, AEAD_TAG_LEN);
		m->ok = true;
	} else {
		m->ok = sodium_memcmp(tag, m->src + m->len, AEAD_TAG_LEN) == 0;
		if (!m->ok)
			sodium_memzero(m->dst, m->len);
	}
	sodium_memzero(c->p, sizeof(*c->p));
}

/* Seals (enc) or opens n messages under one key as one stream of 512-byte
 * keystream batches: each batch is stitched with the authentication of
 * the chunk before it, across message boundaries too, so only the very
 * first batch and the very last chunk of the run go unstitched. */
TARGET static void chachapoly_run(bool enc, struct msg *ms, size_t n, const uint8_t key[AEAD_KEY_LEN])
{
	_Alignas(32) uint8_t ks[2][512];
	uint32_t st[16];
	struct poly polys[2];
	struct chunk prev = { 0 };
	int cur = 0;

	for (size_t i = 0; i < n; i++) {
		struct msg *m = &ms[i];
		struct poly *p = &polys[i & 1];
		size_t off = 0;

		set_state(st, key, m->nonce);
		for (uint32_t ctr = 0;; ctr += 8, cur ^= 1) {
			const uint8_t *pm = prev.m ? (enc ? prev.m->dst : prev.m->src) + prev.off : NULL;
			size_t first = ctr ? 0 : 64, take = 512 - first;

			/* Whole groups of four blocks go into the rounds. */
			chacha8_stitched(ks[cur], st, ctr, prev.p, pm, prev.m ? prev.n / 64 * 4 : 0);
			chunk_finish(enc, &prev, prev.n / 64 * 64);
			if (ctr == 0) {
				poly_init(p, ks[cur]);
				poly_padded(p, m->ad, m->adlen);
			}
			if (take > m->len - off)
				take = m->len - off;
			if (enc)
				xor_stream(m->dst + off, m->src + off, ks[cur] + first, take);
			prev = (struct chunk){ .m = m, .p = p, .ks = ks[cur] + first, .off = off, .n = take };
			off += take;
			if (off == m->len) {
				prev.last = true;
				cur ^= 1;
				break;
			}
		}
	}
	chunk_finish(enc, &prev, 0);
	sodium_memzero(ks, sizeof(ks));
	sodium_memzero(st, sizeof(st));
}

/* Longest message: RFC 8439 allows 2^32 blocks per nonce (block 0 is the
 * Poly1305 key). */
#define MAX_LEN (((uint64_t)1 << 32) * 64 - 64)

static bool avx2_seal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		      const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	struct msg m = { .dst = dst, .src = src, .len = len, .ad = ad, .adlen = adlen };

	if ((uint64_t)len > MAX_LEN)
		return false;
	memcpy(m.nonce, nonce, AEAD_NONCE_LEN);
	chachapoly_run(true, &m, 1, key);
	return m.ok;
}

static bool avx2_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		      const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	struct msg m = { .dst = dst, .src = src, .len = len - AEAD_TAG_LEN, .ad = ad, .adlen = adlen };

	if (len < AEAD_TAG_LEN || (uint64_t)len - AEAD_TAG_LEN > MAX_LEN)
		return false;
	memcpy(m.nonce, nonce, AEAD_NONCE_LEN);
	chachapoly_run(false, &m, 1, key);
	return m.ok;
}

/* Runs of WireGuard transport messages (counter nonces, no AD), in
 * groups that fit on the stack. */
#define RUN_MAX 64

static void avx2_many(bool enc, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN])
{
	struct msg ms[RUN_MAX];
	size_t from[RUN_MAX];

	while (n) {
		size_t k = 0, used = 0;

		for (; used < n && k < RUN_MAX; used++) {
			struct aead_msg *a = &v[used];
			size_t len = a->len;

			a->ok = false;
			if (!enc && len < AEAD_TAG_LEN)
				continue;
			len -= enc ? 0 : AEAD_TAG_LEN;
			if ((uint64_t)len > MAX_LEN)
				continue;
			ms[k] = (struct msg){ .dst = a->dst, .src = a->src, .len = len };
			memset(ms[k].nonce, 0, 4);
			for (int b = 0; b < 8; b++)
				ms[k].nonce[4 + b] = (uint8_t)(a->counter >> (8 * b));
			from[k++] = used;
		}
		if (k)
			chachapoly_run(enc, ms, k, key);
		for (size_t j = 0; j < k; j++)
			v[from[j]].ok = ms[j].ok;
		v += used;
		n -= used;
	}
}

static void avx2_seal_many(void *state, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN])
{
	(void)state;
	avx2_many(true, v, n, key);
}

static void avx2_open_many(void *state, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN])
{
	(void)state;
	avx2_many(false, v, n, key);
}

/* The CPU has the instructions, and this code computes what libsodium does
 * at the lengths where its branches change (guards against a miscompile). */
static bool avx2_available(void)
{
	static const size_t lens[] = { 0, 1, 15, 16, 63, 64, 447, 448, 449, 511, 512, 960, 961, 1420, 1500, 4099 };
	static uint8_t p[4099], a[4099 + AEAD_TAG_LEN], b[4099 + AEAD_TAG_LEN];
	uint8_t key[AEAD_KEY_LEN], nonce[AEAD_NONCE_LEN] = { 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8 }, ad[37];

	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("bmi2"))
		return false;
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(0xa5 ^ (i * 7));
	for (size_t i = 0; i < sizeof(ad); i++)
		ad[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(p); i++)
		p[i] = (uint8_t)(i * 131 + 7);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		size_t adl = i % 3 ? sizeof(ad) : 0;

		crypto_aead_chacha20poly1305_ietf_encrypt_detached(a, a + lens[i], NULL, p, lens[i], ad, adl, NULL,
								   nonce, key);
		if (!avx2_seal(b, p, lens[i], ad, adl, nonce, key) || memcmp(a, b, lens[i] + AEAD_TAG_LEN))
			return false;
		if (!avx2_open(b, b, lens[i] + AEAD_TAG_LEN, ad, adl, nonce, key) || memcmp(b, p, lens[i]))
			return false;
		a[lens[i] / 2] ^= 1;
		if (avx2_open(b, a, lens[i] + AEAD_TAG_LEN, ad, adl, nonce, key))
			return false;
	}
	return true;
}

#else

static bool avx2_available(void)
{
	return false;
}

static bool avx2_seal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		      const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	(void)dst, (void)src, (void)len, (void)ad, (void)adlen, (void)nonce, (void)key;
	return false;
}

static bool avx2_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,
		      const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	(void)dst, (void)src, (void)len, (void)ad, (void)adlen, (void)nonce, (void)key;
	return false;
}

static void avx2_seal_many(void *state, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN])
{
	(void)state, (void)key;
	for (size_t i = 0; i < n; i++)
		v[i].ok = false;
}

static void avx2_open_many(void *state, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN])
{
	avx2_seal_many(state, v, n, key);
}

#endif

static void avx2_thread_cleanup(void)
{
}

const struct aead_backend aead_backend_avx2 = {
	.name = "avx2",
	.available = avx2_available,
	.seal = avx2_seal,
	.open = avx2_open,
	.seal_many = avx2_seal_many,
	.open_many = avx2_open_many,
	.thread_cleanup = avx2_thread_cleanup,
};
