/*
 * The CUDA backend of the BERT encoder (bert.h's sh_bert_cuda).
 *
 * Weights live on the device as float16 (the model file's own precision, so
 * the conversion is exact for it), biases and LayerNorm parameters as float32.
 * The dense layers are cuBLAS tensor-core GEMMs with float32 accumulation over
 * the real tokens only: a batch's rows are packed, token after token, into T
 * rows, with no padding. Attention of batches whose texts have at most
 * FA_MAX tokens (queries) is one fused kernel per layer, straight from the
 * packed QKV projection to the packed context. Longer batches take a padded
 * copy of Q, K and V, [sequence, head, position, head_dim], through two
 * strided-batched GEMMs (Q Kᵀ and P V) and a masked softmax between them,
 * the sequences in chunks so that the score buffer stays bounded.
 * The residual stream stays float32 between the layers; its float16 copy is
 * what the next GEMM reads.
 *
 * Everything a forward pass touches is allocated once, at create, for
 * max_batch x max_seq tokens: two device arenas (weights, activations), the
 * cuBLAS workspace, and pinned host buffers for the batch's ids and the
 * result. One stream and one cuBLAS handle per context. Small batches
 * replay a CUDA graph per shape (run_batch; SHOAL_CUDA_GRAPHS=0 turns that
 * off).
 *
 * Every CUDA or cuBLAS failure is SH_EIO with the library's message; nothing
 * aborts. This file is compiled by nvcc alone and exports a C ABI.
 */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "bert.h"
#include "error.h"
}

/* ---- limits ----------------------------------------------------------- */

/* The per-lane register arrays of the kernels below hold a row of up to
 * MAX_HIDDEN floats (LayerNorm) or MAX_SEQ scores (softmax) in a warp. */
#define MAX_HIDDEN 1024
#define MAX_SEQ 512
/* Scores (float32) and probabilities (float16) of one attention chunk. */
#define ATTN_BUDGET ((size_t)256 << 20)
#define CUBLAS_WS_BYTES ((size_t)32 << 20)
#define ALIGN 256

/* ---- errors ----------------------------------------------------------- */

#define CU_TRY(call, what)                                                     \
	do {                                                                   \
		cudaError_t e_ = (call);                                       \
		if (e_ != cudaSuccess) {                                       \
			rc = sh_errf(err, errlen, SH_EIO,                      \
				     "cuda backend: %s: %s (%s)", what,        \
				     cudaGetErrorString(e_),                   \
				     cudaGetErrorName(e_));                    \
			goto fail;                                             \
		}                                                              \
	} while (0)

#define BLAS_TRY(call, what)                                                   \
	do {                                                                   \
		cublasStatus_t s_ = (call);                                    \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                             \
			rc = sh_errf(err, errlen, SH_EIO,                      \
				     "cuda backend: %s: cuBLAS %s", what,      \
				     cublasGetStatusString(s_));               \
			goto fail;                                             \
		}                                                              \
	} while (0)

#define LAUNCH_TRY(what) CU_TRY(cudaGetLastError(), what)

/* ---- the context ------------------------------------------------------ */

struct dlayer {
	__half *qkv_w; /* [3H, H]: q, k, v rows */
	float *qkv_b;  /* [3H] */
	__half *ao_w;  /* [H, H] */
	float *ao_b, *ln1_g, *ln1_b;
	__half *ff1_w; /* [I, H] */
	float *ff1_b;
	__half *ff2_w; /* [H, I] */
	float *ff2_b, *ln2_g, *ln2_b;
};

#define GRAPH_MAX_N 4
#define GRAPH_SLOTS 64
#define SEEN_SLOTS 1024 /* run_batch's hash takes the top 10 bits */

struct graph_slot {
	uint64_t key; /* 0: empty */
	cudaGraphExec_t exec;
	uint64_t used;
};

struct cuda_ctx {
	const struct sh_bert_model *m;
	int dev;
	int max_batch, max_seq;
	int H, NH, D, I, L;
	cudaStream_t stream;
	cublasHandle_t blas;

	/* weights */
	void *warena;
	__half *word_emb; /* [V, H] */
	float *pos_type;  /* [P, H]: position + token type 0 */
	float *emb_g, *emb_b;
	struct dlayer *layer;

	/* activations, for T_max = max_batch * max_seq packed tokens */
	void *aarena;
	int32_t *d_in; /* ids[T] pos[T] row[T] off[n+1] len[n] */
	float *x32;    /* [T, H] residual stream */
	__half *x16;   /* [T, H] its float16 copy; also the attention context */
	__half *qkv16; /* [T, 3H] packed; also the padded attention output */
	__half *qkvp;  /* 3 x [n, NH, seq, D] padded */
	float *y32;    /* [T, H] output of the attention-out and FF2 GEMMs */
	__half *h16;   /* [T, I] feed-forward hidden */
	void *attn;    /* scores + probabilities of one chunk */
	size_t attn_bytes;
	float *pooled; /* [max_batch, H] */
	void *ws;      /* cuBLAS workspace */

	int fa_max; /* longest sequence for k_attn_short; 0: none */

	/* CUDA graphs of small batches, by shape (run_batch) */
	int graphs; /* 0: off (SHOAL_CUDA_GRAPHS=0, or a capture failed) */
	uint64_t tick;
	struct graph_slot gs[GRAPH_SLOTS];
	uint64_t seen[SEEN_SLOTS];

	/* pinned host staging */
	int32_t *h_in;
	float *h_out;
};

static int round8(int n)
{
	return (n + 7) & ~7;
}

static size_t align_up(size_t n)
{
	return (n + ALIGN - 1) / ALIGN * ALIGN;
}

