/*
 * shoal-bench: HNSW benchmark of shoal's index against its peers (hnswlib,
 * FAISS), on the same data, in one process, with one ground truth.
 *
 *   shoal-bench hnsw --engine shoal,hnswlib,faiss --base B --queries Q ...
 *   shoal-bench gen --n N --dim D --queries NQ --out DIR ...
 *
 * Results are JSON lines on stdout (one per build, one per ef); progress
 * goes to stderr. bench/compare.py turns the lines into a comparison at
 * equal recall. See usage() for the flags.
 */
#include "shoal_config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <roaring/roaring.h>

#include "distance.h"
#include "error.h"
#include "fvecs.h"
#include "hnsw.h"
#include "bench_util.h"
#include "cluster_bench.h"
#include "embed_bench.h"
#include "ingest_bench.h"
#include "fmnist.h"
#include "node_bench.h"
#include "peers.h"
#include "rebalance_bench.h"
#include "pid.h"

#define MAX_EFS 64
#define MAX_THREADS 1024
#define GEN_GT_K 100
#define NLABELS 10

/* ---- small helpers ------------------------------------------------------- */

static void errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void errf(const char *fmt, ...)
{
	va_list ap;

	fputs("shoal-bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logf_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Out of memory in a benchmark tool: say so and stop. */
static void *xmalloc(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size) {
		errf("allocation of %zu x %zu bytes overflows", n, size);
		exit(1);
	}
	p = malloc(n && size ? n * size : 1);
	if (!p) {
		errf("out of memory (%zu x %zu bytes)", n, size);
		exit(1);
	}
	return p;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p) {
		errf("out of memory (%zu x %zu bytes)", n, size);
		exit(1);
	}
	return p;
}

double bench_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned ncpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > 64 ? 64 : (unsigned)n;
}

/* Strict unsigned parse: digits only, in [min, max]. */
static int parse_u64(const char *flag, const char *s, uint64_t min,
		     uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		goto bad;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		goto bad;
	if (v < min || v > max) {
		errf("%s: %llu is out of range %" PRIu64 "..%" PRIu64, flag, v,
		     min, max);
		return -1;
	}
	*out = v;
	return 0;
bad:
	errf("%s: '%s' is not a non-negative integer", flag, s ? s : "");
	return -1;
}

static void normalise_rows(float *v, size_t n, uint32_t dim)
{
	const sh_kernels *kn = sh_kernels_get();

	for (size_t i = 0; i < n; i++) {
		float *r = v + i * dim;
		float s = kn->dot_f32(r, r, dim);
		float inv = s > 0 ? 1.0f / sqrtf(s) : 0.0f;

		for (uint32_t j = 0; j < dim; j++)
			r[j] *= inv;
	}
}

static float *normalised_copy(const float *v, size_t n, uint32_t dim)
{
	float *c = xmalloc(n * dim, sizeof(float));

	memcpy(c, v, n * dim * sizeof(float));
	normalise_rows(c, n, dim);
	return c;
}

static bool bit_get(const uint8_t *bits, size_t i)
{
	return bits[i >> 3] >> (i & 7) & 1;
}

/* ---- exact ground truth (brute force, pthreads over queries) ------------- */

struct gt_item {
	float d;
	uint32_t id;
};

/* (d, id) ordering: smaller distance first, ties by lower id. */
static bool gt_less(const struct gt_item *a, const struct gt_item *b)
{
	return a->d < b->d || (a->d == b->d && a->id < b->id);
}

/* Max-heap on gt_less: the worst kept item on top. */
static void heap_sift_down(struct gt_item *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		struct gt_item t;

		if (l < n && gt_less(&h[m], &h[l]))
			m = l;
		if (r < n && gt_less(&h[m], &h[r]))
			m = r;
		if (m == i)
			return;
		t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

static void heap_sift_up(struct gt_item *h, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		struct gt_item t;

		if (!gt_less(&h[p], &h[i]))
			return;
		t = h[i];
		h[i] = h[p];
		h[p] = t;
		i = p;
	}
}

static int gt_cmp(const void *a, const void *b)
{
	const struct gt_item *x = a, *y = b;

	if (gt_less(x, y))
		return -1;
	return gt_less(y, x) ? 1 : 0;
}

struct gt_job {
	const float *base;
	size_t nb;
	const float *q;
	size_t nq;
	uint32_t dim;
	bool dot;	      /* distance -dot (ip, cosine on unit vectors) */
	const uint8_t *allow; /* bitmap over base index; NULL = all */
	size_t k;
	int32_t *out;  /* nq x k */
	uint32_t *cnt; /* per query: ids found (< k when few pass) */
	atomic_size_t next;
};

/* Keeps the k best of the candidates offered to one query. */
static void gt_offer(struct gt_item *h, size_t *n, size_t k, struct gt_item c)
{
	if (*n < k) {
		h[*n] = c;
		heap_sift_up(h, (*n)++);
	} else if (gt_less(&c, &h[0])) {
		h[0] = c;
		heap_sift_down(h, *n, 0);
	}
}

/* Queries are taken in blocks of GT_QBLOCK: each base vector is read from
 * memory once per block and stays in L1 while it meets every query of the
 * block, instead of the whole base streaming through once per query. */
#define GT_QBLOCK 16

static void *gt_thread(void *arg)
{
	struct gt_job *j = arg;
	const sh_kernels *kn = sh_kernels_get();
	struct gt_item *h = xmalloc(j->k * GT_QBLOCK, sizeof(*h));
	size_t cnt[GT_QBLOCK];

	for (;;) {
		size_t q0 = atomic_fetch_add(&j->next, GT_QBLOCK), nqb;

		if (q0 >= j->nq)
			break;
		nqb = j->nq - q0 < GT_QBLOCK ? j->nq - q0 : GT_QBLOCK;
		memset(cnt, 0, sizeof(cnt));
		for (size_t i = 0; i < j->nb; i++) {
			const float *b = j->base + i * j->dim;

			if (j->allow && !bit_get(j->allow, i))
				continue;
			for (size_t t = 0; t < nqb; t++) {
				const float *q = j->q + (q0 + t) * j->dim;
				struct gt_item c = {.id = (uint32_t)i};

				if (j->dot)
					c.d = -kn->dot_f32(q, b, j->dim);
				else
					c.d = kn->l2sq_f32(q, b, j->dim);
				gt_offer(h + t * j->k, &cnt[t], j->k, c);
			}
		}
		for (size_t t = 0; t < nqb; t++) {
			struct gt_item *ht = h + t * j->k;
			size_t qi = q0 + t;

			qsort(ht, cnt[t], sizeof(*ht), gt_cmp);
			for (size_t i = 0; i < j->k; i++)
				j->out[qi * j->k + i] =
				    i < cnt[t] ? (int32_t)ht[i].id : -1;
			j->cnt[qi] = (uint32_t)cnt[t];
		}
	}
	free(h);
	return NULL;
}

