#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "loop.h"
#include "wg/uapi.h"
#include "wg/uapi_server.h"

#define K1 "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a"
#define K2 "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceae9b5d34b63"
#define KZ "0000000000000000000000000000000000000000000000000000000000000000"

static struct uapi_config *parse_ok(const char *s)
{
	struct uapi_config *c;
	struct uapi_error err;

	if (!uapi_parse_set(s, strlen(s), &c, &err))
		fail_msg("refused line %u: %s", err.line, err.msg);
	return c;
}

static void test_parse_full(void **state)
{
	struct uapi_config *c = parse_ok("private_key=" K1 "\nlisten_port=51820\nfwmark=0\nreplace_peers=true\n"
					 "public_key=" K2 "\npreshared_key=" KZ "\nendpoint=[::1]:7\n"
					 "persistent_keepalive_interval=25\nreplace_allowed_ips=true\n"
					 "allowed_ip=10.0.0.0/24\nallowed_ip=fd00::1/128\nprotocol_version=1\n"
					 "public_key=" K1 "\nremove=true\n"
					 "public_key=" K1 "\nupdate_only=true\nendpoint=192.0.2.1:51820\n\n"
					 "ignored=after the blank line\n");
	assert_int_equal(c->flags, UAPI_DEVICE_HAS_PRIVATE_KEY | UAPI_DEVICE_HAS_LISTEN_PORT |
					   UAPI_DEVICE_HAS_FWMARK | UAPI_DEVICE_REPLACE_PEERS);
	assert_int_equal(c->private_key[0], 0xe8);
	assert_int_equal(c->private_key[31], 0x7a);
	assert_int_equal(c->listen_port, 51820);
	assert_int_equal(c->n_peers, 3);
	struct uapi_peer *p = &c->peers[0];
	assert_int_equal(p->public_key[0], 0x58);
	assert_int_equal(p->flags, UAPI_PEER_HAS_PRESHARED_KEY | UAPI_PEER_HAS_ENDPOINT | UAPI_PEER_HAS_KEEPALIVE |
					   UAPI_PEER_REPLACE_ALLOWED_IPS);
	assert_int_equal(p->endpoint.addr.sa.sa_family, AF_INET6);
	assert_int_equal(ntohs(p->endpoint.addr.in6.sin6_port), 7);
	assert_int_equal(p->persistent_keepalive, 25);
	assert_int_equal(p->n_allowed_ips, 2);
	assert_int_equal(p->allowed_ips[0].family, AF_INET);
	assert_int_equal(p->allowed_ips[0].cidr, 24);
	assert_int_equal(p->allowed_ips[1].family, AF_INET6);
	assert_int_equal(p->allowed_ips[1].cidr, 128);
	assert_int_equal(c->peers[1].flags, UAPI_PEER_REMOVE);
	assert_int_equal(c->peers[2].flags, UAPI_PEER_UPDATE_ONLY | UAPI_PEER_HAS_ENDPOINT);
	uapi_config_free(c);

	c = parse_ok("");
	assert_int_equal(c->flags, 0);
	assert_int_equal(c->n_peers, 0);
	uapi_config_free(c);

	/* many allowed IPs: the arrays grow */
	char *big = malloc(1 << 20);
	size_t n = (size_t)sprintf(big, "public_key=%s\n", K1);
	for (int i = 0; i < 5000; i++)
		n += (size_t)sprintf(big + n, "allowed_ip=10.%d.%d.0/24\n", i >> 8, i & 255);
	c = parse_ok(big);
	assert_int_equal(c->peers[0].n_allowed_ips, 5000);
	assert_int_equal(c->peers[0].allowed_ips[4999].ip.v4.s_addr, inet_addr("10.19.135.0"));
	uapi_config_free(c);
	free(big);
}

