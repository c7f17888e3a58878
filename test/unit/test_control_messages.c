/* control/messages.c: netmaps, deltas and calls to and from JSON, table
 * tests of malformed input, deltas applied all or nothing, diff + apply
 * round trips. */
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

#include <sodium.h>

#include "buf.h"
#include "control/fields.h"
#include "control/messages.h"
#include "json.h"

#define H8(c) c c c c c c c c
#define H64(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c)
#define NK(c) "\"nodekey:" H64(c) "\""
#define DK(c) "\"discokey:" H64(c) "\""

#define SELF "{\"name\":\"me\",\"fqdn\":\"me.tailnet.knit\",\"device\":\"me-1\",\"nodeKey\":" NK("1") \
	",\"discoKey\":" DK("1") ",\"addresses\":[\"100.64.0.5/32\",\"fd7a:115c:a1e0::5/128\"]}"
#define PEER_A "{\"name\":\"db\",\"fqdn\":\"db.tailnet.knit\",\"device\":\"db-91ac02\",\"nodeKey\":" NK("a") \
	",\"discoKey\":" DK("a") ",\"addresses\":[\"100.64.0.7/32\",\"fd7a:115c:a1e0::7/128\"]," \
	"\"allowedIPs\":[\"100.64.0.7/32\",\"10.0.0.0/24\"],\"endpoints\":[\"192.0.2.7:41641\",\"[2001:db8::7]:41641\"]," \
	"\"relay\":1,\"online\":true,\"tags\":[\"tag:db\"]}"
#define PEER_B "{\"name\":\"web\",\"nodeKey\":" NK("b") ",\"addresses\":[\"100.64.0.8/32\"]}"
#define FULL "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[" PEER_A "," PEER_B "]," \
	"\"dns\":{\"suffix\":\"tailnet.knit\",\"nameservers\":[]},\"relayMap\":{\"1\":{\"host\":\"relay\"}}," \
	"\"packetFilter\":[{\"src\":[\"*\"]}]}"

static struct json *parse(const char *text)
{
	struct json_error e;
	struct json *j = json_parse(text, strlen(text), &e);

	if (!j)
		fail_msg("test JSON does not parse: %s at %zu: %.80s", e.msg, e.offset, text);
	return j;
}

static void load_full(struct netmap *nm, const char *text)
{
	struct json *j = parse(text);
	char err[200] = "";

	if (!netmap_from_json(j, nm, err, sizeof(err)))
		fail_msg("netmap_from_json: %s", err);
	json_free(j);
}

static char *dump(const struct json *j)
{
	struct buf b = BUF_INIT(1 << 20);

	assert_int_equal(json_dump(j, &b, 0), 0);
	return buf_steal(&b, NULL);
}

static bool netmap_json_equal(const struct netmap *a, const struct netmap *b)
{
	struct json *ja = netmap_to_json(a), *jb = netmap_to_json(b);
	bool eq;

	assert_non_null(ja);
	assert_non_null(jb);
	eq = json_equal(ja, jb);
	if (!eq) {
		char *sa = dump(ja), *sb = dump(jb);

		print_error("a: %s\nb: %s\n", sa, sb);
		free(sa);
		free(sb);
	}
	json_free(ja);
	json_free(jb);
	return eq;
}

static void test_prefix(void **state)
{
	static const struct {
		const char *in;
		bool ok;
		const char *out; /* formatted, not bare */
	} cases[] = {
		{ "100.64.0.7/32", true, "100.64.0.7/32" },
		{ "100.64.0.7", true, "100.64.0.7/32" },
		{ "10.0.0.0/8", true, "10.0.0.0/8" },
		{ "0.0.0.0/0", true, "0.0.0.0/0" },
		{ "fd7a:115c:a1e0::7/128", true, "fd7a:115c:a1e0::7/128" },
		{ "::/0", true, "::/0" },
		{ "2001:db8::", true, "2001:db8::/128" },
		{ "10.0.0.0/33", false, NULL },
		{ "::/129", false, NULL },
		{ "10.0.0.0/", false, NULL },
		{ "10.0.0.0/08", false, NULL },
		{ "10.0.0.0/+8", false, NULL },
		{ "10.0.0.0/ 8", false, NULL },
		{ "10.0.0.0/8x", false, NULL },
		{ "/8", false, NULL },
		{ "", false, NULL },
		{ "10.0.0", false, NULL },
		{ "db.tailnet.knit", false, NULL },
		{ "1.2.3.4/32/1", false, NULL },
		{ "fe80::1%eth0/64", false, NULL },
		/* IPv4-mapped and -compatible: the CRDs refuse them */
		{ "::ffff:10.0.0.0/120", false, NULL },
		{ "::ffff:a00:0/120", false, NULL },
		{ "::10.0.0.1", false, NULL },
		{ "::a00:1/128", false, NULL },
		{ "::ffff:0:0/96", false, NULL },
		{ "64:ff9b::/96", true, "64:ff9b::/96" },
		{ "::1", true, "::1/128" },
	};
	struct netmap_prefix p, q;
	char out[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool ok = netmap_prefix_parse(&p, cases[i].in);

		if (ok != cases[i].ok)
			fail_msg("%s: want %d", cases[i].in, cases[i].ok);
		if (!ok)
			continue;
		assert_true(netmap_prefix_format(&p, false, out, sizeof(out)) > 0);
		assert_string_equal(out, cases[i].out);
		assert_true(netmap_prefix_parse(&q, out));
		assert_true(netmap_prefix_equal(&p, &q));
	}
	assert_true(netmap_prefix_parse(&p, "100.64.0.5/32"));
	assert_int_equal(netmap_prefix_format(&p, true, out, sizeof(out)), 10);
	assert_string_equal(out, "100.64.0.5");
	assert_int_equal(netmap_prefix_format(&p, true, out, 5), -ENOSPC);
	assert_true(netmap_prefix_parse(&p, "100.64.0.0/10"));
	assert_int_equal(netmap_prefix_format(&p, true, out, sizeof(out)), 13);
}

