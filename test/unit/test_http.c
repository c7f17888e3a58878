/* http.c against real sockets on 127.0.0.1: a small threaded HTTP/1.1
 * server (plain or TLS with required client certificates) whose behaviour
 * is chosen by the request path. Certificates are made at run time with the
 * openssl CLI in a temporary directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "buf.h"
#include "http.h"
#include "loop.h"

#define TEST_DEADLINE_S 30
#define MAX_CONNS 128

/* libknit links libcrypto but not libssl, and the test build gives each
 * test only libknit and cmocka; libssl is in the process anyway (libcurl
 * needs it), so the TLS test server finds its few functions at run time. */
#define SSL_FUNCS(X) X(TLS_server_method) X(SSL_CTX_new) X(SSL_CTX_free) \
	X(SSL_CTX_use_certificate_chain_file) X(SSL_CTX_use_PrivateKey_file) \
	X(SSL_CTX_load_verify_locations) X(SSL_CTX_set_verify) X(SSL_new) X(SSL_free) \
	X(SSL_set_fd) X(SSL_accept) X(SSL_read) X(SSL_write) X(SSL_get1_peer_certificate)
#define SSL_DECL(f) static __typeof__(f) *p_##f;
SSL_FUNCS(SSL_DECL)
static void *libssl;

static bool ssl_load(void)
{
	libssl = dlopen("libssl.so.3", RTLD_NOW);
	if (!libssl)
		return false;
#define SSL_LOAD(f) if (!(p_##f = (__typeof__(f) *)dlsym(libssl, #f))) return false;
	SSL_FUNCS(SSL_LOAD)
#undef SSL_LOAD
	return true;
}

/* ---- test server --------------------------------------------------------- */

struct srv;

struct conn {
	struct srv *srv;
	int fd; /* -1 once closed; guarded by srv->lock */
	SSL *ssl;
	pthread_t thr;
	char cn[128];
};

struct srv {
	int lfd;
	uint16_t port;
	SSL_CTX *tls;
	pthread_t thr;
	atomic_bool stop;
	atomic_int accepted;
	pthread_mutex_t lock; /* guards conns[].fd, nconns */
	struct conn conns[MAX_CONNS];
	int nconns;
};

static ssize_t cn_read(struct conn *cn, void *p, size_t n)
{
	if (cn->ssl)
		return p_SSL_read(cn->ssl, p, (int)n);
	return recv(cn->fd, p, n, 0);
}

