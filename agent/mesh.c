/* knitd's mesh mode: the node identity, its control connection, and the
 * netmap applied to the engine and the TUN device. Everything here runs on
 * the loop thread. */
#include "mesh.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "control/client.h"
#include "control/messages.h"
#include "health.h"
#include "json.h"
#include "localapi.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "net/endpoint.h"
#include "net/iface.h"
#include "state.h"
#include "strmap.h"
#include "wg/aead.h"
#include "wg/engine.h"
#include "wg/hub.h"
#include "wg/peer.h"
#include "wg/send.h"
#include "wg/uapi_server.h"

#ifndef KNIT_VERSION
#define KNIT_VERSION "0.1.0"
#endif

#define SAVE_DELAY_MS 2000 /* netmap deltas are saved at most this often */
#define ENDPOINT_REFRESH_MS 30000
#define PING_TIMEOUT_MS 5000
#define PING_INTERVAL_MS 500

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
	int port;
	int workers;
};

struct ping;

struct mesh {
	struct options o;
	struct loop *loop;
	struct hub *hub;
	struct engine *engine;
	struct uapi_server *uapi;
	struct localapi *api;
	struct health *http; /* --http-listen */
	struct control_client *ctl;
	struct state *st;

	struct netmap nm;
	bool has_nm;
	/* A full netmap that arrives in pieces ("more":true) builds up here and
	 * replaces nm only once complete: forwarding never sees half of it. */
	struct netmap pending;
	bool has_pending;
	bool running; /* wants the map stream (up, not down) */
	bool map_up;
	char health[256];
	bool control_key_new;

	struct strmap *routes; /* cidr -> (void *)1, applied on the TUN */
	struct strmap *addrs;
	struct loop_timer *save_timer, *endpoint_timer;
	char endpoints_sig[2048];
	struct localapi_reply *pending_up;
	struct ping *pings;
	int exit_code;
};

/* ---- state ---- */

static void save_now(struct mesh *m)
{
	char err[256];

	if (m->has_nm && state_set_netmap(m->st, &m->nm))
		log_warn("cannot keep the netmap in the state (out of memory)");
	if (state_save(m->st, m->o.state_path, err, sizeof(err)))
		log_error("cannot save the state file", "path=%s error=\"%s\"", m->o.state_path, err);
}

static void on_save(struct loop *loop, struct loop_timer *t, void *arg)
{
	save_now(arg);
}

static void save_soon(struct mesh *m)
{
	if (!loop_timer_armed(m->save_timer))
		loop_timer_arm(m->save_timer, SAVE_DELAY_MS);
}

/* ---- applying a netmap ---- */

static int prefix_text(const struct netmap_prefix *p, char *out, size_t len)
{
	return netmap_prefix_format(p, false, out, len) < 0 ? -ENOSPC : 0;
}

/* Makes the TUN's addresses and routes exactly want (cidr -> 1) for the
 * given applied set, adding first and removing what is no longer wanted. */
static void sync_set(struct mesh *m, struct strmap *applied, struct strmap *want, bool routes)
{
	const char *dev = engine_ifname(m->engine);
	char *gone[1024];
	int ngone = 0;

	for (struct strmap_entry *e = strmap_first(want); e; e = strmap_next(want, e)) {
		const char *cidr = strmap_key(e);
		int err;
		if (strmap_has(applied, cidr))
			continue;
		err = routes ? iface_route_add(dev, cidr) : iface_addr_add(dev, cidr);
		if (err) {
			log_warn(routes ? "cannot add route" : "cannot add address", "dev=%s cidr=%s err=%d", dev, cidr, err);
			continue;
		}
		strmap_set(applied, cidr, (void *)1, NULL);
	}
	for (struct strmap_entry *e = strmap_first(applied); e && ngone < 1024; e = strmap_next(applied, e))
		if (!strmap_has(want, strmap_key(e)))
			gone[ngone++] = strdup(strmap_key(e));
	for (int i = 0; i < ngone; i++) {
		if (!gone[i])
			continue;
		if (routes)
			iface_route_del(dev, gone[i]);
		else
			iface_addr_del(dev, gone[i]);
		strmap_del(applied, gone[i]);
		free(gone[i]);
	}
}

static void peer_from_node(const struct netmap_node *n, struct uapi_peer *p, struct uapi_allowed_ip *aips, size_t max)
{
	memset(p, 0, sizeof(*p));
	memcpy(p->public_key, n->node_key, 32);
	p->flags = UAPI_PEER_REPLACE_ALLOWED_IPS;
	p->allowed_ips = aips;
	for (size_t i = 0; i < n->nallowed_ips && p->n_allowed_ips < max; i++) {
		const struct netmap_prefix *a = &n->allowed_ips[i];
		struct uapi_allowed_ip *u = &aips[p->n_allowed_ips++];
		memset(u, 0, sizeof(*u));
		u->family = a->family;
		u->cidr = a->bits;
		memcpy(a->family == AF_INET ? (void *)&u->ip.v4 : (void *)&u->ip.v6, a->addr, a->family == AF_INET ? 4 : 16);
	}
}

/* Engine peers, TUN addresses and routes from the current netmap. Level
 * triggered: the same call serves a full netmap and any delta. */
