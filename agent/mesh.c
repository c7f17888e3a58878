/* knitd's mesh mode, the process: arguments, the loop, the hub every
 * identity's engine shares (one UDP port), the local API, health and
 * metrics, signals, and the identities themselves, the node's first.
 * Everything here runs on the loop thread. */
#include "mesh.h"

#include <errno.h>
#include <math.h>
#include <getopt.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "datagrams.h"
#include "gateway.h"
#include "health.h"
#include "identity.h"
#include "join.h"
#include "localapi.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "netstun.h"
#include "pathstats.h"
#include "pods.h"
#include "routeplan.h"
#include "routes.h"
#include "state.h"
#include "wg/aead.h"
#include "wg/engine.h"
#include "wg/hub.h"


struct options {
	const char *login_server; /* join at start when not logged in ... */
	const char *authkey_file; /* ... with this key (or $KNIT_AUTHKEY) */
	const char *hostname;
	const char *state_path;
	const char *socket_path;
	const char *tun;
	const char *uapi_dir;
	const char *log_level;
	const char *http_listen; /* /healthz, /readyz, /metrics */
	const char *relay_ca; /* TLS trust for relays */
	const char *cni_conf_dir; /* gateway mode's pod ranges; NULL: not read */
	const char *pod_token_file; /* the node identity's register calls carry it */
	struct routes_opts routes; /* the node identity's host routing */
	int port;
	int workers;
};

/* An identity in the process's list. */
struct member {
	struct identity *id;
	struct member *next;
};

struct mesh {
	struct options o;
	struct loop *loop;
	struct hub *hub;
	struct datagrams *datagrams; /* disco and STUN off the hub's socket */
	struct netstun *netstun;
	struct pathstats *pathstats;
	struct member *identities; /* the node's own first */
	struct join *join; /* the node identity's, with --login-server */
	struct localapi *api;
	struct pods *pods; /* the CNI plugin's pod identities */
	struct gateway *gateway; /* --cni-conf-dir */
	struct health *http; /* --http-listen */
	int exit_code;
};

static struct identity *node_identity(const struct mesh *m)
{
	return m->identities ? m->identities->id : NULL;
}

/* ---- health and metrics ---- */

/* Ready: the node identity logged in, up, and holding a netmap, so a node
 * counts only once it can reach its peers; it stays ready on its last
 * netmap while the coordination server is away, because it keeps
 * forwarding. */
static void h_readyz(struct httpd_req *req, void *arg)
{
	struct mesh *m = arg;
	struct identity *id = node_identity(m);
	const char *state = identity_backend_state(id), *health = identity_health(id);

	if (strcmp(state, "Running") == 0)
		httpd_respond_text(req, 200, "ok\n");
	else
		httpd_respond_text(req, 503, "%s%s%s\n", state, health ? ": " : "", health ? health : "");
}

static double logged_in_value(void *arg)
{
	return identity_logged_in(node_identity(arg)) ? 1 : 0;
}

static double skipped_value(void *arg)
{
	return (double)identity_peers_skipped(node_identity(arg));
}

static double connected_value(void *arg)
{
	return identity_connected(node_identity(arg)) ? 1 : 0;
}

static double health_value(void *arg)
{
	return identity_health(node_identity(arg)) ? 1 : 0;
}

/* Seconds until the node key expires; +Inf when it does not (tagged,
 * or not logged in): alert on knitd_node_key_expiry_seconds < 7*86400. */
static double key_expiry_value(void *arg)
{
	int64_t exp = identity_key_expiry(node_identity(arg));

	return exp ? (double)(exp - (int64_t)time(NULL)) : INFINITY;
}

static double renewals_value(void *arg)
{
	return (double)identity_key_renewals(node_identity(arg));
}

