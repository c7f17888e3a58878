#include "coord.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "httpd.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "loop.h"
#include "operator.h"
#include "strmap.h"
#include "wg/noise.h"

#define CONTROL_SECRET "knit-control-key"
#define MAX_CALL_BODY (64u << 10)
#define MAX_SESSIONS 65536u
#define MAX_JOBS 1024u
#define JOB_WORKERS 4
#define STREAM_QUEUE (8u << 20)

struct coord;

struct session {
	struct channel_session ch;
	char mkey[80]; /* "mkey:<hex>" */
	char idhex[17];
	uint64_t last_used;
};

/* One open map stream. */
struct mapconn {
	struct coord *c;
	struct httpd_stream *st;
	struct session *sess; /* may be freed before us: we keep our own channel copy */
	struct channel_session ch; /* sealing state for this stream's frames */
	char device[254];
	char tailnet[254];
	char node_key[80];
	struct mapconn *prev, *next;
};

/* Soft state per device: never written to the API server at heartbeat rate. */
struct node {
	struct json *endpoints; /* array of "ip:port" */
	int relay;
	int streams;
	char *last_peer; /* the peer record last broadcast, to skip no-op deltas */
};

enum job_type { JOB_REGISTER, JOB_LOGOUT, JOB_ONLINE };

struct job {
	enum job_type type;
	struct coord *c;
	char sess_id[17]; /* reply through this session (loop thread looks it up) */
	struct httpd_stream *st; /* deferred reply; NULL once the client left */
	char mkey[80];
	struct json *req;
	struct json *reply; /* set by the worker */
	/* JOB_ONLINE */
	char device[254];
	bool online;
	time_t at;
	struct job *next;
};

struct coord {
	struct operator *op;
	struct coord_opts o;
	struct httpd *http;
	bool ready; /* control key loaded */
	bool stopping;
	uint8_t priv[32], pub[32];
	char pub_text[80];

	/* Loop thread only: */
	struct strmap *sessions; /* idhex -> session */
	struct strmap *handshake_ts; /* mkey -> 12-byte TAI64N */
	struct strmap *nodes; /* device -> node */
	struct mapconn *conns;
	struct loop_timer *keepalive, *sweep;
	uint64_t seq;
	struct coord_stats stats;

	/* jobs: lock guards head, tail, njobs, stop */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail;
	unsigned njobs;
	bool stop;
	pthread_t workers[JOB_WORKERS];
	int nworkers;
	pthread_t key_loader;
	bool key_loader_started;
};

/* ---- helpers ---- */

static uint64_t now_ms(struct coord *c)
{
	return loop_now(c->op->loop);
}

static struct json *jstr(const char *s)
{
	return json_new_string(s ? s : "");
}

