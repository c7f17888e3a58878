/* Informers: a local, always-converging copy of one resource type.
 *
 * List, then watch from the list's resourceVersion; the watch body is parsed
 * incrementally as it streams. Bookmarks advance the resourceVersion. A 410
 * Gone (the version was compacted away) relists and delivers the
 * differences as add/update/delete, so nothing is missed and nothing is
 * delivered twice. Transport failures reconnect with exponential backoff
 * and jitter.
 *
 * Threads: the informer runs on its client's loop; handlers are called
 * there, after the cache has changed. The cache may be read from any
 * thread (a read-write lock guards it); reads return copies. Cached
 * objects lack metadata.managedFields (the API server's bookkeeping: no
 * reconciler reads it, and it is most of a small object's bytes). */
#ifndef KNIT_KUBE_INFORMER_H
#define KNIT_KUBE_INFORMER_H

#include <stdbool.h>
#include <stddef.h>

struct json;
struct kube_client;
struct kube_resource;
struct informer;

struct informer_handlers {
	void (*on_add)(struct informer *inf, const struct json *obj, void *arg);
	void (*on_update)(struct informer *inf, const struct json *old, const struct json *obj, void *arg);
	void (*on_delete)(struct informer *inf, const struct json *obj, void *arg);
	/* After every complete list (the first one means "synced"). */
	void (*on_synced)(struct informer *inf, void *arg);
};

/* Index function: writes up to max values for obj into values (pointers
 * into obj, valid while obj is) and returns how many. */
typedef int (*informer_index_fn)(const struct json *obj, const char **values, int max);

#define INFORMER_MAX_INDEXES 4
#define INFORMER_MAX_INDEX_VALUES 16

/* ns NULL: all namespaces (or a cluster-scoped type). label_selector may be
 * NULL. Handlers may be NULL. */
struct informer *informer_new(struct kube_client *c, const struct kube_resource *res,
			      const char *ns, const char *label_selector,
			      const struct informer_handlers *h, void *arg);
/* Before informer_start(). -ENOSPC beyond INFORMER_MAX_INDEXES. */
int informer_add_index(struct informer *inf, const char *name, informer_index_fn fn);
/* Loop thread. */
int informer_start(struct informer *inf);
/* Loop thread; stops the watch and frees everything. */
void informer_free(struct informer *inf);

/* ---- any thread ---- */
bool informer_synced(struct informer *inf);
size_t informer_len(struct informer *inf);
/* A copy of the cached object (caller frees), or NULL. */
struct json *informer_get(struct informer *inf, const char *ns, const char *name);
/* Calls fn for every object (under the read lock: fn must not call back
 * into this informer's writers, and should be quick). */
void informer_foreach(struct informer *inf, void (*fn)(const struct json *obj, void *arg), void *arg);
/* Calls fn for the objects whose index `index` yields `value`. -ENOENT
 * for an unknown index. */
int informer_foreach_indexed(struct informer *inf, const char *index, const char *value,
			     void (*fn)(const struct json *obj, void *arg), void *arg);
/* How many objects index `index` files under `value` (0 if none); -ENOENT
 * for an unknown index. Constant time: counting by index instead of
 * walking the cache is what keeps per-event work small at 10,000s of
 * objects. */
long informer_index_count(struct informer *inf, const char *index, const char *value);
/* Counters for metrics. */
void informer_stats(struct informer *inf, unsigned long *watch_restarts, unsigned long *relists,
		    unsigned long *events);
/* Counts watch restarts, relists and events into these series too (any
 * may be NULL). Before informer_start(). */
struct metric;
void informer_set_metrics(struct informer *inf, struct metric *restarts, struct metric *relists,
			  struct metric *events);
/* The last resourceVersion seen ("" before the first list). Copies into out. */
void informer_resource_version(struct informer *inf, char *out, size_t outlen);

/* ---- the I/O-free core, also used by the unit tests ---- */

/* Feeds watch-stream bytes (any split). Returns 0, -EBADMSG for a malformed
 * stream or event, or -ESTALE when the server said the version is gone (410
 * as an ERROR event): the caller must relist. Events before the bad one
 * are applied. */
int informer_feed(struct informer *inf, const void *data, size_t len);
/* Ends the current watch stream's parser (a new watch starts a new one). */
void informer_reset_stream(struct informer *inf);
/* Replaces the cache with a List's items (takes ownership of list),
 * delivering adds, updates (changed resourceVersion) and deletes, then
 * on_synced. -EBADMSG if list is not a List. */
int informer_replace(struct informer *inf, struct json *list);

#endif