static int serve_http(struct mesh *m)
{
	struct metrics *reg;
	int r = health_new(&m->http, m->loop, m->o.http_listen, identity_engine(node_identity(m)), h_readyz, m);

	if (r)
		return r;
	reg = health_metrics(m->http);
	if (!metrics_counter_func_new(reg, "knitd_netmap_peers_skipped_total",
				      "Malformed peers and removals left out of netmaps (the rest applied).", skipped_value, m) ||
	    !metrics_gauge_func_new(reg, "knitd_logged_in", "1 once this node has joined a tailnet.", logged_in_value, m) ||
	    !metrics_gauge_func_new(reg, "knitd_coordination_connected",
				    "1 while the map stream from the coordination server is up.", connected_value, m) ||
	    !metrics_gauge_func_new(reg, "knitd_health_problem", "1 while knit status reports a health problem.",
				    health_value, m) ||
	    !metrics_gauge_func_new(reg, "knitd_node_key_expiry_seconds",
				    "Seconds until the node key expires (+Inf: it does not); knitd renews it with a third "
				    "of its lifetime left.", key_expiry_value, m) ||
	    !metrics_counter_func_new(reg, "knitd_node_key_renewals_total", "Node keys renewed since knitd started.",
				      renewals_value, m))
		return -ENOMEM;
	if ((r = pathstats_new(&m->pathstats, m->loop, reg, node_identity(m), m->datagrams, m->netstun)))
		return r;
	log_info("serving health and metrics", "listen=%s port=%u", m->o.http_listen, health_port(m->http));
	return 0;
}

