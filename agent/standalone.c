/* Standalone mode: one engine on one hub, configured over the UAPI
 * socket by wg(8), as wireguard-go is. Daemonizes like wireguard-go: the
 * parent returns once the TUN device and the UAPI socket are ready (so
 * wg-quick can configure it at once), or fails with the child's error. */
#include "standalone.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <net/if.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "health.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "policy/filter.h"
#include "wg/aead.h"
#include "wg/engine.h"
#include "wg/hub.h"
#include "wg/pool.h"
#include "wg/uapi_server.h"

struct options {
	const char *ifname;
	bool foreground;
	int workers; /* -1: auto */
	const char *log_level;
	const char *http_listen; /* /healthz and /metrics */
	const char *packet_filter; /* a packetFilter JSON file to enforce */
};

void standalone_usage(FILE *f, const char *prog)
{
	fprintf(f,
		"Usage: %s [-f] [OPTIONS] IFNAME\n"
		"\n"
		"Runs a userspace WireGuard interface, as wireguard-go does: creates the TUN\n"
		"device IFNAME (MTU 1420, left down), and serves the WireGuard configuration\n"
		"protocol on /var/run/wireguard/IFNAME.sock, so that wg(8) and wg-quick(8)\n"
		"configure and show it (wg set, wg setconf, wg show) and ip(8) addresses and\n"
		"raises it. It listens on a random UDP port (IPv4 and, if the host has it,\n"
		"IPv6) until `wg set IFNAME listen-port N` says otherwise.\n"
		"\n"
		"Without -f it detaches into the background once the device and the socket\n"
		"are ready, and the command returns 0; it fails with a message if they\n"
		"cannot be made.\n"
		"\n"
		"  -f, --foreground      stay in the foreground, logging to stderr\n"
		"  --workers N           crypt worker threads (default: one per CPU, none on\n"
		"                        one or two CPUs; 0 runs encryption on the threads\n"
		"                        that read the packets)\n"
		"  --log-level LEVEL     debug, info, warn, error (default info)\n"
		"  --http-listen ADDR    serve /healthz and Prometheus /metrics (knitd_peers,\n"
		"                        knitd_inbound_bytes_total, ...) on ADDR, e.g.\n"
		"                        127.0.0.1:9102 (default: not served)\n"
		"  --packet-filter FILE  enforce a knit access policy on decrypted traffic:\n"
		"                        FILE holds a netmap's packetFilter (the FilterRule\n"
		"                        list the operator compiles, docs/filter.md), up to\n"
		"                        16 MiB; inbound flows it does not allow are dropped,\n"
		"                        replies to outbound flows pass (stateful). Read once\n"
		"                        at start; a file that does not parse is an error\n"
		"                        (default: no filter, as plain WireGuard)\n"
		"  -h, --help            show this help\n"
		"\n"
		"It exits, removing its socket, on SIGTERM or SIGINT, and when the TUN device\n"
		"is deleted (ip link del IFNAME), also after it was moved to another network\n"
		"namespace (ip link set IFNAME netns NS), where it keeps working. Inner\n"
		"packets up to %d bytes are carried; with a higher tunnel MTU, bigger ones\n"
		"are answered with ICMP fragmentation needed / packet too big (path MTU\n"
		"discovery) and counted as dropped, reason too_big.\n"
		"\n"
		"Environment:\n"
		"  KNIT_LOG_LEVEL        log level, as --log-level. In the background, logs go\n"
		"                        to /dev/null unless this is set (as wireguard-go's\n"
		"                        LOG_LEVEL).\n"
		"  KNIT_WG_UNDER_LOAD_AT queued handshakes from which cookies are demanded\n"
		"                        (default 512, an eighth of the queue; tests set 1)\n"
		"  KNIT_WG_READERS_HELP  0: the TUN and UDP reader threads leave all crypto\n"
		"                        to the workers (default: they take a share)\n"
		"  KNIT_AEAD             ChaCha20-Poly1305 backend: avx512, avx2, openssl,\n"
		"                        libsodium (default auto: the fastest here, measured\n"
		"                        at start)\n"
		"\n"
		"For wg-quick: WG_QUICK_USERSPACE_IMPLEMENTATION=knit-wg (knitd run under\n"
		"the name knit-wg behaves as `knitd wg`).\n",
		prog, POOL_PAYLOAD_MAX);
}

