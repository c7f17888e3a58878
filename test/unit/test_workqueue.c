#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "kube/workqueue.h"

/* Timing bounds are generous: sanitizer builds on a loaded 2-core machine. */
#define SLACK_MS 400

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int setup(void **state)
{
	alarm(60); /* no test here may hang the suite */
	*state = workqueue_new(NULL);
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	workqueue_free(*state);
	alarm(0);
	return 0;
}

static void expect_get(struct workqueue *q, const char *want)
{
	char *key;

	assert_true(workqueue_get(q, &key));
	assert_string_equal(key, want);
	free(key);
}

static void test_dedup(void **state)
{
	struct workqueue *q = *state;
	struct workqueue_stats st;

	assert_int_equal(workqueue_add(q, "ns/a"), 0);
	assert_int_equal(workqueue_add(q, "ns/a"), 0);
	assert_int_equal(workqueue_add(q, "ns/b"), 0);
	assert_int_equal(workqueue_add(q, "ns/a"), 0);
	assert_int_equal(workqueue_len(q), 2);
	expect_get(q, "ns/a");
	expect_get(q, "ns/b");
	assert_int_equal(workqueue_len(q), 0);
	workqueue_stats(q, &st);
	assert_int_equal(st.processing, 2);
	assert_int_equal(st.adds, 2);
	workqueue_done(q, "ns/a");
	workqueue_done(q, "ns/b");
	workqueue_done(q, "ns/b"); /* a second done is harmless */
	workqueue_done(q, "ns/never");
	workqueue_stats(q, &st);
	assert_int_equal(st.processing, 0);
	assert_int_equal(st.depth, 0);
}

static void test_readd_while_processing(void **state)
{
	struct workqueue *q = *state;

	workqueue_add(q, "ns/a");
	expect_get(q, "ns/a");
	/* Being processed: marked, not handed to a second worker. */
	workqueue_add(q, "ns/a");
	workqueue_add(q, "ns/a");
	assert_int_equal(workqueue_len(q), 0);
	workqueue_add(q, "ns/b");
	expect_get(q, "ns/b");
	workqueue_done(q, "ns/a");
	assert_int_equal(workqueue_len(q), 1);
	expect_get(q, "ns/a");
	workqueue_done(q, "ns/a");
	workqueue_done(q, "ns/b");
	assert_int_equal(workqueue_len(q), 0);
}

static void test_fifo_order_and_many_keys(void **state)
{
	struct workqueue *q = *state;
	char key[32];
	int i;

	for (i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "ns/k%d", i);
		assert_int_equal(workqueue_add(q, key), 0);
	}
	for (i = 0; i < 5000; i += 7) {
		snprintf(key, sizeof(key), "ns/k%d", i);
		workqueue_add(q, key);
	}
	assert_int_equal(workqueue_len(q), 5000);
	for (i = 0; i < 5000; i++) {
		char *got;
		snprintf(key, sizeof(key), "ns/k%d", i);
		assert_true(workqueue_get(q, &got));
		assert_string_equal(got, key);
		workqueue_done(q, got);
		free(got);
	}
	assert_int_equal(workqueue_len(q), 0);
}

/* ---- many workers, one key never processed twice at once ---- */

#define NKEYS 16
#define NWORKERS 6
#define NADDS 40000

struct hammer {
	struct workqueue *q;
	atomic_int busy[NKEYS];
	atomic_uint added[NKEYS]; /* bumped before each add */
	atomic_uint seen[NKEYS]; /* added[] as of the last processing start */
	atomic_int overlaps;
	atomic_ulong processed;
};

static int key_index(const char *key)
{
	return atoi(key + strlen("ns/k"));
}

static void *hammer_worker(void *arg)
{
	struct hammer *h = arg;
	char *key;

	while (workqueue_get(h->q, &key)) {
		int k = key_index(key);
		if (atomic_exchange(&h->busy[k], 1) != 0)
			h->overlaps++;
		atomic_store(&h->seen[k], atomic_load(&h->added[k]));
		for (int spin = 0; spin < 50; spin++)
			sched_yield();
		atomic_store(&h->busy[k], 0);
		h->processed++;
		workqueue_done(h->q, key);
		free(key);
	}
	return NULL;
}