/* Exact top-k of every query; out is nq x k, cnt per query. */
int bench_exact_topk(const float *base, size_t nb, const float *q, size_t nq,
		     uint32_t dim, bool dot, const uint8_t *allow, size_t k,
		     int32_t *out, uint32_t *cnt)
{
	struct gt_job j = {
	    .base = base,
	    .nb = nb,
	    .q = q,
	    .nq = nq,
	    .dim = dim,
	    .dot = dot,
	    .allow = allow,
	    .k = k,
	    .out = out,
	    .cnt = cnt,
	};
	unsigned nt = ncpus();
	pthread_t th[64];
	unsigned started = 0;
	double t0 = bench_now_s();

	atomic_init(&j.next, 0);
	if (nt > nq)
		nt = nq ? (unsigned)nq : 1;
	for (unsigned i = 1; i < nt; i++) {
		if (pthread_create(&th[i], NULL, gt_thread, &j) != 0)
			break;
		started = i;
	}
	gt_thread(&j);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(th[i], NULL);
	logf_("ground truth: exact top-%zu of %zu queries over %zu points "
	      "(%s) in %.2f s on %u threads",
	      k, nq, nb, sh_kernels_get()->name, bench_now_s() - t0,
	      started + 1);
	return 0;
}

/* ---- options ------------------------------------------------------------- */

enum engine_kind { ENG_SHOAL, ENG_HNSWLIB, ENG_FAISS, ENG_COUNT };

static const char *const engine_names[ENG_COUNT] = {"shoal", "hnswlib",
						    "faiss"};
static const char *const metric_names[] = {"l2", "ip", "cosine"};

struct opts {
	int engines[ENG_COUNT];
	int nengines;
	const char *base, *queries, *gt, *labels;
	int metric; /* sh_metric */
	uint64_t k, m, efc, threads, limit, nq, repeat, seed;
	uint64_t efs[MAX_EFS];
	size_t nef;
	bool int8;
	int filter_label; /* -1: none */
};

static void usage(FILE *f)
{
	/* clang-format off */
	fputs(
"usage:\n"
"  shoal-bench hnsw --engine shoal|hnswlib|faiss[,...] --base B.fvecs\n"
"                   --queries Q.fvecs [options]\n"
"  shoal-bench gen --n 100000 --dim 128 --queries 1000 --out DIR\n"
"                  [--seed S] [--clusters C]\n"
"  shoal-bench fmnist --out DIR [--queries 1000]\n"
"  shoal-bench cluster --data DIR (--router URL | --nodes 1,3,6)\n"
"                   [--k 10] [--efs ...] [--threads 1,4] [--seconds 3]\n"
"  shoal-bench rebalance [--points 1000000] [--dim 128] [--nodes 3]\n"
"                   [--loaders 4] [--searchers 2] [--steady-seconds 10]\n"
"                   [--max-rate BYTES_PER_S] [--grace-ms 1000] [--k 10]\n"
"                   [--ef 64] [--fsync always|batch|never] [--keep]\n"
"  shoal-bench node --base B.fvecs --queries Q.fvecs --gt G.ivecs\n"
"                   [--node-bin PATH] [--k 10] [--efs 16,32,...]\n"
"                   [--threads 1,2,4] [--seconds 3] [--nq 1000]\n"
"  shoal-bench embed [--embed-bin PATH] [--model NAME=DIR]\n"
"                   [--backends cpu,cuda] [--concurrency 1,8,64]\n"
"                   [--seconds 3] [--max-batch 64] [--delay-us 2000]\n"
"  shoal-bench ingest [--records 100000] [--dim 128] [--rates 1000,5000]\n"
"                   [--seconds 10] [--nodes 3] [--fsync always|batch|never]\n"
"                   [--storage f32|int8] [--ef-construction N]\n"
"                   [--ingest-flag NAME=VALUE] [--quick] [--keep]\n"
"  shoal-bench --help\n"
"\n"
"hnsw: build an HNSW index of the base vectors with each engine, then for\n"
"each ef run the queries (warm-up pass, then --repeat timed passes; median\n"
"qps) and print JSON lines: one per build, one per ef.\n"
"  --engine LIST          engines, comma separated; all run in one process\n"
"                         on the same data and ground truth\n"
"  --base FILE            base vectors (.fvecs)\n"
"  --queries FILE         query vectors (.fvecs)\n"
"  --groundtruth FILE     exact neighbours (.ivecs, top-K >= --k); without\n"
"                         it (or with --limit / a filter) the ground truth\n"
"                         is computed by brute force\n"
"  --metric l2|ip|cosine  distance (default l2)\n"
"  --k N                  neighbours per query (default 10)\n"
"  --m N                  HNSW M (default 16)\n"
"  --ef-construction N    (default 200)\n"
"  --ef LIST              search ef sweep (default 10,20,40,80,160,320)\n"
"  --threads N            search threads, and build threads of the peers\n"
"                         (shoal inserts with one writer) (default 1)\n"
"  --quantize none|int8   shoal's vector storage (default none); int8\n"
"                         re-ranks with the float vectors, fetched from\n"
"                         outside the index; peers always store floats\n"
"  --limit N              use only the first N base vectors\n"
"  --nq N                 use only the first N queries\n"
"  --labels FILE          base labels (.labels, one byte per vector)\n"
"  --filter-label C       search only base points whose label is C\n"
"  --repeat N             timed passes per ef (default 3)\n"
"  --seed S               level generator seed (default 42)\n"
"\n"
"gen: clustered synthetic data (Gaussian clusters, random centres, varied\n"
"spreads and sizes; queries drawn from the same distribution) with exact\n"
"top-100 L2 ground truth and labels 0..9 correlated with the cluster.\n"
"Writes DIR/base.fvecs, query.fvecs, groundtruth.ivecs, base.labels,\n"
"query.labels.\n"
"  --n N  --dim D  --queries NQ  --out DIR  [--seed S (default 1)]\n"
"  [--clusters C (default 100)]\n"
"\n"
"embed: starts shoal-embed (batching on, off, and the cache-hit path) per\n"
"backend present and measures texts/s, p50/p99 of one-text requests of\n"
"short product queries at each client concurrency; --url URL measures a\n"
"server started elsewhere instead. See bench/embed_bench.c.\n"
"\n"
"ingest: starts the shoal-kafka-mock TEST Kafka cluster, --nodes nodes, a\n"
"router and shoal-ingest, and measures records/s from a pre-filled topic\n"
"(with and without the consumer-group join) and freshness (produce ->\n"
"searchable through the router) at each offered rate. --quick: a smoke\n"
"test of a few seconds. See bench/ingest_bench.c.\n"
"\n"
"rebalance: starts --nodes nodes and a router, loads --points synthetic\n"
"points, then moves a quarter of the slots onto one more node while\n"
"searching, and measures the copy rate and the search p99 during the\n"
"move against steady state. See bench/rebalance_bench.c.\n",
		f);
	/* clang-format on */
}