static void apply_netmap(struct mesh *m)
{
	struct strmap *want_routes = strmap_new(), *want_addrs = strmap_new(), *keep = strmap_new();
	struct uapi_device snapshot = { 0 };
	char cidr[64], hex[65];

	if (!want_routes || !want_addrs || !keep)
		goto out;
	for (size_t i = 0; i < m->nm.npeers; i++) {
		const struct netmap_node *n = &m->nm.peers[i];
		struct uapi_allowed_ip aips[256];
		struct uapi_peer p;
		struct engine_peer_stats ps;

		peer_from_node(n, &p, aips, 256);
		/* The endpoint the server saw announced; once a handshake works the
		 * engine roams on its own, so only a peer without one gets it. */
		if (n->nendpoints > 0 &&
		    (engine_peer_stats(m->engine, n->node_key, &ps) != 0 || !ps.has_endpoint || !ps.has_session)) {
			p.endpoint = n->endpoints[0];
			p.flags |= UAPI_PEER_HAS_ENDPOINT;
		}
		if (engine_peer_set(m->engine, &p))
			log_warn("cannot configure peer", "peer=%s", n->name ? n->name : "?");
		sodium_bin2hex(hex, sizeof(hex), n->node_key, 32);
		strmap_set(keep, hex, (void *)1, NULL);
		for (size_t k = 0; k < n->nallowed_ips; k++)
			if (prefix_text(&n->allowed_ips[k], cidr, sizeof(cidr)) == 0)
				strmap_set(want_routes, cidr, (void *)1, NULL);
	}
	/* Peers the netmap no longer has: out of the engine (two-phase there). */
	if (engine_get(m->engine, &snapshot) == 0) {
		for (size_t i = 0; i < snapshot.n_peers; i++) {
			sodium_bin2hex(hex, sizeof(hex), snapshot.peers[i].public_key, 32);
			if (!strmap_has(keep, hex))
				engine_peer_remove(m->engine, snapshot.peers[i].public_key);
		}
		uapi_device_release(&snapshot);
	}
	for (size_t i = 0; i < m->nm.self.naddresses; i++)
		if (prefix_text(&m->nm.self.addresses[i], cidr, sizeof(cidr)) == 0)
			strmap_set(want_addrs, cidr, (void *)1, NULL);
	sync_set(m, m->addrs, want_addrs, false);
	sync_set(m, m->routes, want_routes, true);
out:
	strmap_free(want_routes);
	strmap_free(want_addrs);
	strmap_free(keep);
}

static void drop_pending(struct mesh *m)
{
	if (m->has_pending)
		netmap_free(&m->pending);
	m->has_pending = false;
}

static void clear_netmap(struct mesh *m)
{
	struct strmap *none = strmap_new();

	engine_peers_clear(m->engine);
	if (none) {
		sync_set(m, m->routes, none, true);
		sync_set(m, m->addrs, none, false);
		strmap_free(none);
	}
	if (m->has_nm)
		netmap_free(&m->nm);
	m->has_nm = false;
	drop_pending(m);
}

/* ---- endpoints: where peers can reach us ---- */

/* Every address of an up, non-loopback interface other than our TUN,
 * with our WireGuard port. */
static struct update_request collect_endpoints(struct mesh *m, char *sig, size_t siglen)
{
	struct update_request u = { 0 };
	struct ifaddrs *ifs = NULL;
	size_t n = 0, cap = 0, pos = 0;

	sig[0] = '\0';
	if (getifaddrs(&ifs) != 0)
		return u;
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		struct endpoint ep = { 0 };
		char text[80];
		if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK) ||
		    strcmp(i->ifa_name, engine_ifname(m->engine)) == 0)
			continue;
		if (i->ifa_addr->sa_family == AF_INET) {
			ep.addr.in4 = *(struct sockaddr_in *)i->ifa_addr;
			ep.addr.in4.sin_port = htons(hub_port(m->hub));
		} else if (i->ifa_addr->sa_family == AF_INET6) {
			ep.addr.in6 = *(struct sockaddr_in6 *)i->ifa_addr;
			if (IN6_IS_ADDR_LINKLOCAL(&ep.addr.in6.sin6_addr))
				continue;
			ep.addr.in6.sin6_port = htons(hub_port(m->hub));
		} else {
			continue;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct endpoint *e = realloc(u.endpoints, nc * sizeof(*e));
			if (!e)
				break;
			u.endpoints = e;
			cap = nc;
		}
		u.endpoints[n++] = ep;
		if (endpoint_format(&ep, text, sizeof(text)) > 0 && pos + strlen(text) + 2 < siglen)
			pos += (size_t)snprintf(sig + pos, siglen - pos, "%s,", text);
	}
	u.nendpoints = n;
	freeifaddrs(ifs);
	return u;
}

static void start_map(struct mesh *m)
{
	struct update_request u = collect_endpoints(m, m->endpoints_sig, sizeof(m->endpoints_sig));
	struct json *req = map_request_to_json(&u);

	if (!req || control_client_map_start(m->ctl, req))
		log_error("cannot start the map stream");
	json_free(req);
	update_request_free(&u);
}

static void update_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	if (err)
		log_warn("endpoint update not delivered", "why=\"%s\"", why ? why : "");
}

/* Endpoints change when the machine roams: tell the server (peers learn it). */
static void on_endpoint_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct mesh *m = arg;
	char sig[2048];
	struct update_request u = collect_endpoints(m, sig, sizeof(sig));

	if (m->ctl && m->running && strcmp(sig, m->endpoints_sig) != 0) {
		struct json *req = update_request_to_json(&u);
		log_info("endpoints changed", "endpoints=\"%s\"", sig);
		snprintf(m->endpoints_sig, sizeof(m->endpoints_sig), "%s", sig);
		if (req)
			control_client_call(m->ctl, req, update_done, m, NULL);
		json_free(req);
	}
	update_request_free(&u);
	loop_timer_arm(t, ENDPOINT_REFRESH_MS);
}

/* ---- the control connection ---- */

static bool on_control_key(struct control_client *c, const uint8_t key[CHANNEL_KEY_LEN], void *arg)
{
	struct mesh *m = arg;
	char text[80];

	/* Trust on first use: pinned from now on, and shown to the user. */
	channel_key_format(key, "ctrlkey:", text, sizeof(text));
	memcpy(m->st->control_key, key, 32);
	m->st->has_control_key = true;
	m->control_key_new = true;
	save_now(m);
	log_info("pinned the coordination server's key (trust on first use)", "key=%s", text);
	return true;
}

