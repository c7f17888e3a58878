/* The stateful packet filter (lib/policy/filter.c): table-driven cases,
 * each a packetFilter, then packets going in or out (or a swap to another
 * packetFilter) with the verdict each must get; plus the compiler's
 * errors, the table bounds and swaps racing checks on other threads. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <pthread.h>

#include <cmocka.h>

#include "buf.h"
#include "json.h"
#include "net/offload.h"
#include "policy/filter.h"

#include "filter_ref.h"

#define L4 "100.64.0.7"
#define L6 "fd7a:115c:a1e0::7"
#define A4 "100.64.0.3"
#define A6 "fd7a:115c:a1e0::3"
#define B4 "100.64.0.4"
#define B6 "fd7a:115c:a1e0::4"
#define R4 "10.0.0.1"

#define TCP 6
#define UDP 17
#define ICMP 1
#define ICMP6 58
#define GRE 47

#define SYN 0x02
#define ACK 0x10
#define FIN 0x01
#define RST 0x04
#define SYNACK (SYN | ACK)

/* One packet: for TCP/UDP sport and dport; for ICMP `flags` is the type
 * and dport the echo identifier. */
struct spec {
	const char *src, *dst;
	uint8_t proto;
	uint16_t sport, dport;
	uint8_t flags;
};

static size_t put_l4(uint8_t *p, const struct spec *s)
{
	switch (s->proto) {
	case TCP:
		p[0] = (uint8_t)(s->sport >> 8), p[1] = (uint8_t)s->sport;
		p[2] = (uint8_t)(s->dport >> 8), p[3] = (uint8_t)s->dport;
		p[12] = 5 << 4;
		p[13] = s->flags;
		return 20;
	case UDP:
		p[0] = (uint8_t)(s->sport >> 8), p[1] = (uint8_t)s->sport;
		p[2] = (uint8_t)(s->dport >> 8), p[3] = (uint8_t)s->dport;
		p[5] = 8;
		return 8;
	case 132: /* SCTP common header */
		p[0] = (uint8_t)(s->sport >> 8), p[1] = (uint8_t)s->sport;
		p[2] = (uint8_t)(s->dport >> 8), p[3] = (uint8_t)s->dport;
		return 12;
	case ICMP:
	case ICMP6:
		p[0] = s->flags;
		p[4] = (uint8_t)(s->dport >> 8), p[5] = (uint8_t)s->dport;
		return 8;
	default:
		return 8;
	}
}

/* Writes the IP header for s with payload plen after it; returns header length. */
static size_t put_ip(uint8_t *p, const struct spec *s, size_t plen)
{
	if (strchr(s->src, ':')) {
		p[0] = 0x60;
		p[4] = (uint8_t)(plen >> 8), p[5] = (uint8_t)plen;
		p[6] = s->proto;
		p[7] = 64;
		inet_pton(AF_INET6, s->src, p + 8);
		inet_pton(AF_INET6, s->dst, p + 24);
		return 40;
	}
	p[0] = 0x45;
	p[2] = (uint8_t)((20 + plen) >> 8), p[3] = (uint8_t)(20 + plen);
	p[8] = 64;
	p[9] = s->proto;
	inet_pton(AF_INET, s->src, p + 12);
	inet_pton(AF_INET, s->dst, p + 16);
	return 20;
}

static size_t build(uint8_t *buf, const struct spec *s)
{
	uint8_t l4[64] = { 0 };
	size_t n = put_l4(l4, s), h;

	memset(buf, 0, 128);
	h = put_ip(buf, s, n);
	memcpy(buf + h, l4, n);
	return h + n;
}

/* An ICMP error of type from src to dst quoting the packet q. */
static size_t build_error(uint8_t *buf, const char *src, const char *dst, uint8_t type, const struct spec *q)
{
	struct spec outer = { src, dst, strchr(src, ':') ? ICMP6 : ICMP, 0, 0, type };
	uint8_t inner[128];
	size_t qn = build(inner, q), h;

	memset(buf, 0, 256);
	h = put_ip(buf, &outer, 8 + qn);
	buf[h] = type;
	memcpy(buf + h + 8, inner, qn);
	return h + 8 + qn;
}

static struct filter_prefix pfx(const char *text, uint8_t bits)
{
	struct filter_prefix p = { .family = strchr(text, ':') ? AF_INET6 : AF_INET, .bits = bits };

	assert_int_equal(inet_pton(p.family, text, p.addr), 1);
	return p;
}

enum op { IN, OUT, ERR_IN, SWAP, RAW_IN, END };

struct step {
	enum op op;
	uint64_t t; /* seconds */
	struct spec s;
	uint8_t want;
	const char *json;             /* SWAP: the new packetFilter ("null" allowed) */
	const char *err_src, *err_dst; /* ERR_IN: outer addresses; s is quoted */
	uint8_t err_type;
	const uint8_t *raw;           /* RAW_IN */
	size_t rawlen;
};

#define P_IN(t_, v_, ...) { .op = IN, .t = (t_), .s = { __VA_ARGS__ }, .want = (v_) }
#define P_OUT(t_, v_, ...) { .op = OUT, .t = (t_), .s = { __VA_ARGS__ }, .want = (v_) }
#define P_ERR(t_, v_, es, ed, ty, ...) \
	{ .op = ERR_IN, .t = (t_), .s = { __VA_ARGS__ }, .want = (v_), .err_src = (es), .err_dst = (ed), .err_type = (ty) }
#define P_SWAP(j) { .op = SWAP, .json = (j) }
#define P_END { .op = END }

#define ACC FILTER_ACCEPT
#define NORULE FILTER_DROP_NO_RULE
#define NOTRK FILTER_DROP_NOT_TRACKED
#define BAD FILTER_DROP_MALFORMED
#define FULL FILTER_DROP_TABLE_FULL

#define F_SSH                                                                                              \
	"[{\"srcIPs\":[\"" A4 "/32\",\"" A6 "/128\"],\"dstPorts\":[{\"ip\":\"" L4 "/32\",\"ports\":{\"first\":22,\"last\":22}}," \
	"{\"ip\":\"" L6 "/128\",\"ports\":{\"first\":22,\"last\":22}}]}]"
#define F_UDPRANGE                                                                                   \
	"[{\"srcIPs\":[\"100.64.0.0/24\"],\"dstPorts\":[{\"ip\":\"*\",\"ports\":{\"first\":8000,\"last\":8100}}]," \
	"\"ipProto\":[17]}]"
#define F_SRCRANGE \
	"[{\"srcIPs\":[\"100.64.0.3-100.64.0.5\"],\"dstPorts\":[{\"ip\":\"" L4 "\",\"ports\":{\"first\":80,\"last\":80}}]}]"
#define F_STAR "[{\"srcIPs\":[\"*\"],\"dstPorts\":[{\"ip\":\"*\",\"ports\":{\"first\":0,\"last\":65535}}]}]"
#define F_ICMPONLY \
	"[{\"srcIPs\":[\"" A4 "\"],\"dstPorts\":[{\"ip\":\"" L4 "\",\"ports\":{\"first\":1,\"last\":1}}],\"ipProto\":[1]}]"
