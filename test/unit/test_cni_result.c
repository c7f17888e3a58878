/* cni-plugin/cniresult.c and cnierror.c: prevResult converted between the
 * 0.4.0, 1.0.0 and 1.1.0 shapes, knit's entries appended, error objects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "buf.h"
#include "cnierror.h"
#include "cniresult.h"
#include "json.h"

static struct json *parse(const char *s)
{
	struct json *j = json_parse(s, strlen(s), NULL);

	if (!j)
		fail_msg("bad JSON in the test: %s", s);
	return j;
}

static void assert_json(const struct json *got, const char *want)
{
	struct json *w = parse(want);

	if (!json_equal(got, w)) {
		struct buf b = BUF_INIT(1 << 20);

		json_dump(got, &b, 0);
		fail_msg("got %s\nwant %s", buf_str(&b), want);
	}
	json_free(w);
}

/* What Debian's bridge + host-local give in each version. */
#define R11 "{\"cniVersion\":\"1.1.0\",\"interfaces\":[{\"name\":\"cni0\",\"mac\":\"aa:bb:cc:dd:ee:ff\",\"mtu\":1500}," \
	    "{\"name\":\"eth0\",\"sandbox\":\"/run/netns/p\",\"socketPath\":\"/s\"}]," \
	    "\"ips\":[{\"address\":\"10.1.0.5/24\",\"gateway\":\"10.1.0.1\",\"interface\":1}," \
	    "{\"address\":\"fd00::5/64\",\"interface\":1}]," \
	    "\"routes\":[{\"dst\":\"0.0.0.0/0\",\"gw\":\"10.1.0.1\",\"mtu\":1400,\"table\":5}],\"dns\":{\"nameservers\":[\"10.96.0.10\"]}}"
#define R10 "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"cni0\",\"mac\":\"aa:bb:cc:dd:ee:ff\"}," \
	    "{\"name\":\"eth0\",\"sandbox\":\"/run/netns/p\"}]," \
	    "\"ips\":[{\"address\":\"10.1.0.5/24\",\"gateway\":\"10.1.0.1\",\"interface\":1}," \
	    "{\"address\":\"fd00::5/64\",\"interface\":1}]," \
	    "\"routes\":[{\"dst\":\"0.0.0.0/0\",\"gw\":\"10.1.0.1\"}],\"dns\":{\"nameservers\":[\"10.96.0.10\"]}}"
#define R04 "{\"cniVersion\":\"0.4.0\",\"interfaces\":[{\"name\":\"cni0\",\"mac\":\"aa:bb:cc:dd:ee:ff\"}," \
	    "{\"name\":\"eth0\",\"sandbox\":\"/run/netns/p\"}]," \
	    "\"ips\":[{\"version\":\"4\",\"address\":\"10.1.0.5/24\",\"gateway\":\"10.1.0.1\",\"interface\":1}," \
	    "{\"version\":\"6\",\"address\":\"fd00::5/64\",\"interface\":1}]," \
	    "\"routes\":[{\"dst\":\"0.0.0.0/0\",\"gw\":\"10.1.0.1\"}],\"dns\":{\"nameservers\":[\"10.96.0.10\"]}}"

