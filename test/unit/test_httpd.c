/* httpd.c on real loopback sockets: the server runs on a knit loop in the
 * test's thread; clients are libcurl easy handles (or raw sockets, where a
 * client must misbehave) in threads of their own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "buf.h"
#include "httpd.h"
#include "loop.h"
#include "metrics.h"
#include "tlscert.h"

#define TEST_DEADLINE_S 60
#define WAIT_MS 10000

/* ---- fixture -------------------------------------------------------------- */

#define MAX_STREAMS 64

struct fx {
	struct loop *loop;
	struct httpd *s;
	uint16_t port;
	atomic_int handled; /* handler calls */
	size_t stream_queue; /* max_queue for /stream */
	struct httpd_stream *streams[MAX_STREAMS];
	int nstreams;
	int closed; /* on_close calls */
	int frames; /* frames written by the ticker */
	int last_write_err;
	struct metrics *metrics;
	/* /pull: a pull-mode stream producing pull_avail pieces */
	int pull_avail, pull_sent, fills;
	size_t pull_max_queued; /* the most queued when fill was called */
	bool pull_close; /* close once everything available is out */
};

static void h_ok(struct httpd_req *req, void *arg)
{
	struct fx *fx = arg;

	fx->handled++;
	assert_int_equal(httpd_req_set_header(req, "X-Reply", "yes"), 0);
	assert_int_equal(httpd_req_set_header(req, "X-Bad", "a\r\nInjected: 1"), -EINVAL);
	assert_int_equal(httpd_req_set_header(req, "X-Bad", ""), -EINVAL);
	assert_int_equal(httpd_req_set_header(req, "X Bad", "v"), -EINVAL);
	assert_int_equal(httpd_respond(req, 200, "text/plain", "ok\n", 3), 0);
	assert_int_equal(httpd_respond(req, 200, NULL, "x", 1), -EALREADY);
}

/* Echoes the body; reports what it saw of the request in headers. */
static void h_echo(struct httpd_req *req, void *arg)
{
	struct fx *fx = arg;
	struct buf b = BUF_INIT(1u << 20);
	const void *body;
	const char *v;
	size_t len;
	socklen_t slen = 0;
	const struct sockaddr *sa = httpd_req_remote(req, &slen);

	fx->handled++;
	assert_non_null(sa);
	assert_int_equal(sa->sa_family, AF_INET);
	assert_int_equal(slen, sizeof(struct sockaddr_in));
	body = httpd_req_body(req, &len);
	assert_int_equal(((const char *)body)[len], '\0');
	assert_int_equal(buf_add(&b, body, len), 0);
	v = httpd_req_header(req, "x-test");
	httpd_req_set_header(req, "X-Seen", v ? v : "(none)");
	httpd_req_set_header(req, "X-Remote", httpd_req_remote_ip(req));
	v = httpd_req_path_rest(req);
	assert_int_equal(httpd_req_set_header(req, "X-Rest", *v ? v : "(empty)"), 0);
	httpd_req_set_header(req, "X-Path", httpd_req_path(req));
	httpd_req_set_header(req, "X-Method", httpd_req_method(req));
	v = httpd_req_query(req, "q");
	httpd_req_set_header(req, "X-Query", v ? v : "(none)");
	v = httpd_req_query(req, "flag");
	httpd_req_set_header(req, "X-Flag", v ? (*v ? v : "(empty)") : "(none)");
	assert_int_equal(httpd_respond_buf(req, 200, "application/octet-stream", &b), 0);
	assert_null(b.data);
}

static void h_none(struct httpd_req *req, void *arg)
{
	struct fx *fx = arg;

	fx->handled++;
}

static void on_close(struct httpd_stream *st, void *arg)
{
	struct fx *fx = arg;

	fx->closed++;
	/* The stream is still valid here, but closed. */
	assert_int_equal(httpd_stream_write(st, "x", 1), -EPIPE);
	for (int i = 0; i < fx->nstreams; i++)
		if (fx->streams[i] == st)
			fx->streams[i] = NULL;
}

static void h_stream(struct httpd_req *req, void *arg)
{
	struct fx *fx = arg;
	struct httpd_stream *st;

	fx->handled++;
	assert_true(fx->nstreams < MAX_STREAMS);
	st = httpd_stream_start(req, 200, "application/x-ndjson", fx->stream_queue, on_close, fx);
	assert_non_null(st);
	assert_null(httpd_stream_start(req, 200, NULL, 0, on_close, fx));
	assert_int_equal(httpd_respond(req, 200, NULL, "", 0), -EALREADY);
	assert_string_equal(httpd_stream_remote_ip(st), "127.0.0.1");
	assert_int_equal(httpd_stream_write(st, "hello\n", 6), 0);
	fx->streams[fx->nstreams++] = st;
}

