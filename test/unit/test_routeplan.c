/* routeplan: which of a netmap's prefixes reach knit's routing table, and
 * which host networks are thrown back to the main table. Table-driven. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "routeplan.h"

#define MAXP 8

struct want_text {
	const char *prefix;
	enum routeplan_kind kind;
	bool from_exit;
};

struct plan_case {
	const char *name;
	struct want_text want[MAXP];
	const char *connected[MAXP];
	const char *keep[MAXP];
	struct routeplan_opts opts;
	const char *expect; /* "R 100.64.0.7/32 T 10.1.0.0/24 ..." in table order */
	size_t skip_host, skip_accept, skip_exit;
};

static const struct plan_case cases[] = {
	{ "tailnet addresses always",
	  { { "100.64.0.7/32", ROUTEPLAN_TAILNET, false }, { "fd7a:115c:a1e0::7/128", ROUTEPLAN_TAILNET, false } },
	  { "10.1.0.0/24" }, { "10.1.0.1/32" }, { 0 },
	  "R 100.64.0.7/32 R fd7a:115c:a1e0::7/128", 0, 0, 0 },
	{ "duplicates once",
	  { { "100.64.0.7/32", ROUTEPLAN_TAILNET, false }, { "100.64.0.7/32", ROUTEPLAN_TAILNET, false } },
	  { 0 }, { 0 }, { 0 }, "R 100.64.0.7/32", 0, 0, 0 },
	{ "subnet routes need accept-routes",
	  { { "192.168.50.0/24", ROUTEPLAN_SUBNET, false } }, { "10.1.0.0/24" }, { 0 }, { 0 }, "", 0, 1, 0 },
	{ "subnet accepted",
	  { { "192.168.50.0/24", ROUTEPLAN_SUBNET, false } }, { "10.1.0.0/24" }, { 0 }, { .accept_routes = true },
	  "R 192.168.50.0/24", 0, 0, 0 },
	{ "subnet equal to the LAN is never routed",
	  { { "10.1.0.0/24", ROUTEPLAN_SUBNET, false } }, { "10.1.0.0/24" }, { 0 }, { .accept_routes = true }, "", 1, 0, 0 },
	{ "subnet inside the LAN is never routed",
	  { { "10.1.0.128/25", ROUTEPLAN_SUBNET, false } }, { "10.1.0.0/24" }, { 0 }, { .accept_routes = true }, "", 1, 0, 0 },
	{ "subnet covering the LAN: routed, LAN thrown back",
	  { { "10.0.0.0/8", ROUTEPLAN_SUBNET, false } }, { "10.1.0.0/24", "172.16.0.0/12" }, { 0 }, { .accept_routes = true },
	  "R 10.0.0.0/8 T 10.1.0.0/24", 0, 0, 0 },
	{ "the coordination server's address is thrown back",
	  { { "10.0.0.0/8", ROUTEPLAN_SUBNET, false } }, { 0 }, { "10.9.9.9/32", "192.0.2.1/32" }, { .accept_routes = true },
	  "R 10.0.0.0/8 T 10.9.9.9/32", 0, 0, 0 },
	{ "a route to the coordination server itself is never installed",
	  { { "10.9.9.9/32", ROUTEPLAN_SUBNET, false } }, { 0 }, { "10.9.9.9/32" }, { .accept_routes = true }, "", 1, 0, 0 },
	{ "default routes only from the chosen exit node",
	  { { "0.0.0.0/0", ROUTEPLAN_EXIT, false }, { "::/0", ROUTEPLAN_EXIT, false } },
	  { "10.1.0.0/24" }, { 0 }, { .accept_routes = true, .use_exit_node = true }, "", 0, 0, 2 },
	{ "no exit node chosen",
	  { { "0.0.0.0/0", ROUTEPLAN_EXIT, true } }, { "10.1.0.0/24" }, { 0 }, { .accept_routes = true }, "", 0, 0, 1 },
	{ "a default route dressed as a subnet is still an exit route",
	  { { "0.0.0.0/0", ROUTEPLAN_SUBNET, false } }, { 0 }, { 0 }, { .accept_routes = true }, "", 0, 0, 1 },
	{ "exit node chosen: default routed, LAN and server thrown back",
	  { { "0.0.0.0/0", ROUTEPLAN_EXIT, true }, { "::/0", ROUTEPLAN_EXIT, true }, { "100.64.0.9/32", ROUTEPLAN_TAILNET, false } },
	  { "10.1.0.0/24", "fe80::/64" }, { "10.9.9.9/32" }, { .use_exit_node = true },
	  "R 0.0.0.0/0 T 10.1.0.0/24 T 10.9.9.9/32 R 100.64.0.9/32 R ::/0 T fe80::/64", 0, 0, 0 },
	{ "tailnet address inside a host network (CGNAT LAN) is skipped",
	  { { "100.64.0.7/32", ROUTEPLAN_TAILNET, false } }, { "100.64.0.0/24" }, { 0 }, { 0 }, "", 1, 0, 0 },
	{ "IPv6 subnet covering an IPv6 LAN",
	  { { "2001:db8::/32", ROUTEPLAN_SUBNET, false } }, { "2001:db8:1::/64", "10.1.0.0/24" }, { 0 }, { .accept_routes = true },
	  "R 2001:db8::/32 T 2001:db8:1::/64", 0, 0, 0 },
	{ "nothing at all", { { 0 } }, { 0 }, { 0 }, { 0 }, "", 0, 0, 0 },
};

static size_t prefixes(const char *const *text, struct netmap_prefix *out)
{
	size_t n = 0;

	for (; n < MAXP && text[n]; n++)
		assert_true(netmap_prefix_parse(&out[n], text[n]));
	return n;
}