static bool cn_write(struct conn *cn, const void *p, size_t n)
{
	const char *s = p;

	while (n > 0) {
		ssize_t w = cn->ssl ? p_SSL_write(cn->ssl, s, (int)n) : send(cn->fd, s, n, MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		s += w;
		n -= (size_t)w;
	}
	return true;
}

static bool cn_printf(struct conn *cn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool cn_printf(struct conn *cn, const char *fmt, ...)
{
	char out[16384];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, sizeof(out), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(out))
		return false;
	return cn_write(cn, out, (size_t)n);
}

static void wait_closed(struct conn *cn)
{
	char sink[4096];

	while (cn_read(cn, sink, sizeof(sink)) > 0)
		;
}

static void header_value(const char *head, const char *name, char *out, size_t outlen)
{
	const char *p = head;
	size_t nl = strlen(name);

	out[0] = '\0';
	while ((p = strstr(p, "\r\n"))) {
		p += 2;
		if (!strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1, *e;
			while (*v == ' ')
				v++;
			e = strstr(v, "\r\n");
			snprintf(out, outlen, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
			return;
		}
	}
}

static bool respond(struct conn *cn, const char *status, const char *ctype, const char *body)
{
	return cn_printf(cn, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s",
			 status, ctype, strlen(body), body);
}

/* Serves one request; false closes the connection. */
static bool serve(struct conn *cn, const char *method, const char *path, const char *head,
		  const char *body)
{
	char auth[256], xtest[64], out[6144], chunk[256];

	if (!strcmp(path, "/ok"))
		return respond(cn, "200 OK", "text/plain", "hello, knit");
	if (!strncmp(path, "/echo", 5)) {
		header_value(head, "Authorization", auth, sizeof(auth));
		header_value(head, "X-Test", xtest, sizeof(xtest));
		snprintf(out, sizeof(out), "method=%s path=%s auth=%s xtest=%s cn=%s body=%s",
			 method, path, auth, xtest, cn->cn, body);
		return respond(cn, "200 OK", "text/plain", out);
	}
	if (!strcmp(path, "/chunked"))
		return cn_printf(cn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
				 "Transfer-Encoding: chunked\r\n\r\n"
				 "4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n");
	if (!strcmp(path, "/status/404"))
		return respond(cn, "404 Not Found", "application/json",
			       "{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"NotFound\",\"code\":404}");
	if (!strcmp(path, "/status/410"))
		return respond(cn, "410 Gone", "application/json",
			       "{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"Expired\",\"code\":410}");
	if (!strcmp(path, "/stall")) {
		cn_printf(cn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			  "Transfer-Encoding: chunked\r\n\r\n");
		wait_closed(cn);
		return false;
	}
	if (!strcmp(path, "/silent")) {
		wait_closed(cn);
		return false;
	}
	if (!strcmp(path, "/reset")) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		memset(out, 'x', 1000);
		cn_printf(cn, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
		cn_write(cn, out, 1000);
		usleep(50 * 1000);
		setsockopt(cn->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		return false;
	}
	if (!strcmp(path, "/big")) {
		memset(out, 'b', sizeof(out));
		if (!cn_printf(cn, "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n"))
			return false;
		for (int i = 0; i < 256 && cn_write(cn, out, sizeof(out)); i++)
			;
		return false;
	}
	if (!strcmp(path, "/stream")) {
		if (!cn_printf(cn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			       "Transfer-Encoding: chunked\r\n\r\n"))
			return false;
		for (int i = 0; !atomic_load(&cn->srv->stop); i++) {
			int n = snprintf(chunk, sizeof(chunk), "{\"type\":\"ADDED\",\"n\":%d,\"pad\":\"%0150d\"}\n", i, 0);
			if (!cn_printf(cn, "%x\r\n%s\r\n", n, chunk))
				break;
			usleep(5 * 1000);
		}
		return false;
	}
	return respond(cn, "400 Bad Request", "text/plain", "unknown path");
}

static void *conn_main(void *arg)
{
	struct conn *cn = arg;
	char in[16384];
	size_t len = 0;

	if (cn->ssl) {
		X509 *peer;
		p_SSL_set_fd(cn->ssl, cn->fd);
		if (p_SSL_accept(cn->ssl) <= 0)
			goto out;
		peer = p_SSL_get1_peer_certificate(cn->ssl);
		if (peer) {
			X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
						  cn->cn, sizeof(cn->cn));
			X509_free(peer);
		}
	}
	for (;;) {
		char method[16], path[512], head[8192], body[4096], cl[32];
		char *end;
		size_t hlen, blen;
		ssize_t n;

		while (!(end = memmem(in, len, "\r\n\r\n", 4))) {
			if (len == sizeof(in))
				goto out;
			n = cn_read(cn, in + len, sizeof(in) - len);
			if (n <= 0)
				goto out;
			len += (size_t)n;
		}
		hlen = (size_t)(end - in) + 4;
		if (hlen >= sizeof(head))
			goto out;
		memcpy(head, in, hlen);
		head[hlen] = '\0';
		if (sscanf(head, "%15s %511s", method, path) != 2)
			goto out;
		header_value(head, "Content-Length", cl, sizeof(cl));
		blen = cl[0] ? strtoul(cl, NULL, 10) : 0;
		if (blen >= sizeof(body) || hlen + blen > sizeof(in))
			goto out;
		while (len < hlen + blen) {
			n = cn_read(cn, in + len, sizeof(in) - len);
			if (n <= 0)
				goto out;
			len += (size_t)n;
		}
		memcpy(body, in + hlen, blen);
		body[blen] = '\0';
		memmove(in, in + hlen + blen, len - hlen - blen);
		len -= hlen + blen;
		if (!serve(cn, method, path, head, body))
			break;
	}
out:
	pthread_mutex_lock(&cn->srv->lock);
	if (cn->ssl)
		p_SSL_free(cn->ssl);
	cn->ssl = NULL;
	close(cn->fd);
	cn->fd = -1;
	pthread_mutex_unlock(&cn->srv->lock);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct srv *s = arg;

	while (!atomic_load(&s->stop)) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		struct conn *cn;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		pthread_mutex_lock(&s->lock);
		if (s->nconns == MAX_CONNS || atomic_load(&s->stop)) {
			pthread_mutex_unlock(&s->lock);
			close(fd);
			continue;
		}
		cn = &s->conns[s->nconns];
		cn->srv = s;
		cn->fd = fd;
		cn->ssl = s->tls ? p_SSL_new(s->tls) : NULL;
		if (pthread_create(&cn->thr, NULL, conn_main, cn) != 0) {
			if (cn->ssl)
				p_SSL_free(cn->ssl);
			close(fd);
		} else {
			s->nconns++;
			atomic_fetch_add(&s->accepted, 1);
		}
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

static int listen_local(uint16_t *port, bool do_listen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (do_listen)
		assert_int_equal(listen(fd, 128), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static struct srv *srv_start(SSL_CTX *tls)
{
	struct srv *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	pthread_mutex_init(&s->lock, NULL);
	s->tls = tls;
	s->lfd = listen_local(&s->port, true);
	assert_int_equal(pthread_create(&s->thr, NULL, accept_main, s), 0);
	return s;
}

static void srv_stop(struct srv *s)
{
	if (!s)
		return;
	atomic_store(&s->stop, true);
	shutdown(s->lfd, SHUT_RDWR);
	pthread_join(s->thr, NULL);
	close(s->lfd);
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nconns; i++)
		if (s->conns[i].fd >= 0)
			shutdown(s->conns[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < s->nconns; i++)
		pthread_join(s->conns[i].thr, NULL);
	if (s->tls)
		p_SSL_CTX_free(s->tls);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- client-side harness ------------------------------------------------- */

struct ctx {
	struct loop *loop;
	struct http_client *http;
	struct srv *srv;
	char url[256];
};

struct res {
	struct ctx *ctx;
	struct http_request *req;
	int done_calls, hdr_calls, chunks;
	int err;
	long status, hdr_status;
	char errmsg[256];
	char ctype[64];
	char *body;
	size_t body_len, bytes;
	uint64_t t_start, t_done;
	/* behaviour */
	int headers_ret;
	int cancel_after; /* cancel self in on_data after this many chunks */
	int free_after; /* free the client in on_data after this many chunks */
	int fail_after; /* return -EBADMSG from on_data after this many chunks */
	bool cancel_in_headers;
	struct res *cancel_other; /* cancel this one's request in on_data */
	struct res *chain; /* start this one from on_done */
	struct http_opts chain_opts;
};

static const char *url(struct ctx *c, const char *path)
{
	snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%u%s", c->srv->port, path);
	return c->url;
}

static int on_headers(struct http_request *r, long status, void *arg)
{
	struct res *rs = arg;
	const char *ct = http_request_header(r, "Content-Type");

	rs->hdr_calls++;
	rs->hdr_status = status;
	if (ct)
		snprintf(rs->ctype, sizeof(rs->ctype), "%s", ct);
	if (rs->cancel_in_headers)
		http_request_cancel(r);
	return rs->headers_ret;
}

static int on_data(struct http_request *r, const void *data, size_t len, void *arg)
{
	struct res *rs = arg;

	assert_int_equal(rs->hdr_calls, 1);
	rs->chunks++;
	rs->bytes += len;
	if (rs->cancel_after && rs->chunks == rs->cancel_after)
		http_request_cancel(r);
	if (rs->free_after && rs->chunks == rs->free_after) {
		http_client_free(rs->ctx->http);
		rs->ctx->http = NULL;
	}
	if (rs->fail_after && rs->chunks == rs->fail_after)
		return -EBADMSG;
	if (rs->cancel_other && rs->chunks == 3) {
		http_request_cancel(rs->cancel_other->req);
		rs->cancel_other->req = NULL;
	}
	return 0;
}

static void on_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct res *rs = arg;
	const char *ct = http_request_header(r, "Content-Type");

	rs->done_calls++;
	rs->err = res->err;
	rs->status = res->status;
	rs->t_done = loop_mono_ms();
	snprintf(rs->errmsg, sizeof(rs->errmsg), "%s", res->errmsg);
	if (ct)
		snprintf(rs->ctype, sizeof(rs->ctype), "%s", ct);
	free(rs->body);
	rs->body = buf_steal(res->body, &rs->body_len);
	assert_non_null(rs->body);
	/* Cancelling oneself in on_done is a documented no-op. */
	http_request_cancel(r);
	if (rs->chain)
		assert_int_equal(http_request_start(rs->ctx->http, &rs->chain_opts, NULL), 0);
}

static struct http_opts opts(struct res *rs, const char *u)
{
	struct http_opts o = {
		.url = u,
		.on_headers = on_headers,
		.on_done = on_done,
		.arg = rs,
	};
	rs->t_start = loop_mono_ms();
	return o;
}

static bool run_until(struct ctx *c, const int *counter, int want, int timeout_ms)
{
	uint64_t end = loop_mono_ms() + (uint64_t)timeout_ms;

	while (*counter < want && loop_mono_ms() < end)
		assert_true(loop_run_once(c->loop, 20) >= 0);
	return *counter >= want;
}

static void run_for(struct ctx *c, int ms)
{
	uint64_t end = loop_mono_ms() + (uint64_t)ms;

	while (loop_mono_ms() < end)
		assert_true(loop_run_once(c->loop, 10) >= 0);
}

static void res_free(struct res *rs)
{
	free(rs->body);
	rs->body = NULL;
}

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	alarm(TEST_DEADLINE_S);
	assert_non_null(c);
	c->loop = loop_new();
	assert_non_null(c->loop);
	c->http = http_client_new(c->loop);
	assert_non_null(c->http);
	c->srv = srv_start(NULL);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	http_client_free(c->http);
	loop_free(c->loop);
	srv_stop(c->srv);
	free(c);
	alarm(0);
	return 0;
}

/* ---- plain HTTP ---------------------------------------------------------- */

static void test_content_length_and_reuse(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/ok"));

	assert_int_equal(http_request_start(c->http, &o, &a.req), 0);
	assert_non_null(a.req);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	assert_int_equal(a.err, 0);
	assert_string_equal(a.errmsg, "");
	assert_int_equal(a.status, 200);
	assert_int_equal(a.hdr_calls, 1);
	assert_int_equal(a.hdr_status, 200);
	assert_string_equal(a.ctype, "text/plain");
	assert_int_equal(a.body_len, 11);
	assert_string_equal(a.body, "hello, knit");

	o = opts(&b, url(c, "/ok"));
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &b.done_calls, 1, 5000));
	assert_int_equal(b.status, 200);
	/* HTTP/1.1 keep-alive: the second request rode the first connection. */
	assert_int_equal(atomic_load(&c->srv->accepted), 1);
	assert_int_equal(a.done_calls, 1);
	res_free(&a);
	res_free(&b);
}

static void test_chunked(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/chunked"));

	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	assert_int_equal(a.err, 0);
	assert_int_equal(a.status, 200);
	assert_string_equal(a.body, "one two three");
	res_free(&a);
}

static void test_status_errors(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c, .headers_ret = -ESTALE };
	struct http_opts o = opts(&a, url(c, "/status/404"));

	/* An HTTP error status is a response, not a transport error. */
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	assert_int_equal(a.err, 0);
	assert_int_equal(a.status, 404);
	assert_string_equal(a.ctype, "application/json");
	assert_non_null(strstr(a.body, "\"reason\":\"NotFound\""));

	/* A watch sees 410 before any body and refuses it. */
	o = opts(&b, url(c, "/status/410"));
	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &b.done_calls, 1, 5000));
	assert_int_equal(b.hdr_status, 410);
	assert_int_equal(b.status, 410);
	assert_int_equal(b.err, -ESTALE);
	assert_int_equal(b.chunks, 0);
	assert_non_null(strstr(b.errmsg, "callback"));
	res_free(&a);
	res_free(&b);
}

