/* lib/policy: parse, compile, evaluate — table-driven.
 *
 * Verdict cases compile the destination device's packet filter from a
 * policy and the device set below and ask it whether src may reach
 * dst:port/proto. Error cases check the message and its line:column (the
 * position of the value or key at fault). Then the policy's own tests,
 * visibility, incremental compilation, autoApprovers and tagOwners. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"
#include "policy/model.h"
#include "policy/policy.h"
#include "strmap.h"

/* ---- the device set -------------------------------------------------- */

struct devspec {
	const char *name, *v4, *v6, *user, *tags, *routes, *pod; /* pod: "ns/sa" */
};

static const struct devspec devs[] = {
	{ "alice-laptop", "100.64.0.1", "fd7a:115c:a1e0::1", "alice@example.com", NULL, NULL, NULL },
	{ "alice-phone", "100.64.0.2", "fd7a:115c:a1e0::2", "alice@example.com", NULL, NULL, NULL },
	{ "bob-laptop", "100.64.0.3", "fd7a:115c:a1e0::3", "bob@example.com", NULL, NULL, NULL },
	{ "carol", "100.64.0.4", "fd7a:115c:a1e0::4", "carol@example.com", NULL, NULL, NULL },
	{ "web", "100.64.0.10", "fd7a:115c:a1e0::10", NULL, "tag:web", NULL, NULL },
	{ "db", "100.64.0.11", "fd7a:115c:a1e0::11", NULL, "tag:db", NULL, NULL },
	{ "router", "100.64.0.12", "fd7a:115c:a1e0::12", NULL, "tag:router",
	  "10.0.0.0/24,10.1.0.0/24,0.0.0.0/0,::/0", NULL },
	{ "pod-api", "100.64.0.20", NULL, NULL, NULL, NULL, "prod/api" },
	{ "pod-worker", "100.64.0.21", NULL, NULL, NULL, NULL, "prod/worker" },
	{ "pod-dev", "100.64.0.22", NULL, NULL, NULL, NULL, "dev/api" },
	{ "ci", "100.64.0.30", NULL, "ci-bot", NULL, NULL, NULL },
	{ "oidc", "100.64.0.32", NULL, "oidc:dana@example.com", NULL, NULL, NULL },
	{ "web2", "100.64.0.31", NULL, "alice@example.com", "tag:web", NULL, NULL },
};
#define N_DEVS (sizeof(devs) / sizeof(devs[0]))

static void split(const char *list, char out[][48], size_t *n, size_t max)
{
	*n = 0;
	while (list && *list && *n < max) {
		const char *c = strchr(list, ',');
		size_t len = c ? (size_t)(c - list) : strlen(list);

		snprintf(out[*n], 48, "%.*s", (int)len, list);
		(*n)++;
		list = c ? c + 1 : NULL;
	}
}

static int add_dev(struct policy_net *net, const struct devspec *s, struct policy_names *touched)
{
	char tags[4][48], routes[8][48], ns[48] = "", *sa = NULL;
	const char *tagp[4];
	struct policy_prefix rp[8];
	struct policy_device d = { .name = s->name, .user = s->user };
	size_t n_tags, n_routes;

	split(s->tags, tags, &n_tags, 4);
	split(s->routes, routes, &n_routes, 8);
	for (size_t i = 0; i < n_tags; i++)
		tagp[i] = tags[i];
	for (size_t i = 0; i < n_routes; i++)
		assert_true(policy_prefix_parse(routes[i], &rp[i]));
	d.tags = tagp;
	d.n_tags = n_tags;
	d.routes = rp;
	d.n_routes = n_routes;
	assert_true(policy_prefix_parse(s->v4, &d.addrs[d.n_addrs++]));
	if (s->v6)
		assert_true(policy_prefix_parse(s->v6, &d.addrs[d.n_addrs++]));
	if (s->pod) {
		snprintf(ns, sizeof(ns), "%s", s->pod);
		sa = strchr(ns, '/');
		*sa++ = '\0';
		d.pod = true;
		d.pod_namespace = ns;
		d.pod_serviceaccount = sa;
	}
	return policy_net_add(net, &d, touched);
}

static struct policy *parse_ok(const char *text)
{
	struct json_error err = { 0 };
	struct policy *p = policy_parse(text, strlen(text), &err);

	if (!p)
		fail_msg("policy refused at %zu:%zu: %s\n%s", err.line, err.column, err.msg, text);
	return p;
}

static struct policy_net *net_all(const struct policy *p)
{
	struct policy_net *net = policy_net_new(p);

	assert_non_null(net);
	for (size_t i = 0; i < N_DEVS; i++)
		assert_int_equal(add_dev(net, &devs[i], NULL), 0);
	return net;
}

/* The device a packet to dst reaches: the one with the address, else a
 * router with an approved route containing it (an exit node for the
 * rest). */
static const char *owner_of(struct policy_net *net, const struct policy_prefix *dst)
{
	const char *name = policy_net_lookup(net, dst);
	const char *exit = NULL;

	if (name)
		return name;
	for (size_t i = 0; i < N_DEVS; i++) {
		struct policy_routes r;

		assert_int_equal(policy_net_routes(net, devs[i].name, &r), 0);
		for (size_t k = 0; k < r.n_approved && !name; k++) {
			if (r.approved[k].bits == 0)
				exit = devs[i].name;
			else if (policy_prefix_contains(&r.approved[k], dst))
				name = devs[i].name;
		}
		policy_routes_free(&r);
	}
	return name ? name : exit;
}

/* ---- verdicts -------------------------------------------------------- */

#define GROUPS                                                                            \
	"\"groups\": {\"group:eng\": [\"alice@example.com\", \"bob@example.com\"],"       \
	"  \"group:prod-pods\": [\"system:serviceaccounts:prod\"]},\n"
#define OWNERS                                                                            \
	"\"tagOwners\": {\"tag:web\": [\"group:eng\"], \"tag:db\": [\"alice@example.com\"]," \
	"  \"tag:router\": [\"tag:web\"]},\n"
#define HOSTS "\"hosts\": {\"dbhost\": \"100.64.0.11\", \"lan\": \"10.0.0.0/24\"," \
	      "  \"db6\": \"fd7a:115c:a1e0::11\"},\n"
#define APPROVE                                                                           \
	"\"autoApprovers\": {\"routes\": {\"10.0.0.0/24\": [\"tag:router\"]},"            \
	"  \"exitNode\": [\"tag:router\"]},\n"
#define HEAD "{\n" GROUPS OWNERS HOSTS APPROVE
#define ACL(src, dst) "{\"action\": \"accept\", \"src\": [" src "], \"dst\": [" dst "]}"
#define ACLP(src, dst, proto) \
	"{\"action\": \"accept\", \"src\": [" src "], \"dst\": [" dst "], \"proto\": " proto "}"
#define ACLS(...) HEAD "\"acls\": [" __VA_ARGS__ "],\n}"
#define GRANT(src, dst, ip) "{\"src\": [" src "], \"dst\": [" dst "], \"ip\": [" ip "]}"
#define GRANTS(...) HEAD "\"grants\": [" __VA_ARGS__ "],\n}"

#define ALICE "100.64.0.1"
#define ALICE2 "100.64.0.2"
#define BOB "100.64.0.3"
#define CAROL "100.64.0.4"
#define WEB "100.64.0.10"
#define DB "100.64.0.11"
#define ROUTER "100.64.0.12"
#define PAPI "100.64.0.20"
#define PWORK "100.64.0.21"
#define PDEV "100.64.0.22"
#define CI "100.64.0.30"
#define WEB2 "100.64.0.31"
#define TCP 6
#define UDP 17
#define ICMP 1
#define ICMP6 58
#define SCTP 132
#define GRE 47

struct verdict {
	const char *what;
	const char *policy;
	const char *src, *dst;
	uint8_t proto;
	uint16_t port;
	bool allow;
};

/* Verdicts that depend on the address family, which the identity view
 * the policy's tests take does not see: no cross-check. */
static bool per_family(const char *what)
{
	return !strcmp(what, "ipv6 host dst, v4 not");
}

#define ENG_WEB80 ACLS(ACL("\"group:eng\"", "\"tag:web:80\""))
#define SELF ACLS(ACL("\"autogroup:member\"", "\"autogroup:self:*\""))