/* Iterates "--flag value" / "--flag=value" pairs. */
struct argit {
	int argc, i;
	char **argv;
	char flag[64];
	const char *val;
};

/* Returns 1 with it->flag / it->val set, 0 at the end, -1 on error. */
static int arg_next(struct argit *it)
{
	const char *a, *eq;
	size_t len;

	if (it->i >= it->argc)
		return 0;
	a = it->argv[it->i++];
	if (strncmp(a, "--", 2) != 0) {
		errf("unexpected argument '%s' (try --help)", a);
		return -1;
	}
	eq = strchr(a, '=');
	len = eq ? (size_t)(eq - a) : strlen(a);
	if (len >= sizeof(it->flag)) {
		errf("unknown flag '%s' (try --help)", a);
		return -1;
	}
	memcpy(it->flag, a, len);
	it->flag[len] = 0;
	if (eq) {
		it->val = eq + 1;
	} else if (it->i < it->argc) {
		it->val = it->argv[it->i++];
	} else {
		errf("%s needs a value", it->flag);
		return -1;
	}
	return 1;
}

static int parse_engines(struct opts *o, const char *s)
{
	const char *p = s;

	o->nengines = 0;
	while (*p) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		int e = -1;

		for (int i = 0; i < ENG_COUNT; i++) {
			if (strlen(engine_names[i]) == len &&
			    !strncmp(p, engine_names[i], len))
				e = i;
		}
		if (e < 0) {
			errf("--engine: unknown engine '%.*s' (shoal, hnswlib "
			     "or faiss)",
			     (int)len, p);
			return -1;
		}
		for (int i = 0; i < o->nengines; i++) {
			if (o->engines[i] == e) {
				errf("--engine: %s listed twice",
				     engine_names[e]);
				return -1;
			}
		}
		o->engines[o->nengines++] = e;
		p += len;
		if (*p == ',') {
			p++;
			if (!*p) {
				errf("--engine: trailing comma");
				return -1;
			}
		}
	}
	if (o->nengines == 0) {
		errf("--engine: empty list");
		return -1;
	}
	return 0;
}

static int parse_efs(struct opts *o, const char *s)
{
	const char *p = s;

	o->nef = 0;
	while (*p) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		char buf[32];

		if (len == 0 || len >= sizeof(buf)) {
			errf("--ef: bad list '%s' (e.g. 10,20,40)", s);
			return -1;
		}
		if (o->nef == MAX_EFS) {
			errf("--ef: at most %d values", MAX_EFS);
			return -1;
		}
		memcpy(buf, p, len);
		buf[len] = 0;
		if (parse_u64("--ef", buf, 1, SH_HNSW_MAX_EF,
			      &o->efs[o->nef]) != 0)
			return -1;
		o->nef++;
		p += len;
		if (*p == ',' && !*++p) {
			errf("--ef: trailing comma");
			return -1;
		}
	}
	if (o->nef == 0) {
		errf("--ef: empty list");
		return -1;
	}
	return 0;
}

static bool engine_built(int e)
{
	switch (e) {
	case ENG_HNSWLIB:
		return HAVE_HNSWLIB;
	case ENG_FAISS:
		return HAVE_FAISS;
	default:
		return true;
	}
}

static int parse_hnsw_opts(int argc, char **argv, struct opts *o)
{
	struct argit it = {.argc = argc, .i = 2, .argv = argv};
	uint64_t v;
	int r;

	memset(o, 0, sizeof(*o));
	o->metric = SH_METRIC_L2;
	o->k = 10;
	o->m = 16;
	o->efc = 200;
	o->threads = 1;
	o->repeat = 3;
	o->seed = 42;
	o->filter_label = -1;
	parse_efs(o, "10,20,40,80,160,320");
	o->nengines = 0;

	while ((r = arg_next(&it)) == 1) {
		const char *f = it.flag, *s = it.val;

		if (!strcmp(f, "--engine")) {
			if (parse_engines(o, s))
				return -1;
		} else if (!strcmp(f, "--base")) {
			o->base = s;
		} else if (!strcmp(f, "--queries")) {
			o->queries = s;
		} else if (!strcmp(f, "--groundtruth")) {
			o->gt = s;
		} else if (!strcmp(f, "--labels")) {
			o->labels = s;
		} else if (!strcmp(f, "--metric")) {
			if (!strcmp(s, "l2")) {
				o->metric = SH_METRIC_L2;
			} else if (!strcmp(s, "ip")) {
				o->metric = SH_METRIC_IP;
			} else if (!strcmp(s, "cosine")) {
				o->metric = SH_METRIC_COSINE;
			} else {
				errf("--metric: '%s' is not l2, ip or cosine",
				     s);
				return -1;
			}
		} else if (!strcmp(f, "--quantize")) {
			if (!strcmp(s, "none")) {
				o->int8 = false;
			} else if (!strcmp(s, "int8")) {
				o->int8 = true;
			} else {
				errf("--quantize: '%s' is not none or int8", s);
				return -1;
			}
		} else if (!strcmp(f, "--k")) {
			if (parse_u64(f, s, 1, SH_HNSW_MAX_EF, &o->k))
				return -1;
		} else if (!strcmp(f, "--m")) {
			if (parse_u64(f, s, 2, SH_HNSW_MAX_M, &o->m))
				return -1;
		} else if (!strcmp(f, "--ef-construction")) {
			if (parse_u64(f, s, 1, SH_HNSW_MAX_EF, &o->efc))
				return -1;
		} else if (!strcmp(f, "--ef")) {
			if (parse_efs(o, s))
				return -1;
		} else if (!strcmp(f, "--threads")) {
			if (parse_u64(f, s, 1, MAX_THREADS, &o->threads))
				return -1;
		} else if (!strcmp(f, "--limit")) {
			if (parse_u64(f, s, 1, UINT32_MAX - 1, &o->limit))
				return -1;
		} else if (!strcmp(f, "--nq")) {
			if (parse_u64(f, s, 1, UINT32_MAX, &o->nq))
				return -1;
		} else if (!strcmp(f, "--repeat")) {
			if (parse_u64(f, s, 1, 100, &o->repeat))
				return -1;
		} else if (!strcmp(f, "--seed")) {
			if (parse_u64(f, s, 0, UINT64_MAX, &o->seed))
				return -1;
		} else if (!strcmp(f, "--filter-label")) {
			if (parse_u64(f, s, 0, 255, &v))
				return -1;
			o->filter_label = (int)v;
		} else {
			errf("unknown flag '%s' for hnsw (try --help)", f);
			return -1;
		}
	}
	if (r < 0)
		return -1;
	if (o->nengines == 0) {
		errf("hnsw: --engine is required (shoal, hnswlib, faiss)");
		return -1;
	}
	if (!o->base || !o->queries) {
		errf("hnsw: --base and --queries are required");
		return -1;
	}
	if ((o->labels != NULL) != (o->filter_label >= 0)) {
		errf("hnsw: --labels and --filter-label go together");
		return -1;
	}
	for (int i = 0; i < o->nengines; i++) {
		if (!engine_built(o->engines[i])) {
			errf("engine %s was not built into this shoal-bench "
			     "(its library was not found when meson "
			     "configured the build; install it and "
			     "reconfigure, e.g. with -Dpeers=enabled)",
			     engine_names[o->engines[i]]);
			return -1;
		}
	}
	return 0;
}

