/* A WireGuard engine: one identity of the node, with its own static key,
 * peers, allowed IPs, cookie checker and TUN device, running on a shared
 * hub (hub.h: sockets, threads, receiver-index table). knitd's standalone
 * mode (`knitd wg`) makes one engine and drives it through the UAPI;
 * mesh mode makes one per identity and drives it from the netmap with the
 * same calls, on structs rather than text.
 *
 * Configuration speaks the UAPI's has/replace vocabulary (wg/uapi.h):
 * struct uapi_peer says which of a peer's fields an update touches, so a
 * netmap delta and a full reconcile are both one engine_peer_set() per
 * peer. Reads come back as struct uapi_device / engine_peer_stats.
 *
 * Threads: every function here runs on the hub's loop thread. The engine
 * starts its TUN reader thread; data moves on the hub's threads.
 *
 * Locking: the peer table and list, the identity copy and down_reported
 * belong to the loop thread. tun_write_lock guards writes to the TUN (the
 * device's write-side scratch); the TUN reader thread alone reads it.
 * mtu, dead, tun_down, npeers and the counters are atomics; noise, cookie
 * and allowedips lock themselves. */
#ifndef KNIT_AGENT_WG_ENGINE_H
#define KNIT_AGENT_WG_ENGINE_H

#include <net/if.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "loop.h"
#include "net/tun.h"
#include "wg/allowedips.h"
#include "wg/cookie.h"
#include "wg/hub.h"
#include "wg/messages.h"
#include "wg/uapi.h"
#include "wg/uapi_server.h"

struct noise_local;
struct filter;

struct engine_config {
	const char *ifname; /* the TUN device to create (NULL: the kernel names it) */
	/* listen_port and fwmark from engine_set() move the hub's sockets
	 * (standalone: one engine per hub). Otherwise they are refused
	 * unless they match the hub's. */
	bool owns_port;
	/* Enforce a packet filter on decrypted traffic (lib/policy/filter.h;
	 * mesh mode: the tailnet policy). It starts allow-all. */
	bool filtered;
	/* Loop thread: the TUN device went away (deleted, or failing). */
	void (*on_down)(void *arg, struct engine *e);
	void *arg;
	/* Packets to peers routed through the relay (engine_peer_set_path()):
	 * called on any thread (TUN, receive, crypt workers, the loop) with
	 * sealed WireGuard messages valid only during the call; it copies
	 * what it takes and returns how many of pkts[0..n) it took (the rest
	 * are dropped, counted in tx_dropped). Must not call into the engine.
	 * NULL: no relay (peers are only ever direct). */
	size_t (*relay_send)(void *arg, const uint8_t peer[NOISE_PUBLIC_KEY_LEN], const struct iovec *pkts, size_t n);
	void *relay_arg;
};

struct engine_peer_stats {
	bool has_endpoint;
	struct endpoint endpoint;
	int64_t last_handshake_ns; /* CLOCK_REALTIME, 0: never */
	uint64_t rx_bytes, tx_bytes;
	uint16_t persistent_keepalive;
	unsigned handshake_attempts;
	bool has_session; /* a keypair that may send */
	bool via_relay; /* routed through the relay (engine_peer_set_path()) */
};

struct engine_stats {
	unsigned long long tx_no_route, tx_no_endpoint, tx_dropped; /* staged overflow, queue full, seal failed */
	unsigned long long tx_no_large; /* TUN packets dropped: every large slot stayed in use */
	unsigned long long rx_bad_source, rx_bad_packet, rx_auth_failed, rx_replayed, rx_dropped;
	unsigned long long handshakes_sent, handshakes_received, keepalives_sent;
	/* WireGuard datagram bytes from and to every peer this engine has had,
	 * removed ones included (what wg show's transfer counts, summed). */
	unsigned long long rx_bytes, tx_bytes;
	size_t peers;
	size_t peers_with_session; /* holding a keypair that may send */
	int mtu;
	struct tun_stats tun;
};

struct engine {
	struct hub *hub;
	struct engine *hub_next;
	struct engine_config cfg;
	char ifname[IFNAMSIZ];

	struct tun *tun;
	/* cfg.filtered: the policy on decrypted traffic; NULL: none. Its
	 * rules are swapped on the loop thread, checked by the data path. */
	struct filter *filter;
	pthread_mutex_t tun_write_lock;
	_Atomic int mtu;

