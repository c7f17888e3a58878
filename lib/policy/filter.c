#include "policy/filter.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "json.h"
#include "net/offload.h"

/* ---- compiled rules ----
 *
 * A packet of protocol p from src to dst:port is allowed when some rule
 * lists src in srcIPs, p in ipProto, and has a dstPorts entry whose ip
 * holds dst and whose ports hold port. Rules are numbered and each lookup
 * yields a bitset of rule numbers:
 *   S = rules whose srcIPs hold src             (interval map over addresses)
 *   P = rules with an entry holding dst, with p, and holding port
 *       (interval map over addresses to a node; per protocol, an interval
 *       map over ports, or one set for protocols without ports)
 * and the packet is allowed when S ∩ P is not empty. The interval maps are
 * sorted boundary arrays searched by bisection; bitsets are interned, so
 * equal sets are stored once and 0 is the empty set. */

struct key128 {
	uint64_t hi, lo;
};

/* Boundaries: keys[i] starts an interval mapped to ids[i]; keys[0] is 0. */
struct imap {
	size_t n;
	struct key128 *keys;
	uint32_t *ids;
};

/* Per protocol slot of a destination node: a port map (TCP, UDP, SCTP)
 * or one bitset id (others). */
struct pslot {
	uint32_t single;
	struct imap ports;
};

struct family_tables {
	struct imap src;    /* → bitset id */
	struct imap dst;    /* → node index; node 0 matches nothing */
	size_t nnodes;
	struct pslot *nodes; /* nnodes × nslots */
};

struct filter_rules {
	uint32_t gen; /* set by filter_swap */
	bool allow_all;
	size_t nrules;
	size_t words; /* per bitset */
	size_t nsets;
	uint64_t *sets; /* nsets × words; set 0 is empty */
	uint8_t slot_of[256]; /* protocol → slot, 0xff: no rule names it */
	size_t nslots;
	struct family_tables fam[2]; /* [0] IPv4, [1] IPv6 */
	size_t bytes;
};

#define NO_SLOT 0xff

static bool proto_has_ports(uint8_t p)
{
	return p == 6 || p == 17 || p == 132;
}

static bool proto_is_icmp(uint8_t p)
{
	return p == 1 || p == 58;
}

static int key_cmp(struct key128 a, struct key128 b)
{
	if (a.hi != b.hi)
		return a.hi < b.hi ? -1 : 1;
	if (a.lo != b.lo)
		return a.lo < b.lo ? -1 : 1;
	return 0;
}

