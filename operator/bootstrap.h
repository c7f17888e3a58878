/* What a fresh install needs before anyone writes a custom resource, made
 * by the operator itself so that `kubectl apply -f manifests/` (which cannot
 * create a CRD and its objects in one go) forms a mesh: the Tailnet
 * "default" when no Tailnet exists, with the pools, DNS suffix and relay
 * map from the command line, the AuthKey the node agents join with, and
 * the Secret holding the relays' mesh key. Each is only ever created when
 * absent, never updated: later edits by users stay. */
#ifndef KNIT_OPERATOR_BOOTSTRAP_H
#define KNIT_OPERATOR_BOOTSTRAP_H

#include <stdbool.h>
#include <stddef.h>

#include "control/relaymap.h"

struct json;
struct operator;

struct bootstrap_opts {
	/* The default Tailnet's spec; NULL leaves the CRD's default. Created
	 * only if op->create_default_tailnet. */
	const char *ipv4_pool, *ipv6_pool, *dns_suffix;
	/* The default Tailnet's relay map: region 1 ("default"), one node per
	 * relay, "https://HOST[:PORT]" (TLS, port 443 by default),
	 * "http://HOST[:PORT]" (plain TCP, port 80) or "HOST[:PORT]" (as
	 * https), each with an optional "#relaykey:<64 hex>" that pins the
	 * relay's key (publicKey), named 1a, 1b, ... in order; STUN on
	 * relay_stun_port of each (a decimal port; NULL: 3478; "0": none). */
	const char *relays[RELAYMAP_MAX_NODES];
	size_t nrelays;
	const char *relay_stun_port;
	/* The embedded relay (--relay-listen ADDR:PORT) and its key
	 * ("relaykey:<hex>"): a relay URL naming that very HOST:PORT, with no
	 * key of its own, gets it. NULL: none, or no key worth pinning (a
	 * key made fresh each run: the Tailnet, made once, would keep pinning
	 * the first run's). */
	const char *self_listen, *self_key;
	/* Secret made in the operator's namespace (NULL: none) holding 32
	 * random bytes under "mesh-key": the relays' --mesh-key-file. */
	const char *relay_mesh_secret;
	/* AuthKey made in the operator's namespace (NULL: none): reusable,
	 * preauthorized, with these comma-separated tags and this lifetime (a
	 * Go duration; NULL: the CRD's default). */
	const char *authkey, *authkey_tags, *authkey_expiry;
};

/* Checks the options as the CRDs would (pools are CIDRs of their family,
 * tags tag:name, names DNS names); false with a message naming the flag. */
bool bootstrap_opts_check(const struct bootstrap_opts *o, char *err, size_t errlen);

/* The objects to create; the caller frees. NULL when out of memory. */
struct json *bootstrap_tailnet(const struct bootstrap_opts *o);
struct json *bootstrap_authkey(const struct bootstrap_opts *o, const char *ns);
/* The relay map the options ask for (NULL when none, or out of memory). */
struct json *bootstrap_relay_map(const struct bootstrap_opts *o);
/* The mesh-key Secret, with 32 bytes from libsodium's CSPRNG. */
struct json *bootstrap_mesh_secret(const struct bootstrap_opts *o, const char *ns);

/* Loop thread, once the leader's caches are synced: starts a thread that
 * creates what is missing through the blocking client, retrying until done
 * or bootstrap_join(). o's strings must outlive it (argv does). */
int bootstrap_start(struct operator *op, const struct bootstrap_opts *o);
/* Stops and joins that thread; never on the loop thread (it may be waiting
 * on the loop for an API call). Safe if never started. */
void bootstrap_join(void);

#endif
