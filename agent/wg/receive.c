#include "wg/receive.h"

#include <arpa/inet.h>
#include <endian.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "log.h"
#include "loop.h"
#include "policy/filter.h"
#include "wg/engine.h"
#include "wg/hub.h"
#include "wg/noise.h"
#include "wg/peer.h"
#include "wg/pool.h"
#include "wg/queueing.h"
#include "wg/ratelimiter.h"
#include "wg/send.h"

#define RX_JOBS_MAX 256
#define TUN_WRITE_BATCH 256
/* Handshake messages per loop wakeup; the loop is woken again for more. */
#define HANDSHAKE_BUDGET 256

static int64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- data messages ---- */

/* Queues a job on its peer's rx queue, or drops it when too many wait. */
static bool close_job(struct job *j)
{
	struct peer *p = j->peer;
	bool ok;

	pthread_mutex_lock(&p->rx_lock);
	ok = p->rxq.jobs < PEER_QUEUE_JOBS_MAX;
	if (ok) {
		if (p->rxq.tail)
			p->rxq.tail->next = j;
		else
			p->rxq.head = j;
		p->rxq.tail = j;
		p->rxq.jobs++;
	}
	pthread_mutex_unlock(&p->rx_lock);
	if (!ok) {
		atomic_fetch_add(&p->engine->st_rx_dropped, j->n);
		peer_release_job(j);
	}
	return ok;
}

static void drop(struct hub *h, uint8_t **dropped, size_t *n, uint8_t *buf)
{
	dropped[(*n)++] = buf;
	if (*n == RX_JOBS_MAX) {
		pool_put(h->pool, dropped, *n);
		*n = 0;
	}
}

void receive_datagrams(struct hub *h, struct udp_msg *msgs, size_t n)
{
	struct job *jobs[RX_JOBS_MAX], *cur = NULL;
	uint8_t *dropped[RX_JOBS_MAX];
	size_t njobs = 0, ndropped = 0;
	uint32_t cur_index = 0;
	bool wake = false;

	for (size_t i = 0; i < n; i++) {
		struct udp_msg *m = &msgs[i];
		enum message_type type = message_classify(m->data, m->len);

		if (type == MESSAGE_DATA) {
			uint32_t index;

			memcpy(&index, m->data + offsetof(struct message_data, key_idx), sizeof(index));
			index = le32toh(index);
			if (!cur || index != cur_index || cur->n == JOB_MAX) {
				struct noise_keypair *kp;
				struct peer *p;
				struct job *j;

				if (cur && close_job(cur))
					jobs[njobs++] = cur;
				cur = NULL;
				kp = noise_keypair_lookup(h->index, index);
				if (!kp) {
					atomic_fetch_add(&h->st_unknown, 1);
					drop(h, dropped, &ndropped, m->data);
					continue;
				}
				p = noise_remote_arg(noise_keypair_remote(kp));
				j = atomic_load(&p->dead) || njobs == RX_JOBS_MAX ? NULL : queueing_job_new(&h->queue);
				if (!j) {
					noise_keypair_put(kp);
					atomic_fetch_add(&p->engine->st_rx_dropped, 1);
					drop(h, dropped, &ndropped, m->data);
					continue;
				}
				j->dir = JOB_RX;
				j->kp = kp; /* the lookup's reference */
				j->peer = peer_get(p);
				cur = j;
				cur_index = index;
			}
			cur->buf[cur->n] = m->data;
			cur->len[cur->n] = (uint32_t)m->len;
			cur->ep[cur->n] = m->ep;
			cur->n++;
			continue;
		}
		if (type != MESSAGE_INVALID) {
			/* Handshakes go to the loop; the queue copies them. */
			hub_handshake_enqueue(h, m->data, m->len, &m->ep);
			wake = true;
		} else if (h->cfg.other) {
			h->cfg.other(h->cfg.other_arg, m->data, m->len, &m->ep);
			atomic_fetch_add(&h->st_other, 1);
		} else {
			atomic_fetch_add(&h->st_invalid, 1);
		}
		drop(h, dropped, &ndropped, m->data);
	}
	if (cur && close_job(cur))
		jobs[njobs++] = cur;
	if (ndropped)
		pool_put(h->pool, dropped, ndropped);
	if (wake)
		hub_wake(h);
	queueing_submit(&h->queue, jobs, njobs);
}

