/* Anti-replay window for transport counters (RFC 6479's ring of bitmap
 * blocks, as WireGuard uses it).
 *
 * The ring holds REPLAY_BITS_TOTAL bits in 64-bit blocks; one block is
 * always being recycled, so REPLAY_WINDOW_SIZE = 8192 - 64 = 8128 counters
 * behind the greatest one seen are tracked (wireguard-go and the Linux
 * module use the same window). Anything older is rejected, as is any
 * counter >= REJECT_AFTER_MESSAGES.
 *
 * Not thread-safe: the owner (a keypair) serialises calls. */
#ifndef KNIT_WG_REPLAY_H
#define KNIT_WG_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#define REPLAY_BITS_TOTAL 8192
#define REPLAY_BLOCK_BITS 64
#define REPLAY_BLOCKS (REPLAY_BITS_TOTAL / REPLAY_BLOCK_BITS)
#define REPLAY_WINDOW_SIZE (REPLAY_BITS_TOTAL - REPLAY_BLOCK_BITS)

struct replay {
	uint64_t next; /* greatest counter accepted + 1; 0: none yet */
	uint64_t blocks[REPLAY_BLOCKS];
};

void replay_init(struct replay *r);
/* Accepts counter (and records it) if it was never accepted before, is
 * inside the window and below REJECT_AFTER_MESSAGES. Call only after the
 * packet authenticated. */
bool replay_check(struct replay *r, uint64_t counter);

#endif
