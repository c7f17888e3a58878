/* HTTP client over libcurl's multi interface, driven by a knit event loop.
 *
 * One client owns one curl multi handle: requests on it share connections
 * (HTTP/1.1 keep-alive, HTTP/2 multiplexing over TLS when the server offers
 * it). Everything, callbacks included, runs on the loop's thread; no
 * callback is ever invoked from inside http_request_start().
 *
 * A request ends in exactly one of two ways:
 *   - on_done is called once (success, HTTP error status, or transport
 *     error), after which the request is freed;
 *   - it is cancelled (http_request_cancel() or http_client_free()), after
 *     which no callback of it runs again, on_done included.
 *
 * Inside any callback a caller may start requests, cancel any request
 * (its own too) and free the client. */
#ifndef KNIT_HTTP_H
#define KNIT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;
struct loop;
struct http_client;
struct http_request;

#define HTTP_MAX_BODY_DEFAULT (16u << 20)
#define HTTP_CONNECT_TIMEOUT_DEFAULT_MS 10000u

struct http_result {
	/* 0 if a complete response arrived, whatever its status; otherwise a
	 * negative errno saying how the transfer failed:
	 *   -ECONNREFUSED, -ENETUNREACH, ... connect failed (the socket's errno)
	 *   -ECONNRESET   connection reset or closed with no (complete) reply
	 *   -EPIPE        closed before the whole body (Content-Length)
	 *   -ETIMEDOUT    connect timeout, total timeout, or stalled
	 *   -EKEYREJECTED TLS peer verification failed (wrong CA, bad name)
	 *   -EPROTO       other TLS or HTTP protocol failure
	 *   -EMSGSIZE     buffered body larger than max_body
	 *   -EHOSTUNREACH name resolution failed
	 *   -EINVAL       bad URL or unsupported scheme
	 *   the callback's own value when on_headers/on_data returned < 0 */
	int err;
	/* Human-readable reason, "" when err == 0 (curl's error text). */
	const char *errmsg;
	/* The final response's status, 0 if none arrived. Non-zero with
	 * err < 0 means the transfer failed mid-body. */
	long status;
	/* Buffered mode: the body (partial when err < 0). Owned by the request;
	 * take it with buf_steal() to keep it past on_done. Empty in streaming
	 * mode. */
	struct buf *body;
};

/* Called once when the final (non-1xx) response's headers are complete,
 * before any body. Return < 0 to abort; on_done then gets that error. */
typedef int (*http_headers_cb)(struct http_request *r, long status, void *arg);
/* Streaming mode: one chunk of body as it arrives. Return < 0 to abort. */
typedef int (*http_data_cb)(struct http_request *r, const void *data, size_t len, void *arg);
typedef void (*http_done_cb)(struct http_request *r, const struct http_result *res, void *arg);

struct http_tls {
	/* Trust: a CA bundle file, or PEM data in memory; either one replaces
	 * the system store. Neither: the system store. */
	const char *ca_file;
	const void *ca_pem;
	size_t ca_pem_len;
	/* Client certificate and key, as PEM files or PEM data in memory
	 * (copied; the key copy is wiped when the request is freed). */
	const char *cert_file;
	const char *key_file;
	const void *cert_pem;
	size_t cert_pem_len;
	const void *key_pem;
	size_t key_pem_len;
	/* Skips server certificate and name verification. For tests only:
	 * anyone on the path can impersonate the server. */
	bool insecure_skip_verify;
};

/* Everything is copied by http_request_start(); the caller keeps ownership
 * of what it passed and may reuse the struct as a template. */
struct http_opts {
	const char *method; /* NULL: GET, or POST when body is set */
	const char *url;
	const char *const *headers; /* NULL-terminated "Name: value" lines */
	const void *body; /* copied; wiped when the request is freed */
	size_t body_len;
	const char *bearer_token; /* sent as "Authorization: Bearer ..."; wiped when freed */
	struct http_tls tls;

	uint32_t connect_timeout_ms; /* 0: HTTP_CONNECT_TIMEOUT_DEFAULT_MS */
	uint32_t timeout_ms; /* whole request; 0: none (watches) */
	/* Aborts with -ETIMEDOUT when nothing is received for this long,
	 * counted from the start and from each byte of response. 0: never. */
	uint32_t stall_timeout_ms;
	size_t max_body; /* buffered mode cap; 0: HTTP_MAX_BODY_DEFAULT */

	http_headers_cb on_headers; /* optional */
	http_data_cb on_data; /* non-NULL selects streaming mode */
	http_done_cb on_done; /* required */
	void *arg;
};

/* NULL on allocation failure. The client must be freed before its loop. */
struct http_client *http_client_new(struct loop *loop);
/* Cancels every outstanding request (none of their callbacks runs again)
 * and frees the client. Safe inside the client's own callbacks: the memory
 * is released when the callback returns. NULL is a no-op. */
void http_client_free(struct http_client *c);

/* Starts a request; *out (if out is non-NULL) is valid until on_done
 * returns or the request is cancelled. Returns 0, -EINVAL for bad options
 * (missing url/on_done, CR/LF in a header or token, bad method), -ENOMEM,
 * or -ENOTSUP for an option this libcurl lacks; on error no callback runs. */
int http_request_start(struct http_client *c, const struct http_opts *o,
		       struct http_request **out);
/* After this returns no callback of r runs and r is invalid. Safe from any
 * callback, r's own included; a no-op inside r's own on_done. */
void http_request_cancel(struct http_request *r);

/* A response header's value (the last one if repeated), or NULL. Valid in
 * r's callbacks until they return. */
const char *http_request_header(struct http_request *r, const char *name);

#endif
