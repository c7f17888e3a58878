/* cni-plugin/plugin.c and knitdapi.c end to end in one process: plugin_run
 * as a runtime calls it, against a scripted knitd on a real unix socket
 * that answers the docs/cni.md contract and records what it was asked. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "buf.h"
#include "json.h"
#include "plugin.h"

#define MAX_REQS 16

struct answer {
	const char *method, *path; /* path: a prefix */
	int status;
	const char *body;
};

struct knitd {
	char path[108];
	int fd;
	pthread_t thread;
	volatile bool stop;
	const struct answer *answers;
	size_t nanswers;
	pthread_mutex_t lock;
	char *reqs[MAX_REQS]; /* "METHOD PATH BODY" */
	size_t nreqs;
};

static void serve_one(struct knitd *k, int c)
{
	struct buf in = BUF_INIT(1 << 20);
	char chunk[4096], method[16] = "", path[512] = "", resp[8192];
	const char *hdr_end = NULL, *cl;
	size_t body_len = 0;
	ssize_t n;

	while (!hdr_end || in.len < (size_t)(hdr_end + 4 - (const char *)in.data) + body_len) {
		if ((n = read(c, chunk, sizeof(chunk))) <= 0)
			goto out;
		buf_add(&in, chunk, (size_t)n);
		if (!hdr_end && (hdr_end = strstr(buf_str(&in), "\r\n\r\n"))) {
			cl = strcasestr(buf_str(&in), "Content-Length:");
			body_len = cl && cl < hdr_end ? strtoul(cl + 15, NULL, 10) : 0;
		}
	}
	sscanf(buf_str(&in), "%15s %511s", method, path);
	pthread_mutex_lock(&k->lock);
	if (k->nreqs < MAX_REQS) {
		char *r;

		if (asprintf(&r, "%s %s %s", method, path, hdr_end + 4) >= 0)
			k->reqs[k->nreqs++] = r;
	}
	pthread_mutex_unlock(&k->lock);
	int status = 404;
	const char *body = "{\"error\":\"no such route\",\"code\":\"NotFound\"}";

	for (size_t i = 0; i < k->nanswers; i++)
		if (strcmp(k->answers[i].method, method) == 0 &&
		    strncmp(k->answers[i].path, path, strlen(k->answers[i].path)) == 0) {
			status = k->answers[i].status;
			body = k->answers[i].body;
			break;
		}
	if (strcmp(body, "HANG") == 0) {
		/* Answers nothing until the client gives up. */
		while (read(c, chunk, sizeof(chunk)) > 0)
			;
		goto out;
	}
	if (strncmp(body, "RAW:", 4) == 0)
		snprintf(resp, sizeof(resp), "%s", body + 4);
	else
		snprintf(resp, sizeof(resp),
			 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 status, strlen(body), body);
	if (write(c, resp, strlen(resp)) < 0)
		goto out;
out:
	buf_free(&in);
}

static void *knitd_main(void *arg)
{
	struct knitd *k = arg;

	for (;;) {
		int c = accept(k->fd, NULL, NULL);

		if (c < 0 || k->stop) {
			if (c >= 0)
				close(c);
			break;
		}
		serve_one(k, c);
		close(c);
	}
	return NULL;
}

