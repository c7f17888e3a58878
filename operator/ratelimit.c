/* Token buckets per machine key: see ratelimit.h. */
#include "ratelimit.h"

/* A legitimate agent registers once per `knit up` or restart (and retries
 * a few times while its addresses are allocated), sends an update when its
 * endpoints change (roaming: seconds apart) and opens a map stream per
 * reconnect (backoff from 1 s). The bursts let all of that through at
 * once; the refill rates bound a machine that calls in a loop to one
 * registration every 5 s (an API write and an urgent delta to every peer
 * each), one update a second and one map stream every 2 s. A node
 * registers its pods' identities on its own session (register_pod): a node
 * starting a hundred pods at once must get through, so that bucket is as
 * deep as a node's pod capacity (110 by default) and refills faster. */
const struct ratelimit_rule ratelimit_rules[RATELIMIT_CALLS] = {
	[RATELIMIT_REGISTER] = { .burst = 10, .every_ms = 5000 },
	[RATELIMIT_UPDATE] = { .burst = 20, .every_ms = 1000 },
	[RATELIMIT_MAP] = { .burst = 10, .every_ms = 2000 },
	[RATELIMIT_REGISTER_POD] = { .burst = 128, .every_ms = 200 },
};

static void refill(struct ratelimit_bucket *b, const struct ratelimit_rule *rule, uint64_t now_ms)
{
	uint64_t gained;

	if (!b->used) {
		b->used = true;
		b->tokens = rule->burst;
		b->at_ms = now_ms;
		return;
	}
	if (now_ms <= b->at_ms)
		return; /* a clock that went back gives nothing */
	gained = (now_ms - b->at_ms) / rule->every_ms;
	if (gained >= rule->burst - b->tokens) {
		b->tokens = rule->burst;
		b->at_ms = now_ms;
	} else {
		b->tokens += (uint32_t)gained;
		b->at_ms += gained * rule->every_ms; /* keep the part of a token under way */
	}
}

uint64_t ratelimit_take(struct ratelimit *r, const struct ratelimit_rule *rules, enum ratelimit_call call,
			uint64_t now_ms)
{
	struct ratelimit_bucket *b = &r->b[call];
	const struct ratelimit_rule *rule = &rules[call];

	refill(b, rule, now_ms);
	if (b->tokens > 0) {
		b->tokens--;
		return 0;
	}
	return b->at_ms + rule->every_ms > now_ms ? b->at_ms + rule->every_ms - now_ms : 1;
}

bool ratelimit_idle(const struct ratelimit *r, const struct ratelimit_rule *rules, uint64_t now_ms)
{
	for (int i = 0; i < RATELIMIT_CALLS; i++) {
		struct ratelimit_bucket b = r->b[i];

		refill(&b, &rules[i], now_ms);
		if (b.tokens < rules[i].burst)
			return false;
	}
	return true;
}

const char *ratelimit_call_name(enum ratelimit_call call)
{
	switch (call) {
	case RATELIMIT_REGISTER: return "register";
	case RATELIMIT_UPDATE: return "update";
	case RATELIMIT_MAP: return "map";
	case RATELIMIT_REGISTER_POD: return "register_pod";
	case RATELIMIT_CALLS: break;
	}
	return "?";
}
