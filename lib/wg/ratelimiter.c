#include "wg/ratelimiter.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* Tokens are counted in thousandths of a packet per millisecond: one
 * millisecond adds per_second units and a packet costs 1000, which is
 * exact for every rate. */
#define PACKET_COST 1000u
/* Ways per set: a source can be in any of the four slots of its set. */
#define WAYS 4u

struct slot {
	uint64_t tag; /* the source's hash, | 1; 0: empty */
	uint64_t last; /* ms of the last refill */
	uint64_t tokens;
};

struct ratelimiter {
	uint8_t key[crypto_shorthash_KEYBYTES];
	uint64_t rate, max;
	size_t mask; /* sets - 1 */
	struct slot slots[]; /* set i is slots[i * WAYS ...] */
};

struct ratelimiter *ratelimiter_new(size_t slots, uint32_t per_second, uint32_t burst)
{
	struct ratelimiter *rl;
	size_t n = WAYS;

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
	rl->mask = n / WAYS - 1;
	return rl;
}

void ratelimiter_free(struct ratelimiter *rl)
{
	if (!rl)
		return;
	sodium_memzero(rl->key, sizeof(rl->key));
	free(rl);
}

/* Brings s's bucket up to now. An empty slot holds a full bucket. */
static void refill(const struct ratelimiter *rl, struct slot *s, uint64_t now)
{
	uint64_t missing;

	if (!s->tag) {
		s->tokens = rl->max;
		s->last = now;
		return;
	}
	if (now <= s->last)
		return; /* no time passed, or a stale reading: nothing gained */
	missing = rl->max - s->tokens;
	/* Compared before multiplying: the product could overflow. */
	if (now - s->last >= missing / rl->rate + 1)
		s->tokens = rl->max;
	else
		s->tokens += (now - s->last) * rl->rate;
	s->last = now;
}

bool ratelimiter_allow(struct ratelimiter *rl, const void *src, size_t srclen, uint64_t now)
{
	uint8_t h[crypto_shorthash_BYTES];
	struct slot *set, *s = NULL;
	uint64_t tag;

	crypto_shorthash(h, src, srclen, rl->key);
	memcpy(&tag, h, sizeof(tag));
	tag |= 1;
	set = &rl->slots[((tag >> 1) & rl->mask) * WAYS];
	for (size_t i = 0; i < WAYS && !s; i++)
		if (set[i].tag == tag)
			s = &set[i];
	if (s) {
		refill(rl, s, now);
	} else {
		/* Not in the table: new, or evicted since. It takes over the
		 * fullest bucket of its set as it stands, so eviction never
		 * hands out tokens that were not there. */
		for (size_t i = 0; i < WAYS; i++) {
			refill(rl, &set[i], now);
			if (!s || set[i].tokens > s->tokens || (set[i].tokens == s->tokens && set[i].last < s->last))
				s = &set[i];
		}
		s->tag = tag;
	}
	if (s->tokens < PACKET_COST)
		return false;
	s->tokens -= PACKET_COST;
	return true;
}
