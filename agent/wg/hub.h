/* The node's shared WireGuard machinery: one UDP socket per address
 * family, the receive thread that demultiplexes it, the crypt worker
 * threads, the packet pool, the receiver-index table and the handshake
 * queue. Every engine (one per identity: engine.h) on the node runs on
 * one hub.
 *
 * Demultiplexing the socket (DESIGN.md): a datagram's first bytes say
 * whether it is WireGuard (types 1-4, message_classify()); anything else
 * (disco, STUN) goes to hub_config.other. Data messages find their
 * keypair, peer and engine by receiver index in the shared table;
 * responses and cookie replies by the index of the handshake they answer;
 * initiations by whichever engine's MAC1 key verifies them.
 *
 * Threads: the loop's thread (handshakes, timers, configuration), one
 * receive thread, one TUN thread per engine, and hub_config.workers crypt
 * threads.
 *
 * Locking: hub_socket.send_lock guards that socket's udp for sending (and
 * its swap by hub_set_port(); the receive thread reads the pointer
 * atomically and re-checks it after each quiescent state); hs_lock the handshake queue; work_lock the
 * list of peers waiting for the loop; qs_lock the quiescent-state list.
 * engines, port, fwmark and load belong to the loop thread.
 *
 * Lifetime of shared objects (peers, engines, sockets): reader threads
 * find them without references (allowed-IPs and index lookups) and report
 * quiescent states between batches; removal unlinks, then
 * hub_synchronize() waits until every reader has passed one, and only
 * then drops the table's reference. */
#ifndef KNIT_AGENT_WG_HUB_H
#define KNIT_AGENT_WG_HUB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "net/endpoint.h"
#include "net/udp.h"
#include "wg/cookie.h"
#include "wg/messages.h"
#include "wg/pool.h"
#include "wg/queueing.h"

struct engine;
struct peer;
struct pool;
struct noise_index;
struct ratelimiter;

/* Linux's MAX_QUEUED_INCOMING_HANDSHAKES: under load from an eighth of it. */
#define HUB_HANDSHAKE_QUEUE_MAX 4096
#define HUB_POOL_BUFFERS 8192
/* Large slots (pool.h), for tunnel MTUs above what a small one holds:
 * 16 MB, allocated on first use. */
#define HUB_POOL_LARGE_BUFFERS 256

struct hub_config {
	/* Crypt threads besides the readers; 0 runs every job on the
	 * thread that read its packets. */
	unsigned workers;
	/* Readers also run queued crypt jobs after each batch. */
	bool readers_help;
	uint16_t port; /* 0: the kernel picks */
	size_t handshake_queue_max; /* 0: HUB_HANDSHAKE_QUEUE_MAX */
	/* Queued handshakes from which we are under load (cookies demanded);
	 * 0: an eighth of the queue, as the Linux module. Tests lower it. */
	size_t under_load_at;
	size_t pool_buffers; /* 0: HUB_POOL_BUFFERS */
	size_t pool_large_buffers; /* 0: HUB_POOL_LARGE_BUFFERS */
	/* Datagrams that are not WireGuard (disco, STUN), called on the
	 * receive thread with bytes valid only during the call; NULL drops. */
	void (*other)(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from);
	void *other_arg;
};

struct hub_socket {
	pthread_mutex_t send_lock; /* guards udp for senders */
	struct udp *udp;
};

struct hub_handshake {
	uint8_t msg[MESSAGE_INITIATION_LEN];
	uint16_t len;
	struct endpoint from;
	/* Came through a relay from this node key (from: no address). */
	bool relayed;
	uint8_t relay_src[32];
};

/* A reader thread's quiescent-state slot (0: offline, else the epoch it
 * last saw). */
struct hub_qs {
	_Atomic uint64_t seen;
	struct hub_qs *next; /* guarded by hub.qs_lock */
};

struct hub_stats {
	unsigned long long handshakes_queued, handshakes_dropped, cookie_replies_sent;
	/* Handshakes and cookie replies refused by the per-source limits. */
	unsigned long long handshakes_ratelimited;
	unsigned long long rx_invalid, rx_other, rx_unknown_index;
	struct udp_stats udp[2];
	size_t pool_free, pool_size;
	struct pool_large_stats pool_large;
	/* Datagrams dropped because every large slot stayed in use. */
	unsigned long long rx_no_large;
};

struct hub {
	struct loop *loop;
	struct hub_config cfg;
	struct noise_index *index;
	struct pool *pool;
	struct queueing queue;
	bool queue_ready;

	struct hub_socket sock[2]; /* [0] IPv4, [1] IPv6 */
	uint16_t port; /* loop thread */
	uint32_t fwmark; /* loop thread */

	struct engine *engines; /* loop thread: engine.hub_next */

