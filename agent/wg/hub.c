#include "wg/hub.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <unistd.h>

#include "log.h"
#include "wg/aead.h"
#include "wg/engine.h"
#include "wg/noise.h"
#include "wg/peer.h"
#include "wg/pool.h"
#include "wg/ratelimiter.h"
#include "wg/receive.h"

#define RX_BATCH 128
/* hub_send() waits up to SEND_WAIT_MS * SEND_WAIT_ROUNDS for buffer room. */
#define SEND_WAIT_MS 20
#define SEND_WAIT_ROUNDS 50

static void efd_signal(int fd)
{
	uint64_t one = 1;
	ssize_t r;

	do
		r = write(fd, &one, sizeof(one));
	while (r < 0 && errno == EINTR);
}

static void efd_drain(int fd)
{
	uint64_t v;
	ssize_t r;

	do
		r = read(fd, &v, sizeof(v));
	while (r < 0 && errno == EINTR);
}

void hub_wake(struct hub *h)
{
	efd_signal(h->wake_efd);
}

/* ---- quiescent states ---- */

void hub_qs_register(struct hub *h, struct hub_qs *qs)
{
	atomic_store(&qs->seen, 0);
	pthread_mutex_lock(&h->qs_lock);
	qs->next = h->qs;
	h->qs = qs;
	pthread_mutex_unlock(&h->qs_lock);
}

void hub_qs_unregister(struct hub *h, struct hub_qs *qs)
{
	pthread_mutex_lock(&h->qs_lock);
	for (struct hub_qs **pp = &h->qs; *pp; pp = &(*pp)->next) {
		if (*pp == qs) {
			*pp = qs->next;
			break;
		}
	}
	pthread_mutex_unlock(&h->qs_lock);
}

void hub_synchronize(struct hub *h)
{
	uint64_t target = atomic_fetch_add(&h->epoch, 1) + 1;

	pthread_mutex_lock(&h->qs_lock);
	for (struct hub_qs *qs = h->qs; qs; qs = qs->next) {
		uint64_t seen;
		while ((seen = atomic_load(&qs->seen)) != 0 && seen < target)
			usleep(20);
	}
	pthread_mutex_unlock(&h->qs_lock);
}

/* ---- sockets ---- */

static int fam_slot(int family)
{
	return family == AF_INET6 ? 1 : 0;
}

/* Opens an IPv4 and (where the host has IPv6) an IPv6 socket on one port. */
static int open_pair(uint16_t port, struct udp *out[2])
{
	int ret;

	out[0] = out[1] = NULL;
	for (int attempt = 0; attempt < 8; attempt++) {
		ret = udp_open(&out[0], AF_INET, port, 0);
		if (ret)
			return ret;
		ret = udp_open(&out[1], AF_INET6, udp_port(out[0]), 0);
		if (!ret)
			return 0;
		if (ret == -EAFNOSUPPORT || ret == -EADDRNOTAVAIL) {
			log_info("no IPv6 socket", "errno=%d", -ret);
			return 0;
		}
		udp_close(out[0]);
		out[0] = NULL;
		/* The kernel's pick for IPv4 was taken for IPv6: pick again. */
		if (port || ret != -EADDRINUSE)
			return ret;
	}
	return -EADDRINUSE;
}

static int apply_fwmark(struct udp *u, uint32_t mark)
{
	if (u && setsockopt(udp_fd(u), SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
		return -errno;
	return 0;
}

static int rx_watch(struct hub *h, struct udp *u, int op)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = u };

	if (!u)
		return 0;
	return epoll_ctl(h->rx_epfd, op, udp_fd(u), &ev) < 0 ? -errno : 0;
}

/* A datagram bigger than a small slot (a peer's large MTU): a large slot. */
static int rx_grow(void *arg, struct udp_msg *m, size_t len)
{
	struct hub *h = arg;

	if (len > POOL_LARGE_SIZE)
		return -EMSGSIZE;
	if (!pool_swap_large(h->pool, &m->data)) {
		int r = pool_large_wait(&h->rx_large_wait, loop_mono_ms());

		if (r == -ENOMEM)
			atomic_fetch_add(&h->st_rx_no_large, 1);
		return r;
	}
	h->rx_large_wait = 0;
	m->cap = POOL_LARGE_SIZE;
	return 0;
}

