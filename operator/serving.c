#include "serving.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "kube/client.h"
#include "log.h"
#include "loop.h"

#define RETRY_S 1

static const struct kube_resource res_services = { "", "v1", "services", "Service", true };

enum said { SAID_UNKNOWN = -1, SAID_NONE = 0, SAID_US = 1 };

/* Written by the thread only. */
struct target {
	char *service, *port_name;
	uint16_t port;
	enum said said; /* what the slice says, as far as we know */
	char rv[64]; /* the resourceVersion our last redirection made */
	bool warned; /* warn once per streak of failures */
};

struct serving {
	struct kube_client *kube;
	struct loop *loop;
	char *ns, *ip, *pod;
	struct target t[SERVING_MAX];
	size_t n;
	struct kube_resource res; /* EndpointSlices, in the version the server has */
	char version[16];
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock; /* guards want, stop, settled, withdrawing and cond */
	pthread_cond_t cond;
	bool want, stop, settled, withdrawing;
	struct loop_timer *deadline; /* loop thread */
	void (*done)(void *arg); /* loop thread: serving_withdraw's, once */
	void *done_arg;
};

static bool needs_write(const struct target *t, bool want)
{
	return want ? t->said != SAID_US : t->said == SAID_US;
}

/* ---- the documents ---- */

static struct json *endpoints_doc(const char *ns, const char *ip, const char *pod_name, int *err)
{
	struct json *eps = json_new_array(), *ep, *addrs, *cond, *ref;

	if (!ip)
		return eps;
	ep = json_new_object();
	addrs = json_new_array();
	cond = json_new_object();
	if (!eps || !ep || !addrs || json_array_append(addrs, json_new_string(ip)))
		*err = -ENOMEM;
	json_put(ep, "addresses", addrs, err);
	json_put_bool(cond, "ready", true, err);
	json_put(ep, "conditions", cond, err);
	if (pod_name) {
		ref = json_new_object();
		json_put_str(ref, "kind", "Pod", err);
		json_put_str(ref, "namespace", ns, err);
		json_put_str(ref, "name", pod_name, err);
		json_put(ep, "targetRef", ref, err);
	}
	if (!*err && json_array_append(eps, ep))
		*err = -ENOMEM;
	else if (*err)
		json_free(ep);
	return eps;
}

static struct json *ports_doc(const struct serving_target *t, int *err)
{
	struct json *ports = json_new_array(), *port = json_new_object();

	json_put_str(port, "name", t->port_name, err);
	json_put_int(port, "port", t->port, err);
	json_put_str(port, "protocol", "TCP", err);
	if (!*err && (!ports || json_array_append(ports, port)))
		*err = -ENOMEM;
	else if (*err)
		json_free(port);
	return ports;
}

struct json *serving_patch(const struct serving_target *t, const char *ns, const char *ip, const char *pod_name,
			   const char *rv)
{
	struct json *p = json_new_object(), *md;
	int err = 0;

	if (rv) {
		md = json_new_object();
		json_put_str(md, "resourceVersion", rv, &err);
		json_put(p, "metadata", md, &err);
	}
	json_put(p, "endpoints", endpoints_doc(ns, ip, pod_name, &err), &err);
	json_put(p, "ports", ports_doc(t, &err), &err);
	if (err) {
		json_free(p);
		return NULL;
	}
	return p;
}

struct json *serving_slice(const struct serving_target *t, const char *ns, const char *ip, const char *pod_name,
			   const char *api_version, const struct json *service)
{
	struct json *s = serving_patch(t, ns, ip, pod_name, NULL), *md = json_new_object(), *labels = json_new_object(),
		    *refs = json_new_array(), *ref = json_new_object();
	unsigned char a[16];
	char name[300];
	int err = 0;

	snprintf(name, sizeof(name), "%s" SERVING_SLICE_SUFFIX, t->service);
	json_put_str(s, "apiVersion", api_version, &err);
	json_put_str(s, "kind", "EndpointSlice", &err);
	json_put_str(s, "addressType", inet_pton(AF_INET6, ip, a) == 1 ? "IPv6" : "IPv4", &err);
	json_put_str(md, "name", name, &err);
	json_put_str(md, "namespace", ns, &err);
	json_put_str(labels, "kubernetes.io/service-name", t->service, &err);
	json_put_str(labels, "endpointslice.kubernetes.io/managed-by", SERVING_MANAGER, &err);
	json_put_str(labels, "app.kubernetes.io/part-of", "knit", &err);
	json_put(md, "labels", labels, &err);
	/* The Service's: the garbage collector removes the slice with it. No
	 * blockOwnerDeletion (that would need services/finalizers). */
	json_put_str(ref, "apiVersion", "v1", &err);
	json_put_str(ref, "kind", "Service", &err);
	json_put_str(ref, "name", t->service, &err);
	json_put_str(ref, "uid", json_str(json_path(service, "metadata", "uid", NULL)), &err);
	if (!json_str(json_path(service, "metadata", "uid", NULL)))
		err = -EINVAL;
	if (!err && (!refs || json_array_append(refs, ref)))
		err = -ENOMEM;
	else if (err)
		json_free(ref);
	json_put(md, "ownerReferences", refs, &err);
	json_put(s, "metadata", md, &err);
	if (err) {
		json_free(s);
		return NULL;
	}
	return s;
}

