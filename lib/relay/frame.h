/* The relay's wire format (docs/relay-protocol.md): after the HTTP upgrade,
 * both directions are a stream of frames, each a 1-byte type, a 4-byte
 * big-endian body length and the body. Pure: bytes in, frames out, from
 * reads split anywhere; encoders write into caller buffers.
 *
 * A frame's body is capped (RELAY_MAX_FRAME): a header announcing more is
 * refused before any of the body is buffered. Unknown types parse as
 * frames (so later versions can add some) and are ignored by both ends;
 * a known type whose body has the wrong shape fails relay_frame_decode(). */
#ifndef KNIT_RELAY_FRAME_H
#define KNIT_RELAY_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define RELAY_KEY_LEN 32
#define RELAY_FRAME_HDR 5
/* Largest packet a client may send or receive (a WireGuard message over a
 * 64 KiB GSO batch would not fit; WireGuard packets are MTU-sized). */
#define RELAY_MAX_PACKET 65535u
/* Largest body: FORWARD_PACKET's two keys + the largest packet. */
#define RELAY_MAX_FRAME (2 * RELAY_KEY_LEN + RELAY_MAX_PACKET)
#define RELAY_MAX_HEALTH 1024u
#define RELAY_PING_LEN 8

enum relay_frame_type {
	RELAY_FRAME_SERVER_KEY = 0x01,	   /* server -> client, first frame */
	RELAY_FRAME_CLIENT_INFO = 0x02,	   /* client -> server, proof of key */
	RELAY_FRAME_SERVER_INFO = 0x03,	   /* server -> client, accepted */
	RELAY_FRAME_SEND_PACKET = 0x04,	   /* client -> server: dst key, packet */
	RELAY_FRAME_RECV_PACKET = 0x05,	   /* server -> client: src key, packet */
	RELAY_FRAME_KEEPALIVE = 0x06,	   /* either way, empty */
	RELAY_FRAME_PING = 0x07,	   /* either way, 8 bytes, answered by PONG */
	RELAY_FRAME_PONG = 0x08,
	RELAY_FRAME_PEER_GONE = 0x09,	   /* server -> client: key, reason */
	RELAY_FRAME_PEER_PRESENT = 0x0a,   /* server -> mesh peer: key */
	RELAY_FRAME_HEALTH = 0x0b,	   /* server -> client: "" = healthy, else why not */
	RELAY_FRAME_WATCH_CONNS = 0x0c,	   /* mesh peer -> server, empty */
	RELAY_FRAME_FORWARD_PACKET = 0x0d, /* mesh peer -> server: src, dst, packet */
};

enum relay_peer_gone_reason {
	RELAY_GONE_DISCONNECTED = 0, /* was here, left */
	RELAY_GONE_NOT_HERE = 1,     /* a packet was sent to a key no relay has */
};

/* A frame as parsed: body points into the parser or the caller's input. */
struct relay_frame {
	uint8_t type;
	const uint8_t *body;
	size_t len;
};

/* A frame's fields, pointing into its body. Which are set depends on type
 * (docs/relay-protocol.md has the table). */
struct relay_msg {
	uint8_t type;
	const uint8_t *key;  /* SERVER_KEY: server; CLIENT_INFO: client; SEND: dst;
				RECV/FORWARD: src; PEER_*: the peer */
	const uint8_t *dst;  /* FORWARD_PACKET */
	const uint8_t *challenge; /* SERVER_KEY */
	const uint8_t *nonce;	  /* CLIENT_INFO, SERVER_INFO */
	const uint8_t *box;	  /* CLIENT_INFO, SERVER_INFO */
	size_t box_len;
	const uint8_t *data; /* SEND/RECV/FORWARD: packet; PING/PONG: 8 bytes; HEALTH: text */
	size_t data_len;
	uint8_t reason; /* PEER_GONE */
};