static struct json *error_reply(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static struct json *error_reply(const char *code, const char *fmt, ...)
{
	struct json *j = json_new_object();
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (j) {
		json_object_set(j, "error", json_new_string(msg));
		json_object_set(j, "code", json_new_string(code));
	}
	return j;
}

/* Seals json with ch into out as a bare frame. */
static int seal_json(struct channel_session *ch, const struct json *j, struct buf *out)
{
	struct buf text = BUF_INIT(16u << 20);
	int err = json_dump(j, &text, 0);

	if (!err)
		err = channel_seal(ch, text.data ? text.data : (uint8_t *)"", text.len, out);
	buf_free(&text);
	return err;
}

static void respond_sealed(struct httpd_req *req, struct session *s, const struct json *j)
{
	struct buf out = BUF_INIT(16u << 20);

	if (seal_json(&s->ch, j, &out) == 0)
		httpd_respond_buf(req, 200, "application/octet-stream", &out);
	else
		httpd_respond_text(req, 500, "cannot seal the reply\n");
	buf_free(&out);
}

/* ---- the control key: one Secret shared by every replica ---- */

static void key_loaded(struct loop *loop, void *arg)
{
	struct coord *c = arg;

	if (c->key_loader_started) {
		pthread_join(c->key_loader, NULL);
		c->key_loader_started = false;
	}
	if (c->stopping)
		return;
	c->ready = true;
	log_info("control key ready", "key=%s", c->pub_text);
}

static bool decode_key(const struct json *secret, uint8_t priv[32])
{
	const char *b64 = json_str(json_path(secret, "data", "privateKey", NULL));
	size_t n = 0;

	return b64 && sodium_base642bin(priv, 32, b64, strlen(b64), NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
	       n == 32;
}

static void *load_key(void *arg)
{
	struct coord *c = arg;
	struct operator *op = c->op;

	for (unsigned attempt = 0; !c->stopping; attempt++) {
		struct kube_result r;
		int err = kube_get(op->kube, &kube_res_secrets, op->namespace, CONTROL_SECRET, &r);

		if (!err && kube_ok(&r) && decode_key(r.obj, c->priv)) {
			kube_result_clear(&r);
			break;
		}
		if (!err && r.status == 404) {
			uint8_t priv[32];
			char b64[64];
			struct json_error je;
			char doc[512];
			struct json *s;

			channel_keygen(priv);
			sodium_bin2base64(b64, sizeof(b64), priv, 32, sodium_base64_VARIANT_ORIGINAL);
			snprintf(doc, sizeof(doc),
				 "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"" CONTROL_SECRET "\","
				 "\"labels\":{\"app.kubernetes.io/managed-by\":\"" OPERATOR_MANAGER "\"}},"
				 "\"type\":\"knit.dev/control-key\",\"data\":{\"privateKey\":\"%s\"}}", b64);
			s = json_parse(doc, strlen(doc), &je);
			sodium_memzero(doc, sizeof(doc));
			sodium_memzero(b64, sizeof(b64));
			sodium_memzero(priv, sizeof(priv));
			kube_result_clear(&r);
			if (s) {
				struct kube_result cr;
				/* 409: another replica won the race; read theirs next round. */
				if (kube_create(op->kube, &kube_res_secrets, op->namespace, s, &cr) == 0) {
					if (kube_ok(&cr))
						log_info("created the control key", "secret=%s/%s", op->namespace, CONTROL_SECRET);
					kube_result_clear(&cr);
				}
				json_free(s);
			}
			continue;
		}
		if (!err)
			log_warn("cannot read the control key", "status=%ld message=\"%s\"", r.status, r.message);
		kube_result_clear(&r);
		struct timespec ts = { .tv_sec = attempt < 5 ? 1 : 5 };
		nanosleep(&ts, NULL);
	}
	channel_public_key(c->pub, c->priv);
	channel_key_format(c->pub, "ctrlkey:", c->pub_text, sizeof(c->pub_text));
	loop_post(c->op->loop, key_loaded, c);
	return NULL;
}

/* ---- peers and netmaps (loop thread) ---- */

static struct node *node_get(struct coord *c, const char *device, bool create)
{
	struct node *n = strmap_get(c->nodes, device);

	if (n || !create)
		return n;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->endpoints = json_new_array();
	if (!n->endpoints || strmap_set(c->nodes, device, n, NULL)) {
		json_free(n->endpoints);
		free(n);
		return NULL;
	}
	return n;
}

static const char *dev_tailnet(const struct json *dev)
{
	return json_str(json_path(dev, "spec", "tailnet", NULL)) ?: "default";
}

static bool dev_usable(const struct json *dev)
{
	return json_array_len(json_path(dev, "status", "addresses", NULL)) == 2 &&
	       !json_bool(json_path(dev, "status", "keyExpired", NULL), false) && !kube_deleting(dev) &&
	       json_str(json_path(dev, "spec", "nodeKey", NULL));
}

static struct json *dns_suffix_json(struct coord *c, const char *tailnet)
{
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet), *s;

	s = json_new_string(json_str(json_path(tn, "spec", "dnsSuffix", NULL)) ?: "tailnet.knit");
	json_free(tn);
	return s;
}

/* The record peers see for dev (and the device sees as "self"). */
static struct json *peer_json(struct coord *c, const struct json *dev, const char *suffix)
{
	struct json *p = json_new_object(), *addrs = json_new_array(), *allowed = json_new_array();
	struct json *st_addrs = json_path(dev, "status", "addresses", NULL);
	struct json *routes = json_path(dev, "spec", "approvedRoutes", NULL);
	const char *host = json_str(json_path(dev, "spec", "hostname", NULL)) ?: kube_name(dev);
	struct node *n = node_get(c, kube_name(dev), false);
	char fqdn[600];

	if (!p || !addrs || !allowed) {
		json_free(p);
		json_free(addrs);
		json_free(allowed);
		return NULL;
	}
	for (size_t i = 0; i < json_array_len(st_addrs); i++) {
		const char *a = json_str(json_array_at(st_addrs, i));
		char cidr[80];
		if (!a)
			continue;
		snprintf(cidr, sizeof(cidr), "%s/%d", a, strchr(a, ':') ? 128 : 32);
		json_array_append(addrs, json_new_string(cidr));
		json_array_append(allowed, json_new_string(cidr));
	}
	for (size_t i = 0; i < json_array_len(routes); i++)
		json_array_append(allowed, json_clone(json_array_at(routes, i)));
	snprintf(fqdn, sizeof(fqdn), "%s.%s", host, suffix ? suffix : "tailnet.knit");
	json_object_set(p, "name", jstr(host));
	json_object_set(p, "fqdn", jstr(fqdn));
	json_object_set(p, "device", jstr(kube_name(dev)));
	json_object_set(p, "nodeKey", jstr(json_str(json_path(dev, "spec", "nodeKey", NULL))));
	json_object_set(p, "discoKey", jstr(json_str(json_path(dev, "spec", "discoKey", NULL))));
	json_object_set(p, "addresses", addrs);
	json_object_set(p, "allowedIPs", allowed);
	json_object_set(p, "endpoints", n ? json_clone(n->endpoints) : json_new_array());
	json_object_set(p, "relay", json_new_int(n ? n->relay : 0));
	json_object_set(p, "online", json_new_bool(n && n->streams > 0));
	json_object_set(p, "tags", json_clone(json_path(dev, "spec", "tags", NULL)) ?: json_new_array());
	json_object_set(p, "ephemeral", json_new_bool(json_bool(json_path(dev, "spec", "ephemeral", NULL), false)));
	return p;
}

struct collect {
	struct coord *c;
	const char *tailnet, *self, *suffix;
	struct json *peers;
};

static void collect_peer(const struct json *dev, void *arg)
{
	struct collect *k = arg;

	if (strcmp(kube_name(dev), k->self) == 0 || strcmp(dev_tailnet(dev), k->tailnet) != 0 || !dev_usable(dev))
		return;
	json_array_append(k->peers, peer_json(k->c, dev, k->suffix));
}

static struct json *full_netmap(struct coord *c, const struct json *self)
{
	const char *tailnet = dev_tailnet(self);
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet);
	struct json *nm = json_new_object(), *dns = json_new_object(), *ns = json_new_array();
	const char *suffix = json_str(json_path(tn, "spec", "dnsSuffix", NULL)) ?: "tailnet.knit";
	struct collect k = { .c = c, .tailnet = tailnet, .self = kube_name(self), .suffix = suffix,
			     .peers = json_new_array() };

	informer_foreach(c->op->devices, collect_peer, &k);
	json_object_set(nm, "type", json_new_string("full"));
	json_object_set(nm, "seq", json_new_int((int64_t)++c->seq));
	json_object_set(nm, "self", peer_json(c, self, suffix));
	json_object_set(nm, "peers", k.peers);
	json_array_append(ns, json_new_string("100.100.100.100"));
	json_object_set(dns, "suffix", json_new_string(suffix));
	json_object_set(dns, "nameservers", ns);
	json_object_set(nm, "dns", dns);
	json_object_set(nm, "relayMap", json_clone(json_path(tn, "spec", "relayMap", NULL)) ?: json_new_null());
	json_object_set(nm, "packetFilter", json_new_null());
	json_free(tn);
	return nm;
}

/* One record: 4-byte big-endian length, then the sealed frame. */
static int stream_send(struct mapconn *m, const char *text, size_t len)
{
	struct buf out = BUF_INIT(16u << 20);
	uint8_t *hdr;
	int err;

	hdr = buf_reserve(&out, 4, &err);
	if (!hdr)
		return err;
	buf_commit(&out, 4);
	err = channel_seal(&m->ch, text, len, &out);
	if (!err) {
		uint32_t n = htonl((uint32_t)(out.len - 4));
		memcpy(out.data, &n, 4);
		err = httpd_stream_write(m->st, out.data, out.len);
	}
	buf_free(&out);
	return err;
}

