#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bootstrap.h"
#include "buf.h"
#include "json.h"

static void test_check_good(void **state)
{
	static const struct bootstrap_opts good[] = {
		{ 0 },
		{ .ipv4_pool = "10.20.0.0/16", .ipv6_pool = "fd00:1::/64", .dns_suffix = "corp.example" },
		{ .authkey = "nodes", .authkey_tags = "tag:node", .authkey_expiry = "8760h" },
		{ .authkey = "n.1-x", .authkey_tags = "tag:a,tag:B-2,tag:k8s" },
		{ .authkey = "nodes", .authkey_tags = "" },
	};
	char err[320];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		err[0] = '\0';
		assert_true(bootstrap_opts_check(&good[i], err, sizeof(err)));
		assert_string_equal(err, "");
	}
}

static void test_check_bad(void **state)
{
	static const struct {
		struct bootstrap_opts o;
		const char *want;
	} bad[] = {
		{ { .ipv4_pool = "fd00::/64" }, "--default-tailnet-ipv4-pool: \"fd00::/64\" is not an IPv4 CIDR" },
		{ { .ipv6_pool = "10.0.0.0/8" }, "--default-tailnet-ipv6-pool: \"10.0.0.0/8\" is not an IPv6 CIDR" },
		{ { .ipv4_pool = "10.0.0.1/8" }, "--default-tailnet-ipv4-pool: \"10.0.0.1/8\": host bits set" },
		{ { .ipv4_pool = "nonsense" }, "--default-tailnet-ipv4-pool: " },
		{ { .dns_suffix = "Corp.example" }, "--default-tailnet-dns-suffix" },
		{ { .dns_suffix = "corp..example" }, "--default-tailnet-dns-suffix" },
		{ { .dns_suffix = "-corp" }, "--default-tailnet-dns-suffix" },
		{ { .dns_suffix = "" }, "--default-tailnet-dns-suffix" },
		{ { .authkey = "Nodes" }, "--bootstrap-authkey: \"Nodes\"" },
		{ { .authkey = "nodes_1" }, "--bootstrap-authkey" },
		{ { .authkey = "nodes", .authkey_tags = "node" }, "--bootstrap-authkey-tags: \"node\" is not tag:name" },
		{ { .authkey = "nodes", .authkey_tags = "tag:" }, "--bootstrap-authkey-tags: \"tag:\"" },
		{ { .authkey = "nodes", .authkey_tags = "tag:a,,tag:b" }, "--bootstrap-authkey-tags: \"\"" },
		{ { .authkey = "nodes", .authkey_tags = "tag:a," }, NULL }, /* a trailing comma is tolerated */
		{ { .authkey = "nodes", .authkey_tags = "tag:-a" }, "--bootstrap-authkey-tags: \"tag:-a\"" },
		{ { .authkey = "nodes", .authkey_tags = "tag:a b" }, "--bootstrap-authkey-tags: \"tag:a b\"" },
		{ { .authkey = "nodes", .authkey_tags = "tag:a,tag:b,tag:a" }, "\"tag:a\" is listed twice" },
		{ { .authkey = "nodes", .authkey_expiry = "1y" }, "--bootstrap-authkey-expiry: \"1y\"" },
	};
	char err[320];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (!bad[i].want) {
			assert_true(bootstrap_opts_check(&bad[i].o, err, sizeof(err)));
			continue;
		}
		assert_false(bootstrap_opts_check(&bad[i].o, err, sizeof(err)));
		if (!strstr(err, bad[i].want))
			fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, bad[i].want);
	}
}

