#include "kube/client.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "buf.h"
#include "http.h"
#include "json.h"
#include "kube/config.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"

#define KUBE_MAX_RESPONSE (64u << 20) /* a 10,000-item list fits */
#define KUBE_TIMEOUT_MS 30000u
#define TOKEN_REREAD_MS 60000u

const struct kube_resource kube_res_secrets = { "", "v1", "secrets", "Secret", true };
const struct kube_resource kube_res_events = { "", "v1", "events", "Event", true };
const struct kube_resource kube_res_pods = { "", "v1", "pods", "Pod", true };
const struct kube_resource kube_res_nodes = { "", "v1", "nodes", "Node", false };
const struct kube_resource kube_res_namespaces = { "", "v1", "namespaces", "Namespace", false };
const struct kube_resource kube_res_leases = { "coordination.k8s.io", "v1", "leases", "Lease", true };

struct kube_client {
	struct loop *loop;
	pthread_t loop_thread; /* the creating thread runs the loop */
	struct http_client *http;
	char *server;
	char *namespace;
	char field_manager[64];
	struct http_tls tls;
	struct kube_config cfg; /* owned copies backing tls */

	/* Loop thread only: */
	char *token;
	uint64_t token_read_at;

	atomic_ulong requests, errors;
	atomic_ullong latency_us;
	struct metrics_family *m_latency, *m_requests;
	struct call *calls; /* loop thread: async requests in flight */
};

struct call {
	struct kube_client *c;
	const char *verb; /* a literal: "GET", "PUT", ... */
	kube_done_cb done;
	void *arg;
	uint64_t started_us;
	struct http_request *req;
	struct call *prev, *next; /* c->calls */
};

static void call_unlink(struct call *call)
{
	if (call->prev)
		call->prev->next = call->next;
	else
		call->c->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	call->prev = call->next = NULL;
}

bool kube_ok(const struct kube_result *r)
{
	return r->err == 0 && r->status >= 200 && r->status < 300;
}

void kube_result_clear(struct kube_result *r)
{
	json_free(r->obj);
	r->obj = NULL;
}

struct json *kube_result_take(struct kube_result *r)
{
	struct json *j = r->obj;

