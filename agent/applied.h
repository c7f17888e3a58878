/* What one identity has applied to its WireGuard engine and its TUN
 * device, and the pure function from that and a new netmap (or a delta)
 * to the operations that bring them in line:
 *
 *   applied_plan_netmap(a, nm, &plan)    a full netmap
 *   applied_plan_delta(a, d, &plan)      only what the delta touches
 *   ... the caller runs plan.ops[] against the engine and the link,
 *       setting each op's err ...
 *   applied_commit(a, &plan)             records what took effect
 *
 * Peers are compared with what was applied, so an unchanged peer costs no
 * engine call, and a changed one says what changed with the UAPI's
 * has/replace flags (wg/uapi.h struct uapi_peer): REPLACE_ALLOWED_IPS when
 * its allowed IPs changed, HAS_ENDPOINT when the endpoint it announced did.
 * Nothing is capped: every allowed IP, every removal becomes an op.
 *
 * Routes via the TUN are counted by the peers whose allowed IPs hold them:
 * a route goes when its last peer does. The TUN's addresses are the
 * netmap's self addresses. An op that failed (err != 0) leaves its record
 * as it was before, so the next plan that looks at it (every full netmap
 * looks at everything) tries again.
 *
 * Ops come in the order to run them: peer removals, peer sets, addresses
 * added, addresses removed, routes added, routes removed. Pure: no I/O,
 * no clock; everything runs on the caller's thread. */
#ifndef KNIT_AGENT_APPLIED_H
#define KNIT_AGENT_APPLIED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/messages.h"
#include "wg/uapi.h"

enum applied_op_kind {
	APPLIED_PEER_REMOVE, /* engine_peer_remove(peer.public_key) */
	APPLIED_PEER_SET, /* engine_peer_set(&peer): peer.flags say what */
	APPLIED_ADDR_ADD, /* an address on the TUN: prefix, cidr */
	APPLIED_ADDR_DEL,
	APPLIED_ROUTE_ADD, /* a route via the TUN: prefix, cidr */
	APPLIED_ROUTE_DEL,
};

struct applied_op {
	enum applied_op_kind kind;
	struct uapi_peer peer; /* PEER_*; allowed_ips belong to the plan */
	struct netmap_prefix prefix; /* ADDR_*, ROUTE_* */
	char cidr[64]; /* prefix as "addr/bits", what lib/net/iface takes */
	int err; /* set by the caller: 0 or a negative errno */
};

struct applied_plan {
	struct applied_op *ops;
	size_t nops;
	/* Private to applied.c: the records commit installs. */
	size_t cap;
	struct strmap *peers; /* hex key -> new record, or the removed mark */
	struct strmap *refs; /* cidr -> route count change */
};

struct applied;

struct applied *applied_new(void);
/* Frees the records (not the engine's peers or the link's state). */
void applied_free(struct applied *a);

/* Both fill *plan (free it with applied_plan_free()) and leave a alone.
 * -ENOMEM leaves *plan empty. */
int applied_plan_netmap(const struct applied *a, const struct netmap *nm, struct applied_plan *plan);
/* d as lib/control's netmap_apply_delta() applies it: removals first,
 * then upserts by node key, then self when d->has says so. */
int applied_plan_delta(const struct applied *a, const struct netmap_delta *d, struct applied_plan *plan);
/* Everything gone: peers, addresses, routes (down, logout). */
int applied_plan_clear(const struct applied *a, struct applied_plan *plan);
/* Records what the ops did, by their err. -ENOMEM leaves a between the old
 * and the new state: the caller clears the engine and the link and
 * starts over with applied_reset(). */
int applied_commit(struct applied *a, struct applied_plan *plan);
void applied_plan_free(struct applied_plan *plan);
/* Forgets every record (after the caller cleared engine and link). */
void applied_reset(struct applied *a);

/* A peer the records hold (whatever the engine did with it). */
bool applied_has_peer(const struct applied *a, const uint8_t key[32]);
size_t applied_peers(const struct applied *a);
size_t applied_routes(const struct applied *a);

#endif
