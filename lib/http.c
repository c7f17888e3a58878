#include "http.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <sodium.h>

#include "buf.h"
#include "log.h"
#include "loop.h"

/* One per socket curl asks us to watch; found again through
 * curl_multi_assign(). Also listed on the client because curl_multi_cleanup()
 * does not always report the sockets it closes. */
struct sock {
	int fd;
	unsigned events;
	struct sock *prev, *next;
};

struct http_client {
	struct loop *loop;
	CURLM *multi;
	struct loop_timer *curl_timer; /* CURLMOPT_TIMERFUNCTION's one timer */
	/* Requests are added to the multi handle, and cancelled ones reaped,
	 * from this 0 ms timer: curl refuses both from inside its callbacks,
	 * where our callers' callbacks run. */
	struct loop_timer *kick;
	struct http_request *todo_head, *todo_tail;
	struct http_request *reqs; /* every request not yet freed */
	struct sock *socks;
	/* Nesting depth of our loop callbacks; http_client_free() inside one
	 * only marks the client dying and the outermost one frees it. */
	unsigned depth;
	bool dying;
};

struct http_request {
	struct http_client *c;
	CURL *easy;
	struct curl_slist *hdrs; /* may hold the bearer token: wiped on free */
	uint8_t *body; /* request body copy, wiped on free */
	size_t body_len;
	uint8_t *key; /* client key PEM copy, lent to curl, wiped on free */
	size_t key_len;
	struct buf resp; /* buffered mode */
	struct loop_timer *stall; /* NULL without stall detection */
	uint64_t last_rx;
	uint32_t stall_ms;
	http_headers_cb on_headers;
	http_data_cb on_data;
	http_done_cb on_done;
	void *arg;
	int cb_err; /* set when our curl callbacks abort the transfer */
	bool capped; /* ... because the body outgrew resp.max */
	bool added, on_todo, cancelled, finished, headers_done;
	struct http_request *prev, *next, *todo_next;
	char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void client_destroy(struct http_client *c);

static void enter(struct http_client *c)
{
	c->depth++;
}

static void leave(struct http_client *c)
{
	if (--c->depth == 0 && c->dying)
		client_destroy(c);
}

/* ---- requests: teardown and completion ----------------------------------- */

static void todo_push(struct http_request *r)
{
	struct http_client *c = r->c;

	r->on_todo = true;
	r->todo_next = NULL;
	if (c->todo_tail)
		c->todo_tail->todo_next = r;
	else
		c->todo_head = r;
	c->todo_tail = r;
	loop_timer_arm(c->kick, 0);
}

static struct http_request *todo_pop(struct http_client *c)
{
	struct http_request *r = c->todo_head;

	if (!r)
		return NULL;
	c->todo_head = r->todo_next;
	if (!c->todo_head)
		c->todo_tail = NULL;
	r->on_todo = false;
	return r;
}

/* Not from inside a curl callback (curl_multi_remove_handle() refuses). */
static void request_destroy(struct http_request *r)
{
	struct http_client *c = r->c;
	struct curl_slist *h;

	if (r->prev)
		r->prev->next = r->next;
	else
		c->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	if (r->added)
		curl_multi_remove_handle(c->multi, r->easy);
	curl_easy_cleanup(r->easy);
	for (h = r->hdrs; h; h = h->next)
		sodium_memzero(h->data, strlen(h->data));
	curl_slist_free_all(r->hdrs);
	if (r->body) {
		sodium_memzero(r->body, r->body_len);
		free(r->body);
	}
	if (r->key) {
		sodium_memzero(r->key, r->key_len);
		free(r->key);
	}
	buf_free(&r->resp);
	loop_timer_free(r->stall);
	free(r);
}

static int curl_errno(struct http_request *r, CURLcode rc)
{
	long oserr = 0;

	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
		curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &oserr);
		if (oserr > 0 && oserr < 4096)
			return -(int)oserr;
		/* No socket errno: the TLS layer failed (e.g. an alert). */
		return rc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -EPROTO;
	case CURLE_GOT_NOTHING:
		return -ECONNRESET;
	case CURLE_PARTIAL_FILE:
		return -EPIPE;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EINVAL;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		return -EKEYREJECTED;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_USE_SSL_FAILED:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_HTTP3:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_BAD_CONTENT_ENCODING:
		return -EPROTO;
	case CURLE_FILESIZE_EXCEEDED:
		return -EMSGSIZE;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_WRITE_ERROR:
	case CURLE_ABORTED_BY_CALLBACK:
		return -ECANCELED;
	default:
		return -EIO;
	}
}