static const struct verdict verdicts[] = {
	{ "group member reaches tag port", ENG_WEB80, ALICE, WEB, TCP, 80, true },
	{ "other group member too", ENG_WEB80, BOB, WEB, TCP, 80, true },
	{ "not a member", ENG_WEB80, CAROL, WEB, TCP, 80, false },
	{ "other port", ENG_WEB80, ALICE, WEB, TCP, 443, false },
	{ "udp by default", ENG_WEB80, ALICE, WEB, UDP, 80, true },
	{ "icmp by default", ENG_WEB80, ALICE, WEB, ICMP, 0, true },
	{ "sctp not by default", ENG_WEB80, ALICE, WEB, SCTP, 80, false },
	{ "directional", ENG_WEB80, WEB, ALICE, TCP, 80, false },
	{ "every device with the tag", ENG_WEB80, ALICE, WEB2, TCP, 80, true },
	{ "tagged device loses its user", ACLS(ACL("\"alice@example.com\"", "\"*:22\"")), WEB2, CAROL,
	  TCP, 22, false },
	{ "user's devices", ACLS(ACL("\"alice@example.com\"", "\"*:22\"")), ALICE2, CAROL, TCP, 22,
	  true },
	{ "deny by default", ENG_WEB80, ALICE, DB, TCP, 5432, false },
	{ "proto tcp only: udp denied", ACLS(ACLP("\"group:eng\"", "\"tag:web:80\"", "\"tcp\"")), ALICE,
	  WEB, UDP, 80, false },
	{ "proto tcp", ACLS(ACLP("\"group:eng\"", "\"tag:web:80\"", "\"tcp\"")), ALICE, WEB, TCP, 80,
	  true },
	{ "proto udp by name", ACLS(ACLP("\"group:eng\"", "\"tag:web:53\"", "\"udp\"")), ALICE, WEB,
	  UDP, 53, true },
	{ "proto by number string", ACLS(ACLP("\"group:eng\"", "\"tag:web:53\"", "\"17\"")), ALICE,
	  WEB, UDP, 53, true },
	{ "proto by JSON number", ACLS(ACLP("\"group:eng\"", "\"tag:web:53\"", "17")), ALICE, WEB, UDP,
	  53, true },
	{ "proto sctp with port", ACLS(ACLP("\"group:eng\"", "\"tag:web:9\"", "\"sctp\"")), ALICE, WEB,
	  SCTP, 9, true },
	{ "proto gre, no ports", ACLS(ACLP("\"group:eng\"", "\"tag:web:*\"", "\"gre\"")), ALICE, WEB,
	  GRE, 0, true },
	{ "proto gre: tcp denied", ACLS(ACLP("\"group:eng\"", "\"tag:web:*\"", "\"gre\"")), ALICE, WEB,
	  TCP, 80, false },
	{ "proto icmp", ACLS(ACLP("\"group:eng\"", "\"tag:web:*\"", "\"icmp\"")), ALICE, WEB, ICMP, 0,
	  true },
	{ "proto ipv6-icmp over v6", ACLS(ACLP("\"group:eng\"", "\"tag:web:*\"", "\"ipv6-icmp\"")),
	  "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::10", ICMP6, 0, true },
	{ "range inside", ACLS(ACL("\"group:eng\"", "\"tag:web:8000-8100\"")), ALICE, WEB, TCP, 8050,
	  true },
	{ "range first", ACLS(ACL("\"group:eng\"", "\"tag:web:8000-8100\"")), ALICE, WEB, TCP, 8000,
	  true },
	{ "range last", ACLS(ACL("\"group:eng\"", "\"tag:web:8000-8100\"")), ALICE, WEB, TCP, 8100,
	  true },
	{ "past range", ACLS(ACL("\"group:eng\"", "\"tag:web:8000-8100\"")), ALICE, WEB, TCP, 8101,
	  false },
	{ "before range", ACLS(ACL("\"group:eng\"", "\"tag:web:8000-8100\"")), ALICE, WEB, TCP, 7999,
	  false },
	{ "list member", ACLS(ACL("\"group:eng\"", "\"tag:web:22,80,443-445\"")), ALICE, WEB, TCP, 444,
	  true },
	{ "list first", ACLS(ACL("\"group:eng\"", "\"tag:web:22,80,443-445\"")), ALICE, WEB, TCP, 22,
	  true },
	{ "not in list", ACLS(ACL("\"group:eng\"", "\"tag:web:22,80,443-445\"")), ALICE, WEB, TCP, 446,
	  false },
	{ "any port", ACLS(ACL("\"group:eng\"", "\"tag:web:*\"")), ALICE, WEB, TCP, 65535, true },
	{ "port 0 with *", ACLS(ACL("\"group:eng\"", "\"tag:web:*\"")), ALICE, WEB, UDP, 0, true },
	{ "dst user", ACLS(ACL("\"tag:web\"", "\"alice@example.com:22\"")), WEB, ALICE2, TCP, 22,
	  true },
	{ "dst user, other user", ACLS(ACL("\"tag:web\"", "\"alice@example.com:22\"")), WEB, BOB, TCP,
	  22, false },
	{ "dst group", ACLS(ACL("\"tag:web\"", "\"group:eng:22\"")), WEB, BOB, TCP, 22, true },
	{ "dst group, non-member", ACLS(ACL("\"tag:web\"", "\"group:eng:22\"")), WEB, CAROL, TCP, 22,
	  false },
	{ "tag to tag", ACLS(ACL("\"tag:web\"", "\"tag:db:5432\"")), WEB, DB, TCP, 5432, true },
	{ "tag to tag, reverse", ACLS(ACL("\"tag:web\"", "\"tag:db:5432\"")), DB, WEB, TCP, 5432,
	  false },
	{ "member includes pods", ACLS(ACL("\"autogroup:member\"", "\"tag:db:5432\"")), PAPI, DB, TCP,
	  5432, true },
	{ "member includes users", ACLS(ACL("\"autogroup:member\"", "\"tag:db:5432\"")), CAROL, DB,
	  TCP, 5432, true },
	{ "member excludes tagged", ACLS(ACL("\"autogroup:member\"", "\"tag:db:5432\"")), WEB, DB, TCP,
	  5432, false },
	{ "tagged src", ACLS(ACL("\"autogroup:tagged\"", "\"autogroup:member:22\"")), ROUTER, CAROL,
	  TCP, 22, true },
	{ "tagged src, untagged denied", ACLS(ACL("\"autogroup:tagged\"", "\"autogroup:member:22\"")),
	  BOB, CAROL, TCP, 22, false },
	{ "tagged dst", ACLS(ACL("\"carol@example.com\"", "\"autogroup:tagged:443\"")), CAROL, DB, TCP,
	  443, true },
	{ "tagged dst, member not", ACLS(ACL("\"carol@example.com\"", "\"autogroup:tagged:443\"")),
	  CAROL, BOB, TCP, 443, false },
	{ "self: same user", SELF, ALICE, ALICE2, TCP, 22, true },
	{ "self: other user", SELF, BOB, ALICE2, TCP, 22, false },
	{ "self: not tagged devices", SELF, ALICE, WEB2, TCP, 22, false },
	{ "self: pods of one ServiceAccount only", SELF, PWORK, PAPI, TCP, 22, false },
	{ "self with a group src", ACLS(ACL("\"group:eng\"", "\"autogroup:self:22\"")), ALICE2, ALICE,
	  TCP, 22, true },
	{ "self with a group src, outsider", ACLS(ACL("\"group:eng\"", "\"autogroup:self:22\"")), CAROL,
	  CAROL, TCP, 22, false },
	{ "host dst", ACLS(ACL("\"carol@example.com\"", "\"dbhost:5432\"")), CAROL, DB, TCP, 5432,
	  true },
	{ "host src", ACLS(ACL("\"dbhost\"", "\"carol@example.com:9000\"")), DB, CAROL, TCP, 9000,
	  true },
	{ "ip dst", ACLS(ACL("\"carol@example.com\"", "\"100.64.0.11:5432\"")), CAROL, DB, TCP, 5432,
	  true },
	{ "cidr dst", ACLS(ACL("\"carol@example.com\"", "\"100.64.0.0/28:22\"")), CAROL, WEB, TCP, 22,
	  true },
	{ "cidr dst, outside", ACLS(ACL("\"carol@example.com\"", "\"100.64.0.0/28:22\"")), CAROL, PAPI,
	  TCP, 22, false },
	{ "cidr src", ACLS(ACL("\"100.64.0.0/30\"", "\"tag:db:*\"")), BOB, DB, TCP, 1, true },
	{ "cidr src, outside", ACLS(ACL("\"100.64.0.0/30\"", "\"tag:db:*\"")), CAROL, DB, TCP, 1,
	  false },
	{ "ipv6 between devices", ACLS(ACL("\"alice@example.com\"", "\"tag:db:5432\"")),
	  "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::11", TCP, 5432, true },
	{ "ipv6 address dst", ACLS(ACL("\"carol@example.com\"", "\"fd7a:115c:a1e0::11:5432\"")),
	  "fd7a:115c:a1e0::4", "fd7a:115c:a1e0::11", TCP, 5432, true },
	{ "ipv6 bracketed dst", ACLS(ACL("\"carol@example.com\"", "\"[fd7a:115c:a1e0::11]:5432\"")),
	  "fd7a:115c:a1e0::4", "fd7a:115c:a1e0::11", TCP, 5432, true },
	{ "ipv6 cidr src", ACLS(ACL("\"fd7a:115c:a1e0::/124\"", "\"tag:db:5432\"")),
	  "fd7a:115c:a1e0::3", "fd7a:115c:a1e0::11", TCP, 5432, true },
	{ "ipv6 cidr src, outside", ACLS(ACL("\"fd7a:115c:a1e0::/126\"", "\"tag:db:5432\"")),
	  "fd7a:115c:a1e0::4", "fd7a:115c:a1e0::11", TCP, 5432, false },
	{ "ipv6 host dst", ACLS(ACL("\"carol@example.com\"", "\"db6:5432\"")), "fd7a:115c:a1e0::4",
	  "fd7a:115c:a1e0::11", TCP, 5432, true },
	{ "ipv6 host dst, v4 not", ACLS(ACL("\"carol@example.com\"", "\"db6:5432\"")), CAROL, DB, TCP,
	  5432, false },
	{ "subnet route", ACLS(ACL("\"group:eng\"", "\"lan:22\"")), ALICE, "10.0.0.5", TCP, 22, true },
	{ "subnet route, outsider", ACLS(ACL("\"group:eng\"", "\"lan:22\"")), CAROL, "10.0.0.5", TCP,
	  22, false },
	{ "internet via exit node", ACLS(ACL("\"group:eng\"", "\"autogroup:internet:*\"")), ALICE,
	  "8.8.8.8", UDP, 53, true },
	{ "internet, outsider", ACLS(ACL("\"group:eng\"", "\"autogroup:internet:*\"")), CAROL,
	  "8.8.8.8", UDP, 53, false },
	{ "internet is not the exit node", ACLS(ACL("\"group:eng\"", "\"autogroup:internet:*\"")),
	  ALICE, ROUTER, TCP, 22, false },
	{ "internet is not the tailnet", ACLS(ACL("\"group:eng\"", "\"autogroup:internet:*\"")), ALICE,
	  CAROL, TCP, 22, false },
	{ "star to star", ACLS(ACL("\"*\"", "\"*:*\"")), CAROL, DB, TCP, 1234, true },
	{ "star src", ACLS(ACL("\"*\"", "\"tag:web:80\"")), PDEV, WEB, TCP, 80, true },
	{ "star dst", ACLS(ACL("\"carol@example.com\"", "\"*:22\"")), CAROL, ROUTER, TCP, 22, true },
	{ "empty acls deny all", HEAD "\"acls\": []}", ALICE, ALICE2, TCP, 22, false },
	{ "empty acls and grants deny all", HEAD "\"acls\": [], \"grants\": []}", ALICE, ALICE2, ICMP,
	  0, false },
	{ "no acls nor grants: allow all", HEAD "\"tests\": []}", CAROL, DB, TCP, 5432, true },
	{ "no acls nor grants: udp too", "{}", PDEV, ROUTER, UDP, 9, true },
	{ "grant tcp:443", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"", "\"tcp:443\"")), ALICE, WEB,
	  TCP, 443, true },
	{ "grant tcp:443, udp denied", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"", "\"tcp:443\"")),
	  ALICE, WEB, UDP, 443, false },
	{ "grant tcp:443, port 80 denied", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"", "\"tcp:443\"")),
	  ALICE, WEB, TCP, 80, false },
	{ "grant *", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"", "\"*\"")), BOB, WEB, UDP, 9999, true },
	{ "grant icmp:*", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"", "\"icmp:*\"")), BOB, WEB, ICMP, 0,
	  true },
	{ "grant icmp:*, tcp denied", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"", "\"icmp:*\"")), BOB,
	  WEB, TCP, 80, false },
	{ "grant port range", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"", "\"80-90\"")), BOB, WEB, TCP,
	  85, true },
	{ "grant two ip entries", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"", "\"tcp:22\", \"udp:53\"")),
	  BOB, WEB, UDP, 53, true },
	{ "grant two ip entries, crossed", GRANTS(GRANT("\"group:eng\"", "\"tag:web\"",
							 "\"tcp:22\", \"udp:53\"")),
	  BOB, WEB, UDP, 22, false },
	{ "grant to self", GRANTS(GRANT("\"autogroup:member\"", "\"autogroup:self\"", "\"*\"")), ALICE,
	  ALICE2, TCP, 22, true },
	{ "grant to an address", GRANTS(GRANT("\"carol@example.com\"", "\"100.64.0.11\"", "\"5432\"")),
	  CAROL, DB, TCP, 5432, true },
	{ "acls and grants combine: acl", HEAD "\"acls\": [" ACL("\"alice@example.com\"", "\"tag:web:80\"")
		"], \"grants\": [" GRANT("\"bob@example.com\"", "\"tag:db\"", "\"tcp:5432\"") "]}",
	  ALICE, WEB, TCP, 80, true },
	{ "acls and grants combine: grant", HEAD "\"acls\": [" ACL("\"alice@example.com\"", "\"tag:web:80\"")
		"], \"grants\": [" GRANT("\"bob@example.com\"", "\"tag:db\"", "\"tcp:5432\"") "]}",
	  BOB, DB, TCP, 5432, true },
	{ "acls and grants combine: neither", HEAD "\"acls\": [" ACL("\"alice@example.com\"", "\"tag:web:80\"")
		"], \"grants\": [" GRANT("\"bob@example.com\"", "\"tag:db\"", "\"tcp:5432\"") "]}",
	  ALICE, DB, TCP, 5432, false },
	{ "pod ServiceAccount src", ACLS(ACL("\"system:serviceaccount:prod:api\"", "\"tag:db:5432\"")),
	  PAPI, DB, TCP, 5432, true },
	{ "pod ServiceAccount src, other SA", ACLS(ACL("\"system:serviceaccount:prod:api\"",
						      "\"tag:db:5432\"")),
	  PWORK, DB, TCP, 5432, false },
	{ "pod ServiceAccount src, other namespace", ACLS(ACL("\"system:serviceaccount:prod:api\"",
							     "\"tag:db:5432\"")),
	  PDEV, DB, TCP, 5432, false },
	{ "pod namespace src", ACLS(ACL("\"system:serviceaccounts:prod\"", "\"tag:db:5432\"")), PWORK, DB,
	  TCP, 5432, true },
	{ "pod namespace src, other namespace", ACLS(ACL("\"system:serviceaccounts:prod\"",
							"\"tag:db:5432\"")),
	  PDEV, DB, TCP, 5432, false },
	{ "pod namespace in a group", ACLS(ACL("\"group:prod-pods\"", "\"tag:db:5432\"")), PAPI, DB, TCP,
	  5432, true },
	{ "pod namespace dst", ACLS(ACL("\"group:eng\"", "\"system:serviceaccounts:dev:8080\"")), BOB,
	  PDEV, TCP, 8080, true },
	{ "pod ServiceAccount dst", ACLS(ACL("\"group:eng\"", "\"system:serviceaccount:prod:api:8080\"")),
	  BOB, PWORK, TCP, 8080, false },
	{ "login with a Kubernetes authenticator prefix",
	  ACLS(ACL("\"oidc:dana@example.com\"", "\"oidc:dana@example.com:22\"")), "100.64.0.32",
	  "100.64.0.32", TCP, 22, true },
	{ "login without a domain", ACLS(ACL("\"ci-bot@\"", "\"tag:web:22\"")), CI, WEB, TCP, 22, true },
	{ "legacy users/ports", HEAD "\"acls\": [{\"action\": \"accept\", \"users\": [\"group:eng\"],"
		" \"ports\": [\"tag:web:80\"]}]}", BOB, WEB, TCP, 80, true },
	{ "several dst in one rule", ACLS(ACL("\"carol@example.com\"", "\"tag:web:80\", \"tag:db:5432\"")),
	  CAROL, DB, TCP, 5432, true },
	{ "several dst, ports per dst", ACLS(ACL("\"carol@example.com\"", "\"tag:web:80\", \"tag:db:5432\"")),
	  CAROL, DB, TCP, 80, false },
	{ "admin autogroup is nobody", ACLS(ACL("\"autogroup:admin\"", "\"*:*\"")), ALICE, BOB, TCP, 22,
	  false },
	{ "comments and trailing commas", "{\n// the policy\n\"acls\": [/* one */ " ACL("\"*\"",
		"\"*:22\"") ",],}", CAROL, BOB, TCP, 22, true },
};

