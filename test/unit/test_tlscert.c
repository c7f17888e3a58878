/* tlscert: a CA and the serving certificates it signs verify as a TLS
 * client checks them; wrong names, wrong CAs, expiry and junk do not. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <time.h>

#include "tlscert.h"

static void test_ca_and_serving(void **state)
{
	struct tlscert_pem ca, ca2, srv;
	const char *names[] = { "knit-webhook.knit-system.svc", "knit-webhook.knit-system.svc.cluster.local" };
	time_t now = time(NULL), end;

	assert_int_equal(tlscert_make_ca("knit-operator webhook CA", 3650, &ca), 0);
	assert_non_null(strstr(ca.cert, "BEGIN CERTIFICATE"));
	assert_non_null(strstr(ca.key, "BEGIN PRIVATE KEY"));
	assert_int_equal(tlscert_make_serving(&ca, names, 2, 365, &srv), 0);
	assert_true(tlscert_usable(srv.cert, ca.cert, names[0], now, 0));
	assert_true(tlscert_usable(srv.cert, ca.cert, names[1], now, 30 * 86400));
	/* Another name, another CA, too close to the end: not usable. */
	assert_false(tlscert_usable(srv.cert, ca.cert, "other.knit-system.svc", now, 0));
	assert_int_equal(tlscert_make_ca("another CA", 10, &ca2), 0);
	assert_false(tlscert_usable(srv.cert, ca2.cert, names[0], now, 0));
	assert_false(tlscert_usable(srv.cert, ca.cert, names[0], now, 400 * 86400));
	assert_false(tlscert_usable(srv.cert, ca.cert, names[0], now + 366 * 86400, 0));
	/* notAfter is days from now (to the minute). */
	assert_int_equal(tlscert_not_after(srv.cert, &end), 0);
	assert_true(end > now + 365 * 86400 - 120 && end < now + 365 * 86400 + 120);
	assert_int_equal(tlscert_not_after("junk", &end), -EINVAL);
	assert_false(tlscert_usable("junk", ca.cert, names[0], now, 0));
	/* The CA itself is not a serving certificate for the name. */
	assert_false(tlscert_usable(ca.cert, ca.cert, names[0], now, 0));
	tlscert_pem_free(&srv);
	tlscert_pem_free(&ca2);
	tlscert_pem_free(&ca);
	assert_null(ca.key);
}

static void test_bad_input(void **state)
{
	struct tlscert_pem ca, ca2, mixed, out;
	const char *bad[] = { "UPPER.example" }, *ok[] = { "a.svc" };

	assert_int_equal(tlscert_make_ca("", 1, &out), -EINVAL);
	assert_int_equal(tlscert_make_ca("x", 0, &out), -EINVAL);
	assert_int_equal(tlscert_make_ca("ca", 10, &ca), 0);
	assert_int_equal(tlscert_make_serving(&ca, bad, 1, 10, &out), -EINVAL);
	assert_int_equal(tlscert_make_serving(&ca, ok, 0, 10, &out), -EINVAL);
	/* A CA certificate with another CA's key. */
	assert_int_equal(tlscert_make_ca("ca2", 10, &ca2), 0);
	mixed.cert = ca.cert;
	mixed.key = ca2.key;
	assert_int_equal(tlscert_make_serving(&mixed, ok, 1, 10, &out), -EINVAL);
	mixed.key = (char *)"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n";
	assert_int_equal(tlscert_make_serving(&mixed, ok, 1, 10, &out), -EINVAL);
	assert_null(out.cert);
	tlscert_pem_free(&ca2);
	tlscert_pem_free(&ca);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ca_and_serving),
		cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
