/* knit-operator: the tailnet's source of truth. Watches the knit.dev CRDs,
 * mints auth keys, allocates addresses, and (when leading) runs one
 * reconciler per kind. Several replicas may run; a Lease picks the leader. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bootstrap.h"
#include "buf.h"
#include "controller.h"
#include "coord.h"
#include "httpd.h"
#include "instance.h"
#include "json.h"
#include "kube/config.h"
#include "kube/event.h"
#include "kube/informer.h"
#include "kube/lease.h"
#include "kube/meta.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "operator.h"
#include "policy.h"
#include "probe.h"
#include "relay/frame.h"
#include "rollout.h"
#include "serving.h"
#include "webhook.h"
#include "wg/aead.h"

#define WEBHOOK_NAMES_MAX 8

struct options {
	const char *kubeconfig;
	const char *namespace;
	const char *lease_name;
	const char *identity;
	const char *listen_health;
	const char *listen_coord;
	const char *listen_webhook;
	unsigned coord_per_ip;
	bool new_control_key;
	uint32_t rotate_grace_ms;
	const char *knitd_sa;
	const char *webhook_service;
	const char *webhook_config;
	const char *pod_ip;
	const char *coordination_service;
	const char *webhook_names[WEBHOOK_NAMES_MAX];
	size_t nwebhook_names;
	const char *log_level;
	int workers;
	uint32_t map_record_bytes;
	bool leader_election;
	bool default_tailnet;
	uint32_t lease_ms, renew_ms, retry_ms;
	struct bootstrap_opts boot;
	struct relay_instance_opts relay; /* embedded when relay.listen is set */
};

static struct operator op;
static struct lease *lease;
static struct httpd *health;
static struct webhook *webhook;
static struct serving *serving; /* NULL without --pod-ip */
static struct probe *coord_probe;
static struct relay_instance *relay;
/* The coordination listener must answer its own probe this often. */
#define COORD_PROBE_EVERY_MS 5000
#define COORD_NOT_READY_MS 20000 /* out of the Service */
#define COORD_UNHEALTHY_MS 60000 /* restarted */
static int exit_code;
static bool shutting_down;
static int synced_informers;
static struct bootstrap_opts boot_opts;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: knit-operator [OPTIONS]\n"
		"\n"
		"Runs knit's Kubernetes operator: reconciles Tailnet, AuthKey and Device objects\n"
		"(knit.dev/v1alpha1), mints auth keys into Secrets and allocates tailnet addresses.\n"
		"Run several replicas for availability: a Lease elects the one that acts.\n"
		"\n"
		"  --kubeconfig PATH         kubeconfig to use (default: $KUBECONFIG, in-cluster\n"
		"                            service account, then ~/.kube/config)\n"
		"  --namespace NS            namespace for the leader Lease (default: the\n"
		"                            kubeconfig context's or the pod's namespace)\n"
		"  --leader-election-id NAME Lease name (default knit-operator)\n"
		"  --identity ID             this replica's identity (default hostname_pid)\n"
		"  --no-leader-election      act at once, without a Lease (one replica only!)\n"
		"  --lease-duration D        Go duration (default 15s)\n"
		"  --renew-deadline D        step down if renewal fails this long (default 10s)\n"
		"  --retry-period D          leader-election retry period (default 2s)\n"
		"  --http-listen ADDR        serve /healthz, /readyz and /metrics (Prometheus)\n"
		"                            on ADDR (default 0.0.0.0:8081; \"\" disables)\n"
		"  --coord-listen ADDR       serve the coordination API (knitd connects here) on\n"
		"                            ADDR (default 0.0.0.0:9443; \"\" disables)\n"
		"  --new-control-key         when the control key Secret is missing, mint a new\n"
		"                            key even though Tailnets publish one that agents\n"
		"                            pin (without it the operator waits for the Secret\n"
		"                            to be restored; while running it restores a\n"
		"                            deleted Secret with the key in use)\n"
		"  --control-key-grace D     control key rotation (annotate the knit-control-key\n"
		"                            Secret knit.dev/rotate=true): how long the next key\n"
		"                            is announced before it becomes current, and how\n"
		"                            long the old key is still accepted after (Go\n"
		"                            duration, default 24h)\n"
		"  --knitd-service-account SA\n"
		"                            the ServiceAccount (in --namespace) of the knitd\n"
		"                            DaemonSet: a node Device is bound to a Node only by\n"
		"                            a projected token of its pods (default knitd;\n"
		"                            docs/cni.md)\n"
		"  --coord-per-ip-limit N    open coordination connections per client address\n"
		"                            (default 1024; 0: unlimited)\n"
		"  --workers N               reconcile workers per kind (default 4)\n"
		"  --map-record-bytes N      peer bytes per map-stream record: a large netmap\n"
		"                            goes out in pieces of about this size (default 16384)\n"
		"  --no-default-tailnet      do not create the Tailnet \"default\" when no Tailnet\n"
		"                            exists (it is created once, as leader, never updated)\n"
		"  --default-tailnet-ipv4-pool CIDR, --default-tailnet-ipv6-pool CIDR,\n"
		"  --default-tailnet-dns-suffix NAME\n"
		"                            that Tailnet's spec (default: the CRD's defaults,\n"
		"                            100.64.0.0/10, fd7a:115c:a1e0::/48, tailnet.knit)\n"
		"  --default-tailnet-relay URL  a relay of that Tailnet's relay map (repeatable, up\n"
		"                            to 16; region 1 \"default\", nodes 1a, 1b, ...):\n"
		"                            https://HOST[:PORT] (TLS, port 443), http://HOST[:PORT]\n"
		"                            (plain TCP, port 80) or HOST[:PORT] (as https), with\n"
		"                            #relaykey:HEX to pin the relay's key (knit-relay\n"
		"                            --print-public-key); the embedded relay's own\n"
		"                            --relay-listen HOST:PORT gets its key pinned when\n"
		"                            --relay-key-file keeps that key\n"
		"  --default-tailnet-relay-stun-port PORT  their STUN port (default 3478; 0: none)\n"
		"  --bootstrap-relay-mesh-secret NAME  create the Secret NAME in --namespace when\n"
		"                            absent, with 32 random bytes under \"mesh-key\": the\n"
		"                            relays' shared mesh key (knit-relay --mesh-key-file)\n"
		"  --bootstrap-authkey NAME  create the AuthKey NAME in --namespace when absent\n"
		"                            (reusable, preauthorized; the node agents' key):\n"
		"                            its key appears in the Secret NAME-authkey\n"
		"  --bootstrap-authkey-tags TAGS  its tags, comma-separated (tag:a,tag:b)\n"
		"  --bootstrap-authkey-expiry D   its lifetime (default 0s: it never expires, so\n"
		"                            the DaemonSet's key is no dated outage)\n"
		"  --webhook-listen ADDR     serve the admission webhooks over HTTPS on ADDR\n"
		"                            (e.g. 0.0.0.0:9444; default \"\": off), with a CA and\n"
		"                            certificate of its own kept in the Secret\n"
		"                            knit-webhook-tls and written into the caBundle of\n"
		"                            the webhook configurations\n"
		"  --webhook-service NAME    the Service in front of the webhooks: the certificate\n"
		"                            names NAME.NAMESPACE.svc (default knit-webhook)\n"
		"  --webhook-config NAME     the Mutating- and ValidatingWebhookConfiguration whose\n"
		"                            caBundle to keep (default knit)\n"
		"  --webhook-dns-name NAME   one more name for the certificate (repeatable, up to 8)\n"
		"  --relay-listen ADDR:PORT  also run a relay (knit-relay, docs/relay-protocol.md)\n"
		"                            on ADDR:PORT, on every replica (default: none)\n"
		"  --relay-stun-port PORT    its STUN server's UDP port (default 3478; 0: none)\n"
		"  --relay-stun-addr ADDR    STUN bind address (default [::], dual-stack)\n"
		"  --relay-tls-cert PATH, --relay-tls-key PATH\n"
		"                            serve the relay over TLS (PEM; both or neither)\n"
		"  --relay-key-file PATH     the relay's private key, made when missing (default:\n"
		"                            a fresh key each start; agents do not pin it)\n"
		"  --relay-mesh-with URL,... --relay-mesh-key-file PATH  --relay-mesh-ca PATH\n"
		"                            mesh with the region's other relays, as knit-relay's\n"
		"                            --mesh-with, --mesh-key-file and --mesh-ca\n"
		"  --pod-ip IP               this replica's address: as leader (caches synced) it\n"
		"                            points an EndpointSlice of the coordination Service and,\n"
		"                            with --webhook-listen, of the webhook Service at IP,\n"
		"                            and takes them back when it stops leading; those\n"
		"                            Services have no selector (default: off)\n"
		"  --coordination-service NAME  that Service (default knit-coordination; port\n"
		"                            named coord; the webhook Service's is named https)\n"
		"  --log-level LEVEL         debug, info, warn, error (default info)\n"
		"  -h, --help                show this help\n"
		"\n"
		"Environment: KUBECONFIG, KNIT_LOG_LEVEL. SIGTERM/SIGINT stop it cleanly: the\n"
		"devices connected to it are written offline, and the Lease is released so\n"
		"another replica takes over at once.\n");
}