/* ---- the loaded data set ------------------------------------------------- */

struct data {
	uint32_t dim;
	size_t nb, nq;
	float *base, *queries;
	/* Cosine: normalised copies (ground truth, int8 rescoring). */
	float *nbase, *nqueries;
	/* Filter: base indices whose label matches, as a bitmap. */
	uint8_t *allow;
	size_t nallow;
	/* Ground truth: nq x gtk ids, gtcnt valid per query. */
	int32_t *gt;
	uint32_t *gtcnt;
	size_t gtk;
};

static void data_free(struct data *d)
{
	free(d->base);
	free(d->queries);
	free(d->nbase);
	free(d->nqueries);
	free(d->allow);
	free(d->gt);
	free(d->gtcnt);
	memset(d, 0, sizeof(*d));
}

static int load_gt_file(const struct opts *o, struct data *d)
{
	char err[512];
	size_t n, n_file;
	uint32_t dim;
	int32_t *gt;

	if (fv_read_ivecs(o->gt, d->nq, &gt, &n, &n_file, &dim, err,
			  sizeof(err))) {
		errf("%s", err);
		return -1;
	}
	if (n < d->nq) {
		errf("%s: %zu ground-truth rows for %zu queries", o->gt, n,
		     d->nq);
		free(gt);
		return -1;
	}
	if (dim < o->k) {
		errf("%s: ground truth holds top-%u, --k %" PRIu64
		     " needs more (omit --groundtruth to compute it)",
		     o->gt, dim, o->k);
		free(gt);
		return -1;
	}
	for (size_t i = 0; i < n * dim; i++) {
		if (gt[i] < 0 || (size_t)gt[i] >= d->nb) {
			errf("%s: row %zu: id %d is not a base index (base "
			     "has %zu vectors)",
			     o->gt, i / dim, gt[i], d->nb);
			free(gt);
			return -1;
		}
	}
	d->gt = gt;
	d->gtk = dim;
	d->gtcnt = xmalloc(d->nq, sizeof(uint32_t));
	for (size_t i = 0; i < d->nq; i++)
		d->gtcnt[i] = dim;
	logf_("ground truth: %s (top-%u)", o->gt, dim);
	return 0;
}

static int load_data(const struct opts *o, struct data *d)
{
	char err[512];
	size_t nb_file, nq_file, nl;
	uint32_t qdim;
	uint8_t *labels = NULL;

	memset(d, 0, sizeof(*d));
	if (fv_read_fvecs(o->base, o->limit, &d->base, &d->nb, &nb_file,
			  &d->dim, err, sizeof(err))) {
		errf("%s", err);
		return -1;
	}
	if (d->dim > SH_HNSW_MAX_DIM) {
		errf("%s: dimension %u exceeds shoal's limit %u", o->base,
		     d->dim, SH_HNSW_MAX_DIM);
		goto bad;
	}
	if (fv_read_fvecs(o->queries, o->nq, &d->queries, &d->nq, &nq_file,
			  &qdim, err, sizeof(err))) {
		errf("%s", err);
		goto bad;
	}
	if (qdim != d->dim) {
		errf("%s: dimension %u, but the base vectors have %u",
		     o->queries, qdim, d->dim);
		goto bad;
	}
	logf_("base: %s, %zu x %u%s; queries: %s, %zu", o->base, d->nb, d->dim,
	      d->nb < nb_file ? " (--limit)" : "", o->queries, d->nq);
	if (o->metric == SH_METRIC_COSINE) {
		d->nbase = normalised_copy(d->base, d->nb, d->dim);
		d->nqueries = normalised_copy(d->queries, d->nq, d->dim);
	}
	if (o->labels) {
		if (fv_read_labels(o->labels, &labels, &nl, err, sizeof(err))) {
			errf("%s", err);
			goto bad;
		}
		if (nl != nb_file) {
			errf("%s: %zu labels, but %s has %zu vectors",
			     o->labels, nl, o->base, nb_file);
			goto bad;
		}
		d->allow = xcalloc((d->nb + 7) / 8, 1);
		for (size_t i = 0; i < d->nb; i++) {
			if (labels[i] == o->filter_label) {
				d->allow[i >> 3] |= (uint8_t)(1u << (i & 7));
				d->nallow++;
			}
		}
		free(labels);
		labels = NULL;
		logf_("filter: label %d passes %zu of %zu base points "
		      "(%.1f%%)",
		      o->filter_label, d->nallow, d->nb,
		      d->nb ? 100.0 * d->nallow / d->nb : 0.0);
		if (d->nallow == 0) {
			errf("--filter-label %d: no base point has it",
			     o->filter_label);
			goto bad;
		}
	}

	if (o->gt && !d->allow && d->nb == nb_file) {
		if (load_gt_file(o, d))
			goto bad;
		return 0;
	}
	if (o->gt) {
		logf_("note: ignoring %s: %s; computing the ground truth",
		      o->gt,
		      d->allow ? "a filter is set" : "--limit cuts the base");
	}
	d->gtk = o->k;
	d->gt = xmalloc(d->nq * d->gtk, sizeof(int32_t));
	d->gtcnt = xmalloc(d->nq, sizeof(uint32_t));
	if (o->metric == SH_METRIC_COSINE)
		bench_exact_topk(d->nbase, d->nb, d->nqueries, d->nq, d->dim,
				 true, d->allow, d->gtk, d->gt, d->gtcnt);
	else
		bench_exact_topk(d->base, d->nb, d->queries, d->nq, d->dim,
				 o->metric == SH_METRIC_IP, d->allow, d->gtk,
				 d->gt, d->gtcnt);
	return 0;
bad:
	free(labels);
	data_free(d);
	return -1;
}