	struct noise_local *noise;
	struct cookie_checker cookie;
	struct allowedips aips;
	bool has_private_key;
	uint8_t private_key[NOISE_PUBLIC_KEY_LEN];
	uint8_t public_key[NOISE_PUBLIC_KEY_LEN];

	struct peer **table; /* by public key, chained through peer.hash_next */
	size_t table_size, npeers_live;
	struct peer *peers; /* creation order, peer.list_next */
	atomic_size_t npeers; /* allocated, freed or not yet */
	/* What removed peers had sent and received (loop thread), so the
	 * engine's totals never go down. */
	unsigned long long removed_rx_bytes, removed_tx_bytes;

	pthread_t tun_thread;
	bool tun_thread_started;
	struct hub_qs tun_qs;
	uint64_t large_wait; /* TUN thread: pool_large_wait() */
	int stop_efd;
	atomic_bool dead, tun_down;
	atomic_bool link_up; /* IFF_UP as last seen (engine_link_ready()) */
	bool down_reported;
	struct loop_timer *watch;

	_Atomic unsigned long long st_tx_no_route, st_tx_no_endpoint, st_tx_dropped, st_tx_no_large;
	_Atomic unsigned long long st_rx_bad_source, st_rx_bad_packet, st_rx_auth, st_rx_replay, st_rx_dropped;
	_Atomic unsigned long long st_hs_sent, st_hs_received, st_keepalives;
};

/* Creates the TUN device (vnet headers and offloads when the kernel has
 * them), sets it up, and attaches to hub. Returns 0 or a negative errno. */
int engine_new(struct engine **out, struct hub *hub, const struct engine_config *cfg);
/* Stops the TUN thread, removes every peer (two-phase), detaches, closes
 * the TUN (a device we created goes away), wipes the key. NULL: no-op. */
void engine_free(struct engine *e);
const char *engine_ifname(const struct engine *e);

/* key NULL (or all zero) removes the identity. A peer whose public key is
 * the new identity's own is removed, as wg(8) does. */
int engine_set_private_key(struct engine *e, const uint8_t key[NOISE_PUBLIC_KEY_LEN]);
/* Public key of the identity; false without one. */
bool engine_public_key(const struct engine *e, uint8_t pub[NOISE_PUBLIC_KEY_LEN]);
/* Creates, updates or removes one peer, as p->flags say (UAPI_PEER_*).
 * A peer with the engine's own public key is ignored. -ENOMEM, -EINVAL. */
int engine_peer_set(struct engine *e, const struct uapi_peer *p);
int engine_peer_remove(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN]);
void engine_peers_clear(struct engine *e);
/* A whole UAPI set request, in order. */
int engine_set(struct engine *e, const struct uapi_config *c);
/* The UAPI get snapshot (free with uapi_device_release()). */
int engine_get(struct engine *e, struct uapi_device *out);
/* -ENOENT for an unknown peer. */
int engine_peer_stats(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN], struct engine_peer_stats *out);
void engine_stats(struct engine *e, struct engine_stats *out);

/* Loop thread: finds a live peer by public key (no reference). */
struct peer *engine_peer_lookup(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN]);
/* Loop thread (hub.c): reports a TUN that went away once. */
void engine_check_down(struct engine *e);

/* Loop thread: whether the link is up, looked up again if it was seen
 * down. Nothing is sent while it is down (the Linux module closes its
 * socket then); going down drops sessions and staged packets. */
bool engine_link_ready(struct engine *e);

/* uapi_server ops for one engine (arg: the struct engine). */
extern const struct uapi_ops engine_uapi_ops;

/* Loop thread: starts a handshake with the peer now rather than when its
 * timers would (a restarted node whose peers still hold sessions with its
 * previous process). The usual rate limit applies. -ENOENT: no such peer. */
int engine_peer_handshake(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN]);

/* Loop thread: where packets to the peer go: through the relay
 * (via_relay; engine_config.relay_send), or directly to ep (NULL: the
 * endpoint it holds); via_relay with an ep: through both (a direct path
 * being probed, the relay in case it does not work). WireGuard roaming still updates the endpoint from
 * directly received packets, never from relayed ones (receive_relayed()),
 * and never changes the route. An initiation still unanswered is sent
 * again at once on the new path. -ENOENT: no such peer. */
int engine_peer_set_path(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN], bool via_relay,
			 const struct endpoint *ep);

/* The engine's packet filter (engine_config.filtered), NULL without one. */
struct filter *engine_filter(const struct engine *e);

#endif