static bool parse_ms(const char *flag, const char *v, uint32_t *out)
{
	uint64_t ms;

	if (!kube_duration_parse(v, &ms) || ms == 0 || ms > UINT32_MAX) {
		fprintf(stderr, "knit-operator: %s: \"%s\" is not a positive duration (e.g. 15s)\n", flag, v);
		return false;
	}
	*out = (uint32_t)ms;
	return true;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { KUBECONFIG = 256, NAMESPACE, LEASE_NAME, IDENTITY, NO_LE, LEASE_D, RENEW_D, RETRY_D, HEALTH, WORKERS,
	       NO_DEFAULT, LOG_LEVEL, COORD, RECORD_BYTES, WH_LISTEN, WH_SERVICE, WH_CONFIG, WH_NAME, COORD_PER_IP,
	       POD_IP, COORD_SVC, NEW_CTRL_KEY, CTRL_GRACE, TN_V4, TN_V6, TN_DNS, BOOT_AK, BOOT_TAGS, BOOT_EXPIRY, RELAY_LISTEN,
	       RELAY_STUN_PORT, RELAY_STUN_ADDR, RELAY_CERT, RELAY_KEY, RELAY_KEY_FILE, RELAY_MESH, RELAY_MESH_KEY,
	       RELAY_MESH_CA, TN_RELAY, TN_RELAY_STUN, BOOT_MESH, KNITD_SA };
	static const struct option longopts[] = {
		{ "kubeconfig", required_argument, NULL, KUBECONFIG },
		{ "namespace", required_argument, NULL, NAMESPACE },
		{ "leader-election-id", required_argument, NULL, LEASE_NAME },
		{ "identity", required_argument, NULL, IDENTITY },
		{ "no-leader-election", no_argument, NULL, NO_LE },
		{ "lease-duration", required_argument, NULL, LEASE_D },
		{ "renew-deadline", required_argument, NULL, RENEW_D },
		{ "retry-period", required_argument, NULL, RETRY_D },
		{ "http-listen", required_argument, NULL, HEALTH },
		{ "workers", required_argument, NULL, WORKERS },
		{ "coord-listen", required_argument, NULL, COORD },
		{ "map-record-bytes", required_argument, NULL, RECORD_BYTES },
		{ "no-default-tailnet", no_argument, NULL, NO_DEFAULT },
		{ "default-tailnet-ipv4-pool", required_argument, NULL, TN_V4 },
		{ "default-tailnet-ipv6-pool", required_argument, NULL, TN_V6 },
		{ "default-tailnet-dns-suffix", required_argument, NULL, TN_DNS },
		{ "default-tailnet-relay", required_argument, NULL, TN_RELAY },
		{ "default-tailnet-relay-stun-port", required_argument, NULL, TN_RELAY_STUN },
		{ "bootstrap-relay-mesh-secret", required_argument, NULL, BOOT_MESH },
		{ "bootstrap-authkey", required_argument, NULL, BOOT_AK },
		{ "bootstrap-authkey-tags", required_argument, NULL, BOOT_TAGS },
		{ "bootstrap-authkey-expiry", required_argument, NULL, BOOT_EXPIRY },
		{ "log-level", required_argument, NULL, LOG_LEVEL },
		{ "coord-per-ip-limit", required_argument, NULL, COORD_PER_IP },
		{ "new-control-key", no_argument, NULL, NEW_CTRL_KEY },
		{ "control-key-grace", required_argument, NULL, CTRL_GRACE },
		{ "knitd-service-account", required_argument, NULL, KNITD_SA },
		{ "webhook-listen", required_argument, NULL, WH_LISTEN },
		{ "webhook-service", required_argument, NULL, WH_SERVICE },
		{ "webhook-config", required_argument, NULL, WH_CONFIG },
		{ "webhook-dns-name", required_argument, NULL, WH_NAME },
		{ "relay-listen", required_argument, NULL, RELAY_LISTEN },
		{ "relay-stun-port", required_argument, NULL, RELAY_STUN_PORT },
		{ "relay-stun-addr", required_argument, NULL, RELAY_STUN_ADDR },
		{ "relay-tls-cert", required_argument, NULL, RELAY_CERT },
		{ "relay-tls-key", required_argument, NULL, RELAY_KEY },
		{ "relay-key-file", required_argument, NULL, RELAY_KEY_FILE },
		{ "relay-mesh-with", required_argument, NULL, RELAY_MESH },
		{ "relay-mesh-key-file", required_argument, NULL, RELAY_MESH_KEY },
		{ "relay-mesh-ca", required_argument, NULL, RELAY_MESH_CA },
		{ "pod-ip", required_argument, NULL, POD_IP },
		{ "coordination-service", required_argument, NULL, COORD_SVC },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char err[320];
	int c;

	*o = (struct options){ .lease_name = "knit-operator", .listen_health = "0.0.0.0:8081", .listen_coord = "0.0.0.0:9443", .workers = 4,
			       .leader_election = true, .default_tailnet = true, .log_level = getenv("KNIT_LOG_LEVEL"),
			       .coord_per_ip = 1024, .listen_webhook = "", .webhook_service = "knit-webhook", .webhook_config = "knit",
			       .relay = { .stun_port = 3478 }, .coordination_service = "knit-coordination" };
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case KUBECONFIG: o->kubeconfig = optarg; break;
		case NAMESPACE: o->namespace = optarg; break;
		case LEASE_NAME: o->lease_name = optarg; break;
		case IDENTITY: o->identity = optarg; break;
		case NO_LE: o->leader_election = false; break;
		case LEASE_D: if (!parse_ms("--lease-duration", optarg, &o->lease_ms)) return 2; break;
		case RENEW_D: if (!parse_ms("--renew-deadline", optarg, &o->renew_ms)) return 2; break;
		case RETRY_D: if (!parse_ms("--retry-period", optarg, &o->retry_ms)) return 2; break;
		case HEALTH: o->listen_health = optarg; break;
		case COORD: o->listen_coord = optarg; break;
		case WORKERS:
			o->workers = atoi(optarg);
			if (o->workers < 1 || o->workers > 64) {
				fprintf(stderr, "knit-operator: --workers must be 1..64\n");
				return 2;
			}
			break;
		case RECORD_BYTES: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end || v < 1 || v > (8ul << 20)) {
				fprintf(stderr, "knit-operator: --map-record-bytes must be 1..8388608\n");
				return 2;
			}
			o->map_record_bytes = (uint32_t)v;
			break;
		}
		case NO_DEFAULT: o->default_tailnet = false; break;
		case TN_V4: o->boot.ipv4_pool = optarg; break;
		case TN_V6: o->boot.ipv6_pool = optarg; break;
		case TN_DNS: o->boot.dns_suffix = optarg; break;
		case BOOT_AK: o->boot.authkey = optarg; break;
		case BOOT_TAGS: o->boot.authkey_tags = optarg; break;
		case BOOT_EXPIRY: o->boot.authkey_expiry = optarg; break;
		case TN_RELAY:
			if (o->boot.nrelays == RELAYMAP_MAX_NODES) {
				fprintf(stderr, "knit-operator: at most %d --default-tailnet-relay\n", RELAYMAP_MAX_NODES);
				return 2;
			}
			o->boot.relays[o->boot.nrelays++] = optarg;
			break;
		case TN_RELAY_STUN: o->boot.relay_stun_port = optarg; break;
		case BOOT_MESH: o->boot.relay_mesh_secret = optarg; break;
		case LOG_LEVEL: o->log_level = optarg; break;
		case NEW_CTRL_KEY: o->new_control_key = true; break;
		case CTRL_GRACE: if (!parse_ms("--control-key-grace", optarg, &o->rotate_grace_ms)) return 2; break;
		case KNITD_SA: o->knitd_sa = optarg; break;
		case COORD_PER_IP: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end || v > 1000000) {
				fprintf(stderr, "knit-operator: --coord-per-ip-limit must be 0..1000000\n");
				return 2;
			}
			o->coord_per_ip = (unsigned)v;
			break;
		}
		case WH_LISTEN: o->listen_webhook = optarg; break;
		case WH_SERVICE: o->webhook_service = optarg; break;
		case WH_CONFIG: o->webhook_config = optarg; break;
		case POD_IP: o->pod_ip = *optarg ? optarg : NULL; break;
		case COORD_SVC: o->coordination_service = optarg; break;
		case WH_NAME:
			if (o->nwebhook_names == WEBHOOK_NAMES_MAX) {
				fprintf(stderr, "knit-operator: at most %d --webhook-dns-name\n", WEBHOOK_NAMES_MAX);
				return 2;
			}
			o->webhook_names[o->nwebhook_names++] = optarg;
			break;
		case RELAY_LISTEN: o->relay.listen = optarg; break;
		case RELAY_STUN_PORT: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end || v > 65535) {
				fprintf(stderr, "knit-operator: --relay-stun-port must be 0..65535\n");
				return 2;
			}
			o->relay.stun_port = (uint16_t)v;
			break;
		}
		case RELAY_STUN_ADDR: o->relay.stun_addr = optarg; break;
		case RELAY_CERT: o->relay.tls_cert = optarg; break;
		case RELAY_KEY: o->relay.tls_key = optarg; break;
		case RELAY_KEY_FILE: o->relay.key_file = optarg; break;
		case RELAY_MESH: o->relay.mesh_with = optarg; break;
		case RELAY_MESH_KEY: o->relay.mesh_key_file = optarg; break;
		case RELAY_MESH_CA: o->relay.mesh_ca = optarg; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "knit-operator: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	if (!bootstrap_opts_check(&o->boot, err, sizeof(err))) {
		fprintf(stderr, "knit-operator: %s\n", err);
		return 2;
	}
	if (!o->relay.listen && (o->relay.tls_cert || o->relay.tls_key || o->relay.key_file || o->relay.mesh_with ||
				 o->relay.mesh_key_file || o->relay.mesh_ca || o->relay.stun_addr)) {
		fprintf(stderr, "knit-operator: the --relay-* flags need --relay-listen\n");
		return 2;
	}
	if (o->relay.listen && !relay_instance_opts_check(&o->relay, err, sizeof(err))) {
		fprintf(stderr, "knit-operator: --relay-*: %s\n", err);
		return 2;
	}
	return 0;
}

