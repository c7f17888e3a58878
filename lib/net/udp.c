#include "net/udp.h"

#include <errno.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define SOCK_BUF (7 << 20)
/* Messages per recvmmsg() when GRO may hand us 64 KB in each. */
#define RX_MSGS 16
#define RX_BUF 65536
/* Messages (and iovecs) per sendmmsg() round. */
#define TX_MSGS 1024
/* Kernel limits for one UDP_SEGMENT send: UDP_MAX_SEGMENTS, and an IP
 * packet of 64 KB with its headers. */
#define GSO_MAX_SEGS 64
#define GSO_MAX_BYTES4 (65535 - 20 - 8)
#define GSO_MAX_BYTES6 (65535 - 40 - 8)

#define CMSG_LEN_ (CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct in6_pktinfo)))

union cmsgbuf {
	struct cmsghdr align;
	uint8_t b[CMSG_LEN_];
};

struct rx_slot {
	uint8_t *buf;
	size_t len, off;
	size_t gso; /* 0: one datagram */
	struct endpoint ep;
	union cmsgbuf cmsg;
};

struct udp {
	int fd;
	int family;
	uint16_t port;
	bool gso, gro;
	/* GSO segments above this failed with EMSGSIZE (a tunnel MTU above
	 * the path's): such datagrams go one by one, for the kernel to
	 * fragment. */
	size_t gso_seg_max;

	udp_grow_fn grow;
	void *grow_arg;

	/* GRO receive: datagram runs land here, then are cut into the
	 * caller's slots; rx_next..rx_count are not yet handed out. */
	struct rx_slot *rx;
	size_t rx_next, rx_count;
	struct mmsghdr *rx_mm;
	struct iovec *rx_iov;
	union cmsgbuf *rx_cmsg;

	struct mmsghdr *tx_mm;
	struct iovec *tx_iov;
	union cmsgbuf *tx_cmsg;
	size_t *tx_first; /* mmsg -> first caller message in it */

	struct udp_stats st;
};

static int set_buf(int fd, int force, int plain)
{
	int v = SOCK_BUF;

	/* FORCE needs CAP_NET_ADMIN; without it we get what rmem_max allows. */
	if (setsockopt(fd, SOL_SOCKET, force, &v, sizeof(v)) == 0)
		return 0;
	return setsockopt(fd, SOL_SOCKET, plain, &v, sizeof(v)) == 0 ? 0 : -errno;
}

/* The buffers GRO runs (and, with a grow callback, any datagram) land in. */
static int rx_bufs(struct udp *u)
{
	for (size_t i = 0; i < RX_MSGS; i++) {
		if (!u->rx[i].buf)
			u->rx[i].buf = malloc(RX_BUF);
		if (!u->rx[i].buf)
			return -ENOMEM;
	}
	return 0;
}

int udp_open(struct udp **out, int family, uint16_t port, unsigned flags)
{
	struct udp *u = calloc(1, sizeof(*u));
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	} a = { 0 };
	socklen_t alen = family == AF_INET6 ? sizeof(a.in6) : sizeof(a.in4);
	int one = 1, ret, seg = 0;
	socklen_t seglen = sizeof(seg);

	*out = NULL;
	if (!u)
		return -ENOMEM;
	u->fd = -1;
	u->family = family;
	u->gso_seg_max = SIZE_MAX;
	if (family != AF_INET && family != AF_INET6) {
		ret = -EAFNOSUPPORT;
		goto out;
	}
	u->fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
	if (u->fd < 0) {
		ret = -errno;
		goto out;
	}
	set_buf(u->fd, SO_RCVBUFFORCE, SO_RCVBUF);
	set_buf(u->fd, SO_SNDBUFFORCE, SO_SNDBUF);
	if (family == AF_INET6) {
		if (setsockopt(u->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0 ||
		    setsockopt(u->fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) < 0) {
			ret = -errno;
			goto out;
		}
		a.in6.sin6_family = AF_INET6;
		a.in6.sin6_port = htons(port);
	} else {
		if (setsockopt(u->fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) < 0) {
			ret = -errno;
			goto out;
		}
		a.in4.sin_family = AF_INET;
		a.in4.sin_port = htons(port);
	}
	if (bind(u->fd, &a.sa, alen) < 0 || getsockname(u->fd, &a.sa, &alen) < 0) {
		ret = -errno;
		goto out;
	}
	u->port = ntohs(family == AF_INET6 ? a.in6.sin6_port : a.in4.sin_port);

	/* A kernel that knows UDP_SEGMENT answers the getsockopt. */
	u->gso = !(flags & UDP_OPEN_NO_GSO) &&
		 getsockopt(u->fd, IPPROTO_UDP, UDP_SEGMENT, &seg, &seglen) == 0;
	u->gro = !(flags & UDP_OPEN_NO_GRO) &&
		 setsockopt(u->fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)) == 0;

	u->rx = calloc(RX_MSGS, sizeof(*u->rx));
	u->rx_mm = calloc(TX_MSGS, sizeof(*u->rx_mm));
	u->rx_iov = calloc(TX_MSGS, sizeof(*u->rx_iov));
	u->rx_cmsg = calloc(TX_MSGS, sizeof(*u->rx_cmsg));
	u->tx_mm = calloc(TX_MSGS, sizeof(*u->tx_mm));
	u->tx_iov = calloc(TX_MSGS, sizeof(*u->tx_iov));
	u->tx_cmsg = calloc(TX_MSGS, sizeof(*u->tx_cmsg));
	u->tx_first = calloc(TX_MSGS + 1, sizeof(*u->tx_first));
	if (!u->rx || !u->rx_mm || !u->rx_iov || !u->rx_cmsg || !u->tx_mm || !u->tx_iov ||
	    !u->tx_cmsg || !u->tx_first) {
		ret = -ENOMEM;
		goto out;
	}
	if (u->gro && rx_bufs(u)) {
		ret = -ENOMEM;
		goto out;
	}
	log_debug("udp open", "family=%d port=%u gso=%d gro=%d", family, u->port, u->gso, u->gro);
	*out = u;
	ret = 0;
