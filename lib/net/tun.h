/* A TUN device for the userspace data plane, read and written in batches.
 *
 * With a virtio_net_hdr (IFF_VNET_HDR) and TUNSETOFFLOAD, the kernel hands
 * over TCP (and, if it has USO, UDP) super-packets of up to 64 KB, which
 * tun_read() cuts into wire-sized packets, and tun_write() merges runs of
 * TCP segments into super-packets again (GRO): one syscall and one skb per
 * 64 KB instead of per segment. Without vnet headers it reads and writes
 * plain packets. The fd is nonblocking, for the loop. */
#ifndef KNIT_NET_TUN_H
#define KNIT_NET_TUN_H

#include <stdbool.h>
#include <stddef.h>

#include <linux/if_tun.h>

#include "net/offload.h"

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

enum {
	TUN_OPEN_NO_VNET = 1u << 0, /* plain packets even if vnet headers work */
};

struct tun;

/* Opens the TUN device `name` (created if missing; NULL or "": the kernel
 * picks one). Returns 0 or a negative errno. */
int tun_open(struct tun **out, const char *name, unsigned flags);
/* Closes the fd (a device we created goes away with it); NULL is a no-op. */
void tun_close(struct tun *t);

int tun_fd(const struct tun *t);
/* The name the device was created with (it may since have been renamed or
 * moved to another namespace: the calls below follow it through the fd). */
const char *tun_name(const struct tun *t);
bool tun_vnet(const struct tun *t);
/* The TUN_F_* offloads in effect (TUN_F_CSUM|TUN_F_TSO4|... ), 0 without. */
unsigned tun_offloads(const struct tun *t);

/* Interface ioctls on the device wherever it is now: in the namespace it
 * was moved to (TUNGETDEVNETNS), under its current name (TUNGETIFF).
 * -EBADFD once the device is deleted. Thread-safe; nothing is kept in
 * the namespace the device moved to, so deleting it deletes the device. */
int tun_get_mtu(struct tun *t, int *mtu);
int tun_set_mtu(struct tun *t, int mtu);
int tun_set_up(struct tun *t, bool up);
/* Whether the device is administratively up (IFF_UP). */
int tun_get_up(struct tun *t, bool *up);
/* Both at once (one trip into the device's namespace). */
int tun_get_link(struct tun *t, int *mtu, bool *up);

/* Fills pkts[0..n) with packets (each slot's cap should hold an MTU-sized
 * packet; one too big for its slot, or a super-packet's segment, is given
 * room by the tun_set_grow() callback, or else dropped, counted in
 * too_big and answered with TUN_ICMP_TOO_BIG advertising the slot's cap).
 * Reads until the batch is full or the device is drained; a super-packet
 * that does not fit is kept and delivered first next time. Returns the
 * number of packets, -EAGAIN if none, -ENOBUFS if the next packet waits
 * for room (see below), or another negative errno. */
int tun_read(struct tun *t, struct pktbuf *pkts, size_t n);

/* Room for a packet larger than its slot (a tunnel MTU above what the
 * caller's slots hold): tun_read() calls fn with the slot and the length
 * needed; fn may point p->data at a buffer of at least len bytes and set
 * p->cap (the old buffer is the caller's again) and return 0. -ENOBUFS
 * ends the batch there and keeps the packet for the next call; any other
 * error drops it (counted in dropped_rx). Packets above max are never
 * offered: they are dropped, counted in too_big and answered with
 * TUN_ICMP_TOO_BIG advertising max. Set before reading. */
typedef int (*tun_grow_fn)(void *arg, struct pktbuf *p, size_t len);
void tun_set_grow(struct tun *t, tun_grow_fn fn, void *arg, size_t max);

enum {
	/* Authenticated end to end: see OFFLOAD_CSUM_TRUSTED. */
	TUN_WRITE_CSUM_TRUSTED = OFFLOAD_CSUM_TRUSTED,
};

/* Writes pkts[0..n) (plain IP packets), coalescing TCP runs when the
 * device takes TSO. The packets' bytes are only read. A packet the kernel
 * refuses (EINVAL, e.g. malformed) is dropped and counted. flags: the
 * TUN_WRITE_* above. Returns the number of packets handed over, or a
 * negative errno if the device fails. */
int tun_write(struct tun *t, const struct pktbuf *pkts, size_t n, unsigned flags);

enum tun_icmp {
	TUN_ICMP_UNREACHABLE, /* no route: host (v4) / address (v6) unreachable */
	TUN_ICMP_TOO_BIG, /* fragmentation needed (v4) / packet too big (v6) */
};

/* Answers the IP packet pkt[0..len) (read from the device) with an ICMP
 * error written back into the device, from the packet's destination to
 * its source, quoting its start (RFC 792 / RFC 4443; mtu for TOO_BIG, so
 * path MTU discovery works). ICMP errors and non-first fragments get no
 * answer. Any thread. 0, or a negative errno. */
int tun_send_icmp(struct tun *t, const uint8_t *pkt, size_t len, enum tun_icmp kind, unsigned mtu);

struct tun_stats {
	unsigned long long read_syscalls, write_syscalls;
	unsigned long long gso_reads, gro_writes; /* super-packets */
	unsigned long long dropped_rx, dropped_tx;
	/* read packets too big for the slots or for tun_set_grow()'s max
	 * (answered with TUN_ICMP_TOO_BIG) */
	unsigned long long too_big;
};
void tun_stats(const struct tun *t, struct tun_stats *out);

#endif
