#include "wg/peer.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <sodium.h>

#include "log.h"
#include "wg/engine.h"
#include "wg/hub.h"
#include "wg/noise.h"
#include "wg/pool.h"
#include "wg/queueing.h"
#include "wg/receive.h"
#include "wg/send.h"

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg);

struct peer *peer_new(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	struct peer *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->engine = e;
	memcpy(p->public_key, pub, NOISE_PUBLIC_KEY_LEN);
	atomic_init(&p->refcount, 1);
	atomic_init(&p->timer_armed, TIMERS_OFF);
	pthread_mutex_init(&p->endpoint_lock, NULL);
	pthread_mutex_init(&p->tx_lock, NULL);
	pthread_mutex_init(&p->rx_lock, NULL);
	cookie_maker_init(&p->cookie, pub);
	timers_init(&p->timers, NULL, NULL);
	p->timer = loop_timer_new(e->hub->loop, on_timer, p);
	p->remote = noise_remote_new(e->noise, pub, p);
	atomic_fetch_add(&e->npeers, 1);
	if (!p->timer || !p->remote) {
		peer_kill(p);
		peer_put(p);
		return NULL;
	}
	return p;
}

static void peer_destroy(struct peer *p)
{
	struct engine *e = p->engine;

	send_drop_staged(p);
	free(p->staged);
	noise_remote_free(p->remote);
	cookie_maker_destroy(&p->cookie);
	timers_destroy(&p->timers);
	pthread_mutex_destroy(&p->endpoint_lock);
	pthread_mutex_destroy(&p->tx_lock);
	pthread_mutex_destroy(&p->rx_lock);
	sodium_memzero(p, sizeof(*p));
	free(p);
	atomic_fetch_sub(&e->npeers, 1);
}

struct peer *peer_get(struct peer *p)
{
	atomic_fetch_add_explicit(&p->refcount, 1, memory_order_relaxed);
	return p;
}

void peer_put(struct peer *p)
{
	if (p && atomic_fetch_sub_explicit(&p->refcount, 1, memory_order_acq_rel) == 1)
		peer_destroy(p);
}

void peer_kill(struct peer *p)
{
	atomic_store(&p->dead, true);
	timers_stop(&p->timers);
	loop_timer_free(p->timer);
	p->timer = NULL;
	if (p->remote) {
		noise_handshake_clear(p->remote);
		noise_keypairs_clear(p->remote);
	}
	send_drop_staged(p);
	allowedips_remove_by_peer(&p->engine->aips, &p->aip);
}

void peer_set_endpoint(struct peer *p, const struct endpoint *ep)
{
	struct endpoint e = *ep;
	bool check = false;

	if (e.addr.sa.sa_family != AF_INET && e.addr.sa.sa_family != AF_INET6)
		return;
	pthread_mutex_lock(&p->endpoint_lock);
	if (e.has_src && p->has_rejected && endpoint_equal_src(&p->rejected, &e))
		endpoint_clear_src(&e); /* the kernel chooses, as it would */
	if (!p->has_endpoint || !endpoint_equal_src(&p->endpoint, &e)) {
		p->endpoint = e;
		p->has_endpoint = true;
		check = e.has_src;
	}
	pthread_mutex_unlock(&p->endpoint_lock);
	if (check)
		peer_schedule(p, PEER_WORK_CHECK_SRC);
}

void peer_check_src(struct peer *p, bool routes_changed)
{
	struct endpoint ep;
	int oif;

	if (routes_changed) {
		pthread_mutex_lock(&p->endpoint_lock);
		p->has_rejected = false;
		pthread_mutex_unlock(&p->endpoint_lock);
	}
	if (!peer_endpoint(p, &ep) || !ep.has_src || !ep.src_ifindex)
		return;
	oif = hub_route_oif(p->engine->hub, &ep);
	if (oif <= 0 || oif == ep.src_ifindex)
		return;
	pthread_mutex_lock(&p->endpoint_lock);
	if (p->has_endpoint && endpoint_equal_src(&p->endpoint, &ep)) {
		p->rejected = ep;
		p->has_rejected = true;
		endpoint_clear_src(&p->endpoint);
	}
	pthread_mutex_unlock(&p->endpoint_lock);
	log_debug("source address dropped", "dev=%s ifindex=%d route=%d", p->engine->ifname, ep.src_ifindex, oif);
}

