#include "endpoints.h"

#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/fields.h"
#include "net/endpoint.h"

struct update_request endpoints_collect(uint16_t port, bool (*skip)(void *arg, const char *ifname), void *arg,
					char *sig, size_t siglen)
{
	struct update_request u = { 0 };
	struct ifaddrs *ifs = NULL;
	size_t n = 0, cap = 0, pos = 0;

	sig[0] = '\0';
	if (getifaddrs(&ifs) != 0)
		return u;
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		struct endpoint ep = { 0 };
		char text[80];
		if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK) ||
		    (skip && skip(arg, i->ifa_name)))
			continue;
		if (i->ifa_addr->sa_family == AF_INET) {
			ep.addr.in4 = *(struct sockaddr_in *)i->ifa_addr;
			ep.addr.in4.sin_port = htons(port);
		} else if (i->ifa_addr->sa_family == AF_INET6) {
			ep.addr.in6 = *(struct sockaddr_in6 *)i->ifa_addr;
			if (IN6_IS_ADDR_LINKLOCAL(&ep.addr.in6.sin6_addr))
				continue;
			ep.addr.in6.sin6_port = htons(port);
		} else {
			continue;
		}
		if (n == FIELDS_MAX_ENDPOINTS)
			break; /* what the server takes: the first ones */
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct endpoint *e = realloc(u.endpoints, nc * sizeof(*e));
			if (!e)
				break;
			u.endpoints = e;
			cap = nc;
		}
		u.endpoints[n++] = ep;
		if (endpoint_format(&ep, text, sizeof(text)) > 0 && pos + strlen(text) + 2 < siglen)
			pos += (size_t)snprintf(sig + pos, siglen - pos, "%s,", text);
	}
	u.nendpoints = n;
	freeifaddrs(ifs);
	return u;
}

int endpoints_announce(struct update_request *out, const struct update_request *local,
		       const struct endpoint *reflexive, size_t nreflexive, int home, char *sig, size_t siglen)
{
	size_t max = local->nendpoints + nreflexive, pos = 0;

	memset(out, 0, sizeof(*out));
	sig[0] = '\0';
	if (max && !(out->endpoints = calloc(max, sizeof(*out->endpoints))))
		return -ENOMEM;
	for (size_t i = 0; i < max && out->nendpoints < FIELDS_MAX_ENDPOINTS; i++) {
		const struct endpoint *ep = i < local->nendpoints ? &local->endpoints[i] : &reflexive[i - local->nendpoints];
		bool dup = false;
		char text[80];

		for (size_t k = 0; k < out->nendpoints && !dup; k++)
			dup = endpoint_equal(&out->endpoints[k], ep);
		if (dup)
			continue;
		out->endpoints[out->nendpoints++] = *ep;
		if (endpoint_format(ep, text, sizeof(text)) > 0 && pos + strlen(text) + 2 < siglen)
			pos += (size_t)snprintf(sig + pos, siglen - pos, "%s,", text);
	}
	out->relay = home;
	out->has_relay = home > 0;
	if (pos + 16 < siglen)
		snprintf(sig + pos, siglen - pos, "relay=%d", home);
	return 0;
}
