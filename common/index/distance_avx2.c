/*
 * Distance kernels: the AVX2 + FMA table.
 *
 * Compiled with -mavx2 -mfma (see meson.build); distance.c hands this table
 * out only when the CPU reports both.
 *
 * Float kernels keep four independent 8-lane FMA accumulators (32 floats per
 * step, enough to hide the FMA latency), then single 8-lane steps, then one
 * masked load (_mm256_maskload_ps never touches the masked-off lanes, so it
 * cannot fault past the end of the vector).
 *
 * Integer kernels widen bytes to 16 bits (_mm256_cvtep[iu]8_epi16) and
 * multiply-add pairs into 32-bit lanes with _mm256_madd_epi16, which is exact
 * for every byte pair. (_mm256_maddubs_epi16 would be one instruction less,
 * but it saturates its 16-bit sums.) The last n % 16 bytes are done in scalar
 * code.
 */
#include <immintrin.h>

#include "distance_impl.h"

/* Sixteen int32s: eight -1 then eight 0; loading 8 of them at offset 8 - r
 * gives a mask with the first r lanes set. */
static const int32_t tail_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
				      0,  0,  0,  0,  0,  0,  0,  0};

static inline __m256i first_lanes(size_t r)
{
	return _mm256_loadu_si256((const __m256i *)(tail_mask + 8 - r));
}

static inline float hsum_ps(__m256 v)
{
	__m128 s =
	    _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

static inline uint32_t hsum_epi32(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v),
				  _mm256_extracti128_si256(v, 1));

	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
	return (uint32_t)_mm_cvtsi128_si32(s);
}

static float l2sq_f32(const float *a, const float *b, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		__m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i),
					  _mm256_loadu_ps(b + i));
		__m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8),
					  _mm256_loadu_ps(b + i + 8));
		__m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16),
					  _mm256_loadu_ps(b + i + 16));
		__m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24),
					  _mm256_loadu_ps(b + i + 24));

		s0 = _mm256_fmadd_ps(d0, d0, s0);
		s1 = _mm256_fmadd_ps(d1, d1, s1);
		s2 = _mm256_fmadd_ps(d2, d2, s2);
		s3 = _mm256_fmadd_ps(d3, d3, s3);
	}
	for (; i + 8 <= n; i += 8) {
		__m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i),
					 _mm256_loadu_ps(b + i));

		s0 = _mm256_fmadd_ps(d, d, s0);
	}
	if (i < n) {
		__m256i m = first_lanes(n - i);
		__m256 d = _mm256_sub_ps(_mm256_maskload_ps(a + i, m),
					 _mm256_maskload_ps(b + i, m));

		s1 = _mm256_fmadd_ps(d, d, s1);
	}
	return hsum_ps(
	    _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

static float dot_f32(const float *a, const float *b, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i),
				     _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8),
				     _mm256_loadu_ps(b + i + 8), s1);
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16),
				     _mm256_loadu_ps(b + i + 16), s2);
		s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24),
				     _mm256_loadu_ps(b + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i),
				     _mm256_loadu_ps(b + i), s0);
	if (i < n) {
		__m256i m = first_lanes(n - i);

		s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m),
				     _mm256_maskload_ps(b + i, m), s1);
	}
	return hsum_ps(
	    _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

/*
 * The four integer kernels share one loop: 32 bytes per step into two
 * accumulators, then one 16-byte step, then a scalar tail. op is a constant
 * at every call site, so the switches fold away once int_kernel is inlined.
 */
enum int_op { DOT_I8, L2SQ_I8, DOT_U8I8, DOT_U8 };

/* Sixteen bytes of a and b, widened to int16, as eight int32 pair sums. */
static inline __attribute__((always_inline)) __m256i
int_step(const uint8_t *a, const uint8_t *b, enum int_op op)
{
	__m128i x = _mm_loadu_si128((const __m128i *)a);
	__m128i y = _mm_loadu_si128((const __m128i *)b);
	__m256i d;

	switch (op) {
	case DOT_I8:
		return _mm256_madd_epi16(_mm256_cvtepi8_epi16(x),
					 _mm256_cvtepi8_epi16(y));
	case L2SQ_I8:
		d = _mm256_sub_epi16(_mm256_cvtepi8_epi16(x),
				     _mm256_cvtepi8_epi16(y));
		return _mm256_madd_epi16(d, d);
	case DOT_U8I8:
		return _mm256_madd_epi16(_mm256_cvtepu8_epi16(x),
					 _mm256_cvtepi8_epi16(y));
	case DOT_U8:
	default:
		return _mm256_madd_epi16(_mm256_cvtepu8_epi16(x),
					 _mm256_cvtepu8_epi16(y));
	}
}

/* One product of the scalar tail, modulo 2^32. */
static inline __attribute__((always_inline)) uint32_t
int_term(uint8_t x, uint8_t y, enum int_op op)
{
	int32_t d;

	switch (op) {
	case DOT_I8:
		return (uint32_t)((int32_t)(int8_t)x * (int8_t)y);
	case L2SQ_I8:
		d = (int32_t)(int8_t)x - (int8_t)y;
		return (uint32_t)(d * d);
	case DOT_U8I8:
		return (uint32_t)((int32_t)x * (int8_t)y);
	case DOT_U8:
	default:
		return (uint32_t)x * y;
	}
}

static inline __attribute__((always_inline)) uint32_t
int_kernel(const void *va, const void *vb, size_t n, enum int_op op)
{
	const uint8_t *a = va, *b = vb;
	__m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
	uint32_t t = 0;
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_add_epi32(s0, int_step(a + i, b + i, op));
		s1 = _mm256_add_epi32(s1, int_step(a + i + 16, b + i + 16, op));
	}
	if (i + 16 <= n) {
		s0 = _mm256_add_epi32(s0, int_step(a + i, b + i, op));
		i += 16;
	}
	for (; i < n; i++)
		t += int_term(a[i], b[i], op);
	return t + hsum_epi32(_mm256_add_epi32(s0, s1));
}

static int32_t dot_i8(const int8_t *a, const int8_t *b, size_t n)
{
	return (int32_t)int_kernel(a, b, n, DOT_I8);
}

static int32_t l2sq_i8(const int8_t *a, const int8_t *b, size_t n)
{
	return (int32_t)int_kernel(a, b, n, L2SQ_I8);
}

static int32_t dot_u8i8(const uint8_t *a, const int8_t *b, size_t n)
{
	return (int32_t)int_kernel(a, b, n, DOT_U8I8);
}

static uint32_t dot_u8(const uint8_t *a, const uint8_t *b, size_t n)
{
	return int_kernel(a, b, n, DOT_U8);
}

const sh_kernels sh_kernels_avx2_table = {
    .name = "avx2",
    .l2sq_f32 = l2sq_f32,
    .dot_f32 = dot_f32,
    .dot_i8 = dot_i8,
    .l2sq_i8 = l2sq_i8,
    .dot_u8i8 = dot_u8i8,
    .dot_u8 = dot_u8,
};
