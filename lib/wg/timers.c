#include "wg/timers.h"

#include "wg/messages.h"

#include <sodium.h>
#include <string.h>

static uint64_t random_jitter(void *arg)
{
	return randombytes_uniform((uint32_t)REKEY_TIMEOUT_JITTER_MAX_MS);
}

static uint64_t jitter(struct timers *t)
{
	return t->jitter(t->jitter_arg) % REKEY_TIMEOUT_JITTER_MAX_MS;
}

/* Caller holds t->lock. */
static void arm(struct timers *t, enum timers_timer which, uint64_t when)
{
	if (!t->stopped)
		t->deadline[which] = when;
}

static bool pending(const struct timers *t, enum timers_timer which)
{
	return t->deadline[which] != TIMERS_OFF;
}

static void disarm(struct timers *t, enum timers_timer which)
{
	t->deadline[which] = TIMERS_OFF;
}

void timers_init(struct timers *t, timers_jitter_fn jitter_fn, void *jitter_arg)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	for (int i = 0; i < TIMER_COUNT; i++)
		t->deadline[i] = TIMERS_OFF;
	t->jitter = jitter_fn ? jitter_fn : random_jitter;
	t->jitter_arg = jitter_arg;
}

void timers_destroy(struct timers *t)
{
	pthread_mutex_destroy(&t->lock);
}

void timers_stop(struct timers *t)
{
	pthread_mutex_lock(&t->lock);
	t->stopped = true;
	for (int i = 0; i < TIMER_COUNT; i++)
		disarm(t, i);
	pthread_mutex_unlock(&t->lock);
}

/* We sent data and expect an answer: if none (not even a keepalive)
 * comes back within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, start a handshake. */
void timers_on_data_sent(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	if (!pending(t, TIMER_NEW_HANDSHAKE))
		arm(t, TIMER_NEW_HANDSHAKE, now + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + jitter(t));
	pthread_mutex_unlock(&t->lock);
}

/* We got data: if we send nothing back within KEEPALIVE_TIMEOUT, send a
 * keepalive so the peer knows we are alive. */
void timers_on_data_received(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	if (!pending(t, TIMER_SEND_KEEPALIVE))
		arm(t, TIMER_SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT_MS);
	else
		t->need_another_keepalive = true;
	pthread_mutex_unlock(&t->lock);
}

void timers_on_authenticated_packet_sent(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	disarm(t, TIMER_SEND_KEEPALIVE);
	pthread_mutex_unlock(&t->lock);
}

void timers_on_authenticated_packet_received(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	disarm(t, TIMER_NEW_HANDSHAKE);
	pthread_mutex_unlock(&t->lock);
}

void timers_on_authenticated_packet_traversed(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	if (t->persistent_keepalive_interval)
		arm(t, TIMER_PERSISTENT_KEEPALIVE, now + t->persistent_keepalive_interval * 1000ULL);
	pthread_mutex_unlock(&t->lock);
}

void timers_on_handshake_initiated(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	arm(t, TIMER_RETRANSMIT_HANDSHAKE, now + REKEY_TIMEOUT_MS + jitter(t));
	pthread_mutex_unlock(&t->lock);
}

void timers_on_handshake_complete(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	disarm(t, TIMER_RETRANSMIT_HANDSHAKE);
	t->handshake_attempts = 0;
	t->sent_lastminute_handshake = false;
	pthread_mutex_unlock(&t->lock);
}

/* Keys are wiped if no new session replaces this one in 3 * REJECT_AFTER_TIME. */
void timers_on_session_derived(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	arm(t, TIMER_ZERO_KEY_MATERIAL, now + REJECT_AFTER_TIME_MS * 3);
	pthread_mutex_unlock(&t->lock);
}

void timers_on_handshake_response_sent(struct timers *t, uint64_t now)
{
	pthread_mutex_lock(&t->lock);
	t->has_sent_handshake = true;
	t->last_sent_handshake = now;
	pthread_mutex_unlock(&t->lock);
}

