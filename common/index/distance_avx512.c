/*
 * Distance kernels: the AVX-512 table (F, BW, VL and VNNI).
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma (see
 * meson.build); distance.c hands this table out only when the CPU reports
 * all of them. These are the hot path of an HNSW search.
 *
 * Float kernels keep four independent 16-lane FMA accumulators (64 floats
 * per step), then single 16-lane steps, then one zero-masked load for the
 * last n % 16 floats. Masked-off lanes are never read, so nothing past the
 * end of a vector is touched (AVX-512 masked loads suppress faults there).
 *
 * dot_u8i8 is exactly VNNI's vpdpbusd (unsigned times signed bytes, four
 * products summed into each 32-bit lane, no saturation): 256 bytes per step
 * into four accumulators, then 64-byte steps, then a masked tail.
 *
 * dot_i8, l2sq_i8 and dot_u8 widen bytes to 16 bits and multiply-add pairs
 * into 32-bit lanes with vpmaddwd (exact for every byte pair), 64 bytes per
 * step into two accumulators, then a 32-byte step, then a masked tail.
 */
#include <immintrin.h>

#include "distance_impl.h"

static inline __attribute__((always_inline)) __mmask16 mask16(size_t r)
{
	return (__mmask16)((1u << r) - 1); /* r < 16 */
}

/* Sum of the sixteen lanes modulo 2^32. (_mm512_reduce_add_epi32 finishes
 * in signed int arithmetic, which may overflow for dot_u8.) */
static inline __attribute__((always_inline)) uint32_t hsum_epi32(__m512i v)
{
	__m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v),
				     _mm512_extracti64x4_epi64(v, 1));
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(h),
				  _mm256_extracti128_si256(h, 1));

	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
	return (uint32_t)_mm_cvtsi128_si32(s);
}

static float l2sq_f32(const float *a, const float *b, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	__m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
	size_t i = 0;

	for (; i + 64 <= n; i += 64) {
		__m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i),
					  _mm512_loadu_ps(b + i));
		__m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16),
					  _mm512_loadu_ps(b + i + 16));
		__m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 32),
					  _mm512_loadu_ps(b + i + 32));
		__m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 48),
					  _mm512_loadu_ps(b + i + 48));

		s0 = _mm512_fmadd_ps(d0, d0, s0);
		s1 = _mm512_fmadd_ps(d1, d1, s1);
		s2 = _mm512_fmadd_ps(d2, d2, s2);
		s3 = _mm512_fmadd_ps(d3, d3, s3);
	}
	for (; i + 16 <= n; i += 16) {
		__m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i),
					 _mm512_loadu_ps(b + i));

		s0 = _mm512_fmadd_ps(d, d, s0);
	}
	if (i < n) {
		__mmask16 m = mask16(n - i);
		__m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i),
					 _mm512_maskz_loadu_ps(m, b + i));

		s1 = _mm512_fmadd_ps(d, d, s1);
	}
	return _mm512_reduce_add_ps(
	    _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static float dot_f32(const float *a, const float *b, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	__m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
	size_t i = 0;

	for (; i + 64 <= n; i += 64) {
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i),
				     _mm512_loadu_ps(b + i), s0);
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16),
				     _mm512_loadu_ps(b + i + 16), s1);
		s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32),
				     _mm512_loadu_ps(b + i + 32), s2);
		s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48),
				     _mm512_loadu_ps(b + i + 48), s3);
	}
	for (; i + 16 <= n; i += 16)
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i),
				     _mm512_loadu_ps(b + i), s0);
	if (i < n) {
		__mmask16 m = mask16(n - i);

		s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
				     _mm512_maskz_loadu_ps(m, b + i), s1);
	}
	return _mm512_reduce_add_ps(
	    _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static int32_t dot_u8i8(const uint8_t *a, const int8_t *b, size_t n)
{
	__m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
	__m512i s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512();
	size_t i = 0;

	for (; i + 256 <= n; i += 256) {
		s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(a + i),
					 _mm512_loadu_si512(b + i));
		s1 = _mm512_dpbusd_epi32(s1, _mm512_loadu_si512(a + i + 64),
					 _mm512_loadu_si512(b + i + 64));
		s2 = _mm512_dpbusd_epi32(s2, _mm512_loadu_si512(a + i + 128),
					 _mm512_loadu_si512(b + i + 128));
		s3 = _mm512_dpbusd_epi32(s3, _mm512_loadu_si512(a + i + 192),
					 _mm512_loadu_si512(b + i + 192));
	}
	for (; i + 64 <= n; i += 64)
		s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(a + i),
					 _mm512_loadu_si512(b + i));
	if (i < n) {
		__mmask64 m = (__mmask64)((1ull << (n - i)) - 1); /* n-i < 64 */

		s1 = _mm512_dpbusd_epi32(s1, _mm512_maskz_loadu_epi8(m, a + i),
					 _mm512_maskz_loadu_epi8(m, b + i));
	}
	return (int32_t)hsum_epi32(_mm512_add_epi32(_mm512_add_epi32(s0, s1),
						    _mm512_add_epi32(s2, s3)));
}

