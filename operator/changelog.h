/* The coordination server's change log and delta cache: pure (no I/O, no
 * httpd, no API server), so table-testable.
 *
 * Every change to what peers see is one entry: an upsert of a node's
 * current record text, the removal of a node key, or new tailnet-wide
 * members (the relay map) that every stream of a tailnet gets in its next
 * delta. A map stream is a
 * cursor into the log: it pulls the entries past its cursor, skipping the
 * ones a later change made stale (so a peer that changed several times
 * appears once, in its latest form), as one record of at most about
 * record_bytes of peers. A full netmap is the same walk from the start,
 * in pieces marked "more". The work per change is one record text; a
 * reader that is slow gets fewer, larger deltas instead of a queue.
 *
 * A node's upsert entry is live while node->seq is the entry's seq; the
 * log holds a reference on the node (refs) per entry, given back through
 * ops.unref. The log is compacted when mostly stale; a removal is kept
 * until every cursor (ops.oldest) has passed it. */
#ifndef KNIT_OPERATOR_CHANGELOG_H
#define KNIT_OPERATOR_CHANGELOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* What the log knows of a node; the coordination server embeds it. */
struct changelog_node {
	char *name; /* the Device */
	char *tailnet;
	char *peer; /* the record peers see (JSON text); NULL: not a peer */
	size_t peer_len;
	char node_key[80]; /* the key in peer, for its removal */
	uint64_t seq; /* seq of its live entry; 0: none */
	unsigned refs; /* entries pointing here */
};

struct changelog_removal {
	char *tailnet, *device;
	char node_key[80];
};

/* Tailnet-wide members, as JSON text for a delta: "relayMap":{...}. */
struct changelog_fields {
	char *tailnet;
	char *text;
	size_t len;
};

struct changelog_entry {
	uint64_t seq;
	struct changelog_node *n; /* an upsert of n's current record, or NULL: */
	struct changelog_removal *rm; /* a removal, or NULL: */
	struct changelog_fields *f; /* tailnet-wide members, or NULL: a mark (nothing) */
};

struct changelog_ops {
	/* An entry let go of n (n->refs is already one less). */
	void (*unref)(struct changelog_node *n, void *arg);
	/* The lowest seq some reader still needs (a cursor, or where a full
	 * netmap under way began); the log's seq if none. */
	uint64_t (*oldest)(void *arg);
	void *arg;
};

#define CHANGELOG_CACHE_WHO 8

struct changelog {
	struct changelog_ops ops;
	uint64_t seq; /* the last entry's */
	struct changelog_entry *log;
	size_t len, cap, live;
	/* The last delta built: a change reaches thousands of streams at the
	 * same cursor, built once. Valid while the log has not grown. */
	struct {
		bool valid;
		uint64_t from, upto, seq;
		char tailnet[254];
		struct changelog_entry who[CHANGELOG_CACHE_WHO];
		size_t nwho;
		struct buf text;
	} delta;
};

/* What one stream adds to its next delta besides the log's entries (a
 * change of its access policy view: its new packetFilter, the peers it
 * now sees, the keys of those it no longer sees), as JSON text: peers is
 * comma-separated peer records, removes comma-separated quoted keys,
 * fields members to append (",\"packetFilter\":[...]"). Any may be empty. */
struct changelog_extra {
	const char *peers, *removes, *fields;
	size_t peers_len, removes_len, fields_len;
};

/* One reader (a map stream). */
struct changelog_cursor {
	const char *device, *tailnet;
	uint64_t cursor; /* entries up to this seq are sent */
	uint64_t sync_from; /* the log's seq when the full netmap began */
	bool syncing; /* a full netmap is under way (records carry "more") */
	bool header_sent; /* its first record ("type":"full") is out */
	/* NULL: every peer of the tailnet. Else only the peers it says are
	 * visible go into this stream's records (an access policy: peers it
	 * hides are not sent at all), and the shared delta cache is neither
	 * used nor filled. Visibility changes restart the stream's full
	 * netmap (changelog_sync), which replaces the agent's peer set. */
	bool (*visible)(void *arg, const char *device);
	void *visible_arg;
	/* Set by the caller around changelog_next(): merged into the next
	 * delta (ignored while syncing; the delta cache is then skipped). The
	 * record needs a log entry past the cursor for its seq: see
	 * changelog_mark(). */
	const struct changelog_extra *extra;
};

/* What changelog_next() built, for changelog_commit() once it is sent. */
struct changelog_step {
	uint64_t from, upto;
	bool more, cacheable, cached;
	struct changelog_entry who[CHANGELOG_CACHE_WHO];
	size_t nwho;
};

void changelog_init(struct changelog *l, const struct changelog_ops *ops);
/* Lets go of every entry (ops.unref for each node). */
void changelog_free(struct changelog *l);

/* Appends an upsert of n's current record (n->peer set by the caller),
 * making its earlier entry stale. 0 or -ENOMEM. */
int changelog_upsert(struct changelog *l, struct changelog_node *n);
/* n stops being a peer: frees n->peer, its entry goes stale, and a removal
 * of its key is appended. 0 (also when n was no peer) or -ENOMEM. */
int changelog_unpublish(struct changelog *l, struct changelog_node *n);
/* Appends tailnet-wide members (text: "key":value[,"key":value...], copied)
 * for every stream of tailnet: each gets them in its next delta (the
 * latest, when several passed unread); a full netmap under way that began
 * before them gets them in a later piece. Kept until every reader passed
 * them. 0 or -ENOMEM. */
int changelog_tailnet_fields(struct changelog *l, const char *tailnet, const char *text);
/* Appends a mark: an entry that carries nothing, so that every cursor
 * has an entry to pass and its next record a seq its reader has not seen
 * (a delta made only of a changelog_extra). 0 or -ENOMEM. */
int changelog_mark(struct changelog *l);
/* Drops stale entries and the removals every reader has passed. */
void changelog_compact(struct changelog *l);

/* Restarts cur's full netmap. */
void changelog_sync(struct changelog *l, struct changelog_cursor *cur);
/* Anything for cur to pull? */
bool changelog_pending(const struct changelog *l, const struct changelog_cursor *cur);

/* Builds cur's next record into rec: a full netmap's piece or a delta
 * with at most about record_bytes of peers and removals. me is cur's own
 * node (its "self"), full_fields the text that follows "self" in a full
 * netmap (",\"dns\":{...},..."). Returns 1 with *step, 0 if there is
 * nothing to send (cur may have moved past entries of other tailnets), or
 * -ENOMEM. cur moves on only with changelog_commit(). */
int changelog_next(struct changelog *l, struct changelog_cursor *cur, const struct changelog_node *me,
		   const char *full_fields, size_t record_bytes, struct buf *rec, struct changelog_step *step);
/* rec was sent: cur moves past it, and a delta every stream of the tailnet
 * at the same cursor gets next is kept. */
void changelog_commit(struct changelog *l, struct changelog_cursor *cur, const struct changelog_step *step,
		      const struct buf *rec);

#endif
