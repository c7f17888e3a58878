#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

/* Captures what log_msg() writes through a pipe. */
static char captured[8192];

static void capture(void (*fn)(void))
{
	int p[2];
	ssize_t n;

	assert_int_equal(pipe(p), 0);
	log_set_fd(p[1]);
	fn();
	log_set_fd(-1);
	close(p[1]);
	n = read(p[0], captured, sizeof(captured) - 1);
	captured[n > 0 ? n : 0] = '\0';
	close(p[0]);
}

static void emit_info(void) { log_info("peer up", "peer=%s rx=%d", "ab12", 10); }
static void emit_debug(void) { log_debug("hidden", "x=%d", 1); }
static void emit_escape(void) { log_warn("say \"hi\"\nbye"); }
static void emit_long(void)
{
	static char big[10000];
	memset(big, 'x', sizeof(big) - 1);
	log_error(big);
}

static void test_format(void **state)
{
	log_init("knitd", LOG_INFO);
	capture(emit_info);
	assert_int_equal(strncmp(captured, "ts=", 3), 0);
	assert_non_null(strstr(captured, "Z level=info comp=knitd msg=\"peer up\" peer=ab12 rx=10\n"));
	/* Exactly one line. */
	assert_ptr_equal(strchr(captured, '\n'), captured + strlen(captured) - 1);
}

static void test_level_filter(void **state)
{
	log_init("knitd", LOG_INFO);
	capture(emit_debug);
	assert_string_equal(captured, "");
	log_set_level(LOG_DEBUG);
	capture(emit_debug);
	assert_non_null(strstr(captured, "level=debug"));
	log_set_level(LOG_INFO);
}

static void test_escaping(void **state)
{
	capture(emit_escape);
	assert_non_null(strstr(captured, "msg=\"say \\\"hi\\\"\\nbye\"\n"));
}

static void test_truncation_keeps_one_line(void **state)
{
	capture(emit_long);
	size_t n = strlen(captured);
	assert_true(n > 1000 && n <= 4096);
	assert_int_equal(captured[n - 1], '\n');
	assert_ptr_equal(strchr(captured, '\n'), captured + n - 1);
}

static void test_quote(void **state)
{
	char out[16];

	assert_string_equal(log_quote(out, sizeof(out), "plain"), "plain");
	assert_string_equal(log_quote(out, sizeof(out), "a b"), "\"a b\"");
	assert_string_equal(log_quote(out, sizeof(out), ""), "\"\"");
	assert_string_equal(log_quote(out, sizeof(out), "k=v"), "\"k=v\"");
	/* Truncated quoted values stay quoted. */
	log_quote(out, sizeof(out), "a very long value with spaces");
	assert_int_equal(out[0], '"');
	assert_int_equal(out[strlen(out) - 1], '"');
}

static void test_level_parse(void **state)
{
	enum log_level l;

	assert_true(log_level_parse("warn", &l));
	assert_int_equal(l, LOG_WARN);
	assert_true(log_level_parse("debug", &l));
	assert_int_equal(l, LOG_DEBUG);
	assert_false(log_level_parse("verbose", &l));
	assert_false(log_level_parse(NULL, &l));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_level_filter),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_truncation_keeps_one_line),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_level_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
