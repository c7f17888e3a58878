/* The coordination server behind authentication, without an API server.
 * A session comes from a real control handshake (made once; both ends'
 * sessions are plain structs, restored before every input), and the input
 * is what an authenticated agent sends on it:
 *
 *   first byte even: the rest is a call's plaintext. The agent seals it,
 *     the server opens it (channel_open, as open_request does) and handles
 *     it as h_call and the registration workers do, up to where they would
 *     call the API server: update and map requests through the codec into
 *     the soft state peers see; register through the codec, the renewal
 *     proof check (renew.c's), and the Device document register.c would
 *     write (register_device_doc, the same spec fields). The promise
 *     checked beyond not crashing: what the server would then publish
 *     about that Device (record_from_device) parses in every agent
 *     (netmap_node_from_json): no call makes the server send what agents
 *     refuse.
 *   first byte odd: the rest is a frame as it arrives (session id,
 *     counter, sealed box), opened by the server's session: malformed,
 *     forged and replayed frames. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "control/fields.h"
#include "control/messages.h"
#include "coord-internal.h"
#include "json.h"
#include "record.h"

static struct {
	bool ready;
	uint8_t server_priv[32], server_pub[32], machine_pub[32];
	char mkey[80];
	struct channel_session agent, server;
	struct json *existing; /* this machine's Device, as the API server has it */
} fx;

static void setup_once(void)
{
	static const char dev_text[] =
		"{\"apiVersion\":\"knit.dev/v1alpha1\",\"kind\":\"Device\",\"metadata\":{\"name\":\"laptop-3f9a2c\"},"
		"\"spec\":{\"tailnet\":\"default\",\"hostname\":\"laptop\",\"user\":\"alice@example.com\","
		"\"keyExpiry\":\"2030-01-01T00:00:00Z\",\"approvedRoutes\":[\"10.0.0.0/24\"]},"
		"\"status\":{\"addresses\":[\"100.64.0.5\",\"fd7a:115c:a1e0::5\"]}}";
	uint8_t machine_priv[32], msg1[CHANNEL_MSG1_LEN], msg2[CHANNEL_MSG2_LEN], ts[CHANNEL_TAI64N_LEN] = { 0 };
	struct channel_initiator in;

	if (fx.ready)
		return;
	memset(fx.server_priv, 0x53, 32);
	memset(machine_priv, 0x4d, 32);
	channel_public_key(fx.server_pub, fx.server_priv);
	channel_public_key(fx.machine_pub, machine_priv);
	channel_key_format(fx.machine_pub, "mkey:", fx.mkey, sizeof(fx.mkey));
	ts[0] = 0x40;
	if (channel_initiate(&in, machine_priv, fx.server_pub, ts, msg1) ||
	    channel_respond(fx.server_priv, msg1, sizeof(msg1), 0x1122334455667788ULL, msg2, &fx.server, ts) ||
	    channel_finish(&in, msg2, sizeof(msg2), &fx.agent))
		abort();
	fx.existing = json_parse(dev_text, sizeof(dev_text) - 1, NULL);
	if (!fx.existing)
		abort();
	fx.ready = true;
}

/* What peers would receive about dev must parse in every agent. */
static void check_published(const struct json *dev, const struct record_soft *soft)
{
	struct netmap_node n, back;
	struct json *j;
	char why[200];

	if (record_from_device(dev, "tailnet.knit", soft, &n, NULL, why, sizeof(why)))
		return;
	j = netmap_node_to_json(&n);
	if (j) {
		if (!netmap_node_from_json(j, "", &back, why, sizeof(why)))
			abort(); /* the server would publish what agents refuse */
		if (!netmap_node_equal(&n, &back))
			abort();
		netmap_node_free(&back);
	}
	json_free(j);
	netmap_node_free(&n);
}

