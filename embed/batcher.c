/* The dynamic batcher: a FIFO of jobs and one thread that turns them into
 * forward passes. See batcher.h. */
#include "batcher.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"

/* One row of a batch: which job, which of its texts. */
struct brow {
	embed_job *job;
	size_t idx;
	int len;
};

struct embed_batcher {
	embed_batcher_opts o;
	void *ctx; /* the backend context: the batcher thread's alone */
	int hidden;
	pthread_t thread;
	bool started;

	/* Guarded by mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* work arrived, or stop */
	embed_job *head, *tail;
	size_t queued;	  /* texts not yet taken */
	size_t qjobs;	  /* jobs in the queue (some of their texts untaken) */
	size_t expect;	  /* jobs the next batch waits for; 0: unknown */
	uint64_t free_us; /* when the last forward pass ended */
	bool stop;

	/* The batcher thread's scratch, allocated once. */
	struct brow *rows; /* max_batch */
	int32_t *ids;	   /* max_batch x SH_BERT_MAX_TOKENS */
	int *lens;	   /* max_batch */
	float *out;	   /* max_batch x hidden */

	struct embed_batcher_stats st;
};

static int cmp_row_len(const void *a, const void *b)
{
	const struct brow *x = a, *y = b;
	return (x->len > y->len) - (x->len < y->len);
}

/* Runs rows[0..n) (sorted by length) as one forward pass and writes each
 * vector into its job. Returns the backend's code. Batcher thread. */
static int forward_rows(embed_batcher *b, struct brow *rows, int n, char *err,
			size_t errlen)
{
	int seq = rows[n - 1].len;
	for (int i = 0; i < n; i++) {
		const int32_t *src =
		    rows[i].job->ids + rows[i].idx * SH_BERT_MAX_TOKENS;
		memcpy(b->ids + (size_t)i * seq, src,
		       (size_t)rows[i].len * sizeof(int32_t));
		/* Padding past len is ignored by the backends; keep it
		 * defined anyway. */
		memset(b->ids + (size_t)i * seq + rows[i].len, 0,
		       (size_t)(seq - rows[i].len) * sizeof(int32_t));
		b->lens[i] = rows[i].len;
	}
	struct sh_bert_batch bt = {
	    .n = n, .seq = seq, .ids = b->ids, .len = b->lens};
	uint64_t t0 = sh_now_us();
	int rc = b->o.ops->forward(b->ctx, &bt, b->out, err, errlen);
	uint64_t dt = sh_now_us() - t0;
	/* One line per pass at debug level, with the monotonic start time:
	 * what shoal-bench embed reads for the passes' own percentiles. */
	sh_debug("embed",
		 "pass at %llu us: %d texts of up to %d tokens, %.3f ms",
		 (unsigned long long)t0, n, seq, (double)dt * 1e-3);
	sh_histogram_observe(&b->st.forward, dt);
	atomic_fetch_add(&b->st.forward_us, dt);
	atomic_fetch_add(&b->st.batches, 1);
	sh_size_histogram_observe(&b->st.bsize, (uint64_t)n);
	if (rc != SH_OK) {
		atomic_fetch_add(&b->st.errors, 1);
		return rc;
	}
	uint64_t toks = 0;
	for (int i = 0; i < n; i++) {
		memcpy(rows[i].job->out + rows[i].idx * (size_t)b->hidden,
		       b->out + (size_t)i * b->hidden,
		       (size_t)b->hidden * sizeof(float));
		toks += (uint64_t)rows[i].len;
	}
	atomic_fetch_add(&b->st.texts, (uint64_t)n);
	atomic_fetch_add(&b->st.tokens, toks);
	atomic_fetch_add(&b->st.padded_tokens, (uint64_t)n * (uint64_t)seq);
	return SH_OK;
}

/* Takes up to max_batch rows from the head of the queue into b->rows.
 * Called with mu held; returns the count. */
static int take_rows(embed_batcher *b)
{
	int k = 0;
	uint64_t now = sh_now_us();
	while (b->head && k < b->o.max_batch) {
		embed_job *j = b->head;
		size_t take = j->n - j->taken;
		if (take > (size_t)(b->o.max_batch - k))
			take = (size_t)(b->o.max_batch - k);
		sh_histogram_observe(&b->st.queue_delay, now - j->enq_us);
		for (size_t i = 0; i < take; i++) {
			b->rows[k].job = j;
			b->rows[k].idx = j->taken + i;
			b->rows[k].len = j->len[j->taken + i];
			k++;
		}
		j->taken += take;
		b->queued -= take;
		if (j->taken == j->n) {
			b->head = j->next;
			if (!b->head)
				b->tail = NULL;
			j->next = NULL;
			j->queued = false;
			b->qjobs--;
		}
		if (!b->o.batching)
			break;
	}
	return k;
}

/* Marks rows[0..n) finished (with rc) and wakes their submitters; returns
 * how many jobs this finished. Called with mu held. */
