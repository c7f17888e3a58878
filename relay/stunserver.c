/* STUN server; see stunserver.h. */
#include "stunserver.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "net/endpoint.h"
#include "stun/stun.h"

#define SOFTWARE "knit-relay"

struct stunserver {
	struct loop *loop;
	int fd;
	uint16_t port;
	struct metric *ok, *bad, *err420;
};

static void on_readable(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct stunserver *s = arg;

	for (int i = 0; i < 256; i++) {
		uint8_t in[STUN_MAX_MSG + 1], out[STUN_MAX_MSG];
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		struct stun_msg m;
		ssize_t n = recvfrom(fd, in, sizeof(in), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		size_t len;

		if (n < 0)
			break;
		if (!stun_parse(in, (size_t)n, &m, NULL, 0) || m.type != STUN_BINDING_REQUEST) {
			metrics_inc(s->bad);
			continue;
		}
		if (m.nunknown) {
			len = stun_binding_error(out, sizeof(out), &m, 420);
			metrics_inc(s->err420);
		} else {
			len = stun_binding_response(out, sizeof(out), m.txid, (struct sockaddr *)&from, SOFTWARE);
			metrics_inc(s->ok);
		}
		if (len)
			sendto(fd, out, len, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
	}
}

int stunserver_new(struct loop *loop, const char *addr, struct metrics *m, struct stunserver **out)
{
	struct stunserver *s;
	struct endpoint ep;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	const char *why;
	int ret;

	if (!endpoint_parse(&ep, addr, &why))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->fd = socket(ep.addr.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		ret = -errno;
		goto out;
	}
	if (ep.addr.sa.sa_family == AF_INET6) {
		int zero = 0;

		setsockopt(s->fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	}
	if (bind(s->fd, &ep.addr.sa, endpoint_socklen(&ep)) != 0 ||
	    getsockname(s->fd, (struct sockaddr *)&ss, &sl) != 0) {
		ret = -errno;
		goto out;
	}
	s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						 : ((struct sockaddr_in *)&ss)->sin_port);
	if (m) {
		struct metrics_family *f = metrics_counter_new(m, "knit_relay_stun_requests_total",
			"STUN datagrams by result: ok (answered), unknown_attribute (420), bad (dropped).",
			(const char *const[]){ "result", NULL });

		if (f) {
			s->ok = METRICS_WITH(f, "ok");
			s->err420 = METRICS_WITH(f, "unknown_attribute");
			s->bad = METRICS_WITH(f, "bad");
		}
	}
	if ((ret = loop_fd_add(loop, s->fd, LOOP_READ, on_readable, s)))
		goto out;
	*out = s;
	return 0;
out:
	if (s->fd >= 0)
		close(s->fd);
	free(s);
	return ret;
}

void stunserver_free(struct stunserver *s)
{
	if (!s)
		return;
	loop_fd_del(s->loop, s->fd);
	close(s->fd);
	free(s);
}

uint16_t stunserver_port(const struct stunserver *s)
{
	return s->port;
}
