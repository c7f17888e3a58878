/* Noise_IKpsk2 handshake and transport keypairs, as WireGuard runs them
 * (whitepaper section 5.4).
 *
 * Objects:
 *  - noise_index: the receiver-index table (random 32-bit indices, hash
 *    lookup). One may be shared by all identities on a socket, so that a
 *    data packet's receiver index alone finds its keypair, peer and
 *    identity.
 *  - noise_local: one identity (static key pair) and its remotes. The
 *    engine makes one per identity.
 *  - noise_remote: one peer of that identity: its static public key, the
 *    precomputed static-static DH, the PSK, the in-progress handshake and
 *    the current/previous/next keypairs.
 *  - noise_keypair: a transport session. Refcounted; the data path takes a
 *    reference (noise_keypair_lookup / noise_keypair_current) and drops it
 *    with noise_keypair_put(), so rotation never frees a keypair in use.
 *
 * MAC1/MAC2 are not handled here: cookie.c adds them after a create and
 * checks them before a consume.
 *
 * Locking (all internal):
 *  - local->identity_lock (rwlock): static keys, has_identity.
 *  - noise_index.lock (rwlock): the hash table and every entry's
 *    index/next fields; lookups take it shared.
 *  - local->remotes_lock (mutex): the remotes list.
 *  - remote->handshake_lock (rwlock): all handshake state, the
 *    precomputed static-static DH and the PSK.
 *  - remote->keypairs_lock (mutex): the current/previous/next slots.
 *  - keypair: keys, indices and birthdate are immutable once published;
 *    the send counter and the valid flag are atomics; the replay window
 *    has its own mutex.
 * Order: identity_lock, remotes_lock, handshake_lock, keypairs_lock,
 * noise_index.lock.
 *
 * Remotes are owned by the caller: noise_remote_free() must not race with
 * handshake processing for that remote (remove the peer from the engine,
 * drain, then free) nor with data-path use of its keypairs: drop every
 * keypair reference first.
 *
 * Times are milliseconds of a monotonic clock the caller supplies. */
#ifndef KNIT_WG_NOISE_H
#define KNIT_WG_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "wg/messages.h"

struct noise_index;
struct noise_local;
struct noise_remote;
struct noise_keypair;

struct noise_upcalls {
	/* Returns the remote with static public key pub, or NULL. Called
	 * from noise_handshake_consume_initiation() with the identity lock
	 * held shared: it must not call back into this noise_local. */
	struct noise_remote *(*remote_get)(void *arg, const uint8_t pub[NOISE_PUBLIC_KEY_LEN]);
	void *arg;
};

/* X25519 (RFC 7748) from libsodium. */
void noise_keygen(uint8_t priv[NOISE_PUBLIC_KEY_LEN]);
/* False if priv is all zero. */
bool noise_public_from_private(uint8_t pub[NOISE_PUBLIC_KEY_LEN], const uint8_t priv[NOISE_PUBLIC_KEY_LEN]);
/* False (and out zeroed) for a low-order public key: all-zero shared secret. */
bool noise_dh(uint8_t out[NOISE_PUBLIC_KEY_LEN], const uint8_t priv[NOISE_PUBLIC_KEY_LEN],
	      const uint8_t pub[NOISE_PUBLIC_KEY_LEN]);
/* TAI64N of a CLOCK_REALTIME time, nanoseconds rounded down to a multiple
 * of 2^24 (below 1/INITIATIONS_PER_SECOND) so the timestamp does not leak
 * fine timing. */
void noise_tai64n(uint8_t out[NOISE_TIMESTAMP_LEN], const struct timespec *realtime);

/* NULL on ENOMEM. Free after every noise_local using it. */
struct noise_index *noise_index_new(void);
void noise_index_free(struct noise_index *idx);

/* Returns NULL on ENOMEM. upcalls is copied. index may be shared with
 * other identities; NULL gives this one a private table. */
