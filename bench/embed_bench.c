/*
 * shoal-bench embed: the embedding tier measured over nng.
 *
 *   shoal-bench embed [--embed-bin PATH] [--model NAME=DIR]
 *                     [--backends cpu,cuda] [--concurrency 1,8,64]
 *                     [--seconds 3] [--max-batch N] [--delay-us 5000]
 *   shoal-bench embed --url URL [--metrics-url http://IP:PORT]
 *                     [--delay-us D] [--concurrency ...] [--seconds ...]
 *
 * For each backend present, the benchmark starts shoal-embed itself three
 * times: dynamic batching on with the cache off, batching off with the
 * cache off (each request runs alone), and batching on with the cache on
 * (the hit path: the same texts asked again after a first pass). At each
 * client concurrency, that many threads send one-text embed requests for
 * short product queries (5-15 tokens, generated from a fixed word list with
 * a fixed seed) for --seconds after a half-second warm-up. One JSON object
 * per measurement on stdout: texts/s, p50 and p99 latency in ms, errors,
 * and, read from the server's /metrics over the measured window, its
 * forward passes (count, mean texts, mean ms) and the latency bound of
 * dynamic batching: --delay-us + one pass (p99_bound_ms). When it started
 * the server (at --log-level debug: a line per forward pass) it also reads
 * the passes of the window from its log: their own p50 and p99
 * (pass_p50_ms, pass_p99_ms) and the bound at the same percentile,
 * --delay-us + the p99 pass (p99_bound_tail_ms).
 * A backend that is absent (no GPU) is reported on stderr and skipped.
 * With --url, only the client side runs, against a server started
 * elsewhere (--metrics-url: its /metrics, for the pass figures; give
 * --delay-us its --max-queue-delay-us for the bound).
 */
#include "embed_bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "error.h"
#include "proc.h"
#include "rpc.h"

#define MAXC 512
#define NHOT 256 /* distinct texts of the cache-hit pass */

