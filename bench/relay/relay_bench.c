/* knit-relay benchmark client (bench/relay/run.sh drives it):
 *
 *   relay_bench throughput URL RELAY_PID BYTES
 *   relay_bench latency URL ROUNDS
 *   relay_bench idle URL RELAY_PID N
 *
 * throughput: one stream of 1400-byte packets from client A to client B
 * through the relay, and the same frames over a direct loopback TCP
 * connection in the same run (the reference: what the relay adds is the
 * second hop and its forwarding); the relay's CPU time from /proc.
 * latency: ping-pong of a 64-byte packet A -> B -> A, relay vs direct.
 * idle: N handshaked clients that then sit idle; the relay's RSS growth
 * per client. Prints "RESULT key=value ..." lines. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "loop.h"
#include "relay/client.h"
#include "relay/frame.h"

#define PKT 1400

struct cl {
	int fd;
	struct relay_client rc;
	struct buf out;
	uint64_t rx_bytes, rx_packets;
	bool ready;
};

static void on_packet(const uint8_t src[32], const uint8_t *data, size_t len, void *arg)
{
	struct cl *c = arg;

	c->rx_bytes += len;
	c->rx_packets++;
}

static const struct relay_client_cb cb = { .packet = on_packet };

static uint16_t url_port(const char *url)
{
	const char *colon = strrchr(url, ':');

	return colon ? (uint16_t)atoi(colon + 1) : 80;
}

static int tcp(uint16_t port, bool nonblock)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	sin.sin_addr.s_addr = htonl(0x7f000001);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		perror("connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (nonblock)
		fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

static void cl_open(struct cl *c, uint16_t port)
{
	uint8_t pub[32], priv[32];

	memset(c, 0, sizeof(*c));
	crypto_box_keypair(pub, priv);
	c->fd = tcp(port, true);
	buf_init(&c->out, 64 << 20);
	relay_client_init(&c->rc, pub, priv, NULL, &cb, c);
	relay_client_start(&c->rc, "127.0.0.1", &c->out);
	sodium_memzero(priv, sizeof(priv));
}

static void cl_free(struct cl *c)
{
	close(c->fd);
	relay_client_free(&c->rc);
	buf_free(&c->out);
}

/* Writes what it can, reads what is there. */
static void cl_io(struct cl *c)
{
	static uint8_t b[256 << 10];
	ssize_t n;

	while (c->out.len) {
		n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n <= 0)
			break;
		buf_consume(&c->out, (size_t)n);
	}
	while ((n = recv(c->fd, b, sizeof(b), MSG_DONTWAIT)) > 0)
		if (relay_client_feed(&c->rc, b, (size_t)n, &c->out) < 0) {
			fprintf(stderr, "relay_bench: %s\n", c->rc.error);
			exit(1);
		}
}

static void cl_wait_ready(struct cl *c)
{
	uint64_t end = loop_mono_ms() + 10000;

	while (!relay_client_ready(&c->rc)) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN | (c->out.len ? POLLOUT : 0) };

		if (loop_mono_ms() > end) {
			fprintf(stderr, "relay_bench: handshake timeout\n");
			exit(1);
		}
		poll(&p, 1, 100);
		cl_io(c);
	}
}

static uint64_t cpu_ticks(int pid)
{
	char path[64], line[1024];
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f || !fgets(line, sizeof(line), f)) {
		if (f)
			fclose(f);
		return 0;
	}
	fclose(f);
	/* fields 14 and 15 after the ")" of the command name */
	sscanf(strrchr(line, ')') + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
	return ut + st;
}

static long rss_kb(int pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Pumps a -> relay -> b: a sends bytes of packets as fast as its socket
 * takes them; the relay drops what overflows b's queue (it does not push
 * back on senders), so this returns b's goodput window: from the first
 * send to the last packet b got (b idle 300 ms after a is done). */
static double relay_stream(struct cl *a, struct cl *b, uint64_t bytes, uint64_t *sent_out)
{
	static uint8_t pkt[PKT];
	uint64_t sent = 0, last_rx = 0;
	double t0 = now_s(), t_last = t0, idle_since = 0;

	memset(pkt, 0x42, sizeof(pkt));
	while (b->rx_bytes < bytes) {
		struct pollfd p[2] = { { .fd = a->fd, .events = POLLOUT }, { .fd = b->fd, .events = POLLIN } };

		while (sent < bytes && a->out.len < (256u << 10)) {
			relay_client_send(&a->rc, b->rc.pub, pkt, sizeof(pkt), &a->out);
			sent += sizeof(pkt);
		}
		poll(p, 2, 50);
		cl_io(a);
		cl_io(b);
		if (b->rx_bytes != last_rx) {
			last_rx = b->rx_bytes;
			t_last = now_s();
			idle_since = 0;
		} else if (sent >= bytes && !a->out.len) {
			if (!idle_since)
				idle_since = now_s();
			else if (now_s() - idle_since > 0.3)
				break;
		}
	}
	*sent_out = sent;
	return t_last - t0;
}