int hub_set_port(struct hub *h, uint16_t port)
{
	struct udp *fresh[2], *old[2];
	int ret;

	if (port && port == h->port)
		return 0;
	ret = open_pair(port, fresh);
	if (ret)
		return ret;
	for (int i = 0; i < 2 && !ret; i++)
		ret = fresh[i] ? udp_set_grow(fresh[i], rx_grow, h) : 0;
	if (ret) {
		udp_close(fresh[0]);
		udp_close(fresh[1]);
		return ret;
	}
	for (int i = 0; i < 2 && h->fwmark; i++)
		apply_fwmark(fresh[i], h->fwmark);
	for (int i = 0; i < 2; i++) {
		pthread_mutex_lock(&h->sock[i].send_lock);
		old[i] = h->sock[i].udp;
		__atomic_store_n(&h->sock[i].udp, fresh[i], __ATOMIC_SEQ_CST);
		pthread_mutex_unlock(&h->sock[i].send_lock);
		if (old[i])
			epoll_ctl(h->rx_epfd, EPOLL_CTL_DEL, udp_fd(old[i]), NULL);
		rx_watch(h, fresh[i], EPOLL_CTL_ADD);
	}
	h->port = udp_port(fresh[0]);
	/* The receive thread may still be reading an old socket. */
	hub_synchronize(h);
	for (int i = 0; i < 2; i++)
		udp_close(old[i]);
	log_info("listening", "port=%u ipv6=%s", h->port, fresh[1] ? "yes" : "no");
	return 0;
}

uint16_t hub_port(const struct hub *h)
{
	return h->port;
}

int hub_set_fwmark(struct hub *h, uint32_t mark)
{
	int ret = 0;

	for (int i = 0; i < 2 && !ret; i++) {
		pthread_mutex_lock(&h->sock[i].send_lock);
		ret = apply_fwmark(h->sock[i].udp, mark);
		pthread_mutex_unlock(&h->sock[i].send_lock);
	}
	if (!ret)
		h->fwmark = mark;
	return ret;
}

uint32_t hub_fwmark(const struct hub *h)
{
	return h->fwmark;
}

int hub_send(struct hub *h, struct udp_msg *msgs, size_t n)
{
	struct hub_socket *s;
	size_t done = 0;
	int ret = 0, waits = 0;

	if (!n)
		return 0;
	s = &h->sock[fam_slot(msgs[0].ep.addr.sa.sa_family)];
	pthread_mutex_lock(&s->send_lock);
	if (!s->udp) {
		ret = -EAFNOSUPPORT;
		goto out;
	}
	while (done < n) {
		int r = udp_send(s->udp, msgs + done, n - done);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r == -EAGAIN && waits++ < SEND_WAIT_ROUNDS) {
			/* Socket buffer full: wait for room rather than drop a
			 * burst that TCP inside would have to retransmit. */
			struct pollfd pfd = { .fd = udp_fd(s->udp), .events = POLLOUT };
			poll(&pfd, 1, SEND_WAIT_MS);
			continue;
		}
		ret = r;
		break;
	}
out:
	pthread_mutex_unlock(&s->send_lock);
	return done ? (int)done : ret;
}

int hub_send_one(struct hub *h, const struct endpoint *to, const void *pkt, size_t len)
{
	struct udp_msg m = { .data = (uint8_t *)pkt, .len = len, .cap = len, .ep = *to };

	return hub_send(h, &m, 1);
}

