/* Netmaps, peers and deltas (docs/control-protocol.md, "Map stream"):
 * to and from JSON, a delta applied to a netmap, the delta between two
 * netmaps. A single malformed peer (or removal) in a netmap or delta is
 * skipped and counted, not a reason to refuse the rest: see messages.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/channel.h"
#include "control/fields.h"
#include "control/messages.h"
#include "json.h"

#define WHERE_LEN 96

/* ---- prefixes ------------------------------------------------------------ */

bool netmap_prefix_parse(struct netmap_prefix *p, const char *s)
{
	char host[INET6_ADDRSTRLEN], canon[INET6_ADDRSTRLEN];
	const char *slash;
	size_t hlen;
	unsigned long bits;
	char *end;

	memset(p, 0, sizeof(*p));
	if (!s)
		return false;
	slash = strchr(s, '/');
	hlen = slash ? (size_t)(slash - s) : strlen(s);
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, p->addr) == 1) {
		p->family = AF_INET;
		p->bits = 32;
	} else if (!strchr(host, '.') && inet_pton(AF_INET6, host, p->addr) == 1 &&
		   inet_ntop(AF_INET6, p->addr, canon, sizeof(canon)) && !strchr(canon, '.')) {
		/* No IPv4-mapped or -compatible address (::ffff:10.0.0.0,
		 * ::ffff:a00:0): the CRDs' patterns refuse the dotted form, which
		 * is how such an address is written back. */
		p->family = AF_INET6;
		p->bits = 128;
	} else {
		return false;
	}
	if (slash) {
		/* Decimal digits only: no sign, no space, no leading zeros. */
		if (slash[1] < '0' || slash[1] > '9' || (slash[1] == '0' && slash[2]))
			return false;
		bits = strtoul(slash + 1, &end, 10);
		if (*end || bits > p->bits)
			return false;
		p->bits = (uint8_t)bits;
	}
	return true;
}

int netmap_prefix_format(const struct netmap_prefix *p, bool bare, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	int n;

	if (!inet_ntop(p->family, p->addr, host, sizeof(host)))
		return -EAFNOSUPPORT;
	if (bare && p->bits == (p->family == AF_INET ? 32 : 128))
		n = snprintf(out, len, "%s", host);
	else
		n = snprintf(out, len, "%s/%u", host, p->bits);
	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	return n;
}

