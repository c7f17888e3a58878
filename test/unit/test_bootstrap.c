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
		{ { .authkey = "nodes", .authkey_expiry = "0s" }, "--bootstrap-authkey-expiry: \"0s\"" },
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

	/* Nothing given: empty spec (the CRD defaults it), no tags key. */
	o = (struct bootstrap_opts){ .authkey = "nodes" };
	tn = bootstrap_tailnet(&o);
	ak = bootstrap_authkey(&o, "ns");
	s = dump(json_get(tn, "spec"));
	assert_string_equal(s, "{}");
	free(s);
	s = dump(json_get(ak, "spec"));
	assert_string_equal(s, "{\"reusable\":true,\"preauthorized\":true}");
	free(s);
	json_free(tn);
	json_free(ak);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_good),
		cmocka_unit_test(test_check_bad),
		cmocka_unit_test(test_check_limits),
		cmocka_unit_test(test_objects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
