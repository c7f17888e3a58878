/* The control key's Secret, kept (issue 15.10). Every agent pins the
 * control key, so a new one is an outage: the operator never mints one
 * by itself once a key has been in use.
 *
 * - While it runs, the operator keeps the key it holds: a deleted Secret
 *   (or one whose privateKey is gone) is written again with that same key
 *   within KEEP_EVERY_S, and the Secret records a ControlKeyRestored
 *   Event. A Secret holding another valid key is left alone and warned
 *   about (the operator serves its key until restarted).
 * - At start with no Secret, it mints a key only on a fresh install: when
 *   no Tailnet publishes a status.controlKey. Otherwise it says what
 *   happened and waits for the Secret to be restored, unless
 *   --new-control-key asks for a new key (every agent must then be given
 *   it with knit up --server-key).
 *
 * Rotation (issue 15.10, docs/control-protocol.md "Control key
 * rotation"): annotating the Secret knit.dev/rotate=true asks for it.
 *   1. The keeper mints nextPrivateKey into the Secret (annotation
 *      knit.dev/next-since). Every netmap, and a delta to every live
 *      stream, carries nextControlKey; agents save it beside their pin.
 *      Handshakes to the current and the next key are both accepted.
 *   2. After --control-key-grace the next key becomes privateKey and the
 *      old one previousPrivateKey (knit.dev/previous-until): netmaps
 *      carry the new controlKey and agents switch their pin; the old key
 *      is still accepted for another grace period, so an agent that slept
 *      through step 1 gets in and learns the new key over a session its
 *      old pin authenticated.
 *   3. Then previousPrivateKey is dropped.
 * Every step is a write of the Secret under its resourceVersion, so with
 * several replicas one wins and the others adopt what it wrote.
 *
 * All of this runs on the key loader thread (coord.c load_key), off the
 * loop; the key set reaches the loop through ctrlkey_announce. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "control/ctrlpin.h"
#include "coord-internal.h"
#include "json.h"
#include "kube/client.h"
#include "kube/meta.h"
#include "log.h"
#include "loop.h"
#include "operator.h"

#define KEEP_EVERY_S 5
/* While a rotation is under way, its steps are checked this often. */
#define ROTATE_EVERY_S 1
#define ROTATE_GRACE_DEFAULT_S (24u * 3600u)
#define ANN_ROTATE "knit.dev/rotate"
#define ANN_NEXT_SINCE "knit.dev/next-since"
#define ANN_PREV_UNTIL "knit.dev/previous-until"