bool peer_endpoint(struct peer *p, struct endpoint *out)
{
	bool has;

	pthread_mutex_lock(&p->endpoint_lock);
	has = p->has_endpoint;
	if (has)
		*out = p->endpoint;
	pthread_mutex_unlock(&p->endpoint_lock);
	return has;
}

enum peer_route peer_route(struct peer *p, struct endpoint *out)
{
	enum peer_route r = PEER_ROUTE_NONE;

	pthread_mutex_lock(&p->endpoint_lock);
	if (p->via_relay && p->engine->cfg.relay_send) {
		r = PEER_ROUTE_RELAY;
		if (p->also_direct && p->has_endpoint) {
			*out = p->endpoint;
			r = PEER_ROUTE_BOTH;
		}
	} else if (p->has_endpoint) {
		*out = p->endpoint;
		r = PEER_ROUTE_DIRECT;
	}
	pthread_mutex_unlock(&p->endpoint_lock);
	return r;
}

void peer_set_route(struct peer *p, bool via_relay, const struct endpoint *ep)
{
	if (ep)
		peer_set_endpoint(p, ep);
	pthread_mutex_lock(&p->endpoint_lock);
	p->via_relay = via_relay;
	p->also_direct = via_relay && ep;
	pthread_mutex_unlock(&p->endpoint_lock);
}

bool peer_send_one(struct peer *p, const void *pkt, size_t len)
{
	struct engine *e = p->engine;
	struct endpoint ep;

	switch (peer_route(p, &ep)) {
	case PEER_ROUTE_DIRECT:
		return hub_send_one(e->hub, &ep, pkt, len) > 0;
	case PEER_ROUTE_RELAY:
		return e->cfg.relay_send(e->cfg.relay_arg, p->public_key,
					 &(struct iovec){ .iov_base = (void *)pkt, .iov_len = len }, 1) == 1;
	case PEER_ROUTE_BOTH: {
		bool relayed = e->cfg.relay_send(e->cfg.relay_arg, p->public_key,
						 &(struct iovec){ .iov_base = (void *)pkt, .iov_len = len }, 1) == 1;

		return (hub_send_one(e->hub, &ep, pkt, len) > 0) | relayed;
	}
	default:
		return false;
	}
}

void peer_clear_endpoint_src(struct peer *p)
{
	pthread_mutex_lock(&p->endpoint_lock);
	endpoint_clear_src(&p->endpoint);
	pthread_mutex_unlock(&p->endpoint_lock);
}

/* ---- work for the loop thread ---- */

void peer_schedule(struct peer *p, unsigned work)
{
	struct hub *h = p->engine->hub;

	if (atomic_load(&p->dead))
		return;
	/* Only the first bit set queues the peer; later ones ride along. */
	if (atomic_fetch_or(&p->work, work))
		return;
	peer_get(p);
	pthread_mutex_lock(&h->work_lock);
	p->work_next = h->work_head;
	h->work_head = p;
	pthread_mutex_unlock(&h->work_lock);
	hub_wake(h);
}

