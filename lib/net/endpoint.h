/* Where a peer is, and which of our addresses it talks to.
 *
 * WireGuard endpoint semantics: replies leave from the local address the
 * peer's last packet was sent to (src), so a multi-homed node answers from
 * the address the peer knows; the address of record is the peer's (addr). */
#ifndef KNIT_NET_ENDPOINT_H
#define KNIT_NET_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct endpoint {
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	} addr;
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} src;
	int src_ifindex;
	bool has_src;
};

/* "192.0.2.1:51820" or "[2001:db8::1]:51820" ("[fe80::1%eth0]:1" too).
 * Numeric only: names are resolved by whoever hands us the string. On
 * failure returns false and points *why at a reason. */
bool endpoint_parse(struct endpoint *ep, const char *s, const char **why);
/* The same forms; returns the length, or -ENOSPC / -EAFNOSUPPORT. */
int endpoint_format(const struct endpoint *ep, char *out, size_t len);
/* Same peer address (family, address, port, IPv6 scope). */
bool endpoint_equal(const struct endpoint *a, const struct endpoint *b);
/* Same peer address and same local source. */
bool endpoint_equal_src(const struct endpoint *a, const struct endpoint *b);
socklen_t endpoint_socklen(const struct endpoint *ep);
void endpoint_clear_src(struct endpoint *ep);

#endif
