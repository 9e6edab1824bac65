/*
 * The CPU backend: float32, OpenBLAS sgemm for the projections and the
 * feed-forward, cpu_kernels.c for everything else.
 *
 * Only real tokens are computed. The batch's texts are packed back to back
 * (row r of every activation matrix is one real token; text i owns rows
 * row0[i] .. row0[i+1]), so the big GEMMs never see padding, and attention,
 * which is the only step that mixes tokens, runs per text over exactly its
 * tokens: no mask is needed because there is nothing to mask.
 *
 * Threads: the batch is cut into contiguous groups of texts with about the
 * same number of tokens, one per worker, and each worker runs the whole
 * forward pass on its rows with single-threaded sgemm calls. The workers
 * share nothing but read-only weights, so a forward pass has one hand-off
 * and one join, whatever the number of layers. OpenBLAS's own threading is
 * turned off (openblas_set_num_threads(1), process-wide) because two pools
 * of spinning threads on the same cores fight each other.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cblas.h>

#include "bert.h"
#include "cpu_kernels.h"
#include "error.h"

/* Texts with fewer tokens than this get hand-written attention (the sgemm
 * call overhead dominates such tiny products); longer ones use sgemm. */
#define CPU_ATTEND_SGEMM_MIN 48
/* A worker is worth waking for at least this many tokens. */
#define CPU_MIN_ROWS_PER_WORKER 16
#define CPU_MAX_WORKERS 64
/* Keeps every row count an int with room to spare. */
#define CPU_MAX_BATCH (1 << 16)
/* Up to this many rows, linear_small beats sgemm, which packs the whole
 * weight matrix on every call; it is memory-bound, so half weights help
 * more (MiniLM, one 9-token text: 8.2 ms with sgemm, 5.6 ms f32, 4.2 ms
 * halves; the crossover with sgemm is near 40 rows). */
#define CPU_SMALL_ROWS 32

struct cpu_ctx;

struct cpu_worker {
	struct cpu_ctx *c;
	pthread_t tid;
	int started;
	int t0, t1;    /* texts [t0, t1) of the current batch */
	float *scores; /* max_seq * max_seq, long-text attention */
};

struct cpu_ctx {
	const struct sh_bert_model *m;
	const struct embed_kernels *k;
	int max_batch, max_seq;
	size_t max_rows;
	int h, inter, heads, dh;
	float scale;
	float *wqkv, *bqkv; /* [3h, h] and [3h]: Q, K, V fused */
	/* Half copies of every layer's four weight matrices (QKV, attention
	 * output, FF1, FF2), for linear_small_h; NULL unless the kernels
	 * have it and every weight is exactly a half (an F16 model). */
	uint16_t *wh;
	size_t wh_layer; /* halves per layer */
	int small_rows;	 /* linear_small up to this many rows */
	/* activations, max_rows rows each */
	float *x;   /* [rows, h] the hidden state */
	float *qkv; /* [rows, 3h] */
	float *att; /* [rows, h] attention output before projection */
	float *tmp; /* [rows, h] */
	float *ff;  /* [rows, inter] */
	int *row0;  /* [max_batch + 1] */

	/* the current batch, set by forward() before waking the workers */
	const struct sh_bert_batch *b;
	float *out;

	/* worker 0 is the calling thread; mu guards gen, pending, stop */
	int nworkers;
	struct cpu_worker *w;
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	unsigned gen;
	int pending, stop;
};

/* ---- the forward pass of one group of texts --------------------------------
 */

/* out[rows, kout] = in[rows, kin] . w[kout, kin]^T; wh: the same weights
 * as halves, or NULL. */
static void linear(const struct cpu_ctx *c, const float *in, int rows, int kin,
		   const float *w, const uint16_t *wh, int kout, float *out)
{
	const struct embed_kernels *k = c->k;
	if (rows <= c->small_rows) {
		if (wh)
			k->linear_small_h(in, rows, kin, wh, kout, out);
		else
			k->linear_small(in, rows, kin, w, kout, out);
		return;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, kout, kin,
		    1.0f, in, kin, w, kin, 0.0f, out, kout);
}

