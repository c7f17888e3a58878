/* The device index and per-device compilation: packet filter, visible
 * peers, approved routes.
 *
 * Devices live in slots; selectors that name principals (users, tags,
 * namespaces, autogroups) expand through buckets of slots, so a filter
 * costs the rules times the sources it names, never a scan of every
 * device. Only address selectors scan, for visibility.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "model.h"
#include "strmap.h"

struct bucket {
	size_t *v;
	size_t n, cap;
};

struct policy_net {
	const struct policy *p;
	struct dev *devs;
	size_t n_devs, cap, live;
	size_t *free_slots;
	size_t n_free;
	struct strmap *by_name; /* slot + 1 */
	struct strmap *by_user, *by_tag, *by_ns; /* struct bucket * */
	struct bucket member, tagged, exits;
	struct bucket routers; /* devices with an approved subnet route */
	/* Every device address, sorted per family, so an address selector
	 * finds its devices by binary search instead of a scan. */
	struct addr_index {
		struct addr_entry *v;
		size_t n, cap;
	} addrs[2];
	struct policy_prefix *internet; /* autogroup:internet, see internet_build() */
	size_t n_internet;
	struct net_cache *cache; /* see "the filter as text" */
};

#define SLOT(v) ((size_t)(uintptr_t)(v) - 1)

/* The shared filter text (see "the filter as text"). */
#define SRC_TEXT_MAX ((size_t)64 << 20)

struct src_text {
	struct buf text;
	bool valid;
};

struct net_cache {
	struct src_text *rules; /* one per policy rule */
	size_t n_rules, n_valid;
	struct buf dst, self, ssrc; /* scratch, per filter */
	struct policy_net_stats stats;
};

static int cache_new(struct policy_net *n);
static bool sels_eq(const struct policy *pa, const struct sel *a, size_t na, const struct policy *pb,
		    const struct sel *b, size_t nb);
static void cache_free(struct net_cache *c);
static void cache_touch(struct policy_net *n, const struct dev *d);

struct addr_entry {
	uint8_t addr[16];
	size_t slot;
};

/* ---- the address index ----------------------------------------------- */

static struct addr_index *addr_family(struct policy_net *n, uint8_t family)
{
	return &n->addrs[family == 4 ? 0 : 1];
}

/* First entry not below key (its first len bytes). */
static size_t addr_lower(const struct addr_index *x, const uint8_t *key, size_t len)
{
	size_t lo = 0, hi = x->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (memcmp(x->v[mid].addr, key, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static size_t addr_len(uint8_t family)
{
	return family == 4 ? 4 : 16;
}

static int addr_insert(struct policy_net *n, const struct policy_prefix *a, size_t slot)
{
	struct addr_index *x = addr_family(n, a->family);
	size_t at;

	if (x->n == x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 64;
		struct addr_entry *v = reallocarray(x->v, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		x->v = v;
		x->cap = cap;
	}
	at = addr_lower(x, a->addr, addr_len(a->family));
	memmove(&x->v[at + 1], &x->v[at], (x->n - at) * sizeof(*x->v));
	memset(&x->v[at], 0, sizeof(x->v[at]));
	memcpy(x->v[at].addr, a->addr, addr_len(a->family));
	x->v[at].slot = slot;
	x->n++;
	return 0;
}

static void addr_remove(struct policy_net *n, const struct policy_prefix *a, size_t slot)
{
	struct addr_index *x = addr_family(n, a->family);

	for (size_t i = addr_lower(x, a->addr, addr_len(a->family)); i < x->n; i++) {
		if (memcmp(x->v[i].addr, a->addr, addr_len(a->family)))
			return;
		if (x->v[i].slot == slot) {
			memmove(&x->v[i], &x->v[i + 1], (x->n - i - 1) * sizeof(*x->v));
			x->n--;
			return;
		}
	}
}

/* ---- buckets --------------------------------------------------------- */

static int bucket_add(struct bucket *b, size_t slot)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4;
		size_t *v = reallocarray(b->v, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n++] = slot;
	return 0;
}

static void bucket_del(struct bucket *b, size_t slot)
{
	for (size_t i = 0; i < b->n; i++) {
		if (b->v[i] == slot) {
			b->v[i] = b->v[--b->n];
			return;
		}
	}
}

static int map_add(struct strmap *m, const char *key, size_t slot)
{
	struct bucket *b = strmap_get(m, key);

	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b || strmap_set(m, key, b, NULL)) {
			free(b);
			return -ENOMEM;
		}
	}
	return bucket_add(b, slot);
}

static void map_del(struct strmap *m, const char *key, size_t slot)
{
	struct bucket *b = strmap_get(m, key);

	if (!b)
		return;
	bucket_del(b, slot);
	if (b->n == 0) {
		strmap_del(m, key);
		free(b->v);
		free(b);
	}
}

static void map_free(struct strmap *m)
{
	for (struct strmap_entry *e = strmap_first(m); e; e = strmap_next(m, e)) {
		struct bucket *b = strmap_value(e);

		free(b->v);
		free(b);
	}
	strmap_free(m);
}

/* ---- autogroup:internet ---------------------------------------------- */

/* The public address space: IPv4 less private, shared (CGNAT, so the
 * tailnet), loopback, link-local and multicast/reserved ranges; IPv6
 * global unicast. Built by splitting 0.0.0.0/0 around the exclusions. */
static int internet_add(struct policy_net *n, const struct policy_prefix *pfx,
			const struct policy_prefix *ex, size_t n_ex)
{
	struct policy_prefix half;
	bool overlap = false;

	for (size_t i = 0; i < n_ex; i++) {
		if (policy_prefix_contains(&ex[i], pfx))
			return 0;
		overlap = overlap || policy_prefix_overlaps(&ex[i], pfx);
	}
	if (!overlap) {
		struct policy_prefix *v =
			reallocarray(n->internet, n->n_internet + 1, sizeof(*v));

		if (!v)
			return -ENOMEM;
		n->internet = v;
		v[n->n_internet++] = *pfx;
		return 0;
	}
	half = *pfx;
	half.bits++;
	if (internet_add(n, &half, ex, n_ex))
		return -ENOMEM;
	half.addr[pfx->bits / 8] |= (uint8_t)(0x80u >> (pfx->bits % 8));
	return internet_add(n, &half, ex, n_ex);
}

static const char *const not_internet[] = { "0.0.0.0/8",	    "10.0.0.0/8",     "100.64.0.0/10",
					    "127.0.0.0/8",    "169.254.0.0/16", "172.16.0.0/12",
					    "192.168.0.0/16", "224.0.0.0/3" };

/* Is a in autogroup:internet? (For the tests' view; the filter uses the
 * prefixes internet_build() makes from the same list.) */
static bool addr_is_internet(const struct policy_prefix *a)
{
	struct policy_prefix p;

	if (a->family == 6) {
		policy_prefix_parse("2000::/3", &p);
		return policy_prefix_contains(&p, a);
	}
	for (size_t i = 0; i < sizeof(not_internet) / sizeof(not_internet[0]); i++) {
		policy_prefix_parse(not_internet[i], &p);
		if (policy_prefix_contains(&p, a))
			return false;
	}
	return true;
}

static int internet_build(struct policy_net *n)
{
	const char *const *excluded = not_internet;
	struct policy_prefix ex[8], all, v6;

	for (size_t i = 0; i < 8; i++)
		policy_prefix_parse(excluded[i], &ex[i]);
	policy_prefix_parse("0.0.0.0/0", &all);
	policy_prefix_parse("2000::/3", &v6);
	if (internet_add(n, &all, ex, 8))
		return -ENOMEM;
	return internet_add(n, &v6, NULL, 0);
}

/* ---- matching -------------------------------------------------------- */

static bool dev_has_tag(const struct dev *d, const char *tag)
{
	for (size_t i = 0; i < d->n_tags; i++)
		if (!strcmp(d->tags[i], tag))
			return true;
	return false;
}

static bool dev_in_prefix(const struct dev *d, const struct policy_prefix *p)
{
	for (size_t i = 0; i < d->n_addrs; i++)
		if (policy_prefix_contains(p, &d->addrs[i]))
			return true;
	return false;
}

/* Subnet routes only: an exit node is reached through autogroup:internet
 * (or "*"), not by every prefix its /0 overlaps. */
static bool dev_routes_overlap(const struct dev *d, const struct policy_prefix *p)
{
	for (size_t i = 0; i < d->n_routes; i++)
		if (d->routes[i].bits && policy_prefix_overlaps(p, &d->routes[i]))
			return true;
	return false;
}

static bool user_in_group(const struct policy *p, size_t g, const struct dev *d)
{
	const struct group *gr = &p->groups[g];

	for (size_t i = 0; i < gr->n; i++) {
		const struct sel *m = &gr->members[i];

		if (m->kind == SEL_USER && d->user && !strcmp(m->name, d->user))
			return true;
		if (m->kind == SEL_NS && d->ns && !strcmp(m->name, d->ns))
			return true;
	}
	return false;
}

/* Is d (one of) what s names as a principal? Addresses match by the
 * device's own addresses; autogroup:self and :internet need a context and
 * never match here. */
bool sel_match(const struct policy *p, const struct sel *s, const struct dev *d)
{
	switch (s->kind) {
	case SEL_ALL:
		return true;
	case SEL_USER:
		return d->user && !strcmp(d->user, s->name);
	case SEL_GROUP:
		return d->user && user_in_group(p, s->group, d);
	case SEL_TAG:
		return dev_has_tag(d, s->name);
	case SEL_NS:
		return d->ns && !strcmp(d->ns, s->name);
	case SEL_MEMBER:
		return d->user != NULL;
	case SEL_TAGGED:
		return d->n_tags > 0;
	case SEL_PREFIX:
		return dev_in_prefix(d, &s->pfx);
	case SEL_NONE:
	case SEL_SELF:
	case SEL_INTERNET:
		return false;
	}
	return false;
}

/* As a destination, an address selector also matches a router of a route
 * overlapping it, and autogroup:internet matches exit nodes. */
static bool dst_match(const struct policy *p, const struct sel *s, const struct dev *d)
{
	if (s->kind == SEL_PREFIX && dev_routes_overlap(d, &s->pfx))
		return true;
	if (s->kind == SEL_INTERNET)
		return d->exit_node;
	return sel_match(p, s, d);
}

static bool src_match(const struct policy *p, const struct sel *s, const struct dev *d)
{
	if (s->kind == SEL_PREFIX && dev_routes_overlap(d, &s->pfx))
		return true;
	return sel_match(p, s, d);
}

static bool self_match(const struct dev *dst, const struct dev *src)
{
	return dst->user && src->user && !strcmp(dst->user, src->user);
}

/* ---- the index ------------------------------------------------------- */

struct policy_net *policy_net_new(const struct policy *p)
{
	struct policy_net *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->p = p;
	n->by_name = strmap_new();
	n->by_user = strmap_new();
	n->by_tag = strmap_new();
	n->by_ns = strmap_new();
	if (!n->by_name || !n->by_user || !n->by_tag || !n->by_ns || internet_build(n) || cache_new(n)) {
		policy_net_free(n);
		return NULL;
	}
	return n;
}

static void dev_fini(struct dev *d)
{
	free(d->name);
	free(d->user);
	for (size_t i = 0; i < d->n_tags; i++)
		free(d->tags[i]);
	free(d->tags);
	free(d->routes);
	free(d->ns);
	memset(d, 0, sizeof(*d));
}

void policy_net_free(struct policy_net *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n_devs; i++)
		dev_fini(&n->devs[i]);
	free(n->devs);
	free(n->free_slots);
	strmap_free(n->by_name);
	map_free(n->by_user);
	map_free(n->by_tag);
	map_free(n->by_ns);
	free(n->member.v);
	free(n->tagged.v);
	free(n->exits.v);
	free(n->routers.v);
	free(n->addrs[0].v);
	free(n->addrs[1].v);
	free(n->internet);
	cache_free(n->cache);
	free(n);
}