static void check_dumps(struct policy_net *net, const char *what);

static void test_verdicts(void **state)
{
	size_t crossed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(verdicts) / sizeof(verdicts[0]); i++) {
		const struct verdict *v = &verdicts[i];
		struct policy *p = parse_ok(v->policy);
		struct policy_net *net = net_all(p);
		struct policy_prefix src, dst;
		struct policy_filter f;
		const char *owner;
		bool got;

		assert_true(policy_prefix_parse(v->src, &src));
		assert_true(policy_prefix_parse(v->dst, &dst));
		owner = owner_of(net, &dst);
		if (!owner)
			fail_msg("case %zu (%s): nobody has %s", i, v->what, v->dst);
		assert_int_equal(policy_net_filter(net, owner, &f), 0);
		got = policy_filter_allows(&f, &src, &dst, v->proto, v->port);
		check_dumps(net, v->what);
		if (got != v->allow)
			fail_msg("case %zu (%s): %s -> %s:%u/%u on %s: expected %s, got %s", i, v->what,
				 v->src, v->dst, v->port, v->proto, owner, v->allow ? "allow" : "deny",
				 got ? "allow" : "deny");
		/* Between devices, the identity view the policy's tests use
		 * must agree with the compiled filter. */
		if (!per_family(v->what) && policy_net_lookup(net, &src) && policy_net_lookup(net, &dst)) {
			const struct dev *s = net_dev(net, policy_net_lookup(net, &src));
			const struct dev *d = net_dev(net, policy_net_lookup(net, &dst));

			if (rules_allow(p, s, d, v->proto, v->port) != got)
				fail_msg("case %zu (%s): tests' view differs from the filter", i,
					 v->what);
			crossed++;
		}
		policy_filter_free(&f);
		policy_net_free(net);
		policy_free(p);
	}
	printf("%zu verdict cases, %zu also asked of the tests' identity view\n",
	       sizeof(verdicts) / sizeof(verdicts[0]), crossed);
}