static void test_check_limits(void **state)
{
	struct bootstrap_opts o = { .authkey = "nodes" };
	char tags[64 * 40], name[300], err[320];
	size_t n = 0;

	/* 32 tags is the CRD's maxItems; 33 is refused. */
	for (int i = 0; i < 33; i++)
		n += (size_t)snprintf(tags + n, sizeof(tags) - n, "%stag:t%d", i ? "," : "", i);
	o.authkey_tags = tags;
	assert_false(bootstrap_opts_check(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "more than 32 tags"));
	*strrchr(tags, ',') = '\0';
	assert_true(bootstrap_opts_check(&o, err, sizeof(err)));

	/* A 63-byte tag name is the longest; the name's Secret must fit 253. */
	snprintf(tags, sizeof(tags), "tag:%.63s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_true(bootstrap_opts_check(&o, err, sizeof(err)));
	snprintf(tags, sizeof(tags), "tag:%.64s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_false(bootstrap_opts_check(&o, err, sizeof(err)));
	o.authkey_tags = NULL;
	memset(name, 'a', sizeof(name));
	for (size_t i = 63; i < 245; i += 64)
		name[i] = '.';
	name[245] = '\0';
	o.authkey = name;
	assert_true(bootstrap_opts_check(&o, err, sizeof(err)));
	name[245] = 'a';
	name[246] = '\0';
	assert_false(bootstrap_opts_check(&o, err, sizeof(err)));
}

static char *dump(const struct json *j)
{
	struct buf b = BUF_INIT(1 << 16);
	char *s;

	assert_int_equal(json_dump(j, &b, 0), 0);
	s = strndup((const char *)b.data, b.len);
	buf_free(&b);
	assert_non_null(s);
	return s;
}

static void test_objects(void **state)
{
	struct bootstrap_opts o = { .ipv4_pool = "10.20.0.0/16", .dns_suffix = "corp.example", .authkey = "nodes",
				    .authkey_tags = "tag:node,tag:k8s", .authkey_expiry = "8760h" };
	struct json *tn = bootstrap_tailnet(&o), *ak = bootstrap_authkey(&o, "knit-system");
	char *s;

	assert_non_null(tn);
	assert_non_null(ak);
	assert_string_equal(json_str(json_get(tn, "apiVersion")), "knit.dev/v1alpha1");
	assert_string_equal(json_str(json_get(tn, "kind")), "Tailnet");
	assert_string_equal(json_str(json_path(tn, "metadata", "name", NULL)), "default");
	assert_null(json_path(tn, "metadata", "namespace", NULL));
	s = dump(json_get(tn, "spec"));
	assert_string_equal(s, "{\"ipv4Pool\":\"10.20.0.0/16\",\"dnsSuffix\":\"corp.example\"}");
	free(s);

	assert_string_equal(json_str(json_get(ak, "kind")), "AuthKey");
	assert_string_equal(json_str(json_path(ak, "metadata", "name", NULL)), "nodes");
	assert_string_equal(json_str(json_path(ak, "metadata", "namespace", NULL)), "knit-system");
	assert_string_equal(json_str(json_path(ak, "metadata", "labels", "app.kubernetes.io/managed-by", NULL)),
			    "knit-operator");
	s = dump(json_get(ak, "spec"));
	assert_string_equal(s, "{\"reusable\":true,\"preauthorized\":true,\"expiry\":\"8760h\","
			       "\"tags\":[\"tag:node\",\"tag:k8s\"]}");
	free(s);
	json_free(tn);
	json_free(ak);

	/* Nothing given: empty Tailnet spec (the CRD defaults it); the key
	 * never expires (no dated outage); no tags key. */
	o = (struct bootstrap_opts){ .authkey = "nodes" };
	tn = bootstrap_tailnet(&o);
	ak = bootstrap_authkey(&o, "ns");
	s = dump(json_get(tn, "spec"));
	assert_string_equal(s, "{}");
	free(s);
	s = dump(json_get(ak, "spec"));
	assert_string_equal(s, "{\"reusable\":true,\"preauthorized\":true,\"expiry\":\"0s\"}");
	free(s);
	json_free(tn);
	json_free(ak);
}

static void test_relays(void **state)
{
	static const char *const bad[] = {
		"ftp://relay.example",	   "https://",		  "relay.example:0",	 "relay.example:65536",
		"relay.example:80x",	   "https://[fd00::1",	  "https://a/b",	 "bad_host.example",
		"https://-relay.example", "http://relay.example:", "",
	};
	struct bootstrap_opts o = { .relays = { "relay-a.example", "http://10.0.0.7:8080", "https://[fd00::7]/" },
				    .nrelays = 3 };
	struct relaymap m;
	struct json *tn;
	char err[320], *s;

	assert_true(bootstrap_opts_check(&o, err, sizeof(err)));
	tn = bootstrap_tailnet(&o);
	assert_non_null(tn);
	s = dump(json_path(tn, "spec", "relayMap", NULL));
	assert_string_equal(s, "{\"regions\":[{\"id\":1,\"code\":\"default\",\"name\":\"Default\",\"nodes\":["
			       "{\"name\":\"1a\",\"hostName\":\"relay-a.example\",\"relayPort\":443,\"stunPort\":3478,\"tls\":true},"
			       "{\"name\":\"1b\",\"hostName\":\"10.0.0.7\",\"relayPort\":8080,\"stunPort\":3478,\"tls\":false},"
			       "{\"name\":\"1c\",\"hostName\":\"fd00::7\",\"relayPort\":443,\"stunPort\":3478,\"tls\":true}]}]}");
	free(s);
	/* What agents parse it into. */
	assert_true(relaymap_parse(json_path(tn, "spec", "relayMap", NULL), &m, err, sizeof(err)));
	assert_int_equal(m.nregions, 1);
	assert_int_equal(m.regions[0].nnodes, 3);
	assert_false(m.regions[0].nodes[1].tls);
	assert_int_equal(m.regions[0].nodes[1].relay_port, 8080);
	relaymap_free(&m);
	json_free(tn);

	o.relay_stun_port = "0";
	tn = bootstrap_tailnet(&o);
	{
		const struct json *region = json_array_at(json_path(tn, "spec", "relayMap", "regions", NULL), 0);
		const struct json *node = json_array_at(json_get(region, "nodes"), 2);

		assert_int_equal(json_int(json_get(node, "stunPort"), -1), 0);
	}
	json_free(tn);
	o.relay_stun_port = "3479x";
	assert_false(bootstrap_opts_check(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "--default-tailnet-relay-stun-port"));
	o = (struct bootstrap_opts){ .relay_stun_port = "3478" };
	assert_false(bootstrap_opts_check(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "needs --default-tailnet-relay"));

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o = (struct bootstrap_opts){ .relays = { bad[i] }, .nrelays = 1 };
		assert_false(bootstrap_opts_check(&o, err, sizeof(err)));
		assert_non_null(strstr(err, "--default-tailnet-relay"));
	}
	/* No relay: no relayMap key at all (the CRD leaves it unset). */
	o = (struct bootstrap_opts){ 0 };
	tn = bootstrap_tailnet(&o);
	assert_null(json_path(tn, "spec", "relayMap", NULL));
	json_free(tn);
}

/* Relay keys: one given on the URL, the embedded relay's for its own
 * address, none elsewhere; a malformed key refuses the flag. */
#define HEX1 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX2 "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
static void test_relay_keys(void **state)
{
	static const char *const bad[] = {
		"http://10.0.0.7:8080#",
		"http://10.0.0.7:8080#relaykey:0123",
		"http://10.0.0.7:8080#nodekey:" HEX1,
		"http://10.0.0.7:8080#relaykey:" HEX1 "ff",
		"http://10.0.0.7:8080#relaykey:" HEX1 "#relaykey:" HEX1,
	};
	struct bootstrap_opts o = { .relays = { "http://10.0.0.7:8080#relaykey:" HEX1, "http://10.0.0.8:8443",
						"http://10.0.0.9:8443", "https://[fd00::8]:8443" },
				    .nrelays = 4, .self_listen = "10.0.0.8:8443", .self_key = "relaykey:" HEX2 };
	char err[320];
	struct relaymap m;
	struct json *tn;

	assert_true(bootstrap_opts_check(&o, err, sizeof(err)));
	tn = bootstrap_tailnet(&o);
	assert_non_null(tn);
	assert_true(relaymap_parse(json_path(tn, "spec", "relayMap", NULL), &m, err, sizeof(err)));
	assert_int_equal(m.regions[0].nnodes, 4);
	assert_true(m.regions[0].nodes[0].has_key);
	assert_int_equal(m.regions[0].nodes[0].key[0], 0x01);
	assert_string_equal(m.regions[0].nodes[0].host, "10.0.0.7");
	assert_int_equal(m.regions[0].nodes[0].relay_port, 8080);
	assert_true(m.regions[0].nodes[1].has_key); /* the embedded relay */
	assert_int_equal(m.regions[0].nodes[1].key[0], 0xfe);
	assert_false(m.regions[0].nodes[2].has_key);
	assert_false(m.regions[0].nodes[3].has_key);
	relaymap_free(&m);
	json_free(tn);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o = (struct bootstrap_opts){ .relays = { bad[i] }, .nrelays = 1 };
		if (bootstrap_opts_check(&o, err, sizeof(err)))
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(strstr(err, "--default-tailnet-relay"));
	}
}