static void test_no_concurrent_processing(void **state)
{
	struct hammer *h = calloc(1, sizeof(*h));
	pthread_t workers[NWORKERS];
	struct workqueue_stats st;
	char key[32];
	uint64_t deadline;

	assert_non_null(h);
	h->q = *state;
	for (int i = 0; i < NWORKERS; i++)
		assert_int_equal(pthread_create(&workers[i], NULL, hammer_worker, h), 0);
	srand(42);
	for (int i = 0; i < NADDS; i++) {
		int k = rand() % NKEYS;
		snprintf(key, sizeof(key), "ns/k%d", k);
		h->added[k]++;
		assert_int_equal(workqueue_add(h->q, key), 0);
		if (i % 8 == 0)
			sched_yield(); /* let workers interleave with the adds */
	}
	/* Wait for quiescence, then stop. */
	deadline = now_ms() + 30000;
	do {
		workqueue_stats(h->q, &st);
		if (st.depth == 0 && st.processing == 0)
			break;
		usleep(1000);
	} while (now_ms() < deadline);
	assert_int_equal(st.depth, 0);
	assert_int_equal(st.processing, 0);
	workqueue_shutdown(h->q);
	for (int i = 0; i < NWORKERS; i++)
		pthread_join(workers[i], NULL);
	assert_int_equal(h->overlaps, 0);
	/* No add was lost: every key's last processing started after its last add. */
	for (int k = 0; k < NKEYS; k++)
		assert_int_equal(h->seen[k], h->added[k]);
	/* Dedup collapsed most adds. */
	assert_true(h->processed >= NKEYS && h->processed <= NADDS);
	print_message("processed %lu of %d adds\n", (unsigned long)h->processed, NADDS);
	free(h);
}

/* ---- delays ---- */

static void test_add_after_order_and_timing(void **state)
{
	struct workqueue *q = *state;
	uint64_t t0 = now_ms(), t;
	struct { const char *key; uint64_t delay; } want[] = {
		{ "ns/a", 100 }, { "ns/b", 200 }, { "ns/c", 300 },
	};
	struct workqueue_stats st;

	assert_int_equal(workqueue_add_after(q, "ns/c", 300), 0);
	assert_int_equal(workqueue_add_after(q, "ns/a", 100), 0);
	assert_int_equal(workqueue_add_after(q, "ns/b", 200), 0);
	assert_int_equal(workqueue_len(q), 0);
	workqueue_stats(q, &st);
	assert_int_equal(st.delayed, 3);
	for (size_t i = 0; i < 3; i++) {
		expect_get(q, want[i].key);
		t = now_ms() - t0;
		assert_true(t + 1 >= want[i].delay);
		assert_true(t <= want[i].delay + SLACK_MS);
		workqueue_done(q, want[i].key);
	}
}

static void test_add_after_earliest_wins(void **state)
{
	struct workqueue *q = *state;
	uint64_t t0 = now_ms(), t;

	workqueue_add_after(q, "ns/x", 10000);
	workqueue_add_after(q, "ns/x", 50);
	workqueue_add_after(q, "ns/x", 20000); /* later: ignored */
	expect_get(q, "ns/x");
	t = now_ms() - t0;
	assert_true(t + 1 >= 50 && t <= 50 + SLACK_MS);
	workqueue_done(q, "ns/x");
	/* Zero delay is a plain add. */
	workqueue_add_after(q, "ns/y", 0);
	assert_int_equal(workqueue_len(q), 1);
	expect_get(q, "ns/y");
	workqueue_done(q, "ns/y");
}

struct getter {
	struct workqueue *q;
	char *key;
	bool ok;
	uint64_t at;
};

static void *getter_thread(void *arg)
{
	struct getter *g = arg;

	g->ok = workqueue_get(g->q, &g->key);
	g->at = now_ms();
	return NULL;
}

/* A worker already asleep (with nothing delayed) must wake for a delayed
 * key, and one sleeping towards a far deadline must wake for a sooner one. */
static void test_blocked_getter_wakes_for_delayed(void **state)
{
	struct workqueue *q = *state;
	struct getter g = { .q = q };
	pthread_t th;
	uint64_t t0;

	workqueue_add_after(q, "ns/far", 20000);
	assert_int_equal(pthread_create(&th, NULL, getter_thread, &g), 0);
	usleep(50000);
	t0 = now_ms();
	workqueue_add_after(q, "ns/soon", 100);
	pthread_join(th, NULL);
	assert_true(g.ok);
	assert_string_equal(g.key, "ns/soon");
	assert_true(g.at - t0 + 1 >= 100 && g.at - t0 <= 100 + SLACK_MS);
	workqueue_done(q, g.key);
	free(g.key);
}

static void test_delayed_key_being_processed(void **state)
{
	struct workqueue *q = *state;

	workqueue_add(q, "ns/a");
	expect_get(q, "ns/a");
	workqueue_add_after(q, "ns/a", 30);
	usleep(80000);
	/* Due, but a worker holds it: queued only after done. */
	assert_int_equal(workqueue_len(q), 0);
	workqueue_done(q, "ns/a");
	assert_int_equal(workqueue_len(q), 1);
	expect_get(q, "ns/a");
	workqueue_done(q, "ns/a");
}

/* ---- rate limiting ---- */