/* Bump allocator over one block; with base NULL it only measures. */
struct carver {
	char *base;
	size_t used;
};

static void *carve(struct carver *c, size_t bytes)
{
	void *p = c->base ? c->base + c->used : NULL;
	c->used += align_up(bytes);
	return p;
}

/* ---- kernels ---------------------------------------------------------- */

static __device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* LayerNorm of the row held by one warp, K values per lane (column
 * lane + 32 k), written as float32 and float16. */
template <int K>
static __device__ __forceinline__ void
warp_ln_store(float (&v)[K], int lane, int H, const float *__restrict__ g,
	      const float *__restrict__ b, float eps, float *__restrict__ o32,
	      __half *__restrict__ o16)
{
	float s = 0.f;
#pragma unroll
	for (int k = 0; k < K; k++) {
		int c = lane + 32 * k;
		if (c < H)
			s += v[k];
	}
	float mean = warp_sum(s) / (float)H;
	float q = 0.f;
#pragma unroll
	for (int k = 0; k < K; k++) {
		int c = lane + 32 * k;
		if (c < H) {
			float d = v[k] - mean;
			q += d * d;
		}
	}
	float rstd = rsqrtf(warp_sum(q) / (float)H + eps);
#pragma unroll
	for (int k = 0; k < K; k++) {
		int c = lane + 32 * k;
		if (c < H) {
			float y = (v[k] - mean) * rstd * g[c] + b[c];
			o32[c] = y;
			o16[c] = __float2half(y);
		}
	}
}

#define WARPS_PER_BLOCK 4

/* x = LN(word_emb[id] + pos_type[pos]), one warp per token. */
template <int K>
static __global__ void
k_embed_ln(int T, int H, const int32_t *__restrict__ ids,
	   const int32_t *__restrict__ pos, const __half *__restrict__ wemb,
	   const float *__restrict__ pt, const float *__restrict__ g,
	   const float *__restrict__ b, float eps, float *__restrict__ x32,
	   __half *__restrict__ x16)
{
	int t = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (t >= T)
		return;
	const __half *we = wemb + (size_t)ids[t] * H;
	const float *pe = pt + (size_t)pos[t] * H;
	float v[K];
#pragma unroll
	for (int k = 0; k < K; k++) {
		int c = lane + 32 * k;
		v[k] = c < H ? __half2float(we[c]) + pe[c] : 0.f;
	}
	warp_ln_store<K>(v, lane, H, g, b, eps, x32 + (size_t)t * H,
			 x16 + (size_t)t * H);
}

/* x = LN(x + y + bias), in place, one warp per token. */
template <int K>
static __global__ void
k_residual_ln(int T, int H, const float *__restrict__ y,
	      const float *__restrict__ bias, const float *__restrict__ g,
	      const float *__restrict__ b, float eps, float *__restrict__ x32,
	      __half *__restrict__ x16)
{
	int t = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (t >= T)
		return;
	const float *yr = y + (size_t)t * H;
	float *xr = x32 + (size_t)t * H;
	float v[K];
#pragma unroll
	for (int k = 0; k < K; k++) {
		int c = lane + 32 * k;
		v[k] = c < H ? xr[c] + yr[c] + bias[c] : 0.f;
	}
	warp_ln_store<K>(v, lane, H, g, b, eps, xr, x16 + (size_t)t * H);
}

/* Packed [T, 3H] q|k|v (no bias yet) -> padded 3 x [n, NH, sp, D] with the
 * bias added; padding positions are zero (V's must be: P V multiplies them
 * by an exact 0, and 0 x garbage may be NaN). One block per padded row
 * (sequence i, position p), its threads over the 3H columns. */
static __global__ void k_scatter_qkv(int n, int sp, int H, int NH, int D,
				     const int32_t *__restrict__ off,
				     const int32_t *__restrict__ len,
				     const __half *__restrict__ qkv,
				     const float *__restrict__ bias,
				     __half *__restrict__ out)
{
	int r = blockIdx.x;
	int i = r / sp, p = r % sp;
	int H3 = 3 * H;
	size_t plane = (size_t)n * sp * H;
	bool real = p < len[i];
	const __half *src = qkv + ((size_t)off[i] + p) * H3;
	for (int c = threadIdx.x; c < H3; c += blockDim.x) {
		int which = c / H, hc = c - which * H;
		int h = hc / D, d = hc - h * D;
		__half v = __float2half(0.f);
		if (real)
			v = __float2half(__half2float(src[c]) + bias[c]);
		out[which * plane + (((size_t)i * NH + h) * sp + p) * D + d] =
		    v;
	}
}

/* Masked softmax over the keys of each score row of a chunk of sequences:
 * rows [(i - i0) * NH + h][q]; keys >= len[i] get 0, and so do query rows
 * past len[i] (they are never read back). One warp per row. */
template <int K>
static __global__ void
k_softmax(int rows, int seq, int NH, int i0, const int32_t *__restrict__ len,
	  const float *__restrict__ s, __half *__restrict__ p)
{
	int r = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (r >= rows)
		return;
	int q = r % seq;
	int i = i0 + r / seq / NH;
	int n = len[i];
	const float *sr = s + (size_t)r * seq;
	__half *pr = p + (size_t)r * seq;
	if (q >= n) {
		for (int j = lane; j < seq; j += 32)
			pr[j] = __float2half(0.f);
		return;
	}
	float v[K];
	float mx = -INFINITY;
#pragma unroll
	for (int k = 0; k < K; k++) {
		int j = lane + 32 * k;
		v[k] = j < n ? sr[j] : -INFINITY;
		mx = fmaxf(mx, v[k]);
	}
	mx = warp_max(mx);
	float sum = 0.f;
#pragma unroll
	for (int k = 0; k < K; k++) {
		int j = lane + 32 * k;
		v[k] = j < n ? __expf(v[k] - mx) : 0.f;
		sum += v[k];
	}
	float inv = 1.f / warp_sum(sum);
#pragma unroll
	for (int k = 0; k < K; k++) {
		int j = lane + 32 * k;
		if (j < seq)
			pr[j] = __float2half(v[k] * inv);
	}
}