#define F_GRE                                                                                                \
	"[{\"srcIPs\":[\"" A4 "\"],\"dstPorts\":[{\"ip\":\"" L4 "\",\"ports\":{\"first\":0,\"last\":65535}}],\"ipProto\":[47]}," \
	"{\"srcIPs\":[\"" B4 "\"],\"dstPorts\":[{\"ip\":\"" L4 "\",\"ports\":{\"first\":1,\"last\":2}}],\"ipProto\":[47]}]"
/* Overlapping prefixes of different rules: the /32 rule opens 443, the
 * /10 rule 80; a source in both gets both. */
#define F_OVERLAP                                                                                            \
	"[{\"srcIPs\":[\"100.64.0.0/10\"],\"dstPorts\":[{\"ip\":\"" L4 "\",\"ports\":{\"first\":80,\"last\":80}}]}," \
	"{\"srcIPs\":[\"" A4 "/32\"],\"dstPorts\":[{\"ip\":\"100.64.0.0/24\",\"ports\":{\"first\":443,\"last\":443}}]}]"

struct fcase {
	const char *name;
	const char *json; /* NULL: no packetFilter (allow-all) */
	size_t ct_max;
	struct step steps[24];
};

static const struct fcase cases[] = {
	{ "null filter allows all", NULL, 0, {
		P_IN(0, ACC, B4, L4, TCP, 5555, 80, SYN),
		P_IN(0, ACC, B4, L4, UDP, 5555, 53, 0),
		P_IN(0, ACC, B6, L6, ICMP6, 0, 9, 128),
		P_IN(0, ACC, B4, L4, 132, 1, 2, 0),
		P_END } },
	{ "json null is allow-all", "null", 0, {
		P_IN(0, ACC, B4, L4, TCP, 5555, 80, SYN),
		P_END } },
	{ "empty filter denies new inbound, replies pass", "[]", 0, {
		P_IN(0, NORULE, A4, L4, TCP, 5555, 22, SYN),
		P_IN(0, NOTRK, A4, L4, TCP, 5555, 22, ACK),
		P_IN(0, NORULE, A4, L4, UDP, 5555, 53, 0),
		P_IN(0, NORULE, A4, L4, ICMP, 0, 7, 8),
		P_IN(0, NOTRK, A4, L4, ICMP, 0, 7, 0),
		P_OUT(0, ACC, L4, A4, TCP, 40000, 443, SYN),
		P_IN(0, ACC, A4, L4, TCP, 443, 40000, SYNACK),
		P_OUT(0, ACC, L4, A4, TCP, 40000, 443, ACK),
		P_IN(0, ACC, A4, L4, TCP, 443, 40000, ACK),
		P_IN(0, NOTRK, A4, L4, TCP, 444, 40000, ACK),
		P_IN(0, NOTRK, B4, L4, TCP, 443, 40000, ACK),
		P_END } },
	{ "tcp ssh rule both families", F_SSH, 0, {
		P_IN(0, ACC, A4, L4, TCP, 5555, 22, SYN),
		P_IN(0, ACC, A4, L4, TCP, 5555, 22, ACK),
		P_IN(0, NORULE, B4, L4, TCP, 5555, 22, SYN),
		P_IN(0, NOTRK, B4, L4, TCP, 5555, 22, ACK),
		P_IN(0, NORULE, A4, L4, TCP, 5555, 23, SYN),
		P_IN(0, NORULE, A4, B4, TCP, 5555, 22, SYN),
		P_IN(0, ACC, A6, L6, TCP, 5555, 22, SYN),
		P_IN(0, NORULE, B6, L6, TCP, 5555, 22, SYN),
		P_IN(0, NORULE, A6, L6, TCP, 5555, 2222, SYN),
		P_END } },
	{ "default protocols: udp and icmp by address", F_SSH, 0, {
		P_IN(0, ACC, A4, L4, UDP, 5555, 22, 0),
		P_IN(0, NORULE, A4, L4, UDP, 5555, 23, 0),
		P_IN(0, ACC, A4, L4, ICMP, 0, 1, 8),
		P_IN(0, ACC, A6, L6, ICMP6, 0, 1, 128),
		P_IN(0, NORULE, B4, L4, ICMP, 0, 1, 8),
		P_IN(0, NOTRK, B4, L4, ICMP, 0, 1, 0),
		P_IN(0, NORULE, A4, L4, 132, 5555, 22, 0),
		P_END } },
	{ "udp replies via conntrack", "[]", 0, {
		P_OUT(0, ACC, L4, B4, UDP, 5000, 53, 0),
		P_IN(0, ACC, B4, L4, UDP, 53, 5000, 0),
		P_IN(0, NORULE, B4, L4, UDP, 54, 5000, 0),
		P_IN(0, NORULE, A4, L4, UDP, 53, 5000, 0),
		P_OUT(0, ACC, L6, B6, UDP, 5000, 53, 0),
		P_IN(0, ACC, B6, L6, UDP, 53, 5000, 0),
		P_END } },
	{ "icmp echo replies via conntrack", "[]", 0, {
		P_OUT(0, ACC, L4, B4, ICMP, 0, 7, 8),
		P_IN(0, ACC, B4, L4, ICMP, 0, 7, 0),
		P_IN(0, NOTRK, B4, L4, ICMP, 0, 8, 0),
		P_IN(0, NORULE, B4, L4, ICMP, 0, 7, 8),
		P_OUT(0, ACC, L6, B6, ICMP6, 0, 7, 128),
		P_IN(0, ACC, B6, L6, ICMP6, 0, 7, 129),
		P_IN(0, NOTRK, A6, L6, ICMP6, 0, 7, 129),
		P_END } },
	{ "icmp errors about tracked flows", "[]", 0, {
		P_OUT(0, ACC, L4, B4, UDP, 5000, 53, 0),
		P_ERR(0, ACC, R4, L4, 3, L4, B4, UDP, 5000, 53, 0),
		P_ERR(0, ACC, R4, L4, 11, L4, B4, UDP, 5000, 53, 0),
		P_ERR(0, NOTRK, R4, L4, 3, L4, B4, UDP, 5001, 53, 0),
		P_ERR(0, NOTRK, R4, L4, 3, A4, B4, UDP, 5000, 53, 0),
		P_ERR(0, NOTRK, R4, L4, 3, L4, B4, TCP, 5000, 53, SYN),
		P_OUT(0, ACC, L6, B6, TCP, 40000, 443, SYN),
		P_ERR(0, ACC, B6, L6, 2, L6, B6, TCP, 40000, 443, SYN),
		P_ERR(0, ACC, "fd00::1", L6, 3, L6, B6, TCP, 40000, 443, SYN),
		P_ERR(0, NOTRK, B6, L6, 2, L6, B6, TCP, 40001, 443, SYN),
		P_OUT(0, ACC, L4, B4, ICMP, 0, 9, 8),
		P_ERR(0, ACC, R4, L4, 11, L4, B4, ICMP, 0, 9, 8),
		P_ERR(0, NOTRK, R4, L4, 11, L4, B4, ICMP, 0, 10, 8),
		P_END } },
	{ "icmp errors about flows the peer opened", F_SSH, 0, {
		P_IN(0, ACC, A4, L4, TCP, 5555, 22, SYN),
		/* our SYN-ACK to A bounced */
		P_ERR(0, ACC, R4, L4, 3, L4, A4, TCP, 22, 5555, SYNACK),
		P_END } },
	{ "udp port range and protocol list", F_UDPRANGE, 0, {
		P_IN(0, ACC, A4, L4, UDP, 1, 8000, 0),
		P_IN(0, ACC, A4, L4, UDP, 1, 8100, 0),
		P_IN(0, ACC, A4, B4, UDP, 1, 8050, 0),
		P_IN(0, NORULE, A4, L4, UDP, 1, 8101, 0),
		P_IN(0, NORULE, A4, L4, UDP, 1, 7999, 0),
		P_IN(0, NORULE, A4, L4, TCP, 1, 8050, SYN),
		P_IN(0, NORULE, A4, L4, ICMP, 0, 1, 8),
		P_IN(0, NORULE, "100.64.1.1", L4, UDP, 1, 8050, 0),
		P_IN(0, NORULE, A6, L6, UDP, 1, 8050, 0),
		P_END } },
	{ "source address range", F_SRCRANGE, 0, {
		P_IN(0, ACC, "100.64.0.3", L4, TCP, 1, 80, SYN),
		P_IN(0, ACC, "100.64.0.5", L4, TCP, 1, 80, SYN),
		P_IN(0, NORULE, "100.64.0.6", L4, TCP, 1, 80, SYN),
		P_IN(0, NORULE, "100.64.0.2", L4, TCP, 1, 80, SYN),
		P_END } },
	{ "star sources and destinations", F_STAR, 0, {
		P_IN(0, ACC, "1.2.3.4", "5.6.7.8", TCP, 1, 65535, SYN),
		P_IN(0, ACC, "2001:db8::1", L6, UDP, 1, 0, 0),
		P_IN(0, ACC, "0.0.0.0", "255.255.255.255", ICMP, 0, 1, 8),
		P_IN(0, NORULE, A4, L4, GRE, 0, 0, 0),
		P_END } },
	{ "icmp-only rule ignores ports", F_ICMPONLY, 0, {
		P_IN(0, ACC, A4, L4, ICMP, 0, 3, 8),
		P_IN(0, ACC, A4, L4, ICMP, 0, 3, 13),
		P_IN(0, NORULE, A4, L4, TCP, 1, 1, SYN),
		P_IN(0, NORULE, B4, L4, ICMP, 0, 3, 8),
		P_END } },
	{ "portless protocols need all ports", F_GRE, 0, {
		P_IN(0, ACC, A4, L4, GRE, 0, 0, 0),
		P_IN(0, NORULE, B4, L4, GRE, 0, 0, 0),
		P_IN(0, NORULE, A4, L4, UDP, 1, 2, 0),
		P_END } },
	{ "overlapping prefixes of two rules", F_OVERLAP, 0, {
		P_IN(0, ACC, A4, L4, TCP, 1, 80, SYN),
		P_IN(0, ACC, A4, L4, TCP, 1, 443, SYN),
		P_IN(0, ACC, B4, L4, TCP, 1, 80, SYN),
		P_IN(0, NORULE, B4, L4, TCP, 1, 443, SYN),
		P_IN(0, NORULE, A4, "100.64.1.7", TCP, 1, 443, SYN),
		P_END } },
	{ "swap keeps flows the local device opened", F_STAR, 0, {
		P_OUT(0, ACC, L4, B4, TCP, 40000, 443, SYN),
		P_IN(0, ACC, B4, L4, TCP, 443, 40000, SYNACK),
		P_SWAP("[]"),
		P_IN(0, ACC, B4, L4, TCP, 443, 40000, ACK),
		P_SWAP("null"),
		P_SWAP(F_SSH),
		P_IN(0, ACC, B4, L4, TCP, 443, 40000, ACK),
		P_END } },
	{ "swap to a policy keeps flows opened under allow-all", NULL, 0, {
		P_OUT(0, ACC, L4, B4, UDP, 5000, 53, 0),
		P_SWAP("[]"),
		P_IN(0, ACC, B4, L4, UDP, 53, 5000, 0),
		P_END } },
	{ "swap keeps peer-opened flows still allowed, cuts the rest", F_SSH, 0, {
		P_IN(0, ACC, A4, L4, TCP, 5555, 22, SYN),
		P_OUT(0, ACC, L4, A4, TCP, 22, 5555, SYNACK),
		P_IN(0, ACC, A4, L4, TCP, 5555, 22, ACK),
		P_SWAP(F_SSH),
		P_IN(0, ACC, A4, L4, TCP, 5555, 22, ACK),
		P_SWAP(F_ICMPONLY),
		P_IN(0, NORULE, A4, L4, TCP, 5555, 22, ACK),
		/* our replies do not make it ours again */
		P_OUT(0, ACC, L4, A4, TCP, 22, 5555, ACK),
		P_IN(0, NORULE, A4, L4, TCP, 5555, 22, ACK),
		P_SWAP(F_SSH),
		P_IN(0, ACC, A4, L4, TCP, 5555, 22, ACK),
		P_END } },
	{ "peer-opened flow under allow-all is judged by the first policy", NULL, 0, {
		P_IN(0, ACC, B4, L4, UDP, 53, 5000, 0),
		P_OUT(0, ACC, L4, B4, UDP, 5000, 53, 0),
		P_SWAP("[]"),
		P_IN(0, NORULE, B4, L4, UDP, 53, 5000, 0),
		P_SWAP("null"),
		P_IN(0, ACC, B4, L4, UDP, 53, 5000, 0),
		P_END } },
	{ "udp timeouts", "[]", 0, {
		P_OUT(0, ACC, L4, B4, UDP, 5000, 53, 0),
		P_IN(31, NORULE, B4, L4, UDP, 53, 5000, 0),
		P_OUT(100, ACC, L4, B4, UDP, 5000, 53, 0),
		P_IN(101, ACC, B4, L4, UDP, 53, 5000, 0),
		P_IN(250, ACC, B4, L4, UDP, 53, 5000, 0),
		P_IN(431, NORULE, B4, L4, UDP, 53, 5000, 0),
		P_END } },
	{ "tcp timeouts by state", "[]", 0, {
		P_OUT(0, ACC, L4, B4, TCP, 40000, 443, SYN),
		P_IN(1, ACC, B4, L4, TCP, 443, 40000, SYNACK),
		P_IN(3601, ACC, B4, L4, TCP, 443, 40000, ACK),
		P_IN(3602, ACC, B4, L4, TCP, 443, 40000, RST | ACK),
		P_IN(3611, ACC, B4, L4, TCP, 443, 40000, ACK),
		P_IN(3622, NOTRK, B4, L4, TCP, 443, 40000, ACK),
		P_OUT(4000, ACC, L4, B4, TCP, 40001, 443, SYN),
		P_IN(4121, NOTRK, B4, L4, TCP, 443, 40001, SYNACK),
		P_END } },
	{ "tcp: a SYN on a closed flow starts over", F_SSH, 0, {
		P_OUT(0, ACC, L4, B4, TCP, 22, 5555, SYN),
		P_IN(0, ACC, B4, L4, TCP, 5555, 22, SYNACK),
		P_IN(0, ACC, B4, L4, TCP, 5555, 22, RST),
		/* the same ports, now opened by B: the rules say no */
		P_IN(1, NORULE, B4, L4, TCP, 5555, 22, SYN),
		P_END } },
	{ "mid-stream pickup of a local flow", "[]", 0, {
		P_OUT(0, ACC, L4, B4, TCP, 40000, 443, ACK),
		P_IN(0, ACC, B4, L4, TCP, 443, 40000, ACK),
		P_END } },
	{ "table full: replied flows are kept, new ones refused", "[]", 8, {
		P_OUT(0, ACC, L4, B4, UDP, 1, 53, 0), P_IN(0, ACC, B4, L4, UDP, 53, 1, 0),
		P_OUT(0, ACC, L4, B4, UDP, 2, 53, 0), P_IN(0, ACC, B4, L4, UDP, 53, 2, 0),
		P_OUT(0, ACC, L4, B4, UDP, 3, 53, 0), P_IN(0, ACC, B4, L4, UDP, 53, 3, 0),
		P_OUT(0, ACC, L4, B4, UDP, 4, 53, 0), P_IN(0, ACC, B4, L4, UDP, 53, 4, 0),
		P_OUT(0, ACC, L4, B4, UDP, 5, 53, 0), P_IN(0, ACC, B4, L4, UDP, 53, 5, 0),
		P_OUT(0, ACC, L4, B4, UDP, 6, 53, 0), P_IN(0, ACC, B4, L4, UDP, 53, 6, 0),
		P_OUT(0, ACC, L4, B4, UDP, 7, 53, 0), P_IN(0, ACC, B4, L4, UDP, 53, 7, 0),
		P_OUT(0, ACC, L4, B4, UDP, 8, 53, 0), P_IN(0, ACC, B4, L4, UDP, 53, 8, 0),
		P_OUT(1, FULL, L4, B4, UDP, 9, 53, 0),
		P_IN(1, ACC, B4, L4, UDP, 53, 1, 0),
		/* after 180 s idle they expire and make room */
		P_OUT(200, ACC, L4, B4, UDP, 9, 53, 0),
		P_END } },
	{ "table full: unreplied flows are evicted oldest first", "[]", 8, {
		P_OUT(0, ACC, L4, B4, UDP, 1, 53, 0),
		P_OUT(1, ACC, L4, B4, UDP, 2, 53, 0),
		P_OUT(1, ACC, L4, B4, UDP, 3, 53, 0),
		P_OUT(1, ACC, L4, B4, UDP, 4, 53, 0),
		P_OUT(1, ACC, L4, B4, UDP, 5, 53, 0),
		P_OUT(1, ACC, L4, B4, UDP, 6, 53, 0),
		P_OUT(1, ACC, L4, B4, UDP, 7, 53, 0),
		P_OUT(1, ACC, L4, B4, UDP, 8, 53, 0),
		P_OUT(2, ACC, L4, B4, UDP, 9, 53, 0),
		P_IN(2, NORULE, B4, L4, UDP, 53, 1, 0),
		P_IN(2, ACC, B4, L4, UDP, 53, 2, 0),
		P_IN(2, ACC, B4, L4, UDP, 53, 9, 0),
		P_END } },
	{ "fragments after the first follow the first's verdict", "[]", 0, {
		{ .op = RAW_IN, .want = ACC, .raw = (const uint8_t[]){ 0x45, 0, 0, 28, 0, 0, 0x00, 0x10, 64, 17, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8 }, .rawlen = 28 },
		/* offset 8 bytes into TCP: RFC 1858's flag rewrite */
		{ .op = RAW_IN, .want = BAD, .raw = (const uint8_t[]){ 0x45, 0, 0, 28, 0, 0, 0x00, 0x01, 64, 6, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8 }, .rawlen = 28 },
		/* a first fragment too short for the UDP header */
		{ .op = RAW_IN, .want = BAD, .raw = (const uint8_t[]){ 0x45, 0, 0, 24, 0, 0, 0x20, 0x00, 64, 17, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 1, 2, 3, 4 }, .rawlen = 24 },
		/* IPv6 fragment header, offset 8 */
		{ .op = RAW_IN, .want = ACC, .raw = (const uint8_t[]){ 0x60, 0, 0, 0, 0, 16, 44, 64,
			0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4,
			0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
			17, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8 }, .rawlen = 56 },
		/* IPv6 first fragment: judged by its UDP header */
		{ .op = RAW_IN, .want = NORULE, .raw = (const uint8_t[]){ 0x60, 0, 0, 0, 0, 16, 44, 64,
			0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4,
			0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
			17, 0, 0, 1, 0, 0, 0, 1, 0, 53, 0, 53, 0, 8, 0, 0 }, .rawlen = 56 },
		P_END } },
	{ "malformed packets", F_STAR, 0, {
		{ .op = RAW_IN, .want = BAD, .raw = (const uint8_t[]){ 0x45, 0, 0, 30, 0, 0, 0, 0, 64, 6, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0 }, .rawlen = 30 },
		{ .op = RAW_IN, .want = BAD, .raw = (const uint8_t[]){ 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 17, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 0, 1, 0, 2, 0, 8, 0, 0 }, .rawlen = 28 },
		{ .op = RAW_IN, .want = BAD, .raw = (const uint8_t[]){ 0x44, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 0, 1, 0, 2, 0, 8, 0, 0 }, .rawlen = 28 },
		{ .op = RAW_IN, .want = BAD, .raw = (const uint8_t[]){ 0x55, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 0, 1, 0, 2, 0, 8, 0, 0 }, .rawlen = 28 },
		{ .op = RAW_IN, .want = BAD, .raw = (const uint8_t[]){ 0x45, 0, 0 }, .rawlen = 3 },
		/* TCP data offset past the packet */
		{ .op = RAW_IN, .want = BAD, .raw = (const uint8_t[]){ 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 2, 0, 0, 0, 0, 0, 0 },
		  .rawlen = 40 },
		/* the same with a sane data offset is fine */
		{ .op = RAW_IN, .want = ACC, .raw = (const uint8_t[]){ 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0,
			100, 64, 0, 4, 100, 64, 0, 7, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 2, 0, 0, 0, 0, 0, 0 },
		  .rawlen = 40 },
		P_END } },
};

