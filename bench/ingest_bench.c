/*
 * shoal-bench ingest: shoal-ingest measured end to end, Kafka -> worker ->
 * router -> nodes, on a local cluster the benchmark starts itself: the
 * shoal-kafka-mock TEST Kafka cluster, --nodes shoal-node processes (with
 * --fsync), a shoal-router and shoal-ingest workers.
 *
 *   shoal-bench ingest [--records 100000] [--dim 128] [--partitions 8]
 *                      [--rates 1000,5000] [--seconds 10] [--nodes 3]
 *                      [--fsync always|batch|never] [--probe-ms 20]
 *                      [--ef N | --exact] [--ingest-flag NAME=VALUE ...]
 *                      [--only throughput|freshness] [--quick] [--keep]
 *
 * (1) Throughput: --records records (random --dim vectors with a payload)
 *     are produced to an 8-partition topic before the worker starts; then
 *     one shoal-ingest (its default settings unless --ingest-flag) runs
 *     until its /metrics counts every record written. records/s is given
 *     from the worker's start (consumer-group join included: the mock
 *     takes seconds to assign partitions) and from its first consumed
 *     record (join excluded); the count through the router is checked.
 * (2) Freshness, per --rates: a producer thread offers new records (fresh
 *     ids) at the rate for --seconds; every --probe-ms one of them is a
 *     probe: its time is taken just before it is produced, and a prober
 *     thread searches the router with the probe's own vector (k = 1, HNSW
 *     unless --exact; the 4 oldest pending probes in one batch request,
 *     at most one request per 5 ms) until the
 *     top hit is the probe's id. freshness = that search's answer - the
 *     produce time (so it includes the producer's linger of 5 ms, the
 *     worker's batching, the write and one search). Also: whether the
 *     worker kept up (records applied per second during the window, the
 *     backlog at its end and how long that took to drain) and the
 *     worker's own freshness histogram (Kafka timestamp -> write acked).
 *
 * One JSON object per measurement on stdout, a summary on stderr.
 * Processes are always stopped and their temporary directories removed
 * (unless --keep) on every path, SIGINT / SIGTERM included.
 */
#include "ingest_bench.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "kafkatest.h"
#include "proc.h"
#include "shoal.h"

#define COLL "bench"
#define TOPIC_TPUT "bench-tput"
#define TOPIC_FRESH "bench-fresh"
#define MAXNODES 16
#define MAXWFLAGS 32
#define MAXPENDING 4096
#define PROBE_BATCH 4	    /* probes searched per round, oldest first */
#define PROBE_ROUND_S 0.005 /* at most one round per 5 ms */
#define WARMUP 64
#define MOCK_RETENTION (5.0 * 1024 * 1024) /* bytes per partition */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

struct iopts {
	size_t records, dim, partitions, nodes;
	size_t rates[16], nrates;
	double seconds, probe_ms, probe_timeout_s;
	const char *fsync;
	uint32_t ef, ef_construction; /* 0: the server's default */
	bool int8;		      /* int8 storage */
	bool exact, keep, tput, fresh;
	const char *wflags[2 * MAXWFLAGS];
	size_t nwflags;
	const char *argv0;
};

struct env {
	const struct iopts *o;
	kt_mock mock;
	struct bench_proc node[MAXNODES], router;
	size_t nnodes;
	bool router_up;
	shoal_client *cl;
	char ingest_bin[4200];
	uint64_t next_id; /* first unused point id */
};

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

/* ---- Records ------------------------------------------------------------- */

