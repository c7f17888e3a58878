#include "wg/send.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <time.h>
#include <sys/uio.h>

#include <sodium.h>

#include "log.h"
#include "loop.h"
#include "wg/engine.h"
#include "wg/hub.h"
#include "wg/noise.h"
#include "wg/peer.h"
#include "wg/pool.h"
#include "wg/queueing.h"

/* Datagrams per hub_send(): one GSO send takes up to 64. */
#define TX_SEND_BATCH 256
#define STAGED_JOBS_MAX (PEER_STAGED_RING / JOB_MAX)

/* Destination of a plain IP packet, for the allowed-IPs lookup. */
static const uint8_t *ip_dst(const uint8_t *pkt, size_t len, int *family)
{
	if (len >= 20 && pkt[0] >> 4 == 4) {
		*family = AF_INET;
		return pkt + 16;
	}
	if (len >= 40 && pkt[0] >> 4 == 6) {
		*family = AF_INET6;
		return pkt + 24;
	}
	return NULL;
}

/* Caller holds p->tx_lock. With no ring and no memory for one, buf is
 * dropped. */
static void staged_push(struct peer *p, uint8_t *buf, uint32_t len, uint8_t **dropped, size_t *ndropped)
{
	struct peer_staged *s = p->staged;

	if (!s && !(s = p->staged = malloc(sizeof(*s)))) {
		dropped[(*ndropped)++] = buf;
		return;
	}
	if (p->staged_count == PEER_STAGED_RING) {
		dropped[(*ndropped)++] = s->buf[p->staged_head];
		p->staged_head = (p->staged_head + 1) % PEER_STAGED_RING;
		p->staged_count--;
	}
	s->buf[(p->staged_head + p->staged_count) % PEER_STAGED_RING] = buf;
	s->len[(p->staged_head + p->staged_count) % PEER_STAGED_RING] = len;
	p->staged_count++;
}

/* Caller holds p->tx_lock; p->staged_count > 0. */
static uint8_t *staged_pop(struct peer *p, uint32_t *len)
{
	uint8_t *buf = p->staged->buf[p->staged_head];

	*len = p->staged->len[p->staged_head];
	p->staged_head = (p->staged_head + 1) % PEER_STAGED_RING;
	p->staged_count--;
	return buf;
}

static void stage(struct peer *p, uint8_t **bufs, const uint32_t *lens, size_t n)
{
	struct engine *e = p->engine;
	uint8_t *dropped[PEER_STAGED_RING];
	size_t ndropped = 0;

	pthread_mutex_lock(&p->tx_lock);
	for (size_t i = 0; i < n; i++) {
		staged_push(p, bufs[i], lens[i], dropped, &ndropped);
		if (ndropped == PEER_STAGED_RING) {
			pool_put(e->hub->pool, dropped, ndropped);
			atomic_fetch_add(&e->st_tx_dropped, ndropped);
			ndropped = 0;
		}
	}
	pthread_mutex_unlock(&p->tx_lock);
	pool_put(e->hub->pool, dropped, ndropped);
	atomic_fetch_add(&e->st_tx_dropped, ndropped);
	send_staged(p);
}

