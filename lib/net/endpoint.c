#include "net/endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool parse_port(const char *s, in_port_t *port)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535)
		return false;
	*port = htons((uint16_t)v);
	return true;
}

bool endpoint_parse(struct endpoint *ep, const char *s, const char **why)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	const char *colon;
	size_t hlen;

	memset(ep, 0, sizeof(*ep));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close) {
			*why = "missing ']'";
			return false;
		}
		if (close[1] != ':') {
			*why = "expected ':' and a port after ']'";
			return false;
		}
		hlen = (size_t)(close - s - 1);
		colon = close + 1;
		s++;
	} else {
		colon = strchr(s, ':');
		if (!colon) {
			*why = "expected host:port";
			return false;
		}
		if (strchr(colon + 1, ':')) {
			*why = "an IPv6 address needs brackets: [addr]:port";
			return false;
		}
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen >= sizeof(host)) {
		*why = "bad address length";
		return false;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (!parse_port(colon + 1, &ep->addr.in4.sin_port)) {
		*why = "bad port";
		return false;
	}
	if (inet_pton(AF_INET, host, &ep->addr.in4.sin_addr) == 1) {
		ep->addr.in4.sin_family = AF_INET;
		return true;
	}
	in_port_t port = ep->addr.in4.sin_port;
	char *pct = strchr(host, '%');
	if (pct) {
		char *end;
		unsigned long id;
		*pct++ = '\0';
		id = strtoul(pct, &end, 10);
		if (*pct && !*end && id <= UINT32_MAX)
			ep->addr.in6.sin6_scope_id = (uint32_t)id;
		else if (!(ep->addr.in6.sin6_scope_id = if_nametoindex(pct))) {
			*why = "unknown IPv6 scope";
			return false;
		}
	}
	if (inet_pton(AF_INET6, host, &ep->addr.in6.sin6_addr) != 1) {
		*why = "not an IPv4 or IPv6 address";
		return false;
	}
	ep->addr.in6.sin6_family = AF_INET6;
	ep->addr.in6.sin6_port = port;
	return true;
}

int endpoint_format(const struct endpoint *ep, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	int n;

	switch (ep->addr.sa.sa_family) {
	case AF_INET:
		inet_ntop(AF_INET, &ep->addr.in4.sin_addr, host, sizeof(host));
		n = snprintf(out, len, "%s:%u", host, ntohs(ep->addr.in4.sin_port));
		break;
	case AF_INET6:
		inet_ntop(AF_INET6, &ep->addr.in6.sin6_addr, host, sizeof(host));
		if (ep->addr.in6.sin6_scope_id)
			n = snprintf(out, len, "[%s%%%u]:%u", host, ep->addr.in6.sin6_scope_id,
				     ntohs(ep->addr.in6.sin6_port));
		else
			n = snprintf(out, len, "[%s]:%u", host, ntohs(ep->addr.in6.sin6_port));
		break;
	default:
		return -EAFNOSUPPORT;
	}
	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	return n;
}

bool endpoint_equal(const struct endpoint *a, const struct endpoint *b)
{
	if (a->addr.sa.sa_family != b->addr.sa.sa_family)
		return false;
	if (a->addr.sa.sa_family == AF_INET)
		return a->addr.in4.sin_port == b->addr.in4.sin_port &&
		       a->addr.in4.sin_addr.s_addr == b->addr.in4.sin_addr.s_addr;
	if (a->addr.sa.sa_family == AF_INET6)
		return a->addr.in6.sin6_port == b->addr.in6.sin6_port &&
		       a->addr.in6.sin6_scope_id == b->addr.in6.sin6_scope_id &&
		       !memcmp(&a->addr.in6.sin6_addr, &b->addr.in6.sin6_addr, 16);
	return false;
}

bool endpoint_equal_src(const struct endpoint *a, const struct endpoint *b)
{
	if (!endpoint_equal(a, b) || a->has_src != b->has_src)
		return false;
	if (!a->has_src)
		return true;
	if (a->src_ifindex != b->src_ifindex)
		return false;
	if (a->addr.sa.sa_family == AF_INET)
		return a->src.v4.s_addr == b->src.v4.s_addr;
	return !memcmp(&a->src.v6, &b->src.v6, 16);
}

socklen_t endpoint_socklen(const struct endpoint *ep)
{
	return ep->addr.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

void endpoint_clear_src(struct endpoint *ep)
{
	memset(&ep->src, 0, sizeof(ep->src));
	ep->src_ifindex = 0;
	ep->has_src = false;
}