/* ---- informer wiring ---- */

/* A Device or claim changed: its Tailnet's status counts them (by index).
 * Events are gathered for up to a second: 10,000 devices coming online
 * must not mean 10,000 status writes. */
#define TAILNET_RECOUNT_MS 1000

static void enqueue_tailnet_of(const struct json *obj)
{
	controller_enqueue_key_after(op.tailnet_ctl, operator_tailnet_of(obj), TAILNET_RECOUNT_MS);
}

static void device_changed(const struct json *dev)
{
	controller_enqueue(op.device_ctl, dev);
	enqueue_tailnet_of(dev);
}

static void dev_add(struct informer *i, const struct json *o, void *a)
{
	device_changed(o);
	coord_device_changed(op.coord, NULL, o);
}
static void dev_upd(struct informer *i, const struct json *old, const struct json *o, void *a)
{
	device_changed(o);
	coord_device_changed(op.coord, old, o);
}
static void dev_del(struct informer *i, const struct json *o, void *a)
{
	device_changed(o);
	coord_device_deleted(op.coord, o);
}

static void enqueue_device_of_claim(const struct json *claim)
{
	const char *dev = json_str(json_path(claim, "spec", "device", NULL));

	if (dev)
		controller_enqueue_key(op.device_ctl, dev);
	enqueue_tailnet_of(claim);
}

