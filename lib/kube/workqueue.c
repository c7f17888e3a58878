#include "kube/workqueue.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_BASE_MS 5u
#define DEFAULT_MAX_MS 300000u
#define NO_HEAP SIZE_MAX

/* One key the queue knows about. It lives while any of its states holds:
 * queued (dirty && !processing), processing, delayed (heap_idx != NO_HEAP),
 * or remembered backoff (requeues > 0). */
struct item {
	char *key;
	size_t keylen;
	uint32_t hash;
	struct item *hnext; /* hash chain */
	struct item *qnext; /* FIFO of ready keys */
	bool dirty; /* needs processing */
	bool processing; /* a worker holds it */
	unsigned requeues;
	uint64_t due_ms; /* when delayed */
	size_t heap_idx;
};

struct workqueue {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* on CLOCK_MONOTONIC: ready keys, heap head, shutdown */
	uint32_t base_ms, max_ms;

	/* Everything below is guarded by lock. */
	struct item **buckets;
	size_t nbuckets, nitems;
	struct item *qhead, *qtail;
	uint64_t depth, processing;
	struct item **heap; /* min-heap on due_ms */
	size_t heap_len, heap_cap;
	uint64_t adds, retries;
	bool shutting_down;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t hash_key(const char *key, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)key[i]) * 16777619u;
	return h;
}

static void assert_locked(struct workqueue *q)
{
#ifndef NDEBUG
	/* Catches a caller that forgot the lock (the trylock would succeed);
	 * it cannot tell our thread from another, which is all it costs. */
	assert(pthread_mutex_trylock(&q->lock) == EBUSY);
#else
	(void)q;
#endif
}

static struct item *find(struct workqueue *q, const char *key)
{
	size_t len = strlen(key);
	uint32_t h = hash_key(key, len);

	assert_locked(q);
	for (struct item *it = q->buckets[h & (q->nbuckets - 1)]; it; it = it->hnext)
		if (it->hash == h && it->keylen == len && memcmp(it->key, key, len) == 0)
			return it;
	return NULL;
}

static void rehash(struct workqueue *q)
{
	size_t n = q->nbuckets * 2;
	struct item **b = calloc(n, sizeof(*b));

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < q->nbuckets; i++) {
		struct item *it = q->buckets[i], *next;
		for (; it; it = next) {
			next = it->hnext;
			it->hnext = b[it->hash & (n - 1)];
			b[it->hash & (n - 1)] = it;
		}
	}
	free(q->buckets);
	q->buckets = b;
	q->nbuckets = n;
}

static struct item *find_or_create(struct workqueue *q, const char *key)
{
	struct item *it = find(q, key);
	size_t len;

	if (it)
		return it;
	len = strlen(key);
	it = calloc(1, sizeof(*it));
	if (!it)
		return NULL;
	it->key = malloc(len + 1);
	if (!it->key) {
		free(it);
		return NULL;
	}
	memcpy(it->key, key, len + 1);
	it->keylen = len;
	it->hash = hash_key(key, len);
	it->heap_idx = NO_HEAP;
	if (q->nitems >= q->nbuckets)
		rehash(q);
	it->hnext = q->buckets[it->hash & (q->nbuckets - 1)];
	q->buckets[it->hash & (q->nbuckets - 1)] = it;
	q->nitems++;
	return it;
}

/* Frees the item once no state keeps it. */
static void maybe_release(struct workqueue *q, struct item *it)
{
	struct item **pp;

	if (it->dirty || it->processing || it->requeues || it->heap_idx != NO_HEAP)
		return;
	for (pp = &q->buckets[it->hash & (q->nbuckets - 1)]; *pp != it; pp = &(*pp)->hnext)
		;
	*pp = it->hnext;
	q->nitems--;
	free(it->key);
	free(it);
}

static void push_ready(struct workqueue *q, struct item *it)
{
	it->qnext = NULL;
	if (q->qtail)
		q->qtail->qnext = it;
	else
		q->qhead = it;
	q->qtail = it;
	q->depth++;
	pthread_cond_signal(&q->cond);
}

static struct item *pop_ready(struct workqueue *q)
{
	struct item *it = q->qhead;

	if (!it)
		return NULL;
	q->qhead = it->qnext;
	if (!q->qhead)
		q->qtail = NULL;
	it->qnext = NULL;
	q->depth--;
	return it;
}

/* client-go's Add: dirty keys are not queued twice, and a key being
 * processed is only marked; workqueue_done() queues it again. */
static void add_locked(struct workqueue *q, struct item *it)
{
	if (it->dirty)
		return;
	it->dirty = true;
	q->adds++;
	if (!it->processing)
		push_ready(q, it);
}

/* ---- delay heap ---- */

