/* Pod identities (docs/cni.md): a node's knitd asks, on its own
 * authenticated session, for a Device for a pod it carries. The node's
 * session is the credential: the pod must exist with that UID and be bound
 * (spec.nodeName) to the Node the calling Device was bound to by its knitd
 * pod's token (spec.node, nodebind.h), so a node cannot mint identities
 * for pods elsewhere. The principal comes from the pod's
 * namespace and ServiceAccount; requested tags must be allowed by the
 * tailnet's policy (tagOwners) when there is one. The Device is ephemeral
 * and names its pod (spec.ownerPod); logout deletes it, and the sweep
 * below deletes those whose Pod is gone (the backstop for a missed DEL).
 * The sweep runs every second, and at once when a Pod labelled
 * PODIDENT_LABEL (set here at registration) is deleted or finishes: a
 * watch on those Pods alone, not on every Pod of the cluster. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "control/channel.h"
#include "coord-internal.h"
#include "json.h"
#include "kube/client.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "loop.h"
#include "nodebind.h"
#include "operator.h"
#include "policy.h"
#include "policy/policy.h"

/* Kubernetes node names are DNS subdomains; device hostnames are labels
 * made by coord's sanitizing: compare the node name the same way. */
static void host_label(const char *in, char *out, size_t outlen)
{
	size_t n = 0;

	for (; in && *in && n + 1 < outlen && n < 40; in++) {
		char ch = *in;
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
			out[n++] = ch;
		else if (n > 0 && out[n - 1] != '-')
			out[n++] = '-';
	}
	while (n > 0 && out[n - 1] == '-')
		n--;
	out[n] = '\0';
}

/* The Pod labelled as carrying an identity, so the watch below sees it go.
 * Only with the opt-in RBAC (manifests/examples/operator-pod-labels.yaml):
 * by default the operator writes no Pod, and the once-a-second sweep
 * covers it. */
static void label_pod(struct coord *c, const char *ns, const char *name)
{
	struct json *patch = json_new_object(), *meta = json_new_object(), *labels = json_new_object();
	struct kube_result r = { 0 };

	if (patch && meta && labels && !json_object_set(labels, PODIDENT_LABEL, json_new_string("true"))) {
		json_object_set(meta, "labels", labels);
		labels = NULL;
		json_object_set(patch, "metadata", meta);
		meta = NULL;
		if (kube_patch(c->op->kube, &kube_res_pods, ns, name, KUBE_PATCH_MERGE, patch, false, &r))
			log_warn("cannot label the pod; its Device goes within a second of it instead", "pod=%s/%s",
				 ns, name);
		else if (r.status == 403) /* the default RBAC: no Pod writes */
			log_debug("pod not labelled (no patch on pods: manifests/examples/operator-pod-labels.yaml)",
				  "pod=%s/%s", ns, name);
		else if (!kube_ok(&r))
			log_warn("cannot label the pod; its Device goes within a second of it instead",
				 "pod=%s/%s status=%ld", ns, name, r.status);
	}
	kube_result_clear(&r);
	json_free(labels);
	json_free(meta);
	json_free(patch);
}

/* NULL when every tag is allowed, else the refusal: the tailnet's policy
 * in force (validated, its tests passed: operator/policy.h) decides by
 * tagOwners, which may name the pod's ServiceAccount or its namespace's.
 * No policy in force: tags are not restricted. */
static struct json *check_tags(struct coord *c, const char *tailnet, const struct json *tags, const char *host,
			       const char *ns, const char *sa)
{
	struct policy_ref *pol;
	struct json *refusal = NULL;
	char user[512];

	if (!json_array_len(tags) || !(pol = policy_store_get(c->op->policies, tailnet)))
		return NULL;
	snprintf(user, sizeof(user), "system:serviceaccount:%s:%s", ns, sa);
	struct policy_device who = { .name = host, .user = user, .pod = true, .pod_namespace = ns,
				     .pod_serviceaccount = sa };
	for (size_t k = 0; k < json_array_len(tags) && !refusal; k++) {
		const char *t = json_str(json_array_at(tags, k));
		if (!policy_tag_allowed(pol->p, t, &who))
			refusal = coord_error_reply("TagNotPermitted", "tagOwners of policy %s do not let %s claim %s",
						    pol->name, user, t);
	}
	policy_store_put(c->op->policies, pol);
	return refusal;
}

struct json *podident_register(struct coord *c, const char *mkey, const struct json *req)
{
	struct operator *op = c->op;
	const char *ns = json_str(json_get(req, "podNamespace")), *pname = json_str(json_get(req, "podName"));
	const char *puid = json_str(json_get(req, "podUID")), *pod_mkey = json_str(json_get(req, "machineKey"));
	const char *node_key = json_str(json_get(req, "nodeKey")), *disco_key = json_str(json_get(req, "discoKey"));
	const struct json *tags = json_get(req, "tags");
	struct json *node = register_device_by_machine(c, mkey), *existing = NULL, *pod = NULL, *dev = NULL, *reply = NULL;
	struct kube_result r = { 0 };
	char host[64], name[128], user[512];
	unsigned char kb[32];
	const char *tailnet, *sa, *why_not;

