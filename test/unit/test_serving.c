/* serving: the EndpointSlice documents the leader writes for its Services,
 * and what serving_new refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "serving.h"

static const struct serving_target coord = { "knit-coordination", "coord", 9443 };

static void assert_json(const struct json *got, const char *want_text)
{
	struct json_error je;
	struct json *want = json_parse(want_text, strlen(want_text), &je);
	struct buf b = BUF_INIT(1u << 16);

	assert_non_null(want);
	if (!json_equal(got, want)) {
		json_dump(got, &b, 0);
		fail_msg("got %.*s\nwant %s", (int)b.len, (const char *)b.data, want_text);
	}
	buf_free(&b);
	json_free(want);
}

static void test_patch_points_at_us(void **state)
{
	struct json *p = serving_patch(&coord, "knit-system", "10.1.2.3", "knit-operator-abc", NULL);

	(void)state;
	assert_json(p, "{\"endpoints\":[{\"addresses\":[\"10.1.2.3\"],\"conditions\":{\"ready\":true},"
		       "\"targetRef\":{\"kind\":\"Pod\",\"namespace\":\"knit-system\",\"name\":\"knit-operator-abc\"}}],"
		       "\"ports\":[{\"name\":\"coord\",\"port\":9443,\"protocol\":\"TCP\"}]}");
	json_free(p);
}

static void test_withdrawal_is_conditional(void **state)
{
	/* Emptying carries the resourceVersion of our own write, so it
	 * cannot undo what the next leader wrote since. */
	struct json *p = serving_patch(&coord, "knit-system", NULL, "knit-operator-abc", "4711");

	(void)state;
	assert_json(p, "{\"metadata\":{\"resourceVersion\":\"4711\"},\"endpoints\":[],"
		       "\"ports\":[{\"name\":\"coord\",\"port\":9443,\"protocol\":\"TCP\"}]}");
	json_free(p);
}

static void test_slice_owned_by_service(void **state)
{
	const char *svc_text = "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"knit-webhook\","
			       "\"uid\":\"0b9c-uid\"}}";
	const struct serving_target wh = { "knit-webhook", "https", 9444 };
	struct json_error je;
	struct json *svc = json_parse(svc_text, strlen(svc_text), &je), *s;

	(void)state;
	s = serving_slice(&wh, "knit-system", "fd00::7", NULL, "discovery.k8s.io/v1beta1", svc);
	assert_json(s, "{\"endpoints\":[{\"addresses\":[\"fd00::7\"],\"conditions\":{\"ready\":true}}],"
		       "\"ports\":[{\"name\":\"https\",\"port\":9444,\"protocol\":\"TCP\"}],"
		       "\"apiVersion\":\"discovery.k8s.io/v1beta1\",\"kind\":\"EndpointSlice\",\"addressType\":\"IPv6\","
		       "\"metadata\":{\"name\":\"knit-webhook-leader\",\"namespace\":\"knit-system\",\"labels\":{"
		       "\"kubernetes.io/service-name\":\"knit-webhook\","
		       "\"endpointslice.kubernetes.io/managed-by\":\"knit-operator\",\"app.kubernetes.io/part-of\":\"knit\"},"
		       "\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"name\":\"knit-webhook\","
		       "\"uid\":\"0b9c-uid\"}]}}");
	json_free(s);
	/* No uid to own it: no slice (it would outlive its Service). */
	json_object_del(json_get(svc, "metadata"), "uid");
	assert_null(serving_slice(&wh, "knit-system", "10.0.0.1", NULL, "discovery.k8s.io/v1", svc));
	json_free(svc);
}

static void test_new_refuses(void **state)
{
	struct serving *s = NULL;
	const struct serving_target none = { "", "coord", 9443 }, noport = { "knit-coordination", "coord", 0 };
	const struct {
		const char *ns, *ip;
		const struct serving_target *t;
		size_t n;
	} bad[] = {
		{ "knit-system", "10.0.0.300", &coord, 1 },
		{ "knit-system", "pod-7", &coord, 1 },
		{ "knit-system", NULL, &coord, 1 },
		{ NULL, "10.0.0.1", &coord, 1 },
		{ "knit-system", "10.0.0.1", &coord, 0 },
		{ "knit-system", "10.0.0.1", &coord, SERVING_MAX + 1 },
		{ "knit-system", "10.0.0.1", &none, 1 },
		{ "knit-system", "10.0.0.1", &noport, 1 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct serving_opts o = { .namespace = bad[i].ns, .pod_ip = bad[i].ip, .targets = bad[i].t,
					  .ntargets = bad[i].n };
		assert_int_equal(serving_new(NULL, NULL, &o, &s), -EINVAL);
		assert_null(s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_patch_points_at_us),
		cmocka_unit_test(test_withdrawal_is_conditional),
		cmocka_unit_test(test_slice_owned_by_service),
		cmocka_unit_test(test_new_refuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