/* Padded attention output [n, NH, sp, D] -> packed [T, H]: one block per
 * token. */
static __global__ void k_gather_heads(int sp, int H, int NH, int D,
				      const int32_t *__restrict__ pos,
				      const int32_t *__restrict__ row,
				      const __half *__restrict__ o,
				      __half *__restrict__ ctx)
{
	int t = blockIdx.x;
	size_t base = (size_t)row[t] * NH * sp + pos[t];
	__half *dst = ctx + (size_t)t * H;
	for (int c = threadIdx.x; c < H; c += blockDim.x) {
		int h = c / D, d = c - h * D;
		dst[c] = o[(base + (size_t)h * sp) * D + d];
	}
}

/* Attention of short sequences in one kernel, straight from the packed
 * QKV projection (bias added here) to the packed context: one block per
 * (sequence, head), q, k and v in shared memory as float32 (rows of D + 1
 * floats, against bank conflicts); each warp then takes whole query rows:
 * the scores with a key per lane, the softmax by warp reductions, and the
 * output with a head dimension per lane, the probabilities passed by
 * shuffles. For sequences of at most FA_MAX tokens and heads of 32 or 64
 * dimensions; other batches take the strided-GEMM path. */
#define FA_MAX 64
#define FA_THREADS 128
static size_t fa_smem(int n, int D)
{
	return (size_t)3 * n * (D + 1) * sizeof(float);
}

template <int D>
static __global__ void
k_attn_short(int H, int NH, float scale, const int32_t *__restrict__ off,
	     const int32_t *__restrict__ len, const __half *__restrict__ qkv,
	     const float *__restrict__ bias, __half *__restrict__ ctx)
{
	constexpr int LD = D + 1, DL = (D + 31) / 32;
	extern __shared__ float sm[];
	int i = blockIdx.x / NH, h = blockIdx.x % NH;
	int n = len[i], t0 = off[i];
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const float *q = sm, *k = q + n * LD, *v = k + n * LD;

	/* row r of sm is q, k or v (r / n) of token r % n */
	for (int r = warp; r < 3 * n; r += FA_THREADS / 32) {
		int which = r / n, p = r - which * n;
		const __half *src =
		    qkv + (size_t)(t0 + p) * 3 * H + which * H + h * D;
		const float *bs = bias + which * H + h * D;
		float mul = which == 0 ? scale : 1.f;
#pragma unroll
		for (int kk = 0; kk < DL; kk++) {
			int d = lane + 32 * kk;
			if (d < D)
				sm[r * LD + d] =
				    (__half2float(src[d]) + bs[d]) * mul;
		}
	}
	__syncthreads();
	for (int a = warp; a < n; a += FA_THREADS / 32) {
		const float *qa = q + a * LD;
		float sc0 = -INFINITY, sc1 = -INFINITY;
		if (lane < n) {
			const float *kb = k + lane * LD;
			float acc = 0.f;
#pragma unroll
			for (int d = 0; d < D; d++)
				acc += qa[d] * kb[d];
			sc0 = acc;
		}
		if (lane + 32 < n) {
			const float *kb = k + (lane + 32) * LD;
			float acc = 0.f;
#pragma unroll
			for (int d = 0; d < D; d++)
				acc += qa[d] * kb[d];
			sc1 = acc;
		}
		float mx = warp_max(fmaxf(sc0, sc1));
		sc0 = lane < n ? __expf(sc0 - mx) : 0.f;
		sc1 = lane + 32 < n ? __expf(sc1 - mx) : 0.f;
		float inv = 1.f / warp_sum(sc0 + sc1);
		float o[DL];
#pragma unroll
		for (int kk = 0; kk < DL; kk++)
			o[kk] = 0.f;
		for (int b = 0; b < n; b++) {
			float pb = __shfl_sync(0xffffffffu, b < 32 ? sc0 : sc1,
					       b & 31);
			const float *vb = v + b * LD;
#pragma unroll
			for (int kk = 0; kk < DL; kk++) {
				int d = lane + 32 * kk;
				if (d < D)
					o[kk] += pb * vb[d];
			}
		}
		__half *dst = ctx + (size_t)(t0 + a) * H + h * D;
#pragma unroll
		for (int kk = 0; kk < DL; kk++) {
			int d = lane + 32 * kk;
			if (d < D)
				dst[d] = __float2half(o[kk] * inv);
		}
	}
}

static __device__ __forceinline__ float gelu(float x)
{
	return 0.5f * x * (1.f + erff(x * 0.70710678f));
}

/* h = GELU(h + b), exact erf form, in place on [T, I]: one block per
 * token, two values per thread when I is even. */
static __global__ void k_bias_gelu(int I, const float *__restrict__ b,
				   __half *__restrict__ h)
{
	__half *hr = h + (size_t)blockIdx.x * I;
	if ((I & 1) == 0) {
		__half2 *h2 = (__half2 *)hr;
		const float2 *b2 = (const float2 *)b;
		for (int c = threadIdx.x; c < I / 2; c += blockDim.x) {
			float2 x = __half22float2(h2[c]);
			float2 bb = b2[c];
			h2[c] = __floats2half2_rn(gelu(x.x + bb.x),
						  gelu(x.y + bb.y));
		}
		return;
	}
	for (int c = threadIdx.x; c < I; c += blockDim.x)
		hr[c] = __float2half(gelu(__half2float(hr[c]) + b[c]));
}