static void test_full_roundtrip(void **state)
{
	struct netmap nm, back;
	struct json *j;
	const struct netmap_node *a;
	uint8_t key[32];
	char text[64];

	load_full(&nm, FULL);
	assert_int_equal(nm.seq, 1);
	assert_string_equal(nm.self.name, "me");
	assert_int_equal(nm.self.naddresses, 2);
	assert_int_equal(nm.npeers, 2);
	assert_string_equal(nm.dns_suffix, "tailnet.knit");
	assert_non_null(nm.relay_map);
	assert_true(json_is_array(nm.packet_filter));
	memset(key, 0xaa, sizeof(key));
	a = netmap_find_peer(&nm, key);
	assert_non_null(a);
	assert_string_equal(a->name, "db");
	assert_string_equal(a->fqdn, "db.tailnet.knit");
	assert_string_equal(a->device, "db-91ac02");
	assert_true(a->has_disco_key);
	assert_int_equal(a->disco_key[0], 0xaa);
	assert_int_equal(a->nallowed_ips, 2);
	netmap_prefix_format(&a->allowed_ips[1], false, text, sizeof(text));
	assert_string_equal(text, "10.0.0.0/24");
	assert_int_equal(a->nendpoints, 2);
	endpoint_format(&a->endpoints[1], text, sizeof(text));
	assert_string_equal(text, "[2001:db8::7]:41641");
	assert_int_equal(a->relay, 1);
	assert_true(a->online);
	assert_int_equal(a->ntags, 1);
	assert_string_equal(a->tags[0], "tag:db");
	/* Optional members absent: defaults. */
	memset(key, 0xbb, sizeof(key));
	a = netmap_find_peer(&nm, key);
	assert_non_null(a);
	assert_null(a->fqdn);
	assert_false(a->has_disco_key);
	assert_int_equal(a->nendpoints + a->nallowed_ips + a->ntags + (size_t)a->relay + a->online, 0);
	memset(key, 0xcc, sizeof(key));
	assert_null(netmap_find_peer(&nm, key));

	/* to_json -> from_json is the identity. */
	j = netmap_to_json(&nm);
	assert_non_null(j);
	assert_true(netmap_from_json(j, &back, NULL, 0));
	assert_true(netmap_json_equal(&nm, &back));
	json_free(j);
	netmap_free(&back);
	netmap_free(&nm);
	netmap_free(&nm); /* idempotent */
}

static void test_full_malformed(void **state)
{
	static const struct {
		const char *in;
		const char *err;
	} cases[] = {
		{ "[]", "want a JSON object, got array" },
		{ "{}", "type: missing" },
		{ "{\"type\":\"delta\",\"seq\":1}", "type: want \"full\", got \"delta\"" },
		{ "{\"type\":\"full\"}", "seq: missing" },
		{ "{\"type\":\"full\",\"seq\":0,\"self\":" SELF "}", "seq: want an integer from 1" },
		{ "{\"type\":\"full\",\"seq\":1.5,\"self\":" SELF "}", "seq: want an integer" },
		{ "{\"type\":\"full\",\"seq\":\"1\",\"self\":" SELF "}", "seq: want an integer" },
		{ "{\"type\":\"full\",\"seq\":1}", "self: missing" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":[]}", "self: want an object, got array" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":{\"addresses\":[]}}", "self.nodeKey: missing" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":{\"nodeKey\":\"mkey:" H64("1") "\",\"addresses\":[]}}",
		  "self.nodeKey: want \"nodekey:\" and 64 hex digits" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":{\"nodeKey\":" NK("1") "}}", "self.addresses: missing" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":{}}", "peers: want an array, got object" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"dns\":[]}", "dns: want an object, got array" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"dns\":{\"suffix\":5}}", "dns.suffix: want a string without NUL, got number" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"packetFilter\":{}}", "packetFilter: want an array, got object" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"relayMap\":\"x\"}", "relayMap: want an object, got string" },
	};
	struct netmap nm;
	char err[200];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *j = parse(cases[i].in);

		err[0] = '\0';
		if (netmap_from_json(j, &nm, err, sizeof(err)))
			fail_msg("case %zu parsed: %s", i, cases[i].in);
		if (strncmp(err, cases[i].err, strlen(cases[i].err)) != 0)
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, cases[i].err);
		/* Left empty. */
		assert_null(nm.peers);
		assert_null(nm.self.name);
		netmap_free(&nm);
		json_free(j);
	}
}

/* One bad peer costs only itself: the rest of the netmap parses, and the
 * peer is counted with its reason. Each case has PEER_B after the bad one. */