static void test_stall(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/stall"));
	uint64_t took;

	o.on_data = on_data;
	o.stall_timeout_ms = 300;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	took = a.t_done - a.t_start;
	assert_int_equal(a.err, -ETIMEDOUT);
	assert_int_equal(a.status, 200);
	assert_int_equal(a.hdr_calls, 1);
	assert_non_null(strstr(a.errmsg, "stalled"));
	assert_true(took >= 280 && took < 1500);
	res_free(&a);
}

static void test_reset_mid_body(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/reset"));

	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	print_message("reset: %s\n", a.errmsg);
	assert_int_equal(a.err, -ECONNRESET);
	assert_int_equal(a.status, 200);
	assert_true(a.errmsg[0] != '\0');
	res_free(&a);
}

static void test_stream_cancel_inside(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c, .cancel_after = 30 };
	struct http_opts o = opts(&a, url(c, "/stream"));

	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.chunks, 30, 5000));
	run_for(c, 200);
	assert_int_equal(a.chunks, 30);
	assert_int_equal(a.done_calls, 0);
	assert_int_equal(a.hdr_status, 200);
}

static void test_stream_cancel_outside(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/stream"));
	int seen;

	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, &a.req), 0);
	assert_true(run_until(c, &a.chunks, 20, 5000));
	http_request_cancel(a.req);
	seen = a.chunks;
	run_for(c, 100);
	assert_int_equal(a.chunks, seen);
	assert_int_equal(a.done_calls, 0);
}

