#include "net/tun.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"

#define VNET_LEN OFFLOAD_VNET_HDR_LEN
/* Groups per tun_write() round; longer batches are written in rounds. */
#define WRITE_ROUND 256
/* One super-packet plus the part of it readv() put into the first slot. */
#define SCRATCH_LEN (2 * (OFFLOAD_MAX_PACKET + 1))
#define IOV_MAX_ 1024

#ifndef TUNGETDEVNETNS
#define TUNGETDEVNETNS _IO('T', 227)
#endif

struct tun {
	int fd;
	char name[IFNAMSIZ];

	/* A socket for interface ioctls in the namespace the device was
	 * created in, and that namespace's inode (0: TUNGETDEVNETNS is not
	 * there, the device is taken to stay put). Set once at open. */
	int ctl;
	ino_t ctl_ns;
	bool vnet;
	unsigned offloads;

	tun_grow_fn grow;
	void *grow_arg;
	size_t grow_max;

	/* A super-packet read but not yet fully handed out, or a packet
	 * waiting for a slot big enough. */
	uint8_t *scratch;
	struct virtio_net_hdr pend_vh;
	size_t pend_len, pend_done;
	bool pending;

	struct offload_group *groups;
	size_t *order;
	struct iovec *iov;

	struct tun_stats st;
};

/* Interface ioctls, run in order on one socket; each gets the device's
 * current name and keeps its own result. */
struct ctl_ops {
	int nsfd; /* the device's namespace, for the thread below */
	unsigned long req[2];
	struct ifreq *ifr[2];
	int ret[2];
	size_t n;
};

static void run_ops(int s, struct ctl_ops *ops)
{
	for (size_t i = 0; i < ops->n; i++)
		ops->ret[i] = ioctl(s, ops->req[i], ops->ifr[i]) < 0 ? -errno : 0;
}

/* A thread of its own enters the device's namespace, so the caller's
 * thread never moves; its socket goes with it, so nothing of ours keeps
 * that namespace alive (a pod's, deleted with its TUN inside). */
static void *ns_ops_main(void *arg)
{
	struct ctl_ops *ops = arg;
	int s, err = 0;

	if (setns(ops->nsfd, CLONE_NEWNET) < 0)
		err = -errno;
	else if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		err = -errno;
	else {
		run_ops(s, ops);
		close(s);
	}
	for (size_t i = 0; err && i < ops->n; i++)
		ops->ret[i] = err;
	return NULL;
}

/* Runs ops on the device wherever it is now: under its current name
 * (TUNGETIFF: it may have been renamed) and in the namespace it is in
 * (TUNGETDEVNETNS, Linux 5.2): the creator's through the socket kept since
 * tun_open(), another through a short-lived thread. A device moved with
 * `ip link set dev netns` stays reachable; one deleted gives -EBADFD. */
static int ctl_run(struct tun *t, struct ctl_ops *ops)
{
	struct ifreq cur = { 0 };
	struct stat st;
	pthread_t th;
	int ret = 0;

	ops->nsfd = -1;
	if (ioctl(t->fd, TUNGETIFF, &cur) < 0)
		return -errno;
	for (size_t i = 0; i < ops->n; i++)
		memcpy(ops->ifr[i]->ifr_name, cur.ifr_name, IFNAMSIZ);
	if (t->ctl_ns) {
		ops->nsfd = ioctl(t->fd, TUNGETDEVNETNS);
		if (ops->nsfd < 0)
			return -errno;
		if (fstat(ops->nsfd, &st) < 0) {
			ret = -errno;
			goto out;
		}
	}
	if (!t->ctl_ns || st.st_ino == t->ctl_ns) {
		run_ops(t->ctl, ops);
		goto out;
	}
	ret = -pthread_create(&th, NULL, ns_ops_main, ops);
	if (!ret)
		pthread_join(th, NULL);
out:
	if (ops->nsfd >= 0)
		close(ops->nsfd);
	return ret;
}

static int ifreq_ioctl(struct tun *t, unsigned long req, struct ifreq *ifr)
{
	struct ctl_ops ops = { .req = { req }, .ifr = { ifr }, .n = 1 };
	int ret = ctl_run(t, &ops);

	return ret ? ret : ops.ret[0];
}