/* ---- the writer thread (blocking client) ---- */

static bool discover(struct serving *s)
{
	struct kube_result r = { 0 };
	bool ok = false;

	if (*s->version)
		return true;
	/* discovery.k8s.io/v1 since Kubernetes 1.21; v1beta1 before. */
	if (!kube_request(s->kube, "GET", "/apis/discovery.k8s.io/v1", NULL, NULL, NULL, &r) &&
	    (kube_ok(&r) || r.status == 404)) {
		snprintf(s->version, sizeof(s->version), "%s", kube_ok(&r) ? "v1" : "v1beta1");
		s->res = (struct kube_resource){ "discovery.k8s.io", s->version, "endpointslices", "EndpointSlice", true };
		ok = true;
	}
	kube_result_clear(&r);
	return ok;
}

/* The slice does not exist yet: make it, owned by its Service. */
static int create_slice(struct serving *s, struct target *t, struct kube_result *r)
{
	struct serving_target st = { t->service, t->port_name, t->port };
	struct kube_result svc = { 0 };
	char api[64];
	struct json *doc = NULL;
	int err;

	err = kube_get(s->kube, &res_services, s->ns, t->service, &svc);
	if (!err && !kube_ok(&svc)) {
		kube_result_clear(r);
		*r = svc;
		return 0;
	}
	snprintf(api, sizeof(api), "discovery.k8s.io/%s", s->version);
	if (!err) {
		doc = serving_slice(&st, s->ns, s->ip, s->pod, api, svc.obj);
		err = doc ? 0 : -ENOMEM;
	}
	if (!err) {
		kube_result_clear(r);
		err = kube_create(s->kube, &s->res, s->ns, doc, r);
	}
	json_free(doc);
	kube_result_clear(&svc);
	return err;
}

/* One write toward want; true when t says what we want now. */
static bool write_one(struct serving *s, struct target *t, bool want)
{
	struct serving_target st = { t->service, t->port_name, t->port };
	struct kube_result r = { 0 };
	struct json *patch;
	char name[300];
	const char *rv;
	int err;

	snprintf(name, sizeof(name), "%s" SERVING_SLICE_SUFFIX, t->service);
	/* A withdrawal only undoes our own write: the resourceVersion it made
	 * is the precondition (409: the next leader has written since). */
	patch = serving_patch(&st, s->ns, want ? s->ip : NULL, s->pod, !want && *t->rv ? t->rv : NULL);
	err = patch ? kube_patch(s->kube, &s->res, s->ns, name, KUBE_PATCH_MERGE, patch, false, &r) : -ENOMEM;
	json_free(patch);
	if (!err && r.status == 404)
		err = want ? create_slice(s, t, &r) : 0;
	if (!err && (kube_ok(&r) || (!want && (r.status == 409 || r.status == 404)))) {
		rv = json_str(json_path(r.obj, "metadata", "resourceVersion", NULL));
		t->said = want ? SAID_US : SAID_NONE;
		snprintf(t->rv, sizeof(t->rv), "%s", want && rv ? rv : "");
		log_info(want ? "serving: the Service sends its traffic here" : "serving: the Service sends nothing here",
			 "service=%s/%s address=%s:%u", s->ns, t->service, s->ip, t->port);
		t->warned = false;
		kube_result_clear(&r);
		return true;
	}
	/* A failed redirection may or may not have landed; a failed
	 * withdrawal is still ours to undo. */
	t->said = want ? SAID_UNKNOWN : SAID_US;
	if (!t->warned)
		log_warn("serving: cannot write the Service's EndpointSlice",
			 "slice=%s/%s err=%d status=%ld message=\"%s\" retry_s=%d", s->ns, name, err, r.status, r.message,
			 RETRY_S);
	t->warned = true;
	kube_result_clear(&r);
	return false;
}

