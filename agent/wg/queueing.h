/* Crypt jobs and the parallel crypt queue (the Linux module's queueing.c,
 * by the batch rather than by the packet).
 *
 * A job is up to JOB_MAX packets of one peer under one keypair, going one
 * way. It is put on two queues at once: its peer's serial queue (tx or
 * rx), in the order the packets arrived, and the crypt queue, which any
 * worker thread drains in parallel. A worker seals or opens every packet
 * of the job, marks it done, and then whoever finds the head of the
 * peer's serial queue done sends (or writes to the TUN) the done jobs from
 * the head on: crypto runs in parallel, yet each peer's packets leave in
 * order.
 *
 * With no worker threads, queueing_submit() runs jobs on the caller's
 * thread (run to completion), and readers may always queueing_help().
 *
 * Locking: queueing.lock guards the crypt queue, the idle count, the
 * stopping flag and the free job list. A job's fields belong to whoever
 * holds it: the submitter until submit, then the worker running it until
 * it sets done, then the peer's flusher. */
#ifndef KNIT_AGENT_WG_QUEUEING_H
#define KNIT_AGENT_WG_QUEUEING_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/endpoint.h"

#define JOB_MAX 32

struct peer;
struct noise_keypair;

enum job_dir { JOB_TX, JOB_RX };

struct job {
	struct job *next; /* the peer's serial queue, or the free list */
	struct job *crypt_next; /* the crypt queue */
	enum job_dir dir;
	atomic_bool done; /* release-stored by the worker, then read by the flusher */
	struct peer *peer; /* a reference */
	struct noise_keypair *kp; /* a reference */
	uint64_t now;
	unsigned n;
	uint8_t *buf[JOB_MAX]; /* pool slots, owned by the job */
	uint32_t len[JOB_MAX]; /* message on the wire: tx out, rx in */
	uint32_t plen[JOB_MAX]; /* plaintext: tx in, rx out */
	uint8_t ok[JOB_MAX]; /* sealed, or opened and fresh */
	struct endpoint ep[JOB_MAX]; /* rx: the datagram's source */
};

struct queueing {
	pthread_mutex_t lock; /* see above */
	pthread_cond_t cond;
	struct job *head, *tail;
	size_t queued;
	unsigned idle;
	bool stopping;
	struct job *free_jobs;
	size_t nfree, nalloc;
	unsigned nworkers;
	pthread_t *threads;
};

/* Starts nworkers threads (0: run to completion). 0 or a negative errno. */
int queueing_init(struct queueing *q, unsigned nworkers);
/* Runs what is queued, stops and joins the workers, frees the jobs. */
void queueing_destroy(struct queueing *q);

/* A zeroed job (dir, refs and packets are the caller's to fill), or NULL
 * on ENOMEM. Jobs are recycled, not freed, until queueing_destroy(). */
struct job *queueing_job_new(struct queueing *q);
void queueing_job_free(struct queueing *q, struct job *j);

/* Hands jobs[0..n) to the workers (or runs them here, without workers). */
void queueing_submit(struct queueing *q, struct job **jobs, size_t n);
/* Says whether the calling thread runs queued jobs right after it
 * submits (workers do; readers that help). Then queueing_submit() wakes
 * one worker fewer: a woken worker that finds nothing costs two context
 * switches for nothing. */
void queueing_thread_helps(bool helps);
/* Runs up to max queued jobs on the calling thread; returns how many. */
size_t queueing_help(struct queueing *q, size_t max);
size_t queueing_queued(struct queueing *q);

#endif