static void test_full_skips(void **state)
{
	static const struct {
		const char *in;
		const char *why;
	} cases[] = {
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[" PEER_A ",7]}", "peers[1]: want an object, got number" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[\"100.64.0.1/40\"]}]}",
		  "peers[0].addresses[0]: \"100.64.0.1/40\" is not an IP address or prefix" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"allowedIPs\":[1]}]}",
		  "peers[0].allowedIPs[0]: want a string" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"endpoints\":[\"192.0.2.1\"]}]}",
		  "peers[0].endpoints[0]: \"192.0.2.1\": " },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"relay\":-1}]}",
		  "peers[0].relay: want an integer from 0 to 2147483647" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"online\":1}]}",
		  "peers[0].online: want true or false, got number" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"tags\":[\"db\"]}]}",
		  "peers[0].tags[0]: \"db\" is not a tag (tag:<name>" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"name\":\"a\\u0000b\"}]}",
		  "peers[0].name: want a string without NUL, got string" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"discoKey\":" NK("a") "}]}",
		  "peers[0].discoKey: want \"discokey:\" and 64 hex digits" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[" PEER_A "," PEER_A "]}",
		  "peers[1]: repeats the node key of an earlier peer" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[" SELF "]}", "peers[0]: has self's node key" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"allowedIPs\":[\"10.0.0.0/24x\"]}]}",
		  "peers[0].allowedIPs[0]: \"10.0.0.0/24x\" is not an IP prefix" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"allowedIPs\":[\"10.0.0.0/abc\"]}]}",
		  "peers[0].allowedIPs[0]: \"10.0.0.0/abc\" is not an IP prefix" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"allowedIPs\":[\"10.0.0.1\"]}]}",
		  "peers[0].allowedIPs[0]: \"10.0.0.1\" is not an IP prefix" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"discoKey\":\"\"}]}",
		  "peers[0].discoKey: want \"discokey:\" and 64 hex digits" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"endpoints\":\"1.2.3.4:5\"}]}",
		  "peers[0].endpoints: want an array, got string" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"relay\":4294967296}]}",
		  "peers[0].relay: want an integer from 0 to 2147483647" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"name\":\"Db Server\"}]}",
		  "peers[0].name: \"Db Server\" is not a DNS label" },
		{ "{\"type\":\"full\",\"seq\":1,\"self\":" SELF ",\"peers\":[{\"nodeKey\":" NK("a") ",\"addresses\":[],\"tags\":[\"tag:-x\"]}]}",
		  "peers[0].tags[0]: \"tag:-x\" is not a tag" },
	};
	struct netmap nm;
	char err[200];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* ...]} -> ...,PEER_B]} */
		size_t len = strlen(cases[i].in);
		char *text = malloc(len + sizeof(PEER_B) + 2);
		struct json *j;

		assert_non_null(text);
		snprintf(text, len + sizeof(PEER_B) + 2, "%.*s," PEER_B "]}", (int)(len - 2), cases[i].in);
		j = parse(text);
		err[0] = '\0';
		if (!netmap_from_json(j, &nm, err, sizeof(err)))
			fail_msg("case %zu refused (%s): %s", i, err, text);
		if (nm.skipped != 1 || strncmp(nm.skipped_why, cases[i].why, strlen(cases[i].why)) != 0)
			fail_msg("case %zu: skipped %zu \"%s\", want 1 \"%s\"", i, nm.skipped, nm.skipped_why,
				 cases[i].why);
		/* PEER_B and the good ones before the bad one are all there. */
		assert_non_null(netmap_find_peer(&nm, (const uint8_t *)"\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb"
								  "\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb\xbb"));
		assert_string_equal(nm.self.name, "me");
		netmap_free(&nm);
		json_free(j);
		free(text);
	}
}

static void apply(struct netmap *nm, const char *text, int want, const char *want_err)
{
	struct json *j = parse(text);
	struct netmap_delta d;
	char err[200] = "";

	if (!netmap_delta_from_json(j, &d, err, sizeof(err)))
		fail_msg("delta does not parse: %s", err);
	json_free(j);
	assert_int_equal(netmap_apply_delta(nm, &d, err, sizeof(err)), want);
	if (want_err)
		assert_string_equal(err, want_err);
	netmap_delta_free(&d);
}

