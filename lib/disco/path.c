/* Per-peer path selection; see path.h. */
#include "disco/path.h"

#include <netinet/in.h>
#include <sodium.h>
#include <string.h>

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return false;
	if (b->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (b->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;

		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
		       x->sin6_scope_id == y->sin6_scope_id;
	}
	return false;
}

static size_t addr_len(int family)
{
	return family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

static int find(const struct disco_peer *p, const struct sockaddr *a)
{
	for (size_t i = 0; i < p->ncand; i++)
		if (same_addr(&p->cand[i].addr, a))
			return (int)i;
	return -1;
}

void disco_peer_init(struct disco_peer *p)
{
	memset(p, 0, sizeof(*p));
	p->best = -1;
}

static bool trusted(const struct disco_candidate *c, uint64_t now)
{
	return c->ponged && now - c->last_pong < DISCO_TRUST_MS;
}

/* Adds a (non-duplicate) candidate; returns its index or -1 if full or
 * not an IP address. */
static int add(struct disco_peer *p, const struct sockaddr *a)
{
	int i = find(p, a);

	if (i >= 0)
		return i;
	if (p->ncand == DISCO_MAX_CANDIDATES || (a->sa_family != AF_INET && a->sa_family != AF_INET6))
		return -1;
	memset(&p->cand[p->ncand], 0, sizeof(p->cand[0]));
	memcpy(&p->cand[p->ncand].addr, a, addr_len(a->sa_family));
	return (int)p->ncand++;
}

void disco_peer_set_endpoints(struct disco_peer *p, const struct sockaddr_storage *eps, size_t n,
			      uint64_t now)
{
	struct disco_candidate keep[DISCO_MAX_CANDIDATES];
	size_t nkeep = 0;
	int best = -1;
	bool fresh = false;

	for (size_t i = 0; i < n && nkeep < DISCO_MAX_CANDIDATES; i++) {
		const struct sockaddr *a = (const struct sockaddr *)&eps[i];
		int j = find(p, a);
		bool dup = false;

		if (a->sa_family != AF_INET && a->sa_family != AF_INET6)
			continue;
		for (size_t k = 0; k < nkeep; k++)
			dup = dup || same_addr(&keep[k].addr, a);
		if (dup)
			continue;
		if (j >= 0) {
			keep[nkeep] = p->cand[j];
			if (j == p->best)
				best = (int)nkeep;
		} else {
			memset(&keep[nkeep], 0, sizeof(keep[0]));
			memcpy(&keep[nkeep].addr, a, addr_len(a->sa_family));
			fresh = true;
		}
		nkeep++;
	}
	/* Endpoints never tried: optimistic again while they are probed. */
	if (fresh)
		p->probing = false;
	/* The path in use stays while it works, even if no longer listed
	 * (the server's view lags the NAT's). */
	if (best < 0 && p->best >= 0 && trusted(&p->cand[p->best], now) && nkeep < DISCO_MAX_CANDIDATES) {
		keep[nkeep] = p->cand[p->best];
		best = (int)nkeep++;
	}
	memcpy(p->cand, keep, nkeep * sizeof(keep[0]));
	p->ncand = nkeep;
	p->best = best;
}

static void make_due(struct disco_candidate *c, uint64_t now)
{
	if (c->pinged && now - c->last_ping < DISCO_REPING_MIN_MS)
		return; /* just pinged: its pong may be on the way */
	c->pinged = false; /* never pinged: due at once */
}

void disco_peer_on_call_me_maybe(struct disco_peer *p, const struct sockaddr_storage *eps, size_t n,
				 uint64_t now)
{
	for (size_t i = 0; i < n; i++) {
		int j = add(p, (const struct sockaddr *)&eps[i]);

		if (j >= 0 && !trusted(&p->cand[j], now))
			make_due(&p->cand[j], now);
	}
}

void disco_peer_on_ping(struct disco_peer *p, const struct sockaddr *from, uint64_t now)
{
	int j = add(p, from);

	if (j >= 0 && !trusted(&p->cand[j], now))
		make_due(&p->cand[j], now);
}

/* Picks the best trusted endpoint, keeping the current one unless another
 * is faster by the margin. */
static void choose(struct disco_peer *p, uint64_t now)
{
	int best = -1;

	for (size_t i = 0; i < p->ncand; i++) {
		if (!trusted(&p->cand[i], now))
			continue;
		if (best < 0 || p->cand[i].latency_ms < p->cand[best].latency_ms)
			best = (int)i;
	}
	if (p->best >= 0 && trusted(&p->cand[p->best], now) && best >= 0 && best != p->best &&
	    (uint64_t)p->cand[best].latency_ms * 100 >
		    (uint64_t)p->cand[p->best].latency_ms * (100 - DISCO_SWITCH_MARGIN))
		return; /* not enough better: stay */
	p->best = best;
}

bool disco_peer_on_pong(struct disco_peer *p, const uint8_t txid[DISCO_TXID_LEN],
			const struct sockaddr *from, uint64_t now)
{
	int j = find(p, from);
	struct disco_candidate *c;
	uint64_t sent;

	if (j < 0)
		return false;
	c = &p->cand[j];
	if (c->ping_outstanding && !sodium_memcmp(c->txid, txid, DISCO_TXID_LEN)) {
		sent = c->last_ping;
		c->ping_outstanding = false;
	} else if (c->prev_outstanding && !sodium_memcmp(c->prev_txid, txid, DISCO_TXID_LEN)) {
		sent = c->prev_ping;
		c->prev_outstanding = false;
	} else {
		return false;
	}
	if (now - sent > DISCO_PING_TIMEOUT_MS)
		return false;
	c->ponged = true;
	c->last_pong = now;
	c->latency_ms = (uint32_t)(now - sent);
	choose(p, now);
	return true;
}

static uint64_t interval(const struct disco_peer *p, size_t i)
{
	return (int)i == p->best ? DISCO_HEARTBEAT_MS : DISCO_PROBE_MS;
}

size_t disco_peer_pings_due(struct disco_peer *p, uint64_t now, struct disco_ping_req *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < p->ncand && n < max; i++) {
		struct disco_candidate *c = &p->cand[i];

		if (c->pinged && now - c->last_ping < interval(p, i))
			continue;
		c->prev_outstanding = c->ping_outstanding;
		memcpy(c->prev_txid, c->txid, DISCO_TXID_LEN);
		c->prev_ping = c->last_ping;
		randombytes_buf(c->txid, DISCO_TXID_LEN);
		c->pinged = true;
		c->ping_outstanding = true;
		if (!p->probing) {
			p->probing = true;
			p->probe_since = now;
		}
		c->last_ping = now;
		memcpy(&out[n].addr, &c->addr, sizeof(c->addr));
		memcpy(out[n].txid, c->txid, DISCO_TXID_LEN);
		n++;
	}
	return n;
}

