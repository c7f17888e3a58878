/* The node's STUN client: Binding requests (lib/stun/) from the shared
 * WireGuard socket to the STUN server of every relay node in the relay
 * map, so the answers carry the reflexive address peers can reach this
 * node at (the NAT's mapping of that very socket), and their round trips
 * rank the regions: the home region is the one answering fastest (the
 * first region while none has answered). One per node: every identity
 * shares the socket, so its reflexive addresses are theirs too.
 *
 * A node named only by hostName (no ipv4/ipv6) is looked up without
 * blocking the loop (getaddrinfo_a, lib/net/lookup.h) and probed at the
 * first address of each family it resolves to, as soon as it resolves;
 * the name is looked up again at most once a minute.
 *
 * Probes go out when the relay map changes and every NETSTUN_INTERVAL_MS;
 * an answer matches its request by transaction id (anything else is
 * counted and dropped). Loop thread. */
#ifndef KNIT_AGENT_NETSTUN_H
#define KNIT_AGENT_NETSTUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/endpoint.h"

struct hub;
struct json;
struct loop;
struct netstun;

#define NETSTUN_INTERVAL_MS 20000u
#define NETSTUN_TIMEOUT_MS 3000u
/* A reflexive address not seen again for this long is dropped. */
#define NETSTUN_REFLEXIVE_TTL_MS 65000u
#define NETSTUN_MAX_REFLEXIVE 4

struct netstun_stats {
	unsigned long long requests, responses;
	unsigned long long bad;	/* did not parse, or no address */
	unsigned long long unmatched; /* no request of ours with that id */
};

int netstun_new(struct netstun **out, struct loop *loop, struct hub *hub);
void netstun_free(struct netstun *s);

/* The relay map to probe (the netmap's "relayMap"; NULL: none). Probes at
 * once when it differs from the one held. */
void netstun_set_relaymap(struct netstun *s, const struct json *relay_map);
/* Sends a round of probes now. */
void netstun_probe(struct netstun *s);

/* datagrams_fn for STUN (arg: the netstun): true if it answered one of
 * our requests. */
bool netstun_on_datagram(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from);

/* The reflexive endpoints seen lately (distinct), at most max. */
size_t netstun_reflexive(const struct netstun *s, struct endpoint *out, size_t max);
/* The preferred region (fastest to answer; the first region when none
 * has); 0 without a relay map. A region is left only for one faster by a
 * third, so jitter does not move the node back and forth. */
int netstun_home(const struct netstun *s);
/* The last round trip to region in ms, -1 if it never answered. */
int netstun_latency(const struct netstun *s, int region);
/* Whether two STUN servers saw different mappings of the socket at once
 * (endpoint-dependent, "hard" NAT). */
bool netstun_mapping_varies(const struct netstun *s);
void netstun_stats(const struct netstun *s, struct netstun_stats *out);

#endif