static void attention(struct cpu_ctx *c, const struct cpu_worker *w)
{
	const int h = c->h, h3 = 3 * h, dh = c->dh;
	for (int t = w->t0; t < w->t1; t++) {
		int a = c->row0[t], n = c->row0[t + 1] - a;
		for (int hd = 0; hd < c->heads; hd++) {
			const float *q = c->qkv + (size_t)a * h3 + hd * dh;
			const float *k = q + h, *v = q + 2 * h;
			float *o = c->att + (size_t)a * h + hd * dh;
			if (n < CPU_ATTEND_SGEMM_MIN) {
				c->k->attend(q, k, v, h3, o, h, n, dh, c->scale,
					     w->scores);
				continue;
			}
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n,
				    n, dh, c->scale, q, h3, k, h3, 0.0f,
				    w->scores, n);
			c->k->softmax_rows(w->scores, n, n, n);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
				    n, dh, n, 1.0f, w->scores, n, v, h3, 0.0f,
				    o, h);
		}
	}
}

static void run_group(struct cpu_ctx *c, struct cpu_worker *w)
{
	const struct sh_bert_model *m = c->m;
	const struct sh_bert_batch *b = c->b;
	const struct embed_kernels *k = c->k;
	const int h = c->h;
	int r0 = c->row0[w->t0], r1 = c->row0[w->t1], rows = r1 - r0;
	if (rows <= 0)
		return;
	float *x = c->x + (size_t)r0 * h;
	float *qkv = c->qkv + (size_t)r0 * 3 * h;
	float *att = c->att + (size_t)r0 * h;
	float *tmp = c->tmp + (size_t)r0 * h;
	float *ff = c->ff + (size_t)r0 * c->inter;

	/* embeddings: word + position + token type 0, then LayerNorm */
	for (int t = w->t0; t < w->t1; t++) {
		const int32_t *ids = b->ids + (size_t)t * b->seq;
		for (int p = 0; p < b->len[t]; p++) {
			float *row = c->x + (size_t)(c->row0[t] + p) * h;
			const float *we = m->word_emb + (size_t)ids[p] * h;
			const float *pe = m->pos_emb + (size_t)p * h;
			for (int j = 0; j < h; j++)
				row[j] = we[j] + pe[j] + m->type_emb[j];
		}
	}
	k->add_layernorm(x, NULL, NULL, m->emb_ln_g, m->emb_ln_b, rows, h,
			 m->cfg.eps);

	const size_t hh = (size_t)h * h, hi = (size_t)h * c->inter;
	for (int l = 0; l < m->cfg.layers; l++) {
		const struct sh_bert_layer *L = &m->layer[l];
		const uint16_t *wh = c->wh ? c->wh + l * c->wh_layer : NULL;
		linear(c, x, rows, h, c->wqkv + (size_t)l * 3 * hh, wh, 3 * h,
		       qkv);
		k->add_bias(qkv, c->bqkv + (size_t)l * 3 * h, rows, 3 * h);
		attention(c, w);
		linear(c, att, rows, h, L->ao_w, wh ? wh + 3 * hh : NULL, h,
		       tmp);
		k->add_layernorm(x, tmp, L->ao_b, L->ln1_g, L->ln1_b, rows, h,
				 m->cfg.eps);
		linear(c, x, rows, h, L->ff1_w, wh ? wh + 4 * hh : NULL,
		       c->inter, ff);
		k->bias_gelu(ff, L->ff1_b, rows, c->inter);
		linear(c, ff, rows, c->inter, L->ff2_w,
		       wh ? wh + 4 * hh + hi : NULL, h, tmp);
		k->add_layernorm(x, tmp, L->ff2_b, L->ln2_g, L->ln2_b, rows, h,
				 m->cfg.eps);
	}

	/* mean over each text's tokens, then L2 normalisation */
	for (int t = w->t0; t < w->t1; t++) {
		float *o = c->out + (size_t)t * h;
		int a = c->row0[t], n = c->row0[t + 1] - a;
		for (int j = 0; j < h; j++)
			o[j] = 0.0f;
		for (int r = 0; r < n; r++) {
			const float *row = c->x + (size_t)(a + r) * h;
			for (int j = 0; j < h; j++)
				o[j] += row[j];
		}
		double ss = 0.0;
		for (int j = 0; j < h; j++) {
			o[j] /= (float)n;
			ss += (double)o[j] * o[j];
		}
		float inv = ss > 0.0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
		for (int j = 0; j < h; j++)
			o[j] *= inv;
	}
}