/* ---- errors ---------------------------------------------------------- */

struct bad {
	const char *policy;
	size_t line, column;
	const char *msg;
};

/* Each position is that of the value or key at fault. */
static const struct bad bads[] = {
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"tag:web:80\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 34, "group \"group:nope\" is not defined" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:ghost:22\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 56, "tag \"tag:ghost\" has no owner" },
	{ "{\n"
	  "  \"groups\": {\n"
	  "    \"group:a\": [\"alice@example.com\"],\n"
	  "    \"group:b\": [\"group:a\"],\n"
	  "  },\n"
	  "}",
	  4, 17, "nested group" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:99999\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 56, "bad port \"99999\"" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:90-80\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 56, "bad port \"90-80\"" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:http\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 56, "bad port \"http\"" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:22,\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 56, "bad port" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:-1\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 56, "bad port" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"aclz\": [],\n"
	  "}",
	  4, 3, "unknown key \"aclz\"" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:80\"], \"srcs\": []},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 71, "acls[0]: unknown key \"srcs\"" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [{\"action\": \"deny\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}],\n"
	  "}",
	  4, 23, "must be \"accept\"" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"grants\": [\n"
	  "    {\"src\": [\"*\"], \"dst\": [\"*\"], \"ip\": [\"*\"]},\n"
	  "    {\"src\": [\"*\"], \"dst\": [\"tag:web\"], \"app\": {\"example.com/cap\": [{}]}},\n"
	  "  ],\n"
	  "}",
	  6, 40, "grants[1].app: application capabilities are not supported" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"grants\": [{\"src\": [\"*\"], \"dst\": [\"*\"], \"ip\": [\"*\"], \"via\": [\"tag:web\"]}],\n"
	  "}",
	  4, 56, "via is not supported" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:80\"], \"proto\": \"foo\"},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 80, "unknown protocol" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:80\"], \"proto\": \"icmp\"},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 56, "has no ports" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"autogroup:self\"], \"dst\": [\"tag:web:80\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 34, "not allowed here" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"autogroup:nobody\"], \"dst\": [\"tag:web:80\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 34, "unknown autogroup" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web:80\" \"tag:web:81\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 81, "parse error" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}],\n"
	  "  \"tests\": [{\"src\": \"alice@example.com\", \"accept\": [\"tag:web:*\"]}],\n"
	  "}",
	  5, 53, "a test names one port" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"hosts\": {\"db\": \"not-an-ip\"},\n"
	  "}",
	  4, 19, "hosts.db: must be an IP address or CIDR" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"nobody\"], \"dst\": [\"tag:web:80\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 34, "is not a user, group, tag, autogroup, host or address" },
	{ "{\n"
	  "  \"groups\": {\"eng\": [\"alice@example.com\"]},\n"
	  "}",
	  2, 14, "must be named group:<name>" },
	{ "{\n"
	  "  \"tagOwners\": {\n"
	  "    \"tag:a\": [\"tag:zzz\"],\n"
	  "  },\n"
	  "}",
	  3, 15, "tag \"tag:zzz\" has no owner" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"autoApprovers\": {\"routes\": {\"10.0.0.0/33\": [\"group:eng\"]}},\n"
	  "}",
	  4, 32, "is not a CIDR" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:web\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 56, "is not host:ports" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"postures\": {},\n"
	  "}",
	  4, 3, "not supported by knit" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [], \"dst\": [\"tag:web:80\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 33, "must not be empty" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [],\n"
	  "  \"acls\": [],\n"
	  "}",
	  5, 3, "duplicate key" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"grants\": [{\"src\": [\"*\"], \"dst\": [\"*\"]}],\n"
	  "}",
	  4, 14, "\"ip\" is required" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"autogroup:internet\"], \"dst\": [\"tag:web:80\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 34, "not allowed here" },
	{ "[\n"
	  "  {\"acls\": []}\n"
	  "]",
	  1, 1, "must be an object" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"system:serviceaccount:prod\"], \"dst\": [\"tag:web:80\"]},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 34, "system:serviceaccount:<namespace>:<name>" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"acls\": [\n"
	  "    {\"action\": \"accept\", \"src\": [\"alice@example.com\"], \"dst\": [\"tag:web:80\"], \"proto\": \"tcp\", \"proto2\": 1},\n"
	  "  ],\n"
	  "}\n"
	  "",
	  5, 95, "unknown key" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"grants\": [{\"src\": [\"*\"], \"dst\": [\"tag:web:80\"], \"ip\": [\"*\"]}],\n"
	  "}",
	  4, 37, "invalid tag" },
	{ "{\n"
	  "  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	  "  \"tagOwners\": {\"tag:web\": [\"group:eng\"]},\n"
	  "  \"grants\": [{\"src\": [\"*\"], \"dst\": [\"tag:web\"], \"ip\": [\"icmp:22\"]}],\n"
	  "}",
	  4, 56, "is not [proto:]ports" },
	{ "{\n"
	  "  /* unterminated comment\n"
	  "",
	  2, 3, "comment" },
};

static void test_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		const struct bad *b = &bads[i];
		struct json_error err = { 0 };
		struct policy *p = policy_parse(b->policy, strlen(b->policy), &err);

		if (p)
			fail_msg("case %zu: accepted:\n%s", i, b->policy);
		if (err.line != b->line || err.column != b->column || !strstr(err.msg, b->msg))
			fail_msg("case %zu: got %zu:%zu: %s\nwant %zu:%zu: ...%s...", i, err.line,
				 err.column, err.msg, b->line, b->column, b->msg);
	}
	printf("%zu error cases\n", sizeof(bads) / sizeof(bads[0]));
}

/* ---- the policy's tests ---------------------------------------------- */

struct tcase {
	const char *what;
	const char *policy;
	bool with_devices;
	bool pass;
	const char *msg; /* in the failure */
	size_t line, column;
};

#define T_ACLS                                                                              \
	HEAD "\"acls\": [" ACL("\"alice@example.com\"", "\"tag:web:80\"") ","                   \
	     ACL("\"autogroup:member\"", "\"autogroup:self:22\"") ","                           \
	     ACLP("\"tag:web\"", "\"tag:db:53\"", "\"udp\"") "],\n"

static const struct tcase tcases[] = {
	{ "accept and deny hold", T_ACLS "\"tests\": [{\"src\": \"alice@example.com\","
		" \"accept\": [\"tag:web:80\"], \"deny\": [\"tag:web:81\", \"tag:db:5432\"]}]}",
	  false, true, NULL, 0, 0 },
	{ "failing accept", T_ACLS "\"tests\": [\n{\"src\": \"alice@example.com\", \"accept\":"
		" [\"tag:web:80\", \"tag:db:5432\"]}]}",
	  false, false, "tests[0].accept[1]: alice@example.com -> tag:db:5432 (tcp): expected accept, got deny",
	  8, 55 },
	{ "failing deny", T_ACLS "\"tests\": [{\"src\": \"alice@example.com\",\n\"deny\": [\"tag:web:80\"]}]}",
	  false, false, "tests[0].deny[0]: alice@example.com -> tag:web:80 (tcp): expected deny, got accept",
	  8, 10 },
	{ "group src: every member", T_ACLS "\"tests\": [{\"src\": \"group:eng\", \"accept\": [\"tag:web:80\"]}]}",
	  false, false, "group:eng member bob@example.com -> tag:web:80", 0, 0 },
	{ "proto udp", T_ACLS "\"tests\": [{\"src\": \"tag:web\", \"proto\": \"udp\", \"accept\":"
		" [\"tag:db:53\"]}, {\"src\": \"tag:web\", \"deny\": [\"tag:db:53\"]}]}",
	  false, true, NULL, 0, 0 },
	{ "self holds for the same user", T_ACLS "\"tests\": [{\"src\": \"alice@example.com\","
		" \"accept\": [\"alice@example.com:22\"], \"deny\": [\"bob@example.com:22\"]}]}",
	  false, true, NULL, 0, 0 },
	{ "host dst is the device that has it", T_ACLS "\"tests\": [{\"src\": \"tag:web\", \"proto\": \"udp\","
		" \"accept\": [\"dbhost:53\"]}]}",
	  true, true, NULL, 0, 0 },
	{ "ip src without devices has no identity", T_ACLS "\"tests\": [{\"src\": \"100.64.0.1\","
		" \"accept\": [\"tag:web:80\"]}]}",
	  false, false, "100.64.0.1 -> tag:web:80 (tcp): expected accept, got deny", 0, 0 },
	{ "ip src is the device that has it", T_ACLS "\"tests\": [{\"src\": \"100.64.0.1\","
		" \"accept\": [\"tag:web:80\", \"100.64.0.10:80\"]}]}",
	  true, true, NULL, 0, 0 },
	{ "allow-all policy", HEAD "\"tests\": [{\"src\": \"carol@example.com\", \"accept\":"
		" [\"tag:db:1\"]}]}",
	  false, true, NULL, 0, 0 },
	{ "empty acls", HEAD "\"acls\": [], \"tests\": [{\"src\": \"carol@example.com\", \"deny\":"
		" [\"tag:db:1\", \"alice@example.com:22\"]}]}",
	  false, true, NULL, 0, 0 },
	{ "internet address", HEAD "\"acls\": [" ACL("\"group:eng\"", "\"autogroup:internet:53\"")
		"], \"tests\": [{\"src\": \"alice@example.com\", \"proto\": \"udp\", \"accept\":"
		" [\"8.8.8.8:53\", \"[2001:4860:4860::8888]:53\"], \"deny\": [\"10.0.0.1:53\","
		" \"100.64.0.12:53\", \"8.8.8.8:54\"]}, {\"src\": \"carol@example.com\", \"proto\":"
		" \"udp\", \"deny\": [\"8.8.8.8:53\"]}]}",
	  true, true, NULL, 0, 0 },
	{ "group dst: every member", T_ACLS "\"tests\": [{\"src\": \"alice@example.com\", \"accept\":"
		" [\"group:eng:22\"]}]}",
	  false, false, "for group:eng member bob@example.com", 0, 0 },
	{ "a ServiceAccount user is in its namespace", HEAD "\"acls\": ["
		ACL("\"group:eng\"", "\"system:serviceaccounts:dev:8080\"") "], \"tests\": [{\"src\":"
		" \"alice@example.com\", \"accept\": [\"system:serviceaccount:dev:api:8080\"], \"deny\":"
		" [\"system:serviceaccount:prod:api:8080\", \"system:serviceaccount:dev:api:8081\"]},"
		" {\"src\": \"system:serviceaccount:dev:api\", \"deny\": [\"alice@example.com:22\"]}]}",
	  false, true, NULL, 0, 0 },
	{ "a ServiceAccount of another namespace is not", HEAD "\"acls\": ["
		ACL("\"group:eng\"", "\"system:serviceaccounts:dev:8080\"") "], \"tests\": [{\"src\":"
		" \"alice@example.com\", \"accept\": [\"system:serviceaccount:prod:api:8080\"]}]}",
	  false, false, "alice@example.com -> system:serviceaccount:prod:api:8080 (tcp): expected accept, got deny",
	  0, 0 },
};

static void test_policy_tests(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(tcases) / sizeof(tcases[0]); i++) {
		const struct tcase *t = &tcases[i];
		struct policy *p = parse_ok(t->policy);
		struct policy_net *net = t->with_devices ? net_all(p) : NULL;
		struct json_error err = { 0 };
		bool pass = policy_tests_run(p, net, &err);

		if (pass != t->pass)
			fail_msg("case %zu (%s): %s: %zu:%zu: %s", i, t->what, pass ? "passed" : "failed",
				 err.line, err.column, err.msg);
		if (!pass && !strstr(err.msg, t->msg))
			fail_msg("case %zu (%s): message %s", i, t->what, err.msg);
		if (!pass && t->line && (err.line != t->line || err.column != t->column))
			fail_msg("case %zu (%s): at %zu:%zu, want %zu:%zu", i, t->what, err.line,
				 err.column, t->line, t->column);
		policy_net_free(net);
		policy_free(p);
	}
}

