#include "applied.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "strmap.h"

/* A peer as it was handed to the engine. */
struct record {
	uint8_t key[32];
	struct netmap_prefix *aips;
	size_t naips;
	bool has_endpoint;
	struct endpoint endpoint; /* the first one the netmap announced */
	bool in_engine; /* false: its last set failed, so set it again */
};

/* A route via the TUN: how many peers' allowed IPs hold it, and whether
 * it is on the link. */
struct route {
	long refs;
	bool installed;
};

struct change {
	long delta;
	struct netmap_prefix prefix;
};

struct applied {
	struct strmap *peers; /* hex key -> struct record * */
	struct strmap *routes; /* cidr -> struct route * */
	struct strmap *addrs; /* cidr -> (void *)1: on the TUN */
};

/* In a plan's peers map: the peer is gone. */
static const char removed_mark;
#define REMOVED ((void *)(uintptr_t)&removed_mark)

static void hex_of(const uint8_t key[32], char out[65])
{
	sodium_bin2hex(out, 65, key, 32);
}

static void record_free(struct record *r)
{
	if (!r || r == REMOVED)
		return;
	free(r->aips);
	free(r);
}

static void free_records(struct strmap *m)
{
	for (struct strmap_entry *e = strmap_first(m); e; e = strmap_next(m, e))
		record_free(strmap_value(e));
}

struct applied *applied_new(void)
{
	struct applied *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->peers = strmap_new();
	a->routes = strmap_new();
	a->addrs = strmap_new();
	if (!a->peers || !a->routes || !a->addrs) {
		applied_free(a);
		return NULL;
	}
	return a;
}

void applied_reset(struct applied *a)
{
	struct strmap *p = strmap_new(), *r = strmap_new(), *ad = strmap_new();

	free_records(a->peers);
	for (struct strmap_entry *e = strmap_first(a->routes); e; e = strmap_next(a->routes, e))
		free(strmap_value(e));
	if (!p || !r || !ad) {
		/* No memory for empty maps: empty the old ones in place. */
		strmap_free(p);
		strmap_free(r);
		strmap_free(ad);
		while (strmap_first(a->peers))
			strmap_del(a->peers, strmap_key(strmap_first(a->peers)));
		while (strmap_first(a->routes))
			strmap_del(a->routes, strmap_key(strmap_first(a->routes)));
		while (strmap_first(a->addrs))
			strmap_del(a->addrs, strmap_key(strmap_first(a->addrs)));
		return;
	}
	strmap_free(a->peers);
	strmap_free(a->routes);
	strmap_free(a->addrs);
	a->peers = p;
	a->routes = r;
	a->addrs = ad;
}

void applied_free(struct applied *a)
{
	if (!a)
		return;
	if (a->peers)
		free_records(a->peers);
	if (a->routes)
		for (struct strmap_entry *e = strmap_first(a->routes); e; e = strmap_next(a->routes, e))
			free(strmap_value(e));
	strmap_free(a->peers);
	strmap_free(a->routes);
	strmap_free(a->addrs);
	free(a);
}

bool applied_has_peer(const struct applied *a, const uint8_t key[32])
{
	char hex[65];

	hex_of(key, hex);
	return strmap_has(a->peers, hex);
}

size_t applied_peers(const struct applied *a)
{
	return strmap_len(a->peers);
}

size_t applied_routes(const struct applied *a)
{
	size_t n = 0;

	for (struct strmap_entry *e = strmap_first(a->routes); e; e = strmap_next(a->routes, e))
		n += ((struct route *)strmap_value(e))->installed;
	return n;
}

/* ---- building a plan ---- */

static struct applied_op *op_new(struct applied_plan *p, enum applied_op_kind kind)
{
	struct applied_op *op;

	if (p->nops == p->cap) {
		size_t nc = p->cap ? p->cap * 2 : 16;
		struct applied_op *n = realloc(p->ops, nc * sizeof(*n));
		if (!n)
			return NULL;
		p->ops = n;
		p->cap = nc;
	}
	op = &p->ops[p->nops++];
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	return op;
}

static int link_op(struct applied_plan *p, enum applied_op_kind kind, const struct netmap_prefix *pre, const char *cidr)
{
	struct applied_op *op = op_new(p, kind);

	if (!op)
		return -ENOMEM;
	op->prefix = *pre;
	memcpy(op->cidr, cidr, strlen(cidr) + 1);
	return 0;
}

static bool cidr_of(const struct netmap_prefix *pre, char out[64])
{
	return netmap_prefix_format(pre, false, out, 64) > 0;
}