void receive_relayed(struct hub *h, const uint8_t src[32], const uint8_t *pkt, size_t len)
{
	struct udp_msg m = { 0 };
	enum message_type type = len <= POOL_BUF_SIZE ? message_classify(pkt, len) : MESSAGE_INVALID;

	if (type != MESSAGE_INVALID && type != MESSAGE_DATA) {
		/* Handshakes to the loop, with the sender's key for a cookie
		 * reply (the queue copies them). */
		if (hub_handshake_enqueue_relayed(h, pkt, len, src))
			hub_wake(h);
		return;
	}
	if (type == MESSAGE_INVALID || !pool_get(h->pool, &m.data, 1)) {
		atomic_fetch_add(&h->st_invalid, 1);
		return;
	}
	memcpy(m.data, pkt, len);
	m.len = len;
	m.cap = POOL_BUF_SIZE;
	m.ep.addr.sa.sa_family = AF_UNSPEC;
	receive_datagrams(h, &m, 1);
}

/* Length of the IP packet at the start of plain (the rest is padding),
 * and its source address; 0 if it is not a well-formed IP packet. */
static size_t inner_packet(const uint8_t *plain, size_t len, int *family, const uint8_t **src)
{
	size_t total;

	if (len >= 20 && plain[0] >> 4 == 4) {
		total = (size_t)plain[2] << 8 | plain[3];
		if (total < 20 || total > len || (plain[0] & 0x0f) < 5)
			return 0;
		*family = AF_INET;
		*src = plain + 12;
		return total;
	}
	if (len >= 40 && plain[0] >> 4 == 6) {
		total = 40 + ((size_t)plain[4] << 8 | plain[5]);
		if (total > len)
			return 0;
		*family = AF_INET6;
		*src = plain + 8;
		return total;
	}
	return 0;
}

static void tun_flush(struct engine *e, struct pktbuf *out, size_t *n)
{
	if (!*n)
		return;
	/* The tailnet policy, after the source check (the peer may send from
	 * these addresses) and before the TUN. A dropped packet's buffer goes
	 * back to the pool with its job. */
	if (e->filter) {
		uint8_t v[TUN_WRITE_BATCH];
		size_t kept = 0;

		filter_check_in(e->filter, out, *n, loop_mono_ms(), v);
		for (size_t i = 0; i < *n; i++)
			if (v[i] == FILTER_ACCEPT)
				out[kept++] = out[i];
		*n = kept;
		if (!kept)
			return;
	}
	pthread_mutex_lock(&e->tun_write_lock);
	/* Each packet passed its AEAD tag: coalescing need not re-verify
	 * inner checksums. */
	if (tun_write(e->tun, out, *n, TUN_WRITE_CSUM_TRUSTED) < 0)
		atomic_fetch_add(&e->st_rx_dropped, *n);
	pthread_mutex_unlock(&e->tun_write_lock);
	*n = 0;
}

/* In order: counters, cryptokey routing's source check, roaming, then
 * the TUN. */
void receive_deliver(struct peer *p, struct job *list)
{
	struct engine *e = p->engine;
	struct pktbuf out[TUN_WRITE_BATCH];
	size_t nout = 0;
	uint64_t bytes = 0, now;
	bool authed = false, data = false, confirmed = false;
	struct endpoint from;
	struct job *last = NULL;
	unsigned long long auth_failed = 0, replayed = 0, bad_packet = 0, bad_source = 0;

	for (struct job *j = list; j; j = j->next) {
		bool job_authed = false;

		for (unsigned i = 0; i < j->n; i++) {
			const uint8_t *src;
			size_t len;
			int family;

			switch (j->ok[i]) {
			case NOISE_RX_OK:
				break;
			case NOISE_RX_AUTH:
				auth_failed++;
				continue;
			case NOISE_RX_REPLAY:
				replayed++;
				continue;
			default:
				bad_packet++;
				continue;
			}
			job_authed = true;
			from = j->ep[i];
			bytes += j->len[i];
			if (!j->plen[i])
				continue; /* keepalive */
			len = inner_packet(j->buf[i] + POOL_HEADROOM, j->plen[i], &family, &src);
			if (!len) {
				bad_packet++;
				continue;
			}
			if (allowedips_lookup(&e->aips, family, src) != &p->aip) {
				bad_source++;
				continue;
			}
			data = true;
			out[nout++] = (struct pktbuf){ .data = j->buf[i] + POOL_HEADROOM, .len = len, .cap = len };
			if (nout == TUN_WRITE_BATCH) {
				peer_set_endpoint(p, &from);
				tun_flush(e, out, &nout);
			}
		}
		if (job_authed) {
			authed = true;
			last = j;
			/* The initiator's first data packet confirms a responder's
			 * new keypair (section 5.4.7). */
			if (noise_keypair_received_with(j->kp))
				confirmed = true;
		}
	}
	/* Roaming (section 6.5): the latest authenticated source wins, and
	 * before the packets reach the TUN, so the reply they cause goes
	 * there rather than to the old endpoint. */
	if (authed)
		peer_set_endpoint(p, &from);
	tun_flush(e, out, &nout);

	if (auth_failed)
		atomic_fetch_add(&e->st_rx_auth, auth_failed);
	if (replayed)
		atomic_fetch_add(&e->st_rx_replay, replayed);
	if (bad_packet)
		atomic_fetch_add(&e->st_rx_bad_packet, bad_packet);
	if (bad_source)
		atomic_fetch_add(&e->st_rx_bad_source, bad_source);
	if (!authed)
		return;
	now = loop_mono_ms();
	atomic_fetch_add(&p->rx_bytes, bytes);
	timers_on_authenticated_packet_received(&p->timers, now);
	timers_on_authenticated_packet_traversed(&p->timers, now);
	if (data)
		timers_on_data_received(&p->timers, now);
	if (confirmed) {
		timers_on_handshake_complete(&p->timers, now);
		atomic_store(&p->last_handshake_ns, realtime_ns());
		send_staged(p);
	}
	if (noise_keypair_is_initiator(last->kp) && noise_keypair_should_rekey_recv(last->kp, now) &&
	    timers_take_lastminute_handshake(&p->timers))
		peer_schedule(p, PEER_WORK_HANDSHAKE);
	peer_timers_changed(p);
}