static const char *const words[] = {
    "red",     "blue",	   "black",	 "white",   "green",   "leather",
    "cotton",  "wool",	   "silk",	 "denim",   "wooden",  "steel",
    "glass",   "ceramic",  "plastic",	 "small",   "large",   "light",
    "heavy",   "warm",	   "waterproof", "folding", "vintage", "modern",
    "classic", "soft",	   "running",	 "hiking",  "winter",  "summer",
    "shoes",   "boots",	   "sandals",	 "jacket",  "coat",    "shirt",
    "dress",   "skirt",	   "trousers",	 "scarf",   "hat",     "gloves",
    "bag",     "backpack", "wallet",	 "belt",    "table",   "chair",
    "sofa",    "bed",	   "lamp",	 "shelf",   "desk",    "cabinet",
    "mirror",  "rug",	   "pillow",	 "blanket", "mug",     "plate",
    "bowl",    "knife",	   "pan",	 "kettle",  "clock",   "watch",
    "for",     "with",	   "and",	 "women",   "men",     "kids",
    "office",  "kitchen",  "garden",	 "travel",  "outdoor", "indoor",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

struct eopts {
	const char *bin, *model, *url, *metrics_url;
	double seconds;
	size_t conc[8], nconc;
	int max_batch;
	int delay_us;
	bool want_cpu, want_cuda;
};

/* xorshift64*, one per thread. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* A query of 3..13 words (5..15 tokens with [CLS] and [SEP]). */
static void make_query(uint64_t *s, char *buf, size_t cap)
{
	int n = 3 + (int)(rnd(s) % 11);
	size_t off = 0;
	buf[0] = 0;
	for (int i = 0; i < n && off < cap; i++)
		off += (size_t)snprintf(buf + off, cap - off, "%s%s",
					i ? " " : "", words[rnd(s) % NWORDS]);
}

struct run {
	const char *url;
	bool hot; /* ask the NHOT fixed texts */
	atomic_bool go, stop;
	double t0, t1; /* the measured window */
};

struct cli {
	struct run *r;
	int id;
	pthread_t th;
	float *lat; /* ms, within the window */
	size_t nlat, cap;
	size_t errors;
	char lasterr[256];
};

static void *client_main(void *arg)
{
	struct cli *c = arg;
	struct run *r = c->r;
	sh_rpc *rpc = NULL;
	char err[256];
	if (sh_rpc_dial(r->url, 30000, 0, &rpc, err, sizeof(err)) != SH_OK) {
		c->errors++;
		snprintf(c->lasterr, sizeof(c->lasterr), "%s", err);
		return NULL;
	}
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(c->id + 1);
	uint64_t hot = 12345; /* the same sequence in every run */
	char text[256];
	char *tp = text;
	Shoal__V1__EmbedRequest er = SHOAL__V1__EMBED_REQUEST__INIT;
	er.model = "";
	er.n_texts = 1;
	er.texts = &tp;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_EMBED;
	rq.embed = &er;
	while (!atomic_load(&r->go))
		usleep(1000);
	for (uint64_t i = 0; !atomic_load(&r->stop); i++) {
		if (r->hot) {
			/* Text number (id*31 + i) % NHOT of a fixed list. */
			uint64_t s = hot + ((uint64_t)c->id * 31 + i) % NHOT;
			rnd(&s);
			make_query(&s, text, sizeof(text));
		} else {
			make_query(&seed, text, sizeof(text));
		}
		rq.request_id = 0;
		double t = bench_now_s();
		Shoal__V1__Response *rs = NULL;
		int rc = sh_rpc_call(rpc, &rq, &rs, err, sizeof(err));
		double t2 = bench_now_s();
		if (rc != SH_OK || rs->code != 0) {
			c->errors++;
			snprintf(c->lasterr, sizeof(c->lasterr), "%s",
				 rc ? err : rs->message);
		} else if (t >= r->t0 && t2 <= r->t1) {
			if (c->nlat == c->cap) {
				c->cap = c->cap ? 2 * c->cap : 4096;
				c->lat =
				    realloc(c->lat, c->cap * sizeof(*c->lat));
				if (!c->lat)
					abort();
			}
			c->lat[c->nlat++] = (float)((t2 - t) * 1e3);
		}
		sh_wire_free_response(rs);
	}
	sh_rpc_close(rpc);
	return NULL;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* What the server's /metrics count of its forward passes. */
struct passes {
	double batches, texts, forward_s;
};

static bool scrape(const char *metrics_url, struct passes *p)
{
	char *m = metrics_url && *metrics_url
		      ? bench_http_get(metrics_url, "/metrics")
		      : NULL;
	if (!m)
		return false;
	p->batches = bench_metric_sum(m, "shoal_embed_batches_total{");
	p->texts = bench_metric_sum(m, "shoal_embed_texts_total{");
	p->forward_s =
	    bench_metric_sum(m, "shoal_embed_forward_seconds_total{");
	free(m);
	return true;
}

/* The forward passes that started in [t0_us, t1_us), from the server's
 * debug lines "embed: pass at T us: N texts of up to S tokens, X ms": their
 * durations in ms, sorted, into *out (malloc'd); returns how many. */
static size_t read_passes(const char *log, uint64_t t0_us, uint64_t t1_us,
			  float **out)
{
	*out = NULL;
	FILE *f = log ? fopen(log, "r") : NULL;
	if (!f)
		return 0;
	size_t n = 0, cap = 0;
	float *v = NULL;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		const char *at = strstr(line, "embed: pass at ");
		unsigned long long t;
		int texts, toks;
		double ms;
		if (!at ||
		    sscanf(at,
			   "embed: pass at %llu us: %d texts of up to %d "
			   "tokens, %lf ms",
			   &t, &texts, &toks, &ms) != 4 ||
		    t < t0_us || t >= t1_us)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			float *nv = realloc(v, cap * sizeof(*nv));
			if (!nv)
				break;
			v = nv;
		}
		v[n++] = (float)ms;
	}
	fclose(f);
	qsort(v, n, sizeof(*v), cmp_float);
	*out = v;
	return n;
}

/* Runs conc clients against url; prints one JSON line. With the server's
 * metrics_url, the line also has the forward passes of the measured
 * window: their count, mean texts and mean time, and the latency bound of
 * dynamic batching, max-queue-delay + one pass (the mean); with its debug
 * log (server_log, NULL: none), the passes' own p50 and p99 and the bound
 * at the p99 pass. */