bool netmap_prefix_equal(const struct netmap_prefix *a, const struct netmap_prefix *b)
{
	return a->family == b->family && a->bits == b->bits &&
	       memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

/* ---- nodes ----------------------------------------------------------------- */

void netmap_node_free(struct netmap_node *n)
{
	if (!n)
		return;
	free(n->name);
	free(n->fqdn);
	free(n->device);
	free(n->user);
	free(n->addresses);
	free(n->allowed_ips);
	free(n->endpoints);
	fields_strv_free(n->tags, n->ntags);
	memset(n, 0, sizeof(*n));
}

bool netmap_node_from_json(const struct json *j, const char *where, struct netmap_node *out,
			   char *err, size_t errlen)
{
	char w[WHERE_LEN];
	bool ok;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return fields_fail(err, errlen, "%s: want an object, got %s", *where ? where : "node",
				   json_type_name(json_type(j)));
	snprintf(w, sizeof(w), "%s%s", where, *where ? "." : "");
	ok = fields_get_key(j, w, "nodeKey", "nodekey:", true, out->node_key, NULL, err, errlen) &&
	     fields_get_key(j, w, "discoKey", "discokey:", false, out->disco_key, &out->has_disco_key, err, errlen) &&
	     fields_get_hostname(j, w, "name", &out->name, err, errlen) &&
	     fields_get_str(j, w, "fqdn", false, FIELDS_MAX_NAME, &out->fqdn, err, errlen) &&
	     fields_get_str(j, w, "device", false, FIELDS_MAX_NAME, &out->device, err, errlen) &&
	     fields_get_str(j, w, "user", false, FIELDS_MAX_NAME, &out->user, err, errlen) &&
	     fields_get_prefixes(j, w, "addresses", true, false, &out->addresses, &out->naddresses, err, errlen) &&
	     fields_get_prefixes(j, w, "allowedIPs", false, true, &out->allowed_ips, &out->nallowed_ips, err,
				 errlen) &&
	     fields_get_endpoints(j, w, &out->endpoints, &out->nendpoints, err, errlen) &&
	     fields_get_relay(j, w, &out->relay, NULL, err, errlen) &&
	     fields_get_bool(j, w, "online", &out->online, err, errlen) &&
	     fields_get_bool(j, w, "ephemeral", &out->ephemeral, err, errlen) &&
	     fields_get_tags(j, w, "tags", &out->tags, &out->ntags, err, errlen) &&
	     fields_get_int(j, w, "keyExpiry", 0, INT64_MAX, &out->key_expiry, NULL, err, errlen);
	if (!ok)
		netmap_node_free(out);
	return ok;
}

struct json *netmap_node_to_json(const struct netmap_node *n)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	if (n->name)
		json_put(o, "name", json_new_string(n->name), &err);
	if (n->fqdn)
		json_put(o, "fqdn", json_new_string(n->fqdn), &err);
	if (n->device)
		json_put(o, "device", json_new_string(n->device), &err);
	if (n->user)
		json_put(o, "user", json_new_string(n->user), &err);
	json_put(o, "nodeKey", fields_key_json(n->node_key, "nodekey:"), &err);
	if (n->has_disco_key)
		json_put(o, "discoKey", fields_key_json(n->disco_key, "discokey:"), &err);
	json_put(o, "addresses", fields_prefixes_json(n->addresses, n->naddresses, false), &err);
	json_put(o, "allowedIPs", fields_prefixes_json(n->allowed_ips, n->nallowed_ips, false), &err);
	json_put(o, "endpoints", fields_endpoints_json(n->endpoints, n->nendpoints), &err);
	json_put(o, "relay", json_new_int(n->relay), &err);
	json_put(o, "online", json_new_bool(n->online), &err);
	json_put(o, "ephemeral", json_new_bool(n->ephemeral), &err);
	json_put(o, "tags", fields_strv_json(n->tags, n->ntags), &err);
	if (n->key_expiry)
		json_put(o, "keyExpiry", json_new_int(n->key_expiry), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static bool prefixes_eq(const struct netmap_prefix *a, size_t na, const struct netmap_prefix *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!netmap_prefix_equal(&a[i], &b[i]))
			return false;
	return true;
}

bool netmap_node_equal(const struct netmap_node *a, const struct netmap_node *b)
{
	if (memcmp(a->node_key, b->node_key, MESSAGES_KEY_LEN) || a->has_disco_key != b->has_disco_key ||
	    (a->has_disco_key && memcmp(a->disco_key, b->disco_key, MESSAGES_KEY_LEN)) ||
	    !str_eq(a->name, b->name) || !str_eq(a->fqdn, b->fqdn) || !str_eq(a->device, b->device) || !str_eq(a->user, b->user) ||
	    a->relay != b->relay || a->online != b->online || a->ephemeral != b->ephemeral || a->nendpoints != b->nendpoints ||
	    a->ntags != b->ntags || a->key_expiry != b->key_expiry ||
	    !prefixes_eq(a->addresses, a->naddresses, b->addresses, b->naddresses) ||
	    !prefixes_eq(a->allowed_ips, a->nallowed_ips, b->allowed_ips, b->nallowed_ips))
		return false;
	for (size_t i = 0; i < a->nendpoints; i++)
		if (!endpoint_equal(&a->endpoints[i], &b->endpoints[i]))
			return false;
	for (size_t i = 0; i < a->ntags; i++)
		if (strcmp(a->tags[i], b->tags[i]))
			return false;
	return true;
}

static void *dup_mem(const void *p, size_t n, size_t size, bool *ok)
{
	void *q;

	if (!n)
		return NULL;
	q = calloc(n, size);
	if (!q) {
		*ok = false;
		return NULL;
	}
	memcpy(q, p, n * size);
	return q;
}

static char *dup_str(const char *s, bool *ok)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*ok = false;
	return d;
}