static void logged_out(struct mesh *m, const char *why)
{
	log_warn("this device is no longer registered", "why=\"%s\"", why);
	m->running = false;
	if (m->ctl)
		control_client_map_stop(m->ctl);
	clear_netmap(m);
	state_logout(m->st);
	engine_set_private_key(m->engine, m->st->node_key);
	snprintf(m->health, sizeof(m->health), "logged out: %s", why);
	save_now(m);
}

static bool on_record(struct control_client *c, const struct json *rec, void *arg)
{
	struct mesh *m = arg;
	const char *type = messages_type(rec), *code, *msg;
	char err[256];

	if (messages_error(rec, &code, &msg)) {
		if (!strcmp(code, "DeviceDeleted") || !strcmp(code, "NotRegistered") || !strcmp(code, "KeyExpired")) {
			logged_out(m, msg);
			return false;
		}
		snprintf(m->health, sizeof(m->health), "coordination server: %s", msg);
		return false;
	}
	if (type && !strcmp(type, "full")) {
		struct netmap nm;
		if (!netmap_from_json(rec, &nm, err, sizeof(err))) {
			log_warn("unusable netmap", "error=\"%s\"", err);
			return false;
		}
		drop_pending(m);
		m->pending = nm;
		m->has_pending = true;
	} else if (type && !strcmp(type, "delta")) {
		struct netmap *to = m->has_pending ? &m->pending : &m->nm;
		struct netmap_delta d;
		if ((!m->has_pending && !m->has_nm) || !netmap_delta_from_json(rec, &d, err, sizeof(err))) {
			log_warn("unusable netmap delta", "error=\"%s\"", m->has_nm || m->has_pending ? err : "no netmap yet");
			drop_pending(m);
			return false; /* reconnect: the next stream starts with a full netmap */
		}
		int r = netmap_apply_delta(to, &d, err, sizeof(err));
		netmap_delta_free(&d);
		if (r) {
			log_warn("netmap delta does not apply", "error=\"%s\"", err);
			drop_pending(m);
			return false;
		}
	} else {
		return true; /* keepalive */
	}
	if (m->has_pending) {
		/* A netmap in pieces: the last one says "more":false. */
		if (json_bool(json_get(rec, "more"), false))
			return true;
		if (m->has_nm)
			netmap_free(&m->nm);
		m->nm = m->pending;
		m->has_nm = true;
		m->has_pending = false;
	}
	apply_netmap(m);
	save_soon(m);
	log_debug("netmap applied", "seq=%llu peers=%zu", (unsigned long long)m->nm.seq, m->nm.npeers);
	return true;
}

static void on_map_state(struct control_client *c, bool up, int err, const char *why, uint64_t retry_ms, void *arg)
{
	struct mesh *m = arg;

	m->map_up = up;
	if (!up)
		drop_pending(m); /* the next stream starts with a full netmap */
	if (up) {
		m->health[0] = '\0';
		log_info("connected to the coordination server");
	} else if (m->running) {
		/* Forwarding goes on with the last netmap. */
		snprintf(m->health, sizeof(m->health), "coordination server unreachable (%s); retrying in %llus, "
			 "forwarding on the last netmap", why ? why : "?", (unsigned long long)(retry_ms / 1000));
		log_warn("lost the coordination server", "why=\"%s\" retry_ms=%llu", why ? why : "?",
			 (unsigned long long)retry_ms);
	}
}

static int ensure_client(struct mesh *m)
{
	struct control_client_opts co = {
		.server_url = m->st->login_server,
		.machine_priv = m->st->machine_key,
		.control_key = m->st->has_control_key ? m->st->control_key : NULL,
		.on_control_key = on_control_key,
		.on_record = on_record,
		.on_map_state = on_map_state,
		.arg = m,
	};

	if (m->ctl)
		return 0;
	if (!m->st->login_server)
		return -EINVAL;
	return control_client_new(m->loop, &co, &m->ctl);
}

/* ---- local API ---- */

static const char *backend_state(struct mesh *m)
{
	if (!state_logged_in(m->st))
		return "NeedsLogin";
	if (!m->running)
		return "Stopped";
	return m->map_up || m->has_nm ? "Running" : "Starting";
}

/* Fills a localapi_peer from a netmap node (strings point into n or bufs). */
struct peer_view {
	char key[80];
	char addr_text[8][64];
	const char *addrs[8];
	char endpoint[80];
	struct localapi_peer p;
};

static void view_node(struct mesh *m, const struct netmap_node *n, bool self, struct peer_view *v)
{
	struct engine_peer_stats ps;

	memset(v, 0, sizeof(*v));
	channel_key_format(n->node_key, "nodekey:", v->key, sizeof(v->key));
	for (size_t i = 0; i < n->naddresses && i < 8; i++) {
		netmap_prefix_format(&n->addresses[i], true, v->addr_text[i], sizeof(v->addr_text[i]));
		v->addrs[i] = v->addr_text[i];
	}
	v->p.name = n->name;
	v->p.dns_name = n->fqdn;
	v->p.node_key = v->key;
	v->p.addresses = v->addrs;
	v->p.naddresses = n->naddresses < 8 ? n->naddresses : 8;
	v->p.tags = (const char *const *)n->tags;
	v->p.ntags = n->ntags;
	v->p.online = self ? m->map_up : n->online;
	v->p.relay = n->relay;
	if (!self && engine_peer_stats(m->engine, n->node_key, &ps) == 0) {
		if (ps.has_endpoint && endpoint_format(&ps.endpoint, v->endpoint, sizeof(v->endpoint)) > 0)
			v->p.endpoint = v->endpoint;
		v->p.last_handshake = ps.last_handshake_ns / 1000000000;
		v->p.rx_bytes = ps.rx_bytes;
		v->p.tx_bytes = ps.tx_bytes;
	}
}