void send_tun_packets(struct engine *e, uint8_t **bufs, const struct pktbuf *pkts, size_t n)
{
	uint8_t *run[JOB_MAX * 8], *dropped[JOB_MAX * 8];
	uint32_t lens[JOB_MAX * 8];
	size_t nrun = 0, ndropped = 0;
	struct peer *cur = NULL, *cached = NULL;
	uint8_t cached_dst[16];
	int cached_family = 0;

	for (size_t i = 0; i < n; i++) {
		const uint8_t *dst;
		struct peer *p = NULL;
		bool hit = false;
		int family;

		dst = ip_dst(pkts[i].data, pkts[i].len, &family);
		if (dst && family == cached_family && !memcmp(dst, cached_dst, family == AF_INET ? 4 : 16)) {
			/* A batch is mostly one flow: one lookup per run. */
			p = cached;
			hit = true;
		} else if (dst) {
			struct allowedips_peer *ap = allowedips_lookup(&e->aips, family, dst);

			p = ap ? (struct peer *)((uint8_t *)ap - offsetof(struct peer, aip)) : NULL;
			cached = p;
			cached_family = family;
			memcpy(cached_dst, dst, family == AF_INET ? 4 : 16);
		}
		if (!p || atomic_load(&p->dead)) {
			atomic_fetch_add(&e->st_tx_no_route, 1);
			/* As the Linux module: the sender learns that no peer owns
			 * the address (once per run of one destination). */
			if (dst && !hit)
				tun_send_icmp(e->tun, pkts[i].data, pkts[i].len, TUN_ICMP_UNREACHABLE, 0);
			dropped[ndropped++] = bufs[i];
			if (ndropped == sizeof(dropped) / sizeof(dropped[0])) {
				pool_put(e->hub->pool, dropped, ndropped);
				ndropped = 0;
			}
			continue;
		}
		if (p != cur || nrun == sizeof(run) / sizeof(run[0])) {
			if (nrun)
				stage(cur, run, lens, nrun);
			nrun = 0;
			cur = p;
		}
		run[nrun] = bufs[i];
		lens[nrun++] = (uint32_t)pkts[i].len;
	}
	if (nrun)
		stage(cur, run, lens, nrun);
	if (ndropped)
		pool_put(e->hub->pool, dropped, ndropped);
}

void send_drop_staged(struct peer *p)
{
	struct engine *e = p->engine;
	uint8_t *bufs[PEER_STAGED_RING];
	size_t n = 0;
	uint32_t len;

	pthread_mutex_lock(&p->tx_lock);
	while (p->staged_count)
		bufs[n++] = staged_pop(p, &len);
	pthread_mutex_unlock(&p->tx_lock);
	pool_put(e->hub->pool, bufs, n);
	atomic_fetch_add(&e->st_tx_dropped, n);
}

void send_staged(struct peer *p)
{
	struct engine *e = p->engine;
	struct hub *h = e->hub;
	struct job *jobs[STAGED_JOBS_MAX];
	uint8_t *dropped[PEER_STAGED_RING];
	size_t njobs = 0, ndropped = 0;
	struct noise_keypair *kp;
	bool need_handshake = false;
	uint32_t len;

	if (atomic_load(&p->dead)) {
		send_drop_staged(p);
		return;
	}
	kp = noise_keypair_current(p->remote);
	pthread_mutex_lock(&p->tx_lock);
	if (!p->staged_count)
		goto unlock;
	if (!kp) {
		/* No session: keep the newest, and get one. */
		while (p->staged_count > PEER_STAGED_MAX)
			dropped[ndropped++] = staged_pop(p, &len);
		need_handshake = true;
		goto unlock;
	}
	while (p->staged_count) {
		struct job *j = NULL;

		if (p->txq.jobs < PEER_QUEUE_JOBS_MAX)
			j = queueing_job_new(&h->queue);
		if (!j) {
			while (p->staged_count)
				dropped[ndropped++] = staged_pop(p, &len);
			break;
		}
		j->dir = JOB_TX;
		j->peer = peer_get(p);
		j->kp = noise_keypair_get(kp);
		while (j->n < JOB_MAX && p->staged_count) {
			j->buf[j->n] = staged_pop(p, &j->plen[j->n]);
			j->n++;
		}
		if (p->txq.tail)
			p->txq.tail->next = j;
		else
			p->txq.head = j;
		p->txq.tail = j;
		p->txq.jobs++;
		jobs[njobs++] = j;
	}
unlock:
	pthread_mutex_unlock(&p->tx_lock);
	if (ndropped) {
		pool_put(h->pool, dropped, ndropped);
		atomic_fetch_add(&e->st_tx_dropped, ndropped);
	}
	if (kp) {
		/* Section 6.2: rekey after REKEY_AFTER_MESSAGES or REKEY_AFTER_TIME. */
		if (noise_keypair_should_rekey_send(kp, loop_mono_ms()))
			need_handshake = true;
		noise_keypair_put(kp);
	}
	if (need_handshake)
		peer_schedule(p, PEER_WORK_HANDSHAKE);
	queueing_submit(&h->queue, jobs, njobs);
}