static uint32_t imap_lookup(const struct imap *m, struct key128 k)
{
	size_t lo = 0, hi = m->n;

	if (!m->n)
		return 0;
	/* Last boundary <= k; keys[0] is 0 so there is one. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (key_cmp(m->keys[mid], k) <= 0)
			lo = mid;
		else
			hi = mid;
	}
	return m->ids[lo];
}

static bool sets_meet(const struct filter_rules *r, uint32_t a, uint32_t b)
{
	const uint64_t *x, *y;

	if (!a || !b)
		return false;
	x = r->sets + (size_t)a * r->words;
	y = r->sets + (size_t)b * r->words;
	for (size_t i = 0; i < r->words; i++)
		if (x[i] & y[i])
			return true;
	return false;
}

static struct key128 addr_key(int family, const uint8_t *a)
{
	struct key128 k = { 0, 0 };

	if (family == 4) {
		k.lo = (uint64_t)a[0] << 24 | (uint64_t)a[1] << 16 | (uint64_t)a[2] << 8 | a[3];
		return k;
	}
	for (int i = 0; i < 8; i++) {
		k.hi = k.hi << 8 | a[i];
		k.lo = k.lo << 8 | a[8 + i];
	}
	return k;
}

/* Is a packet of k->proto from k->raddr to k->laddr:k->lport allowed? */
static bool rules_allow(const struct filter_rules *r, const struct ct_key *k)
{
	const struct family_tables *ft;
	const struct pslot *ps;
	uint32_t s, node, p;
	int fam = k->family == AF_INET ? 4 : 6;
	uint8_t slot;

	if (r->allow_all)
		return true;
	slot = r->slot_of[k->proto];
	if (slot == NO_SLOT)
		return false;
	ft = &r->fam[fam == 6];
	s = imap_lookup(&ft->src, addr_key(fam, k->raddr));
	if (!s)
		return false;
	node = imap_lookup(&ft->dst, addr_key(fam, k->laddr));
	if (!node)
		return false;
	ps = &ft->nodes[(size_t)node * r->nslots + slot];
	if (proto_has_ports(k->proto))
		p = imap_lookup(&ps->ports, (struct key128){ 0, ntohs(k->lport) });
	else
		p = ps->single;
	return sets_meet(r, s, p);
}

/* The destination check: per family, boundaries mapped to 1 (local) or 0. */
struct filter_local {
	struct imap map[2];
};

static bool is_local(const struct filter_local *l, const struct ct_key *k)
{
	int fam = k->family == AF_INET ? 4 : 6;

	return imap_lookup(&l->map[fam == 6], addr_key(fam, k->laddr)) != 0;
}

/* ---- compiling ---- */

struct range {
	struct key128 lo, hi;
	uint32_t item;
};

struct entry_src {
	uint16_t first, last;
	uint32_t rule;
};

struct dentry {
	struct range r; /* item: rule */
	uint16_t first, last;
};

struct event {
	struct key128 at;
	uint32_t item;
	int32_t delta;
};

struct builder {
	struct filter_rules *r;
	uint8_t (*protos)[32]; /* per rule: bitmap of protocols */
	struct range *src[2];
	size_t nsrc[2], capsrc[2];
	struct dentry *dst[2];
	size_t ndst[2], capdst[2];
	/* interning */
	size_t setcap;
	uint32_t *hash; /* open addressing over set ids, 0 = free */
	size_t hashcap;
	char *err;
	size_t errlen;
	int error; /* -EINVAL, or -ENOMEM once an allocation failed */
};

static void fail(struct builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct builder *b, const char *fmt, ...)
{
	va_list ap;

	if (!b->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(b->err, b->errlen, fmt, ap);
	va_end(ap);
}

static void oom(struct builder *b)
{
	b->error = -ENOMEM;
	fail(b, "out of memory");
}

static bool account(struct builder *b, size_t more)
{
	if (more > FILTER_MAX_TABLE_BYTES || b->r->bytes > FILTER_MAX_TABLE_BYTES - more) {
		fail(b, "packetFilter: compiled tables would exceed %zu MiB", FILTER_MAX_TABLE_BYTES >> 20);
		return false;
	}
	b->r->bytes += more;
	return true;
}

static bool grow(struct builder *b, void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap;
	void *p;

	if (need <= *cap)
		return true;
	ncap = *cap ? *cap * 2 : 16;
	while (ncap < need)
		ncap *= 2;
	p = reallocarray(*arr, ncap, elem);
	if (!p) {
		oom(b);
		return false;
	}
	*arr = p;
	*cap = ncap;
	return true;
}

static uint64_t set_hash(const uint64_t *s, size_t words)
{
	uint64_t h = 0x243f6a8885a308d3ULL;

	for (size_t i = 0; i < words; i++) {
		h = (h ^ s[i]) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 31;
	}
	return h;
}

static bool rehash(struct builder *b, size_t cap)
{
	struct filter_rules *r = b->r;
	uint32_t *h = calloc(cap, sizeof(*h));

	if (!h) {
		oom(b);
		return false;
	}
	for (uint32_t id = 1; id < r->nsets; id++) {
		size_t i = set_hash(r->sets + (size_t)id * r->words, r->words) & (cap - 1);

		while (h[i])
			i = (i + 1) & (cap - 1);
		h[i] = id;
	}
	free(b->hash);
	b->hash = h;
	b->hashcap = cap;
	return true;
}

/* Returns the id of the set s (words long), adding it if new; 0 for the
 * empty set; UINT32_MAX on error. */
static uint32_t intern(struct builder *b, const uint64_t *s)
{
	struct filter_rules *r = b->r;
	size_t i, w = r->words;
	bool empty = true;

	for (i = 0; i < w && empty; i++)
		empty = !s[i];
	if (empty)
		return 0;
	if ((r->nsets + 1) * 2 > b->hashcap && !rehash(b, b->hashcap ? b->hashcap * 2 : 64))
		return UINT32_MAX;
	i = set_hash(s, w) & (b->hashcap - 1);
	for (; b->hash[i]; i = (i + 1) & (b->hashcap - 1))
		if (!memcmp(r->sets + (size_t)b->hash[i] * w, s, w * 8))
			return b->hash[i];
	if (!account(b, w * 8) || !grow(b, (void **)&r->sets, &b->setcap, (r->nsets + 1) * w, 8))
		return UINT32_MAX;
	memcpy(r->sets + r->nsets * w, s, w * 8);
	b->hash[i] = (uint32_t)r->nsets;
	return (uint32_t)r->nsets++;
}

static int event_cmp(const void *a, const void *b)
{
	return key_cmp(((const struct event *)a)->at, ((const struct event *)b)->at);
}

static bool key_is_max(struct key128 k, struct key128 max)
{
	return !key_cmp(k, max);
}

static struct key128 key_next(struct key128 k)
{
	if (++k.lo == 0)
		k.hi++;
	return k;
}

static bool imap_push(struct builder *b, struct imap *m, size_t *cap, struct key128 at, uint32_t id)
{
	if (m->n && m->ids[m->n - 1] == id)
		return true;
	if (m->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 8;
		struct key128 *k;
		uint32_t *ids;

		if (!account(b, (ncap - *cap) * (sizeof(*k) + sizeof(*ids))))
			return false;
		k = reallocarray(m->keys, ncap, sizeof(*k));
		if (k)
			m->keys = k;
		ids = k ? reallocarray(m->ids, ncap, sizeof(*ids)) : NULL;
		if (ids)
			m->ids = ids;
		if (!k || !ids) {
			oom(b);
			return false;
		}
		*cap = ncap;
	}
	m->keys[m->n] = at;
	m->ids[m->n++] = id;
	return true;
}

/* Sweeps ranges (items < nitems) over the key space up to max: calls at()
 * with the set of items covering each interval, from key 0 on. */
typedef bool (*sweep_cb)(struct builder *b, void *arg, struct key128 at, const uint64_t *active);

static bool sweep(struct builder *b, const struct range *rs, size_t n, size_t nitems, struct key128 max, sweep_cb at,
		  void *arg)
{
	size_t words = (nitems + 63) / 64, nev = 0;
	struct event *ev = calloc(n * 2 + 1, sizeof(*ev));
	uint32_t *count = calloc(nitems ? nitems : 1, sizeof(*count));
	uint64_t *active = calloc(words ? words : 1, 8);
	bool ok = false;

	if (!ev || !count || !active) {
		oom(b);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		ev[nev++] = (struct event){ rs[i].lo, rs[i].item, 1 };
		if (!key_is_max(rs[i].hi, max))
			ev[nev++] = (struct event){ key_next(rs[i].hi), rs[i].item, -1 };
	}
	qsort(ev, nev, sizeof(*ev), event_cmp);
	if (!nev || key_cmp(ev[0].at, (struct key128){ 0, 0 }))
		if (!at(b, arg, (struct key128){ 0, 0 }, active))
			goto out;
	for (size_t i = 0; i < nev;) {
		struct key128 k = ev[i].at;

		for (; i < nev && !key_cmp(ev[i].at, k); i++) {
			uint32_t it = ev[i].item;

			count[it] = (uint32_t)((int32_t)count[it] + ev[i].delta);
			if (count[it])
				active[it / 64] |= 1ULL << (it % 64);
			else
				active[it / 64] &= ~(1ULL << (it % 64));
		}
		if (!at(b, arg, k, active))
			goto out;
	}
	ok = true;
out:
	free(ev);
	free(count);
	free(active);
	return ok;
}

struct imap_build {
	struct imap *m;
	size_t cap;
};

/* Items are rule numbers: intern the set and record the boundary. */
static bool at_rules(struct builder *b, void *arg, struct key128 at, const uint64_t *active)
{
	struct imap_build *ib = arg;
	uint32_t id = intern(b, active);

	return id != UINT32_MAX && imap_push(b, ib->m, &ib->cap, at, id);
}

struct dst_build {
	int fam;
	struct imap_build ib;
	size_t nodecap;
	struct range *ports; /* scratch */
	size_t nports, portcap;
	uint64_t *set;       /* scratch bitset over rules */
};

static bool entry_full_ports(const struct dentry *d)
{
	return d->first == 0 && d->last == 65535;
}

/* Items are destination entries: build the node for this interval. */
static bool at_dst(struct builder *b, void *arg, struct key128 at, const uint64_t *active)
{
	struct dst_build *db = arg;
	struct filter_rules *r = b->r;
	struct family_tables *ft = &r->fam[db->fam];
	const struct dentry *ds = b->dst[db->fam];
	size_t ewords = (b->ndst[db->fam] + 63) / 64, node;
	struct pslot *slots;
	bool any = false;

	for (size_t w = 0; w < ewords && !any; w++)
		any = active[w] != 0;
	if (!any)
		return imap_push(b, &ft->dst, &db->ib.cap, at, 0);
	if (!grow(b, (void **)&ft->nodes, &db->nodecap, (ft->nnodes + 1) * r->nslots, sizeof(*ft->nodes)) ||
	    !account(b, r->nslots * sizeof(*ft->nodes)))
		return false;
	node = ft->nnodes++;
	slots = ft->nodes + node * r->nslots;
	memset(slots, 0, r->nslots * sizeof(*slots));
	for (int p = 0; p < 256; p++) {
		uint8_t s = r->slot_of[p];

		if (s == NO_SLOT)
			continue;
		db->nports = 0;
		memset(db->set, 0, r->words * 8);
		for (size_t w = 0; w < ewords; w++) {
			for (uint64_t bits = active[w]; bits; bits &= bits - 1) {
				const struct dentry *d = &ds[w * 64 + (size_t)__builtin_ctzll(bits)];
				uint32_t rule = d->r.item;

				if (!(b->protos[rule][p / 8] & (1u << (p % 8))))
					continue;
				if (proto_has_ports((uint8_t)p)) {
					if (!grow(b, (void **)&db->ports, &db->portcap, db->nports + 1, sizeof(*db->ports)))
						return false;
					db->ports[db->nports++] = (struct range){
						{ 0, d->first }, { 0, d->last }, rule
					};
				} else if (proto_is_icmp((uint8_t)p) || entry_full_ports(d)) {
					db->set[rule / 64] |= 1ULL << (rule % 64);
				}
			}
		}
		if (proto_has_ports((uint8_t)p)) {
			struct imap_build pb = { &slots[s].ports, 0 };

			if (db->nports && !sweep(b, db->ports, db->nports, r->nrules, (struct key128){ 0, 65535 },
						 at_rules, &pb))
				return false;
		} else {
			uint32_t id = intern(b, db->set);

			if (id == UINT32_MAX)
				return false;
			slots[s].single = id;
		}
	}
	return imap_push(b, &ft->dst, &db->ib.cap, at, (uint32_t)node);
}

/* Parses "*", an address, a prefix "a/n" or a range "a-b" into ranges of
 * each family it covers; returns how many (0 on error). */
static int parse_ipset(const char *s, struct range out[2], int fam[2])
{
	char buf[100], *dash, *slash;
	uint8_t a[16], z[16];
	int f, bits = -1;

	if (!strcmp(s, "*")) {
		out[0] = (struct range){ { 0, 0 }, { 0, 0xffffffffULL }, 0 };
		fam[0] = 0;
		out[1] = (struct range){ { 0, 0 }, { UINT64_MAX, UINT64_MAX }, 0 };
		fam[1] = 1;
		return 2;
	}
	if (strlen(s) >= sizeof(buf))
		return 0;
	strcpy(buf, s);
	if ((dash = strchr(buf, '-'))) {
		*dash = 0;
		f = strchr(buf, ':') ? 6 : 4;
		if (inet_pton(f == 4 ? AF_INET : AF_INET6, buf, a) != 1 ||
		    inet_pton(f == 4 ? AF_INET : AF_INET6, dash + 1, z) != 1)
			return 0;
		out[0].lo = addr_key(f, a);
		out[0].hi = addr_key(f, z);
		if (key_cmp(out[0].lo, out[0].hi) > 0)
			return 0;
		fam[0] = f == 6;
		return 1;
	}
	if ((slash = strchr(buf, '/'))) {
		char *end;
		long n;

		*slash = 0;
		if (!slash[1] || strspn(slash + 1, "0123456789") != strlen(slash + 1) || strlen(slash + 1) > 3)
			return 0;
		n = strtol(slash + 1, &end, 10);
		if (*end || n > 128)
			return 0;
		bits = (int)n;
	}
	f = strchr(buf, ':') ? 6 : 4;
	if (inet_pton(f == 4 ? AF_INET : AF_INET6, buf, a) != 1)
		return 0;
	if (bits < 0)
		bits = f == 4 ? 32 : 128;
	if ((f == 4 && bits > 32))
		return 0;
	out[0].lo = out[0].hi = addr_key(f, a);
	{
		unsigned host = (unsigned)((f == 4 ? 32 : 128) - bits);
		uint64_t mlo = host >= 64 ? UINT64_MAX : (host ? (1ULL << host) - 1 : 0);
		uint64_t mhi = host > 64 ? (host >= 128 ? UINT64_MAX : (1ULL << (host - 64)) - 1) : 0;

		out[0].lo.lo &= ~mlo;
		out[0].lo.hi &= ~mhi;
		out[0].hi.lo = out[0].lo.lo | mlo;
		out[0].hi.hi = out[0].lo.hi | mhi;
	}
	fam[0] = f == 6;
	return 1;
}

static bool add_src(struct builder *b, int fam, struct range rg)
{
	if (b->nsrc[0] + b->nsrc[1] + b->ndst[0] + b->ndst[1] >= FILTER_MAX_RANGES) {
		fail(b, "packetFilter: more than %u address ranges", FILTER_MAX_RANGES);
		return false;
	}
	if (!grow(b, (void **)&b->src[fam], &b->capsrc[fam], b->nsrc[fam] + 1, sizeof(rg)))
		return false;
	b->src[fam][b->nsrc[fam]++] = rg;
	return true;
}

static bool add_dst(struct builder *b, int fam, struct dentry d)
{
	if (b->nsrc[0] + b->nsrc[1] + b->ndst[0] + b->ndst[1] >= FILTER_MAX_RANGES) {
		fail(b, "packetFilter: more than %u address ranges", FILTER_MAX_RANGES);
		return false;
	}
	if (!grow(b, (void **)&b->dst[fam], &b->capdst[fam], b->ndst[fam] + 1, sizeof(d)))
		return false;
	b->dst[fam][b->ndst[fam]++] = d;
	return true;
}

static bool get_port(struct builder *b, const struct json *ports, const char *name, size_t i, size_t k,
		     uint16_t *out)
{
	const struct json *v = json_get(ports, name);
	int64_t n = json_int(v, -1);

	if (!json_is_int(v) || n < 0 || n > 65535) {
		fail(b, "packetFilter[%zu].dstPorts[%zu].ports.%s: want an integer 0-65535", i, k, name);
		return false;
	}
	*out = (uint16_t)n;
	return true;
}

static bool parse_rule(struct builder *b, const struct json *rule, size_t i)
{
	const struct json *srcs = json_get(rule, "srcIPs"), *dsts = json_get(rule, "dstPorts");
	const struct json *protos = json_get(rule, "ipProto");
	uint8_t *pm = b->protos[i];

	if (!json_is_object(rule)) {
		fail(b, "packetFilter[%zu]: want an object", i);
		return false;
	}
	if (srcs && !json_is_null(srcs) && !json_is_array(srcs)) {
		fail(b, "packetFilter[%zu].srcIPs: want an array", i);
		return false;
	}
	if (dsts && !json_is_null(dsts) && !json_is_array(dsts)) {
		fail(b, "packetFilter[%zu].dstPorts: want an array", i);
		return false;
	}
	if (protos && !json_is_null(protos) && !json_is_array(protos)) {
		fail(b, "packetFilter[%zu].ipProto: want an array", i);
		return false;
	}
	memset(pm, 0, 32);
	for (size_t k = 0; k < json_array_len(protos); k++) {
		const struct json *p = json_array_at(protos, k);
		int64_t n = json_int(p, -1);

		if (!json_is_int(p) || n < 0 || n > 255) {
			fail(b, "packetFilter[%zu].ipProto[%zu]: want an integer 0-255", i, k);
			return false;
		}
		pm[n / 8] |= (uint8_t)(1u << (n % 8));
	}
	if (!json_array_len(protos)) {
		/* Tailscale's default: TCP, UDP, ICMPv4, ICMPv6. */
		static const uint8_t def[] = { 6, 17, 1, 58 };

		for (size_t k = 0; k < sizeof(def); k++)
			pm[def[k] / 8] |= (uint8_t)(1u << (def[k] % 8));
	}
	for (size_t k = 0; k < json_array_len(srcs); k++) {
		const char *s = json_str(json_array_at(srcs, k));
		struct range rg[2];
		int fam[2], n;

		if (!s || !(n = parse_ipset(s, rg, fam))) {
			fail(b, "packetFilter[%zu].srcIPs[%zu]: want \"*\", an address, a prefix or a range", i, k);
			return false;
		}
		for (int j = 0; j < n; j++) {
			rg[j].item = (uint32_t)i;
			if (!add_src(b, fam[j], rg[j]))
				return false;
		}
	}
	for (size_t k = 0; k < json_array_len(dsts); k++) {
		const struct json *d = json_array_at(dsts, k), *ports = json_get(d, "ports");
		const char *ip = json_str(json_get(d, "ip"));
		struct dentry de = { .r.item = (uint32_t)i };
		struct range rg[2];
		int fam[2], n;

		if (!json_is_object(d)) {
			fail(b, "packetFilter[%zu].dstPorts[%zu]: want an object", i, k);
			return false;
		}
		if (!ip || !(n = parse_ipset(ip, rg, fam))) {
			fail(b, "packetFilter[%zu].dstPorts[%zu].ip: want \"*\", an address, a prefix or a range", i, k);
			return false;
		}
		if (!json_is_object(ports)) {
			fail(b, "packetFilter[%zu].dstPorts[%zu].ports: want {\"first\":N,\"last\":M}", i, k);
			return false;
		}
		if (!get_port(b, ports, "first", i, k, &de.first) || !get_port(b, ports, "last", i, k, &de.last))
			return false;
		if (de.first > de.last) {
			fail(b, "packetFilter[%zu].dstPorts[%zu].ports: first %u > last %u", i, k, de.first, de.last);
			return false;
		}
		for (int j = 0; j < n; j++) {
			de.r.lo = rg[j].lo;
			de.r.hi = rg[j].hi;
			if (!add_dst(b, fam[j], de))
				return false;
		}
	}
	return true;
}

static void imap_free(struct imap *m)
{
	free(m->keys);
	free(m->ids);
}

static void local_free(struct filter_local *l)
{
	if (!l)
		return;
	for (int i = 0; i < 2; i++)
		imap_free(&l->map[i]);
	free(l);
}

void filter_rules_free(struct filter_rules *r)
{
	if (!r)
		return;
	for (int f = 0; f < 2; f++) {
		struct family_tables *ft = &r->fam[f];

		imap_free(&ft->src);
		imap_free(&ft->dst);
		for (size_t i = 0; i < ft->nnodes * r->nslots; i++)
			imap_free(&ft->nodes[i].ports);
		free(ft->nodes);
	}
	free(r->sets);
	free(r);
}

static bool build_family(struct builder *b, int f)
{
	struct filter_rules *r = b->r;
	struct family_tables *ft = &r->fam[f];
	struct key128 max = f ? (struct key128){ UINT64_MAX, UINT64_MAX } : (struct key128){ 0, 0xffffffffULL };
	struct imap_build sb = { &ft->src, 0 };
	struct dst_build db = { .fam = f, .ib = { &ft->dst, 0 } };
	struct range *dr = NULL;
	bool ok = false;

	if (!sweep(b, b->src[f], b->nsrc[f], r->nrules, max, at_rules, &sb))
		return false;
	/* Node 0 is the empty node. */
	if (!grow(b, (void **)&ft->nodes, &db.nodecap, r->nslots ? r->nslots : 1, sizeof(*ft->nodes)))
		return false;
	memset(ft->nodes, 0, (r->nslots ? r->nslots : 1) * sizeof(*ft->nodes));
	ft->nnodes = 1;
	db.set = calloc(r->words, 8);
	dr = calloc(b->ndst[f] + 1, sizeof(*dr));
	if (!db.set || !dr) {
		oom(b);
		goto out;
	}
	for (size_t i = 0; i < b->ndst[f]; i++) {
		dr[i] = b->dst[f][i].r;
		dr[i].item = (uint32_t)i;
	}
	ok = sweep(b, dr, b->ndst[f], b->ndst[f], max, at_dst, &db);
out:
	free(db.set);
	free(db.ports);
	free(dr);
	return ok;
}

static struct filter_rules *compile(const struct json *pf, char *err, size_t errlen, int *error)
{
	struct filter_rules *r = calloc(1, sizeof(*r));
	struct builder b = { .r = r, .err = err, .errlen = errlen, .error = -EINVAL };
	uint8_t used[32] = { 0 };
	bool ok = false;

	if (errlen)
		err[0] = 0;
	if (!r) {
		oom(&b);
		*error = b.error;
		return NULL;
	}
	memset(r->slot_of, NO_SLOT, sizeof(r->slot_of));
	if (!pf || json_is_null(pf)) {
		r->allow_all = true;
		return r;
	}
	if (!json_is_array(pf)) {
		fail(&b, "packetFilter: want an array or null");
		goto out;
	}
	r->nrules = json_array_len(pf);
	if (r->nrules > FILTER_MAX_RULES) {
		fail(&b, "packetFilter: %zu rules, at most %u", r->nrules, FILTER_MAX_RULES);
		goto out;
	}
	r->words = (r->nrules + 63) / 64;
	if (!r->words)
		r->words = 1;
	b.protos = calloc(r->nrules ? r->nrules : 1, sizeof(*b.protos));
	r->sets = calloc(r->words, 8); /* set 0: empty */
	if (!b.protos || !r->sets) {
		oom(&b);
		goto out;
	}
	b.setcap = r->words;
	r->nsets = 1;
	for (size_t i = 0; i < r->nrules; i++) {
		if (!parse_rule(&b, json_array_at(pf, i), i))
			goto out;
		for (int k = 0; k < 32; k++)
			used[k] |= b.protos[i][k];
	}
	for (int p = 0; p < 256; p++)
		if (used[p / 8] & (1u << (p % 8)))
			r->slot_of[p] = (uint8_t)r->nslots++;
	ok = build_family(&b, 0) && build_family(&b, 1);
out:
	free(b.protos);
	for (int f = 0; f < 2; f++) {
		free(b.src[f]);
		free(b.dst[f]);
	}
	free(b.hash);
	if (!ok) {
		*error = b.error;
		filter_rules_free(r);
		return NULL;
	}
	return r;
}

struct filter_rules *filter_rules_compile(const struct json *pf, char *err, size_t errlen)
{
	int error;

	return compile(pf, err, errlen, &error);
}

bool filter_rules_allow_all(const struct filter_rules *r)
{
	return r->allow_all;
}

size_t filter_rules_count(const struct filter_rules *r)
{
	return r->nrules;
}

size_t filter_rules_bytes(const struct filter_rules *r)
{
	return r->bytes;
}

bool filter_rules_allow(const struct filter_rules *r, int family, uint8_t proto, const uint8_t *src,
			const uint8_t *dst, uint16_t dport)
{
	struct ct_key k = { .family = (uint8_t)family, .proto = proto, .lport = htons(dport) };
	size_t alen = family == AF_INET ? 4 : 16;

	if (family != AF_INET && family != AF_INET6)
		return false;
	memcpy(k.raddr, src, alen);
	memcpy(k.laddr, dst, alen);
	return rules_allow(r, &k);
}

/* ---- packets ---- */

enum pkind {
	PK_L4,         /* TCP, UDP, SCTP or another protocol */
	PK_FRAG,       /* a fragment after the first */
	PK_ECHO_REQ,
	PK_ECHO_REPLY,
	PK_ICMP_ERR,   /* destination unreachable, too big, time exceeded, parameter problem */
	PK_ICMP_OTHER,
};

struct pkt {
	uint8_t kind, tcp_flags;
	struct ct_key key; /* as seen going in (raddr = source) */
	struct ct_key inner; /* PK_ICMP_ERR: the quoted packet's flow, as it went out */
};

struct l3 {
	int family;
	uint8_t proto;
	bool nonfirst;
	const uint8_t *src, *dst, *l4;
	size_t l4len;
};

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* An IPv4/IPv6 header chain. A quoted packet (inside an ICMP error) may be
 * cut short: its length field is not held against the bytes at hand. */
static bool parse_l3(const uint8_t *d, size_t len, bool quoted, struct l3 *o)
{
	if (len >= 20 && d[0] >> 4 == 4) {
		size_t hl = (size_t)(d[0] & 0x0f) * 4, total = be16(d + 2);
		uint16_t frag = be16(d + 6) & 0x1fff;

		if (hl < 20 || total < hl || hl > len)
			return false;
		if (!quoted && total > len)
			return false;
		if (total < len)
			len = total;
		o->family = AF_INET;
		o->proto = d[9];
		o->src = d + 12;
		o->dst = d + 16;
		o->nonfirst = frag != 0;
		/* RFC 1858: an offset of 8 bytes can only rewrite the TCP flags. */
		if (frag == 1 && o->proto == 6)
			return false;
		o->l4 = d + hl;
		o->l4len = len - hl;
		return true;
	}
	if (len >= 40 && d[0] >> 4 == 6) {
		size_t total = 40 + (size_t)be16(d + 4), off = 40;
		uint8_t nh = d[6];

		if (!quoted && total > len)
			return false;
		if (total < len)
			len = total;
		o->family = AF_INET6;
		o->src = d + 8;
		o->dst = d + 24;
		o->nonfirst = false;
		for (int n = 0;; n++) {
			size_t hl;

			if (nh != 0 && nh != 43 && nh != 44 && nh != 60 && nh != 51)
				break;
			if (n == 8 || off + 8 > len)
				return false;
			if (nh == 44) {
				o->nonfirst = (be16(d + off + 2) & 0xfff8) != 0;
				hl = 8;
			} else if (nh == 51) {
				hl = ((size_t)d[off + 1] + 2) * 4;
			} else {
				hl = ((size_t)d[off + 1] + 1) * 8;
			}
			nh = d[off];
			off += hl;
			if (off > len)
				return false;
			if (o->nonfirst)
				break;
		}
		o->proto = nh;
		o->l4 = d + off;
		o->l4len = len - off;
		return true;
	}
	return false;
}

static void key_addrs(struct ct_key *k, const struct l3 *l, bool in)
{
	size_t alen = l->family == AF_INET ? 4 : 16;

	memset(k, 0, sizeof(*k));
	k->family = (uint8_t)l->family;
	k->proto = l->proto;
	memcpy(k->raddr, in ? l->src : l->dst, alen);
	memcpy(k->laddr, in ? l->dst : l->src, alen);
}

static bool is_icmp(const struct l3 *l)
{
	return (l->family == AF_INET && l->proto == 1) || (l->family == AF_INET6 && l->proto == 58);
}

/* The transport part of a flow key; for quoted packets only the first 8
 * bytes are needed (RFC 792). Returns false when they are missing. */
static bool key_ports(struct ct_key *k, const struct l3 *l, bool in, bool quoted, uint8_t *kind)
{
	const uint8_t *t = l->l4;
	uint16_t s, d;

	if (is_icmp(l)) {
		bool v4 = l->family == AF_INET;

		if (l->l4len < 8)
			return false;
		if (t[0] == (v4 ? 8 : 128))
			*kind = PK_ECHO_REQ;
		else if (t[0] == (v4 ? 0 : 129))
			*kind = PK_ECHO_REPLY;
		else if (v4 ? t[0] == 3 || t[0] == 11 || t[0] == 12 : t[0] >= 1 && t[0] <= 4)
			*kind = PK_ICMP_ERR;
		else
			*kind = PK_ICMP_OTHER;
		if (*kind == PK_ECHO_REQ || *kind == PK_ECHO_REPLY) {
			/* A peer's request that happens to use our ping's
			 * identifier is another flow. */
			memcpy(&k->rport, t + 4, 2);
			k->lport = k->rport;
			k->echo = (*kind == PK_ECHO_REQ) != in ? 1 : 2;
		}
		return true;
	}
	*kind = PK_L4;
	if (!proto_has_ports(l->proto))
		return true;
	if (l->l4len < (quoted ? 8 : l->proto == 6 ? 20 : l->proto == 17 ? 8 : 12))
		return false;
	if (!quoted && l->proto == 6 && ((t[12] >> 4) < 5 || (size_t)(t[12] >> 4) * 4 > l->l4len))
		return false;
	memcpy(&s, t, 2);
	memcpy(&d, t + 2, 2);
	k->rport = in ? s : d;
	k->lport = in ? d : s;
	return true;
}

/* Parses a packet as seen going in (in) or out. False: malformed. */
static bool parse_pkt(const uint8_t *data, size_t len, bool in, struct pkt *p)
{
	struct l3 l, q;
	uint8_t qkind;

	p->tcp_flags = 0;
	if (!parse_l3(data, len, false, &l))
		return false;
	key_addrs(&p->key, &l, in);
	if (l.nonfirst) {
		p->kind = PK_FRAG;
		return true;
	}
	if (!key_ports(&p->key, &l, in, false, &p->kind))
		return false;
	if (l.proto == 6)
		p->tcp_flags = l.l4[13];
	if (p->kind != PK_ICMP_ERR)
		return true;
	/* The quoted packet went the other way: out if this error comes in. */
	if (!parse_l3(l.l4 + 8, l.l4len - 8, true, &q) || q.family != l.family || q.nonfirst)
		return false;
	key_addrs(&p->inner, &q, !in);
	if (!key_ports(&p->inner, &q, !in, true, &qkind))
		return false;
	if (is_icmp(&q) && qkind != PK_ECHO_REQ && qkind != PK_ECHO_REPLY)
		return false; /* errors about errors are not sent (RFC 1122 3.2.2) */
	return true;
}

/* ---- checking ---- */

static struct filter_rules *read_lock(struct filter *f, unsigned *slot)
{
	for (;;) {
		unsigned e = atomic_load(&f->epoch);

		atomic_fetch_add(&f->readers[e & 1].n, 1);
		if (atomic_load(&f->epoch) == e) {
			*slot = e & 1;
			return atomic_load(&f->rules);
		}
		atomic_fetch_sub(&f->readers[e & 1].n, 1);
	}
}

static void read_unlock(struct filter *f, unsigned slot)
{
	atomic_fetch_sub(&f->readers[slot].n, 1);
}

/* The verdict on a packet of a known flow. A flow the peer opened was
 * judged by some generation of rules; if that is not r, judge it again. */
static uint8_t flow_verdict(struct filter *f, const struct filter_rules *r, const struct ct_flow *fl,
			    const struct ct_key *remote_view)
{
	bool ok;

	if (fl->origin == CT_ORIGIN_LOCAL)
		return FILTER_ACCEPT;
	if (fl->gen == r->gen)
		return fl->denied ? FILTER_DROP_NO_RULE : FILTER_ACCEPT;
	ok = rules_allow(r, remote_view);
	conntrack_judge(f->ct, remote_view, r->gen, !ok);
	return ok ? FILTER_ACCEPT : FILTER_DROP_NO_RULE;
}

static uint8_t check_in(struct filter *f, const struct filter_rules *r, const struct filter_local *l, struct pkt *p,
		       uint64_t now)
{
	struct ct_flow fl;
	bool reply_type, ok;

	if (l && !is_local(l, &p->key))
		return FILTER_DROP_NOT_LOCAL;
	switch (p->kind) {
	case PK_FRAG:
		/* The first fragment carried the verdict: without it nothing
		 * reassembles (docs/filter.md). */
		return FILTER_ACCEPT;
	case PK_ICMP_ERR:
		/* About a packet the local device sent: its source is us. */
		if (memcmp(p->inner.laddr, p->key.laddr, 16))
			return FILTER_DROP_NOT_TRACKED;
		if (!conntrack_peek(f->ct, &p->inner, now, &fl))
			return FILTER_DROP_NOT_TRACKED;
		return flow_verdict(f, r, &fl, &p->inner);
	case PK_ICMP_OTHER:
		return rules_allow(r, &p->key) ? FILTER_ACCEPT : FILTER_DROP_NO_RULE;
	default:
		break;
	}
	if (conntrack_find(f->ct, &p->key, CT_DIR_IN, p->tcp_flags, now, &fl))
		return flow_verdict(f, r, &fl, &p->key);
	reply_type = p->kind == PK_ECHO_REPLY ||
		     (p->key.proto == 6 && (p->tcp_flags & (CT_TCP_SYN | CT_TCP_ACK)) != CT_TCP_SYN);
	ok = rules_allow(r, &p->key);
	if (!ok)
		return reply_type ? FILTER_DROP_NOT_TRACKED : FILTER_DROP_NO_RULE;
	if (p->kind != PK_ECHO_REPLY) {
		struct ct_flow nf = { .origin = CT_ORIGIN_REMOTE, .gen = r->gen };

		/* A full table costs this flow its fast path, not the packet. */
		conntrack_add(f->ct, &p->key, CT_DIR_IN, p->tcp_flags, now, &nf);
	}
	return FILTER_ACCEPT;
}

static uint8_t check_out(struct filter *f, struct pkt *p, uint64_t now)
{
	struct ct_flow nf = { .origin = CT_ORIGIN_LOCAL };

	if (p->kind == PK_FRAG || p->kind == PK_ICMP_ERR || p->kind == PK_ICMP_OTHER)
		return FILTER_ACCEPT;
	if (conntrack_find(f->ct, &p->key, CT_DIR_OUT, p->tcp_flags, now, NULL))
		return FILTER_ACCEPT;
	if (p->kind == PK_ECHO_REPLY)
		return FILTER_ACCEPT; /* answers a peer's ping: nothing to track */
	if (p->key.proto == 6 && (p->tcp_flags & (CT_TCP_SYN | CT_TCP_ACK)) == (CT_TCP_SYN | CT_TCP_ACK))
		nf.origin = CT_ORIGIN_REMOTE; /* answers a peer's SYN: judged at its next packet */
	return conntrack_add(f->ct, &p->key, CT_DIR_OUT, p->tcp_flags, now, &nf) ? FILTER_DROP_TABLE_FULL
										 : FILTER_ACCEPT;
}

/* Consecutive packets of one flow (a batch mostly is one) share a verdict,
 * unless a TCP packet carries SYN, FIN or RST, which move the flow's state. */
static bool same_run(const struct pkt *a, const struct pkt *b)
{
	return a->kind == b->kind && a->kind != PK_ICMP_ERR && !(b->tcp_flags & (CT_TCP_SYN | CT_TCP_FIN | CT_TCP_RST)) &&
	       !memcmp(&a->key, &b->key, sizeof(a->key));
}

static void check_batch(struct filter *f, const struct pktbuf *pkts, size_t n, uint64_t now, uint8_t *verdicts,
			bool in)
{
	uint64_t counts[FILTER_VERDICTS] = { 0 };
	struct pkt p[2];
	bool have_prev = false;
	unsigned slot, cur = 0;
	struct filter_rules *r = read_lock(f, &slot);
	struct filter_local *l = atomic_load(&f->local);

	for (size_t i = 0; i < n; i++) {
		struct pkt *pk = &p[cur];
		uint8_t v;

		if (!parse_pkt(pkts[i].data, pkts[i].len, in, pk)) {
			v = in ? FILTER_DROP_MALFORMED : FILTER_ACCEPT;
			have_prev = false;
		} else if (have_prev && same_run(&p[cur ^ 1], pk)) {
			v = verdicts[i - 1];
		} else {
			v = in ? check_in(f, r, l, pk, now) : check_out(f, pk, now);
			have_prev = true;
			cur ^= 1;
		}
		verdicts[i] = v;
		counts[v]++;
	}
	read_unlock(f, slot);
	if (counts[FILTER_ACCEPT])
		atomic_fetch_add(in ? &f->counters.accepted_in : &f->counters.accepted_out, counts[FILTER_ACCEPT]);
	for (int v = 1; v < FILTER_VERDICTS; v++)
		if (counts[v])
			atomic_fetch_add(&f->counters.dropped[v], counts[v]);
}

void filter_check_in(struct filter *f, const struct pktbuf *pkts, size_t n, uint64_t now, uint8_t *verdicts)
{
	check_batch(f, pkts, n, now, verdicts, true);
}

void filter_check_out(struct filter *f, const struct pktbuf *pkts, size_t n, uint64_t now, uint8_t *verdicts)
{
	check_batch(f, pkts, n, now, verdicts, false);
}

/* ---- lifecycle ---- */

int filter_new(struct filter **out, size_t ct_max)
{
	/* The reader counters sit on their own cache lines. */
	struct filter *f = aligned_alloc(_Alignof(struct filter), sizeof(*f));
	struct filter_rules *r = NULL;

	*out = NULL;
	if (!f)
		return -ENOMEM;
	memset(f, 0, sizeof(*f));
	f->ct = conntrack_new(ct_max);
	r = filter_rules_compile(NULL, NULL, 0);
	if (!f->ct || !r) {
		conntrack_free(f->ct);
		filter_rules_free(r);
		free(f);
		return -ENOMEM;
	}
	pthread_mutex_init(&f->swap_lock, NULL);
	f->gen = 1;
	r->gen = 1;
	atomic_store(&f->rules, r);
	*out = f;
	return 0;
}

void filter_free(struct filter *f)
{
	if (!f)
		return;
	filter_rules_free(atomic_load(&f->rules));
	local_free(atomic_load(&f->local));
	conntrack_free(f->ct);
	pthread_mutex_destroy(&f->swap_lock);
	free(f);
}

/* Caller holds f->swap_lock and has just published new pointers. Checks
 * that loaded old ones announced themselves under the old epoch before
 * loading; new ones see the new epoch and the new pointers. Returns once
 * the old epoch's checks are done. */
static void synchronize(struct filter *f)
{
	unsigned e = atomic_fetch_add(&f->epoch, 1);

	while (atomic_load(&f->readers[e & 1].n))
		sched_yield();
}

static int range_cmp(const void *a, const void *b)
{
	return key_cmp(((const struct range *)a)->lo, ((const struct range *)b)->lo);
}

/* Merges the ranges of one family into boundaries 0 → 0, lo → 1, hi+1 → 0. */
static int local_build(struct imap *m, struct range *rs, size_t n, struct key128 max)
{
	size_t cap = 2 * n + 1;

	m->keys = calloc(cap, sizeof(*m->keys));
	m->ids = calloc(cap, sizeof(*m->ids));
	if (!m->keys || !m->ids)
		return -ENOMEM;
	qsort(rs, n, sizeof(*rs), range_cmp);
	m->keys[0] = (struct key128){ 0, 0 };
	m->ids[0] = 0;
	m->n = 1;
	for (size_t i = 0; i < n;) {
		struct key128 lo = rs[i].lo, hi = rs[i].hi;

		/* Overlapping or adjacent ranges make one. */
		for (i++; i < n && (key_is_max(hi, max) || key_cmp(rs[i].lo, key_next(hi)) <= 0); i++)
			if (key_cmp(rs[i].hi, hi) > 0)
				hi = rs[i].hi;
		if (!key_cmp(m->keys[m->n - 1], lo))
			m->ids[m->n - 1] = 1;
		else
			m->keys[m->n] = lo, m->ids[m->n++] = 1;
		if (!key_is_max(hi, max))
			m->keys[m->n] = key_next(hi), m->ids[m->n++] = 0;
	}
	return 0;
}

int filter_set_local(struct filter *f, const struct filter_prefix *p, size_t n)
{
	static const struct key128 max[2] = { { 0, 0xffffffffULL }, { UINT64_MAX, UINT64_MAX } };
	struct filter_local *l = NULL, *old;
	struct range *rs[2] = { NULL, NULL };
	size_t nr[2] = { 0, 0 };
	int ret = 0;

	if (p) {
		l = calloc(1, sizeof(*l));
		rs[0] = calloc(n + 1, sizeof(*rs[0]));
		rs[1] = calloc(n + 1, sizeof(*rs[1]));
		if (!l || !rs[0] || !rs[1]) {
			ret = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			int fam = p[i].family == AF_INET6;
			unsigned host;
			struct range *r = &rs[fam][nr[fam]++];

			if ((p[i].family != AF_INET && p[i].family != AF_INET6) || p[i].bits > (fam ? 128 : 32)) {
				ret = -EINVAL;
				goto out;
			}
			host = (unsigned)((fam ? 128 : 32) - p[i].bits);
			r->lo = addr_key(fam ? 6 : 4, p[i].addr);
			{
				uint64_t mlo = host >= 64 ? UINT64_MAX : (host ? (1ULL << host) - 1 : 0);
				uint64_t mhi = host > 64 ? (host >= 128 ? UINT64_MAX : (1ULL << (host - 64)) - 1) : 0;

				r->lo.lo &= ~mlo;
				r->lo.hi &= ~mhi;
				r->hi = (struct key128){ r->lo.hi | mhi, r->lo.lo | mlo };
			}
		}
		for (int fam = 0; fam < 2 && !ret; fam++)
			ret = local_build(&l->map[fam], rs[fam], nr[fam], max[fam]);
		if (ret)
			goto out;
	}
	pthread_mutex_lock(&f->swap_lock);
	old = atomic_exchange(&f->local, l);
	synchronize(f);
	pthread_mutex_unlock(&f->swap_lock);
	l = old;
out:
	local_free(l);
	free(rs[0]);
	free(rs[1]);
	return ret;
}

void filter_swap(struct filter *f, struct filter_rules *r)
{
	struct filter_rules *old;

	pthread_mutex_lock(&f->swap_lock);
	if (++f->gen == 0)
		f->gen = 1;
	r->gen = f->gen;
	old = atomic_exchange(&f->rules, r);
	synchronize(f);
	pthread_mutex_unlock(&f->swap_lock);
	filter_rules_free(old);
	atomic_fetch_add(&f->counters.swaps, 1);
}

int filter_set(struct filter *f, const struct json *pf, char *err, size_t errlen)
{
	int error = 0;
	struct filter_rules *r = compile(pf, err, errlen, &error);

	if (!r)
		return error;
	filter_swap(f, r);
	return 0;
}

size_t filter_expire(struct filter *f, uint64_t now)
{
	return conntrack_expire(f->ct, now);
}

void filter_counters(const struct filter *f, struct filter_counts *out)
{
	struct filter *m = (struct filter *)f;

	out->accepted_in = atomic_load(&m->counters.accepted_in);
	out->accepted_out = atomic_load(&m->counters.accepted_out);
	for (int v = 0; v < FILTER_VERDICTS; v++)
		out->dropped[v] = atomic_load(&m->counters.dropped[v]);
	out->swaps = atomic_load(&m->counters.swaps);
	conntrack_stats(f->ct, &out->ct);
}

const char *filter_verdict_name(enum filter_verdict v)
{
	static const char *const names[FILTER_VERDICTS] = {
		[FILTER_ACCEPT] = "accept",
		[FILTER_DROP_NO_RULE] = "no_rule",
		[FILTER_DROP_NOT_TRACKED] = "not_tracked",
		[FILTER_DROP_MALFORMED] = "malformed",
		[FILTER_DROP_TABLE_FULL] = "table_full",
		[FILTER_DROP_NOT_LOCAL] = "not_local",
	};

	return (unsigned)v < FILTER_VERDICTS ? names[v] : "unknown";
}
