#include "kube/informer.h"
#include "kube/meta.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "buf.h"
#include "http.h"
#include "json.h"
#include "kube/client.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "strmap.h"

#define WATCH_TIMEOUT_S 290 /* the server ends watches; we re-watch at once */
#define WATCH_STALL_MS ((WATCH_TIMEOUT_S + 30) * 1000u)
#define MAX_EVENT_BYTES (16u << 20)
#define LIST_PAGE 500
#define BACKOFF_MIN_MS 200u
#define BACKOFF_MAX_MS 30000u

struct index {
	char name[32];
	informer_index_fn fn;
	struct strmap *values; /* value -> strmap of object keys (set) */
};

enum state { IDLE, LISTING, WATCHING, WAITING };

struct informer {
	struct kube_client *client;
	const struct kube_resource *res;
	char *ns, *selector;
	struct informer_handlers h;
	void *arg;

	/* lock guards objects, indexes' contents, rv, synced. Written on the
	 * loop thread only, so the loop thread reads without it. */
	pthread_rwlock_t lock;
	struct strmap *objects; /* key -> struct json * */
	struct index indexes[INFORMER_MAX_INDEXES];
	int nindexes;
	char rv[64];
	bool synced;

	/* Loop thread only: */
	enum state state;
	struct json_stream *stream;
	struct http_request *watch;
	struct loop_timer *retry;
	struct json *pending_list; /* pages gathered so far */
	char *continue_token;
	bool relist_needed;
	uint32_t backoff_ms;
	unsigned long restarts, relists, events;
	struct metric *m_restarts, *m_relists, *m_events;
	bool freeing;
};

static void start_list(struct informer *inf);

/* Secrets are wiped from memory as they are let go (auth keys, the
 * control key); other kinds are plain trees. */
static void drop(const struct informer *inf, struct json *j)
{
	if (inf->res == &kube_res_secrets)
		json_free_secret(j);
	else
		json_free(j);
}
static void start_watch(struct informer *inf);

static const char *object_rv(const struct json *obj)
{
	return json_str(json_path(obj, "metadata", "resourceVersion", NULL));
}

/* ---- cache and indexes (loop thread, write lock held) ---- */

static void index_remove(struct informer *inf, const char *key, const struct json *obj)
{
	for (int i = 0; i < inf->nindexes; i++) {
		const char *vals[INFORMER_MAX_INDEX_VALUES];
		int n = inf->indexes[i].fn(obj, vals, INFORMER_MAX_INDEX_VALUES);
		for (int k = 0; k < n; k++) {
			struct strmap *set = strmap_get(inf->indexes[i].values, vals[k]);
			if (!set)
				continue;
			strmap_del(set, key);
			if (strmap_len(set) == 0) {
				strmap_del(inf->indexes[i].values, vals[k]);
				strmap_free(set);
			}
		}
	}
}

static int index_add(struct informer *inf, const char *key, const struct json *obj)
{
	for (int i = 0; i < inf->nindexes; i++) {
		const char *vals[INFORMER_MAX_INDEX_VALUES];
		int n = inf->indexes[i].fn(obj, vals, INFORMER_MAX_INDEX_VALUES);
		for (int k = 0; k < n; k++) {
			struct strmap *set = strmap_get(inf->indexes[i].values, vals[k]);
			if (!set) {
				set = strmap_new();
				if (!set || strmap_set(inf->indexes[i].values, vals[k], set, NULL)) {
					strmap_free(set);
					return -ENOMEM;
				}
			}
			if (strmap_set(set, key, (void *)1, NULL))
				return -ENOMEM;
		}
	}
	return 0;
}

