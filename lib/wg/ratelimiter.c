#include "wg/ratelimiter.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* Tokens are counted in thousandths of a packet per millisecond: one
 * millisecond adds per_second units and a packet costs 1000, which is
 * exact for every rate. */
#define PACKET_COST 1000u

struct slot {
	uint64_t tag; /* the source's hash, | 1; 0: empty */
	uint64_t last; /* ms of the last refill */
	uint64_t tokens;
};

struct ratelimiter {
	uint8_t key[crypto_shorthash_KEYBYTES];
	uint64_t rate, max;
	size_t mask;
	struct slot slots[];
};

struct ratelimiter *ratelimiter_new(size_t slots, uint32_t per_second, uint32_t burst)
{
	struct ratelimiter *rl;
	size_t n = 1;

	if (!slots || !per_second || !burst || slots > ((size_t)1 << 24))
		return NULL;
	while (n < slots)
		n <<= 1;
	rl = calloc(1, sizeof(*rl) + n * sizeof(rl->slots[0]));
	if (!rl)
		return NULL;
	crypto_shorthash_keygen(rl->key);
	rl->rate = per_second;
	rl->max = (uint64_t)burst * PACKET_COST;
	rl->mask = n - 1;
	return rl;
}

void ratelimiter_free(struct ratelimiter *rl)
{
	if (!rl)
		return;
	sodium_memzero(rl->key, sizeof(rl->key));
	free(rl);
}

bool ratelimiter_allow(struct ratelimiter *rl, const void *src, size_t srclen, uint64_t now)
{
	uint8_t h[crypto_shorthash_BYTES];
	uint64_t tag, gained;
	struct slot *s;

	crypto_shorthash(h, src, srclen, rl->key);
	memcpy(&tag, h, sizeof(tag));
	tag |= 1;
	s = &rl->slots[(tag >> 1) & rl->mask];
	if (s->tag != tag) {
		s->tag = tag;
		s->last = now;
		s->tokens = rl->max;
	} else if (now > s->last) {
		gained = now - s->last;
		/* Past a full refill the product could only overflow. */
		s->tokens = gained >= rl->max ? rl->max : s->tokens + gained * rl->rate;
		if (s->tokens > rl->max)
			s->tokens = rl->max;
		s->last = now;
	}
	if (s->tokens < PACKET_COST)
		return false;
	s->tokens -= PACKET_COST;
	return true;
}
