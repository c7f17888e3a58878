#include "webhook.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "buf.h"
#include "control/messages.h"
#include "httpd.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "operator.h"
#include "tlscert.h"

#define REVIEW_MAX (3u << 20) /* a Policy may be 1 MiB of text, escaped */
#define SERVING_DAYS 365u
#define CA_DAYS 3650u
#define RENEW_BEFORE_S (30 * 86400)
#define CA_KEEP_S (400 * 86400) /* a CA to sign a year's certificate with */
#define RECHECK_S 3600
/* The configurations are checked more often than the certificate: one
 * applied (or re-created) after we started trusts no CA until we write
 * ours, and with failurePolicy Fail that refuses every AuthKey. */
#define BUNDLE_CHECK_S 15
#define RETRY_S 10

static const struct kube_resource res_mutating = { "admissionregistration.k8s.io", "v1",
						   "mutatingwebhookconfigurations",
						   "MutatingWebhookConfiguration", false };
static const struct kube_resource res_validating = { "admissionregistration.k8s.io", "v1",
						     "validatingwebhookconfigurations",
						     "ValidatingWebhookConfiguration", false };

/* The certificate material from the Secret. */
struct material {
	struct tlscert_pem ca, serving;
};

struct webhook {
	struct operator *op;
	struct webhook_opts o;
	char **names; /* certificate names; names[0] is the Service's */
	size_t nnames;
	char *listen, *service, *config;
	struct httpd *http; /* loop thread */
	char *serving_cert; /* what http serves (loop thread) */
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock; /* guards stopping and cond */
	pthread_cond_t cond;
	bool stopping;
	atomic_bool ready;
	struct metrics_family *m_requests;
	struct metric *m[2][3]; /* [route][allowed, refused, bad] */
};

static void material_free(struct material *m)
{
	tlscert_pem_free(&m->ca);
	tlscert_pem_free(&m->serving);
}

/* ---- the Secret ---- */

static char *b64_decode(const char *b64)
{
	size_t n = b64 ? strlen(b64) : 0, out = 0;
	char *s;

	if (!n)
		return NULL;
	s = malloc(n + 1);
	if (!s)
		return NULL;
	if (sodium_base642bin((unsigned char *)s, n, b64, n, "\n", &out, NULL, sodium_base64_VARIANT_ORIGINAL)) {
		free(s);
		return NULL;
	}
	s[out] = '\0';
	return s;
}

static struct json *b64_string(const char *text)
{
	size_t n = strlen(text), len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *b = malloc(len);
	struct json *j;

	if (!b)
		return NULL;
	sodium_bin2base64(b, len, (const unsigned char *)text, n, sodium_base64_VARIANT_ORIGINAL);
	j = json_new_string(b);
	sodium_memzero(b, len);
	free(b);
	return j;
}

static void material_from_secret(const struct json *s, struct material *m)
{
	const struct json *d = json_get(s, "data");

	memset(m, 0, sizeof(*m));
	m->ca.cert = b64_decode(json_str(json_get(d, "ca.crt")));
	m->ca.key = b64_decode(json_str(json_get(d, "ca.key")));
	m->serving.cert = b64_decode(json_str(json_get(d, "tls.crt")));
	m->serving.key = b64_decode(json_str(json_get(d, "tls.key")));
}

static bool ca_usable(const struct material *m, time_t now)
{
	time_t end;

	return m->ca.cert && m->ca.key && !tlscert_not_after(m->ca.cert, &end) && end - now > CA_KEEP_S;
}

/* A new serving certificate, and a new CA too unless the one we have will
 * outlive it. */
static int renew(struct webhook *w, struct material *m, time_t now)
{
	struct tlscert_pem srv;
	int err;

	if (!ca_usable(m, now)) {
		tlscert_pem_free(&m->ca);
		err = tlscert_make_ca("knit-operator webhook CA", CA_DAYS, &m->ca);
		if (err)
			return err;
	}
	err = tlscert_make_serving(&m->ca, (const char *const *)w->names, w->nnames, SERVING_DAYS, &srv);
	if (err)
		return err;
	tlscert_pem_free(&m->serving);
	m->serving = srv;
	return 0;
}

static struct json *secret_doc(struct webhook *w, const struct material *m, const char *rv)
{
	struct json *s = json_new_object(), *md = json_new_object(), *labels = json_new_object(),
		    *data = json_new_object();
	int err = 0;

