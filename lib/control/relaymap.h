/* The relay map: which relay regions a tailnet's agents may use, and the
 * relays (knit-relay, docs/relay-protocol.md) and STUN servers in each.
 * It is a Tailnet's spec.relayMap, sent to agents unchanged as the
 * netmap's "relayMap" (docs/control-protocol.md):
 *
 *   {"regions":[{"id":1,"code":"home","name":"Home","nodes":[
 *     {"name":"1a","hostName":"relay.example.com","ipv4":"192.0.2.1",
 *      "relayPort":443,"stunPort":3478,"tls":true,
 *      "publicKey":"relaykey:<64 hex>"}]}]}
 *
 * A node is dialled at ipv4/ipv6 when given, else by resolving hostName;
 * hostName is also the TLS server name and the upgrade's Host. relayPort
 * defaults to 443, stunPort to 3478 (0: the node serves no STUN), tls to
 * true (false: plain TCP, for tests and relays behind a TLS-terminating
 * proxy on a trusted network). publicKey, when given, is the relay's
 * static key (knit-relay --print-public-key): a client refuses a relay at
 * that node that proves another key (docs/relay-protocol.md); without it
 * any key the relay proves is taken. Region ids are 1-65535 and unique; a
 * region's node names are unique within it. The order of regions and of
 * nodes is kept: a region's first node is its preferred one. */
#ifndef KNIT_CONTROL_RELAYMAP_H
#define KNIT_CONTROL_RELAYMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"

#define RELAYMAP_MAX_REGIONS 64
#define RELAYMAP_MAX_NODES 16
#define RELAYMAP_DEFAULT_RELAY_PORT 443
#define RELAYMAP_DEFAULT_STUN_PORT 3478

struct relaymap_node {
	char name[65];
	char host[254];
	char ipv4[16]; /* "" when not given */
	char ipv6[46]; /* "" when not given */
	uint16_t relay_port;
	uint16_t stun_port; /* 0: no STUN */
	bool tls;
	bool has_key; /* publicKey was given: pin it */
	uint8_t key[32];
};

struct relaymap_region {
	int id;
	char code[33];
	char name[129];
	struct relaymap_node *nodes;
	size_t nnodes;
};

struct relaymap {
	struct relaymap_region *regions;
	size_t nregions;
};

/* Parses j (the "relayMap" object; NULL or JSON null is the empty map)
 * into *out. On a false return err says "<path>: why" and *out is empty. */
bool relaymap_parse(const struct json *j, struct relaymap *out, char *err, size_t errlen);
void relaymap_free(struct relaymap *m);
/* The region with this id, NULL if none. */
const struct relaymap_region *relaymap_region(const struct relaymap *m, int id);

#endif
