/* The objects a fresh install needs (see bootstrap.h): checked and built
 * here as pure functions, created from one thread with the blocking client. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bootstrap.h"
#include "control/channel.h"
#include "ipam.h"
#include "json.h"
#include "kube/client.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "operator.h"
#include "relay/frame.h"

#define MAX_TAGS 32 /* the AuthKey CRD's maxItems */
#define TAG_NAME_MAX 63

static bool fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* One DNS label of n bytes: [a-z0-9]([a-z0-9-]*[a-z0-9])?, at most 63;
 * upper case allowed where tag names allow it. */
static bool label_ok(const char *s, size_t n, bool upper)
{
	if (n < 1 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(islower(c) || isdigit(c) || c == '-' || (upper && isupper(c))))
			return false;
	}
	return true;
}

/* Dot-separated labels, at most max bytes. */
static bool dns_name_ok(const char *s, size_t max)
{
	size_t len = strlen(s);

	if (len < 1 || len > max)
		return false;
	for (const char *p = s;;) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		if (!label_ok(p, n, false))
			return false;
		if (!dot)
			return true;
		p = dot + 1;
	}
}

/* Walks "tag:a,tag:b": calls fn(tag, len) for each; false if fn does. */
static bool each_tag(const char *tags, bool (*fn)(const char *t, size_t n, void *arg), void *arg)
{
	for (const char *p = tags; p && *p;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (!fn(p, n, arg))
			return false;
		p = comma ? comma + 1 : p + n;
	}
	return true;
}

struct tag_check {
	const char *seen[MAX_TAGS];
	size_t seen_len[MAX_TAGS];
	int count;
	char *err;
	size_t errlen;
};

static bool check_tag(const char *t, size_t n, void *arg)
{
	struct tag_check *tc = arg;

	if (n < 5 || strncmp(t, "tag:", 4) != 0 || !label_ok(t + 4, n - 4, true) || n - 4 > TAG_NAME_MAX)
		return fail(tc->err, tc->errlen, "--bootstrap-authkey-tags: \"%.*s\" is not tag:name (letters, digits, '-')",
			    (int)(n > 80 ? 80 : n), t);
	for (int i = 0; i < tc->count; i++)
		if (tc->seen_len[i] == n && memcmp(tc->seen[i], t, n) == 0)
			return fail(tc->err, tc->errlen, "--bootstrap-authkey-tags: \"%.*s\" is listed twice", (int)n, t);
	if (tc->count == MAX_TAGS)
		return fail(tc->err, tc->errlen, "--bootstrap-authkey-tags: more than %d tags", MAX_TAGS);
	tc->seen[tc->count] = t;
	tc->seen_len[tc->count++] = n;
	return true;
}

static bool pool_ok(const char *flag, const char *cidr, int family, char *err, size_t errlen)
{
	struct ipam_pool p;
	char why[128];

	if (!cidr)
		return true;
	if (!ipam_pool_parse(cidr, &p, why, sizeof(why)))
		return fail(err, errlen, "%s: %s", flag, why);
	if (p.family != family)
		return fail(err, errlen, "%s: \"%s\" is not an %s CIDR", flag, cidr, family == AF_INET ? "IPv4" : "IPv6");
	return true;
}

/* "https://HOST[:PORT]", "http://HOST[:PORT]" or "HOST[:PORT]" (an IPv6
 * HOST in brackets), each with an optional "#relaykey:<64 hex>", into host
 * (unbracketed), port, tls and key ("" when none). */
static bool relay_url(const char *url, char *host, size_t hostlen, unsigned *port, bool *tls,
		      char key[RELAY_KEY_TEXT_LEN])
{
	const char *p = url, *end, *hash = strchr(url, '#');
	char buf[512], *e;
	uint8_t bin[RELAY_KEY_LEN];
	size_t n;

	key[0] = '\0';
	if (hash) {
		/* The pinned key: parsed as the relay map will parse it. */
		if (!channel_key_parse(hash + 1, RELAY_KEY_TEXT_PREFIX, bin))
			return false;
		relay_key_text(bin, key);
		if ((size_t)(hash - url) >= sizeof(buf))
			return false;
		memcpy(buf, url, (size_t)(hash - url));
		buf[hash - url] = '\0';
		p = url = buf;
	}
	*tls = true;
	*port = 443;
	if (strncmp(p, "https://", 8) == 0) {
		p += 8;
	} else if (strncmp(p, "http://", 7) == 0) {
		p += 7;
		*tls = false;
		*port = 80;
	} else if (strstr(p, "://")) {
		return false;
	}
	if (*p == '[') {
		if (!(end = strchr(++p, ']')))
			return false;
		n = (size_t)(end - p);
		end++;
	} else {
		end = p + strcspn(p, ":/");
		n = (size_t)(end - p);
	}
	if (n == 0 || n >= hostlen)
		return false;
	memcpy(host, p, n);
	host[n] = '\0';
	if (*end == '/' && end[1] == '\0')
		end++;
	if (*end == ':') {
		unsigned long v;

		errno = 0;
		v = strtoul(end + 1, &e, 10);
		if (errno || e == end + 1 || *e || v < 1 || v > 65535)
			return false;
		*port = (unsigned)v;
	} else if (*end) {
		return false;
	}
	return true;
}