static int stream_send_json(struct mapconn *m, const struct json *j)
{
	struct buf text = BUF_INIT(16u << 20);
	int err = json_dump(j, &text, 0);

	if (!err)
		err = stream_send(m, (const char *)text.data, text.len);
	buf_free(&text);
	return err;
}

/* Sends a delta to every stream of the tailnet except the device's own. */
static void broadcast(struct coord *c, const char *tailnet, const char *except, const struct json *delta)
{
	struct buf text = BUF_INIT(16u << 20);

	if (json_dump(delta, &text, 0))
		goto out;
	for (struct mapconn *m = c->conns, *next; m; m = next) {
		next = m->next;
		if (strcmp(m->tailnet, tailnet) != 0 || (except && strcmp(m->device, except) == 0))
			continue;
		stream_send(m, (const char *)text.data, text.len);
	}
out:
	buf_free(&text);
}

static struct json *delta_new(struct coord *c)
{
	struct json *d = json_new_object();

	json_object_set(d, "type", json_new_string("delta"));
	json_object_set(d, "seq", json_new_int((int64_t)++c->seq));
	return d;
}

static void send_remove(struct coord *c, const char *tailnet, const char *device, const char *node_key)
{
	struct json *d = delta_new(c), *rm = json_new_array();

	json_array_append(rm, jstr(node_key));
	json_object_set(d, "remove", rm);
	broadcast(c, tailnet, device, d);
	json_free(d);
}

/* Tells peers about dev if its record changed, and dev's own streams about itself. */
static void publish_device(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev), *tailnet = dev_tailnet(dev);
	struct json *suffix = dns_suffix_json(c, tailnet), *p, *d;
	struct node *n = node_get(c, name, true);
	struct buf text = BUF_INIT(1u << 20);

	if (!n || !dev_usable(dev)) {
		/* Not (or no longer) a usable peer: peers that knew it drop it. */
		if (n && n->last_peer) {
			send_remove(c, tailnet, name, json_str(json_path(dev, "spec", "nodeKey", NULL)));
			free(n->last_peer);
			n->last_peer = NULL;
		}
		json_free(suffix);
		return;
	}
	p = peer_json(c, dev, json_str(suffix));
	json_free(suffix);
	if (!p || json_dump(p, &text, 0) || (n->last_peer && strcmp(n->last_peer, buf_str(&text)) == 0)) {
		json_free(p);
		buf_free(&text);
		return;
	}
	free(n->last_peer);
	n->last_peer = buf_steal(&text, NULL);
	d = delta_new(c);
	struct json *up = json_new_array();
	json_array_append(up, json_clone(p));
	json_object_set(d, "upsert", up);
	broadcast(c, tailnet, name, d);
	json_free(d);
	/* Its own streams: the new self. */
	d = delta_new(c);
	json_object_set(d, "self", p);
	for (struct mapconn *m = c->conns; m; m = m->next)
		if (strcmp(m->device, name) == 0)
			stream_send_json(m, d);
	json_free(d);
}

void coord_device_changed(struct coord *c, const struct json *old, const struct json *dev)
{
	const char *old_key = json_str(json_path(old, "spec", "nodeKey", NULL));
	const char *new_key = json_str(json_path(dev, "spec", "nodeKey", NULL));
	struct node *n;

	if (!c)
		return;
	/* A rotated node key: the old one is gone for peers. */
	if (old_key && new_key && strcmp(old_key, new_key) != 0) {
		send_remove(c, dev_tailnet(old), kube_name(old), old_key);
		n = node_get(c, kube_name(dev), false);
		if (n) {
			free(n->last_peer);
			n->last_peer = NULL;
		}
	}
	publish_device(c, dev);
}

void coord_device_deleted(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev);
	struct node *n;
	struct json *d;

	if (!c)
		return;
	send_remove(c, dev_tailnet(dev), name, json_str(json_path(dev, "spec", "nodeKey", NULL)));
	/* Its own streams end: the identity no longer exists. */
	d = error_reply("DeviceDeleted", "this device was deleted; run knit up --authkey to join again");
	for (struct mapconn *m = c->conns; m; m = m->next) {
		if (strcmp(m->device, name) == 0) {
			stream_send_json(m, d);
			httpd_stream_close(m->st);
		}
	}
	json_free(d);
	n = strmap_del(c->nodes, name);
	if (n) {
		/* Streams still point at the name; they find no node and that is fine. */
		json_free(n->endpoints);
		free(n->last_peer);
		free(n);
	}
}

void coord_tailnet_changed(struct coord *c, const struct json *tn)
{
	/* DNS suffix, relay map: rare; every stream of it gets a full netmap. */
	for (struct mapconn *m = c ? c->conns : NULL; m; m = m->next) {
		struct json *dev, *nm;
		if (strcmp(m->tailnet, kube_name(tn)) != 0)
			continue;
		dev = informer_get(c->op->devices, NULL, m->device);
		if (!dev)
			continue;
		nm = full_netmap(c, dev);
		stream_send_json(m, nm);
		json_free(nm);
		json_free(dev);
	}
}

/* ---- worker pool: registration's API writes ---- */

static void job_free(struct job *j)
{
	json_free(j->req);
	json_free(j->reply);
	free(j);
}

static void job_done(struct loop *loop, void *arg);

