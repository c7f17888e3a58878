#include "ipam.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "control/fields.h"

static size_t addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

bool ipam_pool_parse(const char *cidr, struct ipam_pool *out, char *err, size_t errlen)
{
	struct netmap_prefix pfx, host;
	const char *slash = strchr(cidr ? cidr : "", '/');
	char addr[64];
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!slash || (size_t)(slash - cidr) >= sizeof(addr)) {
		errbuf_printf(err, errlen, "\"%s\" is not a CIDR (address/prefix)", cidr ? cidr : "");
		return false;
	}
	memcpy(addr, cidr, (size_t)(slash - cidr));
	addr[slash - cidr] = '\0';
	if (!netmap_prefix_parse(&host, addr)) {
		errbuf_printf(err, errlen, "\"%s\": \"%s\" is not an IP address", cidr, addr);
		return false;
	}
	/* The control protocol's one CIDR syntax (control/fields.h). */
	if (!fields_cidr_parse(&pfx, cidr)) {
		errbuf_printf(err, errlen, "\"%s\": bad prefix length", cidr);
		return false;
	}
	out->family = pfx.family;
	memcpy(out->base, pfx.addr, sizeof(out->base));
	out->bits = pfx.bits;
	n = addr_len(out->family);
	for (unsigned i = out->bits; i < n * 8; i++) {
		if (out->base[i / 8] & (0x80 >> (i % 8))) {
			errbuf_printf(err, errlen, "\"%s\": host bits set (did you mean the network address?)", cidr);
			return false;
		}
	}
	/* At least one usable address besides network (and broadcast). */
	if (n * 8 - out->bits < 2) {
		errbuf_printf(err, errlen, "\"%s\": pool too small", cidr);
		return false;
	}
	return true;
}

uint64_t ipam_pool_size(const struct ipam_pool *p)
{
	unsigned host = (unsigned)addr_len(p->family) * 8 - p->bits;

	return host >= 32 ? (1ull << 32) : (1ull << host);
}

static void add_offset(const struct ipam_pool *p, uint64_t offset, uint8_t out[16])
{
	int last = p->family == AF_INET ? 3 : 15;
	unsigned carry = 0;

	memcpy(out, p->base, 16);
	for (int i = last; i >= 0 && i < 16; i--) {
		unsigned v = out[i] + (unsigned)(offset & 0xff) + carry;
		out[i] = (uint8_t)v;
		carry = v >> 8;
		offset >>= 8;
	}
}

static bool in_range(const uint8_t *a, const char *net, unsigned bits, int family)
{
	uint8_t b[16];

	if (inet_pton(family, net, b) != 1)
		return false;
	for (unsigned i = 0; i < bits; i++)
		if ((a[i / 8] ^ b[i / 8]) & (0x80 >> (i % 8)))
			return false;
	return true;
}

static bool reserved(const struct ipam_pool *p, uint64_t offset, const uint8_t a[16])
{
	unsigned host = (unsigned)addr_len(p->family) * 8 - p->bits;

	if (offset == 0)
		return true;
	if (p->family == AF_INET) {
		if (host < 64 && offset == (1ull << host) - 1)
			return true; /* broadcast */
		return in_range(a, "100.100.100.0", 24, AF_INET) || in_range(a, "100.115.92.0", 23, AF_INET);
	}
	return in_range(a, "fd7a:115c:a1e0::53", 128, AF_INET6);
}

bool ipam_address_at(const struct ipam_pool *p, uint64_t offset, char *out, size_t outlen)
{
	uint8_t a[16];

	if (offset >= ipam_pool_size(p))
		return false;
	add_offset(p, offset, a);
	if (reserved(p, offset, a))
		return false;
	return inet_ntop(p->family, a, out, (socklen_t)outlen) != NULL;
}

bool ipam_offset_of(const struct ipam_pool *p, const char *addr, uint64_t *offset)
{
	uint8_t a[16] = { 0 };
	size_t n = addr_len(p->family);
	uint64_t off = 0;

	if (inet_pton(p->family, addr, a) != 1)
		return false;
	for (unsigned i = 0; i < p->bits; i++)
		if ((a[i / 8] ^ p->base[i / 8]) & (0x80 >> (i % 8)))
			return false;
	/* Offsets fit in 32 bits (see ipam_pool_size); higher host bits must be zero. */
	for (size_t i = 0; i < n; i++) {
		uint8_t host_mask = 0;
		for (unsigned b = 0; b < 8; b++)
			if (i * 8 + b >= p->bits)
				host_mask |= (uint8_t)(0x80 >> b);
		uint8_t v = a[i] & host_mask;
		if (n - i > 4) {
			if (v)
				return false;
			continue;
		}
		off = off << 8 | v;
	}
	if (off >= ipam_pool_size(p))
		return false;
	*offset = off;
	return true;
}

uint64_t ipam_start_offset(const struct ipam_pool *p, const char *seed)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const unsigned char *s = (const unsigned char *)seed; *s; s++) {
		h ^= *s;
		h *= 0x100000001b3ull;
	}
	return h % ipam_pool_size(p);
}

int ipam_claim_name(const char *tailnet, const char *addr, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s.%s", tailnet, addr);

	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	for (char *c = out; *c; c++) {
		if (*c == ':')
			*c = '-';
	}
	/* "fd7a::" would end in '-', which a name may not. */
	if (out[n - 1] == '-') {
		if ((size_t)n + 1 >= outlen)
			return -ENAMETOOLONG;
		out[n] = '0';
		out[n + 1] = '\0';
	}
	return 0;
}