/* ---- visibility and incremental compilation -------------------------- */

static char *names_join(struct policy_names *n)
{
	static char out[512];

	/* sorted, comma-separated */
	for (size_t i = 0; i < n->len; i++)
		for (size_t k = i + 1; k < n->len; k++)
			if (strcmp(n->v[k], n->v[i]) < 0) {
				const char *t = n->v[i];

				n->v[i] = n->v[k];
				n->v[k] = t;
			}
	out[0] = '\0';
	for (size_t i = 0; i < n->len; i++) {
		strcat(out, i ? "," : "");
		strcat(out, n->v[i]);
	}
	return out;
}

struct vis {
	const char *policy, *device, *peers;
};

static const struct vis viss[] = {
	{ ENG_WEB80, "alice-laptop", "web,web2" },
	{ ENG_WEB80, "web", "alice-laptop,alice-phone,bob-laptop" },
	{ ENG_WEB80, "carol", "" },
	{ ENG_WEB80, "db", "" },
	{ SELF, "alice-laptop", "alice-phone" },
	{ SELF, "pod-api", "" },
	{ ACLS(ACL("\"group:eng\"", "\"lan:22\"")), "router", "alice-laptop,alice-phone,bob-laptop" },
	{ ACLS(ACL("\"group:eng\"", "\"lan:22\"")), "bob-laptop", "router" },
	{ ACLS(ACL("\"group:eng\"", "\"autogroup:internet:*\"")), "alice-phone", "router" },
	{ ACLS(ACL("\"100.64.0.0/30\"", "\"tag:db:*\"")), "db", "alice-laptop,alice-phone,bob-laptop" },
	{ ACLS(ACL("\"system:serviceaccounts:prod\"", "\"tag:db:5432\"")), "db", "pod-api,pod-worker" },
	{ HEAD "\"acls\": []}", "alice-laptop", "" },
	{ "{}", "pod-dev", "alice-laptop,alice-phone,bob-laptop,carol,ci,db,oidc,pod-api,pod-worker,router,web,web2" },
};

static void test_visibility(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(viss) / sizeof(viss[0]); i++) {
		struct policy *p = parse_ok(viss[i].policy);
		struct policy_net *net = net_all(p);
		struct policy_names n;

		assert_int_equal(policy_net_peers(net, viss[i].device, &n), 0);
		if (strcmp(names_join(&n), viss[i].peers))
			fail_msg("case %zu: %s sees %s, want %s", i, viss[i].device, names_join(&n),
				 viss[i].peers);
		policy_names_free(&n);
		policy_net_free(net);
		policy_free(p);
	}
}

/* A policy change as each device's view sees it: the peers it gains
 * (upserts) and loses (removals), and which devices the change touches at
 * all (policy_net_affected) — never fewer than those whose filter or peers
 * differ. */
struct viewdelta {
	const char *before, *after, *device, *up, *rm, *affected; /* affected: NULL = not checked */
	const char *peers; /* those of affected whose peers may change; NULL = not checked */
};

#define DB_FROM(src) ACLS(ACL(src, "\"tag:db:5432\""))

static const struct viewdelta vds[] = {
	/* a rule's source widens: db gains bob's devices, nobody loses */
	{ DB_FROM("\"alice@example.com\""), DB_FROM("\"group:eng\""), "db", "bob-laptop", "", NULL, NULL },
	{ DB_FROM("\"alice@example.com\""), DB_FROM("\"group:eng\""), "bob-laptop", "db", "", NULL, NULL },
	{ DB_FROM("\"alice@example.com\""), DB_FROM("\"group:eng\""), "alice-laptop", "", "", NULL, NULL },
	/* ... and narrows back */
	{ DB_FROM("\"group:eng\""), DB_FROM("\"alice@example.com\""), "db", "", "bob-laptop", NULL, NULL },
	{ DB_FROM("\"group:eng\""), DB_FROM("\"alice@example.com\""), "bob-laptop", "", "db", NULL, NULL },
	/* a port changes: filters change, views do not */
	{ DB_FROM("\"group:eng\""), ACLS(ACL("\"group:eng\"", "\"tag:db:5433\"")), "db", "", "",
	  "alice-laptop,alice-phone,bob-laptop,db", NULL },
	/* the destination moves from tag:db to tag:web */
	{ DB_FROM("\"alice@example.com\""), ACLS(ACL("\"alice@example.com\"", "\"tag:web:80\"")), "alice-phone",
	  "web,web2", "db", "alice-laptop,alice-phone,db,web,web2", NULL },
	{ DB_FROM("\"alice@example.com\""), ACLS(ACL("\"alice@example.com\"", "\"tag:web:80\"")), "web",
	  "alice-laptop,alice-phone", "", NULL, NULL },
	/* an unchanged rule stays, a new one adds: only what it names is touched */
	{ DB_FROM("\"alice@example.com\""),
	  ACLS(ACL("\"alice@example.com\"", "\"tag:db:5432\"") "," ACL("\"carol@example.com\"", "\"ci-bot@:22\"")),
	  "carol", "ci", "", "carol,ci", NULL },
	/* a rule from a CIDR no device is in, to every device: every filter
	 * changes, nobody's peers */
	{ DB_FROM("\"alice@example.com\""),
	  ACLS(ACL("\"192.0.2.0/24\"", "\"*:60000\"") "," ACL("\"alice@example.com\"", "\"tag:db:5432\"")), "db", "",
	  "", "alice-laptop,alice-phone,bob-laptop,carol,ci,db,oidc,pod-api,pod-dev,pod-worker,router,web,web2", "" },
	/* ... to a tag: its devices' filters */
	{ DB_FROM("\"alice@example.com\""),
	  ACLS(ACL("\"192.0.2.0/24\"", "\"tag:web:1\"") "," ACL("\"alice@example.com\"", "\"tag:db:5432\"")), "web",
	  "", "", "web,web2", "" },
	/* a device source: its peers and the destinations' change */
	{ DB_FROM("\"alice@example.com\""),
	  ACLS(ACL("\"carol@example.com\"", "\"tag:web:1\"") "," ACL("\"alice@example.com\"", "\"tag:db:5432\"")), "web",
	  "carol", "", "carol,web,web2", "carol,web,web2" },
	/* the same rules in another order touch nobody */
	{ ACLS(ACL("\"carol@example.com\"", "\"ci-bot@:22\"") "," ACL("\"alice@example.com\"", "\"tag:db:5432\"")),
	  ACLS(ACL("\"alice@example.com\"", "\"tag:db:5432\"") "," ACL("\"carol@example.com\"", "\"ci-bot@:22\"")),
	  "db", "", "", "", "" },
	/* a group's members change: the rules naming it are new */
	{ DB_FROM("\"group:eng\""),
	  "{\"groups\": {\"group:eng\": [\"alice@example.com\", \"carol@example.com\"]},\n" OWNERS HOSTS APPROVE
	  " \"acls\": [" ACL("\"group:eng\"", "\"tag:db:5432\"") "]}",
	  "db", "carol", "bob-laptop", "alice-laptop,alice-phone,bob-laptop,carol,db", NULL },
	/* self: alice's devices see each other, bob's own only */
	{ DB_FROM("\"alice@example.com\""), SELF, "alice-laptop", "alice-phone", "db", NULL, NULL },
	{ DB_FROM("\"alice@example.com\""), SELF, "db", "", "alice-laptop,alice-phone", NULL, NULL },
	/* to an address selector, and to a route behind the router */
	{ DB_FROM("\"alice@example.com\""), ACLS(ACL("\"100.64.0.0/30\"", "\"tag:db:*\"")), "db", "bob-laptop", "",
	  NULL, NULL },
	{ ACLS(ACL("\"group:eng\"", "\"lan:22\"")), ACLS(ACL("\"carol@example.com\"", "\"lan:22\"")), "router", "carol",
	  "alice-laptop,alice-phone,bob-laptop", NULL, NULL },
	/* other approvers change approved routes: every device is touched */
	{ ACLS(ACL("\"group:eng\"", "\"lan:22\"")),
	  "{" GROUPS OWNERS HOSTS "\"acls\": [" ACL("\"group:eng\"", "\"lan:22\"") "]}", "bob-laptop", "", "router",
	  "alice-laptop,alice-phone,bob-laptop,carol,ci,db,oidc,pod-api,pod-dev,pod-worker,router,web,web2", NULL },
	/* deny-all to allow-all (no acls nor grants) and back */
	{ HEAD "\"acls\": []}", "{}", "ci", "alice-laptop,alice-phone,bob-laptop,carol,db,oidc,pod-api,pod-dev,pod-worker,router,web,web2", "", NULL, NULL },
	{ "{}", HEAD "\"acls\": []}", "pod-dev", "", "alice-laptop,alice-phone,bob-laptop,carol,ci,db,oidc,pod-api,pod-worker,router,web,web2", NULL, NULL },
};