#define PULL_LOW_WATER 1000
#define PULL_PIECE 100 /* bytes per piece */

static void pull_fill(struct httpd_stream *st, void *arg)
{
	struct fx *fx = arg;
	char piece[PULL_PIECE + 1];

	fx->fills++;
	if (httpd_stream_queued(st) > fx->pull_max_queued)
		fx->pull_max_queued = httpd_stream_queued(st);
	assert_true(httpd_stream_queued(st) < PULL_LOW_WATER);
	/* A piece at a time, like a netmap in records: up to the low water. */
	while (fx->pull_sent < fx->pull_avail && httpd_stream_queued(st) < PULL_LOW_WATER) {
		snprintf(piece, sizeof(piece), "%0*d\n", PULL_PIECE - 1, fx->pull_sent++);
		assert_int_equal(httpd_stream_write(st, piece, PULL_PIECE), 0);
	}
	if (fx->pull_sent == fx->pull_avail && fx->pull_close)
		httpd_stream_close(st);
}

static void h_pull(struct httpd_req *req, void *arg)
{
	struct fx *fx = arg;
	struct httpd_stream *st;

	fx->handled++;
	st = httpd_stream_start(req, 200, "application/octet-stream", 0, on_close, fx);
	assert_non_null(st);
	httpd_stream_set_fill(st, PULL_LOW_WATER, pull_fill);
	fx->streams[fx->nstreams++] = st;
}

static int open_streams(struct fx *fx)
{
	int n = 0;

	for (int i = 0; i < fx->nstreams; i++)
		n += fx->streams[i] != NULL;
	return n;
}

static struct fx *fx_new(const struct httpd_opts *o)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	struct httpd_opts def = { .listen = "127.0.0.1:0", .listen_fd = -1 };

	assert_non_null(fx);
	fx->loop = loop_new();
	assert_non_null(fx->loop);
	assert_int_equal(httpd_new(fx->loop, o ? o : &def, &fx->s), 0);
	fx->port = httpd_port(fx->s);
	assert_true(fx->port != 0);
	assert_int_equal(httpd_route(fx->s, "GET", "/healthz", 0, h_ok, fx), 0);
	assert_int_equal(httpd_route(fx->s, "POST", "/echo", 1024, h_echo, fx), 0);
	assert_int_equal(httpd_route(fx->s, "PUT", "/echo", 1024, h_echo, fx), 0);
	assert_int_equal(httpd_route(fx->s, "GET", "/m/*", 0, h_echo, fx), 0);
	assert_int_equal(httpd_route(fx->s, "GET", "/m/special", 0, h_ok, fx), 0);
	assert_int_equal(httpd_route(fx->s, "GET", "/m/deeper/*", 0, h_ok, fx), 0);
	assert_int_equal(httpd_route(fx->s, "GET", "/none", 0, h_none, fx), 0);
	assert_int_equal(httpd_route(fx->s, "GET", "/stream", 0, h_stream, fx), 0);
	assert_int_equal(httpd_route(fx->s, "GET", "/pull", 0, h_pull, fx), 0);
	assert_int_equal(httpd_route(fx->s, "GET", "/healthz", 0, h_ok, fx), -EEXIST);
	assert_int_equal(httpd_route(fx->s, "GET", "nope", 0, h_ok, fx), -EINVAL);
	assert_int_equal(httpd_route(fx->s, "GET", "/a*b", 0, h_ok, fx), -EINVAL);
	assert_int_equal(httpd_route(fx->s, "G T", "/x", 0, h_ok, fx), -EINVAL);
	return fx;
}

static void fx_free(struct fx *fx)
{
	httpd_free(fx->s);
	loop_free(fx->loop);
	metrics_free(fx->metrics);
	free(fx);
}

#define RUN_UNTIL(fx, cond)                                                              \
	do {                                                                             \
		uint64_t _end = loop_mono_ms() + WAIT_MS;                                \
		while (!(cond)) {                                                        \
			assert_true(loop_mono_ms() < _end);                              \
			assert_true(loop_run_once((fx)->loop, 20) >= 0);                 \
		}                                                                        \
	} while (0)

/* ---- curl clients in threads ---------------------------------------------------- */

struct client {
	/* in */
	uint16_t port;
	const char *method;
	char path[256];
	const char *body;
	size_t body_len;
	bool chunked; /* send the body with Transfer-Encoding: chunked */
	const char *header; /* one extra "Name: value" */
	size_t abort_after; /* stop reading (and hang up) after this many bytes */
	/* out */
	pthread_t thr;
	CURLcode rc;
	long status;
	pthread_mutex_t lock; /* guards resp */
	struct buf resp;
	struct buf hdrs;
	atomic_size_t received;
	atomic_bool done;
	size_t sent;
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct client *c = arg;

