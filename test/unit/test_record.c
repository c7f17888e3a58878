/* operator/record.c: the record the operator sends for a Device parses
 * with the agent's parser (lib/control), field for field; what the codec
 * would refuse is left out, never sent. */
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

#include "buf.h"
#include "control/messages.h"
#include "json.h"
#include "record.h"

#define H64(c) c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c \
	c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c

static struct json *parse(const char *text)
{
	struct json_error e;
	struct json *j = json_parse(text, strlen(text), &e);

	if (!j)
		fail_msg("test JSON does not parse: %s: %s", e.msg, text);
	return j;
}

/* Builds dev's record, sends it as text, parses it as an agent does. */
static void through_the_wire(const char *dev_text, const struct record_soft *soft, struct netmap_node *sent,
			     struct netmap_node *got, unsigned *dropped)
{
	struct json *dev = parse(dev_text), *j;
	struct buf text = BUF_INIT(1 << 20);
	uint64_t hard;
	char why[160] = "", err[200] = "";

	*dropped = 0;
	if (record_from_device(dev, "ts.example", soft, sent, dropped, why, sizeof(why)))
		fail_msg("record_from_device: %s", why);
	assert_int_equal(record_text(sent, &text, &hard), 0);
	j = parse((const char *)text.data);
	if (!netmap_node_from_json(j, "peers[0]", got, err, sizeof(err)))
		fail_msg("the agent refuses the operator's record: %s\n%.*s", err, (int)text.len, text.data);
	json_free(j);
	json_free(dev);
	buf_free(&text);
}

#define DEV(spec, status) \
	"{\"metadata\":{\"name\":\"db-91ac02\"},\"spec\":{\"nodeKey\":\"nodekey:" H64("a") "\"" spec "}," \
	"\"status\":{\"addresses\":[\"100.64.0.7\",\"fd7a:115c:a1e0::7\"]" status "}}"

static void test_roundtrip(void **state)
{
	struct endpoint eps[2];
	const char *why;
	struct record_soft soft = { .endpoints = eps, .nendpoints = 2, .relay = 3, .online = true };
	struct netmap_node sent, got;
	char text[64];
	unsigned dropped;

	(void)state;
	assert_true(endpoint_parse(&eps[0], "192.0.2.7:41641", &why));
	assert_true(endpoint_parse(&eps[1], "[2001:db8::7]:41641", &why));
	through_the_wire(DEV(",\"discoKey\":\"discokey:" H64("b") "\",\"hostname\":\"db\",\"tags\":[\"tag:db\",\"tag:prod-1\"],"
			     "\"ephemeral\":true,\"approvedRoutes\":[\"10.0.0.0/24\",\"fd00::/64\"]", ""),
			 &soft, &sent, &got, &dropped);
	assert_int_equal(dropped, 0);
	/* Field for field. */
	assert_true(netmap_node_equal(&sent, &got));
	assert_string_equal(got.name, "db");
	assert_string_equal(got.fqdn, "db.ts.example");
	assert_string_equal(got.device, "db-91ac02");
	assert_memory_equal(got.node_key, "\xaa\xaa\xaa\xaa", 4);
	assert_true(got.has_disco_key);
	assert_memory_equal(got.disco_key, "\xbb\xbb\xbb\xbb", 4);
	assert_int_equal(got.naddresses, 2);
	netmap_prefix_format(&got.addresses[0], false, text, sizeof(text));
	assert_string_equal(text, "100.64.0.7/32");
	netmap_prefix_format(&got.addresses[1], false, text, sizeof(text));
	assert_string_equal(text, "fd7a:115c:a1e0::7/128");
	assert_int_equal(got.nallowed_ips, 4);
	netmap_prefix_format(&got.allowed_ips[2], false, text, sizeof(text));
	assert_string_equal(text, "10.0.0.0/24");
	netmap_prefix_format(&got.allowed_ips[3], false, text, sizeof(text));
	assert_string_equal(text, "fd00::/64");
	assert_int_equal(got.nendpoints, 2);
	assert_true(endpoint_equal(&got.endpoints[0], &eps[0]));
	assert_true(endpoint_equal(&got.endpoints[1], &eps[1]));
	assert_int_equal(got.relay, 3);
	assert_true(got.online);
	assert_true(got.ephemeral);
	assert_int_equal(got.ntags, 2);
	assert_string_equal(got.tags[0], "tag:db");
	assert_string_equal(got.tags[1], "tag:prod-1");
	netmap_node_free(&sent);
	netmap_node_free(&got);
}

