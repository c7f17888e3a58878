/* The calls (docs/control-protocol.md, "Calls"): register, update, map
 * and logout requests and their responses, application errors. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "control/fields.h"
#include "control/messages.h"
#include "json.h"

/* ---- calls ---------------------------------------------------------------------- */

void register_request_free(struct register_request *r)
{
	if (!r)
		return;
	if (r->auth_key) {
		sodium_memzero(r->auth_key, strlen(r->auth_key));
		free(r->auth_key);
	}
	if (r->pod_token) {
		sodium_memzero(r->pod_token, strlen(r->pod_token));
		free(r->pod_token);
	}
	free(r->hostname);
	fields_strv_free(r->tags, r->ntags);
	free(r->routes);
	memset(r, 0, sizeof(*r));
}

struct json *register_request_to_json(const struct register_request *r)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	json_put(o, "type", json_new_string("register"), &err);
	if (r->auth_key)
		json_put(o, "authKey", json_new_string(r->auth_key), &err);
	json_put(o, "nodeKey", fields_key_json(r->node_key, "nodekey:"), &err);
	json_put(o, "discoKey", fields_key_json(r->disco_key, "discokey:"), &err);
	if (r->hostname)
		json_put(o, "hostname", json_new_string(r->hostname), &err);
	json_put(o, "tags", fields_strv_json(r->tags, r->ntags), &err);
	json_put(o, "advertiseRoutes", fields_prefixes_json(r->routes, r->nroutes, false), &err);
	if (r->has_old_node_key) {
		json_put(o, "oldNodeKey", fields_key_json(r->old_node_key, "nodekey:"), &err);
		json_put(o, "renewProof", fields_key_json(r->renew_proof, "proof:"), &err);
	}
	if (r->pod_token)
		json_put(o, "podToken", json_new_string(r->pod_token), &err);
	if (err) {
		messages_json_free_secret(o);
		return NULL;
	}
	return o;
}

/* A compact JWS: base64url header.payload.signature, none empty. */
static bool jwt_text(const char *s)
{
	size_t dots = 0, run = 0;

	for (; *s; s++) {
		if (*s == '.') {
			if (!run)
				return false;
			dots++;
			run = 0;
		} else if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
			   *s == '-' || *s == '_') {
			run++;
		} else {
			return false;
		}
	}
	return dots == 2 && run;
}

bool register_request_from_json(const struct json *j, struct register_request *out, char *err, size_t errlen)
{
	bool ok;

	memset(out, 0, sizeof(*out));
	ok = fields_want_type(j, "register", err, errlen) &&
	     fields_get_str(j, "", "authKey", false, 128, &out->auth_key, err, errlen) &&
	     fields_get_key(j, "", "nodeKey", "nodekey:", true, out->node_key, NULL, err, errlen) &&
	     fields_get_key(j, "", "discoKey", "discokey:", true, out->disco_key, NULL, err, errlen) &&
	     fields_get_str(j, "", "hostname", false, 255, &out->hostname, err, errlen) &&
	     fields_get_tags(j, "", "tags", &out->tags, &out->ntags, err, errlen) &&
	     fields_get_prefixes(j, "", "advertiseRoutes", false, true, &out->routes, &out->nroutes, err, errlen) &&
	     fields_get_key(j, "", "oldNodeKey", "nodekey:", false, out->old_node_key, &out->has_old_node_key, err,
			    errlen) &&
	     fields_get_key(j, "", "renewProof", "proof:", out->has_old_node_key, out->renew_proof, NULL, err, errlen) &&
	     fields_get_str(j, "", "podToken", false, MESSAGES_POD_TOKEN_MAX, &out->pod_token, err, errlen);
	if (ok && out->pod_token && !jwt_text(out->pod_token))
		ok = fields_fail(err, errlen, "podToken: not a JWT (three base64url parts)");
	/* A renewal proves the old key instead of showing an auth key. */
	if (ok && out->has_old_node_key && out->auth_key)
		ok = fields_fail(err, errlen, "oldNodeKey: a renewal carries no authKey");
	if (!ok)
		register_request_free(out);
	return ok;
}

void register_response_free(struct register_response *r)
{
	if (!r)
		return;
	free(r->device);
	free(r->name);
	free(r->addresses);
	free(r->dns_suffix);
	memset(r, 0, sizeof(*r));
}

