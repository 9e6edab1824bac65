/*
 * The golden test: every backend reproduces the reference embeddings of
 * shared/data/minilm/golden.jsonl (sentence-transformers all-MiniLM-L6-v2),
 * one text at a time and as one padded batch of all of them.
 *
 * Needs the model (SHOAL_MODEL_DIR, installed by deploy/fetch-model.sh) and
 * golden.jsonl (SHOAL_GOLDEN, else SHOAL_GOLDEN_DEFAULT from meson); exits
 * 77 (SKIP) when either is missing.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "bert.h"
#include "error.h"

#define MAX_TEXTS 4096 /* golden.jsonl has 29; crosscheck.sh makes more */
#define CPU_MIN_COS 0.9999
#define CUDA_MIN_COS 0.999

struct golden {
	int n;
	char *text[MAX_TEXTS];
	size_t len[MAX_TEXTS];
	float *vec[MAX_TEXTS];
	int32_t ids[MAX_TEXTS][SH_BERT_MAX_TOKENS];
	int ntok[MAX_TEXTS];
	int dim;
};

static struct sh_bert_model *g_model;
static struct sh_wordpiece *g_tok;
static struct golden g_gold;
static const char *g_model_dir;

static double cosine(const float *a, const float *b, int n)
{
	double ab = 0, aa = 0, bb = 0;
	for (int i = 0; i < n; i++) {
		ab += (double)a[i] * b[i];
		aa += (double)a[i] * a[i];
		bb += (double)b[i] * b[i];
	}
	return ab / (sqrt(aa) * sqrt(bb) + 1e-30);
}

static int load_golden(const char *path, struct golden *g)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, f)) > 0 && g->n < MAX_TEXTS) {
		cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "vector");
		if (!cJSON_IsString(t) || !cJSON_IsArray(v)) {
			cJSON_Delete(o);
			continue;
		}
		int i = g->n++;
		g->text[i] = strdup(t->valuestring);
		g->len[i] = strlen(t->valuestring);
		g->dim = cJSON_GetArraySize(v);
		g->vec[i] = calloc((size_t)g->dim, sizeof(float));
		int j = 0;
		const cJSON *x;
		cJSON_ArrayForEach(x, v) g->vec[i][j++] = (float)x->valuedouble;
		cJSON_Delete(o);
	}
	free(line);
	fclose(f);
	return g->n > 0 ? 0 : -1;
}

static void free_golden(struct golden *g)
{
	for (int i = 0; i < g->n; i++) {
		free(g->text[i]);
		free(g->vec[i]);
	}
	memset(g, 0, sizeof(*g));
}

static int setup(void **state)
{
	char err[512];
	int rc = sh_bert_load(g_model_dir, &g_model, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "load: %s\n", err);
		return -1;
	}
	rc = sh_wordpiece_load(g_model_dir, &g_tok, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "tokenizer: %s\n", err);
		return -1;
	}
	for (int i = 0; i < g_gold.n; i++) {
		rc = sh_wordpiece_encode(g_tok, g_gold.text[i], g_gold.len[i],
					 g_gold.ids[i], SH_BERT_MAX_TOKENS,
					 &g_gold.ntok[i], err, sizeof(err));
		if (rc) {
			fprintf(stderr, "encode %d: %s\n", i, err);
			return -1;
		}
	}
	if (g_gold.dim != g_model->cfg.hidden) {
		fprintf(stderr, "golden dim %d, model %d\n", g_gold.dim,
			g_model->cfg.hidden);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	sh_wordpiece_free(g_tok);
	sh_bert_free(g_model);
	g_tok = NULL;
	g_model = NULL;
	return 0;
}