/* ---- arguments ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: knitd run [OPTIONS]\n"
		"\n"
		"Runs this machine's node agent: one tailnet identity on a TUN device, joined\n"
		"through the knit operator's coordination server. Drive it with the knit CLI\n"
		"(knit up --authkey KEY --login-server URL). The keys, the login and the last\n"
		"netmap live in the state file, so a restart keeps the identity and its\n"
		"addresses, and the node keeps forwarding while the control plane is away.\n"
		"\n"
		"  --login-server URL  join this coordination server at start when not logged\n"
		"                      in, with the auth key from --authkey-file or $KNIT_AUTHKEY\n"
		"                      (for containers; retried until the server answers)\n"
		"  --authkey-file PATH file holding the auth key for --login-server\n"
		"  --hostname NAME     the name to join with (default: this machine's)\n"
		"  --state PATH        state file (default " STATE_PATH_DEFAULT ", mode 0600)\n"
		"  --state-dir DIR     the same as --state DIR/knitd.state\n"
		"                      (pod identities of the CNI plugin: in pods/ beside the\n"
		"                      state file, one .state and one .pod file each, 0600)\n"
		"  --socket PATH       local API socket (default " LOCALAPI_SOCKET_DEFAULT "); a\n"
		"                      stale socket there is replaced, a file that is not a\n"
		"                      socket makes knitd refuse to start\n"
		"  --tun NAME          TUN device to create (default knit0)\n"
		"  --port N            WireGuard UDP port (default 41641; 0 picks one)\n"
		"  --uapi-dir DIR      also serve wg(8)'s UAPI socket DIR/<tun>.sock\n"
		"                      (/var/run/wireguard makes `wg show knit0` work)\n"
		"  --http-listen ADDR  serve /healthz, /readyz (200 once connected to the\n"
		"                      tailnet) and Prometheus /metrics on ADDR, e.g.\n"
		"                      127.0.0.1:9102 or [::]:9102 (default: not served)\n"
		"  --workers N         crypto worker threads (default: one per CPU, none on\n"
		"                      one or two CPUs: the readers seal and open)\n"
		"  --relay-ca FILE     trust these CA certificates (PEM) for relays dialled\n"
		"                      with TLS (default: the system's)\n"
		"  --cni-conf-dir DIR  the node's CNI configuration (/etc/cni/net.d): when\n"
		"                      knit-cni's entry there is in gateway mode, advertise\n"
		"                      the chain's host-local pod ranges as subnet routes\n"
		"                      (re-read every 5 s; docs/cni.md)\n"
		"  --pod-token-file F  the knitd pod's projected ServiceAccount token\n"
		"                      (audience knit.dev/node), read for every registration\n"
		"                      and sent with it: the operator binds this node's\n"
		"                      Device to the Kubernetes Node the pod runs on, which\n"
		"                      pod identities need (docs/cni.md)\n"
		"  --accept-routes     route peers' approved subnet routes through the tailnet\n"
		"                      (default: only peers' own tailnet addresses)\n"
		"  --exit-node PEER    send default-route traffic through PEER (a name or\n"
		"                      tailnet IP) when the tailnet approves it as an exit node\n"
		"  --log-level LEVEL   debug, info, warn, error (default info)\n"
		"  -h, --help          show this help\n"
		"\n"
		"Routes go into routing table 52 behind rule 5270 (knitd's own WireGuard\n"
		"packets, fwmark 0x80000, skip it at 5210), never over the host's own: a\n"
		"peer route that equals or falls inside a connected network, or covers the\n"
		"coordination server, is left out or thrown back to the main table. All of\n"
		"it is removed when knitd stops or the routes are withdrawn.\n"
		"\n"
		"SIGTERM/SIGINT stop it cleanly: the TUN device and the socket are removed,\n"
		"the state is saved.\n");
}

static int parse_args(int argc, char **argv, struct options *o, char *state_buf, size_t state_len)
{
	enum { STATE = 256, STATE_DIR, SOCKET, TUN, PORT, UAPI_DIR, WORKERS, LOG_LEVEL, LOGIN, AUTHKEY_FILE, HOSTNAME,
	       HTTP_LISTEN, ACCEPT_ROUTES, EXIT_NODE, RELAY_CA, CNI_CONF_DIR, POD_TOKEN_FILE };
	static const struct option longopts[] = {
		{ "state", required_argument, NULL, STATE },
		{ "state-dir", required_argument, NULL, STATE_DIR },
		{ "socket", required_argument, NULL, SOCKET },
		{ "tun", required_argument, NULL, TUN },
		{ "port", required_argument, NULL, PORT },
		{ "uapi-dir", required_argument, NULL, UAPI_DIR },
		{ "accept-routes", no_argument, NULL, ACCEPT_ROUTES },
		{ "exit-node", required_argument, NULL, EXIT_NODE },
		{ "workers", required_argument, NULL, WORKERS },
		{ "log-level", required_argument, NULL, LOG_LEVEL },
		{ "login-server", required_argument, NULL, LOGIN },
		{ "authkey-file", required_argument, NULL, AUTHKEY_FILE },
		{ "hostname", required_argument, NULL, HOSTNAME },
		{ "http-listen", required_argument, NULL, HTTP_LISTEN },
		{ "relay-ca", required_argument, NULL, RELAY_CA },
		{ "cni-conf-dir", required_argument, NULL, CNI_CONF_DIR },
		{ "pod-token-file", required_argument, NULL, POD_TOKEN_FILE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c;

	*o = (struct options){ .state_path = STATE_PATH_DEFAULT, .socket_path = LOCALAPI_SOCKET_DEFAULT, .tun = "knit0",
			       .port = 41641, .workers = -1, .log_level = getenv("KNIT_LOG_LEVEL") };
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case STATE: o->state_path = optarg; break;
		case STATE_DIR:
			if (snprintf(state_buf, state_len, "%s/knitd.state", optarg) >= (int)state_len)
				return 2;
			o->state_path = state_buf;
			break;
		case SOCKET: o->socket_path = optarg; break;
		case TUN:
			if (strlen(optarg) >= IFNAMSIZ) {
				fprintf(stderr, "knitd run: --tun: at most %d characters\n", IFNAMSIZ - 1);
				return 2;
			}
			o->tun = optarg;
			break;
		case PORT:
			o->port = (int)strtol(optarg, &end, 10);
			if (*end || o->port < 0 || o->port > 65535) {
				fprintf(stderr, "knitd run: --port must be 0..65535\n");
				return 2;
			}
			break;
		case UAPI_DIR: o->uapi_dir = optarg; break;
		case ACCEPT_ROUTES: o->routes.accept_routes = true; break;
		case EXIT_NODE: o->routes.exit_node = optarg; break;
		case WORKERS:
			o->workers = (int)strtol(optarg, &end, 10);
			if (*end || o->workers < 0 || o->workers > 64) {
				fprintf(stderr, "knitd run: --workers must be 0..64\n");
				return 2;
			}
			break;
		case LOG_LEVEL: o->log_level = optarg; break;
		case LOGIN:
			if (strncmp(optarg, "http://", 7) && strncmp(optarg, "https://", 8)) {
				fprintf(stderr, "knitd run: --login-server must be an http(s) URL\n");
				return 2;
			}
			o->login_server = optarg;
			break;
		case AUTHKEY_FILE: o->authkey_file = optarg; break;
		case HOSTNAME: o->hostname = optarg; break;
		case HTTP_LISTEN: o->http_listen = optarg; break;
		case RELAY_CA: o->relay_ca = optarg; break;
		case CNI_CONF_DIR: o->cni_conf_dir = optarg; break;
		case POD_TOKEN_FILE: o->pod_token_file = optarg; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "knitd run: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	return 0;
}

/* ---- lifecycle ---- */

