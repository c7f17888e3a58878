#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 64

struct fd_entry {
	loop_fd_cb cb;
	void *arg;
	unsigned events;
	uint32_t gen; /* bumped on every add/del: stale epoll events are dropped */
	bool active;
};

struct loop_timer {
	struct loop *loop;
	loop_timer_cb cb;
	void *arg;
	uint64_t when;
	uint64_t seq; /* FIFO among equal deadlines */
	size_t heap_idx; /* SIZE_MAX when disarmed */
	struct loop_timer *prev, *next; /* all timers, for loop_free() */
};

struct post {
	loop_post_cb cb;
	void *arg;
	struct post *next;
};

struct sig_entry {
	loop_signal_cb cb;
	void *arg;
};

struct loop {
	int epfd;
	int wakefd; /* eventfd: loop_post() and loop_stop() */
	int sigfd;
	sigset_t sigmask;
	struct sig_entry sigs[_NSIG];

	struct fd_entry *fds;
	size_t nfds;

	struct loop_timer **heap;
	size_t heap_len, heap_cap;
	uint64_t timer_seq;
	struct loop_timer *timers;

	pthread_mutex_t post_lock; /* guards post_head, post_tail */
	struct post *post_head, *post_tail;

	uint64_t now;
	atomic_bool stop;
};

uint64_t loop_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t loop_now(struct loop *loop)
{
	return loop->now;
}

static void wake(struct loop *loop)
{
	uint64_t one = 1;
	ssize_t r;

	do
		r = write(loop->wakefd, &one, sizeof(one));
	while (r < 0 && errno == EINTR);
}

struct loop *loop_new(void)
{
	struct loop *loop = calloc(1, sizeof(*loop));
	struct epoll_event ev = { .events = EPOLLIN };

	if (!loop)
		return NULL;
	loop->epfd = -1;
	loop->wakefd = -1;
	loop->sigfd = -1;
	sigemptyset(&loop->sigmask);
	pthread_mutex_init(&loop->post_lock, NULL);
	loop->now = loop_mono_ms();

	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		goto fail;
	loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (loop->wakefd < 0)
		goto fail;
	/* Internal fds carry ids above any real fd in the top bits. */
	ev.data.u64 = UINT64_MAX;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) < 0)
		goto fail;
	return loop;
fail:
	loop_free(loop);
	return NULL;
}

void loop_free(struct loop *loop)
{
	struct loop_timer *t, *tn;
	struct post *p, *pn;

	if (!loop)
		return;
	for (t = loop->timers; t; t = tn) {
		tn = t->next;
		free(t);
	}
	for (p = loop->post_head; p; p = pn) {
		pn = p->next;
		free(p);
	}
	if (loop->sigfd >= 0) {
		sigprocmask(SIG_UNBLOCK, &loop->sigmask, NULL);
		close(loop->sigfd);
	}
	if (loop->wakefd >= 0)
		close(loop->wakefd);
	if (loop->epfd >= 0)
		close(loop->epfd);
	pthread_mutex_destroy(&loop->post_lock);
	free(loop->heap);
	free(loop->fds);
	free(loop);
}

/* ---- file descriptors ---------------------------------------------------- */

static uint32_t to_epoll(unsigned events)
{
	return (events & LOOP_READ ? EPOLLIN : 0) | (events & LOOP_WRITE ? EPOLLOUT : 0);
}

int loop_fd_add(struct loop *loop, int fd, unsigned events, loop_fd_cb cb, void *arg)
{
	struct epoll_event ev;

	if (fd < 0 || !cb)
		return -EINVAL;
	if ((size_t)fd >= loop->nfds) {
		size_t n = loop->nfds ? loop->nfds : 64;
		while (n <= (size_t)fd)
			n *= 2;
		struct fd_entry *f = realloc(loop->fds, n * sizeof(*f));
		if (!f)
			return -ENOMEM;
		memset(f + loop->nfds, 0, (n - loop->nfds) * sizeof(*f));
		loop->fds = f;
		loop->nfds = n;
	}
	struct fd_entry *e = &loop->fds[fd];
	if (e->active)
		return -EEXIST;
	e->gen++;
	ev.events = to_epoll(events);
	ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)e->gen << 32;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	e->cb = cb;
	e->arg = arg;
	e->events = events;
	e->active = true;
	return 0;
}

