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
#include "hujson.h"
#include "json.h"

static const char policy[] =
	"// Example/default ACLs for unrestricted connections.\n"
	"{\n"
	"\t// Declare static groups of users beyond those in the identity service.\n"
	"\t\"groups\": {\n"
	"\t\t\"group:example\": [\"user1@example.com\", \"user2@example.com\",],\n"
	"\t\t\"group:ops\": [\n"
	"\t\t\t\"alice@example.com\", // on call\n"
	"\t\t\t\"bob@example.com\",   /* backup */\n"
	"\t\t],\n"
	"\t},\n"
	"\n"
	"\t/* Define the tags which can be applied to devices\n"
	"\t   and by which users. */\n"
	"\t\"tagOwners\": {\n"
	"\t\t\"tag:k8s\":      [\"group:ops\"],\n"
	"\t\t\"tag:k8s-node\": [\"tag:k8s\", \"autogroup:admin\",],\n"
	"\t},\n"
	"\n"
	"\t\"hosts\": {\n"
	"\t\t\"example-host-1\": \"100.100.100.100\",\n"
	"\t\t\"url\": \"https://example.com/a//b\", // '//' in a string is not a comment\n"
	"\t\t\"glob\": \"/*not a comment*/\",\n"
	"\t\t\"quote\": \"say \\\"hi\\\" // still text\",\n"
	"\t\t\"backslash\": \"c:\\\\\", // the string ended at the quote\n"
	"\t},\n"
	"\n"
	"\t\"acls\": [\n"
	"\t\t// Allow all connections.\n"
	"\t\t{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]},\n"
	"\t\t{\n"
	"\t\t\t\"action\": \"accept\",\n"
	"\t\t\t\"src\":    [\"group:ops\", /* and */ \"tag:k8s\",],\n"
	"\t\t\t\"dst\":    [\"tag:k8s-node:22,443\"] /* trailing comma next */ ,\n"
	"\t\t},\n"
	"\t],\n"
	"\n"
	"\t\"ssh\": [\n"
	"\t\t{\n"
	"\t\t\t\"action\": \"check\",\n"
	"\t\t\t\"src\":    [\"autogroup:member\"],\n"
	"\t\t\t\"dst\":    [\"autogroup:self\"],\n"
	"\t\t\t\"users\":  [\"autogroup:nonroot\", \"root\"],\n"
	"\t\t},\n"
	"\t],\n"
	"\t\"tests\": [\n"
	"\t\t{\"src\": \"alice@example.com\", \"accept\": [\"tag:k8s-node:22\"], \"deny\": [],},\n"
	"\t], // the end\n"
	"}\n"
	"/* trailing block */ // and line";

static const char policy_plain[] =
	"{\"groups\":{\"group:example\":[\"user1@example.com\",\"user2@example.com\"],"
	"\"group:ops\":[\"alice@example.com\",\"bob@example.com\"]},"
	"\"tagOwners\":{\"tag:k8s\":[\"group:ops\"],\"tag:k8s-node\":[\"tag:k8s\",\"autogroup:admin\"]},"
	"\"hosts\":{\"example-host-1\":\"100.100.100.100\",\"url\":\"https://example.com/a//b\","
	"\"glob\":\"/*not a comment*/\",\"quote\":\"say \\\"hi\\\" // still text\",\"backslash\":\"c:\\\\\"},"
	"\"acls\":[{\"action\":\"accept\",\"src\":[\"*\"],\"dst\":[\"*:*\"]},"
	"{\"action\":\"accept\",\"src\":[\"group:ops\",\"tag:k8s\"],\"dst\":[\"tag:k8s-node:22,443\"]}],"
	"\"ssh\":[{\"action\":\"check\",\"src\":[\"autogroup:member\"],\"dst\":[\"autogroup:self\"],"
	"\"users\":[\"autogroup:nonroot\",\"root\"]}],"
	"\"tests\":[{\"src\":\"alice@example.com\",\"accept\":[\"tag:k8s-node:22\"],\"deny\":[]}]}";

static void test_policy(void **state)
{
	struct json_error err = { 0 };
	struct json *hu = hujson_parse(policy, strlen(policy), &err), *plain;

	if (!hu)
		fail_msg("policy: %zu:%zu %s", err.line, err.column, err.msg);
	plain = json_parse(policy_plain, strlen(policy_plain), &err);
	assert_non_null(plain);
	assert_true(json_equal(hu, plain));
	assert_string_equal(json_str(json_path(hu, "hosts", "url", NULL)), "https://example.com/a//b");
	json_free(plain);
	json_free(hu);

	/* Plain JSON is huJSON. */
	hu = hujson_parse(policy_plain, strlen(policy_plain), &err);
	assert_non_null(hu);
	json_free(hu);
}