/* Offloads in order of preference: USO needs Linux 6.2; older kernels
 * refuse unknown bits with EINVAL, so we step down. */
static unsigned set_offloads(int fd)
{
	static const unsigned tries[] = {
		TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
		TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
		TUN_F_CSUM,
	};

	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++)
		if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)tries[i]) == 0)
			return tries[i];
	return 0;
}

int tun_open(struct tun **out, const char *name, unsigned flags)
{
	struct tun *t = calloc(1, sizeof(*t));
	struct ifreq ifr = { 0 };
	unsigned features = 0;
	int hdrsz = (int)VNET_LEN, nsfd, ret;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	t->fd = t->ctl = -1;
	if (name && strlen(name) >= IFNAMSIZ) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	t->fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (t->fd < 0) {
		ret = -errno;
		goto out;
	}
	if (ioctl(t->fd, TUNGETFEATURES, &features) < 0)
		features = 0;
	t->vnet = !(flags & TUN_OPEN_NO_VNET) && (features & IFF_VNET_HDR);

	ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (t->vnet ? IFF_VNET_HDR : 0);
	if (name)
		memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(t->fd, TUNSETIFF, &ifr) < 0) {
		ret = -errno;
		goto out;
	}
	memcpy(t->name, ifr.ifr_name, IFNAMSIZ);
	t->name[IFNAMSIZ - 1] = '\0';
	t->ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (t->ctl < 0) {
		ret = -errno;
		goto out;
	}
	nsfd = ioctl(t->fd, TUNGETDEVNETNS);
	if (nsfd >= 0) {
		struct stat st;
		if (fstat(nsfd, &st) == 0)
			t->ctl_ns = st.st_ino;
		close(nsfd);
	}

	if (t->vnet) {
		if (ioctl(t->fd, TUNSETVNETHDRSZ, &hdrsz) < 0) {
			ret = -errno;
			goto out;
		}
		t->offloads = set_offloads(t->fd);
	}
	t->scratch = malloc(SCRATCH_LEN);
	t->groups = calloc(WRITE_ROUND, sizeof(*t->groups));
	t->order = calloc(WRITE_ROUND, sizeof(*t->order));
	t->iov = calloc(IOV_MAX_, sizeof(*t->iov));
	if (!t->scratch || !t->groups || !t->order || !t->iov) {
		ret = -ENOMEM;
		goto out;
	}
	log_debug("tun open", "dev=%s vnet=%d offloads=0x%x", t->name, t->vnet, t->offloads);
	*out = t;
	ret = 0;
out:
	if (ret)
		tun_close(t);
	return ret;
}

void tun_close(struct tun *t)
{
	if (!t)
		return;
	if (t->fd >= 0)
		close(t->fd);
	if (t->ctl >= 0)
		close(t->ctl);
	free(t->iov);
	free(t->order);
	free(t->groups);
	free(t->scratch);
	free(t);
}

int tun_fd(const struct tun *t)
{
	return t->fd;
}

const char *tun_name(const struct tun *t)
{
	return t->name;
}

bool tun_vnet(const struct tun *t)
{
	return t->vnet;
}

unsigned tun_offloads(const struct tun *t)
{
	return t->offloads;
}

void tun_set_grow(struct tun *t, tun_grow_fn fn, void *arg, size_t max)
{
	t->grow = fn;
	t->grow_arg = arg;
	t->grow_max = max;
}

void tun_stats(const struct tun *t, struct tun_stats *out)
{
	*out = t->st;
}

int tun_get_mtu(struct tun *t, int *mtu)
{
	struct ifreq ifr = { 0 };
	int ret = ifreq_ioctl(t, SIOCGIFMTU, &ifr);

	if (!ret)
		*mtu = ifr.ifr_mtu;
	return ret;
}

int tun_set_mtu(struct tun *t, int mtu)
{
	struct ifreq ifr = { .ifr_mtu = mtu };

	return ifreq_ioctl(t, SIOCSIFMTU, &ifr);
}

