#include <errno.h>
#include <math.h>
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

static struct json *parse_ok(const char *s)
{
	struct json_error err = { 0 };
	struct json *j = json_parse(s, strlen(s), &err);

	if (!j)
		fail_msg("parse of %s failed: %zu:%zu %s", s, err.line, err.column, err.msg);
	return j;
}

/* Compact dump as a string; caller frees. */
static char *dump(const struct json *j, unsigned flags)
{
	struct buf b = BUF_INIT(1 << 24);

	assert_int_equal(json_dump(j, &b, flags), 0);
	return buf_steal(&b, NULL);
}

static void test_valid_kinds(void **state)
{
	static const struct {
		const char *in, *out;
		enum json_type type;
	} cases[] = {
		{ "null", "null", JSON_NULL },
		{ " \t\r\n true \n", "true", JSON_BOOL },
		{ "false", "false", JSON_BOOL },
		{ "0", "0", JSON_NUMBER },
		{ "-12", "-12", JSON_NUMBER },
		{ "1.5", "1.5", JSON_NUMBER },
		{ "0.1", "0.1", JSON_NUMBER },
		{ "1e3", "1000", JSON_NUMBER },
		{ "1E-2", "0.01", JSON_NUMBER },
		{ "-0", "-0", JSON_NUMBER },
		{ "-0.0", "-0", JSON_NUMBER },
		{ "2.5e+300", "2.5e+300", JSON_NUMBER },
		{ "9223372036854775807", "9223372036854775807", JSON_NUMBER },
		{ "-9223372036854775808", "-9223372036854775808", JSON_NUMBER },
		{ "9223372036854775808", "9.223372036854776e+18", JSON_NUMBER },
		{ "123456789012345678901234567890", "1.2345678901234568e+29", JSON_NUMBER },
		{ "\"\"", "\"\"", JSON_STRING },
		{ "\"a\\nb\\t\\\"\\\\\"", "\"a\\nb\\t\\\"\\\\\"", JSON_STRING },
		{ "\"\\/\\b\\f\\r\"", "\"/\\b\\f\\r\"", JSON_STRING },
		{ "\"\\u00e9\\u20AC\"", "\"\xc3\xa9\xe2\x82\xac\"", JSON_STRING },
		{ "\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"", JSON_STRING },
		{ "\"\\uD834\\uDD1E\"", "\"\xf0\x9d\x84\x9e\"", JSON_STRING },
		{ "\"\xe6\x97\xa5\xe6\x9c\xac\"", "\"\xe6\x97\xa5\xe6\x9c\xac\"", JSON_STRING },
		{ "\"a\\u0000b\"", "\"a\\u0000b\"", JSON_STRING },
		{ "\"\\u001f\"", "\"\\u001F\"", JSON_STRING },
		{ "[]", "[]", JSON_ARRAY },
		{ "[ 1 , [2, [3, []]] ]", "[1,[2,[3,[]]]]", JSON_ARRAY },
		{ "{}", "{}", JSON_OBJECT },
		{ "{\"b\":1,\"a\":{\"c\":[true,null,\"x\"]}}", "{\"b\":1,\"a\":{\"c\":[true,null,\"x\"]}}", JSON_OBJECT },
		{ "{\"\":\"\"}", "{\"\":\"\"}", JSON_OBJECT },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *j = parse_ok(cases[i].in);
		char *out = dump(j, 0);

		assert_int_equal(json_type(j), cases[i].type);
		if (strcmp(out, cases[i].out) != 0)
			fail_msg("case %zu: %s dumped as %s, want %s", i, cases[i].in, out, cases[i].out);
		/* Whatever we write reads back equal. */
		struct json *again = parse_ok(out);
		assert_true(json_equal(j, again));
		json_free(again);
		free(out);
		json_free(j);
	}
}

static void test_numbers(void **state)
{
	static const struct {
		const char *in;
		bool is_int;
		int64_t i;
		double d;
	} cases[] = {
		{ "0", true, 0, 0 },
		{ "42", true, 42, 42 },
		{ "-7", true, -7, -7 },
		{ "1e3", true, 1000, 1000 },
		{ "2.0", true, 2, 2 },
		{ "1.5", false, 0, 1.5 },
		{ "-0", false, 0, -0.0 },
		{ "9223372036854775807", true, INT64_MAX, 9223372036854775807.0 },
		{ "-9223372036854775808", true, INT64_MIN, -9223372036854775808.0 },
		/* Beyond int64: a double only, never a rounded int. */
		{ "9223372036854775808", false, 0, 9223372036854775808.0 },
		{ "-9223372036854775809", false, 0, -9223372036854775808.0 },
		{ "18446744073709551616", false, 0, 18446744073709551616.0 },
		/* A decimal past 2^53 may have been rounded: not an int. */
		{ "9007199254740993.0", false, 0, 9007199254740992.0 },
		{ "1e300", false, 0, 1e300 },
		{ "1e-400", true, 0, 0 },
		{ "-1.25E+2", true, -125, -125.0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *j = parse_ok(cases[i].in);

		assert_true(json_is_number(j));
		if (json_is_int(j) != cases[i].is_int)
			fail_msg("case %s: is_int %d", cases[i].in, json_is_int(j));
		if (cases[i].is_int)
			assert_true(json_int(j, 99) == cases[i].i);
		else
			assert_true(json_int(j, 99) == 99);
		assert_true(json_double(j, 1) == cases[i].d);
		assert_int_equal(signbit(json_double(j, 1)) != 0, signbit(cases[i].d) != 0);
		json_free(j);
	}
}

static void test_accessors(void **state)
{
	struct json *j = parse_ok("{\"metadata\":{\"name\":\"web\",\"labels\":{\"app\":\"x\"}},"
				  "\"n\":3,\"f\":2.5,\"b\":true,\"z\":null,\"s\":\"a\\u0000b\","
				  "\"list\":[1,\"two\"]}");
	const char *key, *sv;
	struct json *v;
	size_t i, len;

	assert_string_equal(json_str(json_path(j, "metadata", "name", NULL)), "web");
	assert_string_equal(json_str(json_path(j, "metadata", "labels", "app", NULL)), "x");
	assert_null(json_path(j, "metadata", "nope", "app", NULL));
	assert_null(json_path(j, "n", "x", NULL));
	assert_ptr_equal(json_path(j, NULL), j);
	assert_null(json_path(NULL, "a", NULL));

	assert_int_equal(json_int(json_get(j, "n"), -1), 3);
	assert_int_equal(json_int(json_get(j, "f"), -1), -1);
	assert_true(json_double(json_get(j, "f"), 0) == 2.5);
	assert_true(json_double(json_get(j, "n"), 0) == 3.0);
	assert_true(json_double(json_get(j, "b"), 7.0) == 7.0);
	assert_true(json_bool(json_get(j, "b"), false));
	assert_false(json_bool(json_get(j, "n"), false));
	assert_true(json_is_null(json_get(j, "z")));
	assert_false(json_is_null(json_get(j, "missing")));
	assert_int_equal(json_type(NULL), JSON_NULL);

	/* A string with an embedded NUL is not a C string. */
	v = json_get(j, "s");
	assert_null(json_str(v));
	assert_int_equal(json_str_len(v), 3);
	sv = json_strn(v, &len);
	assert_int_equal(len, 3);
	assert_memory_equal(sv, "a\0b", 3);
	assert_null(json_str(json_get(j, "n")));
	assert_null(json_strn(json_get(j, "n"), &len));
	assert_int_equal(len, 0);
	assert_int_equal(json_str_len(NULL), 0);

	v = json_get(j, "list");
	assert_int_equal(json_array_len(v), 2);
	assert_int_equal(json_int(json_array_at(v, 0), 0), 1);
	assert_string_equal(json_str(json_array_at(v, 1)), "two");
	assert_null(json_array_at(v, 2));
	assert_null(json_array_at(j, 0));
	assert_int_equal(json_array_len(j), 0);
	assert_null(json_get(v, "x"));
	assert_int_equal(json_object_len(v), 0);

	static const char *const order[] = { "metadata", "n", "f", "b", "z", "s", "list" };
	assert_int_equal(json_object_len(j), 7);
	json_object_foreach(j, i, key, v) {
		assert_string_equal(key, order[i]);
		assert_ptr_equal(v, json_get(j, key));
	}
	assert_int_equal(i, 7);
	assert_null(json_object_at(j, 7, &key, &len));
	assert_string_equal(json_type_name(JSON_OBJECT), "object");
	json_free(j);
	json_free(NULL);
}

static void test_nul_keys(void **state)
{
	struct json *j = parse_ok("{\"a\\u0000b\":1,\"a\":2}");

	assert_int_equal(json_int(json_get(j, "a"), 0), 2);
	assert_int_equal(json_int(json_getn(j, "a\0b", 3), 0), 1);
	char *out = dump(j, 0);
	assert_string_equal(out, "{\"a\\u0000b\":1,\"a\":2}");
	free(out);
	json_free(j);
}

static void test_invalid(void **state)
{
	static const struct {
		const char *in;
		size_t line, col;
		const char *msg;
	} cases[] = {
		{ "", 1, 1, "premature EOF" },
		{ "   \n  ", 2, 3, "premature EOF" },
		{ "nul", 1, 4, "invalid string" },
		{ "tru e", 1, 4, "invalid" },
		{ "[1,2", 1, 5, "premature EOF" },
		{ "[1,]", 1, 5, "unallowed token" },
		{ "[,1]", 1, 3, "unallowed token" },
		{ "{\"a\" 1}", 1, 7, "colon" },
		{ "{\"a\":1,}", 1, 9, "" },
		{ "{a:1}", 1, 3, "invalid char" },
		{ "01", 1, 3, "trailing garbage" },
		{ "{} x", 1, 5, "trailing garbage" },
		{ "{}{}", 1, 4, "trailing garbage" },
		{ "\"\\x\"", 1, 3, "'\\'" },
		{ "\"abc", 1, 5, "premature EOF" },
		{ "\"a\nb\"", 1, 3, "invalid char" },
		{ "\"\xff\"", 1, 3, "UTF8" },
		{ "\"\xc3\"", 1, 4, "UTF8" },
		{ "\"\xc0\xaf\"", 1, 5, "invalid UTF-8 in string" },
		{ "\"\xe0\x80\xaf\"", 1, 6, "invalid UTF-8 in string" },
		{ "\"\xed\xa0\x80\"", 1, 6, "invalid UTF-8 in string" },
		{ "\"\xf4\x90\x80\x80\"", 1, 7, "invalid UTF-8 in string" },
		{ "{\"\xc1\x81\":1}", 1, 6, "invalid UTF-8 in key" },
		{ "1e400", 1, 6, "out of range" },
		{ "-", 1, 2, "" },
		{ "1.", 1, 3, "" },
		{ "+1", 1, 2, "invalid char" },
		{ "NaN", 1, 2, "invalid" },
		{ "[1] // c", 1, 5, "" },
		{ "{\n  \"a\": 1,\n  \"a\": 2\n}", 3, 6, "duplicate key \"a\"" },
		{ "\"\\ud800\"", 1, 8, "surrogate" },
		{ "\"\\udc00\"", 1, 7, "surrogate" },
		{ "\"\\ud800\\u0041\"", 1, 13, "surrogate" },
		{ "\"\\ud800x\"", 1, 8, "surrogate" },
		{ "\"\\ud800\\n\"", 1, 9, "surrogate" },
		{ "{\n\"a\":\n[1,\n2,\n@]}", 5, 2, "invalid char" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_error err = { 0 };
		struct json *j = json_parse(cases[i].in, strlen(cases[i].in), &err);

		if (j)
			fail_msg("case %zu (%s) parsed", i, cases[i].in);
		if (err.line != cases[i].line || err.column != cases[i].col ||
		    !strstr(err.msg, cases[i].msg))
			fail_msg("case %zu (%s): got %zu:%zu \"%s\", want %zu:%zu \"%s\"", i,
				 cases[i].in, err.line, err.column, err.msg, cases[i].line,
				 cases[i].col, cases[i].msg);
		assert_true(err.offset <= strlen(cases[i].in));
	}
	/* A NULL error pointer is fine. */
	assert_null(json_parse("[", 1, NULL));
}

static const char sample[] =
	"{\n"
	"  \"apiVersion\": \"v1\",\n"
	"  \"kind\": \"Pod\",\n"
	"  \"metadata\": {\"name\": \"web-0\", \"labels\": {\"app\": \"web\"}},\n"
	"  \"spec\": {\n"
	"    \"containers\": [{\"name\": \"c\", \"ports\": [80, 443], \"ratio\": -1.5e-3}],\n"
	"    \"hostNetwork\": false, \"x\": null, \"u\": \"\\u00e9\\ud83d\\ude00\\n\"\n"
	"  }\n"
	"}";

static void test_truncated_prefixes(void **state)
{
	size_t n = strlen(sample);
	struct json *full = parse_ok(sample);

	json_free(full);
	for (size_t len = 0; len < n; len++) {
		struct json_error err = { 0 };
		char *copy = malloc(len + 1);
		size_t line = 1, col = 1;

		assert_non_null(copy);
		memcpy(copy, sample, len);
		for (size_t i = 0; i < len; i++) {
			if (sample[i] == '\n') {
				line++;
				col = 1;
			} else {
				col++;
			}
		}
		/* Exactly-sized heap copy: ASan catches any read past the end. */
		assert_null(json_parse(copy, len, &err));
		if (err.offset > len || err.line < 1 || err.line > line || err.column < 1 ||
		    (err.line == line && err.column > col) || err.msg[0] == '\0')
			fail_msg("prefix %zu: error %zu:%zu@%zu %s (end is %zu:%zu)", len, err.line,
				 err.column, err.offset, err.msg, line, col);
		free(copy);
	}
}

static char *nested(size_t depth, bool objects)
{
	char *s = malloc(depth * 6 + 8);
	size_t n = 0;

	assert_non_null(s);
	for (size_t i = 0; i < depth; i++) {
		if (objects) {
			memcpy(s + n, "{\"a\":", 5);
			n += 5;
		} else {
			s[n++] = '[';
		}
	}
	s[n++] = '1';
	for (size_t i = 0; i < depth; i++)
		s[n++] = objects ? '}' : ']';
	s[n] = '\0';
	return s;
}

static void test_depth(void **state)
{
	for (int objects = 0; objects < 2; objects++) {
		struct json_error err = { 0 };
		char *ok = nested(JSON_MAX_DEPTH, objects);
		char *bad = nested(JSON_MAX_DEPTH + 1, objects);
		struct json *j = parse_ok(ok);
		char *out = dump(j, 0);

		assert_string_equal(out, ok);
		free(out);
		json_free(j);
		assert_null(json_parse(bad, strlen(bad), &err));
		assert_non_null(strstr(err.msg, "nesting deeper than 100"));
		assert_int_equal(err.line, 1);
		assert_int_equal(err.column, objects ? 5 * JSON_MAX_DEPTH + 2 : JSON_MAX_DEPTH + 2);
		free(ok);
		free(bad);
	}

	/* A depth bomb: a megabyte of '[' fails fast at the limit. */
	size_t n = 1 << 20;
	char *bomb = malloc(n);
	struct json_error err = { 0 };
	assert_non_null(bomb);
	memset(bomb, '[', n);
	assert_null(json_parse(bomb, n, &err));
	assert_int_equal(err.column, JSON_MAX_DEPTH + 2);
	free(bomb);
}

static void test_size_cap(void **state)
{
	struct json_error err = { 0 };
	const char *s = "[\"0123456789\",\n\"0123456789\"]";
	struct json *j;

	j = json_parse_max(s, strlen(s), strlen(s), &err);
	assert_non_null(j);
	json_free(j);
	assert_null(json_parse_max(s, strlen(s), 20, &err));
	assert_non_null(strstr(err.msg, "larger than 20 bytes"));
	assert_int_equal(err.offset, 20);
	assert_int_equal(err.line, 2);
	assert_int_equal(err.column, 6);
}

static void test_builders(void **state)
{
	struct json *o = json_new_object(), *a = json_new_array();
	char *out;

	assert_non_null(o);
	assert_non_null(a);
	assert_int_equal(json_object_set(o, "name", json_new_string("knit")), 0);
	assert_int_equal(json_object_set(o, "n", json_new_int(-5)), 0);
	assert_int_equal(json_object_set(o, "pi", json_new_double(3.25)), 0);
	assert_int_equal(json_object_set(o, "yes", json_new_bool(true)), 0);
	assert_int_equal(json_object_set(o, "none", json_new_null()), 0);
	assert_int_equal(json_object_setn(o, "raw\0x", 5, json_new_stringn("a\0b", 3)), 0);
	assert_int_equal(json_array_append(a, json_new_int(1)), 0);
	assert_int_equal(json_array_append(a, json_new_string("two")), 0);
	assert_int_equal(json_object_set(o, "list", a), 0);
	/* Replacing keeps the position. */
	assert_int_equal(json_object_set(o, "n", json_new_int(6)), 0);
	out = dump(o, 0);
	assert_string_equal(out, "{\"name\":\"knit\",\"n\":6,\"pi\":3.25,\"yes\":true,\"none\":null,"
				 "\"raw\\u0000x\":\"a\\u0000b\",\"list\":[1,\"two\"]}");
	free(out);

	assert_true(json_object_del(o, "name"));
	assert_false(json_object_del(o, "name"));
	assert_false(json_object_del(a, "x"));
	out = dump(o, 0);
	assert_string_equal(out, "{\"n\":6,\"pi\":3.25,\"yes\":true,\"none\":null,"
				 "\"raw\\u0000x\":\"a\\u0000b\",\"list\":[1,\"two\"]}");
	free(out);

	/* Misuse: ownership is still taken. */
	assert_int_equal(json_object_set(a, "k", json_new_int(1)), -EINVAL);
	assert_int_equal(json_array_append(o, json_new_int(1)), -EINVAL);
	assert_int_equal(json_object_set(o, "k", NULL), -EINVAL);
	assert_int_equal(json_array_append(a, NULL), -EINVAL);
	json_free(o);

	/* json_new_double() recognises integral values. */
	struct json *d = json_new_double(4.0);
	assert_true(json_is_int(d));
	json_free(d);
	d = json_new_double(-0.0);
	assert_false(json_is_int(d));
	json_free(d);
	d = json_new_double(9223372036854775808.0);
	assert_false(json_is_int(d));
	json_free(d);
}

static void test_large_object(void **state)
{
	struct json *o = json_new_object(), *c;
	char key[32];
	const char *k;

	assert_non_null(o);
	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(json_object_set(o, key, json_new_int(i)), 0);
	}
	assert_int_equal(json_object_len(o), 10000);
	for (int i = 0; i < 10000; i += 7) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(json_int(json_get(o, key), -1), i);
	}
	/* Delete every other key, then check both halves and the order. */
	for (int i = 0; i < 10000; i += 2) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_true(json_object_del(o, key));
	}
	assert_int_equal(json_object_len(o), 5000);
	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(json_int(json_get(o, key), -1), i % 2 ? i : -1);
	}
	json_object_at(o, 0, &k, NULL);
	assert_string_equal(k, "key-1");
	json_object_at(o, 4999, &k, NULL);
	assert_string_equal(k, "key-9999");

	/* A large parsed object still catches duplicates. */
	struct buf b = BUF_INIT(1 << 20);
	assert_int_equal(json_dump(o, &b, 0), 0);
	c = parse_ok(buf_str(&b));
	assert_true(json_equal(o, c));
	json_free(c);
	b.len--; /* drop '}' */
	assert_int_equal(buf_add_str(&b, ",\"key-5001\":0}"), 0);
	struct json_error err = { 0 };
	assert_null(json_parse((const char *)b.data, b.len, &err));
	assert_non_null(strstr(err.msg, "duplicate key \"key-5001\""));
	buf_free(&b);
	json_free(o);
}