/* Embeds every golden text one at a time; out: n x dim. */
static void embed_single(const struct sh_bert_backend_ops *ops, float *out)
{
	char err[512];
	void *ctx = NULL;
	int rc =
	    ops->create(g_model, 1, SH_BERT_MAX_TOKENS, &ctx, err, sizeof(err));
	if (rc)
		fail_msg("%s create: %s", ops->name, err);
	for (int i = 0; i < g_gold.n; i++) {
		struct sh_bert_batch b = {.n = 1,
					  .seq = g_gold.ntok[i],
					  .ids = g_gold.ids[i],
					  .len = &g_gold.ntok[i]};
		rc = ops->forward(ctx, &b, out + (size_t)i * g_gold.dim, err,
				  sizeof(err));
		if (rc)
			fail_msg("%s forward %d: %s", ops->name, i, err);
	}
	ops->destroy(ctx);
}

/* Embeds all golden texts as one batch padded to the longest; out: n x dim.
 */
static void embed_batch(const struct sh_bert_backend_ops *ops, float *out)
{
	char err[512];
	void *ctx = NULL;
	int seq = 0;
	for (int i = 0; i < g_gold.n; i++)
		if (g_gold.ntok[i] > seq)
			seq = g_gold.ntok[i];
	int32_t *ids = calloc((size_t)g_gold.n * seq, sizeof(int32_t));
	assert_non_null(ids);
	for (int i = 0; i < g_gold.n; i++) {
		memcpy(ids + (size_t)i * seq, g_gold.ids[i],
		       (size_t)g_gold.ntok[i] * sizeof(int32_t));
		/* padding is ignored: fill it with a valid, wrong token */
		for (int p = g_gold.ntok[i]; p < seq; p++)
			ids[(size_t)i * seq + p] = 1000;
	}
	int rc = ops->create(g_model, g_gold.n, SH_BERT_MAX_TOKENS, &ctx, err,
			     sizeof(err));
	if (rc)
		fail_msg("%s create: %s", ops->name, err);
	struct sh_bert_batch b = {
	    .n = g_gold.n, .seq = seq, .ids = ids, .len = g_gold.ntok};
	rc = ops->forward(ctx, &b, out, err, sizeof(err));
	ops->destroy(ctx);
	free(ids);
	if (rc)
		fail_msg("%s forward: %s", ops->name, err);
}

static void check_golden(const char *what, const float *out, double min_cos)
{
	double worst = 1.0;
	int bad = 0;
	for (int i = 0; i < g_gold.n; i++) {
		double c = cosine(out + (size_t)i * g_gold.dim, g_gold.vec[i],
				  g_gold.dim);
		if (c < worst)
			worst = c;
		if (c < min_cos) {
			print_error("%s: text %d (%d tokens) cosine %.7f < "
				    "%.4f\n",
				    what, i, g_gold.ntok[i], c, min_cos);
			bad++;
		}
	}
	print_message("%s: %d texts, worst cosine %.9f (1 - %.1e)\n", what,
		      g_gold.n, worst, 1 - worst);
	assert_int_equal(bad, 0);
}

static void test_cpu_single_texts_match_golden(void **state)
{
	float *out = calloc((size_t)g_gold.n * g_gold.dim, sizeof(float));
	embed_single(&sh_bert_cpu, out);
	check_golden("cpu single", out, CPU_MIN_COS);
	free(out);
}

static void test_cpu_padded_batch_matches_golden(void **state)
{
	float *out = calloc((size_t)g_gold.n * g_gold.dim, sizeof(float));
	embed_batch(&sh_bert_cpu, out);
	check_golden("cpu batch", out, CPU_MIN_COS);
	free(out);
}

/* Every compiled kernel variant (generic, avx2, avx512) gives the same
 * vectors, whichever one this CPU would pick. */
static void test_cpu_every_kernel_variant_matches_golden(void **state)
{
	static const char *const variant[] = {"generic", "avx2", "avx512"};
	float *out = calloc((size_t)g_gold.n * g_gold.dim, sizeof(float));
	for (size_t v = 0; v < sizeof(variant) / sizeof(variant[0]); v++) {
		char what[64];
		setenv("SHOAL_EMBED_KERNELS", variant[v], 1);
		embed_batch(&sh_bert_cpu, out);
		/* (a named copy: gcc's sanitized -O3 build otherwise
		 * believes the argument may be NULL) */
		const char *name = variant[v] ? variant[v] : "?";
		snprintf(what, sizeof(what),
			 "cpu batch, %s kernels (when the cpu has them)", name);
		check_golden(what, out, CPU_MIN_COS);
	}
	unsetenv("SHOAL_EMBED_KERNELS");
	free(out);
}