/* out[i] = normalise(mean of x over the tokens of sequence i); one block
 * per sequence. */
#define POOL_THREADS 128
static __global__ void k_pool(int H, const int32_t *__restrict__ off,
			      const float *__restrict__ x,
			      float *__restrict__ out)
{
	__shared__ float part[POOL_THREADS / 32];
	int i = blockIdx.x;
	int t0 = off[i], t1 = off[i + 1];
	float inv = 1.f / (float)(t1 - t0);
	float *o = out + (size_t)i * H;
	float q = 0.f;
	for (int c = threadIdx.x; c < H; c += POOL_THREADS) {
		float s = 0.f;
		for (int t = t0; t < t1; t++)
			s += x[(size_t)t * H + c];
		s *= inv;
		o[c] = s;
		q += s * s;
	}
	q = warp_sum(q);
	if (threadIdx.x % 32 == 0)
		part[threadIdx.x / 32] = q;
	__syncthreads();
	float tot = 0.f;
	for (int w = 0; w < POOL_THREADS / 32; w++)
		tot += part[w];
	float scale = tot > 0.f ? rsqrtf(tot) : 0.f;
	for (int c = threadIdx.x; c < H; c += POOL_THREADS)
		o[c] *= scale;
}

/* ---- kernel dispatch on the row width --------------------------------- */

#define DISPATCH_K(width, KERNEL, grid, ...)                                   \
	do {                                                                   \
		dim3 g_(grid), b_(WARPS_PER_BLOCK * 32);                       \
		if ((width) <= 32)                                             \
			KERNEL<1><<<g_, b_, 0, c->stream>>>(__VA_ARGS__);      \
		else if ((width) <= 128)                                       \
			KERNEL<4><<<g_, b_, 0, c->stream>>>(__VA_ARGS__);      \
		else if ((width) <= 256)                                       \
			KERNEL<8><<<g_, b_, 0, c->stream>>>(__VA_ARGS__);      \
		else if ((width) <= 384)                                       \
			KERNEL<12><<<g_, b_, 0, c->stream>>>(__VA_ARGS__);     \
		else if ((width) <= 512)                                       \
			KERNEL<16><<<g_, b_, 0, c->stream>>>(__VA_ARGS__);     \
		else if ((width) <= 768)                                       \
			KERNEL<24><<<g_, b_, 0, c->stream>>>(__VA_ARGS__);     \
		else                                                           \
			KERNEL<32><<<g_, b_, 0, c->stream>>>(__VA_ARGS__);     \
	} while (0)

/* ---- GEMMs ------------------------------------------------------------ */

/* Y[T, out] = X[T, in] Wᵀ with W row-major [out, in] (float16), float32
 * accumulation; Y is float32 or float16 (ytype). In cuBLAS's column-major
 * terms: Yᵀ[out, T] = W[out, in] Xᵀ[in, T], W read transposed. */
static cublasStatus_t linear(struct cuda_ctx *c, int T, int in, int out,
			     const __half *X, const __half *W, void *Y,
			     cudaDataType ytype)
{
	const float one = 1.f, zero = 0.f;
	return cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, T, in, &one,
			    W, CUDA_R_16F, in, X, CUDA_R_16F, in, &zero, Y,
			    ytype, out, CUBLAS_COMPUTE_32F,
			    CUBLAS_GEMM_DEFAULT);
}

/* ---- create / destroy ------------------------------------------------- */

static void cuda_destroy(void *ctxp)
{
	struct cuda_ctx *c = (struct cuda_ctx *)ctxp;
	if (!c)
		return;
	cudaSetDevice(c->dev);
	if (c->stream)
		cudaStreamSynchronize(c->stream);
	for (int k = 0; k < GRAPH_SLOTS; k++)
		if (c->gs[k].exec)
			cudaGraphExecDestroy(c->gs[k].exec);
	if (c->blas)
		cublasDestroy(c->blas);
	if (c->stream)
		cudaStreamDestroy(c->stream);
	cudaFree(c->warena);
	cudaFree(c->aarena);
	cudaFreeHost(c->h_in);
	cudaFreeHost(c->h_out);
	free(c->layer);
	free(c);
	cudaGetLastError(); /* leave no sticky error for the next user */
}

/* Lays the weights out in a block at base (NULL: measure only). */
static size_t layout_weights(struct cuda_ctx *c, char *base)
{
	const struct sh_bert_config *cfg = &c->m->cfg;
	size_t H = c->H, I = c->I;
	struct carver cv = {base, 0};
	c->word_emb = (__half *)carve(&cv, (size_t)cfg->vocab_size * H * 2);
	c->pos_type = (float *)carve(&cv, (size_t)cfg->max_positions * H * 4);
	c->emb_g = (float *)carve(&cv, H * 4);
	c->emb_b = (float *)carve(&cv, H * 4);
	for (int l = 0; l < c->L; l++) {
		struct dlayer *d = &c->layer[l];
		d->qkv_w = (__half *)carve(&cv, 3 * H * H * 2);
		d->qkv_b = (float *)carve(&cv, 3 * H * 4);
		d->ao_w = (__half *)carve(&cv, H * H * 2);
		d->ao_b = (float *)carve(&cv, H * 4);
		d->ln1_g = (float *)carve(&cv, H * 4);
		d->ln1_b = (float *)carve(&cv, H * 4);
		d->ff1_w = (__half *)carve(&cv, I * H * 2);
		d->ff1_b = (float *)carve(&cv, I * 4);
		d->ff2_w = (__half *)carve(&cv, H * I * 2);
		d->ff2_b = (float *)carve(&cv, H * 4);
		d->ln2_g = (float *)carve(&cv, H * 4);
		d->ln2_b = (float *)carve(&cv, H * 4);
	}
	return cv.used;
}

