/* Per-machine-key call limits of the coordination server: a token bucket
 * per machine key and kind of call (register, update, map), so one machine
 * that calls in a loop costs the API server and its peers a bounded rate
 * however fast it sends. Pure: the caller supplies the time. */
#ifndef KNIT_OPERATOR_RATELIMIT_H
#define KNIT_OPERATOR_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

enum ratelimit_call { RATELIMIT_REGISTER, RATELIMIT_UPDATE, RATELIMIT_MAP, RATELIMIT_REGISTER_POD, RATELIMIT_CALLS };

/* A bucket holds up to burst tokens and gains one every every_ms. */
struct ratelimit_rule {
	uint32_t burst;
	uint32_t every_ms;
};

/* The server's rules (coord-internal.h documents why these figures). */
extern const struct ratelimit_rule ratelimit_rules[RATELIMIT_CALLS];

struct ratelimit_bucket {
	uint64_t at_ms; /* when tokens was last brought up to date */
	uint32_t tokens;
	bool used; /* at_ms is set */
};

struct ratelimit {
	struct ratelimit_bucket b[RATELIMIT_CALLS];
};

/* Takes one token for call at now_ms: 0 if the call may go ahead, else
 * the milliseconds until a token is back (the call is refused; nothing is
 * taken). */
uint64_t ratelimit_take(struct ratelimit *r, const struct ratelimit_rule *rules, enum ratelimit_call call,
			uint64_t now_ms);
/* True when every bucket is full again at now_ms: the machine called
 * nothing lately, and its entry may be forgotten. */
bool ratelimit_idle(const struct ratelimit *r, const struct ratelimit_rule *rules, uint64_t now_ms);
/* "register", "update", "map", "register_pod". */
const char *ratelimit_call_name(enum ratelimit_call call);

#endif
