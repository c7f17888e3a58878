/* Disco messages: what knitd's peers say to each other to find and keep a
 * direct path (ping, pong with the address the ping came from, call-me-
 * maybe with the sender's endpoints), sealed with NaCl box between the two
 * nodes' disco keys. Sent directly over the node's UDP socket and through
 * the relay. Pure: bytes in, structs out.
 *
 * Wire (all on one UDP socket, so the first bytes must set it apart:
 * WireGuard starts with a type 1-4 and three zero bytes, STUN with two zero
 * bits and its magic cookie at byte 4; the disco magic is neither):
 *
 *   "KNTDSC" (6) | sender disco public key (32) | nonce (24) | box
 *   box = crypto_box(plain, nonce, recipient disco key, sender disco private key)
 *   plain = type (1) | version (1) | body
 *     PING           txid (12) | sender node key (32)
 *     PONG           txid (12) | observed source: IPv6 or v4-mapped (16), port (2)
 *     CALL_ME_MAYBE  n x (address (16), port (2)), n <= DISCO_MAX_ENDPOINTS
 *
 * Parsers refuse lengths that do not match the type exactly (trailing bytes
 * after a version-1 body are allowed, for later versions). */
#ifndef KNIT_DISCO_MESSAGE_H
#define KNIT_DISCO_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DISCO_MAGIC "KNTDSC"
#define DISCO_MAGIC_LEN 6
#define DISCO_KEY_LEN 32
#define DISCO_NONCE_LEN 24
#define DISCO_TXID_LEN 12
#define DISCO_HEADER_LEN (DISCO_MAGIC_LEN + DISCO_KEY_LEN + DISCO_NONCE_LEN)
#define DISCO_BOX_OVERHEAD 16
#define DISCO_MAX_ENDPOINTS 32
#define DISCO_VERSION 1
/* Largest plaintext and sealed message. */
#define DISCO_MAX_PLAIN (2 + DISCO_MAX_ENDPOINTS * 18)
#define DISCO_MAX_SEALED (DISCO_HEADER_LEN + DISCO_BOX_OVERHEAD + DISCO_MAX_PLAIN)

enum disco_type {
	DISCO_PING = 0x01,
	DISCO_PONG = 0x02,
	DISCO_CALL_ME_MAYBE = 0x03,
};

struct disco_msg {
	uint8_t type;
	uint8_t txid[DISCO_TXID_LEN];		/* PING, PONG */
	uint8_t node_key[DISCO_KEY_LEN];	/* PING */
	struct sockaddr_storage src;		/* PONG: where the ping came from */
	struct sockaddr_storage eps[DISCO_MAX_ENDPOINTS]; /* CALL_ME_MAYBE */
	size_t neps;
};

/* True if p starts like a sealed disco message (magic, long enough): the
 * socket demultiplexer's test. */
bool disco_is(const uint8_t *p, size_t len);

/* The plaintext of m into out (cap bytes). Returns its length, or 0 if it
 * does not fit, the type is unknown, or an address is neither IPv4 nor
 * IPv6. */
size_t disco_msg_encode(const struct disco_msg *m, uint8_t *out, size_t cap);
/* Parses a plaintext. False with the reason in err (NULL allowed). */
bool disco_msg_parse(const uint8_t *p, size_t len, struct disco_msg *m, char *err, size_t errlen);

/* Seals m from (sender_pub, sender_priv) to recipient_pub into out.
 * Returns the length, or 0 (too small a buffer, bad message, or a
 * recipient key crypto_box refuses). */
size_t disco_seal(const struct disco_msg *m, const uint8_t sender_pub[DISCO_KEY_LEN],
		  const uint8_t sender_priv[DISCO_KEY_LEN], const uint8_t recipient_pub[DISCO_KEY_LEN],
		  uint8_t *out, size_t cap);
/* The sender's disco key of a sealed message (points into p), or NULL if
 * p is not one: the caller checks it is a peer's before opening. */
const uint8_t *disco_sender(const uint8_t *p, size_t len);
/* Opens a sealed message addressed to my_priv. False if it is not one,
 * does not open (forged, corrupted, not for us) or does not parse. */
bool disco_open(const uint8_t *p, size_t len, const uint8_t my_priv[DISCO_KEY_LEN],
		struct disco_msg *m, char *err, size_t errlen);

/* The same with the pair's precomputed key (disco_shared(): one X25519
 * per peer rather than per message), as knitd's identities do: every
 * identity that knows a sender tries to open its datagrams. */
#define DISCO_SHARED_LEN 32
/* False if peer_pub is a key crypto_box refuses. Wipe out when done. */
bool disco_shared(uint8_t out[DISCO_SHARED_LEN], const uint8_t peer_pub[DISCO_KEY_LEN],
		  const uint8_t my_priv[DISCO_KEY_LEN]);
size_t disco_seal_shared(const struct disco_msg *m, const uint8_t sender_pub[DISCO_KEY_LEN],
			 const uint8_t shared[DISCO_SHARED_LEN], uint8_t *out, size_t cap);
bool disco_open_shared(const uint8_t *p, size_t len, const uint8_t shared[DISCO_SHARED_LEN],
		       struct disco_msg *m, char *err, size_t errlen);

#endif