static void withdrawn(struct loop *loop, void *arg);

static void *run(void *arg)
{
	struct serving *s = arg;

	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		bool want = s->want, ok = true;
		struct timespec until;

		pthread_mutex_unlock(&s->lock);
		for (size_t i = 0; i < s->n; i++)
			if (needs_write(&s->t[i], want))
				ok = (discover(s) && write_one(s, &s->t[i], want)) && ok;
		pthread_mutex_lock(&s->lock);
		if (s->want != want)
			continue;
		s->settled = ok;
		if (ok && !want && s->withdrawing) {
			s->withdrawing = false;
			loop_post(s->loop, withdrawn, s);
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += RETRY_S;
		while (!s->stop && s->want == want && !s->withdrawing &&
		       (ok ? pthread_cond_wait(&s->cond, &s->lock) : pthread_cond_timedwait(&s->cond, &s->lock, &until)) == 0)
			;
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- the loop side ---- */

static void finish_withdraw(struct serving *s)
{
	void (*done)(void *) = s->done;

	if (!done)
		return;
	s->done = NULL;
	loop_timer_disarm(s->deadline);
	done(s->done_arg);
}

static void withdrawn(struct loop *loop, void *arg)
{
	finish_withdraw(arg);
}

static void on_deadline(struct loop *loop, struct loop_timer *timer, void *arg)
{
	log_warn("serving: stopping before the Services were withdrawn; the next leader points them at itself");
	finish_withdraw(arg);
}

void serving_set(struct serving *s, bool leading)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	if (s->want != leading) {
		s->want = leading;
		s->settled = false;
		pthread_cond_signal(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
}

void serving_withdraw(struct serving *s, uint32_t timeout_ms, void (*done)(void *arg), void *arg)
{
	s->done = done;
	s->done_arg = arg;
	loop_timer_arm(s->deadline, timeout_ms);
	pthread_mutex_lock(&s->lock);
	s->want = false;
	s->settled = false;
	s->withdrawing = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

bool serving_settled(struct serving *s)
{
	bool settled;

	pthread_mutex_lock(&s->lock);
	settled = s->settled;
	pthread_mutex_unlock(&s->lock);
	return settled;
}

int serving_new(struct kube_client *c, struct loop *loop, const struct serving_opts *o, struct serving **out)
{
	struct serving *s;
	pthread_condattr_t ca;
	unsigned char addr[16];
	int err = -ENOMEM;

	if (!o->ntargets || o->ntargets > SERVING_MAX || !o->namespace || !o->pod_ip ||
	    (inet_pton(AF_INET, o->pod_ip, addr) != 1 && inet_pton(AF_INET6, o->pod_ip, addr) != 1))
		return -EINVAL;
	for (size_t i = 0; i < o->ntargets; i++)
		if (!o->targets[i].service || !*o->targets[i].service || strlen(o->targets[i].service) > 240 ||
		    !o->targets[i].port_name || !o->targets[i].port)
			return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->kube = c;
	s->loop = loop;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	s->ns = strdup(o->namespace);
	s->ip = strdup(o->pod_ip);
	s->pod = o->pod_name ? strdup(o->pod_name) : NULL;
	s->deadline = loop_timer_new(loop, on_deadline, s);
	if (!s->ns || !s->ip || (o->pod_name && !s->pod) || !s->deadline)
		goto fail;
	for (size_t i = 0; i < o->ntargets; i++) {
		s->t[i].service = strdup(o->targets[i].service);
		s->t[i].port_name = strdup(o->targets[i].port_name);
		s->t[i].port = o->targets[i].port;
		s->t[i].said = SAID_UNKNOWN;
		s->n++;
		if (!s->t[i].service || !s->t[i].port_name)
			goto fail;
	}
	/* Not leading yet: nothing to write until serving_set(s, true). */
	s->settled = true;
	if ((err = -pthread_create(&s->thread, NULL, run, s)))
		goto fail;
	s->thread_started = true;
	*out = s;
	return 0;
fail:
	serving_free(s);
	return err;
}

void serving_free(struct serving *s)
{
	if (!s)
		return;
	if (s->thread_started) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_signal(&s->cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thread, NULL);
	}
	for (size_t i = 0; i < s->n; i++) {
		free(s->t[i].service);
		free(s->t[i].port_name);
	}
	loop_timer_free(s->deadline);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s->ns);
	free(s->ip);
	free(s->pod);
	free(s);
}
