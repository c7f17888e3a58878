/* Non-blocking name lookups: an answer polled to the end, a lookup
 * abandoned in flight, and the result of one that is not live. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "net/lookup.h"

static int wait_result(struct lookup *l, struct addrinfo **res)
{
	struct timespec ms = { 0, 1000000 };
	int r;

	for (int i = 0; i < 5000; i++) {
		if ((r = lookup_result(l, res)) != EAI_INPROGRESS)
			return r;
		nanosleep(&ms, NULL);
	}
	return EAI_INPROGRESS;
}

static void test_answer(void **state)
{
	(void)state;
	struct lookup l = { 0 };
	struct addrinfo *res;

	assert_int_equal(lookup_start(&l, "127.0.0.1", "8080", SOCK_STREAM), 0);
	assert_true(l.live);
	assert_int_equal(wait_result(&l, &res), 0);
	assert_false(l.live);
	assert_non_null(res);
	assert_int_equal(res->ai_family, AF_INET);
	assert_int_equal(res->ai_socktype, SOCK_STREAM);
	assert_int_equal(ntohs(((struct sockaddr_in *)res->ai_addr)->sin_port), 8080);
	freeaddrinfo(res);
	/* Over: no result twice, and stopping it is a no-op. */
	assert_int_not_equal(lookup_result(&l, &res), 0);
	assert_null(res);
	lookup_stop(&l);
}

static void test_stop(void **state)
{
	(void)state;
	struct lookup l = { 0 };

	assert_int_equal(lookup_start(&l, "::1", NULL, SOCK_STREAM), 0);
	lookup_stop(&l); /* cancelled or waited for; nothing leaks (ASan) */
	assert_false(l.live);
	/* A new lookup on the same struct. */
	assert_int_equal(lookup_start(&l, "127.0.0.1", NULL, SOCK_DGRAM), 0);
	lookup_stop(&l);
	assert_false(l.live);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_answer),
		cmocka_unit_test(test_stop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