static void test_mesh_secret(void **state)
{
	struct bootstrap_opts o = { .relay_mesh_secret = "knit-relay-mesh" };
	struct json *a = bootstrap_mesh_secret(&o, "knit-system"), *b = bootstrap_mesh_secret(&o, "knit-system");
	const char *ka, *kb;
	char err[320];

	assert_true(bootstrap_opts_check(&o, err, sizeof(err)));
	assert_non_null(a);
	assert_non_null(b);
	assert_string_equal(json_str(json_get(a, "apiVersion")), "v1");
	assert_string_equal(json_str(json_get(a, "kind")), "Secret");
	assert_string_equal(json_str(json_path(a, "metadata", "name", NULL)), "knit-relay-mesh");
	assert_string_equal(json_str(json_path(a, "metadata", "namespace", NULL)), "knit-system");
	assert_null(json_get(a, "spec"));
	ka = json_str(json_path(a, "data", "mesh-key", NULL));
	kb = json_str(json_path(b, "data", "mesh-key", NULL));
	assert_non_null(ka);
	assert_int_equal(strlen(ka), 44); /* 32 bytes, base64 */
	assert_string_not_equal(ka, kb);
	json_free(a);
	json_free(b);
	o.relay_mesh_secret = "Not_A_Name";
	assert_false(bootstrap_opts_check(&o, err, sizeof(err)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_good),
		cmocka_unit_test(test_check_bad),
		cmocka_unit_test(test_check_limits),
		cmocka_unit_test(test_objects),
		cmocka_unit_test(test_relays),
		cmocka_unit_test(test_relay_keys),
		cmocka_unit_test(test_mesh_secret),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
