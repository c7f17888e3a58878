#include "netstun.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "control/relaymap.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "net/lookup.h"
#include "relays.h"
#include "stun/stun.h"
#include "wg/hub.h"

#define MAX_PROBES 128
/* A STUN server named only by hostName: its addresses are looked up
 * (getaddrinfo_a, polled every LOOKUP_POLL_MS while one is in flight) at
 * most once per LOOKUP_TTL_MS; the last answer is probed meanwhile. */
#define LOOKUP_POLL_MS 50u
#define LOOKUP_TTL_MS 60000u

struct probe {
	uint8_t txid[STUN_TXID_LEN];
	int region;
	uint64_t sent, round;
	bool live;
};

struct reflexive {
	struct endpoint ep;
	uint64_t seen;
};

/* A relay map node with STUN and no ipv4/ipv6: one address per family. */
struct named {
	int region;
	const struct relaymap_node *node;
	struct lookup lookup;
	char host[254];
	uint64_t started;
	bool looked_up; /* an answer (or a failure) came back at started */
	struct endpoint addr[2];
	bool has[2];
};

struct region_rtt {
	int id;
	int rtt; /* ms, -1: never answered */
	uint64_t at;
};

struct netstun {
	struct loop *loop;
	struct hub *hub;
	struct loop_timer *timer;
	struct loop_timer *poll; /* armed while a lookup is in flight */
	struct json *map_json; /* NULL: no map */
	struct relaymap map;
	struct named *named;
	size_t nnamed;
	struct region_rtt rtt[RELAYMAP_MAX_REGIONS];

	struct probe probes[MAX_PROBES];
	uint64_t round;
	/* The first mapping each family saw in the current round. */
	struct endpoint round_seen[2];
	bool round_has[2];
	bool varies;

	struct reflexive refl[NETSTUN_MAX_REFLEXIVE];
	size_t nrefl;
	int home;

	unsigned long long st_requests, st_responses, st_bad, st_unmatched;
};

static struct region_rtt *rtt_of(struct netstun *s, int region)
{
	for (size_t i = 0; i < s->map.nregions; i++)
		if (s->rtt[i].id == region)
			return &s->rtt[i];
	return NULL;
}

static void choose_home(struct netstun *s, uint64_t now)
{
	struct region_rtt *cur = rtt_of(s, s->home), *best = NULL;
	/* An answer older than two rounds no longer counts. */
	uint64_t fresh = 2 * NETSTUN_INTERVAL_MS + NETSTUN_TIMEOUT_MS;

	for (size_t i = 0; i < s->map.nregions; i++) {
		struct region_rtt *r = &s->rtt[i];

		if (r->rtt >= 0 && now - r->at < fresh && (!best || r->rtt < best->rtt))
			best = r;
	}
	if (!s->map.nregions) {
		s->home = 0;
		return;
	}
	if (!cur)
		s->home = best ? best->id : s->map.regions[0].id;
	else if (best && best != cur &&
		 (cur->rtt < 0 || now - cur->at >= fresh || (uint64_t)best->rtt * 3 < (uint64_t)cur->rtt * 2))
		s->home = best->id;
	else
		return;
	log_info("relay home region", "region=%d rtt_ms=%d", s->home, best ? best->rtt : -1);
}

static void send_probe(struct netstun *s, int region, const struct endpoint *to, uint64_t now)
{
	uint8_t msg[64];
	size_t len, slot = MAX_PROBES;

	for (size_t i = 0; i < MAX_PROBES && slot == MAX_PROBES; i++)
		if (!s->probes[i].live || now - s->probes[i].sent > NETSTUN_TIMEOUT_MS)
			slot = i;
	if (slot == MAX_PROBES)
		return;
	stun_txid_new(s->probes[slot].txid);
	len = stun_binding_request(msg, sizeof(msg), s->probes[slot].txid, true);
	if (!len || hub_send_one(s->hub, to, msg, len) <= 0)
		return;
	s->probes[slot].region = region;
	s->probes[slot].sent = now;
	s->probes[slot].round = s->round;
	s->probes[slot].live = true;
	s->st_requests++;
}

static void probe_named(struct netstun *s, struct named *n, uint64_t now)
{
	for (int f = 0; f < 2; f++)
		if (n->has[f])
			send_probe(s, n->region, &n->addr[f], now);
}

