/* The coordination server's worker pool: registration (auth key checks,
 * use counting, Device writes), logout, and online/offline transitions.
 * Workers make blocking API calls; replies go back through the loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "authkey.h"
#include "buf.h"
#include "control/channel.h"
#include "control/fields.h"
#include "control/messages.h"
#include "coord-internal.h"
#include "httpd.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "loop.h"
#include "nodebind.h"
#include "operator.h"
#include "policy.h"
#include "record.h"
#include "strmap.h"
#include "tailnet.h"
#include "wg/noise.h"

/* ---- worker pool: registration's API writes ---- */

void register_job_free(struct job *j)
{
	json_free(j->req);
	json_free(j->reply);
	free(j);
}

static void job_done(struct loop *loop, void *arg);

/* The two FIFO queues (calls; online writes), under c->lock. */
static void job_append(struct job **head, struct job **tail, struct job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

static struct job *job_pop(struct job **head, struct job **tail)
{
	struct job *j = *head;

	if (j) {
		*head = j->next;
		if (!*head)
			*tail = NULL;
	}
	return j;
}

int register_job_submit(struct coord *c, struct job *j)
{
	pthread_mutex_lock(&c->lock);
	if (c->njobs >= MAX_JOBS || c->stop) {
		pthread_mutex_unlock(&c->lock);
		return -EBUSY;
	}
	job_append(&c->head, &c->tail, j);
	c->njobs++;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* The next job: calls first (a client waits on each), then online writes. */
static struct job *job_next(struct coord *c)
{
	struct job *j = job_pop(&c->head, &c->tail);

	if (j) {
		c->njobs--;
		return j;
	}
	j = job_pop(&c->ohead, &c->otail);
	if (j)
		j->running = true; /* stays pending: see online_run() */
	return j;
}

static struct json *do_register(struct coord *c, const char *mkey, const struct json *req);
static struct json *do_logout(struct coord *c, const char *mkey);
static void do_count_use(struct coord *c, const char *ns, const char *name);
static void do_online(struct coord *c, const char *device, bool online, time_t at);

/* A graceful stop still writes offline transitions, for a while. c->lock held. */
static bool draining_online(struct coord *c)
{
	return c->drain_online && loop_mono_ms() < c->drain_until;
}

void register_drain_offline(struct coord *c)
{
	pthread_mutex_lock(&c->lock);
	c->drain_online = true;
	c->drain_until = loop_mono_ms() + OFFLINE_DRAIN_MS;
	pthread_mutex_unlock(&c->lock);
}

/* What a call's refusal is counted as (knit_coord_refusals_total). */
static void count_refusal(struct job *j)
{
	static const char *const calls[] = { [JOB_REGISTER] = "register", [JOB_LOGOUT] = "logout",
					     [JOB_REGISTER_POD] = "register_pod" };
	const char *code, *call;
	const struct json *old = json_get(j->req, "oldNodeKey");

	if (j->type >= sizeof(calls) / sizeof(calls[0]) || !calls[j->type] || !messages_error(j->reply, &code, NULL))
		return;
	/* A node key renewal (a register with oldNodeKey) is counted apart:
	 * refused renewals are devices about to expire. */
	call = j->type == JOB_REGISTER && old && !json_is_null(old) ? "renew" : calls[j->type];
	coord_refused(j->c, call, code);
}

/* Writes j's transition, then any that came while it was written: one
 * device's writes in order, so a device that reconnects while its old
 * stream is closing is never left written offline by a slower write. */
static void online_run(struct coord *c, struct job *j)
{
	bool online;
	time_t at;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		online = j->online;
		at = j->at;
		j->again = false;
		pthread_mutex_unlock(&c->lock);
		do_online(c, j->device, online, at);
		pthread_mutex_lock(&c->lock);
		if (!j->again || (c->stop && !draining_online(c)))
			break;
	}
	strmap_del(c->online_pending, j->device);
	pthread_mutex_unlock(&c->lock);
}

void *register_job_worker(void *arg)
{
	struct coord *c = arg;

	for (;;) {
		struct job *j;

		pthread_mutex_lock(&c->lock);
		while (!c->head && !c->ohead && !c->stop)
			pthread_cond_wait(&c->cond, &c->lock);
		/* Stopping: finish the calls, and the offline writes of a graceful stop. */
		j = c->head || !c->stop || draining_online(c) ? job_next(c) : NULL;
		pthread_mutex_unlock(&c->lock);
		if (!j)
			break;

		switch (j->type) {
		case JOB_REGISTER: j->reply = do_register(c, j->mkey, j->req); break;
		case JOB_LOGOUT: j->reply = do_logout(c, j->mkey); break;
		case JOB_ONLINE: online_run(c, j); break;
		case JOB_COUNT_USE: do_count_use(c, j->mkey, j->device); break;
		case JOB_REGISTER_POD: j->reply = podident_register(c, j->mkey, j->req); break;
		case JOB_SWEEP_PODS:
			podident_sweep(c);
			__atomic_store_n(&c->pod_sweep_queued, 0, __ATOMIC_RELEASE);
			break;
		}
		if (j->type == JOB_ONLINE || j->type == JOB_COUNT_USE || j->type == JOB_SWEEP_PODS || loop_post(c->op->loop, job_done, j))
			register_job_free(j);
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

	count_refusal(j);
	if (j->st && s && j->reply && coord_seal_json(&s->ch, j->reply, &out) == 0)
		httpd_stream_write(j->st, out.data, out.len);
	if (j->st)
		httpd_stream_close(j->st);
	if (j->slot)
		*j->slot = NULL; /* on_close comes later and must not find us */
	buf_free(&out);
	register_job_free(j);
}

void register_reply_stream_closed(struct httpd_stream *st, void *arg)
{
	/* The client left before the reply: the job still completes, silently. */
	struct job **slot = arg;

	if (*slot) {
		(*slot)->st = NULL;
		(*slot)->slot = NULL;
	}
	free(slot);
}

/* ---- registration (worker thread: blocking API calls) ---- */

/* A use of an unlimited key: status.uses and lastUsed are for people, so
 * they are written after the registration, by another worker. */
static void count_use_later(struct coord *c, const char *ns, const char *name)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return;
	j->type = JOB_COUNT_USE;
	j->c = c;
	snprintf(j->mkey, sizeof(j->mkey), "%s", ns); /* the key's namespace */
	snprintf(j->device, sizeof(j->device), "%s", name); /* and name */
	if (register_job_submit(c, j)) {
		log_warn("auth key use not counted (busy)", "authkey=%s/%s", ns, name);
		free(j);
	}
}

struct use_ctx {
	const char *code;
	time_t now;
};

/* Why ak cannot register a device at now ("AuthKeyExpired",
 * "AuthKeyUsedUp"), or NULL if it can. */
static const char *use_refused(const struct json *ak, time_t now)
{
	const struct json *st = json_get(ak, "status");
	int64_t uses = json_int(json_get(st, "uses"), 0), max = json_int(json_path(ak, "spec", "maxUses", NULL), 0);
	bool reusable = json_bool(json_path(ak, "spec", "reusable", NULL), false);
	time_t exp;

	if (!authkey_never_expires(ak) && (!kube_time_parse(json_str(json_get(st, "expiresAt")), &exp) || now >= exp))
		return "AuthKeyExpired";
	if ((!reusable && uses >= 1) || (reusable && max > 0 && uses >= max))
		return "AuthKeyUsedUp";
	return NULL;
}

static struct json *refusal_reply(const char *code)
{
	return coord_error_reply(code, strcmp(code, "AuthKeyUsedUp") == 0
					       ? "the auth key has already been used; one-off keys register one device"
					       : "the auth key has expired; create a new one");
}

static int take_use(struct json *ak, void *arg)
{
	struct use_ctx *u = arg;
	struct json *st = json_get(ak, "status");
	char ts[32];

	u->code = use_refused(ak, u->now);
	if (u->code)
		return strcmp(u->code, "AuthKeyExpired") == 0 ? -ETIME : -EDQUOT;
	kube_time_format(u->now, ts, sizeof(ts));
	json_object_set(st, "uses", json_new_int(json_int(json_get(st, "uses"), 0) + 1));
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

/* The Device to write for machine mkey: a copy of existing, or a new one
 * named <host>-<6 hex of the machine key's hash> (stable across
 * re-registrations, distinct across machines with one hostname). name
 * gets its name, *spec its spec (made if missing). NULL: out of memory. */
struct json *register_device_doc(const struct json *existing, const char *host, const char *mkey, char *name,
				 size_t namelen, struct json **spec)
{
	struct json *dev;

	if (existing) {
		snprintf(name, namelen, "%s", kube_name(existing));
	} else {
		unsigned char mh[crypto_hash_sha256_BYTES];
		char mhex[65];
		crypto_hash_sha256(mh, (const unsigned char *)mkey, strlen(mkey));
		sodium_bin2hex(mhex, sizeof(mhex), mh, sizeof(mh));
		snprintf(name, namelen, "%s-%.6s", host, mhex);
	}
	dev = existing ? json_clone(existing) : json_new_object();
	if (!dev)
		return NULL;
	if (!existing) {
		struct json *meta = json_new_object();
		json_object_set(dev, "apiVersion", json_new_string(KNIT_API_VERSION));
		json_object_set(dev, "kind", json_new_string("Device"));
		json_object_set(meta, "name", json_new_string(name));
		json_object_set(dev, "metadata", meta);
	}
	*spec = json_get(dev, "spec");
	if (!*spec) {
		*spec = json_new_object();
		json_object_set(dev, "spec", *spec);
	}
	if (!*spec) {
		json_free(dev);
		return NULL;
	}
	return dev;
}

struct json *register_device_by_machine(struct coord *c, const char *mkey)
{
	struct find_ctx f = { .value = mkey };

	/* No Device cache: not leading (yet, or any more). */
	if (c->op->devices)
		informer_foreach_indexed(c->op->devices, "machineKey", mkey, find_by, &f);
	return f.found;
}

static struct json *authkey_by_prefix(struct coord *c, const char *prefix)
{
	struct find_ctx f = { .value = prefix };

	informer_foreach_indexed(c->op->authkeys, "keyPrefix", prefix, find_by, &f);
	return f.found;
}

struct key_holder {
	const char *mkey;
	bool other; /* a Device of another machine holds the key */
};

static void other_holder(const struct json *dev, void *arg)
{
	struct key_holder *h = arg;
	const char *m = json_str(json_path(dev, "spec", "machineKey", NULL));

	if (!m || strcmp(m, h->mkey) != 0)
		h->other = true;
}

/* Does a Device of another machine hold node_key? Two Devices with one
 * node key would make every agent see the key twice. */
static bool node_key_taken(struct coord *c, const char *node_key, const char *mkey)
{
	struct key_holder h = { .mkey = mkey };

	informer_foreach_indexed(c->op->devices, "nodeKey", node_key, other_holder, &h);
	return h.other;
}

/* Waits for the Device controller to give name its addresses: woken by
 * every Device event the loop sees (coord_device_changed), not polling. */
struct json *register_wait_addresses(struct coord *c, const char *name)
{
	uint64_t deadline = loop_mono_ms() + (c->o.register_wait_ms ? c->o.register_wait_ms : 15000);
	struct json *dev = NULL;

	pthread_mutex_lock(&c->lock);
	c->addr_waiters++;
	while (!c->stop) {
		unsigned gen = c->dev_gen;
		pthread_mutex_unlock(&c->lock);
		dev = informer_get(c->op->devices, NULL, name);
		if (dev && json_array_len(json_path(dev, "status", "addresses", NULL)) == 2) {
			pthread_mutex_lock(&c->lock);
			break;
		}
		json_free(dev);
		dev = NULL;
		uint64_t now = loop_mono_ms();
		pthread_mutex_lock(&c->lock);
		if (now >= deadline)
			break;
		/* Wake-ups can be missed only between the read and here, and the
		 * generation catches those; the 100 ms cap is belt and braces. */
		uint64_t until = now + (deadline - now < 100 ? deadline - now : 100);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)((until - now) / 1000);
		ts.tv_nsec += (long)((until - now) % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (gen == c->dev_gen && !c->stop)
			if (pthread_cond_timedwait(&c->dev_cond, &c->lock, &ts) == ETIMEDOUT)
				break;
	}
	c->addr_waiters--;
	pthread_mutex_unlock(&c->lock);
	return dev;
}

/* ---- registration's checks and its key use (issue 15.8) ---- */

/* The Device CRD's own limits (manifests/01-crd-devices.yaml), checked
 * before the key's use is counted: the API server would refuse such a
 * Device with a 422 only after the use was taken. */
#define DEVICE_MAX_TAGS 32u
#define DEVICE_MAX_ROUTES 256u

static bool request_fits_device(const struct register_request *rq, char *why, size_t whylen)
{
	if (rq->ntags > DEVICE_MAX_TAGS) {
		snprintf(why, whylen, "tags: at most %u", DEVICE_MAX_TAGS);
		return false;
	}
	for (size_t i = 0; i < rq->ntags; i++)
		for (size_t k = 0; k < i; k++)
			if (strcmp(rq->tags[i], rq->tags[k]) == 0) {
				snprintf(why, whylen, "tags[%zu]: %s is given twice", i, rq->tags[i]);
				return false;
			}
	if (rq->nroutes > DEVICE_MAX_ROUTES) {
		snprintf(why, whylen, "advertiseRoutes: at most %u", DEVICE_MAX_ROUTES);
		return false;
	}
	return true;
}

/* Is ak's namespace one that may hold keys of its tailnet
 * (Tailnet.spec.authKeyNamespaces; default the operator's own)? */
static bool authkey_namespace_ok(struct coord *c, const struct json *ak, const char *tailnet)
{
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet);
	bool ok = tailnet_authkey_namespace_allowed(tn, kube_namespace(ak), c->op->namespace);

	json_free(tn);
	return ok;
}

static int give_back_use(struct json *ak, void *arg)
{
	struct json *st = json_get(ak, "status");
	int64_t uses = json_int(json_get(st, "uses"), 0);

	if (uses <= 0)
		return 0;
	json_object_set(st, "uses", json_new_int(uses - 1));
	return 1;
}

/* The Device write failed after the key's use was counted: the use is
 * given back, so a one-off key is still usable. (The use is counted first,
 * under the API server's precondition, so that no Device ever exists for
 * a key another registration just used up.) */
static void refund_use(struct coord *c, const char *ns, const char *name)
{
	struct kube_result r = { 0 };

	if (kube_update_retry(c->op->kube, &res_authkeys, ns, name, true, 8, give_back_use, NULL, &r) < 0 ||
	    !kube_ok(&r))
		log_warn("auth key use not given back after a failed registration", "authkey=%s/%s status=%ld", ns, name,
			 r.status);
	else
		log_info("auth key use given back: the registration failed", "authkey=%s/%s", ns, name);
	kube_result_clear(&r);
}

/* The API server's copy of the cached Device existing (takes it): the
 * cache lags our own writes by a moment, and a re-registration compared
 * with a stale copy would skip a write it needs ("changes nothing") or
 * fail on its resourceVersion. One read instead. The cached copy when the
 * read fails; NULL when the Device is gone. */
static struct json *fresh_device(struct coord *c, struct json *existing)
{
	struct kube_result r = { 0 };
	struct json *fresh = NULL;

	if (!existing)
		return NULL;
	if (kube_get(c->op->kube, &res_devices, NULL, kube_name(existing), &r) == 0) {
		if (kube_ok(&r) && json_equal(json_path(r.obj, "spec", "machineKey", NULL),
					      json_path(existing, "spec", "machineKey", NULL)))
			fresh = kube_result_take(&r);
		else if (r.status == 404)
			fresh = NULL;
		else
			fresh = json_clone(existing);
	} else {
		fresh = json_clone(existing);
	}
	kube_result_clear(&r);
	json_free(existing);
	return fresh;
}

/* Writes the Device (create or update), unless a re-registration changes
 * nothing: then no API write and no delta to any peer. Returns NULL or
 * the reply to send; the API server's text goes to the log only (it names
 * fields and values of our own objects). */
static struct json *write_device(struct coord *c, const struct json *existing, const struct json *dev, const char *name,
				 bool *written)
{
	struct kube_result r = { 0 };
	struct json *reply = NULL;
	int err;

	*written = false;
	if (existing && json_equal(json_get(existing, "spec"), json_get(dev, "spec")))
		return NULL;
	*written = true;
	err = existing ? kube_update(c->op->kube, &res_devices, NULL, dev, false, &r)
		       : kube_create(c->op->kube, &res_devices, NULL, dev, &r);
	if (err || !kube_ok(&r)) {
		log_warn("cannot record the device", "device=%s err=%d status=%ld reason=%s message=\"%s\"", name, err,
			 r.status, r.reason ?: "", r.message ?: "");
		reply = coord_error_reply(r.status == 409 ? "Conflict" : r.status == 422 ? "Invalid" : "Unavailable",
					  r.status == 422 ? "the server cannot record this device; its log says why"
							  : "cannot record the device (HTTP %ld); try again", r.status);
	}
	kube_result_clear(&r);
	return reply;
}

static struct json *do_register(struct coord *c, const char *mkey, const struct json *req)
{
	struct operator *op = c->op;
	struct register_request rq;
	struct register_response resp = { 0 };
	struct json *tags = NULL, *existing = NULL, *ak = NULL, *reply = NULL, *dev = NULL, *spec;
	char host[64], name[128], hash_hex[65], why[200], node[254] = "";
	char node_key[MESSAGES_KEY_TEXT_LEN], disco_key[MESSAGES_KEY_TEXT_LEN];
	unsigned char h[crypto_hash_sha256_BYTES];
	struct kube_result r = { 0 };
	time_t now = time(NULL);
	bool ephemeral = false, counted = false, count_later = false, written = false;
	const char *tailnet = "default", *auth;
	struct policy_ref *pol = NULL;

	/* The codec's rules, as the agents parse what we store and send. */
	if (!register_request_from_json(req, &rq, why, sizeof(why))) {
		reply = coord_error_reply("BadRequest", "%s", why);
		return reply;
	}
	if (!request_fits_device(&rq, why, sizeof(why))) {
		reply = coord_error_reply("BadRequest", "%s", why);
		goto out;
	}
	auth = rq.auth_key;
	channel_key_format(rq.node_key, "nodekey:", node_key, sizeof(node_key));
	channel_key_format(rq.disco_key, "discokey:", disco_key, sizeof(disco_key));
	if (node_key_taken(c, node_key, mkey)) {
		reply = coord_error_reply("NodeKeyInUse", "another device holds this node key; make a new one");
		goto out;
	}
	existing = fresh_device(c, register_device_by_machine(c, mkey));
	tags = fields_strv_json(rq.tags, rq.ntags);
	if (!tags)
		goto nomem;

	if (auth) {
		char prefix[64];
		const char *dash = strrchr(auth, '-');
		size_t plen = dash ? (size_t)(dash - auth) : 0;
		struct use_ctx u = { .now = now };

		if (strncmp(auth, "knit-auth-", 10) != 0 || plen >= sizeof(prefix) || plen < 11) {
			reply = coord_error_reply("AuthKeyInvalid", "that is not a knit auth key");
			goto out;
		}
		memcpy(prefix, auth, plen);
		prefix[plen] = '\0';
		ak = authkey_by_prefix(c, prefix);
		crypto_hash_sha256(h, (const unsigned char *)auth, strlen(auth));
		sodium_bin2hex(hash_hex, sizeof(hash_hex), h, sizeof(h));
		const char *want = json_str(json_path(ak, "status", "keyHash", NULL));
		if (!ak || !want || strlen(want) != 64 || sodium_memcmp(want, hash_hex, 64) != 0) {
			reply = coord_error_reply("AuthKeyInvalid", "the auth key is not valid (deleted, mistyped or never issued)");
			goto out;
		}
		/* The Node this knitd's pod runs on (nodebind.c): once the
		 * caller has shown a valid key, before its use is counted. */
		if (rq.pod_token && (reply = nodebind_verify(c, rq.pod_token, node, sizeof(node))))
			goto out;
		/* Tags before the key's use is counted: a refused registration
		 * does not burn a one-off key. The key's tags count as owned;
		 * under a policy, other tags need their tagOwners, without one
		 * they must be among the key's. */
		tailnet = operator_tailnet_of(ak);
		if (!authkey_namespace_ok(c, ak, tailnet)) {
			reply = coord_error_reply("AuthKeyNamespaceNotAllowed",
						  "auth keys of tailnet %s may not be held in namespace %s (see the "
						  "Tailnet's spec.authKeyNamespaces)", tailnet, kube_namespace(ak));
			goto out;
		}
		struct json *key_tags = json_path(ak, "spec", "tags", NULL);
		pol = policy_store_get(op->policies, tailnet);
		if (pol && policy_tags_permitted(pol->p, json_str(json_path(ak, "spec", "user", NULL)), key_tags, tags, why,
						 sizeof(why))) {
			reply = coord_error_reply("TagNotPermitted", "%s", why);
			goto out;
		}
		for (size_t i = 0; !pol && i < json_array_len(tags); i++) {
			bool found = false;
			for (size_t k = 0; k < json_array_len(key_tags); k++)
				found |= strcmp(json_str(json_array_at(tags, i)), json_str(json_array_at(key_tags, k)) ?: "") == 0;
			if (!found) {
				reply = coord_error_reply("TagNotPermitted", "tag %s is not granted by this auth key", json_str(json_array_at(tags, i)));
				goto out;
			}
		}
		if (!json_array_len(tags)) {
			json_free(tags);
			tags = json_clone(key_tags) ?: json_new_array();
			if (!tags)
				goto nomem;
		}
		bool unlimited = json_bool(json_path(ak, "spec", "reusable", NULL), false) &&
				 !json_int(json_path(ak, "spec", "maxUses", NULL), 0);
		if (unlimited) {
			/* Nothing to run out of: check the cached key (expiry) and
			 * count the use in the background, off the joining path. */
			if ((u.code = use_refused(ak, now))) {
				reply = refusal_reply(u.code);
				goto out;
			}
			count_later = true; /* once the Device is written */
		} else {
			/* One use, counted on the API server with a resourceVersion
			 * precondition: concurrent registrations cannot both take
			 * the last use. */
			int err = kube_update_retry(op->kube, &res_authkeys, kube_namespace(ak), kube_name(ak), true, 8,
						    take_use, &u, &r);
			kube_result_clear(&r); /* status and reason stay readable */
			if (err < 0 || !kube_ok(&r)) {
				if (u.code)
					reply = refusal_reply(u.code);
				else
					reply = coord_error_reply("Unavailable", "cannot record the key's use (HTTP %ld %s); try again",
								  r.status, r.reason);
				goto out;
			}
			counted = true;
		}
		ephemeral = json_bool(json_path(ak, "spec", "ephemeral", NULL), false);
	} else if (!existing) {
		reply = coord_error_reply("NotRegistered", "this machine is not registered: run knit up --authkey KEY");
		goto out;
	} else {
		tailnet = operator_tailnet_of(existing);
		if (rq.pod_token && (reply = nodebind_verify(c, rq.pod_token, node, sizeof(node))))
			goto out;
	}

	fields_hostname_sanitize(rq.hostname, host, sizeof(host));
	dev = register_device_doc(existing, host, mkey, name, sizeof(name), &spec);
	if (!dev)
		goto nomem;
	json_object_set(spec, "tailnet", json_new_string(tailnet));
	json_object_set(spec, "hostname", json_new_string(host));
	json_object_set(spec, "machineKey", json_new_string(mkey));
	json_object_set(spec, "nodeKey", json_new_string(node_key));
	json_object_set(spec, "discoKey", json_new_string(disco_key));
	if (nodebind_set(spec, node[0] ? node : NULL))
		goto nomem;
	if (auth) {
		struct json *ref = json_new_object();
		json_object_set(ref, "namespace", coord_jstr(kube_namespace(ak)));
		json_object_set(ref, "name", coord_jstr(kube_name(ak)));
		json_object_set(spec, "authKey", ref);
		json_object_set(spec, "ephemeral", json_new_bool(ephemeral));
		json_object_set(spec, "tags", json_clone(tags) ?: json_new_array());
		/* An untagged device belongs to the key's user; a tagged one to
		 * its tags alone. */
		if (!json_array_len(tags) && json_str(json_path(ak, "spec", "user", NULL)))
			json_object_set(spec, "user", json_new_string(json_str(json_path(ak, "spec", "user", NULL))));
		else
			json_object_del(spec, "user");
		/* Re-authenticating renews the key (renew.c: tagged devices do
		 * not expire unless the AuthKey says so). */
		struct json *tn = informer_get(op->tailnets, NULL, tailnet);
		renew_set_expiry(spec, renew_key_lifetime_ms(tn, ak, json_array_len(tags) > 0), now);
		json_free(tn);
	}
	if (rq.has_old_node_key && (reply = renew_check(c, mkey, &rq, existing, spec, now)))
		goto out;
	if (rq.nroutes)
		json_object_set(spec, "advertisedRoutes", fields_prefixes_json(rq.routes, rq.nroutes, false));
	else
		json_object_del(spec, "advertisedRoutes");
	if (!pol)
		pol = policy_store_get(op->policies, tailnet);
	if (pol) {
		/* autoApprovers: what they approve joins what an admin approved
		 * (policy_routes_patch keeps the two apart). */
		int perr;
		struct json *patch = policy_routes_patch(pol->p, dev, &perr);

		if (perr)
			goto nomem;
		if (patch && !(dev = json_merge_patch(dev, patch)))
			goto nomem;
	}

	reply = write_device(c, existing, dev, name, &written);
	if (reply) {
		if (counted)
			refund_use(c, kube_namespace(ak), kube_name(ak));
		goto out;
	}
	if (count_later)
		count_use_later(c, kube_namespace(ak), kube_name(ak));
	json_free(dev);
	dev = register_wait_addresses(c, name);
	if (!dev) {
		reply = coord_error_reply("Unavailable", "the device has no addresses yet; try again");
		goto out;
	}
	resp.device = name;
	resp.name = host;
	resp.ephemeral = json_bool(json_path(dev, "spec", "ephemeral", NULL), false);
	resp.key_expiry = renew_expiry_of(dev);
	if (record_addresses(dev, &resp.addresses, &resp.naddresses)) {
		reply = coord_error_reply("Unavailable", "the device's addresses are not valid; try again");
		goto out;
	}
	struct json *sfx = mapstream_dns_suffix_json(c, tailnet);
	resp.dns_suffix = (char *)json_str(sfx);
	reply = register_response_to_json(&resp);
	json_free(sfx);
	free(resp.addresses);
	if (!reply)
		goto nomem;
	log_info("device registered", "device=%s machine=%.16s new=%s written=%s", name, mkey + 5, existing ? "no" : "yes",
		 written ? "yes" : "no");
	goto out;
nomem:
	reply = coord_error_reply("Unavailable", "out of memory");
out:
	sodium_memzero(h, sizeof(h));
	policy_store_put(op->policies, pol);
	register_request_free(&rq);
	json_free(tags);
	json_free(existing);
	json_free(ak);
	json_free(dev);
	return reply;
}

static struct json *do_logout(struct coord *c, const char *mkey)
{
	struct json *dev = register_device_by_machine(c, mkey), *reply;
	struct kube_result r;

	if (!dev)
		return coord_error_reply("NotRegistered", "this machine is not registered");
	if (kube_delete(c->op->kube, &res_devices, NULL, kube_name(dev), kube_uid(dev), NULL, &r) == 0 &&
	    (kube_ok(&r) || r.status == 404)) {
		reply = json_new_object();
		json_object_set(reply, "ok", json_new_bool(true));
		log_info("device logged out", "device=%s", kube_name(dev));
	} else {
		reply = coord_error_reply("Unavailable", "cannot delete the device (HTTP %ld); try again", r.status);
	}
	kube_result_clear(&r);
	json_free(dev);
	return reply;
}

static void do_count_use(struct coord *c, const char *ns, const char *name)
{
	struct use_ctx u = { .now = time(NULL) };
	struct kube_result r = { 0 };

	/* Conflicts are retried; a use that cannot be counted is only noted. */
	if (kube_update_retry(c->op->kube, &res_authkeys, ns, name, true, 8, take_use, &u, &r) < 0 || !kube_ok(&r))
		log_warn("auth key use not counted", "authkey=%s/%s status=%ld", ns, name, r.status);
	kube_result_clear(&r);
}

/* Online/offline transitions only (not heartbeats) reach the API server. */
static void do_online(struct coord *c, const char *device, bool online, time_t at)
{
	struct json *patch = json_new_object(), *st = json_new_object();
	struct kube_result r;
	char ts[32];

	kube_time_format(at, ts, sizeof(ts));
	log_debug("writing online", "device=%s online=%s", device, online ? "yes" : "no");
	json_object_set(st, "online", json_new_bool(online));
	json_object_set(st, "lastSeen", json_new_string(ts));
	json_object_set(patch, "status", st);
	if (kube_patch(c->op->kube, &res_devices, NULL, device, KUBE_PATCH_MERGE, patch, true, &r) == 0)
		kube_result_clear(&r);
	json_free(patch);
}

/* Online transitions are written in the background, one per device: a
 * device that flaps while its write waits is written once, with its
 * latest state. Registrations never queue behind them. */
void register_online_changed(struct coord *c, const char *device, bool online)
{
	struct job *j;

	pthread_mutex_lock(&c->lock);
	j = strmap_get(c->online_pending, device);
	if (j) {
		j->online = online;
		j->at = time(NULL);
		j->again = j->running;
		pthread_mutex_unlock(&c->lock);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j || c->stop || strmap_set(c->online_pending, device, j, NULL)) {
		pthread_mutex_unlock(&c->lock);
		free(j);
		return;
	}
	j->type = JOB_ONLINE;
	j->c = c;
	j->online = online;
	j->at = time(NULL);
	snprintf(j->device, sizeof(j->device), "%s", device);
	job_append(&c->ohead, &c->otail, j);
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}
