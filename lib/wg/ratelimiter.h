/* Per-source token buckets for the handshake path (WireGuard's rate
 * limiting under load, whitepaper section 5.3).
 *
 * Each source gets `per_second` packets a second with bursts of up to
 * `burst`. Sources are caller-chosen bytes (an IP address, or an address
 * and port); they are hashed with SipHash under a random key, so an
 * attacker cannot aim collisions at someone else's bucket.
 *
 * The table is direct-mapped and fixed in size: no allocation per source
 * and no garbage collection. A bucket idle for burst / per_second seconds
 * is as good as new, so a source that lands on a slot held by another
 * simply takes it over with a full bucket. Collisions can only make the
 * limiter more lenient, never lock a source out.
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

/* slots is rounded up to a power of two; per_second and burst must be > 0.
 * NULL on allocation failure or bad arguments. */
struct ratelimiter *ratelimiter_new(size_t slots, uint32_t per_second, uint32_t burst);
void ratelimiter_free(struct ratelimiter *rl);
/* Takes one token from src's bucket; false when it has none. */
bool ratelimiter_allow(struct ratelimiter *rl, const void *src, size_t srclen, uint64_t now);

#endif
