/* Per-source token buckets: bursts, refill rate, independence of
 * sources, and what a full table does (eviction never grants a burst). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "wg/ratelimiter.h"

static const uint8_t src_a[6] = { 10, 0, 0, 1, 0x1f, 0x90 };
static const uint8_t src_b[6] = { 10, 0, 0, 1, 0x1f, 0x91 }; /* same IP, another port */

static int count_allowed(struct ratelimiter *rl, const void *src, size_t len, int tries, uint64_t now)
{
	int n = 0;

	for (int i = 0; i < tries; i++)
		n += ratelimiter_allow(rl, src, len, now);
	return n;
}

static void test_burst_then_rate(void **state)
{
	struct ratelimiter *rl = ratelimiter_new(64, 20, 5);
	uint64_t t = 1000;

	(void)state;
	assert_non_null(rl);
	/* A new source gets its burst at once, then nothing. */
	assert_int_equal(count_allowed(rl, src_a, sizeof(src_a), 100, t), 5);
	/* 20 a second: one every 50 ms, none in between. */
	assert_false(ratelimiter_allow(rl, src_a, sizeof(src_a), t + 49));
	assert_true(ratelimiter_allow(rl, src_a, sizeof(src_a), t + 50));
	assert_false(ratelimiter_allow(rl, src_a, sizeof(src_a), t + 50));
	/* A steady flood over 10 s gets 20 a second, whatever it sends. */
	t += 50;
	{
		int n = 0;

		for (uint64_t ms = 1; ms <= 10000; ms++)
			n += count_allowed(rl, src_a, sizeof(src_a), 7, t + ms);
		assert_int_equal(n, 200);
	}
	ratelimiter_free(rl);
}

static void test_refill_caps_at_burst(void **state)
{
	struct ratelimiter *rl = ratelimiter_new(64, 20, 5);

	(void)state;
	assert_int_equal(count_allowed(rl, src_a, sizeof(src_a), 10, 0), 5);
	/* An hour idle still refills to the burst only (and must not
	 * overflow on the way). */
	assert_int_equal(count_allowed(rl, src_a, sizeof(src_a), 10, 3600u * 1000), 5);
	assert_int_equal(count_allowed(rl, src_a, sizeof(src_a), 10, UINT64_MAX / 2), 5);
	/* Time that does not advance (or a stale reading) adds nothing. */
	assert_int_equal(count_allowed(rl, src_a, sizeof(src_a), 10, UINT64_MAX / 2 - 1000), 0);
	ratelimiter_free(rl);
}

static void test_sources_are_independent(void **state)
{
	struct ratelimiter *rl = ratelimiter_new(RATELIMITER_SLOTS, 20, 5);
	uint8_t v6[18] = { 0xfd, 0x78 };

	(void)state;
	assert_int_equal(count_allowed(rl, src_a, sizeof(src_a), 50, 0), 5);
	/* Another port of the same address is another source. */
	assert_int_equal(count_allowed(rl, src_b, sizeof(src_b), 50, 0), 5);
	/* So is a prefix of the same bytes (an IP-only key). */
	assert_int_equal(count_allowed(rl, src_a, 4, 50, 0), 5);
	assert_int_equal(count_allowed(rl, v6, sizeof(v6), 50, 0), 5);
	assert_false(ratelimiter_allow(rl, src_a, sizeof(src_a), 10));
	ratelimiter_free(rl);
}

/* Many sources through a small table: the table as a whole grants at
 * most its slots' bursts, and then its slots' refills, however many
 * sources come; a source that keeps its slot is still limited. */
static void test_small_table(void **state)
{
	struct ratelimiter *rl = ratelimiter_new(5, 20, 1); /* rounded up to 8 */
	uint32_t src;
	int first = 0, later = 0;

	(void)state;
	assert_non_null(rl);
	/* One packet each from 1000 sources at once: every slot's burst of
	 * one goes to its first taker (both sets fill, with 1000 sources),
	 * and nobody else gets anything. */
	for (src = 0; src < 1000; src++)
		first += ratelimiter_allow(rl, &src, sizeof(src), 0);
	assert_int_equal(first, 8);
	/* 50 ms later each slot has refilled one packet (20 a second). */
	for (src = 0; src < 1000; src++)
		later += ratelimiter_allow(rl, &src, sizeof(src), 50);
	assert_int_equal(later, 8);
	/* A quiet table is as good as new: a newcomer gets its burst. */
	src = 12345;
	assert_true(ratelimiter_allow(rl, &src, sizeof(src), 1000));
	assert_false(ratelimiter_allow(rl, &src, sizeof(src), 1000));
	ratelimiter_free(rl);
}

/* Issue 15.10: a source pushed out of the table by others must not get a
 * full burst back on its next packet. Eight sources share one set of four
 * slots; each sends its whole burst, round after round, at one instant. A
 * direct-mapped table handed every returning source a new bucket (eight
 * sources in four slots: at least four evictions per round, 20 packets
 * each round); the limiter must grant the four buckets' 20 packets once. */
static void test_evicted_source_gets_no_new_burst(void **state)
{
	struct ratelimiter *rl = ratelimiter_new(4, 20, 5);
	int total = 0, after = 0;
	uint32_t src;

	(void)state;
	assert_non_null(rl);
	for (int round = 0; round < 10; round++)
		for (src = 0; src < 8; src++)
			total += count_allowed(rl, &src, sizeof(src), 10, 1000);
	assert_int_equal(total, 4 * 5);
	/* Each of them, evicted or not, is refused at that instant. */
	for (src = 0; src < 8; src++)
		assert_false(ratelimiter_allow(rl, &src, sizeof(src), 1000));
	/* And the whole set refills at the rate of its four buckets only:
	 * 100 ms at 20 a second is two packets a bucket. */
	for (src = 0; src < 8; src++)
		after += count_allowed(rl, &src, sizeof(src), 10, 1100);
	assert_int_equal(after, 4 * 2);
	ratelimiter_free(rl);
}

/* Rates and bursts at their limits must not overflow the refill. */
static void test_extreme_rates(void **state)
{
	struct ratelimiter *rl = ratelimiter_new(4, UINT32_MAX, UINT32_MAX);

	(void)state;
	assert_non_null(rl);
	assert_true(ratelimiter_allow(rl, src_a, sizeof(src_a), 0));
	/* A refill long enough to overflow gained * rate caps at the burst. */
	assert_true(ratelimiter_allow(rl, src_a, sizeof(src_a), UINT64_MAX / 2));
	ratelimiter_free(rl);
	rl = ratelimiter_new(4, UINT32_MAX, 1);
	assert_true(ratelimiter_allow(rl, src_a, sizeof(src_a), 0));
	assert_false(ratelimiter_allow(rl, src_a, sizeof(src_a), 0));
	assert_true(ratelimiter_allow(rl, src_a, sizeof(src_a), 1));
	ratelimiter_free(rl);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	assert_null(ratelimiter_new(0, 20, 5));
	assert_null(ratelimiter_new(64, 0, 5));
	assert_null(ratelimiter_new(64, 20, 0));
	ratelimiter_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_then_rate),
		cmocka_unit_test(test_refill_caps_at_burst),
		cmocka_unit_test(test_sources_are_independent),
		cmocka_unit_test(test_small_table),
		cmocka_unit_test(test_evicted_source_gets_no_new_burst),
		cmocka_unit_test(test_extreme_rates),
		cmocka_unit_test(test_bad_arguments),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
