/*
 * gpu_check: the CUDA backend against golden.jsonl and the CPU backend, and
 * its throughput, on a machine with a GPU. Built and run by gpu-check.sh
 * (not part of the meson build, which has its own tests); prints one JSON
 * object per line and exits 1 when a check fails.
 *
 *   gpu_check MODEL_DIR GOLDEN_JSONL [--no-bench] [--no-cpu] [--profile]
 *
 * --profile runs only three forward passes of 1024 short queries, for a
 * profiler (ncu) to time their kernels.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "bert.h"
#include "error.h"

#define DIM_MAX 4096
#define SEQ SH_BERT_MAX_TOKENS
#define BENCH_MAX 1024

struct golden {
	char *text;
	float *vec;
	int32_t ids[SEQ];
	int len;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cosine(const float *a, const float *b, int d)
{
	double ab = 0, aa = 0, bb = 0;
	for (int k = 0; k < d; k++) {
		ab += (double)a[k] * b[k];
		aa += (double)a[k] * a[k];
		bb += (double)b[k] * b[k];
	}
	return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		if (buf) {
			buf[n] = 0;
			*len = (size_t)n;
		}
	}
	fclose(f);
	return buf;
}

/* One golden record per line: {"text": ..., "vector": [...]}. */
static int load_golden(const char *path, int dim, struct golden **out)
{
	size_t len = 0;
	char *buf = slurp(path, &len), *line, *save = NULL;
	struct golden *g = NULL;
	int n = 0;
	if (!buf)
		return -1;
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		cJSON *o = cJSON_Parse(line);
		cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
		cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "vector");
		if (!cJSON_IsString(t) || !cJSON_IsArray(v) ||
		    cJSON_GetArraySize(v) != dim) {
			cJSON_Delete(o);
			continue;
		}
		g = realloc(g, (size_t)(n + 1) * sizeof(*g));
		g[n].text = strdup(t->valuestring);
		g[n].vec = malloc((size_t)dim * sizeof(float));
		for (int k = 0; k < dim; k++)
			g[n].vec[k] =
			    (float)cJSON_GetArrayItem(v, k)->valuedouble;
		n++;
		cJSON_Delete(o);
	}
	free(buf);
	*out = g;
	return n;
}

