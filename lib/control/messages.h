/* The control protocol's messages (docs/control-protocol.md) as C structs,
 * to and from their JSON. Pure, and the same for both ends: the agent
 * parses what the server builds and the other way round.
 *
 * Parsers return false and leave a message naming the field
 * ("peers[2].allowedIPs[0]: ...") in err; on failure the output is left
 * empty (safe to free). Unknown members are ignored, so either end may add
 * fields. Builders return a new tree, or NULL on ENOMEM.
 *
 * One bad node does not cost the rest: a malformed peer in a full netmap
 * or delta (or one repeating a node key, or self's), and a malformed
 * removal, are left out and counted in `skipped` with the first reason in
 * `skipped_why`, for the agent to log. What the syntax of every field is
 * (tags, hostnames, prefixes, keys, endpoints) lives in control/fields.h;
 * the codec is in control/netmap.c (netmaps, peers, deltas) and
 * control/calls.c (calls). */
#ifndef KNIT_CONTROL_MESSAGES_H
#define KNIT_CONTROL_MESSAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/endpoint.h"

struct json;

#define MESSAGES_KEY_LEN 32
/* "discokey:" + 64 hex + NUL fits. */
#define MESSAGES_KEY_TEXT_LEN 80

/* An address with a prefix length: "100.64.0.7/32", "fd7a:115c:a1e0::7/128".
 * A bare address is a host prefix. */
struct netmap_prefix {
	int family; /* AF_INET or AF_INET6 */
	uint8_t bits;
	uint8_t addr[16];
};

bool netmap_prefix_parse(struct netmap_prefix *p, const char *s);
/* "addr/bits", or just "addr" when bare is set and it is a host prefix.
 * Returns the length, or -ENOSPC. */
int netmap_prefix_format(const struct netmap_prefix *p, bool bare, char *out, size_t len);
bool netmap_prefix_equal(const struct netmap_prefix *a, const struct netmap_prefix *b);

/* A node as the netmap shows it: self, or a peer. */
struct netmap_node {
	char *name; /* "db" */
	char *fqdn; /* "db.tailnet.knit"; NULL if not sent */
	char *device; /* Device object name "db-91ac02"; NULL if not sent */
	uint8_t node_key[MESSAGES_KEY_LEN];
	uint8_t disco_key[MESSAGES_KEY_LEN];
	bool has_disco_key;
	struct netmap_prefix *addresses;
	size_t naddresses;
	struct netmap_prefix *allowed_ips;
	size_t nallowed_ips;
	struct endpoint *endpoints;
	size_t nendpoints;
	int relay; /* home relay region, 0: none */
	bool online;
	bool ephemeral;
	char **tags;
	size_t ntags;
	char *user; /* the owner's login ("alice@example.com"); NULL: tagged or not sent */
	int64_t key_expiry; /* when node_key expires, Unix seconds; 0: never */
};

/* The node's whole view. The members the agent does not interpret yet are
 * kept as JSON (owned). */
struct netmap {
	uint64_t seq;
	struct netmap_node self;
	struct netmap_node *peers;
	size_t npeers;
	char *dns_suffix; /* dns.suffix, NULL if none */
	struct json *dns; /* object or NULL */
	struct json *relay_map; /* object or NULL */
	struct json *packet_filter; /* array or NULL */
	size_t skipped; /* peers left out as malformed (see the top) */
	char skipped_why[160]; /* the first one's reason */
};

/* What a delta touches besides upserts and removes ("has" flags). */
enum {
	NETMAP_HAS_SELF = 1u << 0,
	NETMAP_HAS_DNS = 1u << 1,
	NETMAP_HAS_RELAY_MAP = 1u << 2,
	NETMAP_HAS_PACKET_FILTER = 1u << 3,
};

struct netmap_delta {
	uint64_t seq;
	unsigned has;
	struct netmap_node self;
	struct netmap_node *upsert;
	size_t nupsert;
	uint8_t (*remove)[MESSAGES_KEY_LEN];
	size_t nremove;
	char *dns_suffix;
	struct json *dns;
	struct json *relay_map;
	struct json *packet_filter;
	size_t skipped; /* upserts and removals left out as malformed */
	char skipped_why[160];
};

bool netmap_node_from_json(const struct json *j, const char *where, struct netmap_node *out,
			   char *err, size_t errlen);
struct json *netmap_node_to_json(const struct netmap_node *n);
bool netmap_node_equal(const struct netmap_node *a, const struct netmap_node *b);
/* Deep copy; -ENOMEM leaves out empty. */
int netmap_node_clone(struct netmap_node *out, const struct netmap_node *n);
void netmap_node_free(struct netmap_node *n);

