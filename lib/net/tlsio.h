/* Bytes over a non-blocking stream socket, plain or through OpenSSL's
 * libssl, with one mapping of the outcome to errno values, shared by
 * knit-relay's connections and knitd's relay client:
 *
 *   n > 0     bytes moved
 *   0         (read) the peer closed: EOF or TLS close_notify
 *   -EAGAIN   would block; with TLS the other direction may be what it
 *             waits for, so callers poll for both while it lasts
 *   -EPROTO   a TLS failure (the OpenSSL error queue is cleared)
 *   -errno    the socket's own error
 *
 * ssl NULL is plain TCP on fd; otherwise ssl is bound to fd. */
#ifndef KNIT_NET_TLSIO_H
#define KNIT_NET_TLSIO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

/* A client context: TLS 1.2 or later, the peer's certificate verified
 * against ca (a PEM bundle; NULL: the system's trust store). NULL when it
 * cannot be made or ca does not load (the error queue is cleared). */
SSL_CTX *tlsio_client_ctx(const char *ca);
/* A client connection of ctx on fd (connected or connecting) to host: SNI
 * and the certificate's name checked against host, partial writes on.
 * NULL on failure (the error queue is cleared). */
SSL *tlsio_client_new(SSL_CTX *ctx, int fd, const char *host);

ssize_t tlsio_read(int fd, SSL *ssl, void *p, size_t n);
ssize_t tlsio_write(int fd, SSL *ssl, const void *p, size_t n);

/* One step of the TLS handshake: 0 done; -EAGAIN, with *want_write true
 * when it waits to write (else to read); -EPROTO with what OpenSSL says in
 * why ("prefix: reason"; the error queue is cleared). */
int tlsio_handshake(SSL *ssl, bool *want_write, const char *prefix, char *why, size_t whylen);

/* "prefix: reason" from the oldest OpenSSL error queued (or "prefix:
 * failed" when there is none) into why; clears the queue. Returns why. */
const char *tlsio_error(const char *prefix, char *why, size_t whylen);

#endif
