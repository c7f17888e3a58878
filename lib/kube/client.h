/* The Kubernetes API client knit needs, hand-written over lib/http and
 * lib/json. Requests run on the event loop (kube_*_async, callbacks on the
 * loop thread); worker threads use the blocking kube_* calls, which post
 * the request to the loop and wait, so reconcilers read as straight-line
 * code while one loop owns every connection.
 *
 * Errors: transport failures are a negative errno in kube_result.err; API
 * errors keep the HTTP status and the Status object's reason and message
 * (e.g. 409 "Conflict", "Operation cannot be fulfilled ..."). */
#ifndef KNIT_KUBE_CLIENT_H
#define KNIT_KUBE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_result;
struct json;
struct loop;
struct kube_client;
struct kube_config;

/* One resource type. Static data: callers keep it alive. */
struct kube_resource {
	const char *group; /* "" for the core group */
	const char *version;
	const char *plural;
	const char *kind;
	bool namespaced;
};

extern const struct kube_resource kube_res_secrets;
extern const struct kube_resource kube_res_events;
extern const struct kube_resource kube_res_leases;
extern const struct kube_resource kube_res_pods;
extern const struct kube_resource kube_res_nodes;
extern const struct kube_resource kube_res_namespaces;

struct kube_result {
	int err; /* 0, or a negative errno for transport / parse failures */
	long status; /* HTTP status, 0 if none */
	char reason[64]; /* Status.reason, e.g. "NotFound", "Conflict", "AlreadyExists" */
	char message[512]; /* Status.message, or the transport error text */
	struct json *obj; /* the response object on 2xx; owned by the result */
};

/* True for 2xx. */
bool kube_ok(const struct kube_result *r);
/* Releases r->obj. */
void kube_result_clear(struct kube_result *r);
/* Takes r->obj out of the result; the caller frees it. */
struct json *kube_result_take(struct kube_result *r);

enum kube_patch {
	KUBE_PATCH_MERGE, /* application/merge-patch+json (RFC 7386) */
	KUBE_PATCH_APPLY, /* server-side apply, application/apply-patch+yaml (JSON is YAML) */
};

struct kube_list_opts {
	const char *label_selector;
	const char *field_selector;
	const char *resource_version;
	const char *continue_token;
	long limit; /* 0: server default */
};

/* ---- client ---- */

/* Copies what it needs from cfg. NULL on failure. */
struct kube_client *kube_client_new(struct loop *loop, const struct kube_config *cfg);
void kube_client_free(struct kube_client *c);
struct loop *kube_client_loop(struct kube_client *c);
/* Field manager for apply and for managedFields; default "knit-operator". */
void kube_client_set_field_manager(struct kube_client *c, const char *manager);
/* The namespace from the configuration (in-cluster file or kubeconfig context). */
const char *kube_client_namespace(const struct kube_client *c);
/* Requests and transport errors so far (for metrics). */
void kube_client_stats(struct kube_client *c, unsigned long *requests, unsigned long *errors,
		       double *latency_sum_s);

/* Records every request in these families (any may be NULL), which the
 * caller registered: a histogram of seconds labelled {verb}, and a
 * counter labelled {verb, code} where code is the HTTP status or "error".
 * Call before the first request. */
struct metrics_family;
void kube_client_set_metrics(struct kube_client *c, struct metrics_family *latency,
			     struct metrics_family *requests);
const char *kube_client_field_manager(const struct kube_client *c);

/* Appends "key=value" (value percent-encoded, RFC 3986 unreserved
 * characters kept) to a query string in q, with "&" when q is not empty.
 * An empty or NULL value adds nothing. 0 or the buf error. */
struct buf;
int kube_query_add(struct buf *q, const char *key, const char *value);

/* Builds "/apis/g/v/namespaces/ns/plural/name/sub" into out. ns may be NULL
 * for cluster-scoped types or all-namespace lists; name and sub may be NULL.
 * -ENAMETOOLONG if it does not fit. */
