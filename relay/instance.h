/* A whole relay as knit-relay runs it, set up from flags and files: the
 * relay key (loaded, made when missing, or a fresh one in memory), the
 * region's mesh secret and peer list, the TLS contexts, the relay server
 * (server.h) and its STUN server (stunserver.h), on one event loop.
 * knit-relay's main and knit-operator's --relay-* flags both start one, so
 * the embedded relay is the same relay, flag for flag. Loop thread only. */
#ifndef KNIT_RELAY_INSTANCE_H
#define KNIT_RELAY_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct metrics;
struct relay_instance;
struct relay_server;

#define RELAY_INSTANCE_MAX_MESH 64

struct relay_instance_opts {
	/* Relay connections; NULL: [::]:443 with TLS, [::]:80 without. */
	const char *listen;
	/* The relay's private key (base64, as `wg genkey`), made with mode
	 * 0600 when missing. NULL: a fresh key in memory for this run (so no
	 * relay map can pin it: clients pin a key only when the map names
	 * one, relaymap.h's publicKey). */
	const char *key_file;
	const char *tls_cert, *tls_key; /* PEM; both or neither */
	/* "http://h:p,https://h:p": the region's other relays; needs
	 * mesh_key_file. mesh_ca verifies https ones (NULL: the system's). */
	const char *mesh_with, *mesh_key_file, *mesh_ca;
	const char *stun_addr; /* NULL: "::" (dual-stack) */
	uint16_t stun_port;    /* 0: no STUN server */
	size_t queue_bytes;    /* 0: the server's defaults, as below */
	uint32_t keepalive_ms, idle_timeout_ms;
	unsigned max_clients;
	struct metrics *metrics; /* knit_relay_* families; may be NULL */
};

/* Checks the options that need no I/O (tls pair, mesh needs a key, at
 * most RELAY_INSTANCE_MAX_MESH peers); false with a message in err. */
bool relay_instance_opts_check(const struct relay_instance_opts *o, char *err, size_t errlen);

/* Loads everything and starts serving. Negative errno, with what failed
 * in err: -EINVAL (a bad key, certificate or option), -EADDRINUSE, a file's
 * errno, -ENOMEM. */
int relay_instance_new(struct loop *loop, const struct relay_instance_opts *o, struct relay_instance **out,
		       char *err, size_t errlen);
/* Stops accepting and tells every client the relay is going. */
void relay_instance_shutdown(struct relay_instance *r);
/* NULL is a no-op. */
void relay_instance_free(struct relay_instance *r);

struct relay_server *relay_instance_server(const struct relay_instance *r);
uint16_t relay_instance_port(const struct relay_instance *r);
uint16_t relay_instance_stun_port(const struct relay_instance *r); /* 0: none */
const char *relay_instance_listen(const struct relay_instance *r);
/* The relay's public key, base64. */
const char *relay_instance_public_key(const struct relay_instance *r);
/* The same as a relay map pins it: "relaykey:<64 hex>". */
const char *relay_instance_key_text(const struct relay_instance *r);
size_t relay_instance_mesh_peers(const struct relay_instance *r);
bool relay_instance_tls(const struct relay_instance *r);

/* Reads a base64 private key from path; makes one (mode 0600) when the
 * file is missing. Negative errno; -EINVAL for a file that holds no key. */
int relay_key_load(const char *path, uint8_t priv[32]);

#endif
