/* knit-relay's core: accepts relay connections (plain TCP or TLS, through
 * the HTTP upgrade), proves each client's node key, forwards packets
 * between clients by public key, and meshes with the other relays of its
 * region so that clients on different relays reach each other
 * (docs/relay-protocol.md). Runs on one knit event loop; everything here is
 * called from the loop's thread. knit-operator can embed it as is.
 *
 * Memory is bounded per client: each has a send queue capped in bytes
 * (packets that would overflow it are dropped and counted: a slow reader
 * loses its own packets, nobody else's), a frame parser that holds at most
 * one frame, and nothing else that grows with traffic. */
#ifndef KNIT_RELAY_SERVER_H
#define KNIT_RELAY_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct loop;
struct metrics;
struct relay_server;

#define RELAY_QUEUE_BYTES_DEFAULT (256u << 10)
#define RELAY_KEEPALIVE_MS_DEFAULT 60000u
#define RELAY_IDLE_TIMEOUT_MS_DEFAULT 150000u
#define RELAY_HANDSHAKE_TIMEOUT_MS_DEFAULT 10000u
#define RELAY_MAX_CLIENTS_DEFAULT 100000u

struct relay_server_opts {
	/* "[::]:443", "127.0.0.1:0"; ignored when listen_fd >= 0 (a bound,
	 * listening TCP socket the server then owns). */
	const char *listen;
	int listen_fd;
	const uint8_t *private_key; /* 32 bytes, copied */
	/* The region's mesh key (relay_hello_mesh_key()), or NULL: then
	 * no relay may mesh with this one and mesh_with must be empty. */
	const uint8_t *mesh_key;
	/* The other relays of the region: "http://host:port" or
	 * "https://host:port", NULL-terminated (or NULL). */
	const char *const *mesh_with;
	SSL_CTX *tls;	   /* serve TLS with this, or NULL; not owned */
	SSL_CTX *mesh_tls; /* client context for https mesh URLs; not owned */
	size_t queue_bytes;		/* per-client send queue; 0: default */
	uint32_t keepalive_ms;		/* 0: default */
	uint32_t idle_timeout_ms;	/* 0: default */
	uint32_t handshake_timeout_ms;	/* 0: default */
	unsigned max_clients;		/* 0: default */
	struct metrics *metrics;	/* registers knit_relay_* families; may be NULL */
};

struct relay_server_stats {
	uint64_t clients;	 /* authenticated local clients (mesh peers included) */
	uint64_t mesh_peers_up;	 /* outbound mesh connections established */
	uint64_t remote_clients; /* clients known on meshed relays */
	uint64_t queued_bytes;	 /* in all send queues now */
	uint64_t packets_in, packets_out, packets_forwarded;
	uint64_t drops_queue_full, drops_unknown_dest, bad_frames, handshake_failures;
};

/* Binds and starts. Negative errno: -EINVAL (bad options or address),
 * -EADDRINUSE, -ENOMEM. */
int relay_server_new(struct loop *loop, const struct relay_server_opts *o, struct relay_server **out);
/* Closes every connection and frees. NULL is a no-op. */
void relay_server_free(struct relay_server *s);
uint16_t relay_server_port(const struct relay_server *s);
void relay_server_public_key(const struct relay_server *s, uint8_t out[32]);
/* Stops accepting and tells every client the relay is going (a HEALTH
 * frame), flushing what the sockets take at once. */
void relay_server_shutdown(struct relay_server *s);
void relay_server_stats(const struct relay_server *s, struct relay_server_stats *st);

#endif