static void claim_add(struct informer *i, const struct json *o, void *a) { enqueue_tailnet_of(o); }
static void claim_upd(struct informer *i, const struct json *old, const struct json *o, void *a) { enqueue_device_of_claim(o); }
/* Someone deleted a claim: its device must claim an address again. */
static void claim_del(struct informer *i, const struct json *o, void *a) { enqueue_device_of_claim(o); }

static void enqueue_devices_of_tailnet(const struct json *dev, void *arg)
{
	if (strcmp(operator_tailnet_of(dev), arg) == 0)
		controller_enqueue(op.device_ctl, dev);
}

/* A Tailnet's authKeyNamespaces may have changed: its AuthKeys say again
 * whether they may register devices. */
static void enqueue_authkey_of_tailnet(const struct json *ak, void *arg)
{
	if (strcmp(operator_tailnet_of(ak), arg) == 0)
		controller_enqueue(op.authkey_ctl, ak);
}

static void tn_add(struct informer *i, const struct json *o, void *a)
{
	controller_enqueue(op.tailnet_ctl, o);
	if (op.authkeys)
		informer_foreach(op.authkeys, enqueue_authkey_of_tailnet, (void *)kube_name(o));
}
static void tn_upd(struct informer *i, const struct json *old, const struct json *o, void *a)
{
	controller_enqueue(op.tailnet_ctl, o);
	if (!json_equal(json_path(old, "spec", "authKeyNamespaces", NULL), json_path(o, "spec", "authKeyNamespaces", NULL)))
		informer_foreach(op.authkeys, enqueue_authkey_of_tailnet, (void *)kube_name(o));
	/* Pools or timeouts may have changed: every device of it takes another look. */
	if (!json_equal(json_get(old, "spec"), json_get(o, "spec"))) {
		informer_foreach(op.devices, enqueue_devices_of_tailnet, (void *)kube_name(o));
		coord_tailnet_changed(op.coord, old, o);
	}
}
static void tn_del(struct informer *i, const struct json *o, void *a) { controller_enqueue(op.tailnet_ctl, o); }

/* Secret changed or deleted: its AuthKey reconciles (re-mints if gone). */
static void secret_changed(const struct json *s)
{
	const char *ak = json_str(json_path(s, "metadata", "labels", "knit.dev/authkey", NULL));
	const char *ns = kube_namespace(s);
	char key[600];

	if (ak && ns && snprintf(key, sizeof(key), "%s/%s", ns, ak) < (int)sizeof(key))
		controller_enqueue_key(op.authkey_ctl, key);
}

static void sec_upd(struct informer *i, const struct json *old, const struct json *o, void *a) { secret_changed(o); }
static void sec_del(struct informer *i, const struct json *o, void *a) { secret_changed(o); }

static int index_one(const char *v, const char **values, int max)
{
	if (!v || max < 1)
		return 0;
	values[0] = v;
	return 1;
}

static int claim_device_index(const struct json *obj, const char **values, int max)
{
	return index_one(json_str(json_path(obj, "spec", "device", NULL)), values, max);
}

/* Tailnet status counts by these (informer_index_count), not by walking. */
static int device_tailnet_index(const struct json *obj, const char **values, int max)
{
	return index_one(operator_tailnet_of(obj), values, max);
}

static int claim_tailnet_family_index(const struct json *obj, const char **values, int max, bool v6)
{
	const char *addr = json_str(json_path(obj, "spec", "address", NULL));

	return addr && (strchr(addr, ':') != NULL) == v6 ? index_one(operator_tailnet_of(obj), values, max) : 0;
}
static int claim_tailnet4_index(const struct json *obj, const char **values, int max)
{
	return claim_tailnet_family_index(obj, values, max, false);
}
static int claim_tailnet6_index(const struct json *obj, const char **values, int max)
{
	return claim_tailnet_family_index(obj, values, max, true);
}

static int device_machine_index(const struct json *obj, const char **values, int max)
{
	return index_one(json_str(json_path(obj, "spec", "machineKey", NULL)), values, max);
}

static int device_node_key_index(const struct json *obj, const char **values, int max)
{
	return index_one(json_str(json_path(obj, "spec", "nodeKey", NULL)), values, max);
}