static uint8_t run_one(struct filter *f, const struct step *st, bool in, const uint8_t *pkt, size_t len)
{
	uint8_t buf[512];
	struct pktbuf pb = { .data = buf, .len = len, .cap = sizeof(buf) };
	uint8_t v = 0xee;

	memcpy(buf, pkt, len);
	if (in)
		filter_check_in(f, &pb, 1, st->t * 1000, &v);
	else
		filter_check_out(f, &pb, 1, st->t * 1000, &v);
	return v;
}

static void swap_to(struct filter *f, const char *text)
{
	struct json *j = text ? json_parse(text, strlen(text), NULL) : NULL;
	char err[256];

	assert_true(!text || j);
	if (filter_set(f, j, err, sizeof(err)))
		fail_msg("filter_set: %s", err);
	json_free(j);
}

static void test_cases(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct fcase *fc = &cases[c];
		struct filter *f;

		assert_int_equal(filter_new(&f, fc->ct_max), 0);
		if (fc->json)
			swap_to(f, fc->json);
		for (size_t i = 0; fc->steps[i].op != END; i++) {
			const struct step *st = &fc->steps[i];
			uint8_t pkt[256], v;
			size_t n;

			switch (st->op) {
			case SWAP:
				swap_to(f, strcmp(st->json, "null") ? st->json : NULL);
				continue;
			case RAW_IN:
				v = run_one(f, st, true, st->raw, st->rawlen);
				break;
			case ERR_IN:
				n = build_error(pkt, st->err_src, st->err_dst, st->err_type, &st->s);
				v = run_one(f, st, true, pkt, n);
				break;
			default:
				n = build(pkt, &st->s);
				v = run_one(f, st, st->op == IN, pkt, n);
				break;
			}
			if (v != st->want)
				fail_msg("case \"%s\" step %zu: got %s, want %s", fc->name, i,
					 filter_verdict_name(v), filter_verdict_name(st->want));
		}
		filter_free(f);
	}
}

