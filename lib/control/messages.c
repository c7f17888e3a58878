#include "control/messages.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "control/channel.h"
#include "json.h"

#define WHERE_LEN 96

static bool failf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool failf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return false;
}

/* ---- prefixes ------------------------------------------------------------ */

bool netmap_prefix_parse(struct netmap_prefix *p, const char *s)
{
	char host[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long bits;
	char *end;

	memset(p, 0, sizeof(*p));
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, p->addr) == 1) {
		p->family = AF_INET;
		p->bits = 32;
	} else if (inet_pton(AF_INET6, host, p->addr) == 1) {
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

/* ---- JSON field helpers -------------------------------------------------- */

/* An optional string member: absent or null leaves *out NULL. */
static bool get_str(const struct json *j, const char *where, const char *key, bool required,
		    char **out, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);
	const char *s;

	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return failf(err, errlen, "%s%s: missing", where, key);
		return true;
	}
	s = json_str(v);
	if (!s)
		return failf(err, errlen, "%s%s: want a string without NUL, got %s", where, key,
			     json_type_name(json_type(v)));
	*out = strdup(s);
	if (!*out)
		return failf(err, errlen, "%s%s: out of memory", where, key);
	return true;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* An optional array of strings. tag_syntax: each must be "tag:<name>". */
static bool get_strv(const struct json *j, const char *where, const char *key, bool tag_syntax,
		     char ***out, size_t *n, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);
	size_t len;
	char **a;

	*out = NULL;
	*n = 0;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_array(v))
		return failf(err, errlen, "%s%s: want an array, got %s", where, key,
			     json_type_name(json_type(v)));
	len = json_array_len(v);
	if (len == 0)
		return true;
	a = calloc(len, sizeof(*a));
	if (!a)
		return failf(err, errlen, "%s%s: out of memory", where, key);
	for (size_t i = 0; i < len; i++) {
		const char *s = json_str(json_array_at(v, i));

		if (!s) {
			strv_free(a, i);
			return failf(err, errlen, "%s%s[%zu]: want a string", where, key, i);
		}
		if (tag_syntax && (strncmp(s, "tag:", 4) != 0 || !s[4])) {
			strv_free(a, i);
			return failf(err, errlen, "%s%s[%zu]: \"%.40s\" is not a tag (tag:<name>)",
				     where, key, i, s);
		}
		a[i] = strdup(s);
		if (!a[i]) {
			strv_free(a, i);
			return failf(err, errlen, "%s%s: out of memory", where, key);
		}
	}
	*out = a;
	*n = len;
	return true;
}

static bool get_prefixes(const struct json *j, const char *where, const char *key, bool required,
			 struct netmap_prefix **out, size_t *n, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);
	struct netmap_prefix *a;
	size_t len;

	*out = NULL;
	*n = 0;
	if (!v || json_is_null(v)) {
		if (required)
			return failf(err, errlen, "%s%s: missing", where, key);
		return true;
	}
	if (!json_is_array(v))
		return failf(err, errlen, "%s%s: want an array, got %s", where, key,
			     json_type_name(json_type(v)));
	len = json_array_len(v);
	if (len == 0)
		return true;
	a = calloc(len, sizeof(*a));
	if (!a)
		return failf(err, errlen, "%s%s: out of memory", where, key);
	for (size_t i = 0; i < len; i++) {
		const char *s = json_str(json_array_at(v, i));

		if (!s || !netmap_prefix_parse(&a[i], s)) {
			free(a);
			if (!s)
				return failf(err, errlen, "%s%s[%zu]: want a string", where, key, i);
			return failf(err, errlen, "%s%s[%zu]: \"%.50s\" is not an IP address or prefix",
				     where, key, i, s);
		}
	}
	*out = a;
	*n = len;
	return true;
}

