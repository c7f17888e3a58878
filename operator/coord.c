/* The coordination server: sessions, HTTP handlers, the control key,
 * lifecycle. See coord.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "control/messages.h"
#include "coord-internal.h"
#include "httpd.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "operator.h"
#include "ratelimit.h"
#include "strmap.h"
#include "wg/noise.h"

/* ---- helpers shared with netmap.c and register.c ---- */

uint64_t coord_now_ms(struct coord *c)
{
	return loop_now(c->op->loop);
}

void coord_refused(struct coord *c, const char *call, const char *reason)
{
	metrics_inc(METRICS_WITH(c->m_refusals, call, reason && *reason ? reason : "Unknown"));
}

/* One token of mkey's limit for call, or false after answering 429 with
 * Retry-After (seconds, rounded up) and counting the refusal. */
static bool within_limit(struct coord *c, struct httpd_req *req, const char *mkey, enum ratelimit_call call)
{
	struct ratelimit *r = strmap_get(c->limits, mkey);
	uint64_t wait_ms;
	char secs[24];

	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r || strmap_set(c->limits, mkey, r, NULL)) {
			free(r);
			return true; /* out of memory: not the client's fault */
		}
	}
	wait_ms = ratelimit_take(r, ratelimit_rules, call, coord_now_ms(c));
	if (!wait_ms)
		return true;
	snprintf(secs, sizeof(secs), "%llu", (unsigned long long)((wait_ms + 999) / 1000));
	httpd_req_set_header(req, "Retry-After", secs);
	httpd_respond_text(req, 429, "too many %s calls from this machine: retry in %s s\n", ratelimit_call_name(call),
			   secs);
	coord_refused(c, ratelimit_call_name(call), "RateLimited");
	return false;
}

struct json *coord_jstr(const char *s)
{
	return json_new_string(s ? s : "");
}

struct json *coord_error_reply(const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return messages_error_new(code, msg);
}

int coord_seal_record(struct channel_session *ch, const void *text, size_t len, struct buf *out)
{
	size_t start = out->len;
	uint32_t n;
	int err;

	/* Seal in place after a 4-byte hole, then fill in the length. */
	if (!buf_reserve(out, 4, &err))
		return err;
	buf_commit(out, 4);
	err = channel_seal(ch, text, len, out);
	if (err)
		return err;
	n = htonl((uint32_t)(out->len - start - 4));
	memcpy(out->data + start, &n, 4);
	return 0;
}

/* Seals json with ch into out as a bare frame. */
int coord_seal_json(struct channel_session *ch, const struct json *j, struct buf *out)
{
	struct buf text = BUF_INIT(16u << 20);
	int err = json_dump(j, &text, 0);

	if (!err)
		err = channel_seal(ch, text.data ? text.data : (uint8_t *)"", text.len, out);
	buf_free(&text);
	return err;
}

void coord_respond_sealed(struct httpd_req *req, struct session *s, const struct json *j)
{
	struct buf out = BUF_INIT(16u << 20);

	if (coord_seal_json(&s->ch, j, &out) == 0)
		httpd_respond_buf(req, 200, "application/octet-stream", &out);
	else
		httpd_respond_text(req, 500, "cannot seal the reply\n");
	buf_free(&out);
}

/* ---- the control key: one Secret shared by every replica ---- */

static void key_loaded(struct loop *loop, void *arg)
{
	struct coord *c = arg;

	/* The loader thread goes on keeping the Secret (ctrlkey.c); coord_join
	 * joins it. */
	if (c->stopping)
		return;
	ctrlkey_announce(c, false);
	c->ready = true;
	log_info("control key ready", "key=%s", c->pub_text);
}

