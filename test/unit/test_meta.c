#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "json.h"
#include "kube/meta.h"

static void test_duration(void **state)
{
	static const struct {
		const char *s;
		bool ok;
		uint64_t ms;
	} cases[] = {
		{ "0s", true, 0 }, { "0", true, 0 }, { "5m", true, 300000 }, { "4320h", true, 4320ull * 3600000 },
		{ "1h30m", true, 5400000 }, { "250ms", true, 250 }, { "1.5s", true, 1500 }, { "90s", true, 90000 },
		{ "2h45m30s", true, 9930000 }, { "-5h", false, 0 }, { "5", false, 0 }, { "h", false, 0 },
		{ "5d", false, 0 }, { "", false, 0 }, { "1h 30m", false, 0 }, { "999999999999h", false, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 12345;
		bool ok = kube_duration_parse(cases[i].s, &ms);
		if (ok != cases[i].ok || (ok && ms != cases[i].ms))
			fail_msg("\"%s\": ok=%d ms=%llu", cases[i].s, ok, (unsigned long long)ms);
	}
}

static void test_time(void **state)
{
	char s[32];
	time_t t;

	kube_time_format(1795392000, s, sizeof(s));
	assert_string_equal(s, "2026-11-23T00:00:00Z");
	assert_true(kube_time_parse("2026-11-23T00:00:00Z", &t));
	assert_int_equal(t, 1795392000);
	assert_true(kube_time_parse("2026-11-23T00:00:00.123456Z", &t));
	assert_int_equal(t, 1795392000);
	assert_true(kube_time_parse("2026-11-23T01:30:00+01:30", &t));
	assert_int_equal(t, 1795392000);
	assert_true(kube_time_parse("2026-11-22T23:00:00-01:00", &t));
	assert_int_equal(t, 1795392000);
	assert_false(kube_time_parse("2026-11-23T00:00:00", &t));
	assert_false(kube_time_parse("2026-11-23", &t));
	assert_false(kube_time_parse("2026-11-23T00:00:00Zjunk", &t));
	assert_false(kube_time_parse(NULL, &t));
	/* Offsets are exactly hh:mm (fuzz_operator_parse found "+5:00" read
	 * past the end of the string). */
	{
		static const char *const bad[] = { "2026-11-23T00:00:00+5:00", "2026-11-23T00:00:00+05:0",
						   "2026-11-23T00:00:00+0500", "2026-11-23T00:00:00+", "2026-11-23T00:00:00-1:2",
						   "2026-11-23T00:00:00+24:00", "2026-11-23T00:00:00+05:60" };
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char *heap = strdup(bad[i]); /* exact size: ASan sees a read past it */
			assert_non_null(heap);
			assert_false(kube_time_parse(heap, &t));
			free(heap);
		}
	}
}

static struct json *parse(const char *s)
{
	struct json_error e;
	struct json *j = json_parse(s, strlen(s), &e);
	assert_non_null(j);
	return j;
}

static void test_conditions(void **state)
{
	struct json *obj = parse("{\"status\":{}}"), *st = json_get(obj, "status");
	const char *t1;

	assert_true(kube_condition_set(st, "Ready", "False", "Pending", "waiting", 1, 1000));
	assert_string_equal(kube_condition_status(obj, "Ready"), "False");
	t1 = json_str(json_path(json_array_at(json_get(st, "conditions"), 0), "lastTransitionTime", NULL));
	assert_string_equal(t1, "1970-01-01T00:16:40Z");
	/* Same state again: nothing changes, not even the time. */
	assert_false(kube_condition_set(st, "Ready", "False", "Pending", "waiting", 1, 2000));
	/* Message only: changes, but the transition time stays. */
	assert_true(kube_condition_set(st, "Ready", "False", "Pending", "still waiting", 1, 3000));
	assert_string_equal(json_str(json_path(json_array_at(json_get(st, "conditions"), 0), "lastTransitionTime", NULL)),
			    "1970-01-01T00:16:40Z");
	/* Status flips: new transition time. */
	assert_true(kube_condition_set(st, "Ready", "True", "Done", "ok", 2, 4000));
	assert_string_equal(json_str(json_path(json_array_at(json_get(st, "conditions"), 0), "lastTransitionTime", NULL)),
			    "1970-01-01T01:06:40Z");
	assert_int_equal(json_int(json_path(json_array_at(json_get(st, "conditions"), 0), "observedGeneration", NULL), 0), 2);
	assert_true(kube_condition_set(st, "Expired", "False", "NotExpired", "fine", 2, 4000));
	assert_int_equal(json_array_len(json_get(st, "conditions")), 2);
	assert_null(kube_condition_status(obj, "Nope"));
	json_free(obj);
}

static void test_owner_and_keys(void **state)
{
	struct json *owner = parse("{\"apiVersion\":\"knit.dev/v1alpha1\",\"kind\":\"AuthKey\","
				   "\"metadata\":{\"name\":\"ci\",\"namespace\":\"ns\",\"uid\":\"u-1\",\"generation\":3}}");
	struct json *ref = kube_owner_ref(owner), *child = parse("{\"metadata\":{\"name\":\"s\",\"ownerReferences\":[]}}");
	char key[64], k2[] = "ns/name", k3[] = "cluster", *ns, *name;

	assert_non_null(ref);
	assert_string_equal(json_str(json_get(ref, "uid")), "u-1");
	assert_string_equal(json_str(json_get(ref, "kind")), "AuthKey");
	assert_true(json_bool(json_get(ref, "controller"), false));
	assert_false(kube_owned_by(child, "u-1"));
	json_array_append(json_path(child, "metadata", "ownerReferences", NULL), ref);
	assert_true(kube_owned_by(child, "u-1"));
	assert_false(kube_owned_by(child, "u-2"));
	assert_int_equal(kube_generation(owner), 3);
	assert_int_equal(kube_key(owner, key, sizeof(key)), 0);
	assert_string_equal(key, "ns/ci");
	assert_int_equal(kube_key(child, key, sizeof(key)), 0);
	assert_string_equal(key, "s");
	kube_key_split(k2, &ns, &name);
	assert_string_equal(ns, "ns");
	assert_string_equal(name, "name");
	kube_key_split(k3, &ns, &name);
	assert_null(ns);
	assert_string_equal(name, "cluster");
	assert_false(kube_deleting(owner));
	struct json *unnamed = parse("{\"metadata\":{\"name\":\"\"}}");
	assert_int_equal(kube_key(unnamed, key, sizeof(key)), -EINVAL);
	json_free(unnamed);
	json_free(owner);
	json_free(child);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_conditions),
		cmocka_unit_test(test_owner_and_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
