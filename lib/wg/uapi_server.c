#include "wg/uapi_server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "net/unixsock.h"

/* A set for tens of thousands of peers fits; anything bigger is abuse. */
#define REQUEST_MAX (16u << 20)
#define RESPONSE_MAX (64u << 20)
#define MAX_CONNS 64

struct conn {
	struct uapi_server *srv;
	int fd;
	struct buf in, out;
	bool closing; /* flush out, then close */
	struct conn *prev, *next;
};

struct uapi_server {
	struct loop *loop;
	const struct uapi_ops *ops;
	void *arg;
	struct unixsock sock;
	struct conn *conns;
	size_t nconns;
};

static void conn_free(struct conn *c)
{
	struct uapi_server *s = c->srv;

	loop_fd_del(s->loop, c->fd);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	/* requests and responses may hold keys */
	buf_free_secure(&c->in);
	buf_free_secure(&c->out);
	free(c);
}

static void respond_errno(struct conn *c, int err)
{
	if (uapi_format_errno(&c->out, err) < 0)
		c->closing = true;
}

static void do_get(struct conn *c)
{
	struct uapi_server *s = c->srv;
	struct uapi_device d;
	size_t mark = c->out.len;
	int ret;

	memset(&d, 0, sizeof(d));
	ret = s->ops->get(s->arg, &d);
	if (!ret) {
		ret = uapi_format_get(&d, &c->out);
		if (ret == -EINVAL) {
			/* a snapshot we cannot print: say so instead */
			c->out.len = mark;
			respond_errno(c, ret);
			ret = 0;
		}
	} else {
		respond_errno(c, ret);
		ret = 0;
	}
	uapi_device_release(&d);
	if (ret < 0) /* the buffer gave up: it is empty now, drop the client */
		c->closing = true;
}

static void do_set(struct conn *c, const char *body, size_t len)
{
	struct uapi_server *s = c->srv;
	struct uapi_config *cfg;
	struct uapi_error err;
	int ret;

	if (!uapi_parse_set(body, len, &cfg, &err)) {
		log_warn("uapi set refused", "line=%u errno=%d reason=\"%s\"", err.line, err.errnum, err.msg);
		respond_errno(c, -err.errnum);
		return;
	}
	ret = s->ops->set(s->arg, cfg);
	uapi_config_free(cfg);
	respond_errno(c, ret);
}

/* Handles every complete request in c->in. A request ends with the first
 * empty line; an unknown operation ends the connection (as wireguard-go). */
static void handle_requests(struct conn *c)
{
	for (;;) {
		const char *p = (const char *)c->in.data;
		const char *end = c->in.len ? memmem(p, c->in.len, "\n\n", 2) : NULL;
		size_t n;

		if (!end)
			return;
		n = (size_t)(end - p) + 2;
		if (!strncmp(p, "get=1\n", 6)) {
			if (n == 7)
				do_get(c);
			else
				respond_errno(c, -EINVAL); /* trailing lines after get=1 */
		} else if (!strncmp(p, "set=1\n", 6)) {
			do_set(c, p + 6, n - 6);
		} else {
			c->closing = true;
			buf_reset(&c->in);
			return;
		}
		buf_consume(&c->in, n);
		if (c->closing)
			return;
	}
}

/* Writes what it can; returns false once the connection is gone. */
static bool flush(struct conn *c)
{
	while (c->out.len) {
		ssize_t w = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			loop_fd_modify(c->srv->loop, c->fd, LOOP_READ | LOOP_WRITE);
			return true;
		}
		if (w <= 0) {
			conn_free(c);
			return false;
		}
		buf_consume(&c->out, (size_t)w);
	}
	if (c->closing) {
		conn_free(c);
		return false;
	}
	loop_fd_modify(c->srv->loop, c->fd, LOOP_READ);
	return true;
}

static void on_conn(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct conn *c = arg;
	bool eof = false;

	if (events & (LOOP_READ | LOOP_HUP | LOOP_ERROR)) {
		for (;;) {
			int err = 0;
			uint8_t *p = buf_reserve(&c->in, 65536 < REQUEST_MAX - c->in.len ? 65536 : REQUEST_MAX - c->in.len, &err);
			ssize_t r;
			if (!p || c->in.len >= REQUEST_MAX) {
				log_warn("uapi request too large", "max=%u", REQUEST_MAX);
				conn_free(c);
				return;
			}
			r = recv(fd, p, 65536 < REQUEST_MAX - c->in.len ? 65536 : REQUEST_MAX - c->in.len, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (r <= 0) {
				eof = true;
				break;
			}
			buf_commit(&c->in, (size_t)r);
		}
		handle_requests(c);
		if (eof) /* an unfinished request dies with its client */
			c->closing = true;
	}
	flush(c);
}

static void on_accept(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct uapi_server *s = arg;

	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *c;

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		if (s->nconns >= MAX_CONNS || !(c = calloc(1, sizeof(*c)))) {
			close(cfd);
			continue;
		}
		c->srv = s;
		c->fd = cfd;
		buf_init(&c->in, REQUEST_MAX);
		buf_init(&c->out, RESPONSE_MAX);
		if (loop_fd_add(loop, cfd, LOOP_READ, on_conn, c) < 0) {
			close(cfd);
			free(c);
			continue;
		}
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->nconns++;
	}
}

int uapi_server_open(struct uapi_server **out, struct loop *loop, const char *dir, const char *ifname,
		     const struct uapi_ops *ops, void *arg)
{
	struct uapi_server *s = calloc(1, sizeof(*s));
	char path[sizeof(s->sock.path)];
	int n, ret;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->sock.fd = -1;
	s->loop = loop;
	s->ops = ops;
	s->arg = arg;
	if (!dir)
		dir = UAPI_SERVER_DIR;
	if (!ifname[0] || strchr(ifname, '/')) {
		ret = -EINVAL;
		goto out;
	}
	n = snprintf(path, sizeof(path), "%s/%s.sock", dir, ifname);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	ret = unixsock_listen(&s->sock, path, 16);
	if (ret)
		goto out;
	ret = loop_fd_add(loop, s->sock.fd, LOOP_READ, on_accept, s);
	if (ret)
		goto out;
	log_info("uapi listening", "path=%s", s->sock.path);
	*out = s;
out:
	if (ret) {
		unixsock_close(&s->sock);
		free(s);
	}
	return ret;
}

void uapi_server_close(struct uapi_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_free(s->conns);
	loop_fd_del(s->loop, s->sock.fd);
	unixsock_close(&s->sock);
	free(s);
}

const char *uapi_server_path(const struct uapi_server *s)
{
	return s->sock.path;
}