size_t policy_net_len(const struct policy_net *n)
{
	return n->live;
}

static bool approver_match(const struct policy *p, const struct sel *s, size_t n,
			   const struct dev *d)
{
	for (size_t i = 0; i < n; i++)
		if (sel_match(p, &s[i], d))
			return true;
	return false;
}

static bool is_exit_route(const struct policy_prefix *r)
{
	return r->bits == 0;
}

/* autoApprovers: a route is approved when a listed route contains it and
 * the device matches one of that route's approvers; an exit route (/0)
 * when the device matches exitNode. */
static int routes_approve(const struct policy *p, struct dev *d, const struct policy_device *in)
{
	d->routes = calloc(in->n_routes + 1, sizeof(*d->routes));
	if (!d->routes)
		return -ENOMEM;
	for (size_t i = 0; i < in->n_routes; i++) {
		const struct policy_prefix *r = &in->routes[i];
		bool ok = false;

		if (is_exit_route(r)) {
			ok = approver_match(p, p->exit_approvers, p->n_exit_approvers, d);
			d->exit_node = d->exit_node || ok;
		} else {
			for (size_t k = 0; k < p->n_route_approvers && !ok; k++)
				ok = policy_prefix_contains(&p->route_approvers[k].pfx, r) &&
				     approver_match(p, p->route_approvers[k].sels,
						    p->route_approvers[k].n, d);
		}
		if (ok)
			d->routes[d->n_routes++] = *r;
	}
	return 0;
}

static int dev_fill(const struct policy *p, struct dev *d, const struct policy_device *in)
{
	bool tagged = in->n_tags > 0;

	memset(d, 0, sizeof(*d));
	d->name = strdup(in->name);
	if (!d->name)
		return -ENOMEM;
	memcpy(d->addrs, in->addrs, in->n_addrs * sizeof(in->addrs[0]));
	d->n_addrs = in->n_addrs;
	if (!tagged && in->user && *in->user) {
		d->user = strdup(in->user);
		if (!d->user)
			return -ENOMEM;
	} else if (!tagged && in->pod && in->pod_namespace && in->pod_serviceaccount) {
		size_t len = strlen("system:serviceaccount::") + strlen(in->pod_namespace) +
			     strlen(in->pod_serviceaccount) + 1;

		d->user = malloc(len);
		if (!d->user)
			return -ENOMEM;
		snprintf(d->user, len, "system:serviceaccount:%s:%s", in->pod_namespace,
			 in->pod_serviceaccount);
	}
	if (!tagged && in->pod && in->pod_namespace) {
		d->ns = strdup(in->pod_namespace);
		if (!d->ns)
			return -ENOMEM;
	}
	d->tags = calloc(in->n_tags + 1, sizeof(*d->tags));
	if (!d->tags)
		return -ENOMEM;
	for (size_t i = 0; i < in->n_tags; i++) {
		d->tags[i] = strdup(in->tags[i]);
		if (!d->tags[i])
			return -ENOMEM;
		d->n_tags++;
	}
	return routes_approve(p, d, in);
}

static bool has_subnet_route(const struct dev *d)
{
	for (size_t i = 0; i < d->n_routes; i++)
		if (d->routes[i].bits)
			return true;
	return false;
}

static void unindex(struct policy_net *n, size_t slot)
{
	struct dev *d = &n->devs[slot];

	cache_touch(n, d);
	strmap_del(n->by_name, d->name);
	if (d->user)
		map_del(n->by_user, d->user, slot);
	if (d->ns)
		map_del(n->by_ns, d->ns, slot);
	for (size_t i = 0; i < d->n_tags; i++)
		map_del(n->by_tag, d->tags[i], slot);
	if (d->user)
		bucket_del(&n->member, slot);
	if (d->n_tags)
		bucket_del(&n->tagged, slot);
	if (d->exit_node)
		bucket_del(&n->exits, slot);
	if (has_subnet_route(d))
		bucket_del(&n->routers, slot);
	for (size_t i = 0; i < d->n_addrs; i++)
		addr_remove(n, &d->addrs[i], slot);
}

/* Every index entry, or none (-ENOMEM after undoing). Tags repeat at most
 * once in a bucket: a device tagged twice with one tag counts once. */