	if (!ns || !*ns || !pname || !*pname || !puid || !*puid || !channel_key_parse(pod_mkey, "mkey:", kb) ||
	    !channel_key_parse(node_key, "nodekey:", kb) || (disco_key && !channel_key_parse(disco_key, "discokey:", kb))) {
		reply = coord_error_reply("BadRequest",
					  "register_pod needs podNamespace, podName, podUID, machineKey, nodeKey");
		goto out;
	}
	for (size_t i = 0; i < json_array_len(tags); i++) {
		const char *t = json_str(json_array_at(tags, i));
		if (!t || strncmp(t, "tag:", 4) || strlen(t) < 5 || strlen(t) > 67) {
			reply = coord_error_reply("BadRequest", "tags must look like tag:name");
			goto out;
		}
	}
	/* The caller: a node's own Device, not a pod's vouching for more. */
	if (!node || json_path(node, "spec", "ownerPod", NULL) || !mapstream_device_usable(node)) {
		reply = coord_error_reply("PodNotAuthorized", "only a registered node may vouch for its pods");
		goto out;
	}
	tailnet = operator_tailnet_of(node);
	if (kube_get(op->kube, &kube_res_pods, ns, pname, &r) || !kube_ok(&r)) {
		reply = r.status == 404 ? coord_error_reply("PodNotFound", "pod %s/%s does not exist", ns, pname)
					: coord_error_reply("Unavailable", "cannot read pod %s/%s (HTTP %ld); try again", ns,
							    pname, r.status);
		goto out;
	}
	pod = r.obj;
	r.obj = NULL;
	if (strcmp(kube_uid(pod) ?: "", puid)) {
		reply = coord_error_reply("PodNotFound", "pod %s/%s has another UID (recreated?)", ns, pname);
		goto out;
	}
	/* The pod's node must be the one the caller's knitd pod token proved. */
	if ((why_not = nodebind_vouches(node, pod, user, sizeof(user)))) {
		coord_refused(c, "nodebind", why_not);
		reply = coord_error_reply("PodNotAuthorized", "%s", user);
		goto out;
	}
	sa = json_str(json_path(pod, "spec", "serviceAccountName", NULL)) ?: "default";
	host_label(json_str(json_get(req, "hostname")) ?: pname, host, sizeof(host));
	if (!host[0])
		snprintf(host, sizeof(host), "pod");
	if ((reply = check_tags(c, tailnet, tags, host, ns, sa)))
		goto out;
	existing = register_device_by_machine(c, pod_mkey);
	if (existing && strcmp(json_str(json_path(existing, "spec", "ownerPod", "uid", NULL)) ?: "", puid)) {
		reply = coord_error_reply("PodNotAuthorized", "that machine key belongs to another device");
		goto out;
	}
	snprintf(user, sizeof(user), "system:serviceaccount:%s:%s", ns, sa);
	struct json *spec, *owner = json_new_object();
	dev = register_device_doc(existing, host, pod_mkey, name, sizeof(name), &spec);
	if (!dev) {
		json_free(owner);
		goto nomem;
	}
	json_object_set(owner, "namespace", json_new_string(ns));
	json_object_set(owner, "name", json_new_string(pname));
	json_object_set(owner, "uid", json_new_string(puid));
	json_object_set(owner, "serviceAccount", json_new_string(sa));
	json_object_set(spec, "tailnet", json_new_string(tailnet));
	json_object_set(spec, "hostname", json_new_string(host));
	json_object_set(spec, "machineKey", json_new_string(pod_mkey));
	json_object_set(spec, "nodeKey", json_new_string(node_key));
	if (disco_key)
		json_object_set(spec, "discoKey", json_new_string(disco_key));
	json_object_set(spec, "ephemeral", json_new_bool(true));
	json_object_set(spec, "ownerPod", owner);
	json_object_set(spec, "tags", json_clone(tags) ?: json_new_array());
	if (json_array_len(tags))
		json_object_del(spec, "user");
	else
		json_object_set(spec, "user", json_new_string(user));
	json_object_del(spec, "keyExpiry"); /* bound to the pod's life instead */

