/* ChaCha20-Poly1305 (RFC 8439) written for x86-64 with AVX2, and the same
 * code again with AVX-512VL where the CPU has it.
 *
 * Why backends of our own: OpenSSL runs ChaCha20 and Poly1305 one after
 * the other, and per packet spends about a third of a 1420-byte seal on
 * setup. Here:
 *
 *  - ChaCha20 makes eight blocks at once, one 32-bit word of all eight per
 *    ymm register, and the Poly1305 key comes out of the first batch with
 *    seven blocks of keystream (no separate block 0).
 *  - Poly1305 runs on the integer units in radix 2^64 (three limbs, 64x64
 *    products), which the vector units leave idle.
 *  - The two are stitched: while the vector units make the keystream for
 *    one 512-byte chunk, the integer units authenticate the previous chunk
 *    between the quarter rounds (in assembly, so the registers are ours),
 *    and an out-of-order core runs both at once. Sealing authenticates
 *    ciphertext it has just written; opening authenticates the ciphertext
 *    before the keystream is XORed over it (so in-place works), which lags
 *    the same one chunk.
 *  - A run of messages under one key (aead_key_seal_many) is one stream of
 *    batches: a message's last chunk is authenticated during the next
 *    message's first batch, so only the run's first batch and last chunk
 *    go unstitched.
 *
 * The avx512 backend keeps the ymm width (Zen 4 splits zmm operations in
 * two, and eight blocks make a 1420-byte packet three batches) but uses
 * AVX-512VL's VPROLD, which rotates a register in place where AVX2 needs a
 * byte shuffle or two shifts, an or and a temporary: with no temporaries
 * all sixteen state words stay in registers, with no spills or reloads.
 * Its double rounds then take about as long as the Poly1305 blocks
 * stitched into them (on an Intel Xeon the single Poly1305 dependency
 * chain is the limit), so each carries three blocks (AVX2: four). Per
 * 1420-byte seal in a run: avx512 ~590 ns on Zen 4, ~600 on the Xeon;
 * avx2 ~700; OpenSSL 3 ~910-1140 (bench/aead).
 *
 * Everything is constant-time (no branch or index on secret data), and the
 * keystream, ChaCha20 state and Poly1305 state on the stack are wiped
 * before returning. available() checks the CPU and compares against
 * libsodium before a backend may be chosen. */
#include "wg/aead-backend.h"

#include <sodium.h>
#include <stddef.h>
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

/* One Poly1305 block on limbs in registers (operands h0-h2, m, scratch
 * t0-t2, a, b; R0, R1, S1 name the key limbs, a register or memory;
 * clobbers rdx and the flags). See poly_blocks(). POLY_ASM: the limbs are
 * operands r0, r1, s1. */
#define POLY_ASM_R(off, R0, R1, S1)                     \
	"addq " #off "(%[m]), %[h0]\n\t"                \
	"adcq " #off "+8(%[m]), %[h1]\n\t"              \
	"adcq $1, %[h2]\n\t"                            \
	"movq %[h0], %%rdx\n\t"                         \
	"mulx " R0 ", %[h0], %[t0]\n\t" /* h0*r0 */      \
	"mulx " R1 ", %[t1], %[t2]\n\t" /* h0*r1 */      \
	"movq %[h1], %%rdx\n\t"                         \
	"mulx " S1 ", %[a], %[b]\n\t"   /* + h1*s1: d0 */\
	"addq %[a], %[h0]\n\t"                          \
	"adcq %[b], %[t0]\n\t"                          \
	"mulx " R0 ", %[a], %[b]\n\t"   /* + h1*r0: d1 */\
	"addq %[a], %[t1]\n\t"                          \
	"adcq %[b], %[t2]\n\t"                          \
	"movq %[h2], %[a]\n\t"                          \
	"imulq " S1 ", %[a]\n\t"        /* + h2*s1: d1 */\
	"imulq " R0 ", %[h2]\n\t"       /* d2 = h2*r0 */ \
	"addq %[a], %[t1]\n\t"                          \
	"adcq $0, %[t2]\n\t"                            \
	"addq %[t0], %[t1]\n\t"        /* carries up */  \
	"adcq %[t2], %[h2]\n\t"                         \
	"movq %[h2], %[a]\n\t"                          \
	"movq %[h2], %[b]\n\t"                          \
	"andq $-4, %[a]\n\t"                            \
	"shrq $2, %[b]\n\t"                             \
	"addq %[b], %[a]\n\t"          /* 5(d2 >> 2) */  \
	"andq $3, %[h2]\n\t"                            \
	"movq %[t1], %[h1]\n\t"                         \
	"addq %[a], %[h0]\n\t"                          \
	"adcq $0, %[h1]\n\t"                            \
	"adcq $0, %[h2]\n\t"