static int index_dev(struct policy_net *n, size_t slot)
{
	struct dev *d = &n->devs[slot];

	cache_touch(n, d);
	if (strmap_set(n->by_name, d->name, (void *)(uintptr_t)(slot + 1), NULL))
		return -ENOMEM;
	if (d->user && map_add(n->by_user, d->user, slot))
		goto nomem;
	if (d->ns && map_add(n->by_ns, d->ns, slot))
		goto nomem;
	for (size_t i = 0; i < d->n_tags; i++) {
		bool dup = false;

		for (size_t k = 0; k < i; k++)
			dup = dup || !strcmp(d->tags[k], d->tags[i]);
		if (!dup && map_add(n->by_tag, d->tags[i], slot))
			goto nomem;
	}
	if (d->user && bucket_add(&n->member, slot))
		goto nomem;
	if (d->n_tags && bucket_add(&n->tagged, slot))
		goto nomem;
	if (d->exit_node && bucket_add(&n->exits, slot))
		goto nomem;
	if (has_subnet_route(d) && bucket_add(&n->routers, slot))
		goto nomem;
	for (size_t i = 0; i < d->n_addrs; i++)
		if (addr_insert(n, &d->addrs[i], slot))
			goto nomem;
	return 0;
nomem:
	unindex(n, slot);
	return -ENOMEM;
}

static int slot_find(const struct policy_net *n, const char *name, size_t *slot)
{
	void *v = name ? strmap_get(n->by_name, name) : NULL;

	if (!v)
		return -ENOENT;
	*slot = SLOT(v);
	return 0;
}

int policy_net_add(struct policy_net *n, const struct policy_device *in,
		   struct policy_names *touched)
{
	size_t slot;
	int ret;

	if (touched)
		*touched = (struct policy_names){ 0 };
	if (!in->name || !*in->name || in->n_addrs > POLICY_MAX_ADDRS)
		return -EINVAL;
	if (strmap_has(n->by_name, in->name))
		return -EEXIST;
	if (n->n_free) {
		slot = n->free_slots[--n->n_free];
	} else {
		if (n->n_devs == n->cap) {
			size_t cap = n->cap ? n->cap * 2 : 16;
			struct dev *v = reallocarray(n->devs, cap, sizeof(*v));
			size_t *f = reallocarray(n->free_slots, cap, sizeof(*f));

			if (v)
				n->devs = v;
			if (f)
				n->free_slots = f;
			if (!v || !f)
				return -ENOMEM;
			n->cap = cap;
		}
		slot = n->n_devs++;
		memset(&n->devs[slot], 0, sizeof(n->devs[slot]));
	}
	ret = dev_fill(n->p, &n->devs[slot], in);
	if (!ret)
		ret = index_dev(n, slot);
	if (ret) {
		dev_fini(&n->devs[slot]);
		n->free_slots[n->n_free++] = slot;
		return ret;
	}
	n->devs[slot].live = true;
	n->live++;
	if (!touched)
		return 0;
	/* policy_net_peers leaves room for one more name. */
	ret = policy_net_peers(n, in->name, touched);
	if (ret) {
		/* Not added after all: the caller would not know what to
		 * recompile. */
		unindex(n, slot);
		dev_fini(&n->devs[slot]);
		n->free_slots[n->n_free++] = slot;
		n->live--;
		return ret;
	}
	touched->v[touched->len++] = n->devs[slot].name;
	return 0;
}

int policy_net_remove(struct policy_net *n, const char *name, struct policy_names *touched)
{
	size_t slot;
	int ret;

	if (touched)
		*touched = (struct policy_names){ 0 };
	ret = slot_find(n, name, &slot);
	if (ret)
		return ret;
	if (touched && (ret = policy_net_peers(n, name, touched)))
		return ret;
	unindex(n, slot);
	dev_fini(&n->devs[slot]);
	n->free_slots[n->n_free++] = slot;
	n->live--;
	return 0;
}

const char *policy_net_lookup(const struct policy_net *n, const struct policy_prefix *addr)
{
	const struct addr_index *x = &n->addrs[addr->family == 4 ? 0 : 1];
	size_t len = addr_len(addr->family);
	size_t i = addr_lower(x, addr->addr, len);

	if (i < x->n && !memcmp(x->v[i].addr, addr->addr, len))
		return n->devs[x->v[i].slot].name;
	return NULL;
}

/* ---- expanding selectors into devices -------------------------------- */

/* Slots marked in a bitmap, so each device is taken once per output. */
struct marks {
	uint8_t *bits;
	size_t *v;
	size_t n;
};

static int marks_init(struct marks *m, size_t n_devs)
{
	m->bits = calloc(n_devs / 8 + 1, 1);
	m->v = malloc((n_devs + 1) * sizeof(*m->v));
	m->n = 0;
	if (!m->bits || !m->v) {
		free(m->bits);
		free(m->v);
		return -ENOMEM;
	}
	return 0;
}

static void marks_fini(struct marks *m)
{
	free(m->bits);
	free(m->v);
}

static void mark(struct marks *m, size_t slot)
{
	if (m->bits[slot / 8] & (1u << (slot % 8)))
		return;
	m->bits[slot / 8] |= (uint8_t)(1u << (slot % 8));
	m->v[m->n++] = slot;
}

static void mark_bucket(struct marks *m, const struct bucket *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n; i++)
		mark(m, b->v[i]);
}

/* Every device s names as a principal (as a source when !as_dst). The
 * context device ctx gives autogroup:self its user. */
static void expand(const struct policy_net *n, const struct sel *s, bool as_dst,
		   const struct dev *ctx, struct marks *m)
{
	const struct policy *p = n->p;

	switch (s->kind) {
	case SEL_USER:
		mark_bucket(m, strmap_get(n->by_user, s->name));
		return;
	case SEL_GROUP:
		for (size_t i = 0; i < p->groups[s->group].n; i++) {
			const struct sel *mb = &p->groups[s->group].members[i];

			mark_bucket(m, strmap_get(mb->kind == SEL_NS ? n->by_ns : n->by_user,
						  mb->name));
		}
		return;
	case SEL_TAG:
		mark_bucket(m, strmap_get(n->by_tag, s->name));
		return;
	case SEL_NS:
		mark_bucket(m, strmap_get(n->by_ns, s->name));
		return;
	case SEL_MEMBER:
		mark_bucket(m, &n->member);
		return;
	case SEL_TAGGED:
		mark_bucket(m, &n->tagged);
		return;
	case SEL_SELF:
		if (as_dst && ctx && ctx->user)
			mark_bucket(m, strmap_get(n->by_user, ctx->user));
		return;
	case SEL_INTERNET:
		if (as_dst)
			mark_bucket(m, &n->exits);
		return;
	case SEL_ALL:
		for (size_t i = 0; i < n->n_devs; i++)
			if (n->devs[i].live)
				mark(m, i);
		return;
	case SEL_PREFIX: {
		/* Devices with an address inside: a run of the sorted index
		 * from the prefix's first address to its last. Then routers
		 * whose subnets overlap it. */
		const struct addr_index *x = &n->addrs[s->pfx.family == 4 ? 0 : 1];
		size_t len = addr_len(s->pfx.family);

		for (size_t i = addr_lower(x, s->pfx.addr, len); i < x->n; i++) {
			struct policy_prefix a = { .family = s->pfx.family,
						   .bits = (uint8_t)(len * 8) };

			memcpy(a.addr, x->v[i].addr, len);
			if (!policy_prefix_contains(&s->pfx, &a))
				break;
			mark(m, x->v[i].slot);
		}
		for (size_t i = 0; i < n->routers.n; i++)
			if (dev_routes_overlap(&n->devs[n->routers.v[i]], &s->pfx))
				mark(m, n->routers.v[i]);
		return;
	}
	case SEL_NONE:
		return;
	}
}

/* ---- filters --------------------------------------------------------- */

void policy_filter_free(struct policy_filter *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n_rules; i++) {
		free(f->rules[i].src_ips);
		free(f->rules[i].dst_ports);
	}
	free(f->rules);
	*f = (struct policy_filter){ 0 };
}

struct vec {
	void *v;
	size_t n, cap, size;
};

static void *vec_push(struct vec *v)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 8;
		void *nv = reallocarray(v->v, cap, v->size);

		if (!nv)
			return NULL;
		v->v = nv;
		v->cap = cap;
	}
	return (char *)v->v + v->size * v->n++;
}

static int push_prefix(struct vec *v, const struct policy_prefix *p)
{
	struct policy_prefix *e = vec_push(v);

	if (!e)
		return -ENOMEM;
	*e = *p;
	return 0;
}

static int push_dst(struct vec *v, const struct policy_prefix *ip, const struct dst *d)
{
	for (size_t i = 0; i < d->n_ports; i++) {
		struct policy_dst_port *e = vec_push(v);

		if (!e)
			return -ENOMEM;
		e->ip = *ip;
		e->ports = d->ports[i];
	}
	return 0;
}

static const struct policy_prefix any4 = { .family = 4, .bits = 0 };
static const struct policy_prefix any6 = { .family = 6, .bits = 0 };

