#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "strmap.h"

#define LISTEN_BACKLOG 1024
/* libmicrohttpd allocates (and zeroes) this much per streaming response,
 * but a chunked (HTTP/1.1) response is read into the connection's own
 * buffer instead; only HTTP/1.0 streams use it. Small: thousands of map
 * streams each hold one. */
#define STREAM_BLOCK_SIZE (4u * 1024)
#define STREAM_KEEP_BYTES 4096u /* a drained queue keeps at most this */
#define RESP_HEADERS_MAX (16u * 1024)
/* A chunked body over the cap is read and dropped so that the client gets
 * its 413; past this much more it is not worth the bandwidth. */
#define DISCARD_MAX (1u << 20)
#define METRICS_MAX (16u << 20)

struct route {
	char *method;
	char *path; /* for a prefix route, without the trailing '*' */
	size_t path_len;
	bool prefix;
	size_t max_body;
	httpd_handler_fn fn;
	void *arg;
};

/* One accepted connection (MHD's socket context), for the per-address
 * limit and the request deadline. */
struct conn {
	struct httpd *s;
	int fd;
	bool busy; /* a request is with its handler or streaming */
	uint64_t since_ms; /* accepted, or its last response completed */
	char ip[INET6_ADDRSTRLEN];
	struct conn *prev, *next;
};

/* All fields are loop-thread only; no locks. */
struct httpd {
	struct loop *loop;
	struct MHD_Daemon *mhd;
	int epfd; /* MHD's, registered on the loop; -1 until then */
	struct loop_timer *timer; /* MHD's timeout, and kicks after a resume */
	bool kick; /* a connection was resumed: run MHD again soon */
	uint16_t port;
	struct route **routes; /* pointers: requests in flight keep theirs */
	size_t nroutes;
	struct httpd_stream *streams; /* not yet on_close'd */
	struct metrics *metrics; /* for httpd_serve_metrics() */
	unsigned per_ip_limit;
	unsigned request_timeout_ms;
	size_t body_budget;
	struct strmap *per_ip; /* ip -> open connections (as a pointer-sized count) */
	struct conn *conns;
	struct loop_timer *sweep; /* request deadlines */
	char *tls_cert, *tls_key; /* PEM, for MHD's life */
	struct httpd_stats stats;
};

enum stream_state {
	ST_OPEN,
	ST_CLOSING, /* flush the queue, then end the response */
	ST_ABORT, /* drop the queue, close the connection */
	ST_DONE, /* on_close called */
};

struct httpd_stream {
	struct httpd *s;
	struct MHD_Connection *conn; /* NULL once ST_DONE */
	enum stream_state state;
	struct buf q; /* outgoing; bytes before head are already sent */
	size_t head;
	size_t max_queue;
	bool suspended;
	/* While suspended MHD does not look at the socket, so a client that
	 * hangs up would go unnoticed until the next write; we watch for it.
	 * The watch stays from the first suspension to the end (not toggled
	 * per suspension: a fan-out to thousands of streams would pay two
	 * epoll_ctl calls each); a client that talks ends it (watch_off). */
	int watch_fd;
	bool watch_off;
	/* One for the connection (dropped at completion), one for the MHD
	 * response whose reader uses the stream (dropped in its free cb). */
	int refs;
	httpd_stream_close_fn on_close;
	httpd_stream_fill_fn fill;
	size_t low_water;
	void *arg;
	char ip[INET6_ADDRSTRLEN];
	struct httpd_stream *prev, *next;
};

struct httpd_req {
	struct httpd *s;
	struct MHD_Connection *conn;
	struct conn *c; /* NULL for a connection MHD set up without us */
	const char *method; /* MHD's, valid for the request */
	const char *path;
	const char *rest;
	const struct route *route;
	struct buf body;
	size_t discarded;
	bool too_large;
	unsigned status;
	struct MHD_Response *resp;
	struct httpd_stream *stream;
	struct buf hdrs; /* staged response headers: "name\0value\0"... */
	char ip[INET6_ADDRSTRLEN];
};

/* ---- driving MHD from the loop ------------------------------------------ */