/* Takes ownership of obj. *old receives the replaced object (caller frees). */
static int cache_put(struct informer *inf, const char *key, struct json *obj, struct json **old)
{
	void *prev = NULL;
	int err;

	pthread_rwlock_wrlock(&inf->lock);
	prev = strmap_get(inf->objects, key);
	if (prev)
		index_remove(inf, key, prev);
	err = strmap_set(inf->objects, key, obj, NULL);
	if (!err)
		err = index_add(inf, key, obj);
	else if (prev)
		index_add(inf, key, prev); /* restore */
	pthread_rwlock_unlock(&inf->lock);
	if (err) {
		drop(inf, obj);
		*old = NULL;
		return err;
	}
	*old = prev;
	return 0;
}

static struct json *cache_del(struct informer *inf, const char *key)
{
	struct json *prev;

	pthread_rwlock_wrlock(&inf->lock);
	prev = strmap_del(inf->objects, key);
	if (prev)
		index_remove(inf, key, prev);
	pthread_rwlock_unlock(&inf->lock);
	return prev;
}

static void set_rv(struct informer *inf, const char *rv)
{
	if (!rv)
		return;
	pthread_rwlock_wrlock(&inf->lock);
	snprintf(inf->rv, sizeof(inf->rv), "%s", rv);
	pthread_rwlock_unlock(&inf->lock);
}

/* Applies one upsert; takes ownership of obj. */
static int upsert(struct informer *inf, struct json *obj)
{
	char key[512];
	struct json *old;
	const char *rv = object_rv(obj);
	int err = kube_key(obj, key, sizeof(key));

	if (err) {
		drop(inf, obj);
		return err;
	}
	/* No reconciler reads managedFields, and on small objects it is
	 * most of the bytes: the cache drops it (as controller-runtime
	 * caches are usually told to). */
	json_object_del(json_get(obj, "metadata"), "managedFields");
	old = strmap_get(inf->objects, key);
	if (old && rv && object_rv(old) && strcmp(rv, object_rv(old)) == 0) {
		drop(inf, obj); /* same version: nothing happened */
		return 0;
	}
	err = cache_put(inf, key, obj, &old);
	if (err)
		return err;
	if (old) {
		if (inf->h.on_update)
			inf->h.on_update(inf, old, obj, inf->arg);
		drop(inf, old);
	} else if (inf->h.on_add) {
		inf->h.on_add(inf, obj, inf->arg);
	}
	return 0;
}

static int remove_obj(struct informer *inf, const struct json *obj)
{
	char key[512];
	struct json *old;
	int err = kube_key(obj, key, sizeof(key));

	if (err)
		return err;
	old = cache_del(inf, key);
	if (old) {
		/* Report the final state the server sent, not our older copy. */
		if (inf->h.on_delete)
			inf->h.on_delete(inf, obj, inf->arg);
		drop(inf, old);
	}
	return 0;
}

/* ---- watch events ---- */

static bool on_event(struct json *ev, void *arg)
{
	struct informer *inf = arg;
	const char *type = json_str(json_get(ev, "type"));
	struct json *obj = json_get(ev, "object");
	int err = 0;

	if (!type || !json_is_object(obj)) {
		log_warn("watch event without type or object", "resource=%s", inf->res->plural);
		drop(inf, ev);
		return false;
	}
	inf->events++;
	metrics_inc(inf->m_events);
	if (strcmp(type, "ADDED") == 0 || strcmp(type, "MODIFIED") == 0) {
		struct json *copy = json_clone(obj);
		err = copy ? upsert(inf, copy) : -ENOMEM;
		if (!err)
			set_rv(inf, object_rv(obj));
	} else if (strcmp(type, "DELETED") == 0) {
		err = remove_obj(inf, obj);
		if (!err)
			set_rv(inf, object_rv(obj));
	} else if (strcmp(type, "BOOKMARK") == 0) {
		set_rv(inf, object_rv(obj));
	} else if (strcmp(type, "ERROR") == 0) {
		/* A Status: 410 means our resourceVersion was compacted away. */
		long code = (long)json_int(json_get(obj, "code"), 0);
		log_info("watch error event", "resource=%s code=%ld reason=%s", inf->res->plural, code,
			 json_str(json_get(obj, "reason")) ?: "?");
		inf->relist_needed = code == 410 || strcmp(json_str(json_get(obj, "reason")) ?: "", "Expired") == 0 ||
				     strcmp(json_str(json_get(obj, "reason")) ?: "", "Gone") == 0;
		drop(inf, ev);
		return false;
	} else {
		log_warn("unknown watch event type", "resource=%s type=%s", inf->res->plural, type);
		err = -EBADMSG;
	}
	drop(inf, ev);
	if (err)
		log_warn("watch event not applied", "resource=%s err=%d", inf->res->plural, err);
	return true;
}

