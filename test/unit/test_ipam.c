#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ipam.h"

static void test_parse(void **state)
{
	struct ipam_pool p;
	char err[128];
	static const struct {
		const char *cidr, *want_err;
	} bad[] = {
		{ "100.64.0.0", "not a CIDR" },
		{ "100.64.0.1/10", "host bits set" },
		{ "100.64.0.0/33", "bad prefix length" },
		{ "100.64.0.0/-1", "bad prefix length" },
		{ "100.64.0.0/1x", "bad prefix length" },
		{ "100.64.0.0/abc", "bad prefix length" },
		{ "100.64.0.0/+10", "bad prefix length" },
		{ "100.64.0.0/ 10", "bad prefix length" },
		{ "100.64.0.0/010", "bad prefix length" },
		{ "100.64.0.0/", "bad prefix length" },
		{ "nonsense/8", "not an IP address" },
		{ "10.0.0.0/32", "pool too small" },
		{ "fd7a::/129", "bad prefix length" },
		{ "", "not a CIDR" },
	};

	assert_true(ipam_pool_parse("100.64.0.0/10", &p, err, sizeof(err)));
	assert_int_equal(p.family, AF_INET);
	assert_int_equal(p.bits, 10);
	assert_int_equal(ipam_pool_size(&p), 1u << 22);
	assert_true(ipam_pool_parse("fd7a:115c:a1e0::/48", &p, err, sizeof(err)));
	assert_int_equal(p.family, AF_INET6);
	assert_int_equal(ipam_pool_size(&p), 1ull << 32); /* capped */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (ipam_pool_parse(bad[i].cidr, &p, err, sizeof(err)) || !strstr(err, bad[i].want_err))
			fail_msg("\"%s\": err \"%s\", want \"%s\"", bad[i].cidr, err, bad[i].want_err);
	}
}

static void test_addresses_and_reserved(void **state)
{
	struct ipam_pool p;
	char a[64];
	uint64_t off;

	assert_true(ipam_pool_parse("100.64.0.0/10", &p, NULL, 0));
	assert_false(ipam_address_at(&p, 0, a, sizeof(a))); /* network */
	assert_true(ipam_address_at(&p, 1, a, sizeof(a)));
	assert_string_equal(a, "100.64.0.1");
	assert_true(ipam_address_at(&p, 256, a, sizeof(a)));
	assert_string_equal(a, "100.64.1.0");
	assert_false(ipam_address_at(&p, (1u << 22) - 1, a, sizeof(a))); /* broadcast */
	assert_false(ipam_address_at(&p, 1u << 22, a, sizeof(a))); /* out of range */
	/* 100.100.100.0/24 is MagicDNS's. */
	assert_true(ipam_offset_of(&p, "100.100.100.100", &off));
	assert_false(ipam_address_at(&p, off, a, sizeof(a)));
	assert_true(ipam_offset_of(&p, "100.115.93.7", &off));
	assert_false(ipam_address_at(&p, off, a, sizeof(a)));
	assert_true(ipam_offset_of(&p, "100.100.101.1", &off));
	assert_true(ipam_address_at(&p, off, a, sizeof(a)));
	assert_string_equal(a, "100.100.101.1");
	assert_false(ipam_offset_of(&p, "100.128.0.1", &off));
	assert_false(ipam_offset_of(&p, "fd7a::1", &off));

	assert_true(ipam_pool_parse("fd7a:115c:a1e0::/48", &p, NULL, 0));
	assert_true(ipam_address_at(&p, 5, a, sizeof(a)));
	assert_string_equal(a, "fd7a:115c:a1e0::5");
	assert_false(ipam_address_at(&p, 0x53, a, sizeof(a))); /* the v6 MagicDNS address */
	assert_true(ipam_address_at(&p, 0x12345678, a, sizeof(a)));
	assert_string_equal(a, "fd7a:115c:a1e0::1234:5678");
	assert_true(ipam_offset_of(&p, "fd7a:115c:a1e0::1234:5678", &off));
	assert_int_equal(off, 0x12345678);
	/* Beyond the 32-bit offsets we hand out. */
	assert_false(ipam_offset_of(&p, "fd7a:115c:a1e0::1:0:0", &off));
	assert_false(ipam_offset_of(&p, "fd7a:115c:a1e1::1", &off));
}

static void test_small_pool_round_trip(void **state)
{
	struct ipam_pool p;
	char a[64];
	int usable = 0;

	assert_true(ipam_pool_parse("10.1.2.0/29", &p, NULL, 0));
	for (uint64_t off = 0; off < ipam_pool_size(&p); off++) {
		uint64_t back;
		if (!ipam_address_at(&p, off, a, sizeof(a)))
			continue;
		usable++;
		assert_true(ipam_offset_of(&p, a, &back));
		assert_int_equal(back, off);
	}
	assert_int_equal(usable, 6); /* .1 - .6 */
}

static void test_start_offset_spreads(void **state)
{
	struct ipam_pool p;
	uint64_t a, b;

	assert_true(ipam_pool_parse("100.64.0.0/10", &p, NULL, 0));
	a = ipam_start_offset(&p, "dev-0001");
	b = ipam_start_offset(&p, "dev-0002");
	assert_true(a < ipam_pool_size(&p));
	assert_int_not_equal(a, b);
	assert_int_equal(a, ipam_start_offset(&p, "dev-0001"));
}

static void test_claim_name(void **state)
{
	char n[64];

	assert_int_equal(ipam_claim_name("default", "100.64.0.5", n, sizeof(n)), 0);
	assert_string_equal(n, "default.100.64.0.5");
	assert_int_equal(ipam_claim_name("default", "fd7a:115c:a1e0::5", n, sizeof(n)), 0);
	assert_string_equal(n, "default.fd7a-115c-a1e0--5");
	assert_int_equal(ipam_claim_name("t", "fd7a::", n, sizeof(n)), 0);
	assert_string_equal(n, "t.fd7a--0");
	assert_int_equal(ipam_claim_name("a-very-long-tailnet-name", "fd7a:115c:a1e0::1234:5678", n, 20), -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_addresses_and_reserved),
		cmocka_unit_test(test_small_pool_round_trip),
		cmocka_unit_test(test_start_offset_spreads),
		cmocka_unit_test(test_claim_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
