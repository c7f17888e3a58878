/* The reconcilers' pure halves (operator/tailnet.c, authkey.c, device.c):
 * the status and the step each computes from what exists, as tables, with
 * no API server. */
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

#include "authkey.h"
#include "coord-internal.h"
#include "device.h"
#include "json.h"
#include "kube/meta.h"
#include "policy.h"
#include "tailnet.h"

/* 2026-01-01T00:00:00Z */
#define T0 ((time_t)1767225600)

static struct json *parse(const char *text)
{
	struct json_error e;
	struct json *j = json_parse(text, strlen(text), &e);

	if (!j)
		fail_msg("test JSON does not parse: %s: %s", e.msg, text);
	return j;
}

static const char *cond(const struct json *status, const char *type, const char *what)
{
	const struct json *c = json_get(status, "conditions");

	for (size_t i = 0; i < json_array_len(c); i++)
		if (strcmp(json_str(json_get(json_array_at(c, i), "type")) ?: "", type) == 0)
			return json_str(json_get(json_array_at(c, i), what));
	return NULL;
}

static void test_tailnet(void **state)
{
	static const struct {
		const char *spec;
		const char *ready, *reason, *msg;
	} cases[] = {
		{ "{}", "True", "PoolsValid", NULL },
		{ "{\"ipv4Pool\":\"10.0.0.0/16\",\"ipv6Pool\":\"fd00::/64\"}", "True", "PoolsValid", NULL },
		{ "{\"ipv4Pool\":\"10.0.0.0/16x\"}", "False", "InvalidPool", "bad prefix length" },
		{ "{\"ipv4Pool\":\"10.0.0.0/abc\"}", "False", "InvalidPool", "bad prefix length" },
		{ "{\"ipv4Pool\":\"10.0.0.1/16\"}", "False", "InvalidPool", "host bits set" },
		{ "{\"ipv4Pool\":\"fd00::/64\"}", "False", "InvalidPool", "ipv4Pool is not an IPv4 CIDR" },
		{ "{\"ipv6Pool\":\"10.0.0.0/8\"}", "False", "InvalidPool", "ipv6Pool is not an IPv6 CIDR" },
		{ "{\"ipv4Pool\":\"fd00::/64\",\"ipv6Pool\":\"10.0.0.0/8\"}", "False", "InvalidPool",
		  "ipv4Pool is not an IPv4 CIDR; ipv6Pool is not an IPv6 CIDR" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		struct json *tn, *status = json_new_object();
		struct tailnet_facts f = { .devices = 3, .ipv4_allocated = 2, .ipv6_allocated = -1,
					   .control_key = i ? "ctrlkey:ab" : NULL };

		snprintf(text, sizeof(text), "{\"metadata\":{\"name\":\"t\",\"generation\":4},\"spec\":%s}", cases[i].spec);
		tn = parse(text);
		tailnet_desired_status(tn, &f, T0, status);
		if (strcmp(cond(status, "Ready", "status") ?: "", cases[i].ready) ||
		    strcmp(cond(status, "Ready", "reason") ?: "", cases[i].reason) ||
		    (cases[i].msg && !strstr(cond(status, "Ready", "message") ?: "", cases[i].msg)))
			fail_msg("case %zu: Ready %s %s \"%s\"", i, cond(status, "Ready", "status"),
				 cond(status, "Ready", "reason"), cond(status, "Ready", "message"));
		assert_int_equal(json_int(json_get(status, "devices"), -1), 3);
		assert_int_equal(json_int(json_get(status, "ipv4Allocated"), -1), 2);
		assert_int_equal(json_int(json_get(status, "ipv6Allocated"), -1), 0);
		assert_int_equal(json_int(json_get(status, "observedGeneration"), -1), 4);
		if (i)
			assert_string_equal(json_str(json_get(status, "controlKey")), "ctrlkey:ab");
		else
			assert_null(json_get(status, "controlKey"));
		json_free(status);
		json_free(tn);
	}
}

static void test_authkey(void **state)
{
	static const struct {
		const char *ak; /* spec, then status */
		bool with_secret, conflict, has_key;
		enum authkey_step step;
		const char *ready, *reason;
		uint64_t requeue_ms;
	} cases[] = {
		{ "{\"expiry\":\"1h\"},\"status\":{}", false, false, false, AUTHKEY_NEED_SECRET, NULL, NULL, 0 },
		{ "{\"expiry\":\"soon\"},\"status\":{}", false, false, false, AUTHKEY_DONE, "False", "InvalidExpiry", 0 },
		{ "{\"expiry\":\"1h\"},\"status\":{}", true, true, true, AUTHKEY_DONE, "False", "SecretConflict", 0 },
		{ "{\"expiry\":\"1h\"},\"status\":{}", true, false, false, AUTHKEY_DONE, "False", "SecretConflict", 0 },
		/* created at T0 - 30 min: 30 min left */
		{ "{\"expiry\":\"1h\"},\"status\":{}", true, false, true, AUTHKEY_DONE, "True", "KeyValid", 1801000 },
		{ "{\"expiry\":\"10m\"},\"status\":{}", true, false, true, AUTHKEY_DONE, "False", "Expired", 0 },
		/* 0s: never expires, no requeue */
		{ "{\"expiry\":\"0s\",\"reusable\":true},\"status\":{}", true, false, true, AUTHKEY_DONE, "True",
		  "KeyValid", 0 },
		{ "{\"expiry\":\"1h\"},\"status\":{\"uses\":1}", true, false, true, AUTHKEY_DONE, "False", "UsedUp", 1801000 },
		{ "{\"expiry\":\"1h\",\"reusable\":true},\"status\":{\"uses\":5}", true, false, true, AUTHKEY_DONE, "True",
		  "KeyValid", 1801000 },
		{ "{\"expiry\":\"1h\",\"reusable\":true,\"maxUses\":5},\"status\":{\"uses\":5}", true, false, true,
		  AUTHKEY_DONE, "False", "UsedUp", 1801000 },
	};
	char created[32];

	(void)state;
	kube_time_format(T0 - 1800, created, sizeof(created));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		struct json *ak, *status;
		struct authkey_secret s = { .name = "k-authkey", .conflict = cases[i].conflict,
					    .prefix = cases[i].has_key ? "knit-auth-0123456789ab" : NULL,
					    .hash = cases[i].has_key ? "ff" : NULL };
		uint64_t requeue = 0;
		enum authkey_step step;

		snprintf(text, sizeof(text),
			 "{\"metadata\":{\"name\":\"k\",\"generation\":2,\"creationTimestamp\":\"%s\"},\"spec\":%s}", created,
			 cases[i].ak);
		ak = parse(text);
		status = json_clone(json_get(ak, "status"));
		step = authkey_desired_status(ak, cases[i].with_secret ? &s : NULL, T0, status, &requeue);
		if (step != cases[i].step)
			fail_msg("case %zu: step %d", i, step);
		if (cases[i].ready) {
			if (strcmp(cond(status, "Ready", "status") ?: "", cases[i].ready) ||
			    strcmp(cond(status, "Ready", "reason") ?: "", cases[i].reason))
				fail_msg("case %zu: Ready %s %s", i, cond(status, "Ready", "status"),
					 cond(status, "Ready", "reason"));
		} else {
			assert_null(cond(status, "Ready", "status"));
		}
		assert_int_equal(requeue, cases[i].requeue_ms);
		if (cases[i].has_key && !cases[i].conflict) {
			assert_string_equal(json_str(json_get(status, "keyPrefix")), "knit-auth-0123456789ab");
			assert_string_equal(json_str(json_get(status, "secretName")), "k-authkey");
			if (strstr(cases[i].ak, "\"0s\""))
				assert_null(json_get(status, "expiresAt"));
			else
				assert_non_null(json_get(status, "expiresAt"));
		} else {
			assert_null(json_get(status, "keyHash"));
		}
		assert_int_equal(json_int(json_get(status, "observedGeneration"), -1), 2);
		json_free(status);
		json_free(ak);
	}
	{
		char name[300], big[260];

		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		assert_true(authkey_secret_name("k", name, sizeof(name)));
		assert_string_equal(name, "k-authkey");
		assert_false(authkey_secret_name(big, name, sizeof(name)));
	}
}

