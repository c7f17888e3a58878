/* lib/policy/conntrack.c: flows found, judged, expired and found no more;
 * a full bucket; and the table's memory faulted in only where flows land
 * (knitd carries one table per pod identity). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "policy/conntrack.h"

static struct ct_key key_of(unsigned n, uint8_t proto)
{
	struct ct_key k = { .family = AF_INET, .proto = proto, .rport = (uint16_t)(1000 + n % 60000), .lport = 443 };

	k.raddr[0] = 100;
	k.raddr[1] = 64;
	k.raddr[2] = (uint8_t)(n >> 8);
	k.raddr[3] = (uint8_t)n;
	k.laddr[0] = 100;
	k.laddr[1] = 64;
	k.laddr[3] = 1;
	return k;
}

static void test_find_judge_expire(void **state)
{
	struct conntrack *ct = conntrack_new(0);
	struct ct_flow f = { .origin = CT_ORIGIN_REMOTE, .gen = 3 }, got;
	struct conntrack_stats st;
	const uint64_t t0 = 1000;

	(void)state;
	assert_non_null(ct);
	assert_int_equal(conntrack_capacity(ct), CONNTRACK_DEFAULT_MAX);
	for (unsigned n = 0; n < 500; n++) {
		struct ct_key k = key_of(n, 17);
		assert_false(conntrack_find(ct, &k, CT_DIR_IN, 0, t0, NULL));
		assert_int_equal(conntrack_add(ct, &k, CT_DIR_IN, 0, t0, &f), 0);
	}
	for (unsigned n = 0; n < 500; n++) {
		struct ct_key k = key_of(n, 17);
		assert_true(conntrack_find(ct, &k, CT_DIR_IN, 0, t0 + 1, &got));
		assert_int_equal(got.gen, 3);
		assert_int_equal(got.origin, CT_ORIGIN_REMOTE);
	}
	{
		struct ct_key k = key_of(7, 17), other = key_of(7, 6);
		conntrack_judge(ct, &k, 4, true);
		assert_true(conntrack_peek(ct, &k, t0 + 2, &got));
		assert_int_equal(got.gen, 4);
		assert_true(got.denied);
		assert_false(conntrack_peek(ct, &other, t0 + 2, &got));
		conntrack_judge(ct, &other, 5, true); /* no such flow: nothing */
		assert_false(conntrack_find(ct, &other, CT_DIR_IN, 0, t0 + 2, NULL));
	}
	/* Nothing is due yet; then every flow is (unreplied UDP). */
	assert_int_equal(conntrack_expire(ct, t0 + 2), 0);
	conntrack_stats(ct, &st);
	assert_int_equal(st.entries, 500);
	assert_int_equal(conntrack_expire(ct, t0 + 1 + CT_TIMEOUT_UNREPLIED), 500);
	conntrack_stats(ct, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.expired, 500);
	assert_int_equal(conntrack_expire(ct, t0 + 2 * CT_TIMEOUT_UNREPLIED), 0);
	for (unsigned n = 0; n < 500; n++) {
		struct ct_key k = key_of(n, 17);
		assert_false(conntrack_find(ct, &k, CT_DIR_IN, 0, t0 + 1 + CT_TIMEOUT_UNREPLIED, NULL));
	}
	/* Emptied buckets take flows again. */
	{
		struct ct_key k = key_of(3, 17);
		uint64_t t1 = t0 + 3 * CT_TIMEOUT_UNREPLIED;
		assert_int_equal(conntrack_add(ct, &k, CT_DIR_OUT, 0, t1, &f), 0);
		assert_true(conntrack_find(ct, &k, CT_DIR_IN, 0, t1 + 1, NULL));
		assert_int_equal(conntrack_expire(ct, t1 + 1 + CT_TIMEOUT_UNREPLIED), 0); /* replied: longer */
		assert_int_equal(conntrack_expire(ct, t1 + 2 + CT_TIMEOUT_REPLIED), 1);
	}
	conntrack_free(ct);
}

/* One bucket: replied flows are kept, an unreplied one is evicted for a
 * newcomer; with only replied flows a new one is refused. */
static void test_full_bucket(void **state)
{
	struct conntrack *ct = conntrack_new(CONNTRACK_SLOTS);
	struct ct_flow f = { .origin = CT_ORIGIN_LOCAL };
	struct conntrack_stats st;

	(void)state;
	assert_non_null(ct);
	assert_int_equal(conntrack_capacity(ct), CONNTRACK_SLOTS);
	for (unsigned n = 0; n < CONNTRACK_SLOTS; n++) {
		struct ct_key k = key_of(n, 17);
		assert_int_equal(conntrack_add(ct, &k, CT_DIR_OUT, 0, 10 + n, &f), 0);
	}
	{
		struct ct_key k = key_of(100, 17), first = key_of(0, 17);
		assert_int_equal(conntrack_add(ct, &k, CT_DIR_OUT, 0, 100, &f), 0);
		assert_false(conntrack_find(ct, &first, CT_DIR_OUT, 0, 101, NULL)); /* the oldest went */
	}
	for (unsigned n = 1; n < CONNTRACK_SLOTS; n++) {
		struct ct_key k = key_of(n, 17);
		assert_true(conntrack_find(ct, &k, CT_DIR_IN, 0, 102, NULL)); /* replied now */
	}
	{
		struct ct_key k = key_of(100, 17), late = key_of(200, 17);
		assert_true(conntrack_find(ct, &k, CT_DIR_IN, 0, 102, NULL));
		assert_int_equal(conntrack_add(ct, &late, CT_DIR_OUT, 0, 103, &f), -ENOSPC);
	}
	conntrack_stats(ct, &st);
	assert_int_equal(st.evicted, 1);
	assert_int_equal(st.full, 1);
	conntrack_free(ct);
}

static long resident_kb(void)
{
	long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * 4;
}

/* 16 default tables (1.2 MB each if touched) with a few flows each stay
 * far below 1 MB resident: only the buckets flows land in are faulted in,
 * and neither lookups of absent flows nor expiry passes touch the rest. */
static void test_memory_follows_flows(void **state)
{
	enum { TABLES = 16, FLOWS = 4 };
	struct conntrack *ct[TABLES];
	struct ct_flow f = { .origin = CT_ORIGIN_LOCAL };
	long before = resident_kb(), grown;

	(void)state;
	assert_true(before > 0);
	for (int t = 0; t < TABLES; t++) {
		assert_non_null(ct[t] = conntrack_new(0));
		for (unsigned n = 0; n < FLOWS; n++) {
			struct ct_key k = key_of(n, 6);
			assert_int_equal(conntrack_add(ct[t], &k, CT_DIR_OUT, 0x02, 5, &f), 0);
		}
		for (unsigned n = 0; n < 2000; n++) {
			struct ct_key k = key_of(1000 + n, 17);
			assert_false(conntrack_find(ct[t], &k, CT_DIR_IN, 0, 6, NULL));
		}
		assert_int_equal(conntrack_expire(ct[t], 7), 0);
	}
	grown = resident_kb() - before;
	print_message("%d tables of %zu flows with %u flows each: %ld KB resident\n", TABLES,
		      (size_t)CONNTRACK_DEFAULT_MAX, FLOWS, grown);
	assert_true(grown < 1024);
	for (int t = 0; t < TABLES; t++)
		conntrack_free(ct[t]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find_judge_expire),
		cmocka_unit_test(test_full_bucket),
		cmocka_unit_test(test_memory_follows_flows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