static int authkey_prefix_index(const struct json *obj, const char **values, int max)
{
	return index_one(json_str(json_path(obj, "status", "keyPrefix", NULL)), values, max);
}

static void informer_synced_cb(struct informer *inf, void *arg)
{
	/* Controllers start once every cache is complete, so no reconcile acts
	 * on a partial picture. Later relists need no action. */
	if (++synced_informers != 6)
		return;
	log_info("caches synced, starting reconcilers", "workers=%d", op.workers);
	bootstrap_start(&op, &boot_opts);
	controller_start(op.tailnet_ctl);
	controller_start(op.authkey_ctl);
	controller_start(op.device_ctl);
	controller_start(op.policy_ctl);
	op.running = true;
	/* Only now: a Service that sent agents here earlier would meet a
	 * coordination server without its Devices. */
	serving_set(serving, true);
}

static struct metrics_family *m_restarts, *m_relists, *m_events;

static struct informer *start_informer(const struct kube_resource *res, const char *selector,
				       const struct informer_handlers *h, void *arg)
{
	struct informer_handlers with_sync = *h;
	struct informer *inf;

	with_sync.on_synced = informer_synced_cb;
	/* Secrets only in our own namespace (the RBAC grants no more: see
	 * manifests/10-operator.yaml); AuthKeys' Secrets elsewhere are read
	 * directly. */
	inf = informer_new(op.kube, res, res == &kube_res_secrets ? op.namespace : NULL, selector, &with_sync, arg);
	if (!inf)
		return NULL;
	informer_set_metrics(inf, METRICS_WITH(m_restarts, res->plural), METRICS_WITH(m_relists, res->plural),
			     METRICS_WITH(m_events, res->plural));
	if ((res == &res_addressclaims && (informer_add_index(inf, "device", claim_device_index) ||
					    informer_add_index(inf, OPERATOR_INDEX_TAILNET4, claim_tailnet4_index) ||
					    informer_add_index(inf, OPERATOR_INDEX_TAILNET6, claim_tailnet6_index))) ||
	    (res == &res_devices && (informer_add_index(inf, "machineKey", device_machine_index) ||
				     informer_add_index(inf, "nodeKey", device_node_key_index) ||
				     informer_add_index(inf, OPERATOR_INDEX_TAILNET, device_tailnet_index))) ||
	    (res == &res_authkeys && informer_add_index(inf, "keyPrefix", authkey_prefix_index))) {
		informer_free(inf);
		return NULL;
	}
	if (informer_start(inf)) {
		informer_free(inf);
		return NULL;
	}
	return inf;
}

static void start_controllers(void)
{
	static const struct informer_handlers tn_h = { .on_add = tn_add, .on_update = tn_upd, .on_delete = tn_del };
	static const struct informer_handlers dev_h = { .on_add = dev_add, .on_update = dev_upd, .on_delete = dev_del };
	static const struct informer_handlers claim_h = { .on_add = claim_add, .on_update = claim_upd, .on_delete = claim_del };
	static const struct informer_handlers sec_h = { .on_update = sec_upd, .on_delete = sec_del };

	op.tailnet_ctl = controller_new(&op, "Tailnet", tailnet_reconcile, 1);
	op.authkey_ctl = controller_new(&op, "AuthKey", authkey_reconcile, op.workers);
	op.device_ctl = controller_new(&op, "Device", device_reconcile, op.workers);
	op.policy_ctl = controller_new(&op, "Policy", policy_reconcile, 1);
	if (!op.tailnet_ctl || !op.authkey_ctl || !op.device_ctl || !op.policy_ctl)
		goto fail;
	synced_informers = 0;
	op.tailnets = start_informer(&res_tailnets, NULL, &tn_h, NULL);
	op.authkeys = start_informer(&res_authkeys, NULL, &controller_handlers, op.authkey_ctl);
	op.devices = start_informer(&res_devices, NULL, &dev_h, NULL);
	op.claims = start_informer(&res_addressclaims, NULL, &claim_h, NULL);
	op.secrets = start_informer(&kube_res_secrets, "app.kubernetes.io/managed-by=" OPERATOR_MANAGER, &sec_h, NULL);
	op.policies_inf = start_informer(&res_policies, NULL, &controller_handlers, op.policy_ctl);
	if (op.tailnets && op.authkeys && op.devices && op.claims && op.secrets && op.policies_inf)
		return;
fail:
	log_error("cannot start controllers (out of memory)");
	exit_code = 1;
	loop_stop(op.loop);
}

/* ---- shutdown: workers may wait on the loop, so they are joined off it ---- */

static void released(struct lease *l, void *arg)
{
	loop_stop(op.loop);
}

static pthread_t joiner;
static struct rollout *rollout; /* while we lead */

static void withdrawn(void *arg)
{
	if (lease)
		lease_release(lease, released, NULL);
	else
		loop_stop(op.loop);
}

static void workers_joined(struct loop *loop, void *arg)
{
	pthread_join(joiner, NULL);
	rollout_free(rollout);
	rollout = NULL;
	/* The informers stay until the loop has stopped (freed in main):
	 * handlers of theirs may still be queued on the loop. A list page in
	 * flight is no longer a hazard (informer_free() cancels it), but was
	 * the heap-use-after-free in on_list_page after "lost leadership". */
	/* The Services' Endpoints first (begun in shutdown_all), then the
	 * Lease: the next leader may then point them at itself at once. */
	if (serving)
		serving_withdraw(serving, 2000, withdrawn, NULL);
	else
		withdrawn(NULL);
}

static void *join_workers(void *arg)
{
	coord_join(op.coord);
	bootstrap_join();
	if (!op.tailnet_ctl)
		goto out;
	controller_join(op.tailnet_ctl);
	controller_join(op.authkey_ctl);
	controller_join(op.device_ctl);
	controller_join(op.policy_ctl);
out:
	loop_post(op.loop, workers_joined, NULL);
	return NULL;
}

static void shutdown_all(int code)
{
	if (shutting_down)
		return;
	shutting_down = true;
	exit_code = code;
	op.running = false;
	serving_set(serving, false);
	relay_instance_shutdown(relay);
	if (code == 0)
		coord_stop_gracefully(op.coord);
	coord_drop_all(op.coord);
	coord_shutdown(op.coord);
	if (op.tailnet_ctl) {
		controller_shutdown(op.tailnet_ctl);
		controller_shutdown(op.authkey_ctl);
		controller_shutdown(op.device_ctl);
		controller_shutdown(op.policy_ctl);
	}
	if (pthread_create(&joiner, NULL, join_workers, NULL)) {
		/* Cannot join politely: exit without releasing; the Lease expires. */
		log_error("cannot start shutdown thread; exiting");
		_exit(code ? code : 1);
	}
}

