#include "paths.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "control/messages.h"
#include "disco/message.h"
#include "disco/path.h"
#include "log.h"
#include "loop.h"
#include "relays.h"
#include "wg/engine.h"
#include "wg/hub.h"

#define MAX_PINGS 64

struct ppeer {
	uint8_t node_key[32], disco_key[32];
	/* disco_shared() of disco_key and ours: no X25519 per message, which
	 * matters as every identity knowing a sender tries its datagrams. */
	uint8_t shared[DISCO_SHARED_LEN];
	bool has_shared;
	int region;
	struct disco_peer dp;
	/* What the engine was told (PATHS_NONE: the netmap's endpoint). */
	struct paths_info applied;
	uint64_t last_cmm;
	bool seen;
};

/* A knit ping waiting for its pong. */
struct uping {
	bool live;
	uint8_t node_key[32];
	uint8_t txid[DISCO_TXID_LEN];
	uint64_t sent;
	paths_pong_fn done;
	void *arg;
};

struct paths {
	struct paths_config cfg;
	uint8_t priv[32], pub[32], node_pub[32];
	struct ppeer *peers;
	size_t npeers, cap;
	struct endpoint self_eps[DISCO_MAX_ENDPOINTS];
	size_t nself;
	struct uping pings[MAX_PINGS];
	struct loop_timer *tick;
	unsigned long long st_pings, st_pongs, st_pings_rx, st_cmm, st_cmm_rx, st_bad, st_up, st_down;
};

/* ---- addresses ---- */

static void to_ss(const struct endpoint *ep, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &ep->addr, ep->addr.sa.sa_family == AF_INET6 ? sizeof(ep->addr.in6) : sizeof(ep->addr.in4));
}

static void to_ep(const struct sockaddr_storage *ss, struct endpoint *ep)
{
	memset(ep, 0, sizeof(*ep));
	memcpy(&ep->addr, ss, ss->ss_family == AF_INET6 ? sizeof(ep->addr.in6) : sizeof(ep->addr.in4));
}

static void key_hex(const uint8_t *k, char out[17])
{
	sodium_bin2hex(out, 17, k, 8);
}

/* ---- peers ---- */

static struct ppeer *by_node(const struct paths *ps, const uint8_t key[32])
{
	for (size_t i = 0; i < ps->npeers; i++)
		if (!memcmp(ps->peers[i].node_key, key, 32))
			return &ps->peers[i];
	return NULL;
}

static struct ppeer *by_disco(const struct paths *ps, const uint8_t key[32])
{
	for (size_t i = 0; i < ps->npeers; i++)
		if (!memcmp(ps->peers[i].disco_key, key, 32))
			return &ps->peers[i];
	return NULL;
}

static bool relay_usable(const struct paths *ps, const struct ppeer *pp)
{
	return ps->cfg.relays && pp->region > 0 && relays_has_region(ps->cfg.relays, pp->region);
}

static bool same_path(const struct paths_info *a, const struct paths_info *b)
{
	return a->kind == b->kind && a->region == b->region && a->measured == b->measured &&
	       a->relay_too == b->relay_too && (a->kind != PATHS_DIRECT || endpoint_equal(&a->addr, &b->addr));
}

/* The route selection wants, told to the engine when it changed. */
static void apply(struct paths *ps, struct ppeer *pp, uint64_t now)
{
	struct paths_info want = { .kind = PATHS_NONE };
	struct disco_route r;
	char text[80] = "", hex[17];

	disco_peer_route(&pp->dp, now, relay_usable(ps, pp), &r);
	if (r.direct) {
		want.kind = PATHS_DIRECT;
		to_ep(&r.addr, &want.addr);
		want.latency_ms = r.latency_ms;
		want.measured = r.measured;
		want.relay_too = r.relay;
		want.region = r.relay ? pp->region : 0;
	} else if (r.relay) {
		want.kind = PATHS_RELAY;
		want.region = pp->region;
	}
	if (same_path(&want, &pp->applied)) {
		pp->applied.latency_ms = want.latency_ms;
		return;
	}
	if (engine_peer_set_path(ps->cfg.engine, pp->node_key, want.kind == PATHS_RELAY || want.relay_too,
				 want.kind == PATHS_DIRECT ? &want.addr : NULL))
		return; /* not in the engine (yet): tried again on the next tick */
	if (pp->applied.measured && !want.measured)
		ps->st_down++;
	if (!pp->applied.measured && want.measured)
		ps->st_up++;
	key_hex(pp->node_key, hex);
	if (want.kind == PATHS_DIRECT)
		endpoint_format(&want.addr, text, sizeof(text));
	log_info("path to peer", "peer=%s path=%s addr=%s region=%d latency_ms=%u", hex,
		 want.kind == PATHS_DIRECT ? (want.measured ? "direct" : want.relay_too ? "probing+relay" : "probing")
		 : want.kind == PATHS_RELAY ? "relay"
					    : "endpoint",
		 text, want.region, want.latency_ms);
	pp->applied = want;
}

