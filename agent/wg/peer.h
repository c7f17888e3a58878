/* A WireGuard peer of one engine: its Noise remote, cookie maker, timer
 * state, allowed-IPs membership, endpoint, staged packets and the two
 * serial queues of crypt jobs (queueing.h).
 *
 * Lifetime: refcounted. The engine's tables hold one reference; every
 * job, every pending piece of loop work and every flush in progress holds
 * another. Removal is two-phase (engine.c): peer_kill() marks it dead,
 * stops its timers and drops its keys and staged packets; the engine
 * unlinks it from its tables, hub_synchronize() lets readers that found it
 * by lookup finish, then the table reference goes. The last peer_put()
 * frees it, on whichever thread that happens.
 *
 * Locking (order: tx_lock, then endpoint_lock; rx_lock alone):
 *  - endpoint_lock: endpoint, has_endpoint, via_relay, also_direct, rejected, has_rejected.
 *  - tx_lock: staged ring, tx queue (txq but its flushing flag).
 *  - rx_lock: rx queue (rxq but its flushing flag).
 *  - hub.work_lock: work_next.
 *  - loop thread only: hash_next, list links, timer, persistent_keepalive.
 *  - atomics: refcount, dead, work, the flushing flags, counters,
 *    last_handshake_ns, timer_armed.
 *  - timers, cookie and remote lock themselves. */
#ifndef KNIT_AGENT_WG_PEER_H
#define KNIT_AGENT_WG_PEER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "loop.h"
#include "net/endpoint.h"
#include "wg/allowedips.h"
#include "wg/cookie.h"
#include "wg/messages.h"
#include "wg/queueing.h"
#include "wg/timers.h"

struct engine;
struct hub;
struct noise_remote;

/* A serial queue of crypt jobs, one direction of one peer, in arrival
 * order; guarded by the peer's lock for that direction (tx_lock, rx_lock),
 * but flushing, which is atomic. */
struct peer_queue {
	struct job *head, *tail;
	unsigned jobs;
	atomic_bool flushing;
};

#define PEER_STAGED_MAX 128 /* Linux's MAX_STAGED_PACKETS */
#define PEER_STAGED_RING 512 /* staged plus one TUN batch */
#define PEER_QUEUE_JOBS_MAX 256 /* jobs in flight per direction */

/* Plaintext waiting for a session or a job, oldest at staged_head. */
struct peer_staged {
	uint8_t *buf[PEER_STAGED_RING];
	uint32_t len[PEER_STAGED_RING];
};

enum peer_work {
	PEER_WORK_HANDSHAKE = 1u << 0, /* send an initiation (not a retry) */
	PEER_WORK_REARM = 1u << 1, /* a timer deadline moved earlier */
	PEER_WORK_CHECK_SRC = 1u << 2, /* a new source address to check */
};

struct peer {
	struct engine *engine;
	struct noise_remote *remote;
	struct cookie_maker cookie;
	struct timers timers;
	struct allowedips_peer aip;
	uint8_t public_key[NOISE_PUBLIC_KEY_LEN];
	atomic_uint refcount;
	atomic_bool dead;

	struct peer *hash_next, *list_next, *list_prev;
	struct loop_timer *timer;
	uint16_t persistent_keepalive;
	_Atomic uint64_t timer_armed; /* the loop timer's deadline, TIMERS_OFF */

	pthread_mutex_t endpoint_lock;
	struct endpoint endpoint;
	bool has_endpoint;
	/* Sent through the relay (engine_config.relay_send) rather than to
	 * endpoint, which is kept (it roams) for when the path is direct
	 * again. Set by whoever selects paths (engine_peer_set_path()). */
	bool via_relay;
	/* With via_relay: to endpoint as well (a path being probed). */
	bool also_direct;
	/* A source the route to the peer does not leave from (until routes
	 * change): learnt again from the peer's packets, it is not used. */
	struct endpoint rejected;
	bool has_rejected;

	pthread_mutex_t tx_lock;
	/* Allocated at the first packet to stage: most of a pod identity's
	 * peers never see one, and the ring is 6 KB. */
	struct peer_staged *staged;
	size_t staged_head, staged_count;
	struct peer_queue txq;

	pthread_mutex_t rx_lock;
	struct peer_queue rxq;

	_Atomic uint64_t rx_bytes, tx_bytes;
	_Atomic int64_t last_handshake_ns; /* CLOCK_REALTIME, 0: never */

	atomic_uint work;
	struct peer *work_next;
};

/* Loop thread. A new peer with one reference (the caller's), or NULL on
 * ENOMEM. It is counted in the engine until freed. */
struct peer *peer_new(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN]);
struct peer *peer_get(struct peer *p);
void peer_put(struct peer *p);
/* Loop thread: phase one of removal (see above). */
void peer_kill(struct peer *p);

/* Roaming: the latest authenticated source. An endpoint with no address
 * (AF_UNSPEC: the packet came through the relay) changes nothing, so one
 * relayed packet never moves a peer off a working direct path. */
void peer_set_endpoint(struct peer *p, const struct endpoint *ep);
/* Copies the endpoint; false if there is none. */
bool peer_endpoint(struct peer *p, struct endpoint *out);

enum peer_route {
	PEER_ROUTE_NONE,   /* no endpoint, not relayed: packets go nowhere */
	PEER_ROUTE_DIRECT, /* *out: the endpoint */
	PEER_ROUTE_RELAY,  /* engine_config.relay_send */
	PEER_ROUTE_BOTH,   /* the relay and *out (an endpoint being probed) */
};
/* Where a packet to p goes now. */
enum peer_route peer_route(struct peer *p, struct endpoint *out);
/* Direct to ep (NULL: the endpoint held), or through the relay; both
 * with via_relay and an ep. */
void peer_set_route(struct peer *p, bool via_relay, const struct endpoint *ep);
/* Any thread: sends one message (handshakes, keepalive-size control)
 * along p's route. True if it left. */
bool peer_send_one(struct peer *p, const void *pkt, size_t len);
void peer_clear_endpoint_src(struct peer *p);
/* Loop thread: drops the cached source address if the route to the peer
 * no longer leaves through the interface it was learnt on (after
 * routes_changed, the sources rejected so far are tried again). */
void peer_check_src(struct peer *p, bool routes_changed);

/* Any thread: asks the loop to do work (enum peer_work) for p soon. */
void peer_schedule(struct peer *p, unsigned work);
/* Loop thread: does the scheduled work of every peer of the hub. */
void peer_run_scheduled(struct hub *h);
/* Any thread, after timers_on_*(): re-arms the loop timer if the next
 * deadline moved earlier. */
void peer_timers_changed(struct peer *p);
/* Loop thread: arms the loop timer for the next deadline. */
void peer_timers_arm(struct peer *p);
/* Loop thread: seconds, 0 off; sends a keepalive when it was just enabled. */
void peer_set_persistent_keepalive(struct peer *p, uint16_t interval);

/* Any thread, after a job of p finished: takes the done jobs at the head
 * of the queue for dir (JOB_TX, JOB_RX) in order, hands them on
 * (send_transmit(), receive_deliver()) and releases them. A flag makes
 * that one thread at a time, and the re-check after clearing it catches a
 * job finished meanwhile by a thread that saw the flag set. */
void peer_flush(struct peer *p, enum job_dir dir);

/* Drops a job: its buffers back to the pool, its keypair and peer
 * references, the job itself. */
void peer_release_job(struct job *j);

#endif