static char *filter_text(struct policy_net *net, const char *name);

/* The same set of names, in any order. */
static bool same_names(const struct policy_names *a, const struct policy_names *b)
{
	size_t hits = 0;

	for (size_t i = 0; i < a->len; i++)
		for (size_t k = 0; k < b->len; k++)
			hits += !strcmp(a->v[i], b->v[k]);
	return a->len == b->len && hits == a->len;
}

static void test_view_delta(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vds) / sizeof(vds[0]); i++) {
		const struct viewdelta *c = &vds[i];
		struct policy *pa = parse_ok(c->before), *pb = parse_ok(c->after);
		struct policy_net *a = net_all(pa), *b = net_all(pb);
		struct policy_names had, now, up, rm, aff;
		struct strmap *set = strmap_new(), *affset = strmap_new(), *peerset = strmap_new();
		char joined[512];

		assert_non_null(set);
		assert_non_null(affset);
		assert_int_equal(policy_net_peers(a, c->device, &had), 0);
		for (size_t k = 0; k < had.len; k++)
			assert_int_equal(strmap_set(set, had.v[k], (void *)1, NULL), 0);
		assert_int_equal(policy_net_peers(b, c->device, &now), 0);
		assert_int_equal(policy_view_diff(set, &now, &up, &rm), 0);
		if (strcmp(names_join(&up), c->up))
			fail_msg("case %zu: %s gains %s, want %s", i, c->device, names_join(&up), c->up);
		if (strcmp(names_join(&rm), c->rm))
			fail_msg("case %zu: %s loses %s, want %s", i, c->device, names_join(&rm), c->rm);

		/* The affected set covers every device whose view or filter moved. */
		assert_int_equal(policy_net_affected(a, b, &aff), 0);
		for (size_t k = 0; k < aff.len; k++)
			assert_int_equal(strmap_set(affset, aff.v[k], (void *)1, NULL), 0);
		snprintf(joined, sizeof(joined), "%s", names_join(&aff));
		if (c->affected && strcmp(joined, c->affected))
			fail_msg("case %zu: touches %s, want %s", i, joined, c->affected);
		{
			struct policy_names aff2, pv;

			assert_int_equal(policy_net_affected_views(a, b, &aff2, &pv), 0);
			assert_string_equal(names_join(&aff2), joined);
			for (size_t k = 0; k < pv.len; k++) {
				assert_true(strmap_has(affset, pv.v[k]));
				assert_int_equal(strmap_set(peerset, pv.v[k], (void *)1, NULL), 0);
			}
			if (c->peers && strcmp(names_join(&pv), c->peers))
				fail_msg("case %zu: peers may change for %s, want %s", i, names_join(&pv), c->peers);
			policy_names_free(&aff2);
			policy_names_free(&pv);
		}
		for (size_t d = 0; d < N_DEVS; d++) {
			struct policy_names pa_, pb_;
			char *fa = filter_text(a, devs[d].name), *fb = filter_text(b, devs[d].name);
			char ja[512];

			assert_int_equal(policy_net_peers(a, devs[d].name, &pa_), 0);
			assert_int_equal(policy_net_peers(b, devs[d].name, &pb_), 0);
			snprintf(ja, sizeof(ja), "%s", names_join(&pa_));
			{
				/* The direct dump is the JSON tree's text. */
				struct policy_filter f;
				struct buf t = BUF_INIT(1 << 20);
				struct json *j;

				assert_int_equal(policy_net_filter(b, devs[d].name, &f), 0);
				assert_non_null(j = policy_filter_to_json(&f));
				assert_int_equal(json_dump(j, &t, 0), 0);
				assert_int_equal(t.len, strlen(fb));
				assert_memory_equal(t.data, fb, t.len);
				json_free(j);
				buf_free(&t);
				policy_filter_free(&f);
			}
			if ((strcmp(ja, names_join(&pb_)) || strcmp(fa, fb)) && !strmap_has(affset, devs[d].name))
				fail_msg("case %zu: %s changed but is not in the affected set %s", i, devs[d].name, joined);
			if (!same_names(&pa_, &pb_) && !strmap_has(peerset, devs[d].name))
				fail_msg("case %zu: %s's peers changed but it is not in the peers set", i, devs[d].name);
			policy_names_free(&pa_);
			policy_names_free(&pb_);
			free(fa);
			free(fb);
		}
		policy_names_free(&aff);
		policy_names_free(&had);
		policy_names_free(&now);
		policy_names_free(&up);
		policy_names_free(&rm);
		strmap_free(set);
		strmap_free(affset);
		strmap_free(peerset);
		policy_net_free(a);
		policy_net_free(b);
		policy_free(pa);
		policy_free(pb);
	}
}

static char *filter_text(struct policy_net *net, const char *name)
{
	struct policy_filter f;
	struct buf b = BUF_INIT(1 << 20);
	char *s;

	assert_int_equal(policy_net_filter(net, name, &f), 0);
	assert_int_equal(policy_filter_dump(&f, &b), 0);
	policy_filter_free(&f);
	s = buf_steal(&b, NULL);
	assert_non_null(s);
	return s;
}

/* policy_net_filter_dump writes what policy_filter_dump writes of
 * policy_net_filter, for every device of net, from its shared sources
 * (twice: built, then as kept). */
static void check_dumps(struct policy_net *net, const char *what)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < N_DEVS; i++) {
			struct buf b = BUF_INIT(1 << 20);
			char *want = filter_text(net, devs[i].name);

			assert_int_equal(policy_net_filter_dump(net, devs[i].name, &b), 0);
			if (strcmp(buf_str(&b), want))
				fail_msg("%s: %s (pass %d): shared-source filter\n%s\ndiffers from\n%s", what,
					 devs[i].name, pass, buf_str(&b), want);
			buf_free(&b);
			free(want);
		}
	}
}

static char *dump_text(struct policy_net *net, const char *name)
{
	struct buf b = BUF_INIT(1 << 20);
	char *s;

	assert_int_equal(policy_net_filter_dump(net, name, &b), 0);
	s = buf_steal(&b, NULL);
	assert_non_null(s);
	return s;
}

/* A device joining or leaving: the operator recompiles the devices
 * touched, and of their filters only the rules whose sources name the
 * device are built again; everything else keeps what it had, and every
 * filter is what a net built from scratch gives. Counted. */