void hub_stats(struct hub *h, struct hub_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->handshakes_queued = atomic_load(&h->st_hs_queued);
	out->handshakes_dropped = atomic_load(&h->st_hs_dropped);
	out->cookie_replies_sent = atomic_load(&h->st_cookies);
	out->handshakes_ratelimited = atomic_load(&h->st_hs_limited);
	out->rx_invalid = atomic_load(&h->st_invalid);
	out->rx_other = atomic_load(&h->st_other);
	out->rx_unknown_index = atomic_load(&h->st_unknown);
	for (int i = 0; i < 2; i++) {
		pthread_mutex_lock(&h->sock[i].send_lock);
		if (h->sock[i].udp)
			udp_stats(h->sock[i].udp, &out->udp[i]);
		pthread_mutex_unlock(&h->sock[i].send_lock);
	}
	out->pool_free = pool_available(h->pool);
	out->pool_size = pool_size(h->pool);
	pool_large_stats(h->pool, &out->pool_large);
	out->rx_no_large = atomic_load(&h->st_rx_no_large);
}

/* ---- handshake queue ---- */

static bool handshake_enqueue(struct hub *h, const uint8_t *msg, size_t len, const struct endpoint *from,
			      const uint8_t *relay_src)
{
	struct hub_handshake *slot;
	size_t room;
	bool ok = false;

	if (len > sizeof(slot->msg))
		return false;
	room = len == MESSAGE_COOKIE_LEN || cookie_msg_has_mac2(msg, len) ? h->hs_cap : h->hs_cap - h->hs_cap / 4;
	pthread_mutex_lock(&h->hs_lock);
	if (h->hs_count < room) {
		slot = &h->hs_ring[(h->hs_head + h->hs_count) % h->hs_cap];
		memcpy(slot->msg, msg, len);
		slot->len = (uint16_t)len;
		slot->from = *from;
		slot->relayed = relay_src != NULL;
		if (relay_src)
			memcpy(slot->relay_src, relay_src, sizeof(slot->relay_src));
		h->hs_count++;
		ok = true;
	}
	pthread_mutex_unlock(&h->hs_lock);
	atomic_fetch_add(ok ? &h->st_hs_queued : &h->st_hs_dropped, 1);
	return ok;
}

bool hub_handshake_enqueue(struct hub *h, const uint8_t *msg, size_t len, const struct endpoint *from)
{
	return handshake_enqueue(h, msg, len, from, NULL);
}

bool hub_handshake_enqueue_relayed(struct hub *h, const uint8_t *msg, size_t len, const uint8_t src[32])
{
	struct endpoint none = { 0 };

	none.addr.sa.sa_family = AF_UNSPEC;
	return handshake_enqueue(h, msg, len, &none, src);
}

bool hub_handshake_dequeue(struct hub *h, struct hub_handshake *out, size_t *left)
{
	bool ok = false;

	pthread_mutex_lock(&h->hs_lock);
	if (h->hs_count) {
		*out = h->hs_ring[h->hs_head];
		h->hs_head = (h->hs_head + 1) % h->hs_cap;
		h->hs_count--;
		*left = h->hs_count;
		ok = true;
	}
	pthread_mutex_unlock(&h->hs_lock);
	return ok;
}

/* ---- the receive thread ---- */

/* Whether u is still one of the hub's sockets. hub_set_port() swaps
 * before it synchronizes, so a reader that checks this after reporting a
 * quiescent state never uses a socket that may be closed. */
static bool socket_current(struct hub *h, const struct udp *u)
{
	return __atomic_load_n(&h->sock[0].udp, __ATOMIC_SEQ_CST) == u ||
	       __atomic_load_n(&h->sock[1].udp, __ATOMIC_SEQ_CST) == u;
}

/* Reads one socket until it is drained: udp_recv() keeps GRO runs it has
 * not handed out yet, which epoll cannot see. */
