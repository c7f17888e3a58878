/* Where an identity's tailnet routes go on the host: a pure function from
 * the prefixes a netmap offers, the host's own routes and the user's
 * choices to the contents of knit's routing table (as Tailscale uses table
 * 52), and the difference between two such plans.
 *
 * The table sits behind a policy rule, so it is consulted before the main
 * table, and it holds:
 *   - a route through the TUN for each peer's tailnet addresses, for each
 *     approved subnet route when the user accepts routes (--accept-routes),
 *     and for 0.0.0.0/0 and ::/0 only from the exit node the user chose;
 *   - a "throw" for each of the host's connected networks and each address
 *     that must never go through the tunnel (the coordination server,
 *     relays) that one of those routes would cover, so the host's own
 *     routes still decide there.
 * A prefix equal to, or inside, one of the host's connected networks or a
 * kept address is never routed into the tunnel (counted as skipped). The
 * host's own routes are never touched, so withdrawing a route or stopping
 * knitd restores exactly what was there. */
#ifndef KNIT_AGENT_ROUTEPLAN_H
#define KNIT_AGENT_ROUTEPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/messages.h"

#define ROUTEPLAN_TABLE 52u
#define ROUTEPLAN_RULE_PRIORITY 5270u
/* knitd's own packets (the WireGuard socket carries this fwmark) skip the
 * table, so an exit node's default route cannot loop them into the tunnel. */
#define ROUTEPLAN_BYPASS_PRIORITY 5210u
#define ROUTEPLAN_FWMARK 0x80000u
#define ROUTEPLAN_FWMASK 0xff0000u

enum routeplan_kind {
	ROUTEPLAN_TAILNET, /* a peer's own tailnet address */
	ROUTEPLAN_SUBNET, /* an approved subnet route */
	ROUTEPLAN_EXIT, /* 0.0.0.0/0 or ::/0 */
};

struct routeplan_want {
	struct netmap_prefix prefix;
	enum routeplan_kind kind;
	bool from_exit_node; /* offered by the exit node the user chose */
};

struct routeplan_host {
	const struct netmap_prefix *connected; /* the host's directly attached networks */
	size_t nconnected;
	const struct netmap_prefix *keep; /* never through the tunnel */
	size_t nkeep;
};

struct routeplan_opts {
	bool accept_routes;
	bool use_exit_node;
};

enum routeplan_type {
	ROUTEPLAN_ROUTE, /* through the TUN */
	ROUTEPLAN_THROW,
};

struct routeplan_entry {
	struct netmap_prefix prefix;
	enum routeplan_type type;
};

enum routeplan_skip {
	ROUTEPLAN_SKIP_NOT_ACCEPTED, /* a subnet route without --accept-routes */
	ROUTEPLAN_SKIP_NO_EXIT, /* a default route from a peer not chosen as exit node */
	ROUTEPLAN_SKIP_HOST_ROUTE, /* equal to or inside a connected network or kept address */
	ROUTEPLAN_SKIP_MAX,
};

/* Entries sorted (family, address, bits, type), each once. */
struct routeplan {
	struct routeplan_entry *entries;
	size_t n;
	size_t skipped[ROUTEPLAN_SKIP_MAX];
};

/* out is overwritten (free it with routeplan_free()). 0 or -ENOMEM (out
 * then empty). */
int routeplan_build(const struct routeplan_want *want, size_t nwant, const struct routeplan_host *host,
		    const struct routeplan_opts *opts, struct routeplan *out);
/* add: entries of to that from lacks; del: entries of from that to lacks.
 * Both overwritten. 0 or -ENOMEM (both then empty). */
int routeplan_diff(const struct routeplan *from, const struct routeplan *to, struct routeplan *add,
		   struct routeplan *del);
void routeplan_free(struct routeplan *p);
/* True if a covers b (same family, a's bits a prefix of b's). */
bool routeplan_prefix_covers(const struct netmap_prefix *a, const struct netmap_prefix *b);
const char *routeplan_skip_name(enum routeplan_skip s);

#endif