bool messages_renew_proof(const uint8_t priv[MESSAGES_KEY_LEN], const uint8_t pub[MESSAGES_KEY_LEN],
			  const uint8_t machine_pub[MESSAGES_KEY_LEN], const uint8_t new_node_pub[MESSAGES_KEY_LEN],
			  uint8_t proof[MESSAGES_KEY_LEN])
{
	static const char label[] = "knit renew v1";
	crypto_generichash_state h;
	uint8_t shared[crypto_scalarmult_BYTES];
	bool ok = crypto_scalarmult(shared, priv, pub) == 0;

	if (ok) {
		crypto_generichash_init(&h, shared, sizeof(shared), MESSAGES_KEY_LEN);
		crypto_generichash_update(&h, (const uint8_t *)label, sizeof(label) - 1);
		crypto_generichash_update(&h, machine_pub, MESSAGES_KEY_LEN);
		crypto_generichash_update(&h, new_node_pub, MESSAGES_KEY_LEN);
		crypto_generichash_final(&h, proof, MESSAGES_KEY_LEN);
	}
	sodium_memzero(shared, sizeof(shared));
	sodium_memzero(&h, sizeof(h));
	return ok;
}

struct json *register_response_to_json(const struct register_response *r)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	if (r->device)
		json_put(o, "device", json_new_string(r->device), &err);
	if (r->name)
		json_put(o, "name", json_new_string(r->name), &err);
	json_put(o, "addresses", fields_prefixes_json(r->addresses, r->naddresses, true), &err);
	json_put(o, "ephemeral", json_new_bool(r->ephemeral), &err);
	if (r->dns_suffix)
		json_put(o, "dnsSuffix", json_new_string(r->dns_suffix), &err);
	if (r->key_expiry)
		json_put(o, "keyExpiry", json_new_int(r->key_expiry), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

bool register_response_from_json(const struct json *j, struct register_response *out, char *err, size_t errlen)
{
	bool ok;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return fields_fail(err, errlen, "want a JSON object, got %s", json_type_name(json_type(j)));
	ok = fields_get_str(j, "", "device", true, FIELDS_MAX_NAME, &out->device, err, errlen) &&
	     fields_get_str(j, "", "name", true, FIELDS_HOSTNAME_MAX, &out->name, err, errlen) &&
	     fields_get_prefixes(j, "", "addresses", true, false, &out->addresses, &out->naddresses, err, errlen) &&
	     fields_get_bool(j, "", "ephemeral", &out->ephemeral, err, errlen) &&
	     fields_get_str(j, "", "dnsSuffix", false, FIELDS_MAX_NAME, &out->dns_suffix, err, errlen) &&
	     fields_get_int(j, "", "keyExpiry", 0, INT64_MAX, &out->key_expiry, NULL, err, errlen);
	if (ok && out->naddresses == 0)
		ok = fields_fail(err, errlen, "addresses: empty");
	if (!ok)
		register_response_free(out);
	return ok;
}

void update_request_free(struct update_request *u)
{
	if (!u)
		return;
	free(u->endpoints);
	memset(u, 0, sizeof(*u));
}

static struct json *soft_state_json(const struct update_request *u, const char *type)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	json_put(o, "type", json_new_string(type), &err);
	json_put(o, "endpoints", fields_endpoints_json(u->endpoints, u->nendpoints), &err);
	if (u->has_relay)
		json_put(o, "relay", json_new_int(u->relay), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

struct json *update_request_to_json(const struct update_request *u)
{
	return soft_state_json(u, "update");
}

struct json *map_request_to_json(const struct update_request *u)
{
	return soft_state_json(u, "map");
}

bool update_request_from_json(const struct json *j, struct update_request *out, bool *is_map,
			      char *err, size_t errlen)
{
	const char *t = messages_type(j);
	bool ok;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return fields_fail(err, errlen, "want a JSON object, got %s", json_type_name(json_type(j)));
	if (!t || (strcmp(t, "update") && strcmp(t, "map")))
		return fields_fail(err, errlen, "type: want \"update\" or \"map\"");
	*is_map = strcmp(t, "map") == 0;
	ok = fields_get_endpoints(j, "", &out->endpoints, &out->nendpoints, err, errlen) &&
	     fields_get_relay(j, "", &out->relay, &out->has_relay, err, errlen);
	if (!ok)
		update_request_free(out);
	return ok;
}

/* ---- shared ------------------------------------------------------------------------ */

const char *messages_type(const struct json *j)
{
	return json_str(json_get(j, "type"));
}

bool messages_error(const struct json *j, const char **code, const char **message)
{
	const struct json *e = json_get(j, "error");

	if (!e)
		return false;
	if (message)
		*message = json_str(e) ? json_str(e) : "";
	if (code)
		*code = json_str(json_get(j, "code")) ? json_str(json_get(j, "code")) : "";
	return true;
}

struct json *messages_error_new(const char *code, const char *message)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	json_put(o, "error", json_new_string(message), &err);
	json_put(o, "code", json_new_string(code), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

void messages_json_free_secret(struct json *j)
{
	json_free_secret(j);
}
