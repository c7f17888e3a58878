/* The pod identities knitd carries for the CNI plugin (docs/cni.md): one
 * identity per attachment (containerID, ifName), its TUN device moved
 * into the pod's network namespace, registered through the node
 * identity's session, remembered under DIR (<cid>-<ifname>.state with its
 * keys, <cid>-<ifname>.pod with the attachment, both mode 0600) so a
 * restarted knitd carries them again. Everything runs on the loop thread. */
#ifndef KNIT_AGENT_PODS_H
#define KNIT_AGENT_PODS_H

#include <stdbool.h>
#include <stddef.h>

#include "localapi.h"

struct datagrams;
struct hub;
struct identity;
struct loop;
struct netstun;
struct pods;

struct pods_config {
	struct loop *loop;
	struct hub *hub;
	struct identity *node; /* vouches for the pods; outlives them */
	const char *dir; /* made 0700 if missing */
	/* How long an attach waits for the registration and the first netmap. */
	unsigned attach_timeout_ms; /* 0: 25 s */
	bool (*is_identity_device)(void *arg, const char *ifname);
	void *arg;
	/* Path discovery for the pods as for the node (identity_config's):
	 * the node's disco/STUN demultiplexer and STUN client, relay TLS
	 * trust. NULL: pods stay at their peers' netmap endpoints. */
	struct datagrams *datagrams;
	struct netstun *netstun;
	const char *relay_ca;
};

int pods_new(struct pods **out, const struct pods_config *cfg);
/* Brings back the identities of the state directory whose namespace still
 * exists (a new TUN device there: the old one died with the old process);
 * drops the others' files. Returns how many came back. */
size_t pods_restore(struct pods *p);
/* Saves and frees every identity (their devices go; the Devices at the
 * server stay, for the next knitd). NULL is a no-op. */
void pods_free(struct pods *p);
/* The local API's /identities operations on p. */
struct localapi_pod_ops pods_ops(struct pods *p);
/* Whether ifname (a temporary name in our namespace) is one of p's. */
bool pods_has_device(const struct pods *p, const char *ifname);

#endif