out:
	if (ret)
		udp_close(u);
	return ret;
}

void udp_close(struct udp *u)
{
	if (!u)
		return;
	if (u->fd >= 0)
		close(u->fd);
	if (u->rx)
		for (size_t i = 0; i < RX_MSGS; i++)
			free(u->rx[i].buf);
	free(u->rx);
	free(u->rx_mm);
	free(u->rx_iov);
	free(u->rx_cmsg);
	free(u->tx_mm);
	free(u->tx_iov);
	free(u->tx_cmsg);
	free(u->tx_first);
	free(u);
}

int udp_fd(const struct udp *u)
{
	return u->fd;
}

uint16_t udp_port(const struct udp *u)
{
	return u->port;
}

int udp_family(const struct udp *u)
{
	return u->family;
}

bool udp_gso(const struct udp *u)
{
	return u->gso;
}

bool udp_gro(const struct udp *u)
{
	return u->gro;
}

void udp_stats(const struct udp *u, struct udp_stats *out)
{
	*out = u->st;
}

int udp_set_grow(struct udp *u, udp_grow_fn fn, void *arg)
{
	int ret = fn ? rx_bufs(u) : 0;

	if (!ret) {
		u->grow = fn;
		u->grow_arg = arg;
	}
	return ret;
}

/* ---- receiving ---------------------------------------------------------- */

static void prep_rx(struct mmsghdr *mm, struct iovec *iov, struct endpoint *ep, union cmsgbuf *cmsg,
		    void *buf, size_t cap)
{
	*iov = (struct iovec){ buf, cap };
	memset(&mm->msg_hdr, 0, sizeof(mm->msg_hdr));
	mm->msg_hdr.msg_name = &ep->addr;
	mm->msg_hdr.msg_namelen = sizeof(ep->addr);
	mm->msg_hdr.msg_iov = iov;
	mm->msg_hdr.msg_iovlen = 1;
	mm->msg_hdr.msg_control = cmsg;
	mm->msg_hdr.msg_controllen = CMSG_LEN_;
}

/* Picks the local address and the GRO segment size out of the cmsgs. */
static size_t parse_rx_cmsg(struct msghdr *h, struct endpoint *ep)
{
	size_t gso = 0;

	endpoint_clear_src(ep);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
		if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) {
			int v;
			memcpy(&v, CMSG_DATA(c), sizeof(v));
			gso = v > 0 ? (size_t)v : 0;
		} else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;
			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			ep->src.v4 = pi.ipi_addr;
			ep->src_ifindex = pi.ipi_ifindex;
			ep->has_src = true;
		} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;
			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			ep->src.v6 = pi.ipi6_addr;
			ep->src_ifindex = (int)pi.ipi6_ifindex;
			ep->has_src = true;
		}
	}
	return gso;
}

static int recv_direct(struct udp *u, struct udp_msg *msgs, size_t n)
{
	size_t m = n < TX_MSGS ? n : TX_MSGS, k = 0;
	int r;

	for (size_t i = 0; i < m; i++)
		prep_rx(&u->rx_mm[i], &u->rx_iov[i], &msgs[i].ep, &u->rx_cmsg[i], msgs[i].data, msgs[i].cap);
	do
		r = recvmmsg(u->fd, u->rx_mm, (unsigned)m, MSG_DONTWAIT, NULL);
	while (r < 0 && errno == EINTR);
	u->st.recv_syscalls++;
	if (r < 0)
		return -errno;
	for (int i = 0; i < r; i++) {
		struct msghdr *h = &u->rx_mm[i].msg_hdr;
		if ((h->msg_flags & MSG_TRUNC) || u->rx_mm[i].msg_len > msgs[k].cap) {
			u->st.dropped_rx++;
			continue;
		}
		parse_rx_cmsg(h, &msgs[i].ep);
		if (k != (size_t)i) {
			/* close the gap a dropped one left: copy into our slot */
			memcpy(msgs[k].data, msgs[i].data, u->rx_mm[i].msg_len);
			msgs[k].ep = msgs[i].ep;
		}
		msgs[k++].len = u->rx_mm[i].msg_len;
	}
	return k ? (int)k : -EAGAIN;
}