/* The relay map's own checks (relaymap_parse), so a bad flag is refused at
 * start, not by the agents. */
static bool relays_ok(const struct bootstrap_opts *o, char *err, size_t errlen)
{
	struct json *map;
	struct relaymap m;
	char host[256], why[256], key[RELAY_KEY_TEXT_LEN];
	unsigned port;
	bool tls, ok;

	for (size_t i = 0; i < o->nrelays; i++)
		if (!relay_url(o->relays[i], host, sizeof(host), &port, &tls, key))
			return fail(err, errlen, "--default-tailnet-relay: \"%.200s\" is not https://HOST[:PORT], "
					    "http://HOST[:PORT] or HOST[:PORT], with an optional #relaykey:<64 hex>",
				    o->relays[i]);
	if (o->relay_stun_port) {
		char *e;
		unsigned long v;

		errno = 0;
		v = strtoul(o->relay_stun_port, &e, 10);
		if (errno || e == o->relay_stun_port || *e || v > 65535 || o->relay_stun_port[0] == '-')
			return fail(err, errlen, "--default-tailnet-relay-stun-port: \"%s\" is not a port (0-65535)",
				    o->relay_stun_port);
		if (!o->nrelays)
			return fail(err, errlen, "--default-tailnet-relay-stun-port needs --default-tailnet-relay");
	}
	if (!o->nrelays)
		return true;
	if (!(map = bootstrap_relay_map(o)))
		return fail(err, errlen, "--default-tailnet-relay: out of memory");
	ok = relaymap_parse(map, &m, why, sizeof(why));
	json_free(map);
	if (!ok)
		return fail(err, errlen, "--default-tailnet-relay: %s", why);
	relaymap_free(&m);
	return true;
}

bool bootstrap_opts_check(const struct bootstrap_opts *o, char *err, size_t errlen)
{
	struct tag_check tc = { .err = err, .errlen = errlen };
	uint64_t ms;

	if (!pool_ok("--default-tailnet-ipv4-pool", o->ipv4_pool, AF_INET, err, errlen) ||
	    !pool_ok("--default-tailnet-ipv6-pool", o->ipv6_pool, AF_INET6, err, errlen))
		return false;
	if (o->dns_suffix && !dns_name_ok(o->dns_suffix, 200))
		return fail(err, errlen, "--default-tailnet-dns-suffix: \"%s\" is not a lower-case DNS name", o->dns_suffix);
	/* The Secret is <name>-authkey, itself a DNS subdomain of at most 253. */
	if (o->authkey && !dns_name_ok(o->authkey, 253 - strlen("-authkey")))
		return fail(err, errlen, "--bootstrap-authkey: \"%s\" is not a lower-case DNS name of at most 245 bytes",
			    o->authkey);
	if (!each_tag(o->authkey_tags, check_tag, &tc))
		return false;
	if (o->authkey_expiry && !kube_duration_parse(o->authkey_expiry, &ms))
		return fail(err, errlen, "--bootstrap-authkey-expiry: \"%s\" is not a duration (e.g. 8760h; 0s: never)",
			    o->authkey_expiry);
	if (o->relay_mesh_secret && !dns_name_ok(o->relay_mesh_secret, 253))
		return fail(err, errlen, "--bootstrap-relay-mesh-secret: \"%s\" is not a lower-case DNS name",
			    o->relay_mesh_secret);
	return relays_ok(o, err, errlen);
}

static int set_str(struct json *obj, const char *key, const char *v)
{
	return v ? json_object_set(obj, key, json_new_string(v)) : 0;
}

/* Takes ownership of spec. */
static struct json *new_object(const char *kind, const char *name, const char *ns, struct json *spec)
{
	struct json *obj = json_new_object(), *meta = json_new_object(), *labels = json_new_object();

