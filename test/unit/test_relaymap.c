/* The relay map reader: a full map with defaults filled in, the empty
 * forms, and each refusal with the path it names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "control/relaymap.h"

static bool parse(const char *text, struct relaymap *m, char *err, size_t errlen)
{
	struct json_error jerr;
	struct json *j = json_parse(text, strlen(text), &jerr);
	bool ok;

	assert_non_null(j);
	ok = relaymap_parse(j, m, err, errlen);
	json_free(j);
	return ok;
}

static void test_full(void **state)
{
	(void)state;
	struct relaymap m;
	char err[256] = "";

	assert_true(parse("{\"regions\":[{\"id\":7,\"code\":\"home\",\"name\":\"Home\",\"nodes\":["
			  "{\"name\":\"7a\",\"hostName\":\"relay-a.knit-system.svc\",\"ipv4\":\"10.0.0.1\","
			  "\"relayPort\":8443,\"stunPort\":0,\"tls\":false,"
			  "\"publicKey\":\"relaykey:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"},"
			  "{\"name\":\"7b\",\"hostName\":\"2001:db8::1\",\"ipv6\":\"2001:db8::1\"}]},"
			  "{\"id\":9,\"code\":\"far-1\",\"nodes\":[{\"name\":\"9a\",\"hostName\":\"r9.example.\"}]}]}",
			  &m, err, sizeof(err)));
	assert_string_equal(err, "");
	assert_int_equal(m.nregions, 2);
	assert_int_equal(m.regions[0].id, 7);
	assert_string_equal(m.regions[0].code, "home");
	assert_string_equal(m.regions[0].name, "Home");
	assert_int_equal(m.regions[0].nnodes, 2);
	assert_string_equal(m.regions[0].nodes[0].host, "relay-a.knit-system.svc");
	assert_string_equal(m.regions[0].nodes[0].ipv4, "10.0.0.1");
	assert_int_equal(m.regions[0].nodes[0].relay_port, 8443);
	assert_int_equal(m.regions[0].nodes[0].stun_port, 0);
	assert_false(m.regions[0].nodes[0].tls);
	assert_true(m.regions[0].nodes[0].has_key);
	assert_int_equal(m.regions[0].nodes[0].key[0], 0x01);
	assert_int_equal(m.regions[0].nodes[0].key[1], 0x23);
	assert_int_equal(m.regions[0].nodes[0].key[31], 0xef);
	/* Defaults. */
	assert_string_equal(m.regions[0].nodes[1].ipv4, "");
	assert_string_equal(m.regions[0].nodes[1].ipv6, "2001:db8::1");
	assert_int_equal(m.regions[0].nodes[1].relay_port, RELAYMAP_DEFAULT_RELAY_PORT);
	assert_int_equal(m.regions[0].nodes[1].stun_port, RELAYMAP_DEFAULT_STUN_PORT);
	assert_true(m.regions[0].nodes[1].tls);
	assert_false(m.regions[0].nodes[1].has_key);
	assert_string_equal(m.regions[1].name, "");
	assert_ptr_equal(relaymap_region(&m, 9), &m.regions[1]);
	assert_null(relaymap_region(&m, 8));
	relaymap_free(&m);
	assert_int_equal(m.nregions, 0);
}

static void test_empty(void **state)
{
	(void)state;
	struct relaymap m;
	char err[128];

	assert_true(relaymap_parse(NULL, &m, err, sizeof(err)));
	assert_int_equal(m.nregions, 0);
	assert_true(parse("null", &m, err, sizeof(err)));
	assert_true(parse("{}", &m, err, sizeof(err)));
	assert_true(parse("{\"regions\":[]}", &m, err, sizeof(err)));
	assert_int_equal(m.nregions, 0);
	assert_null(relaymap_region(&m, 1));
	relaymap_free(&m);
}

static void test_refused(void **state)
{
	(void)state;
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "[]", "relayMap: want an object" },
		{ "{\"regions\":{}}", "relayMap.regions: want an array" },
		{ "{\"regions\":[1]}", "relayMap.regions[0]: want an object" },
		{ "{\"regions\":[{\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\"}]}]}",
		  "relayMap.regions[0].id: missing" },
		{ "{\"regions\":[{\"id\":0,\"code\":\"a\",\"nodes\":[]}]}", "relayMap.regions[0].id" },
		{ "{\"regions\":[{\"id\":70000,\"code\":\"a\",\"nodes\":[]}]}", "relayMap.regions[0].id" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"A b\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\"}]}]}",
		  "relayMap.regions[0].code: \"A b\"" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\"}]}", "relayMap.regions[0].nodes: want an array" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[]}]}", "relayMap.regions[0].nodes: want 1 to 16" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\"}]}]}",
		  "relayMap.regions[0].nodes[0].hostName: missing" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"-x.y\"}]}]}",
		  "relayMap.regions[0].nodes[0].hostName: \"-x.y\"" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"a..b\"}]}]}",
		  "hostName: \"a..b\"" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"ipv4\":\"1.2.3\"}]}]}",
		  "relayMap.regions[0].nodes[0].ipv4: \"1.2.3\" is not an IPv4 address" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"ipv6\":\"1.2.3.4\"}]}]}",
		  "nodes[0].ipv6: \"1.2.3.4\" is not an IPv6 address" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"relayPort\":0}]}]}",
		  "nodes[0].relayPort" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"stunPort\":65536}]}]}",
		  "nodes[0].stunPort" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"tls\":1}]}]}",
		  "nodes[0].tls" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"publicKey\":1}]}]}",
		  "nodes[0].publicKey: want \"relaykey:\" and 64 hex digits" },
		/* A node key, a base64 key, a short key, trailing bytes: refused. */
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"publicKey\":"
		  "\"nodekey:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}]}]}",
		  "nodes[0].publicKey" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"publicKey\":"
		  "\"ASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze8=\"}]}]}",
		  "nodes[0].publicKey" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"publicKey\":"
		  "\"relaykey:0123456789abcdef\"}]}]}",
		  "nodes[0].publicKey" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"publicKey\":"
		  "\"relaykey:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdefff\"}]}]}",
		  "nodes[0].publicKey" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\",\"publicKey\":"
		  "\"relaykey:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg\"}]}]}",
		  "nodes[0].publicKey" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\"},"
		  "{\"name\":\"n\",\"hostName\":\"g\"}]}]}",
		  "relayMap.regions[0].nodes[1].name: \"n\" is also nodes[0]'s" },
		{ "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\"}]},"
		  "{\"id\":1,\"code\":\"b\",\"nodes\":[{\"name\":\"n\",\"hostName\":\"h\"}]}]}",
		  "relayMap.regions[1].id: 1 is also regions[0]'s" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct relaymap m;
		char err[256] = "";

		if (parse(cases[i].in, &m, err, sizeof(err)))
			fail_msg("case %zu accepted: %s", i, cases[i].in);
		if (!strstr(err, cases[i].want))
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].want);
		assert_int_equal(m.nregions, 0);
		assert_null(m.regions);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