int informer_feed(struct informer *inf, const void *data, size_t len)
{
	struct json_error jerr;

	if (!inf->stream) {
		inf->stream = json_stream_new(MAX_EVENT_BYTES, on_event, inf);
		if (!inf->stream)
			return -ENOMEM;
	}
	inf->relist_needed = false;
	if (!json_stream_feed(inf->stream, data, len, &jerr)) {
		json_stream_free(inf->stream);
		inf->stream = NULL;
		if (inf->relist_needed)
			return -ESTALE;
		log_warn("watch stream rejected", "resource=%s line=%zu column=%zu error=\"%s\"", inf->res->plural,
			 jerr.line, jerr.column, jerr.msg);
		return -EBADMSG;
	}
	return 0;
}

void informer_reset_stream(struct informer *inf)
{
	json_stream_free(inf->stream);
	inf->stream = NULL;
}

int informer_replace(struct informer *inf, struct json *list)
{
	struct json *items = json_get(list, "items");
	struct strmap *seen = NULL;
	char **gone = NULL;
	size_t ngone = 0;
	char key[512];
	int err = 0;

	if (!json_is_array(items) && !json_is_null(items)) {
		err = -EBADMSG;
		goto out;
	}
	seen = strmap_new();
	if (!seen) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < json_array_len(items); i++) {
		struct json *item = json_array_at(items, i);
		if (kube_key(item, key, sizeof(key)) != 0)
			continue;
		if (strmap_set(seen, key, (void *)1, NULL)) {
			err = -ENOMEM;
			goto out;
		}
		struct json *copy = json_clone(item);
		if (!copy) {
			err = -ENOMEM;
			goto out;
		}
		upsert(inf, copy);
	}
	/* What the list no longer has was deleted while we were not watching. */
	gone = calloc(strmap_len(inf->objects) + 1, sizeof(*gone));
	if (!gone) {
		err = -ENOMEM;
		goto out;
	}
	for (struct strmap_entry *e = strmap_first(inf->objects); e; e = strmap_next(inf->objects, e))
		if (!strmap_has(seen, strmap_key(e)) && !(gone[ngone++] = strdup(strmap_key(e))))
			ngone--;
	for (size_t i = 0; i < ngone; i++) {
		struct json *old = cache_del(inf, gone[i]);
		if (old && inf->h.on_delete)
			inf->h.on_delete(inf, old, inf->arg);
		drop(inf, old);
	}
	set_rv(inf, json_str(json_path(list, "metadata", "resourceVersion", NULL)));
	pthread_rwlock_wrlock(&inf->lock);
	inf->synced = true;
	pthread_rwlock_unlock(&inf->lock);
	if (inf->h.on_synced)
		inf->h.on_synced(inf, inf->arg);
out:
	for (size_t i = 0; i < ngone; i++)
		free(gone[i]);
	free(gone);
	strmap_free(seen);
	drop(inf, list);
	return err;
}

/* ---- the list/watch state machine (loop thread) ---- */