	pthread_mutex_lock(&c->lock);
	assert_int_equal(buf_add(&c->resp, p, n), 0);
	pthread_mutex_unlock(&c->lock);
	c->received += n;
	if (c->abort_after && c->received >= c->abort_after)
		return 0;
	return n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
	struct client *c = arg;

	buf_add(&c->hdrs, p, n);
	return n;
}

static size_t on_upload(char *p, size_t sz, size_t n, void *arg)
{
	struct client *c = arg;
	size_t left = c->body_len - c->sent;

	if (n * sz < left)
		left = n * sz;
	if (left > 100)
		left = 100; /* several chunks */
	memcpy(p, c->body + c->sent, left);
	c->sent += left;
	return left;
}

static void *client_run(void *arg)
{
	struct client *c = arg;
	CURL *h = curl_easy_init();
	struct curl_slist *hl = NULL;
	char url[512];

	assert_non_null(h);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", c->port, c->path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)WAIT_MS);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
	if (c->method && !strcmp(c->method, "HEAD"))
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	else if (c->method)
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
	if (c->body && c->chunked) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
		curl_easy_setopt(h, CURLOPT_READDATA, c);
		hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
	} else if (c->body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)c->body_len);
	}
	if (c->header)
		hl = curl_slist_append(hl, c->header);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	c->rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
	curl_slist_free_all(hl);
	curl_easy_cleanup(h);
	c->done = true;
	return NULL;
}

static struct client *client_start(struct fx *fx, const char *method, const char *path)
{
	struct client *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->port = fx->port;
	c->method = method;
	snprintf(c->path, sizeof(c->path), "%s", path);
	buf_init(&c->resp, 16u << 20);
	buf_init(&c->hdrs, 1u << 20);
	pthread_mutex_init(&c->lock, NULL);
	return c;
}

static void client_go(struct client *c)
{
	assert_int_equal(pthread_create(&c->thr, NULL, client_run, c), 0);
}