	pthread_mutex_t hs_lock; /* guards hs_ring, hs_head, hs_count */
	struct hub_handshake *hs_ring;
	size_t hs_head, hs_count, hs_cap;
	struct cookie_load load; /* loop thread */
	/* Loop thread. Under load: cookie replies per source address and
	 * port, and handshakes with a valid cookie per source IP (/64). */
	struct ratelimiter *rl_replies, *rl_handshakes;

	pthread_mutex_t work_lock; /* guards work_head */
	struct peer *work_head;

	int wake_efd; /* on the loop: handshakes, peer work, an engine's TUN gone */
	int stop_efd; /* readable once the hub stops */
	int rx_epfd;
	int route_fd; /* rtnetlink: routes and addresses changed (loop thread) */
	bool route_watched;
	int route_query_fd; /* rtnetlink route lookups (loop thread) */
	uint32_t route_seq;
	pthread_t rx_thread;
	bool rx_started;
	atomic_bool stopping;

	_Atomic uint64_t epoch;
	pthread_mutex_t qs_lock; /* guards the qs list */
	struct hub_qs *qs;
	struct hub_qs rx_qs;
	uint64_t rx_large_wait; /* receive thread: pool_large_wait() */

	_Atomic unsigned long long st_hs_queued, st_hs_dropped, st_hs_limited, st_cookies, st_invalid, st_other, st_unknown;
	_Atomic unsigned long long st_route_changes;
	_Atomic unsigned long long st_rx_no_large;
};

/* Opens the sockets, starts the receive thread and the workers. Call on
 * the loop's thread, before any engine. Returns 0 or a negative errno. */
int hub_new(struct hub **out, struct loop *loop, const struct hub_config *cfg);

/* hub_config.workers for this machine when the user gives none: none on
 * one or two CPUs, where the TUN reader and the UDP receiver (which seal
 * and open what they read) already keep both busy under load and crypt
 * threads only add wakeups (bench/wg: 4.19 against 3.64 Gbit/s with two,
 * medians of six runs); one per CPU above that. */
unsigned hub_default_workers(void);
/* Every engine must have been freed. Stops the threads, closes the
 * sockets. NULL is a no-op. */
void hub_free(struct hub *h);

/* Rebinds both sockets to port (0: a new one the kernel picks). Leaves
 * the old ones in place on failure (-EADDRINUSE, ...). Loop thread. */
int hub_set_port(struct hub *h, uint16_t port);
uint16_t hub_port(const struct hub *h);
/* SO_MARK on both sockets (0 clears). */
int hub_set_fwmark(struct hub *h, uint32_t mark);
uint32_t hub_fwmark(const struct hub *h);
void hub_stats(struct hub *h, struct hub_stats *out);

/* Sends msgs[0..n), all of one address family; waits a little for
 * socket-buffer space rather than dropping. Any thread. Returns how many
 * went out, or a negative errno (-EAFNOSUPPORT: no socket for it). */
int hub_send(struct hub *h, struct udp_msg *msgs, size_t n);
/* One datagram (handshakes, cookie replies, disco). */
int hub_send_one(struct hub *h, const struct endpoint *to, const void *pkt, size_t len);

/* Queues a handshake message for the loop (receive thread). False when
 * the queue is full. Its last quarter is kept for what a flood of made-up
 * initiations cannot send cheaply: messages with a MAC2 (their senders
 * hold a cookie) and cookie replies. */
bool hub_handshake_enqueue(struct hub *h, const uint8_t *msg, size_t len, const struct endpoint *from);
/* The same for one that came through a relay from node key src. */
bool hub_handshake_enqueue_relayed(struct hub *h, const uint8_t *msg, size_t len, const uint8_t src[32]);
/* Loop thread: takes the oldest; *left is how many remain behind it. */
bool hub_handshake_dequeue(struct hub *h, struct hub_handshake *out, size_t *left);
/* Makes the loop look at the handshake queue, peer work and engines. */
void hub_wake(struct hub *h);

/* Reader threads: register a slot, and report quiescent states. */
void hub_qs_register(struct hub *h, struct hub_qs *qs);
void hub_qs_unregister(struct hub *h, struct hub_qs *qs);
static inline void hub_qs_online(struct hub *h, struct hub_qs *qs)
{
	atomic_store(&qs->seen, atomic_load(&h->epoch));
}
static inline void hub_qs_offline(struct hub_qs *qs)
{
	atomic_store(&qs->seen, 0);
}
/* Waits until every reader has passed a quiescent state (or gone
 * offline) since the call: what it found before is no longer in use. Loop
 * thread, no locks held. */
void hub_synchronize(struct hub *h);

/* Engines register themselves (engine.c). Loop thread. */
void hub_attach(struct hub *h, struct engine *e);
/* Loop thread: the interface the kernel would send to ep's address on
 * now (RTM_GETROUTE with the sockets' fwmark), or a negative errno. */
int hub_route_oif(struct hub *h, const struct endpoint *ep);
void hub_detach(struct hub *h, struct engine *e);

#endif
