/* MAC1/MAC2 and cookie replies: WireGuard's DoS mitigation (whitepaper
 * section 5.3, 5.4.4, 5.4.7).
 *
 * The responder side is a cookie_checker (one per identity): it verifies
 * MAC1 with HASH("mac1----" || own public key), and when under load
 * demands MAC2, keyed with a cookie = MAC(secret, source address) where the
 * secret changes every COOKIE_SECRET_MAX_AGE. A handshake without a valid
 * MAC2 is then answered with a cookie reply, the cookie encrypted with
 * XChaCha20-Poly1305 under HASH("cookie--" || own public key), a random
 * 24-byte nonce, and the message's MAC1 as associated data.
 *
 * The initiator side is a cookie_maker (one per peer): it adds MAC1 (and
 * MAC2, while it holds a fresh cookie) to each handshake message it sends,
 * and takes in cookie replies.
 *
 * Source addresses are bytes chosen by the caller: the IP address in
 * network order followed by the UDP port in network order (6 or 18 bytes).
 *
 * Both structs are embedded by their owner; each has its own rwlock
 * guarding all its fields. Times are monotonic milliseconds. */
#ifndef KNIT_WG_COOKIE_H
#define KNIT_WG_COOKIE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wg/messages.h"

struct cookie_checker {
	pthread_rwlock_t lock;
	bool has_keys;
	uint8_t mac1_key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t encryption_key[NOISE_SYMMETRIC_KEY_LEN];
	bool has_secret;
	uint64_t secret_birthdate;
	uint8_t secret[NOISE_HASH_LEN];
};

struct cookie_maker {
	pthread_rwlock_t lock;
	uint8_t mac1_key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t decryption_key[NOISE_SYMMETRIC_KEY_LEN];
	bool is_valid;
	uint64_t birthdate;
	uint8_t cookie[COOKIE_LEN];
	bool have_sent_mac1;
	uint8_t last_mac1_sent[COOKIE_LEN];
};

/* Tracks load for cookie_under_load(). */
struct cookie_load {
	bool seen;
	uint64_t last_under_load;
};

enum cookie_mac_state {
	COOKIE_MAC_INVALID, /* drop without further work */
	COOKIE_MAC_VALID_NO_COOKIE,
	COOKIE_MAC_VALID_WITH_COOKIE,
};

enum cookie_verdict {
	COOKIE_DROP,
	COOKIE_ACCEPT, /* process the handshake */
	COOKIE_SEND_REPLY, /* under load and no valid MAC2: answer with a cookie reply */
};

void cookie_checker_init(struct cookie_checker *c);
void cookie_checker_destroy(struct cookie_checker *c);
/* The identity's public key (NULL when it has none: every MAC1 then fails). */
void cookie_checker_set_public(struct cookie_checker *c, const uint8_t pub[NOISE_PUBLIC_KEY_LEN]);
/* Whether msg (an initiation or response) carries a MAC2 at all: senders
 * without a cookie leave it zero. */
bool cookie_msg_has_mac2(const void *msg, size_t len);
/* msg is a whole initiation or response (len 148 or 92). MAC2 is checked
 * only when check_cookie (i.e. under load). */
enum cookie_mac_state cookie_checker_validate(struct cookie_checker *c, const void *msg, size_t len,
					      bool check_cookie, const uint8_t *src, size_t srclen,
					      uint64_t now);
/* The whole decision: validate, then accept, drop or ask for a cookie
 * reply according to load. Rate limiting of accepted handshakes is the
 * caller's. */
enum cookie_verdict cookie_checker_check(struct cookie_checker *c, const void *msg, size_t len,
					 bool under_load, const uint8_t *src, size_t srclen, uint64_t now);
/* Answers msg (the initiation or response that lacked MAC2): index is
 * the le32toh() of that message's sender_index. */
bool cookie_checker_create_reply(struct cookie_checker *c, struct message_handshake_cookie *dst,
				 const void *msg, size_t len, uint32_t index,
				 const uint8_t *src, size_t srclen, uint64_t now);

void cookie_maker_init(struct cookie_maker *m, const uint8_t remote_pub[NOISE_PUBLIC_KEY_LEN]);
void cookie_maker_destroy(struct cookie_maker *m);
/* Fills MAC1 and MAC2 of an outgoing handshake message (last 32 bytes). */
void cookie_maker_add_macs(struct cookie_maker *m, void *msg, size_t len, uint64_t now);
/* Takes the cookie from a reply to our last MAC1; false if it does not
 * decrypt or we sent nothing it could answer. */
bool cookie_maker_consume_reply(struct cookie_maker *m, const struct message_handshake_cookie *src, uint64_t now);

/* Under load while at least an eighth of max_queued handshakes wait, and
 * for one second after. */
bool cookie_under_load(struct cookie_load *l, size_t queued, size_t max_queued, uint64_t now);

#endif