static bool decode_member(const struct json *secret, const char *member, uint8_t priv[32])
{
	const char *b64 = json_str(json_path(secret, "data", member, NULL));
	size_t n = 0;

	return b64 && sodium_base642bin(priv, 32, b64, strlen(b64), NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
	       n == 32;
}

bool ctrlkey_decode(const struct json *secret, uint8_t priv[32])
{
	return decode_member(secret, "privateKey", priv);
}

/* data.member = base64(priv) in secret; priv NULL: the member goes. */
static int encode_member(struct json *secret, const char *member, const uint8_t *priv)
{
	struct json *data = (struct json *)json_get(secret, "data");
	char b64[64];
	int err;

	if (!data)
		return -EINVAL;
	if (!priv) {
		json_object_del(data, member);
		return 0;
	}
	sodium_bin2base64(b64, sizeof(b64), priv, 32, sodium_base64_VARIANT_ORIGINAL);
	err = json_object_set(data, member, json_new_string(b64));
	sodium_memzero(b64, sizeof(b64));
	return err;
}

/* metadata.annotations[key] = value (NULL: removed). */
static int annotate(struct json *secret, const char *key, const char *value)
{
	struct json *meta = (struct json *)json_get(secret, "metadata"), *ann;

	if (!meta)
		return -EINVAL;
	ann = (struct json *)json_get(meta, "annotations");
	if (!value) {
		if (ann)
			json_object_del(ann, key);
		return 0;
	}
	if (!ann || !json_is_object(ann)) {
		int err = json_object_set(meta, "annotations", json_new_object());
		if (err)
			return err;
		ann = (struct json *)json_get(meta, "annotations");
	}
	return json_object_set(ann, key, json_new_string(value));
}

static int64_t annotation_time(const struct json *secret, const char *key)
{
	const char *v = json_str(json_path(secret, "metadata", "annotations", key, NULL));
	char *end;
	long long t;

	if (!v)
		return 0;
	t = strtoll(v, &end, 10);
	return *v && !*end && t > 0 ? (int64_t)t : 0;
}

struct json *ctrlkey_secret_doc(const uint8_t priv[32])
{
	char b64[64], doc[512];
	struct json *s;

	sodium_bin2base64(b64, sizeof(b64), priv, 32, sodium_base64_VARIANT_ORIGINAL);
	snprintf(doc, sizeof(doc),
		 "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"" CONTROL_SECRET "\","
		 "\"labels\":{\"app.kubernetes.io/managed-by\":\"" OPERATOR_MANAGER "\"}},"
		 "\"type\":\"knit.dev/control-key\",\"data\":{\"privateKey\":\"%s\"}}", b64);
	s = json_parse(doc, strlen(doc), NULL);
	sodium_memzero(doc, sizeof(doc));
	sodium_memzero(b64, sizeof(b64));
	return s;
}

/* The control key a Tailnet publishes, if any ("" if none): a key that
 * agents may have pinned. -errno if the Tailnets cannot be listed. */
static int published_key(struct operator *op, char *out, size_t outlen)
{
	struct kube_result r;
	int err = kube_list_all(op->kube, &res_tailnets, NULL, NULL, &r);
	const struct json *items;

	out[0] = '\0';
	if (err)
		return err;
	if (!kube_ok(&r)) {
		kube_result_clear(&r);
		return -EIO;
	}
	items = json_get(r.obj, "items");
	for (size_t i = 0; i < json_array_len(items) && !out[0]; i++) {
		const char *k = json_str(json_path(json_array_at(items, i), "status", "controlKey", NULL));
		if (k && *k)
			snprintf(out, outlen, "%s (Tailnet %s)", k, kube_name(json_array_at(items, i)) ?: "?");
	}
	kube_result_clear(&r);
	return 0;
}

bool ctrlkey_may_mint(struct coord *c)
{
	char pub[200];
	int err;

	if (c->o.new_control_key) {
		log_warn("no control key Secret: minting a new control key as --new-control-key asks; agents pinned to "
			 "the old key must be given the new one (knit up --server-key)");
		return true;
	}
	if ((err = published_key(c->op, pub, sizeof(pub)))) {
		log_warn("no control key Secret, and cannot list Tailnets to tell a fresh install: retrying", "err=%d", err);
		return false;
	}
	if (!pub[0])
		return true; /* a fresh install */
	log_error("the control key Secret is gone, but agents pin the key it held: not minting another. Restore the "
		  "Secret from a backup, or start with --new-control-key to replace the key (every agent must then be "
		  "given it with knit up --server-key)",
		  "secret=%s/%s published=\"%s\"", c->op->namespace, CONTROL_SECRET, pub);
	return false;
}

static void announce_posted(struct loop *loop, void *arg);

static uint32_t grace_s(const struct coord *c)
{
	return c->o.rotate_grace_s ? c->o.rotate_grace_s : ROTATE_GRACE_DEFAULT_S;
}

/* Takes the Secret's key set (privateKey, nextPrivateKey,
 * previousPrivateKey) as c's; when it changed, tells the loop. */
static void adopt(struct coord *c, const struct json *secret)
{
	uint8_t cur[32], next[32], prev[32];
	bool has_next, has_prev, changed;

	if (!ctrlkey_decode(secret, cur))
		return;
	has_next = decode_member(secret, "nextPrivateKey", next);
	has_prev = decode_member(secret, "previousPrivateKey", prev);
	pthread_mutex_lock(&c->keys_lock);
	changed = sodium_memcmp(cur, c->priv, 32) != 0 || has_next != c->has_next || has_prev != c->has_prev ||
		  (has_next && sodium_memcmp(next, c->next_priv, 32) != 0) ||
		  (has_prev && sodium_memcmp(prev, c->prev_priv, 32) != 0);
	if (changed) {
		memcpy(c->priv, cur, 32);
		channel_public_key(c->pub, c->priv);
		c->has_next = has_next;
		c->has_prev = has_prev;
		if (has_next) {
			memcpy(c->next_priv, next, 32);
			channel_public_key(c->next_pub, c->next_priv);
		} else {
			sodium_memzero(c->next_priv, 32);
		}
		if (has_prev) {
			memcpy(c->prev_priv, prev, 32);
			channel_public_key(c->prev_pub, c->prev_priv);
		} else {
			sodium_memzero(c->prev_priv, 32);
		}
	}
	pthread_mutex_unlock(&c->keys_lock);
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(next, sizeof(next));
	sodium_memzero(prev, sizeof(prev));
	if (changed)
		loop_post(c->op->loop, announce_posted, c);
}

void ctrlkey_adopt_start(struct coord *c, const struct json *secret)
{
	adopt(c, secret);
}

size_t ctrlkey_accepted(struct coord *c, uint8_t keys[3][32])
{
	size_t n = 0;

	pthread_mutex_lock(&c->keys_lock);
	memcpy(keys[n++], c->priv, 32);
	if (c->has_next)
		memcpy(keys[n++], c->next_priv, 32);
	if (c->has_prev)
		memcpy(keys[n++], c->prev_priv, 32);
	pthread_mutex_unlock(&c->keys_lock);
	return n;
}

/* One step of a rotation, if one is due: *secret is replaced by what was
 * written. A 409 (another replica's step) is left for the next look. */
static void rotate_step(struct coord *c, struct json **secret)
{
	struct operator *op = c->op;
	const char *want = json_str(json_path(*secret, "metadata", "annotations", ANN_ROTATE, NULL));
	int64_t now = (int64_t)time(NULL), since = annotation_time(*secret, ANN_NEXT_SINCE),
		until = annotation_time(*secret, ANN_PREV_UNTIL);
	uint8_t cur[32], next[32];
	bool has_next = decode_member(*secret, "nextPrivateKey", next);
	const char *reason = NULL;
	char when[24], pub[80], msg[320];
	struct json *doc = NULL;
	struct kube_result r;
	int err = 0;

	if (!ctrlkey_decode(*secret, cur))
		goto out;
	if (has_next && now >= since + (int64_t)grace_s(c)) {
		/* 2: next becomes current, current previous. */
		doc = json_clone(*secret);
		snprintf(when, sizeof(when), "%" PRId64, now + (int64_t)grace_s(c));
		err = doc ? 0 : -ENOMEM;
		if (!err)
			err = encode_member(doc, "previousPrivateKey", cur);
		if (!err)
			err = encode_member(doc, "privateKey", next);
		if (!err)
			err = encode_member(doc, "nextPrivateKey", NULL);
		if (!err)
			err = annotate(doc, ANN_NEXT_SINCE, NULL);
		if (!err)
			err = annotate(doc, ANN_PREV_UNTIL, when);
		channel_public_key(cur, next);
		channel_key_format(cur, "ctrlkey:", pub, sizeof(pub));
		reason = "ControlKeyPromoted";
		snprintf(msg, sizeof(msg),
			 "the next control key %s is now current; the previous one is accepted until %s (Unix time)", pub,
			 when);
	} else if (!has_next && want && !strcmp(want, "true")) {
		/* 1: a next key, announced from now on. */
		doc = json_clone(*secret);
		channel_keygen(next);
		snprintf(when, sizeof(when), "%" PRId64, now);
		err = doc ? 0 : -ENOMEM;
		if (!err)
			err = encode_member(doc, "nextPrivateKey", next);
		if (!err)
			err = annotate(doc, ANN_ROTATE, NULL);
		if (!err)
			err = annotate(doc, ANN_NEXT_SINCE, when);
		channel_public_key(cur, next);
		channel_key_format(cur, "ctrlkey:", pub, sizeof(pub));
		reason = "ControlKeyRotationStarted";
		snprintf(msg, sizeof(msg), "next control key %s announced to every agent; it becomes current in %u s",
			 pub, grace_s(c));
	} else if (json_path(*secret, "data", "previousPrivateKey", NULL) && now >= until) {
		/* 3: the previous key is no longer accepted. */
		doc = json_clone(*secret);
		err = doc ? 0 : -ENOMEM;
		if (!err)
			err = encode_member(doc, "previousPrivateKey", NULL);
		if (!err)
			err = annotate(doc, ANN_PREV_UNTIL, NULL);
		reason = "ControlKeyRotated";
		snprintf(msg, sizeof(msg), "the previous control key is no longer accepted: rotation done");
	}
	if (!doc || err)
		goto out;
	err = kube_update(op->kube, &kube_res_secrets, op->namespace, doc, false, &r);
	if (!err && kube_ok(&r)) {
		log_info("control key rotation", "step=%s detail=\"%s\"", reason, msg);
		json_free_secret(*secret);
		*secret = kube_result_take(&r);
		operator_event(op, *secret, false, reason, "%s", msg);
	} else if (!err) {
		log_info("control key rotation: Secret changed meanwhile; next look", "step=%s status=%ld", reason,
			 r.status);
	}
	if (!err)
		kube_result_clear(&r);
out:
	json_free_secret(doc);
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(next, sizeof(next));
}

/* ---- loop thread ---- */

static void announce_posted(struct loop *loop, void *arg)
{
	struct coord *c = arg;

	(void)loop;
	if (!c->stopping && c->ready)
		ctrlkey_announce(c, true);
}

void ctrlkey_announce(struct coord *c, bool deltas)
{
	struct buf text = BUF_INIT(1024);
	uint8_t cur[32], next[32];
	bool has_next;
	char pub[80], nxt[80];
	int err;

	pthread_mutex_lock(&c->keys_lock);
	memcpy(cur, c->pub, 32);
	memcpy(next, c->next_pub, 32);
	has_next = c->has_next;
	pthread_mutex_unlock(&c->keys_lock);
	channel_key_format(cur, "ctrlkey:", pub, sizeof(pub));
	if (has_next)
		channel_key_format(next, "ctrlkey:", nxt, sizeof(nxt));
	else
		nxt[0] = '\0';
	if (!strcmp(pub, c->pub_text) && !strcmp(nxt, c->next_text))
		return; /* nothing new (a previous key coming or going) */
	snprintf(c->pub_text, sizeof(c->pub_text), "%s", pub);
	snprintf(c->next_text, sizeof(c->next_text), "%s", nxt);
	log_info("control keys announced", "current=%s next=%s", c->pub_text, has_next ? c->next_text : "none");
	if (!deltas)
		return;
	err = ctrlkey_fields(c, &text);
	if (!err)
		err = buf_add_byte(&text, '\0');
	/* Every stream's next delta carries the key set (without the comma). */
	if (!err)
		err = mapstream_all_tailnets_fields(c, (const char *)text.data + 1);
	if (err)
		log_error("cannot announce the control keys to live streams; they get them with their next netmap",
			  "err=%d", err);
	buf_free(&text);
}

int ctrlkey_fields(struct coord *c, struct buf *out)
{
	struct json *o = json_new_object();
	struct buf text = BUF_INIT(1024);
	uint8_t cur[32], next[32];
	bool has_next;
	int err = o ? 0 : -ENOMEM;

	pthread_mutex_lock(&c->keys_lock);
	memcpy(cur, c->pub, 32);
	memcpy(next, c->next_pub, 32);
	has_next = c->has_next;
	pthread_mutex_unlock(&c->keys_lock);
	if (!err)
		err = ctrlpin_keys_to_json(o, cur, has_next ? next : NULL);
	if (!err)
		err = json_dump(o, &text, 0);
	/* {"controlKey":...} -> ,"controlKey":... */
	if (!err && text.len >= 2) {
		text.data[0] = ',';
		err = buf_add(out, text.data, text.len - 1);
	}
	buf_free(&text);
	json_free(o);
	return err;
}

/* One look at the Secret: restored with c->priv when gone or emptied. */
static void keep_once(struct coord *c)
{
	struct operator *op = c->op;
	struct kube_result r;
	struct json *secret = NULL, *doc;
	uint8_t have[32];
	int err = kube_get(op->kube, &kube_res_secrets, op->namespace, CONTROL_SECRET, &r);

	if (err)
		return;
	if (kube_ok(&r))
		secret = kube_result_take(&r);
	kube_result_clear(&r);
	if (secret && ctrlkey_decode(secret, have)) {
		pthread_mutex_lock(&c->keys_lock);
		bool ours = sodium_memcmp(have, c->priv, 32) == 0 ||
			    (c->has_next && sodium_memcmp(have, c->next_priv, 32) == 0);
		pthread_mutex_unlock(&c->keys_lock);
		if (ours) {
			/* Ours, or the next key another replica promoted. */
			rotate_step(c, &secret);
			adopt(c, secret);
		} else if (!c->key_mismatch_warned) {
			log_warn("the control key Secret now holds another key: still serving the one loaded at start "
				 "(restart the operator to switch; agents pinned to the old key will refuse the new one)",
				 "secret=%s/%s", op->namespace, CONTROL_SECRET);
			c->key_mismatch_warned = true;
		}
		goto out;
	}
	if (!secret && r.status != 404)
		goto out;
	pthread_mutex_lock(&c->keys_lock);
	doc = ctrlkey_secret_doc(c->priv);
	/* A rotation under way goes on with the restored Secret. */
	if (doc && c->has_next)
		encode_member(doc, "nextPrivateKey", c->next_priv);
	if (doc && c->has_prev)
		encode_member(doc, "previousPrivateKey", c->prev_priv);
	pthread_mutex_unlock(&c->keys_lock);
	if (!doc)
		goto out;
	if (secret) {
		/* Still there but no usable privateKey: write ours back, under
		 * its resourceVersion. */
		json_object_set(doc, "metadata", json_clone(json_get(secret, "metadata")));
		err = kube_update(op->kube, &kube_res_secrets, op->namespace, doc, false, &r);
	} else {
		err = kube_create(op->kube, &kube_res_secrets, op->namespace, doc, &r);
	}
	if (!err && kube_ok(&r)) {
		struct json *made = kube_result_take(&r);
		log_warn("the control key Secret was deleted or emptied: wrote it again with the key in use",
			 "secret=%s/%s key=%s", op->namespace, CONTROL_SECRET, c->pub_text);
		operator_event(op, made, true, "ControlKeyRestored",
			       "Secret %s was deleted or emptied; restored with the control key agents pin (%s)",
			       CONTROL_SECRET, c->pub_text);
		c->keeper_restores++;
		json_free_secret(made);
	} else if (!err) {
		log_warn("cannot restore the control key Secret; retrying", "status=%ld message=\"%s\"", r.status, r.message);
	}
	kube_result_clear(&r);
	json_free_secret(doc);
out:
	sodium_memzero(have, sizeof(have));
	json_free_secret(secret);
}

void ctrlkey_keep(struct coord *c)
{
	while (!c->stopping) {
		pthread_mutex_lock(&c->keys_lock);
		int every = c->has_next || c->has_prev ? ROTATE_EVERY_S : KEEP_EVERY_S;
		pthread_mutex_unlock(&c->keys_lock);
		for (int i = 0; i < every && !c->stopping; i++) {
			struct timespec ts = { .tv_sec = 1 };
			nanosleep(&ts, NULL);
		}
		if (!c->stopping)
			keep_once(c);
	}
}
