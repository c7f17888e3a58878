/* A relay client for the e2e suites, on knit's own client core
 * (lib/relay/client.h) and STUN codec (lib/stun/stun.h):
 *
 *   relay_tool pub KEYHEX                  print the public key of a private key
 *   relay_tool recv URL KEYHEX [opts]      print "packet SRC DATA" per packet
 *   relay_tool send URL KEYHEX DSTHEX DATA [opts]
 *   relay_tool flood URL KEYHEX DSTHEX BYTES
 *   relay_tool noproof URL KEYHEX          claim KEYHEX's public key without it
 *   relay_tool garbage URL KEYHEX DSTHEX   malformed frames, then one packet
 *   relay_tool stun HOST:PORT              knit's STUN client: print the mapping
 *
 * opts: --count N (packets to wait for), --timeout S, --no-read (connect,
 * then never read: a slow client), --ca FILE (https URLs), --server-key HEX
 * (pin the relay's key), --expect-gone (wait for PEER_GONE about DST). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "loop.h"
#include "net/endpoint.h"
#include "relay/client.h"
#include "relay/frame.h"
#include "relay/hello.h"
#include "stun/stun.h"

struct session {
	int fd;
	SSL *ssl;
	SSL_CTX *ctx;
	struct relay_client rc;
	struct buf out;
	bool closed;
	unsigned packets, gone;
	uint8_t dst[32];
	bool expect_gone;
};

static const char *ca_file;
static const uint8_t *pin;
static uint8_t pin_key[32];
static int timeout_s = 10;
static unsigned want_count = 1;
static bool no_read, expect_gone;

static void on_packet(const uint8_t src[32], const uint8_t *data, size_t len, void *arg)
{
	struct session *s = arg;
	char hex[65];

	s->packets++;
	printf("packet %s %.*s\n", relay_key_hex(src, hex), (int)(len > 200 ? 200 : len), data);
	fflush(stdout);
}

static void on_gone(const uint8_t key[32], uint8_t reason, void *arg)
{
	struct session *s = arg;
	char hex[65];

	if (memcmp(key, s->dst, 32) == 0)
		s->gone++;
	printf("gone %s %s\n", relay_key_hex(key, hex), reason == RELAY_GONE_NOT_HERE ? "not-here" : "disconnected");
	fflush(stdout);
}

static void on_health(const char *p, size_t len, void *arg)
{
	printf("health \"%.*s\"\n", (int)len, p);
	fflush(stdout);
}

static void on_ready(const struct relay_server_info *info, void *arg)
{
	struct session *s = arg;
	char hex[65];

	printf("ready %s keepalive_ms=%u\n", relay_key_hex(s->rc.pub, hex), info->keepalive_ms);
	fflush(stdout);
}

static const struct relay_client_cb cb = {
	.ready = on_ready, .packet = on_packet, .peer_gone = on_gone, .health = on_health,
};

static int die(const char *what)
{
	fprintf(stderr, "relay_tool: %s\n", what);
	exit(1);
}

static bool parse_key(const char *s, uint8_t k[32])
{
	return relay_key_parse(s, k);
}

static void session_open(struct session *s, const char *url, const uint8_t priv[32])
{
	char host[256], port[16] = "80";
	const char *rest;
	bool tls = false;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	uint8_t pub[32];
	int one = 1;

	memset(s, 0, sizeof(*s));
	if (strncmp(url, "http://", 7) == 0) {
		rest = url + 7;
	} else if (strncmp(url, "https://", 8) == 0) {
		rest = url + 8;
		tls = true;
		strcpy(port, "443");
	} else {
		die("URL must be http:// or https://");
	}
	if (sscanf(rest, "%255[^:/]:%15[0-9]", host, port) < 1)
		die("bad URL");
	if (getaddrinfo(host, port, &hints, &res) != 0)
		die("cannot resolve");
	s->fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || connect(s->fd, res->ai_addr, res->ai_addrlen) != 0)
		die("cannot connect");
	freeaddrinfo(res);
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (no_read) {
		int small = 4096;

		setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	if (tls) {
		s->ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER, NULL);
		if (!ca_file || SSL_CTX_load_verify_locations(s->ctx, ca_file, NULL) != 1)
			die("https needs --ca FILE");
		s->ssl = SSL_new(s->ctx);
		SSL_set_fd(s->ssl, s->fd);
		SSL_set_tlsext_host_name(s->ssl, host);
		SSL_set1_host(s->ssl, host);
		if (SSL_connect(s->ssl) != 1) {
			ERR_print_errors_fp(stderr);
			die("TLS handshake failed");
		}
	}
	crypto_scalarmult_base(pub, priv);
	buf_init(&s->out, 64 << 20);
	relay_client_init(&s->rc, pub, priv, pin, &cb, s);
	if (relay_client_start(&s->rc, host, &s->out) != 0)
		die("cannot start");
}

static void session_close(struct session *s)
{
	if (s->ssl)
		SSL_free(s->ssl);
	SSL_CTX_free(s->ctx);
	close(s->fd);
	relay_client_free(&s->rc);
	buf_free(&s->out);
}

/* Closes the session and returns rc. */
static int done(struct session *s, int rc)
{
	session_close(s);
	return rc;
}

