/* knit policy check (agent/cli/policy_check.c), run as the CLI runs it:
 * real files, argv, exit status and the messages on stderr. The knit
 * binary wires it as `knit policy check`; until then it is compiled in
 * here. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../agent/cli/policy_check.c"

static char dir[] = "/tmp/knit-policy-check-XXXXXX";
static char out[8192];

static const char *put(const char *name, const char *text)
{
	static char path[16][256];
	static int next;
	char *p = path[next++ % 16];
	FILE *f;

	snprintf(p, 256, "%s/%s", dir, name);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return p;
}

/* Runs policy_check_main with stderr and stdout captured into out. */
static int run(int argc, const char **argv)
{
	char path[300];
	int fd, saved_err = dup(2), saved_out = dup(1), ret;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/output", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	fflush(stdout);
	fflush(stderr);
	dup2(fd, 2);
	dup2(fd, 1);
	ret = policy_check_main(argc, (char **)argv);
	fflush(stdout);
	fflush(stderr);
	dup2(saved_err, 2);
	dup2(saved_out, 1);
	close(saved_err);
	close(saved_out);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, out, sizeof(out) - 1);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
	return ret;
}

static const char policy[] =
	"{\n"
	"  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	"  \"tagOwners\": {\"tag:db\": [\"group:eng\"]},\n"
	"  \"acls\": [{\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:db:5432\"]}],\n"
	"  \"tests\": [{\"src\": \"alice@example.com\", \"accept\": [\"tag:db:5432\"],\n"
	"              \"deny\": [\"tag:db:22\"]}],\n"
	"}\n";

/* An IP source: only with the devices is 100.64.0.1 alice's. */
static const char policy_ip[] =
	"{\n"
	"  \"groups\": {\"group:eng\": [\"alice@example.com\"]},\n"
	"  \"tagOwners\": {\"tag:db\": [\"group:eng\"]},\n"
	"  \"acls\": [{\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:db:5432\"]}],\n"
	"  \"tests\": [{\"src\": \"100.64.0.1\", \"accept\": [\"100.64.0.2:5432\"]}],\n"
	"}\n";

static const char devices[] =
	"{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n"
	" {\"apiVersion\": \"knit.dev/v1alpha1\", \"kind\": \"Device\",\n"
	"  \"metadata\": {\"name\": \"laptop\"},\n"
	"  \"spec\": {\"nodeKey\": \"nodekey:00\", \"user\": \"alice@example.com\"},\n"
	"  \"status\": {\"addresses\": [\"100.64.0.1\", \"fd7a:115c:a1e0::1\"]}},\n"
	" {\"apiVersion\": \"knit.dev/v1alpha1\", \"kind\": \"Device\",\n"
	"  \"metadata\": {\"name\": \"db\"},\n"
	"  \"spec\": {\"nodeKey\": \"nodekey:01\", \"tags\": [\"tag:db\"],\n"
	"           \"advertisedRoutes\": [\"10.0.0.0/24\"]},\n"
	"  \"status\": {\"addresses\": [\"100.64.0.2\"]}},\n"
	" {\"apiVersion\": \"knit.dev/v1alpha1\", \"kind\": \"Device\",\n"
	"  \"metadata\": {\"name\": \"pod-1\"},\n"
	"  \"spec\": {\"nodeKey\": \"nodekey:02\", \"ownerPod\": {\"namespace\": \"prod\",\n"
	"           \"name\": \"api-0\", \"serviceAccount\": \"api\"}},\n"
	"  \"status\": {\"addresses\": [\"100.64.0.3\"]}}\n"
	"]}\n";

static void test_valid(void **state)
{
	const char *argv[] = { "check", put("p.hujson", policy) };

	(void)state;
	assert_int_equal(run(2, argv), 0);
	assert_non_null(strstr(out, "p.hujson: valid"));
}

static void test_invalid_position(void **state)
{
	const char *bad = "{\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"group:x\"], \"dst\": [\"*:*\"]}],\n}\n";
	const char *argv[] = { "check", put("bad.hujson", bad) };
	char want[400];

	(void)state;
	assert_int_equal(run(2, argv), 1);
	snprintf(want, sizeof(want), "%s:2:41: acls[0].src[0]: group \"group:x\" is not defined",
		 argv[1]);
	if (!strstr(out, want))
		fail_msg("got: %s", out);
}

