/* The stateful packet filter knitd enforces on decrypted traffic.
 *
 * Rules come from the netmap's `packetFilter` (Tailscale's FilterRule
 * shape, docs/control-protocol.md): null or absent means allow-all, an
 * array is a policy in force and everything it does not allow is dropped
 * (an empty array drops every new inbound flow). filter_rules_compile()
 * turns the JSON into lookup tables; filter_swap() puts them in force while
 * other threads check packets. docs/filter.md has the semantics and the
 * choices.
 *
 * Only inbound packets (peer → local TUN) are judged against the rules.
 * Outbound packets (local TUN → peer) are tracked, so replies to flows the
 * local device opened pass whatever the policy says; an outbound packet is
 * dropped only when its new flow finds no room in the table.
 *
 * Threads: filter_check_in/out may run on any number of threads at once
 * (the TUN reader, the crypt workers' in-order flush) and never block on a
 * swap; filter_swap waits for checks already under way to finish, so it
 * must not be called from inside a check, and only one swap runs at a time
 * (internally serialised). */
#ifndef KNIT_POLICY_FILTER_H
#define KNIT_POLICY_FILTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "policy/conntrack.h"

struct json;
struct pktbuf;
struct filter_rules;
struct filter_local;

enum filter_verdict {
	FILTER_ACCEPT = 0,
	FILTER_DROP_NO_RULE,     /* a new inbound flow the rules do not allow (or no longer allow) */
	FILTER_DROP_NOT_TRACKED, /* a reply-type packet (TCP non-SYN, echo reply, ICMP error) of no known flow */
	FILTER_DROP_MALFORMED,   /* not a well-formed IPv4/IPv6 packet with a complete transport header */
	FILTER_DROP_TABLE_FULL,  /* outbound: a new flow found no room in the connection table */
	FILTER_DROP_NOT_LOCAL,   /* inbound to an address the device neither holds nor routes */
	FILTER_VERDICTS,
};

/* Caps on what a packetFilter may ask for (untrusted input). */
#define FILTER_MAX_RULES 65536
#define FILTER_MAX_RANGES (1u << 20)           /* source and destination ranges together */
#define FILTER_MAX_TABLE_BYTES ((size_t)128 << 20) /* compiled tables */

/* Plain counters for the agent's /metrics exporter: read them with
 * atomic_load (or filter_counters()); nothing resets them. */
struct filter_counters {
	atomic_uint_fast64_t accepted_in, accepted_out;
	atomic_uint_fast64_t dropped[FILTER_VERDICTS]; /* by verdict; [FILTER_ACCEPT] stays 0 */
	atomic_uint_fast64_t swaps;
};

struct filter {
	struct filter_counters counters;
	struct conntrack *ct; /* survives swaps */
	/* The rules in force. Readers announce themselves in readers[epoch & 1]
	 * before loading it; filter_swap flips the epoch and waits for the old
	 * parity to drain before freeing the old rules. */
	_Atomic(struct filter_rules *) rules;
	_Atomic(struct filter_local *) local; /* NULL: no destination check */
	atomic_uint epoch;
	struct {
		atomic_long n;
		char pad[64 - sizeof(atomic_long)];
	} readers[2] __attribute__((aligned(64)));
	pthread_mutex_t swap_lock; /* guards gen; serialises swaps */
	uint32_t gen;
};

/* A filter with allow-all rules and a table of ct_max flows (0: default).
 * Returns 0 or -ENOMEM. */
int filter_new(struct filter **out, size_t ct_max);
void filter_free(struct filter *f);

/* Compiles a packetFilter value: NULL or JSON null gives allow-all rules.
 * On error returns NULL and writes why (which rule, which field) to err;
 * a caller keeps the filter it has (bad input changes nothing). */
struct filter_rules *filter_rules_compile(const struct json *packet_filter, char *err, size_t errlen);
void filter_rules_free(struct filter_rules *r);
bool filter_rules_allow_all(const struct filter_rules *r);
size_t filter_rules_count(const struct filter_rules *r); /* rules kept (allow-all: 0) */
size_t filter_rules_bytes(const struct filter_rules *r); /* compiled table size */
/* Would r let a new flow of proto from src to dst:dport in (family
 * AF_INET/AF_INET6, addresses network order; dport ignored for protocols
 * without ports)? The rules alone, no connection state: what `knit policy
 * check` and the tests ask. */
bool filter_rules_allow(const struct filter_rules *r, int family, uint8_t proto, const uint8_t *src,
			const uint8_t *dst, uint16_t dport);

/* Puts r in force (takes ownership) and frees the rules it replaces once
 * no check uses them. The connection table is kept: flows the local
 * device opened keep passing; flows a peer opened are judged again by r at
 * their next packet and cut if r no longer allows them. */
void filter_swap(struct filter *f, struct filter_rules *r);
/* filter_rules_compile + filter_swap. Returns 0, or -EINVAL (err says
 * why; the rules in force stay) or -ENOMEM. */
int filter_set(struct filter *f, const struct json *packet_filter, char *err, size_t errlen);

/* One address prefix: family AF_INET or AF_INET6, address network order
 * (bits past `bits` ignored). */
struct filter_prefix {
	int family;
	uint8_t addr[16];
	uint8_t bits;
};

/* The destinations inbound packets may have: the device's own addresses
 * and the routes it serves (approved subnet routes, exit node). Others
 * are dropped (FILTER_DROP_NOT_LOCAL) whatever the rules say, so a rule
 * with destination "*" cannot make knitd forward a peer's packets to
 * networks it does not serve (Tailscale's "destination not allowed").
 * p == NULL removes the check (knitd wg: plain WireGuard); n == 0 with p
 * set allows no destination. Swapped in like the rules. Returns 0,
 * -EINVAL (a bad family or length) or -ENOMEM; on error nothing changes. */
int filter_set_local(struct filter *f, const struct filter_prefix *p, size_t n);

/* Judges n inbound packets (plain IP packets as decrypted, before the
 * TUN); verdicts[i] gets an enum filter_verdict. now is monotonic ms. */
void filter_check_in(struct filter *f, const struct pktbuf *pkts, size_t n, uint64_t now, uint8_t *verdicts);
/* Tracks n outbound packets (read from the TUN, before routing to a peer);
 * verdicts[i] is FILTER_ACCEPT or FILTER_DROP_TABLE_FULL. */
void filter_check_out(struct filter *f, const struct pktbuf *pkts, size_t n, uint64_t now, uint8_t *verdicts);

/* Reclaims expired flows (run about once a second); returns how many. */
size_t filter_expire(struct filter *f, uint64_t now);

/* A snapshot of the counters. */
struct filter_counts {
	uint64_t accepted_in, accepted_out;
	uint64_t dropped[FILTER_VERDICTS];
	uint64_t swaps;
	struct conntrack_stats ct;
};
void filter_counters(const struct filter *f, struct filter_counts *out);
const char *filter_verdict_name(enum filter_verdict v); /* "no_rule", "not_tracked", ... */

#endif