	if (!obj || !meta || !labels || !spec) {
		json_free(obj);
		json_free(meta);
		json_free(labels);
		json_free(spec);
		return NULL;
	}
	/* json_object_set owns what it is given, even on failure: hand all
	 * three over first, so every later failure frees everything with obj. */
	int handed = json_object_set(meta, "labels", labels);
	handed |= json_object_set(obj, "metadata", meta);
	handed |= json_object_set(obj, "spec", spec);
	if (handed || json_object_set(labels, "app.kubernetes.io/managed-by", json_new_string(OPERATOR_MANAGER)) ||
	    json_object_set(labels, "app.kubernetes.io/part-of", json_new_string("knit")) ||
	    set_str(meta, "name", name) || set_str(meta, "namespace", ns) ||
	    json_object_set(obj, "apiVersion", json_new_string(KNIT_API_VERSION)) ||
	    json_object_set(obj, "kind", json_new_string(kind))) {
		json_free(obj);
		return NULL;
	}
	return obj;
}

/* Whether host:port is the embedded relay's listen address (self_listen,
 * "HOST:PORT" or "[V6]:PORT"). */
static bool self_is(const struct bootstrap_opts *o, const char *host, unsigned port)
{
	char h[256], k[RELAY_KEY_TEXT_LEN];
	unsigned p;
	bool tls;

	return o->self_listen && relay_url(o->self_listen, h, sizeof(h), &p, &tls, k) && p == port &&
	       strcmp(h, host) == 0;
}

struct json *bootstrap_relay_map(const struct bootstrap_opts *o)
{
	struct json *map = json_new_object(), *regions = json_new_array(), *region = json_new_object(),
		    *nodes = json_new_array();
	unsigned long stun = o->relay_stun_port ? strtoul(o->relay_stun_port, NULL, 10) : RELAYMAP_DEFAULT_STUN_PORT;
	int err = map && regions && region && nodes && o->nrelays ? 0 : -ENOMEM;

	for (size_t i = 0; !err && i < o->nrelays; i++) {
		struct json *n = json_new_object();
		char host[256], name[8], key[RELAY_KEY_TEXT_LEN];
		unsigned port;
		bool tls;

		if (!relay_url(o->relays[i], host, sizeof(host), &port, &tls, key)) {
			json_free(n);
			err = -EINVAL;
			break;
		}
		snprintf(name, sizeof(name), "1%c", (char)('a' + i)); /* i < 16 */
		err = n ? 0 : -ENOMEM;
		json_put_str(n, "name", name, &err);
		json_put_str(n, "hostName", host, &err);
		json_put(n, "relayPort", json_new_int(port), &err);
		json_put(n, "stunPort", json_new_int((int64_t)stun), &err);
		json_put(n, "tls", json_new_bool(tls), &err);
		/* The embedded relay's own address: its key, unless the URL names one. */
		if (!key[0] && o->self_key && self_is(o, host, port))
			snprintf(key, sizeof(key), "%s", o->self_key);
		if (key[0])
			json_put_str(n, "publicKey", key, &err);
		if (err)
			json_free(n);
		else
			err = json_array_append(nodes, n);
	}
	json_put(region, "id", json_new_int(1), &err);
	json_put_str(region, "code", "default", &err);
	json_put_str(region, "name", "Default", &err);
	json_put(region, "nodes", nodes, &err);
	nodes = NULL;
	if (!err)
		err = json_array_append(regions, region);
	else
		json_free(region);
	region = NULL;
	json_put(map, "regions", regions, &err);
	if (err) {
		json_free(map);
		return NULL;
	}
	return map;
}

struct json *bootstrap_tailnet(const struct bootstrap_opts *o)
{
	struct json *spec = json_new_object();

	if (spec && (set_str(spec, "ipv4Pool", o->ipv4_pool) || set_str(spec, "ipv6Pool", o->ipv6_pool) ||
		     set_str(spec, "dnsSuffix", o->dns_suffix))) {
		json_free(spec);
		return NULL;
	}
	if (spec && o->nrelays && json_object_set(spec, "relayMap", bootstrap_relay_map(o))) {
		json_free(spec);
		return NULL;
	}
	return new_object("Tailnet", "default", NULL, spec);
}

static bool append_tag(const char *t, size_t n, void *arg)
{
	return json_array_append(arg, json_new_stringn(t, n)) == 0;
}

struct json *bootstrap_authkey(const struct bootstrap_opts *o, const char *ns)
{
	struct json *spec = json_new_object(), *tags = json_new_array();

	if (!spec || !tags || !each_tag(o->authkey_tags, append_tag, tags) ||
	    json_object_set(spec, "reusable", json_new_bool(true)) ||
	    json_object_set(spec, "preauthorized", json_new_bool(true)) || set_str(spec, "expiry", o->authkey_expiry ?: "0s")) {
		json_free(tags);
		json_free(spec);
		return NULL;
	}
	if (json_array_len(tags) == 0)
		json_free(tags);
	else if (json_object_set(spec, "tags", tags)) {
		json_free(spec);
		return NULL;
	}
	return new_object("AuthKey", o->authkey, ns, spec);
}

