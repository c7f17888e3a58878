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
#include "json.h"
#include "yamldoc.h"

static struct json *yaml_ok(const char *s)
{
	struct json_error err = { 0 };
	struct json *j = yamldoc_parse(s, strlen(s), &err);

	if (!j)
		fail_msg("yaml parse of <<%s>> failed: %zu:%zu %s", s, err.line, err.column, err.msg);
	return j;
}

static struct json *json_ok(const char *s)
{
	struct json_error err = { 0 };
	struct json *j = json_parse(s, strlen(s), &err);

	if (!j)
		fail_msg("json parse of %s failed: %s", s, err.msg);
	return j;
}

static char *to_json(const struct json *j)
{
	struct buf b = BUF_INIT(1 << 20);

	assert_int_equal(json_dump(j, &b, 0), 0);
	return buf_steal(&b, NULL);
}

static void test_scalar_resolution(void **state)
{
	static const struct {
		const char *yaml, *json;
	} cases[] = {
		{ "", "null" },
		{ "~", "null" },
		{ "null", "null" },
		{ "Null", "null" },
		{ "NULL", "null" },
		{ "nULL", "\"nULL\"" },
		{ "true", "true" },
		{ "True", "true" },
		{ "TRUE", "true" },
		{ "false", "false" },
		{ "FALSE", "false" },
		{ "tRUE", "\"tRUE\"" },
		{ "yes", "\"yes\"" },
		{ "off", "\"off\"" },
		{ "0", "0" },
		{ "-17", "-17" },
		{ "+17", "17" },
		{ "007", "7" },
		{ "-0", "-0" },
		{ "0x1F", "31" },
		{ "0xffffffffffffffff", "1.8446744073709552e+19" },
		{ "0X1F", "\"0X1F\"" },
		{ "0o17", "15" },
		{ "0o18", "\"0o18\"" },
		{ "0b101", "\"0b101\"" },
		{ "-0x1", "\"-0x1\"" },
		{ "9223372036854775807", "9223372036854775807" },
		{ "9223372036854775808", "9.223372036854776e+18" },
		{ "1.5", "1.5" },
		{ "-.5", "-0.5" },
		{ "1.", "1" },
		{ "1e3", "1000" },
		{ "6.02E+23", "6.02e+23" },
		{ ".", "\".\"" },
		{ "1_000", "\"1_000\"" },
		{ "1:20", "\"1:20\"" },
		{ "1.2.3", "\"1.2.3\"" },
		{ "e3", "\"e3\"" },
		{ "hello world", "\"hello world\"" },
		{ "\"true\"", "\"true\"" },
		{ "'12'", "\"12\"" },
		{ "''", "\"\"" },
		{ "\"\"", "\"\"" },
		{ "\"a\\tb\\u00e9\\0\"", "\"a\\tb\xc3\xa9\\u0000\"" },
		{ "'it''s'", "\"it's\"" },
		{ "!!str 12", "\"12\"" },
		{ "!!str true", "\"true\"" },
		{ "!!str", "\"\"" },
		{ "!!int \"12\"", "12" },
		{ "!!int 0x10", "16" },
		{ "!!float 3", "3" },
		{ "!!float '2.5'", "2.5" },
		{ "!!bool 'true'", "true" },
		{ "!!null ''", "null" },
		{ "!!null", "null" },
		{ "! 12", "\"12\"" },
		{ "!custom 12", "12" },
		{ "!custom '12'", "\"12\"" },
		{ "|\n  line1\n  line2\n", "\"line1\\nline2\\n\"" },
		{ "|-\n  12\n", "\"12\"" },
		{ ">\n  folded\n  text\n", "\"folded text\\n\"" },
		{ "[1, a, {b: c}]", "[1,\"a\",{\"b\":\"c\"}]" },
		{ "{}", "{}" },
		{ "[]", "[]" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char doc[256];
		struct json *j;
		char *out;

		snprintf(doc, sizeof(doc), "v: %s", cases[i].yaml);
		j = yaml_ok(doc);
		out = to_json(json_get(j, "v"));
		if (strcmp(out, cases[i].json) != 0)
			fail_msg("case %zu: <<%s>> is %s, want %s", i, cases[i].yaml, out, cases[i].json);
		free(out);
		json_free(j);
	}
}

static void test_special_floats(void **state)
{
	struct json *j = yaml_ok("[.inf, -.Inf, +.INF, .nan, .NaN, .NAN, .Nan]");
	double d;

	assert_true(json_double(json_array_at(j, 0), 0) > 1e308);
	assert_true(json_double(json_array_at(j, 1), 0) < -1e308);
	assert_true(json_double(json_array_at(j, 2), 0) > 1e308);
	for (int i = 3; i < 6; i++) {
		d = json_double(json_array_at(j, i), 0);
		assert_true(d != d);
	}
	assert_string_equal(json_str(json_array_at(j, 6)), ".Nan");
	json_free(j);
}

static const char kubeconfig[] =
	"apiVersion: v1\n"
	"kind: Config\n"
	"preferences: {}\n"
	"current-context: kind-knit\n"
	"clusters:\n"
	"- cluster:\n"
	"    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n"
	"    server: https://127.0.0.1:6443\n"
	"  name: kind-knit\n"
	"contexts:\n"
	"- context:\n"
	"    cluster: kind-knit\n"
	"    user: kind-knit\n"
	"    namespace: \"default\"\n"
	"  name: kind-knit\n"
	"users:\n"
	"- name: kind-knit\n"
	"  user:\n"
	"    # a comment\n"
	"    token: abc.def # trailing comment\n"
	"    exec:\n"
	"      apiVersion: client.authentication.k8s.io/v1\n"
	"      command: aws\n"
	"      args: [\"eks\", \"get-token\", --cluster-name, knit]\n"
	"      env: null\n"
	"      interactiveMode: Never\n"
	"      provideClusterInfo: false\n";

static void test_kubeconfig(void **state)
{
	struct json *j = yaml_ok(kubeconfig), *user;

	assert_string_equal(json_str(json_get(j, "current-context")), "kind-knit");
	assert_true(json_is_object(json_get(j, "preferences")));
	assert_string_equal(json_str(json_path(json_array_at(json_get(j, "clusters"), 0), "cluster",
					       "server", NULL)),
			    "https://127.0.0.1:6443");
	assert_string_equal(json_str(json_path(json_array_at(json_get(j, "contexts"), 0), "context",
					       "namespace", NULL)),
			    "default");
	user = json_path(json_array_at(json_get(j, "users"), 0), "user", NULL);
	assert_string_equal(json_str(json_get(user, "token")), "abc.def");
	assert_int_equal(json_array_len(json_path(user, "exec", "args", NULL)), 4);
	assert_string_equal(json_str(json_array_at(json_path(user, "exec", "args", NULL), 2)),
			    "--cluster-name");
	assert_true(json_is_null(json_path(user, "exec", "env", NULL)));
	assert_true(json_is_bool(json_path(user, "exec", "provideClusterInfo", NULL)));

	/* Every prefix parses or fails cleanly (ASan checks reads and leaks). */
	for (size_t n = 0; n < sizeof(kubeconfig) - 1; n++) {
		struct json_error err = { 0 };
		char *copy = malloc(n ? n : 1);
		struct json *p;

		assert_non_null(copy);
		memcpy(copy, kubeconfig, n);
		p = yamldoc_parse(copy, n, &err);
		if (!p)
			assert_true(err.line >= 1 && err.column >= 1 && err.msg[0]);
		json_free(p);
		free(copy);
	}
	json_free(j);
}

static void test_multi_document(void **state)
{
	static const char manifests[] =
		"# leading comment\n"
		"---\n"
		"apiVersion: v1\n"
		"kind: Namespace\n"
		"metadata: {name: knit}\n"
		"---\n"
		"# only a comment\n"
		"---\n"
		"---\n"
		"apiVersion: v1\n"
		"kind: ServiceAccount\n"
		"metadata:\n"
		"  name: knit\n"
		"  namespace: knit\n"
		"...\n"
		"--- [1, 2]\n";
	struct json_error err = { 0 };
	struct json *all = yamldoc_parse_all(manifests, strlen(manifests), &err);

	assert_non_null(all);
	assert_int_equal(json_array_len(all), 3);
	assert_string_equal(json_str(json_get(json_array_at(all, 0), "kind")), "Namespace");
	assert_string_equal(json_str(json_get(json_array_at(all, 1), "kind")), "ServiceAccount");
	assert_int_equal(json_array_len(json_array_at(all, 2)), 2);
	json_free(all);

	/* yamldoc_parse wants exactly one. */
	assert_null(yamldoc_parse(manifests, strlen(manifests), &err));
	assert_non_null(strstr(err.msg, "single YAML document"));
	assert_int_equal(err.line, 6);
	assert_int_equal(err.column, 1);

	/* Empty streams. */
	assert_null(yamldoc_parse("", 0, &err));
	assert_non_null(strstr(err.msg, "no YAML document"));
	assert_null(yamldoc_parse("# nothing\n", 10, &err));
	all = yamldoc_parse_all("# nothing\n", 10, &err);
	assert_int_equal(json_array_len(all), 0);
	json_free(all);
	all = yamldoc_parse("---\n", 4, &err);
	assert_true(json_is_null(all));
	json_free(all);
}

static void test_anchors(void **state)
{
	static const char doc[] =
		"defaults: &defaults\n"
		"  adapter: postgres\n"
		"  host: localhost\n"
		"dev: *defaults\n"
		"list: &l [a, b]\n"
		"copy: *l\n"
		"scalar: &s 42\n"
		"again: *s\n"
		"nested: {x: *defaults, y: [*s, *l]}\n"
		"redef: &s two\n"
		"after: *s\n"
		"&k key: *k\n"
		"*s : from-alias-key\n";
	struct json *j = yaml_ok(doc), *want;

	want = json_ok("{\"defaults\":{\"adapter\":\"postgres\",\"host\":\"localhost\"},"
		       "\"dev\":{\"adapter\":\"postgres\",\"host\":\"localhost\"},"
		       "\"list\":[\"a\",\"b\"],\"copy\":[\"a\",\"b\"],\"scalar\":42,\"again\":42,"
		       "\"nested\":{\"x\":{\"adapter\":\"postgres\",\"host\":\"localhost\"},"
		       "\"y\":[42,[\"a\",\"b\"]]},\"redef\":\"two\",\"after\":\"two\","
		       "\"key\":\"key\",\"two\":\"from-alias-key\"}");
	assert_true(json_equal(j, want));
	/* Copies, not shared nodes: each frees on its own. */
	assert_ptr_not_equal(json_get(j, "dev"), json_get(j, "defaults"));
	json_free(want);
	json_free(j);

	/* A number used as a key through an alias becomes its text. */
	j = yaml_ok("a: &n 12\n*n : x\n");
	assert_string_equal(json_str(json_get(j, "12")), "x");
	json_free(j);
}

static void test_errors(void **state)
{
	static const struct {
		const char *in;
		size_t line, col;
		const char *msg;
	} cases[] = {
		/* Bad indentation. */
		{ "a:\n  b: 1\n   c: 2\n", 3, 5, "mapping values are not allowed" },
		{ "a: 1\n b: 2\n", 2, 3, "mapping values are not allowed" },
		{ "list:\n  - a\n - b\n", 3, 2, "did not find expected key" },
		{ "a: [1, 2\nb: 3\n", 2, 2, "did not find expected ',' or ']'" },
		{ "a: \"open\n", 2, 1, "found unexpected end of stream" },
		{ "a: b: c\n", 1, 5, "mapping values are not allowed" },
		{ "\tkey: v\n", 1, 1, "found character that cannot start any token" },
		{ "a: *nope\n", 1, 4, "unknown anchor \"nope\"" },
		{ "a: &x [1, *x]\n", 1, 11, "unknown anchor \"x\"" },
		{ "a: 1\nb: 2\na: 3\n", 3, 1, "duplicate key \"a\"" },
		{ "? [a, b]\n: 1\n", 1, 3, "complex mapping keys" },
		{ "? {a: 1}\n: 1\n", 1, 3, "complex mapping keys" },
		{ "l: &l [1]\n*l : 1\n", 2, 1, "complex mapping keys" },
		{ "v: !!int abc\n", 1, 4, "\"abc\" is not a valid int" },
		{ "v: !!int 1.5\n", 1, 4, "not a valid int" },
		{ "v: !!bool yes\n", 1, 4, "not a valid bool" },
		{ "v: !!null 0\n", 1, 4, "not a valid null" },
		{ "v: !!float abc\n", 1, 4, "not a valid float" },
		{ "v: !!int \"1\\0\"\n", 1, 4, "not a valid int" },
		{ "a: 1\n\xff\n", 2, 1, "invalid leading UTF-8 octet" },
		{ "%YAML 1.1\n%YAML 1.1\n--- a\n", 2, 1, "duplicate %YAML directive" },
		{ "a: !<!> x\n", 0, 0, "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_error err = { 0 };
		struct json *j = yamldoc_parse(cases[i].in, strlen(cases[i].in), &err);

		if (!cases[i].line) {
			/* Only: no crash, no leak. */
			json_free(j);
			continue;
		}
		if (j)
			fail_msg("case %zu parsed", i);
		if (err.line != cases[i].line || err.column != cases[i].col ||
		    !strstr(err.msg, cases[i].msg))
			fail_msg("case %zu: got %zu:%zu \"%s\", want %zu:%zu \"%s\"", i, err.line,
				 err.column, err.msg, cases[i].line, cases[i].col, cases[i].msg);
	}
}

static void test_alias_bomb(void **state)
{
	static const char bomb[] =
		"a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
		"b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
		"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
		"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
		"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
		"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
		"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
		"h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
		"i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
	struct json_error err = { 0 };
	struct json *j;

	assert_null(yamldoc_parse(bomb, strlen(bomb), &err));
	assert_non_null(strstr(err.msg, "aliases expand to more than"));
	assert_int_equal(err.line, 6);

	/* The first four levels are fine: 9 + 90 + 900 + 9000 copies. */
	j = yamldoc_parse(bomb, strstr(bomb, "e:") - bomb, &err);
	assert_non_null(j);
	assert_int_equal(json_array_len(json_get(j, "d")), 9);
	json_free(j);

	/* Aliases may not nest a copy past the depth limit either. */
	struct buf b = BUF_INIT(1 << 16);
	assert_int_equal(buf_add_str(&b, "a: &a "), 0);
	for (int i = 0; i < 60; i++)
		buf_add_byte(&b, '[');
	for (int i = 0; i < 60; i++)
		buf_add_byte(&b, ']');
	assert_int_equal(buf_add_str(&b, "\nb: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n"), 0);
	assert_null(yamldoc_parse(buf_str(&b), b.len, &err));
	assert_non_null(strstr(err.msg, "nesting deeper than"));
	assert_int_equal(err.line, 2);
	buf_free(&b);
}

static void test_depth(void **state)
{
	struct buf b = BUF_INIT(1 << 16);
	struct json_error err = { 0 };
	struct json *j;

	for (int i = 0; i < JSON_MAX_DEPTH; i++)
		buf_add_byte(&b, '[');
	for (int i = 0; i < JSON_MAX_DEPTH; i++)
		buf_add_byte(&b, ']');
	j = yamldoc_parse(buf_str(&b), b.len, &err);
	assert_non_null(j);
	json_free(j);
	buf_reset(&b);
	for (int i = 0; i < 10000; i++)
		buf_add_byte(&b, '[');
	assert_null(yamldoc_parse(buf_str(&b), b.len, &err));
	assert_non_null(strstr(err.msg, "nesting deeper than 100"));
	assert_int_equal(err.column, JSON_MAX_DEPTH + 1);
	buf_free(&b);
}

static void test_keys(void **state)
{
	struct json *j = yaml_ok("1: int\ntrue: bool\n~: tilde\n\"q\": quoted\n0x10: hex\n"
				 "? explicit\n: yes\n3.50: f\n");
	struct json *want = json_ok("{\"1\":\"int\",\"true\":\"bool\",\"~\":\"tilde\","
				    "\"q\":\"quoted\",\"0x10\":\"hex\",\"explicit\":\"yes\","
				    "\"3.50\":\"f\"}");

	assert_true(json_equal(j, want));
	json_free(want);
	json_free(j);
}

static void roundtrip(const char *json_text)
{
	struct json *j = json_ok(json_text), *back;
	struct buf b = BUF_INIT(1 << 20);
	struct json_error err = { 0 };

	assert_int_equal(yamldoc_dump(j, &b), 0);
	back = yamldoc_parse(buf_str(&b), b.len, &err);
	if (!back)
		fail_msg("re-reading %s as YAML failed: %s\n%s", json_text, err.msg, buf_str(&b));
	if (!json_equal(j, back)) {
		char *got = to_json(back);

		fail_msg("round trip of %s gave %s via\n%s", json_text, got, buf_str(&b));
	}
	json_free(back);
	json_free(j);
	buf_free(&b);
}

static void test_roundtrip(void **state)
{
	static const char *const docs[] = {
		"null", "true", "false", "0", "-0", "42", "-9223372036854775808", "1.5", "0.1",
		"1e300", "-2.5e-300", "9223372036854775808", "\"\"", "\"plain\"", "[]", "{}",
		"[\"true\",\"True\",\"FALSE\",\"null\",\"Null\",\"~\",\"\",\"12\",\"-12\",\"+12\","
		"\"0x1F\",\"0o17\",\"1.5\",\".5\",\"1e3\",\".inf\",\"-.inf\",\".nan\",\"yes\",\"no\","
		"\"on\",\"off\",\"y\",\"n\",\"<<\",\"=\",\"1_000\",\"1:20\",\"0b11\",\"1.2.3\"]",
		"[\" lead\",\"trail \",\"a: b\",\"a #b\",\"#c\",\"- x\",\"-\",\"?\",\":\",\"[x\","
		"\"]\",\"{a}\",\"*x\",\"&a\",\"!t\",\"%x\",\"@x\",\"`x\",\"|\",\">\",\"'\",\"\\\"\","
		"\"a,b\",\"---\",\"...\",\"a\\\\b\"]",
		"[\"multi\\nline\",\"trailing\\n\",\"\\n\",\"two\\n\\n\",\"  indented\\nx\","
		"\"tab\\tin\",\"cr\\r\\n\",\"nul\\u0000byte\",\"bell\\u0007\",\"del\\u007f\"]",
		"[\"\xc3\xa9t\xc3\xa9\",\"\xe6\x97\xa5\xe6\x9c\xac\",\"\xf0\x9f\x98\x80\","
		"\"\\u00a0nbsp\",\"\\u2028ls\",\"\\ufeffbom\"]",
		"{\"true\":1,\"1\":2,\"\":3,\"null\":4,\"a: b\":5,\"- x\":6,\"k\\u0000\":7,"
		"\"multi\\nkey\":8}",
		"{\"a\":{\"b\":{\"c\":[1,[2,[3,{}]],[]]}},\"d\":[{\"e\":null},{\"f\":[]}]}",
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"deep\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
	};

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		roundtrip(docs[i]);

	/* NaN and infinities, which JSON cannot carry, survive YAML. */
	struct json *a = json_new_array(), *back;
	struct buf b = BUF_INIT(4096);
	json_array_append(a, json_new_double(__builtin_nan("")));
	json_array_append(a, json_new_double(__builtin_inf()));
	json_array_append(a, json_new_double(-__builtin_inf()));
	assert_int_equal(yamldoc_dump(a, &b), 0);
	assert_string_equal(buf_str(&b), "- .nan\n- .inf\n- -.inf\n");
	back = yaml_ok(buf_str(&b));
	assert_true(json_equal(a, back));
	json_free(back);
	json_free(a);
	buf_free(&b);

	/* And the kubeconfig: YAML -> tree -> YAML -> tree. */
	struct json *k = yaml_ok(kubeconfig);
	b = (struct buf)BUF_INIT(1 << 16);
	assert_int_equal(yamldoc_dump(k, &b), 0);
	back = yaml_ok(buf_str(&b));
	assert_true(json_equal(k, back));
	json_free(back);
	json_free(k);
	buf_free(&b);
}

static void test_dump_format(void **state)
{
	struct json *j = json_ok("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
				 "\"metadata\":{\"name\":\"knit\",\"labels\":{}},"
				 "\"data\":{\"enabled\":\"true\",\"count\":\"3\",\"script\":\"a\\nb\\n\"},"
				 "\"list\":[1,{\"x\":null}]}");
	struct buf b = BUF_INIT(4096), tiny = BUF_INIT(8);

	assert_int_equal(yamldoc_dump(j, &b), 0);
	assert_string_equal(buf_str(&b), "apiVersion: v1\n"
					 "kind: ConfigMap\n"
					 "metadata:\n"
					 "  name: knit\n"
					 "  labels: {}\n"
					 "data:\n"
					 "  enabled: \"true\"\n"
					 "  count: \"3\"\n"
					 "  script: |\n"
					 "    a\n"
					 "    b\n"
					 "list:\n"
					 "- 1\n"
					 "- x: null\n");
	assert_int_equal(yamldoc_dump(j, &tiny), -ENOSPC);
	json_free(j);
	buf_free(&b);

	/* What YAML cannot hold. */
	j = json_new_stringn("\xff", 1);
	assert_int_equal(yamldoc_dump(j, &b), -EINVAL);
	json_free(j);
	assert_int_equal(yamldoc_dump(NULL, &b), -EINVAL);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scalar_resolution),
		cmocka_unit_test(test_special_floats),
		cmocka_unit_test(test_kubeconfig),
		cmocka_unit_test(test_multi_document),
		cmocka_unit_test(test_anchors),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_alias_bomb),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_dump_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