static void schedule(struct informer *inf, bool relist)
{
	uint32_t jitter;

	inf->state = WAITING;
	inf->relist_needed = relist;
	inf->backoff_ms = inf->backoff_ms ? inf->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (inf->backoff_ms > BACKOFF_MAX_MS)
		inf->backoff_ms = BACKOFF_MAX_MS;
	/* Full jitter on the upper half: many informers must not reconnect in step. */
	jitter = randombytes_uniform(inf->backoff_ms / 2 + 1);
	loop_timer_arm(inf->retry, inf->backoff_ms / 2 + jitter);
}

static void on_retry(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct informer *inf = arg;

	if (inf->relist_needed || !*inf->rv)
		start_list(inf);
	else
		start_watch(inf);
}

static void on_list_page(struct kube_result *res, void *arg)
{
	struct informer *inf = arg;
	const char *cont;

	if (inf->state != LISTING)
		return;
	if (!kube_ok(res)) {
		log_warn("list failed", "resource=%s status=%ld reason=%s message=\"%s\"", inf->res->plural,
			 res->status, res->reason, res->message);
		drop(inf, inf->pending_list);
		inf->pending_list = NULL;
		free(inf->continue_token);
		inf->continue_token = NULL;
		schedule(inf, true);
		return;
	}
	if (!inf->pending_list) {
		inf->pending_list = kube_result_take(res);
	} else {
		struct json *items = json_get(inf->pending_list, "items");
		struct json *more = json_get(res->obj, "items");
		for (size_t i = 0; i < json_array_len(more); i++)
			json_array_append(items, json_clone(json_array_at(more, i)));
	}
	cont = json_str(json_path(res->obj ? res->obj : inf->pending_list, "metadata", "continue", NULL));
	free(inf->continue_token);
	inf->continue_token = cont && *cont ? strdup(cont) : NULL;
	if (inf->continue_token) {
		start_list(inf);
		return;
	}
	inf->relists++;
	metrics_inc(inf->m_relists);
	struct json *list = inf->pending_list;
	inf->pending_list = NULL;
	if (informer_replace(inf, list) != 0) {
		schedule(inf, true);
		return;
	}
	inf->backoff_ms = 0;
	log_debug("listed", "resource=%s count=%zu rv=%s", inf->res->plural, strmap_len(inf->objects), inf->rv);
	start_watch(inf);
}

static void start_list(struct informer *inf)
{
	struct buf q = BUF_INIT(8192);
	char path[1024], limit[16];
	int err;

	inf->state = LISTING;
	snprintf(limit, sizeof(limit), "%d", LIST_PAGE);
	err = kube_path(path, sizeof(path), inf->res, inf->ns, NULL, NULL);
	if (!err)
		err = kube_query_add(&q, "limit", limit);
	if (!err && inf->selector)
		err = kube_query_add(&q, "labelSelector", inf->selector);
	if (!err && inf->continue_token)
		err = kube_query_add(&q, "continue", inf->continue_token);
	if (!err)
		err = kube_request_async(inf->client, "GET", path, buf_str(&q), NULL, NULL, on_list_page, inf);
	buf_free(&q);
	if (err) {
		log_warn("cannot start list", "resource=%s err=%d", inf->res->plural, err);
		schedule(inf, true);
	}
}

static int on_watch_headers(struct http_request *r, long status, void *arg)
{
	struct informer *inf = arg;

	if (status == 200)
		return 0;
	/* 410 Gone: the resourceVersion is too old; anything else: retry. */
	inf->relist_needed = status == 410;
	log_info("watch refused", "resource=%s status=%ld", inf->res->plural, status);
	return -EPROTO;
}

static int on_watch_data(struct http_request *r, const void *data, size_t len, void *arg)
{
	struct informer *inf = arg;
	int err = informer_feed(inf, data, len);

	if (err == -ESTALE)
		inf->relist_needed = true;
	return err;
}