static void test_delta(void **state)
{
	struct netmap nm, want;
	uint8_t ka[32], kb[32], kc[32];
	const struct netmap_node *p;

	memset(ka, 0xaa, 32);
	memset(kb, 0xbb, 32);
	memset(kc, 0xcc, 32);
	load_full(&nm, FULL);

	/* Upsert replaces a by key and adds c; remove b; nothing else moves. */
	apply(&nm, "{\"type\":\"delta\",\"seq\":2,\"upsert\":[{\"name\":\"db2\",\"nodeKey\":" NK("a")
		   ",\"addresses\":[\"100.64.0.7/32\"],\"online\":false},{\"name\":\"c\",\"nodeKey\":" NK("c")
		   ",\"addresses\":[\"100.64.0.9/32\"]}],\"remove\":[" NK("b") "]}", 0, NULL);
	assert_int_equal(nm.seq, 2);
	assert_int_equal(nm.npeers, 2);
	p = netmap_find_peer(&nm, ka);
	assert_non_null(p);
	assert_string_equal(p->name, "db2");
	assert_false(p->online);
	assert_int_equal(p->nendpoints, 0); /* an upsert is the whole peer */
	assert_null(netmap_find_peer(&nm, kb));
	assert_non_null(netmap_find_peer(&nm, kc));
	assert_string_equal(nm.self.name, "me");
	assert_string_equal(nm.dns_suffix, "tailnet.knit");
	assert_non_null(nm.packet_filter);

	/* Remove then upsert of the same key in one delta: it stays. Removing
	 * a key we do not have is fine. */
	apply(&nm, "{\"type\":\"delta\",\"seq\":3,\"upsert\":[" PEER_B "],\"remove\":[" NK("b") "," NK("d") "]}", 0, NULL);
	assert_int_equal(nm.npeers, 3);
	assert_non_null(netmap_find_peer(&nm, kb));

	/* self, dns, packetFilter, relayMap: present replaces, null clears,
	 * absent keeps. */
	apply(&nm, "{\"type\":\"delta\",\"seq\":4,\"self\":{\"name\":\"me2\",\"nodeKey\":" NK("1")
		   ",\"addresses\":[\"100.64.0.5/32\"]},\"dns\":{\"suffix\":\"new.knit\"},\"packetFilter\":null}", 0, NULL);
	assert_string_equal(nm.self.name, "me2");
	assert_string_equal(nm.dns_suffix, "new.knit");
	assert_null(nm.packet_filter);
	assert_non_null(nm.relay_map);
	apply(&nm, "{\"type\":\"delta\",\"seq\":5,\"dns\":null}", 0, NULL);
	assert_null(nm.dns);
	assert_null(nm.dns_suffix);

	/* Stale and repeated deltas change nothing. */
	load_full(&want, "{\"type\":\"full\",\"seq\":5,\"self\":{\"name\":\"me2\",\"nodeKey\":" NK("1")
			 ",\"addresses\":[\"100.64.0.5/32\"]},\"peers\":[]}");
	netmap_free(&want);
	apply(&nm, "{\"type\":\"delta\",\"seq\":5,\"remove\":[" NK("a") "]}", -ESTALE,
	      "delta seq 5 is not newer than the netmap's 5");
	apply(&nm, "{\"type\":\"delta\",\"seq\":2,\"remove\":[" NK("a") "]}", -ESTALE, NULL);
	assert_non_null(netmap_find_peer(&nm, ka));
	assert_int_equal(nm.seq, 5);
	netmap_free(&nm);
}

static void test_delta_malformed(void **state)
{
	static const struct {
		const char *in;
		const char *err;
	} cases[] = {
		{ "{\"type\":\"full\",\"seq\":2}", "type: want \"delta\", got \"full\"" },
		{ "{\"type\":\"delta\"}", "seq: missing" },
		{ "{\"type\":\"delta\",\"seq\":-3}", "seq: want an integer from 1" },
		{ "{\"type\":\"delta\",\"seq\":2,\"upsert\":{}}", "upsert: want an array, got object" },
		{ "{\"type\":\"delta\",\"seq\":2,\"remove\":\"" H64("a") "\"}", "remove: want an array, got string" },
		{ "{\"type\":\"delta\",\"seq\":2,\"self\":{\"nodeKey\":" NK("1") "}}", "self.addresses: missing" },
		{ "{\"type\":\"delta\",\"seq\":2,\"dns\":7}", "dns: want an object, got number" },
		{ "{\"type\":\"delta\",\"seq\":2,\"packetFilter\":\"all\"}", "packetFilter: want an array, got string" },
	};
	struct netmap_delta d;
	char err[200];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *j = parse(cases[i].in);

		err[0] = '\0';
		if (netmap_delta_from_json(j, &d, err, sizeof(err)))
			fail_msg("case %zu parsed: %s", i, cases[i].in);
		if (strncmp(err, cases[i].err, strlen(cases[i].err)) != 0)
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, cases[i].err);
		assert_null(d.upsert);
		assert_null(d.remove);
		netmap_delta_free(&d);
		json_free(j);
	}
}

/* A bad upsert or removal in a delta is skipped and counted; the rest
 * applies. */
