/* Timer state machine on a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "wg/messages.h"
#include "wg/timers.h"

static uint64_t fixed_jitter(void *arg)
{
	return *(uint64_t *)arg;
}

static uint64_t jitter_value = 100;

static int setup(void **state)
{
	static struct timers t;

	timers_init(&t, fixed_jitter, &jitter_value);
	*state = &t;
	return 0;
}

static int teardown(void **state)
{
	timers_destroy(*state);
	return 0;
}

/* Runs the clock from now to until, collecting actions at each deadline. */
static unsigned run_until(struct timers *t, uint64_t *now, uint64_t until)
{
	unsigned all = 0;

	for (;;) {
		uint64_t next = timers_next_deadline(t);

		if (next == TIMERS_OFF || next > until)
			break;
		*now = next;
		all |= timers_expire(t, *now);
	}
	*now = until;
	return all;
}

static void test_idle(void **state)
{
	struct timers *t = *state;

	assert_int_equal(timers_next_deadline(t), TIMERS_OFF);
	assert_int_equal(timers_expire(t, 1000000), 0);
}

/* Data sent with no reply: a new handshake after KEEPALIVE + REKEY_TIMEOUT + jitter. */
static void test_data_sent_without_reply(void **state)
{
	struct timers *t = *state;
	uint64_t now = 1000;

	timers_on_data_sent(t, now);
	assert_int_equal(timers_next_deadline(t), now + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + 100);
	timers_on_data_sent(t, now + 500); /* does not push it back */
	assert_int_equal(timers_next_deadline(t), now + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + 100);
	assert_int_equal(timers_expire(t, now + 15099), 0);
	assert_int_equal(timers_expire(t, now + 15100), TIMERS_SEND_INITIATION);
	/* an authenticated reply in time cancels it */
	timers_on_data_sent(t, now);
	timers_on_authenticated_packet_received(t, now + 10);
	assert_false(timers_pending(t, TIMER_NEW_HANDSHAKE));
}

/* Data received: keepalive after KEEPALIVE_TIMEOUT unless we send
 * something; more data meanwhile asks for one more. */
static void test_keepalive(void **state)
{
	struct timers *t = *state;
	uint64_t now = 0;

	timers_on_data_received(t, now);
	assert_int_equal(timers_next_deadline(t), KEEPALIVE_TIMEOUT_MS);
	timers_on_authenticated_packet_sent(t, 5);
	assert_false(timers_pending(t, TIMER_SEND_KEEPALIVE));

	timers_on_data_received(t, 100);
	timers_on_data_received(t, 200);
	assert_int_equal(timers_expire(t, 100 + KEEPALIVE_TIMEOUT_MS), TIMERS_SEND_KEEPALIVE);
	assert_int_equal(timers_next_deadline(t), 100 + 2 * KEEPALIVE_TIMEOUT_MS);
	assert_int_equal(timers_expire(t, 100 + 2 * KEEPALIVE_TIMEOUT_MS), TIMERS_SEND_KEEPALIVE);
	assert_int_equal(timers_next_deadline(t), TIMERS_OFF);
}

/* Unanswered initiations are retried every REKEY_TIMEOUT + jitter, and
 * after MAX_TIMER_HANDSHAKES retries (REKEY_ATTEMPT_TIME) we give up. */
static void test_retransmit_and_give_up(void **state)
{
	struct timers *t = *state;
	uint64_t now = 0;
	unsigned retries = 0, a = 0;

	assert_true(timers_may_send_initiation(t, now, false));
	timers_on_handshake_initiated(t, now);
	for (;;) {
		now = timers_next_deadline(t);
		a = timers_expire(t, now);
		if (a & TIMERS_GIVE_UP)
			break;
		assert_int_equal(a, TIMERS_RETRY_INITIATION);
		retries++;
		assert_true(timers_may_send_initiation(t, now, true));
		timers_on_handshake_initiated(t, now);
	}
	assert_int_equal(retries, MAX_TIMER_HANDSHAKES + 1);
	assert_true(now >= REKEY_ATTEMPT_TIME_MS);
	assert_true(timers_pending(t, TIMER_ZERO_KEY_MATERIAL));
	assert_int_equal(timers_next_deadline(t), now + 3 * REJECT_AFTER_TIME_MS);
	assert_int_equal(run_until(t, &now, now + 3 * REJECT_AFTER_TIME_MS), TIMERS_ZERO_KEYS);
}