/* ---- engines ------------------------------------------------------------- */

struct engine {
	int kind;
	const char *name;
	const struct opts *o;
	const struct data *d;
	size_t ef;
	/* shoal */
	sh_hnsw *h;
	uint32_t *iid2base; /* UINT32_MAX: unknown */
	size_t niid;
	uint32_t *base2iid;
	roaring_bitmap_t *allow_iids;
	sh_hnsw_filter filter;
	/* peers */
	const sh_peer_ops *ops;
	sh_peer *p;
	sh_peer_filter pfilter;
};

/* Per search thread state. */
struct worker {
	pthread_t th;
	struct pool *pool;
	size_t lo, hi;
	double t0, t1;
	sh_hnsw_hit *hits;
	uint64_t plan[3];
	uint64_t ndist, nrescored;
	int rc;
	char err[256];
};

static const float *engine_base_for_fetch(const struct engine *e)
{
	return e->d->nbase ? e->d->nbase : e->d->base;
}

/* int8 storage: the float originals live outside the index (in the shard
 * node, in RocksDB; here, in the loaded base array). */
static const float *shoal_fetch(void *ctx, uint32_t iid, const sh_pid *pid,
				float *scratch)
{
	const struct engine *e = ctx;
	uint32_t b;

	(void)pid;
	(void)scratch;
	if (iid >= e->niid)
		return NULL;
	b = e->iid2base[iid];
	if (b == UINT32_MAX)
		return NULL;
	return engine_base_for_fetch(e) + (size_t)b * e->d->dim;
}

static int shoal_build(struct engine *e)
{
	const struct data *d = e->d;
	sh_hnsw_params p;
	int rc;

	sh_hnsw_params_default(&p, d->dim);
	p.metric = (sh_metric)e->o->metric;
	p.m = (uint32_t)e->o->m;
	p.ef_construction = (uint32_t)e->o->efc;
	p.storage = e->o->int8 ? SH_STORAGE_INT8 : SH_STORAGE_F32;
	p.seed = e->o->seed;
	rc = sh_hnsw_new(&p, &e->h);
	if (rc != SH_OK) {
		errf("shoal: sh_hnsw_new: %s", sh_strerror(rc));
		return -1;
	}
	e->niid = d->nb;
	e->iid2base = xmalloc(e->niid, sizeof(uint32_t));
	memset(e->iid2base, 0xff, e->niid * sizeof(uint32_t));
	e->base2iid = xmalloc(d->nb, sizeof(uint32_t));
	if (e->o->int8)
		sh_hnsw_set_fetch_fn(e->h, shoal_fetch, e);

	for (size_t i = 0; i < d->nb; i++) {
		sh_pid pid = sh_pid_u64(i);
		uint32_t iid;

		rc = sh_hnsw_upsert(e->h, &pid, d->base + i * d->dim, &iid,
				    NULL);
		if (rc != SH_OK) {
			errf("shoal: upsert of base vector %zu: %s", i,
			     sh_strerror(rc));
			return -1;
		}
		if (iid >= e->niid) {
			size_t nn = e->niid * 2 > (size_t)iid + 1
					? e->niid * 2
					: (size_t)iid + 1;
			uint32_t *m = realloc(e->iid2base, nn * sizeof(*m));

			if (!m) {
				errf("out of memory");
				return -1;
			}
			memset(m + e->niid, 0xff, (nn - e->niid) * sizeof(*m));
			e->iid2base = m;
			e->niid = nn;
		}
		e->iid2base[iid] = (uint32_t)i;
		e->base2iid[i] = iid;
		if ((i + 1) % 100000 == 0)
			logf_("shoal: %zu / %zu inserted", i + 1, d->nb);
	}

	if (d->allow) {
		e->allow_iids = roaring_bitmap_create();
		if (!e->allow_iids) {
			errf("out of memory");
			return -1;
		}
		for (size_t i = 0; i < d->nb; i++) {
			if (bit_get(d->allow, i))
				roaring_bitmap_add(e->allow_iids,
						   e->base2iid[i]);
		}
		e->filter.allow = e->allow_iids;
	}
	return 0;
}

static int peer_build(struct engine *e)
{
	const struct data *d = e->d;
	char err[512] = "";

	e->p = e->ops->create(d->dim, e->o->metric, (uint32_t)e->o->m,
			      (uint32_t)e->o->efc, e->o->seed, d->nb, err,
			      sizeof(err));
	if (!e->p) {
		errf("%s: create: %s", e->name, err);
		return -1;
	}
	if (e->ops->add_all(e->p, d->base, d->nb, (unsigned)e->o->threads)) {
		errf("%s: build: %s", e->name, e->ops->errmsg());
		return -1;
	}
	if (d->allow) {
		e->pfilter.bits = d->allow;
		e->pfilter.n = d->nb;
	}
	return 0;
}

static void engine_free(struct engine *e)
{
	if (e->h)
		sh_hnsw_free(e->h);
	if (e->allow_iids)
		roaring_bitmap_free(e->allow_iids);
	free(e->iid2base);
	free(e->base2iid);
	if (e->p)
		e->ops->free(e->p);
}

static uint64_t engine_mem(const struct engine *e)
{
	sh_hnsw_info info;

	if (e->kind != ENG_SHOAL)
		return e->ops->mem_bytes(e->p);
	sh_hnsw_info_get(e->h, &info);
	return info.mem_bytes;
}

/* One query; ids get base indices, closest first. */
static int engine_search(struct engine *e, struct worker *w, const float *q,
			 int64_t *ids, size_t *n)
{
	size_t k = e->o->k;

	if (e->kind == ENG_SHOAL) {
		sh_hnsw_search_stats st;
		int rc = sh_hnsw_search(e->h, q, k, e->ef,
					e->d->allow ? &e->filter : NULL,
					w->hits, n, &st);

		if (rc != SH_OK) {
			snprintf(w->err, sizeof(w->err), "sh_hnsw_search: %s",
				 sh_strerror(rc));
			return -1;
		}
		if ((unsigned)st.plan < 3)
			w->plan[st.plan]++;
		w->ndist += st.ndist;
		w->nrescored += st.nrescored;
		for (size_t i = 0; i < *n; i++)
			ids[i] = (int64_t)w->hits[i].pid.num;
		return 0;
	}
	if (e->ops->search(e->p, q, k, e->d->allow ? &e->pfilter : NULL, ids,
			   n)) {
		snprintf(w->err, sizeof(w->err), "%s", e->ops->errmsg());
		return -1;
	}
	return 0;
}

