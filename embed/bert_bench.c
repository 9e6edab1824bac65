/*
 * bert_bench: texts/s of a backend's forward pass per batch size, for short
 * product queries (5-15 tokens with [CLS] and [SEP]). Tokenization is done
 * once, outside the timing. One JSON line per (backend, batch).
 *
 *   bert_bench MODEL_DIR [SECONDS_PER_POINT] [BATCH...]
 *   e.g. bert_bench models/all-MiniLM-L6-v2 2 1 8 64 256
 *
 * SHOAL_EMBED_THREADS and SHOAL_EMBED_KERNELS select the CPU backend's
 * worker count and kernels.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bert.h"
#include "error.h"

#define NQ 512

static const char *const adj[] = {
    "red",	 "blue",    "cotton", "leather",    "wireless",
    "stainless", "vintage", "slim",   "waterproof", "organic"};
static const char *const noun[] = {
    "kurti", "sneakers", "backpack", "watch", "headphones",
    "sofa",  "jacket",	 "kettle",   "saree", "lamp"};
static const char *const tail[] = {
    "for women", "for men under 500",	"with free delivery",  "size m",
    "",		 "for kids, pack of 2", "best price in india", "xl"};

static const char *const extra[] = {
    "", "", "brand new", "size 42", "under 1000 rs", "combo offer"};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench(const struct sh_bert_backend_ops *ops,
		 const struct sh_bert_model *m, int32_t (*ids)[32],
		 const int *len, int batch, double seconds)
{
	char err[256];
	void *ctx;
	if (ops->create(m, batch, 32, &ctx, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", ops->name, err);
		return 1;
	}
	int32_t *bids = calloc((size_t)batch * 32, sizeof(int32_t));
	int *blen = calloc((size_t)batch, sizeof(int));
	float *out = calloc((size_t)batch * m->cfg.hidden, sizeof(float));
	long texts = 0, tokens = 0, calls = 0;
	double t0 = now(), t = t0;
	int q = 0;
	/* one untimed warm-up call */
	for (int pass = 0; t - t0 < seconds; pass++) {
		int seq = 0;
		for (int i = 0; i < batch; i++, q = (q + 1) % NQ) {
			memcpy(bids + (size_t)i * 32, ids[q], sizeof(ids[q]));
			blen[i] = len[q];
			seq = len[q] > seq ? len[q] : seq;
			tokens += pass ? len[q] : 0;
		}
		struct sh_bert_batch b = {
		    .n = batch, .seq = 32, .ids = bids, .len = blen};
		(void)seq;
		if (ops->forward(ctx, &b, out, err, sizeof(err))) {
			fprintf(stderr, "%s: %s\n", ops->name, err);
			break;
		}
		if (pass == 0) {
			t0 = t = now();
			continue;
		}
		texts += batch;
		calls++;
		t = now();
	}
	double dt = t - t0;
	printf("{\"bench\":\"embed_forward\",\"model\":\"%s\",\"backend\":"
	       "\"%s\",\"batch\":%d,\"calls\":%ld,\"texts_per_s\":%.1f,"
	       "\"tokens_per_s\":%.0f,\"ms_per_batch\":%.3f,\"avg_tokens\":"
	       "%.1f}\n",
	       m->name, ops->name, batch, calls, texts / dt, tokens / dt,
	       calls ? 1e3 * dt / calls : 0.0,
	       texts ? (double)tokens / texts : 0.0);
	fflush(stdout);
	free(bids);
	free(blen);
	free(out);
	ops->destroy(ctx);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s MODEL_DIR [SECONDS] [BATCH...]\n",
			argv[0]);
		return 2;
	}
	char err[512];
	struct sh_bert_model *m;
	struct sh_wordpiece *tok;
	if (sh_bert_load(argv[1], &m, err, sizeof(err)) ||
	    sh_wordpiece_load(argv[1], &tok, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	double seconds = argc > 2 ? atof(argv[2]) : 2.0;
	static int32_t ids[NQ][32];
	static int len[NQ];
	srand(42);
	for (int i = 0; i < NQ; i++) {
		char text[256];
		snprintf(text, sizeof(text), "%s %s %s %s %s", adj[rand() % 10],
			 rand() % 2 ? adj[rand() % 10] : "", noun[rand() % 10],
			 tail[rand() % 8], extra[rand() % 6]);
		if (sh_wordpiece_encode(tok, text, strlen(text), ids[i], 32,
					&len[i], err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
	}
	/* tokenizer speed on the same texts */
	{
		char texts[NQ][256];
		srand(42);
		for (int i = 0; i < NQ; i++)
			snprintf(texts[i], sizeof(texts[i]), "%s %s %s %s %s",
				 adj[rand() % 10],
				 rand() % 2 ? adj[rand() % 10] : "",
				 noun[rand() % 10], tail[rand() % 8],
				 extra[rand() % 6]);
		int32_t tmp[32];
		int n;
		long done = 0;
		double t0 = now(), t1 = t0;
		while (t1 - t0 < 0.5) {
			for (int i = 0; i < NQ; i++)
				sh_wordpiece_encode(tok, texts[i],
						    strlen(texts[i]), tmp, 32,
						    &n, NULL, 0);
			done += NQ;
			t1 = now();
		}
		printf("{\"bench\":\"embed_tokenize\",\"texts_per_s\":%.0f,"
		       "\"us_per_text\":%.2f}\n",
		       done / (t1 - t0), 1e6 * (t1 - t0) / done);
	}
	int lo = 1 << 30, hi = 0;
	long sum = 0;
	for (int i = 0; i < NQ; i++) {
		lo = len[i] < lo ? len[i] : lo;
		hi = len[i] > hi ? len[i] : hi;
		sum += len[i];
	}
	printf("{\"bench\":\"embed_queries\",\"texts\":%d,\"min_tokens\":%d,"
	       "\"max_tokens\":%d,\"avg_tokens\":%.2f}\n",
	       NQ, lo, hi, (double)sum / NQ);
	int batches[16] = {1, 8, 64, 256};
	int nb = 4;
	if (argc > 3) {
		nb = 0;
		for (int i = 3; i < argc && nb < 16; i++)
			batches[nb++] = atoi(argv[i]);
	}
	const struct sh_bert_backend_ops *ops[2] = {&sh_bert_cpu, NULL};
#if EMBED_HAVE_CUDA_BACKEND
	if (sh_bert_cuda_available())
		ops[1] = &sh_bert_cuda;
#endif
	for (int o = 0; o < 2 && ops[o]; o++)
		for (int i = 0; i < nb; i++)
			if (batches[i] > 0)
				bench(ops[o], m, ids, len, batches[i], seconds);
	sh_wordpiece_free(tok);
	sh_bert_free(m);
	return 0;
}
