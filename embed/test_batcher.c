/* The dynamic batcher on its own, in front of a fake backend whose forward
 * pass takes a fixed time and writes each row's first token id into its
 * vector, so a test can see which batches formed and whose vector went
 * where, without a model. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "batcher.h"
#include "error.h"

#define HIDDEN 4
#define MAXPASSES 256

/* ---- the fake backend ---------------------------------------------------- */

static unsigned fake_forward_us;
static int pass_rows[MAXPASSES];
static atomic_int npasses;

static int fake_create(const struct sh_bert_model *m, int max_batch,
		       int max_seq, void **ctx, char *err, size_t errlen)
{
	(void)m, (void)max_batch, (void)max_seq, (void)err, (void)errlen;
	*ctx = &fake_forward_us;
	return SH_OK;
}

static int fake_forward(void *ctx, const struct sh_bert_batch *b, float *out,
			char *err, size_t errlen)
{
	(void)ctx, (void)err, (void)errlen;
	int p = atomic_load(&npasses);
	if (p < MAXPASSES)
		pass_rows[p] = b->n;
	atomic_store(&npasses, p + 1);
	usleep(fake_forward_us);
	for (int i = 0; i < b->n; i++) {
		for (int h = 0; h < HIDDEN; h++)
			out[i * HIDDEN + h] = (float)b->ids[i * b->seq + 1];
	}
	return SH_OK;
}

static void fake_destroy(void *ctx)
{
	(void)ctx;
}

static const struct sh_bert_backend_ops fake_ops = {
    .name = "fake",
    .create = fake_create,
    .forward = fake_forward,
    .destroy = fake_destroy,
};

static struct sh_bert_model fake_model = {.cfg = {.hidden = HIDDEN}};

static embed_batcher *open_batcher(int max_batch, uint64_t delay_us,
				   unsigned forward_us)
{
	fake_forward_us = forward_us;
	atomic_store(&npasses, 0);
	embed_batcher_opts o = {.ops = &fake_ops,
				.model = &fake_model,
				.max_batch = max_batch,
				.max_delay_us = delay_us,
				.batching = true,
				.max_queue = 4096};
	embed_batcher *b = NULL;
	char err[160];
	int rc = embed_batcher_new(&o, &b, err, sizeof(err));
	if (rc != SH_OK)
		fail_msg("embed_batcher_new: %s", err);
	return b;
}

/* ---- closed-loop clients --------------------------------------------------
 */

struct client {
	embed_batcher *b;
	int id;
	atomic_bool *stop;
	pthread_t th;
	int requests, wrong, errors;
};

/* One text at a time, the next sent as soon as the last is answered. */
static void *client_main(void *arg)
{
	struct client *c = arg;
	static int32_t ids[64][SH_BERT_MAX_TOKENS];
	int32_t *row = ids[c->id];
	row[0] = 101;
	row[1] = 1000 + c->id;
	row[2] = 102;
	int len = 3;
	while (!atomic_load(c->stop)) {
		float out[HIDDEN];
		embed_job j = {.n = 1, .ids = row, .len = &len, .out = out};
		char err[160];
		if (embed_batcher_run(c->b, &j, err, sizeof(err)) != SH_OK) {
			c->errors++;
			continue;
		}
		c->requests++;
		if (out[0] != (float)(1000 + c->id))
			c->wrong++;
	}
	return NULL;
}

static void start_clients(struct client *cs, int from, int to, embed_batcher *b,
			  atomic_bool *stop)
{
	for (int i = from; i < to; i++) {
		cs[i] = (struct client){.b = b, .id = i, .stop = stop};
		assert_int_equal(
		    pthread_create(&cs[i].th, NULL, client_main, &cs[i]), 0);
	}
}

/* Stops and joins clients [0, n): each got every answer right. Returns
 * the requests they made. */
static int stop_clients(struct client *cs, int n, atomic_bool *stop)
{
	int requests = 0;
	atomic_store(stop, true);
	for (int i = 0; i < n; i++) {
		pthread_join(cs[i].th, NULL);
		assert_int_equal(cs[i].errors, 0);
		assert_int_equal(cs[i].wrong, 0);
		requests += cs[i].requests;
	}
	return requests;
}

