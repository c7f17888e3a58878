#include "wg/engine.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "log.h"
#include "net/tun.h"
#include "policy/filter.h"
#include "wg/aead.h"
#include "wg/noise.h"
#include "wg/peer.h"
#include "wg/pool.h"
#include "wg/send.h"

#define TUN_BATCH 128
#define WATCH_MS 1000
/* wireguard-go's and wg-quick's default tunnel MTU. */
#define DEFAULT_MTU 1420

/* ---- the peer table (loop thread) ---- */

static size_t bucket_of(const struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	uint64_t h;

	/* Public keys are uniformly random: their first bytes hash well. */
	memcpy(&h, pub, sizeof(h));
	return (size_t)(h & (e->table_size - 1));
}

struct peer *engine_peer_lookup(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	for (struct peer *p = e->table[bucket_of(e, pub)]; p; p = p->hash_next)
		if (!memcmp(p->public_key, pub, NOISE_PUBLIC_KEY_LEN))
			return p;
	return NULL;
}

static int table_grow(struct engine *e)
{
	size_t nsize = e->table_size * 2;
	struct peer **nt = calloc(nsize, sizeof(*nt)), **old = e->table;
	size_t osize = e->table_size;

	if (!nt)
		return -ENOMEM;
	e->table = nt;
	e->table_size = nsize;
	for (size_t i = 0; i < osize; i++) {
		struct peer *p = old[i], *next;
		for (; p; p = next) {
			size_t b = bucket_of(e, p->public_key);
			next = p->hash_next;
			p->hash_next = nt[b];
			nt[b] = p;
		}
	}
	free(old);
	return 0;
}

static void link_peer(struct engine *e, struct peer *p)
{
	size_t b;

	if (e->npeers_live >= e->table_size)
		table_grow(e); /* on ENOMEM the chains just get longer */
	b = bucket_of(e, p->public_key);
	p->hash_next = e->table[b];
	e->table[b] = p;
	p->list_prev = NULL;
	p->list_next = e->peers;
	if (e->peers)
		e->peers->list_prev = p;
	e->peers = p;
	e->npeers_live++;
}

static void unlink_peer(struct engine *e, struct peer *p)
{
	for (struct peer **pp = &e->table[bucket_of(e, p->public_key)]; *pp; pp = &(*pp)->hash_next) {
		if (*pp == p) {
			*pp = p->hash_next;
			break;
		}
	}
	if (p->list_prev)
		p->list_prev->list_next = p->list_next;
	else
		e->peers = p->list_next;
	if (p->list_next)
		p->list_next->list_prev = p->list_prev;
	p->list_next = p->list_prev = p->hash_next = NULL;
	e->npeers_live--;
}

/* Called by noise with the identity lock held: must not re-enter it. */
static struct noise_remote *remote_get(void *arg, const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	struct peer *p = engine_peer_lookup(arg, pub);

	return p && !atomic_load(&p->dead) ? p->remote : NULL;
}

/* ---- the TUN thread ---- */

static void tun_gone(struct engine *e, int err)
{
	if (!atomic_exchange(&e->tun_down, true)) {
		log_warn("tun device failed", "dev=%s errno=%d", e->ifname, err);
		hub_wake(e->hub);
	}
}

/* Outbound packets open (or refresh) connection-tracking state, so the
 * replies to what this device starts pass the inbound filter. A packet
 * for which the table has no room goes back to the pool. */
static size_t track_out(struct engine *e, uint8_t **bufs, struct pktbuf *pkts, size_t n)
{
	uint8_t v[TUN_BATCH];
	size_t kept = 0;

	filter_check_out(e->filter, pkts, n, loop_mono_ms(), v);
	for (size_t i = 0; i < n; i++) {
		if (v[i] == FILTER_ACCEPT) {
			bufs[kept] = bufs[i];
			pkts[kept++] = pkts[i];
		} else {
			pool_put(e->hub->pool, &bufs[i], 1);
		}
	}
	return kept;
}