int netmap_node_clone(struct netmap_node *out, const struct netmap_node *n)
{
	bool ok = true;

	*out = *n;
	out->name = dup_str(n->name, &ok);
	out->fqdn = dup_str(n->fqdn, &ok);
	out->device = dup_str(n->device, &ok);
	out->user = dup_str(n->user, &ok);
	out->addresses = dup_mem(n->addresses, n->naddresses, sizeof(*n->addresses), &ok);
	out->allowed_ips = dup_mem(n->allowed_ips, n->nallowed_ips, sizeof(*n->allowed_ips), &ok);
	out->endpoints = dup_mem(n->endpoints, n->nendpoints, sizeof(*n->endpoints), &ok);
	out->tags = NULL;
	out->ntags = 0;
	if (ok && n->ntags) {
		out->tags = calloc(n->ntags, sizeof(*out->tags));
		if (!out->tags)
			ok = false;
		for (size_t i = 0; ok && i < n->ntags; i++) {
			out->tags[i] = strdup(n->tags[i]);
			if (!out->tags[i])
				ok = false;
			out->ntags = i + 1;
		}
	}
	if (!ok) {
		netmap_node_free(out);
		return -ENOMEM;
	}
	return 0;
}

/* ---- netmap ------------------------------------------------------------------ */

static void nodes_free(struct netmap_node *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		netmap_node_free(&v[i]);
	free(v);
}

void netmap_free(struct netmap *nm)
{
	if (!nm)
		return;
	netmap_node_free(&nm->self);
	nodes_free(nm->peers, nm->npeers);
	free(nm->dns_suffix);
	json_free(nm->dns);
	json_free(nm->relay_map);
	json_free(nm->packet_filter);
	memset(nm, 0, sizeof(*nm));
}

const struct netmap_node *netmap_find_peer(const struct netmap *nm, const uint8_t node_key[MESSAGES_KEY_LEN])
{
	for (size_t i = 0; i < nm->npeers; i++)
		if (memcmp(nm->peers[i].node_key, node_key, MESSAGES_KEY_LEN) == 0)
			return &nm->peers[i];
	return NULL;
}

static bool get_seq(const struct json *j, uint64_t *seq, char *err, size_t errlen)
{
	int64_t v = 0;
	bool has;

	if (!fields_get_int(j, "", "seq", 1, INT64_MAX, &v, &has, err, errlen))
		return false;
	if (!has)
		return fields_fail(err, errlen, "seq: missing");
	*seq = (uint64_t)v;
	return true;
}

/* Counts a peer (or removal) left out and keeps the first reason. */
static void skip(size_t *skipped, char *why, size_t whylen, const char *reason)
{
	if ((*skipped)++ == 0)
		snprintf(why, whylen, "%s", reason);
}

/* A reader's failure that is not the input's fault: every reader says
 * "out of memory" then, and nothing else does. */
static bool out_of_memory(const char *err)
{
	return strstr(err, "out of memory") != NULL;
}

/* peers[] or upsert[]: nodes, no node key twice, none with not_key (self's)
 * when given. A malformed node, or one repeating a key, is skipped and
 * counted; what is wrong with the array itself fails. */
static bool get_nodes(const struct json *j, const char *key, const uint8_t *not_key, struct netmap_node **out,
		      size_t *n, size_t *skipped, char *why, size_t whylen, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);
	struct netmap_node *a;
	char where[WHERE_LEN], e[160];
	size_t len, got = 0;

	*out = NULL;
	*n = 0;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_array(v))
		return fields_fail(err, errlen, "%s: want an array, got %s", key, json_type_name(json_type(v)));
	len = json_array_len(v);
	if (len == 0)
		return true;
	a = calloc(len, sizeof(*a));
	if (!a)
		return fields_fail(err, errlen, "%s: out of memory", key);
	for (size_t i = 0; i < len; i++) {
		bool dup = false;

		snprintf(where, sizeof(where), "%s[%zu]", key, i);
		e[0] = '\0';
		if (!netmap_node_from_json(json_array_at(v, i), where, &a[got], e, sizeof(e))) {
			if (out_of_memory(e)) {
				nodes_free(a, got);
				return fields_fail(err, errlen, "%s", e);
			}
			skip(skipped, why, whylen, e);
			continue;
		}
		for (size_t k = 0; k < got && !dup; k++)
			dup = memcmp(a[k].node_key, a[got].node_key, MESSAGES_KEY_LEN) == 0;
		if (dup || (not_key && memcmp(not_key, a[got].node_key, MESSAGES_KEY_LEN) == 0)) {
			snprintf(e, sizeof(e), "%s: %s", where,
				 dup ? "repeats the node key of an earlier peer" : "has self's node key");
			skip(skipped, why, whylen, e);
			netmap_node_free(&a[got]);
			continue;
		}
		got++;
	}
	if (!got) {
		free(a);
		a = NULL;
	}
	*out = a;
	*n = got;
	return true;
}

