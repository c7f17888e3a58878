#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"

static void test_add_and_str(void **state)
{
	struct buf b = BUF_INIT(1024);

	assert_string_equal(buf_str(&b), "");
	assert_int_equal(buf_add_str(&b, "hello"), 0);
	assert_int_equal(buf_add_byte(&b, ' '), 0);
	assert_int_equal(buf_addf(&b, "%s-%d", "world", 42), 0);
	assert_string_equal(buf_str(&b), "hello world-42");
	assert_int_equal(b.len, 14);
	buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.max, 1024);
}

static void test_cap_holds(void **state)
{
	struct buf b = BUF_INIT(10);

	assert_int_equal(buf_add(&b, "0123456789", 10), 0);
	assert_int_equal(b.len, 10);
	/* One byte past the cap fails, and leaves a valid empty buffer. */
	assert_int_equal(buf_add_byte(&b, 'x'), -ENOSPC);
	assert_int_equal(b.len, 0);
	assert_null(b.data);
	assert_string_equal(buf_str(&b), "");
	/* Still usable afterwards. */
	assert_int_equal(buf_add_str(&b, "ok"), 0);
	assert_string_equal(buf_str(&b), "ok");
	buf_free(&b);
}

static void test_cap_addf(void **state)
{
	struct buf b = BUF_INIT(300);
	char big[400];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(buf_addf(&b, "%s", big), -ENOSPC);
	assert_int_equal(b.len, 0);
	big[299] = '\0';
	assert_int_equal(buf_addf(&b, "%s", big), 0);
	assert_int_equal(b.len, 299);
	assert_int_equal(strlen(buf_str(&b)), 299);
	buf_free(&b);
}

static void test_cap_overflowing_length(void **state)
{
	struct buf b = BUF_INIT(SIZE_MAX);

	assert_int_equal(buf_add_str(&b, "x"), 0);
	/* len + n would wrap: must be refused, not wrapped. */
	assert_int_equal(buf_add(&b, "y", SIZE_MAX), -ENOSPC);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static void test_allocation_bounded_by_cap(void **state)
{
	struct buf b = BUF_INIT(100);

	for (int i = 0; i < 100; i++)
		assert_int_equal(buf_add_byte(&b, 'z'), 0);
	/* Doubling must not overshoot the cap by more than the NUL. */
	assert_true(b.alloc <= 101);
	buf_free(&b);
}

static void test_reserve_commit_consume(void **state)
{
	struct buf b = BUF_INIT(64);
	int err = 1;
	uint8_t *p = buf_reserve(&b, 5, &err);

	assert_non_null(p);
	assert_int_equal(err, 0);
	memcpy(p, "abcde", 5);
	buf_commit(&b, 5);
	assert_string_equal(buf_str(&b), "abcde");
	buf_consume(&b, 2);
	assert_string_equal(buf_str(&b), "cde");
	buf_consume(&b, 100);
	assert_int_equal(b.len, 0);
	assert_null(buf_reserve(&b, 65, &err));
	assert_int_equal(err, -ENOSPC);
	buf_free(&b);
}

static void test_steal(void **state)
{
	struct buf b = BUF_INIT(64);
	size_t len = 99;
	char *s = buf_steal(&b, &len);

	assert_non_null(s);
	assert_string_equal(s, "");
	assert_int_equal(len, 0);
	free(s);
	assert_int_equal(buf_add_str(&b, "secret"), 0);
	s = buf_steal(&b, &len);
	assert_string_equal(s, "secret");
	assert_int_equal(len, 6);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	free(s);
	assert_int_equal(buf_add_str(&b, "again"), 0);
	buf_free_secure(&b);
	assert_null(b.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_and_str),
		cmocka_unit_test(test_cap_holds),
		cmocka_unit_test(test_cap_addf),
		cmocka_unit_test(test_cap_overflowing_length),
		cmocka_unit_test(test_allocation_bounded_by_cap),
		cmocka_unit_test(test_reserve_commit_consume),
		cmocka_unit_test(test_steal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