static size_t in_ints(int max_batch, int max_seq)
{
	return (size_t)3 * max_batch * max_seq + 2 * (size_t)max_batch + 1;
}

static size_t layout_acts(struct cuda_ctx *c, char *base)
{
	size_t T = (size_t)c->max_batch * round8(c->max_seq);
	size_t H = c->H, I = c->I;
	struct carver cv = {base, 0};
	c->d_in = (int32_t *)carve(&cv, in_ints(c->max_batch, c->max_seq) * 4);
	c->x32 = (float *)carve(&cv, T * H * 4);
	c->x16 = (__half *)carve(&cv, T * H * 2);
	c->qkv16 = (__half *)carve(&cv, T * 3 * H * 2);
	c->qkvp = (__half *)carve(&cv, T * 3 * H * 2);
	c->y32 = (float *)carve(&cv, T * H * 4);
	c->h16 = (__half *)carve(&cv, T * I * 2);
	c->attn = carve(&cv, c->attn_bytes);
	c->pooled = (float *)carve(&cv, (size_t)c->max_batch * H * 4);
	c->ws = carve(&cv, CUBLAS_WS_BYTES);
	return cv.used;
}

static void put_half(char *hbase, const void *dbase, const __half *dst,
		     const float *src, size_t n)
{
	__half *h =
	    (__half *)(hbase + ((const char *)dst - (const char *)dbase));
	for (size_t k = 0; k < n; k++)
		h[k] = __float2half(src[k]);
}

static void put_float(char *hbase, const void *dbase, const float *dst,
		      const float *src, size_t n)
{
	memcpy(hbase + ((const char *)dst - (const char *)dbase), src,
	       n * sizeof(float));
}

/* Bytes of scores + probabilities per sequence of seq tokens. */
static size_t attn_per_seq(int NH, int seq)
{
	return (size_t)NH * seq * seq * (sizeof(float) + sizeof(__half));
}