/* ---- search threads ------------------------------------------------------ */

/* Threads are created once per engine and reused for every pass (for
 * shoal, each registers with liburcu once, on its first search). */
struct pool {
	unsigned n;
	struct worker *w;
	pthread_barrier_t go, done;
	bool quit;
	struct engine *e;
	int64_t *ids;  /* nq x k, -1 padded */
	float *lat_us; /* nq */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pool *pl = w->pool;

	for (;;) {
		struct engine *e;
		size_t k;

		pthread_barrier_wait(&pl->go);
		if (pl->quit)
			break;
		e = pl->e;
		k = e->o->k;
		w->rc = 0;
		memset(w->plan, 0, sizeof(w->plan));
		w->ndist = w->nrescored = 0;
		w->t0 = bench_now_s();
		for (size_t qi = w->lo; qi < w->hi; qi++) {
			const float *q = e->d->queries + qi * e->d->dim;
			int64_t *ids = pl->ids + qi * k;
			size_t n = 0;
			double t = bench_now_s();

			if (engine_search(e, w, q, ids, &n)) {
				w->rc = -1;
				break;
			}
			pl->lat_us[qi] = (float)((bench_now_s() - t) * 1e6);
			for (size_t i = n; i < k; i++)
				ids[i] = -1;
		}
		w->t1 = bench_now_s();
		pthread_barrier_wait(&pl->done);
	}
	return NULL;
}

static int pool_start(struct pool *pl, unsigned n, struct engine *e)
{
	size_t nq = e->d->nq;

	memset(pl, 0, sizeof(*pl));
	pl->n = n;
	pl->e = e;
	pl->w = xcalloc(n, sizeof(*pl->w));
	pl->ids = xmalloc(nq * e->o->k, sizeof(int64_t));
	pl->lat_us = xcalloc(nq, sizeof(float));
	pthread_barrier_init(&pl->go, NULL, n + 1);
	pthread_barrier_init(&pl->done, NULL, n + 1);
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &pl->w[i];

		w->pool = pl;
		w->lo = nq * i / n;
		w->hi = nq * (i + 1) / n;
		w->hits = xmalloc(e->o->k, sizeof(sh_hnsw_hit));
		if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
			errf("pthread_create failed");
			exit(1);
		}
	}
	return 0;
}

/* Runs one pass over the queries; returns its wall time or -1. */
static double pool_pass(struct pool *pl)
{
	double t0 = 1e300, t1 = 0;

	pthread_barrier_wait(&pl->go);
	pthread_barrier_wait(&pl->done);
	for (unsigned i = 0; i < pl->n; i++) {
		struct worker *w = &pl->w[i];

		if (w->rc) {
			errf("%s: search failed: %s", pl->e->name, w->err);
			return -1;
		}
		if (w->lo == w->hi)
			continue;
		t0 = w->t0 < t0 ? w->t0 : t0;
		t1 = w->t1 > t1 ? w->t1 : t1;
	}
	return t1 > t0 ? t1 - t0 : 1e-9;
}

static void pool_stop(struct pool *pl)
{
	pl->quit = true;
	pthread_barrier_wait(&pl->go);
	for (unsigned i = 0; i < pl->n; i++) {
		pthread_join(pl->w[i].th, NULL);
		free(pl->w[i].hits);
	}
	pthread_barrier_destroy(&pl->go);
	pthread_barrier_destroy(&pl->done);
	free(pl->w);
	free(pl->ids);
	free(pl->lat_us);
}