/* dns: an object whose "suffix" (if any) is a string. */
static bool get_dns(const struct json *j, struct json **dns, char **suffix, bool *has, char *err, size_t errlen)
{
	*suffix = NULL;
	if (!fields_get_opaque(j, "", "dns", JSON_OBJECT, dns, has, err, errlen))
		return false;
	if (*dns && !fields_get_str(*dns, "dns.", "suffix", false, FIELDS_MAX_NAME, suffix, err, errlen)) {
		json_free(*dns);
		*dns = NULL;
		return false;
	}
	return true;
}

bool netmap_from_json(const struct json *j, struct netmap *out, char *err, size_t errlen)
{
	bool has, ok;

	memset(out, 0, sizeof(*out));
	ok = fields_want_type(j, "full", err, errlen) && get_seq(j, &out->seq, err, errlen);
	if (ok && !json_get(j, "self"))
		ok = fields_fail(err, errlen, "self: missing");
	ok = ok && netmap_node_from_json(json_get(j, "self"), "self", &out->self, err, errlen) &&
	     get_nodes(j, "peers", out->self.node_key, &out->peers, &out->npeers, &out->skipped, out->skipped_why,
		       sizeof(out->skipped_why), err, errlen) &&
	     get_dns(j, &out->dns, &out->dns_suffix, &has, err, errlen) &&
	     fields_get_opaque(j, "", "relayMap", JSON_OBJECT, &out->relay_map, &has, err, errlen) &&
	     fields_get_opaque(j, "", "packetFilter", JSON_ARRAY, &out->packet_filter, &has, err, errlen);
	if (!ok)
		netmap_free(out);
	return ok;
}

static struct json *nodes_json(const struct netmap_node *v, size_t n)
{
	struct json *a = json_new_array();

	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append(a, netmap_node_to_json(&v[i]))) {
			json_free(a);
			return NULL;
		}
	}
	return a;
}

static struct json *clone_or_null(const struct json *j, int *err)
{
	struct json *c = j ? json_clone(j) : json_new_null();

	if (!c && !*err)
		*err = -ENOMEM;
	return c;
}