int loop_fd_modify(struct loop *loop, int fd, unsigned events)
{
	struct epoll_event ev;

	if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
		return -ENOENT;
	ev.events = to_epoll(events);
	ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)loop->fds[fd].gen << 32;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	loop->fds[fd].events = events;
	return 0;
}

int loop_fd_del(struct loop *loop, int fd)
{
	if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
		return -ENOENT;
	loop->fds[fd].active = false;
	loop->fds[fd].gen++;
	/* The fd may already be closed (EBADF); it is gone from epoll then. */
	if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno != EBADF && errno != ENOENT)
		return -errno;
	return 0;
}

/* ---- timers: a binary min-heap on (when, seq) ---------------------------- */

static bool before(const struct loop_timer *a, const struct loop_timer *b)
{
	return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_set(struct loop *loop, size_t i, struct loop_timer *t)
{
	loop->heap[i] = t;
	t->heap_idx = i;
}

static void sift_up(struct loop *loop, size_t i)
{
	struct loop_timer *t = loop->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!before(t, loop->heap[parent]))
			break;
		heap_set(loop, i, loop->heap[parent]);
		i = parent;
	}
	heap_set(loop, i, t);
}

static void sift_down(struct loop *loop, size_t i)
{
	struct loop_timer *t = loop->heap[i];

	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		const struct loop_timer *best = t;
		if (l < loop->heap_len && before(loop->heap[l], best)) {
			m = l;
			best = loop->heap[l];
		}
		if (r < loop->heap_len && before(loop->heap[r], best))
			m = r;
		if (m == i)
			break;
		heap_set(loop, i, loop->heap[m]);
		i = m;
	}
	heap_set(loop, i, t);
}

static void heap_remove(struct loop *loop, struct loop_timer *t)
{
	size_t i = t->heap_idx;
	struct loop_timer *last = loop->heap[--loop->heap_len];

	t->heap_idx = SIZE_MAX;
	if (last == t)
		return;
	heap_set(loop, i, last);
	sift_down(loop, i);
	sift_up(loop, last->heap_idx);
}

struct loop_timer *loop_timer_new(struct loop *loop, loop_timer_cb cb, void *arg)
{
	struct loop_timer *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->loop = loop;
	t->cb = cb;
	t->arg = arg;
	t->heap_idx = SIZE_MAX;
	t->next = loop->timers;
	if (loop->timers)
		loop->timers->prev = t;
	loop->timers = t;
	return t;
}

bool loop_timer_armed(const struct loop_timer *t)
{
	return t && t->heap_idx != SIZE_MAX;
}

void loop_timer_disarm(struct loop_timer *t)
{
	if (loop_timer_armed(t))
		heap_remove(t->loop, t);
}

void loop_timer_arm(struct loop_timer *t, uint64_t delay_ms)
{
	struct loop *loop = t->loop;

	loop_timer_disarm(t);
	if (loop->heap_len == loop->heap_cap) {
		size_t n = loop->heap_cap ? loop->heap_cap * 2 : 16;
		struct loop_timer **h = realloc(loop->heap, n * sizeof(*h));
		if (!h)
			abort(); /* a timer that silently never fires is worse */
		loop->heap = h;
		loop->heap_cap = n;
	}
	/* Relative to the real clock, not the cached one, so a long callback
	 * does not make the timer fire early. */
	t->when = loop_mono_ms() + delay_ms;
	t->seq = loop->timer_seq++;
	loop->heap[loop->heap_len] = t;
	t->heap_idx = loop->heap_len++;
	sift_up(loop, t->heap_idx);
}

void loop_timer_free(struct loop_timer *t)
{
	struct loop *loop;

	if (!t)
		return;
	loop = t->loop;
	loop_timer_disarm(t);
	if (t->prev)
		t->prev->next = t->next;
	else
		loop->timers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	free(t);
}

static int run_timers(struct loop *loop)
{
	int ran = 0;
	/* Only timers due now; a timer re-armed with 0 from its callback runs
	 * in the next iteration, so it cannot starve fds. */
	uint64_t now = loop_mono_ms();
	uint64_t seq_limit = loop->timer_seq;

	while (loop->heap_len > 0 && loop->heap[0]->when <= now) {
		struct loop_timer *t = loop->heap[0];
		if (t->seq >= seq_limit)
			break;
		heap_remove(loop, t);
		t->cb(loop, t, t->arg); /* may free t */
		ran++;
	}
	return ran;
}

/* ---- signals ------------------------------------------------------------- */