static void *load_key(void *arg)
{
	struct coord *c = arg;
	struct operator *op = c->op;

	for (unsigned attempt = 0; !c->stopping; attempt++) {
		struct kube_result r;
		int err = kube_get(op->kube, &kube_res_secrets, op->namespace, CONTROL_SECRET, &r);

		if (!err && kube_ok(&r) && ctrlkey_decode(r.obj, c->priv)) {
			/* A rotation under way (ctrlkey.c) goes on. */
			ctrlkey_adopt_start(c, r.obj);
			json_free_secret(kube_result_take(&r));
			break;
		}
		if (!err && r.status == 404 && !ctrlkey_may_mint(c)) {
			struct timespec ts = { .tv_sec = 5 };
			nanosleep(&ts, NULL);
			continue;
		}
		if (!err && r.status == 404) {
			uint8_t priv[32];
			struct json *s;

			channel_keygen(priv);
			s = ctrlkey_secret_doc(priv);
			sodium_memzero(priv, sizeof(priv));
			kube_result_clear(&r);
			if (s) {
				struct kube_result cr;
				/* 409: another replica won the race; read theirs next round. */
				if (kube_create(op->kube, &kube_res_secrets, op->namespace, s, &cr) == 0) {
					if (kube_ok(&cr))
						log_info("created the control key", "secret=%s/%s", op->namespace, CONTROL_SECRET);
					json_free_secret(kube_result_take(&cr));
				}
				json_free_secret(s);
			}
			continue;
		}
		if (!err)
			log_warn("cannot read the control key", "status=%ld message=\"%s\"", r.status, r.message);
		json_free_secret(kube_result_take(&r));
		struct timespec ts = { .tv_sec = attempt < 5 ? 1 : 5 };
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&c->keys_lock);
	channel_public_key(c->pub, c->priv);
	pthread_mutex_unlock(&c->keys_lock);
	loop_post(c->op->loop, key_loaded, c);
	ctrlkey_keep(c);
	return NULL;
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

/* An unknown machine's session stops counting as one (it went, or its
 * machine registered). */
static void unknown_release(struct coord *c, struct session *s)
{
	uintptr_t n = (uintptr_t)strmap_get(c->unknown_per_ip, s->ip);

	if (n <= 1)
		strmap_del(c->unknown_per_ip, s->ip);
	else
		strmap_set(c->unknown_per_ip, s->ip, (void *)(n - 1), NULL);
	c->unknown_sessions--;
}

/* Forgets a session (its keys wiped) and its unknown-machine count. */
static void session_free(struct coord *c, struct session *s)
{
	if (!s->known)
		unknown_release(c, s);
	channel_session_wipe(&s->ch);
	free(s);
}

/* handshake_ts values: the last TAI64N seen, then when (our ms clock). */
#define HS_TS_LEN (CHANNEL_TAI64N_LEN + sizeof(uint64_t))

static void hs_ts_set_seen(uint8_t *v, uint64_t ms)
{
	memcpy(v + CHANNEL_TAI64N_LEN, &ms, sizeof(ms));
}

static uint64_t hs_ts_seen(const uint8_t *v)
{
	uint64_t ms;

	memcpy(&ms, v + CHANNEL_TAI64N_LEN, sizeof(ms));
	return ms;
}

/* TAI64N (big-endian 2^62 + seconds, then nanoseconds) as Unix seconds. */
static int64_t tai64n_seconds(const uint8_t ts[CHANNEL_TAI64N_LEN])
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | ts[i];
	return (int64_t)(v - (1ull << 62));
}

/* Message 1 of the Noise IK handshake (docs/control-protocol.md). The
 * responder's work (two DHs) is done before we know who is asking; what
 * we keep afterwards depends on it. A machine the tailnet knows (a Device
 * holds its key) always gets a session, and its timestamps are kept to
 * refuse replays. A machine it does not know gets one only while there is
 * room among MAX_UNKNOWN_SESSIONS, at most UNKNOWN_SESSIONS_PER_IP from one
 * address, and loses it after UNKNOWN_SESSION_IDLE_MS unused, with the
 * timestamp that refuses its replays. */