struct json *netmap_to_json(const struct netmap *nm)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	json_put(o, "type", json_new_string("full"), &err);
	json_put(o, "seq", json_new_int((int64_t)nm->seq), &err);
	json_put(o, "self", netmap_node_to_json(&nm->self), &err);
	json_put(o, "peers", nodes_json(nm->peers, nm->npeers), &err);
	if (nm->dns)
		json_put(o, "dns", clone_or_null(nm->dns, &err), &err);
	if (nm->relay_map)
		json_put(o, "relayMap", clone_or_null(nm->relay_map, &err), &err);
	if (nm->packet_filter)
		json_put(o, "packetFilter", clone_or_null(nm->packet_filter, &err), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

/* ---- deltas -------------------------------------------------------------------- */

void netmap_delta_free(struct netmap_delta *d)
{
	if (!d)
		return;
	netmap_node_free(&d->self);
	nodes_free(d->upsert, d->nupsert);
	free(d->remove);
	free(d->dns_suffix);
	json_free(d->dns);
	json_free(d->relay_map);
	json_free(d->packet_filter);
	memset(d, 0, sizeof(*d));
}

static bool get_removes(const struct json *j, struct netmap_delta *d, char *err, size_t errlen)
{
	const struct json *v = json_get(j, "remove");
	size_t len;

	if (!v || json_is_null(v))
		return true;
	if (!json_is_array(v))
		return fields_fail(err, errlen, "remove: want an array, got %s", json_type_name(json_type(v)));
	len = json_array_len(v);
	if (len == 0)
		return true;
	d->remove = calloc(len, sizeof(*d->remove));
	if (!d->remove)
		return fields_fail(err, errlen, "remove: out of memory");
	for (size_t i = 0; i < len; i++) {
		char why[64];

		if (channel_key_parse(json_str(json_array_at(v, i)), "nodekey:", d->remove[d->nremove])) {
			d->nremove++;
			continue;
		}
		snprintf(why, sizeof(why), "remove[%zu]: want \"nodekey:\" and 64 hex digits", i);
		skip(&d->skipped, d->skipped_why, sizeof(d->skipped_why), why);
	}
	return true;
}

bool netmap_delta_from_json(const struct json *j, struct netmap_delta *out, char *err, size_t errlen)
{
	bool has = false, ok;

	memset(out, 0, sizeof(*out));
	ok = fields_want_type(j, "delta", err, errlen) && get_seq(j, &out->seq, err, errlen) &&
	     get_nodes(j, "upsert", NULL, &out->upsert, &out->nupsert, &out->skipped, out->skipped_why,
		       sizeof(out->skipped_why), err, errlen) &&
	     get_removes(j, out, err, errlen);
	if (ok && json_get(j, "self") && !json_is_null(json_get(j, "self"))) {
		ok = netmap_node_from_json(json_get(j, "self"), "self", &out->self, err, errlen);
		out->has |= NETMAP_HAS_SELF;
	}
	if (ok) {
		ok = get_dns(j, &out->dns, &out->dns_suffix, &has, err, errlen);
		out->has |= has ? NETMAP_HAS_DNS : 0;
	}
	if (ok) {
		ok = fields_get_opaque(j, "", "relayMap", JSON_OBJECT, &out->relay_map, &has, err, errlen);
		out->has |= has ? NETMAP_HAS_RELAY_MAP : 0;
	}
	if (ok) {
		ok = fields_get_opaque(j, "", "packetFilter", JSON_ARRAY, &out->packet_filter, &has, err, errlen);
		out->has |= has ? NETMAP_HAS_PACKET_FILTER : 0;
	}
	if (!ok)
		netmap_delta_free(out);
	return ok;
}

struct json *netmap_delta_to_json(const struct netmap_delta *d)
{
	struct json *o = json_new_object(), *rm = json_new_array();
	int err = o && rm ? 0 : -ENOMEM;

	for (size_t i = 0; !err && i < d->nremove; i++)
		err = json_array_append(rm, fields_key_json(d->remove[i], "nodekey:"));
	json_put(o, "type", json_new_string("delta"), &err);
	json_put(o, "seq", json_new_int((int64_t)d->seq), &err);
	json_put(o, "upsert", nodes_json(d->upsert, d->nupsert), &err);
	json_put(o, "remove", rm, &err);
	if (d->has & NETMAP_HAS_SELF)
		json_put(o, "self", netmap_node_to_json(&d->self), &err);
	if (d->has & NETMAP_HAS_DNS)
		json_put(o, "dns", clone_or_null(d->dns, &err), &err);
	if (d->has & NETMAP_HAS_RELAY_MAP)
		json_put(o, "relayMap", clone_or_null(d->relay_map, &err), &err);
	if (d->has & NETMAP_HAS_PACKET_FILTER)
		json_put(o, "packetFilter", clone_or_null(d->packet_filter, &err), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

static bool removed(const struct netmap_delta *d, const uint8_t key[MESSAGES_KEY_LEN])
{
	for (size_t i = 0; i < d->nremove; i++)
		if (memcmp(d->remove[i], key, MESSAGES_KEY_LEN) == 0)
			return true;
	return false;
}

int netmap_apply_delta(struct netmap *nm, struct netmap_delta *d, char *err, size_t errlen)
{
	const uint8_t *self_key;
	struct netmap_node *peers;
	size_t n = 0;

	if (d->seq <= nm->seq) {
		fields_fail(err, errlen, "delta seq %llu is not newer than the netmap's %llu",
		      (unsigned long long)d->seq, (unsigned long long)nm->seq);
		return -ESTALE;
	}
	/* Everything that can fail happens before nm changes. */
	peers = calloc(nm->npeers + d->nupsert + 1, sizeof(*peers));
	if (!peers) {
		fields_fail(err, errlen, "out of memory");
		return -ENOMEM;
	}
	self_key = d->has & NETMAP_HAS_SELF ? d->self.node_key : nm->self.node_key;
	if (d->skipped && !nm->skipped)
		snprintf(nm->skipped_why, sizeof(nm->skipped_why), "%s", d->skipped_why);
	nm->skipped += d->skipped;
	/* Keep what is neither removed nor replaced, in order; free the rest.
	 * A peer with self's node key is no peer. */
	for (size_t i = 0; i < nm->npeers; i++) {
		struct netmap_node *p = &nm->peers[i];
		bool replaced = memcmp(p->node_key, self_key, MESSAGES_KEY_LEN) == 0;

		for (size_t k = 0; k < d->nupsert && !replaced; k++)
			replaced = memcmp(d->upsert[k].node_key, p->node_key, MESSAGES_KEY_LEN) == 0;
		if (replaced || removed(d, p->node_key))
			netmap_node_free(p);
		else
			peers[n++] = *p;
	}
	/* Upserts go to the end: peers are not ordered. */
	for (size_t k = 0; k < d->nupsert; k++) {
		if (memcmp(d->upsert[k].node_key, self_key, MESSAGES_KEY_LEN) == 0) {
			skip(&nm->skipped, nm->skipped_why, sizeof(nm->skipped_why), "upsert: has self's node key");
			netmap_node_free(&d->upsert[k]);
			continue;
		}
		peers[n++] = d->upsert[k];
	}
	free(nm->peers);
	free(d->upsert);
	d->upsert = NULL;
	d->nupsert = 0;
	nm->peers = peers;
	nm->npeers = n;
	if (d->has & NETMAP_HAS_SELF) {
		netmap_node_free(&nm->self);
		nm->self = d->self;
		memset(&d->self, 0, sizeof(d->self));
	}
	if (d->has & NETMAP_HAS_DNS) {
		json_free(nm->dns);
		free(nm->dns_suffix);
		nm->dns = d->dns;
		nm->dns_suffix = d->dns_suffix;
		d->dns = NULL;
		d->dns_suffix = NULL;
	}
	if (d->has & NETMAP_HAS_RELAY_MAP) {
		json_free(nm->relay_map);
		nm->relay_map = d->relay_map;
		d->relay_map = NULL;
	}
	if (d->has & NETMAP_HAS_PACKET_FILTER) {
		json_free(nm->packet_filter);
		nm->packet_filter = d->packet_filter;
		d->packet_filter = NULL;
	}
	nm->seq = d->seq;
	netmap_delta_free(d);
	return 0;
}

int netmap_diff(const struct netmap *from, const struct netmap *to, struct netmap_delta *out)
{
	int err = 0;

	memset(out, 0, sizeof(*out));
	out->seq = to->seq;
	out->upsert = calloc(to->npeers + 1, sizeof(*out->upsert));
	out->remove = calloc(from->npeers + 1, sizeof(*out->remove));
	if (!out->upsert || !out->remove) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < to->npeers; i++) {
		const struct netmap_node *old = netmap_find_peer(from, to->peers[i].node_key);

		if (old && netmap_node_equal(old, &to->peers[i]))
			continue;
		if ((err = netmap_node_clone(&out->upsert[out->nupsert], &to->peers[i])))
			goto out;
		out->nupsert++;
	}
	for (size_t i = 0; i < from->npeers; i++)
		if (!netmap_find_peer(to, from->peers[i].node_key))
			memcpy(out->remove[out->nremove++], from->peers[i].node_key, MESSAGES_KEY_LEN);
	if (!netmap_node_equal(&from->self, &to->self)) {
		if ((err = netmap_node_clone(&out->self, &to->self)))
			goto out;
		out->has |= NETMAP_HAS_SELF;
	}
	if (!json_equal(from->dns, to->dns)) {
		out->has |= NETMAP_HAS_DNS;
		if (to->dns && !(out->dns = json_clone(to->dns)))
			err = -ENOMEM;
		if (to->dns_suffix && !(out->dns_suffix = strdup(to->dns_suffix)))
			err = -ENOMEM;
	}
	if (!json_equal(from->relay_map, to->relay_map)) {
		out->has |= NETMAP_HAS_RELAY_MAP;
		if (to->relay_map && !(out->relay_map = json_clone(to->relay_map)))
			err = -ENOMEM;
	}
	if (!json_equal(from->packet_filter, to->packet_filter)) {
		out->has |= NETMAP_HAS_PACKET_FILTER;
		if (to->packet_filter && !(out->packet_filter = json_clone(to->packet_filter)))
			err = -ENOMEM;
	}
out:
	if (err)
		netmap_delta_free(out);
	return err;
}