static void test_stream_callback_error(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c, .fail_after = 5 };
	struct http_opts o = opts(&a, url(c, "/stream"));

	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	assert_int_equal(a.err, -EBADMSG);
	assert_int_equal(a.chunks, 5);
	assert_int_equal(a.body_len, 0);
	res_free(&a);
}

static void test_buffered_cap(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/stream"));

	/* An endless body in buffered mode stops at the cap... */
	o.max_body = 4096;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	assert_int_equal(a.err, -EMSGSIZE);
	assert_non_null(strstr(a.errmsg, "4096-byte cap"));
	assert_true(a.body_len <= 4096);

	/* ...and a Content-Length over the cap is refused up front. */
	o = opts(&b, url(c, "/big"));
	o.max_body = 1024;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &b.done_calls, 1, 5000));
	assert_int_equal(b.err, -EMSGSIZE);
	assert_int_equal(b.body_len, 0);
	res_free(&a);
	res_free(&b);
}

static void test_total_timeout(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/silent"));
	uint64_t took;

	o.timeout_ms = 300;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	took = a.t_done - a.t_start;
	assert_int_equal(a.err, -ETIMEDOUT);
	assert_int_equal(a.status, 0);
	assert_int_equal(a.hdr_calls, 0);
	assert_true(took >= 280 && took < 1500);
	res_free(&a);
}