/* ---- workers ---------------------------------------------------------------
 */

static void *worker_main(void *arg)
{
	struct cpu_worker *w = arg;
	struct cpu_ctx *c = w->c;
	unsigned seen = 0;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->stop && c->gen == seen)
			pthread_cond_wait(&c->go, &c->mu);
		if (c->stop)
			break;
		seen = c->gen;
		pthread_mutex_unlock(&c->mu);
		run_group(c, w);
		pthread_mutex_lock(&c->mu);
		if (--c->pending == 0)
			pthread_cond_signal(&c->done);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static const struct embed_kernels *pick_kernels(void)
{
	const char *want = getenv("SHOAL_EMBED_KERNELS");
	const struct embed_kernels *best = &embed_kernels_generic;
	__builtin_cpu_init();
#ifdef EMBED_HAVE_AVX2
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
		if (want && !strcmp(want, "avx2"))
			return &embed_kernels_avx2;
		best = &embed_kernels_avx2;
	}
#endif
#ifdef EMBED_HAVE_AVX512
	if (__builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("avx512vl") &&
	    __builtin_cpu_supports("fma")) {
		if (want && !strcmp(want, "avx512"))
			return &embed_kernels_avx512;
		/* avx2 stays the default: the 512-bit loops gain little on
		 * rows of a few hundred floats and may lower the clock */
	}
#endif
	if (want && !strcmp(want, "generic"))
		return &embed_kernels_generic;
	return best;
}

static void cpu_destroy(void *arg)
{
	struct cpu_ctx *c = arg;
	if (!c)
		return;
	if (c->w) {
		pthread_mutex_lock(&c->mu);
		c->stop = 1;
		pthread_cond_broadcast(&c->go);
		pthread_mutex_unlock(&c->mu);
		for (int i = 1; i < c->nworkers; i++)
			if (c->w[i].started)
				pthread_join(c->w[i].tid, NULL);
		for (int i = 0; i < c->nworkers; i++)
			free(c->w[i].scores);
		free(c->w);
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->go);
		pthread_cond_destroy(&c->done);
	}
	free(c->wqkv);
	free(c->bqkv);
	free(c->wh);
	free(c->x);
	free(c->qkv);
	free(c->att);
	free(c->tmp);
	free(c->ff);
	free(c->row0);
	free(c);
}

/* f as an IEEE half, when it is exactly one (normal, subnormal or zero);
 * else 0 is returned and *ok cleared. */
static uint16_t exact_half(float f, int *ok)
{
	uint32_t b;
	memcpy(&b, &f, sizeof(b));
	uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
	int e = (int)((b >> 23) & 0xff) - 127;
	uint32_t man = b & 0x7fffffu;
	if ((b & 0x7fffffffu) == 0)
		return sign;
	if (e >= -14 && e <= 15 && (man & 0x1fffu) == 0)
		return (uint16_t)(sign | (uint16_t)((e + 15) << 10) |
				  (uint16_t)(man >> 13));
	if (e >= -24 && e < -14) {
		/* subnormal half: (1.man) * 2^e = q * 2^-24 */
		uint32_t full = man | 0x800000u;
		int shift = -e - 1; /* 13 + (-14 - e) */
		if ((full & ((1u << shift) - 1)) == 0)
			return (uint16_t)(sign | (full >> shift));
	}
	*ok = 0;
	return 0;
}

static void to_halves(const float *src, size_t n, uint16_t *dst, int *ok)
{
	for (size_t i = 0; i < n && *ok; i++)
		dst[i] = exact_half(src[i], ok);
}

