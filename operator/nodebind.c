/* A node Device bound to its Kubernetes Node by its knitd pod's projected
 * ServiceAccount token (nodebind.h, docs/cni.md). Whoever holds the nodes'
 * AuthKey can join under any node's name; only the knitd pod the kubelet
 * runs on node X holds a token bound to a pod scheduled on X. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "coord-internal.h"
#include "json.h"
#include "kube/client.h"
#include "kube/meta.h"
#include "log.h"
#include "nodebind.h"
#include "operator.h"

static const struct kube_resource res_tokenreviews = { "authentication.k8s.io", "v1", "tokenreviews", "TokenReview",
							false };

/* The first value of status.user.extra[key] (a list of strings), if it fits. */
static bool extra_value(const struct json *user, const char *key, char *out, size_t outlen)
{
	const struct json *v = json_get(json_get(user, "extra"), key);
	const char *s = json_is_array(v) && json_array_len(v) == 1 ? json_str(json_array_at(v, 0)) : NULL;

	if (!s || !*s || strlen(s) >= outlen)
		return false;
	memcpy(out, s, strlen(s) + 1);
	return true;
}

const char *nodebind_review_check(const struct json *review, const char *want_user, struct nodebind_pod *pod,
				  char *why, size_t whylen)
{
	const struct json *st = json_get(review, "status"), *auds = json_get(st, "audiences");
	const char *err = json_str(json_get(st, "error")) ?: "", *user;
	bool aud = false;

	memset(pod, 0, sizeof(*pod));
	if (!json_bool(json_get(st, "authenticated"), false)) {
		/* The API server checks the audience itself when asked for one
		 * (spec.audiences) and says so only in its error text. */
		snprintf(why, whylen, "the API server does not accept the token: %.200s", *err ? err : "not authenticated");
		return strstr(err, "audience") ? "WrongAudience" : "Unauthenticated";
	}
	for (size_t i = 0; i < json_array_len(auds); i++)
		aud |= !strcmp(json_str(json_array_at(auds, i)) ?: "", NODEBIND_AUDIENCE);
	if (!aud) {
		snprintf(why, whylen, "the token is not for audience %s", NODEBIND_AUDIENCE);
		return "WrongAudience";
	}
	user = json_str(json_path(st, "user", "username", NULL)) ?: "";
	if (strcmp(user, want_user)) {
		snprintf(why, whylen, "the token is %.200s's, not knitd's (%s)", user, want_user);
		return "WrongServiceAccount";
	}
	if (!extra_value(json_get(st, "user"), "authentication.kubernetes.io/pod-name", pod->name, sizeof(pod->name)) ||
	    !extra_value(json_get(st, "user"), "authentication.kubernetes.io/pod-uid", pod->uid, sizeof(pod->uid))) {
		memset(pod, 0, sizeof(*pod));
		snprintf(why, whylen, "the token is bound to no pod (a projected token of the knitd pod is needed)");
		return "NoPodBinding";
	}
	return NULL;
}

static bool daemonset_owned(const struct json *pod)
{
	const struct json *refs = json_path(pod, "metadata", "ownerReferences", NULL);

	for (size_t i = 0; i < json_array_len(refs); i++) {
		const struct json *r = json_array_at(refs, i);
		if (json_bool(json_get(r, "controller"), false) && !strcmp(json_str(json_get(r, "kind")) ?: "", "DaemonSet") &&
		    !strncmp(json_str(json_get(r, "apiVersion")) ?: "", "apps/", 5))
			return true;
	}
	return false;
}

const char *nodebind_pod_check(const struct json *pod, const struct nodebind_pod *want, char *node, size_t nodelen,
			       char *why, size_t whylen)
{
	const char *phase = json_str(json_path(pod, "status", "phase", NULL)) ?: "";
	const char *n = json_str(json_path(pod, "spec", "nodeName", NULL));

	node[0] = '\0';
	if (!pod) {
		snprintf(why, whylen, "the token's pod %s no longer exists", want->name);
		return "PodNotFound";
	}
	if (strcmp(kube_uid(pod) ?: "", want->uid)) {
		snprintf(why, whylen, "pod %s was recreated (its UID is not the token's)", want->name);
		return "PodUIDMismatch";
	}
	if (json_path(pod, "metadata", "deletionTimestamp", NULL) || !strcmp(phase, "Succeeded") ||
	    !strcmp(phase, "Failed")) {
		snprintf(why, whylen, "pod %s is finished or being deleted", want->name);
		return "PodNotRunning";
	}
	if (!daemonset_owned(pod)) {
		snprintf(why, whylen, "pod %s is not a DaemonSet's", want->name);
		return "NotDaemonSetPod";
	}
	if (!n || !*n || strlen(n) >= nodelen) {
		snprintf(why, whylen, "pod %s is not scheduled on a node", want->name);
		return "PodNotScheduled";
	}
	memcpy(node, n, strlen(n) + 1);
	return NULL;
}

