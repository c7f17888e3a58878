/* cni-plugin/netconf.c: the environment, the configuration, CNI_ARGS and
 * the pod annotations, and the CNI error code each malformed input gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "json.h"
#include "netconf.h"

static const struct netconf_env add_env = {
	.command = "ADD",
	.containerid = "c0ffee-1",
	.netns = "/var/run/netns/cni-1",
	.ifname = "eth0",
	.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ci;K8S_POD_NAME=runner-1;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=c0ffee-1",
};

#define PREV "\"prevResult\":{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"eth0\"}],\"ips\":[{\"address\":\"10.1.0.5/24\",\"interface\":0}]}"
#define ANN(x) "\"runtimeConfig\":{\"io.kubernetes.cri.pod-annotations\":{" x "}}"

static int parse(const struct netconf_env *env, const char *in, struct netconf *nc, struct cnierror *e)
{
	return netconf_parse(nc, env, in, strlen(in), e);
}

static void test_full_config(void **state)
{
	const char *in = "{\"cniVersion\":\"1.1.0\",\"name\":\"k8s\",\"type\":\"knit-cni\",\"mode\":\"identity\","
			 "\"socket\":\"/run/k.sock\",\"ifName\":\"tail0\",\"addTimeoutMs\":5000," PREV ","
			 ANN("\"knit.dev/identity\":\"true\",\"knit.dev/tags\":\"tag:ci, tag:web\","
			     "\"knit.dev/hostname\":\"runner-1\",\"other\":\"x\"") "}";
	struct netconf nc;
	struct cnierror e;

	assert_int_equal(parse(&add_env, in, &nc, &e), 0);
	assert_int_equal(nc.cmd, CMD_ADD);
	assert_string_equal(nc.cni_version, "1.1.0");
	assert_string_equal(nc.name, "k8s");
	assert_int_equal(nc.mode, MODE_IDENTITY);
	assert_string_equal(nc.socket, "/run/k.sock");
	assert_string_equal(nc.pod_ifname, "tail0");
	assert_int_equal(nc.add_timeout_ms, 5000);
	assert_int_equal(nc.del_timeout_ms, 10000);
	assert_non_null(nc.prev_result);
	assert_true(nc.have_annotations);
	assert_true(nc.want_identity);
	assert_int_equal(nc.ntags, 2);
	assert_string_equal(nc.tags[0], "tag:ci");
	assert_string_equal(nc.tags[1], "tag:web");
	assert_string_equal(nc.hostname, "runner-1");
	assert_string_equal(nc.pod_namespace, "ci");
	assert_string_equal(nc.pod_name, "runner-1");
	assert_string_equal(nc.pod_uid, "u-1");
	assert_string_equal(nc.containerid, "c0ffee-1");
	netconf_free(&nc);
}

static void test_defaults_and_no_annotations(void **state)
{
	struct netconf nc;
	struct cnierror e;

	assert_int_equal(parse(&add_env, "{\"cniVersion\":\"0.4.0\",\"name\":\"n\",\"type\":\"knit-cni\"}", &nc, &e), 0);
	assert_string_equal(nc.socket, NETCONF_SOCKET_DEFAULT);
	assert_string_equal(nc.pod_ifname, "knit0");
	assert_int_equal(nc.mode, MODE_IDENTITY);
	assert_false(nc.have_annotations);
	assert_false(nc.want_identity);
	assert_null(nc.prev_result);
	netconf_free(&nc);

	assert_int_equal(parse(&add_env, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"mode\":\"gateway\","
					 ANN("\"knit.dev/identity\":\"false\"") "}", &nc, &e), 0);
	assert_int_equal(nc.mode, MODE_GATEWAY);
	assert_true(nc.have_annotations);
	assert_false(nc.want_identity);
	netconf_free(&nc);
}

static void test_errors(void **state)
{
	static const struct {
		const char *command, *cid, *netns, *ifname, *args;
		const char *in;
		int code;
	} cases[] = {
		/* environment: 4 */
		{ NULL, "c", "/n", "eth0", NULL, "{}", 4 },
		{ "FROB", "c", "/n", "eth0", NULL, "{}", 4 },
		{ "ADD", NULL, "/n", "eth0", NULL, "{}", 4 },
		{ "ADD", "c", NULL, "eth0", NULL, "{}", 4 },
		{ "ADD", "c", "/n", NULL, NULL, "{}", 4 },
		{ "ADD", "-bad", "/n", "eth0", NULL, "{}", 4 },
		{ "ADD", "c/../x", "/n", "eth0", NULL, "{}", 4 },
		{ "ADD", "c", "relative", "eth0", NULL, "{}", 4 },
		{ "ADD", "c", "/n", "a/b", NULL, "{}", 4 },
		{ "ADD", "c", "/n", "0123456789abcdef", NULL, "{}", 4 },
		{ "ADD", "c", "/n", "eth0", "K8S_POD_NAME", "{}", 4 },
		/* decoding: 6 */
		{ "ADD", "c", "/n", "eth0", NULL, "", 6 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":", 6 },
		{ "ADD", "c", "/n", "eth0", NULL, "[1]", 6 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"a\":1,\"a\":2}", 6 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"prevResult\":[]}", 6 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"runtimeConfig\":1}", 6 },
		{ "ADD", "c", "/n", "eth0", NULL,
		  "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"runtimeConfig\":{\"io.kubernetes.cri.pod-annotations\":[]}}", 6 },
		/* version: 1 */
		{ "ADD", "c", "/n", "eth0", NULL, "{\"name\":\"n\"}", 1 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"0.2.0\",\"name\":\"n\"}", 1 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"2.0.0\",\"name\":\"n\"}", 1 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":1,\"name\":\"n\"}", 1 },
		{ "CHECK", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"0.3.1\",\"name\":\"n\"}", 1 },
		{ "GC", NULL, NULL, NULL, NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\"}", 1 },
		{ "STATUS", NULL, NULL, NULL, NULL, "{\"cniVersion\":\"0.4.0\",\"name\":\"n\"}", 1 },
		/* configuration: 7 */
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\"}", 7 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"mode\":\"sidecar\"}", 7 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"mode\":1}", 7 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"socket\":\"rel.sock\"}", 7 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"ifName\":\"a b\"}", 7 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"addTimeoutMs\":0}", 7 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"delTimeoutMs\":\"5\"}", 7 },
		/* annotations: knit's 101 */
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\"," ANN("\"knit.dev/identity\":\"yes\"") "}", 101 },
		{ "ADD", "c", "/n", "eth0", NULL, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\"," ANN("\"knit.dev/identity\":true") "}", 101 },
		{ "ADD", "c", "/n", "eth0", NULL,
		  "{\"cniVersion\":\"1.0.0\",\"name\":\"n\"," ANN("\"knit.dev/identity\":\"true\",\"knit.dev/tags\":\"ci\"") "}", 101 },
		{ "ADD", "c", "/n", "eth0", NULL,
		  "{\"cniVersion\":\"1.0.0\",\"name\":\"n\"," ANN("\"knit.dev/identity\":\"true\",\"knit.dev/hostname\":\"a.b\"") "}", 101 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct netconf_env env = { cases[i].command, cases[i].cid, cases[i].netns, cases[i].ifname,
					   cases[i].args, NULL };
		struct netconf nc;
		struct cnierror e = { 0 };
		int code = parse(&env, cases[i].in, &nc, &e);

		if (code != cases[i].code)
			fail_msg("case %zu (%s): code %d, want %d (%s)", i, cases[i].in, code, cases[i].code, e.details);
		assert_int_equal(e.code, code);
		assert_true(e.msg[0] && e.details[0]);
		assert_null(nc.doc);
	}
}

