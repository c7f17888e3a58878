/* HTTP server over libmicrohttpd, driven by a knit event loop.
 *
 * MHD runs without threads of its own: its epoll fd sits on the loop and
 * MHD_run() is called when it is readable or when MHD's own timeout (idle
 * connections) is due. Everything here, handlers and on_close included,
 * runs on the loop thread, and every function must be called from it.
 *
 * A handler is called once per request, after the whole body has arrived
 * (bodies over the route's cap never reach it: the client gets 413). Before
 * returning it either responds with httpd_respond*() or turns the request
 * into a stream with httpd_stream_start(); a handler that does neither
 * gets a 500 sent for it.
 *
 * Streams are long-lived chunked responses (the coordination map stream):
 * the owner writes frames whenever it wants, from any loop callback. Each
 * stream has an outgoing queue capped in bytes; a client that reads so
 * slowly that a write would exceed the cap has its stream closed (the write
 * fails with -ENOBUFS). on_close is called exactly once per stream: when
 * the client goes away, after httpd_stream_close() has flushed the queue,
 * after an overflow, or from httpd_free(). It is never called from inside
 * httpd_stream_write() or httpd_stream_close(); the stream stays valid (and
 * writes fail with -EPIPE) until on_close returns, and is freed after. */
#ifndef KNIT_HTTPD_H
#define KNIT_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct buf;
struct loop;
struct metrics;
struct httpd;
struct httpd_req;
struct httpd_stream;

#define HTTPD_CONN_LIMIT_DEFAULT 1024u
#define HTTPD_CONN_TIMEOUT_DEFAULT_S 60u
#define HTTPD_STREAM_QUEUE_DEFAULT (1u << 20)

struct httpd_opts {
	/* "127.0.0.1:8080", "[::1]:0", "[::]:443", "0.0.0.0:9090"; port 0
	 * picks an ephemeral port (see httpd_port()). Ignored if listen_fd
	 * is >= 0. */
	const char *listen;
	/* A bound, listening TCP socket (socket activation, tests). Pass -1
	 * when listen is used: 0 is a valid fd. Ownership passes to the
	 * server on success (closed by httpd_free()); stays with the caller
	 * on failure. */
	int listen_fd;
	unsigned conn_limit; /* total open connections; 0: HTTPD_CONN_LIMIT_DEFAULT */
	unsigned per_ip_limit; /* per client address; 0: unlimited */
	/* Closes a connection idle this long (no bytes either way while MHD
	 * waits on it). A stream with nothing queued is not idle: it is
	 * exempt until its next write. 0: HTTPD_CONN_TIMEOUT_DEFAULT_S. */
	unsigned conn_timeout_s;
	/* Bytes of libmicrohttpd's per-connection memory pool (request
	 * headers, the read and write buffers); 0: libmicrohttpd's default
	 * (32 KiB). A server holding many thousands of idle streams sets it
	 * lower: the pool is resident for every connection. */
	size_t conn_memory;
	/* A connection must deliver a whole request (headers and body) within
	 * this many milliseconds of being accepted or of its previous
	 * response, or it is closed: a client trickling bytes (slowloris)
	 * keeps an idle timer alive forever but not this one. A request being
	 * handled or streamed is exempt. 0: no deadline. */
	unsigned request_timeout_ms;
	/* Request body bytes held by all connections together, before their
	 * handlers run; a request that would push past it is refused and its
	 * connection closed. Bounds what a flood of large bodies can pin. 0:
	 * unlimited (each route's max_body still applies). */
	size_t body_budget;
	/* HTTPS with this certificate chain and private key (PEM, copied); both NULL: plain HTTP. */
	const char *tls_cert_pem;
	const char *tls_key_pem;
};

/* What the server refused and why, for a server's /metrics. */
struct httpd_stats {
	unsigned long long conns; /* open now */
	unsigned long long refused_per_ip; /* over per_ip_limit */
	unsigned long long request_timeouts; /* closed by request_timeout_ms */
	unsigned long long body_budget_refused; /* over body_budget */
	unsigned long long body_bytes; /* held now */
};

typedef void (*httpd_handler_fn)(struct httpd_req *req, void *arg);
typedef void (*httpd_stream_close_fn)(struct httpd_stream *st, void *arg);
typedef void (*httpd_stream_fill_fn)(struct httpd_stream *st, void *arg);

/* Binds and starts serving. On error returns a negative errno (-EINVAL for
 * a bad address, -EADDRINUSE, ...) and *out is untouched. */
int httpd_new(struct loop *loop, const struct httpd_opts *o, struct httpd **out);
/* Stops listening, closes every connection, calls on_close of every open
 * stream, and frees the server. Not from inside a handler or on_close.
 * NULL is a no-op. */
void httpd_free(struct httpd *s);
/* The bound port (host order). */
uint16_t httpd_port(const struct httpd *s);
void httpd_get_stats(const struct httpd *s, struct httpd_stats *out);