static int api_status(void *arg, struct localapi_writer *w)
{
	struct mesh *m = arg;
	char ck[80];
	struct localapi_status s = {
		.backend_state = backend_state(m),
		.login_server = m->st->login_server,
		.dns_suffix = m->has_nm ? m->nm.dns_suffix : m->st->device.dns_suffix,
		.control_key = NULL,
		.health = m->health[0] ? m->health : NULL,
	};
	struct peer_view v;
	int err;

	if (m->st->has_control_key) {
		channel_key_format(m->st->control_key, "ctrlkey:", ck, sizeof(ck));
		s.control_key = ck;
	}
	if ((err = localapi_write_status(w, &s)))
		return err;
	if (m->has_nm) {
		view_node(m, &m->nm.self, true, &v);
		if ((err = localapi_write_self(w, &v.p)))
			return err;
		for (size_t i = 0; i < m->nm.npeers; i++) {
			view_node(m, &m->nm.peers[i], false, &v);
			if ((err = localapi_write_peer(w, &v.p)))
				return err;
		}
	} else if (state_logged_in(m->st)) {
		struct netmap_node self = { .name = m->st->device.name, .addresses = m->st->device.addresses,
					    .naddresses = m->st->device.naddresses };
		uint8_t pub[32];
		crypto_scalarmult_base(pub, m->st->node_key);
		memcpy(self.node_key, pub, 32);
		view_node(m, &self, true, &v);
		return localapi_write_self(w, &v.p);
	}
	return 0;
}

static const struct netmap_node *find_node(struct mesh *m, const char *what, bool *is_self)
{
	struct netmap_prefix want;
	bool by_ip = netmap_prefix_parse(&want, what);

	*is_self = false;
	if (!m->has_nm)
		return NULL;
	for (size_t i = 0; i <= m->nm.npeers; i++) {
		const struct netmap_node *n = i < m->nm.npeers ? &m->nm.peers[i] : &m->nm.self;
		if (!by_ip) {
			if ((n->name && !strcmp(n->name, what)) || (n->fqdn && !strcmp(n->fqdn, what)) ||
			    (n->device && !strcmp(n->device, what))) {
				*is_self = i == m->nm.npeers;
				return n;
			}
			continue;
		}
		for (size_t k = 0; k < n->naddresses; k++) {
			if (n->addresses[k].family == want.family &&
			    !memcmp(n->addresses[k].addr, want.addr, want.family == AF_INET ? 4 : 16)) {
				*is_self = i == m->nm.npeers;
				return n;
			}
		}
	}
	return NULL;
}

static int api_whois(void *arg, const char *ip, struct localapi_writer *w)
{
	struct mesh *m = arg;
	bool self;
	const struct netmap_node *n = find_node(m, ip, &self);
	struct peer_view v;

	if (!n)
		return -ENOENT;
	view_node(m, n, self, &v);
	return localapi_write_peer(w, &v.p);
}

static void register_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	struct mesh *m = arg;
	struct localapi_reply *reply = m->pending_up;
	struct register_response r;
	const char *code, *msg;
	char perr[256], ck[80];

	m->pending_up = NULL;
	if (err) {
		if (reply)
			localapi_reply_error(reply, 502, err == -EKEYREJECTED ? "ControlKeyMismatch" : "ControlUnreachable",
					     "cannot talk to the coordination server at %s: %s%s", m->st->login_server,
					     why ? why : strerror(-err),
					     err == -EKEYREJECTED ? " (it does not hold the pinned key: pass --server-key if it changed)" : "");
		return;
	}
	if (messages_error(resp, &code, &msg)) {
		if (reply)
			localapi_reply_error(reply, 403, code, "%s", msg);
		if (!strcmp(code, "NotRegistered"))
			logged_out(m, msg);
		return;
	}
	if (!register_response_from_json(resp, &r, perr, sizeof(perr))) {
		if (reply)
			localapi_reply_error(reply, 502, "BadResponse", "the coordination server answered nonsense: %s", perr);
		return;
	}
	state_set_device(m->st, &r);
	register_response_free(&r);
	m->running = true;
	save_now(m);
	start_map(m);
	log_info("registered", "device=%s", m->st->device.device);
	if (reply) {
		const char *addrs[8];
		char text[8][64];
		size_t n = m->st->device.naddresses < 8 ? m->st->device.naddresses : 8;
		for (size_t i = 0; i < n; i++) {
			netmap_prefix_format(&m->st->device.addresses[i], true, text[i], sizeof(text[i]));
			addrs[i] = text[i];
		}
		channel_key_format(m->st->control_key, "ctrlkey:", ck, sizeof(ck));
		struct localapi_up_result u = {
			.backend_state = backend_state(m),
			.device = m->st->device.device,
			.name = m->st->device.name,
			.addresses = addrs,
			.naddresses = n,
			.control_key = ck,
			.control_key_new = m->control_key_new,
		};
		localapi_reply_up(reply, &u);
	}
	m->control_key_new = false;
}

static int send_register_cb(struct mesh *m, const char *auth_key, control_call_fn cb)
{
	struct register_request rq = { 0 };
	char host[256] = "";
	struct json *req;
	int err;

	crypto_scalarmult_base(rq.node_key, m->st->node_key);
	crypto_scalarmult_base(rq.disco_key, m->st->disco_key);
	if (!m->st->hostname)
		gethostname(host, sizeof(host) - 1);
	rq.auth_key = (char *)auth_key;
	rq.hostname = m->st->hostname ? m->st->hostname : host;
	rq.tags = m->st->tags;
	rq.ntags = m->st->ntags;
	rq.routes = m->st->routes;
	rq.nroutes = m->st->nroutes;
	req = register_request_to_json(&rq);
	if (!req)
		return -ENOMEM;
	err = control_client_call(m->ctl, req, cb, m, NULL);
	messages_json_free_secret(req);
	return err;
}

