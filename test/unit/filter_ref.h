/* A naive reading of a packetFilter, rule by rule and string by string, to
 * check the compiled filter against (test_filter, fuzz_filter). Written
 * from the semantics in docs/filter.md, sharing no code with filter.c. */
#ifndef KNIT_TEST_FILTER_REF_H
#define KNIT_TEST_FILTER_REF_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "json.h"

/* Is the address (family, network order) in s: "*", an address, "a/n" or "a-b"? */
static bool ref_ip_in(const char *s, int family, const uint8_t *addr)
{
	size_t alen = family == AF_INET ? 4 : 16;
	char tmp[128];
	const char *dash, *slash;
	uint8_t a[16], b[16];
	int bits;

	if (!strcmp(s, "*"))
		return true;
	if (strlen(s) >= sizeof(tmp))
		return false;
	dash = strchr(s, '-');
	slash = strchr(s, '/');
	if (dash) {
		memcpy(tmp, s, (size_t)(dash - s));
		tmp[dash - s] = 0;
		if (inet_pton(family, tmp, a) != 1 || inet_pton(family, dash + 1, b) != 1)
			return false;
		return memcmp(a, addr, alen) <= 0 && memcmp(addr, b, alen) <= 0;
	}
	bits = (int)alen * 8;
	if (slash) {
		memcpy(tmp, s, (size_t)(slash - s));
		tmp[slash - s] = 0;
		bits = atoi(slash + 1);
	} else {
		strcpy(tmp, s);
	}
	if (inet_pton(family, tmp, a) != 1)
		return false;
	for (int i = 0; i < bits; i++) {
		int bit = 7 - i % 8;

		if (((a[i / 8] >> bit) & 1) != ((addr[i / 8] >> bit) & 1))
			return false;
	}
	return true;
}

static bool ref_allow(const struct json *pf, int family, uint8_t proto, const uint8_t *src, const uint8_t *dst,
		      uint16_t dport)
{
	if (!pf || json_is_null(pf))
		return true;
	for (size_t i = 0; i < json_array_len(pf); i++) {
		const struct json *rule = json_array_at(pf, i), *protos = json_get(rule, "ipProto");
		const struct json *srcs = json_get(rule, "srcIPs"), *dsts = json_get(rule, "dstPorts");
		bool proto_ok = false, src_ok = false;

		if (!json_array_len(protos))
			proto_ok = proto == 6 || proto == 17 || proto == 1 || proto == 58;
		for (size_t k = 0; k < json_array_len(protos); k++)
			proto_ok |= json_int(json_array_at(protos, k), -1) == proto;
		for (size_t k = 0; k < json_array_len(srcs); k++)
			src_ok |= ref_ip_in(json_str(json_array_at(srcs, k)), family, src);
		if (!proto_ok || !src_ok)
			continue;
		for (size_t k = 0; k < json_array_len(dsts); k++) {
			const struct json *d = json_array_at(dsts, k);
			int64_t first = json_int(json_path(d, "ports", "first", NULL), -1);
			int64_t last = json_int(json_path(d, "ports", "last", NULL), -1);
			bool port_ok;

			if (!ref_ip_in(json_str(json_get(d, "ip")), family, dst))
				continue;
			if (proto == 6 || proto == 17 || proto == 132)
				port_ok = first <= dport && dport <= last;
			else if (proto == 1 || proto == 58)
				port_ok = true;
			else
				port_ok = first == 0 && last == 65535;
			if (port_ok)
				return true;
		}
	}
	return false;
}

#endif
