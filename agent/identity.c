#include "identity.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "announce.h"
#include "applied.h"
#include "datagrams.h"
#include "control/channel.h"
#include "control/ctrlpin.h"
#include "control/messages.h"
#include "enforce.h"
#include "json.h"
#include "keyexpiry.h"
#include "keyrenew.h"
#include "podtoken.h"
#include "localapi.h"
#include "log.h"
#include "loop.h"
#include "net/endpoint.h"
#include "net/iface.h"
#include "net/netns.h"
#include "netstun.h"
#include "paths.h"
#include "ping.h"
#include "relays.h"
#include "policy/filter.h"
#include "routes.h"
#include "state.h"
#include "wg/engine.h"
#include "wg/hub.h"
#include "wg/uapi_server.h"

#define SAVE_DELAY_MS 2000 /* netmap deltas are saved at most this often */

struct identity {
	struct loop *loop;
	struct hub *hub;
	struct engine *engine;
	struct uapi_server *uapi;
	struct state *st;
	char *state_path; /* NULL: not saved */
	struct control_client *ctl;
	/* Advertised besides the state's routes (identity_set_extra_routes). */
	struct netmap_prefix extra_routes[IDENTITY_MAX_EXTRA_ROUTES];
	size_t nextra_routes;
	void (*on_down)(void *arg, struct identity *id);
	bool (*is_identity_device)(void *arg, const char *ifname);
	void *arg;

	struct netmap nm;
	bool has_nm;
	/* A full netmap that arrives in pieces ("more":true) builds up here and
	 * replaces nm only once complete: forwarding never sees half of it. */
	struct netmap pending;
	bool has_pending;
	struct applied *applied; /* what of nm the engine and the TUN hold */
	struct routes *routes; /* host routing (knit's table); NULL: main table, by op */
	struct json *filter_applied; /* the packetFilter in force (a copy; NULL: allow-all) */
	bool filter_set; /* filter_applied says what the engine has */
	struct loop_timer *expire_timer; /* connection-tracking expiry */
	unsigned long peers_skipped; /* malformed peers and removals the codec left out */
	bool running; /* wants the map stream (up, not down) */
	bool map_up;
	char health[256];
	bool control_key_new;

	struct loop_timer *save_timer;
	struct announce *announce; /* where peers reach us, told to the server */
	struct datagrams *datagrams; /* path discovery (NULL: none) */
	struct netstun *netstun;
	struct relays *relays;
	struct paths *paths;
	struct localapi_reply *pending_up;
	identity_register_fn register_done; /* who else waits for a registration */
	void *register_arg;
	struct ping *pings;
	struct control_call *pod_call; /* register_pod, on the sponsor's client */
	int nsfd; /* the namespace the device lives in; -1: ours */
	struct keyrenew *keyrenew; /* node key renewal */
	char dev[IFNAMSIZ]; /* its name there */
	const char *pod_token_file; /* sent in every register (podtoken.h); NULL: none */
};

/* ---- state ---- */

static void save_now(struct identity *id)
{
	char err[256];

	if (!id->state_path)
		return;
	if (id->has_nm && state_set_netmap(id->st, &id->nm))
		log_warn("cannot keep the netmap in the state (out of memory)");
	if (state_save(id->st, id->state_path, err, sizeof(err)))
		log_error("cannot save the state file", "path=%s error=\"%s\"", id->state_path, err);
	/* id->nm is the netmap; the JSON copy was for the file. */
	if (id->has_nm)
		state_forget_netmap(id->st);
}

static void on_save(struct loop *loop, struct loop_timer *t, void *arg)
{
	save_now(arg);
}

static void save_soon(struct identity *id)
{
	if (!loop_timer_armed(id->save_timer))
		loop_timer_arm(id->save_timer, SAVE_DELAY_MS);
}

/* ---- the device's addresses and routes, in its namespace ---- */

enum link_op_kind { LINK_ADDR_ADD, LINK_ADDR_DEL, LINK_ROUTE_ADD, LINK_ROUTE_DEL, LINK_UP };

struct link_op {
	enum link_op_kind kind;
	const char *dev, *cidr;
};

static int do_link_op(void *arg)
{
	const struct link_op *o = arg;

	switch (o->kind) {
	case LINK_ADDR_ADD: return iface_addr_add(o->dev, o->cidr);
	case LINK_ADDR_DEL: return iface_addr_del(o->dev, o->cidr);
	case LINK_ROUTE_ADD: return iface_route_add(o->dev, o->cidr);
	case LINK_ROUTE_DEL: return iface_route_del(o->dev, o->cidr);
	case LINK_UP: return iface_link_up(o->dev);
	}
	return -EINVAL;
}

static int link_op(struct identity *id, enum link_op_kind kind, const char *cidr)
{
	struct link_op o = { .kind = kind, .dev = id->dev, .cidr = cidr };

	return id->nsfd >= 0 ? netns_run(id->nsfd, do_link_op, &o) : do_link_op(&o);
}

/* ---- applying a netmap: run a plan against the engine and the TUN ---- */

