#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "net/offload.h"
#include "pkt_ref.h"

/* ---- an independent, obviously-correct checksum and packet builder ---- */

static uint32_t ref_pseudo(const uint8_t *ip, bool v6, uint8_t proto, size_t l4len)
{
	uint32_t s = proto + (uint32_t)l4len;
	if (v6)
		return ref_sum(ip + 8, 32, 0) + s;
	return ref_sum(ip + 12, 8, 0) + s;
}

/* Whole-packet check: IPv4 header checksum and length fields, L4 checksum. */
static void assert_packet_valid(const uint8_t *p, size_t len)
{
	bool v6 = (p[0] >> 4) == 6;
	size_t iph = v6 ? 40 : (size_t)(p[0] & 15) * 4;
	uint8_t proto = v6 ? p[6] : p[9];

	if (v6) {
		assert_int_equal(rd16(p + 4) + 40, len);
	} else {
		assert_int_equal(rd16(p + 2), len);
		assert_int_equal(ref_sum(p, iph, 0), 0xffff);
	}
	assert_int_equal(ref_sum(p + iph, len - iph, ref_pseudo(p, v6, proto, len - iph)), 0xffff);
	if (proto == 17) {
		assert_int_equal(rd16(p + iph + 4), len - iph);
		assert_int_not_equal(rd16(p + iph + 6), 0);
	}
}

struct mk {
	bool v6, udp;
	uint32_t seq;
	uint8_t flags;
	uint16_t id;
	size_t optlen; /* TCP options, multiple of 4 */
	uint8_t ttl;
	uint16_t sport;
};

/* Builds IP + TCP/UDP + payload with correct checksums; returns length. */
static size_t mk_pkt(uint8_t *b, const struct mk *m, const uint8_t *payload, size_t plen)
{
	size_t iph = m->v6 ? 40 : 20;
	size_t l4h = m->udp ? 8 : 20 + m->optlen;
	size_t len = iph + l4h + plen;
	uint8_t *l4 = b + iph;

	memset(b, 0, iph + l4h);
	if (m->v6) {
		b[0] = 0x60;
		wr16(b + 4, (uint16_t)(len - 40));
		b[6] = m->udp ? 17 : 6;
		b[7] = m->ttl ? m->ttl : 64;
		b[8] = 0xfd;
		b[23] = 1;
		b[24] = 0xfd;
		b[39] = 2;
	} else {
		b[0] = 0x45;
		wr16(b + 2, (uint16_t)len);
		wr16(b + 4, m->id);
		b[6] = 0x40; /* DF */
		b[8] = m->ttl ? m->ttl : 64;
		b[9] = m->udp ? 17 : 6;
		b[12] = 10, b[15] = 1;
		b[16] = 10, b[19] = 2;
		wr16(b + 10, ~ref_sum(b, 20, 0));
	}
	wr16(l4, m->sport ? m->sport : 1234);
	wr16(l4 + 2, 80);
	if (m->udp) {
		wr16(l4 + 4, (uint16_t)(l4h + plen));
	} else {
		wr32(l4 + 4, m->seq);
		wr32(l4 + 8, 777);
		l4[12] = (uint8_t)(l4h / 4) << 4;
		l4[13] = m->flags;
		wr16(l4 + 14, 1000);
		for (size_t i = 0; i < m->optlen; i++)
			l4[20 + i] = i % 4 == 0 ? 1 : (uint8_t)(0x30 + i); /* NOP, junk */
	}
	memcpy(l4 + l4h, payload, plen);
	uint16_t c = ~ref_sum(l4, l4h + plen, ref_pseudo(b, m->v6, m->udp ? 17 : 6, l4h + plen));
	if (m->udp && c == 0)
		c = 0xffff;
	wr16(l4 + (m->udp ? 6 : 16), c);
	return len;
}

/* Turns a complete packet into what a TUN read yields under TSO/USO: the L4
 * checksum field holds the folded pseudo-header sum only. */