static void test_device_plan(void **state)
{
	static const struct {
		const char *dev_spec, *dev_status, *tn_spec; /* tn_spec NULL: no Tailnet */
		enum device_step step;
		const char *reason;
		uint64_t requeue_ms;
	} cases[] = {
		{ "{}", "{}", NULL, DEVICE_WRITE_STATUS, "TailnetNotFound", 10000 },
		{ "{}", "{}", "{}", DEVICE_ALLOCATE, NULL, 0 },
		{ "{}", "{}", "{\"ipv4Pool\":\"10.0.0.0/24x\"}", DEVICE_WRITE_STATUS, "InvalidPool", 0 },
		{ "{}", "{}", "{\"ipv6Pool\":\"10.0.0.0/8\"}", DEVICE_WRITE_STATUS, "InvalidPool", 0 },
		/* ephemeral, last seen 10 min ago, default timeout 5 min */
		{ "{\"ephemeral\":true}", "{\"lastSeen\":\"%s\"}", "{}", DEVICE_DELETE, NULL, 0 },
		{ "{\"ephemeral\":true}", "{\"lastSeen\":\"%s\",\"online\":true}", "{}", DEVICE_ALLOCATE, NULL, 0 },
		{ "{\"ephemeral\":true}", "{\"lastSeen\":\"%s\"}", "{\"ephemeralInactivityTimeout\":\"1h\"}",
		  DEVICE_ALLOCATE, NULL, 3000500 },
		{ "{}", "{\"lastSeen\":\"%s\"}", "{}", DEVICE_ALLOCATE, NULL, 0 },
	};
	char seen[32];

	(void)state;
	kube_time_format(T0 - 600, seen, sizeof(seen));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char st[256], text[512];
		struct json *dev, *tn = NULL, *status = json_new_object();
		struct device_plan plan;
		enum device_step step;

		const char *at = strstr(cases[i].dev_status, "%s");

		if (at)
			snprintf(st, sizeof(st), "%.*s%s%s", (int)(at - cases[i].dev_status), cases[i].dev_status, seen,
				 at + 2);
		else
			snprintf(st, sizeof(st), "%s", cases[i].dev_status);
		snprintf(text, sizeof(text), "{\"metadata\":{\"name\":\"d\",\"generation\":1},\"spec\":%s,\"status\":%s}",
			 cases[i].dev_spec, st);
		dev = parse(text);
		if (cases[i].tn_spec) {
			snprintf(text, sizeof(text), "{\"metadata\":{\"name\":\"default\"},\"spec\":%s}", cases[i].tn_spec);
			tn = parse(text);
		}
		step = device_plan(dev, tn, T0, status, &plan);
		if (step != cases[i].step)
			fail_msg("case %zu: step %d, want %d", i, step, cases[i].step);
		if (cases[i].reason)
			assert_string_equal(cond(status, "Ready", "reason") ?: "", cases[i].reason);
		else
			assert_null(cond(status, "Ready", "reason"));
		assert_int_equal(plan.requeue_ms, cases[i].requeue_ms);
		if (step == DEVICE_ALLOCATE)
			assert_true(plan.pool4.family == AF_INET && plan.pool6.family == AF_INET6);
		json_free(status);
		json_free(tn);
		json_free(dev);
	}
}

