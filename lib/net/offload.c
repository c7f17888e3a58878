#include "net/offload.h"

#include <errno.h>
#include <string.h>

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_CWR 0x80

/* Coalescing keeps its state on the stack: packets beyond COALESCE_MAX in
 * a batch pass through unmerged, and at most OPEN_MAX flows are tracked. */
#define COALESCE_MAX 1024
#define OPEN_MAX 64

static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = (v >> 16) & 0xff;
	p[2] = (v >> 8) & 0xff;
	p[3] = v & 0xff;
}

static inline uint16_t fold(uint64_t s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

#if defined(__x86_64__)
#include <immintrin.h>

/* Sums the 32-bit words of p[0..len/32*32) into 64-bit lanes (no carries
 * to fold until the end); ~5x the scalar loop's speed. With dst, also
 * copies them there in the same pass. Returns the sum, below 2^48 for any
 * len up to 64 KB, and how far it got. */
__attribute__((target("avx2"))) static uint64_t sum32_avx2(uint8_t *dst, const uint8_t *p, size_t len, size_t *done)
{
	__m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256(), zero = _mm256_setzero_si256();
	uint64_t lanes[4];
	size_t i = 0;

	for (; i + 32 <= len; i += 32) {
		__m256i v = _mm256_loadu_si256((const __m256i *)(p + i));

		if (dst)
			_mm256_storeu_si256((__m256i *)(dst + i), v);
		a = _mm256_add_epi64(a, _mm256_unpacklo_epi32(v, zero));
		b = _mm256_add_epi64(b, _mm256_unpackhi_epi32(v, zero));
	}
	_mm256_storeu_si256((__m256i *)lanes, _mm256_add_epi64(a, b));
	*done = i;
	return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

static bool have_avx2(void)
{
	static int have = -1;

	if (have < 0)
		have = __builtin_cpu_supports("avx2") ? 1 : 0;
	return have;
}
#endif

/* RFC 1071 is byte-order independent: summing host-order (little-endian)
 * words yields the byte-swapped big-endian sum, so we load 8 bytes at a time
 * (32 with AVX2) and swap once at the end. acc is what an AVX2 pass over
 * the bytes before p summed. */
static uint16_t checksum_tail(const uint8_t *p, size_t len, uint64_t acc, uint32_t sum)
{
	uint64_t v;
	uint16_t r;

	while (len >= 32) {
		uint64_t w[4];
		memcpy(w, p, sizeof(w));
		acc += w[0];
		acc += acc < w[0];
		acc += w[1];
		acc += acc < w[1];
		acc += w[2];
		acc += acc < w[2];
		acc += w[3];
		acc += acc < w[3];
		p += 32;
		len -= 32;
	}
	while (len >= 8) {
		memcpy(&v, p, 8);
		acc += v;
		acc += acc < v;
		p += 8;
		len -= 8;
	}
	v = 0;
	memcpy(&v, p, len);
	acc += v;
	acc += acc < v;
	r = fold(acc);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	r = __builtin_bswap16(r);
#endif
	return fold((uint64_t)r + fold(sum));
}

/* The checksum of src's len bytes added to sum; with dst, the bytes are
 * also copied there, read once. */
static uint16_t checksum_copy(uint8_t *dst, const uint8_t *src, size_t len, uint32_t sum)
{
	uint64_t acc = 0;

#if defined(__x86_64__)
	if (len >= 128 && len <= OFFLOAD_MAX_PACKET && have_avx2()) {
		size_t done;

		acc = sum32_avx2(dst, src, len, &done);
		src += done;
		dst = dst ? dst + done : NULL;
		len -= done;
	}
#endif
	if (dst) {
		memcpy(dst, src, len);
		src = dst;
	}
	return checksum_tail(src, len, acc, sum);
}

uint16_t offload_checksum(const void *buf, size_t len, uint32_t sum)
{
	return checksum_copy(NULL, buf, len, sum);
}

uint16_t offload_copy_checksum(void *dst, const void *src, size_t len, uint32_t sum)
{
	return checksum_copy(dst, src, len, sum);
}

static uint32_t pseudo_sum(bool v6, const uint8_t *ip, uint8_t proto, size_t l4len)
{
	uint32_t s = proto + (uint32_t)l4len;
	const uint8_t *a = v6 ? ip + 8 : ip + 12;
	size_t alen = v6 ? 32 : 8;

	for (size_t i = 0; i < alen; i += 2)
		s += get16(a + i);
	return s;
}

/* ---- segmentation ---------------------------------------------------- */

struct gso {
	bool v6, tcp, none;
	size_t l4; /* csum_start: where the transport header begins */
	size_t hdr_len;
	size_t gso_size;
	size_t count;
};

static bool parse_gso(const struct virtio_net_hdr *vh, const uint8_t *pkt, size_t len, struct gso *g)
{
	uint8_t type = vh->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;
	uint8_t proto;

	memset(g, 0, sizeof(*g));
	if (len == 0 || len > OFFLOAD_MAX_PACKET)
		return false;
	if (type == VIRTIO_NET_HDR_GSO_NONE) {
		g->none = true;
		g->count = 1;
		if (!(vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))
			return true;
		return (size_t)vh->csum_start + vh->csum_offset + 2 <= len;
	}
	switch (type) {
	case VIRTIO_NET_HDR_GSO_TCPV4:
	case VIRTIO_NET_HDR_GSO_TCPV6:
		g->tcp = true;
		break;
	case VIRTIO_NET_HDR_GSO_UDP_L4:
		break;
	default:
		return false; /* UFO (GSO_UDP) is never negotiated */
	}
	if (vh->gso_size == 0 || len < 20)
		return false;
	g->v6 = (pkt[0] >> 4) == 6;
	if (!g->v6 && (pkt[0] >> 4) != 4)
		return false;
	if ((type == VIRTIO_NET_HDR_GSO_TCPV4 && g->v6) || (type == VIRTIO_NET_HDR_GSO_TCPV6 && !g->v6))
		return false;
	g->l4 = vh->csum_start;
	proto = g->tcp ? IPPROTO_TCP_ : IPPROTO_UDP_;
	if (g->v6) {
		/* With extension headers csum_start points past them; we trust it
		 * and check the next header only when there are none. */
		if (len < 40 || g->l4 < 40 || (g->l4 == 40 && pkt[6] != proto))
			return false;
	} else {
		if (g->l4 != (size_t)(pkt[0] & 0x0f) * 4 || g->l4 < 20 || pkt[9] != proto)
			return false;
	}
	if ((vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && vh->csum_offset != (g->tcp ? 16 : 6))
		return false;
	if (g->tcp) {
		if (g->l4 + 20 > len)
			return false;
		/* The kernel's hdr_len is only a hint; the TCP data offset is the truth. */
		g->hdr_len = g->l4 + (size_t)(pkt[g->l4 + 12] >> 4) * 4;
		if (g->hdr_len < g->l4 + 20)
			return false;
	} else {
		g->hdr_len = g->l4 + 8;
	}
	if (g->hdr_len > len)
		return false;
	g->gso_size = vh->gso_size;
	if (len - g->hdr_len == 0)
		g->count = 1;
	else
		g->count = (len - g->hdr_len + g->gso_size - 1) / g->gso_size;
	if (g->hdr_len + (g->count > 1 ? g->gso_size : len - g->hdr_len) > OFFLOAD_MAX_PACKET)
		return false;
	return true;
}

int offload_segment_count(const struct virtio_net_hdr *vh, const uint8_t *pkt, size_t len)
{
	struct gso g;

	if (!parse_gso(vh, pkt, len, &g))
		return -EINVAL;
	return (int)g.count;
}

size_t offload_segment_max(const struct virtio_net_hdr *vh, const uint8_t *pkt, size_t len)
{
	struct gso g;

	if (!parse_gso(vh, pkt, len, &g))
		return 0;
	if (g.none)
		return len;
	return g.hdr_len + (g.count > 1 ? g.gso_size : len - g.hdr_len);
}

static int segment_none(const struct virtio_net_hdr *vh, const uint8_t *pkt, size_t len,
			struct pktbuf *out)
{
	uint8_t *d = out->data;

	if (out->cap < len)
		return -ENOSPC;
	memcpy(d, pkt, len);
	out->len = len;
	if (vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		/* The field holds the pseudo-header sum already; the sum runs over
		 * it (RFC 1071 §2: insert, then complement). */
		size_t at = (size_t)vh->csum_start + vh->csum_offset;
		uint16_t c = ~offload_checksum(d + vh->csum_start, len - vh->csum_start, 0);
		if (c == 0 && vh->csum_offset == 6)
			c = 0xffff; /* UDP: zero means "no checksum" (RFC 768) */
		put16(d + at, c);
	}
	return 1;
}

int offload_segment(const struct virtio_net_hdr *vh, const uint8_t *pkt, size_t len,
		    size_t skip, struct pktbuf *out, size_t nout)
{
	struct gso g;
	size_t payload, k = 0;

	if (!parse_gso(vh, pkt, len, &g))
		return -EINVAL;
	if (skip >= g.count || nout == 0)
		return 0;
	if (g.none)
		return segment_none(vh, pkt, len, out);

	payload = len - g.hdr_len;
	for (size_t i = skip; i < g.count && k < nout; i++, k++) {
		size_t off = i * g.gso_size;
		size_t seglen = payload - off < g.gso_size ? payload - off : g.gso_size;
		size_t total = g.hdr_len + seglen, l4len = total - g.l4;
		uint8_t *d = out[k].data;
		uint16_t c, psum;

		if (out[k].cap < total)
			return -ENOSPC;
		memcpy(d, pkt, g.hdr_len);
		/* The payload's sum comes with its copy; the L4 header (a
		 * multiple of 4 bytes long, so the payload starts on an even
		 * offset) is summed once its fields are set. */
		psum = offload_copy_checksum(d + g.hdr_len, pkt + g.hdr_len + off, seglen, 0);
		out[k].len = total;

		if (g.v6) {
			put16(d + 4, (uint16_t)(total - 40));
		} else {
			put16(d + 2, (uint16_t)total);
			put16(d + 4, (uint16_t)(get16(pkt + 4) + i));
			put16(d + 10, 0);
			put16(d + 10, (uint16_t)~offload_checksum(d, g.l4, 0));
		}
		if (g.tcp) {
			uint8_t *th = d + g.l4;
			put32(th + 4, get32(pkt + g.l4 + 4) + (uint32_t)off);
			if (i != g.count - 1)
				th[13] &= ~(TCP_FIN | TCP_PSH);
			if (i != 0)
				th[13] &= ~TCP_CWR;
			put16(th + 16, 0);
			c = ~offload_checksum(th, g.hdr_len - g.l4, pseudo_sum(g.v6, d, IPPROTO_TCP_, l4len) + psum);
			put16(th + 16, c);
		} else {
			uint8_t *uh = d + g.l4;
			put16(uh + 4, (uint16_t)l4len);
			put16(uh + 6, 0);
			c = ~offload_checksum(uh, g.hdr_len - g.l4, pseudo_sum(g.v6, d, IPPROTO_UDP_, l4len) + psum);
			put16(uh + 6, c ? c : 0xffff);
		}
	}
	return (int)k;
}

/* ---- coalescing -------------------------------------------------------- */

struct seg {
	bool v6;
	uint8_t flags;
	size_t iph, thl, plen;
	uint32_t seq;
};

/* A TCP segment that may join a group: plain header, ACK (and maybe PSH)
 * only, payload present, checksum right. Checksums are checked (unless
 * trusted) because the merged packet goes up as CHECKSUM_PARTIAL and would
 * hide a bad one. */
static bool parse_seg(const struct pktbuf *p, struct seg *s, bool trusted)
{
	const uint8_t *d = p->data;
	const uint8_t *th;
	size_t len = p->len;

	if (len < 40 || len > OFFLOAD_MAX_PACKET)
		return false;
	s->v6 = (d[0] >> 4) == 6;
	if (s->v6) {
		if (len < 60 || d[6] != IPPROTO_TCP_ || (size_t)get16(d + 4) + 40 != len)
			return false;
		s->iph = 40;
	} else {
		if (d[0] != 0x45 || d[9] != IPPROTO_TCP_ || get16(d + 2) != len)
			return false;
		if (get16(d + 6) & 0x3fff) /* MF or a fragment offset */
			return false;
		s->iph = 20;
	}
	th = d + s->iph;
	s->thl = (size_t)(th[12] >> 4) * 4;
	if (s->thl < 20 || s->iph + s->thl >= len)
		return false;
	s->flags = th[13];
	if ((s->flags & ~TCP_PSH) != TCP_ACK)
		return false;
	s->plen = len - s->iph - s->thl;
	s->seq = get32(th + 4);
	return trusted || offload_checksum(th, len - s->iph, pseudo_sum(s->v6, d, IPPROTO_TCP_, len - s->iph)) == 0xffff;
}

/* Same flow and same everything the kernel's GRO insists on. */
static bool same_flow(const uint8_t *a, const uint8_t *b, const struct seg *sa, const struct seg *sb)
{
	size_t n = sa->iph + sa->thl;

	if (sa->v6 != sb->v6 || sa->thl != sb->thl)
		return false;
	if (sa->v6) {
		/* version, traffic class, flow label, hop limit, addresses */
		if (memcmp(a, b, 4) || a[7] != b[7] || memcmp(a + 8, b + 8, 32))
			return false;
	} else {
		/* TOS, DF and reserved bits, TTL, addresses */
		if (a[1] != b[1] || (a[6] >> 5) != (b[6] >> 5) || a[8] != b[8] || memcmp(a + 12, b + 12, 8))
			return false;
	}
	/* ports, then ACK number, then options */
	a += sa->iph;
	b += sb->iph;
	return !memcmp(a, b, 4) && !memcmp(a + 8, b + 8, 4) &&
	       !memcmp(a + 20, b + 20, n - sa->iph - 20);
}

struct open_group {
	size_t gi;     /* index into groups[] */
	size_t last;   /* packet index of the newest member */
	struct seg s0; /* the first member */
	uint32_t next_seq;
	size_t total;
	bool closed;
};

static void finish_group(struct offload_group *g, const struct seg *s0, size_t total,
			 uint8_t last_flags)
{
	uint8_t *h = g->hdr;

	if (s0->v6) {
		put16(h + 4, (uint16_t)(total - 40));
	} else {
		put16(h + 2, (uint16_t)total);
		put16(h + 10, 0);
		put16(h + 10, (uint16_t)~offload_checksum(h, 20, 0));
	}
	h[s0->iph + 13] |= last_flags & TCP_PSH;
	put16(h + s0->iph + 16, fold(pseudo_sum(s0->v6, h, IPPROTO_TCP_, total - s0->iph)));
	g->vnet.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	g->vnet.gso_type = s0->v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
	g->vnet.hdr_len = (uint16_t)g->hdr_len;
	g->vnet.gso_size = (uint16_t)s0->plen;
	g->vnet.csum_start = (uint16_t)s0->iph;
	g->vnet.csum_offset = 16;
}

size_t offload_coalesce(const struct pktbuf *pkts, size_t n, struct offload_group *groups,
			size_t *order, unsigned flags)
{
	/* Members are linked through next[] while grouping, flattened after. */
	uint16_t next[COALESCE_MAX];
	struct open_group open[OPEN_MAX];
	size_t ngroups = 0, nopen = 0, pos = 0;

	for (size_t i = 0; i < n; i++) {
		struct seg s;
		struct open_group *o = NULL;
		bool ok = i < COALESCE_MAX && parse_seg(&pkts[i], &s, flags & OFFLOAD_CSUM_TRUSTED);

		if (ok) {
			for (size_t j = nopen; j-- > 0;) {
				struct open_group *c = &open[j];
				if (c->closed || c->next_seq != s.seq || s.plen > c->s0.plen ||
				    c->total + s.plen > OFFLOAD_MAX_PACKET ||
				    !same_flow(pkts[c->last].data, pkts[i].data, &c->s0, &s))
					continue;
				o = c;
				break;
			}
		}
		if (o) {
			struct offload_group *g = &groups[o->gi];
			next[o->last] = (uint16_t)i;
			next[i] = UINT16_MAX;
			o->last = i;
			o->next_seq += (uint32_t)s.plen;
			o->total += s.plen;
			o->closed = s.plen < o->s0.plen || (s.flags & TCP_PSH);
			g->count++;
			continue;
		}

		struct offload_group *g = &groups[ngroups];
		memset(&g->vnet, 0, sizeof(g->vnet));
		g->first = i; /* the head packet until flattened */
		g->count = 1;
		g->hdr_len = 0;
		if (i < COALESCE_MAX)
			next[i] = UINT16_MAX;
		if (ok && !(s.flags & TCP_PSH) && nopen < OPEN_MAX) {
			o = &open[nopen++];
			o->gi = ngroups;
			o->last = i;
			o->s0 = s;
			o->next_seq = s.seq + (uint32_t)s.plen;
			o->total = pkts[i].len;
			o->closed = false;
		}
		ngroups++;
	}

	for (size_t j = 0; j < nopen; j++) {
		struct offload_group *g = &groups[open[j].gi];
		if (g->count < 2)
			continue;
		g->hdr_len = open[j].s0.iph + open[j].s0.thl;
		memcpy(g->hdr, pkts[g->first].data, g->hdr_len);
		finish_group(g, &open[j].s0, open[j].total, pkts[open[j].last].data[open[j].s0.iph + 13]);
	}
	for (size_t gi = 0; gi < ngroups; gi++) {
		struct offload_group *g = &groups[gi];
		size_t i = g->first;
		g->first = pos;
		order[pos++] = i;
		if (i >= COALESCE_MAX)
			continue;
		while (next[i] != UINT16_MAX) {
			i = next[i];
			order[pos++] = i;
		}
	}
	return ngroups;
}

size_t offload_group_build(const struct offload_group *g, const struct pktbuf *pkts,
			   const size_t *order, uint8_t *out, size_t cap)
{
	size_t len = 0;

	if (g->count == 1) {
		const struct pktbuf *p = &pkts[order[g->first]];
		if (p->len > cap)
			return 0;
		memcpy(out, p->data, p->len);
		return p->len;
	}
	if (g->hdr_len > cap)
		return 0;
	memcpy(out, g->hdr, g->hdr_len);
	len = g->hdr_len;
	for (size_t k = 0; k < g->count; k++) {
		const struct pktbuf *p = &pkts[order[g->first + k]];
		size_t n = p->len - g->hdr_len;
		if (n > cap - len)
			return 0;
		memcpy(out + len, p->data + g->hdr_len, n);
		len += n;
	}
	return len;
}
