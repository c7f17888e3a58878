#include "controller.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "kube/workqueue.h"
#include "log.h"
#include "metrics.h"

struct controller {
	struct operator *op;
	char kind[32];
	reconcile_fn fn;
	struct workqueue *queue;
	pthread_t *threads;
	int nworkers;
	int started;
	atomic_bool stopping;

	atomic_ulong reconciles, errors, requeues;
	atomic_ullong busy_us;
	struct metric *m_ok, *m_err, *m_seconds, *m_depth;
};

static void update_depth(struct controller *c)
{
	metrics_set(c->m_depth, (double)workqueue_len(c->queue));
}

struct controller *controller_new(struct operator *op, const char *kind, reconcile_fn fn, int workers)
{
	struct controller *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->op = op;
	snprintf(c->kind, sizeof(c->kind), "%s", kind);
	c->fn = fn;
	c->nworkers = workers > 0 ? workers : 1;
	c->queue = workqueue_new(&(struct workqueue_opts){ .base_delay_ms = 50, .max_delay_ms = 60000 });
	c->threads = calloc((size_t)c->nworkers, sizeof(*c->threads));
	if (op->m_reconciles) {
		c->m_ok = METRICS_WITH(op->m_reconciles, c->kind, "success");
		c->m_err = METRICS_WITH(op->m_reconciles, c->kind, "error");
	}
	if (op->m_reconcile_seconds)
		c->m_seconds = METRICS_WITH(op->m_reconcile_seconds, c->kind);
	if (op->m_queue_depth)
		c->m_depth = METRICS_WITH(op->m_queue_depth, c->kind);
	if (!c->queue || !c->threads) {
		controller_free(c);
		return NULL;
	}
	return c;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void *worker(void *arg)
{
	struct controller *c = arg;
	char *key;

	while (workqueue_get(c->queue, &key)) {
		char *copy = strdup(key), *ns, *name;
		uint64_t requeue_ms = 0, t0 = mono_us();
		int err;

		if (c->stopping) {
			workqueue_done(c->queue, key);
			free(copy);
			free(key);
			continue;
		}
		if (!copy) {
			workqueue_add_rate_limited(c->queue, key);
			workqueue_done(c->queue, key);
			free(key);
			continue;
		}
		update_depth(c);
		kube_key_split(copy, &ns, &name);
		err = c->fn(c->op, ns, name, &requeue_ms);
		uint64_t took = mono_us() - t0;
		c->busy_us += took;
		c->reconciles++;
		metrics_inc(err ? c->m_err : c->m_ok);
		metrics_observe(c->m_seconds, (double)took / 1e6);
		if (err) {
			c->errors++;
			log_warn("reconcile failed, will retry", "kind=%s key=%s err=%d backoff_ms=%llu", c->kind, key,
				 err, (unsigned long long)workqueue_backoff_ms(c->queue, key));
			workqueue_add_rate_limited(c->queue, key);
		} else {
			workqueue_forget(c->queue, key);
			if (requeue_ms) {
				c->requeues++;
				workqueue_add_after(c->queue, key, requeue_ms);
			}
		}
		workqueue_done(c->queue, key);
		free(copy);
		free(key);
	}
	return NULL;
}

int controller_start(struct controller *c)
{
	for (; c->started < c->nworkers; c->started++) {
		int err = pthread_create(&c->threads[c->started], NULL, worker, c);
		if (err)
			return -err;
	}
	return 0;
}

void controller_shutdown(struct controller *c)
{
	c->stopping = true;
	workqueue_shutdown(c->queue);
}

void controller_join(struct controller *c)
{
	for (int i = 0; i < c->started; i++)
		pthread_join(c->threads[i], NULL);
	c->started = 0;
}

void controller_free(struct controller *c)
{
	if (!c)
		return;
	if (c->started) {
		controller_shutdown(c);
		controller_join(c);
	}
	workqueue_free(c->queue);
	free(c->threads);
	free(c);
}

void controller_enqueue_key(struct controller *c, const char *key)
{
	if (workqueue_add(c->queue, key))
		log_error("cannot queue key", "kind=%s key=%s", c->kind, key);
	update_depth(c);
}

void controller_enqueue_key_after(struct controller *c, const char *key, uint64_t delay_ms)
{
	if (workqueue_add_after(c->queue, key, delay_ms))
		log_error("cannot queue key", "kind=%s key=%s", c->kind, key);
	update_depth(c);
}

void controller_enqueue(struct controller *c, const struct json *obj)
{
	char key[512];

	if (kube_key(obj, key, sizeof(key)) == 0)
		controller_enqueue_key(c, key);
}

static void on_add(struct informer *inf, const struct json *obj, void *arg) { controller_enqueue(arg, obj); }
static void on_update(struct informer *inf, const struct json *old, const struct json *obj, void *arg)
{
	controller_enqueue(arg, obj);
}
static void on_delete(struct informer *inf, const struct json *obj, void *arg) { controller_enqueue(arg, obj); }

const struct informer_handlers controller_handlers = { .on_add = on_add, .on_update = on_update, .on_delete = on_delete };

void controller_stats(struct controller *c, struct controller_stats *out)
{
	out->reconciles = c->reconciles;
	out->errors = c->errors;
	out->requeues = c->requeues;
	out->depth = workqueue_len(c->queue);
	out->seconds = (double)c->busy_us / 1e6;
}

const char *controller_kind(const struct controller *c)
{
	return c->kind;
}