static void test_delta_skips(void **state)
{
	static const struct {
		const char *in;
		size_t nupsert, nremove;
		const char *why;
	} cases[] = {
		{ "{\"type\":\"delta\",\"seq\":2,\"upsert\":[{\"nodeKey\":\"nodekey:12\",\"addresses\":[]}," PEER_B "]}", 1, 0,
		  "upsert[0].nodeKey: want \"nodekey:\" and 64 hex digits" },
		{ "{\"type\":\"delta\",\"seq\":2,\"upsert\":[" PEER_A "," PEER_A "]}", 1, 0,
		  "upsert[1]: repeats the node key of an earlier peer" },
		{ "{\"type\":\"delta\",\"seq\":2,\"remove\":[" NK("a") ",\"" H64("a") "\"]}", 0, 1,
		  "remove[1]: want \"nodekey:\" and 64 hex digits" },
	};
	struct netmap nm;
	struct netmap_delta d;
	char err[200];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *j = parse(cases[i].in);

		err[0] = '\0';
		if (!netmap_delta_from_json(j, &d, err, sizeof(err)))
			fail_msg("case %zu refused: %s", i, err);
		assert_int_equal(d.nupsert, cases[i].nupsert);
		assert_int_equal(d.nremove, cases[i].nremove);
		assert_int_equal(d.skipped, 1);
		assert_string_equal(d.skipped_why, cases[i].why);
		load_full(&nm, FULL);
		assert_int_equal(netmap_apply_delta(&nm, &d, err, sizeof(err)), 0);
		assert_int_equal(nm.skipped, 1);
		assert_string_equal(nm.skipped_why, cases[i].why);
		netmap_free(&nm);
		netmap_delta_free(&d);
		json_free(j);
	}
	/* An upsert of self's key is no peer. */
	load_full(&nm, FULL);
	{
		struct json *j = parse("{\"type\":\"delta\",\"seq\":3,\"upsert\":[" SELF "]}");

		assert_true(netmap_delta_from_json(j, &d, err, sizeof(err)));
		assert_int_equal(netmap_apply_delta(&nm, &d, err, sizeof(err)), 0);
		assert_int_equal(nm.npeers, 2);
		assert_int_equal(nm.skipped, 1);
		assert_string_equal(nm.skipped_why, "upsert: has self's node key");
		json_free(j);
	}
	netmap_free(&nm);
}

/* Equal up to the order of peers, which carries no meaning. */
static bool same_netmap(const struct netmap *a, const struct netmap *b)
{
	if (a->seq != b->seq || a->npeers != b->npeers || !netmap_node_equal(&a->self, &b->self) ||
	    !json_equal(a->dns, b->dns) || !json_equal(a->packet_filter, b->packet_filter) ||
	    !json_equal(a->relay_map, b->relay_map))
		return false;
	for (size_t k = 0; k < b->npeers; k++) {
		const struct netmap_node *x = netmap_find_peer(a, b->peers[k].node_key);

		if (!x || !netmap_node_equal(x, &b->peers[k]))
			return false;
	}
	return true;
}

/* diff(from, to) applied to from gives to, through JSON as on the wire. */
static void test_diff(void **state)
{
	static const char *const to_text[] = {
		"{\"type\":\"full\",\"seq\":2,\"self\":" SELF ",\"peers\":[" PEER_A "," PEER_B "],"
		"\"dns\":{\"suffix\":\"tailnet.knit\",\"nameservers\":[]},\"relayMap\":{\"1\":{\"host\":\"relay\"}},"
		"\"packetFilter\":[{\"src\":[\"*\"]}]}", /* same: empty delta */
		"{\"type\":\"full\",\"seq\":3,\"self\":" SELF ",\"peers\":[" PEER_B "]}",
		"{\"type\":\"full\",\"seq\":4,\"self\":" PEER_B ",\"peers\":[" SELF "," PEER_A "],\"dns\":{\"suffix\":\"x\"}}",
		"{\"type\":\"full\",\"seq\":5,\"self\":" SELF ",\"peers\":[{\"name\":\"db\",\"nodeKey\":" NK("a")
		",\"addresses\":[\"100.64.0.7/32\"],\"endpoints\":[\"192.0.2.99:1\"]}]}",
	};

	for (size_t i = 0; i < sizeof(to_text) / sizeof(to_text[0]); i++) {
		struct netmap from, to;
		struct netmap_delta d, d2;
		struct json *j;

		load_full(&from, FULL);
		load_full(&to, to_text[i]);
		assert_int_equal(netmap_diff(&from, &to, &d), 0);
		if (i == 0)
			assert_true(d.nupsert == 0 && d.nremove == 0 && d.has == 0);
		j = netmap_delta_to_json(&d);
		assert_non_null(j);
		assert_true(netmap_delta_from_json(j, &d2, NULL, 0));
		json_free(j);
		assert_int_equal(netmap_apply_delta(&from, &d2, NULL, 0), 0);
		assert_true(same_netmap(&from, &to));
		netmap_delta_free(&d);
		netmap_delta_free(&d2);
		netmap_free(&from);
		netmap_free(&to);
	}
}