static size_t finish_rows(struct brow *rows, int n, int rc, const char *err)
{
	size_t finished = 0;
	for (int i = 0; i < n; i++) {
		embed_job *j = rows[i].job;
		if (rc != SH_OK && j->rc == SH_OK) {
			j->rc = rc;
			snprintf(j->err, sizeof(j->err), "%s", err);
		}
		j->done++;
		/* Wake once per job: at its last row in this batch. */
		if (i == n - 1 || rows[i + 1].job != j) {
			pthread_cond_signal(&j->cv);
			finished += j->done == j->n;
		}
	}
	return finished;
}

static int cmp_row_job(const void *a, const void *b)
{
	const struct brow *x = a, *y = b;
	if (x->job != y->job)
		return (uintptr_t)x->job < (uintptr_t)y->job ? -1 : 1;
	return (x->idx > y->idx) - (x->idx < y->idx);
}

static void *batcher_main(void *arg)
{
	embed_batcher *b = arg;
	char err[160];
	pthread_mutex_lock(&b->mu);
	for (;;) {
		while (!b->stop && !b->head)
			pthread_cond_wait(&b->cv, &b->mu);
		if (b->stop)
			break;
		if (b->o.batching && b->queued < (size_t)b->o.max_batch &&
		    !(b->expect && b->qjobs >= b->expect)) {
			/* The delay counts from when the model could first
			 * have taken the oldest text: its arrival, or the end
			 * of the pass it waited behind. Counting from arrival
			 * alone would launch the texts that queued during a
			 * pass at once, without the ones that pass is about
			 * to send back: a closed loop of clients would settle
			 * into half batches that alternate, each text waiting
			 * for the other half's pass and then its own. */
			uint64_t from = b->head->enq_us > b->free_us
					    ? b->head->enq_us
					    : b->free_us;
			uint64_t wake = from + b->o.max_delay_us;
			if (sh_now_us() < wake) {
				sh_cond_wait_until(&b->cv, &b->mu, wake);
				continue;
			}
		}
		int n = take_rows(b);
		pthread_mutex_unlock(&b->mu);

		/* Sort by length; cut where the length jumps by more than
		 * EMBED_SPLIT_RATIO with enough rows on both sides. */
		qsort(b->rows, (size_t)n, sizeof(*b->rows), cmp_row_len);
		int rc = SH_OK;
		err[0] = 0;
		int start = 0;
		while (start < n && rc == SH_OK) {
			int end = start + 1;
			while (end < n &&
			       !(b->rows[end].len >= EMBED_SPLIT_MIN_TOKENS &&
				 b->rows[end].len >
				     EMBED_SPLIT_RATIO * b->rows[start].len &&
				 end - start >= EMBED_SPLIT_MIN &&
				 n - end >= EMBED_SPLIT_MIN))
				end++;
			rc = forward_rows(b, b->rows + start, end - start, err,
					  sizeof(err));
			start = end;
		}
		if (rc != SH_OK)
			sh_warn("embed", "forward pass of %d texts failed: %s",
				n, err);
		/* Group by job so each submitter is woken once. */
		qsort(b->rows, (size_t)n, sizeof(*b->rows), cmp_row_job);
		pthread_mutex_lock(&b->mu);
		/* Who the next batch waits for: the submitters this pass
		 * answered (a closed loop's clients send again at once) and
		 * those already queued. */
		b->expect = finish_rows(b->rows, n, rc, err) + b->qjobs;
		b->free_us = sh_now_us();
	}
	/* Stopping: fail what still waits. */
	while (b->head) {
		embed_job *j = b->head;
		b->head = j->next;
		j->next = NULL;
		j->queued = false;
		b->queued -= j->n - j->taken;
		b->qjobs--;
		j->rc = SH_EBUSY;
		snprintf(j->err, sizeof(j->err),
			 "shoal-embed is shutting down");
		pthread_cond_signal(&j->cv);
	}
	b->tail = NULL;
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

int embed_batcher_new(const embed_batcher_opts *o, embed_batcher **out,
		      char *err, size_t errlen)
{
	*out = NULL;
	if (o->max_batch < 1 || o->max_queue < 1)
		return sh_errf(err, errlen, SH_EINVAL,
			       "max batch and max queue must be at least 1");
	embed_batcher *b = calloc(1, sizeof(*b));
	if (!b)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	b->o = *o;
	b->hidden = o->model->cfg.hidden;
	pthread_mutex_init(&b->mu, NULL);
	sh_cond_init_mono(&b->cv);
	size_t mb = (size_t)o->max_batch;
	b->rows = calloc(mb, sizeof(*b->rows));
	b->ids = calloc(mb * SH_BERT_MAX_TOKENS, sizeof(*b->ids));
	b->lens = calloc(mb, sizeof(*b->lens));
	b->out = calloc(mb * (size_t)b->hidden, sizeof(*b->out));
	int rc;
	if (!b->rows || !b->ids || !b->lens || !b->out) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto fail;
	}
	rc = o->ops->create(o->model, o->max_batch, SH_BERT_MAX_TOKENS, &b->ctx,
			    err, errlen);
	if (rc != SH_OK) {
		b->ctx = NULL;
		goto fail;
	}
	if (pthread_create(&b->thread, NULL, batcher_main, b) != 0) {
		rc = sh_errf(err, errlen, SH_ENOMEM,
			     "cannot start the batcher thread");
		goto fail;
	}
	b->started = true;
	*out = b;
	return SH_OK;
fail:
	embed_batcher_free(b);
	return rc;
}

