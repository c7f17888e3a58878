/* One identity's routes on the host: the netmap's prefixes, through the
 * plan of routeplan.h, in knit's own routing table behind policy rules
 * (table 52, rule 5270; knitd's own packets, marked ROUTEPLAN_FWMARK by
 * the hub's socket, skip it at 5210), so the host's default and connected
 * routes are never replaced and are exactly as they were once knit's
 * routes go (withdrawn, logged out, or knitd stopping). Loop thread. */
#ifndef KNIT_AGENT_ROUTES_H
#define KNIT_AGENT_ROUTES_H

#include <stdbool.h>

struct netmap;
struct routes;

struct routes_opts {
	bool accept_routes; /* install peers' approved subnet routes */
	const char *exit_node; /* a peer's name or tailnet IP: its default routes; NULL: none */
};

/* For the TUN device ifname. NULL on allocation failure. */
struct routes *routes_new(const char *ifname, const struct routes_opts *o);
/* Brings the table in line with nm (NULL: nothing), keeping the
 * coordination server at keep_host (a URL's host, an IP literal or a
 * name; NULL: none) out of the tunnel. Logs what it skips and why. 0 or
 * a negative errno (what could be installed was). */
int routes_sync(struct routes *r, const struct netmap *nm, const char *coordination_url);
/* Removes every route and rule it installed. NULL is a no-op. */
void routes_free(struct routes *r);
/* Routes (not throws) installed, for status. */
unsigned routes_installed(const struct routes *r);

#endif
