/* IP prefixes for the policy: parsed with inet_pton, compared bitwise. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/messages.h"
#include "policy.h"

static void mask(struct policy_prefix *p)
{
	size_t total = p->family == 4 ? 32 : 128;

	for (size_t bit = p->bits; bit < total; bit++)
		p->addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
}

/* The syntax is the control codec's (one home for prefixes: decimal bits,
 * no sign, no leading zeros); policy prefixes are then masked. */
bool policy_prefix_parse(const char *s, struct policy_prefix *out)
{
	struct netmap_prefix np;

	memset(out, 0, sizeof(*out));
	if (!netmap_prefix_parse(&np, s))
		return false;
	out->family = np.family == AF_INET ? 4 : 6;
	out->bits = np.bits;
	memcpy(out->addr, np.addr, sizeof(out->addr));
	mask(out);
	return true;
}

bool policy_prefix_format(const struct policy_prefix *p, char *out, size_t n)
{
	char host[INET6_ADDRSTRLEN];
	int w;

	if (!inet_ntop(p->family == 4 ? AF_INET : AF_INET6, p->addr, host, sizeof(host)))
		return false;
	w = snprintf(out, n, "%s/%u", host, p->bits);
	return w >= 0 && (size_t)w < n;
}

/* Do the first `bits` bits of a and b agree? */
static bool same_bits(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;

	if (memcmp(a, b, whole))
		return false;
	if (!rest)
		return true;
	return ((a[whole] ^ b[whole]) & (uint8_t)(0xff00u >> rest)) == 0;
}

bool policy_prefix_contains(const struct policy_prefix *outer, const struct policy_prefix *inner)
{
	return outer->family == inner->family && outer->bits <= inner->bits &&
	       same_bits(outer->addr, inner->addr, outer->bits);
}

bool policy_prefix_overlaps(const struct policy_prefix *a, const struct policy_prefix *b)
{
	return a->family == b->family &&
	       same_bits(a->addr, b->addr, a->bits < b->bits ? a->bits : b->bits);
}