/* Calls on_done and frees r. err and r->errbuf are final. */
static void finish(struct http_request *r, int err)
{
	struct http_result res = { .err = err, .body = &r->resp };

	if (err && !r->errbuf[0])
		snprintf(r->errbuf, sizeof(r->errbuf), "%s", strerror(-err));
	res.errmsg = err ? r->errbuf : "";
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
	r->finished = true;
	loop_timer_disarm(r->stall);
	r->on_done(r, &res, r->arg);
	request_destroy(r);
}

/* The final response's headers are in: tell the caller the status before
 * any body, so a watch can tell 410 Gone from an event stream. */
static int headers_complete(struct http_request *r)
{
	long status = 0;
	int err;

	r->headers_done = true;
	if (!r->on_headers)
		return 0;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	err = r->on_headers(r, status, r->arg);
	if (r->cancelled)
		return -ECANCELED;
	if (err < 0) {
		r->cb_err = err;
		return err;
	}
	return 0;
}

static void complete(struct http_request *r, CURLcode rc)
{
	int err = r->cb_err ? r->cb_err : curl_errno(r, rc);

	if (r->capped || rc == CURLE_FILESIZE_EXCEEDED) {
		err = -EMSGSIZE;
		snprintf(r->errbuf, sizeof(r->errbuf),
			 "response body exceeds the %zu-byte cap", r->resp.max);
	} else if (r->cb_err == -ENOMEM && !r->on_data) {
		snprintf(r->errbuf, sizeof(r->errbuf), "out of memory buffering the body");
	} else if (r->cb_err) {
		snprintf(r->errbuf, sizeof(r->errbuf), "aborted by callback: %s",
			 strerror(-r->cb_err));
	} else if (err && !r->errbuf[0]) {
		snprintf(r->errbuf, sizeof(r->errbuf), "%s", curl_easy_strerror(rc));
	}
	if (!err && !r->headers_done && headers_complete(r) < 0) {
		if (r->cancelled)
			return; /* the kick timer reaps it */
		err = r->cb_err;
		snprintf(r->errbuf, sizeof(r->errbuf), "aborted by callback: %s",
			 strerror(-err));
	}
	finish(r, err);
}

static void check_done(struct http_client *c)
{
	struct http_request *r;
	CURLMsg *m;
	CURLcode rc;
	char *priv;
	int left;

	while (!c->dying && (m = curl_multi_info_read(c->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		rc = m->data.result;
		priv = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
		r = (struct http_request *)priv;
		if (r && !r->cancelled)
			complete(r, rc);
	}
}

/* ---- curl callbacks (run inside curl_multi_socket_action) ---------------- */

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct http_request *r = arg;
	size_t len = size * n;
	long status = 0;

	if (r->cancelled)
		return 0;
	r->last_rx = loop_now(r->c->loop);
	if (r->headers_done || len > 2 || (len && p[0] != '\r' && p[0] != '\n'))
		return len;
	/* The blank line ending a header block: a 1xx block, or a proxy's
	 * CONNECT reply (status still 0), is not the response yet. */
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200)
		return len;
	return headers_complete(r) < 0 ? 0 : len;
}

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct http_request *r = arg;
	size_t len = size * n;
	int err;

	if (r->cancelled)
		return 0;
	r->last_rx = loop_now(r->c->loop);
	if (!r->headers_done && headers_complete(r) < 0)
		return 0;
	if (r->on_data) {
		err = r->on_data(r, p, len, r->arg);
		if (r->cancelled)
			return 0;
		if (err < 0) {
			r->cb_err = err;
			return 0;
		}
		return len;
	}
	err = buf_add(&r->resp, p, len);
	if (err) {
		r->capped = err == -ENOSPC;
		r->cb_err = r->capped ? -EMSGSIZE : err;
		return 0;
	}
	return len;
}

static void on_sock_ready(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct http_client *c = arg;
	int mask = 0, running;
	CURLMcode mc;

	if (events & (LOOP_READ | LOOP_HUP))
		mask |= CURL_CSELECT_IN;
	if (events & LOOP_WRITE)
		mask |= CURL_CSELECT_OUT;
	if (events & LOOP_ERROR)
		mask |= CURL_CSELECT_ERR;
	enter(c);
	mc = curl_multi_socket_action(c->multi, fd, mask, &running);
	if (mc != CURLM_OK)
		log_warn("curl_multi_socket_action failed", "err=%d", (int)mc);
	check_done(c);
	leave(c);
}

