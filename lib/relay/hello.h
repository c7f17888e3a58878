/* The relay's handshake (docs/relay-protocol.md, "Proof of key"): the
 * server sends its public key and a fresh challenge; the client answers
 * with its node public key and a NaCl box (X25519 + XSalsa20-Poly1305,
 * libsodium's crypto_box) from its node private key to the server's key,
 * holding the challenge; the server accepts by sending a box back holding
 * the client's nonce. Opening the client's box proves the client holds the
 * private key of the node key it claims (or the server's), and the
 * challenge makes an old answer useless; opening the server's proves the
 * server holds the key the client expected, and the nonce makes it fresh.
 *
 * A relay that meshes with others connects to them as a client flagged
 * "mesh" and adds an HMAC of the challenge under the region's shared mesh
 * key, so the key itself never crosses the wire (a relay impersonating a
 * mesh peer learns nothing it can reuse). Pure: no I/O. */
#ifndef KNIT_RELAY_HELLO_H
#define KNIT_RELAY_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "relay/frame.h"

#define RELAY_PROTOCOL_VERSION 1
#define RELAY_CHALLENGE_LEN 32
#define RELAY_NONCE_LEN 24
#define RELAY_MESH_KEY_LEN 32

#define RELAY_HELLO_MESH 0x01u /* CLIENT_INFO flag: a relay of the same region */

/* What SERVER_INFO tells the client. */
struct relay_server_info {
	uint8_t version;
	uint32_t keepalive_ms; /* the server sends a frame at least this often */
	uint32_t max_packet;   /* largest packet it relays */
	uint32_t queue_bytes;  /* its per-client queue cap */
};

/* A client's accepted CLIENT_INFO. */
struct relay_client_info {
	uint8_t key[RELAY_KEY_LEN];
	uint8_t nonce[RELAY_NONCE_LEN];
	uint8_t version;
	bool mesh; /* flagged mesh and the mesh proof verified */
};

/* Derives the 32-byte mesh key from the region's shared secret (any bytes,
 * e.g. the contents of --mesh-key-file). */
void relay_hello_mesh_key(uint8_t out[RELAY_MESH_KEY_LEN], const void *secret, size_t len);

/* Server: appends SERVER_KEY with a fresh challenge (written to
 * challenge, which the server keeps until CLIENT_INFO arrives). */
int relay_hello_server_key(struct buf *out, const uint8_t server_pub[RELAY_KEY_LEN],
			   uint8_t challenge[RELAY_CHALLENGE_LEN]);

/* Client: from the server's SERVER_KEY (decoded), appends CLIENT_INFO.
 * expect_server may be NULL (take any server key; it is still checked
 * against SERVER_INFO's box); otherwise a different key is -EPERM.
 * mesh_key NULL for an ordinary client. *nonce_out receives the box nonce
 * to check SERVER_INFO against. */
int relay_hello_client_info(struct buf *out, const struct relay_msg *server_key,
			    const uint8_t *expect_server, const uint8_t client_pub[RELAY_KEY_LEN],
			    const uint8_t client_priv[RELAY_KEY_LEN], const uint8_t *mesh_key,
			    uint8_t nonce_out[RELAY_NONCE_LEN]);

/* Server: verifies CLIENT_INFO (decoded) against the challenge it sent.
 * mesh_key NULL if this server has none (then a mesh claim is refused).
 * False with the reason in err: the box does not open (the client does
 * not hold the key), the challenge differs, or a mesh claim fails. */
bool relay_hello_verify_client(const struct relay_msg *ci, const uint8_t server_priv[RELAY_KEY_LEN],
			       const uint8_t server_pub[RELAY_KEY_LEN],
			       const uint8_t challenge[RELAY_CHALLENGE_LEN], const uint8_t *mesh_key,
			       struct relay_client_info *out, char *err, size_t errlen);

/* Server: appends SERVER_INFO for an accepted client. */
int relay_hello_server_info(struct buf *out, const uint8_t server_priv[RELAY_KEY_LEN],
			    const struct relay_client_info *ci, const struct relay_server_info *info);

/* Client: opens SERVER_INFO (decoded) from server_pub; the box must hold
 * the nonce the client's CLIENT_INFO used. */
bool relay_hello_open_server_info(const struct relay_msg *si, const uint8_t server_pub[RELAY_KEY_LEN],
				  const uint8_t client_priv[RELAY_KEY_LEN],
				  const uint8_t nonce[RELAY_NONCE_LEN], struct relay_server_info *out,
				  char *err, size_t errlen);

#endif