/* Half copies of the layers' weights when they are all exact halves. */
static void make_halves(struct cpu_ctx *c)
{
	const struct sh_bert_model *m = c->m;
	const size_t h = (size_t)c->h, hh = h * h, hi = h * (size_t)c->inter;
	if (!c->k->linear_small_h)
		return;
	c->wh_layer = 4 * hh + 2 * hi;
	c->wh = malloc((size_t)m->cfg.layers * c->wh_layer * sizeof(uint16_t));
	if (!c->wh)
		return; /* only an optimisation */
	int ok = 1;
	for (int l = 0; l < m->cfg.layers && ok; l++) {
		const struct sh_bert_layer *L = &m->layer[l];
		uint16_t *d = c->wh + (size_t)l * c->wh_layer;
		to_halves(c->wqkv + (size_t)l * 3 * hh, 3 * hh, d, &ok);
		to_halves(L->ao_w, hh, d + 3 * hh, &ok);
		to_halves(L->ff1_w, hi, d + 4 * hh, &ok);
		to_halves(L->ff2_w, hi, d + 4 * hh + hi, &ok);
	}
	if (!ok) {
		free(c->wh);
		c->wh = NULL;
	}
}

static float *alloc_floats(size_t n)
{
	if (n == 0 || n > SIZE_MAX / sizeof(float) / 2)
		return NULL;
	size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
	return aligned_alloc(64, bytes);
}

static int cpu_create(const struct sh_bert_model *m, int max_batch, int max_seq,
		      void **out, char *err, size_t errlen)
{
	*out = NULL;
	if (max_batch < 1 || max_batch > CPU_MAX_BATCH || max_seq < 2 ||
	    max_seq > m->cfg.max_positions)
		return sh_errf(err, errlen, SH_EINVAL,
			       "cpu backend: max_batch %d, max_seq %d (model "
			       "has %d positions)",
			       max_batch, max_seq, m->cfg.max_positions);
	struct cpu_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return sh_errf(err, errlen, SH_ENOMEM,
			       "cpu backend: no memory");
	c->m = m;
	c->k = pick_kernels();
	c->max_batch = max_batch;
	c->max_seq = max_seq;
	c->max_rows = (size_t)max_batch * (size_t)max_seq;
	c->h = m->cfg.hidden;
	c->inter = m->cfg.intermediate;
	c->heads = m->cfg.heads;
	c->dh = c->h / c->heads;
	c->scale = 1.0f / sqrtf((float)c->dh);

	const size_t h = (size_t)c->h, L = (size_t)m->cfg.layers;
	c->wqkv = alloc_floats(L * 3 * h * h);
	c->bqkv = alloc_floats(L * 3 * h);
	c->x = alloc_floats(c->max_rows * h);
	c->qkv = alloc_floats(c->max_rows * 3 * h);
	c->att = alloc_floats(c->max_rows * h);
	c->tmp = alloc_floats(c->max_rows * h);
	c->ff = alloc_floats(c->max_rows * (size_t)c->inter);
	c->row0 = calloc((size_t)max_batch + 1, sizeof(int));
	if (!c->wqkv || !c->bqkv || !c->x || !c->qkv || !c->att || !c->tmp ||
	    !c->ff || !c->row0)
		goto nomem;
	for (size_t l = 0; l < L; l++) {
		const struct sh_bert_layer *ly = &m->layer[l];
		float *w = c->wqkv + l * 3 * h * h, *b = c->bqkv + l * 3 * h;
		memcpy(w, ly->q_w, h * h * sizeof(float));
		memcpy(w + h * h, ly->k_w, h * h * sizeof(float));
		memcpy(w + 2 * h * h, ly->v_w, h * h * sizeof(float));
		memcpy(b, ly->q_b, h * sizeof(float));
		memcpy(b + h, ly->k_b, h * sizeof(float));
		memcpy(b + 2 * h, ly->v_b, h * sizeof(float));
	}

	make_halves(c);
	c->small_rows = CPU_SMALL_ROWS;
	const char *sr = getenv("SHOAL_EMBED_SMALL_ROWS");
	if (sr && atoi(sr) >= 0)
		c->small_rows = atoi(sr);

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	const char *env = getenv("SHOAL_EMBED_THREADS");
	if (env && atoi(env) > 0)
		ncpu = atoi(env);
	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > CPU_MAX_WORKERS)
		ncpu = CPU_MAX_WORKERS;
	if (ncpu > max_batch)
		ncpu = max_batch;
	c->nworkers = (int)ncpu;
	c->w = calloc((size_t)c->nworkers, sizeof(*c->w));
	if (!c->w)
		goto nomem;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->go, NULL);
	pthread_cond_init(&c->done, NULL);
	openblas_set_num_threads(1);
	for (int i = 0; i < c->nworkers; i++) {
		c->w[i].c = c;
		c->w[i].scores = alloc_floats((size_t)max_seq * max_seq);
		if (!c->w[i].scores)
			goto nomem;
		if (i == 0)
			continue;
		if (pthread_create(&c->w[i].tid, NULL, worker_main, &c->w[i])) {
			cpu_destroy(c);
			return sh_errf(err, errlen, SH_ENOMEM,
				       "cpu backend: cannot start a thread");
		}
		c->w[i].started = 1;
	}
	*out = c;
	return SH_OK;