/* A packet bigger than a small slot (a tunnel MTU above
 * POOL_PAYLOAD_MAX, up to MESSAGE_DATA_PAYLOAD_MAX): a large slot instead. */
static int tun_grow(void *arg, struct pktbuf *p, size_t len)
{
	struct engine *e = arg;
	uint8_t *buf = p->data - POOL_HEADROOM;

	if (len > POOL_LARGE_PAYLOAD_MAX)
		return -EMSGSIZE;
	if (!pool_swap_large(e->hub->pool, &buf)) {
		int r = pool_large_wait(&e->large_wait, loop_mono_ms());

		if (r == -ENOMEM)
			atomic_fetch_add(&e->st_tx_no_large, 1);
		return r;
	}
	e->large_wait = 0;
	p->data = buf + POOL_HEADROOM;
	p->cap = POOL_LARGE_PAYLOAD_MAX;
	return 0;
}

/* Reads until the device is drained: tun_read() may hold the rest of a
 * super-packet, which poll() cannot see. */
static void tun_drain(struct engine *e)
{
	struct hub *h = e->hub;
	uint8_t *bufs[TUN_BATCH];
	struct pktbuf pkts[TUN_BATCH];

	while (!atomic_load(&e->dead)) {
		size_t got = pool_get(h->pool, bufs, TUN_BATCH);
		int r;

		if (!got) {
			if (!queueing_help(&h->queue, 4))
				usleep(50);
			continue;
		}
		for (size_t i = 0; i < got; i++)
			pkts[i] = (struct pktbuf){ .data = bufs[i] + POOL_HEADROOM, .cap = POOL_PAYLOAD_MAX };
		r = tun_read(e->tun, pkts, got);
		/* tun_grow() may have swapped slots for large ones. */
		for (size_t i = 0; i < got; i++)
			bufs[i] = pkts[i].data - POOL_HEADROOM;
		if (r == -ENOBUFS) {
			/* A packet waits for a large slot: help free one. */
			pool_put(h->pool, bufs, got);
			if (!queueing_help(&h->queue, 4))
				usleep(50);
			continue;
		}
		if (r <= 0) {
			pool_put(h->pool, bufs, got);
			if (r != -EAGAIN && r != -EINTR)
				tun_gone(e, -r);
			return;
		}
		pool_put(h->pool, bufs + r, got - (size_t)r);
		if (e->filter)
			r = (int)track_out(e, bufs, pkts, (size_t)r);
		send_tun_packets(e, bufs, pkts, (size_t)r);
		if (h->cfg.readers_help)
			queueing_help(&h->queue, SIZE_MAX);
		hub_qs_online(h, &e->tun_qs);
	}
}

static void *tun_main(void *arg)
{
	struct engine *e = arg;
	struct pollfd pfd[2] = {
		{ .fd = tun_fd(e->tun), .events = POLLIN },
		{ .fd = e->stop_efd, .events = POLLIN },
	};

	queueing_thread_helps(e->hub->cfg.readers_help);
	while (!atomic_load(&e->dead)) {
		int n;

		hub_qs_offline(&e->tun_qs);
		/* After a failure only the stop event is of interest. */
		n = poll(atomic_load(&e->tun_down) ? pfd + 1 : pfd, atomic_load(&e->tun_down) ? 1 : 2, -1);
		hub_qs_online(e->hub, &e->tun_qs);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			tun_gone(e, errno);
			break;
		}
		if (pfd[1].revents || atomic_load(&e->dead))
			break;
		if (atomic_load(&e->tun_down))
			continue;
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			tun_gone(e, EIO);
		else if (pfd[0].revents & POLLIN)
			tun_drain(e);
	}
	hub_qs_offline(&e->tun_qs);
	aead_thread_cleanup();
	return NULL;
}

