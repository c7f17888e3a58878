/* Allowed-IPs trie: table-driven cases and a randomized comparison with a
 * brute-force longest-prefix match. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "wg/allowedips.h"

static struct allowedips_peer peers[8];
#define P(n) (&peers[n])

static int family_of(const char *s)
{
	return strchr(s, ':') ? AF_INET6 : AF_INET;
}

static void addr_of(const char *s, uint8_t out[16])
{
	assert_int_equal(inet_pton(family_of(s), s, out), 1);
}

static void ins(struct allowedips *t, const char *s, uint8_t cidr, int peer)
{
	uint8_t a[16];

	addr_of(s, a);
	assert_int_equal(allowedips_insert(t, family_of(s), a, cidr, P(peer)), 0);
}

static struct allowedips_peer *look(struct allowedips *t, const char *s)
{
	uint8_t a[16];

	addr_of(s, a);
	return allowedips_lookup(t, family_of(s), a);
}

static int rem(struct allowedips *t, const char *s, uint8_t cidr, struct allowedips_peer *peer)
{
	uint8_t a[16];

	addr_of(s, a);
	return allowedips_remove(t, family_of(s), a, cidr, peer);
}

static int setup(void **state)
{
	static struct allowedips t;

	memset(peers, 0, sizeof(peers));
	allowedips_init(&t);
	*state = &t;
	return 0;
}

static int teardown(void **state)
{
	allowedips_free(*state);
	return 0;
}

/* Inserted prefixes and the peer each address must match (-1: none). */
static const struct {
	const char *addr;
	uint8_t cidr;
	int peer;
} table_prefixes[] = {
	{ "192.168.4.0", 24, 0 },
	{ "192.168.4.4", 32, 1 },
	{ "192.168.0.0", 16, 2 },
	{ "192.95.5.64", 27, 3 },
	{ "192.95.5.65", 32, 2 },
	{ "10.0.0.0", 8, 4 },
	{ "10.1.0.0", 16, 5 },
	{ "10.1.128.0", 17, 6 },
	{ "2607:5300:60:6b0::c05f:543", 128, 3 },
	{ "2607:5300:60:6b0::", 64, 4 },
	{ "2001:db8::", 32, 5 },
	{ "2001:db8:1::", 48, 6 },
	{ "::", 0, 7 },
};

static const struct {
	const char *addr;
	int peer;
} table_lookups[] = {
	{ "192.168.4.20", 0 },
	{ "192.168.4.0", 0 },
	{ "192.168.4.4", 1 },
	{ "192.168.200.182", 2 },
	{ "192.95.5.68", 3 },
	{ "192.95.5.65", 2 },
	{ "192.95.5.96", -1 },
	{ "10.255.0.1", 4 },
	{ "10.1.1.1", 5 },
	{ "10.1.200.1", 6 },
	{ "11.0.0.0", -1 },
	{ "2607:5300:60:6b0::c05f:543", 3 },
	{ "2607:5300:60:6b0::c02e:1ee", 4 },
	{ "2607:5300:60:6b1::1", 7 },
	{ "2001:db8:2::1", 5 },
	{ "2001:db8:1:ffff::1", 6 },
	{ "fe80::1", 7 },
};

static void test_table(void **state)
{
	struct allowedips *t = *state;

	for (size_t i = 0; i < sizeof(table_prefixes) / sizeof(table_prefixes[0]); i++)
		ins(t, table_prefixes[i].addr, table_prefixes[i].cidr, table_prefixes[i].peer);
	for (size_t i = 0; i < sizeof(table_lookups) / sizeof(table_lookups[0]); i++) {
		struct allowedips_peer *want = table_lookups[i].peer < 0 ? NULL : P(table_lookups[i].peer);

		if (look(t, table_lookups[i].addr) != want)
			fail_msg("lookup %s", table_lookups[i].addr);
	}
}

static void test_zero_and_host(void **state)
{
	struct allowedips *t = *state;

	assert_null(look(t, "1.2.3.4"));
	ins(t, "0.0.0.0", 0, 0);
	assert_ptr_equal(look(t, "1.2.3.4"), P(0));
	assert_ptr_equal(look(t, "255.255.255.255"), P(0));
	assert_null(look(t, "::1")); /* families are separate */
	ins(t, "1.2.3.4", 32, 1);
	assert_ptr_equal(look(t, "1.2.3.4"), P(1));
	assert_ptr_equal(look(t, "1.2.3.5"), P(0));
	ins(t, "::", 0, 2);
	ins(t, "::1", 128, 3);
	assert_ptr_equal(look(t, "::1"), P(3));
	assert_ptr_equal(look(t, "::2"), P(2));
	assert_int_equal(rem(t, "0.0.0.0", 0, NULL), 0);
	assert_null(look(t, "9.9.9.9"));
	assert_ptr_equal(look(t, "1.2.3.4"), P(1));
}