static void make_partial(uint8_t *b, size_t len, struct virtio_net_hdr *vh, bool udp, uint16_t gso)
{
	bool v6 = (b[0] >> 4) == 6;
	size_t iph = v6 ? 40 : 20;
	size_t off = udp ? 6 : 16;

	memset(vh, 0, sizeof(*vh));
	vh->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	vh->gso_type = udp ? VIRTIO_NET_HDR_GSO_UDP_L4 : v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
	vh->gso_size = gso;
	vh->csum_start = (uint16_t)iph;
	vh->csum_offset = (uint16_t)off;
	vh->hdr_len = (uint16_t)(iph + (udp ? 8 : (b[iph + 12] >> 4) * 4));
	wr16(b + iph + off, ref_sum(NULL, 0, ref_pseudo(b, v6, udp ? 17 : 6, len - iph)));
}

#define NSLOT 64
#define SLOT 2048

struct slots {
	uint8_t mem[NSLOT][SLOT];
	struct pktbuf pb[NSLOT];
};

static struct slots *slots_new(void)
{
	struct slots *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	for (int i = 0; i < NSLOT; i++)
		s->pb[i] = (struct pktbuf){ .data = s->mem[i], .cap = SLOT };
	return s;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
}

/* ---- checksum ---- */

static void test_checksum_matches_reference(void **state)
{
	uint8_t buf[1600];

	fill(buf, sizeof(buf), 3);
	for (size_t off = 0; off < 8; off++)
		for (size_t n = 0; n + off <= sizeof(buf); n += 37)
			assert_int_equal(offload_checksum(buf + off, n, 0x1234), ref_sum(buf + off, n, 0x1234));
	memset(buf, 0xff, sizeof(buf));
	assert_int_equal(offload_checksum(buf, sizeof(buf), 0xffff), ref_sum(buf, sizeof(buf), 0xffff));
}

/* The fused copy sums what it copies, at every length and alignment
 * (either side of the AVX2 threshold), and copies it exactly. */
static void test_copy_checksum(void **state)
{
	static uint8_t src[1700], dst[1700];

	fill(src, sizeof(src), 5);
	for (size_t off = 0; off < 4; off++)
		for (size_t n = 0; n + off + 8 <= sizeof(src); n += n < 300 ? 1 : 29) {
			memset(dst, 0xee, sizeof(dst));
			assert_int_equal(offload_copy_checksum(dst + off, src + off + 3, n, 0x4321),
					 ref_sum(src + off + 3, n, 0x4321));
			assert_memory_equal(dst + off, src + off + 3, n);
			assert_int_equal(dst[off + n], 0xee);
		}
}

/* ---- segmentation ---- */

static void check_tso(bool v6, bool udp, size_t optlen, size_t plen, uint16_t gso, uint8_t flags)
{
	static uint8_t pkt[70000], payload[65536];
	struct slots *s = slots_new();
	struct virtio_net_hdr vh;
	struct mk m = { .v6 = v6, .udp = udp, .seq = 0xfffff000u, .flags = flags, .id = 0xfffe, .optlen = optlen };
	size_t len, hl = (v6 ? 40 : 20) + (udp ? 8 : 20 + optlen);
	size_t want = (plen + gso - 1) / gso;
	int n;

	fill(payload, plen, 9);
	len = mk_pkt(pkt, &m, payload, plen);
	make_partial(pkt, len, &vh, udp, gso);

	assert_int_equal(offload_segment_count(&vh, pkt, len), (int)want);
	assert_int_equal(offload_segment_max(&vh, pkt, len), hl + (want > 1 ? gso : plen));
	n = offload_segment(&vh, pkt, len, 0, s->pb, NSLOT);
	assert_int_equal(n, (int)want);
	for (int i = 0; i < n; i++) {
		const uint8_t *d = s->pb[i].data, *l4 = d + (v6 ? 40 : 20);
		size_t seg = (size_t)i == want - 1 ? plen - (size_t)i * gso : gso;
		assert_int_equal(s->pb[i].len, hl + seg);
		assert_packet_valid(d, s->pb[i].len);
		assert_memory_equal(d + hl, payload + (size_t)i * gso, seg);
		if (!v6)
			assert_int_equal(rd16(d + 4), (uint16_t)(0xfffe + i));
		if (udp)
			continue;
		assert_int_equal(rd32(l4 + 4), (uint32_t)(m.seq + (uint32_t)i * gso));
		assert_int_equal(rd32(l4 + 8), 777);
		uint8_t f = l4[13];
		if (i == n - 1)
			assert_int_equal(f & 0x09, flags & 0x09);
		else
			assert_int_equal(f & 0x09, 0);
		if (i > 0)
			assert_int_equal(f & 0x80, 0);
		else
			assert_int_equal(f & 0x80, flags & 0x80);
		assert_memory_equal(l4 + 20, pkt + (v6 ? 40 : 20) + 20, optlen);
	}
	free(s);
}