int tun_get_up(struct tun *t, bool *up)
{
	struct ifreq ifr = { 0 };
	int ret = ifreq_ioctl(t, SIOCGIFFLAGS, &ifr);

	if (!ret)
		*up = ifr.ifr_flags & IFF_UP;
	return ret;
}

int tun_get_link(struct tun *t, int *mtu, bool *up)
{
	struct ifreq m = { 0 }, f = { 0 };
	struct ctl_ops ops = { .req = { SIOCGIFMTU, SIOCGIFFLAGS }, .ifr = { &m, &f }, .n = 2 };
	int ret = ctl_run(t, &ops);

	if (!ret)
		ret = ops.ret[0] ? ops.ret[0] : ops.ret[1];
	if (!ret) {
		*mtu = m.ifr_mtu;
		*up = f.ifr_flags & IFF_UP;
	}
	return ret;
}

int tun_set_up(struct tun *t, bool up)
{
	struct ifreq ifr = { 0 };
	int ret = ifreq_ioctl(t, SIOCGIFFLAGS, &ifr);

	if (ret)
		return ret;
	if (up)
		ifr.ifr_flags |= IFF_UP;
	else
		ifr.ifr_flags &= ~IFF_UP;
	return ifreq_ioctl(t, SIOCSIFFLAGS, &ifr);
}

/* ---- ICMP errors ---------------------------------------------------------- */

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Whether an error may answer this packet: not an ICMP error itself, not
 * a later fragment (RFC 1122 3.2.2, RFC 4443 2.4 e). */
static bool may_answer(const uint8_t *pkt, size_t len, bool v6)
{
	if (!v6) {
		size_t ihl = (size_t)(pkt[0] & 15) * 4;
		if (ihl < 20 || len < ihl || ((pkt[6] & 0x1f) | pkt[7]))
			return false;
		return pkt[9] != 1 || len <= ihl || pkt[ihl] == 0 || pkt[ihl] == 8 || pkt[ihl] >= 13;
	}
	return pkt[6] != 58 || len <= 40 || pkt[40] >= 128;
}