/* The destinations of r on d: its own addresses for a principal, the
 * selector's prefix where d has or routes it, the public internet on an
 * exit node. Self destinations go to their own list: their sources
 * differ. */
static int rule_dsts(const struct policy_net *n, const struct rule *r, const struct dev *d,
		     struct vec *dst, struct vec *self)
{
	for (size_t i = 0; i < r->n_dst; i++) {
		const struct dst *x = &r->dst[i];
		int ret = 0;

		switch (x->sel.kind) {
		case SEL_ALL:
			ret = push_dst(dst, &any4, x);
			if (!ret)
				ret = push_dst(dst, &any6, x);
			break;
		case SEL_PREFIX:
			if (dst_match(n->p, &x->sel, d))
				ret = push_dst(dst, &x->sel.pfx, x);
			break;
		case SEL_INTERNET:
			for (size_t k = 0; d->exit_node && k < n->n_internet && !ret; k++)
				ret = push_dst(dst, &n->internet[k], x);
			break;
		case SEL_SELF:
			for (size_t k = 0; d->user && k < d->n_addrs && !ret; k++)
				ret = push_dst(self, &d->addrs[k], x);
			break;
		default:
			for (size_t k = 0; sel_match(n->p, &x->sel, d) && k < d->n_addrs && !ret;
			     k++)
				ret = push_dst(dst, &d->addrs[k], x);
			break;
		}
		if (ret)
			return ret;
	}
	return 0;
}

/* The sources of r: literal prefixes as written, principals as their
 * devices' addresses; for self rules only d's user's devices. */
static int rule_srcs(const struct policy_net *n, const struct rule *r, const struct dev *d,
		     bool self, struct marks *m, struct vec *src)
{
	m->n = 0;
	for (size_t i = 0; i < r->n_src; i++) {
		const struct sel *s = &r->src[i];

		if (!self && s->kind == SEL_ALL) {
			if (push_prefix(src, &any4) || push_prefix(src, &any6))
				return -ENOMEM;
		} else if (!self && s->kind == SEL_PREFIX) {
			if (push_prefix(src, &s->pfx))
				return -ENOMEM;
		} else if (!self) {
			expand(n, s, false, NULL, m);
		} else {
			const struct bucket *b = d->user ? strmap_get(n->by_user, d->user) : NULL;

			for (size_t k = 0; b && k < b->n; k++)
				if (src_match(n->p, s, &n->devs[b->v[k]]))
					mark(m, b->v[k]);
		}
	}
	for (size_t i = 0; i < m->n; i++) {
		const struct dev *x = &n->devs[m->v[i]];

		for (size_t k = 0; k < x->n_addrs; k++)
			if (push_prefix(src, &x->addrs[k]))
				return -ENOMEM;
	}
	/* Clear the marks for the next rule. */
	for (size_t i = 0; i < m->n; i++)
		m->bits[m->v[i] / 8] = 0;
	m->n = 0;
	return 0;
}

static int emit(struct vec *rules, const struct rule *r, struct vec *src, struct vec *dst)
{
	struct policy_rule *o;

	if (src->n == 0 || dst->n == 0) {
		free(src->v);
		free(dst->v);
		return 0;
	}
	o = vec_push(rules);
	if (!o) {
		free(src->v);
		free(dst->v);
		return -ENOMEM;
	}
	*o = (struct policy_rule){ .src_ips = src->v, .n_src = src->n, .dst_ports = dst->v,
				   .n_dst = dst->n, .n_protos = r->n_protos };
	memcpy(o->protos, r->protos, sizeof(o->protos));
	return 0;
}

int policy_net_filter(const struct policy_net *n, const char *name, struct policy_filter *out)
{
	struct vec rules = { .size = sizeof(struct policy_rule) };
	struct marks m;
	size_t slot;
	int ret;

	*out = (struct policy_filter){ 0 };
	ret = slot_find(n, name, &slot);
	if (ret)
		return ret;
	n->cache->stats.filters++;
	ret = marks_init(&m, n->n_devs);
	if (ret)
		return ret;
	for (size_t i = 0; i < n->p->n_rules && !ret; i++) {
		const struct rule *r = &n->p->rules[i];
		const struct dev *d = &n->devs[slot];
		struct vec dst = { .size = sizeof(struct policy_dst_port) };
		struct vec self = { .size = sizeof(struct policy_dst_port) };
		struct vec src = { .size = sizeof(struct policy_prefix) };
		struct vec ssrc = { .size = sizeof(struct policy_prefix) };

		ret = rule_dsts(n, r, d, &dst, &self);
		if (!ret && dst.n)
			ret = rule_srcs(n, r, d, false, &m, &src);
		if (!ret && self.n)
			ret = rule_srcs(n, r, d, true, &m, &ssrc);
		if (ret) {
			free(dst.v);
			free(self.v);
			free(src.v);
			free(ssrc.v);
			break;
		}
		ret = emit(&rules, r, &src, &dst);
		if (!ret)
			ret = emit(&rules, r, &ssrc, &self);
		else {
			free(ssrc.v);
			free(self.v);
		}
	}
	marks_fini(&m);
	out->rules = rules.v;
	out->n_rules = rules.n;
	if (ret)
		policy_filter_free(out);
	return ret;
}

/* ---- peers ----------------------------------------------------------- */

void policy_names_free(struct policy_names *names)
{
	if (!names)
		return;
	free(names->v);
	*names = (struct policy_names){ 0 };
}

static bool any_src(const struct policy *p, const struct rule *r, const struct dev *d)
{
	for (size_t i = 0; i < r->n_src; i++)
		if (src_match(p, &r->src[i], d))
			return true;
	return false;
}

int policy_net_peers(const struct policy_net *n, const char *name, struct policy_names *out)
{
	const struct policy *p = n->p;
	const struct dev *d;
	struct marks m;
	size_t slot;
	int ret;

	*out = (struct policy_names){ 0 };
	ret = slot_find(n, name, &slot);
	if (ret)
		return ret;
	n->cache->stats.peer_sets++;
	ret = marks_init(&m, n->n_devs);
	if (ret)
		return ret;
	d = &n->devs[slot];
	mark(&m, slot); /* never its own peer */
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *r = &p->rules[i];
		bool d_is_src = any_src(p, r, d);

		for (size_t k = 0; k < r->n_dst; k++) {
			const struct sel *s = &r->dst[k].sel;

			/* d may reach these... */
			if (d_is_src)
				expand(n, s, true, d, &m);
			/* ...and these may reach d. */
			if (s->kind == SEL_SELF) {
				const struct bucket *b =
					d->user ? strmap_get(n->by_user, d->user) : NULL;

				for (size_t j = 0; b && j < b->n; j++)
					if (any_src(p, r, &n->devs[b->v[j]]))
						mark(&m, b->v[j]);
			} else if (dst_match(p, s, d)) {
				for (size_t j = 0; j < r->n_src; j++)
					expand(n, &r->src[j], false, NULL, &m);
			}
		}
	}
	out->v = malloc((m.n + 1) * sizeof(*out->v));
	if (!out->v) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < m.n; i++)
		if (m.v[i] != slot)
			out->v[out->len++] = n->devs[m.v[i]].name;
out:
	marks_fini(&m);
	return ret;
}

bool rules_allow(const struct policy *p, const struct dev *src, const struct dev *dst,
		 uint8_t proto, uint16_t port)
{
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *r = &p->rules[i];
		bool ok = false;

		for (size_t k = 0; k < r->n_protos && !ok; k++)
			ok = r->protos[k] == proto;
		if (!ok || !any_src(p, r, src))
			continue;
		for (size_t k = 0; k < r->n_dst; k++) {
			const struct dst *x = &r->dst[k];

			bool hit = false;

			if (proto_has_ports(proto) && !ports_contain(x->ports, x->n_ports, port))
				continue;
			if (x->sel.kind == SEL_SELF) {
				hit = self_match(dst, src);
			} else if (x->sel.kind == SEL_INTERNET) {
				/* An address on the internet, not the exit node. */
				for (size_t a = 0; a < dst->n_addrs && !hit; a++)
					hit = addr_is_internet(&dst->addrs[a]);
			} else {
				hit = dst_match(p, &x->sel, dst);
			}
			if (hit)
				return true;
		}
	}
	return false;
}

