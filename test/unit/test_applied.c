/* agent/applied.c: netmap application as a pure function. Each case is a
 * series of steps, a full netmap or a delta written in a small notation,
 * and the operations the step must plan, in order; after each step every
 * op is taken as done (or failed, where the step says so) and committed.
 *
 * Notation: "self=CIDR,CIDR; kNN=CIDR,CIDR@ENDPOINT; ..." for a full
 * netmap; a delta is "delta; -kNN; +kNN=...; self=..." (self only when
 * given). Ops print as "remove kNN", "set kNN aips=N ep=E" (what the flags
 * touch), "addr+ CIDR", "addr- CIDR", "route+ CIDR", "route- CIDR"; an
 * op written "!op" is planned and then fails. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "applied.h"
#include "control/messages.h"
#include "net/endpoint.h"

#define MAX_OPS 16

struct step {
	const char *input;
	const char *ops[MAX_OPS]; /* NULL-terminated; "!op": it fails when run */
};

struct tcase {
	const char *name;
	struct step steps[6];
};

/* ---- the notation ---- */

static void parse_prefixes(const char *text, struct netmap_prefix **out, size_t *n)
{
	char buf[4096], *save = NULL;

	*out = NULL;
	*n = 0;
	snprintf(buf, sizeof(buf), "%s", text);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		*out = realloc(*out, (*n + 1) * sizeof(**out));
		assert_non_null(*out);
		assert_true(netmap_prefix_parse(&(*out)[*n], t));
		(*n)++;
	}
}

/* "kNN=CIDR,...@EP" into n (key byte NN). */
static void parse_node(const char *text, struct netmap_node *n)
{
	char buf[4096], *at, *eq;
	const char *why;

	memset(n, 0, sizeof(*n));
	snprintf(buf, sizeof(buf), "%s", text);
	assert_true(buf[0] == 'k');
	n->node_key[0] = (uint8_t)strtoul(buf + 1, NULL, 16);
	n->node_key[31] = 0x5a;
	if ((at = strchr(buf, '@'))) {
		*at++ = '\0';
		n->endpoints = calloc(1, sizeof(*n->endpoints));
		assert_non_null(n->endpoints);
		assert_true(endpoint_parse(&n->endpoints[0], at, &why));
		n->nendpoints = 1;
	}
	if ((eq = strchr(buf, '=')))
		parse_prefixes(eq + 1, &n->allowed_ips, &n->nallowed_ips);
}

static char *trim(char *s)
{
	while (*s == ' ')
		s++;
	for (size_t n = strlen(s); n && s[n - 1] == ' '; n--)
		s[n - 1] = '\0';
	return s;
}

