#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "json.h"
#include "rollout.h"

static bool stopped(const char *text)
{
	struct json *pod = json_parse(text, strlen(text), NULL);
	bool r;

	assert_non_null(pod);
	r = rollout_pod_stopped(pod);
	json_free(pod);
	return r;
}

#define DEL "\"metadata\": {\"name\": \"knitd-x\", \"uid\": \"u1\", \"deletionTimestamp\": \"2026-12-03T19:10:58Z\"}"
#define LIVE "\"metadata\": {\"name\": \"knitd-x\", \"uid\": \"u1\"}"
#define INIT_DONE "\"initContainerStatuses\": [{\"name\": \"install-cni\", \"state\": {\"terminated\": {\"exitCode\": 0}}}]"

/* Being deleted and nothing runs: what the kubelet itself waits for before
 * its final delete (a removed container reads "waiting"). */
static void test_stopped(void **state)
{
	(void)state;
	assert_true(stopped("{" DEL ", \"status\": {" INIT_DONE ", \"containerStatuses\": "
			    "[{\"name\": \"knitd\", \"state\": {\"terminated\": {\"exitCode\": 0}}}]}}"));
	assert_true(stopped("{" DEL ", \"status\": {\"containerStatuses\": "
			    "[{\"name\": \"knitd\", \"state\": {\"waiting\": {}}}]}}"));
	assert_true(stopped("{" DEL ", \"status\": {\"containerStatuses\": [{\"name\": \"a\", \"state\": "
			    "{\"terminated\": {}}}, {\"name\": \"b\", \"state\": {\"terminated\": {}}}]}}"));
}

static void test_not_stopped(void **state)
{
	(void)state;
	/* Still running (knitd forwards until it exits). */
	assert_false(stopped("{" DEL ", \"status\": {" INIT_DONE ", \"containerStatuses\": "
			     "[{\"name\": \"knitd\", \"state\": {\"running\": {}}}]}}"));
	/* One of two still running. */
	assert_false(stopped("{" DEL ", \"status\": {\"containerStatuses\": [{\"name\": \"a\", \"state\": "
			     "{\"terminated\": {}}}, {\"name\": \"b\", \"state\": {\"running\": {}}}]}}"));
	/* An init container running. */
	assert_false(stopped("{" DEL ", \"status\": {\"initContainerStatuses\": [{\"name\": \"i\", \"state\": "
			     "{\"running\": {}}}], \"containerStatuses\": [{\"name\": \"knitd\", \"state\": "
			     "{\"waiting\": {}}}]}}"));
	/* Not being deleted: a crashed knitd is the kubelet's to restart. */
	assert_false(stopped("{" LIVE ", \"status\": {\"containerStatuses\": "
			     "[{\"name\": \"knitd\", \"state\": {\"terminated\": {\"exitCode\": 1}}}]}}"));
	/* No report from a kubelet yet (unscheduled, or the node is gone). */
	assert_false(stopped("{" DEL ", \"status\": {}}"));
	assert_false(stopped("{" DEL ", \"status\": {\"containerStatuses\": []}}"));
	assert_false(stopped("{" DEL "}"));
	/* A status without a state is not a stopped container. */
	assert_false(stopped("{" DEL ", \"status\": {\"containerStatuses\": [{\"name\": \"knitd\"}]}}"));
	assert_false(stopped("{\"metadata\": {\"deletionTimestamp\": 5}, \"status\": {\"containerStatuses\": "
			     "[{\"name\": \"knitd\", \"state\": {\"terminated\": {}}}]}}"));
	assert_false(rollout_pod_stopped(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stopped),
		cmocka_unit_test(test_not_stopped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