static void render(const struct routeplan *p, char *out, size_t len)
{
	char pfx[64];

	out[0] = '\0';
	for (size_t i = 0; i < p->n; i++) {
		size_t used = strlen(out);
		assert_true(netmap_prefix_format(&p->entries[i].prefix, false, pfx, sizeof(pfx)) > 0);
		snprintf(out + used, len - used, "%s%c %s", i ? " " : "",
			 p->entries[i].type == ROUTEPLAN_ROUTE ? 'R' : 'T', pfx);
	}
}

static void test_cases(void **state)
{
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct plan_case *tc = &cases[c];
		struct netmap_prefix conn[MAXP], keep[MAXP];
		struct routeplan_want want[MAXP];
		struct routeplan_host host = { conn, 0, keep, 0 };
		struct routeplan p;
		size_t nw = 0;
		char got[1024];

		for (; nw < MAXP && tc->want[nw].prefix; nw++) {
			assert_true(netmap_prefix_parse(&want[nw].prefix, tc->want[nw].prefix));
			want[nw].kind = tc->want[nw].kind;
			want[nw].from_exit_node = tc->want[nw].from_exit;
		}
		host.nconnected = prefixes(tc->connected, conn);
		host.nkeep = prefixes(tc->keep, keep);
		assert_int_equal(routeplan_build(want, nw, &host, &tc->opts, &p), 0);
		render(&p, got, sizeof(got));
		if (strcmp(got, tc->expect))
			fail_msg("%s: got \"%s\", want \"%s\"", tc->name, got, tc->expect);
		if (p.skipped[ROUTEPLAN_SKIP_HOST_ROUTE] != tc->skip_host ||
		    p.skipped[ROUTEPLAN_SKIP_NOT_ACCEPTED] != tc->skip_accept ||
		    p.skipped[ROUTEPLAN_SKIP_NO_EXIT] != tc->skip_exit)
			fail_msg("%s: skipped host %zu accept %zu exit %zu", tc->name,
				 p.skipped[ROUTEPLAN_SKIP_HOST_ROUTE], p.skipped[ROUTEPLAN_SKIP_NOT_ACCEPTED],
				 p.skipped[ROUTEPLAN_SKIP_NO_EXIT]);
		routeplan_free(&p);
	}
}

/* Choosing an exit node adds the default route and the throws it needs;
 * unchoosing removes exactly those, the tailnet routes untouched. */
static void test_diff(void **state)
{
	struct netmap_prefix conn[1];
	struct routeplan_want want[2];
	struct routeplan_host host = { conn, 1, NULL, 0 };
	struct routeplan a, b, add, del, none;
	char got[512];

	assert_true(netmap_prefix_parse(&conn[0], "10.1.0.0/24"));
	assert_true(netmap_prefix_parse(&want[0].prefix, "0.0.0.0/0"));
	want[0].kind = ROUTEPLAN_EXIT;
	want[0].from_exit_node = true;
	assert_true(netmap_prefix_parse(&want[1].prefix, "100.64.0.9/32"));
	want[1].kind = ROUTEPLAN_TAILNET;
	want[1].from_exit_node = true;
	assert_int_equal(routeplan_build(want, 2, &host, &(struct routeplan_opts){ 0 }, &a), 0);
	assert_int_equal(routeplan_build(want, 2, &host, &(struct routeplan_opts){ .use_exit_node = true }, &b), 0);
	assert_int_equal(routeplan_diff(&a, &b, &add, &del), 0);
	render(&add, got, sizeof(got));
	assert_string_equal(got, "R 0.0.0.0/0 T 10.1.0.0/24");
	assert_int_equal(del.n, 0);
	routeplan_free(&add);
	routeplan_free(&del);
	assert_int_equal(routeplan_diff(&b, &a, &add, &del), 0);
	render(&del, got, sizeof(got));
	assert_string_equal(got, "R 0.0.0.0/0 T 10.1.0.0/24");
	assert_int_equal(add.n, 0);
	routeplan_free(&add);
	routeplan_free(&del);
	/* Against nothing: everything is added; and the same plan diffs empty. */
	memset(&none, 0, sizeof(none));
	assert_int_equal(routeplan_diff(&none, &b, &add, &del), 0);
	assert_int_equal(add.n, 3);
	assert_int_equal(del.n, 0);
	routeplan_free(&add);
	routeplan_free(&del);
	assert_int_equal(routeplan_diff(&b, &b, &add, &del), 0);
	assert_int_equal(add.n + del.n, 0);
	routeplan_free(&add);
	routeplan_free(&del);
	routeplan_free(&a);
	routeplan_free(&b);
}

static void test_covers(void **state)
{
	struct netmap_prefix a, b;

	assert_true(netmap_prefix_parse(&a, "10.0.0.0/8"));
	assert_true(netmap_prefix_parse(&b, "10.200.3.0/24"));
	assert_true(routeplan_prefix_covers(&a, &b));
	assert_false(routeplan_prefix_covers(&b, &a));
	assert_true(routeplan_prefix_covers(&a, &a));
	assert_true(netmap_prefix_parse(&a, "10.1.0.0/17"));
	assert_true(netmap_prefix_parse(&b, "10.1.128.0/24"));
	assert_false(routeplan_prefix_covers(&a, &b));
	assert_true(netmap_prefix_parse(&b, "10.1.127.0/24"));
	assert_true(routeplan_prefix_covers(&a, &b));
	assert_true(netmap_prefix_parse(&b, "fd00::/8"));
	assert_false(routeplan_prefix_covers(&a, &b));
	assert_string_equal(routeplan_skip_name(ROUTEPLAN_SKIP_HOST_ROUTE), "host_route");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_diff),
		cmocka_unit_test(test_covers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