#define POLY_ASM(off) POLY_ASM_R(off, "%[r0]", "%[r1]", "%[s1]")

/* h = (h + m + 2^128) * r, partly reduced, for each of n 16-byte blocks
 * (POLY_ASM, which the ChaCha20 rounds below also interleave):
 *   d0 = h0*r0 + h1*s1, d1 = h0*r1 + h1*r0 + h2*s1, d2 = h2*r0 (+ carries),
 * then everything from bit 130 up folds back times 5. In assembly because
 * both GCC's unsigned __int128 and its carry intrinsics spill the limbs
 * to the stack on every block, which doubles the cost here. Needs BMI2
 * (MULX). */
static inline void poly_blocks(struct poly *p, const uint8_t *m, size_t n)
{
	uint64_t h0 = p->h0, h1 = p->h1, h2 = p->h2, t0, t1, t2, a, b;

	for (; n; n--, m += 16)
		__asm__(POLY_ASM(0)
			: [h0] "+&r"(h0), [h1] "+&r"(h1), [h2] "+&r"(h2), [t0] "=&r"(t0), [t1] "=&r"(t1),
			  [t2] "=&r"(t2), [a] "=&r"(a), [b] "=&r"(b)
			: [m] "r"(m), "m"(*(const uint8_t(*)[16])m), [r0] "r"(p->r0), [r1] "r"(p->r1),
			  [s1] "r"(p->s1)
			: "rdx", "cc");
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

/* ---- ChaCha20, eight blocks per call ------------------------------------
 * One 32-bit word of eight blocks per ymm register: x[i] holds word i of
 * blocks ctr..ctr+7. The double rounds are in assembly: sixteen state
 * vectors and two temporaries do not fit sixteen registers, and GCC's own
 * spilling put stores and reloads on the rounds' critical path (247 ns
 * per eight blocks here; the hand allocation below, 202 ns). Two words at
 * a time wait in memory, always the two the next pair of quarter rounds
 * does not touch, and the Poly1305 blocks (three or four per double round,
 * poly_spread()) go between the pairs. */
/* Two quarter rounds side by side on (a,b,c,d) and (e,f,g,h), ymm numbers;
 * ymm14 and ymm15 are the temporaries. Each half: a += b, d ^= a, d <<<= 16
 * (then 8) by a byte shuffle; c += d, b ^= c, b <<<= 12 (then 7) by two
 * shifts and an or. */
#define V(n) "%%ymm" #n
#define QR2_HALF(a, b, c, d, e, f, g, h, mask, l, r)                                              \
	"vpaddd " V(b) ", " V(a) ", " V(a) "\n\t"                                                 \
	"vpaddd " V(f) ", " V(e) ", " V(e) "\n\t"                                                 \
	"vpxor " V(a) ", " V(d) ", " V(d) "\n\t"                                                  \
	"vpxor " V(e) ", " V(h) ", " V(h) "\n\t"                                                  \
	"vpshufb " mask "(%[x]), " V(d) ", " V(d) "\n\t"                                          \
	"vpshufb " mask "(%[x]), " V(h) ", " V(h) "\n\t"                                          \
	"vpaddd " V(d) ", " V(c) ", " V(c) "\n\t"                                                 \
	"vpaddd " V(h) ", " V(g) ", " V(g) "\n\t"                                                 \
	"vpxor " V(c) ", " V(b) ", " V(b) "\n\t"                                                  \
	"vpxor " V(g) ", " V(f) ", " V(f) "\n\t"                                                  \
	"vpsrld $" #r ", " V(b) ", %%ymm14\n\t"                                                   \
	"vpsrld $" #r ", " V(f) ", %%ymm15\n\t"                                                   \
	"vpslld $" #l ", " V(b) ", " V(b) "\n\t"                                                  \
	"vpslld $" #l ", " V(f) ", " V(f) "\n\t"                                                  \
	"vpor %%ymm14, " V(b) ", " V(b) "\n\t"                                                    \
	"vpor %%ymm15, " V(f) ", " V(f) "\n\t"
#define QR2(a, b, c, d, e, f, g, h)                                \
	QR2_HALF(a, b, c, d, e, f, g, h, "512", 12, 20)            \
	QR2_HALF(a, b, c, d, e, f, g, h, "544", 7, 25)

/* Registers: x0-x7 in ymm0-7, x12-x15 in ymm10-13; ymm8/ymm9 hold x8/x9
 * or x10/x11 by turns, the other pair waiting in the state array (the two
 * that the next quarter-round pair does not touch). */
#define LOAD_ALL                                                                       \
	"vmovdqa 0(%[x]), %%ymm0\n\t" "vmovdqa 32(%[x]), %%ymm1\n\t"                      \
	"vmovdqa 64(%[x]), %%ymm2\n\t" "vmovdqa 96(%[x]), %%ymm3\n\t"                     \
	"vmovdqa 128(%[x]), %%ymm4\n\t" "vmovdqa 160(%[x]), %%ymm5\n\t"                   \
	"vmovdqa 192(%[x]), %%ymm6\n\t" "vmovdqa 224(%[x]), %%ymm7\n\t"                   \
	"vmovdqa 256(%[x]), %%ymm8\n\t" "vmovdqa 288(%[x]), %%ymm9\n\t"                   \
	"vmovdqa 384(%[x]), %%ymm10\n\t" "vmovdqa 416(%[x]), %%ymm11\n\t"                 \
	"vmovdqa 448(%[x]), %%ymm12\n\t" "vmovdqa 480(%[x]), %%ymm13\n\t"
#define STORE_ALL                                                                      \
	"vmovdqa %%ymm0, 0(%[x])\n\t" "vmovdqa %%ymm1, 32(%[x])\n\t"                      \
	"vmovdqa %%ymm2, 64(%[x])\n\t" "vmovdqa %%ymm3, 96(%[x])\n\t"                     \
	"vmovdqa %%ymm4, 128(%[x])\n\t" "vmovdqa %%ymm5, 160(%[x])\n\t"                   \
	"vmovdqa %%ymm6, 192(%[x])\n\t" "vmovdqa %%ymm7, 224(%[x])\n\t"                   \
	"vmovdqa %%ymm8, 256(%[x])\n\t" "vmovdqa %%ymm9, 288(%[x])\n\t"                   \
	"vmovdqa %%ymm10, 384(%[x])\n\t" "vmovdqa %%ymm11, 416(%[x])\n\t"                 \
	"vmovdqa %%ymm12, 448(%[x])\n\t" "vmovdqa %%ymm13, 480(%[x])\n\t"
#define SWAP_TO_10                                                                     \
	"vmovdqa %%ymm8, 256(%[x])\n\t" "vmovdqa %%ymm9, 288(%[x])\n\t"                   \
	"vmovdqa 320(%[x]), %%ymm8\n\t" "vmovdqa 352(%[x]), %%ymm9\n\t"
#define SWAP_TO_8                                                                      \
	"vmovdqa %%ymm8, 320(%[x])\n\t" "vmovdqa %%ymm9, 352(%[x])\n\t"                   \
	"vmovdqa 256(%[x]), %%ymm8\n\t" "vmovdqa 288(%[x]), %%ymm9\n\t"

/* x8/x9 in ymm8/9:   columns 0,1: (0,4,8,12) (1,5,9,13)
 * x10/x11 in ymm8/9: columns 2,3: (2,6,10,14) (3,7,11,15);
 *                    diagonals 0,1: (0,5,10,15) (1,6,11,12)
 * x8/x9 in ymm8/9:   diagonals 2,3: (2,7,8,13) (3,4,9,14) */
#define COLS_A QR2(0, 4, 8, 10, 1, 5, 9, 11)
#define COLS_B QR2(2, 6, 8, 12, 3, 7, 9, 13)
#define DIAG_A QR2(0, 5, 8, 13, 1, 6, 9, 10)
#define DIAG_B QR2(2, 7, 8, 11, 3, 4, 9, 12)

/* All the rounds' memory, at fixed offsets from one pointer (the asm's
 * only address register: at -O0 each memory operand would take one of
 * its own, and clang then runs out of general registers). */
struct rounds_scratch {
	__m256i x[16]; /* the state, word i of eight blocks in x[i] */
	__m256i rot16, rot8; /* vpshufb masks */
	uint64_t r0, r1, s1; /* the Poly1305 key limbs */
	uint64_t n; /* double rounds left */
};
_Static_assert(offsetof(struct rounds_scratch, rot16) == 512 && offsetof(struct rounds_scratch, rot8) == 544 &&
		       offsetof(struct rounds_scratch, r0) == 576 && offsetof(struct rounds_scratch, r1) == 584 &&
		       offsetof(struct rounds_scratch, s1) == 592 && offsetof(struct rounds_scratch, n) == 600,
	       "the offsets the assembly uses");
#define ROUNDS_CLOBBERS                                                                                     \
	"memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
		"xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

static void scratch_init(struct rounds_scratch *sc)
{
	static const uint8_t r16[16] = { 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13 };
	static const uint8_t r8[16] = { 3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14 };

	memcpy((uint8_t *)&sc->rot16, r16, 16);
	memcpy((uint8_t *)&sc->rot16 + 16, r16, 16);
	memcpy((uint8_t *)&sc->rot8, r8, 16);
	memcpy((uint8_t *)&sc->rot8 + 16, r8, 16);
}

/* sc->n double rounds on sc->x, no Poly1305. */
static inline void rounds_plain(struct rounds_scratch *sc)
{
	__asm__ volatile(LOAD_ALL
			 "1:\n\t"
			 COLS_A SWAP_TO_10 COLS_B DIAG_A SWAP_TO_8 DIAG_B
			 "decq 600(%[x])\n\t"
			 "jnz 1b\n\t"
			 STORE_ALL
			 :
			 : [x] "r"(sc)
			 : ROUNDS_CLOBBERS);
}

/* sc->n double rounds, each with four (rounds_poly4) or three
 * (rounds_poly3) Poly1305 blocks from m under the key limbs in sc, the
 * accumulator in h. Four blocks take longer than the vector work of a
 * double round (a block's dependency chain is about 16 cycles), three
 * take less. */
#define POLY_SC(off) POLY_ASM_R(off, "576(%[x])", "584(%[x])", "592(%[x])")
#define ROUNDS_POLY(name, load, store, body, step)                                                                      \
	static inline void name(struct rounds_scratch *sc, uint64_t *h, const uint8_t *m)                  \
	{                                                                                                  \
		uint64_t h0 = h[0], h1 = h[1], h2 = h[2], t0, t1, t2, a, b;                                \
                                                                                                           \
		__asm__ volatile(load "1:\n\t" body "addq $" #step ", %[m]\n\t"                          \
					  "decq 600(%[x])\n\t"                                             \
					  "jnz 1b\n\t" store                                           \
				 : [m] "+r"(m), [h0] "+&r"(h0), [h1] "+&r"(h1), [h2] "+&r"(h2), [t0] "=&r"(t0), \
				   [t1] "=&r"(t1), [t2] "=&r"(t2), [a] "=&r"(a), [b] "=&r"(b)               \
				 : [x] "r"(sc)                                                              \
				 : "rdx", ROUNDS_CLOBBERS);                                                 \
		h[0] = h0, h[1] = h1, h[2] = h2;                                                           \
	}

ROUNDS_POLY(rounds_poly4, LOAD_ALL, STORE_ALL, POLY_SC(0) COLS_A SWAP_TO_10 POLY_SC(16) COLS_B POLY_SC(32) DIAG_A SWAP_TO_8 POLY_SC(48) DIAG_B,
	    64)
ROUNDS_POLY(rounds_poly3, LOAD_ALL, STORE_ALL, POLY_SC(0) COLS_A SWAP_TO_10 POLY_SC(16) COLS_B POLY_SC(32) DIAG_A SWAP_TO_8 DIAG_B, 48)

/* ---- The same rounds with AVX-512VL --------------------------------------
 * A rotate instruction (VPROLD) that needs no temporary: the whole state
 * stays in ymm0-15 with no swaps to memory, each rotation is one
 * instruction instead of a shuffle or two shifts and an or, and the four
 * quarter rounds of a half round go side by side. A double round is then
 * short enough that two Poly1305 blocks (rounds512_poly2) or three
 * (rounds512_poly3) fill it. The registers stay ymm: on Zen 4 a zmm
 * instruction costs two, and eight blocks make 1420 bytes three whole
 * batches where sixteen would make one and a half. */
#define E4(ins, a0, b0, a1, b1, a2, b2, a3, b3)                                                       \
	ins " " V(b0) ", " V(a0) ", " V(a0) "\n\t" ins " " V(b1) ", " V(a1) ", " V(a1) "\n\t" ins " " \
	    V(b2) ", " V(a2) ", " V(a2) "\n\t" ins " " V(b3) ", " V(a3) ", " V(a3) "\n\t"
#define ROL4(n, d0, d1, d2, d3)                                                                       \
	"vprold $" #n ", " V(d0) ", " V(d0) "\n\t" "vprold $" #n ", " V(d1) ", " V(d1) "\n\t"     \
	"vprold $" #n ", " V(d2) ", " V(d2) "\n\t" "vprold $" #n ", " V(d3) ", " V(d3) "\n\t"
/* Four quarter rounds (a_i, b_i, c_i, d_i), a step of each at a time. */
#define QR4(a0, b0, c0, d0, a1, b1, c1, d1, a2, b2, c2, d2, a3, b3, c3, d3)                 \
	E4("vpaddd", a0, b0, a1, b1, a2, b2, a3, b3) E4("vpxor", d0, a0, d1, a1, d2, a2, d3, a3) \
	ROL4(16, d0, d1, d2, d3) E4("vpaddd", c0, d0, c1, d1, c2, d2, c3, d3)                    \
	E4("vpxor", b0, c0, b1, c1, b2, c2, b3, c3) ROL4(12, b0, b1, b2, b3)                     \
	E4("vpaddd", a0, b0, a1, b1, a2, b2, a3, b3) E4("vpxor", d0, a0, d1, a1, d2, a2, d3, a3) \
	ROL4(8, d0, d1, d2, d3) E4("vpaddd", c0, d0, c1, d1, c2, d2, c3, d3)                     \
	E4("vpxor", b0, c0, b1, c1, b2, c2, b3, c3) ROL4(7, b0, b1, b2, b3)
#define COLS512 QR4(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
#define DIAG512 QR4(0, 5, 10, 15, 1, 6, 11, 12, 2, 7, 8, 13, 3, 4, 9, 14)
/* Word i of the state in ymm i. */
#define LD(i) "vmovdqa " #i "*32(%[x]), %%ymm" #i "\n\t"
#define ST(i) "vmovdqa %%ymm" #i ", " #i "*32(%[x])\n\t"
#define LOAD512 LD(0) LD(1) LD(2) LD(3) LD(4) LD(5) LD(6) LD(7) LD(8) LD(9) LD(10) LD(11) LD(12) LD(13) LD(14) LD(15)
#define STORE512 ST(0) ST(1) ST(2) ST(3) ST(4) ST(5) ST(6) ST(7) ST(8) ST(9) ST(10) ST(11) ST(12) ST(13) ST(14) ST(15)

static inline void rounds512_plain(struct rounds_scratch *sc)
{
	__asm__ volatile(LOAD512
			 "1:\n\t"
			 COLS512 DIAG512
			 "decq 600(%[x])\n\t"
			 "jnz 1b\n\t"
			 STORE512
			 :
			 : [x] "r"(sc)
			 : ROUNDS_CLOBBERS);
}

ROUNDS_POLY(rounds512_poly3, LOAD512, STORE512, POLY_SC(0) COLS512 POLY_SC(16) DIAG512 POLY_SC(32), 48)
ROUNDS_POLY(rounds512_poly2, LOAD512, STORE512, POLY_SC(0) COLS512 POLY_SC(16) DIAG512, 32)

/* One instruction set's rounds: plain, and with hi or hi - 1 Poly1305
 * blocks per double round. */
struct rounds {
	void (*plain)(struct rounds_scratch *sc);
	void (*poly_hi)(struct rounds_scratch *sc, uint64_t *h, const uint8_t *m);
	void (*poly_lo)(struct rounds_scratch *sc, uint64_t *h, const uint8_t *m);
	int hi;
};

static const struct rounds rounds_avx2 = { rounds_plain, rounds_poly4, rounds_poly3, 4 };
static const struct rounds rounds_avx512 = { rounds512_plain, rounds512_poly3, rounds512_poly2, 3 };

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

/* How nblocks Poly1305 blocks spread over the ten double rounds: khi
 * with hi, klo with hi - 1 (as many as fit, hi only where hi - 1 per round
 * would leave blocks over), the rest after the rounds. */
static inline void poly_spread(size_t nblocks, int hi, int *khi, int *klo)
{
	size_t lo = (size_t)hi - 1;

	for (int f = nblocks > 10 * lo ? (int)(nblocks - 10 * lo) : 0; f <= 10 && (size_t)hi * (size_t)f <= nblocks;
	     f++) {
		size_t rest = nblocks - (size_t)hi * (size_t)f;

		if (rest % lo == 0 && f + (int)(rest / lo) <= 10) {
			*khi = f;
			*klo = (int)(rest / lo);
			return;
		}
	}
	*khi = nblocks >= 10 * (size_t)hi ? 10 : 0;
	*klo = *khi ? 0 : (int)(nblocks / lo < 10 ? nblocks / lo : 10);
}

/* Keystream blocks ctr..ctr+7 of state st into ks (512 bytes, 32-aligned),
 * authenticating nblocks 16-byte blocks at m on the way (poly_spread()'s
 * share inside the rounds, the rest after). sc is the caller's scratch,
 * made by scratch_init() (the caller wipes it). */
TARGET static void chacha8_stitched(const struct rounds *r, struct rounds_scratch *sc, uint8_t *ks,
				    const uint32_t st[16], uint32_t ctr, struct poly *p, const uint8_t *m, size_t nblocks)
{
	const __m256i c12 = _mm256_add_epi32(_mm256_set1_epi32((int)ctr), _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0));
	__m256i *x = sc->x;
	int khi = 0, klo = 0;

	for (int i = 0; i < 16; i++)
		x[i] = _mm256_set1_epi32((int)st[i]);
	x[12] = c12;
	poly_spread(nblocks, r->hi, &khi, &klo);
	if (khi || klo) {
		uint64_t h[3] = { p->h0, p->h1, p->h2 };

		sc->r0 = p->r0, sc->r1 = p->r1, sc->s1 = p->s1;
		if (khi) {
			sc->n = (uint64_t)khi;
			r->poly_hi(sc, h, m);
		}
		if (klo) {
			sc->n = (uint64_t)klo;
			r->poly_lo(sc, h, m + 16 * r->hi * khi);
		}
		p->h0 = h[0], p->h1 = h[1], p->h2 = h[2];
		m += 16 * r->hi * khi + 16 * (r->hi - 1) * klo;
		nblocks -= (size_t)(r->hi * khi + (r->hi - 1) * klo);
	}
	if (khi + klo < 10) {
		sc->n = (uint64_t)(10 - khi - klo);
		r->plain(sc);
	}
	for (int i = 0; i < 16; i++)
		x[i] = _mm256_add_epi32(x[i], i == 12 ? c12 : _mm256_set1_epi32((int)st[i]));
	store_half(ks, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]);
	store_half(ks + 32, x[8], x[9], x[10], x[11], x[12], x[13], x[14], x[15]);
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