static ssize_t sess_read(struct session *s, uint8_t *b, size_t n)
{
	if (s->ssl) {
		int r = SSL_read(s->ssl, b, (int)n);

		return r > 0 ? r : 0;
	}
	return read(s->fd, b, n);
}

/* Writes everything queued (blocking), then reads for up to ms. */
static void session_io(struct session *s, int ms)
{
	uint8_t b[65536];
	uint64_t end = loop_mono_ms() + (uint64_t)ms;

	while (s->out.len && !s->closed) {
		ssize_t n = s->ssl ? SSL_write(s->ssl, s->out.data, (int)s->out.len)
				   : send(s->fd, s->out.data, s->out.len, MSG_NOSIGNAL);

		if (n <= 0) {
			s->closed = true;
			return;
		}
		buf_consume(&s->out, (size_t)n);
	}
	while (!s->closed) {
		struct pollfd p = { .fd = s->fd, .events = POLLIN };
		uint64_t now = loop_mono_ms();
		ssize_t n;

		if (now >= end && !(s->ssl && SSL_pending(s->ssl)))
			return;
		if (!(s->ssl && SSL_pending(s->ssl)) && poll(&p, 1, (int)(end - now)) <= 0)
			return;
		n = sess_read(s, b, sizeof(b));
		if (n <= 0) {
			s->closed = true;
			return;
		}
		if (relay_client_feed(&s->rc, b, (size_t)n, &s->out) < 0) {
			fprintf(stderr, "relay_tool: %s\n", s->rc.error);
			s->closed = true;
			return;
		}
		if (s->out.len)
			return; /* a reply to write (CLIENT_INFO, PONG) */
	}
}

static bool wait_ready(struct session *s)
{
	uint64_t end = loop_mono_ms() + (uint64_t)timeout_s * 1000;

	while (!relay_client_ready(&s->rc) && !s->closed && loop_mono_ms() < end)
		session_io(s, 100);
	return relay_client_ready(&s->rc);
}

static int cmd_recv(const char *url, const uint8_t priv[32])
{
	struct session s;
	uint64_t end;

	session_open(&s, url, priv);
	if (!wait_ready(&s))
		die(s.rc.error[0] ? s.rc.error : "not ready");
	end = loop_mono_ms() + (uint64_t)timeout_s * 1000;
	if (no_read) {
		/* Never read again: the relay's queue for us fills up. */
		while (loop_mono_ms() < end)
			usleep(100000);
		return done(&s, 0);
	}
	while (s.packets < want_count && !s.closed && loop_mono_ms() < end)
		session_io(&s, 200);
	return done(&s, s.packets >= want_count ? 0 : 1);
}