static void test_tso4(void **state)
{
	check_tso(false, false, 12, 5000, 1400, 0x10 | 0x08 | 0x01 | 0x80);
	check_tso(false, false, 0, 1400 * 3, 1400, 0x10);
	check_tso(false, false, 40, 1, 1400, 0x18);
	check_tso(false, false, 0, 60000, 1448, 0x18);
}

static void test_tso6(void **state)
{
	check_tso(true, false, 12, 5000, 1380, 0x10 | 0x08 | 0x80);
	check_tso(true, false, 0, 64000, 1440, 0x10);
}

static void test_uso(void **state)
{
	check_tso(false, true, 0, 4000, 1200, 0);
	check_tso(true, true, 0, 4001, 1200, 0);
	check_tso(true, true, 0, 100, 1200, 0);
}

static void test_segment_skip_and_space(void **state)
{
	static uint8_t pkt[8000], payload[5000];
	struct slots *s = slots_new();
	struct virtio_net_hdr vh;
	struct mk m = { .seq = 1000, .flags = 0x18, .id = 7 };
	size_t len;

	fill(payload, sizeof(payload), 1);
	len = mk_pkt(pkt, &m, payload, sizeof(payload));
	make_partial(pkt, len, &vh, false, 1000);
	assert_int_equal(offload_segment(&vh, pkt, len, 2, s->pb, 2), 2);
	assert_int_equal(rd32(s->pb[0].data + 24), 3000);
	assert_int_equal(rd16(s->pb[0].data + 4), 9);
	assert_int_equal(s->pb[1].data[33] & 0x08, 0);
	assert_int_equal(offload_segment(&vh, pkt, len, 4, s->pb, 2), 1);
	assert_int_equal(s->pb[0].data[33] & 0x08, 0x08);
	assert_packet_valid(s->pb[0].data, s->pb[0].len);
	assert_int_equal(offload_segment(&vh, pkt, len, 5, s->pb, 2), 0);
	s->pb[1].cap = 100;
	assert_int_equal(offload_segment(&vh, pkt, len, 0, s->pb, 2), -ENOSPC);
	free(s);
}

static void test_segment_none_needs_csum(void **state)
{
	uint8_t pkt[300], payload[200];
	struct slots *s = slots_new();
	struct virtio_net_hdr vh;
	struct mk m = { .udp = true };
	size_t len;

	fill(payload, sizeof(payload), 5);
	len = mk_pkt(pkt, &m, payload, sizeof(payload));
	make_partial(pkt, len, &vh, true, 0);
	vh.gso_type = VIRTIO_NET_HDR_GSO_NONE;
	assert_int_equal(offload_segment_max(&vh, pkt, len), len);
	assert_int_equal(offload_segment(&vh, pkt, len, 0, s->pb, 1), 1);
	assert_int_equal(s->pb[0].len, len);
	assert_packet_valid(s->pb[0].data, len);

	/* no flags: copied verbatim, even if its checksum is wrong */
	memset(&vh, 0, sizeof(vh));
	pkt[len - 1] ^= 1;
	assert_int_equal(offload_segment(&vh, pkt, len, 0, s->pb, 1), 1);
	assert_memory_equal(s->pb[0].data, pkt, len);
	free(s);
}