nomem:
	cpu_destroy(c);
	return sh_errf(err, errlen, SH_ENOMEM,
		       "cpu backend: no memory for a batch of %d x %d tokens",
		       max_batch, max_seq);
}

static int cpu_forward(void *arg, const struct sh_bert_batch *b, float *out,
		       char *err, size_t errlen)
{
	struct cpu_ctx *c = arg;
	if (b->n < 1 || b->n > c->max_batch || b->seq < 1 ||
	    b->seq > c->max_seq)
		return sh_errf(err, errlen, SH_EINVAL,
			       "cpu backend: batch of %d x %d, limit %d x %d",
			       b->n, b->seq, c->max_batch, c->max_seq);
	const int vocab = c->m->cfg.vocab_size;
	c->row0[0] = 0;
	for (int i = 0; i < b->n; i++) {
		int len = b->len[i];
		if (len < 1 || len > b->seq)
			return sh_errf(err, errlen, SH_EINVAL,
				       "cpu backend: text %d has %d tokens "
				       "(seq %d)",
				       i, len, b->seq);
		const int32_t *ids = b->ids + (size_t)i * b->seq;
		for (int p = 0; p < len; p++)
			if (ids[p] < 0 || ids[p] >= vocab)
				return sh_errf(err, errlen, SH_EINVAL,
					       "cpu backend: token id %d out "
					       "of the vocabulary (%d)",
					       (int)ids[p], vocab);
		c->row0[i + 1] = c->row0[i] + len;
	}
	c->b = b;
	c->out = out;

	/* contiguous groups of texts of about total/nw tokens each */
	int total = c->row0[b->n];
	int nw = c->nworkers;
	if (nw > b->n)
		nw = b->n;
	if (nw > total / CPU_MIN_ROWS_PER_WORKER)
		nw = total / CPU_MIN_ROWS_PER_WORKER;
	if (nw < 1)
		nw = 1;
	int t = 0;
	for (int i = 0; i < nw; i++) {
		long target = (long)total * (i + 1) / nw;
		c->w[i].t0 = t;
		if (i == nw - 1)
			t = b->n;
		else
			while (t < b->n - (nw - 1 - i) &&
			       (c->row0[t + 1] <= target || t == c->w[i].t0))
				t++;
		c->w[i].t1 = t;
	}
	for (int i = nw; i < c->nworkers; i++)
		c->w[i].t0 = c->w[i].t1 = b->n;

	if (nw > 1) {
		pthread_mutex_lock(&c->mu);
		c->pending = c->nworkers - 1;
		c->gen++;
		pthread_cond_broadcast(&c->go);
		pthread_mutex_unlock(&c->mu);
	}
	run_group(c, &c->w[0]);
	if (nw > 1) {
		pthread_mutex_lock(&c->mu);
		while (c->pending > 0)
			pthread_cond_wait(&c->done, &c->mu);
		pthread_mutex_unlock(&c->mu);
	}
	c->b = NULL;
	c->out = NULL;
	return SH_OK;
}

const struct sh_bert_backend_ops sh_bert_cpu = {
    .name = "cpu",
    .create = cpu_create,
    .forward = cpu_forward,
    .destroy = cpu_destroy,
};

const char *sh_bert_cpu_blas_coretype(void)
{
	const char *now = openblas_get_corename();
	if (!now || strcasecmp(now, "Prescott") != 0)
		return NULL;
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512dq") &&
	    __builtin_cpu_supports("avx512vl"))
		return "SkylakeX";
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return "Haswell";
	return NULL;
}

const char *sh_bert_cpu_blas_kernels(void)
{
	const char *n = openblas_get_corename();
	return n ? n : "unknown";
}