static void test_convert(void **state)
{
	static const struct {
		const char *in, *to, *want;
	} cases[] = {
		{ R11, "1.1.0", R11 }, /* same version: untouched */
		{ R11, "1.0.0", R10 },
		{ R11, "0.4.0", R04 },
		{ R10, "0.4.0", R04 },
		{ R04, "1.0.0", R10 },
		{ R04, "0.4.0", R04 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *in = parse(cases[i].in), *out;
		struct cnierror e;

		out = cniresult_convert(in, "1.1.0", cases[i].to, &e);
		assert_non_null(out);
		assert_json(out, cases[i].want);
		json_free(out);
		json_free(in);
	}
}

static void test_convert_to_0_3_1(void **state)
{
	struct json *in = parse(R10), *out;
	struct cnierror e;

	out = cniresult_convert(in, NULL, "0.3.1", &e);
	assert_non_null(out);
	assert_string_equal(json_str(json_get(out, "cniVersion")), "0.3.1");
	assert_string_equal(json_str(json_get(json_array_at(json_get(out, "ips"), 1), "version")), "6");
	json_free(out);
	json_free(in);
}

static void test_convert_errors(void **state)
{
	static const struct {
		const char *in;
		int code;
	} cases[] = {
		{ "{\"cniVersion\":\"0.2.0\",\"ip4\":{\"ip\":\"10.0.0.1/24\"}}", 1 },
		{ "{\"cniVersion\":7}", 1 },
		{ "{\"cniVersion\":\"1.0.0\",\"interfaces\":{}}", 6 },
		{ "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{}]}", 6 },
		{ "{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.0.0.1\"}]}", 6 },
		{ "{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.0.0.1/33\"}]}", 6 },
		{ "{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.0.0.1/24\",\"interface\":0}]}", 6 },
		{ "{\"cniVersion\":\"1.0.0\",\"routes\":[{\"dst\":\"default\"}]}", 6 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *in = parse(cases[i].in);
		struct cnierror e = { 0 };

		assert_null(cniresult_convert(in, "1.0.0", "1.0.0", &e));
		if (e.code != cases[i].code)
			fail_msg("case %zu: code %d, want %d (%s)", i, e.code, cases[i].code, e.details);
		json_free(in);
	}
}

static void test_append(void **state)
{
	const char *addrs[] = { "100.64.0.9/32", "fd7a:115c:a1e0::9/128" };
	const char *routes[] = { "100.64.0.0/10", "fd7a:115c:a1e0::/48" };
	struct cniresult_attach a = { "knit0", "/run/netns/p", addrs, 2, routes, 2 };
	struct json *r;

	r = parse(R10);
	assert_int_equal(cniresult_append(r, "1.0.0", &a), 0);
	assert_int_equal(cniresult_find_interface(r, "knit0", "/run/netns/p"), 2);
	assert_int_equal(cniresult_find_interface(r, "knit0", "/run/netns/other"), -1);
	assert_int_equal(cniresult_find_interface(r, "eth0", NULL), 1);
	assert_json(json_array_at(json_get(r, "ips"), 2), "{\"address\":\"100.64.0.9/32\",\"interface\":2}");
	assert_json(json_array_at(json_get(r, "routes"), 2), "{\"dst\":\"fd7a:115c:a1e0::/48\"}");
	json_free(r);

	r = parse(R04);
	assert_int_equal(cniresult_append(r, "0.4.0", &a), 0);
	assert_json(json_array_at(json_get(r, "ips"), 3),
		    "{\"version\":\"6\",\"address\":\"fd7a:115c:a1e0::9/128\",\"interface\":2}");
	json_free(r);

	/* A result with nothing in it yet. */
	r = parse("{\"cniVersion\":\"1.1.0\"}");
	assert_int_equal(cniresult_append(r, "1.1.0", &a), 0);
	assert_json(r, "{\"cniVersion\":\"1.1.0\",\"interfaces\":[{\"name\":\"knit0\",\"sandbox\":\"/run/netns/p\"}],"
		       "\"ips\":[{\"address\":\"100.64.0.9/32\",\"interface\":0},"
		       "{\"address\":\"fd7a:115c:a1e0::9/128\",\"interface\":0}],"
		       "\"routes\":[{\"dst\":\"100.64.0.0/10\"},{\"dst\":\"fd7a:115c:a1e0::/48\"}]}");
	json_free(r);
}

static void test_prefix(void **state)
{
	struct cniresult_prefix p;

	assert_true(cniresult_prefix_parse("100.64.0.0/10", &p));
	assert_int_equal(p.family, AF_INET);
	assert_int_equal(p.len, 10);
	assert_true(cniresult_prefix_parse("::/0", &p));
	assert_int_equal(p.family, AF_INET6);
	assert_false(cniresult_prefix_parse("1.2.3.4", &p));
	assert_false(cniresult_prefix_parse("1.2.3.4/", &p));
	assert_false(cniresult_prefix_parse("1.2.3.4/08", &p));
	assert_false(cniresult_prefix_parse("1.2.3.4/-1", &p));
	assert_false(cniresult_prefix_parse("::1/129", &p));
	assert_false(cniresult_prefix_parse("/24", &p));
	assert_false(cniresult_prefix_parse(NULL, &p));
}

static void test_error_object(void **state)
{
	struct buf b = BUF_INIT(1 << 16);
	struct cnierror e;
	struct json *j;

	cnierror_set(&e, 11, "knitd is not running", "no socket at %s \xc3", "/x");
	assert_int_equal(cnierror_dump(&e, "0.4.0", &b), 0);
	j = parse(buf_str(&b));
	assert_json(j, "{\"cniVersion\":\"0.4.0\",\"code\":11,\"msg\":\"knitd is not running\","
		       "\"details\":\"no socket at /x ?\"}");
	json_free(j);
	assert_int_equal(cnierror_dump(&e, NULL, &b), 0);
	j = parse(buf_str(&b));
	assert_string_equal(json_str(json_get(j, "cniVersion")), "1.1.0");
	json_free(j);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_convert),
		cmocka_unit_test(test_convert_to_0_3_1),
		cmocka_unit_test(test_convert_errors),
		cmocka_unit_test(test_append),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_error_object),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