void embed_batcher_free(embed_batcher *b)
{
	if (!b)
		return;
	if (b->started) {
		pthread_mutex_lock(&b->mu);
		b->stop = true;
		pthread_cond_broadcast(&b->cv);
		pthread_mutex_unlock(&b->mu);
		pthread_join(b->thread, NULL);
	}
	if (b->ctx)
		b->o.ops->destroy(b->ctx);
	free(b->rows);
	free(b->ids);
	free(b->lens);
	free(b->out);
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

int embed_batcher_run(embed_batcher *b, embed_job *j, char *err, size_t errlen)
{
	if (j->n == 0)
		return SH_OK;
	j->taken = j->done = 0;
	j->rc = SH_OK;
	j->err[0] = 0;
	j->next = NULL;
	j->queued = false;
	sh_cond_init_mono(&j->cv);

	int rc;
	pthread_mutex_lock(&b->mu);
	if (b->stop) {
		pthread_mutex_unlock(&b->mu);
		pthread_cond_destroy(&j->cv);
		return sh_errf(err, errlen, SH_EBUSY,
			       "shoal-embed is shutting down");
	}
	/* A job larger than the whole queue may still run alone. */
	if (b->queued > 0 && b->queued + j->n > b->o.max_queue) {
		size_t q = b->queued;
		pthread_mutex_unlock(&b->mu);
		pthread_cond_destroy(&j->cv);
		atomic_fetch_add(&b->st.rejected, 1);
		return sh_errf(err, errlen, SH_EBUSY,
			       "overloaded: %zu texts queued, %zu more would "
			       "pass --max-queue %zu",
			       q, j->n, b->o.max_queue);
	}
	j->enq_us = sh_now_us();
	j->queued = true;
	if (b->tail)
		b->tail->next = j;
	else
		b->head = j;
	b->tail = j;
	b->queued += j->n;
	b->qjobs++;
	/* The batcher waits for a full batch, the jobs it expects, or the
	 * oldest text's delay: wake it when this job may end the wait or
	 * starts the queue. */
	if (b->head == j || b->queued >= (size_t)b->o.max_batch ||
	    (b->expect && b->qjobs >= b->expect) || !b->o.batching)
		pthread_cond_signal(&b->cv);

	while (j->done < j->n && j->rc == SH_OK) {
		if (j->deadline_us == 0) {
			pthread_cond_wait(&j->cv, &b->mu);
			continue;
		}
		if (sh_cond_wait_until(&j->cv, &b->mu, j->deadline_us) ==
			ETIMEDOUT &&
		    j->done < j->n && sh_now_us() >= j->deadline_us) {
			j->rc = SH_ETIMEDOUT;
			snprintf(j->err, sizeof(j->err),
				 "deadline passed with %zu of %zu texts "
				 "embedded",
				 j->done, j->n);
			atomic_fetch_add(&b->st.timeouts, 1);
		}
	}
	if (j->rc != SH_OK) {
		/* Withdraw what the batcher has not taken, then wait for the
		 * rows it is computing: they write into j->out. */
		if (j->queued) {
			embed_job **pp = &b->head, *prev = NULL;
			while (*pp && *pp != j) {
				prev = *pp;
				pp = &(*pp)->next;
			}
			if (*pp) {
				*pp = j->next;
				if (b->tail == j)
					b->tail = prev;
			}
			b->queued -= j->n - j->taken;
			b->qjobs--;
			j->queued = false;
		}
		while (j->done < j->taken)
			pthread_cond_wait(&j->cv, &b->mu);
	}
	rc = j->rc;
	pthread_mutex_unlock(&b->mu);
	pthread_cond_destroy(&j->cv);
	if (rc != SH_OK)
		sh_errf(err, errlen, rc, "%s", j->err);
	return rc;
}

const struct embed_batcher_stats *embed_batcher_stats(const embed_batcher *b)
{
	return &b->st;
}

size_t embed_batcher_queued(embed_batcher *b)
{
	pthread_mutex_lock(&b->mu);
	size_t q = b->queued;
	pthread_mutex_unlock(&b->mu);
	return q;
}

const char *embed_batcher_backend(const embed_batcher *b)
{
	return b->o.ops->name;
}

int embed_batcher_max_batch(const embed_batcher *b)
{
	return b->o.max_batch;
}
