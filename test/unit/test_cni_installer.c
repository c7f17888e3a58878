/* cni-plugin/installer.c: the conflist edits, and install/uninstall on a
 * real directory: idempotent, the original kept and restored. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#include "buf.h"
#include "installer.h"
#include "json.h"

static struct json *parse(const char *s)
{
	struct json *j = json_parse(s, strlen(s), NULL);

	if (!j)
		fail_msg("bad JSON: %s", s);
	return j;
}

#define ENTRY "{\"type\":\"knit-cni\",\"capabilities\":{\"io.kubernetes.cri.pod-annotations\":true}}"

static void test_insert_conflist(void **state)
{
	struct json *conf = parse("{\"cniVersion\":\"1.0.0\",\"name\":\"k8s\",\"plugins\":["
				  "{\"type\":\"bridge\"},{\"type\":\"knit-cni\",\"mode\":\"old\"},{\"type\":\"portmap\"}]}");
	struct json *entry = installer_entry_new(NULL, NULL), *once, *twice, *want;
	char why[256];

	assert_true(json_equal(entry, want = parse(ENTRY)));
	json_free(want);
	once = installer_conflist_insert(conf, entry, why, sizeof(why));
	assert_non_null(once);
	want = parse("{\"cniVersion\":\"1.0.0\",\"name\":\"k8s\",\"plugins\":[{\"type\":\"bridge\"},"
		     "{\"type\":\"portmap\"}," ENTRY "]}");
	assert_true(json_equal(once, want));
	twice = installer_conflist_insert(once, entry, why, sizeof(why));
	assert_true(json_equal(twice, want)); /* idempotent */
	json_free(twice);
	json_free(want);
	json_free(once);
	json_free(entry);
	json_free(conf);
}

static void test_insert_single_conf(void **state)
{
	struct json *conf = parse("{\"cniVersion\":\"0.3.1\",\"name\":\"br\",\"type\":\"bridge\",\"bridge\":\"cni0\","
				  "\"ipam\":{\"type\":\"host-local\"}}");
	struct json *entry = installer_entry_new("gateway", "/run/k.sock"), *out, *want;
	char why[256];

	out = installer_conflist_insert(conf, entry, why, sizeof(why));
	assert_non_null(out);
	want = parse("{\"cniVersion\":\"0.3.1\",\"name\":\"br\",\"plugins\":[{\"type\":\"bridge\",\"bridge\":\"cni0\","
		     "\"ipam\":{\"type\":\"host-local\"}},{\"type\":\"knit-cni\",\"capabilities\":"
		     "{\"io.kubernetes.cri.pod-annotations\":true},\"mode\":\"gateway\",\"socket\":\"/run/k.sock\"}]}");
	assert_true(json_equal(out, want));
	json_free(want);
	json_free(out);
	json_free(entry);
	json_free(conf);
}

static void test_insert_refused(void **state)
{
	static const char *const bad[] = {
		"[]",
		"{\"cniVersion\":\"0.2.0\",\"name\":\"a\",\"type\":\"bridge\"}",
		"{\"name\":\"a\",\"plugins\":[{\"type\":\"bridge\"}]}",
		"{\"cniVersion\":\"1.0.0\",\"name\":\"a\",\"plugins\":[]}",
		"{\"cniVersion\":\"1.0.0\",\"name\":\"a\",\"plugins\":{}}",
		"{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}",
		"{\"cniVersion\":\"1.0.0\",\"name\":\"a\",\"type\":\"knit-cni\"}",
	};
	struct json *entry = installer_entry_new(NULL, NULL);
	char why[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct json *conf = parse(bad[i]);

		why[0] = '\0';
		if (installer_conflist_insert(conf, entry, why, sizeof(why)))
			fail_msg("case %zu accepted: %s", i, bad[i]);
		assert_true(why[0] != '\0');
		json_free(conf);
	}
	json_free(entry);
}

/* ---- on a directory -------------------------------------------------------------- */

struct fx {
	char root[64], conf[96], bin[96], src[96];
};

static void put(const char *dir, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	fclose(f);
}

static char *get(const char *dir, const char *name)
{
	char path[256];
	struct buf b = BUF_INIT(1 << 20);
	char chunk[4096];
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!(f = fopen(path, "r")))
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		assert_int_equal(buf_add(&b, chunk, n), 0);
	fclose(f);
	return buf_steal(&b, NULL);
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	snprintf(fx->root, sizeof(fx->root), "/tmp/knit-cni-inst.XXXXXX");
	assert_non_null(mkdtemp(fx->root));
	snprintf(fx->conf, sizeof(fx->conf), "%s/net.d", fx->root);
	snprintf(fx->bin, sizeof(fx->bin), "%s/bin", fx->root);
	snprintf(fx->src, sizeof(fx->src), "%s/knit-cni.src", fx->root);
	assert_int_equal(mkdir(fx->conf, 0755), 0);
	assert_int_equal(mkdir(fx->bin, 0755), 0);
	put(fx->root, "knit-cni.src", "#!binary\n");
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->root);
	assert_int_equal(system(cmd), 0);
	free(fx);
	return 0;
}

#define BRIDGE_LIST "{\"cniVersion\":\"1.0.0\",\"name\":\"k8s\",\"plugins\":[{\"type\":\"bridge\"},{\"type\":\"portmap\"}]}\n"

