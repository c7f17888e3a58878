/* The client side of a relay connection as a pure core: the caller moves
 * bytes (a blocking socket, TLS, knitd's event loop); this turns what the
 * relay sent into events and what the caller wants into bytes to write.
 *
 *   relay_client_init(&c, pub, priv, server_pub_or_NULL, &cb, arg);
 *   relay_client_start(&c, "relay.example", &out);   -> write out
 *   relay_client_feed(&c, bytes_read, n, &out);      -> write out, events fire
 *   ... once relay_client_ready(&c):
 *   relay_client_send(&c, dst_key, pkt, len, &out);  -> write out
 *
 * Callbacks run inside relay_client_feed(); their pointers are valid only
 * during the call. */
#ifndef KNIT_RELAY_CLIENT_H
#define KNIT_RELAY_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "relay/frame.h"
#include "relay/hello.h"

struct relay_client_cb {
	void (*ready)(const struct relay_server_info *info, void *arg);
	void (*packet)(const uint8_t src[RELAY_KEY_LEN], const uint8_t *data, size_t len, void *arg);
	void (*peer_gone)(const uint8_t key[RELAY_KEY_LEN], uint8_t reason, void *arg);
	/* problem is "" when the relay is healthy (not NUL-terminated: len). */
	void (*health)(const char *problem, size_t len, void *arg);
	void (*pong)(const uint8_t data[RELAY_PING_LEN], void *arg);
};

enum relay_client_state {
	RELAY_CLIENT_IDLE,
	RELAY_CLIENT_UPGRADING, /* request written, waiting for the 101 */
	RELAY_CLIENT_HELLO,	/* waiting for SERVER_KEY, then SERVER_INFO */
	RELAY_CLIENT_READY,
	RELAY_CLIENT_FAILED,
};

struct relay_client {
	enum relay_client_state state;
	uint8_t pub[RELAY_KEY_LEN], priv[RELAY_KEY_LEN];
	uint8_t server[RELAY_KEY_LEN];
	bool pin_server; /* server was given: refuse any other */
	bool have_server;
	bool wrong_key; /* failed: the relay's key is not the pinned one */
	uint8_t nonce[RELAY_NONCE_LEN];
	struct buf head;
	struct relay_parser parser;
	const struct relay_client_cb *cb;
	void *arg;
	struct relay_server_info info;
	char error[160];
};

/* Copies the keys (priv is wiped by relay_client_free()). server_pub NULL
 * accepts whatever key the relay proves it holds. */
void relay_client_init(struct relay_client *c, const uint8_t pub[RELAY_KEY_LEN],
		       const uint8_t priv[RELAY_KEY_LEN], const uint8_t *server_pub,
		       const struct relay_client_cb *cb, void *arg);
void relay_client_free(struct relay_client *c);
/* Appends the upgrade request for host to out. */
int relay_client_start(struct relay_client *c, const char *host, struct buf *out);
/* Takes bytes from the relay; appends any reply to out. Returns 0, or a
 * negative errno once the connection must be dropped (-EPROTO with the
 * reason in c->error, and c->wrong_key set when the relay announced
 * another key than the pinned one; every later call fails the same way). */
int relay_client_feed(struct relay_client *c, const uint8_t *p, size_t n, struct buf *out);
bool relay_client_ready(const struct relay_client *c);
/* Appends a SEND_PACKET (-ENOTCONN before ready), a KEEPALIVE, a PING. */
int relay_client_send(struct relay_client *c, const uint8_t dst[RELAY_KEY_LEN], const void *pkt,
		      size_t len, struct buf *out);
int relay_client_keepalive(struct relay_client *c, struct buf *out);
int relay_client_ping(struct relay_client *c, const uint8_t data[RELAY_PING_LEN], struct buf *out);

#endif