/* What the agent would refuse is left out (and counted), the rest sent. */
static void test_left_out(void **state)
{
	static const struct {
		const char *dev;
		unsigned dropped;
		size_t nallowed, ntags;
		bool disco;
		const char *name;
	} cases[] = {
		/* No discoKey: not sent (never as ""). */
		{ DEV("", ""), 0, 2, 0, false, "db-91ac02" },
		{ DEV(",\"discoKey\":\"\"", ""), 1, 2, 0, false, "db-91ac02" },
		{ DEV(",\"discoKey\":\"discokey:12\"", ""), 1, 2, 0, false, "db-91ac02" },
		{ DEV(",\"approvedRoutes\":[\"10.0.0.0/24x\",\"10.0.0.0/abc\",\"10.1.0.0/16\",\"10.0.0.1\",7]", ""), 4, 3, 0,
		  false, "db-91ac02" },
		{ DEV(",\"tags\":[\"tag:ok\",\"db\",\"tag:\",\"tag:-x\",5]", ""), 4, 2, 1, false, "db-91ac02" },
		/* A hostname that is no DNS label is made one. */
		{ DEV(",\"hostname\":\"My Laptop.local\"", ""), 0, 2, 0, false, "my-laptop-local" },
		{ DEV(",\"hostname\":\"\"", ""), 0, 2, 0, false, "device" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct netmap_node sent, got;
		unsigned dropped;

		through_the_wire(cases[i].dev, NULL, &sent, &got, &dropped);
		if (dropped != cases[i].dropped)
			fail_msg("case %zu: dropped %u, want %u", i, dropped, cases[i].dropped);
		assert_true(netmap_node_equal(&sent, &got));
		assert_int_equal(got.nallowed_ips, cases[i].nallowed);
		assert_int_equal(got.ntags, cases[i].ntags);
		assert_int_equal(got.has_disco_key, cases[i].disco);
		assert_string_equal(got.name, cases[i].name);
		netmap_node_free(&sent);
		netmap_node_free(&got);
	}
}

/* The owner's login travels for whois and status; tagged devices have
 * none, and a user with control characters is left out. */
static void test_user(void **state)
{
	static const struct {
		const char *spec;
		const char *user;
		unsigned dropped;
	} cases[] = {
		{ "\"user\":\"alice@example.com\"", "alice@example.com", 0 },
		{ "\"user\":\"alice@example.com\",\"tags\":[\"tag:db\"]", NULL, 0 },
		{ "\"user\":\"a\\u0001b\"", NULL, 1 },
		{ "\"hostname\":\"x\"", NULL, 0 },
	};
	char text[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct netmap_node sent, got;
		unsigned dropped = 0;

		snprintf(text, sizeof(text),
			 "{\"metadata\":{\"name\":\"d\"},\"spec\":{\"nodeKey\":\"nodekey:" H64("a") "\",%s},"
			 "\"status\":{\"addresses\":[\"100.64.0.7\",\"fd7a::7\"]}}",
			 cases[i].spec);
		through_the_wire(text, NULL, &sent, &got, &dropped);
		assert_int_equal(dropped, cases[i].dropped);
		if (cases[i].user)
			assert_string_equal(got.user, cases[i].user);
		else
			assert_null(got.user);
		assert_true(netmap_node_equal(&sent, &got));
		netmap_node_free(&sent);
		netmap_node_free(&got);
	}
}

/* A Device that cannot be a peer at all. */
static void test_no_peer(void **state)
{
	static const char *cases[] = {
		"{\"metadata\":{\"name\":\"d\"},\"spec\":{},\"status\":{\"addresses\":[\"100.64.0.7\",\"fd7a::7\"]}}",
		"{\"metadata\":{\"name\":\"d\"},\"spec\":{\"nodeKey\":\"\"},\"status\":{\"addresses\":[\"100.64.0.7\",\"fd7a::7\"]}}",
		"{\"metadata\":{\"name\":\"d\"},\"spec\":{\"nodeKey\":\"nodekey:" H64("a") "\"},\"status\":{}}",
		"{\"metadata\":{\"name\":\"d\"},\"spec\":{\"nodeKey\":\"nodekey:" H64("a") "\"},"
		"\"status\":{\"addresses\":[\"100.64.0.7\",\"100.64.0.8\"]}}",
		"{\"metadata\":{\"name\":\"d\"},\"spec\":{\"nodeKey\":\"nodekey:" H64("a") "\"},"
		"\"status\":{\"addresses\":[\"100.64.0.7/32\",\"fd7a::7\"]}}",
		"{\"metadata\":{\"name\":\"d\"},\"spec\":{\"nodeKey\":\"nodekey:" H64("a") "\"},"
		"\"status\":{\"addresses\":[\"100.64.0.7\",\"fd7a::7\",\"fd7a::8\"]}}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *dev = parse(cases[i]);
		struct netmap_node n;
		char why[160] = "";

		if (record_from_device(dev, NULL, NULL, &n, NULL, why, sizeof(why)) != -EINVAL)
			fail_msg("case %zu: a record for %s", i, cases[i]);
		assert_true(why[0] != '\0');
		assert_null(n.name);
		json_free(dev);
	}
}

/* Soft state moves the record but not its hard hash. */
static void test_hard_hash(void **state)
{
	struct json *dev = parse(DEV(",\"discoKey\":\"discokey:" H64("b") "\"", ""));
	struct endpoint ep;
	const char *why;
	struct record_soft soft = { .endpoints = &ep, .nendpoints = 1, .relay = 2, .online = true };
	struct netmap_node a, b;
	struct buf ta = BUF_INIT(1 << 20), tb = BUF_INIT(1 << 20);
	uint64_t ha, hb;

	(void)state;
	assert_true(endpoint_parse(&ep, "192.0.2.1:1", &why));
	assert_int_equal(record_from_device(dev, NULL, NULL, &a, NULL, NULL, 0), 0);
	assert_int_equal(record_from_device(dev, NULL, &soft, &b, NULL, NULL, 0), 0);
	assert_string_equal(a.fqdn, "db-91ac02." RECORD_DEFAULT_SUFFIX);
	assert_int_equal(record_text(&a, &ta, &ha), 0);
	assert_int_equal(record_text(&b, &tb, &hb), 0);
	assert_int_equal(ha, hb);
	assert_false(ta.len == tb.len && memcmp(ta.data, tb.data, ta.len) == 0);
	netmap_node_free(&b);
	buf_reset(&tb);
	json_free(dev);
	dev = parse(DEV(",\"discoKey\":\"discokey:" H64("c") "\"", ""));
	assert_int_equal(record_from_device(dev, NULL, NULL, &b, NULL, NULL, 0), 0);
	assert_int_equal(record_text(&b, &tb, &hb), 0);
	assert_int_not_equal(ha, hb);
	netmap_node_free(&a);
	netmap_node_free(&b);
	buf_free(&ta);
	buf_free(&tb);
	json_free(dev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_left_out),
		cmocka_unit_test(test_user),
		cmocka_unit_test(test_no_peer),
		cmocka_unit_test(test_hard_hash),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