static void parse_netmap(const char *text, struct netmap *nm)
{
	char buf[8192], *save = NULL;

	memset(nm, 0, sizeof(*nm));
	snprintf(buf, sizeof(buf), "%s", text);
	for (char *t = strtok_r(buf, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
		t = trim(t);
		if (!strncmp(t, "self=", 5)) {
			parse_prefixes(t + 5, &nm->self.addresses, &nm->self.naddresses);
			continue;
		}
		nm->peers = realloc(nm->peers, (nm->npeers + 1) * sizeof(*nm->peers));
		assert_non_null(nm->peers);
		parse_node(t, &nm->peers[nm->npeers++]);
	}
}

static void parse_delta(const char *text, struct netmap_delta *d)
{
	char buf[8192], *save = NULL;

	memset(d, 0, sizeof(*d));
	snprintf(buf, sizeof(buf), "%s", text);
	for (char *t = strtok_r(buf, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
		t = trim(t);
		if (!strcmp(t, "delta"))
			continue;
		if (!strncmp(t, "self=", 5)) {
			d->has |= NETMAP_HAS_SELF;
			parse_prefixes(t + 5, &d->self.addresses, &d->self.naddresses);
		} else if (t[0] == '-') {
			d->remove = realloc(d->remove, (d->nremove + 1) * sizeof(*d->remove));
			assert_non_null(d->remove);
			memset(d->remove[d->nremove], 0, 32);
			d->remove[d->nremove][0] = (uint8_t)strtoul(t + 2, NULL, 16);
			d->remove[d->nremove][31] = 0x5a;
			d->nremove++;
		} else {
			assert_true(t[0] == '+');
			d->upsert = realloc(d->upsert, (d->nupsert + 1) * sizeof(*d->upsert));
			assert_non_null(d->upsert);
			parse_node(t + 1, &d->upsert[d->nupsert++]);
		}
	}
}

static void op_text(const struct applied_op *op, char *out, size_t len)
{
	static const char *const kinds[] = { "remove", "set", "addr+", "addr-", "route+", "route-" };
	int n = snprintf(out, len, "%s", kinds[op->kind]);

	if (op->kind == APPLIED_PEER_REMOVE || op->kind == APPLIED_PEER_SET) {
		n += snprintf(out + n, len - (size_t)n, " k%02x", op->peer.public_key[0]);
		if (op->kind == APPLIED_PEER_REMOVE)
			assert_true(op->peer.flags & UAPI_PEER_REMOVE);
		if (op->peer.flags & UAPI_PEER_REPLACE_ALLOWED_IPS)
			n += snprintf(out + n, len - (size_t)n, " aips=%zu", op->peer.n_allowed_ips);
		if (op->peer.flags & UAPI_PEER_HAS_ENDPOINT) {
			char ep[80];
			assert_true(endpoint_format(&op->peer.endpoint, ep, sizeof(ep)) > 0);
			snprintf(out + n, len - (size_t)n, " ep=%s", ep);
		}
	} else {
		snprintf(out + n, len - (size_t)n, " %s", op->cidr);
	}
}

static int cmp_text(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Plans one step, checks its ops, runs them (all succeed but fail) and
 * commits. */
static void run_step(struct applied *a, const struct step *s, const char *name, int i)
{
	struct applied_plan plan;
	char got[MAX_OPS][160], exp[MAX_OPS][160];
	size_t want = 0;

	if (!strncmp(s->input, "delta", 5)) {
		struct netmap_delta d;
		parse_delta(s->input, &d);
		assert_int_equal(applied_plan_delta(a, &d, &plan), 0);
		netmap_delta_free(&d);
	} else {
		struct netmap nm;
		parse_netmap(s->input, &nm);
		assert_int_equal(applied_plan_netmap(a, &nm, &plan), 0);
		netmap_free(&nm);
	}
	while (want < MAX_OPS && s->ops[want])
		want++;
	if (plan.nops != want)
		fail_msg("%s, step %d: %zu ops, want %zu", name, i, plan.nops, want);
	for (size_t k = 0; k < plan.nops; k++) {
		assert_true(k == 0 || plan.ops[k - 1].kind <= plan.ops[k].kind); /* the order to run them */
		op_text(&plan.ops[k], got[k], sizeof(got[k]));
		snprintf(exp[k], sizeof(exp[k]), "%s", s->ops[k][0] == '!' ? s->ops[k] + 1 : s->ops[k]);
		for (size_t m = 0; m < want; m++)
			if (s->ops[m][0] == '!' && !strcmp(got[k], s->ops[m] + 1))
				plan.ops[k].err = -EIO;
	}
	/* Within one kind the order is the maps' (a hash): compare sorted. */
	for (size_t k = 0, end; k < plan.nops; k = end) {
		for (end = k + 1; end < plan.nops && plan.ops[end].kind == plan.ops[k].kind; end++)
			;
		qsort(got[k], end - k, sizeof(got[0]), cmp_text);
		qsort(exp[k], end - k, sizeof(exp[0]), cmp_text);
		for (size_t m = k; m < end; m++)
			if (strcmp(got[m], exp[m]))
				fail_msg("%s, step %d: op \"%s\", want \"%s\"", name, i, got[m], exp[m]);
	}
	assert_int_equal(applied_commit(a, &plan), 0);
	applied_plan_free(&plan);
}

#define A "k02=100.64.0.2/32@192.0.2.2:41641"
#define B "k03=100.64.0.3/32,10.3.0.0/24@192.0.2.3:41641"
#define SELF "self=100.64.0.1/32,fd7a:115c:a1e0::1/128"

static const struct tcase cases[] = {
	{ "full netmap, then the same again", {
		{ SELF "; " A "; " B, {
			"set k02 aips=1 ep=192.0.2.2:41641", "set k03 aips=2 ep=192.0.2.3:41641",
			"addr+ 100.64.0.1/32", "addr+ fd7a:115c:a1e0::1/128",
			"route+ 100.64.0.2/32", "route+ 100.64.0.3/32", "route+ 10.3.0.0/24" } },
		{ SELF "; " B "; " A, { NULL } },
	} },
	{ "full netmap drops a peer and an address", {
		{ SELF "; " A "; " B, { "set k02 aips=1 ep=192.0.2.2:41641", "set k03 aips=2 ep=192.0.2.3:41641",
			"addr+ 100.64.0.1/32", "addr+ fd7a:115c:a1e0::1/128",
			"route+ 100.64.0.2/32", "route+ 100.64.0.3/32", "route+ 10.3.0.0/24" } },
		{ "self=100.64.0.1/32; " A, { "remove k03", "addr- fd7a:115c:a1e0::1/128",
			"route- 100.64.0.3/32", "route- 10.3.0.0/24" } },
	} },
	{ "delta: an unchanged upsert costs nothing, a changed one only what changed", {
		{ SELF "; " A "; " B, { "set k02 aips=1 ep=192.0.2.2:41641", "set k03 aips=2 ep=192.0.2.3:41641",
			"addr+ 100.64.0.1/32", "addr+ fd7a:115c:a1e0::1/128",
			"route+ 100.64.0.2/32", "route+ 100.64.0.3/32", "route+ 10.3.0.0/24" } },
		{ "delta; +" A, { NULL } },
		{ "delta; +k03=100.64.0.3/32,10.4.0.0/24@192.0.2.3:41641", {
			"set k03 aips=2", "route+ 10.4.0.0/24", "route- 10.3.0.0/24" } },
	} },
	{ "delta: endpoints change only", {
		{ SELF "; " A, { "set k02 aips=1 ep=192.0.2.2:41641", "addr+ 100.64.0.1/32",
			"addr+ fd7a:115c:a1e0::1/128", "route+ 100.64.0.2/32" } },
		{ "delta; +k02=100.64.0.2/32@198.51.100.2:9999", { "set k02 ep=198.51.100.2:9999" } },
		/* No endpoint any more: nothing to tell the engine (it keeps one). */
		{ "delta; +k02=100.64.0.2/32", { NULL } },
		{ "delta; +k02=100.64.0.2/32@198.51.100.2:9999", { "set k02 ep=198.51.100.2:9999" } },
	} },
	{ "delta: removals, a new peer, and a removed key that comes back", {
		{ SELF "; " A "; " B, { "set k02 aips=1 ep=192.0.2.2:41641", "set k03 aips=2 ep=192.0.2.3:41641",
			"addr+ 100.64.0.1/32", "addr+ fd7a:115c:a1e0::1/128",
			"route+ 100.64.0.2/32", "route+ 100.64.0.3/32", "route+ 10.3.0.0/24" } },
		{ "delta; -k03; -k09; +k04=100.64.0.4/32", { "remove k03", "set k04 aips=1", "route+ 100.64.0.4/32",
			"route- 100.64.0.3/32", "route- 10.3.0.0/24" } },
		/* Removed and upserted in one delta: a new peer to the engine. */
		{ "delta; -k02; +" A, { "remove k02", "set k02 aips=1 ep=192.0.2.2:41641" } },
	} },
	{ "delta: self changes its addresses", {
		{ SELF "; " A, { "set k02 aips=1 ep=192.0.2.2:41641", "addr+ 100.64.0.1/32",
			"addr+ fd7a:115c:a1e0::1/128", "route+ 100.64.0.2/32" } },
		{ "delta; self=100.64.0.9/32,fd7a:115c:a1e0::1/128", { "addr+ 100.64.0.9/32", "addr- 100.64.0.1/32" } },
		/* A delta without self leaves the addresses alone. */
		{ "delta; +" B, { "set k03 aips=2 ep=192.0.2.3:41641", "route+ 100.64.0.3/32", "route+ 10.3.0.0/24" } },
	} },
	{ "a route two peers hold goes with the last of them", {
		{ SELF "; k02=100.64.0.2/32,10.9.0.0/24; k03=100.64.0.3/32,10.9.0.0/24", {
			"set k02 aips=2", "set k03 aips=2", "addr+ 100.64.0.1/32", "addr+ fd7a:115c:a1e0::1/128",
			"route+ 100.64.0.2/32", "route+ 10.9.0.0/24", "route+ 100.64.0.3/32" } },
		{ "delta; -k02", { "remove k02", "route- 100.64.0.2/32" } },
		{ "delta; -k03", { "remove k03", "route- 100.64.0.3/32", "route- 10.9.0.0/24" } },
	} },
	{ "what failed is tried again by the next full netmap", {
		{ SELF "; " A "; " B, { "set k02 aips=1 ep=192.0.2.2:41641", "set k03 aips=2 ep=192.0.2.3:41641",
			"addr+ 100.64.0.1/32", "addr+ fd7a:115c:a1e0::1/128",
			"route+ 100.64.0.2/32", "route+ 100.64.0.3/32", "!route+ 10.3.0.0/24" } },
		{ SELF "; " A "; " B, { "route+ 10.3.0.0/24" } },
		{ "delta; +k02=100.64.0.2/32@192.0.2.2:1", { "!set k02 ep=192.0.2.2:1" } },
		{ SELF "; k02=100.64.0.2/32@192.0.2.2:1; " B, { "set k02 aips=1 ep=192.0.2.2:1" } },
		{ SELF "; k02=100.64.0.2/32@192.0.2.2:1; " B, { NULL } },
	} },
	{ "an empty netmap after a full one clears everything", {
		{ SELF "; " A, { "set k02 aips=1 ep=192.0.2.2:41641", "addr+ 100.64.0.1/32",
			"addr+ fd7a:115c:a1e0::1/128", "route+ 100.64.0.2/32" } },
		{ "", { "remove k02", "addr- 100.64.0.1/32", "addr- fd7a:115c:a1e0::1/128", "route- 100.64.0.2/32" } },
		{ "", { NULL } },
	} },
};

static void test_table(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct applied *a = applied_new();

		assert_non_null(a);
		for (int i = 0; i < 6 && cases[c].steps[i].input; i++)
			run_step(a, &cases[c].steps[i], cases[c].name, i);
		applied_free(a);
	}
}

/* More allowed IPs than the old fixed array (256) held: none dropped. */
static void test_many_allowed_ips(void **state)
{
	struct applied *a = applied_new();
	struct applied_plan plan;
	struct netmap nm = { 0 };
	struct netmap_delta d = { 0 };
	size_t routes_added = 0, routes_removed = 0;
	enum { N = 1000 };

	(void)state;
	assert_non_null(a);
	nm.peers = calloc(1, sizeof(*nm.peers));
	assert_non_null(nm.peers);
	nm.npeers = 1;
	nm.peers[0].node_key[0] = 7;
	nm.peers[0].allowed_ips = calloc(N, sizeof(struct netmap_prefix));
	assert_non_null(nm.peers[0].allowed_ips);
	nm.peers[0].nallowed_ips = N;
	for (int i = 0; i < N; i++) {
		struct netmap_prefix *p = &nm.peers[0].allowed_ips[i];
		p->family = AF_INET;
		p->bits = 32;
		p->addr[0] = 10;
		p->addr[1] = 20;
		p->addr[2] = (uint8_t)(i >> 8);
		p->addr[3] = (uint8_t)i;
	}
	assert_int_equal(applied_plan_netmap(a, &nm, &plan), 0);
	assert_int_equal(plan.ops[0].kind, APPLIED_PEER_SET);
	assert_int_equal(plan.ops[0].peer.n_allowed_ips, N);
	assert_int_equal(plan.ops[0].peer.allowed_ips[N - 1].ip.v4.s_addr, htonl(0x0a1403e7));
	for (size_t k = 1; k < plan.nops; k++)
		routes_added += plan.ops[k].kind == APPLIED_ROUTE_ADD;
	assert_int_equal(routes_added, N);
	assert_int_equal(plan.nops, N + 1);
	assert_int_equal(applied_commit(a, &plan), 0);
	applied_plan_free(&plan);
	assert_int_equal(applied_routes(a), N);

	/* Idempotent at this size too. */
	assert_int_equal(applied_plan_netmap(a, &nm, &plan), 0);
	assert_int_equal(plan.nops, 0);
	applied_plan_free(&plan);

	d.seq = 2;
	d.remove = calloc(1, sizeof(*d.remove));
	assert_non_null(d.remove);
	d.remove[0][0] = 7;
	d.nremove = 1;
	assert_int_equal(applied_plan_delta(a, &d, &plan), 0);
	assert_int_equal(plan.ops[0].kind, APPLIED_PEER_REMOVE);
	for (size_t k = 1; k < plan.nops; k++)
		routes_removed += plan.ops[k].kind == APPLIED_ROUTE_DEL;
	assert_int_equal(routes_removed, N);
	assert_int_equal(applied_commit(a, &plan), 0);
	applied_plan_free(&plan);
	assert_int_equal(applied_routes(a), 0);
	assert_int_equal(applied_peers(a), 0);
	netmap_delta_free(&d);
	netmap_free(&nm);
	applied_free(a);
}

/* Many peers, one changed: a delta plans one op, not one per peer. */
static void test_delta_touches_only_the_changed_peer(void **state)
{
	struct applied *a = applied_new();
	struct applied_plan plan;
	struct netmap nm = { 0 };
	struct netmap_delta d = { 0 };
	enum { N = 500 };

	(void)state;
	assert_non_null(a);
	nm.peers = calloc(N, sizeof(*nm.peers));
	assert_non_null(nm.peers);
	nm.npeers = N;
	for (int i = 0; i < N; i++) {
		nm.peers[i].node_key[0] = (uint8_t)i;
		nm.peers[i].node_key[1] = (uint8_t)(i >> 8);
	}
	assert_int_equal(applied_plan_netmap(a, &nm, &plan), 0);
	assert_int_equal(plan.nops, N);
	assert_int_equal(applied_commit(a, &plan), 0);
	applied_plan_free(&plan);
	assert_int_equal(applied_peers(a), N);

	d.seq = 2;
	d.upsert = calloc(1, sizeof(*d.upsert));
	assert_non_null(d.upsert);
	d.nupsert = 1;
	d.upsert[0].node_key[0] = 9;
	d.upsert[0].allowed_ips = calloc(1, sizeof(struct netmap_prefix));
	assert_non_null(d.upsert[0].allowed_ips);
	assert_true(netmap_prefix_parse(&d.upsert[0].allowed_ips[0], "100.64.0.9/32"));
	d.upsert[0].nallowed_ips = 1;
	assert_int_equal(applied_plan_delta(a, &d, &plan), 0);
	assert_int_equal(plan.nops, 2);
	assert_int_equal(plan.ops[0].kind, APPLIED_PEER_SET);
	assert_int_equal(plan.ops[0].peer.public_key[0], 9);
	assert_int_equal(plan.ops[1].kind, APPLIED_ROUTE_ADD);
	assert_string_equal(plan.ops[1].cidr, "100.64.0.9/32");
	assert_true(applied_has_peer(a, d.upsert[0].node_key));
	assert_int_equal(applied_commit(a, &plan), 0);
	applied_plan_free(&plan);

	assert_int_equal(applied_plan_clear(a, &plan), 0);
	assert_int_equal(plan.nops, N + 1);
	assert_int_equal(applied_commit(a, &plan), 0);
	applied_plan_free(&plan);
	assert_int_equal(applied_peers(a), 0);
	assert_int_equal(applied_routes(a), 0);
	netmap_delta_free(&d);
	netmap_free(&nm);
	applied_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_many_allowed_ips),
		cmocka_unit_test(test_delta_touches_only_the_changed_peer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
