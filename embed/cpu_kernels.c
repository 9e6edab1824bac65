/*
 * The CPU backend's own kernels, written as plain loops that gcc vectorises
 * for the instruction set this file is compiled for (see cpu_kernels.h and
 * meson.build). No libm calls inside the loops: exp and erf are evaluated
 * here, branch-free, so that the loops vectorise.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_kernels.h"

#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define K_HAVE_F16C 1
#endif

#ifndef EMBED_KVARIANT
#error "EMBED_KVARIANT must name the instruction set (generic, avx2, avx512)"
#endif
#define K_CAT2(a, b) a##b
#define K_CAT(a, b) K_CAT2(a, b)
#define K_TABLE K_CAT(embed_kernels_, EMBED_KVARIANT)
#define K_STR2(a) #a
#define K_STR(a) K_STR2(a)

static inline float k_bits_float(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

static inline uint32_t k_float_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

/* e^x for x in [-87, 88] (clamped), relative error ~2e-7: x = k ln2 + r with
 * |r| <= ln2/2, e^r by its Taylor series to degree 7, 2^k built in the
 * exponent bits. Branch-free, so that loops calling it vectorise: k is
 * rounded by adding 1.5 * 2^23 and reading the integer out of the low
 * mantissa bits (never by subtracting the constant back, which
 * reassociation could fold away). */
static inline float k_exp(float x)
{
	x = fmaxf(x, -87.0f);
	x = fminf(x, 88.0f);
	float big = x * 1.44269504f + 12582912.0f;
	int32_t k = (int32_t)(k_float_bits(big) - 0x4B400000u);
	float kf = (float)k;
	float r = x - kf * 0.693145752f; /* ln2, high part */
	r = r - kf * 1.42860677e-6f;	 /* ln2, low part */
	float p = 1.0f / 5040.0f;
	p = p * r + 1.0f / 720.0f;
	p = p * r + 1.0f / 120.0f;
	p = p * r + 1.0f / 24.0f;
	p = p * r + 1.0f / 6.0f;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	return p * k_bits_float((uint32_t)(k + 127) << 23);
}

/* gelu(x) = x/2 (1 + erf(x / sqrt 2)); erf by Abramowitz & Stegun 7.1.26
 * (|error| <= 1.5e-7), its sign put back with the sign bit of x. */
static inline float k_gelu(float x)
{
	float z = x * 0.707106781f;
	float a = fminf(fabsf(z), 10.0f); /* erf(10) is 1 in float */
	float t = 1.0f / (1.0f + 0.3275911f * a);
	float p = 1.061405429f;
	p = p * t - 1.453152027f;
	p = p * t + 1.421413741f;
	p = p * t - 0.284496736f;
	p = p * t + 0.254829592f;
	p = p * t;
	float e = 1.0f - p * k_exp(-a * a);
	e = k_bits_float(k_float_bits(e) ^ (k_float_bits(z) & 0x80000000u));
	return 0.5f * x * (1.0f + e);
}

static void add_bias(float *restrict x, const float *restrict b, int rows,
		     int cols)
{
	for (int r = 0; r < rows; r++) {
		float *restrict row = x + (size_t)r * (size_t)cols;
		for (int c = 0; c < cols; c++)
			row[c] += b[c];
	}
}

static void bias_gelu(float *restrict x, const float *restrict b, int rows,
		      int cols)
{
	for (int r = 0; r < rows; r++) {
		float *restrict row = x + (size_t)r * (size_t)cols;
		for (int c = 0; c < cols; c++)
			row[c] = k_gelu(row[c] + b[c]);
	}
}

static void add_layernorm(float *restrict x, const float *restrict y,
			  const float *restrict b, const float *restrict g,
			  const float *restrict beta, int rows, int cols,
			  float eps)
{
	for (int r = 0; r < rows; r++) {
		float *restrict row = x + (size_t)r * (size_t)cols;
		if (y) {
			const float *restrict yr = y + (size_t)r * (size_t)cols;
			for (int c = 0; c < cols; c++)
				row[c] += yr[c] + b[c];
		}
		float sum = 0.0f;
		for (int c = 0; c < cols; c++)
			sum += row[c];
		float mean = sum / (float)cols;
		float var = 0.0f;
		for (int c = 0; c < cols; c++) {
			float d = row[c] - mean;
			var += d * d;
		}
		float inv = 1.0f / sqrtf(var / (float)cols + eps);
		for (int c = 0; c < cols; c++)
			row[c] = (row[c] - mean) * inv * g[c] + beta[c];
	}
}