static void test_parse_errors(void **state)
{
	static const struct {
		const char *in;
		int errnum;
		unsigned line;
		const char *needle;
	} cases[] = {
		{ "listen_port\n", EPROTO, 2, "key=value" },
		{ "private_key=" K1 "x\n", EINVAL, 2, "private_key" },
		{ "private_key=" KZ "\nprivate_key=zz" KZ "\n", EINVAL, 3, "private_key" },
		{ "listen_port=65536\n", EINVAL, 2, "listen_port" },
		{ "listen_port=-1\n", EINVAL, 2, "listen_port" },
		{ "listen_port=\n", EINVAL, 2, "listen_port" },
		{ "listen_port= 1\n", EINVAL, 2, "listen_port" },
		{ "fwmark=4294967296\n", EINVAL, 2, "fwmark" },
		{ "fwmark=99999999999999999999999\n", EINVAL, 2, "fwmark" },
		{ "replace_peers=false\n", EINVAL, 2, "replace_peers" },
		{ "endpoint=1.2.3.4:5\n", EINVAL, 2, "unknown device key \"endpoint\"" },
		{ "bogus=1\n", EINVAL, 2, "unknown device key" },
		{ "public_key=" K1 "\nprivate_key=" K1 "\n", EINVAL, 3, "unknown peer key \"private_key\"" },
		{ "public_key=abc\n", EINVAL, 2, "public_key" },
		{ "public_key=" K1 "\nremove=1\n", EINVAL, 3, "remove" },
		{ "public_key=" K1 "\nupdate_only=yes\n", EINVAL, 3, "update_only" },
		{ "public_key=" K1 "\nendpoint=1.2.3.4\n", EINVAL, 3, "endpoint" },
		{ "public_key=" K1 "\nendpoint=::1:5\n", EINVAL, 3, "brackets" },
		{ "public_key=" K1 "\nendpoint=host.example:5\n", EINVAL, 3, "endpoint" },
		{ "public_key=" K1 "\npersistent_keepalive_interval=65536\n", EINVAL, 3, "keepalive" },
		{ "public_key=" K1 "\nallowed_ip=10.0.0.0\n", EINVAL, 3, "allowed_ip" },
		{ "public_key=" K1 "\nallowed_ip=10.0.0.0/33\n", EINVAL, 3, "allowed_ip" },
		{ "public_key=" K1 "\nallowed_ip=fd00::/129\n", EINVAL, 3, "allowed_ip" },
		{ "public_key=" K1 "\nallowed_ip=10.0.0.0/\n", EINVAL, 3, "allowed_ip" },
		{ "public_key=" K1 "\nallowed_ip=/8\n", EINVAL, 3, "allowed_ip" },
		{ "public_key=" K1 "\nprotocol_version=2\n", EINVAL, 3, "protocol_version" },
		{ "public_key=" K1 "\nreplace_allowed_ips=TRUE\n", EINVAL, 3, "replace_allowed_ips" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct uapi_config *c = (void *)1;
		struct uapi_error err;
		if (uapi_parse_set(cases[i].in, strlen(cases[i].in), &c, &err))
			fail_msg("accepted: %s", cases[i].in);
		assert_null(c);
		if (err.errnum != cases[i].errnum || err.line != cases[i].line || !strstr(err.msg, cases[i].needle))
			fail_msg("%s: got errno %d line %u \"%s\"", cases[i].in, err.errnum, err.line, err.msg);
	}
	/* NUL inside a line */
	struct uapi_config *c;
	struct uapi_error err;
	assert_false(uapi_parse_set("fwmark=1\0\n", 10, &c, &err));
	assert_int_equal(err.errnum, EPROTO);
}

static void test_format(void **state)
{
	struct uapi_allowed_ip ips[2] = { { .family = AF_INET, .cidr = 24 }, { .family = AF_INET6, .cidr = 64 } };
	struct uapi_peer_state ps = {
		.has_endpoint = true,
		.last_handshake_sec = 1700000000,
		.last_handshake_nsec = 5,
		.rx_bytes = 10,
		.tx_bytes = 20,
		.persistent_keepalive = 25,
		.allowed_ips = ips,
		.n_allowed_ips = 2,
	};
	struct uapi_device d = { .has_private_key = true, .listen_port = 51820, .peers = &ps, .n_peers = 1 };
	struct buf b = BUF_INIT(1 << 16);
	const char *why;

	inet_pton(AF_INET, "10.0.0.0", &ips[0].ip.v4);
	inet_pton(AF_INET6, "fd00::", &ips[1].ip.v6);
	assert_true(endpoint_parse(&ps.endpoint, "[2001:db8::1]:51820", &why));
	memset(d.private_key, 0xab, 32);
	memset(ps.public_key, 0x01, 32);
	assert_int_equal(uapi_format_get(&d, &b), 0);
	assert_string_equal(buf_str(&b),
			    "private_key=abababababababababababababababababababababababababababababababab\n"
			    "listen_port=51820\n"
			    "public_key=0101010101010101010101010101010101010101010101010101010101010101\n"
			    "preshared_key=" KZ "\n"
			    "protocol_version=1\n"
			    "endpoint=[2001:db8::1]:51820\n"
			    "last_handshake_time_sec=1700000000\n"
			    "last_handshake_time_nsec=5\n"
			    "tx_bytes=20\n"
			    "rx_bytes=10\n"
			    "persistent_keepalive_interval=25\n"
			    "allowed_ip=10.0.0.0/24\n"
			    "allowed_ip=fd00::/64\n"
			    "errno=0\n\n");
	buf_reset(&b);
	assert_int_equal(uapi_format_errno(&b, -EINVAL), 0);
	assert_string_equal(buf_str(&b), "errno=-22\n\n");
	struct buf tiny = BUF_INIT(10);
	assert_int_equal(uapi_format_get(&d, &tiny), -ENOSPC);
	buf_free(&b);
}

/* ---- the server, with a fake device behind the ops table ---- */

struct fake {
	pthread_mutex_t lock; /* guards everything below */
	struct uapi_device dev;
	struct uapi_peer_state peer;
	int sets;
	struct uapi_peer last_peer;
	struct uapi_allowed_ip last_ip;
	unsigned last_flags;
	int fail_get;
};

static int fake_get(void *arg, struct uapi_device *out)
{
	struct fake *f = arg;

	pthread_mutex_lock(&f->lock);
	if (f->fail_get) {
		pthread_mutex_unlock(&f->lock);
		return -EIO;
	}
	*out = f->dev;
	if (f->dev.n_peers) {
		out->peers = malloc(sizeof(*out->peers));
		*out->peers = f->peer;
		out->peers->allowed_ips = NULL;
		out->peers->n_allowed_ips = 0;
		if (f->peer.n_allowed_ips) {
			out->peers->allowed_ips = malloc(sizeof(struct uapi_allowed_ip));
			out->peers->allowed_ips[0] = f->peer.allowed_ips[0];
			out->peers->n_allowed_ips = 1;
		}
	}
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static int fake_set(void *arg, const struct uapi_config *cfg)
{
	struct fake *f = arg;

	pthread_mutex_lock(&f->lock);
	f->sets++;
	f->last_flags = cfg->flags;
	if (cfg->flags & UAPI_DEVICE_HAS_LISTEN_PORT)
		f->dev.listen_port = cfg->listen_port;
	if (cfg->n_peers) {
		f->last_peer = cfg->peers[0];
		f->last_peer.allowed_ips = NULL;
		if (cfg->peers[0].n_allowed_ips)
			f->last_ip = cfg->peers[0].allowed_ips[0];
	}
	pthread_mutex_unlock(&f->lock);
	return cfg->flags & UAPI_DEVICE_HAS_FWMARK ? -EADDRINUSE : 0;
}

static const struct uapi_ops fake_ops = { fake_get, fake_set };

struct ctx {
	struct loop *loop;
	struct uapi_server *srv;
	struct fake fake;
	pthread_t thread;
	char dir[64];
};

static void *run_loop(void *arg)
{
	loop_run(arg);
	return NULL;
}

static void on_stop(struct loop *loop, void *arg)
{
	loop_stop(loop);
}

static void stop_loop(struct ctx *c)
{
	loop_post(c->loop, on_stop, NULL);
	pthread_join(c->thread, NULL);
}

static void start(struct ctx *c, const char *dir, const char *name)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->fake.lock, NULL);
	c->loop = loop_new();
	assert_non_null(c->loop);
	assert_int_equal(uapi_server_open(&c->srv, c->loop, dir, name, &fake_ops, &c->fake), 0);
	assert_int_equal(pthread_create(&c->thread, NULL, run_loop, c->loop), 0);
}