static void h_handshake(struct httpd_req *req, void *arg)
{
	struct coord *c = arg;
	uint8_t msg2[CHANNEL_MSG2_LEN], ts[CHANNEL_TAI64N_LEN];
	struct session *s = NULL;
	struct json *dev;
	uint8_t *last;
	size_t len;
	const void *body = httpd_req_body(req, &len);
	uintptr_t per_ip = 0;
	uint64_t id;
	uint8_t keys[3][32];
	size_t nkeys, i;

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
	/* During a rotation (ctrlkey.c) the next and the previous key are
	 * accepted too: one more DH for each that fails. */
	nkeys = ctrlkey_accepted(c, keys);
	for (i = 0; i < nkeys && channel_respond(keys[i], body, len, id, msg2, &s->ch, ts); i++)
		;
	sodium_memzero(keys, sizeof(keys));
	if (i == nkeys) {
		c->stats.handshake_failures++;
		httpd_respond_text(req, 400, "handshake refused\n");
		goto fail;
	}
	channel_key_format(s->ch.peer_static, "mkey:", s->mkey, sizeof(s->mkey));
	snprintf(s->ip, sizeof(s->ip), "%s", httpd_req_remote_ip(req));
	if (tai64n_seconds(ts) > (int64_t)time(NULL) + HANDSHAKE_FUTURE_S) {
		/* Kept, such a timestamp would refuse this machine until then. */
		c->stats.refused_future++;
		httpd_respond_text(req, 400, "handshake refused: its clock is more than %d s ahead of the server's\n",
				   HANDSHAKE_FUTURE_S);
		goto fail;
	}
	dev = register_device_by_machine(c, s->mkey);
	s->known = dev != NULL;
	json_free(dev);
	/* A replayed message 1 carries a timestamp we have seen: refuse it. */
	last = strmap_get(c->handshake_ts, s->mkey);
	if (last && memcmp(ts, last, CHANNEL_TAI64N_LEN) <= 0) {
		c->stats.handshake_failures++;
		httpd_respond_text(req, 400, "handshake refused (replayed)\n");
		goto fail;
	}
	if (!s->known) {
		per_ip = (uintptr_t)strmap_get(c->unknown_per_ip, s->ip);
		if (c->unknown_sessions >= MAX_UNKNOWN_SESSIONS) {
			c->stats.refused_unknown_full++;
			httpd_respond_text(req, 429, "too many new machines joining: try again shortly\n");
			goto fail;
		}
		if (per_ip >= UNKNOWN_SESSIONS_PER_IP) {
			c->stats.refused_unknown_per_ip++;
			httpd_respond_text(req, 429, "too many new machines joining from %s: try again shortly\n", s->ip);
			goto fail;
		}
	}
	/* Timestamps: a known machine's for as long as it is known, an unknown
	 * one's while it holds a session (the sweep prunes both), so there
	 * are never more than sessions and Devices. */
	if (!last) {
		last = malloc(HS_TS_LEN);
		if (!last || strmap_set(c->handshake_ts, s->mkey, last, NULL)) {
			free(last);
			httpd_respond_text(req, 500, "out of memory\n");
			goto fail;
		}
	}
	memcpy(last, ts, CHANNEL_TAI64N_LEN);
	hs_ts_set_seen(last, coord_now_ms(c));
	if (!s->known) {
		if (strmap_set(c->unknown_per_ip, s->ip, (void *)(per_ip + 1), NULL)) {
			httpd_respond_text(req, 500, "out of memory\n");
			goto fail;
		}
		c->unknown_sessions++;
	}
	snprintf(s->idhex, sizeof(s->idhex), "%016llx", (unsigned long long)id);
	s->last_used = coord_now_ms(c);
	if (strmap_set(c->sessions, s->idhex, s, NULL)) {
		httpd_respond_text(req, 500, "out of memory\n");
		session_free(c, s);
		return;
	}
	httpd_respond(req, 200, "application/octet-stream", msg2, sizeof(msg2));
	return;
fail:
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
	s->last_used = coord_now_ms(c);
	j = json_parse((const char *)plain.data, plain.len, &je);
	sodium_memzero(plain.data, plain.len);
	buf_free(&plain);
	if (!j || !json_is_object(j)) {
		struct json *e = coord_error_reply("BadRequest", "the request is not a JSON object");
		coord_respond_sealed(req, s, e);
		json_free(e);
		json_free(j);
		return NULL;
	}
	*out = s;
	return j;
}

/* Soft state from an update or map request, parsed by the codec: what is
 * stored is what every agent accepts. Takes u's endpoints. */
