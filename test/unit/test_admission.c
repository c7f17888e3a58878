/* admission: AuthKey user defaulting and immutability, Policy checks, and
 * the AdmissionReview shapes the API server sends and expects. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "admission.h"
#include "buf.h"
#include "json.h"

static struct json *review(const char *op, const char *user, const char *groups, const char *obj, const char *old)
{
	char text[4096];
	struct json_error je;
	struct json *j;

	snprintf(text, sizeof(text),
		 "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{"
		 "\"uid\":\"u-1\",\"kind\":{\"group\":\"knit.dev\",\"version\":\"v1alpha1\",\"kind\":\"AuthKey\"},"
		 "\"operation\":\"%s\",\"userInfo\":{\"username\":\"%s\",\"groups\":%s},"
		 "\"object\":%s,\"oldObject\":%s}}",
		 op, user, groups, obj, old);
	j = json_parse(text, strlen(text), &je);
	assert_non_null(j);
	return j;
}

struct ak_case {
	const char *name, *op, *user, *groups, *obj, *old;
	int want; /* 0 or -EPERM */
	const char *patch; /* expected JSON Patch text, or NULL */
	const char *msg_has;
};

static const struct ak_case ak_cases[] = {
	{ "create fills the creator", "CREATE", "alice@example.com", "[\"system:authenticated\"]",
	  "{\"spec\":{\"tailnet\":\"default\"}}", "null", 0,
	  "[{\"op\":\"add\",\"path\":\"/spec/user\",\"value\":\"alice@example.com\"}]", NULL },
	{ "create without spec adds one", "CREATE", "bob", "[]", "{\"metadata\":{\"name\":\"k\"}}", "null", 0,
	  "[{\"op\":\"add\",\"path\":\"/spec\",\"value\":{\"user\":\"bob\"}}]", NULL },
	{ "empty user counts as unset", "CREATE", "carol", "[]", "{\"spec\":{\"user\":\"\"}}", "null", 0,
	  "[{\"op\":\"add\",\"path\":\"/spec/user\",\"value\":\"carol\"}]", NULL },
	{ "naming yourself is fine", "CREATE", "alice", "[]", "{\"spec\":{\"user\":\"alice\"}}", "null", 0, NULL, NULL },
	{ "naming another is refused", "CREATE", "mallory", "[\"system:authenticated\"]",
	  "{\"spec\":{\"user\":\"alice\"}}", "null", -EPERM, NULL, "is not you (\"mallory\")" },
	{ "an administrator may name another", "CREATE", "admin", "[\"system:masters\",\"system:authenticated\"]",
	  "{\"spec\":{\"user\":\"alice\"}}", "null", 0, NULL, NULL },
	{ "a control character in a user", "CREATE", "admin", "[\"system:masters\"]",
	  "{\"spec\":{\"user\":\"al\\nice\"}}", "null", -EPERM, NULL, "printable" },
	{ "no user at all", "CREATE", "", "[]", "{\"spec\":{}}", "null", -EPERM, NULL, "set spec.user" },
	{ "update keeping the user", "UPDATE", "bob", "[]", "{\"spec\":{\"user\":\"alice\"}}",
	  "{\"spec\":{\"user\":\"alice\"}}", 0, NULL, NULL },
	{ "update clearing the user gets it back", "UPDATE", "bob", "[]", "{\"spec\":{\"reusable\":true}}",
	  "{\"spec\":{\"user\":\"alice\"}}", 0,
	  "[{\"op\":\"add\",\"path\":\"/spec/user\",\"value\":\"alice\"}]", NULL },
	{ "update changing the user is refused", "UPDATE", "admin", "[\"system:masters\"]",
	  "{\"spec\":{\"user\":\"bob\"}}", "{\"spec\":{\"user\":\"alice\"}}", -EPERM, NULL, "immutable" },
	{ "delete is not ours to judge", "DELETE", "bob", "[]", "null", "{\"spec\":{\"user\":\"alice\"}}", 0, NULL, NULL },
};

static void test_authkey(void **state)
{
	for (size_t i = 0; i < sizeof(ak_cases) / sizeof(ak_cases[0]); i++) {
		const struct ak_case *c = &ak_cases[i];
		struct json *rv = review(c->op, c->user, c->groups, c->obj, c->old);
		struct admission_request r;
		char err[256], msg[512] = "", *patch = NULL;
		int got;

		assert_true(admission_request_parse(rv, &r, err, sizeof(err)));
		got = admission_authkey(&r, &patch, msg, sizeof(msg));
		if (got != c->want)
			fail_msg("%s: got %d (%s), want %d", c->name, got, msg, c->want);
		if (c->patch ? !patch || strcmp(patch, c->patch) : patch != NULL)
			fail_msg("%s: patch %s, want %s", c->name, patch ? patch : "(none)", c->patch ? c->patch : "(none)");
		if (c->msg_has && !strstr(msg, c->msg_has))
			fail_msg("%s: message \"%s\" lacks \"%s\"", c->name, msg, c->msg_has);
		free(patch);
		json_free(rv);
	}
}