static size_t seal(struct paths *ps, const struct ppeer *pp, const struct disco_msg *m, uint8_t *out, size_t cap)
{
	return pp->has_shared ? disco_seal_shared(m, ps->pub, pp->shared, out, cap) : 0;
}

static void send_direct(struct paths *ps, struct ppeer *pp, const struct disco_msg *m, const struct sockaddr_storage *to)
{
	uint8_t out[DISCO_MAX_SEALED];
	size_t len = seal(ps, pp, m, out, sizeof(out));
	struct endpoint ep;

	to_ep(to, &ep);
	if (len)
		hub_send_one(ps->cfg.hub, &ep, out, len);
}

static bool send_relayed(struct paths *ps, struct ppeer *pp, const struct disco_msg *m)
{
	uint8_t out[DISCO_MAX_SEALED];
	size_t len;

	if (!relay_usable(ps, pp))
		return false;
	len = seal(ps, pp, m, out, sizeof(out));
	return len && relays_send(ps->cfg.relays, pp->region, pp->node_key, out, len) == 0;
}

static void send_pings(struct paths *ps, struct ppeer *pp, uint64_t now)
{
	struct disco_ping_req req[DISCO_MAX_CANDIDATES];
	size_t n = disco_peer_pings_due(&pp->dp, now, req, DISCO_MAX_CANDIDATES);

	for (size_t i = 0; i < n; i++) {
		struct disco_msg m = { .type = DISCO_PING };

		memcpy(m.txid, req[i].txid, DISCO_TXID_LEN);
		memcpy(m.node_key, ps->node_pub, 32);
		send_direct(ps, pp, &m, &req[i].addr);
		ps->st_pings++;
	}
}

/* Every candidate due now, and a call-me-maybe through the relay so the
 * peer pings us back at the same moment. */
static void punch(struct paths *ps, struct ppeer *pp, uint64_t now)
{
	struct sockaddr_storage cands[DISCO_MAX_CANDIDATES];
	struct disco_msg m = { .type = DISCO_CALL_ME_MAYBE };

	for (size_t i = 0; i < pp->dp.ncand; i++)
		cands[i] = pp->dp.cand[i].addr;
	disco_peer_on_call_me_maybe(&pp->dp, cands, pp->dp.ncand, now);
	pp->last_cmm = now;
	for (size_t i = 0; i < ps->nself && m.neps < DISCO_MAX_ENDPOINTS; i++)
		to_ss(&ps->self_eps[i], &m.eps[m.neps++]);
	if (m.neps && send_relayed(ps, pp, &m))
		ps->st_cmm++;
	send_pings(ps, pp, now);
}

static void expire_pings(struct paths *ps, uint64_t now)
{
	for (size_t i = 0; i < MAX_PINGS; i++) {
		struct uping *u = &ps->pings[i];

		if (u->live && now - u->sent > PATHS_PING_TIMEOUT_MS) {
			u->live = false;
			u->done(u->arg, -ETIMEDOUT, NULL, 0);
		}
	}
}

static void on_tick(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct paths *ps = arg;
	uint64_t now = loop_mono_ms();

	for (size_t i = 0; i < ps->npeers; i++) {
		struct ppeer *pp = &ps->peers[i];

		apply(ps, pp, now);
		if (!pp->applied.measured && relay_usable(ps, pp) && pp->dp.ncand &&
		    (!pp->last_cmm || now - pp->last_cmm >= PATHS_CALL_ME_MAYBE_MS))
			punch(ps, pp, now);
		else
			send_pings(ps, pp, now);
	}
	expire_pings(ps, now);
	loop_timer_arm(t, PATHS_TICK_MS);
}