/* The link went up or down (loop thread). Down is the Linux module's
 * wg_stop(): sessions, handshakes and staged packets go, and nothing is
 * sent until it is up again; up is wg_open(): staged packets leave and
 * persistent keepalives start at once. */
static void link_changed(struct engine *e, bool up)
{
	if (atomic_exchange(&e->link_up, up) == up)
		return;
	log_debug("link", "dev=%s up=%d", e->ifname, up);
	for (struct peer *p = e->peers; p; p = p->list_next) {
		if (!up) {
			noise_handshake_clear(p->remote);
			noise_keypairs_clear(p->remote);
			timers_reset_handshake_limit(&p->timers);
			send_drop_staged(p);
			continue;
		}
		send_staged(p);
		if (p->persistent_keepalive)
			send_keepalive(p);
	}
}

/* Reads the device's MTU and link state through the TUN fd, wherever the
 * device is now (tun.h: moved to another namespace, renamed). Only a
 * device really deleted (EBADFD on the fd) takes the engine down. */
static void refresh(struct engine *e)
{
	bool up;
	int mtu, ret = tun_get_link(e->tun, &mtu, &up);

	if (ret == -EBADFD)
		tun_gone(e, EBADFD);
	if (ret)
		return;
	if (atomic_exchange(&e->mtu, mtu) != mtu)
		log_info("tun mtu changed", "dev=%s mtu=%d", e->ifname, mtu);
	link_changed(e, up);
}

bool engine_link_ready(struct engine *e)
{
	/* Believed down: look again, the watch may not have seen it come up. */
	if (!atomic_load(&e->link_up) && !atomic_load(&e->tun_down))
		refresh(e);
	return atomic_load(&e->link_up);
}

static void on_watch(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct engine *e = arg;

	refresh(e);
	engine_check_down(e);
	loop_timer_arm(t, WATCH_MS);
}

void engine_check_down(struct engine *e)
{
	if (!atomic_load(&e->tun_down) || e->down_reported)
		return;
	e->down_reported = true;
	log_info("tun device gone", "dev=%s", e->ifname);
	if (e->cfg.on_down)
		e->cfg.on_down(e->cfg.arg, e);
}

/* ---- life cycle ---- */

int engine_new(struct engine **out, struct hub *hub, const struct engine_config *cfg)
{
	struct engine *e = calloc(1, sizeof(*e));
	struct noise_upcalls up = { .remote_get = remote_get };
	int ret, mtu = DEFAULT_MTU;
	bool link_up = false;

	*out = NULL;
	if (!e)
		return -ENOMEM;
	e->hub = hub;
	e->cfg = *cfg;
	e->stop_efd = -1;
	pthread_mutex_init(&e->tun_write_lock, NULL);
	allowedips_init(&e->aips);
	cookie_checker_init(&e->cookie);
	up.arg = e;
	e->noise = noise_local_new(&up, hub->index);
	e->table_size = 64;
	e->table = calloc(e->table_size, sizeof(*e->table));
	e->stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!e->noise || !e->table) {
		ret = -ENOMEM;
		goto out;
	}
	if (e->stop_efd < 0) {
		ret = -errno;
		goto out;
	}
	if (cfg->filtered && (ret = filter_new(&e->filter, 0)))
		goto out;
	ret = tun_open(&e->tun, cfg->ifname, 0);
	if (ret)
		goto out;
	snprintf(e->ifname, sizeof(e->ifname), "%s", tun_name(e->tun));
	tun_set_grow(e->tun, tun_grow, e, MESSAGE_DATA_PAYLOAD_MAX);
	if (tun_set_mtu(e->tun, DEFAULT_MTU) < 0 || tun_get_mtu(e->tun, &mtu) < 0)
		log_warn("tun mtu unknown", "dev=%s", e->ifname);
	atomic_store(&e->mtu, mtu);
	if (tun_get_up(e->tun, &link_up) == 0)
		atomic_store(&e->link_up, link_up);
	e->watch = loop_timer_new(hub->loop, on_watch, e);
	if (!e->watch) {
		ret = -ENOMEM;
		goto out;
	}
	loop_timer_arm(e->watch, WATCH_MS);
	hub_qs_register(hub, &e->tun_qs);
	ret = -pthread_create(&e->tun_thread, NULL, tun_main, e);
	if (ret) {
		hub_qs_unregister(hub, &e->tun_qs);
		goto out;
	}
	pthread_setname_np(e->tun_thread, "knit-tun");
	e->tun_thread_started = true;
	hub_attach(hub, e);
	log_info("engine up", "dev=%s vnet=%d offloads=0x%x mtu=%d", e->ifname, tun_vnet(e->tun),
		 tun_offloads(e->tun), mtu);
	*out = e;