static int send_register(struct mesh *m, const char *auth_key)
{
	return send_register_cb(m, auth_key, register_done);
}

static void api_up(void *arg, const struct localapi_up *req, struct localapi_reply *reply)
{
	struct mesh *m = arg;
	bool server_changed;
	int err;

	if (m->pending_up) {
		localapi_reply_error(reply, 409, "Busy", "another knit up is in progress");
		return;
	}
	server_changed = req->login_server && (!m->st->login_server || strcmp(req->login_server, m->st->login_server));
	if (!req->login_server && !m->st->login_server) {
		localapi_reply_error(reply, 400, "NoLoginServer",
				     "no coordination server yet: pass --login-server URL (the operator's coordination Service)");
		return;
	}
	if (server_changed) {
		/* Another server: another identity there, and its own key. */
		control_client_free(m->ctl);
		m->ctl = NULL;
		m->map_up = false;
		clear_netmap(m);
		if (state_logged_in(m->st))
			state_logout(m->st);
		engine_set_private_key(m->engine, m->st->node_key);
		free(m->st->login_server);
		m->st->login_server = strdup(req->login_server);
		m->st->has_control_key = false;
	}
	if (req->has_server_key) {
		if (m->st->has_control_key && memcmp(m->st->control_key, req->server_key, 32)) {
			control_client_free(m->ctl);
			m->ctl = NULL;
		}
		memcpy(m->st->control_key, req->server_key, 32);
		m->st->has_control_key = true;
	}
	if (req->hostname || req->has_tags || req->has_routes) {
		struct netmap_prefix routes[64];
		size_t nroutes = 0;
		for (size_t i = 0; req->has_routes && i < req->nroutes && nroutes < 64; i++)
			if (netmap_prefix_parse(&routes[nroutes], req->routes[i]))
				nroutes++;
		if (state_set_prefs(m->st, req->hostname ? req->hostname : m->st->hostname,
				    req->has_tags ? (char *const *)req->tags : m->st->tags,
				    req->has_tags ? req->ntags : m->st->ntags,
				    req->has_routes ? routes : m->st->routes,
				    req->has_routes ? nroutes : m->st->nroutes)) {
			localapi_reply_error(reply, 500, "NoMemory", "out of memory");
			return;
		}
	}
	if (!req->auth_key && !state_logged_in(m->st)) {
		localapi_reply_error(reply, 400, "NeedsLogin",
				     "this device is not logged in: run knit up --authkey KEY (create an AuthKey with kubectl)");
		return;
	}
	if ((err = ensure_client(m))) {
		localapi_reply_error(reply, 400, "BadLoginServer", "cannot use login server %s: %s",
				     m->st->login_server ? m->st->login_server : "(none)", strerror(-err));
		return;
	}
	save_now(m);
	m->pending_up = reply;
	if ((err = send_register(m, req->auth_key))) {
		m->pending_up = NULL;
		localapi_reply_error(reply, 500, "Internal", "cannot send the registration: %s", strerror(-err));
	}
}

static void api_down(void *arg, struct localapi_reply *reply)
{
	struct mesh *m = arg;

	m->running = false;
	m->map_up = false;
	if (m->ctl)
		control_client_map_stop(m->ctl);
	clear_netmap(m);
	log_info("down: disconnected from the tailnet (knit up reconnects)");
	localapi_reply_ok(reply, NULL);
}

static void logout_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	struct localapi_reply *reply = arg;
	const char *code, *msg;

	if (err)
		localapi_reply_error(reply, 502, "ControlUnreachable", "cannot reach the coordination server: %s", why ? why : "?");
	else if (messages_error(resp, &code, &msg) && strcmp(code, "NotRegistered"))
		localapi_reply_error(reply, 502, code, "%s", msg);
	else
		localapi_reply_ok(reply, NULL);
}

static void api_logout(void *arg, struct localapi_reply *reply)
{
	struct mesh *m = arg;
	struct json *req = json_new_object();

	if (!state_logged_in(m->st) || ensure_client(m)) {
		json_free(req);
		localapi_reply_error(reply, 400, "NeedsLogin", "this device is not logged in");
		return;
	}
	json_object_set(req, "type", json_new_string("logout"));
	if (control_client_call(m->ctl, req, logout_done, reply, NULL))
		localapi_reply_error(reply, 500, "Internal", "cannot send the logout");
	json_free(req);
	/* The node key dies either way: forget it now. */
	logged_out(m, "logged out by the user");
}

/* ---- ping: ICMP echo through the tunnel ---- */

struct ping {
	struct mesh *m;
	struct localapi_reply *reply;
	int fd;
	uint16_t id, seq;
	uint64_t sent_at;
	struct sockaddr_in to;
	char name[128], ip[64];
	uint8_t node_key[32];
	struct loop_timer *timeout, *resend;
	struct ping *next;
};