/* One worker thread or several give the same vectors. */
static void test_cpu_thread_count_does_not_change_vectors(void **state)
{
	size_t n = (size_t)g_gold.n * g_gold.dim;
	float *a = calloc(n, sizeof(float)), *b = calloc(n, sizeof(float));
	setenv("SHOAL_EMBED_THREADS", "1", 1);
	embed_batch(&sh_bert_cpu, a);
	setenv("SHOAL_EMBED_THREADS", "3", 1);
	embed_batch(&sh_bert_cpu, b);
	unsetenv("SHOAL_EMBED_THREADS");
	for (int i = 0; i < g_gold.n; i++)
		assert_true(cosine(a + (size_t)i * g_gold.dim,
				   b + (size_t)i * g_gold.dim,
				   g_gold.dim) > 0.999999);
	free(a);
	free(b);
}

static void test_cuda_matches_golden_and_cpu(void **state)
{
#if EMBED_HAVE_CUDA_BACKEND
	if (!sh_bert_cuda_available()) {
		print_message("cuda: no usable GPU at run time, skipped\n");
		skip();
	}
	size_t n = (size_t)g_gold.n * g_gold.dim;
	float *gpu = calloc(n, sizeof(float)), *cpu = calloc(n, sizeof(float));
	embed_single(&sh_bert_cuda, gpu);
	check_golden("cuda single", gpu, CUDA_MIN_COS);
	embed_batch(&sh_bert_cuda, gpu);
	check_golden("cuda batch", gpu, CUDA_MIN_COS);
	embed_batch(&sh_bert_cpu, cpu);
	double worst = 1.0;
	for (int i = 0; i < g_gold.n; i++) {
		double c = cosine(gpu + (size_t)i * g_gold.dim,
				  cpu + (size_t)i * g_gold.dim, g_gold.dim);
		worst = c < worst ? c : worst;
	}
	print_message("cuda vs cpu: worst cosine %.8f\n", worst);
	assert_true(worst >= CUDA_MIN_COS);
	free(gpu);
	free(cpu);
#else
	print_message("cuda: this build has no CUDA backend, skipped\n");
	skip();
#endif
}

int main(void)
{
	g_model_dir = getenv("SHOAL_MODEL_DIR");
	if (!g_model_dir || !*g_model_dir) {
		printf("SKIP: SHOAL_MODEL_DIR is not set\n");
		return 77;
	}
	char probe[4096];
	snprintf(probe, sizeof(probe), "%s/config.json", g_model_dir);
	if (access(probe, R_OK)) {
		printf("SKIP: no model at %s (run deploy/fetch-model.sh)\n",
		       g_model_dir);
		return 77;
	}
	const char *gp = getenv("SHOAL_GOLDEN");
	if (!gp || !*gp)
		gp = getenv("SHOAL_GOLDEN_DEFAULT");
	if (!gp || load_golden(gp, &g_gold)) {
		printf("SKIP: no golden.jsonl (SHOAL_GOLDEN=%s)\n",
		       gp ? gp : "");
		return 77;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cpu_single_texts_match_golden),
	    cmocka_unit_test(test_cpu_padded_batch_matches_golden),
	    cmocka_unit_test(test_cpu_every_kernel_variant_matches_golden),
	    cmocka_unit_test(test_cpu_thread_count_does_not_change_vectors),
	    cmocka_unit_test(test_cuda_matches_golden_and_cpu),
	};
	int rc = cmocka_run_group_tests(tests, setup, teardown);
	free_golden(&g_gold);
	return rc;
}