static bool get_endpoints(const struct json *j, const char *where, struct endpoint **out, size_t *n,
			  char *err, size_t errlen)
{
	const struct json *v = json_get(j, "endpoints");
	struct endpoint *a;
	const char *why;
	size_t len;

	*out = NULL;
	*n = 0;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_array(v))
		return failf(err, errlen, "%sendpoints: want an array, got %s", where,
			     json_type_name(json_type(v)));
	len = json_array_len(v);
	if (len == 0)
		return true;
	a = calloc(len, sizeof(*a));
	if (!a)
		return failf(err, errlen, "%sendpoints: out of memory", where);
	for (size_t i = 0; i < len; i++) {
		const char *s = json_str(json_array_at(v, i));

		if (!s) {
			free(a);
			return failf(err, errlen, "%sendpoints[%zu]: want a string", where, i);
		}
		if (!endpoint_parse(&a[i], s, &why)) {
			free(a);
			return failf(err, errlen, "%sendpoints[%zu]: \"%.50s\": %s", where, i, s, why);
		}
	}
	*out = a;
	*n = len;
	return true;
}

static bool get_key(const struct json *j, const char *where, const char *key, const char *prefix,
		    bool required, uint8_t out[MESSAGES_KEY_LEN], bool *has, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);

	if (has)
		*has = false;
	if (!v || json_is_null(v)) {
		if (required)
			return failf(err, errlen, "%s%s: missing", where, key);
		return true;
	}
	if (!channel_key_parse(json_str(v), prefix, out))
		return failf(err, errlen, "%s%s: want \"%s\" and 64 hex digits", where, key, prefix);
	if (has)
		*has = true;
	return true;
}

static bool get_int(const struct json *j, const char *where, const char *key, int64_t min,
		    int64_t max, int64_t *out, bool *has, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);

	if (has)
		*has = false;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_int(v) || json_int(v, 0) < min || json_int(v, 0) > max)
		return failf(err, errlen, "%s%s: want an integer from %lld to %lld", where, key,
			     (long long)min, (long long)max);
	*out = json_int(v, 0);
	if (has)
		*has = true;
	return true;
}

static bool get_bool(const struct json *j, const char *where, const char *key, bool *out,
		     char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);

	if (!v || json_is_null(v))
		return true;
	if (!json_is_bool(v))
		return failf(err, errlen, "%s%s: want true or false, got %s", where, key,
			     json_type_name(json_type(v)));
	*out = json_bool(v, false);
	return true;
}

/* An optional member kept as JSON; want is JSON_OBJECT or JSON_ARRAY. */
static bool get_opaque(const struct json *j, const char *where, const char *key, enum json_type want,
		       struct json **out, bool *has, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);

	*out = NULL;
	*has = false;
	if (!v)
		return true;
	*has = true;
	if (json_is_null(v))
		return true;
	if (json_type(v) != want)
		return failf(err, errlen, "%s%s: want an %s, got %s", where, key,
			     json_type_name(want), json_type_name(json_type(v)));
	*out = json_clone(v);
	if (!*out)
		return failf(err, errlen, "%s%s: out of memory", where, key);
	return true;
}

/* Builders: each helper frees v if an earlier step failed, so a chain of
 * calls ends with one check. */
static void put(struct json *o, const char *key, struct json *v, int *err)
{
	if (*err) {
		json_free(v);
		return;
	}
	*err = json_object_set(o, key, v);
	if (*err == -EINVAL && !v)
		*err = -ENOMEM;
}

static struct json *strv_json(char *const *v, size_t n)
{
	struct json *a = json_new_array();

	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append(a, json_new_string(v[i]))) {
			json_free(a);
			return NULL;
		}
	}
	return a;
}

static struct json *prefixes_json(const struct netmap_prefix *p, size_t n, bool bare)
{
	struct json *a = json_new_array();
	char text[INET6_ADDRSTRLEN + 8];

	for (size_t i = 0; a && i < n; i++) {
		if (netmap_prefix_format(&p[i], bare, text, sizeof(text)) < 0 ||
		    json_array_append(a, json_new_string(text))) {
			json_free(a);
			return NULL;
		}
	}
	return a;
}

static struct json *endpoints_json(const struct endpoint *e, size_t n)
{
	struct json *a = json_new_array();
	char text[INET6_ADDRSTRLEN + 32];

	for (size_t i = 0; a && i < n; i++) {
		if (endpoint_format(&e[i], text, sizeof(text)) < 0 ||
		    json_array_append(a, json_new_string(text))) {
			json_free(a);
			return NULL;
		}
	}
	return a;
}

static struct json *key_json(const uint8_t key[MESSAGES_KEY_LEN], const char *prefix)
{
	char text[MESSAGES_KEY_TEXT_LEN];

	channel_key_format(key, prefix, text, sizeof(text));
	return json_new_string(text);
}