struct noise_local *noise_local_new(const struct noise_upcalls *upcalls, struct noise_index *index);
/* All remotes must have been freed first. */
void noise_local_free(struct noise_local *l);
/* Sets (priv non-NULL) or clears the identity, recomputes every remote's
 * static-static DH and, if the key changed, drops their handshakes and
 * keypairs. Returns false if priv makes no valid public key. */
bool noise_local_set_private(struct noise_local *l, const uint8_t priv[NOISE_PUBLIC_KEY_LEN]);
/* False when there is no identity. */
bool noise_local_public(struct noise_local *l, uint8_t pub[NOISE_PUBLIC_KEY_LEN]);

/* arg is the caller's peer, returned by noise_remote_arg(). NULL on
 * ENOMEM. A remote whose public key equals the local one, or gives a
 * low-order DH, is kept but can never complete a handshake. */
struct noise_remote *noise_remote_new(struct noise_local *l, const uint8_t pub[NOISE_PUBLIC_KEY_LEN], void *arg);
/* Drops handshake and keypairs, wipes secrets, frees. */
void noise_remote_free(struct noise_remote *r);
void *noise_remote_arg(const struct noise_remote *r);
void noise_remote_public(const struct noise_remote *r, uint8_t pub[NOISE_PUBLIC_KEY_LEN]);
/* psk NULL clears it (all zeros, as the protocol specifies). */
void noise_remote_set_psk(struct noise_remote *r, const uint8_t psk[NOISE_SYMMETRIC_KEY_LEN]);
/* Returns true and copies the PSK if one is set. */
bool noise_remote_psk(struct noise_remote *r, uint8_t psk[NOISE_SYMMETRIC_KEY_LEN]);

/* Initiator, message 1: e, es, s, ss, {t}. timestamp is noise_tai64n()
 * of now. Fills everything but the MACs. */
bool noise_handshake_create_initiation(struct noise_remote *r, struct message_handshake_initiation *dst,
				       const uint8_t timestamp[NOISE_TIMESTAMP_LEN]);
/* Responder: returns the remote that sent it, or NULL if it does not
 * decrypt, names an unknown peer, replays a timestamp that is not newer
 * than the last accepted one, or comes sooner than 1/INITIATIONS_PER_SECOND
 * after the previous initiation from that peer (flood). */
struct noise_remote *noise_handshake_consume_initiation(struct noise_local *l,
							const struct message_handshake_initiation *src,
							uint64_t now);
/* Responder, message 2: e, ee, se, psk, {}. */
bool noise_handshake_create_response(struct noise_remote *r, struct message_handshake_response *dst);
/* Initiator: returns the remote whose initiation this answers, or NULL. */
struct noise_remote *noise_handshake_consume_response(struct noise_local *l,
						      const struct message_handshake_response *src);
/* After create_response (responder) or consume_response (initiator):
 * derives the transport keys (section 5.4.5), wipes the handshake, and
 * slots the keypair (initiator: current at once; responder: next, until
 * the first data packet from the initiator confirms it). */
bool noise_handshake_begin_session(struct noise_remote *r, uint64_t now);
/* Wipes the handshake in progress. */
void noise_handshake_clear(struct noise_remote *r);

/* Receiver-index lookups (index as a host integer: le32toh() of the
 * wire). For a handshake entry returns its remote (no reference: see
 * remote lifetime above); for a keypair a new reference. */
struct noise_index *noise_local_index(struct noise_local *l);
struct noise_remote *noise_index_lookup_handshake(struct noise_index *idx, uint32_t index);
struct noise_keypair *noise_keypair_lookup(struct noise_index *idx, uint32_t index);
/* Either kind (cookie replies answer an initiation or a response, whose
 * index may already belong to a keypair); no reference taken. */
struct noise_remote *noise_index_lookup_remote(struct noise_index *idx, uint32_t index);
struct noise_local *noise_remote_local(const struct noise_remote *r);

/* A reference to the keypair to send with, or NULL if there is none that
 * may send (a responder's unconfirmed keypair may not). */