static void run_op(struct identity *id, struct applied_op *op)
{
	const char *dev = id->dev;
	struct engine_peer_stats ps;
	char hex[17];

	switch (op->kind) {
	case APPLIED_PEER_REMOVE:
		op->err = engine_peer_remove(id->engine, op->peer.public_key);
		if (op->err == -ENOENT)
			op->err = 0;
		break;
	case APPLIED_PEER_SET:
		/* The endpoint the server saw announced; once a handshake works the
		 * engine roams on its own, so only a peer without one gets it. */
		if ((op->peer.flags & UAPI_PEER_HAS_ENDPOINT) &&
		    ((engine_peer_stats(id->engine, op->peer.public_key, &ps) == 0 && ps.has_endpoint && ps.has_session) ||
		     (id->paths && paths_manages(id->paths, op->peer.public_key))))
			op->peer.flags &= ~(unsigned)UAPI_PEER_HAS_ENDPOINT;
		if (!op->peer.flags)
			break;
		op->err = engine_peer_set(id->engine, &op->peer);
		if (op->err) {
			sodium_bin2hex(hex, sizeof(hex), op->peer.public_key, 8);
			log_warn("cannot configure peer", "peer=%s err=%d", hex, op->err);
		}
		break;
	case APPLIED_ADDR_ADD:
	case APPLIED_ADDR_DEL:
		op->err = link_op(id, op->kind == APPLIED_ADDR_ADD ? LINK_ADDR_ADD : LINK_ADDR_DEL, op->cidr);
		if (op->err && op->kind == APPLIED_ADDR_ADD)
			log_warn("cannot add address", "dev=%s cidr=%s err=%d", dev, op->cidr, op->err);
		break;
	case APPLIED_ROUTE_ADD:
	case APPLIED_ROUTE_DEL:
		if (id->routes)
			break; /* the whole table follows the netmap in sync_routes() */
		op->err = link_op(id, op->kind == APPLIED_ROUTE_ADD ? LINK_ROUTE_ADD : LINK_ROUTE_DEL, op->cidr);
		if (op->err && op->kind == APPLIED_ROUTE_ADD)
			log_warn("cannot add route", "dev=%s cidr=%s err=%d", dev, op->cidr, op->err);
		break;
	}
}

/* Out of memory half way through a commit: start from nothing. */
static void reset_applied(struct identity *id)
{
	struct applied_plan plan;

	log_error("out of memory applying the netmap: clearing the engine and the device");
	if (applied_plan_clear(id->applied, &plan) == 0) {
		for (size_t i = 0; i < plan.nops; i++)
			run_op(id, &plan.ops[i]);
		applied_plan_free(&plan);
	}
	engine_peers_clear(id->engine);
	applied_reset(id->applied);
}

static void sync_filter(struct identity *id)
{
	enforce_sync(engine_filter(id->engine), id->has_nm ? &id->nm : NULL, &id->filter_applied, &id->filter_set);
}

static void on_expire(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct identity *id = arg;

	if (engine_filter(id->engine))
		filter_expire(engine_filter(id->engine), loop_mono_ms());
	loop_timer_arm(t, 1000);
}

/* Path discovery follows the netmap: the relay map, the peers. */
static void sync_paths(struct identity *id)
{
	const struct netmap *nm = id->has_nm ? &id->nm : NULL;

	if (!id->paths)
		return;
	relays_set_map(id->relays, nm ? nm->relay_map : NULL);
	if (nm && nm->relay_map)
		netstun_set_relaymap(id->netstun, nm->relay_map);
	paths_sync(id->paths, nm);
}

/* knit's routing table from the netmap in force (or nothing without one). */
static void sync_routes(struct identity *id)
{
	int err;

	sync_filter(id);
	sync_paths(id);
	if (!id->routes)
		return;
	err = routes_sync(id->routes, id->has_nm ? &id->nm : NULL, id->st->login_server);
	if (err)
		log_warn("routes not all in place", "dev=%s err=%d", engine_ifname(id->engine), err);
}

static int run_plan(struct identity *id, struct applied_plan *plan)
{
	int err;

	for (size_t i = 0; i < plan->nops; i++)
		run_op(id, &plan->ops[i]);
	err = applied_commit(id->applied, plan);
	applied_plan_free(plan);
	if (err)
		reset_applied(id);
	return err;
}

/* Peers the engine holds that the netmap does not (set through wg(8)'s
 * UAPI, say): a full netmap says who the peers are. */
static void remove_strangers(struct identity *id)
{
	struct uapi_device snapshot = { 0 };

	if (engine_get(id->engine, &snapshot))
		return;
	for (size_t i = 0; i < snapshot.n_peers; i++)
		if (!applied_has_peer(id->applied, snapshot.peers[i].public_key))
			engine_peer_remove(id->engine, snapshot.peers[i].public_key);
	uapi_device_release(&snapshot);
}

static int apply_full(struct identity *id)
{
	struct applied_plan plan;
	int err = applied_plan_netmap(id->applied, &id->nm, &plan);

	if (!err)
		err = run_plan(id, &plan);
	if (!err)
		remove_strangers(id);
	sync_routes(id);
	return err;
}

static void drop_pending(struct identity *id)
{
	if (id->has_pending)
		netmap_free(&id->pending);
	id->has_pending = false;
}

static void clear_netmap(struct identity *id)
{
	struct applied_plan plan;

	if (applied_plan_clear(id->applied, &plan) == 0)
		run_plan(id, &plan);
	engine_peers_clear(id->engine);
	if (id->has_nm)
		netmap_free(&id->nm);
	id->has_nm = false;
	drop_pending(id);
	sync_routes(id);
}

int identity_apply_netmap(struct identity *id, struct netmap *nm)
{
	if (id->has_nm)
		netmap_free(&id->nm);
	id->nm = *nm;
	id->has_nm = true;
	memset(nm, 0, sizeof(*nm));
	return apply_full(id);
}

int identity_apply_delta(struct identity *id, struct netmap_delta *d)
{
	struct applied_plan plan;
	char err[256];
	int r;

	if (!id->has_nm)
		return -ENOENT;
	/* Planned against what is applied before the netmap takes d. */
	if ((r = applied_plan_delta(id->applied, d, &plan)))
		return r;
	if ((r = netmap_apply_delta(&id->nm, d, err, sizeof(err)))) {
		log_warn("netmap delta does not apply", "error=\"%s\"", err);
		applied_plan_free(&plan);
		return r;
	}
	r = run_plan(id, &plan);
	sync_routes(id);
	return r;
}

