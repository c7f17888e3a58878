/* Node key lifetimes and renewal (docs/control-protocol.md, "Key
 * renewal"): how long a registration's node key lives, and the check a
 * renewing register call passes before its new node key replaces the old
 * one on the same Device (same addresses, routes, tags; no auth key).
 * Runs on the registration workers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "control/channel.h"
#include "control/messages.h"
#include "coord-internal.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "operator.h"

#define TAILNET_KEY_EXPIRY_DEFAULT "4320h"

uint64_t renew_key_lifetime_ms(const struct json *tn, const struct json *ak, bool tagged)
{
	const char *ak_life = json_str(json_path(ak, "spec", "nodeKeyExpiry", NULL));
	uint64_t life = 0;

	/* The AuthKey's own say wins, for tagged devices too: infrastructure
	 * keys expire only when asked to. */
	if (ak_life)
		return kube_duration_parse(ak_life, &life) ? life : 0;
	if (tagged)
		return 0;
	if (!kube_duration_parse(json_str(json_path(tn, "spec", "keyExpiry", NULL)) ?: TAILNET_KEY_EXPIRY_DEFAULT, &life))
		return 0;
	return life;
}

void renew_set_expiry(struct json *spec, uint64_t life_ms, time_t now)
{
	char ts[32];

	if (life_ms) {
		kube_time_format(now + (time_t)(life_ms / 1000), ts, sizeof(ts));
		json_object_set(spec, "keyExpiry", json_new_string(ts));
	} else {
		json_object_del(spec, "keyExpiry");
	}
}

int64_t renew_expiry_of(const struct json *dev)
{
	time_t t;

	if (!kube_time_parse(json_str(json_path(dev, "spec", "keyExpiry", NULL)), &t))
		return 0;
	return (int64_t)t;
}

/* The lifetime a renewal grants existing: what its AuthKey (if it still
 * exists) or its Tailnet say now. */
static uint64_t lifetime_for(struct operator *op, const struct json *existing)
{
	const char *ak_ns = json_str(json_path(existing, "spec", "authKey", "namespace", NULL));
	const char *ak_name = json_str(json_path(existing, "spec", "authKey", "name", NULL));
	struct json *ak = ak_ns && ak_name ? informer_get(op->authkeys, ak_ns, ak_name) : NULL;
	struct json *tn = informer_get(op->tailnets, NULL, operator_tailnet_of(existing));
	uint64_t life = renew_key_lifetime_ms(tn, ak, json_array_len(json_path(existing, "spec", "tags", NULL)) > 0);

	json_free(ak);
	json_free(tn);
	return life;
}

/* The proof binds the control key the agent pins: during a rotation any
 * key a handshake is accepted with. */
static bool proof_matches(struct coord *c, const struct register_request *rq, const uint8_t mpub[32])
{
	uint8_t keys[3][32], proof[32];
	size_t n = ctrlkey_accepted(c, keys);
	bool ok = false;

	for (size_t i = 0; i < n && !ok; i++)
		ok = messages_renew_proof(keys[i], rq->old_node_key, mpub, rq->node_key, proof) &&
		     sodium_memcmp(proof, rq->renew_proof, 32) == 0;
	sodium_memzero(keys, sizeof(keys));
	sodium_memzero(proof, sizeof(proof));
	return ok;
}

struct json *renew_check(struct coord *c, const char *mkey, const struct register_request *rq,
			 const struct json *existing, struct json *spec, time_t now)
{
	uint8_t mpub[32], have[32], proof[32];
	const char *cur = json_str(json_path(existing, "spec", "nodeKey", NULL));
	struct json *reply = NULL;
	bool has_cur;

	if (!existing)
		return coord_error_reply("NotRegistered", "this machine is not registered: run knit up --authkey KEY");
	has_cur = cur && channel_key_parse(cur, "nodekey:", have);
	/* The old key is the Device's, or, when a renewal's answer was lost
	 * and the agent asks again, the new key already is. */
	if (!has_cur || (sodium_memcmp(have, rq->old_node_key, 32) != 0 && sodium_memcmp(have, rq->node_key, 32) != 0)) {
		reply = coord_error_reply("NodeKeyMismatch", "oldNodeKey is not this device's node key");
		goto out;
	}
	if (!channel_key_parse(mkey, "mkey:", mpub) || !proof_matches(c, rq, mpub)) {
		reply = coord_error_reply("BadRenewProof", "renewProof does not prove the old node key");
		goto out;
	}
	if (json_bool(json_path(existing, "status", "keyExpired", NULL), false) ||
	    (renew_expiry_of(existing) && renew_expiry_of(existing) <= (int64_t)now)) {
		reply = coord_error_reply("KeyExpired", "the node key has expired: re-authenticate with knit up --authkey KEY");
		goto out;
	}
	/* A device that never expires stays so; one that does gets a whole
	 * new lifetime from now. */
	if (renew_expiry_of(existing))
		renew_set_expiry(spec, lifetime_for(c->op, existing), now);
	log_info("node key renewed", "device=%s machine=%.16s", kube_name(existing), mkey + 5);
	operator_event(c->op, existing, false, "KeyRenewed", "Node key renewed by the device (old key proven)");
out:
	sodium_memzero(proof, sizeof(proof));
	return reply;
}