static int cmd_send(const char *url, const uint8_t priv[32], const uint8_t dst[32], const char *data)
{
	struct session s;
	uint64_t end;

	session_open(&s, url, priv);
	memcpy(s.dst, dst, 32);
	if (!wait_ready(&s))
		die(s.rc.error[0] ? s.rc.error : "not ready");
	for (unsigned i = 0; i < want_count; i++)
		relay_client_send(&s.rc, dst, data, strlen(data), &s.out);
	session_io(&s, 0);
	printf("sent %u\n", want_count);
	fflush(stdout);
	end = loop_mono_ms() + (uint64_t)timeout_s * 1000;
	if (expect_gone) {
		while (!s.gone && !s.closed && loop_mono_ms() < end)
			session_io(&s, 200);
		return done(&s, s.gone ? 0 : 1);
	}
	/* Stay a moment so the relay takes everything before we close. */
	session_io(&s, 300);
	return done(&s, 0);
}

static int cmd_flood(const char *url, const uint8_t priv[32], const uint8_t dst[32], size_t bytes)
{
	struct session s;
	uint8_t pkt[1280];
	size_t sent = 0;

	session_open(&s, url, priv);
	if (!wait_ready(&s))
		die("not ready");
	memset(pkt, 0x5a, sizeof(pkt));
	while (sent < bytes && !s.closed) {
		for (int i = 0; i < 64; i++)
			relay_client_send(&s.rc, dst, pkt, sizeof(pkt), &s.out);
		sent += 64 * sizeof(pkt);
		session_io(&s, 0);
	}
	printf("flooded %zu\n", sent);
	return done(&s, s.closed ? 1 : 0);
}

/* Claims the public key of priv but proves with another private key. */
static int cmd_noproof(const char *url, const uint8_t priv[32])
{
	struct session s;
	uint8_t other[32];
	uint64_t end;

	randombytes_buf(other, sizeof(other));
	session_open(&s, url, other);
	crypto_scalarmult_base(s.rc.pub, priv);
	end = loop_mono_ms() + (uint64_t)timeout_s * 1000;
	while (!relay_client_ready(&s.rc) && !s.closed && loop_mono_ms() < end)
		session_io(&s, 100);
	if (relay_client_ready(&s.rc)) {
		printf("accepted\n");
		return done(&s, 1);
	}
	printf("refused%s\n", s.closed ? " closed" : "");
	return done(&s, s.closed ? 0 : 1);
}

static int cmd_garbage(const char *url, const uint8_t priv[32], const uint8_t dst[32])
{
	struct session s;
	uint8_t junk[300];

	session_open(&s, url, priv);
	if (!wait_ready(&s))
		die("not ready");
	randombytes_buf(junk, sizeof(junk));
	relay_frame_append(&s.out, RELAY_FRAME_SEND_PACKET, junk, 7, NULL, 0, NULL, 0);
	relay_frame_append(&s.out, RELAY_FRAME_PEER_GONE, junk, 3, NULL, 0, NULL, 0);
	relay_frame_append(&s.out, RELAY_FRAME_FORWARD_PACKET, junk, sizeof(junk), NULL, 0, NULL, 0);
	relay_frame_append(&s.out, RELAY_FRAME_WATCH_CONNS, NULL, 0, NULL, 0, NULL, 0);
	relay_frame_append(&s.out, RELAY_FRAME_CLIENT_INFO, junk, 100, NULL, 0, NULL, 0);
	relay_frame_append(&s.out, 0xee, junk, sizeof(junk), NULL, 0, NULL, 0);
	relay_client_send(&s.rc, dst, "after garbage", 13, &s.out);
	session_io(&s, 500);
	printf("garbage sent, %s\n", s.closed ? "closed" : "still connected");
	return done(&s, s.closed ? 1 : 0);
}

