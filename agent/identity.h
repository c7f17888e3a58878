/* One tailnet identity of this node: its keys and login (struct state),
 * its WireGuard engine on the node's shared hub with its own TUN device,
 * its control connection and netmap, and what of that netmap is applied
 * to the engine and the link (applied.h). knitd's mesh mode holds a list
 * of them, the node's own first; each is created and destroyed at run
 * time and shares nothing with the others but the loop and the hub.
 * Everything runs on the loop thread. */
#ifndef KNIT_AGENT_IDENTITY_H
#define KNIT_AGENT_IDENTITY_H

#include <stdbool.h>
#include <stdint.h>

#include "control/client.h"

struct engine;
struct hub;
struct json;
struct localapi_reply;
struct localapi_up;
struct loop;
struct netmap;
struct netmap_delta;
struct netmap_node;
struct netmap_prefix;
struct routes_opts;
struct state;
struct identity;

struct identity_config {
	const char *ifname; /* the TUN device to create */
	const char *state_path; /* where st is saved; NULL: kept in memory only */
	const char *uapi_dir; /* also serve wg(8)'s UAPI DIR/<ifname>.sock; NULL: not */
	/* The TUN device went away (deleted, or failing). */
	void (*on_down)(void *arg, struct identity *id);
	/* Whether ifname is the device of any identity of this process: its
	 * addresses are no endpoint of ours. NULL: only this identity's own. */
	bool (*is_identity_device)(void *arg, const char *ifname);
	void *arg;
	/* Routes in knit's own table behind policy rules (routes.h): the
	 * node's identity, on the host. NULL: routes go into the main table
	 * of the TUN's namespace (an identity alone in a pod's namespace). */
	const struct routes_opts *host_routes;
	/* A network namespace (a path, "/var/run/netns/cni-..."): the TUN is
	 * created in ours under ifname, moved there and renamed netns_ifname,
	 * and its addresses and routes are made there (lib/net/netns.h).
	 * -EEXIST when netns_ifname is taken there. NULL: ours. */
	const char *netns;
	const char *netns_ifname;
	/* Path discovery (NULL: none, peers stay at their netmap endpoints):
	 * the node's disco/STUN demultiplexer, where the identity's disco
	 * handler goes, and its STUN client, whose reflexive endpoints and
	 * home region the identity announces. With them the identity keeps
	 * relay connections (relays.h) and selects paths (paths.h). */
	struct datagrams *datagrams;
	struct netstun *netstun;
	const char *relay_ca; /* TLS trust for relays; NULL: the system's */
	/* The knitd pod's projected ServiceAccount token, read for every
	 * register call (podtoken.h); NULL: none. The caller keeps it alive. */
	const char *pod_token_file;
};

/* Takes st (freed with the identity, also on failure). Creates the TUN
 * device up, with st's node key, and, when st holds a netmap from before,
 * applies it and starts handshakes with its peers: forwarding resumes
 * before the control plane answers. Returns 0 or a negative errno (logged). */
int identity_new(struct identity **out, struct loop *loop, struct hub *hub, struct state *st,
		 const struct identity_config *cfg);
/* Removes the peers, the TUN device and the control connection (the
 * state is not saved: identity_save() first). NULL is a no-op. */
void identity_free(struct identity *id);
/* Writes the state file now (no-op without a path). */
void identity_save(struct identity *id);
/* Logged in: connects to the coordination server and follows the map
 * stream. Also starts watching this machine's endpoints. */
void identity_start(struct identity *id);

/* ---- netmaps (the map stream's records end up here) ---- */

/* Takes nm (it is left empty) and applies it. 0 or -ENOMEM. */
int identity_apply_netmap(struct identity *id, struct netmap *nm);
/* Applies d to the netmap held (taking its contents). -ESTALE, -ENOMEM,
 * -ENOENT with no netmap yet: the caller asks for a full one. */