const struct dev *net_dev(const struct policy_net *n, const char *name)
{
	size_t slot;

	return n && !slot_find(n, name, &slot) ? &n->devs[slot] : NULL;
}

/* ---- routes and tags ------------------------------------------------- */

void policy_routes_free(struct policy_routes *r)
{
	if (!r)
		return;
	free(r->approved);
	*r = (struct policy_routes){ 0 };
}

int policy_net_routes(const struct policy_net *n, const char *name, struct policy_routes *out)
{
	const struct dev *d;
	size_t slot;
	int ret;

	*out = (struct policy_routes){ 0 };
	ret = slot_find(n, name, &slot);
	if (ret)
		return ret;
	d = &n->devs[slot];
	out->approved = malloc((d->n_routes + 1) * sizeof(*out->approved));
	if (!out->approved)
		return -ENOMEM;
	memcpy(out->approved, d->routes, d->n_routes * sizeof(*d->routes));
	out->n_approved = d->n_routes;
	out->exit_node = d->exit_node;
	return 0;
}

bool policy_tag_allowed(const struct policy *p, const char *tag, const struct policy_device *who)
{
	struct policy_device untagged = *who;
	struct dev d;
	bool ok = false;

	untagged.n_tags = 0;
	untagged.n_routes = 0;
	if (dev_fill(p, &d, &untagged))
		goto out;
	/* A tagged requester is its tags. */
	for (size_t i = 0; i < who->n_tags; i++) {
		if (!strcmp(who->tags[i], tag))
			ok = true;
	}
	for (size_t i = 0; i < p->n_tag_owners && !ok; i++) {
		const struct owners *o = &p->tag_owners[i];

		if (strcmp(o->key, tag))
			continue;
		for (size_t k = 0; k < o->n && !ok; k++) {
			const struct sel *s = &o->sels[k];

			if (s->kind == SEL_TAG) {
				for (size_t t = 0; t < who->n_tags && !ok; t++)
					ok = !strcmp(who->tags[t], s->name);
			} else if (who->n_tags == 0) {
				ok = sel_match(p, s, &d);
			}
		}
	}
out:
	dev_fini(&d);
	return ok;
}

bool policy_tag_owners(const struct policy *p, const char *tag, char *out, size_t n)
{
	struct buf b = BUF_INIT(n ? n - 1 : 0);

	if (n)
		out[0] = '\0';
	for (size_t i = 0; i < p->n_tag_owners; i++) {
		const struct owners *o = &p->tag_owners[i];

		if (strcmp(o->key, tag))
			continue;
		for (size_t k = 0; k < o->n; k++) {
			const struct sel *s = &o->sels[k];
			const char *sep = k ? ", " : "";

			/* A failed add (past the cap) leaves b empty: stop there
			 * with what fitted. */
			if (s->kind == SEL_NS)
				buf_addf(&b, "%ssystem:serviceaccounts:%s", sep, s->name);
			else if (s->kind == SEL_MEMBER)
				buf_addf(&b, "%sautogroup:member", sep);
			else if (s->kind == SEL_NONE)
				buf_addf(&b, "%sautogroup:admin", sep);
			else
				buf_addf(&b, "%s%s", sep, s->name);
			if (!b.len)
				break;
			snprintf(out, n, "%s", buf_str(&b));
		}
		buf_free(&b);
		return true;
	}
	buf_free(&b);
	return false;
}

/* ---- the wire form --------------------------------------------------- */

static struct json *prefix_json(const struct policy_prefix *p)
{
	char s[64];

	if (!policy_prefix_format(p, s, sizeof(s)))
		return NULL;
	return json_new_string(s);
}

static int set_int(struct json *o, const char *k, int64_t v)
{
	return json_object_set(o, k, json_new_int(v));
}

static struct json *rule_json(const struct policy_rule *r)
{
	struct json *o = json_new_object(), *src = json_new_array(), *dst = json_new_array();
	struct json *proto = json_new_array();
	int ret = o && src && dst && proto ? 0 : -ENOMEM;

	for (size_t k = 0; !ret && k < r->n_src; k++)
		ret = json_array_append(src, prefix_json(&r->src_ips[k]));
	for (size_t k = 0; !ret && k < r->n_dst; k++) {
		struct json *e = json_new_object(), *ports = json_new_object();

		ret = set_int(ports, "first", r->dst_ports[k].ports.first);
		if (!ret)
			ret = set_int(ports, "last", r->dst_ports[k].ports.last);
		if (!ret)
			ret = json_object_set(e, "ip", prefix_json(&r->dst_ports[k].ip));
		if (!ret) {
			ret = json_object_set(e, "ports", ports); /* takes ports */
			ports = NULL;
		}
		if (!ret) {
			ret = json_array_append(dst, e); /* takes e */
			e = NULL;
		}
		json_free(ports);
		json_free(e);
	}
	for (size_t k = 0; !ret && k < r->n_protos; k++)
		ret = json_array_append(proto, json_new_int(r->protos[k]));
	if (ret) {
		json_free(src);
		json_free(dst);
		json_free(proto);
		json_free(o);
		return NULL;
	}
	/* json_object_set takes its value even when it fails. */
	if (json_object_set(o, "srcIPs", src) | json_object_set(o, "dstPorts", dst) |
	    json_object_set(o, "ipProto", proto)) {
		json_free(o);
		return NULL;
	}
	return o;
}

struct json *policy_filter_to_json(const struct policy_filter *f)
{
	struct json *arr = json_new_array();

	for (size_t i = 0; arr && i < f->n_rules; i++) {
		if (json_array_append(arr, rule_json(&f->rules[i]))) {
			json_free(arr);
			arr = NULL;
		}
	}
	return arr;
}

/* Decimal digits of v at *p, which moves past them. */
static void put_uint(char **p, unsigned v)
{
	char d[10];
	int n = 0;

	do
		d[n++] = (char)('0' + v % 10);
	while ((v /= 10));
	while (n)
		*(*p)++ = d[--n];
}

/* "addr/bits" with its quotes, as policy_prefix_format writes it: IPv4
 * by hand (most of a filter's text, and snprintf is slow), IPv6 through
 * it (inet_ntop's canonical form). */
static int dump_prefix(struct buf *out, const struct policy_prefix *p)
{
	char s[72], *e = s;

	*e++ = '"';
	if (p->family == 4) {
		for (int i = 0; i < 4; i++) {
			if (i)
				*e++ = '.';
			put_uint(&e, p->addr[i]);
		}
		*e++ = '/';
		put_uint(&e, p->bits);
	} else {
		if (!policy_prefix_format(p, e, sizeof(s) - 2))
			return -EINVAL;
		e += strlen(e);
	}
	*e++ = '"';
	return buf_add(out, s, (size_t)(e - s));
}

static int dump_ports(struct buf *out, const struct policy_port_range *r)
{
	static const char first[] = ",\"ports\":{\"first\":", last[] = ",\"last\":";
	char s[64], *e = s;

	memcpy(e, first, sizeof(first) - 1);
	e += sizeof(first) - 1;
	put_uint(&e, r->first);
	memcpy(e, last, sizeof(last) - 1);
	e += sizeof(last) - 1;
	put_uint(&e, r->last);
	*e++ = '}';
	*e++ = '}';
	return buf_add(out, s, (size_t)(e - s));
}

/* The text policy_filter_to_json() would dump (json_dump, compact), written
 * directly: a policy change dumps every touched device's filter, and
 * building the tree first took most of the compile's time. */
int policy_filter_dump(const struct policy_filter *f, struct buf *out)
{
	int ret = buf_add_byte(out, '[');

	for (size_t i = 0; !ret && i < f->n_rules; i++) {
		const struct policy_rule *r = &f->rules[i];

		ret = buf_add_str(out, i ? ",{\"srcIPs\":[" : "{\"srcIPs\":[");
		for (size_t k = 0; !ret && k < r->n_src; k++) {
			if (k)
				ret = buf_add_byte(out, ',');
			if (!ret)
				ret = dump_prefix(out, &r->src_ips[k]);
		}
		if (!ret)
			ret = buf_add_str(out, "],\"dstPorts\":[");
		for (size_t k = 0; !ret && k < r->n_dst; k++) {
			ret = buf_add_str(out, k ? ",{\"ip\":" : "{\"ip\":");
			if (!ret)
				ret = dump_prefix(out, &r->dst_ports[k].ip);
			if (!ret)
				ret = dump_ports(out, &r->dst_ports[k].ports);
		}
		if (!ret)
			ret = buf_add_str(out, "],\"ipProto\":[");
		for (size_t k = 0; !ret && k < r->n_protos; k++)
			ret = buf_addf(out, "%s%u", k ? "," : "", r->protos[k]);
		if (!ret)
			ret = buf_add_str(out, "]}");
	}
	return ret ? ret : buf_add_byte(out, ']');
}

