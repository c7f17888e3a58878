/* A work queue for reconciler worker threads, with client-go's semantics:
 *
 * - Keys ("namespace/name") are deduplicated: a key waiting in the queue is
 *   not queued twice, however often it is added.
 * - A key is handed to one worker at a time. Adding a key that a worker is
 *   processing marks it dirty; it is queued again when that worker calls
 *   workqueue_done(), so the change is not lost and no two workers ever
 *   reconcile the same object at once.
 * - workqueue_add_after() holds a key back until its delay passes (the
 *   earliest of several pending delays for one key wins).
 * - workqueue_add_rate_limited() delays a key by a per-key exponential
 *   backoff (base, 2 x base, 4 x base, ... capped) that grows with each call
 *   until workqueue_forget() resets it, typically after a successful
 *   reconcile.
 * - workqueue_shutdown() drains: workers still get the keys already queued,
 *   then workqueue_get() returns false to every caller. Delayed keys are
 *   dropped and adds after shutdown are ignored.
 *
 * Every function is thread-safe. */
#ifndef KNIT_KUBE_WORKQUEUE_H
#define KNIT_KUBE_WORKQUEUE_H

#include <stdbool.h>
#include <stdint.h>

struct workqueue;

struct workqueue_opts {
	uint32_t base_delay_ms; /* 0: 5 ms */
	uint32_t max_delay_ms; /* 0: 300 s */
};

struct workqueue_stats {
	uint64_t depth; /* keys ready for a worker */
	uint64_t processing; /* keys a worker holds */
	uint64_t delayed; /* keys waiting for their delay */
	uint64_t adds; /* workqueue_add*() calls accepted, for a rate metric */
	uint64_t retries; /* workqueue_add_rate_limited() calls */
};

/* opts may be NULL for the defaults. NULL on ENOMEM. */
struct workqueue *workqueue_new(const struct workqueue_opts *opts);
/* No thread may be inside or still call a workqueue function. */
void workqueue_free(struct workqueue *q);

/* All return 0, or -ENOMEM (the key is then not queued). */
int workqueue_add(struct workqueue *q, const char *key);
int workqueue_add_after(struct workqueue *q, const char *key, uint64_t delay_ms);
int workqueue_add_rate_limited(struct workqueue *q, const char *key);

/* Blocks until a key is ready, then hands it to the caller (*key is a
 * malloc'd copy the caller frees) and marks it processing until
 * workqueue_done(). Returns false, with *key NULL, once the queue is shut
 * down and drained. */
bool workqueue_get(struct workqueue *q, char **key);
void workqueue_done(struct workqueue *q, const char *key);

/* Resets the key's backoff. */
void workqueue_forget(struct workqueue *q, const char *key);
/* How many times the key went through workqueue_add_rate_limited() since
 * it was last forgotten. */
unsigned workqueue_requeues(struct workqueue *q, const char *key);
/* The delay the next workqueue_add_rate_limited(key) will use. */
uint64_t workqueue_backoff_ms(struct workqueue *q, const char *key);

/* Keys ready for a worker (the depth metric). */
uint64_t workqueue_len(struct workqueue *q);
void workqueue_stats(struct workqueue *q, struct workqueue_stats *out);

/* Wakes every waiting worker; see the drain semantics above. */
void workqueue_shutdown(struct workqueue *q);
bool workqueue_shutting_down(struct workqueue *q);

#endif