/* ---- measuring ----------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
double bench_percentile(const float *v, size_t n, double p)
{
	size_t r;

	if (n == 0)
		return 0;
	r = (size_t)ceil(p * (double)n);
	return v[r ? r - 1 : 0];
}

static double recall_of(const struct data *d, const int64_t *ids, size_t k)
{
	double sum = 0;
	size_t counted = 0;

	for (size_t qi = 0; qi < d->nq; qi++) {
		size_t want = d->gtcnt[qi] < k ? d->gtcnt[qi] : k;
		const int32_t *g = d->gt + qi * d->gtk;
		const int64_t *r = ids + qi * k;
		size_t hit = 0;

		if (want == 0)
			continue;
		for (size_t i = 0; i < k; i++) {
			if (r[i] < 0)
				continue;
			for (size_t j = 0; j < want; j++) {
				if (r[i] == g[j]) {
					hit++;
					break;
				}
			}
		}
		sum += (double)hit / (double)want;
		counted++;
	}
	return counted ? sum / (double)counted : 0;
}

static void print_error_line(const struct opts *o, const char *engine,
			     const char *msg)
{
	printf("{\"engine\":\"%s\",\"quantize\":\"%s\",", engine,
	       o->int8 && !strcmp(engine, "shoal") ? "int8" : "none");
	if (o->filter_label >= 0)
		printf("\"filter_label\":%d,", o->filter_label);
	printf("\"error\":\"");
	for (const char *c = msg; *c; c++) {
		if (*c == '"' || *c == '\\')
			putchar('\\');
		if ((unsigned char)*c >= 0x20)
			putchar(*c);
	}
	printf("\"}\n");
	fflush(stdout);
}

static int run_engine(int kind, const struct opts *o, const struct data *d)
{
	struct engine e = {
	    .kind = kind, .name = engine_names[kind], .o = o, .d = d};
	const char *quant = kind == ENG_SHOAL && o->int8 ? "int8" : "none";
	unsigned build_threads = kind == ENG_SHOAL ? 1 : (unsigned)o->threads;
	size_t nq = d->nq, k = o->k, nrep = o->repeat;
	float *lat_all = NULL;
	double *qps = NULL;
	struct pool pl;
	double t0, build_s;
	int rc = -1;

	if (kind == ENG_HNSWLIB) {
#if HAVE_HNSWLIB
		e.ops = &sh_peer_hnswlib_ops;
#endif
	} else if (kind == ENG_FAISS) {
#if HAVE_FAISS
		e.ops = &sh_peer_faiss_ops;
#endif
	}
	if (kind != ENG_SHOAL && !e.ops) {
		print_error_line(o, e.name, "engine not built");
		return -1;
	}
	if (d->allow && e.ops && !e.ops->filter_ok) {
		logf_("%s: %s", e.name, e.ops->filter_why);
		print_error_line(o, e.name, e.ops->filter_why);
		return 0;
	}
	if (kind != ENG_SHOAL && o->int8)
		logf_("%s: --quantize int8 applies to shoal only; %s stores "
		      "floats",
		      e.name, e.name);

	logf_("%s: building (%zu x %u, M=%" PRIu64 ", efC=%" PRIu64
	      ", %u thread%s)...",
	      e.name, d->nb, d->dim, o->m, o->efc, build_threads,
	      build_threads > 1 ? "s" : "");
	t0 = bench_now_s();
	if (kind == ENG_SHOAL ? shoal_build(&e) : peer_build(&e)) {
		print_error_line(o, e.name, "build failed (see stderr)");
		goto out;
	}
	build_s = bench_now_s() - t0;
	printf("{\"engine\":\"%s\",\"n\":%zu,\"dim\":%u,\"m\":%" PRIu64
	       ",\"ef_construction\":%" PRIu64
	       ",\"build_s\":%.3f,\"inserts_per_s\":%.1f,\"mem_bytes\":%" PRIu64
	       ",\"metric\":\"%s\",\"quantize\":\"%s\",\"build_threads\":%u",
	       e.name, d->nb, d->dim, o->m, o->efc, build_s,
	       build_s > 0 ? (double)d->nb / build_s : 0.0, engine_mem(&e),
	       metric_names[o->metric], quant, build_threads);
	if (o->filter_label >= 0)
		printf(",\"filter_label\":%d", o->filter_label);
	if (kind == ENG_SHOAL) {
		sh_hnsw_info info;

		sh_hnsw_info_get(e.h, &info);
		printf(",\"kernels\":\"%s\",\"max_level\":%u",
		       info.kernels ? info.kernels : "?", info.max_level);
	}
	printf("}\n");
	fflush(stdout);
	logf_("%s: built in %.2f s (%.0f inserts/s)", e.name, build_s,
	      build_s > 0 ? (double)d->nb / build_s : 0.0);

	lat_all = xmalloc(nq * nrep, sizeof(float));
	qps = xmalloc(nrep, sizeof(double));
	pool_start(&pl, (unsigned)o->threads, &e);
	for (size_t fi = 0; fi < o->nef; fi++) {
		size_t ef = o->efs[fi];
		uint64_t plan[3] = {0, 0, 0}, ndist = 0, nresc = 0;
		double recall;

		e.ef = ef;
		if (e.ops)
			e.ops->set_ef(e.p, ef);
		if (pool_pass(&pl) < 0) /* warm-up */
			goto fail;
		for (size_t r = 0; r < nrep; r++) {
			double wall = pool_pass(&pl);

			if (wall < 0)
				goto fail;
			qps[r] = (double)nq / wall;
			memcpy(lat_all + r * nq, pl.lat_us, nq * sizeof(float));
		}
		/* Counts of the last timed pass. */
		for (unsigned i = 0; i < pl.n; i++) {
			for (int j = 0; j < 3; j++)
				plan[j] += pl.w[i].plan[j];
			ndist += pl.w[i].ndist;
			nresc += pl.w[i].nrescored;
		}
		recall = recall_of(d, pl.ids, k);
		qsort(lat_all, nq * nrep, sizeof(float), cmp_float);
		printf("{\"engine\":\"%s\",\"ef\":%zu,\"k\":%zu,"
		       "\"recall\":%.4f,",
		       e.name, ef, k, recall);
		{
			double *sorted = xmalloc(nrep, sizeof(double));

			memcpy(sorted, qps, nrep * sizeof(double));
			qsort(sorted, nrep, sizeof(double), cmp_double);
			printf("\"qps\":%.1f,", sorted[nrep / 2]);
			free(sorted);
		}
		printf("\"p50_us\":%.1f,\"p99_us\":%.1f,\"quantize\":\"%s\","
		       "\"threads\":%" PRIu64 ",\"nq\":%zu,\"repeat\":%zu,"
		       "\"qps_runs\":[",
		       bench_percentile(lat_all, nq * nrep, 0.50),
		       bench_percentile(lat_all, nq * nrep, 0.99), quant,
		       o->threads, nq, nrep);
		for (size_t r = 0; r < nrep; r++)
			printf("%s%.1f", r ? "," : "", qps[r]);
		printf("]");
		if (o->filter_label >= 0)
			printf(",\"filter_label\":%d,\"filter_pass\":%zu",
			       o->filter_label, d->nallow);
		if (kind == ENG_SHOAL) {
			printf(",\"plan\":{\"graph\":%" PRIu64
			       ",\"filtered_graph\":%" PRIu64
			       ",\"exact_scan\":%" PRIu64 "}"
			       ",\"ndist_per_q\":%.1f",
			       plan[0], plan[1], plan[2],
			       nq ? (double)ndist / (double)nq : 0.0);
			if (o->int8)
				printf(",\"rescored_per_q\":%.1f",
				       nq ? (double)nresc / (double)nq : 0.0);
		}
		printf("}\n");
		fflush(stdout);
	}
	rc = 0;
fail:
	pool_stop(&pl);
	if (rc)
		print_error_line(o, e.name, "search failed (see stderr)");
out:
	free(lat_all);
	free(qps);
	engine_free(&e);
	return rc;
}

static int cmd_hnsw(int argc, char **argv)
{
	struct opts o;
	struct data d;
	int failed = 0;

	if (parse_hnsw_opts(argc, argv, &o))
		return 2;
	if (load_data(&o, &d))
		return 1;
	for (int i = 0; i < o.nengines; i++) {
		if (run_engine(o.engines[i], &o, &d))
			failed = 1;
	}
	data_free(&d);
	return failed;
}

/* ---- gen: clustered synthetic data --------------------------------------- */

struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

/* Uniform in (0, 1). */
static double rng_unif(struct rng *r)
{
	return ((double)(rng_next(r) >> 11) + 0.5) * 0x1p-53;
}

static double rng_gauss(struct rng *r)
{
	return sqrt(-2.0 * log(rng_unif(r))) * cos(2 * M_PI * rng_unif(r));
}

struct gen_model {
	uint32_t dim, nc;
	float *centre;	 /* nc x dim */
	float *sigma;	 /* nc */
	double *cum;	 /* cumulative cluster weights, nc */
	uint8_t *label;	 /* dominant label per cluster */
	float *dimscale; /* per-dimension scale (anisotropy) */
};

static uint32_t gen_pick_cluster(const struct gen_model *g, struct rng *r)
{
	double u = rng_unif(r) * g->cum[g->nc - 1];
	uint32_t lo = 0, hi = g->nc - 1;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (g->cum[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* A point of a random cluster; its label is the cluster's with
 * probability 0.8, else uniform. */
static void gen_points(const struct gen_model *g, struct rng *r, size_t n,
		       float *out, uint8_t *labels)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t c = gen_pick_cluster(g, r);
		float *v = out + i * g->dim;
		const float *ctr = g->centre + (size_t)c * g->dim;

		for (uint32_t j = 0; j < g->dim; j++)
			v[j] = ctr[j] + (float)rng_gauss(r) * g->sigma[c] *
					    g->dimscale[j];
		if (rng_unif(r) < 0.8)
			labels[i] = g->label[c];
		else
			labels[i] = (uint8_t)(rng_next(r) % NLABELS);
	}
}

static int make_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0777) == 0)
		return 0;
	if (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	errf("%s: %s", dir,
	     errno == EEXIST ? "exists and is not a folder" : strerror(errno));
	return -1;
}

