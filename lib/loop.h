/* The event loop every knit daemon runs on: epoll for file descriptors,
 * one-shot timers on a monotonic clock, signals through signalfd, and a
 * thread-safe post queue so worker threads can hand results back.
 *
 * Single-threaded: everything but loop_post() and loop_stop() must be called
 * from the loop's own thread. Callbacks may add, remove or free any fd,
 * timer or the one they run in; removal takes effect at once (no callback
 * runs for a removed fd or a disarmed timer afterwards). */
#ifndef KNIT_LOOP_H
#define KNIT_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_timer;

enum {
	LOOP_READ = 1u << 0,
	LOOP_WRITE = 1u << 1,
	/* reported only: */
	LOOP_ERROR = 1u << 2,
	LOOP_HUP = 1u << 3,
};

typedef void (*loop_fd_cb)(struct loop *loop, int fd, unsigned events, void *arg);
typedef void (*loop_timer_cb)(struct loop *loop, struct loop_timer *t, void *arg);
typedef void (*loop_signal_cb)(struct loop *loop, int signo, void *arg);
typedef void (*loop_post_cb)(struct loop *loop, void *arg);

struct loop *loop_new(void);
/* Frees the loop. Registered fds are not closed; timers still allocated are
 * freed; posted callbacks not yet run are dropped. */
void loop_free(struct loop *loop);

/* Runs until loop_stop() (called during this run: a stop before it does
 * not carry over). Returns 0, or a negative errno if epoll fails. */
int loop_run(struct loop *loop);
/* Runs one iteration, waiting at most timeout_ms (-1: until something
 * happens). Returns the number of callbacks run, or a negative errno. */
int loop_run_once(struct loop *loop, int timeout_ms);
/* Thread-safe; loop_run() returns after the current iteration. */
void loop_stop(struct loop *loop);
bool loop_stopped(const struct loop *loop);

/* Milliseconds on CLOCK_MONOTONIC, cached at the start of each iteration. */
uint64_t loop_now(struct loop *loop);
/* Uncached CLOCK_MONOTONIC milliseconds. */
uint64_t loop_mono_ms(void);

/* fd readiness; events is LOOP_READ|LOOP_WRITE. -EEXIST if fd is registered. */
int loop_fd_add(struct loop *loop, int fd, unsigned events, loop_fd_cb cb, void *arg);
int loop_fd_modify(struct loop *loop, int fd, unsigned events);
/* -ENOENT if fd is not registered. Does not close fd. */
int loop_fd_del(struct loop *loop, int fd);

/* Timers are one-shot; re-arm from the callback for periodic work. */
struct loop_timer *loop_timer_new(struct loop *loop, loop_timer_cb cb, void *arg);
void loop_timer_arm(struct loop_timer *t, uint64_t delay_ms);
void loop_timer_disarm(struct loop_timer *t);
bool loop_timer_armed(const struct loop_timer *t);
/* Disarms and frees; NULL is a no-op. */
void loop_timer_free(struct loop_timer *t);

/* Blocks signo for the process and delivers it through signalfd. Call
 * before starting threads so they inherit the mask. */
int loop_signal_add(struct loop *loop, int signo, loop_signal_cb cb, void *arg);

/* Thread-safe: runs cb(loop, arg) on the loop thread soon. -ENOMEM on
 * allocation failure. */
int loop_post(struct loop *loop, loop_post_cb cb, void *arg);

#endif