/* Cuts pending GRO runs into the caller's slots; stops early when a
 * datagram waits for a bigger slot (the grow callback said -ENOBUFS). */
static size_t drain_rx(struct udp *u, struct udp_msg *msgs, size_t n)
{
	size_t k = 0;

	while (k < n && u->rx_next < u->rx_count) {
		struct rx_slot *s = &u->rx[u->rx_next];
		size_t seg = s->gso ? s->gso : s->len;
		size_t len = s->len - s->off < seg ? s->len - s->off : seg;
		int r = 0;

		if (s->off >= s->len) {
			u->rx_next++;
			continue;
		}
		if (len > msgs[k].cap)
			r = u->grow ? u->grow(u->grow_arg, &msgs[k], len) : -EMSGSIZE;
		if (r == -ENOBUFS)
			break;
		if (!r && len <= msgs[k].cap) {
			memcpy(msgs[k].data, s->buf + s->off, len);
			msgs[k].len = len;
			msgs[k].ep = s->ep;
			k++;
		} else {
			u->st.dropped_rx++;
		}
		s->off += len;
		if (s->off >= s->len)
			u->rx_next++;
	}
	return k;
}

int udp_recv(struct udp *u, struct udp_msg *msgs, size_t n)
{
	size_t k, m;
	int r;

	if (n == 0)
		return 0;
	if (!u->gro && !u->grow)
		return recv_direct(u, msgs, n);

	k = drain_rx(u, msgs, n);
	if (k == n)
		return (int)k;
	if (u->rx_next < u->rx_count)
		return k ? (int)k : -ENOBUFS; /* full, or waiting for room */
	/* Each message is at least one datagram: never ask for more than fit. */
	m = n - k < RX_MSGS ? n - k : RX_MSGS;
	for (size_t i = 0; i < m; i++)
		prep_rx(&u->rx_mm[i], &u->rx_iov[i], &u->rx[i].ep, &u->rx[i].cmsg, u->rx[i].buf, RX_BUF);
	do
		r = recvmmsg(u->fd, u->rx_mm, (unsigned)m, MSG_DONTWAIT, NULL);
	while (r < 0 && errno == EINTR);
	u->st.recv_syscalls++;
	if (r < 0)
		return k ? (int)k : -errno;
	for (int i = 0; i < r; i++) {
		struct rx_slot *s = &u->rx[i];
		s->len = u->rx_mm[i].msg_len;
		s->off = 0;
		s->gso = parse_rx_cmsg(&u->rx_mm[i].msg_hdr, &s->ep);
		if (s->gso && s->len > s->gso)
			u->st.gro_datagrams += (s->len + s->gso - 1) / s->gso;
		if (u->rx_mm[i].msg_hdr.msg_flags & MSG_TRUNC) {
			u->st.dropped_rx++;
			s->len = 0;
		}
	}
	u->rx_next = 0;
	u->rx_count = (size_t)r;
	k += drain_rx(u, msgs + k, n - k);
	if (!k && u->rx_next < u->rx_count)
		return -ENOBUFS;
	return k ? (int)k : -EAGAIN;
}

/* ---- sending ------------------------------------------------------------ */

static size_t put_cmsgs(struct udp *u, union cmsgbuf *cb, const struct endpoint *ep, size_t gso)
{
	uint8_t *buf = cb->b;
	struct msghdr h = { .msg_control = buf, .msg_controllen = CMSG_LEN_ };
	struct cmsghdr *c = CMSG_FIRSTHDR(&h);
	size_t used = 0;

	memset(buf, 0, CMSG_LEN_);
	if (gso) {
		uint16_t v = (uint16_t)gso;
		c->cmsg_level = IPPROTO_UDP;
		c->cmsg_type = UDP_SEGMENT;
		c->cmsg_len = CMSG_LEN(sizeof(v));
		memcpy(CMSG_DATA(c), &v, sizeof(v));
		used += CMSG_SPACE(sizeof(v));
		c = (struct cmsghdr *)(buf + used);
	}
	if (ep->has_src && u->family == AF_INET) {
		struct in_pktinfo pi = { .ipi_spec_dst = ep->src.v4 };
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		used += CMSG_SPACE(sizeof(pi));
	} else if (ep->has_src) {
		struct in6_pktinfo pi = { .ipi6_addr = ep->src.v6 };
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		used += CMSG_SPACE(sizeof(pi));
	}
	return used;
}