bool policy_filter_allows(const struct policy_filter *f, const struct policy_prefix *src,
			  const struct policy_prefix *dst, uint8_t proto, uint16_t port)
{
	for (size_t i = 0; i < f->n_rules; i++) {
		const struct policy_rule *r = &f->rules[i];
		bool ok = false;

		for (size_t k = 0; k < r->n_protos && !ok; k++)
			ok = r->protos[k] == proto;
		if (!ok)
			continue;
		ok = false;
		for (size_t k = 0; k < r->n_src && !ok; k++)
			ok = policy_prefix_contains(&r->src_ips[k], src);
		if (!ok)
			continue;
		for (size_t k = 0; k < r->n_dst; k++) {
			const struct policy_dst_port *d = &r->dst_ports[k];

			if (policy_prefix_contains(&d->ip, dst) &&
			    (!proto_has_ports(proto) ||
			     (port >= d->ports.first && port <= d->ports.last)))
				return true;
		}
	}
	return false;
}

/* ---- the filter as text ---------------------------------------------- */

/* A rule's sources are the same for every device it reaches (but for
 * autogroup:self destinations, whose sources are the device's user's own
 * devices). So the text of each rule's srcIPs ("a/32","b/128",...) is
 * built once and shared by every filter the rule is in, until a device
 * its sources name joins or leaves (cache_touch): then that rule alone
 * is built again on its next use. A device's filter is its rules' shared
 * sources and its own destinations. The cache is its own allocation:
 * filling it is not a change of the net, whose readers hold it const. */

static int cache_new(struct policy_net *n)
{
	struct net_cache *c = calloc(1, sizeof(*c));

	if (!c || !(c->rules = calloc(n->p->n_rules + 1, sizeof(*c->rules)))) {
		free(c);
		return -ENOMEM;
	}
	c->n_rules = n->p->n_rules;
	for (size_t i = 0; i < c->n_rules; i++)
		buf_init(&c->rules[i].text, SRC_TEXT_MAX);
	buf_init(&c->dst, SRC_TEXT_MAX);
	buf_init(&c->self, SRC_TEXT_MAX);
	buf_init(&c->ssrc, SRC_TEXT_MAX);
	n->cache = c;
	return 0;
}

static void cache_free(struct net_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_rules; i++)
		buf_free(&c->rules[i].text);
	free(c->rules);
	buf_free(&c->dst);
	buf_free(&c->self);
	buf_free(&c->ssrc);
	free(c);
}

/* Does s, as a rule's source, name d (expand() would mark it)? */
static bool src_names(const struct policy *p, const struct sel *s, const struct dev *d)
{
	switch (s->kind) {
	case SEL_USER:
	case SEL_GROUP:
	case SEL_TAG:
	case SEL_NS:
	case SEL_MEMBER:
	case SEL_TAGGED:
		return sel_match(p, s, d);
	default:
		return false; /* written as is (*, prefixes) or nothing (self, internet) */
	}
}

/* d joins or leaves: the rules whose sources name it are built again. */
static void cache_touch(struct policy_net *n, const struct dev *d)
{
	struct net_cache *c = n->cache;

	for (size_t i = 0; c && c->n_valid && i < n->p->n_rules; i++) {
		const struct rule *r = &n->p->rules[i];
		bool hit = false;

		if (!c->rules[i].valid)
			continue;
		for (size_t k = 0; k < r->n_src && !hit; k++)
			hit = src_names(n->p, &r->src[k], d);
		if (hit) {
			c->rules[i].valid = false;
			buf_reset(&c->rules[i].text);
			c->n_valid--;
		}
	}
}

static int dump_list_item(struct buf *out, const struct policy_prefix *p)
{
	int ret = out->len ? buf_add_byte(out, ',') : 0;

	return ret ? ret : dump_prefix(out, p);
}

/* The addresses of the devices marked, in mark order; clears the marks. */
static int dump_marked(const struct policy_net *n, struct marks *m, struct buf *out)
{
	int ret = 0;

	for (size_t i = 0; i < m->n && !ret; i++) {
		const struct dev *x = &n->devs[m->v[i]];

		for (size_t k = 0; k < x->n_addrs && !ret; k++)
			ret = dump_list_item(out, &x->addrs[k]);
	}
	for (size_t i = 0; i < m->n; i++)
		m->bits[m->v[i] / 8] = 0;
	m->n = 0;
	return ret;
}

/* Rule i's shared sources, as rule_srcs() orders them: literal ones in
 * the rule's order, then the addresses of the devices it names. */
static int rule_src_text(const struct policy_net *n, size_t i, struct marks *m, const struct buf **out)
{
	struct src_text *t = &n->cache->rules[i];
	const struct rule *r = &n->p->rules[i];
	int ret = 0;

	if (!t->valid) {
		buf_reset(&t->text);
		for (size_t k = 0; k < r->n_src && !ret; k++) {
			const struct sel *s = &r->src[k];

			if (s->kind == SEL_ALL) {
				ret = dump_list_item(&t->text, &any4);
				if (!ret)
					ret = dump_list_item(&t->text, &any6);
			} else if (s->kind == SEL_PREFIX) {
				ret = dump_list_item(&t->text, &s->pfx);
			} else {
				expand(n, s, false, NULL, m);
			}
		}
		if (!ret)
			ret = dump_marked(n, m, &t->text);
		if (ret) {
			buf_reset(&t->text);
			return ret;
		}
		t->valid = true;
		n->cache->n_valid++;
		n->cache->stats.source_builds++;
	}
	*out = &t->text;
	return 0;
}

/* A device's own addresses as dump_prefix writes them: formatted once
 * per filter, not once per rule that names the device (IPv6 goes through
 * inet_ntop, whose printf showed in a change's profile). */
struct own_addrs {
	struct buf text[POLICY_MAX_ADDRS];
};

/* One dstPorts entry per port of x on ip (or, when pre is given, on the
 * address it holds as text). */
static int dump_dst_text(struct buf *out, const struct policy_prefix *ip, const struct buf *pre, const struct dst *x)
{
	int ret = 0;

	for (size_t i = 0; i < x->n_ports && !ret; i++) {
		ret = buf_add_str(out, out->len ? ",{\"ip\":" : "{\"ip\":");
		if (!ret)
			ret = pre ? buf_add(out, pre->data, pre->len) : dump_prefix(out, ip);
		if (!ret)
			ret = dump_ports(out, &x->ports[i]);
	}
	return ret;
}

static int dump_dst(struct buf *out, const struct policy_prefix *ip, const struct dst *x)
{
	return dump_dst_text(out, ip, NULL, x);
}

/* rule_dsts() as text: d's destinations in r, self ones apart. */
static int rule_dst_text(const struct policy_net *n, const struct rule *r, const struct dev *d,
			 const struct own_addrs *own, struct buf *dst, struct buf *self)
{
	int ret = 0;

	buf_reset(dst);
	buf_reset(self);
	for (size_t i = 0; i < r->n_dst && !ret; i++) {
		const struct dst *x = &r->dst[i];

		switch (x->sel.kind) {
		case SEL_ALL:
			ret = dump_dst(dst, &any4, x);
			if (!ret)
				ret = dump_dst(dst, &any6, x);
			break;
		case SEL_PREFIX:
			if (dst_match(n->p, &x->sel, d))
				ret = dump_dst(dst, &x->sel.pfx, x);
			break;
		case SEL_INTERNET:
			for (size_t k = 0; d->exit_node && k < n->n_internet && !ret; k++)
				ret = dump_dst(dst, &n->internet[k], x);
			break;
		case SEL_SELF:
			for (size_t k = 0; d->user && k < d->n_addrs && !ret; k++)
				ret = dump_dst_text(self, &d->addrs[k], &own->text[k], x);
			break;
		default:
			for (size_t k = 0; sel_match(n->p, &x->sel, d) && k < d->n_addrs && !ret; k++)
				ret = dump_dst_text(dst, &d->addrs[k], &own->text[k], x);
			break;
		}
	}
	return ret;
}

/* The sources of r for d's self destinations: its user's devices that
 * match a source, selector by selector (as rule_srcs(self)). */
