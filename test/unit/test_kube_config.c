#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "kube/client.h"
#include "kube/config.h"

static const char kubeconfig[] =
	"apiVersion: v1\n"
	"kind: Config\n"
	"clusters:\n"
	"- name: prod\n"
	"  cluster:\n"
	"    server: https://10.0.0.1:6443/\n"
	"    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n"
	"- name: dev\n"
	"  cluster:\n"
	"    server: https://127.0.0.1:8443\n"
	"    certificate-authority: certs/ca.crt\n"
	"    insecure-skip-tls-verify: true\n"
	"users:\n"
	"- name: robot\n"
	"  user:\n"
	"    token: s3cr3t\n"
	"- name: human\n"
	"  user:\n"
	"    client-certificate: /abs/client.crt\n"
	"    client-key: rel/client.key\n"
	"- name: plugin\n"
	"  user:\n"
	"    exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}\n"
	"- name: half\n"
	"  user:\n"
	"    client-certificate-data: aGVsbG8=\n"
	"contexts:\n"
	"- name: prod-robot\n"
	"  context: {cluster: prod, user: robot, namespace: knit-system}\n"
	"- name: dev-human\n"
	"  context: {cluster: dev, user: human}\n"
	"- name: dev-plugin\n"
	"  context: {cluster: dev, user: plugin}\n"
	"- name: dev-half\n"
	"  context: {cluster: dev, user: half}\n"
	"- name: ghost\n"
	"  context: {cluster: nowhere, user: robot}\n"
	"current-context: prod-robot\n";

static void test_current_context_token_and_ca_data(void **state)
{
	struct kube_config c;
	char err[256] = "";

	assert_true(kube_config_parse(&c, kubeconfig, strlen(kubeconfig), NULL, "/etc/kube", err, sizeof(err)));
	assert_string_equal(c.server, "https://10.0.0.1:6443"); /* trailing slash dropped */
	assert_string_equal(c.namespace, "knit-system");
	assert_string_equal(c.token, "s3cr3t");
	assert_non_null(c.ca_pem);
	assert_int_equal(c.ca_pem_len, strlen("-----BEGIN CERTIFICATE-----\n"));
	assert_memory_equal(c.ca_pem, "-----BEGIN CERTIFICATE-----\n", c.ca_pem_len);
	assert_null(c.ca_file);
	assert_false(c.insecure_skip_verify);
	kube_config_free(&c);
}

static void test_named_context_files_relative_to_kubeconfig(void **state)
{
	struct kube_config c;
	char err[256] = "";

	assert_true(kube_config_parse(&c, kubeconfig, strlen(kubeconfig), "dev-human", "/etc/kube", err, sizeof(err)));
	assert_string_equal(c.server, "https://127.0.0.1:8443");
	assert_string_equal(c.namespace, "default");
	assert_string_equal(c.ca_file, "/etc/kube/certs/ca.crt");
	assert_string_equal(c.cert_file, "/abs/client.crt");
	assert_string_equal(c.key_file, "/etc/kube/rel/client.key");
	assert_null(c.token);
	assert_true(c.insecure_skip_verify);
	kube_config_free(&c);
}

struct bad {
	const char *doc;
	const char *context;
	const char *want; /* substring of the error */
};

static void test_errors(void **state)
{
	static const struct bad cases[] = {
		{ kubeconfig, "dev-plugin", "exec and auth-provider plugins are not supported" },
		{ kubeconfig, "dev-half", "client certificate and key must come together" },
		{ kubeconfig, "ghost", "cluster \"nowhere\" (context \"ghost\") not found" },
		{ kubeconfig, "missing", "context \"missing\" not found" },
		{ "clusters: []\n", NULL, "no current-context" },
		{ "- a\n- b\n", NULL, "not a mapping" },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
		  "clusters: [{name: c, cluster: {server: ftp://x}}]\n", NULL, "server must be an http(s) URL" },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
		  "clusters: [{name: c, cluster: {server: 'https://x', certificate-authority-data: '!!!'}}]\n",
		  NULL, "certificate-authority-data is not valid base64" },
		{ "clusters:\n  - name: a\n bad-indent: 1\n", NULL, "kubeconfig line 3" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kube_config c;
		char err[256] = "";
		bool ok = kube_config_parse(&c, cases[i].doc, strlen(cases[i].doc), cases[i].context, "/x", err, sizeof(err));
		if (ok || !strstr(err, cases[i].want))
			fail_msg("case %zu: ok=%d err=\"%s\", want \"%s\"", i, ok, err, cases[i].want);
		/* A failed parse leaves nothing allocated (LeakSanitizer checks). */
		assert_null(c.server);
	}
}