static void set_soft_state(struct coord *c, const struct json *dev, struct update_request *u, bool has_endpoints,
			   bool publish)
{
	struct node *n = mapstream_node_get(c, kube_name(dev), operator_tailnet_of(dev));

	if (!n)
		return;
	if (has_endpoints) {
		free(n->endpoints);
		n->endpoints = u->endpoints;
		n->nendpoints = u->nendpoints;
		u->endpoints = NULL;
		u->nendpoints = 0;
	}
	if (u->has_relay)
		n->relay = u->relay;
	if (publish)
		mapstream_publish_device(c, dev);
}

/* Which limit a call counts against: logout goes with register. */
static enum ratelimit_call call_kind(const char *type)
{
	if (!strcmp(type, "update"))
		return RATELIMIT_UPDATE;
	if (!strcmp(type, "register_pod"))
		return RATELIMIT_REGISTER_POD;
	return RATELIMIT_REGISTER;
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
	if (!within_limit(c, req, s->mkey, call_kind(type))) {
		json_free(j);
		return;
	}
	if (strcmp(type, "update") == 0) {
		struct update_request u;
		struct json *reply;
		char why[200];
		const char *code;
		bool is_map = false;

		if (!update_request_from_json(j, &u, &is_map, why, sizeof(why)) || is_map) {
			reply = coord_error_reply("BadRequest", "%s", is_map ? "a map request is not a call" : why);
		} else if (!(dev = register_device_by_machine(c, s->mkey))) {
			reply = coord_error_reply("NotRegistered", "this machine is not registered");
		} else {
			set_soft_state(c, dev, &u, json_get(j, "endpoints") != NULL, true);
			reply = json_new_object();
			if (reply && json_object_set(reply, "ok", json_new_bool(true))) {
				json_free(reply);
				reply = NULL;
			}
			json_free(dev);
		}
		update_request_free(&u);
		if (messages_error(reply, &code, NULL))
			coord_refused(c, "update", code);
		if (reply)
			coord_respond_sealed(req, s, reply);
		else
			httpd_respond_text(req, 500, "out of memory\n");
		json_free(reply);
		json_free(j);
		return;
	}
	if (strcmp(type, "register") != 0 && strcmp(type, "logout") != 0 && strcmp(type, "register_pod") != 0) {
		struct json *e = coord_error_reply("BadRequest", "unknown call \"%s\"", type);
		coord_refused(c, "unknown", "BadRequest");
		coord_respond_sealed(req, s, e);
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
	job->type = !strcmp(type, "register") ? JOB_REGISTER : !strcmp(type, "register_pod") ? JOB_REGISTER_POD : JOB_LOGOUT;
	job->c = c;
	job->req = j;
	snprintf(job->sess_id, sizeof(job->sess_id), "%s", s->idhex);
	snprintf(job->mkey, sizeof(job->mkey), "%s", s->mkey);
	/* The answer needs API writes: reply later through a stream. */
	*slot = job;
	job->slot = slot;
	job->st = httpd_stream_start(req, 200, "application/octet-stream", 1u << 20, register_reply_stream_closed, slot);
	if (!job->st) {
		free(slot);
		register_job_free(job);
		httpd_respond_text(req, 500, "cannot defer the reply\n");
		return;
	}
	if (register_job_submit(c, job)) {
		struct json *e = coord_error_reply("Busy", "the server is busy; try again");
		coord_refused(c, type, "Busy");
		struct buf out = BUF_INIT(4096);
		if (coord_seal_json(&s->ch, e, &out) == 0)
			httpd_stream_write(job->st, out.data, out.len);
		httpd_stream_close(job->st);
		*slot = NULL;
		buf_free(&out);
		json_free(e);
		register_job_free(job);
		return;
	}
	if (job->type == JOB_REGISTER)
		c->stats.registrations++;
}

static void conn_closed(struct httpd_stream *st, void *arg)
{
	struct mapconn *m = arg;
	struct coord *c = m->c;

	if (m->prev)
		m->prev->next = m->next;
	else
		c->conns = m->next;
	if (m->next)
		m->next->prev = m->prev;
	c->stats.streams--;
	if (m->node)
		mapstream_node_stream(c, m->node, false, NULL);
	channel_session_wipe(&m->ch);
	mappolicy_stream_closed(m);
	free(m);
}

/* One stream record (length + frame) as a whole response. */
static void respond_record(struct httpd_req *req, struct session *s, const struct json *j)
{
	struct buf text = BUF_INIT(16u << 20), out = BUF_INIT(16u << 20);

	if (json_dump(j, &text, 0) == 0 && coord_seal_record(&s->ch, text.data, text.len, &out) == 0)
		httpd_respond_buf(req, 200, "application/octet-stream", &out);
	else
		httpd_respond_text(req, 500, "cannot seal the reply\n");
	buf_free(&text);
	buf_free(&out);
}

static void h_map(struct httpd_req *req, void *arg)
{
	struct coord *c = arg;
	struct session *s;
	struct json *j, *dev;
	struct mapconn *m;

	if (!serving(c, req) || !(j = open_request(c, req, &s)))
		return;
	if (!within_limit(c, req, s->mkey, RATELIMIT_MAP)) {
		json_free(j);
		return;
	}
	dev = register_device_by_machine(c, s->mkey);
	if (!dev || !mapstream_device_usable(dev)) {
		bool expired = json_bool(json_path(dev, "status", "keyExpired", NULL), false);
		struct json *e = dev ? coord_error_reply(expired ? "KeyExpired" : "NotReady",
						   "the device cannot join yet (key expired or no addresses)")
				     : coord_error_reply("NotRegistered", "this machine is not registered: run knit up --authkey KEY");

		coord_refused(c, "map", !dev ? "NotRegistered" : expired ? "KeyExpired" : "NotReady");
		/* A map answer is always records, errors included. */
		respond_record(req, s, e);
		json_free(e);
		json_free(dev);
		json_free(j);
		return;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		goto nomem;
	m->c = c;
	snprintf(m->device, sizeof(m->device), "%s", kube_name(dev));
	snprintf(m->tailnet, sizeof(m->tailnet), "%s", operator_tailnet_of(dev));
	m->cur.device = m->device;
	m->cur.tailnet = m->tailnet;
	m->node = mapstream_node_get(c, m->device, m->tailnet);
	if (!m->node) {
		free(m);
		goto nomem;
	}
	m->st = httpd_stream_start(req, 200, "application/octet-stream", STREAM_QUEUE, conn_closed, m);
	if (!m->st) {
		free(m);
		goto nomem;
	}
	/* The stream takes the session over (docs/control-protocol.md): its
	 * frames use the session's server-to-agent counter, so no call may
	 * share it. Calls on this session id now get 401. */
	m->ch = s->ch;
	strmap_del(c->sessions, s->idhex);
	channel_session_wipe(&s->ch);
	free(s);
	httpd_stream_set_fill(m->st, STREAM_LOW_WATER, mapstream_fill);
	m->next = c->conns;
	if (c->conns)
		c->conns->prev = m;
	c->conns = m;
	c->stats.streams++;
	/* The endpoints that came with the request (re-announced after every
	 * reconnect) and the online flag go to the peers; this stream pulls
	 * its full netmap, its own new record included, as it reads. */
	{
		struct update_request u;
		char why[200];
		bool is_map = false;

		/* Soft state that does not parse is not stored: the stream opens
		 * all the same (the agent's next update may be better). */
		if (update_request_from_json(j, &u, &is_map, why, sizeof(why)))
			set_soft_state(c, dev, &u, json_get(j, "endpoints") != NULL, false);
		else
			log_warn("coordination: map request's soft state ignored", "device=%s reason=\"%s\"",
				 m->device, why);
		update_request_free(&u);
	}
	mapstream_node_stream(c, m->node, true, dev);
	mapstream_sync(m);
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
		mapstream_send(m, ka, sizeof(ka) - 1);
	}
	loop_timer_arm(t, c->o.keepalive_ms);
}

/* Thousands of streams each queue and free a record at once: the freed
 * memory stays in malloc's arenas, and RSS with it, unless handed back. */
static void on_trim(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct coord *c = arg;

	/* Once a burst is over (not during it: a trim walks the heap). */
	if (c->sent_since_trim > TRIM_AFTER_BYTES && c->sent_since_trim - c->sent_at_tick < TRIM_QUIET_BYTES) {
		c->sent_since_trim = 0;
		malloc_trim(0);
	}
	c->sent_at_tick = c->sent_since_trim;
	loop_timer_arm(t, TRIM_EVERY_MS);
}

/* Appends a copy of key to a growing list (map keys cannot be deleted
 * while the map is walked). false when out of memory. */
static bool keys_add(char ***keys, size_t *n, size_t *cap, const char *key)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 256;
		char **k = realloc(*keys, nc * sizeof(*k));
		if (!k)
			return false;
		*keys = k;
		*cap = nc;
	}
	if (!((*keys)[*n] = strdup(key)))
		return false;
	(*n)++;
	return true;
}

