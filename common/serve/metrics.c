/* Counters and histograms for /metrics. See metrics.h. */
#include "metrics.h"

#include <errno.h>
#include <time.h>

const uint64_t sh_hist_bounds_us[SH_HIST_NBUCKETS] = {
    100,   250,	   500,	   1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

void sh_histogram_observe(sh_histogram *h, uint64_t us)
{
	int b = 0;
	while (b < SH_HIST_NBUCKETS && us > sh_hist_bounds_us[b])
		b++;
	atomic_fetch_add(&h->bucket[b], 1);
	atomic_fetch_add(&h->sum_us, us);
}

uint64_t sh_histogram_count(const sh_histogram *h)
{
	uint64_t n = 0;
	for (int b = 0; b <= SH_HIST_NBUCKETS; b++)
		n += atomic_load(&h->bucket[b]);
	return n;
}

void sh_histogram_write(const sh_histogram *h, FILE *f, const char *name,
			const char *labels)
{
	uint64_t cnt = sh_histogram_count(h);
	if (!cnt)
		return;
	const char *sep = labels && *labels ? "," : "";
	labels = labels ? labels : "";
	uint64_t run = 0;
	for (int b = 0; b < SH_HIST_NBUCKETS; b++) {
		run += atomic_load(&h->bucket[b]);
		fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
			(double)sh_hist_bounds_us[b] * 1e-6,
			(unsigned long long)run);
	}
	fprintf(f,
		"%s_bucket{%s%sle=\"+Inf\"} %llu\n"
		"%s_sum{%s} %.6f\n"
		"%s_count{%s} %llu\n",
		name, labels, sep, (unsigned long long)cnt, name, labels,
		(double)atomic_load(&h->sum_us) * 1e-6, name, labels,
		(unsigned long long)cnt);
}

void sh_size_histogram_observe(sh_size_histogram *h, uint64_t n)
{
	int b = 0;
	while (b < SH_SIZE_NBUCKETS && n > (1ull << b))
		b++;
	atomic_fetch_add(&h->bucket[b], 1);
	atomic_fetch_add(&h->sum, n);
}

void sh_size_histogram_write(const sh_size_histogram *h, FILE *f,
			     const char *name, const char *labels)
{
	const char *sep = labels && *labels ? "," : "";
	labels = labels ? labels : "";
	uint64_t run = 0;
	for (int b = 0; b <= SH_SIZE_NBUCKETS; b++) {
		run += atomic_load(&h->bucket[b]);
		if (b < SH_SIZE_NBUCKETS)
			fprintf(f, "%s_bucket{%s%sle=\"%llu\"} %llu\n", name,
				labels, sep, 1ull << b,
				(unsigned long long)run);
		else
			fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name,
				labels, sep, (unsigned long long)run);
	}
	fprintf(f, "%s_sum{%s} %llu\n%s_count{%s} %llu\n", name, labels,
		(unsigned long long)atomic_load(&h->sum), name, labels,
		(unsigned long long)run);
}

void sh_metric_head(FILE *f, const char *name, const char *type,
		    const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void sh_op_metrics_observe(sh_op_metrics *m, int code, uint64_t us)
{
	if (code < 0 || code >= SH_NCODES)
		code = SH_EINVAL;
	atomic_fetch_add(&m->requests[code], 1);
	sh_histogram_observe(&m->latency, us);
}

void sh_op_metrics_write(const sh_op_metrics *ops, int nops,
			 const char *const *names, const char *prefix, FILE *f)
{
	char name[96];
	snprintf(name, sizeof(name), "%srequests_total", prefix);
	sh_metric_head(f, name, "counter",
		       "Requests handled, by operation and result code.");
	for (int op = 0; op < nops; op++)
		for (int c = 0; c < SH_NCODES; c++) {
			uint64_t v = atomic_load(&ops[op].requests[c]);
			if (v)
				fprintf(f, "%s{op=\"%s\",code=\"%s\"} %llu\n",
					name, names[op], sh_errname(c),
					(unsigned long long)v);
		}
	snprintf(name, sizeof(name), "%srequest_duration_seconds", prefix);
	sh_metric_head(f, name, "histogram",
		       "Time from receipt to response, by operation.");
	for (int op = 0; op < nops; op++) {
		char labels[96];
		snprintf(labels, sizeof(labels), "op=\"%s\"", names[op]);
		sh_histogram_write(&ops[op].latency, f, name, labels);
	}
}

uint64_t sh_now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

void sh_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

void sh_cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
}

int sh_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t us)
{
	struct timespec ts = {.tv_sec = (time_t)(us / 1000000),
			      .tv_nsec = (long)(us % 1000000) * 1000};
	return pthread_cond_timedwait(cv, mu, &ts);
}
