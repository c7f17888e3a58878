#include "wg/queueing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "wg/aead.h"
#include "wg/receive.h"
#include "wg/send.h"

/* This thread runs queued jobs itself right after submitting (a worker,
 * or a reader that helps): it need not wake a worker for one of them. */
static __thread bool tls_helps;

void queueing_thread_helps(bool helps)
{
	tls_helps = helps;
}

static void run(struct job *j)
{
	if (j->dir == JOB_TX)
		send_job_run(j);
	else
		receive_job_run(j);
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
		j = pop_locked(q);
		if (!j)
			break; /* stopping, and nothing left */
		pthread_mutex_unlock(&q->lock);
		run(j);
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
		for (size_t i = 0; i < n; i++)
			run(jobs[i]);
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
	size_t done = 0;
	struct job *j;

	while (done < max) {
		pthread_mutex_lock(&q->lock);
		j = pop_locked(q);
		pthread_mutex_unlock(&q->lock);
		if (!j)
			break;
		run(j);
		done++;
	}
	return done;
}

size_t queueing_queued(struct queueing *q)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	n = q->queued;
	pthread_mutex_unlock(&q->lock);
	return n;
}