static void test_segment_malformed(void **state)
{
	uint8_t pkt[3000], payload[2000];
	struct slots *s = slots_new();
	struct virtio_net_hdr vh, base;
	struct mk m = { .seq = 1, .flags = 0x10 };
	size_t len;

	fill(payload, sizeof(payload), 2);
	len = mk_pkt(pkt, &m, payload, sizeof(payload));
	make_partial(pkt, len, &base, false, 1000);

	static const char *const cases[] = {
		"gso_size 0", "UFO", "unknown type", "TCPV6 on v4", "csum_start not ihl",
		"csum_offset wrong", "USO on TCP packet", "data offset < 5", "data offset past end",
		"truncated tcp header", "version 5", "empty", "none csum beyond end", "oversize",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t *p = calloc(1, 70000);
		size_t l = len;
		assert_non_null(p);
		vh = base;
		memcpy(p, pkt, len);
		switch (i) {
		case 0: vh.gso_size = 0; break;
		case 1: vh.gso_type = VIRTIO_NET_HDR_GSO_UDP; break;
		case 2: vh.gso_type = 9; break;
		case 3: vh.gso_type = VIRTIO_NET_HDR_GSO_TCPV6; break;
		case 4: vh.csum_start = 24; break;
		case 5: vh.csum_offset = 6; break;
		case 6: vh.gso_type = VIRTIO_NET_HDR_GSO_UDP_L4; vh.csum_offset = 6; break;
		case 7: p[32] = 0x40; break;
		case 8: l = 50; p[32] = 0xf0; break;
		case 9: l = 30; break;
		case 10: p[0] = 0x55; break;
		case 11: l = 0; break;
		case 12: vh.gso_type = 0; vh.csum_start = 2990; vh.csum_offset = 16; break;
		case 13: l = 65536 + 1; break;
		}
		if (offload_segment(&vh, p, l, 0, s->pb, NSLOT) != -EINVAL)
			fail_msg("accepted: %s", cases[i]);
		assert_int_equal(offload_segment_count(&vh, p, l), -EINVAL);
		assert_int_equal(offload_segment_max(&vh, p, l), 0);
		free(p);
	}
	free(s);
}

/* ---- coalescing ---- */

struct batch {
	uint8_t mem[NSLOT][SLOT];
	struct pktbuf pb[NSLOT];
	size_t n;
	struct offload_group groups[NSLOT];
	size_t order[NSLOT];
};

static struct batch *batch_new(void)
{
	struct batch *b = calloc(1, sizeof(*b));
	assert_non_null(b);
	return b;
}

static void add(struct batch *b, const struct mk *m, size_t plen)
{
	uint8_t payload[SLOT];

	fill(payload, plen, (unsigned)(m->seq + b->n));
	b->pb[b->n] = (struct pktbuf){ .data = b->mem[b->n], .cap = SLOT };
	b->pb[b->n].len = mk_pkt(b->mem[b->n], m, payload, plen);
	b->n++;
}

/* A run of n segments of one flow, IDs and sequence numbers in step. */
static void add_run(struct batch *b, struct mk m, size_t n, size_t plen, size_t last_plen, bool last_psh)
{
	for (size_t i = 0; i < n; i++) {
		struct mk x = m;
		x.seq = m.seq + (uint32_t)(i * plen);
		x.id = (uint16_t)(m.id + i);
		if (i == n - 1 && last_psh)
			x.flags |= 0x08;
		add(b, &x, i == n - 1 ? last_plen : plen);
	}
}

