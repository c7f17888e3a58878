/* agent/keyexpiry.c: when knitd renews its node key, how long it waits,
 * when it warns, and how it writes what is left. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "keyexpiry.h"

#define DAY 86400

static void test_renew_at(void **state)
{
	(void)state;
	/* A third of the lifetime before expiry. */
	assert_int_equal(keyexpiry_renew_at(1000, 1000 + 180 * DAY, 1000), 1000 + 120 * DAY);
	assert_int_equal(keyexpiry_renew_at(1000, 1045, 1000), 1030);
	/* Never expires: never renewed. */
	assert_int_equal(keyexpiry_renew_at(1000, 0, 5000), 0);
	/* Issue time unknown (a state from an older knitd): counted from now. */
	assert_int_equal(keyexpiry_renew_at(0, 1000 + 90, 1000), 1060);
	/* Already past expiry: due now. */
	assert_int_equal(keyexpiry_renew_at(0, 1000, 2000), 1000);
}

static void test_delay(void **state)
{
	(void)state;
	assert_int_equal(keyexpiry_delay_ms(1030, 1045, 1000, 0), 30000);
	/* Due or overdue: a second; far off: an hour at most. */
	assert_int_equal(keyexpiry_delay_ms(900, 1045, 1000, 0), 1000);
	assert_int_equal(keyexpiry_delay_ms(1000 + 120 * DAY, 1000 + 180 * DAY, 1000, 0), 3600000);
	/* After failures: 5 s doubling up to 5 min ... */
	assert_int_equal(keyexpiry_delay_ms(0, 1000 + 30 * DAY, 1000, 1), 5000);
	assert_int_equal(keyexpiry_delay_ms(0, 1000 + 30 * DAY, 1000, 2), 10000);
	assert_int_equal(keyexpiry_delay_ms(0, 1000 + 30 * DAY, 1000, 20), 300000);
	/* ... never past a tenth of what is left. */
	assert_int_equal(keyexpiry_delay_ms(0, 1000 + 100, 1000, 20), 10000);
}

static void test_warn_and_format(void **state)
{
	char s[32];

	(void)state;
	assert_false(keyexpiry_warn(0, 1000));
	assert_false(keyexpiry_warn(1000 + 8 * DAY, 1000));
	assert_true(keyexpiry_warn(1000 + 7 * DAY, 1000));
	assert_true(keyexpiry_warn(900, 1000));
	keyexpiry_format_left(6 * DAY + 23 * 3600 + 59, s, sizeof(s));
	assert_string_equal(s, "6d 23h");
	keyexpiry_format_left(4 * 3600 + 5 * 60, s, sizeof(s));
	assert_string_equal(s, "4h 5m");
	keyexpiry_format_left(2 * DAY, s, sizeof(s));
	assert_string_equal(s, "2d");
	keyexpiry_format_left(59, s, sizeof(s));
	assert_string_equal(s, "59s");
	keyexpiry_format_left(-5, s, sizeof(s));
	assert_string_equal(s, "0s");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_renew_at),
		cmocka_unit_test(test_delay),
		cmocka_unit_test(test_warn_and_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