static void test_device_status(void **state)
{
	char future[32], past[32], text[256];
	struct json *dev, *status;
	uint64_t requeue;

	(void)state;
	kube_time_format(T0 + 3600, future, sizeof(future));
	kube_time_format(T0 - 1, past, sizeof(past));

	snprintf(text, sizeof(text), "{\"metadata\":{\"name\":\"d\"},\"spec\":{\"keyExpiry\":\"%s\"}}", future);
	dev = parse(text);
	status = json_new_object();
	requeue = 0;
	assert_int_equal(device_desired_status(dev, "100.64.0.5", "fd7a:115c:a1e0::5", T0, status, &requeue), 0);
	assert_string_equal(json_str(json_array_at(json_get(status, "addresses"), 0)), "100.64.0.5");
	assert_string_equal(json_str(json_array_at(json_get(status, "addresses"), 1)), "fd7a:115c:a1e0::5");
	assert_false(json_bool(json_get(status, "keyExpired"), true));
	assert_string_equal(cond(status, "Ready", "reason"), "AddressesAllocated");
	assert_int_equal(requeue, 3600500);
	/* An earlier requeue stays. */
	requeue = 1000;
	assert_int_equal(device_desired_status(dev, "100.64.0.5", "fd7a:115c:a1e0::5", T0, status, &requeue), 0);
	assert_int_equal(requeue, 1000);
	json_free(status);
	json_free(dev);

	snprintf(text, sizeof(text), "{\"metadata\":{\"name\":\"d\"},\"spec\":{\"keyExpiry\":\"%s\"}}", past);
	dev = parse(text);
	status = json_new_object();
	requeue = 0;
	assert_int_equal(device_desired_status(dev, "100.64.0.5", "fd7a:115c:a1e0::5", T0, status, &requeue), 0);
	assert_true(json_bool(json_get(status, "keyExpired"), false));
	assert_string_equal(cond(status, "Ready", "reason"), "KeyExpired");
	assert_int_equal(requeue, 0);
	json_free(status);
	json_free(dev);
}