static const struct {
	const char *json;
	const char *err; /* substring of the message */
} bad_filters[] = {
	{ "{}", "packetFilter: want an array or null" },
	{ "[1]", "packetFilter[0]: want an object" },
	{ "[{\"srcIPs\":\"*\"}]", "packetFilter[0].srcIPs: want an array" },
	{ "[{},{\"srcIPs\":[\"1.2.3.4/33\"]}]", "packetFilter[1].srcIPs[0]" },
	{ "[{\"srcIPs\":[\"1.2.3.4/\"]}]", "srcIPs[0]" },
	{ "[{\"srcIPs\":[\"1.2.3.4/-1\"]}]", "srcIPs[0]" },
	{ "[{\"srcIPs\":[\"::/129\"]}]", "srcIPs[0]" },
	{ "[{\"srcIPs\":[\"1.2.3.9-1.2.3.4\"]}]", "srcIPs[0]" },
	{ "[{\"srcIPs\":[\"1.2.3.4-::1\"]}]", "srcIPs[0]" },
	{ "[{\"srcIPs\":[\"host\"]}]", "srcIPs[0]" },
	{ "[{\"srcIPs\":[7]}]", "srcIPs[0]" },
	{ "[{\"dstPorts\":{}}]", "dstPorts: want an array" },
	{ "[{\"dstPorts\":[{\"ip\":\"*\"}]}]", "dstPorts[0].ports" },
	{ "[{\"dstPorts\":[{\"ports\":{\"first\":1,\"last\":1}}]}]", "dstPorts[0].ip" },
	{ "[{\"dstPorts\":[{\"ip\":\"*\",\"ports\":{\"first\":2,\"last\":1}}]}]", "first 2 > last 1" },
	{ "[{\"dstPorts\":[{\"ip\":\"*\",\"ports\":{\"first\":0,\"last\":65536}}]}]", "ports.last" },
	{ "[{\"dstPorts\":[{\"ip\":\"*\",\"ports\":{\"first\":\"22\",\"last\":22}}]}]", "ports.first" },
	{ "[{\"ipProto\":[256]}]", "ipProto[0]" },
	{ "[{\"ipProto\":[\"tcp\"]}]", "ipProto[0]" },
	{ "[{\"ipProto\":6}]", "ipProto: want an array" },
};