const char *nodebind_vouches(const struct json *node_dev, const struct json *pod, char *why, size_t whylen)
{
	const char *bound = json_str(json_path(node_dev, "spec", "node", NULL));
	const char *want = json_str(json_path(pod, "spec", "nodeName", NULL));

	if (!bound || !*bound) {
		snprintf(why, whylen, "device %s is bound to no Kubernetes Node (it registered without a knitd pod token)",
			 kube_name(node_dev) ?: "?");
		return "NodeNotBound";
	}
	if (!want || strcmp(want, bound)) {
		snprintf(why, whylen, "pod %s/%s is on node %s, not on %s (device %s)", kube_namespace(pod) ?: "?",
			 kube_name(pod) ?: "?", want && *want ? want : "(none)", bound, kube_name(node_dev) ?: "?");
		return "OtherNode";
	}
	return NULL;
}

int nodebind_set(struct json *spec, const char *node)
{
	if (!node) {
		json_object_del(spec, "node");
		return 0;
	}
	return json_object_set(spec, "node", json_new_string(node)) ? -ENOMEM : 0;
}

/* POST tokenreviews: the answer (caller frees), or NULL with *status set. */
static struct json *token_review(struct coord *c, const char *token, long *status)
{
	struct json *tr = json_new_object(), *spec = json_new_object(), *auds = json_new_array(), *out = NULL;
	struct kube_result r = { 0 };
	int err = !tr || !spec || !auds;

	*status = 0;
	if (!err) {
		err |= json_object_set(tr, "apiVersion", json_new_string("authentication.k8s.io/v1"));
		err |= json_object_set(tr, "kind", json_new_string("TokenReview"));
		err |= json_array_append(auds, json_new_string(NODEBIND_AUDIENCE));
		err |= json_object_set(spec, "audiences", auds);
		auds = NULL;
		err |= json_object_set(spec, "token", json_new_string(token));
		err |= json_object_set(tr, "spec", spec);
		spec = NULL;
	}
	if (!err && kube_create(c->op->kube, &res_tokenreviews, NULL, tr, &r) == 0 && kube_ok(&r))
		out = kube_result_take(&r);
	*status = r.status;
	kube_result_clear(&r);
	json_free(auds);
	json_free(spec);
	json_free_secret(tr); /* the token */
	return out;
}

struct json *nodebind_verify(struct coord *c, const char *token, char *node, size_t nodelen)
{
	struct nodebind_pod pod;
	struct kube_result r = { 0 };
	struct json *review = NULL, *reply = NULL;
	const char *reason;
	char user[600], why[400];
	long status;

	node[0] = '\0';
	snprintf(user, sizeof(user), "system:serviceaccount:%s:%s", c->op->namespace,
		 c->o.knitd_service_account && *c->o.knitd_service_account ? c->o.knitd_service_account
									  : NODEBIND_DEFAULT_SA);
	if (!(review = token_review(c, token, &status))) {
		log_warn("cannot review a knitd pod token", "status=%ld (RBAC: create on tokenreviews?)", status);
		coord_refused(c, "nodebind", "ReviewUnavailable");
		reply = coord_error_reply("Unavailable", "cannot check the pod token now (HTTP %ld); try again", status);
		goto out;
	}
	if ((reason = nodebind_review_check(review, user, &pod, why, sizeof(why))))
		goto refused;
	if (kube_get(c->op->kube, &kube_res_pods, c->op->namespace, pod.name, &r) || (!kube_ok(&r) && r.status != 404)) {
		coord_refused(c, "nodebind", "ReviewUnavailable");
		reply = coord_error_reply("Unavailable", "cannot read the token's pod (HTTP %ld); try again", r.status);
		goto out;
	}
	if ((reason = nodebind_pod_check(kube_ok(&r) ? r.obj : NULL, &pod, node, nodelen, why, sizeof(why))))
		goto refused;
	log_debug("knitd pod token checked", "pod=%s/%s node=%s", c->op->namespace, pod.name, node);
	goto out;
refused:
	node[0] = '\0';
	coord_refused(c, "nodebind", reason);
	log_info("knitd pod token refused", "reason=%s why=\"%s\"", reason, why);
	reply = coord_error_reply("PodTokenInvalid", "%s (%s)", why, reason);
out:
	kube_result_clear(&r);
	json_free(review);
	return reply;
}