/* A week ahead a Device says its key is about to expire (a Warning Event
 * goes with the turn); keys that do not expire never do. The lifetime a
 * registration gets: the AuthKey's nodeKeyExpiry, else none when tagged,
 * else the Tailnet's. */
static void test_key_warning(void **state)
{
	struct json *status = json_new_object(), *tn, *ak;
	uint64_t requeue = 0;

	(void)state;
	device_key_warning(T0 + 30 * 86400, T0, 1, status, &requeue);
	assert_string_equal(cond(status, "KeyExpiringSoon", "status"), "False");
	assert_int_equal(requeue, (uint64_t)23 * 86400 * 1000 + 500); /* when it turns */
	requeue = 0;
	device_key_warning(T0 + 6 * 86400, T0, 1, status, &requeue);
	assert_string_equal(cond(status, "KeyExpiringSoon", "status"), "True");
	assert_string_equal(cond(status, "KeyExpiringSoon", "reason"), "KeyExpiresWithinAWeek");
	assert_int_equal(requeue, 0);
	device_key_warning(T0 - 1, T0, 1, status, &requeue);
	assert_string_equal(cond(status, "KeyExpiringSoon", "reason"), "KeyExpired");
	device_key_warning(0, T0, 1, status, &requeue);
	assert_string_equal(cond(status, "KeyExpiringSoon", "status"), "False");
	assert_string_equal(cond(status, "KeyExpiringSoon", "reason"), "NoExpiry");
	json_free(status);

	tn = parse("{\"spec\":{\"keyExpiry\":\"720h\"}}");
	assert_int_equal(renew_key_lifetime_ms(tn, NULL, false), (uint64_t)720 * 3600 * 1000);
	assert_int_equal(renew_key_lifetime_ms(tn, NULL, true), 0);
	assert_int_equal(renew_key_lifetime_ms(NULL, NULL, false), (uint64_t)4320 * 3600 * 1000);
	ak = parse("{\"spec\":{\"nodeKeyExpiry\":\"24h\"}}");
	assert_int_equal(renew_key_lifetime_ms(tn, ak, true), (uint64_t)24 * 3600 * 1000);
	assert_int_equal(renew_key_lifetime_ms(tn, ak, false), (uint64_t)24 * 3600 * 1000);
	json_free(ak);
	ak = parse("{\"spec\":{\"nodeKeyExpiry\":\"0s\"}}");
	assert_int_equal(renew_key_lifetime_ms(tn, ak, false), 0);
	json_free(ak);
	json_free(tn);
	tn = parse("{\"spec\":{\"keyExpiry\":\"0s\"}}");
	assert_int_equal(renew_key_lifetime_ms(tn, NULL, false), 0);
	json_free(tn);
}

/* The Policy reconciler's pure half: Valid and TestsPassed with the
 * parse error or the first failing assertion at line:column; only a good
 * generation is applied, a bad one keeps the applied one. */