static void test_backoff_growth_and_forget(void **state)
{
	struct workqueue_opts o = { .base_delay_ms = 5, .max_delay_ms = 40 };
	struct workqueue *q = workqueue_new(&o);
	static const uint64_t want[] = { 5, 10, 20, 40, 40, 40 };

	(void)state;
	assert_non_null(q);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(workqueue_requeues(q, "ns/a"), i);
		assert_int_equal(workqueue_backoff_ms(q, "ns/a"), want[i]);
		assert_int_equal(workqueue_add_rate_limited(q, "ns/a"), 0);
	}
	assert_int_equal(workqueue_requeues(q, "ns/a"), 6);
	assert_int_equal(workqueue_requeues(q, "ns/b"), 0);
	/* Another key has its own backoff. */
	assert_int_equal(workqueue_backoff_ms(q, "ns/b"), 5);
	expect_get(q, "ns/a"); /* the earliest delay (5 ms) won */
	workqueue_forget(q, "ns/a");
	assert_int_equal(workqueue_requeues(q, "ns/a"), 0);
	assert_int_equal(workqueue_backoff_ms(q, "ns/a"), 5);
	workqueue_done(q, "ns/a");
	workqueue_forget(q, "ns/never");
	workqueue_free(q);
}

static void test_backoff_default_and_cap(void **state)
{
	struct workqueue *q = *state;
	uint64_t prev = 0, d;

	for (int i = 0; i < 100; i++) {
		d = workqueue_backoff_ms(q, "ns/a");
		if (i == 0)
			assert_int_equal(d, 5);
		assert_true(d >= prev && d <= 300000);
		prev = d;
		workqueue_add_rate_limited(q, "ns/a");
	}
	assert_int_equal(prev, 300000);
	assert_int_equal(workqueue_requeues(q, "ns/a"), 100);
	/* Pending for 300 s: shutdown drops it and nothing leaks. */
	workqueue_shutdown(q);
}

static void test_rate_limited_delays(void **state)
{
	struct workqueue_opts o = { .base_delay_ms = 60 };
	struct workqueue *q = workqueue_new(&o);
	uint64_t t0, t;

	(void)state;
	assert_non_null(q);
	t0 = now_ms();
	workqueue_add_rate_limited(q, "ns/a"); /* 60 ms */
	expect_get(q, "ns/a");
	t = now_ms() - t0;
	assert_true(t + 1 >= 60 && t <= 60 + SLACK_MS);
	workqueue_done(q, "ns/a");
	t0 = now_ms();
	workqueue_add_rate_limited(q, "ns/a"); /* 120 ms */
	expect_get(q, "ns/a");
	t = now_ms() - t0;
	assert_true(t + 1 >= 120 && t <= 120 + SLACK_MS);
	workqueue_done(q, "ns/a");
	workqueue_free(q);
}

/* ---- shutdown ---- */

static void test_shutdown_wakes_getters(void **state)
{
	struct workqueue *q = *state;
	struct getter g[4];
	pthread_t th[4];
	uint64_t t0;

	for (int i = 0; i < 4; i++) {
		g[i] = (struct getter){ .q = q };
		assert_int_equal(pthread_create(&th[i], NULL, getter_thread, &g[i]), 0);
	}
	workqueue_add_after(q, "ns/later", 20000); /* some sleep timed, some not */
	usleep(50000);
	t0 = now_ms();
	workqueue_shutdown(q);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_false(g[i].ok);
		assert_null(g[i].key);
		assert_true(g[i].at - t0 <= SLACK_MS);
	}
	assert_true(workqueue_shutting_down(q));
}

static void test_shutdown_drains(void **state)
{
	struct workqueue *q = *state;
	char *key = (char *)"x";

	workqueue_add(q, "ns/a");
	workqueue_add(q, "ns/b");
	workqueue_add_after(q, "ns/c", 10);
	workqueue_add_rate_limited(q, "ns/d");
	expect_get(q, "ns/a");
	workqueue_add(q, "ns/a"); /* dirty while processing, before shutdown */
	workqueue_shutdown(q);
	assert_int_equal(workqueue_add(q, "ns/e"), 0); /* ignored */
	assert_int_equal(workqueue_add_after(q, "ns/f", 1), 0);
	assert_int_equal(workqueue_add_rate_limited(q, "ns/g"), 0);
	expect_get(q, "ns/b");
	workqueue_done(q, "ns/b");
	workqueue_done(q, "ns/a"); /* its earlier add still counts */
	expect_get(q, "ns/a");
	workqueue_done(q, "ns/a");
	usleep(20000);
	assert_false(workqueue_get(q, &key));
	assert_null(key);
	assert_false(workqueue_get(q, &key));
	assert_int_equal(workqueue_len(q), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readd_while_processing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fifo_order_and_many_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_concurrent_processing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_after_order_and_timing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_after_earliest_wins, setup, teardown),
		cmocka_unit_test_setup_teardown(test_blocked_getter_wakes_for_delayed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delayed_key_being_processed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backoff_growth_and_forget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backoff_default_and_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limited_delays, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_wakes_getters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_drains, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