static void test_compile_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_filters) / sizeof(bad_filters[0]); i++) {
		struct json *j = json_parse(bad_filters[i].json, strlen(bad_filters[i].json), NULL);
		char err[256];
		struct filter_rules *r;

		assert_non_null(j);
		r = filter_rules_compile(j, err, sizeof(err));
		if (r || !strstr(err, bad_filters[i].err))
			fail_msg("%s: got %s \"%s\", want error with \"%s\"", bad_filters[i].json, r ? "rules" : "error",
				 err, bad_filters[i].err);
		json_free(j);
	}
}

/* A refused filter leaves the one in force; counters count by reason. */
static void test_set_keeps_old_and_counters(void **state)
{
	const char *bad_text = "[{\"srcIPs\":[\"x\"]}]";
	struct json *bad = json_parse(bad_text, strlen(bad_text), NULL);
	struct filter_counts c;
	struct filter *f;
	uint8_t pkt[128], v[3];
	struct pktbuf pb[3];
	char err[128];
	size_t n;

	(void)state;
	assert_int_equal(filter_new(&f, 0), 0);
	swap_to(f, F_SSH);
	assert_int_equal(filter_set(f, bad, err, sizeof(err)), -EINVAL);
	json_free(bad);
	n = build(pkt, &(struct spec){ B4, L4, TCP, 1, 22, SYN });
	for (int i = 0; i < 3; i++)
		pb[i] = (struct pktbuf){ .data = pkt, .len = n, .cap = sizeof(pkt) };
	pb[2].len = 10;
	filter_check_in(f, pb, 3, 0, v);
	assert_int_equal(v[0], NORULE);
	assert_int_equal(v[1], NORULE);
	assert_int_equal(v[2], BAD);
	filter_counters(f, &c);
	assert_int_equal(c.dropped[NORULE], 2);
	assert_int_equal(c.dropped[BAD], 1);
	assert_int_equal(c.dropped[NOTRK], 0);
	assert_int_equal(c.accepted_in, 0);
	assert_int_equal(c.swaps, 1);
	assert_string_equal(filter_verdict_name(FILTER_DROP_TABLE_FULL), "table_full");
	filter_free(f);
}

/* A batch of one flow shares the first packet's verdict, but a FIN in the
 * middle still moves the flow's state. */