static void softmax_rows(float *s, int rows, int cols, int ld)
{
	for (int r = 0; r < rows; r++) {
		float *restrict row = s + (size_t)r * (size_t)ld;
		float mx = row[0];
		for (int c = 1; c < cols; c++)
			mx = row[c] > mx ? row[c] : mx;
		float sum = 0.0f;
		for (int c = 0; c < cols; c++) {
			row[c] = k_exp(row[c] - mx);
			sum += row[c];
		}
		float inv = 1.0f / sum;
		for (int c = 0; c < cols; c++)
			row[c] *= inv;
	}
}

static void attend(const float *q, const float *k, const float *v, int ld,
		   float *out, int ldo, int n, int d, float scale,
		   float *scratch)
{
	float *restrict s = scratch;
	for (int i = 0; i < n; i++) {
		const float *restrict qi = q + (size_t)i * (size_t)ld;
		for (int j = 0; j < n; j++) {
			const float *restrict kj = k + (size_t)j * (size_t)ld;
			float dot = 0.0f;
			for (int c = 0; c < d; c++)
				dot += qi[c] * kj[c];
			s[j] = dot * scale;
		}
		softmax_rows(s, 1, n, n);
		float *restrict o = out + (size_t)i * (size_t)ldo;
		for (int c = 0; c < d; c++)
			o[c] = 0.0f;
		for (int j = 0; j < n; j++) {
			const float *restrict vj = v + (size_t)j * (size_t)ld;
			float p = s[j];
			for (int c = 0; c < d; c++)
				o[c] += p * vj[c];
		}
	}
}

/* out[r][j] = x[r] . w[j] for a handful of rows: two weight rows at a
 * time, read from memory once and applied to every row of x while they sit
 * in L1, with eight independent accumulators (4 rows x 2 columns) so the
 * FMAs do not wait on each other. */
static void linear_small(const float *restrict x, int rows, int k,
			 const float *restrict w, int n, float *restrict out)
{
	for (int j = 0; j < n; j += 2) {
		const float *restrict w0 = w + (size_t)j * (size_t)k;
		const float *restrict w1 = j + 1 < n ? w0 + k : w0;
		int r = 0;
		for (; r + 4 <= rows; r += 4) {
			const float *restrict x0 = x + (size_t)r * (size_t)k;
			const float *restrict x1 = x0 + k,
					      *restrict x2 = x1 + k,
					      *restrict x3 = x2 + k;
			float a00 = 0, a01 = 0, a10 = 0, a11 = 0;
			float a20 = 0, a21 = 0, a30 = 0, a31 = 0;
			for (int c = 0; c < k; c++) {
				float v0 = w0[c], v1 = w1[c];
				a00 += x0[c] * v0;
				a01 += x0[c] * v1;
				a10 += x1[c] * v0;
				a11 += x1[c] * v1;
				a20 += x2[c] * v0;
				a21 += x2[c] * v1;
				a30 += x3[c] * v0;
				a31 += x3[c] * v1;
			}
			float *o = out + (size_t)r * (size_t)n + j;
			o[0] = a00;
			o[n] = a10;
			o[2 * n] = a20;
			o[3 * n] = a30;
			if (j + 1 < n) {
				o[1] = a01;
				o[n + 1] = a11;
				o[2 * n + 1] = a21;
				o[3 * n + 1] = a31;
			}
		}
		for (; r < rows; r++) {
			const float *restrict x0 = x + (size_t)r * (size_t)k;
			float a00 = 0, a01 = 0;
			for (int c = 0; c < k; c++) {
				a00 += x0[c] * w0[c];
				a01 += x0[c] * w1[c];
			}
			float *o = out + (size_t)r * (size_t)n + j;
			o[0] = a00;
			if (j + 1 < n)
				o[1] = a01;
		}
	}
}

#ifdef K_HAVE_F16C
static inline float k_hsum(__m256 v)
{
	__m128 a =
	    _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	a = _mm_add_ps(a, _mm_movehl_ps(a, a));
	a = _mm_add_ss(a, _mm_movehdup_ps(a));
	return _mm_cvtss_f32(a);
}