static void on_watch_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct informer *inf = arg;
	bool relist = inf->relist_needed;

	inf->watch = NULL;
	informer_reset_stream(inf);
	if (inf->freeing)
		return;
	inf->restarts++;
	metrics_inc(inf->m_restarts);
	if (res->err == 0 && res->status == 200 && !relist) {
		/* The server ended the watch (timeoutSeconds): continue at once. */
		start_watch(inf);
		return;
	}
	log_info("watch ended", "resource=%s status=%ld err=%d relist=%s", inf->res->plural, res->status,
		 res->err, relist ? "yes" : "no");
	schedule(inf, relist);
}

static void start_watch(struct informer *inf)
{
	struct buf q = BUF_INIT(8192);
	char path[1024], timeout[16];
	int err;

	inf->state = WATCHING;
	inf->relist_needed = false;
	informer_reset_stream(inf);
	snprintf(timeout, sizeof(timeout), "%d", WATCH_TIMEOUT_S);
	err = kube_path(path, sizeof(path), inf->res, inf->ns, NULL, NULL);
	if (!err)
		err = buf_add_str(&q, "watch=1&allowWatchBookmarks=true");
	if (!err)
		err = kube_query_add(&q, "resourceVersion", inf->rv);
	if (!err)
		err = kube_query_add(&q, "timeoutSeconds", timeout);
	if (!err && inf->selector)
		err = kube_query_add(&q, "labelSelector", inf->selector);
	if (!err)
		err = kube_stream_async(inf->client, path, buf_str(&q), WATCH_STALL_MS, on_watch_headers,
					on_watch_data, on_watch_done, inf, &inf->watch);
	buf_free(&q);
	if (err) {
		log_warn("cannot start watch", "resource=%s err=%d", inf->res->plural, err);
		schedule(inf, false);
	}
}

/* ---- lifecycle ---- */

struct informer *informer_new(struct kube_client *c, const struct kube_resource *res,
			      const char *ns, const char *label_selector,
			      const struct informer_handlers *h, void *arg)
{
	struct informer *inf = calloc(1, sizeof(*inf));

	if (!inf)
		return NULL;
	inf->client = c;
	inf->res = res;
	inf->arg = arg;
	if (h)
		inf->h = *h;
	pthread_rwlock_init(&inf->lock, NULL);
	inf->ns = ns ? strdup(ns) : NULL;
	inf->selector = label_selector ? strdup(label_selector) : NULL;
	inf->objects = strmap_new();
	inf->retry = loop_timer_new(kube_client_loop(c), on_retry, inf);
	if (!inf->objects || !inf->retry || (ns && !inf->ns) || (label_selector && !inf->selector)) {
		informer_free(inf);
		return NULL;
	}
	return inf;
}

int informer_add_index(struct informer *inf, const char *name, informer_index_fn fn)
{
	struct index *ix;

	if (inf->nindexes >= INFORMER_MAX_INDEXES)
		return -ENOSPC;
	ix = &inf->indexes[inf->nindexes];
	snprintf(ix->name, sizeof(ix->name), "%s", name);
	ix->fn = fn;
	ix->values = strmap_new();
	if (!ix->values)
		return -ENOMEM;
	inf->nindexes++;
	return 0;
}

int informer_start(struct informer *inf)
{
	if (inf->state != IDLE)
		return -EALREADY;
	start_list(inf);
	return 0;
}

void informer_free(struct informer *inf)
{
	if (!inf)
		return;
	inf->freeing = true;
	if (inf->watch)
		http_request_cancel(inf->watch);
	kube_cancel(inf->client, inf); /* a list page in flight */
	loop_timer_free(inf->retry);
	informer_reset_stream(inf);
	drop(inf, inf->pending_list);
	free(inf->continue_token);
	if (inf->objects) {
		for (struct strmap_entry *e = strmap_first(inf->objects); e; e = strmap_next(inf->objects, e))
			drop(inf, strmap_value(e));
		strmap_free(inf->objects);
	}
	for (int i = 0; i < inf->nindexes; i++) {
		struct strmap *vals = inf->indexes[i].values;
		for (struct strmap_entry *e = strmap_first(vals); e; e = strmap_next(vals, e))
			strmap_free(strmap_value(e));
		strmap_free(vals);
	}
	pthread_rwlock_destroy(&inf->lock);
	free(inf->ns);
	free(inf->selector);
	free(inf);
}