	r->obj = NULL;
	return j;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static char *dup_mem(const char *p, size_t n)
{
	char *d;

	if (!p)
		return NULL;
	d = malloc(n + 1);
	if (d) {
		memcpy(d, p, n);
		d[n] = '\0';
	}
	return d;
}

void kube_cancel(struct kube_client *c, void *arg)
{
	struct call *call, *next;

	for (call = c ? c->calls : NULL; call; call = next) {
		next = call->next;
		if (call->arg != arg)
			continue;
		call_unlink(call);
		http_request_cancel(call->req);
		free(call);
	}
}

void kube_client_free(struct kube_client *c)
{
	if (!c)
		return;
	http_client_free(c->http);
	/* The HTTP client dropped what was in flight without a callback. */
	while (c->calls) {
		struct call *call = c->calls;
		call_unlink(call);
		free(call);
	}
	if (c->token) {
		sodium_memzero(c->token, strlen(c->token));
		free(c->token);
	}
	kube_config_free(&c->cfg);
	free(c->server);
	free(c->namespace);
	free(c);
}

struct kube_client *kube_client_new(struct loop *loop, const struct kube_config *cfg)
{
	struct kube_client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->loop = loop;
	c->loop_thread = pthread_self();
	snprintf(c->field_manager, sizeof(c->field_manager), "knit-operator");
	c->http = http_client_new(loop);
	c->server = dup_or_null(cfg->server);
	c->namespace = strdup(cfg->namespace ? cfg->namespace : "default");
	c->token = dup_or_null(cfg->token);
	c->cfg.token_file = dup_or_null(cfg->token_file);
	c->cfg.ca_file = dup_or_null(cfg->ca_file);
	c->cfg.ca_pem = dup_mem(cfg->ca_pem, cfg->ca_pem_len);
	c->cfg.ca_pem_len = cfg->ca_pem_len;
	c->cfg.cert_file = dup_or_null(cfg->cert_file);
	c->cfg.key_file = dup_or_null(cfg->key_file);
	c->cfg.cert_pem = dup_mem(cfg->cert_pem, cfg->cert_pem_len);
	c->cfg.cert_pem_len = cfg->cert_pem_len;
	c->cfg.key_pem = dup_mem(cfg->key_pem, cfg->key_pem_len);
	c->cfg.key_pem_len = cfg->key_pem_len;
	if (!c->http || !c->server || !c->namespace || (cfg->token && !c->token) ||
	    (cfg->token_file && !c->cfg.token_file) || (cfg->ca_file && !c->cfg.ca_file) ||
	    (cfg->ca_pem && !c->cfg.ca_pem) || (cfg->cert_file && !c->cfg.cert_file) ||
	    (cfg->key_file && !c->cfg.key_file) || (cfg->cert_pem && !c->cfg.cert_pem) ||
	    (cfg->key_pem && !c->cfg.key_pem)) {
		kube_client_free(c);
		return NULL;
	}
	c->tls = (struct http_tls){
		.ca_file = c->cfg.ca_file,
		.ca_pem = c->cfg.ca_pem,
		.ca_pem_len = c->cfg.ca_pem_len,
		.cert_file = c->cfg.cert_file,
		.key_file = c->cfg.key_file,
		.cert_pem = c->cfg.cert_pem,
		.cert_pem_len = c->cfg.cert_pem_len,
		.key_pem = c->cfg.key_pem,
		.key_pem_len = c->cfg.key_pem_len,
		.insecure_skip_verify = cfg->insecure_skip_verify,
	};
	return c;
}

void kube_client_set_metrics(struct kube_client *c, struct metrics_family *latency,
			     struct metrics_family *requests)
{
	c->m_latency = latency;
	c->m_requests = requests;
}

const char *kube_client_field_manager(const struct kube_client *c)
{
	return c->field_manager;
}

struct loop *kube_client_loop(struct kube_client *c)
{
	return c->loop;
}

void kube_client_set_field_manager(struct kube_client *c, const char *manager)
{
	snprintf(c->field_manager, sizeof(c->field_manager), "%s", manager);
}

const char *kube_client_namespace(const struct kube_client *c)
{
	return c->namespace;
}

void kube_client_stats(struct kube_client *c, unsigned long *requests, unsigned long *errors,
		       double *latency_sum_s)
{
	*requests = c->requests;
	*errors = c->errors;
	*latency_sum_s = (double)c->latency_us / 1e6;
}

int kube_path(char *out, size_t outlen, const struct kube_resource *res, const char *ns,
	      const char *name, const char *sub)
{
	int n;

	if (*res->group)
		n = snprintf(out, outlen, "/apis/%s/%s", res->group, res->version);
	else
		n = snprintf(out, outlen, "/api/%s", res->version);
	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	if (res->namespaced && ns && *ns)
		n += snprintf(out + n, outlen - (size_t)n, "/namespaces/%s", ns);
	if ((size_t)n >= outlen)
		return -ENAMETOOLONG;
	n += snprintf(out + n, outlen - (size_t)n, "/%s", res->plural);
	if ((size_t)n >= outlen)
		return -ENAMETOOLONG;
	if (name && *name)
		n += snprintf(out + n, outlen - (size_t)n, "/%s", name);
	if ((size_t)n >= outlen)
		return -ENAMETOOLONG;
	if (sub && *sub)
		n += snprintf(out + n, outlen - (size_t)n, "/%s", sub);
	return (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/* Re-reads a projected token file at most once a minute. */
static const char *current_token(struct kube_client *c)
{
	uint64_t now = loop_now(c->loop);
	FILE *f;
	char tok[8192];
	size_t n;

	if (!c->cfg.token_file)
		return c->token;
	if (c->token && now - c->token_read_at < TOKEN_REREAD_MS)
		return c->token;
	f = fopen(c->cfg.token_file, "re");
	if (!f) {
		log_warn("cannot read service-account token", "file=%s err=%d", c->cfg.token_file, errno);
		return c->token;
	}
	n = fread(tok, 1, sizeof(tok) - 1, f);
	fclose(f);
	while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' '))
		n--;
	tok[n] = '\0';
	if (c->token) {
		sodium_memzero(c->token, strlen(c->token));
		free(c->token);
	}
	c->token = strdup(tok);
	sodium_memzero(tok, sizeof(tok));
	c->token_read_at = now;
	return c->token;
}

/* ---- asynchronous core ---- */


static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void on_http_done(struct http_request *r, const struct http_result *hr, void *arg)
{
	struct call *call = arg;
	struct kube_client *c = call->c;
	struct kube_result res = { .err = hr->err, .status = hr->status };
	struct json_error jerr;

	call_unlink(call);
	uint64_t took = now_us() - call->started_us;
	char code[16];

	c->latency_us += took;
	if (hr->err)
		snprintf(code, sizeof(code), "error");
	else
		snprintf(code, sizeof(code), "%ld", hr->status);
	if (c->m_latency)
		metrics_observe(METRICS_WITH(c->m_latency, call->verb), (double)took / 1e6);
	if (c->m_requests)
		metrics_inc(METRICS_WITH(c->m_requests, call->verb, code));
	if (hr->err) {
		c->errors++;
		snprintf(res.message, sizeof(res.message), "%s", hr->errmsg);
		goto out;
	}
	if (hr->body && hr->body->len > 0) {
		res.obj = json_parse(buf_str(hr->body), hr->body->len, &jerr);
		if (!res.obj) {
			res.err = -EBADMSG;
			snprintf(res.message, sizeof(res.message),
				 "HTTP %ld with an unparseable body (%s at %zu:%zu)", hr->status, jerr.msg,
				 jerr.line, jerr.column);
			goto out;
		}
	}
	if (hr->status < 200 || hr->status >= 300) {
		const char *kind = json_str(json_get(res.obj, "kind"));
		if (kind && strcmp(kind, "Status") == 0) {
			snprintf(res.reason, sizeof(res.reason), "%s", json_str(json_get(res.obj, "reason")) ?: "");
			snprintf(res.message, sizeof(res.message), "%s",
				 json_str(json_get(res.obj, "message")) ?: "");
		} else {
			snprintf(res.message, sizeof(res.message), "HTTP %ld", hr->status);
		}
		json_free(res.obj);
		res.obj = NULL;
	}
out:
	call->done(&res, call->arg);
	kube_result_clear(&res);
	free(call);
}

/* Metric label values must outlive the request: map to literals. */
static const char *verb_name(const char *method)
{
	static const char *const verbs[] = { "GET", "POST", "PUT", "PATCH", "DELETE" };

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(method, verbs[i]) == 0)
			return verbs[i];
	return "OTHER";
}