static void rx_drain(struct hub *h, struct udp *u)
{
	uint8_t *bufs[RX_BATCH];
	struct udp_msg msgs[RX_BATCH];

	while (!atomic_load(&h->stopping) && socket_current(h, u)) {
		size_t got = pool_get(h->pool, bufs, RX_BATCH);
		int r;

		if (!got) {
			/* Every slot is in flight: help them along. */
			if (!queueing_help(&h->queue, 4))
				usleep(50);
			continue;
		}
		for (size_t i = 0; i < got; i++)
			msgs[i] = (struct udp_msg){ .data = bufs[i], .cap = POOL_BUF_SIZE };
		r = udp_recv(u, msgs, got);
		/* rx_grow() may have swapped slots for large ones. */
		for (size_t i = 0; i < got; i++)
			bufs[i] = msgs[i].data;
		if (r == -ENOBUFS) {
			/* A datagram waits for a large slot: help free one. */
			pool_put(h->pool, bufs, got);
			if (!queueing_help(&h->queue, 4))
				usleep(50);
			continue;
		}
		if (r <= 0) {
			pool_put(h->pool, bufs, got);
			if (r != -EAGAIN && r != -EINTR)
				log_warn("udp receive failed", "errno=%d", -r);
			return;
		}
		/* udp_recv() fills slots in order: bufs[r..got) are unused. */
		pool_put(h->pool, bufs + r, got - (size_t)r);
		receive_datagrams(h, msgs, (size_t)r);
		if (h->cfg.readers_help)
			queueing_help(&h->queue, SIZE_MAX);
		hub_qs_online(h, &h->rx_qs);
	}
}

static void *rx_main(void *arg)
{
	struct hub *h = arg;
	struct epoll_event ev[4];

	hub_qs_register(h, &h->rx_qs);
	queueing_thread_helps(h->cfg.readers_help);
	while (!atomic_load(&h->stopping)) {
		int n;

		hub_qs_offline(&h->rx_qs);
		n = epoll_wait(h->rx_epfd, ev, 4, -1);
		hub_qs_online(h, &h->rx_qs);
		if (n < 0 && errno != EINTR) {
			log_error("receive thread: epoll failed", "errno=%d", errno);
			break;
		}
		for (int i = 0; i < n && !atomic_load(&h->stopping); i++)
			if (ev[i].data.ptr)
				rx_drain(h, ev[i].data.ptr);
	}
	hub_qs_offline(&h->rx_qs);
	hub_qs_unregister(h, &h->rx_qs);
	aead_thread_cleanup();
	return NULL;
}

/* ---- the loop side ---- */

static void on_wake(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct hub *h = arg;

	efd_drain(fd);
	receive_handshakes(h);
	peer_run_scheduled(h);
	for (struct engine *e = h->engines; e; e = e->hub_next)
		engine_check_down(e);
}

/* The route lookup for a cached source address. */
int hub_route_oif(struct hub *h, const struct endpoint *ep)
{
	struct {
		struct nlmsghdr nh;
		struct rtmsg rt;
		char attrs[64];
	} req = { 0 };
	char buf[4096] __attribute__((aligned(NLMSG_ALIGNTO)));
	bool v6 = ep->addr.sa.sa_family == AF_INET6;
	size_t alen = v6 ? 16 : 4;
	struct rtattr *a;
	uint32_t seq = ++h->route_seq, mark = h->fwmark;
	ssize_t n;

	if (h->route_query_fd < 0)
		return -ENOTCONN;
	req.nh.nlmsg_type = RTM_GETROUTE;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.nh.nlmsg_seq = seq;
	req.rt.rtm_family = (unsigned char)ep->addr.sa.sa_family;
	req.rt.rtm_dst_len = (unsigned char)(alen * 8);
	a = (struct rtattr *)((char *)&req + NLMSG_LENGTH(sizeof(req.rt)));
	a->rta_type = RTA_DST;
	a->rta_len = (unsigned short)RTA_LENGTH(alen);
	memcpy(RTA_DATA(a), v6 ? (const void *)&ep->addr.in6.sin6_addr : (const void *)&ep->addr.in4.sin_addr, alen);
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(req.rt)) + RTA_ALIGN(a->rta_len);
	if (mark) {
		a = (struct rtattr *)((char *)&req + req.nh.nlmsg_len);
		a->rta_type = RTA_MARK;
		a->rta_len = (unsigned short)RTA_LENGTH(sizeof(mark));
		memcpy(RTA_DATA(a), &mark, sizeof(mark));
		req.nh.nlmsg_len += RTA_ALIGN(a->rta_len);
	}
	if (send(h->route_query_fd, &req, req.nh.nlmsg_len, 0) < 0)
		return -errno;
	for (;;) {
		n = recv(h->route_query_fd, buf, sizeof(buf), 0);
		if (n < 0)
			return errno == EINTR ? -EINTR : -errno;
		for (struct nlmsghdr *nh = (void *)buf; NLMSG_OK(nh, (size_t)n); nh = NLMSG_NEXT(nh, n)) {
			struct rtmsg *rt = NLMSG_DATA(nh);
			size_t len;

			if (nh->nlmsg_seq != seq)
				continue; /* an answer to an earlier, timed-out query */
			if (nh->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(nh);
				return e->error ? e->error : -ENOENT;
			}
			if (nh->nlmsg_type != RTM_NEWROUTE)
				continue;
			len = RTM_PAYLOAD(nh);
			for (a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
				if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) >= sizeof(int)) {
					int oif;
					memcpy(&oif, RTA_DATA(a), sizeof(oif));
					return oif;
				}
			}
			return -ENOENT;
		}
	}
}

