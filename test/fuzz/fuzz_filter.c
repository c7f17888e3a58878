/* The packet filter on a packetFilter and a run of packets.
 *
 * Input: a 2-byte little-endian length L, L bytes of packetFilter JSON,
 * then records [ctl][len][len bytes of packet]: ctl bit 0 says in (1) or
 * out, bit 1 swaps to the same filter before the packet, bits 2-7 advance
 * the clock by that many seconds. Inputs of odd length also set the
 * device's own addresses (filter_set_local). Invariants: verdicts are in range,
 * outbound packets are only ever dropped for a full table, allow-all
 * never says "no rule", and the compiled rules agree with the naive
 * reading of test/unit/filter_ref.h on every packet's addresses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/filter_ref.h"
#include "json.h"
#include "net/offload.h"
#include "policy/filter.h"

static void differential(const struct json *pf, const struct filter_rules *r, const uint8_t *p, size_t len)
{
	int fam;
	const uint8_t *src, *dst;
	uint8_t proto;
	size_t l4;
	uint16_t port = 0;

	if (len >= 20 && p[0] >> 4 == 4) {
		fam = AF_INET, src = p + 12, dst = p + 16, proto = p[9], l4 = (size_t)(p[0] & 15) * 4;
	} else if (len >= 40 && p[0] >> 4 == 6) {
		fam = AF_INET6, src = p + 8, dst = p + 24, proto = p[6], l4 = 40;
	} else {
		return;
	}
	if (l4 + 4 <= len)
		port = (uint16_t)(p[l4 + 2] << 8 | p[l4 + 3]);
	if (filter_rules_allow(r, fam, proto, src, dst, port) != ref_allow(pf, fam, proto, src, dst, port))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct filter *f = NULL;
	struct filter_rules *check = NULL;
	struct json *pf = NULL;
	char err[256];
	uint64_t now = 1000;
	size_t jl, off;
	bool allow_all;

	if (size < 2)
		return 0;
	jl = (size_t)data[0] | (size_t)data[1] << 8;
	if (jl > size - 2)
		jl = size - 2;
	if (filter_new(&f, 16))
		return 0;
	pf = json_parse((const char *)data + 2, jl, NULL);
	if (pf) {
		check = filter_rules_compile(pf, err, sizeof(err));
		if (!check || filter_set(f, pf, err, sizeof(err)) != 0) {
			/* Refused: the allow-all rules stay in force. */
			json_free(pf);
			pf = NULL;
			filter_rules_free(check);
			check = NULL;
		}
	}
	allow_all = !pf || json_is_null(pf);
	if (size & 1) {
		/* Odd inputs also check destinations: the seeds' local addresses. */
		struct filter_prefix self[2] = { { .family = AF_INET, .bits = 32, .addr = { 100, 64, 0, 7 } },
						 { .family = AF_INET6, .bits = 128 } };

		memcpy(self[1].addr, (const uint8_t[]){ 0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0 }, 6);
		self[1].addr[15] = 7;
		if (filter_set_local(f, self, 2))
			abort();
	}
	for (off = 2 + jl; off + 2 <= size;) {
		uint8_t ctl = data[off], len = data[off + 1], pkt[256], v = 0xee;
		struct pktbuf pb;

		off += 2;
		if (len > size - off)
			len = (uint8_t)(size - off);
		memcpy(pkt, data + off, len);
		off += len;
		now += (uint64_t)(ctl >> 2) * 1000;
		if ((ctl & 2) && pf)
			filter_set(f, pf, err, sizeof(err));
		pb = (struct pktbuf){ .data = pkt, .len = len, .cap = sizeof(pkt) };
		if (ctl & 1)
			filter_check_in(f, &pb, 1, now, &v);
		else
			filter_check_out(f, &pb, 1, now, &v);
		if (v >= FILTER_VERDICTS)
			abort();
		if (!(ctl & 1) && v != FILTER_ACCEPT && v != FILTER_DROP_TABLE_FULL)
			abort();
		if (allow_all && v == FILTER_DROP_NO_RULE)
			abort();
		if (check)
			differential(pf, check, pkt, len);
	}
	filter_expire(f, now + 1000000000);
	filter_rules_free(check);
	json_free(pf);
	filter_free(f);
	return 0;
}