static void test_register(void **state)
{
	struct register_request r = { 0 }, back;
	struct register_response resp;
	struct json *j;
	char *tags[] = { "tag:ci", "tag:web" };
	char err[200] = "";
	const char *code, *msg;

	r.auth_key = strdup("knit-auth-secret");
	r.hostname = strdup("laptop");
	assert_non_null(r.auth_key);
	assert_non_null(r.hostname);
	memset(r.node_key, 0x11, 32);
	memset(r.disco_key, 0x22, 32);
	r.tags = tags;
	r.ntags = 2;
	r.routes = calloc(1, sizeof(*r.routes));
	assert_non_null(r.routes);
	assert_true(netmap_prefix_parse(&r.routes[0], "10.0.0.0/24"));
	r.nroutes = 1;
	j = register_request_to_json(&r);
	assert_non_null(j);
	assert_string_equal(messages_type(j), "register");
	assert_true(register_request_from_json(j, &back, err, sizeof(err)));
	assert_string_equal(back.auth_key, "knit-auth-secret");
	assert_string_equal(back.hostname, "laptop");
	assert_memory_equal(back.node_key, r.node_key, 32);
	assert_memory_equal(back.disco_key, r.disco_key, 32);
	assert_int_equal(back.ntags, 2);
	assert_string_equal(back.tags[1], "tag:web");
	assert_int_equal(back.nroutes, 1);
	assert_true(netmap_prefix_equal(&back.routes[0], &r.routes[0]));
	register_request_free(&back);
	messages_json_free_secret(j);
	r.tags = NULL;
	r.ntags = 0;
	register_request_free(&r);
	assert_null(r.auth_key);

	/* Coming back without an auth key; malformed ones. */
	j = parse("{\"type\":\"register\",\"nodeKey\":" NK("1") ",\"discoKey\":" DK("2") "}");
	assert_true(register_request_from_json(j, &back, err, sizeof(err)));
	assert_null(back.auth_key);
	register_request_free(&back);
	json_free(j);
	j = parse("{\"type\":\"register\",\"nodeKey\":" NK("1") ",\"discoKey\":" DK("2") ",\"advertiseRoutes\":[\"10.0.0.0/99\"]}");
	assert_false(register_request_from_json(j, &back, err, sizeof(err)));
	assert_string_equal(err, "advertiseRoutes[0]: \"10.0.0.0/99\" is not an IP prefix (address/bits)");
	json_free(j);
	j = parse("{\"type\":\"register\",\"nodeKey\":" NK("1") "}");
	assert_false(register_request_from_json(j, &back, err, sizeof(err)));
	assert_string_equal(err, "discoKey: missing");
	json_free(j);

	/* podToken: a compact JWS, capped; round-trips and is wiped on free. */
	{
		static const char *const bad[] = { "\"\"", "\"a.b\"", "\"a..c\"", "\"a.b.\"", "\".b.c\"",
						   "\"a.b.c.d\"", "\"a.b=.c\"", "\"a b.c.d\"", "7", "[]" };
		char *big = malloc(MESSAGES_POD_TOKEN_MAX + 64);
		char buf[MESSAGES_POD_TOKEN_MAX + 400];

		memset(&r, 0, sizeof(r));
		r.pod_token = strdup("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_");
		assert_non_null(r.pod_token);
		j = register_request_to_json(&r);
		assert_non_null(j);
		assert_true(register_request_from_json(j, &back, err, sizeof(err)));
		assert_string_equal(back.pod_token, r.pod_token);
		register_request_free(&back);
		assert_null(back.pod_token);
		messages_json_free_secret(j);
		register_request_free(&r);
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			snprintf(buf, sizeof(buf), "{\"type\":\"register\",\"nodeKey\":" NK("1") ",\"discoKey\":" DK("2")
				 ",\"podToken\":%s}", bad[i]);
			j = parse(buf);
			assert_false(register_request_from_json(j, &back, err, sizeof(err)));
			assert_non_null(strstr(err, "podToken"));
			json_free(j);
		}
		assert_non_null(big);
		memset(big, 'a', MESSAGES_POD_TOKEN_MAX + 1);
		big[1] = '.';
		big[3] = '.';
		big[MESSAGES_POD_TOKEN_MAX + 1] = '\0';
		snprintf(buf, sizeof(buf), "{\"type\":\"register\",\"nodeKey\":" NK("1") ",\"discoKey\":" DK("2")
			 ",\"podToken\":\"%s\"}", big);
		j = parse(buf);
		assert_false(register_request_from_json(j, &back, err, sizeof(err)));
		assert_string_equal(err, "podToken: longer than 8192");
		json_free(j);
		free(big);
	}

	/* Response. */
	j = parse("{\"device\":\"laptop-3f9a2c\",\"name\":\"laptop\",\"addresses\":[\"100.64.0.5\",\"fd7a:115c:a1e0::5\"],"
		  "\"ephemeral\":false,\"dnsSuffix\":\"tailnet.knit\"}");
	assert_true(register_response_from_json(j, &resp, err, sizeof(err)));
	assert_string_equal(resp.device, "laptop-3f9a2c");
	assert_int_equal(resp.naddresses, 2);
	assert_int_equal(resp.addresses[1].family, AF_INET6);
	assert_string_equal(resp.dns_suffix, "tailnet.knit");
	json_free(j);
	j = register_response_to_json(&resp);
	assert_non_null(j);
	assert_string_equal(json_str(json_array_at(json_get(j, "addresses"), 0)), "100.64.0.5");
	register_response_free(&resp);
	json_free(j);
	j = parse("{\"device\":\"d\",\"name\":\"n\",\"addresses\":[]}");
	assert_false(register_response_from_json(j, &resp, err, sizeof(err)));
	assert_string_equal(err, "addresses: empty");
	json_free(j);
	j = parse("{\"name\":\"n\",\"addresses\":[\"100.64.0.5\"]}");
	assert_false(register_response_from_json(j, &resp, err, sizeof(err)));
	assert_string_equal(err, "device: missing");
	json_free(j);

	/* Application errors. */
	j = messages_error_new("AuthKeyExpired", "auth key expired");
	assert_non_null(j);
	assert_true(messages_error(j, &code, &msg));
	assert_string_equal(code, "AuthKeyExpired");
	assert_string_equal(msg, "auth key expired");
	json_free(j);
	j = parse("{\"device\":\"d\"}");
	assert_false(messages_error(j, &code, &msg));
	json_free(j);
}