int kube_request_async(struct kube_client *c, const char *method, const char *path,
		       const char *query, const char *content_type, const struct json *body,
		       kube_done_cb done, void *arg)
{
	struct buf url = BUF_INIT(16384), payload = BUF_INIT(KUBE_MAX_RESPONSE);
	char ctype[128];
	const char *headers[3];
	struct call *call = NULL;
	int err;

	snprintf(ctype, sizeof(ctype), "Content-Type: %s", content_type ? content_type : "application/json");
	headers[0] = "Accept: application/json";
	headers[1] = body ? ctype : NULL;
	headers[2] = NULL;

	err = buf_addf(&url, "%s%s%s%s", c->server, path, query && *query ? "?" : "", query ? query : "");
	if (err)
		goto out;
	if (body && (err = json_dump(body, &payload, 0)))
		goto out;
	call = calloc(1, sizeof(*call));
	if (!call) {
		err = -ENOMEM;
		goto out;
	}
	*call = (struct call){ .c = c, .verb = verb_name(method), .done = done, .arg = arg, .started_us = now_us() };
	struct http_opts o = {
		.method = method,
		.url = buf_str(&url),
		.headers = headers,
		.body = body ? payload.data : NULL,
		.body_len = payload.len,
		.bearer_token = current_token(c),
		.tls = c->tls,
		.timeout_ms = KUBE_TIMEOUT_MS,
		.max_body = KUBE_MAX_RESPONSE,
		.on_done = on_http_done,
		.arg = call,
	};
	err = http_request_start(c->http, &o, &call->req);
	if (err == 0) {
		c->requests++;
		call->next = c->calls;
		if (c->calls)
			c->calls->prev = call;
		c->calls = call;
		call = NULL;
	}
out:
	free(call);
	buf_free(&url);
	buf_free(&payload);
	return err;
}