static void test_batch_runs(void **state)
{
	uint8_t pkts[4][128], v[4];
	struct pktbuf pb[4];
	struct filter *f;
	struct filter_counts c;
	const struct spec specs[4] = {
		{ B4, L4, TCP, 443, 40000, ACK },
		{ B4, L4, TCP, 443, 40000, ACK },
		{ B4, L4, TCP, 443, 40000, FIN | ACK },
		{ B4, L4, TCP, 443, 40001, ACK },
	};

	(void)state;
	assert_int_equal(filter_new(&f, 0), 0);
	swap_to(f, "[]");
	for (int i = 0; i < 4; i++) {
		size_t n = build(pkts[i], &specs[i]);

		pb[i] = (struct pktbuf){ .data = pkts[i], .len = n, .cap = 128 };
	}
	{
		uint8_t out[128], vo;
		size_t n = build(out, &(struct spec){ L4, B4, TCP, 40000, 443, SYN });
		struct pktbuf o = { .data = out, .len = n, .cap = 128 };

		filter_check_out(f, &o, 1, 0, &vo);
		assert_int_equal(vo, ACC);
	}
	filter_check_in(f, pb, 4, 0, v);
	assert_int_equal(v[0], ACC);
	assert_int_equal(v[1], ACC);
	assert_int_equal(v[2], ACC);
	assert_int_equal(v[3], NOTRK);
	filter_counters(f, &c);
	assert_int_equal(c.accepted_in, 3);
	assert_int_equal(c.accepted_out, 1);
	assert_int_equal(c.ct.entries, 1);
	/* FIN one way: closing, 120 s */
	filter_check_in(f, pb, 1, 119 * 1000, v);
	assert_int_equal(v[0], ACC);
	filter_check_in(f, pb, 1, 240 * 1000, v);
	assert_int_equal(v[0], NOTRK);
	assert_int_equal(filter_expire(f, 240 * 1000), 0); /* already reaped by the lookup */
	filter_counters(f, &c);
	assert_int_equal(c.ct.entries, 0);
	assert_int_equal(c.ct.expired, 1);
	filter_free(f);
}

static void test_expire_sweep(void **state)
{
	struct filter *f;
	struct filter_counts c;
	uint8_t pkt[128], v;

	(void)state;
	assert_int_equal(filter_new(&f, 64), 0);
	for (uint16_t p = 1; p <= 20; p++) {
		size_t n = build(pkt, &(struct spec){ L4, B4, UDP, p, 53, 0 });
		struct pktbuf pb = { .data = pkt, .len = n, .cap = 128 };

		filter_check_out(f, &pb, 1, 0, &v);
		assert_int_equal(v, ACC);
	}
	filter_counters(f, &c);
	assert_int_equal(c.ct.entries, 20);
	assert_int_equal(filter_expire(f, 29 * 1000), 0);
	assert_int_equal(filter_expire(f, 31 * 1000), 20);
	filter_counters(f, &c);
	assert_int_equal(c.ct.entries, 0);
	assert_int_equal(c.ct.inserted, 20);
	filter_free(f);
}

/* Checks on two threads while the main thread swaps rules and local
 * addresses 300 times: the established flows never drop (ASan watches the
 * freed rules). */
struct racer {
	struct filter *f;
	atomic_bool *stop;
	unsigned long checked, dropped;
	bool outbound_flow;
};

static void *race_main(void *arg)
{
	struct racer *r = arg;
	uint8_t pkts[32][128], v[32];
	struct pktbuf pb[32];

	for (int i = 0; i < 32; i++) {
		struct spec s = r->outbound_flow ? (struct spec){ B4, L4, TCP, 443, 40000, ACK }
						 : (struct spec){ A4, L4, TCP, 5555, 22, ACK };
		size_t n = build(pkts[i], &s);

		pb[i] = (struct pktbuf){ .data = pkts[i], .len = n, .cap = 128 };
	}
	while (!atomic_load(r->stop)) {
		filter_check_in(r->f, pb, 32, 1000, v);
		for (int i = 0; i < 32; i++)
			r->dropped += v[i] != ACC;
		r->checked += 32;
	}
	return NULL;
}

static void test_swap_race(void **state)
{
	struct filter *f;
	atomic_bool stop = false;
	struct racer r[2];
	pthread_t t[2];
	uint8_t pkt[128], v;
	size_t n;
	struct pktbuf pb;

	(void)state;
	assert_int_equal(filter_new(&f, 0), 0);
	swap_to(f, F_SSH);
	n = build(pkt, &(struct spec){ L4, B4, TCP, 40000, 443, SYN });
	pb = (struct pktbuf){ .data = pkt, .len = n, .cap = 128 };
	filter_check_out(f, &pb, 1, 0, &v);
	n = build(pkt, &(struct spec){ A4, L4, TCP, 5555, 22, SYN });
	pb = (struct pktbuf){ .data = pkt, .len = n, .cap = 128 };
	filter_check_in(f, &pb, 1, 0, &v);
	assert_int_equal(v, ACC);
	for (int i = 0; i < 2; i++) {
		r[i] = (struct racer){ .f = f, .stop = &stop, .outbound_flow = i == 0 };
		assert_int_equal(pthread_create(&t[i], NULL, race_main, &r[i]), 0);
	}
	for (int i = 0; i < 300; i++) {
		struct filter_prefix self[2] = { pfx(L4, 32), pfx(L6, 128) };

		swap_to(f, i % 2 ? F_SSH : F_STAR);
		assert_int_equal(filter_set_local(f, i % 3 ? self : NULL, 2), 0);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_true(r[i].checked > 0);
		assert_int_equal(r[i].dropped, 0);
	}
	filter_free(f);
}

/* The race above swaps between rules that both allow the peer's flow;
 * here the new rules do not, and its next packet is dropped. */
static void test_swap_cuts(void **state)
{
	struct filter *f;
	uint8_t pkt[128], v;
	size_t n;
	struct pktbuf pb;

	(void)state;
	assert_int_equal(filter_new(&f, 0), 0);
	swap_to(f, F_SSH);
	n = build(pkt, &(struct spec){ A4, L4, TCP, 5555, 22, SYN });
	pb = (struct pktbuf){ .data = pkt, .len = n, .cap = 128 };
	filter_check_in(f, &pb, 1, 0, &v);
	assert_int_equal(v, ACC);
	swap_to(f, "[{\"srcIPs\":[\"" A4 "\"],\"dstPorts\":[{\"ip\":\"" L4 "\",\"ports\":{\"first\":80,\"last\":80}}]}]");
	n = build(pkt, &(struct spec){ A4, L4, TCP, 5555, 22, ACK });
	pb.len = n;
	filter_check_in(f, &pb, 1, 0, &v);
	assert_int_equal(v, NORULE);
	filter_free(f);
}