/* ---- nodes ----------------------------------------------------------------- */

void netmap_node_free(struct netmap_node *n)
{
	if (!n)
		return;
	free(n->name);
	free(n->fqdn);
	free(n->device);
	free(n->addresses);
	free(n->allowed_ips);
	free(n->endpoints);
	strv_free(n->tags, n->ntags);
	memset(n, 0, sizeof(*n));
}

bool netmap_node_from_json(const struct json *j, const char *where, struct netmap_node *out,
			   char *err, size_t errlen)
{
	char w[WHERE_LEN];
	int64_t relay = 0;
	bool ok;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return failf(err, errlen, "%s: want an object, got %s", *where ? where : "node",
			     json_type_name(json_type(j)));
	snprintf(w, sizeof(w), "%s%s", where, *where ? "." : "");
	ok = get_key(j, w, "nodeKey", "nodekey:", true, out->node_key, NULL, err, errlen) &&
	     get_key(j, w, "discoKey", "discokey:", false, out->disco_key, &out->has_disco_key, err, errlen) &&
	     get_str(j, w, "name", false, &out->name, err, errlen) &&
	     get_str(j, w, "fqdn", false, &out->fqdn, err, errlen) &&
	     get_str(j, w, "device", false, &out->device, err, errlen) &&
	     get_prefixes(j, w, "addresses", true, &out->addresses, &out->naddresses, err, errlen) &&
	     get_prefixes(j, w, "allowedIPs", false, &out->allowed_ips, &out->nallowed_ips, err, errlen) &&
	     get_endpoints(j, w, &out->endpoints, &out->nendpoints, err, errlen) &&
	     get_int(j, w, "relay", 0, INT32_MAX, &relay, NULL, err, errlen) &&
	     get_bool(j, w, "online", &out->online, err, errlen) &&
	     get_strv(j, w, "tags", true, &out->tags, &out->ntags, err, errlen);
	out->relay = (int)relay;
	if (!ok)
		netmap_node_free(out);
	return ok;
}

struct json *netmap_node_to_json(const struct netmap_node *n)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	if (n->name)
		put(o, "name", json_new_string(n->name), &err);
	if (n->fqdn)
		put(o, "fqdn", json_new_string(n->fqdn), &err);
	if (n->device)
		put(o, "device", json_new_string(n->device), &err);
	put(o, "nodeKey", key_json(n->node_key, "nodekey:"), &err);
	if (n->has_disco_key)
		put(o, "discoKey", key_json(n->disco_key, "discokey:"), &err);
	put(o, "addresses", prefixes_json(n->addresses, n->naddresses, false), &err);
	put(o, "allowedIPs", prefixes_json(n->allowed_ips, n->nallowed_ips, false), &err);
	put(o, "endpoints", endpoints_json(n->endpoints, n->nendpoints), &err);
	put(o, "relay", json_new_int(n->relay), &err);
	put(o, "online", json_new_bool(n->online), &err);
	put(o, "tags", strv_json(n->tags, n->ntags), &err);
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
	    !str_eq(a->name, b->name) || !str_eq(a->fqdn, b->fqdn) || !str_eq(a->device, b->device) ||
	    a->relay != b->relay || a->online != b->online || a->nendpoints != b->nendpoints ||
	    a->ntags != b->ntags ||
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

	if (!get_int(j, "", "seq", 1, INT64_MAX, &v, &has, err, errlen))
		return false;
	if (!has)
		return failf(err, errlen, "seq: missing");
	*seq = (uint64_t)v;
	return true;
}

/* peers[] or upsert[]: nodes, no node key twice. */
static bool get_nodes(const struct json *j, const char *key, struct netmap_node **out, size_t *n,
		      char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);
	struct netmap_node *a;
	char where[WHERE_LEN];
	size_t len;

	*out = NULL;
	*n = 0;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_array(v))
		return failf(err, errlen, "%s: want an array, got %s", key, json_type_name(json_type(v)));
	len = json_array_len(v);
	if (len == 0)
		return true;
	a = calloc(len, sizeof(*a));
	if (!a)
		return failf(err, errlen, "%s: out of memory", key);
	for (size_t i = 0; i < len; i++) {
		snprintf(where, sizeof(where), "%s[%zu]", key, i);
		if (!netmap_node_from_json(json_array_at(v, i), where, &a[i], err, errlen)) {
			nodes_free(a, i);
			return false;
		}
		for (size_t k = 0; k < i; k++) {
			if (memcmp(a[k].node_key, a[i].node_key, MESSAGES_KEY_LEN) == 0) {
				nodes_free(a, i + 1);
				return failf(err, errlen, "%s: %s[%zu] has the node key of %s[%zu]",
					     key, key, i, key, k);
			}
		}
	}
	*out = a;
	*n = len;
	return true;
}

