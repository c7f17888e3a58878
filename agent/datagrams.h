/* The node's non-WireGuard datagrams: what hub_config.other gets from the
 * shared UDP socket (DESIGN.md: disco and STUN share it with WireGuard).
 * The hub's receive thread only classifies them (disco magic, STUN's
 * magic cookie; anything else is garbage, counted and dropped) and copies
 * them into a bounded ring; the loop drains it and dispatches: STUN to
 * the node's STUN client (netstun.h), disco to whichever identity knows the
 * sender's disco key (each identity's paths.h registers a handler).
 *
 * Locking: lock guards the ring; handlers and the STUN hook belong to the
 * loop thread; counters are atomics. */
#ifndef KNIT_AGENT_DATAGRAMS_H
#define KNIT_AGENT_DATAGRAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/endpoint.h"

struct loop;
struct datagrams;

/* Ring slots and their size: a STUN message is at most STUN_MAX_MSG
 * (1280), a sealed disco message less. A burst beyond the ring is dropped
 * (counted): a flood of junk cannot grow memory or starve the loop. */
#define DATAGRAMS_RING 256
#define DATAGRAMS_SLOT 1280

/* Loop thread: a datagram for the handler; true if it took it (it knew
 * the sender), false to offer it to the next one. */
typedef bool (*datagrams_fn)(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from);

struct datagrams_stats {
	unsigned long long disco, stun;	 /* dispatched */
	unsigned long long garbage;	 /* neither disco nor STUN, or too long */
	unsigned long long dropped;	 /* the ring was full */
	unsigned long long disco_unknown; /* no identity knew the sender */
	unsigned long long stun_unknown;  /* the STUN client did not want it */
};

int datagrams_new(struct datagrams **out, struct loop *loop);
/* Every handler should be gone. NULL is a no-op. */
void datagrams_free(struct datagrams *d);

/* hub_config.other (arg: the struct datagrams): the hub's receive thread. */
void datagrams_on_other(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from);

/* Loop thread. -ENOMEM. */
int datagrams_add_disco(struct datagrams *d, datagrams_fn fn, void *arg);
void datagrams_remove_disco(struct datagrams *d, void *arg);
void datagrams_set_stun(struct datagrams *d, datagrams_fn fn, void *arg);

void datagrams_stats(struct datagrams *d, struct datagrams_stats *out);

#endif