void send_keepalive(struct peer *p)
{
	struct engine *e = p->engine;
	uint8_t *buf = NULL;
	bool queued = false;

	pthread_mutex_lock(&p->tx_lock);
	if (!p->staged_count && pool_get(e->hub->pool, &buf, 1)) {
		uint8_t *none[1];
		size_t nnone = 0;

		staged_push(p, buf, 0, none, &nnone);
		if (nnone)
			pool_put(e->hub->pool, none, nnone);
		queued = !nnone;
	}
	pthread_mutex_unlock(&p->tx_lock);
	if (queued)
		atomic_fetch_add(&e->st_keepalives, 1);
	send_staged(p);
}

/* Sealed packets to a peer routed through the relay: handed to the relay
 * client's queue (engine_config.relay_send), which copies them. Returns
 * how many it took; *bytes counts them. */
static size_t transmit_relayed(struct peer *p, struct job *list, unsigned long long *bad, uint64_t *bytes,
			       bool *data)
{
	struct engine *e = p->engine;
	struct iovec iov[JOB_MAX];
	size_t taken = 0;

	for (struct job *j = list; j; j = j->next) {
		size_t n = 0, k;
		bool has_data = false;

		for (unsigned i = 0; i < j->n; i++) {
			if (!j->ok[i]) {
				(*bad)++;
				continue;
			}
			iov[n++] = (struct iovec){ .iov_base = j->buf[i], .iov_len = j->len[i] };
			has_data |= j->plen[i] > 0;
		}
		if (!n)
			continue;
		k = e->cfg.relay_send(e->cfg.relay_arg, p->public_key, iov, n);
		if (k < n)
			atomic_fetch_add(&e->st_tx_dropped, n - k);
		for (size_t i = 0; i < k; i++)
			*bytes += iov[i].iov_len;
		*data |= k && has_data;
		taken += k;
	}
	return taken;
}

void send_transmit(struct peer *p, struct job *list)
{
	struct engine *e = p->engine;
	struct udp_msg msgs[TX_SEND_BATCH];
	size_t m = 0;
	uint64_t bytes = 0;
	bool sent = false, udp_sent = false, data = false, have_ep, link_down;
	struct endpoint ep;
	struct job *j, *last = NULL;
	unsigned long long no_ep = 0, bad = 0;
	enum peer_route route = peer_route(p, &ep);

	have_ep = route == PEER_ROUTE_DIRECT || route == PEER_ROUTE_BOTH;
	/* The link went down while these were sealed: they stay here. */
	link_down = !atomic_load(&e->link_up);
	for (j = list; j; j = j->next)
		last = j;
	if ((route == PEER_ROUTE_RELAY || route == PEER_ROUTE_BOTH) && !link_down) {
		unsigned long long bad_relayed = 0;
		uint64_t relayed_bytes = 0;

		sent = transmit_relayed(p, list, &bad_relayed, &relayed_bytes, &data) > 0;
		if (route == PEER_ROUTE_RELAY) {
			bad = bad_relayed;
			bytes = relayed_bytes;
			goto done;
		}
		/* Both: counted once, as sent directly below. */
	}
	for (j = list; j; j = j->next) {
		for (unsigned i = 0; i < j->n; i++) {
			if (!j->ok[i]) {
				bad++;
				continue;
			}
			if (link_down) {
				bad++;
				continue;
			}
			if (!have_ep) {
				no_ep++;
				continue;
			}
			msgs[m] = (struct udp_msg){ .data = j->buf[i], .len = j->len[i], .cap = j->len[i], .ep = ep };
			bytes += j->len[i];
			data |= j->plen[i] > 0;
			if (++m == TX_SEND_BATCH) {
				udp_sent |= hub_send(e->hub, msgs, m) > 0;
				m = 0;
			}
		}
	}
	if (m)
		udp_sent |= hub_send(e->hub, msgs, m) > 0;
	sent |= udp_sent;
	/* udp_send() retried without a local address we no longer have:
	 * forget it, so the next batch does not fail first. */
	if (have_ep && ep.has_src && udp_sent && !msgs[0].ep.has_src)
		peer_clear_endpoint_src(p);
done:
	if (no_ep)
		atomic_fetch_add(&e->st_tx_no_endpoint, no_ep);
	if (bad) {
		/* Sealing failed (the keypair expired under us), or the link
		 * is down and the handshake waits for it. */
		atomic_fetch_add(&e->st_tx_dropped, bad);
		peer_schedule(p, PEER_WORK_HANDSHAKE);
	}
	if (sent) {
		uint64_t now = loop_mono_ms();

		atomic_fetch_add(&p->tx_bytes, bytes);
		timers_on_authenticated_packet_sent(&p->timers, now);
		timers_on_authenticated_packet_traversed(&p->timers, now);
		if (data)
			timers_on_data_sent(&p->timers, now);
		if (last && noise_keypair_should_rekey_send(last->kp, now))
			peer_schedule(p, PEER_WORK_HANDSHAKE);
		peer_timers_changed(p);
	}
}

