/* The node's UDP socket for one address family, read and written in batches.
 *
 * Receiving uses recvmmsg() and, where the kernel has it, UDP_GRO: runs of
 * datagrams from one sender arrive as one buffer plus a segment size and
 * are cut apart here. Sending uses sendmmsg() and UDP_SEGMENT: consecutive
 * datagrams to the same endpoint with the same size (the last may be
 * shorter) go down as one GSO send of up to 64 segments / 64 KB. Each
 * received datagram carries the local address it was sent to
 * (IP_PKTINFO/IPV6_PKTINFO), and a send with ep.has_src leaves from that
 * address, as WireGuard's endpoints want.
 *
 * Buffers belong to the caller; nothing is allocated per packet. */
#ifndef KNIT_NET_UDP_H
#define KNIT_NET_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/endpoint.h"

enum {
	UDP_OPEN_NO_GSO = 1u << 0,
	UDP_OPEN_NO_GRO = 1u << 1,
};

/* One datagram slot: data[0..len) in a buffer of cap bytes. */
struct udp_msg {
	uint8_t *data;
	size_t len;
	size_t cap;
	struct endpoint ep;
};

struct udp;

/* Binds a nonblocking socket for family (AF_INET, or AF_INET6 with
 * IPV6_V6ONLY) to port (0: the kernel picks; see udp_port()). */
int udp_open(struct udp **out, int family, uint16_t port, unsigned flags);
void udp_close(struct udp *u);

int udp_fd(const struct udp *u);
uint16_t udp_port(const struct udp *u);
int udp_family(const struct udp *u);
bool udp_gso(const struct udp *u);
bool udp_gro(const struct udp *u);

/* Fills msgs[0..n) with datagrams (len and ep set; a datagram larger than
 * its slot is dropped unless udp_set_grow() gave it room). Coalesced runs
 * that do not fit are kept for the next call. Returns the count, -EAGAIN
 * if none, -ENOBUFS if the next datagram waits for room (see below), or
 * a negative errno. */
int udp_recv(struct udp *u, struct udp_msg *msgs, size_t n);

/* Room for a datagram larger than its slot (up to 64 KB: a large MTU's,
 * reassembled from IP fragments): udp_recv() calls fn with the slot and
 * the datagram's length; fn may point m->data at a buffer of at least
 * len bytes and set m->cap (the old buffer is the caller's again) and
 * return 0. -ENOBUFS ends the batch there and keeps the datagram for the
 * next call; any other error drops it. Without GRO, datagrams are then
 * read into the socket's own 64 KB buffers and copied, as with GRO.
 * 0 or -ENOMEM. */
typedef int (*udp_grow_fn)(void *arg, struct udp_msg *m, size_t len);
int udp_set_grow(struct udp *u, udp_grow_fn fn, void *arg);

/* Sends msgs[0..n). A message whose local source is no longer ours is
 * retried without it (and its ep.has_src cleared, so the caller learns); one
 * the network refuses (unreachable, filtered, wrong family) is dropped and
 * counted. GSO is turned off for good if the kernel says it cannot do it,
 * and for segments of a size refused as above the path MTU (EMSGSIZE):
 * such datagrams go one by one, for the kernel to fragment. Returns how many messages are done (sent or dropped), -EAGAIN if the
 * socket buffer is full before the first, or a negative errno. */
int udp_send(struct udp *u, struct udp_msg *msgs, size_t n);

struct udp_stats {
	unsigned long long recv_syscalls, send_syscalls;
	unsigned long long gro_datagrams; /* datagrams that came coalesced */
	unsigned long long gso_sends;     /* GSO sends of 2+ datagrams */
	unsigned long long dropped_rx, dropped_tx;
	int last_tx_error;
};
void udp_stats(const struct udp *u, struct udp_stats *out);

#endif
