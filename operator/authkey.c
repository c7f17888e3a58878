/* AuthKey reconciler: mints the key into a Secret the AuthKey owns (the
 * only place the key ever exists), keeps its prefix, hash, expiry and
 * state in status, and marks expired or used-up keys. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "operator.h"
#include "authkey.h"
#include "tailnet.h"

/* AuthKeys' Secrets outside the operator's namespace are not watched (no
 * RBAC for a cluster-wide watch): a deleted one is noticed this late. */
#define FOREIGN_SECRET_RECHECK_MS (10u * 60u * 1000u)

#define KEY_ID_BYTES 6 /* 12 hex: the public prefix */
#define KEY_SECRET_BYTES 24 /* 192 bits */
#define SECRET_FIELD "authkey"

/* "knit-auth-<12 hex id>-<48 hex secret>"; the prefix is everything up to
 * the second dash group and may be shown. */
static void mint(char *key, size_t keylen)
{
	unsigned char id[KEY_ID_BYTES], secret[KEY_SECRET_BYTES];
	char idhex[2 * KEY_ID_BYTES + 1], sechex[2 * KEY_SECRET_BYTES + 1];

	randombytes_buf(id, sizeof(id));
	randombytes_buf(secret, sizeof(secret));
	sodium_bin2hex(idhex, sizeof(idhex), id, sizeof(id));
	sodium_bin2hex(sechex, sizeof(sechex), secret, sizeof(secret));
	snprintf(key, keylen, "knit-auth-%s-%s", idhex, sechex);
	sodium_memzero(secret, sizeof(secret));
	sodium_memzero(sechex, sizeof(sechex));
}

static void key_prefix(const char *key, char *out, size_t outlen)
{
	const char *dash = strrchr(key, '-');
	size_t n = dash ? (size_t)(dash - key) : 0;

	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, key, n);
	out[n] = '\0';
}

static void key_hash(const char *key, char out[65])
{
	unsigned char h[crypto_hash_sha256_BYTES];

	crypto_hash_sha256(h, (const unsigned char *)key, strlen(key));
	sodium_bin2hex(out, 65, h, sizeof(h));
}

static struct json *new_secret(const struct json *ak, const char *secret_name, const char *key)
{
	char b64[sodium_base64_ENCODED_LEN(128, sodium_base64_VARIANT_ORIGINAL)];
	struct json *s = json_new_object(), *meta = json_new_object(), *labels = json_new_object(),
		    *data = json_new_object(), *refs = json_new_array();

	sodium_bin2base64(b64, sizeof(b64), (const unsigned char *)key, strlen(key), sodium_base64_VARIANT_ORIGINAL);
	if (!s || !meta || !labels || !data || !refs ||
	    json_object_set(s, "apiVersion", json_new_string("v1")) ||
	    json_object_set(s, "kind", json_new_string("Secret")) ||
	    json_object_set(meta, "name", json_new_string(secret_name)) ||
	    json_object_set(meta, "namespace", json_new_string(kube_namespace(ak))) ||
	    json_object_set(labels, "app.kubernetes.io/managed-by", json_new_string(OPERATOR_MANAGER)) ||
	    json_object_set(labels, "knit.dev/authkey", json_new_string(kube_name(ak))) ||
	    json_object_set(meta, "labels", labels) ||
	    json_array_append(refs, kube_owner_ref(ak)) ||
	    json_object_set(meta, "ownerReferences", refs) ||
	    json_object_set(s, "metadata", meta) ||
	    json_object_set(s, "type", json_new_string("knit.dev/authkey")) ||
	    json_object_set(data, SECRET_FIELD, json_new_string(b64)) ||
	    json_object_set(s, "data", data)) {
		/* json_object_set took ownership of what it was given, even on failure. */
		sodium_memzero(b64, sizeof(b64));
		json_free(s);
		return NULL;
	}
	sodium_memzero(b64, sizeof(b64));
	return s;
}

/* Reads the key out of a Secret; false if it holds none. */
static bool secret_key(const struct json *secret, char *key, size_t keylen)
{
	const char *b64 = json_str(json_path(secret, "data", SECRET_FIELD, NULL));
	size_t n = 0;

	if (!b64 || sodium_base642bin((unsigned char *)key, keylen - 1, b64, strlen(b64), NULL, &n, NULL,
				      sodium_base64_VARIANT_ORIGINAL) != 0)
		return false;
	key[n] = '\0';
	return strncmp(key, "knit-auth-", 10) == 0;
}