/* Builds each group, then segments it again: must give back the originals. */
static void assert_roundtrip(struct batch *b, size_t ngroups)
{
	static uint8_t super[70000];
	struct slots *s = slots_new();
	size_t seen = 0;

	for (size_t g = 0; g < ngroups; g++) {
		struct offload_group *gr = &b->groups[g];
		size_t len = offload_group_build(gr, b->pb, b->order, super, sizeof(super));
		assert_true(len > 0);
		assert_true(len <= OFFLOAD_MAX_PACKET);
		if (gr->count == 1) {
			assert_int_equal(gr->vnet.gso_type, VIRTIO_NET_HDR_GSO_NONE);
			assert_int_equal(gr->vnet.flags, 0);
		} else {
			assert_int_equal(gr->vnet.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
			assert_int_equal(gr->vnet.hdr_len, gr->hdr_len);
			/* what the kernel does with NEEDS_CSUM, then a valid packet */
			uint8_t *f = super + gr->vnet.csum_start + gr->vnet.csum_offset;
			wr16(f, ~ref_sum(super + gr->vnet.csum_start, len - gr->vnet.csum_start, 0));
			assert_packet_valid(super, len);
			wr16(f, ref_sum(NULL, 0, ref_pseudo(super, (super[0] >> 4) == 6, 6,
							   len - gr->vnet.csum_start)));
		}
		int n = offload_segment(&gr->vnet, super, len, 0, s->pb, NSLOT);
		assert_int_equal(n, (int)gr->count);
		for (int k = 0; k < n; k++) {
			const struct pktbuf *o = &b->pb[b->order[gr->first + (size_t)k]];
			assert_int_equal(s->pb[k].len, o->len);
			assert_memory_equal(s->pb[k].data, o->data, o->len);
		}
		seen += gr->count;
	}
	assert_int_equal(seen, b->n);
	free(s);
}

static void test_coalesce_one_flow(void **state)
{
	for (int v6 = 0; v6 < 2; v6++) {
		struct batch *b = batch_new();
		struct mk m = { .v6 = v6, .seq = 0xffffff00u, .flags = 0x10, .id = 100, .optlen = 12 };
		add_run(b, m, 20, 1200, 500, true);
		size_t n = offload_coalesce(b->pb, b->n, b->groups, b->order, 0);
		assert_int_equal(n, 1);
		assert_int_equal(b->groups[0].count, 20);
		assert_int_equal(b->groups[0].vnet.gso_size, 1200);
		assert_int_equal(b->groups[0].vnet.gso_type, v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4);
		assert_int_equal(b->groups[0].vnet.csum_start, v6 ? 40 : 20);
		assert_int_equal(b->groups[0].vnet.csum_offset, 16);
		assert_roundtrip(b, n);
		free(b);
	}
}

static void test_coalesce_interleaved_flows(void **state)
{
	struct batch *b = batch_new();
	struct mk a = { .seq = 1, .flags = 0x10, .id = 1, .sport = 1000 };
	struct mk c = { .v6 = true, .seq = 5, .flags = 0x10, .sport = 2000 };

	for (int i = 0; i < 10; i++) {
		struct mk x = a, y = c;
		x.seq += (uint32_t)i * 1000;
		x.id = (uint16_t)(a.id + i);
		y.seq += (uint32_t)i * 900;
		add(b, &x, 1000);
		add(b, &y, 900);
	}
	size_t n = offload_coalesce(b->pb, b->n, b->groups, b->order, 0);
	assert_int_equal(n, 2);
	assert_int_equal(b->groups[0].count, 10);
	assert_int_equal(b->groups[1].count, 10);
	assert_int_equal(b->order[0], 0);
	assert_int_equal(b->order[1], 2);
	assert_int_equal(b->order[10], 1);
	assert_roundtrip(b, n);
	free(b);
}

/* Trusted (authenticated) segments merge without a checksum check, and
 * everything else is still refused. */
static void test_coalesce_trusted(void **state)
{
	struct mk m = { .seq = 1, .flags = 0x10, .id = 1 }, second = { .seq = 1001, .flags = 0x10, .id = 2 };
	struct batch *b = batch_new();
	size_t n;

	add(b, &m, 1000);
	add(b, &second, 1000);
	b->mem[1][60] ^= 0x55; /* payload: the checksum no longer matches */
	assert_int_equal(offload_coalesce(b->pb, b->n, b->groups, b->order, 0), 2);
	n = offload_coalesce(b->pb, b->n, b->groups, b->order, OFFLOAD_CSUM_TRUSTED);
	assert_int_equal(n, 1);
	assert_int_equal(b->groups[0].count, 2);
	assert_int_equal(b->groups[0].vnet.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
	free(b);

	b = batch_new();
	add(b, &m, 1000);
	second.flags = 0x11; /* FIN */
	add(b, &second, 1000);
	assert_int_equal(offload_coalesce(b->pb, b->n, b->groups, b->order, OFFLOAD_CSUM_TRUSTED), 2);
	free(b);
}

static void test_coalesce_refusals(void **state)
{
	struct mk m = { .seq = 1, .flags = 0x10, .id = 1 };
	struct batch *b;
	size_t n;

	/* each pair must stay apart */
	static const struct {
		const char *what;
		struct mk second;
		size_t plen2;
		int mut;
	} cases[] = {
		{ "seq gap", { .seq = 1 + 1000 + 1, .flags = 0x10, .id = 2 }, 1000, 0 },
		{ "SYN", { .seq = 1001, .flags = 0x12, .id = 2 }, 1000, 0 },
		{ "FIN", { .seq = 1001, .flags = 0x11, .id = 2 }, 1000, 0 },
		{ "RST", { .seq = 1001, .flags = 0x14, .id = 2 }, 1000, 0 },
		{ "URG", { .seq = 1001, .flags = 0x30, .id = 2 }, 1000, 0 },
		{ "no ACK", { .seq = 1001, .flags = 0x00, .id = 2 }, 1000, 0 },
		{ "TTL", { .seq = 1001, .flags = 0x10, .id = 2, .ttl = 9 }, 1000, 0 },
		{ "port", { .seq = 1001, .flags = 0x10, .id = 2, .sport = 9 }, 1000, 0 },
		{ "options", { .seq = 1001, .flags = 0x10, .id = 2, .optlen = 4 }, 1000, 0 },
		{ "bigger than first", { .seq = 1001, .flags = 0x10, .id = 2 }, 1001, 0 },
		{ "pure ACK", { .seq = 1001, .flags = 0x10, .id = 2 }, 0, 0 },
		{ "bad checksum", { .seq = 1001, .flags = 0x10, .id = 2 }, 1000, 1 },
		{ "TOS", { .seq = 1001, .flags = 0x10, .id = 2 }, 1000, 2 },
		{ "fragment", { .seq = 1001, .flags = 0x10, .id = 2 }, 1000, 3 },
		{ "ack differs", { .seq = 1001, .flags = 0x10, .id = 2 }, 1000, 4 },
		{ "length field lies", { .seq = 1001, .flags = 0x10, .id = 2 }, 1000, 5 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t *p;
		b = batch_new();
		add(b, &m, 1000);
		add(b, &cases[i].second, cases[i].plen2);
		p = b->mem[1];
		switch (cases[i].mut) {
		case 1: p[100] ^= 0x55; break;
		case 2: p[1] = 4; break;
		case 3: p[6] = 0x20; break;
		case 4: p[31] ^= 1; p[37] ^= 1; break; /* checksum stays right */
		case 5: p[3] ^= 1; break;
		}
		if (cases[i].mut == 2 || cases[i].mut == 3 || cases[i].mut == 5) {
			p[10] = p[11] = 0;
			wr16(p + 10, ~ref_sum(p, 20, 0));
		}
		n = offload_coalesce(b->pb, b->n, b->groups, b->order, 0);
		if (n != 2)
			fail_msg("merged: %s", cases[i].what);
		if (cases[i].mut != 5)
			assert_roundtrip(b, n);
		free(b);
	}

	/* PSH ends a group; a short segment too; the next one starts anew */
	b = batch_new();
	add_run(b, m, 3, 1000, 1000, true);
	m.seq = 3001;
	add_run(b, m, 2, 1000, 400, false);
	m.seq = 4401;
	add(b, &m, 1000);
	n = offload_coalesce(b->pb, b->n, b->groups, b->order, 0);
	assert_int_equal(n, 3);
	assert_int_equal(b->groups[0].count, 3);
	assert_int_equal(b->groups[1].count, 2);
	assert_int_equal(b->groups[2].count, 1);
	assert_true(b->groups[0].hdr[33] & 0x08);
	assert_roundtrip(b, n);
	free(b);

	/* never beyond 64 KB */
	b = batch_new();
	m.seq = 1;
	add_run(b, m, 60, 1400, 1400, false);
	n = offload_coalesce(b->pb, b->n, b->groups, b->order, 0);
	assert_int_equal(n, 2);
	assert_int_equal(b->groups[0].count, (65535 - 40) / 1400);
	assert_roundtrip(b, n);
	free(b);

	/* garbage and non-TCP pass through */
	b = batch_new();
	add(b, &(struct mk){ .udp = true }, 100);
	b->pb[1] = (struct pktbuf){ .data = b->mem[1], .len = 3, .cap = SLOT };
	b->pb[2] = (struct pktbuf){ .data = b->mem[2], .len = 0, .cap = SLOT };
	b->n = 3;
	n = offload_coalesce(b->pb, b->n, b->groups, b->order, 0);
	assert_int_equal(n, 3);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_checksum_matches_reference),
		cmocka_unit_test(test_copy_checksum),
		cmocka_unit_test(test_tso4),
		cmocka_unit_test(test_tso6),
		cmocka_unit_test(test_uso),
		cmocka_unit_test(test_segment_skip_and_space),
		cmocka_unit_test(test_segment_none_needs_csum),
		cmocka_unit_test(test_segment_malformed),
		cmocka_unit_test(test_coalesce_one_flow),
		cmocka_unit_test(test_coalesce_interleaved_flows),
		cmocka_unit_test(test_coalesce_trusted),
		cmocka_unit_test(test_coalesce_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