/* ---- endpoints: where peers can reach us ---- */

static bool is_identity_device(const struct identity *id, const char *ifname)
{
	if (id->is_identity_device)
		return id->is_identity_device(id->arg, ifname);
	return strcmp(ifname, engine_ifname(id->engine)) == 0;
}

static bool skip_device(void *arg, const char *ifname)
{
	return is_identity_device(arg, ifname);
}

static void start_map(struct identity *id)
{
	struct json *req = announce_map_request(id->announce);

	if (!req || control_client_map_start(id->ctl, req))
		log_error("cannot start the map stream");
	json_free(req);
}

static void update_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	if (err)
		log_warn("endpoint update not delivered", "why=\"%s\"", why ? why : "");
}

/* announce_config.send: soft state goes out while the identity runs. */
static bool send_update(void *arg, const struct json *req)
{
	struct identity *id = arg;

	return id->ctl && id->running && control_client_call(id->ctl, req, update_done, id, NULL) == 0;
}

/* ---- the control connection ---- */

static bool on_control_key(struct control_client *c, const uint8_t key[CHANNEL_KEY_LEN], void *arg)
{
	struct identity *id = arg;
	char text[80];

	/* Trust on first use: pinned from now on, and shown to the user. */
	channel_key_format(key, "ctrlkey:", text, sizeof(text));
	memcpy(id->st->control_key, key, 32);
	id->st->has_control_key = true;
	id->control_key_new = true;
	save_now(id);
	log_info("pinned the coordination server's key (trust on first use)", "key=%s", text);
	return true;
}

/* The node key changed: relays authenticate with it, pings name it. */
static void new_node_key(struct identity *id)
{
	uint8_t pub[32];

	if (!id->paths)
		return;
	crypto_scalarmult_base(pub, id->st->node_key);
	relays_set_key(id->relays, id->st->node_key);
	paths_set_node_key(id->paths, pub);
}

static void logged_out(struct identity *id, const char *why)
{
	log_warn("this device is no longer registered", "why=\"%s\"", why);
	id->running = false;
	if (id->keyrenew)
		keyrenew_stop(id->keyrenew);
	if (id->ctl)
		control_client_map_stop(id->ctl);
	clear_netmap(id);
	state_logout(id->st);
	engine_set_private_key(id->engine, id->st->node_key);
	new_node_key(id);
	snprintf(id->health, sizeof(id->health), "logged out: %s", why);
	save_now(id);
}

/* A full netmap (maybe one piece of it) or a delta from the map stream.
 * false: reconnect, and the next stream starts with a full netmap. */
static bool on_netmap_record(struct identity *id, const struct json *rec, bool full)
{
	char err[256];
	int r;

	if (full) {
		struct netmap nm;
		if (!netmap_from_json(rec, &nm, err, sizeof(err))) {
			log_warn("unusable netmap", "error=\"%s\"", err);
			return false;
		}
		if (nm.skipped) {
			id->peers_skipped += nm.skipped;
			log_warn("netmap: bad peers skipped, the rest applied", "count=%zu first=\"%s\"",
				 (size_t)nm.skipped, nm.skipped_why);
		}
		drop_pending(id);
		id->pending = nm;
		id->has_pending = true;
	} else {
		struct netmap_delta d;
		if ((!id->has_pending && !id->has_nm) || !netmap_delta_from_json(rec, &d, err, sizeof(err))) {
			log_warn("unusable netmap delta", "error=\"%s\"", id->has_nm || id->has_pending ? err : "no netmap yet");
			drop_pending(id);
			return false;
		}
		if (d.skipped) {
			id->peers_skipped += d.skipped;
			log_warn("netmap delta: bad peers skipped, the rest applied", "count=%zu first=\"%s\"",
				 (size_t)d.skipped, d.skipped_why);
		}
		if (id->has_pending) {
			/* Still assembling: nothing is applied yet. */
			r = netmap_apply_delta(&id->pending, &d, err, sizeof(err));
			if (r)
				log_warn("netmap delta does not apply", "error=\"%s\"", err);
		} else {
			r = identity_apply_delta(id, &d);
		}
		netmap_delta_free(&d);
		if (r) {
			drop_pending(id);
			return false;
		}
	}
	if (id->has_pending) {
		/* A netmap in pieces: the last one says "more":false. */
		if (json_bool(json_get(rec, "more"), false))
			return true;
		id->has_pending = false;
		if (identity_apply_netmap(id, &id->pending))
			return false;
	}
	save_soon(id);
	if (id->has_nm)
		keyrenew_learn(id->keyrenew, &id->nm);
	log_debug("netmap applied", "seq=%llu peers=%zu", (unsigned long long)id->nm.seq, id->nm.npeers);
	return true;
}

/* The control key set a map record carries (control/ctrlpin.h): the next
 * key saved, the pin switched once the server serves it. Saved at once:
 * a pin lost to a crash could lock this node out. */
static void learn_control_keys(struct identity *id, struct control_client *c, const struct json *rec)
{
	struct ctrlpin pin = { .has_next = id->st->has_next_control_key };
	struct ctrlpin_keys keys;
	uint8_t session_key[CHANNEL_KEY_LEN];
	char err[160], text[MESSAGES_KEY_TEXT_LEN];
	unsigned changed;

	if (!id->st->has_control_key || !control_client_map_key(c, session_key))
		return;
	if (!ctrlpin_keys_from_json(rec, &keys, err, sizeof(err))) {
		log_warn("map record: control keys ignored", "error=\"%s\"", err);
		return;
	}
	memcpy(pin.key, id->st->control_key, 32);
	memcpy(pin.next, id->st->next_control_key, 32);
	changed = ctrlpin_learn(&pin, session_key, &keys);
	if (changed & CTRLPIN_UNTRUSTED) {
		log_warn("map record: control keys from a session of a key not pinned; ignored");
		return;
	}
	if (!changed)
		return;
	memcpy(id->st->control_key, pin.key, 32);
	memcpy(id->st->next_control_key, pin.next, 32);
	id->st->has_next_control_key = pin.has_next;
	if (changed & CTRLPIN_NEXT_SAVED) {
		channel_key_format(pin.next, "ctrlkey:", text, sizeof(text));
		log_info("control key rotation: next key saved", "next=%s", pin.has_next ? text : "none");
	}
	if (changed & CTRLPIN_SWITCHED) {
		channel_key_format(pin.key, "ctrlkey:", text, sizeof(text));
		log_info("control key rotation: now pinning the server's new key", "key=%s", text);
	}
	control_client_set_keys(c, pin.key, pin.has_next ? pin.next : NULL);
	save_now(id);
	sodium_memzero(&pin, sizeof(pin));
}