/* Gets the Secret holding this AuthKey's key, minting it first if needed.
 * Returns 0 with *secret (caller frees), or a negative errno; sets
 * *conflict when a Secret of that name exists but is not ours. */
static int ensure_secret(struct operator *op, const struct json *ak, const char *secret_name,
			 struct json **secret, bool *conflict)
{
	const char *ns = kube_namespace(ak);
	struct kube_result r;
	char key[128];
	int err;

	*secret = informer_get(op->secrets, ns, secret_name);
	if (!*secret) {
		/* The cache may lag a Secret we created a moment ago: ask. */
		err = kube_get(op->kube, &kube_res_secrets, ns, secret_name, &r);
		if (err)
			return err;
		if (kube_ok(&r))
			*secret = kube_result_take(&r);
		kube_result_clear(&r);
		if (!*secret && r.status != 404)
			return -EIO;
	}
	if (!*secret) {
		struct json *s;
		mint(key, sizeof(key));
		s = new_secret(ak, secret_name, key);
		sodium_memzero(key, sizeof(key));
		if (!s)
			return -ENOMEM;
		err = kube_create(op->kube, &kube_res_secrets, ns, s, &r);
		json_free_secret(s);
		if (err)
			return err;
		if (r.status == 409) { /* someone (another operator) just did: read theirs next time */
			kube_result_clear(&r);
			return -EAGAIN;
		}
		if (!kube_ok(&r)) {
			log_warn("cannot create auth key secret", "namespace=%s secret=%s status=%ld message=\"%s\"", ns,
				 secret_name, r.status, r.message);
			kube_result_clear(&r);
			return -EIO;
		}
		*secret = kube_result_take(&r);
		operator_event(op, ak, false, "KeyMinted", "Minted a new auth key into Secret %s", secret_name);
	}
	*conflict = !kube_owned_by(*secret, kube_uid(ak));
	return 0;
}

bool authkey_secret_name(const char *name, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s-authkey", name);

	return n > 0 && n <= 253 && (size_t)n < outlen;
}

bool authkey_never_expires(const struct json *ak)
{
	const char *expiry = json_str(json_path(ak, "spec", "expiry", NULL));
	uint64_t ms;

	return expiry && kube_duration_parse(expiry, &ms) && ms == 0;
}

enum authkey_step authkey_desired_status(const struct json *ak, const struct authkey_secret *secret, time_t now,
					 struct json *status, uint64_t *requeue_ms)
{
	const char *expiry = json_str(json_path(ak, "spec", "expiry", NULL)), *cts;
	int64_t gen = kube_generation(ak), uses, max_uses;
	bool reusable, expired, exhausted, never;
	time_t created = now, expires;
	uint64_t life_ms = 0;
	char name[300], ts[32];

	json_object_set(status, "observedGeneration", json_new_int(gen));
	if (!authkey_secret_name(kube_name(ak) ?: "", name, sizeof(name))) {
		kube_condition_set(status, "Ready", "False", "NameTooLong",
				   "the AuthKey name is too long to derive a Secret name from", gen, now);
		return AUTHKEY_DONE;
	}
	if (expiry && !kube_duration_parse(expiry, &life_ms)) {
		kube_condition_set(status, "Ready", "False", "InvalidExpiry", "spec.expiry is not a duration", gen, now);
		return AUTHKEY_DONE;
	}
	if (!secret)
		return AUTHKEY_NEED_SECRET;
	if (secret->conflict || !secret->prefix || !secret->hash) {
		kube_condition_set(status, "Ready", "False", "SecretConflict",
				   secret->conflict ? "a Secret of that name exists and is not owned by this AuthKey"
						    : "the Secret holds no valid key",
				   gen, now);
		return AUTHKEY_DONE;
	}
	cts = json_str(json_path(ak, "metadata", "creationTimestamp", NULL));
	if (cts)
		kube_time_parse(cts, &created);
	never = expiry && life_ms == 0;
	expires = created + (time_t)(life_ms / 1000);
	kube_time_format(expires, ts, sizeof(ts));
	uses = json_int(json_get(status, "uses"), 0);
	reusable = json_bool(json_path(ak, "spec", "reusable", NULL), false);
	max_uses = json_int(json_path(ak, "spec", "maxUses", NULL), 0);
	expired = !never && now >= expires;
	exhausted = reusable ? (max_uses > 0 && uses >= max_uses) : uses >= 1;