/* Adds a route. method is "GET", "POST", ... (HEAD requests are served by
 * GET routes, body suppressed). path is exact ("/healthz") or a prefix
 * ending in "/" "*": "/machine/" "*" matches "/machine/" and anything under it.
 * An exact route wins over a prefix, a longer prefix over a shorter. A
 * path that matches but not for this method gets 405 with Allow. max_body
 * is the largest request body the route accepts (0: none); a larger one
 * gets 413 and the handler never runs. Returns
 * 0, -EINVAL, -EEXIST (same method and path) or -ENOMEM. Strings copied. */
int httpd_route(struct httpd *s, const char *method, const char *path, size_t max_body,
		httpd_handler_fn fn, void *arg);

/* ---- inside a handler: the request (valid until the handler returns) ---- */

const char *httpd_req_method(const struct httpd_req *req);
/* The path without query string, as the client sent it (not decoded). */
const char *httpd_req_path(const struct httpd_req *req);
/* What a prefix route matched after its "/": "abc/def" for the route
 * "/m/" "*" and the path "/m/abc/def"; "" for an exact route. */
const char *httpd_req_path_rest(const struct httpd_req *req);
/* A request header's value (case-insensitive name), or NULL. */
const char *httpd_req_header(const struct httpd_req *req, const char *name);
/* A query argument's decoded value, "" for "?flag", NULL if absent. */
const char *httpd_req_query(const struct httpd_req *req, const char *name);
/* The body (NUL-terminated after *len, not counted); "" and 0 if none. */
const void *httpd_req_body(const struct httpd_req *req, size_t *len);
/* The client's address, and as text ("192.0.2.1", "2001:db8::1"). */
const struct sockaddr *httpd_req_remote(const struct httpd_req *req, socklen_t *len);
const char *httpd_req_remote_ip(const struct httpd_req *req);

/* Adds a response header (copied) to whatever response this request gets.
 * -EINVAL for CR/LF, an empty value (libmicrohttpd cannot send one) or a
 * bad name, -ENOMEM. */
int httpd_req_set_header(struct httpd_req *req, const char *name, const char *value);

/* Responds with a copy of body. content_type may be NULL (no header).
 * Returns 0, -EALREADY if the request already has a response or stream,
 * -EINVAL for a bad status, -ENOMEM. */
int httpd_respond(struct httpd_req *req, unsigned status, const char *content_type,
		  const void *body, size_t len);
/* Takes ownership of body's contents (body is left empty) on every path. */
int httpd_respond_buf(struct httpd_req *req, unsigned status, const char *content_type,
		      struct buf *body);
/* printf-style text/plain response ("not found\n"). */
int httpd_respond_text(struct httpd_req *req, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- streams ----------------------------------------------------------- */

/* Turns the request into a streaming response with this status and
 * content type (chunked for HTTP/1.1, close-delimited for 1.0). max_queue
 * caps the bytes queued but not yet taken by the client (0:
 * HTTPD_STREAM_QUEUE_DEFAULT). Writes may start at once, in the handler.
 * NULL with errno set (EALREADY, EINVAL, ENOMEM) on failure. */
struct httpd_stream *httpd_stream_start(struct httpd_req *req, unsigned status,
					const char *content_type, size_t max_queue,
					httpd_stream_close_fn on_close, void *arg);
/* Queues len bytes (copied). Returns 0; -EPIPE if the stream is closed or
 * closing; -ENOBUFS if the queue would exceed its cap (or -ENOMEM): the
 * stream is then closed without flushing and on_close follows. */
int httpd_stream_write(struct httpd_stream *st, const void *data, size_t len);
/* Ends the stream after what is queued has been sent; on_close follows. A
 * no-op on a stream that is already closing. */
void httpd_stream_close(struct httpd_stream *st);
/* Pull mode: fill is called whenever the socket can take data and fewer
 * than low_water bytes are queued; it may write (as much as it likes, up
 * to the cap) or nothing, and may close the stream. A producer with more
 * to say than it wants to queue (a large netmap, coalescing deltas for a
 * slow client) writes a piece at a time this way, and the client's own
 * pace decides how much is ever buffered. fill runs inside the server's
 * processing on the loop thread: it must not free the server. Until
 * httpd_stream_wake(), a stream with nothing queued is parked and fill is
 * not called. fill == NULL turns pull mode off. */
void httpd_stream_set_fill(struct httpd_stream *st, size_t low_water, httpd_stream_fill_fn fill);
/* The producer has something new: fill is called soon (once the socket
 * can take data). Cheap when the stream is already awake; a no-op on a
 * closed stream. */
void httpd_stream_wake(struct httpd_stream *st);
/* Bytes queued and not yet handed to the socket. */
size_t httpd_stream_queued(const struct httpd_stream *st);
/* The client's address as text, for logs. */
const char *httpd_stream_remote_ip(const struct httpd_stream *st);

/* ---- glue --------------------------------------------------------------- */

/* GET /metrics: the registry in the Prometheus text format 0.0.4. The
 * registry must outlive the server. */
int httpd_serve_metrics(struct httpd *s, struct metrics *m);

#endif