static int cmd_gen(int argc, char **argv)
{
	struct argit it = {.argc = argc, .i = 2, .argv = argv};
	uint64_t n = 0, dim = 0, nq = 0, seed = 1, nc = 100;
	const char *dir = NULL;
	struct gen_model g = {0};
	struct rng r;
	float *base = NULL, *qv = NULL;
	uint8_t *bl = NULL, *ql = NULL;
	int32_t *gt = NULL;
	uint32_t *gtcnt = NULL;
	size_t gtk;
	char path[4096], err[512];
	int rc = 1, ar;
	double w = 0;

	while ((ar = arg_next(&it)) == 1) {
		const char *f = it.flag, *s = it.val;

		if (!strcmp(f, "--n")) {
			if (parse_u64(f, s, 1, UINT32_MAX - 1, &n))
				return 2;
		} else if (!strcmp(f, "--dim")) {
			if (parse_u64(f, s, 1, SH_HNSW_MAX_DIM, &dim))
				return 2;
		} else if (!strcmp(f, "--queries")) {
			if (parse_u64(f, s, 1, UINT32_MAX, &nq))
				return 2;
		} else if (!strcmp(f, "--seed")) {
			if (parse_u64(f, s, 0, UINT64_MAX, &seed))
				return 2;
		} else if (!strcmp(f, "--clusters")) {
			if (parse_u64(f, s, 1, 1000000, &nc))
				return 2;
		} else if (!strcmp(f, "--out")) {
			dir = s;
		} else {
			errf("unknown flag '%s' for gen (try --help)", f);
			return 2;
		}
	}
	if (ar < 0)
		return 2;
	if (!n || !dim || !nq || !dir) {
		errf("gen: --n, --dim, --queries and --out are required");
		return 2;
	}
	if (strlen(dir) > sizeof(path) - 32) {
		errf("gen: --out path too long");
		return 2;
	}
	if (nc > n)
		nc = n;
	if (make_dir(dir))
		return 1;

	rng_seed(&r, seed);
	g.dim = (uint32_t)dim;
	g.nc = (uint32_t)nc;
	g.centre = xmalloc(nc * dim, sizeof(float));
	g.sigma = xmalloc(nc, sizeof(float));
	g.cum = xmalloc(nc, sizeof(double));
	g.label = xmalloc(nc, 1);
	g.dimscale = xmalloc(dim, sizeof(float));
	for (uint64_t j = 0; j < dim; j++)
		g.dimscale[j] = (float)(0.5 + rng_unif(&r));
	for (uint64_t c = 0; c < nc; c++) {
		for (uint64_t j = 0; j < dim; j++)
			g.centre[c * dim + j] = (float)rng_gauss(&r);
		/* Spreads log-uniform in [0.2, 0.8] of the centres' scale:
		 * tight clusters next to diffuse, overlapping ones. */
		g.sigma[c] = (float)(0.2 * exp(log(4.0) * rng_unif(&r)));
		/* Sizes: exponential weights (a flat Dirichlet). */
		w += -log(rng_unif(&r));
		g.cum[c] = w;
		g.label[c] = (uint8_t)(rng_next(&r) % NLABELS);
	}
	base = xmalloc(n * dim, sizeof(float));
	qv = xmalloc(nq * dim, sizeof(float));
	bl = xmalloc(n, 1);
	ql = xmalloc(nq, 1);
	gen_points(&g, &r, n, base, bl);
	gen_points(&g, &r, nq, qv, ql);
	logf_("gen: %" PRIu64 " base + %" PRIu64 " queries, dim %" PRIu64
	      ", %" PRIu64 " clusters, seed %" PRIu64,
	      n, nq, dim, nc, seed);

	gtk = n < GEN_GT_K ? n : GEN_GT_K;
	gt = xmalloc(nq * gtk, sizeof(int32_t));
	gtcnt = xmalloc(nq, sizeof(uint32_t));
	bench_exact_topk(base, n, qv, nq, (uint32_t)dim, false, NULL, gtk, gt,
			 gtcnt);

	snprintf(path, sizeof(path), "%s/base.fvecs", dir);
	if (fv_write_fvecs(path, base, n, (uint32_t)dim, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/query.fvecs", dir);
	if (fv_write_fvecs(path, qv, nq, (uint32_t)dim, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/groundtruth.ivecs", dir);
	if (fv_write_ivecs(path, gt, nq, (uint32_t)gtk, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/base.labels", dir);
	if (fv_write_labels(path, bl, n, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/query.labels", dir);
	if (fv_write_labels(path, ql, nq, err, sizeof(err)))
		goto werr;
	logf_("gen: wrote %s/{base.fvecs,query.fvecs,groundtruth.ivecs,"
	      "base.labels,query.labels}",
	      dir);
	rc = 0;
	goto out;
werr:
	errf("%s", err);
out:
	free(g.centre);
	free(g.sigma);
	free(g.cum);
	free(g.label);
	free(g.dimscale);
	free(base);
	free(qv);
	free(bl);
	free(ql);
	free(gt);
	free(gtcnt);
	return rc;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		}
	}
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "hnsw"))
		return cmd_hnsw(argc, argv);
	if (!strcmp(argv[1], "gen"))
		return cmd_gen(argc, argv);
#ifdef SHOAL_BENCH_NODE
	if (!strcmp(argv[1], "node"))
		return cmd_node(argc, argv);
#endif
#ifdef SHOAL_BENCH_CLUSTER
	if (!strcmp(argv[1], "cluster"))
		return cmd_cluster(argc, argv);
	if (!strcmp(argv[1], "rebalance"))
		return cmd_rebalance(argc, argv);
#endif
#ifdef SHOAL_BENCH_EMBED
	if (!strcmp(argv[1], "embed"))
		return cmd_embed(argc, argv);
#endif
#ifdef SHOAL_BENCH_INGEST
	if (!strcmp(argv[1], "ingest"))
		return cmd_ingest(argc, argv);
#endif
#ifdef SHOAL_BENCH_FMNIST
	if (!strcmp(argv[1], "fmnist"))
		return cmd_fmnist(argc, argv);
#endif
	errf("unknown command '%s' (hnsw, gen, fmnist, node, cluster, "
	     "rebalance, embed or ingest; try --help)",
	     argv[1]);
	return 2;
}