out:
	if (ret) {
		loop_timer_free(e->watch);
		tun_close(e->tun);
		if (e->stop_efd >= 0)
			close(e->stop_efd);
		free(e->table);
		if (e->noise)
			noise_local_free(e->noise);
		cookie_checker_destroy(&e->cookie);
		allowedips_free(&e->aips);
		pthread_mutex_destroy(&e->tun_write_lock);
		free(e);
	}
	return ret;
}

void engine_free(struct engine *e)
{
	struct hub *h;

	if (!e)
		return;
	h = e->hub;
	atomic_store(&e->dead, true);
	if (e->tun_thread_started) {
		uint64_t one = 1;
		if (write(e->stop_efd, &one, sizeof(one)) < 0)
			log_warn("engine stop signal failed", "errno=%d", errno);
		pthread_join(e->tun_thread, NULL);
		hub_qs_unregister(h, &e->tun_qs);
	}
	loop_timer_free(e->watch);
	engine_peers_clear(e);
	hub_detach(h, e);
	/* Jobs in flight and scheduled loop work hold the last references:
	 * let them finish (helping, in case there are no workers). */
	peer_run_scheduled(h);
	while (atomic_load(&e->npeers)) {
		if (!queueing_help(&h->queue, 16)) {
			peer_run_scheduled(h);
			usleep(200);
		}
	}
	tun_close(e->tun);
	noise_local_free(e->noise);
	cookie_checker_destroy(&e->cookie);
	allowedips_free(&e->aips);
	filter_free(e->filter);
	free(e->table);
	close(e->stop_efd);
	pthread_mutex_destroy(&e->tun_write_lock);
	log_info("engine down", "dev=%s", e->ifname);
	sodium_memzero(e, sizeof(*e));
	free(e);
}

const char *engine_ifname(const struct engine *e)
{
	return e->ifname;
}

/* ---- configuration (loop thread) ---- */

/* Two-phase removal of a set of peers already unlinked and killed. */
static void bury(struct engine *e, struct peer *list)
{
	hub_synchronize(e->hub);
	while (list) {
		struct peer *next = list->list_next;
		/* No data-path thread holds it any more: the counts are final. */
		e->removed_rx_bytes += atomic_load(&list->rx_bytes);
		e->removed_tx_bytes += atomic_load(&list->tx_bytes);
		list->list_next = NULL;
		peer_put(list);
		list = next;
	}
}

int engine_peer_remove(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	struct peer *p = engine_peer_lookup(e, pub);

	if (!p)
		return -ENOENT;
	peer_kill(p);
	unlink_peer(e, p);
	bury(e, p);
	return 0;
}

void engine_peers_clear(struct engine *e)
{
	struct peer *list = NULL, *p;

	while ((p = e->peers)) {
		peer_kill(p);
		unlink_peer(e, p);
		p->list_next = list;
		list = p;
	}
	bury(e, list);
}

bool engine_public_key(const struct engine *e, uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	if (e->has_private_key)
		memcpy(pub, e->public_key, NOISE_PUBLIC_KEY_LEN);
	return e->has_private_key;
}