int identity_apply_delta(struct identity *id, struct netmap_delta *d);

/* ---- login ---- */

/* What the registration's answer did, after the identity handled it
 * (saved the device, started the map stream, answered a waiting knit up). */
typedef void (*identity_register_fn)(void *arg, int err, const struct json *resp, const char *why);

/* Sets the coordination server (and the hostname to join with, if not
 * NULL) for a join with no CLI involved. 0 or -ENOMEM. */
int identity_set_login(struct identity *id, const char *login_server, const char *hostname);
/* Routes the identity advertises besides its state's (knit up
 * --advertise-routes), from its next registration on: gateway mode's pod
 * ranges (gateway.h). Not saved. 0, or -E2BIG for more than the maximum. */
#define IDENTITY_MAX_EXTRA_ROUTES 16
int identity_set_extra_routes(struct identity *id, const struct netmap_prefix *routes, size_t n);
/* Registers with auth_key (NULL: come back with this machine key); done
 * (may be NULL) runs once the answer is handled. 0 or a negative errno. */
int identity_register(struct identity *id, const char *auth_key, identity_register_fn done, void *arg);

/* A pod's identity registers through the node identity's authenticated
 * session (sponsor): the node vouches for it, the operator checks that the
 * pod is bound to that node (docs/cni.md). The answer is handled as a
 * registration's (the map stream starts), then done runs. */
struct identity_pod {
	const char *pod_namespace, *pod_name, *pod_uid;
	const char *hostname; /* NULL: the operator's choice */
	const char *const *tags;
	size_t ntags;
};
int identity_register_pod(struct identity *id, struct identity *sponsor, const struct identity_pod *pod,
			  identity_register_fn done, void *arg);
/* Deletes the Device at the server (logout) and forgets the login; done
 * (may be NULL) gets the server's answer. 0 or a negative errno (then done
 * never runs). */
int identity_leave(struct identity *id, identity_register_fn done, void *arg);
/* A route for cidr through the identity's device, in the main table of the
 * device's namespace. 0 or a negative errno. */
int identity_route_add(struct identity *id, const char *cidr);

/* ---- the local API's operations, each completing reply ---- */

void identity_up(struct identity *id, const struct localapi_up *req, struct localapi_reply *reply);
void identity_down(struct identity *id, struct localapi_reply *reply);
void identity_logout(struct identity *id, struct localapi_reply *reply);
void identity_ping(struct identity *id, const char *peer, bool icmp, struct localapi_reply *reply);

/* ---- what it is ---- */

/* "NeedsLogin", "Stopped", "Starting", "Running" (localapi.h). */
const char *identity_backend_state(const struct identity *id);
/* One line on what is wrong, or NULL. */
const char *identity_health(const struct identity *id);
/* When the node key expires, Unix seconds; 0: never, or not logged in. */
int64_t identity_key_expiry(const struct identity *id);
/* Node keys renewed since start. */
unsigned long identity_key_renewals(const struct identity *id);
bool identity_logged_in(const struct identity *id);
/* Malformed peers and removals left out of netmaps so far (the rest applied). */
unsigned long identity_peers_skipped(const struct identity *id);
/* The map stream is up. */
bool identity_connected(const struct identity *id);
const struct state *identity_state(const struct identity *id);
/* The netmap in force, NULL before the first. */
const struct netmap *identity_netmap(const struct identity *id);
struct engine *identity_engine(const struct identity *id);
/* Path discovery's parts, NULL without it. */
struct paths *identity_paths(const struct identity *id);
struct relays *identity_relays(const struct identity *id);
/* The device's name where it is (the pod's ifname in a pod's namespace). */
const char *identity_ifname(const struct identity *id);
/* A node of the netmap by name, DNS name, Device name or tailnet IP;
 * *is_self says whether it is this identity. NULL if none. */
const struct netmap_node *identity_find_node(const struct identity *id, const char *what, bool *is_self);

#endif