/* Takes a finished lookup's answer: the first address of each family. */
static void named_answer(struct named *n, int err, struct addrinfo *res)
{
	bool got[2] = { false, false };

	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int f = ai->ai_family == AF_INET6;

		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || got[f] ||
		    ai->ai_addrlen > sizeof(n->addr[f].addr))
			continue;
		memset(&n->addr[f], 0, sizeof(n->addr[f]));
		memcpy(&n->addr[f].addr, ai->ai_addr, ai->ai_addrlen);
		if (f)
			n->addr[f].addr.in6.sin6_port = htons(n->node->stun_port);
		else
			n->addr[f].addr.in4.sin_port = htons(n->node->stun_port);
		got[f] = true;
	}
	if (res)
		freeaddrinfo(res);
	n->looked_up = true;
	/* A failed lookup keeps the last addresses: a name server down for a
	 * while does not take the STUN server away. */
	if (err || (!got[0] && !got[1])) {
		log_debug("STUN server name did not resolve", "host=%s error=\"%s\"", n->host,
			  err ? gai_strerror(err) : "no address");
		return;
	}
	n->has[0] = got[0];
	n->has[1] = got[1];
}

static void on_poll(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct netstun *s = arg;
	uint64_t now = loop_mono_ms();
	bool waiting = false;

	for (size_t i = 0; i < s->nnamed; i++) {
		struct named *n = &s->named[i];
		struct addrinfo *res = NULL;
		bool had = n->has[0] || n->has[1];
		int err;

		if (!n->lookup.live)
			continue;
		err = lookup_result(&n->lookup, &res);
		if (err == EAI_INPROGRESS && now - n->started < NETSTUN_TIMEOUT_MS) {
			waiting = true;
			continue;
		}
		if (err == EAI_INPROGRESS) {
			lookup_stop(&n->lookup);
			err = EAI_AGAIN;
		}
		named_answer(n, err, res);
		/* Its first address: probed now, not a round later. */
		if (!had)
			probe_named(s, n, now);
	}
	if (waiting)
		loop_timer_arm(t, LOOKUP_POLL_MS);
}

void netstun_probe(struct netstun *s)
{
	uint64_t now = loop_mono_ms();
	bool lookups = false;

	s->round++;
	s->round_has[0] = s->round_has[1] = false;
	for (size_t i = 0; i < s->map.nregions; i++) {
		const struct relaymap_region *r = &s->map.regions[i];

		for (size_t k = 0; k < r->nnodes; k++) {
			struct endpoint ep;

			if (r->nodes[k].stun_port && relays_node_endpoint(&r->nodes[k], r->nodes[k].stun_port, &ep))
				send_probe(s, r->id, &ep, now);
		}
	}
	for (size_t i = 0; i < s->nnamed; i++) {
		struct named *n = &s->named[i];

		probe_named(s, n, now);
		if (!n->lookup.live && (!n->looked_up || now - n->started >= LOOKUP_TTL_MS)) {
			n->started = now;
			n->looked_up = false;
			if (lookup_start(&n->lookup, n->host, NULL, SOCK_DGRAM) == 0)
				lookups = true;
			else
				n->looked_up = true; /* tried again after the TTL */
		}
	}
	if (lookups)
		loop_timer_arm(s->poll, LOOKUP_POLL_MS);
	loop_timer_arm(s->timer, NETSTUN_INTERVAL_MS);
}

static void named_free(struct netstun *s)
{
	for (size_t i = 0; i < s->nnamed; i++)
		lookup_stop(&s->named[i].lookup);
	free(s->named);
	s->named = NULL;
	s->nnamed = 0;
}

/* The STUN servers of the map that are named only: the nodes with a STUN
 * port that relays_node_endpoint() cannot place. */
static int named_build(struct netstun *s)
{
	size_t n = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < s->map.nregions; i++) {
			const struct relaymap_region *r = &s->map.regions[i];

			for (size_t k = 0; k < r->nnodes; k++) {
				struct endpoint ep;

				if (!r->nodes[k].stun_port ||
				    relays_node_endpoint(&r->nodes[k], r->nodes[k].stun_port, &ep))
					continue;
				if (pass) {
					struct named *nm = &s->named[s->nnamed++];

					nm->region = r->id;
					nm->node = &r->nodes[k];
					snprintf(nm->host, sizeof(nm->host), "%s", r->nodes[k].host);
				} else {
					n++;
				}
			}
		}
		if (!pass && n && !(s->named = calloc(n, sizeof(*s->named))))
			return -ENOMEM;
		if (!pass && !n)
			return 0;
	}
	return 0;
}

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	netstun_probe(arg);
}