struct stale_online {
	struct coord *c;
	char **names;
	size_t n, cap;
	bool oom;
};

static void find_stale_online(const struct json *dev, void *arg)
{
	struct stale_online *so = arg;
	struct node *n = strmap_get(so->c->nodes, kube_name(dev) ?: "");

	if (json_bool(json_path(dev, "status", "online", NULL), false) && (!n || n->streams == 0) &&
	    !keys_add(&so->names, &so->n, &so->cap, kube_name(dev) ?: ""))
		so->oom = true;
}

/* Once per leadership, OFFLINE_SWEEP_GRACE_MS after it began serving:
 * Devices the API server shows online that hold no stream here are
 * marked offline. A leader that crashed wrote no offline transitions, and
 * an ephemeral device that went away meanwhile would otherwise stay
 * "online" for ever and never be collected. The grace lets agents that
 * are still there reconnect first (no flapping write for them). */
static void offline_sweep(struct coord *c, uint64_t now)
{
	struct stale_online so = { .c = c };

	if (!c->ready || !c->op->running || c->offline_swept || c->stopping)
		return;
	if (!c->serving_since) {
		c->serving_since = now;
		return;
	}
	if (now - c->serving_since < OFFLINE_SWEEP_GRACE_MS)
		return;
	c->offline_swept = true;
	informer_foreach(c->op->devices, find_stale_online, &so);
	for (size_t i = 0; i < so.n; i++) {
		register_online_changed(c, so.names[i], false);
		free(so.names[i]);
	}
	free(so.names);
	if (so.n || so.oom)
		log_info("devices without a stream marked offline", "count=%zu complete=%s", so.n, so.oom ? "no" : "yes");
	if (so.oom)
		c->offline_swept = false; /* again next round */
}