static void ping_free(struct ping *p)
{
	struct ping **pp;

	for (pp = &p->m->pings; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	loop_fd_del(p->m->loop, p->fd);
	close(p->fd);
	loop_timer_free(p->timeout);
	loop_timer_free(p->resend);
	free(p);
}

static uint16_t icmp_sum(const void *data, size_t len)
{
	const uint8_t *b = data;
	uint32_t s = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		s += (uint32_t)(b[i] << 8 | b[i + 1]);
	if (len & 1)
		s += (uint32_t)(b[len - 1] << 8);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return htons((uint16_t)~s);
}

static void ping_send(struct ping *p)
{
	struct icmphdr h = { .type = ICMP_ECHO };
	uint8_t pkt[64] = { 0 };

	h.un.echo.id = htons(p->id);
	h.un.echo.sequence = htons(++p->seq);
	memcpy(pkt, &h, sizeof(h));
	memcpy(pkt + sizeof(h), "knit ping", 9);
	((struct icmphdr *)pkt)->checksum = icmp_sum(pkt, sizeof(pkt));
	p->sent_at = loop_mono_ms();
	sendto(p->fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&p->to, sizeof(p->to));
}

static void on_ping_resend(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct ping *p = arg;

	ping_send(p);
	loop_timer_arm(t, PING_INTERVAL_MS);
}

static void on_ping_timeout(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct ping *p = arg;

	localapi_reply_error(p->reply, 504, "PingTimeout", "no answer from %s (%s) in %d s: is it online, and does the policy allow it?",
			     p->name, p->ip, PING_TIMEOUT_MS / 1000);
	ping_free(p);
}

static void on_ping_readable(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct ping *p = arg;
	uint8_t buf[1500];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
		struct iphdr *ip = (struct iphdr *)buf;
		size_t hl = (size_t)ip->ihl * 4;
		struct icmphdr *h;
		if ((size_t)n < hl + sizeof(*h) || ip->saddr != p->to.sin_addr.s_addr)
			continue;
		h = (struct icmphdr *)(buf + hl);
		if (h->type != ICMP_ECHOREPLY || ntohs(h->un.echo.id) != p->id)
			continue;
		struct engine_peer_stats ps;
		char ep[80] = "";
		if (engine_peer_stats(p->m->engine, p->node_key, &ps) == 0 && ps.has_endpoint)
			endpoint_format(&ps.endpoint, ep, sizeof(ep));
		struct localapi_pong pong = {
			.peer = p->name,
			.ip = p->ip,
			.latency_ms = (double)(loop_mono_ms() - p->sent_at),
			.endpoint = *ep ? ep : NULL,
		};
		localapi_reply_pong(p->reply, &pong);
		ping_free(p);
		return;
	}
}

static void api_ping(void *arg, const char *peer, struct localapi_reply *reply)
{
	struct mesh *m = arg;
	bool self;
	const struct netmap_node *n = find_node(m, peer, &self);
	struct ping *p;
	const char *dev = engine_ifname(m->engine);

	if (!n || self) {
		localapi_reply_error(reply, 404, "PeerNotFound", "%s is not a peer of this node (see knit status)", peer);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		localapi_reply_error(reply, 500, "NoMemory", "out of memory");
		return;
	}
	p->m = m;
	p->reply = reply;
	p->fd = -1;
	snprintf(p->name, sizeof(p->name), "%s", n->name ? n->name : peer);
	memcpy(p->node_key, n->node_key, 32);
	for (size_t i = 0; i < n->naddresses; i++) {
		if (n->addresses[i].family == AF_INET) {
			p->to.sin_family = AF_INET;
			memcpy(&p->to.sin_addr, n->addresses[i].addr, 4);
			netmap_prefix_format(&n->addresses[i], true, p->ip, sizeof(p->ip));
		}
	}
	randombytes_buf(&p->id, sizeof(p->id));
	p->fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
	p->timeout = loop_timer_new(m->loop, on_ping_timeout, p);
	p->resend = loop_timer_new(m->loop, on_ping_resend, p);
	if (!p->to.sin_family || p->fd < 0 || !p->timeout || !p->resend ||
	    setsockopt(p->fd, SOL_SOCKET, SO_BINDTODEVICE, dev, (socklen_t)strlen(dev) + 1) ||
	    loop_fd_add(m->loop, p->fd, LOOP_READ, on_ping_readable, p)) {
		localapi_reply_error(reply, 500, "PingFailed", "cannot ping %s: %s", peer,
				     p->to.sin_family ? strerror(errno) : "it has no IPv4 address");
		if (p->fd >= 0)
			close(p->fd);
		loop_timer_free(p->timeout);
		loop_timer_free(p->resend);
		free(p);
		return;
	}
	p->next = m->pings;
	m->pings = p;
	ping_send(p);
	loop_timer_arm(p->resend, PING_INTERVAL_MS);
	loop_timer_arm(p->timeout, PING_TIMEOUT_MS);
}

static const struct localapi_ops api_ops = {
	.status = api_status,
	.whois = api_whois,
	.up = api_up,
	.down = api_down,
	.logout = api_logout,
	.ping = api_ping,
};

/* ---- joining at start (containers, unattended machines) ---- */

static void auto_join_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg);

static struct loop_timer *join_retry;
static char *join_key;

static void on_join_retry(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct mesh *m = arg;

	if (state_logged_in(m->st) || !join_key)
		return;
	if (send_register(m, join_key))
		loop_timer_arm(t, 5000);
}

/* register_done's job, for a join with no CLI waiting: retries on
 * transport errors, gives up loudly on refusals. */
static void auto_join_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	struct mesh *m = arg;
	const char *code, *msg;

	if (err || (messages_error(resp, &code, &msg) && !strcmp(code, "Unavailable"))) {
		log_warn("cannot join yet, retrying in 5 s", "why=\"%s\"", err ? (why ? why : "?") : msg);
		loop_timer_arm(join_retry, 5000);
		return;
	}
	register_done(c, err, resp, why, m);
	if (state_logged_in(m->st)) {
		sodium_memzero(join_key, strlen(join_key));
		free(join_key);
		join_key = NULL;
	} else if (messages_error(resp, &code, &msg)) {
		log_error("the coordination server refused to join this node", "code=%s why=\"%s\"", code, msg);
	}
}

/* --login-server with an auth key from --authkey-file or $KNIT_AUTHKEY:
 * join by ourselves (what `knit up --authkey` does), once. */
