/* Path selection for one peer: which of its endpoints answer our disco
 * pings, how fast, and so whether to send to it directly or through the
 * relay. I/O-free with caller-supplied time (milliseconds on any monotonic
 * clock): the caller sends the pings this asks for and reports the pongs,
 * pings and call-me-maybes it receives.
 *
 *   - Start on the relay. A pong on a direct endpoint makes it the path at
 *     once (relay -> direct upgrade).
 *   - While direct, the best endpoint is pinged every DISCO_HEARTBEAT_MS;
 *     if no pong has come from it for DISCO_TRUST_MS it is no longer
 *     trusted and the peer falls back to the relay (or to another endpoint
 *     that is still trusted) - within a few seconds of the path breaking.
 *   - Every endpoint is probed every DISCO_PROBE_MS, so a better one (by
 *     DISCO_SWITCH_MARGIN) is taken and a broken path comes back when it
 *     can.
 * A pong counts only for the endpoint its ping went to, with the same
 * transaction id (of the last two pings there), within
 * DISCO_PING_TIMEOUT_MS.
 *
 * disco_peer_route() is what the caller routes packets by. Before any pong
 * it is optimistic, as Tailscale's magicsock: the peer's first netmap
 * endpoint at once (a peer behind no NAT needs nothing more), and the
 * relay as well only when one exists - never the relay alone while the
 * endpoint may work, so a relay that is in the map but unreachable costs
 * nothing. After DISCO_OPTIMISTIC_MS of probing without a pong (a hard
 * NAT), or once a measured path broke, the relay alone when there is one;
 * with no relay, the endpoint stays (there is nothing else). */
#ifndef KNIT_DISCO_PATH_H
#define KNIT_DISCO_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "disco/message.h"

#define DISCO_MAX_CANDIDATES 16
#define DISCO_HEARTBEAT_MS 1500u
#define DISCO_PROBE_MS 5000u
/* Two heartbeats may be lost; a broken path is left within this (plus the
 * caller's tick) of its last pong. */
#define DISCO_TRUST_MS 4000u
/* A ping or call-me-maybe makes an endpoint due again only this long after
 * our last ping to it: two peers answering each other's pings with pings
 * would otherwise never stop (and never let a pong count). */
#define DISCO_REPING_MIN_MS 250u
#define DISCO_PING_TIMEOUT_MS 5000u
/* A new best endpoint must be this much faster (percent) than the current
 * one, so that jitter does not flip the path back and forth. */
#define DISCO_SWITCH_MARGIN 20u
/* How long an unmeasured endpoint is sent to alongside the relay: two
 * probe rounds, then the relay alone (no pong came: it does not work). */
#define DISCO_OPTIMISTIC_MS 10000u

struct disco_candidate {
	struct sockaddr_storage addr;
	uint64_t last_ping, last_pong;
	bool pinged, ponged;
	bool ping_outstanding;
	uint8_t txid[DISCO_TXID_LEN];
	/* The ping before the last one, still answerable: a ping made due
	 * again (the peer pinged us, a call-me-maybe) must not void the pong
	 * already on its way to the previous one. */
	bool prev_outstanding;
	uint8_t prev_txid[DISCO_TXID_LEN];
	uint64_t prev_ping;
	uint32_t latency_ms; /* of the last pong */
};

struct disco_peer {
	struct disco_candidate cand[DISCO_MAX_CANDIDATES];
	size_t ncand;
	int best; /* index into cand, -1: relay */
	bool probing;	    /* a ping went out since init */
	uint64_t probe_since; /* the first one */
};

enum disco_path_kind { DISCO_PATH_RELAY, DISCO_PATH_DIRECT };

struct disco_ping_req {
	struct sockaddr_storage addr;
	uint8_t txid[DISCO_TXID_LEN];
};

void disco_peer_init(struct disco_peer *p);
/* The peer's endpoints as the coordination server reports them: state is
 * kept for addresses already known; others are dropped (unless they are the
 * current best path and still trusted); at most DISCO_MAX_CANDIDATES. */
void disco_peer_set_endpoints(struct disco_peer *p, const struct sockaddr_storage *eps, size_t n,
			      uint64_t now);
/* A call-me-maybe: adds these endpoints and makes them due for a ping now
 * (the peer is pinging us at the same moment: both NATs open), unless one
 * went out within DISCO_REPING_MIN_MS. */
void disco_peer_on_call_me_maybe(struct disco_peer *p, const struct sockaddr_storage *eps, size_t n,
				 uint64_t now);
/* A ping arrived from addr: it is a candidate (and due, to ping back). */
void disco_peer_on_ping(struct disco_peer *p, const struct sockaddr *from, uint64_t now);
/* A pong arrived from addr. True if it answered an outstanding ping to that
 * endpoint; the path may change (see disco_peer_path()). */
bool disco_peer_on_pong(struct disco_peer *p, const uint8_t txid[DISCO_TXID_LEN],
			const struct sockaddr *from, uint64_t now);
/* The pings to send now (fresh transaction ids), at most max. */
size_t disco_peer_pings_due(struct disco_peer *p, uint64_t now, struct disco_ping_req *out, size_t max);
/* Where to send now. For DIRECT, *addr and *latency_ms (may be NULL). */
enum disco_path_kind disco_peer_path(struct disco_peer *p, uint64_t now, struct sockaddr_storage *addr,
				     uint32_t *latency_ms);
/* Where packets to the peer go now (see the top): direct to addr, through
 * the relay, or both (relay and direct with measured false: optimistic).
 * has_relay: the caller can reach the peer's home relay. Neither: no
 * candidate and no relay. */
struct disco_route {
	bool direct, relay;
	bool measured; /* direct on a pong (latency_ms its round trip) */
	struct sockaddr_storage addr;
	uint32_t latency_ms;
};
void disco_peer_route(struct disco_peer *p, uint64_t now, bool has_relay, struct disco_route *out);
/* Milliseconds until disco_peer_pings_due() has something (0: now). */
uint64_t disco_peer_next_due(const struct disco_peer *p, uint64_t now);

#endif