static void test_policy_status(void **state)
{
	static const char *devs_text =
		"[{\"metadata\":{\"name\":\"a\"},\"spec\":{\"user\":\"alice\"},"
		"\"status\":{\"addresses\":[\"100.64.0.1\",\"fd7a:115c:a1e0::1\"]}},"
		"{\"metadata\":{\"name\":\"db\"},\"spec\":{\"user\":\"alice\",\"tags\":[\"tag:db\"]},"
		"\"status\":{\"addresses\":[\"100.64.0.2\",\"fd7a:115c:a1e0::2\"]}}]";
	static const struct {
		int gen;
		const char *policy; /* JSON string contents */
		const char *valid, *vreason, *tests, *treason, *msg;
		bool applied;
	} cases[] = {
		{ 1, "{\\\"tagOwners\\\":{\\\"tag:db\\\":[\\\"alice@\\\"]},\\\"acls\\\":[{\\\"action\\\":\\\"accept\\\","
		     "\\\"src\\\":[\\\"alice@\\\"],\\\"dst\\\":[\\\"tag:db:5432\\\"]}],"
		     "\\\"tests\\\":[{\\\"src\\\":\\\"alice@\\\",\\\"accept\\\":[\\\"tag:db:5432\\\"],\\\"deny\\\":[\\\"tag:db:22\\\"]}]}",
		  "True", "Parsed", "True", "AllTestsPassed", NULL, true },
		/* the test's IP source is the device that has it */
		{ 2, "{\\\"tagOwners\\\":{\\\"tag:db\\\":[\\\"alice@\\\"]},\\\"acls\\\":[{\\\"action\\\":\\\"accept\\\","
		     "\\\"src\\\":[\\\"alice@\\\"],\\\"dst\\\":[\\\"tag:db:5432\\\"]}],"
		     "\\\"tests\\\":[{\\\"src\\\":\\\"100.64.0.1\\\",\\\"accept\\\":[\\\"tag:db:5432\\\"]}]}",
		  "True", "Parsed", "True", "AllTestsPassed", NULL, true },
		{ 3, "{\\\"tagOwners\\\":{\\\"tag:db\\\":[\\\"alice@\\\"]},\\\"acls\\\":[],"
		     "\\\"tests\\\":[{\\\"src\\\":\\\"alice@\\\",\\\"accept\\\":[\\\"tag:db:5432\\\"]}]}",
		  "True", "Parsed", "False", "TestFailed", "1:81: tests[0].accept[0]: alice -> tag:db:5432 (tcp): expected accept, got deny", false },
		{ 4, "{\\\"acls\\\":[{\\\"action\\\":\\\"accept\\\",\\\"src\\\":[\\\"group:nope\\\"],\\\"dst\\\":[\\\"*:*\\\"]}]}",
		  "False", "ParseError", "Unknown", "NotValid", "1:36: acls[0].src[0]: group \"group:nope\" is not defined", false },
	};
	struct json *devs = parse(devs_text), *status = json_new_object();
	char text[2048];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct policy *p = NULL;
		struct json *obj;
		bool ok;

		snprintf(text, sizeof(text), "{\"metadata\":{\"name\":\"pol\",\"generation\":%d},\"spec\":{\"policy\":\"%s\"}}",
			 cases[i].gen, cases[i].policy);
		obj = parse(text);
		ok = policy_desired_status(obj, devs, T0, status, &p);
		assert_int_equal(ok, cases[i].applied);
		assert_int_equal(p != NULL, cases[i].applied);
		assert_string_equal(cond(status, "Valid", "status"), cases[i].valid);
		assert_string_equal(cond(status, "Valid", "reason"), cases[i].vreason);
		assert_string_equal(cond(status, "TestsPassed", "status"), cases[i].tests);
		assert_string_equal(cond(status, "TestsPassed", "reason"), cases[i].treason);
		if (cases[i].msg && !strcmp(cases[i].valid, "False"))
			assert_string_equal(cond(status, "Valid", "message"), cases[i].msg);
		else if (cases[i].msg)
			assert_string_equal(cond(status, "TestsPassed", "message"), cases[i].msg);
		assert_int_equal(json_int(json_get(status, "observedGeneration"), -1), cases[i].gen);
		/* A refused generation leaves the last applied one (2) in force. */
		assert_int_equal(json_int(json_get(status, "appliedGeneration"), -1), cases[i].applied ? cases[i].gen : 2);
		assert_non_null(json_str(json_get(status, "appliedPolicy")));
		if (cases[i].applied)
			assert_string_equal(json_str(json_get(status, "appliedPolicy")),
					    json_str(json_path(obj, "spec", "policy", NULL)));
		policy_free(p);
		json_free(obj);
	}
	json_free(status);
	json_free(devs);
}

