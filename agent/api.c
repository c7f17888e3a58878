#include "api.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "control/channel.h"
#include "control/messages.h"
#include "identity.h"
#include "localapi.h"
#include "net/endpoint.h"
#include "paths.h"
#include "relays.h"
#include "state.h"
#include "wg/engine.h"

/* A localapi_peer from a netmap node (strings point into n or the view). */
struct peer_view {
	char key[80];
	char addr_text[8][64];
	const char *addrs[8];
	char endpoint[80];
	struct localapi_peer p;
	char path_addr[80];
};

/* The path packets to n take now: what paths selected, else the endpoint
 * the engine holds (the netmap's; WireGuard roams). */
static void view_path(struct identity *id, const struct netmap_node *n, const struct engine_peer_stats *ps,
		      struct peer_view *v)
{
	struct paths_info pi;
	struct localapi_path *lp = &v->p.path;

	lp->latency_ms = -1;
	/* A netmap endpoint still being probed is no measured path: "relay"
	 * when packets go there too, else the engine's "endpoint". */
	if (identity_paths(id) && paths_info(identity_paths(id), n->node_key, &pi) &&
	    (pi.kind == PATHS_RELAY || pi.relay_too || (pi.kind == PATHS_DIRECT && pi.measured))) {
		if (pi.kind == PATHS_RELAY || pi.relay_too) {
			lp->kind = "relay";
			lp->region = pi.region;
			lp->code = relays_region_code(identity_relays(id), pi.region);
			v->p.endpoint = NULL;
			v->p.relay = pi.region;
			return;
		}
		lp->kind = "direct";
		lp->latency_ms = pi.latency_ms;
		if (endpoint_format(&pi.addr, v->path_addr, sizeof(v->path_addr)) > 0)
			lp->addr = v->path_addr;
		v->p.endpoint = lp->addr;
		return;
	}
	if (ps->has_endpoint && v->p.endpoint) {
		lp->kind = "endpoint";
		lp->addr = v->p.endpoint;
	}
}

static void view_node(struct identity *id, const struct netmap_node *n, bool self, struct peer_view *v)
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
	v->p.user = n->user;
	v->p.online = self ? identity_connected(id) : n->online;
	v->p.relay = n->relay;
	if (!self && engine_peer_stats(identity_engine(id), n->node_key, &ps) == 0) {
		if (ps.has_endpoint && endpoint_format(&ps.endpoint, v->endpoint, sizeof(v->endpoint)) > 0)
			v->p.endpoint = v->endpoint;
		v->p.last_handshake = ps.last_handshake_ns / 1000000000;
		view_path(id, n, &ps, v);
		v->p.rx_bytes = ps.rx_bytes;
		v->p.tx_bytes = ps.tx_bytes;
	}
}

static int op_status(void *arg, struct localapi_writer *w)
{
	struct identity *id = arg;
	const struct state *st = identity_state(id);
	const struct netmap *nm = identity_netmap(id);
	char ck[80];
	struct localapi_status s = {
		.backend_state = identity_backend_state(id),
		.login_server = st->login_server,
		.dns_suffix = nm ? nm->dns_suffix : st->device.dns_suffix,
		.control_key = NULL,
		.health = identity_health(id),
		.relay_map = nm ? nm->relay_map : NULL,
		.has_relay_map = nm != NULL,
		.key_expiry = identity_key_expiry(id),
	};
	struct peer_view v;
	int err;

	if (st->has_control_key) {
		channel_key_format(st->control_key, "ctrlkey:", ck, sizeof(ck));
		s.control_key = ck;
	}
	if ((err = localapi_write_status(w, &s)))
		return err;
	if (nm) {
		view_node(id, &nm->self, true, &v);
		if ((err = localapi_write_self(w, &v.p)))
			return err;
		for (size_t i = 0; i < nm->npeers; i++) {
			view_node(id, &nm->peers[i], false, &v);
			if ((err = localapi_write_peer(w, &v.p)))
				return err;
		}
	} else if (state_logged_in(st)) {
		struct netmap_node self = { .name = st->device.name, .addresses = st->device.addresses,
					    .naddresses = st->device.naddresses };
		crypto_scalarmult_base(self.node_key, st->node_key);
		view_node(id, &self, true, &v);
		return localapi_write_self(w, &v.p);
	}
	return 0;
}

static int op_whois(void *arg, const char *ip, struct localapi_writer *w)
{
	struct identity *id = arg;
	bool self;
	const struct netmap_node *n = identity_find_node(id, ip, &self);
	struct peer_view v;

	if (!n)
		return -ENOENT;
	view_node(id, n, self, &v);
	return localapi_write_peer(w, &v.p);
}

static void op_up(void *arg, const struct localapi_up *req, struct localapi_reply *reply)
{
	identity_up(arg, req, reply);
}

static void op_down(void *arg, struct localapi_reply *reply)
{
	identity_down(arg, reply);
}

static void op_logout(void *arg, struct localapi_reply *reply)
{
	identity_logout(arg, reply);
}

static void op_ping(void *arg, const char *peer, bool icmp, struct localapi_reply *reply)
{
	identity_ping(arg, peer, icmp, reply);
}

struct localapi_ops api_ops(struct identity *id)
{
	return (struct localapi_ops){
		.status = op_status,
		.whois = op_whois,
		.up = op_up,
		.down = op_down,
		.logout = op_logout,
		.ping = op_ping,
		.arg = id,
	};
}