static void finish(struct ctx *c)
{
	char path[128];
	struct stat st;

	stop_loop(c);
	snprintf(path, sizeof(path), "%s", uapi_server_path(c->srv));
	uapi_server_close(c->srv);
	assert_int_equal(stat(path, &st), -1); /* unlinked on close */
	loop_free(c->loop);
	pthread_mutex_destroy(&c->fake.lock);
}

static int dial(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return fd;
}

/* Reads until `want` responses (each ends with "\n\n") or EOF. */
static size_t read_responses(int fd, char *out, size_t cap, int want)
{
	size_t n = 0;
	int got = 0;

	while (got < want && n + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = read(fd, out + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		out[n] = '\0';
		got = 0;
		for (const char *s = out; (s = strstr(s, "errno=")); s++)
			got++;
	}
	out[n] = '\0';
	return n;
}

static void test_server_raw(void **state)
{
	struct ctx c;
	char dir[] = "/tmp/knit-uapi-XXXXXX", resp[8192], path[64];
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/wg", dir);
	start(&c, path, "t0");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0755);
	assert_int_equal(stat(uapi_server_path(c.srv), &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);

	/* a second server on a live socket must not steal it */
	struct uapi_server *other;
	struct loop *l2 = loop_new();
	assert_int_equal(uapi_server_open(&other, l2, path, "t0", &fake_ops, &c.fake), -EADDRINUSE);
	loop_free(l2);

	/* two requests in one write, one byte at a time for a third */
	fd = dial(uapi_server_path(c.srv));
	const char *two = "get=1\n\nset=1\nlisten_port=4242\n\n";
	assert_int_equal(write(fd, two, strlen(two)), (ssize_t)strlen(two));
	read_responses(fd, resp, sizeof(resp), 2);
	assert_string_equal(resp, "errno=0\n\nerrno=0\n\n");
	const char *slow = "get=1\n\n";
	for (const char *s = slow; *s; s++) {
		assert_int_equal(write(fd, s, 1), 1);
		usleep(1000);
	}
	read_responses(fd, resp, sizeof(resp), 1);
	assert_string_equal(resp, "listen_port=4242\nerrno=0\n\n");

	/* errors: parse (EINVAL, EPROTO), engine (EADDRINUSE), get trailing */
	const char *bad = "set=1\nlisten_port=x\n\nset=1\nnonsense\n\nset=1\nfwmark=1\n\nget=1\nx=1\n\n";
	assert_int_equal(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
	read_responses(fd, resp, sizeof(resp), 4);
	assert_string_equal(resp, "errno=-22\n\nerrno=-71\n\nerrno=-98\n\nerrno=-22\n\n");
	pthread_mutex_lock(&c.fake.lock);
	c.fake.fail_get = 1;
	pthread_mutex_unlock(&c.fake.lock);
	assert_int_equal(write(fd, "get=1\n\n", 7), 7);
	read_responses(fd, resp, sizeof(resp), 1);
	assert_string_equal(resp, "errno=-5\n\n");

	/* an unknown operation ends the connection */
	assert_int_equal(write(fd, "frob=1\n\n", 8), 8);
	assert_int_equal(read_responses(fd, resp, sizeof(resp), 1), 0);
	close(fd);

	/* a client that leaves mid-request harms nobody */
	fd = dial(uapi_server_path(c.srv));
	assert_int_equal(write(fd, "set=1\nlisten_port=1", 19), 19);
	close(fd);
	fd = dial(uapi_server_path(c.srv));
	assert_int_equal(write(fd, "set=1\nlisten_port=7\n\n", 21), 21);
	read_responses(fd, resp, sizeof(resp), 1);
	assert_string_equal(resp, "errno=0\n\n");
	close(fd);
	pthread_mutex_lock(&c.fake.lock);
	assert_int_equal(c.fake.dev.listen_port, 7);
	pthread_mutex_unlock(&c.fake.lock);
	finish(&c);

	/* a stale socket (no listener) is replaced */
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/t1.sock", path);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(s);
	start(&c, path, "t1");
	fd = dial(uapi_server_path(c.srv));
	assert_int_equal(write(fd, "get=1\n\n", 7), 7);
	read_responses(fd, resp, sizeof(resp), 1);
	assert_string_equal(resp, "errno=0\n\n");
	close(fd);
	finish(&c);
	rmdir(path);
	rmdir(dir);
}

static int run(const char *cmd, char *out, size_t cap)
{
	FILE *p = popen(cmd, "r");
	size_t n = 0;

	assert_non_null(p);
	while (n + 1 < cap) {
		size_t r = fread(out + n, 1, cap - 1 - n, p);
		if (r == 0)
			break;
		n += r;
	}
	out[n] = '\0';
	return pclose(p);
}

/* The real wg(8): it only looks in /var/run/wireguard, so we use a name of
 * our own there and remove it at the end. */
static void test_server_with_wg(void **state)
{
	struct ctx c;
	char name[32], cmd[512], out[4096];

	if (system("command -v wg >/dev/null 2>&1") != 0) {
		printf("# wg not installed: skipped\n");
		return;
	}
	snprintf(name, sizeof(name), "knitut%d", (int)getpid() % 100000);
	start(&c, NULL, name);
	pthread_mutex_lock(&c.fake.lock);
	c.fake.dev.has_private_key = true;
	memset(c.fake.dev.private_key, 0x11, 32);
	c.fake.dev.private_key[0] &= 248;
	c.fake.dev.private_key[31] = (c.fake.dev.private_key[31] & 127) | 64;
	c.fake.dev.listen_port = 51999;
	c.fake.dev.n_peers = 1;
	memset(c.fake.peer.public_key, 0x22, 32);
	c.fake.peer.rx_bytes = 1234;
	c.fake.peer.tx_bytes = 5678;
	static struct uapi_allowed_ip ip = { .family = AF_INET, .cidr = 16 };
	inet_pton(AF_INET, "10.7.0.0", &ip.ip.v4);
	c.fake.peer.allowed_ips = &ip;
	c.fake.peer.n_allowed_ips = 1;
	pthread_mutex_unlock(&c.fake.lock);

	snprintf(cmd, sizeof(cmd), "wg show %s dump 2>&1", name);
	assert_int_equal(run(cmd, out, sizeof(out)), 0);
	printf("# wg show dump:\n%s", out);
	/* private, public (wg derives it), listen port, fwmark */
	assert_non_null(strstr(out, "EBEREREREREREREREREREREREREREREREREREREREVE=\t"
				    "e06Qm75//kTEZaIgA31gjuNYl9Me+XLwf3SJLLD3PxM=\t51999\toff\n"));
	assert_non_null(strstr(out, "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=\t(none)\t(none)\t10.7.0.0/16\t0\t1234\t5678\toff\n"));

	snprintf(cmd, sizeof(cmd),
		 "wg set %s peer MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM= allowed-ips 10.0.0.0/24 endpoint 127.0.0.1:51820 2>&1",
		 name);
	assert_int_equal(run(cmd, out, sizeof(out)), 0);
	pthread_mutex_lock(&c.fake.lock);
	assert_int_equal(c.fake.sets, 1);
	assert_int_equal(c.fake.last_peer.public_key[0], 0x33);
	assert_true(c.fake.last_peer.flags & UAPI_PEER_HAS_ENDPOINT);
	assert_true(c.fake.last_peer.flags & UAPI_PEER_REPLACE_ALLOWED_IPS);
	assert_int_equal(c.fake.last_peer.endpoint.addr.in4.sin_addr.s_addr, inet_addr("127.0.0.1"));
	assert_int_equal(ntohs(c.fake.last_peer.endpoint.addr.in4.sin_port), 51820);
	assert_int_equal(c.fake.last_peer.n_allowed_ips, 1);
	assert_int_equal(c.fake.last_ip.ip.v4.s_addr, inet_addr("10.0.0.0"));
	assert_int_equal(c.fake.last_ip.cidr, 24);
	pthread_mutex_unlock(&c.fake.lock);

	/* an engine error reaches the user as the errno's text */
	snprintf(cmd, sizeof(cmd), "wg set %s fwmark 7 2>&1", name);
	assert_int_not_equal(run(cmd, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "Address already in use"));

	/* wg lists us among the interfaces */
	assert_int_equal(run("wg show interfaces", out, sizeof(out)), 0);
	assert_non_null(strstr(out, name));
	finish(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_full),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_server_raw),
		cmocka_unit_test(test_server_with_wg),
	};

	alarm(60);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