int kube_stream_async(struct kube_client *c, const char *path, const char *query, uint32_t stall_ms,
		      http_headers_cb on_headers, http_data_cb on_data, http_done_cb on_done,
		      void *arg, struct http_request **out)
{
	static const char *const headers[] = { "Accept: application/json", NULL };
	struct buf url = BUF_INIT(16384);
	int err = buf_addf(&url, "%s%s%s%s", c->server, path, query && *query ? "?" : "", query ? query : "");

	if (!err) {
		struct http_opts o = {
			.method = "GET",
			.url = buf_str(&url),
			.headers = headers,
			.bearer_token = current_token(c),
			.tls = c->tls,
			.stall_timeout_ms = stall_ms,
			.on_headers = on_headers,
			.on_data = on_data,
			.on_done = on_done,
			.arg = arg,
		};
		err = http_request_start(c->http, &o, out);
		if (!err)
			c->requests++;
	}
	buf_free(&url);
	return err;
}

/* ---- blocking wrappers: post to the loop, wait for the result ---- */

struct sync_call {
	struct kube_client *c;
	const char *method, *path, *query, *content_type;
	const struct json *body;
	struct kube_result *res;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool finished;
};

static void sync_done(struct kube_result *res, void *arg)
{
	struct sync_call *s = arg;

	*s->res = *res;
	res->obj = NULL; /* moved */
	pthread_mutex_lock(&s->lock);
	s->finished = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void sync_start(struct loop *loop, void *arg)
{
	struct sync_call *s = arg;
	int err = kube_request_async(s->c, s->method, s->path, s->query, s->content_type, s->body,
				     sync_done, s);

	if (err) {
		struct kube_result res = { .err = err };
		snprintf(res.message, sizeof(res.message), "request not started: %s", strerror(-err));
		sync_done(&res, s);
	}
}

int kube_request(struct kube_client *c, const char *method, const char *path, const char *query,
		 const char *content_type, const struct json *body, struct kube_result *res)
{
	struct sync_call s = {
		.c = c, .method = method, .path = path, .query = query,
		.content_type = content_type, .body = body, .res = res,
	};
	int err;

	memset(res, 0, sizeof(*res));
	/* Waiting on the loop from the loop thread would wait forever. */
	if (pthread_equal(pthread_self(), c->loop_thread))
		return -EDEADLK;
	pthread_mutex_init(&s.lock, NULL);
	pthread_cond_init(&s.cond, NULL);
	err = loop_post(c->loop, sync_start, &s);
	if (err == 0) {
		pthread_mutex_lock(&s.lock);
		while (!s.finished)
			pthread_cond_wait(&s.cond, &s.lock);
		pthread_mutex_unlock(&s.lock);
	}
	pthread_cond_destroy(&s.cond);
	pthread_mutex_destroy(&s.lock);
	return err;
}

int kube_query_add(struct buf *b, const char *key, const char *v)
{
	static const char hex[] = "0123456789ABCDEF";
	int err;

	if (!v || !*v)
		return 0;
	if ((err = buf_addf(b, "%s%s=", b->len ? "&" : "", key)))
		return err;
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		    *p == '-' || *p == '.' || *p == '_' || *p == '~')
			err = buf_add_byte(b, *p);
		else
			err = buf_addf(b, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
		if (err)
			return err;
	}
	return 0;
}