static void note_reflexive(struct netstun *s, const struct endpoint *ep, uint64_t now)
{
	size_t oldest = 0;
	int fam = ep->addr.sa.sa_family == AF_INET6;

	if (s->round_has[fam] && !endpoint_equal(&s->round_seen[fam], ep) && !s->varies) {
		s->varies = true;
		log_info("the NAT maps this socket differently per destination (hard NAT)");
	}
	if (!s->round_has[fam]) {
		s->round_seen[fam] = *ep;
		s->round_has[fam] = true;
	}
	for (size_t i = 0; i < s->nrefl; i++) {
		if (endpoint_equal(&s->refl[i].ep, ep)) {
			s->refl[i].seen = now;
			return;
		}
		if (s->refl[i].seen < s->refl[oldest].seen)
			oldest = i;
	}
	if (s->nrefl < NETSTUN_MAX_REFLEXIVE)
		oldest = s->nrefl++;
	s->refl[oldest] = (struct reflexive){ .ep = *ep, .seen = now };
	char text[80];
	if (endpoint_format(ep, text, sizeof(text)) > 0)
		log_debug("reflexive endpoint", "endpoint=%s", text);
}

bool netstun_on_datagram(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from)
{
	struct netstun *s = arg;
	struct stun_msg m;
	struct endpoint ep = { 0 };
	uint64_t now = loop_mono_ms();
	struct probe *p = NULL;
	struct region_rtt *r;

	if (!stun_parse(pkt, len, &m, NULL, 0) || m.type != STUN_BINDING_SUCCESS || !m.has_addr) {
		s->st_bad++;
		return false;
	}
	for (size_t i = 0; i < MAX_PROBES && !p; i++)
		if (s->probes[i].live && !sodium_memcmp(s->probes[i].txid, m.txid, STUN_TXID_LEN))
			p = &s->probes[i];
	if (!p || now - p->sent > NETSTUN_TIMEOUT_MS) {
		s->st_unmatched++;
		return false;
	}
	p->live = false;
	s->st_responses++;
	if (m.addr.ss_family == AF_INET)
		memcpy(&ep.addr.in4, &m.addr, sizeof(ep.addr.in4));
	else if (m.addr.ss_family == AF_INET6)
		memcpy(&ep.addr.in6, &m.addr, sizeof(ep.addr.in6));
	else
		return true;
	if (p->round == s->round)
		note_reflexive(s, &ep, now);
	if ((r = rtt_of(s, p->region))) {
		r->rtt = (int)(now - p->sent);
		r->at = now;
	}
	choose_home(s, now);
	return true;
}

void netstun_set_relaymap(struct netstun *s, const struct json *relay_map)
{
	struct relaymap m;
	char err[256];

	if (json_equal(relay_map, s->map_json) || (!relay_map && !s->map_json))
		return;
	if (!relaymap_parse(relay_map, &m, err, sizeof(err))) {
		log_warn("relay map not usable", "error=\"%s\"", err);
		return;
	}
	json_free(s->map_json);
	s->map_json = relay_map ? json_clone(relay_map) : NULL;
	named_free(s);
	relaymap_free(&s->map);
	s->map = m;
	if (named_build(s))
		log_warn("STUN servers named only by hostName are skipped", "error=\"out of memory\"");
	for (size_t i = 0; i < RELAYMAP_MAX_REGIONS; i++)
		s->rtt[i] = (struct region_rtt){ .id = i < m.nregions ? m.regions[i].id : 0, .rtt = -1 };
	memset(s->probes, 0, sizeof(s->probes));
	s->varies = false;
	if (!rtt_of(s, s->home))
		s->home = 0;
	choose_home(s, loop_mono_ms());
	netstun_probe(s);
}

size_t netstun_reflexive(const struct netstun *s, struct endpoint *out, size_t max)
{
	uint64_t now = loop_mono_ms();
	size_t n = 0;

	for (size_t i = 0; i < s->nrefl && n < max; i++)
		if (now - s->refl[i].seen < NETSTUN_REFLEXIVE_TTL_MS)
			out[n++] = s->refl[i].ep;
	return n;
}

int netstun_home(const struct netstun *s)
{
	return s->home;
}

int netstun_latency(const struct netstun *s, int region)
{
	for (size_t i = 0; i < s->map.nregions; i++)
		if (s->rtt[i].id == region)
			return s->rtt[i].rtt;
	return -1;
}

bool netstun_mapping_varies(const struct netstun *s)
{
	return s->varies;
}

void netstun_stats(const struct netstun *s, struct netstun_stats *out)
{
	out->requests = s->st_requests;
	out->responses = s->st_responses;
	out->bad = s->st_bad;
	out->unmatched = s->st_unmatched;
}

int netstun_new(struct netstun **out, struct loop *loop, struct hub *hub)
{
	struct netstun *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->hub = hub;
	if (!(s->timer = loop_timer_new(loop, on_timer, s)) || !(s->poll = loop_timer_new(loop, on_poll, s))) {
		loop_timer_free(s->timer);
		free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void netstun_free(struct netstun *s)
{
	if (!s)
		return;
	loop_timer_free(s->timer);
	loop_timer_free(s->poll);
	named_free(s);
	json_free(s->map_json);
	relaymap_free(&s->map);
	free(s);
}