void receive_job_open(struct job *j)
{
	uint64_t now = loop_mono_ms();

	noise_keypair_decrypt_many(j->kp, j->buf, j->len, j->n, now, j->ok, j->plen);
	atomic_store_explicit(&j->done, true, memory_order_release);
}

/* ---- handshake messages (loop thread) ---- */

/* The cookie's view of a source: address then port, network order; for
 * a relayed message, the sender's node key (its first 18 bytes: the relay
 * proved it, and many senders share the relay's one address). */
static size_t cookie_source(const struct hub_handshake *hs, uint8_t out[18])
{
	const struct endpoint *ep = &hs->from;

	if (hs->relayed) {
		memcpy(out, hs->relay_src, 18);
		return 18;
	}
	if (ep->addr.sa.sa_family == AF_INET6) {
		memcpy(out, &ep->addr.in6.sin6_addr, 16);
		memcpy(out + 16, &ep->addr.in6.sin6_port, 2);
		return 18;
	}
	memcpy(out, &ep->addr.in4.sin_addr, 4);
	memcpy(out + 4, &ep->addr.in4.sin_port, 2);
	return 6;
}

static uint32_t sender_index(const uint8_t *msg)
{
	uint32_t v;

	memcpy(&v, msg + 4, sizeof(v));
	return le32toh(v);
}

static void send_cookie_reply(struct hub *h, struct engine *e, const struct hub_handshake *hs,
			      const uint8_t *src, size_t srclen, uint64_t now)
{
	struct message_handshake_cookie reply;

	struct iovec iov = { .iov_base = &reply, .iov_len = sizeof(reply) };
	bool sent;

	if (!cookie_checker_create_reply(&e->cookie, &reply, hs->msg, hs->len, sender_index(hs->msg), src, srclen,
					 now))
		return;
	/* Back the way it came: a relayed handshake has no address to
	 * answer, only the relay and the sender's key. */
	if (hs->relayed)
		sent = e->cfg.relay_send && e->cfg.relay_send(e->cfg.relay_arg, hs->relay_src, &iov, 1) == 1;
	else
		sent = hub_send_one(h, &hs->from, &reply, sizeof(reply)) > 0;
	if (sent)
		atomic_fetch_add(&h->st_cookies, 1);
}

/* Cookie verdict for msg on e; true when the handshake may be processed. */
static bool admit(struct hub *h, struct engine *e, const struct hub_handshake *hs, bool under_load, uint64_t now)
{
	uint8_t src[18];
	size_t srclen = cookie_source(hs, src);

	switch (cookie_checker_check(&e->cookie, hs->msg, hs->len, under_load, src, srclen, now)) {
	case COOKIE_ACCEPT:
		/* Under load it proved its address with a cookie; the Linux
		 * module then limits each IP (IPv6: each /64) to 20 a second. */
		if (!under_load || ratelimiter_allow(h->rl_handshakes, src, srclen == 6 ? 4 : 8, now))
			return true;
		break;
	case COOKIE_SEND_REPLY:
		/* Per address and port, as the cookie is: a flood from one
		 * socket costs a MAC1 check per packet, not a reply each, and
		 * leaves other senders behind the same address their replies. */
		if (ratelimiter_allow(h->rl_replies, src, srclen, now)) {
			send_cookie_reply(h, e, hs, src, srclen, now);
			return false;
		}
		break;
	default:
		return false;
	}
	atomic_fetch_add(&h->st_hs_limited, 1);
	return false;
}

/* An initiation names no receiver: it belongs to whichever identity's
 * MAC1 key verifies it. */