/* The same frames straight over loopback TCP, parsed by the same parser. */
static double direct_stream(uint64_t bytes)
{
	static uint8_t pkt[PKT], rbuf[256 << 10];
	int l = socket(AF_INET, SOCK_STREAM, 0), a, b, one = 1;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct buf out = BUF_INIT(64 << 20);
	struct relay_parser parser;
	uint8_t dst[32] = { 1 };
	uint64_t sent = 0, got = 0;
	double t0;

	sin.sin_addr.s_addr = htonl(0x7f000001);
	bind(l, (struct sockaddr *)&sin, sizeof(sin));
	listen(l, 1);
	getsockname(l, (struct sockaddr *)&sin, &sl);
	a = tcp(ntohs(sin.sin_port), true);
	b = accept(l, NULL, NULL);
	setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(b, F_SETFL, O_NONBLOCK);
	relay_parser_init(&parser, 0);
	memset(pkt, 0x42, sizeof(pkt));
	t0 = now_s();
	while (got < bytes) {
		struct pollfd p[2] = { { .fd = a, .events = POLLOUT }, { .fd = b, .events = POLLIN } };
		ssize_t n;

		while (sent < bytes && out.len < (1u << 20)) {
			relay_frame_send_packet(&out, dst, pkt, sizeof(pkt));
			sent += sizeof(pkt);
		}
		poll(p, 2, 100);
		while (out.len && (n = send(a, out.data, out.len, MSG_DONTWAIT | MSG_NOSIGNAL)) > 0)
			buf_consume(&out, (size_t)n);
		while ((n = recv(b, rbuf, sizeof(rbuf), MSG_DONTWAIT)) > 0) {
			const uint8_t *d = rbuf;
			size_t left = (size_t)n;
			struct relay_frame f;
			struct relay_msg m;

			while (relay_parser_next(&parser, &d, &left, &f) == 1)
				if (relay_frame_decode(&f, &m, NULL, 0))
					got += m.data_len;
		}
	}
	t0 = now_s() - t0;
	relay_parser_free(&parser);
	buf_free(&out);
	close(a);
	close(b);
	close(l);
	return t0;
}

static int cmd_throughput(const char *url, int pid, uint64_t bytes)
{
	struct cl a, b;
	uint64_t c0, c1, sent;
	double t_relay, t_direct, gbit_relay, gbit_direct, cpu_s;

	cl_open(&a, url_port(url));
	cl_open(&b, url_port(url));
	cl_wait_ready(&a);
	cl_wait_ready(&b);
	{
		uint64_t warm;

		relay_stream(&a, &b, 64 << 20, &warm); /* warm up */
	}
	b.rx_bytes = 0;
	c0 = cpu_ticks(pid);
	t_relay = relay_stream(&a, &b, bytes, &sent);
	c1 = cpu_ticks(pid);
	t_direct = direct_stream(bytes);
	gbit_relay = (double)b.rx_bytes * 8 / t_relay / 1e9;
	gbit_direct = (double)bytes * 8 / t_direct / 1e9;
	cpu_s = (double)(c1 - c0) / (double)sysconf(_SC_CLK_TCK);
	printf("RESULT test=throughput bytes=%llu delivered=%.1f%% relay_gbit=%.2f direct_gbit=%.2f ratio=%.2f "
	       "relay_cpu_s=%.2f relay_cpu_s_per_gbit=%.3f\n",
	       (unsigned long long)bytes, 100.0 * (double)b.rx_bytes / (double)sent, gbit_relay, gbit_direct,
	       gbit_relay / gbit_direct, cpu_s, cpu_s / ((double)b.rx_bytes * 8 / 1e9));
	cl_free(&a);
	cl_free(&b);
	return 0;
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return a < b ? -1 : a > b;
}