static void rearm(struct httpd *s)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (s->kick) {
		loop_timer_arm(s->timer, 0);
		return;
	}
	if (MHD_get_timeout(s->mhd, &ms) == MHD_YES)
		loop_timer_arm(s->timer, ms > INT_MAX ? INT_MAX : (uint64_t)ms);
	else
		loop_timer_disarm(s->timer);
}

static void pump(struct httpd *s)
{
	s->kick = false;
	MHD_run(s->mhd);
	rearm(s);
}

static void on_epoll(struct loop *loop, int fd, unsigned events, void *arg)
{
	pump(arg);
}

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	pump(arg);
}

__attribute__((format(printf, 2, 0)))
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	if (!log_enabled(LOG_DEBUG))
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	/* MHD's messages are mostly a client misbehaving or going away. */
	log_debug("httpd: libmicrohttpd", "detail=\"%s\"", line);
}

/* ---- streams ------------------------------------------------------------- */

static void stream_unref(struct httpd_stream *st)
{
	if (--st->refs > 0)
		return;
	buf_free(&st->q);
	free(st);
}

static void stream_unwatch(struct httpd_stream *st)
{
	if (st->watch_fd < 0)
		return;
	loop_fd_del(st->s->loop, st->watch_fd);
	st->watch_fd = -1;
}

static void stream_resume(struct httpd_stream *st)
{
	if (!st->suspended)
		return;
	st->suspended = false;
	MHD_resume_connection(st->conn);
	st->s->kick = true;
	loop_timer_arm(st->s->timer, 0);
}

static void stream_abort(struct httpd_stream *st)
{
	const union MHD_ConnectionInfo *ci;

	if (st->state == ST_DONE || st->state == ST_ABORT)
		return;
	st->state = ST_ABORT;
	buf_free(&st->q);
	st->head = 0;
	/* MHD has no "close this connection"; and a client that does not
	 * read never makes the socket writable, so the reader would not run
	 * to say so. A shutdown wakes MHD with an error on the socket, which
	 * MHD still owns and closes. */
	ci = MHD_get_connection_info(st->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci)
		shutdown(ci->connect_fd, SHUT_RDWR);
	stream_resume(st);
}

static void on_peer(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct httpd_stream *st = arg;
	char c;
	ssize_t r;

	r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r > 0) {
		/* The client is talking during a stream (pipelining); leave it
		 * to MHD and notice a hang-up at the next write instead. */
		stream_unwatch(st);
		st->watch_off = true;
		return;
	}
	log_debug("httpd: stream client went away", "remote=%s", st->ip);
	stream_abort(st);
}