static bool on_record(struct control_client *c, const struct json *rec, void *arg)
{
	struct identity *id = arg;
	const char *type = messages_type(rec), *code, *msg;

	if (messages_error(rec, &code, &msg)) {
		if (!strcmp(code, "DeviceDeleted") || !strcmp(code, "NotRegistered") || !strcmp(code, "KeyExpired")) {
			logged_out(id, msg);
			return false;
		}
		if (!strcmp(code, "TailnetChanged")) {
			/* The old tailnet's peers, routes and deltas are not ours any
			 * more: drop them; the next stream brings the new netmap. */
			log_warn("this device moved to another tailnet; dropping the old netmap", "why=\"%s\"", msg);
			clear_netmap(id);
		}
		snprintf(id->health, sizeof(id->health), "coordination server: %s", msg);
		return false;
	}
	if (type && (!strcmp(type, "full") || !strcmp(type, "delta"))) {
		learn_control_keys(id, c, rec);
		return on_netmap_record(id, rec, !strcmp(type, "full"));
	}
	return true; /* keepalive */
}

static void on_map_state(struct control_client *c, bool up, int err, const char *why, uint64_t retry_ms, void *arg)
{
	struct identity *id = arg;

	id->map_up = up;
	if (!up)
		drop_pending(id); /* the next stream starts with a full netmap */
	if (up) {
		id->health[0] = '\0';
		log_info("connected to the coordination server");
	} else if (id->running) {
		/* Forwarding goes on with the last netmap. */
		snprintf(id->health, sizeof(id->health), "coordination server unreachable (%s); retrying in %llus, "
			 "forwarding on the last netmap", why ? why : "?", (unsigned long long)(retry_ms / 1000));
		log_warn("lost the coordination server", "why=\"%s\" retry_ms=%llu", why ? why : "?",
			 (unsigned long long)retry_ms);
	}
}

static int ensure_client(struct identity *id)
{
	struct control_client_opts co = {
		.server_url = id->st->login_server,
		.machine_priv = id->st->machine_key,
		.control_key = id->st->has_control_key ? id->st->control_key : NULL,
		.on_control_key = on_control_key,
		.on_record = on_record,
		.on_map_state = on_map_state,
		.arg = id,
	};

	int err;

	if (id->ctl)
		return 0;
	if (!id->st->login_server)
		return -EINVAL;
	err = control_client_new(id->loop, &co, &id->ctl);
	if (!err && id->st->has_control_key)
		control_client_set_keys(id->ctl, id->st->control_key,
					id->st->has_next_control_key ? id->st->next_control_key : NULL);
	return err;
}

/* ---- registering ---- */

static void reply_registered(struct identity *id, struct localapi_reply *reply)
{
	const char *addrs[8];
	char text[8][64], ck[80];
	size_t n = id->st->device.naddresses < 8 ? id->st->device.naddresses : 8;

	for (size_t i = 0; i < n; i++) {
		netmap_prefix_format(&id->st->device.addresses[i], true, text[i], sizeof(text[i]));
		addrs[i] = text[i];
	}
	channel_key_format(id->st->control_key, "ctrlkey:", ck, sizeof(ck));
	struct localapi_up_result u = {
		.backend_state = identity_backend_state(id),
		.device = id->st->device.device,
		.name = id->st->device.name,
		.addresses = addrs,
		.naddresses = n,
		.control_key = ck,
		.control_key_new = id->control_key_new,
	};
	localapi_reply_up(reply, &u);
}

static void handle_register(struct identity *id, int err, const struct json *resp, const char *why)
{
	struct localapi_reply *reply = id->pending_up;
	struct register_response r;
	const char *code, *msg;
	char perr[256];

	id->pending_up = NULL;
	if (err) {
		if (reply)
			localapi_reply_error(reply, 502, err == -EKEYREJECTED ? "ControlKeyMismatch" : "ControlUnreachable",
					     "cannot talk to the coordination server at %s: %s%s", id->st->login_server,
					     why ? why : strerror(-err),
					     err == -EKEYREJECTED ? " (it does not hold the pinned key: pass --server-key if it changed)" : "");
		return;
	}
	if (messages_error(resp, &code, &msg)) {
		if (reply)
			localapi_reply_error(reply, 403, code, "%s", msg);
		if (!strcmp(code, "NotRegistered"))
			logged_out(id, msg);
		return;
	}
	if (!register_response_from_json(resp, &r, perr, sizeof(perr))) {
		if (reply)
			localapi_reply_error(reply, 502, "BadResponse", "the coordination server answered nonsense: %s", perr);
		return;
	}
	state_set_device(id->st, &r);
	register_response_free(&r);
	id->st->key_issued = time(NULL);
	keyrenew_registered(id->keyrenew);
	id->running = true;
	save_now(id);
	start_map(id);
	keyrenew_schedule(id->keyrenew);
	log_info("registered", "device=%s", id->st->device.device);
	if (reply)
		reply_registered(id, reply);
	id->control_key_new = false;
}