static int cuda_create(const struct sh_bert_model *m, int max_batch,
		       int max_seq, void **ctxp, char *err, size_t errlen)
{
	int rc = SH_OK;
	struct cuda_ctx *c = NULL;
	char *host = NULL;
	const struct sh_bert_config *cfg;
	size_t wbytes, abytes, H, I;

	*ctxp = NULL;
	if (!m)
		return sh_errf(err, errlen, SH_EINVAL,
			       "cuda backend: no model");
	cfg = &m->cfg;
	if (max_batch < 1 || max_seq < 1)
		return sh_errf(err, errlen, SH_EINVAL,
			       "cuda backend: max_batch %d and max_seq %d must "
			       "be positive",
			       max_batch, max_seq);
	if (cfg->hidden < 1 || cfg->heads < 1 || cfg->hidden % cfg->heads ||
	    cfg->hidden > MAX_HIDDEN || cfg->layers < 1 ||
	    cfg->intermediate < 1 || cfg->vocab_size < 1 ||
	    cfg->type_vocab_size < 1)
		return sh_errf(err, errlen, SH_EUNSUPPORTED,
			       "cuda backend: unsupported shape (hidden %d, "
			       "heads %d, layers %d, intermediate %d; hidden "
			       "at most %d)",
			       cfg->hidden, cfg->heads, cfg->layers,
			       cfg->intermediate, MAX_HIDDEN);
	if (max_seq > MAX_SEQ || max_seq > cfg->max_positions)
		return sh_errf(err, errlen, SH_EINVAL,
			       "cuda backend: max_seq %d exceeds %d (the "
			       "model's positions: %d)",
			       max_seq, MAX_SEQ, cfg->max_positions);

	c = (struct cuda_ctx *)calloc(1, sizeof(*c));
	if (!c)
		return sh_errf(err, errlen, SH_ENOMEM, "cuda backend: context");
	c->m = m;
	c->max_batch = max_batch;
	c->max_seq = max_seq;
	c->H = cfg->hidden;
	c->NH = cfg->heads;
	c->D = cfg->hidden / cfg->heads;
	c->I = cfg->intermediate;
	c->L = cfg->layers;
	H = c->H;
	I = c->I;
	c->layer = (struct dlayer *)calloc((size_t)c->L, sizeof(*c->layer));
	if (!c->layer) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "cuda backend: layers");
		goto fail;
	}

	CU_TRY(cudaGetDevice(&c->dev), "cudaGetDevice");
	CU_TRY(cudaSetDevice(c->dev), "cudaSetDevice");
	CU_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking),
	       "cudaStreamCreate");
	BLAS_TRY(cublasCreate(&c->blas), "cublasCreate");
	BLAS_TRY(cublasSetStream(c->blas, c->stream), "cublasSetStream");

	/* weights: laid out, converted on the host, uploaded in one copy */
	wbytes = layout_weights(c, NULL);
	CU_TRY(cudaMalloc(&c->warena, wbytes), "cudaMalloc(weights)");
	layout_weights(c, (char *)c->warena);
	host = (char *)malloc(wbytes);
	if (!host) {
		rc = sh_errf(err, errlen, SH_ENOMEM,
			     "cuda backend: %zu bytes of staging", wbytes);
		goto fail;
	}
	put_half(host, c->warena, c->word_emb, m->word_emb,
		 (size_t)cfg->vocab_size * H);
	{
		float *pt =
		    (float *)(host + ((char *)c->pos_type - (char *)c->warena));
		for (size_t p = 0; p < (size_t)cfg->max_positions; p++)
			for (size_t k = 0; k < H; k++)
				pt[p * H + k] =
				    m->pos_emb[p * H + k] + m->type_emb[k];
	}
	put_float(host, c->warena, c->emb_g, m->emb_ln_g, H);
	put_float(host, c->warena, c->emb_b, m->emb_ln_b, H);
	for (int l = 0; l < c->L; l++) {
		const struct sh_bert_layer *s = &m->layer[l];
		struct dlayer *d = &c->layer[l];
		put_half(host, c->warena, d->qkv_w, s->q_w, H * H);
		put_half(host, c->warena, d->qkv_w + H * H, s->k_w, H * H);
		put_half(host, c->warena, d->qkv_w + 2 * H * H, s->v_w, H * H);
		put_float(host, c->warena, d->qkv_b, s->q_b, H);
		put_float(host, c->warena, d->qkv_b + H, s->k_b, H);
		put_float(host, c->warena, d->qkv_b + 2 * H, s->v_b, H);
		put_half(host, c->warena, d->ao_w, s->ao_w, H * H);
		put_float(host, c->warena, d->ao_b, s->ao_b, H);
		put_float(host, c->warena, d->ln1_g, s->ln1_g, H);
		put_float(host, c->warena, d->ln1_b, s->ln1_b, H);
		put_half(host, c->warena, d->ff1_w, s->ff1_w, I * H);
		put_float(host, c->warena, d->ff1_b, s->ff1_b, I);
		put_half(host, c->warena, d->ff2_w, s->ff2_w, H * I);
		put_float(host, c->warena, d->ff2_b, s->ff2_b, H);
		put_float(host, c->warena, d->ln2_g, s->ln2_g, H);
		put_float(host, c->warena, d->ln2_b, s->ln2_b, H);
	}
	CU_TRY(cudaMemcpy(c->warena, host, wbytes, cudaMemcpyHostToDevice),
	       "upload of the weights");
	free(host);
	host = NULL;

	/* activations: one chunk of attention holds at least one sequence of
	 * max_seq tokens, at most max_batch of them, else ATTN_BUDGET */
	{
		size_t per = attn_per_seq(c->NH, round8(max_seq));
		size_t want = per * (size_t)max_batch;
		size_t cap = ATTN_BUDGET > per ? ATTN_BUDGET : per;
		c->attn_bytes = (want < cap ? want : cap) + ALIGN;
	}
	abytes = layout_acts(c, NULL);
	CU_TRY(cudaMalloc(&c->aarena, abytes), "cudaMalloc(activations)");
	layout_acts(c, (char *)c->aarena);
	/* defined contents from the start (the padding of the attention
	 * buffers is never read for a result, but stays deterministic) */
	CU_TRY(cudaMemset(c->aarena, 0, abytes), "cudaMemset(activations)");
	{
		const char *gv = getenv("SHOAL_CUDA_GRAPHS");
		c->graphs = !(gv && strcmp(gv, "0") == 0);
	}
	/* the fused short-sequence attention, when its shared memory fits */
	c->fa_max = FA_MAX < max_seq ? FA_MAX : max_seq;
	if (c->D != 32 && c->D != 64)
		c->fa_max = 0;
	if (c->fa_max && fa_smem(c->fa_max, c->D) > 48 * 1024 &&
	    cudaFuncSetAttribute(
		c->D == 32 ? k_attn_short<32> : k_attn_short<64>,
		cudaFuncAttributeMaxDynamicSharedMemorySize,
		(int)fa_smem(c->fa_max, c->D)) != cudaSuccess) {
		cudaGetLastError();
		c->fa_max = 0;
	}
	BLAS_TRY(cublasSetWorkspace(c->blas, c->ws, CUBLAS_WS_BYTES),
		 "cublasSetWorkspace");
	CU_TRY(
	    cudaMallocHost((void **)&c->h_in, in_ints(max_batch, max_seq) * 4),
	    "cudaMallocHost");
	CU_TRY(cudaMallocHost((void **)&c->h_out,
			      (size_t)max_batch * H * sizeof(float)),
	       "cudaMallocHost");
	*ctxp = c;
	return SH_OK;
fail:
	free(host);
	cuda_destroy(c);
	return rc;
}

/* ---- forward ---------------------------------------------------------- */

/* Queues one forward pass of the batch packed in h_in (n rows, T tokens,
 * the longest maxlen) on the stream: upload, the layers, pooling, and the
 * download into h_out. Nothing here depends on the host beyond these three
 * numbers and the two pinned buffers, so that the same work can be captured
 * into a CUDA graph and replayed for the next batch of that shape. */