static void measure(const struct eopts *o, const char *url,
		    const char *metrics_url, const char *server_log,
		    const char *backend, const char *mode, bool batching,
		    bool hot, size_t conc)
{
	struct run r = {.url = url, .hot = hot};
	struct cli *cs = calloc(conc, sizeof(*cs));
	if (!cs)
		abort();
	for (size_t i = 0; i < conc; i++) {
		cs[i].r = &r;
		cs[i].id = (int)i;
		pthread_create(&cs[i].th, NULL, client_main, &cs[i]);
	}
	double now = bench_now_s();
	r.t0 = now + 0.5;
	r.t1 = r.t0 + o->seconds;
	atomic_store(&r.go, true);
	while (bench_now_s() < r.t0)
		usleep(1000);
	struct passes p0 = {0}, p1 = {0};
	bool have = scrape(metrics_url, &p0);
	while (bench_now_s() < r.t1)
		usleep(10000);
	have = have && scrape(metrics_url, &p1);
	atomic_store(&r.stop, true);
	size_t n = 0, errors = 0;
	for (size_t i = 0; i < conc; i++) {
		pthread_join(cs[i].th, NULL);
		n += cs[i].nlat;
		errors += cs[i].errors;
	}
	float *all = malloc((n ? n : 1) * sizeof(*all));
	if (!all)
		abort();
	size_t k = 0;
	const char *lasterr = "";
	for (size_t i = 0; i < conc; i++) {
		memcpy(all + k, cs[i].lat, cs[i].nlat * sizeof(*all));
		k += cs[i].nlat;
		if (cs[i].errors)
			lasterr = cs[i].lasterr;
	}
	qsort(all, n, sizeof(*all), cmp_float);
	char passes[512] = "";
	double nb = p1.batches - p0.batches;
	if (have && nb > 0) {
		double fwd_ms = (p1.forward_s - p0.forward_s) * 1e3 / nb;
		int w = snprintf(passes, sizeof(passes),
				 ",\"passes\":%.0f,\"mean_batch\":%.1f,"
				 "\"mean_pass_ms\":%.2f",
				 nb, (p1.texts - p0.texts) / nb, fwd_ms);
		if (batching) /* the bound is dynamic batching's */
			w += snprintf(passes + w, sizeof(passes) - (size_t)w,
				      ",\"p99_bound_ms\":%.2f",
				      o->delay_us * 1e-3 + fwd_ms);
		float *pv;
		size_t np = read_passes(server_log, (uint64_t)(r.t0 * 1e6),
					(uint64_t)(r.t1 * 1e6), &pv);
		if (np > 0) {
			double p99 = bench_percentile(pv, np, 0.99);
			w += snprintf(
			    passes + w, sizeof(passes) - (size_t)w,
			    ",\"pass_p50_ms\":%.2f,\"pass_p99_ms\":%.2f",
			    bench_percentile(pv, np, 0.50), p99);
			if (batching)
				snprintf(passes + w, sizeof(passes) - (size_t)w,
					 ",\"p99_bound_tail_ms\":%.2f",
					 o->delay_us * 1e-3 + p99);
		}
		free(pv);
	}
	printf("{\"bench\":\"embed\",\"backend\":\"%s\",\"mode\":\"%s\","
	       "\"batching\":%s,\"cache\":%s,\"concurrency\":%zu,"
	       "\"max_batch\":%d,\"max_queue_delay_us\":%d,"
	       "\"seconds\":%.1f,\"texts\":%zu,\"texts_per_s\":%.1f,"
	       "\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"errors\":%zu%s}\n",
	       backend, mode, batching ? "true" : "false",
	       hot ? "\"hit\"" : "\"off\"", conc, o->max_batch, o->delay_us,
	       o->seconds, n, (double)n / o->seconds,
	       bench_percentile(all, n, 0.50), bench_percentile(all, n, 0.99),
	       errors, passes);
	fflush(stdout);
	if (errors)
		fprintf(stderr, "embed bench: %zu errors, e.g. %s\n", errors,
			lasterr);
	for (size_t i = 0; i < conc; i++)
		free(cs[i].lat);
	free(cs);
	free(all);
}