static void sock_unlink(struct http_client *c, struct sock *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		c->socks = s->next;
	if (s->next)
		s->next->prev = s->prev;
	free(s);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct http_client *c = userp;
	struct sock *s = socketp, *old;
	unsigned events;
	int err;

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			loop_fd_del(c->loop, fd);
			sock_unlink(c, s);
		}
		return 0;
	}
	events = (what & CURL_POLL_IN ? LOOP_READ : 0) | (what & CURL_POLL_OUT ? LOOP_WRITE : 0);
	if (s) {
		if (s->events != events && loop_fd_modify(c->loop, fd, events) < 0)
			return -1;
		s->events = events;
		return 0;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	err = loop_fd_add(c->loop, fd, events, on_sock_ready, c);
	if (err == -EEXIST) {
		/* A socket curl closed without telling us; its number is back. */
		for (old = c->socks; old && old->fd != fd; old = old->next)
			;
		if (old) {
			loop_fd_del(c->loop, fd);
			sock_unlink(c, old);
			err = loop_fd_add(c->loop, fd, events, on_sock_ready, c);
		}
	}
	if (err) {
		log_warn("cannot watch curl socket", "fd=%d err=%d", fd, err);
		free(s);
		return -1;
	}
	s->fd = fd;
	s->events = events;
	s->next = c->socks;
	if (c->socks)
		c->socks->prev = s;
	c->socks = s;
	curl_multi_assign(c->multi, fd, s);
	return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct http_client *c = userp;

	if (timeout_ms < 0)
		loop_timer_disarm(c->curl_timer);
	else
		loop_timer_arm(c->curl_timer, (uint64_t)timeout_ms);
	return 0;
}

/* ---- loop timers --------------------------------------------------------- */

static void on_curl_timeout(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct http_client *c = arg;
	int running;

	enter(c);
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(c);
	leave(c);
}

static void on_kick(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct http_client *c = arg;
	struct http_request *r;
	CURLMcode mc;

	enter(c);
	while (!c->dying && (r = todo_pop(c))) {
		if (r->cancelled) {
			request_destroy(r);
			continue;
		}
		mc = curl_multi_add_handle(c->multi, r->easy);
		if (mc != CURLM_OK) {
			snprintf(r->errbuf, sizeof(r->errbuf), "curl_multi_add_handle: %s",
				 curl_multi_strerror(mc));
			finish(r, mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO);
			continue;
		}
		r->added = true;
		if (r->stall) {
			r->last_rx = loop_now(loop);
			loop_timer_arm(r->stall, r->stall_ms);
		}
	}
	leave(c);
}

/* Re-arming on every chunk would churn the timer heap; instead the timer
 * fires at the earliest possible deadline and checks how long it really
 * has been. */
static void on_stall(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct http_request *r = arg;
	struct http_client *c = r->c;
	uint64_t idle = loop_mono_ms() - r->last_rx;

	if (idle < r->stall_ms) {
		loop_timer_arm(t, r->stall_ms - idle);
		return;
	}
	enter(c);
	snprintf(r->errbuf, sizeof(r->errbuf), "stalled: nothing received for %u ms",
		 r->stall_ms);
	finish(r, -ETIMEDOUT);
	leave(c);
}

/* ---- client -------------------------------------------------------------- */

struct http_client *http_client_new(struct loop *loop)
{
	struct http_client *c;
	CURLMcode mc = CURLM_OK;

	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->loop = loop;
	c->multi = curl_multi_init();
	c->curl_timer = loop_timer_new(loop, on_curl_timeout, c);
	c->kick = loop_timer_new(loop, on_kick, c);
	if (!c->multi || !c->curl_timer || !c->kick)
		goto fail;
	mc = curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	if (mc == CURLM_OK)
		mc = curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	if (mc == CURLM_OK)
		mc = curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	if (mc == CURLM_OK)
		mc = curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	if (mc != CURLM_OK)
		goto fail;
	return c;
fail:
	client_destroy(c);
	return NULL;
}