static void stream_suspend(struct httpd_stream *st)
{
	const union MHD_ConnectionInfo *ci;

	MHD_suspend_connection(st->conn);
	st->suspended = true;
	if (st->watch_fd >= 0 || st->watch_off)
		return;
	ci = MHD_get_connection_info(st->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci && loop_fd_add(st->s->loop, ci->connect_fd, LOOP_READ, on_peer, st) == 0)
		st->watch_fd = ci->connect_fd;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct httpd_stream *st = cls;
	size_t avail = st->q.len - st->head;

	if (st->state == ST_ABORT || st->state == ST_DONE)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (st->fill && st->state == ST_OPEN && avail < st->low_water) {
		st->refs++; /* fill may abort the stream; it stays ours until we return */
		st->fill(st, st->arg);
		if (st->state == ST_ABORT || st->state == ST_DONE) {
			stream_unref(st);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		stream_unref(st);
		avail = st->q.len - st->head;
	}
	if (avail > 0) {
		size_t n = avail < max ? avail : max;
		memcpy(out, st->q.data + st->head, n);
		st->head += n;
		if (st->head == st->q.len) {
			/* Drained: the queue gives its memory back (thousands of
			 * idle streams must not each keep their last burst). */
			if (st->q.alloc > STREAM_KEEP_BYTES)
				buf_free(&st->q);
			else
				buf_reset(&st->q);
			st->head = 0;
		}
		return (ssize_t)n;
	}
	if (st->state == ST_CLOSING)
		return MHD_CONTENT_READER_END_OF_STREAM;
	/* Nothing to send: park the connection instead of having MHD poll us.
	 * Suspending from a content reader is allowed by MHD. */
	stream_suspend(st);
	return 0;
}

static void stream_response_free(void *cls)
{
	stream_unref(cls);
}

/* The connection is over: tell the owner, once. */
static void stream_finish(struct httpd_stream *st)
{
	struct httpd *s = st->s;

	stream_unwatch(st);
	if (st->prev)
		st->prev->next = st->next;
	else
		s->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	st->prev = st->next = NULL;
	st->state = ST_DONE;
	st->conn = NULL;
	st->suspended = false;
	buf_free(&st->q);
	st->head = 0;
	if (st->on_close)
		st->on_close(st, st->arg);
	stream_unref(st);
}

struct httpd_stream *httpd_stream_start(struct httpd_req *req, unsigned status,
					const char *content_type, size_t max_queue,
					httpd_stream_close_fn on_close, void *arg)
{
	struct httpd_stream *st;

	if (req->resp || req->stream) {
		errno = EALREADY;
		return NULL;
	}
	if (status < 200 || status > 599) {
		errno = EINVAL;
		return NULL;
	}
	if (content_type && httpd_req_set_header(req, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) < 0) {
		errno = EINVAL;
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		errno = ENOMEM;
		return NULL;
	}
	st->s = req->s;
	st->conn = req->conn;
	st->max_queue = max_queue ? max_queue : HTTPD_STREAM_QUEUE_DEFAULT;
	buf_init(&st->q, st->max_queue);
	st->watch_fd = -1;
	st->refs = 1;
	st->on_close = on_close;
	st->arg = arg;
	memcpy(st->ip, req->ip, sizeof(st->ip));
	st->next = req->s->streams;
	if (st->next)
		st->next->prev = st;
	req->s->streams = st;
	req->stream = st;
	req->status = status;
	return st;
}

int httpd_stream_write(struct httpd_stream *st, const void *data, size_t len)
{
	int err;

	if (st->state != ST_OPEN)
		return -EPIPE;
	if (st->head > 0) {
		memmove(st->q.data, st->q.data + st->head, st->q.len - st->head);
		st->q.len -= st->head;
		st->head = 0;
	}
	if (len > st->max_queue - st->q.len) {
		log_warn("httpd: stream client too slow, closing", "remote=%s queued=%zu",
			 st->ip, st->q.len);
		stream_abort(st);
		return -ENOBUFS;
	}
	err = buf_add(&st->q, data, len);
	if (err < 0) {
		stream_abort(st);
		return err;
	}
	stream_resume(st);
	return 0;
}

void httpd_stream_close(struct httpd_stream *st)
{
	if (st->state != ST_OPEN)
		return;
	st->state = ST_CLOSING;
	stream_resume(st);
}

void httpd_stream_set_fill(struct httpd_stream *st, size_t low_water, httpd_stream_fill_fn fill)
{
	st->fill = fill;
	st->low_water = low_water;
}

void httpd_stream_wake(struct httpd_stream *st)
{
	if (st->state == ST_OPEN)
		stream_resume(st);
}

size_t httpd_stream_queued(const struct httpd_stream *st)
{
	return st->q.len - st->head;
}

const char *httpd_stream_remote_ip(const struct httpd_stream *st)
{
	return st->ip;
}

/* ---- requests ------------------------------------------------------------- */

static void sockaddr_ip(const struct sockaddr *sa, char *out, size_t outlen)
{
	snprintf(out, outlen, "?");
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, outlen);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, outlen);
	else if (sa->sa_family == AF_UNIX)
		snprintf(out, outlen, "local");
}

static void remote_ip(struct MHD_Connection *conn, char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

	if (ci && ci->client_addr)
		sockaddr_ip(ci->client_addr, out, outlen);
	else
		snprintf(out, outlen, "?");
}

static void req_free(struct httpd_req *req)
{
	if (req->resp)
		MHD_destroy_response(req->resp);
	req->s->stats.body_bytes -= req->body.len;
	buf_free(&req->body);
	buf_free(&req->hdrs);
	free(req);
}

const char *httpd_req_method(const struct httpd_req *req)
{
	return req->method;
}

const char *httpd_req_path(const struct httpd_req *req)
{
	return req->path;
}