static void on_signalfd(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		int signo = (int)si.ssi_signo;
		if (signo > 0 && signo < _NSIG && loop->sigs[signo].cb)
			loop->sigs[signo].cb(loop, signo, loop->sigs[signo].arg);
	}
}

int loop_signal_add(struct loop *loop, int signo, loop_signal_cb cb, void *arg)
{
	sigset_t one;
	int fd, err;

	if (signo <= 0 || signo >= _NSIG || !cb)
		return -EINVAL;
	sigemptyset(&one);
	sigaddset(&one, signo);
	if (sigprocmask(SIG_BLOCK, &one, NULL) < 0)
		return -errno;
	sigaddset(&loop->sigmask, signo);
	fd = signalfd(loop->sigfd, &loop->sigmask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (loop->sigfd < 0) {
		loop->sigfd = fd;
		err = loop_fd_add(loop, fd, LOOP_READ, on_signalfd, NULL);
		if (err)
			return err;
	}
	loop->sigs[signo].cb = cb;
	loop->sigs[signo].arg = arg;
	return 0;
}

/* ---- cross-thread posts -------------------------------------------------- */

int loop_post(struct loop *loop, loop_post_cb cb, void *arg)
{
	struct post *p = malloc(sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->cb = cb;
	p->arg = arg;
	p->next = NULL;
	pthread_mutex_lock(&loop->post_lock);
	if (loop->post_tail)
		loop->post_tail->next = p;
	else
		loop->post_head = p;
	loop->post_tail = p;
	pthread_mutex_unlock(&loop->post_lock);
	wake(loop);
	return 0;
}

static int run_posts(struct loop *loop)
{
	struct post *p, *next;
	uint64_t v;
	int ran = 0;

	while (read(loop->wakefd, &v, sizeof(v)) > 0)
		;
	pthread_mutex_lock(&loop->post_lock);
	p = loop->post_head;
	loop->post_head = loop->post_tail = NULL;
	pthread_mutex_unlock(&loop->post_lock);
	for (; p; p = next) {
		next = p->next;
		p->cb(loop, p->arg);
		free(p);
		ran++;
	}
	return ran;
}

/* ---- running ------------------------------------------------------------- */

void loop_stop(struct loop *loop)
{
	loop->stop = true;
	wake(loop);
}

bool loop_stopped(const struct loop *loop)
{
	return loop->stop;
}

static int next_timeout(struct loop *loop, int max_ms)
{
	uint64_t now, when;
	int ms;

	if (loop->heap_len == 0)
		return max_ms;
	now = loop_mono_ms();
	when = loop->heap[0]->when;
	if (when <= now)
		return 0;
	ms = when - now > INT32_MAX ? INT32_MAX : (int)(when - now);
	return max_ms >= 0 && max_ms < ms ? max_ms : ms;
}

int loop_run_once(struct loop *loop, int timeout_ms)
{
	struct epoll_event evs[MAX_EVENTS];
	int n, ran = 0;

	n = epoll_wait(loop->epfd, evs, MAX_EVENTS, next_timeout(loop, timeout_ms));
	if (n < 0) {
		if (errno != EINTR)
			return -errno;
		n = 0;
	}
	loop->now = loop_mono_ms();
	for (int i = 0; i < n; i++) {
		uint64_t id = evs[i].data.u64;
		if (id == UINT64_MAX) {
			ran += run_posts(loop);
			continue;
		}
		int fd = (int)(uint32_t)id;
		uint32_t gen = (uint32_t)(id >> 32);
		/* Dropped if removed (or removed and re-added) earlier in this batch. */
		if ((size_t)fd >= loop->nfds || !loop->fds[fd].active || loop->fds[fd].gen != gen)
			continue;
		unsigned events = 0;
		if (evs[i].events & EPOLLIN)
			events |= LOOP_READ;
		if (evs[i].events & EPOLLOUT)
			events |= LOOP_WRITE;
		if (evs[i].events & EPOLLERR)
			events |= LOOP_ERROR;
		if (evs[i].events & (EPOLLHUP | EPOLLRDHUP))
			events |= LOOP_HUP;
		loop->fds[fd].cb(loop, fd, events, loop->fds[fd].arg);
		ran++;
	}
	ran += run_timers(loop);
	return ran;
}

int loop_run(struct loop *loop)
{
	/* Each run starts afresh: a loop_stop() ends the run it lands in. */
	loop->stop = false;
	while (!loop->stop) {
		int r = loop_run_once(loop, -1);
		if (r < 0)
			return r;
	}
	return 0;
}