struct json *bootstrap_mesh_secret(const struct bootstrap_opts *o, const char *ns)
{
	uint8_t key[32];
	char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
	struct json *data = json_new_object(), *obj;

	randombytes_buf(key, sizeof(key));
	sodium_bin2base64(b64, sizeof(b64), key, sizeof(key), sodium_base64_VARIANT_ORIGINAL);
	sodium_memzero(key, sizeof(key));
	if (data && json_object_set(data, "mesh-key", json_new_string(b64))) {
		json_free(data);
		data = NULL;
	}
	sodium_memzero(b64, sizeof(b64));
	/* A Secret has data where a custom resource has its spec. */
	obj = new_object("Secret", o->relay_mesh_secret, ns, json_new_object());
	if (!obj) {
		json_free(data);
		return NULL;
	}
	json_object_del(obj, "spec");
	if (json_object_set(obj, "data", data) || json_object_set(obj, "apiVersion", json_new_string("v1"))) {
		json_free(obj);
		return NULL;
	}
	return obj;
}

/* ---- the thread ---- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool started, stop; /* stop: under lock */
	struct operator *op;
	struct bootstrap_opts o;
} boot = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

/* Creates obj unless it exists: 0 when it does now, else a negative errno
 * (logged). A 409 means someone else made it first, which is as good. */
static int create(const struct kube_resource *res, const char *ns, struct json *obj)
{
	struct kube_result r;
	int err;

	if (!obj)
		return -ENOMEM;
	err = kube_create(boot.op->kube, res, ns, obj, &r);
	if (err) {
		log_warn("cannot create", "kind=%s name=%s err=%d", res->kind, kube_name(obj), err);
		goto out;
	}
	if (kube_ok(&r)) {
		log_info("created", "kind=%s namespace=%s name=%s", res->kind, ns ? ns : "", kube_name(obj));
	} else if (r.status != 409) {
		log_warn("cannot create", "kind=%s name=%s status=%ld message=\"%s\"", res->kind, kube_name(obj), r.status,
			 r.message);
		err = -EIO;
	}
	kube_result_clear(&r);
out:
	json_free(obj);
	return err;
}

static bool bootstrapped(void)
{
	struct operator *op = boot.op;
	struct json *ak;
	bool done = true;

	/* Only when no Tailnet at all exists: a cluster that named its own
	 * tailnet wants no "default" next to it. */
	if (op->create_default_tailnet && informer_len(op->tailnets) == 0 &&
	    create(&res_tailnets, NULL, bootstrap_tailnet(&boot.o)))
		done = false;
	if (boot.o.authkey) {
		ak = informer_get(op->authkeys, op->namespace, boot.o.authkey);
		if (!ak && create(&res_authkeys, op->namespace, bootstrap_authkey(&boot.o, op->namespace)))
			done = false;
		json_free(ak);
	}
	if (boot.o.relay_mesh_secret) {
		struct json *sec = informer_get(op->secrets, op->namespace, boot.o.relay_mesh_secret);

		if (!sec && create(&kube_res_secrets, op->namespace, bootstrap_mesh_secret(&boot.o, op->namespace)))
			done = false;
		json_free(sec);
	}
	return done;
}

static void *run(void *arg)
{
	bool stop = false;

	for (unsigned attempt = 0; !stop && !bootstrapped(); attempt++) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += attempt < 5 ? 1 : 10;
		pthread_mutex_lock(&boot.lock);
		while (!boot.stop && pthread_cond_timedwait(&boot.cond, &boot.lock, &until) != ETIMEDOUT)
			;
		stop = boot.stop;
		pthread_mutex_unlock(&boot.lock);
	}
	return NULL;
}

int bootstrap_start(struct operator *op, const struct bootstrap_opts *o)
{
	int err;

	if (boot.started || (!op->create_default_tailnet && !o->authkey && !o->relay_mesh_secret))
		return 0;
	boot.op = op;
	boot.o = *o;
	err = -pthread_create(&boot.thread, NULL, run, NULL);
	if (err)
		log_error("cannot start the bootstrap thread", "err=%d", err);
	boot.started = !err;
	return err;
}

void bootstrap_join(void)
{
	if (!boot.started)
		return;
	pthread_mutex_lock(&boot.lock);
	boot.stop = true;
	pthread_cond_broadcast(&boot.cond);
	pthread_mutex_unlock(&boot.lock);
	pthread_join(boot.thread, NULL);
	boot.started = false;
}