static void client_free(struct client *c)
{
	pthread_join(c->thr, NULL);
	buf_free(&c->resp);
	buf_free(&c->hdrs);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* A response header's value from the client's header block, or NULL. */
static const char *hdr(struct client *c, const char *name, char *out, size_t outlen)
{
	const char *p = buf_str(&c->hdrs);
	size_t n = strlen(name);

	for (; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (!strncasecmp(p, name, n) && p[n] == ':') {
			const char *v = p + n + 1, *e;
			while (*v == ' ')
				v++;
			e = strpbrk(v, "\r\n");
			snprintf(out, outlen, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
			return out;
		}
	}
	return NULL;
}

/* Runs one request to completion while the loop runs. */
static struct client *request(struct fx *fx, const char *method, const char *path,
			      const char *body, size_t body_len, bool chunked, const char *header)
{
	struct client *c = client_start(fx, method, path);

	c->body = body;
	c->body_len = body_len;
	c->chunked = chunked;
	c->header = header;
	client_go(c);
	RUN_UNTIL(fx, c->done);
	pthread_join(c->thr, NULL);
	return c;
}

static void client_done(struct client *c)
{
	buf_free(&c->resp);
	buf_free(&c->hdrs);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_routes(void **state)
{
	struct fx *fx = fx_new(NULL);
	struct client *c;
	char v[256];

	c = request(fx, NULL, "/healthz", NULL, 0, false, NULL);
	assert_int_equal(c->rc, CURLE_OK);
	assert_int_equal(c->status, 200);
	assert_string_equal(buf_str(&c->resp), "ok\n");
	assert_string_equal(hdr(c, "Content-Type", v, sizeof(v)), "text/plain");
	assert_string_equal(hdr(c, "X-Reply", v, sizeof(v)), "yes");
	assert_null(hdr(c, "X-Bad", v, sizeof(v)));
	client_done(c);

	c = request(fx, "HEAD", "/healthz", NULL, 0, false, NULL);
	assert_int_equal(c->status, 200);
	assert_int_equal(c->resp.len, 0);
	client_done(c);

	c = request(fx, NULL, "/nope", NULL, 0, false, NULL);
	assert_int_equal(c->status, 404);
	client_done(c);
	c = request(fx, NULL, "/healthz/more", NULL, 0, false, NULL);
	assert_int_equal(c->status, 404);
	client_done(c);
	c = request(fx, NULL, "/m", NULL, 0, false, NULL);
	assert_int_equal(c->status, 404);
	client_done(c);

	c = request(fx, "POST", "/healthz", "x", 1, false, NULL);
	assert_int_equal(c->status, 405);
	assert_string_equal(hdr(c, "Allow", v, sizeof(v)), "GET, HEAD");
	client_done(c);
	c = request(fx, "DELETE", "/echo", NULL, 0, false, NULL);
	assert_int_equal(c->status, 405);
	assert_string_equal(hdr(c, "Allow", v, sizeof(v)), "POST, PUT");
	client_done(c);

	/* prefix routes: exact beats prefix, longer prefix beats shorter */
	c = request(fx, NULL, "/m/abc/def?q=a%20b&flag", NULL, 0, false, "X-Test: hi there");
	assert_int_equal(c->status, 200);
	assert_string_equal(hdr(c, "X-Rest", v, sizeof(v)), "abc/def");
	assert_string_equal(hdr(c, "X-Path", v, sizeof(v)), "/m/abc/def");
	assert_string_equal(hdr(c, "X-Method", v, sizeof(v)), "GET");
	assert_string_equal(hdr(c, "X-Query", v, sizeof(v)), "a b");
	assert_string_equal(hdr(c, "X-Flag", v, sizeof(v)), "(empty)");
	assert_string_equal(hdr(c, "X-Seen", v, sizeof(v)), "hi there");
	assert_string_equal(hdr(c, "X-Remote", v, sizeof(v)), "127.0.0.1");
	client_done(c);
	c = request(fx, NULL, "/m/", NULL, 0, false, NULL);
	assert_int_equal(c->status, 200);
	assert_string_equal(hdr(c, "X-Rest", v, sizeof(v)), "(empty)");
	assert_string_equal(hdr(c, "X-Query", v, sizeof(v)), "(none)");
	client_done(c);
	c = request(fx, NULL, "/m/special", NULL, 0, false, NULL);
	assert_string_equal(buf_str(&c->resp), "ok\n");
	client_done(c);
	c = request(fx, NULL, "/m/deeper/x", NULL, 0, false, NULL);
	assert_string_equal(buf_str(&c->resp), "ok\n");
	client_done(c);

	c = request(fx, NULL, "/none", NULL, 0, false, NULL);
	assert_int_equal(c->status, 500);
	client_done(c);
	fx_free(fx);
}

static void test_body_cap(void **state)
{
	struct fx *fx = fx_new(NULL);
	char big[4096];
	struct client *c;
	int before;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);

	c = request(fx, "POST", "/echo", big, 1024, false, NULL);
	assert_int_equal(c->rc, CURLE_OK);
	assert_int_equal(c->status, 200);
	assert_int_equal(c->resp.len, 1024);
	assert_memory_equal(c->resp.data, big, 1024);
	client_done(c);

	before = fx->handled;
	c = request(fx, "POST", "/echo", big, 1025, false, NULL);
	assert_int_equal(c->status, 413);
	client_done(c);
	c = request(fx, "POST", "/echo", big, sizeof(big), false, NULL);
	assert_int_equal(c->status, 413);
	client_done(c);
	assert_int_equal(fx->handled, before);

	/* chunked: no length up front, so the cap is found while reading */
	c = request(fx, "PUT", "/echo", big, 1000, true, NULL);
	assert_int_equal(c->status, 200);
	assert_int_equal(c->resp.len, 1000);
	assert_memory_equal(c->resp.data, big, 1000);
	client_done(c);
	before = fx->handled;
	c = request(fx, "PUT", "/echo", big, sizeof(big), true, NULL);
	assert_int_equal(c->status, 413);
	client_done(c);
	assert_int_equal(fx->handled, before);

	/* a route with no body allowed */
	c = request(fx, "GET", "/healthz", "x", 1, false, NULL);
	assert_int_equal(c->status, 413);
	client_done(c);

	/* the server still serves */
	c = request(fx, NULL, "/healthz", NULL, 0, false, NULL);
	assert_int_equal(c->status, 200);
	client_done(c);
	fx_free(fx);
}

#define NCLIENTS 40

static void test_many_clients(void **state)
{
	struct fx *fx = fx_new(NULL);
	struct client *c[NCLIENTS];
	char body[64];
	int done;

	for (int i = 0; i < NCLIENTS; i++) {
		c[i] = client_start(fx, "POST", "/echo");
		snprintf(body, sizeof(body), "client %d", i);
		c[i]->body = strdup(body);
		c[i]->body_len = strlen(body);
		client_go(c[i]);
	}
	do {
		done = 0;
		for (int i = 0; i < NCLIENTS; i++)
			done += c[i]->done;
		assert_true(loop_run_once(fx->loop, 20) >= 0);
	} while (done < NCLIENTS);
	for (int i = 0; i < NCLIENTS; i++) {
		assert_int_equal(c[i]->rc, CURLE_OK);
		assert_int_equal(c[i]->status, 200);
		snprintf(body, sizeof(body), "client %d", i);
		assert_string_equal(buf_str(&c[i]->resp), body);
		free((void *)c[i]->body);
		client_free(c[i]);
	}
	assert_int_equal(fx->handled, NCLIENTS);
	fx_free(fx);
}

static void tick(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct fx *fx = arg;
	char frame[32];
	int n;

	fx->frames++;
	n = snprintf(frame, sizeof(frame), "frame %d\n", fx->frames);
	for (int i = 0; i < fx->nstreams; i++) {
		if (!fx->streams[i])
			continue;
		assert_int_equal(httpd_stream_write(fx->streams[i], frame, (size_t)n), 0);
		if (fx->frames == 5) {
			httpd_stream_close(fx->streams[i]);
			httpd_stream_close(fx->streams[i]); /* no-op */
			assert_int_equal(httpd_stream_write(fx->streams[i], "x", 1), -EPIPE);
		}
	}
	if (fx->frames < 5)
		loop_timer_arm(t, 20);
}

static void test_stream(void **state)
{
	struct fx *fx = fx_new(NULL);
	struct client *c[3];
	struct loop_timer *t;

	for (int i = 0; i < 3; i++) {
		c[i] = client_start(fx, NULL, "/stream");
		client_go(c[i]);
	}
	RUN_UNTIL(fx, fx->nstreams == 3 && c[0]->received && c[1]->received && c[2]->received);
	/* The streams idle (suspended) before the ticker starts. */
	for (int i = 0; i < 5; i++)
		loop_run_once(fx->loop, 20);
	assert_int_equal(fx->closed, 0);
	t = loop_timer_new(fx->loop, tick, fx);
	loop_timer_arm(t, 20);
	RUN_UNTIL(fx, c[0]->done && c[1]->done && c[2]->done && fx->closed == 3);
	for (int i = 0; i < 3; i++) {
		char v[64];
		assert_int_equal(c[i]->rc, CURLE_OK);
		assert_int_equal(c[i]->status, 200);
		assert_string_equal(buf_str(&c[i]->resp),
				    "hello\nframe 1\nframe 2\nframe 3\nframe 4\nframe 5\n");
		assert_string_equal(hdr(c[i], "Content-Type", v, sizeof(v)), "application/x-ndjson");
		assert_string_equal(hdr(c[i], "Transfer-Encoding", v, sizeof(v)), "chunked");
		client_free(c[i]);
	}
	loop_timer_free(t);
	fx_free(fx);
}

/* Pull mode: the producer is asked for data as the client takes it, never
 * holds more than the low water plus a piece, idles when it has nothing,
 * and is woken for what comes later. */
static void test_stream_pull(void **state)
{
	struct fx *fx = fx_new(NULL);
	struct client *c = client_start(fx, NULL, "/pull");
	int fills;

	fx->pull_avail = 2000; /* 200 kB: many times the low water */
	client_go(c);
	RUN_UNTIL(fx, fx->pull_sent == 2000 && c->received >= 2000 * PULL_PIECE);
	assert_true(fx->fills > 2000 * PULL_PIECE / (PULL_LOW_WATER + PULL_PIECE));
	assert_true(fx->pull_max_queued < PULL_LOW_WATER);
	/* Nothing more to give: the stream idles, fill is not polled. */
	for (int i = 0; i < 5; i++)
		loop_run_once(fx->loop, 20);
	fills = fx->fills;
	for (int i = 0; i < 5; i++)
		loop_run_once(fx->loop, 20);
	assert_int_equal(fx->fills, fills);
	assert_false(c->done);
	/* More arrives: a wake gets it out, then the producer ends the stream. */
	fx->pull_avail = 2003;
	fx->pull_close = true;
	httpd_stream_wake(fx->streams[0]);
	httpd_stream_wake(fx->streams[0]); /* cheap when already awake */
	RUN_UNTIL(fx, c->done && fx->closed == 1);
	assert_int_equal(c->rc, CURLE_OK);
	assert_int_equal(c->resp.len, 2003u * PULL_PIECE);
	for (int i = 0; i < 2003; i += 667) {
		char want[PULL_PIECE + 1];
		snprintf(want, sizeof(want), "%0*d\n", PULL_PIECE - 1, i);
		assert_memory_equal(c->resp.data + (size_t)i * PULL_PIECE, want, PULL_PIECE);
	}
	client_free(c);
	fx_free(fx);
}

static void test_stream_client_hangs_up(void **state)
{
	struct fx *fx = fx_new(NULL);
	struct client *c = client_start(fx, NULL, "/stream");
	struct client *c2 = client_start(fx, NULL, "/stream");

	/* Hangs up after the first frame, while the stream idles: nothing
	 * more is written, so only watching the socket can notice. */
	c->abort_after = 6;
	client_go(c);
	client_go(c2);
	RUN_UNTIL(fx, c->done && fx->nstreams == 2);
	assert_int_equal(c->rc, CURLE_WRITE_ERROR);
	RUN_UNTIL(fx, fx->closed == 1);
	assert_int_equal(open_streams(fx), 1);
	/* The other stream still works. */
	for (int i = 0; i < fx->nstreams; i++)
		if (fx->streams[i]) {
			assert_int_equal(httpd_stream_write(fx->streams[i], "bye\n", 4), 0);
			httpd_stream_close(fx->streams[i]);
		}
	RUN_UNTIL(fx, c2->done && fx->closed == 2);
	assert_string_equal(buf_str(&c2->resp), "hello\nbye\n");
	client_free(c);
	client_free(c2);
	fx_free(fx);
}

/* Connects and sends a request with a tiny receive buffer; never reads. */
static int raw_connect(uint16_t port, const char *request_text)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), sz = 4096;

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	if (request_text)
		assert_int_equal(send(fd, request_text, strlen(request_text), MSG_NOSIGNAL),
				 (ssize_t)strlen(request_text));
	return fd;
}