static void test_refused_and_async(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	struct http_opts o;
	uint16_t port;
	int fd = listen_local(&port, false); /* bound, not listening: refuses */

	snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%u/", port);
	o = opts(&a, c->url);
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	/* Never called back from inside http_request_start(). */
	assert_int_equal(a.done_calls, 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	assert_int_equal(a.err, -ECONNREFUSED);
	assert_int_equal(a.status, 0);
	assert_true(a.errmsg[0] != '\0');
	close(fd);
	res_free(&a);
}

static void test_bad_url(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c };
	struct http_opts o = opts(&a, "ftp://127.0.0.1/x");

	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	assert_int_equal(a.err, -EINVAL);
	o = opts(&b, "http://[::1");
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &b.done_calls, 1, 5000));
	assert_int_equal(b.err, -EINVAL);
	res_free(&a);
	res_free(&b);
}

static void test_concurrent(void **state)
{
	struct ctx *c = *state;
	enum { N = 50 };
	struct res rs[N];
	int done = 0;

	memset(rs, 0, sizeof(rs));
	for (int i = 0; i < N; i++) {
		char path[64];
		struct http_opts o;
		rs[i].ctx = c;
		snprintf(path, sizeof(path), "/echo?i=%d", i);
		o = opts(&rs[i], url(c, path));
		assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	}
	for (uint64_t end = loop_mono_ms() + 10000; done < N && loop_mono_ms() < end;) {
		assert_true(loop_run_once(c->loop, 20) >= 0);
		done = 0;
		for (int i = 0; i < N; i++)
			done += rs[i].done_calls;
	}
	assert_int_equal(done, N);
	for (int i = 0; i < N; i++) {
		char want[64];
		snprintf(want, sizeof(want), "path=/echo?i=%d ", i);
		assert_int_equal(rs[i].err, 0);
		assert_int_equal(rs[i].status, 200);
		assert_non_null(strstr(rs[i].body, want));
		res_free(&rs[i]);
	}
}