static void on_signal(struct loop *loop, int signo, void *arg)
{
	struct mesh *m = arg;

	log_info("shutting down", "signal=%d", signo);
	m->exit_code = 0;
	loop_stop(loop);
}

static void on_tun_down(void *arg, struct identity *id)
{
	struct mesh *m = arg;

	log_error("the TUN device went away; exiting", "dev=%s", engine_ifname(identity_engine(id)));
	m->exit_code = 1;
	loop_stop(m->loop);
}

static bool is_identity_device(void *arg, const char *ifname)
{
	const struct mesh *m = arg;

	for (const struct member *mb = m->identities; mb; mb = mb->next)
		if (!strcmp(engine_ifname(identity_engine(mb->id)), ifname))
			return true;
	return pods_has_device(m->pods, ifname);
}

/* The node identity's state file (fresh keys on a new machine). */
static int load_state(struct mesh *m, struct state **st)
{
	char err[1024], note[1024];
	int r = state_load_recover(m->o.state_path, st, err, sizeof(err), note, sizeof(note));

	if (r == -ENOENT) {
		r = state_new(st);
		if (!r)
			log_info("new machine: made fresh keys", "state=%s", m->o.state_path);
	}
	if (!r && note[0])
		log_warn("state file unusable: came back on the previous one", "path=%s what=\"%s\"", m->o.state_path, note);
	if (r)
		log_error("cannot use the state file", "path=%s error=\"%s\"", m->o.state_path, r == -ENOMEM ? "out of memory" : err);
	return r;
}

/* Takes st, whatever happens. */
static int add_node_identity(struct mesh *m, struct state *st)
{
	struct identity_config ic = { .ifname = m->o.tun, .state_path = m->o.state_path, .uapi_dir = m->o.uapi_dir,
				      .on_down = on_tun_down, .is_identity_device = is_identity_device, .arg = m,
				      .host_routes = &m->o.routes, .datagrams = m->datagrams, .netstun = m->netstun,
				      .relay_ca = m->o.relay_ca, .pod_token_file = m->o.pod_token_file };
	struct member *mb = calloc(1, sizeof(*mb));
	int r;

	if (!mb) {
		state_free(st);
		return -ENOMEM;
	}
	if ((r = identity_new(&mb->id, m->loop, m->hub, st, &ic))) {
		free(mb);
		return r;
	}
	mb->next = m->identities;
	m->identities = mb;
	return 0;
}

static void free_identities(struct mesh *m, bool save)
{
	while (m->identities) {
		struct member *mb = m->identities;
		m->identities = mb->next;
		if (save)
			identity_save(mb->id);
		identity_free(mb->id);
		free(mb);
	}
}