static int auto_join(struct mesh *m)
{
	const char *env = getenv("KNIT_AUTHKEY");
	char buf[512] = "";
	size_t n;

	if (m->o.authkey_file) {
		FILE *f = fopen(m->o.authkey_file, "re");
		if (!f) {
			log_error("cannot read the auth key file", "path=%s err=%d", m->o.authkey_file, errno);
			return -errno;
		}
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			buf[--n] = '\0';
		join_key = strdup(buf);
		sodium_memzero(buf, sizeof(buf));
	} else if (env && *env) {
		join_key = strdup(env);
	} else {
		log_error("--login-server needs an auth key to join: --authkey-file FILE or KNIT_AUTHKEY");
		return -EINVAL;
	}
	if (!join_key)
		return -ENOMEM;
	free(m->st->login_server);
	m->st->login_server = strdup(m->o.login_server);
	if (m->o.hostname && state_set_prefs(m->st, m->o.hostname, m->st->tags, m->st->ntags, m->st->routes, m->st->nroutes))
		return -ENOMEM;
	join_retry = loop_timer_new(m->loop, on_join_retry, m);
	if (!m->st->login_server || !join_retry || ensure_client(m))
		return -ENOMEM;
	log_info("joining the tailnet", "server=%s", m->st->login_server);
	return send_register_cb(m, join_key, auto_join_done);
}

/* ---- health and metrics ---- */

/* Ready: logged in, up, and holding a netmap, so a node counts only once it
 * can reach its peers; it stays ready on its last netmap while the
 * coordination server is away, because it keeps forwarding. */
static void h_readyz(struct httpd_req *req, void *arg)
{
	struct mesh *m = arg;
	const char *state = backend_state(m);

	if (strcmp(state, "Running") == 0)
		httpd_respond_text(req, 200, "ok\n");
	else
		httpd_respond_text(req, 503, "%s%s%s\n", state, m->health[0] ? ": " : "", m->health);
}

static double logged_in_value(void *arg)
{
	struct mesh *m = arg;

	return state_logged_in(m->st) ? 1 : 0;
}

static double connected_value(void *arg)
{
	struct mesh *m = arg;

	return m->map_up ? 1 : 0;
}

static double health_value(void *arg)
{
	struct mesh *m = arg;

	return m->health[0] ? 1 : 0;
}

static int serve_http(struct mesh *m)
{
	struct metrics *reg;
	int r = health_new(&m->http, m->loop, m->o.http_listen, m->engine, h_readyz, m);

	if (r)
		return r;
	reg = health_metrics(m->http);
	if (!metrics_gauge_func_new(reg, "knitd_logged_in", "1 once this node has joined a tailnet.", logged_in_value, m) ||
	    !metrics_gauge_func_new(reg, "knitd_coordination_connected",
				    "1 while the map stream from the coordination server is up.", connected_value, m) ||
	    !metrics_gauge_func_new(reg, "knitd_health_problem", "1 while knit status reports a health problem.",
				    health_value, m))
		return -ENOMEM;
	log_info("serving health and metrics", "listen=%s port=%u", m->o.http_listen, health_port(m->http));
	return 0;
}

/* ---- lifecycle ---- */

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
		"  --socket PATH       local API socket (default " LOCALAPI_SOCKET_DEFAULT ")\n"
		"  --tun NAME          TUN device to create (default knit0)\n"
		"  --port N            WireGuard UDP port (default 41641; 0 picks one)\n"
		"  --uapi-dir DIR      also serve wg(8)'s UAPI socket DIR/<tun>.sock\n"
		"                      (/var/run/wireguard makes `wg show knit0` work)\n"
		"  --http-listen ADDR  serve /healthz, /readyz (200 once connected to the\n"
		"                      tailnet) and Prometheus /metrics on ADDR, e.g.\n"
		"                      127.0.0.1:9102 or [::]:9102 (default: not served)\n"
		"  --workers N         crypto worker threads (default: one per CPU, none on\n"
		"                      one or two CPUs: the readers seal and open)\n"
		"  --log-level LEVEL   debug, info, warn, error (default info)\n"
		"  -h, --help          show this help\n"
		"\n"
		"SIGTERM/SIGINT stop it cleanly: the TUN device and the socket are removed,\n"
		"the state is saved.\n");
}