static void test_methods_headers_token(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c }, d = { .ctx = c };
	const char *hdrs[] = { "X-Test: yes", "Content-Type: application/json", NULL };
	const char *body = "{\"a\":1}";
	struct http_opts o = opts(&a, url(c, "/echo"));

	o.headers = hdrs;
	o.body = body;
	o.body_len = strlen(body);
	o.bearer_token = "s3cr3t-token";
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.done_calls, 1, 5000));
	assert_int_equal(a.status, 200);
	assert_non_null(strstr(a.body, "method=POST "));
	assert_non_null(strstr(a.body, "auth=Bearer s3cr3t-token "));
	assert_non_null(strstr(a.body, "xtest=yes "));
	assert_non_null(strstr(a.body, "body={\"a\":1}"));

	o.arg = &b;
	o.method = "PATCH";
	o.bearer_token = NULL;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &b.done_calls, 1, 5000));
	assert_non_null(strstr(b.body, "method=PATCH "));
	assert_non_null(strstr(b.body, "auth= "));
	assert_non_null(strstr(b.body, "body={\"a\":1}"));

	o = opts(&d, url(c, "/echo"));
	o.method = "DELETE";
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &d.done_calls, 1, 5000));
	assert_non_null(strstr(d.body, "method=DELETE "));
	res_free(&a);
	res_free(&b);
	res_free(&d);
}

static void test_invalid_options(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	const char *smuggle[] = { "X-A: 1\r\nX-B: 2", NULL };
	const char *nocolon[] = { "X-A", NULL };
	struct http_opts o = opts(&a, url(c, "/ok"));
	struct http_request *r = (struct http_request *)&a;

	o.headers = smuggle;
	assert_int_equal(http_request_start(c->http, &o, &r), -EINVAL);
	assert_null(r);
	o.headers = nocolon;
	assert_int_equal(http_request_start(c->http, &o, NULL), -EINVAL);
	o.headers = NULL;
	o.bearer_token = "tok\nX-Evil: 1";
	assert_int_equal(http_request_start(c->http, &o, NULL), -EINVAL);
	o.bearer_token = NULL;
	o.method = "GE T";
	assert_int_equal(http_request_start(c->http, &o, NULL), -EINVAL);
	o.method = NULL;
	o.on_done = NULL;
	assert_int_equal(http_request_start(c->http, &o, NULL), -EINVAL);
	o.on_done = on_done;
	o.url = NULL;
	assert_int_equal(http_request_start(c->http, &o, NULL), -EINVAL);
	run_for(c, 50);
	assert_int_equal(a.done_calls + a.hdr_calls, 0);
}

static void test_cancel_before_added(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c, .headers_ret = 0 };
	struct http_opts o = opts(&a, url(c, "/ok"));

	assert_int_equal(http_request_start(c->http, &o, &a.req), 0);
	http_request_cancel(a.req);
	run_for(c, 100);
	assert_int_equal(a.done_calls + a.hdr_calls, 0);
	assert_int_equal(atomic_load(&c->srv->accepted), 0);

	/* Cancelled in flight from outside any callback: freed at once. */
	o = opts(&b, url(c, "/silent"));
	assert_int_equal(http_request_start(c->http, &o, &b.req), 0);
	run_for(c, 100);
	http_request_cancel(b.req);
	run_for(c, 50);
	assert_int_equal(b.done_calls, 0);
}

