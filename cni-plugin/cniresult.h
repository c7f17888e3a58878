/* CNI results (SPEC.md section 5, "ADD Success"): converting a prevResult
 * to the version of the configuration and adding what knit made.
 *
 * The shapes: 0.3.0-0.4.0 carry ips[].version ("4"/"6"); 1.0.0 dropped
 * it; 1.1.0 added interfaces[].mtu/socketPath/pciID and routes[].mtu/
 * advmss/priority/table/scope. A result converted to an older version loses
 * the fields that version lacks, as libcni's converters do; one already in
 * the target version passes through untouched apart from knit's entries. */
#ifndef KNIT_CNI_CNIRESULT_H
#define KNIT_CNI_CNIRESULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cnierror.h"

struct json;

struct cniresult_prefix {
	int family; /* AF_INET, AF_INET6 */
	uint8_t addr[16];
	unsigned len;
};

/* "100.64.0.9/32", "fd7a:115c:a1e0::9/128". */
bool cniresult_prefix_parse(const char *s, struct cniresult_prefix *p);

/* A copy of prev in version to (a supported version), or NULL with e set
 * (6: not a result, 1: a version that cannot be converted). prev's own
 * cniVersion wins over from (the configuration's), which is used when prev
 * has none. */
struct json *cniresult_convert(const struct json *prev, const char *from, const char *to, struct cnierror *e);

/* What knit adds to a result: an interface in the pod, its addresses and
 * the routes through it. */
struct cniresult_attach {
	const char *ifname;
	const char *sandbox; /* CNI_NETNS */
	const char *const *addresses; /* CIDRs */
	size_t naddresses;
	const char *const *routes; /* CIDRs */
	size_t nroutes;
};

/* Appends a to res (in version, the res's). 0 or -ENOMEM/-EINVAL. */
int cniresult_append(struct json *res, const char *version, const struct cniresult_attach *a);

/* The index of the interface called ifname (in sandbox, when that is not
 * NULL) in res's interfaces, or -1. */
int cniresult_find_interface(const struct json *res, const char *ifname, const char *sandbox);

#endif
