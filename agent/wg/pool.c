#include "wg/pool.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct pool {
	pthread_mutex_t lock; /* guards free and nfree */
	uint8_t *slab;
	size_t nbufs;
	uint8_t **free;
	size_t nfree;
};

int pool_new(struct pool **out, size_t nbufs)
{
	struct pool *p = calloc(1, sizeof(*p));
	int ret = -ENOMEM;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	p->nbufs = nbufs;
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

void pool_put(struct pool *p, uint8_t *const *bufs, size_t n)
{
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < n; i++) {
		if (!bufs[i])
			continue;
		assert(bufs[i] >= p->slab && bufs[i] < p->slab + p->nbufs * POOL_BUF_SIZE &&
		       (size_t)(bufs[i] - p->slab) % POOL_BUF_SIZE == 0);
		assert(p->nfree < p->nbufs);
		p->free[p->nfree++] = bufs[i];
	}
	pthread_mutex_unlock(&p->lock);
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