static int self_src_text(const struct policy_net *n, const struct rule *r, const struct dev *d, struct marks *m,
			 struct buf *out)
{
	const struct bucket *b = d->user ? strmap_get(n->by_user, d->user) : NULL;

	buf_reset(out);
	for (size_t i = 0; i < r->n_src; i++)
		for (size_t k = 0; b && k < b->n; k++)
			if (src_match(n->p, &r->src[i], &n->devs[b->v[k]]))
				mark(m, b->v[k]);
	return dump_marked(n, m, out);
}

/* One FilterRule, if it has sources and destinations; *first: none
 * written yet. */
static int dump_rule(struct buf *out, bool *first, const struct rule *r, const struct buf *src, const struct buf *dst)
{
	int ret;

	if (!src->len || !dst->len)
		return 0;
	ret = buf_add_str(out, *first ? "{\"srcIPs\":[" : ",{\"srcIPs\":[");
	*first = false;
	if (!ret)
		ret = buf_add(out, src->data, src->len);
	if (!ret)
		ret = buf_add_str(out, "],\"dstPorts\":[");
	if (!ret)
		ret = buf_add(out, dst->data, dst->len);
	if (!ret)
		ret = buf_add_str(out, "],\"ipProto\":[");
	for (size_t k = 0; !ret && k < r->n_protos; k++) {
		char s[8], *e = s;

		if (k)
			*e++ = ',';
		put_uint(&e, r->protos[k]);
		ret = buf_add(out, s, (size_t)(e - s));
	}
	return ret ? ret : buf_add_str(out, "]}");
}

int policy_net_filter_dump(const struct policy_net *n, const char *name, struct buf *out)
{
	struct net_cache *c = n->cache;
	struct marks m = { 0 };
	const struct dev *d;
	size_t slot, start = out->len;
	const struct rule *last_self = NULL; /* whose sources c->ssrc holds */
	struct own_addrs own;
	bool first = true;
	int ret;

	ret = slot_find(n, name, &slot);
	if (ret)
		return ret;
	c->stats.filters++;
	d = &n->devs[slot];
	for (size_t k = 0; k < POLICY_MAX_ADDRS; k++)
		buf_init(&own.text[k], 64);
	for (size_t k = 0; k < d->n_addrs && !ret; k++)
		ret = dump_prefix(&own.text[k], &d->addrs[k]);
	if (!ret)
		ret = buf_add_byte(out, '[');
	for (size_t i = 0; !ret && i < n->p->n_rules; i++) {
		const struct rule *r = &n->p->rules[i];
		const struct buf *src = NULL;

		ret = rule_dst_text(n, r, d, &own, &c->dst, &c->self);
		if (!ret && (c->dst.len || c->self.len) && !m.bits)
			ret = marks_init(&m, n->n_devs);
		if (!ret && c->dst.len)
			ret = rule_src_text(n, i, &m, &src);
		if (!ret && c->dst.len)
			ret = dump_rule(out, &first, r, src, &c->dst);
		/* Self rules mostly share their sources (autogroup:member):
		 * the previous one's text serves when they are the same. */
		if (!ret && c->self.len &&
		    !(last_self && sels_eq(n->p, last_self->src, last_self->n_src, n->p, r->src, r->n_src))) {
			ret = self_src_text(n, r, d, &m, &c->ssrc);
			last_self = r;
		}
		if (!ret && c->self.len)
			ret = dump_rule(out, &first, r, &c->ssrc, &c->self);
	}
	if (m.bits)
		marks_fini(&m);
	for (size_t k = 0; k < POLICY_MAX_ADDRS; k++)
		buf_free(&own.text[k]);
	if (!ret)
		ret = buf_add_byte(out, ']');
	if (ret && out->data) {
		out->len = start;
		out->data[start] = '\0';
	}
	return ret;
}

void policy_net_stats(const struct policy_net *n, struct policy_net_stats *out)
{
	*out = n->cache->stats;
}

/* ---- what a policy change touches ------------------------------------ */

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static bool group_eq(const struct group *a, const struct group *b)
{
	if (!str_eq(a->name, b->name) || a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (a->members[i].kind != b->members[i].kind || !str_eq(a->members[i].name, b->members[i].name))
			return false;
	return true;
}

/* Selectors of two policies: a group compares by its members, a host by
 * the prefix it resolved to. */
static bool sel_eq(const struct policy *pa, const struct sel *a, const struct policy *pb, const struct sel *b)
{
	if (a->kind != b->kind)
		return false;
	switch (a->kind) {
	case SEL_GROUP:
		return group_eq(&pa->groups[a->group], &pb->groups[b->group]);
	case SEL_PREFIX:
		return a->pfx.family == b->pfx.family && a->pfx.bits == b->pfx.bits &&
		       !memcmp(a->pfx.addr, b->pfx.addr, sizeof(a->pfx.addr));
	default:
		return str_eq(a->name, b->name);
	}
}

static bool sels_eq(const struct policy *pa, const struct sel *a, size_t na, const struct policy *pb,
		    const struct sel *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!sel_eq(pa, &a[i], pb, &b[i]))
			return false;
	return true;
}

static bool rule_eq(const struct policy *pa, const struct rule *a, const struct policy *pb, const struct rule *b)
{
	if (a->n_dst != b->n_dst || a->n_protos != b->n_protos || a->has_ports != b->has_ports ||
	    memcmp(a->protos, b->protos, a->n_protos) || !sels_eq(pa, a->src, a->n_src, pb, b->src, b->n_src))
		return false;
	for (size_t i = 0; i < a->n_dst; i++) {
		const struct dst *x = &a->dst[i], *y = &b->dst[i];

		if (!sel_eq(pa, &x->sel, pb, &y->sel) || x->n_ports != y->n_ports ||
		    memcmp(x->ports, y->ports, x->n_ports * sizeof(*x->ports)))
			return false;
	}
	return true;
}

static bool owners_eq(const struct policy *pa, const struct owners *a, size_t na, const struct policy *pb,
		      const struct owners *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!str_eq(a[i].key, b[i].key) || memcmp(&a[i].pfx, &b[i].pfx, sizeof(a[i].pfx)) ||
		    !sels_eq(pa, a[i].sels, a[i].n, pb, b[i].sels, b[i].n))
			return false;
	return true;
}

/* A hash of what rule_eq() compares, so equal rules hash alike: a rule
 * is looked up among the other policy's by hash, not compared with each
 * (1,000 rules with one inserted in front took a million compares). */
