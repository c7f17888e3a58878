/* One identity's paths to its peers: disco (lib/disco/message.h) on the
 * node's UDP socket and through the relay, and per-peer path selection
 * (lib/disco/path.h) driving the engine's route for each peer
 * (engine_peer_set_path()): direct to the endpoint that answers pings
 * best, or through the peer's home relay.
 *
 *   - A peer with a disco key starts at its first netmap endpoint at once,
 *     and, when it has a home relay region we know, through the relay as
 *     well (lib/disco/path.h, disco_peer_route(): never the relay alone
 *     while the endpoint may work, so a relay in the map that nobody
 *     reaches costs nothing). Its endpoints (from the netmap: local and
 *     STUN-reflexive) are pinged directly; a pong makes that endpoint the
 *     path at once (upgrade); no pong for DISCO_OPTIMISTIC_MS: the relay
 *     alone.
 *   - While not direct, every PATHS_CALL_ME_MAYBE_MS a call-me-maybe with
 *     our endpoints goes through the relay and every candidate is pinged
 *     at the same moment: the peer pings back on receipt, so both NATs
 *     open toward each other (hole punching).
 *   - A direct path that stops answering (lib/disco/path.h: no pong for
 *     DISCO_TRUST_MS) falls back to the relay, and comes back when pongs
 *     do.
 *   - A peer without a disco key keeps the endpoint the netmap gives the
 *     engine (WireGuard roams), as before path discovery; one with no relay
 *     to reach it by stays at its netmap endpoint until a pong names a
 *     better one.
 *
 * Disco messages are sealed between the two identities' disco keys; one
 * that does not open, comes from a key no peer has, or names the wrong
 * node key is dropped and counted. Loop thread. */
#ifndef KNIT_AGENT_PATHS_H
#define KNIT_AGENT_PATHS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/endpoint.h"

struct engine;
struct hub;
struct loop;
struct netmap;
struct paths;
struct relays;

#define PATHS_TICK_MS 250u
#define PATHS_CALL_ME_MAYBE_MS 5000u
#define PATHS_PING_TIMEOUT_MS 5000u
/* The source a pong sent through the relay names: 127.3.3.40, port the
 * region (no address saw the ping). */
#define PATHS_RELAY_MARKER 0x7f030328u

struct paths_config {
	struct loop *loop;
	struct hub *hub;
	struct engine *engine;
	struct relays *relays; /* NULL: no relay, direct only */
	const uint8_t *disco_priv; /* 32 bytes: copied, wiped on free */
	const uint8_t *node_pub;   /* 32 bytes: ours, named in our pings */
};

enum paths_kind { PATHS_NONE, PATHS_DIRECT, PATHS_RELAY };

struct paths_info {
	enum paths_kind kind;
	struct endpoint addr; /* DIRECT */
	int region;	      /* RELAY; DIRECT with relay_too */
	uint32_t latency_ms;  /* DIRECT and measured: the last pong's round trip */
	/* DIRECT: on a pong; false: the peer's netmap endpoint, sent to
	 * while it is probed (disco_peer_route()). */
	bool measured;
	bool relay_too; /* DIRECT, not measured: the relay as well */
};

struct paths_stats {
	unsigned long long pings_sent, pongs_received, pings_received;
	unsigned long long call_me_maybe_sent, call_me_maybe_received;
	unsigned long long bad; /* did not open or named the wrong node */
	unsigned long long upgrades, fallbacks; /* relay -> direct, direct -> relay */
	size_t direct, relay, other; /* peers by path now */
};

int paths_new(struct paths **out, const struct paths_config *c);
/* Outstanding pings end with -ECANCELED. NULL: no-op. */
void paths_free(struct paths *ps);

/* The netmap in force (NULL: none): which peers, their disco keys,
 * endpoints and home regions. Call after the engine has the peers. */
void paths_sync(struct paths *ps, const struct netmap *nm);
/* Our own endpoints (local and reflexive), told in call-me-maybes. */
void paths_set_endpoints(struct paths *ps, const struct endpoint *eps, size_t n);
/* Our node key changed (a new login). */
void paths_set_node_key(struct paths *ps, const uint8_t node_pub[32]);

/* datagrams_fn (arg: the paths): a disco datagram from the socket. False
 * if it is not for this identity. */
bool paths_on_datagram(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from);
/* relays_config.on_disco: a disco message from node key src, relayed. */
void paths_on_relayed(void *arg, const uint8_t src[32], const uint8_t *pkt, size_t len);
/* relays_config.peer_region: a peer's home region (0: none known). */
int paths_peer_region(void *arg, const uint8_t peer[32]);

/* True while paths sets this peer's route (direct by disco, or relay):
 * the netmap's endpoint must not override it. */
bool paths_manages(const struct paths *ps, const uint8_t node_key[32]);
/* The path to the peer now; false for a peer paths does not know. */
bool paths_info(const struct paths *ps, const uint8_t node_key[32], struct paths_info *out);

/* knit ping: one disco ping along the current path (and a round of
 * hole punching). done gets the pong's path and round trip, or err
 * -ETIMEDOUT after PATHS_PING_TIMEOUT_MS, -ECANCELED when paths goes.
 * -ENOENT: not a peer with a disco key; -ENOMEM. */
typedef void (*paths_pong_fn)(void *arg, int err, const struct paths_info *via, double latency_ms);
int paths_ping(struct paths *ps, const uint8_t node_key[32], paths_pong_fn done, void *arg);

/* Forgets the pings started with arg (done is not called). */
void paths_ping_cancel(struct paths *ps, void *arg);

void paths_stats(const struct paths *ps, struct paths_stats *out);

#endif