/* Counts the routes of aips up or down by delta in the plan. */
static int count_routes(struct applied_plan *p, const struct netmap_prefix *aips, size_t n, long delta)
{
	char cidr[64];

	for (size_t i = 0; i < n; i++) {
		struct change *c;
		if (!cidr_of(&aips[i], cidr))
			continue;
		c = strmap_get(p->refs, cidr);
		if (!c) {
			c = calloc(1, sizeof(*c));
			if (!c || strmap_set(p->refs, cidr, c, NULL)) {
				free(c);
				return -ENOMEM;
			}
			c->prefix = aips[i];
		}
		c->delta += delta;
	}
	return 0;
}

/* The record the plan sees for key: the plan's own, else the applied one. */
static const struct record *current(const struct applied *a, const struct applied_plan *p, const char *hex)
{
	void *r = strmap_get(p->peers, hex);

	if (r == REMOVED)
		return NULL;
	return r ? r : strmap_get(a->peers, hex);
}

static int stage(struct applied_plan *p, const char *hex, struct record *r)
{
	void *old = NULL;

	if (strmap_set(p->peers, hex, r, &old))
		return -ENOMEM;
	record_free(old);
	return 0;
}

static bool aips_equal(const struct record *a, const struct netmap_node *n)
{
	if (a->naips != n->nallowed_ips)
		return false;
	for (size_t i = 0; i < a->naips; i++)
		if (!netmap_prefix_equal(&a->aips[i], &n->allowed_ips[i]))
			return false;
	return true;
}

static int plan_remove(const struct applied *a, struct applied_plan *p, const uint8_t key[32])
{
	char hex[65];
	const struct record *old;
	struct applied_op *op;
	int err;

	hex_of(key, hex);
	old = current(a, p, hex);
	if (!old)
		return 0;
	if (!(op = op_new(p, APPLIED_PEER_REMOVE)))
		return -ENOMEM;
	op->peer.flags = UAPI_PEER_REMOVE;
	memcpy(op->peer.public_key, key, 32);
	if ((err = count_routes(p, old->aips, old->naips, -1)))
		return err;
	return stage(p, hex, REMOVED);
}

static int plan_upsert(const struct applied *a, struct applied_plan *p, const struct netmap_node *n)
{
	char hex[65];
	const struct record *old;
	struct record *r = calloc(1, sizeof(*r));
	unsigned flags = 0;
	int err = -ENOMEM;

	if (!r)
		return -ENOMEM;
	memcpy(r->key, n->node_key, 32);
	r->in_engine = true;
	if (n->nallowed_ips) {
		r->aips = malloc(n->nallowed_ips * sizeof(*r->aips));
		if (!r->aips)
			goto out;
		memcpy(r->aips, n->allowed_ips, n->nallowed_ips * sizeof(*r->aips));
	}
	r->naips = n->nallowed_ips;
	if (n->nendpoints) {
		r->has_endpoint = true;
		r->endpoint = n->endpoints[0];
	}
	hex_of(n->node_key, hex);
	old = current(a, p, hex);
	if (!old || !old->in_engine) {
		flags = UAPI_PEER_REPLACE_ALLOWED_IPS | (r->has_endpoint ? UAPI_PEER_HAS_ENDPOINT : 0);
	} else {
		if (!aips_equal(old, n))
			flags |= UAPI_PEER_REPLACE_ALLOWED_IPS;
		/* An endpoint the netmap no longer names stays in the engine:
		 * WireGuard cannot unset one, and roaming may have moved it. */
		if (r->has_endpoint && (!old->has_endpoint || !endpoint_equal(&old->endpoint, &r->endpoint)))
			flags |= UAPI_PEER_HAS_ENDPOINT;
	}
	if (flags) {
		struct applied_op *op = op_new(p, APPLIED_PEER_SET);
		if (!op)
			goto out;
		op->peer.flags = flags;
		memcpy(op->peer.public_key, n->node_key, 32);
		if (flags & UAPI_PEER_HAS_ENDPOINT)
			op->peer.endpoint = r->endpoint;
		if ((flags & UAPI_PEER_REPLACE_ALLOWED_IPS) && r->naips) {
			struct uapi_allowed_ip *u = calloc(r->naips, sizeof(*u));
			if (!u) {
				p->nops--;
				goto out;
			}
			for (size_t i = 0; i < r->naips; i++) {
				const struct netmap_prefix *pre = &r->aips[i];
				u[i].family = pre->family;
				u[i].cidr = pre->bits;
				memcpy(pre->family == AF_INET ? (void *)&u[i].ip.v4 : (void *)&u[i].ip.v6, pre->addr,
				       pre->family == AF_INET ? 4 : 16);
			}
			op->peer.allowed_ips = u;
			op->peer.n_allowed_ips = r->naips;
		}
	}
	if (old && (err = count_routes(p, old->aips, old->naips, -1)))
		goto out;
	if ((err = count_routes(p, r->aips, r->naips, +1)))
		goto out;
	err = stage(p, hex, r);
	if (!err)
		r = NULL;
out:
	record_free(r);
	return err;
}

