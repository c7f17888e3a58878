#include "wg/queueing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "wg/aead.h"
#include "wg/peer.h"
#include "wg/receive.h"
#include "wg/send.h"

/* This thread runs queued jobs itself right after submitting (a worker,
 * or a reader that helps): it need not wake a worker for one of them. */
static __thread bool tls_helps;

void queueing_thread_helps(bool helps)
{
	tls_helps = helps;
}

/* Caller holds q->lock. */
static struct job *pop_locked(struct queueing *q)
{
	struct job *j = q->head;

	if (j) {
		q->head = j->crypt_next;
		if (!q->head)
			q->tail = NULL;
		q->queued--;
	}
	return j;
}

/* Runs j, then the jobs right behind it in the crypt queue that go the
 * same way for the same peer (up to *budget in all), and flushes the peer
 * once: one GSO send or one TUN write for the lot instead of one per job
 * (64 KB super-packets rather than 32-packet ones, and fewer TCP ACKs). A
 * job another thread took meanwhile is flushed by that thread or by us,
 * whoever comes last. */
static void run(struct queueing *q, struct job *j, size_t *budget)
{
	struct peer *p = peer_get(j->peer);
	enum job_dir dir = j->dir;

	for (;;) {
		/* j may be released by a flusher as soon as it is done. */
		if (dir == JOB_TX)
			send_job_seal(j);
		else
			receive_job_open(j);
		(*budget)--;
		j = NULL;
		if (*budget && q->nworkers) {
			pthread_mutex_lock(&q->lock);
			if (q->head && q->head->peer == p && q->head->dir == dir)
				j = pop_locked(q);
			pthread_mutex_unlock(&q->lock);
		}
		if (!j)
			break;
	}
	peer_flush(p, dir);
	peer_put(p);
}

static void *worker(void *arg)
{
	struct queueing *q = arg;
	struct job *j;

	queueing_thread_helps(true);
	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->head && !q->stopping) {
			q->idle++;
			pthread_cond_wait(&q->cond, &q->lock);
			q->idle--;
		}
		size_t budget = SIZE_MAX;

		j = pop_locked(q);
		if (!j)
			break; /* stopping, and nothing left */
		pthread_mutex_unlock(&q->lock);
		run(q, j, &budget);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	aead_thread_cleanup();
	return NULL;
}

int queueing_init(struct queueing *q, unsigned nworkers)
{
	int ret = 0;

	memset(q, 0, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	if (!nworkers)
		return 0;
	q->threads = calloc(nworkers, sizeof(*q->threads));
	if (!q->threads)
		return -ENOMEM;
	for (unsigned i = 0; i < nworkers; i++) {
		ret = -pthread_create(&q->threads[i], NULL, worker, q);
		if (ret)
			break;
		pthread_setname_np(q->threads[i], "knit-crypt");
		q->nworkers++;
	}
	if (ret)
		log_warn("crypt workers", "wanted=%u started=%u errno=%d", nworkers, q->nworkers, -ret);
	return q->nworkers ? 0 : ret;
}

void queueing_destroy(struct queueing *q)
{
	struct job *j;

	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (unsigned i = 0; i < q->nworkers; i++)
		pthread_join(q->threads[i], NULL);
	free(q->threads);
	q->threads = NULL;
	q->nworkers = 0;
	while (queueing_help(q, SIZE_MAX))
		;
	while ((j = q->free_jobs)) {
		q->free_jobs = j->next;
		free(j);
	}
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
}

struct job *queueing_job_new(struct queueing *q)
{
	struct job *j;

	pthread_mutex_lock(&q->lock);
	j = q->free_jobs;
	if (j) {
		q->free_jobs = j->next;
		q->nfree--;
	}
	pthread_mutex_unlock(&q->lock);
	if (!j) {
		j = malloc(sizeof(*j));
		if (!j)
			return NULL;
		pthread_mutex_lock(&q->lock);
		q->nalloc++;
		pthread_mutex_unlock(&q->lock);
	}
	/* Only the header needs clearing: slots are filled up to n. */
	memset(j, 0, offsetof(struct job, buf));
	return j;
}

void queueing_job_free(struct queueing *q, struct job *j)
{
	pthread_mutex_lock(&q->lock);
	j->next = q->free_jobs;
	q->free_jobs = j;
	q->nfree++;
	pthread_mutex_unlock(&q->lock);
}

void queueing_submit(struct queueing *q, struct job **jobs, size_t n)
{
	unsigned wake;

	if (!n)
		return;
	if (!q->nworkers) {
		/* Run to completion: one flush per run of one peer's jobs. */
		for (size_t i = 0; i < n;) {
			size_t k = i + 1, budget = SIZE_MAX;

			while (k < n && jobs[k]->peer == jobs[i]->peer && jobs[k]->dir == jobs[i]->dir)
				k++;
			for (size_t m = i; m + 1 < k; m++) {
				if (jobs[m]->dir == JOB_TX)
					send_job_seal(jobs[m]);
				else
					receive_job_open(jobs[m]);
			}
			run(q, jobs[k - 1], &budget);
			i = k;
		}
		return;
	}
	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < n; i++) {
		jobs[i]->crypt_next = NULL;
		if (q->tail)
			q->tail->crypt_next = jobs[i];
		else
			q->head = jobs[i];
		q->tail = jobs[i];
	}
	q->queued += n;
	if (tls_helps)
		n--; /* that one is ours */
	wake = n < q->idle ? (unsigned)n : q->idle;
	pthread_mutex_unlock(&q->lock);
	while (wake--)
		pthread_cond_signal(&q->cond);
}

size_t queueing_help(struct queueing *q, size_t max)
{
	struct job *j;

	size_t budget = max;

	while (budget) {
		pthread_mutex_lock(&q->lock);
		j = pop_locked(q);
		pthread_mutex_unlock(&q->lock);
		if (!j)
			break;
		run(q, j, &budget);
	}
	return max - budget;
}

size_t queueing_queued(struct queueing *q)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	n = q->queued;
	pthread_mutex_unlock(&q->lock);
	return n;
}
