/* Plain and TLS stream I/O over a socketpair (net/tlsio.h): bytes both
 * ways, -EAGAIN when nothing is there, EOF (0) on close and on TLS
 * close_notify, the handshake driven step by step without blocking, and a
 * certificate for another name refused with OpenSSL's reason. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "net/tlsio.h"
#include "tlscert.h"

struct pki {
	char dir[64], ca[96], cert[96], key[96];
};

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* A CA and a serving certificate for relay.test, as PEM files. */
static void pki_make(struct pki *p)
{
	struct tlscert_pem ca, srv;
	const char *names[] = { "relay.test" };

	snprintf(p->dir, sizeof(p->dir), "/tmp/test_tlsio.XXXXXX");
	assert_non_null(mkdtemp(p->dir));
	snprintf(p->ca, sizeof(p->ca), "%s/ca.pem", p->dir);
	snprintf(p->cert, sizeof(p->cert), "%s/cert.pem", p->dir);
	snprintf(p->key, sizeof(p->key), "%s/key.pem", p->dir);
	assert_int_equal(tlscert_make_ca("tlsio test CA", 1, &ca), 0);
	assert_int_equal(tlscert_make_serving(&ca, names, 1, 1, &srv), 0);
	write_file(p->ca, ca.cert);
	write_file(p->cert, srv.cert);
	write_file(p->key, srv.key);
	tlscert_pem_free(&ca);
	tlscert_pem_free(&srv);
}

static void pki_free(struct pki *p)
{
	unlink(p->ca);
	unlink(p->cert);
	unlink(p->key);
	rmdir(p->dir);
}

static void pair(int fds[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
}

static void test_plain(void **state)
{
	int fds[2];
	char b[16];

	pair(fds);
	assert_int_equal(tlsio_read(fds[0], NULL, b, sizeof(b)), -EAGAIN);
	assert_int_equal(tlsio_write(fds[1], NULL, "hello", 5), 5);
	assert_int_equal(tlsio_read(fds[0], NULL, b, sizeof(b)), 5);
	assert_memory_equal(b, "hello", 5);
	close(fds[1]);
	assert_int_equal(tlsio_read(fds[0], NULL, b, sizeof(b)), 0);
	/* Writing to a closed peer: the socket's own error, no SIGPIPE. */
	assert_int_equal(tlsio_write(fds[0], NULL, "x", 1), -EPIPE);
	close(fds[0]);
	assert_int_equal(tlsio_read(-1, NULL, b, sizeof(b)), -EBADF);
}

/* Steps both handshakes until neither wants more; returns the client's
 * last result. */
static int handshake(SSL *cli, SSL *srv, char *why, size_t whylen)
{
	int rc = -EAGAIN, rs = -EAGAIN;
	bool ww;

	for (int i = 0; i < 100 && (rc == -EAGAIN || rs == -EAGAIN); i++) {
		if (rc == -EAGAIN)
			rc = tlsio_handshake(cli, &ww, "TLS handshake", why, whylen);
		if (rs == -EAGAIN)
			rs = tlsio_handshake(srv, &ww, "server", (char[64]){ 0 }, 64);
		if (rc == -EPROTO || rs == -EPROTO)
			break;
	}
	return rc;
}

static SSL *server_ssl(SSL_CTX *sctx, int fd)
{
	SSL *s = SSL_new(sctx);

	assert_non_null(s);
	assert_int_equal(SSL_set_fd(s, fd), 1);
	SSL_set_accept_state(s);
	return s;
}

static void test_tls(void **state)
{
	struct pki p;
	SSL_CTX *cctx, *sctx = SSL_CTX_new(TLS_server_method());
	SSL *cli, *srv;
	int fds[2];
	char b[64], why[160] = "";

	pki_make(&p);
	assert_non_null(sctx);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(sctx, p.cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(sctx, p.key, SSL_FILETYPE_PEM), 1);
	assert_null(tlsio_client_ctx("/nonexistent/ca.pem"));
	cctx = tlsio_client_ctx(p.ca);
	assert_non_null(cctx);

	pair(fds);
	cli = tlsio_client_new(cctx, fds[0], "relay.test");
	srv = server_ssl(sctx, fds[1]);
	assert_non_null(cli);
	assert_int_equal(handshake(cli, srv, why, sizeof(why)), 0);
	assert_int_equal(tlsio_read(fds[1], srv, b, sizeof(b)), -EAGAIN);
	assert_int_equal(tlsio_write(fds[0], cli, "through TLS", 11), 11);
	assert_int_equal(tlsio_read(fds[1], srv, b, sizeof(b)), 11);
	assert_memory_equal(b, "through TLS", 11);
	assert_int_equal(tlsio_write(fds[1], srv, "back", 4), 4);
	assert_int_equal(tlsio_read(fds[0], cli, b, sizeof(b)), 4);
	/* close_notify reads as EOF. */
	SSL_shutdown(srv);
	assert_int_equal(tlsio_read(fds[0], cli, b, sizeof(b)), 0);
	SSL_free(cli);
	SSL_free(srv);
	close(fds[0]);
	close(fds[1]);

	/* A certificate for another name: refused, with OpenSSL's reason. */
	pair(fds);
	cli = tlsio_client_new(cctx, fds[0], "other.test");
	srv = server_ssl(sctx, fds[1]);
	assert_int_equal(handshake(cli, srv, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "TLS handshake: certificate verify failed"));
	SSL_free(cli);
	SSL_free(srv);
	close(fds[0]);
	close(fds[1]);

	/* No context: no connection. */
	assert_null(tlsio_client_new(NULL, 0, "relay.test"));
	assert_string_equal(tlsio_error("nothing queued", why, sizeof(why)), "nothing queued: failed");
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
	pki_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_tls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