static void test_stream_slow_reader(void **state)
{
	struct fx *fx = fx_new(NULL);
	static char frame[64 * 1024];
	int fd, err = 0, writes = 0;
	uint64_t end = loop_mono_ms() + WAIT_MS;

	fx->stream_queue = 256 * 1024;
	fd = raw_connect(fx->port, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
	RUN_UNTIL(fx, fx->nstreams == 1);
	memset(frame, 'f', sizeof(frame));
	/* The kernel's socket buffers take a few MB first; then the queue
	 * fills and the write that would pass the cap closes the stream. */
	while (err == 0) {
		assert_true(loop_mono_ms() < end);
		err = httpd_stream_write(fx->streams[0], frame, sizeof(frame));
		writes++;
		assert_true(httpd_stream_queued(fx->streams[0]) <= fx->stream_queue);
		for (int i = 0; i < 3; i++)
			loop_run_once(fx->loop, 0);
	}
	assert_int_equal(err, -ENOBUFS);
	assert_true(writes > 4);
	RUN_UNTIL(fx, fx->closed == 1);
	close(fd);
	fx_free(fx);
}

static void test_free_with_open_streams(void **state)
{
	struct fx *fx = fx_new(NULL);
	struct client *c[3];

	for (int i = 0; i < 3; i++) {
		c[i] = client_start(fx, NULL, "/stream");
		client_go(c[i]);
	}
	RUN_UNTIL(fx, fx->nstreams == 3 && c[0]->received && c[1]->received && c[2]->received);
	/* one with data queued, one closing, one idle */
	assert_int_equal(httpd_stream_write(fx->streams[0], "queued\n", 7), 0);
	httpd_stream_close(fx->streams[1]);
	httpd_free(fx->s);
	fx->s = NULL;
	assert_int_equal(fx->closed, 3);
	assert_int_equal(open_streams(fx), 0);
	for (int i = 0; i < 3; i++)
		client_free(c[i]); /* their connections were closed */
	fx_free(fx);
}

static void test_listen(void **state)
{
	struct loop *loop = loop_new();
	struct httpd *s = NULL, *s2 = NULL;
	struct httpd_opts o = { .listen_fd = -1 };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);
	static const char *const bad[] = { "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
					   "127.0.0.1:8x", "[::1:80", "[::1]80", "::1:80",
					   "localhost:80", "1.2.3.4.5:80", NULL };
	char spec[64];
	int fd;

	for (size_t i = 0; bad[i]; i++) {
		o.listen = bad[i];
		assert_int_equal(httpd_new(loop, &o, &s), -EINVAL);
	}
	o.listen = NULL;
	assert_int_equal(httpd_new(loop, &o, &s), -EINVAL);

	o.listen = "127.0.0.1:0";
	assert_int_equal(httpd_new(loop, &o, &s), 0);
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", httpd_port(s));
	o.listen = spec;
	assert_int_equal(httpd_new(loop, &o, &s2), -EADDRINUSE);
	httpd_free(s);
	s = NULL;

	o.listen = "[::1]:0";
	if (httpd_new(loop, &o, &s) == 0) {
		assert_true(httpd_port(s) != 0);
		httpd_free(s);
		s = NULL;
	} else {
		print_message("no IPv6 loopback here; skipped [::1]\n");
	}

	/* a pre-bound socket: the server takes it over */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
	o.listen = "ignored";
	o.listen_fd = fd;
	assert_int_equal(httpd_new(loop, &o, &s), 0);
	assert_int_equal(httpd_port(s), ntohs(sin.sin_port));
	httpd_free(s);
	assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed with the server */
	loop_free(loop);
}

