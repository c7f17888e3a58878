/* knit-relay: relays packets between knit nodes that cannot reach each
 * other directly, keyed by node public key, and answers STUN so nodes learn
 * their reflexive addresses. See docs/relay-protocol.md and relay/README.md. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "buf.h"
#include "httpd.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "relay/frame.h"
#include "relay/hello.h"
#include "instance.h"
#include "server.h"

struct options {
	const char *listen, *tls_cert, *tls_key, *key_file, *mesh_key_file, *mesh_ca;
	const char *http_listen, *stun_addr, *log_level;
	char *mesh_with;
	long stun_port;
	unsigned long queue_bytes, keepalive_s, idle_timeout_s, max_clients;
	bool print_key;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: knit-relay --key-file PATH [OPTIONS]\n"
		"\n"
		"Relays packets between knit nodes that cannot reach each other directly.\n"
		"Clients connect over TCP (TLS with --tls-cert/--tls-key) with an HTTP upgrade\n"
		"(GET /knit/relay, Upgrade: knit-relay), prove they hold their node key, and then\n"
		"send packets addressed to other nodes' public keys (docs/relay-protocol.md).\n"
		"Relays of one region mesh so that clients of different relays reach each other.\n"
		"An embedded STUN server answers Binding requests (RFC 5389).\n"
		"\n"
		"  --key-file PATH           the relay's private key (base64, as `wg genkey`);\n"
		"                            created with mode 0600 when missing. Its public key\n"
		"                            is logged at start and is what clients pin\n"
		"  --print-public-key        print the public key (base64, hex, and relaykey:HEX\n"
		"                            as a relay map's publicKey pins it) and exit\n"
		"  --listen ADDR:PORT        relay connections (default [::]:443 with TLS,\n"
		"                            [::]:80 without; [::] accepts IPv4 too)\n"
		"  --tls-cert PATH           serve TLS with this certificate chain (PEM) ...\n"
		"  --tls-key PATH            ... and this private key (PEM); both or neither\n"
		"  --mesh-with URL,...       other relays of this region to mesh with:\n"
		"                            http://HOST:PORT or https://HOST:PORT; each relay\n"
		"                            lists the others. Needs --mesh-key-file\n"
		"  --mesh-key-file PATH      the region's shared mesh secret (any bytes); only\n"
		"                            relays holding it may mesh. It never crosses the wire\n"
		"  --mesh-ca PATH            CA bundle (PEM) for https mesh URLs (default: the\n"
		"                            system's trust store); the host name is verified\n"
		"  --stun-port PORT          STUN on this UDP port (default 3478; 0 disables)\n"
		"  --stun-addr ADDR          STUN bind address (default [::], dual-stack)\n"
		"  --http-listen ADDR:PORT   serve /healthz and Prometheus /metrics (default\n"
		"                            none)\n"
		"  --queue-bytes N           per-client send queue cap; packets beyond it are\n"
		"                            dropped and counted (default %u)\n"
		"  --keepalive SECONDS       send a keepalive to a client silent this long\n"
		"                            (default %u)\n"
		"  --idle-timeout SECONDS    close a client that sent nothing this long (default\n"
		"                            %u; clients keep alive at the interval SERVER_INFO\n"
		"                            tells them)\n"
		"  --max-clients N           connections at most (default %u)\n"
		"  --log-level LEVEL         debug, info, warn, error (default info)\n"
		"  -h, --help                show this help\n"
		"\n"
		"SIGTERM or SIGINT: stop accepting, tell clients (HEALTH frame), exit 0.\n"
		"Exit status: 0 after a signal, 1 on a startup error, 2 on a usage error.\n",
		RELAY_QUEUE_BYTES_DEFAULT, RELAY_KEEPALIVE_MS_DEFAULT / 1000,
		RELAY_IDLE_TIMEOUT_MS_DEFAULT / 1000, RELAY_MAX_CLIENTS_DEFAULT);
}

static bool parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max || s[0] == '-')
		return false;
	*out = v;
	return true;
}

static void on_signal(struct loop *loop, int signo, void *arg)
{
	struct relay_instance *r = arg;

	log_info("shutting down", "signal=%d", signo);
	relay_instance_shutdown(r);
	loop_stop(loop);
}

static void healthz(struct httpd_req *req, void *arg)
{
	httpd_respond_text(req, 200, "ok\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { O_LISTEN = 256, O_CERT, O_KEY, O_KEYFILE, O_MESH, O_MESHKEY, O_MESHCA, O_STUNPORT,
	       O_STUNADDR, O_HTTP, O_QUEUE, O_KEEPALIVE, O_IDLE, O_MAXC, O_LOG, O_PRINT };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "tls-cert", required_argument, NULL, O_CERT },
		{ "tls-key", required_argument, NULL, O_KEY },
		{ "key-file", required_argument, NULL, O_KEYFILE },
		{ "mesh-with", required_argument, NULL, O_MESH },
		{ "mesh-key-file", required_argument, NULL, O_MESHKEY },
		{ "mesh-ca", required_argument, NULL, O_MESHCA },
		{ "stun-port", required_argument, NULL, O_STUNPORT },
		{ "stun-addr", required_argument, NULL, O_STUNADDR },
		{ "http-listen", required_argument, NULL, O_HTTP },
		{ "queue-bytes", required_argument, NULL, O_QUEUE },
		{ "keepalive", required_argument, NULL, O_KEEPALIVE },
		{ "idle-timeout", required_argument, NULL, O_IDLE },
		{ "max-clients", required_argument, NULL, O_MAXC },
		{ "log-level", required_argument, NULL, O_LOG },
		{ "print-public-key", no_argument, NULL, O_PRINT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN: o->listen = optarg; break;
		case O_CERT: o->tls_cert = optarg; break;
		case O_KEY: o->tls_key = optarg; break;
		case O_KEYFILE: o->key_file = optarg; break;
		case O_MESH: o->mesh_with = optarg; break;
		case O_MESHKEY: o->mesh_key_file = optarg; break;
		case O_MESHCA: o->mesh_ca = optarg; break;
		case O_STUNADDR: o->stun_addr = optarg; break;
		case O_HTTP: o->http_listen = optarg; break;
		case O_LOG: o->log_level = optarg; break;
		case O_PRINT: o->print_key = true; break;
		case O_STUNPORT:
			if (!parse_ulong(optarg, 65535, &v))
				goto bad;
			o->stun_port = (long)v;
			break;
		case O_QUEUE:
			if (!parse_ulong(optarg, 1ul << 30, &o->queue_bytes) || o->queue_bytes < RELAY_MAX_FRAME)
				goto bad;
			break;
		case O_KEEPALIVE:
			if (!parse_ulong(optarg, 3600, &o->keepalive_s) || !o->keepalive_s)
				goto bad;
			break;
		case O_IDLE:
			if (!parse_ulong(optarg, 86400, &o->idle_timeout_s) || !o->idle_timeout_s)
				goto bad;
			break;
		case O_MAXC:
			if (!parse_ulong(optarg, 10000000, &o->max_clients) || !o->max_clients)
				goto bad;
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
		continue;
bad:
		fprintf(stderr, "knit-relay: bad value for --%s: %s\n", opts[c - O_LISTEN].name, optarg);
		return -1;
	}
	if (optind != argc) {
		fprintf(stderr, "knit-relay: unexpected argument %s\n", argv[optind]);
		return -1;
	}
	if (!o->key_file) {
		fprintf(stderr, "knit-relay: --key-file is required\n");
		return -1;
	}
	if (!o->tls_cert != !o->tls_key) {
		fprintf(stderr, "knit-relay: --tls-cert and --tls-key go together\n");
		return -1;
	}
	if (o->mesh_with && !o->mesh_key_file) {
		fprintf(stderr, "knit-relay: --mesh-with needs --mesh-key-file\n");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .stun_port = 3478 };
	struct relay_instance_opts ro = { 0 };
	uint8_t priv[32], pub[32];
	enum log_level lvl = LOG_INFO;
	struct loop *loop = NULL;
	struct metrics *metrics = NULL;
	struct relay_instance *relay = NULL;
	struct httpd *http = NULL;
	char hex[65], b64[64], text[RELAY_KEY_TEXT_LEN], err[512];
	int ret, code = 1;

	if (parse_args(argc, argv, &o) != 0)
		return 2;
	if (o.log_level && !log_level_parse(o.log_level, &lvl)) {
		fprintf(stderr, "knit-relay: unknown log level %s\n", o.log_level);
		return 2;
	}
	log_init("knit-relay", lvl);
	if (sodium_init() < 0)
		return 1;
	if (o.print_key) {
		if ((ret = relay_key_load(o.key_file, priv)) != 0) {
			log_error("cannot load the relay key", "path=%s errno=%d", o.key_file, -ret);
			return 1;
		}
		crypto_scalarmult_base(pub, priv);
		sodium_memzero(priv, sizeof(priv));
		sodium_bin2base64(b64, sizeof(b64), pub, 32, sodium_base64_VARIANT_ORIGINAL);
		printf("%s\n%s\n%s\n", b64, relay_key_hex(pub, hex), relay_key_text(pub, text));
		return 0;
	}
	loop = loop_new();
	metrics = metrics_new();
	if (!loop || !metrics)
		goto out;
	ro.listen = o.listen;
	ro.key_file = o.key_file;
	ro.tls_cert = o.tls_cert;
	ro.tls_key = o.tls_key;
	ro.mesh_with = o.mesh_with;
	ro.mesh_key_file = o.mesh_key_file;
	ro.mesh_ca = o.mesh_ca;
	ro.stun_addr = o.stun_addr;
	ro.stun_port = (uint16_t)o.stun_port;
	ro.queue_bytes = o.queue_bytes;
	ro.keepalive_ms = (uint32_t)o.keepalive_s * 1000;
	ro.idle_timeout_ms = (uint32_t)o.idle_timeout_s * 1000;
	ro.max_clients = (unsigned)o.max_clients;
	ro.metrics = metrics;
	if ((ret = relay_instance_new(loop, &ro, &relay, err, sizeof(err))) != 0) {
		log_error("cannot start the relay", "error=\"%s\"", err);
		goto out;
	}
	if (o.http_listen) {
		struct httpd_opts ho = { .listen = o.http_listen, .listen_fd = -1 };

		if ((ret = httpd_new(loop, &ho, &http)) != 0 ||
		    (ret = httpd_route(http, "GET", "/healthz", 0, healthz, NULL)) != 0 ||
		    (ret = httpd_serve_metrics(http, metrics)) != 0) {
			log_error("cannot serve HTTP", "listen=%s errno=%d", o.http_listen, -ret);
			goto out;
		}
	}
	{
		/* One descriptor per client: take what the hard limit allows. */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	loop_signal_add(loop, SIGTERM, on_signal, relay);
	loop_signal_add(loop, SIGINT, on_signal, relay);
	signal(SIGPIPE, SIG_IGN);
	log_info("relay started", "public_key=%s key=%s listen=%s port=%u tls=%d stun_port=%u http=%s mesh_peers=%zu",
		 relay_instance_public_key(relay), relay_instance_key_text(relay), relay_instance_listen(relay), relay_instance_port(relay),
		 relay_instance_tls(relay), relay_instance_stun_port(relay), o.http_listen ? o.http_listen : "none",
		 relay_instance_mesh_peers(relay));
	if (loop_run(loop) == 0)
		code = 0;
out:
	httpd_free(http);
	relay_instance_free(relay);
	metrics_free(metrics);
	loop_free(loop);
	log_info("exited", "code=%d", code);
	return code;
}