/* One server start: mode "batching", "no-batching" or "cache-hit". */
static int run_mode(const struct eopts *o, const char *backend,
		    const char *mode)
{
	bool batching = strcmp(mode, "no-batching") != 0;
	bool hot = !strcmp(mode, "cache-hit");
	char mb[32], delay[32];
	snprintf(mb, sizeof(mb), "%d", o->max_batch);
	snprintf(delay, sizeof(delay), "%d", o->delay_us);
	const char *extra[20];
	int a = 0;
	extra[a++] = "--backend";
	extra[a++] = backend;
	extra[a++] = "--max-batch";
	extra[a++] = mb;
	extra[a++] = "--max-queue-delay-us";
	extra[a++] = delay;
	extra[a++] = batching ? "--batching" : "--no-batching";
	extra[a++] = "--metrics"; /* overrides the "" of bench_proc_start */
	extra[a++] = "127.0.0.1:0";
	extra[a++] = "--cache-entries";
	extra[a++] = hot ? "100000" : "0";
	extra[a++] = "--log-level"; /* a line per forward pass */
	extra[a++] = "debug";
	if (o->model) {
		extra[a++] = "--model";
		extra[a++] = o->model;
	}
	extra[a] = NULL;
	struct bench_proc p;
	if (bench_proc_start(&p, o->bin, extra) != 0)
		return -1;
	if (hot) {
		/* Fill the cache with the NHOT texts: one client asks each. */
		struct run r = {.url = p.url, .hot = true};
		struct cli c = {.r = &r};
		r.t0 = r.t1 = 0;
		atomic_store(&r.go, true);
		pthread_create(&c.th, NULL, client_main, &c);
		usleep(3000000);
		atomic_store(&r.stop, true);
		pthread_join(c.th, NULL);
		free(c.lat);
	}
	char log[700];
	snprintf(log, sizeof(log), "%s/log", p.dir);
	for (size_t i = 0; i < o->nconc; i++)
		measure(o, p.url, p.metrics, log, backend, mode, batching, hot,
			o->conc[i]);
	bench_proc_stop(&p, 0);
	return 0;
}

static size_t parse_sizes(const char *s, size_t *out, size_t cap)
{
	size_t n = 0;
	while (*s && n < cap) {
		char *end;
		unsigned long v = strtoul(s, &end, 10);
		if (end == s || v == 0 || v > MAXC)
			return 0;
		out[n++] = v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return 0;
	}
	return n;
}

int cmd_embed(int argc, char **argv)
{
	static char binbuf[4096];
	struct eopts o = {
	    .bin = bench_sibling(argv[0], "embed/shoal-embed", binbuf,
				 sizeof(binbuf)),
	    .seconds = 3,
	    .conc = {1, 8, 64},
	    .nconc = 3,
	    .max_batch = 64,
	    .delay_us = 5000,
	    .want_cpu = true,
	    .want_cuda = true,
	};
	for (int i = 2; i < argc; i++) {
		const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "shoal-bench embed: %s needs a value\n",
				f);
			return 2;
		}
		i++;
		if (!strcmp(f, "--embed-bin"))
			o.bin = v;
		else if (!strcmp(f, "--url"))
			o.url = v;
		else if (!strcmp(f, "--model"))
			o.model = v;
		else if (!strcmp(f, "--seconds"))
			o.seconds = atof(v);
		else if (!strcmp(f, "--max-batch"))
			o.max_batch = atoi(v);
		else if (!strcmp(f, "--metrics-url"))
			o.metrics_url = v;
		else if (!strcmp(f, "--delay-us"))
			o.delay_us = atoi(v);
		else if (!strcmp(f, "--concurrency")) {
			o.nconc = parse_sizes(v, o.conc, 8);
			if (!o.nconc) {
				fprintf(stderr,
					"shoal-bench embed: bad "
					"--concurrency %s (1..%d, comma-"
					"separated)\n",
					v, MAXC);
				return 2;
			}
		} else if (!strcmp(f, "--backends")) {
			o.want_cpu = strstr(v, "cpu") != NULL;
			o.want_cuda = strstr(v, "cuda") != NULL;
		} else {
			fprintf(stderr, "shoal-bench embed: unknown flag %s\n",
				f);
			return 2;
		}
	}
	if (!(o.seconds > 0) || o.max_batch < 1 || o.max_batch > 1024 ||
	    o.delay_us < 0) {
		fprintf(stderr, "shoal-bench embed: bad --seconds, "
				"--max-batch (1..1024) or --delay-us\n");
		return 2;
	}
	if (o.url) {
		/* A server started elsewhere: its own flags apply. */
		for (size_t i = 0; i < o.nconc; i++)
			measure(&o, o.url, o.metrics_url, NULL, "external",
				"external", true, false, o.conc[i]);
		return 0;
	}
	static const char *const modes[] = {"batching", "no-batching",
					    "cache-hit"};
	int ran = 0;
	for (int b = 0; b < 2; b++) {
		const char *backend = b == 0 ? "cpu" : "cuda";
		if ((b == 0 && !o.want_cpu) || (b == 1 && !o.want_cuda))
			continue;
		for (int m = 0; m < 3; m++) {
			fprintf(stderr, "embed bench: %s, %s\n", backend,
				modes[m]);
			if (run_mode(&o, backend, modes[m]) != 0) {
				fprintf(stderr,
					"embed bench: backend %s is not "
					"available here; skipped\n",
					backend);
				break;
			}
			ran++;
		}
	}
	return ran ? 0 : 1;
}
