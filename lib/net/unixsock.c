#include "net/unixsock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int address(const char *path, struct sockaddr_un *sun)
{
	size_t len = strlen(path);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (!len)
		return -EINVAL;
	if (len >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	memcpy(sun->sun_path, path, len + 1);
	return 0;
}

/* 0: something accepted; otherwise the negative errno of connect(). */
static int probe(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), err = 0;

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) < 0)
		err = -errno;
	close(fd);
	return err;
}

bool unixsock_answers(const char *path)
{
	struct sockaddr_un sun;

	return address(path, &sun) == 0 && probe(&sun) == 0;
}

/* A socket file nobody accepts on is left over from a crash: remove it.
 * One that answers belongs to a live process, and a file that is not a
 * socket is someone else's (a mistyped --socket): keep our hands off. */
static int clear_stale(const struct sockaddr_un *sun)
{
	struct stat st;
	int err;

	if (lstat(sun->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	err = probe(sun);
	if (err == 0)
		return -EADDRINUSE;
	if (err != -ECONNREFUSED)
		return err;
	if (unlink(sun->sun_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int make_parent(const char *path)
{
	char *dir = strdup(path), *slash;
	int err = 0;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			err = -errno;
	}
	free(dir);
	return err;
}

int unixsock_listen(struct unixsock *s, const char *path, int backlog)
{
	struct sockaddr_un sun;
	struct stat st;
	bool bound = false;
	int err;

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	if ((err = address(path, &sun)) || (err = make_parent(path)) || (err = clear_stale(&sun)))
		goto out;
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		err = -errno;
		goto out;
	}
	if (bind(s->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		err = -errno;
		goto out;
	}
	bound = true;
	/* Before listen() nobody can connect, so the mode is right in time. */
	if (chmod(sun.sun_path, 0600) < 0 || lstat(sun.sun_path, &st) < 0 || listen(s->fd, backlog) < 0) {
		err = -errno;
		goto out;
	}
	memcpy(s->path, sun.sun_path, sizeof(s->path));
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	err = 0;
out:
	if (err) {
		if (bound)
			unlink(sun.sun_path);
		if (s->fd >= 0)
			close(s->fd);
		s->fd = -1;
	}
	return err;
}

void unixsock_close(struct unixsock *s)
{
	struct stat st;

	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (s->path[0] && lstat(s->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == s->dev &&
	    st.st_ino == s->ino)
		unlink(s->path);
	s->path[0] = '\0';
}