int kube_get(struct kube_client *c, const struct kube_resource *r, const char *ns,
	     const char *name, struct kube_result *res)
{
	char path[1024];
	int err = kube_path(path, sizeof(path), r, ns, name, NULL);

	return err ? err : kube_request(c, "GET", path, NULL, NULL, NULL, res);
}

int kube_list(struct kube_client *c, const struct kube_resource *r, const char *ns,
	      const struct kube_list_opts *o, struct kube_result *res)
{
	struct buf q = BUF_INIT(8192);
	char path[1024], limit[32];
	int err = kube_path(path, sizeof(path), r, ns, NULL, NULL);

	if (err)
		return err;
	if (o) {
		snprintf(limit, sizeof(limit), "%ld", o->limit);
		if ((err = kube_query_add(&q, "labelSelector", o->label_selector)) ||
		    (err = kube_query_add(&q, "fieldSelector", o->field_selector)) ||
		    (err = kube_query_add(&q, "resourceVersion", o->resource_version)) ||
		    (err = kube_query_add(&q, "continue", o->continue_token)) ||
		    (err = kube_query_add(&q, "limit", o->limit > 0 ? limit : NULL)))
			goto out;
	}
	err = kube_request(c, "GET", path, buf_str(&q), NULL, NULL, res);
out:
	buf_free(&q);
	return err;
}

int kube_list_all(struct kube_client *c, const struct kube_resource *r, const char *ns,
		  const struct kube_list_opts *o, struct kube_result *res)
{
	struct kube_list_opts page = o ? *o : (struct kube_list_opts){ 0 };
	struct kube_result next;
	char *cont = NULL;
	int err;

	err = kube_list(c, r, ns, &page, res);
	if (err || !kube_ok(res))
		return err;
	for (;;) {
		const char *token = json_str(json_path(res->obj, "metadata", "continue", NULL));
		struct json *items = json_get(res->obj, "items"), *more;
		if (!token || !*token)
			break;
		free(cont);
		cont = strdup(token);
		if (!cont) {
			err = -ENOMEM;
			break;
		}
		page.continue_token = cont;
		page.resource_version = NULL; /* the continue token pins it */
		err = kube_list(c, r, ns, &page, &next);
		if (err || !kube_ok(&next)) {
			/* Report the failing page (e.g. 410 for an expired token). */
			kube_result_clear(res);
			*res = next;
			break;
		}
		more = json_get(next.obj, "items");
		for (size_t i = 0; i < json_array_len(more); i++) {
			if ((err = json_array_append(items, json_clone(json_array_at(more, i)))))
				break;
		}
		json_object_set(json_get(res->obj, "metadata"), "continue",
				json_clone(json_path(next.obj, "metadata", "continue", NULL)) ?: json_new_string(""));
		/* The list's resourceVersion is that of the first page: all pages are one snapshot. */
		kube_result_clear(&next);
		if (err)
			break;
	}
	free(cont);
	return err;
}

static int write_query(struct kube_client *c, struct buf *q, bool apply)
{
	int err = kube_query_add(q, "fieldManager", c->field_manager);

	if (!err && apply)
		err = kube_query_add(q, "force", "true");
	return err;
}