const char *httpd_req_path_rest(const struct httpd_req *req)
{
	return req->rest;
}

const char *httpd_req_header(const struct httpd_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *httpd_req_query(const struct httpd_req *req, const char *name)
{
	const char *v = NULL;

	if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name),
					  &v, NULL) != MHD_YES)
		return NULL;
	return v ? v : "";
}

const void *httpd_req_body(const struct httpd_req *req, size_t *len)
{
	*len = req->body.len;
	return buf_str(&req->body);
}

const struct sockaddr *httpd_req_remote(const struct httpd_req *req, socklen_t *len)
{
	const union MHD_ConnectionInfo *ci;

	ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (!ci || !ci->client_addr)
		return NULL;
	if (len)
		*len = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							      : sizeof(struct sockaddr_in);
	return ci->client_addr;
}

const char *httpd_req_remote_ip(const struct httpd_req *req)
{
	return req->ip;
}

/* libmicrohttpd refuses empty values too. */
static bool header_ok(const char *name, const char *value)
{
	if (!*name || strpbrk(name, ":\r\n \t") || !*value || strpbrk(value, "\r\n"))
		return false;
	return true;
}

int httpd_req_set_header(struct httpd_req *req, const char *name, const char *value)
{
	int err;

	if (!header_ok(name, value))
		return -EINVAL;
	err = buf_add(&req->hdrs, name, strlen(name) + 1);
	if (!err)
		err = buf_add(&req->hdrs, value, strlen(value) + 1);
	return err == -ENOSPC ? -ENOMEM : err;
}