	json_put_str(s, "apiVersion", "v1", &err);
	json_put_str(s, "kind", "Secret", &err);
	json_put_str(md, "name", WEBHOOK_SECRET, &err);
	json_put_str(md, "namespace", w->op->namespace, &err);
	json_put_str(md, "resourceVersion", rv, &err);
	json_put_str(labels, "app.kubernetes.io/managed-by", OPERATOR_MANAGER, &err);
	json_put(md, "labels", labels, &err);
	json_put(s, "metadata", md, &err);
	json_put_str(s, "type", "kubernetes.io/tls", &err);
	json_put(data, "ca.crt", b64_string(m->ca.cert), &err);
	json_put(data, "ca.key", b64_string(m->ca.key), &err);
	json_put(data, "tls.crt", b64_string(m->serving.cert), &err);
	json_put(data, "tls.key", b64_string(m->serving.key), &err);
	json_put(s, "data", data, &err);
	if (err) {
		json_free(s);
		return NULL;
	}
	return s;
}

/* Reads the Secret, renews what needs it and writes it back. 0 with m
 * filled, or a negative errno (try again later). */
static int provision(struct webhook *w, struct material *m)
{
	struct kube_client *kube = w->op->kube;
	struct kube_result r = { 0 }, wr = { 0 };
	time_t now = time(NULL);
	struct json *doc = NULL;
	const char *rv = NULL;
	int err;

	memset(m, 0, sizeof(*m));
	err = kube_get(kube, &kube_res_secrets, w->op->namespace, WEBHOOK_SECRET, &r);
	if (err)
		goto out;
	if (kube_ok(&r)) {
		material_from_secret(r.obj, m);
		rv = json_str(json_path(r.obj, "metadata", "resourceVersion", NULL));
		if (m->serving.key && tlscert_usable(m->serving.cert, m->ca.cert, w->names[0], now, RENEW_BEFORE_S))
			goto out; /* err = 0 */
	} else if (r.status != 404) {
		log_warn("webhook: cannot read the TLS secret", "secret=%s/%s status=%ld message=\"%s\"",
			 w->op->namespace, WEBHOOK_SECRET, r.status, r.message);
		err = -EIO;
		goto out;
	}
	err = renew(w, m, now);
	if (err)
		goto out;
	doc = secret_doc(w, m, rv);
	if (!doc) {
		err = -ENOMEM;
		goto out;
	}
	err = rv ? kube_update(kube, &kube_res_secrets, w->op->namespace, doc, false, &wr)
		 : kube_create(kube, &kube_res_secrets, w->op->namespace, doc, &wr);
	if (!err && !kube_ok(&wr)) {
		/* 409: another replica wrote first; read theirs next round. */
		log_info("webhook: TLS secret not written", "status=%ld message=\"%s\"", wr.status, wr.message);
		err = -EAGAIN;
	} else if (!err) {
		log_info("webhook: TLS certificate issued", "secret=%s/%s name=%s", w->op->namespace, WEBHOOK_SECRET,
			 w->names[0]);
	}
out:
	messages_json_free_secret(doc); /* the keys, base64 */
	kube_result_clear(&r);
	kube_result_clear(&wr);
	if (err)
		material_free(m);
	return err;
}

struct bundle_arg {
	const char *ca_b64;
	bool touched, written;
};

/* Every webhook of the configuration trusts our CA. */
static int set_bundle(struct json *obj, void *arg)
{
	struct bundle_arg *a = arg;
	struct json *hooks = json_get(obj, "webhooks"), *hook, *cc;
	int changed = 0;

	for (size_t i = 0; hooks && (hook = json_array_at(hooks, i)); i++) {
		cc = json_get(hook, "clientConfig");
		if (!json_is_object(cc))
			continue;
		a->touched = true;
		if (json_str(json_get(cc, "caBundle")) && !strcmp(json_str(json_get(cc, "caBundle")), a->ca_b64))
			continue;
		if (json_object_set(cc, "caBundle", json_new_string(a->ca_b64)))
			return -ENOMEM;
		changed = 1;
	}
	a->written = changed;
	return changed;
}

