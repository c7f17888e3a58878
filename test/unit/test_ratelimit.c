/* operator/ratelimit.c: token buckets per machine key, with the time
 * supplied: a burst goes through, the next call is refused with the time
 * until a token is back, tokens come back at the rule's rate (never more
 * than the burst), buckets are independent, and an idle entry is seen. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "ratelimit.h"

static const struct ratelimit_rule rules[RATELIMIT_CALLS] = {
	[RATELIMIT_REGISTER] = { .burst = 3, .every_ms = 1000 },
	[RATELIMIT_UPDATE] = { .burst = 5, .every_ms = 100 },
	[RATELIMIT_MAP] = { .burst = 1, .every_ms = 2000 },
	[RATELIMIT_REGISTER_POD] = { .burst = 2, .every_ms = 10 },
};

static void test_burst_then_refused(void **state)
{
	struct ratelimit r;

	memset(&r, 0, sizeof(r));
	for (int i = 0; i < 3; i++)
		assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_REGISTER, 10000), 0);
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_REGISTER, 10000), 1000);
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_REGISTER, 10400), 600);
	/* A refusal takes nothing: the token comes back on time. */
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_REGISTER, 11000), 0);
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_REGISTER, 11000), 1000);
}

static void test_refill_rate_and_cap(void **state)
{
	struct ratelimit r;
	int ok = 0;

	memset(&r, 0, sizeof(r));
	/* 100 calls flipping as fast as they can over 1 s: burst + 10 refills. */
	for (uint64_t t = 0; t < 1000; t += 10)
		ok += ratelimit_take(&r, rules, RATELIMIT_UPDATE, 5000 + t) == 0;
	assert_int_equal(ok, 5 + 9);
	/* A long pause refills to the burst, not beyond. */
	ok = 0;
	for (int i = 0; i < 10; i++)
		ok += ratelimit_take(&r, rules, RATELIMIT_UPDATE, 1000000) == 0;
	assert_int_equal(ok, 5);
	/* Partial progress towards the next token is kept: 150 ms after a
	 * refill point leaves 50 ms to wait, not 100. */
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_UPDATE, 1000150), 0);
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_UPDATE, 1000150), 50);
}

static void test_buckets_independent_and_idle(void **state)
{
	struct ratelimit r;

	memset(&r, 0, sizeof(r));
	assert_true(ratelimit_idle(&r, rules, 0));
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_MAP, 1000), 0);
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_MAP, 1000), 2000);
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_REGISTER, 1000), 0);
	assert_false(ratelimit_idle(&r, rules, 2000));
	assert_true(ratelimit_idle(&r, rules, 3000));
	/* A clock that steps back gives no tokens and does not underflow. */
	assert_int_equal(ratelimit_take(&r, rules, RATELIMIT_MAP, 3000), 0);
	assert_true(ratelimit_take(&r, rules, RATELIMIT_MAP, 500) > 0);
	assert_string_equal(ratelimit_call_name(RATELIMIT_UPDATE), "update");
}

static void test_server_rules(void **state)
{
	/* 100 re-registrations in 1.2 s get through only the burst and one
	 * refill at most: the figure issue 15.9 asks for. */
	struct ratelimit r;
	int ok = 0;

	memset(&r, 0, sizeof(r));
	for (int i = 0; i < 100; i++)
		ok += ratelimit_take(&r, ratelimit_rules, RATELIMIT_REGISTER, 1000 + (uint64_t)i * 12) == 0;
	assert_true(ok <= 11);
	assert_true(ok >= 10);
	/* A node starting 110 pods at once registers them all. */
	ok = 0;
	for (int i = 0; i < 110; i++)
		ok += ratelimit_take(&r, ratelimit_rules, RATELIMIT_REGISTER_POD, 2000) == 0;
	assert_int_equal(ok, 110);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_then_refused),
		cmocka_unit_test(test_refill_rate_and_cap),
		cmocka_unit_test(test_buckets_independent_and_idle),
		cmocka_unit_test(test_server_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