/* Every few seconds: sessions idle too long go (an unknown machine's
 * sooner, unless it has registered since), and replay timestamps of
 * machines the tailnet no longer knows. Uncapped: a flood is cleared in
 * one pass. */
static void on_sweep(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct coord *c = arg;
	uint64_t now = coord_now_ms(c);
	char **dead = NULL;
	size_t n = 0, cap = 0;

	/* Stopping: the informers may be freed already (main.c frees them
	 * once the workers are joined, while the loop still runs to release
	 * the Lease), and a machine without a Device would look unknown. */
	if (c->stopping)
		return;
	for (struct strmap_entry *e = strmap_first(c->sessions); e; e = strmap_next(c->sessions, e)) {
		struct session *s = strmap_value(e);
		uint64_t idle = now - s->last_used;

		if (!s->known && idle <= UNKNOWN_SESSION_IDLE_MS)
			continue;
		if (!s->known) {
			/* Registered since? Then it is a known machine's session. */
			struct json *dev = register_device_by_machine(c, s->mkey);
			if (dev) {
				json_free(dev);
				unknown_release(c, s);
				s->known = true;
			}
		}
		if (s->known && idle <= c->o.session_idle_ms)
			continue;
		if (!keys_add(&dead, &n, &cap, strmap_key(e)))
			break;
	}
	for (size_t i = 0; i < n; i++) {
		struct session *s = strmap_del(c->sessions, dead[i]);
		if (s)
			session_free(c, s);
		free(dead[i]);
	}
	free(dead);
	/* Replay timestamps of machines without a Device, once their
	 * unknown-machine session could be gone. */
	n = cap = 0;
	dead = NULL;
	for (struct strmap_entry *e = strmap_first(c->handshake_ts); e; e = strmap_next(c->handshake_ts, e)) {
		struct json *dev;
		if (now - hs_ts_seen(strmap_value(e)) <= UNKNOWN_SESSION_IDLE_MS)
			continue;
		dev = register_device_by_machine(c, strmap_key(e));
		if (dev) {
			json_free(dev);
			continue;
		}
		if (!keys_add(&dead, &n, &cap, strmap_key(e)))
			break;
	}
	for (size_t i = 0; i < n; i++) {
		free(strmap_del(c->handshake_ts, dead[i]));
		free(dead[i]);
	}
	free(dead);
	/* Call limits of machines that called nothing lately: their buckets
	 * are full again, so forgetting them changes nothing. */
	n = cap = 0;
	dead = NULL;
	for (struct strmap_entry *e = strmap_first(c->limits); e; e = strmap_next(c->limits, e))
		if (ratelimit_idle(strmap_value(e), ratelimit_rules, now) && !keys_add(&dead, &n, &cap, strmap_key(e)))
			break;
	for (size_t i = 0; i < n; i++) {
		free(strmap_del(c->limits, dead[i]));
		free(dead[i]);
	}
	free(dead);
	offline_sweep(c, now);
	loop_timer_arm(t, 5000);
}