enum disco_path_kind disco_peer_path(struct disco_peer *p, uint64_t now, struct sockaddr_storage *addr,
				     uint32_t *latency_ms)
{
	if (p->best < 0 || !trusted(&p->cand[p->best], now))
		choose(p, now);
	if (p->best < 0)
		return DISCO_PATH_RELAY;
	if (addr)
		*addr = p->cand[p->best].addr;
	if (latency_ms)
		*latency_ms = p->cand[p->best].latency_ms;
	return DISCO_PATH_DIRECT;
}

void disco_peer_route(struct disco_peer *p, uint64_t now, bool has_relay, struct disco_route *out)
{
	int cand = -1;
	bool broke = false;

	memset(out, 0, sizeof(*out));
	if (disco_peer_path(p, now, &out->addr, &out->latency_ms) == DISCO_PATH_DIRECT) {
		out->direct = out->measured = true;
		return;
	}
	out->latency_ms = 0;
	/* No trusted endpoint. One that answered once (the path broke): the
	 * most recent; else the first the netmap names. */
	for (size_t i = 0; i < p->ncand; i++) {
		if (p->cand[i].ponged && (cand < 0 || !p->cand[cand].ponged ||
					  p->cand[i].last_pong > p->cand[cand].last_pong)) {
			cand = (int)i;
			broke = true;
		} else if (cand < 0) {
			cand = (int)i;
		}
	}
	out->relay = has_relay;
	if (cand < 0)
		return;
	if (has_relay && (broke || (p->probing && now - p->probe_since >= DISCO_OPTIMISTIC_MS)))
		return; /* the endpoint did not answer: the relay alone */
	out->direct = true;
	out->addr = p->cand[cand].addr;
}

uint64_t disco_peer_next_due(const struct disco_peer *p, uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (size_t i = 0; i < p->ncand; i++) {
		const struct disco_candidate *c = &p->cand[i];
		uint64_t due = c->pinged ? c->last_ping + interval(p, i) : now;
		uint64_t wait = due > now ? due - now : 0;

		if (wait < next)
			next = wait;
	}
	return next;
}
