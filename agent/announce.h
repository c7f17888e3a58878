/* What one identity tells the coordination server about where it can be
 * reached (soft state, docs/control-protocol.md: the map request and the
 * update call): this machine's interface addresses (endpoints.c, looked at
 * again every ANNOUNCE_LOCAL_MS), the reflexive ones the node's STUN client
 * learnt, and the home relay region. Checked every ANNOUNCE_CHECK_MS; an
 * update goes out when it changed. The same view goes to the identity's
 * relays (which region to keep) and paths (what a call-me-maybe says).
 * Loop thread. */
#ifndef KNIT_AGENT_ANNOUNCE_H
#define KNIT_AGENT_ANNOUNCE_H

#include <stdbool.h>

struct announce;
struct hub;
struct json;
struct loop;
struct netstun;
struct paths;
struct relays;

#define ANNOUNCE_LOCAL_MS 30000u
#define ANNOUNCE_CHECK_MS 1000u

struct announce_config {
	struct loop *loop;
	struct hub *hub; /* its port is the endpoints' */
	/* An interface to leave out (an identity's own TUN device). */
	bool (*skip)(void *arg, const char *ifname);
	/* Sends an update call; false when it cannot now (not logged in, not
	 * running): the change is offered again at the next check. */
	bool (*send)(void *arg, const struct json *req);
	void *arg;
	struct netstun *netstun; /* NULL: no reflexive endpoints, no home region */
	struct relays *relays;	 /* NULL: none */
	struct paths *paths;	 /* NULL: none */
};

int announce_new(struct announce **out, const struct announce_config *c);
void announce_free(struct announce *a);
/* Starts the checks. */
void announce_start(struct announce *a);
/* {"type":"map","endpoints":[...],"relay":N} with what is to be announced
 * now, which then counts as told. NULL on ENOMEM. */
struct json *announce_map_request(struct announce *a);

#endif
