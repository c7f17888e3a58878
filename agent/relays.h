/* One identity's relay connections (knit-relay, docs/relay-protocol.md),
 * on the loop with non-blocking sockets (TLS through OpenSSL when the relay
 * map's node says tls): one kept to the identity's home region, where its
 * peers reach it, and others opened on demand to the home regions of peers
 * it sends to, closed after RELAYS_IDLE_MS unused. The protocol itself is
 * lib/relay/client.h's I/O-free core; this moves its bytes.
 *
 * A node given only by hostName is looked up without blocking the loop
 * (getaddrinfo_a, polled every tick, kept 5 min).
 *
 * A connection that fails (refused, closed, silent past the server's
 * keepalive, or not ready within RELAYS_CONNECT_TIMEOUT_MS) is retried with
 * a growing backoff (RELAYS_BACKOFF_MIN_MS doubling to RELAYS_BACKOFF_MAX_MS,
 * reset once ready) on the region's next node: a region's relays mesh, so
 * any of them reaches every client of the region.
 *
 * Packets are bounded everywhere and every drop is counted: the queue from
 * the data path (relays_enqueue(): any thread, RELAYS_QUEUE_PACKETS and
 * RELAYS_QUEUE_BYTES), a connection's unsent bytes (RELAYS_OUT_BYTES), and
 * what waits for a connection to become ready (RELAYS_PENDING_BYTES).
 * Received WireGuard messages go into the hub's receive path
 * (receive_relayed()), disco messages to relays_config.on_disco.
 *
 * Locking: qlock guards the queue; counters are atomics; everything else
 * belongs to the loop thread. */
#ifndef KNIT_AGENT_RELAYS_H
#define KNIT_AGENT_RELAYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "net/endpoint.h"

struct hub;
struct json;
struct loop;
struct relaymap_node;
struct relays;

#define RELAYS_IDLE_MS 60000u
#define RELAYS_CONNECT_TIMEOUT_MS 10000u
#define RELAYS_BACKOFF_MIN_MS 250u
#define RELAYS_BACKOFF_MAX_MS 8000u
#define RELAYS_QUEUE_PACKETS 4096u
#define RELAYS_QUEUE_BYTES (2u << 20)
#define RELAYS_OUT_BYTES (1u << 20)
#define RELAYS_PENDING_BYTES (64u << 10)

struct relays_config {
	struct loop *loop;
	struct hub *hub;
	const uint8_t *node_priv; /* 32 bytes, the identity's node key: copied, wiped on free */
	/* Loop thread: a disco message from the peer with node key src. */
	void (*on_disco)(void *arg, const uint8_t src[32], const uint8_t *pkt, size_t len);
	/* Loop thread: the home region of the peer with this node key (where
	 * packets to it go), 0 if it has none. */
	int (*peer_region)(void *arg, const uint8_t peer[32]);
	void *arg;
	const char *ca_file; /* TLS trust anchors; NULL: the system's */
};

struct relays_stats {
	unsigned long long tx_packets, tx_bytes, rx_packets, rx_bytes;
	unsigned long long drop_queue_full, drop_no_region, drop_not_ready, drop_out_full;
	unsigned long long connects, failures;
	unsigned long long key_refusals; /* relays that proved a key other than the map pins */
};

int relays_new(struct relays **out, const struct relays_config *c);
/* Closes every connection and drops what is queued. NULL: no-op. */
void relays_free(struct relays *r);

/* The relay map (the netmap's "relayMap"; NULL: none). Connections whose
 * region or node is gone are closed. */
void relays_set_map(struct relays *r, const struct json *relay_map);
/* A new node key (login): every connection starts over with it. */
void relays_set_key(struct relays *r, const uint8_t node_priv[32]);
/* The region peers reach this identity at: kept connected. 0: none. */
void relays_set_home(struct relays *r, int region);
int relays_home(const struct relays *r);
/* Whether the map has this region. */
bool relays_has_region(const struct relays *r, int region);
/* The region's code, "" if unknown. */
const char *relays_region_code(const struct relays *r, int region);
/* A ready connection to region exists. */
bool relays_connected(const struct relays *r, int region);

/* engine_config.relay_send (arg: the relays): any thread. Copies the
 * packets onto the queue the loop drains to the peer's home region;
 * returns how many it took. */
size_t relays_enqueue(void *arg, const uint8_t peer[32], const struct iovec *pkts, size_t n);
/* Loop thread: one packet (disco) to peer through region (connecting to
 * it if needed). 0, or -ENOENT (no such region), -ENOBUFS (dropped). */
int relays_send(struct relays *r, int region, const uint8_t peer[32], const void *pkt, size_t len);

void relays_stats(const struct relays *r, struct relays_stats *out);

/* Where to reach a relay map node on port: its ipv4, else its ipv6, else
 * its hostName when that is a numeric address. False if none of them is
 * (a connection then looks hostName up with getaddrinfo_a(), polled on
 * the loop, never blocking it; so does the STUN client, netstun.c). */
bool relays_node_endpoint(const struct relaymap_node *n, uint16_t port, struct endpoint *out);

#endif
