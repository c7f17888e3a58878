/* A node's CNI network configuration as its container runtime picks it,
 * and what knit reads from it: knit-cni's mode and the pod address ranges
 * the chain's host-local IPAM hands out (knitd's gateway mode, docs/cni.md).
 * Shared by knit-cni's installer and knitd. */
#ifndef KNIT_CNICONF_H
#define KNIT_CNICONF_H

#include <stdbool.h>
#include <stddef.h>

#include "control/messages.h"

struct json;

#define CNICONF_PLUGIN_TYPE "knit-cni"
#define CNICONF_MAX_BYTES ((size_t)1 << 20)
#define CNICONF_MAX_RANGES 16

/* Whether name is a configuration file libcni reads (*.conf, *.conflist,
 * *.json). */
bool cniconf_is_conf_name(const char *name);
/* The runtime's pick in dir, the lexicographically first configuration
 * file, malloc'd into *name (a file name); -ENOENT when there is none. */
int cniconf_primary(const char *dir, char **name);
/* dir's primary configuration parsed (at most CNICONF_MAX_BYTES); *name as
 * cniconf_primary's (may be NULL). NULL with why. */
struct json *cniconf_load(const char *dir, char **name, char *why, size_t whylen);

/* Pure. The pod ranges a node in gateway mode advertises, from conf (a
 * conflist): when knit-cni's entry has "mode" "gateway" or
 * "identity+gateway", the subnets of every host-local IPAM of the chain's
 * other plugins ("ranges" [[{"subnet"}]] and the older "subnet"),
 * deduplicated, at most max. Returns 1 (gateway, *n ranges, n >= 1), 0 (an
 * entry not in gateway mode, *n = 0), -ENOENT (no knit-cni entry: knit is
 * not installed in this chain), -EINVAL with why (gateway mode but no
 * host-local range, a bad mode or subnet, more than max). */
int cniconf_gateway_ranges(const struct json *conf, struct netmap_prefix *out, size_t max, size_t *n, char *why,
			   size_t whylen);

#endif
