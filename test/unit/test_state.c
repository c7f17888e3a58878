/* agent/state.c: round trip, atomic replacement, modes, and corrupt files
 * refused with the field named. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control/messages.h"
#include "json.h"
#include "state.h"
#include "wg/aead.h"

#define H8(c) c c c c c c c c
#define H64(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c)
#define PK(c) "\"privkey:" H64(c) "\""
#define KEYS "\"machineKey\":" PK("1") ",\"nodeKey\":" PK("2") ",\"discoKey\":" PK("3")

struct fx {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/knit-test-state-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/a/b/knitd.state", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(fx);
	return 0;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void test_roundtrip(void **state)
{
	struct fx *fx = *state;
	struct state *st, *back;
	struct register_response r = { 0 };
	struct netmap nm, nm2;
	struct netmap_prefix route;
	struct stat sb;
	char *tags[] = { "tag:ci" };
	char err[300] = "", sub[160];
	static const char full[] = "{\"type\":\"full\",\"seq\":7,\"self\":{\"name\":\"laptop\",\"nodeKey\":\"nodekey:"
				   H64("1") "\",\"addresses\":[\"100.64.0.5/32\"]},\"peers\":[{\"name\":\"db\","
				   "\"nodeKey\":\"nodekey:" H64("a") "\",\"addresses\":[\"100.64.0.7/32\"]}]}";
	struct json *j;

	assert_int_equal(state_new(&st), 0);
	assert_false(state_logged_in(st));
	assert_memory_not_equal(st->machine_key, st->node_key, 32);
	memset(st->control_key, 0x44, 32);
	st->has_control_key = true;
	st->login_server = strdup("http://knit-control.knit-system:8080");
	assert_true(netmap_prefix_parse(&route, "10.0.0.0/24"));
	assert_int_equal(state_set_prefs(st, "laptop", tags, 1, &route, 1), 0);
	r.device = strdup("laptop-3f9a2c");
	r.name = strdup("laptop");
	r.addresses = calloc(1, sizeof(*r.addresses));
	assert_non_null(r.addresses);
	assert_true(netmap_prefix_parse(&r.addresses[0], "100.64.0.5"));
	r.naddresses = 1;
	r.dns_suffix = strdup("tailnet.knit");
	state_set_device(st, &r);
	assert_null(r.device);
	assert_true(state_logged_in(st));
	j = json_parse(full, strlen(full), NULL);
	assert_true(netmap_from_json(j, &nm, sub, sizeof(sub)));
	json_free(j);
	assert_int_equal(state_set_netmap(st, &nm), 0);

	assert_int_equal(state_save(st, fx->path, err, sizeof(err)), 0);
	/* Saved again over itself: still one file, no temporary left. */
	assert_int_equal(state_save(st, fx->path, err, sizeof(err)), 0);
	snprintf(sub, sizeof(sub), "%s/a/b", fx->dir);
	assert_int_equal(count_entries(sub), 2); /* knitd.state and knitd.state.prev */
	assert_int_equal(stat(fx->path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	assert_int_equal(stat(sub, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	snprintf(sub, sizeof(sub), "%s/a", fx->dir);
	assert_int_equal(stat(sub, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);

	assert_int_equal(state_load(fx->path, &back, err, sizeof(err)), 0);
	assert_memory_equal(back->machine_key, st->machine_key, 32);
	assert_memory_equal(back->node_key, st->node_key, 32);
	assert_memory_equal(back->disco_key, st->disco_key, 32);
	assert_true(back->has_control_key);
	assert_memory_equal(back->control_key, st->control_key, 32);
	assert_string_equal(back->login_server, st->login_server);
	assert_string_equal(back->hostname, "laptop");
	assert_int_equal(back->ntags, 1);
	assert_string_equal(back->tags[0], "tag:ci");
	assert_int_equal(back->nroutes, 1);
	assert_true(netmap_prefix_equal(&back->routes[0], &route));
	assert_string_equal(back->device.device, "laptop-3f9a2c");
	assert_string_equal(back->device.dns_suffix, "tailnet.knit");
	assert_true(state_get_netmap(back, &nm2, err, sizeof(err)));
	assert_int_equal(nm2.seq, 7);
	assert_int_equal(nm2.npeers, 1);
	netmap_free(&nm2);

	/* Logout: the node key is dead, the machine key stays. */
	state_logout(back);
	assert_false(state_logged_in(back));
	assert_memory_not_equal(back->node_key, st->node_key, 32);
	assert_memory_equal(back->machine_key, st->machine_key, 32);
	assert_false(state_get_netmap(back, &nm2, err, sizeof(err)));
	assert_string_equal(err, "no netmap saved");
	assert_int_equal(state_save(back, fx->path, err, sizeof(err)), 0);
	state_free(back);
	assert_int_equal(state_load(fx->path, &back, err, sizeof(err)), 0);
	assert_false(state_logged_in(back));
	assert_null(back->netmap);
	state_free(back);

	netmap_free(&nm);
	state_free(st);
	state_free(NULL);
}

static void test_minimal_and_defaults(void **state)
{
	struct fx *fx = *state;
	struct state *st;
	char err[300];

	snprintf(fx->path, sizeof(fx->path), "%s/min.state", fx->dir);
	write_file(fx->path, "{\"version\":1," KEYS "}", 0600);
	assert_int_equal(state_load(fx->path, &st, err, sizeof(err)), 0);
	assert_false(st->has_control_key);
	assert_null(st->login_server);
	assert_null(st->hostname);
	assert_false(state_logged_in(st));
	assert_int_equal(st->machine_key[0], 0x11);
	state_free(st);
}

static void test_missing_and_modes(void **state)
{
	struct fx *fx = *state;
	struct state *st = NULL;
	char err[300], link[160];

	assert_int_equal(state_load(fx->path, &st, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "does not exist"));
	snprintf(fx->path, sizeof(fx->path), "%s/open.state", fx->dir);
	write_file(fx->path, "{\"version\":1," KEYS "}", 0644);
	assert_int_equal(state_load(fx->path, &st, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "is mode 0644 but holds private keys: make it private with chmod 600"));
	assert_null(st);
	/* Not through a symlink. */
	assert_int_equal(chmod(fx->path, 0600), 0);
	snprintf(link, sizeof(link), "%s/link.state", fx->dir);
	assert_int_equal(symlink(fx->path, link), 0);
	assert_int_equal(state_load(link, &st, err, sizeof(err)), -ELOOP);
	/* A directory where the state directory should be. */
	snprintf(link, sizeof(link), "%s/open.state/x.state", fx->dir);
	assert_int_equal(state_save(st, link, err, sizeof(err)) < 0, 1);
	assert_non_null(strstr(err, "cannot create the state directory"));
}

static void test_corrupt(void **state)
{
	static const struct {
		const char *text;
		const char *err;
	} cases[] = {
		{ "", "not JSON" },
		{ "{\"version\":1,", "not JSON" },
		{ "[]", "want a JSON object, got array" },
		{ "{" KEYS "}", "version: missing" },
		{ "{\"version\":2," KEYS "}", "version: want 1 (a newer knitd wrote this file?)" },
		{ "{\"version\":1,\"nodeKey\":" PK("2") ",\"discoKey\":" PK("3") "}", "machineKey: missing" },
		{ "{\"version\":1,\"machineKey\":" PK("1") ",\"nodeKey\":\"nodekey:" H64("2") "\",\"discoKey\":" PK("3") "}",
		  "nodeKey: want \"privkey:\" and 64 hex digits" },
		{ "{\"version\":1,\"machineKey\":" PK("1") ",\"nodeKey\":" PK("2") ",\"discoKey\":" PK("0") "}", "discoKey: all zero" },
		{ "{\"version\":1," KEYS ",\"controlKey\":\"ctrlkey:12\"}", "controlKey: want \"ctrlkey:\" and 64 hex digits" },
		{ "{\"version\":1," KEYS ",\"loginServer\":5}", "loginServer: want a string" },
		{ "{\"version\":1," KEYS ",\"prefs\":[]}", "prefs: want an object, got array" },
		{ "{\"version\":1," KEYS ",\"prefs\":{\"advertiseTags\":[\"ci\"]}}", "prefs.advertiseTags[0]: want \"tag:<name>\"" },
		{ "{\"version\":1," KEYS ",\"prefs\":{\"advertiseRoutes\":[\"10.0.0.0/24\",\"10/8\"]}}",
		  "prefs.advertiseRoutes[1]: want an IP prefix" },
		{ "{\"version\":1," KEYS ",\"device\":{\"device\":\"d\",\"name\":\"n\"}}", "device.addresses: missing" },
		/* (A bad peer is only skipped: see test_control_messages.) */
		{ "{\"version\":1," KEYS ",\"netmap\":{\"type\":\"full\",\"seq\":1,\"self\":{\"nodeKey\":\"x\","
		  "\"addresses\":[]},\"peers\":[]}}",
		  "netmap.self.nodeKey: want \"nodekey:\" and 64 hex digits" },
	};
	struct fx *fx = *state;
	struct state *st = NULL;
	char err[300];

	snprintf(fx->path, sizeof(fx->path), "%s/bad.state", fx->dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_file(fx->path, cases[i].text, 0600);
		err[0] = '\0';
		if (state_load(fx->path, &st, err, sizeof(err)) != -EINVAL)
			fail_msg("case %zu loaded: %s", i, cases[i].text);
		if (!strstr(err, cases[i].err))
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, cases[i].err);
		assert_non_null(strstr(err, fx->path));
		assert_null(st);
	}
}

static void truncate_half(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(truncate(path, sb.st_size / 2), 0);
}

/* A truncated state file: knitd comes back on the previous one, keeps the
 * bad one aside, and says what happened; with both bad it says so. */
static void test_prev_fallback(void **state)
{
	struct fx *fx = *state;
	struct state *st, *back = NULL;
	char err[1024], note[1024], prev[200], bad[200];
	struct stat sb;

	snprintf(prev, sizeof(prev), "%s.prev", fx->path);
	snprintf(bad, sizeof(bad), "%s.corrupt", fx->path);
	assert_int_equal(state_new(&st), 0);
	assert_int_equal(state_set_prefs(st, "one", NULL, 0, NULL, 0), 0);
	assert_int_equal(state_save(st, fx->path, err, sizeof(err)), 0);
	assert_int_equal(stat(prev, &sb), -1); /* nothing to keep the first time */
	assert_int_equal(state_set_prefs(st, "two", NULL, 0, NULL, 0), 0);
	assert_int_equal(state_save(st, fx->path, err, sizeof(err)), 0);
	assert_int_equal(stat(prev, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);

	/* A whole file loads as it is, with no note. */
	assert_int_equal(state_load_recover(fx->path, &back, err, sizeof(err), note, sizeof(note)), 0);
	assert_string_equal(back->hostname, "two");
	assert_string_equal(note, "");
	state_free(back);

	truncate_half(fx->path);
	assert_int_equal(state_load(fx->path, &back, err, sizeof(err)), -EINVAL);
	assert_int_equal(state_load_recover(fx->path, &back, err, sizeof(err), note, sizeof(note)), 0);
	assert_non_null(back);
	assert_string_equal(back->hostname, "one");
	assert_memory_equal(back->machine_key, st->machine_key, 32);
	assert_non_null(strstr(note, "unusable"));
	assert_non_null(strstr(note, "not JSON"));
	assert_non_null(strstr(note, bad));
	assert_non_null(strstr(note, prev));
	assert_int_equal(stat(fx->path, &sb), -1);
	assert_int_equal(stat(bad, &sb), 0);

	/* The next save writes the file again and leaves the good .prev be. */
	assert_int_equal(state_save(back, fx->path, err, sizeof(err)), 0);
	state_free(back);
	back = NULL;
	assert_int_equal(state_load(prev, &back, err, sizeof(err)), 0);
	assert_string_equal(back->hostname, "one");
	state_free(back);
	back = NULL;

	/* Both unusable: an error naming both, nothing loaded. */
	assert_int_equal(state_save(st, fx->path, err, sizeof(err)), 0);
	truncate_half(fx->path);
	truncate_half(prev);
	assert_int_equal(state_load_recover(fx->path, &back, err, sizeof(err), note, sizeof(note)), -EINVAL);
	assert_null(back);
	assert_non_null(strstr(err, fx->path));
	assert_non_null(strstr(err, "the previous state"));

	state_remove(fx->path);
	assert_int_equal(stat(fx->path, &sb), -1);
	assert_int_equal(stat(prev, &sb), -1);
	assert_int_equal(stat(bad, &sb), -1);
	state_free(st);
}

/* The loader's core on text, as the fuzzer drives it. */
static void test_parse_text(void **state)
{
	static const char ok[] = "{\"version\":1," KEYS "}";
	struct state *st = NULL;
	char err[300];

	assert_int_equal(state_parse(ok, strlen(ok), &st, err, sizeof(err)), 0);
	assert_non_null(st);
	state_free(st);
	st = NULL;
	assert_int_equal(state_parse(ok, strlen(ok) - 1, &st, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not JSON"));
	assert_int_equal(state_parse("{\"version\":1}", 13, &st, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "machineKey: missing");
	assert_null(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_minimal_and_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_and_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prev_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_text, setup, teardown),
	};

	aead_init(AEAD_IMPL_AUTO);
	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