static struct engine *initiation_engine(struct hub *h, const struct hub_handshake *hs, uint64_t now)
{
	uint8_t src[18];
	size_t srclen;

	if (h->engines && !h->engines->hub_next)
		return h->engines; /* one identity: cookie_checker_check() verifies MAC1 */
	srclen = cookie_source(hs, src);
	for (struct engine *e = h->engines; e; e = e->hub_next)
		if (e->has_private_key &&
		    cookie_checker_validate(&e->cookie, hs->msg, hs->len, false, src, srclen, now) != COOKIE_MAC_INVALID)
			return e;
	return NULL;
}

static void handle_initiation(struct hub *h, const struct hub_handshake *hs, bool under_load, uint64_t now)
{
	struct engine *e = initiation_engine(h, hs, now);
	struct noise_remote *r;
	struct peer *p;

	if (!e || atomic_load(&e->dead) || !admit(h, e, hs, under_load, now) || !engine_link_ready(e))
		return;
	r = noise_handshake_consume_initiation(e->noise, (const void *)hs->msg, now);
	if (!r)
		return;
	p = noise_remote_arg(r);
	if (atomic_load(&p->dead))
		return;
	atomic_fetch_add(&e->st_hs_received, 1);
	peer_set_endpoint(p, &hs->from);
	send_response(p);
	atomic_fetch_add(&p->rx_bytes, hs->len);
	timers_on_authenticated_packet_received(&p->timers, now);
	timers_on_authenticated_packet_traversed(&p->timers, now);
	peer_timers_arm(p);
}

static void handle_response(struct hub *h, const struct hub_handshake *hs, bool under_load, uint64_t now)
{
	const struct message_handshake_response *msg = (const void *)hs->msg;
	struct noise_remote *r = noise_index_lookup_handshake(h->index, le32toh(msg->receiver_index));
	struct engine *e;
	struct peer *p;

	if (!r)
		return;
	p = noise_remote_arg(r);
	e = p->engine;
	if (atomic_load(&p->dead) || !admit(h, e, hs, under_load, now) || !engine_link_ready(e))
		return;
	r = noise_handshake_consume_response(e->noise, msg);
	if (!r)
		return;
	p = noise_remote_arg(r);
	atomic_fetch_add(&e->st_hs_received, 1);
	peer_set_endpoint(p, &hs->from);
	if (noise_handshake_begin_session(r, now)) {
		timers_on_session_derived(&p->timers, now);
		timers_on_handshake_complete(&p->timers, now);
		atomic_store(&p->last_handshake_ns, realtime_ns());
		log_debug("handshake complete", "dev=%s role=initiator", e->ifname);
		/* What waited for the session, or a keepalive that confirms
		 * it to the responder. */
		send_keepalive(p);
	}
	atomic_fetch_add(&p->rx_bytes, hs->len);
	timers_on_authenticated_packet_received(&p->timers, now);
	timers_on_authenticated_packet_traversed(&p->timers, now);
	peer_timers_arm(p);
}

static void handle_cookie(struct hub *h, const struct hub_handshake *hs, uint64_t now)
{
	const struct message_handshake_cookie *msg = (const void *)hs->msg;
	struct noise_remote *r = noise_index_lookup_remote(h->index, le32toh(msg->receiver_index));
	struct peer *p;

	if (!r)
		return;
	p = noise_remote_arg(r);
	if (!atomic_load(&p->dead) && cookie_maker_consume_reply(&p->cookie, msg, now))
		log_debug("cookie reply taken", "dev=%s", p->engine->ifname);
}

void receive_handshakes(struct hub *h)
{
	struct hub_handshake hs;
	size_t left = 0;
	/* cookie_under_load() counts from an eighth of max. */
	size_t max = h->cfg.under_load_at ? h->cfg.under_load_at * 8 : h->cfg.handshake_queue_max;
	int budget = HANDSHAKE_BUDGET;

	while (budget-- > 0 && hub_handshake_dequeue(h, &hs, &left)) {
		uint64_t now = loop_mono_ms();
		/* Section 5.3: under load while a backlog waits, and for a
		 * second after. */
		bool under_load = cookie_under_load(&h->load, left, max, now);

		switch (message_classify(hs.msg, hs.len)) {
		case MESSAGE_HANDSHAKE_INITIATION:
			handle_initiation(h, &hs, under_load, now);
			break;
		case MESSAGE_HANDSHAKE_RESPONSE:
			handle_response(h, &hs, under_load, now);
			break;
		case MESSAGE_HANDSHAKE_COOKIE:
			handle_cookie(h, &hs, now);
			break;
		default:
			break;
		}
	}
	sodium_memzero(&hs, sizeof(hs));
	if (budget < 0 && left)
		hub_wake(h);
}