/* A large compiled filter: 1,000 rules, each a /32 source and two ports. */
static void test_large(void **state)
{
	struct buf b = BUF_INIT(1 << 20);
	struct json *j;
	struct filter_rules *r;
	struct filter *f;
	char err[128];
	uint8_t pkt[128], v;
	size_t n;
	struct pktbuf pb;

	(void)state;
	assert_int_equal(buf_addf(&b, "["), 0);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf_addf(&b, "%s{\"srcIPs\":[\"100.65.%d.%d\"],\"dstPorts\":[{\"ip\":\"" L4
					 "\",\"ports\":{\"first\":%d,\"last\":%d}},"
					 "{\"ip\":\"" L6 "\",\"ports\":{\"first\":%d,\"last\":%d}}]}",
					 i ? "," : "", i / 250, i % 250, 1000 + i, 1000 + i, 1000 + i, 1000 + i),
				 0);
	assert_int_equal(buf_addf(&b, "]"), 0);
	j = json_parse((const char *)b.data, b.len, NULL);
	assert_non_null(j);
	r = filter_rules_compile(j, err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(filter_rules_count(r), 1000);
	assert_true(filter_rules_bytes(r) > 0);
	assert_int_equal(filter_new(&f, 0), 0);
	filter_swap(f, r);
	for (int i = 0; i < 1000; i += 37) {
		char src[32];

		snprintf(src, sizeof(src), "100.65.%d.%d", i / 250, i % 250);
		n = build(pkt, &(struct spec){ src, L4, TCP, 1, (uint16_t)(1000 + i), SYN });
		pb = (struct pktbuf){ .data = pkt, .len = n, .cap = 128 };
		filter_check_in(f, &pb, 1, 0, &v);
		assert_int_equal(v, ACC);
		n = build(pkt, &(struct spec){ src, L4, TCP, 1, (uint16_t)(1001 + i), SYN });
		filter_check_in(f, &pb, 1, 0, &v);
		assert_int_equal(v, NORULE);
	}
	json_free(j);
	buf_free(&b);
	filter_free(f);
}

/* Random filters over a small address pool, so prefixes, ranges and
 * ports overlap, against the naive reading in filter_ref.h. */
static uint32_t rnd_state = 12345;

static uint32_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 17;
	rnd_state ^= rnd_state << 5;
	return rnd_state;
}

static void rnd_addr(int fam, uint8_t *a)
{
	memset(a, 0, 16);
	if (fam == AF_INET) {
		a[0] = 100, a[1] = 64, a[2] = (uint8_t)(rnd() % 3), a[3] = (uint8_t)(rnd() % 8 * 32 + rnd() % 4);
	} else {
		a[0] = 0xfd, a[1] = 0x7a, a[14] = (uint8_t)(rnd() % 3), a[15] = (uint8_t)(rnd() % 8 * 32 + rnd() % 4);
	}
}

static void rnd_ipset(struct buf *b)
{
	int fam = rnd() % 2 ? AF_INET : AF_INET6;
	uint8_t a[16], z[16];
	char s1[64], s2[64];

	if (rnd() % 10 == 0) {
		assert_int_equal(buf_addf(b, "\"*\""), 0);
		return;
	}
	rnd_addr(fam, a);
	inet_ntop(fam, a, s1, sizeof(s1));
	switch (rnd() % 3) {
	case 0:
		assert_int_equal(buf_addf(b, "\"%s\"", s1), 0);
		return;
	case 1:
		assert_int_equal(buf_addf(b, "\"%s/%u\"", s1, fam == AF_INET ? 20 + rnd() % 13 : 100 + rnd() % 29), 0);
		return;
	default:
		memcpy(z, a, 16);
		z[fam == AF_INET ? 3 : 15] = (uint8_t)(a[fam == AF_INET ? 3 : 15] + rnd() % 80);
		if (z[fam == AF_INET ? 3 : 15] < a[fam == AF_INET ? 3 : 15])
			z[fam == AF_INET ? 3 : 15] = 255;
		inet_ntop(fam, z, s2, sizeof(s2));
		assert_int_equal(buf_addf(b, "\"%s-%s\"", s1, s2), 0);
		return;
	}
}

static void rnd_filter(struct buf *b)
{
	static const int protos[] = { 6, 17, 1, 58, 132, 47 };
	int nrules = (int)(rnd() % 12);

	assert_int_equal(buf_addf(b, "["), 0);
	for (int i = 0; i < nrules; i++) {
		int ns = (int)(rnd() % 4), nd = (int)(rnd() % 4), np = (int)(rnd() % 4);

		assert_int_equal(buf_addf(b, "%s{\"srcIPs\":[", i ? "," : ""), 0);
		for (int k = 0; k < ns; k++) {
			assert_int_equal(buf_addf(b, "%s", k ? "," : ""), 0);
			rnd_ipset(b);
		}
		assert_int_equal(buf_addf(b, "],\"dstPorts\":["), 0);
		for (int k = 0; k < nd; k++) {
			unsigned first = rnd() % 4 == 0 ? 0 : rnd() % 100, last = rnd() % 4 == 0 ? 65535 : first + rnd() % 20;

			assert_int_equal(buf_addf(b, "%s{\"ip\":", k ? "," : ""), 0);
			rnd_ipset(b);
			assert_int_equal(buf_addf(b, ",\"ports\":{\"first\":%u,\"last\":%u}}", first, last), 0);
		}
		assert_int_equal(buf_addf(b, "]"), 0);
		if (np) {
			assert_int_equal(buf_addf(b, ",\"ipProto\":["), 0);
			for (int k = 0; k < np; k++)
				assert_int_equal(buf_addf(b, "%s%d", k ? "," : "", protos[rnd() % 6]), 0);
			assert_int_equal(buf_addf(b, "]"), 0);
		}
		assert_int_equal(buf_addf(b, "}"), 0);
	}
	assert_int_equal(buf_addf(b, "]"), 0);
}

static void test_against_reference(void **state)
{
	static const uint8_t protos[] = { 6, 17, 1, 58, 132, 47, 50 };
	struct buf b = BUF_INIT(1 << 20);
	unsigned long allowed = 0, total = 0;

	(void)state;
	for (int f = 0; f < 300; f++) {
		struct json *j;
		struct filter_rules *r;
		char err[256];

		buf_reset(&b);
		rnd_filter(&b);
		j = json_parse((const char *)b.data, b.len, NULL);
		assert_non_null(j);
		r = filter_rules_compile(j, err, sizeof(err));
		if (!r)
			fail_msg("%s: %s", (const char *)b.data, err);
		for (int q = 0; q < 500; q++) {
			int fam = rnd() % 2 ? AF_INET : AF_INET6;
			uint8_t src[16], dst[16], proto = protos[rnd() % sizeof(protos)];
			uint16_t port = (uint16_t)(rnd() % 8 == 0 ? 65535 - rnd() % 3 : rnd() % 130);
			bool got, want;

			rnd_addr(fam, src);
			rnd_addr(fam, dst);
			got = filter_rules_allow(r, fam, proto, src, dst, port);
			want = ref_allow(j, fam, proto, src, dst, port);
			if (got != want) {
				char s[64], d[64];

				inet_ntop(fam, src, s, sizeof(s));
				inet_ntop(fam, dst, d, sizeof(d));
				fail_msg("%s\n%s -> %s:%u proto %u: got %d want %d", (const char *)b.data, s, d, port, proto,
					 got, want);
			}
			allowed += got;
			total++;
		}
		filter_rules_free(r);
		json_free(j);
	}
	/* Both verdicts are common (about 6% allowed). */
	assert_true(allowed > total / 50 && allowed < total - total / 50);
	buf_free(&b);
}

/* Two threads open and answer flows of their own while the main thread
 * sweeps the table: every reply passes and every flow is counted. */
struct opener {
	struct filter *f;
	uint16_t base;
	unsigned long bad;
};