/* The TUN's addresses become exactly want[]. */
static int plan_addrs(const struct applied *a, struct applied_plan *p, const struct netmap_prefix *want, size_t n)
{
	struct strmap *set = strmap_new();
	char cidr[64];
	int err = -ENOMEM;

	if (!set)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!cidr_of(&want[i], cidr) || strmap_has(set, cidr))
			continue;
		if (strmap_set(set, cidr, (void *)&want[i], NULL))
			goto out;
		if (!strmap_has(a->addrs, cidr) && link_op(p, APPLIED_ADDR_ADD, &want[i], cidr))
			goto out;
	}
	for (struct strmap_entry *e = strmap_first(a->addrs); e; e = strmap_next(a->addrs, e)) {
		struct netmap_prefix pre;
		if (strmap_has(set, strmap_key(e)))
			continue;
		if (!netmap_prefix_parse(&pre, strmap_key(e)))
			continue;
		if (link_op(p, APPLIED_ADDR_DEL, &pre, strmap_key(e)))
			goto out;
	}
	err = 0;
out:
	strmap_free(set);
	return err;
}

/* Routes whose count the plan changed, and (full) any left on the link
 * with no peer because removing them failed before. */
static int plan_routes(const struct applied *a, struct applied_plan *p, bool sweep)
{
	for (int pass = 0; pass < 2; pass++) {
		for (struct strmap_entry *e = strmap_first(p->refs); e; e = strmap_next(p->refs, e)) {
			const struct change *c = strmap_value(e);
			const struct route *r = strmap_get(a->routes, strmap_key(e));
			long refs = (r ? r->refs : 0) + c->delta;
			bool installed = r && r->installed;

			if (pass == 0 && refs > 0 && !installed && link_op(p, APPLIED_ROUTE_ADD, &c->prefix, strmap_key(e)))
				return -ENOMEM;
			if (pass == 1 && refs <= 0 && installed && link_op(p, APPLIED_ROUTE_DEL, &c->prefix, strmap_key(e)))
				return -ENOMEM;
		}
	}
	if (!sweep)
		return 0;
	for (struct strmap_entry *e = strmap_first(a->routes); e; e = strmap_next(a->routes, e)) {
		const struct route *r = strmap_value(e);
		struct netmap_prefix pre;

		if (r->refs > 0 || !r->installed || strmap_has(p->refs, strmap_key(e)))
			continue;
		if (netmap_prefix_parse(&pre, strmap_key(e)) && link_op(p, APPLIED_ROUTE_DEL, &pre, strmap_key(e)))
			return -ENOMEM;
	}
	return 0;
}

static int plan_init(struct applied_plan *p)
{
	memset(p, 0, sizeof(*p));
	p->peers = strmap_new();
	p->refs = strmap_new();
	return p->peers && p->refs ? 0 : -ENOMEM;
}

void applied_plan_free(struct applied_plan *p)
{
	for (size_t i = 0; i < p->nops; i++)
		free(p->ops[i].peer.allowed_ips);
	free(p->ops);
	if (p->peers)
		free_records(p->peers);
	strmap_free(p->peers);
	if (p->refs)
		for (struct strmap_entry *e = strmap_first(p->refs); e; e = strmap_next(p->refs, e))
			free(strmap_value(e));
	strmap_free(p->refs);
	memset(p, 0, sizeof(*p));
}

int applied_plan_netmap(const struct applied *a, const struct netmap *nm, struct applied_plan *p)
{
	struct strmap *keep = strmap_new();
	char hex[65];
	int err = plan_init(p);

	if (err || !keep) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nm->npeers; i++) {
		hex_of(nm->peers[i].node_key, hex);
		if ((err = strmap_set(keep, hex, (void *)1, NULL)))
			goto out;
	}
	/* Peers the netmap no longer has, first. */
	for (struct strmap_entry *e = strmap_first(a->peers); e; e = strmap_next(a->peers, e)) {
		const struct record *r = strmap_value(e);
		if (!strmap_has(keep, strmap_key(e)) && (err = plan_remove(a, p, r->key)))
			goto out;
	}
	for (size_t i = 0; i < nm->npeers; i++)
		if ((err = plan_upsert(a, p, &nm->peers[i])))
			goto out;
	if ((err = plan_addrs(a, p, nm->self.addresses, nm->self.naddresses)) || (err = plan_routes(a, p, true)))
		goto out;