/* {"type":"full",...} */
bool netmap_from_json(const struct json *j, struct netmap *out, char *err, size_t errlen);
struct json *netmap_to_json(const struct netmap *nm);
void netmap_free(struct netmap *nm);
const struct netmap_node *netmap_find_peer(const struct netmap *nm, const uint8_t node_key[MESSAGES_KEY_LEN]);

/* {"type":"delta",...} */
bool netmap_delta_from_json(const struct json *j, struct netmap_delta *out, char *err, size_t errlen);
struct json *netmap_delta_to_json(const struct netmap_delta *d);
void netmap_delta_free(struct netmap_delta *d);
/* Applies d to nm all or nothing: removes first, then upserts by node key
 * (a removed key may come back in the same delta), then what d->has names.
 * An upsert with self's node key is skipped (counted in nm->skipped, to
 * which d->skipped is added).
 * Takes the contents of d on success (d is left empty); on failure nm and
 * d are unchanged. Returns 0, -ENOMEM, or -ESTALE when d->seq is not newer
 * than nm->seq (err says so). */
int netmap_apply_delta(struct netmap *nm, struct netmap_delta *d, char *err, size_t errlen);
/* The delta that turns from into to (for the server): seq = to->seq. */
int netmap_diff(const struct netmap *from, const struct netmap *to, struct netmap_delta *out);

/* ---- calls ------------------------------------------------------------- */

struct register_request {
	char *auth_key; /* NULL: this machine key comes back; wiped on free */
	uint8_t node_key[MESSAGES_KEY_LEN];
	uint8_t disco_key[MESSAGES_KEY_LEN];
	char *hostname;
	char **tags;
	size_t ntags;
	struct netmap_prefix *routes;
	size_t nroutes;
	/* Key renewal (no auth key): the node key being replaced, and the
	 * proof that the caller holds its private half (messages_renew_proof). */
	bool has_old_node_key;
	uint8_t old_node_key[MESSAGES_KEY_LEN];
	uint8_t renew_proof[MESSAGES_KEY_LEN];
	/* A knitd pod's projected ServiceAccount token (audience knit.dev/node,
	 * docs/cni.md): binds the Device to the Kubernetes Node its pod runs
	 * on. NULL: not sent (the Device vouches for no pod). Wiped on free. */
	char *pod_token;
};

/* A JWT of the kubelet's, with room to spare (they are ~1 KiB). */
#define MESSAGES_POD_TOKEN_MAX 8192

struct register_response {
	char *device;
	char *name;
	struct netmap_prefix *addresses;
	size_t naddresses;
	bool ephemeral;
	char *dns_suffix; /* NULL if not sent */
	int64_t key_expiry; /* the node key's expiry, Unix seconds; 0: never */
};

/* The auth key ends up in the tree: free it with messages_json_free_secret(). */
struct json *register_request_to_json(const struct register_request *r);
bool register_request_from_json(const struct json *j, struct register_request *out, char *err, size_t errlen);
void register_request_free(struct register_request *r);
/* A renewal's proof of the old node key: BLAKE2b-256 keyed with
 * X25519(priv, pub) over "knit renew v1" | machine key | new node key.
 * The agent passes (old node key private, control key); the server
 * (control key private, old node key): the same shared secret. false on
 * a low-order point. */
bool messages_renew_proof(const uint8_t priv[MESSAGES_KEY_LEN], const uint8_t pub[MESSAGES_KEY_LEN],
			  const uint8_t machine_pub[MESSAGES_KEY_LEN], const uint8_t new_node_pub[MESSAGES_KEY_LEN],
			  uint8_t proof[MESSAGES_KEY_LEN]);

struct json *register_response_to_json(const struct register_response *r);
bool register_response_from_json(const struct json *j, struct register_response *out, char *err, size_t errlen);
void register_response_free(struct register_response *r);

/* Soft state: {"type":"update","endpoints":[...],"relay":n} and the map
 * request {"type":"map","endpoints":[...]}, which share a shape. */
struct update_request {
	struct endpoint *endpoints;
	size_t nendpoints;
	int relay;
	bool has_relay;
};

struct json *update_request_to_json(const struct update_request *u);
struct json *map_request_to_json(const struct update_request *u);
/* Accepts either type; *is_map says which. */
bool update_request_from_json(const struct json *j, struct update_request *out, bool *is_map,
			      char *err, size_t errlen);
void update_request_free(struct update_request *u);

/* ---- shared ------------------------------------------------------------- */

/* The "type" member, or NULL. */
const char *messages_type(const struct json *j);
/* True if j is an application error {"error": "...", "code": "..."};
 * *code and *message (either may be NULL) point into j ("" if absent). */
bool messages_error(const struct json *j, const char **code, const char **message);
struct json *messages_error_new(const char *code, const char *message);
/* Wipes every string in the tree (auth keys, private keys), then frees it. */
void messages_json_free_secret(struct json *j);

#endif