/* dns: an object whose "suffix" (if any) is a string. */
static bool get_dns(const struct json *j, struct json **dns, char **suffix, bool *has, char *err, size_t errlen)
{
	*suffix = NULL;
	if (!get_opaque(j, "", "dns", JSON_OBJECT, dns, has, err, errlen))
		return false;
	if (*dns && !get_str(*dns, "dns.", "suffix", false, suffix, err, errlen)) {
		json_free(*dns);
		*dns = NULL;
		return false;
	}
	return true;
}

static bool want_type(const struct json *j, const char *type, char *err, size_t errlen)
{
	const char *t;

	if (!json_is_object(j))
		return failf(err, errlen, "want a JSON object, got %s", json_type_name(json_type(j)));
	t = messages_type(j);
	if (!t)
		return failf(err, errlen, "type: missing");
	if (strcmp(t, type) != 0)
		return failf(err, errlen, "type: want \"%s\", got \"%.32s\"", type, t);
	return true;
}

bool netmap_from_json(const struct json *j, struct netmap *out, char *err, size_t errlen)
{
	bool has, ok;

	memset(out, 0, sizeof(*out));
	ok = want_type(j, "full", err, errlen) && get_seq(j, &out->seq, err, errlen);
	if (ok && !json_get(j, "self"))
		ok = failf(err, errlen, "self: missing");
	ok = ok && netmap_node_from_json(json_get(j, "self"), "self", &out->self, err, errlen) &&
	     get_nodes(j, "peers", &out->peers, &out->npeers, err, errlen) &&
	     get_dns(j, &out->dns, &out->dns_suffix, &has, err, errlen) &&
	     get_opaque(j, "", "relayMap", JSON_OBJECT, &out->relay_map, &has, err, errlen) &&
	     get_opaque(j, "", "packetFilter", JSON_ARRAY, &out->packet_filter, &has, err, errlen);
	if (ok && netmap_find_peer(out, out->self.node_key))
		ok = failf(err, errlen, "peers: lists self's node key");
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

	put(o, "type", json_new_string("full"), &err);
	put(o, "seq", json_new_int((int64_t)nm->seq), &err);
	put(o, "self", netmap_node_to_json(&nm->self), &err);
	put(o, "peers", nodes_json(nm->peers, nm->npeers), &err);
	if (nm->dns)
		put(o, "dns", clone_or_null(nm->dns, &err), &err);
	if (nm->relay_map)
		put(o, "relayMap", clone_or_null(nm->relay_map, &err), &err);
	if (nm->packet_filter)
		put(o, "packetFilter", clone_or_null(nm->packet_filter, &err), &err);
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
		return failf(err, errlen, "remove: want an array, got %s", json_type_name(json_type(v)));
	len = json_array_len(v);
	if (len == 0)
		return true;
	d->remove = calloc(len, sizeof(*d->remove));
	if (!d->remove)
		return failf(err, errlen, "remove: out of memory");
	for (size_t i = 0; i < len; i++) {
		if (!channel_key_parse(json_str(json_array_at(v, i)), "nodekey:", d->remove[i]))
			return failf(err, errlen, "remove[%zu]: want \"nodekey:\" and 64 hex digits", i);
	}
	d->nremove = len;
	return true;
}