static void heap_swap(struct workqueue *q, size_t a, size_t b)
{
	struct item *t = q->heap[a];

	q->heap[a] = q->heap[b];
	q->heap[b] = t;
	q->heap[a]->heap_idx = a;
	q->heap[b]->heap_idx = b;
}

static void heap_up(struct workqueue *q, size_t i)
{
	while (i > 0 && q->heap[(i - 1) / 2]->due_ms > q->heap[i]->due_ms) {
		heap_swap(q, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct workqueue *q, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < q->heap_len && q->heap[l]->due_ms < q->heap[m]->due_ms)
			m = l;
		if (r < q->heap_len && q->heap[r]->due_ms < q->heap[m]->due_ms)
			m = r;
		if (m == i)
			return;
		heap_swap(q, i, m);
		i = m;
	}
}

static int heap_reserve(struct workqueue *q)
{
	struct item **h;
	size_t cap;

	if (q->heap_len < q->heap_cap)
		return 0;
	cap = q->heap_cap ? q->heap_cap * 2 : 16;
	h = realloc(q->heap, cap * sizeof(*h));
	if (!h)
		return -ENOMEM;
	q->heap = h;
	q->heap_cap = cap;
	return 0;
}

static struct item *heap_pop(struct workqueue *q)
{
	struct item *it = q->heap[0];

	q->heap_len--;
	if (q->heap_len > 0) {
		q->heap[0] = q->heap[q->heap_len];
		q->heap[0]->heap_idx = 0;
		heap_down(q, 0);
	}
	it->heap_idx = NO_HEAP;
	return it;
}

/* Moves every key whose delay has passed to the ready queue. */
static void promote_due(struct workqueue *q, uint64_t now)
{
	while (q->heap_len > 0 && q->heap[0]->due_ms <= now)
		add_locked(q, heap_pop(q));
}

static int add_after_locked(struct workqueue *q, const char *key, uint64_t delay_ms)
{
	struct item *it;
	uint64_t due;

	if (q->shutting_down)
		return 0;
	if (heap_reserve(q))
		return -ENOMEM;
	it = find_or_create(q, key);
	if (!it)
		return -ENOMEM;
	if (delay_ms == 0) {
		add_locked(q, it);
		return 0;
	}
	due = mono_ms() + delay_ms;
	if (it->heap_idx != NO_HEAP) {
		/* client-go keeps the earliest of two pending delays. */
		if (due >= it->due_ms)
			return 0;
		it->due_ms = due;
		heap_up(q, it->heap_idx);
	} else {
		it->due_ms = due;
		it->heap_idx = q->heap_len;
		q->heap[q->heap_len++] = it;
		heap_up(q, it->heap_idx);
	}
	/* A sooner head means waiting workers must shorten their sleep. */
	if (it->heap_idx == 0)
		pthread_cond_broadcast(&q->cond);
	return 0;
}

/* ---- API ---- */

struct workqueue *workqueue_new(const struct workqueue_opts *opts)
{
	struct workqueue *q = calloc(1, sizeof(*q));
	pthread_condattr_t ca;
	bool cond_ok = false;

	if (!q)
		return NULL;
	q->base_ms = opts && opts->base_delay_ms ? opts->base_delay_ms : DEFAULT_BASE_MS;
	q->max_ms = opts && opts->max_delay_ms ? opts->max_delay_ms : DEFAULT_MAX_MS;
	q->nbuckets = 64;
	q->buckets = calloc(q->nbuckets, sizeof(*q->buckets));
	if (!q->buckets)
		goto fail;
	if (pthread_mutex_init(&q->lock, NULL))
		goto fail;
	if (pthread_condattr_init(&ca) == 0) {
		cond_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
			  pthread_cond_init(&q->cond, &ca) == 0;
		pthread_condattr_destroy(&ca);
	}
	if (!cond_ok) {
		pthread_mutex_destroy(&q->lock);
		goto fail;
	}
	return q;
fail:
	free(q->buckets);
	free(q);
	return NULL;
}

void workqueue_free(struct workqueue *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < q->nbuckets; i++) {
		struct item *it = q->buckets[i], *next;
		for (; it; it = next) {
			next = it->hnext;
			free(it->key);
			free(it);
		}
	}
	free(q->buckets);
	free(q->heap);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

int workqueue_add(struct workqueue *q, const char *key)
{
	int err;

	pthread_mutex_lock(&q->lock);
	err = add_after_locked(q, key, 0);
	pthread_mutex_unlock(&q->lock);
	return err;
}

int workqueue_add_after(struct workqueue *q, const char *key, uint64_t delay_ms)
{
	int err;

	pthread_mutex_lock(&q->lock);
	err = add_after_locked(q, key, delay_ms);
	pthread_mutex_unlock(&q->lock);
	return err;
}

