/* Tailnet address pools: CIDR parsing and the candidate addresses the
 * Device reconciler tries to claim. Pure: no I/O, no allocation.
 *
 * An address is identified by its offset from the pool's base. Offsets
 * that are not usable (the network address, IPv4 broadcast, and the ranges
 * a tailnet keeps for itself: 100.100.100.0/24 for MagicDNS and
 * 100.115.92.0/23, fd7a:115c:a1e0::53) are skipped. Uniqueness is not
 * decided here: it comes from the API server refusing a second
 * AddressClaim of the same name. */
#ifndef KNIT_OPERATOR_IPAM_H
#define KNIT_OPERATOR_IPAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ipam_pool {
	int family; /* AF_INET or AF_INET6 */
	uint8_t base[16]; /* network address, host bits zero */
	unsigned bits; /* prefix length */
};

/* "100.64.0.0/10", "fd7a:115c:a1e0::/48". Host bits must be zero. */
bool ipam_pool_parse(const char *cidr, struct ipam_pool *out, char *err, size_t errlen);
/* Offsets 0 .. size-1 exist (usable or not). Capped at 2^32 for IPv6:
 * more addresses than that are never needed, and probing stays bounded. */
uint64_t ipam_pool_size(const struct ipam_pool *p);
/* The address at offset, as text; false if the offset is unusable or out of range. */
bool ipam_address_at(const struct ipam_pool *p, uint64_t offset, char *out, size_t outlen);
/* Offset of addr within p; false if addr is not in p or not an address. */
bool ipam_offset_of(const struct ipam_pool *p, const char *addr, uint64_t *offset);
/* Where probing starts for a device: spread by a hash of seed so racing
 * allocations for different devices rarely collide. */
uint64_t ipam_start_offset(const struct ipam_pool *p, const char *seed);
/* AddressClaim object name: "<tailnet>.<addr>" with ':' as '-'. */
int ipam_claim_name(const char *tailnet, const char *addr, char *out, size_t outlen);

#endif