int engine_set_private_key(struct engine *e, const uint8_t key[NOISE_PUBLIC_KEY_LEN])
{
	uint8_t pub[NOISE_PUBLIC_KEY_LEN], clamped[NOISE_PUBLIC_KEY_LEN];
	int ret = 0;

	if (!key || sodium_is_zero(key, NOISE_PUBLIC_KEY_LEN)) {
		noise_local_set_private(e->noise, NULL);
		cookie_checker_set_public(&e->cookie, NULL);
		e->has_private_key = false;
		sodium_memzero(e->private_key, sizeof(e->private_key));
		memset(e->public_key, 0, sizeof(e->public_key));
		goto out;
	}
	/* RFC 7748 section 5: the key as X25519 uses it, which is what the
	 * kernel and wireguard-go store and report. */
	memcpy(clamped, key, NOISE_PUBLIC_KEY_LEN);
	clamped[0] &= 248;
	clamped[31] = (clamped[31] & 127) | 64;
	if (e->has_private_key && !sodium_memcmp(clamped, e->private_key, NOISE_PUBLIC_KEY_LEN))
		goto out;
	if (!noise_public_from_private(pub, clamped)) {
		ret = -EINVAL;
		goto out;
	}
	/* As the Linux module: a peer with our own key cannot exist. */
	engine_peer_remove(e, pub);
	if (!noise_local_set_private(e->noise, clamped)) {
		ret = -EINVAL;
		goto out;
	}
	cookie_checker_set_public(&e->cookie, pub);
	memcpy(e->private_key, clamped, NOISE_PUBLIC_KEY_LEN);
	memcpy(e->public_key, pub, NOISE_PUBLIC_KEY_LEN);
	e->has_private_key = true;
	/* Sessions under the old identity may not send any more; a peer with
	 * a persistent keepalive hears from the new one at once, as from the
	 * Linux module (and so learns our endpoint). */
	for (struct peer *p = e->peers; p; p = p->list_next) {
		noise_handshake_clear(p->remote);
		noise_keypairs_expire(p->remote);
		timers_reset_handshake_limit(&p->timers);
		if (p->persistent_keepalive && engine_link_ready(e))
			send_keepalive(p);
	}
out:
	sodium_memzero(pub, sizeof(pub));
	sodium_memzero(clamped, sizeof(clamped));
	return ret;
}

int engine_peer_set(struct engine *e, const struct uapi_peer *up)
{
	struct peer *p;
	int ret = 0;

	if (e->has_private_key && !memcmp(up->public_key, e->public_key, NOISE_PUBLIC_KEY_LEN))
		return 0;
	p = engine_peer_lookup(e, up->public_key);
	if (up->flags & UAPI_PEER_REMOVE) {
		if (p)
			engine_peer_remove(e, up->public_key);
		return 0;
	}
	if (!p) {
		if (up->flags & UAPI_PEER_UPDATE_ONLY)
			return 0;
		p = peer_new(e, up->public_key);
		if (!p)
			return -ENOMEM;
		link_peer(e, p);
	}
	if (up->flags & UAPI_PEER_HAS_PRESHARED_KEY)
		noise_remote_set_psk(p->remote, sodium_is_zero(up->preshared_key, NOISE_SYMMETRIC_KEY_LEN)
							 ? NULL
							 : up->preshared_key);
	if (up->flags & UAPI_PEER_HAS_ENDPOINT) {
		struct endpoint ep = up->endpoint;
		endpoint_clear_src(&ep);
		peer_set_endpoint(p, &ep);
	}
	if (up->flags & UAPI_PEER_REPLACE_ALLOWED_IPS)
		allowedips_remove_by_peer(&e->aips, &p->aip);
	for (size_t i = 0; i < up->n_allowed_ips && !ret; i++) {
		const struct uapi_allowed_ip *a = &up->allowed_ips[i];
		ret = allowedips_insert(&e->aips, a->family, &a->ip, a->cidr, &p->aip);
	}
	if (!ret && (up->flags & UAPI_PEER_HAS_KEEPALIVE))
		peer_set_persistent_keepalive(p, up->persistent_keepalive);
	return ret;
}