static void test_clone_equal(void **state)
{
	struct json *a = parse_ok(sample), *b = json_clone(a), *c;

	assert_non_null(b);
	assert_true(json_equal(a, b));
	assert_true(json_equal(b, a));
	json_object_set(json_get(b, "metadata"), "name", json_new_string("web-1"));
	assert_false(json_equal(a, b));
	json_free(b);
	json_free(a);

	static const struct {
		const char *x, *y;
		bool eq;
	} cases[] = {
		{ "{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}", true },
		{ "{\"a\":1}", "{\"a\":1,\"b\":2}", false },
		{ "[1,2]", "[2,1]", false },
		{ "1", "1.0", true },
		{ "1", "1.5", false },
		{ "0", "-0", true },
		{ "\"a\"", "\"a\\u0000\"", false },
		{ "null", "false", false },
		{ "[]", "{}", false },
		{ "9223372036854775807", "9223372036854775806", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		a = parse_ok(cases[i].x);
		c = parse_ok(cases[i].y);
		if (json_equal(a, c) != cases[i].eq)
			fail_msg("equal(%s, %s) != %d", cases[i].x, cases[i].y, cases[i].eq);
		json_free(a);
		json_free(c);
	}
	assert_true(json_equal(NULL, NULL));
	assert_null(json_clone(NULL));
	a = json_new_double(NAN);
	c = json_clone(a);
	assert_true(json_equal(a, c));
	json_free(a);
	json_free(c);
}

static void test_dump_pretty(void **state)
{
	struct json *j = parse_ok("{\"a\":[1,{\"b\":null}],\"c\":\"d\",\"e\":{}}");
	char *out = dump(j, JSON_DUMP_PRETTY);

	assert_string_equal(out, "{\n"
				 "  \"a\": [\n"
				 "    1,\n"
				 "    {\n"
				 "      \"b\": null\n"
				 "    }\n"
				 "  ],\n"
				 "  \"c\": \"d\",\n"
				 "  \"e\": {}\n"
				 "}\n");
	struct json *again = parse_ok(out);
	assert_true(json_equal(j, again));
	json_free(again);
	free(out);
	json_free(j);
}

static void test_dump_errors(void **state)
{
	struct buf b = BUF_INIT(1 << 16), small = BUF_INIT(4);
	struct json *j;

	j = json_new_double(NAN);
	assert_int_equal(json_dump(j, &b, 0), -EINVAL);
	json_free(j);
	j = json_new_double(-INFINITY);
	assert_int_equal(json_dump(j, &b, 0), -EINVAL);
	json_free(j);
	j = json_new_stringn("\xff", 1);
	assert_int_equal(json_dump(j, &b, 0), -EINVAL);
	json_free(j);
	assert_int_equal(json_dump(NULL, &b, 0), -EINVAL);
	j = json_new_string("too long for the buffer");
	assert_int_equal(json_dump(j, &small, 0), -ENOSPC);
	json_free(j);

	/* Builders may nest deeper than the parser allows; dump refuses. */
	struct json *root = json_new_array(), *cur = root;
	for (int i = 0; i < JSON_MAX_DEPTH; i++) {
		struct json *next = json_new_array();
		assert_int_equal(json_array_append(cur, next), 0);
		cur = next;
	}
	buf_reset(&b);
	assert_int_equal(json_dump(root, &b, 0), -EINVAL);
	json_free(root);
	buf_free(&b);
	buf_free(&small);
}

/* RFC 7386, Appendix A, plus the ordering of new members. */
static void test_merge_patch(void **state)
{
	static const char *const cases[][3] = {
		{ "{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}" },
		{ "{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}" },
		{ "{\"a\":\"b\"}", "{\"a\":null}", "{}" },
		{ "{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}" },
		{ "{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}" },
		{ "{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}" },
		{ "{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}" },
		{ "{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}" },
		{ "[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]" },
		{ "{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]" },
		{ "{\"a\":\"foo\"}", "null", "null" },
		{ "{\"a\":\"foo\"}", "\"bar\"", "\"bar\"" },
		{ "{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}" },
		{ "[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}" },
		{ "{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}" },
		{ "{\"m\":{\"labels\":{\"x\":\"1\",\"y\":\"2\"}},\"s\":3}",
		  "{\"m\":{\"labels\":{\"x\":null,\"z\":\"3\"}}}",
		  "{\"m\":{\"labels\":{\"y\":\"2\",\"z\":\"3\"}},\"s\":3}" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json *r = json_merge_patch(parse_ok(cases[i][0]), parse_ok(cases[i][1]));
		char *out = dump(r, 0);

		if (strcmp(out, cases[i][2]) != 0)
			fail_msg("merge %s + %s = %s, want %s", cases[i][0], cases[i][1], out,
				 cases[i][2]);
		free(out);
		json_free(r);
	}
	assert_null(json_merge_patch(json_new_object(), NULL));
	struct json *r = json_merge_patch(NULL, parse_ok("{\"a\":1}"));
	assert_int_equal(json_int(json_get(r, "a"), 0), 1);
	json_free(r);
}

/* ---- streaming ---- */

struct collect {
	struct json *docs;
	int refuse_at; /* refuse the n-th document (1-based); 0 never */
};

static bool collect_cb(struct json *doc, void *arg)
{
	struct collect *c = arg;

	if (c->refuse_at && (int)json_array_len(c->docs) + 1 == c->refuse_at) {
		json_free(doc);
		return false;
	}
	assert_int_equal(json_array_append(c->docs, doc), 0);
	return true;
}

static const char watch[] =
	"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"10\"}}}\n"
	"{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"11\"},\"s\":\"\\ud83d\\ude00\"}}\n"
	"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"12\",\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}}}}\n"
	"\r\n  [1, 2.5, \"x\"] \"str\" 42 true null {}\n"
	"-0.5";

static struct json *watch_expected(void)
{
	struct json *want = json_new_array();

	/* The same documents, parsed one by one. */
	static const char *const docs[] = {
		"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"10\"}}}",
		"{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"11\"},\"s\":\"\\ud83d\\ude00\"}}",
		"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"12\",\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}}}}",
		"[1, 2.5, \"x\"]", "\"str\"", "42", "true", "null", "{}", "-0.5",
	};
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		assert_int_equal(json_array_append(want, parse_ok(docs[i])), 0);
	return want;
}

static void test_stream_whole_and_bytewise(void **state)
{
	struct json *want = watch_expected();
	size_t n = strlen(watch);

	for (int mode = 0; mode < 2; mode++) {
		struct collect c = { .docs = json_new_array() };
		struct json_stream *s = json_stream_new(4096, collect_cb, &c);
		struct json_error err = { 0 };

		assert_non_null(s);
		if (mode == 0) {
			assert_true(json_stream_feed(s, watch, n, &err));
		} else {
			for (size_t i = 0; i < n; i++) {
				assert_true(json_stream_feed(s, watch + i, 1, &err));
				/* The first document is out the moment its '}' is in. */
				if (i + 1 == (size_t)(strchr(watch, '\n') - watch))
					assert_int_equal(json_array_len(c.docs), 1);
			}
		}
		/* The trailing number needs end of input to be complete. */
		assert_int_equal(json_array_len(c.docs), 9);
		assert_true(json_stream_finish(s, &err));
		assert_true(json_equal(c.docs, want));
		assert_string_equal(json_str(json_path(json_array_at(c.docs, 2), "object", "metadata",
							"resourceVersion", NULL)), "12");
		json_stream_free(s);
		json_free(c.docs);
	}
	json_free(want);
}

static void test_stream_every_split(void **state)
{
	struct json *want = watch_expected();
	size_t n = strlen(watch);

	for (size_t a = 0; a <= n; a++) {
		for (size_t b = a; b <= n; b += 1 + (b % 5)) {
			struct collect c = { .docs = json_new_array() };
			struct json_stream *s = json_stream_new(1024, collect_cb, &c);
			struct json_error err = { 0 };

			assert_true(json_stream_feed(s, watch, a, &err));
			assert_true(json_stream_feed(s, watch + a, b - a, &err));
			assert_true(json_stream_feed(s, watch + b, n - b, &err));
			assert_true(json_stream_finish(s, &err));
			if (!json_equal(c.docs, want))
				fail_msg("split at %zu/%zu differs", a, b);
			json_stream_free(s);
			json_free(c.docs);
		}
	}
	json_free(want);
}

static void test_stream_errors(void **state)
{
	static const struct {
		const char *in;
		bool at_finish; /* error only shows at finish */
		size_t line, col, docs;
		const char *msg;
	} cases[] = {
		{ "{\"a\":1}\n{\"b\":2}\nxyz\n", false, 3, 2, 2, "invalid" },
		{ "{\"a\":1}\n{\"b\":2} ,{}\n", false, 2, 10, 2, "" },
		{ "{\"a\":1}\n{\"b\":", true, 2, 6, 1, "premature EOF" },
		{ "{\"a\":1}\n\"abc", true, 2, 5, 1, "premature EOF" },
		{ "[1]\n[2]]\n", false, 2, 5, 2, "unallowed token" },
		{ "{\"a\":1}\n{\"a\":1,\"a\":2}", false, 2, 11, 1, "duplicate key" },
		{ "{\"a\":1}\n\"\\udc00\"", false, 2, 7, 1, "surrogate" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int bytewise = 0; bytewise < 2; bytewise++) {
			struct collect c = { .docs = json_new_array() };
			struct json_stream *s = json_stream_new(1024, collect_cb, &c);
			struct json_error err = { 0 }, again = { 0 };
			size_t n = strlen(cases[i].in);
			bool ok = true;

			if (bytewise) {
				for (size_t k = 0; k < n && ok; k++)
					ok = json_stream_feed(s, cases[i].in + k, 1, &err);
			} else {
				ok = json_stream_feed(s, cases[i].in, n, &err);
			}
			if (ok != cases[i].at_finish)
				fail_msg("case %zu: feed returned %d", i, ok);
			if (ok)
				if (json_stream_finish(s, &err))
					fail_msg("case %zu/%d: finish succeeded", i, bytewise);
			if (err.line != cases[i].line || err.column != cases[i].col ||
			    !strstr(err.msg, cases[i].msg) ||
			    json_array_len(c.docs) != cases[i].docs)
				fail_msg("case %zu/%d: %zu:%zu \"%s\" after %zu docs, want %zu:%zu \"%s\" %zu",
					 i, bytewise, err.line, err.column, err.msg,
					 json_array_len(c.docs), cases[i].line, cases[i].col,
					 cases[i].msg, cases[i].docs);
			/* Refuses everything afterwards, with the same error. */
			assert_false(json_stream_feed(s, "{}", 2, &again));
			assert_string_equal(again.msg, err.msg);
			assert_int_equal(again.offset, err.offset);
			assert_false(json_stream_finish(s, &again));
			json_stream_free(s);
			json_free(c.docs);
		}
	}
}

static void test_stream_doc_cap(void **state)
{
	struct collect c = { .docs = json_new_array() };
	struct json_stream *s = json_stream_new(16, collect_cb, &c);
	struct json_error err = { 0 };

	/* Exactly 16 bytes passes; whitespace between documents is free. */
	assert_true(json_stream_feed(s, "{\"a\":\"12345678\"}", 16, &err));
	assert_true(json_stream_feed(s, "\n\n          \n", 13, &err));
	assert_true(json_stream_feed(s, "[\"123456789012\"]", 16, &err));
	assert_int_equal(json_array_len(c.docs), 2);
	/* An endless string is cut off at the cap, not buffered forever. */
	assert_true(json_stream_feed(s, "\n\"", 2, &err));
	for (int i = 0; i < 14; i++)
		assert_true(json_stream_feed(s, "x", 1, &err));
	assert_false(json_stream_feed(s, "xxxxxxxxxxxxxxxxxxxxxxxx", 24, &err));
	assert_non_null(strstr(err.msg, "larger than 16 bytes"));
	assert_int_equal(err.line, 5);
	assert_int_equal(err.column, 17);
	assert_int_equal(err.offset, 16 + 13 + 16 + 1 + 16);
	json_stream_free(s);
	json_free(c.docs);

	/* Several documents in one chunk, the last one too big. */
	c.docs = json_new_array();
	s = json_stream_new(8, collect_cb, &c);
	assert_false(json_stream_feed(s, "[1] [2]\n[3,4,5,6,7]", 19, &err));
	assert_int_equal(json_array_len(c.docs), 2);
	assert_int_equal(err.line, 2);
	assert_int_equal(err.column, 9);
	json_stream_free(s);
	json_free(c.docs);
}

static void test_stream_misc(void **state)
{
	struct collect c = { .docs = json_new_array(), .refuse_at = 2 };
	struct json_stream *s = json_stream_new(1024, collect_cb, &c);
	struct json_error err = { 0 };

	assert_false(json_stream_feed(s, "{}\n{}\n{}", 8, &err));
	assert_non_null(strstr(err.msg, "stopped"));
	assert_int_equal(json_array_len(c.docs), 1);
	json_stream_free(s);
	json_free(c.docs);

	/* Empty and whitespace-only streams are fine; feeding after finish is not. */
	c = (struct collect){ .docs = json_new_array() };
	s = json_stream_new(1024, collect_cb, &c);
	assert_true(json_stream_finish(s, &err));
	assert_false(json_stream_feed(s, "{}", 2, &err));
	json_stream_free(s);
	s = json_stream_new(1024, collect_cb, &c);
	assert_true(json_stream_feed(s, " \n\t ", 4, &err));
	assert_true(json_stream_feed(s, NULL, 0, &err));
	assert_true(json_stream_finish(s, &err));
	assert_true(json_stream_finish(s, &err));
	assert_int_equal(json_array_len(c.docs), 0);
	json_stream_free(s);
	json_stream_free(NULL);

	/* Depth is bounded per document too. */
	char *deep = nested(JSON_MAX_DEPTH + 1, false);
	s = json_stream_new(1 << 20, collect_cb, &c);
	assert_true(json_stream_feed(s, "[]\n", 3, &err));
	assert_false(json_stream_feed(s, deep, strlen(deep), &err));
	assert_non_null(strstr(err.msg, "nesting"));
	assert_int_equal(err.line, 2);
	assert_int_equal(err.column, JSON_MAX_DEPTH + 2);
	json_stream_free(s);
	free(deep);
	json_free(c.docs);
}

static void test_put(void **state)
{
	struct json *o = json_new_object();
	struct buf out = BUF_INIT(4096);
	int err = 0;

	(void)state;
	assert_int_equal(json_put_str(o, "a", "x", &err), 0);
	assert_int_equal(json_put_str(o, "skip", NULL, &err), 0);
	assert_int_equal(json_put_int(o, "n", -7, &err), 0);
	assert_int_equal(json_put_bool(o, "b", true, &err), 0);
	assert_int_equal(json_put(o, "arr", json_new_array(), &err), 0);
	assert_int_equal(json_dump(o, &out, 0), 0);
	assert_int_equal(out.len, strlen("{\"a\":\"x\",\"n\":-7,\"b\":true,\"arr\":[]}"));
	assert_memory_equal(out.data, "{\"a\":\"x\",\"n\":-7,\"b\":true,\"arr\":[]}", out.len);
	/* A failed builder sticks as -ENOMEM; later puts free their value. */
	assert_int_equal(json_put(o, "bad", NULL, &err), -ENOMEM);
	assert_int_equal(json_put_str(o, "c", "y", &err), -ENOMEM);
	assert_int_equal(json_put(o, "d", json_new_array(), &err), -ENOMEM);
	assert_null(json_get(o, "c"));
	assert_null(json_get(o, "d"));
	err = 0;
	assert_int_equal(json_put_int(NULL, "n", 1, &err), -ENOMEM);
	buf_free(&out);
	json_free(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_kinds),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_accessors),
		cmocka_unit_test(test_nul_keys),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_truncated_prefixes),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_size_cap),
		cmocka_unit_test(test_builders),
		cmocka_unit_test(test_large_object),
		cmocka_unit_test(test_clone_equal),
		cmocka_unit_test(test_dump_pretty),
		cmocka_unit_test(test_dump_errors),
		cmocka_unit_test(test_merge_patch),
		cmocka_unit_test(test_stream_whole_and_bytewise),
		cmocka_unit_test(test_stream_every_split),
		cmocka_unit_test(test_stream_errors),
		cmocka_unit_test(test_stream_doc_cap),
		cmocka_unit_test(test_stream_misc),
		cmocka_unit_test(test_put),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
