/* lib/net/unixsock.c: the mode, the parent directory, and what may be
 * replaced at the path: only a socket nobody answers on. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/unixsock.h"

struct fx {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_unixsock.XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/sub/s.sock", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(fx);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void assert_file(const char *path, const char *text)
{
	char buf[64] = "";
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, text);
}

static void test_listen_close(void **state)
{
	struct fx *fx = *state;
	struct unixsock s, other;
	struct stat st;

	assert_int_equal(unixsock_listen(&s, fx->path, 4), 0);
	assert_true(s.fd >= 0);
	assert_int_equal(fcntl(s.fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
	assert_int_equal(lstat(fx->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_true(unixsock_answers(fx->path));
	/* A live server is not displaced. */
	assert_int_equal(unixsock_listen(&other, fx->path, 4), -EADDRINUSE);
	assert_int_equal(other.fd, -1);
	assert_true(unixsock_answers(fx->path));
	unixsock_close(&s);
	assert_int_equal(lstat(fx->path, &st), -1);
	assert_false(unixsock_answers(fx->path));
	unixsock_close(&s); /* again: a no-op */
}

/* Bound, never listened, closed: what a crash leaves behind. */
static void test_stale_replaced(void **state)
{
	struct fx *fx = *state;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct unixsock s;
	int fd;

	assert_int_equal(unixsock_listen(&s, fx->path, 4), 0); /* makes sub/ */
	unixsock_close(&s);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(strlen(fx->path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, fx->path, strlen(fx->path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	assert_false(unixsock_answers(fx->path));
	assert_int_equal(unixsock_listen(&s, fx->path, 4), 0);
	assert_true(unixsock_answers(fx->path));
	unixsock_close(&s);
}

/* A regular file, a directory or a symlink at the path is somebody
 * else's: refused, and left exactly as it was. */
static void test_not_a_socket_left_intact(void **state)
{
	struct fx *fx = *state;
	char sub[128], target[160];
	struct unixsock s;
	struct stat st;

	snprintf(sub, sizeof(sub), "%s/sub", fx->dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	write_file(fx->path, "precious\n");
	assert_int_equal(unixsock_listen(&s, fx->path, 4), -EEXIST);
	assert_int_equal(s.fd, -1);
	assert_file(fx->path, "precious\n");
	unixsock_close(&s); /* nothing to remove: the file stays */
	assert_file(fx->path, "precious\n");

	assert_int_equal(unlink(fx->path), 0);
	assert_int_equal(mkdir(fx->path, 0700), 0);
	assert_int_equal(unixsock_listen(&s, fx->path, 4), -EEXIST);
	assert_int_equal(lstat(fx->path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(rmdir(fx->path), 0);

	snprintf(target, sizeof(target), "%s/target", fx->dir);
	write_file(target, "also precious\n");
	assert_int_equal(symlink(target, fx->path), 0);
	assert_int_equal(unixsock_listen(&s, fx->path, 4), -EEXIST);
	assert_int_equal(lstat(fx->path, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_file(target, "also precious\n");
}

/* The file was replaced by another server after we bound it: closing
 * ours must not remove theirs. */
static void test_close_leaves_a_successor(void **state)
{
	struct fx *fx = *state;
	struct unixsock a, b;

	assert_int_equal(unixsock_listen(&a, fx->path, 4), 0);
	assert_int_equal(unlink(fx->path), 0);
	assert_int_equal(unixsock_listen(&b, fx->path, 4), 0);
	unixsock_close(&a);
	assert_true(unixsock_answers(fx->path));
	unixsock_close(&b);
	assert_false(unixsock_answers(fx->path));
}

static void test_bad_paths(void **state)
{
	struct unixsock s;
	char longpath[200];

	(void)state;
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(unixsock_listen(&s, longpath, 4), -ENAMETOOLONG);
	assert_int_equal(unixsock_listen(&s, "", 4), -EINVAL);
	assert_false(unixsock_answers(longpath));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_listen_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_socket_left_intact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_leaves_a_successor, setup, teardown),
		cmocka_unit_test(test_bad_paths),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