static void test_limits(void **state)
{
	struct httpd_opts o = { .listen = "127.0.0.1:0", .listen_fd = -1,
				.per_ip_limit = 2, .conn_timeout_s = 1 };
	struct fx *fx = fx_new(&o);
	struct client *c;
	int a, b;
	char ch;
	uint64_t t0;

	/* Two idle connections use up the per-IP limit. */
	a = raw_connect(fx->port, NULL);
	b = raw_connect(fx->port, NULL);
	for (int i = 0; i < 10; i++)
		loop_run_once(fx->loop, 10);
	c = request(fx, NULL, "/healthz", NULL, 0, false, NULL);
	assert_int_not_equal(c->rc, CURLE_OK);
	client_done(c);
	{
		struct httpd_stats st;
		httpd_get_stats(fx->s, &st);
		assert_true(st.refused_per_ip >= 1);
		assert_int_equal(st.conns, 2);
	}

	/* ... until the idle timeout closes them. */
	t0 = loop_mono_ms();
	RUN_UNTIL(fx, recv(a, &ch, 1, MSG_DONTWAIT) == 0);
	assert_true(loop_mono_ms() - t0 < 3000);
	RUN_UNTIL(fx, recv(b, &ch, 1, MSG_DONTWAIT) == 0);
	close(a);
	close(b);
	c = request(fx, NULL, "/healthz", NULL, 0, false, NULL);
	assert_int_equal(c->status, 200);
	client_done(c);
	fx_free(fx);
}

