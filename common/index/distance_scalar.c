/*
 * Distance kernels: the portable scalar table.
 *
 * This is the reference the SIMD tables are tested against, so it stays
 * plain: float kernels sum into four independent accumulators (a little
 * instruction-level parallelism, and the same kind of reordering the SIMD
 * versions do), integer kernels sum exactly.
 *
 * Integer sums are kept in uint32_t and converted at the end: within the
 * ranges distance.h documents they never wrap, and past them they wrap
 * modulo 2^32 exactly like the 32-bit SIMD lanes do (no undefined signed
 * overflow), so all tables agree bit for bit on any input.
 */
#include "distance_impl.h"

static float l2sq_f32(const float *a, const float *b, size_t n)
{
	float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
	size_t i = 0;

	for (; i + 4 <= n; i += 4) {
		float d0 = a[i] - b[i];
		float d1 = a[i + 1] - b[i + 1];
		float d2 = a[i + 2] - b[i + 2];
		float d3 = a[i + 3] - b[i + 3];

		s0 += d0 * d0;
		s1 += d1 * d1;
		s2 += d2 * d2;
		s3 += d3 * d3;
	}
	for (; i < n; i++) {
		float d = a[i] - b[i];

		s0 += d * d;
	}
	return (s0 + s1) + (s2 + s3);
}

static float dot_f32(const float *a, const float *b, size_t n)
{
	float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
	size_t i = 0;

	for (; i + 4 <= n; i += 4) {
		s0 += a[i] * b[i];
		s1 += a[i + 1] * b[i + 1];
		s2 += a[i + 2] * b[i + 2];
		s3 += a[i + 3] * b[i + 3];
	}
	for (; i < n; i++)
		s0 += a[i] * b[i];
	return (s0 + s1) + (s2 + s3);
}

static int32_t dot_i8(const int8_t *a, const int8_t *b, size_t n)
{
	uint32_t s = 0;

	for (size_t i = 0; i < n; i++)
		s += (uint32_t)((int32_t)a[i] * (int32_t)b[i]);
	return (int32_t)s;
}

static int32_t l2sq_i8(const int8_t *a, const int8_t *b, size_t n)
{
	uint32_t s = 0;

	for (size_t i = 0; i < n; i++) {
		int32_t d = (int32_t)a[i] - (int32_t)b[i];

		s += (uint32_t)(d * d);
	}
	return (int32_t)s;
}

static int32_t dot_u8i8(const uint8_t *a, const int8_t *b, size_t n)
{
	uint32_t s = 0;

	for (size_t i = 0; i < n; i++)
		s += (uint32_t)((int32_t)a[i] * (int32_t)b[i]);
	return (int32_t)s;
}

static uint32_t dot_u8(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint32_t s = 0;

	for (size_t i = 0; i < n; i++)
		s += (uint32_t)a[i] * (uint32_t)b[i];
	return s;
}

const sh_kernels sh_kernels_scalar_table = {
    .name = "scalar",
    .l2sq_f32 = l2sq_f32,
    .dot_f32 = dot_f32,
    .dot_i8 = dot_i8,
    .l2sq_i8 = l2sq_i8,
    .dot_u8i8 = dot_u8i8,
    .dot_u8 = dot_u8,
};
