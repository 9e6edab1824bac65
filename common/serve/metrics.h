/*
 * Metrics in the Prometheus text format: lock-free counters and latency
 * histograms that any thread may update, and writers of their exposition.
 * Each process keeps its own (see node.c, router.c) and renders them for
 * GET /metrics.
 */
#ifndef SH_METRICS_H
#define SH_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

/* Upper bounds of the latency buckets, in microseconds: 100 µs .. 10 s. */
#define SH_HIST_NBUCKETS 16
extern const uint64_t sh_hist_bounds_us[SH_HIST_NBUCKETS];

/* A latency histogram. Zero-initialised storage is an empty histogram. */
typedef struct sh_histogram {
	atomic_uint_fast64_t bucket[SH_HIST_NBUCKETS + 1]; /* last: +Inf */
	atomic_uint_fast64_t sum_us;
} sh_histogram;

/* Records one observation. Any thread; never blocks. */
void sh_histogram_observe(sh_histogram *h, uint64_t us);

/* Total observations. */
uint64_t sh_histogram_count(const sh_histogram *h);

/* Writes the _bucket, _sum and _count lines of metric `name` (seconds)
 * with extra labels (e.g. `op="search"`, or "" for none). Writes nothing
 * when the histogram is empty. The HELP/TYPE lines are the caller's. */
void sh_histogram_write(const sh_histogram *h, FILE *f, const char *name,
			const char *labels);

/* A histogram of sizes (texts per batch, records per write): buckets
 * le 1, 2, 4, ..., 2^(SH_SIZE_NBUCKETS-1), +Inf. Zero-initialised storage
 * is empty. */
#define SH_SIZE_NBUCKETS 15
typedef struct sh_size_histogram {
	atomic_uint_fast64_t bucket[SH_SIZE_NBUCKETS + 1];
	atomic_uint_fast64_t sum;
} sh_size_histogram;

void sh_size_histogram_observe(sh_size_histogram *h, uint64_t n);

/* As sh_histogram_write, for sizes; writes the empty buckets too. */
void sh_size_histogram_write(const sh_size_histogram *h, FILE *f,
			     const char *name, const char *labels);

/* What every server counts of one operation: its requests by result code
 * and their latency. Zero-initialised storage is empty. */
typedef struct sh_op_metrics {
	atomic_uint_fast64_t requests[SH_NCODES];
	sh_histogram latency;
} sh_op_metrics;

/* Records one request; a code out of range counts as EINVAL. Any thread. */
void sh_op_metrics_observe(sh_op_metrics *m, int code, uint64_t us);

/* Writes `<prefix>requests_total{op,code}` (the non-zero counters) and
 * `<prefix>request_duration_seconds{op}` of ops[0..nops), operation i
 * named names[i], with their HELP/TYPE lines. */
void sh_op_metrics_write(const sh_op_metrics *ops, int nops,
			 const char *const *names, const char *prefix, FILE *f);

/* The # HELP and # TYPE lines of a metric. */
void sh_metric_head(FILE *f, const char *name, const char *type,
		    const char *help);

/* Microseconds on the monotonic clock. */
uint64_t sh_now_us(void);

/* Sleeps ms milliseconds, the whole of them: a signal does not cut it. */
void sh_sleep_ms(int ms);

/* A condition variable whose timed waits run on that clock, so that a
 * jump of the wall clock neither stretches nor cuts them; and a wait on
 * one (mu held) until sh_now_us() reaches us: pthread_cond_timedwait's
 * code (ETIMEDOUT when the time came). */
void sh_cond_init_mono(pthread_cond_t *cv);
int sh_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t us);

#endif