static void test_del_needs_no_netns(void **state)
{
	struct netconf_env env = { .command = "DEL", .containerid = "c", .ifname = "eth0" };
	struct netconf nc;
	struct cnierror e;

	assert_int_equal(parse(&env, "{\"cniVersion\":\"1.1.0\",\"name\":\"n\"}", &nc, &e), 0);
	assert_null(nc.netns);
	netconf_free(&nc);
}

static void test_oversized(void **state)
{
	struct netconf nc;
	struct cnierror e;

	assert_int_equal(netconf_parse(&nc, &add_env, "{}", NETCONF_MAX_BYTES + 1, &e), 6);
}

static void test_tags(void **state)
{
	char *tags[NETCONF_MAX_TAGS], why[128];
	size_t n;

	assert_true(netconf_tags_parse("", tags, NETCONF_MAX_TAGS, &n, why, sizeof(why)));
	assert_int_equal(n, 0);
	assert_true(netconf_tags_parse(" tag:a ,,tag:b-2", tags, NETCONF_MAX_TAGS, &n, why, sizeof(why)));
	assert_int_equal(n, 2);
	assert_string_equal(tags[1], "tag:b-2");
	free(tags[0]);
	free(tags[1]);
	assert_false(netconf_tags_parse("tag:a,tag:", tags, NETCONF_MAX_TAGS, &n, why, sizeof(why)));
	assert_false(netconf_tags_parse("tag:1a", tags, NETCONF_MAX_TAGS, &n, why, sizeof(why)));
	assert_false(netconf_tags_parse("tag:a_b", tags, NETCONF_MAX_TAGS, &n, why, sizeof(why)));
	assert_false(netconf_tags_parse("tag:a,tag:b", tags, 1, &n, why, sizeof(why)));
	assert_int_equal(n, 0);
}

static void test_names(void **state)
{
	assert_true(netconf_containerid_valid("a"));
	assert_true(netconf_containerid_valid("9f_a.b-c"));
	assert_false(netconf_containerid_valid(""));
	assert_false(netconf_containerid_valid("_a"));
	assert_false(netconf_containerid_valid("a b"));
	assert_true(netconf_ifname_valid("knit0"));
	assert_false(netconf_ifname_valid(".."));
	assert_false(netconf_ifname_valid("a:1"));
	assert_true(netconf_hostname_valid("runner-1"));
	assert_false(netconf_hostname_valid("-a"));
	assert_false(netconf_hostname_valid("a_b"));
	assert_true(netconf_version_supported("0.3.1"));
	assert_false(netconf_version_supported("1.2.0"));
	assert_true(netconf_version_is_1x("1.0.0"));
	assert_false(netconf_version_is_1x("0.4.0"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_config),
		cmocka_unit_test(test_defaults_and_no_annotations),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_del_needs_no_netns),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