/* mode: MHD_RESPMEM_MUST_COPY or _MUST_FREE (then body is ours to free). */
static int respond(struct httpd_req *req, unsigned status, const char *content_type,
		   void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	int err = 0;

	if (req->resp || req->stream) {
		err = -EALREADY;
		goto out;
	}
	if (status < 100 || status > 599) {
		err = -EINVAL;
		goto out;
	}
	if (content_type) {
		err = httpd_req_set_header(req, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
		if (err)
			goto out;
	}
	req->resp = MHD_create_response_from_buffer(len, body, mode);
	if (!req->resp) {
		err = -ENOMEM;
		goto out;
	}
	req->status = status;
	return 0;
out:
	if (mode == MHD_RESPMEM_MUST_FREE)
		free(body);
	return err;
}

int httpd_respond(struct httpd_req *req, unsigned status, const char *content_type,
		  const void *body, size_t len)
{
	return respond(req, status, content_type, (void *)(len ? body : ""), len,
		       MHD_RESPMEM_MUST_COPY);
}

int httpd_respond_buf(struct httpd_req *req, unsigned status, const char *content_type,
		      struct buf *body)
{
	size_t len;
	char *p = buf_steal(body, &len);

	if (!p)
		return -ENOMEM;
	return respond(req, status, content_type, p, len, MHD_RESPMEM_MUST_FREE);
}

int httpd_respond_text(struct httpd_req *req, unsigned status, const char *fmt, ...)
{
	struct buf b = BUF_INIT(1u << 20);
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = buf_vaddf(&b, fmt, ap);
	va_end(ap);
	if (err)
		return err;
	return httpd_respond_buf(req, status, "text/plain; charset=utf-8", &b);
}

/* Hands the staged response (or stream) to MHD. */
static enum MHD_Result queue(struct httpd_req *req)
{
	struct MHD_Response *resp = req->resp;
	enum MHD_Result ret;
	const char *p, *end;

	if (req->stream) {
		resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK_SIZE,
							 stream_read, req->stream,
							 stream_response_free);
		if (!resp)
			return MHD_NO; /* completion still runs on_close */
		req->stream->refs++;
	}
	req->resp = NULL;
	p = (const char *)req->hdrs.data;
	end = p + req->hdrs.len;
	while (p && p < end) {
		const char *v = p + strlen(p) + 1;
		if (MHD_add_response_header(resp, p, v) != MHD_YES) {
			MHD_destroy_response(resp);
			return MHD_NO;
		}
		p = v + strlen(v) + 1;
	}
	ret = MHD_queue_response(req->conn, req->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result queue_error(struct httpd_req *req, unsigned status, const char *text)
{
	if (req->resp) {
		MHD_destroy_response(req->resp);
		req->resp = NULL;
	}
	buf_reset(&req->hdrs);
	if (httpd_respond_text(req, status, "%s\n", text) < 0)
		return MHD_NO;
	return queue(req);
}

static bool method_matches(const struct route *r, const char *method)
{
	return !strcmp(r->method, method) ||
	       (!strcmp(method, MHD_HTTP_METHOD_HEAD) && !strcmp(r->method, MHD_HTTP_METHOD_GET));
}

/* Finds the route for method and path. If the path is routed but not for
 * this method, returns NULL and lists the allowed methods in allow. */
static const struct route *route_find(const struct httpd *s, const char *method,
				      const char *path, struct buf *allow)
{
	const struct route *best = NULL;
	size_t plen = strlen(path);

	for (size_t i = 0; i < s->nroutes; i++) {
		const struct route *r = s->routes[i];
		bool match = r->prefix ? plen >= r->path_len && !memcmp(path, r->path, r->path_len)
				       : !strcmp(path, r->path);
		if (!match)
			continue;
		if (!best || (!r->prefix && best->prefix) ||
		    (r->prefix && best->prefix && r->path_len > best->path_len))
			best = r;
	}
	if (!best)
		return NULL;
	for (size_t i = 0; i < s->nroutes; i++) {
		const struct route *r = s->routes[i];
		if (r->prefix != best->prefix || strcmp(r->path, best->path))
			continue;
		if (method_matches(r, method))
			return r;
		buf_addf(allow, "%s%s", allow->len ? ", " : "", r->method);
		if (!strcmp(r->method, MHD_HTTP_METHOD_GET))
			buf_add_str(allow, ", HEAD");
	}
	if (!allow->len)
		buf_add_str(allow, "-");
	return NULL;
}

/* First call: route and check the declared body size, before any body is
 * read. A response queued now makes MHD skip the body and close. */
static enum MHD_Result req_begin(struct httpd_req *req)
{
	struct buf allow = BUF_INIT(1024);
	const char *cl, *te;
	enum MHD_Result ret = MHD_YES;

	req->route = route_find(req->s, req->method, req->path, &allow);
	if (!req->route) {
		if (!allow.len) {
			ret = queue_error(req, 404, "not found");
			goto out;
		}
		if (httpd_req_set_header(req, MHD_HTTP_HEADER_ALLOW, buf_str(&allow)) < 0) {
			ret = MHD_NO;
			goto out;
		}
		if (httpd_respond_text(req, 405, "method not allowed\n") < 0) {
			ret = MHD_NO;
			goto out;
		}
		ret = queue(req);
		goto out;
	}
	req->rest = req->route->prefix ? req->path + req->route->path_len : "";
	buf_init(&req->body, req->route->max_body);
	cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	te = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
	/* MHD has validated Content-Length already. A body over the cap but
	 * no larger than DISCARD_MAX is read and dropped before the 413: answered
	 * at once, the close would meet the rest of the upload and the client's
	 * kernel would reset the connection before it read the answer. */
	if (cl) {
		unsigned long long len = strtoull(cl, NULL, 10);
		if (len > req->route->max_body && len > DISCARD_MAX)
			ret = queue_error(req, 413, "request body too large");
		else if (len > req->route->max_body)
			req->too_large = true;
	} else if (te && req->route->max_body == 0) {
		ret = queue_error(req, 413, "request body too large");
	}
out:
	buf_free(&allow);
	return ret;
}

static struct conn *conn_of(struct MHD_Connection *mc);

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
				 const char *method, const char *version,
				 const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct httpd *s = cls;
	struct httpd_req *req = *con_cls;

	if (!req) {
		req = calloc(1, sizeof(*req));
		if (!req)
			return MHD_NO;
		req->s = s;
		req->conn = conn;
		req->method = method;
		req->path = url;
		buf_init(&req->hdrs, RESP_HEADERS_MAX);
		remote_ip(conn, req->ip, sizeof(req->ip));
		req->c = conn_of(conn);
		*con_cls = req;
		return req_begin(req);
	}
	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (!req->too_large) {
			int err;
			if (s->body_budget && s->stats.body_bytes + n > s->body_budget) {
				s->stats.body_budget_refused++;
				log_warn("httpd: body budget exhausted, closing", "remote=%s held=%zu",
					 req->ip, (size_t)s->stats.body_bytes);
				return MHD_NO;
			}
			err = buf_add(&req->body, upload_data, n);
			if (err == -ENOSPC)
				req->too_large = true;
			else if (err < 0)
				return MHD_NO;
			else
				s->stats.body_bytes += n;
		}
		if (req->too_large) {
			req->discarded += n;
			if (req->discarded > DISCARD_MAX)
				return MHD_NO;
		}
		return MHD_YES;
	}
	if (req->too_large)
		return queue_error(req, 413, "request body too large");

	if (req->c)
		req->c->busy = true;
	req->route->fn(req, req->route->arg);
	if (!req->resp && !req->stream) {
		log_error("httpd: handler sent no response", "method=%s path=%s", req->method, req->path);
		return queue_error(req, 500, "internal error");
	}
	return queue(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct httpd_req *req = *con_cls;

	if (!req)
		return;
	*con_cls = NULL;
	if (req->c) {
		/* The next request on this connection has its own deadline. */
		req->c->busy = false;
		req->c->since_ms = loop_mono_ms();
	}
	if (req->stream)
		stream_finish(req->stream);
	req_free(req);
}

/* ---- connections: per-address limit, request deadline ------------------- */

static struct conn *conn_of(struct MHD_Connection *mc)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

static uintptr_t ip_count(struct httpd *s, const char *ip)
{
	return (uintptr_t)strmap_get(s->per_ip, ip);
}

/* MHD asks before it sets a connection up. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	struct httpd *s = cls;
	char ip[INET6_ADDRSTRLEN];

	if (!s->per_ip_limit)
		return MHD_YES;
	sockaddr_ip(addr, ip, sizeof(ip));
	if (ip_count(s, ip) < s->per_ip_limit)
		return MHD_YES;
	s->stats.refused_per_ip++;
	return MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct httpd *s = cls;
	struct conn *c = *socket_context;
	const union MHD_ConnectionInfo *ci;
	uintptr_t n;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return; /* served, just not limited or timed */
		c->s = s;
		c->fd = -1;
		c->since_ms = loop_mono_ms();
		ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci)
			c->fd = ci->connect_fd;
		remote_ip(mc, c->ip, sizeof(c->ip));
		n = ip_count(s, c->ip) + 1;
		if (strmap_set(s->per_ip, c->ip, (void *)n, NULL) < 0) {
			free(c);
			return;
		}
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->stats.conns++;
		*socket_context = c;
		return;
	}
	if (!c)
		return;
	*socket_context = NULL;
	n = ip_count(s, c->ip);
	if (n <= 1)
		strmap_del(s->per_ip, c->ip);
	else
		strmap_set(s->per_ip, c->ip, (void *)(n - 1), NULL);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->stats.conns--;
	free(c);
}

