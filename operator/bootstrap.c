/* The objects a fresh install needs (see bootstrap.h): checked and built
 * here as pure functions, created from one thread with the blocking client. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bootstrap.h"
#include "ipam.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "operator.h"

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
	if (o->authkey_expiry && (!kube_duration_parse(o->authkey_expiry, &ms) || ms == 0))
		return fail(err, errlen, "--bootstrap-authkey-expiry: \"%s\" is not a positive duration (e.g. 8760h)",
			    o->authkey_expiry);
	return true;
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

struct json *bootstrap_tailnet(const struct bootstrap_opts *o)
{
	struct json *spec = json_new_object();

	if (spec && (set_str(spec, "ipv4Pool", o->ipv4_pool) || set_str(spec, "ipv6Pool", o->ipv6_pool) ||
		     set_str(spec, "dnsSuffix", o->dns_suffix))) {
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
	    json_object_set(spec, "preauthorized", json_new_bool(true)) || set_str(spec, "expiry", o->authkey_expiry)) {
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

	if (boot.started || (!op->create_default_tailnet && !o->authkey))
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