/* ---- lifecycle ---- */

int coord_new(struct operator *op, const struct coord_opts *o, struct coord **out)
{
	struct coord *c = calloc(1, sizeof(*c));
	/* Thousands of mostly idle streams: a small per-connection pool (the
	 * requests are small; bodies are collected outside it). */
	/* A request must arrive whole within 10 s (a slowloris client is cut
	 * off however slowly it trickles), and bodies waiting for their
	 * handler may hold 64 MiB in all (a call body is at most
	 * MAX_CALL_BODY). */
	struct httpd_opts ho = { .listen = o->listen, .listen_fd = -1, .conn_limit = 20000, .conn_timeout_s = 120,
				 .conn_memory = 16u << 10, .per_ip_limit = o->per_ip_limit,
				 .request_timeout_ms = 10000, .body_budget = 64u << 20 };
	int err = -ENOMEM;

	if (!c)
		return -ENOMEM;
	c->op = op;
	c->o = *o;
	c->nodes = strmap_new();
	c->policies = strmap_new();
	mapstream_init(c);
	if (!c->o.keepalive_ms)
		c->o.keepalive_ms = 30000;
	if (!c->o.session_idle_ms)
		c->o.session_idle_ms = 10 * 60000;
	if (!c->o.record_bytes)
		c->o.record_bytes = RECORD_CHUNK;
	pthread_condattr_t ca;

	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->keys_lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->dev_cond, &ca);
	pthread_condattr_destroy(&ca);
	c->sessions = strmap_new();
	c->handshake_ts = strmap_new();
	c->unknown_per_ip = strmap_new();
	c->online_pending = strmap_new();
	c->limits = strmap_new();
	c->m_refusals = op->metrics ? metrics_counter_new(op->metrics, "knit_coord_refusals_total",
							  "Coordination calls refused, by call and reason (the error code, "
							  "or RateLimited: 429).",
							  (const char *[]){ "call", "reason", NULL })
				    : NULL;
	c->keepalive = loop_timer_new(op->loop, on_keepalive, c);
	c->sweep = loop_timer_new(op->loop, on_sweep, c);
	c->flush = loop_timer_new(op->loop, mapstream_flush, c);
	c->trim = loop_timer_new(op->loop, on_trim, c);
	c->pod_sweep = loop_timer_new(op->loop, podident_timer, c);
	if (!c->trim || !c->pod_sweep || !c->sessions || !c->handshake_ts || !c->unknown_per_ip || !c->nodes || !c->policies || !c->online_pending || !c->limits || !c->keepalive || !c->sweep || !c->flush)
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
		if ((err = -pthread_create(&c->workers[c->nworkers], NULL, register_job_worker, c)))
			goto fail;
	}
	if ((err = -pthread_create(&c->key_loader, NULL, load_key, c)))
		goto fail;
	c->key_loader_started = true;
	loop_timer_arm(c->keepalive, c->o.keepalive_ms);
	loop_timer_arm(c->sweep, 5000);
	loop_timer_arm(c->trim, TRIM_EVERY_MS);
	loop_timer_arm(c->pod_sweep, 1000);
	if (podident_watch_start(c))
		log_warn("cannot watch the pods with identities: their Devices go within a second instead");
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
	for (struct mapconn *m = c->conns; m; m = m->next) {
		/* The streams end after this returns, when coord_shutdown()
		 * has stopped transitions: a graceful stop queues them here. */
		if (c->drain_online && m->node && !m->node->dead)
			register_online_changed(c, m->node->pub.name, false);
		httpd_stream_close(m->st);
	}
	for (struct strmap_entry *e = strmap_first(c->sessions); e; e = strmap_next(c->sessions, e)) {
		struct session *s = strmap_value(e);
		channel_session_wipe(&s->ch);
		free(s);
	}
	strmap_free(c->sessions);
	c->sessions = strmap_new();
	strmap_free(c->unknown_per_ip);
	c->unknown_per_ip = strmap_new();
	c->unknown_sessions = 0;
}