static void on_signal(struct loop *loop, int signo, void *arg)
{
	log_info("shutting down", "signal=%d", signo);
	shutdown_all(0);
}

static void started_leading(struct lease *l, void *arg)
{
	/* A lease write that was in flight when we began shutting down (after
	 * a lost lease, say) can still win: leading now would start controllers
	 * beside the ones being joined. The release at the end hands it on. */
	if (shutting_down) {
		log_info("won the lease while shutting down; not leading", "identity=%s", lease_identity(l));
		return;
	}
	log_info("became leader", "identity=%s", lease_identity(l));
	start_controllers();
	/* knitd's rolling updates (rollout.h): best effort, the kubelet
	 * deletes a replaced pod too, only later. */
	if (!(rollout = rollout_start(op.kube, op.namespace, ROLLOUT_KNITD_SELECTOR)))
		log_warn("cannot watch knitd's pods: a rolling update waits for each kubelet");
}

static void stopped_leading(struct lease *l, void *arg)
{
	if (shutting_down)
		return;
	/* Another replica may already act: stop at once and let the
	 * Deployment restart us as a fresh candidate. */
	log_error("lost leadership, exiting", "identity=%s", lease_identity(l));
	shutdown_all(1);
}

static void new_leader(struct lease *l, const char *identity, void *arg)
{
	if (strcmp(identity, lease_identity(l)) != 0)
		log_info("leader is another replica", "leader=%s", identity);
}

/* ---- health and metrics ---- */

static double leader_value(void *arg)
{
	return !lease || lease_is_leader(lease) ? 1 : 0;
}

static double transitions_value(void *arg)
{
	struct lease_stats st = { 0 };

	if (lease)
		lease_stats(lease, &st);
	return (double)st.transitions;
}

/* Coordination statistics and the listener's refusals, read at scrape
 * time (loop thread). */
enum coord_metric { CM_SESSIONS, CM_STREAMS, CM_HANDSHAKES, CM_HANDSHAKE_FAILURES, CM_REGISTRATIONS,
		    CM_FRAMES_REJECTED, CM_CONNS, CM_REFUSED_PER_IP, CM_REQUEST_TIMEOUTS, CM_BODY_REFUSED,
		    CM_BODY_BYTES, CM_PROBE_FAILURES, CM_UNKNOWN, CM_REFUSED_FULL, CM_REFUSED_IP, CM_REFUSED_FUTURE };

static double coord_value(void *arg)
{
	struct coord_stats cs = { 0 };
	struct httpd_stats hs = { 0 };

	if (!op.coord)
		return 0;
	coord_stats(op.coord, &cs);
	coord_http_stats(op.coord, &hs);
	switch ((enum coord_metric)(uintptr_t)arg) {
	case CM_SESSIONS: return (double)cs.sessions;
	case CM_STREAMS: return (double)cs.streams;
	case CM_HANDSHAKES: return (double)cs.handshakes;
	case CM_HANDSHAKE_FAILURES: return (double)cs.handshake_failures;
	case CM_REGISTRATIONS: return (double)cs.registrations;
	case CM_FRAMES_REJECTED: return (double)cs.frames_rejected;
	case CM_CONNS: return (double)hs.conns;
	case CM_REFUSED_PER_IP: return (double)hs.refused_per_ip;
	case CM_REQUEST_TIMEOUTS: return (double)hs.request_timeouts;
	case CM_BODY_REFUSED: return (double)hs.body_budget_refused;
	case CM_BODY_BYTES: return (double)hs.body_bytes;
	case CM_PROBE_FAILURES: return coord_probe ? (double)probe_failures(coord_probe) : 0;
	case CM_UNKNOWN: return (double)cs.unknown_sessions;
	case CM_REFUSED_FULL: return (double)cs.refused_unknown_full;
	case CM_REFUSED_IP: return (double)cs.refused_unknown_per_ip;
	case CM_REFUSED_FUTURE: return (double)cs.refused_future;
	}
	return 0;
}

static void register_coord_metrics(struct metrics *m)
{
	static const struct {
		const char *name, *help;
		bool counter;
	} t[] = {
		[CM_SESSIONS] = { "knit_coord_sessions", "Authenticated control sessions open.", false },
		[CM_STREAMS] = { "knit_coord_map_streams", "Map streams open.", false },
		[CM_HANDSHAKES] = { "knit_coord_handshakes_total", "Control handshakes completed.", true },
		[CM_HANDSHAKE_FAILURES] = { "knit_coord_handshake_failures_total", "Control handshakes refused.", true },
		[CM_REGISTRATIONS] = { "knit_coord_registrations_total", "Devices registered.", true },
		[CM_FRAMES_REJECTED] = { "knit_coord_frames_rejected_total", "Sealed frames refused (bad, replayed).", true },
		[CM_CONNS] = { "knit_coord_connections", "Coordination connections open.", false },
		[CM_REFUSED_PER_IP] = { "knit_coord_refused_per_ip_total",
					"Connections refused: over --coord-per-ip-limit for their address.", true },
		[CM_REQUEST_TIMEOUTS] = { "knit_coord_request_timeouts_total",
					  "Connections closed for not delivering a request in 10 s (slowloris).", true },
		[CM_BODY_REFUSED] = { "knit_coord_body_budget_refused_total",
				      "Requests refused: request bodies held would pass 64 MiB.", true },
		[CM_BODY_BYTES] = { "knit_coord_body_bytes", "Request body bytes held before their handlers.", false },
		[CM_PROBE_FAILURES] = { "knit_coord_probe_failures_total",
					"Self-probes the coordination listener did not answer.", true },
		[CM_UNKNOWN] = { "knit_coord_unknown_sessions",
				 "Sessions of machines no Device knows yet (first registrations).", false },
		[CM_REFUSED_FULL] = { "knit_coord_handshakes_refused_unknown_full_total",
				      "Handshakes of unknown machines refused: their table was full.", true },
		[CM_REFUSED_IP] = { "knit_coord_handshakes_refused_unknown_per_ip_total",
				    "Handshakes of unknown machines refused: too many from one address.", true },
		[CM_REFUSED_FUTURE] = { "knit_coord_handshakes_refused_future_total",
					"Handshakes refused: a timestamp too far ahead of the server's clock.", true },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (t[i].counter)
			metrics_counter_func_new(m, t[i].name, t[i].help, coord_value, (void *)(uintptr_t)i);
		else
			metrics_gauge_func_new(m, t[i].name, t[i].help, coord_value, (void *)(uintptr_t)i);
	}
}