static void wait_passes(int n)
{
	while (atomic_load(&npasses) < n)
		usleep(1000);
}

/* A closed loop of clients whose second half arrives while the first
 * half's pass runs, on a model slower than the queue delay. Were the delay
 * counted from each text's arrival, the second half (which has waited
 * longer than the delay by the time that pass ends) would start at once,
 * alone, and the two halves would alternate for ever, each text waiting
 * for the other half's pass and then its own. Counted from the end of the
 * last pass, the first half's clients, answered, send their next texts
 * into the same batch: the batches fill up. */
static void test_closed_loop_fills_batches_after_a_pass(void **st)
{
	(void)st;
	enum { CLIENTS = 16, PASSES = 24 };
	embed_batcher *b = open_batcher(CLIENTS, 10000, 40000);
	atomic_bool stop = false;
	struct client cs[CLIENTS];
	start_clients(cs, 0, CLIENTS / 2, b, &stop);
	wait_passes(1); /* the first half's pass is running */
	start_clients(cs, CLIENTS / 2, CLIENTS, b, &stop);
	wait_passes(PASSES);
	int requests = stop_clients(cs, CLIENTS, &stop), full = 0, later = 0;
	embed_batcher_free(b);
	/* Pass 0 is the first half alone; from pass 1 on (the second half,
	 * queued behind it, joined by the answered first half) the batches
	 * should be full. Judge the steady state from pass 3, allowing a few
	 * passes broken up by a client preempted on a loaded machine;
	 * alternating halves would fill none. */
	for (int p = 3; p < PASSES; p++) {
		later++;
		full += pass_rows[p] == CLIENTS;
	}
	print_message("passes 3..%d: %d of %d full; %d requests\n", PASSES - 1,
		      full, later, requests);
	assert_true(full * 4 >= later * 3);
	assert_true(requests >= PASSES * CLIENTS / 2);
}

/* Batching still gathers concurrent single texts into one pass when the
 * model is idle: 8 clients, a long delay, a fast model. */
static void test_idle_model_waits_for_company(void **st)
{
	(void)st;
	enum { CLIENTS = 8, PASSES = 10 };
	embed_batcher *b = open_batcher(CLIENTS, 200000, 1000);
	atomic_bool stop = false;
	struct client cs[CLIENTS];
	start_clients(cs, 0, CLIENTS, b, &stop);
	wait_passes(PASSES);
	stop_clients(cs, CLIENTS, &stop);
	embed_batcher_free(b);
	int full = 0;
	for (int p = 1; p < PASSES; p++)
		full += pass_rows[p] == CLIENTS;
	assert_true(full * 4 >= (PASSES - 1) * 3);
}

/* One client alone, a delay of a second: once a pass has answered it, its
 * next text is all the batch expects, so it runs at once instead of
 * waiting for company that will not come. Only the first text, with no
 * pass behind it yet, waits the delay. */
static void test_a_lone_client_does_not_wait_for_the_delay(void **st)
{
	(void)st;
	enum { TEXTS = 10 };
	embed_batcher *b = open_batcher(16, 1000000, 1000);
	int32_t row[3] = {101, 1000, 102};
	int len = 3;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < TEXTS; i++) {
		float out[HIDDEN];
		embed_job j = {.n = 1, .ids = row, .len = &len, .out = out};
		char err[160];
		assert_int_equal(embed_batcher_run(b, &j, err, sizeof(err)),
				 SH_OK);
		assert_true(out[0] == 1000.0f);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	embed_batcher_free(b);
	double s = (double)(t1.tv_sec - t0.tv_sec) +
		   (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	print_message("%d texts in %.2f s (the delay is 1 s)\n", TEXTS, s);
	assert_int_equal(atomic_load(&npasses), TEXTS);
	/* waiting the delay each time would take TEXTS seconds */
	assert_true(s < TEXTS / 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_closed_loop_fills_batches_after_a_pass),
	    cmocka_unit_test(test_idle_model_waits_for_company),
	    cmocka_unit_test(test_a_lone_client_does_not_wait_for_the_delay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