int engine_set(struct engine *e, const struct uapi_config *c)
{
	int ret = 0;

	if (c->flags & UAPI_DEVICE_HAS_PRIVATE_KEY)
		ret = engine_set_private_key(e, c->private_key);
	if (!ret && (c->flags & UAPI_DEVICE_HAS_LISTEN_PORT)) {
		if (e->cfg.owns_port)
			ret = hub_set_port(e->hub, c->listen_port);
		else if (c->listen_port != hub_port(e->hub))
			ret = -EBUSY; /* the node's socket is shared */
	}
	if (!ret && (c->flags & UAPI_DEVICE_HAS_FWMARK)) {
		if (e->cfg.owns_port)
			ret = hub_set_fwmark(e->hub, c->fwmark);
		else if (c->fwmark != hub_fwmark(e->hub))
			ret = -EBUSY;
	}
	if (!ret && (c->flags & UAPI_DEVICE_REPLACE_PEERS))
		engine_peers_clear(e);
	for (size_t i = 0; i < c->n_peers && !ret; i++)
		ret = engine_peer_set(e, &c->peers[i]);
	if (ret)
		log_warn("configuration refused", "dev=%s errno=%d", e->ifname, -ret);
	return ret;
}

/* ---- reading ---- */

struct aip_list {
	struct uapi_allowed_ip *v;
	size_t n, cap;
};

static int collect_aip(void *arg, int family, const uint8_t *addr, uint8_t cidr)
{
	struct aip_list *l = arg;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 4;
		struct uapi_allowed_ip *nv = realloc(l->v, ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = ncap;
	}
	memset(&l->v[l->n], 0, sizeof(l->v[l->n]));
	l->v[l->n].family = family;
	memcpy(&l->v[l->n].ip, addr, family == AF_INET ? 4 : 16);
	l->v[l->n].cidr = cidr;
	l->n++;
	return 0;
}

int engine_get(struct engine *e, struct uapi_device *d)
{
	size_t i = 0;
	int ret = 0;

	d->has_private_key = e->has_private_key;
	if (e->has_private_key)
		memcpy(d->private_key, e->private_key, NOISE_PUBLIC_KEY_LEN);
	d->listen_port = hub_port(e->hub);
	d->fwmark = hub_fwmark(e->hub);
	/* Sized by the list it walks; an engine without peers reports none. */
	size_t n = 0;

	d->n_peers = 0;
	for (struct peer *p = e->peers; p; p = p->list_next)
		n++;
	d->peers = calloc(n ? n : 1, sizeof(*d->peers));
	if (!d->peers)
		return -ENOMEM;
	for (struct peer *p = e->peers; p && !ret; p = p->list_next, i++) {
		struct uapi_peer_state *ps = &d->peers[i];
		struct aip_list l = { 0 };
		int64_t hs = atomic_load(&p->last_handshake_ns);

		d->n_peers = i + 1;
		memcpy(ps->public_key, p->public_key, NOISE_PUBLIC_KEY_LEN);
		noise_remote_psk(p->remote, ps->preshared_key);
		ps->has_endpoint = peer_endpoint(p, &ps->endpoint);
		ps->last_handshake_sec = hs / 1000000000;
		ps->last_handshake_nsec = hs % 1000000000;
		ps->rx_bytes = atomic_load(&p->rx_bytes);
		ps->tx_bytes = atomic_load(&p->tx_bytes);
		ps->persistent_keepalive = p->persistent_keepalive;
		ret = allowedips_foreach(&e->aips, &p->aip, collect_aip, &l);
		ps->allowed_ips = l.v;
		ps->n_allowed_ips = l.n;
	}
	return ret;
}

