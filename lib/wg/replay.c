#include "wg/replay.h"

#include "wg/messages.h"

#include <string.h>

void replay_init(struct replay *r)
{
	memset(r, 0, sizeof(*r));
}

bool replay_check(struct replay *r, uint64_t counter)
{
	uint64_t block, bit;

	if (counter >= REJECT_AFTER_MESSAGES)
		return false;
	/* Too old: more than the window behind the greatest seen. */
	if (r->next && counter + REPLAY_WINDOW_SIZE < r->next - 1)
		return false;

	block = counter / REPLAY_BLOCK_BITS;
	if (counter >= r->next) {
		/* Moving ahead: clear the blocks we skip over, at most the whole ring. */
		uint64_t cur = r->next ? (r->next - 1) / REPLAY_BLOCK_BITS : 0;
		uint64_t n = block - cur;

		if (!r->next)
			n = REPLAY_BLOCKS;
		if (n > REPLAY_BLOCKS)
			n = REPLAY_BLOCKS;
		for (uint64_t i = 1; i <= n; i++)
			r->blocks[(cur + i) % REPLAY_BLOCKS] = 0;
		r->next = counter + 1;
	}
	bit = 1ULL << (counter % REPLAY_BLOCK_BITS);
	block %= REPLAY_BLOCKS;
	if (r->blocks[block] & bit)
		return false;
	r->blocks[block] |= bit;
	return true;
}