#define OPEN_FLOWS 2000

static void *open_main(void *arg)
{
	struct opener *o = arg;

	for (unsigned i = 0; i < OPEN_FLOWS; i++) {
		uint8_t out[128], in[128], v;
		struct pktbuf po, pi;
		uint16_t port = (uint16_t)(o->base + i);

		po = (struct pktbuf){ .data = out, .len = build(out, &(struct spec){ L4, B4, UDP, port, 53, 0 }), .cap = 128 };
		pi = (struct pktbuf){ .data = in, .len = build(in, &(struct spec){ B4, L4, UDP, 53, port, 0 }), .cap = 128 };
		filter_check_out(o->f, &po, 1, 1000, &v);
		o->bad += v != ACC;
		filter_check_in(o->f, &pi, 1, 1000, &v);
		o->bad += v != ACC;
	}
	return NULL;
}

static void test_table_threads(void **state)
{
	struct opener o[2];
	pthread_t t[2];
	struct filter *f;
	struct filter_counts c;

	(void)state;
	assert_int_equal(filter_new(&f, 65536), 0);
	swap_to(f, "[]");
	for (int i = 0; i < 2; i++) {
		o[i] = (struct opener){ .f = f, .base = (uint16_t)(10000 + i * OPEN_FLOWS) };
		assert_int_equal(pthread_create(&t[i], NULL, open_main, &o[i]), 0);
	}
	for (int i = 0; i < 50; i++)
		assert_int_equal(filter_expire(f, 1000), 0);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(o[i].bad, 0);
	}
	filter_counters(f, &c);
	assert_int_equal(c.ct.entries, 2 * OPEN_FLOWS);
	assert_int_equal(c.accepted_in, 2 * OPEN_FLOWS);
	assert_int_equal(filter_expire(f, 1000 + CT_TIMEOUT_REPLIED + 1), 2 * OPEN_FLOWS);
	filter_free(f);
}

static uint8_t in1(struct filter *f, struct spec s)
{
	uint8_t pkt[128], v = 0xee;
	struct pktbuf pb = { .data = pkt, .len = build(pkt, &s), .cap = sizeof(pkt) };

	filter_check_in(f, &pb, 1, 1000, &v);
	return v;
}

/* Inbound packets must be for the device's addresses or the routes it
 * serves, whatever the rules say. */
static void test_local(void **state)
{
	struct filter_prefix p[] = {
		pfx(L4, 32), pfx(L6, 128), pfx("10.1.0.0", 16),
		/* overlapping and adjacent: one range 10.3.0.0-10.3.0.255 */
		pfx("10.3.0.0", 25), pfx("10.3.0.128", 25), pfx("10.3.0.7", 24),
	};
	struct filter_prefix bad = pfx(L4, 33), all4 = pfx("0.0.0.0", 0);
	struct filter_counts c;
	struct filter *f;
	uint8_t pkt[128], v;
	struct pktbuf pb;

	(void)state;
	assert_int_equal(filter_new(&f, 0), 0);
	swap_to(f, F_STAR);
	assert_int_equal(filter_set_local(f, p, sizeof(p) / sizeof(p[0])), 0);
	assert_int_equal(in1(f, (struct spec){ A4, L4, TCP, 1, 22, SYN }), ACC);
	assert_int_equal(in1(f, (struct spec){ A4, B4, TCP, 1, 22, SYN }), FILTER_DROP_NOT_LOCAL);
	assert_int_equal(in1(f, (struct spec){ A4, "10.1.2.3", TCP, 1, 22, SYN }), ACC);
	assert_int_equal(in1(f, (struct spec){ A4, "10.2.0.1", TCP, 1, 22, SYN }), FILTER_DROP_NOT_LOCAL);
	assert_int_equal(in1(f, (struct spec){ A4, "10.3.0.0", UDP, 1, 22, 0 }), ACC);
	assert_int_equal(in1(f, (struct spec){ A4, "10.3.0.255", UDP, 1, 22, 0 }), ACC);
	assert_int_equal(in1(f, (struct spec){ A4, "10.3.1.0", UDP, 1, 22, 0 }), FILTER_DROP_NOT_LOCAL);
	assert_int_equal(in1(f, (struct spec){ A4, "10.2.255.255", UDP, 1, 22, 0 }), FILTER_DROP_NOT_LOCAL);
	assert_int_equal(in1(f, (struct spec){ A6, L6, TCP, 1, 22, SYN }), ACC);
	assert_int_equal(in1(f, (struct spec){ A6, B6, TCP, 1, 22, SYN }), FILTER_DROP_NOT_LOCAL);
	/* replies to the device's own flows are to its own address */
	pb = (struct pktbuf){ .data = pkt, .len = build(pkt, &(struct spec){ L4, B4, UDP, 5000, 53, 0 }), .cap = 128 };
	filter_check_out(f, &pb, 1, 1000, &v);
	assert_int_equal(v, ACC);
	assert_int_equal(in1(f, (struct spec){ B4, L4, UDP, 53, 5000, 0 }), ACC);
	/* a bad prefix changes nothing */
	assert_int_equal(filter_set_local(f, &bad, 1), -EINVAL);
	assert_int_equal(in1(f, (struct spec){ A4, B4, TCP, 1, 22, SYN }), FILTER_DROP_NOT_LOCAL);
	/* an exit node: every IPv4 address, no IPv6 */
	assert_int_equal(filter_set_local(f, &all4, 1), 0);
	assert_int_equal(in1(f, (struct spec){ A4, "255.255.255.255", TCP, 1, 22, SYN }), ACC);
	assert_int_equal(in1(f, (struct spec){ A4, "0.0.0.0", TCP, 1, 22, SYN }), ACC);
	assert_int_equal(in1(f, (struct spec){ A6, L6, TCP, 1, 22, SYN }), FILTER_DROP_NOT_LOCAL);
	/* nothing local */
	assert_int_equal(filter_set_local(f, p, 0), 0);
	assert_int_equal(in1(f, (struct spec){ A4, L4, TCP, 1, 22, SYN }), FILTER_DROP_NOT_LOCAL);
	/* no check */
	assert_int_equal(filter_set_local(f, NULL, 0), 0);
	assert_int_equal(in1(f, (struct spec){ A4, B4, TCP, 1, 22, SYN }), ACC);
	filter_counters(f, &c);
	assert_int_equal(c.dropped[FILTER_DROP_NOT_LOCAL], 8);
	assert_string_equal(filter_verdict_name(FILTER_DROP_NOT_LOCAL), "not_local");
	filter_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_compile_errors),
		cmocka_unit_test(test_set_keeps_old_and_counters),
		cmocka_unit_test(test_batch_runs),
		cmocka_unit_test(test_expire_sweep),
		cmocka_unit_test(test_swap_race),
		cmocka_unit_test(test_swap_cuts),
		cmocka_unit_test(test_large),
		cmocka_unit_test(test_against_reference),
		cmocka_unit_test(test_table_threads),
		cmocka_unit_test(test_local),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