static void wipe_peers(struct ppeer *peers, size_t n)
{
	if (n)
		sodium_memzero(peers, n * sizeof(*peers));
}

void paths_sync(struct paths *ps, const struct netmap *nm)
{
	uint64_t now = loop_mono_ms();
	size_t kept = 0;

	for (size_t i = 0; i < ps->npeers; i++)
		ps->peers[i].seen = false;
	for (size_t i = 0; nm && i < nm->npeers; i++) {
		const struct netmap_node *n = &nm->peers[i];
		struct sockaddr_storage eps[DISCO_MAX_CANDIDATES];
		size_t neps = 0;
		struct ppeer *pp;

		if (!n->has_disco_key)
			continue;
		pp = by_node(ps, n->node_key);
		if (pp && memcmp(pp->disco_key, n->disco_key, 32)) {
			/* A new disco key: a restarted peer, nothing we knew holds. */
			disco_peer_init(&pp->dp);
			pp->last_cmm = 0;
			pp->has_shared = false;
		}
		if (!pp) {
			if (ps->npeers == ps->cap) {
				size_t nc = ps->cap ? ps->cap * 2 : 16;
				struct ppeer *np = calloc(nc, sizeof(*np));
				if (!np) {
					log_warn("paths: out of memory; peer keeps its netmap endpoint");
					continue;
				}
				/* Not realloc: the old block holds shared keys. */
				if (ps->npeers)
					memcpy(np, ps->peers, ps->npeers * sizeof(*np));
				wipe_peers(ps->peers, ps->npeers);
				free(ps->peers);
				ps->peers = np;
				ps->cap = nc;
			}
			pp = &ps->peers[ps->npeers++];
			memset(pp, 0, sizeof(*pp));
			memcpy(pp->node_key, n->node_key, 32);
			disco_peer_init(&pp->dp);
		}
		if (!pp->has_shared)
			pp->has_shared = disco_shared(pp->shared, n->disco_key, ps->priv);
		memcpy(pp->disco_key, n->disco_key, 32);
		pp->region = n->relay;
		pp->seen = true;
		for (size_t k = 0; k < n->nendpoints && neps < DISCO_MAX_CANDIDATES; k++)
			to_ss(&n->endpoints[k], &eps[neps++]);
		disco_peer_set_endpoints(&pp->dp, eps, neps, now);
	}
	for (size_t i = 0; i < ps->npeers; i++) {
		struct ppeer *pp = &ps->peers[i];

		if (!pp->seen) {
			/* Gone from the netmap: the engine drops it too. */
			continue;
		}
		if (kept != i)
			ps->peers[kept] = *pp;
		kept++;
	}
	wipe_peers(ps->peers + kept, ps->npeers - kept);
	ps->npeers = kept;
	for (size_t i = 0; i < ps->npeers; i++)
		apply(ps, &ps->peers[i], now);
}

void paths_set_endpoints(struct paths *ps, const struct endpoint *eps, size_t n)
{
	ps->nself = n < DISCO_MAX_ENDPOINTS ? n : DISCO_MAX_ENDPOINTS;
	if (ps->nself)
		memcpy(ps->self_eps, eps, ps->nself * sizeof(*eps));
}

void paths_set_node_key(struct paths *ps, const uint8_t node_pub[32])
{
	memcpy(ps->node_pub, node_pub, 32);
}

/* ---- receiving ---- */

static bool user_pong(struct paths *ps, const struct ppeer *pp, const uint8_t txid[DISCO_TXID_LEN],
		      const struct paths_info *via, uint64_t now)
{
	for (size_t i = 0; i < MAX_PINGS; i++) {
		struct uping *u = &ps->pings[i];

		if (u->live && !memcmp(u->node_key, pp->node_key, 32) && !sodium_memcmp(u->txid, txid, DISCO_TXID_LEN)) {
			u->live = false;
			u->done(u->arg, 0, via, (double)(now - u->sent));
			return true;
		}
	}
	return false;
}