static void handle_update(const struct json *req)
{
	struct update_request u;
	struct record_soft soft = { 0 };
	bool is_map;
	char why[200];

	if (!update_request_from_json(req, &u, &is_map, why, sizeof(why)))
		return;
	soft.endpoints = u.endpoints;
	soft.nendpoints = u.nendpoints;
	soft.relay = u.has_relay ? u.relay : 0;
	soft.online = true;
	check_published(fx.existing, &soft);
	update_request_free(&u);
}

/* register.c's do_register between the codec and the API server. */
static void handle_register(const struct json *req, bool has_device)
{
	struct register_request rq;
	struct json *dev, *spec, *status;
	char why[200], host[64], name[128], key[MESSAGES_KEY_TEXT_LEN];
	uint8_t proof[32];

	if (!register_request_from_json(req, &rq, why, sizeof(why)))
		return;
	if (rq.has_old_node_key) {
		/* renew.c: the proof is checked with the control key. */
		if (messages_renew_proof(fx.server_priv, rq.old_node_key, fx.machine_pub, rq.node_key, proof) &&
		    sodium_memcmp(proof, rq.renew_proof, 32) == 0)
			abort(); /* a proof nobody without the old key's private half can make */
	}
	fields_hostname_sanitize(rq.hostname, host, sizeof(host));
	dev = register_device_doc(has_device ? fx.existing : NULL, host, fx.mkey, name, sizeof(name), &spec);
	if (!dev)
		abort();
	json_object_set(spec, "hostname", json_new_string(host));
	json_object_set(spec, "machineKey", json_new_string(fx.mkey));
	channel_key_format(rq.node_key, "nodekey:", key, sizeof(key));
	json_object_set(spec, "nodeKey", json_new_string(key));
	channel_key_format(rq.disco_key, "discokey:", key, sizeof(key));
	json_object_set(spec, "discoKey", json_new_string(key));
	json_object_set(spec, "tags", fields_strv_json(rq.tags, rq.ntags));
	if (rq.nroutes)
		json_object_set(spec, "advertisedRoutes", fields_prefixes_json(rq.routes, rq.nroutes, false));
	renew_set_expiry(spec, (uint64_t)(rq.ntags ? 0 : 3600000), 1800000000);
	if (!has_device) {
		/* The addresses the IPAM would give it. */
		status = json_new_object();
		struct json *a = json_new_array();
		json_array_append(a, json_new_string("100.64.0.9"));
		json_array_append(a, json_new_string("fd7a:115c:a1e0::9"));
		json_object_set(status, "addresses", a);
		json_object_set(dev, "status", status);
	}
	check_published(dev, NULL);
	json_free(dev);
	register_request_free(&rq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct channel_session agent, server;
	struct buf frame = BUF_INIT(1u << 20), plain = BUF_INIT(1u << 20);
	struct json *req;
	const char *type;

	setup_once();
	if (size < 1)
		return 0;
	agent = fx.agent;
	server = fx.server;
	if (data[0] & 1) {
		channel_open(&server, data + 1, size - 1, &plain);
		goto out;
	}
	if (channel_seal(&agent, data + 1, size - 1, &frame) || channel_open(&server, frame.data, frame.len, &plain))
		abort(); /* what the agent seals, the server opens */
	if (plain.len != size - 1 || memcmp(plain.data, data + 1, size - 1))
		abort();
	req = json_parse((const char *)plain.data, plain.len, NULL);
	if (!req || !json_is_object(req)) {
		json_free(req);
		goto out;
	}
	type = json_str(json_get(req, "type")) ?: "";
	if (!strcmp(type, "update") || !strcmp(type, "map"))
		handle_update(req);
	else if (!strcmp(type, "register"))
		handle_register(req, (data[0] & 2) != 0);
	json_free_secret(req);
out:
	buf_free(&frame);
	buf_free_secure(&plain);
	channel_session_wipe(&agent);
	channel_session_wipe(&server);
	return 0;
}
