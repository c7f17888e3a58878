/* Plain or TLS stream I/O with one errno mapping; see tlsio.h. */
#include "net/tlsio.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* SSL_read/SSL_write's result r as tlsio.h says. */
static ssize_t ssl_result(SSL *ssl, int r)
{
	if (r > 0)
		return r;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		ERR_clear_error();
		return -EPROTO;
	}
}

static ssize_t sock_result(ssize_t r)
{
	if (r >= 0)
		return r;
	return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

ssize_t tlsio_read(int fd, SSL *ssl, void *p, size_t n)
{
	ssize_t r;

	if (ssl)
		return ssl_result(ssl, SSL_read(ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n)));
	while ((r = recv(fd, p, n, 0)) < 0 && errno == EINTR)
		;
	return sock_result(r);
}

ssize_t tlsio_write(int fd, SSL *ssl, const void *p, size_t n)
{
	ssize_t r;

	if (ssl) {
		r = ssl_result(ssl, SSL_write(ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n)));
		/* A write never sees EOF: a closed peer is a failed write. */
		return r == 0 ? -EPIPE : r;
	}
	while ((r = send(fd, p, n, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	return sock_result(r);
}

SSL_CTX *tlsio_client_ctx(const char *ca)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if ((ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) : SSL_CTX_set_default_verify_paths(ctx)) != 1)
		goto fail;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

SSL *tlsio_client_new(SSL_CTX *ctx, int fd, const char *host)
{
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;

	if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_set_tlsext_host_name(ssl, host) != 1 ||
	    SSL_set1_host(ssl, host) != 1) {
		SSL_free(ssl);
		ERR_clear_error();
		return NULL;
	}
	SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_set_connect_state(ssl);
	return ssl;
}

const char *tlsio_error(const char *prefix, char *why, size_t whylen)
{
	unsigned long e = ERR_get_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	snprintf(why, whylen, "%s: %s", prefix, reason ? reason : "failed");
	ERR_clear_error();
	return why;
}

int tlsio_handshake(SSL *ssl, bool *want_write, const char *prefix, char *why, size_t whylen)
{
	int r = SSL_do_handshake(ssl);

	*want_write = false;
	if (r == 1)
		return 0;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_WRITE:
		*want_write = true;
		return -EAGAIN;
	case SSL_ERROR_WANT_READ:
		return -EAGAIN;
	default:
		tlsio_error(prefix, why, whylen);
		return -EPROTO;
	}
}