/* "knitd wg" when run as a subcommand, else the name it was run under. */
static const char *prog_name(const char *argv0)
{
	const char *slash = strrchr(argv0, '/');

	return !strcmp(argv0, "wg") ? "knitd wg" : slash ? slash + 1 : argv0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { WORKERS = 256, LOG_LEVEL, HTTP_LISTEN, PACKET_FILTER };
	static const struct option longopts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "workers", required_argument, NULL, WORKERS },
		{ "log-level", required_argument, NULL, LOG_LEVEL },
		{ "http-listen", required_argument, NULL, HTTP_LISTEN },
		{ "packet-filter", required_argument, NULL, PACKET_FILTER },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct options){ .workers = -1, .log_level = getenv("KNIT_LOG_LEVEL") };
	optind = 1;
	while ((c = getopt_long(argc, argv, "+fh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			o->foreground = true;
			break;
		case WORKERS: {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*end || v < 0 || v > 64) {
				fprintf(stderr, "knitd wg: --workers must be 0..64\n");
				return 2;
			}
			o->workers = (int)v;
			break;
		}
		case LOG_LEVEL:
			o->log_level = optarg;
			break;
		case HTTP_LISTEN:
			o->http_listen = optarg;
			break;
		case PACKET_FILTER:
			o->packet_filter = optarg;
			break;
		case 'h':
			standalone_usage(stdout, prog_name(argv[0]));
			return 1;
		default:
			standalone_usage(stderr, prog_name(argv[0]));
			return 2;
		}
	}
	if (optind != argc - 1) {
		standalone_usage(stderr, prog_name(argv[0]));
		return 2;
	}
	o->ifname = argv[optind];
	if (!*o->ifname || strlen(o->ifname) >= IFNAMSIZ || strchr(o->ifname, '/')) {
		fprintf(stderr, "knitd wg: \"%s\" is not a valid interface name\n", o->ifname);
		return 2;
	}
	return 0;
}

struct standalone {
	struct loop *loop;
	struct engine *engine;
	int exit_code;
};

#define PACKET_FILTER_MAX_BYTES (16u << 20)

/* --packet-filter: the file's packetFilter in force on e's filter. No
 * destination check (filter_set_local): plain WireGuard has no netmap to
 * say which addresses are the device's. */
static int load_packet_filter(struct engine *e, const char *path)
{
	struct buf text = BUF_INIT(PACKET_FILTER_MAX_BYTES);
	struct json_error je = { 0 };
	struct json *j = NULL;
	char err[256], chunk[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;
	ssize_t n;

	if (fd < 0) {
		fprintf(stderr, "knitd wg: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) > 0 && !ret)
		ret = buf_add(&text, chunk, (size_t)n);
	if (n < 0)
		ret = -errno;
	close(fd);
	if (ret) {
		fprintf(stderr, "knitd wg: %s: %s\n", path,
			ret == -ENOSPC ? "larger than 16 MiB" : strerror(-ret));
		goto out;
	}
	j = json_parse_max((const char *)text.data, text.len, PACKET_FILTER_MAX_BYTES, &je);
	if (!j) {
		fprintf(stderr, "knitd wg: %s:%zu:%zu: %s\n", path, je.line, je.column, je.msg);
		ret = -EINVAL;
		goto out;
	}
	ret = filter_set(engine_filter(e), j, err, sizeof(err));
	if (ret)
		fprintf(stderr, "knitd wg: %s: %s\n", path, ret == -ENOMEM ? "out of memory" : err);
	else
		log_info("packet filter in force", "file=%s", path);
out:
	json_free(j);
	buf_free(&text);
	return ret;
}

/* Flows that ended leave the connection table about once a second. */
static void on_expire(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct standalone *s = arg;

	filter_expire(engine_filter(s->engine), loop_mono_ms());
	loop_timer_arm(t, 1000);
}

static void on_signal(struct loop *loop, int signo, void *arg)
{
	log_info("shutting down", "signal=%s", strsignal(signo));
	loop_stop(loop);
}

static void on_down(void *arg, struct engine *e)
{
	struct standalone *s = arg;

	log_info("interface removed: shutting down", "dev=%s", engine_ifname(e));
	loop_stop(s->loop);
}

/* Writes the status for a waiting parent (once). */
static void report(int *fd, int status)
{
	unsigned char b = (unsigned char)status;

	if (*fd < 0)
		return;
	if (write(*fd, &b, 1) != 1)
		log_warn("could not report readiness", "errno=%d", errno);
	close(*fd);
	*fd = -1;
}

/* Forks; the parent waits for the child's status byte and exits with it. */
static int daemonize(int *ready_fd)
{
	int p[2];
	pid_t pid;
	unsigned char status = 1;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &status, 1) != 1)
			status = 1;
		_exit(status);
	}
	close(p[0]);
	*ready_fd = p[1];
	setsid();
	return 0;
}

