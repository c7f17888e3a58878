/* WireGuard's per-peer timer state machine (whitepaper section 6), as pure
 * logic: events are hooks named for what just happened; the five timers
 * are deadlines on the caller's monotonic millisecond clock; when the
 * earliest deadline passes, the caller runs timers_expire() and performs
 * the actions it returns.
 *
 * Mapping onto lib/loop.h: one loop_timer per peer, armed for
 * timers_next_deadline() after every event and every expiry.
 *
 * Thread-safety: every function takes t->lock, so events may come from
 * any worker thread. Actions are returned, not called, so they run with
 * no timers lock held and may feed events back. */
#ifndef KNIT_WG_TIMERS_H
#define KNIT_WG_TIMERS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define TIMERS_OFF UINT64_MAX

enum timers_timer {
	TIMER_RETRANSMIT_HANDSHAKE,
	TIMER_SEND_KEEPALIVE,
	TIMER_NEW_HANDSHAKE,
	TIMER_ZERO_KEY_MATERIAL,
	TIMER_PERSISTENT_KEEPALIVE,
	TIMER_COUNT,
};

enum timers_action {
	TIMERS_SEND_KEEPALIVE = 1u << 0,
	/* A new handshake: call timers_may_send_initiation(t, now, false). */
	TIMERS_SEND_INITIATION = 1u << 1,
	/* A retransmission: timers_may_send_initiation(t, now, true). Both
	 * kinds clear the cached source address of the endpoint. */
	TIMERS_RETRY_INITIATION = 1u << 2,
	/* MAX_TIMER_HANDSHAKES attempts failed: drop the staged packets. */
	TIMERS_GIVE_UP = 1u << 3,
	/* Nothing for REJECT_AFTER_TIME * 3: wipe handshake and keypairs. */
	TIMERS_ZERO_KEYS = 1u << 4,
};

/* Returns a jitter in [0, REKEY_TIMEOUT_JITTER_MAX_MS). */
typedef uint64_t (*timers_jitter_fn)(void *arg);

struct timers {
	pthread_mutex_t lock; /* guards every field below */
	uint64_t deadline[TIMER_COUNT]; /* TIMERS_OFF when disarmed */
	unsigned handshake_attempts;
	bool need_another_keepalive;
	bool sent_lastminute_handshake;
	bool has_sent_handshake;
	uint64_t last_sent_handshake;
	unsigned persistent_keepalive_interval; /* seconds, 0 off */
	bool stopped;
	timers_jitter_fn jitter;
	void *jitter_arg;
};

/* jitter NULL: uniform random from libsodium. */
void timers_init(struct timers *t, timers_jitter_fn jitter, void *jitter_arg);
void timers_destroy(struct timers *t);
/* Disarms everything for good (peer removal). */
void timers_stop(struct timers *t);

void timers_on_data_sent(struct timers *t, uint64_t now);
void timers_on_data_received(struct timers *t, uint64_t now);
void timers_on_authenticated_packet_sent(struct timers *t, uint64_t now);
void timers_on_authenticated_packet_received(struct timers *t, uint64_t now);
/* Any authenticated packet, either direction, incl. handshakes. */
void timers_on_authenticated_packet_traversed(struct timers *t, uint64_t now);
void timers_on_handshake_initiated(struct timers *t, uint64_t now);
void timers_on_handshake_complete(struct timers *t, uint64_t now);
void timers_on_session_derived(struct timers *t, uint64_t now);
/* A response went out: it counts for the REKEY_TIMEOUT rate limit. */
void timers_on_handshake_response_sent(struct timers *t, uint64_t now);

/* Sets the persistent keepalive interval (seconds, 0 off). Returns true
 * when a keepalive should be sent now (it was just turned on). */
bool timers_set_persistent_keepalive(struct timers *t, unsigned interval, uint64_t now);
/* Decides whether an initiation may go out now: at most one per
 * REKEY_TIMEOUT; a non-retry restarts the attempt count. Records the send
 * when it returns true (then also call timers_on_handshake_initiated). */
bool timers_may_send_initiation(struct timers *t, uint64_t now, bool is_retry);
/* The handshake state was reset (a new static key, the link down): the
 * next initiation may go at once (the Linux module's
 * wg_noise_reset_last_sent_handshake()). */
void timers_reset_handshake_limit(struct timers *t);
/* Section 6.2's "last minute" rekey on receive: true once per session. */
bool timers_take_lastminute_handshake(struct timers *t);

/* Earliest deadline, or TIMERS_OFF. */
uint64_t timers_next_deadline(struct timers *t);
/* Runs every timer due at now; returns the union of enum timers_action. */
unsigned timers_expire(struct timers *t, uint64_t now);
/* Introspection for tests and UAPI. */
bool timers_pending(struct timers *t, enum timers_timer which);
unsigned timers_handshake_attempts(struct timers *t);

#endif