static uint64_t backoff_ms(const struct workqueue *q, unsigned requeues)
{
	uint64_t d = q->base_ms;

	/* base * 2^requeues, saturating at the cap. */
	for (unsigned i = 0; i < requeues && d < q->max_ms; i++)
		d *= 2;
	return d < q->max_ms ? d : q->max_ms;
}

int workqueue_add_rate_limited(struct workqueue *q, const char *key)
{
	struct item *it;
	uint64_t delay;
	int err;

	pthread_mutex_lock(&q->lock);
	if (q->shutting_down) {
		err = 0;
		goto out;
	}
	it = find_or_create(q, key);
	if (!it) {
		err = -ENOMEM;
		goto out;
	}
	/* Counted before the add, so that even a failed add leaves the item
	 * held by its requeues and not orphaned. */
	delay = backoff_ms(q, it->requeues);
	if (it->requeues < UINT32_MAX)
		it->requeues++;
	q->retries++;
	err = add_after_locked(q, key, delay);
out:
	pthread_mutex_unlock(&q->lock);
	return err;
}

bool workqueue_get(struct workqueue *q, char **key)
{
	struct item *it = NULL;
	char *copy = NULL;

	*key = NULL;
	pthread_mutex_lock(&q->lock);
	for (;;) {
		promote_due(q, mono_ms());
		if (q->qhead) {
			copy = malloc(q->qhead->keylen + 1);
			if (copy) {
				it = pop_ready(q);
				break;
			}
			/* Out of memory: leave the key queued and retry soon. */
		} else if (q->shutting_down) {
			break;
		}
		if (q->heap_len > 0 || (q->qhead && !copy)) {
			uint64_t due = q->qhead ? mono_ms() + 10 : q->heap[0]->due_ms;
			struct timespec ts = { .tv_sec = (time_t)(due / 1000),
					       .tv_nsec = (long)(due % 1000) * 1000000L };
			pthread_cond_timedwait(&q->cond, &q->lock, &ts);
		} else {
			pthread_cond_wait(&q->cond, &q->lock);
		}
	}
	if (it) {
		memcpy(copy, it->key, it->keylen + 1);
		it->dirty = false;
		it->processing = true;
		q->processing++;
		*key = copy;
	}
	pthread_mutex_unlock(&q->lock);
	return it != NULL;
}

void workqueue_done(struct workqueue *q, const char *key)
{
	struct item *it;

	pthread_mutex_lock(&q->lock);
	it = find(q, key);
	if (it && it->processing) {
		it->processing = false;
		q->processing--;
		if (it->dirty)
			push_ready(q, it);
		else
			maybe_release(q, it);
	}
	pthread_mutex_unlock(&q->lock);
}

void workqueue_forget(struct workqueue *q, const char *key)
{
	struct item *it;

	pthread_mutex_lock(&q->lock);
	it = find(q, key);
	if (it) {
		it->requeues = 0;
		maybe_release(q, it);
	}
	pthread_mutex_unlock(&q->lock);
}

unsigned workqueue_requeues(struct workqueue *q, const char *key)
{
	struct item *it;
	unsigned n;

	pthread_mutex_lock(&q->lock);
	it = find(q, key);
	n = it ? it->requeues : 0;
	pthread_mutex_unlock(&q->lock);
	return n;
}

uint64_t workqueue_backoff_ms(struct workqueue *q, const char *key)
{
	struct item *it;
	uint64_t d;

	pthread_mutex_lock(&q->lock);
	it = find(q, key);
	d = backoff_ms(q, it ? it->requeues : 0);
	pthread_mutex_unlock(&q->lock);
	return d;
}

uint64_t workqueue_len(struct workqueue *q)
{
	uint64_t n;

	pthread_mutex_lock(&q->lock);
	promote_due(q, mono_ms());
	n = q->depth;
	pthread_mutex_unlock(&q->lock);
	return n;
}

void workqueue_stats(struct workqueue *q, struct workqueue_stats *out)
{
	pthread_mutex_lock(&q->lock);
	promote_due(q, mono_ms());
	*out = (struct workqueue_stats){
		.depth = q->depth,
		.processing = q->processing,
		.delayed = q->heap_len,
		.adds = q->adds,
		.retries = q->retries,
	};
	pthread_mutex_unlock(&q->lock);
}

void workqueue_shutdown(struct workqueue *q)
{
	pthread_mutex_lock(&q->lock);
	q->shutting_down = true;
	while (q->heap_len > 0)
		maybe_release(q, heap_pop(q));
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

bool workqueue_shutting_down(struct workqueue *q)
{
	bool s;

	pthread_mutex_lock(&q->lock);
	s = q->shutting_down;
	pthread_mutex_unlock(&q->lock);
	return s;
}