static void test_handshake_complete(void **state)
{
	struct timers *t = *state;

	assert_true(timers_may_send_initiation(t, 0, false));
	timers_on_handshake_initiated(t, 0);
	timers_expire(t, 6000); /* one retry counted */
	assert_int_equal(timers_handshake_attempts(t), 1);
	timers_on_handshake_initiated(t, 6000);
	assert_true(timers_take_lastminute_handshake(t));
	assert_false(timers_take_lastminute_handshake(t));
	timers_on_handshake_complete(t, 6100);
	timers_on_session_derived(t, 6100);
	assert_false(timers_pending(t, TIMER_RETRANSMIT_HANDSHAKE));
	assert_int_equal(timers_handshake_attempts(t), 0);
	assert_true(timers_take_lastminute_handshake(t));
	assert_int_equal(timers_next_deadline(t), 6100 + 3 * REJECT_AFTER_TIME_MS);
}

/* At most one initiation per REKEY_TIMEOUT; a response counts too. */
static void test_initiation_rate_limit(void **state)
{
	struct timers *t = *state;

	assert_true(timers_may_send_initiation(t, 1000, false));
	assert_false(timers_may_send_initiation(t, 1000 + REKEY_TIMEOUT_MS - 1, false));
	assert_true(timers_may_send_initiation(t, 1000 + REKEY_TIMEOUT_MS, false));
	timers_on_handshake_response_sent(t, 20000);
	assert_false(timers_may_send_initiation(t, 21000, false));
	assert_true(timers_may_send_initiation(t, 25000, true));
	/* a new static key or the link going down lifts the limit */
	assert_false(timers_may_send_initiation(t, 26000, false));
	timers_reset_handshake_limit(t);
	assert_true(timers_may_send_initiation(t, 26000, false));
	assert_false(timers_may_send_initiation(t, 26001, false));
}

static void test_persistent_keepalive(void **state)
{
	struct timers *t = *state;
	uint64_t now = 0;

	timers_on_authenticated_packet_traversed(t, now); /* off: nothing */
	assert_int_equal(timers_next_deadline(t), TIMERS_OFF);
	assert_true(timers_set_persistent_keepalive(t, 25, now));
	assert_false(timers_set_persistent_keepalive(t, 25, now)); /* unchanged: no extra */
	timers_on_authenticated_packet_traversed(t, now);
	assert_int_equal(timers_next_deadline(t), 25000);
	assert_int_equal(run_until(t, &now, 25000), TIMERS_SEND_KEEPALIVE);
	timers_on_authenticated_packet_traversed(t, now);
	assert_false(timers_set_persistent_keepalive(t, 0, now));
	assert_int_equal(timers_next_deadline(t), TIMERS_OFF);
}

static void test_stop(void **state)
{
	struct timers *t = *state;

	timers_on_data_sent(t, 0);
	timers_on_session_derived(t, 0);
	timers_stop(t);
	assert_int_equal(timers_next_deadline(t), TIMERS_OFF);
	timers_on_data_received(t, 0);
	assert_int_equal(timers_next_deadline(t), TIMERS_OFF);
	assert_false(timers_may_send_initiation(t, 0, false));
}

/* The default jitter stays in range. */
static void test_random_jitter(void **state)
{
	struct timers t;

	timers_init(&t, NULL, NULL);
	for (int i = 0; i < 1000; i++) {
		uint64_t d;

		timers_on_handshake_initiated(&t, 0);
		d = timers_next_deadline(&t);
		assert_true(d >= REKEY_TIMEOUT_MS && d < REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MAX_MS);
	}
	timers_destroy(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_sent_without_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retransmit_and_give_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handshake_complete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_initiation_rate_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persistent_keepalive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
		cmocka_unit_test(test_random_jitter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