	int err = existing ? kube_update(op->kube, &res_devices, NULL, dev, false, &r)
			   : kube_create(op->kube, &res_devices, NULL, dev, &r);
	if (err || !kube_ok(&r)) {
		reply = coord_error_reply(r.status == 409 ? "Conflict" : "Unavailable",
					  "cannot record the pod's device (HTTP %ld %s: %s); try again", r.status, r.reason,
					  r.message);
		goto out;
	}
	json_free(dev);
	dev = NULL;
	if (!json_path(pod, "metadata", "labels", PODIDENT_LABEL, NULL))
		label_pod(c, ns, pname);
	dev = register_wait_addresses(c, name);
	if (!dev) {
		reply = coord_error_reply("Unavailable", "the pod's device has no addresses yet; try again");
		goto out;
	}
	reply = json_new_object();
	if (!reply)
		goto nomem;
	json_object_set(reply, "device", json_new_string(name));
	json_object_set(reply, "name", json_new_string(host));
	json_object_set(reply, "addresses", json_clone(json_path(dev, "status", "addresses", NULL)));
	json_object_set(reply, "ephemeral", json_new_bool(true));
	json_object_set(reply, "dnsSuffix", mapstream_dns_suffix_json(c, tailnet));
	log_info("pod device registered", "device=%s pod=%s/%s node=%s", name, ns, pname, kube_name(node));
	goto out;
nomem:
	reply = coord_error_reply("Unavailable", "out of memory");
out:
	kube_result_clear(&r);
	json_free(node);
	json_free(existing);
	json_free(pod);
	json_free(dev);
	return reply;
}

/* ---- the backstop: Devices of Pods that are gone ---- */

struct owned {
	char name[254], ns[254], pod[254], uid[128];
	struct owned *next;
};

static void collect_owned(const struct json *dev, void *arg)
{
	struct owned **list = arg, *o;
	const struct json *op = json_path(dev, "spec", "ownerPod", NULL);

	if (!op || !json_str(json_get(op, "uid")) || !(o = calloc(1, sizeof(*o))))
		return;
	snprintf(o->name, sizeof(o->name), "%s", kube_name(dev));
	snprintf(o->ns, sizeof(o->ns), "%s", json_str(json_get(op, "namespace")) ?: "");
	snprintf(o->pod, sizeof(o->pod), "%s", json_str(json_get(op, "name")) ?: "");
	snprintf(o->uid, sizeof(o->uid), "%s", json_str(json_get(op, "uid")));
	o->next = *list;
	*list = o;
}

static bool finished(const struct json *pod)
{
	const char *phase = json_str(json_path(pod, "status", "phase", NULL)) ?: "";

	return !strcmp(phase, "Succeeded") || !strcmp(phase, "Failed");
}

void podident_sweep(struct coord *c)
{
	struct owned *list = NULL;

	informer_foreach(c->op->devices, collect_owned, &list);
	while (list) {
		struct owned *o = list;
		struct kube_result r = { 0 };
		bool gone;

		list = o->next;
		/* Gone: deleted, recreated under the same name, or finished (a
		 * Job's pod: its containers will not run again). */
		gone = kube_get(c->op->kube, &kube_res_pods, o->ns, o->pod, &r) == 0 &&
		       (r.status == 404 || (kube_ok(&r) && (strcmp(kube_uid(r.obj) ?: "", o->uid) || finished(r.obj))));
		kube_result_clear(&r);
		if (gone) {
			if (kube_delete(c->op->kube, &res_devices, NULL, o->name, NULL, NULL, &r) == 0 &&
			    (kube_ok(&r) || r.status == 404))
				log_info("pod gone: its device deleted", "device=%s pod=%s/%s", o->name, o->ns, o->pod);
			kube_result_clear(&r);
		}
		free(o);
	}
}

/* The watch on labelled Pods: a deleted or finished one sweeps now. */
static void pod_kick(struct coord *c)
{
	loop_timer_arm(c->pod_sweep, 0);
}

static void pod_upd(struct informer *inf, const struct json *old, const struct json *obj, void *arg)
{
	(void)inf;
	(void)old;
	if (finished(obj))
		pod_kick(arg);
}

static void pod_del(struct informer *inf, const struct json *obj, void *arg)
{
	(void)inf;
	(void)obj;
	pod_kick(arg);
}

int podident_watch_start(struct coord *c)
{
	static const struct informer_handlers h = { .on_update = pod_upd, .on_delete = pod_del };

	if (!(c->pod_watch = informer_new(c->op->kube, &kube_res_pods, NULL, PODIDENT_LABEL, &h, c)))
		return -ENOMEM;
	if (informer_start(c->pod_watch)) {
		informer_free(c->pod_watch);
		c->pod_watch = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Loop thread: once a second, a sweep on a worker (one at a time). */
void podident_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct coord *c = arg;
	struct job *j;

	loop_timer_arm(t, 1000);
	/* The Device cache exists only while this operator leads, and is
	 * freed only after the workers are joined. */
	if (!c->ready || !c->op->devices || !informer_synced(c->op->devices) ||
	    __atomic_exchange_n(&c->pod_sweep_queued, 1, __ATOMIC_ACQ_REL))
		return;
	j = calloc(1, sizeof(*j));
	if (j) {
		j->c = c;
		j->type = JOB_SWEEP_PODS;
	}
	if (!j || register_job_submit(c, j)) {
		free(j);
		__atomic_store_n(&c->pod_sweep_queued, 0, __ATOMIC_RELEASE);
	}
}
