/* Leader election on a coordination.k8s.io/v1 Lease, with the semantics of
 * client-go's leaderelection, running on the event loop (asynchronous
 * requests only; the loop never blocks).
 *
 * - A candidate tries every retry period: it creates the Lease if absent,
 *   and takes it over only when the holder is empty or the holder's record
 *   has not changed for the record's leaseDurationSeconds as measured by
 *   OUR monotonic clock since we last saw it change. The other node's
 *   renewTime is never compared with our clock.
 * - Every write is a PUT carrying the resourceVersion just read (or a
 *   create, which fails if the object exists), so of two candidates racing
 *   for one Lease at most one write succeeds.
 * - The leader renews every retry period. If no renewal has succeeded within
 *   renew_deadline (counted from the start of the last successful one), it
 *   steps down (on_stopped_leading) before any other candidate can take
 *   over, which needs lease_duration > renew_deadline. It then keeps
 *   competing as a candidate; callers that prefer to exit can do so from
 *   on_stopped_leading.
 * - lease_release() stops leading first (on_stopped_leading), then, if the
 *   Lease still names us, writes an empty holder with leaseDurationSeconds
 *   1 so that a successor takes over on its next try.
 *
 * Loop thread only, except lease_is_leader() and lease_stats(), which any
 * thread may call. Callbacks run on the loop thread; they may call
 * lease_release() but not lease_free(). */
#ifndef KNIT_KUBE_LEASE_H
#define KNIT_KUBE_LEASE_H

#include <stdbool.h>
#include <stdint.h>

struct json;
struct kube_client;
struct lease;

typedef void (*lease_cb)(struct lease *l, void *arg);
typedef void (*lease_leader_cb)(struct lease *l, const char *identity, void *arg);

struct lease_config {
	const char *namespace;
	const char *name;
	const char *identity; /* NULL: "<hostname>_<pid>" */
	uint32_t lease_duration_ms; /* 0: 15 s; written rounded up to seconds */
	uint32_t renew_deadline_ms; /* 0: 10 s */
	uint32_t retry_period_ms; /* 0: 2 s */
	lease_cb on_started_leading;
	lease_cb on_stopped_leading;
	/* Every change of the holder we observe, ourselves included; not
	 * called for an empty (released) holder. */
	lease_leader_cb on_new_leader;
	void *arg;
};

struct lease_stats {
	uint64_t transitions; /* holder changes observed */
	uint64_t acquisitions; /* times we started leading */
	uint64_t step_downs; /* times we stopped leading (deadline or release) */
	uint64_t failures; /* attempts that failed: transport, API errors, lost races */
};

/* Copies cfg. -EINVAL unless lease_duration > renew_deadline > 1.2 x
 * retry_period (client-go's rule) and namespace and name are set; -ENOMEM. */
int lease_new(struct kube_client *c, const struct lease_config *cfg, struct lease **out);
/* Frees at once; a request still in flight is orphaned and its reply
 * ignored. Does not release the Lease: call lease_release() first. */
void lease_free(struct lease *l);

/* Starts competing; the first try is immediate. -EALREADY if started. */
int lease_start(struct lease *l);
/* Final: stops competing, steps down, releases the Lease if we hold it and
 * then calls done(l, arg), never from inside this call. */
void lease_release(struct lease *l, lease_cb done, void *arg);

bool lease_is_leader(const struct lease *l);
const char *lease_identity(const struct lease *l);
/* The holder we last observed; "" when none. */
const char *lease_leader(const struct lease *l);
/* The Lease as last read or written (NULL before the first success); owned
 * by l and replaced on every attempt. */
const struct json *lease_object(const struct lease *l);
void lease_stats(const struct lease *l, struct lease_stats *out);

#endif