static void test_parse_refuses(void **state)
{
	const char *bad[] = {
		"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"request\":{\"uid\":\"x\",\"kind\":{\"kind\":\"A\"},\"operation\":\"CREATE\"}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\"}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"kind\":{\"kind\":\"A\"},\"operation\":\"CREATE\"}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"\",\"kind\":{\"kind\":\"A\"},\"operation\":\"CREATE\"}}",
		"[]",
	};
	struct admission_request r;
	struct json_error je;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct json *j = json_parse(bad[i], strlen(bad[i]), &je);
		assert_non_null(j);
		assert_false(admission_request_parse(j, &r, err, sizeof(err)));
		assert_true(err[0] != '\0');
		json_free(j);
	}
}

static void test_response(void **state)
{
	struct json *j = admission_response("u-9", true, 0, NULL, "[{\"op\":\"add\"}]");
	unsigned char dec[64];
	size_t n = 0;
	const char *b64;

	assert_non_null(j);
	assert_string_equal(json_str(json_get(j, "apiVersion")), "admission.k8s.io/v1");
	assert_string_equal(json_str(json_get(j, "kind")), "AdmissionReview");
	assert_string_equal(json_str(json_path(j, "response", "uid", NULL)), "u-9");
	assert_true(json_bool(json_path(j, "response", "allowed", NULL), false));
	assert_string_equal(json_str(json_path(j, "response", "patchType", NULL)), "JSONPatch");
	b64 = json_str(json_path(j, "response", "patch", NULL));
	assert_int_equal(sodium_base642bin(dec, sizeof(dec), b64, strlen(b64), NULL, &n, NULL,
					   sodium_base64_VARIANT_ORIGINAL), 0);
	assert_memory_equal(dec, "[{\"op\":\"add\"}]", n);
	json_free(j);
	j = admission_response("u-10", false, 403, "no", NULL);
	assert_false(json_bool(json_path(j, "response", "allowed", NULL), true));
	assert_int_equal(json_int(json_path(j, "response", "status", "code", NULL), 0), 403);
	assert_string_equal(json_str(json_path(j, "response", "status", "message", NULL)), "no");
	assert_null(json_path(j, "response", "patch", NULL));
	json_free(j);
}

/* A stand-in for lib/policy's check: valid when the text holds "acls". */
static bool check_has_acls(void *arg, const char *policy, size_t len, char *err, size_t errlen)
{
	int *calls = arg;

	(*calls)++;
	if (strstr(policy, "acls"))
		return true;
	snprintf(err, errlen, "test 1: alice -> tag:db:5432 should be accepted but is denied");
	return false;
}

static void test_policy(void **state)
{
	struct admission_request r;
	char err[128], msg[512];
	int calls = 0;
	struct json *ok = review("CREATE", "a", "[]", "{\"spec\":{\"policy\":\"{\\\"acls\\\":[]}\"}}", "null");
	struct json *bad = review("UPDATE", "a", "[]", "{\"spec\":{\"policy\":\"{}\"}}", "null");
	struct json *notext = review("CREATE", "a", "[]", "{\"spec\":{\"policy\":{}}}", "null");

	assert_true(admission_request_parse(ok, &r, err, sizeof(err)));
	assert_int_equal(admission_policy(&r, check_has_acls, &calls, msg, sizeof(msg)), 0);
	assert_true(admission_request_parse(bad, &r, err, sizeof(err)));
	assert_int_equal(admission_policy(&r, check_has_acls, &calls, msg, sizeof(msg)), -EPERM);
	assert_non_null(strstr(msg, "policy refused: test 1: alice -> tag:db:5432"));
	assert_true(admission_request_parse(notext, &r, err, sizeof(err)));
	assert_int_equal(admission_policy(&r, check_has_acls, &calls, msg, sizeof(msg)), -EPERM);
	assert_non_null(strstr(msg, "as a string"));
	assert_int_equal(calls, 2);
	json_free(ok);
	json_free(bad);
	json_free(notext);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_authkey),
		cmocka_unit_test(test_parse_refuses),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_policy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