/* Host bits past the prefix length are ignored and not reported back. */
struct listed {
	int n;
	char s[8][64];
};

static int collect(void *arg, int family, const uint8_t *addr, uint8_t cidr)
{
	struct listed *l = arg;
	char ip[INET6_ADDRSTRLEN];

	inet_ntop(family, addr, ip, sizeof(ip));
	snprintf(l->s[l->n++], sizeof(l->s[0]), "%s/%u", ip, cidr);
	return l->n == 8;
}

static bool listed_has(const struct listed *l, const char *s)
{
	for (int i = 0; i < l->n; i++)
		if (!strcmp(l->s[i], s))
			return true;
	return false;
}

static void test_host_bits_masked(void **state)
{
	struct allowedips *t = *state;
	struct listed l = { 0 };

	ins(t, "10.1.2.3", 8, 0);
	assert_ptr_equal(look(t, "10.200.0.1"), P(0));
	ins(t, "10.9.9.9", 8, 1); /* same prefix: moves to peer 1 */
	assert_ptr_equal(look(t, "10.200.0.1"), P(1));
	assert_null(P(0)->nodes);
	ins(t, "2001:db8:7fff::ffff", 33, 1);
	assert_ptr_equal(look(t, "2001:db8:7fff::1"), P(1));
	assert_null(look(t, "2001:db8:8000::1"));
	assert_int_equal(allowedips_foreach(t, P(1), collect, &l), 0);
	assert_int_equal(l.n, 2);
	assert_true(listed_has(&l, "10.0.0.0/8"));
	assert_true(listed_has(&l, "2001:db8::/33"));
}

static void test_foreach_and_peer_removal(void **state)
{
	struct allowedips *t = *state;
	struct listed l = { 0 };

	ins(t, "10.0.0.77", 24, 0);
	ins(t, "10.0.1.0", 24, 1);
	ins(t, "fd00::1", 64, 0);
	ins(t, "192.168.1.1", 32, 0);
	ins(t, "10.0.0.0", 16, 1);
	assert_int_equal(allowedips_foreach(t, P(0), collect, &l), 0);
	assert_int_equal(l.n, 3);
	assert_true(listed_has(&l, "10.0.0.0/24"));
	assert_true(listed_has(&l, "fd00::/64"));
	assert_true(listed_has(&l, "192.168.1.1/32"));

	allowedips_remove_by_peer(t, P(0));
	assert_null(P(0)->nodes);
	assert_ptr_equal(look(t, "10.0.0.5"), P(1)); /* falls back to the /16 */
	assert_null(look(t, "fd00::1"));
	assert_null(look(t, "192.168.1.1"));
	assert_ptr_equal(look(t, "10.0.1.5"), P(1));
	allowedips_remove_by_peer(t, P(1));
	assert_null(look(t, "10.0.1.5"));
	assert_null(t->root4);
	assert_null(t->root6);
}

static void test_remove(void **state)
{
	struct allowedips *t = *state;

	ins(t, "10.0.0.0", 8, 0);
	ins(t, "10.1.0.0", 16, 1);
	ins(t, "10.1.1.0", 24, 2);
	assert_int_equal(rem(t, "10.1.0.0", 16, P(0)), -ENOENT); /* wrong owner */
	assert_int_equal(rem(t, "10.1.0.0", 15, NULL), -ENOENT); /* no such prefix */
	assert_int_equal(rem(t, "10.1.0.0", 16, P(1)), 0);
	assert_int_equal(rem(t, "10.1.0.0", 16, P(1)), -ENOENT);
	assert_ptr_equal(look(t, "10.1.2.3"), P(0));
	assert_ptr_equal(look(t, "10.1.1.3"), P(2));
	assert_int_equal(rem(t, "10.1.1.99", 24, NULL), 0); /* host bits ignored */
	assert_ptr_equal(look(t, "10.1.1.3"), P(0));
	assert_int_equal(rem(t, "1.2.3.4", 33, NULL), -EINVAL);
	assert_int_equal(allowedips_insert(t, AF_INET, "\1\2\3\4", 33, P(0)), -EINVAL);
	assert_int_equal(allowedips_insert(t, AF_UNIX, "\1\2\3\4", 8, P(0)), -EINVAL);
	assert_null(allowedips_lookup(t, AF_UNIX, "\1\2\3\4"));
}

