#include "probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"

/* Loop thread only. */
struct probe {
	struct loop *loop;
	uint16_t port;
	char request[256];
	uint32_t every_ms, timeout_ms;
	struct loop_timer *tick, *deadline;
	int fd; /* the probe in flight; -1 when none */
	size_t sent;
	char resp[16];
	size_t got;
	uint64_t started_ms, last_ok_ms;
	unsigned long failures;
};

static void finish(struct probe *p, bool ok)
{
	if (p->fd >= 0) {
		loop_fd_del(p->loop, p->fd);
		close(p->fd);
		p->fd = -1;
	}
	loop_timer_disarm(p->deadline);
	if (ok)
		p->last_ok_ms = loop_mono_ms();
	else
		p->failures++;
	loop_timer_arm(p->tick, p->every_ms);
}

static void on_io(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct probe *p = arg;
	size_t len = strlen(p->request);
	ssize_t n;

	if (p->sent < len) {
		n = send(fd, p->request + p->sent, len - p->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			finish(p, false);
			return;
		}
		p->sent += (size_t)n;
		if (p->sent == len)
			loop_fd_modify(loop, fd, LOOP_READ);
		return;
	}
	n = recv(fd, p->resp + p->got, sizeof(p->resp) - 1 - p->got, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		finish(p, false);
		return;
	}
	p->got += (size_t)n;
	p->resp[p->got] = '\0';
	if (p->got >= 8)
		finish(p, !strncmp(p->resp, "HTTP/1.", 7));
}

static void on_deadline(struct loop *loop, struct loop_timer *t, void *arg)
{
	finish(arg, false);
}

static void on_tick(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct probe *p = arg;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(p->port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	p->sent = p->got = 0;
	if (p->fd < 0 || (connect(p->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS) ||
	    loop_fd_add(loop, p->fd, LOOP_WRITE, on_io, p)) {
		finish(p, false);
		return;
	}
	loop_timer_arm(p->deadline, p->timeout_ms);
}

struct probe *probe_new(struct loop *loop, uint16_t port, const char *path, uint32_t every_ms,
			uint32_t timeout_ms)
{
	struct probe *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->loop = loop;
	p->port = port;
	p->fd = -1;
	p->every_ms = every_ms;
	p->timeout_ms = timeout_ms;
	snprintf(p->request, sizeof(p->request), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: knit-probe\r\n\r\n",
		 path);
	p->tick = loop_timer_new(loop, on_tick, p);
	p->deadline = loop_timer_new(loop, on_deadline, p);
	if (!p->tick || !p->deadline) {
		probe_free(p);
		return NULL;
	}
	p->started_ms = loop_mono_ms();
	loop_timer_arm(p->tick, 0);
	return p;
}

uint64_t probe_silent_ms(const struct probe *p)
{
	return loop_mono_ms() - (p->last_ok_ms ? p->last_ok_ms : p->started_ms);
}

unsigned long probe_failures(const struct probe *p)
{
	return p->failures;
}

void probe_free(struct probe *p)
{
	if (!p)
		return;
	if (p->fd >= 0) {
		loop_fd_del(p->loop, p->fd);
		close(p->fd);
	}
	loop_timer_free(p->tick);
	loop_timer_free(p->deadline);
	free(p);
}