static void test_failing_test(void **state)
{
	char text[sizeof(policy) + 16];
	const char *argv[] = { "check", NULL };
	char *p;

	(void)state;
	snprintf(text, sizeof(text), "%s", policy);
	p = strstr(text, "tag:db:22");
	p[7] = '5'; /* deny tag:db:5432: contradicts the acl */
	p[8] = '4';
	memmove(p + 11, p + 9, strlen(p + 9) + 1);
	p[9] = '3';
	p[10] = '2';
	argv[1] = put("fail.hujson", text);
	assert_int_equal(run(2, argv), 1);
	if (!strstr(out, ":6:24: tests[0].deny[0]: alice@example.com -> tag:db:5432 (tcp): "
			 "expected deny, got accept"))
		fail_msg("got: %s", out);
}

static void test_devices(void **state)
{
	const char *pol = put("ip.hujson", policy_ip);
	const char *devs = put("devices.json", devices);
	const char *with[] = { "check", pol, "--devices", devs };
	const char *with_eq[4] = { "check", NULL, pol };
	const char *without[] = { "check", pol };
	char flag[300];

	(void)state;
	assert_int_equal(run(4, with), 0);
	assert_non_null(strstr(out, "compiled for 3 devices: 1 filter rules"));
	snprintf(flag, sizeof(flag), "--devices=%s", devs);
	with_eq[1] = flag;
	assert_int_equal(run(3, with_eq), 0);
	assert_int_equal(run(2, without), 1);
	assert_non_null(strstr(out, "100.64.0.1 -> 100.64.0.2:5432 (tcp): expected accept, got deny"));
}

static void test_bad_devices(void **state)
{
	const char *pol = put("p.hujson", policy);
	const char *a1[] = { "check", pol, "--devices",
			     put("d1.json", "{\"kind\": \"List\", \"items\": [{\"metadata\": {\"name\": \"x\"},"
					    " \"status\": {\"addresses\": [\"100.64.0.0/10\"]}}]}") };
	const char *a2[] = { "check", pol, "--devices", put("d2.json", "{\"kind\": \"Pod\"}") };
	const char *a3[] = { "check", pol, "--devices", put("d3.json", "{\"items\": [}") };
	const char *a4[] = { "check", pol, "--devices", "/nonexistent/devices.json" };
	const char *a5[] = { "check", pol, "--devices",
			     put("d5.json", "{\"items\": [{\"metadata\": {\"name\": \"x\"}},"
					    " {\"metadata\": {\"name\": \"x\"}}]}") };

	(void)state;
	assert_int_equal(run(4, a1), 1);
	if (!strstr(out, "device x: status.addresses[0] is not an address"))
		fail_msg("got: %s", out);
	assert_non_null(strstr(out, "device x: status.addresses[0] is not an address"));
	assert_int_equal(run(4, a2), 1);
	assert_non_null(strstr(out, "not a List of Devices"));
	assert_int_equal(run(4, a3), 1);
	assert_non_null(strstr(out, "d3.json:1:"));
	assert_int_equal(run(4, a4), 1);
	assert_non_null(strstr(out, "No such file or directory"));
	assert_int_equal(run(4, a5), 1);
	assert_non_null(strstr(out, "device x appears twice"));
}

static void test_usage(void **state)
{
	const char *none[] = { "check" };
	const char *flag[] = { "check", "--nope", "x" };
	const char *two[] = { "check", "a", "b" };
	const char *missing[] = { "check", "a", "--devices" };
	const char *help[] = { "check", "--help" };
	const char *nofile[] = { "check", "/nonexistent/policy.hujson" };

	(void)state;
	assert_int_equal(run(1, none), 2);
	assert_non_null(strstr(out, "usage: knit policy check FILE"));
	assert_int_equal(run(3, flag), 2);
	assert_non_null(strstr(out, "unknown flag \"--nope\""));
	assert_int_equal(run(3, two), 2);
	assert_int_equal(run(3, missing), 2);
	assert_int_equal(run(2, help), 0);
	assert_non_null(strstr(out, "Exit status"));
	assert_int_equal(run(2, nofile), 1);
	assert_non_null(strstr(out, "/nonexistent/policy.hujson: No such file or directory"));
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),	    cmocka_unit_test(test_invalid_position),
		cmocka_unit_test(test_failing_test), cmocka_unit_test(test_devices),
		cmocka_unit_test(test_bad_devices), cmocka_unit_test(test_usage),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