bool timers_set_persistent_keepalive(struct timers *t, unsigned interval, uint64_t now)
{
	bool send;

	pthread_mutex_lock(&t->lock);
	send = interval && !t->persistent_keepalive_interval && !t->stopped;
	t->persistent_keepalive_interval = interval;
	if (!interval)
		disarm(t, TIMER_PERSISTENT_KEEPALIVE);
	pthread_mutex_unlock(&t->lock);
	return send;
}

bool timers_may_send_initiation(struct timers *t, uint64_t now, bool is_retry)
{
	bool ok = false;

	pthread_mutex_lock(&t->lock);
	if (t->stopped)
		goto out;
	if (!is_retry)
		t->handshake_attempts = 0;
	if (t->has_sent_handshake && now < t->last_sent_handshake + REKEY_TIMEOUT_MS)
		goto out;
	t->has_sent_handshake = true;
	t->last_sent_handshake = now;
	ok = true;
out:
	pthread_mutex_unlock(&t->lock);
	return ok;
}

void timers_reset_handshake_limit(struct timers *t)
{
	pthread_mutex_lock(&t->lock);
	t->has_sent_handshake = false;
	pthread_mutex_unlock(&t->lock);
}

bool timers_take_lastminute_handshake(struct timers *t)
{
	bool first;

	pthread_mutex_lock(&t->lock);
	first = !t->sent_lastminute_handshake;
	t->sent_lastminute_handshake = true;
	pthread_mutex_unlock(&t->lock);
	return first;
}

uint64_t timers_next_deadline(struct timers *t)
{
	uint64_t next = TIMERS_OFF;

	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TIMER_COUNT; i++)
		if (t->deadline[i] < next)
			next = t->deadline[i];
	pthread_mutex_unlock(&t->lock);
	return next;
}

static bool due(struct timers *t, enum timers_timer which, uint64_t now)
{
	if (t->deadline[which] > now)
		return false;
	disarm(t, which);
	return true;
}

unsigned timers_expire(struct timers *t, uint64_t now)
{
	unsigned actions = 0;

	pthread_mutex_lock(&t->lock);
	if (due(t, TIMER_RETRANSMIT_HANDSHAKE, now)) {
		if (t->handshake_attempts > MAX_TIMER_HANDSHAKES) {
			/* Gave up after REKEY_ATTEMPT_TIME: stop, drop queued
			 * packets, and let the keys die with the zero timer. */
			disarm(t, TIMER_SEND_KEEPALIVE);
			actions |= TIMERS_GIVE_UP;
			if (!pending(t, TIMER_ZERO_KEY_MATERIAL))
				arm(t, TIMER_ZERO_KEY_MATERIAL, now + REJECT_AFTER_TIME_MS * 3);
		} else {
			t->handshake_attempts++;
			actions |= TIMERS_RETRY_INITIATION;
		}
	}
	if (due(t, TIMER_SEND_KEEPALIVE, now)) {
		actions |= TIMERS_SEND_KEEPALIVE;
		if (t->need_another_keepalive) {
			t->need_another_keepalive = false;
			arm(t, TIMER_SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT_MS);
		}
	}
	if (due(t, TIMER_NEW_HANDSHAKE, now))
		actions |= TIMERS_SEND_INITIATION;
	if (due(t, TIMER_ZERO_KEY_MATERIAL, now))
		actions |= TIMERS_ZERO_KEYS;
	if (due(t, TIMER_PERSISTENT_KEEPALIVE, now) && t->persistent_keepalive_interval)
		actions |= TIMERS_SEND_KEEPALIVE;
	pthread_mutex_unlock(&t->lock);
	return actions;
}

bool timers_pending(struct timers *t, enum timers_timer which)
{
	bool p;

	pthread_mutex_lock(&t->lock);
	p = pending(t, which);
	pthread_mutex_unlock(&t->lock);
	return p;
}

unsigned timers_handshake_attempts(struct timers *t)
{
	unsigned n;

	pthread_mutex_lock(&t->lock);
	n = t->handshake_attempts;
	pthread_mutex_unlock(&t->lock);
	return n;
}
