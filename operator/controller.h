/* A controller: a work queue of object keys fed by informer events, and
 * worker threads running one kind's reconcile function on them. A key is
 * reconciled by one worker at a time; errors requeue with per-key
 * exponential backoff; reconcilers may ask to be requeued after a delay
 * (expiry times, inactivity timeouts). */
#ifndef KNIT_OPERATOR_CONTROLLER_H
#define KNIT_OPERATOR_CONTROLLER_H

#include <stdint.h>

#include "operator.h"

struct json;

struct controller *controller_new(struct operator *op, const char *kind, reconcile_fn fn, int workers);
/* Shuts down and joins the workers if still running, then frees. */
void controller_free(struct controller *c);
int controller_start(struct controller *c);
/* Non-blocking: workers finish the key they hold and skip the rest. Safe
 * on the loop thread. */
void controller_shutdown(struct controller *c);
/* Blocks until every worker has exited. Never on the loop thread: a worker
 * may be waiting on the loop for an API call. */
void controller_join(struct controller *c);

void controller_enqueue(struct controller *c, const struct json *obj);
void controller_enqueue_key(struct controller *c, const char *key);
/* Queues key delay_ms from now; a key already waiting keeps the sooner
 * time, so a burst of events makes one reconcile. */
void controller_enqueue_key_after(struct controller *c, const char *key, uint64_t delay_ms);

/* Informer handlers that enqueue the object itself (arg = controller). */
extern const struct informer_handlers controller_handlers;

struct controller_stats {
	unsigned long reconciles, errors, requeues;
	uint64_t depth;
	double seconds; /* total reconcile time */
};
void controller_stats(struct controller *c, struct controller_stats *out);
const char *controller_kind(const struct controller *c);

#endif