int mesh_main(int argc, char **argv)
{
	struct mesh mesh = { 0 }, *m = &mesh;
	char state_buf[4096];
	struct hub_config hc = { 0 };
	struct localapi_opts lo = { 0 };
	struct localapi_ops ops;
	struct localapi_pod_ops pod_ops;
	struct pods_config pc = { 0 };
	char pods_dir[4096];
	enum log_level level = LOG_INFO;
	struct state *st = NULL;
	bool ran = false;
	int r;

	r = parse_args(argc, argv, &m->o, state_buf, sizeof(state_buf));
	if (r)
		return r == 1 ? 0 : r;
	if (m->o.log_level && !log_level_parse(m->o.log_level, &level)) {
		fprintf(stderr, "knitd run: unknown log level \"%s\"\n", m->o.log_level);
		return 2;
	}
	log_init("knitd", level);
	m->exit_code = 1;

	if ((r = load_state(m, &st)))
		return 1;
	if (aead_init_env())
		goto out;
	m->loop = loop_new();
	if (!m->loop)
		goto out;
	/* Before any thread starts, so they all inherit the blocked mask. */
	signal(SIGPIPE, SIG_IGN);
	loop_signal_add(m->loop, SIGTERM, on_signal, m);
	loop_signal_add(m->loop, SIGINT, on_signal, m);

	hc.workers = m->o.workers >= 0 ? (unsigned)m->o.workers : hub_default_workers();
	hc.readers_help = true;
	hc.port = (uint16_t)m->o.port;
	if ((r = datagrams_new(&m->datagrams, m->loop)))
		goto out;
	/* Disco and STUN share the WireGuard socket (DESIGN.md). */
	hc.other = datagrams_on_other;
	hc.other_arg = m->datagrams;
	if ((r = hub_new(&m->hub, m->loop, &hc))) {
		log_error("cannot open the WireGuard UDP port", "port=%d err=%d", m->o.port, r);
		goto out;
	}
	/* Our own WireGuard packets skip knit's routing table (routes.h), so a
	 * route through the tunnel never carries the tunnel itself. */
	if ((r = hub_set_fwmark(m->hub, ROUTEPLAN_FWMARK)))
		log_warn("cannot mark the WireGuard socket: a peer route covering a peer's endpoint could loop",
			 "err=%d", r);
	if ((r = netstun_new(&m->netstun, m->loop, m->hub)))
		goto out;
	datagrams_set_stun(m->datagrams, netstun_on_datagram, m->netstun);
	r = add_node_identity(m, st);
	st = NULL;
	if (r)
		goto out;
	if (m->o.http_listen && (r = serve_http(m))) {
		log_error("cannot serve health and metrics", "listen=%s err=%d", m->o.http_listen, r);
		goto out;
	}
	/* Pod identities keep their files in pods/ beside the node's state. */
	{
		const char *slash = strrchr(m->o.state_path, '/');
		int dlen = slash ? (int)(slash - m->o.state_path) : 1;
		if (snprintf(pods_dir, sizeof(pods_dir), "%.*s/pods", dlen, slash ? m->o.state_path : ".") >=
		    (int)sizeof(pods_dir))
			goto out;
	}
	pc.loop = m->loop;
	pc.hub = m->hub;
	pc.node = node_identity(m);
	pc.dir = pods_dir;
	pc.is_identity_device = is_identity_device;
	pc.arg = m;
	pc.datagrams = m->datagrams;
	pc.netstun = m->netstun;
	pc.relay_ca = m->o.relay_ca;
	if ((r = pods_new(&m->pods, &pc)))
		goto out;
	pod_ops = pods_ops(m->pods);
	lo.pods = &pod_ops;
	ops = api_ops(node_identity(m));
	lo.socket_path = m->o.socket_path;
	lo.version = KNIT_VERSION;
	lo.ops = &ops;
	if ((r = localapi_new(m->loop, &lo, &m->api))) {
		log_error("cannot serve the local API", "socket=%s err=%d%s", m->o.socket_path, r,
			  r == -EADDRINUSE ? " (another knitd is running)" :
			  r == -EEXIST	   ? " (not a socket: refusing to replace it)" : "");
		goto out;
	}
	identity_start(node_identity(m));
	if (m->o.cni_conf_dir && (r = gateway_new(&m->gateway, m->loop, node_identity(m), m->o.cni_conf_dir)))
		goto out;
	if (pods_restore(m->pods))
		log_info("pod identities back from the state directory", "dir=%s", pods_dir);
	if (!identity_logged_in(node_identity(m)) && m->o.login_server) {
		struct join_config jc = { .login_server = m->o.login_server, .authkey_file = m->o.authkey_file,
					  .hostname = m->o.hostname };
		if (join_start(&m->join, m->loop, node_identity(m), &jc))
			goto out;
	}
	log_info("ready", "dev=%s port=%u socket=%s state=%s", engine_ifname(identity_engine(node_identity(m))),
		 hub_port(m->hub), m->o.socket_path, identity_backend_state(node_identity(m)));
	r = loop_run(m->loop);
	if (r < 0)
		m->exit_code = 1;
	else if (m->exit_code != 1)
		m->exit_code = 0;
	ran = true;
out:
	state_free(st); /* not handed to an identity */
	join_free(m->join);
	pathstats_free(m->pathstats);
	gateway_free(m->gateway);
	health_free(m->http);
	localapi_free(m->api);
	pods_free(m->pods); /* before the node identity, which vouches for them */
	free_identities(m, ran);
	hub_free(m->hub); /* its receive thread hands datagrams on until it stops */
	netstun_free(m->netstun);
	datagrams_free(m->datagrams);
	loop_free(m->loop);
	aead_thread_cleanup();
	return m->exit_code;
}
