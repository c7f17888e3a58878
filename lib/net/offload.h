/* Segmentation offload in software, on byte buffers: the two halves of what
 * a vnet-header TUN device asks of its user.
 *
 * Reading, the kernel hands over one TCP or UDP "super-packet" (up to 64 KB)
 * behind a virtio_net_hdr that says how to cut it (TSO/USO); offload_segment()
 * cuts it into wire-sized packets with complete headers and checksums.
 * Writing, offload_coalesce() groups a batch of TCP segments of the same flow
 * into super-packets described by a virtio_net_hdr (GRO), so the kernel
 * takes one skb per group instead of one per segment.
 *
 * No I/O, no allocation. The virtio_net_hdr fields are in host byte order
 * (what a TUN device uses unless told TUNSETVNETBE/LE). */
#ifndef KNIT_NET_OFFLOAD_H
#define KNIT_NET_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/virtio_net.h>

#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5 /* USO, Linux >= 6.2 on TUN */
#endif

#define OFFLOAD_VNET_HDR_LEN ((size_t)sizeof(struct virtio_net_hdr))
/* IPv6 (40) + TCP with full options (60); IPv4 with options is not coalesced. */
#define OFFLOAD_HDR_MAX 100
/* Largest IP packet either direction may carry. */
#define OFFLOAD_MAX_PACKET 65535

/* One packet in a caller-owned buffer: data[0..len) is the packet, data has
 * room for cap bytes. */
struct pktbuf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

/* Internet checksum (RFC 1071) of buf added to sum, folded to 16 bits but
 * not complemented. */
uint16_t offload_checksum(const void *buf, size_t len, uint32_t sum);
/* Copies len bytes from src to dst and returns offload_checksum(dst, len,
 * sum), reading the bytes once. */
uint16_t offload_copy_checksum(void *dst, const void *src, size_t len, uint32_t sum);

/* Number of packets offload_segment() makes of pkt (>= 1), or -EINVAL if
 * the header and packet do not describe something it can segment. */
int offload_segment_count(const struct virtio_net_hdr *vh, const uint8_t *pkt, size_t len);

/* The length of the largest packet offload_segment() makes of pkt (the
 * room each out slot needs), or 0 if it cannot segment it. */
size_t offload_segment_max(const struct virtio_net_hdr *vh, const uint8_t *pkt, size_t len);

/* Cuts pkt (the bytes after the virtio_net_hdr) into packets, skipping the
 * first `skip` segments, writing at most nout of them into out[] (each gets
 * len set; it must have cap for its headers plus gso_size bytes). With
 * GSO_NONE the packet is copied, and its checksum completed if
 * VIRTIO_NET_HDR_F_NEEDS_CSUM. Every emitted segment has complete IPv4
 * header and TCP/UDP checksums, per-segment lengths, IPv4 IDs and TCP
 * sequence numbers; FIN and PSH stay on the last segment only, CWR on the
 * first only (as the kernel's tcp_gso_segment()).
 * Returns the number written, -EINVAL for a malformed header or packet,
 * -ENOSPC if an out slot is too small (nothing useful written then). */
int offload_segment(const struct virtio_net_hdr *vh, const uint8_t *pkt, size_t len,
		    size_t skip, struct pktbuf *out, size_t nout);

/* A coalesced packet: members are pkts[order[first]] .. pkts[order[first +
 * count - 1]], in sequence order. With count == 1 the member is written
 * unchanged behind `vnet` (all zero: GSO_NONE). Otherwise the packet on the
 * wire is vnet, hdr[0..hdr_len), then each member's bytes after its first
 * hdr_len bytes: IP total/payload length, IPv4 header checksum and the TCP
 * flags are rewritten in hdr, and the TCP checksum there holds the folded
 * pseudo-header sum, as VIRTIO_NET_HDR_F_NEEDS_CSUM asks. */
struct offload_group {
	size_t first;
	size_t count;
	struct virtio_net_hdr vnet;
	size_t hdr_len;
	uint8_t hdr[OFFLOAD_HDR_MAX];
};

enum {
	/* The packets were authenticated end to end (WireGuard's AEAD tag):
	 * their TCP checksums need no second look, as the Linux module marks
	 * them CHECKSUM_UNNECESSARY. */
	OFFLOAD_CSUM_TRUSTED = 1u << 0,
};

/* Groups pkts[0..n) (plain IP packets) for writing to a vnet-header TUN:
 * IPv4 (no options, not fragmented) and IPv6 (no extension headers) TCP
 * segments are merged when they belong to the same flow (addresses, ports,
 * ACK number), follow each other in sequence, carry equal TOS/traffic class,
 * TTL/hop limit, DF and TCP options, only ACK/PSH flags, a valid checksum
 * (not checked with OFFLOAD_CSUM_TRUSTED), and all but the last have the
 * same payload size; a PSH segment ends a group. Anything else stays a
 * group of one. A merged packet never exceeds OFFLOAD_MAX_PACKET. order
 * must hold n entries, groups n entries. Returns the number of groups;
 * groups keep the order of their first packets. */
size_t offload_coalesce(const struct pktbuf *pkts, size_t n, struct offload_group *groups,
			size_t *order, unsigned flags);

/* Materialises a group into one buffer (vnet header excluded): what the
 * kernel would see. For tests and for writers without writev. Returns the
 * length, or 0 if cap is too small. */
size_t offload_group_build(const struct offload_group *g, const struct pktbuf *pkts,
			   const size_t *order, uint8_t *out, size_t cap);

#endif