/* A slowloris client trickles a request a byte at a time: each byte keeps
 * the idle timer alive, the request deadline closes it all the same. A
 * stream (a request being served) is not subject to the deadline. */
static void test_request_deadline(void **state)
{
	struct httpd_opts o = { .listen = "127.0.0.1:0", .listen_fd = -1,
				.conn_timeout_s = 60, .request_timeout_ms = 400 };
	struct fx *fx = fx_new(&o);
	const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
	struct httpd_stats st;
	struct client *c;
	int slow, stream;
	uint64_t t0 = loop_mono_ms(), next = t0;
	size_t i = 0;
	char ch;
	ssize_t n = -1;

	slow = raw_connect(fx->port, NULL);
	stream = raw_connect(fx->port, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
	RUN_UNTIL(fx, fx->nstreams == 1);
	/* One byte every 50 ms until the server hangs up. */
	while (loop_mono_ms() - t0 < 3000) {
		if (loop_mono_ms() >= next) {
			send(slow, i < strlen(req) ? req + i : "a", 1, MSG_NOSIGNAL);
			i++;
			next += 50;
		}
		loop_run_once(fx->loop, 10);
		n = recv(slow, &ch, 1, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			break;
	}
	assert_true(n == 0 || (n < 0 && errno != EAGAIN));
	assert_true(loop_mono_ms() - t0 < 1500);
	httpd_get_stats(fx->s, &st);
	assert_int_equal(st.request_timeouts, 1);
	assert_int_equal(fx->handled, 1); /* the stream's; never the slow one's */
	close(slow);
	/* Well past the deadline the stream is still open and delivering. */
	t0 = loop_mono_ms();
	while (loop_mono_ms() - t0 < 1000)
		loop_run_once(fx->loop, 20);
	assert_int_equal(open_streams(fx), 1);
	assert_int_equal(httpd_stream_write(fx->streams[0], "more\n", 5), 0);
	/* A prompt client is served as ever. */
	c = request(fx, NULL, "/healthz", NULL, 0, false, NULL);
	assert_int_equal(c->status, 200);
	client_done(c);
	close(stream);
	RUN_UNTIL(fx, open_streams(fx) == 0);
	fx_free(fx);
}

/* Bodies held before their handlers run share one budget: a request that
 * would pass it is refused, and the budget comes back when bodies go. */
static void test_body_budget(void **state)
{
	struct httpd_opts o = { .listen = "127.0.0.1:0", .listen_fd = -1, .body_budget = 1500 };
	struct fx *fx = fx_new(&o);
	char body[800], head[256];
	struct httpd_stats st;
	struct client *c;
	int a, b;
	char ch;

	memset(body, 'b', sizeof(body));
	snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
	/* a holds 800 of its 1,000 bytes; b's 800 would make 1,600. */
	a = raw_connect(fx->port, head);
	assert_int_equal(send(a, body, sizeof(body), MSG_NOSIGNAL), (ssize_t)sizeof(body));
	RUN_UNTIL(fx, (httpd_get_stats(fx->s, &st), st.body_bytes == sizeof(body)));
	b = raw_connect(fx->port, head);
	assert_int_equal(send(b, body, sizeof(body), MSG_NOSIGNAL), (ssize_t)sizeof(body));
	RUN_UNTIL(fx, recv(b, &ch, 1, MSG_DONTWAIT) == 0);
	httpd_get_stats(fx->s, &st);
	assert_int_equal(st.body_budget_refused, 1);
	assert_int_equal(st.body_bytes, sizeof(body));
	close(b);
	/* a finishes its body and is answered; the budget is free again. */
	assert_int_equal(send(a, body, 200, MSG_NOSIGNAL), 200);
	RUN_UNTIL(fx, fx->handled == 1);
	close(a);
	RUN_UNTIL(fx, (httpd_get_stats(fx->s, &st), st.body_bytes == 0 && st.conns == 0));
	c = request(fx, "POST", "/echo", body, sizeof(body), false, NULL);
	assert_int_equal(c->status, 200);
	client_done(c);
	fx_free(fx);
}

struct tls_client {
	uint16_t port;
	const char *ca_pem;
	CURLcode rc;
	long status;
	atomic_bool done;
};

static size_t discard(char *p, size_t sz, size_t n, void *arg)
{
	return n;
}

static void *tls_client_run(void *arg)
{
	struct tls_client *c = arg;
	CURL *h = curl_easy_init();
	struct curl_slist *resolve = NULL;
	struct curl_blob ca = { .data = (void *)c->ca_pem, .len = strlen(c->ca_pem), .flags = CURL_BLOB_COPY };
	char url[256], r[128];

	snprintf(url, sizeof(url), "https://knit-webhook.test.svc:%u/healthz", c->port);
	snprintf(r, sizeof(r), "knit-webhook.test.svc:%u:127.0.0.1", c->port);
	resolve = curl_slist_append(resolve, r);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_RESOLVE, resolve);
	curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)WAIT_MS);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	c->rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
	curl_slist_free_all(resolve);
	curl_easy_cleanup(h);
	c->done = true;
	return NULL;
}