/* Compares all 16 bytes, whatever differs where (no early exit). */
static inline bool tag_equal(const uint8_t *a, const uint8_t *b)
{
	uint64_t a0 = le64(a), a1 = le64(a + 8), b0 = le64(b), b1 = le64(b + 8);

	return ((a0 ^ b0) | (a1 ^ b1)) == 0;
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
		m->ok = tag_equal(tag, m->src + m->len);
		if (!m->ok)
			sodium_memzero(m->dst, m->len);
	}
}

/* Seals (enc) or opens n messages under one key as one stream of 512-byte
 * keystream batches: each batch is stitched with the authentication of
 * the chunk before it, across message boundaries too, so only the very
 * first batch and the very last chunk of the run go unstitched. */
TARGET static void chachapoly_run(const struct rounds *r, bool enc, struct msg *ms, size_t n,
				  const uint8_t key[AEAD_KEY_LEN])
{
	_Alignas(32) uint8_t ks[2][512];
	_Alignas(32) struct rounds_scratch sc;
	uint32_t st[16];
	struct poly polys[2];
	struct chunk prev = { 0 };
	int cur = 0;

	scratch_init(&sc);
	for (size_t i = 0; i < n; i++) {
		struct msg *m = &ms[i];
		struct poly *p = &polys[i & 1];
		size_t off = 0;

		set_state(st, key, m->nonce);
		for (uint32_t ctr = 0;; ctr += 8, cur ^= 1) {
			const uint8_t *pm = prev.m ? (enc ? prev.m->dst : prev.m->src) + prev.off : NULL;
			size_t first = ctr ? 0 : 64, take = 512 - first;

			/* The previous chunk's whole blocks go into the rounds. */
			chacha8_stitched(r, &sc, ks[cur], st, ctr, prev.p, pm, prev.m ? prev.n / 16 : 0);
			chunk_finish(enc, &prev, prev.n / 16 * 16);
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
	sodium_memzero(&sc, sizeof(sc));
	sodium_memzero(polys, sizeof(polys));
	sodium_memzero(st, sizeof(st));
}

/* Longest message: RFC 8439 allows 2^32 blocks per nonce (block 0 is the
 * Poly1305 key). */
#define MAX_LEN (((uint64_t)1 << 32) * 64 - 64)

/* m for sealing len bytes, or opening len sealed ones (tag included), with
 * no AD; false if the length cannot be. */
static bool msg_set(struct msg *m, bool enc, uint8_t *dst, const uint8_t *src, size_t len)
{
	if (!enc) {
		if (len < AEAD_TAG_LEN)
			return false;
		len -= AEAD_TAG_LEN;
	}
	if ((uint64_t)len > MAX_LEN)
		return false;
	*m = (struct msg){ .dst = dst, .src = src, .len = len };
	return true;
}

static bool one(const struct rounds *r, bool enc, uint8_t *dst, const uint8_t *src, size_t len,
		const uint8_t *ad, size_t adlen, const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])
{
	struct msg m;

	if (!msg_set(&m, enc, dst, src, len))
		return false;
	m.ad = ad;
	m.adlen = adlen;
	memcpy(m.nonce, nonce, AEAD_NONCE_LEN);
	chachapoly_run(r, enc, &m, 1, key);
	return m.ok;
}

/* Runs of WireGuard transport messages (counter nonces, no AD), in
 * groups that fit on the stack. */
#define RUN_MAX 64

static void many(const struct rounds *r, bool enc, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN])
{
	struct msg ms[RUN_MAX];
	size_t from[RUN_MAX];

	while (n) {
		size_t k = 0, used = 0;

		for (; used < n && k < RUN_MAX; used++) {
			struct aead_msg *a = &v[used];

			a->ok = false;
			if (!msg_set(&ms[k], enc, a->dst, a->src, a->len))
				continue;
			counter_nonce(ms[k].nonce, a->counter);
			from[k++] = used;
		}
		if (k)
			chachapoly_run(r, enc, ms, k, key);
		for (size_t j = 0; j < k; j++)
			v[from[j]].ok = ms[j].ok;
		v += used;
		n -= used;
	}
}