static struct knitd *knitd_start(const struct answer *answers, size_t n)
{
	struct knitd *k = calloc(1, sizeof(*k));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	assert_non_null(k);
	snprintf(k->path, sizeof(k->path), "/tmp/knit-cni-unit-%d.sock", getpid());
	unlink(k->path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", k->path);
	k->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(k->fd >= 0);
	assert_int_equal(bind(k->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(k->fd, 16), 0);
	k->answers = answers;
	k->nanswers = n;
	pthread_mutex_init(&k->lock, NULL);
	assert_int_equal(pthread_create(&k->thread, NULL, knitd_main, k), 0);
	return k;
}

static void knitd_stop(struct knitd *k)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	k->stop = true;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", k->path);
	assert_int_equal(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(c);
	pthread_join(k->thread, NULL);
	close(k->fd);
	unlink(k->path);
	for (size_t i = 0; i < k->nreqs; i++)
		free(k->reqs[i]);
	pthread_mutex_destroy(&k->lock);
	free(k);
}

/* ---- running the plugin ------------------------------------------------------------ */

#define PREV "\"prevResult\":{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"cni0\"}," \
	     "{\"name\":\"eth0\",\"sandbox\":\"/var/run/netns/p1\"}],\"ips\":[{\"address\":\"10.1.0.5/24\",\"interface\":1}]}"
#define ANN_ID "\"runtimeConfig\":{\"io.kubernetes.cri.pod-annotations\":{\"knit.dev/identity\":\"true\"," \
	       "\"knit.dev/tags\":\"tag:ci\"}}"
#define ANN_NONE "\"runtimeConfig\":{\"io.kubernetes.cri.pod-annotations\":{\"app\":\"web\"}}"
#define IDENTITY "{\"containerID\":\"ctr1\",\"ifName\":\"knit0\",\"network\":\"k8s\",\"interface\":\"knit0\"," \
		 "\"addresses\":[\"100.64.0.9/32\",\"fd7a:115c:a1e0::9/128\"]," \
		 "\"routes\":[\"100.64.0.0/10\",\"fd7a:115c:a1e0::/48\"],\"deviceName\":\"ci-runner-1\"}"

/* NULL: results stay in the buffer. deliver_fails: the runtime is gone. */
static plugin_deliver_fn deliver;

static int deliver_fails(const struct buf *b)
{
	return -EPIPE;
}

static int run(const struct knitd *k, const char *cmd, const char *version, const char *extra, struct json **out)
{
	char conf[4096];
	struct buf b = BUF_INIT(1 << 20);
	struct netconf_env env = {
		.command = cmd,
		.containerid = "ctr1",
		.netns = "/var/run/netns/p1",
		.ifname = "eth0",
		.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ci;K8S_POD_NAME=runner-1;K8S_POD_UID=uid-1",
		.path = "/opt/cni/bin",
	};
	int rc;

	snprintf(conf, sizeof(conf), "{\"cniVersion\":\"%s\",\"name\":\"k8s\",\"type\":\"knit-cni\",\"socket\":\"%s\"%s%s}",
		 version, k ? k->path : "/tmp/knit-cni-unit-none.sock", extra[0] ? "," : "", extra);
	rc = plugin_run(&env, conf, strlen(conf), &b, deliver);
	*out = b.len ? json_parse(buf_str(&b), b.len, NULL) : NULL;
	if (b.len)
		assert_non_null(*out);
	buf_free(&b);
	return rc;
}

static int64_t code_of(const struct json *j)
{
	return json_int(json_get(j, "code"), -1);
}

static void test_unannotated_passes_through(void **state)
{
	static const struct answer none[] = { { 0 } };
	struct knitd *k = knitd_start(none, 0);
	static const char want[] = "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"cni0\"},"
				   "{\"name\":\"eth0\",\"sandbox\":\"/var/run/netns/p1\"}],"
				   "\"ips\":[{\"address\":\"10.1.0.5/24\",\"interface\":1}]}";
	struct json *out, *prev = json_parse(want, strlen(want), NULL);

	assert_int_equal(run(k, "ADD", "1.0.0", PREV "," ANN_NONE, &out), 0);
	assert_true(json_equal(out, prev));
	json_free(out);
	assert_int_equal(run(k, "ADD", "1.0.0", PREV, &out), 0); /* no annotations at all */
	assert_true(json_equal(out, prev));
	json_free(out);
	assert_int_equal(run(k, "CHECK", "1.0.0", PREV "," ANN_NONE, &out), 0);
	assert_null(out);
	assert_int_equal(run(k, "DEL", "1.0.0", PREV "," ANN_NONE, &out), 0);
	assert_null(out);
	assert_int_equal(k->nreqs, 0); /* knitd never asked */
	json_free(prev);
	knitd_stop(k);
}

static void test_add_identity(void **state)
{
	static const struct answer a[] = { { "POST", "/localapi/v1/identities", 200, IDENTITY } };
	struct knitd *k = knitd_start(a, 1);
	const struct json *ips;
	struct json *out, *req;

	assert_int_equal(run(k, "ADD", "0.4.0", PREV "," ANN_ID, &out), 0);
	assert_string_equal(json_str(json_get(out, "cniVersion")), "0.4.0");
	assert_string_equal(json_str(json_get(json_array_at(json_get(out, "interfaces"), 2), "name")), "knit0");
	assert_string_equal(json_str(json_get(json_array_at(json_get(out, "interfaces"), 2), "sandbox")),
			    "/var/run/netns/p1");
	ips = json_get(out, "ips");
	assert_int_equal(json_array_len(ips), 3);
	assert_string_equal(json_str(json_get(json_array_at(ips, 0), "version")), "4"); /* prevResult converted */
	assert_string_equal(json_str(json_get(json_array_at(ips, 2), "address")), "fd7a:115c:a1e0::9/128");
	assert_string_equal(json_str(json_get(json_array_at(ips, 2), "version")), "6");
	assert_int_equal(json_int(json_get(json_array_at(ips, 2), "interface"), -1), 2);
	assert_int_equal(json_array_len(json_get(out, "routes")), 2);
	json_free(out);

	assert_int_equal(k->nreqs, 1);
	assert_memory_equal(k->reqs[0], "POST /localapi/v1/identities ", 29);
	req = json_parse(k->reqs[0] + 29, strlen(k->reqs[0] + 29), NULL);
	assert_non_null(req);
	assert_string_equal(json_str(json_get(req, "containerID")), "ctr1");
	assert_string_equal(json_str(json_get(req, "ifName")), "knit0");
	assert_string_equal(json_str(json_get(req, "netns")), "/var/run/netns/p1");
	assert_string_equal(json_str(json_get(req, "network")), "k8s");
	assert_string_equal(json_str(json_get(req, "podNamespace")), "ci");
	assert_string_equal(json_str(json_get(req, "podName")), "runner-1");
	assert_string_equal(json_str(json_get(req, "podUID")), "uid-1");
	assert_string_equal(json_str(json_array_at(json_get(req, "tags"), 0)), "tag:ci");
	json_free(req);
	knitd_stop(k);
}

static void test_add_errors(void **state)
{
	static const struct {
		struct answer a;
		int code;
		bool rollback;
	} cases[] = {
		{ { "POST", "/localapi/v1/identities", 409, "{\"error\":\"tag:ci not allowed\",\"code\":\"TagNotPermitted\"}" }, 102, false },
		{ { "POST", "/localapi/v1/identities", 403, "{\"error\":{\"code\":\"PodNotAuthorized\",\"message\":\"not on this node\"}}" }, 103, false },
		{ { "POST", "/localapi/v1/identities", 409, "{\"error\":\"taken\",\"code\":\"IdentityConflict\"}" }, 104, false },
		{ { "POST", "/localapi/v1/identities", 503, "{\"error\":\"not in the tailnet\",\"code\":\"NotReady\"}" }, 11, false },
		{ { "POST", "/localapi/v1/identities", 500, "{\"error\":\"boom\",\"code\":\"Internal\"}" }, 100, false },
		{ { "POST", "/localapi/v1/identities", 500, "not json" }, 100, false },
		/* Made, but the answer is unusable: rolled back. */
		{ { "POST", "/localapi/v1/identities", 200, "{\"interface\":\"knit0\",\"addresses\":[\"bogus\"],\"routes\":[]}" }, 105, true },
		{ { "POST", "/localapi/v1/identities", 200, "{\"interface\":\"eth9\",\"addresses\":[\"100.64.0.9/32\"],\"routes\":[]}" }, 105, true },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct answer as[2] = { cases[i].a, { "DELETE", "/localapi/v1/identities/", 200, "{}" } };
		struct knitd *k = knitd_start(as, 2);
		struct json *out;

		assert_int_equal(run(k, "ADD", "1.0.0", PREV "," ANN_ID, &out), 1);
		if (code_of(out) != cases[i].code)
			fail_msg("case %zu: code %d, want %d", i, (int)code_of(out), cases[i].code);
		assert_non_null(json_str(json_get(out, "details")));
		assert_int_equal(k->nreqs, cases[i].rollback ? 2 : 1);
		if (cases[i].rollback)
			assert_string_equal(k->reqs[1], "DELETE /localapi/v1/identities/ctr1/knit0 ");
		json_free(out);
		knitd_stop(k);
	}
}

static void test_add_rolls_back_when_result_not_delivered(void **state)
{
	static const struct answer a[] = {
		{ "POST", "/localapi/v1/identities", 200, IDENTITY },
		{ "DELETE", "/localapi/v1/identities/", 200, "{}" },
	};
	struct knitd *k = knitd_start(a, 2);
	struct json *out;

	deliver = deliver_fails;
	assert_int_equal(run(k, "ADD", "1.0.0", PREV "," ANN_ID, &out), 1);
	deliver = NULL;
	assert_int_equal(code_of(out), 5);
	json_free(out);
	assert_int_equal(k->nreqs, 2);
	assert_string_equal(k->reqs[1], "DELETE /localapi/v1/identities/ctr1/knit0 ");
	knitd_stop(k);
}

static void test_http_framing(void **state)
{
	static const struct {
		const char *raw;
		int rc, code;
	} cases[] = {
		/* No Content-Length: the body ends with the connection. */
		{ "RAW:HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" IDENTITY, 0, 0 },
		/* Content-Length shorter than what follows: cut there. */
		{ "RAW:HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}garbage", 1, 105 },
		{ "RAW:HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 1, 105 },
		{ "RAW:HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n{}", 1, 105 },
		{ "RAW:SSH-2.0-OpenSSH\r\n", 1, 105 },
		{ "RAW:", 1, 105 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct answer as[2] = { { "POST", "/localapi/v1/identities", 200, cases[i].raw },
					{ "DELETE", "/localapi/v1/identities/", 200, "{}" } };
		struct knitd *k = knitd_start(as, 2);
		struct json *out;
		int rc = run(k, "ADD", "1.0.0", PREV "," ANN_ID, &out);

		if (rc != cases[i].rc || (rc && code_of(out) != cases[i].code))
			fail_msg("case %zu: rc %d code %d", i, rc, rc ? (int)code_of(out) : 0);
		json_free(out);
		knitd_stop(k);
	}
}

static void test_add_timeout_rolls_back(void **state)
{
	static const struct answer a[] = {
		{ "POST", "/localapi/v1/identities", 200, "HANG" },
		{ "DELETE", "/localapi/v1/identities/", 200, "{}" },
	};
	struct knitd *k = knitd_start(a, 2);
	struct json *out;

	assert_int_equal(run(k, "ADD", "1.0.0", PREV "," ANN_ID ",\"addTimeoutMs\":300", &out), 1);
	assert_int_equal(code_of(out), 11);
	assert_non_null(strstr(json_str(json_get(out, "details")), "300 ms"));
	json_free(out);
	assert_int_equal(k->nreqs, 2);
	assert_string_equal(k->reqs[1], "DELETE /localapi/v1/identities/ctr1/knit0 ");
	knitd_stop(k);
}

static void test_knitd_absent(void **state)
{
	struct json *out;

	assert_int_equal(run(NULL, "ADD", "1.0.0", PREV "," ANN_ID, &out), 1);
	assert_int_equal(code_of(out), 11);
	json_free(out);
	/* DEL succeeds, also twice, and also without annotations. */
	assert_int_equal(run(NULL, "DEL", "1.0.0", ANN_ID, &out), 0);
	assert_null(out);
	assert_int_equal(run(NULL, "DEL", "1.0.0", "", &out), 0);
	assert_null(out);
	assert_int_equal(run(NULL, "STATUS", "1.1.0", "", &out), 1);
	assert_int_equal(code_of(out), 51);
	json_free(out);
	assert_int_equal(run(NULL, "GC", "1.1.0", "\"cni.dev/valid-attachments\":[]", &out), 0);
	assert_int_equal(run(NULL, "CHECK", "1.0.0", PREV "," ANN_ID, &out), 1);
	assert_int_equal(code_of(out), 106); /* prevResult has no knit0 */
	json_free(out);
}

static void test_add_requires_prev_result(void **state)
{
	struct json *out;

	assert_int_equal(run(NULL, "ADD", "1.0.0", ANN_NONE, &out), 1);
	assert_int_equal(code_of(out), 7);
	json_free(out);
	assert_int_equal(run(NULL, "CHECK", "1.0.0", ANN_NONE, &out), 1);
	assert_int_equal(code_of(out), 7);
	json_free(out);
}

static void test_del(void **state)
{
	static const struct answer gone[] = { { "DELETE", "/localapi/v1/identities/ctr1/knit0", 404, "{\"error\":\"no\",\"code\":\"NotFound\"}" } };
	static const struct answer broken[] = { { "DELETE", "/localapi/v1/identities/", 500, "{\"error\":\"x\",\"code\":\"Internal\"}" } };
	struct knitd *k = knitd_start(gone, 1);
	struct json *out;

	assert_int_equal(run(k, "DEL", "1.1.0", ANN_ID, &out), 0);
	assert_int_equal(run(k, "DEL", "1.1.0", ANN_ID, &out), 0);
	assert_int_equal(k->nreqs, 2);
	knitd_stop(k);
	k = knitd_start(broken, 1);
	assert_int_equal(run(k, "DEL", "1.1.0", ANN_ID, &out), 1);
	assert_int_equal(code_of(out), 100);
	json_free(out);
	knitd_stop(k);
}

static void test_gc(void **state)
{
	static const struct answer a[] = {
		{ "GET", "/localapi/v1/identities", 200,
		  "{\"identities\":[" IDENTITY ","
		  "{\"containerID\":\"stale\",\"ifName\":\"knit0\",\"network\":\"k8s\",\"interface\":\"knit0\",\"addresses\":[\"100.64.0.10/32\"],\"routes\":[]},"
		  "{\"containerID\":\"elsewhere\",\"ifName\":\"knit0\",\"network\":\"other\",\"interface\":\"knit0\",\"addresses\":[\"100.64.0.11/32\"],\"routes\":[]}]}" },
		{ "DELETE", "/localapi/v1/identities/", 200, "{}" },
	};
	struct knitd *k = knitd_start(a, 2);
	struct json *out;

	assert_int_equal(run(k, "GC", "1.1.0", "\"cni.dev/valid-attachments\":[{\"containerID\":\"ctr1\",\"ifname\":\"knit0\"}]", &out), 0);
	assert_null(out);
	assert_int_equal(k->nreqs, 2);
	assert_string_equal(k->reqs[1], "DELETE /localapi/v1/identities/stale/knit0 ");
	knitd_stop(k);

	/* The spec's first name for the key works too. */
	k = knitd_start(a, 2);
	assert_int_equal(run(k, "GC", "1.1.0", "\"cni.dev/attachments\":[{\"containerID\":\"stale\",\"ifname\":\"knit0\"}]", &out), 0);
	assert_int_equal(k->nreqs, 2);
	assert_string_equal(k->reqs[1], "DELETE /localapi/v1/identities/ctr1/knit0 ");
	knitd_stop(k);
}

static void test_status(void **state)
{
	static const struct answer up[] = { { "GET", "/localapi/v1/status", 200, "{\"backendState\":\"Running\",\"self\":{}}" } };
	static const struct answer login[] = { { "GET", "/localapi/v1/status", 200, "{\"backendState\":\"NeedsLogin\"}" } };
	struct knitd *k = knitd_start(up, 1);
	struct json *out;

	assert_int_equal(run(k, "STATUS", "1.1.0", "", &out), 0);
	assert_null(out);
	knitd_stop(k);
	k = knitd_start(login, 1);
	assert_int_equal(run(k, "STATUS", "1.1.0", "", &out), 1);
	assert_int_equal(code_of(out), 50);
	assert_non_null(strstr(json_str(json_get(out, "details")), "NeedsLogin"));
	json_free(out);
	knitd_stop(k);
}

static void test_check_identity_gone(void **state)
{
	static const struct answer a[] = { { "GET", "/localapi/v1/identities", 200, "{\"identities\":[]}" } };
	struct knitd *k = knitd_start(a, 1);
	struct json *out;

	assert_int_equal(run(k, "CHECK", "1.0.0",
			     "\"prevResult\":{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"eth0\"},"
			     "{\"name\":\"knit0\",\"sandbox\":\"/var/run/netns/p1\"}],"
			     "\"ips\":[{\"address\":\"100.64.0.9/32\",\"interface\":1}]}," ANN_ID,
			     &out),
			 1);
	assert_int_equal(code_of(out), 106);
	assert_non_null(strstr(json_str(json_get(out, "details")), "does not carry"));
	json_free(out);
	knitd_stop(k);
}

static void test_version(void **state)
{
	struct buf b = BUF_INIT(1 << 16);
	struct netconf_env env = { .command = "VERSION" };
	struct json *j;

	assert_int_equal(plugin_run(&env, "{\"cniVersion\":\"0.4.0\"}", 22, &b, NULL), 0);
	j = json_parse(buf_str(&b), b.len, NULL);
	assert_string_equal(json_str(json_get(j, "cniVersion")), "0.4.0");
	assert_int_equal(json_array_len(json_get(j, "supportedVersions")), 5);
	assert_string_equal(json_str(json_array_at(json_get(j, "supportedVersions"), 4)), "1.1.0");
	json_free(j);
	assert_int_equal(plugin_run(&env, "{", 1, &b, NULL), 1);
	j = json_parse(buf_str(&b), b.len, NULL);
	assert_int_equal(code_of(j), 6);
	json_free(j);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unannotated_passes_through),
		cmocka_unit_test(test_add_identity),
		cmocka_unit_test(test_add_errors),
		cmocka_unit_test(test_add_rolls_back_when_result_not_delivered),
		cmocka_unit_test(test_http_framing),
		cmocka_unit_test(test_add_timeout_rolls_back),
		cmocka_unit_test(test_knitd_absent),
		cmocka_unit_test(test_add_requires_prev_result),
		cmocka_unit_test(test_del),
		cmocka_unit_test(test_gc),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_check_identity_gone),
		cmocka_unit_test(test_version),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
