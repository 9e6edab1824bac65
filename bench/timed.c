/* Client threads for a fixed time, with per-call latency. See
 * bench_util.h (bench_timed). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

struct tworker {
	pthread_t t;
	unsigned idx;
	int (*op)(void *ctx, unsigned thread, uint64_t i);
	void *ctx;
	double until;
	float *lat;
	size_t n, cap;
	uint64_t done;
	int err;
};

static void *tmain(void *arg)
{
	struct tworker *w = arg;
	for (uint64_t i = 0; bench_now_s() < w->until; i++) {
		double t0 = bench_now_s();
		int got = w->op(w->ctx, w->idx, i);
		if (got < 0) {
			w->err = 1;
			break;
		}
		if (w->n == w->cap) {
			size_t cap = w->cap ? 2 * w->cap : 4096;
			float *l = realloc(w->lat, cap * sizeof(float));
			if (!l) {
				w->err = 1;
				break;
			}
			w->lat = l;
			w->cap = cap;
		}
		w->lat[w->n++] = (float)(bench_now_s() - t0);
		w->done += (uint64_t)got;
	}
	return NULL;
}

static int cmpf(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

int bench_timed(unsigned nt, double seconds,
		int (*op)(void *ctx, unsigned thread, uint64_t i), void *ctx,
		double *rate, double *p50_ms, double *p99_ms)
{
	struct tworker *w = calloc(nt ? nt : 1, sizeof(*w));
	if (!w)
		return -1;
	double t0 = bench_now_s();
	unsigned started = 0;
	for (unsigned i = 0; i < nt; i++) {
		w[i] = (struct tworker){
		    .idx = i, .op = op, .ctx = ctx, .until = t0 + seconds};
		if (pthread_create(&w[i].t, NULL, tmain, &w[i]) != 0)
			break;
		started++;
	}
	uint64_t done = 0;
	size_t nl = 0;
	int err = started < nt;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(w[i].t, NULL);
		done += w[i].done;
		nl += w[i].n;
		err |= w[i].err;
	}
	double el = bench_now_s() - t0;
	float *all = malloc((nl ? nl : 1) * sizeof(float));
	size_t o = 0;
	for (unsigned i = 0; i < started; i++) {
		if (all)
			memcpy(all + o, w[i].lat, w[i].n * sizeof(float));
		o += w[i].n;
		free(w[i].lat);
	}
	free(w);
	if (!all)
		return -1;
	qsort(all, nl, sizeof(float), cmpf);
	*rate = (double)done / el;
	*p50_ms = bench_percentile(all, nl, 0.50) * 1e3;
	*p99_ms = bench_percentile(all, nl, 0.99) * 1e3;
	free(all);
	return err ? -1 : 0;
}

size_t bench_parse_list(const char *s, size_t *out, size_t cap)
{
	size_t n = 0;
	while (s && *s && n < cap) {
		char *end;
		unsigned long v = strtoul(s, &end, 10);
		if (end == s || v == 0 || (*end && *end != ','))
			return 0;
		out[n++] = v;
		s = *end ? end + 1 : end;
	}
	return n;
}