static void test_cancel_in_headers_and_cross(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c, .cancel_in_headers = true };
	struct res b = { .ctx = c }, d = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/stream"));

	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	o = opts(&d, url(c, "/stream"));
	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, &d.req), 0);
	/* b cancels d from inside b's own on_data. */
	b.cancel_other = &d;
	o = opts(&b, url(c, "/stream"));
	o.on_data = on_data;
	o.stall_timeout_ms = 2000;
	assert_int_equal(http_request_start(c->http, &o, &b.req), 0);
	assert_true(run_until(c, &b.chunks, 10, 5000));
	http_request_cancel(b.req);
	run_for(c, 50);
	assert_int_equal(a.hdr_calls, 1);
	assert_int_equal(a.chunks + a.done_calls, 0);
	assert_null(d.req);
	assert_int_equal(d.done_calls, 0);
	assert_int_equal(b.done_calls, 0);
}

static void test_start_from_callbacks(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c };
	char next[256];

	/* on_done starts the next request (a relist after a watch ends). */
	snprintf(next, sizeof(next), "%s", url(c, "/chunked"));
	a.chain = &b;
	a.chain_opts = opts(&b, next);
	{
		struct http_opts o = opts(&a, url(c, "/ok"));
		assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	}
	assert_true(run_until(c, &b.done_calls, 1, 5000));
	assert_int_equal(a.status, 200);
	assert_string_equal(b.body, "one two three");
	res_free(&a);
	res_free(&b);
}

static void test_client_free_outstanding(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c }, d = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/stream"));

	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	o = opts(&b, url(c, "/silent"));
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	o = opts(&d, url(c, "/ok")); /* never even added */
	assert_true(run_until(c, &a.chunks, 5, 5000));
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	http_client_free(c->http);
	c->http = NULL;
	run_for(c, 100);
	assert_int_equal(a.done_calls + b.done_calls + d.done_calls + d.hdr_calls, 0);
}

static void test_client_free_inside_callback(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c, .free_after = 5 }, b = { .ctx = c };
	struct http_opts o = opts(&a, url(c, "/stream"));

	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	o = opts(&b, url(c, "/stream"));
	o.on_data = on_data;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &a.chunks, 5, 5000));
	assert_null(c->http);
	run_for(c, 100);
	assert_int_equal(a.chunks, 5);
	assert_int_equal(a.done_calls + b.done_calls, 0);
}

/* ---- TLS ----------------------------------------------------------------- */

static char certdir[64];

static char *path_in(const char *name)
{
	static char p[4][128];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", certdir, name);
	return p[i];
}

static char *slurp(const char *name, size_t *len)
{
	FILE *f = fopen(path_in(name), "rb");
	char *p;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return p;
}

static int group_setup(void **state)
{
	char cmd[2048];

	snprintf(certdir, sizeof(certdir), "/tmp/knit-test-http-XXXXXX");
	if (!mkdtemp(certdir))
		return -1;
	/* Two CAs (one to trust, one not), a server cert for 127.0.0.1 and a
	 * client cert, all from the trusted CA. */
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd %s; "
		 "G='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'; "
		 "for ca in ca ca2; do openssl req -x509 $G -keyout $ca.key -out $ca.crt "
		 "-subj /CN=knit-test-$ca -days 2; done; "
		 "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > srv.ext; "
		 "printf 'extendedKeyUsage=clientAuth\\n' > cli.ext; "
		 "for n in srv cli; do openssl req $G -keyout $n.key -out $n.csr -subj /CN=knit-$n; "
		 "openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
		 "-out $n.crt -days 2 -extfile $n.ext; done",
		 certdir);
	strcat(cmd, " >/dev/null 2>&1");
	if (!ssl_load()) {
		fprintf(stderr, "cannot load libssl: %s\n", dlerror());
		return -1;
	}
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot make test certificates in %s\n", certdir);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[128];

	if (libssl)
		dlclose(libssl);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", certdir);
	return system(cmd) == 0 ? 0 : -1;
}