/* Lays msgs[0..n) out as mmsghdrs, grouping GSO runs (unless gso is
 * false); returns how many mmsghdrs, with tx_first[j] the first message of
 * mmsghdr j. */
static size_t build_tx(struct udp *u, struct udp_msg *msgs, size_t n, bool gso)
{
	size_t nm = 0, i = 0;
	size_t max_bytes = u->family == AF_INET ? GSO_MAX_BYTES4 : GSO_MAX_BYTES6;

	if (n > TX_MSGS)
		n = TX_MSGS;

	while (i < n && nm < TX_MSGS) {
		size_t j = i + 1, bytes = msgs[i].len, seg = msgs[i].len;

		if (gso && seg > 0 && seg <= u->gso_seg_max) {
			while (j < n && j - i < GSO_MAX_SEGS && msgs[j].len <= seg && msgs[j].len > 0 &&
			       bytes + msgs[j].len <= max_bytes && endpoint_equal_src(&msgs[i].ep, &msgs[j].ep)) {
				bytes += msgs[j].len;
				if (msgs[j++].len < seg)
					break; /* a short one can only be last */
			}
		}
		struct msghdr *h = &u->tx_mm[nm].msg_hdr;
		memset(h, 0, sizeof(*h));
		for (size_t k = i; k < j; k++)
			u->tx_iov[k] = (struct iovec){ msgs[k].data, msgs[k].len };
		h->msg_name = &msgs[i].ep.addr;
		h->msg_namelen = endpoint_socklen(&msgs[i].ep);
		h->msg_iov = &u->tx_iov[i];
		h->msg_iovlen = j - i;
		h->msg_control = &u->tx_cmsg[nm];
		h->msg_controllen = put_cmsgs(u, &u->tx_cmsg[nm], &msgs[i].ep, j - i > 1 ? seg : 0);
		if (!h->msg_controllen)
			h->msg_control = NULL;
		u->tx_first[nm++] = i;
		i = j;
	}
	u->tx_first[nm] = i;
	return nm;
}

/* Errors that say "this datagram, not the socket": drop it and go on. */
static bool per_message_error(int err)
{
	switch (err) {
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENETDOWN:
	case EHOSTDOWN:
	case EPERM:
	case EACCES:
	case EAFNOSUPPORT:
	case EADDRNOTAVAIL:
	case EMSGSIZE:
	case EINVAL:
		return true;
	}
	return false;
}

int udp_send(struct udp *u, struct udp_msg *msgs, size_t n)
{
	size_t done = 0;
	bool gso = u->gso;

	while (done < n) {
		size_t nm = build_tx(u, msgs + done, n - done, gso);
		int r;

		do
			r = sendmmsg(u->fd, u->tx_mm, (unsigned)nm, 0);
		while (r < 0 && errno == EINTR);
		u->st.send_syscalls++;
		if (r > 0) {
			for (int j = 0; j < r; j++)
				if (u->tx_first[j + 1] - u->tx_first[j] > 1)
					u->st.gso_sends++;
			done += u->tx_first[r];
			continue;
		}
		int err = r < 0 ? errno : EIO;
		struct udp_msg *m = &msgs[done];
		size_t group = u->tx_first[1] - u->tx_first[0];
		if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS)
			return done ? (int)done : -EAGAIN;
		/* The first mmsghdr failed: work out why, then retry or drop it. */
		/* A source address we no longer have shows up as EINVAL or
		 * ENETUNREACH from the route lookup; retry from the default. */
		if (m->ep.has_src && (err == EINVAL || err == EADDRNOTAVAIL || err == ENETUNREACH ||
				      err == EHOSTUNREACH)) {
			endpoint_clear_src(&m->ep);
			continue;
		}
		if (group > 1 && err == EMSGSIZE) {
			/* Datagrams bigger than the path MTU (a large tunnel MTU):
			 * GSO cannot cut them, but one at a time the kernel
			 * fragments them. Remembered, so later batches do not
			 * fail first. */
			u->gso_seg_max = m->len - 1;
			continue;
		}
		if (group > 1 && (err == EIO || err == EINVAL)) {
			/* A device or path without checksum offload cannot do GSO;
			 * a stale source was ruled out above (worst case it is
			 * learnt again from the next packet). */
			log_warn("udp gso off", "errno=%d", err);
			u->gso = gso = false;
			continue;
		}
		if (!per_message_error(err))
			return done ? (int)done : -err;
		u->st.dropped_tx += group;
		u->st.last_tx_error = err;
		done += group;
	}
	return (int)done;
}