/* The policy store: a tailnet without a policy is allow-all (NULL); a
 * reference outlives its replacement; dropping by name. */
static void test_policy_store(void **state)
{
	struct policy_store *s = policy_store_new();
	struct json_error e;
	struct policy_ref *r1, *r2;
	char tn[64];

	assert_non_null(s);
	assert_null(policy_store_get(s, "default"));
	assert_int_equal(policy_store_set(s, "default", "p1", 1, policy_parse("{}", 2, &e)), 0);
	r1 = policy_store_get(s, "default");
	assert_non_null(r1);
	assert_string_equal(r1->name, "p1");
	assert_int_equal(policy_store_set(s, "default", "p1", 2, policy_parse("{\"acls\":[]}", 11, &e)), 0);
	r2 = policy_store_get(s, "default");
	assert_int_equal(r2->generation, 2);
	assert_false(policy_has_rules(r1->p)); /* still readable */
	assert_true(policy_has_rules(r2->p));
	policy_store_put(s, r1);
	policy_store_put(s, r2);
	assert_null(policy_store_get(s, "other"));
	assert_false(policy_store_drop(s, "p2", tn, sizeof(tn)));
	assert_true(policy_store_drop(s, "p1", tn, sizeof(tn)));
	assert_string_equal(tn, "default");
	assert_null(policy_store_get(s, "default"));
	assert_int_equal(policy_store_version(s), 3);
	policy_store_free(s);
}

/* Registration under a policy: the key's tags count as owned, others
 * need tagOwners (the refusal names the owners); autoApprovers. */
static void test_policy_registration(void **state)
{
	static const char *text = "{\"groups\":{\"group:dev\":[\"alice@\"]},"
				  "\"tagOwners\":{\"tag:db\":[\"group:dev\"],\"tag:web\":[\"tag:db\"],\"tag:ops\":[\"bob@\"],"
				  "\"tag:router\":[\"alice@\"]},"
				  "\"autoApprovers\":{\"routes\":{\"10.0.0.0/8\":[\"tag:router\"]}}}";
	static const struct {
		const char *user, *key_tags, *tags;
		int ret;
		const char *why;
	} cases[] = {
		{ "alice", "[]", "[\"tag:db\"]", 0, NULL },
		{ "bob", "[]", "[\"tag:db\"]", -EPERM, "tag tag:db needs one of its owners (group:dev) in tagOwners; the registering identity (bob) is none of them" },
		{ "bob", "[\"tag:db\"]", "[\"tag:db\"]", 0, NULL }, /* the key's tags are owned */
		{ "bob", "[\"tag:db\"]", "[\"tag:web\"]", 0, NULL }, /* owned by a tag of the key */
		{ "bob", "[\"tag:db\"]", "[\"tag:ops\"]", -EPERM, "tag tag:ops needs one of its owners (bob) in tagOwners; the registering identity (the auth key's tags) is none of them" },
		{ "alice", "[]", "[\"tag:nope\"]", -EPERM, "tag tag:nope is not in the policy's tagOwners: nobody may claim it" },
		{ "alice", "[]", "[]", 0, NULL },
	};
	struct json_error e;
	struct policy *p = policy_parse(text, strlen(text), &e);
	struct json *dev, *ok;
	char why[512];

	assert_non_null(p);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *kt = parse(cases[i].key_tags), *t = parse(cases[i].tags);

		why[0] = '\0';
		assert_int_equal(policy_tags_permitted(p, cases[i].user, kt, t, why, sizeof(why)), cases[i].ret);
		if (cases[i].why)
			assert_string_equal(why, cases[i].why);
		json_free(kt);
		json_free(t);
	}
	dev = parse("{\"metadata\":{\"name\":\"r\"},\"spec\":{\"tags\":[\"tag:router\"],"
		    "\"advertisedRoutes\":[\"10.1.0.0/16\",\"192.168.0.0/24\"]}}");
	ok = policy_auto_approved(p, dev);
	assert_int_equal(json_array_len(ok), 1);
	assert_string_equal(json_str(json_array_at(ok, 0)), "10.1.0.0/16");
	json_free(ok);
	json_free(dev);
	dev = parse("{\"metadata\":{\"name\":\"r\"},\"spec\":{\"user\":\"alice\",\"advertisedRoutes\":[\"10.1.0.0/16\"]}}");
	ok = policy_auto_approved(p, dev);
	assert_int_equal(json_array_len(ok), 0);
	json_free(ok);
	json_free(dev);
	policy_free(p);
}