bool netmap_delta_from_json(const struct json *j, struct netmap_delta *out, char *err, size_t errlen)
{
	bool has = false, ok;

	memset(out, 0, sizeof(*out));
	ok = want_type(j, "delta", err, errlen) && get_seq(j, &out->seq, err, errlen) &&
	     get_nodes(j, "upsert", &out->upsert, &out->nupsert, err, errlen) &&
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
		ok = get_opaque(j, "", "relayMap", JSON_OBJECT, &out->relay_map, &has, err, errlen);
		out->has |= has ? NETMAP_HAS_RELAY_MAP : 0;
	}
	if (ok) {
		ok = get_opaque(j, "", "packetFilter", JSON_ARRAY, &out->packet_filter, &has, err, errlen);
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
		err = json_array_append(rm, key_json(d->remove[i], "nodekey:"));
	put(o, "type", json_new_string("delta"), &err);
	put(o, "seq", json_new_int((int64_t)d->seq), &err);
	put(o, "upsert", nodes_json(d->upsert, d->nupsert), &err);
	put(o, "remove", rm, &err);
	if (d->has & NETMAP_HAS_SELF)
		put(o, "self", netmap_node_to_json(&d->self), &err);
	if (d->has & NETMAP_HAS_DNS)
		put(o, "dns", clone_or_null(d->dns, &err), &err);
	if (d->has & NETMAP_HAS_RELAY_MAP)
		put(o, "relayMap", clone_or_null(d->relay_map, &err), &err);
	if (d->has & NETMAP_HAS_PACKET_FILTER)
		put(o, "packetFilter", clone_or_null(d->packet_filter, &err), &err);
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
	struct netmap_node *peers;
	size_t n = 0;

	if (d->seq <= nm->seq) {
		failf(err, errlen, "delta seq %llu is not newer than the netmap's %llu",
		      (unsigned long long)d->seq, (unsigned long long)nm->seq);
		return -ESTALE;
	}
	/* Everything that can fail happens before nm changes. */
	peers = calloc(nm->npeers + d->nupsert + 1, sizeof(*peers));
	if (!peers) {
		failf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* Keep what is neither removed nor replaced, in order; free the rest. */
	for (size_t i = 0; i < nm->npeers; i++) {
		struct netmap_node *p = &nm->peers[i];
		bool replaced = false;

		for (size_t k = 0; k < d->nupsert && !replaced; k++)
			replaced = memcmp(d->upsert[k].node_key, p->node_key, MESSAGES_KEY_LEN) == 0;
		if (replaced || removed(d, p->node_key))
			netmap_node_free(p);
		else
			peers[n++] = *p;
	}
	/* Upserts go to the end: peers are not ordered. */
	for (size_t k = 0; k < d->nupsert; k++)
		peers[n++] = d->upsert[k];
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

/* ---- calls ---------------------------------------------------------------------- */

void register_request_free(struct register_request *r)
{
	if (!r)
		return;
	if (r->auth_key) {
		sodium_memzero(r->auth_key, strlen(r->auth_key));
		free(r->auth_key);
	}
	free(r->hostname);
	strv_free(r->tags, r->ntags);
	free(r->routes);
	memset(r, 0, sizeof(*r));
}

struct json *register_request_to_json(const struct register_request *r)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	put(o, "type", json_new_string("register"), &err);
	if (r->auth_key)
		put(o, "authKey", json_new_string(r->auth_key), &err);
	put(o, "nodeKey", key_json(r->node_key, "nodekey:"), &err);
	put(o, "discoKey", key_json(r->disco_key, "discokey:"), &err);
	if (r->hostname)
		put(o, "hostname", json_new_string(r->hostname), &err);
	put(o, "tags", strv_json(r->tags, r->ntags), &err);
	put(o, "advertiseRoutes", prefixes_json(r->routes, r->nroutes, false), &err);
	if (err) {
		messages_json_free_secret(o);
		return NULL;
	}
	return o;
}

bool register_request_from_json(const struct json *j, struct register_request *out, char *err, size_t errlen)
{
	bool ok;

	memset(out, 0, sizeof(*out));
	ok = want_type(j, "register", err, errlen) &&
	     get_str(j, "", "authKey", false, &out->auth_key, err, errlen) &&
	     get_key(j, "", "nodeKey", "nodekey:", true, out->node_key, NULL, err, errlen) &&
	     get_key(j, "", "discoKey", "discokey:", true, out->disco_key, NULL, err, errlen) &&
	     get_str(j, "", "hostname", false, &out->hostname, err, errlen) &&
	     get_strv(j, "", "tags", true, &out->tags, &out->ntags, err, errlen) &&
	     get_prefixes(j, "", "advertiseRoutes", false, &out->routes, &out->nroutes, err, errlen);
	if (!ok)
		register_request_free(out);
	return ok;
}

void register_response_free(struct register_response *r)
{
	if (!r)
		return;
	free(r->device);
	free(r->name);
	free(r->addresses);
	free(r->dns_suffix);
	memset(r, 0, sizeof(*r));
}

struct json *register_response_to_json(const struct register_response *r)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	if (r->device)
		put(o, "device", json_new_string(r->device), &err);
	if (r->name)
		put(o, "name", json_new_string(r->name), &err);
	put(o, "addresses", prefixes_json(r->addresses, r->naddresses, true), &err);
	put(o, "ephemeral", json_new_bool(r->ephemeral), &err);
	if (r->dns_suffix)
		put(o, "dnsSuffix", json_new_string(r->dns_suffix), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

bool register_response_from_json(const struct json *j, struct register_response *out, char *err, size_t errlen)
{
	bool ok;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return failf(err, errlen, "want a JSON object, got %s", json_type_name(json_type(j)));
	ok = get_str(j, "", "device", true, &out->device, err, errlen) &&
	     get_str(j, "", "name", true, &out->name, err, errlen) &&
	     get_prefixes(j, "", "addresses", true, &out->addresses, &out->naddresses, err, errlen) &&
	     get_bool(j, "", "ephemeral", &out->ephemeral, err, errlen) &&
	     get_str(j, "", "dnsSuffix", false, &out->dns_suffix, err, errlen);
	if (ok && out->naddresses == 0)
		ok = failf(err, errlen, "addresses: empty");
	if (!ok)
		register_response_free(out);
	return ok;
}

void update_request_free(struct update_request *u)
{
	if (!u)
		return;
	free(u->endpoints);
	memset(u, 0, sizeof(*u));
}

static struct json *soft_state_json(const struct update_request *u, const char *type)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	put(o, "type", json_new_string(type), &err);
	put(o, "endpoints", endpoints_json(u->endpoints, u->nendpoints), &err);
	if (u->has_relay)
		put(o, "relay", json_new_int(u->relay), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

struct json *update_request_to_json(const struct update_request *u)
{
	return soft_state_json(u, "update");
}

struct json *map_request_to_json(const struct update_request *u)
{
	return soft_state_json(u, "map");
}

bool update_request_from_json(const struct json *j, struct update_request *out, bool *is_map,
			      char *err, size_t errlen)
{
	const char *t = messages_type(j);
	int64_t relay = 0;
	bool ok;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return failf(err, errlen, "want a JSON object, got %s", json_type_name(json_type(j)));
	if (!t || (strcmp(t, "update") && strcmp(t, "map")))
		return failf(err, errlen, "type: want \"update\" or \"map\"");
	*is_map = strcmp(t, "map") == 0;
	ok = get_endpoints(j, "", &out->endpoints, &out->nendpoints, err, errlen) &&
	     get_int(j, "", "relay", 0, INT32_MAX, &relay, &out->has_relay, err, errlen);
	out->relay = (int)relay;
	if (!ok)
		update_request_free(out);
	return ok;
}

/* ---- shared ------------------------------------------------------------------------ */

const char *messages_type(const struct json *j)
{
	return json_str(json_get(j, "type"));
}

bool messages_error(const struct json *j, const char **code, const char **message)
{
	const struct json *e = json_get(j, "error");

	if (!e)
		return false;
	if (message)
		*message = json_str(e) ? json_str(e) : "";
	if (code)
		*code = json_str(json_get(j, "code")) ? json_str(json_get(j, "code")) : "";
	return true;
}

struct json *messages_error_new(const char *code, const char *message)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	put(o, "error", json_new_string(message), &err);
	put(o, "code", json_new_string(code), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

static void wipe_strings(struct json *j)
{
	size_t len, i;
	const char *key;
	struct json *v;

	switch (json_type(j)) {
	case JSON_STRING: {
		/* Our own tree: the string is writable memory. */
		char *s = (char *)json_strn(j, &len);

		sodium_memzero(s, len);
		break;
	}
	case JSON_ARRAY:
		for (i = 0; i < json_array_len(j); i++)
			wipe_strings(json_array_at(j, i));
		break;
	case JSON_OBJECT:
		json_object_foreach(j, i, key, v)
			wipe_strings(v);
		break;
	default:
		break;
	}
}

void messages_json_free_secret(struct json *j)
{
	wipe_strings(j);
	json_free(j);
}