/* A message from pp, directly from *from or (from NULL) through the relay. */
static void handle(struct paths *ps, struct ppeer *pp, const struct disco_msg *m, const struct endpoint *from)
{
	uint64_t now = loop_mono_ms();
	struct sockaddr_storage ss;
	struct paths_info via = { .kind = from ? PATHS_DIRECT : PATHS_RELAY, .region = from ? 0 : pp->region,
				  .measured = from != NULL };

	if (from) {
		to_ss(from, &ss);
		via.addr = *from;
		endpoint_clear_src(&via.addr);
	}
	if (log_enabled(LOG_DEBUG)) {
		char hex[17], text[80] = "relay";
		key_hex(pp->node_key, hex);
		if (from)
			endpoint_format(from, text, sizeof(text));
		log_debug("disco", "peer=%s type=%u from=%s", hex, m->type, text);
	}
	switch (m->type) {
	case DISCO_PING: {
		struct disco_msg pong = { .type = DISCO_PONG };

		if (memcmp(m->node_key, pp->node_key, 32)) {
			ps->st_bad++;
			return;
		}
		ps->st_pings_rx++;
		memcpy(pong.txid, m->txid, DISCO_TXID_LEN);
		if (from) {
			pong.src = ss;
			send_direct(ps, pp, &pong, &ss);
			/* It reached us from there: ping back at once, so both
			 * sides have the path within a round trip. */
			disco_peer_on_ping(&pp->dp, (const struct sockaddr *)&ss, now);
			send_pings(ps, pp, now);
		} else {
			/* No address saw it: the relay's marker, as Tailscale's
			 * 127.3.3.40 (a pong must name a port; ours: the region). */
			struct sockaddr_in *via_relay = (struct sockaddr_in *)&pong.src;
			via_relay->sin_family = AF_INET;
			via_relay->sin_addr.s_addr = htonl(PATHS_RELAY_MARKER);
			via_relay->sin_port = htons((uint16_t)(pp->region > 0 ? pp->region : 1));
			send_relayed(ps, pp, &pong);
		}
		break;
	}
	case DISCO_PONG:
		ps->st_pongs++;
		if (from && disco_peer_on_pong(&pp->dp, m->txid, (const struct sockaddr *)&ss, now)) {
			apply(ps, pp, now);
			via.latency_ms = pp->dp.best >= 0 ? pp->dp.cand[pp->dp.best].latency_ms : 0;
		}
		user_pong(ps, pp, m->txid, &via, now);
		break;
	case DISCO_CALL_ME_MAYBE:
		ps->st_cmm_rx++;
		disco_peer_on_call_me_maybe(&pp->dp, m->eps, m->neps, now);
		send_pings(ps, pp, now);
		break;
	default:
		break;
	}
}

bool paths_on_datagram(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from)
{
	struct paths *ps = arg;
	const uint8_t *sender = disco_sender(pkt, len);
	struct ppeer *pp = sender ? by_disco(ps, sender) : NULL;
	struct disco_msg m;

	if (!pp || !pp->has_shared || !disco_open_shared(pkt, len, pp->shared, &m, NULL, 0)) {
		log_debug("disco datagram not for this identity", "known_sender=%d", pp != NULL);
		return false; /* perhaps another identity's */
	}
	handle(ps, pp, &m, from);
	return true;
}

void paths_on_relayed(void *arg, const uint8_t src[32], const uint8_t *pkt, size_t len)
{
	struct paths *ps = arg;
	struct ppeer *pp = by_node(ps, src);
	const uint8_t *sender = disco_sender(pkt, len);
	struct disco_msg m;

	if (!pp || !sender || memcmp(sender, pp->disco_key, 32) || !pp->has_shared ||
	    !disco_open_shared(pkt, len, pp->shared, &m, NULL, 0)) {
		ps->st_bad++;
		return;
	}
	handle(ps, pp, &m, NULL);
}

int paths_peer_region(void *arg, const uint8_t peer[32])
{
	const struct ppeer *pp = by_node(arg, peer);

	return pp ? pp->region : 0;
}