/* Routes or addresses changed in the sockets' namespace: every peer's
 * cached source address (IP_PKTINFO) is checked against the route the
 * kernel would take now, as the Linux module's dst_cache is invalidated
 * by a route change and its send4()/send6() drop a source whose interface
 * is not the route's. */
static void on_route(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct hub *h = arg;
	char buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
	bool changed = false;
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			changed |= errno == ENOBUFS; /* lost some: assume the worst */
			break;
		}
		for (struct nlmsghdr *nh = (void *)buf; NLMSG_OK(nh, (size_t)n); nh = NLMSG_NEXT(nh, n))
			changed |= nh->nlmsg_type == RTM_NEWROUTE || nh->nlmsg_type == RTM_DELROUTE ||
				   nh->nlmsg_type == RTM_NEWADDR || nh->nlmsg_type == RTM_DELADDR;
	}
	if (!changed)
		return;
	atomic_fetch_add(&h->st_route_changes, 1);
	log_debug("routes changed", "sources checked");
	for (struct engine *e = h->engines; e; e = e->hub_next)
		for (struct peer *p = e->peers; p; p = p->list_next)
			peer_check_src(p, true);
}

static int route_watch(struct hub *h)
{
	struct sockaddr_nl sa = {
		.nl_family = AF_NETLINK,
		.nl_groups = RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
	};
	struct timeval tv = { .tv_sec = 1 };
	int ret;

	/* Both in the sockets' namespace, made now: the loop thread may be
	 * elsewhere later. */
	h->route_query_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (h->route_query_fd < 0)
		return -errno;
	if (setsockopt(h->route_query_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;

	h->route_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (h->route_fd < 0)
		return -errno;
	if (bind(h->route_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	ret = loop_fd_add(h->loop, h->route_fd, LOOP_READ, on_route, h);
	h->route_watched = !ret;
	return ret;
}

void hub_attach(struct hub *h, struct engine *e)
{
	e->hub_next = h->engines;
	h->engines = e;
}

void hub_detach(struct hub *h, struct engine *e)
{
	for (struct engine **pp = &h->engines; *pp; pp = &(*pp)->hub_next) {
		if (*pp == e) {
			*pp = e->hub_next;
			break;
		}
	}
}

unsigned hub_default_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 2 ? (unsigned)n : 0;
}

int hub_new(struct hub **out, struct loop *loop, const struct hub_config *cfg)
{
	struct hub *h = calloc(1, sizeof(*h));
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	int ret;

	*out = NULL;
	if (!h)
		return -ENOMEM;
	h->loop = loop;
	h->cfg = *cfg;
	if (!h->cfg.handshake_queue_max)
		h->cfg.handshake_queue_max = HUB_HANDSHAKE_QUEUE_MAX;
	if (!h->cfg.pool_buffers)
		h->cfg.pool_buffers = HUB_POOL_BUFFERS;
	if (!h->cfg.pool_large_buffers)
		h->cfg.pool_large_buffers = HUB_POOL_LARGE_BUFFERS;
	h->wake_efd = h->stop_efd = h->rx_epfd = h->route_fd = h->route_query_fd = -1;
	atomic_init(&h->epoch, 1);
	pthread_mutex_init(&h->hs_lock, NULL);
	pthread_mutex_init(&h->work_lock, NULL);
	pthread_mutex_init(&h->qs_lock, NULL);
	for (int i = 0; i < 2; i++)
		pthread_mutex_init(&h->sock[i].send_lock, NULL);
	h->hs_cap = h->cfg.handshake_queue_max;
	h->hs_ring = calloc(h->hs_cap, sizeof(*h->hs_ring));
	h->index = noise_index_new();
	h->rl_replies = ratelimiter_new(RATELIMITER_SLOTS, RATELIMITER_PER_SECOND, RATELIMITER_BURST);
	h->rl_handshakes = ratelimiter_new(RATELIMITER_SLOTS, RATELIMITER_PER_SECOND, RATELIMITER_BURST);
	if (!h->hs_ring || !h->index || !h->rl_replies || !h->rl_handshakes) {
		ret = -ENOMEM;
		goto out;
	}
	ret = pool_new(&h->pool, h->cfg.pool_buffers, h->cfg.pool_large_buffers);
	if (ret)
		goto out;
	h->wake_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	h->stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	h->rx_epfd = epoll_create1(EPOLL_CLOEXEC);
	if (h->wake_efd < 0 || h->stop_efd < 0 || h->rx_epfd < 0) {
		ret = -errno;
		goto out;
	}
	if (epoll_ctl(h->rx_epfd, EPOLL_CTL_ADD, h->stop_efd, &ev) < 0) {
		ret = -errno;
		goto out;
	}
	ret = hub_set_port(h, cfg->port);
	if (ret)
		goto out;
	ret = loop_fd_add(loop, h->wake_efd, LOOP_READ, on_wake, h);
	if (ret)
		goto out;
	ret = route_watch(h);
	if (ret)
		log_warn("route watch failed: source addresses are kept until a send fails", "errno=%d", -ret);
	ret = queueing_init(&h->queue, cfg->workers);
	if (ret)
		goto out;
	h->queue_ready = true;
	ret = -pthread_create(&h->rx_thread, NULL, rx_main, h);
	if (ret)
		goto out;
	pthread_setname_np(h->rx_thread, "knit-udp");
	h->rx_started = true;
	*out = h;
out:
	if (ret)
		hub_free(h);
	return ret;
}

void hub_free(struct hub *h)
{
	if (!h)
		return;
	atomic_store(&h->stopping, true);
	if (h->stop_efd >= 0)
		efd_signal(h->stop_efd);
	if (h->rx_started)
		pthread_join(h->rx_thread, NULL);
	if (h->queue_ready)
		queueing_destroy(&h->queue);
	/* Jobs run above may have scheduled loop work: drop it. */
	peer_run_scheduled(h);
	if (h->wake_efd >= 0) {
		loop_fd_del(h->loop, h->wake_efd);
		close(h->wake_efd);
	}
	if (h->route_watched)
		loop_fd_del(h->loop, h->route_fd);
	if (h->route_fd >= 0)
		close(h->route_fd);
	if (h->route_query_fd >= 0)
		close(h->route_query_fd);
	for (int i = 0; i < 2; i++) {
		udp_close(h->sock[i].udp);
		pthread_mutex_destroy(&h->sock[i].send_lock);
	}
	if (h->stop_efd >= 0)
		close(h->stop_efd);
	if (h->rx_epfd >= 0)
		close(h->rx_epfd);
	pool_free(h->pool);
	if (h->index)
		noise_index_free(h->index);
	free(h->hs_ring);
	ratelimiter_free(h->rl_replies);
	ratelimiter_free(h->rl_handshakes);
	pthread_mutex_destroy(&h->hs_lock);
	pthread_mutex_destroy(&h->work_lock);
	pthread_mutex_destroy(&h->qs_lock);
	free(h);
}