static uint64_t mix(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static uint64_t mix_str(uint64_t h, const char *s)
{
	return s ? mix(h, s, strlen(s) + 1) : mix(h, "\xff", 1);
}

static uint64_t sel_hash(const struct policy *p, const struct sel *s, uint64_t h)
{
	uint8_t kind = (uint8_t)s->kind;

	h = mix(h, &kind, 1);
	switch (s->kind) {
	case SEL_GROUP: {
		const struct group *g = &p->groups[s->group];

		h = mix_str(h, g->name);
		for (size_t i = 0; i < g->n; i++) {
			kind = (uint8_t)g->members[i].kind;
			h = mix_str(mix(h, &kind, 1), g->members[i].name);
		}
		return h;
	}
	case SEL_PREFIX:
		h = mix(h, &s->pfx.family, 1);
		h = mix(h, &s->pfx.bits, 1);
		return mix(h, s->pfx.addr, sizeof(s->pfx.addr));
	default:
		return mix_str(h, s->name);
	}
}

static uint64_t rule_hash(const struct policy *p, const struct rule *r)
{
	uint64_t h = 0xcbf29ce484222325ull;
	uint8_t has_ports = r->has_ports;

	h = mix(h, &r->n_dst, sizeof(r->n_dst));
	h = mix(h, &r->n_src, sizeof(r->n_src));
	h = mix(h, &has_ports, 1);
	h = mix(h, r->protos, r->n_protos);
	for (size_t i = 0; i < r->n_src; i++)
		h = sel_hash(p, &r->src[i], h);
	for (size_t i = 0; i < r->n_dst; i++) {
		h = sel_hash(p, &r->dst[i].sel, h);
		h = mix(h, &r->dst[i].n_ports, sizeof(r->dst[i].n_ports));
		for (size_t k = 0; k < r->dst[i].n_ports; k++) {
			h = mix(h, &r->dst[i].ports[k].first, sizeof(r->dst[i].ports[k].first));
			h = mix(h, &r->dst[i].ports[k].last, sizeof(r->dst[i].ports[k].last));
		}
	}
	return h;
}

struct rule_key {
	uint64_t hash;
	size_t i;
};

static int key_cmp(const void *a, const void *b)
{
	const struct rule_key *x = a, *y = b;

	return x->hash < y->hash ? -1 : x->hash > y->hash ? 1 : (x->i > y->i) - (x->i < y->i);
}

/* p's rules by hash, sorted. NULL on ENOMEM. */
static struct rule_key *rule_keys(const struct policy *p)
{
	struct rule_key *k = malloc((p->n_rules + 1) * sizeof(*k));

	for (size_t i = 0; k && i < p->n_rules; i++)
		k[i] = (struct rule_key){ rule_hash(p, &p->rules[i]), i };
	if (k)
		qsort(k, p->n_rules, sizeof(*k), key_cmp);
	return k;
}

/* Is rule i of pa also a rule of pb (whose keys are kb)? */
static bool rule_kept(const struct policy *pa, size_t i, const struct policy *pb, const struct rule_key *kb)
{
	const struct rule *r = &pa->rules[i];
	uint64_t h = rule_hash(pa, r);
	size_t lo = 0, hi = pb->n_rules;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (kb[mid].hash < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < pb->n_rules && kb[lo].hash == h; lo++)
		if (rule_eq(pa, r, pb, &pb->rules[kb[lo].i]))
			return true;
	return false;
}

/* Rule r, which only one policy has: in m every device it names, as a
 * source or a destination (the devices whose view it may change); in pm
 * those whose visible peers it may change, which is none when it names
 * no device on one side (e.g. a CIDR source: its destinations' filters
 * change, not who they see). ts and td are scratch, left cleared. */
static void mark_rule(const struct policy_net *n, const struct rule *r, struct marks *m, struct marks *pm,
		      struct marks *ts, struct marks *td)
{
	bool self = false;

	for (size_t i = 0; i < r->n_src; i++)
		expand(n, &r->src[i], false, NULL, ts);
	for (size_t i = 0; i < r->n_dst; i++) {
		if (r->dst[i].sel.kind == SEL_SELF) {
			mark_bucket(td, &n->member);
			self = true;
		} else {
			expand(n, &r->dst[i].sel, true, NULL, td);
		}
	}
	for (size_t i = 0; i < ts->n; i++) {
		mark(m, ts->v[i]);
		if (self || td->n)
			mark(pm, ts->v[i]);
	}
	for (size_t i = 0; i < td->n; i++) {
		mark(m, td->v[i]);
		if (self || ts->n)
			mark(pm, td->v[i]);
	}
	for (size_t i = 0; i < ts->n; i++)
		ts->bits[ts->v[i] / 8] = 0;
	for (size_t i = 0; i < td->n; i++)
		td->bits[td->v[i] / 8] = 0;
	ts->n = td->n = 0;
}

static void mark_all(const struct policy_net *n, struct marks *m)
{
	for (size_t i = 0; i < n->n_devs; i++)
		if (n->devs[i].live)
			mark(m, i);
}

/* Marks in m and pm the devices of a that b lacks, and their peers. */
static int mark_missing(const struct policy_net *a, const struct policy_net *b, struct marks *m, struct marks *pm)
{
	for (size_t i = 0; i < a->n_devs; i++) {
		struct policy_names peers;

		if (!a->devs[i].live || strmap_has(b->by_name, a->devs[i].name))
			continue;
		mark(m, i);
		mark(pm, i);
		if (policy_net_peers(a, a->devs[i].name, &peers))
			return -ENOMEM;
		for (size_t k = 0; k < peers.len; k++) {
			mark(m, SLOT(strmap_get(a->by_name, peers.v[k])));
			mark(pm, SLOT(strmap_get(a->by_name, peers.v[k])));
		}
		policy_names_free(&peers);
	}
	return 0;
}

static int names_add_marked(const struct policy_net *n, const struct marks *m, struct strmap *seen,
			    struct policy_names *out)
{
	for (size_t i = 0; i < m->n; i++) {
		const char *name = n->devs[m->v[i]].name;

		if (strmap_has(seen, name))
			continue;
		if (strmap_set(seen, name, (void *)1, NULL))
			return -ENOMEM;
		out->v[out->len++] = name;
	}
	return 0;
}

/* The names marked in mb (of to) and ma (of from), each once, as to's
 * strings where to has the device. */
static int names_of(const struct policy_net *from, const struct policy_net *to, const struct marks *ma,
		    const struct marks *mb, struct policy_names *out)
{
	struct strmap *seen = strmap_new();
	int ret = seen ? 0 : -ENOMEM;

	*out = (struct policy_names){ 0 };
	if (!ret) {
		out->v = malloc((ma->n + mb->n + 1) * sizeof(*out->v));
		ret = out->v ? 0 : -ENOMEM;
	}
	/* Names from `to` first: they outlive `from` in the usual swap. */
	if (!ret)
		ret = names_add_marked(to, mb, seen, out);
	for (size_t i = 0; !ret && i < ma->n; i++) {
		const char *name = from->devs[ma->v[i]].name;
		void *v = strmap_get(to->by_name, name);

		if (v)
			name = to->devs[SLOT(v)].name;
		if (strmap_has(seen, name))
			continue;
		ret = strmap_set(seen, name, (void *)1, NULL);
		if (!ret)
			out->v[out->len++] = name;
	}
	if (ret)
		policy_names_free(out);
	strmap_free(seen);
	return ret;
}

int policy_net_affected_views(const struct policy_net *from, const struct policy_net *to, struct policy_names *out,
			      struct policy_names *peers)
{
	const struct policy *pa = from->p, *pb = to->p;
	struct marks ma = { 0 }, mb = { 0 }, pa_m = { 0 }, pb_m = { 0 }, ts = { 0 }, td = { 0 };
	struct rule_key *ka = NULL, *kb = NULL;
	size_t most = from->n_devs > to->n_devs ? from->n_devs : to->n_devs;
	bool all = pa->has_rules != pb->has_rules ||
		   !owners_eq(pa, pa->route_approvers, pa->n_route_approvers, pb, pb->route_approvers,
			      pb->n_route_approvers) ||
		   !sels_eq(pa, pa->exit_approvers, pa->n_exit_approvers, pb, pb->exit_approvers, pb->n_exit_approvers);
	int ret;

	*out = (struct policy_names){ 0 };
	if (peers)
		*peers = (struct policy_names){ 0 };
	ret = marks_init(&ma, from->n_devs);
	if (!ret)
		ret = marks_init(&mb, to->n_devs);
	if (!ret)
		ret = marks_init(&pa_m, from->n_devs);
	if (!ret)
		ret = marks_init(&pb_m, to->n_devs);
	if (!ret)
		ret = marks_init(&ts, most);
	if (!ret)
		ret = marks_init(&td, most);
	if (ret)
		goto out;
	if (all) {
		mark_all(from, &ma);
		mark_all(to, &mb);
		mark_all(from, &pa_m);
		mark_all(to, &pb_m);
	} else {
		/* A rule only one side has reaches the devices it names: their
		 * filters (as destinations) and peers (either way). */
		ka = rule_keys(pa);
		kb = rule_keys(pb);
		if (!ka || !kb) {
			ret = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < pa->n_rules; i++)
			if (!rule_kept(pa, i, pb, kb))
				mark_rule(from, &pa->rules[i], &ma, &pa_m, &ts, &td);
		for (size_t i = 0; i < pb->n_rules; i++)
			if (!rule_kept(pb, i, pa, ka))
				mark_rule(to, &pb->rules[i], &mb, &pb_m, &ts, &td);
		ret = mark_missing(from, to, &ma, &pa_m);
		if (!ret)
			ret = mark_missing(to, from, &mb, &pb_m);
		if (ret)
			goto out;
	}
	ret = names_of(from, to, &ma, &mb, out);
	if (!ret && peers && (ret = names_of(from, to, &pa_m, &pb_m, peers)))
		policy_names_free(out);
out:
	marks_fini(&ma);
	marks_fini(&mb);
	marks_fini(&pa_m);
	marks_fini(&pb_m);
	marks_fini(&ts);
	marks_fini(&td);
	free(ka);
	free(kb);
	return ret;
}

int policy_net_affected(const struct policy_net *from, const struct policy_net *to, struct policy_names *out)
{
	return policy_net_affected_views(from, to, out, NULL);
}
