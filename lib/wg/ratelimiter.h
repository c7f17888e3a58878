/* Per-source token buckets for the handshake path (WireGuard's rate
 * limiting under load, whitepaper section 5.3).
 *
 * Each source gets `per_second` packets a second with bursts of up to
 * `burst`. Sources are caller-chosen bytes (an IP address, or an address
 * and port); they are hashed with SipHash under a random key, so an
 * attacker cannot aim collisions at someone else's bucket.
 *
 * The table is fixed in size and 4-way set-associative: no allocation per
 * source and no garbage collection. A source not in the table takes the
 * way of its set that holds the most tokens (an empty way holds a full
 * bucket) and inherits that bucket as it is: a bucket idle for
 * burst / per_second seconds is as good as new, so newcomers get their
 * burst while the table is not crowded, but eviction never creates tokens.
 * A source evicted by a flood of others comes back to a drained bucket,
 * and however many sources rotate through it, the table grants at most
 * slots * burst at once and slots * per_second a second. Under a flood
 * from more sources than slots, a newcomer therefore shares what is left
 * (as WireGuard's Linux limiter refuses new sources when its table is
 * full).
 *
 * Not thread-safe: the owner serialises calls. Times are monotonic
 * milliseconds. */
#ifndef KNIT_WG_RATELIMITER_H
#define KNIT_WG_RATELIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Linux's limits for handshakes that carry a valid cookie. */
#define RATELIMITER_PER_SECOND 20
#define RATELIMITER_BURST 5
#define RATELIMITER_SLOTS 4096

struct ratelimiter;

/* slots is rounded up to a power of two (4 at least); per_second and burst
 * must be > 0.
 * NULL on allocation failure or bad arguments. */
struct ratelimiter *ratelimiter_new(size_t slots, uint32_t per_second, uint32_t burst);
void ratelimiter_free(struct ratelimiter *rl);
/* Takes one token from src's bucket; false when it has none. */
bool ratelimiter_allow(struct ratelimiter *rl, const void *src, size_t srclen, uint64_t now);

#endif
