/* nodebind: a TokenReview answer and the Pod it names → the Node a knitd
 * is bound to, or the reason it is not; and whether a bound node Device
 * vouches for a pod. The JSON is the API server's (1.20) shape. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "json.h"
#include "nodebind.h"

#define USER "system:serviceaccount:knit-system:knitd"
#define EXTRA                                                                                                   \
	"\"extra\":{\"authentication.kubernetes.io/pod-name\":[\"knitd-x7k2p\"],"                               \
	"\"authentication.kubernetes.io/pod-uid\":[\"3b0c1c9e-1111-4a5b-9c1d-aaaaaaaaaaaa\"]}"

static struct json *parse(const char *text)
{
	struct json_error je;
	struct json *j = json_parse(text, strlen(text), &je);

	if (!j)
		fail_msg("test JSON does not parse: %s", text);
	return j;
}

struct review_case {
	const char *name, *status, *reason;
};

static const struct review_case reviews[] = {
	{ "ok",
	  "{\"authenticated\":true,\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":\"" USER "\","
	  "\"uid\":\"u\",\"groups\":[\"system:serviceaccounts\"]," EXTRA "}}",
	  NULL },
	{ "ok among audiences",
	  "{\"authenticated\":true,\"audiences\":[\"x\",\"knit.dev/node\"],\"user\":{\"username\":\"" USER "\"," EXTRA "}}",
	  NULL },
	{ "not authenticated", "{\"authenticated\":false,\"error\":\"invalid bearer token\"}", "Unauthenticated" },
	{ "empty status", "{}", "Unauthenticated" },
	{ "wrong audience (the API server's refusal)",
	  "{\"authenticated\":false,\"error\":\"[invalid bearer token, token audiences [\\\"https://kubernetes.default.svc\\\"] "
	  "is invalid for the target audiences [\\\"knit.dev/node\\\"]]\"}",
	  "WrongAudience" },
	{ "authenticated for another audience",
	  "{\"authenticated\":true,\"audiences\":[\"https://kubernetes.default.svc\"],\"user\":{\"username\":\"" USER "\"," EXTRA "}}",
	  "WrongAudience" },
	{ "no audiences", "{\"authenticated\":true,\"user\":{\"username\":\"" USER "\"," EXTRA "}}", "WrongAudience" },
	{ "another ServiceAccount",
	  "{\"authenticated\":true,\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":"
	  "\"system:serviceaccount:knit-system:default\"," EXTRA "}}",
	  "WrongServiceAccount" },
	{ "another namespace's knitd",
	  "{\"authenticated\":true,\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":"
	  "\"system:serviceaccount:evil:knitd\"," EXTRA "}}",
	  "WrongServiceAccount" },
	{ "a user, not a ServiceAccount",
	  "{\"authenticated\":true,\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":\"alice\"}}",
	  "WrongServiceAccount" },
	{ "no pod binding (a Secret-based token)",
	  "{\"authenticated\":true,\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":\"" USER "\"}}",
	  "NoPodBinding" },
	{ "pod name without uid",
	  "{\"authenticated\":true,\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":\"" USER "\","
	  "\"extra\":{\"authentication.kubernetes.io/pod-name\":[\"knitd-x7k2p\"]}}}",
	  "NoPodBinding" },
	{ "two pod names",
	  "{\"authenticated\":true,\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":\"" USER "\","
	  "\"extra\":{\"authentication.kubernetes.io/pod-name\":[\"a\",\"b\"],"
	  "\"authentication.kubernetes.io/pod-uid\":[\"u\"]}}}",
	  "NoPodBinding" },
	{ "pod name not a string",
	  "{\"authenticated\":true,\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":\"" USER "\","
	  "\"extra\":{\"authentication.kubernetes.io/pod-name\":[7],\"authentication.kubernetes.io/pod-uid\":[\"u\"]}}}",
	  "NoPodBinding" },
	{ "authenticated is a string",
	  "{\"authenticated\":\"true\",\"audiences\":[\"knit.dev/node\"],\"user\":{\"username\":\"" USER "\"," EXTRA "}}",
	  "Unauthenticated" },
};

static void test_review(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(reviews) / sizeof(reviews[0]); i++) {
		const struct review_case *t = &reviews[i];
		char text[2048], why[400] = "";
		struct nodebind_pod pod;
		struct json *j;
		const char *got;

		snprintf(text, sizeof(text), "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\","
			 "\"status\":%s}", t->status);
		j = parse(text);
		got = nodebind_review_check(j, USER, &pod, why, sizeof(why));
		if (!t->reason) {
			if (got)
				fail_msg("%s: refused %s: %s", t->name, got, why);
			assert_string_equal(pod.name, "knitd-x7k2p");
			assert_string_equal(pod.uid, "3b0c1c9e-1111-4a5b-9c1d-aaaaaaaaaaaa");
		} else {
			if (!got || strcmp(got, t->reason))
				fail_msg("%s: want %s, got %s (%s)", t->name, t->reason, got ? got : "ok", why);
			assert_true(why[0]);
			assert_string_equal(pod.name, "");
		}
		json_free(j);
	}
}

#define DS_OWNER "[{\"apiVersion\":\"apps/v1\",\"kind\":\"DaemonSet\",\"name\":\"knitd\",\"uid\":\"d\",\"controller\":true}]"
#define UID "3b0c1c9e-1111-4a5b-9c1d-aaaaaaaaaaaa"

struct pod_case {
	const char *name, *pod, *reason, *node;
};

static const struct pod_case pods[] = {
	{ "running DaemonSet pod",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"ownerReferences\":" DS_OWNER "},"
	  "\"spec\":{\"nodeName\":\"node-a\"},\"status\":{\"phase\":\"Running\"}}",
	  NULL, "node-a" },
	{ "pending but scheduled (knitd's container starting)",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"ownerReferences\":" DS_OWNER "},"
	  "\"spec\":{\"nodeName\":\"node-a.example.com\"},\"status\":{\"phase\":\"Pending\"}}",
	  NULL, "node-a.example.com" },
	{ "gone", NULL, "PodNotFound", NULL },
	{ "recreated under the name",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"other\",\"ownerReferences\":" DS_OWNER "},"
	  "\"spec\":{\"nodeName\":\"node-a\"}}",
	  "PodUIDMismatch", NULL },
	{ "no uid", "{\"metadata\":{\"name\":\"knitd-x7k2p\"},\"spec\":{\"nodeName\":\"node-a\"}}", "PodUIDMismatch", NULL },
	{ "finished",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"ownerReferences\":" DS_OWNER "},"
	  "\"spec\":{\"nodeName\":\"node-a\"},\"status\":{\"phase\":\"Failed\"}}",
	  "PodNotRunning", NULL },
	{ "being deleted",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"deletionTimestamp\":\"2026-12-03T10:00:00Z\","
	  "\"ownerReferences\":" DS_OWNER "},\"spec\":{\"nodeName\":\"node-a\"}}",
	  "PodNotRunning", NULL },
	{ "a bare pod",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\"},\"spec\":{\"nodeName\":\"node-a\"}}",
	  "NotDaemonSetPod", NULL },
	{ "a ReplicaSet's",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"ownerReferences\":[{\"apiVersion\":\"apps/v1\","
	  "\"kind\":\"ReplicaSet\",\"name\":\"r\",\"uid\":\"r\",\"controller\":true}]},\"spec\":{\"nodeName\":\"node-a\"}}",
	  "NotDaemonSetPod", NULL },
	{ "a DaemonSet owner that is not the controller",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"ownerReferences\":[{\"apiVersion\":\"apps/v1\","
	  "\"kind\":\"DaemonSet\",\"name\":\"r\",\"uid\":\"r\"}]},\"spec\":{\"nodeName\":\"node-a\"}}",
	  "NotDaemonSetPod", NULL },
	{ "a DaemonSet kind of another group",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"ownerReferences\":[{\"apiVersion\":\"evil.io/v1\","
	  "\"kind\":\"DaemonSet\",\"name\":\"r\",\"uid\":\"r\",\"controller\":true}]},\"spec\":{\"nodeName\":\"node-a\"}}",
	  "NotDaemonSetPod", NULL },
	{ "not scheduled",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"ownerReferences\":" DS_OWNER "},\"spec\":{}}",
	  "PodNotScheduled", NULL },
	{ "empty nodeName",
	  "{\"metadata\":{\"name\":\"knitd-x7k2p\",\"uid\":\"" UID "\",\"ownerReferences\":" DS_OWNER "},"
	  "\"spec\":{\"nodeName\":\"\"}}",
	  "PodNotScheduled", NULL },
};

static void test_pod(void **state)
{
	struct nodebind_pod want = { .name = "knitd-x7k2p", .uid = UID };

	(void)state;
	for (size_t i = 0; i < sizeof(pods) / sizeof(pods[0]); i++) {
		const struct pod_case *t = &pods[i];
		struct json *j = t->pod ? parse(t->pod) : NULL;
		char node[254] = "x", why[400] = "";
		const char *got = nodebind_pod_check(j, &want, node, sizeof(node), why, sizeof(why));

		if (!t->reason) {
			if (got)
				fail_msg("%s: refused %s: %s", t->name, got, why);
			assert_string_equal(node, t->node);
		} else {
			if (!got || strcmp(got, t->reason))
				fail_msg("%s: want %s, got %s (%s)", t->name, t->reason, got ? got : "ok", why);
			assert_string_equal(node, "");
			assert_true(why[0]);
		}
		json_free(j);
	}
}

static void test_vouches(void **state)
{
	struct json *bound = parse("{\"metadata\":{\"name\":\"node-a-1f2e3d\"},\"spec\":{\"hostname\":\"node-a\","
				   "\"node\":\"node-a\"}}");
	struct json *unbound = parse("{\"metadata\":{\"name\":\"node-a-1f2e3d\"},\"spec\":{\"hostname\":\"node-a\"}}");
	struct json *on_a = parse("{\"metadata\":{\"namespace\":\"ci\",\"name\":\"p\"},\"spec\":{\"nodeName\":\"node-a\"}}");
	struct json *on_b = parse("{\"metadata\":{\"namespace\":\"ci\",\"name\":\"p\"},\"spec\":{\"nodeName\":\"node-b\"}}");
	struct json *nowhere = parse("{\"metadata\":{\"namespace\":\"ci\",\"name\":\"p\"},\"spec\":{}}");
	/* The hostname is what the caller chose: only spec.node counts. */
	struct json *named_b = parse("{\"metadata\":{\"name\":\"node-b-1f2e3d\"},\"spec\":{\"hostname\":\"node-b\","
				     "\"node\":\"node-a\"}}");
	char why[400];

	(void)state;
	assert_null(nodebind_vouches(bound, on_a, why, sizeof(why)));
	assert_string_equal(nodebind_vouches(bound, on_b, why, sizeof(why)), "OtherNode");
	assert_string_equal(why, "pod ci/p is on node node-b, not on node-a (device node-a-1f2e3d)");
	assert_string_equal(nodebind_vouches(bound, nowhere, why, sizeof(why)), "OtherNode");
	assert_string_equal(nodebind_vouches(unbound, on_a, why, sizeof(why)), "NodeNotBound");
	assert_non_null(strstr(why, "without a knitd pod token"));
	assert_string_equal(nodebind_vouches(named_b, on_b, why, sizeof(why)), "OtherNode");
	assert_null(nodebind_vouches(named_b, on_a, why, sizeof(why)));
	json_free(bound);
	json_free(unbound);
	json_free(on_a);
	json_free(on_b);
	json_free(nowhere);
	json_free(named_b);
}

static void test_set(void **state)
{
	struct json *spec = parse("{\"hostname\":\"n\",\"node\":\"old\"}");

	(void)state;
	assert_int_equal(nodebind_set(spec, "node-a"), 0);
	assert_string_equal(json_str(json_get(spec, "node")), "node-a");
	assert_int_equal(nodebind_set(spec, NULL), 0);
	assert_null(json_get(spec, "node"));
	assert_int_equal(nodebind_set(spec, NULL), 0);
	json_free(spec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_review),
		cmocka_unit_test(test_pod),
		cmocka_unit_test(test_vouches),
		cmocka_unit_test(test_set),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
