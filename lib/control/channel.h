/* The control channel's cryptography (docs/control-protocol.md): a Noise IK
 * handshake that authenticates both ends by their static X25519 keys, and
 * sealed frames with per-direction counters and a replay window. Pure: no
 * I/O, no clock (the caller passes the TAI64N timestamp). */
#ifndef KNIT_CONTROL_CHANNEL_H
#define KNIT_CONTROL_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wg/replay.h"

struct buf;

#define CHANNEL_KEY_LEN 32
#define CHANNEL_TAI64N_LEN 12
#define CHANNEL_MSG1_LEN 109
#define CHANNEL_MSG2_LEN 57
#define CHANNEL_HEADER_LEN 16 /* session id + counter */
#define CHANNEL_OVERHEAD (CHANNEL_HEADER_LEN + 16)

/* One established end. Not thread-safe: its owner serialises use. */
struct channel_session {
	uint64_t id;
	uint8_t peer_static[CHANNEL_KEY_LEN]; /* server: the agent's machine key; agent: the control key */
	uint8_t send_key[CHANNEL_KEY_LEN];
	uint8_t recv_key[CHANNEL_KEY_LEN];
	uint64_t send_counter;
	struct replay recv_window;
};

/* The agent's state between message 1 and message 2. */
struct channel_initiator {
	uint8_t h[32], ck[32];
	uint8_t e_priv[CHANNEL_KEY_LEN], e_pub[CHANNEL_KEY_LEN];
	uint8_t s_priv[CHANNEL_KEY_LEN];
	uint8_t server_pub[CHANNEL_KEY_LEN];
};

/* Agent: writes message 1 (e, es, s, ss, {timestamp}). -EINVAL for a
 * degenerate key (all-zero shared secret). */
int channel_initiate(struct channel_initiator *st, const uint8_t machine_priv[CHANNEL_KEY_LEN],
		     const uint8_t server_pub[CHANNEL_KEY_LEN], const uint8_t tai64n[CHANNEL_TAI64N_LEN],
		     uint8_t msg1[CHANNEL_MSG1_LEN]);
/* Agent: consumes message 2 (e, ee, se, {session id}) and derives the
 * session. -EBADMSG for anything that does not authenticate. st is wiped
 * either way. */
int channel_finish(struct channel_initiator *st, const uint8_t *msg2, size_t len, struct channel_session *out);

/* Server: consumes message 1 and answers with message 2 for session_id.
 * On success *out is the session (peer_static = the agent's machine key)
 * and tai64n the agent's timestamp, which the caller must check is newer
 * than the last accepted from that key. -EBADMSG if it does not
 * authenticate. */
int channel_respond(const uint8_t server_priv[CHANNEL_KEY_LEN], const uint8_t *msg1, size_t len,
		    uint64_t session_id, uint8_t msg2[CHANNEL_MSG2_LEN], struct channel_session *out,
		    uint8_t tai64n[CHANNEL_TAI64N_LEN]);

/* Appends a sealed frame of plain to out. -ENOSPC/-ENOMEM from out,
 * -EOVERFLOW when the counter is exhausted (re-handshake). */
int channel_seal(struct channel_session *s, const void *plain, size_t len, struct buf *out);
/* Opens a frame into out (appended). -EBADMSG: malformed or another
 * session's; -EKEYREJECTED: does not authenticate; -EALREADY: replayed or
 * too old. Nothing is appended on error. */
int channel_open(struct channel_session *s, const void *frame, size_t len, struct buf *out);
/* The session id a frame names; false if too short. */
bool channel_frame_session(const void *frame, size_t len, uint64_t *id);

void channel_session_wipe(struct channel_session *s);

/* "ctrlkey:<hex>" / "mkey:<hex>" / "nodekey:<hex>" <-> 32 bytes. */
bool channel_key_parse(const char *text, const char *prefix, uint8_t key[CHANNEL_KEY_LEN]);
void channel_key_format(const uint8_t key[CHANNEL_KEY_LEN], const char *prefix, char *out, size_t outlen);
/* The public half of a private key (X25519 base point). */
void channel_public_key(uint8_t pub[CHANNEL_KEY_LEN], const uint8_t priv[CHANNEL_KEY_LEN]);
/* A fresh private key (clamped). */
void channel_keygen(uint8_t priv[CHANNEL_KEY_LEN]);

#endif