/* Key renewal: the request carries the old node key and a proof both ends
 * compute from one X25519 (old node key x control key); an auth key with
 * it, or the key without a proof, is refused. */
static void test_renew(void **state)
{
	uint8_t ctrl_priv[32], ctrl_pub[32], old_priv[32], mpub[32], new_pub[32], other[32], agent[32], server[32];
	struct register_request r = { 0 }, back;
	struct register_response resp = { 0 }, rback;
	struct netmap_node n = { 0 }, nback;
	struct json *j;
	char err[200] = "";

	crypto_box_keypair(ctrl_pub, ctrl_priv);
	crypto_box_keypair(r.old_node_key, old_priv);
	randombytes_buf(mpub, sizeof(mpub));
	randombytes_buf(new_pub, sizeof(new_pub));
	assert_true(messages_renew_proof(old_priv, ctrl_pub, mpub, new_pub, agent));
	assert_true(messages_renew_proof(ctrl_priv, r.old_node_key, mpub, new_pub, server));
	assert_memory_equal(agent, server, 32);
	memcpy(other, new_pub, 32);
	other[0] ^= 1; /* another new key, or another machine: another proof */
	assert_true(messages_renew_proof(ctrl_priv, r.old_node_key, mpub, other, server));
	assert_memory_not_equal(agent, server, 32);
	assert_true(messages_renew_proof(ctrl_priv, r.old_node_key, other, new_pub, server));
	assert_memory_not_equal(agent, server, 32);
	memset(other, 0, 32); /* a low-order point */
	assert_false(messages_renew_proof(ctrl_priv, other, mpub, new_pub, server));

	memcpy(r.node_key, new_pub, 32);
	memset(r.disco_key, 0x22, 32);
	r.has_old_node_key = true;
	memcpy(r.renew_proof, agent, 32);
	j = register_request_to_json(&r);
	assert_non_null(j);
	assert_null(json_get(j, "authKey"));
	assert_true(register_request_from_json(j, &back, err, sizeof(err)));
	assert_true(back.has_old_node_key);
	assert_memory_equal(back.old_node_key, r.old_node_key, 32);
	assert_memory_equal(back.renew_proof, agent, 32);
	register_request_free(&back);
	json_object_set(j, "authKey", json_new_string("knit-auth-x-y"));
	assert_false(register_request_from_json(j, &back, err, sizeof(err)));
	assert_string_equal(err, "oldNodeKey: a renewal carries no authKey");
	json_object_del(j, "authKey");
	json_object_del(j, "renewProof");
	assert_false(register_request_from_json(j, &back, err, sizeof(err)));
	assert_string_equal(err, "renewProof: missing");
	json_object_set(j, "renewProof", json_new_string("proof:12"));
	assert_false(register_request_from_json(j, &back, err, sizeof(err)));
	assert_string_equal(err, "renewProof: want \"proof:\" and 64 hex digits");
	messages_json_free_secret(j);
	/* A plain register has neither. */
	r.has_old_node_key = false;
	j = register_request_to_json(&r);
	assert_null(json_get(j, "oldNodeKey"));
	assert_null(json_get(j, "renewProof"));
	assert_true(register_request_from_json(j, &back, err, sizeof(err)));
	assert_false(back.has_old_node_key);
	register_request_free(&back);
	messages_json_free_secret(j);

	/* The expiry, in the answer and on a netmap node. */
	j = parse("{\"device\":\"d\",\"name\":\"n\",\"addresses\":[\"100.64.0.5\"],\"keyExpiry\":1796000000}");
	assert_true(register_response_from_json(j, &resp, err, sizeof(err)));
	assert_int_equal(resp.key_expiry, 1796000000);
	json_free(j);
	j = register_response_to_json(&resp);
	assert_true(register_response_from_json(j, &rback, err, sizeof(err)));
	assert_int_equal(rback.key_expiry, 1796000000);
	register_response_free(&rback);
	register_response_free(&resp);
	json_free(j);
	j = parse("{\"device\":\"d\",\"name\":\"n\",\"addresses\":[\"100.64.0.5\"],\"keyExpiry\":-1}");
	assert_false(register_response_from_json(j, &resp, err, sizeof(err)));
	json_free(j);
	j = parse("{\"name\":\"db\",\"nodeKey\":" NK("a") ",\"addresses\":[\"100.64.0.7/32\"],\"keyExpiry\":1796000000}");
	assert_true(netmap_node_from_json(j, "", &n, err, sizeof(err)));
	assert_int_equal(n.key_expiry, 1796000000);
	json_free(j);
	j = netmap_node_to_json(&n);
	assert_true(netmap_node_from_json(j, "", &nback, err, sizeof(err)));
	assert_true(netmap_node_equal(&n, &nback));
	nback.key_expiry++;
	assert_false(netmap_node_equal(&n, &nback));
	netmap_node_free(&nback);
	netmap_node_free(&n);
	json_free(j);
}