static void client_destroy(struct http_client *c)
{
	while (c->reqs)
		request_destroy(c->reqs);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	while (c->socks) {
		loop_fd_del(c->loop, c->socks->fd);
		sock_unlink(c, c->socks);
	}
	loop_timer_free(c->kick);
	loop_timer_free(c->curl_timer);
	free(c);
}

void http_client_free(struct http_client *c)
{
	struct http_request *r;

	if (!c || c->dying)
		return;
	c->dying = true;
	for (r = c->reqs; r; r = r->next) {
		r->cancelled = true;
		loop_timer_disarm(r->stall);
	}
	if (c->depth == 0)
		client_destroy(c);
}

/* ---- starting and cancelling --------------------------------------------- */

static bool is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-.^_`|~", *s)))
			return false;
	return true;
}

/* Header values must not smuggle in another header or request. */
static bool is_header_safe(const char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n')
			return false;
	return true;
}

static int add_header(struct curl_slist **list, const char *line)
{
	struct curl_slist *l = curl_slist_append(*list, line);

	if (!l)
		return -ENOMEM;
	*list = l;
	return 0;
}

static CURLcode set_blob(CURL *e, CURLoption opt, const void *p, size_t len, unsigned flags)
{
	struct curl_blob b = { .data = (void *)p, .len = len, .flags = flags };

	return curl_easy_setopt(e, opt, &b);
}

static int setopt_err(CURLcode rc)
{
	switch (rc) {
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_UNKNOWN_OPTION:
	case CURLE_NOT_BUILT_IN:
		return -ENOTSUP;
	default:
		return -EINVAL;
	}
}

#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)

static CURLcode set_tls(struct http_request *r, const struct http_tls *t)
{
	CURL *e = r->easy;
	CURLcode rc = CURLE_OK;

	/* A CA given here is the only trust anchor: no system store too. */
	if (t->ca_pem) {
		rc = set_blob(e, CURLOPT_CAINFO_BLOB, t->ca_pem, t->ca_pem_len, CURL_BLOB_COPY);
		SET(CURLOPT_CAINFO, (char *)NULL);
		SET(CURLOPT_CAPATH, (char *)NULL);
	} else if (t->ca_file) {
		SET(CURLOPT_CAINFO, t->ca_file);
		SET(CURLOPT_CAPATH, (char *)NULL);
	}
	if (t->cert_pem) {
		if (rc == CURLE_OK)
			rc = set_blob(e, CURLOPT_SSLCERT_BLOB, t->cert_pem, t->cert_pem_len,
				      CURL_BLOB_COPY);
	} else if (t->cert_file) {
		SET(CURLOPT_SSLCERT, t->cert_file);
	}
	/* curl would free its own copy of the key unwiped: lend it ours. */
	if (t->key_pem) {
		r->key = malloc(t->key_pem_len ? t->key_pem_len : 1);
		if (!r->key)
			return CURLE_OUT_OF_MEMORY;
		r->key_len = t->key_pem_len;
		memcpy(r->key, t->key_pem, t->key_pem_len);
		if (rc == CURLE_OK)
			rc = set_blob(e, CURLOPT_SSLKEY_BLOB, r->key, r->key_len, CURL_BLOB_NOCOPY);
	} else if (t->key_file) {
		SET(CURLOPT_SSLKEY, t->key_file);
	}
	if (t->insecure_skip_verify) {
		SET(CURLOPT_SSL_VERIFYPEER, 0L);
		SET(CURLOPT_SSL_VERIFYHOST, 0L);
	}
	return rc;
}

static int build_headers(struct http_request *r, const struct http_opts *o)
{
	const char *const *h;
	const char *prefix = "Authorization: Bearer ";
	char *line = NULL;
	size_t n = 0;
	int err = 0;

	for (h = o->headers; h && *h; h++) {
		err = add_header(&r->hdrs, *h);
		if (err)
			goto out;
	}
	/* curl adds "Expect: 100-continue" to large bodies and then waits for
	 * a reply that many servers never send. */
	if (r->body) {
		err = add_header(&r->hdrs, "Expect:");
		if (err)
			goto out;
	}
	if (o->bearer_token) {
		n = strlen(prefix) + strlen(o->bearer_token) + 1;
		line = malloc(n);
		if (!line) {
			err = -ENOMEM;
			goto out;
		}
		snprintf(line, n, "%s%s", prefix, o->bearer_token);
		err = add_header(&r->hdrs, line);
	}
out:
	if (line) {
		sodium_memzero(line, n);
		free(line);
	}
	return err;
}

static int setup(struct http_request *r, const struct http_opts *o)
{
	const char *method = o->method ? o->method : o->body ? "POST" : "GET";
	bool has_body = o->body || !strcmp(method, "POST") || !strcmp(method, "PUT") ||
			!strcmp(method, "PATCH");
	CURL *e = r->easy;
	CURLcode rc = CURLE_OK;
	int err;

	if (has_body) {
		r->body_len = o->body ? o->body_len : 0;
		r->body = malloc(r->body_len ? r->body_len : 1);
		if (!r->body)
			return -ENOMEM;
		if (r->body_len)
			memcpy(r->body, o->body, r->body_len);
	}
	err = build_headers(r, o);
	if (err)
		return err;

	SET(CURLOPT_URL, o->url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_PRIVATE, r);
	SET(CURLOPT_ERRORBUFFER, r->errbuf);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, r);
	SET(CURLOPT_WRITEFUNCTION, on_write);
	SET(CURLOPT_WRITEDATA, r);
	SET(CURLOPT_CONNECTTIMEOUT_MS,
	    (long)(o->connect_timeout_ms ? o->connect_timeout_ms : HTTP_CONNECT_TIMEOUT_DEFAULT_MS));
	SET(CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
	/* Watches sit idle for minutes; keepalives notice a dead peer. */
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_TCP_KEEPIDLE, 30L);
	SET(CURLOPT_TCP_KEEPINTVL, 10L);
	if (r->hdrs)
		SET(CURLOPT_HTTPHEADER, r->hdrs);
	if (!r->on_data && r->resp.max <= (size_t)INT64_MAX)
		SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->resp.max);
	if (has_body) {
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		SET(CURLOPT_POSTFIELDS, r->body);
		if (strcmp(method, "POST"))
			SET(CURLOPT_CUSTOMREQUEST, method);
	} else if (!strcmp(method, "HEAD")) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET")) {
		SET(CURLOPT_CUSTOMREQUEST, method);
	}
	if (rc == CURLE_OK)
		rc = set_tls(r, &o->tls);
	return rc == CURLE_OK ? 0 : setopt_err(rc);
}

#undef SET

int http_request_start(struct http_client *c, const struct http_opts *o,
		       struct http_request **out)
{
	struct http_request *r = NULL;
	const char *const *h;
	int err;

	if (out)
		*out = NULL;
	if (!c || !o || !o->url || !o->on_done || (o->method && !is_token(o->method)) ||
	    (o->bearer_token && !is_header_safe(o->bearer_token)))
		return -EINVAL;
	for (h = o->headers; h && *h; h++)
		if (!is_header_safe(*h) || !strchr(*h, ':'))
			return -EINVAL;
	if (c->dying)
		return -ESHUTDOWN;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->c = c;
	buf_init(&r->resp, o->max_body ? o->max_body : HTTP_MAX_BODY_DEFAULT);
	r->on_headers = o->on_headers;
	r->on_data = o->on_data;
	r->on_done = o->on_done;
	r->arg = o->arg;
	r->stall_ms = o->stall_timeout_ms;
	r->next = c->reqs;
	if (c->reqs)
		c->reqs->prev = r;
	c->reqs = r;

	r->easy = curl_easy_init();
	if (!r->easy) {
		err = -ENOMEM;
		goto out;
	}
	if (r->stall_ms) {
		r->stall = loop_timer_new(c->loop, on_stall, r);
		if (!r->stall) {
			err = -ENOMEM;
			goto out;
		}
	}
	err = setup(r, o);
	if (err)
		goto out;
	todo_push(r);
	if (out)
		*out = r;
out:
	if (err)
		request_destroy(r);
	return err;
}

void http_request_cancel(struct http_request *r)
{
	if (!r || r->cancelled || r->finished)
		return;
	r->cancelled = true;
	loop_timer_disarm(r->stall);
	if (r->on_todo)
		return; /* not added yet: the kick timer frees it */
	if (r->c->depth == 0)
		request_destroy(r);
	else
		todo_push(r);
}

const char *http_request_header(struct http_request *r, const char *name)
{
	struct curl_header *h;

	if (curl_easy_header(r->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return NULL;
	if (h->amount > 1 &&
	    curl_easy_header(r->easy, name, h->amount - 1, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return NULL;
	return h->value;
}