int kube_create(struct kube_client *c, const struct kube_resource *r, const char *ns,
		const struct json *obj, struct kube_result *res)
{
	struct buf q = BUF_INIT(256);
	char path[1024];
	int err = kube_path(path, sizeof(path), r, ns, NULL, NULL);

	if (!err && !(err = write_query(c, &q, false)))
		err = kube_request(c, "POST", path, buf_str(&q), NULL, obj, res);
	buf_free(&q);
	return err;
}

int kube_update(struct kube_client *c, const struct kube_resource *r, const char *ns,
		const struct json *obj, bool status, struct kube_result *res)
{
	struct buf q = BUF_INIT(256);
	char path[1024];
	const char *name = json_str(json_path(obj, "metadata", "name", NULL));
	int err;

	if (!name)
		return -EINVAL;
	err = kube_path(path, sizeof(path), r, ns, name, status ? "status" : NULL);
	if (!err && !(err = write_query(c, &q, false)))
		err = kube_request(c, "PUT", path, buf_str(&q), NULL, obj, res);
	buf_free(&q);
	return err;
}

int kube_delete(struct kube_client *c, const struct kube_resource *r, const char *ns,
		const char *name, const char *uid, const char *resource_version,
		struct kube_result *res)
{
	struct json *opts = json_new_object(), *pre = json_new_object();
	char path[1024];
	int err = kube_path(path, sizeof(path), r, ns, name, NULL);

	if (!err && (!opts || !pre))
		err = -ENOMEM;
	if (!err && (json_object_set(opts, "kind", json_new_string("DeleteOptions")) ||
		     json_object_set(opts, "apiVersion", json_new_string("v1")) ||
		     json_object_set(opts, "propagationPolicy", json_new_string("Background"))))
		err = -ENOMEM;
	if (!err && uid && json_object_set(pre, "uid", json_new_string(uid)))
		err = -ENOMEM;
	if (!err && resource_version && json_object_set(pre, "resourceVersion", json_new_string(resource_version)))
		err = -ENOMEM;
	if (!err && (uid || resource_version)) {
		err = json_object_set(opts, "preconditions", pre) ? -ENOMEM : 0;
		pre = NULL;
	}
	if (!err)
		err = kube_request(c, "DELETE", path, NULL, NULL, opts, res);
	json_free(pre);
	json_free(opts);
	return err;
}

int kube_patch(struct kube_client *c, const struct kube_resource *r, const char *ns,
	       const char *name, enum kube_patch type, const struct json *patch, bool status,
	       struct kube_result *res)
{
	struct buf q = BUF_INIT(256);
	char path[1024];
	bool apply = type == KUBE_PATCH_APPLY;
	int err = kube_path(path, sizeof(path), r, ns, name, status ? "status" : NULL);

	if (!err && !(err = write_query(c, &q, apply)))
		err = kube_request(c, "PATCH", path, buf_str(&q),
				   apply ? "application/apply-patch+yaml" : "application/merge-patch+json",
				   patch, res);
	buf_free(&q);
	return err;
}

int kube_update_retry(struct kube_client *c, const struct kube_resource *r, const char *ns,
		      const char *name, bool status, int attempts, kube_mutate_fn mutate,
		      void *arg, struct kube_result *res)
{
	int err = 0;

	for (int i = 0; i < attempts; i++) {
		struct kube_result got;
		int m;

		err = kube_get(c, r, ns, name, &got);
		if (err || !kube_ok(&got)) {
			*res = got;
			return err;
		}
		m = mutate(got.obj, arg);
		if (m <= 0) {
			*res = got; /* unchanged: the caller sees the current object */
			return m;
		}
		err = kube_update(c, r, ns, got.obj, status, res);
		kube_result_clear(&got);
		if (err || res->status != 409)
			return err;
		log_debug("conflict, re-reading", "resource=%s name=%s attempt=%d", r->plural, name, i + 1);
		if (i + 1 < attempts)
			kube_result_clear(res);
	}
	return err;
}