void peer_run_scheduled(struct hub *h)
{
	struct peer *list, *p;

	pthread_mutex_lock(&h->work_lock);
	list = h->work_head;
	h->work_head = NULL;
	pthread_mutex_unlock(&h->work_lock);
	while ((p = list)) {
		unsigned work;

		/* Read the link first: once work is cleared, p may be queued again. */
		list = p->work_next;
		work = atomic_exchange(&p->work, 0);
		if (!atomic_load(&p->dead)) {
			if (work & PEER_WORK_HANDSHAKE)
				send_initiation(p, false);
			if (work & PEER_WORK_REARM)
				peer_timers_arm(p);
			if (work & PEER_WORK_CHECK_SRC)
				peer_check_src(p, false);
		}
		peer_put(p);
	}
}

/* ---- timers ---- */

void peer_timers_changed(struct peer *p)
{
	if (timers_next_deadline(&p->timers) < atomic_load(&p->timer_armed))
		peer_schedule(p, PEER_WORK_REARM);
}

void peer_timers_arm(struct peer *p)
{
	uint64_t next, now;

	if (!p->timer)
		return;
	/* While we compute, any new deadline counts as earlier (see
	 * peer_timers_changed()), so none is missed. */
	atomic_store(&p->timer_armed, TIMERS_OFF);
	next = timers_next_deadline(&p->timers);
	if (next == TIMERS_OFF) {
		loop_timer_disarm(p->timer);
	} else {
		now = loop_mono_ms();
		loop_timer_arm(p->timer, next > now ? next - now : 0);
	}
	atomic_store(&p->timer_armed, next);
}

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct peer *p = arg;
	unsigned actions = timers_expire(&p->timers, loop_mono_ms());

	if (actions & (TIMERS_SEND_INITIATION | TIMERS_RETRY_INITIATION))
		peer_clear_endpoint_src(p);
	if (actions & TIMERS_RETRY_INITIATION)
		send_initiation(p, true);
	if (actions & TIMERS_SEND_INITIATION)
		send_initiation(p, false);
	if (actions & TIMERS_GIVE_UP)
		send_drop_staged(p);
	if (actions & TIMERS_ZERO_KEYS) {
		noise_handshake_clear(p->remote);
		noise_keypairs_clear(p->remote);
	}
	if (actions & TIMERS_SEND_KEEPALIVE)
		send_keepalive(p);
	peer_timers_arm(p);
}

void peer_set_persistent_keepalive(struct peer *p, uint16_t interval)
{
	p->persistent_keepalive = interval;
	if (timers_set_persistent_keepalive(&p->timers, interval, loop_mono_ms()))
		send_keepalive(p);
	peer_timers_arm(p);
}

void peer_flush(struct peer *p, enum job_dir dir)
{
	pthread_mutex_t *lock = dir == JOB_TX ? &p->tx_lock : &p->rx_lock;
	struct peer_queue *q = dir == JOB_TX ? &p->txq : &p->rxq;

	for (;;) {
		struct job *list = NULL, **tail = &list;
		bool more;

		if (atomic_exchange(&q->flushing, true))
			return;
		pthread_mutex_lock(lock);
		while (q->head && atomic_load_explicit(&q->head->done, memory_order_acquire)) {
			struct job *j = q->head;
			q->head = j->next;
			if (!q->head)
				q->tail = NULL;
			q->jobs--;
			j->next = NULL;
			*tail = j;
			tail = &j->next;
		}
		pthread_mutex_unlock(lock);
		if (list) {
			if (dir == JOB_TX)
				send_transmit(p, list);
			else
				receive_deliver(p, list);
			while (list) {
				struct job *j = list;
				list = j->next;
				peer_release_job(j);
			}
		}
		atomic_store(&q->flushing, false);
		pthread_mutex_lock(lock);
		more = q->head && atomic_load_explicit(&q->head->done, memory_order_acquire);
		pthread_mutex_unlock(lock);
		if (!more)
			return;
	}
}

void peer_release_job(struct job *j)
{
	struct peer *p = j->peer;
	struct hub *h = p->engine->hub;

	pool_put(h->pool, j->buf, j->n);
	noise_keypair_put(j->kp);
	queueing_job_free(&h->queue, j);
	peer_put(p);
}