static uint64_t xs(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void rand_vec(uint64_t *s, float *v, size_t dim)
{
	for (size_t j = 0; j < dim; j++)
		v[j] = (float)((double)(xs(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* The JSON value of an upsert of id (floats printed to round-trip exactly,
 * so a probe's own vector finds it at distance 0). */
static int fmt_record(char *buf, size_t cap, uint64_t id, const float *v,
		      size_t dim)
{
	int len = snprintf(buf, cap,
			   "{\"op\":\"upsert\",\"collection\":\"" COLL
			   "\",\"id\":%" PRIu64 ",\"version\":1,\"vector\":[",
			   id);
	for (size_t j = 0; j < dim && (size_t)len < cap; j++)
		len += snprintf(buf + len, cap - (size_t)len, "%s%.9g",
				j ? "," : "", (double)v[j]);
	if ((size_t)len < cap)
		len += snprintf(buf + len, cap - (size_t)len,
				"],\"payload\":{\"category\":\"c%u\","
				"\"price\":%u}}",
				(unsigned)(id % 10), (unsigned)(id % 500 + 5));
	return (size_t)len < cap ? len : -1;
}

static size_t rec_cap(size_t dim)
{
	return dim * 18 + 256;
}

static int produce_one(rd_kafka_t *p, const char *topic, uint64_t id,
		       const float *v, size_t dim, char *buf)
{
	char key[32];
	int len = fmt_record(buf, rec_cap(dim), id, v, dim);
	int kl = snprintf(key, sizeof(key), "%" PRIu64, id);
	if (len < 0)
		return -1;
	return kt_produce(p, topic, RD_KAFKA_PARTITION_UA, key, (size_t)kl, buf,
			  (size_t)len, NULL);
}

/* ---- The worker's /metrics ------------------------------------------------
 */

#define HB 64
struct hist {
	double le[HB], cum[HB];
	size_t n;
	double sum, count;
};

struct wmetrics {
	double processed; /* shoal_ingest_records_total, every op and outcome */
	double consumed, dead, batches, retries;
	struct hist fresh, write, bsize;
};

static bool starts(const char *l, const char *p)
{
	return !strncmp(l, p, strlen(p));
}

/* One line of a histogram called name into h. */
static void hist_line(struct hist *h, const char *name, const char *l, double v)
{
	size_t nl = strlen(name);
	if (strncmp(l, name, nl))
		return;
	const char *r = l + nl;
	if (starts(r, "_bucket{")) {
		const char *le = strstr(r, "le=\"");
		if (le && h->n < HB) {
			h->le[h->n] = strtod(le + 4, NULL);
			h->cum[h->n++] = v;
		}
	} else if (starts(r, "_sum")) {
		h->sum = v;
	} else if (starts(r, "_count")) {
		h->count = v;
	}
}

static int scrape(const char *url, struct wmetrics *m)
{
	memset(m, 0, sizeof(*m));
	char *body = bench_http_get(url, "/metrics");
	if (!body)
		return -1;
	for (char *l = body; l && *l;) {
		char *nl = strchr(l, '\n');
		if (nl)
			*nl = 0;
		const char *sp = strrchr(l, ' ');
		if (*l != '#' && sp) {
			double v = strtod(sp + 1, NULL);
			if (starts(l, "shoal_ingest_records_total{"))
				m->processed += v;
			else if (starts(l, "shoal_ingest_consumed_total "))
				m->consumed = v;
			else if (starts(l, "shoal_ingest_dead_letters_total "))
				m->dead = v;
			else if (starts(l, "shoal_ingest_batches_total "))
				m->batches = v;
			else if (starts(l, "shoal_ingest_write_retries_total "))
				m->retries = v;
			hist_line(&m->fresh, "shoal_ingest_freshness_seconds",
				  l, v);
			hist_line(&m->write,
				  "shoal_ingest_write_duration_seconds", l, v);
			hist_line(&m->bsize, "shoal_ingest_batch_size", l, v);
		}
		l = nl ? nl + 1 : NULL;
	}
	free(body);
	return 0;
}

/* b - a (a histogram that was still empty is not written at all). */
static struct hist hist_sub(const struct hist *b, const struct hist *a)
{
	struct hist d = *b;
	if (a->n == b->n)
		for (size_t i = 0; i < b->n; i++)
			d.cum[i] -= a->cum[i];
	d.sum -= a->sum;
	d.count -= a->count;
	return d;
}

/* Quantile q of a cumulative histogram, interpolated inside its bucket as
 * Prometheus' histogram_quantile does; NAN when empty. */
static double hist_q(const struct hist *h, double q)
{
	if (h->count <= 0 || !h->n)
		return NAN;
	double target = q * h->count, lo = 0, clo = 0;
	for (size_t i = 0; i < h->n; i++) {
		if (h->cum[i] >= target) {
			if (isinf(h->le[i]))
				return lo;
			double span = h->cum[i] - clo;
			return lo + (h->le[i] - lo) *
					(span > 0 ? (target - clo) / span : 1);
		}
		lo = h->le[i];
		clo = h->cum[i];
	}
	return lo;
}

static double hist_mean(const struct hist *h)
{
	return h->count > 0 ? h->sum / h->count : NAN;
}

/* A number or null for JSON. */
static const char *jnum(char *buf, size_t cap, double v, int prec)
{
	if (isnan(v) || isinf(v))
		snprintf(buf, cap, "null");
	else
		snprintf(buf, cap, "%.*f", prec, v);
	return buf;
}

/* ---- The cluster --------------------------------------------------------- */

static void env_stop(struct env *e)
{
	if (e->cl) {
		shoal_close(e->cl);
		e->cl = NULL;
	}
	if (e->router_up) {
		bench_proc_stop(&e->router, e->o->keep);
		e->router_up = false;
	}
	while (e->nnodes)
		bench_proc_stop(&e->node[--e->nnodes], e->o->keep);
	kt_mock_stop(&e->mock);
}

static int env_start(struct env *e)
{
	const struct iopts *o = e->o;
	char mockbin[4200], nodebin[4200], routerbin[4200];
	bench_sibling(o->argv0, "deploy/kafka-mock/shoal-kafka-mock", mockbin,
		      sizeof(mockbin));
	bench_sibling(o->argv0, "node/shoal-node", nodebin, sizeof(nodebin));
	bench_sibling(o->argv0, "router/shoal-router", routerbin,
		      sizeof(routerbin));
	bench_sibling(o->argv0, "ingest/shoal-ingest", e->ingest_bin,
		      sizeof(e->ingest_bin));
	const char *need[] = {mockbin, nodebin, routerbin, e->ingest_bin};
	for (size_t i = 0; i < 4; i++)
		if (access(need[i], X_OK)) {
			fprintf(stderr, "ingest: %s: %s\n", need[i],
				strerror(errno));
			return -1;
		}
	char t1[64], t2[64];
	snprintf(t1, sizeof(t1), TOPIC_TPUT ":%zu", o->partitions);
	snprintf(t2, sizeof(t2), TOPIC_FRESH ":%zu", o->partitions);
	const char *topics[] = {t1, t2, NULL};
	/* from the main thread: the mock dies with the thread that made it */
	if (kt_mock_start(&e->mock, mockbin, 3, topics)) {
		fprintf(stderr, "ingest: cannot start %s\n", mockbin);
		return -1;
	}
	char list[MAXNODES * 660] = "";
	const char *nx[] = {"--fsync", o->fsync, NULL};
	for (; e->nnodes < o->nodes; e->nnodes++) {
		if (bench_proc_start(&e->node[e->nnodes], nodebin, nx))
			return -1;
		strcat(list, e->nnodes ? "," : "");
		strcat(list, e->node[e->nnodes].url);
	}
	const char *rx[] = {"--nodes", list, NULL};
	if (bench_proc_start(&e->router, routerbin, rx))
		return -1;
	e->router_up = true;
	if (shoal_connect(e->router.url, 60000, &e->cl)) {
		fprintf(stderr, "ingest: connect %s: %s\n", e->router.url,
			shoal_last_error());
		return -1;
	}
	shoal_payload_index ix[] = {{"category", SHOAL_PAYLOAD_KEYWORD},
				    {"price", SHOAL_PAYLOAD_FLOAT}};
	shoal_collection_config cfg = {.name = COLL,
				       .dim = (uint32_t)o->dim,
				       .metric = SHOAL_METRIC_L2,
				       .storage = o->int8 ? SHOAL_STORAGE_INT8
							  : SHOAL_STORAGE_F32,
				       .ef_construction = o->ef_construction,
				       .indexes = ix,
				       .n_indexes = 2};
	if (shoal_collection_create(e->cl, &cfg)) {
		fprintf(stderr, "ingest: create " COLL ": %s\n",
			shoal_last_error());
		return -1;
	}
	return 0;
}

/* Starts a shoal-ingest on topic as group: the URL of its /metrics in
 * w->url. */
static int start_worker(struct env *e, struct bench_proc *w, const char *topic)
{
	const char *args[16 + 2 * MAXWFLAGS];
	size_t a = 0;
	args[a++] = "--brokers";
	args[a++] = e->mock.bootstrap;
	args[a++] = "--topic";
	args[a++] = topic;
	args[a++] = "--group";
	args[a++] = topic;
	args[a++] = "--router";
	args[a++] = e->router.url;
	args[a++] = "--metrics";
	args[a++] = "127.0.0.1:0";
	for (size_t i = 0; i < e->o->nwflags; i++)
		args[a++] = e->o->wflags[i];
	args[a] = NULL;
	return bench_proc_start_args(w, e->ingest_bin, args, "metrics");
}

/* The worker's counters and gauges (no histograms) on stderr. */
static void dump_state(const char *url)
{
	char *body = bench_http_get(url, "/metrics");
	for (char *l = body; l && *l;) {
		char *nl = strchr(l, '\n');
		if (nl)
			*nl = 0;
		if (*l != '#' && !strstr(l, "_bucket{") &&
		    !strstr(l, "_seconds") && !strstr(l, "batch_size"))
			fprintf(stderr, "  %s\n", l);
		l = nl ? nl + 1 : NULL;
	}
	free(body);
}

/* Polls the worker until it processed `want` records in total; gives up
 * after 60 s without progress. t_first / t_consumed (may be NULL; only
 * set while 0) get the time of the first record processed / consumed. */
static int await_processed(const struct bench_proc *w, double want,
			   double poll_s, double *t_first, double *t_consumed,
			   struct wmetrics *m, atomic_uint_fast64_t *consumed)
{
	double last = -1, t_last = bench_now_s();
	for (;;) {
		if (g_stop) {
			fprintf(stderr, "ingest: interrupted\n");
			return -1;
		}
		double t = bench_now_s();
		if (scrape(w->url, m)) {
			fprintf(stderr, "ingest: cannot read %s/metrics\n",
				w->url);
			return -1;
		}
		if (consumed)
			atomic_store(consumed, (uint_fast64_t)m->consumed);
		if (t_consumed && !*t_consumed && m->consumed > 0)
			*t_consumed = t;
		if (t_first && !*t_first && m->processed > 0)
			*t_first = t;
		if (m->processed >= want)
			return 0;
		if (m->processed != last) {
			last = m->processed;
			t_last = t;
		} else if (t - t_last > 60) {
			fprintf(stderr,
				"ingest: the worker is stuck at %.0f of %.0f "
				"records (see %s/log); its state:\n",
				m->processed, want, w->dir);
			dump_state(w->url);
			return -1;
		}
		sleep_s(poll_s);
	}
}

/* ---- (1) Throughput -------------------------------------------------------
 */

/* Produces records first .. first + n - 1 while the worker consumes, at
 * most cap ahead of what it consumed. */
struct feeder {
	rd_kafka_t *p;
	size_t dim;
	uint64_t first, n, cap;
	atomic_uint_fast64_t consumed; /* by the worker, from its /metrics */
	atomic_bool stop;
	int err;
};

static void *feeder_main(void *arg)
{
	struct feeder *f = arg;
	uint64_t seed = 0x452821e638d01377ull;
	float *v = malloc(f->dim * sizeof(float));
	char *buf = malloc(rec_cap(f->dim));
	uint64_t pre = f->cap, i = 0;
	if (!v || !buf)
		f->err = 1;
	while (!f->err && i < f->n && !atomic_load(&f->stop) && !g_stop) {
		if (pre + i >= atomic_load(&f->consumed) + f->cap) {
			rd_kafka_poll(f->p, 1);
			continue;
		}
		for (int k = 0; k < 256 && i < f->n; k++, i++) {
			rand_vec(&seed, v, f->dim);
			if (produce_one(f->p, TOPIC_TPUT, f->first + i, v,
					f->dim, buf)) {
				fprintf(stderr, "ingest: produce failed\n");
				f->err = 1;
				break;
			}
		}
		rd_kafka_poll(f->p, 0);
	}
	if (!f->err && i == f->n && kt_flush(f->p, 300000)) {
		fprintf(stderr, "ingest: feeding the topic failed\n");
		f->err = 1;
	}
	free(v);
	free(buf);
	return NULL;
}

static int run_throughput(struct env *e)
{
	const struct iopts *o = e->o;
	char err[256];
	int rc = -1;
	rd_kafka_t *p = kt_producer_new(e->mock.bootstrap, err, sizeof(err));
	if (!p) {
		fprintf(stderr, "ingest: producer: %s\n", err);
		return -1;
	}
	float *v = malloc(o->dim * sizeof(float));
	char *buf = malloc(rec_cap(o->dim));
	struct bench_proc w = {0};
	bool w_up = false, f_up = false;
	struct feeder fd = {0};
	pthread_t ft;
	if (!v || !buf)
		goto out;
	uint64_t seed = 0x243f6a8885a308d3ull, first = e->next_id;
	/* The mock keeps 5 MiB per partition (librdkafka's mock drops the
	 * oldest message sets past that): pre-fill at most 60 % of it, and
	 * feed the rest while the worker runs, ahead of it by at most as
	 * much (the producer is several times faster than the worker). */
	rand_vec(&seed, v, o->dim);
	int rs = fmt_record(buf, rec_cap(o->dim), first, v, o->dim);
	size_t pre = (size_t)((double)o->partitions * MOCK_RETENTION * 0.6 /
			      (double)(rs + 100));
	if (pre > o->records)
		pre = o->records;
	double tp = bench_now_s();
	for (size_t i = 0; i < pre; i++) {
		rand_vec(&seed, v, o->dim);
		if (g_stop ||
		    produce_one(p, TOPIC_TPUT, first + i, v, o->dim, buf)) {
			fprintf(stderr, "ingest: produce failed\n");
			goto out;
		}
		if (!(i & 255))
			rd_kafka_poll(p, 0);
	}
	if (kt_flush(p, 300000)) {
		fprintf(stderr, "ingest: producing %zu records failed\n", pre);
		goto out;
	}
	e->next_id += o->records;
	tp = bench_now_s() - tp;
	fprintf(stderr,
		"ingest: produced %zu of %zu records to %s in %.1f s before "
		"the worker starts\n",
		pre, o->records, TOPIC_TPUT, tp);

	double t0 = bench_now_s(), t_first = 0, t_cons = 0;
	if (start_worker(e, &w, TOPIC_TPUT))
		goto out;
	w_up = true;
	double t_ready = bench_now_s();
	struct wmetrics m;
	if (pre < o->records) {
		fd.p = p;
		fd.dim = o->dim;
		fd.first = first + pre;
		fd.n = o->records - pre;
		fd.cap = pre;
		atomic_store(&fd.consumed, 0);
		if (pthread_create(&ft, NULL, feeder_main, &fd)) {
			fprintf(stderr, "ingest: cannot start the feeder\n");
			goto out;
		}
		f_up = true;
	}
	if (await_processed(&w, (double)o->records, 0.01, &t_first, &t_cons, &m,
			    &fd.consumed))
		goto out;
	if (f_up) {
		pthread_join(ft, NULL);
		f_up = false;
		if (fd.err)
			goto out;
	}
	double t_done = bench_now_s();
	uint64_t cnt = 0;
	if (shoal_count(e->cl, COLL, NULL, true, &cnt, NULL)) {
		fprintf(stderr, "ingest: count: %s\n", shoal_last_error());
		goto out;
	}
	double total = t_done - t0, after = t_done - t_cons;
	double rate = (double)o->records / total;
	double rate_after = (double)o->records / after;
	char b[8][32];
	printf("{\"bench\":\"ingest\",\"op\":\"throughput\",\"nodes\":%zu,"
	       "\"fsync\":\"%s\",\"storage\":\"%s\",\"ef_construction\":%u,"
	       "\"dim\":%zu,\"partitions\":%zu,"
	       "\"records\":%zu,\"prefilled\":%zu,\"count\":%" PRIu64
	       ",\"dead_letters\":%.0f,"
	       "\"seconds\":%.3f,\"start_s\":%.3f,\"join_s\":%.3f,"
	       "\"first_applied_s\":%.3f,\"seconds_after_join\":%.3f,"
	       "\"records_per_s\":%.1f,\"records_per_s_after_join\":%.1f,"
	       "\"batches\":%.0f,\"batch_mean\":%s,\"batch_p50\":%s,"
	       "\"write_mean_ms\":%s,\"write_p50_ms\":%s,\"write_p99_ms\":%s,"
	       "\"write_retries\":%.0f,\"worker_freshness_p50_ms\":%s,"
	       "\"worker_freshness_p99_ms\":%s}\n",
	       e->nnodes, o->fsync, o->int8 ? "int8" : "f32",
	       o->ef_construction, o->dim, o->partitions, o->records, pre, cnt,
	       m.dead, total, t_ready - t0, t_cons - t0, t_first - t0, after,
	       rate, rate_after, m.batches,
	       jnum(b[0], 32, hist_mean(&m.bsize), 1),
	       jnum(b[1], 32, hist_q(&m.bsize, 0.5), 1),
	       jnum(b[2], 32, hist_mean(&m.write) * 1e3, 2),
	       jnum(b[3], 32, hist_q(&m.write, 0.5) * 1e3, 2),
	       jnum(b[4], 32, hist_q(&m.write, 0.99) * 1e3, 2), m.retries,
	       jnum(b[5], 32, hist_q(&m.fresh, 0.5) * 1e3, 1),
	       jnum(b[6], 32, hist_q(&m.fresh, 0.99) * 1e3, 1));
	fflush(stdout);
	fprintf(stderr,
		"ingest: throughput: %zu records (%zu-d, %zu partitions, "
		"%zu nodes, fsync %s) in %.2f s: %.0f records/s; after the "
		"group join (%.2f s): %.0f records/s; %.0f batches of %.0f "
		"on average, write p50 %.1f ms p99 %.1f ms; count %" PRIu64
		"\n",
		o->records, o->dim, o->partitions, e->nnodes, o->fsync, total,
		rate, t_cons - t0, rate_after, m.batches, hist_mean(&m.bsize),
		hist_q(&m.write, 0.5) * 1e3, hist_q(&m.write, 0.99) * 1e3, cnt);
	if (cnt != o->records || m.dead > 0) {
		fprintf(stderr,
			"ingest: expected %zu points and no dead letters\n",
			o->records);
		goto out;
	}
	rc = 0;
out:
	if (f_up) {
		atomic_store(&fd.stop, true);
		pthread_join(ft, NULL);
	}
	if (w_up)
		bench_proc_stop(&w, o->keep);
	kt_producer_destroy(p);
	free(v);
	free(buf);
	return rc;
}

/* ---- (2) Freshness --------------------------------------------------------
 */

struct probe {
	uint64_t id;
	double t;
	float *v;
};

struct fresh {
	struct env *e;
	rd_kafka_t *p;
	double rate, seconds, probe_s;
	/* producer's */
	uint64_t produced;
	double t_start, t_end;
	int perr;
	/* shared with the prober, under mu */
	pthread_mutex_t mu;
	struct probe pending[MAXPENDING];
	size_t npending;
	float *found_ms;
	size_t nfound, cap_found;
	uint64_t timeouts, late_found, skipped;
	atomic_bool producing;
	int serr;
};

static void *producer_main(void *arg)
{
	struct fresh *f = arg;
	const struct iopts *o = f->e->o;
	uint64_t seed = 0x13198a2e03707344ull ^ (uint64_t)f->rate;
	float *v = malloc(o->dim * sizeof(float));
	char *buf = malloc(rec_cap(o->dim));
	if (!v || !buf) {
		f->perr = 1;
		goto out;
	}
	f->t_start = bench_now_s();
	double next_probe = f->t_start;
	uint64_t i = 0;
	while (!g_stop) {
		double t = bench_now_s(), el = t - f->t_start;
		if (el >= f->seconds)
			break;
		uint64_t due = (uint64_t)(el * f->rate) + 1;
		for (; i < due; i++) {
			uint64_t id = f->e->next_id++;
			rand_vec(&seed, v, o->dim);
			double tp = bench_now_s();
			if (tp >= next_probe) {
				next_probe += f->probe_s;
				if (next_probe < tp)
					next_probe = tp + f->probe_s;
				float *pv = malloc(o->dim * sizeof(float));
				pthread_mutex_lock(&f->mu);
				if (pv && f->npending < MAXPENDING) {
					memcpy(pv, v, o->dim * sizeof(float));
					f->pending[f->npending++] =
					    (struct probe){id, tp, pv};
				} else {
					free(pv);
					f->skipped++;
				}
				pthread_mutex_unlock(&f->mu);
			}
			if (produce_one(f->p, TOPIC_FRESH, id, v, o->dim,
					buf)) {
				fprintf(stderr, "ingest: produce failed\n");
				f->perr = 1;
				goto out;
			}
			if (!(i & 63))
				rd_kafka_poll(f->p, 0);
		}
		rd_kafka_poll(f->p, 0);
		double wait =
		    (double)i / f->rate - (bench_now_s() - f->t_start);
		if (wait > 0)
			sleep_s(wait < 0.001 ? wait : 0.001);
	}
	f->produced = i;
out:
	f->t_end = bench_now_s();
	atomic_store(&f->producing, false);
	free(v);
	free(buf);
	return NULL;
}

static void found_add(struct fresh *f, double ms)
{
	if (f->nfound == f->cap_found) {
		size_t nc = f->cap_found ? f->cap_found * 2 : 1024;
		float *n = realloc(f->found_ms, nc * sizeof(float));
		if (!n)
			return;
		f->found_ms = n;
		f->cap_found = nc;
	}
	f->found_ms[f->nfound++] = (float)ms;
}

static bool top_is(const shoal_query_result *q, uint64_t id)
{
	return q->n_hits && q->hits[0].id.kind == SHOAL_ID_NUM &&
	       q->hits[0].id.num == id;
}

static void *prober_main(void *arg)
{
	struct fresh *f = arg;
	const struct iopts *o = f->e->o;
	shoal_client *cl = NULL;
	size_t dim = o->dim;
	float *vecs = malloc(MAXPENDING * dim * sizeof(float));
	uint64_t *ids = malloc(MAXPENDING * sizeof(uint64_t));
	if (!vecs || !ids ||
	    shoal_connect(f->e->router.url, 10000, &cl) != SHOAL_OK) {
		fprintf(stderr, "ingest: prober: %s\n",
			vecs && ids ? shoal_last_error() : "out of memory");
		f->serr = 1;
		goto out;
	}
	shoal_search_options so = SHOAL_SEARCH_OPTIONS_INIT;
	so.k = 1;
	so.ef = o->ef;
	so.exact = o->exact;
	shoal_search_options ex = so;
	ex.exact = true;
	for (;;) {
		bool producing = atomic_load(&f->producing);
		/* A bounded probe load: the oldest PROBE_BATCH pending probes
		 * every PROBE_ROUND_S (a system that falls behind must not
		 * also be flooded by the measurement's searches; the newer
		 * probes wait their turn, which can only overstate their
		 * freshness, and only when it is already behind). */
		double round = bench_now_s();
		pthread_mutex_lock(&f->mu);
		size_t n =
		    f->npending < PROBE_BATCH ? f->npending : PROBE_BATCH;
		for (size_t i = 0; i < n; i++) {
			ids[i] = f->pending[i].id;
			memcpy(vecs + i * dim, f->pending[i].v,
			       dim * sizeof(float));
		}
		pthread_mutex_unlock(&f->mu);
		if (!n) {
			if (!producing || g_stop)
				break;
			sleep_s(0.0005);
			continue;
		}
		shoal_search_result *r = NULL;
		if (shoal_search_batch(cl, COLL, vecs, n, dim, &so, &r)) {
			fprintf(stderr, "ingest: prober: search: %s\n",
				shoal_last_error());
			f->serr = 1;
			break;
		}
		double t = bench_now_s();
		/* The pending list only grows at its end while we search:
		 * its first n entries are still ids[0..n). */
		pthread_mutex_lock(&f->mu);
		size_t keep = 0;
		for (size_t i = 0; i < f->npending; i++) {
			struct probe *pr = &f->pending[i];
			bool done = false;
			if (i < n && top_is(&r->queries[i], pr->id)) {
				found_add(f, (t - pr->t) * 1e3);
				done = true;
			} else if (t - pr->t > o->probe_timeout_s) {
				/* not found in time: is it there at all? */
				shoal_search_result *x = NULL;
				f->timeouts++;
				if (!shoal_search(cl, COLL, pr->v, dim, &ex,
						  &x) &&
				    top_is(&x->queries[0], pr->id))
					f->late_found++;
				shoal_search_result_free(x);
				done = true;
			}
			if (done)
				free(pr->v);
			else
				f->pending[keep++] = *pr;
		}
		f->npending = keep;
		pthread_mutex_unlock(&f->mu);
		shoal_search_result_free(r);
		if (g_stop)
			break;
		double spent = bench_now_s() - round;
		sleep_s(spent < PROBE_ROUND_S ? PROBE_ROUND_S - spent : 0.0005);
	}
out:
	pthread_mutex_lock(&f->mu);
	for (size_t i = 0; i < f->npending; i++)
		free(f->pending[i].v);
	f->npending = 0;
	pthread_mutex_unlock(&f->mu);
	shoal_close(cl);
	free(vecs);
	free(ids);
	return NULL;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* One offered rate against the running worker w, which has processed
 * *expect records so far. */
static int fresh_rate(struct env *e, struct bench_proc *w, rd_kafka_t *p,
		      double rate, double *expect)
{
	const struct iopts *o = e->o;
	struct fresh *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	int rc = -1;
	f->e = e;
	f->p = p;
	f->rate = rate;
	f->seconds = o->seconds;
	f->probe_s = o->probe_ms / 1e3;
	pthread_mutex_init(&f->mu, NULL);
	atomic_store(&f->producing, true);
	struct wmetrics m0, m1, m2;
	if (scrape(w->url, &m0)) {
		fprintf(stderr, "ingest: cannot read %s/metrics\n", w->url);
		goto out;
	}
	pthread_t pt, st;
	if (pthread_create(&st, NULL, prober_main, f))
		goto out;
	if (pthread_create(&pt, NULL, producer_main, f)) {
		atomic_store(&f->producing, false);
		pthread_join(st, NULL);
		goto out;
	}
	pthread_join(pt, NULL);
	int m1_err = scrape(w->url, &m1);
	double window = f->t_end - f->t_start;
	*expect += (double)f->produced;
	int derr = 0;
	double drain = 0;
	if (!f->perr && !m1_err) {
		double t = bench_now_s();
		derr =
		    kt_flush(p, 60000) ||
		    await_processed(w, *expect, 0.005, NULL, NULL, &m2, NULL);
		drain = bench_now_s() - t;
	}
	pthread_join(st, NULL);
	if (f->perr || f->serr || m1_err || derr || g_stop ||
	    scrape(w->url, &m2)) {
		fprintf(stderr, "ingest: freshness at %.0f/s failed\n", rate);
		goto out;
	}
	qsort(f->found_ms, f->nfound, sizeof(float), cmp_float);
	double p50 =
	    f->nfound ? bench_percentile(f->found_ms, f->nfound, 0.5) : NAN;
	double p99 =
	    f->nfound ? bench_percentile(f->found_ms, f->nfound, 0.99) : NAN;
	double mx = f->nfound ? f->found_ms[f->nfound - 1] : NAN;
	double applied = m1.processed - m0.processed;
	double lag = (*expect) - m1.processed;
	double app_rate = applied / window;
	/* kept up: the backlog left at the window's end (records still in
	 * the pipeline, about rate x freshness when keeping up) cleared
	 * within a second; a worker slower than the offered rate leaves a
	 * backlog growing with the window. achieved: what it delivered over
	 * the window and the drain. */
	bool kept = drain <= 1.0;
	double achieved = (double)f->produced / (window + drain);
	struct hist hf = hist_sub(&m2.fresh, &m0.fresh);
	struct hist hw = hist_sub(&m2.write, &m0.write);
	struct hist hb = hist_sub(&m2.bsize, &m0.bsize);
	char b[12][32];
	printf(
	    "{\"bench\":\"ingest\",\"op\":\"freshness\",\"nodes\":%zu,"
	    "\"fsync\":\"%s\",\"storage\":\"%s\",\"ef_construction\":%u,"
	    "\"dim\":%zu,\"partitions\":%zu,"
	    "\"search\":\"%s\",\"ef\":%u,\"offered_per_s\":%.0f,"
	    "\"seconds\":%.3f,\"produced\":%" PRIu64
	    ",\"produced_per_s\":%.1f,\"applied_per_s\":%.1f,"
	    "\"achieved_per_s\":%.1f,"
	    "\"lag_at_end\":%.0f,\"drain_s\":%.3f,\"kept_up\":%s,"
	    "\"probes\":%zu,\"probe_timeouts\":%" PRIu64
	    ",\"found_after_timeout\":%" PRIu64 ",\"p50_ms\":%s,\"p99_ms\":%s,"
	    "\"max_ms\":%s,\"worker_freshness_p50_ms\":%s,"
	    "\"worker_freshness_p99_ms\":%s,\"batches\":%.0f,"
	    "\"batch_mean\":%s,\"write_mean_ms\":%s,\"write_p50_ms\":%s,"
	    "\"write_p99_ms\":%s,\"write_retries\":%.0f}\n",
	    e->nnodes, o->fsync, o->int8 ? "int8" : "f32", o->ef_construction,
	    o->dim, o->partitions, o->exact ? "exact" : "hnsw", o->ef, rate,
	    window, f->produced, (double)f->produced / window, app_rate,
	    achieved, lag, drain, kept ? "true" : "false",
	    f->nfound + (size_t)f->timeouts, f->timeouts, f->late_found,
	    jnum(b[0], 32, p50, 2), jnum(b[1], 32, p99, 2),
	    jnum(b[2], 32, mx, 2), jnum(b[3], 32, hist_q(&hf, 0.5) * 1e3, 1),
	    jnum(b[4], 32, hist_q(&hf, 0.99) * 1e3, 1), m2.batches - m0.batches,
	    jnum(b[5], 32, hist_mean(&hb), 1),
	    jnum(b[6], 32, hist_mean(&hw) * 1e3, 2),
	    jnum(b[7], 32, hist_q(&hw, 0.5) * 1e3, 2),
	    jnum(b[8], 32, hist_q(&hw, 0.99) * 1e3, 2),
	    m2.retries - m0.retries);
	fflush(stdout);
	fprintf(stderr,
		"ingest: freshness at %.0f records/s offered (%.0f produced, "
		"%.0f applied per s, backlog %.0f drained in %.2f s: %s): "
		"%zu probes, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %" PRIu64
		" not found in %.0f s; worker's histogram p50 %.1f ms, p99 "
		"%.1f ms; batches of %.1f, write p50 %.1f ms p99 %.1f ms\n",
		rate, (double)f->produced / window, app_rate, lag, drain,
		kept ? "kept up" : "fell behind", f->nfound, p50, p99, mx,
		f->timeouts, o->probe_timeout_s, hist_q(&hf, 0.5) * 1e3,
		hist_q(&hf, 0.99) * 1e3, hist_mean(&hb), hist_q(&hw, 0.5) * 1e3,
		hist_q(&hw, 0.99) * 1e3);
	rc = 0;
out:
	pthread_mutex_destroy(&f->mu);
	free(f->found_ms);
	free(f);
	return rc;
}

static int run_freshness(struct env *e)
{
	const struct iopts *o = e->o;
	char err[256];
	int rc = -1;
	struct bench_proc w = {0};
	bool w_up = false;
	rd_kafka_t *p = kt_producer_new(e->mock.bootstrap, err, sizeof(err));
	if (!p) {
		fprintf(stderr, "ingest: producer: %s\n", err);
		return -1;
	}
	float *v = malloc(o->dim * sizeof(float));
	char *buf = malloc(rec_cap(o->dim));
	if (!v || !buf)
		goto out;
	if (start_worker(e, &w, TOPIC_FRESH))
		goto out;
	w_up = true;
	/* warm up: the worker has joined its group and written once */
	uint64_t seed = 0xa4093822299f31d0ull;
	for (int i = 0; i < WARMUP; i++) {
		rand_vec(&seed, v, o->dim);
		if (produce_one(p, TOPIC_FRESH, e->next_id++, v, o->dim, buf))
			goto out;
	}
	struct wmetrics m;
	double expect = WARMUP;
	if (kt_flush(p, 60000) ||
	    await_processed(&w, expect, 0.01, NULL, NULL, &m, NULL))
		goto out;
	for (size_t r = 0; r < o->nrates; r++)
		if (fresh_rate(e, &w, p, (double)o->rates[r], &expect))
			goto out;
	rc = 0;
out:
	if (w_up)
		bench_proc_stop(&w, o->keep);
	kt_producer_destroy(p);
	free(v);
	free(buf);
	return rc;
}

/* ---- Command line ---------------------------------------------------------
 */

static void ingest_usage(void)
{
	fputs("usage: shoal-bench ingest [--records 100000] [--dim 128]\n"
	      "  [--partitions 8] [--rates 1000,5000] [--seconds 10]\n"
	      "  [--nodes 3] [--fsync always|batch|never] [--probe-ms 20]\n"
	      "  [--probe-timeout-s 10] [--ef N | --exact]\n"
	      "  [--storage f32|int8] [--ef-construction N (0: the server's)]\n"
	      "  [--ingest-flag NAME=VALUE (repeatable: --NAME VALUE for\n"
	      "   shoal-ingest, e.g. batch-size=1000)]\n"
	      "  [--only throughput|freshness] [--quick] [--keep]\n"
	      "--quick: 5000 records, rates 500, 2 s (a smoke test).\n",
	      stderr);
}

static int parse(int argc, char **argv, struct iopts *o)
{
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		bool used = true;
		if (!strcmp(a, "--quick")) {
			o->records = 5000;
			o->nrates = bench_parse_list("500", o->rates, 16);
			o->seconds = 2;
			used = false;
		} else if (!strcmp(a, "--keep")) {
			o->keep = true;
			used = false;
		} else if (!strcmp(a, "--exact")) {
			o->exact = true;
			used = false;
		} else if (!val) {
			fprintf(stderr, "ingest: %s needs a value\n", a);
			return -1;
		} else if (!strcmp(a, "--records")) {
			o->records = strtoul(val, NULL, 10);
		} else if (!strcmp(a, "--dim")) {
			o->dim = strtoul(val, NULL, 10);
		} else if (!strcmp(a, "--partitions")) {
			o->partitions = strtoul(val, NULL, 10);
		} else if (!strcmp(a, "--nodes")) {
			o->nodes = strtoul(val, NULL, 10);
		} else if (!strcmp(a, "--rates")) {
			o->nrates = bench_parse_list(val, o->rates, 16);
			if (!o->nrates)
				goto bad;
		} else if (!strcmp(a, "--seconds")) {
			o->seconds = atof(val);
		} else if (!strcmp(a, "--probe-ms")) {
			o->probe_ms = atof(val);
		} else if (!strcmp(a, "--probe-timeout-s")) {
			o->probe_timeout_s = atof(val);
		} else if (!strcmp(a, "--ef")) {
			o->ef = (uint32_t)strtoul(val, NULL, 10);
		} else if (!strcmp(a, "--ef-construction")) {
			o->ef_construction = (uint32_t)strtoul(val, NULL, 10);
		} else if (!strcmp(a, "--storage")) {
			if (strcmp(val, "f32") && strcmp(val, "int8"))
				goto bad;
			o->int8 = !strcmp(val, "int8");
		} else if (!strcmp(a, "--fsync")) {
			if (strcmp(val, "always") && strcmp(val, "batch") &&
			    strcmp(val, "never"))
				goto bad;
			o->fsync = val;
		} else if (!strcmp(a, "--only")) {
			o->tput = !strcmp(val, "throughput");
			o->fresh = !strcmp(val, "freshness");
			if (!o->tput && !o->fresh)
				goto bad;
		} else if (!strcmp(a, "--ingest-flag")) {
			static char names[MAXWFLAGS][128];
			const char *eq = strchr(val, '=');
			if (!eq || o->nwflags >= 2 * MAXWFLAGS ||
			    (size_t)(eq - val) > 100)
				goto bad;
			char *nm = names[o->nwflags / 2];
			snprintf(nm, 128, "--%.*s", (int)(eq - val), val);
			o->wflags[o->nwflags++] = nm;
			o->wflags[o->nwflags++] = eq + 1;
		} else {
			fprintf(stderr, "ingest: unknown flag %s\n", a);
			ingest_usage();
			return -1;
		}
		if (used)
			i++;
		continue;
	bad:
		fprintf(stderr, "ingest: bad value for %s: %s\n", a, val);
		return -1;
	}
	if (!o->records || !o->dim || o->dim > 4096 || !o->partitions ||
	    !o->nodes || o->nodes > MAXNODES || o->seconds <= 0 ||
	    o->probe_ms <= 0 || o->probe_timeout_s <= 0) {
		fprintf(stderr, "ingest: bad options (records, dim 1..4096, "
				"partitions, nodes 1..16, seconds, probe-ms "
				"and probe-timeout-s must be > 0)\n");
		return -1;
	}
	return 0;
}

int cmd_ingest(int argc, char **argv)
{
	struct iopts o = {.records = 100000,
			  .dim = 128,
			  .partitions = 8,
			  .nodes = 3,
			  .seconds = 10,
			  .probe_ms = 20,
			  .probe_timeout_s = 10,
			  .fsync = "always",
			  .tput = true,
			  .fresh = true,
			  .argv0 = argv[0]};
	o.nrates = bench_parse_list("1000,5000", o.rates, 16);
	if (parse(argc, argv, &o))
		return 2;

	struct sigaction sa = {.sa_handler = on_signal};
	struct sigaction old_int, old_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	signal(SIGPIPE, SIG_IGN);

	struct env e = {.o = &o};
	int rc = env_start(&e);
	if (!rc && o.tput)
		rc = run_throughput(&e);
	if (!rc && o.fresh)
		rc = run_freshness(&e);
	env_stop(&e);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return rc ? 1 : 0;
}