static void register_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	struct identity *id = arg;
	identity_register_fn done = id->register_done;

	id->pod_call = NULL;
	handle_register(id, err, resp, why);
	id->register_done = NULL;
	if (done)
		done(id->register_arg, err, resp, why);
}

static bool same_prefix(const struct netmap_prefix *a, const struct netmap_prefix *b)
{
	return a->family == b->family && a->bits == b->bits && !memcmp(a->addr, b->addr, sizeof(a->addr));
}

/* The state's routes and the extra ones, each once; malloc'd. */
static struct netmap_prefix *merged_routes(const struct identity *id, size_t *n)
{
	struct netmap_prefix *all = calloc(id->st->nroutes + id->nextra_routes, sizeof(*all));

	*n = 0;
	if (!all)
		return NULL;
	for (size_t i = 0; i < id->st->nroutes; i++)
		all[(*n)++] = id->st->routes[i];
	for (size_t i = 0; i < id->nextra_routes; i++) {
		bool have = false;
		for (size_t k = 0; k < id->st->nroutes; k++)
			have |= same_prefix(&id->st->routes[k], &id->extra_routes[i]);
		if (!have)
			all[(*n)++] = id->extra_routes[i];
	}
	return all;
}

int identity_set_extra_routes(struct identity *id, const struct netmap_prefix *routes, size_t n)
{
	if (n > IDENTITY_MAX_EXTRA_ROUTES)
		return -E2BIG;
	memcpy(id->extra_routes, routes, n * sizeof(*routes));
	id->nextra_routes = n;
	return 0;
}

/* The knitd pod's token, read now (the kubelet rotates it). Without it
 * the call still goes: the Device joins, bound to no Node. */
static char *pod_token(struct identity *id)
{
	char *tok = NULL;
	int err;

	if (id->pod_token_file && (err = podtoken_read(id->pod_token_file, &tok)))
		log_warn("cannot read the pod token; registering unbound to a Node (no pod identities)",
			 "path=%s error=\"%s\"", id->pod_token_file, strerror(-err));
	return tok;
}

int identity_register(struct identity *id, const char *auth_key, identity_register_fn done, void *arg)
{
	struct register_request rq = { 0 };
	char host[256] = "";
	struct json *req;
	int err;

	if ((err = ensure_client(id)))
		return err;
	crypto_scalarmult_base(rq.node_key, id->st->node_key);
	crypto_scalarmult_base(rq.disco_key, id->st->disco_key);
	if (!id->st->hostname)
		gethostname(host, sizeof(host) - 1);
	rq.auth_key = (char *)auth_key;
	rq.hostname = id->st->hostname ? id->st->hostname : host;
	rq.tags = id->st->tags;
	rq.ntags = id->st->ntags;
	rq.routes = id->st->routes;
	rq.nroutes = id->st->nroutes;
	if (id->nextra_routes && !(rq.routes = merged_routes(id, &rq.nroutes)))
		return -ENOMEM;
	rq.pod_token = pod_token(id);
	req = register_request_to_json(&rq);
	podtoken_free(rq.pod_token);
	if (rq.routes != id->st->routes)
		free(rq.routes);
	if (!req)
		return -ENOMEM;
	err = control_client_call(id->ctl, req, register_done, id, NULL);
	messages_json_free_secret(req);
	if (!err && done) {
		id->register_done = done;
		id->register_arg = arg;
	}
	return err;
}

/* ---- node key renewal (keyrenew.h) ---- */

static bool renew_running(void *arg)
{
	return ((struct identity *)arg)->running;
}

static struct control_client *renew_client(void *arg)
{
	return ((struct identity *)arg)->ctl;
}

static void renew_renewed(void *arg)
{
	struct identity *id = arg;

	engine_set_private_key(id->engine, id->st->node_key);
	new_node_key(id);
	save_now(id);
}

static void renew_logged_out(void *arg, const char *why)
{
	logged_out(arg, why);
}

static void renew_changed(void *arg)
{
	save_soon(arg);
}

static char *renew_pod_token(void *arg)
{
	return pod_token(arg);
}

static const struct keyrenew_ops renew_ops = {
	.running = renew_running,
	.client = renew_client,
	.renewed = renew_renewed,
	.logged_out = renew_logged_out,
	.changed = renew_changed,
	.pod_token = renew_pod_token,
};

int64_t identity_key_expiry(const struct identity *id)
{
	return state_logged_in(id->st) ? id->st->device.key_expiry : 0;
}

unsigned long identity_key_renewals(const struct identity *id)
{
	return keyrenew_count(id->keyrenew);
}

int identity_set_login(struct identity *id, const char *login_server, const char *hostname)
{
	char *server = strdup(login_server);

	if (!server)
		return -ENOMEM;
	free(id->st->login_server);
	id->st->login_server = server;
	if (hostname &&
	    state_set_prefs(id->st, hostname, id->st->tags, id->st->ntags, id->st->routes, id->st->nroutes))
		return -ENOMEM;
	return 0;
}

