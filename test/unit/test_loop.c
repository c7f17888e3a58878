#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "loop.h"

static int setup(void **state)
{
	alarm(20); /* no test here may hang the suite */
	*state = loop_new();
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	loop_free(*state);
	alarm(0);
	return 0;
}

/* ---- fds ---- */

struct fdctx {
	int reads;
	int other_fd; /* removed from inside the callback */
	struct loop *loop;
};

static void on_read(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct fdctx *c = arg;
	char ch;

	assert_true(events & LOOP_READ);
	assert_int_equal(read(fd, &ch, 1), 1);
	c->reads++;
	if (c->other_fd >= 0) {
		assert_int_equal(loop_fd_del(loop, c->other_fd), 0);
		c->other_fd = -1;
	}
}

static void test_fd_readiness(void **state)
{
	struct loop *loop = *state;
	struct fdctx c = { .other_fd = -1 };
	int p[2];

	assert_int_equal(pipe(p), 0);
	assert_int_equal(loop_fd_add(loop, p[0], LOOP_READ, on_read, &c), 0);
	assert_int_equal(loop_fd_add(loop, p[0], LOOP_READ, on_read, &c), -EEXIST);
	assert_int_equal(loop_run_once(loop, 0), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(loop_run_once(loop, 1000), 1);
	assert_int_equal(c.reads, 1);
	assert_int_equal(loop_fd_del(loop, p[0]), 0);
	assert_int_equal(loop_fd_del(loop, p[0]), -ENOENT);
	assert_int_equal(write(p[1], "y", 1), 1);
	assert_int_equal(loop_run_once(loop, 0), 0);
	assert_int_equal(c.reads, 1);
	close(p[0]);
	close(p[1]);
}

static void test_fd_removed_in_same_batch(void **state)
{
	struct loop *loop = *state;
	struct fdctx a = { .other_fd = -1 }, b = { .other_fd = -1 };
	int p[2], q[2];

	assert_int_equal(pipe(p), 0);
	assert_int_equal(pipe(q), 0);
	assert_int_equal(loop_fd_add(loop, p[0], LOOP_READ, on_read, &a), 0);
	assert_int_equal(loop_fd_add(loop, q[0], LOOP_READ, on_read, &b), 0);
	/* Whichever runs first removes the other: the other must not run. */
	a.other_fd = q[0];
	b.other_fd = p[0];
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(write(q[1], "x", 1), 1);
	assert_int_equal(loop_run_once(loop, 1000), 1);
	assert_int_equal(a.reads + b.reads, 1);
	loop_fd_del(loop, p[0]);
	loop_fd_del(loop, q[0]);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

static void on_write(struct loop *loop, int fd, unsigned events, void *arg)
{
	int *n = arg;

	assert_true(events & LOOP_WRITE);
	(*n)++;
	loop_fd_modify(loop, fd, 0);
}

static void test_fd_write_and_modify(void **state)
{
	struct loop *loop = *state;
	int p[2], n = 0;

	assert_int_equal(pipe(p), 0);
	assert_int_equal(loop_fd_add(loop, p[1], LOOP_WRITE, on_write, &n), 0);
	assert_int_equal(loop_run_once(loop, 1000), 1);
	assert_int_equal(loop_run_once(loop, 0), 0);
	assert_int_equal(n, 1);
	assert_int_equal(loop_fd_modify(loop, 12345, LOOP_READ), -ENOENT);
	loop_fd_del(loop, p[1]);
	close(p[0]);
	close(p[1]);
}

/* ---- timers ---- */

struct tctx {
	int order[8];
	int n;
	int id;
	struct tctx *base;
};

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct tctx *c = arg;

	c->base->order[c->base->n++] = c->id;
}

static void test_timer_order(void **state)
{
	struct loop *loop = *state;
	struct tctx base = { 0 }, c[4];
	struct loop_timer *t[4];
	const uint64_t delays[4] = { 30, 10, 20, 10 };
	uint64_t start = loop_mono_ms();

	for (int i = 0; i < 4; i++) {
		c[i] = (struct tctx){ .id = i, .base = &base };
		t[i] = loop_timer_new(loop, on_timer, &c[i]);
		assert_non_null(t[i]);
		loop_timer_arm(t[i], delays[i]);
	}
	while (base.n < 4)
		assert_true(loop_run_once(loop, 1000) >= 0);
	/* Earliest first; equal deadlines keep arming order. */
	assert_int_equal(base.order[0], 1);
	assert_int_equal(base.order[1], 3);
	assert_int_equal(base.order[2], 2);
	assert_int_equal(base.order[3], 0);
	assert_true(loop_mono_ms() - start >= 30);
	for (int i = 0; i < 4; i++) {
		assert_false(loop_timer_armed(t[i]));
		loop_timer_free(t[i]);
	}
}

static void test_timer_disarm_and_rearm(void **state)
{
	struct loop *loop = *state;
	struct tctx base = { 0 }, c = { .id = 7, .base = &base };
	struct loop_timer *t = loop_timer_new(loop, on_timer, &c);

	loop_timer_arm(t, 0);
	assert_true(loop_timer_armed(t));
	loop_timer_disarm(t);
	assert_false(loop_timer_armed(t));
	assert_int_equal(loop_run_once(loop, 20), 0);
	assert_int_equal(base.n, 0);
	/* Re-arming an armed timer moves it, it does not duplicate it. */
	loop_timer_arm(t, 5000);
	loop_timer_arm(t, 0);
	assert_int_equal(loop_run_once(loop, 1000), 1);
	assert_int_equal(loop_run_once(loop, 20), 0);
	assert_int_equal(base.n, 1);
	loop_timer_free(t);
}

static void free_self(struct loop *loop, struct loop_timer *t, void *arg)
{
	(*(int *)arg)++;
	loop_timer_free(t);
}

static void test_timer_freed_in_callback(void **state)
{
	struct loop *loop = *state;
	int fired = 0;
	struct loop_timer *t = loop_timer_new(loop, free_self, &fired);

	loop_timer_arm(t, 1);
	while (!fired)
		loop_run_once(loop, 1000);
	assert_int_equal(fired, 1);
	/* Leaked timers would be reported by LeakSanitizer: loop_free() frees
	 * the ones left allocated, and this one must already be gone. */
	struct loop_timer *left = loop_timer_new(loop, free_self, &fired);
	loop_timer_arm(left, 100000);
}

struct periodic {
	int count;
};

static void rearm_zero(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct periodic *p = arg;

	p->count++;
	loop_timer_arm(t, 0);
}

static void test_zero_rearm_does_not_starve(void **state)
{
	struct loop *loop = *state;
	struct periodic p = { 0 };
	struct loop_timer *t = loop_timer_new(loop, rearm_zero, &p);

	loop_timer_arm(t, 0);
	/* Each iteration runs it once; it must not spin inside one iteration. */
	assert_int_equal(loop_run_once(loop, 100), 1);
	assert_int_equal(loop_run_once(loop, 100), 1);
	assert_int_equal(p.count, 2);
	loop_timer_free(t);
}

static void test_many_timers(void **state)
{
	struct loop *loop = *state;
	enum { N = 2000 };
	struct loop_timer **t = calloc(N, sizeof(*t));
	int fired = 0;

	for (int i = 0; i < N; i++) {
		t[i] = loop_timer_new(loop, free_self, &fired);
		loop_timer_arm(t[i], (uint64_t)(i * 7919) % 50);
	}
	/* Cancel every third one. */
	for (int i = 0; i < N; i += 3)
		loop_timer_free(t[i]);
	int expect = N - (N + 2) / 3;
	while (fired < expect)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_int_equal(loop_run_once(loop, 60), 0);
	assert_int_equal(fired, expect);
	free(t);
}

/* ---- signals ---- */

static void on_signal(struct loop *loop, int signo, void *arg)
{
	*(int *)arg = signo;
	loop_stop(loop);
}

static void test_signal(void **state)
{
	struct loop *loop = *state;
	int got = 0;

	assert_int_equal(loop_signal_add(loop, SIGUSR1, on_signal, &got), 0);
	assert_int_equal(loop_signal_add(loop, 0, on_signal, &got), -EINVAL);
	raise(SIGUSR1);
	assert_int_equal(loop_run(loop), 0);
	assert_int_equal(got, SIGUSR1);
	assert_true(loop_stopped(loop));
}

/* ---- posts and cross-thread stop ---- */

struct postctx {
	struct loop *loop;
	int ran;
	pthread_t tid;
};

static void on_post(struct loop *loop, void *arg)
{
	struct postctx *c = arg;

	assert_true(pthread_equal(pthread_self(), c->tid));
	if (++c->ran == 1000)
		loop_stop(loop);
}

static void *poster(void *arg)
{
	struct postctx *c = arg;

	for (int i = 0; i < 1000; i++)
		assert_int_equal(loop_post(c->loop, on_post, c), 0);
	return NULL;
}

static void test_post_from_thread(void **state)
{
	struct postctx c = { .loop = *state, .tid = pthread_self() };
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, poster, &c), 0);
	assert_int_equal(loop_run(c.loop), 0);
	pthread_join(th, NULL);
	assert_int_equal(c.ran, 1000);
}

static void *stopper(void *arg)
{
	usleep(20000);
	loop_stop(arg);
	return NULL;
}

static void test_stop_from_thread(void **state)
{
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, stopper, *state), 0);
	assert_int_equal(loop_run(*state), 0); /* blocks with no fds or timers */
	pthread_join(th, NULL);
}

static void test_posts_dropped_on_free(void **state)
{
	struct postctx c = { .loop = *state };

	/* Never run: loop_free() must release them without leaking. */
	assert_int_equal(loop_post(c.loop, on_post, &c), 0);
	assert_int_equal(loop_post(c.loop, on_post, &c), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fd_readiness, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_removed_in_same_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_write_and_modify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_disarm_and_rearm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_freed_in_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_rearm_does_not_starve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_timers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_from_thread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_from_thread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_posts_dropped_on_free, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