struct noise_keypair *noise_keypair_current(struct noise_remote *r);
struct noise_keypair *noise_keypair_get(struct noise_keypair *kp);
void noise_keypair_put(struct noise_keypair *kp);
struct noise_remote *noise_keypair_remote(const struct noise_keypair *kp);
/* A data packet authenticated with kp: if kp was the next keypair, rotate
 * (previous = current, current = next) and return true, i.e. the
 * handshake is now complete for the responder. */
bool noise_keypair_received_with(struct noise_keypair *kp);
/* Drops all keypairs (REJECT_AFTER_TIME * 3 passed, or peer reset). */
void noise_keypairs_clear(struct noise_remote *r);
/* Marks the current and next keypairs unusable for sending. */
void noise_keypairs_expire(struct noise_remote *r);

/* Transport (section 5.4.6), in place. pkt holds the plaintext at
 * pkt + MESSAGE_DATA_HEADER_LEN, payload_len bytes already padded, and
 * MESSAGE_DATA_TAG_LEN bytes of room after it. Writes the header and tag;
 * *pkt_len = header + payload + tag. False if kp may no longer send
 * (expired, counter exhausted): start a handshake. */
bool noise_keypair_encrypt(struct noise_keypair *kp, uint8_t *pkt, size_t payload_len, uint64_t now,
			   size_t *pkt_len);

/* noise_keypair_encrypt() for n packets at once (any n): the counters are
 * taken in one step and the AEAD seals them as one run. ok[i] and
 * pkt_len[i] are the per-packet results. */
void noise_keypair_encrypt_many(struct noise_keypair *kp, uint8_t *const pkt[], const uint32_t payload_len[],
				unsigned n, uint64_t now, uint8_t ok[], uint32_t pkt_len[]);

enum noise_rx {
	NOISE_RX_OK,
	NOISE_RX_INVALID, /* malformed, or keypair expired / exhausted */
	NOISE_RX_AUTH, /* forged or corrupted */
	NOISE_RX_REPLAY, /* authenticated but counter seen or too old */
};
/* Decrypts a data message in place (plaintext at pkt +
 * MESSAGE_DATA_HEADER_LEN, *payload_len bytes; 0 for a keepalive),
 * checks the receiver index matches kp, authenticates, then the replay
 * window. */
enum noise_rx noise_keypair_decrypt(struct noise_keypair *kp, uint8_t *pkt, size_t pkt_len, uint64_t now,
				    size_t *payload_len);
/* The same for n packets at once (any n), opened as one run, with the
 * replay window checked in order: rx[i] is an enum noise_rx, payload_len[i]
 * is set where rx[i] is NOISE_RX_OK. */
void noise_keypair_decrypt_many(struct noise_keypair *kp, uint8_t *const pkt[], const uint32_t pkt_len[],
				unsigned n, uint64_t now, uint8_t rx[], uint32_t payload_len[]);

/* Section 6.2 rekey triggers, evaluated by the engine after each send or
 * receive: after sending, when the counter passed REKEY_AFTER_MESSAGES or
 * (initiator) the keypair is older than REKEY_AFTER_TIME; after
 * receiving, when (initiator) it is older than REJECT_AFTER_TIME -
 * KEEPALIVE_TIMEOUT - REKEY_TIMEOUT. */
bool noise_keypair_should_rekey_send(struct noise_keypair *kp, uint64_t now);
bool noise_keypair_should_rekey_recv(struct noise_keypair *kp, uint64_t now);
bool noise_keypair_is_initiator(const struct noise_keypair *kp);
uint32_t noise_keypair_local_index(const struct noise_keypair *kp);
uint32_t noise_keypair_remote_index(const struct noise_keypair *kp);
/* The next send counter (tests, rekey-by-messages simulation). */
uint64_t noise_keypair_send_counter(const struct noise_keypair *kp);
void noise_keypair_set_send_counter(struct noise_keypair *kp, uint64_t counter);

#endif