int identity_register_pod(struct identity *id, struct identity *sponsor, const struct identity_pod *pod,
			  identity_register_fn done, void *arg)
{
	struct register_request rq = { 0 };
	uint8_t mpub[32];
	char mkey[80];
	struct json *req = NULL;
	int err;

	if (!sponsor->ctl || !state_logged_in(sponsor->st))
		return -ENOTCONN;
	if ((err = ensure_client(id)))
		return err;
	crypto_scalarmult_base(rq.node_key, id->st->node_key);
	crypto_scalarmult_base(rq.disco_key, id->st->disco_key);
	crypto_scalarmult_base(mpub, id->st->machine_key);
	channel_key_format(mpub, "mkey:", mkey, sizeof(mkey));
	rq.hostname = (char *)(pod->hostname ? pod->hostname : pod->pod_name ? pod->pod_name : "pod");
	rq.tags = (char **)pod->tags;
	rq.ntags = pod->ntags;
	req = register_request_to_json(&rq);
	if (!req)
		return -ENOMEM;
	/* The same request as register's, as its own call: the sponsor's
	 * session authenticates the node, the keys name the pod identity. */
	json_object_set(req, "type", json_new_string("register_pod"));
	if (json_object_set(req, "machineKey", json_new_string(mkey)) ||
	    json_object_set(req, "podNamespace", json_new_string(pod->pod_namespace ? pod->pod_namespace : "")) ||
	    json_object_set(req, "podName", json_new_string(pod->pod_name ? pod->pod_name : "")) ||
	    json_object_set(req, "podUID", json_new_string(pod->pod_uid ? pod->pod_uid : ""))) {
		json_free(req);
		return -ENOMEM;
	}
	if (!pod->hostname)
		json_object_del(req, "hostname");
	err = control_client_call(sponsor->ctl, req, register_done, id, &id->pod_call);
	json_free(req);
	if (!err) {
		id->register_done = done;
		id->register_arg = arg;
	}
	return err;
}

struct leave_ctx {
	identity_register_fn done;
	void *arg;
};

static void leave_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	struct leave_ctx *l = arg;

	if (l->done)
		l->done(l->arg, err, resp, why);
	free(l);
}

int identity_leave(struct identity *id, identity_register_fn done, void *arg)
{
	struct json *req = NULL;
	struct leave_ctx *l = NULL;
	int err = -ENOMEM;

	if (!state_logged_in(id->st))
		return -ENOTCONN;
	if ((err = ensure_client(id)))
		return err;
	req = json_new_object();
	l = calloc(1, sizeof(*l));
	err = -ENOMEM;
	if (!req || !l || json_object_set(req, "type", json_new_string("logout")))
		goto out;
	l->done = done;
	l->arg = arg;
	if ((err = control_client_call(id->ctl, req, leave_done, l, NULL)))
		goto out;
	l = NULL;
	logged_out(id, "removed");
out:
	free(l);
	json_free(req);
	return err;
}

/* ---- the local API's operations ---- */

void identity_up(struct identity *id, const struct localapi_up *req, struct localapi_reply *reply)
{
	bool server_changed;
	int err;

	if (id->pending_up) {
		localapi_reply_error(reply, 409, "Busy", "another knit up is in progress");
		return;
	}
	server_changed = req->login_server && (!id->st->login_server || strcmp(req->login_server, id->st->login_server));
	if (!req->login_server && !id->st->login_server) {
		localapi_reply_error(reply, 400, "NoLoginServer",
				     "no coordination server yet: pass --login-server URL (the operator's coordination Service)");
		return;
	}
	if (server_changed) {
		/* Another server: another identity there, and its own key. */
		control_client_free(id->ctl);
		id->ctl = NULL;
		id->map_up = false;
		clear_netmap(id);
		if (state_logged_in(id->st))
			state_logout(id->st);
		engine_set_private_key(id->engine, id->st->node_key);
		new_node_key(id);
		free(id->st->login_server);
		id->st->login_server = strdup(req->login_server);
		id->st->has_control_key = false;
		id->st->has_next_control_key = false;
	}
	if (req->has_server_key) {
		if (id->st->has_control_key && memcmp(id->st->control_key, req->server_key, 32)) {
			control_client_free(id->ctl);
			id->ctl = NULL;
		}
		if (memcmp(id->st->control_key, req->server_key, 32))
			id->st->has_next_control_key = false;
		memcpy(id->st->control_key, req->server_key, 32);
		id->st->has_control_key = true;
	}
	if (req->hostname || req->has_tags || req->has_routes) {
		struct netmap_prefix routes[64];
		size_t nroutes = 0;
		for (size_t i = 0; req->has_routes && i < req->nroutes && nroutes < 64; i++)
			if (netmap_prefix_parse(&routes[nroutes], req->routes[i]))
				nroutes++;
		if (state_set_prefs(id->st, req->hostname ? req->hostname : id->st->hostname,
				    req->has_tags ? (char *const *)req->tags : id->st->tags,
				    req->has_tags ? req->ntags : id->st->ntags,
				    req->has_routes ? routes : id->st->routes,
				    req->has_routes ? nroutes : id->st->nroutes)) {
			localapi_reply_error(reply, 500, "NoMemory", "out of memory");
			return;
		}
	}
	if (!req->auth_key && !state_logged_in(id->st)) {
		localapi_reply_error(reply, 400, "NeedsLogin",
				     "this device is not logged in: run knit up --authkey KEY (create an AuthKey with kubectl)");
		return;
	}
	if ((err = ensure_client(id))) {
		localapi_reply_error(reply, 400, "BadLoginServer", "cannot use login server %s: %s",
				     id->st->login_server ? id->st->login_server : "(none)", strerror(-err));
		return;
	}
	save_now(id);
	id->pending_up = reply;
	if ((err = identity_register(id, req->auth_key, NULL, NULL))) {
		id->pending_up = NULL;
		localapi_reply_error(reply, 500, "Internal", "cannot send the registration: %s", strerror(-err));
	}
}

