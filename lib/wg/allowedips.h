/* Allowed-IPs table: maps IPv4/IPv6 prefixes to peers, longest-prefix match
 * (cryptokey routing, whitepaper section 2).
 *
 * One path-compressed binary trie per family, as in the Linux module: a
 * node exists only where a prefix ends or two branches split, so a lookup
 * visits at most (number of distinct prefix lengths on the path) nodes and
 * compares 64-bit words.
 *
 * A peer embeds a struct allowedips_peer; the table links that peer's
 * nodes through it, so removing or listing a peer's prefixes does not walk
 * the trie. Lookups return the embedded struct (use container_of).
 *
 * Locking: the table's rwlock guards both tries and every
 * allowedips_peer.nodes list. Lookups take it shared, changes exclusive;
 * the foreach callback runs with it held shared and must not change the
 * table. */
#ifndef KNIT_WG_ALLOWEDIPS_H
#define KNIT_WG_ALLOWEDIPS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct allowedips_node;

struct allowedips_peer {
	struct allowedips_node *nodes; /* guarded by the table's lock */
};

struct allowedips {
	struct allowedips_node *root4, *root6;
	pthread_rwlock_t lock;
	uint64_t seq; /* bumped on every change */
};

void allowedips_init(struct allowedips *t);
/* Frees every node; peers' lists become empty. */
void allowedips_free(struct allowedips *t);

/* family is AF_INET (addr: 4 bytes) or AF_INET6 (16 bytes), network order.
 * Host bits past cidr are ignored. Re-inserting an existing prefix moves it
 * to peer. Returns 0, -EINVAL (bad family/cidr) or -ENOMEM. */
int allowedips_insert(struct allowedips *t, int family, const void *addr, uint8_t cidr,
		      struct allowedips_peer *peer);
/* Removes the exact prefix if it belongs to peer (any peer if NULL).
 * Returns 0, -ENOENT or -EINVAL. */
int allowedips_remove(struct allowedips *t, int family, const void *addr, uint8_t cidr,
		      struct allowedips_peer *peer);
void allowedips_remove_by_peer(struct allowedips *t, struct allowedips_peer *peer);

/* Longest-prefix match of a destination (or source) address; NULL if none. */
struct allowedips_peer *allowedips_lookup(struct allowedips *t, int family, const void *addr);

typedef int (*allowedips_cb)(void *arg, int family, const uint8_t *addr, uint8_t cidr);
/* Calls cb for each of peer's prefixes (addr masked, network order) until
 * cb returns non-zero, which is returned. */
int allowedips_foreach(struct allowedips *t, struct allowedips_peer *peer, allowedips_cb cb, void *arg);

#endif