static SSL_CTX *server_tls(void)
{
	SSL_CTX *t = p_SSL_CTX_new(p_TLS_server_method());

	assert_non_null(t);
	assert_int_equal(p_SSL_CTX_use_certificate_chain_file(t, path_in("srv.crt")), 1);
	assert_int_equal(p_SSL_CTX_use_PrivateKey_file(t, path_in("srv.key"), SSL_FILETYPE_PEM), 1);
	assert_int_equal(p_SSL_CTX_load_verify_locations(t, path_in("ca.crt"), NULL), 1);
	p_SSL_CTX_set_verify(t, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return t;
}

static int tls_setup(void **state)
{
	struct ctx *c;

	setup(state);
	c = *state;
	srv_stop(c->srv);
	c->srv = srv_start(server_tls());
	return 0;
}

static const char *tls_url(struct ctx *c, const char *path)
{
	snprintf(c->url, sizeof(c->url), "https://127.0.0.1:%u%s", c->srv->port, path);
	return c->url;
}

static void tls_run(struct ctx *c, struct res *rs, const struct http_tls *tls)
{
	struct http_opts o = opts(rs, tls_url(c, "/echo"));

	o.tls = *tls;
	assert_int_equal(http_request_start(c->http, &o, NULL), 0);
	assert_true(run_until(c, &rs->done_calls, 1, 5000));
}

static void test_tls_files(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	struct http_tls tls = {
		.ca_file = path_in("ca.crt"),
		.cert_file = path_in("cli.crt"),
		.key_file = path_in("cli.key"),
	};

	tls_run(c, &a, &tls);
	assert_int_equal(a.err, 0);
	assert_int_equal(a.status, 200);
	assert_non_null(strstr(a.body, "cn=knit-cli "));
	res_free(&a);
}

static void test_tls_wrong_ca(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c };
	struct http_tls tls = {
		.ca_file = path_in("ca2.crt"),
		.cert_file = path_in("cli.crt"),
		.key_file = path_in("cli.key"),
	};

	tls_run(c, &a, &tls);
	print_message("wrong CA: %s\n", a.errmsg);
	assert_int_equal(a.err, -EKEYREJECTED);
	assert_int_equal(a.status, 0);
	assert_true(a.errmsg[0] != '\0');

	/* The same server is reachable only when verification is skipped. */
	tls.insecure_skip_verify = true;
	tls_run(c, &b, &tls);
	assert_int_equal(b.err, 0);
	assert_int_equal(b.status, 200);
	res_free(&a);
	res_free(&b);
}

static void test_tls_client_cert_required(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c };
	struct http_tls tls = { .ca_file = path_in("ca.crt") };

	tls_run(c, &a, &tls);
	print_message("no client cert: err=%d %s\n", a.err, a.errmsg);
	assert_true(a.err < 0);
	assert_int_equal(a.status, 0);
	res_free(&a);
}

static void test_tls_blobs(void **state)
{
	struct ctx *c = *state;
	struct res a = { .ctx = c }, b = { .ctx = c };
	struct http_tls tls = { 0 };
	char *ca, *ca2, *crt, *key;

	ca = slurp("ca.crt", &tls.ca_pem_len);
	crt = slurp("cli.crt", &tls.cert_pem_len);
	key = slurp("cli.key", &tls.key_pem_len);
	tls.ca_pem = ca;
	tls.cert_pem = crt;
	tls.key_pem = key;
	tls_run(c, &a, &tls);
	assert_int_equal(a.err, 0);
	assert_int_equal(a.status, 200);
	assert_non_null(strstr(a.body, "cn=knit-cli "));

	/* An in-memory CA replaces the system store: the wrong one fails. */
	ca2 = slurp("ca2.crt", &tls.ca_pem_len);
	tls.ca_pem = ca2;
	tls_run(c, &b, &tls);
	assert_int_equal(b.err, -EKEYREJECTED);
	free(ca);
	free(ca2);
	free(crt);
	free(key);
	res_free(&a);
	res_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_content_length_and_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stall, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_mid_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_cancel_inside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_cancel_outside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_callback_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buffered_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_total_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_and_async, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_url, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_methods_headers_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_options, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_before_added, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_in_headers_and_cross, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_from_callbacks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_free_outstanding, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_free_inside_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_files, tls_setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_wrong_ca, tls_setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_client_cert_required, tls_setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_blobs, tls_setup, teardown),
	};

	/* Test servers write to peers that may have gone. */
	signal(SIGPIPE, SIG_IGN);
	/* Only 127.0.0.1 is ever contacted; keep a proxy from the environment
	 * out of the way. */
	unsetenv("http_proxy");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