/* Closes connections that have not delivered a request in time. Shutting
 * the socket down is enough: MHD sees the hang-up and closes it, calling
 * on_completed and on_connection as for any other close. */
static void on_sweep(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct httpd *s = arg;
	uint64_t now = loop_mono_ms();
	unsigned closed = 0;

	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->busy || c->fd < 0 || now - c->since_ms < s->request_timeout_ms)
			continue;
		shutdown(c->fd, SHUT_RDWR);
		c->fd = -1; /* once */
		closed++;
	}
	if (closed) {
		s->stats.request_timeouts += closed;
		log_info("httpd: closed connections past the request deadline", "count=%u deadline_ms=%u",
			 closed, s->request_timeout_ms);
	}
	loop_timer_arm(t, s->request_timeout_ms < 4000 ? s->request_timeout_ms / 4 + 1 : 1000);
}

void httpd_get_stats(const struct httpd *s, struct httpd_stats *out)
{
	*out = s->stats;
}

/* ---- server --------------------------------------------------------------- */

/* "host:port", "[v6]:port" or ":port" (all addresses, IPv6 dual-stack). */
static int listen_addr(const char *spec, int *out)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
	struct addrinfo *ai = NULL;
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon, *port, *h = spec;
	size_t hlen;
	int fd = -1, one = 1, zero = 0, err;

	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = spec + 1;
		hlen = (size_t)(close - h);
		port = close + 2;
	} else {
		colon = strrchr(spec, ':');
		if (!colon || memchr(spec, ':', (size_t)(colon - spec)))
			return -EINVAL;
		hlen = (size_t)(colon - spec);
		port = colon + 1;
	}
	if (hlen >= sizeof(host) || !*port || strspn(port, "0123456789") != strlen(port) ||
	    strtoul(port, NULL, 10) > 65535)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (!hlen)
		snprintf(host, sizeof(host), "::");
	if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
		return -EINVAL;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 && !hlen && errno == EAFNOSUPPORT) {
		/* No IPv6 in this kernel: all IPv4 addresses then. */
		freeaddrinfo(ai);
		ai = NULL;
		hints.ai_family = AF_INET;
		if (getaddrinfo("0.0.0.0", port, &hints, &ai) != 0 || !ai)
			return -EINVAL;
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	}
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6 && !hlen)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		err = -errno;
		goto out;
	}
	*out = fd;
	fd = -1;
	err = 0;
out:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return err;
}

int httpd_new(struct loop *loop, const struct httpd_opts *o, struct httpd **out)
{
	struct httpd *s = NULL;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	const union MHD_DaemonInfo *di;
	/* HTTPS options only where TLS is on (MHD complains of them otherwise). */
	struct MHD_OptionItem tls[3] = { { MHD_OPTION_END, 0, NULL }, { MHD_OPTION_END, 0, NULL },
					 { MHD_OPTION_END, 0, NULL } };
	int fd = o->listen_fd, err;
	bool own_fd = false;

	if (fd < 0) {
		if (!o->listen)
			return -EINVAL;
		err = listen_addr(o->listen, &fd);
		if (err)
			return err;
		own_fd = true;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		err = -errno;
		goto fail;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		err = -ENOMEM;
		goto fail;
	}
	s->loop = loop;
	s->epfd = -1;
	if (ss.ss_family == AF_INET)
		s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	else if (ss.ss_family == AF_INET6)
		s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else if (ss.ss_family == AF_UNIX)
		s->port = 0; /* a local API: access is the socket file's mode */
	else {
		err = -EAFNOSUPPORT;
		goto fail;
	}
	s->per_ip_limit = o->per_ip_limit;
	s->request_timeout_ms = o->request_timeout_ms;
	s->body_budget = o->body_budget;
	s->timer = loop_timer_new(loop, on_timer, s);
	s->per_ip = strmap_new();
	if (!s->timer || !s->per_ip) {
		err = -ENOMEM;
		goto fail;
	}
	if (s->request_timeout_ms) {
		s->sweep = loop_timer_new(loop, on_sweep, s);
		if (!s->sweep) {
			err = -ENOMEM;
			goto fail;
		}
		loop_timer_arm(s->sweep, s->request_timeout_ms < 4000 ? s->request_timeout_ms / 4 + 1 : 1000);
	}
	if (!o->tls_cert_pem != !o->tls_key_pem) {
		err = -EINVAL;
		goto fail;
	}
	if (o->tls_cert_pem) {
		s->tls_cert = strdup(o->tls_cert_pem);
		s->tls_key = strdup(o->tls_key_pem);
		if (!s->tls_cert || !s->tls_key) {
			err = -ENOMEM;
			goto fail;
		}
		tls[0] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert };
		tls[1] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key };
	}
	s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
					  (o->tls_cert_pem ? MHD_USE_TLS : 0),
				  0, on_accept, s, on_access, s,
				  MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
				  MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
				  MHD_OPTION_CONNECTION_LIMIT,
				  (unsigned)(o->conn_limit ? o->conn_limit : HTTPD_CONN_LIMIT_DEFAULT),
				  MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
				  MHD_OPTION_CONNECTION_TIMEOUT,
				  (unsigned)(o->conn_timeout_s ? o->conn_timeout_s
							       : HTTPD_CONN_TIMEOUT_DEFAULT_S),
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
				  MHD_OPTION_ARRAY, tls,
				  o->conn_memory ? MHD_OPTION_CONNECTION_MEMORY_LIMIT : MHD_OPTION_END,
				  (size_t)o->conn_memory,
				  MHD_OPTION_END);
	if (!s->mhd) {
		err = -EIO;
		goto fail;
	}
	/* From here MHD owns fd and closes it in MHD_stop_daemon(). */
	fd = -1;
	own_fd = false;
	di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!di) {
		err = -EIO;
		goto fail;
	}
	err = loop_fd_add(loop, di->epoll_fd, LOOP_READ, on_epoll, s);
	if (err)
		goto fail;
	s->epfd = di->epoll_fd;
	rearm(s);
	*out = s;
	return 0;