/* ---- randomized against brute force ---- */

struct ref {
	uint8_t addr[16];
	uint8_t cidr;
	int family;
	int peer; /* -1 removed */
};

static bool ref_match(const struct ref *r, int family, const uint8_t *a)
{
	unsigned full = r->cidr / 8, rest = r->cidr % 8;

	if (r->family != family || memcmp(r->addr, a, full))
		return false;
	return !rest || ((r->addr[full] ^ a[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static void mask(uint8_t *a, unsigned cidr, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++) {
		if (i * 8 >= cidr)
			a[i] = 0;
		else if (i * 8 + 8 > cidr)
			a[i] &= (uint8_t)(0xff << (8 - (cidr - i * 8)));
	}
}

static void random_addr(uint8_t *a, int family)
{
	/* cluster addresses so prefixes overlap a lot */
	for (int i = 0; i < 16; i++)
		a[i] = (uint8_t)rand();
	a[0] = (uint8_t)(rand() % 4);
	if (family == AF_INET6)
		a[1] = (uint8_t)(rand() % 4);
}

static void test_random_vs_bruteforce(void **state)
{
	enum { NPREFIX = 10000, NLOOKUP = 10000 };
	struct allowedips *t = *state;
	struct ref *refs = calloc(NPREFIX, sizeof(*refs));
	int n = 0;

	assert_non_null(refs);
	srand(42);
	for (int i = 0; i < NPREFIX; i++) {
		struct ref *r = &refs[n];
		unsigned bits;

		r->family = rand() % 2 ? AF_INET : AF_INET6;
		bits = r->family == AF_INET ? 32 : 128;
		random_addr(r->addr, r->family);
		r->cidr = (uint8_t)(rand() % (bits + 1));
		r->peer = rand() % 8;
		assert_int_equal(allowedips_insert(t, r->family, r->addr, r->cidr, P(r->peer)), 0);
		mask(r->addr, r->cidr, bits / 8);
		/* re-insert replaces the owner in the reference too */
		for (int j = 0; j < n; j++)
			if (refs[j].family == r->family && refs[j].cidr == r->cidr && refs[j].peer >= 0 &&
			    !memcmp(refs[j].addr, r->addr, bits / 8))
				refs[j].peer = -1;
		n++;
		/* occasionally remove one */
		if (rand() % 10 == 0) {
			struct ref *d = &refs[rand() % n];

			if (d->peer >= 0) {
				assert_int_equal(allowedips_remove(t, d->family, d->addr, d->cidr, P(d->peer)), 0);
				d->peer = -1;
			}
		}
	}
	for (int i = 0; i < NLOOKUP; i++) {
		int family = rand() % 2 ? AF_INET : AF_INET6;
		uint8_t a[16];
		struct allowedips_peer *want = NULL;
		int best = -1;

		random_addr(a, family);
		for (int j = 0; j < n; j++)
			if (refs[j].peer >= 0 && refs[j].cidr > best && ref_match(&refs[j], family, a)) {
				best = refs[j].cidr;
				want = P(refs[j].peer);
			}
		assert_ptr_equal(allowedips_lookup(t, family, a), want);
	}
	/* remove a whole peer and check again */
	allowedips_remove_by_peer(t, P(3));
	for (int j = 0; j < n; j++)
		if (refs[j].peer == 3)
			refs[j].peer = -1;
	for (int i = 0; i < NLOOKUP; i++) {
		int family = rand() % 2 ? AF_INET : AF_INET6;
		uint8_t a[16];
		struct allowedips_peer *want = NULL;
		int best = -1;

		random_addr(a, family);
		for (int j = 0; j < n; j++)
			if (refs[j].peer >= 0 && refs[j].cidr > best && ref_match(&refs[j], family, a)) {
				best = refs[j].cidr;
				want = P(refs[j].peer);
			}
		assert_ptr_equal(allowedips_lookup(t, family, a), want);
	}
	free(refs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_and_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_bits_masked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreach_and_peer_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_vs_bruteforce, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
