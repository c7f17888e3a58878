/* CHECK's look inside the pod: does the interface exist in the pod's
 * network namespace, up, with these addresses and routes through it?
 *
 * A forked child enters the netns with setns(2) and reads it over
 * rtnetlink (libnl-route), so the plugin's own namespace never changes. */
#ifndef KNIT_CNI_PODNS_H
#define KNIT_CNI_PODNS_H

#include <stddef.h>

struct podns_expect {
	const char *ifname;
	const char *const *addresses; /* CIDRs: an address with its prefix length */
	size_t naddresses;
	const char *const *routes; /* CIDRs: routes in the main table via ifname */
	size_t nroutes;
};

/* 0: all there. -ESRCH: something is missing, why says what. Another
 * negative errno: the netns could not be entered or read (why says). */
int podns_check(const char *netns, const struct podns_expect *x, char *why, size_t whylen);

#endif