fail:
	if (own_fd)
		close(fd);
	httpd_free(s);
	return err;
}

void httpd_free(struct httpd *s)
{
	if (!s)
		return;
	/* MHD_stop_daemon() must not find suspended connections. Completion
	 * then calls on_close for each stream as MHD closes its connection. */
	for (struct httpd_stream *st = s->streams; st; st = st->next) {
		if (st->state != ST_DONE)
			st->state = ST_ABORT;
		stream_resume(st);
	}
	if (s->epfd >= 0)
		loop_fd_del(s->loop, s->epfd);
	if (s->mhd)
		MHD_stop_daemon(s->mhd);
	/* Streams whose response was never queued (allocation failure). */
	while (s->streams)
		stream_finish(s->streams);
	loop_timer_free(s->timer);
	loop_timer_free(s->sweep);
	strmap_free(s->per_ip);
	free(s->tls_cert);
	if (s->tls_key) {
		explicit_bzero(s->tls_key, strlen(s->tls_key));
		free(s->tls_key);
	}
	for (size_t i = 0; i < s->nroutes; i++) {
		free(s->routes[i]->method);
		free(s->routes[i]->path);
		free(s->routes[i]);
	}
	free(s->routes);
	free(s);
}

uint16_t httpd_port(const struct httpd *s)
{
	return s->port;
}

int httpd_route(struct httpd *s, const char *method, const char *path, size_t max_body,
		httpd_handler_fn fn, void *arg)
{
	struct route r = { .max_body = max_body, .fn = fn, .arg = arg };
	struct route **n, *p = NULL;
	size_t len;

	if (!method || !*method || strpbrk(method, " \t\r\n") || !path || path[0] != '/' || !fn)
		return -EINVAL;
	len = strlen(path);
	r.prefix = len >= 2 && !strcmp(path + len - 2, "/*");
	if (r.prefix)
		len--;
	if (memchr(path, '*', len))
		return -EINVAL;
	for (size_t i = 0; i < s->nroutes; i++)
		if (s->routes[i]->prefix == r.prefix && s->routes[i]->path_len == len &&
		    !memcmp(s->routes[i]->path, path, len) && !strcmp(s->routes[i]->method, method))
			return -EEXIST;
	r.method = strdup(method);
	r.path = strndup(path, len);
	r.path_len = len;
	p = malloc(sizeof(*p));
	if (!r.method || !r.path || !p)
		goto out;
	n = realloc(s->routes, (s->nroutes + 1) * sizeof(*n));
	if (!n)
		goto out;
	*p = r;
	s->routes = n;
	s->routes[s->nroutes++] = p;
	return 0;
out:
	free(p);
	free(r.method);
	free(r.path);
	return -ENOMEM;
}

/* ---- glue ---------------------------------------------------------------- */

static void serve_metrics(struct httpd_req *req, void *arg)
{
	struct httpd *s = arg;
	struct buf b = BUF_INIT(METRICS_MAX);
	int err;

	err = metrics_render(s->metrics, &b);
	if (err) {
		buf_free(&b);
		httpd_respond_text(req, 500, "rendering metrics failed: %s\n", strerror(-err));
		return;
	}
	httpd_respond_buf(req, 200, METRICS_CONTENT_TYPE, &b);
}

int httpd_serve_metrics(struct httpd *s, struct metrics *m)
{
	int err;

	if (s->metrics)
		return -EEXIST;
	err = httpd_route(s, "GET", "/metrics", 0, serve_metrics, s);
	if (!err)
		s->metrics = m;
	return err;
}