void send_job_seal(struct job *j)
{
	size_t mtu = (size_t)atomic_load(&j->peer->engine->mtu);
	uint64_t now = loop_mono_ms();
	uint32_t padded[JOB_MAX];

	/* A message must fit one datagram: padding stops there too. */
	if (mtu > MESSAGE_DATA_PAYLOAD_MAX)
		mtu = MESSAGE_DATA_PAYLOAD_MAX;
	for (unsigned i = 0; i < j->n; i++) {
		size_t plen = j->plen[i];

		/* Section 5.4.6: zero padding to a multiple of 16, capped by the MTU. */
		padded[i] = (uint32_t)message_data_padded_len(plen, mtu);
		memset(j->buf[i] + POOL_HEADROOM + plen, 0, padded[i] - plen);
	}
	/* One run: the AEAD pipelines the packets into one another. */
	noise_keypair_encrypt_many(j->kp, j->buf, padded, j->n, now, j->ok, j->len);
	atomic_store_explicit(&j->done, true, memory_order_release);
}

/* ---- handshake messages (loop thread) ---- */

void send_initiation(struct peer *p, bool is_retry)
{
	struct engine *e = p->engine;
	struct message_handshake_initiation msg;
	uint8_t ts[NOISE_TIMESTAMP_LEN];
	struct timespec rt;
	uint64_t now = loop_mono_ms();

	if (atomic_load(&p->dead) || !engine_link_ready(e) || !timers_may_send_initiation(&p->timers, now, is_retry))
		return;
	clock_gettime(CLOCK_REALTIME, &rt);
	noise_tai64n(ts, &rt);
	if (!noise_handshake_create_initiation(p->remote, &msg, ts))
		goto out;
	cookie_maker_add_macs(&p->cookie, &msg, sizeof(msg), now);
	timers_on_authenticated_packet_traversed(&p->timers, now);
	timers_on_authenticated_packet_sent(&p->timers, now);
	/* Without an endpoint it goes nowhere, but the retransmit timer runs
	 * as in the Linux module, so a later endpoint is tried soon. */
	if (peer_send_one(p, &msg, sizeof(msg))) {
		atomic_fetch_add(&p->tx_bytes, sizeof(msg));
		atomic_fetch_add(&e->st_hs_sent, 1);
	}
	timers_on_handshake_initiated(&p->timers, now);
	log_debug("handshake initiation sent", "dev=%s retry=%d", e->ifname, is_retry);
out:
	sodium_memzero(&msg, sizeof(msg));
	peer_timers_arm(p);
}

void send_response(struct peer *p)
{
	struct engine *e = p->engine;
	struct message_handshake_response msg;
	uint64_t now = loop_mono_ms();

	timers_on_authenticated_packet_traversed(&p->timers, now);
	timers_on_authenticated_packet_sent(&p->timers, now);
	timers_on_handshake_response_sent(&p->timers, now);
	if (!noise_handshake_create_response(p->remote, &msg))
		goto out;
	cookie_maker_add_macs(&p->cookie, &msg, sizeof(msg), now);
	if (!noise_handshake_begin_session(p->remote, now))
		goto out;
	timers_on_session_derived(&p->timers, now);
	if (peer_send_one(p, &msg, sizeof(msg))) {
		atomic_fetch_add(&p->tx_bytes, sizeof(msg));
		atomic_fetch_add(&e->st_hs_sent, 1);
	}
out:
	sodium_memzero(&msg, sizeof(msg));
	peer_timers_arm(p);
}