static void test_truncated_never_crashes(void **state)
{
	for (size_t n = 0; n < strlen(kubeconfig); n++) {
		struct kube_config c;
		char err[256];
		if (kube_config_parse(&c, kubeconfig, n, NULL, "/x", err, sizeof(err)))
			kube_config_free(&c);
	}
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_in_cluster(void **state)
{
	char dir[] = "/tmp/knit-sa-XXXXXX", err[256] = "";
	struct kube_config c;

	assert_non_null(mkdtemp(dir));
	unsetenv("KUBERNETES_SERVICE_HOST");
	assert_int_equal(kube_config_in_cluster(&c, dir, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));

	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(kube_config_in_cluster(&c, dir, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/token"));

	write_file(dir, "token", "tok\n");
	write_file(dir, "ca.crt", "pem");
	write_file(dir, "namespace", "knit-system\n");
	assert_int_equal(kube_config_in_cluster(&c, dir, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://[fd00::1]:443");
	assert_string_equal(c.namespace, "knit-system");
	assert_non_null(strstr(c.token_file, "/token"));
	assert_non_null(strstr(c.ca_file, "/ca.crt"));
	kube_config_free(&c);

	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	assert_int_equal(kube_config_in_cluster(&c, dir, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://10.96.0.1:443");
	kube_config_free(&c);
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");

	char path[512];
	for (const char *const *n = (const char *const[]){ "token", "ca.crt", "namespace", NULL }; *n; n++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *n);
		unlink(path);
	}
	rmdir(dir);
}

static void test_load_from_env(void **state)
{
	char dir[] = "/tmp/knit-kc-XXXXXX", path[512], err[256] = "";
	struct kube_config c;

	assert_non_null(mkdtemp(dir));
	write_file(dir, "config", kubeconfig);
	snprintf(path, sizeof(path), "%s/config:/nonexistent/second", dir);
	setenv("KUBECONFIG", path, 1);
	assert_int_equal(kube_config_load(&c, NULL, err, sizeof(err)), 0);
	assert_string_equal(c.token, "s3cr3t");
	kube_config_free(&c);
	assert_int_equal(kube_config_load(&c, "/nonexistent/kubeconfig", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/kubeconfig"));
	unsetenv("KUBECONFIG");
	snprintf(path, sizeof(path), "%s/config", dir);
	unlink(path);
	rmdir(dir);
}

static void test_paths(void **state)
{
	static const struct kube_resource dev = { "knit.dev", "v1alpha1", "devices", "Device", false };
	char p[256];

	assert_int_equal(kube_path(p, sizeof(p), &kube_res_secrets, "ns1", "s", NULL), 0);
	assert_string_equal(p, "/api/v1/namespaces/ns1/secrets/s");
	assert_int_equal(kube_path(p, sizeof(p), &kube_res_secrets, NULL, NULL, NULL), 0);
	assert_string_equal(p, "/api/v1/secrets");
	assert_int_equal(kube_path(p, sizeof(p), &dev, "ignored", "d1", "status"), 0);
	assert_string_equal(p, "/apis/knit.dev/v1alpha1/devices/d1/status");
	assert_int_equal(kube_path(p, sizeof(p), &kube_res_leases, "kube-system", "l", NULL), 0);
	assert_string_equal(p, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l");
	assert_int_equal(kube_path(p, 20, &dev, NULL, "a-very-long-device-name", NULL), -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_current_context_token_and_ca_data),
		cmocka_unit_test(test_named_context_files_relative_to_kubeconfig),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_truncated_never_crashes),
		cmocka_unit_test(test_in_cluster),
		cmocka_unit_test(test_load_from_env),
		cmocka_unit_test(test_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