struct relay_parser {
	uint8_t hdr[RELAY_FRAME_HDR];
	size_t hdr_have;
	uint8_t type;
	size_t need; /* body bytes of the frame being assembled */
	struct buf body;
	size_t max_frame;
	bool failed;
	char error[96];
};

/* max_frame caps each body (0: RELAY_MAX_FRAME). Allocates nothing until
 * a frame arrives split across feeds. */
void relay_parser_init(struct relay_parser *p, size_t max_frame);
void relay_parser_free(struct relay_parser *p);
/* Takes bytes from *data (advancing it and *len) up to the end of one
 * frame. Returns 1 and sets *f when a frame is complete: f->body is valid
 * until the next call and, if the frame lay whole in the input, as long as
 * the input is (no copy is made then). Returns 0 when the input is used up
 * without completing a frame; -EMSGSIZE for a body over the cap, -ENOMEM;
 * after an error every call fails the same way (the reason in p->error). */
int relay_parser_next(struct relay_parser *p, const uint8_t **data, size_t *len,
		      struct relay_frame *f);
/* True between frames (nothing partial held). */
bool relay_parser_idle(const struct relay_parser *p);

/* Checks a frame's body against its type's shape and fills m. False with
 * the reason in err for a malformed known frame; true (m->type set, the
 * rest empty) for an unknown type, which callers ignore. */
bool relay_frame_decode(const struct relay_frame *f, struct relay_msg *m, char *err, size_t errlen);

/* Writes the 5-byte header for a body of len bytes. */
void relay_frame_header(uint8_t out[RELAY_FRAME_HDR], uint8_t type, size_t len);
/* Appends a whole frame: header, then the parts (NULL parts with length
 * 0 are skipped). Returns 0, -EMSGSIZE if the body is over RELAY_MAX_FRAME,
 * or buf's errors (the buffer is then empty, as buf_add() leaves it). */
int relay_frame_append(struct buf *out, uint8_t type, const void *a, size_t alen, const void *b,
		       size_t blen, const void *c, size_t clen);

/* Typed encoders onto relay_frame_append(). */
int relay_frame_send_packet(struct buf *out, const uint8_t dst[RELAY_KEY_LEN], const void *pkt,
			    size_t len);
int relay_frame_recv_packet(struct buf *out, const uint8_t src[RELAY_KEY_LEN], const void *pkt,
			    size_t len);
int relay_frame_forward_packet(struct buf *out, const uint8_t src[RELAY_KEY_LEN],
			       const uint8_t dst[RELAY_KEY_LEN], const void *pkt, size_t len);
int relay_frame_peer_gone(struct buf *out, const uint8_t key[RELAY_KEY_LEN], uint8_t reason);
int relay_frame_peer_present(struct buf *out, const uint8_t key[RELAY_KEY_LEN]);
int relay_frame_ping(struct buf *out, uint8_t type, const uint8_t data[RELAY_PING_LEN]);
int relay_frame_health(struct buf *out, const char *problem);
/* KEEPALIVE, WATCH_CONNS: empty bodies. */
int relay_frame_empty(struct buf *out, uint8_t type);

/* Key as lowercase hex for logs (65 bytes with the NUL); returns out. */
char *relay_key_hex(const uint8_t key[RELAY_KEY_LEN], char out[2 * RELAY_KEY_LEN + 1]);
/* "relaykey:<64 hex>": a relay's key as a relay map's publicKey names it
 * (lib/control/relaymap.h). */
#define RELAY_KEY_TEXT_PREFIX "relaykey:"
#define RELAY_KEY_TEXT_LEN (sizeof(RELAY_KEY_TEXT_PREFIX) + 2 * RELAY_KEY_LEN)
char *relay_key_text(const uint8_t key[RELAY_KEY_LEN], char out[RELAY_KEY_TEXT_LEN]);
/* Parses 64 hex digits or base64 (44 characters, WireGuard's form). */
bool relay_key_parse(const char *s, uint8_t key[RELAY_KEY_LEN]);

#endif
