#include "datagrams.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "disco/message.h"
#include "log.h"
#include "loop.h"
#include "stun/stun.h"

/* Datagrams handled per wakeup; the loop is woken again for the rest. */
#define DRAIN_BUDGET 64

struct slot {
	uint8_t data[DATAGRAMS_SLOT];
	uint16_t len;
	bool is_stun;
	struct endpoint from;
};

struct handler {
	datagrams_fn fn;
	void *arg;
	struct handler *next;
};

struct datagrams {
	struct loop *loop;
	int efd;

	pthread_mutex_t lock; /* guards ring, head, count */
	struct slot *ring;
	size_t head, count;

	struct handler *disco; /* loop thread */
	datagrams_fn stun;
	void *stun_arg;

	_Atomic unsigned long long st_disco, st_stun, st_garbage, st_dropped, st_disco_unknown, st_stun_unknown;
};

static void dispatch(struct datagrams *d, const struct slot *s)
{
	if (s->is_stun) {
		atomic_fetch_add(&d->st_stun, 1);
		if (!d->stun || !d->stun(d->stun_arg, s->data, s->len, &s->from))
			atomic_fetch_add(&d->st_stun_unknown, 1);
		return;
	}
	atomic_fetch_add(&d->st_disco, 1);
	for (struct handler *h = d->disco; h; h = h->next)
		if (h->fn(h->arg, s->data, s->len, &s->from))
			return;
	atomic_fetch_add(&d->st_disco_unknown, 1);
}

static void on_wake(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct datagrams *d = arg;
	struct slot s;
	uint64_t v;
	int budget = DRAIN_BUDGET;
	bool more;

	if (read(d->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_debug("datagrams: eventfd read failed", "errno=%d", errno);
	for (;;) {
		pthread_mutex_lock(&d->lock);
		more = d->count > 0 && budget-- > 0;
		if (more) {
			s = d->ring[d->head];
			d->head = (d->head + 1) % DATAGRAMS_RING;
			d->count--;
		}
		pthread_mutex_unlock(&d->lock);
		if (!more)
			break;
		dispatch(d, &s);
	}
	pthread_mutex_lock(&d->lock);
	more = d->count > 0;
	pthread_mutex_unlock(&d->lock);
	if (more) {
		v = 1;
		if (write(d->efd, &v, sizeof(v)) < 0)
			log_debug("datagrams: eventfd write failed", "errno=%d", errno);
	}
}

void datagrams_on_other(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from)
{
	struct datagrams *d = arg;
	bool is_stun = stun_is(pkt, len), wake = false, ok = false;
	uint64_t v = 1;

	if (len > DATAGRAMS_SLOT || (!is_stun && !disco_is(pkt, len))) {
		atomic_fetch_add(&d->st_garbage, 1);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (d->count < DATAGRAMS_RING) {
		struct slot *s = &d->ring[(d->head + d->count) % DATAGRAMS_RING];

		memcpy(s->data, pkt, len);
		s->len = (uint16_t)len;
		s->is_stun = is_stun;
		s->from = *from;
		wake = d->count++ == 0;
		ok = true;
	}
	pthread_mutex_unlock(&d->lock);
	if (!ok)
		atomic_fetch_add(&d->st_dropped, 1);
	if (wake) {
		/* Only an eventfd counter at its maximum refuses a write. */
		ssize_t w = write(d->efd, &v, sizeof(v));
		(void)w;
	}
}

int datagrams_new(struct datagrams **out, struct loop *loop)
{
	struct datagrams *d = calloc(1, sizeof(*d));
	int r = -ENOMEM;

	*out = NULL;
	if (!d)
		return -ENOMEM;
	d->loop = loop;
	d->efd = -1;
	pthread_mutex_init(&d->lock, NULL);
	if (!(d->ring = calloc(DATAGRAMS_RING, sizeof(*d->ring))))
		goto out;
	d->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d->efd < 0) {
		r = -errno;
		goto out;
	}
	if ((r = loop_fd_add(loop, d->efd, LOOP_READ, on_wake, d)))
		goto out;
	*out = d;
	r = 0;
out:
	if (r)
		datagrams_free(d);
	return r;
}

void datagrams_free(struct datagrams *d)
{
	if (!d)
		return;
	if (d->efd >= 0) {
		loop_fd_del(d->loop, d->efd);
		close(d->efd);
	}
	while (d->disco) {
		struct handler *h = d->disco;
		d->disco = h->next;
		free(h);
	}
	free(d->ring);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

int datagrams_add_disco(struct datagrams *d, datagrams_fn fn, void *arg)
{
	struct handler *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->fn = fn;
	h->arg = arg;
	h->next = d->disco;
	d->disco = h;
	return 0;
}

void datagrams_remove_disco(struct datagrams *d, void *arg)
{
	for (struct handler **pp = &d->disco; *pp; pp = &(*pp)->next) {
		if ((*pp)->arg == arg) {
			struct handler *h = *pp;
			*pp = h->next;
			free(h);
			return;
		}
	}
}

void datagrams_set_stun(struct datagrams *d, datagrams_fn fn, void *arg)
{
	d->stun = fn;
	d->stun_arg = arg;
}

void datagrams_stats(struct datagrams *d, struct datagrams_stats *out)
{
	out->disco = atomic_load(&d->st_disco);
	out->stun = atomic_load(&d->st_stun);
	out->garbage = atomic_load(&d->st_garbage);
	out->dropped = atomic_load(&d->st_dropped);
	out->disco_unknown = atomic_load(&d->st_disco_unknown);
	out->stun_unknown = atomic_load(&d->st_stun_unknown);
}
