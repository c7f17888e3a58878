#include "wg/pool.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct pool {
	pthread_mutex_t lock; /* guards free, nfree, large, large_free, nlarge_free, large_taken */
	uint8_t *slab;
	size_t nbufs;
	uint8_t **free;
	size_t nfree;

	uint8_t *large; /* NULL until first needed */
	size_t nlarge;
	uint8_t **large_free;
	size_t nlarge_free;
	unsigned long long large_taken; /* swaps that got one */
	bool large_failed; /* the large slab could not be made: don't retry per packet */
};

int pool_new(struct pool **out, size_t nbufs, size_t nlarge)
{
	struct pool *p = calloc(1, sizeof(*p));
	int ret = -ENOMEM;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	p->nbufs = nbufs;
	p->nlarge = nlarge;
	p->slab = aligned_alloc(64, nbufs * POOL_BUF_SIZE);
	p->free = calloc(nbufs, sizeof(*p->free));
	if (!p->slab || !p->free)
		goto out;
	for (size_t i = 0; i < nbufs; i++)
		p->free[i] = p->slab + (nbufs - 1 - i) * POOL_BUF_SIZE;
	p->nfree = nbufs;
	*out = p;
	ret = 0;
out:
	if (ret)
		pool_free(p);
	return ret;
}

void pool_free(struct pool *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p->free);
	free(p->slab);
	free(p->large_free);
	free(p->large);
	free(p);
}

size_t pool_get(struct pool *p, uint8_t **bufs, size_t n)
{
	size_t k;

	pthread_mutex_lock(&p->lock);
	k = n < p->nfree ? n : p->nfree;
	for (size_t i = 0; i < k; i++)
		bufs[i] = p->free[--p->nfree];
	pthread_mutex_unlock(&p->lock);
	return k;
}

static bool is_small(const struct pool *p, const uint8_t *buf)
{
	return buf >= p->slab && buf < p->slab + p->nbufs * POOL_BUF_SIZE;
}

void pool_put(struct pool *p, uint8_t *const *bufs, size_t n)
{
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < n; i++) {
		if (!bufs[i])
			continue;
		if (is_small(p, bufs[i])) {
			assert((size_t)(bufs[i] - p->slab) % POOL_BUF_SIZE == 0);
			assert(p->nfree < p->nbufs);
			p->free[p->nfree++] = bufs[i];
			continue;
		}
		assert(p->large && bufs[i] >= p->large && bufs[i] < p->large + p->nlarge * POOL_LARGE_SIZE &&
		       (size_t)(bufs[i] - p->large) % POOL_LARGE_SIZE == 0);
		assert(p->nlarge_free < p->nlarge);
		p->large_free[p->nlarge_free++] = bufs[i];
	}
	pthread_mutex_unlock(&p->lock);
}

/* Caller holds p->lock. Untouched pages of the slab cost no memory. */
static bool make_large(struct pool *p)
{
	if (p->large)
		return true;
	if (p->large_failed || !p->nlarge)
		return false;
	p->large = aligned_alloc(64, p->nlarge * POOL_LARGE_SIZE);
	p->large_free = calloc(p->nlarge, sizeof(*p->large_free));
	if (!p->large || !p->large_free) {
		free(p->large);
		free(p->large_free);
		p->large = NULL;
		p->large_free = NULL;
		p->large_failed = true;
		return false;
	}
	for (size_t i = 0; i < p->nlarge; i++)
		p->large_free[i] = p->large + (p->nlarge - 1 - i) * POOL_LARGE_SIZE;
	p->nlarge_free = p->nlarge;
	return true;
}

bool pool_swap_large(struct pool *p, uint8_t **buf)
{
	bool ok = false;

	pthread_mutex_lock(&p->lock);
	if (make_large(p) && p->nlarge_free) {
		assert(is_small(p, *buf) && p->nfree < p->nbufs);
		p->free[p->nfree++] = *buf;
		*buf = p->large_free[--p->nlarge_free];
		p->large_taken++;
		ok = true;
	}
	pthread_mutex_unlock(&p->lock);
	return ok;
}

/* *since once the wait has been given up. */
#define GAVE_UP UINT64_MAX

int pool_large_wait(uint64_t *since, uint64_t now)
{
	if (*since == GAVE_UP)
		return -ENOMEM;
	if (!*since) {
		*since = now ? now : 1;
		return -ENOBUFS;
	}
	if (now - *since < POOL_LARGE_WAIT_MS)
		return -ENOBUFS;
	*since = GAVE_UP;
	return -ENOMEM;
}

size_t pool_available(struct pool *p)
{
	size_t n;

	pthread_mutex_lock(&p->lock);
	n = p->nfree;
	pthread_mutex_unlock(&p->lock);
	return n;
}

size_t pool_size(const struct pool *p)
{
	return p->nbufs;
}

size_t pool_large_available(struct pool *p)
{
	size_t n;

	pthread_mutex_lock(&p->lock);
	n = p->nlarge_free;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void pool_large_stats(struct pool *p, struct pool_large_stats *out)
{
	pthread_mutex_lock(&p->lock);
	out->made = p->large ? p->nlarge : 0;
	out->in_use = p->large ? p->nlarge - p->nlarge_free : 0;
	out->taken = p->large_taken;
	pthread_mutex_unlock(&p->lock);
}