void coord_stop_gracefully(struct coord *c)
{
	if (c)
		register_drain_offline(c);
}

void coord_shutdown(struct coord *c)
{
	if (!c)
		return;
	c->stopping = true;
	/* Two-phase stop: no timer of ours runs after this (they read the
	 * caches main.c frees before the loop ends). */
	loop_timer_disarm(c->keepalive);
	loop_timer_disarm(c->sweep);
	loop_timer_disarm(c->flush);
	loop_timer_disarm(c->trim);
	loop_timer_disarm(c->pod_sweep);
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->cond);
	pthread_cond_broadcast(&c->dev_cond);
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
		register_job_free(j);
	}
	for (struct job *j = c->ohead, *n; j; j = n) {
		n = j->next;
		register_job_free(j);
	}
	strmap_free(c->online_pending);
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
	strmap_free(c->unknown_per_ip);
	if (c->limits) {
		for (struct strmap_entry *e = strmap_first(c->limits); e; e = strmap_next(c->limits, e))
			free(strmap_value(e));
		strmap_free(c->limits);
	}
	mappolicy_free_all(c);
	mapstream_free(c);
	loop_timer_free(c->keepalive);
	loop_timer_free(c->sweep);
	loop_timer_free(c->flush);
	loop_timer_free(c->trim);
	informer_free(c->pod_watch);
	loop_timer_free(c->pod_sweep);
	pthread_cond_destroy(&c->cond);
	pthread_cond_destroy(&c->dev_cond);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->keys_lock);
	sodium_memzero(c->priv, sizeof(c->priv));
	sodium_memzero(c->next_priv, sizeof(c->next_priv));
	sodium_memzero(c->prev_priv, sizeof(c->prev_priv));
	free(c);
}

void coord_http_stats(const struct coord *c, struct httpd_stats *out)
{
	httpd_get_stats(c->http, out);
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

/* ---- informer hooks ---- */

void coord_device_changed(struct coord *c, const struct json *old, const struct json *dev)
{
	if (!c)
		return;
	mapstream_publish_device(c, dev);
	mappolicy_device_changed(c, dev, false);
	pthread_mutex_lock(&c->lock);
	if (c->addr_waiters) {
		c->dev_gen++;
		pthread_cond_broadcast(&c->dev_cond);
	}
	pthread_mutex_unlock(&c->lock);
}

void coord_device_deleted(struct coord *c, const struct json *dev)
{
	if (!c)
		return;
	mapstream_device_deleted(c, dev);
	mappolicy_device_changed(c, dev, true);
}

void coord_tailnet_changed(struct coord *c, const struct json *old, const struct json *tn)
{
	if (c)
		mapstream_tailnet_changed(c, old, tn);
}

void coord_stats(const struct coord *c, struct coord_stats *out)
{
	*out = c->stats;
	out->sessions = strmap_len(c->sessions);
	out->unknown_sessions = c->unknown_sessions;
}
