/* Helpers of shoal_bench.c that the other commands (node_bench.c,
 * cluster_bench.c) use too. */
#ifndef SH_BENCH_UTIL_H
#define SH_BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Seconds on the monotonic clock. */
double bench_now_s(void);

/* Nearest-rank percentile p (0..1) of a sorted array of n values. */
double bench_percentile(const float *v, size_t n, double p);

/* Exact top-k of nq queries over nb base vectors (L2, or dot when `dot`),
 * optionally only over the base vectors whose bit is set in allow (one bit
 * per base vector, NULL: all), on every core. out: nq x k ids (-1 past
 * cnt[q] results). Returns 0. */
int bench_exact_topk(const float *base, size_t nb, const float *q, size_t nq,
		     uint32_t dim, bool dot, const uint8_t *allow, size_t k,
		     int32_t *out, uint32_t *cnt);

/* Runs nt client threads for `seconds`: each calls op(ctx, thread, i) for
 * i = 0, 1, ... until the time is up; op returns how many items it did
 * (points written, queries answered) or -1 on an error, which stops its
 * thread. Gives the items per second over all threads and the p50 / p99 of
 * one call, in ms. Returns 0, or -1 when a call failed. (timed.c) */
int bench_timed(unsigned nt, double seconds,
		int (*op)(void *ctx, unsigned thread, uint64_t i), void *ctx,
		double *rate, double *p50_ms, double *p99_ms);

/* A comma-separated list of positive integers ("1,2,4") into out: the
 * count, or 0 when malformed. (timed.c) */
size_t bench_parse_list(const char *s, size_t *out, size_t cap);

#endif