static int register_metrics(void)
{
	static const double seconds[] = { .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30 };
	struct metrics *m = metrics_new();

	if (!m)
		return -ENOMEM;
	op.metrics = m;
	op.m_reconciles = metrics_counter_new(m, "knit_reconciles_total", "Reconciles by kind and result.",
					      (const char *[]){ "kind", "result", NULL });
	op.m_reconcile_seconds = metrics_histogram_new(m, "knit_reconcile_duration_seconds", "Time spent per reconcile.",
						       (const char *[]){ "kind", NULL }, seconds, 14);
	op.m_queue_depth = metrics_gauge_new(m, "knit_workqueue_depth", "Keys waiting for a reconcile worker.",
					     (const char *[]){ "kind", NULL });
	m_restarts = metrics_counter_new(m, "knit_informer_watch_restarts_total", "Watch streams that ended and were restarted.",
					 (const char *[]){ "resource", NULL });
	m_relists = metrics_counter_new(m, "knit_informer_relists_total", "Complete lists (startup and after 410 Gone).",
					(const char *[]){ "resource", NULL });
	m_events = metrics_counter_new(m, "knit_informer_events_total", "Watch events received.",
				       (const char *[]){ "resource", NULL });
	kube_client_set_metrics(op.kube,
				metrics_histogram_new(m, "knit_kube_request_duration_seconds", "Kubernetes API request latency.",
						      (const char *[]){ "verb", NULL }, seconds, 14),
				metrics_counter_new(m, "knit_kube_requests_total", "Kubernetes API requests by verb and HTTP code.",
						    (const char *[]){ "verb", "code", NULL }));
	metrics_gauge_func_new(m, "knit_leader", "1 if this replica leads (or runs without leader election).", leader_value, NULL);
	metrics_counter_func_new(m, "knit_lease_transitions_total", "Leader changes observed.", transitions_value, NULL);
	register_coord_metrics(m);
	if (!op.m_reconciles || !op.m_reconcile_seconds || !op.m_queue_depth || !m_restarts || !m_relists || !m_events)
		return -ENOMEM;
	return 0;
}

/* The coordination listener answered its own probe lately (or is off). */
static bool coord_answers(uint64_t within_ms)
{
	return !coord_probe || probe_silent_ms(coord_probe) < within_ms;
}

static void healthz(struct httpd_req *req, void *arg)
{
	if (!coord_answers(COORD_UNHEALTHY_MS))
		httpd_respond_text(req, 500, "coordination listener has not answered for %llu ms\n",
				   (unsigned long long)probe_silent_ms(coord_probe));
	else
		httpd_respond_text(req, 200, "ok\n");
}

static void readyz(struct httpd_req *req, void *arg)
{
	/* Ready means "healthy": every replica, leader or standby, so a
	 * PodDisruptionBudget counts them all. Which one the Services send
	 * traffic to is serving.c's business (the leader, by EndpointSlice), not
	 * readiness'. The leader is Ready once its caches are synced. */
	if (shutting_down)
		httpd_respond_text(req, 503, "shutting down\n");
	else if (!coord_answers(COORD_NOT_READY_MS))
		httpd_respond_text(req, 503, "coordination listener has not answered for %llu ms\n",
				   (unsigned long long)probe_silent_ms(coord_probe));
	else if (webhook && !webhook_ready(webhook))
		httpd_respond_text(req, 503, "admission webhooks have no certificate yet\n");
	else if (lease && !lease_is_leader(lease))
		httpd_respond_text(req, 200, "ok: standby (leader: %s)\n", *lease_leader(lease) ? lease_leader(lease) : "none");
	else if (op.running)
		httpd_respond_text(req, 200, "ok: leader%s\n", serving && !serving_settled(serving) ? " (EndpointSlices being written)" : "");
	else
		httpd_respond_text(req, 503, "leader, caches not synced\n");
}