int tun_send_icmp(struct tun *t, const uint8_t *pkt, size_t len, enum tun_icmp kind, unsigned mtu)
{
	static const struct virtio_net_hdr none;
	uint8_t b[1280];
	size_t n, quote;
	struct iovec iov[2] = { { (void *)&none, VNET_LEN }, { b, 0 } };
	bool v6;
	ssize_t r;

	if (len >= 20 && pkt[0] >> 4 == 4)
		v6 = false;
	else if (len >= 40 && pkt[0] >> 4 == 6)
		v6 = true;
	else
		return -EINVAL;
	if (!may_answer(pkt, len, v6))
		return -EINVAL;
	memset(b, 0, 48);
	if (!v6) {
		/* RFC 792, 1191: at most 576 bytes, next-hop MTU in the last word. */
		quote = len < 576 - 28 ? len : 576 - 28;
		n = 28 + quote;
		b[0] = 0x45;
		put16(b + 2, (unsigned)n);
		b[8] = 64;
		b[9] = 1;
		memcpy(b + 12, pkt + 16, 4);
		memcpy(b + 16, pkt + 12, 4);
		put16(b + 10, (uint16_t)~offload_checksum(b, 20, 0));
		b[20] = 3;
		b[21] = kind == TUN_ICMP_TOO_BIG ? 4 : 1;
		if (kind == TUN_ICMP_TOO_BIG)
			put16(b + 26, mtu > 0xffff ? 0xffff : mtu);
		memcpy(b + 28, pkt, quote);
		put16(b + 22, (uint16_t)~offload_checksum(b + 20, 8 + quote, 0));
	} else {
		/* RFC 4443: as much as fits in the minimum MTU. */
		uint32_t sum;

		quote = len < sizeof(b) - 48 ? len : sizeof(b) - 48;
		n = 48 + quote;
		b[0] = 0x60;
		put16(b + 4, (unsigned)(8 + quote));
		b[6] = 58;
		b[7] = 64;
		memcpy(b + 8, pkt + 24, 16);
		memcpy(b + 24, pkt + 8, 16);
		b[40] = kind == TUN_ICMP_TOO_BIG ? 2 : 1;
		b[41] = kind == TUN_ICMP_TOO_BIG ? 0 : 3;
		if (kind == TUN_ICMP_TOO_BIG) {
			put16(b + 44, mtu >> 16);
			put16(b + 46, mtu & 0xffff);
		}
		memcpy(b + 48, pkt, quote);
		sum = 58 + (uint32_t)(8 + quote);
		for (size_t i = 8; i < 40; i += 2)
			sum += (uint32_t)b[i] << 8 | b[i + 1];
		put16(b + 42, (uint16_t)~offload_checksum(b + 40, 8 + quote, sum));
	}
	iov[1].iov_len = n;
	do
		r = t->vnet ? writev(t->fd, iov, 2) : writev(t->fd, iov + 1, 1);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

/* A packet (or a super-packet's segment) does not fit the caller's slots:
 * dropped, and path MTU discovery told what does fit. */
static void too_big(struct tun *t, const uint8_t *pkt, size_t len, size_t cap)
{
	t->st.too_big++;
	t->st.dropped_rx++;
	tun_send_icmp(t, pkt, len, TUN_ICMP_TOO_BIG, (unsigned)cap);
}

/* ---- reading ------------------------------------------------------------ */

/* Gives pkts[0..n) room for need bytes each, through the grow callback;
 * returns how many have it (fewer while the callback has no room now).
 * *never: the packet cannot be given room, drop it. */
static size_t fit(struct tun *t, struct pktbuf *pkts, size_t n, size_t need, bool *never)
{
	size_t k;

	for (k = 0; k < n; k++) {
		int r;

		if (pkts[k].cap >= need)
			continue;
		r = t->grow ? t->grow(t->grow_arg, &pkts[k], need) : -EMSGSIZE;
		if (r == -ENOBUFS)
			break;
		if (r || pkts[k].cap < need) {
			*never = true;
			return 0;
		}
	}
	return k;
}

/* Hands out what is left of the pending packet (in scratch): a
 * super-packet's segments, or a packet that needed more than its slot.
 * It stays pending while segments are left or wait for room. */
static size_t drain_pending(struct tun *t, struct pktbuf *pkts, size_t n)
{
	int count, r;
	size_t need, limit, room;
	bool never = false;

	if (!t->pending || n == 0)
		return 0;
	count = offload_segment_count(&t->pend_vh, t->scratch, t->pend_len);
	need = offload_segment_max(&t->pend_vh, t->scratch, t->pend_len);
	if (count < 0 || !need) {
		t->st.dropped_rx++;
		t->pending = false;
		return 0;
	}
	limit = t->grow ? t->grow_max : pkts[0].cap;
	if (need > limit) {
		t->pending = false;
		too_big(t, t->scratch, t->pend_len, limit);
		return 0;
	}
	if (n > (size_t)count - t->pend_done)
		n = (size_t)count - t->pend_done;
	room = fit(t, pkts, n, need, &never);
	if (never) {
		t->st.dropped_rx++;
		t->pending = false;
		return 0;
	}
	if (!room)
		return 0;
	r = offload_segment(&t->pend_vh, t->scratch, t->pend_len, t->pend_done, pkts, room);
	if (r < 0) {
		t->st.dropped_rx++;
		t->pending = false;
		return 0;
	}
	t->pend_done += (size_t)r;
	if (t->pend_done >= (size_t)count)
		t->pending = false;
	return (size_t)r;
}

/* One read(): a plain packet that fits lands in pkts[0] directly; anything
 * else (a super-packet, a checksum to complete, a packet bigger than the
 * slot) lands partly there and partly in scratch, is reassembled in
 * scratch and handed out from there. Returns packets produced, or a
 * negative errno. */
static int read_one(struct tun *t, struct pktbuf *pkts, size_t n)
{
	struct virtio_net_hdr vh = { 0 };
	size_t first = pkts[0].cap < OFFLOAD_MAX_PACKET ? pkts[0].cap : OFFLOAD_MAX_PACKET;
	struct iovec iov[3] = {
		{ &vh, VNET_LEN },
		{ pkts[0].data, first },
		{ t->scratch + first, SCRATCH_LEN - first },
	};
	ssize_t r;
	size_t len;

	do
		r = t->vnet ? readv(t->fd, iov, 3) : readv(t->fd, iov + 1, 2);
	while (r < 0 && errno == EINTR);
	t->st.read_syscalls++;
	if (r < 0)
		return -errno;
	if (t->vnet && (size_t)r < VNET_LEN) {
		t->st.dropped_rx++;
		return 0;
	}
	/* Without vnet headers vh stays zero: no segmentation, no checksum. */
	len = t->vnet ? (size_t)r - VNET_LEN : (size_t)r;
	if (vh.gso_type == VIRTIO_NET_HDR_GSO_NONE && !(vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
	    len <= first) {
		pkts[0].len = len;
		return 1;
	}
	memcpy(t->scratch, pkts[0].data, len < first ? len : first);
	if (vh.gso_type != VIRTIO_NET_HDR_GSO_NONE)
		t->st.gso_reads++;
	t->pend_vh = vh;
	t->pend_len = len;
	t->pend_done = 0;
	t->pending = true;
	return (int)drain_pending(t, pkts, n);
}

int tun_read(struct tun *t, struct pktbuf *pkts, size_t n)
{
	size_t k = drain_pending(t, pkts, n);
	int r = 0;

	while (k < n && !t->pending) {
		r = read_one(t, pkts + k, n - k);
		if (r < 0)
			break;
		k += (size_t)r;
	}
	if (k > 0)
		return (int)k;
	if (t->pending)
		return -ENOBUFS; /* the next packet waits for room */
	return r < 0 ? r : -EAGAIN;
}

/* ---- writing ------------------------------------------------------------ */

static int write_iov(struct tun *t, struct iovec *iov, int cnt)
{
	ssize_t r;

	do
		r = writev(t->fd, iov, cnt);
	while (r < 0 && errno == EINTR);
	t->st.write_syscalls++;
	if (r >= 0)
		return 0;
	/* The kernel rejects a malformed packet without harm to the next. */
	if (errno == EINVAL || errno == EMSGSIZE || errno == EFAULT) {
		t->st.dropped_tx++;
		return 0;
	}
	return -errno;
}

static int write_round(struct tun *t, const struct pktbuf *pkts, size_t n, unsigned flags)
{
	static const struct virtio_net_hdr none;
	size_t ngroups;
	int ret = 0;

	if (!t->vnet || !(t->offloads & TUN_F_TSO4)) {
		for (size_t i = 0; i < n && !ret; i++) {
			struct iovec iov[2] = {
				{ (void *)&none, VNET_LEN },
				{ pkts[i].data, pkts[i].len },
			};
			ret = t->vnet ? write_iov(t, iov, 2) : write_iov(t, iov + 1, 1);
		}
		return ret;
	}

	ngroups = offload_coalesce(pkts, n, t->groups, t->order, flags & TUN_WRITE_CSUM_TRUSTED);
	for (size_t g = 0; g < ngroups && !ret; g++) {
		struct offload_group *gr = &t->groups[g];
		int cnt = 0;

		t->iov[cnt++] = (struct iovec){ &gr->vnet, VNET_LEN };
		if (gr->count == 1) {
			const struct pktbuf *p = &pkts[t->order[gr->first]];
			t->iov[cnt++] = (struct iovec){ p->data, p->len };
		} else {
			t->iov[cnt++] = (struct iovec){ gr->hdr, gr->hdr_len };
			for (size_t k = 0; k < gr->count; k++) {
				const struct pktbuf *p = &pkts[t->order[gr->first + k]];
				t->iov[cnt++] = (struct iovec){ p->data + gr->hdr_len, p->len - gr->hdr_len };
			}
			t->st.gro_writes++;
		}
		ret = write_iov(t, t->iov, cnt);
	}
	return ret;
}

int tun_write(struct tun *t, const struct pktbuf *pkts, size_t n, unsigned flags)
{
	/* WRITE_ROUND keeps a group's iovecs (2 + members) under IOV_MAX_. */
	for (size_t done = 0; done < n;) {
		size_t m = n - done < WRITE_ROUND ? n - done : WRITE_ROUND;
		int ret = write_round(t, pkts + done, m, flags);
		if (ret)
			return done ? (int)done : ret;
		done += m;
	}
	return (int)n;
}