static void test_incremental_counts(void **state)
{
	static const struct devspec bob2 = { "bob-2", "100.64.0.40", NULL, "bob@example.com", NULL, NULL, NULL };
	/* Sources: bob (via group:eng) in rules 0 and 2, never in 1 and 3. */
	struct policy *p = parse_ok(ACLS(ACL("\"group:eng\"", "\"tag:web:80\"") ","
					 ACL("\"tag:web\"", "\"tag:db:5432\"") ","
					 ACL("\"autogroup:member\"", "\"autogroup:self:*\"") ","
					 ACL("\"10.0.0.0/8\"", "\"tag:db:22\"")));
	struct policy_net *net = net_all(p), *fresh;
	struct policy_net_stats s0, s1;
	struct policy_names touched;
	char *before[N_DEVS];

	(void)state;
	for (size_t i = 0; i < N_DEVS; i++)
		before[i] = dump_text(net, devs[i].name);
	policy_net_stats(net, &s0);
	assert_int_equal(s0.filters, N_DEVS);
	/* Rules 0, 1 and 3 reach someone (web, db); rule 2 is self only:
	 * its sources are per device, never shared. */
	assert_int_equal(s0.source_builds, 3);
	for (size_t i = 0; i < N_DEVS; i++)
		free(dump_text(net, devs[i].name));
	policy_net_stats(net, &s1);
	assert_int_equal(s1.source_builds, 3); /* all kept */

	/* bob-2 joins: it and its peers are touched, and only rule 0 (whose
	 * sources, group:eng, name it) is built again, once for all. */
	assert_int_equal(add_dev(net, &bob2, &touched), 0);
	assert_string_equal(names_join(&touched), "bob-2,bob-laptop,web,web2");
	policy_net_stats(net, &s0);
	for (size_t i = 0; i < touched.len; i++)
		free(dump_text(net, touched.v[i]));
	policy_net_stats(net, &s1);
	assert_int_equal(s1.filters - s0.filters, touched.len);
	assert_int_equal(s1.source_builds - s0.source_builds, 1);
	policy_names_free(&touched);

	/* Untouched devices' filters did not change; touched ones match a
	 * net built from scratch, as does every other. */
	fresh = policy_net_new(p);
	assert_non_null(fresh);
	for (size_t i = 0; i < N_DEVS; i++)
		assert_int_equal(add_dev(fresh, &devs[i], NULL), 0);
	assert_int_equal(add_dev(fresh, &bob2, NULL), 0);
	for (size_t i = 0; i < N_DEVS; i++) {
		char *a = dump_text(net, devs[i].name), *b = filter_text(fresh, devs[i].name);

		assert_string_equal(a, b);
		if (strcmp(devs[i].name, "web") && strcmp(devs[i].name, "web2") && strcmp(devs[i].name, "bob-laptop"))
			assert_string_equal(a, before[i]);
		free(a);
		free(b);
	}

	/* db leaves: nobody's sources name a tag:db device, so nothing is
	 * built again; its peers are what to recompile. */
	policy_net_stats(net, &s0);
	assert_int_equal(policy_net_remove(net, "db", &touched), 0);
	assert_string_equal(names_join(&touched), "router,web,web2");
	for (size_t i = 0; i < touched.len; i++)
		free(dump_text(net, touched.v[i]));
	policy_net_stats(net, &s1);
	assert_int_equal(s1.source_builds - s0.source_builds, 0);
	policy_names_free(&touched);
	/* web leaves: rule 1's sources (tag:web) are built again. */
	assert_int_equal(policy_net_remove(net, "web", &touched), 0);
	for (size_t i = 0; i < touched.len; i++)
		free(dump_text(net, touched.v[i]));
	policy_net_stats(net, &s0);
	assert_int_equal(s0.source_builds - s1.source_builds, 0); /* db, rule 1's only destination, is gone */
	policy_names_free(&touched);
	{
		char *r = dump_text(net, "web2"), *f = filter_text(net, "web2");

		assert_string_equal(r, f);
		free(r);
		free(f);
	}

	for (size_t i = 0; i < N_DEVS; i++)
		free(before[i]);
	policy_net_free(fresh);
	policy_net_free(net);
	policy_free(p);
}

/* Adding and removing a device touches it and its peers, and leaves every
 * filter as a net built from scratch would have it. */
static void test_incremental(void **state)
{
	static const struct devspec bob2 = { "bob-2", "100.64.0.40", NULL, "bob@example.com", NULL,
					     NULL, NULL };
	struct policy *p = parse_ok(ACLS(ACL("\"group:eng\"", "\"tag:web:80\"") ","
					 ACL("\"autogroup:member\"", "\"autogroup:self:*\"")));
	struct policy_net *net = net_all(p), *fresh;
	struct policy_names touched;

	(void)state;
	assert_int_equal(add_dev(net, &bob2, &touched), 0);
	assert_string_equal(names_join(&touched), "bob-2,bob-laptop,web,web2");
	policy_names_free(&touched);
	assert_int_equal(add_dev(net, &bob2, NULL), -EEXIST);
	assert_int_equal(policy_net_remove(net, "web", &touched), 0);
	assert_string_equal(names_join(&touched), "alice-laptop,alice-phone,bob-2,bob-laptop");
	policy_names_free(&touched);
	assert_int_equal(policy_net_remove(net, "web", NULL), -ENOENT);
	assert_int_equal(policy_net_len(net), N_DEVS);

	fresh = policy_net_new(p);
	assert_non_null(fresh);
	for (size_t i = 0; i < N_DEVS; i++)
		if (strcmp(devs[i].name, "web"))
			assert_int_equal(add_dev(fresh, &devs[i], NULL), 0);
	assert_int_equal(add_dev(fresh, &bob2, NULL), 0);
	for (size_t i = 0; i < N_DEVS; i++) {
		char *a, *b;

		if (!strcmp(devs[i].name, "web"))
			continue;
		a = filter_text(net, devs[i].name);
		b = filter_text(fresh, devs[i].name);
		assert_string_equal(a, b);
		free(a);
		free(b);
	}
	{
		char *a = filter_text(net, "bob-2");

		/* bob's other device reaches the new one through self. */
		assert_non_null(strstr(a, "\"100.64.0.3/32\""));
		free(a);
	}
	policy_net_free(fresh);
	policy_net_free(net);
	policy_free(p);
}

/* The wire form is Tailscale's FilterRule list. */
static void test_filter_json(void **state)
{
	struct policy *p = parse_ok(ACLS(ACLP("\"bob@example.com\"", "\"tag:db:22,80-81\"", "\"tcp\"")));
	struct policy_net *net = net_all(p);
	char *s = filter_text(net, "db"), *e = filter_text(net, "carol");

	(void)state;
	assert_string_equal(s, "[{\"srcIPs\":[\"100.64.0.3/32\",\"fd7a:115c:a1e0::3/128\"],"
			       "\"dstPorts\":["
			       "{\"ip\":\"100.64.0.11/32\",\"ports\":{\"first\":22,\"last\":22}},"
			       "{\"ip\":\"100.64.0.11/32\",\"ports\":{\"first\":80,\"last\":81}},"
			       "{\"ip\":\"fd7a:115c:a1e0::11/128\",\"ports\":{\"first\":22,\"last\":22}},"
			       "{\"ip\":\"fd7a:115c:a1e0::11/128\",\"ports\":{\"first\":80,\"last\":81}}],"
			       "\"ipProto\":[6]}]");
	assert_string_equal(e, "[]");
	free(s);
	free(e);
	policy_net_free(net);
	policy_free(p);
}

/* autogroup:internet on an exit node: the public IPv4 space in 51
 * prefixes (0/0 split around the private, shared, loopback, link-local and
 * multicast ranges) and IPv6 2000::/3; nothing on other devices. */
static void test_internet(void **state)
{
	struct policy *p = parse_ok(ACLS(ACLP("\"group:eng\"", "\"autogroup:internet:*\"", "\"tcp\"")));
	struct policy_net *net = net_all(p);
	char *s = filter_text(net, "router"), *w = filter_text(net, "web");
	size_t n = 0;

	(void)state;
	for (const char *c = s; (c = strstr(c, "\"ip\":")); c++)
		n++;
	assert_int_equal(n, 52);
	assert_non_null(strstr(s, "\"1.0.0.0/8\""));
	assert_non_null(strstr(s, "\"2000::/3\""));
	assert_non_null(strstr(s, "\"100.128.0.0/9\""));
	assert_null(strstr(s, "\"ip\":\"100.64."));
	assert_null(strstr(s, "\"ip\":\"10."));
	assert_string_equal(w, "[]");
	free(s);
	free(w);
	policy_net_free(net);
	policy_free(p);
}

/* Inputs that would multiply are refused, not expanded: grants (dst x
 * ip) and group-by-group test assertions. */