/* true when both configurations trust ca_pem (or do not exist). */
static bool publish_bundle(struct webhook *w, const char *ca_pem)
{
	bool ok = true;
	struct json *b = b64_string(ca_pem);
	const struct kube_resource *res[] = { &res_mutating, &res_validating };

	if (!b)
		return false;
	for (size_t i = 0; i < 2; i++) {
		struct bundle_arg a = { json_str(b), false, false };
		struct kube_result r = { 0 };
		int err = kube_update_retry(w->op->kube, res[i], NULL, w->config, false, 5, set_bundle, &a, &r);

		if (err || (!kube_ok(&r) && r.status != 404 && r.status != 0)) {
			log_warn("webhook: cannot set caBundle", "kind=%s name=%s err=%d status=%ld message=\"%s\"",
				 res[i]->kind, w->config, err, r.status, r.message);
			ok = false;
		} else if (r.status == 404) {
			log_debug("webhook: no configuration to trust us", "kind=%s name=%s", res[i]->kind, w->config);
		} else if (a.written) {
			log_info("webhook: caBundle written", "kind=%s name=%s", res[i]->kind, w->config);
		}
		kube_result_clear(&r);
	}
	json_free(b);
	return ok;
}

/* ---- serving (loop thread) ---- */

struct served {
	struct webhook *w;
	struct material m;
};

static void respond(struct httpd_req *req, struct json *resp)
{
	struct buf out = BUF_INIT(1u << 20);

	if (!resp || json_dump(resp, &out, 0)) {
		httpd_respond_text(req, 500, "internal error\n");
	} else {
		httpd_respond_buf(req, 200, "application/json", &out);
	}
	buf_free(&out);
	json_free(resp);
}

enum { R_AUTHKEY, R_POLICY };

static void review(struct httpd_req *req, struct webhook *w, int route)
{
	struct admission_request ar;
	struct json_error je;
	struct json *rv;
	const void *body;
	char msg[1536] = "", *patch = NULL;
	size_t len;
	int verdict;

	body = httpd_req_body(req, &len);
	rv = json_parse(body, len, &je);
	if (!rv || !admission_request_parse(rv, &ar, msg, sizeof(msg))) {
		if (w->m[route][2])
			metrics_inc(w->m[route][2]);
		httpd_respond_text(req, 400, "%s\n", rv ? msg : "body is not JSON");
		json_free(rv);
		return;
	}
	if (route == R_AUTHKEY)
		verdict = admission_authkey(&ar, &patch, msg, sizeof(msg));
	else if (w->o.policy_check)
		verdict = admission_policy(&ar, w->o.policy_check, w->o.policy_arg, msg, sizeof(msg));
	else
		verdict = 0;
	if (verdict == -ENOMEM) {
		httpd_respond_text(req, 500, "out of memory\n");
	} else {
		if (w->m[route][verdict ? 1 : 0])
			metrics_inc(w->m[route][verdict ? 1 : 0]);
		if (verdict)
			log_info("webhook: refused", "kind=%s operation=%s user=\"%s\" why=\"%s\"", ar.kind, ar.operation,
				 ar.username ? ar.username : "", msg);
		respond(req, admission_response(ar.uid, verdict == 0, verdict ? 403 : 0, verdict ? msg : NULL, patch));
	}
	free(patch);
	json_free(rv);
}

static void h_authkeys(struct httpd_req *req, void *arg)
{
	review(req, arg, R_AUTHKEY);
}

static void h_policies(struct httpd_req *req, void *arg)
{
	review(req, arg, R_POLICY);
}

static void on_material(struct loop *loop, void *arg)
{
	struct served *s = arg;
	struct webhook *w = s->w;
	struct httpd *h = NULL;
	struct httpd_opts ho = { .listen = w->listen, .listen_fd = -1, .conn_limit = 256, .per_ip_limit = 64,
				 .conn_timeout_s = 30, .request_timeout_ms = 10000, .body_budget = 4 * REVIEW_MAX,
				 .tls_cert_pem = s->m.serving.cert, .tls_key_pem = s->m.serving.key };
	int err;

	if (w->serving_cert && !strcmp(w->serving_cert, s->m.serving.cert))
		goto out; /* the same certificate: keep serving */
	/* A new certificate: a new server on the same port (the old one's
	 * connections go; the API server retries). */
	httpd_free(w->http);
	w->http = NULL;
	atomic_store(&w->ready, false);
	free(w->serving_cert);
	w->serving_cert = NULL;
	err = httpd_new(loop, &ho, &h);
	if (!err && ((err = httpd_route(h, "POST", "/mutate/authkeys", REVIEW_MAX, h_authkeys, w)) ||
		     (err = httpd_route(h, "POST", "/validate/policies", REVIEW_MAX, h_policies, w)))) {
		httpd_free(h);
		h = NULL;
	}
	if (err) {
		log_error("webhook: cannot serve", "listen=%s err=%d", w->listen, err);
		goto out;
	}
	w->http = h;
	w->serving_cert = strdup(s->m.serving.cert);
	atomic_store(&w->ready, true);
	log_info("webhook: serving", "listen=%s name=%s", w->listen, w->names[0]);
out:
	material_free(&s->m);
	free(s);
}