bool informer_synced(struct informer *inf)
{
	bool s;

	pthread_rwlock_rdlock(&inf->lock);
	s = inf->synced;
	pthread_rwlock_unlock(&inf->lock);
	return s;
}

size_t informer_len(struct informer *inf)
{
	size_t n;

	pthread_rwlock_rdlock(&inf->lock);
	n = strmap_len(inf->objects);
	pthread_rwlock_unlock(&inf->lock);
	return n;
}

struct json *informer_get(struct informer *inf, const char *ns, const char *name)
{
	char key[512];
	struct json *copy = NULL;
	int n = ns && *ns ? snprintf(key, sizeof(key), "%s/%s", ns, name) : snprintf(key, sizeof(key), "%s", name);

	if (n < 0 || (size_t)n >= sizeof(key))
		return NULL;
	pthread_rwlock_rdlock(&inf->lock);
	copy = json_clone(strmap_get(inf->objects, key));
	pthread_rwlock_unlock(&inf->lock);
	return copy;
}

void informer_foreach(struct informer *inf, void (*fn)(const struct json *obj, void *arg), void *arg)
{
	pthread_rwlock_rdlock(&inf->lock);
	for (struct strmap_entry *e = strmap_first(inf->objects); e; e = strmap_next(inf->objects, e))
		fn(strmap_value(e), arg);
	pthread_rwlock_unlock(&inf->lock);
}

/* The keys index `index` files under value (NULL if none), or -ENOENT in
 * *err for an unknown index. Read lock held. */
static struct strmap *index_set(struct informer *inf, const char *index, const char *value, int *err)
{
	for (int i = 0; i < inf->nindexes; i++) {
		if (strcmp(inf->indexes[i].name, index) == 0) {
			*err = 0;
			return strmap_get(inf->indexes[i].values, value);
		}
	}
	*err = -ENOENT;
	return NULL;
}

int informer_foreach_indexed(struct informer *inf, const char *index, const char *value,
			     void (*fn)(const struct json *obj, void *arg), void *arg)
{
	struct strmap *set;
	int err;

	pthread_rwlock_rdlock(&inf->lock);
	set = index_set(inf, index, value, &err);
	for (struct strmap_entry *e = set ? strmap_first(set) : NULL; e; e = strmap_next(set, e)) {
		struct json *obj = strmap_get(inf->objects, strmap_key(e));
		if (obj)
			fn(obj, arg);
	}
	pthread_rwlock_unlock(&inf->lock);
	return err;
}

long informer_index_count(struct informer *inf, const char *index, const char *value)
{
	struct strmap *set;
	long n;
	int err;

	pthread_rwlock_rdlock(&inf->lock);
	set = index_set(inf, index, value, &err);
	n = err ? err : set ? (long)strmap_len(set) : 0;
	pthread_rwlock_unlock(&inf->lock);
	return n;
}

void informer_stats(struct informer *inf, unsigned long *watch_restarts, unsigned long *relists,
		    unsigned long *events)
{
	*watch_restarts = inf->restarts;
	*relists = inf->relists;
	*events = inf->events;
}

void informer_set_metrics(struct informer *inf, struct metric *restarts, struct metric *relists,
			  struct metric *events)
{
	inf->m_restarts = restarts;
	inf->m_relists = relists;
	inf->m_events = events;
}

void informer_resource_version(struct informer *inf, char *out, size_t outlen)
{
	pthread_rwlock_rdlock(&inf->lock);
	snprintf(out, outlen, "%s", inf->rv);
	pthread_rwlock_unlock(&inf->lock);
}