static void test_limits(void **state)
{
	struct buf b = BUF_INIT(POLICY_MAX_BYTES);
	struct json_error err = { 0 };
	struct policy *p;

	(void)state;
	buf_add_str(&b, "{\"grants\": [{\"src\": [\"*\"], \"dst\": [");
	for (int i = 0; i < 1100; i++)
		buf_addf(&b, "%s\"100.64.%d.%d\"", i ? "," : "", i / 256, i % 256);
	buf_add_str(&b, "], \"ip\": [");
	for (int i = 0; i < 1000; i++)
		buf_addf(&b, "%s\"%d\"", i ? "," : "", i);
	buf_add_str(&b, "]}]}");
	assert_null(policy_parse((const char *)b.data, b.len, &err));
	assert_non_null(strstr(err.msg, "grants[0].ip: more than 1048576 destinations"));
	buf_reset(&b);

	buf_add_str(&b, "{\"groups\": {\"group:a\": [");
	for (int i = 0; i < 300; i++)
		buf_addf(&b, "%s\"u%d@example.com\"", i ? "," : "", i);
	buf_add_str(&b, "]}, \"acls\": [], \"tests\": [{\"src\": \"group:a\", \"deny\": [\"group:a:22\"]}]}");
	p = parse_ok((const char *)b.data);
	assert_false(policy_tests_run(p, NULL, &err));
	assert_non_null(strstr(err.msg, "tests[0].deny[0]: more than 65536 source and destination pairs"));
	policy_free(p);
	buf_free(&b);
}

/* ---- autoApprovers and tagOwners ------------------------------------- */

static void test_routes(void **state)
{
	struct policy *p2;
	struct policy_net *net;
	static const struct devspec alice_r = { "alice-r", "100.64.0.50", NULL, "alice@example.com",
						NULL, "192.168.1.0/24,10.0.1.0/24,0.0.0.0/0", NULL };
	static const struct devspec carol_r = { "carol-r", "100.64.0.51", NULL, "carol@example.com",
						NULL, "192.168.1.0/24", NULL };
	static const struct devspec router = { "r", "100.64.0.52", NULL, NULL, "tag:router",
					       "10.0.5.0/24,10.2.0.0/24,::/0", NULL };
	struct policy_routes r;
	char a[64];

	(void)state;
	p2 = parse_ok("{" GROUPS OWNERS "\"autoApprovers\": {\"routes\": {\"10.0.0.0/16\": [\"tag:router\"],"
		      " \"192.168.0.0/16\": [\"group:eng\"]}, \"exitNode\": [\"tag:router\"]}}");
	net = policy_net_new(p2);
	assert_int_equal(add_dev(net, &alice_r, NULL), 0);
	assert_int_equal(add_dev(net, &carol_r, NULL), 0);
	assert_int_equal(add_dev(net, &router, NULL), 0);

	assert_int_equal(policy_net_routes(net, "alice-r", &r), 0);
	assert_int_equal(r.n_approved, 1); /* 10.0.1.0/24 is tag:router's, 0/0 too */
	policy_prefix_format(&r.approved[0], a, sizeof(a));
	assert_string_equal(a, "192.168.1.0/24");
	assert_false(r.exit_node);
	policy_routes_free(&r);

	assert_int_equal(policy_net_routes(net, "carol-r", &r), 0);
	assert_int_equal(r.n_approved, 0);
	policy_routes_free(&r);

	assert_int_equal(policy_net_routes(net, "r", &r), 0);
	assert_int_equal(r.n_approved, 2); /* not 10.2.0.0/24: outside 10.0.0.0/16 */
	policy_prefix_format(&r.approved[0], a, sizeof(a));
	assert_string_equal(a, "10.0.5.0/24");
	policy_prefix_format(&r.approved[1], a, sizeof(a));
	assert_string_equal(a, "::/0");
	assert_true(r.exit_node);
	policy_routes_free(&r);
	assert_int_equal(policy_net_routes(net, "nobody", &r), -ENOENT);
	policy_net_free(net);
	policy_free(p2);
}

static void test_tag_owners(void **state)
{
	struct policy *p = parse_ok("{\"groups\": {\"group:eng\": [\"alice@example.com\"]},"
		" \"tagOwners\": {\"tag:web\": [\"group:eng\"], \"tag:router\": [\"tag:web\"],"
		" \"tag:api\": [\"system:serviceaccounts:prod\"],"
		" \"tag:one\": [\"system:serviceaccount:prod:api\", \"bob@\"], \"tag:admin\": [\"autogroup:admin\"],"
		" \"tag:any\": [\"autogroup:member\"]}}");
	const char *web[] = { "tag:web" };
	struct policy_device alice = { .name = "a", .user = "alice@example.com" };
	struct policy_device carol = { .name = "c", .user = "carol@example.com" };
	struct policy_device tagged = { .name = "t", .tags = web, .n_tags = 1 };
	struct policy_device pod = { .name = "p", .pod = true, .pod_namespace = "prod",
				     .pod_serviceaccount = "api" };
	struct policy_device pod2 = { .name = "p2", .pod = true, .pod_namespace = "prod",
				      .pod_serviceaccount = "worker" };
	struct policy_device pod3 = { .name = "p3", .pod = true, .pod_namespace = "dev",
				      .pod_serviceaccount = "api" };

	(void)state;
	assert_true(policy_tag_allowed(p, "tag:web", &alice));
	assert_false(policy_tag_allowed(p, "tag:web", &carol));
	assert_true(policy_tag_allowed(p, "tag:router", &tagged));
	assert_false(policy_tag_allowed(p, "tag:router", &alice));
	assert_true(policy_tag_allowed(p, "tag:web", &tagged)); /* has it already */
	assert_true(policy_tag_allowed(p, "tag:api", &pod));
	assert_true(policy_tag_allowed(p, "tag:api", &pod2));
	assert_false(policy_tag_allowed(p, "tag:api", &pod3));
	assert_true(policy_tag_allowed(p, "tag:one", &pod));
	assert_false(policy_tag_allowed(p, "tag:one", &pod2));
	assert_false(policy_tag_allowed(p, "tag:admin", &alice));
	assert_true(policy_tag_allowed(p, "tag:any", &carol));
	assert_false(policy_tag_allowed(p, "tag:any", &tagged));
	assert_false(policy_tag_allowed(p, "tag:undefined", &alice));
	{
		char owners[64];

		assert_true(policy_tag_owners(p, "tag:api", owners, sizeof(owners)));
		assert_string_equal(owners, "system:serviceaccounts:prod");
		assert_true(policy_tag_owners(p, "tag:router", owners, sizeof(owners)));
		assert_string_equal(owners, "tag:web");
		assert_true(policy_tag_owners(p, "tag:any", owners, sizeof(owners)));
		assert_string_equal(owners, "autogroup:member");
		assert_true(policy_tag_owners(p, "tag:one", owners, sizeof(owners)));
		assert_string_equal(owners, "system:serviceaccount:prod:api, bob");
		assert_true(policy_tag_owners(p, "tag:one", owners, 34));
		assert_string_equal(owners, "system:serviceaccount:prod:api");
		assert_false(policy_tag_owners(p, "tag:undefined", owners, sizeof(owners)));
		assert_string_equal(owners, "");
	}
	policy_free(p);
}

/* Kept sections and prefixes. */
static void test_misc(void **state)
{
	struct policy *p = parse_ok("{\"ssh\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"],"
		" \"dst\": [\"autogroup:self\"], \"users\": [\"autogroup:nonroot\"]}],"
		" \"sshTests\": [{\"src\": \"a@b\", \"dst\": [\"tag:x\"], \"accept\": [\"root\"]}],"
		" \"nodeAttrs\": [{\"target\": [\"*\"], \"attr\": [\"funnel\"]}]}");
	struct policy_prefix a, b;
	char s[64];

	(void)state;
	assert_int_equal(json_array_len(policy_ssh(p)), 1);
	assert_int_equal(json_array_len(policy_ssh_tests(p)), 1);
	assert_int_equal(json_array_len(policy_node_attrs(p)), 1);
	assert_false(policy_has_rules(p));
	policy_free(p);

	assert_true(policy_prefix_parse("10.1.2.3/8", &a));
	assert_true(policy_prefix_format(&a, s, sizeof(s)));
	assert_string_equal(s, "10.0.0.0/8");
	assert_true(policy_prefix_parse("10.200.0.0/16", &b));
	assert_true(policy_prefix_contains(&a, &b));
	assert_false(policy_prefix_contains(&b, &a));
	assert_true(policy_prefix_overlaps(&b, &a));
	assert_false(policy_prefix_parse("10.0.0.0/33", &a));
	assert_false(policy_prefix_parse("10.0.0.0/", &a));
	assert_false(policy_prefix_parse("10.0.0.0/08", &a));
	assert_false(policy_prefix_parse("fd7a::/129", &a));
	assert_false(policy_prefix_parse("host", &a));
	assert_false(policy_prefix_parse("", &a));
	assert_true(policy_prefix_parse("fd7a::1", &a));
	assert_int_equal(a.bits, 128);
	assert_false(policy_prefix_format(&a, s, 8));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verdicts),   cmocka_unit_test(test_errors),
		cmocka_unit_test(test_policy_tests), cmocka_unit_test(test_visibility),
		cmocka_unit_test(test_incremental), cmocka_unit_test(test_incremental_counts),
		cmocka_unit_test(test_filter_json),
		cmocka_unit_test(test_routes),	   cmocka_unit_test(test_tag_owners),
		cmocka_unit_test(test_misc),	   cmocka_unit_test(test_internet),
		cmocka_unit_test(test_limits),	   cmocka_unit_test(test_view_delta),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