static void tls_request(struct fx *fx, struct tls_client *c)
{
	pthread_t t;

	c->port = fx->port;
	c->done = false;
	assert_int_equal(pthread_create(&t, NULL, tls_client_run, c), 0);
	RUN_UNTIL(fx, c->done);
	pthread_join(t, NULL);
}

/* HTTPS with a certificate of our own CA: a client trusting that CA gets
 * its answer; one trusting another CA refuses the server. */
static void test_tls(void **state)
{
	struct tlscert_pem ca, other, srv;
	const char *names[] = { "knit-webhook.test.svc" };
	struct httpd_opts o = { .listen = "127.0.0.1:0", .listen_fd = -1 };
	struct tls_client c = { 0 };
	struct fx *fx;
	struct httpd *bad;
	struct loop *l;

	assert_int_equal(tlscert_make_ca("test CA", 1, &ca), 0);
	assert_int_equal(tlscert_make_ca("other CA", 1, &other), 0);
	assert_int_equal(tlscert_make_serving(&ca, names, 1, 1, &srv), 0);
	o.tls_cert_pem = srv.cert;
	o.tls_key_pem = srv.key;
	fx = fx_new(&o);
	tlscert_pem_free(&srv); /* the server keeps its own copies */
	c.ca_pem = ca.cert;
	tls_request(fx, &c);
	assert_int_equal(c.rc, CURLE_OK);
	assert_int_equal(c.status, 200);
	assert_int_equal(fx->handled, 1);
	c.ca_pem = other.cert;
	tls_request(fx, &c);
	assert_int_not_equal(c.rc, CURLE_OK);
	assert_int_equal(fx->handled, 1);
	fx_free(fx);
	/* A certificate without its key is a configuration error. */
	l = loop_new();
	o.tls_key_pem = NULL;
	o.tls_cert_pem = ca.cert;
	assert_int_equal(httpd_new(l, &o, &bad), -EINVAL);
	loop_free(l);
	tlscert_pem_free(&ca);
	tlscert_pem_free(&other);
}

static double forty_two(void *arg)
{
	return 42;
}

static void test_metrics_route(void **state)
{
	struct fx *fx = fx_new(NULL);
	struct client *c;
	char v[128];

	fx->metrics = metrics_new();
	assert_non_null(metrics_gauge_func_new(fx->metrics, "answer", "The answer.", forty_two, NULL));
	assert_int_equal(httpd_serve_metrics(fx->s, fx->metrics), 0);
	assert_int_equal(httpd_serve_metrics(fx->s, fx->metrics), -EEXIST);
	c = request(fx, NULL, "/metrics", NULL, 0, false, NULL);
	assert_int_equal(c->status, 200);
	assert_string_equal(hdr(c, "Content-Type", v, sizeof(v)), METRICS_CONTENT_TYPE);
	assert_string_equal(buf_str(&c->resp), "# HELP answer The answer.\n# TYPE answer gauge\nanswer 42\n");
	client_done(c);
	fx_free(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_body_cap),
		cmocka_unit_test(test_many_clients),
		cmocka_unit_test(test_stream),
		cmocka_unit_test(test_stream_client_hangs_up),
		cmocka_unit_test(test_stream_pull),
		cmocka_unit_test(test_stream_slow_reader),
		cmocka_unit_test(test_free_with_open_streams),
		cmocka_unit_test(test_listen),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_request_deadline),
		cmocka_unit_test(test_body_budget),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_metrics_route),
	};
	int ret;

	alarm(TEST_DEADLINE_S);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return ret;
}