static void test_update(void **state)
{
	struct update_request u = { 0 }, back;
	struct json *j;
	const char *why;
	bool is_map;
	char err[200];

	u.endpoints = calloc(2, sizeof(*u.endpoints));
	assert_non_null(u.endpoints);
	assert_true(endpoint_parse(&u.endpoints[0], "192.0.2.1:41641", &why));
	assert_true(endpoint_parse(&u.endpoints[1], "[2001:db8::1]:41641", &why));
	u.nendpoints = 2;
	u.relay = 3;
	u.has_relay = true;
	j = update_request_to_json(&u);
	assert_true(update_request_from_json(j, &back, &is_map, err, sizeof(err)));
	assert_false(is_map);
	assert_int_equal(back.nendpoints, 2);
	assert_true(endpoint_equal(&back.endpoints[1], &u.endpoints[1]));
	assert_true(back.has_relay);
	assert_int_equal(back.relay, 3);
	update_request_free(&back);
	json_free(j);
	u.has_relay = false;
	j = map_request_to_json(&u);
	assert_string_equal(messages_type(j), "map");
	assert_null(json_get(j, "relay"));
	assert_true(update_request_from_json(j, &back, &is_map, err, sizeof(err)));
	assert_true(is_map);
	update_request_free(&back);
	json_free(j);
	update_request_free(&u);
	j = parse("{\"type\":\"logout\"}");
	assert_false(update_request_from_json(j, &back, &is_map, err, sizeof(err)));
	assert_string_equal(err, "type: want \"update\" or \"map\"");
	json_free(j);
}

/* control/fields.c: the one set of rules both ends apply. */
static void test_fields(void **state)
{
	static const struct {
		const char *s;
		bool tag, host;
	} names[] = {
		{ "tag:db", true, false },
		{ "tag:DB-1", true, false },
		{ "tag:a", true, false },
		{ "tag:" "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", true, false },
		{ "tag:" "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl", false, false },
		{ "tag:", false, false },
		{ "tag:-db", false, false },
		{ "tag:db-", false, false },
		{ "tag:a b", false, false },
		{ "tag:a_b", false, false },
		{ "db", false, true },
		{ "db-1", false, true },
		{ "0", false, true },
		{ "Db", false, false },
		{ "-db", false, false },
		{ "db.x", false, false },
		{ "", false, false },
		{ "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", false, true },
		{ "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl", false, false },
	};
	static const struct {
		const char *in, *out;
	} sanitized[] = {
		{ "My Laptop.local", "my-laptop-local" },
		{ "--x--", "x" },
		{ "", "device" },
		{ "!!!", "device" },
		{ "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyzabcdefghijklmn" },
	};
	static const struct {
		const char *s;
		bool ok;
	} cidrs[] = {
		{ "10.0.0.0/24", true }, { "fd00::/64", true }, { "10.0.0.1", false }, { "10.0.0.0/24x", false },
		{ "::ffff:10.0.0.0/120", false }, { "::ffff:a00:0/120", false },
		{ "10.0.0.0/abc", false }, { "10.0.0.0/", false }, { "/24", false }, { NULL, false },
	};
	struct netmap_prefix p;
	char out[64], text[8192];
	struct json *j;
	struct endpoint *eps;
	size_t n, len;
	char err[200];

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (fields_tag_valid(names[i].s) != names[i].tag || fields_hostname_valid(names[i].s) != names[i].host)
			fail_msg("\"%s\": tag %d host %d", names[i].s, fields_tag_valid(names[i].s),
				 fields_hostname_valid(names[i].s));
	}
	assert_false(fields_tag_valid(NULL));
	assert_false(fields_hostname_valid(NULL));
	for (size_t i = 0; i < sizeof(sanitized) / sizeof(sanitized[0]); i++) {
		fields_hostname_sanitize(sanitized[i].in, out, sizeof(out));
		assert_string_equal(out, sanitized[i].out);
		assert_true(fields_hostname_valid(out));
	}
	for (size_t i = 0; i < sizeof(cidrs) / sizeof(cidrs[0]); i++)
		if (fields_cidr_parse(&p, cidrs[i].s) != cidrs[i].ok)
			fail_msg("cidr \"%s\": want %d", cidrs[i].s, cidrs[i].ok);
	/* At most FIELDS_MAX_ENDPOINTS endpoints. */
	for (int k = FIELDS_MAX_ENDPOINTS; k <= FIELDS_MAX_ENDPOINTS + 1; k++) {
		len = (size_t)snprintf(text, sizeof(text), "{\"endpoints\":[");
		for (int i = 0; i < k; i++)
			len += (size_t)snprintf(text + len, sizeof(text) - len, "%s\"192.0.2.1:%d\"", i ? "," : "", i + 1);
		snprintf(text + len, sizeof(text) - len, "]}");
		j = parse(text);
		if (k == FIELDS_MAX_ENDPOINTS) {
			assert_true(fields_get_endpoints(j, "", &eps, &n, err, sizeof(err)));
			assert_int_equal(n, FIELDS_MAX_ENDPOINTS);
			free(eps);
		} else {
			assert_false(fields_get_endpoints(j, "", &eps, &n, err, sizeof(err)));
			assert_string_equal(err, "endpoints: more than 64");
			assert_null(eps);
		}
		json_free(j);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_full_roundtrip),
		cmocka_unit_test(test_full_malformed),
		cmocka_unit_test(test_full_skips),
		cmocka_unit_test(test_delta),
		cmocka_unit_test(test_delta_malformed),
		cmocka_unit_test(test_delta_skips),
		cmocka_unit_test(test_diff),
		cmocka_unit_test(test_register),
		cmocka_unit_test(test_renew),
		cmocka_unit_test(test_update),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