static void detach_stdio(bool keep_output)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (null < 0)
		return;
	dup2(null, STDIN_FILENO);
	if (!keep_output) {
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
	}
	close(null);
}

int standalone_main(int argc, char **argv)
{
	struct options o;
	struct standalone s = { .exit_code = 1 };
	struct hub_config hc = { 0 };
	struct engine_config ec = { 0 };
	struct hub *hub = NULL;
	struct engine *engine = NULL;
	struct uapi_server *srv = NULL;
	struct health *http = NULL;
	struct loop_timer *expire = NULL;
	enum log_level level = LOG_INFO;
	int ready_fd = -1, ret;
	const char *ula = getenv("KNIT_WG_UNDER_LOAD_AT");

	ret = parse_args(argc, argv, &o);
	if (ret)
		return ret == 1 ? 0 : ret;
	if (o.log_level && !log_level_parse(o.log_level, &level)) {
		fprintf(stderr, "knitd wg: unknown log level \"%s\"\n", o.log_level);
		return 2;
	}
	log_init("knitd", level);
	if (!o.foreground) {
		ret = daemonize(&ready_fd);
		if (ret) {
			fprintf(stderr, "knitd wg: cannot daemonize: %s\n", strerror(-ret));
			return 1;
		}
	}

	ret = aead_init_env();
	if (ret)
		goto out;
	s.loop = loop_new();
	if (!s.loop) {
		ret = -ENOMEM;
		goto out;
	}
	/* Before any thread starts, so they all inherit the blocked mask. */
	signal(SIGPIPE, SIG_IGN);
	loop_signal_add(s.loop, SIGTERM, on_signal, &s);
	loop_signal_add(s.loop, SIGINT, on_signal, &s);

	hc.workers = o.workers < 0 ? hub_default_workers() : (unsigned)o.workers;
	hc.readers_help = !getenv("KNIT_WG_READERS_HELP") || strcmp(getenv("KNIT_WG_READERS_HELP"), "0");
	if (ula)
		hc.under_load_at = (size_t)strtoul(ula, NULL, 10);
	ret = hub_new(&hub, s.loop, &hc);
	if (ret) {
		log_error("cannot open UDP sockets", "errno=%d", -ret);
		goto out;
	}
	ec.ifname = o.ifname;
	ec.owns_port = true;
	ec.filtered = o.packet_filter != NULL;
	ec.on_down = on_down;
	ec.arg = &s;
	ret = engine_new(&engine, hub, &ec);
	if (ret) {
		log_error("cannot create TUN device", "dev=%s errno=%d", o.ifname, -ret);
		if (!o.foreground)
			fprintf(stderr, "knitd wg: cannot create TUN device %s: %s\n", o.ifname, strerror(-ret));
		goto out;
	}
	s.engine = engine;
	if (o.packet_filter) {
		ret = load_packet_filter(engine, o.packet_filter);
		if (ret)
			goto out;
		expire = loop_timer_new(s.loop, on_expire, &s);
		if (!expire) {
			ret = -ENOMEM;
			goto out;
		}
		loop_timer_arm(expire, 1000);
	}
	ret = uapi_server_open(&srv, s.loop, NULL, engine_ifname(engine), &engine_uapi_ops, engine);
	if (ret) {
		log_error("cannot serve UAPI", "dev=%s errno=%d", o.ifname, -ret);
		if (!o.foreground)
			fprintf(stderr, "knitd wg: cannot serve %s/%s.sock: %s\n", UAPI_SERVER_DIR, o.ifname,
				strerror(-ret));
		goto out;
	}
	if (o.http_listen && (ret = health_new(&http, s.loop, o.http_listen, engine, NULL, NULL))) {
		log_error("cannot serve health and metrics", "listen=%s errno=%d", o.http_listen, -ret);
		if (!o.foreground)
			fprintf(stderr, "knitd wg: cannot serve health and metrics on %s: %s\n", o.http_listen,
				strerror(-ret));
		goto out;
	}
	log_info("ready", "dev=%s uapi=%s port=%u workers=%u", engine_ifname(engine), uapi_server_path(srv),
		 hub_port(hub), hc.workers);
	if (!o.foreground) {
		detach_stdio(getenv("KNIT_LOG_LEVEL") != NULL);
		report(&ready_fd, 0);
	}
	ret = loop_run(s.loop);
	s.exit_code = ret ? 1 : 0;
out:
	report(&ready_fd, 1);
	health_free(http);
	uapi_server_close(srv);
	loop_timer_free(expire);
	engine_free(engine);
	hub_free(hub);
	loop_free(s.loop);
	aead_thread_cleanup();
	return s.exit_code;
}