static int cmd_latency(const char *url, int rounds)
{
	struct cl a, b;
	double *rt = calloc((size_t)rounds, sizeof(double)), *dt = calloc((size_t)rounds, sizeof(double));
	uint8_t pkt[64] = { 0 };
	int l = socket(AF_INET, SOCK_STREAM, 0), da, db;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);

	if (!rt || !dt)
		return 1;
	cl_open(&a, url_port(url));
	cl_open(&b, url_port(url));
	cl_wait_ready(&a);
	cl_wait_ready(&b);
	for (int i = 0; i < rounds; i++) {
		uint64_t want_b = b.rx_packets + 1, want_a = a.rx_packets + 1;
		double t0 = now_s();

		relay_client_send(&a.rc, b.rc.pub, pkt, sizeof(pkt), &a.out);
		while (b.rx_packets < want_b) {
			struct pollfd p = { .fd = b.fd, .events = POLLIN };

			cl_io(&a);
			poll(&p, 1, 100);
			cl_io(&b);
		}
		relay_client_send(&b.rc, a.rc.pub, pkt, sizeof(pkt), &b.out);
		while (a.rx_packets < want_a) {
			struct pollfd p = { .fd = a.fd, .events = POLLIN };

			cl_io(&b);
			poll(&p, 1, 100);
			cl_io(&a);
		}
		rt[i] = (now_s() - t0) * 1e6;
	}
	/* Direct: the same 64-byte frame echoed over one loopback TCP hop. */
	sin.sin_addr.s_addr = htonl(0x7f000001);
	bind(l, (struct sockaddr *)&sin, sizeof(sin));
	listen(l, 1);
	getsockname(l, (struct sockaddr *)&sin, &sl);
	da = tcp(ntohs(sin.sin_port), false);
	db = accept(l, NULL, NULL);
	{
		int one = 1;

		setsockopt(db, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	for (int i = 0; i < rounds; i++) {
		uint8_t f[RELAY_FRAME_HDR + 32 + 64] = { RELAY_FRAME_SEND_PACKET };
		double t0 = now_s();
		size_t got;

		if (write(da, f, sizeof(f)) != (ssize_t)sizeof(f))
			return 1;
		for (got = 0; got < sizeof(f);)
			got += (size_t)read(db, f + got, sizeof(f) - got);
		if (write(db, f, sizeof(f)) != (ssize_t)sizeof(f))
			return 1;
		for (got = 0; got < sizeof(f);)
			got += (size_t)read(da, f + got, sizeof(f) - got);
		dt[i] = (now_s() - t0) * 1e6;
	}
	qsort(rt, (size_t)rounds, sizeof(double), cmp_double);
	qsort(dt, (size_t)rounds, sizeof(double), cmp_double);
	printf("RESULT test=latency rounds=%d relay_rtt_p50_us=%.0f relay_rtt_p99_us=%.0f direct_rtt_p50_us=%.0f "
	       "direct_rtt_p99_us=%.0f added_p50_us=%.0f\n",
	       rounds, rt[rounds / 2], rt[rounds * 99 / 100], dt[rounds / 2], dt[rounds * 99 / 100],
	       rt[rounds / 2] - dt[rounds / 2]);
	cl_free(&a);
	cl_free(&b);
	close(da);
	close(db);
	close(l);
	free(rt);
	free(dt);
	return 0;
}

static int cmd_idle(const char *url, int pid, int n)
{
	struct cl *c = calloc((size_t)n, sizeof(*c));
	long before, after;
	int ready = 0;
	double t0;

	if (!c)
		return 1;
	before = rss_kb(pid);
	t0 = now_s();
	/* In batches, so the relay's accept backlog never overflows. */
	for (int base = 0; base < n; base += 256) {
		int end = base + 256 < n ? base + 256 : n;

		for (int i = base; i < end; i++)
			cl_open(&c[i], url_port(url));
		for (int i = base; i < end; i++) {
			cl_wait_ready(&c[i]);
			ready++;
		}
	}
	/* Let the relay settle (its handshake buffers released). */
	usleep(1500000);
	after = rss_kb(pid);
	printf("RESULT test=idle clients=%d ready=%d connect_s=%.1f relay_rss_before_kb=%ld relay_rss_after_kb=%ld "
	       "bytes_per_client=%.0f\n",
	       n, ready, now_s() - t0, before, after, (double)(after - before) * 1024 / n);
	for (int i = 0; i < n; i++)
		cl_free(&c[i]);
	free(c);
	return 0;
}

int main(int argc, char **argv)
{
	struct rlimit rl;

	if (sodium_init() < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (argc == 5 && !strcmp(argv[1], "throughput"))
		return cmd_throughput(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10));
	if (argc == 4 && !strcmp(argv[1], "latency"))
		return cmd_latency(argv[2], atoi(argv[3]));
	if (argc == 5 && !strcmp(argv[1], "idle"))
		return cmd_idle(argv[2], atoi(argv[3]), atoi(argv[4]));
	fprintf(stderr, "usage: relay_bench throughput URL PID BYTES | latency URL ROUNDS | idle URL PID N\n");
	return 2;
}