static int job_submit(struct coord *c, struct job *j)
{
	pthread_mutex_lock(&c->lock);
	if (c->njobs >= MAX_JOBS || c->stop) {
		pthread_mutex_unlock(&c->lock);
		return -EBUSY;
	}
	j->next = NULL;
	if (c->tail)
		c->tail->next = j;
	else
		c->head = j;
	c->tail = j;
	c->njobs++;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static struct json *do_register(struct coord *c, const char *mkey, const struct json *req);
static struct json *do_logout(struct coord *c, const char *mkey);
static void do_online(struct coord *c, const char *device, bool online, time_t at);

static void *job_worker(void *arg)
{
	struct coord *c = arg;

	for (;;) {
		struct job *j;

		pthread_mutex_lock(&c->lock);
		while (!c->head && !c->stop)
			pthread_cond_wait(&c->cond, &c->lock);
		if (!c->head) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		j = c->head;
		c->head = j->next;
		if (!c->head)
			c->tail = NULL;
		c->njobs--;
		pthread_mutex_unlock(&c->lock);

		switch (j->type) {
		case JOB_REGISTER: j->reply = do_register(c, j->mkey, j->req); break;
		case JOB_LOGOUT: j->reply = do_logout(c, j->mkey); break;
		case JOB_ONLINE: do_online(c, j->device, j->online, j->at); break;
		}
		if (j->type == JOB_ONLINE || loop_post(c->op->loop, job_done, j))
			job_free(j);
	}
	return NULL;
}

/* Loop thread: the deferred reply goes out through its stream. */
static void job_done(struct loop *loop, void *arg)
{
	struct job *j = arg;
	struct coord *c = j->c;
	struct session *s = strmap_get(c->sessions, j->sess_id);
	struct buf out = BUF_INIT(16u << 20);

	if (j->st && s && j->reply && seal_json(&s->ch, j->reply, &out) == 0)
		httpd_stream_write(j->st, out.data, out.len);
	if (j->st)
		httpd_stream_close(j->st);
	buf_free(&out);
	job_free(j);
}

static void reply_stream_closed(struct httpd_stream *st, void *arg)
{
	/* The client left before the reply: the job still completes, silently. */
	struct job **slot = arg;

	if (*slot)
		(*slot)->st = NULL;
	free(slot);
}

/* ---- registration (worker thread: blocking API calls) ---- */

struct use_ctx {
	const char *code;
	time_t now;
};

static int take_use(struct json *ak, void *arg)
{
	struct use_ctx *u = arg;
	struct json *st = json_get(ak, "status");
	int64_t uses = json_int(json_get(st, "uses"), 0), max = json_int(json_path(ak, "spec", "maxUses", NULL), 0);
	bool reusable = json_bool(json_path(ak, "spec", "reusable", NULL), false);
	time_t exp;
	char ts[32];

	if (!kube_time_parse(json_str(json_get(st, "expiresAt")), &exp) || u->now >= exp) {
		u->code = "AuthKeyExpired";
		return -ETIME;
	}
	if ((!reusable && uses >= 1) || (reusable && max > 0 && uses >= max)) {
		u->code = "AuthKeyUsedUp";
		return -EDQUOT;
	}
	kube_time_format(u->now, ts, sizeof(ts));
	json_object_set(st, "uses", json_new_int(uses + 1));
	json_object_set(st, "lastUsed", json_new_string(ts));
	return 1;
}

struct find_ctx {
	const char *field_path[3];
	const char *value;
	struct json *found;
};

static void find_by(const struct json *obj, void *arg)
{
	struct find_ctx *f = arg;

	if (!f->found)
		f->found = json_clone(obj);
}

static struct json *device_by_machine(struct coord *c, const char *mkey)
{
	struct find_ctx f = { .value = mkey };

	informer_foreach_indexed(c->op->devices, "machineKey", mkey, find_by, &f);
	return f.found;
}

static struct json *authkey_by_prefix(struct coord *c, const char *prefix)
{
	struct find_ctx f = { .value = prefix };

	informer_foreach_indexed(c->op->authkeys, "keyPrefix", prefix, find_by, &f);
	return f.found;
}

static void sanitize_host(const char *in, char *out, size_t outlen)
{
	size_t n = 0;

	for (; in && *in && n + 1 < outlen && n < 40; in++) {
		char ch = *in;
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
			out[n++] = ch;
		else if (n > 0 && out[n - 1] != '-')
			out[n++] = '-';
	}
	while (n > 0 && out[n - 1] == '-')
		n--;
	out[n] = '\0';
	if (!n)
		snprintf(out, outlen, "device");
}

static bool valid_cidr(const char *s)
{
	char a[64];
	const char *slash = s ? strchr(s, '/') : NULL;
	unsigned char buf[16];
	int bits;

	if (!slash || (size_t)(slash - s) >= sizeof(a))
		return false;
	memcpy(a, s, (size_t)(slash - s));
	a[slash - s] = '\0';
	bits = atoi(slash + 1);
	if (inet_pton(AF_INET, a, buf) == 1)
		return bits >= 0 && bits <= 32;
	return inet_pton(AF_INET6, a, buf) == 1 && bits >= 0 && bits <= 128;
}

/* Waits for the Device reconciler to give the device its addresses. */
static struct json *wait_addresses(struct coord *c, const char *name)
{
	uint64_t deadline = loop_mono_ms() + (c->o.register_wait_ms ? c->o.register_wait_ms : 15000);

	while (loop_mono_ms() < deadline && !c->stopping) {
		struct json *dev = informer_get(c->op->devices, NULL, name);
		if (dev && json_array_len(json_path(dev, "status", "addresses", NULL)) == 2)
			return dev;
		json_free(dev);
		struct timespec ts = { .tv_nsec = 50 * 1000000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static struct json *do_register(struct coord *c, const char *mkey, const struct json *req)
{
	struct operator *op = c->op;
	const char *auth = json_str(json_get(req, "authKey"));
	const char *node_key = json_str(json_get(req, "nodeKey"));
	const char *disco_key = json_str(json_get(req, "discoKey"));
	struct json *tags = json_get(req, "tags"), *routes = json_get(req, "advertiseRoutes");
	struct json *existing = device_by_machine(c, mkey), *ak = NULL, *reply = NULL, *dev = NULL, *spec;
	char host[64], name[128], hash_hex[65], ts[32];
	unsigned char h[crypto_hash_sha256_BYTES], kb[32];
	struct kube_result r = { 0 };
	time_t now = time(NULL);
	bool ephemeral = false;
	const char *tailnet = "default";

	if (!channel_key_parse(node_key, "nodekey:", kb) || (disco_key && !channel_key_parse(disco_key, "discokey:", kb))) {
		reply = error_reply("BadRequest", "nodeKey and discoKey must be nodekey:/discokey: followed by 64 hex digits");
		goto out;
	}
	for (size_t i = 0; i < json_array_len(tags); i++) {
		const char *t = json_str(json_array_at(tags, i));
		if (!t || strncmp(t, "tag:", 4) != 0 || strlen(t) < 5 || strlen(t) > 67) {
			reply = error_reply("BadRequest", "tags must look like tag:name");
			goto out;
		}
	}
	for (size_t i = 0; i < json_array_len(routes); i++) {
		if (!valid_cidr(json_str(json_array_at(routes, i)))) {
			reply = error_reply("BadRequest", "advertiseRoutes must be CIDRs");
			goto out;
		}
	}

	if (auth) {
		char prefix[64];
		const char *dash = strrchr(auth, '-');
		size_t plen = dash ? (size_t)(dash - auth) : 0;
		struct use_ctx u = { .now = now };

		if (strncmp(auth, "knit-auth-", 10) != 0 || plen >= sizeof(prefix) || plen < 11) {
			reply = error_reply("AuthKeyInvalid", "that is not a knit auth key");
			goto out;
		}
		memcpy(prefix, auth, plen);
		prefix[plen] = '\0';
		ak = authkey_by_prefix(c, prefix);
		crypto_hash_sha256(h, (const unsigned char *)auth, strlen(auth));
		sodium_bin2hex(hash_hex, sizeof(hash_hex), h, sizeof(h));
		const char *want = json_str(json_path(ak, "status", "keyHash", NULL));
		if (!ak || !want || strlen(want) != 64 || sodium_memcmp(want, hash_hex, 64) != 0) {
			reply = error_reply("AuthKeyInvalid", "the auth key is not valid (deleted, mistyped or never issued)");
			goto out;
		}
		/* One use, counted on the API server with a resourceVersion
		 * precondition: concurrent registrations cannot both take the last use. */
		int err = kube_update_retry(op->kube, &res_authkeys, kube_namespace(ak), kube_name(ak), true, 8, take_use, &u, &r);
		kube_result_clear(&r);
		if (err < 0 || !kube_ok(&r)) {
			if (u.code)
				reply = error_reply(u.code, strcmp(u.code, "AuthKeyUsedUp") == 0
								    ? "the auth key has already been used; one-off keys register one device"
								    : "the auth key has expired; create a new one");
			else
				reply = error_reply("Unavailable", "cannot record the key's use (HTTP %ld %s); try again", r.status, r.reason);
			goto out;
		}
		ephemeral = json_bool(json_path(ak, "spec", "ephemeral", NULL), false);
		tailnet = json_str(json_path(ak, "spec", "tailnet", NULL)) ?: "default";
		/* Requested tags must be among the key's. */
		struct json *key_tags = json_path(ak, "spec", "tags", NULL);
		for (size_t i = 0; i < json_array_len(tags); i++) {
			bool found = false;
			for (size_t k = 0; k < json_array_len(key_tags); k++)
				found |= strcmp(json_str(json_array_at(tags, i)), json_str(json_array_at(key_tags, k)) ?: "") == 0;
			if (!found) {
				reply = error_reply("TagNotPermitted", "tag %s is not granted by this auth key", json_str(json_array_at(tags, i)));
				goto out;
			}
		}
		if (!json_array_len(tags))
			tags = key_tags;
	} else if (!existing) {
		reply = error_reply("NotRegistered", "this machine is not registered: run knit up --authkey KEY");
		goto out;
	} else {
		tailnet = dev_tailnet(existing);
	}

	sanitize_host(json_str(json_get(req, "hostname")), host, sizeof(host));
	if (existing) {
		snprintf(name, sizeof(name), "%s", kube_name(existing));
	} else {
		unsigned char mh[crypto_hash_sha256_BYTES];
		char mhex[65];
		crypto_hash_sha256(mh, (const unsigned char *)mkey, strlen(mkey));
		sodium_bin2hex(mhex, sizeof(mhex), mh, sizeof(mh));
		snprintf(name, sizeof(name), "%s-%.6s", host, mhex);
	}

	dev = existing ? json_clone(existing) : json_new_object();
	if (!dev)
		goto nomem;
	if (!existing) {
		struct json *meta = json_new_object();
		json_object_set(dev, "apiVersion", json_new_string(KNIT_API_VERSION));
		json_object_set(dev, "kind", json_new_string("Device"));
		json_object_set(meta, "name", json_new_string(name));
		json_object_set(dev, "metadata", meta);
	}
	spec = json_get(dev, "spec");
	if (!spec) {
		spec = json_new_object();
		json_object_set(dev, "spec", spec);
	}
	json_object_set(spec, "tailnet", json_new_string(tailnet));
	json_object_set(spec, "hostname", json_new_string(host));
	json_object_set(spec, "machineKey", json_new_string(mkey));
	json_object_set(spec, "nodeKey", json_new_string(node_key));
	if (disco_key)
		json_object_set(spec, "discoKey", json_new_string(disco_key));
	if (auth) {
		struct json *ref = json_new_object();
		json_object_set(ref, "namespace", jstr(kube_namespace(ak)));
		json_object_set(ref, "name", jstr(kube_name(ak)));
		json_object_set(spec, "authKey", ref);
		json_object_set(spec, "ephemeral", json_new_bool(ephemeral));
		json_object_set(spec, "tags", json_clone(tags) ?: json_new_array());
		/* Re-authenticating renews the key; tagged devices do not expire. */
		struct json *tn = informer_get(op->tailnets, NULL, tailnet);
		uint64_t life = 0;
		kube_duration_parse(json_str(json_path(tn, "spec", "keyExpiry", NULL)) ?: "4320h", &life);
		json_free(tn);
		if (life && !json_array_len(tags)) {
			kube_time_format(now + (time_t)(life / 1000), ts, sizeof(ts));
			json_object_set(spec, "keyExpiry", json_new_string(ts));
		} else {
			json_object_del(spec, "keyExpiry");
		}
	}
	if (json_array_len(routes))
		json_object_set(spec, "advertisedRoutes", json_clone(routes));
	else
		json_object_del(spec, "advertisedRoutes");

	int err = existing ? kube_update(op->kube, &res_devices, NULL, dev, false, &r)
			   : kube_create(op->kube, &res_devices, NULL, dev, &r);
	if (err || !kube_ok(&r)) {
		reply = error_reply(r.status == 409 ? "Conflict" : "Unavailable",
				    "cannot record the device (HTTP %ld %s: %s); try again", r.status, r.reason, r.message);
		kube_result_clear(&r);
		goto out;
	}
	kube_result_clear(&r);
	json_free(dev);
	dev = wait_addresses(c, name);
	if (!dev) {
		reply = error_reply("Unavailable", "the device has no addresses yet; try again");
		goto out;
	}
	reply = json_new_object();
	if (!reply)
		goto nomem;
	json_object_set(reply, "device", json_new_string(name));
	json_object_set(reply, "name", json_new_string(host));
	json_object_set(reply, "addresses", json_clone(json_path(dev, "status", "addresses", NULL)));
	json_object_set(reply, "ephemeral", json_new_bool(json_bool(json_path(dev, "spec", "ephemeral", NULL), false)));
	struct json *sfx = dns_suffix_json(c, tailnet);
	json_object_set(reply, "dnsSuffix", sfx);
	log_info("device registered", "device=%s machine=%.16s new=%s", name, mkey + 5, existing ? "no" : "yes");
	goto out;
nomem:
	reply = error_reply("Unavailable", "out of memory");
out:
	sodium_memzero(h, sizeof(h));
	json_free(existing);
	json_free(ak);
	json_free(dev);
	return reply;
}

static struct json *do_logout(struct coord *c, const char *mkey)
{
	struct json *dev = device_by_machine(c, mkey), *reply;
	struct kube_result r;

	if (!dev)
		return error_reply("NotRegistered", "this machine is not registered");
	if (kube_delete(c->op->kube, &res_devices, NULL, kube_name(dev), kube_uid(dev), NULL, &r) == 0 &&
	    (kube_ok(&r) || r.status == 404)) {
		reply = json_new_object();
		json_object_set(reply, "ok", json_new_bool(true));
		log_info("device logged out", "device=%s", kube_name(dev));
	} else {
		reply = error_reply("Unavailable", "cannot delete the device (HTTP %ld); try again", r.status);
	}
	kube_result_clear(&r);
	json_free(dev);
	return reply;
}

/* Online/offline transitions only (not heartbeats) reach the API server. */
static void do_online(struct coord *c, const char *device, bool online, time_t at)
{
	struct json *patch = json_new_object(), *st = json_new_object();
	struct kube_result r;
	char ts[32];

	kube_time_format(at, ts, sizeof(ts));
	json_object_set(st, "online", json_new_bool(online));
	json_object_set(st, "lastSeen", json_new_string(ts));
	json_object_set(patch, "status", st);
	if (kube_patch(c->op->kube, &res_devices, NULL, device, KUBE_PATCH_MERGE, patch, true, &r) == 0)
		kube_result_clear(&r);
	json_free(patch);
}

static void online_changed(struct coord *c, const char *device, bool online)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return;
	j->type = JOB_ONLINE;
	j->c = c;
	j->online = online;
	j->at = time(NULL);
	snprintf(j->device, sizeof(j->device), "%s", device);
	if (job_submit(c, j))
		free(j);
}

/* ---- HTTP handlers (loop thread) ---- */

static bool serving(struct coord *c, struct httpd_req *req)
{
	if (c->ready && c->op->running)
		return true;
	httpd_respond_text(req, 503, "not serving: %s\n", c->ready ? "not the leader, or caches not synced" : "control key not loaded");
	return false;
}

static void h_key(struct httpd_req *req, void *arg)
{
	struct coord *c = arg;

	if (!c->ready) {
		httpd_respond_text(req, 503, "control key not loaded\n");
		return;
	}
	char body[160];
	snprintf(body, sizeof(body), "{\"controlKey\":\"%s\"}\n", c->pub_text);
	httpd_respond(req, 200, "application/json", body, strlen(body));
}

static void h_handshake(struct httpd_req *req, void *arg)
{
	struct coord *c = arg;
	uint8_t msg2[CHANNEL_MSG2_LEN], ts[CHANNEL_TAI64N_LEN];
	struct session *s = NULL;
	uint8_t *last;
	size_t len;
	const void *body = httpd_req_body(req, &len);
	uint64_t id;

	if (!serving(c, req))
		return;
	c->stats.handshakes++;
	if (strmap_len(c->sessions) >= MAX_SESSIONS) {
		httpd_respond_text(req, 429, "too many sessions\n");
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		httpd_respond_text(req, 500, "out of memory\n");
		return;
	}
	do
		randombytes_buf(&id, sizeof(id));
	while (id == 0);
	if (channel_respond(c->priv, body, len, id, msg2, &s->ch, ts)) {
		c->stats.handshake_failures++;
		httpd_respond_text(req, 400, "handshake refused\n");
		goto fail;
	}
	channel_key_format(s->ch.peer_static, "mkey:", s->mkey, sizeof(s->mkey));
	/* A replayed message 1 carries a timestamp we have seen: refuse it. */
	last = strmap_get(c->handshake_ts, s->mkey);
	if (last && memcmp(ts, last, CHANNEL_TAI64N_LEN) <= 0) {
		c->stats.handshake_failures++;
		httpd_respond_text(req, 400, "handshake refused (replayed)\n");
		goto fail;
	}
	if (!last) {
		last = malloc(CHANNEL_TAI64N_LEN);
		if (!last || strmap_set(c->handshake_ts, s->mkey, last, NULL)) {
			free(last);
			httpd_respond_text(req, 500, "out of memory\n");
			goto fail;
		}
	}
	memcpy(last, ts, CHANNEL_TAI64N_LEN);
	snprintf(s->idhex, sizeof(s->idhex), "%016llx", (unsigned long long)id);
	s->last_used = now_ms(c);
	if (strmap_set(c->sessions, s->idhex, s, NULL)) {
		httpd_respond_text(req, 500, "out of memory\n");
		goto fail;
	}
	httpd_respond(req, 200, "application/octet-stream", msg2, sizeof(msg2));
	return;
fail:
	if (s)
		channel_session_wipe(&s->ch);
	free(s);
}

/* Opens the request's frame: the session and the JSON inside, or answers 400/401. */
static struct json *open_request(struct coord *c, struct httpd_req *req, struct session **out)
{
	size_t len;
	const void *body = httpd_req_body(req, &len);
	struct buf plain = BUF_INIT(MAX_CALL_BODY);
	struct json_error je;
	struct session *s;
	struct json *j = NULL;
	uint64_t id;
	char idhex[17];
	int err;

	if (!channel_frame_session(body, len, &id)) {
		httpd_respond_text(req, 400, "malformed frame\n");
		return NULL;
	}
	snprintf(idhex, sizeof(idhex), "%016llx", (unsigned long long)id);
	s = strmap_get(c->sessions, idhex);
	if (!s) {
		c->stats.frames_rejected++;
		httpd_respond_text(req, 401, "unknown session: handshake again\n");
		return NULL;
	}
	err = channel_open(&s->ch, body, len, &plain);
	if (err) {
		c->stats.frames_rejected++;
		httpd_respond_text(req, 401, "%s\n", err == -EALREADY ? "replayed frame" : "frame does not authenticate");
		buf_free(&plain);
		return NULL;
	}
	s->last_used = now_ms(c);
	j = json_parse((const char *)plain.data, plain.len, &je);
	sodium_memzero(plain.data, plain.len);
	buf_free(&plain);
	if (!j || !json_is_object(j)) {
		struct json *e = error_reply("BadRequest", "the request is not a JSON object");
		respond_sealed(req, s, e);
		json_free(e);
		json_free(j);
		return NULL;
	}
	*out = s;
	return j;
}

static void set_endpoints(struct coord *c, const char *device, const struct json *req)
{
	struct json *eps = json_get(req, "endpoints");
	struct node *n = node_get(c, device, true);
	struct json *dev;

	if (!n)
		return;
	if (json_is_array(eps) && json_array_len(eps) <= 64) {
		json_free(n->endpoints);
		n->endpoints = json_clone(eps);
	}
	if (json_get(req, "relay"))
		n->relay = (int)json_int(json_get(req, "relay"), 0);
	dev = informer_get(c->op->devices, NULL, device);
	if (dev)
		publish_device(c, dev);
	json_free(dev);
}

static void h_call(struct httpd_req *req, void *arg)
{
	struct coord *c = arg;
	struct session *s;
	struct json *j, *dev;
	const char *type;
	struct job *job = NULL;
	struct job **slot;

	if (!serving(c, req) || !(j = open_request(c, req, &s)))
		return;
	type = json_str(json_get(j, "type")) ?: "";
	if (strcmp(type, "update") == 0) {
		struct json *ok = json_new_object();
		dev = device_by_machine(c, s->mkey);
		if (dev)
			set_endpoints(c, kube_name(dev), j);
		json_object_set(ok, "ok", json_new_bool(dev != NULL));
		respond_sealed(req, s, dev ? ok : error_reply("NotRegistered", "this machine is not registered"));
		json_free(ok);
		json_free(dev);
		json_free(j);
		return;
	}
	if (strcmp(type, "register") != 0 && strcmp(type, "logout") != 0) {
		struct json *e = error_reply("BadRequest", "unknown call \"%s\"", type);
		respond_sealed(req, s, e);
		json_free(e);
		json_free(j);
		return;
	}
	job = calloc(1, sizeof(*job));
	slot = malloc(sizeof(*slot));
	if (!job || !slot) {
		free(job);
		free(slot);
		httpd_respond_text(req, 500, "out of memory\n");
		json_free(j);
		return;
	}
	job->type = strcmp(type, "register") == 0 ? JOB_REGISTER : JOB_LOGOUT;
	job->c = c;
	job->req = j;
	snprintf(job->sess_id, sizeof(job->sess_id), "%s", s->idhex);
	snprintf(job->mkey, sizeof(job->mkey), "%s", s->mkey);
	/* The answer needs API writes: reply later through a stream. */
	*slot = job;
	job->st = httpd_stream_start(req, 200, "application/octet-stream", 1u << 20, reply_stream_closed, slot);
	if (!job->st) {
		free(slot);
		job_free(job);
		httpd_respond_text(req, 500, "cannot defer the reply\n");
		return;
	}
	if (job_submit(c, job)) {
		struct json *e = error_reply("Busy", "the server is busy; try again");
		struct buf out = BUF_INIT(4096);
		if (seal_json(&s->ch, e, &out) == 0)
			httpd_stream_write(job->st, out.data, out.len);
		httpd_stream_close(job->st);
		*slot = NULL;
		buf_free(&out);
		json_free(e);
		job_free(job);
		return;
	}
	if (job->type == JOB_REGISTER)
		c->stats.registrations++;
}

static void conn_closed(struct httpd_stream *st, void *arg)
{
	struct mapconn *m = arg;
	struct coord *c = m->c;
	struct node *n = node_get(c, m->device, false);

	if (m->prev)
		m->prev->next = m->next;
	else
		c->conns = m->next;
	if (m->next)
		m->next->prev = m->prev;
	c->stats.streams--;
	if (n && --n->streams == 0 && !c->stopping) {
		struct json *dev = informer_get(c->op->devices, NULL, m->device);
		online_changed(c, m->device, false);
		if (dev)
			publish_device(c, dev);
		json_free(dev);
	}
	channel_session_wipe(&m->ch);
	free(m);
}

static void h_map(struct httpd_req *req, void *arg)
{
	struct coord *c = arg;
	struct session *s;
	struct json *j, *dev, *nm;
	struct mapconn *m;
	struct node *n;

	if (!serving(c, req) || !(j = open_request(c, req, &s)))
		return;
	dev = device_by_machine(c, s->mkey);
	if (!dev || !dev_usable(dev)) {
		struct json *e = dev ? error_reply(json_bool(json_path(dev, "status", "keyExpired", NULL), false) ? "KeyExpired" : "NotReady",
						   "the device cannot join yet (key expired or no addresses)")
				     : error_reply("NotRegistered", "this machine is not registered: run knit up --authkey KEY");
		respond_sealed(req, s, e);
		json_free(e);
		json_free(dev);
		json_free(j);
		return;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		goto nomem;
	m->c = c;
	/* The stream takes the session over (docs/control-protocol.md): its
	 * frames use the session's server-to-agent counter, so no call may
	 * share it. Calls on this session id now get 401. */
	m->ch = s->ch;
	strmap_del(c->sessions, s->idhex);
	channel_session_wipe(&s->ch);
	free(s);
	s = NULL;
	snprintf(m->device, sizeof(m->device), "%s", kube_name(dev));
	snprintf(m->tailnet, sizeof(m->tailnet), "%s", dev_tailnet(dev));
	snprintf(m->node_key, sizeof(m->node_key), "%s", json_str(json_path(dev, "spec", "nodeKey", NULL)));
	m->st = httpd_stream_start(req, 200, "application/octet-stream", STREAM_QUEUE, conn_closed, m);
	if (!m->st) {
		free(m);
		goto nomem;
	}
	m->next = c->conns;
	if (c->conns)
		c->conns->prev = m;
	c->conns = m;
	c->stats.streams++;
	n = node_get(c, m->device, true);
	if (n && n->streams++ == 0)
		online_changed(c, m->device, true);
	/* Endpoints come with the map request and are re-announced after every reconnect. */
	set_endpoints(c, m->device, j);
	nm = full_netmap(c, dev);
	stream_send_json(m, nm);
	json_free(nm);
	json_free(dev);
	json_free(j);
	return;
nomem:
	httpd_respond_text(req, 500, "out of memory\n");
	json_free(dev);
	json_free(j);
}

/* ---- timers ---- */

static void on_keepalive(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct coord *c = arg;
	static const char ka[] = "{\"type\":\"keepalive\"}";

	for (struct mapconn *m = c->conns, *next; m; m = next) {
		next = m->next;
		stream_send(m, ka, sizeof(ka) - 1);
	}
	loop_timer_arm(t, c->o.keepalive_ms);
}

static void on_sweep(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct coord *c = arg;
	uint64_t now = now_ms(c);
	char *dead[256];
	int n = 0;

	for (struct strmap_entry *e = strmap_first(c->sessions); e && n < 256; e = strmap_next(c->sessions, e)) {
		struct session *s = strmap_value(e);
		if (now - s->last_used > c->o.session_idle_ms)
			dead[n++] = strdup(strmap_key(e));
	}
	for (int i = 0; i < n; i++) {
		struct session *s = dead[i] ? strmap_del(c->sessions, dead[i]) : NULL;
		if (s) {
			channel_session_wipe(&s->ch);
			free(s);
		}
		free(dead[i]);
	}
	loop_timer_arm(t, 60000);
}

/* ---- lifecycle ---- */

int coord_new(struct operator *op, const struct coord_opts *o, struct coord **out)
{
	struct coord *c = calloc(1, sizeof(*c));
	struct httpd_opts ho = { .listen = o->listen, .listen_fd = -1, .conn_limit = 20000, .conn_timeout_s = 120 };
	int err = -ENOMEM;

	if (!c)
		return -ENOMEM;
	c->op = op;
	c->o = *o;
	if (!c->o.keepalive_ms)
		c->o.keepalive_ms = 30000;
	if (!c->o.session_idle_ms)
		c->o.session_idle_ms = 10 * 60000;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->sessions = strmap_new();
	c->handshake_ts = strmap_new();
	c->nodes = strmap_new();
	c->keepalive = loop_timer_new(op->loop, on_keepalive, c);
	c->sweep = loop_timer_new(op->loop, on_sweep, c);
	if (!c->sessions || !c->handshake_ts || !c->nodes || !c->keepalive || !c->sweep)
		goto fail;
	err = httpd_new(op->loop, &ho, &c->http);
	if (err)
		goto fail;
	if ((err = httpd_route(c->http, "GET", "/knit/v1/key", 0, h_key, c)) ||
	    (err = httpd_route(c->http, "POST", "/knit/v1/handshake", CHANNEL_MSG1_LEN, h_handshake, c)) ||
	    (err = httpd_route(c->http, "POST", "/knit/v1/call", MAX_CALL_BODY, h_call, c)) ||
	    (err = httpd_route(c->http, "POST", "/knit/v1/map", MAX_CALL_BODY, h_map, c)))
		goto fail;
	for (; c->nworkers < JOB_WORKERS; c->nworkers++) {
		if ((err = -pthread_create(&c->workers[c->nworkers], NULL, job_worker, c)))
			goto fail;
	}
	if ((err = -pthread_create(&c->key_loader, NULL, load_key, c)))
		goto fail;
	c->key_loader_started = true;
	loop_timer_arm(c->keepalive, c->o.keepalive_ms);
	loop_timer_arm(c->sweep, 60000);
	*out = c;
	return 0;
fail:
	coord_free(c);
	return err;
}

void coord_drop_all(struct coord *c)
{
	if (!c)
		return;
	for (struct mapconn *m = c->conns; m; m = m->next)
		httpd_stream_close(m->st);
	for (struct strmap_entry *e = strmap_first(c->sessions); e; e = strmap_next(c->sessions, e)) {
		struct session *s = strmap_value(e);
		channel_session_wipe(&s->ch);
		free(s);
	}
	strmap_free(c->sessions);
	c->sessions = strmap_new();
}

void coord_shutdown(struct coord *c)
{
	if (!c)
		return;
	c->stopping = true;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void coord_join(struct coord *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->nworkers; i++)
		pthread_join(c->workers[i], NULL);
	c->nworkers = 0;
	if (c->key_loader_started)
		pthread_join(c->key_loader, NULL);
	c->key_loader_started = false;
}

void coord_free(struct coord *c)
{
	if (!c)
		return;
	coord_shutdown(c);
	coord_join(c);
	/* Jobs never started. */
	for (struct job *j = c->head, *n; j; j = n) {
		n = j->next;
		job_free(j);
	}
	httpd_free(c->http); /* closes streams: conn_closed frees the mapconns */
	if (c->sessions) {
		for (struct strmap_entry *e = strmap_first(c->sessions); e; e = strmap_next(c->sessions, e)) {
			struct session *s = strmap_value(e);
			channel_session_wipe(&s->ch);
			free(s);
		}
		strmap_free(c->sessions);
	}
	if (c->handshake_ts) {
		for (struct strmap_entry *e = strmap_first(c->handshake_ts); e; e = strmap_next(c->handshake_ts, e))
			free(strmap_value(e));
		strmap_free(c->handshake_ts);
	}
	if (c->nodes) {
		for (struct strmap_entry *e = strmap_first(c->nodes); e; e = strmap_next(c->nodes, e)) {
			struct node *n = strmap_value(e);
			json_free(n->endpoints);
			free(n->last_peer);
			free(n);
		}
		strmap_free(c->nodes);
	}
	loop_timer_free(c->keepalive);
	loop_timer_free(c->sweep);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	sodium_memzero(c->priv, sizeof(c->priv));
	free(c);
}

uint16_t coord_port(const struct coord *c)
{
	return httpd_port(c->http);
}

const char *coord_control_key(const struct coord *c)
{
	return c && c->ready ? c->pub_text : "";
}

bool coord_ready(const struct coord *c)
{
	return c && c->ready;
}

void coord_stats(const struct coord *c, struct coord_stats *out)
{
	*out = c->stats;
	out->sessions = strmap_len(c->sessions);
}