out:
	strmap_free(keep);
	if (err)
		applied_plan_free(p);
	return err;
}

int applied_plan_delta(const struct applied *a, const struct netmap_delta *d, struct applied_plan *p)
{
	int err = plan_init(p);

	if (err)
		goto out;
	for (size_t i = 0; i < d->nremove; i++)
		if ((err = plan_remove(a, p, d->remove[i])))
			goto out;
	for (size_t i = 0; i < d->nupsert; i++)
		if ((err = plan_upsert(a, p, &d->upsert[i])))
			goto out;
	if ((d->has & NETMAP_HAS_SELF) && (err = plan_addrs(a, p, d->self.addresses, d->self.naddresses)))
		goto out;
	err = plan_routes(a, p, false);
out:
	if (err)
		applied_plan_free(p);
	return err;
}

int applied_plan_clear(const struct applied *a, struct applied_plan *p)
{
	const struct netmap none = { 0 };

	return applied_plan_netmap(a, &none, p);
}

/* ---- committing ---- */

static int commit_peers(struct applied *a, struct applied_plan *p)
{
	char hex[65];

	/* A set that failed: its record says so, and the next plan sets it again. */
	for (size_t i = 0; i < p->nops; i++) {
		struct record *r;
		if (p->ops[i].kind != APPLIED_PEER_SET || !p->ops[i].err)
			continue;
		hex_of(p->ops[i].peer.public_key, hex);
		r = strmap_get(p->peers, hex);
		if (r && r != REMOVED)
			r->in_engine = false;
	}
	for (struct strmap_entry *e = strmap_first(p->peers); e; e = strmap_next(p->peers, e)) {
		struct record *r = strmap_value(e);
		void *old = NULL;

		if (r == REMOVED) {
			record_free(strmap_del(a->peers, strmap_key(e)));
			continue;
		}
		if (strmap_set(a->peers, strmap_key(e), r, &old))
			return -ENOMEM;
		record_free(old);
		/* The applied map holds it now (replacing a value never fails). */
		strmap_set(p->peers, strmap_key(e), REMOVED, NULL);
	}
	return 0;
}

/* A route neither wanted nor on the link is forgotten. */
static void forget_route(struct applied *a, const char *cidr)
{
	const struct route *r = strmap_get(a->routes, cidr);

	if (r && r->refs <= 0 && !r->installed)
		free(strmap_del(a->routes, cidr));
}

static struct route *route_get(struct applied *a, const char *cidr)
{
	struct route *r = strmap_get(a->routes, cidr);

	if (r)
		return r;
	r = calloc(1, sizeof(*r));
	if (!r || strmap_set(a->routes, cidr, r, NULL)) {
		free(r);
		return NULL;
	}
	return r;
}

int applied_commit(struct applied *a, struct applied_plan *p)
{
	int err = commit_peers(a, p);

	if (err)
		return err;
	for (struct strmap_entry *e = strmap_first(p->refs); e; e = strmap_next(p->refs, e)) {
		const struct change *c = strmap_value(e);
		struct route *r = route_get(a, strmap_key(e));
		if (!r)
			return -ENOMEM;
		r->refs += c->delta;
		if (r->refs < 0)
			r->refs = 0;
	}
	for (size_t i = 0; i < p->nops; i++) {
		const struct applied_op *op = &p->ops[i];
		struct route *r;

		switch (op->kind) {
		case APPLIED_ADDR_ADD:
			if (!op->err && strmap_set(a->addrs, op->cidr, (void *)1, NULL))
				return -ENOMEM;
			break;
		case APPLIED_ADDR_DEL:
			if (!op->err)
				strmap_del(a->addrs, op->cidr);
			break;
		case APPLIED_ROUTE_ADD:
		case APPLIED_ROUTE_DEL:
			if (!op->err && !(r = route_get(a, op->cidr)))
				return -ENOMEM;
			if (!op->err)
				r->installed = op->kind == APPLIED_ROUTE_ADD;
			break;
		default:
			break;
		}
	}
	for (struct strmap_entry *e = strmap_first(p->refs); e; e = strmap_next(p->refs, e))
		forget_route(a, strmap_key(e));
	for (size_t i = 0; i < p->nops; i++)
		if (p->ops[i].kind == APPLIED_ROUTE_DEL)
			forget_route(a, p->ops[i].cidr);
	return 0;
}