/* This code computes what libsodium does at the lengths where its
 * branches change (guards against a miscompile), with rounds r. */
static bool agrees_with_sodium(const struct rounds *r)
{
	static const size_t lens[] = { 0, 1, 15, 16, 63, 64, 447, 448, 449, 511, 512, 960, 961, 1420, 1500, 4099 };
	static uint8_t p[4099], a[4099 + AEAD_TAG_LEN], b[4099 + AEAD_TAG_LEN];
	uint8_t key[AEAD_KEY_LEN], nonce[AEAD_NONCE_LEN] = { 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8 }, ad[37];

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
		if (!one(r, true, b, p, lens[i], ad, adl, nonce, key) || memcmp(a, b, lens[i] + AEAD_TAG_LEN))
			return false;
		if (!one(r, false, b, b, lens[i] + AEAD_TAG_LEN, ad, adl, nonce, key) || memcmp(b, p, lens[i]))
			return false;
		a[lens[i] / 2] ^= 1;
		if (one(r, false, b, a, lens[i] + AEAD_TAG_LEN, ad, adl, nonce, key))
			return false;
	}
	return true;
}

/* The two backends: the same code around each instruction set's rounds. */
#define X86_BACKEND(isa, rounds, cpu_has)                                                                         \
	static bool isa##_seal(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,       \
			       const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])                \
	{                                                                                                           \
		return one(&rounds, true, dst, src, len, ad, adlen, nonce, key);                                    \
	}                                                                                                           \
	static bool isa##_open(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad, size_t adlen,       \
			       const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t key[AEAD_KEY_LEN])                \
	{                                                                                                           \
		return one(&rounds, false, dst, src, len, ad, adlen, nonce, key);                                   \
	}                                                                                                           \
	static void isa##_seal_many(void *state, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN])     \
	{                                                                                                           \
		(void)state;                                                                                        \
		many(&rounds, true, v, n, key);                                                                     \
	}                                                                                                           \
	static void isa##_open_many(void *state, struct aead_msg *v, size_t n, const uint8_t key[AEAD_KEY_LEN])     \
	{                                                                                                           \
		(void)state;                                                                                        \
		many(&rounds, false, v, n, key);                                                                    \
	}                                                                                                           \
	static bool isa##_available(void)                                                                          \
	{                                                                                                           \
		__builtin_cpu_init();                                                                               \
		return (cpu_has) && agrees_with_sodium(&rounds);                                                    \
	}                                                                                                           \
	const struct aead_backend aead_backend_##isa = {                                                            \
		.name = #isa,                                                                                       \
		.available = isa##_available,                                                                       \
		.seal = isa##_seal,                                                                                 \
		.open = isa##_open,                                                                                 \
		.seal_many = isa##_seal_many,                                                                       \
		.open_many = isa##_open_many,                                                                       \
	};

#define HAS_AVX2 (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2"))
X86_BACKEND(avx2, rounds_avx2, HAS_AVX2)
X86_BACKEND(avx512, rounds_avx512, HAS_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))

#else

static bool x86_available(void)
{
	return false;
}

/* Never chosen: aead.c calls only backends that are available. */
const struct aead_backend aead_backend_avx2 = {
	.name = "avx2",
	.available = x86_available,
};
const struct aead_backend aead_backend_avx512 = {
	.name = "avx512",
	.available = x86_available,
};

#endif
