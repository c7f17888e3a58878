#include "kube/event.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "json.h"
#include "kube/client.h"
#include "log.h"

#define RECENT_SLOTS 128
#define DEFAULT_WINDOW_MS (10u * 60u * 1000u)
#define NAME_MAX_LEN 253 /* DNS subdomain */
#define SUFFIX_LEN 17 /* ".%016x" */

/* An Event we created, so that a repeat can bump its count. */
struct recent {
	bool used;
	uint8_t key[16]; /* BLAKE2b of client, object, type, reason, message */
	char ns[64];
	char name[NAME_MAX_LEN + 1];
	int64_t count;
	uint64_t last_ms; /* CLOCK_MONOTONIC */
};

/* lock guards every static below. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char component[64] = "knit-operator";
static uint32_t window_ms = DEFAULT_WINDOW_MS;
static struct recent recent[RECENT_SLOTS];

void kube_event_set_component(const char *name)
{
	pthread_mutex_lock(&lock);
	snprintf(component, sizeof(component), "%s", name && *name ? name : "knit-operator");
	pthread_mutex_unlock(&lock);
}

void kube_event_set_aggregation(uint32_t ms)
{
	pthread_mutex_lock(&lock);
	window_ms = ms;
	if (!ms)
		memset(recent, 0, sizeof(recent));
	pthread_mutex_unlock(&lock);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* metav1.Time: RFC 3339, seconds, UTC. */
static void rfc3339(char *out, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Cuts at KUBE_EVENT_MAX_MESSAGE on a character boundary and replaces
 * bytes that are not UTF-8 (JSON cannot carry them) with '?'. */
static void sanitize_utf8(char *s)
{
	size_t n = strlen(s), i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 :
			     (c & 0xf8) == 0xf0 ? 4 : 0;
		bool ok = len > 0 && i + len <= n && !(len == 2 && c < 0xc2) && !(c > 0xf4);

		for (size_t k = 1; ok && k < len; k++)
			ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
		if (ok && len == 3) {
			unsigned char c1 = (unsigned char)s[i + 1];
			ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0); /* overlong, surrogates */
		} else if (ok && len == 4) {
			unsigned char c1 = (unsigned char)s[i + 1];
			ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
		}
		if (!ok) {
			if (i + (len ? len : 1) > n && n == KUBE_EVENT_MAX_MESSAGE) {
				s[i] = '\0'; /* a character cut by the length cap */
				return;
			}
			s[i] = '?';
			len = 1;
		}
		i += len;
	}
}

static void hash_part(crypto_generichash_state *st, const char *s)
{
	uint64_t n = s ? strlen(s) : 0;

	crypto_generichash_update(st, (const uint8_t *)&n, sizeof(n));
	if (n)
		crypto_generichash_update(st, (const uint8_t *)s, n);
}

static int api_errno(const struct kube_result *res)
{
	if (res->err)
		return res->err;
	switch (res->status) {
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 409:
		return -EEXIST;
	case 400:
	case 422:
		return -EINVAL;
	default:
		return -EIO;
	}
}

static int set_str(struct json *o, const char *k, const char *v)
{
	return json_object_set(o, k, json_new_string(v));
}

/* Copies a string member of src into dst if present. */
static int copy_str(struct json *dst, const char *k, const struct json *src)
{
	const char *v = json_str(src);

	return v && *v ? set_str(dst, k, v) : 0;
}

static struct json *build_event(const struct json *obj, const char *ns, const char *name,
				const char *type, const char *reason, const char *msg,
				const char *comp, const char *host, const char *now)
{
	const struct json *meta = json_get(obj, "metadata");
	struct json *ev = json_new_object(), *m = json_new_object(), *inv = json_new_object(),
		    *src = json_new_object();
	int err = ev && m && inv && src ? 0 : -ENOMEM;

	err = err ?: set_str(ev, "apiVersion", "v1");
	err = err ?: set_str(ev, "kind", "Event");
	err = err ?: set_str(m, "name", name);
	err = err ?: set_str(m, "namespace", ns);
	err = err ?: copy_str(inv, "apiVersion", json_get(obj, "apiVersion"));
	err = err ?: copy_str(inv, "kind", json_get(obj, "kind"));
	err = err ?: copy_str(inv, "name", json_get(meta, "name"));
	err = err ?: copy_str(inv, "namespace", json_get(meta, "namespace"));
	err = err ?: copy_str(inv, "uid", json_get(meta, "uid"));
	err = err ?: copy_str(inv, "resourceVersion", json_get(meta, "resourceVersion"));
	err = err ?: set_str(src, "component", comp);
	if (!err) {
		err = json_object_set(ev, "metadata", m);
		m = NULL;
	}
	if (!err) {
		err = json_object_set(ev, "involvedObject", inv);
		inv = NULL;
	}
	err = err ?: set_str(ev, "reason", reason);
	err = err ?: set_str(ev, "message", msg);
	err = err ?: set_str(ev, "type", type);
	if (!err) {
		err = json_object_set(ev, "source", src);
		src = NULL;
	}
	err = err ?: set_str(ev, "firstTimestamp", now);
	err = err ?: set_str(ev, "lastTimestamp", now);
	err = err ?: json_object_set(ev, "count", json_new_int(1));
	err = err ?: set_str(ev, "reportingComponent", comp);
	err = err ?: set_str(ev, "reportingInstance", host);
	json_free(src);
	json_free(inv);
	json_free(m);
	if (err) {
		json_free(ev);
		return NULL;
	}
	return ev;
}

