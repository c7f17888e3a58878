/* Connection tracking for the packet filter: a bounded table of flows seen
 * on decrypted traffic, keyed as the local device sees them (remote and
 * local address and port), so a packet and its reply find the same entry.
 *
 * Each flow records who opened it (the local device or the remote peer),
 * whether it has been seen both ways ("replied"), a small TCP state, and
 * for remote-opened flows the filter generation that last judged it; the
 * filter (filter.c) decides what those mean for a packet.
 *
 * The table is a fixed array of buckets of CONNTRACK_SLOTS entries, each
 * bucket with its own mutex: a lookup takes one uncontended lock and scans
 * eight 32-bit tags. Memory is fixed at creation (about 70 bytes per
 * flow slot). Inserting into a full bucket reclaims an expired flow, else
 * evicts the bucket's oldest flow never replied to (counted), else fails
 * with -ENOSPC: flows seen both ways are never evicted, so a flood of new
 * flows cannot cut established ones (Linux's early_drop does the same).
 *
 * Time is caller-supplied milliseconds on a monotonic clock. Thread-safe:
 * any number of threads may call any function at once. */
#ifndef KNIT_POLICY_CONNTRACK_H
#define KNIT_POLICY_CONNTRACK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONNTRACK_SLOTS 8
#define CONNTRACK_DEFAULT_MAX 16384

/* Timeouts (ms) after the last packet, by state. */
#define CT_TIMEOUT_UNREPLIED 30000u       /* UDP, ICMP, other: seen one way */
#define CT_TIMEOUT_REPLIED 180000u        /* UDP, ICMP, other: seen both ways */
#define CT_TIMEOUT_TCP_OPENING 120000u    /* TCP not yet seen both ways */
#define CT_TIMEOUT_TCP_ESTABLISHED 86400000u
#define CT_TIMEOUT_TCP_CLOSING 120000u    /* a FIN seen */
#define CT_TIMEOUT_TCP_CLOSED 10000u      /* RST, or FINs both ways */

/* Flow key. Addresses network order; IPv4 uses the first 4 bytes, the rest
 * zero. ICMP echo flows put the identifier in both ports; protocols without
 * ports leave them 0. Zero-fill before setting fields (it is hashed and
 * compared as bytes). */
struct ct_key {
	uint8_t raddr[16];
	uint8_t laddr[16];
	uint16_t rport, lport;
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t proto;
	uint8_t echo;   /* 1: the local device pings, 2: the peer pings, 0: not echo */
	uint8_t pad;
};

enum ct_dir {
	CT_DIR_IN,  /* remote → local */
	CT_DIR_OUT, /* local → remote */
};

enum ct_origin {
	CT_ORIGIN_LOCAL,  /* the local device opened it: replies always pass */
	CT_ORIGIN_REMOTE, /* the peer opened it: the policy must allow it */
};

/* What the filter stored about a flow. */
struct ct_flow {
	uint8_t origin;  /* enum ct_origin */
	bool denied;     /* REMOTE flow the rules of generation gen refuse */
	uint32_t gen;    /* rules generation that judged a REMOTE flow; 0: none yet */
};

/* TCP flag bits as on the wire. */
#define CT_TCP_FIN 0x01
#define CT_TCP_SYN 0x02
#define CT_TCP_RST 0x04
#define CT_TCP_ACK 0x10

struct conntrack_stats {
	uint64_t entries;   /* flows in the table now */
	uint64_t inserted;
	uint64_t expired;   /* reclaimed after their timeout */
	uint64_t evicted;   /* live unreplied flows pushed out by new ones */
	uint64_t full;      /* inserts refused: only replied flows left */
};

struct conntrack;

/* max_entries (0: the default) is rounded up to a power-of-two number of
 * buckets of CONNTRACK_SLOTS. NULL on ENOMEM. */
struct conntrack *conntrack_new(size_t max_entries);
void conntrack_free(struct conntrack *ct);

/* Finds k; on a hit refreshes it with a packet of proto flags tcp_flags
 * going dir (advancing the TCP state, marking it replied when dir differs
 * from the first packet's) and copies its verdict fields to *f. */
bool conntrack_find(struct conntrack *ct, const struct ct_key *k, enum ct_dir dir, uint8_t tcp_flags,
		    uint64_t now, struct ct_flow *f);
/* Finds k without refreshing it (ICMP errors about a flow). */
bool conntrack_peek(struct conntrack *ct, const struct ct_key *k, uint64_t now, struct ct_flow *f);
/* Adds k, opened by a packet going dir, with *f; if k is already there it
 * is refreshed as by conntrack_find() and its verdict fields left alone.
 * Returns 0 or -ENOSPC (no room; counted in stats.full). */
int conntrack_add(struct conntrack *ct, const struct ct_key *k, enum ct_dir dir, uint8_t tcp_flags, uint64_t now,
		  const struct ct_flow *f);
/* Records a new verdict on k's flow (if still there). */
void conntrack_judge(struct conntrack *ct, const struct ct_key *k, uint32_t gen, bool denied);
/* Reclaims every expired flow; returns how many. Callers run it now and
 * then (e.g. once a second) so expired flows do not hold table room. */
size_t conntrack_expire(struct conntrack *ct, uint64_t now);
void conntrack_stats(const struct conntrack *ct, struct conntrack_stats *st);
size_t conntrack_capacity(const struct conntrack *ct);

#endif