static void test_install_conflist(void **state)
{
	struct fx *fx = *state;
	struct installer_opts o = { .conf_dir = fx->conf, .bin_dir = fx->bin, .source = fx->src };
	char why[512] = "", *first, *second, *bin, *orig;
	struct json *j;
	struct stat sb;

	put(fx->conf, "10-k8s.conflist", BRIDGE_LIST);
	put(fx->conf, "20-other.conflist", "{\"cniVersion\":\"1.0.0\",\"name\":\"o\",\"plugins\":[{\"type\":\"ptp\"}]}");
	assert_int_equal(installer_install(&o, why, sizeof(why)), 0);
	assert_non_null(bin = get(fx->bin, "knit-cni"));
	assert_string_equal(bin, "#!binary\n");
	free(bin);
	assert_int_equal(stat(fx->bin, &sb), 0);
	assert_non_null(orig = get(fx->conf, "10-k8s.conflist.knit-orig"));
	assert_string_equal(orig, BRIDGE_LIST);
	free(orig);
	first = get(fx->conf, "10-k8s.conflist");
	j = parse(first);
	assert_int_equal(json_array_len(json_get(j, "plugins")), 3);
	assert_string_equal(json_str(json_get(json_array_at(json_get(j, "plugins"), 2), "type")), "knit-cni");
	json_free(j);
	/* Only the primary is touched. */
	assert_null(get(fx->conf, "20-other.conflist.knit-orig"));

	/* Again: nothing changes, the backup stays the original. */
	assert_int_equal(installer_install(&o, why, sizeof(why)), 0);
	second = get(fx->conf, "10-k8s.conflist");
	assert_string_equal(first, second);
	assert_non_null(orig = get(fx->conf, "10-k8s.conflist.knit-orig"));
	assert_string_equal(orig, BRIDGE_LIST);
	free(orig);
	assert_int_equal(count_files(fx->conf), 3);
	free(first);
	free(second);

	/* Uninstall restores the original byte for byte; twice is fine. */
	assert_int_equal(installer_uninstall(&o, why, sizeof(why)), 0);
	assert_non_null(orig = get(fx->conf, "10-k8s.conflist"));
	assert_string_equal(orig, BRIDGE_LIST);
	free(orig);
	assert_int_equal(count_files(fx->conf), 2);
	assert_int_equal(installer_uninstall(&o, why, sizeof(why)), 0);
	assert_int_equal(count_files(fx->conf), 2);
}

static void test_install_single_conf(void **state)
{
	struct fx *fx = *state;
	struct installer_opts o = { .conf_dir = fx->conf, .bin_dir = fx->bin, .source = fx->src };
	const char *single = "{\"cniVersion\":\"0.4.0\",\"name\":\"br\",\"type\":\"bridge\"}\n";
	char why[512] = "", *s, *primary;
	struct json *j;

	put(fx->conf, "10-br.conf", single);
	put(fx->conf, "99-z.json", "{\"cniVersion\":\"0.4.0\",\"name\":\"z\",\"type\":\"ptp\"}");
	assert_int_equal(installer_install(&o, why, sizeof(why)), 0);
	assert_null(get(fx->conf, "10-br.conf"));
	assert_non_null(s = get(fx->conf, "10-br.conf.knit-orig"));
	assert_string_equal(s, single);
	free(s);
	assert_int_equal(installer_primary(fx->conf, &primary), 0);
	assert_string_equal(primary, "10-br.conflist");
	free(primary);
	s = get(fx->conf, "10-br.conflist");
	j = parse(s);
	assert_string_equal(json_str(json_get(j, "name")), "br");
	assert_int_equal(json_array_len(json_get(j, "plugins")), 2);
	json_free(j);
	free(s);
	assert_int_equal(installer_install(&o, why, sizeof(why)), 0);
	assert_int_equal(count_files(fx->conf), 3);

	assert_int_equal(installer_uninstall(&o, why, sizeof(why)), 0);
	assert_null(get(fx->conf, "10-br.conflist"));
	assert_non_null(s = get(fx->conf, "10-br.conf"));
	assert_string_equal(s, single);
	free(s);
	assert_int_equal(count_files(fx->conf), 2);
}

static void test_install_failures(void **state)
{
	struct fx *fx = *state;
	struct installer_opts o = { .conf_dir = fx->conf, .bin_dir = fx->bin, .source = fx->src };
	char why[512] = "", *s;

	/* No configuration yet: the init container fails and is retried. */
	assert_int_equal(installer_install(&o, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "no CNI configuration"));
	/* A broken primary is left as it is. */
	put(fx->conf, "05-bad.conflist", "{\"cniVersion\":");
	assert_int_equal(installer_install(&o, why, sizeof(why)), -EINVAL);
	assert_non_null(s = get(fx->conf, "05-bad.conflist"));
	assert_string_equal(s, "{\"cniVersion\":");
	free(s);
	assert_null(get(fx->conf, "05-bad.conflist.knit-orig"));
	o.source = "/nonexistent/knit-cni";
	assert_true(installer_install(&o, why, sizeof(why)) < 0);
	assert_non_null(strstr(why, "/nonexistent/knit-cni"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_insert_conflist),
		cmocka_unit_test(test_insert_single_conf),
		cmocka_unit_test(test_insert_refused),
		cmocka_unit_test_setup_teardown(test_install_conflist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_install_single_conf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_install_failures, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
