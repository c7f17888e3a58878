#include "ping.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "control/messages.h"
#include "localapi.h"
#include "loop.h"
#include "net/endpoint.h"
#include "paths.h"
#include "wg/engine.h"

#define PING_TIMEOUT_MS 5000
#define PING_INTERVAL_MS 500

struct ping {
	struct ping **list;
	struct loop *loop;
	struct engine *engine;
	struct localapi_reply *reply;
	int fd;
	uint16_t id, seq;
	uint64_t sent_at;
	struct sockaddr_in to;
	char name[128], ip[64];
	uint8_t node_key[32];
	struct loop_timer *timeout, *resend;
	struct paths *paths; /* a disco ping */
	struct ping *next;
};

static void ping_free(struct ping *p)
{
	for (struct ping **pp = p->list; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	if (p->paths)
		paths_ping_cancel(p->paths, p);
	if (p->fd >= 0) {
		loop_fd_del(p->loop, p->fd);
		close(p->fd);
	}
	loop_timer_free(p->timeout);
	loop_timer_free(p->resend);
	free(p);
}

void ping_free_all(struct ping **list)
{
	while (*list)
		ping_free(*list);
}

static uint16_t icmp_sum(const void *data, size_t len)
{
	const uint8_t *b = data;
	uint32_t s = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		s += (uint32_t)(b[i] << 8 | b[i + 1]);
	if (len & 1)
		s += (uint32_t)(b[len - 1] << 8);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return htons((uint16_t)~s);
}

static void ping_send(struct ping *p)
{
	struct icmphdr h = { .type = ICMP_ECHO };
	uint8_t pkt[64] = { 0 };

	h.un.echo.id = htons(p->id);
	h.un.echo.sequence = htons(++p->seq);
	memcpy(pkt, &h, sizeof(h));
	memcpy(pkt + sizeof(h), "knit ping", 9);
	((struct icmphdr *)pkt)->checksum = icmp_sum(pkt, sizeof(pkt));
	p->sent_at = loop_mono_ms();
	sendto(p->fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&p->to, sizeof(p->to));
}

static void on_resend(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct ping *p = arg;

	ping_send(p);
	loop_timer_arm(t, PING_INTERVAL_MS);
}

static void on_timeout(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct ping *p = arg;

	localapi_reply_error(p->reply, 504, "PingTimeout", "no answer from %s (%s) in %d s: is it online, and does the policy allow it?",
			     p->name, p->ip, PING_TIMEOUT_MS / 1000);
	ping_free(p);
}

static void on_readable(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct ping *p = arg;
	uint8_t buf[1500];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
		struct iphdr *ip = (struct iphdr *)buf;
		size_t hl = (size_t)ip->ihl * 4;
		struct icmphdr *h;
		if ((size_t)n < hl + sizeof(*h) || ip->saddr != p->to.sin_addr.s_addr)
			continue;
		h = (struct icmphdr *)(buf + hl);
		if (h->type != ICMP_ECHOREPLY || ntohs(h->un.echo.id) != p->id)
			continue;
		struct engine_peer_stats ps;
		char ep[80] = "";
		if (engine_peer_stats(p->engine, p->node_key, &ps) == 0 && ps.has_endpoint)
			endpoint_format(&ps.endpoint, ep, sizeof(ep));
		struct localapi_pong pong = {
			.peer = p->name,
			.ip = p->ip,
			.latency_ms = (double)(loop_mono_ms() - p->sent_at),
			.endpoint = *ep ? ep : NULL,
		};
		localapi_reply_pong(p->reply, &pong);
		ping_free(p);
		return;
	}
}

void ping_start(struct ping **list, struct loop *loop, struct engine *e, const struct netmap_node *n,
		const char *peer, struct localapi_reply *reply)
{
	const char *dev = engine_ifname(e);
	struct ping *p = calloc(1, sizeof(*p));

	if (!p) {
		localapi_reply_error(reply, 500, "NoMemory", "out of memory");
		return;
	}
	p->list = list;
	p->loop = loop;
	p->engine = e;
	p->reply = reply;
	p->fd = -1;
	snprintf(p->name, sizeof(p->name), "%s", n->name ? n->name : peer);
	memcpy(p->node_key, n->node_key, 32);
	for (size_t i = 0; i < n->naddresses; i++) {
		if (n->addresses[i].family == AF_INET) {
			p->to.sin_family = AF_INET;
			memcpy(&p->to.sin_addr, n->addresses[i].addr, 4);
			netmap_prefix_format(&n->addresses[i], true, p->ip, sizeof(p->ip));
		}
	}
	randombytes_buf(&p->id, sizeof(p->id));
	p->fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
	p->timeout = loop_timer_new(loop, on_timeout, p);
	p->resend = loop_timer_new(loop, on_resend, p);
	if (!p->to.sin_family || p->fd < 0 || !p->timeout || !p->resend ||
	    setsockopt(p->fd, SOL_SOCKET, SO_BINDTODEVICE, dev, (socklen_t)strlen(dev) + 1) ||
	    loop_fd_add(loop, p->fd, LOOP_READ, on_readable, p)) {
		localapi_reply_error(reply, 500, "PingFailed", "cannot ping %s: %s", peer,
				     p->to.sin_family ? strerror(errno) : "it has no IPv4 address");
		if (p->fd >= 0)
			close(p->fd);
		loop_timer_free(p->timeout);
		loop_timer_free(p->resend);
		free(p);
		return;
	}
	p->next = *list;
	*list = p;
	ping_send(p);
	loop_timer_arm(p->resend, PING_INTERVAL_MS);
	loop_timer_arm(p->timeout, PING_TIMEOUT_MS);
}

static void on_disco_pong(void *arg, int err, const struct paths_info *via, double latency_ms)
{
	struct ping *p = arg;
	char ep[80] = "";

	p->paths = NULL; /* paths is done with it */
	if (err == -ECANCELED) {
		localapi_reply_error(p->reply, 503, "PingCanceled", "the identity went away");
	} else if (err) {
		localapi_reply_error(p->reply, 504, "PingTimeout",
				     "no answer from %s in %d s: is it online, and does the policy allow it?", p->name,
				     PATHS_PING_TIMEOUT_MS / 1000);
	} else {
		if (via->kind == PATHS_DIRECT)
			endpoint_format(&via->addr, ep, sizeof(ep));
		localapi_reply_pong(p->reply, &(struct localapi_pong){
						      .peer = p->name,
						      .ip = p->ip,
						      .latency_ms = latency_ms,
						      .endpoint = *ep ? ep : NULL,
						      .relay = via->kind == PATHS_RELAY ? via->region : 0,
					      });
	}
	ping_free(p);
}

void ping_start_disco(struct ping **list, struct paths *paths, const struct netmap_node *n, const char *peer,
		      struct localapi_reply *reply)
{
	struct ping *p = calloc(1, sizeof(*p));
	int err;

	if (!p) {
		localapi_reply_error(reply, 500, "NoMemory", "out of memory");
		return;
	}
	p->list = list;
	p->reply = reply;
	p->fd = -1;
	snprintf(p->name, sizeof(p->name), "%s", n->name ? n->name : peer);
	if (n->naddresses)
		netmap_prefix_format(&n->addresses[0], true, p->ip, sizeof(p->ip));
	if ((err = paths_ping(paths, n->node_key, on_disco_pong, p))) {
		localapi_reply_error(reply, 500, "PingFailed", "cannot ping %s: %s", peer, strerror(-err));
		free(p);
		return;
	}
	p->paths = paths;
	p->next = *list;
	*list = p;
}