static int enqueue(struct cuda_ctx *c, int n, int T, int maxlen, char *err,
		   size_t errlen)
{
	int rc = SH_OK;
	int H = c->H, NH = c->NH, D = c->D, I = c->I;
	const struct sh_bert_config *cfg = &c->m->cfg;
	/* attention's padded length (strided-GEMM path): the longest row,
	 * rounded to a multiple of 8 for the tensor cores' alignment */
	int sp = round8(maxlen);
	size_t nin = (size_t)3 * T + 2 * (size_t)n + 1;
	int32_t *d_ids = c->d_in, *d_pos = d_ids + T, *d_row = d_pos + T;
	int32_t *d_off = d_row + T, *d_len = d_off + n + 1;
	const float one = 1.f, zero = 0.f;
	const float scale = 1.f / sqrtf((float)D);

	CU_TRY(cudaMemcpyAsync(c->d_in, c->h_in, nin * 4,
			       cudaMemcpyHostToDevice, c->stream),
	       "upload of the batch");

	DISPATCH_K(H, k_embed_ln, (T + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK,
		   T, H, d_ids, d_pos, c->word_emb, c->pos_type, c->emb_g,
		   c->emb_b, cfg->eps, c->x32, c->x16);
	LAUNCH_TRY("embedding kernel");

	for (int l = 0; l < c->L; l++) {
		const struct dlayer *w = &c->layer[l];
		size_t plane = (size_t)n * NH * sp * D;
		const __half *Q = c->qkvp, *K = Q + plane, *V = K + plane;
		__half *O = c->qkv16; /* free once scattered */
		size_t per = attn_per_seq(NH, sp);
		int chunk = (int)((c->attn_bytes - ALIGN) / per);

		BLAS_TRY(linear(c, T, H, 3 * H, c->x16, w->qkv_w, c->qkv16,
				CUDA_R_16F),
			 "QKV projection");
		if (maxlen <= c->fa_max) {
			if (D == 32)
				k_attn_short<32>
				    <<<n * NH, FA_THREADS, fa_smem(maxlen, D),
				       c->stream>>>(H, NH, scale, d_off, d_len,
						    c->qkv16, w->qkv_b, c->x16);
			else
				k_attn_short<64>
				    <<<n * NH, FA_THREADS, fa_smem(maxlen, D),
				       c->stream>>>(H, NH, scale, d_off, d_len,
						    c->qkv16, w->qkv_b, c->x16);
			LAUNCH_TRY("attention kernel");
		} else {
			k_scatter_qkv<<<n * sp, 128, 0, c->stream>>>(
			    n, sp, H, NH, D, d_off, d_len, c->qkv16, w->qkv_b,
			    c->qkvp);
			LAUNCH_TRY("QKV scatter kernel");

			if (chunk > n)
				chunk = n;
			for (int i0 = 0; i0 < n; i0 += chunk) {
				int nc = n - i0 < chunk ? n - i0 : chunk;
				int batches = nc * NH;
				size_t ss = (size_t)sp * sp;
				size_t sd = (size_t)sp * D;
				size_t first = (size_t)i0 * NH * sd;
				float *S = (float *)c->attn;
				__half *P =
				    (__half *)((char *)c->attn +
					       align_up((size_t)batches * ss *
							sizeof(float)));
				/* Sᵀ[key, query] = K Qᵀ, column-major per head
				 */
				BLAS_TRY(cublasGemmStridedBatchedEx(
					     c->blas, CUBLAS_OP_T, CUBLAS_OP_N,
					     sp, sp, D, &scale, K + first,
					     CUDA_R_16F, D, (long long)sd,
					     Q + first, CUDA_R_16F, D,
					     (long long)sd, &zero, S,
					     CUDA_R_32F, sp, (long long)ss,
					     batches, CUBLAS_COMPUTE_32F,
					     CUBLAS_GEMM_DEFAULT),
					 "attention scores");
				DISPATCH_K(sp, k_softmax,
					   ((size_t)batches * sp +
					    WARPS_PER_BLOCK - 1) /
					       WARPS_PER_BLOCK,
					   batches * sp, sp, NH, i0, d_len, S,
					   P);
				LAUNCH_TRY("softmax kernel");
				/* Oᵀ[D, query] = Vᵀ[D, key] Pᵀ[key, query] */
				BLAS_TRY(cublasGemmStridedBatchedEx(
					     c->blas, CUBLAS_OP_N, CUBLAS_OP_N,
					     D, sp, sp, &one, V + first,
					     CUDA_R_16F, D, (long long)sd, P,
					     CUDA_R_16F, sp, (long long)ss,
					     &zero, O + first, CUDA_R_16F, D,
					     (long long)sd, batches,
					     CUBLAS_COMPUTE_32F,
					     CUBLAS_GEMM_DEFAULT),
					 "attention values");
			}
			k_gather_heads<<<T, 128, 0, c->stream>>>(
			    sp, H, NH, D, d_pos, d_row, O, c->x16);
			LAUNCH_TRY("head gather kernel");
		}

		BLAS_TRY(
		    linear(c, T, H, H, c->x16, w->ao_w, c->y32, CUDA_R_32F),
		    "attention output projection");
		DISPATCH_K(H, k_residual_ln,
			   (T + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK, T, H,
			   c->y32, w->ao_b, w->ln1_g, w->ln1_b, cfg->eps,
			   c->x32, c->x16);
		LAUNCH_TRY("LayerNorm kernel");

		BLAS_TRY(
		    linear(c, T, H, I, c->x16, w->ff1_w, c->h16, CUDA_R_16F),
		    "feed-forward 1");
		k_bias_gelu<<<T, 256, 0, c->stream>>>(I, w->ff1_b, c->h16);
		LAUNCH_TRY("GELU kernel");
		BLAS_TRY(
		    linear(c, T, I, H, c->h16, w->ff2_w, c->y32, CUDA_R_32F),
		    "feed-forward 2");
		DISPATCH_K(H, k_residual_ln,
			   (T + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK, T, H,
			   c->y32, w->ff2_b, w->ln2_g, w->ln2_b, cfg->eps,
			   c->x32, c->x16);
		LAUNCH_TRY("LayerNorm kernel");
	}

	k_pool<<<n, POOL_THREADS, 0, c->stream>>>(H, d_off, c->x32, c->pooled);
	LAUNCH_TRY("pooling kernel");
	CU_TRY(cudaMemcpyAsync(c->h_out, c->pooled,
			       (size_t)n * H * sizeof(float),
			       cudaMemcpyDeviceToHost, c->stream),
	       "download of the embeddings");
	return SH_OK;
fail:
	return rc;
}

/* A batch of a shape seen before (n, T, longest) replays the CUDA graph
 * captured from it: one launch instead of some fifty, which is most of the
 * time of a small batch. Only small batches (their shapes repeat; a large
 * batch's token count rarely does), and a shape is captured the second time
 * it comes, not the first, so that one-off shapes cost no capture. Should a
 * capture fail, the context runs without graphs from then on. */
static uint64_t shape_key(int n, int T, int maxlen)
{
	return ((uint64_t)n << 40) | ((uint64_t)T << 16) | (uint64_t)maxlen;
}

static int run_batch(struct cuda_ctx *c, int n, int T, int maxlen, char *err,
		     size_t errlen)
{
	int rc = SH_OK;
	uint64_t key, *seen;
	struct graph_slot *hit = NULL, *victim = &c->gs[0];
	cudaGraph_t g = NULL;
	cudaGraphExec_t ge = NULL;
	cudaError_t e;

	if (!c->graphs || n > GRAPH_MAX_N)
		return enqueue(c, n, T, maxlen, err, errlen);
	key = shape_key(n, T, maxlen);
	c->tick++;
	for (int k = 0; k < GRAPH_SLOTS; k++) {
		if (c->gs[k].key == key)
			hit = &c->gs[k];
		if (c->gs[k].used < victim->used)
			victim = &c->gs[k];
	}
	if (hit) {
		hit->used = c->tick;
		CU_TRY(cudaGraphLaunch(hit->exec, c->stream),
		       "cudaGraphLaunch");
		return SH_OK;
	}
	seen = &c->seen[(key * 0x9E3779B97F4A7C15ull) >> 54];
	if (*seen != key) {
		*seen = key;
		return enqueue(c, n, T, maxlen, err, errlen);
	}
	CU_TRY(
	    cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal),
	    "cudaStreamBeginCapture");
	rc = enqueue(c, n, T, maxlen, err, errlen);
	e = cudaStreamEndCapture(c->stream, &g);
	if (rc == SH_OK && e == cudaSuccess)
		e = cudaGraphInstantiate(&ge, g, 0);
	if (g)
		cudaGraphDestroy(g);
	if (rc != SH_OK || e != cudaSuccess) {
		cudaGetLastError();
		if (ge)
			cudaGraphExecDestroy(ge);
		c->graphs = 0;
		return enqueue(c, n, T, maxlen, err, errlen);
	}
	if (victim->exec)
		cudaGraphExecDestroy(victim->exec);
	victim->key = key;
	victim->exec = ge;
	victim->used = c->tick;
	CU_TRY(cudaGraphLaunch(ge, c->stream), "cudaGraphLaunch");
	return SH_OK;
fail:
	return rc;
}

static int cuda_forward(void *ctxp, const struct sh_bert_batch *bt, float *out,
			char *err, size_t errlen)
{
	struct cuda_ctx *c = (struct cuda_ctx *)ctxp;
	int rc = SH_OK;
	int n = bt->n, seq = bt->seq, T = 0, maxlen = 0;
	int H = c->H;
	const struct sh_bert_config *cfg = &c->m->cfg;
	int32_t *h_ids, *h_pos, *h_row, *h_off, *h_len;

	if (n < 1 || n > c->max_batch || seq < 1 || seq > c->max_seq)
		return sh_errf(err, errlen, SH_EINVAL,
			       "cuda backend: batch of %d x %d exceeds the "
			       "context's %d x %d",
			       n, seq, c->max_batch, c->max_seq);
	for (int i = 0; i < n; i++) {
		if (bt->len[i] < 1 || bt->len[i] > seq)
			return sh_errf(err, errlen, SH_EINVAL,
				       "cuda backend: row %d has %d tokens "
				       "(1..%d)",
				       i, bt->len[i], seq);
		T += bt->len[i];
		maxlen = bt->len[i] > maxlen ? bt->len[i] : maxlen;
	}

	/* the batch, packed: ids[T] pos[T] row[T] off[n+1] len[n] */
	h_ids = c->h_in;
	h_pos = h_ids + T;
	h_row = h_pos + T;
	h_off = h_row + T;
	h_len = h_off + n + 1;
	{
		int t = 0;
		for (int i = 0; i < n; i++) {
			const int32_t *ids = bt->ids + (size_t)i * seq;
			h_off[i] = t;
			h_len[i] = bt->len[i];
			for (int p = 0; p < bt->len[i]; p++, t++) {
				if (ids[p] < 0 || ids[p] >= cfg->vocab_size)
					return sh_errf(err, errlen, SH_EINVAL,
						       "cuda backend: token id "
						       "%d out of the "
						       "vocabulary (%d)",
						       (int)ids[p],
						       cfg->vocab_size);
				h_ids[t] = ids[p];
				h_pos[t] = p;
				h_row[t] = i;
			}
		}
		h_off[n] = t;
	}
	CU_TRY(cudaSetDevice(c->dev), "cudaSetDevice");
	rc = run_batch(c, n, T, maxlen, err, errlen);
	if (rc)
		goto fail;
	CU_TRY(cudaStreamSynchronize(c->stream), "forward pass");
	memcpy(out, c->h_out, (size_t)n * H * sizeof(float));
	return SH_OK;
fail:
	/* leave the stream idle before the caller reuses the buffers */
	cudaStreamSynchronize(c->stream);
	return rc;
}

/* ---- the ops table ---------------------------------------------------- */

extern "C" int sh_bert_cuda_available(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
		cudaGetLastError();
		return 0;
	}
	if (cudaSetDevice(0) != cudaSuccess) {
		cudaGetLastError();
		return 0;
	}
	return 1;
}

extern "C" const struct sh_bert_backend_ops sh_bert_cuda = {
    "cuda",
    cuda_create,
    cuda_forward,
    cuda_destroy,
};