	json_object_set(status, "secretName", json_new_string(secret->name));
	json_object_set(status, "keyPrefix", json_new_string(secret->prefix));
	json_object_set(status, "keyHash", json_new_string(secret->hash));
	json_object_set(status, "uses", json_new_int(uses));
	if (never)
		json_object_del(status, "expiresAt");
	else
		json_object_set(status, "expiresAt", json_new_string(ts));
	kube_condition_set(status, "Expired", expired ? "True" : "False",
			   expired ? "Expired" : never ? "NeverExpires" : "NotExpired",
			   expired ? "the key has expired"
			   : never ? "spec.expiry is 0s: the key does not expire"
				   : "the key is within its lifetime",
			   gen, now);
	kube_condition_set(status, "Exhausted", exhausted ? "True" : "False", exhausted ? "UsedUp" : "UsesLeft",
			   exhausted ? "the key has no registrations left" : "the key may register devices", gen, now);
	if (expired)
		kube_condition_set(status, "Ready", "False", "Expired", "the key has expired", gen, now);
	else if (exhausted)
		kube_condition_set(status, "Ready", "False", "UsedUp", "the key has been used up", gen, now);
	else
		kube_condition_set(status, "Ready", "True", "KeyValid", "the key can register devices", gen, now);
	if (!expired && !never)
		*requeue_ms = (uint64_t)(expires - now) * 1000 + 1000;
	return AUTHKEY_DONE;
}

/* Tailnet.spec.authKeyNamespaces (default: the operator's namespace) lists
 * where its keys may live. Elsewhere the AuthKey is marked not Ready and
 * registration refuses it (register.c). false when not allowed. */
static bool namespace_allowed(struct operator *op, const struct json *ak, struct json *status, time_t now)
{
	const char *tailnet = operator_tailnet_of(ak);
	struct json *tn = informer_get(op->tailnets, NULL, tailnet);
	bool ok = tailnet_authkey_namespace_allowed(tn, kube_namespace(ak), op->namespace);
	char msg[600];

	json_free(tn);
	if (ok)
		return true;
	snprintf(msg, sizeof(msg),
		 "namespace %s may not hold auth keys of tailnet %s: list it in the Tailnet's spec.authKeyNamespaces "
		 "(default: only %s)", kube_namespace(ak) ?: "", tailnet, op->namespace);
	json_object_set(status, "observedGeneration", json_new_int(kube_generation(ak)));
	kube_condition_set(status, "Ready", "False", "NamespaceNotAllowed", msg, kube_generation(ak), now);
	return false;
}

int authkey_reconcile(struct operator *op, const char *ns, const char *name, uint64_t *requeue_ms)
{
	struct json *ak = informer_get(op->authkeys, ns, name), *secret = NULL, *status = NULL;
	char secret_name[300], key[128] = "", prefix[64], hash[65];
	struct authkey_secret facts = { .name = secret_name };
	time_t now = time(NULL);
	int err = 0;

	if (!ak || kube_deleting(ak))
		goto out; /* the Secret goes with it (ownerReference) */
	status = json_clone(json_get(ak, "status"));
	if (!status)
		status = json_new_object();
	if (!status) {
		err = -ENOMEM;
		goto out;
	}
	if (!namespace_allowed(op, ak, status, now))
		goto write; /* no Secret minted there: nor could it be (RBAC) */
	if (strcmp(ns, op->namespace) != 0)
		*requeue_ms = FOREIGN_SECRET_RECHECK_MS;
	if (authkey_desired_status(ak, NULL, now, status, requeue_ms) == AUTHKEY_NEED_SECRET) {
		authkey_secret_name(name, secret_name, sizeof(secret_name));
		err = ensure_secret(op, ak, secret_name, &secret, &facts.conflict);
		if (err)
			goto out;
		if (!facts.conflict && secret_key(secret, key, sizeof(key))) {
			key_prefix(key, prefix, sizeof(prefix));
			key_hash(key, hash);
			facts.prefix = prefix;
			facts.hash = hash;
		}
		sodium_memzero(key, sizeof(key));
		authkey_desired_status(ak, &facts, now, status, requeue_ms);
	}
write:
	err = operator_update_status(op, &res_authkeys, ak, status);
	status = NULL;
	if (err == -EAGAIN) {
		*requeue_ms = 1; /* conflict: re-read right away */
		err = 0;
	}
out:
	sodium_memzero(key, sizeof(key));
	json_free(status);
	json_free_secret(secret);
	json_free(ak);
	return err;
}