/* A repeat within the window: count+1 and lastTimestamp on the Event we
 * made. Returns 0, -ENOENT when there is none to bump, or an error. */
static int bump_recent(struct kube_client *c, const uint8_t key[16], const char *now)
{
	struct recent r = { 0 };
	struct kube_result res = { 0 };
	struct json *patch = NULL;
	uint64_t t = mono_ms();
	int err = -ENOENT, i;

	pthread_mutex_lock(&lock);
	for (i = 0; i < RECENT_SLOTS; i++) {
		if (recent[i].used && memcmp(recent[i].key, key, 16) == 0) {
			if (t - recent[i].last_ms < window_ms) {
				recent[i].count++;
				recent[i].last_ms = t;
				r = recent[i];
			} else {
				recent[i].used = false;
			}
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	if (!r.used)
		goto out;

	patch = json_new_object();
	err = patch ? 0 : -ENOMEM;
	err = err ?: json_object_set(patch, "count", json_new_int(r.count));
	err = err ?: set_str(patch, "lastTimestamp", now);
	err = err ?: kube_patch(c, &kube_res_events, r.ns, r.name, KUBE_PATCH_MERGE, patch, false, &res);
	if (!err && !kube_ok(&res))
		err = api_errno(&res);
	if (err) {
		/* Expired or deleted: forget it and create a fresh Event. */
		pthread_mutex_lock(&lock);
		for (i = 0; i < RECENT_SLOTS; i++)
			if (recent[i].used && memcmp(recent[i].key, key, 16) == 0)
				recent[i].used = false;
		pthread_mutex_unlock(&lock);
	}
out:
	kube_result_clear(&res);
	json_free(patch);
	return err;
}

static void remember(const uint8_t key[16], const char *ns, const char *name)
{
	uint64_t t = mono_ms();
	int slot = 0;

	pthread_mutex_lock(&lock);
	if (window_ms) {
		/* A free slot, else the least recently used. */
		for (int i = 0; i < RECENT_SLOTS; i++) {
			if (!recent[i].used) {
				slot = i;
				break;
			}
			if (recent[i].last_ms < recent[slot].last_ms)
				slot = i;
		}
		recent[slot] = (struct recent){ .used = true, .count = 1, .last_ms = t };
		memcpy(recent[slot].key, key, 16);
		snprintf(recent[slot].ns, sizeof(recent[slot].ns), "%s", ns);
		snprintf(recent[slot].name, sizeof(recent[slot].name), "%s", name);
	}
	pthread_mutex_unlock(&lock);
}

int kube_event_emit(struct kube_client *c, const struct json *obj, const char *type,
		    const char *reason, const char *fmt, ...)
{
	const struct json *meta = json_get(obj, "metadata");
	const char *objname = json_str(json_get(meta, "name"));
	const char *objns = json_str(json_get(meta, "namespace"));
	const char *kind = json_str(json_get(obj, "kind"));
	char msg[KUBE_EVENT_MAX_MESSAGE + 1], comp[64], host[64], now[32];
	char name[NAME_MAX_LEN + 1];
	const char *ns = objns && *objns ? objns : "default";
	struct kube_result res = { 0 };
	struct json *ev = NULL;
	crypto_generichash_state st;
	uint8_t key[16];
	struct timespec ts;
	uint64_t suffix;
	bool aggregate;
	va_list ap;
	int err;

	if (!objname || !*objname || !kind || !*kind || !type || !reason)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sanitize_utf8(msg);
	rfc3339(now, sizeof(now));
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	pthread_mutex_lock(&lock);
	memcpy(comp, component, sizeof(comp));
	aggregate = window_ms > 0;
	pthread_mutex_unlock(&lock);

	crypto_generichash_init(&st, NULL, 0, sizeof(key));
	crypto_generichash_update(&st, (const uint8_t *)&c, sizeof(c));
	hash_part(&st, ns);
	hash_part(&st, kind);
	hash_part(&st, objname);
	hash_part(&st, json_str(json_get(meta, "uid")));
	hash_part(&st, type);
	hash_part(&st, reason);
	hash_part(&st, msg);
	crypto_generichash_final(&st, key, sizeof(key));

	if (aggregate) {
		err = bump_recent(c, key, now);
		if (err != -ENOENT)
			goto out;
	}

	/* client-go names Events "<name>.<UnixNano in hex>"; the low bits
	 * are randomised so that two workers in the same nanosecond differ. */
	clock_gettime(CLOCK_REALTIME, &ts);
	suffix = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) & ~(uint64_t)0xffff;
	suffix |= randombytes_uniform(0x10000);
	snprintf(name, sizeof(name), "%.*s.%016" PRIx64, NAME_MAX_LEN - SUFFIX_LEN, objname, suffix);

	ev = build_event(obj, ns, name, type, reason, msg, comp, host, now);
	if (!ev) {
		err = -ENOMEM;
		goto out;
	}
	err = kube_create(c, &kube_res_events, ns, ev, &res);
	if (!err && !kube_ok(&res))
		err = api_errno(&res);
	if (err) {
		log_warn("event not recorded", "ns=%s object=%s/%s reason=%s status=%ld err=%d", ns, kind,
			 objname, reason, res.status, err);
		goto out;
	}
	if (aggregate)
		remember(key, ns, name);
out:
	kube_result_clear(&res);
	json_free(ev);
	return err;
}