/*
 * The three widening kernels share one loop; op is a constant at every call
 * site, so the switch folds away once int_kernel is inlined.
 */
enum int_op { DOT_I8, L2SQ_I8, DOT_U8 };

/* 32 bytes of a and b (already loaded), widened to int16, as sixteen int32
 * pair sums. */
static inline __attribute__((always_inline)) __m512i
int_step(__m256i x, __m256i y, enum int_op op)
{
	__m512i d;

	switch (op) {
	case DOT_I8:
		return _mm512_madd_epi16(_mm512_cvtepi8_epi16(x),
					 _mm512_cvtepi8_epi16(y));
	case L2SQ_I8:
		d = _mm512_sub_epi16(_mm512_cvtepi8_epi16(x),
				     _mm512_cvtepi8_epi16(y));
		return _mm512_madd_epi16(d, d);
	case DOT_U8:
	default:
		return _mm512_madd_epi16(_mm512_cvtepu8_epi16(x),
					 _mm512_cvtepu8_epi16(y));
	}
}

static inline __attribute__((always_inline)) __m256i load32(const uint8_t *p)
{
	return _mm256_loadu_si256((const __m256i *)p);
}

static inline __attribute__((always_inline)) uint32_t
int_kernel(const void *va, const void *vb, size_t n, enum int_op op)
{
	const uint8_t *a = va, *b = vb;
	__m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
	size_t i = 0;

	for (; i + 64 <= n; i += 64) {
		s0 = _mm512_add_epi32(
		    s0, int_step(load32(a + i), load32(b + i), op));
		s1 = _mm512_add_epi32(
		    s1, int_step(load32(a + i + 32), load32(b + i + 32), op));
	}
	if (i + 32 <= n) {
		s0 = _mm512_add_epi32(
		    s0, int_step(load32(a + i), load32(b + i), op));
		i += 32;
	}
	if (i < n) {
		__mmask32 m = (__mmask32)((1ull << (n - i)) - 1); /* n-i < 32 */

		s1 = _mm512_add_epi32(
		    s1, int_step(_mm256_maskz_loadu_epi8(m, a + i),
				 _mm256_maskz_loadu_epi8(m, b + i), op));
	}
	return hsum_epi32(_mm512_add_epi32(s0, s1));
}

static int32_t dot_i8(const int8_t *a, const int8_t *b, size_t n)
{
	return (int32_t)int_kernel(a, b, n, DOT_I8);
}

static int32_t l2sq_i8(const int8_t *a, const int8_t *b, size_t n)
{
	return (int32_t)int_kernel(a, b, n, L2SQ_I8);
}

static uint32_t dot_u8(const uint8_t *a, const uint8_t *b, size_t n)
{
	return int_kernel(a, b, n, DOT_U8);
}

const sh_kernels sh_kernels_avx512_table = {
    .name = "avx512",
    .l2sq_f32 = l2sq_f32,
    .dot_f32 = dot_f32,
    .dot_i8 = dot_i8,
    .l2sq_i8 = l2sq_i8,
    .dot_u8i8 = dot_u8i8,
    .dot_u8 = dot_u8,
};
