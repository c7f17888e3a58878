/* The record peers see of a Device, and the device sees as "self": the
 * control codec's netmap_node (lib/control), built from what the API
 * server holds and the coordination server's soft state. Pure: no I/O.
 *
 * Every field passes the same rules the agent parses with
 * (control/fields.h): what does not is left out (an approved route that
 * is not a prefix, a tag that is not a tag) and counted, never sent for
 * the agent to refuse. */
#ifndef KNIT_OPERATOR_RECORD_H
#define KNIT_OPERATOR_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/messages.h"

struct buf;
struct json;

/* Soft state: the coordination server's, never the API server's. */
struct record_soft {
	const struct endpoint *endpoints;
	size_t nendpoints;
	int relay;
	bool online;
};

/* The MagicDNS suffix when the Tailnet names none. */
#define RECORD_DEFAULT_SUFFIX "tailnet.knit"

/* Fills out (caller frees with netmap_node_free) from dev. Returns 0;
 * -EINVAL when dev cannot be a peer at all (why says: no valid nodeKey, or
 * not one IPv4 and one IPv6 address in status), -ENOMEM. *dropped counts
 * the fields left out (may be NULL). */
int record_from_device(const struct json *dev, const char *suffix, const struct record_soft *soft,
		       struct netmap_node *out, unsigned *dropped, char *why, size_t whylen);

/* status.addresses as host prefixes (caller frees *out): 0, -EINVAL
 * unless one IPv4 and one IPv6 address, -ENOMEM. */
int record_addresses(const struct json *dev, struct netmap_prefix **out, size_t *n);

/* The record's JSON text (appended to out) and a hash of it without the
 * soft state (endpoints, relay, online): a change of what peers must see
 * soon tells itself from soft state alone by that hash. */
int record_text(const struct netmap_node *n, struct buf *out, uint64_t *hard_hash);

#endif
