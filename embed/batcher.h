/*
 * The dynamic batcher of shoal-embed: one per model, in the manner of
 * Triton's dynamic batcher.
 *
 * Requests (jobs) wait in a FIFO queue. One batcher thread per model takes
 * texts from the head of the queue until it has max_batch of them or the
 * oldest waiting job has waited max_delay_us, then runs them through the
 * model (one backend context, created here, used only by that thread).
 * The delay counts from the later of the oldest job's arrival and the end
 * of the last forward pass: time spent behind a running pass is not
 * batching delay, and the clients that pass answers get max_delay_us to
 * send their next texts into the same batch.
 * The batch also leaves as soon as it holds as many jobs as the last pass
 * answered plus those that were already waiting: a closed loop of clients
 * (one user, a benchmark, a service calling in a loop) then never waits
 * for the delay once they are all back, so a long delay costs one client
 * nothing, while a pass that answered 64 waits for 64. Clients that went
 * away cost one delay, after which the expectation is what arrived.
 * A job may be split over several batches (a request of 1024 texts on a
 * batch of 64), and a batch may hold texts of many jobs.
 *
 * Within a batch, texts are sorted by token count and run as one forward
 * pass, or as a few when their lengths differ widely (a 200-token text
 * would otherwise pad 63 short queries to 200 tokens): see
 * EMBED_SPLIT_RATIO.
 *
 * With batching off, each job runs alone (still max_batch texts per forward
 * pass): the comparison point for the benchmark.
 *
 * Locking: the queue, every queued job's taken/done/rc and the batcher's
 * state are guarded by the batcher's mutex; a job's output rows are written
 * by the batcher thread without the lock, before it raises `done`, and read
 * by the submitter only after it saw `done` cover them.
 */
#ifndef SH_EMBED_BATCHER_H
#define SH_EMBED_BATCHER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bert.h"
#include "metrics.h"

/* A batch whose longest text has at least EMBED_SPLIT_MIN_TOKENS tokens
 * and more than EMBED_SPLIT_RATIO times the tokens of its shortest one
 * (with at least EMBED_SPLIT_MIN rows on each side of the cut) is run as
 * separate forward passes, one per length range. Short queries are never
 * split: below ~64 tokens a forward pass costs about the same per row
 * whatever the padding, and fewer rows per pass run less efficiently
 * (measured: 16.6 rows per pass instead of ~30 cost a quarter of the
 * throughput at concurrency 64). */
#define EMBED_SPLIT_MIN_TOKENS 64
#define EMBED_SPLIT_RATIO 2
#define EMBED_SPLIT_MIN 8

/* What the batcher counts; the server renders it for /metrics. */
struct embed_batcher_stats {
	atomic_uint_fast64_t batches; /* forward passes */
	atomic_uint_fast64_t texts;   /* texts embedded */
	atomic_uint_fast64_t tokens;  /* real tokens, [CLS]/[SEP] included */
	atomic_uint_fast64_t
	    padded_tokens;		 /* tokens computed, padding included */
	atomic_uint_fast64_t forward_us; /* time inside forward() */
	sh_size_histogram bsize;	 /* texts per forward pass */
	atomic_uint_fast64_t rejected;	 /* overloaded: queue full */
	atomic_uint_fast64_t timeouts;	 /* jobs past their deadline */
	atomic_uint_fast64_t errors;	 /* failed forward passes */
	sh_histogram queue_delay;	 /* enqueue -> taken into a batch */
	sh_histogram forward;		 /* one forward pass */
};

typedef struct embed_batcher_opts {
	const struct sh_bert_backend_ops *ops;
	const struct sh_bert_model *model; /* must outlive the batcher */
	int max_batch;			   /* texts per forward pass, >= 1 */
	uint64_t max_delay_us; /* longest wait of the oldest text for others */
	bool batching;	       /* false: each job runs alone */
	size_t max_queue;      /* texts waiting at most (>= 1) */
} embed_batcher_opts;

/* One request's texts, tokenized. The submitter owns it (usually on its
 * stack) and fills the first block; the rest is the batcher's. */
typedef struct embed_job {
	size_t n;	      /* texts, >= 1 */
	const int32_t *ids;   /* n rows of SH_BERT_MAX_TOKENS ids */
	const int *len;	      /* tokens of each row, 2..SH_BERT_MAX_TOKENS */
	float *out;	      /* n x hidden floats: the vectors */
	uint64_t deadline_us; /* sh_now_us() time to give up; 0: none */

	/* The batcher's, under its mutex. */
	uint64_t enq_us;	/* when queued */
	size_t taken;		/* rows taken into batches */
	size_t done;		/* rows finished (vectors written or failed) */
	int rc;			/* first error */
	char err[160];		/* its message */
	struct embed_job *next; /* in the queue */
	bool queued;
	pthread_cond_t cv; /* set up and torn down by embed_batcher_run */
} embed_job;

typedef struct embed_batcher embed_batcher;

/* Creates the backend context (max_batch x SH_BERT_MAX_TOKENS) and starts
 * the batcher thread. Returns SH_OK with *out, or the backend's error with
 * its message in err. */
int embed_batcher_new(const embed_batcher_opts *o, embed_batcher **out,
		      char *err, size_t errlen);

/* Stops the thread (jobs still queued fail with SH_EBUSY "shutting
 * down"), destroys the backend context, frees. Jobs must not be submitted
 * any more. NULL is a no-op. */
void embed_batcher_free(embed_batcher *b);

/* Queues j and blocks until every one of its vectors is written (SH_OK),
 * or until its deadline (SH_ETIMEDOUT; it still waits for the rows already
 * in a running forward pass, at most one batch's compute). SH_EBUSY when
 * the queue would exceed max_queue texts ("overloaded"; a job larger than
 * max_queue is still accepted into an empty queue) or the batcher is
 * stopping; a backend error is returned as is. err gets a message. Any
 * thread, any number at once. */
int embed_batcher_run(embed_batcher *b, embed_job *j, char *err, size_t errlen);

/* Counters for /metrics (live; read with atomic loads). */
const struct embed_batcher_stats *embed_batcher_stats(const embed_batcher *b);

/* Texts waiting now. */
size_t embed_batcher_queued(embed_batcher *b);

/* The backend's name ("cpu", "cuda") and the effective max batch. */
const char *embed_batcher_backend(const embed_batcher *b);
int embed_batcher_max_batch(const embed_batcher *b);

#endif