static inline __m256 k_load_h(const uint16_t *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline float k_h2f(uint16_t h)
{
	return _cvtsh_ss(h);
}

/* linear_small with half weights: 4 rows x 2 columns of 8-float
 * accumulators; the k % 8 tail in scalar code. */
static void linear_small_h(const float *restrict x, int rows, int k,
			   const uint16_t *restrict w, int n,
			   float *restrict out)
{
	const int k8 = k & ~7;
	for (int j = 0; j < n; j += 2) {
		const uint16_t *w0 = w + (size_t)j * (size_t)k;
		const uint16_t *w1 = j + 1 < n ? w0 + k : w0;
		int r = 0;
		for (; r + 4 <= rows; r += 4) {
			const float *x0 = x + (size_t)r * (size_t)k;
			const float *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
			__m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00,
			       a11 = a00, a20 = a00, a21 = a00, a30 = a00,
			       a31 = a00;
			for (int c = 0; c < k8; c += 8) {
				__m256 v0 = k_load_h(w0 + c);
				__m256 v1 = k_load_h(w1 + c);
				__m256 y = _mm256_loadu_ps(x0 + c);
				a00 = _mm256_fmadd_ps(y, v0, a00);
				a01 = _mm256_fmadd_ps(y, v1, a01);
				y = _mm256_loadu_ps(x1 + c);
				a10 = _mm256_fmadd_ps(y, v0, a10);
				a11 = _mm256_fmadd_ps(y, v1, a11);
				y = _mm256_loadu_ps(x2 + c);
				a20 = _mm256_fmadd_ps(y, v0, a20);
				a21 = _mm256_fmadd_ps(y, v1, a21);
				y = _mm256_loadu_ps(x3 + c);
				a30 = _mm256_fmadd_ps(y, v0, a30);
				a31 = _mm256_fmadd_ps(y, v1, a31);
			}
			float s[8] = {k_hsum(a00), k_hsum(a01), k_hsum(a10),
				      k_hsum(a11), k_hsum(a20), k_hsum(a21),
				      k_hsum(a30), k_hsum(a31)};
			for (int c = k8; c < k; c++) {
				float v0 = k_h2f(w0[c]), v1 = k_h2f(w1[c]);
				s[0] += x0[c] * v0;
				s[1] += x0[c] * v1;
				s[2] += x1[c] * v0;
				s[3] += x1[c] * v1;
				s[4] += x2[c] * v0;
				s[5] += x2[c] * v1;
				s[6] += x3[c] * v0;
				s[7] += x3[c] * v1;
			}
			for (int i = 0; i < 4; i++) {
				float *o =
				    out + (size_t)(r + i) * (size_t)n + j;
				o[0] = s[2 * i];
				if (j + 1 < n)
					o[1] = s[2 * i + 1];
			}
		}
		for (; r < rows; r++) {
			const float *x0 = x + (size_t)r * (size_t)k;
			__m256 a00 = _mm256_setzero_ps(), a01 = a00;
			for (int c = 0; c < k8; c += 8) {
				__m256 y = _mm256_loadu_ps(x0 + c);
				a00 = _mm256_fmadd_ps(y, k_load_h(w0 + c), a00);
				a01 = _mm256_fmadd_ps(y, k_load_h(w1 + c), a01);
			}
			float s0 = k_hsum(a00), s1 = k_hsum(a01);
			for (int c = k8; c < k; c++) {
				s0 += x0[c] * k_h2f(w0[c]);
				s1 += x0[c] * k_h2f(w1[c]);
			}
			float *o = out + (size_t)r * (size_t)n + j;
			o[0] = s0;
			if (j + 1 < n)
				o[1] = s1;
		}
	}
}
#endif

const struct embed_kernels K_TABLE = {
    .name = K_STR(EMBED_KVARIANT),
    .add_bias = add_bias,
    .bias_gelu = bias_gelu,
    .add_layernorm = add_layernorm,
    .attend = attend,
    .softmax_rows = softmax_rows,
    .linear_small = linear_small,
#ifdef K_HAVE_F16C
    .linear_small_h = linear_small_h,
#endif
};