void identity_down(struct identity *id, struct localapi_reply *reply)
{
	id->running = false;
	id->map_up = false;
	if (id->ctl)
		control_client_map_stop(id->ctl);
	clear_netmap(id);
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

void identity_logout(struct identity *id, struct localapi_reply *reply)
{
	struct json *req = json_new_object();

	if (!state_logged_in(id->st) || ensure_client(id)) {
		json_free(req);
		localapi_reply_error(reply, 400, "NeedsLogin", "this device is not logged in");
		return;
	}
	json_object_set(req, "type", json_new_string("logout"));
	if (control_client_call(id->ctl, req, logout_done, reply, NULL))
		localapi_reply_error(reply, 500, "Internal", "cannot send the logout");
	json_free(req);
	/* The node key dies either way: forget it now. */
	logged_out(id, "logged out by the user");
}

void identity_ping(struct identity *id, const char *peer, bool icmp, struct localapi_reply *reply)
{
	bool self;
	const struct netmap_node *n = identity_find_node(id, peer, &self);

	if (!n || self) {
		localapi_reply_error(reply, 404, "PeerNotFound", "%s is not a peer of this node (see knit status)", peer);
		return;
	}
	/* A disco ping where disco has a way to the peer (a direct path, or a
	 * relay region we know); else, as for a peer that answers no disco
	 * (a pod identity today), an echo through the tunnel. */
	struct paths_info info = { 0 };
	bool disco = !icmp && id->paths && paths_info(id->paths, n->node_key, &info) &&
		     (info.kind == PATHS_DIRECT || (info.kind == PATHS_RELAY && relays_has_region(id->relays, info.region)));

	if (disco)
		ping_start_disco(&id->pings, id->paths, n, peer, reply);
	else
		ping_start(&id->pings, id->loop, id->engine, n, peer, reply);
}

/* ---- what it is ---- */

const char *identity_backend_state(const struct identity *id)
{
	if (!state_logged_in(id->st))
		return "NeedsLogin";
	if (!id->running)
		return "Stopped";
	return id->map_up || id->has_nm ? "Running" : "Starting";
}

const char *identity_health(const struct identity *id)
{
	return id->health[0] ? id->health : NULL;
}

unsigned long identity_peers_skipped(const struct identity *id)
{
	return id->peers_skipped;
}

bool identity_logged_in(const struct identity *id)
{
	return state_logged_in(id->st);
}

bool identity_connected(const struct identity *id)
{
	return id->map_up;
}

const struct state *identity_state(const struct identity *id)
{
	return id->st;
}

const struct netmap *identity_netmap(const struct identity *id)
{
	return id->has_nm ? &id->nm : NULL;
}

struct engine *identity_engine(const struct identity *id)
{
	return id->engine;
}

struct paths *identity_paths(const struct identity *id)
{
	return id->paths;
}

struct relays *identity_relays(const struct identity *id)
{
	return id->relays;
}

const char *identity_ifname(const struct identity *id)
{
	return id->dev;
}

int identity_route_add(struct identity *id, const char *cidr)
{
	return link_op(id, LINK_ROUTE_ADD, cidr);
}

const struct netmap_node *identity_find_node(const struct identity *id, const char *what, bool *is_self)
{
	struct netmap_prefix want;
	bool by_ip = netmap_prefix_parse(&want, what);

	*is_self = false;
	if (!id->has_nm)
		return NULL;
	for (size_t i = 0; i <= id->nm.npeers; i++) {
		const struct netmap_node *n = i < id->nm.npeers ? &id->nm.peers[i] : &id->nm.self;
		if (!by_ip) {
			if ((n->name && !strcmp(n->name, what)) || (n->fqdn && !strcmp(n->fqdn, what)) ||
			    (n->device && !strcmp(n->device, what))) {
				*is_self = i == id->nm.npeers;
				return n;
			}
			continue;
		}
		for (size_t k = 0; k < n->naddresses; k++) {
			if (n->addresses[k].family == want.family &&
			    !memcmp(n->addresses[k].addr, want.addr, want.family == AF_INET ? 4 : 16)) {
				*is_self = i == id->nm.npeers;
				return n;
			}
		}
	}
	return NULL;
}

/* ---- lifecycle ---- */

/* relays_config hooks: the identity's paths, made after the relays. */
static void on_relayed_disco(void *arg, const uint8_t src[32], const uint8_t *pkt, size_t len)
{
	struct identity *id = arg;

	if (id->paths)
		paths_on_relayed(id->paths, src, pkt, len);
}

static int peer_region(void *arg, const uint8_t peer[32])
{
	struct identity *id = arg;

	return id->paths ? paths_peer_region(id->paths, peer) : 0;
}

static void on_tun_down(void *arg, struct engine *e)
{
	struct identity *id = arg;

	if (id->on_down)
		id->on_down(id->arg, id);
}

/* The netmap saved before a restart: forwarding resumes at once. */
static void resume(struct identity *id)
{
	char err[256];

	if (!state_logged_in(id->st) || !state_get_netmap(id->st, &id->nm, err, sizeof(err)))
		return;
	id->has_nm = true;
	state_forget_netmap(id->st);
	if (apply_full(id))
		return;
	/* Peers still hold sessions with our previous process, which we no
	 * longer have: start fresh ones now rather than wait for their timers
	 * to notice (about 15 s). */
	for (size_t i = 0; i < id->nm.npeers; i++)
		engine_peer_handshake(id->engine, id->nm.peers[i].node_key);
	log_info("forwarding on the saved netmap", "dev=%s peers=%zu", engine_ifname(id->engine), id->nm.npeers);
}

int identity_new(struct identity **out, struct loop *loop, struct hub *hub, struct state *st,
		 const struct identity_config *cfg)
{
	struct identity *id = calloc(1, sizeof(*id));
	struct engine_config ec = { .ifname = cfg->ifname, .on_down = on_tun_down, .filtered = true };
	int r = -ENOMEM;

	*out = NULL;
	if (!id) {
		state_free(st);
		return -ENOMEM;
	}
	id->loop = loop;
	id->hub = hub;
	id->st = st;
	id->on_down = cfg->on_down;
	id->is_identity_device = cfg->is_identity_device;
	id->arg = cfg->arg;
	id->nsfd = -1;
	id->pod_token_file = cfg->pod_token_file;
	id->applied = applied_new();
	id->save_timer = loop_timer_new(loop, on_save, id);
	id->expire_timer = loop_timer_new(loop, on_expire, id);
	if (!id->applied || !id->save_timer || !id->expire_timer ||
	    (cfg->state_path && !(id->state_path = strdup(cfg->state_path))))
		goto out;
	if ((r = keyrenew_new(&id->keyrenew, loop, st, &renew_ops, id)))
		goto out;
	r = -ENOMEM;
	ec.arg = id;
	if (cfg->datagrams && cfg->netstun) {
		struct relays_config rc = { .loop = loop, .hub = hub, .node_priv = st->node_key, .on_disco = on_relayed_disco,
					    .peer_region = peer_region, .arg = id, .ca_file = cfg->relay_ca };
		if ((r = relays_new(&id->relays, &rc)))
			goto out;
		ec.relay_send = relays_enqueue;
		ec.relay_arg = id->relays;
	}
	if ((r = engine_new(&id->engine, hub, &ec))) {
		log_error("cannot create the TUN device", "dev=%s err=%d", cfg->ifname ? cfg->ifname : "?", r);
		goto out;
	}
	engine_set_private_key(id->engine, st->node_key);
	snprintf(id->dev, sizeof(id->dev), "%s", engine_ifname(id->engine));
	if (id->relays) {
		uint8_t node_pub[32];
		struct paths_config pc = { .loop = loop, .hub = hub, .engine = id->engine, .relays = id->relays,
					   .disco_priv = st->disco_key, .node_pub = node_pub };
		crypto_scalarmult_base(node_pub, st->node_key);
		if ((r = paths_new(&id->paths, &pc)) || (r = datagrams_add_disco(cfg->datagrams, paths_on_datagram, id->paths)))
			goto out;
		id->datagrams = cfg->datagrams;
		id->netstun = cfg->netstun;
	}
	if (cfg->netns) {
		if ((r = netns_open(cfg->netns)) < 0) {
			log_error("cannot open the network namespace", "netns=%s err=%d", cfg->netns, r);
			goto out;
		}
		id->nsfd = r;
		if ((r = netns_link_move(id->dev, id->nsfd, cfg->netns_ifname))) {
			log_error("cannot move the TUN device into the namespace", "dev=%s netns=%s ifname=%s err=%d",
				  id->dev, cfg->netns, cfg->netns_ifname, r);
			goto out;
		}
		snprintf(id->dev, sizeof(id->dev), "%s", cfg->netns_ifname);
	}
	{
		struct announce_config ac = { .loop = loop, .hub = hub, .skip = skip_device, .send = send_update,
					      .arg = id, .netstun = id->netstun, .relays = id->relays, .paths = id->paths };
		if ((r = announce_new(&id->announce, &ac)))
			goto out;
	}
	loop_timer_arm(id->expire_timer, 1000);
	/* An identity owns its device: up, so addresses and routes can go on it. */
	if ((r = link_op(id, LINK_UP, NULL))) {
		log_error("cannot bring the TUN device up", "dev=%s err=%d", id->dev, r);
		goto out;
	}
	if (cfg->host_routes && !(id->routes = routes_new(engine_ifname(id->engine), cfg->host_routes))) {
		r = -ENOMEM;
		goto out;
	}
	if (cfg->uapi_dir &&
	    (r = uapi_server_open(&id->uapi, loop, cfg->uapi_dir, engine_ifname(id->engine), &engine_uapi_ops, id->engine)))
		log_warn("cannot serve the WireGuard UAPI socket", "dir=%s err=%d", cfg->uapi_dir, r);
	resume(id);
	*out = id;
	r = 0;
out:
	if (r)
		identity_free(id);
	return r;
}

void identity_start(struct identity *id)
{
	/* From the previous state file: its node key may be one the server
	 * has since seen renewed. Register it again (no auth key: the server
	 * knows this machine key); the answer starts the map stream. */
	if (state_logged_in(id->st) && id->st->login_server && id->st->recovered) {
		id->st->recovered = false;
		if (identity_register(id, NULL, NULL, NULL) == 0) {
			log_info("registering the recovered state's node key again");
			announce_start(id->announce);
			return;
		}
	}
	/* Logged in: come back (the server knows this machine key). */
	if (state_logged_in(id->st) && id->st->login_server && ensure_client(id) == 0) {
		id->running = true;
		start_map(id);
		keyrenew_schedule(id->keyrenew);
	}
	announce_start(id->announce);
}

void identity_save(struct identity *id)
{
	save_now(id);
}

void identity_free(struct identity *id)
{
	if (!id)
		return;
	ping_free_all(&id->pings);
	if (id->datagrams)
		datagrams_remove_disco(id->datagrams, id->paths);
	paths_free(id->paths);
	id->paths = NULL;
	if (id->pod_call)
		control_call_cancel(id->pod_call);
	control_client_free(id->ctl);
	uapi_server_close(id->uapi);
	if (id->has_nm)
		netmap_free(&id->nm);
	drop_pending(id);
	/* The host's routing as it was before us: knit's table and rules go. */
	routes_free(id->routes);
	engine_free(id->engine);
	relays_free(id->relays); /* after the engine, whose data path hands it packets */
	announce_free(id->announce);
	applied_free(id->applied);
	loop_timer_free(id->save_timer);
	loop_timer_free(id->expire_timer);
	keyrenew_free(id->keyrenew);
	json_free(id->filter_applied);
	free(id->state_path);
	state_free(id->st);
	if (id->nsfd >= 0)
		close(id->nsfd);
	free(id);
#ifdef __GLIBC__
	/* glibc keeps freed memory below the top of its heaps: without this,
	 * 200 pod identities detached left knitd 257 MB larger. */
	malloc_trim(0);
#endif
}