static int parse_args(int argc, char **argv, struct options *o, char *state_buf, size_t state_len)
{
	enum { STATE = 256, STATE_DIR, SOCKET, TUN, PORT, UAPI_DIR, WORKERS, LOG_LEVEL, LOGIN, AUTHKEY_FILE, HOSTNAME,
	       HTTP_LISTEN };
	static const struct option longopts[] = {
		{ "state", required_argument, NULL, STATE },
		{ "state-dir", required_argument, NULL, STATE_DIR },
		{ "socket", required_argument, NULL, SOCKET },
		{ "tun", required_argument, NULL, TUN },
		{ "port", required_argument, NULL, PORT },
		{ "uapi-dir", required_argument, NULL, UAPI_DIR },
		{ "workers", required_argument, NULL, WORKERS },
		{ "log-level", required_argument, NULL, LOG_LEVEL },
		{ "login-server", required_argument, NULL, LOGIN },
		{ "authkey-file", required_argument, NULL, AUTHKEY_FILE },
		{ "hostname", required_argument, NULL, HOSTNAME },
		{ "http-listen", required_argument, NULL, HTTP_LISTEN },
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

static void on_signal(struct loop *loop, int signo, void *arg)
{
	struct mesh *m = arg;

	log_info("shutting down", "signal=%d", signo);
	m->exit_code = 0;
	loop_stop(loop);
}

static void on_tun_down(void *arg, struct engine *e)
{
	struct mesh *m = arg;

	log_error("the TUN device went away; exiting", "dev=%s", engine_ifname(e));
	m->exit_code = 1;
	loop_stop(m->loop);
}

int mesh_main(int argc, char **argv)
{
	static struct mesh mesh;
	struct mesh *m = &mesh;
	char state_buf[4096], err[512];
	struct hub_config hc = { 0 };
	struct engine_config ec = { 0 };
	struct localapi_opts lo = { 0 };
	enum log_level level = LOG_INFO;
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

	r = state_load(m->o.state_path, &m->st, err, sizeof(err));
	if (r == -ENOENT) {
		r = state_new(&m->st);
		if (!r)
			log_info("new machine: made fresh keys", "state=%s", m->o.state_path);
	}
	if (r) {
		log_error("cannot use the state file", "path=%s error=\"%s\"", m->o.state_path, r == -ENOMEM ? "out of memory" : err);
		return 1;
	}
	if (aead_init_env())
		goto out;
	m->loop = loop_new();
	m->routes = strmap_new();
	m->addrs = strmap_new();
	if (!m->loop || !m->routes || !m->addrs)
		goto out;
	/* Before any thread starts, so they all inherit the blocked mask. */
	signal(SIGPIPE, SIG_IGN);
	loop_signal_add(m->loop, SIGTERM, on_signal, m);
	loop_signal_add(m->loop, SIGINT, on_signal, m);
	m->save_timer = loop_timer_new(m->loop, on_save, m);
	m->endpoint_timer = loop_timer_new(m->loop, on_endpoint_timer, m);
	if (!m->save_timer || !m->endpoint_timer)
		goto out;

	hc.workers = m->o.workers >= 0 ? (unsigned)m->o.workers : hub_default_workers();
	hc.readers_help = true;
	hc.port = (uint16_t)m->o.port;
	if ((r = hub_new(&m->hub, m->loop, &hc))) {
		log_error("cannot open the WireGuard UDP port", "port=%d err=%d", m->o.port, r);
		goto out;
	}
	ec.ifname = m->o.tun;
	ec.on_down = on_tun_down;
	ec.arg = m;
	if ((r = engine_new(&m->engine, m->hub, &ec))) {
		log_error("cannot create the TUN device", "dev=%s err=%d", m->o.tun, r);
		goto out;
	}
	engine_set_private_key(m->engine, m->st->node_key);
	/* Mesh mode owns its device: up, so addresses and routes can go on it. */
	if ((r = iface_link_up(engine_ifname(m->engine)))) {
		log_error("cannot bring the TUN device up", "dev=%s err=%d", engine_ifname(m->engine), r);
		goto out;
	}
	if (m->o.uapi_dir &&
	    (r = uapi_server_open(&m->uapi, m->loop, m->o.uapi_dir, engine_ifname(m->engine), &engine_uapi_ops, m->engine)))
		log_warn("cannot serve the WireGuard UAPI socket", "dir=%s err=%d", m->o.uapi_dir, r);

	/* The last netmap: forwarding resumes before the control plane answers. */
	if (state_logged_in(m->st) && state_get_netmap(m->st, &m->nm, err, sizeof(err))) {
		m->has_nm = true;
		apply_netmap(m);
		/* Peers still hold sessions with our previous process, which we no
		 * longer have: start fresh ones now rather than wait for their
		 * timers to notice (about 15 s). */
		for (size_t i = 0; i < m->nm.npeers; i++) {
			struct peer *p = engine_peer_lookup(m->engine, m->nm.peers[i].node_key);
			if (p)
				send_initiation(p, false);
		}
		log_info("forwarding on the saved netmap", "peers=%zu", m->nm.npeers);
	}
	if (m->o.http_listen && (r = serve_http(m))) {
		log_error("cannot serve health and metrics", "listen=%s err=%d", m->o.http_listen, r);
		goto out;
	}
	lo.socket_path = m->o.socket_path;
	lo.version = KNIT_VERSION;
	{
		static struct localapi_ops ops;
		ops = api_ops; /* the ops table is const; arg is this mesh */
		ops.arg = m;
		lo.ops = &ops;
	}
	if ((r = localapi_new(m->loop, &lo, &m->api))) {
		log_error("cannot serve the local API", "socket=%s err=%d%s", m->o.socket_path, r,
			  r == -EADDRINUSE ? " (another knitd is running)" :
			  r == -EEXIST	   ? " (not a socket: refusing to replace it)" : "");
		goto out;
	}
	/* Logged in: come back (the server knows this machine key). */
	if (state_logged_in(m->st) && m->st->login_server && ensure_client(m) == 0) {
		m->running = true;
		start_map(m);
	} else if (!state_logged_in(m->st) && m->o.login_server) {
		r = auto_join(m);
		if (r)
			goto out;
	}
	loop_timer_arm(m->endpoint_timer, ENDPOINT_REFRESH_MS);
	log_info("ready", "dev=%s port=%u socket=%s state=%s", engine_ifname(m->engine), hub_port(m->hub),
		 m->o.socket_path, backend_state(m));
	r = loop_run(m->loop);
	if (r < 0)
		m->exit_code = 1;
	else if (m->exit_code != 1)
		m->exit_code = 0;
	save_now(m);
out:
	while (m->pings)
		ping_free(m->pings);
	loop_timer_free(join_retry);
	if (join_key) {
		sodium_memzero(join_key, strlen(join_key));
		free(join_key);
	}
	control_client_free(m->ctl);
	health_free(m->http);
	localapi_free(m->api);
	uapi_server_close(m->uapi);
	if (m->has_nm)
		netmap_free(&m->nm);
	drop_pending(m);
	engine_free(m->engine);
	hub_free(m->hub);
	loop_timer_free(m->save_timer);
	loop_timer_free(m->endpoint_timer);
	strmap_free(m->routes);
	strmap_free(m->addrs);
	state_free(m->st);
	loop_free(m->loop);
	aead_thread_cleanup();
	return m->exit_code;
}
