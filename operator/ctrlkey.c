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
 * Both run on the key loader thread (coord.c load_key), off the loop. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "control/channel.h"
#include "coord-internal.h"
#include "json.h"
#include "kube/client.h"
#include "kube/meta.h"
#include "log.h"
#include "operator.h"

#define KEEP_EVERY_S 5

bool ctrlkey_decode(const struct json *secret, uint8_t priv[32])
{
	const char *b64 = json_str(json_path(secret, "data", "privateKey", NULL));
	size_t n = 0;

	return b64 && sodium_base642bin(priv, 32, b64, strlen(b64), NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
	       n == 32;
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
		if (sodium_memcmp(have, c->priv, 32) != 0 && !c->key_mismatch_warned) {
			log_warn("the control key Secret now holds another key: still serving the one loaded at start "
				 "(restart the operator to switch; agents pinned to the old key will refuse the new one)",
				 "secret=%s/%s", op->namespace, CONTROL_SECRET);
			c->key_mismatch_warned = true;
		}
		goto out;
	}
	if (!secret && r.status != 404)
		goto out;
	doc = ctrlkey_secret_doc(c->priv);
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
		for (int i = 0; i < KEEP_EVERY_S && !c->stopping; i++) {
			struct timespec ts = { .tv_sec = 1 };
			nanosleep(&ts, NULL);
		}
		if (!c->stopping)
			keep_once(c);
	}
}