/* ---- the provisioning thread ---- */

static bool wait_or_stop(struct webhook *w, unsigned seconds)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += seconds;
	pthread_mutex_lock(&w->lock);
	while (!w->stopping && pthread_cond_timedwait(&w->cond, &w->lock, &ts) == 0)
		;
	stop = w->stopping;
	pthread_mutex_unlock(&w->lock);
	return stop;
}

static void *run(void *arg)
{
	struct webhook *w = arg;
	char *ca = NULL; /* the CA we serve under */
	time_t provisioned = 0;

	do {
		struct served *s;
		int err;

		if (ca && time(NULL) - provisioned < RECHECK_S) {
			publish_bundle(w, ca);
			continue;
		}
		s = calloc(1, sizeof(*s));
		if (!s)
			continue;
		s->w = w;
		err = provision(w, &s->m);
		if (err) {
			free(s);
			if (err != -EAGAIN)
				log_warn("webhook: no certificate yet", "err=%d retry_s=%d", err, RETRY_S);
			if (wait_or_stop(w, err == -EAGAIN ? 1 : RETRY_S))
				break;
			continue;
		}
		free(ca);
		ca = strdup(s->m.ca.cert);
		provisioned = time(NULL);
		publish_bundle(w, s->m.ca.cert);
		if (loop_post(w->op->loop, on_material, s)) {
			material_free(&s->m);
			free(s);
		}
	} while (!wait_or_stop(w, BUNDLE_CHECK_S));
	free(ca);
	return NULL;
}

int webhook_new(struct operator *op, const struct webhook_opts *o, struct webhook **out)
{
	struct webhook *w = calloc(1, sizeof(*w));
	pthread_condattr_t ca;
	char name[512];
	int err = -ENOMEM;
	const char *routes[] = { "authkeys", "policies" }, *results[] = { "allowed", "refused", "bad_request" };

	if (!w)
		return -ENOMEM;
	w->op = op;
	w->o = *o;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	w->listen = strdup(o->listen);
	w->service = strdup(o->service);
	w->config = strdup(o->config);
	w->names = calloc(2 + o->nextra, sizeof(*w->names));
	if (!w->listen || !w->service || !w->config || !w->names)
		goto fail;
	snprintf(name, sizeof(name), "%s.%s.svc", o->service, op->namespace);
	w->names[w->nnames++] = strdup(name);
	snprintf(name, sizeof(name), "%s.%s.svc.cluster.local", o->service, op->namespace);
	w->names[w->nnames++] = strdup(name);
	for (size_t i = 0; i < o->nextra; i++)
		w->names[w->nnames++] = strdup(o->extra_names[i]);
	for (size_t i = 0; i < w->nnames; i++)
		if (!w->names[i])
			goto fail;
	if (op->metrics) {
		w->m_requests = metrics_counter_new(op->metrics, "knit_webhook_requests_total",
						    "Admission reviews by webhook and verdict.",
						    (const char *[]){ "webhook", "result", NULL });
		for (int r = 0; r < 2 && w->m_requests; r++)
			for (int v = 0; v < 3; v++)
				w->m[r][v] = METRICS_WITH(w->m_requests, routes[r], results[v]);
	}
	if ((err = -pthread_create(&w->thread, NULL, run, w)))
		goto fail;
	w->thread_started = true;
	*out = w;
	return 0;
fail:
	webhook_free(w);
	return err;
}

bool webhook_ready(const struct webhook *w)
{
	return w && atomic_load(&w->ready);
}

void webhook_free(struct webhook *w)
{
	if (!w)
		return;
	if (w->thread_started) {
		pthread_mutex_lock(&w->lock);
		w->stopping = true;
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->lock);
		pthread_join(w->thread, NULL);
	}
	httpd_free(w->http);
	free(w->serving_cert);
	for (size_t i = 0; w->names && i < w->nnames; i++)
		free(w->names[i]);
	free(w->names);
	free(w->listen);
	free(w->service);
	free(w->config);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