/* Tailnet.spec.authKeyNamespaces: absent, only the operator's namespace;
 * present, exactly the ones listed (an empty list allows none). */
static void test_authkey_namespaces(void **state)
{
	struct json *none = parse("{\"spec\":{}}"), *list = parse("{\"spec\":{\"authKeyNamespaces\":[\"ci\",\"team\"]}}"),
		    *empty = parse("{\"spec\":{\"authKeyNamespaces\":[]}}");

	assert_true(tailnet_authkey_namespace_allowed(none, "knit-system", "knit-system"));
	assert_false(tailnet_authkey_namespace_allowed(none, "default", "knit-system"));
	assert_true(tailnet_authkey_namespace_allowed(NULL, "knit-system", "knit-system")); /* no Tailnet yet */
	assert_false(tailnet_authkey_namespace_allowed(NULL, "kube-system", "knit-system"));
	assert_true(tailnet_authkey_namespace_allowed(list, "team", "knit-system"));
	assert_true(tailnet_authkey_namespace_allowed(list, "ci", "knit-system"));
	assert_false(tailnet_authkey_namespace_allowed(list, "knit-system", "knit-system")); /* not listed */
	assert_false(tailnet_authkey_namespace_allowed(list, "tea", "knit-system"));
	assert_false(tailnet_authkey_namespace_allowed(empty, "knit-system", "knit-system"));
	assert_false(tailnet_authkey_namespace_allowed(list, NULL, "knit-system"));
	json_free(none);
	json_free(list);
	json_free(empty);
}

/* autoApprovers re-evaluated: a route advertised before the policy
 * approved it is approved once it does; an approval the policy withdraws
 * goes, and an admin's (one the annotation does not list) always stays.
 * Each case: the policy (NULL: none), the Device's advertised and
 * approved routes and annotation, and what the patch sets (NULL: no
 * patch). */