/* A current keypair that may send. */
static bool has_session(struct peer *p)
{
	struct noise_keypair *kp = noise_keypair_current(p->remote);
	bool ok = kp != NULL;

	noise_keypair_put(kp);
	return ok;
}

int engine_peer_stats(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN], struct engine_peer_stats *out)
{
	struct peer *p = engine_peer_lookup(e, pub);

	memset(out, 0, sizeof(*out));
	if (!p)
		return -ENOENT;
	out->has_endpoint = peer_endpoint(p, &out->endpoint);
	out->last_handshake_ns = atomic_load(&p->last_handshake_ns);
	out->rx_bytes = atomic_load(&p->rx_bytes);
	out->tx_bytes = atomic_load(&p->tx_bytes);
	out->persistent_keepalive = p->persistent_keepalive;
	out->handshake_attempts = timers_handshake_attempts(&p->timers);
	out->has_session = has_session(p);
	pthread_mutex_lock(&p->endpoint_lock);
	out->via_relay = p->via_relay && e->cfg.relay_send;
	pthread_mutex_unlock(&p->endpoint_lock);
	return 0;
}

void engine_stats(struct engine *e, struct engine_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->tx_no_route = atomic_load(&e->st_tx_no_route);
	out->tx_no_endpoint = atomic_load(&e->st_tx_no_endpoint);
	out->tx_dropped = atomic_load(&e->st_tx_dropped);
	out->tx_no_large = atomic_load(&e->st_tx_no_large);
	out->rx_bad_source = atomic_load(&e->st_rx_bad_source);
	out->rx_bad_packet = atomic_load(&e->st_rx_bad_packet);
	out->rx_auth_failed = atomic_load(&e->st_rx_auth);
	out->rx_replayed = atomic_load(&e->st_rx_replay);
	out->rx_dropped = atomic_load(&e->st_rx_dropped);
	out->handshakes_sent = atomic_load(&e->st_hs_sent);
	out->handshakes_received = atomic_load(&e->st_hs_received);
	out->keepalives_sent = atomic_load(&e->st_keepalives);
	out->peers = e->npeers_live;
	out->rx_bytes = e->removed_rx_bytes;
	out->tx_bytes = e->removed_tx_bytes;
	for (struct peer *p = e->peers; p; p = p->list_next) {
		out->rx_bytes += atomic_load(&p->rx_bytes);
		out->tx_bytes += atomic_load(&p->tx_bytes);
		out->peers_with_session += has_session(p);
	}
	out->mtu = atomic_load(&e->mtu);
	tun_stats(e->tun, &out->tun);
}

static int uapi_get(void *arg, struct uapi_device *out)
{
	return engine_get(arg, out);
}

static int uapi_set(void *arg, const struct uapi_config *c)
{
	return engine_set(arg, c);
}

const struct uapi_ops engine_uapi_ops = { .get = uapi_get, .set = uapi_set };

int engine_peer_handshake(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	struct peer *p = engine_peer_lookup(e, pub);

	if (!p)
		return -ENOENT;
	send_initiation(p, false);
	return 0;
}

int engine_peer_set_path(struct engine *e, const uint8_t pub[NOISE_PUBLIC_KEY_LEN], bool via_relay,
			 const struct endpoint *ep)
{
	struct peer *p = engine_peer_lookup(e, pub);

	if (!p)
		return -ENOENT;
	peer_set_route(p, via_relay, ep);
	/* An initiation still unanswered went out on the previous path, which
	 * may never have carried it (a restarted knitd's first ones leave
	 * through the relay before disco finds the direct path): it goes
	 * again on the new one now, not when REKEY_TIMEOUT (5 s) retries it. */
	if (timers_pending(&p->timers, TIMER_RETRANSMIT_HANDSHAKE) && engine_link_ready(e)) {
		timers_reset_handshake_limit(&p->timers);
		send_initiation(p, true);
	}
	return 0;
}

struct filter *engine_filter(const struct engine *e)
{
	return e->filter;
}