/* Pads rows of ids into one batch of seq = the longest. */
static void make_batch(struct sh_bert_batch *b, int32_t *ids, int *lens,
		       struct golden *g, int n)
{
	int seq = 1;
	for (int i = 0; i < n; i++)
		seq = g[i].len > seq ? g[i].len : seq;
	for (int i = 0; i < n; i++) {
		memset(ids + (size_t)i * seq, 0, (size_t)seq * sizeof(int32_t));
		memcpy(ids + (size_t)i * seq, g[i].ids,
		       (size_t)g[i].len * sizeof(int32_t));
		lens[i] = g[i].len;
	}
	b->n = n;
	b->seq = seq;
	b->ids = ids;
	b->len = lens;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Short product queries, 5-15 tokens with [CLS] and [SEP]. */
static const char *adj[] = {"red",	"waterproof",  "leather",   "wooden",
			    "vintage",	"lightweight", "stainless", "organic",
			    "wireless", "kids",	       "ergonomic", "foldable"};
static const char *noun[] = {"running shoes", "backpack",    "office chair",
			     "coffee table",  "rain jacket", "handbag",
			     "hiking boots",  "desk lamp",   "sofa",
			     "water bottle",  "wool scarf",  "bookshelf"};
static const char *tail[] = {"",
			     " for men",
			     " with pockets",
			     " under 50 dollars",
			     " size 10",
			     " for a small apartment"};

/* BENCH_MAX distinct short queries into q; the total of their tokens. */
static long make_queries(const struct sh_wordpiece *tok, struct golden *q)
{
	char text[256], err[256];
	long toks = 0;
	unsigned s = 12345;
	for (int i = 0; i < BENCH_MAX; i++) {
		s = s * 1103515245u + 12345u;
		unsigned r = s >> 8;
		snprintf(text, sizeof(text), "%s %s %s%s", adj[r % 12],
			 adj[(r / 12) % 12], noun[(r / 144) % 12],
			 tail[(r / 1728) % 6]);
		if (sh_wordpiece_encode(tok, text, strlen(text), q[i].ids, SEQ,
					&q[i].len, err, sizeof(err))) {
			fprintf(stderr, "encode: %s\n", err);
			return -1;
		}
		toks += q[i].len;
	}
	return toks;
}

/* CUDA vs CPU on batch b with the model cut to layers; gold (when given)
 * also rates the CPU's vectors. Prints one line; 1 when it fails. */
static int vs_cpu(const struct sh_bert_model *full, int layers,
		  const struct sh_bert_batch *b, float *out_g,
		  const struct golden *gold)
{
	struct sh_bert_model mk = *full;
	int dim = full->cfg.hidden, n = b->n, bad = 0;
	float *oc = calloc((size_t)n * dim, sizeof(float));
	float *og = calloc((size_t)n * dim, sizeof(float));
	void *cu = NULL, *cpu = NULL;
	char err[512];
	double mn = 1, mg = 1, t0, tc;
	int worst = -1;

	mk.cfg.layers = layers;
	t0 = now_s();
	if (sh_bert_cpu.create(&mk, n, b->seq, &cpu, err, sizeof(err)) ||
	    sh_bert_cpu.forward(cpu, b, oc, err, sizeof(err))) {
		fprintf(stderr, "cpu: %s\n", err);
		bad = 1;
		goto out;
	}
	tc = now_s() - t0;
	if (sh_bert_cuda.create(&mk, n, b->seq, &cu, err, sizeof(err)) ||
	    sh_bert_cuda.forward(cu, b, og, err, sizeof(err))) {
		fprintf(stderr, "cuda: %s\n", err);
		bad = 1;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		double cs =
		    cosine(og + (size_t)i * dim, oc + (size_t)i * dim, dim);
		if (cs < mn) {
			mn = cs;
			worst = i;
		}
		if (gold) {
			double cg =
			    cosine(oc + (size_t)i * dim, gold[i].vec, dim);
			mg = cg < mg ? cg : mg;
		}
	}
	if (layers == full->cfg.layers)
		memcpy(out_g, og, (size_t)n * dim * sizeof(float));
	bad = mn < 0.999;
	printf("{\"check\":\"cuda_vs_cpu\",\"layers\":%d,\"n\":%d,"
	       "\"min_cos\":%.7f,\"worst\":%d,\"cpu_golden_min_cos\":%.7f,"
	       "\"cpu_seconds\":%.3f,\"pass\":%s}\n",
	       layers, n, mn, worst, gold ? mg : -1.0, tc,
	       bad ? "false" : "true");
out:
	if (cpu)
		sh_bert_cpu.destroy(cpu);
	if (cu)
		sh_bert_cuda.destroy(cu);
	free(oc);
	free(og);
	return bad;
}

/* texts/s and latency of one batch size over about a second, the batches
 * taken in turn from the query pool. */
static int bench_batch(const char *label, void *cu, struct golden *q, int bs,
		       int32_t *ids, int *lens, float *out)
{
	int iters = 0, cap = 20000, off = 0;
	double *lat = malloc((size_t)cap * sizeof(double));
	double start, total;
	long ntexts = 0;
	struct sh_bert_batch b;
	char err[512];
	for (int w = 0; w < 20; w++) {
		make_batch(&b, ids, lens, q + (w * bs) % (BENCH_MAX - bs + 1),
			   bs);
		if (sh_bert_cuda.forward(cu, &b, out, err, sizeof(err))) {
			fprintf(stderr, "forward: %s\n", err);
			free(lat);
			return 1;
		}
	}
	start = now_s();
	while (iters < cap && (now_s() - start < 1.0 || iters < 10)) {
		make_batch(&b, ids, lens, q + off, bs);
		off = (off + bs) % (BENCH_MAX - bs + 1);
		double a = now_s();
		if (sh_bert_cuda.forward(cu, &b, out, err, sizeof(err))) {
			fprintf(stderr, "forward: %s\n", err);
			free(lat);
			return 1;
		}
		lat[iters++] = now_s() - a;
		ntexts += bs;
	}
	total = now_s() - start;
	qsort(lat, (size_t)iters, sizeof(double), cmp_double);
	printf("{\"bench\":\"%s\",\"batch\":%d,\"iters\":%d,"
	       "\"texts_per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
	       label, bs, iters, (double)ntexts / total, lat[iters / 2] * 1e3,
	       lat[(int)(iters * 0.99)] * 1e3);
	free(lat);
	return 0;
}

/* Two contexts used at once from two threads (the server's model
 * instances): golden texts one by one (graphs captured and replayed) and as
 * one batch, each thread checking its own results. */
struct conc_arg {
	const struct sh_bert_model *m;
	struct golden *g;
	int ng;
	double min_cos;
	int rc;
};

static void *conc_worker(void *p)
{
	struct conc_arg *a = p;
	int dim = a->m->cfg.hidden;
	void *cu = NULL;
	char err[512];
	int32_t *ids = calloc((size_t)a->ng * SEQ, sizeof(int32_t));
	int *lens = calloc((size_t)a->ng, sizeof(int));
	float *out = calloc((size_t)a->ng * dim, sizeof(float));
	struct sh_bert_batch b;
	a->min_cos = 1;
	a->rc = sh_bert_cuda.create(a->m, a->ng, SEQ, &cu, err, sizeof(err));
	for (int pass = 0; pass < 4 && !a->rc; pass++) {
		for (int i = 0; i < a->ng && !a->rc; i++) {
			make_batch(&b, ids, lens, &a->g[i], 1);
			a->rc =
			    sh_bert_cuda.forward(cu, &b, out, err, sizeof(err));
			double cs = cosine(out, a->g[i].vec, dim);
			a->min_cos = cs < a->min_cos ? cs : a->min_cos;
		}
		make_batch(&b, ids, lens, a->g, a->ng);
		if (!a->rc)
			a->rc =
			    sh_bert_cuda.forward(cu, &b, out, err, sizeof(err));
		for (int i = 0; i < a->ng && !a->rc; i++) {
			double cs =
			    cosine(out + (size_t)i * dim, a->g[i].vec, dim);
			a->min_cos = cs < a->min_cos ? cs : a->min_cos;
		}
	}
	if (a->rc)
		fprintf(stderr, "concurrent: %s\n", err);
	if (cu)
		sh_bert_cuda.destroy(cu);
	free(ids);
	free(lens);
	free(out);
	return NULL;
}

int main(int argc, char **argv)
{
	char err[512];
	struct sh_bert_model *m = NULL;
	struct sh_wordpiece *tok = NULL;
	struct golden *g = NULL;
	void *cu = NULL;
	int ng, dim, rc, failed = 0, bench = 1, use_cpu = 1, profile = 0;
	double t0;

	if (argc < 3) {
		fprintf(stderr,
			"usage: %s MODEL_DIR GOLDEN [--no-bench] "
			"[--no-cpu]\n",
			argv[0]);
		return 2;
	}
	for (int a = 3; a < argc; a++) {
		if (!strcmp(argv[a], "--no-bench"))
			bench = 0;
		else if (!strcmp(argv[a], "--no-cpu"))
			use_cpu = 0;
		else if (!strcmp(argv[a], "--profile"))
			profile = 1;
	}
	printf("{\"check\":\"cuda_available\",\"value\":%d}\n",
	       sh_bert_cuda_available());
	if (!sh_bert_cuda_available())
		return 77;
	t0 = now_s();
	if (sh_bert_load(argv[1], &m, err, sizeof(err)) ||
	    sh_wordpiece_load(argv[1], &tok, err, sizeof(err))) {
		fprintf(stderr, "load: %s\n", err);
		return 1;
	}
	dim = m->cfg.hidden;
	printf("{\"check\":\"load\",\"seconds\":%.3f,\"hidden\":%d}\n",
	       now_s() - t0, dim);
	ng = load_golden(argv[2], dim, &g);
	if (ng <= 0) {
		fprintf(stderr, "golden: cannot read %s\n", argv[2]);
		return 1;
	}
	for (int i = 0; i < ng; i++) {
		if (sh_wordpiece_encode(tok, g[i].text, strlen(g[i].text),
					g[i].ids, SEQ, &g[i].len, err,
					sizeof(err))) {
			fprintf(stderr, "encode %d: %s\n", i, err);
			return 1;
		}
	}

	t0 = now_s();
	/* a small context when only checking (faster under compute-sanitizer)
	 */
	rc = sh_bert_cuda.create(m, bench || profile ? BENCH_MAX : 64, SEQ, &cu,
				 err, sizeof(err));
	if (rc) {
		fprintf(stderr, "cuda create: %s\n", err);
		return 1;
	}
	printf("{\"check\":\"cuda_create\",\"seconds\":%.3f}\n", now_s() - t0);

	int32_t *ids = calloc((size_t)BENCH_MAX * SEQ, sizeof(int32_t));
	int *lens = calloc(BENCH_MAX, sizeof(int));
	float *out = calloc((size_t)BENCH_MAX * dim, sizeof(float));
	float *out_b = calloc((size_t)ng * dim, sizeof(float));
	struct sh_bert_batch b;

	if (profile) {
		struct golden *q = calloc(BENCH_MAX, sizeof(*q));
		if (make_queries(tok, q) < 0)
			return 1;
		make_batch(&b, ids, lens, q, BENCH_MAX);
		for (int k = 0; k < 3; k++)
			if (sh_bert_cuda.forward(cu, &b, out, err, sizeof(err)))
				fprintf(stderr, "forward: %s\n", err);
		printf("{\"check\":\"profile\",\"batch\":%d,\"seq\":%d}\n",
		       BENCH_MAX, b.seq);
		free(q);
		sh_bert_cuda.destroy(cu);
		return 0;
	}

	/* one at a time, three times: the CUDA graphs of small batches are
	 * captured on a shape's second pass and replayed on the third */
	for (int pass = 0; pass < 3; pass++) {
		double mn = 1, sum = 0;
		int worst = -1;
		for (int i = 0; i < ng; i++) {
			make_batch(&b, ids, lens, &g[i], 1);
			if (sh_bert_cuda.forward(cu, &b, out, err,
						 sizeof(err))) {
				fprintf(stderr, "forward: %s\n", err);
				return 1;
			}
			double cs = cosine(out, g[i].vec, dim);
			sum += cs;
			if (cs < mn) {
				mn = cs;
				worst = i;
			}
		}
		printf("{\"check\":\"golden_single\",\"backend\":\"cuda\","
		       "\"pass_no\":%d,\"n\":%d,\"min_cos\":%.7f,"
		       "\"mean_cos\":%.7f,\"worst\":%d,\"pass\":%s}\n",
		       pass, ng, mn, sum / ng, worst,
		       mn >= 0.999 ? "true" : "false");
		failed |= mn < 0.999;
	}
	/* the golden texts of at most 64 tokens as one batch (the fused
	 * short-sequence attention, over rows of different lengths) */
	{
		struct golden *sh = calloc((size_t)ng, sizeof(*sh));
		int ns = 0;
		double mn = 1;
		for (int i = 0; i < ng; i++)
			if (g[i].len <= 64)
				sh[ns++] = g[i];
		make_batch(&b, ids, lens, sh, ns);
		if (sh_bert_cuda.forward(cu, &b, out, err, sizeof(err))) {
			fprintf(stderr, "forward: %s\n", err);
			return 1;
		}
		for (int i = 0; i < ns; i++) {
			double cs =
			    cosine(out + (size_t)i * dim, sh[i].vec, dim);
			mn = cs < mn ? cs : mn;
		}
		printf("{\"check\":\"golden_short_batch\",\"backend\":"
		       "\"cuda\",\"n\":%d,\"seq\":%d,\"min_cos\":%.7f,"
		       "\"pass\":%s}\n",
		       ns, b.seq, mn, mn >= 0.999 ? "true" : "false");
		failed |= mn < 0.999;
		free(sh);
	}
	/* all as one padded batch, twice (the second must match the first) */
	{
		double mn = 1, sum = 0, rep = 1;
		make_batch(&b, ids, lens, g, ng);
		if (sh_bert_cuda.forward(cu, &b, out_b, err, sizeof(err)) ||
		    sh_bert_cuda.forward(cu, &b, out, err, sizeof(err))) {
			fprintf(stderr, "forward: %s\n", err);
			return 1;
		}
		for (int i = 0; i < ng; i++) {
			double cs =
			    cosine(out_b + (size_t)i * dim, g[i].vec, dim);
			double cr = cosine(out_b + (size_t)i * dim,
					   out + (size_t)i * dim, dim);
			sum += cs;
			mn = cs < mn ? cs : mn;
			rep = cr < rep ? cr : rep;
		}
		printf("{\"check\":\"golden_batch\",\"backend\":\"cuda\","
		       "\"n\":%d,\"seq\":%d,\"min_cos\":%.7f,\"mean_cos\":%."
		       "7f,\"repeat_min_cos\":%.7f,\"pass\":%s}\n",
		       ng, b.seq, mn, sum / ng, rep,
		       mn >= 0.999 ? "true" : "false");
		failed |= mn < 0.999;
	}
	/* bad input is an error, not a crash */
	{
		int bad_len = 0, r1, r2;
		struct sh_bert_batch bb = {1, 1, ids, &bad_len};
		int32_t save = ids[0];
		r1 = sh_bert_cuda.forward(cu, &bb, out, err, sizeof(err));
		lens[0] = 1;
		ids[0] = m->cfg.vocab_size;
		bb.len = lens;
		r2 = sh_bert_cuda.forward(cu, &bb, out, err, sizeof(err));
		ids[0] = save;
		printf("{\"check\":\"bad_input\",\"len0\":\"%s\","
		       "\"bad_id\":\"%s\",\"pass\":%s}\n",
		       sh_errname(r1), sh_errname(r2),
		       r1 == SH_EINVAL && r2 == SH_EINVAL ? "true" : "false");
		failed |= !(r1 == SH_EINVAL && r2 == SH_EINVAL);
	}
	/* the longest golden text 64 times in one batch: the long path's
	 * attention in more than one chunk of sequences */
	{
		struct golden *lg = NULL, *rows = calloc(64, sizeof(*rows));
		double mn = 1;
		for (int i = 0; i < ng; i++)
			if (!lg || g[i].len > lg->len)
				lg = &g[i];
		for (int i = 0; i < 64; i++)
			rows[i] = *lg;
		make_batch(&b, ids, lens, rows, 64);
		if (sh_bert_cuda.forward(cu, &b, out, err, sizeof(err))) {
			fprintf(stderr, "forward: %s\n", err);
			return 1;
		}
		for (int i = 0; i < 64; i++) {
			double cs = cosine(out + (size_t)i * dim, lg->vec, dim);
			mn = cs < mn ? cs : mn;
		}
		printf("{\"check\":\"long_batch64\",\"seq\":%d,\"min_cos\":"
		       "%.7f,\"pass\":%s}\n",
		       b.seq, mn, mn >= 0.999 ? "true" : "false");
		failed |= mn < 0.999;
		free(rows);
	}
	if (bench) {
		pthread_t th[2];
		struct conc_arg ca[2];
		for (int k = 0; k < 2; k++) {
			ca[k] = (struct conc_arg){m, g, ng, 0, 0};
			pthread_create(&th[k], NULL, conc_worker, &ca[k]);
		}
		for (int k = 0; k < 2; k++)
			pthread_join(th[k], NULL);
		int ok = !ca[0].rc && !ca[1].rc && ca[0].min_cos >= 0.999 &&
			 ca[1].min_cos >= 0.999;
		printf("{\"check\":\"two_threads\",\"min_cos\":[%.7f,%.7f],"
		       "\"rc\":[%d,%d],\"pass\":%s}\n",
		       ca[0].min_cos, ca[1].min_cos, ca[0].rc, ca[1].rc,
		       ok ? "true" : "false");
		failed |= !ok;
	}
	/* against the CPU backend, the same batch, after 1 layer (a copy of
	 * the model cut short) and after all of them */
	if (use_cpu) {
		make_batch(&b, ids, lens, g, ng);
		failed |= vs_cpu(m, 1, &b, out_b, 0);
		failed |= vs_cpu(m, m->cfg.layers, &b, out_b, g);
	}

	if (bench) {
		struct golden *q = calloc(BENCH_MAX, sizeof(*q));
		long toks = make_queries(tok, q);
		if (toks < 0)
			return 1;
		printf("{\"check\":\"bench_queries\",\"n\":%d,"
		       "\"mean_tokens\":%.2f}\n",
		       BENCH_MAX, (double)toks / BENCH_MAX);
		static const int sizes[] = {1, 2, 4, 8, 64, 256, 1024};
		for (size_t si = 0; si < sizeof(sizes) / sizeof(*sizes); si++)
			if (bench_batch("cuda", cu, q, sizes[si], ids, lens,
					out))
				return 1;
		/* the same queries one by one and as one batch of 64 */
		{
			float *one = calloc((size_t)dim, sizeof(float));
			double mn = 1;
			make_batch(&b, ids, lens, q, 64);
			if (sh_bert_cuda.forward(cu, &b, out, err, sizeof(err)))
				return 1;
			for (int i = 0; i < 64; i++) {
				struct sh_bert_batch b1;
				make_batch(&b1, ids, lens, q + i, 1);
				if (sh_bert_cuda.forward(cu, &b1, one, err,
							 sizeof(err)))
					return 1;
				double cs =
				    cosine(one, out + (size_t)i * dim, dim);
				mn = cs < mn ? cs : mn;
			}
			printf("{\"check\":\"single_vs_batch64\",\"min_cos\":"
			       "%.7f,\"pass\":%s}\n",
			       mn, mn >= 0.999 ? "true" : "false");
			failed |= mn < 0.999;
			free(one);
		}
		/* small batches without CUDA graphs, for comparison */
		{
			void *ng_ctx = NULL;
			setenv("SHOAL_CUDA_GRAPHS", "0", 1);
			if (sh_bert_cuda.create(m, 8, SEQ, &ng_ctx, err,
						sizeof(err)) == 0) {
				bench_batch("cuda_nographs", ng_ctx, q, 1, ids,
					    lens, out);
				bench_batch("cuda_nographs", ng_ctx, q, 4, ids,
					    lens, out);
				sh_bert_cuda.destroy(ng_ctx);
			}
			unsetenv("SHOAL_CUDA_GRAPHS");
		}
		/* long texts: the golden set's two longest, 256 tokens each */
		{
			int bs = 64, iters = 0;
			struct golden *lg = NULL;
			for (int i = 0; i < ng; i++)
				if (!lg || g[i].len > lg->len)
					lg = &g[i];
			struct golden *rows = calloc((size_t)bs, sizeof(*rows));
			for (int i = 0; i < bs; i++)
				rows[i] = *lg;
			make_batch(&b, ids, lens, rows, bs);
			sh_bert_cuda.forward(cu, &b, out, err, sizeof(err));
			double start = now_s();
			while (now_s() - start < 1.0 || iters < 5) {
				if (sh_bert_cuda.forward(cu, &b, out, err,
							 sizeof(err))) {
					fprintf(stderr, "forward: %s\n", err);
					return 1;
				}
				iters++;
			}
			double total = now_s() - start;
			printf(
			    "{\"bench\":\"cuda_long\",\"batch\":%d,\"seq\":%d,"
			    "\"texts_per_s\":%.0f,\"tokens_per_s\":%.0f,"
			    "\"ms_per_batch\":%.3f}\n",
			    bs, lg->len, bs * iters / total,
			    (double)bs * lg->len * iters / total,
			    total / iters * 1e3);
			free(rows);
		}
		free(q);
	}

	sh_bert_cuda.destroy(cu);
	printf("{\"check\":\"done\",\"failed\":%d}\n", failed);
	for (int i = 0; i < ng; i++) {
		free(g[i].text);
		free(g[i].vec);
	}
	free(g);
	free(ids);
	free(lens);
	free(out);
	free(out_b);
	sh_wordpiece_free(tok);
	sh_bert_free(m);
	return failed;
}