bool paths_manages(const struct paths *ps, const uint8_t node_key[32])
{
	const struct ppeer *pp = by_node(ps, node_key);

	return pp && pp->applied.kind != PATHS_NONE;
}

bool paths_info(const struct paths *ps, const uint8_t node_key[32], struct paths_info *out)
{
	const struct ppeer *pp = by_node(ps, node_key);

	if (!pp)
		return false;
	*out = pp->applied;
	return true;
}

int paths_ping(struct paths *ps, const uint8_t node_key[32], paths_pong_fn done, void *arg)
{
	struct ppeer *pp = by_node(ps, node_key);
	struct disco_msg m = { .type = DISCO_PING };
	struct uping *u = NULL;
	uint64_t now = loop_mono_ms();
	struct sockaddr_storage ss;

	if (!pp)
		return -ENOENT;
	for (size_t i = 0; i < MAX_PINGS && !u; i++)
		if (!ps->pings[i].live)
			u = &ps->pings[i];
	if (!u)
		return -ENOMEM;
	randombytes_buf(m.txid, DISCO_TXID_LEN);
	memcpy(m.node_key, ps->node_pub, 32);
	*u = (struct uping){ .live = true, .sent = now, .done = done, .arg = arg };
	memcpy(u->node_key, node_key, 32);
	memcpy(u->txid, m.txid, DISCO_TXID_LEN);
	if (pp->applied.measured) {
		to_ss(&pp->applied.addr, &ss);
		send_direct(ps, pp, &m, &ss);
	} else {
		/* Not measured: the relay when there is one, and the
		 * candidates directly unless the relay alone is in use. */
		bool relayed = send_relayed(ps, pp, &m);

		for (size_t i = 0; i < pp->dp.ncand && !(relayed && pp->applied.kind == PATHS_RELAY); i++)
			send_direct(ps, pp, &m, &pp->dp.cand[i].addr);
	}
	ps->st_pings++;
	if (!pp->applied.measured)
		punch(ps, pp, now);
	return 0;
}

void paths_ping_cancel(struct paths *ps, void *arg)
{
	for (size_t i = 0; i < MAX_PINGS; i++)
		if (ps->pings[i].live && ps->pings[i].arg == arg)
			ps->pings[i].live = false;
}

void paths_stats(const struct paths *ps, struct paths_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->pings_sent = ps->st_pings;
	out->pongs_received = ps->st_pongs;
	out->pings_received = ps->st_pings_rx;
	out->call_me_maybe_sent = ps->st_cmm;
	out->call_me_maybe_received = ps->st_cmm_rx;
	out->bad = ps->st_bad;
	out->upgrades = ps->st_up;
	out->fallbacks = ps->st_down;
	for (size_t i = 0; i < ps->npeers; i++) {
		const struct paths_info *a = &ps->peers[i].applied;

		if (a->kind == PATHS_DIRECT && a->measured)
			out->direct++;
		else if (a->kind == PATHS_RELAY || a->relay_too)
			out->relay++;
		else
			out->other++;
	}
}

int paths_new(struct paths **out, const struct paths_config *c)
{
	struct paths *ps = calloc(1, sizeof(*ps));

	*out = NULL;
	if (!ps)
		return -ENOMEM;
	ps->cfg = *c;
	memcpy(ps->priv, c->disco_priv, 32);
	crypto_scalarmult_base(ps->pub, ps->priv);
	if (c->node_pub)
		memcpy(ps->node_pub, c->node_pub, 32);
	if (!(ps->tick = loop_timer_new(c->loop, on_tick, ps))) {
		paths_free(ps);
		return -ENOMEM;
	}
	loop_timer_arm(ps->tick, PATHS_TICK_MS);
	*out = ps;
	return 0;
}

void paths_free(struct paths *ps)
{
	if (!ps)
		return;
	for (size_t i = 0; i < MAX_PINGS; i++) {
		if (ps->pings[i].live) {
			ps->pings[i].live = false;
			ps->pings[i].done(ps->pings[i].arg, -ECANCELED, NULL, 0);
		}
	}
	loop_timer_free(ps->tick);
	wipe_peers(ps->peers, ps->npeers);
	free(ps->peers);
	sodium_memzero(ps->priv, sizeof(ps->priv));
	free(ps);
}