int main(int argc, char **argv)
{
	struct options o;
	struct kube_config cfg;
	enum log_level lvl = LOG_INFO;
	char err[512];
	int r;

	r = parse_args(argc, argv, &o);
	if (r)
		return r == 1 ? 0 : 2;
	if (o.log_level && !log_level_parse(o.log_level, &lvl)) {
		fprintf(stderr, "knit-operator: unknown log level \"%s\"\n", o.log_level);
		return 2;
	}
	log_init("knit-operator", lvl);
	/* Map streams seal every record: use the faster ChaCha20-Poly1305
	 * here (OpenSSL's or libsodium's, measured). Before any thread. */
	if (aead_init(AEAD_IMPL_AUTO)) {
		log_error("cannot initialise the AEAD (libsodium)");
		return 1;
	}
	kube_event_set_component("knit-operator");

	if (kube_config_load(&cfg, o.kubeconfig, err, sizeof(err))) {
		log_error("cannot load Kubernetes configuration", "error=\"%s\"", err);
		return 1;
	}
	op.loop = loop_new();
	if (!op.loop) {
		kube_config_free(&cfg);
		return 1;
	}
	/* Before any thread starts, so every thread inherits the blocked mask
	 * and SIGTERM reaches the loop's signalfd, not a worker's default action. */
	loop_signal_add(op.loop, SIGTERM, on_signal, NULL);
	loop_signal_add(op.loop, SIGINT, on_signal, NULL);
	signal(SIGPIPE, SIG_IGN);
	op.kube = kube_client_new(op.loop, &cfg);
	{
		const char *ns = o.namespace ? o.namespace : cfg.namespace ? cfg.namespace : "default";
		size_t n = strlen(ns) < sizeof(op.namespace) - 1 ? strlen(ns) : sizeof(op.namespace) - 1;
		memcpy(op.namespace, ns, n);
		op.namespace[n] = '\0';
	}
	kube_config_free(&cfg);
	if (!op.kube)
		goto out;
	kube_client_set_field_manager(op.kube, OPERATOR_MANAGER);
	op.workers = o.workers;
	op.create_default_tailnet = o.default_tailnet;
	boot_opts = o.boot;
	op.policies = policy_store_new();
	if (!op.policies || register_metrics()) {
		exit_code = 1;
		goto out;
	}
	if (o.listen_coord && *o.listen_coord) {
		struct coord_opts co = { .listen = o.listen_coord, .record_bytes = o.map_record_bytes,
					 .per_ip_limit = o.coord_per_ip, .new_control_key = o.new_control_key,
					 .rotate_grace_s = (o.rotate_grace_ms + 999) / 1000,
					 .knitd_service_account = o.knitd_sa };
		r = coord_new(&op, &co, &op.coord);
		if (r) {
			log_error("cannot serve coordination", "listen=%s err=%d", o.listen_coord, r);
			exit_code = 1;
			goto out;
		}
		log_info("serving coordination", "listen=%s port=%u", o.listen_coord, coord_port(op.coord));
		coord_probe = probe_new(op.loop, coord_port(op.coord), "/knit/v1/key", COORD_PROBE_EVERY_MS, 3000);
		if (!coord_probe) {
			exit_code = 1;
			goto out;
		}
	}

	if (o.relay.listen) {
		o.relay.metrics = op.metrics;
		r = relay_instance_new(op.loop, &o.relay, &relay, err, sizeof(err));
		if (r) {
			log_error("cannot run the embedded relay", "error=\"%s\"", err);
			exit_code = 1;
			goto out;
		}
		/* A kept key is pinned in the default Tailnet's relay map for the
		 * --default-tailnet-relay that names this relay's address. */
		if (o.relay.key_file) {
			static char self_key[RELAY_KEY_TEXT_LEN];

			snprintf(self_key, sizeof(self_key), "%s", relay_instance_key_text(relay));
			boot_opts.self_listen = o.relay.listen;
			boot_opts.self_key = self_key;
		}
		log_info("serving the relay", "public_key=%s key=%s listen=%s port=%u tls=%d stun_port=%u mesh_peers=%zu",
			 relay_instance_public_key(relay), relay_instance_key_text(relay), o.relay.listen, relay_instance_port(relay),
			 relay_instance_tls(relay), relay_instance_stun_port(relay), relay_instance_mesh_peers(relay));
	}

	if (o.listen_webhook && *o.listen_webhook) {
		struct webhook_opts wo = { .listen = o.listen_webhook, .service = o.webhook_service,
					   .config = o.webhook_config, .extra_names = o.webhook_names,
					   .nextra = o.nwebhook_names, .policy_check = policy_admission_check,
					   .policy_arg = &op };
		r = webhook_new(&op, &wo, &webhook);
		if (r) {
			log_error("cannot serve the admission webhooks", "listen=%s err=%d", o.listen_webhook, r);
			exit_code = 1;
			goto out;
		}
	}

	if (o.pod_ip) {
		struct serving_target t[2] = { { o.coordination_service, "coord", op.coord ? coord_port(op.coord) : 0 } };
		struct serving_opts so = { .namespace = op.namespace, .pod_ip = o.pod_ip, .pod_name = o.identity,
					   .targets = t, .ntargets = 1 };
		const char *colon = o.listen_webhook ? strrchr(o.listen_webhook, ':') : NULL;

		if (webhook && colon)
			t[so.ntargets++] = (struct serving_target){ o.webhook_service, "https", (uint16_t)atoi(colon + 1) };
		r = serving_new(op.kube, op.loop, &so, &serving);
		if (r) {
			log_error("cannot point the Services at the leader", "pod_ip=%s err=%d (needs --coord-listen)",
				  o.pod_ip, r);
			exit_code = 2;
			goto out;
		}
	}

	if (o.listen_health && *o.listen_health) {
		struct httpd_opts ho = { .listen = o.listen_health, .listen_fd = -1 };
		r = httpd_new(op.loop, &ho, &health);
		if (r) {
			log_error("cannot serve health endpoints", "listen=%s err=%d", o.listen_health, r);
			exit_code = 1;
			goto out;
		}
		httpd_route(health, "GET", "/healthz", 0, healthz, NULL);
		httpd_route(health, "GET", "/readyz", 0, readyz, NULL);
		httpd_serve_metrics(health, op.metrics);
		log_info("serving health and metrics", "listen=%s port=%u", o.listen_health, httpd_port(health));
	}

	if (o.leader_election) {
		struct lease_config lc = {
			.namespace = op.namespace,
			.name = o.lease_name,
			.identity = o.identity,
			.lease_duration_ms = o.lease_ms,
			.renew_deadline_ms = o.renew_ms,
			.retry_period_ms = o.retry_ms,
			.on_started_leading = started_leading,
			.on_stopped_leading = stopped_leading,
			.on_new_leader = new_leader,
		};
		r = lease_new(op.kube, &lc, &lease);
		if (r) {
			log_error("bad leader-election settings", "err=%d (need lease-duration > renew-deadline > 1.2 x retry-period)", r);
			exit_code = 2;
			goto out;
		}
		lease_start(lease);
		log_info("waiting to lead", "lease=%s/%s identity=%s", op.namespace, o.lease_name, lease_identity(lease));
	} else {
		start_controllers();
	}

	if (loop_run(op.loop) < 0)
		exit_code = 1;
out:
	httpd_free(health);
	probe_free(coord_probe);
	serving_free(serving);
	webhook_free(webhook);
	relay_instance_free(relay);
	coord_free(op.coord);
	informer_free(op.tailnets);
	informer_free(op.authkeys);
	informer_free(op.devices);
	informer_free(op.claims);
	informer_free(op.secrets);
	informer_free(op.policies_inf);
	op.tailnets = op.authkeys = op.devices = op.claims = op.secrets = op.policies_inf = NULL;
	policy_store_free(op.policies);
	lease_free(lease);
	controller_free(op.tailnet_ctl);
	controller_free(op.authkey_ctl);
	controller_free(op.device_ctl);
	controller_free(op.policy_ctl);
	kube_client_free(op.kube);
	metrics_free(op.metrics);
	loop_free(op.loop);
	log_info("stopped", "exit=%d", exit_code);
	return exit_code;
}