static void test_standardize(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "", "" },
		{ "[1,2,]", "[1,2 ]" },
		{ "{\"a\":1,}", "{\"a\":1 }" },
		{ "[1, // c\n]", "[1      \n]" },
		{ "[1 /* c */ , ]", "[1           ]" },
		{ "[1, /* a\nb */ ]", "[1      \n     ]" },
		{ "[\"a\",]", "[\"a\" ]" },
		{ "[[],{},]", "[[],{} ]" },
		{ "[true,null,]", "[true,null ]" },
		{ "[,]", "[,]" },
		{ "[1,,]", "[1,,]" },
		{ "{\"a\":,}", "{\"a\":,}" },
		{ "[1,\n2]", "[1,\n2]" },
		{ "\"//\"", "\"//\"" },
		{ "\"/*\" // x", "\"/*\"     " },
		{ "\"\\\"//\"", "\"\\\"//\"" },
		{ "\"\\\\\"//x", "\"\\\\\"   " },
		{ "// only\r\n1", "        \n1" },
		{ "/**/1/***/", "    1     " },
		{ "1 / 2", "1 / 2" },
		{ "\"unterminated //", "\"unterminated //" },
		{ "\"ends in backslash\\", "\"ends in backslash\\" },
		{ "[1,]//", "[1 ]  " },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b = BUF_INIT(1024);
		struct json_error err = { 0 };

		assert_int_equal(buf_add_str(&b, ">"), 0);
		if (!hujson_standardize(cases[i].in, strlen(cases[i].in), &b, &err))
			fail_msg("case %zu failed: %s", i, err.msg);
		assert_int_equal(b.len, 1 + strlen(cases[i].in));
		if (strcmp(buf_str(&b) + 1, cases[i].out) != 0)
			fail_msg("case %zu: <<%s>> became <<%s>>, want <<%s>>", i, cases[i].in,
				 buf_str(&b) + 1, cases[i].out);
		buf_free(&b);
	}
}

static void test_errors(void **state)
{
	static const struct {
		const char *in;
		size_t line, col;
		const char *msg;
	} cases[] = {
		{ "[1, /* never closed\n\n", 1, 5, "unterminated block comment" },
		{ "{\n  // c\n  \"a\": 1, /* x */\n  /* y\n */ \"b\" 2\n}", 5, 10, "colon" },
		{ "// header\n/* multi\nline */ [1,\n  2,, ]", 4, 6, "unallowed token" },
		{ "[,]", 1, 3, "unallowed token" },
		{ "/* c */ {\"a\":1,} x", 1, 19, "trailing garbage" },
		{ "[1 / 2]", 1, 4, "comment" },
		{ "/*/", 1, 1, "unterminated block comment" },
		{ "// only a comment", 1, 18, "premature EOF" },
		{ "{\"a\":1, // one\n \"a\":2}", 2, 2, "duplicate key \"a\"" },
		{ "{\"k\": \"v\" // comment\n \"x\": 1}", 2, 4, "expect ',' or '}'" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_error err = { 0 };
		struct json *j = hujson_parse(cases[i].in, strlen(cases[i].in), &err);

		if (j)
			fail_msg("case %zu parsed", i);
		if (err.line != cases[i].line || err.column != cases[i].col ||
		    !strstr(err.msg, cases[i].msg))
			fail_msg("case %zu: got %zu:%zu \"%s\", want %zu:%zu \"%s\"", i, err.line,
				 err.column, err.msg, cases[i].line, cases[i].col, cases[i].msg);
	}
}

static void test_policy_error_position(void **state)
{
	/* Break the policy deep inside: the error points into the original. */
	char *bad = strdup(policy);
	char *at = strstr(bad, "\"check\"");
	struct json_error err = { 0 };
	size_t line = 1, col = 1;

	assert_non_null(at);
	at[0] = '\'';
	for (const char *p = bad; p < at; p++) {
		if (*p == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	assert_null(hujson_parse(bad, strlen(bad), &err));
	assert_int_equal(err.line, line);
	assert_true(err.column >= col && err.column <= col + 1);
	free(bad);

	/* Every prefix of the policy short of its closing brace fails cleanly. */
	for (size_t n = 0; n < (size_t)(strrchr(policy, '}') - policy); n++) {
		char *copy = malloc(n ? n : 1);

		assert_non_null(copy);
		memcpy(copy, policy, n);
		assert_null(hujson_parse(copy, n, &err));
		assert_true(err.line >= 1 && err.column >= 1 && err.offset <= n);
		free(copy);
	}
}

static void test_buffer_cap(void **state)
{
	struct buf b = BUF_INIT(4);
	struct json_error err = { 0 };

	assert_int_equal(buf_add_str(&b, "ab"), 0);
	assert_false(hujson_standardize("[1,2,3]", 7, &b, &err));
	assert_non_null(strstr(err.msg, "does not fit"));
	buf_free(&b);

	b = (struct buf)BUF_INIT(64);
	assert_int_equal(buf_add_str(&b, "ab"), 0);
	assert_false(hujson_standardize("[1, /* open", 11, &b, &err));
	assert_string_equal(buf_str(&b), "ab");
	assert_int_equal(b.len, 2);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_standardize),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_policy_error_position),
		cmocka_unit_test(test_buffer_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