static int cmd_stun(const char *server)
{
	struct endpoint ep;
	const char *why;
	uint8_t req[64], resp[STUN_MAX_MSG + 1], txid[12];
	struct stun_msg m;
	char err[128], text[80];
	int fd;
	size_t n;

	if (!endpoint_parse(&ep, server, &why))
		die("bad HOST:PORT");
	fd = socket(ep.addr.sa.sa_family, SOCK_DGRAM, 0);
	for (int attempt = 0; attempt < 5; attempt++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		stun_txid_new(txid);
		n = stun_binding_request(req, sizeof(req), txid, true);
		sendto(fd, req, n, 0, &ep.addr.sa, endpoint_socklen(&ep));
		if (poll(&p, 1, 1000) <= 0)
			continue;
		r = recv(fd, resp, sizeof(resp), 0);
		if (r <= 0)
			continue;
		if (!stun_parse(resp, (size_t)r, &m, err, sizeof(err))) {
			fprintf(stderr, "relay_tool: bad STUN response: %s\n", err);
			return 1;
		}
		if (m.type != STUN_BINDING_SUCCESS || memcmp(m.txid, txid, 12) != 0 || !m.has_addr) {
			fprintf(stderr, "relay_tool: unexpected STUN response type 0x%04x\n", m.type);
			return 1;
		}
		memset(&ep, 0, sizeof(ep));
		memcpy(&ep.addr, &m.addr, sizeof(ep.addr));
		endpoint_format(&ep, text, sizeof(text));
		printf("mapped %s xor=%d fingerprint=%d software=%.*s\n", text, m.addr_xored, m.has_fingerprint,
		       (int)m.software_len, m.software ? m.software : "");
		return 0;
	}
	fprintf(stderr, "relay_tool: no STUN response\n");
	return 1;
}

int main(int argc, char **argv)
{
	const char *pos[8];
	int npos = 0;
	uint8_t priv[32], dst[32];

	if (sodium_init() < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--count") && i + 1 < argc)
			want_count = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_s = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--ca") && i + 1 < argc)
			ca_file = argv[++i];
		else if (!strcmp(argv[i], "--server-key") && i + 1 < argc) {
			if (!parse_key(argv[++i], pin_key))
				die("bad --server-key");
			pin = pin_key;
		} else if (!strcmp(argv[i], "--no-read"))
			no_read = true;
		else if (!strcmp(argv[i], "--expect-gone"))
			expect_gone = true;
		else if (npos < 8)
			pos[npos++] = argv[i];
	}
	if (npos < 2)
		die("usage: see the comment at the top of relay_tool.c");
	if (!strcmp(pos[0], "stun"))
		return cmd_stun(pos[1]);
	if (!parse_key(pos[npos > 2 && strcmp(pos[0], "pub") ? 2 : 1], priv))
		die("bad private key");
	if (!strcmp(pos[0], "pub")) {
		char hex[65];

		crypto_scalarmult_base(dst, priv);
		printf("%s\n", relay_key_hex(dst, hex));
		return 0;
	}
	if (npos >= 4 && !parse_key(pos[3], dst))
		die("bad destination key");
	if (!strcmp(pos[0], "recv") && npos == 3)
		return cmd_recv(pos[1], priv);
	if (!strcmp(pos[0], "send") && npos == 5)
		return cmd_send(pos[1], priv, dst, pos[4]);
	if (!strcmp(pos[0], "flood") && npos == 5)
		return cmd_flood(pos[1], priv, dst, strtoul(pos[4], NULL, 10));
	if (!strcmp(pos[0], "noproof") && npos == 3)
		return cmd_noproof(pos[1], priv);
	if (!strcmp(pos[0], "garbage") && npos == 4)
		return cmd_garbage(pos[1], priv, dst);
	return die("unknown command or wrong arguments");
}
