/* Rolling updates of knitd's DaemonSet: see rollout.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "kube/client.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "rollout.h"

struct rollout {
	struct kube_client *kube;
	struct informer *pods;
};

/* One DELETE in flight: outlives the rollout if need be. */
struct finish {
	char ns[254];
	char name[254];
};

/* The kubelet's notRunning(): no container status says running. */
static bool none_running(const struct json *statuses)
{
	size_t n = json_array_len(statuses);

	for (size_t i = 0; i < n; i++) {
		const struct json *st = json_get(json_array_at(statuses, i), "state");

		if (!json_is_object(st) || json_get(st, "running"))
			return false;
	}
	return true;
}

bool rollout_pod_stopped(const struct json *pod)
{
	const struct json *status = json_get(pod, "status");
	const struct json *cs = json_get(status, "containerStatuses");

	return json_is_string(json_path(pod, "metadata", "deletionTimestamp", NULL)) && json_array_len(cs) > 0 &&
	       none_running(cs) && none_running(json_get(status, "initContainerStatuses"));
}

static void finished(struct kube_result *res, void *arg)
{
	struct finish *f = arg;

	if (kube_ok(res))
		log_info("knitd pod stopped: deleted for its successor", "pod=%s/%s", f->ns, f->name);
	else if (res->status != 404 && res->status != 409)
		/* 404: the kubelet was first; 409: the UID is another pod's. */
		log_warn("cannot delete a stopped knitd pod (its kubelet will)", "pod=%s/%s status=%ld err=%d %s",
			 f->ns, f->name, res->status, res->err, res->message);
	free(f);
}

static void finish(struct rollout *r, const struct json *pod)
{
	const char *ns = kube_namespace(pod), *name = kube_name(pod), *uid = kube_uid(pod);
	struct json *opts = NULL, *pre = NULL;
	struct finish *f = NULL;
	char path[1024];

	if (!ns || !name || !uid || strlen(ns) >= sizeof(f->ns) || strlen(name) >= sizeof(f->name) ||
	    kube_path(path, sizeof(path), &kube_res_pods, ns, name, NULL))
		return;
	if (!(f = calloc(1, sizeof(*f))) || !(opts = json_new_object()) || !(pre = json_new_object()) ||
	    json_object_set(pre, "uid", json_new_string(uid)) ||
	    json_object_set(opts, "kind", json_new_string("DeleteOptions")) ||
	    json_object_set(opts, "apiVersion", json_new_string("v1")) ||
	    json_object_set(opts, "gracePeriodSeconds", json_new_int(0)))
		goto out;
	if (json_object_set(opts, "preconditions", pre)) {
		pre = NULL; /* json_object_set() frees the value it could not add */
		goto out;
	}
	pre = NULL;
	snprintf(f->ns, sizeof(f->ns), "%s", ns);
	snprintf(f->name, sizeof(f->name), "%s", name);
	if (kube_request_async(r->kube, "DELETE", path, NULL, NULL, opts, finished, f) == 0)
		f = NULL;
out:
	if (f)
		log_warn("cannot delete a stopped knitd pod (its kubelet will)", "pod=%s/%s", ns, name);
	free(f);
	json_free(pre);
	json_free(opts);
}

static void pod_add(struct informer *inf, const struct json *obj, void *arg)
{
	(void)inf;
	if (rollout_pod_stopped(obj))
		finish(arg, obj);
}

static void pod_upd(struct informer *inf, const struct json *old, const struct json *obj, void *arg)
{
	(void)inf;
	/* Once: when the kubelet's report turns it stopped. */
	if (rollout_pod_stopped(obj) && !rollout_pod_stopped(old))
		finish(arg, obj);
}

struct rollout *rollout_start(struct kube_client *kube, const char *ns, const char *selector)
{
	static const struct informer_handlers h = { .on_add = pod_add, .on_update = pod_upd };
	struct rollout *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->kube = kube;
	if (!(r->pods = informer_new(kube, &kube_res_pods, ns, selector, &h, r)) || informer_start(r->pods)) {
		rollout_free(r);
		return NULL;
	}
	return r;
}

void rollout_free(struct rollout *r)
{
	if (!r)
		return;
	informer_free(r->pods);
	free(r);
}