int kube_path(char *out, size_t outlen, const struct kube_resource *res, const char *ns,
	      const char *name, const char *sub);

/* ---- asynchronous, loop thread only ---- */

typedef void (*kube_done_cb)(struct kube_result *res, void *arg);

/* method and path as for the REST API; body may be NULL; query may be NULL
 * ("labelSelector=...&limit=..."); content_type NULL means JSON. The result
 * passed to done is freed after done returns unless obj was taken. */
int kube_request_async(struct kube_client *c, const char *method, const char *path,
		       const char *query, const char *content_type, const struct json *body,
		       kube_done_cb done, void *arg);

/* Loop thread: requests started with kube_request_async() for arg are
 * dropped; their done callbacks never run. For an owner that goes away
 * while its requests are in flight. */
void kube_cancel(struct kube_client *c, void *arg);

/* A streaming GET (watches): the body is handed to on_data as it arrives;
 * no total timeout, but a stall of stall_ms with nothing received (not even
 * a bookmark) aborts it. *out can cancel it with http_request_cancel(). */
struct http_request;
int kube_stream_async(struct kube_client *c, const char *path, const char *query, uint32_t stall_ms,
		      int (*on_headers)(struct http_request *r, long status, void *arg),
		      int (*on_data)(struct http_request *r, const void *data, size_t len, void *arg),
		      void (*on_done)(struct http_request *r, const struct http_result *res, void *arg),
		      void *arg, struct http_request **out);

/* ---- blocking, any thread but the loop's ---- */

/* All return 0 with *res filled (check kube_ok() and res->status), or a
 * negative errno if the request could not be issued. The caller clears res. */
int kube_request(struct kube_client *c, const char *method, const char *path, const char *query,
		 const char *content_type, const struct json *body, struct kube_result *res);
int kube_get(struct kube_client *c, const struct kube_resource *r, const char *ns,
	     const char *name, struct kube_result *res);
/* One page; follow res->obj metadata.continue for the next. */
int kube_list(struct kube_client *c, const struct kube_resource *r, const char *ns,
	      const struct kube_list_opts *o, struct kube_result *res);
/* All pages merged into one list object (items concatenated). */
int kube_list_all(struct kube_client *c, const struct kube_resource *r, const char *ns,
		  const struct kube_list_opts *o, struct kube_result *res);
int kube_create(struct kube_client *c, const struct kube_resource *r, const char *ns,
		const struct json *obj, struct kube_result *res);
/* PUT; obj's metadata.resourceVersion, if set, is the precondition (409 on
 * mismatch). status selects the /status subresource. */
int kube_update(struct kube_client *c, const struct kube_resource *r, const char *ns,
		const struct json *obj, bool status, struct kube_result *res);
/* Preconditions uid / resource_version may be NULL. Propagation is
 * Background (dependents go through the garbage collector). */
int kube_delete(struct kube_client *c, const struct kube_resource *r, const char *ns,
		const char *name, const char *uid, const char *resource_version,
		struct kube_result *res);
/* Merge patch or server-side apply (field manager, force=true for apply). */
int kube_patch(struct kube_client *c, const struct kube_resource *r, const char *ns,
	       const char *name, enum kube_patch type, const struct json *patch, bool status,
	       struct kube_result *res);

/* Read-modify-write with conflict handling: GETs the object, calls
 * mutate(obj, arg) (return 1 to write, 0 for "nothing to change", < 0 to
 * abort with that error), PUTs it with its resourceVersion as
 * precondition, and on 409 starts over from a fresh read, up to `attempts`
 * times. status selects the /status subresource for the write. */
typedef int (*kube_mutate_fn)(struct json *obj, void *arg);
int kube_update_retry(struct kube_client *c, const struct kube_resource *r, const char *ns,
		      const char *name, bool status, int attempts, kube_mutate_fn mutate,
		      void *arg, struct kube_result *res);

#endif