static void test_policy_routes(void **state)
{
#define APPROVE_ROUTES "{\"tagOwners\":{\"tag:router\":[\"alice@\"]}," \
				     "\"autoApprovers\":{\"routes\":{\"10.0.0.0/8\":[\"tag:router\"]},\"exitNode\":[\"tag:router\"]}}"
#define NARROW_ROUTES "{\"tagOwners\":{\"tag:router\":[\"alice@\"]}," \
				    "\"autoApprovers\":{\"routes\":{\"10.1.0.0/16\":[\"tag:router\"]}}}"
#define NO_APPROVERS "{\"tagOwners\":{\"tag:router\":[\"alice@\"]}}"
	static const struct {
		const char *policy, *advertised, *approved, *ann;
		const char *want_approved, *want_ann; /* want_ann "": the annotation removed */
	} cases[] = {
		/* advertised before: the policy now approves it */
		{ APPROVE_ROUTES, "[\"10.1.0.0/16\"]", NULL, NULL, "[\"10.1.0.0/16\"]", "10.1.0.0/16" },
		{ APPROVE_ROUTES, "[\"10.1.0.0/16\",\"192.168.0.0/24\",\"0.0.0.0/0\"]", "[]", NULL,
		  "[\"10.1.0.0/16\",\"0.0.0.0/0\"]", "10.1.0.0/16,0.0.0.0/0" },
		/* already so: nothing to write */
		{ APPROVE_ROUTES, "[\"10.1.0.0/16\"]", "[\"10.1.0.0/16\"]", "10.1.0.0/16", NULL, NULL },
		/* an admin's approval joins, and is not listed as the policy's */
		{ APPROVE_ROUTES, "[\"10.1.0.0/16\",\"192.168.0.0/24\"]", "[\"192.168.0.0/24\"]", NULL,
		  "[\"192.168.0.0/24\",\"10.1.0.0/16\"]", "10.1.0.0/16" },
		/* the approver is narrowed: 10.2/16 goes, 10.1/16 stays */
		{ NARROW_ROUTES, "[\"10.1.0.0/16\",\"10.2.0.0/16\"]", "[\"10.1.0.0/16\",\"10.2.0.0/16\"]", "10.1.0.0/16,10.2.0.0/16",
		  "[\"10.1.0.0/16\"]", "10.1.0.0/16" },
		/* withdrawn: the policy's approvals go, the admin's stay */
		{ NO_APPROVERS, "[\"10.1.0.0/16\",\"192.168.0.0/24\"]", "[\"192.168.0.0/24\",\"10.1.0.0/16\"]", "10.1.0.0/16",
		  "[\"192.168.0.0/24\"]", "" },
		{ NULL, "[\"10.1.0.0/16\"]", "[\"10.1.0.0/16\"]", "10.1.0.0/16", "[]", "" },
		/* an admin approved what the policy approved too: withdrawing the
		 * policy's leaves it */
		{ NO_APPROVERS, "[\"10.1.0.0/16\"]", "[\"10.1.0.0/16\"]", NULL, NULL, NULL },
		/* no routes, nothing approved before: nothing */
		{ APPROVE_ROUTES, NULL, NULL, NULL, NULL, NULL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct policy *p = NULL;
		struct json *dev, *patch, *want;
		struct json_error e;
		char text[1024];
		int err;

		if (cases[i].policy)
			assert_non_null(p = policy_parse(cases[i].policy, strlen(cases[i].policy), &e));
		snprintf(text, sizeof(text),
			 "{\"metadata\":{\"name\":\"r\"%s%s%s},\"spec\":{\"tags\":[\"tag:router\"]%s%s%s%s}}",
			 cases[i].ann ? ",\"annotations\":{\"" POLICY_AUTO_ROUTES_ANNOTATION "\":\"" : "",
			 cases[i].ann ? cases[i].ann : "", cases[i].ann ? "\"}" : "",
			 cases[i].advertised ? ",\"advertisedRoutes\":" : "", cases[i].advertised ? cases[i].advertised : "",
			 cases[i].approved ? ",\"approvedRoutes\":" : "", cases[i].approved ? cases[i].approved : "");
		dev = parse(text);
		patch = policy_routes_patch(p, dev, &err);
		assert_int_equal(err, 0);
		if (!cases[i].want_approved) {
			if (patch)
				fail_msg("case %zu: a patch where none is due", i);
		} else {
			const struct json *ann;

			if (!patch)
				fail_msg("case %zu: no patch", i);
			want = parse(cases[i].want_approved);
			if (!json_equal(json_path(patch, "spec", "approvedRoutes", NULL), want))
				fail_msg("case %zu: approvedRoutes not as wanted", i);
			json_free(want);
			ann = json_path(patch, "metadata", "annotations", POLICY_AUTO_ROUTES_ANNOTATION, NULL);
			if (*cases[i].want_ann)
				assert_string_equal(json_str(ann), cases[i].want_ann);
			else
				assert_true(json_is_null(ann));
			/* Applied, it is where it should be: a second look patches nothing. */
			dev = json_merge_patch(dev, patch);
			patch = policy_routes_patch(p, dev, &err);
			if (patch)
				fail_msg("case %zu: not converged after one patch", i);
		}
		json_free(patch);
		json_free(dev);
		policy_free(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_authkey_namespaces),
		cmocka_unit_test(test_tailnet),
		cmocka_unit_test(test_authkey),
		cmocka_unit_test(test_device_plan),
		cmocka_unit_test(test_device_status),
		cmocka_unit_test(test_key_warning),
		cmocka_unit_test(test_policy_status),
		cmocka_unit_test(test_policy_store),
		cmocka_unit_test(test_policy_registration),
		cmocka_unit_test(test_policy_routes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
